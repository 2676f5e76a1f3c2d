//! Customers: the record life cycle (create, read, versioned update, soft delete, restore) and
//! the list filters.

use crate::common::{assert_not_found, create_customer, customer, customer_ids, set};
use crm_domain::contact::{Region, phone_query_digits};
use crm_domain::customer::{Customer, CustomerStatus};
use crm_domain::search_terms;
use crm_store::{CustomerFilter, ListQuery, StoreError};
use crm_tests::TestDb;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Barrier;
use uuid::Uuid;

crm_tests::on_both_backends!(
    life_cycle,
    stale_versions_are_refused,
    concurrent_writers_one_wins,
    repeated_and_shared_contacts,
    unknown_and_deleted_records,
    tag_filter,
    status_filter,
    assigned_to_filter,
    created_range
);

async fn life_cycle(db: &TestDb) {
    let store = &db.store;
    let input = json!({
        "name": "Πάτερ Νικόλαος",
        "organization": "Ιερός Ναός Αγίου Νικολάου",
        "tags": ["Bells", "VIP"],
        "contacts": [{"type": "email", "value": "Pater.Nikos@Example.gr"}, {"type": "phone", "value": "694 123 4567", "primary": true}],
        "notes": [{"text": "Θέλει δύο καμπάνες"}],
        "location": {"city": "Θεσσαλονίκη", "country": "gr"}
    });
    let data = customer(input);
    let created = store.create(data.clone()).await.unwrap();
    assert_eq!(created.version, 1);
    assert_eq!(created.data, data);
    assert_eq!(created.created_at, created.updated_at);
    assert_eq!(created.deleted_at, None);

    // What was written is what is read back, on both backends, timestamps included.
    let got = store.get::<Customer>(created.id, false).await.unwrap();
    assert_eq!(got, created);

    let mut changed = got.data.clone();
    changed.name = "Πάτερ Νικόλαος Παπαδόπουλος".into();
    changed.status = CustomerStatus::Prospect;
    changed.contacted = true;
    let updated = store.update::<Customer>(created.id, Some(1), changed.clone()).await.unwrap();
    assert_eq!(updated.version, 2);
    assert_eq!(updated.data, changed);
    assert_eq!(updated.created_at, created.created_at);
    assert!(updated.updated_at >= created.updated_at);
    assert_eq!(store.get::<Customer>(created.id, false).await.unwrap(), updated);

    // Without an expected version the update is unconditional, and still bumps the version.
    let mut changed = updated.data.clone();
    changed.organization = None;
    let updated = store.update::<Customer>(created.id, None, changed.clone()).await.unwrap();
    assert_eq!(updated.version, 3);
    assert_eq!(store.get::<Customer>(created.id, false).await.unwrap().data, changed);

    // A second customer, so that listings have something else to show.
    let other = create_customer(store, json!({"name": "Μαρία Οικονόμου"})).await;
    let live = ListQuery::<CustomerFilter>::default();
    let with_deleted = ListQuery::<CustomerFilter> { include_deleted: true, ..Default::default() };
    assert_eq!(set(customer_ids(store, live.clone()).await), set([created.id, other.id]));

    let deleted = store.delete::<Customer>(created.id, Some(3)).await.unwrap();
    assert_eq!(deleted.version, 4);
    let deleted_at = deleted.deleted_at.expect("deleted_at is set");
    assert_not_found(store.get::<Customer>(created.id, false).await);
    let seen = store.get::<Customer>(created.id, true).await.unwrap();
    assert_eq!(seen.deleted_at, Some(deleted_at));
    assert_eq!(seen.version, 4);
    assert_eq!(seen.data, changed);
    assert_eq!(customer_ids(store, live.clone()).await, vec![other.id]);
    assert_eq!(set(customer_ids(store, with_deleted.clone()).await), set([created.id, other.id]));
    // The deleted record is also out of get_many.
    assert_eq!(
        store.get_many::<Customer>(&[created.id, other.id]).await.unwrap().into_iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![other.id]
    );

    let restored = store.restore::<Customer>(created.id, Some(4)).await.unwrap();
    assert_eq!(restored.version, 5);
    assert_eq!(restored.deleted_at, None);
    let got = store.get::<Customer>(created.id, false).await.unwrap();
    assert_eq!(got, restored);
    assert_eq!(got.data, changed);
    assert_eq!(set(customer_ids(store, live).await), set([created.id, other.id]));

    // Restoring a live record changes nothing.
    let again = store.restore::<Customer>(created.id, None).await.unwrap();
    assert_eq!(again, restored);
}

