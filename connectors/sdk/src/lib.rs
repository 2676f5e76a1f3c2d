//! The crm-hub connector SDK: what makes a connector small.
//!
//! A connector implements [`Connector`]: its name, version and channel, the command routing keys
//! it serves, and a handler that turns one command into an [`Outcome`] (events to publish, a
//! reply) or a [`HandlerError`] (retry later, or dead-letter with the reason). The SDK does the
//! rest, identically in both ways a connector runs:
//!
//! * **as its own process** on RabbitMQ: `fn main() -> ExitCode { crm_connector::main(MyConnector::new) }`
//!   loads the configuration ([`config`]), sets up JSON logs, connects to the bus, and stops
//!   gracefully on SIGTERM / SIGINT;
//! * **as a task inside `crm serve`** on the in-process bus: [`spawn`]`(connector, bus, token)`.
//!
//! The runner ([`run`]) first declares the core's event queue
//! ([`message::core_events`]), so that what the connector publishes waits for the core even on a
//! broker where the core has never run; it then subscribes to its channel's command queue
//! (`connector.<channel>.commands`, shared by every connector of the channel), hands deliveries
//! to the handler concurrently up to a limit, publishes the outcome's events through a [`Publisher`] that retries until the broker confirms
//! (an event is never dropped), answers requests, and only then acknowledges. It sends
//! [`message::Heartbeat`]s at start, every interval and at shutdown, and on shutdown stops taking
//! deliveries, lets in-flight work finish (bounded by a timeout) and requeues the rest.
//!
//! A minimal connector (an SMS gateway) and its process:
//!
//! ```no_run
//! use crm_connector::message::{Channel, DeliveryState, DeliveryStatus, SendMessage};
//! use crm_connector::{Command, Connector, HandlerError, Outcome};
//! use std::process::ExitCode;
//!
//! /// Read from `gateway_url` in the file or `CRM_CONNECTOR_SMS_GATEWAY_URL`.
//! #[derive(Debug, Default, serde::Deserialize)]
//! #[serde(default)]
//! struct SmsConfig {
//!     gateway_url: String,
//! }
//!
//! #[derive(Debug)]
//! struct Sms {
//!     config: SmsConfig,
//! }
//!
//! impl Connector for Sms {
//!     type Config = SmsConfig;
//!     const NAME: &'static str = "sms";
//!     const VERSION: &'static str = env!("CARGO_PKG_VERSION");
//!     const CHANNEL: Channel = Channel::Sms;
//!
//!     fn bindings(&self) -> Vec<String> {
//!         vec!["sms.message.send".into()]
//!     }
//!
//!     async fn handle(&self, command: Command<'_>) -> Result<Outcome, HandlerError> {
//!         let send: SendMessage = command.decode()?; // undecodable: dead-lettered
//!         // Hand it to the gateway at self.config.gateway_url; a timeout would be
//!         // `HandlerError::Transient` (retried with backoff), a refusal `Permanent`.
//!         let status = DeliveryStatus {
//!             channel: Channel::Sms,
//!             entry_id: Some(send.entry_id),
//!             channel_message_id: None,
//!             status: DeliveryState::Sent,
//!             reason: None,
//!             occurred_at: chrono::Utc::now(),
//!         };
//!         Ok(Outcome::event(command.event(&status)))
//!     }
//! }
//!
//! fn main() -> ExitCode {
//!     crm_connector::main(|config| Ok(Sms { config }))
//! }
//! ```
//!
//! Modules:
//! * [`config`]: settings common to every connector plus the connector's own, from a TOML file
//!   and `CRM_CONNECTOR_*` environment variables.
//! * [`connector`]: the [`Connector`] trait and what a handler sees and returns.
//! * [`publisher`]: confirmed, retrying event publishing.
//! * [`runner`]: the lifecycle.
//! * [`process`]: the process entry point, logging and signals.

pub mod config;
pub mod connector;
mod instance;
pub mod process;
pub mod publisher;
pub mod runner;
#[cfg(feature = "testing")]
pub mod testing;

/// The message catalog shared by the core and the connectors (re-exported from `crm-bus`).
pub use crm_bus::message;
pub use crm_bus::{Bus, BusConfig, BusError, Channel, Envelope, Exchange, Message, Trace};
pub use tokio_util::sync::CancellationToken;

pub use config::{ConnectorSettings, LogFormat};
pub use connector::{Command, Connector, HandlerError, Health, Hub, Outcome};
pub use crm_bus::message::command_group;
pub use process::{init_logging, main};
pub use publisher::{Backoff, PublishError, Publisher};
pub use runner::{ConnectorContext, RunSettings, run, spawn, spawn_with};
