//! Sessions, sign-in throttling and the audit trail over HTTP, on SQLite and PostgreSQL: what a
//! console user's tokens can and cannot do, how quickly an admin's decision (disable, demote,
//! reset a password) takes effect, and that every change (and only a change that happened) is
//! recorded, with who made it and what changed.
//!
//! Access tokens are short-lived JWTs that name their session (the refresh token family), and
//! every request re-reads the user and checks the session: signing out, resetting a password,
//! disabling, deleting or demoting a user all take effect on the very next request, not when
//! the access token expires.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use crm_tests::http::{expect_forbidden, expect_json, expect_problem, expect_unauthorized, id, pointers};
use crm_tests::{TestApp, client_with_token, test_api_config};
use reqwest::header::{CONTENT_TYPE, IF_MATCH, RETRY_AFTER};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

crm_tests::api_on_both_backends!(
    login_issues_tokens,
    forged_tokens_are_refused,
    refresh_tokens_rotate_and_reuse_revokes_the_family,
    logout_ends_the_session,
    disabling_demoting_and_deleting_take_effect_at_once,
    failed_logins_are_throttled_per_account_and_per_address,
    concurrent_guesses_cannot_outrun_the_limit,
    password_reset_ends_sessions,
    updates_are_audited_with_a_field_diff,
    failed_changes_leave_no_audit_record,
    life_cycle_and_sign_ins_are_audited,
    audit_records_are_immutable,
);

/// Tests that need their own API configuration, on both backends.
macro_rules! configured_on_both_backends {
    ($($name:ident => $config:ident),* $(,)?) => {
        mod configured_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = crm_tests::TestDb::new(crm_tests::Backend::Sqlite).await.expect("sqlite is always available");
                    super::$name(&crm_tests::TestApp::spawn_with(db, super::$config()).await).await;
                }
            )*
        }
        mod configured_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = crm_tests::TestDb::new(crm_tests::Backend::Postgres).await else { return };
                    super::$name(&crm_tests::TestApp::spawn_with(db, super::$config()).await).await;
                }
            )*
        }
    };
}

configured_on_both_backends!(
    access_tokens_expire => one_second_access_tokens,
    lockout_ends_with_its_window => one_second_lockout_window,
);

fn one_second_access_tokens() -> crm_api::ApiConfig {
    let mut config = test_api_config();
    config.auth.access_token_ttl = Duration::from_secs(1);
    config
}

fn one_second_lockout_window() -> crm_api::ApiConfig {
    let mut config = test_api_config();
    config.auth.failed_login_window = Duration::from_secs(1);
    config
}

const PASSWORD: &str = "correct horse battery staple";
const MERGE_PATCH: &str = "application/merge-patch+json";

// ---------------------------------------------------------------------------------------------
// Helpers.

/// A unique e-mail address, so that tests never collide.
fn email(name: &str) -> String {
    format!("{name}-{}@example.gr", uuid::Uuid::now_v7().simple())
}

/// Creates a user with a password as the admin; returns the record.
async fn create_user(app: &TestApp, email: &str, role: &str, password: &str) -> Value {
    let body = json!({"email": email, "display_name": format!("User {role}"), "role": role, "password": password});
    let response = app.client.post(app.url("/api/v1/users")).json(&body).send().await.expect("request");
    expect_json(response, StatusCode::CREATED).await
}

async fn login_response(app: &TestApp, email: &str, password: &str) -> Response {
    app.anonymous.post(app.url("/api/v1/auth/login")).json(&json!({"email": email, "password": password})).send().await.expect("request")
}

/// Signs in and returns the token response.
async fn login(app: &TestApp, email: &str, password: &str) -> Tokens {
    Tokens::from(expect_json(login_response(app, email, password).await, StatusCode::OK).await)
}

async fn refresh_response(app: &TestApp, refresh_token: &str) -> Response {
    app.anonymous.post(app.url("/api/v1/auth/refresh")).json(&json!({"refresh_token": refresh_token})).send().await.expect("request")
}

async fn refresh(app: &TestApp, refresh_token: &str) -> Tokens {
    Tokens::from(expect_json(refresh_response(app, refresh_token).await, StatusCode::OK).await)
}

async fn logout(app: &TestApp, refresh_token: &str) -> Response {
    app.anonymous.post(app.url("/api/v1/auth/logout")).json(&json!({"refresh_token": refresh_token})).send().await.expect("request")
}

