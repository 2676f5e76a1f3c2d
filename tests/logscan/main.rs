//! No secret ever reaches the logs. A JSON subscriber like the server's, at TRACE (so debug and
//! trace output, sqlx's statement logging and `log` records from dependencies are all included),
//! captures everything this process logs while a full flow runs against a real server: users
//! with passwords, right and wrong sign-ins, refresh, logout, an API key made and used, password
//! resets from the API and from the `crm user` commands, the first-admin bootstrap, and the
//! server's settings (with a database password) printed and failing to connect. Then none of the
//! passwords, tokens, keys or the signing key may appear anywhere in the captured text.
//!
//! This suite is its own test binary because it installs the global subscriber.

use crm_server::config::Settings;
use crm_server::users::UserCommand;
use crm_tests::{Backend, TestApp, TestDb, client_with_token, test_api_config};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use tracing_subscriber::fmt::MakeWriter;

/// An in-memory log sink shared by every thread of the process.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

impl Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = CaptureWriter;

    fn make_writer(&'a self) -> CaptureWriter {
        CaptureWriter(self.0.clone())
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

/// Installs the capturing subscriber once for the whole binary.
fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture = Capture::default();
        // Like `crm_server::telemetry::init` with JSON output, but at TRACE, every span's fields
        // included, and into memory. `try_init` also routes `log` records into it.
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(capture.clone())
            .try_init()
            .expect("this binary installs the only global subscriber");
        capture
    })
}

/// A secret and what it is, for the failure message.
struct Secret {
    what: String,
    value: String,
}

#[derive(Default)]
struct Secrets(Vec<Secret>);

impl Secrets {
    fn add(&mut self, what: impl Into<String>, value: impl Into<String>) {
        let value = value.into();
        assert!(value.len() >= 8, "too short to scan for reliably: {value:?}");
        self.0.push(Secret { what: what.into(), value });
    }

    /// Asserts that no secret occurs in `log`, naming the lines that hold one.
    fn assert_absent_from(&self, log: &str) {
        let mut leaks = Vec::new();
        for secret in &self.0 {
            for line in log.lines().filter(|line| line.contains(&secret.value)) {
                leaks.push(format!("{} `{}` in: {line}", secret.what, secret.value));
            }
        }
        assert!(leaks.is_empty(), "secrets in the logs:\n{}", leaks.join("\n"));
    }
}

