//! Access control suite: every route's permission rule checked against the OpenAPI document and
//! against real requests from every kind of principal, agents confined to their own records, API
//! key scopes, `/api/v1/me`, CORS and the secure response headers. Every scenario talks to a real
//! server over a socket and runs on SQLite and on PostgreSQL.

mod agents;
mod api_keys;
mod cors;
mod escalation;
mod me;
mod routes;

use crm_domain::access::Role;
use crm_tests::{TestApp, client_with_token};
use reqwest::header::{CONTENT_TYPE, HeaderMap, WWW_AUTHENTICATE};
use reqwest::{Client, Method, Response, StatusCode};
use serde_json::{Value, json};

/// The media type of every error.
pub(crate) const PROBLEM_JSON: &str = "application/problem+json";

/// The password every test user gets.
pub(crate) const PASSWORD: &str = "correct horse battery staple";

/// The response's body as JSON, with the status and text in the panic message otherwise.
pub(crate) async fn json_body(response: Response) -> Value {
    let status = response.status();
    let text = response.text().await.expect("read body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status}: body is not JSON ({e}): {text}"))
}

/// A header's value as text, if present.
pub(crate) fn header_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).map(|v| v.to_str().expect("header is text"))
}

/// Expects `status` and a JSON body, which it returns.
pub(crate) async fn expect_json(response: Response, status: StatusCode) -> Value {
    let got = response.status();
    let url = response.url().path().to_owned();
    let content_type = header_value(response.headers(), CONTENT_TYPE.as_str()).unwrap_or("").to_owned();
    let body = json_body(response).await;
    assert_eq!(got, status, "unexpected status from {url}; body: {body:#}");
    assert!(content_type.starts_with("application/json"), "content type {content_type:?} for {body:#}");
    body
}

/// Expects an RFC 9457 problem document with `status`, checks its required members, and
/// returns it.
pub(crate) async fn expect_problem(response: Response, status: StatusCode) -> Value {
    let got = response.status();
    let url = response.url().path().to_owned();
    let content_type = header_value(response.headers(), CONTENT_TYPE.as_str()).unwrap_or("").to_owned();
    let text = response.text().await.expect("read body");
    assert_eq!(got, status, "unexpected status from {url}; body: {text}");
    assert_eq!(content_type, PROBLEM_JSON, "problem content type; body: {text}");
    let problem: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("problem is not JSON ({e}): {text}"));
    assert_eq!(problem["status"], json!(status.as_u16()), "{problem:#}");
    for member in ["type", "title", "detail"] {
        let value = problem[member].as_str().unwrap_or_else(|| panic!("problem without `{member}`: {problem:#}"));
        assert!(!value.is_empty(), "empty `{member}`: {problem:#}");
    }
    problem
}

/// Expects 403 as a problem document.
pub(crate) async fn expect_forbidden(response: Response) -> Value {
    expect_problem(response, StatusCode::FORBIDDEN).await
}

/// Expects 401 as a problem document with `WWW-Authenticate: Bearer`.
pub(crate) async fn expect_unauthorized(response: Response) -> Value {
    let challenge = header_value(response.headers(), WWW_AUTHENTICATE.as_str()).map(str::to_owned);
    let problem = expect_problem(response, StatusCode::UNAUTHORIZED).await;
    assert_eq!(challenge.as_deref(), Some("Bearer"), "401 without the Bearer challenge: {problem:#}");
    problem
}

/// The JSON Pointers of a problem's field errors, in order.
pub(crate) fn pointers(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("problem without `errors`: {problem:#}"))
        .iter()
        .map(|e| e["pointer"].as_str().expect("pointer is a string").to_owned())
        .collect()
}

/// A record's id as a string.
pub(crate) fn id(record: &Value) -> &str {
    record["id"].as_str().unwrap_or_else(|| panic!("record without id: {record:#}"))
}

