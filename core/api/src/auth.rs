//! Authentication and authorisation for every route.
//!
//! Console users sign in with e-mail and password (Argon2id) and get a short-lived access token
//! (a JWT, 15 minutes by default) and a refresh token that rotates on every use. Refresh tokens
//! are stored hashed, grouped in families (one per sign-in); presenting an already-used token
//! revokes its whole family, since it means the token was stolen or replayed. Connectors and
//! scripts use API keys (`crm_…`), stored hashed and scoped to `area:action` grants.
//!
//! Every route has a rule in [`route_rules`]; the middleware refuses a route without one (fail
//! closed), answers 401 without valid credentials and 403 without the permission. Each request
//! re-reads its user, so disabling a user or changing a role takes effect at once.

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, typed};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router, routing::get, routing::post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use crm_domain::Record;
use crm_domain::access::{self, Action, Area, Permission, Role, Scope};
use crm_domain::user::{ApiKey, User};
use crm_store::{Actor, ActorKind, RefreshOutcome, Store};
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How many accounts and addresses the sign-in throttle tracks before it forgets idle ones.
const MAX_TRACKED_KEYS: usize = 10_000;

/// The prefix of every API key, so that a key is recognisable (and findable by secret scanners).
pub const API_KEY_PREFIX: &str = "crm_";

/// Authentication settings.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Lifetime of an access token.
    pub access_token_ttl: Duration,
    /// Lifetime of a refresh token (each rotation starts a new one).
    pub refresh_token_ttl: Duration,
    /// Argon2id memory cost in KiB.
    pub argon2_memory_kib: u32,
    /// Argon2id iterations.
    pub argon2_iterations: u32,
    /// Failed sign-ins per account within the window before 429.
    pub max_failed_logins_per_account: usize,
    /// Failed sign-ins per client address within the window before 429.
    pub max_failed_logins_per_address: usize,
    /// The window failed sign-ins are counted in.
    pub failed_login_window: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            access_token_ttl: Duration::from_secs(15 * 60),
            refresh_token_ttl: Duration::from_secs(30 * 24 * 3600),
            // OWASP's minimum for Argon2id: 19 MiB, 2 iterations, 1 lane.
            argon2_memory_kib: 19 * 1024,
            argon2_iterations: 2,
            max_failed_logins_per_account: 5,
            max_failed_logins_per_address: 20,
            failed_login_window: Duration::from_secs(15 * 60),
        }
    }
}

/// Keys, settings and sign-in throttling, shared by all requests.
pub struct Auth {
    config: AuthConfig,
    encoding: EncodingKey,
    decoding: DecodingKey,
    failures: Mutex<HashMap<String, Vec<Instant>>>,
    /// A hash of a random password, checked against when the account does not exist.
    decoy_hash: tokio::sync::OnceCell<String>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("config", &self.config).field("keys", &"<redacted>").finish()
    }
}

impl Auth {
    /// Loads (or, on first start, creates) the token signing key from the store.
    pub async fn new(store: &Store, config: AuthConfig) -> crm_store::Result<Auth> {
        let secret = store.server_secret("access_token_hs256", || random_token(32)).await?;
        Ok(Auth {
            config,
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            failures: Mutex::new(HashMap::new()),
            decoy_hash: tokio::sync::OnceCell::new(),
        })
    }

