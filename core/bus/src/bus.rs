//! [`Bus`]: the one handle the core and the connectors use, over either transport.

use crate::config::BusConfig;
use crate::delivery::Delivery;
use crate::envelope::Envelope;
use crate::subscription::{QueueStats, Subscriber, Subscription};
use crate::{AmqpBus, BusError, InProcessBus};
use std::time::Duration;

/// The longest envelope id: an AMQP `message-id` is a short string.
const MAX_ID_BYTES: usize = 255;

/// A handle to the bus; cheap to clone, all clones share one connection (or one in-process
/// broker).
#[derive(Debug, Clone)]
pub enum Bus {
    /// The in-process bus: messages live in this process's memory (and its journal).
    InProcess(InProcessBus),
    /// RabbitMQ through `lapin`.
    Amqp(AmqpBus),
}

impl Bus {
    /// A fresh in-process bus whose messages live in memory only (tests, benchmarks, tools).
    /// Panics on a prefix that cannot be a queue name (a configuration error caught at start).
    pub fn in_process(config: BusConfig) -> Bus {
        Bus::InProcess(InProcessBus::new(config))
    }

    /// An in-process bus that keeps its messages in a journal at `journal` as well, so a restart
    /// loses none: it starts with every message the journal holds back in its queue (marked
    /// redelivered), and a publish returns once the message is on disk. Fails when the journal
    /// cannot be opened or another process has it. Panics like [`Bus::in_process`].
    pub fn in_process_durable(config: BusConfig, journal: &std::path::Path) -> Result<Bus, BusError> {
        Ok(Bus::InProcess(InProcessBus::durable(config, journal)?))
    }

    /// Connects to RabbitMQ at `amqp_url` and declares the topology (exchanges and the
    /// dead-letter queue). The URL's password never appears in logs or errors. Afterwards the bus
    /// reconnects by itself when the connection drops.
    pub async fn connect(amqp_url: &str, config: BusConfig) -> Result<Bus, BusError> {
        Ok(Bus::Amqp(AmqpBus::connect(amqp_url, config).await?))
    }

    /// `in-process` or `rabbitmq`.
    pub fn transport(&self) -> &'static str {
        match self {
            Bus::InProcess(_) => crate::in_process::TRANSPORT,
            Bus::Amqp(_) => crate::amqp::TRANSPORT,
        }
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &BusConfig {
        match self {
            Bus::InProcess(bus) => bus.config(),
            Bus::Amqp(bus) => bus.config(),
        }
    }

    /// Publishes to the envelope's exchange with its routing key; returns once the broker has
    /// confirmed it. An event no group binds is dropped (nobody asked for it); a command no group
    /// binds is [`BusError::Rejected`]; a message larger than [`BusConfig::max_message_bytes`]
    /// is [`BusError::Invalid`] (so are oversized requests, replies and replays).
    pub async fn publish(&self, envelope: &Envelope) -> Result<(), BusError> {
        self.check_publishable(envelope)?;
        match self {
            Bus::InProcess(bus) => bus.publish(envelope).await,
            Bus::Amqp(bus) => bus.publish(envelope).await,
        }
    }

    /// Publishes all, then waits for all the confirms; one outcome per envelope, in order: `Ok`
    /// only for a message the broker confirmed (and, for a command, routed to a queue). Use it
    /// when each message's fate matters (the outbox relay marks each row by it). Order is kept
    /// among the batch's commands and among its events.
    pub async fn publish_each(&self, envelopes: &[Envelope]) -> Vec<Result<(), BusError>> {
        let sizes: Vec<Result<(), BusError>> = envelopes.iter().map(|envelope| self.check_publishable(envelope)).collect();
        if sizes.iter().all(Result::is_ok) {
            return self.publish_checked(envelopes).await;
        }
        let fitting: Vec<Envelope> = envelopes.iter().zip(&sizes).filter(|(_, size)| size.is_ok()).map(|(e, _)| e.clone()).collect();
        let mut published = self.publish_checked(&fitting).await.into_iter();
        sizes
            .into_iter()
            .map(|size| size.and_then(|()| published.next().unwrap_or_else(|| Err(BusError::Unavailable("not published".into())))))
            .collect()
    }

    async fn publish_checked(&self, envelopes: &[Envelope]) -> Vec<Result<(), BusError>> {
        match self {
            Bus::InProcess(bus) => bus.publish_each(envelopes).await,
            Bus::Amqp(bus) => bus.publish_each(envelopes).await,
        }
    }

    /// Refuses, on either transport, a message RabbitMQ cannot take: data larger than
    /// [`BusConfig::max_message_bytes`] (the broker would close the channel on it, and every
    /// retry would fail the same way), or an id longer than an AMQP `message-id` (255 bytes).
    fn check_publishable(&self, envelope: &Envelope) -> Result<(), BusError> {
        let (size, max) = (envelope.data.len(), self.config().max_message_bytes);
        if size > max {
            return Err(BusError::Invalid(format!("a message of {size} bytes is larger than the bus takes ({max} bytes)")));
        }
        if envelope.id.len() > MAX_ID_BYTES {
            return Err(BusError::Invalid(format!("a message id of {} bytes is longer than {MAX_ID_BYTES}", envelope.id.len())));
        }
        Ok(())
    }

