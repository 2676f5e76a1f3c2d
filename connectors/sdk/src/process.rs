//! A connector as its own process: [`main`] reads the configuration, sets up logging (JSON lines
//! when not on a terminal), connects to RabbitMQ (retrying until it answers), runs the connector
//! and stops it gracefully on SIGTERM or SIGINT (a second signal exits at once).
//!
//! Usage: `<binary> [--config <file.toml>]`; `CRM_CONNECTOR_CONFIG` names the file too.

use crate::config::{self, ConnectorSettings, LogFormat};
use crate::connector::Connector;
use crate::publisher::retry_while_unreachable;
use crate::runner::{ConnectorContext, run};
use anyhow::{Context as _, bail};
use crm_bus::Bus;
use secrecy::ExposeSecret;
use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Runs connector `C` as a process: `fn main() -> ExitCode { crm_connector::main(MyConnector::new) }`.
///
/// `build` gets the connector's own settings (`C::Config`). Exit codes: 0 after a graceful
/// shutdown, 2 for bad configuration or arguments, 1 for any other failure.
pub fn main<C, F>(build: F) -> ExitCode
where
    C: Connector,
    F: FnOnce(C::Config) -> anyhow::Result<C>,
{
    let name = C::NAME;
    let file = match parse_args::<C>(std::env::args().skip(1)) {
        Ok(Args::Run { config }) => config.or_else(|| std::env::var_os("CRM_CONNECTOR_CONFIG").map(PathBuf::from)),
        Ok(Args::Exit(message)) => {
            let _ = writeln!(std::io::stdout(), "{message}");
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "{name}: {err:#}");
            return ExitCode::from(2);
        }
    };
    let (settings, own) = match config::load::<C::Config>(name, file.as_deref()) {
        Ok(loaded) => loaded,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "{name}: {err:#}");
            return ExitCode::from(2);
        }
    };
    if settings.amqp_url.is_none() {
        let _ = writeln!(
            std::io::stderr(),
            "{name}: amqp_url is required when the connector runs as its own process (set CRM_CONNECTOR_AMQP_URL)"
        );
        return ExitCode::from(2);
    }
    init_logging(&settings.log_filter, settings.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "{name}: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    // Built inside the runtime: a connector may set up clients that need it.
    let connector = match runtime.block_on(async { build(own) }) {
        Ok(connector) => connector,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "invalid {name} configuration");
            let _ = writeln!(std::io::stderr(), "{name}: invalid configuration: {err:#}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(serve(connector, settings));
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "{name} failed");
            let _ = writeln!(std::io::stderr(), "{name}: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve<C: Connector>(connector: C, settings: ConnectorSettings) -> anyhow::Result<()> {
    let Some(url) = settings.amqp_url.as_ref() else { bail!("amqp_url is required") };
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signals(shutdown.clone()));
    let Some(bus) = connect(url.expose_secret(), &settings, &shutdown).await? else {
        tracing::info!("stopped before the bus was reached");
        return Ok(());
    };
    let context = ConnectorContext { bus, settings: settings.run_settings(), shutdown, close_bus: true };
    run(connector, context).await
}

/// Connects to RabbitMQ, retrying while it is unreachable; `None` when told to stop first.
async fn connect(url: &str, settings: &ConnectorSettings, shutdown: &CancellationToken) -> anyhow::Result<Option<Bus>> {
    let what = format!("connecting to {}", config::redact_url(url));
    retry_while_unreachable(shutdown, &what, || Bus::connect(url, settings.bus_config())).await.context("cannot connect to the bus")
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT; exits at once on the second.
async fn stop_on_signals(shutdown: CancellationToken) {
    let mut signals = 0u32;
    loop {
        let which = wait_for_signal().await;
        signals += 1;
        if signals == 1 {
            tracing::info!(signal = which, "shutting down gracefully");
            shutdown.cancel();
        } else {
            tracing::warn!(signal = which, "second signal: exiting now");
            std::process::exit(130);
        }
    }
}

#[cfg(unix)]
async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        },
        _ => {
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() -> &'static str {
    let _ = tokio::signal::ctrl_c().await;
    "ctrl-c"
}

