//! Inbound against a real Dovecot, the connector as a task on the in-process bus (as inside
//! `crm serve`): every fixture delivered into the mailbox arrives decoded; IDLE and polling;
//! several folders; stopping and restarting the connector and restarting Dovecot lose and
//! repeat nothing; a UIDVALIDITY change re-publishes the same Message-IDs.

mod common;

use common::peers::Dovecot;
use common::{Event, Running, account, collect, config, drain, fixtures, simple_message, subscribe_events};
use crm_bus::{Bus, BusConfig};
use crm_connector_email::parse::{Inbound, ParseOptions, parse};
use crm_connector_email::state::StateDir;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);
const ALICE: &str = "alice@example.test";

/// What the pure parser makes of a fixture, keyed by the id the event names.
fn expected_events() -> Vec<(String, Event)> {
    fixtures()
        .into_iter()
        .map(|(name, raw)| {
            let event = match parse(&raw, &ParseOptions::default()).unwrap() {
                Inbound::Message(m) => Event::Received(*m),
                Inbound::Reports(mut r) => Event::Status(r.remove(0)),
            };
            (name, event)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_delivered_into_dovecot_arrives_decoded() {
    let dovecot = Dovecot::start();
    let state = tempfile::tempdir().unwrap();
    let bus = Bus::in_process(BusConfig::default());
    let mut events = subscribe_events(&bus, "test.events").await;
    let running = Running::start(&bus, config(state.path(), vec![account(&dovecot, "alice", ALICE, &["INBOX"], true)], None)).await;

    let expected = expected_events();
    for (_, raw) in fixtures() {
        dovecot.save(ALICE, "INBOX", &raw);
    }
    let got = collect(&mut events, WAIT, |seen| seen.len() >= expected.len()).await;
    let by_id: HashMap<String, &Event> = got.iter().map(|e| (e.id(), e)).collect();
    assert_eq!(by_id.len(), expected.len(), "one event per fixture: {:#?}", got.iter().map(Event::id).collect::<Vec<_>>());
    for (name, want) in &expected {
        let Some(event) = by_id.get(&want.id()) else { panic!("{name}: no event for {}", want.id()) };
        match (want, event) {
            (Event::Received(want), Event::Received(got)) => {
                // A message without a Date takes the server's arrival time; everything else is
                // exactly what the parser makes of the file.
                let mut got = got.clone();
                got.occurred_at = want.occurred_at;
                assert_eq!(&got, want, "{name}");
            }
            (Event::Status(want), Event::Status(got)) => assert_eq!(got, want, "{name}"),
            (want, got) => panic!("{name}: expected {want:?}, got {got:?}"),
        }
    }
    // The sample the parser tests check in detail, now through IMAP.
    let cyrillic = got.iter().find_map(|e| match e {
        Event::Received(m) if m.channel_message_id == "<341090.85574.qm@web50704.mail.re2.yahoo.com>" => Some(m),
        _ => None,
    });
    assert_eq!(cyrillic.unwrap().subject.as_deref(), Some("Simple text. How are you? Как ты поживаешь?"));
    let no_date = got.iter().find_map(|e| match e {
        Event::Received(m) if m.subject.as_deref() == Some("1234 / 1234") => Some(m),
        _ => None,
    });
    let age = chrono::Utc::now() - no_date.unwrap().occurred_at;
    assert!(age < chrono::Duration::minutes(5), "INTERNALDATE used for a message without Date: {age}");

    // Nothing more: each message once.
    assert!(drain(&mut events, Duration::from_millis(1500)).await.is_empty());
    // Nothing was marked read by the connector (BODY.PEEK).
    let seen = dovecot.doveadm(&["search", "-u", ALICE, "mailbox", "INBOX", "SEEN"], None);
    assert!(seen.trim().is_empty(), "messages were marked seen: {seen}");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_watches_several_folders_without_idle() {
    let dovecot = Dovecot::start();
    dovecot.doveadm(&["mailbox", "create", "-u", ALICE, "Orders"], None);
    let state = tempfile::tempdir().unwrap();
    let bus = Bus::in_process(BusConfig::default());
    let mut events = subscribe_events(&bus, "test.events").await;
    let running =
        Running::start(&bus, config(state.path(), vec![account(&dovecot, "alice", ALICE, &["INBOX", "Orders"], false)], None)).await;
    dovecot.save(ALICE, "INBOX", &simple_message("<p1@example.gr>", "Νίκος <nikos@example.gr>", ALICE, "Inbox one", ""));
    dovecot.save(
        ALICE,
        "Orders",
        &simple_message("<p2@example.gr>", "nikos@example.gr", ALICE, "Order two", "Auto-Submitted: auto-replied\r\n"),
    );
    let got = collect(&mut events, WAIT, |seen| seen.len() >= 2).await;
    let ids: HashSet<String> = got.iter().map(Event::id).collect();
    assert_eq!(ids, HashSet::from(["<p1@example.gr>".to_owned(), "<p2@example.gr>".to_owned()]));
    for event in &got {
        let Event::Received(m) = event else { panic!() };
        if m.channel_message_id == "<p1@example.gr>" {
            assert_eq!(m.from.name.as_deref(), Some("Νίκος"));
            assert!(!m.auto_reply);
        } else {
            assert!(m.auto_reply);
        }
    }
    let store = StateDir::open(state.path()).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store.folder("alice", "Orders").unwrap().map(|s| s.last_uid) != Some(1) {
        assert!(tokio::time::Instant::now() < deadline, "the Orders position is recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_of_the_connector_and_of_dovecot_lose_and_repeat_nothing() {
    let dovecot = Dovecot::start();
    let state = tempfile::tempdir().unwrap();
    let bus = Bus::in_process(BusConfig::default());
    let mut events = subscribe_events(&bus, "test.events").await;
    let cfg = || config(state.path(), vec![account(&dovecot, "alice", ALICE, &["INBOX"], true)], None);
    let message = |i: usize| simple_message(&format!("<stream-{i}@example.gr>"), "nikos@example.gr", ALICE, &format!("Message {i}"), "");
    let mut delivered = 0usize;
    let mut all: Vec<Event> = Vec::new();

    // 1. Forty messages while the connector runs; stop it (gracefully) after some arrived.
    let running = Running::start(&bus, cfg()).await;
    for i in 0..40 {
        dovecot.save(ALICE, "INBOX", &message(i));
        delivered += 1;
    }
    all.extend(collect(&mut events, WAIT, |seen| seen.len() >= 10).await);
    running.stop().await;
    all.extend(drain(&mut events, Duration::from_millis(300)).await);

    // 2. Twenty more while it is stopped, then Dovecot restarts, then the connector.
    for i in 40..60 {
        dovecot.save(ALICE, "INBOX", &message(i));
        delivered += 1;
    }
    dovecot.restart();
    let running = Running::start(&bus, cfg()).await;
    let distinct = |all: &[Event]| all.iter().map(Event::id).collect::<HashSet<_>>().len();
    let before = all.clone();
    all.extend(collect(&mut events, WAIT, |seen| distinct(&[before.as_slice(), seen].concat()) >= delivered).await);

    // 3. Dovecot restarts under the running connector (IDLE connection lost): it reconnects.
    dovecot.restart();
    for i in 60..70 {
        dovecot.save(ALICE, "INBOX", &message(i));
        delivered += 1;
    }
    let before = all.clone();
    all.extend(collect(&mut events, WAIT, |seen| distinct(&[before.as_slice(), seen].concat()) >= delivered).await);
    all.extend(drain(&mut events, Duration::from_millis(1500)).await);
    running.stop().await;

    assert_eq!(distinct(&all), delivered, "every message published");
    assert_eq!(all.len(), delivered, "none published twice (graceful stops keep their place exactly)");
    let uid_validity = dovecot.uid_validity(ALICE, "INBOX");
    let store = StateDir::open(state.path()).unwrap();
    assert_eq!(store.folder("alice", "INBOX").unwrap().unwrap(), crm_connector_email::state::FolderState { uid_validity, last_uid: 70 });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uidvalidity_change_republishes_the_same_message_ids_and_the_log_has_no_duplicates() {
    let dovecot = Dovecot::start();
    let state = tempfile::tempdir().unwrap();
    let bus = Bus::in_process(BusConfig::default());
    let mut events = subscribe_events(&bus, "test.events").await;
    // The core beside it: its log must hold each message once.
    let store = crm_store::Store::connect(&crm_store::StoreConfig::sqlite_file(state.path().join("crm.db"))).await.unwrap();
    store.migrate().await.unwrap();
    let hub = crm_hub::Hub::start(
        store.clone(),
        bus.clone(),
        std::sync::Arc::new(crm_hub::NativeMatcher::new(crm_domain::contact::Region::GR)),
        crm_hub::HubConfig::default(),
        std::sync::Arc::new(tokio::sync::Notify::new()),
    )
    .await
    .unwrap();
    let logged = || async { store.count::<crm_domain::comms::CommsEntry>(&crm_store::CommsFilter::default()).await.unwrap() };
    let cfg = || config(state.path(), vec![account(&dovecot, "alice", ALICE, &["INBOX"], true)], None);
    let running = Running::start(&bus, cfg()).await;
    for i in 0..5 {
        dovecot.save(ALICE, "INBOX", &simple_message(&format!("<uv-{i}@example.gr>"), "a@example.gr", ALICE, "x", ""));
    }
    // One without a Message-ID: its synthetic id must be the same after the re-scan.
    dovecot.save(ALICE, "INBOX", b"From: b@example.gr\r\nSubject: no id\r\n\r\nhello\r\n");
    let first = collect(&mut events, WAIT, |seen| seen.len() >= 6).await;
    running.stop().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while logged().await < 6 {
        assert!(tokio::time::Instant::now() < deadline, "the core logged the messages");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let old = dovecot.uid_validity(ALICE, "INBOX");
    dovecot.doveadm(&["mailbox", "update", "-u", ALICE, "--uid-validity", &(old + 1000).to_string(), "INBOX"], None);
    assert_eq!(dovecot.uid_validity(ALICE, "INBOX"), old + 1000);

    let running = Running::start(&bus, cfg()).await;
    let again = collect(&mut events, WAIT, |seen| seen.len() >= 6).await;
    assert!(drain(&mut events, Duration::from_millis(1500)).await.is_empty());
    running.stop().await;
    let ids = |events: &[Event]| events.iter().map(Event::id).collect::<HashSet<_>>();
    assert_eq!(ids(&first), ids(&again), "the re-scan publishes the same channel ids (the core deduplicates)");
    assert_eq!(ids(&first).len(), 6);
    let positions = StateDir::open(state.path()).unwrap();
    assert_eq!(positions.folder("alice", "INBOX").unwrap().unwrap().uid_validity, old + 1000);
    // The core took the re-published events (its queue is empty), logged none twice and
    // dead-lettered none.
    let deadline = tokio::time::Instant::now() + WAIT;
    while bus.queue_stats().await.unwrap().iter().any(|q| q.group == crm_bus::message::CORE_EVENTS_GROUP && q.messages > 0) {
        assert!(tokio::time::Instant::now() < deadline, "the core drained its queue");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(logged().await, 6, "no duplicate log entries");
    let dead = bus.queue_stats().await.unwrap().iter().filter(|q| q.group == "dead-letters").map(|q| q.messages).sum::<u64>();
    assert_eq!(dead, 0, "nothing dead-lettered");
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attachments_over_the_cap_are_refused_and_huge_messages_are_read_by_their_headers() {
    let dovecot = Dovecot::start();
    let state = tempfile::tempdir().unwrap();
    let bus = Bus::in_process(BusConfig::default());
    let mut events = subscribe_events(&bus, "test.events").await;
    let mut cfg = config(state.path(), vec![account(&dovecot, "alice", ALICE, &["INBOX"], true)], None);
    cfg.attachment_cap_bytes = 1_000;
    cfg.max_message_bytes = 30_000;
    let running = Running::start(&bus, cfg).await;
    let fixture = |name: &str| fixtures().into_iter().find(|(n, _)| n == name).unwrap().1;
    dovecot.save(ALICE, "INBOX", &fixture("flanker/attached-pdf.eml")); // 10 KB, a 6,940-byte PDF
    dovecot.save(ALICE, "INBOX", &fixture("nodemailer-mailparser/nodemailer.eml")); // 45 KB
    let got = collect(&mut events, WAIT, |seen| seen.len() >= 2).await;
    let message = |subject: &str| {
        got.iter()
            .find_map(|e| match e {
                Event::Received(m) if m.subject.as_deref().is_some_and(|s| s.starts_with(subject)) => Some(m.clone()),
                _ => None,
            })
            .unwrap()
    };
    let pdf = message("test message via curl");
    assert_eq!(pdf.body, "Test - body content");
    assert_eq!(pdf.attachments.len(), 1);
    assert_eq!((pdf.attachments[0].filename.as_str(), pdf.attachments[0].size), ("test.pdf", 6940));
    assert!(pdf.attachments[0].content.is_none());
    assert_eq!(pdf.attachments[0].refused.as_deref(), Some("6940 bytes is over the email connector's cap of 1000 bytes"));
    let big = message("Nodemailer is unicode friendly");
    assert_eq!(big.channel_message_id, "<012d606e-3550-2d94-b566-6cd996de88e3@kreata.ee>");
    assert_eq!(big.from, crm_bus::message::Address::email("andris@kreata.ee", Some("Andris Kreata".into())));
    assert!(big.body.contains("over the connector's cap of 30000 bytes: only its headers were read"), "{}", big.body);
    assert!(big.attachments.is_empty());
    running.stop().await;
}

/// End to end with the core: every fixture delivered into Dovecot lands in the core's log,
/// decoded as the parser reads it and matched to the customer whose contact the sender is; every
/// bounce or receipt updates the outbound entry it names instead of starting a conversation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_reaches_the_log_matched_to_its_customer() {
    use crm_domain::comms::{CommsEntry, CommsType, DeliveryStatus as EntryStatus, Direction};
    use crm_domain::contact::{ContactInput, ContactType, Region};
    use crm_domain::customer::{Customer, CustomerInput};
    use crm_store::{CommsFilter, ListQuery};

    let dovecot = Dovecot::start();
    let state = tempfile::tempdir().unwrap();
    let bus = Bus::in_process(BusConfig::default());
    let store = crm_store::Store::connect(&crm_store::StoreConfig::sqlite_file(state.path().join("crm.db"))).await.unwrap();
    store.migrate().await.unwrap();
    let hub = crm_hub::Hub::start(
        store.clone(),
        bus.clone(),
        std::sync::Arc::new(crm_hub::NativeMatcher::new(Region::GR)),
        crm_hub::HubConfig::default(),
        std::sync::Arc::new(tokio::sync::Notify::new()),
    )
    .await
    .unwrap();

    // A customer for every sender with a usable address, and an outbound entry for every message
    // a bounce or receipt names.
    let expected = expected_events();
    let mut customers: HashMap<String, uuid::Uuid> = HashMap::new();
    let mut outbound: HashMap<String, (uuid::Uuid, EntryStatus)> = HashMap::new();
    for (_, event) in &expected {
        match event {
            Event::Received(m) => {
                let address = m.from.value.trim().to_lowercase();
                if customers.contains_key(&address) {
                    continue;
                }
                let input = CustomerInput {
                    name: Some(m.from.name.clone().filter(|n| !n.trim().is_empty()).unwrap_or_else(|| address.clone())),
                    contacts: vec![ContactInput { kind: ContactType::Email, label: None, value: address.clone(), primary: true }],
                    ..Default::default()
                };
                if let Ok(customer) = input.parse(Region::GR, chrono::Utc::now()) {
                    customers.insert(address, store.create(customer).await.unwrap().id);
                }
            }
            Event::Status(s) => {
                let message_id = s.channel_message_id.clone().expect("a report names its message");
                let id = uuid::Uuid::now_v7();
                let entry = CommsEntry {
                    customer_id: None,
                    kind: CommsType::Email,
                    direction: Direction::Outbound,
                    subject: Some("ours".into()),
                    body: "ours".into(),
                    attachments: Vec::new(),
                    ext_message_id: Some(message_id.clone()),
                    channel_address: None,
                    recipients: Vec::new(),
                    logged_by: "user:test".into(),
                    occurred_at: chrono::Utc::now(),
                    thread_id: Some(id),
                    in_reply_to: None,
                    references: Vec::new(),
                    delivery_status: Some(EntryStatus::Sent),
                    status_reason: None,
                    raw_event_id: None,
                    matched: None,
                    triage: None,
                    auto_reply: false,
                };
                store.create_with_commands(id, entry, &[]).await.unwrap();
                let want = match s.status {
                    crm_bus::message::DeliveryState::Failed => EntryStatus::Failed,
                    crm_bus::message::DeliveryState::Read => EntryStatus::Read,
                    crm_bus::message::DeliveryState::Delivered => EntryStatus::Delivered,
                    crm_bus::message::DeliveryState::Sent => EntryStatus::Sent,
                };
                outbound.insert(message_id, (id, want));
            }
        }
    }
    assert!(!outbound.is_empty() && !customers.is_empty(), "the fixtures hold both kinds");

    let running = Running::start(&bus, config(state.path(), vec![account(&dovecot, "alice", ALICE, &["INBOX"], true)], None)).await;
    for (_, raw) in fixtures() {
        dovecot.save(ALICE, "INBOX", &raw);
    }
    let received = expected.iter().filter(|(_, e)| matches!(e, Event::Received(_))).count() as i64;
    let inbound = CommsFilter { direction: Some(Direction::Inbound), ..Default::default() };
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let logged = store.count::<CommsEntry>(&inbound).await.unwrap();
        let reported = {
            let mut all = true;
            for (id, want) in outbound.values() {
                all &= store.get::<CommsEntry>(*id, false).await.unwrap().data.delivery_status == Some(*want);
            }
            all
        };
        if logged >= received && reported {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{logged} of {received} messages logged; reports applied: {reported}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.stop().await;

    let query = ListQuery { filter: inbound.clone(), limit: Some(200), ..Default::default() };
    let entries = store.list::<CommsEntry>(&query).await.unwrap().items;
    assert_eq!(entries.len() as i64, received, "one entry per message, none for the reports");
    for (name, event) in &expected {
        let Event::Received(want) = event else { continue };
        let entry = entries
            .iter()
            .find(|e| e.data.ext_message_id.as_deref() == Some(want.channel_message_id.as_str()))
            .unwrap_or_else(|| panic!("{name}: not in the log"));
        assert_eq!(entry.data.subject, want.subject.as_ref().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()), "{name}");
        assert_eq!(entry.data.body, want.body, "{name}");
        let names: Vec<&str> = entry.data.attachments.iter().map(|a| a.mime_type.as_str()).collect();
        let want_names: Vec<&str> = want.attachments.iter().map(|a| a.mime_type.as_str()).collect();
        assert_eq!(names, want_names, "{name}: attachments");
        let sender = want.from.value.trim().to_lowercase();
        match customers.get(&sender) {
            Some(customer) => {
                assert_eq!(entry.data.customer_id, Some(*customer), "{name}: matched to the customer whose contact {sender} is");
                let customer = store.get::<Customer>(*customer, false).await.unwrap();
                assert!(customer.data.contacts.iter().any(|c| c.normalized == sender));
            }
            None => assert_eq!(entry.data.customer_id, None, "{name}: {sender} is nobody's contact"),
        }
    }
    hub.shutdown().await;
}