    /// [`Bus::publish_each`], reduced to its first error (returned after every confirm has been
    /// awaited; the other messages were published).
    pub async fn publish_all(&self, envelopes: &[Envelope]) -> Result<(), BusError> {
        self.publish_each(envelopes).await.into_iter().find_map(Result::err).map_or(Ok(()), Err)
    }

    /// Declares the group's queue and bindings (adding bindings, never removing any) and
    /// consumes from it.
    pub async fn subscribe(&self, subscription: Subscription) -> Result<Subscriber, BusError> {
        match self {
            Bus::InProcess(bus) => bus.subscribe(subscription),
            Bus::Amqp(bus) => bus.subscribe(subscription).await,
        }
    }

    /// Declares the group's queue and bindings without consuming, so messages for it wait until
    /// a subscriber comes (the core declares the command queues of the connectors it knows at
    /// start, so a command to a connector that is not running yet is parked, not refused).
    pub async fn declare(&self, subscription: &Subscription) -> Result<(), BusError> {
        match self {
            Bus::InProcess(bus) => bus.declare(subscription),
            Bus::Amqp(bus) => bus.declare(subscription).await,
        }
    }

    /// Publishes a command and waits up to `timeout` for the one reply
    /// ([`Bus::reply`]). A command no group binds is [`BusError::Rejected`] at once.
    pub async fn request(&self, envelope: &Envelope, timeout: Duration) -> Result<Envelope, BusError> {
        self.check_publishable(envelope)?;
        match self {
            Bus::InProcess(bus) => bus.request(envelope, timeout).await,
            Bus::Amqp(bus) => bus.request(envelope, timeout).await,
        }
    }

    /// Answers a request delivery ([`Delivery::is_request`]). A requester that has gone away
    /// (timed out) is not an error: the reply is dropped.
    pub async fn reply(&self, to: &Delivery, reply: &Envelope) -> Result<(), BusError> {
        let (Some(reply_to), correlation_id) = (to.reply_to.as_deref(), to.correlation_id.as_deref()) else {
            return Err(BusError::Invalid(format!("delivery {} is not a request", to.envelope.id)));
        };
        self.check_publishable(reply)?;
        match self {
            Bus::InProcess(bus) => bus.reply(reply_to, reply),
            Bus::Amqp(bus) => bus.reply(reply_to, correlation_id, reply).await,
        }
    }

    /// Consumes the dead-letter queue; its deliveries carry [`Delivery::dead`]. Ack one once it
    /// is filed (or [`Bus::replay`] it, then ack).
    pub async fn dead_letters(&self) -> Result<Subscriber, BusError> {
        match self {
            Bus::InProcess(bus) => bus.dead_letters(),
            Bus::Amqp(bus) => bus.dead_letters().await,
        }
    }

    /// Puts `envelope` straight into `group`'s queue as a first attempt (the default exchange on
    /// RabbitMQ), confirmed. [`BusError::Invalid`] when the group has no queue.
    pub async fn replay(&self, group: &str, envelope: &Envelope) -> Result<(), BusError> {
        self.check_publishable(envelope)?;
        match self {
            Bus::InProcess(bus) => bus.replay(group, envelope).await,
            Bus::Amqp(bus) => bus.replay(group, envelope).await,
        }
    }

    /// The queues this bus declared or subscribed to (the group queues and the dead-letter
    /// queue), by name.
    pub async fn queue_stats(&self) -> Result<Vec<QueueStats>, BusError> {
        match self {
            Bus::InProcess(bus) => Ok(bus.queue_stats()),
            Bus::Amqp(bus) => bus.queue_stats().await,
        }
    }

    /// Whether the bus can publish now (RabbitMQ: connected).
    pub async fn is_ready(&self) -> bool {
        match self {
            Bus::InProcess(bus) => bus.is_ready(),
            Bus::Amqp(bus) => bus.is_ready(),
        }
    }

    /// Whether [`Bus::close`] was called.
    pub fn is_closed(&self) -> bool {
        match self {
            Bus::InProcess(bus) => !bus.is_ready(),
            Bus::Amqp(bus) => bus.is_closed(),
        }
    }

    /// Closes the bus: subscribers return `None` once drained, publishing fails with
    /// [`BusError::Closed`].
    pub async fn close(&self) {
        match self {
            Bus::InProcess(bus) => bus.close().await,
            Bus::Amqp(bus) => bus.close().await,
        }
    }

