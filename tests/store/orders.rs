//! Orders: creation rules, numbering (also under concurrency), the status machine and the stock
//! movements it causes, frozen lines, deletion and filters.

use crate::common::{
    assert_conflict, assert_invalid, create_customer, create_order, create_product, order, order_number, orders, set, set_status, sorted,
    walk,
};
use crm_domain::Record;
use crm_domain::customer::Customer;
use crm_domain::order::{Order, OrderStatus, PaymentStatus};
use crm_domain::product::{Product, Stock};
use crm_store::{ListQuery, OrderFilter, SortDirection, Store, StoreError};
use crm_tests::TestDb;
use serde_json::json;
use uuid::Uuid;

use OrderStatus::{Cancelled, Confirmed, Delivered, Draft, InProduction, Shipped};

crm_tests::on_both_backends!(
    creation_needs_a_live_customer,
    new_orders_are_numbered_drafts,
    stock_follows_the_order,
    refused_shipment_writes_nothing,
    every_transition,
    lines_freeze_after_the_draft,
    deletion_needs_no_reserved_stock,
    order_filters,
    concurrent_orders_get_consecutive_numbers,
    concurrent_confirmations_reserve_every_unit,
);

async fn stock(store: &Store, product_id: Uuid) -> Stock {
    store.get::<Product>(product_id, true).await.unwrap().data.stock
}

async fn reload(store: &Store, order: &Record<Order>) -> Record<Order> {
    store.get::<Order>(order.id, true).await.unwrap()
}

fn part(sku: &str, on_hand: i64) -> serde_json::Value {
    json!({"name": format!("Part {sku}"), "sku": sku, "category": "part", "price": 1_000, "stock": {"on_hand": on_hand}})
}

async fn creation_needs_a_live_customer(db: &TestDb) {
    let store = &db.store;
    let product = create_product(store, part("P-1", 5)).await;
    let input = |customer_id: Uuid| json!({"customer_id": customer_id, "items": [{"product_id": product.id, "quantity": 1}]});

    assert_invalid(store.create(order(store, input(Uuid::now_v7())).await).await, "/customer_id");
    let customer = create_customer(store, json!({"name": "Ναός Αγίας Σοφίας"})).await;
    store.delete::<Customer>(customer.id, None).await.unwrap();
    assert_invalid(store.create(order(store, input(customer.id)).await).await, "/customer_id");
    assert!(orders(store, ListQuery { include_deleted: true, ..Default::default() }).await.is_empty());

    // Refused creations used no number.
    store.restore::<Customer>(customer.id, None).await.unwrap();
    let created = store.create(order(store, input(customer.id)).await).await.unwrap();
    assert_eq!(created.data.order_number, order_number(1));
    assert_eq!(created.data.customer_id, customer.id);
}

