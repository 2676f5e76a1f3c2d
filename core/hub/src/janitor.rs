//! The janitor: clears, at start and then every [`Retention::every`], what the store keeps only
//! for a while. Outbox messages once they are published (an upload's message holds the file's
//! bytes, which the file store has by then), idempotency keys once a retry is no longer expected,
//! and connector instances not heard from for long (stopped for good, or renamed).

use crm_store::Store;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long the store keeps what it keeps only for a while, and how often it is cleared.
#[derive(Debug, Clone)]
pub struct Retention {
    /// Outbox messages after they were published.
    pub sent_commands: Duration,
    /// Idempotency keys: a retry with the same key within this gets the first result.
    pub idempotency_keys: Duration,
    /// Connector instances after their last heartbeat.
    pub silent_connectors: Duration,
    /// How often the janitor runs.
    pub every: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        const HOUR: Duration = Duration::from_secs(3600);
        Self { sent_commands: 24 * HOUR, idempotency_keys: 24 * HOUR, silent_connectors: 7 * 24 * HOUR, every: HOUR }
    }
}

pub(crate) async fn run(store: Store, retention: Retention, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(retention.every.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        if let Err(err) = sweep(&store, &retention).await {
            tracing::warn!(error = %err, "housekeeping failed; trying again at the next round");
        }
    }
    tracing::info!("janitor stopped");
}

async fn sweep(store: &Store, retention: &Retention) -> Result<(), crm_store::StoreError> {
    // Capped at a century, so that a huge setting means "keep" and not an overflow.
    let century = chrono::Duration::days(36_525);
    let age = |d: Duration| chrono::Duration::from_std(d).map_or(century, |d| d.min(century));
    let commands = store.prune_outbox(age(retention.sent_commands)).await?;
    let keys = store.prune_idempotency_keys(age(retention.idempotency_keys)).await?;
    let instances = store.forget_connector_instances(chrono::Utc::now() - age(retention.silent_connectors)).await?;
    for (what, n) in [("sent_commands", commands), ("idempotency_keys", keys), ("silent_connectors", instances)] {
        metrics::counter!("housekeeping_pruned_total", "what" => what).increment(n);
    }
    if commands + keys + instances > 0 {
        tracing::info!(sent_commands = commands, idempotency_keys = keys, silent_connectors = instances, "housekeeping pruned");
    }
    Ok(())
}
