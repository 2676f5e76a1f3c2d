//! Per-request telemetry: an `x-request-id` (the client's, or a fresh UUID), a tracing span
//! named by the matched route (never the raw URI, which would explode cardinality and leak
//! ids), Prometheus request counters and latency histograms by method, route and status, and a
//! problem document instead of a dropped connection when a handler panics.

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Instant;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tracing::Instrument;

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The Prometheus recorder, installed once per process.
fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("http_request_duration_seconds".into()),
                &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
            )
            .expect("static bucket list is not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (e.g. by an embedding program); then its
        // metrics are the ones exported, and ours render empty rather than failing.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// The metrics in the Prometheus text format.
pub(crate) fn render_metrics() -> String {
    prometheus().render()
}

async fn record(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let request_id = request.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let span = tracing::info_span!("request", %method, %route, request_id = %request_id, status = tracing::field::Empty);
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    let elapsed = started.elapsed();
    span.record("status", status.as_u16());
    span.in_scope(|| {
        if status.is_server_error() {
            tracing::error!(latency_ms = elapsed.as_secs_f64() * 1_000.0, "request finished");
        } else {
            tracing::info!(latency_ms = elapsed.as_secs_f64() * 1_000.0, "request finished");
        }
    });
    let labels = [("method", method), ("route", route), ("status", status.as_u16().to_string())];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels).record(elapsed.as_secs_f64());
    response
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("handler panicked");
    crate::error::problem_response(StatusCode::INTERNAL_SERVER_ERROR, &crate::ApiError::Internal("panic".into()).problem())
}

/// Wraps the application in the telemetry middleware; outermost first: set the request id,
/// catch panics, record span and metrics, echo the request id on the response.
pub(crate) fn instrument(app: Router) -> Router {
    let _ = prometheus();
    app.layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
        .layer(middleware::from_fn(record))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), MakeRequestUuid))
        .layer(middleware::from_fn(drop_unusable_request_id))
}

/// Longest request id accepted from a client.
const MAX_REQUEST_ID_LEN: usize = 128;

/// A client's `x-request-id` is logged and stored in the audit trail, so only a short id of
/// plain characters is kept; anything else is dropped and replaced by a fresh UUID.
async fn drop_unusable_request_id(mut request: Request, next: Next) -> Response {
    let usable = |id: &[u8]| {
        !id.is_empty() && id.len() <= MAX_REQUEST_ID_LEN && id.iter().all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(b))
    };
    if request.headers().get(&REQUEST_ID).is_some_and(|v| !usable(v.as_bytes())) {
        request.headers_mut().remove(&REQUEST_ID);
    }
    next.run(request).await
}

/// The request's id (`x-request-id`, which the middleware always sets), for the commands the
/// request puts on the bus.
#[derive(Debug, Clone)]
pub(crate) struct RequestId(pub(crate) String);

impl RequestId {
    /// The trace of a bus message caused by this request: its id and a fresh W3C trace context.
    pub(crate) fn trace(&self) -> crm_bus::Trace {
        crm_bus::Trace::new(self.0.clone())
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        let id = parts.headers.get(&REQUEST_ID).and_then(|v| v.to_str().ok()).map(str::to_owned);
        Ok(RequestId(id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string())))
    }
}
