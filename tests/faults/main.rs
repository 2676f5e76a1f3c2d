//! Fault tests on the real RabbitMQ: a stream of 10,000 inbound events and 1,000 outbound
//! commands runs while the broker is stopped and started again (`rabbitmqctl stop_app` /
//! `start_app`), or while the files connector process is killed and restarted. Afterwards every
//! event is in the log exactly once and every command was carried out, and the core and the
//! connector are still running.
//!
//! These tests stop the broker, so they run one at a time (a lock) and live in a test binary of
//! their own (cargo runs test binaries one after another).

use chrono::Utc;
use crm_bus::message::{Address, Bytes, Channel, MessageReceived, StoreFile};
use crm_bus::{Bus, Envelope, Trace};
use crm_domain::comms::{CommsEntry, Media, MediaStatus};
use crm_domain::contact::{ContactInput, ContactType, Region};
use crm_domain::customer::CustomerInput;
use crm_hub::{Hub, HubConfig, NativeMatcher};
use crm_store::{CommsFilter, MediaFilter, Store};
use crm_tests::bus::{TestBus, Transport, amqp_url, wait_until};
use crm_tests::processes::{self, rabbitmqctl};
use crm_tests::{Backend, TestDb};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Notify;
use uuid::Uuid;

const EVENTS: usize = 10_000;
const COMMANDS: usize = 1_000;
const CUSTOMERS: usize = 50;
/// Generous: the stream takes seconds; the limit only stops a hung test.
const DRAIN: Duration = Duration::from_secs(300);

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

enum Fault {
    RestartBroker,
    KillConnector,
}

