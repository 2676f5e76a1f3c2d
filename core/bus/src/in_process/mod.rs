//! The in-process bus, the embedded default: the same semantics as the RabbitMQ transport
//! (topic bindings, one queue per group shared by competing subscribers, prefetch, redelivery
//! of what a dropped subscriber held, retry with backoff, dead letters, replay, request/reply),
//! with every message in this process's memory and, for `crm serve`, in a journal on disk
//! ([`journal`]), so a restart loses nothing that was queued or not yet acknowledged.

mod broker;
mod journal;

use crate::config::BusConfig;
use crate::delivery::{DeadInfo, Delivery, Settle};
use crate::envelope::Envelope;
use crate::subscription::{QueueStats, Subscriber as BusSubscriber, Subscription};
use crate::topology::{DEAD_LETTER_GROUP, Names};
use crate::{BusError, telemetry, topic};
use broker::{Message, State};
use journal::Journal;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

pub(crate) const TRANSPORT: &str = "in-process";

/// The in-process transport behind [`crate::Bus::InProcess`].
#[derive(Debug, Clone)]
pub struct InProcessBus {
    broker: Arc<Broker>,
}

#[derive(Debug)]
pub(crate) struct Broker {
    config: BusConfig,
    names: Names,
    state: Mutex<State>,
    journal: Option<Journal>,
}

impl Broker {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Journals `message` entering `queue`, in place of message `replaces` (its sequence number)
    /// when it moved there. A request is not journaled, its requester would not outlive a
    /// restart, unless it is dead-lettered: a dead letter is kept for ops like any other.
    fn journal_put(&self, queue: &str, group: &str, message: &mut Message, replaces: u64) {
        let Some(journal) = &self.journal else { return };
        let replaces = (replaces > 0).then_some(replaces);
        if message.reply_to.is_none() || message.dead.is_some() {
            message.seq = journal.put(queue, group, message, replaces);
        } else if let Some(old) = replaces {
            journal.done(old);
        }
    }

    /// Journals `message` leaving its queue for good.
    fn journal_done(&self, message: &Message) {
        if let (Some(journal), 1..) = (&self.journal, message.seq) {
            journal.done(message.seq);
        }
    }

    /// Resolves once what was journaled so far is on disk (at once without a journal).
    fn synced(&self) -> impl Future<Output = Result<(), BusError>> + use<> {
        let synced = self.journal.as_ref().map(Journal::synced);
        async move {
            match synced {
                Some(synced) => synced.await,
                None => Ok(()),
            }
        }
    }
}

/// Identifies an unacknowledged in-process delivery.
#[derive(Debug)]
pub(crate) struct Token {
    broker: Weak<Broker>,
    queue: String,
    consumer: u64,
    tag: u64,
}

impl InProcessBus {
    /// A bus whose messages live in memory only.
    pub(crate) fn new(config: BusConfig) -> Self {
        Self::with_journal(config, None)
    }

    /// A bus that journals its messages at `path` and starts with the ones the journal holds
    /// (each back in its queue, marked redelivered).
    pub(crate) fn durable(config: BusConfig, path: &Path) -> Result<Self, BusError> {
        let (journal, contents) = Journal::open(path, journal::COMPACT_ABOVE)?;
        let bus = Self::with_journal(config, Some(journal));
        let weak = bus.weak();
        let mut state = bus.broker.lock();
        for binding in contents.bindings {
            state.declare(&binding.queue, &binding.group);
            state.bind(binding.exchange, &binding.pattern, &binding.queue);
        }
        for restored in contents.messages {
            state.declare(&restored.queue, &restored.group);
            state.enqueue(&weak, &restored.queue, restored.message, false);
        }
        drop(state);
        Ok(bus)
    }

