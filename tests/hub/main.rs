//! The core's bus side end to end: events published as a connector would publish them, consumed
//! by the hub into the store, on both transports (in-process and the real RabbitMQ) and both
//! backends. Every scenario runs four times. A spy subscribed to both exchanges checks every
//! message a scenario caused against `docs/asyncapi.json` when the harness stops.

mod asyncapi;
mod relay;

use chrono::Utc;
use crm_bus::message::{Address, Channel, DeliveryState, DeliveryStatus, InboundAttachment, MessageReceived, SendMessage};
use crm_bus::{Bus, Envelope, Exchange, Subscription, Trace};
use crm_domain::Record;
use crm_domain::comms::{CommsEntry, Triage};
use crm_domain::contact::{ContactInput, ContactType, Region};
use crm_domain::customer::{Customer, CustomerInput};
use crm_hub::{Hub, HubConfig, NativeMatcher};
use crm_store::{CommsFilter, ListQuery, Store};
use crm_tests::bus::{TestBus, Transport, wait_until};
use crm_tests::fixtures::{customer_with_email, queued_outbound};
use crm_tests::{Backend, TestDb};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

/// A hub over a fresh store and bus.
struct Harness {
    db: TestDb,
    bus: TestBus,
    hub: Hub,
    spy: Spy,
}

/// Routing key of the marker messages that tell the spy it has seen everything before them.
const SPY_SENTINEL: &str = "test.spy.sentinel";

/// Every message published on either exchange while a scenario runs, taken by groups of its own
/// (`test.spy.events`, `test.spy.commands`, bound `#`), to be validated against the AsyncAPI
/// document at the end. (With the spy bound, a command no connector binds is no longer refused.)
struct Spy {
    captured: Arc<std::sync::Mutex<Vec<Envelope>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Ids of envelopes a scenario publishes malformed on purpose: they must fail validation.
    malformed: std::sync::Mutex<Vec<String>>,
}

impl Spy {
    async fn start(bus: &Bus) -> Spy {
        let captured = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (group, exchange) in [("test.spy.events", Exchange::Events), ("test.spy.commands", Exchange::Commands)] {
            let mut subscriber = bus.subscribe(Subscription::new(group, exchange, &["#"])).await.expect("spy subscribed");
            let captured = captured.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(delivery) = subscriber.next().await {
                    captured.lock().unwrap().push(delivery.envelope.clone());
                    let _ = delivery.ack().await;
                }
            }));
        }
        Spy { captured, tasks, malformed: std::sync::Mutex::new(Vec::new()) }
    }

    /// Waits for what is still on its way (a marker on each exchange), stops, and checks every
    /// captured envelope against `docs/asyncapi.json`.
    async fn check(self, bus: &Bus) {
        let markers: Vec<Envelope> = [Exchange::Events, Exchange::Commands]
            .into_iter()
            .map(|exchange| Envelope {
                id: Uuid::now_v7().to_string(),
                source: "/test/spy".into(),
                kind: SPY_SENTINEL.into(),
                time: Utc::now(),
                subject: None,
                exchange,
                routing_key: SPY_SENTINEL.into(),
                trace: Trace::default(),
                data: b"{}".to_vec(),
            })
            .collect();
        bus.publish_all(&markers).await.expect("spy markers published");
        let seen = |id: &str| self.captured.lock().unwrap().iter().any(|e| e.id == id);
        wait_until("the spy to see everything", WAIT, || async { markers.iter().all(|m| seen(&m.id)) }).await;
        for task in &self.tasks {
            task.abort();
        }
        let captured: Vec<Envelope> = std::mem::take(&mut *self.captured.lock().unwrap());
        let malformed = self.malformed.lock().unwrap().clone();
        let mut problems = Vec::new();
        let mut checked = 0;
        for envelope in captured.iter().filter(|e| e.routing_key != SPY_SENTINEL) {
            checked += 1;
            match (crm_tests::asyncapi::validate(envelope), malformed.contains(&envelope.id)) {
                (Ok(()), false) | (Err(_), true) => {}
                (Err(problem), false) => problems.push(problem),
                (Ok(()), true) => problems.push(format!("{} was published malformed on purpose but validates", envelope.id)),
            }
        }
        for id in &malformed {
            assert!(captured.iter().any(|e| &e.id == id), "the spy never saw the malformed envelope {id}");
        }
        assert!(checked > 0, "the spy captured no message");
        assert!(problems.is_empty(), "published messages that docs/asyncapi.json refuses:\n{}", problems.join("\n"));
    }
}

/// A hub with the built-in matcher, the default configuration and a relay nobody wakes.
async fn start_hub(db: &TestDb, bus: &TestBus) -> Hub {
    Hub::start(db.store.clone(), bus.bus.clone(), Arc::new(NativeMatcher::new(Region::GR)), HubConfig::default(), Arc::new(Notify::new()))
        .await
        .expect("hub starts")
}

impl Harness {
    async fn start(transport: Transport, backend: Backend) -> Option<Harness> {
        let db = TestDb::new(backend).await?;
        let bus = TestBus::new(transport).await?;
        let spy = Spy::start(&bus.bus).await;
        let hub = start_hub(&db, &bus).await;
        Some(Harness { db, bus, hub, spy })
    }

