//! Settings: defaults, then a TOML file, then `CRM_*` environment variables (`__` separates
//! nested keys). The database URL may carry a password, so it is a secret: `Debug` and the
//! `crm config` output show it redacted.

use anyhow::{Context, bail};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// How logs are written (the same setting as every connector's).
pub use crm_connector::LogFormat;

/// Everything `crm` can be configured with.
#[derive(Clone, Serialize, Deserialize)]
pub struct Settings {
    /// Address the HTTP API listens on.
    pub listen_addr: SocketAddr,
    /// `sqlite://path` (embedded default) or `postgres://user:password@host/db`.
    #[serde(serialize_with = "serialize_redacted")]
    pub database_url: SecretString,
    /// Connections in the database pool.
    pub database_max_connections: u32,
    /// Seconds to wait for a database connection.
    pub database_acquire_timeout_seconds: u64,
    /// ISO 3166 region for phone numbers typed without a country code.
    pub default_region: String,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter (`tracing` env-filter syntax); `RUST_LOG` overrides it.
    pub log_filter: String,
    /// Minutes an access token lives.
    pub auth_access_token_minutes: u64,
    /// Days a refresh token lives.
    pub auth_refresh_token_days: u64,
    /// Argon2id memory cost in KiB.
    pub auth_argon2_memory_kib: u32,
    /// Argon2id iterations.
    pub auth_argon2_iterations: u32,
    /// Browser origins allowed to call the API (CORS), e.g. `["https://console.example.gr"]`.
    pub cors_origins: Vec<String>,
    /// E-mail of the first admin, created at start when there are no users yet.
    pub admin_email: Option<String>,
    /// Password of that first admin.
    #[serde(serialize_with = "serialize_secret_option")]
    pub admin_password: Option<SecretString>,
    /// RabbitMQ URL (`amqp://user:password@host:5672/vhost`); without one the bus runs in
    /// process.
    #[serde(serialize_with = "serialize_url_option")]
    pub amqp_url: Option<SecretString>,
    /// Prefix of the bus's exchange and queue names.
    pub bus_prefix: String,
    /// The in-process bus's journal (used without `amqp_url`): the messages it holds, on disk,
    /// so a restart loses none.
    pub bus_journal: PathBuf,
    /// The largest message the bus publishes, in bytes: the broker's `max_message_size` or
    /// below (RabbitMQ 3.x: 128 MiB; RabbitMQ 4.x: 16 MiB). Uploads travel inside messages, so
    /// `files_max_bytes` must fit in it (as base64).
    pub bus_max_message_bytes: u64,
    /// Connectors run as tasks inside `crm serve` (on either bus): `files-local`, `email` (which
    /// reads its own settings from `email.toml` / `CRM_CONNECTOR_EMAIL_*`).
    pub embedded_connectors: Vec<String>,
    /// Where the local files connector keeps files.
    pub files_dir: PathBuf,
    /// The largest file (upload or attachment) the core passes to the file store, in bytes.
    pub files_max_bytes: u64,
    /// Uploads and downloads the API handles at once (each holds its file in memory a few
    /// times over); others wait for a turn, then get 503 with `Retry-After`.
    pub files_max_transfers: usize,
    /// Hours a published command stays in the outbox (an upload's holds the file's bytes).
    pub keep_sent_commands_hours: u64,
    /// Hours an `Idempotency-Key` is kept: a retry with it within that gets the first result.
    pub keep_idempotency_keys_hours: u64,
    /// Days a connector instance not heard from stays in the connector list.
    pub keep_silent_connectors_days: u64,
    /// The rule plugins' data directory: registry state, component blobs, compiled artifacts
    /// (`cache/`) and components to register at start (`autoload/`).
    pub plugins_dir: PathBuf,
    /// Fuel (about one unit per WebAssembly instruction) a plugin call may burn: its deadline.
    pub plugins_fuel_per_call: u64,
    /// The largest memory a plugin instance may grow to, in bytes.
    pub plugins_memory_limit_bytes: u64,
    /// Failures in a row after which a plugin is disabled.
    pub plugins_max_consecutive_failures: u32,
    /// Refuse plugins that import `wasi:filesystem` or `wasi:sockets` (otherwise contained).
    pub plugins_deny_io_imports: bool,
}

fn serialize_url_option<S: serde::Serializer>(secret: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match secret {
        Some(url) => s.serialize_str(&crm_bus::redact_url(url.expose_secret())),
        None => s.serialize_none(),
    }
}