async fn new_orders_are_numbered_drafts(db: &TestDb) {
    let store = &db.store;
    let customer = create_customer(store, json!({"name": "Ενορία"})).await;
    let product = create_product(store, part("P-1", 5)).await;

    let first = create_order(store, customer.id, product.id, 2).await;
    assert_eq!(first.version, 1);
    assert_eq!(first.data.status, Draft);
    assert_eq!(first.data.order_number, order_number(1));
    assert_eq!(first.data.total.minor(), 2_000);
    assert_eq!(first.data.items[0].product_name.as_deref(), Some("Part P-1"));
    assert_eq!(store.get::<Order>(first.id, false).await.unwrap(), first);
    // A draft reserves nothing.
    assert_eq!(stock(store, product.id).await, Stock::new(5, 0));

    // Only drafts may be created, and a refused one uses no number.
    for status in [Confirmed, InProduction, Shipped, Delivered, Cancelled] {
        let mut data = order(store, json!({"customer_id": customer.id, "items": [{"product_id": product.id}]})).await;
        data.status = status;
        assert_invalid(store.create(data).await, "/status");
    }
    assert_eq!(stock(store, product.id).await, Stock::new(5, 0));

    let second = create_order(store, customer.id, product.id, 1).await;
    let third = create_order(store, customer.id, product.id, 1).await;
    assert_eq!(second.data.order_number, order_number(2));
    assert_eq!(third.data.order_number, order_number(3));

    // The number is the store's: a client cannot choose it on create or change it later.
    let mut data = order(store, json!({"customer_id": customer.id, "items": [{"product_id": product.id}]})).await;
    data.order_number = "ORD-1999-999".into();
    let fourth = store.create(data).await.unwrap();
    assert_eq!(fourth.data.order_number, order_number(4));
    let mut data = fourth.data.clone();
    data.order_number = "ORD-1999-999".into();
    data.notes = Some("καλεί πριν την παράδοση".into());
    let updated = store.update::<Order>(fourth.id, Some(1), data).await.unwrap();
    assert_eq!(updated.data.order_number, order_number(4));
    assert_eq!(reload(store, &fourth).await.data.order_number, order_number(4));

    // Deleting an order does not give its number back.
    store.delete::<Order>(fourth.id, None).await.unwrap();
    assert_eq!(create_order(store, customer.id, product.id, 1).await.data.order_number, order_number(5));
}

async fn stock_follows_the_order(db: &TestDb) {
    let store = &db.store;
    let customer = create_customer(store, json!({"name": "Μονή"})).await;
    let product = create_product(store, part("BC-4", 5)).await;

    let first = create_order(store, customer.id, product.id, 3).await;
    let first = walk(store, first, &[Confirmed]).await;
    assert_eq!(stock(store, product.id).await, Stock::new(5, 3));
    assert_eq!(stock(store, product.id).await.available, 2);
    let first = walk(store, first, &[InProduction]).await;
    assert_eq!(stock(store, product.id).await, Stock::new(5, 3));
    let first = walk(store, first, &[Shipped]).await;
    assert_eq!(stock(store, product.id).await, Stock::new(2, 0));
    assert!(first.data.shipping.shipped_at.is_some(), "shipping stamps shipped_at");
    let first = walk(store, first, &[Delivered]).await;
    assert!(first.data.shipping.delivered_at.is_some(), "delivery stamps delivered_at");
    assert_eq!(stock(store, product.id).await, Stock::new(2, 0));

    // More is promised than is here: available goes negative, which is what must be made.
    let second = create_order(store, customer.id, product.id, 4).await;
    let second = walk(store, second, &[Confirmed]).await;
    assert_eq!(stock(store, product.id).await, Stock::new(2, 4));
    assert_eq!(stock(store, product.id).await.available, -2);
    let second = walk(store, second, &[InProduction]).await;

    // Shipping 4 with 2 on hand is refused, and nothing is half-written.
    let product_before = store.get::<Product>(product.id, false).await.unwrap();
    match set_status(store, &second, Shipped).await {
        Err(StoreError::Conflict { pointer, detail }) => {
            assert_eq!(pointer.as_deref(), Some("/status"));
            assert!(detail.contains("only 2 on hand"), "{detail}");
        }
        other => panic!("expected a stock conflict, got {other:?}"),
    }
    assert_eq!(reload(store, &second).await, second);
    assert_eq!(reload(store, &second).await.data.status, InProduction);
    assert_eq!(store.get::<Product>(product.id, false).await.unwrap(), product_before);

    let second = walk(store, second, &[Cancelled]).await;
    assert_eq!(stock(store, product.id).await, Stock::new(2, 0));
    assert_eq!(second.data.status, Cancelled);

    // Cancelling from confirmed releases too.
    let third = create_order(store, customer.id, product.id, 1).await;
    let third = walk(store, third, &[Confirmed]).await;
    assert_eq!(stock(store, product.id).await, Stock::new(2, 1));
    walk(store, third, &[Cancelled]).await;
    assert_eq!(stock(store, product.id).await, Stock::new(2, 0));
}

