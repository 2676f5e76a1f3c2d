//! Administration: console users (with their passwords), service credentials (API keys, shown
//! once), and the audit trail.

use crate::AppState;
use crate::auth::{API_KEY_PREFIX, Ctx, random_token, token_hash};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Id, JsonBody, strict_query, typed};
use crate::resources::{ApiResource, created, parse_body};
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use crm_domain::Violations;
use crm_domain::access::{self, Action, Area, Role, Scope};
use crm_domain::user::{self, ApiKey, ApiKeyInput, User, UserInput};
use crm_store::{ApiKeyFilter, AuditEntry, AuditQuery, ListQuery, Page, UserFilter};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

/// Filter parameters for users.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct UserParams {
    /// With this role.
    #[param(inline)]
    role: Option<Role>,
    /// Active or disabled.
    active: Option<bool>,
}

/// Whether the principal may hand `action` on `area` to someone else: only what it holds for all
/// records.
fn can_grant(ctx: &Ctx, area: Area, action: Action) -> bool {
    ctx.principal.scope(area, action) == Some(Scope::All)
}

/// Takes a write-only `password` out of a user document.
fn take_password(body: &mut Value) -> ApiResult<Option<String>> {
    match body.as_object_mut().and_then(|o| o.remove("password")) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(password)) => {
            user::check_password(&password).map_err(|e| ApiError::Invalid(Violations::one("/password", e)))?;
            Ok(Some(password))
        }
        Some(_) => Err(ApiError::Invalid(Violations::one("/password", "must be a string"))),
    }
}

impl ApiResource for User {
    const PATH: &'static str = "users";
    const NAME: &'static str = "user";
    const READ_ONLY: &'static [&'static str] = &[];
    const FILTERS: &'static [&'static str] = &["role", "active"];
    const AREA: Area = Area::Users;
    type Input = UserInput;
    type FilterParams = UserParams;

    async fn parse(_: &AppState, input: UserInput, _: Option<&Self>) -> ApiResult<Self> {
        Ok(input.parse()?)
    }

    fn filter(p: UserParams) -> UserFilter {
        UserFilter { role: p.role, active: p.active }
    }

    /// Nobody grants a role with permissions they do not hold themselves, and the last active
    /// admin cannot be demoted, disabled or deleted.
    async fn check_write(ctx: &Ctx, current: Option<&Self>, next: Option<&Self>) -> ApiResult<()> {
        if let Some(next) = next.filter(|n| current.is_none_or(|c| c.role != n.role)) {
            for permission in access::permissions(next.role) {
                if !can_grant(ctx, permission.area, permission.action) {
                    return Err(ApiError::Forbidden(format!(
                        "you may not grant the {} role: it can {permission}, which you cannot",
                        next.role.as_str()
                    )));
                }
            }
        }
        let is_admin = |u: &User| u.active && u.role == Role::Admin;
        if current.is_some_and(is_admin) && !next.is_some_and(is_admin) {
            let query =
                ListQuery { filter: UserFilter { role: Some(Role::Admin), active: Some(true) }, limit: Some(2), ..ListQuery::default() };
            if ctx.store.list::<User>(&query).await?.items.len() < 2 {
                return Err(ApiError::Conflict {
                    pointer: Some("/role".into()),
                    detail: "this is the last active admin: make another admin first".into(),
                });
            }
        }
        Ok(())
    }

    /// A new user may come with a password (`password`, write-only), hashed with Argon2id.
    async fn create(ctx: &Ctx, state: &AppState, mut body: Value) -> ApiResult<Response> {
        let password = take_password(&mut body)?;
        let user = parse_body::<User>(state, body, None).await?;
        Self::check_write(ctx, None, Some(&user)).await?;
        let hash = match password {
            Some(p) => Some(state.auth.hash_password(p).await?),
            None => None,
        };
        Ok(created(ctx.store.create_user(user, hash).await?))
    }
}

/// Filter parameters for API keys (none).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct NoParams {}

