//! The connector lifecycle: declare the core's event queue (so that no event is published into
//! nothing), heartbeat, `init`, subscribe to its channel's command queue
//! (`connector.<channel>.commands`), dispatch deliveries to the handler concurrently up to a
//! limit, settle each one after its handler finished (ack / retry / dead-letter / reply), heartbeats every interval, and graceful
//! shutdown.
//!
//! Shutdown, when the [`ConnectorContext::shutdown`] token fires (SIGTERM / SIGINT for a
//! process): a `stopping` heartbeat; no new deliveries are taken; in-flight commands get
//! [`RunSettings::shutdown_timeout`] to finish, after which the stragglers are stopped and their
//! commands requeued; the subscription is dropped, which gives the deliveries it had prefetched
//! but not started back to the queue; [`Connector::shutdown`]; the last `stopping` heartbeat;
//! the bus is closed if the connector owns it (its own process).

use crate::connector::{Command, Connector, HandlerError, Health, Hub, Outcome};
use crate::instance::default_instance;
use crate::publisher::{Backoff, PublishError, Publisher, retry_while_unreachable};
use anyhow::Context as _;
use crm_bus::message::{ConnectorState, Heartbeat};
use crm_bus::message::{command_group, core_events};
use crm_bus::{Bus, BusError, Envelope, Exchange};
use crm_bus::{Delivery, Subscriber, Subscription};
use futures::FutureExt as _;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

/// How the runner runs a connector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSettings {
    /// This instance's name; default `<hostname>-<pid>`.
    pub instance: Option<String>,
    /// Unacknowledged deliveries the bus may hand this instance at once (they are held in
    /// memory: with files in messages, mind prefetch × the largest message).
    pub prefetch: u16,
    /// Commands handled concurrently.
    pub max_in_flight: usize,
    /// Time between heartbeats.
    pub heartbeat_interval: Duration,
    /// Time in-flight commands get to finish at shutdown.
    pub shutdown_timeout: Duration,
}

impl Default for RunSettings {
    fn default() -> Self {
        RunSettings {
            instance: None,
            prefetch: 8,
            max_in_flight: 4,
            heartbeat_interval: Duration::from_secs(15),
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

/// What [`run`] needs besides the connector.
#[derive(Clone)]
pub struct ConnectorContext {
    /// The bus (the core's in-process bus, or a RabbitMQ connection).
    pub bus: Bus,
    /// How to run.
    pub settings: RunSettings,
    /// Fires to stop the connector gracefully.
    pub shutdown: CancellationToken,
    /// Close the bus at the end (the connector's own process owns its connection; a task inside
    /// `crm serve` shares the core's bus and must not).
    pub close_bus: bool,
}

impl std::fmt::Debug for ConnectorContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectorContext")
            .field("transport", &self.bus.transport())
            .field("settings", &self.settings)
            .field("shutdown", &self.shutdown.is_cancelled())
            .field("close_bus", &self.close_bus)
            .finish()
    }
}

impl ConnectorContext {
    /// Default settings on a shared `bus` (not closed at the end), stopped by `shutdown`.
    pub fn new(bus: Bus, shutdown: CancellationToken) -> Self {
        ConnectorContext { bus, settings: RunSettings::default(), shutdown, close_bus: false }
    }

