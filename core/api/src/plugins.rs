//! Rule plugins over HTTP: the registry's management for admins (upload, list, get, enable,
//! disable, roll back, delete), quoting an order with the active pricing plugin without saving
//! it, and the glue that prices orders on create and update. Registry operations compile
//! components and touch the disk, so they run on the blocking pool; so do plugin calls, which
//! are CPU-bound and bounded by their fuel.

use crate::AppState;
use crate::auth::{Ctx, Requirement, RouteRule};
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, strict_query};
use crate::resources::parse_body;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use crm_domain::Violations;
use crm_domain::access::{Action, Area};
use crm_domain::order::{Order, OrderStatus, PricedBy};
use crm_plugins::pricing::{PriceRequest, order_pointer};
use crm_plugins::{CallError, PluginSummary, Registry, RegistryError, RuleError};
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;

/// The largest component `POST /api/v1/plugins` accepts: 64 MiB (a CPython component is ~20).
pub const MAX_PLUGIN_BYTES: usize = 64 * 1024 * 1024;

/// Routes of this module.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/plugins", get(list).merge(post(upload).layer(DefaultBodyLimit::max(MAX_PLUGIN_BYTES))))
        .route("/plugins/{name}", get(read).delete(delete))
        .route("/plugins/{name}/enable", post(enable))
        .route("/plugins/{name}/disable", post(disable))
        .route("/plugins/{name}/rollback", post(rollback))
        .route("/orders/quote", post(quote))
}

/// The permission rule of each route.
pub(crate) fn rules() -> Vec<RouteRule> {
    let admin = Requirement::Permission(Area::Plugins, Action::Admin);
    let rule = |method: Method, path: &str, requirement: Requirement| RouteRule { method, path: path.to_owned(), requirement };
    vec![
        rule(Method::GET, "/api/v1/plugins", admin),
        rule(Method::POST, "/api/v1/plugins", admin),
        rule(Method::GET, "/api/v1/plugins/{name}", admin),
        rule(Method::DELETE, "/api/v1/plugins/{name}", admin),
        rule(Method::POST, "/api/v1/plugins/{name}/enable", admin),
        rule(Method::POST, "/api/v1/plugins/{name}/disable", admin),
        rule(Method::POST, "/api/v1/plugins/{name}/rollback", admin),
        rule(Method::POST, "/api/v1/orders/quote", Requirement::Permission(Area::Orders, Action::Edit)),
    ]
}

fn registry(state: &AppState) -> ApiResult<Arc<Registry>> {
    state.plugins.clone().ok_or_else(|| ApiError::PluginUnavailable("this server runs without rule plugins".into()))
}

impl From<RegistryError> for ApiError {
    fn from(err: RegistryError) -> Self {
        match err {
            RegistryError::NotFound(name) => ApiError::NotFound(format!("no plugin named `{name}`")),
            RegistryError::Invalid(detail) => ApiError::BadQuery(Violations::one("/name", detail)),
            RegistryError::Load(load) => ApiError::Invalid(Violations::one("", format!("the component was refused: {load}"))),
            RegistryError::Conflict(detail) => ApiError::Conflict { pointer: None, detail },
            RegistryError::Io(io) => ApiError::internal(io),
        }
    }
}

/// Runs a registry operation on the blocking pool.
async fn blocking<T: Send + 'static>(
    state: &AppState,
    op: impl FnOnce(&Registry) -> Result<T, RegistryError> + Send + 'static,
) -> ApiResult<T> {
    let registry = registry(state)?;
    tokio::task::spawn_blocking(move || op(&registry)).await.map_err(ApiError::internal)?.map_err(ApiError::from)
}

async fn list(State(state): State<AppState>, _ctx: Ctx) -> ApiResult<Json<Vec<PluginSummary>>> {
    Ok(Json(blocking(&state, |r| Ok(r.list())).await?))
}

async fn read(State(state): State<AppState>, _ctx: Ctx, Path(name): Path<String>) -> ApiResult<Json<PluginSummary>> {
    Ok(Json(blocking(&state, move |r| r.get(&name)).await?))
}