/// GET `path` with `Authorization: Bearer token`.
async fn get_as(app: &TestApp, token: &str, path: &str) -> Response {
    client_with_token(token).get(app.url(path)).send().await.expect("request")
}

/// PATCHes `path` as the admin with a merge patch.
async fn admin_patch(app: &TestApp, path: &str, body: &Value) -> Response {
    app.client.patch(app.url(path)).header(CONTENT_TYPE, MERGE_PATCH).json(body).send().await.expect("request")
}

#[derive(Debug)]
struct Tokens {
    access: String,
    refresh: String,
    body: Value,
}

impl From<Value> for Tokens {
    fn from(body: Value) -> Self {
        let text = |name: &str| body[name].as_str().filter(|t| !t.is_empty()).unwrap_or_else(|| panic!("no {name} in {body:#}")).to_owned();
        Tokens { access: text("access_token"), refresh: text("refresh_token"), body }
    }
}

/// The decoded claims of a JWT (not verified: the server does that).
fn claims(token: &str) -> Value {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "not a JWT: {token}");
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).expect("header is base64url")).expect("header is JSON");
    assert_eq!(header["alg"], "HS256", "{header}");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("payload is base64url")).expect("payload is JSON")
}

/// The audit trail for `query`, newest first (one page of up to 200).
async fn audit(app: &TestApp, query: &[(&str, &str)]) -> Vec<Value> {
    let mut query = query.to_vec();
    query.push(("limit", "200"));
    let response = app.client.get(app.url("/api/v1/audit")).query(&query).send().await.expect("request");
    let page = expect_json(response, StatusCode::OK).await;
    assert!(page["next_cursor"].is_null(), "more than one page: {page:#}");
    page["items"].as_array().expect("items").clone()
}

async fn audit_of(app: &TestApp, resource: &str, id: &str) -> Vec<Value> {
    audit(app, &[("resource", resource), ("resource_id", id)]).await
}

fn actions(entries: &[Value]) -> Vec<&str> {
    entries.iter().map(|e| e["action"].as_str().expect("action")).collect()
}

/// The id of the admin API key `app.client` uses, as `/me` reports it.
async fn admin_key_id(app: &TestApp) -> String {
    let me = expect_json(app.client.get(app.url("/api/v1/me")).send().await.expect("request"), StatusCode::OK).await;
    assert_eq!(me["kind"], "api_key", "{me:#}");
    id(&me["api_key"]).to_owned()
}

// ---------------------------------------------------------------------------------------------
// 1. Signing in.

async fn login_issues_tokens(app: &TestApp) {
    let address = email("maria");
    let user = create_user(app, &address, "agent", PASSWORD).await;
    assert!(user.get("password").is_none() && user.get("password_hash").is_none(), "the password is write-only: {user:#}");

    let tokens = login(app, &address, PASSWORD).await;
    assert_eq!(tokens.body["token_type"], "Bearer", "{:#}", tokens.body);
    assert_eq!(tokens.body["expires_in"], 900, "access tokens live 15 minutes by default: {:#}", tokens.body);
    assert_eq!(tokens.body["refresh_expires_in"], 30 * 24 * 3600, "{:#}", tokens.body);
    assert_ne!(tokens.access, tokens.refresh);
    let claims = claims(&tokens.access);
    assert_eq!(claims["sub"], user["id"], "{claims}");
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 900, "{claims}");
    let now = chrono::Utc::now().timestamp();
    assert!((claims["iat"].as_i64().unwrap() - now).abs() <= 5, "{claims} vs now {now}");

    // The token signs the user in; `/me` says who they are and what they may do.
    let me = expect_json(get_as(app, &tokens.access, "/api/v1/me").await, StatusCode::OK).await;
    assert_eq!(me["kind"], "user");
    assert_eq!(me["user"]["id"], user["id"]);
    assert_eq!(me["user"]["role"], "agent");
    assert!(me["permissions"].as_array().is_some_and(|p| !p.is_empty()), "{me:#}");

    // The e-mail is matched case-insensitively and trimmed.
    login(app, &format!("  {}  ", address.to_uppercase()), PASSWORD).await;

    // Wrong password and unknown account: the same 401, so accounts cannot be enumerated.
    let wrong = expect_unauthorized(login_response(app, &address, "not the password at all").await).await;
    let unknown = expect_unauthorized(login_response(app, &email("nobody"), PASSWORD).await).await;
    assert_eq!(wrong["detail"], unknown["detail"], "{wrong:#}");

    // A missing or malformed Authorization header is 401 too.
    expect_unauthorized(app.anonymous.get(app.url("/api/v1/me")).send().await.expect("request")).await;
    let basic = app.anonymous.get(app.url("/api/v1/me")).header("authorization", "Basic dXNlcjpwYXNz").send().await.expect("request");
    expect_unauthorized(basic).await;
}

