//! The `crm` command: serve the API, run migrations, show the effective configuration. The
//! binary is a thin shell over this library so tests can run the same code paths.

pub mod config;
pub mod plugin_cli;
pub mod telemetry;
pub mod users;

use anyhow::Context;
use config::Settings;
use crm_bus::{Bus, Channel};
use crm_hub::{Hub, HubConfig, Retention};
use crm_store::Store;
use secrecy::ExposeSecret;
use std::sync::Arc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Opens the store the settings name and applies pending migrations.
pub async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    let url = crm_store::redact_url(settings.database_url.expose_secret());
    let store = Store::connect(&settings.store()).await.with_context(|| format!("cannot open the database at {url}"))?;
    store.migrate().await.with_context(|| format!("cannot migrate the database at {url}"))?;
    tracing::info!(database = %url, backend = ?store.backend(), "database ready");
    Ok(store)
}

/// Opens the plugin registry in `plugins_dir`, installing the built-in default plugins; loads
/// (compiling once, then from the artifact cache) every registered plugin.
pub async fn open_plugins(settings: &Settings) -> anyhow::Result<Arc<crm_plugins::Registry>> {
    let config = settings.plugin_registry();
    let dir = config.dir.clone();
    let registry = tokio::task::spawn_blocking(move || crm_plugins::Registry::open(config))
        .await
        .context("plugin loading panicked")?
        .with_context(|| format!("cannot open the plugin registry in {}", dir.display()))?;
    for plugin in registry.list() {
        tracing::info!(plugin = %plugin.name, version = %plugin.current.version, hash = %plugin.current.hash,
            enabled = plugin.enabled, active_for = ?plugin.active_for, "plugin loaded");
    }
    Ok(Arc::new(registry))
}

/// Creates the first admin from `admin_email` / `admin_password` when there are no users yet.
pub async fn ensure_first_admin(store: &Store, settings: &Settings, state: &crm_api::AppState) -> anyhow::Result<()> {
    let (Some(email), Some(password)) = (&settings.admin_email, &settings.admin_password) else {
        if store.count_users().await? == 0 {
            tracing::warn!(
                "there are no users yet: create an admin with `crm user create --role admin`, or set CRM_ADMIN_EMAIL and CRM_ADMIN_PASSWORD"
            );
        }
        return Ok(());
    };
    if store.count_users().await? > 0 {
        return Ok(());
    }
    crm_domain::user::check_password(password.expose_secret()).map_err(|e| anyhow::anyhow!("admin_password {e}"))?;
    let user = crm_domain::user::UserInput {
        email: Some(email.clone()),
        display_name: Some("Administrator".into()),
        role: Some(crm_domain::access::Role::Admin),
        active: Some(true),
    }
    .parse()
    .map_err(|e| anyhow::anyhow!("admin_email: {e}"))?;
    let hash = state
        .auth
        .hash_password(password.expose_secret().to_owned())
        .await
        .map_err(|e| anyhow::anyhow!("cannot hash the admin password: {e}"))?;
    let record = store.create_user(user, Some(hash)).await.context("cannot create the first admin")?;
    tracing::info!(user = %record.id, email = %record.data.email, "created the first admin");
    Ok(())
}

/// Connects the bus the settings name: RabbitMQ when `amqp_url` is set, else in process with
/// its journal at `bus_journal`.
pub async fn connect_bus(settings: &Settings) -> anyhow::Result<Bus> {
    let config = settings.bus();
    match &settings.amqp_url {
        None => Bus::in_process_durable(config, &settings.bus_journal).context("cannot open the in-process bus"),
        Some(url) => {
            let shown = crm_bus::redact_url(url.expose_secret());
            let bus = Bus::connect(url.expose_secret(), config).await.with_context(|| format!("cannot connect to RabbitMQ at {shown}"))?;
            tracing::info!(broker = %shown, "bus connected");
            Ok(bus)
        }
    }
}

/// Starts the connectors configured to run inside `crm serve`.
fn start_embedded_connectors(
    settings: &Settings,
    bus: &Bus,
    shutdown: &CancellationToken,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<anyhow::Result<()>>>> {
    let mut tasks = Vec::new();
    for name in &settings.embedded_connectors {
        match name.as_str() {
            "files-local" => {
                let config = crm_connector_files_local::FilesLocalConfig {
                    data_dir: settings.files_dir.clone(),
                    max_file_bytes: settings.files_max_bytes,
                };
                let connector = crm_connector_files_local::FilesLocal::new(config).context("files-local connector")?;
                tracing::info!(data_dir = %connector.data_dir().display(), "files-local connector runs inside the server");
                tasks.push(crm_connector::spawn(connector, bus.clone(), shutdown.child_token()));
            }
            "email" => {
                // Read like the connector's own process reads it: `email.toml` or
                // `CRM_CONNECTOR_EMAIL_*` (accounts, SMTP, domain).
                let (_, config) =
                    crm_connector::config::load::<crm_connector_email::EmailConfig>("email", None).context("email connector")?;
                let connector = crm_connector_email::Email::new(config).context("email connector")?;
                tracing::info!("email connector runs inside the server");
                tasks.push(crm_connector::spawn(connector, bus.clone(), shutdown.child_token()));
            }
            other => anyhow::bail!("`{other}` cannot run inside crm serve"),
        }
    }
    Ok(tasks)
}

/// The hub's settings.
fn hub_config(settings: &Settings) -> anyhow::Result<HubConfig> {
    let instance = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into());
    Ok(HubConfig {
        source: format!("/crm/core/{instance}-{}", std::process::id()),
        region: crm_domain::contact::Region::parse(&settings.default_region).map_err(anyhow::Error::msg)?,
        attachment_cap: settings.files_max_bytes,
        command_channels: command_channels(settings),
        retention: Retention {
            sent_commands: hours(settings.keep_sent_commands_hours),
            idempotency_keys: hours(settings.keep_idempotency_keys_hours),
            silent_connectors: hours(settings.keep_silent_connectors_days.saturating_mul(24)),
            ..Retention::default()
        },
        ..HubConfig::default()
    })
}

