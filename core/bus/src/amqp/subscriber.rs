//! An AMQP subscriber: one channel with `basic_qos(prefetch)` consuming the group's queue with
//! manual acks. When its channel or the connection ends it consumes again on the next live
//! connection (re-declaring its queue and bindings), so `next` rides out broker restarts. A
//! delivery whose headers do not form an envelope is dead-lettered here, with the reason.

use super::link::{self, Link};
use super::mapping::{self, Decoded};
use super::publish::{self, Publish};
use super::settle::ack_options;
use super::{Shared, TRANSPORT, Token};
use crate::BusError;
use crate::delivery::{Delivery, Settle};
use crate::subscription::Subscription;
use crate::telemetry;
use futures::{FutureExt as _, StreamExt as _};
use lapin::options::{BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A consumer channel and the delivery tags received on it and not yet settled.
#[derive(Debug)]
pub(crate) struct ChannelHold {
    pub(super) channel: Channel,
    outstanding: Ledger,
    /// Set when the subscriber is dropped: its deliveries go back to the queue, so settling one
    /// afterwards fails at once rather than racing the channel's closing.
    abandoned: AtomicBool,
}

impl ChannelHold {
    /// Whether deliveries of this channel can still be settled (checked before a retry or a dead
    /// letter publishes its copy, so a delivery the broker will redeliver is not also copied).
    pub(super) fn check(&self) -> Result<(), BusError> {
        if self.abandoned.load(Ordering::SeqCst) {
            return Err(BusError::Unavailable("the subscriber of this delivery was dropped; the broker redelivers it".into()));
        }
        if !self.channel.status().connected() {
            return Err(BusError::Unavailable("the channel of this delivery is closed; the broker redelivers it".into()));
        }
        Ok(())
    }

    pub(super) async fn ack(&self, tag: u64) -> Result<(), BusError> {
        self.check()?;
        self.outstanding.settle_one(tag, || self.channel.basic_ack(tag, ack_options(false))).await.map_err(channel_gone)
    }

    pub(super) async fn nack_requeue(&self, tag: u64) -> Result<(), BusError> {
        self.check()?;
        self.outstanding
            .settle_one(tag, || self.channel.basic_nack(tag, BasicNackOptions { multiple: false, requeue: true }))
            .await
            .map_err(channel_gone)
    }
}

/// The delivery tags of a channel received and not yet settled (in tag order, which is arrival
/// order), so a batch ack can tell whether one `multiple` ack covers exactly it. A tag is taken
/// out under the same lock that sends its settling frame: a `multiple` ack worked out by another
/// task can then never cover a delivery whose own ack or nack has not gone out yet (which would
/// ack a message being requeued, and make the late nack a channel error).
#[derive(Debug, Default)]
pub(super) struct Ledger {
    tags: tokio::sync::Mutex<BTreeSet<u64>>,
}

impl Ledger {
    pub(super) async fn insert(&self, tag: u64) {
        self.tags.lock().await.insert(tag);
    }

    /// Takes `tag` out and sends its frame with `send`, under the lock.
    pub(super) async fn settle_one<F, Fut, T>(&self, tag: u64, send: F) -> T
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        let mut tags = self.tags.lock().await;
        tags.remove(&tag);
        send().await
    }

    /// When `batch` (sorted) is exactly the oldest unsettled tags, takes them out and sends their
    /// `multiple` frame with `send`, under the lock: `Some` of what it returned; `None` otherwise
    /// (nothing taken).
    pub(super) async fn settle_oldest<F, Fut, T>(&self, batch: &[u64], send: F) -> Option<T>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        let mut tags = self.tags.lock().await;
        if tags.len() < batch.len() || !tags.iter().zip(batch).all(|(a, b)| a == b) {
            return None;
        }
        for tag in batch {
            tags.remove(tag);
        }
        Some(send().await)
    }
}

fn channel_gone(err: lapin::Error) -> BusError {
    BusError::Unavailable(format!("the channel of this delivery is closed ({err}); the broker redelivers it"))
}

