//! The outbox relay: publishes the messages the API wrote into the outbox (in the same
//! transaction as the change that asked for them), with publisher confirms, and marks each one
//! sent by its own outcome. While the broker is away the messages wait in the outbox, so an
//! outage delays commands and loses none; a message the broker refuses (a command for a channel
//! no connector serves yet) is retried with backoff while the ones after it go on; one the bus
//! can never take (an invalid routing key) is filed as a dead letter, failing what waits for it.
//! Several core instances may relay at once: each claims rows under a lease.

use crate::keeper;
use crm_bus::{Bus, BusError, Envelope};
use crm_store::{OutboxRetry, Store};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How long a claim holds rows; a relay that died mid-publish releases them after this.
const LEASE_SECONDS: i64 = 30;
/// The wait before a message that could not be published (no queue takes it, no confirm in
/// time) is tried again, doubled for each earlier failure up to [`RETRY_MAX`]; meanwhile the
/// messages after it are published.
const RETRY_FIRST: chrono::Duration = chrono::Duration::seconds(1);
const RETRY_MAX: chrono::Duration = chrono::Duration::minutes(5);
/// The consumer group named on dead letters the relay files itself.
const OUTBOX_GROUP: &str = "core.outbox";
/// How often the outbox is looked at when nobody rings.
const IDLE_POLL: Duration = Duration::from_millis(500);

pub(crate) struct Relay {
    pub(crate) store: Store,
    pub(crate) bus: Bus,
    pub(crate) wakeup: Arc<Notify>,
    pub(crate) batch: u32,
}

impl Relay {
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            match self.relay_once().await {
                Ok(0) => {
                    backoff = Duration::from_millis(100);
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = self.wakeup.notified() => {}
                        () = tokio::time::sleep(IDLE_POLL) => {}
                    }
                }
                Ok(_) => backoff = Duration::from_millis(100),
                Err(error) => {
                    tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "outbox relay: publishing failed; the messages stay in the outbox");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
        tracing::info!("outbox relay stopped");
    }

    /// Publishes one claimed batch; returns how many messages it is done with (published, or
    /// filed as dead letters).
    async fn relay_once(&self) -> Result<usize, String> {
        let claimed =
            self.store.claim_outbox(self.batch, chrono::Duration::seconds(LEASE_SECONDS)).await.map_err(|e| format!("claiming: {e}"))?;
        if claimed.is_empty() {
            return Ok(0);
        }
        let mut envelopes = Vec::with_capacity(claimed.len());
        let mut rows = Vec::with_capacity(claimed.len());
        for message in &claimed {
            match Envelope::from_structured(&message.envelope) {
                Ok(envelope) => {
                    envelopes.push(envelope);
                    rows.push(message);
                }
                Err(err) => {
                    // Cannot happen for rows the core wrote; file it for ops rather than retry forever.
                    tracing::error!(seq = message.seq, %err, "unreadable outbox message: filed as a dead letter");
                    let id = message.envelope.get("id").and_then(|v| v.as_str()).unwrap_or("unknown");
                    let filed = self
                        .store
                        .file_dead_letter(
                            OUTBOX_GROUP,
                            id,
                            "unknown",
                            "unknown",
                            &message.envelope,
                            &err.to_string(),
                            message.attempts,
                            chrono::Utc::now(),
                        )
                        .await;
                    if filed.is_ok() {
                        let _ = self.store.outbox_sent(&[message.seq]).await;
                    }
                }
            }
        }
        let outcomes = self.bus.publish_each(&envelopes).await;
        let mut sent = Vec::with_capacity(rows.len());
        let mut filed = Vec::new();
        // By error text: failed messages that failed alike are released together.
        let mut failed: BTreeMap<String, (Vec<i64>, bool)> = BTreeMap::new();
        for ((row, envelope), outcome) in rows.iter().zip(&envelopes).zip(outcomes) {
            match outcome {
                Ok(()) => sent.push(row.seq),
                Err(BusError::Invalid(why)) => {
                    // No retry can fix it (a routing key that cannot be one): filed for ops, and
                    // what waits for the command fails with the reason.
                    tracing::error!(seq = row.seq, envelope.id = %envelope.id, reason = %why, "the bus refuses an outbox message for good: filed as a dead letter");
                    let reason = format!("the bus refuses it: {why}");
                    let attempts = u32::try_from(row.attempts + 1).unwrap_or(u32::MAX);
                    // Dead at the envelope's time, not now: filing it again (the process died
                    // before the row was marked) finds the same dead letter.
                    match keeper::file_given_up(&self.store, OUTBOX_GROUP, envelope, &reason, attempts, envelope.time).await {
                        Ok(()) => filed.push(row.seq),
                        Err(err) => {
                            tracing::warn!(error = %err, seq = row.seq, "outbox relay: filing a refused message failed; tried again after the lease")
                        }
                    }
                }
                Err(err) => {
                    let entry = failed.entry(err.to_string()).or_default();
                    entry.0.push(row.seq);
                    // The broker is away or the bus closed: every message fails alike.
                    entry.1 = matches!(err, BusError::Unavailable(_) | BusError::Closed);
                }
            }
        }
        self.store.outbox_sent(&[sent.as_slice(), &filed].concat()).await.map_err(|e| format!("marking sent: {e}"))?;
        metrics::counter!("outbox_published_total").increment(sent.len() as u64);
        metrics::counter!("outbox_dead_lettered_total").increment(filed.len() as u64);
        let done = sent.len() + filed.len();
        if failed.is_empty() {
            return Ok(done);
        }
        let mut unavailable = None;
        for (error, (failed_seqs, bus_down)) in &failed {
            metrics::counter!("outbox_publish_failures_total").increment(failed_seqs.len() as u64);
            let retry = if *bus_down {
                unavailable.get_or_insert_with(|| error.clone());
                // The relay backs off as a whole; the messages keep their turn.
                OutboxRetry::Now
            } else {
                tracing::warn!(%error, seqs = ?failed_seqs, "outbox relay: messages could not be published; retried later with backoff, the others go on");
                OutboxRetry::Backoff { first: RETRY_FIRST, max: RETRY_MAX }
            };
            // Should this fail, the lease releases them anyway.
            if let Err(err) = self.store.outbox_failed(failed_seqs, error, retry).await {
                tracing::warn!(error = %err, "outbox relay: recording a failed publish failed");
            }
        }
        match unavailable {
            Some(error) if done == 0 => Err(error),
            _ => Ok(done),
        }
    }
}