async fn forged_tokens_are_refused(app: &TestApp) {
    let address = email("forger");
    let user = create_user(app, &address, "agent", PASSWORD).await;
    let tokens = login(app, &address, PASSWORD).await;
    let parts: Vec<&str> = tokens.access.split('.').collect();

    // A changed signature.
    let mut signature = parts[2].to_owned();
    let last = signature.pop().unwrap();
    signature.push(if last == 'A' { 'B' } else { 'A' });
    let tampered = format!("{}.{}.{signature}", parts[0], parts[1]);
    expect_unauthorized(get_as(app, &tampered, "/api/v1/me").await).await;

    // Claims changed to last forever, signature kept.
    let mut claims = claims(&tokens.access);
    claims["exp"] = json!(chrono::Utc::now().timestamp() + 10 * 365 * 24 * 3600);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
    expect_unauthorized(get_as(app, &format!("{}.{payload}.{}", parts[0], parts[2]), "/api/v1/me").await).await;

    // An unsigned token (`alg: none`) for the same user.
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    expect_unauthorized(get_as(app, &format!("{header}.{payload}."), "/api/v1/me").await).await;

    // A refresh token is not an access token, nor the other way round.
    expect_unauthorized(get_as(app, &tokens.refresh, "/api/v1/me").await).await;
    expect_unauthorized(refresh_response(app, &tokens.access).await).await;

    // An API key that does not exist.
    expect_unauthorized(get_as(app, &format!("{}nope", crm_api::API_KEY_PREFIX), "/api/v1/me").await).await;

    // The real one still works.
    let me = expect_json(get_as(app, &tokens.access, "/api/v1/me").await, StatusCode::OK).await;
    assert_eq!(me["user"]["id"], user["id"]);
}

// ---------------------------------------------------------------------------------------------
// 2. Expiry.

/// With a one-second lifetime, a token works at once and is refused once it has certainly
/// expired. The check has no leeway and JWT times are whole seconds: a token issued at `t`
/// carries `exp = floor(t) + 1` and is refused from `floor(t) + 2` on, which is before `t + 2.5`.
async fn access_tokens_expire(app: &TestApp) {
    let address = email("brief");
    create_user(app, &address, "agent", PASSWORD).await;
    let tokens = login(app, &address, PASSWORD).await;
    assert_eq!(tokens.body["expires_in"], 1);
    expect_json(get_as(app, &tokens.access, "/api/v1/me").await, StatusCode::OK).await;

    tokio::time::sleep(Duration::from_millis(2500)).await;
    let problem = expect_unauthorized(get_as(app, &tokens.access, "/api/v1/me").await).await;
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("expired")), "{problem:#}");

    // The refresh token outlives it and gets a fresh access token.
    let next = refresh(app, &tokens.refresh).await;
    expect_json(get_as(app, &next.access, "/api/v1/me").await, StatusCode::OK).await;
}

// ---------------------------------------------------------------------------------------------
// 3. Refresh rotation and logout.

async fn refresh_tokens_rotate_and_reuse_revokes_the_family(app: &TestApp) {
    let address = email("rotor");
    let user = create_user(app, &address, "agent", PASSWORD).await;
    let user_id = id(&user).to_owned();
    let first = login(app, &address, PASSWORD).await;
    let other_session = login(app, &address, PASSWORD).await;

    // Each refresh hands out a new refresh token (and a new access token for the same user).
    let second = refresh(app, &first.refresh).await;
    assert_ne!(second.refresh, first.refresh);
    assert_eq!(second.body["token_type"], "Bearer");
    assert_eq!(claims(&second.access)["sub"], json!(user_id));
    expect_json(get_as(app, &second.access, "/api/v1/me").await, StatusCode::OK).await;

    // The new one works in turn.
    let third = refresh(app, &second.refresh).await;
    assert!(![&first.refresh, &second.refresh].contains(&&third.refresh));

    // Presenting an already used token again: refused, and the whole family is revoked, so the
    // newest token of the family (which whoever replayed the old one might hold) fails too.
    let problem = expect_unauthorized(refresh_response(app, &first.refresh).await).await;
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("already used")), "{problem:#}");
    expect_unauthorized(refresh_response(app, &third.refresh).await).await;
    expect_unauthorized(refresh_response(app, &second.refresh).await).await;

    // The replay is in the audit trail; another session (another family) is unaffected.
    assert!(actions(&audit_of(app, "users", &user_id).await).contains(&"refresh_reuse"));
    let continued = refresh(app, &other_session.refresh).await;
    refresh(app, &continued.refresh).await;

    // Unknown refresh tokens are refused.
    expect_unauthorized(refresh_response(app, "not-a-refresh-token").await).await;
}

