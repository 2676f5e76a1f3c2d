//! Publishing with publisher confirms, one outcome per message.
//!
//! lapin does not tie a `basic.return` to its message: it queues returns and hands the oldest to
//! whichever confirm it processes next. So messages that may come back (`mandatory`: commands,
//! requests, retries, dead letters, replays) go through one channel of their own, one batch at a
//! time (the lock is held from the first `basic.publish` until every confirm of the batch is in),
//! and each return is matched to its message by the returned properties (message id, exchange,
//! routing key), not by the confirm that carried it. The other messages (events, replies) are
//! pipelined on the publisher channel, which never sees a return.

use super::link::{self, Link};
use super::{Shared, mapping};
use crate::BusError;
use lapin::message::BasicReturnMessage;
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Channel, Confirmation};
use std::sync::Arc;

/// One message to publish.
#[derive(Debug)]
pub(super) struct Publish {
    pub(super) exchange: String,
    pub(super) routing_key: String,
    /// Have the broker return it when no queue takes it (then it is `Rejected`).
    pub(super) mandatory: bool,
    pub(super) properties: BasicProperties,
    pub(super) body: Vec<u8>,
}

/// What identifies a published message in a `basic.return`.
#[derive(Debug)]
struct ReturnKey {
    message_id: Option<String>,
    exchange: String,
    routing_key: String,
}

impl ReturnKey {
    fn of(message: &Publish) -> Self {
        Self {
            message_id: message.properties.message_id().as_ref().map(|m| m.as_str().to_owned()),
            exchange: message.exchange.clone(),
            routing_key: message.routing_key.clone(),
        }
    }

    fn matches(&self, returned: &BasicReturnMessage) -> bool {
        let delivery = &returned.delivery;
        self.message_id.as_deref() == delivery.properties.message_id().as_ref().map(|m| m.as_str())
            && self.exchange == delivery.exchange.as_str()
            && self.routing_key == delivery.routing_key.as_str()
    }
}

/// Publishes `batch` and waits for every confirm (within the confirm timeout). One outcome per
/// message, in order: `Ok` only when the broker confirmed it and, when mandatory, did not return
/// it. Order is kept among the mandatory messages and among the others.
pub(super) async fn confirmed(shared: &Arc<Shared>, link: &Arc<Link>, batch: Vec<Publish>) -> Vec<Result<(), BusError>> {
    let count = batch.len();
    let (mut returning, mut plain) = (Vec::new(), Vec::new());
    for (index, message) in batch.into_iter().enumerate() {
        if message.mandatory { returning.push((index, message)) } else { plain.push((index, message)) }
    }
    let (returning_indexes, returning): (Vec<usize>, Vec<Publish>) = returning.into_iter().unzip();
    let (plain_indexes, plain): (Vec<usize>, Vec<Publish>) = plain.into_iter().unzip();
    let (returning_outcomes, plain_outcomes) = tokio::join!(through_returning(shared, link, returning), async {
        if plain.is_empty() { Vec::new() } else { publish_batch(shared, &link.publisher, plain).await.outcomes }
    });
    let mut outcomes: Vec<Option<Result<(), BusError>>> = (0..count).map(|_| None).collect();
    for (index, outcome) in returning_indexes.into_iter().zip(returning_outcomes).chain(plain_indexes.into_iter().zip(plain_outcomes)) {
        outcomes[index] = Some(outcome);
    }
    outcomes.into_iter().map(|o| o.unwrap_or_else(|| Err(BusError::Unavailable("not published".into())))).collect()
}

/// [`confirmed`] for one message.
pub(super) async fn confirmed_one(shared: &Arc<Shared>, link: &Arc<Link>, message: Publish) -> Result<(), BusError> {
    confirmed(shared, link, vec![message]).await.pop().unwrap_or(Ok(()))
}