async fn refused_shipment_writes_nothing(db: &TestDb) {
    let store = &db.store;
    let customer = create_customer(store, json!({"name": "Πελάτης"})).await;
    // Stock moves product by product in id order: the first has enough, the second does not, so
    // a store that did not roll back would leave the first one consumed.
    let plenty = create_product(store, part("A-1", 10)).await;
    let scarce = create_product(store, part("B-1", 1)).await;
    assert!(plenty.id < scarce.id);
    let data = order(store, json!({"customer_id": customer.id, "items": [{"product_id": plenty.id, "quantity": 2}, {"product_id": scarce.id, "quantity": 3}, {"product_id": plenty.id, "quantity": 1}]})).await;
    let created = store.create(data).await.unwrap();
    let order = walk(store, created, &[Confirmed, InProduction]).await;
    assert_eq!(stock(store, plenty.id).await, Stock::new(10, 3));
    assert_eq!(stock(store, scarce.id).await, Stock::new(1, 3));

    let before = (store.get::<Product>(plenty.id, false).await.unwrap(), store.get::<Product>(scarce.id, false).await.unwrap());
    assert_conflict(set_status(store, &order, Shipped).await, Some("/status"));
    let after = (store.get::<Product>(plenty.id, false).await.unwrap(), store.get::<Product>(scarce.id, false).await.unwrap());
    assert_eq!(after, before);
    assert_eq!(reload(store, &order).await, order);

    // Once there is stock, the same shipment goes through for every line.
    let mut restocked = after.1.data.clone();
    restocked.stock.on_hand = 3;
    store.update::<Product>(scarce.id, None, restocked).await.unwrap();
    walk(store, order, &[Shipped]).await;
    assert_eq!(stock(store, plenty.id).await, Stock::new(7, 0));
    assert_eq!(stock(store, scarce.id).await, Stock::new(0, 0));
}

/// The path from a new draft to each status.
fn path_to(status: OrderStatus) -> &'static [OrderStatus] {
    match status {
        Draft => &[],
        Confirmed => &[Confirmed],
        InProduction => &[Confirmed, InProduction],
        Shipped => &[Confirmed, InProduction, Shipped],
        Delivered => &[Confirmed, InProduction, Shipped, Delivered],
        Cancelled => &[Cancelled],
    }
}

/// Every status change, from every status, with the change to (on_hand, reserved) the allowed
/// ones make for a line of one unit; refused ones must change nothing at all.
async fn every_transition(db: &TestDb) {
    let store = &db.store;
    let customer = create_customer(store, json!({"name": "Πελάτης"})).await;
    let product = create_product(store, part("P-1", 100)).await;
    let allowed: &[(OrderStatus, OrderStatus, (i64, i64))] = &[
        (Draft, Confirmed, (0, 1)),
        (Draft, Cancelled, (0, 0)),
        (Confirmed, InProduction, (0, 0)),
        (Confirmed, Cancelled, (0, -1)),
        (InProduction, Shipped, (-1, -1)),
        (InProduction, Cancelled, (0, -1)),
        (Shipped, Delivered, (0, 0)),
        (Shipped, Cancelled, (0, 0)),
    ];
    let all = [Draft, Confirmed, InProduction, Shipped, Delivered, Cancelled];
    for from in all {
        for to in all {
            let created = create_order(store, customer.id, product.id, 1).await;
            let current = walk(store, created, path_to(from)).await;
            let product_before = store.get::<Product>(product.id, false).await.unwrap();
            let result = set_status(store, &current, to).await;
            let expected =
                if from == to { Some((0, 0)) } else { allowed.iter().find(|(f, t, _)| (*f, *t) == (from, to)).map(|(_, _, d)| *d) };
            match expected {
                Some((on_hand, reserved)) => {
                    let updated = result.unwrap_or_else(|e| panic!("{from:?} -> {to:?} was refused: {e:?}"));
                    assert_eq!(updated.data.status, to);
                    assert_eq!(updated.version, current.version + 1);
                    let before = product_before.data.stock;
                    assert_eq!(
                        stock(store, product.id).await,
                        Stock::new(before.on_hand + on_hand, before.reserved + reserved),
                        "{from:?} -> {to:?}"
                    );
                }
                None => {
                    match result {
                        Err(StoreError::Conflict { pointer, detail }) => {
                            assert_eq!(pointer.as_deref(), Some("/status"), "{from:?} -> {to:?}");
                            assert!(detail.contains(from.as_str()) && detail.contains(to.as_str()), "{detail}");
                        }
                        other => panic!("{from:?} -> {to:?}: expected a conflict, got {other:?}"),
                    }
                    assert_eq!(reload(store, &current).await, current, "{from:?} -> {to:?}");
                    assert_eq!(store.get::<Product>(product.id, false).await.unwrap(), product_before, "{from:?} -> {to:?}");
                }
            }
        }
    }
}