async fn logout_ends_the_session(app: &TestApp) {
    let address = email("leaver");
    let user = create_user(app, &address, "agent", PASSWORD).await;
    let tokens = login(app, &address, PASSWORD).await;

    let response = logout(app, &tokens.refresh).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    expect_unauthorized(refresh_response(app, &tokens.refresh).await).await;
    assert!(actions(&audit_of(app, "users", id(&user)).await).contains(&"logout"));

    // The access token of the ended session dies with it, though it has not expired.
    expect_unauthorized(get_as(app, &tokens.access, "/api/v1/me").await).await;
    // Another session of the same user is untouched.
    let other = login(app, &address, PASSWORD).await;
    let me = expect_json(get_as(app, &other.access, "/api/v1/me").await, StatusCode::OK).await;
    assert_eq!(me["user"]["id"], user["id"]);

    // Signing out with a rotated token ends the whole session, including its latest token.
    let again = login(app, &address, PASSWORD).await;
    let rotated = refresh(app, &again.refresh).await;
    assert_eq!(logout(app, &again.refresh).await.status(), StatusCode::NO_CONTENT);
    expect_unauthorized(refresh_response(app, &rotated.refresh).await).await;

    // Signing out with a token that is unknown (or already signed out) is a quiet 204: it
    // reveals nothing.
    assert_eq!(logout(app, "never-issued").await.status(), StatusCode::NO_CONTENT);
    assert_eq!(logout(app, &tokens.refresh).await.status(), StatusCode::NO_CONTENT);
}

// ---------------------------------------------------------------------------------------------
// 4. Admin decisions take effect at once.

async fn disabling_demoting_and_deleting_take_effect_at_once(app: &TestApp) {
    let address = email("manager");
    let user = create_user(app, &address, "manager", PASSWORD).await;
    let user_path = format!("/api/v1/users/{}", id(&user));
    let tokens = login(app, &address, PASSWORD).await;
    let customer = expect_json(
        app.client.post(app.url("/api/v1/customers")).json(&json!({"name": "Ιερός Ναός Αγίας Σοφίας"})).send().await.expect("request"),
        StatusCode::CREATED,
    )
    .await;
    let customer_path = format!("/api/v1/customers/{}", id(&customer));

    // As a manager: users and every customer are visible.
    expect_json(get_as(app, &tokens.access, "/api/v1/users").await, StatusCode::OK).await;
    expect_json(get_as(app, &tokens.access, &customer_path).await, StatusCode::OK).await;

    // Demoted to agent: the same token loses manager-only access on the next request.
    let demoted = expect_json(admin_patch(app, &user_path, &json!({"role": "agent"})).await, StatusCode::OK).await;
    assert_eq!(demoted["role"], "agent");
    expect_forbidden(get_as(app, &tokens.access, "/api/v1/users").await).await;
    expect_forbidden(get_as(app, &tokens.access, &customer_path).await).await;
    let me = expect_json(get_as(app, &tokens.access, "/api/v1/me").await, StatusCode::OK).await;
    assert_eq!(me["user"]["role"], "agent");
    assert!(!me["permissions"].as_array().unwrap().iter().any(|p| p["area"] == "users"), "{me:#}");

    // Disabled: the access token stops working at once, the session is over, and signing in
    // fails with the same message as a wrong password.
    let disabled = expect_json(admin_patch(app, &user_path, &json!({"active": false})).await, StatusCode::OK).await;
    assert_eq!(disabled["active"], false);
    let problem = expect_unauthorized(get_as(app, &tokens.access, "/api/v1/me").await).await;
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("disabled")), "{problem:#}");
    expect_unauthorized(refresh_response(app, &tokens.refresh).await).await;
    let refused = expect_unauthorized(login_response(app, &address, PASSWORD).await).await;
    let wrong = expect_unauthorized(login_response(app, &address, "another wrong password").await).await;
    assert_eq!(refused["detail"], wrong["detail"], "{refused:#}");

    // Enabled again: the old session stays ended, its unexpired access token included; signing
    // in works.
    expect_json(admin_patch(app, &user_path, &json!({"active": true})).await, StatusCode::OK).await;
    expect_unauthorized(refresh_response(app, &tokens.refresh).await).await;
    expect_unauthorized(get_as(app, &tokens.access, "/api/v1/me").await).await;
    let fresh = login(app, &address, PASSWORD).await;
    expect_json(get_as(app, &fresh.access, "/api/v1/me").await, StatusCode::OK).await;

    // Deleted: locked out at once, session ended.
    let response = app.client.delete(app.url(&user_path)).send().await.expect("request");
    expect_json(response, StatusCode::OK).await;
    expect_unauthorized(get_as(app, &fresh.access, "/api/v1/me").await).await;
    expect_unauthorized(refresh_response(app, &fresh.refresh).await).await;
    expect_unauthorized(login_response(app, &address, PASSWORD).await).await;
}