    fn argon2(&self) -> Result<Argon2<'static>, ApiError> {
        let params = Params::new(self.config.argon2_memory_kib, self.config.argon2_iterations, 1, None)
            .map_err(|e| ApiError::internal(std::io::Error::other(e.to_string())))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }

    /// Hashes a password with Argon2id, off the async threads.
    pub async fn hash_password(&self, password: String) -> ApiResult<String> {
        let argon2 = self.argon2()?;
        tokio::task::spawn_blocking(move || {
            let salt = SaltString::encode_b64(&random_bytes(16)).map_err(|e| e.to_string())?;
            argon2.hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::internal(std::io::Error::other(e)))
    }

    /// Checks a password against a stored hash (or against nothing, taking as long, so that
    /// unknown accounts cannot be told from wrong passwords by timing).
    async fn verify_password(&self, password: String, hash: Option<String>) -> ApiResult<bool> {
        let argon2 = self.argon2()?;
        let decoy = self.decoy_hash.get_or_try_init(|| self.hash_password(random_token(16))).await?.clone();
        tokio::task::spawn_blocking(move || {
            let (stored, real) = match hash {
                Some(h) => (h, true),
                None => (decoy, false),
            };
            let parsed = PasswordHash::new(&stored).map_err(|e| e.to_string())?;
            Ok::<bool, String>(argon2.verify_password(password.as_bytes(), &parsed).is_ok() && real)
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::internal(std::io::Error::other(e)))
    }

    fn issue_access_token(&self, user_id: Uuid, family: Uuid) -> ApiResult<String> {
        let now = Utc::now().timestamp();
        let claims = Claims { sub: user_id, fam: family, iat: now, exp: now + self.config.access_token_ttl.as_secs() as i64 };
        jsonwebtoken::encode(&Header::default(), &claims, &self.encoding).map_err(ApiError::internal)
    }

    fn read_access_token(&self, token: &str) -> Option<Claims> {
        let mut validation = Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.leeway = 0;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).ok().map(|d| d.claims)
    }

    /// Starts a sign-in attempt: if any of `keys` has failed too often, how long until it may
    /// try again; otherwise the attempt is counted as a failure of every key right away (and
    /// taken back by [`Auth::attempt_succeeded`]). Counting before the password is checked, in
    /// the same lock as the check, keeps a burst of concurrent guesses from all passing the
    /// check before any of them has failed.
    fn begin_attempt(&self, keys: &[(String, usize)]) -> Result<Instant, Duration> {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let window = self.config.failed_login_window;
        if failures.len() > MAX_TRACKED_KEYS {
            // Keys nobody has tried within the window carry no information: drop them, so
            // that guesses at many e-mails cannot grow the map without bound.
            failures.retain(|_, times| times.last().is_some_and(|t| t.elapsed() < window));
        }
        let wait = keys
            .iter()
            .filter_map(|(key, max)| {
                let times = failures.entry(key.clone()).or_default();
                times.retain(|t| t.elapsed() < window);
                (times.len() >= *max).then(|| window.saturating_sub(times[0].elapsed()))
            })
            .max();
        if let Some(wait) = wait {
            return Err(wait);
        }
        let started = Instant::now();
        for (key, _) in keys {
            failures.entry(key.clone()).or_default().push(started);
        }
        Ok(started)
    }

    /// Takes back the failure [`Auth::begin_attempt`] counted for an attempt that succeeded,
    /// and forgets the earlier failures of `account`.
    fn attempt_succeeded(&self, account: &str, keys: &[(String, usize)], started: Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(account);
        for (key, _) in keys {
            if let Some(times) = failures.get_mut(key)
                && let Some(i) = times.iter().position(|t| *t == started)
            {
                times.remove(i);
            }
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: Uuid,
    fam: Uuid,
    iat: i64,
    exp: i64,
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
}

/// `n` random bytes, base64url.
pub(crate) fn random_token(n: usize) -> String {
    URL_SAFE_NO_PAD.encode(random_bytes(n))
}

/// A random password of 20 characters from an alphabet without look-alikes.
pub fn generate_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    use rand::seq::SliceRandom;
    (0..20).filter_map(|_| ALPHABET.choose(&mut rand::rngs::OsRng)).map(|b| char::from(*b)).collect()
}

/// SHA-256 of a high-entropy token, hex. (Tokens and keys are random, so a fast hash is right;
/// passwords, which are not, use Argon2id.)
pub(crate) fn token_hash(token: &str) -> String {
    crm_domain::sha256_hex(token.as_bytes())
}

/// Who is making a request.
#[derive(Debug, Clone)]
pub enum Principal {
    /// A console user.
    User {
        /// The user.
        id: Uuid,
        /// Their role now.
        role: Role,
    },
    /// A service credential.
    ApiKey {
        /// The key.
        id: Uuid,
        /// What it may do.
        grants: Vec<(Area, Action)>,
    },
}

impl Principal {
    /// Which records of `area` the principal may `action`, if any.
    pub fn scope(&self, area: Area, action: Action) -> Option<Scope> {
        match self {
            Principal::User { role, .. } => access::scope_of(*role, area, action),
            Principal::ApiKey { grants, .. } => grants.contains(&(area, action)).then_some(Scope::All),
        }
    }

    /// Like [`Principal::scope`], or 403.
    pub fn require(&self, area: Area, action: Action) -> ApiResult<Scope> {
        self.scope(area, action).ok_or_else(|| ApiError::Forbidden(format!("you may not {} {}", action.as_str(), area.as_str())))
    }

    /// The user, for a console user.
    pub fn user_id(&self) -> Option<Uuid> {
        match self {
            Principal::User { id, .. } => Some(*id),
            Principal::ApiKey { .. } => None,
        }
    }

    /// Who it is in records that name their author: `user:<id>` or `api_key:<id>`.
    pub fn label(&self) -> String {
        match self {
            Principal::User { id, .. } => format!("user:{id}"),
            Principal::ApiKey { id, .. } => format!("api_key:{id}"),
        }
    }

    fn actor(&self, request_id: Option<String>) -> Actor {
        match self {
            Principal::User { id, .. } => Actor { kind: ActorKind::User, id: Some(*id), request_id },
            Principal::ApiKey { id, .. } => Actor { kind: ActorKind::ApiKey, id: Some(*id), request_id },
        }
    }
}

/// The acting principal and a store handle whose changes are audited as theirs.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Who.
    pub principal: Principal,
    /// The store, acting as them.
    pub store: Store,
}