async fn lines_freeze_after_the_draft(db: &TestDb) {
    let store = &db.store;
    let customer = create_customer(store, json!({"name": "Πελάτης"})).await;
    let other_customer = create_customer(store, json!({"name": "Άλλος"})).await;
    let product = create_product(store, part("P-1", 10)).await;
    let draft = create_order(store, customer.id, product.id, 3).await;

    // In a draft the lines may change; the client sends them priced, as the API does.
    let edited = order(store, json!({"customer_id": customer.id, "items": [{"product_id": product.id, "quantity": 2}, {"type": "service", "description": "τοποθέτηση", "unit_price": 15_000}], "discount": {"type": "fixed", "value": 1_000}})).await;
    let draft = store.update::<Order>(draft.id, Some(1), edited).await.unwrap();
    assert_eq!(draft.data.items.len(), 2);
    assert_eq!(draft.data.total.minor(), 2 * 1_000 + 15_000 - 1_000);
    assert_eq!(draft.data.order_number, order_number(1));
    assert_eq!(stock(store, product.id).await, Stock::new(10, 0));
    // The customer may change too, but only to a live one.
    let mut moved = draft.data.clone();
    moved.customer_id = Uuid::now_v7();
    assert_invalid(store.update::<Order>(draft.id, None, moved).await, "/customer_id");
    assert_eq!(reload(store, &draft).await, draft);

    let confirmed = walk(store, draft, &[Confirmed]).await;
    assert_eq!(stock(store, product.id).await, Stock::new(10, 2));

    let refused = |detail: &str| {
        let detail = detail.to_owned();
        move |result: Result<Record<Order>, StoreError>| match result {
            Err(StoreError::Conflict { detail: got, .. }) => assert!(got.contains(&detail), "{got}"),
            other => panic!("expected a conflict on {detail}, got {other:?}"),
        }
    };
    let mut more = confirmed.data.clone();
    more.items[0].quantity = 5;
    more.reprice().unwrap();
    refused("items")(store.update::<Order>(confirmed.id, None, more.clone()).await);
    // Together with a status change that would be allowed on its own.
    more.status = InProduction;
    refused("items")(store.update::<Order>(confirmed.id, None, more).await);
    let mut fewer = confirmed.data.clone();
    fewer.items.pop();
    fewer.reprice().unwrap();
    refused("items")(store.update::<Order>(confirmed.id, None, fewer).await);
    let mut moved = confirmed.data.clone();
    moved.customer_id = other_customer.id;
    refused("customer")(store.update::<Order>(confirmed.id, None, moved).await);
    let mut discounted = confirmed.data.clone();
    discounted.discount = None;
    discounted.reprice().unwrap();
    refused("discount")(store.update::<Order>(confirmed.id, None, discounted).await);
    assert_eq!(reload(store, &confirmed).await, confirmed);
    assert_eq!(stock(store, product.id).await, Stock::new(10, 2));

    // What is not frozen still changes.
    let mut paid = confirmed.data.clone();
    paid.payment_status = PaymentStatus::Paid;
    paid.notes = Some("εξοφλήθηκε".into());
    let paid = store.update::<Order>(confirmed.id, Some(confirmed.version), paid).await.unwrap();
    assert_eq!(paid.data.payment_status, PaymentStatus::Paid);
    assert_eq!(stock(store, product.id).await, Stock::new(10, 2));
}

