//! `crm`: the crm-hub server and its operational commands.

use clap::{Parser, Subcommand};
use crm_server::config::Settings;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// crm-hub: a CRM whose core is a message-driven integration hub.
///
/// Configuration comes from defaults, then a TOML file (--config, or ./crm.toml when present),
/// then CRM_* environment variables, e.g. CRM_DATABASE_URL=postgres://... With nothing set it
/// runs on a SQLite file in ./data/.
#[derive(Debug, Parser)]
#[command(name = "crm", version, propagate_version = true)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, global = true, env = "CRM_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API (migrating the database first).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the effective configuration, secrets redacted.
    Config,
    /// Manage console users.
    #[command(subcommand)]
    User(crm_server::users::UserCommand),
    /// Rule developer's tools: check a plugin component, test it on cases or the store.
    #[command(subcommand)]
    Plugin(crm_server::plugin_cli::PluginCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("crm: {err:#}");
            return ExitCode::from(2);
        }
    };
    if let Command::Config = cli.command {
        let _ = write!(std::io::stdout(), "{}", settings.to_redacted_toml());
        return ExitCode::SUCCESS;
    }
    crm_server::telemetry::init(&settings);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("crm: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve => crm_server::serve(settings).await,
            Command::Migrate => crm_server::open_store(&settings).await.map(|_| tracing::info!("migrations applied")),
            Command::Config => Ok(()),
            Command::User(command) => crm_server::run_user_command(&settings, command).await,
            Command::Plugin(command) => crm_server::plugin_cli::run(&settings, command, &mut std::io::stdout()).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "crm failed");
            eprintln!("crm: {err:#}");
            ExitCode::FAILURE
        }
    }
}
