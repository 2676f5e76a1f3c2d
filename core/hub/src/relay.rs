//! The outbox relay: publishes the messages the API wrote into the outbox (in the same
//! transaction as the change that asked for them), with publisher confirms, and marks each one
//! sent by its own outcome. While the broker is away the messages wait in the outbox, so an
//! outage delays commands and loses none; a message the bus refuses (a command for a channel no
//! connector serves) is retried with backoff while the ones after it go on. Several core
//! instances may relay at once: each claims rows under a lease.

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

    /// Publishes one claimed batch; returns how many messages it published.
    async fn relay_once(&self) -> Result<usize, String> {
        let claimed =
            self.store.claim_outbox(self.batch, chrono::Duration::seconds(LEASE_SECONDS)).await.map_err(|e| format!("claiming: {e}"))?;
        if claimed.is_empty() {
            return Ok(0);
        }
        let mut envelopes = Vec::with_capacity(claimed.len());
        let mut seqs = Vec::with_capacity(claimed.len());
        for message in &claimed {
            match Envelope::from_structured(&message.envelope) {
                Ok(envelope) => {
                    envelopes.push(envelope);
                    seqs.push(message.seq);
                }
                Err(err) => {
                    // Cannot happen for rows the core wrote; file it for ops rather than retry forever.
                    tracing::error!(seq = message.seq, %err, "unreadable outbox message: filed as a dead letter");
                    let id = message.envelope.get("id").and_then(|v| v.as_str()).unwrap_or("unknown");
                    let filed = self
                        .store
                        .file_dead_letter(
                            "core.outbox",
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
        let mut sent = Vec::with_capacity(seqs.len());
        // By error text: failed messages that failed alike are released together.
        let mut failed: BTreeMap<String, (Vec<i64>, bool)> = BTreeMap::new();
        for (seq, outcome) in seqs.iter().zip(outcomes) {
            match outcome {
                Ok(()) => sent.push(*seq),
                Err(err) => {
                    let entry = failed.entry(err.to_string()).or_default();
                    entry.0.push(*seq);
                    // The broker is away or the bus closed: every message fails alike.
                    entry.1 = matches!(err, BusError::Unavailable(_) | BusError::Closed);
                }
            }
        }
        self.store.outbox_sent(&sent).await.map_err(|e| format!("marking sent: {e}"))?;
        metrics::counter!("outbox_published_total").increment(sent.len() as u64);
        if failed.is_empty() {
            return Ok(sent.len());
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
            Some(error) if sent.is_empty() => Err(error),
            _ => Ok(sent.len()),
        }
    }
}
