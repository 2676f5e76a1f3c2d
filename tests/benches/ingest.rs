//! Inbound events end to end: published to RabbitMQ as a connector would, consumed by the
//! core's ingest, matched to customers and committed in the communications log (PostgreSQL).
//! Beside it, in the same run, the raw rate of plain `lapin` publishing persistent messages with
//! confirms while consuming them (prefetch 1,000, a multiple ack every 100), the broker's ceiling
//! on this machine. The target is for the core to sustain at least 70% of the raw rate.
//!
//! `cargo bench -p crm-tests --bench ingest` (`CRM_BENCH_EVENTS` sets the count, default
//! 100,000). Needs RabbitMQ and PostgreSQL on this machine.

use chrono::Utc;
use crm_bus::message::{Address, Channel, MessageReceived};
use crm_bus::{Envelope, Trace};
use crm_domain::comms::CommsEntry;
use crm_domain::contact::{ContactInput, ContactType, Region};
use crm_domain::customer::CustomerInput;
use crm_hub::{Hub, HubConfig, NativeMatcher};
use crm_store::CommsFilter;
use crm_tests::bus::{TestBus, Transport, amqp_url};
use crm_tests::{Backend, TestDb};
use futures::StreamExt as _;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

const CUSTOMERS: usize = 1_000;
const PUBLISH_BATCH: usize = 1_000;
/// Connector instances publishing at once.
const PUBLISHERS: usize = 4;

