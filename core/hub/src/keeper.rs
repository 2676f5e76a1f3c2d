//! The dead-letter keeper: files every message a consumer gave up on (the core's ingest or any
//! connector's command handler) into the store, where ops list, replay or discard it through the
//! API. A message is acknowledged on the dead-letter queue only once it is filed. A command given
//! up on fails what waits for it, with the reason, so that nothing stays pending for ever: a
//! `files.file.store` command its media record (a replay that stores the file later still makes
//! it `stored`), a `message.send` command its log entry while that is still `queued` (replaying
//! the command puts the entry back to `queued`).

use crm_bus::message::WaitingRecord;
use crm_bus::{Delivery, Envelope, Subscriber};
use crm_store::{FileStored, Store, StoreError};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub(crate) async fn run(store: Store, mut subscriber: Subscriber, shutdown: CancellationToken) {
    loop {
        let delivery = tokio::select! {
            () = shutdown.cancelled() => break,
            delivery = subscriber.next() => delivery,
        };
        let Some(delivery) = delivery else { break };
        let mut delay = Duration::from_millis(200);
        loop {
            match file(&store, &delivery).await {
                Ok(()) => {
                    metrics::counter!("dead_letters_filed_total", "consumer" => delivery.dead.as_ref().map(|d| d.group.clone()).unwrap_or_default()).increment(1);
                    if let Err(err) = delivery.ack().await {
                        tracing::debug!(%err, "ack of a filed dead letter failed; it will be filed again, once");
                    }
                    break;
                }
                Err(err) => {
                    tracing::warn!(%err, "could not file a dead letter; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
    tracing::info!("dead-letter keeper stopped");
}

async fn file(store: &Store, delivery: &Delivery) -> Result<(), crm_store::StoreError> {
    match &delivery.dead {
        Some(dead) => file_given_up(store, &dead.group, &delivery.envelope, &dead.reason, dead.attempts, dead.dead_at).await,
        None => file_given_up(store, "unknown", &delivery.envelope, "no reason recorded", delivery.attempt, chrono::Utc::now()).await,
    }
}

/// Files `envelope`, given up on by `group` after `attempts` for `reason`, as a dead letter for
/// ops; a command given up on fails what waits for it: a file to store fails its media record,
/// a message to send fails its log entry while it is still `queued` (a report that it was sent
/// wins). Also used by the outbox relay for a message the bus refuses for good.
pub(crate) async fn file_given_up(
    store: &Store,
    group: &str,
    envelope: &Envelope,
    reason: &str,
    attempts: u32,
    dead_at: chrono::DateTime<chrono::Utc>,
) -> Result<(), crm_store::StoreError> {
    store
        .file_dead_letter(
            group,
            &envelope.id,
            &envelope.kind,
            &envelope.routing_key,
            &envelope.to_structured(),
            reason,
            i64::from(attempts),
            dead_at,
        )
        .await?;
    let why = || format!("dead-lettered by {group} after {attempts} attempts: {reason}");
    match WaitingRecord::of(envelope) {
        Some(WaitingRecord::Media(media_id)) => {
            match store.record_file_result(media_id, FileStored::Failed { reason: why(), path: None }).await {
                Ok(_) => {}
                // A command for a record that asked the file store for nothing: filed, and
                // nothing waits for it.
                Err(StoreError::Conflict { detail, .. }) => {
                    tracing::warn!(%media_id, %detail, "a dead-lettered file command for a record not waiting for it")
                }
                Err(err) => return Err(err),
            }
        }
        Some(WaitingRecord::Entry(entry_id)) => {
            store.fail_queued_delivery(entry_id, why()).await?;
        }
        None => {}
    }
    Ok(())
}
