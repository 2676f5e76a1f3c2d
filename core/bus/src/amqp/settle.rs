//! Settling an AMQP delivery: ack, requeue, retry through the group's delay queue (attempt and
//! last error in headers), and dead-lettering to `<prefix>.dead` with the reason, each
//! re-publish confirmed before the original is acked; when the re-publish fails, the original
//! goes back to its queue.

use super::publish::{self, Publish};
use super::{TRANSPORT, Token, mapping};
use crate::delivery::{Delivery, Settle};
use crate::{BusError, telemetry};
use lapin::options::BasicAckOptions;
use std::time::Duration;

fn token(delivery: &Delivery) -> &Token {
    match &delivery.settle {
        Settle::Amqp(token) => token,
        Settle::InProcess(_) => unreachable!("an AMQP delivery"),
    }
}

pub(crate) async fn ack(delivery: Delivery) -> Result<(), BusError> {
    let token = token(&delivery);
    token.channel.ack(token.tag).await?;
    telemetry::acked(TRANSPORT, &delivery.group, 1);
    Ok(())
}

pub(crate) async fn requeue(delivery: Delivery) -> Result<(), BusError> {
    let token = token(&delivery);
    token.channel.nack_requeue(token.tag).await
}

/// How long a delivery whose retry or dead-lettering failed waits before it is given back, so a
/// failure that lasts does not spin.
const GIVE_BACK_AFTER: Duration = Duration::from_secs(1);

pub(crate) async fn dead_letter(delivery: Delivery, reason: &str) -> Result<(), BusError> {
    let token = token(&delivery);
    token.channel.check()?;
    let copied = dead_letter_copy(&delivery, reason).await;
    settle_after_copy(&delivery, copied).await
}

/// Publishes (confirmed) the dead-letter copy of `delivery`.
async fn dead_letter_copy(delivery: &Delivery, reason: &str) -> Result<(), BusError> {
    let shared = &token(delivery).shared;
    let envelope = &delivery.envelope;
    let link = shared.live()?;
    tracing::warn!(envelope.id = %envelope.id, envelope.kind = %envelope.kind, request_id = envelope.trace.request_id.as_deref(), group = %delivery.group, reason, attempts = delivery.attempt, "dead-lettered");
    let mut headers = mapping::headers(envelope);
    mapping::put_origin(&mut headers, envelope);
    mapping::put_dead(&mut headers, &delivery.group, reason, delivery.attempt);
    let publish = Publish {
        exchange: shared.names.dead_exchange(),
        routing_key: delivery.group.clone(),
        mandatory: true,
        properties: mapping::properties(envelope)?.with_headers(headers),
        body: envelope.data.clone(),
    };
    publish::confirmed_one(shared, &link, publish).await?;
    telemetry::dead_lettered(TRANSPORT, &delivery.group);
    Ok(())
}

pub(crate) async fn retry(delivery: Delivery, reason: &str) -> Result<(), BusError> {
    let token = token(&delivery);
    if token.shared.config.retry.exhausted(delivery.attempt) {
        return dead_letter(delivery, reason).await;
    }
    token.channel.check()?;
    let copied = retry_copy(&delivery, reason).await;
    settle_after_copy(&delivery, copied).await
}

/// Publishes (confirmed) the next attempt of `delivery` to its delay queue.
async fn retry_copy(delivery: &Delivery, reason: &str) -> Result<(), BusError> {
    let shared = &token(delivery).shared;
    let policy = &shared.config.retry;
    let link = shared.live()?;
    let delay = policy.delay_after(delivery.attempt);
    let envelope = &delivery.envelope;
    tracing::info!(envelope.id = %envelope.id, envelope.kind = %envelope.kind, group = %delivery.group, attempt = delivery.attempt, ?delay, reason, "retry");
    let queue = if delay.is_zero() {
        shared.names.group_queue(&delivery.group)?
    } else {
        link.ensure_retry_queue(shared, &delivery.group, delay).await?
    };
    let mut headers = mapping::headers(envelope);
    mapping::put_origin(&mut headers, envelope);
    mapping::put_int(&mut headers, crate::topology::ATTEMPT, delivery.attempt + 1);
    mapping::put_text(&mut headers, crate::topology::LAST_ERROR, reason);
    let mut properties = mapping::properties(envelope)?.with_headers(headers);
    if let Some(reply_to) = &delivery.reply_to {
        properties = properties.with_reply_to(mapping::short(reply_to)?);
    }
    if let Some(correlation_id) = &delivery.correlation_id {
        properties = properties.with_correlation_id(mapping::short(correlation_id)?);
    }
    let publish = Publish { exchange: String::new(), routing_key: queue, mandatory: true, properties, body: envelope.data.clone() };
    publish::confirmed_one(shared, &link, publish).await?;
    telemetry::retried(TRANSPORT, &delivery.group);
    Ok(())
}

/// Acks the original once its copy is confirmed. When the copy failed, the original is given
/// back to the queue (nack with requeue, after [`GIVE_BACK_AFTER`]) rather than left
/// unacknowledged holding a prefetch slot until the channel closes; the error is returned at
/// once.
async fn settle_after_copy(delivery: &Delivery, copied: Result<(), BusError>) -> Result<(), BusError> {
    let token = token(delivery);
    match copied {
        Ok(()) => token.channel.ack(token.tag).await,
        Err(err) => {
            tracing::warn!(envelope.id = %delivery.envelope.id, group = %delivery.group, error = %err, "could not re-publish the delivery; giving it back to its queue");
            let (channel, tag) = (token.channel.clone(), token.tag);
            tokio::spawn(async move {
                tokio::time::sleep(GIVE_BACK_AFTER).await;
                if let Err(err) = channel.nack_requeue(tag).await {
                    tracing::debug!(error = %err, "giving back a delivery failed; its channel is gone, so the broker redelivers it");
                }
            });
            Err(err)
        }
    }
}

/// `multiple` acks up to `tag`.
pub(super) fn ack_options(multiple: bool) -> BasicAckOptions {
    BasicAckOptions { multiple }
}