impl FromRequestParts<AppState> for Ctx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, ApiError> {
        parts.extensions.get::<Ctx>().cloned().ok_or_else(|| ApiError::Unauthorized("sign in first".into()))
    }
}

/// What a route requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// Nothing: anyone may call it (sign-in, token refresh).
    Public,
    /// Any signed-in principal.
    SignedIn,
    /// A permission.
    Permission(Area, Action),
    /// A permission held for every record of the area (`Scope::All`): those who may act only
    /// on records assigned to them are refused.
    PermissionOnAll(Area, Action),
}

/// One route's rule.
#[derive(Debug, Clone)]
pub struct RouteRule {
    /// HTTP method.
    pub method: Method,
    /// Route template as matched, e.g. `/api/v1/customers/{id}`.
    pub path: String,
    /// What it requires.
    pub requirement: Requirement,
}

/// The permission rule of every API route. A route missing here is refused for everyone.
pub fn route_rules() -> &'static [RouteRule] {
    static RULES: std::sync::OnceLock<Vec<RouteRule>> = std::sync::OnceLock::new();
    RULES.get_or_init(crate::route_table)
}

fn rule_for(method: &Method, path: &str) -> Option<Requirement> {
    route_rules().iter().find(|r| r.method == method && r.path == path).map(|r| r.requirement)
}

/// Authenticates the request and checks its route's rule; inserts [`Ctx`] for handlers.
pub(crate) async fn authorize(State(state): State<AppState>, mut request: Request, next: Next) -> Result<Response, ApiError> {
    let path = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_default();
    let Some(requirement) = rule_for(request.method(), &path) else {
        tracing::error!(method = %request.method(), route = %path, "route has no permission rule: refused");
        return Err(ApiError::Forbidden("this route has no permission rule".into()));
    };
    if requirement == Requirement::Public {
        return Ok(next.run(request).await);
    }
    let principal = authenticate(&state, request.headers()).await?;
    match requirement {
        Requirement::Permission(area, action) => {
            principal.require(area, action)?;
        }
        Requirement::PermissionOnAll(area, action) => {
            if principal.require(area, action)? != Scope::All {
                return Err(ApiError::Forbidden(format!(
                    "you may {} only the {} assigned to you; this needs the permission for all of them",
                    action.as_str(),
                    area.as_str()
                )));
            }
        }
        Requirement::Public | Requirement::SignedIn => {}
    }
    let request_id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let store = state.store.acting_as(principal.actor(request_id));
    request.extensions_mut().insert(Ctx { principal, store });
    Ok(next.run(request).await)
}

