//! The dead-letter keeper: files every message a consumer gave up on (the core's ingest or any
//! connector's command handler) into the store, where ops list, replay or discard it through the
//! API. A message is acknowledged on the dead-letter queue only once it is filed. A
//! `files.file.store` command given up on marks its media record `failed` with the reason (a
//! replay that stores the file later still makes it `stored`), so that it does not stay
//! `pending` for ever.

use crm_bus::message::StoreFile;
use crm_bus::{Delivery, Envelope, Message as _, Subscriber};
use crm_store::{FileStored, Store};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

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
    let envelope = &delivery.envelope;
    let (group, reason, attempts, dead_at) = match &delivery.dead {
        Some(dead) => (dead.group.as_str(), dead.reason.as_str(), dead.attempts, dead.dead_at),
        None => ("unknown", "no reason recorded", delivery.attempt, chrono::Utc::now()),
    };
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
    if let Some(media_id) = media_to_store(envelope) {
        let reason = format!("dead-lettered by {group} after {attempts} attempts: {reason}");
        store.record_file_result(media_id, FileStored::Failed { reason }).await?;
    }
    Ok(())
}

/// The media record a `files.file.store` command was to store (also when the rest of the
/// command is malformed).
fn media_to_store(envelope: &Envelope) -> Option<Uuid> {
    if envelope.kind != StoreFile::TYPE {
        return None;
    }
    let data: serde_json::Value = serde_json::from_slice(&envelope.data).ok()?;
    data.get("media_id")?.as_str()?.parse().ok()
}
