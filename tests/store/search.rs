//! Search: queries are folded into terms exactly as the API folds them, and every term must
//! occur in the record's search text.

use crate::common::{create_customer, create_product, customer_ids, product_ids, set};
use crm_domain::contact::{Region, phone_query_digits};
use crm_domain::customer::Customer;
use crm_domain::search_terms;
use crm_store::{CustomerFilter, ListQuery, ProductFilter, Store};
use crm_tests::TestDb;
use serde_json::json;
use uuid::Uuid;

crm_tests::on_both_backends!(
    greek_names_ignore_accents_and_case,
    phone_numbers_match_however_typed,
    terms_are_anded,
    like_wildcards_match_literally,
    search_follows_updates,
    products_by_name_and_sku
);

fn terms(query: &str) -> Vec<String> {
    search_terms(query, |q| phone_query_digits(q, Region::GR))
}

/// The customers `query` finds, as a sorted set.
async fn find(store: &Store, query: &str) -> Vec<Uuid> {
    let terms = terms(query);
    assert!(!terms.is_empty(), "`{query}` folds to no terms");
    set(customer_ids(store, ListQuery::<CustomerFilter> { terms, ..Default::default() }).await)
}

async fn greek_names_ignore_accents_and_case(db: &TestDb) {
    let store = &db.store;
    let stelios = create_customer(store, json!({"name": "Στέλιος Μπιμπης"})).await;
    let nikos = create_customer(store, json!({"name": "Νικόλαος Παπάς", "organization": "Ιερά Μητρόπολη Δράμας"})).await;
    let latin = create_customer(store, json!({"name": "Frédérique Citeaux"})).await;

    assert_eq!(find(store, "στελιος μπιμπης").await, vec![stelios.id]);
    assert_eq!(find(store, "ΣΤΈΛΙΟΣ").await, vec![stelios.id]);
    assert_eq!(find(store, "Στελιος").await, vec![stelios.id]);
    // A fragment in the middle of a word, and final sigma in the query matching a medial one.
    assert_eq!(find(store, "μπιμπ").await, vec![stelios.id]);
    assert_eq!(find(store, "ΣΤΈΛΙΟΣ ΜΠΙΜΠΗΣ").await, vec![stelios.id]);
    assert_eq!(find(store, "frederique").await, vec![latin.id]);
    assert_eq!(find(store, "δραμας").await, vec![nikos.id]);
    assert!(find(store, "ανύπαρκτος").await.is_empty());
}

async fn phone_numbers_match_however_typed(db: &TestDb) {
    let store = &db.store;
    let mobile = create_customer(store, json!({"name": "Κινητό", "contacts": [{"type": "phone", "value": "694 123 4567"}]})).await;
    // Shares the last seven digits, so only the whole number tells them apart.
    let landline = create_customer(store, json!({"name": "Σταθερό", "contacts": [{"type": "whatsapp", "value": "210 123 4567"}]})).await;
    let _none = create_customer(store, json!({"name": "Χωρίς τηλέφωνο"})).await;

    for query in ["+30 694 123 4567", "0030 6941234567", "694 123 4567", "6941234567", "+30-694-123-4567"] {
        assert_eq!(find(store, query).await, vec![mobile.id], "{query}");
    }
    assert_eq!(find(store, "+30 210 123 4567").await, vec![landline.id]);
    // A fragment of the digits matches both.
    assert_eq!(find(store, "123 4567").await, set([mobile.id, landline.id]));
    assert!(find(store, "+30 697 000 0000").await.is_empty());
}

async fn terms_are_anded(db: &TestDb) {
    let store = &db.store;
    let stelios_b = create_customer(store, json!({"name": "Στέλιος Μπιμπης"})).await;
    let stelios_p = create_customer(store, json!({"name": "Στέλιος Παπαδάκης"})).await;
    let giorgos_b = create_customer(store, json!({"name": "Γιώργος Μπιμπης", "organization": "Καμπαναριό Στελίου"})).await;

    assert_eq!(find(store, "στελιος").await, set([stelios_b.id, stelios_p.id]));
    assert_eq!(find(store, "μπιμπης").await, set([stelios_b.id, giorgos_b.id]));
    assert_eq!(find(store, "στελιος μπιμπης").await, vec![stelios_b.id]);
    assert_eq!(find(store, "μπιμπης στελιος").await, vec![stelios_b.id]);
    // Terms may match in different fields.
    assert_eq!(find(store, "γιωργος στελιου").await, vec![giorgos_b.id]);
    // One term that matches nothing empties the result.
    assert!(find(store, "στελιος ανύπαρκτος").await.is_empty());
}

async fn like_wildcards_match_literally(db: &TestDb) {
    let store = &db.store;
    let abc = create_customer(store, json!({"name": "abc Ltd"})).await;
    let a_c = create_customer(store, json!({"name": "a_c Ltd"})).await;
    let fifty_pct = create_customer(store, json!({"name": "Discount 50% Club"})).await;
    let five_hundred = create_customer(store, json!({"name": "Discount 500 Club"})).await;
    let backslash = create_customer(store, json!({"name": "Back\\Slash"})).await;
    let _plain = create_customer(store, json!({"name": "Backslash"})).await;

    assert_eq!(find(store, "a_c").await, vec![a_c.id]);
    assert_eq!(find(store, "abc").await, vec![abc.id]);
    assert_eq!(find(store, "50%").await, vec![fifty_pct.id]);
    assert_eq!(find(store, "discount 500").await, vec![five_hundred.id]);
    assert!(find(store, "%").await == vec![fifty_pct.id], "a lone % is a character, not everything");
    assert!(find(store, "_").await == vec![a_c.id], "a lone _ is a character, not any character");
    assert_eq!(find(store, "k\\s").await, vec![backslash.id]);
    assert!(find(store, "a%c").await.is_empty());
}

async fn search_follows_updates(db: &TestDb) {
    let store = &db.store;
    let record = create_customer(store, json!({"name": "Αναστασία Κωνσταντίνου"})).await;
    assert_eq!(find(store, "αναστασια").await, vec![record.id]);

    let mut data = record.data.clone();
    data.name = "Ευαγγελία Κωνσταντίνου".into();
    store.update::<Customer>(record.id, Some(1), data).await.unwrap();
    assert!(find(store, "αναστασια").await.is_empty());
    assert_eq!(find(store, "ευαγγελια").await, vec![record.id]);

    // Deleted customers are not found unless asked for.
    store.delete::<Customer>(record.id, None).await.unwrap();
    assert!(find(store, "ευαγγελια").await.is_empty());
    let query = ListQuery::<CustomerFilter> { terms: terms("ευαγγελια"), include_deleted: true, ..Default::default() };
    assert_eq!(customer_ids(store, query).await, vec![record.id]);
}

async fn products_by_name_and_sku(db: &TestDb) {
    let store = &db.store;
    let controller =
        create_product(store, json!({"name": "Ελεγκτής καμπάνας", "sku": "BC-4", "category": "controller", "price": 85_000})).await;
    let striker = create_product(store, json!({"name": "Κρουστήρας", "sku": "ST-1", "category": "striker", "price": 12_000})).await;
    let find = |query: &str| ListQuery::<ProductFilter> { terms: terms(query), ..Default::default() };

    assert_eq!(product_ids(store, find("ΚΑΜΠΑΝΑΣ")).await, vec![controller.id]);
    assert_eq!(product_ids(store, find("bc-4")).await, vec![controller.id]);
    assert_eq!(product_ids(store, find("κρουστηρας st-1")).await, vec![striker.id]);
    assert!(product_ids(store, find("κρουστηρας bc-4")).await.is_empty());
}
