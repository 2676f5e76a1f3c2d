//! RabbitMQ only: a raw message that is not an envelope, and riding out a broker restart.

use crate::support::{Ctx, RABBIT, Transport, WAIT, amqp_url, assert_quiet, event, notice, recv, run, run_unlocked, wait_until};
use crm_bus::{BusError, DEAD_LETTER_GROUP, Exchange, Subscription};
use futures::FutureExt as _;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use std::panic::AssertUnwindSafe;
use std::time::Duration;

/// Publishes `body` with `headers` to `<prefix>.events` with plain lapin, confirmed.
async fn publish_raw(prefix: &str, routing_key: &str, headers: Option<FieldTable>, body: &[u8]) {
    let connection = Connection::connect(&amqp_url(), ConnectionProperties::default()).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let mut properties = BasicProperties::default().with_delivery_mode(2);
    if let Some(headers) = headers {
        properties = properties.with_headers(headers);
    }
    let confirm = channel
        .basic_publish(format!("{prefix}.events").into(), routing_key.into(), BasicPublishOptions::default(), body, properties)
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack());
    connection.close(200, "OK".into()).await.unwrap();
}

async fn undecodable_messages_are_dead_lettered(ctx: Ctx) {
    let mut sub = ctx.bus.subscribe(Subscription::new("core.events", Exchange::Events, &["#"])).await.unwrap();
    publish_raw(&ctx.prefix, "email.message.received", None, b"not an envelope").await;
    let mut bad_time = FieldTable::default();
    for (name, value) in [
        ("cloudEvents:specversion", "1.0"),
        ("cloudEvents:id", "x1"),
        ("cloudEvents:source", "/x"),
        ("cloudEvents:type", "t.v1"),
        ("cloudEvents:time", "yesterday"),
    ] {
        bad_time.insert(name.into(), AMQPValue::LongString(value.into()));
    }
    publish_raw(&ctx.prefix, "email.message.received", Some(bad_time), b"{}").await;
    // The consumer keeps going: a good message after them arrives, and only it.
    let good = event("email.message.received", 1);
    ctx.bus.publish(&good).await.unwrap();
    let d = recv(&mut sub).await;
    assert_eq!(d.envelope, good);
    d.ack().await.unwrap();
    assert_quiet(&mut sub).await;

    let mut dead = ctx.bus.dead_letters().await.unwrap();
    let first = recv(&mut dead).await;
    let info = first.dead.clone().unwrap();
    assert_eq!(info.group, "core.events");
    assert!(info.reason.starts_with("undecodable message: missing header"), "{}", info.reason);
    assert_eq!(first.envelope.data, b"not an envelope");
    assert_eq!(first.envelope.routing_key, "email.message.received");
    let second = recv(&mut dead).await;
    let info = second.dead.clone().unwrap();
    assert!(info.reason.contains("cloudEvents:time"), "{}", info.reason);
    assert_eq!(second.envelope.id, "x1");
    dead.ack_all(vec![first, second]).await.unwrap();
    let bus = ctx.bus.clone();
    wait_until("the dead letters are acknowledged", WAIT, || async {
        crate::support::queue_figures(&bus, DEAD_LETTER_GROUP).await == Some((0, 1))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_rabbitmq_messages_are_dead_lettered_with_the_reason() {
    run(Transport::Rabbitmq, undecodable_messages_are_dead_lettered).await;
}

/// Runs `rabbitmqctl` with `args` and returns what it printed; `Err` when it cannot be run or
/// fails.
async fn rabbitmqctl(args: &[&str]) -> Result<String, String> {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let output = std::process::Command::new("rabbitmqctl").args(&args).output().map_err(|e| format!("rabbitmqctl: {e}"))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(format!(
                "rabbitmqctl {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    })
    .await
    .expect("rabbitmqctl task")
}

/// A retry waits in a quorum delay queue that dead-letters at least once (a classic queue does
/// it at most once: a broker crash at that moment would lose the message), and comes back.
async fn retries_wait_in_at_least_once_delay_queues(ctx: Ctx) {
    let mut sub = ctx.bus.subscribe(Subscription::new("core.events", Exchange::Events, &["#"])).await.unwrap();
    let first = event("email.message.received", 1);
    ctx.bus.publish(&first).await.unwrap();
    recv(&mut sub).await.retry("flaky").await.unwrap();
    let again = recv(&mut sub).await;
    assert_eq!((&again.envelope, again.attempt), (&first, 2));
    again.ack().await.unwrap();

    let delay_queue = format!("{}.core.events.delay.50", ctx.prefix);
    let listing = rabbitmqctl(&["list_queues", "--quiet", "--no-table-headers", "name", "type", "arguments"]).await.unwrap();
    let line = listing.lines().find(|l| l.split_whitespace().next() == Some(delay_queue.as_str()));
    let line = line.unwrap_or_else(|| panic!("no {delay_queue} in:\n{listing}"));
    for expected in ["quorum", "\"at-least-once\"", "\"reject-publish\""] {
        assert!(line.contains(expected), "{expected} missing: {line}");
    }
    // Back into the group queue: the argument's value is exactly its name (quoted).
    let (_, routing) = line.split_once("x-dead-letter-routing-key").unwrap_or_else(|| panic!("no routing key: {line}"));
    let routing = routing.split('}').next().unwrap_or_default();
    assert!(routing.contains(&format!("\"{}.core.events\"", ctx.prefix)), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_retries_wait_in_at_least_once_delay_queues() {
    if !rabbitmqctl_or_skip("delay queue").await {
        return;
    }
    run(Transport::Rabbitmq, retries_wait_in_at_least_once_delay_queues).await;
}

/// Starts the broker's application again when dropped, so a failing restart test does not
/// leave RabbitMQ stopped for everything after it.
struct RestartGuard;

impl Drop for RestartGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl").arg("start_app").output();
        let _ = std::process::Command::new("rabbitmqctl").args(["await_startup", "--timeout", "60"]).output();
    }
}

async fn survives_a_broker_restart(ctx: Ctx) {
    let mut sub = ctx.bus.subscribe(Subscription::new("core.events", Exchange::Events, &["#"])).await.unwrap();
    let before = event("email.message.received", 1);
    ctx.bus.publish(&before).await.unwrap();
    let d = recv(&mut sub).await;
    assert_eq!(d.envelope, before);
    d.ack().await.unwrap();

    let guard = RestartGuard;
    rabbitmqctl(&["stop_app"]).await.expect("stop the broker");
    let bus = ctx.bus.clone();
    wait_until("the bus notices the broker is gone", WAIT, || async { !bus.is_ready().await }).await;
    let err = ctx.bus.publish(&event("email.message.received", 2)).await.unwrap_err();
    assert!(matches!(err, BusError::Unavailable(_)), "publishing during the outage: {err:?}");
    // The subscriber is waiting through the outage.
    let waiting = tokio::spawn(async move {
        let d = recv(&mut sub).await;
        (sub, d)
    });
    rabbitmqctl(&["start_app"]).await.expect("start the broker");
    rabbitmqctl(&["await_startup", "--timeout", "60"]).await.expect("broker started");
    drop(guard);
    wait_until("the bus has reconnected", Duration::from_secs(60), || async { bus.is_ready().await }).await;

    let after = event("email.message.received", 3);
    // The subscriber may still be re-subscribing; its queue is durable, so the message waits.
    ctx.bus.publish(&after).await.unwrap();
    let (mut sub, d) = tokio::time::timeout(Duration::from_secs(60), waiting).await.expect("a delivery after the restart").unwrap();
    assert_eq!(d.envelope, after, "the same subscriber receives what is published after the restart");
    d.ack().await.unwrap();
    assert_quiet(&mut sub).await;
}

/// Whether RabbitMQ runs here and `rabbitmqctl` can drive it; otherwise the `what` test is
/// skipped with a notice (a failure under `CRM_REQUIRE_RABBITMQ=1`).
async fn rabbitmqctl_or_skip(what: &str) -> bool {
    if crate::support::rabbit_or_skip().await.is_none() {
        return false;
    }
    // Not while the restart test has the broker stopped (it holds RABBIT for writing).
    let status = {
        let _shared = RABBIT.read().await;
        rabbitmqctl(&["status"]).await
    };
    if let Err(err) = status {
        assert!(
            !std::env::var("CRM_REQUIRE_RABBITMQ").is_ok_and(|v| v == "1"),
            "CRM_REQUIRE_RABBITMQ=1 but rabbitmqctl cannot reach the broker: {err}"
        );
        notice(&format!("NOTICE: RabbitMQ {what} test SKIPPED: rabbitmqctl cannot reach the broker."));
        return false;
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_bus_survives_a_broker_restart() {
    if !rabbitmqctl_or_skip("restart").await {
        return;
    }
    // No other RabbitMQ test of this binary runs while the broker restarts.
    let _exclusive = RABBIT.write().await;
    run_unlocked(Transport::Rabbitmq, survives_a_broker_restart).await;
}

/// A channel of a connection of its own, for changing the broker behind the bus's back.
async fn raw_channel() -> (Connection, lapin::Channel) {
    let connection = Connection::connect(&amqp_url(), ConnectionProperties::default()).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    (connection, channel)
}

/// Declares `queue` as a durable classic queue (with a TTL when given), as a bus never would.
async fn declare_classic(queue: &str, ttl_ms: Option<i64>) {
    let (connection, channel) = raw_channel().await;
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString("classic".into()));
    if let Some(ttl) = ttl_ms {
        args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
    }
    channel.queue_declare(queue.into(), QueueDeclareOptions::durable(), args).await.unwrap();
    connection.close(200, "OK".into()).await.unwrap();
}

async fn delete_queue(queue: &str) {
    let (connection, channel) = raw_channel().await;
    channel.queue_delete(queue.into(), QueueDeleteOptions::default()).await.unwrap();
    connection.close(200, "OK".into()).await.unwrap();
}

/// Runs `body`, then deletes `queue` (which the bus does not know of), even when it panics.
async fn removing_afterwards(queue: &str, body: impl Future<Output = ()>) {
    let outcome = AssertUnwindSafe(body).catch_unwind().await;
    delete_queue(queue).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn failed_retry_and_dead_letter_give_the_delivery_back(ctx: Ctx) {
    let retry_queue = format!("{}.core.events.delay.50", ctx.prefix);
    removing_afterwards(&retry_queue.clone(), failed_retry_and_dead_letter_scenario(ctx, retry_queue)).await;
}

async fn failed_retry_and_dead_letter_scenario(ctx: Ctx, retry_queue: String) {
    let mut sub = ctx.bus.subscribe(Subscription::new("core.events", Exchange::Events, &["#"]).with_prefetch(1)).await.unwrap();
    // The delay queue of the first retry exists with other arguments: declaring it fails.
    declare_classic(&retry_queue, None).await;
    let first = event("email.message.received", 1);
    ctx.bus.publish(&first).await.unwrap();
    let d = recv(&mut sub).await;
    assert_eq!(d.envelope, first);
    let err = d.retry("flaky").await.unwrap_err();
    assert!(matches!(err, BusError::Unavailable(_)), "{err:?}");
    // It comes back (prefetch 1: only if it was given back), as the same attempt.
    let again = recv(&mut sub).await;
    assert_eq!(again.envelope, first);
    assert!(again.redelivered);
    assert_eq!(again.attempt, 1);

    // Without the dead-letter queue, dead-lettering is refused by the broker.
    delete_queue(&format!("{}.dead-letters", ctx.prefix)).await;
    let err = again.dead_letter("hopeless").await.unwrap_err();
    assert!(matches!(err, BusError::Rejected(_)), "{err:?}");
    let back = recv(&mut sub).await;
    assert_eq!(back.envelope, first);
    assert!(back.redelivered);
    back.ack().await.unwrap();
    // The consumer keeps receiving.
    let second = event("email.message.received", 2);
    ctx.bus.publish(&second).await.unwrap();
    let d = recv(&mut sub).await;
    assert_eq!(d.envelope, second);
    d.ack().await.unwrap();
    assert_quiet(&mut sub).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_failed_retry_and_dead_letter_give_the_delivery_back() {
    run(Transport::Rabbitmq, failed_retry_and_dead_letter_give_the_delivery_back).await;
}

/// The broker-side ids (pids) of the connections whose client called itself `crm-bus <prefix>`.
async fn bus_connections(prefix: &str) -> Vec<String> {
    let output = tokio::task::spawn_blocking(|| {
        std::process::Command::new("rabbitmqctl").args(["list_connections", "pid", "client_properties", "--silent"]).output()
    })
    .await
    .unwrap()
    .expect("rabbitmqctl list_connections");
    let marker = format!("crm-bus {prefix}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.contains(&marker))
        .filter_map(|line| line.split('\t').next().map(str::to_owned))
        .collect()
}

async fn groups_the_broker_refuses_do_not_keep_the_bus_down(ctx: Ctx) {
    let legacy = format!("{}.legacy", ctx.prefix);
    // The other classic queue is the bus's, deleted with its topology.
    removing_afterwards(&legacy.clone(), refused_groups_scenario(ctx, legacy)).await;
}

async fn refused_groups_scenario(ctx: Ctx, legacy: String) {
    // A queue of the group's name exists as a classic queue: subscribing fails (406).
    declare_classic(&legacy, None).await;
    let refused = ctx.bus.subscribe(Subscription::new("legacy", Exchange::Commands, &["legacy.#"])).await;
    assert!(refused.is_err(), "subscribing to a group whose queue the broker refuses");
    // A group declared fine whose queue is then re-created as a classic queue: its re-declare
    // on reconnecting fails.
    ctx.bus.declare(&Subscription::new("connector.email.commands", Exchange::Commands, &["email.#"])).await.unwrap();
    let email = format!("{}.connector.email.commands", ctx.prefix);
    delete_queue(&email).await;
    declare_classic(&email, None).await;

    let before = bus_connections(&ctx.prefix).await;
    assert_eq!(before.len(), 1, "the bus's connection: {before:?}");
    rabbitmqctl(&["close_connection", &before[0], "test: dropping the bus connection"]).await.expect("close the bus connection");
    let bus = ctx.bus.clone();
    let prefix = ctx.prefix.clone();
    wait_until("the bus has reconnected and publishes", Duration::from_secs(60), || async {
        let now = bus_connections(&prefix).await;
        now.len() == 1 && now != before && bus.is_ready().await && bus.publish(&event("email.message.received", 1)).await.is_ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_groups_the_broker_refuses_do_not_keep_the_bus_down() {
    if !rabbitmqctl_or_skip("reconnection").await {
        return;
    }
    run(Transport::Rabbitmq, groups_the_broker_refuses_do_not_keep_the_bus_down).await;
}