/// A random string that cannot be mistaken for anything else in the logs (ids are hex UUIDs).
fn random(prefix: &str) -> String {
    use base64::Engine as _;
    let bytes = uuid::Uuid::new_v4().into_bytes();
    format!("{prefix}-{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes).replace(['-', '_'], "Q"))
}

/// The settings the server would have for `database_url`, with the first-admin credentials and
/// cheap Argon2. Built through serde, as the configuration loader does.
fn settings(database_url: &str, admin: Option<(&str, &str)>) -> Settings {
    let mut value = serde_json::to_value(Settings::default()).expect("settings serialise");
    value["database_url"] = json!(database_url);
    value["database_acquire_timeout_seconds"] = json!(1);
    value["auth_argon2_memory_kib"] = json!(64);
    value["auth_argon2_iterations"] = json!(1);
    value["admin_email"] = json!(admin.map(|a| a.0));
    value["admin_password"] = json!(admin.map(|a| a.1));
    serde_json::from_value(value).expect("settings deserialise")
}

async fn expect_json(response: reqwest::Response, status: StatusCode) -> Value {
    let got = response.status();
    let text = response.text().await.expect("body");
    assert_eq!(got, status, "{text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

async fn login(app: &TestApp, email: &str, password: &str) -> reqwest::Response {
    app.anonymous.post(app.url("/api/v1/auth/login")).json(&json!({"email": email, "password": password})).send().await.expect("request")
}

/// Signs in, expecting success; records both tokens as secrets.
async fn sign_in(app: &TestApp, email: &str, password: &str, secrets: &mut Secrets) -> (String, String) {
    let tokens = expect_json(login(app, email, password).await, StatusCode::OK).await;
    remember_tokens(&tokens, secrets)
}

fn remember_tokens(tokens: &Value, secrets: &mut Secrets) -> (String, String) {
    let access = tokens["access_token"].as_str().expect("access token").to_owned();
    let refresh = tokens["refresh_token"].as_str().expect("refresh token").to_owned();
    secrets.add("access token", access.clone());
    // The signature alone is enough to forge nothing, but it is what makes the token: keep it out.
    secrets.add("access token signature", access.rsplit('.').next().unwrap().to_owned());
    secrets.add("refresh token", refresh.clone());
    (access, refresh)
}

/// Runs everything that handles a secret against a server over `db`; returns the secrets and
/// the request id of one request, whose "request finished" line must be in the log.
async fn full_flow(db: TestDb) -> (Secrets, String) {
    let mut secrets = Secrets::default();
    if let Some(password) = database_password(&db.url) {
        secrets.add("database password", password);
    }
    let store = db.store.clone();
    let app = TestApp::spawn_with(db, test_api_config()).await;
    secrets.add("admin API key", app.admin_key.clone());
    let signing_key = store.server_secret("access_token_hs256", || "unused: the server made its key".into()).await.expect("signing key");
    secrets.add("token signing key", signing_key);

    // The first admin, from the settings, as `crm serve` creates it.
    let (admin_email, admin_password) = (format!("owner-{}@example.gr", uuid::Uuid::now_v7().simple()), random("first-admin"));
    secrets.add("first admin password", admin_password.clone());
    let server_settings = settings(&app.db.url, Some((&admin_email, &admin_password)));
    let state = crm_api::AppState::new(store.clone(), server_settings.api().expect("api config")).await.expect("state");
    tracing::debug!(state = ?state, settings = ?server_settings, "server state");
    crm_server::ensure_first_admin(&store, &server_settings, &state).await.expect("first admin");
    let (admin_token, _) = sign_in(&app, &admin_email, &admin_password, &mut secrets).await;
    let admin = client_with_token(&admin_token);

    // Users with passwords, created by the admin user.
    let (agent_email, agent_password) = (format!("agent-{}@example.gr", uuid::Uuid::now_v7().simple()), random("agent-password"));
    secrets.add("agent password", agent_password.clone());
    let body = json!({"email": agent_email, "display_name": "Agent", "role": "agent", "password": agent_password});
    let agent = expect_json(admin.post(app.url("/api/v1/users")).json(&body).send().await.unwrap(), StatusCode::CREATED).await;
    let agent_id = agent["id"].as_str().unwrap().to_owned();
    let weak = random("weak")[..11].to_owned();
    secrets.add("refused weak password", weak.clone());
    let body = json!({"email": format!("weak-{}@example.gr", uuid::Uuid::now_v7().simple()), "display_name": "W", "role": "agent", "password": weak});
    assert_eq!(admin.post(app.url("/api/v1/users")).json(&body).send().await.unwrap().status(), StatusCode::UNPROCESSABLE_ENTITY);

    // Right and wrong passwords, known and unknown accounts.
    for wrong in [random("wrong-password"), random("another-wrong-one")] {
        secrets.add("wrong password", wrong.clone());
        assert_eq!(login(&app, &agent_email, &wrong).await.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(login(&app, "nobody@example.gr", &wrong).await.status(), StatusCode::UNAUTHORIZED);
    }
    let (access, refresh) = sign_in(&app, &agent_email, &agent_password, &mut secrets).await;
    let request_id = format!("logscan-{}", uuid::Uuid::now_v7());
    let me = client_with_token(&access).get(app.url("/api/v1/me")).header("x-request-id", &request_id).send().await.unwrap();
    expect_json(me, StatusCode::OK).await;

    // Refresh, use, replay (which revokes the family), log out another session.
    let response = app.anonymous.post(app.url("/api/v1/auth/refresh")).json(&json!({"refresh_token": refresh})).send().await.unwrap();
    let (access, _) = remember_tokens(&expect_json(response, StatusCode::OK).await, &mut secrets);
    let customer = json!({"name": "Ιερός Ναός Αγίου Δημητρίου", "tags": ["bells"]});
    expect_json(client_with_token(&access).post(app.url("/api/v1/customers")).json(&customer).send().await.unwrap(), StatusCode::CREATED)
        .await;
    let response = app.anonymous.post(app.url("/api/v1/auth/refresh")).json(&json!({"refresh_token": refresh})).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let (_, other_refresh) = sign_in(&app, &agent_email, &agent_password, &mut secrets).await;
    let response = app.anonymous.post(app.url("/api/v1/auth/logout")).json(&json!({"refresh_token": other_refresh})).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    // A forged token and a bad key are refused (and their refusal logged without them).
    let forged = format!("{}x", access);
    assert_eq!(client_with_token(&forged).get(app.url("/api/v1/me")).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let wrong_key = format!("{}{}", crm_api::API_KEY_PREFIX, random("notakey"));
    secrets.add("unknown API key", wrong_key.clone());
    assert_eq!(client_with_token(&wrong_key).get(app.url("/api/v1/me")).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);

    // An API key, made and used.
    let body = json!({"name": "logscan connector", "scopes": ["customers:view", "customers:edit"]});
    let created = expect_json(admin.post(app.url("/api/v1/api-keys")).json(&body).send().await.unwrap(), StatusCode::CREATED).await;
    let key = created["key"].as_str().expect("key shown once").to_owned();
    secrets.add("new API key", key.clone());
    let connector = client_with_token(&key);
    expect_json(connector.post(app.url("/api/v1/customers")).json(&customer).send().await.unwrap(), StatusCode::CREATED).await;
    expect_json(connector.get(app.url("/api/v1/customers")).send().await.unwrap(), StatusCode::OK).await;
    assert_eq!(connector.get(app.url("/api/v1/users")).send().await.unwrap().status(), StatusCode::FORBIDDEN);

    // A password reset by the admin; the new password signs in.
    let new_password = random("reset-password");
    secrets.add("reset password", new_password.clone());
    let path = format!("/api/v1/users/{agent_id}/password");
    assert_eq!(admin.post(app.url(&path)).json(&json!({"password": new_password})).send().await.unwrap().status(), StatusCode::NO_CONTENT);
    sign_in(&app, &agent_email, &new_password, &mut secrets).await;

    // The `crm user` commands: generated passwords are printed once, to their output only.
    let auth = crm_api::Auth::new(&store, server_settings.api().unwrap().auth).await.expect("auth");
    let cli_email = format!("cli-{}@example.gr", uuid::Uuid::now_v7().simple());
    let command = UserCommand::Create {
        email: cli_email.clone(),
        name: "From the CLI".into(),
        role: crm_domain::access::Role::Manager,
        password_stdin: false,
    };
    let generated = run_user_command(command, &store, &auth).await;
    secrets.add("generated password", generated.clone());
    sign_in(&app, &cli_email, &generated, &mut secrets).await;
    let regenerated = run_user_command(UserCommand::ResetPassword { email: cli_email.clone(), password_stdin: false }, &store, &auth).await;
    secrets.add("regenerated password", regenerated.clone());
    sign_in(&app, &cli_email, &regenerated, &mut secrets).await;

    (secrets, request_id)
}

/// Runs a `crm user` command in-process and returns the password it printed.
async fn run_user_command(command: UserCommand, store: &crm_store::Store, auth: &crm_api::Auth) -> String {
    let mut out = Vec::new();
    crm_server::users::run(command, store, auth, &mut out).await.expect("user command");
    let out = String::from_utf8(out).unwrap();
    let line =
        out.lines().find_map(|l| l.strip_prefix("generated password (shown once): ")).unwrap_or_else(|| panic!("no password in {out}"));
    line.trim().to_owned()
}

/// The password in a database URL, if any.
fn database_password(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let userinfo = rest.rsplit_once('@')?.0;
    userinfo.split_once(':').map(|(_, password)| password.to_owned()).filter(|p| !p.is_empty())
}

/// What every scan checks besides the secrets: the capture works, and holds this flow.
fn check_capture(log: &str, request_id: &str) {
    assert!(!log.is_empty(), "nothing was captured");
    for line in log.lines() {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
    }
    assert!(
        log.lines().any(|l| l.contains("request finished") && l.contains(request_id)),
        "no `request finished` line for request {request_id}"
    );
    assert!(log.contains("/api/v1/auth/login"), "no sign-in request was logged");
    assert!(log.contains("db.statement"), "sqlx statement logging (TRACE) was not captured");
}

/// With `CRM_LOGSCAN_DUMP=path`, writes the captured log there for inspection.
fn dump(log: &str) {
    if let Some(path) = std::env::var_os("CRM_LOGSCAN_DUMP") {
        std::fs::write(path, log).expect("write the log dump");
    }
}

async fn scan_flow_on(backend: Backend) {
    let capture = capture();
    let Some(db) = TestDb::new(backend).await else { return };
    let (secrets, request_id) = full_flow(db).await;
    let log = capture.text();
    dump(&log);
    check_capture(&log, &request_id);
    secrets.assert_absent_from(&log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secrets_in_the_logs_on_sqlite() {
    scan_flow_on(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secrets_in_the_logs_on_postgres() {
    scan_flow_on(Backend::Postgres).await;
}

/// The settings print their database password redacted, and a database that cannot be reached
/// is reported without it, the way `crm` logs a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_and_connection_failures_hide_the_database_password() {
    let capture = capture();
    let mut secrets = Secrets::default();
    let db_password = random("db-password");
    let admin_password = random("admin-password");
    secrets.add("database password", db_password.clone());
    secrets.add("first admin password", admin_password.clone());
    // Port 1 on loopback: nothing listens there.
    let url = format!("postgres://crm:{db_password}@127.0.0.1:1/crm");
    let settings = settings(&url, Some(("owner@example.gr", &admin_password)));
    assert_eq!(settings.store().url, url, "the store still gets the real URL");

    let debug = format!("{settings:?}");
    let printed = settings.to_redacted_toml();
    tracing::info!(settings = ?settings, "effective settings");
    tracing::info!(config = %printed, "effective configuration");
    tracing::trace!(store = ?settings.store(), "store configuration");
    let err = crm_server::open_store(&settings).await.expect_err("nothing listens on port 1");
    tracing::error!(error = format!("{err:#}"), "crm failed");

    // The scan itself works: a secret logged at TRACE is caught.
    let canary = random("canary");
    tracing::trace!(target: "sqlx::query", statement = %canary, "a leak, on purpose");
    let log = capture.text();
    let mut planted = Secrets::default();
    planted.add("planted canary", canary);
    assert!(std::panic::catch_unwind(|| planted.assert_absent_from(&log)).is_err(), "the scan missed a secret logged at TRACE");
    assert!(debug.contains("crm:***@127.0.0.1:1/crm"), "{debug}");
    secrets.assert_absent_from(&format!("{debug}\n{printed}\n{err:#}\n{err:?}"));
    secrets.assert_absent_from(&log);
}