    /// Deletes every exchange and queue of this bus's prefix that it knows of (declared or
    /// subscribed, retry queues included). For tests and tear-down only: messages in them are
    /// lost.
    pub async fn delete_topology(&self) -> Result<(), BusError> {
        match self {
            Bus::InProcess(bus) => {
                bus.delete_topology();
                Ok(())
            }
            Bus::Amqp(bus) => bus.delete_topology().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send_sync<T: Send + Sync>() {}

    #[test]
    fn handles_cross_tasks() {
        send_sync::<Bus>();
        send_sync::<Delivery>();
        send_sync::<Subscriber>();
        send_sync::<BusError>();
    }

    #[tokio::test]
    async fn in_process_bus_reports_itself() {
        let bus = Bus::in_process(BusConfig::default());
        assert_eq!(bus.transport(), "in-process");
        assert!(bus.is_ready().await);
        assert_eq!(bus.config().prefix, "crm");
        bus.close().await;
        assert!(bus.is_closed());
        assert!(!bus.is_ready().await);
    }

    /// Closing the in-process bus ends its subscribers at once, as on RabbitMQ: a delivery still
    /// buffered was dropped with the bus's memory and could not be settled.
    #[tokio::test]
    async fn a_closed_in_process_bus_hands_out_nothing_more() {
        let bus = Bus::in_process(BusConfig::default());
        let mut subscriber = bus.subscribe(Subscription::new("closing", crate::Exchange::Events, &["#"]).with_prefetch(10)).await.unwrap();
        let envelopes: Vec<Envelope> = (0..3)
            .map(|i| {
                let mut envelope = Envelope::new(
                    "/test",
                    &crate::message::FileContent { path: format!("{i}"), result: crate::message::FileRead::NotFound },
                    crate::Trace::default(),
                );
                envelope.exchange = crate::Exchange::Events;
                envelope.routing_key = "test.close".into();
                envelope
            })
            .collect();
        bus.publish_all(&envelopes).await.unwrap();
        let first = subscriber.next().await.expect("a delivery");
        bus.close().await;
        assert!(subscriber.next().await.is_none(), "nothing after close");
        assert!(first.ack().await.is_err(), "a delivery of a closed bus cannot be settled");
    }

    /// An id too long for an AMQP `message-id` is refused in-process too, so that what works on
    /// one transport works on the other.
    #[tokio::test]
    async fn ids_longer_than_amqp_takes_are_refused_on_both_transports() {
        let bus = Bus::in_process(BusConfig::default());
        let _subscriber = bus.subscribe(Subscription::new("ids", crate::Exchange::Events, &["#"])).await.unwrap();
        let mut envelope = Envelope::new(
            "/test",
            &crate::message::FileContent { path: "x".into(), result: crate::message::FileRead::NotFound },
            crate::Trace::default(),
        );
        envelope.exchange = crate::Exchange::Events;
        envelope.routing_key = "test.id".into();
        envelope.id = "i".repeat(255);
        bus.publish(&envelope).await.expect("255 bytes fit");
        envelope.id = "i".repeat(256);
        assert!(matches!(bus.publish(&envelope).await, Err(BusError::Invalid(why)) if why.contains("256 bytes")));
        bus.close().await;
    }

    /// A message over the limit is refused on its own; the others of its batch go out in order.
    #[tokio::test]
    async fn oversized_messages_are_refused_alone() {
        let bus = Bus::in_process(BusConfig { max_message_bytes: 100, ..BusConfig::default() });
        let mut subscriber = bus.subscribe(Subscription::new("sizes", crate::Exchange::Events, &["#"])).await.unwrap();
        let envelope = |size: usize| {
            let mut envelope = Envelope::new(
                "/test",
                &crate::message::FileContent { path: "x".repeat(size), result: crate::message::FileRead::NotFound },
                crate::Trace::default(),
            );
            envelope.exchange = crate::Exchange::Events;
            envelope.routing_key = "test.size".into();
            envelope
        };
        let (small, large, last) = (envelope(10), envelope(200), envelope(20));
        assert!(large.data.len() > 100 && small.data.len() <= 100);
        let outcomes = bus.publish_each(&[small.clone(), large.clone(), last.clone()]).await;
        assert!(outcomes[0].is_ok() && outcomes[2].is_ok(), "{outcomes:?}");
        assert!(
            matches!(&outcomes[1], Err(BusError::Invalid(why)) if why.contains("larger than the bus takes (100 bytes)")),
            "{outcomes:?}"
        );
        assert!(matches!(bus.publish(&large).await, Err(BusError::Invalid(_))));
        for expected in [&small, &last] {
            let delivery = subscriber.next().await.unwrap();
            assert_eq!(&delivery.envelope.id, &expected.id);
            delivery.ack().await.unwrap();
        }
        assert_eq!(bus.queue_stats().await.unwrap().iter().find(|q| q.group == "sizes").map(|q| q.messages), Some(0));
        bus.close().await;
    }
}
