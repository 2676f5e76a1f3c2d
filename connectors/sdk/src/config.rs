//! Configuration: the settings every connector has ([`ConnectorSettings`]) and the connector's
//! own (its `Connector::Config`), both read from one source: a TOML file, then the environment.
//!
//! * File: `--config <path>` or `CRM_CONNECTOR_CONFIG` (must exist), else `<name>.toml` in the
//!   working directory when present. Common and connector keys sit side by side at the top level.
//! * Environment: `CRM_CONNECTOR_<KEY>` for the common settings (`CRM_CONNECTOR_AMQP_URL`,
//!   `CRM_CONNECTOR_PREFETCH`, ...), `CRM_CONNECTOR_<NAME>_<KEY>` for the connector's own, with
//!   the name upper-cased and `-` as `_` (`CRM_CONNECTOR_FILES_LOCAL_DATA_DIR`). `__` separates
//!   nested keys.
//!
//! Secrets (the AMQP URL carries a password; connectors' API tokens) are
//! [`secrecy::SecretString`]: `Debug` and logs show them redacted.

use crate::runner::RunSettings;
use anyhow::{Context as _, bail};
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crm_bus::redact_url;

/// The prefix of every common environment variable.
pub const ENV_PREFIX: &str = "CRM_CONNECTOR_";

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON lines when stderr is not a terminal (a service), readable text on a terminal.
    #[default]
    Auto,
    /// One JSON object per line.
    Json,
    /// Human-readable.
    Pretty,
}

/// Settings every connector has.
#[derive(Clone, Deserialize)]
#[serde(default)]
pub struct ConnectorSettings {
    /// `amqp://user:password@host:5672/%2f`. Required when the connector runs as a process;
    /// absent when it runs as a task inside `crm serve` (the in-process bus).
    pub amqp_url: Option<SecretString>,
    /// Prefix of every exchange and queue name (`crm`).
    pub bus_prefix: String,
    /// The largest message the connector publishes, in bytes: the broker's `max_message_size`
    /// or below (RabbitMQ 3.x: 128 MiB; 4.x: 16 MiB). A larger one (a file read back, say) is
    /// refused before it reaches the broker.
    pub bus_max_message_bytes: u64,
    /// This instance's name in heartbeats and event sources; default `<hostname>-<pid>`.
    #[serde(deserialize_with = "optional_text")]
    pub instance: Option<String>,
    /// Unacknowledged deliveries the broker may hand this instance at once.
    pub prefetch: u16,
    /// Commands handled concurrently.
    pub max_in_flight: usize,
    /// Seconds between heartbeats.
    pub heartbeat_interval_seconds: u32,
    /// Seconds in-flight commands get to finish at shutdown before they are requeued.
    pub shutdown_timeout_seconds: u64,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter (`tracing` env-filter syntax); `RUST_LOG` overrides it.
    pub log_filter: String,
}

impl Default for ConnectorSettings {
    fn default() -> Self {
        let run = RunSettings::default();
        ConnectorSettings {
            amqp_url: None,
            bus_prefix: crm_bus::BusConfig::default().prefix,
            bus_max_message_bytes: crm_bus::DEFAULT_MAX_MESSAGE_BYTES as u64,
            instance: None,
            prefetch: run.prefetch,
            max_in_flight: run.max_in_flight,
            heartbeat_interval_seconds: u32::try_from(run.heartbeat_interval.as_secs()).unwrap_or(u32::MAX),
            shutdown_timeout_seconds: run.shutdown_timeout.as_secs(),
            log_format: LogFormat::Auto,
            log_filter: "info".into(),
        }
    }
}

impl std::fmt::Debug for ConnectorSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectorSettings")
            .field("amqp_url", &self.amqp_url.as_ref().map(|url| redact_url(url.expose_secret())))
            .field("bus_prefix", &self.bus_prefix)
            .field("bus_max_message_bytes", &self.bus_max_message_bytes)
            .field("instance", &self.instance)
            .field("prefetch", &self.prefetch)
            .field("max_in_flight", &self.max_in_flight)
            .field("heartbeat_interval_seconds", &self.heartbeat_interval_seconds)
            .field("shutdown_timeout_seconds", &self.shutdown_timeout_seconds)
            .field("log_format", &self.log_format)
            .field("log_filter", &self.log_filter)
            .finish()
    }
}

impl ConnectorSettings {
    /// Checks what types alone cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.bus_prefix.is_empty() || !self.bus_prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            bail!("bus_prefix must be non-empty ASCII letters, digits, '-', '_' or '.'");
        }
        if self.prefetch == 0 {
            bail!("prefetch must be at least 1");
        }
        if self.max_in_flight == 0 {
            bail!("max_in_flight must be at least 1");
        }
        if self.heartbeat_interval_seconds == 0 {
            bail!("heartbeat_interval_seconds must be at least 1");
        }
        if let Some(url) = &self.amqp_url {
            let url = url.expose_secret();
            if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
                bail!("amqp_url must start with amqp:// or amqps://");
            }
        }
        Ok(())
    }

    /// The runner's settings.
    pub fn run_settings(&self) -> RunSettings {
        RunSettings {
            instance: self.instance.clone(),
            prefetch: self.prefetch,
            max_in_flight: self.max_in_flight,
            heartbeat_interval: Duration::from_secs(u64::from(self.heartbeat_interval_seconds)),
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout_seconds),
        }
    }

    /// The bus configuration (prefix, largest message; the transport's defaults otherwise).
    pub fn bus_config(&self) -> crm_bus::BusConfig {
        crm_bus::BusConfig {
            prefix: self.bus_prefix.clone(),
            max_message_bytes: usize::try_from(self.bus_max_message_bytes).unwrap_or(usize::MAX),
            ..crm_bus::BusConfig::default()
        }
    }
}

