//! The outbox relay marks each message by its own outcome: a command the bus refuses (for a
//! channel no connector serves) between valid ones neither re-sends them nor blocks what is
//! written after it; it waits out a backoff, visible to ops with its attempts and last error.
//! One the bus can never take (a bad routing key, a file too large for a message) is filed as a
//! dead letter and fails the record waiting for it, and the outbox goes on.
//! What the store keeps only for a while (published commands, idempotency keys, silent connector
//! instances) the janitor clears, and nothing else.
//! On both transports and both backends, without the spy of the other scenarios (it binds every
//! command, so nothing would be refused).

use chrono::Utc;
use crm_bus::message::{Address, Bytes, Channel, SendMessage, StoreFile, command_group};
use crm_bus::{BusConfig, Envelope, Exchange, Subscription, Trace};
use crm_domain::comms::{CommsEntry, CommsType, DeliveryStatus, Media, MediaStatus};
use crm_domain::contact::Region;
use crm_hub::{Hub, HubConfig, NativeMatcher};
use crm_tests::bus::{TestBus, Transport, wait_until};
use crm_tests::fixtures::{customer_with_email, queued_outbound};
use crm_tests::{Backend, TestDb};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

fn send(channel: Channel, n: usize) -> serde_json::Value {
    let message = SendMessage {
        entry_id: Uuid::now_v7(),
        channel,
        to: vec![Address::email("eirini@example.gr", None)],
        cc: Vec::new(),
        subject: Some(format!("μήνυμα {n}")),
        body: "Σας στέλνουμε την προσφορά.".into(),
        body_html: None,
        in_reply_to: None,
        references: Vec::new(),
        attachments: Vec::new(),
    };
    Envelope::new("/crm/core", &message, Trace::new(format!("req-{n}"))).to_structured()
}

fn id(envelope: &serde_json::Value) -> String {
    envelope["id"].as_str().expect("an id").to_owned()
}

/// A hub whose relay the test wakes, and a subscriber standing in for the email connector.
async fn start(db: &TestDb, bus: &TestBus) -> (Hub, Arc<Notify>, crm_bus::Subscriber) {
    let wakeup = Arc::new(Notify::new());
    let hub = Hub::start(db.store.clone(), bus.bus.clone(), Arc::new(NativeMatcher::new(Region::GR)), HubConfig::default(), wakeup.clone())
        .await
        .expect("hub starts");
    let email =
        bus.bus.subscribe(Subscription::new(command_group(Channel::Email), Exchange::Commands, &["email.#"])).await.expect("subscribed");
    (hub, wakeup, email)
}

/// Writes `commands` to the outbox in one transaction (with a media record, as an upload does).
async fn write(db: &TestDb, commands: &[serde_json::Value]) {
    let file = crm_tests::pending_media(None, "f.pdf", "application/pdf");
    db.store.create_with_commands(Uuid::now_v7(), file, commands).await.expect("written with its commands");
}