    fn store(&self) -> &Store {
        &self.db.store
    }

    fn bus(&self) -> &Bus {
        &self.bus.bus
    }

    async fn stop(self) {
        self.hub.shutdown().await;
        self.spy.check(&self.bus.bus).await;
        self.bus.cleanup().await;
    }

    /// Registers an envelope the scenario publishes malformed on purpose: the spy expects it to
    /// fail validation instead of passing.
    fn expect_malformed(&self, envelope: &Envelope) {
        self.spy.malformed.lock().unwrap().push(envelope.id.clone());
    }

    async fn customer(&self, name: &str, email: &str) -> Record<Customer> {
        customer_with_email(self.store(), name, email).await
    }

    async fn entries(&self, filter: CommsFilter) -> Vec<Record<CommsEntry>> {
        let query = ListQuery { filter, limit: Some(200), ..Default::default() };
        self.store().list::<CommsEntry>(&query).await.expect("list").items
    }

    /// Entries whose channel message id is `id`.
    async fn entries_for(&self, id: &str) -> Vec<Record<CommsEntry>> {
        self.entries(CommsFilter::default()).await.into_iter().filter(|e| e.data.ext_message_id.as_deref() == Some(id)).collect()
    }

    async fn wait_for_entry(&self, id: &str) -> Record<CommsEntry> {
        wait_until(&format!("entry {id}"), WAIT, || async { !self.entries_for(id).await.is_empty() }).await;
        self.entries_for(id).await.remove(0)
    }
}

fn email(from: &str, name: Option<&str>, id: &str) -> MessageReceived {
    MessageReceived {
        channel: Channel::Email,
        channel_message_id: id.into(),
        from: Address::email(from, name.map(Into::into)),
        to: vec![Address::email("office@bells.example", None)],
        cc: Vec::new(),
        subject: Some("Καμπάνα του Αγίου Νικολάου".into()),
        body: "Η καμπάνα χτυπά λάθος ώρα.".into(),
        occurred_at: Utc::now(),
        in_reply_to: None,
        references: Vec::new(),
        auto_reply: false,
        attachments: Vec::new(),
    }
}

fn connector_envelope<M: crm_bus::Message>(message: &M) -> Envelope {
    Envelope::new("/connectors/test/1", message, Trace::new("req-test"))
}

async fn inbound_message_is_logged_for_its_customer(h: &Harness) {
    let customer = h.customer("Ιερός Ναός Αγίου Νικολάου", "Papas@Example.GR").await;
    let event = connector_envelope(&email("papas@example.gr", Some("π. Γεώργιος"), "<m1@example.gr>"));
    h.bus().publish(&event).await.expect("published");
    let entry = h.wait_for_entry("<m1@example.gr>").await;
    assert_eq!(entry.data.customer_id, Some(customer.id));
    assert_eq!(entry.data.subject.as_deref(), Some("Καμπάνα του Αγίου Νικολάου"));
    assert_eq!(entry.data.direction, crm_domain::comms::Direction::Inbound);
    assert_eq!(entry.data.raw_event_id.as_deref(), Some(event.id.as_str()));
    assert_eq!(entry.data.thread_id, Some(entry.id), "a new conversation is its own thread");
    assert_eq!(entry.data.logged_by, "connector:test");
    let matched = entry.data.matched.expect("match recorded");
    assert_eq!((matched.confidence, matched.matcher.as_str()), (100, "built-in"));
    assert_eq!(entry.data.channel_address.and_then(|a| a.normalized).as_deref(), Some("papas@example.gr"));
}

async fn redelivered_event_gives_one_entry(h: &Harness) {
    h.customer("Μονή Οσίου Λουκά", "monh@example.gr").await;
    let message = email("monh@example.gr", None, "<dup@example.gr>");
    let event = connector_envelope(&message);
    // The same envelope twice (a redelivery), and the same message in a new envelope (a
    // connector that published again after a crash).
    h.bus().publish_all(&[event.clone(), event.clone(), connector_envelope(&message)]).await.expect("published");
    let marker = connector_envelope(&email("monh@example.gr", None, "<marker@example.gr>"));
    h.bus().publish(&marker).await.expect("published");
    h.wait_for_entry("<marker@example.gr>").await;
    assert_eq!(h.entries_for("<dup@example.gr>").await.len(), 1);
}