    /// The same with other settings.
    pub fn with_settings(mut self, settings: RunSettings) -> Self {
        self.settings = settings;
        self
    }
}

/// Runs `connector` as a task on `bus` (the core's in-process bus inside `crm serve`) with the
/// default [`RunSettings`] until `shutdown` fires; the task ends after the graceful shutdown.
/// The bus is left open.
pub fn spawn<C: Connector>(connector: C, bus: Bus, shutdown: CancellationToken) -> JoinHandle<anyhow::Result<()>> {
    spawn_with(connector, ConnectorContext::new(bus, shutdown))
}

/// [`spawn`] with a full context (settings, bus ownership).
pub fn spawn_with<C: Connector>(connector: C, context: ConnectorContext) -> JoinHandle<anyhow::Result<()>> {
    tokio::spawn(run(connector, context))
}

/// Runs `connector` until `context.shutdown` fires (then shuts down gracefully) or the bus is
/// closed. Fails when `init` fails or the subscription cannot be made for a reason other than
/// the bus being unreachable (that is retried).
pub async fn run<C: Connector>(connector: C, context: ConnectorContext) -> anyhow::Result<()> {
    let ConnectorContext { bus, settings, shutdown, close_bus } = context;
    let instance = settings.instance.clone().unwrap_or_else(default_instance);
    let span = tracing::info_span!("connector", connector = C::NAME, instance = %instance);
    let result = async {
        let stop = CancellationToken::new();
        let publisher = Publisher::new(bus.clone(), stop.clone());
        let hub = Hub::new::<C>(instance.clone(), bus.clone(), publisher, shutdown.clone());
        let runner = Runner { connector: Arc::new(connector), hub, settings, stop, in_flight: Arc::new(AtomicU32::new(0)) };
        let result = runner.run().await;
        if close_bus {
            bus.close().await;
        }
        result
    }
    .instrument(span)
    .await;
    if let Err(err) = &result {
        tracing::error!(connector = C::NAME, error = format!("{err:#}"), "connector failed");
    }
    result
}

struct Runner<C> {
    connector: Arc<C>,
    hub: Hub,
    settings: RunSettings,
    /// Fires when the shutdown timeout ran out: in-flight work is abandoned (requeued) and
    /// publishers stop retrying.
    stop: CancellationToken,
    in_flight: Arc<AtomicU32>,
}

impl<C: Connector> Runner<C> {
    async fn run(self) -> anyhow::Result<()> {
        let shutdown = self.hub.shutdown().clone();
        tracing::info!(version = C::VERSION, transport = self.hub.bus().transport(), "connector starting");
        if !self.declare_core_queue().await {
            return Ok(());
        }
        self.heartbeat(Health { state: ConnectorState::Starting, detail: None }).await;
        if let Err(err) = self.connector.init(&self.hub).await {
            self.heartbeat(Health { state: ConnectorState::Stopping, detail: Some(format!("init failed: {err:#}")) }).await;
            return Err(err.context(format!("{} failed to start", C::NAME)));
        }
        let Some(mut subscriber) = self.subscribe().await? else {
            self.finish(None).await;
            return Ok(());
        };
        let heartbeats = AbortOnDrop(self.spawn_heartbeats());
        tracing::info!(group = %command_group(C::CHANNEL), "connector ready");

        let semaphore = Arc::new(Semaphore::new(self.settings.max_in_flight.max(1)));
        let mut tasks = JoinSet::new();
        let ended = loop {
            while let Some(done) = tasks.try_join_next() {
                log_task_end(done);
            }
            let permit = tokio::select! {
                biased;
                () = shutdown.cancelled() => break false,
                permit = semaphore.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            };
            let delivery = tokio::select! {
                biased;
                () = shutdown.cancelled() => break false,
                delivery = subscriber.next() => delivery,
            };
            match delivery {
                Some(delivery) => {
                    tasks.spawn(self.process(delivery, permit));
                }
                None => break true,
            }
        };

        drop(heartbeats);
        if ended {
            tracing::warn!("the bus closed the command subscription; stopping");
        } else {
            tracing::info!(in_flight = self.in_flight.load(Ordering::SeqCst), "shutting down: finishing in-flight commands");
            self.heartbeat(Health { state: ConnectorState::Stopping, detail: None }).await;
        }
        self.drain(&mut tasks).await;
        // Deliveries prefetched but not started go back to the queue with the subscription.
        drop(subscriber);
        self.finish(ended.then(|| "the bus closed the subscription".to_owned())).await;
        if ended && !shutdown.is_cancelled() {
            anyhow::bail!("the bus closed {}'s command subscription", C::NAME);
        }
        Ok(())
    }

    /// Declares the core's event queue and its bindings before anything is published, retrying
    /// while the bus is unreachable: on a broker where the core has never run, the events
    /// exchange would otherwise drop every event (and the broker would confirm them). A broker
    /// that refuses the declaration (no configure permission on the queue for this connector's
    /// user, a queue of that name with other arguments) is logged and the connector goes on, as
    /// before: where the core has run, its queue is there. `false` when shut down first.
    async fn declare_core_queue(&self) -> bool {
        let core = core_events();
        match retry_while_unreachable(self.hub.shutdown(), "declaring the core's event queue", || self.hub.bus().declare(&core)).await {
            Ok(declared) => declared.is_some(),
            Err(err) => {
                tracing::warn!(group = %core.group, error = %err, "the broker refused to declare the core's event queue; events published before the core first runs on this broker would be lost");
                true
            }
        }
    }

