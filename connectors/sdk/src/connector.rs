//! The [`Connector`] trait and what its handler sees ([`Command`], [`Hub`]) and returns
//! ([`Outcome`], [`HandlerError`]).

use crate::publisher::Publisher;
use chrono::{DateTime, Utc};
use crm_bus::message::{Channel, ConnectorState};
use crm_bus::{Bus, Envelope, Message, Trace};
use serde::de::DeserializeOwned;
use std::future::Future;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// A connector: the code between one outside system and the bus.
///
/// The SDK calls [`Connector::init`] once, then [`Connector::handle`] for every command
/// delivered (concurrently, up to the configured limit), [`Connector::health`] before every
/// heartbeat, and [`Connector::shutdown`] once after the last command finished.
///
/// Handlers must be idempotent: delivery is at-least-once, so a command may come again after a
/// crash or a lost acknowledgement (use the channel's own ids to notice).
pub trait Connector: Send + Sync + Sized + 'static {
    /// The connector's own settings, read by [`crate::main`] from the same file and environment
    /// as the common ones (`CRM_CONNECTOR_<NAME>_*`). Use `#[serde(default)]` for defaults and
    /// [`secrecy::SecretString`] for secrets.
    type Config: DeserializeOwned + Send + 'static;

    /// Name (`email`, `files-local`): names the connector in heartbeats, event sources and its
    /// environment prefix. (Its command queue is its channel's: [`crate::command_group`].)
    const NAME: &'static str;
    /// Version, usually `env!("CARGO_PKG_VERSION")`.
    const VERSION: &'static str;
    /// The channel it serves.
    const CHANNEL: Channel;

    /// The command routing keys to receive (topic patterns: `files.#`, `email.message.send`).
    fn bindings(&self) -> Vec<String>;

    /// Prepares the connector (connects to its outside system, starts an inbound poller with
    /// [`Hub::publisher`] and [`Hub::shutdown`]). An error stops the connector before it takes
    /// any command.
    fn init(&self, hub: &Hub) -> impl Future<Output = anyhow::Result<()>> + Send {
        let _ = hub;
        async { Ok(()) }
    }

    /// How the connector is doing, for the heartbeat.
    fn health(&self) -> impl Future<Output = Health> + Send {
        async { Health::ready() }
    }

    /// Performs one command. Return the events to publish (and, for a request, the reply);
    /// the SDK publishes them, waits for the broker's confirmation and only then acknowledges
    /// the command.
    fn handle(&self, command: Command<'_>) -> impl Future<Output = Result<Outcome, HandlerError>> + Send;

    /// Releases resources; called once, after the last command finished.
    fn shutdown(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// A connector's state and detail for ops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// The state.
    pub state: ConnectorState,
    /// Detail (the last error), if any.
    pub detail: Option<String>,
}

impl Health {
    /// Working.
    pub fn ready() -> Self {
        Health { state: ConnectorState::Ready, detail: None }
    }

    /// Running, but the outside system is unreachable or failing.
    pub fn degraded(detail: impl Into<String>) -> Self {
        Health { state: ConnectorState::Degraded, detail: Some(detail.into()) }
    }
}

/// Why a command could not be performed, which decides what happens to it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// Might work later (the outside system is down, a timeout): redelivered with backoff,
    /// dead-lettered after the bus's maximum attempts.
    #[error("transient: {0}")]
    Transient(String),
    /// Will never work (refused by the outside system for good, an unsupported command):
    /// dead-lettered at once with the reason.
    #[error("permanent: {0}")]
    Permanent(String),
    /// The message itself is bad (does not decode): dead-lettered at once with the reason.
    #[error("malformed: {0}")]
    Malformed(String),
}

impl HandlerError {
    /// A [`HandlerError::Transient`] from any error.
    pub fn transient(err: impl std::fmt::Display) -> Self {
        HandlerError::Transient(err.to_string())
    }

    /// A [`HandlerError::Permanent`] from any error.
    pub fn permanent(err: impl std::fmt::Display) -> Self {
        HandlerError::Permanent(err.to_string())
    }

    /// The reason alone.
    pub fn reason(&self) -> &str {
        match self {
            HandlerError::Transient(r) | HandlerError::Permanent(r) | HandlerError::Malformed(r) => r,
        }
    }
}

/// What a handled command produced.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Events to publish (confirmed) before the command is acknowledged.
    pub events: Vec<Envelope>,
    /// The reply to a request (`Command::is_request`); published as an event when the delivery is
    /// not a request.
    pub reply: Option<Envelope>,
}

impl Outcome {
    /// Nothing to publish.
    pub fn done() -> Self {
        Outcome::default()
    }

    /// One event to publish.
    pub fn event(event: Envelope) -> Self {
        Outcome { events: vec![event], reply: None }
    }