    fn with_journal(config: BusConfig, journal: Option<Journal>) -> Self {
        let names = Names::new(&config.prefix).expect("a valid bus prefix");
        let mut state = State::default();
        state.declare(&names.dead_letter_queue(), DEAD_LETTER_GROUP);
        Self { broker: Arc::new(Broker { config, names, state: Mutex::new(state), journal }) }
    }

    pub(crate) fn config(&self) -> &BusConfig {
        &self.broker.config
    }

    fn weak(&self) -> Weak<Broker> {
        Arc::downgrade(&self.broker)
    }

    fn open(&self) -> Result<MutexGuard<'_, State>, BusError> {
        let state = self.broker.lock();
        if state.closed {
            return Err(BusError::Closed);
        }
        Ok(state)
    }

    fn route(&self, state: &mut State, message: Message) -> Result<(), BusError> {
        let envelope = &message.envelope;
        topic::validate_routing_key(&envelope.routing_key)?;
        let queues = state.route(envelope.exchange, &envelope.routing_key);
        // As RabbitMQ's `mandatory`: commands and requests must reach a queue.
        if queues.is_empty() && (envelope.exchange == crate::Exchange::Commands || message.reply_to.is_some()) {
            return Err(BusError::Rejected(format!("no queue is bound for '{}'", envelope.routing_key)));
        }
        telemetry::published(TRANSPORT, envelope.exchange, 1);
        let weak = self.weak();
        for queue in queues {
            let Some(group) = state.queues.get(&queue).map(|q| q.group.clone()) else { continue };
            let mut copy = message.clone();
            self.broker.journal_put(&queue, &group, &mut copy, 0);
            state.enqueue(&weak, &queue, copy, false);
        }
        Ok(())
    }

    /// Publishes; returns once the message is journaled (when there is a journal).
    pub(crate) async fn publish(&self, envelope: &Envelope) -> Result<(), BusError> {
        self.publish_each(std::slice::from_ref(envelope)).await.pop().unwrap_or(Ok(()))
    }

    /// Publishes every envelope; one outcome per envelope, in order (a routed message's is the
    /// journal's when there is one).
    pub(crate) async fn publish_each(&self, envelopes: &[Envelope]) -> Vec<Result<(), BusError>> {
        let (mut outcomes, synced) = {
            let mut state = match self.open() {
                Ok(state) => state,
                Err(err) => return envelopes.iter().map(|_| Err(err.clone())).collect(),
            };
            let mut outcomes = Vec::with_capacity(envelopes.len());
            for envelope in envelopes {
                tracing::debug!(envelope.id = %envelope.id, envelope.kind = %envelope.kind, request_id = envelope.trace.request_id.as_deref(), routing_key = %envelope.routing_key, "publish");
                outcomes.push(self.route(&mut state, Message::new(envelope.clone())));
            }
            (outcomes, self.broker.synced())
        };
        if let Err(err) = synced.await {
            for outcome in outcomes.iter_mut().filter(|o| o.is_ok()) {
                *outcome = Err(err.clone());
            }
        }
        outcomes
    }

    /// Declares the group's queue and bindings, returning the state (locked) and the queue.
    fn declare_locked(&self, subscription: &Subscription) -> Result<(MutexGuard<'_, State>, String), BusError> {
        let queue = self.broker.names.group_queue(&subscription.group)?;
        for pattern in &subscription.bindings {
            topic::validate_pattern(pattern)?;
        }
        let mut state = self.open()?;
        state.declare(&queue, &subscription.group);
        for pattern in &subscription.bindings {
            if state.bind(subscription.exchange, pattern, &queue)
                && let Some(journal) = &self.broker.journal
            {
                let binding = journal::Binding {
                    exchange: subscription.exchange,
                    pattern: pattern.clone(),
                    queue: queue.clone(),
                    group: subscription.group.clone(),
                };
                journal.bind(binding);
            }
        }
        Ok((state, queue))
    }

    pub(crate) fn declare(&self, subscription: &Subscription) -> Result<(), BusError> {
        self.declare_locked(subscription).map(drop)
    }

    pub(crate) fn subscribe(&self, subscription: Subscription) -> Result<BusSubscriber, BusError> {
        let (mut state, queue) = self.declare_locked(&subscription)?;
        Ok(self.consume(&mut state, queue, subscription.group, subscription.prefetch))
    }

    fn consume(&self, state: &mut State, queue: String, group: String, prefetch: u16) -> BusSubscriber {
        let (consumer, rx) = state.add_consumer(&self.weak(), &queue, prefetch);
        BusSubscriber::in_process(Subscriber { broker: self.broker.clone(), queue, group, consumer, rx })
    }

    pub(crate) fn dead_letters(&self) -> Result<BusSubscriber, BusError> {
        let mut state = self.open()?;
        let queue = self.broker.names.dead_letter_queue();
        state.declare(&queue, DEAD_LETTER_GROUP);
        Ok(self.consume(&mut state, queue, DEAD_LETTER_GROUP.to_owned(), 100))
    }

    pub(crate) async fn request(&self, envelope: &Envelope, timeout: Duration) -> Result<Envelope, BusError> {
        let reply_to = format!("in-process.reply.{}", uuid::Uuid::new_v4());
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.open()?;
            state.replies.insert(reply_to.clone(), tx);
            let message =
                Message { reply_to: Some(reply_to.clone()), correlation_id: Some(envelope.id.clone()), ..Message::new(envelope.clone()) };
            if let Err(err) = self.route(&mut state, message) {
                state.replies.remove(&reply_to);
                return Err(err);
            }
        }
        // However the wait ends (a reply, the timeout, the caller giving up), no waiter is left.
        let _forget = crate::OnDrop(|| {
            self.broker.lock().replies.remove(&reply_to);
        });
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(BusError::Closed),
            Err(_) => Err(BusError::Timeout(format!("no reply to {} within {timeout:?}", envelope.id))),
        }
    }

    pub(crate) fn reply(&self, reply_to: &str, reply: &Envelope) -> Result<(), BusError> {
        let waiter = self.open()?.replies.remove(reply_to);
        if let Some(waiter) = waiter {
            let _ = waiter.send(reply.clone());
        }
        Ok(())
    }

    pub(crate) async fn replay(&self, group: &str, envelope: &Envelope) -> Result<(), BusError> {
        let queue = self.broker.names.group_queue(group)?;
        let synced = {
            let mut state = self.open()?;
            let Some(group) = state.queues.get(&queue).map(|q| q.group.clone()) else {
                return Err(BusError::Invalid(format!("group '{group}' has no queue")));
            };
            let mut message = Message::new(envelope.clone());
            self.broker.journal_put(&queue, &group, &mut message, 0);
            state.enqueue(&self.weak(), &queue, message, false);
            self.broker.synced()
        };
        synced.await
    }

    pub(crate) fn queue_stats(&self) -> Vec<QueueStats> {
        let state = self.broker.lock();
        state
            .queues
            .iter()
            .map(|(name, q)| QueueStats {
                queue: name.clone(),
                group: q.group.clone(),
                messages: q.ready.len() as u64,
                consumers: u32::try_from(q.consumers.len()).unwrap_or(u32::MAX),
            })
            .collect()
    }

    pub(crate) fn is_ready(&self) -> bool {
        !self.broker.lock().closed
    }

    /// Closes the bus once what it journaled is on disk.
    pub(crate) async fn close(&self) {
        let synced = {
            let mut state = self.broker.lock();
            state.closed = true;
            state.clear(false);
            self.broker.synced()
        };
        if let Err(err) = synced.await {
            tracing::warn!(%err, "closing the in-process bus");
        }
    }

    pub(crate) fn delete_topology(&self) {
        let mut state = self.broker.lock();
        state.clear(true);
        state.declare(&self.broker.names.dead_letter_queue(), DEAD_LETTER_GROUP);
        if let Some(journal) = &self.broker.journal {
            journal.clear();
        }
    }
}