async fn authenticate(state: &AppState, headers: &axum::http::HeaderMap) -> ApiResult<Principal> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::Unauthorized("missing Authorization header".into()))?;
    let token =
        value.strip_prefix("Bearer ").map(str::trim).ok_or_else(|| ApiError::Unauthorized("use `Authorization: Bearer <token>`".into()))?;
    if token.starts_with(API_KEY_PREFIX) {
        let key = state
            .store
            .api_key_by_hash(&token_hash(token))
            .await?
            .ok_or_else(|| ApiError::Unauthorized("unknown or revoked API key".into()))?;
        touch_later(state.store.clone(), &key);
        let grants = key.data.scopes.iter().filter_map(|s| access::parse_grant(s).ok()).collect();
        return Ok(Principal::ApiKey { id: key.id, grants });
    }
    let claims = state.auth.read_access_token(token).ok_or_else(|| ApiError::Unauthorized("invalid or expired access token".into()))?;
    let user = match state.store.get::<User>(claims.sub, false).await {
        Ok(user) => user,
        Err(crm_store::StoreError::NotFound) => return Err(ApiError::Unauthorized("the user no longer exists".into())),
        Err(other) => return Err(other.into()),
    };
    if !user.data.active {
        return Err(ApiError::Unauthorized("the account is disabled".into()));
    }
    // Signing out, a password reset or disabling the user revokes the session family: its
    // access tokens die with it, not when they expire.
    if !state.store.session_active(claims.fam).await? {
        return Err(ApiError::Unauthorized("the session has ended; sign in again".into()));
    }
    Ok(Principal::User { id: user.id, role: user.data.role })
}

/// Records a key's use at most once a minute, without holding up the request.
fn touch_later(store: Store, key: &Record<ApiKey>) {
    let stale = key.data.last_used_at.is_none_or(|t| Utc::now() - t > chrono::Duration::seconds(60));
    if stale {
        let id = key.id;
        tokio::spawn(async move {
            if let Err(err) = store.touch_api_key(id, Utc::now()).await {
                tracing::warn!(error = %err, "could not record API key use");
            }
        });
    }
}

/// Sign-in, token refresh, sign-out and `/me`.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/auth/login", post(login))
        .route("/auth/refresh", post(refresh))
        .route("/auth/logout", post(logout))
        .route("/me", get(me))
}

/// Credentials for signing in.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginRequest {
    email: String,
    password: String,
}

impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRequest").field("email", &self.email).field("password", &"<redacted>").finish()
    }
}

/// A refresh token, for refreshing or signing out.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RefreshRequest {
    refresh_token: String,
}

/// Tokens after signing in or refreshing.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
    refresh_token: String,
    refresh_expires_in: u64,
}

async fn issue(state: &AppState, user_id: Uuid, family: Uuid, refresh_token: String) -> ApiResult<Json<TokenResponse>> {
    let config = &state.auth.config;
    Ok(Json(TokenResponse {
        access_token: state.auth.issue_access_token(user_id, family)?,
        token_type: "Bearer",
        expires_in: config.access_token_ttl.as_secs(),
        refresh_token,
        refresh_expires_in: config.refresh_token_ttl.as_secs(),
    }))
}

fn refresh_expiry(state: &AppState) -> chrono::DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(state.auth.config.refresh_token_ttl).unwrap_or(chrono::Duration::days(30))
}

/// The client's IP address, as the connection shows it.
#[derive(Debug)]
pub(crate) struct ClientAddress(String);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddress {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let address = parts.extensions.get::<ConnectInfo<SocketAddr>>().map_or_else(|| "unknown".to_owned(), |c| c.0.ip().to_string());
        Ok(ClientAddress(address))
    }
}