async fn unmatched_sender_lands_in_the_inbox_and_can_be_assigned(h: &Harness) {
    let customer = h.customer("Ενορία Αγίας Τριάδας", "trias@example.gr").await;
    h.bus().publish(&connector_envelope(&email("stranger@example.org", Some("Νίκος"), "<u1@example.org>"))).await.unwrap();
    h.bus().publish(&connector_envelope(&email("Stranger@Example.org", None, "<u2@example.org>"))).await.unwrap();
    let first = h.wait_for_entry("<u1@example.org>").await;
    h.wait_for_entry("<u2@example.org>").await;
    assert_eq!(first.data.customer_id, None);
    assert_eq!(first.data.triage, Some(Triage::Unmatched));
    let inbox = h.entries(CommsFilter { triage: Some(Triage::Unmatched), ..Default::default() }).await;
    assert_eq!(inbox.len(), 2);

    let assigned = h.store().assign_unmatched(first.id, customer.id, None).await.expect("assigned");
    assert!(assigned.contact_added);
    assert_eq!(assigned.also_assigned, 1, "the other message from the same address goes with it");
    let customer = h.store().get::<Customer>(customer.id, false).await.unwrap();
    assert!(customer.data.contacts.iter().any(|c| c.normalized == "stranger@example.org"));
    assert!(h.entries(CommsFilter { triage: Some(Triage::Unmatched), ..Default::default() }).await.is_empty());

    // The next message from that address finds the customer by itself.
    h.bus().publish(&connector_envelope(&email("stranger@example.org", None, "<u3@example.org>"))).await.unwrap();
    assert_eq!(h.wait_for_entry("<u3@example.org>").await.data.customer_id, Some(customer.id));
}

async fn malformed_event_is_dead_lettered_with_its_reason_and_replayed_after_a_fix(h: &Harness) {
    let customer = h.customer("Ναός Αγίου Δημητρίου", "dimitrios@example.gr").await;
    let mut bad = connector_envelope(&email("dimitrios@example.gr", None, "<bad@example.gr>"));
    let mut data = bad.data_json();
    data.as_object_mut().unwrap().remove("from");
    bad.data = serde_json::to_vec(&data).unwrap();
    h.expect_malformed(&bad);
    h.bus().publish(&bad).await.unwrap();
    wait_until("the dead letter to be filed", WAIT, || async {
        !h.store().dead_letters(Some("dead"), None, None, None).await.unwrap().items.is_empty()
    })
    .await;
    let letters = h.store().dead_letters(Some("dead"), None, None, None).await.unwrap().items;
    let letter = &letters[0];
    assert_eq!(letter.consumer, crm_bus::message::CORE_EVENTS_GROUP);
    assert_eq!(letter.envelope_id, bad.id);
    assert!(letter.reason.contains("from"), "the reason names the field: {}", letter.reason);

    // The consumer goes on.
    h.bus().publish(&connector_envelope(&email("dimitrios@example.gr", None, "<good@example.gr>"))).await.unwrap();
    h.wait_for_entry("<good@example.gr>").await;
    assert!(h.entries_for("<bad@example.gr>").await.is_empty());

    // Fixed and replayed, it is logged once.
    let mut fixed = Envelope::from_structured(&letter.envelope).expect("stored envelope reads back");
    let mut data = fixed.data_json();
    data["from"] = serde_json::json!({"kind": "email", "value": "dimitrios@example.gr"});
    fixed.data = serde_json::to_vec(&data).unwrap();
    h.bus().replay(&letter.consumer, &fixed).await.expect("replayed");
    h.store().resolve_dead_letter(letter.id, "replayed", "test").await.unwrap();
    assert_eq!(h.wait_for_entry("<bad@example.gr>").await.data.customer_id, Some(customer.id));
}

/// An outbound message goes out through the outbox to the channel's connector (here a stand-in
/// email connector consuming its command queue), its reports update the entry, and the
/// customer's reply joins the thread.
async fn outbound_command_reaches_the_connector_and_reports_come_back(h: &Harness) {
    let customer = h.customer("Ναός Αγίας Ειρήνης", "eirini@example.gr").await;
    let mut commands = h
        .bus()
        .subscribe(Subscription::new(crm_bus::message::command_group(Channel::Email), Exchange::Commands, &["email.#"]))
        .await
        .expect("subscribed");
    let entry_id = Uuid::now_v7();
    let send = SendMessage {
        entry_id,
        channel: Channel::Email,
        to: vec![Address::email("eirini@example.gr", None)],
        cc: Vec::new(),
        subject: Some("Προσφορά".into()),
        body: "Σας στέλνουμε την προσφορά.".into(),
        body_html: None,
        in_reply_to: None,
        references: Vec::new(),
        attachments: Vec::new(),
    };
    let command = Envelope::new("/crm/core", &send, Trace::new("req-send"));
    let mut entry = queued_outbound(customer.id, crm_domain::comms::CommsType::Email, send.subject.as_deref(), &send.body);
    entry.thread_id = Some(entry_id);
    h.store().create_with_commands(entry_id, entry, &[command.to_structured()]).await.expect("stored with its command");

    let delivery = tokio::time::timeout(WAIT, commands.next()).await.expect("the command arrives").expect("bus open");
    assert_eq!(delivery.envelope.id, command.id);
    assert_eq!(delivery.envelope.trace.request_id.as_deref(), Some("req-send"), "the request id travels with the command");
    let received: SendMessage = delivery.envelope.decode().expect("a send command");
    assert_eq!(received, send);
    delivery.ack().await.unwrap();

    let message_id = crm_bus::message::entry_message_id(entry_id, "bells.example");
    let report = |status, reason: Option<&str>| DeliveryStatus {
        channel: Channel::Email,
        entry_id: Some(entry_id),
        channel_message_id: Some(message_id.clone()),
        status,
        reason: reason.map(Into::into),
        occurred_at: Utc::now(),
    };
    h.bus().publish(&connector_envelope(&report(DeliveryState::Delivered, None))).await.unwrap();
    // A late "sent" report must not move the status back.
    h.bus().publish(&connector_envelope(&report(DeliveryState::Sent, None))).await.unwrap();
    wait_until("the delivered report", WAIT, || async {
        h.store().get::<CommsEntry>(entry_id, false).await.unwrap().data.delivery_status
            == Some(crm_domain::comms::DeliveryStatus::Delivered)
    })
    .await;

    // The customer answers; the reply names our Message-ID and joins the thread.
    let mut reply = email("eirini@example.gr", None, "<reply@example.gr>");
    reply.subject = Some("Re: something else entirely".into());
    reply.references = vec![message_id.clone()];
    h.bus().publish(&connector_envelope(&reply)).await.unwrap();
    let logged = h.wait_for_entry("<reply@example.gr>").await;
    assert_eq!(logged.data.thread_id, Some(entry_id));
    let sent = h.store().get::<CommsEntry>(entry_id, false).await.unwrap();
    assert_eq!(sent.data.ext_message_id.as_deref(), Some(message_id.as_str()));
    assert_eq!(sent.data.delivery_status, Some(crm_domain::comms::DeliveryStatus::Delivered));
}