fn events() -> usize {
    std::env::var("CRM_BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000)
}

fn say(text: &str) {
    let _ = writeln!(std::io::stdout(), "{text}");
}

fn event(i: usize) -> Envelope {
    let message = MessageReceived {
        channel: Channel::Email,
        channel_message_id: format!("<bench-{i}@example.gr>"),
        from: Address::email(format!("parish{}@example.gr", i % CUSTOMERS), Some(format!("Ενορία {}", i % CUSTOMERS))),
        to: vec![Address::email("office@bells.example", None)],
        cc: Vec::new(),
        subject: Some(format!("Καμπάνα {i}")),
        body: "Καλημέρα σας, η καμπάνα χτυπά λάθος ώρα από χθες το βράδυ.".into(),
        occurred_at: Utc::now(),
        in_reply_to: None,
        references: Vec::new(),
        auto_reply: false,
        attachments: Vec::new(),
    };
    Envelope::new("/connectors/email/bench", &message, Trace::new(format!("bench-{i}")))
}

/// Plain lapin: one task publishes persistent messages with confirms per 1,000 to a quorum
/// queue while another consumes them; messages per second from the first publish to the last ack.
async fn raw_rate(bodies: &[Vec<u8>]) -> f64 {
    let connection = Connection::connect(&amqp_url(), ConnectionProperties::default()).await.expect("connect");
    let queue = format!("bench-ingest-raw-{}", uuid::Uuid::now_v7().simple());
    let publisher = connection.create_channel().await.expect("channel");
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    publisher
        .queue_declare(queue.as_str().into(), QueueDeclareOptions { durable: true, ..Default::default() }, args)
        .await
        .expect("declare");
    publisher.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    let consumer_channel = connection.create_channel().await.expect("channel");
    consumer_channel.basic_qos(1_000, BasicQosOptions::default()).await.expect("qos");
    let mut consumer = consumer_channel
        .basic_consume(queue.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    let count = bodies.len();
    let started = Instant::now();
    let consuming = tokio::spawn(async move {
        let mut received = 0;
        while received < count {
            let delivery = consumer.next().await.expect("a delivery").expect("no error");
            received += 1;
            if received % 100 == 0 || received == count {
                consumer_channel.basic_ack(delivery.delivery_tag, BasicAckOptions { multiple: true }).await.expect("ack");
            }
        }
        consumer_channel.close(200, "OK".into()).await.expect("close");
    });
    for chunk in bodies.chunks(PUBLISH_BATCH) {
        for body in chunk {
            let properties = BasicProperties::default().with_delivery_mode(2).with_content_type("application/json".into());
            let _confirm = publisher
                .basic_publish("".into(), queue.as_str().into(), BasicPublishOptions::default(), body, properties)
                .await
                .expect("publish");
        }
        publisher.wait_for_confirms().await.expect("confirms");
    }
    consuming.await.expect("consumer");
    let rate = count as f64 / started.elapsed().as_secs_f64();
    publisher.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await.expect("delete");
    let _ = connection.close(200, "OK".into()).await;
    rate
}

/// The core: events published in batches of 1,000 by four publishers (connector instances) while
/// the hub ingests them; events per second from the first publish until the last is committed.
async fn core_rate(envelopes: Vec<Envelope>) -> Option<(f64, f64)> {
    let db = TestDb::new(Backend::Postgres).await?;
    let bus = TestBus::new(Transport::RabbitMq).await?;
    for i in 0..CUSTOMERS {
        let input = CustomerInput {
            name: Some(format!("Ενορία {i}")),
            contacts: vec![ContactInput { kind: ContactType::Email, label: None, value: format!("parish{i}@example.gr"), primary: true }],
            ..Default::default()
        };
        db.store.create(input.parse(Region::GR, Utc::now()).expect("valid")).await.expect("customer");
    }
    let hub = Hub::start(
        db.store.clone(),
        bus.bus.clone(),
        Arc::new(NativeMatcher::new(Region::GR)),
        HubConfig::default(),
        Arc::new(Notify::new()),
    )
    .await
    .expect("hub");
    let count = envelopes.len();
    // Several connector instances publish at once, each on its own connection.
    let mut publishers = Vec::new();
    for _ in 0..PUBLISHERS {
        publishers.push(crm_bus::Bus::connect(&amqp_url(), bus.config.clone()).await.expect("publisher connects"));
    }
    let share = count.div_ceil(PUBLISHERS);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (publisher, part) in publishers.into_iter().zip(envelopes.chunks(share).map(<[Envelope]>::to_vec)) {
        tasks.push(tokio::spawn(async move {
            for chunk in part.chunks(PUBLISH_BATCH) {
                publisher.publish_all(chunk).await.expect("published");
            }
            publisher.close().await;
        }));
    }
    let publishing = tokio::spawn(async move {
        for task in tasks {
            task.await.expect("publisher");
        }
        started.elapsed()
    });
    loop {
        let logged = db.store.count::<CommsEntry>(&CommsFilter::default()).await.expect("count");
        if logged as usize >= count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();
    let published_in = publishing.await.expect("publisher");
    let unmatched = db
        .store
        .count::<CommsEntry>(&CommsFilter { triage: Some(crm_domain::comms::Triage::Unmatched), ..Default::default() })
        .await
        .expect("count");
    assert_eq!(unmatched, 0, "every event matched its customer");
    hub.shutdown().await;
    bus.cleanup().await;
    Some((count as f64 / elapsed.as_secs_f64(), count as f64 / published_in.as_secs_f64()))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let count = events();
    say(&format!("ingest benchmark: {count} inbound email events, RabbitMQ → core → PostgreSQL, {CUSTOMERS} customers"));
    let envelopes: Vec<Envelope> = (0..count).map(event).collect();
    let bodies: Vec<Vec<u8>> = envelopes.iter().map(|e| e.data.clone()).collect();
    if TestBus::new(Transport::RabbitMq).await.map(|b| tokio::spawn(b.cleanup())).is_none() {
        say("RabbitMQ is not reachable: benchmark skipped");
        return;
    }
    let raw = raw_rate(&bodies).await;
    say(&format!("raw lapin, publish and consume at once (persistent, confirms per 1000, prefetch 1000): {raw:>8.0} msg/s"));
    let Some((core, published)) = core_rate(envelopes).await else {
        say("PostgreSQL is not reachable: benchmark skipped");
        return;
    };
    say(&format!("core, published → committed in the log:                                 {core:>8.0} events/s"));
    say(&format!("  (the {PUBLISHERS} publishers got their confirms at                              {published:>8.0} events/s)"));
    say(&format!("core / raw: {:.0}% (target ≥ 70%)", 100.0 * core / raw));
}
