//! The outbox relay: publishes the messages the API wrote into the outbox (in the same
//! transaction as the change that asked for them), with publisher confirms, and marks them sent.
//! While the broker is away the messages wait in the outbox, so an outage delays commands and
//! loses none. Several core instances may relay at once: each claims rows under a lease.

use crm_bus::{Bus, Envelope};
use crm_store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How long a claim holds rows; a relay that died mid-publish releases them after this.
const LEASE_SECONDS: i64 = 30;
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
        match self.bus.publish_all(&envelopes).await {
            Ok(()) => {
                self.store.outbox_sent(&seqs).await.map_err(|e| format!("marking sent: {e}"))?;
                metrics::counter!("outbox_published_total").increment(seqs.len() as u64);
                Ok(seqs.len())
            }
            Err(err) => {
                let error = err.to_string();
                // The lease would release them too; releasing now retries sooner.
                let _ = self.store.outbox_failed(&seqs, &error).await;
                metrics::counter!("outbox_publish_failures_total").increment(1);
                Err(error)
            }
        }
    }
}