async fn a_refused_command_neither_repeats_nor_blocks_the_others(transport: Transport, backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let Some(bus) = TestBus::new(transport).await else { return };
    let (hub, wakeup, mut email) = start(&db, &bus).await;

    // No connector serves calls: the hub declares no queue for their commands.
    let batch = [send(Channel::Email, 1), send(Channel::Call, 2), send(Channel::Email, 3)];
    write(&db, &batch).await;
    wakeup.notify_one();
    let mut arrived = Vec::new();
    for _ in 0..2 {
        let delivery = tokio::time::timeout(WAIT, email.next()).await.expect("a valid command arrives").expect("bus open");
        arrived.push(delivery.envelope.id.clone());
        delivery.ack().await.unwrap();
    }
    assert_eq!(arrived.iter().collect::<BTreeSet<_>>(), [id(&batch[0]), id(&batch[2])].iter().collect::<BTreeSet<_>>());

    // A command written later goes out, while the refused one waits.
    let later = send(Channel::Email, 4);
    write(&db, std::slice::from_ref(&later)).await;
    wakeup.notify_one();
    let delivery = tokio::time::timeout(WAIT, email.next()).await.expect("the later command arrives").expect("bus open");
    assert_eq!(delivery.envelope.id, id(&later));
    delivery.ack().await.unwrap();

    // Ops see the refused command with its attempts and error; it is tried again after its
    // backoff (1 s, then 2 s).
    wait_until("the refused command is tried again", WAIT, || async {
        db.store.outbox_failing(10).await.unwrap().first().is_some_and(|f| f.attempts >= 2)
    })
    .await;
    let failing = db.store.outbox_failing(10).await.unwrap();
    assert_eq!(failing.len(), 1, "{failing:?}");
    let failure = &failing[0];
    assert_eq!(failure.envelope_id, id(&batch[1]));
    assert!(failure.last_error.contains("rejected"), "{failure:?}");
    assert!(failure.next_attempt_at.is_some_and(|at| at > Utc::now() - chrono::Duration::seconds(1)), "{failure:?}");
    assert_eq!(db.store.outbox_backlog().await.unwrap().0, 1, "only the refused command is unsent");

    // The valid ones went out once: the retries of the refused one did not send them again.
    if let Ok(Some(extra)) = tokio::time::timeout(Duration::from_millis(500), email.next()).await {
        panic!("a command arrived twice: {}", extra.envelope.id);
    }
    drop(email);
    hub.shutdown().await;
    bus.cleanup().await;
}

/// A message the bus can never take (its routing key is a pattern) is not retried for ever: it
/// is filed as a dead letter of `core.outbox` with the reason, the entry waiting for it fails
/// with that reason, and the outbox goes on.
async fn a_message_the_bus_can_never_take_is_filed_and_fails_its_entry(transport: Transport, backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let Some(bus) = TestBus::new(transport).await else { return };
    let (hub, wakeup, mut email) = start(&db, &bus).await;
    let customer = customer_with_email(&db.store, "Ναός Αγίας Σοφίας", "sofia@example.gr").await;

    let mut command = Envelope::from_structured(&send(Channel::Email, 1)).unwrap();
    command.routing_key = "email.*.send".into();
    let entry_id: Uuid = serde_json::from_slice::<SendMessage>(&command.data).unwrap().entry_id;
    let entry = queued_outbound(customer.id, CommsType::Email, Some("μήνυμα 1"), "Σας στέλνουμε την προσφορά.");
    db.store.create_with_commands(entry_id, entry, &[command.to_structured()]).await.expect("written with its command");
    let later = send(Channel::Email, 2);
    write(&db, std::slice::from_ref(&later)).await;
    wakeup.notify_one();

    let delivery = tokio::time::timeout(WAIT, email.next()).await.expect("the valid command arrives").expect("bus open");
    assert_eq!(delivery.envelope.id, id(&later));
    delivery.ack().await.unwrap();
    wait_until("the entry to fail", WAIT, || async {
        db.store.get::<CommsEntry>(entry_id, false).await.unwrap().data.delivery_status == Some(DeliveryStatus::Failed)
    })
    .await;
    let failed = db.store.get::<CommsEntry>(entry_id, false).await.unwrap();
    let reason = failed.data.status_reason.expect("a reason");
    assert!(reason.contains("core.outbox") && reason.contains("bad routing key 'email.*.send'"), "{reason}");
    assert_eq!(db.store.dead_letter_counts().await.unwrap(), vec![("core.outbox".to_owned(), 1)]);
    // The row is marked done just after the entry fails.
    wait_until("nothing left to retry", WAIT, || async { db.store.outbox_backlog().await.unwrap().0 == 0 }).await;
    assert!(db.store.outbox_failing(10).await.unwrap().is_empty());
    drop(email);
    hub.shutdown().await;
    bus.cleanup().await;
}