/// A report naming only the channel's message id can overtake the connector's "sent" report
/// that gives the entry that id (WhatsApp's webhook is faster than the connector's own publish):
/// it is held, and applied when "sent" arrives.
async fn a_delivery_report_before_sent_is_applied_when_sent_arrives(h: &Harness) {
    use crm_domain::comms::DeliveryStatus::{Read, Sent};
    let customer = h.customer("Ναός Αγίου Δημητρίου", "dimitrios@example.gr").await;
    let entry = queued_outbound(customer.id, crm_domain::comms::CommsType::Whatsapp, None, "Η καμπάνα είναι έτοιμη.");
    let entry = h.store().create(entry).await.expect("logged");
    let report = |status, entry_id| DeliveryStatus {
        channel: Channel::Whatsapp,
        entry_id,
        channel_message_id: Some("wamid.HBgLMzA2OTQxMjM0NTY3FQIAERgSQzE2".into()),
        status,
        reason: None,
        occurred_at: Utc::now(),
    };
    h.bus().publish(&connector_envelope(&report(DeliveryState::Read, None))).await.unwrap();
    wait_until("the read report to be held", WAIT, || async { h.store().held_delivery_reports().await.unwrap() == 1 }).await;
    assert_eq!(
        h.store().get::<CommsEntry>(entry.id, false).await.unwrap().data.delivery_status,
        Some(crm_domain::comms::DeliveryStatus::Queued)
    );

    h.bus().publish(&connector_envelope(&report(DeliveryState::Sent, Some(entry.id)))).await.unwrap();
    wait_until("the held report applied", WAIT, || async {
        h.store().get::<CommsEntry>(entry.id, false).await.unwrap().data.delivery_status == Some(Read)
    })
    .await;
    assert_eq!(h.store().held_delivery_reports().await.unwrap(), 0);
    let after = h.store().get::<CommsEntry>(entry.id, false).await.unwrap();
    assert_eq!(after.data.ext_message_id.as_deref(), Some("wamid.HBgLMzA2OTQxMjM0NTY3FQIAERgSQzE2"));
    assert_ne!(after.data.delivery_status, Some(Sent));
}

async fn file_results_update_the_media_record(h: &Harness) {
    let customer = h.customer("Ναός Αγίου Ανδρέα", "andreas@example.gr").await;
    let media_id = Uuid::now_v7();
    let path = format!("customers/{}/media/{media_id}-σχέδιο.pdf", customer.id);
    let content = b"%PDF-1.7 ...".as_slice();
    let media = crm_tests::pending_media(Some(customer.id), "σχέδιο.pdf", "application/pdf").awaiting(&path, content);
    h.store().create_with_commands(media_id, media, &[]).await.unwrap();
    let media_of = || async { h.store().get::<crm_domain::comms::Media>(media_id, false).await.unwrap() };
    let result = |path: &str, content: &[u8]| crm_bus::message::FileResult {
        media_id: Some(media_id),
        path: path.into(),
        outcome: crm_bus::message::FileOutcome::Stored { size: content.len() as u64, sha256: crm_domain::sha256_hex(content) },
    };

    // A report of another file (forged, or a dead letter replayed with changed data) is
    // refused: dead-lettered with the reason, and the record still waits for its own file.
    let customers_file = format!("customers/{}/media/0-contract.pdf", Uuid::now_v7());
    let forged = [connector_envelope(&result(&customers_file, content)), connector_envelope(&result(&path, b"other bytes"))];
    h.bus().publish_all(&forged).await.unwrap();
    wait_until("both reports dead-lettered", WAIT, || async {
        let letters = h.store().dead_letters(None, None, None, None).await.unwrap().items;
        forged.iter().all(|f| letters.iter().any(|l| l.envelope_id == f.id))
    })
    .await;
    for letter in h.store().dead_letters(None, None, None, None).await.unwrap().items {
        assert!(letter.reason.contains("the media record"), "{}", letter.reason);
    }
    let waiting = media_of().await;
    assert_eq!((waiting.version, waiting.data.status), (1, crm_domain::comms::MediaStatus::Pending));

    // The report of its own file is taken.
    h.bus().publish(&connector_envelope(&result(&path, content))).await.unwrap();
    wait_until("the media record to be stored", WAIT, || async { media_of().await.data.status == crm_domain::comms::MediaStatus::Stored })
        .await;
    let stored = media_of().await;
    assert_eq!(stored.data.nextcloud_path.as_deref(), Some(path.as_str()));
    assert_eq!(stored.data.size, Some(content.len() as u64));
}

