//! One live AMQP connection with its channels (publishing with confirms: one pipelined channel
//! for messages that cannot come back, one for mandatory messages that also consumes direct
//! reply-to), the topology it declares on opening, and the supervisor that replaces it with
//! capped exponential backoff when it drops.

use super::{Shared, mapping};
use crate::BusError;
use crate::envelope::Envelope;
use crate::message::Exchange;
use crate::topology::Names;
use futures::StreamExt as _;
use lapin::options::{BasicConsumeOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

/// The pseudo-queue of RabbitMQ's direct reply-to.
pub(super) const REPLY_TO: &str = "amq.rabbitmq.reply-to";
const OPEN_TIMEOUT: Duration = Duration::from_secs(15);
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);
const WATCH_INTERVAL: Duration = Duration::from_millis(250);

/// A live connection.
#[derive(Debug)]
pub(crate) struct Link {
    pub(super) generation: u64,
    pub(super) connection: Connection,
    /// Confirm mode; messages published without `mandatory` (events, replies), pipelined.
    pub(super) publisher: Channel,
    /// Confirm mode, consuming direct reply-to: every `mandatory` publish (commands, requests,
    /// retries, dead letters, replays), one batch at a time under this lock
    /// ([`super::publish`]). `None` once spoiled (a confirm timed out, the broker closed it):
    /// the next batch opens a fresh one.
    pub(super) returning: Arc<tokio::sync::Mutex<Option<Channel>>>,
    retry_declared: Mutex<HashSet<String>>,
}

impl Link {
    /// Connected, with the publisher channel open (a publisher channel closed by a broker error,
    /// such as publishing to a deleted exchange, makes the link unusable: the supervisor replaces
    /// it; the returning channel is renewed by the next batch instead).
    pub(super) fn is_up(&self) -> bool {
        self.connection.status().connected() && self.publisher.status().connected()
    }

    /// Connects, declares the topology (and every group queue seen so far) and opens the
    /// channels.
    pub(super) async fn open(shared: &Arc<Shared>, generation: u64) -> Result<Link, BusError> {
        match tokio::time::timeout(OPEN_TIMEOUT, Self::open_inner(shared, generation)).await {
            Ok(Err(BusError::Unavailable(why))) => Err(BusError::Unavailable(format!("{}: {}", shared.redacted_url, shared.redact(&why)))),
            Ok(result) => result,
            Err(_) => Err(BusError::Unavailable(format!("connecting to {} timed out", shared.redacted_url))),
        }
    }

    async fn open_inner(shared: &Arc<Shared>, generation: u64) -> Result<Link, BusError> {
        let properties = ConnectionProperties::default().with_connection_name(format!("crm-bus {}", shared.config.prefix).into());
        let connection = Connection::connect(&shared.url, properties).await?;
        let publisher = connection.create_channel().await?;
        declare_topology(&publisher, shared).await?;
        declare_known_groups(&connection, shared).await?;
        publisher.confirm_select(ConfirmSelectOptions::default()).await?;
        let returning = open_returning(shared, &connection).await?;
        Ok(Link {
            generation,
            connection,
            publisher,
            returning: Arc::new(tokio::sync::Mutex::new(Some(returning))),
            retry_declared: Mutex::new(HashSet::new()),
        })
    }

    /// Declares the delay queue of `group` for `delay` once per connection.
    pub(super) async fn ensure_retry_queue(&self, shared: &Shared, group: &str, delay: Duration) -> Result<String, BusError> {
        let name = shared.names.retry_queue(group, delay);
        if self.retry_declared.lock().unwrap_or_else(PoisonError::into_inner).contains(&name) {
            return Ok(name);
        }
        let target = shared.names.group_queue(group)?;
        // A quorum queue dead-letters its expired messages at least once (classic queues at most
        // once: a broker crash in between would lose the retry); that needs `reject-publish`.
        let mut args = quorum();
        args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)));
        args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(LongString::from("")));
        args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(target.into()));
        args.insert("x-dead-letter-strategy".into(), AMQPValue::LongString("at-least-once".into()));
        args.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
        // A channel of its own: a failed declare closes the channel it is made on.
        let channel = self.connection.create_channel().await?;
        channel.queue_declare(mapping::short(&name)?, QueueDeclareOptions::durable(), args).await?;
        let _ = channel.close(200, "OK".into()).await;
        shared.remember_retry_queue(&name);
        self.retry_declared.lock().unwrap_or_else(PoisonError::into_inner).insert(name.clone());
        Ok(name)
    }
}

/// A channel for `mandatory` publishes: confirm mode, consuming direct reply-to (a request's
/// reply comes back on the channel it was published on).
pub(super) async fn open_returning(shared: &Arc<Shared>, connection: &Connection) -> Result<Channel, BusError> {
    let channel = connection.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    let replies = channel
        .basic_consume(REPLY_TO.into(), "".into(), BasicConsumeOptions { no_ack: true, ..Default::default() }, FieldTable::default())
        .await?;
    tokio::spawn(route_replies(Arc::downgrade(shared), replies));
    Ok(channel)
}

