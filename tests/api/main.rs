//! HTTP API suite: every scenario talks to a real server over a socket with reqwest, exactly as
//! a client does, and runs once on SQLite and once on PostgreSQL through
//! [`crm_tests::api_on_both_backends!`] (PostgreSQL variants are skipped when no server answers,
//! unless `CRM_REQUIRE_POSTGRES=1`).

mod bus;
mod comms;
mod customers;
mod errors;
mod inbox;
mod media;
mod messages;
mod ops;
mod orders;
mod products;

use chrono::Datelike;
use crm_tests::TestApp;
pub(crate) use crm_tests::http::{PROBLEM_JSON, expect_json, expect_problem, header_value, id, item_ids, pointers};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

/// Sends `body` as JSON with `method` to `path`.
pub(crate) async fn send(app: &TestApp, method: reqwest::Method, path: &str, body: &Value) -> Response {
    app.client.request(method, app.url(path)).json(body).send().await.expect("request")
}

/// POSTs `body` as JSON to `path`.
pub(crate) async fn post(app: &TestApp, path: &str, body: &Value) -> Response {
    send(app, reqwest::Method::POST, path, body).await
}

/// GETs `path`.
pub(crate) async fn get(app: &TestApp, path: &str) -> Response {
    app.client.get(app.url(path)).send().await.expect("request")
}

/// GETs `path` with query parameters (URL-encoded by reqwest).
pub(crate) async fn get_query(app: &TestApp, path: &str, query: &[(&str, &str)]) -> Response {
    app.client.get(app.url(path)).query(query).send().await.expect("request")
}

/// POSTs `body` to `path`, expects 201, returns the record.
pub(crate) async fn create(app: &TestApp, path: &str, body: &Value) -> Value {
    expect_json(post(app, path, body).await, StatusCode::CREATED).await
}

/// A product, with its SKU and category.
pub(crate) async fn create_product(app: &TestApp, sku: &str, price: i64, on_hand: i64) -> Value {
    let body =
        json!({"name": format!("Product {sku}"), "sku": sku, "category": "controller", "price": price, "stock": {"on_hand": on_hand}});
    create(app, "/api/v1/products", &body).await
}

/// A customer with just a name.
pub(crate) async fn create_customer(app: &TestApp, name: &str) -> Value {
    create(app, "/api/v1/customers", &json!({"name": name})).await
}

/// The current year, as the server numbers orders.
pub(crate) fn year() -> i32 {
    chrono::Utc::now().year()
}