/// A message with U+0000 in its texts (PostgreSQL refuses it in text and jsonb, SQLite keeps it)
/// is logged with U+FFFD instead, the same on both backends, and the messages of its batch are
/// logged with it: nothing is retried or dead-lettered.
async fn a_nul_character_is_replaced_and_spoils_no_batch(h: &Harness) {
    let customer = h.customer("Ναός Αγίου Σπυρίδωνα", "spyridon@example.gr").await;
    let mut nul = email("spyridon@example.gr", Some("π.\u{0}Σπύρος"), "<nul\u{0}@example.gr>");
    nul.subject = Some("a\u{0}b".into());
    nul.body = "a\u{0}b".into();
    nul.to = vec![Address::email("office\u{0}@bells.example", Some("Γρα\u{0}φείο".into()))];
    nul.attachments = vec![InboundAttachment {
        filename: "σχέδιο\u{0}.pdf".into(),
        mime_type: "application/pdf\u{0}".into(),
        size: 10,
        content: None,
        refused: Some("too\u{0}big".into()),
    }];
    let normal = |i: usize| connector_envelope(&email("spyridon@example.gr", None, &format!("<normal-{i}@example.gr>")));
    let mut events: Vec<Envelope> = (0..4).map(normal).collect();
    events.push(connector_envelope(&nul));
    events.extend((4..8).map(normal));
    h.bus().publish_all(&events).await.expect("published");

    for i in 0..8 {
        assert_eq!(h.wait_for_entry(&format!("<normal-{i}@example.gr>")).await.data.customer_id, Some(customer.id));
    }
    let entry = h.wait_for_entry("<nul\u{fffd}@example.gr>").await;
    assert_eq!(entry.data.customer_id, Some(customer.id));
    assert_eq!(entry.data.subject.as_deref(), Some("a\u{fffd}b"));
    assert_eq!(entry.data.body, "a\u{fffd}b");
    assert_eq!(entry.data.channel_address.as_ref().and_then(|a| a.name.as_deref()), Some("π.\u{fffd}Σπύρος"));
    assert_eq!(entry.data.recipients[0].value, "office\u{fffd}@bells.example");
    assert_eq!(entry.data.recipients[0].name.as_deref(), Some("Γρα\u{fffd}φείο"));
    let attachment = &entry.data.attachments[0];
    assert_eq!((attachment.mime_type.as_str(), attachment.refused.as_deref()), ("application/pdf\u{fffd}", Some("too\u{fffd}big")));
    let stored = serde_json::to_string(&entry.data).unwrap();
    assert!(!stored.contains('\u{0}') && !stored.contains("\\u0000"), "no U+0000 is stored: {stored}");
    let letters = h.store().dead_letters(None, None, None, None).await.unwrap().items;
    assert!(letters.is_empty(), "nothing is dead-lettered: {letters:?}");
}

/// A reply naming 70,000 earlier messages (more parameters than one PostgreSQL statement can
/// bind) is logged promptly, with its last references only, and so is the message beside it.
async fn a_message_with_70000_references_is_logged(h: &Harness) {
    h.bus().publish(&connector_envelope(&email("stranger@example.org", None, "<root@example.org>"))).await.unwrap();
    let root = h.wait_for_entry("<root@example.org>").await;
    let mut many = email("stranger@example.org", None, "<many@example.org>");
    many.references = (0..70_000).map(|i| format!("<earlier-{i}@example.org>")).collect();
    many.references.push("<root@example.org>".into());
    let normal = email("stranger@example.org", None, "<normal@example.org>");
    h.bus().publish_all(&[connector_envelope(&many), connector_envelope(&normal)]).await.expect("published");

    let logged = h.wait_for_entry("<many@example.org>").await;
    h.wait_for_entry("<normal@example.org>").await;
    assert_eq!(logged.data.thread_id, Some(root.id), "the last reference threads it");
    assert_eq!(logged.data.references.len(), crm_hub::INGEST_MAX_REFERENCES);
    assert_eq!(logged.data.references[..], many.references[many.references.len() - crm_hub::INGEST_MAX_REFERENCES..]);
    let letters = h.store().dead_letters(None, None, None, None).await.unwrap().items;
    assert!(letters.is_empty(), "nothing is dead-lettered: {letters:?}");
}

