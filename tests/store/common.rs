//! Builders and assertions shared by the scenarios. Data is always built through the domain's
//! input types, as the API builds it, so the store sees what it sees in production.

use chrono::{Datelike, Utc};
use crm_domain::Record;
use crm_domain::contact::Region;
use crm_domain::customer::{Customer, CustomerInput};
use crm_domain::order::{Order, OrderInput, OrderStatus, ProductRef};
use crm_domain::product::{Product, ProductInput};
use crm_store::{CustomerFilter, ListQuery, OrderFilter, Page, ProductFilter, SortDirection, Store, StoreError};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use uuid::Uuid;

/// Customer data from client JSON.
pub(crate) fn customer(input: Value) -> Customer {
    serde_json::from_value::<CustomerInput>(input).unwrap().parse(Region::GR, Utc::now()).unwrap()
}

/// Product data from client JSON.
pub(crate) fn product(input: Value) -> Product {
    serde_json::from_value::<ProductInput>(input).unwrap().parse().unwrap()
}

/// Order data from client JSON, priced against the store's live products.
pub(crate) async fn order(store: &Store, input: Value) -> Order {
    let products = product_refs(store).await;
    serde_json::from_value::<OrderInput>(input).unwrap().parse(&products).unwrap()
}

/// Every live product, as order lines see it.
pub(crate) async fn product_refs(store: &Store) -> HashMap<Uuid, ProductRef> {
    let query = ListQuery::<ProductFilter> { limit: Some(crm_store::MAX_LIMIT), ..Default::default() };
    let products = all_pages(|cursor| {
        let query = ListQuery { cursor, ..query.clone() };
        async move { store.list::<Product>(&query).await }
    })
    .await;
    products
        .into_iter()
        .flatten()
        .map(|p| (p.id, ProductRef { name: p.data.name, price: p.data.price, currency: p.data.currency }))
        .collect()
}

pub(crate) async fn create_customer(store: &Store, input: Value) -> Record<Customer> {
    store.create(customer(input)).await.unwrap()
}

pub(crate) async fn create_product(store: &Store, input: Value) -> Record<Product> {
    store.create(product(input)).await.unwrap()
}

/// A draft order of `quantity` units of one product.
pub(crate) async fn create_order(store: &Store, customer_id: Uuid, product_id: Uuid, quantity: i64) -> Record<Order> {
    let data =
        order(store, serde_json::json!({"customer_id": customer_id, "items": [{"product_id": product_id, "quantity": quantity}]})).await;
    store.create(data).await.unwrap()
}

/// Moves an order to `status` the way a client does: send the record's data back with the new
/// status and the version it read.
pub(crate) async fn set_status(store: &Store, order: &Record<Order>, status: OrderStatus) -> Result<Record<Order>, StoreError> {
    let mut data = order.data.clone();
    data.status = status;
    store.update::<Order>(order.id, Some(order.version), data).await
}

/// Walks `order` through `path`, asserting each step is accepted.
pub(crate) async fn walk(store: &Store, mut order: Record<Order>, path: &[OrderStatus]) -> Record<Order> {
    for &status in path {
        order = set_status(store, &order, status).await.unwrap_or_else(|e| panic!("{:?} -> {status:?}: {e:?}", order.data.status));
        assert_eq!(order.data.status, status);
    }
    order
}

/// `ORD-<current year>-<n>`, as the store numbers orders.
pub(crate) fn order_number(n: i64) -> String {
    crm_domain::order::order_number(Utc::now().year(), n)
}

/// Every page of a listing, following `next_cursor` until it runs out. Fails if the cursors
/// ever loop.
pub(crate) async fn all_pages<T, F, Fut>(mut fetch: F) -> Vec<Vec<T>>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = Result<Page<T>, StoreError>>,
{
    let mut pages = Vec::new();
    let mut cursor = None;
    let mut seen = HashSet::new();
    loop {
        let page = fetch(cursor.clone()).await.unwrap();
        pages.push(page.items);
        match page.next_cursor {
            Some(next) => {
                assert!(seen.insert(next.clone()), "cursor {next} came back twice");
                assert!(pages.len() <= 1_000, "pagination does not end");
                cursor = Some(next);
            }
            None => return pages,
        }
    }
}

/// The ids of every customer matching `query`, in listing order, over all pages.
pub(crate) async fn customer_ids(store: &Store, query: ListQuery<CustomerFilter>) -> Vec<Uuid> {
    let pages = all_pages(|cursor| {
        let query = ListQuery { cursor, ..query.clone() };
        async move { store.list::<Customer>(&query).await }
    })
    .await;
    pages.into_iter().flatten().map(|r| r.id).collect()
}

/// The ids of every product matching `query`, in listing order, over all pages.
pub(crate) async fn product_ids(store: &Store, query: ListQuery<ProductFilter>) -> Vec<Uuid> {
    let pages = all_pages(|cursor| {
        let query = ListQuery { cursor, ..query.clone() };
        async move { store.list::<Product>(&query).await }
    })
    .await;
    pages.into_iter().flatten().map(|r| r.id).collect()
}

/// Every order matching `query`, in listing order, over all pages.
pub(crate) async fn orders(store: &Store, query: ListQuery<OrderFilter>) -> Vec<Record<Order>> {
    let pages = all_pages(|cursor| {
        let query = ListQuery { cursor, ..query.clone() };
        async move { store.list::<Order>(&query).await }
    })
    .await;
    pages.into_iter().flatten().collect()
}

/// A query sorted by `sort` in `direction`.
pub(crate) fn sorted<F: Default>(sort: &str, direction: SortDirection) -> ListQuery<F> {
    ListQuery { sort: Some(sort.into()), direction, ..Default::default() }
}

/// `ids` as a sorted list, for comparing sets of results.
pub(crate) fn set(ids: impl IntoIterator<Item = Uuid>) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = ids.into_iter().collect();
    ids.sort();
    ids
}

/// Asserts a [`StoreError::Conflict`] on `pointer`.
#[track_caller]
pub(crate) fn assert_conflict<T: std::fmt::Debug>(result: Result<T, StoreError>, pointer: Option<&str>) {
    match result {
        Err(StoreError::Conflict { pointer: got, .. }) if got.as_deref() == pointer => {}
        other => panic!("expected a conflict on {pointer:?}, got {other:?}"),
    }
}

/// Asserts a [`StoreError::Invalid`] naming `pointer`.
#[track_caller]
pub(crate) fn assert_invalid<T: std::fmt::Debug>(result: Result<T, StoreError>, pointer: &str) {
    match result {
        Err(StoreError::Invalid(violations)) if violations.0.iter().any(|v| v.pointer == pointer) => {}
        other => panic!("expected a violation at {pointer}, got {other:?}"),
    }
}

/// Asserts [`StoreError::NotFound`].
#[track_caller]
pub(crate) fn assert_not_found<T: std::fmt::Debug>(result: Result<T, StoreError>) {
    match result {
        Err(StoreError::NotFound) => {}
        other => panic!("expected not found, got {other:?}"),
    }
}
