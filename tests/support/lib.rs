//! Test support shared by the end-to-end suites and benchmarks: a fresh database per test on
//! either backend, a running server bound to a free port, and the HTTP assertions of [`http`].
//!
//! PostgreSQL tests use `CRM_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) to create a uniquely named database per test,
//! dropped afterwards. When no server answers they are skipped with a notice on the terminal,
//! unless `CRM_REQUIRE_POSTGRES=1` (set by `.ci/run`), which turns the skip into a failure.

pub mod asyncapi;
pub mod bus;
pub mod fixtures;
pub mod http;
pub mod processes;

use crm_store::{Store, StoreConfig};
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

/// A media record waiting for a file (an upload or an inbound attachment leaves it so, with
/// [`Media::awaiting`](crm_domain::comms::Media::awaiting) its path and content), for tests
/// that write it with its store command.
pub fn pending_media(customer_id: Option<uuid::Uuid>, filename: &str, mime_type: &str) -> crm_domain::comms::Media {
    crm_domain::comms::Media {
        customer_id,
        order_id: None,
        comms_id: None,
        filename: filename.into(),
        nextcloud_path: None,
        mime_type: mime_type.into(),
        size: None,
        sha256: None,
        direction: crm_domain::comms::MediaDirection::Internal,
        tags: Vec::new(),
        uploaded_by: "user:test".into(),
        status: crm_domain::comms::MediaStatus::Pending,
        status_reason: None,
    }
}

/// The backends a test can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in a temporary directory.
    Sqlite,
    /// A fresh database on the PostgreSQL server.
    Postgres,
}

/// A migrated store on a database of its own, removed when dropped.
#[derive(Debug)]
pub struct TestDb {
    /// The store.
    pub store: Store,
    /// The URL it was opened with.
    pub url: String,
    cleanup: Cleanup,
}

#[derive(Debug)]
enum Cleanup {
    Dir(std::path::PathBuf),
    Database { admin_url: String, name: String },
}

fn postgres_admin_url() -> String {
    std::env::var("CRM_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn postgres_required() -> bool {
    std::env::var("CRM_REQUIRE_POSTGRES").is_ok_and(|v| v == "1")
}

/// Writes straight to the terminal: libtest captures `eprintln!`, not the stderr handle.
pub(crate) fn notice(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

static SKIP_NOTED: AtomicBool = AtomicBool::new(false);

/// Whether the PostgreSQL server answers, asked once per test binary with a short timeout (a
/// pool would keep retrying a refused connection for its whole acquire timeout, every test).
async fn postgres_reachable(admin_url: &str) -> Result<(), String> {
    static PROBE: tokio::sync::OnceCell<Result<(), String>> = tokio::sync::OnceCell::const_new();
    PROBE
        .get_or_init(|| async {
            let config = StoreConfig { acquire_timeout: std::time::Duration::from_secs(3), ..StoreConfig::from_url(admin_url) };
            match Store::connect(&config).await {
                Ok(store) => {
                    let answered = store.ping().await.map_err(|e| format!("{e}: {:?}", std::error::Error::source(&e)));
                    store.close().await;
                    answered
                }
                Err(err) => Err(match std::error::Error::source(&err) {
                    Some(cause) => format!("{err}: {cause}"),
                    None => err.to_string(),
                }),
            }
        })
        .await
        .clone()
}

impl TestDb {
    /// A fresh database on `backend`, or `None` when PostgreSQL is not reachable and not
    /// required (the skip is announced once per test binary).
    pub async fn new(backend: Backend) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(format!("crm-test-{}", uuid::Uuid::now_v7()));
                std::fs::create_dir_all(&dir).expect("temp dir");
                let url = format!("sqlite://{}", dir.join("crm.db").display());
                let store = Store::connect(&StoreConfig::from_url(&url)).await.expect("open sqlite");
                store.migrate().await.expect("migrate sqlite");
                Some(TestDb { store, url, cleanup: Cleanup::Dir(dir) })
            }
            Backend::Postgres => {
                let admin_url = postgres_admin_url();
                if let Err(err) = postgres_reachable(&admin_url).await {
                    if postgres_required() {
                        panic!("CRM_REQUIRE_POSTGRES=1 but PostgreSQL at {} is unreachable: {err}", crm_store::redact_url(&admin_url));
                    }
                    if !SKIP_NOTED.swap(true, Ordering::SeqCst) {
                        notice(&format!(
                            "NOTICE: PostgreSQL backend tests SKIPPED: no server at {} ({err}). Set CRM_REQUIRE_POSTGRES=1 to make this a failure.",
                            crm_store::redact_url(&admin_url)
                        ));
                    }
                    return None;
                }
                let admin = Store::connect(&StoreConfig::from_url(&admin_url)).await.expect("connect to PostgreSQL");
                let name = format!("crm_test_{}", uuid::Uuid::now_v7().simple());
                admin.execute_raw(&format!("CREATE DATABASE {name}")).await.expect("create test database");
                admin.close().await;
                let url = replace_database(&admin_url, &name);
                let store = Store::connect(&StoreConfig::from_url(&url)).await.expect("open postgres");
                store.migrate().await.expect("migrate postgres");
                Some(TestDb { store, url, cleanup: Cleanup::Database { admin_url, name } })
            }
        }
    }
}