/// Installs the global log subscriber for `crm` and every connector process: JSON lines unless
/// on a terminal (or as `format` says), each with the fields of all its spans (so a request id
/// set on an outer span is on every line inside it); `RUST_LOG` overrides `filter`.
pub fn init_logging(filter: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result =
        if json { builder.json().flatten_event(true).with_current_span(false).with_span_list(true).try_init() } else { builder.try_init() };
    if let Err(err) = result {
        // Already installed (e.g. by a test harness): keep the existing one.
        tracing::debug!("tracing subscriber already set: {err}");
    }
}

#[derive(Debug, PartialEq)]
enum Args {
    Run { config: Option<PathBuf> },
    Exit(String),
}

fn parse_args<C: Connector>(mut args: impl Iterator<Item = String>) -> anyhow::Result<Args> {
    let mut config = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" | "-c" => config = Some(PathBuf::from(args.next().context("--config needs a file")?)),
            "--help" | "-h" => return Ok(Args::Exit(usage::<C>())),
            "--version" | "-V" => return Ok(Args::Exit(format!("{} {}", C::NAME, C::VERSION))),
            other => match other.strip_prefix("--config=") {
                Some(path) => config = Some(PathBuf::from(path)),
                None => bail!("unexpected argument '{other}'\n\n{}", usage::<C>()),
            },
        }
    }
    Ok(Args::Run { config })
}

fn usage<C: Connector>() -> String {
    let name = C::NAME;
    format!(
        "crm-hub connector {name} {version} ({channel} channel)\n\n\
         Usage: crm-connector-{name} [--config <file.toml>]\n\n\
         Settings come from the TOML file (--config, CRM_CONNECTOR_CONFIG, or ./{name}.toml when present),\n\
         then CRM_CONNECTOR_<KEY> (amqp_url, bus_prefix, instance, prefetch, max_in_flight,\n\
         heartbeat_interval_seconds, shutdown_timeout_seconds, log_format, log_filter), then\n\
         {prefix}<KEY> for the connector's own settings.",
        version = C::VERSION,
        channel = C::CHANNEL.as_str(),
        prefix = config::connector_env_prefix(name),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::{Command, HandlerError, Outcome};
    use crm_bus::message::Channel;

    #[derive(Debug)]
    struct Dummy;

    impl Connector for Dummy {
        type Config = ();
        const NAME: &'static str = "dummy";
        const VERSION: &'static str = "1.2.3";
        const CHANNEL: Channel = Channel::Email;
        fn bindings(&self) -> Vec<String> {
            Vec::new()
        }
        async fn handle(&self, command: Command<'_>) -> Result<Outcome, HandlerError> {
            Err(command.unsupported())
        }
    }

    fn parse(args: &[&str]) -> anyhow::Result<Args> {
        parse_args::<Dummy>(args.iter().map(|a| (*a).to_owned()))
    }

    #[test]
    fn arguments() {
        assert_eq!(parse(&[]).unwrap(), Args::Run { config: None });
        assert_eq!(parse(&["--config", "x.toml"]).unwrap(), Args::Run { config: Some("x.toml".into()) });
        assert_eq!(parse(&["--config=y.toml"]).unwrap(), Args::Run { config: Some("y.toml".into()) });
        assert_eq!(parse(&["--version"]).unwrap(), Args::Exit("dummy 1.2.3".into()));
        assert!(matches!(parse(&["--help"]).unwrap(), Args::Exit(text) if text.contains("CRM_CONNECTOR_DUMMY_<KEY>")));
        assert!(parse(&["--config"]).is_err());
        assert!(parse(&["serve"]).is_err());
    }
}
