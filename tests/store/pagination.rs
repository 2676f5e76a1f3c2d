//! Cursor pagination: every record exactly once, in order, whatever the sort; cursors only
//! continue the listing they came from; page sizes are bounded.

use crate::common::{all_pages, assert_invalid, create_customer, customer_ids, sorted};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use crm_domain::Record;
use crm_domain::customer::Customer;
use crm_domain::fold_for_search;
use crm_store::{CustomerFilter, ListQuery, SortDirection, Store};
use crm_tests::TestDb;
use serde_json::json;
use std::cmp::Reverse;
use std::collections::HashSet;
use uuid::Uuid;

crm_tests::on_both_backends!(
    pages_by_name_ascending,
    pages_by_creation_descending,
    exact_multiple_of_the_page_size,
    inserts_do_not_shift_later_pages,
    cursors_belong_to_their_sort,
    page_size_is_bounded,
    garbage_cursors_are_refused
);

/// Names with ties, case and accent variants, Greek and Latin, so that the name sort is on the
/// folded key and ties fall back to the id.
const NAMES: [&str; 15] = [
    "Ζωή Αλεξίου",
    "zoe alexiou",
    "Άγιος Νικόλαος",
    "αγιος νικολαος",
    "Βασίλειος",
    "Martín Sommer",
    "martin sommer",
    "Ωραιόκαστρο",
    "Ιερός Ναός",
    "ΙΕΡΟΣ ΝΑΟΣ",
    "Éva",
    "eva",
    "Γιάννης",
    "Δήμητρα",
    "Θεόδωρος",
];

/// 45 customers, created in an order unrelated to their names.
async fn forty_five(store: &Store) -> Vec<Record<Customer>> {
    let mut records = Vec::new();
    for i in 0..45 {
        let name = format!("{} {}", NAMES[(i * 7) % NAMES.len()], ["", "Α", "β"][i / 15]);
        records.push(create_customer(store, json!({"name": name})).await);
    }
    records
}

/// Pages through `query` with `limit`, asserting the page sizes, that every page but the last
/// has a cursor, and that the listing is `expected` in order with nothing repeated or missing.
async fn assert_pages(store: &Store, query: ListQuery<CustomerFilter>, limit: u32, expected: &[Uuid], sizes: &[usize]) {
    let query = ListQuery { limit: Some(limit), ..query };
    let mut cursors = Vec::new();
    let pages = all_pages(|cursor| {
        cursors.push(cursor.clone());
        let query = ListQuery { cursor, ..query.clone() };
        async move { store.list::<Customer>(&query).await }
    })
    .await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), sizes);
    assert_eq!(cursors[0], None);
    assert!(cursors[1..].iter().all(Option::is_some));
    let ids: Vec<Uuid> = pages.into_iter().flatten().map(|r| r.id).collect();
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len(), "a record came twice");
    assert_eq!(ids, expected);
}

async fn pages_by_name_ascending(db: &TestDb) {
    let store = &db.store;
    let mut records = forty_five(store).await;
    records.sort_by_key(|r| (fold_for_search(&r.data.name), r.id));
    let expected: Vec<Uuid> = records.iter().map(|r| r.id).collect();
    assert_pages(store, sorted("name", SortDirection::Asc), 20, &expected, &[20, 20, 5]).await;

    let reversed: Vec<Uuid> = expected.iter().rev().copied().collect();
    assert_pages(store, sorted("name", SortDirection::Desc), 20, &reversed, &[20, 20, 5]).await;
    // A page size that splits ties across pages.
    assert_pages(store, sorted("name", SortDirection::Asc), 7, &expected, &[7, 7, 7, 7, 7, 7, 3]).await;
}

async fn pages_by_creation_descending(db: &TestDb) {
    let store = &db.store;
    let mut records = forty_five(store).await;
    records.sort_by_key(|r| Reverse((r.created_at, r.id)));
    let expected: Vec<Uuid> = records.iter().map(|r| r.id).collect();
    assert_pages(store, sorted("created_at", SortDirection::Desc), 20, &expected, &[20, 20, 5]).await;
    // The default listing is the same.
    assert_pages(store, ListQuery::default(), 20, &expected, &[20, 20, 5]).await;

    let ascending: Vec<Uuid> = expected.iter().rev().copied().collect();
    assert_pages(store, sorted("created_at", SortDirection::Asc), 20, &ascending, &[20, 20, 5]).await;

    // Updated-at order changes with updates.
    let touched = records[10].clone();
    let touched = store.update::<Customer>(touched.id, None, touched.data).await.unwrap();
    let newest = store.list::<Customer>(&ListQuery { limit: Some(1), ..sorted("updated_at", SortDirection::Desc) }).await.unwrap();
    assert_eq!(newest.items.iter().map(|r| r.id).collect::<Vec<_>>(), vec![touched.id]);
    assert!(newest.next_cursor.is_some());
}

async fn exact_multiple_of_the_page_size(db: &TestDb) {
    let store = &db.store;
    let records = forty_five(store).await;
    let mut expected: Vec<&Record<Customer>> = records.iter().collect();
    expected.sort_by_key(|r| Reverse((r.created_at, r.id)));
    let expected: Vec<Uuid> = expected.iter().map(|r| r.id).collect();
    // The last full page says there is no more, rather than leading to an empty page.
    assert_pages(store, ListQuery::default(), 15, &expected, &[15, 15, 15]).await;
    assert_pages(store, ListQuery::default(), 45, &expected, &[45]).await;
    assert_pages(store, ListQuery::default(), 200, &expected, &[45]).await;
    assert_pages(store, ListQuery::default(), 44, &expected, &[44, 1]).await;
}

