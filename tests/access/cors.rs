//! CORS for the configured console origin only, and the secure headers on every response,
//! errors and preflights included. These run on a server configured with an allowed origin.

use crate::{PROBLEM_JSON, admin_create, header_value, new_api_key, post, send};
use crm_tests::{TestApp, test_api_config};
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, Response, StatusCode};
use serde_json::json;

const CONSOLE: &str = "https://console.example.gr";
const ELSEWHERE: &str = "https://evil.example.com";

fn config() -> crm_api::ApiConfig {
    crm_api::ApiConfig { cors_origins: vec![CONSOLE.into()], ..test_api_config() }
}

/// Runs `name(&app)` on each backend with a server started with [`config`].
macro_rules! configured_on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = crm_tests::TestDb::new(crm_tests::Backend::Sqlite).await.expect("sqlite is always available");
                    super::$name(&crm_tests::TestApp::spawn_with(db, super::config()).await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = crm_tests::TestDb::new(crm_tests::Backend::Postgres).await else { return };
                    super::$name(&crm_tests::TestApp::spawn_with(db, super::config()).await).await;
                }
            )*
        }
    };
}

configured_on_both_backends!(console_origin_is_allowed_others_are_not, every_response_has_secure_headers);

async fn preflight(app: &TestApp, origin: &str, path: &str, method: &str) -> Response {
    app.anonymous
        .request(Method::OPTIONS, app.url(path))
        .header("origin", origin)
        .header("access-control-request-method", method)
        .header("access-control-request-headers", "authorization, content-type, if-match, if-none-match, idempotency-key")
        .send()
        .await
        .expect("request")
}

fn allowed_origin(response: &Response) -> Option<String> {
    header_value(response.headers(), "access-control-allow-origin").map(str::to_owned)
}

fn list_header(response: &Response, name: &str) -> Vec<String> {
    header_value(response.headers(), name)
        .unwrap_or("")
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

async fn console_origin_is_allowed_others_are_not(app: &TestApp) {
    // Preflight from the console: allowed, with the methods and headers the API uses.
    let response = preflight(app, CONSOLE, "/api/v1/customers/0190a0b0-0000-7000-8000-000000000000", "PATCH").await;
    assert!(response.status().is_success(), "preflight: {}", response.status());
    assert_eq!(allowed_origin(&response).as_deref(), Some(CONSOLE), "{:?}", response.headers());
    let methods = list_header(&response, "access-control-allow-methods");
    for method in ["get", "post", "put", "patch", "delete"] {
        assert!(methods.contains(&method.to_owned()), "{method} not in {methods:?}");
    }
    let headers = list_header(&response, "access-control-allow-headers");
    for header in ["authorization", "content-type", "if-match", "if-none-match", "idempotency-key"] {
        assert!(headers.contains(&header.to_owned()), "{header} not in {headers:?}");
    }
    // No credentials are needed for a preflight, and none are asked for.
    assert!(response.headers().get("www-authenticate").is_none());

    // Preflight from anywhere else: no allow-origin, so the browser refuses.
    for origin in [ELSEWHERE, "https://console.example.gr.evil.example.com", "http://console.example.gr", "null"] {
        let response = preflight(app, origin, "/api/v1/customers", "GET").await;
        assert_eq!(allowed_origin(&response), None, "origin {origin} was allowed: {:?}", response.headers());
    }

    // Actual requests: the console may read the answer (and the ETag), others may not.
    let customer = admin_create(app, "/api/v1/customers", &json!({"name": "Στέλιος"})).await;
    let path = format!("/api/v1/customers/{}", customer["id"].as_str().unwrap());
    let response = app.client.get(app.url(&path)).header("origin", CONSOLE).send().await.expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(allowed_origin(&response).as_deref(), Some(CONSOLE));
    let exposed = list_header(&response, "access-control-expose-headers");
    for header in ["etag", "location", "idempotent-replayed"] {
        assert!(exposed.contains(&header.to_owned()), "{header} not in {exposed:?}");
    }
    let response = app.client.get(app.url(&path)).header("origin", ELSEWHERE).send().await.expect("request");
    assert_eq!(allowed_origin(&response), None);
    // A 401 to the console is readable too, so the console can send the user to sign in.
    let response = app.anonymous.get(app.url(&path)).header("origin", CONSOLE).send().await.expect("request");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(allowed_origin(&response).as_deref(), Some(CONSOLE));
}

async fn every_response_has_secure_headers(app: &TestApp) {
    let customer = admin_create(app, "/api/v1/customers", &json!({"name": "Στέλιος"})).await;
    let item = format!("/api/v1/customers/{}", customer["id"].as_str().unwrap());
    let (_, viewer) = new_api_key(app, &["customers:view"]).await;
    let mut responses: Vec<(String, Response)> = vec![
        ("preflight from the console".into(), preflight(app, CONSOLE, "/api/v1/customers", "POST").await),
        ("preflight from elsewhere".into(), preflight(app, ELSEWHERE, "/api/v1/customers", "POST").await),
        ("200 read".into(), send(app, &app.client, Method::GET, &item, None).await),
        ("201 create".into(), post(app, &app.client, "/api/v1/customers", &json!({"name": "Μαρία"})).await),
        (
            "400 bad JSON".into(),
            app.client.post(app.url("/api/v1/customers")).header(CONTENT_TYPE, "application/json").body("{").send().await.unwrap(),
        ),
        ("401".into(), send(app, &app.anonymous, Method::GET, &item, None).await),
        ("403".into(), post(app, &viewer, "/api/v1/customers", &json!({"name": "Νίκος"})).await),
        ("404 no route".into(), send(app, &app.client, Method::GET, "/api/v1/no-such-thing", None).await),
        ("404 no record".into(), send(app, &app.client, Method::GET, "/api/v1/customers/0190a0b0-0000-7000-8000-000000000000", None).await),
        ("405".into(), send(app, &app.client, Method::PUT, "/api/v1/customers", Some(&json!({}))).await),
        ("415".into(), app.client.post(app.url("/api/v1/customers")).header(CONTENT_TYPE, "text/plain").body("x").send().await.unwrap()),
        ("422".into(), post(app, &app.client, "/api/v1/customers", &json!({})).await),
        (
            "login 401".into(),
            post(app, &app.anonymous, "/api/v1/auth/login", &json!({"email": "nobody@example.gr", "password": "wrong password!"})).await,
        ),
    ];
    for path in ["/health", "/ready", "/metrics", "/api/openapi.json", "/api/docs"] {
        responses.push((path.to_owned(), app.anonymous.get(app.url(path)).send().await.expect("request")));
    }
    let mut statuses = Vec::new();
    for (what, response) in &responses {
        statuses.push(response.status().as_u16());
        for (name, value) in [("x-content-type-options", "nosniff"), ("x-frame-options", "DENY"), ("referrer-policy", "no-referrer")] {
            assert_eq!(
                header_value(response.headers(), name),
                Some(value),
                "{what} ({}): {name} in {:?}",
                response.status(),
                response.headers()
            );
        }
        if response.status().is_client_error() {
            assert_eq!(header_value(response.headers(), CONTENT_TYPE.as_str()), Some(PROBLEM_JSON), "{what}");
        }
    }
    // The list covers what it says it does.
    for status in [200, 201, 400, 401, 403, 404, 405, 415, 422] {
        assert!(statuses.contains(&status), "no {status} among {statuses:?}");
    }
}