/// Publishes mandatory messages on the link's returning channel, one batch at a time.
async fn through_returning(shared: &Arc<Shared>, link: &Arc<Link>, batch: Vec<Publish>) -> Vec<Result<(), BusError>> {
    if batch.is_empty() {
        return Vec::new();
    }
    let count = batch.len();
    let guard = link.returning.clone().lock_owned().await;
    let (shared, link) = (shared.clone(), link.clone());
    // A task of its own, holding the lock: a caller that gives up midway cannot leave confirms
    // (and returns) of this channel behind for the next batch.
    let task = tokio::spawn(async move {
        let mut guard = guard;
        let channel = match guard.as_ref().filter(|c| c.status().connected()) {
            Some(channel) => channel.clone(),
            None => match link::open_returning(&shared, &link.connection).await {
                Ok(channel) => {
                    *guard = Some(channel.clone());
                    channel
                }
                Err(err) => {
                    let err = BusError::Unavailable(shared.redact(&err.to_string()));
                    return (0..count).map(|_| Err(err.clone())).collect();
                }
            },
        };
        let keys: Vec<ReturnKey> = batch.iter().map(ReturnKey::of).collect();
        let Published { mut outcomes, returned, mut spoiled } = publish_batch(&shared, &channel, batch).await;
        let mut matched = vec![false; keys.len()];
        for message in returned {
            match (0..keys.len()).find(|&i| !matched[i] && keys[i].matches(&message)) {
                Some(i) => {
                    matched[i] = true;
                    outcomes[i] = Err(BusError::Rejected(format!("no queue took '{}' ({})", keys[i].routing_key, message.reply_text)));
                }
                None => {
                    // Cannot happen while one batch at a time is in flight; a channel whose
                    // returns cannot be accounted for is not used again.
                    tracing::error!(routing_key = %message.delivery.routing_key, "a returned message matches nothing of its batch; renewing the channel");
                    spoiled = true;
                }
            }
        }
        if spoiled {
            // Confirms or returns still owed on it must not reach a later batch.
            *guard = None;
            tokio::spawn(async move {
                let _ = channel.close(200, "renewing the publishing channel".into()).await;
            });
        }
        outcomes
    });
    match task.await {
        Ok(outcomes) => outcomes,
        Err(err) => (0..count).map(|_| Err(BusError::Unavailable(format!("publishing failed: {err}")))).collect(),
    }
}

/// What a batch came to.
struct Published {
    outcomes: Vec<Result<(), BusError>>,
    /// Returned messages the confirms carried (any confirm may carry any message's return).
    returned: Vec<BasicReturnMessage>,
    /// The channel failed or owes confirms: it must not carry another batch.
    spoiled: bool,
}

/// Publishes `batch` on `channel` (in confirm mode) and waits for every confirm.
async fn publish_batch(shared: &Shared, channel: &Channel, batch: Vec<Publish>) -> Published {
    let mut outcomes: Vec<Result<(), BusError>> = Vec::with_capacity(batch.len());
    let mut pending = Vec::with_capacity(batch.len());
    let mut spoiled = false;
    for message in batch {
        let index = outcomes.len();
        outcomes.push(Ok(()));
        if spoiled {
            outcomes[index] = Err(BusError::Unavailable("the channel failed earlier in the batch".into()));
            continue;
        }
        let (exchange, routing_key) = match (mapping::short(&message.exchange), mapping::short(&message.routing_key)) {
            (Ok(exchange), Ok(routing_key)) => (exchange, routing_key),
            (Err(err), _) | (_, Err(err)) => {
                outcomes[index] = Err(err);
                continue;
            }
        };
        let options = BasicPublishOptions { mandatory: message.mandatory, immediate: false };
        match channel.basic_publish(exchange, routing_key, options, &message.body, message.properties).await {
            Ok(confirm) => pending.push((index, message.routing_key, confirm)),
            Err(err) => {
                outcomes[index] = Err(unavailable(shared, err));
                spoiled = true;
            }
        }
    }
    let deadline = tokio::time::Instant::now() + shared.config.confirm_timeout;
    let mut returned = Vec::new();
    for (index, routing_key, confirm) in pending {
        outcomes[index] = match tokio::time::timeout_at(deadline, confirm).await {
            Err(_) => {
                spoiled = true;
                Err(BusError::Timeout(format!("no publisher confirm within {:?}", shared.config.confirm_timeout)))
            }
            Ok(Err(err)) => {
                spoiled = true;
                Err(unavailable(shared, err))
            }
            Ok(Ok(Confirmation::Ack(message))) => {
                returned.extend(message);
                Ok(())
            }
            Ok(Ok(Confirmation::NotRequested)) => Ok(()),
            Ok(Ok(Confirmation::Nack(message))) => {
                returned.extend(message);
                Err(BusError::Rejected(format!("the broker nacked '{routing_key}'")))
            }
        };
    }
    Published { outcomes, returned, spoiled }
}

fn unavailable(shared: &Shared, err: lapin::Error) -> BusError {
    BusError::Unavailable(shared.redact(&err.to_string()))
}
