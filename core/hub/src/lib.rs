//! The core's side of the bus. [`Hub::start`] runs four tasks beside the HTTP API:
//!
//! * **ingest** (`ingest`): consumes connector events (messages received, calls, delivery
//!   reports, file-store results, heartbeats) into the communications log, matching senders to
//!   customers with a [`Matcher`] (the built-in rules or the active matcher plugin);
//! * **relay** (`relay`): publishes the transactional outbox with publisher confirms;
//! * **keeper** (`keeper`): files dead letters for ops;
//! * **janitor** (`janitor`): deletes what the store keeps only for a while ([`Retention`]).
//!
//! It also declares the command queue of every channel at start, so commands for a connector
//! that is not running yet wait in its queue instead of being dropped.

mod ingest;
mod janitor;
mod keeper;
mod matcher;
mod relay;

pub use crm_domain::matching::{Matcher, NativeMatcher};
pub use ingest::MAX_REFERENCES as INGEST_MAX_REFERENCES;
pub use janitor::Retention;

use crm_bus::message::{Channel, command_group};
use crm_bus::{Bus, BusError, Exchange, Subscription};
use crm_domain::contact::Region;
use crm_store::Store;
use std::sync::Arc;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How the hub runs.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// CloudEvents source of what the core publishes (`/crm/core/<instance>`).
    pub source: String,
    /// Region for phone numbers without a country code.
    pub region: Region,
    /// Deliveries taken and committed together.
    pub batch_size: u16,
    /// Ingest workers, each a consumer of the events queue with a batch in hand while the next
    /// is delivered (more than one keeps the database busy while the broker delivers).
    pub workers: u16,
    /// Outbox messages published together.
    pub relay_batch: u32,
    /// The largest attachment the core forwards to the file store, in bytes.
    pub attachment_cap: u64,
    /// The least confidence that assigns a message to a customer; below it, the message goes
    /// to the unmatched inbox.
    pub min_confidence: u8,
    /// The channels whose command queues the hub declares at start, so that commands for a
    /// connector not running yet wait for it. On RabbitMQ every channel (connectors come and
    /// go as their own processes); on the in-process bus only those of the connectors embedded
    /// in the server: a command for another channel is then refused (the outbox shows it failing)
    /// instead of waiting in memory for a connector that cannot come.
    pub command_channels: Vec<Channel>,
    /// How long published commands, idempotency keys and silent connector instances are kept.
    pub retention: Retention,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            source: "/crm/core".into(),
            region: Region::GR,
            batch_size: 500,
            workers: 3,
            relay_batch: 500,
            attachment_cap: 25 * 1024 * 1024,
            min_confidence: 50,
            command_channels: vec![Channel::Email, Channel::Whatsapp, Channel::Sms, Channel::Files],
            retention: Retention::default(),
        }
    }
}

/// The running hub.
#[derive(Debug)]
pub struct Hub {
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
}

impl Hub {
    /// Declares the queues and starts ingest, the relay, the dead-letter keeper and the janitor. The relay
    /// also wakes when `relay_wakeup` is notified (the API does after writing to the outbox).
    pub async fn start(
        store: Store,
        bus: Bus,
        matcher: Arc<dyn Matcher>,
        config: HubConfig,
        relay_wakeup: Arc<Notify>,
    ) -> Result<Hub, BusError> {
        for &channel in &config.command_channels {
            let binding = format!("{}.#", channel.as_str());
            bus.declare(&Subscription::new(command_group(channel), Exchange::Commands, &[&binding])).await?;
        }
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let ingest = ingest::Ingest { store: store.clone(), matcher, config: config.clone(), relay: relay_wakeup.clone() };
        for _ in 0..config.workers.max(1) {
            let events = ingest::Ingest::subscribe(&bus, &config).await?;
            tasks.spawn(ingest.clone().run(events, shutdown.clone()));
        }
        let dead = bus.dead_letters().await?;
        let relay = relay::Relay { store: store.clone(), bus: bus.clone(), wakeup: relay_wakeup, batch: config.relay_batch };
        tasks.spawn(relay.run(shutdown.clone()));
        tasks.spawn(keeper::run(store.clone(), dead, shutdown.clone()));
        tasks.spawn(janitor::run(store, config.retention.clone(), shutdown.clone()));
        tracing::info!(transport = bus.transport(), "hub started");
        Ok(Hub { shutdown, tasks })
    }

    /// Stops taking work, finishes what is in hand and waits for the tasks.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}