fn serialize_secret_option<S: serde::Serializer>(secret: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match secret {
        Some(_) => s.serialize_str("***"),
        None => s.serialize_none(),
    }
}

fn serialize_redacted<S: serde::Serializer>(secret: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crm_store::redact_url(secret.expose_secret()))
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: SecretString::from("sqlite://./data/crm.db"),
            database_max_connections: 8,
            database_acquire_timeout_seconds: 10,
            default_region: "GR".into(),
            log_format: LogFormat::Auto,
            log_filter: "info".into(),
            auth_access_token_minutes: 15,
            auth_refresh_token_days: 30,
            auth_argon2_memory_kib: 19 * 1024,
            auth_argon2_iterations: 2,
            cors_origins: Vec::new(),
            admin_email: None,
            admin_password: None,
            amqp_url: None,
            bus_prefix: "crm".into(),
            bus_journal: PathBuf::from("./data/bus.journal"),
            bus_max_message_bytes: crm_bus::DEFAULT_MAX_MESSAGE_BYTES as u64,
            embedded_connectors: vec!["files-local".into()],
            files_dir: PathBuf::from("./data/files"),
            files_max_bytes: 25 * 1024 * 1024,
            files_max_transfers: crm_api::DEFAULT_MAX_FILE_TRANSFERS,
            keep_sent_commands_hours: 24,
            keep_idempotency_keys_hours: 24,
            keep_silent_connectors_days: 7,
            plugins_dir: PathBuf::from("./data/plugins"),
            plugins_fuel_per_call: crm_plugins::HostConfig::default().fuel_per_call,
            plugins_memory_limit_bytes: crm_plugins::HostConfig::default().memory_limit_bytes,
            plugins_max_consecutive_failures: crm_plugins::HostConfig::default().max_consecutive_failures,
            plugins_deny_io_imports: false,
        }
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("listen_addr", &self.listen_addr)
            .field("database_url", &crm_store::redact_url(self.database_url.expose_secret()))
            .field("database_max_connections", &self.database_max_connections)
            .field("database_acquire_timeout_seconds", &self.database_acquire_timeout_seconds)
            .field("default_region", &self.default_region)
            .field("log_format", &self.log_format)
            .field("log_filter", &self.log_filter)
            .field("auth_access_token_minutes", &self.auth_access_token_minutes)
            .field("auth_refresh_token_days", &self.auth_refresh_token_days)
            .field("auth_argon2_memory_kib", &self.auth_argon2_memory_kib)
            .field("auth_argon2_iterations", &self.auth_argon2_iterations)
            .field("cors_origins", &self.cors_origins)
            .field("admin_email", &self.admin_email)
            .field("admin_password", &self.admin_password.as_ref().map(|_| "***"))
            .field("amqp_url", &self.amqp_url.as_ref().map(|u| crm_bus::redact_url(u.expose_secret())))
            .field("bus_prefix", &self.bus_prefix)
            .field("bus_journal", &self.bus_journal)
            .field("bus_max_message_bytes", &self.bus_max_message_bytes)
            .field("embedded_connectors", &self.embedded_connectors)
            .field("files_dir", &self.files_dir)
            .field("files_max_bytes", &self.files_max_bytes)
            .field("files_max_transfers", &self.files_max_transfers)
            .field("keep_sent_commands_hours", &self.keep_sent_commands_hours)
            .field("keep_idempotency_keys_hours", &self.keep_idempotency_keys_hours)
            .field("keep_silent_connectors_days", &self.keep_silent_connectors_days)
            .field("plugins_dir", &self.plugins_dir)
            .field("plugins_fuel_per_call", &self.plugins_fuel_per_call)
            .field("plugins_memory_limit_bytes", &self.plugins_memory_limit_bytes)
            .field("plugins_max_consecutive_failures", &self.plugins_max_consecutive_failures)
            .field("plugins_deny_io_imports", &self.plugins_deny_io_imports)
            .finish()
    }
}

/// Connectors `crm serve` can run as tasks.
pub const EMBEDDABLE_CONNECTORS: &[&str] = &["files-local", "email"];