/// A `files.file.store` command the files connector gave up on (dead-lettered) marks its media
/// record failed with the reason, instead of leaving it pending for ever; a later success (a
/// replay) still makes it stored.
async fn a_dead_lettered_store_command_fails_its_media(h: &Harness) {
    let customer = h.customer("Ναός Αγίου Νικολάου", "nikolaos@example.gr").await;
    let media_id = Uuid::now_v7();
    let path = format!("customers/{}/media/{media_id}-σχέδιο.pdf", customer.id);
    let media = crm_tests::pending_media(Some(customer.id), "σχέδιο.pdf", "application/pdf").awaiting(&path, b"%PDF");
    h.store().create_with_commands(media_id, media, &[]).await.unwrap();
    // A stand-in files connector that gives up on every command.
    let group = crm_bus::message::command_group(Channel::Files);
    let mut commands = h.bus().subscribe(Subscription::new(group.as_str(), Exchange::Commands, &["files.#"])).await.expect("subscribed");
    let command = crm_bus::message::StoreFile {
        media_id,
        path,
        mime_type: "application/pdf".into(),
        overwrite: false,
        content: crm_bus::message::Bytes(b"%PDF".to_vec()),
    };
    h.bus().publish(&Envelope::new("/crm/core", &command, Trace::new("req-store"))).await.unwrap();
    let delivery = tokio::time::timeout(WAIT, commands.next()).await.expect("the command arrives").expect("bus open");
    delivery.dead_letter("cannot store: No space left on device").await.unwrap();

    let media_of = || async { h.store().get::<crm_domain::comms::Media>(media_id, false).await.unwrap().data };
    wait_until("the media record to be failed", WAIT, || async { media_of().await.status == crm_domain::comms::MediaStatus::Failed }).await;
    let failed = media_of().await;
    let reason = failed.status_reason.expect("a reason");
    assert!(reason.contains("No space left on device") && reason.contains(&group), "{reason}");
    let letters = h.store().dead_letters(Some("dead"), Some(&group), None, None).await.unwrap().items;
    assert_eq!(letters.len(), 1, "filed for ops as well");

    // Replayed, it is stored after all.
    let result = crm_bus::message::FileResult {
        media_id: Some(media_id),
        path: command.path.clone(),
        outcome: crm_bus::message::FileOutcome::Stored { size: 4, sha256: crm_domain::sha256_hex(b"%PDF") },
    };
    h.bus().publish(&connector_envelope(&result)).await.unwrap();
    wait_until("the media record to be stored", WAIT, || async { media_of().await.status == crm_domain::comms::MediaStatus::Stored }).await;
    assert_eq!(media_of().await.status_reason, None);
}

/// A send command the connector gives up on fails its queued entry with the reason (filed for
/// ops too); a later report that it was sent after all (a replay) still counts, and an entry a
/// connector already reported sent is not failed by a dead-lettered duplicate.
async fn a_dead_lettered_send_command_fails_its_entry(h: &Harness) {
    let customer = h.customer("Ναός Αγίου Παύλου", "pavlos@example.gr").await;
    let group = crm_bus::message::command_group(Channel::Sms);
    let mut commands = h.bus().subscribe(Subscription::new(group.as_str(), Exchange::Commands, &["sms.#"])).await.expect("subscribed");
    let send = |entry_id| SendMessage {
        entry_id,
        channel: Channel::Sms,
        to: vec![Address::phone("+306941234567", None)],
        cc: Vec::new(),
        subject: None,
        body: "Η καμπάνα είναι έτοιμη.".into(),
        body_html: None,
        in_reply_to: None,
        references: Vec::new(),
        attachments: Vec::new(),
    };
    let status_of = |id| async move { h.store().get::<CommsEntry>(id, false).await.unwrap().data };
    let queued =
        h.store().create(queued_outbound(customer.id, crm_domain::comms::CommsType::Sms, None, "Η καμπάνα είναι έτοιμη.")).await.unwrap();
    let already_sent = h.store().create(queued_outbound(customer.id, crm_domain::comms::CommsType::Sms, None, "Δεύτερο.")).await.unwrap();
    h.store().record_delivery(Some(already_sent.id), Some(("sms", "sms-2")), crm_domain::comms::DeliveryStatus::Sent, None).await.unwrap();

    // The keeper files dead letters one at a time, in order: once the second has failed its
    // entry, the first has been dealt with.
    for id in [already_sent.id, queued.id] {
        h.bus().publish(&Envelope::new("/crm/core", &send(id), Trace::new("req-sms"))).await.unwrap();
        let delivery = tokio::time::timeout(WAIT, commands.next()).await.expect("the command arrives").expect("bus open");
        delivery.dead_letter("SMS gateway: 400 invalid sender id").await.unwrap();
    }
    wait_until("the queued entry to fail", WAIT, || async {
        status_of(queued.id).await.delivery_status == Some(crm_domain::comms::DeliveryStatus::Failed)
    })
    .await;
    let reason = status_of(queued.id).await.status_reason.expect("a reason");
    assert!(reason.contains("400 invalid sender id") && reason.contains(&group), "{reason}");
    assert_eq!(h.store().dead_letters(Some("dead"), Some(&group), None, None).await.unwrap().items.len(), 2, "both filed for ops");
    assert_eq!(status_of(already_sent.id).await.delivery_status, Some(crm_domain::comms::DeliveryStatus::Sent));
}