impl ApiResource for ApiKey {
    const PATH: &'static str = "api-keys";
    const NAME: &'static str = "API key";
    const READ_ONLY: &'static [&'static str] = &["/prefix", "/created_by", "/last_used_at"];
    const FILTERS: &'static [&'static str] = &[];
    const AREA: Area = Area::ApiKeys;
    const EDITABLE: bool = false;
    const RESTORABLE: bool = false;
    type Input = ApiKeyInput;
    type FilterParams = NoParams;

    async fn parse(_: &AppState, input: ApiKeyInput, _: Option<&Self>) -> ApiResult<Self> {
        Ok(input.parse()?)
    }

    fn filter(_: NoParams) -> ApiKeyFilter {
        ApiKeyFilter
    }

    /// Makes a new key and returns it once, in `key`; only its hash is kept.
    async fn create(ctx: &Ctx, state: &AppState, body: Value) -> ApiResult<Response> {
        let mut data = parse_body::<ApiKey>(state, body, None).await?;
        for (i, scope) in data.scopes.iter().enumerate() {
            let (area, action) = access::parse_grant(scope).map_err(|e| ApiError::Invalid(Violations::one(format!("/scopes/{i}"), e)))?;
            if !can_grant(ctx, area, action) {
                return Err(ApiError::Forbidden(format!("you may not grant {scope}: you do not hold it for all records")));
            }
        }
        let key = format!("{API_KEY_PREFIX}{}", random_token(32));
        data.prefix = key.chars().take(API_KEY_PREFIX.len() + 6).collect();
        data.created_by = ctx.principal.user_id();
        let record = ctx.store.create_api_key(data, token_hash(&key)).await?;
        let mut response = created(record);
        let body = std::mem::take(response.body_mut());
        let bytes = axum::body::to_bytes(body, usize::MAX).await.map_err(ApiError::internal)?;
        let mut json: Value = serde_json::from_slice(&bytes).map_err(ApiError::internal)?;
        json["key"] = Value::String(key);
        let headers = response.headers().clone();
        let mut response = (StatusCode::CREATED, Json(json)).into_response();
        response.headers_mut().extend(headers);
        Ok(response)
    }
}

/// A new password for a user.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PasswordRequest {
    password: String,
}

/// Sets a user's password and ends their sessions.
async fn set_password(State(state): State<AppState>, ctx: Ctx, Id(id): Id, JsonBody(body): JsonBody) -> ApiResult<StatusCode> {
    let PasswordRequest { password } = typed(body)?;
    user::check_password(&password).map_err(|e| ApiError::Invalid(Violations::one("/password", e)))?;
    let hash = state.auth.hash_password(password).await?;
    ctx.store.set_password(id, hash).await.map_err(|e| match e {
        crm_store::StoreError::NotFound => ApiError::NotFound(format!("no user {id}")),
        other => other.into(),
    })?;
    Ok(StatusCode::NO_CONTENT)
}

/// Filters on the audit trail.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditParams {
    /// Done by this user or API key.
    actor: Option<Uuid>,
    /// On this kind of record (`customers`, `users`, ...).
    resource: Option<String>,
    /// On this record.
    resource_id: Option<Uuid>,
    /// At or after (RFC 3339).
    #[serde(default, deserialize_with = "crm_domain::deserialize_storable_time")]
    from: Option<DateTime<Utc>>,
    /// Before (RFC 3339).
    #[serde(default, deserialize_with = "crm_domain::deserialize_storable_time")]
    to: Option<DateTime<Utc>>,
    /// Cursor from the previous page.
    cursor: Option<String>,
    /// Page size, 1 to 200.
    limit: Option<u32>,
}

async fn audit(ctx: Ctx, RawQuery(raw): RawQuery) -> ApiResult<Json<Page<AuditEntry>>> {
    let p: AuditParams = strict_query(raw.as_deref(), &["actor", "resource", "resource_id", "from", "to", "cursor", "limit"])?;
    let query = AuditQuery {
        actor_id: p.actor,
        resource: p.resource,
        resource_id: p.resource_id,
        from: p.from,
        to: p.to,
        cursor: p.cursor,
        limit: p.limit,
    };
    Ok(Json(ctx.store.audit_trail(&query).await?))
}

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/users/{id}/password", post(set_password)).route("/audit", get(audit))
}