// ---------------------------------------------------------------------------------------------
// 5. Throttling.

async fn expect_throttled(response: Response) -> u64 {
    let retry_after = response.headers().get(RETRY_AFTER).map(|v| v.to_str().unwrap_or("").to_owned());
    let problem = expect_problem(response, StatusCode::TOO_MANY_REQUESTS).await;
    let retry_after = retry_after.unwrap_or_else(|| panic!("429 without Retry-After: {problem:#}"));
    let seconds: u64 = retry_after.parse().unwrap_or_else(|_| panic!("Retry-After is not delay-seconds: {retry_after}"));
    assert!((1..=15 * 60).contains(&seconds), "Retry-After {seconds}");
    seconds
}

async fn failed_logins_are_throttled_per_account_and_per_address(app: &TestApp) {
    let (target, bystander) = (email("target"), email("bystander"));
    create_user(app, &target, "agent", PASSWORD).await;
    create_user(app, &bystander, "agent", PASSWORD).await;

    // Five failures for one account (address failures: 5)...
    for attempt in 1..=5 {
        let response = login_response(app, &target, &format!("wrong password {attempt}")).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "attempt {attempt}");
    }
    // ...and the sixth attempt is refused even with the right password, however the e-mail is
    // written.
    expect_throttled(login_response(app, &target, PASSWORD).await).await;
    expect_throttled(login_response(app, &format!(" {} ", target.to_uppercase()), PASSWORD).await).await;

    // Another account from the same address is unaffected...
    login(app, &bystander, PASSWORD).await;
    // ...until the address itself has failed 20 times, whichever accounts it tried.
    for n in 6..=19 {
        let response = login_response(app, &email(&format!("guess{n}")), "some password").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "failure {n} from this address");
    }
    login(app, &bystander, PASSWORD).await;
    let response = login_response(app, &bystander, "one wrong password").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "failure 20 from this address");
    expect_throttled(login_response(app, &bystander, PASSWORD).await).await;
    expect_throttled(login_response(app, &email("fresh"), PASSWORD).await).await;

    // Throttling is about signing in: a session already open carries on.
    let me = app.client.get(app.url("/api/v1/me")).send().await.expect("request");
    expect_json(me, StatusCode::OK).await;
}

/// Guesses sent all at once must not get past the per-account limit: an attempt counts before
/// its password is checked, not after, or a burst of parallel guesses would all pass the check
/// while none had failed yet.
async fn concurrent_guesses_cannot_outrun_the_limit(app: &TestApp) {
    let address = email("besieged");
    create_user(app, &address, "agent", PASSWORD).await;
    let passwords: Vec<String> = (0..30).map(|n| format!("guess number {n}")).collect();
    let guesses = passwords.iter().map(|password| login_response(app, &address, password));
    let statuses: Vec<StatusCode> = futures::future::join_all(guesses).await.iter().map(Response::status).collect();
    let checked = statuses.iter().filter(|s| **s == StatusCode::UNAUTHORIZED).count();
    let throttled = statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
    assert_eq!(checked + throttled, statuses.len(), "{statuses:?}");
    assert!(checked <= 5, "{checked} of 30 parallel guesses had their password checked; the limit is 5: {statuses:?}");
    expect_throttled(login_response(app, &address, PASSWORD).await).await;
}

/// Once the window has passed since the failures, the account may sign in again.
async fn lockout_ends_with_its_window(app: &TestApp) {
    let address = email("patient");
    create_user(app, &address, "agent", PASSWORD).await;
    for _ in 0..5 {
        assert_eq!(login_response(app, &address, "wrong password").await.status(), StatusCode::UNAUTHORIZED);
    }
    expect_throttled(login_response(app, &address, PASSWORD).await).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    login(app, &address, PASSWORD).await;
}