/// `url` with its database name replaced by `name`.
pub fn replace_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let base = match base.rfind('/') {
        Some(i) if i > base.find("://").map_or(0, |s| s + 2) => &base[..i],
        _ => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::Dir(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::Database { admin_url, name } => {
                // Drop runs inside the test's runtime: do the async clean-up on a thread of its own.
                let (admin_url, name, store) = (admin_url.clone(), name.clone(), self.store.clone());
                let _ = std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                    runtime.block_on(async move {
                        store.close().await;
                        if let Ok(admin) = Store::connect(&StoreConfig::from_url(&admin_url)).await {
                            let _ = admin.execute_raw(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
                            admin.close().await;
                        }
                    });
                })
                .join();
            }
        }
    }
}

/// Runs an async test body once per backend; a backend that is skipped is announced.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = $crate::TestDb::new($crate::Backend::Sqlite).await.expect("sqlite is always available");
                    super::$name(&db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = $crate::TestDb::new($crate::Backend::Postgres).await else { return };
                    super::$name(&db).await;
                }
            )*
        }
    };
}

/// A server on a free loopback port over a fresh database, stopped when dropped.
#[derive(Debug)]
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub address: String,
    /// A client that sends an admin API key with every request.
    pub client: reqwest::Client,
    /// A client that sends no credentials.
    pub anonymous: reqwest::Client,
    /// The admin API key `client` uses.
    pub admin_key: String,
    /// The database behind it.
    pub db: TestDb,
    /// The in-process bus the API was given (subscribe to it to see what the API publishes).
    pub bus: crm_bus::Bus,
    /// What the API notifies after writing outbox messages (nothing relays them in tests:
    /// read the outbox with `Store::claim_outbox`).
    pub relay_wakeup: std::sync::Arc<tokio::sync::Notify>,
    server: tokio::task::JoinHandle<()>,
    /// The plugin registry's directory, when the app has one ([`TestApp::spawn_with_plugins`]).
    plugins_dir: Option<tempfile::TempDir>,
}

/// A plugin registry with the default plugins in a fresh directory (removed when the guard is
/// dropped); the compiled-artifact cache is shared by every test (it is keyed by hash).
pub fn plugin_registry() -> (std::sync::Arc<crm_plugins::Registry>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = std::env::temp_dir().join("crm-test-plugin-artifacts");
    let host = crm_plugins::HostConfig { cache_dir: Some(cache), ..crm_plugins::HostConfig::default() };
    let config = crm_plugins::RegistryConfig { dir: dir.path().to_owned(), host, install_defaults: true };
    (std::sync::Arc::new(crm_plugins::Registry::open(config).expect("plugin registry")), dir)
}

/// Cheap Argon2 settings for tests (the production defaults cost ~20 MiB and tens of ms).
pub fn test_api_config() -> crm_api::ApiConfig {
    crm_api::ApiConfig {
        auth: crm_api::AuthConfig { argon2_memory_kib: 64, argon2_iterations: 1, ..crm_api::AuthConfig::default() },
        ..crm_api::ApiConfig::default()
    }
}

/// A reqwest client that sends `Authorization: Bearer <token>` with every request.
pub fn client_with_token(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).expect("header");
    value.set_sensitive(true);
    headers.insert(reqwest::header::AUTHORIZATION, value);
    reqwest::Client::builder().default_headers(headers).build().expect("client")
}

impl TestApp {
    /// Starts the API over `db` with the test configuration.
    pub async fn spawn(db: TestDb) -> TestApp {
        Self::spawn_with(db, test_api_config()).await
    }

    /// Starts the API over `db` with `config`, and makes an admin API key for `client`.
    pub async fn spawn_with(db: TestDb, config: crm_api::ApiConfig) -> TestApp {
        Self::spawn_customized(db, config, |state| state).await
    }