async fn stale_versions_are_refused(db: &TestDb) {
    let store = &db.store;
    let created = create_customer(store, json!({"name": "Γιώργος Αντωνίου"})).await;
    let mut first = created.data.clone();
    first.name = "Γιώργος Αντωνίου (Βόλος)".into();
    let updated = store.update::<Customer>(created.id, Some(1), first).await.unwrap();
    assert_eq!(updated.version, 2);

    // A second client still holding version 1 loses, and changes nothing.
    let mut second = created.data.clone();
    second.name = "Κάποιος άλλος".into();
    match store.update::<Customer>(created.id, Some(1), second).await {
        Err(StoreError::VersionMismatch { current }) => assert_eq!(current, 2),
        other => panic!("expected a version mismatch, got {other:?}"),
    }
    // A version from the future is just as stale.
    match store.update::<Customer>(created.id, Some(7), created.data.clone()).await {
        Err(StoreError::VersionMismatch { current }) => assert_eq!(current, 2),
        other => panic!("expected a version mismatch, got {other:?}"),
    }
    assert_eq!(store.get::<Customer>(created.id, false).await.unwrap(), updated);

    // Delete and restore check the version too.
    match store.delete::<Customer>(created.id, Some(1)).await {
        Err(StoreError::VersionMismatch { current }) => assert_eq!(current, 2),
        other => panic!("expected a version mismatch, got {other:?}"),
    }
    assert_eq!(store.get::<Customer>(created.id, false).await.unwrap(), updated);
    let deleted = store.delete::<Customer>(created.id, Some(2)).await.unwrap();
    match store.restore::<Customer>(created.id, Some(2)).await {
        Err(StoreError::VersionMismatch { current }) => assert_eq!(current, 3),
        other => panic!("expected a version mismatch, got {other:?}"),
    }
    assert_eq!(store.get::<Customer>(created.id, true).await.unwrap(), deleted);
}