impl Settings {
    /// Loads defaults, then `file` (required if given, else `crm.toml` when present), then the
    /// environment, and validates the result.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Settings> {
        Self::from_figment(Self::figment(file)?)
    }

    fn figment(file: Option<&Path>) -> anyhow::Result<Figment> {
        let mut figment = Figment::from(Serialized::defaults(SettingsDefaults::default()));
        match file {
            Some(path) if !path.exists() => bail!("config file {} does not exist", path.display()),
            Some(path) => figment = figment.merge(Toml::file(path)),
            None => figment = figment.merge(Toml::file("crm.toml")),
        }
        Ok(figment.merge(Env::prefixed("CRM_").split("__")))
    }

    fn from_figment(figment: Figment) -> anyhow::Result<Settings> {
        let settings: Settings = figment.extract().context("invalid configuration")?;
        settings.validate()?;
        Ok(settings)
    }

    /// The bus configuration these settings give.
    pub fn bus(&self) -> crm_bus::BusConfig {
        crm_bus::BusConfig {
            prefix: self.bus_prefix.clone(),
            max_message_bytes: usize::try_from(self.bus_max_message_bytes).unwrap_or(usize::MAX),
            ..crm_bus::BusConfig::default()
        }
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        crm_domain::contact::Region::parse(&self.default_region).map_err(anyhow::Error::msg).context("default_region")?;
        crm_store::StoreConfig::from_url(self.database_url.expose_secret()).backend().context("database_url")?;
        if self.files_max_bytes == 0 || self.files_max_transfers == 0 {
            bail!("files_max_bytes and files_max_transfers must be at least 1");
        }
        let upload_message = crm_bus::message::message_bytes_for_file(self.files_max_bytes);
        if upload_message > self.bus_max_message_bytes {
            bail!(
                "files_max_bytes ({}) needs bus messages of up to {upload_message} bytes (files travel as base64), more than bus_max_message_bytes ({}): lower files_max_bytes, or raise the broker's max_message_size and bus_max_message_bytes",
                self.files_max_bytes,
                self.bus_max_message_bytes
            );
        }
        if self.database_max_connections == 0 {
            bail!("database_max_connections must be at least 1");
        }
        if self.auth_access_token_minutes == 0 || self.auth_refresh_token_days == 0 {
            bail!("auth_access_token_minutes and auth_refresh_token_days must be at least 1");
        }
        for (name, value) in [
            ("keep_sent_commands_hours", self.keep_sent_commands_hours),
            ("keep_idempotency_keys_hours", self.keep_idempotency_keys_hours),
            ("keep_silent_connectors_days", self.keep_silent_connectors_days),
        ] {
            if value == 0 {
                bail!("{name} must be at least 1 (0 would drop what it keeps at once)");
            }
        }
        if let Some(name) = self.embedded_connectors.iter().find(|n| !EMBEDDABLE_CONNECTORS.contains(&n.as_str())) {
            bail!(
                "embedded_connectors: `{name}` is not a connector that runs inside crm serve (known: {})",
                EMBEDDABLE_CONNECTORS.join(", ")
            );
        }
        if self.bus_prefix.is_empty() || !self.bus_prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            bail!("bus_prefix must be letters, digits, `-` or `_`");
        }
        self.plugin_host().validate().map_err(anyhow::Error::msg).context("plugins")?;
        if self.admin_email.is_some() != self.admin_password.is_some() {
            bail!("set both admin_email and admin_password (CRM_ADMIN_EMAIL, CRM_ADMIN_PASSWORD), or neither");
        }
        Ok(())
    }

    /// The API configuration.
    pub fn api(&self) -> anyhow::Result<crm_api::ApiConfig> {
        Ok(crm_api::ApiConfig {
            default_region: crm_domain::contact::Region::parse(&self.default_region).map_err(anyhow::Error::msg)?,
            auth: crm_api::AuthConfig {
                access_token_ttl: std::time::Duration::from_secs(self.auth_access_token_minutes * 60),
                refresh_token_ttl: std::time::Duration::from_secs(self.auth_refresh_token_days * 24 * 3600),
                argon2_memory_kib: self.auth_argon2_memory_kib,
                argon2_iterations: self.auth_argon2_iterations,
                ..crm_api::AuthConfig::default()
            },
            cors_origins: self.cors_origins.clone(),
            max_upload_bytes: usize::try_from(self.files_max_bytes).unwrap_or(usize::MAX),
            max_file_transfers: self.files_max_transfers,
            ..crm_api::ApiConfig::default()
        })
    }

    /// How plugins run.
    pub fn plugin_host(&self) -> crm_plugins::HostConfig {
        crm_plugins::HostConfig {
            fuel_per_call: self.plugins_fuel_per_call,
            memory_limit_bytes: self.plugins_memory_limit_bytes,
            max_consecutive_failures: self.plugins_max_consecutive_failures,
            deny_io_imports: self.plugins_deny_io_imports,
            default_region: self.default_region.clone(),
            cache_dir: Some(self.plugins_dir.join("cache")),
            ..crm_plugins::HostConfig::default()
        }
    }

    /// The plugin registry's configuration (with the default plugins).
    pub fn plugin_registry(&self) -> crm_plugins::RegistryConfig {
        crm_plugins::RegistryConfig { dir: self.plugins_dir.clone(), host: self.plugin_host(), install_defaults: true }
    }

    /// The store configuration.
    pub fn store(&self) -> crm_store::StoreConfig {
        crm_store::StoreConfig {
            url: self.database_url.expose_secret().to_owned(),
            max_connections: self.database_max_connections,
            acquire_timeout: std::time::Duration::from_secs(self.database_acquire_timeout_seconds),
        }
    }

    /// The settings as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml_string(self)
    }
}

