//! Products: unique SKUs (case-insensitive, deleted products included), stock reservations owned
//! by the store, filters and the price sort.

use crate::common::{assert_conflict, create_customer, create_order, create_product, product, product_ids, set, sorted, walk};
use crm_domain::Record;
use crm_domain::order::OrderStatus;
use crm_domain::product::{Product, ProductCategory, Stock};
use crm_store::{ListQuery, ProductFilter, SortDirection, Store};
use crm_tests::TestDb;
use serde_json::json;
use uuid::Uuid;

crm_tests::on_both_backends!(
    life_cycle,
    duplicate_skus_conflict,
    failed_writes_leave_nothing,
    reserved_stock_belongs_to_the_store,
    category_and_active_filters,
    sort_by_price
);

fn bell_controller() -> serde_json::Value {
    json!({
        "name": "Ελεγκτής καμπάνας BC-4", "sku": "bc-4", "category": "controller", "price": 85_000,
        "costs": {"pcb": 1_200, "components": 4_550, "enclosure": 2_000, "labor_hours": 2.5, "labor_rate": 1_833, "shipping_in": 300},
        "stock": {"on_hand": 5}
    })
}

/// Every product, deleted ones included.
async fn every_product(store: &Store) -> Vec<Uuid> {
    set(product_ids(store, ListQuery { include_deleted: true, ..Default::default() }).await)
}

async fn life_cycle(db: &TestDb) {
    let store = &db.store;
    let data = product(bell_controller());
    let created = store.create(data.clone()).await.unwrap();
    assert_eq!(created.version, 1);
    assert_eq!(created.data, data);
    assert_eq!(created.data.costs.total.minor(), 1_200 + 4_550 + 2_000 + 4_583 + 300);
    assert_eq!(created.data.stock, Stock::new(5, 0));
    // Decimal labour hours and every amount survive the round trip through each backend.
    assert_eq!(store.get::<Product>(created.id, false).await.unwrap(), created);

    let mut changed = created.data.clone();
    changed.price = crm_domain::money::Money::from_minor(89_000);
    changed.active = false;
    changed.stock = Stock::new(8, 0);
    let updated = store.update::<Product>(created.id, Some(1), changed.clone()).await.unwrap();
    assert_eq!((updated.version, &updated.data), (2, &changed));
    assert_eq!(store.get::<Product>(created.id, false).await.unwrap(), updated);

    let deleted = store.delete::<Product>(created.id, Some(2)).await.unwrap();
    assert!(deleted.deleted_at.is_some());
    assert!(product_ids(store, ListQuery::default()).await.is_empty());
    assert_eq!(every_product(store).await, vec![created.id]);
    let restored = store.restore::<Product>(created.id, Some(3)).await.unwrap();
    assert_eq!(restored.deleted_at, None);
    assert_eq!(product_ids(store, ListQuery::default()).await, vec![created.id]);
}

async fn duplicate_skus_conflict(db: &TestDb) {
    let store = &db.store;
    let first = create_product(store, bell_controller()).await;
    let mut upper = bell_controller();
    upper["sku"] = json!("BC-4");
    assert_conflict(store.create(product(upper.clone())).await, Some("/sku"));
    let mut spaced = bell_controller();
    spaced["sku"] = json!("  Bc-4 ");
    assert_conflict(store.create(product(spaced)).await, Some("/sku"));

    // A deleted product keeps its SKU.
    store.delete::<Product>(first.id, None).await.unwrap();
    assert_conflict(store.create(product(upper.clone())).await, Some("/sku"));

    // Renaming another product onto the SKU is refused the same way.
    let other = create_product(store, json!({"name": "Κρουστήρας", "sku": "ST-1", "category": "striker", "price": 12_000})).await;
    let mut renamed = other.data.clone();
    renamed.sku = "bC-4".into();
    assert_conflict(store.update::<Product>(other.id, Some(1), renamed).await, Some("/sku"));
    assert_eq!(store.get::<Product>(other.id, false).await.unwrap(), other);

    // Changing the case of a product's own SKU is not a clash with itself.
    let restored = store.restore::<Product>(first.id, None).await.unwrap();
    let mut recased = restored.data.clone();
    recased.sku = "BC-4".into();
    let recased = store.update::<Product>(first.id, Some(restored.version), recased).await.unwrap();
    assert_eq!(recased.data.sku, "BC-4");
}

async fn failed_writes_leave_nothing(db: &TestDb) {
    let store = &db.store;
    let first = create_product(store, bell_controller()).await;
    let second = create_product(store, json!({"name": "Ρολόι", "sku": "CL-1", "category": "clock", "price": 250_000})).await;
    let before = every_product(store).await;
    assert_eq!(before.len(), 2);

    let mut duplicate = bell_controller();
    duplicate["sku"] = json!("BC-4");
    duplicate["name"] = json!("Αντίγραφο");
    assert_conflict(store.create(product(duplicate)).await, Some("/sku"));
    assert_eq!(every_product(store).await, before);
    // Nothing of it is found by search either.
    let query = ListQuery::<ProductFilter> { terms: vec!["αντιγραφο".into()], include_deleted: true, ..Default::default() };
    assert!(product_ids(store, query).await.is_empty());

    let mut clash = second.data.clone();
    clash.sku = "bc-4".into();
    clash.name = "Αλλαγμένο".into();
    assert_conflict(store.update::<Product>(second.id, Some(1), clash).await, Some("/sku"));
    assert_eq!(store.get::<Product>(second.id, false).await.unwrap(), second);
    assert_eq!(store.get::<Product>(first.id, false).await.unwrap(), first);

    // The store still works afterwards.
    let third = create_product(store, json!({"name": "Ανταλλακτικό", "sku": "PT-9", "category": "part", "price": 500})).await;
    assert_eq!(every_product(store).await, set([first.id, second.id, third.id]));
}

