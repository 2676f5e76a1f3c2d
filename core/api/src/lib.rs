//! The crm-hub HTTP API: JSON over HTTP under `/api/v1`, with RFC 9457 problem documents for
//! every error, ETags for optimistic concurrency, an OpenAPI 3.1 document generated from the
//! code (`/api/openapi.json`, browsable at `/api/docs`), and the operational endpoints
//! `/health`, `/ready` and `/metrics`.
//!
//! Every request gets an `x-request-id` (kept when the client sends one), which is logged on
//! the request's span and returned in the response, and travels on the bus with the commands
//! the request causes.
//!
//! Handlers that ask a connector to act (send a message, store a file) write the command to the
//! store's outbox in the transaction of the record it concerns, then wake the outbox relay
//! through [`AppState::relay_wakeup`]; requests that need an answer now (reading a file) go
//! over [`AppState::bus`].
//!
//! ```no_run
//! # async fn demo(store: crm_store::Store) {
//! let state = crm_api::AppState::new(store, crm_api::ApiConfig::default()).await.unwrap();
//! let app = crm_api::router(state);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await.unwrap();
//! let service = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
//! axum::serve(listener, service).await.unwrap();
//! # }
//! ```

mod admin;
mod auth;
mod bus;
mod comms;
mod error;
mod extract;
mod media;
mod openapi;
mod ops;
mod plugins;
mod resources;
mod telemetry;

pub use auth::{API_KEY_PREFIX, Auth, AuthConfig, Ctx, Principal, Requirement, RouteRule, generate_password, route_rules};
pub use error::{ApiError, ApiResult, Problem};
pub use openapi::document as openapi_document;
pub use plugins::MAX_PLUGIN_BYTES;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::routing::get;
use crm_bus::{Bus, BusConfig};
use crm_domain::access::{Action, Area};
use crm_domain::comms::{CommsEntry, Media};
use crm_domain::contact::Region;
use crm_domain::customer::Customer;
use crm_domain::order::Order;
use crm_domain::product::Product;
use crm_domain::user::{ApiKey, User};
use crm_store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;

/// The largest request body accepted, in bytes (file uploads aside).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The CloudEvents `source` of what the core puts on the bus.
pub(crate) const CORE_SOURCE: &str = "/crm/core";

/// The default cap on an uploaded file: 25 MiB.
pub const DEFAULT_MAX_UPLOAD_BYTES: usize = 25 * 1024 * 1024;

/// How the API is set up.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Region used to read phone numbers written without a country code.
    pub default_region: Region,
    /// Sign-in and token settings.
    pub auth: AuthConfig,
    /// Origins (e.g. `https://console.example.gr`) whose browsers may call the API.
    pub cors_origins: Vec<String>,
    /// The largest file `POST /api/v1/media` accepts, in bytes; larger is 413.
    pub max_upload_bytes: usize,
    /// How long `GET /api/v1/media/{id}/content` waits for the files connector.
    pub file_read_timeout: Duration,
    /// Uploads handled at once, and downloads handled at once (each its own limit, so slow
    /// uploads never keep downloads waiting): each holds its file in memory a few times over.
    /// Others wait up to `file_transfer_wait` for a turn, then get 503 with `Retry-After`.
    pub max_file_transfers: usize,
    /// How long an upload or download waits for a turn.
    pub file_transfer_wait: Duration,
    /// How long an upload's body may take to arrive (it holds a turn meanwhile): 408 after it.
    pub upload_read_timeout: Duration,
}

/// Uploads and downloads handled at once by default.
pub const DEFAULT_MAX_FILE_TRANSFERS: usize = 4;

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            default_region: Region::default(),
            auth: AuthConfig::default(),
            cors_origins: Vec::new(),
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
            file_read_timeout: Duration::from_secs(10),
            max_file_transfers: DEFAULT_MAX_FILE_TRANSFERS,
            file_transfer_wait: Duration::from_secs(10),
            upload_read_timeout: Duration::from_secs(300),
        }
    }
}

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The store (acting as the system; handlers act through [`auth::Ctx`]).
    pub store: Store,
    /// Region used to read phone numbers written without a country code.
    pub default_region: Region,
    /// Keys and sign-in throttling.
    pub auth: Arc<Auth>,
    /// The message bus: requests that need an answer now (reading a file), replays of dead
    /// letters, queue figures. An in-process bus unless [`AppState::with_bus`] gives another.
    pub bus: Bus,
    /// Notified (`notify_one`) after a handler has written outbox messages, so that the outbox
    /// relay publishes them at once rather than at its next poll.
    pub relay_wakeup: Arc<Notify>,
    /// The largest uploaded file accepted, in bytes.
    pub max_upload_bytes: usize,
    /// How long reading a file waits for the files connector.
    pub file_read_timeout: Duration,
    /// Turns for uploads ([`ApiConfig::max_file_transfers`]).
    pub upload_turns: Arc<tokio::sync::Semaphore>,
    /// Turns for downloads ([`ApiConfig::max_file_transfers`]).
    pub download_turns: Arc<tokio::sync::Semaphore>,
    /// How long an upload or download waits for a turn.
    pub file_transfer_wait: Duration,
    /// How long an upload's body may take to arrive.
    pub upload_read_timeout: Duration,
    /// The rule plugins: orders are priced by the active pricing plugin. Without a registry
    /// ([`AppState::with_plugins`] not called) orders are priced by the built-in rule.
    pub plugins: Option<Arc<crm_plugins::Registry>>,
    cors_origins: Vec<HeaderValue>,
}