// ---------------------------------------------------------------------------------------------
// 6. Password reset.

async fn set_password(app: &TestApp, user_id: &str, password: &Value) -> Response {
    app.client
        .post(app.url(&format!("/api/v1/users/{user_id}/password")))
        .json(&json!({"password": password}))
        .send()
        .await
        .expect("request")
}

async fn password_reset_ends_sessions(app: &TestApp) {
    let address = email("forgetful");
    let user = create_user(app, &address, "agent", PASSWORD).await;
    let user_id = id(&user).to_owned();
    let laptop = login(app, &address, PASSWORD).await;
    let phone = login(app, &address, PASSWORD).await;

    // Weak passwords are refused, naming the field, and change nothing.
    for weak in [json!("short"), json!("aaaaaaaaaaaaaaaaaaaa"), json!(""), json!(42)] {
        let problem = expect_problem(set_password(app, &user_id, &weak).await, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(pointers(&problem), ["/password"], "{weak}: {problem:#}");
    }
    let laptop = refresh(app, &laptop.refresh).await;
    expect_json(get_as(app, &phone.access, "/api/v1/me").await, StatusCode::OK).await;

    // A new password ends every session of the user, access tokens included; only the new
    // password signs in.
    let new_password = "a new and much longer passphrase";
    let response = set_password(app, &user_id, &json!(new_password)).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    expect_unauthorized(refresh_response(app, &laptop.refresh).await).await;
    expect_unauthorized(refresh_response(app, &phone.refresh).await).await;
    expect_unauthorized(get_as(app, &laptop.access, "/api/v1/me").await).await;
    expect_unauthorized(get_as(app, &phone.access, "/api/v1/me").await).await;
    expect_unauthorized(login_response(app, &address, PASSWORD).await).await;
    let tokens = login(app, &address, new_password).await;
    expect_json(get_as(app, &tokens.access, "/api/v1/me").await, StatusCode::OK).await;

    // Audited as a password reset by the admin key, without the password in it.
    let key_id = admin_key_id(app).await;
    let entries = audit_of(app, "users", &user_id).await;
    let reset = entries.iter().find(|e| e["action"] == "password_reset" && e["actor_kind"] == "api_key").expect("password_reset entry");
    assert_eq!(reset["actor_id"], json!(key_id));
    assert_eq!(reset["changes"], json!([]));
    assert!(!serde_json::to_string(&entries).unwrap().contains(new_password));

    // Unknown users are 404.
    expect_problem(set_password(app, &uuid::Uuid::now_v7().to_string(), &json!(new_password)).await, StatusCode::NOT_FOUND).await;
}

// ---------------------------------------------------------------------------------------------
// 7. The audit trail.

async fn create_customer(app: &TestApp) -> Value {
    let body = json!({
        "name": "Στέλιος Μπιμπης",
        "organization": "Ιερός Ναός Αγίου Νικολάου",
        "contacts": [{"type": "phone", "value": "694 123 4567"}],
        "notes": [{"text": "Θέλει δύο καμπάνες"}],
        "tags": ["bells"]
    });
    expect_json(app.client.post(app.url("/api/v1/customers")).json(&body).send().await.expect("request"), StatusCode::CREATED).await
}

async fn updates_are_audited_with_a_field_diff(app: &TestApp) {
    let key_id = admin_key_id(app).await;
    let customer = create_customer(app).await;
    let customer_id = id(&customer).to_owned();
    let request_id = format!("audit-test-{}", uuid::Uuid::now_v7());

    let response = app
        .client
        .patch(app.url(&format!("/api/v1/customers/{customer_id}")))
        .header(CONTENT_TYPE, MERGE_PATCH)
        .header("x-request-id", &request_id)
        .json(&json!({"organization": "Μητρόπολη Θεσσαλονίκης", "tags": ["bells", "vip"]}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.headers().get("x-request-id").and_then(|v| v.to_str().ok()), Some(request_id.as_str()));
    expect_json(response, StatusCode::OK).await;

    let entries = audit_of(app, "customers", &customer_id).await;
    assert_eq!(actions(&entries), ["update", "create"], "{entries:#?}");
    let update = &entries[0];
    assert_eq!(update["action"], "update");
    assert_eq!(update["resource"], "customers");
    assert_eq!(update["resource_id"], json!(customer_id));
    assert_eq!(update["actor_kind"], "api_key");
    assert_eq!(update["actor_id"], json!(key_id));
    assert_eq!(update["request_id"], json!(request_id));
    assert!(update["at"].as_str().is_some_and(|at| chrono::DateTime::parse_from_rfc3339(at).is_ok()), "{update:#}");
    assert_eq!(
        update["changes"],
        json!([
            {"pointer": "/organization", "before": "Ιερός Ναός Αγίου Νικολάου", "after": "Μητρόπολη Θεσσαλονίκης"},
            {"pointer": "/tags", "before": ["bells"], "after": ["bells", "vip"]}
        ]),
        "{update:#}"
    );

    // The create holds the new record's fields; filtering by actor finds both.
    let create = &entries[1];
    assert_eq!((&create["actor_kind"], &create["actor_id"]), (&json!("api_key"), &json!(key_id)));
    assert!(create["changes"].as_array().unwrap().iter().any(|c| c["pointer"] == "/name" && c["after"] == "Στέλιος Μπιμπης"), "{create:#}");
    let by_actor = audit(app, &[("actor", &key_id), ("resource", "customers")]).await;
    assert_eq!(actions(&by_actor), ["update", "create"]);
}

async fn failed_changes_leave_no_audit_record(app: &TestApp) {
    let customer = create_customer(app).await;
    let customer_id = id(&customer).to_owned();
    let path = format!("/api/v1/customers/{customer_id}");
    let before = audit_of(app, "customers", &customer_id).await.len();
    assert_eq!(before, 1);

    // Invalid: 422.
    let response = admin_patch(app, &path, &json!({"name": "  "})).await;
    assert_eq!(pointers(&expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await), ["/name"]);
    let response = app.client.put(app.url(&path)).json(&json!({"organization": "no name"})).send().await.expect("request");
    expect_problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(audit_of(app, "customers", &customer_id).await.len(), before, "a refused update wrote an audit record");

    // A real change, then stale If-Match on PATCH, PUT and DELETE: 412 each.
    expect_json(admin_patch(app, &path, &json!({"tags": ["bells", "parish"]})).await, StatusCode::OK).await;
    let after_update = audit_of(app, "customers", &customer_id).await.len();
    assert_eq!(after_update, before + 1);
    let response = app
        .client
        .patch(app.url(&path))
        .header(CONTENT_TYPE, MERGE_PATCH)
        .header(IF_MATCH, "\"1\"")
        .json(&json!({"tags": []}))
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::PRECONDITION_FAILED).await;
    let response = app.client.put(app.url(&path)).header(IF_MATCH, "\"1\"").json(&json!({"name": "Άλλος"})).send().await.unwrap();
    expect_problem(response, StatusCode::PRECONDITION_FAILED).await;
    let response = app.client.delete(app.url(&path)).header(IF_MATCH, "\"1\"").send().await.unwrap();
    expect_problem(response, StatusCode::PRECONDITION_FAILED).await;
    assert_eq!(audit_of(app, "customers", &customer_id).await.len(), after_update, "a 412 wrote an audit record");

    // A no-op restore of a live record changes nothing and records nothing.
    let response = app.client.post(app.url(&format!("{path}/restore"))).send().await.unwrap();
    expect_json(response, StatusCode::OK).await;
    assert_eq!(audit_of(app, "customers", &customer_id).await.len(), after_update);

    // A user whose e-mail is taken: 409, nothing recorded for users either.
    let address = email("taken");
    create_user(app, &address, "agent", PASSWORD).await;
    let users_before = audit(app, &[("resource", "users")]).await.len();
    let response = app
        .client
        .post(app.url("/api/v1/users"))
        .json(&json!({"email": address, "display_name": "Twin", "role": "agent"}))
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::CONFLICT).await;
    assert_eq!(audit(app, &[("resource", "users")]).await.len(), users_before);
}