    /// The answer to a request.
    pub fn reply(reply: Envelope) -> Self {
        Outcome { events: Vec::new(), reply: Some(reply) }
    }

    /// Adds an event.
    pub fn and_event(mut self, event: Envelope) -> Self {
        self.events.push(event);
        self
    }
}

/// One delivered command, as the handler sees it.
#[derive(Debug, Clone, Copy)]
pub struct Command<'a> {
    pub(crate) envelope: &'a Envelope,
    pub(crate) attempt: u32,
    pub(crate) redelivered: bool,
    pub(crate) request: bool,
    pub(crate) hub: &'a Hub,
}

impl<'a> Command<'a> {
    /// A command for `envelope` (the runner builds these; tests of a handler may too).
    pub fn new(envelope: &'a Envelope, hub: &'a Hub, attempt: u32, redelivered: bool, request: bool) -> Self {
        Command { envelope, attempt, redelivered, request, hub }
    }

    /// The envelope.
    pub fn envelope(&self) -> &'a Envelope {
        self.envelope
    }

    /// Its CloudEvents type (`crm.files.file.store.v1`).
    pub fn kind(&self) -> &'a str {
        &self.envelope.kind
    }

    /// Whether it is a `M`.
    pub fn is<M: Message>(&self) -> bool {
        self.envelope.kind == M::TYPE
    }

    /// The data as `M`; data that does not decode is [`HandlerError::Malformed`].
    pub fn decode<M: Message>(&self) -> Result<M, HandlerError> {
        self.envelope.decode::<M>().map_err(|e| HandlerError::Malformed(e.to_string()))
    }

    /// Which delivery this is (1 for the first).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Whether it was delivered before (the broker's flag).
    pub fn redelivered(&self) -> bool {
        self.redelivered
    }

    /// Whether the sender waits for a reply ([`Outcome::reply`]).
    pub fn is_request(&self) -> bool {
        self.request
    }

    /// The connector's link to the hub.
    pub fn hub(&self) -> &'a Hub {
        self.hub
    }

    /// An event (or reply) caused by this command: published by this instance, carrying the
    /// command's request id and trace.
    pub fn event<M: Message>(&self, message: &M) -> Envelope {
        Envelope::new(self.hub.source(), message, Trace::follow(self.envelope))
    }

    /// The error for a command type this connector does not handle.
    pub fn unsupported(&self) -> HandlerError {
        HandlerError::Permanent(format!("{} does not handle {} ({})", self.hub.name(), self.envelope.kind, self.envelope.routing_key))
    }
}

/// The connector's link to the hub: who it is, the bus, the publisher and the shutdown signal.
/// Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

struct HubInner {
    name: &'static str,
    version: &'static str,
    channel: Channel,
    instance: String,
    source: String,
    started_at: DateTime<Utc>,
    bus: Bus,
    publisher: Publisher,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("name", &self.inner.name)
            .field("version", &self.inner.version)
            .field("channel", &self.inner.channel)
            .field("instance", &self.inner.instance)
            .field("started_at", &self.inner.started_at)
            .field("transport", &self.inner.bus.transport())
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// The hub of instance `instance` of connector `C` (the runner builds this).
    pub fn new<C: Connector>(instance: String, bus: Bus, publisher: Publisher, shutdown: CancellationToken) -> Self {
        let source = format!("/connectors/{}/{instance}", C::NAME);
        Hub {
            inner: Arc::new(HubInner {
                name: C::NAME,
                version: C::VERSION,
                channel: C::CHANNEL,
                instance,
                source,
                started_at: Utc::now(),
                bus,
                publisher,
                shutdown,
            }),
        }
    }

    /// The connector's name.
    pub fn name(&self) -> &'static str {
        self.inner.name
    }

    /// The connector's version.
    pub fn version(&self) -> &'static str {
        self.inner.version
    }

    /// The channel it serves.
    pub fn channel(&self) -> Channel {
        self.inner.channel
    }

    /// This instance (`<hostname>-<pid>` unless configured).
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    /// The CloudEvents source of what this instance publishes: `/connectors/<name>/<instance>`.
    pub fn source(&self) -> &str {
        &self.inner.source
    }

    /// When this instance started.
    pub fn started_at(&self) -> DateTime<Utc> {
        self.inner.started_at
    }

    /// The bus.
    pub fn bus(&self) -> &Bus {
        &self.inner.bus
    }

    /// Publishes events, retrying until the broker confirms.
    pub fn publisher(&self) -> &Publisher {
        &self.inner.publisher
    }

    /// Fires when graceful shutdown begins: inbound pollers stop taking new outside work.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// An event published by this instance, for inbound events not caused by a command (use
    /// [`Command::event`] for those that are).
    pub fn event<M: Message>(&self, message: &M, trace: Trace) -> Envelope {
        Envelope::new(self.source(), message, trace)
    }
}