#[derive(Debug)]
struct Consumption {
    hold: Arc<ChannelHold>,
    consumer: Consumer,
}

/// The AMQP side of [`crate::Subscriber`].
#[derive(Debug)]
pub(crate) struct Subscriber {
    shared: Arc<Shared>,
    queue: String,
    /// `None` for the dead-letter queue.
    subscription: Option<Subscription>,
    group: String,
    prefetch: u16,
    current: Option<Consumption>,
    failures: u32,
}

impl Subscriber {
    pub(super) async fn start(
        shared: Arc<Shared>,
        queue: String,
        subscription: Option<Subscription>,
        group: String,
        prefetch: u16,
    ) -> Result<Self, BusError> {
        let mut subscriber = Self { shared, queue, subscription, group, prefetch, current: None, failures: 0 };
        let link = subscriber.shared.live()?;
        subscriber.current = Some(subscriber.consume_on(&link).await?);
        Ok(subscriber)
    }

    pub(crate) fn group(&self) -> &str {
        &self.group
    }

    async fn consume_on(&self, link: &Link) -> Result<Consumption, BusError> {
        let channel = link.connection.create_channel().await?;
        channel.basic_qos(self.prefetch, BasicQosOptions::default()).await?;
        if let Some(subscription) = &self.subscription {
            link::declare_group_queue(&channel, &self.shared.names, &self.queue, &subscription.group).await?;
            for pattern in &subscription.bindings {
                link::bind(&channel, &self.shared.names, &self.queue, subscription.exchange, pattern).await?;
            }
        }
        let consumer =
            channel.basic_consume(mapping::short(&self.queue)?, "".into(), BasicConsumeOptions::default(), FieldTable::default()).await?;
        Ok(Consumption {
            hold: Arc::new(ChannelHold { channel, outstanding: Ledger::default(), abandoned: AtomicBool::new(false) }),
            consumer,
        })
    }

    /// Consumes again after the channel or connection ended: waits for a live connection.
    async fn resubscribe(&mut self) -> Result<(), BusError> {
        if self.failures > 0 {
            let exponent = (self.failures - 1).min(6);
            tokio::time::sleep((Duration::from_millis(100) * 2u32.pow(exponent)).min(Duration::from_secs(5))).await;
        }
        let link = self.shared.wait_live().await?;
        match self.consume_on(&link).await {
            Ok(consumption) => {
                tracing::info!(queue = %self.queue, generation = link.generation, "subscriber consuming again");
                self.current = Some(consumption);
                self.failures = 0;
            }
            Err(err) => {
                tracing::warn!(queue = %self.queue, error = %err, "subscriber could not consume yet");
                self.failures += 1;
            }
        }
        Ok(())
    }

    fn lost(&mut self, why: &str) {
        tracing::debug!(queue = %self.queue, why, "subscriber's channel ended");
        self.current = None;
        self.failures += 1;
    }

    pub(crate) async fn next(&mut self) -> Option<Delivery> {
        loop {
            if self.shared.is_closed() {
                self.current = None;
                return None;
            }
            let Some(consumption) = self.current.as_mut() else {
                if self.resubscribe().await.is_err() {
                    return None;
                }
                continue;
            };
            let hold = consumption.hold.clone();
            match consumption.consumer.next().await {
                Some(Ok(delivery)) => {
                    if let Some(delivery) = self.accept(hold, delivery).await {
                        return Some(delivery);
                    }
                }
                Some(Err(err)) => self.lost(&err.to_string()),
                None => self.lost("consumer cancelled"),
            }
        }
    }

    /// A delivery already received, without waiting.
    pub(crate) async fn try_next(&mut self) -> Option<Delivery> {
        loop {
            let consumption = self.current.as_mut()?;
            let hold = consumption.hold.clone();
            match consumption.consumer.next().now_or_never() {
                None => return None,
                Some(Some(Ok(delivery))) => {
                    if let Some(delivery) = self.accept(hold, delivery).await {
                        return Some(delivery);
                    }
                }
                Some(Some(Err(err))) => {
                    self.lost(&err.to_string());
                    return None;
                }
                Some(None) => {
                    self.lost("consumer cancelled");
                    return None;
                }
            }
        }
    }

