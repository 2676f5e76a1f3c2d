//! The `crm` command: serve the API, run migrations, show the effective configuration. The
//! binary is a thin shell over this library so tests can run the same code paths.

pub mod config;
pub mod telemetry;

use anyhow::Context;
use config::Settings;
use crm_store::Store;
use secrecy::ExposeSecret;

/// Opens the store the settings name and applies pending migrations.
pub async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    let url = crm_store::redact_url(settings.database_url.expose_secret());
    let store = Store::connect(&settings.store()).await.with_context(|| format!("cannot open the database at {url}"))?;
    store.migrate().await.with_context(|| format!("cannot migrate the database at {url}"))?;
    tracing::info!(database = %url, backend = ?store.backend(), "database ready");
    Ok(store)
}

/// Serves the API until SIGINT or SIGTERM, then finishes in-flight requests.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let store = open_store(&settings).await?;
    let region = crm_domain::contact::Region::parse(&settings.default_region).map_err(anyhow::Error::msg)?;
    let app = crm_api::router(crm_api::AppState::new(store.clone(), region));
    let listener =
        tokio::net::TcpListener::bind(settings.listen_addr).await.with_context(|| format!("cannot listen on {}", settings.listen_addr))?;
    tracing::info!(address = %listener.local_addr()?, "crm-hub API listening; docs at /api/docs");
    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await.context("server failed")?;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
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