/// Publishes as a connector does: retrying each batch until the broker confirms it (a batch
/// that was stored but whose confirm was lost is published again: the core drops the copy).
async fn publish_until_confirmed(bus: &Bus, batch: &[Envelope]) {
    let mut delay = Duration::from_millis(100);
    while let Err(err) = bus.publish_all(batch).await {
        tracing::info!(%err, "publish failed; retrying");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

fn content_of(i: usize) -> Vec<u8> {
    format!("file {i}: ").bytes().chain((0..1_000).map(|b| (b * 7 + i) as u8)).collect()
}

async fn stream_survives(fault: Fault) {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(db) = TestDb::new(Backend::Postgres).await else { return };
    let Some(core_bus) = TestBus::new(Transport::RabbitMq).await else { return };
    let prefix = core_bus.config.prefix.clone();
    let store: Store = db.store.clone();
    let wakeup = Arc::new(Notify::new());
    let hub =
        Hub::start(store.clone(), core_bus.bus.clone(), Arc::new(NativeMatcher::new(Region::GR)), HubConfig::default(), wakeup.clone())
            .await
            .expect("hub starts");
    let data_dir = std::env::temp_dir().join(format!("crm-faults-{}", Uuid::now_v7()));
    let mut connector = processes::files_local(&amqp_url(), &prefix, &data_dir, "files-1");

    let mut customers = Vec::new();
    for i in 0..CUSTOMERS {
        let input = CustomerInput {
            name: Some(format!("Ενορία {i}")),
            contacts: vec![ContactInput { kind: ContactType::Email, label: None, value: format!("parish{i}@example.gr"), primary: true }],
            ..Default::default()
        };
        customers.push(store.create(input.parse(Region::GR, Utc::now()).unwrap()).await.unwrap().id);
    }

    // A second connection plays the connectors that publish inbound events.
    let publisher = Bus::connect(&amqp_url(), core_bus.config.clone()).await.expect("publisher connects");
    let events: Vec<Envelope> = (0..EVENTS)
        .map(|i| {
            let message = MessageReceived {
                channel: Channel::Email,
                channel_message_id: format!("<fault-{i}@example.gr>"),
                from: Address::email(format!("parish{}@example.gr", i % CUSTOMERS), None),
                to: Vec::new(),
                cc: Vec::new(),
                subject: Some(format!("Μήνυμα {i}")),
                body: "Καλημέρα".into(),
                occurred_at: Utc::now(),
                in_reply_to: None,
                references: Vec::new(),
                auto_reply: false,
                attachments: Vec::new(),
            };
            Envelope::new("/connectors/email/fault-test", &message, Trace::new(format!("req-{i}")))
        })
        .collect();
    let published = Arc::new(AtomicUsize::new(0));
    let events_task = {
        let published = published.clone();
        tokio::spawn(async move {
            for batch in events.chunks(100) {
                publish_until_confirmed(&publisher, batch).await;
                published.fetch_add(batch.len(), Ordering::SeqCst);
            }
            publisher.close().await;
        })
    };
    // The API side: media records whose files the connector must store, each written with its
    // command in one transaction.
    let commands_task = {
        let store = store.clone();
        let wakeup = wakeup.clone();
        let customers = customers.clone();
        tokio::spawn(async move {
            for i in 0..COMMANDS {
                let media_id = Uuid::now_v7();
                let customer = customers[i % CUSTOMERS];
                let path = format!("customers/{customer}/media/{media_id}-{i}.bin");
                let content = content_of(i);
                let media =
                    crm_tests::pending_media(Some(customer), &format!("{i}.bin"), "application/octet-stream").awaiting(&path, &content);
                let command = StoreFile { media_id, path, mime_type: media.mime_type.clone(), overwrite: false, content: Bytes(content) };
                let envelope = Envelope::new("/crm/core", &command, Trace::new(format!("upload-{i}")));
                let mut delay = Duration::from_millis(50);
                while let Err(err) = store.create_with_commands(media_id, media.clone(), &[envelope.to_structured()]).await {
                    tracing::info!(%err, "store refused; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                wakeup.notify_one();
                if i % 50 == 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        })
    };

    let stored = || async { store.count::<Media>(&MediaFilter { status: Some(MediaStatus::Stored), ..Default::default() }).await.unwrap() };
    match fault {
        Fault::RestartBroker => {
            wait_until("a third of the events published", DRAIN, || async { published.load(Ordering::SeqCst) >= EVENTS / 3 }).await;
            tokio::task::spawn_blocking(|| {
                rabbitmqctl(&["stop_app"]);
                std::thread::sleep(Duration::from_secs(3));
                rabbitmqctl(&["start_app"]);
                rabbitmqctl(&["await_startup", "--timeout", "60"]);
            })
            .await
            .unwrap();
        }
        Fault::KillConnector => {
            wait_until("some files stored", DRAIN, || async { stored().await >= (COMMANDS / 5) as i64 }).await;
            connector.kill();
            tokio::time::sleep(Duration::from_secs(1)).await;
            connector = processes::files_local(&amqp_url(), &prefix, &data_dir, "files-2");
        }
    }
    events_task.await.unwrap();
    commands_task.await.unwrap();

    let logged = || async { store.count::<CommsEntry>(&CommsFilter::default()).await.unwrap() };
    wait_until("every event logged", DRAIN, || async { logged().await >= EVENTS as i64 }).await;
    wait_until("every command carried out", DRAIN, || async { stored().await >= COMMANDS as i64 }).await;
    // Let any duplicate still in flight arrive before counting exactly.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(logged().await, EVENTS as i64, "every event logged exactly once");
    assert_eq!(stored().await, COMMANDS as i64);
    let (backlog, _) = store.outbox_backlog().await.unwrap();
    assert_eq!(backlog, 0, "the outbox is drained");
    let dead = store.dead_letters(Some("dead"), None, None, None).await.unwrap().items;
    assert!(dead.is_empty(), "nothing dead-lettered: {dead:?}");

    // Every file is there once, byte for byte.
    let mut files = Vec::new();
    let mut dirs = vec![data_dir.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                dirs.push(entry.path());
            } else if !entry.file_name().to_string_lossy().starts_with(".crm-tmp-") {
                // A write the kill interrupted leaves a hidden temporary file (cleared at a
                // later start); it is never visible under the file's name.
                files.push(entry.path());
            }
        }
    }
    assert_eq!(files.len(), COMMANDS, "one file per command");
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let i: usize = name.rsplit('-').next().and_then(|n| n.strip_suffix(".bin")).and_then(|n| n.parse().ok()).expect("index in name");
        assert_eq!(std::fs::read(file).unwrap(), content_of(i), "{name}");
    }

    // Still running: the connector process, and the core, which logs a new event.
    assert!(connector.is_running(), "the connector process survived");
    let last = MessageReceived {
        channel: Channel::Email,
        channel_message_id: "<after@example.gr>".into(),
        from: Address::email("parish0@example.gr", None),
        to: Vec::new(),
        cc: Vec::new(),
        subject: None,
        body: "after".into(),
        occurred_at: Utc::now(),
        in_reply_to: None,
        references: Vec::new(),
        auto_reply: false,
        attachments: Vec::new(),
    };
    publish_until_confirmed(&core_bus.bus, &[Envelope::new("/connectors/email/fault-test", &last, Trace::default())]).await;
    wait_until("the core to log a new event", DRAIN, || async { logged().await == EVENTS as i64 + 1 }).await;

    drop(connector);
    hub.shutdown().await;
    core_bus.cleanup().await;
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_survives_a_broker_restart() {
    stream_survives(Fault::RestartBroker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_survives_a_killed_connector() {
    stream_survives(Fault::KillConnector).await;
}