/// The ids of a page's items, in order.
pub(crate) fn item_ids(page: &Value) -> Vec<String> {
    page["items"].as_array().unwrap_or_else(|| panic!("not a page: {page:#}")).iter().map(|r| id(r).to_owned()).collect()
}

/// Sends `method` to `path` with `client`; a body, when given, goes as JSON (as a merge patch
/// for PATCH).
pub(crate) async fn send(app: &TestApp, client: &Client, method: Method, path: &str, body: Option<&Value>) -> Response {
    let mut request = client.request(method.clone(), app.url(path));
    if let Some(body) = body {
        let media = if method == Method::PATCH { "application/merge-patch+json" } else { "application/json" };
        request = request.header(CONTENT_TYPE, media).body(serde_json::to_vec(body).expect("serialize"));
    }
    request.send().await.expect("request")
}

/// GETs `path` with `client`.
pub(crate) async fn get(app: &TestApp, client: &Client, path: &str) -> Response {
    send(app, client, Method::GET, path, None).await
}

/// POSTs `body` to `path` with `client`.
pub(crate) async fn post(app: &TestApp, client: &Client, path: &str, body: &Value) -> Response {
    send(app, client, Method::POST, path, Some(body)).await
}

/// PATCHes `path` with the merge patch `body`.
pub(crate) async fn patch(app: &TestApp, client: &Client, path: &str, body: &Value) -> Response {
    send(app, client, Method::PATCH, path, Some(body)).await
}

/// POSTs `body` to `path` as the test's admin API key, expects 201, returns the record.
pub(crate) async fn admin_create(app: &TestApp, path: &str, body: &Value) -> Value {
    expect_json(post(app, &app.client, path, body).await, StatusCode::CREATED).await
}

/// GETs `path` as the test's admin API key, expects 200, returns the body.
pub(crate) async fn admin_get(app: &TestApp, path: &str) -> Value {
    expect_json(get(app, &app.client, path).await, StatusCode::OK).await
}

/// A console user, signed in.
#[derive(Debug)]
pub(crate) struct SignedIn {
    /// The user's id.
    pub id: String,
    /// Their role.
    pub role: Role,
    /// A client sending their access token.
    pub client: Client,
}

/// Signs in through `POST /api/v1/auth/login` and returns the access token.
pub(crate) async fn sign_in(app: &TestApp, email: &str, password: &str) -> String {
    let tokens =
        expect_json(post(app, &app.anonymous, "/api/v1/auth/login", &json!({"email": email, "password": password})).await, StatusCode::OK)
            .await;
    assert_eq!(tokens["token_type"], "Bearer", "{tokens:#}");
    tokens["access_token"].as_str().unwrap_or_else(|| panic!("no access token: {tokens:#}")).to_owned()
}

/// Creates a user with `role` (as admin, with a password) and signs them in.
pub(crate) async fn new_user(app: &TestApp, role: Role) -> SignedIn {
    let email = format!("{}-{}@example.gr", role.as_str(), uuid::Uuid::now_v7().simple());
    let body = json!({"email": email, "display_name": format!("Test {}", role.as_str()), "role": role.as_str(), "password": PASSWORD});
    let user = admin_create(app, "/api/v1/users", &body).await;
    assert_eq!(user["role"], role.as_str(), "{user:#}");
    assert!(user.get("password").is_none() && user.get("password_hash").is_none(), "the password is write-only: {user:#}");
    let token = sign_in(app, &email, PASSWORD).await;
    SignedIn { id: id(&user).to_owned(), role, client: client_with_token(&token) }
}

/// Creates an API key with `scopes` as the test's admin key; returns the record as created
/// (with `key`) and a client that sends the key.
pub(crate) async fn new_api_key(app: &TestApp, scopes: &[&str]) -> (Value, Client) {
    let record = admin_create(app, "/api/v1/api-keys", &json!({"name": format!("key for {}", scopes.join(" ")), "scopes": scopes})).await;
    let key = record["key"].as_str().unwrap_or_else(|| panic!("no key in the new API key: {record:#}")).to_owned();
    (record, client_with_token(&key))
}