async fn reserved_stock_belongs_to_the_store(db: &TestDb) {
    let store = &db.store;
    // A reservation smuggled into a new product is dropped.
    let mut data = product(bell_controller());
    data.stock = Stock { on_hand: 5, reserved: 99, available: -94 };
    let created = store.create(data).await.unwrap();
    assert_eq!(created.data.stock, Stock::new(5, 0));
    assert_eq!(store.get::<Product>(created.id, false).await.unwrap().data.stock, Stock::new(5, 0));

    // An order reserves 2.
    let customer = create_customer(store, json!({"name": "Ναός"})).await;
    let order = create_order(store, customer.id, created.id, 2).await;
    walk(store, order, &[OrderStatus::Confirmed]).await;
    let current: Record<Product> = store.get(created.id, false).await.unwrap();
    assert_eq!(current.data.stock, Stock::new(5, 2));

    // A client sending reserved = 99 changes on_hand only.
    let mut edited = current.data.clone();
    edited.stock = Stock { on_hand: 7, reserved: 99, available: 99 };
    let updated = store.update::<Product>(created.id, Some(current.version), edited).await.unwrap();
    assert_eq!(updated.data.stock, Stock::new(7, 2));
    assert_eq!(store.get::<Product>(created.id, false).await.unwrap().data.stock, Stock::new(7, 2));
    // And reserved = 0 does not release the order's reservation either.
    let mut edited = updated.data.clone();
    edited.stock = Stock { on_hand: 7, reserved: 0, available: 7 };
    let updated = store.update::<Product>(created.id, None, edited).await.unwrap();
    assert_eq!(updated.data.stock, Stock::new(7, 2));
}

async fn category_and_active_filters(db: &TestDb) {
    let store = &db.store;
    let c1 = create_product(store, json!({"name": "C1", "sku": "C1", "category": "controller", "price": 1})).await;
    let c2 = create_product(store, json!({"name": "C2", "sku": "C2", "category": "controller", "price": 2, "active": false})).await;
    let s1 = create_product(store, json!({"name": "S1", "sku": "S1", "category": "striker", "price": 3, "active": false})).await;
    let r1 = create_product(store, json!({"name": "R1", "sku": "R1", "category": "repair_service", "price": 4})).await;

    let filter = |category, active| ListQuery { filter: ProductFilter { category, active }, ..Default::default() };
    assert_eq!(set(product_ids(store, filter(Some(ProductCategory::Controller), None)).await), set([c1.id, c2.id]));
    assert_eq!(product_ids(store, filter(Some(ProductCategory::RepairService), None)).await, vec![r1.id]);
    assert!(product_ids(store, filter(Some(ProductCategory::Clock), None)).await.is_empty());
    assert_eq!(set(product_ids(store, filter(None, Some(true))).await), set([c1.id, r1.id]));
    assert_eq!(set(product_ids(store, filter(None, Some(false))).await), set([c2.id, s1.id]));
    assert_eq!(product_ids(store, filter(Some(ProductCategory::Controller), Some(false))).await, vec![c2.id]);
    assert_eq!(product_ids(store, filter(None, None)).await.len(), 4);

    // The filter columns follow updates.
    let mut data = s1.data.clone();
    data.active = true;
    data.category = ProductCategory::Part;
    store.update::<Product>(s1.id, None, data).await.unwrap();
    assert_eq!(product_ids(store, filter(None, Some(false))).await, vec![c2.id]);
    assert_eq!(product_ids(store, filter(Some(ProductCategory::Part), Some(true))).await, vec![s1.id]);
    assert!(product_ids(store, filter(Some(ProductCategory::Striker), None)).await.is_empty());
}

async fn sort_by_price(db: &TestDb) {
    let store = &db.store;
    let mut created = Vec::new();
    // Prices out of creation order, with a tie, and large enough to need 64 bits.
    for (i, price) in [12_000_i64, 500, 85_000, 500, 9_000_000_000, 0, 250_000].into_iter().enumerate() {
        created.push(
            create_product(store, json!({"name": format!("P{i}"), "sku": format!("P-{i}"), "category": "part", "price": price})).await,
        );
    }
    let mut expected: Vec<(i64, Uuid)> = created.iter().map(|p| (p.data.price.minor(), p.id)).collect();
    expected.sort();
    let ascending: Vec<Uuid> = expected.iter().map(|(_, id)| *id).collect();
    let descending: Vec<Uuid> = ascending.iter().rev().copied().collect();
    for limit in [2, 3, 200] {
        let asc = ListQuery { limit: Some(limit), ..sorted::<ProductFilter>("price", SortDirection::Asc) };
        assert_eq!(product_ids(store, asc).await, ascending, "ascending, {limit} a page");
        let desc = ListQuery { limit: Some(limit), ..sorted::<ProductFilter>("price", SortDirection::Desc) };
        assert_eq!(product_ids(store, desc).await, descending, "descending, {limit} a page");
    }
    // Price sort combines with filters.
    let cheap_parts = ListQuery {
        filter: ProductFilter { category: Some(ProductCategory::Part), active: Some(true) },
        limit: Some(2),
        ..sorted("price", SortDirection::Asc)
    };
    assert_eq!(product_ids(store, cheap_parts).await, ascending);
}