/// The exchanges and the dead-letter queue.
async fn declare_topology(channel: &Channel, shared: &Shared) -> Result<(), BusError> {
    let names = &shared.names;
    let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
    for exchange in [names.exchange(Exchange::Events), names.exchange(Exchange::Commands), names.dead_exchange()] {
        channel.exchange_declare(mapping::short(&exchange)?, ExchangeKind::Topic, durable, FieldTable::default()).await?;
    }
    let dead_letters = names.dead_letter_queue();
    channel.queue_declare(mapping::short(&dead_letters)?, QueueDeclareOptions::durable(), quorum()).await?;
    channel
        .queue_bind(
            mapping::short(&dead_letters)?,
            mapping::short(&names.dead_exchange())?,
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// Every group queue (and its bindings) known to `shared`, each on a channel that a refused
/// declare has not closed. A group the broker refuses now (a queue of that name was re-created
/// with other arguments) is logged and skipped: it must not keep the whole bus from connecting;
/// its subscribers keep trying to consume, and log why they cannot.
async fn declare_known_groups(connection: &Connection, shared: &Shared) -> Result<(), BusError> {
    let names = &shared.names;
    let mut channel = connection.create_channel().await?;
    for (queue, group, bindings) in shared.known_groups() {
        let declared = async {
            declare_group_queue(&channel, names, &queue, &group).await?;
            for (exchange, pattern) in bindings {
                bind(&channel, names, &queue, exchange, &pattern).await?;
            }
            Ok::<_, BusError>(())
        }
        .await;
        if let Err(err) = declared {
            if !connection.status().connected() {
                return Err(err);
            }
            tracing::error!(queue, group, error = %shared.redact(&err.to_string()), "the broker refused to re-declare a group queue; connecting without it (its subscribers keep retrying)");
            if !channel.status().connected() {
                channel = connection.create_channel().await?;
            }
        }
    }
    let _ = channel.close(200, "OK".into()).await;
    Ok(())
}

fn quorum() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    args
}

/// A group's durable quorum queue; what the broker itself dead-letters goes to `<prefix>.dead`.
pub(super) async fn declare_group_queue(channel: &Channel, names: &Names, queue: &str, group: &str) -> Result<(), BusError> {
    let mut args = quorum();
    args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(names.dead_exchange().into()));
    args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(group.into()));
    channel.queue_declare(mapping::short(queue)?, QueueDeclareOptions::durable(), args).await?;
    Ok(())
}

pub(super) async fn bind(channel: &Channel, names: &Names, queue: &str, exchange: Exchange, pattern: &str) -> Result<(), BusError> {
    channel
        .queue_bind(
            mapping::short(queue)?,
            mapping::short(&names.exchange(exchange))?,
            mapping::short(pattern)?,
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// Hands each direct reply-to delivery to the request waiting for its correlation id.
async fn route_replies(shared: Weak<Shared>, mut replies: lapin::Consumer) {
    while let Some(Ok(delivery)) = replies.next().await {
        let Some(shared) = shared.upgrade() else { return };
        let Some(correlation_id) = delivery.properties.correlation_id().as_ref().map(|c| c.as_str().to_owned()) else { continue };
        let Some(waiter) = shared.take_reply_waiter(&correlation_id) else { continue };
        match mapping::decode(&shared.names, &delivery) {
            Ok(decoded) => {
                let _ = waiter.send(decoded.envelope);
            }
            Err(reason) => {
                tracing::warn!(correlation_id, reason, "undecodable reply dropped");
                let _ = waiter.send(undecodable_reply(&delivery, &reason));
            }
        }
    }
}

/// A reply whose headers were garbled still answers its request: as an `unknown` envelope with
/// the raw body, so the requester sees what came back.
fn undecodable_reply(delivery: &lapin::message::Delivery, reason: &str) -> Envelope {
    Envelope {
        id: uuid::Uuid::now_v7().to_string(),
        source: "unknown".into(),
        kind: "unknown".into(),
        time: chrono::Utc::now(),
        subject: Some(reason.to_owned()),
        exchange: Exchange::Events,
        routing_key: String::new(),
        trace: Default::default(),
        data: delivery.data.clone(),
    }
}

/// Watches the live connection and replaces it when it drops, until the bus is closed or gone.
pub(super) fn spawn_supervisor(shared: &Arc<Shared>) {
    let weak = Arc::downgrade(shared);
    tokio::spawn(async move {
        let mut backoff = RECONNECT_MIN;
        loop {
            {
                let Some(shared) = weak.upgrade() else { return };
                if shared.is_closed() {
                    return;
                }
                if shared.current().is_some_and(|link| link.is_up()) {
                    drop(shared);
                    tokio::time::sleep(WATCH_INTERVAL).await;
                    continue;
                }
                if let Some(link) = shared.current().filter(|link| link.connection.status().connected()) {
                    tracing::warn!(url = %shared.redacted_url, "a bus channel was closed by the broker; reconnecting");
                    let _ =
                        tokio::time::timeout(Duration::from_secs(5), link.connection.close(200, "replacing a closed channel".into())).await;
                }
                if shared.set_link(None) {
                    tracing::warn!(url = %shared.redacted_url, "bus connection lost; reconnecting");
                }
                match Link::open(&shared, shared.next_generation()).await {
                    Ok(link) => {
                        if shared.is_closed() {
                            let _ = link.connection.close(200, "OK".into()).await;
                            return;
                        }
                        tracing::info!(url = %shared.redacted_url, generation = link.generation, "bus reconnected");
                        shared.set_link(Some(Arc::new(link)));
                        backoff = RECONNECT_MIN;
                        continue;
                    }
                    Err(err) => tracing::warn!(url = %shared.redacted_url, error = %err, retry_in = ?backoff, "bus reconnect failed"),
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(RECONNECT_MAX);
        }
    });
}