    async fn accept(&self, hold: Arc<ChannelHold>, delivery: lapin::message::Delivery) -> Option<Delivery> {
        hold.outstanding.insert(delivery.delivery_tag).await;
        let decoded = match &self.subscription {
            Some(_) => mapping::decode(&self.shared.names, &delivery),
            None => Ok(mapping::decode_dead(&self.shared.names, &delivery)),
        };
        match decoded {
            Ok(Decoded { envelope, attempt, dead }) => {
                telemetry::delivered(TRANSPORT, &self.group);
                tracing::debug!(envelope.id = %envelope.id, envelope.kind = %envelope.kind, request_id = envelope.trace.request_id.as_deref(), group = %self.group, attempt, redelivered = delivery.redelivered, "delivered");
                Some(Delivery {
                    envelope,
                    attempt,
                    redelivered: delivery.redelivered,
                    dead,
                    group: self.group.clone(),
                    reply_to: delivery.properties.reply_to().as_ref().map(|r| r.as_str().to_owned()),
                    correlation_id: delivery.properties.correlation_id().as_ref().map(|c| c.as_str().to_owned()),
                    settle: Settle::Amqp(Token { shared: self.shared.clone(), channel: hold, tag: delivery.delivery_tag }),
                })
            }
            Err(reason) => {
                self.bury_undecodable(hold, delivery, &reason).await;
                None
            }
        }
    }

    /// Dead-letters a delivery that is not an envelope, as it came, with the reason.
    async fn bury_undecodable(&self, hold: Arc<ChannelHold>, delivery: lapin::message::Delivery, reason: &str) {
        let reason = format!("undecodable message: {reason}");
        tracing::warn!(queue = %self.queue, message_id = ?delivery.properties.message_id(), reason, "dead-lettering an undecodable delivery");
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        if let Some(exchange) = self.shared.names.exchange_kind(delivery.exchange.as_str()) {
            mapping::put_text(&mut headers, crate::topology::ORIGINAL_EXCHANGE, exchange.kind());
            mapping::put_text(&mut headers, crate::topology::ORIGINAL_ROUTING_KEY, delivery.routing_key.as_str());
        }
        mapping::put_dead(&mut headers, &self.group, &reason, 1);
        let published = match self.shared.live() {
            Ok(link) => {
                let publish = Publish {
                    exchange: self.shared.names.dead_exchange(),
                    routing_key: self.group.clone(),
                    mandatory: true,
                    properties: delivery.properties.clone().with_headers(headers),
                    body: delivery.data.clone(),
                };
                publish::confirmed_one(&self.shared, &link, publish).await
            }
            Err(err) => Err(err),
        };
        match published {
            Ok(()) => {
                telemetry::dead_lettered(TRANSPORT, &self.group);
                if let Err(err) = hold.ack(delivery.delivery_tag).await {
                    tracing::debug!(error = %err, "ack of a dead-lettered delivery failed; it comes back and is dead-lettered again");
                }
            }
            Err(err) => {
                tracing::error!(queue = %self.queue, error = %err, "could not dead-letter an undecodable delivery; giving it back in a second");
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let _ = hold.nack_requeue(delivery.delivery_tag).await;
                });
            }
        }
    }

    /// One `multiple` ack when the batch is exactly the oldest unsettled deliveries of the
    /// current channel; one by one otherwise (and for deliveries of an earlier channel).
    pub(crate) async fn ack_all(&self, deliveries: Vec<Delivery>) -> Result<(), BusError> {
        let current = self.current.as_ref().map(|c| c.hold.clone());
        let mut mine = Vec::new();
        let mut others = Vec::new();
        for delivery in deliveries {
            match (&delivery.settle, &current) {
                (Settle::Amqp(token), Some(hold)) if Arc::ptr_eq(&token.channel, hold) => mine.push(token.tag),
                _ => others.push(delivery),
            }
        }
        let mut first_error = None;
        if let Some(hold) = current.filter(|_| !mine.is_empty()) {
            mine.sort_unstable();
            let count = mine.len() as u64;
            let highest = *mine.last().expect("not empty");
            let multiple = match hold.check() {
                Ok(()) => hold.outstanding.settle_oldest(&mine, || hold.channel.basic_ack(highest, ack_options(true))).await,
                // Fails one by one below, with the reason.
                Err(_) => None,
            };
            if let Some(acked) = multiple {
                match acked {
                    Ok(()) => telemetry::acked(TRANSPORT, &self.group, count),
                    Err(err) => {
                        first_error.get_or_insert(channel_gone(err));
                    }
                }
            } else {
                for tag in mine {
                    match hold.ack(tag).await {
                        Ok(()) => telemetry::acked(TRANSPORT, &self.group, 1),
                        Err(err) => {
                            first_error.get_or_insert(err);
                        }
                    }
                }
            }
        }
        for delivery in others {
            if let Err(err) = delivery.ack().await {
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        // Closing the channel gives back what it holds unacknowledged (deliveries still out keep
        // a clone of the channel, so it would not close by itself). The consumer is dropped only
        // once the channel is closed: dropping it first sends a `basic.cancel` whose reply can
        // cross the close, which lapin takes for a protocol error that ends the connection.
        let Some(consumption) = self.current.take() else { return };
        consumption.hold.abandoned.store(true, Ordering::SeqCst);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let closing = ClosingGuard::new(&self.shared);
        runtime.spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), consumption.hold.channel.close(200, "subscriber dropped".into())).await;
            drop(consumption);
            drop(closing);
        });
    }
}