fn toml_string(settings: &Settings) -> String {
    let value = serde_json::to_value(settings).unwrap_or_default();
    let mut out = String::new();
    if let serde_json::Value::Object(map) = value {
        for (key, value) in map {
            out.push_str(&format!("{key} = {value}\n"));
        }
    }
    out
}

/// The defaults in serialisable form (the real URL, not a redacted one).
#[derive(Serialize)]
struct SettingsDefaults {
    listen_addr: SocketAddr,
    database_url: String,
    database_max_connections: u32,
    database_acquire_timeout_seconds: u64,
    default_region: String,
    log_format: LogFormat,
    log_filter: String,
    auth_access_token_minutes: u64,
    auth_refresh_token_days: u64,
    auth_argon2_memory_kib: u32,
    auth_argon2_iterations: u32,
    cors_origins: Vec<String>,
    bus_prefix: String,
    bus_journal: PathBuf,
    bus_max_message_bytes: u64,
    embedded_connectors: Vec<String>,
    files_dir: PathBuf,
    files_max_bytes: u64,
    files_max_transfers: usize,
    keep_sent_commands_hours: u64,
    keep_idempotency_keys_hours: u64,
    keep_silent_connectors_days: u64,
    plugins_dir: PathBuf,
    plugins_fuel_per_call: u64,
    plugins_memory_limit_bytes: u64,
    plugins_max_consecutive_failures: u32,
    plugins_deny_io_imports: bool,
}

impl Default for SettingsDefaults {
    fn default() -> Self {
        let d = Settings::default();
        SettingsDefaults {
            listen_addr: d.listen_addr,
            database_url: d.database_url.expose_secret().to_owned(),
            database_max_connections: d.database_max_connections,
            database_acquire_timeout_seconds: d.database_acquire_timeout_seconds,
            default_region: d.default_region,
            log_format: d.log_format,
            log_filter: d.log_filter,
            auth_access_token_minutes: d.auth_access_token_minutes,
            auth_refresh_token_days: d.auth_refresh_token_days,
            auth_argon2_memory_kib: d.auth_argon2_memory_kib,
            auth_argon2_iterations: d.auth_argon2_iterations,
            cors_origins: d.cors_origins,
            bus_prefix: d.bus_prefix,
            bus_journal: d.bus_journal,
            bus_max_message_bytes: d.bus_max_message_bytes,
            embedded_connectors: d.embedded_connectors,
            files_dir: d.files_dir,
            files_max_bytes: d.files_max_bytes,
            files_max_transfers: d.files_max_transfers,
            keep_sent_commands_hours: d.keep_sent_commands_hours,
            keep_idempotency_keys_hours: d.keep_idempotency_keys_hours,
            keep_silent_connectors_days: d.keep_silent_connectors_days,
            plugins_dir: d.plugins_dir,
            plugins_fuel_per_call: d.plugins_fuel_per_call,
            plugins_memory_limit_bytes: d.plugins_memory_limit_bytes,
            plugins_max_consecutive_failures: d.plugins_max_consecutive_failures,
            plugins_deny_io_imports: d.plugins_deny_io_imports,
        }
    }
}

