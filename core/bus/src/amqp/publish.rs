//! Publishing with publisher confirms: every message of a batch is sent, then every confirm is
//! awaited (pipelined), within the configured confirm timeout.

use super::Shared;
use crate::BusError;
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Channel, Confirmation};

/// One message to publish.
#[derive(Debug)]
pub(super) struct Publish<'a> {
    pub(super) exchange: String,
    pub(super) routing_key: String,
    /// Have the broker return it when no queue takes it (then it is `Rejected`).
    pub(super) mandatory: bool,
    pub(super) properties: BasicProperties,
    pub(super) body: &'a [u8],
}

/// Publishes `batch` on `channel` (in confirm mode) and waits for every confirm. The first
/// failure is returned once all have been awaited.
pub(super) async fn confirmed(shared: &Shared, channel: &Channel, batch: Vec<Publish<'_>>) -> Result<(), BusError> {
    let mut pending = Vec::with_capacity(batch.len());
    for message in batch {
        let options = BasicPublishOptions { mandatory: message.mandatory, immediate: false };
        let exchange = super::mapping::short(&message.exchange)?;
        let routing_key = super::mapping::short(&message.routing_key)?;
        let confirm = channel
            .basic_publish(exchange, routing_key, options, message.body, message.properties)
            .await
            .map_err(|e| unavailable(shared, e))?;
        pending.push((message.routing_key, confirm));
    }
    let deadline = tokio::time::Instant::now() + shared.config.confirm_timeout;
    let mut first_error = None;
    for (routing_key, confirm) in pending {
        let outcome = match tokio::time::timeout_at(deadline, confirm).await {
            Err(_) => Err(BusError::Timeout(format!("no publisher confirm within {:?}", shared.config.confirm_timeout))),
            Ok(Err(err)) => Err(unavailable(shared, err)),
            Ok(Ok(Confirmation::Ack(None) | Confirmation::NotRequested)) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(returned)))) => {
                Err(BusError::Rejected(format!("no queue took '{routing_key}' ({})", returned.reply_text)))
            }
            Ok(Ok(Confirmation::Nack(_))) => Err(BusError::Rejected(format!("the broker nacked '{routing_key}'"))),
        };
        if let Err(err) = outcome {
            first_error.get_or_insert(err);
        }
    }
    first_error.map_or(Ok(()), Err)
}

fn unavailable(shared: &Shared, err: lapin::Error) -> BusError {
    BusError::Unavailable(shared.redact(&err.to_string()))
}