    /// Subscribes to the command queue, retrying while the bus is unreachable; `None` when shut
    /// down first.
    async fn subscribe(&self) -> anyhow::Result<Option<Subscriber>> {
        let subscription = Subscription {
            group: command_group(C::CHANNEL),
            exchange: Exchange::Commands,
            bindings: self.connector.bindings(),
            prefetch: self.settings.prefetch,
        };
        retry_while_unreachable(self.hub.shutdown(), "subscribing to the command queue", || self.hub.bus().subscribe(subscription.clone()))
            .await
            .with_context(|| format!("cannot subscribe to {}", subscription.group))
    }

    /// Waits for in-flight commands, up to the shutdown timeout; then stops the rest (their
    /// deliveries are requeued) and waits for that.
    async fn drain(&self, tasks: &mut JoinSet<()>) {
        let finished = tokio::time::timeout(self.settings.shutdown_timeout, async {
            while let Some(done) = tasks.join_next().await {
                log_task_end(done);
            }
        })
        .await;
        if finished.is_err() {
            tracing::warn!(
                in_flight = self.in_flight.load(Ordering::SeqCst),
                timeout_ms = self.settings.shutdown_timeout.as_millis() as u64,
                "in-flight commands did not finish in time; requeueing them"
            );
            self.stop.cancel();
            if tokio::time::timeout(Duration::from_secs(10), async {
                while let Some(done) = tasks.join_next().await {
                    log_task_end(done);
                }
            })
            .await
            .is_err()
            {
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
            }
        }
    }

    async fn finish(&self, detail: Option<String>) {
        self.connector.shutdown().await;
        self.heartbeat(Health { state: ConnectorState::Stopping, detail }).await;
        tracing::info!("connector stopped");
    }

    /// One command, in its own span with the message's request id and trace context.
    fn process(&self, delivery: Delivery, permit: OwnedSemaphorePermit) -> impl Future<Output = ()> + Send + 'static {
        let envelope = &delivery.envelope;
        let span = tracing::info_span!(
            "command",
            request_id = envelope.trace.request_id.as_deref().unwrap_or(""),
            traceparent = envelope.trace.traceparent.as_deref().unwrap_or(""),
            message_id = %envelope.id,
            kind = %envelope.kind,
            routing_key = %envelope.routing_key,
            attempt = delivery.attempt,
        );
        let connector = self.connector.clone();
        let hub = self.hub.clone();
        let stop = self.stop.clone();
        let in_flight = InFlight::enter(self.in_flight.clone());
        async move {
            let _permit = permit;
            let _in_flight = in_flight;
            settle(&*connector, &hub, &stop, delivery).await;
        }
        .instrument(span)
    }

    fn spawn_heartbeats(&self) -> JoinHandle<()> {
        let connector = self.connector.clone();
        let hub = self.hub.clone();
        let in_flight = self.in_flight.clone();
        let interval = self.settings.heartbeat_interval;
        tokio::spawn(
            async move {
                let mut ticker = tokio::time::interval(interval);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticker.tick().await;
                    let health = match tokio::time::timeout(interval.max(Duration::from_secs(1)), connector.health()).await {
                        Ok(health) => health,
                        Err(_) => Health::degraded("health check timed out"),
                    };
                    send_heartbeat(&hub, health, in_flight.load(Ordering::SeqCst), interval, interval).await;
                }
            }
            .in_current_span(),
        )
    }

    async fn heartbeat(&self, health: Health) {
        let in_flight = self.in_flight.load(Ordering::SeqCst);
        send_heartbeat(&self.hub, health, in_flight, self.settings.heartbeat_interval, Duration::from_secs(5)).await;
    }
}

/// Publishes one heartbeat, retrying for up to `patience` (a heartbeat that cannot be sent is
/// superseded by the next one).
async fn send_heartbeat(hub: &Hub, health: Health, in_flight: u32, interval: Duration, patience: Duration) {
    let heartbeat = Heartbeat {
        name: hub.name().to_owned(),
        version: hub.version().to_owned(),
        channel: hub.channel(),
        instance: hub.instance().to_owned(),
        started_at: hub.started_at(),
        state: health.state,
        detail: health.detail,
        in_flight,
        interval_seconds: u32::try_from(interval.as_secs().max(1)).unwrap_or(u32::MAX),
    };
    let envelope = hub.event(&heartbeat, crm_bus::Trace::default());
    let give_up = CancellationToken::new();
    let publisher = Publisher::new(hub.bus().clone(), give_up.clone());
    match tokio::time::timeout(patience, publisher.publish(&envelope)).await {
        Ok(Ok(())) => tracing::debug!(state = ?heartbeat.state, in_flight, "heartbeat sent"),
        Ok(Err(err)) => tracing::warn!(error = %err, "heartbeat not sent"),
        Err(_) => tracing::warn!("heartbeat not sent: the bus did not confirm in time"),
    }
}