/// A file too large for a bus message (a broker would close the channel on it, and the relay
/// would retry it ahead of everything else for ever) is refused before it is published: filed
/// as a dead letter of `core.outbox`, its media record failed with the reason, and the command
/// written after it goes out.
async fn a_file_too_large_for_the_bus_fails_its_media_and_blocks_nothing(transport: Transport, backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let config = BusConfig { max_message_bytes: 16 * 1024, ..crm_tests::bus::test_bus_config() };
    let Some(bus) = TestBus::with_config(transport, config).await else { return };
    let (hub, wakeup, mut email) = start(&db, &bus).await;

    let media_id = Uuid::now_v7();
    let store = StoreFile {
        media_id,
        path: format!("customers/x/media/{media_id}-big.bin"),
        mime_type: "application/octet-stream".into(),
        overwrite: false,
        content: Bytes(vec![7; 20 * 1024]),
    };
    let command = Envelope::new("/crm/core", &store, Trace::new("req-big")).to_structured();
    let file = crm_tests::pending_media(None, "big.bin", "application/octet-stream");
    db.store.create_with_commands(media_id, file, &[command]).await.expect("written with its command");
    let later = send(Channel::Email, 3);
    write(&db, std::slice::from_ref(&later)).await;
    wakeup.notify_one();

    let delivery = tokio::time::timeout(WAIT, email.next()).await.expect("the command after it arrives").expect("bus open");
    assert_eq!(delivery.envelope.id, id(&later));
    delivery.ack().await.unwrap();
    wait_until("the media to fail", WAIT, || async {
        db.store.get::<Media>(media_id, false).await.unwrap().data.status == MediaStatus::Failed
    })
    .await;
    let failed = db.store.get::<Media>(media_id, false).await.unwrap();
    let reason = failed.data.status_reason.expect("a reason");
    assert!(reason.contains("larger than the bus takes (16384 bytes)"), "{reason}");
    assert_eq!(db.store.dead_letter_counts().await.unwrap(), vec![("core.outbox".to_owned(), 1)]);
    wait_until("nothing left to retry", WAIT, || async { db.store.outbox_backlog().await.unwrap().0 == 0 }).await;
    drop(email);
    hub.shutdown().await;
    bus.cleanup().await;
}

