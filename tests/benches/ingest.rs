//! Inbound events end to end: published to RabbitMQ as a connector would, consumed by the
//! core's ingest, matched to customers and committed in the communications log, on PostgreSQL
//! (production) and on SQLite (the embedded default store, a file in this process).
//! Beside it, in the same run, the raw rate of plain `lapin` publishing persistent messages with
//! confirms while consuming them (prefetch 1,000, a multiple ack every 100), the broker's ceiling
//! on this machine. The target is for the core to sustain at least 70% of the raw rate.
//!
//! To show where the time goes, the run also times each half alone (publishing into a queue
//! nobody consumes; the core draining a full queue) and, for every phase, the CPU time the
//! broker, the database and this process used (from `/proc`, so on Linux only), per event.
//!
//! `cargo bench -p crm-tests --bench ingest` (`CRM_BENCH_EVENTS` sets the count, default
//! 100,000; `CRM_BENCH_STORES=postgres` or `sqlite` runs one store only). Needs RabbitMQ and,
//! for the PostgreSQL half, PostgreSQL on this machine.

use chrono::Utc;
use crm_bus::message::{Address, Channel, MessageReceived};
use crm_bus::{Bus, Envelope, Trace};
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
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
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

/// CPU time used so far by the broker, the database server and this process.
#[derive(Debug, Clone, Copy, Default)]
struct CpuUse {
    broker: f64,
    database: f64,
    bench: f64,
}

impl CpuUse {
    /// Sums user + system time of every `beam.smp` (RabbitMQ) and `postgres` process and of this
    /// one, from `/proc/<pid>/stat` (clock ticks of 1/100 s).
    fn now() -> CpuUse {
        let me = std::process::id().to_string();
        let mut used = CpuUse::default();
        let Ok(entries) = std::fs::read_dir("/proc") else { return used };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
            let command = &stat[open + 1..close];
            let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
            let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
            let seconds = (ticks(11) + ticks(12)) / 100.0;
            if name == me {
                used.bench += seconds;
            } else if command == "beam.smp" {
                used.broker += seconds;
            } else if command == "postgres" {
                used.database += seconds;
            }
        }
        used
    }

    fn since(self, start: CpuUse) -> CpuUse {
        CpuUse { broker: self.broker - start.broker, database: self.database - start.database, bench: self.bench - start.bench }
    }
}

/// One phase's outcome: its rate and the CPU each part used.
struct Phase {
    rate: f64,
    cpu: CpuUse,
}

impl Phase {
    fn measure(count: usize, elapsed: Duration, start: CpuUse) -> Phase {
        Phase { rate: count as f64 / elapsed.as_secs_f64(), cpu: CpuUse::now().since(start) }
    }

    fn report(&self, what: &str, unit: &str, count: usize) {
        let per_event = |seconds: f64| 1e6 * seconds / count as f64;
        say(&format!(
            "{what:<66} {:>8.0} {unit:<9} CPU µs/event: broker {:>5.0}, PostgreSQL server {:>5.0}, bench process {:>5.0}",
            self.rate,
            per_event(self.cpu.broker),
            per_event(self.cpu.database),
            per_event(self.cpu.bench)
        ));
    }
}

/// Plain lapin: one task publishes persistent messages with confirms per 1,000 to a quorum
/// queue while (or, with `consume_after`, before) another consumes them, acking every
/// `ack_every` messages; messages per second of the whole run, and of publishing alone.
async fn raw(bodies: &[Vec<u8>], consume_after: bool, ack_every: usize) -> (Phase, Phase) {
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
    let count = bodies.len();
    let cpu = CpuUse::now();
    let started = Instant::now();
    let consuming = if consume_after { None } else { Some(raw_consumer(&connection, &queue, count, ack_every).await) };
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
    let published = Phase::measure(count, started.elapsed(), cpu);
    let consuming = match consuming {
        Some(consuming) => consuming,
        None => raw_consumer(&connection, &queue, count, ack_every).await,
    };
    consuming.await.expect("consumer");
    let whole = Phase::measure(count, started.elapsed(), cpu);
    publisher.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await.expect("delete");
    let _ = connection.close(200, "OK".into()).await;
    (whole, published)
}