/// An in-process subscriber: the receiving end of its consumer's deliveries.
#[derive(Debug)]
pub(crate) struct Subscriber {
    broker: Arc<Broker>,
    queue: String,
    group: String,
    consumer: u64,
    rx: mpsc::UnboundedReceiver<Delivery>,
}

impl Subscriber {
    /// The next delivery; `None` once the bus is closed, even with deliveries still buffered:
    /// closing dropped them (a journal delivers them again after the restart), so they could
    /// not be settled. RabbitMQ's subscribers end the same way.
    pub(crate) async fn next(&mut self) -> Option<Delivery> {
        let delivery = self.rx.recv().await?;
        self.open(delivery)
    }

    pub(crate) fn try_next(&mut self) -> Option<Delivery> {
        let delivery = self.rx.try_recv().ok()?;
        self.open(delivery)
    }

    fn open(&self, delivery: Delivery) -> Option<Delivery> {
        if self.broker.lock().closed { None } else { Some(delivery) }
    }

    pub(crate) fn group(&self) -> &str {
        &self.group
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let weak = Arc::downgrade(&self.broker);
        self.broker.lock().remove_consumer(&weak, &self.queue, self.consumer);
    }
}

fn token(delivery: &Delivery) -> &Token {
    match &delivery.settle {
        Settle::InProcess(token) => token,
        Settle::Amqp(_) => unreachable!("an in-process delivery"),
    }
}