async fn concurrent_writers_one_wins(db: &TestDb) {
    let store = &db.store;
    let created = create_customer(store, json!({"name": "Αρχική"})).await;
    // Twenty clients read version 1 and write at once: exactly one may win.
    let start = Arc::new(Barrier::new(20));
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (store, start) = (store.clone(), start.clone());
            let mut data = created.data.clone();
            data.name = format!("Εκδοχή {i}");
            data.tags = vec![format!("v{i}")];
            tokio::spawn(async move {
                start.wait().await;
                store.update::<Customer>(created.id, Some(1), data).await
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.expect("task panicked") {
            Ok(record) => winners.push(record),
            Err(StoreError::VersionMismatch { current }) => assert_eq!(current, 2),
            Err(other) => panic!("unexpected error: {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(winners[0].version, 2);
    assert_eq!(store.get::<Customer>(created.id, false).await.unwrap(), winners[0]);
    // Only the winner's tags are indexed.
    let tagged = |tag: String| ListQuery { filter: CustomerFilter { tag: Some(tag), ..Default::default() }, ..Default::default() };
    for i in 0..20 {
        let expected = if winners[0].data.tags == [format!("v{i}")] { vec![created.id] } else { vec![] };
        assert_eq!(customer_ids(store, tagged(format!("v{i}"))).await, expected, "tag v{i}");
    }
}

async fn repeated_and_shared_contacts(db: &TestDb) {
    let store = &db.store;
    // The same number as phone and WhatsApp, the same address in two spellings: one key each.
    let first = create_customer(
        store,
        json!({"name": "Πρώτος", "contacts": [
            {"type": "phone", "value": "694 123 4567"},
            {"type": "whatsapp", "value": "+30 694 123 4567"},
            {"type": "email", "value": "Pater@Example.gr"},
            {"type": "email", "value": "pater@example.gr"}
        ]}),
    )
    .await;
    // Another customer may share them.
    let second = create_customer(store, json!({"name": "Δεύτερος", "contacts": [{"type": "phone", "value": "0030 6941234567"}, {"type": "email", "value": "PATER@example.gr"}]})).await;
    let mut edited = first.data.clone();
    edited.contacts.reverse();
    let edited = store.update::<Customer>(first.id, Some(1), edited).await.unwrap();
    assert_eq!(edited.data.contacts.len(), 4);
    let terms = search_terms("+30 694 123 4567", |q| phone_query_digits(q, Region::GR));
    assert_eq!(set(customer_ids(store, ListQuery { terms, ..Default::default() }).await), set([first.id, second.id]));
}

async fn unknown_and_deleted_records(db: &TestDb) {
    let store = &db.store;
    let unknown = Uuid::now_v7();
    assert_not_found(store.get::<Customer>(unknown, false).await);
    assert_not_found(store.get::<Customer>(unknown, true).await);
    assert_not_found(store.update::<Customer>(unknown, None, customer(json!({"name": "x"}))).await);
    assert_not_found(store.delete::<Customer>(unknown, None).await);
    assert_not_found(store.restore::<Customer>(unknown, None).await);
    assert!(customer_ids(store, ListQuery { include_deleted: true, ..Default::default() }).await.is_empty());

    // A deleted record can be neither updated nor deleted again until it is restored.
    let created = create_customer(store, json!({"name": "Ελένη Δημητρίου"})).await;
    let deleted = store.delete::<Customer>(created.id, None).await.unwrap();
    assert_not_found(store.update::<Customer>(created.id, None, customer(json!({"name": "y"}))).await);
    assert_not_found(store.delete::<Customer>(created.id, None).await);
    assert_eq!(store.get::<Customer>(created.id, true).await.unwrap(), deleted);
}

async fn tag_filter(db: &TestDb) {
    let store = &db.store;
    let both = create_customer(store, json!({"name": "A", "tags": ["VIP", "Bells"]})).await;
    let vip = create_customer(store, json!({"name": "B", "tags": ["vip"]})).await;
    let bells = create_customer(store, json!({"name": "C", "tags": ["bells"]})).await;
    let _untagged = create_customer(store, json!({"name": "D"})).await;
    assert_eq!(both.data.tags, ["vip", "bells"]);

    let tagged = |tag: &str| ListQuery { filter: CustomerFilter { tag: Some(tag.into()), ..Default::default() }, ..Default::default() };
    assert_eq!(set(customer_ids(store, tagged("VIP")).await), set([both.id, vip.id]));
    assert_eq!(set(customer_ids(store, tagged("vip")).await), set([both.id, vip.id]));
    assert_eq!(set(customer_ids(store, tagged(" Bells ")).await), set([both.id, bells.id]));
    assert!(customer_ids(store, tagged("vi")).await.is_empty(), "tags match whole");
    assert!(customer_ids(store, tagged("gold")).await.is_empty());

    // Tags follow updates: dropping a tag takes the customer out of the filter.
    let mut data = both.data.clone();
    data.tags = vec!["bells".into()];
    store.update::<Customer>(both.id, Some(1), data).await.unwrap();
    assert_eq!(customer_ids(store, tagged("VIP")).await, vec![vip.id]);
    assert_eq!(set(customer_ids(store, tagged("bells")).await), set([both.id, bells.id]));

    // Deleted customers stay out unless asked for.
    store.delete::<Customer>(vip.id, None).await.unwrap();
    assert!(customer_ids(store, tagged("VIP")).await.is_empty());
    assert_eq!(customer_ids(store, ListQuery { include_deleted: true, ..tagged("VIP") }).await, vec![vip.id]);
}

async fn status_filter(db: &TestDb) {
    let store = &db.store;
    let lead = create_customer(store, json!({"name": "Lead"})).await;
    let prospect = create_customer(store, json!({"name": "Prospect", "status": "prospect"})).await;
    let active = create_customer(store, json!({"name": "Active", "status": "active"})).await;
    let active2 = create_customer(store, json!({"name": "Active 2", "status": "active"})).await;
    assert_eq!(lead.data.status, CustomerStatus::Lead);

    let in_status = |status| ListQuery { filter: CustomerFilter { status: Some(status), ..Default::default() }, ..Default::default() };
    assert_eq!(customer_ids(store, in_status(CustomerStatus::Lead)).await, vec![lead.id]);
    assert_eq!(customer_ids(store, in_status(CustomerStatus::Prospect)).await, vec![prospect.id]);
    assert_eq!(set(customer_ids(store, in_status(CustomerStatus::Active)).await), set([active.id, active2.id]));
    assert!(customer_ids(store, in_status(CustomerStatus::Inactive)).await.is_empty());

    // The filter column follows updates.
    let mut data = active2.data.clone();
    data.status = CustomerStatus::Inactive;
    store.update::<Customer>(active2.id, None, data).await.unwrap();
    assert_eq!(customer_ids(store, in_status(CustomerStatus::Active)).await, vec![active.id]);
    assert_eq!(customer_ids(store, in_status(CustomerStatus::Inactive)).await, vec![active2.id]);
}

async fn assigned_to_filter(db: &TestDb) {
    let store = &db.store;
    let (anna, babis) = (Uuid::now_v7(), Uuid::now_v7());
    let a1 = create_customer(store, json!({"name": "A1", "assigned_to": anna})).await;
    let a2 = create_customer(store, json!({"name": "A2", "assigned_to": anna, "status": "active"})).await;
    let b1 = create_customer(store, json!({"name": "B1", "assigned_to": babis, "status": "active"})).await;
    let _nobody = create_customer(store, json!({"name": "N"})).await;

    let assigned = |user| ListQuery { filter: CustomerFilter { assigned_to: Some(user), ..Default::default() }, ..Default::default() };
    assert_eq!(set(customer_ids(store, assigned(anna)).await), set([a1.id, a2.id]));
    assert_eq!(customer_ids(store, assigned(babis)).await, vec![b1.id]);
    assert!(customer_ids(store, assigned(Uuid::now_v7())).await.is_empty());

    // Filters combine with AND.
    let query = ListQuery {
        filter: CustomerFilter { assigned_to: Some(anna), status: Some(CustomerStatus::Active), ..Default::default() },
        ..Default::default()
    };
    assert_eq!(customer_ids(store, query).await, vec![a2.id]);

    // Reassigning moves the customer between filters.
    let mut data = a1.data.clone();
    data.assigned_to = Some(babis);
    store.update::<Customer>(a1.id, None, data).await.unwrap();
    assert_eq!(customer_ids(store, assigned(anna)).await, vec![a2.id]);
    assert_eq!(set(customer_ids(store, assigned(babis)).await), set([a1.id, b1.id]));
}

async fn created_range(db: &TestDb) {
    let store = &db.store;
    let mut created = Vec::new();
    for name in ["one", "two", "three", "four"] {
        created.push(create_customer(store, json!({"name": name})).await);
        // Distinct creation times, even at the microsecond both backends keep.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ids: Vec<Uuid> = created.iter().map(|r| r.id).collect();
    let (t1, t3) = (created[1].created_at, created[3].created_at);
    assert!(created.windows(2).all(|w| w[0].created_at < w[1].created_at));

    let range = |from, to| ListQuery::<CustomerFilter> { created_from: from, created_to: to, ..Default::default() };
    // From is inclusive, to is exclusive.
    assert_eq!(set(customer_ids(store, range(Some(t1), Some(t3))).await), set([ids[1], ids[2]]));
    assert_eq!(set(customer_ids(store, range(Some(t1), None)).await), set([ids[1], ids[2], ids[3]]));
    assert_eq!(set(customer_ids(store, range(None, Some(t3))).await), set([ids[0], ids[1], ids[2]]));
    assert!(customer_ids(store, range(Some(t3), Some(t1))).await.is_empty());
    let later = t3 + chrono::Duration::seconds(1);
    assert!(customer_ids(store, range(Some(later), None)).await.is_empty());
    assert_eq!(customer_ids(store, range(None, Some(later))).await.len(), 4);
}
