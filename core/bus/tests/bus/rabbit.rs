//! RabbitMQ only: a raw message that is not an envelope, and riding out a broker restart.

use crate::support::{Ctx, RABBIT, Transport, WAIT, amqp_url, assert_quiet, event, notice, recv, run, run_unlocked, wait_until};
use crm_bus::{BusError, DEAD_LETTER_GROUP, Exchange, Subscription};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
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

/// Runs `rabbitmqctl` with `args`; `Err` when it cannot be run or fails.
async fn rabbitmqctl(args: &[&str]) -> Result<(), String> {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let output = std::process::Command::new("rabbitmqctl").args(&args).output().map_err(|e| format!("rabbitmqctl: {e}"))?;
        if output.status.success() {
            Ok(())
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_bus_survives_a_broker_restart() {
    if crate::support::rabbit_or_skip().await.is_none() {
        return;
    }
    if rabbitmqctl(&["status"]).await.is_err() {
        assert!(
            !std::env::var("CRM_REQUIRE_RABBITMQ").is_ok_and(|v| v == "1"),
            "CRM_REQUIRE_RABBITMQ=1 but rabbitmqctl cannot reach the broker"
        );
        notice("NOTICE: RabbitMQ restart test SKIPPED: rabbitmqctl cannot reach the broker.");
        return;
    }
    // No other RabbitMQ test of this binary runs while the broker restarts.
    let _exclusive = RABBIT.write().await;
    run_unlocked(Transport::Rabbitmq, survives_a_broker_restart).await;
}
