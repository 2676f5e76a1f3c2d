//! The `crm` command: serve the API, run migrations, show the effective configuration. The
//! binary is a thin shell over this library so tests can run the same code paths.

pub mod config;
pub mod telemetry;
pub mod users;

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

/// Serves the API until SIGINT or SIGTERM, then finishes in-flight requests.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let store = open_store(&settings).await?;
    let state = crm_api::AppState::new(store.clone(), settings.api()?).await.map_err(anyhow::Error::msg)?;
    ensure_first_admin(&store, &settings, &state).await?;
    let app = crm_api::router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let listener =
        tokio::net::TcpListener::bind(settings.listen_addr).await.with_context(|| format!("cannot listen on {}", settings.listen_addr))?;
    tracing::info!(address = %listener.local_addr()?, "crm-hub API listening; docs at /api/docs");
    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await.context("server failed")?;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
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
