//! HTTP API suite: every scenario talks to a real server over a socket with reqwest, exactly as
//! a client does, and runs once on SQLite and once on PostgreSQL through
//! [`crm_tests::api_on_both_backends!`] (PostgreSQL variants are skipped when no server answers,
//! unless `CRM_REQUIRE_POSTGRES=1`).

mod customers;
mod errors;
mod ops;
mod orders;
mod products;

use chrono::Datelike;
use crm_tests::TestApp;
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

/// The media type of every error.
pub(crate) const PROBLEM_JSON: &str = "application/problem+json";

/// The response's body as JSON, with the status and text in the panic message otherwise.
pub(crate) async fn json_body(response: Response) -> Value {
    let status = response.status();
    let text = response.text().await.expect("read body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status}: body is not JSON ({e}): {text}"))
}

/// A header's value as text.
pub(crate) fn header<'h>(headers: &'h HeaderMap, name: &str) -> &'h str {
    headers.get(name).unwrap_or_else(|| panic!("no {name} header in {headers:?}")).to_str().expect("header is text")
}

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

/// Expects `status` and a JSON body, which it returns.
pub(crate) async fn expect_json(response: Response, status: StatusCode) -> Value {
    let got = response.status();
    let content_type = response.headers().get(CONTENT_TYPE).map(|v| v.to_str().unwrap_or("").to_owned()).unwrap_or_default();
    let body = json_body(response).await;
    assert_eq!(got, status, "unexpected status; body: {body:#}");
    assert!(content_type.starts_with("application/json"), "content type {content_type:?} for {body:#}");
    body
}

/// Expects an RFC 9457 problem document with `status`, checks its required members, and
/// returns it.
pub(crate) async fn expect_problem(response: Response, status: StatusCode) -> Value {
    let got = response.status();
    let content_type = response.headers().get(CONTENT_TYPE).map(|v| v.to_str().unwrap_or("").to_owned()).unwrap_or_default();
    let text = response.text().await.expect("read body");
    assert_eq!(got, status, "unexpected status; body: {text}");
    assert_eq!(content_type, PROBLEM_JSON, "problem content type; body: {text}");
    let problem: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("problem is not JSON ({e}): {text}"));
    assert_eq!(problem["status"], json!(status.as_u16()), "{problem:#}");
    for member in ["type", "title", "detail"] {
        let value = problem[member].as_str().unwrap_or_else(|| panic!("problem without `{member}`: {problem:#}"));
        assert!(!value.is_empty(), "empty `{member}`: {problem:#}");
    }
    problem
}

/// The JSON Pointers of a problem's field errors, in order.
pub(crate) fn pointers(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("problem without `errors`: {problem:#}"))
        .iter()
        .map(|e| {
            assert!(e["detail"].as_str().is_some_and(|d| !d.is_empty()), "field error without detail: {problem:#}");
            e["pointer"].as_str().expect("pointer is a string").to_owned()
        })
        .collect()
}

/// POSTs `body` to `path`, expects 201, returns the record.
pub(crate) async fn create(app: &TestApp, path: &str, body: &Value) -> Value {
    expect_json(post(app, path, body).await, StatusCode::CREATED).await
}

/// A record's id as a string.
pub(crate) fn id(record: &Value) -> &str {
    record["id"].as_str().unwrap_or_else(|| panic!("record without id: {record:#}"))
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

/// The ids of a page's items, in order.
pub(crate) fn item_ids(page: &Value) -> Vec<String> {
    page["items"].as_array().unwrap_or_else(|| panic!("not a page: {page:#}")).iter().map(|r| id(r).to_owned()).collect()
}