async fn audit_count(app: &TestApp, customer_id: &str) -> usize {
    audit_of(app, "customers", customer_id).await.len()
}

async fn life_cycle_and_sign_ins_are_audited(app: &TestApp) {
    let key_id = admin_key_id(app).await;
    let customer = create_customer(app).await;
    let customer_id = id(&customer).to_owned();
    let path = format!("/api/v1/customers/{customer_id}");
    assert_eq!(audit_count(app, &customer_id).await, 1);

    expect_json(admin_patch(app, &path, &json!({"contacted": true})).await, StatusCode::OK).await;
    assert_eq!(audit_count(app, &customer_id).await, 2);
    // Without an x-request-id from the client, the one the server made up is recorded.
    let response = app.client.delete(app.url(&path)).send().await.unwrap();
    let generated_request_id = response.headers().get("x-request-id").expect("x-request-id").to_str().unwrap().to_owned();
    expect_json(response, StatusCode::OK).await;
    assert_eq!(audit_count(app, &customer_id).await, 3);
    expect_json(app.client.post(app.url(&format!("{path}/restore"))).send().await.unwrap(), StatusCode::OK).await;
    assert_eq!(audit_count(app, &customer_id).await, 4);

    let entries = audit_of(app, "customers", &customer_id).await;
    assert_eq!(actions(&entries), ["restore", "delete", "update", "create"]);
    assert!(entries.iter().all(|e| e["actor_kind"] == "api_key" && e["actor_id"] == json!(key_id)), "{entries:#?}");
    let deleted_at = entries[1]["changes"][0]["after"].clone();
    assert!(deleted_at.is_string(), "{:#}", entries[1]);
    assert_eq!(entries[1]["changes"], json!([{"pointer": "/deleted_at", "before": null, "after": deleted_at}]));
    assert_eq!(entries[0]["changes"], json!([{"pointer": "/deleted_at", "before": deleted_at, "after": null}]));
    assert_eq!(entries[2]["changes"], json!([{"pointer": "/contacted", "before": false, "after": true}]));
    assert_eq!(entries[1]["request_id"], json!(generated_request_id));

    // The customer's history is the same trail.
    let history = expect_json(app.client.get(app.url(&format!("{path}/history"))).send().await.unwrap(), StatusCode::OK).await;
    assert_eq!(history["items"], json!(entries));
    let other = create_customer(app).await;
    let other_history =
        expect_json(app.client.get(app.url(&format!("/api/v1/customers/{}/history", id(&other)))).send().await.unwrap(), StatusCode::OK)
            .await;
    assert_eq!(actions(other_history["items"].as_array().unwrap()), ["create"]);

    // Signing in, failing to, and signing out are recorded against the user.
    let address = email("signer");
    let user = create_user(app, &address, "agent", PASSWORD).await;
    let user_id = id(&user).to_owned();
    expect_unauthorized(login_response(app, &address, "not my password").await).await;
    let tokens = login(app, &address, PASSWORD).await;
    assert_eq!(logout(app, &tokens.refresh).await.status(), StatusCode::NO_CONTENT);
    let entries = audit_of(app, "users", &user_id).await;
    assert_eq!(actions(&entries)[..3], ["logout", "login", "login_failed"], "{entries:#?}");
    let mut rest = actions(&entries)[3..].to_vec();
    rest.sort_unstable();
    assert_eq!(rest, ["create", "password_reset"], "{entries:#?}");
    let login_entry = &entries[1];
    assert_eq!((&login_entry["actor_kind"], &login_entry["actor_id"]), (&json!("user"), &json!(user_id)));
    assert!(entries.iter().all(|e| e["resource_id"] == json!(user_id)));

    // A failed sign-in for an unknown e-mail is recorded without a user.
    expect_unauthorized(login_response(app, &email("ghost"), PASSWORD).await).await;
    let recent = audit(app, &[("resource", "users")]).await;
    assert_eq!(recent[0]["action"], "login_failed", "{:#}", recent[0]);
    assert!(recent[0]["resource_id"].is_null(), "{:#}", recent[0]);
}

async fn audit_records_are_immutable(app: &TestApp) {
    let customer = create_customer(app).await;
    let customer_id = id(&customer).to_owned();
    let before = audit_of(app, "customers", &customer_id).await;
    assert_eq!(before.len(), 1);

    let store = &app.db.store;
    let update = store.execute_raw("UPDATE audit_log SET action = 'tampered'").await;
    assert!(update.is_err(), "audit records could be updated");
    assert!(format!("{:?}", update.unwrap_err()).contains("immutable"));
    let targeted = store.execute_raw(&format!("UPDATE audit_log SET changes = '[]' WHERE resource_id = '{customer_id}'")).await;
    assert!(targeted.is_err(), "an audit record could be updated");
    let delete = store.execute_raw("DELETE FROM audit_log").await;
    assert!(delete.is_err(), "audit records could be deleted");

    assert_eq!(audit_of(app, "customers", &customer_id).await, before);
    assert!(audit(app, &[]).await.iter().all(|e| e["action"] != "tampered"));
}