impl AppState {
    /// State over a store: loads (or creates) the token signing key and checks the CORS origins.
    pub async fn new(store: Store, config: ApiConfig) -> Result<Self, String> {
        let auth = Auth::new(&store, config.auth).await.map_err(|e| format!("cannot load the token signing key: {e}"))?;
        let cors_origins = config
            .cors_origins
            .iter()
            .map(|o| HeaderValue::from_str(o.trim_end_matches('/')).map_err(|_| format!("`{o}` is not a valid CORS origin")))
            .collect::<Result<_, _>>()?;
        Ok(AppState {
            store,
            default_region: config.default_region,
            auth: Arc::new(auth),
            bus: Bus::in_process(BusConfig::default()),
            relay_wakeup: Arc::new(Notify::new()),
            max_upload_bytes: config.max_upload_bytes,
            file_read_timeout: config.file_read_timeout,
            upload_turns: Arc::new(tokio::sync::Semaphore::new(config.max_file_transfers.max(1))),
            download_turns: Arc::new(tokio::sync::Semaphore::new(config.max_file_transfers.max(1))),
            file_transfer_wait: config.file_transfer_wait,
            upload_read_timeout: config.upload_read_timeout,
            plugins: None,
            cors_origins,
        })
    }

    /// The same state over another bus (the server's: RabbitMQ or its in-process bus).
    pub fn with_bus(mut self, bus: Bus) -> Self {
        self.bus = bus;
        self
    }

    /// The same state notifying `wakeup` after writing outbox messages (instead of a `Notify`
    /// of its own, which the relay can also take from [`AppState::relay_wakeup`]).
    pub fn with_relay_wakeup(mut self, wakeup: Arc<Notify>) -> Self {
        self.relay_wakeup = wakeup;
        self
    }

    /// The same state pricing orders with `registry`'s active pricing plugin and serving its
    /// management routes.
    pub fn with_plugins(mut self, registry: Arc<crm_plugins::Registry>) -> Self {
        self.plugins = Some(registry);
        self
    }

    /// Wakes the outbox relay: a handler has just committed outbox messages.
    pub(crate) fn wake_relay(&self) {
        self.relay_wakeup.notify_one();
    }
}

/// The permission rule of every route (see [`route_rules`]).
fn route_table() -> Vec<RouteRule> {
    let rule = |method: Method, path: &str, requirement: Requirement| RouteRule { method, path: path.to_owned(), requirement };
    let mut rules = Vec::new();
    rules.extend(resources::rules::<Customer>());
    rules.extend(resources::rules::<Product>());
    rules.extend(resources::rules::<Order>());
    rules.extend(resources::rules::<User>());
    rules.extend(resources::rules::<ApiKey>());
    rules.extend(resources::rules::<CommsEntry>());
    rules.extend(resources::rules::<Media>());
    rules.extend(comms::rules());
    rules.extend(media::rules());
    rules.extend(bus::rules());
    rules.extend(plugins::rules());
    rules.extend([
        rule(Method::GET, "/api/v1/customers/{id}/orders", Requirement::Permission(Area::Orders, Action::View)),
        rule(Method::GET, "/api/v1/customers/{id}/history", Requirement::Permission(Area::Customers, Action::View)),
        rule(Method::POST, "/api/v1/users/{id}/password", Requirement::Permission(Area::Users, Action::Admin)),
        rule(Method::GET, "/api/v1/audit", Requirement::Permission(Area::Audit, Action::View)),
        rule(Method::POST, "/api/v1/auth/login", Requirement::Public),
        rule(Method::POST, "/api/v1/auth/refresh", Requirement::Public),
        rule(Method::POST, "/api/v1/auth/logout", Requirement::Public),
        rule(Method::GET, "/api/v1/me", Requirement::SignedIn),
    ]);
    rules
}

/// The whole application: API routes, operational endpoints, and the middleware that gives
/// every request an id, a log span, metrics, a body limit and problem documents for panics,
/// unknown routes and wrong methods.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .merge(resources::routes::<Customer>())
        .merge(resources::routes::<Product>())
        .merge(resources::routes::<Order>())
        .merge(resources::routes::<User>())
        .merge(resources::routes::<ApiKey>())
        .merge(resources::routes::<CommsEntry>())
        .merge(resources::routes::<Media>())
        .merge(comms::routes())
        .merge(media::routes())
        .merge(bus::routes())
        .merge(plugins::routes())
        .route("/customers/{id}/orders", get(resources::customer_orders))
        .route("/customers/{id}/history", get(resources::customer_history))
        .merge(admin::routes())
        .merge(auth::routes())
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::authorize))
        .layer(SetResponseHeaderLayer::overriding(header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::list(state.cors_origins.clone()))
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
            header::IF_NONE_MATCH,
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static(extract::IDEMPOTENCY_KEY),
        ])
        .expose_headers([
            header::ETAG,
            header::LOCATION,
            HeaderName::from_static("x-request-id"),
            header::RETRY_AFTER,
            HeaderName::from_static("idempotent-replayed"),
        ])
        .max_age(Duration::from_secs(600));
    let app = Router::new()
        .nest("/api/v1", api)
        .merge(ops::routes())
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state);
    // Outermost, so that every answer — a panic's included — carries them.
    telemetry::instrument(app)
        .layer(cors)
        .layer(SetResponseHeaderLayer::overriding(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .layer(SetResponseHeaderLayer::overriding(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
        .layer(SetResponseHeaderLayer::overriding(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")))
}