async fn login(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let request: LoginRequest = typed(body)?;
    let request_id = headers.get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let email = request.email.trim().to_lowercase();
    let config = &state.auth.config;
    let keys = [
        (format!("account:{email}"), config.max_failed_logins_per_account),
        (format!("address:{address}"), config.max_failed_logins_per_address),
    ];
    let started = state.auth.begin_attempt(&keys).map_err(|wait| ApiError::TooManyRequests { retry_after: wait.as_secs().max(1) })?;
    let found = state.store.user_credentials(&email).await?;
    let (user, hash) = match found {
        Some((user, hash)) => (Some(user), hash),
        None => (None, None),
    };
    let password_ok = state.auth.verify_password(request.password, hash).await?;
    let user = match user {
        Some(user) if password_ok && user.data.active => user,
        other => {
            let store = state.store.acting_as(Actor { kind: ActorKind::System, id: None, request_id: request_id.clone() });
            store.record_sign_in("login_failed", other.map(|u| u.id)).await?;
            return Err(ApiError::Unauthorized("wrong e-mail or password, or the account is disabled".into()));
        }
    };
    state.auth.attempt_succeeded(&keys[0].0, &keys, started);
    let store = state.store.acting_as(Actor { kind: ActorKind::User, id: Some(user.id), request_id });
    store.record_sign_in("login", Some(user.id)).await?;
    let family = Uuid::now_v7();
    let refresh_token = random_token(32);
    state.store.insert_refresh_token(user.id, family, &token_hash(&refresh_token), refresh_expiry(&state)).await?;
    Ok(issue(&state, user.id, family, refresh_token).await?.into_response())
}

async fn refresh(State(state): State<AppState>, JsonBody(body): JsonBody) -> ApiResult<Json<TokenResponse>> {
    let request: RefreshRequest = typed(body)?;
    let next = random_token(32);
    match state.store.rotate_refresh_token(&token_hash(&request.refresh_token), &token_hash(&next), refresh_expiry(&state)).await? {
        RefreshOutcome::Rotated { user_id, family_id } => {
            let active = matches!(state.store.get::<User>(user_id, false).await, Ok(user) if user.data.active);
            if !active {
                state.store.revoke_refresh_family(&token_hash(&next)).await?;
                return Err(ApiError::Unauthorized("the account is disabled".into()));
            }
            issue(&state, user_id, family_id, next).await
        }
        RefreshOutcome::Reused => {
            Err(ApiError::Unauthorized("this refresh token was already used: the session has been revoked; sign in again".into()))
        }
        RefreshOutcome::Invalid => Err(ApiError::Unauthorized("unknown, expired or revoked refresh token".into())),
    }
}

async fn logout(State(state): State<AppState>, JsonBody(body): JsonBody) -> ApiResult<StatusCode> {
    let request: RefreshRequest = typed(body)?;
    state.store.revoke_refresh_family(&token_hash(&request.refresh_token)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The signed-in principal, with what they may do.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Me {
    /// `user` or `api_key`.
    kind: &'static str,
    /// The user, for console users.
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<Record<User>>,
    /// The key, for service credentials.
    #[serde(skip_serializing_if = "Option::is_none")]
    api_key: Option<Record<ApiKey>>,
    /// Permissions, as `area:action` with their scope.
    permissions: Vec<Permission>,
}

async fn me(ctx: Ctx) -> ApiResult<Json<Me>> {
    Ok(Json(match &ctx.principal {
        Principal::User { id, role } => Me {
            kind: "user",
            user: Some(ctx.store.get::<User>(*id, false).await?),
            api_key: None,
            permissions: access::permissions(*role),
        },
        Principal::ApiKey { id, grants } => Me {
            kind: "api_key",
            user: None,
            api_key: Some(ctx.store.get::<ApiKey>(*id, false).await?),
            permissions: grants.iter().map(|(area, action)| Permission { area: *area, action: *action, scope: Scope::All }).collect(),
        },
    }))
}
