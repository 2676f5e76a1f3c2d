//! Subscribing: what a consumer group binds ([`Subscription`]), the stream of deliveries it gets
//! ([`Subscriber`]) and the queue figures ops look at ([`QueueStats`]).

use crate::delivery::Delivery;
use crate::message::Exchange;
use crate::{BusError, amqp, in_process};
use serde::Serialize;

/// A consumer group's queue and what it binds. Every subscriber of the same group shares the
/// group's one queue (competing consumers); different groups each get every matching message.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// The consumer group (`core.events`, `connector.files.commands`); its queue is
    /// `<prefix>.<group>`.
    pub group: String,
    /// The exchange the bindings are on.
    pub exchange: Exchange,
    /// Topic patterns (`email.#`, `*.message.received`).
    pub bindings: Vec<String>,
    /// Deliveries this subscriber may hold unacknowledged at once (0 = unlimited).
    pub prefetch: u16,
}

impl Subscription {
    /// A subscription with a prefetch of 100.
    pub fn new(group: impl Into<String>, exchange: Exchange, bindings: &[&str]) -> Self {
        Self { group: group.into(), exchange, bindings: bindings.iter().map(|b| (*b).to_owned()).collect(), prefetch: 100 }
    }

    /// The same with another prefetch.
    pub fn with_prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = prefetch;
        self
    }
}

/// How full a queue is.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct QueueStats {
    /// The queue's name (`crm.core.events`).
    pub queue: String,
    /// Its consumer group (`dead-letters` for the dead-letter queue).
    pub group: String,
    /// Messages ready for delivery (not counting those delivered and not yet acknowledged).
    pub messages: u64,
    /// Subscribers consuming from it.
    pub consumers: u32,
}

/// The deliveries of one subscription. Dropping it gives every delivery it holds
/// unacknowledged back to the queue (redelivered with `redelivered = true`).
#[derive(Debug)]
pub struct Subscriber {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    InProcess(in_process::Subscriber),
    Amqp(Box<amqp::Subscriber>),
}

impl Subscriber {
    pub(crate) fn in_process(inner: in_process::Subscriber) -> Self {
        Self { inner: Inner::InProcess(inner) }
    }

    pub(crate) fn amqp(inner: amqp::Subscriber) -> Self {
        Self { inner: Inner::Amqp(Box::new(inner)) }
    }

    /// The next delivery; waits for one. `None` only once the bus is closed. On RabbitMQ it
    /// rides out connection losses: it consumes again once the bus has reconnected.
    pub async fn next(&mut self) -> Option<Delivery> {
        match &mut self.inner {
            Inner::InProcess(s) => s.next().await,
            Inner::Amqp(s) => s.next().await,
        }
    }

    /// Waits for at least one delivery, then takes those already at hand, up to `max` in all,
    /// without waiting. Empty only once the bus is closed (or when `max` is 0).
    pub async fn next_batch(&mut self, max: usize) -> Vec<Delivery> {
        if max == 0 {
            return Vec::new();
        }
        let Some(first) = self.next().await else { return Vec::new() };
        let mut batch = Vec::with_capacity(max.min(1024));
        batch.push(first);
        while batch.len() < max {
            let more = match &mut self.inner {
                Inner::InProcess(s) => s.try_next(),
                Inner::Amqp(s) => s.try_next().await,
            };
            match more {
                Some(delivery) => batch.push(delivery),
                None => break,
            }
        }
        batch
    }

    /// Acknowledges a batch: on RabbitMQ with one `multiple` ack when the batch is exactly the
    /// oldest deliveries this subscriber holds, otherwise one by one.
    pub async fn ack_all(&self, deliveries: Vec<Delivery>) -> Result<(), BusError> {
        if deliveries.is_empty() {
            return Ok(());
        }
        match &self.inner {
            Inner::InProcess(_) => in_process::ack_all(deliveries),
            Inner::Amqp(s) => s.ack_all(deliveries).await,
        }
    }

    /// The consumer group.
    pub fn group(&self) -> &str {
        match &self.inner {
            Inner::InProcess(s) => s.group(),
            Inner::Amqp(s) => s.group(),
        }
    }
}