/// Settles `delivery` under the broker lock with `then`, or fails when its subscriber is gone.
fn settle(delivery: Delivery, then: impl FnOnce(&Arc<Broker>, &mut State, Message, Delivery)) -> Result<(), BusError> {
    let token = token(&delivery);
    let broker = token.broker.upgrade().ok_or(BusError::Closed)?;
    let mut state = broker.lock();
    let Some(message) = state.take_unacked(token) else {
        return Err(gone());
    };
    let (weak, queue) = (token.broker.clone(), token.queue.clone());
    then(&broker, &mut state, message, delivery);
    state.dispatch(&weak, &queue);
    Ok(())
}

fn gone() -> BusError {
    BusError::Unavailable(
        "the subscriber of this delivery is gone: the message went back to its queue (or, the bus being closed, is delivered again from its journal after a restart)".into(),
    )
}

pub(crate) fn ack(delivery: Delivery) -> Result<(), BusError> {
    settle(delivery, |broker, _, message, delivery| {
        broker.journal_done(&message);
        telemetry::acked(TRANSPORT, &delivery.group, 1);
    })
}

pub(crate) fn ack_all(deliveries: Vec<Delivery>) -> Result<(), BusError> {
    let mut first_error = None;
    for delivery in deliveries {
        if let Err(err) = ack(delivery) {
            first_error.get_or_insert(err);
        }
    }
    first_error.map_or(Ok(()), Err)
}

pub(crate) fn requeue(delivery: Delivery) -> Result<(), BusError> {
    settle(delivery, |broker, state, mut message, delivery| {
        message.redelivered = true;
        state.enqueue(&Arc::downgrade(broker), &token(&delivery).queue, message, true);
    })
}

/// Dead-letters; returns once the move is journaled (when there is a journal), as RabbitMQ
/// returns once the dead-letter publish is confirmed.
pub(crate) async fn dead_letter(delivery: Delivery, reason: &str) -> Result<(), BusError> {
    let synced = synced_after(&delivery);
    settle(delivery, |broker, state, message, delivery| bury(broker, state, message, &delivery.group, reason))?;
    synced.await
}

/// Resolves once the journal of `delivery`'s bus has on disk everything sent to it before this
/// is first polled: await it after settling.
fn synced_after(delivery: &Delivery) -> impl Future<Output = Result<(), BusError>> + use<> {
    let broker = token(delivery).broker.upgrade();
    async move {
        match broker {
            Some(broker) => broker.synced().await,
            None => Err(BusError::Closed),
        }
    }
}

