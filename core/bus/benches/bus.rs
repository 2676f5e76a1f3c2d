//! Raw message rates of the bus, against what plain `lapin` gets from the same broker.
//!
//! `cargo bench -p crm-bus --bench bus` (`-- --quick` for a short run; `CRM_BENCH_MESSAGES`
//! sets the count).
//!
//! * RabbitMQ with plain `lapin`: persistent publish with confirms awaited per 1,000 (to the
//!   queue, then again with the bus's CloudEvents headers through a topic exchange, which is what
//!   the bus does), then consume with prefetch 1,000 and a `multiple` ack every 100 — the figures
//!   in `shared/PEERS.md`.
//! * The same through [`Bus`]: `publish_all` in batches of 1,000, then `next_batch(1000)` and
//!   `ack_all`; and both at once (publisher and subscriber running together).
//! * The in-process bus, the same way: in memory only, and with its journal on disk (as
//!   `crm serve` runs it; in a temporary directory).
//!
//! RabbitMQ parts are skipped with a notice when no broker answers at `CRM_TEST_AMQP_URL`
//! (default `amqp://guest:guest@127.0.0.1:5672/%2f`).
#![allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use chrono::Utc;
use crm_bus::{Bus, BusConfig, Envelope, Exchange, Subscription, Trace};
use futures::StreamExt as _;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use std::time::{Duration, Instant};

const BATCH: usize = 1_000;

fn amqp_url() -> String {
    std::env::var("CRM_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn messages() -> usize {
    if let Some(n) = std::env::var("CRM_BENCH_MESSAGES").ok().and_then(|v| v.parse().ok()) {
        return n;
    }
    if std::env::args().any(|a| a == "--quick") { 5_000 } else { 30_000 }
}

/// A message of about the size of a small event (~300 bytes of JSON).
fn envelope(n: usize) -> Envelope {
    Envelope {
        id: uuid::Uuid::now_v7().to_string(),
        source: "/bench/bus".into(),
        kind: "crm.message.received.v1".into(),
        time: Utc::now(),
        subject: None,
        exchange: Exchange::Events,
        routing_key: "email.message.received".into(),
        trace: Trace::new(format!("bench-{n}")),
        data: serde_json::to_vec(&serde_json::json!({
            "n": n,
            "channel": "email",
            "channel_message_id": format!("<{n}@bench.example>"),
            "from": {"kind": "email", "value": "someone@example.com", "name": "Some One"},
            "body": "Hello, I would like to know when my order ships. Thank you!",
        }))
        .expect("json"),
    }
}

fn report(what: &str, count: usize, elapsed: Duration) {
    println!("{what:<54} {:>9.0} msg/s  ({count} in {:.2} s)", count as f64 / elapsed.as_secs_f64(), elapsed.as_secs_f64());
}

async fn rabbit_reachable() -> bool {
    let Ok(uri) = amqp_url().parse::<lapin::uri::AMQPUri>() else { return false };
    let address = format!("{}:{}", uri.authority.host, uri.authority.port);
    matches!(tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(address)).await, Ok(Ok(_)))
}