/// A connector that publishes an inbound message as soon as it has started, as the email
/// connector does with what waited in the mailbox.
#[derive(Debug)]
struct EarlyEmail;

impl crm_connector::Connector for EarlyEmail {
    type Config = ();
    const NAME: &'static str = "test-early";
    const VERSION: &'static str = "1.0.0";
    const CHANNEL: Channel = Channel::Email;

    fn bindings(&self) -> Vec<String> {
        vec!["email.message.send".into()]
    }

    async fn init(&self, hub: &crm_connector::Hub) -> anyhow::Result<()> {
        let message = email("papas@example.gr", Some("π. Γεώργιος"), "<early@example.gr>");
        hub.publisher().publish(&hub.event(&message, Trace::new("req-early"))).await?;
        Ok(())
    }

    async fn handle(&self, command: crm_connector::Command<'_>) -> Result<crm_connector::Outcome, crm_connector::HandlerError> {
        Err(command.unsupported())
    }
}

/// On a bus where the core has never run, nothing binds the events exchange yet, and a topic
/// exchange drops (and the broker confirms) what no queue binds. The connector declares the
/// core's queue before it publishes, so its first message waits there and is logged once the
/// core starts.
async fn an_event_published_before_the_core_ever_ran_is_logged_once_it_starts(transport: Transport) {
    let Some(db) = TestDb::new(Backend::Sqlite).await else { return };
    let Some(bus) = TestBus::new(transport).await else { return };
    let customer = customer_with_email(&db.store, "Ιερός Ναός Αγίου Νικολάου", "papas@example.gr").await;
    let token = crm_connector::CancellationToken::new();
    let connector = crm_connector::spawn(EarlyEmail, bus.bus.clone(), token.clone());
    // Consuming its commands means `init`, and with it the confirmed publish, is done.
    wait_until("the connector to be ready", WAIT, || async {
        bus.bus.queue_stats().await.unwrap().iter().any(|q| q.group == "connector.email.commands" && q.consumers > 0)
    })
    .await;

    let hub = start_hub(&db, &bus).await;
    let query = ListQuery { filter: CommsFilter::default(), ..Default::default() };
    wait_until("the early message logged", WAIT, || async { !db.store.list::<CommsEntry>(&query).await.unwrap().items.is_empty() }).await;
    let entries = db.store.list::<CommsEntry>(&query).await.unwrap().items;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].data.ext_message_id.as_deref(), Some("<early@example.gr>"));
    assert_eq!(entries[0].data.customer_id, Some(customer.id));
    token.cancel();
    connector.await.unwrap().unwrap();
    hub.shutdown().await;
    bus.cleanup().await;
}

/// The built-in matcher, except that it panics on one sender: a bug an event triggers.
#[derive(Debug)]
struct PanicsOn(&'static str);

impl crm_domain::matching::Matcher for PanicsOn {
    fn name(&self) -> String {
        "built-in".into()
    }

    fn keys(&self, sender: &crm_domain::matching::Sender) -> Result<Vec<crm_domain::matching::LookupKey>, String> {
        assert!(!sender.address.eq_ignore_ascii_case(self.0), "the matcher trips over {}", self.0);
        NativeMatcher::new(Region::GR).keys(sender)
    }

    fn choose(
        &self,
        sender: &crm_domain::matching::Sender,
        keys: &[crm_domain::matching::LookupKey],
        candidates: &[crm_domain::matching::Candidate],
    ) -> Result<Option<crm_domain::matching::Choice>, String> {
        NativeMatcher::new(Region::GR).choose(sender, keys, candidates)
    }
}

/// An event that makes ingest panic costs only itself: the events batched with it are logged,
/// it is retried and then dead-lettered with the panic as its reason, and the one ingest worker
/// goes on logging what comes after.
async fn an_event_that_makes_ingest_panic_costs_only_itself(transport: Transport) {
    let Some(db) = TestDb::new(Backend::Sqlite).await else { return };
    let Some(bus) = TestBus::new(transport).await else { return };
    let customer = customer_with_email(&db.store, "Ιερός Ναός Αγίας Τριάδας", "trias@example.gr").await;
    let config = HubConfig { workers: 1, ..HubConfig::default() };
    let hub = Hub::start(db.store.clone(), bus.bus.clone(), Arc::new(PanicsOn("poison@example.gr")), config, Arc::new(Notify::new()))
        .await
        .expect("hub starts");
    let normal = |i: usize| connector_envelope(&email("trias@example.gr", None, &format!("<before-{i}@example.gr>")));
    let poison = connector_envelope(&email("poison@example.gr", None, "<poison@example.gr>"));
    let mut batch: Vec<Envelope> = (0..3).map(normal).collect();
    batch.insert(1, poison.clone());
    bus.bus.publish_all(&batch).await.expect("published");

    let letters = || async { db.store.dead_letters(None, None, None, None).await.unwrap().items };
    wait_until("the poison event dead-lettered", WAIT, || async { !letters().await.is_empty() }).await;
    let letters = letters().await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].envelope_id, poison.id);
    assert!(letters[0].reason.contains("ingest panicked: the matcher trips over poison@example.gr"), "{}", letters[0].reason);
    let query = ListQuery { filter: CommsFilter::default(), limit: Some(100), ..Default::default() };
    let logged = || async {
        db.store.list::<CommsEntry>(&query).await.unwrap().items.into_iter().filter_map(|e| e.data.ext_message_id).collect::<Vec<_>>()
    };
    wait_until("the rest of the batch logged", WAIT, || async { logged().await.len() == 3 }).await;
    assert!(!logged().await.contains(&"<poison@example.gr>".to_owned()));

    let after: Vec<Envelope> =
        (0..5).map(|i| connector_envelope(&email("trias@example.gr", None, &format!("<after-{i}@example.gr>")))).collect();
    bus.bus.publish_all(&after).await.expect("published");
    wait_until("the events after it logged", WAIT, || async { logged().await.len() == 8 }).await;
    let entries = db.store.list::<CommsEntry>(&query).await.unwrap().items;
    assert!(entries.iter().all(|e| e.data.customer_id == Some(customer.id)), "{entries:?}");
    hub.shutdown().await;
    bus.cleanup().await;
}

