//! The connector lifecycle on the in-process bus: events follow their command's request id,
//! transient failures are retried and permanent ones dead-lettered, requests are answered,
//! heartbeats carry the instance's fields, a graceful shutdown finishes in-flight work and
//! leaves the rest queued, and what a connector publishes before the core has ever run waits for
//! the core.

use crm_bus::message::{
    Address, Channel, ConnectorState, DeliveryState, DeliveryStatus, FileContent, FileRead, Heartbeat, MessageReceived, ReadFile,
    SendMessage, core_events,
};
use crm_bus::{BusConfig, Delivery, RetryPolicy, Subscriber, Subscription};
use crm_connector::{
    Bus, CancellationToken, Command, Connector, ConnectorContext, Envelope, Exchange, HandlerError, Health, Hub, Outcome, RunSettings,
    Trace,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;
use tokio::sync::Semaphore;
use uuid::Uuid;

/// The size of what `huge` commands produce: over [`small_bus`]'s message limit.
const HUGE: usize = 8_000;

/// Generous: conditions are awaited, never assumed after a sleep.
const WAIT: Duration = Duration::from_secs(20);

/// A connector whose behaviour the message body picks; clones share the state.
#[derive(Debug, Clone, Default)]
struct Echo(Arc<State>);

#[derive(Debug)]
struct State {
    /// `slow` commands wait for a permit here.
    gate: Semaphore,
    /// Handler calls started, by entry id.
    started: std::sync::Mutex<HashMap<Uuid, u32>>,
    started_count: AtomicU32,
    degraded: AtomicBool,
}

impl Default for State {
    fn default() -> Self {
        State { gate: Semaphore::new(0), started: Default::default(), started_count: AtomicU32::new(0), degraded: AtomicBool::new(false) }
    }
}

impl Connector for Echo {
    type Config = ();
    const NAME: &'static str = "test-echo";
    const VERSION: &'static str = "9.9.9";
    const CHANNEL: Channel = Channel::Sms;

    fn bindings(&self) -> Vec<String> {
        vec!["sms.#".into(), "files.file.read".into()]
    }

    async fn health(&self) -> Health {
        if self.0.degraded.load(Ordering::SeqCst) { Health::degraded("gateway down") } else { Health::ready() }
    }

    async fn handle(&self, command: Command<'_>) -> Result<Outcome, HandlerError> {
        if command.is::<ReadFile>() {
            let read: ReadFile = command.decode()?;
            self.0.started_count.fetch_add(1, Ordering::SeqCst);
            let result =
                if read.path == "huge" { FileRead::Found { content: crm_bus::message::Bytes(vec![7; HUGE]) } } else { FileRead::NotFound };
            return Ok(Outcome::reply(command.event(&FileContent { path: read.path, result })));
        }
        let send: SendMessage = command.decode()?;
        self.0.started.lock().unwrap().entry(send.entry_id).and_modify(|n| *n += 1).or_insert(1);
        self.0.started_count.fetch_add(1, Ordering::SeqCst);
        match send.body.as_str() {
            "fail-once" if command.attempt() == 1 => return Err(HandlerError::Transient("gateway timeout".into())),
            "permanent" => return Err(HandlerError::Permanent("number blocked".into())),
            "panic" => panic!("boom"),
            "slow" => {
                let permit = self.0.gate.acquire().await.expect("gate open");
                permit.forget();
            }
            _ => {}
        }
        Ok(Outcome::event(command.event(&DeliveryStatus {
            channel: Channel::Sms,
            entry_id: Some(send.entry_id),
            channel_message_id: Some(format!("sms-{}", send.entry_id)),
            status: DeliveryState::Sent,
            reason: (send.body == "huge").then(|| "x".repeat(HUGE)),
            occurred_at: chrono::Utc::now(),
        })))
    }
}

fn bus() -> Bus {
    Bus::in_process(BusConfig { retry: RetryPolicy { max_attempts: 3, backoff: vec![Duration::from_millis(20)] }, ..BusConfig::default() })
}

/// A bus whose messages may be at most 4,000 bytes.
fn small_bus() -> Bus {
    Bus::in_process(BusConfig {
        retry: RetryPolicy { max_attempts: 3, backoff: vec![Duration::from_millis(20)] },
        max_message_bytes: 4_000,
        ..BusConfig::default()
    })
}

fn settings() -> RunSettings {
    RunSettings {
        instance: Some("test-1".into()),
        prefetch: 8,
        max_in_flight: 4,
        heartbeat_interval: Duration::from_secs(1),
        shutdown_timeout: Duration::from_secs(30),
    }
}

fn send(body: &str, request_id: &str) -> (Uuid, Envelope) {
    let entry_id = Uuid::now_v7();
    let message = SendMessage {
        entry_id,
        channel: Channel::Sms,
        to: vec![Address::phone("+302101234567", None)],
        cc: vec![],
        subject: None,
        body: body.into(),
        body_html: None,
        in_reply_to: None,
        references: vec![],
        attachments: vec![],
    };
    (entry_id, Envelope::new("/crm/core", &message, Trace::new(request_id)))
}

async fn events(bus: &Bus, group: &str, bindings: &[&str]) -> Subscriber {
    bus.subscribe(Subscription::new(group, Exchange::Events, bindings)).await.unwrap()
}

async fn next(subscriber: &mut Subscriber) -> Delivery {
    tokio::time::timeout(WAIT, subscriber.next()).await.expect("a delivery in time").expect("the bus is open")
}

/// Waits until the connector consumes its command queue.
async fn wait_ready(bus: &Bus) {
    wait_for(bus, "connector consuming", |stats| stats.iter().any(|q| q.group == "connector.sms.commands" && q.consumers >= 1)).await;
}

async fn wait_for(bus: &Bus, what: &str, condition: impl Fn(&[crm_bus::QueueStats]) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let stats = bus.queue_stats().await.unwrap();
        if condition(&stats) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}: {stats:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn read_beat(beats: &mut Subscriber) -> Heartbeat {
    let delivery = next(beats).await;
    assert_eq!(delivery.envelope.routing_key, "connector.sms.heartbeat");
    assert_eq!(delivery.envelope.subject.as_deref(), Some("test-echo/test-1"));
    let beat: Heartbeat = delivery.envelope.decode().unwrap();
    delivery.ack().await.unwrap();
    beat
}

fn queued(stats: &[crm_bus::QueueStats], group: &str) -> u64 {
    stats.iter().find(|q| q.group == group).map_or(0, |q| q.messages)
}

#[tokio::test]
async fn events_follow_their_command_and_keep_its_request_id() {
    let bus = bus();
    let mut statuses = events(&bus, "core.test", &["sms.message.status"]).await;
    let token = CancellationToken::new();
    let echo = Echo::default();
    let task = crm_connector::spawn_with(echo.clone(), ConnectorContext::new(bus.clone(), token.clone()).with_settings(settings()));
    wait_ready(&bus).await;

    let (entry_id, command) = send("hello", "req-42");
    bus.publish(&command).await.unwrap();
    let delivery = next(&mut statuses).await;
    let status: DeliveryStatus = delivery.envelope.decode().unwrap();
    assert_eq!(status.entry_id, Some(entry_id));
    assert_eq!(delivery.envelope.trace.request_id.as_deref(), Some("req-42"));
    let parent = command.trace.traceparent.as_deref().unwrap();
    let child = delivery.envelope.trace.traceparent.as_deref().unwrap();
    assert_eq!(child[..36], parent[..36], "same trace id");
    assert_ne!(child, parent, "a new span");
    assert_eq!(delivery.envelope.source, "/connectors/test-echo/test-1");
    delivery.ack().await.unwrap();

    // Acknowledged: nothing left for the connector.
    wait_for(&bus, "the command acknowledged", |stats| queued(stats, "connector.sms.commands") == 0).await;
    token.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(echo.0.started.lock().unwrap()[&entry_id], 1);
}

/// A running `Echo` connector on `bus`, with subscribers to the statuses it reports and to the
/// dead letters.
struct Watched {
    statuses: Subscriber,
    dead: Subscriber,
    token: CancellationToken,
    echo: Echo,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn watched(bus: &Bus) -> Watched {
    let statuses = events(bus, "core.test", &["sms.message.status"]).await;
    let dead = bus.dead_letters().await.unwrap();
    let token = CancellationToken::new();
    let echo = Echo::default();
    let task = crm_connector::spawn_with(echo.clone(), ConnectorContext::new(bus.clone(), token.clone()).with_settings(settings()));
    wait_ready(bus).await;
    Watched { statuses, dead, token, echo, task }
}

/// The connector still handles a plain command and reports it sent.
async fn still_sends(bus: &Bus, statuses: &mut Subscriber) {
    let (after, command) = send("hello", "r-after");
    bus.publish(&command).await.unwrap();
    let delivery = next(statuses).await;
    assert_eq!(delivery.envelope.decode::<DeliveryStatus>().unwrap().entry_id, Some(after));
    delivery.ack().await.unwrap();
}

#[tokio::test]
async fn transient_failures_retry_and_permanent_ones_are_dead_lettered() {
    let bus = bus();
    let Watched { mut statuses, mut dead, token, echo, task } = watched(&bus).await;

    let (flaky, command) = send("fail-once", "r1");
    bus.publish(&command).await.unwrap();
    let delivery = next(&mut statuses).await;
    assert_eq!(delivery.envelope.decode::<DeliveryStatus>().unwrap().entry_id, Some(flaky));
    delivery.ack().await.unwrap();
    assert_eq!(echo.0.started.lock().unwrap()[&flaky], 2, "tried twice");

    let (blocked, command) = send("permanent", "r2");
    bus.publish(&command).await.unwrap();
    let letter = next(&mut dead).await;
    let info = letter.dead.clone().expect("dead-letter info");
    assert_eq!(letter.envelope.id, command.id);
    assert_eq!(info.group, "connector.sms.commands");
    assert_eq!(info.reason, "number blocked");
    assert_eq!(echo.0.started.lock().unwrap()[&blocked], 1, "not retried");
    letter.ack().await.unwrap();

    // Data that does not decode: dead-lettered at once, with the decoder's reason.
    let (_, mut malformed) = send("x", "r3");
    malformed.data = br#"{"entry_id": "not a uuid"}"#.to_vec();
    bus.publish(&malformed).await.unwrap();
    let letter = next(&mut dead).await;
    assert_eq!(letter.envelope.id, malformed.id);
    let reason = letter.dead.clone().unwrap().reason;
    assert!(reason.contains("entry_id"), "{reason}");
    letter.ack().await.unwrap();

    // A panicking handler does not take the connector down: retried, then dead-lettered.
    let (panicky, command) = send("panic", "r4");
    bus.publish(&command).await.unwrap();
    let letter = next(&mut dead).await;
    assert_eq!(letter.envelope.id, command.id);
    let info = letter.dead.clone().unwrap();
    assert!(info.reason.contains("handler panicked: boom"), "{}", info.reason);
    assert_eq!(info.attempts, 3);
    assert_eq!(echo.0.started.lock().unwrap()[&panicky], 3);
    letter.ack().await.unwrap();

    // Still working.
    still_sends(&bus, &mut statuses).await;

    token.cancel();
    task.await.unwrap().unwrap();
}

/// A command handled whose event or reply the bus refuses for good (larger than a message may
/// be) is dead-lettered with the reason, once: given back, it would be handled again and again.
#[tokio::test]
async fn an_outcome_the_bus_refuses_dead_letters_its_command_instead_of_looping() {
    let bus = small_bus();
    let Watched { mut statuses, mut dead, token, echo, task } = watched(&bus).await;

    let (huge, command) = send("huge", "r1");
    bus.publish(&command).await.unwrap();
    let letter = next(&mut dead).await;
    assert_eq!(letter.envelope.id, command.id);
    let reason = letter.dead.clone().expect("dead-letter info").reason;
    assert!(reason.contains("the bus refuses its outcome"), "{reason}");
    letter.ack().await.unwrap();
    assert_eq!(echo.0.started.lock().unwrap()[&huge], 1, "handled once");

    let request = Envelope::new("/crm/core", &ReadFile { path: "huge".into() }, Trace::new("req-huge"));
    let asked = tokio::spawn({
        let (bus, request) = (bus.clone(), request.clone());
        async move { bus.request(&request, WAIT).await }
    });
    let letter = next(&mut dead).await;
    assert_eq!(letter.envelope.id, request.id);
    assert!(letter.dead.clone().expect("dead-letter info").reason.contains("the bus refuses its outcome"));
    letter.ack().await.unwrap();
    asked.abort();

    // Still working, and nothing was handled again.
    still_sends(&bus, &mut statuses).await;
    assert_eq!(echo.0.started_count.load(Ordering::SeqCst), 3, "the huge command, the huge read, the one after");

    token.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn requests_are_answered() {
    let bus = bus();
    let token = CancellationToken::new();
    let task = crm_connector::spawn_with(Echo::default(), ConnectorContext::new(bus.clone(), token.clone()).with_settings(settings()));
    wait_ready(&bus).await;
    let request = Envelope::new("/crm/core", &ReadFile { path: "a/b".into() }, Trace::new("req-read"));
    let reply = bus.request(&request, WAIT).await.unwrap();
    let content: FileContent = reply.decode().unwrap();
    assert_eq!(content, FileContent { path: "a/b".into(), result: FileRead::NotFound });
    assert_eq!(reply.trace.request_id.as_deref(), Some("req-read"));
    token.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn heartbeats_announce_the_instance_at_start_every_interval_and_at_shutdown() {
    let bus = bus();
    let mut beats = events(&bus, "core.heartbeats", &["connector.#"]).await;
    let token = CancellationToken::new();
    let echo = Echo::default();
    let before = chrono::Utc::now();
    let task = crm_connector::spawn_with(echo.clone(), ConnectorContext::new(bus.clone(), token.clone()).with_settings(settings()));

    let first = read_beat(&mut beats).await;
    assert_eq!(first.state, ConnectorState::Starting);
    assert_eq!(first.name, "test-echo");
    assert_eq!(first.version, "9.9.9");
    assert_eq!(first.channel, Channel::Sms);
    assert_eq!(first.instance, "test-1");
    assert_eq!(first.interval_seconds, 1);
    assert_eq!(first.in_flight, 0);
    assert!(first.started_at >= before - chrono::Duration::seconds(1) && first.started_at <= chrono::Utc::now());

    let ready = read_beat(&mut beats).await;
    assert_eq!(ready.state, ConnectorState::Ready);
    assert_eq!(ready.started_at, first.started_at);
    // Periodic, and reporting health.
    echo.0.degraded.store(true, Ordering::SeqCst);
    let degraded = loop {
        let beat = read_beat(&mut beats).await;
        if beat.state == ConnectorState::Degraded {
            break beat;
        }
        assert_eq!(beat.state, ConnectorState::Ready);
    };
    assert_eq!(degraded.detail.as_deref(), Some("gateway down"));

    token.cancel();
    let last = loop {
        let beat = read_beat(&mut beats).await;
        if beat.state == ConnectorState::Stopping && beat.in_flight == 0 {
            break beat;
        }
    };
    assert_eq!(last.started_at, first.started_at);
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_work_and_leaves_the_rest_queued() {
    let bus = bus();
    let mut statuses = events(&bus, "core.test", &["sms.message.status"]).await;
    let mut beats = events(&bus, "core.heartbeats", &["connector.#"]).await;
    let token = CancellationToken::new();
    let echo = Echo::default();
    let run = RunSettings { max_in_flight: 2, prefetch: 4, ..settings() };
    let task = crm_connector::spawn_with(echo.clone(), ConnectorContext::new(bus.clone(), token.clone()).with_settings(run.clone()));
    wait_ready(&bus).await;

    let mut ids = Vec::new();
    for i in 0..6 {
        let (id, command) = send("slow", &format!("req-{i}"));
        bus.publish(&command).await.unwrap();
        ids.push(id);
    }
    // Two handlers are busy (the limit); then shut down.
    let deadline = tokio::time::Instant::now() + WAIT;
    while echo.0.started_count.load(Ordering::SeqCst) < 2 {
        assert!(tokio::time::Instant::now() < deadline, "handlers did not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    token.cancel();
    // The shutdown heartbeat reports the two in flight.
    loop {
        let delivery = next(&mut beats).await;
        let beat: Heartbeat = delivery.envelope.decode().unwrap();
        delivery.ack().await.unwrap();
        if beat.state == ConnectorState::Stopping {
            assert_eq!(beat.in_flight, 2);
            break;
        }
    }
    assert!(!task.is_finished(), "waits for in-flight work");
    echo.0.gate.add_permits(100);
    task.await.unwrap().unwrap();

    // The two in-flight commands finished and published; no other one was started.
    assert_eq!(echo.0.started_count.load(Ordering::SeqCst), 2);
    let mut done = Vec::new();
    for _ in 0..2 {
        let delivery = next(&mut statuses).await;
        done.push(delivery.envelope.decode::<DeliveryStatus>().unwrap().entry_id.unwrap());
        delivery.ack().await.unwrap();
    }
    // The other four are back in the queue, for the next instance.
    wait_for(&bus, "four commands queued", |stats| queued(stats, "connector.sms.commands") == 4).await;

    let token = CancellationToken::new();
    let task = crm_connector::spawn_with(echo.clone(), ConnectorContext::new(bus.clone(), token.clone()).with_settings(run));
    for _ in 0..4 {
        let delivery = next(&mut statuses).await;
        done.push(delivery.envelope.decode::<DeliveryStatus>().unwrap().entry_id.unwrap());
        delivery.ack().await.unwrap();
    }
    done.sort();
    ids.sort();
    assert_eq!(done, ids, "every command done exactly once");
    assert!(echo.0.started.lock().unwrap().values().all(|&n| n == 1));
    token.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn in_flight_work_past_the_shutdown_timeout_is_requeued() {
    let bus = bus();
    let token = CancellationToken::new();
    let echo = Echo::default();
    let run = RunSettings { max_in_flight: 1, prefetch: 1, shutdown_timeout: Duration::from_millis(200), ..settings() };
    let task = crm_connector::spawn_with(echo.clone(), ConnectorContext::new(bus.clone(), token.clone()).with_settings(run));
    wait_ready(&bus).await;
    let (_, command) = send("slow", "stuck");
    bus.publish(&command).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while echo.0.started_count.load(Ordering::SeqCst) < 1 {
        assert!(tokio::time::Instant::now() < deadline, "handler did not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    token.cancel();
    tokio::time::timeout(WAIT, task).await.expect("stops after the timeout").unwrap().unwrap();
    wait_for(&bus, "the stuck command requeued", |stats| queued(stats, "connector.sms.commands") == 1).await;
}

/// A connector that publishes an inbound message as soon as it starts, as the email connector
/// does with what waited in the mailbox.
#[derive(Debug)]
struct EarlyBird;

impl Connector for EarlyBird {
    type Config = ();
    const NAME: &'static str = "test-early";
    const VERSION: &'static str = "1.0.0";
    const CHANNEL: Channel = Channel::Sms;

    fn bindings(&self) -> Vec<String> {
        vec!["sms.message.send".into()]
    }

    async fn init(&self, hub: &Hub) -> anyhow::Result<()> {
        let message = MessageReceived {
            channel: Channel::Sms,
            channel_message_id: "sms-early-1".into(),
            from: Address::phone("+30 694 123 4567", None),
            to: vec![],
            cc: vec![],
            subject: None,
            body: "Η καμπάνα σταμάτησε.".into(),
            occurred_at: chrono::Utc::now(),
            in_reply_to: None,
            references: vec![],
            auto_reply: false,
            attachments: vec![],
        };
        hub.publisher().publish(&hub.event(&message, Trace::new("req-early"))).await?;
        Ok(())
    }

    async fn handle(&self, command: Command<'_>) -> Result<Outcome, HandlerError> {
        Err(command.unsupported())
    }
}

/// Nothing has declared the core's queue when the connector starts (the core has never run on
/// this bus): a topic exchange drops what no queue binds, so the runner declares it first, and
/// the message published during `init` is waiting when the core subscribes.
#[tokio::test]
async fn what_a_connector_publishes_before_the_core_ever_ran_waits_for_the_core() {
    let bus = bus();
    let no_core_queue = |stats: &[crm_bus::QueueStats]| !stats.iter().any(|q| q.group == core_events().group);
    assert!(no_core_queue(&bus.queue_stats().await.unwrap()), "a fresh bus has no queue for the core yet");
    let token = CancellationToken::new();
    let task = crm_connector::spawn_with(EarlyBird, ConnectorContext::new(bus.clone(), token.clone()).with_settings(settings()));
    // Consuming its commands means `init`, and with it the confirmed publish, is done.
    wait_ready(&bus).await;

    let mut core = bus.subscribe(core_events()).await.unwrap();
    // Heartbeats keep coming; the message is before the connector's `ready` one.
    let received = loop {
        let delivery = next(&mut core).await;
        let found = delivery.envelope.routing_key == "sms.message.received";
        if found {
            break delivery;
        }
        let beat: Heartbeat = delivery.envelope.decode().expect("only heartbeats besides");
        assert_ne!(beat.state, ConnectorState::Ready, "the message published during init was dropped");
        delivery.ack().await.unwrap();
    };
    let message: MessageReceived = received.envelope.decode().unwrap();
    assert_eq!(message.channel_message_id, "sms-early-1");
    assert_eq!(received.envelope.trace.request_id.as_deref(), Some("req-early"));
    received.ack().await.unwrap();
    token.cancel();
    task.await.unwrap().unwrap();
}
