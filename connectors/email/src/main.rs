//! `crm-connector-email`: the email connector as its own process on RabbitMQ. Settings come from
//! the TOML file (`--config`, `CRM_CONNECTOR_CONFIG` or `./email.toml`) and
//! `CRM_CONNECTOR_EMAIL_<KEY>` (see `--help` and the README).

use crm_connector_email::Email;
use std::process::ExitCode;

fn main() -> ExitCode {
    crm_connector::main(Email::new)
}