async fn inserts_do_not_shift_later_pages(db: &TestDb) {
    let store = &db.store;
    let mut records = Vec::new();
    for name in ["b", "d", "f", "h", "j", "l"] {
        records.push(create_customer(store, json!({"name": name})).await);
    }
    let query = ListQuery { limit: Some(3), ..sorted::<CustomerFilter>("name", SortDirection::Asc) };
    let first = store.list::<Customer>(&query).await.unwrap();
    let names = |items: &[Record<Customer>]| items.iter().map(|r| r.data.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&first.items), ["b", "d", "f"]);

    // A record that sorts before the cursor does not push one already seen onto the next page.
    create_customer(store, json!({"name": "a"})).await;
    create_customer(store, json!({"name": "k"})).await;
    let second = store.list::<Customer>(&ListQuery { cursor: first.next_cursor, ..query.clone() }).await.unwrap();
    assert_eq!(names(&second.items), ["h", "j", "k"]);
    let third = store.list::<Customer>(&ListQuery { cursor: second.next_cursor, ..query.clone() }).await.unwrap();
    assert_eq!(names(&third.items), ["l"]);
    assert_eq!(third.next_cursor, None);
    assert_eq!(customer_ids(store, query).await.len(), 8);
}

async fn cursors_belong_to_their_sort(db: &TestDb) {
    let store = &db.store;
    forty_five(store).await;
    let by_name = ListQuery { limit: Some(20), ..sorted::<CustomerFilter>("name", SortDirection::Asc) };
    let cursor = store.list::<Customer>(&by_name).await.unwrap().next_cursor.expect("more than one page");

    let other_sort =
        ListQuery { cursor: Some(cursor.clone()), limit: Some(20), ..sorted::<CustomerFilter>("created_at", SortDirection::Asc) };
    assert_invalid(store.list::<Customer>(&other_sort).await, "/cursor");
    let default_sort = ListQuery::<CustomerFilter> { cursor: Some(cursor.clone()), ..Default::default() };
    assert_invalid(store.list::<Customer>(&default_sort).await, "/cursor");
    let other_direction =
        ListQuery { cursor: Some(cursor.clone()), limit: Some(20), ..sorted::<CustomerFilter>("name", SortDirection::Desc) };
    assert_invalid(store.list::<Customer>(&other_direction).await, "/cursor");
    // With its own sort it continues, and a different page size is fine.
    let page = store.list::<Customer>(&ListQuery { cursor: Some(cursor), limit: Some(5), ..by_name }).await.unwrap();
    assert_eq!(page.items.len(), 5);

    let unknown = sorted::<CustomerFilter>("email", SortDirection::Asc);
    assert_invalid(store.list::<Customer>(&unknown).await, "/sort");
}

async fn page_size_is_bounded(db: &TestDb) {
    let store = &db.store;
    create_customer(store, json!({"name": "one"})).await;
    create_customer(store, json!({"name": "two"})).await;
    for limit in [0, crm_store::MAX_LIMIT + 1, u32::MAX] {
        assert_invalid(store.list::<Customer>(&ListQuery { limit: Some(limit), ..Default::default() }).await, "/limit");
    }
    let one = store.list::<Customer>(&ListQuery { limit: Some(1), ..Default::default() }).await.unwrap();
    assert_eq!(one.items.len(), 1);
    assert!(one.next_cursor.is_some());
    let max = store.list::<Customer>(&ListQuery { limit: Some(crm_store::MAX_LIMIT), ..Default::default() }).await.unwrap();
    assert_eq!(max.items.len(), 2);
    assert_eq!(max.next_cursor, None);
}

async fn garbage_cursors_are_refused(db: &TestDb) {
    let store = &db.store;
    create_customer(store, json!({"name": "one"})).await;
    let forged = |value: serde_json::Value| URL_SAFE_NO_PAD.encode(value.to_string());
    let id = Uuid::now_v7();
    let cases = [
        (sorted("name", SortDirection::Asc), "garbage!!".to_owned()),
        (sorted("name", SortDirection::Asc), String::new()),
        (sorted("name", SortDirection::Asc), URL_SAFE_NO_PAD.encode("not json")),
        (sorted("name", SortDirection::Asc), forged(json!({"s": "name", "d": "asc"}))),
        // The right sort but a value of the wrong type.
        (sorted("name", SortDirection::Asc), forged(json!({"s": "name", "d": "asc", "v": 12, "id": id}))),
        (sorted("created_at", SortDirection::Desc), forged(json!({"s": "created_at", "d": "desc", "v": "yesterday", "id": id}))),
        (sorted("created_at", SortDirection::Desc), forged(json!({"s": "created_at", "d": "desc", "v": null, "id": id}))),
    ];
    for (query, cursor) in cases {
        let query = ListQuery::<CustomerFilter> { cursor: Some(cursor.clone()), ..query };
        let result = store.list::<Customer>(&query).await;
        assert!(result.is_err(), "cursor `{cursor}` was accepted");
        assert_invalid(result, "/cursor");
    }
}