/// Consumes `count` messages of `queue` (prefetch 1,000, a `multiple` ack every `ack_every`).
async fn raw_consumer(connection: &Connection, queue: &str, count: usize, ack_every: usize) -> tokio::task::JoinHandle<()> {
    let channel = connection.create_channel().await.expect("channel");
    channel.basic_qos(1_000, BasicQosOptions::default()).await.expect("qos");
    let mut consumer =
        channel.basic_consume(queue.into(), "".into(), BasicConsumeOptions::default(), FieldTable::default()).await.expect("consume");
    tokio::spawn(async move {
        let mut received = 0;
        while received < count {
            let delivery = consumer.next().await.expect("a delivery").expect("no error");
            received += 1;
            if received % ack_every == 0 || received == count {
                channel.basic_ack(delivery.delivery_tag, BasicAckOptions { multiple: true }).await.expect("ack");
            }
        }
        channel.close(200, "OK".into()).await.expect("close");
    })
}

/// Publishes `envelopes` as `PUBLISHERS` connector instances would, each on its own connection,
/// in batches of 1,000 with confirms. Returns when all are confirmed.
async fn publish(config: &crm_bus::BusConfig, envelopes: Vec<Envelope>) {
    let mut publishers = Vec::new();
    for _ in 0..PUBLISHERS {
        publishers.push(Bus::connect(&amqp_url(), config.clone()).await.expect("publisher connects"));
    }
    let share = envelopes.len().div_ceil(PUBLISHERS);
    let mut tasks = Vec::new();
    for (publisher, part) in publishers.into_iter().zip(envelopes.chunks(share).map(<[Envelope]>::to_vec)) {
        tasks.push(tokio::spawn(async move {
            for chunk in part.chunks(PUBLISH_BATCH) {
                publisher.publish_all(chunk).await.expect("published");
            }
            publisher.close().await;
        }));
    }
    for task in tasks {
        task.await.expect("publisher");
    }
}

/// Events the hub has committed to the log so far, from its `ingest_events_total` counter
/// (counted after each commit; only the outcomes that leave the event in the log, not e.g.
/// `retried`). Polling the log's row count instead has PostgreSQL scan the growing table ten
/// times a second: the first version of this benchmark did, which lowered the rate it reported
/// by about 30%.
fn committed(metrics: &PrometheusHandle) -> u64 {
    const IN_THE_LOG: [&str; 3] = ["matched", "unmatched", "duplicate"];
    metrics
        .render()
        .lines()
        .filter(|line| IN_THE_LOG.iter().any(|outcome| line.starts_with(&format!("ingest_events_total{{outcome=\"{outcome}\"}}"))))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Waits until the hub has committed `total` events (polled every 10 ms). Fails, rather than
/// hanging the run, when the count has not moved for a minute.
async fn logged(metrics: &PrometheusHandle, total: usize) {
    let (mut last, mut since) = (committed(metrics), Instant::now());
    while last < total as u64 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now = committed(metrics);
        if now != last {
            (last, since) = (now, Instant::now());
        }
        assert!(since.elapsed() < Duration::from_secs(60), "the hub stalled at {last} of {total} events committed");
    }
}