async fn deletion_needs_no_reserved_stock(db: &TestDb) {
    let store = &db.store;
    let customer = create_customer(store, json!({"name": "Πελάτης"})).await;
    let product = create_product(store, part("P-1", 10)).await;

    let confirmed = walk(store, create_order(store, customer.id, product.id, 2).await, &[Confirmed]).await;
    assert_conflict(store.delete::<Order>(confirmed.id, None).await, Some("/status"));
    assert_eq!(reload(store, &confirmed).await, confirmed);
    let in_production = walk(store, confirmed, &[InProduction]).await;
    assert_conflict(store.delete::<Order>(in_production.id, Some(in_production.version)).await, Some("/status"));
    assert_eq!(reload(store, &in_production).await, in_production);
    assert_eq!(stock(store, product.id).await, Stock::new(10, 2));

    let cancelled = walk(store, in_production, &[Cancelled]).await;
    let deleted = store.delete::<Order>(cancelled.id, Some(cancelled.version)).await.unwrap();
    assert!(deleted.deleted_at.is_some());
    assert!(matches!(store.get::<Order>(cancelled.id, false).await, Err(StoreError::NotFound)));
    assert_eq!(stock(store, product.id).await, Stock::new(10, 0));

    let draft = create_order(store, customer.id, product.id, 1).await;
    store.delete::<Order>(draft.id, None).await.unwrap();
    let delivered = walk(store, create_order(store, customer.id, product.id, 1).await, path_to(Delivered)).await;
    store.delete::<Order>(delivered.id, None).await.unwrap();
    assert!(orders(store, ListQuery::default()).await.is_empty());
    assert_eq!(orders(store, ListQuery { include_deleted: true, ..Default::default() }).await.len(), 3);
}

async fn order_filters(db: &TestDb) {
    let store = &db.store;
    let anna = create_customer(store, json!({"name": "Άννα"})).await;
    let babis = create_customer(store, json!({"name": "Μπάμπης"})).await;
    let product = create_product(store, part("P-1", 10)).await;

    let a_draft = create_order(store, anna.id, product.id, 1).await;
    let a_confirmed = walk(store, create_order(store, anna.id, product.id, 1).await, &[Confirmed]).await;
    let b_confirmed = walk(store, create_order(store, babis.id, product.id, 1).await, &[Confirmed]).await;
    let mut paid = b_confirmed.data.clone();
    paid.payment_status = PaymentStatus::Paid;
    let b_paid = store.update::<Order>(b_confirmed.id, None, paid).await.unwrap();

    let ids = |found: Vec<Record<Order>>| set(found.into_iter().map(|r| r.id));
    let filter = |customer_id, status, payment_status| ListQuery {
        filter: OrderFilter { customer_id, status, payment_status, ..Default::default() },
        ..Default::default()
    };
    assert_eq!(ids(orders(store, filter(Some(anna.id), None, None)).await), set([a_draft.id, a_confirmed.id]));
    assert_eq!(ids(orders(store, filter(Some(babis.id), None, None)).await), set([b_paid.id]));
    assert_eq!(ids(orders(store, filter(None, Some(Confirmed), None)).await), set([a_confirmed.id, b_paid.id]));
    assert_eq!(ids(orders(store, filter(None, Some(Draft), None)).await), set([a_draft.id]));
    assert_eq!(ids(orders(store, filter(Some(anna.id), Some(Confirmed), None)).await), set([a_confirmed.id]));
    assert!(orders(store, filter(Some(babis.id), Some(Draft), None)).await.is_empty());
    assert_eq!(ids(orders(store, filter(None, None, Some(PaymentStatus::Paid))).await), set([b_paid.id]));
    assert_eq!(ids(orders(store, filter(None, None, Some(PaymentStatus::Pending))).await), set([a_draft.id, a_confirmed.id]));
    assert!(orders(store, filter(Some(Uuid::now_v7()), None, None)).await.is_empty());

    // The status column follows the order.
    walk(store, a_confirmed, &[InProduction]).await;
    assert_eq!(ids(orders(store, filter(None, Some(Confirmed), None)).await), set([b_paid.id]));
    assert_eq!(orders(store, filter(None, Some(InProduction), None)).await.len(), 1);
}