    /// Like [`TestApp::spawn_with`], with the application state passed through `customize`
    /// first (e.g. to give it a plugin registry).
    pub async fn spawn_customized(
        db: TestDb,
        config: crm_api::ApiConfig,
        customize: impl FnOnce(crm_api::AppState) -> crm_api::AppState,
    ) -> TestApp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = format!("http://{}", listener.local_addr().expect("addr"));
        let bus = crm_bus::Bus::in_process(crm_bus::BusConfig::default());
        let relay_wakeup = std::sync::Arc::new(tokio::sync::Notify::new());
        let state = crm_api::AppState::new(db.store.clone(), config)
            .await
            .expect("app state")
            .with_bus(bus.clone())
            .with_relay_wakeup(relay_wakeup.clone());
        let state = customize(state);
        let app = crm_api::router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        let admin_key = format!("{}test-admin-{}", crm_api::API_KEY_PREFIX, uuid::Uuid::now_v7().simple());
        let scopes = crm_domain::access::Area::ALL
            .iter()
            .flat_map(|area| crm_domain::access::Action::ALL.iter().map(move |action| format!("{}:{}", area.as_str(), action.as_str())))
            .collect();
        let key = crm_domain::user::ApiKey {
            name: "test admin".into(),
            prefix: admin_key[..10].to_owned(),
            scopes,
            created_by: None,
            last_used_at: None,
        };
        db.store.create_api_key(key, sha256_hex(&admin_key)).await.expect("admin key");
        TestApp {
            address,
            client: client_with_token(&admin_key),
            anonymous: reqwest::Client::new(),
            admin_key,
            db,
            bus,
            relay_wakeup,
            server,
            plugins_dir: None,
        }
    }

    /// Starts the API over `db` with the test configuration and a plugin registry holding the
    /// default plugins, so orders are priced by the default pricing plugin.
    pub async fn spawn_with_plugins(db: TestDb) -> TestApp {
        let (registry, dir) = tokio::task::spawn_blocking(plugin_registry).await.expect("plugin registry");
        let mut app = Self::spawn_customized(db, test_api_config(), move |state| state.with_plugins(registry)).await;
        app.plugins_dir = Some(dir);
        app
    }

    /// `address` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// Creates a console user with `role` (as the admin key) and signs them in; returns the
    /// user's id and a client that sends their access token.
    pub async fn user(&self, role: crm_domain::access::Role) -> (String, reqwest::Client) {
        let email = format!("{}-{}@example.gr", role.as_str(), uuid::Uuid::now_v7().simple());
        let password = "correct horse battery staple";
        let body = serde_json::json!({"email": email, "display_name": format!("Test {}", role.as_str()), "role": role.as_str(), "password": password});
        let response = self.client.post(self.url("/api/v1/users")).json(&body).send().await.expect("request");
        let user = http::expect_json(response, reqwest::StatusCode::CREATED).await;
        let login = serde_json::json!({"email": email, "password": password});
        let response = self.anonymous.post(self.url("/api/v1/auth/login")).json(&login).send().await.expect("request");
        let tokens = http::expect_json(response, reqwest::StatusCode::OK).await;
        let token = tokens["access_token"].as_str().unwrap_or_else(|| panic!("no access token: {tokens:#}"));
        (http::id(&user).to_owned(), client_with_token(token))
    }
}

/// SHA-256 of `text`, hex: how the server stores API keys and refresh tokens.
pub fn sha256_hex(text: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Runs an async API test body once per backend against a running server.
#[macro_export]
macro_rules! api_on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = $crate::TestDb::new($crate::Backend::Sqlite).await.expect("sqlite is always available");
                    super::$name(&$crate::TestApp::spawn(db).await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = $crate::TestDb::new($crate::Backend::Postgres).await else { return };
                    super::$name(&$crate::TestApp::spawn(db).await).await;
                }
            )*
        }
    };
}

/// Like [`api_on_both_backends!`], with the server started with the configuration a function
/// gives: `name => config_fn`.
#[macro_export]
macro_rules! configured_api_on_both_backends {
    ($($name:ident => $config:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = $crate::TestDb::new($crate::Backend::Sqlite).await.expect("sqlite is always available");
                    super::$name(&$crate::TestApp::spawn_with(db, super::$config()).await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = $crate::TestDb::new($crate::Backend::Postgres).await else { return };
                    super::$name(&$crate::TestApp::spawn_with(db, super::$config()).await).await;
                }
            )*
        }
    };
}
