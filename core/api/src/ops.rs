//! Operational endpoints: liveness, readiness (the database answers), Prometheus metrics, the
//! OpenAPI document and its browsable docs, and the problem answers for unknown routes and
//! methods.

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::sync::OnceLock;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/openapi.json", get(openapi))
        .route("/api/docs", get(docs))
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
}

async fn ready(State(state): State<AppState>) -> ApiResult<Json<serde_json::Value>> {
    state.store.ping().await.map_err(|e| ApiError::Unavailable(Box::new(e)))?;
    Ok(Json(json!({"status": "ready", "store": format!("{:?}", state.store.backend()).to_lowercase()})))
}

async fn metrics() -> Response {
    let mut response = crate::telemetry::render_metrics().into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
    response
}

async fn openapi() -> Response {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    let body = DOCUMENT.get_or_init(|| crate::openapi::document().to_pretty_json().unwrap_or_default());
    let mut response = body.clone().into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The browsable documentation: Scalar's API reference reading `/api/openapi.json`. The page
/// loads Scalar's script from its CDN; the document itself is served from here.
async fn docs() -> Html<&'static str> {
    Html(
        r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>crm-hub API</title><meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body>
<noscript>The raw OpenAPI document is at <a href="/api/openapi.json">/api/openapi.json</a>.</noscript>
<script id="api-reference" data-url="/api/openapi.json"></script>
<script src="https://cdn.jsdelivr.net/npm/@scalar/api-reference"></script>
</body>
</html>"#,
    )
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::NotFound("no route for this path".into())
}

pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