async fn concurrent_orders_get_consecutive_numbers(db: &TestDb) {
    let store = &db.store;
    let customer = create_customer(store, json!({"name": "Μητρόπολη"})).await;
    let product = create_product(store, part("P-1", 1_000)).await;
    let data = order(store, json!({"customer_id": customer.id, "items": [{"product_id": product.id, "quantity": 1}]})).await;

    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (store, data) = (store.clone(), data.clone());
            tokio::spawn(async move { store.create(data).await })
        })
        .collect();
    let mut created = Vec::new();
    for task in tasks {
        created.push(task.await.expect("task panicked").expect("concurrent create failed"));
    }

    let mut numbers: Vec<String> = created.iter().map(|r| r.data.order_number.clone()).collect();
    numbers.sort();
    let expected: Vec<String> = (1..=50).map(order_number).collect();
    assert_eq!(numbers, expected);

    // What was stored agrees with what was returned.
    let listed = orders(store, sorted("order_number", SortDirection::Asc)).await;
    assert_eq!(listed.iter().map(|r| r.data.order_number.clone()).collect::<Vec<_>>(), expected);
    for record in &created {
        let stored = listed.iter().find(|r| r.id == record.id).expect("created order is listed");
        assert_eq!(stored.data.order_number, record.data.order_number);
    }
    // The next one carries on from there.
    assert_eq!(create_order(store, customer.id, product.id, 1).await.data.order_number, order_number(51));
}

async fn concurrent_confirmations_reserve_every_unit(db: &TestDb) {
    let store = &db.store;
    let customer = create_customer(store, json!({"name": "Μητρόπολη"})).await;
    let (a, b) = (create_product(store, part("A-1", 100)).await, create_product(store, part("B-1", 100)).await);
    // Every order holds both products, listed in either order, so concurrent confirmations
    // contend for the same rows and must lock them in one order to avoid deadlocks.
    let mut drafts = Vec::new();
    for i in 0..20 {
        let (first, second) = if i % 2 == 0 { (b.id, a.id) } else { (a.id, b.id) };
        let items = json!([{"product_id": first, "quantity": 1}, {"product_id": second, "quantity": 1}, {"product_id": a.id, "quantity": i % 2 + 1}]);
        let data = order(store, json!({"customer_id": customer.id, "items": items})).await;
        drafts.push(store.create(data).await.unwrap());
    }
    let tasks: Vec<_> = drafts
        .into_iter()
        .map(|draft| {
            let store = store.clone();
            tokio::spawn(async move { set_status(&store, &draft, Confirmed).await })
        })
        .collect();
    for task in tasks {
        let confirmed = task.await.expect("task panicked").expect("concurrent confirmation failed");
        assert_eq!(confirmed.data.status, Confirmed);
    }
    // No reservation was lost to a concurrent one.
    assert_eq!(stock(store, a.id).await, Stock::new(100, 20 + 30));
    assert_eq!(stock(store, b.id).await, Stock::new(100, 20));
    assert_eq!(store.get::<Product>(b.id, false).await.unwrap().version, 1 + 20);
}