/// Runs the handler for one delivery and settles the delivery by the result.
async fn settle<C: Connector>(connector: &C, hub: &Hub, stop: &CancellationToken, delivery: Delivery) {
    let request = delivery.is_request();
    let command = Command::new(&delivery.envelope, hub, delivery.attempt, delivery.redelivered, request);
    let result = tokio::select! {
        biased;
        result = AssertUnwindSafe(connector.handle(command)).catch_unwind() => result,
        () = stop.cancelled() => {
            tracing::warn!("command abandoned at shutdown; requeueing");
            log_settle("requeue", delivery.requeue().await);
            return;
        }
    };
    let outcome = match result {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(err)) => {
            match &err {
                HandlerError::Transient(reason) => {
                    tracing::warn!(reason = %reason, "command failed; will retry");
                    log_settle("retry", delivery.retry(reason).await);
                }
                HandlerError::Permanent(reason) | HandlerError::Malformed(reason) => {
                    tracing::warn!(error = %err, "command refused; dead-lettering");
                    log_settle("dead-letter", delivery.dead_letter(reason).await);
                }
            }
            return;
        }
        Err(panic) => {
            let reason = format!("handler panicked: {}", crm_bus::panic_reason(&*panic));
            tracing::error!(reason = %reason, "command handler panicked; will retry");
            log_settle("retry", delivery.retry(&reason).await);
            return;
        }
    };
    let Outcome { mut events, reply } = outcome;
    let reply = match reply {
        Some(reply) if request => Some(reply),
        Some(reply) => {
            events.push(reply);
            None
        }
        None => None,
    };
    if let Err(err) = hub.publisher().publish_all(&events).await {
        if let PublishError::Invalid(detail) = &err {
            return undeliverable_outcome(delivery, detail).await;
        }
        tracing::warn!(error = %err, "events not published; requeueing the command");
        log_settle("requeue", delivery.requeue().await);
        return;
    }
    if let Some(reply) = reply
        && let Err(err) = send_reply(hub, stop, &delivery, &reply).await
    {
        if let BusError::Invalid(detail) = &err {
            return undeliverable_outcome(delivery, detail).await;
        }
        tracing::warn!(error = %err, "reply not sent; requeueing the request");
        log_settle("requeue", delivery.requeue().await);
        return;
    }
    tracing::debug!(events = events.len(), "command done");
    log_settle("ack", delivery.ack().await);
}

/// The command was handled, but the bus refuses what it produced for good (an event or reply
/// larger than a message may be): giving the command back would only do it again, in a loop, so
/// it is dead-lettered with the reason for ops.
async fn undeliverable_outcome(delivery: Delivery, detail: &str) {
    let reason = format!("handled, but the bus refuses its outcome: {detail}");
    tracing::error!(reason = %reason, "outcome cannot be published; dead-lettering the command");
    log_settle("dead-letter", delivery.dead_letter(&reason).await);
}

/// Answers a request, retrying while the bus is unreachable.
async fn send_reply(hub: &Hub, stop: &CancellationToken, delivery: &Delivery, reply: &Envelope) -> Result<(), BusError> {
    let backoff = Backoff::default();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match hub.bus().reply(delivery, reply).await {
            Ok(()) => return Ok(()),
            Err(err @ (BusError::Unavailable(_) | BusError::Timeout(_))) if !stop.is_cancelled() => {
                tracing::warn!(attempt, error = %err, "reply failed; retrying");
                tokio::select! {
                    biased;
                    () = stop.cancelled() => return Err(err),
                    () = tokio::time::sleep(backoff.delay(attempt)) => {}
                }
            }
            Err(err) => return Err(err),
        }
    }
}

fn log_settle(action: &str, result: Result<(), BusError>) {
    if let Err(err) = result {
        // The broker redelivers what was not settled; the handler is idempotent.
        tracing::warn!(action, error = %err, "could not settle the delivery; it will come again");
    }
}

fn log_task_end(result: Result<(), tokio::task::JoinError>) {
    if let Err(err) = result
        && err.is_panic()
    {
        tracing::error!(error = %err, "command task panicked");
    }
}

/// Stops a background task when the runner ends, however it ends (even when its own task is
/// aborted).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Counts a command in flight for as long as it lives.
struct InFlight(Arc<AtomicU32>);

impl InFlight {
    fn enter(counter: Arc<AtomicU32>) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        InFlight(counter)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
