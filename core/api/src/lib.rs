//! The crm-hub HTTP API: JSON over HTTP under `/api/v1`, with RFC 9457 problem documents for
//! every error, ETags for optimistic concurrency, an OpenAPI 3.1 document generated from the
//! code (`/api/openapi.json`, browsable at `/api/docs`), and the operational endpoints
//! `/health`, `/ready` and `/metrics`.
//!
//! Every request gets an `x-request-id` (kept when the client sends one), which is logged on
//! the request's span and returned in the response.
//!
//! ```no_run
//! # async fn demo(store: crm_store::Store) {
//! let app = crm_api::router(crm_api::AppState::new(store, crm_domain::contact::Region::GR));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await.unwrap();
//! axum::serve(listener, app).await.unwrap();
//! # }
//! ```

mod error;
mod extract;
mod openapi;
mod ops;
mod resources;
mod telemetry;

pub use error::{ApiError, ApiResult, Problem};
pub use openapi::document as openapi_document;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use crm_domain::contact::Region;
use crm_domain::customer::Customer;
use crm_domain::order::Order;
use crm_domain::product::Product;
use crm_store::Store;

/// The largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The store.
    pub store: Store,
    /// Region used to read phone numbers written without a country code.
    pub default_region: Region,
}

impl AppState {
    /// State over a store.
    pub fn new(store: Store, default_region: Region) -> Self {
        AppState { store, default_region }
    }
}

/// The whole application: API routes, operational endpoints, and the middleware that gives
/// every request an id, a log span, metrics, a body limit and problem documents for panics,
/// unknown routes and wrong methods.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .merge(resources::routes::<Customer>())
        .merge(resources::routes::<Product>())
        .merge(resources::routes::<Order>())
        .route("/customers/{id}/orders", get(resources::customer_orders));
    let app = Router::new()
        .nest("/api/v1", api)
        .merge(ops::routes())
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state);
    telemetry::instrument(app)
}
