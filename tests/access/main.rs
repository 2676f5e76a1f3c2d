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
pub(crate) use crm_tests::http::{
    PROBLEM_JSON, expect_forbidden, expect_json, expect_problem, expect_unauthorized, header_value, id, item_ids, pointers,
};
use crm_tests::{TestApp, client_with_token};
use reqwest::header::CONTENT_TYPE;
use reqwest::{Client, Method, Response, StatusCode};
use serde_json::{Value, json};

/// The password every test user gets.
pub(crate) const PASSWORD: &str = "correct horse battery staple";

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
