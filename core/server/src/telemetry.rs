//! Log output, as every connector process writes it (`crm_connector::init_logging`): JSON lines
//! for machines (the default when stderr is not a terminal), readable text on a terminal.
//! `RUST_LOG` overrides the configured filter.

use crate::config::Settings;

/// Installs the global subscriber.
pub fn init(settings: &Settings) {
    crm_connector::init_logging(&settings.log_filter, settings.log_format);
}
