//! A delivered message and how its consumer settles it: ack, retry with backoff, dead-letter, or
//! give it back.

use crate::envelope::Envelope;
use crate::{BusError, amqp, in_process};
use chrono::{DateTime, Utc};

/// The message of a caught panic (what a consumer whose handler panicked gives as the reason
/// when it retries or dead-letters the delivery).
pub fn panic_reason(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Why and when a message was dead-lettered, on deliveries from [`crate::Bus::dead_letters`].
#[derive(Debug, Clone, PartialEq)]
pub struct DeadInfo {
    /// The consumer group that gave up on it.
    pub group: String,
    /// Why.
    pub reason: String,
    /// How many times it had been delivered.
    pub attempts: u32,
    /// When it was dead-lettered.
    pub dead_at: DateTime<Utc>,
}

/// One message delivered to a [`crate::Subscriber`]. Settle it exactly once with [`ack`],
/// [`retry`], [`dead_letter`] or [`requeue`]; a delivery dropped unsettled stays unacknowledged
/// until its subscriber is dropped, when it goes back to the queue.
///
/// [`ack`]: Delivery::ack
/// [`retry`]: Delivery::retry
/// [`dead_letter`]: Delivery::dead_letter
/// [`requeue`]: Delivery::requeue
#[derive(Debug)]
pub struct Delivery {
    /// The message.
    pub envelope: Envelope,
    /// 1 on the first delivery; each [`Delivery::retry`] adds one. A redelivery after a crash or
    /// [`Delivery::requeue`] does not count.
    pub attempt: u32,
    /// Delivered before and not acknowledged (its subscriber went away, or it was requeued).
    pub redelivered: bool,
    /// Set on dead letters (from [`crate::Bus::dead_letters`]).
    pub dead: Option<DeadInfo>,
    pub(crate) group: String,
    pub(crate) reply_to: Option<String>,
    pub(crate) correlation_id: Option<String>,
    pub(crate) settle: Settle,
}

/// The transport's handle to acknowledge a delivery with.
#[derive(Debug)]
pub(crate) enum Settle {
    InProcess(in_process::Token),
    Amqp(amqp::Token),
}

impl Delivery {
    /// Done with it: the broker forgets it.
    pub async fn ack(self) -> Result<(), BusError> {
        match &self.settle {
            Settle::InProcess(_) => in_process::ack(self),
            Settle::Amqp(_) => amqp::ack(self).await,
        }
    }

    /// Failed, may work later: redelivered after the backoff for this attempt, with
    /// `attempt + 1`; when this was the last attempt allowed, dead-lettered with `reason` instead.
    pub async fn retry(self, reason: &str) -> Result<(), BusError> {
        if self.dead.is_some() {
            return self.refuse_on_dead_letter("retry").await;
        }
        match &self.settle {
            Settle::InProcess(_) => in_process::retry(self, reason).await,
            Settle::Amqp(_) => amqp::retry(self, reason).await,
        }
    }

    /// Will never work (malformed input): straight to the dead-letter queue with `reason`.
    pub async fn dead_letter(self, reason: &str) -> Result<(), BusError> {
        if self.dead.is_some() {
            return self.refuse_on_dead_letter("dead_letter").await;
        }
        match &self.settle {
            Settle::InProcess(_) => in_process::dead_letter(self, reason).await,
            Settle::Amqp(_) => amqp::dead_letter(self, reason).await,
        }
    }

    /// Give it back untouched (shutting down): redelivered at once to any consumer of the group,
    /// with no attempt counted.
    pub async fn requeue(self) -> Result<(), BusError> {
        match &self.settle {
            Settle::InProcess(_) => in_process::requeue(self),
            Settle::Amqp(_) => amqp::requeue(self).await,
        }
    }

    /// A dead letter is acked, requeued or replayed, never retried or dead-lettered again: it
    /// goes back to the dead-letter queue and the call is an error.
    async fn refuse_on_dead_letter(self, what: &str) -> Result<(), BusError> {
        let id = self.envelope.id.clone();
        self.requeue().await?;
        Err(BusError::Invalid(format!("{what} of dead letter {id}: ack, requeue or replay it instead")))
    }

    /// Whether the publisher waits for an answer ([`crate::Bus::reply`]).
    pub fn is_request(&self) -> bool {
        self.reply_to.is_some()
    }

    /// The consumer group it was delivered to (`dead-letters` for dead letters).
    pub fn group(&self) -> &str {
        &self.group
    }
}
