//! The in-process broker's state: queues with their ready messages and consumers, topic
//! bindings, pending request replies, and the dispatch that hands ready messages to consumers
//! within their prefetch, round-robin.

use crate::delivery::{DeadInfo, Delivery, Settle};
use crate::envelope::Envelope;
use crate::message::Exchange;
use crate::topic;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Weak;
use tokio::sync::{mpsc, oneshot};

use super::{Broker, TRANSPORT, Token};

/// A message waiting in a queue or delivered and not yet acknowledged.
#[derive(Debug, Clone)]
pub(super) struct Message {
    /// Its number in the journal, 0 when it is not journaled (no journal, or a request, not
    /// dead-lettered, whose requester would not outlive a restart).
    pub(super) seq: u64,
    pub(super) envelope: Envelope,
    pub(super) attempt: u32,
    pub(super) redelivered: bool,
    pub(super) dead: Option<DeadInfo>,
    pub(super) reply_to: Option<String>,
    pub(super) correlation_id: Option<String>,
}

impl Message {
    pub(super) fn new(envelope: Envelope) -> Self {
        Self { seq: 0, envelope, attempt: 1, redelivered: false, dead: None, reply_to: None, correlation_id: None }
    }
}

#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) closed: bool,
    pub(super) queues: BTreeMap<String, Queue>,
    bindings: BTreeSet<(&'static str, String, String)>,
    next_id: u64,
    pub(super) replies: HashMap<String, oneshot::Sender<Envelope>>,
}

#[derive(Debug)]
pub(super) struct Queue {
    pub(super) group: String,
    pub(super) ready: VecDeque<Message>,
    pub(super) consumers: Vec<Consumer>,
    next_consumer: usize,
}

#[derive(Debug)]
pub(super) struct Consumer {
    id: u64,
    prefetch: u16,
    unacked: BTreeMap<u64, Message>,
    next_tag: u64,
    tx: mpsc::UnboundedSender<Delivery>,
}

impl State {
    pub(super) fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Declares a queue (idempotent).
    pub(super) fn declare(&mut self, queue: &str, group: &str) {
        self.queues.entry(queue.to_owned()).or_insert_with(|| Queue {
            group: group.to_owned(),
            ready: VecDeque::new(),
            consumers: Vec::new(),
            next_consumer: 0,
        });
    }

    /// Binds `queue` to `pattern` on `exchange`; whether the binding is new.
    pub(super) fn bind(&mut self, exchange: Exchange, pattern: &str, queue: &str) -> bool {
        self.bindings.insert((exchange.kind(), pattern.to_owned(), queue.to_owned()))
    }

    /// The queues a message on `exchange` with `routing_key` goes to (each once).
    pub(super) fn route(&self, exchange: Exchange, routing_key: &str) -> BTreeSet<String> {
        self.bindings
            .iter()
            .filter(|(kind, pattern, _)| *kind == exchange.kind() && topic::matches(pattern, routing_key))
            .map(|(_, _, queue)| queue.clone())
            .collect()
    }

    /// Adds a consumer to an existing queue and returns its id and deliveries.
    pub(super) fn add_consumer(&mut self, broker: &Weak<Broker>, queue: &str, prefetch: u16) -> (u64, mpsc::UnboundedReceiver<Delivery>) {
        let id = self.next_id();
        let (tx, rx) = mpsc::unbounded_channel();
        if let Some(q) = self.queues.get_mut(queue) {
            q.consumers.push(Consumer { id, prefetch, unacked: BTreeMap::new(), next_tag: 0, tx });
            dispatch(broker, queue, q);
        }
        (id, rx)
    }

    /// Removes a consumer; what it held unacknowledged goes back to the front of the queue,
    /// marked redelivered.
    pub(super) fn remove_consumer(&mut self, broker: &Weak<Broker>, queue: &str, consumer: u64) {
        let Some(q) = self.queues.get_mut(queue) else { return };
        let Some(index) = q.consumers.iter().position(|c| c.id == consumer) else { return };
        let removed = q.consumers.remove(index);
        for (_, mut message) in removed.unacked.into_iter().rev() {
            message.redelivered = true;
            q.ready.push_front(message);
        }
        dispatch(broker, queue, q);
    }

    /// Takes a delivered message out of its consumer's unacknowledged set (settling it).
    pub(super) fn take_unacked(&mut self, token: &Token) -> Option<Message> {
        let q = self.queues.get_mut(&token.queue)?;
        let consumer = q.consumers.iter_mut().find(|c| c.id == token.consumer)?;
        consumer.unacked.remove(&token.tag)
    }

    /// Appends (or, for a requeue, prepends) a message to a queue and dispatches.
    pub(super) fn enqueue(&mut self, broker: &Weak<Broker>, queue: &str, message: Message, front: bool) -> bool {
        let Some(q) = self.queues.get_mut(queue) else { return false };
        if front {
            q.ready.push_front(message);
        } else {
            q.ready.push_back(message);
        }
        dispatch(broker, queue, q);
        true
    }

    /// Hands ready messages of `queue` to consumers with room (after a settle freed some).
    pub(super) fn dispatch(&mut self, broker: &Weak<Broker>, queue: &str) {
        if let Some(q) = self.queues.get_mut(queue) {
            dispatch(broker, queue, q);
        }
    }

    /// Forgets every consumer (their subscribers end) and, when `topology`, every queue too.
    pub(super) fn clear(&mut self, topology: bool) {
        for q in self.queues.values_mut() {
            q.consumers.clear();
        }
        if topology {
            self.queues.clear();
            self.bindings.clear();
        }
        self.replies.clear();
    }
}

fn dispatch(broker: &Weak<Broker>, name: &str, queue: &mut Queue) {
    while !queue.ready.is_empty() && !queue.consumers.is_empty() {
        let count = queue.consumers.len();
        let Some(index) = (0..count).map(|i| (queue.next_consumer + i) % count).find(|&i| {
            let c = &queue.consumers[i];
            c.prefetch == 0 || c.unacked.len() < usize::from(c.prefetch)
        }) else {
            return;
        };
        queue.next_consumer = (index + 1) % count;
        let Some(message) = queue.ready.pop_front() else { return };
        let consumer = &mut queue.consumers[index];
        consumer.next_tag += 1;
        let tag = consumer.next_tag;
        let delivery = Delivery {
            envelope: message.envelope.clone(),
            attempt: message.attempt,
            redelivered: message.redelivered,
            dead: message.dead.clone(),
            group: queue.group.clone(),
            reply_to: message.reply_to.clone(),
            correlation_id: message.correlation_id.clone(),
            settle: Settle::InProcess(Token { broker: broker.clone(), queue: name.to_owned(), consumer: consumer.id, tag }),
        };
        consumer.unacked.insert(tag, message);
        if consumer.tx.send(delivery).is_err() {
            // Its subscriber is gone without having been removed: give its messages back.
            let gone = queue.consumers.remove(index);
            for (_, mut message) in gone.unacked.into_iter().rev() {
                message.redelivered = true;
                queue.ready.push_front(message);
            }
            queue.next_consumer = 0;
            continue;
        }
        crate::telemetry::delivered(TRANSPORT, &queue.group);
    }
}