/// With the default matcher plugin active, the plugin decides and the entry says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_active_matcher_plugin_matches_inbound_messages() {
    let db = TestDb::new(Backend::Sqlite).await.expect("sqlite");
    let bus = TestBus::new(Transport::InProcess).await.expect("in-process bus");
    let (registry, _dir) = tokio::task::spawn_blocking(crm_tests::plugin_registry).await.unwrap();
    let matcher = Arc::new(crm_plugins::Matcher::new(registry, Region::GR));
    let hub = Hub::start(db.store.clone(), bus.bus.clone(), matcher, HubConfig::default(), Arc::new(Notify::new())).await.unwrap();
    let input = CustomerInput {
        name: Some("Ιερός Ναός Αγίου Γεωργίου".into()),
        contacts: vec![ContactInput { kind: ContactType::Whatsapp, label: None, value: "694 123 4567".into(), primary: true }],
        ..Default::default()
    };
    let customer = db.store.create(input.parse(Region::GR, Utc::now()).unwrap()).await.unwrap();
    let mut message = email("unused@example.gr", None, "wamid.plugin-1");
    message.channel = Channel::Whatsapp;
    message.from = Address::phone("306941234567", Some("π. Γεώργιος".into()));
    message.subject = None;
    bus.bus.publish(&connector_envelope(&message)).await.unwrap();
    let query = ListQuery { filter: CommsFilter::default(), ..Default::default() };
    wait_until("the message logged", WAIT, || async { !db.store.list::<CommsEntry>(&query).await.unwrap().items.is_empty() }).await;
    let entry = db.store.list::<CommsEntry>(&query).await.unwrap().items.remove(0);
    assert_eq!(entry.data.customer_id, Some(customer.id));
    let matched = entry.data.matched.expect("match recorded");
    assert_ne!(matched.matcher, "built-in", "the plugin decided");
    assert!(matched.matcher.contains("matcher"), "{}", matched.matcher);
    assert!(matched.reason.contains("phone"), "{}", matched.reason);
    hub.shutdown().await;
}

/// Runs each test that sets up its own hub on both transports: a module per transport.
macro_rules! on_both_transports {
    ($($name:ident),* $(,)?) => {
        on_both_transports!(@mod in_process, Transport::InProcess, $($name),*);
        on_both_transports!(@mod rabbitmq, Transport::RabbitMq, $($name),*);
    };
    (@mod $module:ident, $transport:expr, $($name:ident),*) => {
        mod $module {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($transport).await;
                }
            )*
        }
    };
}

on_both_transports!(
    an_event_published_before_the_core_ever_ran_is_logged_once_it_starts,
    an_event_that_makes_ingest_panic_costs_only_itself
);

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        scenarios!(@mod in_process_sqlite, Transport::InProcess, Backend::Sqlite, $($name),*);
        scenarios!(@mod in_process_postgres, Transport::InProcess, Backend::Postgres, $($name),*);
        scenarios!(@mod rabbitmq_sqlite, Transport::RabbitMq, Backend::Sqlite, $($name),*);
        scenarios!(@mod rabbitmq_postgres, Transport::RabbitMq, Backend::Postgres, $($name),*);
    };
    (@mod $module:ident, $transport:expr, $backend:expr, $($name:ident),*) => {
        mod $module {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(harness) = Harness::start($transport, $backend).await else { return };
                    super::$name(&harness).await;
                    harness.stop().await;
                }
            )*
        }
    };
}

scenarios!(
    inbound_message_is_logged_for_its_customer,
    redelivered_event_gives_one_entry,
    unmatched_sender_lands_in_the_inbox_and_can_be_assigned,
    malformed_event_is_dead_lettered_with_its_reason_and_replayed_after_a_fix,
    outbound_command_reaches_the_connector_and_reports_come_back,
    a_delivery_report_before_sent_is_applied_when_sent_arrives,
    file_results_update_the_media_record,
    a_dead_lettered_store_command_fails_its_media,
    a_dead_lettered_send_command_fails_its_entry,
    a_nul_character_is_replaced_and_spoils_no_batch,
    a_message_with_70000_references_is_logged,
);