/// The environment-variable prefix of connector `name`'s own settings:
/// `files-local` → `CRM_CONNECTOR_FILES_LOCAL_`.
pub fn connector_env_prefix(name: &str) -> String {
    let upper: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
    format!("{ENV_PREFIX}{upper}_")
}

/// The file read when none is named: `<name>.toml`.
pub fn default_file(name: &str) -> PathBuf {
    PathBuf::from(format!("{name}.toml"))
}

/// The figment both settings are read from (file, then common, then connector environment).
pub fn figment(name: &str, file: Option<&Path>) -> anyhow::Result<Figment> {
    let mut figment = Figment::new();
    match file {
        Some(path) if !path.exists() => bail!("config file {} does not exist", path.display()),
        Some(path) => figment = figment.merge(Toml::file(path)),
        None => figment = figment.merge(Toml::file(default_file(name))),
    }
    Ok(figment.merge(Env::prefixed(ENV_PREFIX).split("__")).merge(Env::prefixed(&connector_env_prefix(name)).split("__")))
}

/// Loads and validates the common settings and connector `name`'s own settings `S`.
pub fn load<S: DeserializeOwned>(name: &str, file: Option<&Path>) -> anyhow::Result<(ConnectorSettings, S)> {
    let figment = figment(name, file)?;
    let settings: ConnectorSettings = figment.extract().context("invalid connector settings")?;
    settings.validate()?;
    let own: S = figment.extract().with_context(|| format!("invalid {name} settings"))?;
    Ok((settings, own))
}

/// An optional string that the environment may have parsed as a number or boolean.
fn optional_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        String(String),
        Unsigned(u64),
        Signed(i64),
        Float(f64),
        Bool(bool),
    }
    Ok(Option::<Text>::deserialize(deserializer)?.map(|text| match text {
        Text::String(s) => s,
        Text::Unsigned(n) => n.to_string(),
        Text::Signed(n) => n.to_string(),
        Text::Float(n) => n.to_string(),
        Text::Bool(b) => b.to_string(),
    }))
}

#[cfg(test)]
// `figment::Jail` closures must return `figment::Error`, which is large; that is its API.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    #[derive(Debug, Deserialize)]
    #[serde(default)]
    struct Own {
        data_dir: PathBuf,
        max_file_bytes: u64,
        token: Option<SecretString>,
    }

    impl Default for Own {
        fn default() -> Self {
            Own { data_dir: "./data/files".into(), max_file_bytes: 10, token: None }
        }
    }

    #[test]
    fn file_then_common_then_connector_environment() {
        Jail::expect_with(|jail| {
            jail.create_file("files-local.toml", "prefetch = 4\ndata_dir = \"/srv/files\"\nmax_file_bytes = 99\n")?;
            jail.set_env("CRM_CONNECTOR_AMQP_URL", "amqp://crm:hunter2@rabbit:5672/%2f");
            jail.set_env("CRM_CONNECTOR_PREFETCH", "7");
            jail.set_env("CRM_CONNECTOR_INSTANCE", "42");
            jail.set_env("CRM_CONNECTOR_FILES_LOCAL_MAX_FILE_BYTES", "1234");
            jail.set_env("CRM_CONNECTOR_FILES_LOCAL_TOKEN", "s3cret-token");
            let (settings, own) = load::<Own>("files-local", None).map_err(|e| format!("{e:#}"))?;
            assert_eq!(settings.prefetch, 7);
            assert_eq!(settings.instance.as_deref(), Some("42"));
            assert_eq!(settings.amqp_url.as_ref().unwrap().expose_secret(), "amqp://crm:hunter2@rabbit:5672/%2f");
            assert_eq!(own.data_dir, PathBuf::from("/srv/files"));
            assert_eq!(own.max_file_bytes, 1234);
            assert_eq!(settings.max_in_flight, ConnectorSettings::default().max_in_flight);
            let debug = format!("{settings:?} {own:?}");
            assert!(!debug.contains("hunter2") && !debug.contains("s3cret-token"), "{debug}");
            assert!(debug.contains("amqp://crm:***@rabbit:5672/%2f"), "{debug}");
            Ok(())
        });
    }

    #[test]
    fn defaults_without_file_or_environment() {
        Jail::expect_with(|_| {
            let (settings, own) = load::<Own>("files-local", None).map_err(|e| format!("{e:#}"))?;
            assert!(settings.amqp_url.is_none());
            assert_eq!(settings.bus_prefix, "crm");
            assert_eq!(own.max_file_bytes, 10);
            Ok(())
        });
    }

    #[test]
    fn invalid_values_are_refused() {
        Jail::expect_with(|jail| {
            jail.set_env("CRM_CONNECTOR_PREFETCH", "0");
            let err = load::<Own>("files-local", None).unwrap_err();
            assert!(format!("{err:#}").contains("prefetch"), "{err:#}");
            jail.set_env("CRM_CONNECTOR_PREFETCH", "3");
            jail.set_env("CRM_CONNECTOR_AMQP_URL", "http://x");
            let err = load::<Own>("files-local", None).unwrap_err();
            assert!(format!("{err:#}").contains("amqp_url"), "{err:#}");
            let err = load::<Own>("files-local", Some(Path::new("missing.toml"))).unwrap_err();
            assert!(format!("{err:#}").contains("does not exist"), "{err:#}");
            Ok(())
        });
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(redact_url("amqp://guest:guest@127.0.0.1:5672/%2f"), "amqp://guest:***@127.0.0.1:5672/%2f");
        assert_eq!(redact_url("amqp://127.0.0.1:5672"), "amqp://127.0.0.1:5672");
        assert_eq!(connector_env_prefix("files-local"), "CRM_CONNECTOR_FILES_LOCAL_");
    }
}