/// The core's phases: both at once into an empty log (the headline: timed from the first publish
/// until the last event is committed); then, with the hub stopped, the bus's publishers alone
/// (into the core's queue, nobody consuming); then a hub draining that queue alone.
async fn core(
    metrics: &PrometheusHandle,
    backend: Backend,
    first: Vec<Envelope>,
    second: Vec<Envelope>,
) -> Option<(Phase, Phase, Phase, f64)> {
    let db = TestDb::new(backend).await?;
    let bus = TestBus::new(Transport::RabbitMq).await?;
    for i in 0..CUSTOMERS {
        let input = CustomerInput {
            name: Some(format!("Ενορία {i}")),
            contacts: vec![ContactInput { kind: ContactType::Email, label: None, value: format!("parish{i}@example.gr"), primary: true }],
            ..Default::default()
        };
        db.store.create(input.parse(Region::GR, Utc::now()).expect("valid")).await.expect("customer");
    }
    let (count, total) = (first.len(), first.len() + second.len());
    // The hub's counter goes on across stores: count from where the previous one left it.
    let base = committed(metrics) as usize;
    let hub = || {
        Hub::start(
            db.store.clone(),
            bus.bus.clone(),
            Arc::new(NativeMatcher::new(Region::GR)),
            HubConfig::default(),
            Arc::new(Notify::new()),
        )
    };

    let running = hub().await.expect("hub");
    let cpu = CpuUse::now();
    let started = Instant::now();
    let config = bus.config.clone();
    let publishing = tokio::spawn(async move {
        publish(&config, first).await;
        started.elapsed()
    });
    logged(metrics, base + count).await;
    let together = Phase::measure(count, started.elapsed(), cpu);
    let confirmed = count as f64 / publishing.await.expect("publishers").as_secs_f64();
    running.shutdown().await;
    let entries = db.store.count::<CommsEntry>(&CommsFilter::default()).await.expect("count");
    assert_eq!(entries as usize, count, "every event of the first phase is in the log once");

    let cpu = CpuUse::now();
    let started = Instant::now();
    publish(&bus.config, second).await;
    let published_alone = Phase::measure(count, started.elapsed(), cpu);

    let cpu = CpuUse::now();
    let started = Instant::now();
    let running = hub().await.expect("hub");
    logged(metrics, base + total).await;
    let ingested_alone = Phase::measure(total - count, started.elapsed(), cpu);
    running.shutdown().await;

    let entries = db.store.count::<CommsEntry>(&CommsFilter::default()).await.expect("count");
    assert_eq!(entries as usize, total, "every event of both phases is in the log once");
    let unmatched = db
        .store
        .count::<CommsEntry>(&CommsFilter { triage: Some(crm_domain::comms::Triage::Unmatched), ..Default::default() })
        .await
        .expect("count");
    assert_eq!(unmatched, 0, "every event matched its customer");
    bus.cleanup().await;
    Some((published_alone, ingested_alone, together, confirmed))
}

/// The stores to run the core on: both unless `CRM_BENCH_STORES` is `postgres` or `sqlite`.
fn stores() -> Vec<(Backend, &'static str)> {
    let (postgres, sqlite) = ((Backend::Postgres, "PostgreSQL"), (Backend::Sqlite, "SQLite"));
    match std::env::var("CRM_BENCH_STORES").ok().as_deref() {
        None => vec![postgres, sqlite],
        Some("postgres") => vec![postgres],
        Some("sqlite") => vec![sqlite],
        Some(other) => panic!("CRM_BENCH_STORES={other}: expected postgres or sqlite"),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let metrics = PrometheusBuilder::new().set_buckets(&[0.01, 0.1, 1.0]).expect("buckets").install_recorder().expect("a metrics recorder");
    let count = events();
    say(&format!("ingest benchmark: {count} inbound email events, RabbitMQ → core → the log, {CUSTOMERS} customers"));
    let bodies: Vec<Vec<u8>> = (0..count).map(|i| event(i).data).collect();
    if TestBus::new(Transport::RabbitMq).await.map(|b| tokio::spawn(b.cleanup())).is_none() {
        say("RabbitMQ is not reachable: benchmark skipped");
        return;
    }
    let (raw_alone, raw_published) = raw(&bodies, true, 100).await;
    let (plain, _) = raw(&bodies, false, 1).await;
    let (raw, _) = raw(&bodies, false, 100).await;
    raw_published.report("raw lapin, publish alone (persistent, confirms per 1000)", "msg/s", count);
    raw_alone.report("raw lapin, publish then consume (prefetch 1000)", "msg/s", count);
    raw.report("raw lapin, publish and consume at once", "msg/s", count);
    plain.report("raw lapin, at once, one ack per message (no ack batching)", "msg/s", count);
    for (backend, name) in stores() {
        let first: Vec<Envelope> = (0..count).map(event).collect();
        let second: Vec<Envelope> = (count..2 * count).map(event).collect();
        let Some((published, ingested, together, confirmed)) = core(&metrics, backend, first, second).await else {
            say(&format!("{name} is not reachable: its half skipped"));
            continue;
        };
        together.report(&format!("core on {name}, published → committed, all at once (empty log)"), "events/s", count);
        say(&format!("  (the {PUBLISHERS} publishers got their confirms at {confirmed:.0} events/s meanwhile)"));
        published.report(&format!("bus, {PUBLISHERS} publishers alone (CloudEvents, topic exchange)"), "events/s", count);
        ingested.report(&format!("core on {name} alone, draining the queue → committed (log not empty)"), "events/s", count);
        say(&format!("core on {name} / raw, at once: {:.0}% (target ≥ 70%)", 100.0 * together.rate / raw.rate));
        say(&format!("core on {name} / raw with one ack per message, at once: {:.0}%", 100.0 * together.rate / plain.rate));
    }
}
