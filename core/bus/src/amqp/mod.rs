//! The RabbitMQ transport (via `lapin`): publishing with confirms (mandatory messages one batch
//! at a time, so each return is matched to its message), group queues, retry through
//! per-delay queues, dead-lettering, direct reply-to requests, and reconnection.

mod link;
mod mapping;
mod publish;
mod settle;
mod subscriber;

use crate::config::{BusConfig, redact_url};
use crate::envelope::Envelope;
use crate::message::Exchange;
use crate::subscription::{QueueStats, Subscriber as BusSubscriber, Subscription};
use crate::topology::{DEAD_LETTER_GROUP, Names};
use crate::{BusError, telemetry, topic};
use lapin::options::{ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use link::Link;
use publish::Publish;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::{oneshot, watch};

pub(crate) use settle::{ack, dead_letter, requeue, retry};
pub(crate) use subscriber::Subscriber;

pub(crate) const TRANSPORT: &str = "rabbitmq";

/// The RabbitMQ transport behind [`crate::Bus::Amqp`].
#[derive(Debug, Clone)]
pub struct AmqpBus {
    shared: Arc<Shared>,
}

/// What every clone of a bus, its subscribers and its deliveries share.
pub(crate) struct Shared {
    /// Holds the password: never logged, never in `Debug`.
    url: String,
    redacted_url: String,
    password: Option<String>,
    config: BusConfig,
    names: Names,
    link: watch::Sender<Option<Arc<Link>>>,
    closed: AtomicBool,
    generation: AtomicU64,
    /// Group queues (with their bindings) and the dead-letter queue this bus declared.
    queues: Mutex<BTreeMap<String, QueueRecord>>,
    retry_queues: Mutex<BTreeSet<String>>,
    replies: Mutex<HashMap<String, oneshot::Sender<Envelope>>>,
    /// Channels of dropped subscribers still closing.
    closing_channels: AtomicUsize,
}

/// A group queue to re-declare: queue, group, (exchange, pattern) bindings.
type GroupQueue = (String, String, Vec<(Exchange, String)>);

#[derive(Debug, Clone)]
struct QueueRecord {
    group: String,
    /// (exchange kind, pattern).
    bindings: BTreeSet<(&'static str, String)>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("url", &self.redacted_url)
            .field("prefix", &self.config.prefix)
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn redact(&self, text: &str) -> String {
        match &self.password {
            Some(password) => text.replace(password.as_str(), "***"),
            _ => text.to_owned(),
        }
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::SeqCst) + 1
    }

    fn current(&self) -> Option<Arc<Link>> {
        self.link.borrow().clone()
    }

    /// Replaces the live link; true when that changed whether there is one.
    fn set_link(&self, link: Option<Arc<Link>>) -> bool {
        let was = self.link.send_replace(link.clone()).is_some();
        was != link.is_some()
    }

    /// The live link, or `Unavailable` at once (callers retry).
    fn live(&self) -> Result<Arc<Link>, BusError> {
        if self.is_closed() {
            return Err(BusError::Closed);
        }
        match self.current() {
            Some(link) if link.is_up() => Ok(link),
            _ => Err(BusError::Unavailable(format!("not connected to {} (reconnecting)", self.redacted_url))),
        }
    }

    /// Waits until there is a live link, or the bus is closed.
    async fn wait_live(&self) -> Result<Arc<Link>, BusError> {
        let mut rx = self.link.subscribe();
        loop {
            if self.is_closed() {
                return Err(BusError::Closed);
            }
            if let Some(link) = rx.borrow_and_update().clone()
                && link.is_up()
            {
                return Ok(link);
            }
            // Wakes on a new link or on close; the timeout covers a link that died in place.
            let _ = tokio::time::timeout(Duration::from_millis(500), rx.changed()).await;
        }
    }

    fn remember_group(&self, queue: &str, subscription: &Subscription) {
        let mut queues = lock(&self.queues);
        let record =
            queues.entry(queue.to_owned()).or_insert_with(|| QueueRecord { group: subscription.group.clone(), bindings: BTreeSet::new() });
        record.bindings.extend(subscription.bindings.iter().map(|p| (subscription.exchange.kind(), p.clone())));
    }

    fn remember_retry_queue(&self, queue: &str) {
        lock(&self.retry_queues).insert(queue.to_owned());
    }

    /// (queue, group, bindings) of every group queue.
    fn known_groups(&self) -> Vec<GroupQueue> {
        lock(&self.queues)
            .iter()
            .filter(|(_, r)| r.group != DEAD_LETTER_GROUP)
            .map(|(queue, r)| {
                (
                    queue.clone(),
                    r.group.clone(),
                    r.bindings.iter().filter_map(|(kind, p)| Some((Exchange::from_kind(kind)?, p.clone()))).collect(),
                )
            })
            .collect()
    }

    fn take_reply_waiter(&self, correlation_id: &str) -> Option<oneshot::Sender<Envelope>> {
        lock(&self.replies).remove(correlation_id)
    }
}

/// Identifies an unacknowledged AMQP delivery: its channel and tag.
#[derive(Debug)]
pub(crate) struct Token {
    shared: Arc<Shared>,
    channel: Arc<subscriber::ChannelHold>,
    tag: u64,
}

impl AmqpBus {
    pub(crate) async fn connect(url: &str, config: BusConfig) -> Result<Self, BusError> {
        let names = Names::new(&config.prefix)?;
        let uri: lapin::uri::AMQPUri = url.parse().map_err(|_| BusError::Invalid(format!("bad AMQP URL {}", redact_url(url))))?;
        let password = Some(uri.authority.userinfo.password).filter(|p| p.len() >= 3);
        let mut queues = BTreeMap::new();
        queues.insert(names.dead_letter_queue(), QueueRecord { group: DEAD_LETTER_GROUP.to_owned(), bindings: BTreeSet::new() });
        let shared = Arc::new(Shared {
            url: url.to_owned(),
            redacted_url: redact_url(url),
            password,
            config,
            names,
            link: watch::Sender::new(None),
            closed: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            queues: Mutex::new(queues),
            retry_queues: Mutex::new(BTreeSet::new()),
            replies: Mutex::new(HashMap::new()),
            closing_channels: AtomicUsize::new(0),
        });
        let link = Link::open(&shared, shared.next_generation()).await?;
        tracing::info!(url = %shared.redacted_url, prefix = %shared.config.prefix, "bus connected");
        shared.set_link(Some(Arc::new(link)));
        link::spawn_supervisor(&shared);
        Ok(Self { shared })
    }

    pub(crate) fn config(&self) -> &BusConfig {
        &self.shared.config
    }

    pub(crate) async fn publish(&self, envelope: &Envelope) -> Result<(), BusError> {
        self.publish_each(std::slice::from_ref(envelope)).await.pop().unwrap_or(Ok(()))
    }

    /// Publishes every envelope and awaits every confirm; one outcome per envelope, in order.
    pub(crate) async fn publish_each(&self, envelopes: &[Envelope]) -> Vec<Result<(), BusError>> {
        let link = match self.shared.live() {
            Ok(link) => link,
            Err(err) => return envelopes.iter().map(|_| Err(err.clone())).collect(),
        };
        let mut outcomes: Vec<Result<(), BusError>> = Vec::with_capacity(envelopes.len());
        let mut batch = Vec::with_capacity(envelopes.len());
        let mut sent = Vec::with_capacity(envelopes.len());
        for (index, envelope) in envelopes.iter().enumerate() {
            tracing::debug!(envelope.id = %envelope.id, envelope.kind = %envelope.kind, request_id = envelope.trace.request_id.as_deref(), routing_key = %envelope.routing_key, "publish");
            outcomes.push(Ok(()));
            let properties = match topic::validate_routing_key(&envelope.routing_key).and_then(|()| mapping::properties(envelope)) {
                Ok(properties) => properties,
                Err(err) => {
                    outcomes[index] = Err(err);
                    continue;
                }
            };
            batch.push(Publish {
                exchange: self.shared.names.exchange(envelope.exchange),
                routing_key: envelope.routing_key.clone(),
                // An event no group binds is dropped; a command must reach a queue.
                mandatory: envelope.exchange == Exchange::Commands,
                properties,
                body: envelope.data.clone(),
            });
            sent.push(index);
        }
        for (index, outcome) in sent.into_iter().zip(publish::confirmed(&self.shared, &link, batch).await) {
            if outcome.is_ok() {
                telemetry::published(TRANSPORT, envelopes[index].exchange, 1);
            }
            outcomes[index] = outcome;
        }
        outcomes
    }

    pub(crate) async fn subscribe(&self, subscription: Subscription) -> Result<BusSubscriber, BusError> {
        let queue = self.shared.names.group_queue(&subscription.group)?;
        for pattern in &subscription.bindings {
            topic::validate_pattern(pattern)?;
        }
        if self.shared.is_closed() {
            return Err(BusError::Closed);
        }
        let subscriber = Subscriber::start(
            self.shared.clone(),
            queue.clone(),
            Some(subscription.clone()),
            subscription.group.clone(),
            subscription.prefetch,
        )
        .await?;
        // Only once the broker took the declare: a group it refused would fail every reconnection.
        self.shared.remember_group(&queue, &subscription);
        Ok(BusSubscriber::amqp(subscriber))
    }

    pub(crate) async fn declare(&self, subscription: &Subscription) -> Result<(), BusError> {
        let queue = self.shared.names.group_queue(&subscription.group)?;
        for pattern in &subscription.bindings {
            topic::validate_pattern(pattern)?;
        }
        let link = self.shared.live()?;
        // A channel of its own: a failed declare closes the channel it is made on.
        let channel = link.connection.create_channel().await?;
        link::declare_group_queue(&channel, &self.shared.names, &queue, &subscription.group).await?;
        for pattern in &subscription.bindings {
            link::bind(&channel, &self.shared.names, &queue, subscription.exchange, pattern).await?;
        }
        let _ = channel.close(200, "OK".into()).await;
        // Only once the broker took the declare: a group it refused would fail every reconnection.
        self.shared.remember_group(&queue, subscription);
        Ok(())
    }

    pub(crate) async fn dead_letters(&self) -> Result<BusSubscriber, BusError> {
        let queue = self.shared.names.dead_letter_queue();
        let subscriber = Subscriber::start(self.shared.clone(), queue, None, DEAD_LETTER_GROUP.to_owned(), 100).await?;
        Ok(BusSubscriber::amqp(subscriber))
    }

    pub(crate) async fn request(&self, envelope: &Envelope, timeout: Duration) -> Result<Envelope, BusError> {
        let link = self.shared.live()?;
        topic::validate_routing_key(&envelope.routing_key)?;
        let correlation_id = uuid::Uuid::new_v4().to_string();
        let properties =
            mapping::properties(envelope)?.with_reply_to(link::REPLY_TO.into()).with_correlation_id(mapping::short(&correlation_id)?);
        let (tx, rx) = oneshot::channel();
        lock(&self.shared.replies).insert(correlation_id.clone(), tx);
        // However the request ends (a reply, an error, the timeout, the caller giving up), no
        // waiter is left.
        let _forget = crate::OnDrop(|| {
            lock(&self.shared.replies).remove(&correlation_id);
        });
        let publish = Publish {
            exchange: self.shared.names.exchange(envelope.exchange),
            routing_key: envelope.routing_key.clone(),
            mandatory: true,
            properties,
            body: envelope.data.clone(),
        };
        tracing::debug!(envelope.id = %envelope.id, envelope.kind = %envelope.kind, request_id = envelope.trace.request_id.as_deref(), "request");
        publish::confirmed_one(&self.shared, &link, publish).await?;
        telemetry::published(TRANSPORT, envelope.exchange, 1);
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(BusError::Closed),
            Err(_) => Err(BusError::Timeout(format!("no reply to {} within {timeout:?}", envelope.id))),
        }
    }

    pub(crate) async fn reply(&self, reply_to: &str, correlation_id: Option<&str>, reply: &Envelope) -> Result<(), BusError> {
        let link = self.shared.live()?;
        let mut properties = mapping::properties(reply)?;
        if let Some(correlation_id) = correlation_id {
            properties = properties.with_correlation_id(mapping::short(correlation_id)?);
        }
        let mut headers = mapping::headers(reply);
        mapping::put_origin(&mut headers, reply);
        let publish = Publish {
            exchange: String::new(),
            routing_key: reply_to.to_owned(),
            mandatory: false,
            properties: properties.with_headers(headers),
            body: reply.data.clone(),
        };
        publish::confirmed_one(&self.shared, &link, publish).await
    }

    pub(crate) async fn replay(&self, group: &str, envelope: &Envelope) -> Result<(), BusError> {
        let queue = self.shared.names.group_queue(group)?;
        let link = self.shared.live()?;
        let mut headers = mapping::headers(envelope);
        mapping::put_origin(&mut headers, envelope);
        let publish = Publish {
            exchange: String::new(),
            routing_key: queue,
            mandatory: true,
            properties: mapping::properties(envelope)?.with_headers(headers),
            body: envelope.data.clone(),
        };
        publish::confirmed_one(&self.shared, &link, publish).await.map_err(|err| match err {
            BusError::Rejected(_) => BusError::Invalid(format!("group '{group}' has no queue")),
            other => other,
        })
    }

    pub(crate) async fn queue_stats(&self) -> Result<Vec<QueueStats>, BusError> {
        let link = self.shared.live()?;
        let queues: Vec<(String, String)> = lock(&self.shared.queues).iter().map(|(q, r)| (q.clone(), r.group.clone())).collect();
        let mut stats = Vec::with_capacity(queues.len());
        let mut channel = link.connection.create_channel().await?;
        for (queue, group) in queues {
            match channel
                .queue_declare(mapping::short(&queue)?, QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
                .await
            {
                Ok(declared) => stats.push(QueueStats {
                    queue,
                    group,
                    messages: u64::from(declared.message_count()),
                    consumers: declared.consumer_count(),
                }),
                // Gone (deleted by hand): the failed passive declare closed the channel.
                Err(_) => channel = link.connection.create_channel().await?,
            }
        }
        let _ = channel.close(200, "OK".into()).await;
        Ok(stats)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.shared.live().is_ok()
    }

    pub(crate) async fn close(&self) {
        self.settle_closing_channels().await;
        self.shared.closed.store(true, Ordering::SeqCst);
        let link = self.shared.link.send_replace(None);
        lock(&self.shared.replies).clear();
        if let Some(link) = link {
            let _ = tokio::time::timeout(Duration::from_secs(5), link.connection.close(200, "closing".into())).await;
        }
    }

    /// Waits (a while) for the channels of dropped subscribers to finish closing.
    async fn settle_closing_channels(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.shared.closing_channels.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub(crate) async fn delete_topology(&self) -> Result<(), BusError> {
        // A queue deleted under a consumer whose channel is closing can upset lapin.
        self.settle_closing_channels().await;
        // After `close`, on a connection of its own.
        let (channel, temporary) = if self.shared.is_closed() {
            let connection = Connection::connect(&self.shared.url, ConnectionProperties::default())
                .await
                .map_err(|e| BusError::Unavailable(self.shared.redact(&e.to_string())))?;
            (connection.create_channel().await?, Some(connection))
        } else {
            (self.shared.live()?.connection.create_channel().await?, None)
        };
        let queues: Vec<String> =
            lock(&self.shared.queues).keys().cloned().chain(lock(&self.shared.retry_queues).iter().cloned()).collect();
        for queue in queues {
            channel.queue_delete(mapping::short(&queue)?, QueueDeleteOptions::default()).await?;
        }
        let names = &self.shared.names;
        for exchange in [names.exchange(Exchange::Events), names.exchange(Exchange::Commands), names.dead_exchange()] {
            channel.exchange_delete(mapping::short(&exchange)?, ExchangeDeleteOptions::default()).await?;
        }
        let _ = channel.close(200, "OK".into()).await;
        if let Some(connection) = temporary {
            let _ = connection.close(200, "OK".into()).await;
        }
        lock(&self.shared.queues).retain(|_, r| r.group == DEAD_LETTER_GROUP);
        lock(&self.shared.retry_queues).clear();
        Ok(())
    }
}
