//! The message bus between the core and the channel connectors.
//!
//! * [`envelope`]: the CloudEvents envelope, with the trace that follows a request across the bus.
//! * [`message`]: the catalog of events and commands, shared by the core and the connectors.
//! * [`asyncapi`]: the AsyncAPI 3 document of every channel and message, generated from the
//!   catalog and committed as `docs/asyncapi.json`.
//! * [`Bus`]: one handle over two transports with the same semantics: RabbitMQ (via `lapin`) in
//!   production and an in-process bus as the embedded default. Both give at-least-once delivery,
//!   acknowledgement after processing, retry with backoff, dead-lettering with a reason and a
//!   bounded number of unacknowledged deliveries per subscriber (prefetch).
//!
//! Topology (names carry the configured prefix, `crm` by default): topic exchanges
//! `crm.events` and `crm.commands`; one durable queue per consumer group `crm.<group>` bound
//! with topic patterns; dead letters go to `crm.dead` and wait in `crm.dead-letters` with the
//! group, the reason and the attempt count, until the core files them for ops.
//! `docs/ARCHITECTURE.md` ("Bus") describes the design.

mod amqp;
pub mod asyncapi;
mod bus;
mod config;
mod delivery;
pub mod envelope;
mod error;
mod in_process;
pub mod message;
mod subscription;
mod telemetry;
mod topic;
mod topology;

/// Runs its closure when dropped: clean-up that must happen however a future ends, cancelled
/// (dropped) included.
pub(crate) struct OnDrop<F: FnMut()>(pub(crate) F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

pub use amqp::AmqpBus;
pub use bus::Bus;
pub use config::{BusConfig, DEFAULT_MAX_MESSAGE_BYTES, RetryPolicy, redact_url};
pub use delivery::{DeadInfo, Delivery, panic_reason};
pub use envelope::{DecodeError, Envelope, Trace};
pub use error::BusError;
pub use in_process::InProcessBus;
pub use message::{Channel, Exchange, Message};
pub use subscription::{QueueStats, Subscriber, Subscription};
pub use topology::DEAD_LETTER_GROUP;
