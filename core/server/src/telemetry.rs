//! Log output: JSON lines for machines (the default when stderr is not a terminal), readable
//! text on a terminal. `RUST_LOG` overrides the configured filter.

use crate::config::{LogFormat, Settings};
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber.
pub fn init(settings: &Settings) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.log_filter));
    let json = match settings.log_format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result =
        if json { builder.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init() } else { builder.try_init() };
    if let Err(err) = result {
        // Already installed (e.g. by a test harness): keep the existing one.
        tracing::debug!("tracing subscriber already set: {err}");
    }
}