/// Counts a dropped subscriber's channel as closing until dropped, so tear-down can wait for it.
struct ClosingGuard(Arc<Shared>);

impl ClosingGuard {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.closing_channels.fetch_add(1, Ordering::SeqCst);
        Self(shared.clone())
    }
}

impl Drop for ClosingGuard {
    fn drop(&mut self) {
        self.0.closing_channels.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::Ledger;
    use std::sync::Mutex;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Frame {
        Nack(u64),
        AckUpTo(u64),
    }

    /// A requeue of tag 1 is taking its tag out while a batch ack of 2 and 3 is worked out: the
    /// `multiple` ack up to 3 (which would cover 1) may only go out after the nack of 1.
    #[tokio::test]
    async fn a_multiple_ack_never_overtakes_a_settle_in_progress() {
        let ledger = Ledger::default();
        for tag in 1..=3 {
            ledger.insert(tag).await;
        }
        let sent = Mutex::new(Vec::new());
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let mut nack = Box::pin(ledger.settle_one(1, || async {
            let _ = released.await;
            sent.lock().unwrap().push(Frame::Nack(1));
        }));
        // The nack has taken its tag out and is sending its frame.
        assert!(futures::poll!(&mut nack).is_pending());
        let mut batch_ack = Box::pin(ledger.settle_oldest(&[2, 3], || async {
            sent.lock().unwrap().push(Frame::AckUpTo(3));
        }));
        assert!(futures::poll!(&mut batch_ack).is_pending(), "the batch ack waits for the nack's frame");
        release.send(()).unwrap();
        nack.await;
        assert_eq!(batch_ack.await, Some(()));
        assert_eq!(*sent.lock().unwrap(), [Frame::Nack(1), Frame::AckUpTo(3)]);
    }

    #[tokio::test]
    async fn a_batch_ack_is_multiple_only_for_the_oldest_tags() {
        let ledger = Ledger::default();
        for tag in 1..=4 {
            ledger.insert(tag).await;
        }
        assert_eq!(ledger.settle_oldest(&[2, 3], || async {}).await, None, "1 is older");
        assert_eq!(ledger.settle_oldest(&[1, 2, 3, 4, 5], || async {}).await, None, "5 was never received");
        assert_eq!(ledger.settle_oldest(&[1, 2], || async {}).await, Some(()));
        ledger.settle_one(4, || async {}).await;
        assert_eq!(ledger.settle_oldest(&[3], || async {}).await, Some(()));
        assert!(ledger.tags.lock().await.is_empty());
    }
}