#[cfg(test)]
// `figment::Jail` closures must return `figment::Error`, which is large; that is its API.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn environment_overrides_file_overrides_defaults() {
        Jail::expect_with(|jail| {
            jail.create_file("crm.toml", "default_region = \"DE\"\nlisten_addr = \"127.0.0.1:9000\"\n")?;
            jail.set_env("CRM_DATABASE_URL", "postgres://crm:hunter2@127.0.0.1/crm");
            jail.set_env("CRM_LISTEN_ADDR", "127.0.0.1:9100");
            jail.set_env("CRM_ADMIN_EMAIL", "owner@example.gr");
            jail.set_env("CRM_ADMIN_PASSWORD", "bell tower secret");
            let settings = Settings::load(None).map_err(|e| e.to_string())?;
            assert_eq!(settings.default_region, "DE");
            assert_eq!(settings.listen_addr.port(), 9100);
            assert_eq!(settings.store().url, "postgres://crm:hunter2@127.0.0.1/crm");
            let debug = format!("{settings:?}");
            assert!(!debug.contains("hunter2") && !debug.contains("bell tower secret"), "{debug}");
            let printed = settings.to_redacted_toml();
            assert!(!printed.contains("hunter2") && !printed.contains("bell tower secret"), "{printed}");
            assert_eq!(settings.admin_email.as_deref(), Some("owner@example.gr"));
            Ok(())
        });
    }

    #[test]
    fn invalid_values_are_refused_with_their_name() {
        Jail::expect_with(|jail| {
            jail.set_env("CRM_DEFAULT_REGION", "Narnia");
            let err = Settings::load(None).unwrap_err();
            assert!(format!("{err:#}").contains("default_region"), "{err:#}");
            jail.set_env("CRM_DEFAULT_REGION", "GR");
            jail.set_env("CRM_DATABASE_URL", "mysql://x");
            let err = Settings::load(None).unwrap_err();
            assert!(format!("{err:#}").contains("database_url"), "{err:#}");
            Ok(())
        });
    }

    #[test]
    fn defaults_are_the_embedded_setup() {
        Jail::expect_with(|_| {
            let settings = Settings::load(None).map_err(|e| e.to_string())?;
            assert_eq!(settings.store().url, "sqlite://./data/crm.db");
            assert_eq!(settings.store().backend().unwrap(), crm_store::Backend::Sqlite);
            assert_eq!(settings.bus().max_message_bytes, crm_bus::DEFAULT_MAX_MESSAGE_BYTES);
            let days = |d: u64| std::time::Duration::from_secs(d * 24 * 3600);
            let retention = crate::hub_config(&settings).map_err(|e| e.to_string())?.retention;
            assert_eq!((retention.sent_commands, retention.idempotency_keys), (days(1), days(1)));
            assert_eq!(retention.silent_connectors, days(7));
            Ok(())
        });
    }

    /// A retention of zero would drop what it keeps at once (idempotency gone, the connector
    /// list emptied every hour): refused, by name.
    #[test]
    fn retentions_must_keep_something() {
        Jail::expect_with(|jail| {
            for name in ["KEEP_SENT_COMMANDS_HOURS", "KEEP_IDEMPOTENCY_KEYS_HOURS", "KEEP_SILENT_CONNECTORS_DAYS"] {
                jail.set_env(format!("CRM_{name}"), "0");
                let err = format!("{:#}", Settings::load(None).unwrap_err());
                assert!(err.contains(&name.to_lowercase()), "{err}");
                jail.set_env(format!("CRM_{name}"), "2");
            }
            Settings::load(None).map_err(|e| e.to_string())?;
            Ok(())
        });
    }

    /// Uploads travel as base64 inside bus messages: a file cap the bus's messages cannot carry
    /// is refused at start, naming both settings.
    #[test]
    fn the_file_cap_must_fit_in_a_bus_message() {
        Jail::expect_with(|jail| {
            jail.set_env("CRM_BUS_MAX_MESSAGE_BYTES", (16 * 1024 * 1024).to_string());
            let err = format!("{:#}", Settings::load(None).unwrap_err());
            assert!(err.contains("files_max_bytes") && err.contains("bus_max_message_bytes"), "{err}");
            jail.set_env("CRM_FILES_MAX_BYTES", "12000000");
            let settings = Settings::load(None).map_err(|e| e.to_string())?;
            assert_eq!(settings.bus().max_message_bytes, 16 * 1024 * 1024);
            Ok(())
        });
    }
}