fn bury(broker: &Arc<Broker>, state: &mut State, message: Message, group: &str, reason: &str) {
    tracing::warn!(envelope.id = %message.envelope.id, envelope.kind = %message.envelope.kind, group, reason, attempts = message.attempt, "dead-lettered");
    let dead = DeadInfo { group: group.to_owned(), reason: reason.to_owned(), attempts: message.attempt, dead_at: chrono::Utc::now() };
    let queue = broker.names.dead_letter_queue();
    let moved = move_to(broker, &queue, DEAD_LETTER_GROUP, message, |m| m.dead = Some(dead));
    state.enqueue(&Arc::downgrade(broker), &queue, moved, false);
    telemetry::dead_lettered(TRANSPORT, group);
}

/// `message` changed by `change` as it enters `queue` afresh (not redelivered), journaled there
/// in place of where it was.
fn move_to(broker: &Broker, queue: &str, group: &str, message: Message, change: impl FnOnce(&mut Message)) -> Message {
    let mut moved = Message { redelivered: false, seq: 0, ..message };
    change(&mut moved);
    broker.journal_put(queue, group, &mut moved, message.seq);
    moved
}

/// Retries (or dead-letters when out of attempts); returns once that is journaled (when there is
/// a journal).
pub(crate) async fn retry(delivery: Delivery, reason: &str) -> Result<(), BusError> {
    let synced = synced_after(&delivery);
    settle(delivery, |broker, state, message, delivery| {
        let policy = &broker.config.retry;
        if policy.exhausted(message.attempt) {
            bury(broker, state, message, &delivery.group, reason);
            return;
        }
        let delay = policy.delay_after(message.attempt);
        tracing::info!(envelope.id = %message.envelope.id, group = %delivery.group, attempt = message.attempt, ?delay, reason, "retry");
        telemetry::retried(TRANSPORT, &delivery.group);
        let queue = token(&delivery).queue.clone();
        let message = move_to(broker, &queue, &delivery.group, message, |m| m.attempt += 1);
        if delay.is_zero() {
            state.enqueue(&Arc::downgrade(broker), &queue, message, false);
            return;
        }
        let weak = Arc::downgrade(broker);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(broker) = weak.upgrade() {
                let mut state = broker.lock();
                if !state.closed {
                    state.enqueue(&weak, &queue, message, false);
                }
            }
        });
    })?;
    synced.await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::ReadFile;
    use crate::{Subscription, Trace};

    /// A request nobody binds is refused at once, on either exchange (RabbitMQ publishes every
    /// request `mandatory`), rather than waiting for its timeout.
    #[tokio::test]
    async fn an_unbound_request_is_refused() {
        let bus = InProcessBus::new(BusConfig::default());
        let mut read = Envelope::new("/test", &ReadFile { path: "x".into() }, Trace::default());
        read.exchange = crate::Exchange::Events;
        let refused = bus.request(&read, Duration::from_secs(3600)).await;
        assert!(matches!(refused, Err(BusError::Rejected(_))), "{refused:?}");
        assert!(bus.broker.lock().replies.is_empty());
        bus.close().await;
    }

    /// A requester that gives up (its future dropped) before any reply leaves no waiter behind.
    #[tokio::test]
    async fn an_abandoned_request_leaves_no_waiter() {
        let bus = InProcessBus::new(BusConfig::default());
        let _queue = bus.subscribe(Subscription::new("files", crate::Exchange::Commands, &["#"])).unwrap();
        let read = Envelope::new("/test", &ReadFile { path: "x".into() }, Trace::default());
        let abandoned = tokio::time::timeout(Duration::from_millis(20), bus.request(&read, Duration::from_secs(3600))).await;
        assert!(abandoned.is_err(), "no reply came");
        assert!(bus.broker.lock().replies.is_empty(), "the waiter went with the request");
        bus.close().await;
    }
}