fn hours(n: u64) -> std::time::Duration {
    std::time::Duration::from_secs(n.saturating_mul(3600))
}

/// The channels whose commands wait for their connector: every channel on RabbitMQ; on the
/// in-process bus, those of the connectors that can run inside the server (enabled now or after
/// a restart with other settings): no other connector can reach that bus.
fn command_channels(settings: &Settings) -> Vec<Channel> {
    if settings.amqp_url.is_some() {
        return HubConfig::default().command_channels;
    }
    config::EMBEDDABLE_CONNECTORS
        .iter()
        .filter_map(|name| match *name {
            "files-local" => Some(<crm_connector_files_local::FilesLocal as crm_connector::Connector>::CHANNEL),
            "email" => Some(<crm_connector_email::Email as crm_connector::Connector>::CHANNEL),
            _ => None,
        })
        .collect()
}

/// Serves the API until SIGINT or SIGTERM, then finishes in-flight requests, lets the
/// connectors and the hub finish what they hold, and closes the bus and the store.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let store = open_store(&settings).await?;
    let bus = connect_bus(&settings).await?;
    let wakeup = Arc::new(Notify::new());
    let plugins = open_plugins(&settings).await?;
    let state = crm_api::AppState::new(store.clone(), settings.api()?)
        .await
        .map_err(anyhow::Error::msg)?
        .with_bus(bus.clone())
        .with_relay_wakeup(wakeup.clone())
        .with_plugins(plugins.clone());
    ensure_first_admin(&store, &settings, &state).await?;
    // The active matcher plugin decides; without one (or when it fails) the built-in rules do.
    let region = crm_domain::contact::Region::parse(&settings.default_region).map_err(anyhow::Error::msg)?;
    let matcher: Arc<dyn crm_hub::Matcher> = Arc::new(crm_plugins::Matcher::new(plugins, region));
    let hub = Hub::start(store.clone(), bus.clone(), matcher, hub_config(&settings)?, wakeup).await.context("cannot start the hub")?;
    let connectors_stop = CancellationToken::new();
    let connectors = start_embedded_connectors(&settings, &bus, &connectors_stop)?;
    let app = crm_api::router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let listener =
        tokio::net::TcpListener::bind(settings.listen_addr).await.with_context(|| format!("cannot listen on {}", settings.listen_addr))?;
    tracing::info!(address = %listener.local_addr()?, transport = bus.transport(), "crm-hub API listening; docs at /api/docs");
    let served = axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await.context("server failed");
    connectors_stop.cancel();
    for task in connectors {
        match task.await {
            Ok(Err(err)) => tracing::warn!(error = %err, "connector stopped with an error"),
            Err(err) => tracing::warn!(error = %err, "connector task failed"),
            Ok(Ok(())) => {}
        }
    }
    hub.shutdown().await;
    bus.close().await;
    store.close().await;
    tracing::info!("stopped");
    served
}

/// Runs `crm user …` against the configured database.
pub async fn run_user_command(settings: &Settings, command: users::UserCommand) -> anyhow::Result<()> {
    let store = open_store(settings).await?;
    let auth = crm_api::Auth::new(&store, settings.api()?.auth).await.context("cannot load the signing key")?;
    let result = users::run(command, &store, &auth, &mut std::io::stdout()).await;
    store.close().await;
    result
}

async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On the in-process bus only the connectors that can run inside the server can take
    /// commands: the others' are refused rather than kept in memory for ever; a command for one
    /// that is not enabled now waits for a restart that enables it. On RabbitMQ every channel's
    /// commands wait.
    #[test]
    fn commands_wait_only_for_connectors_that_can_come() {
        let mut settings = Settings { embedded_connectors: vec![], ..Settings::default() };
        assert_eq!(command_channels(&settings), [Channel::Files, Channel::Email]);
        settings.amqp_url = Some("amqp://guest:guest@127.0.0.1:5672/%2f".to_owned().into());
        assert_eq!(command_channels(&settings), HubConfig::default().command_channels);
    }
}