/// Plain lapin on a quorum queue, as the bus uses.
async fn raw_lapin(count: usize) {
    let connection = Connection::connect(&amqp_url(), ConnectionProperties::default()).await.expect("connect");
    let queue = format!("bench-raw-{}", uuid::Uuid::new_v4().simple());
    let publisher = connection.create_channel().await.expect("channel");
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    publisher.queue_declare(queue.as_str().into(), QueueDeclareOptions::durable(), args).await.expect("declare");
    publisher.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    let bodies: Vec<Vec<u8>> = (0..count).map(|n| envelope(n).data).collect();

    let started = Instant::now();
    for chunk in bodies.chunks(BATCH) {
        for body in chunk {
            let properties = BasicProperties::default().with_delivery_mode(2).with_content_type("application/json".into());
            let _confirm = publisher
                .basic_publish("".into(), queue.as_str().into(), BasicPublishOptions::default(), body, properties)
                .await
                .expect("publish");
        }
        publisher.wait_for_confirms().await.expect("confirms");
    }
    report("raw lapin: publish to the queue, confirms per 1000", count, started.elapsed());

    // What the bus does, by hand: the CloudEvents headers, through a topic exchange. The
    // difference to the bus's own figure is the bus's overhead.
    let topic = format!("{queue}.x");
    publisher
        .exchange_declare(
            topic.as_str().into(),
            lapin::ExchangeKind::Topic,
            lapin::options::ExchangeDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("x");
    publisher
        .queue_bind(queue.as_str().into(), topic.as_str().into(), "#".into(), Default::default(), FieldTable::default())
        .await
        .expect("bind");
    let started = Instant::now();
    for (chunk_index, chunk) in bodies.chunks(BATCH).enumerate() {
        for (i, body) in chunk.iter().enumerate() {
            let e = envelope(chunk_index * BATCH + i);
            let mut headers = FieldTable::default();
            for (name, value) in [
                ("cloudEvents:specversion", "1.0".to_owned()),
                ("cloudEvents:id", e.id.clone()),
                ("cloudEvents:source", e.source.clone()),
                ("cloudEvents:type", e.kind.clone()),
                ("cloudEvents:time", e.time.to_rfc3339()),
                ("traceparent", e.trace.traceparent.clone().unwrap_or_default()),
                ("x-request-id", e.trace.request_id.clone().unwrap_or_default()),
            ] {
                headers.insert(name.into(), AMQPValue::LongString(value.into()));
            }
            let properties = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into())
                .with_message_id(e.id.as_str().into())
                .with_headers(headers);
            let _confirm = publisher
                .basic_publish(topic.as_str().into(), "email.message.received".into(), BasicPublishOptions::default(), body, properties)
                .await
                .expect("publish");
        }
        publisher.wait_for_confirms().await.expect("confirms");
    }
    report("raw lapin: + bus headers, via a topic exchange", count, started.elapsed());

    let consumer_channel = connection.create_channel().await.expect("channel");
    consumer_channel.basic_qos(1_000, BasicQosOptions::default()).await.expect("qos");
    let mut consumer = consumer_channel
        .basic_consume(queue.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    let started = Instant::now();
    let mut received = 0;
    while received < 2 * count {
        let delivery = consumer.next().await.expect("a delivery").expect("no error");
        received += 1;
        if received % 100 == 0 || received == 2 * count {
            consumer_channel.basic_ack(delivery.delivery_tag, BasicAckOptions { multiple: true }).await.expect("ack");
        }
    }
    report("raw lapin: consume, prefetch 1000, ack multiple/100", 2 * count, started.elapsed());
    // Close the consumer's channel before dropping the consumer (see the bus's subscriber).
    consumer_channel.close(200, "OK".into()).await.expect("close");
    drop(consumer);
    publisher.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await.expect("delete");
    publisher.exchange_delete(topic.as_str().into(), lapin::options::ExchangeDeleteOptions::default()).await.expect("delete");
    let _ = connection.close(200, "OK".into()).await;
}

/// Publishes then consumes through `bus`, then both at once.
async fn through_bus(label: &str, bus: &Bus, count: usize) {
    let subscription = Subscription::new("bench.events", Exchange::Events, &["#"]).with_prefetch(1_000);
    // Declare the queue, then let the messages pile up while nobody consumes.
    drop(bus.subscribe(subscription.clone()).await.expect("subscribe"));
    let envelopes: Vec<Envelope> = (0..count).map(envelope).collect();

    let started = Instant::now();
    for chunk in envelopes.chunks(BATCH) {
        bus.publish_all(chunk).await.expect("publish");
    }
    report(&format!("{label}: publish_all per {BATCH}"), count, started.elapsed());

    let mut subscriber = bus.subscribe(subscription.clone()).await.expect("subscribe");
    let started = Instant::now();
    let mut received = 0;
    while received < count {
        let batch = subscriber.next_batch(1_000).await;
        received += batch.len();
        subscriber.ack_all(batch).await.expect("ack");
    }
    report(&format!("{label}: next_batch(1000) + ack_all"), count, started.elapsed());

    let started = Instant::now();
    let publisher = {
        let bus = bus.clone();
        tokio::spawn(async move {
            for chunk in envelopes.chunks(BATCH) {
                bus.publish_all(chunk).await.expect("publish");
            }
        })
    };
    let mut received = 0;
    while received < count {
        let batch = subscriber.next_batch(1_000).await;
        received += batch.len();
        subscriber.ack_all(batch).await.expect("ack");
    }
    publisher.await.expect("publisher");
    report(&format!("{label}: publish and consume at once"), count, started.elapsed());
}

/// One publish at a time, each awaited (as a connector publishes what it received): what a
/// confirm costs (on the journaled bus an `fsync`; on RabbitMQ a confirm round trip).
async fn one_at_a_time(label: &str, bus: &Bus, count: usize) {
    let subscription = Subscription::new("bench.single", Exchange::Events, &["#"]).with_prefetch(1_000);
    let mut subscriber = bus.subscribe(subscription).await.expect("subscribe");
    let envelopes: Vec<Envelope> = (0..count).map(envelope).collect();
    let started = Instant::now();
    for envelope in &envelopes {
        bus.publish(envelope).await.expect("publish");
    }
    report(&format!("{label}: publish one at a time"), count, started.elapsed());
    let mut received = 0;
    while received < count {
        let batch = subscriber.next_batch(1_000).await;
        received += batch.len();
        subscriber.ack_all(batch).await.expect("ack");
    }
}

fn bench_config() -> BusConfig {
    BusConfig { prefix: format!("bench-{}", uuid::Uuid::new_v4().simple()), ..BusConfig::default() }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let count = messages();
    println!("bus bench: {count} messages of ~{} bytes", envelope(0).data.len());

    let bus = Bus::in_process(bench_config());
    through_bus("bus in-process", &bus, count).await;
    bus.close().await;

    let dir = tempfile::tempdir().expect("a temporary directory");
    let bus = Bus::in_process_durable(bench_config(), &dir.path().join("bus.journal")).expect("open the journal");
    through_bus("bus in-process, journaled", &bus, count).await;
    one_at_a_time("bus in-process, journaled", &bus, count / 10).await;
    bus.close().await;
    drop(bus);

    if !rabbit_reachable().await {
        println!("NOTICE: RabbitMQ parts SKIPPED: no broker at {}", crm_bus::redact_url(&amqp_url()));
        return;
    }
    raw_lapin(count).await;
    let bus = Bus::connect(&amqp_url(), bench_config()).await.expect("connect");
    through_bus("bus on RabbitMQ", &bus, count).await;
    one_at_a_time("bus on RabbitMQ", &bus, count / 10).await;
    bus.delete_topology().await.expect("delete the bench topology");
    bus.close().await;
}