/// With every retention at zero (silent connectors: half an hour), the janitor deletes a published
/// command and the idempotency key it was written with, and forgets an instance silent for an
/// hour; it keeps a command not published yet and an instance heard from just now.
async fn the_janitor_clears_what_is_kept_only_for_a_while(transport: Transport, backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let Some(bus) = TestBus::new(transport).await else { return };
    let store = db.store.clone();
    let heartbeat = |instance: &str, heard: chrono::Duration| crm_store::ConnectorInstance {
        name: "email".into(),
        instance: instance.into(),
        version: "1.0.0".into(),
        channel: "email".into(),
        started_at: Utc::now() - chrono::Duration::days(1),
        last_heartbeat: Utc::now() - heard,
        state: "ready".into(),
        detail: None,
        in_flight: 0,
        interval_seconds: 30,
    };
    let (gone, fresh) = (heartbeat("gone", chrono::Duration::hours(1)), heartbeat("fresh", chrono::Duration::zero()));
    store.record_heartbeat(&gone).await.unwrap();
    store.record_heartbeat(&fresh).await.unwrap();
    // A command for a channel nobody serves stays unsent (the relay backs off on it).
    write(&db, &[send(Channel::Whatsapp, 0)]).await;

    let retention = crm_hub::Retention {
        sent_commands: Duration::ZERO,
        idempotency_keys: Duration::ZERO,
        silent_connectors: Duration::from_secs(1800),
        every: Duration::from_millis(50),
    };
    let config = HubConfig { retention, command_channels: vec![Channel::Email], ..HubConfig::default() };
    let wakeup = Arc::new(Notify::new());
    let hub = Hub::start(db.store.clone(), bus.bus.clone(), Arc::new(NativeMatcher::new(Region::GR)), config, wakeup.clone())
        .await
        .expect("hub starts");
    let mut email =
        bus.bus.subscribe(Subscription::new(command_group(Channel::Email), Exchange::Commands, &["email.#"])).await.expect("subscribed");
    let customer = customer_with_email(&store, "Ενορία Αγίου Δημητρίου", "dimitrios@example.gr").await;
    let key = crm_store::IdempotencyKey { key: "send-1".into(), request: "digest".into() };
    let entry_id = Uuid::now_v7();
    let entry = queued_outbound(customer.id, CommsType::Email, Some("Προσφορά"), "Σας στέλνουμε την προσφορά.");
    store.create_once_with_commands(&key, entry_id, entry, &[send(Channel::Email, 1)]).await.expect("written");
    wakeup.notify_one();
    let delivery = tokio::time::timeout(WAIT, email.next()).await.expect("the command arrives").expect("bus open");
    delivery.ack().await.unwrap();

    let instances = || async { store.connector_instances().await.unwrap().into_iter().map(|i| i.instance).collect::<Vec<_>>() };
    wait_until("the silent instance forgotten", WAIT, || async { instances().await == [fresh.instance.clone()] }).await;
    wait_until("the key pruned", WAIT, || async { store.created_with_key::<CommsEntry>(&key).await.unwrap().is_none() }).await;
    // Once the email command is marked sent, a whole round of the janitor that started after
    // that has deleted it. Rounds run one after another: the round that prunes a key written
    // after the mark may have pruned the outbox before it, but the round that prunes a key
    // written after the first key was seen pruned started later still.
    wait_until("the email command marked sent", WAIT, || async { store.outbox_backlog().await.unwrap().0 == 1 }).await;
    for name in ["send-2", "send-3"] {
        let later = crm_store::IdempotencyKey { key: name.into(), request: "digest".into() };
        let entry = queued_outbound(customer.id, CommsType::Note, None, "σημείωση");
        store.create_once_with_commands(&later, Uuid::now_v7(), entry, &[]).await.expect("written");
        wait_until("a later key pruned", WAIT, || async { store.created_with_key::<CommsEntry>(&later).await.unwrap().is_none() }).await;
    }
    assert_eq!(store.prune_outbox(chrono::Duration::zero()).await.unwrap(), 0, "the janitor deleted the published command");
    assert_eq!(store.outbox_backlog().await.unwrap().0, 1, "the unsent command stays");
    assert!(store.get::<CommsEntry>(entry_id, false).await.is_ok(), "records stay");
    drop(email);
    hub.shutdown().await;
    bus.cleanup().await;
}

/// Runs each scenario on both transports and both backends: a module per combination, as the
/// hub's `scenarios!` lays them out.
macro_rules! on_every_bus_and_backend {
    ($($scenario:ident),* $(,)?) => {
        on_every_bus_and_backend!(@mod in_process_sqlite, Transport::InProcess, Backend::Sqlite, $($scenario),*);
        on_every_bus_and_backend!(@mod in_process_postgres, Transport::InProcess, Backend::Postgres, $($scenario),*);
        on_every_bus_and_backend!(@mod rabbitmq_sqlite, Transport::RabbitMq, Backend::Sqlite, $($scenario),*);
        on_every_bus_and_backend!(@mod rabbitmq_postgres, Transport::RabbitMq, Backend::Postgres, $($scenario),*);
    };
    (@mod $module:ident, $transport:expr, $backend:expr, $($scenario:ident),*) => {
        mod $module {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario($transport, $backend).await;
                }
            )*
        }
    };
}

on_every_bus_and_backend!(
    a_refused_command_neither_repeats_nor_blocks_the_others,
    a_message_the_bus_can_never_take_is_filed_and_fails_its_entry,
    a_file_too_large_for_the_bus_fails_its_media_and_blocks_nothing,
    the_janitor_clears_what_is_kept_only_for_a_while,
);