/// Query parameters of an upload.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct UploadParams {
    /// The plugin's name (`a-z 0-9 . _ -`); a new version when it exists.
    name: String,
    /// The version being uploaded.
    version: String,
    /// Make it the active plugin for each rule it implements (default true).
    activate: Option<bool>,
}

async fn upload(State(state): State<AppState>, _ctx: Ctx, RawQuery(raw): RawQuery, body: Bytes) -> ApiResult<Response> {
    let UploadParams { name, version, activate } = strict_query(raw.as_deref(), &["name", "version", "activate"])?;
    if body.is_empty() {
        return Err(ApiError::Invalid(Violations::one("", "send the component (a .wasm file) as the body")));
    }
    let summary = blocking(&state, move |r| r.upload(&name, &version, &body, activate.unwrap_or(true))).await?;
    Ok((StatusCode::CREATED, Json(summary)).into_response())
}

async fn enable(State(state): State<AppState>, _ctx: Ctx, Path(name): Path<String>) -> ApiResult<Json<PluginSummary>> {
    Ok(Json(blocking(&state, move |r| r.enable(&name)).await?))
}

async fn disable(State(state): State<AppState>, _ctx: Ctx, Path(name): Path<String>) -> ApiResult<Json<PluginSummary>> {
    Ok(Json(blocking(&state, move |r| r.disable(&name)).await?))
}

async fn rollback(State(state): State<AppState>, _ctx: Ctx, Path(name): Path<String>) -> ApiResult<Json<PluginSummary>> {
    Ok(Json(blocking(&state, move |r| r.rollback(&name)).await?))
}

async fn delete(State(state): State<AppState>, _ctx: Ctx, Path(name): Path<String>) -> ApiResult<StatusCode> {
    blocking(&state, move |r| r.delete(&name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Prices a draft order as `POST /api/v1/orders` would (products looked up, the active
/// pricing plugin applied) and returns it without saving anything. The customer may be left
/// out.
async fn quote(State(state): State<AppState>, ctx: Ctx, JsonBody(mut body): JsonBody) -> ApiResult<Json<Order>> {
    ctx.principal.require(Area::Orders, Action::Edit)?;
    if let Value::Object(map) = &mut body {
        map.entry("customer_id").or_insert_with(|| Value::String(uuid::Uuid::nil().to_string()));
        map.remove("status");
    }
    Ok(Json(parse_body::<Order>(&state, body, None).await?))
}

/// Prices `order` with the active pricing plugin, when the server runs plugins (otherwise the
/// built-in rule already priced it). An order past the draft stage keeps the amounts it was
/// priced with (`current`): its lines are frozen, and a new plugin must not change them.
pub(crate) async fn price_order(state: &AppState, order: &mut Order, current: Option<&Order>) -> ApiResult<()> {
    if let Some(current) = current.filter(|c| c.status != OrderStatus::Draft) {
        if current.items.len() == order.items.len() {
            order.keep_amounts_of(current);
        }
        return Ok(());
    }
    let Some(registry) = state.plugins.clone() else { return Ok(()) };
    let request = PriceRequest::from_order(order);
    let answer = tokio::task::spawn_blocking(move || registry.price(&request)).await.map_err(ApiError::internal)?;
    match answer {
        Ok((quote, by)) => {
            order.apply_quote(&quote, Some(PricedBy { plugin: by.name, version: by.version, hash: by.hash }));
            Ok(())
        }
        Err(CallError::Refused(rule)) => Err(ApiError::Invalid(refusal(rule))),
        Err(err) => Err(ApiError::PluginUnavailable(format!("the order could not be priced, so nothing was saved: {err}"))),
    }
}

/// A rule's refusal as field errors of the order.
fn refusal(rule: RuleError) -> Violations {
    let mut errors = Violations::default();
    match rule {
        RuleError::InvalidInput(problems) if !problems.is_empty() => {
            for p in problems {
                errors.push(order_pointer(&p.pointer), p.detail);
            }
        }
        RuleError::Overflow => errors.push("/items", "amounts are too large to add up"),
        other => errors.push("", format!("the pricing rule refused the order: {other}")),
    }
    errors
}
