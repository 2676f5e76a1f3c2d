//! Operational endpoints: liveness, readiness, Prometheus metrics, the OpenAPI document and its
//! browsable docs, and request ids.

use crate::{create_customer, expect_json, expect_problem, get, header_value};
use crm_tests::TestApp;
use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;

crm_tests::api_on_both_backends!(health_and_ready, metrics_count_requests_by_route, openapi_document_and_docs, request_ids);

async fn health_and_ready(app: &TestApp) {
    let health = expect_json(get(app, "/health").await, StatusCode::OK).await;
    assert_eq!(health["status"], "ok");
    assert!(health["version"].is_string(), "{health:#}");
    let ready = expect_json(get(app, "/ready").await, StatusCode::OK).await;
    assert_eq!(ready["status"], "ready");
    let backend = ready["store"].as_str().unwrap();
    let expected = if app.db.url.starts_with("sqlite") { "sqlite" } else { "postgres" };
    assert_eq!(backend, expected);
}

/// The counter line for these labels, if any.
fn counter(metrics: &str, method: &str, route: &str, status: u16) -> Option<f64> {
    metrics.lines().filter(|l| l.starts_with("http_requests_total{")).find_map(|line| {
        let (labels, value) = line.rsplit_once(' ')?;
        let wanted = [format!("method=\"{method}\""), format!("route=\"{route}\""), format!("status=\"{status}\"")];
        wanted.iter().all(|w| labels.contains(w.as_str())).then(|| value.parse().ok())?
    })
}

async fn metrics_count_requests_by_route(app: &TestApp) {
    let customer = create_customer(app, "Μαρία").await;
    assert_eq!(get(app, "/api/v1/customers").await.status(), StatusCode::OK);
    let customer_path = format!("/api/v1/customers/{}", customer["id"].as_str().unwrap());
    assert_eq!(get(app, &customer_path).await.status(), StatusCode::OK);
    expect_problem(get(app, "/api/v1/no-such-route").await, StatusCode::NOT_FOUND).await;

    let response = get(app, "/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = header_value(response.headers(), "content-type").unwrap_or_default();
    assert!(content_type.starts_with("text/plain"), "{content_type:?}");
    let before = response.text().await.unwrap();
    assert!(before.contains("http_requests_total"), "{before}");
    assert!(before.contains("http_request_duration_seconds"), "{before}");
    // Labelled by the route's template, never by the raw path with its id.
    let list = counter(&before, "GET", "/api/v1/customers", 200).unwrap_or_else(|| panic!("no counter for the listing:\n{before}"));
    assert!(list >= 1.0);
    assert!(counter(&before, "POST", "/api/v1/customers", 201).is_some(), "{before}");
    assert!(counter(&before, "GET", "/api/v1/customers/{id}", 200).is_some(), "{before}");
    assert!(!before.contains(customer["id"].as_str().unwrap()), "a raw id leaked into the labels");
    assert!(!before.contains("no-such-route"), "an unmatched path leaked into the labels");

    // Another request is counted (the recorder is shared by the tests of this process, so only
    // growth is certain).
    assert_eq!(get(app, "/api/v1/customers").await.status(), StatusCode::OK);
    let after = get(app, "/metrics").await.text().await.unwrap();
    let list_after = counter(&after, "GET", "/api/v1/customers", 200).expect("counter");
    assert!(list_after > list, "{list} -> {list_after}");
}

async fn openapi_document_and_docs(app: &TestApp) {
    let document = expect_json(get(app, "/api/openapi.json").await, StatusCode::OK).await;
    let version = document["openapi"].as_str().expect("openapi version");
    assert!(version.starts_with("3.1."), "{version}");
    let paths = document["paths"].as_object().expect("paths");
    for path in [
        "/api/v1/customers",
        "/api/v1/customers/{id}",
        "/api/v1/customers/{id}/restore",
        "/api/v1/customers/{id}/orders",
        "/api/v1/products",
        "/api/v1/orders/{id}",
        "/health",
        "/ready",
    ] {
        assert!(paths.contains_key(path), "{path} missing from {:?}", paths.keys().collect::<Vec<_>>());
    }
    let item = &document["paths"]["/api/v1/customers/{id}"];
    for method in ["get", "put", "patch", "delete"] {
        assert!(item[method].is_object(), "{method} missing: {item:#}");
    }
    assert!(document["paths"]["/api/v1/customers"]["post"]["responses"]["422"].is_object());
    let schemas = document["components"]["schemas"].as_object().expect("schemas");
    for schema in ["Customer", "CustomerInput", "Product", "Order", "Problem"] {
        assert!(schemas.contains_key(schema), "{schema} missing from {:?}", schemas.keys().collect::<Vec<_>>());
    }
    assert!(schemas["Customer"]["properties"]["name"].is_object(), "{:#}", schemas["Customer"]);
    // Every reference resolves.
    let text = document.to_string();
    for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap();
        assert!(schemas.contains_key(name), "dangling $ref to {name}");
    }

    let response = get(app, "/api/docs").await;
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = header_value(response.headers(), "content-type").unwrap_or_default();
    assert!(content_type.starts_with("text/html"), "{content_type:?}");
    let html = response.text().await.unwrap();
    assert!(html.to_lowercase().starts_with("<!doctype html>"), "{html}");
    assert!(html.contains("/api/openapi.json"), "{html}");
}

async fn request_ids(app: &TestApp) {
    // A fresh id when the client sends none, on success and on error alike.
    let mut seen = std::collections::HashSet::new();
    for path in ["/health", "/api/v1/customers", "/api/v1/nothing", "/api/v1/customers/not-an-id"] {
        let response = get(app, path).await;
        let request_id = header_value(response.headers(), "x-request-id").expect("x-request-id header").to_owned();
        assert!(uuid::Uuid::parse_str(&request_id).is_ok(), "{path}: {request_id}");
        assert!(seen.insert(request_id), "request ids repeat");
    }
    // The client's id comes back as sent.
    for path in ["/health", "/api/v1/customers", "/api/v1/nothing"] {
        let response = app.client.get(app.url(path)).header("x-request-id", "abc-123").send().await.unwrap();
        assert_eq!(header_value(response.headers(), "x-request-id"), Some("abc-123"), "{path}");
    }
    let response = app
        .client
        .post(app.url("/api/v1/customers"))
        .header("x-request-id", "abc-123")
        .header(CONTENT_TYPE, "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(header_value(response.headers(), "x-request-id"), Some("abc-123"));
    expect_problem(response, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;

    // An id that is too long or has odd characters is not trusted (it would be logged and kept
    // in the audit trail): a fresh one replaces it.
    let too_long = "a".repeat(129);
    for unusable in [too_long.as_str(), "has spaces", "quote\"s", "semi;colon", "ünïcode"] {
        let response = app.client.get(app.url("/health")).header("x-request-id", unusable).send().await.unwrap();
        let request_id = header_value(response.headers(), "x-request-id").expect("x-request-id header");
        assert!(uuid::Uuid::parse_str(request_id).is_ok(), "{unusable:?} came back as {request_id:?}");
    }
    let longest = "b".repeat(128);
    let response = app.client.get(app.url("/health")).header("x-request-id", longest.as_str()).send().await.unwrap();
    assert_eq!(header_value(response.headers(), "x-request-id"), Some(longest.as_str()));
}
