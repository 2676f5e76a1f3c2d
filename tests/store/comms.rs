//! The communications log and the media index: both as resources, customer lookup for the
//! matcher, logging inbound batches exactly once (redeliveries, duplicates inside a batch,
//! concurrent writers), threading, delivery reports, file-store results, the unmatched inbox,
//! records created with their outbox commands, and the timeline's filters and pages.

use crate::common::{all_pages, assert_conflict, assert_invalid, assert_not_found, create_customer, create_order, create_product, set};
use chrono::{DateTime, Duration, Utc};
use crm_domain::comms::{
    AddressKind, Attachment, ChannelAddress, CommsEntry, CommsInput, CommsType, DeliveryStatus, Direction, MatchInfo, Media,
    MediaDirection, MediaStatus, Triage,
};
use crm_domain::contact::ContactType;
use crm_domain::customer::Customer;
use crm_domain::{Record, sha256_hex};
use crm_store::{
    Actor, ActorKind, AuditQuery, CommsFilter, Created, CustomerFilter, DeliveryRecorded, FileStored, HELD_REPORTS_KEPT, IdempotencyKey,
    InboundEntry, ListQuery, Logged, MediaFilter, SortDirection, Store, StoreError, ext_key,
};
use crm_tests::TestDb;
use serde_json::{Value, json};
use std::collections::HashSet;
use uuid::Uuid;

crm_tests::on_both_backends!(
    entries_and_media_are_resources,
    customers_by_keys_finds_live_customers,
    customers_by_name_words_needs_every_word,
    new_messages_are_logged_once,
    redeliveries_are_duplicates,
    duplicates_within_one_batch,
    replies_join_the_thread_of_what_they_answer,
    replies_within_one_batch,
    concurrent_writers_log_a_message_once,
    concurrent_writer_wins_while_the_batch_waits,
    concurrent_batches_in_opposite_orders,
    an_unstorable_entry_fails_alone,
    replies_naming_many_messages,
    create_with_commands_is_all_or_nothing,
    a_key_creates_once_with_its_commands,
    delivery_status_never_moves_back,
    delivery_reports_find_their_entry,
    early_delivery_reports_are_held,
    long_channel_message_ids,
    concurrent_delivery_reports,
    file_results_update_media_and_attachment,
    assigning_an_unmatched_entry,
    assigning_by_phone,
    assigning_a_sender_with_thousands_of_messages,
    assigning_gives_the_files_to_the_customer,
    triage_refusals,
    dismissing_an_unmatched_entry,
    concurrent_assignments,
    timeline_filters,
    occurred_range_boundaries,
    timeline_pages_across_equal_times,
    unmatched_inbox_listing,
    media_filters,
);

// ---------------------------------------------------------------------------------------------
// Builders

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}

/// An entry with only its kind, direction and time set.
fn entry(kind: CommsType, direction: Direction, occurred_at: DateTime<Utc>) -> CommsEntry {
    CommsEntry {
        customer_id: None,
        kind,
        direction,
        subject: None,
        body: String::new(),
        attachments: Vec::new(),
        ext_message_id: None,
        channel_address: None,
        recipients: Vec::new(),
        logged_by: "connector:test".into(),
        occurred_at,
        thread_id: None,
        in_reply_to: None,
        references: Vec::new(),
        delivery_status: None,
        status_reason: None,
        raw_event_id: None,
        matched: None,
        triage: None,
        auto_reply: false,
    }
}

fn email_address(value: &str) -> ChannelAddress {
    ChannelAddress { kind: AddressKind::Email, value: value.into(), normalized: Some(value.to_lowercase()), name: None }
}

/// An inbound email with channel id `message_id` from bus event `event_id`: the customer's when
/// one is given, otherwise waiting in the unmatched inbox.
fn inbound(message_id: &str, event_id: &str, customer: Option<Uuid>) -> InboundEntry {
    let mut data = entry(CommsType::Email, Direction::Inbound, at("2026-03-01T10:00:00Z"));
    data.subject = Some(format!("About {message_id}"));
    data.body = format!("Body of {message_id}");
    data.ext_message_id = Some(message_id.into());
    data.raw_event_id = Some(event_id.into());
    data.channel_address = Some(email_address("sender@example.com"));
    data.customer_id = customer;
    match customer {
        Some(_) => data.matched = Some(MatchInfo { confidence: 100, reason: "matched by e-mail".into(), matcher: "built-in".into() }),
        None => {
            data.triage = Some(Triage::Unmatched);
            data.matched = Some(MatchInfo { confidence: 0, reason: "no customer has this address".into(), matcher: "built-in".into() });
        }
    }
    InboundEntry {
        id: Uuid::now_v7(),
        entry: data,
        answers: Vec::new(),
        answers_entries: Vec::new(),
        media: Vec::new(),
        commands: Vec::new(),
    }
}

/// `item` as a reply to the email messages `to`, most direct first.
fn replying(mut item: InboundEntry, to: &[&str]) -> InboundEntry {
    item.answers = to.iter().map(|id| ext_key("email", id)).collect();
    item.entry.in_reply_to = to.first().map(|id| (*id).to_owned());
    item.entry.references = to.iter().rev().map(|id| (*id).to_owned()).collect();
    item
}

/// `item` with one more file: an attachment naming a new media record, the record, and the
/// command that asks the file store to keep it.
/// The bytes of every file [`with_file`] adds.
const FILE: &[u8] = b"abc";

/// `item` with a file attached: its media record waits for `FILE` at
/// `customers/x/{n}-{filename}` (`inbox/x/…` for an unmatched entry), `n` counting from 1.
fn with_file(mut item: InboundEntry, filename: &str) -> InboundEntry {
    let media_id = Uuid::now_v7();
    let folder = if item.entry.customer_id.is_some() { "customers/x" } else { "inbox/x" };
    let path = format!("{folder}/{}-{filename}", item.media.len() + 1);
    item.entry.attachments.push(Attachment {
        filename: filename.into(),
        mime_type: "image/jpeg".into(),
        size: 3,
        media_id: Some(media_id),
        nextcloud_path: None,
        refused: None,
    });
    let mut file = media(item.entry.customer_id, filename);
    file.comms_id = Some(item.id);
    file.direction = MediaDirection::Received;
    item.media.push((media_id, file.awaiting(&path, FILE)));
    item.commands.push(command(&format!("store {media_id}")));
    item
}

fn media(customer: Option<Uuid>, filename: &str) -> Media {
    Media {
        customer_id: customer,
        order_id: None,
        comms_id: None,
        filename: filename.into(),
        nextcloud_path: Some(format!("customers/x/{filename}")),
        mime_type: "image/jpeg".into(),
        size: None,
        sha256: None,
        direction: MediaDirection::Internal,
        tags: vec!["photo".into()],
        uploaded_by: "user:test".into(),
        status: MediaStatus::External,
        status_reason: None,
    }
}

/// A CloudEvents command as the outbox keeps it.
fn command(label: &str) -> Value {
    json!({
        "specversion": "1.0",
        "id": Uuid::now_v7().to_string(),
        "type": "crm.test.command",
        "source": "crm-tests",
        "data": {"label": label}
    })
}

/// A queued outbound message to `customer`, as the API writes it.
fn outbound(customer: Uuid, kind: CommsType, occurred_at: DateTime<Utc>) -> CommsEntry {
    let mut data = entry(kind, Direction::Outbound, occurred_at);
    data.customer_id = Some(customer);
    data.body = "Your bells are ready".into();
    data.delivery_status = Some(DeliveryStatus::Queued);
    data.logged_by = "user:test".into();
    data
}

fn user_actor() -> Actor {
    Actor { kind: ActorKind::User, id: Some(Uuid::now_v7()), request_id: Some("req-comms".into()) }
}

// ---------------------------------------------------------------------------------------------
// Reading back

/// Every entry matching `query`, over all pages.
async fn timeline(store: &Store, query: ListQuery<CommsFilter>) -> Vec<Record<CommsEntry>> {
    let pages = all_pages(|cursor| {
        let query = ListQuery { cursor, ..query.clone() };
        async move { store.list::<CommsEntry>(&query).await }
    })
    .await;
    pages.into_iter().flatten().collect()
}

/// Every entry, deleted ones included.
async fn every_entry(store: &Store) -> Vec<Record<CommsEntry>> {
    timeline(store, ListQuery { include_deleted: true, limit: Some(crm_store::MAX_LIMIT), ..Default::default() }).await
}

/// Every media record, deleted ones included.
async fn every_media(store: &Store) -> Vec<Record<Media>> {
    let query = ListQuery::<MediaFilter> { include_deleted: true, limit: Some(crm_store::MAX_LIMIT), ..Default::default() };
    let pages = all_pages(|cursor| {
        let query = ListQuery { cursor, ..query.clone() };
        async move { store.list::<Media>(&query).await }
    })
    .await;
    pages.into_iter().flatten().collect()
}

/// How many log entries carry this channel message id on this channel.
async fn entries_with(store: &Store, kind: CommsType, message_id: &str) -> Vec<Record<CommsEntry>> {
    every_entry(store).await.into_iter().filter(|e| e.data.kind == kind && e.data.ext_message_id.as_deref() == Some(message_id)).collect()
}

async fn backlog(store: &Store) -> i64 {
    store.outbox_backlog().await.unwrap().0
}

/// The envelopes waiting in the outbox, oldest first (claimed for an hour).
async fn pending_envelopes(store: &Store) -> Vec<Value> {
    store.claim_outbox(1_000, Duration::hours(1)).await.unwrap().into_iter().map(|m| m.envelope).collect()
}

async fn entry_of(store: &Store, id: Uuid) -> Record<CommsEntry> {
    store.get::<CommsEntry>(id, true).await.unwrap()
}

fn ids<T>(records: &[Record<T>]) -> Vec<Uuid> {
    records.iter().map(|r| r.id).collect()
}

// ---------------------------------------------------------------------------------------------
// Resources

async fn entries_and_media_are_resources(db: &TestDb) {
    let store = &db.store;
    let customer = create_customer(store, json!({"name": "Πάτερ Νικόλαος"})).await;
    let note = CommsInput {
        customer_id: Some(customer.id),
        kind: Some(CommsType::Note),
        body: Some("Θέλει δύο καμπάνες".into()),
        occurred_at: Some(at("2026-02-03T04:05:06.123456Z")),
        ..Default::default()
    }
    .parse_new("user:someone".into(), Utc::now())
    .unwrap();
    let created = store.create(note.clone()).await.unwrap();
    assert_eq!((created.version, &created.data), (1, &note));
    assert_eq!(store.get::<CommsEntry>(created.id, false).await.unwrap(), created);

    let edit =
        CommsInput { body: Some("Θέλει τρεις καμπάνες".into()), ..Default::default() }.parse_edit(&created.data, Utc::now()).unwrap();
    let updated = store.update::<CommsEntry>(created.id, Some(1), edit.clone()).await.unwrap();
    assert_eq!((updated.version, &updated.data), (2, &edit));
    match store.update::<CommsEntry>(created.id, Some(1), note.clone()).await {
        Err(StoreError::VersionMismatch { current: 2 }) => {}
        other => panic!("expected a version mismatch, got {other:?}"),
    }
    let deleted = store.delete::<CommsEntry>(created.id, Some(2)).await.unwrap();
    assert_not_found(store.get::<CommsEntry>(created.id, false).await);
    assert!(timeline(store, ListQuery::default()).await.is_empty());
    let restored = store.restore::<CommsEntry>(created.id, Some(deleted.version)).await.unwrap();
    assert_eq!(restored.data, edit);

    // A channel message id is unique per channel: the same id on another channel is another
    // message, the same id on the same channel is refused on create and on update.
    let mut sent = outbound(customer.id, CommsType::Email, at("2026-02-03T05:00:00Z"));
    sent.ext_message_id = Some("<m1@example.gr>".into());
    let first = store.create(sent.clone()).await.unwrap();
    let mut other_channel = sent.clone();
    other_channel.kind = CommsType::Whatsapp;
    store.create(other_channel).await.unwrap();
    assert_conflict(store.create(sent.clone()).await, Some("/ext_message_id"));
    let mut second = sent.clone();
    second.ext_message_id = Some("<m2@example.gr>".into());
    let second = store.create(second).await.unwrap();
    assert_conflict(store.update::<CommsEntry>(second.id, None, sent.clone()).await, Some("/ext_message_id"));
    assert_eq!(entry_of(store, second.id).await.version, 1, "a refused update changes nothing");
    // A message on its way is not deleted (deleting would not stop it); once it has an outcome
    // it can be. A deleted message still holds its id: a redelivery must not log it again.
    assert_conflict(store.delete::<CommsEntry>(first.id, None).await, Some("/delivery_status"));
    store.record_delivery(Some(first.id), None, DeliveryStatus::Sent, None).await.unwrap();
    store.delete::<CommsEntry>(first.id, None).await.unwrap();
    assert_conflict(store.create(sent).await, Some("/ext_message_id"));

    // Media.
    let file = media(Some(customer.id), "καμπάνα.jpg");
    let record = store.create(file.clone()).await.unwrap();
    assert_eq!(store.get::<Media>(record.id, false).await.unwrap(), record);
    let mut renamed = file.clone();
    renamed.tags = vec!["bell".into()];
    let renamed = store.update::<Media>(record.id, Some(1), renamed).await.unwrap();
    assert_eq!(renamed.version, 2);
    // Media search finds the folded file name and the tags.
    let search = |term: &str| ListQuery::<MediaFilter> { terms: vec![term.into()], ..Default::default() };
    assert_eq!(ids(&store.list::<Media>(&search("καμπανα")).await.unwrap().items), vec![record.id]);
    assert_eq!(ids(&store.list::<Media>(&search("bell")).await.unwrap().items), vec![record.id]);
    assert!(store.list::<Media>(&search("photo")).await.unwrap().items.is_empty(), "the old tag is gone from the index");
}

// ---------------------------------------------------------------------------------------------
// Lookups for the matcher

async fn customers_by_keys_finds_live_customers(db: &TestDb) {
    let store = &db.store;
    let nikos = create_customer(
        store,
        json!({"name": "Πάτερ Νικόλαος", "contacts": [
            {"type": "email", "value": "Pater.Nikos@Example.gr"},
            {"type": "phone", "value": "694 123 4567"}
        ]}),
    )
    .await;
    let maria = create_customer(
        store,
        json!({"name": "Μαρία Οικονόμου", "contacts": [
            {"type": "whatsapp", "value": "+30 697 000 0001"},
            {"type": "email", "value": "office@naos.gr"}
        ]}),
    )
    .await;
    // Shares the office address with Maria.
    let office = create_customer(store, json!({"name": "Ιερός Ναός", "contacts": [{"type": "email", "value": "OFFICE@naos.gr"}]})).await;
    let gone = create_customer(store, json!({"name": "Πάτερ Νικόλαος", "contacts": [{"type": "email", "value": "gone@example.gr"}]})).await;
    store.delete::<Customer>(gone.id, None).await.unwrap();

    let sorted = |mut v: Vec<(String, String, Uuid)>| {
        v.sort();
        v
    };
    let hit = |kind: &str, key: &str, id: Uuid| (kind.to_owned(), key.to_owned(), id);

    assert!(store.customers_by_keys(&[]).await.unwrap().is_empty());
    assert_eq!(
        store.customers_by_keys(&[("email", "pater.nikos@example.gr")]).await.unwrap(),
        vec![hit("email", "pater.nikos@example.gr", nikos.id)]
    );
    // Canonical values only: the address as typed is not a key.
    assert!(store.customers_by_keys(&[("email", "Pater.Nikos@Example.gr")]).await.unwrap().is_empty());
    assert_eq!(store.customers_by_keys(&[("phone", "+306941234567")]).await.unwrap(), vec![hit("phone", "+306941234567", nikos.id)]);
    // A WhatsApp contact is a phone key.
    assert_eq!(store.customers_by_keys(&[("phone", "+306970000001")]).await.unwrap(), vec![hit("phone", "+306970000001", maria.id)]);
    // An email key does not find a phone contact, nor the reverse.
    assert!(store.customers_by_keys(&[("phone", "pater.nikos@example.gr"), ("email", "+306941234567")]).await.unwrap().is_empty());
    // A shared address finds both; the deleted customer is never found.
    assert_eq!(
        sorted(store.customers_by_keys(&[("email", "office@naos.gr")]).await.unwrap()),
        sorted(vec![hit("email", "office@naos.gr", maria.id), hit("email", "office@naos.gr", office.id)])
    );
    assert!(store.customers_by_keys(&[("email", "gone@example.gr")]).await.unwrap().is_empty());
    // Names are exact folded names; the deleted namesake is left out.
    assert_eq!(store.customers_by_keys(&[("name", "πατερ νικολαοσ")]).await.unwrap(), vec![hit("name", "πατερ νικολαοσ", nikos.id)]);
    assert!(store.customers_by_keys(&[("name", "πατερ")]).await.unwrap().is_empty());

    // A whole batch in one call: every pair is answered, pairs that find nothing add nothing.
    let batch = [
        ("email", "pater.nikos@example.gr"),
        ("phone", "+306970000001"),
        ("email", "nobody@example.gr"),
        ("name", "ιεροσ ναοσ"),
        ("name", "κανεισ"),
        ("email", "office@naos.gr"),
    ];
    assert_eq!(
        sorted(store.customers_by_keys(&batch).await.unwrap()),
        sorted(vec![
            hit("email", "pater.nikos@example.gr", nikos.id),
            hit("phone", "+306970000001", maria.id),
            hit("name", "ιεροσ ναοσ", office.id),
            hit("email", "office@naos.gr", maria.id),
            hit("email", "office@naos.gr", office.id),
        ])
    );
}

async fn customers_by_name_words_needs_every_word(db: &TestDb) {
    let store = &db.store;
    let nikos = create_customer(store, json!({"name": "Πάτερ Νικόλαος Παπαδόπουλος"})).await;
    let nikolaidis = create_customer(store, json!({"name": "Νικόλαος Νικολαΐδης"})).await;
    let percent = create_customer(store, json!({"name": "Έκπτωση 100% Α.Ε."})).await;
    let under = create_customer(store, json!({"name": "snake_case Ltd"})).await;
    let gone = create_customer(store, json!({"name": "Νικόλαος Διαγραμμένος"})).await;
    store.delete::<Customer>(gone.id, None).await.unwrap();

    let find = |words: &'static [&'static str], limit| async move { set(store.customers_by_name_words(words, limit).await.unwrap()) };
    assert!(find(&[], 10).await.is_empty());
    assert_eq!(find(&["νικολαοσ"], 10).await, set([nikos.id, nikolaidis.id]));
    assert_eq!(find(&["νικολαοσ", "παπαδ"], 10).await, set([nikos.id]));
    assert_eq!(find(&["παπαδ", "νικολαοσ"], 10).await, set([nikos.id]), "word order does not matter");
    assert!(find(&["νικολαοσ", "κανεισ"], 10).await.is_empty(), "every word must occur");
    assert_eq!(find(&["νικολαοσ"], 1).await.len(), 1, "the limit is kept");
    // LIKE's wildcards in a word match themselves only.
    assert_eq!(find(&["%"], 10).await, set([percent.id]));
    assert_eq!(find(&["_"], 10).await, set([under.id]));
    assert!(find(&["snake%ltd"], 10).await.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Logging inbound messages

async fn new_messages_are_logged_once(db: &TestDb) {
    let store = &db.store;
    let customer = create_customer(store, json!({"name": "Γιώργος"})).await;
    let a = with_file(with_file(inbound("<a@x>", "ev-a", Some(customer.id)), "a1.jpg"), "a2.jpg");
    let b = inbound("<b@x>", "ev-b", None);
    let c = with_file(inbound("<c@x>", "ev-c", None), "c.jpg");
    let batch = vec![a.clone(), b.clone(), c.clone()];
    let outcomes = store.log_inbound(batch.clone()).await.unwrap();
    assert_eq!(outcomes, vec![Logged::Created(a.id), Logged::Created(b.id), Logged::Created(c.id)]);

    for item in &batch {
        let got = entry_of(store, item.id).await;
        assert_eq!(got.version, 1);
        // Stored as given, with a thread of its own (it answers nothing).
        let mut expected = item.entry.clone();
        expected.thread_id = Some(item.id);
        assert_eq!(got.data, expected);
    }
    assert_eq!(every_entry(store).await.len(), 3);

    // Every file has its media record, linked to its entry; every command is in the outbox.
    let files = every_media(store).await;
    let expected: Vec<(Uuid, Media)> = batch.iter().flat_map(|i| i.media.clone()).collect();
    assert_eq!(files.len(), 3);
    for (id, data) in &expected {
        let found = files.iter().find(|m| m.id == *id).unwrap_or_else(|| panic!("media {id} is missing"));
        assert_eq!(&found.data, data);
    }
    let commands: Vec<Value> = batch.iter().flat_map(|i| i.commands.clone()).collect();
    assert_eq!(pending_envelopes(store).await, commands, "the commands are queued in batch order");

    // Not audited, but listed and searchable.
    let audit = store.audit_trail(&AuditQuery { resource_id: Some(a.id), ..Default::default() }).await.unwrap();
    assert!(audit.items.is_empty());
    let found = timeline(store, ListQuery { terms: vec!["body of <c".into()], ..Default::default() }).await;
    assert_eq!(ids(&found), vec![c.id]);

    // An empty batch logs nothing.
    assert!(store.log_inbound(Vec::new()).await.unwrap().is_empty());
}

async fn redeliveries_are_duplicates(db: &TestDb) {
    let store = &db.store;
    let a = with_file(inbound("<a@x>", "ev-a", None), "a.jpg");
    let b = inbound("<b@x>", "ev-b", None);
    store.log_inbound(vec![a.clone(), b.clone()]).await.unwrap();
    assert_eq!(backlog(store).await, 1);
    let before = every_entry(store).await;

    // The broker redelivers: the ingest builds new items (new ids, new media ids).
    let again_a = with_file(inbound("<a@x>", "ev-a", None), "a.jpg");
    let again_b = inbound("<b@x>", "ev-b", None);
    // The connector re-published a message as a new event: same channel id, new event id.
    let republished = with_file(inbound("<a@x>", "ev-a-second", None), "a.jpg");
    // Another message claims an event id already logged.
    let same_event = inbound("<other@x>", "ev-b", None);
    // The same channel id on another channel is another message.
    let mut whatsapp = inbound("<a@x>", "ev-w", None);
    whatsapp.entry.kind = CommsType::Whatsapp;
    let outcomes =
        store.log_inbound(vec![again_a.clone(), again_b.clone(), republished.clone(), same_event.clone(), whatsapp.clone()]).await.unwrap();
    assert_eq!(
        outcomes,
        vec![
            Logged::Duplicate(a.id),
            Logged::Duplicate(b.id),
            Logged::Duplicate(a.id),
            Logged::Duplicate(b.id),
            Logged::Created(whatsapp.id)
        ]
    );
    let after = every_entry(store).await;
    assert_eq!(after.len(), before.len() + 1);
    for record in &before {
        assert!(after.contains(record), "a duplicate changed entry {}", record.id);
    }
    // Nothing of the duplicates was written: no media records, no commands.
    assert_eq!(every_media(store).await.len(), 1);
    assert_eq!(backlog(store).await, 1);

    // A deleted entry still stops its redelivery (the user deleted it on purpose).
    store.delete::<CommsEntry>(b.id, None).await.unwrap();
    let outcomes = store.log_inbound(vec![inbound("<b@x>", "ev-b-third", None)]).await.unwrap();
    assert_eq!(outcomes, vec![Logged::Duplicate(b.id)]);
    assert!(store.get::<CommsEntry>(b.id, false).await.is_err(), "still deleted");
}

async fn duplicates_within_one_batch(db: &TestDb) {
    let store = &db.store;
    let a = with_file(inbound("<a@x>", "ev-a", None), "a.jpg");
    // Same message, another event; and another message under the same event.
    let a_again = with_file(inbound("<a@x>", "ev-a2", None), "a.jpg");
    let b = with_file(inbound("<b@x>", "ev-b", None), "b.jpg");
    let a_event = with_file(inbound("<a-other@x>", "ev-a", None), "x.jpg");
    let b_twice = with_file(inbound("<b@x>", "ev-b", None), "b.jpg");
    let outcomes = store.log_inbound(vec![a.clone(), a_again.clone(), b.clone(), a_event.clone(), b_twice.clone()]).await.unwrap();
    assert_eq!(
        outcomes,
        vec![Logged::Created(a.id), Logged::Duplicate(a.id), Logged::Created(b.id), Logged::Duplicate(a.id), Logged::Duplicate(b.id)]
    );
    assert_eq!(set(ids(&every_entry(store).await)), set([a.id, b.id]));
    assert_eq!(set(ids(&every_media(store).await)), set([a.media[0].0, b.media[0].0]), "media only for the entries logged");
    assert_eq!(pending_envelopes(store).await, vec![a.commands[0].clone(), b.commands[0].clone()], "commands only for the entries logged");
}

/// Replies find their thread through the channel ids they answer, most direct first, or
/// through our own outbound entry ids; a reply to a reply joins the first entry's thread.
async fn replies_join_the_thread_of_what_they_answer(db: &TestDb) {
    let store = &db.store;
    let customer = create_customer(store, json!({"name": "Γιώργος"})).await;
    let root = inbound("<root@x>", "ev-root", Some(customer.id));
    store.log_inbound(vec![root.clone()]).await.unwrap();
    let reply = replying(inbound("<r1@x>", "ev-r1", Some(customer.id)), &["<root@x>"]);
    store.log_inbound(vec![reply.clone()]).await.unwrap();
    assert_eq!(entry_of(store, reply.id).await.data.thread_id, Some(root.id));

    // A reply to the reply belongs to the root's thread, not the reply's.
    let second = replying(inbound("<r2@x>", "ev-r2", Some(customer.id)), &["<r1@x>", "<root@x>"]);
    store.log_inbound(vec![second.clone()]).await.unwrap();
    // Unknown ids come first: the first one the log knows decides.
    let third = replying(inbound("<r3@x>", "ev-r3", Some(customer.id)), &["<not-logged@x>", "<r2@x>"]);
    store.log_inbound(vec![third.clone()]).await.unwrap();
    assert_eq!(entry_of(store, second.id).await.data.thread_id, Some(root.id));
    assert_eq!(entry_of(store, third.id).await.data.thread_id, Some(root.id));

    // The same channel id on another channel is not what the reply answers.
    let mut elsewhere = inbound("<w1@x>", "ev-w1", Some(customer.id));
    elsewhere.entry.kind = CommsType::Whatsapp;
    elsewhere.answers = vec![ext_key("whatsapp", "<root@x>")];
    // Nothing known: a thread of its own.
    let lonely = replying(inbound("<l1@x>", "ev-l1", Some(customer.id)), &["<never@x>"]);
    store.log_inbound(vec![elsewhere.clone(), lonely.clone()]).await.unwrap();
    assert_eq!(entry_of(store, elsewhere.id).await.data.thread_id, Some(elsewhere.id));
    assert_eq!(entry_of(store, lonely.id).await.data.thread_id, Some(lonely.id));

    // Our own outbound entries, named by their id: a reply to one in the root's thread joins it;
    // a reply to one without a thread starts one at that entry.
    let mut in_thread = outbound(customer.id, CommsType::Email, at("2026-03-02T10:00:00Z"));
    in_thread.thread_id = Some(root.id);
    let in_thread = store.create(in_thread).await.unwrap();
    let unthreaded = store.create(outbound(customer.id, CommsType::Email, at("2026-03-02T11:00:00Z"))).await.unwrap();
    let mut answers_ours = inbound("<o1@x>", "ev-o1", Some(customer.id));
    answers_ours.answers = vec![ext_key("email", "<unknown@x>")];
    answers_ours.answers_entries = vec![Uuid::now_v7(), in_thread.id];
    let mut answers_unthreaded = inbound("<o2@x>", "ev-o2", Some(customer.id));
    answers_unthreaded.answers_entries = vec![unthreaded.id];
    store.log_inbound(vec![answers_ours.clone(), answers_unthreaded.clone()]).await.unwrap();
    assert_eq!(entry_of(store, answers_ours.id).await.data.thread_id, Some(root.id));
    assert_eq!(entry_of(store, answers_unthreaded.id).await.data.thread_id, Some(unthreaded.id));

    // A channel id the log knows wins over an entry id.
    let mut both = replying(inbound("<b1@x>", "ev-b1", Some(customer.id)), &["<l1@x>"]);
    both.answers_entries = vec![in_thread.id];
    store.log_inbound(vec![both.clone()]).await.unwrap();
    assert_eq!(entry_of(store, both.id).await.data.thread_id, Some(lonely.id));

    // A redelivered reply is not re-threaded.
    let redelivered = replying(inbound("<r1@x>", "ev-r1", Some(customer.id)), &["<l1@x>"]);
    assert_eq!(store.log_inbound(vec![redelivered]).await.unwrap(), vec![Logged::Duplicate(reply.id)]);
    assert_eq!(entry_of(store, reply.id).await.data.thread_id, Some(root.id));

    // The thread filter lists the conversation.
    let thread =
        timeline(store, ListQuery { filter: CommsFilter { thread_id: Some(root.id), ..Default::default() }, ..Default::default() }).await;
    assert_eq!(set(ids(&thread)), set([root.id, reply.id, second.id, third.id, in_thread.id, answers_ours.id]));
}

/// Replies to messages of the same batch, replies to replies among them, and a batch that
/// continues a conversation already in the log.
async fn replies_within_one_batch(db: &TestDb) {
    let store = &db.store;
    let root = inbound("<root@x>", "ev-root", None);
    store.log_inbound(vec![root.clone()]).await.unwrap();

    let p = inbound("<p@x>", "ev-p", None);
    let q = replying(inbound("<q@x>", "ev-q", None), &["<p@x>"]);
    let s = replying(inbound("<s@x>", "ev-s", None), &["<q@x>", "<p@x>"]);
    let t = replying(inbound("<t@x>", "ev-t", None), &["<s@x>"]);
    // Continues the logged conversation, and is answered within the batch.
    let z = replying(inbound("<z@x>", "ev-z", None), &["<root@x>"]);
    let w = replying(inbound("<w@x>", "ev-w", None), &["<z@x>"]);
    // A duplicate in the batch of q does not disturb the threads.
    let q_again = replying(inbound("<q@x>", "ev-q2", None), &["<root@x>"]);
    let v = replying(inbound("<v@x>", "ev-v", None), &["<q@x>"]);
    let batch = vec![p.clone(), q.clone(), s.clone(), t.clone(), z.clone(), w.clone(), q_again, v.clone()];
    let outcomes = store.log_inbound(batch).await.unwrap();
    assert_eq!(outcomes[6], Logged::Duplicate(q.id));

    let thread = |id| async move { entry_of(store, id).await.data.thread_id };
    assert_eq!(thread(p.id).await, Some(p.id));
    assert_eq!(thread(q.id).await, Some(p.id));
    assert_eq!(thread(s.id).await, Some(p.id), "a reply to a reply in the batch joins the first message's thread");
    assert_eq!(thread(t.id).await, Some(p.id));
    assert_eq!(thread(z.id).await, Some(root.id));
    assert_eq!(thread(w.id).await, Some(root.id), "a reply to a batch entry that continues a logged thread joins that thread");
    assert_eq!(thread(v.id).await, Some(p.id));
}

/// A batch in which one entry cannot be stored (its file's media id is taken, which fails on
/// both backends): `log_inbound` refuses the whole batch; `log_inbound_each` logs the others
/// (files, commands and threads included) and gives that entry its own error.
async fn an_unstorable_entry_fails_alone(db: &TestDb) {
    let store = &db.store;
    let root = inbound("<root@x>", "ev-root", None);
    let reply = replying(inbound("<reply@x>", "ev-reply", None), &["<root@x>"]);
    let bad = with_file(inbound("<bad@x>", "ev-bad", None), "bad.jpg");
    let (taken, _) = bad.media[0].clone();
    store.create_with_commands(taken, media(None, "already-there.jpg"), &[]).await.unwrap();
    let filed = with_file(inbound("<filed@x>", "ev-filed", None), "filed.jpg");
    let later = replying(inbound("<later@x>", "ev-later", None), &["<reply@x>"]);
    let batch = vec![root.clone(), reply.clone(), bad.clone(), filed.clone(), later.clone(), inbound("<last@x>", "ev-last", None)];

    let refused = store.log_inbound(batch.clone()).await.expect_err("the batch as a whole is refused");
    assert!(!refused.is_unavailable(), "{refused:?}");
    assert!(every_entry(store).await.is_empty(), "nothing of the refused batch is written");

    let outcomes = store.log_inbound_each(batch.clone()).await.expect("the database is there");
    assert_eq!(outcomes.len(), batch.len());
    for (item, outcome) in batch.iter().zip(&outcomes) {
        match outcome {
            Ok(logged) => assert_ne!(item.id, bad.id, "the unstorable entry was logged: {logged:?}"),
            Err(err) => {
                assert_eq!(item.id, bad.id, "only the unstorable entry fails: {err:?}");
                assert!(!err.is_unavailable(), "{err:?}");
            }
        }
    }
    assert!(outcomes.iter().filter(|o| o.is_ok()).all(|o| matches!(o, Ok(Logged::Created(_)))));
    let logged: HashSet<Uuid> = ids(&every_entry(store).await).into_iter().collect();
    let expected: HashSet<Uuid> = batch.iter().map(|i| i.id).filter(|id| *id != bad.id).collect();
    assert_eq!(logged, expected);
    assert_eq!(entry_of(store, reply.id).await.data.thread_id, Some(root.id), "replies still find their thread");
    assert_eq!(entry_of(store, later.id).await.data.thread_id, Some(root.id));
    let files: Vec<Uuid> = ids(&every_media(store).await);
    assert!(files.contains(&filed.media[0].0) && files.contains(&taken) && files.len() == 2, "{files:?}");
    assert_eq!(pending_envelopes(store).await, filed.commands, "only the logged entries' commands are queued");

    // Again (a redelivery of the whole batch): the logged ones are duplicates, the bad one
    // still fails alone.
    let again = store.log_inbound_each(batch.clone()).await.unwrap();
    for (item, outcome) in batch.iter().zip(&again) {
        match outcome {
            Ok(logged) => assert_eq!(*logged, Logged::Duplicate(item.id)),
            Err(_) => assert_eq!(item.id, bad.id),
        }
    }
    assert!(store.log_inbound_each(Vec::new()).await.unwrap().is_empty());
}

/// A reply naming 70,000 earlier messages (more parameters than one PostgreSQL statement can
/// bind, and more than SQLite allows) is logged and joins the thread of the one that is logged.
async fn replies_naming_many_messages(db: &TestDb) {
    let store = &db.store;
    let root = inbound("<root@x>", "ev-root", None);
    store.log_inbound(vec![root.clone()]).await.unwrap();
    let mut names: Vec<String> = (0..70_000).map(|i| format!("<unknown-{i}@x>")).collect();
    names.push("<root@x>".into());
    let mut reply = inbound("<reply@x>", "ev-reply", None);
    reply.answers = names.iter().map(|id| ext_key("email", id)).collect();
    reply.answers_entries = (0..70_000).map(|_| Uuid::now_v7()).collect();
    let other = inbound("<other@x>", "ev-other", None);
    let outcomes = store.log_inbound(vec![reply.clone(), other.clone()]).await.expect("logged");
    assert_eq!(outcomes, vec![Logged::Created(reply.id), Logged::Created(other.id)]);
    assert_eq!(entry_of(store, reply.id).await.data.thread_id, Some(root.id));
}

/// Two cores log the same messages at the same moment: each message is logged once, the other
/// writer is told it is a duplicate of that entry, and its files and commands are not written.
async fn concurrent_writers_log_a_message_once(db: &TestDb) {
    let store = &db.store;
    for round in 0..15 {
        let message = format!("<race-{round}@x>");
        let first = with_file(inbound(&message, &format!("ev-{round}-1"), None), "f.jpg");
        let second = with_file(inbound(&message, &format!("ev-{round}-2"), None), "f.jpg");
        let (one, two) = tokio::join!(store.log_inbound(vec![first.clone()]), store.log_inbound(vec![second.clone()]));
        let (one, two) = (one.unwrap(), two.unwrap());
        let winner = match (one[0], two[0]) {
            (Logged::Created(a), Logged::Duplicate(b)) if a == first.id && b == first.id => &first,
            (Logged::Duplicate(a), Logged::Created(b)) if a == second.id && b == second.id => &second,
            other => panic!("round {round}: expected one new entry and one duplicate of it, got {other:?}"),
        };
        assert_eq!(ids(&entries_with(store, CommsType::Email, &message).await), vec![winner.id], "round {round}");
    }
    let entries = every_entry(store).await;
    assert_eq!(entries.len(), 15);
    let logged: HashSet<Uuid> = entries.iter().map(|e| e.id).collect();
    let files = every_media(store).await;
    assert_eq!(files.len(), 15, "one media record per message");
    assert!(files.iter().all(|m| m.data.comms_id.is_some_and(|id| logged.contains(&id))), "a loser's media record was written");
    assert_eq!(backlog(store).await, 15, "one command per message");
}

/// The first writer holds its transaction open (many files) while the second batch — the same
/// message twice and a reply to it — decides: the second learns only at its insert that the
/// message is taken. Every outcome must name the entry in the log, and the reply must join its
/// thread, never an entry that was not written.
async fn concurrent_writer_wins_while_the_batch_waits(db: &TestDb) {
    let store = &db.store;
    let mut firsts_won = 0;
    for round in 0..3 {
        let message = format!("<slow-{round}@x>");
        let mut first = inbound(&message, &format!("ev-{round}-first"), None);
        for i in 0..300 {
            first = with_file(first, &format!("{i}.jpg"));
        }
        let copy = inbound(&message, &format!("ev-{round}-copy"), None);
        let copy_again = inbound(&message, &format!("ev-{round}-copy-again"), None);
        let reply = replying(inbound(&format!("<slow-reply-{round}@x>"), &format!("ev-{round}-reply"), None), &[&message]);
        let slow = store.log_inbound(vec![first.clone()]);
        let late = async {
            tokio::time::sleep(std::time::Duration::from_millis(15)).await;
            store.log_inbound(vec![copy.clone(), copy_again.clone(), reply.clone()]).await
        };
        let (slow, late) = tokio::join!(slow, late);
        let (slow, late) = (slow.unwrap(), late.unwrap());
        let logged = ids(&entries_with(store, CommsType::Email, &message).await);
        assert_eq!(logged.len(), 1, "round {round}: {logged:?}");
        let winner = logged[0];
        if winner == first.id {
            firsts_won += 1;
            assert_eq!(slow, vec![Logged::Created(first.id)], "round {round}");
            assert_eq!(
                late,
                vec![Logged::Duplicate(first.id), Logged::Duplicate(first.id), Logged::Created(reply.id)],
                "round {round}: duplicates must name the entry in the log"
            );
        } else {
            assert_eq!(winner, copy.id, "round {round}");
            assert_eq!(slow, vec![Logged::Duplicate(copy.id)], "round {round}");
            assert_eq!(late, vec![Logged::Created(copy.id), Logged::Duplicate(copy.id), Logged::Created(reply.id)], "round {round}");
        }
        assert_eq!(
            entry_of(store, reply.id).await.data.thread_id,
            Some(winner),
            "round {round}: the reply joins the logged message's thread"
        );
    }
    let logged: HashSet<Uuid> = every_entry(store).await.iter().map(|e| e.id).collect();
    let files = every_media(store).await;
    assert_eq!(files.len(), 300 * firsts_won);
    assert!(files.iter().all(|m| m.data.comms_id.is_some_and(|id| logged.contains(&id))), "a loser's media record was written");
    assert_eq!(backlog(store).await, 300 * firsts_won as i64);
}

/// Two batches with the same messages in opposite orders, at once: neither may fail (e.g. by
/// deadlocking on each other's rows), and every message is logged once. (Batches this large
/// make the two inserts overlap.)
async fn concurrent_batches_in_opposite_orders(db: &TestDb) {
    let store = &db.store;
    const ROUNDS: usize = 4;
    const MESSAGES: usize = 150;
    for round in 0..ROUNDS {
        let names: Vec<String> = (0..MESSAGES).map(|i| format!("<r{round}-m{i}@x>")).collect();
        let forward: Vec<InboundEntry> = names.iter().map(|m| with_file(inbound(m, &format!("{m}-fwd"), None), "f.jpg")).collect();
        let backward: Vec<InboundEntry> = names.iter().rev().map(|m| with_file(inbound(m, &format!("{m}-bwd"), None), "f.jpg")).collect();
        let (one, two) = tokio::join!(store.log_inbound(forward.clone()), store.log_inbound(backward.clone()));
        let one = one.unwrap_or_else(|e| panic!("round {round}: forward batch failed: {e:?}"));
        let two = two.unwrap_or_else(|e| panic!("round {round}: backward batch failed: {e:?}"));
        let entries = every_entry(store).await;
        for (i, name) in names.iter().enumerate() {
            let logged: Vec<Uuid> =
                entries.iter().filter(|e| e.data.ext_message_id.as_deref() == Some(name.as_str())).map(|e| e.id).collect();
            assert_eq!(logged.len(), 1, "round {round}: {name}");
            let id = logged[0];
            let (a, b) = (one[i], two[names.len() - 1 - i]);
            assert!(
                matches!((a, b), (Logged::Created(x), Logged::Duplicate(y)) | (Logged::Duplicate(y), Logged::Created(x)) if x == id && y == id),
                "round {round}: {name}: {a:?} / {b:?}, logged {id}"
            );
        }
    }
    assert_eq!(every_media(store).await.len(), ROUNDS * MESSAGES);
    assert_eq!(backlog(store).await, (ROUNDS * MESSAGES) as i64);
}

// ---------------------------------------------------------------------------------------------
// Records with commands

async fn create_with_commands_is_all_or_nothing(db: &TestDb) {
    let actor = user_actor();
    let store = &db.store.acting_as(actor.clone());
    let customer = create_customer(store, json!({"name": "Γιώργος"})).await;
    let id = Uuid::now_v7();
    let mut data = outbound(customer.id, CommsType::Email, at("2026-03-01T10:00:00Z"));
    data.ext_message_id = Some("<crm.1@x>".into());
    data.thread_id = Some(id);
    let commands = vec![command("send"), command("also")];
    let record = store.create_with_commands(id, data.clone(), &commands).await.unwrap();
    assert_eq!((record.id, record.version, &record.data), (id, 1, &data));
    assert_eq!(entry_of(store, id).await, record);
    let audit = store.audit_trail(&AuditQuery { resource_id: Some(id), ..Default::default() }).await.unwrap().items;
    assert_eq!(audit.len(), 1);
    assert_eq!((audit[0].action.as_str(), audit[0].resource.as_str(), audit[0].actor_id), ("create", "comms_log", actor.id));
    assert_eq!(audit[0].request_id.as_deref(), Some("req-comms"));

    // A refused record writes none of its commands.
    let refused = store.create_with_commands(Uuid::now_v7(), data.clone(), &[command("never")]).await;
    assert_conflict(refused, Some("/ext_message_id"));
    // Reusing an id is refused too.
    let mut other = data.clone();
    other.ext_message_id = None;
    assert!(store.create_with_commands(id, other, &[command("never either")]).await.is_err());
    assert_eq!(pending_envelopes(store).await, commands);
    assert_eq!(every_entry(store).await.len(), 1);

    // Media the same way; no commands is fine.
    let media_id = Uuid::now_v7();
    let file = store.create_with_commands(media_id, media(Some(customer.id), "a.jpg"), &[]).await.unwrap();
    assert_eq!(store.get::<Media>(media_id, false).await.unwrap(), file);
    assert_eq!(backlog(store).await, 2, "the two claimed commands are still unsent");
}

/// A request with an idempotency key creates its record and commands once: a retry, or eight
/// at once, get the first one's record and write nothing; the same key for another request is
/// refused; keys are the caller's own.
async fn a_key_creates_once_with_its_commands(db: &TestDb) {
    let actor = user_actor();
    let store = db.store.acting_as(actor.clone());
    let customer = create_customer(&store, json!({"name": "Γιώργος"})).await;
    let key = IdempotencyKey { key: "send-1".into(), request: "digest-a".into() };
    let entry = |id: Uuid| {
        let mut data = outbound(customer.id, CommsType::Email, at("2026-03-01T10:00:00Z"));
        data.thread_id = Some(id);
        data
    };
    let first_id = Uuid::now_v7();
    let Created::New(first) = store.create_once_with_commands(&key, first_id, entry(first_id), &[command("send")]).await.unwrap() else {
        panic!("the first request creates")
    };
    assert_eq!(first.id, first_id);
    let retry_id = Uuid::now_v7();
    match store.create_once_with_commands(&key, retry_id, entry(retry_id), &[command("again")]).await.unwrap() {
        Created::Earlier(earlier) => assert_eq!(earlier, first),
        Created::New(record) => panic!("a retry created {record:?}"),
    }
    assert_eq!(store.created_with_key::<CommsEntry>(&key).await.unwrap(), Some(first.clone()));
    let unknown = IdempotencyKey { key: "never-used".into(), request: "digest-a".into() };
    assert_eq!(store.created_with_key::<CommsEntry>(&unknown).await.unwrap(), None);

    // Kept until pruned; once pruned, the key is a new request's.
    assert_eq!(store.prune_idempotency_keys(chrono::Duration::hours(1)).await.unwrap(), 0);
    assert_eq!(store.created_with_key::<CommsEntry>(&key).await.unwrap(), Some(first.clone()));

    // The same key for another request.
    let other = IdempotencyKey { key: "send-1".into(), request: "digest-b".into() };
    let id = Uuid::now_v7();
    assert_invalid(store.create_once_with_commands(&other, id, entry(id), &[command("never")]).await, "/Idempotency-Key");
    assert_invalid(store.created_with_key::<CommsEntry>(&other).await, "/Idempotency-Key");

    // Another caller's key of the same name is another key.
    let someone_else = db.store.acting_as(user_actor());
    let id = Uuid::now_v7();
    assert!(matches!(someone_else.create_once_with_commands(&key, id, entry(id), &[command("theirs")]).await.unwrap(), Created::New(_)));

    // Eight at once with a new key: one creates, seven get its record.
    let key = IdempotencyKey { key: "send-2".into(), request: "digest-c".into() };
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (store, key) = (store.clone(), key.clone());
            let id = Uuid::now_v7();
            let data = entry(id);
            tokio::spawn(async move { store.create_once_with_commands(&key, id, data, &[command("racing")]).await.unwrap() })
        })
        .collect();
    let mut created = Vec::new();
    let mut earlier = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Created::New(record) => created.push(record.id),
            Created::Earlier(record) => earlier.push(record.id),
        }
    }
    assert_eq!(created.len(), 1, "one request created: {created:?}");
    assert!(earlier.iter().all(|id| *id == created[0]), "the others got its record: {earlier:?}");

    let labels: Vec<Value> = pending_envelopes(&store).await.into_iter().map(|e| e["data"]["label"].clone()).collect();
    assert_eq!(labels, [json!("send"), json!("theirs"), json!("racing")], "one command per record created");
    assert_eq!(every_entry(&store).await.len(), 3);

    // Pruned, every key is forgotten: the first one makes a new record again.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert_eq!(store.prune_idempotency_keys(chrono::Duration::zero()).await.unwrap(), 3);
    assert_eq!(store.created_with_key::<CommsEntry>(&key).await.unwrap(), None);
    let again = Uuid::now_v7();
    assert!(matches!(store.create_once_with_commands(&key, again, entry(again), &[command("new")]).await.unwrap(), Created::New(_)));
}

// ---------------------------------------------------------------------------------------------
// Delivery reports

async fn delivery_status_never_moves_back(db: &TestDb) {
    use DeliveryStatus::{Delivered, Failed, Read, Sent};
    let store = &db.store;
    let customer = create_customer(store, json!({"name": "Γιώργος"})).await;
    let sent = store.create(outbound(customer.id, CommsType::Email, at("2026-03-01T10:00:00Z"))).await.unwrap();
    let report = |status, reason: Option<&str>| {
        let reason = reason.map(str::to_owned);
        async move { store.record_delivery(Some(sent.id), None, status, reason).await.unwrap().entry().expect("the entry is known") }
    };
    let state = |r: &Record<CommsEntry>| (r.version, r.data.delivery_status, r.data.status_reason.clone());

    assert_eq!(state(&report(Sent, None).await), (2, Some(Sent), None));
    // Read overtakes delivered; the late delivered changes nothing, not even the version.
    assert_eq!(state(&report(Read, None).await), (3, Some(Read), None));
    assert_eq!(state(&report(Delivered, Some("late")).await), (3, Some(Read), None));
    assert_eq!(state(&report(Sent, None).await), (3, Some(Read), None));
    assert_eq!(state(&report(Read, None).await), (3, Some(Read), None));
    assert_eq!(state(&entry_of(store, sent.id).await), (3, Some(Read), None));
    // Failed is final: nothing moves it, not even another failure.
    assert_eq!(state(&report(Failed, Some("bounced")).await), (4, Some(Failed), Some("bounced".into())));
    assert_eq!(state(&report(Failed, Some("again")).await), (4, Some(Failed), Some("bounced".into())));
    assert_eq!(state(&report(Read, None).await), (4, Some(Failed), Some("bounced".into())));
    assert_eq!(state(&entry_of(store, sent.id).await), (4, Some(Failed), Some("bounced".into())));

    // A failure before anything else.
    let other = store.create(outbound(customer.id, CommsType::Sms, at("2026-03-01T10:00:00Z"))).await.unwrap();
    let failed = store.record_delivery(Some(other.id), None, Failed, Some("no such number".into())).await.unwrap().entry().unwrap();
    assert_eq!(failed.data.delivery_status, Some(Failed));
    let after = store.record_delivery(Some(other.id), None, Delivered, None).await.unwrap().entry().unwrap();
    assert_eq!(state(&after), (2, Some(Failed), Some("no such number".into())));

    // The rest of the entry is untouched.
    let mut expected = sent.data.clone();
    expected.delivery_status = Some(Failed);
    expected.status_reason = Some("bounced".into());
    assert_eq!(entry_of(store, sent.id).await.data, expected);
}

async fn delivery_reports_find_their_entry(db: &TestDb) {
    use DeliveryStatus::{Delivered, Read, Sent};
    let store = &db.store;
    let customer = create_customer(store, json!({"name": "Γιώργος"})).await;
    let sent = store.create(outbound(customer.id, CommsType::Whatsapp, at("2026-03-01T10:00:00Z"))).await.unwrap();

    // The first report that names a channel id gives the entry its id...
    let first = store.record_delivery(Some(sent.id), Some(("whatsapp", "wamid.1")), Sent, None).await.unwrap().entry().unwrap();
    assert_eq!(first.data.ext_message_id.as_deref(), Some("wamid.1"));
    // ... by which later reports find it.
    let by_key = store.record_delivery(None, Some(("whatsapp", "wamid.1")), Delivered, None).await.unwrap().entry().unwrap();
    assert_eq!((by_key.id, by_key.data.delivery_status), (sent.id, Some(Delivered)));
    // A later report naming another id does not replace it.
    let other_id = store.record_delivery(Some(sent.id), Some(("whatsapp", "wamid.2")), Read, None).await.unwrap().entry().unwrap();
    assert_eq!((other_id.data.ext_message_id.as_deref(), other_id.data.delivery_status), (Some("wamid.1"), Some(Read)));
    assert_eq!(store.record_delivery(None, Some(("whatsapp", "wamid.2")), Read, None).await.unwrap(), DeliveryRecorded::Held);
    // A report that changes nothing but names the id it already has writes nothing.
    let same = store.record_delivery(Some(sent.id), Some(("whatsapp", "wamid.1")), Sent, None).await.unwrap().entry().unwrap();
    assert_eq!(same.version, other_id.version);
    // An inbound reply finds the thread through that id.
    let reply = InboundEntry { answers: vec![ext_key("whatsapp", "wamid.1")], ..inbound("wamid.in", "ev-in", Some(customer.id)) };
    let mut reply = reply;
    reply.entry.kind = CommsType::Whatsapp;
    store.log_inbound(vec![reply.clone()]).await.unwrap();
    assert_eq!(entry_of(store, reply.id).await.data.thread_id, Some(sent.id));

    // A channel id no entry has is held (the channel is part of the key); an unknown entry id
    // or no key at all is unknown.
    assert_eq!(store.record_delivery(None, Some(("sms", "wamid.1")), Read, None).await.unwrap(), DeliveryRecorded::Held);
    assert_eq!(store.record_delivery(None, Some(("whatsapp", "nope")), Read, None).await.unwrap(), DeliveryRecorded::Held);
    assert_eq!(store.record_delivery(Some(Uuid::now_v7()), None, Read, None).await.unwrap(), DeliveryRecorded::Unknown);
    assert_eq!(store.record_delivery(None, None, Read, None).await.unwrap(), DeliveryRecorded::Unknown);

    // Only outbound entries have a delivery: a report naming an inbound message changes nothing.
    let incoming = inbound("<in@x>", "ev-in-mail", Some(customer.id));
    store.log_inbound(vec![incoming.clone()]).await.unwrap();
    assert_eq!(store.record_delivery(Some(incoming.id), None, Read, None).await.unwrap(), DeliveryRecorded::Unknown);
    assert_eq!(store.record_delivery(None, Some(("email", "<in@x>")), Read, None).await.unwrap(), DeliveryRecorded::Unknown);
    let unchanged = entry_of(store, incoming.id).await;
    assert_eq!((unchanged.version, unchanged.data.delivery_status), (1, None));
}

/// A report that overtakes the one naming its entry ("delivered" before "sent") is held, and
/// applied when the entry gets its channel id; held reports of ids no entry ever gets expire.
async fn early_delivery_reports_are_held(db: &TestDb) {
    use DeliveryStatus::{Delivered, Failed, Read, Sent};
    let store = &db.store;
    let customer = create_customer(store, json!({"name": "Γιώργος"})).await;
    let sent = store.create(outbound(customer.id, CommsType::Whatsapp, at("2026-03-01T10:00:00Z"))).await.unwrap();

    // Read and delivered arrive first, naming only the channel id; delivered twice.
    for status in [Read, Delivered, Delivered] {
        assert_eq!(store.record_delivery(None, Some(("whatsapp", "wamid.early")), status, None).await.unwrap(), DeliveryRecorded::Held);
    }
    assert_eq!(entry_of(store, sent.id).await.version, 1, "nothing written to the entry yet");
    // "sent" names the entry and the id: the held reports apply in the same write.
    let entry = store.record_delivery(Some(sent.id), Some(("whatsapp", "wamid.early")), Sent, None).await.unwrap().entry().unwrap();
    assert_eq!((entry.version, entry.data.delivery_status), (2, Some(Read)));
    assert_eq!(entry.data.ext_message_id.as_deref(), Some("wamid.early"));
    // They were used up: the same id reported again finds the entry, not a held report.
    let again = store.record_delivery(None, Some(("whatsapp", "wamid.early")), Delivered, None).await.unwrap().entry().unwrap();
    assert_eq!((again.version, again.data.delivery_status), (2, Some(Read)));

    // A held failure is final and keeps its reason, whatever comes with the "sent".
    let other = store.create(outbound(customer.id, CommsType::Whatsapp, at("2026-03-01T10:00:00Z"))).await.unwrap();
    let failed = store.record_delivery(None, Some(("whatsapp", "wamid.failed")), Failed, Some("131026: not on WhatsApp".into())).await;
    assert_eq!(failed.unwrap(), DeliveryRecorded::Held);
    let entry = store.record_delivery(Some(other.id), Some(("whatsapp", "wamid.failed")), Sent, None).await.unwrap().entry().unwrap();
    assert_eq!((entry.data.delivery_status, entry.data.status_reason.as_deref()), (Some(Failed), Some("131026: not on WhatsApp")));

    // A held report is for its channel only, and for an entry that has no id yet.
    let third = store.create(outbound(customer.id, CommsType::Sms, at("2026-03-01T10:00:00Z"))).await.unwrap();
    assert_eq!(store.record_delivery(None, Some(("whatsapp", "id.3")), Read, None).await.unwrap(), DeliveryRecorded::Held);
    let entry = store.record_delivery(Some(third.id), Some(("sms", "id.3")), Sent, None).await.unwrap().entry().unwrap();
    assert_eq!(entry.data.delivery_status, Some(Sent));

    // A report racing the "sent" that gives the entry its id is never lost between them.
    let held_before = store.held_delivery_reports().await.unwrap();
    assert_eq!(held_before, 1, "whatsapp:id.3");
    for round in 0..20 {
        let entry = store.create(outbound(customer.id, CommsType::Whatsapp, at("2026-03-01T10:00:00Z"))).await.unwrap();
        let key = format!("wamid.race.{round}");
        let (read, sent) = tokio::join!(
            store.record_delivery(None, Some(("whatsapp", key.as_str())), Read, None),
            store.record_delivery(Some(entry.id), Some(("whatsapp", key.as_str())), Sent, None),
        );
        assert!(matches!(read.unwrap(), DeliveryRecorded::Held | DeliveryRecorded::Entry(_)));
        assert!(sent.unwrap().entry().is_some());
        assert_eq!(entry_of(store, entry.id).await.data.delivery_status, Some(Read), "round {round}");
    }
    assert_eq!(store.held_delivery_reports().await.unwrap(), held_before, "every held report of the race was applied");

    // A report older than HELD_REPORTS_KEPT is not applied, and is dropped when the next one is
    // held.
    let stale = Utc::now() - HELD_REPORTS_KEPT - Duration::hours(1);
    store
        .execute_raw(&format!(
            "INSERT INTO held_delivery_reports (ext_key, status, reason, received_at) VALUES ('whatsapp:wamid.stale', 'read', NULL, '{}')",
            stale.format("%Y-%m-%dT%H:%M:%S%.6fZ")
        ))
        .await
        .unwrap();
    let fourth = store.create(outbound(customer.id, CommsType::Whatsapp, at("2026-03-01T10:00:00Z"))).await.unwrap();
    let entry = store.record_delivery(Some(fourth.id), Some(("whatsapp", "wamid.stale")), Sent, None).await.unwrap().entry().unwrap();
    assert_eq!(entry.data.delivery_status, Some(Sent), "the stale report was not applied");
    let with_stale = store.held_delivery_reports().await.unwrap();
    assert_eq!(store.record_delivery(None, Some(("whatsapp", "wamid.new")), Read, None).await.unwrap(), DeliveryRecorded::Held);
    assert_eq!(store.held_delivery_reports().await.unwrap(), with_stale, "one held, the stale one dropped");
}

/// A channel message id too long for a unique index entry on PostgreSQL is keyed by its hash:
/// logged, deduplicated, threaded and found by delivery reports alike on both backends.
async fn long_channel_message_ids(db: &TestDb) {
    let store = &db.store;
    let customer = create_customer(store, json!({"name": "Γιώργος"})).await;
    let long_id = format!("<{}@example.com>", "ω".repeat(4_000));
    assert!(ext_key("email", &long_id).len() < 100);
    assert_ne!(ext_key("email", &long_id), ext_key("email", &format!("{long_id}x")));
    assert_eq!(ext_key("email", "<short@x>"), "email:<short@x>");
    let item = inbound(&long_id, "ev-long", Some(customer.id));
    assert_eq!(store.log_inbound(vec![item.clone()]).await.unwrap(), vec![Logged::Created(item.id)]);
    // The same message again (another event id) is a duplicate.
    let again = inbound(&long_id, "ev-long-2", Some(customer.id));
    assert_eq!(store.log_inbound(vec![again]).await.unwrap(), vec![Logged::Duplicate(item.id)]);
    assert_eq!(entry_of(store, item.id).await.data.ext_message_id.as_deref(), Some(long_id.as_str()));
    // A reply to it finds the thread.
    let reply = replying(inbound("<reply@x>", "ev-reply", Some(customer.id)), &[&long_id]);
    store.log_inbound(vec![reply.clone()]).await.unwrap();
    assert_eq!(entry_of(store, reply.id).await.data.thread_id, Some(item.id));
    // An entry logged before long ids were hashed (its key is the id itself; PostgreSQL took
    // those up to ~2.7 KB) is re-keyed by the migration step, so its redelivery stays a duplicate.
    let legacy_id = format!("<{}@legacy.example.com>", "a".repeat(1_000));
    let legacy = inbound(&legacy_id, "ev-legacy", Some(customer.id));
    store.log_inbound(vec![legacy.clone()]).await.unwrap();
    store.execute_raw(&format!("UPDATE comms_log SET ext_key = 'email:{legacy_id}' WHERE id = '{}'", legacy.id)).await.unwrap();
    store.migrate().await.unwrap();
    let redelivered = inbound(&legacy_id, "ev-legacy-2", Some(customer.id));
    assert_eq!(store.log_inbound(vec![redelivered]).await.unwrap(), vec![Logged::Duplicate(legacy.id)]);
    // One logged again under the new key before the step ran stays as it is: migrate still
    // succeeds (the server starts), and the two entries are left for a user to merge.
    let twice_id = format!("<{}@twice.example.com>", "b".repeat(1_000));
    let first = inbound(&twice_id, "ev-twice-1", Some(customer.id));
    store.log_inbound(vec![first.clone()]).await.unwrap();
    store.execute_raw(&format!("UPDATE comms_log SET ext_key = 'email:{twice_id}' WHERE id = '{}'", first.id)).await.unwrap();
    let second = inbound(&twice_id, "ev-twice-2", Some(customer.id));
    assert_eq!(store.log_inbound(vec![second.clone()]).await.unwrap(), vec![Logged::Created(second.id)]);
    store.migrate().await.expect("migrate succeeds");
    let third = inbound(&twice_id, "ev-twice-3", Some(customer.id));
    assert_eq!(store.log_inbound(vec![third]).await.unwrap(), vec![Logged::Duplicate(second.id)]);
    assert_eq!(entry_of(store, first.id).await.data.ext_message_id.as_deref(), Some(twice_id.as_str()));

    // An outbound entry with a long channel id gets its reports.
    let sent = store.create(outbound(customer.id, CommsType::Whatsapp, at("2026-03-01T10:00:00Z"))).await.unwrap();
    let long_wamid = "wamid.".to_owned() + &"A".repeat(3_000);
    store.record_delivery(Some(sent.id), Some(("whatsapp", &long_wamid)), DeliveryStatus::Sent, None).await.unwrap();
    let read = store.record_delivery(None, Some(("whatsapp", &long_wamid)), DeliveryStatus::Read, None).await.unwrap().entry().unwrap();
    assert_eq!((read.id, read.data.delivery_status), (sent.id, Some(DeliveryStatus::Read)));
}

/// Reports for one entry arriving together on several consumers: none is lost, and the result
/// is the furthest state whatever the order.
async fn concurrent_delivery_reports(db: &TestDb) {
    use DeliveryStatus::{Delivered, Read, Sent};
    let store = &db.store;
    let customer = create_customer(store, json!({"name": "Γιώργος"})).await;
    for round in 0..10 {
        let sent = store.create(outbound(customer.id, CommsType::Email, at("2026-03-01T10:00:00Z"))).await.unwrap();
        let key = format!("<crm.{round}@x>");
        let (a, b, c) = tokio::join!(
            store.record_delivery(Some(sent.id), Some(("email", key.as_str())), Sent, None),
            store.record_delivery(Some(sent.id), Some(("email", key.as_str())), Read, None),
            store.record_delivery(Some(sent.id), Some(("email", key.as_str())), Delivered, None),
        );
        for result in [a, b, c] {
            assert!(result.unwrap().entry().is_some());
        }
        let last = entry_of(store, sent.id).await;
        assert_eq!(last.data.delivery_status, Some(Read), "round {round}");
        assert_eq!(last.data.ext_message_id.as_deref(), Some(key.as_str()));
        assert!((2..=4).contains(&last.version), "round {round}: version {}", last.version);
    }
}

// ---------------------------------------------------------------------------------------------
// File-store results

async fn file_results_update_media_and_attachment(db: &TestDb) {
    let store = &db.store;
    let customer = create_customer(store, json!({"name": "Γιώργος"})).await;
    let item = with_file(with_file(inbound("<files@x>", "ev-files", Some(customer.id)), "a.jpg"), "b.jpg");
    store.log_inbound(vec![item.clone()]).await.unwrap();
    let (a, b) = (item.media[0].0, item.media[1].0);

    let pending = store.get::<Media>(a, false).await.unwrap();
    assert_eq!(
        (pending.data.status, pending.data.nextcloud_path.as_deref(), pending.data.size, pending.data.sha256.clone()),
        (MediaStatus::Pending, Some("customers/x/1-a.jpg"), Some(3), Some(sha256_hex(FILE))),
        "a pending record keeps where its file goes and what it is"
    );
    let stored = FileStored::Stored { path: "customers/x/1-a.jpg".into(), size: 3, sha256: sha256_hex(FILE) };
    let media_a = store.record_file_result(a, stored.clone()).await.unwrap().unwrap();
    assert_eq!(media_a.version, 2);
    assert_eq!(
        (media_a.data.status, media_a.data.nextcloud_path.as_deref(), media_a.data.size, media_a.data.sha256.clone()),
        (MediaStatus::Stored, Some("customers/x/1-a.jpg"), Some(3), Some(sha256_hex(FILE)))
    );
    assert_eq!(store.get::<Media>(a, false).await.unwrap(), media_a);
    let logged = entry_of(store, item.id).await;
    assert_eq!(logged.version, 2);
    assert_eq!(logged.data.attachments[0].nextcloud_path.as_deref(), Some("customers/x/1-a.jpg"));
    assert_eq!(logged.data.attachments[0].refused, None);
    assert_eq!(logged.data.attachments[1], item.entry.attachments[1], "the other attachment is untouched");

    // The same report again (a redelivery) writes nothing; a late failure of a stored file
    // neither.
    assert_eq!(store.record_file_result(a, stored.clone()).await.unwrap().unwrap().version, 2);
    let late = store.record_file_result(a, FileStored::Failed { reason: "timeout".into(), path: None }).await.unwrap().unwrap();
    assert_eq!((late.version, late.data.status), (2, MediaStatus::Stored));
    assert_eq!(entry_of(store, item.id).await.version, 2);

    // A report of another file (a forged event, a dead letter replayed with changed data) is a
    // conflict and changes nothing, before or after the file is stored.
    let elsewhere = FileStored::Stored { path: "customers/other/1-secret.pdf".into(), size: 3, sha256: sha256_hex(FILE) };
    let other_bytes = FileStored::Stored { path: "customers/x/2-b.jpg".into(), size: 5, sha256: sha256_hex(b"other") };
    let failed_elsewhere = FileStored::Failed { reason: "quota".into(), path: Some("customers/other/1-secret.pdf".into()) };
    for (id, report) in [(a, &elsewhere), (b, &elsewhere), (b, &other_bytes), (b, &failed_elsewhere)] {
        let before = store.get::<Media>(id, false).await.unwrap();
        assert_conflict(store.record_file_result(id, report.clone()).await, Some("/path"));
        assert_eq!(store.get::<Media>(id, false).await.unwrap(), before, "{report:?}");
    }
    assert_eq!(entry_of(store, item.id).await.version, 2);

    // A failure is recorded on both.
    let failed = store
        .record_file_result(b, FileStored::Failed { reason: "quota".into(), path: Some("customers/x/2-b.jpg".into()) })
        .await
        .unwrap()
        .unwrap();
    assert_eq!((failed.data.status, failed.data.status_reason.as_deref()), (MediaStatus::Failed, Some("quota")));
    let logged = entry_of(store, item.id).await;
    assert_eq!(logged.data.attachments[1].refused.as_deref(), Some("quota"));
    assert_eq!(logged.data.attachments[0].nextcloud_path.as_deref(), Some("customers/x/1-a.jpg"));
    // A retry that stores it clears the failure.
    let retried = store
        .record_file_result(b, FileStored::Stored { path: "customers/x/2-b.jpg".into(), size: 3, sha256: sha256_hex(FILE) })
        .await
        .unwrap()
        .unwrap();
    assert_eq!((retried.data.status, retried.data.status_reason.clone()), (MediaStatus::Stored, None));
    let logged = entry_of(store, item.id).await;
    assert_eq!(
        (logged.data.attachments[1].nextcloud_path.as_deref(), logged.data.attachments[1].refused.as_deref()),
        (Some("customers/x/2-b.jpg"), None)
    );

    // A record of a file stored elsewhere asked the file store for nothing.
    let external = store.create(media(Some(customer.id), "elsewhere.jpg")).await.unwrap();
    for report in [stored.clone(), FileStored::Failed { reason: "quota".into(), path: None }] {
        assert_conflict(store.record_file_result(external.id, report).await, Some("/path"));
    }
    assert_eq!(store.get::<Media>(external.id, false).await.unwrap(), external);

    // Media without an entry, pending without a path (as written before records kept theirs):
    // any report is taken.
    let lone =
        store.create(Media { status: MediaStatus::Pending, nextcloud_path: None, ..media(Some(customer.id), "lone.jpg") }).await.unwrap();
    let shouting = FileStored::Stored { path: "customers/x/1-a.jpg".into(), size: 3, sha256: sha256_hex(FILE).to_uppercase() };
    let done = store.record_file_result(lone.id, shouting).await.unwrap().unwrap();
    assert_eq!(done.data.status, MediaStatus::Stored);
    assert_eq!(done.data.sha256, Some(sha256_hex(FILE)), "kept in lower case, as downloads compare it");

    // Unknown and deleted media are ignored.
    assert!(store.record_file_result(Uuid::now_v7(), stored.clone()).await.unwrap().is_none());
    let gone =
        store.create(Media { status: MediaStatus::Pending, nextcloud_path: None, ..media(Some(customer.id), "gone.jpg") }).await.unwrap();
    assert_conflict(store.delete::<Media>(gone.id, None).await, Some("/status"));
    store.record_file_result(gone.id, FileStored::Failed { reason: "disk full".into(), path: None }).await.unwrap().unwrap();
    let deleted = store.delete::<Media>(gone.id, None).await.unwrap();
    assert!(store.record_file_result(gone.id, stored).await.unwrap().is_none(), "a report for deleted media is ignored");
    assert_eq!(store.get::<Media>(gone.id, true).await.unwrap(), deleted);
}

// ---------------------------------------------------------------------------------------------
// The unmatched inbox

async fn assigning_an_unmatched_entry(db: &TestDb) {
    let actor = user_actor();
    let store = &db.store.acting_as(actor.clone());
    let customer =
        create_customer(store, json!({"name": "Πάτερ Νικόλαος", "contacts": [{"type": "email", "value": "known@naos.gr"}]})).await;
    let from = |item: InboundEntry, value: &str, name: Option<&str>| {
        let mut item = item;
        item.entry.channel_address = Some(ChannelAddress { name: name.map(str::to_owned), ..email_address(value) });
        item
    };
    let first = from(inbound("<u1@x>", "ev-u1", None), "Stranger@Example.com", Some("Ξένος"));
    // Same sender, typed differently: the normalised address is what counts.
    let second = from(inbound("<u2@x>", "ev-u2", None), "STRANGER@example.com", None);
    let other_sender = from(inbound("<u3@x>", "ev-u3", None), "someone@else.gr", None);
    let dismissed = from(inbound("<u4@x>", "ev-u4", None), "stranger@example.com", None);
    let deleted = from(inbound("<u5@x>", "ev-u5", None), "stranger@example.com", None);
    let matched = from(inbound("<u6@x>", "ev-u6", Some(customer.id)), "stranger@example.com", None);
    let mut no_address = inbound("<u7@x>", "ev-u7", None);
    no_address.entry.channel_address = None;
    store
        .log_inbound(vec![
            first.clone(),
            second.clone(),
            other_sender.clone(),
            dismissed.clone(),
            deleted.clone(),
            matched.clone(),
            no_address.clone(),
        ])
        .await
        .unwrap();
    store.dismiss_unmatched(dismissed.id, None).await.unwrap();
    store.delete::<CommsEntry>(deleted.id, None).await.unwrap();
    let mut untouched = Vec::new();
    for id in [other_sender.id, dismissed.id, deleted.id, matched.id, no_address.id] {
        untouched.push(entry_of(store, id).await);
    }

    let assigned = store.assign_unmatched(first.id, customer.id, Some(1)).await.unwrap();
    assert!(assigned.contact_added);
    assert_eq!(assigned.also_assigned, 1);
    assert_eq!(assigned.entry.version, 2);
    assert_eq!(entry_of(store, first.id).await, assigned.entry);
    for id in [first.id, second.id] {
        let got = entry_of(store, id).await;
        assert_eq!((got.data.customer_id, got.data.triage), (Some(customer.id), Some(Triage::Assigned)), "{id}");
        let matched = got.data.matched.expect("match info");
        let by = format!("user:{}", actor.id.expect("a user actor"));
        assert_eq!((matched.confidence, matched.reason.as_str(), matched.matcher.as_str()), (100, "assigned by a user", by.as_str()));
    }
    for before in &untouched {
        assert_eq!(&entry_of(store, before.id).await, before, "{} must not be assigned", before.id);
    }

    // The sender's address is now one of the customer's contacts, and finds them.
    let now = store.get::<Customer>(customer.id, false).await.unwrap();
    assert_eq!(now.version, 2);
    let added = now.data.contacts.last().unwrap();
    assert_eq!(
        (added.kind, added.value.as_str(), added.normalized.as_str(), added.primary),
        (ContactType::Email, "Stranger@Example.com", "stranger@example.com", false)
    );
    assert_eq!(now.data.contacts.len(), 2);
    assert_eq!(
        store.customers_by_keys(&[("email", "stranger@example.com")]).await.unwrap(),
        vec![("email".to_owned(), "stranger@example.com".to_owned(), customer.id)]
    );
    let search = ListQuery::<CustomerFilter> { terms: vec!["stranger".into()], ..Default::default() };
    assert_eq!(ids(&store.list::<Customer>(&search).await.unwrap().items), vec![customer.id]);

    // Audited: the customer's new contact, and each entry assigned, by the acting user.
    let audit = |id| async move { store.audit_trail(&AuditQuery { resource_id: Some(id), ..Default::default() }).await.unwrap().items };
    let customer_audit = audit(customer.id).await;
    assert_eq!(customer_audit.iter().map(|a| a.action.as_str()).collect::<Vec<_>>(), ["update", "create"]);
    assert!(customer_audit[0].changes.iter().any(|c| c.pointer.starts_with("/contacts")));
    for id in [first.id, second.id] {
        let trail = audit(id).await;
        assert_eq!(trail.len(), 1, "{id}");
        assert_eq!((trail[0].action.as_str(), trail[0].resource.as_str(), trail[0].actor_id), ("assign", "comms_log", actor.id));
        assert!(trail[0].changes.iter().any(|c| c.pointer == "/triage"));
    }

    // The address is known now: assigning another entry from it adds no contact. An entry
    // without an address is assigned alone.
    let later = from(inbound("<u8@x>", "ev-u8", None), "stranger@example.com", None);
    store.log_inbound(vec![later.clone()]).await.unwrap();
    let again = store.assign_unmatched(later.id, customer.id, None).await.unwrap();
    assert!(!again.contact_added);
    assert_eq!(again.also_assigned, 0);
    assert_eq!(store.get::<Customer>(customer.id, false).await.unwrap().version, 2, "no change to the customer");
    let alone = store.assign_unmatched(no_address.id, customer.id, None).await.unwrap();
    assert_eq!((alone.contact_added, alone.also_assigned), (false, 0));
    assert_eq!(store.get::<Customer>(customer.id, false).await.unwrap().version, 2);
    // A known address, as typed differently, is not added twice.
    let known = from(inbound("<u9@x>", "ev-u9", None), "KNOWN@naos.gr", None);
    store.log_inbound(vec![known.clone()]).await.unwrap();
    assert!(!store.assign_unmatched(known.id, customer.id, None).await.unwrap().contact_added);
    assert_eq!(store.get::<Customer>(customer.id, false).await.unwrap().data.contacts.len(), 2);

    // The inbox is empty but for the other sender.
    let inbox =
        timeline(store, ListQuery { filter: CommsFilter { triage: Some(Triage::Unmatched), ..Default::default() }, ..Default::default() })
            .await;
    assert_eq!(ids(&inbox), vec![other_sender.id]);
}

/// The media records of an assigned entry, and of the entries assigned with it, become the
/// customer's: the column (filters, access) and the document (what is read back).
async fn assigning_gives_the_files_to_the_customer(db: &TestDb) {
    let actor = user_actor();
    let store = &db.store.acting_as(actor.clone());
    let customer = create_customer(store, json!({"name": "Πάτερ Νικόλαος"})).await;
    let from = |item: InboundEntry, value: &str| {
        let mut item = item;
        item.entry.channel_address = Some(email_address(value));
        item
    };
    let first = with_file(with_file(from(inbound("<m1@x>", "ev-m1", None), "stranger@example.com"), "a.jpg"), "b.jpg");
    let sibling = with_file(from(inbound("<m2@x>", "ev-m2", None), "Stranger@Example.com"), "c.jpg");
    let other = with_file(from(inbound("<m3@x>", "ev-m3", None), "someone@else.gr"), "d.jpg");
    store.log_inbound(vec![first.clone(), sibling.clone(), other.clone()]).await.unwrap();
    // One file is stored already, one was deleted: both go with the entry.
    let stored = FileStored::Stored { path: "inbox/x/1-a.jpg".into(), size: 3, sha256: sha256_hex(FILE) };
    store.record_file_result(first.media[0].0, stored).await.unwrap().unwrap();
    store.record_file_result(first.media[1].0, FileStored::Failed { reason: "disk full".into(), path: None }).await.unwrap().unwrap();
    store.delete::<Media>(first.media[1].0, None).await.unwrap();

    let assigned = store.assign_unmatched(first.id, customer.id, None).await.unwrap();
    assert_eq!(assigned.also_assigned, 1);
    let theirs = [first.media[0].0, first.media[1].0, sibling.media[0].0];
    for id in theirs {
        let media = store.get::<Media>(id, true).await.unwrap();
        assert_eq!(media.data.customer_id, Some(customer.id), "{id}");
        let trail = store.audit_trail(&AuditQuery { resource_id: Some(id), ..Default::default() }).await.unwrap().items;
        assert_eq!((trail[0].action.as_str(), trail[0].resource.as_str(), trail[0].actor_id), ("assign", "media", actor.id));
    }
    let stored = store.get::<Media>(first.media[0].0, false).await.unwrap();
    assert_eq!((stored.data.status, stored.data.nextcloud_path.as_deref()), (MediaStatus::Stored, Some("inbox/x/1-a.jpg")));
    assert_eq!(store.get::<Media>(other.media[0].0, false).await.unwrap().data.customer_id, None, "another sender's file stays");

    // Listed under the customer (the column), deleted ones only when asked.
    let listed = |include_deleted| async move {
        let filter = MediaFilter { customer_id: Some(customer.id), ..Default::default() };
        let query = ListQuery { filter, include_deleted, ..Default::default() };
        set(ids(&store.list::<Media>(&query).await.unwrap().items))
    };
    assert_eq!(listed(false).await, set([first.media[0].0, sibling.media[0].0]));
    assert_eq!(listed(true).await, set(theirs));

    // A file result after the assignment keeps the customer.
    let late = FileStored::Stored { path: "inbox/x/1-c.jpg".into(), size: 3, sha256: sha256_hex(FILE) };
    let media = store.record_file_result(sibling.media[0].0, late).await.unwrap().unwrap();
    assert_eq!((media.data.customer_id, media.data.status), (Some(customer.id), MediaStatus::Stored));
}

/// A sender with more unmatched messages, each with a file, than one query binds at a time: one
/// assignment takes them all, and their files.
async fn assigning_a_sender_with_thousands_of_messages(db: &TestDb) {
    let store = &db.store;
    let customer = create_customer(store, json!({"name": "Ιερά Μονή Αγίου Παντελεήμονος"})).await;
    let from_noreply = |i: usize| {
        let mut item = inbound(&format!("<m{i}@bells.example>"), &format!("ev-{i}"), None);
        item.entry.channel_address = Some(email_address("noreply@bells.example"));
        with_file(item, "receipt.pdf")
    };
    let items: Vec<InboundEntry> = (0..2_500).map(from_noreply).collect();
    for chunk in items.chunks(500) {
        store.log_inbound(chunk.to_vec()).await.unwrap();
    }
    let assigned = store.assign_unmatched(items[0].id, customer.id, None).await.unwrap();
    assert_eq!(assigned.also_assigned, 2_499);
    let theirs = MediaFilter { customer_id: Some(customer.id), ..Default::default() };
    assert_eq!(store.count::<Media>(&theirs).await.unwrap(), 2_500);
    let inbox = CommsFilter { triage: Some(Triage::Unmatched), ..Default::default() };
    assert_eq!(store.count::<CommsEntry>(&inbox).await.unwrap(), 0);
}

async fn assigning_by_phone(db: &TestDb) {
    let store = &db.store;
    let customer = create_customer(store, json!({"name": "Μαρία", "contacts": [{"type": "whatsapp", "value": "+30 697 000 0001"}]})).await;
    let other = create_customer(store, json!({"name": "Γιάννης"})).await;
    let phone = |value: &str, normalized: &str| ChannelAddress {
        kind: AddressKind::Phone,
        value: value.into(),
        normalized: Some(normalized.into()),
        name: None,
    };
    let mut call = inbound("call-1", "ev-c1", None);
    call.entry.kind = CommsType::Call;
    call.entry.channel_address = Some(phone("6941234567", "+306941234567"));
    let mut sms = inbound("sms-1", "ev-s1", None);
    sms.entry.kind = CommsType::Sms;
    sms.entry.channel_address = Some(phone("+30 694 123 4567", "+306941234567"));
    let mut known = inbound("wa-1", "ev-w1", None);
    known.entry.kind = CommsType::Whatsapp;
    known.entry.channel_address = Some(phone("306970000001", "+306970000001"));
    store.log_inbound(vec![call.clone(), sms.clone(), known.clone()]).await.unwrap();

    let assigned = store.assign_unmatched(call.id, other.id, None).await.unwrap();
    assert_eq!(
        (assigned.contact_added, assigned.also_assigned),
        (true, 1),
        "the text from the same number goes along, whatever the channel"
    );
    assert_eq!(entry_of(store, sms.id).await.data.customer_id, Some(other.id));
    let contact = store.get::<Customer>(other.id, false).await.unwrap().data.contacts.pop().unwrap();
    assert_eq!((contact.kind, contact.normalized.as_str()), (ContactType::Phone, "+306941234567"));
    assert_eq!(store.customers_by_keys(&[("phone", "+306941234567")]).await.unwrap().len(), 1);

    // A WhatsApp contact already holds the number: nothing is added.
    let assigned = store.assign_unmatched(known.id, customer.id, None).await.unwrap();
    assert!(!assigned.contact_added);
    assert_eq!(store.get::<Customer>(customer.id, false).await.unwrap().version, 1);
}

async fn triage_refusals(db: &TestDb) {
    let store = &db.store;
    let customer = create_customer(store, json!({"name": "Γιώργος"})).await;
    let gone = create_customer(store, json!({"name": "Διαγραμμένος"})).await;
    store.delete::<Customer>(gone.id, None).await.unwrap();
    let unmatched = inbound("<t1@x>", "ev-t1", None);
    let matched = inbound("<t2@x>", "ev-t2", Some(customer.id));
    store.log_inbound(vec![unmatched.clone(), matched.clone()]).await.unwrap();
    let note = store
        .create(
            CommsInput { customer_id: Some(customer.id), kind: Some(CommsType::Note), body: Some("x".into()), ..Default::default() }
                .parse_new("user:x".into(), Utc::now())
                .unwrap(),
        )
        .await
        .unwrap();

    // Not in the inbox: 409 on /triage, for assign and dismiss alike.
    assert_conflict(store.assign_unmatched(matched.id, customer.id, None).await.map(|a| a.entry), Some("/triage"));
    assert_conflict(store.assign_unmatched(note.id, customer.id, None).await.map(|a| a.entry), Some("/triage"));
    assert_conflict(store.dismiss_unmatched(matched.id, None).await, Some("/triage"));
    // Unknown entries; unknown and deleted customers; stale versions.
    assert_not_found(store.assign_unmatched(Uuid::now_v7(), customer.id, None).await.map(|a| a.entry));
    assert_not_found(store.dismiss_unmatched(Uuid::now_v7(), None).await);
    assert_invalid(store.assign_unmatched(unmatched.id, Uuid::now_v7(), None).await.map(|a| a.entry), "/customer_id");
    assert_invalid(store.assign_unmatched(unmatched.id, gone.id, None).await.map(|a| a.entry), "/customer_id");
    match store.assign_unmatched(unmatched.id, customer.id, Some(7)).await {
        Err(StoreError::VersionMismatch { current: 1 }) => {}
        other => panic!("expected a version mismatch, got {:?}", other.map(|a| a.entry)),
    }
    match store.dismiss_unmatched(unmatched.id, Some(2)).await {
        Err(StoreError::VersionMismatch { current: 1 }) => {}
        other => panic!("expected a version mismatch, got {other:?}"),
    }
    // None of it changed anything.
    assert_eq!(entry_of(store, unmatched.id).await.version, 1);
    assert_eq!(store.get::<Customer>(customer.id, false).await.unwrap().version, 1);

    // Once assigned, it is out of the inbox for good.
    store.assign_unmatched(unmatched.id, customer.id, Some(1)).await.unwrap();
    assert_conflict(store.assign_unmatched(unmatched.id, customer.id, None).await.map(|a| a.entry), Some("/triage"));
    assert_conflict(store.dismiss_unmatched(unmatched.id, None).await, Some("/triage"));
    // A deleted entry is not found.
    let deleted = inbound("<t3@x>", "ev-t3", None);
    store.log_inbound(vec![deleted.clone()]).await.unwrap();
    store.delete::<CommsEntry>(deleted.id, None).await.unwrap();
    assert_not_found(store.assign_unmatched(deleted.id, customer.id, None).await.map(|a| a.entry));
    assert_not_found(store.dismiss_unmatched(deleted.id, None).await);
}

async fn dismissing_an_unmatched_entry(db: &TestDb) {
    let actor = user_actor();
    let store = &db.store.acting_as(actor.clone());
    let customer = create_customer(store, json!({"name": "Γιώργος"})).await;
    let spam = inbound("<spam1@x>", "ev-s1", None);
    let more_spam = inbound("<spam2@x>", "ev-s2", None);
    store.log_inbound(vec![spam.clone(), more_spam.clone()]).await.unwrap();

    let dismissed = store.dismiss_unmatched(spam.id, Some(1)).await.unwrap();
    assert_eq!((dismissed.version, dismissed.data.triage, dismissed.data.customer_id), (2, Some(Triage::Dismissed), None));
    assert_eq!(entry_of(store, spam.id).await, dismissed);
    let mut expected = spam.entry.clone();
    expected.thread_id = Some(spam.id);
    expected.triage = Some(Triage::Dismissed);
    assert_eq!(dismissed.data, expected, "only the triage changes");
    // Only that one: the other message from the same sender stays in the inbox.
    assert_eq!(entry_of(store, more_spam.id).await.data.triage, Some(Triage::Unmatched));
    let trail = store.audit_trail(&AuditQuery { resource_id: Some(spam.id), ..Default::default() }).await.unwrap().items;
    assert_eq!(trail.len(), 1);
    assert_eq!((trail[0].action.as_str(), trail[0].actor_id), ("dismiss", actor.id));

    assert_conflict(store.dismiss_unmatched(spam.id, None).await, Some("/triage"));
    assert_conflict(store.assign_unmatched(spam.id, customer.id, None).await.map(|a| a.entry), Some("/triage"));
    // Assigning the other one does not pull the dismissed one back.
    let assigned = store.assign_unmatched(more_spam.id, customer.id, None).await.unwrap();
    assert_eq!(assigned.also_assigned, 0);
    assert_eq!(entry_of(store, spam.id).await, dismissed);
}

/// Users working the inbox at the same time: assignments of different senders' entries both
/// succeed (they must not wait on, or deadlock with, each other); the same entry assigned
/// twice at once is assigned once, and the other gets a conflict.
async fn concurrent_assignments(db: &TestDb) {
    let store = &db.store;
    let alice = create_customer(store, json!({"name": "Alice"})).await;
    let bob = create_customer(store, json!({"name": "Bob"})).await;
    for round in 0..8 {
        let from = |message: &str, sender: &str| {
            let mut item = inbound(&format!("<{message}-{round}@x>"), &format!("ev-{message}-{round}"), None);
            item.entry.channel_address = Some(email_address(&format!("{sender}-{round}@example.com")));
            item
        };
        let (a1, a2, b1, b2) = (from("a1", "a"), from("a2", "a"), from("b1", "b"), from("b2", "b"));
        store.log_inbound(vec![a1.clone(), a2.clone(), b1.clone(), b2.clone()]).await.unwrap();
        let (x, y) = tokio::join!(store.assign_unmatched(a1.id, alice.id, None), store.assign_unmatched(b1.id, bob.id, None));
        let x = x.unwrap_or_else(|e| panic!("round {round}: {e:?}"));
        let y = y.unwrap_or_else(|e| panic!("round {round}: {e:?}"));
        assert_eq!((x.also_assigned, y.also_assigned), (1, 1), "round {round}");
        assert_eq!(entry_of(store, a2.id).await.data.customer_id, Some(alice.id));
        assert_eq!(entry_of(store, b2.id).await.data.customer_id, Some(bob.id));

        let contested = from("c", "c");
        store.log_inbound(vec![contested.clone()]).await.unwrap();
        let (x, y) = tokio::join!(store.assign_unmatched(contested.id, alice.id, None), store.assign_unmatched(contested.id, bob.id, None));
        let winner = match (x, y) {
            (Ok(a), Err(StoreError::Conflict { pointer, .. })) if pointer.as_deref() == Some("/triage") => a,
            (Err(StoreError::Conflict { pointer, .. }), Ok(b)) if pointer.as_deref() == Some("/triage") => b,
            (x, y) => {
                panic!("round {round}: expected one assignment and one conflict, got {:?} / {:?}", x.map(|a| a.entry), y.map(|a| a.entry))
            }
        };
        let got = entry_of(store, contested.id).await;
        assert_eq!(got, winner.entry, "round {round}");
        assert_eq!(got.version, 2);

        // Two entries of one sender assigned at once, to the same customer and to two: no
        // deadlock or error, every entry assigned exactly once, by whichever got to it first.
        for (sender, first, second) in [("d", alice.id, alice.id), ("e", alice.id, bob.id)] {
            let (e1, e2, e3) =
                (from(&format!("{sender}1"), sender), from(&format!("{sender}2"), sender), from(&format!("{sender}3"), sender));
            store.log_inbound(vec![e1.clone(), e2.clone(), e3.clone()]).await.unwrap();
            let (x, y) = tokio::join!(store.assign_unmatched(e1.id, first, None), store.assign_unmatched(e2.id, second, None));
            let mut assigned = 0;
            for result in [x, y] {
                match result {
                    Ok(done) => assigned += 1 + done.also_assigned,
                    Err(StoreError::Conflict { pointer, .. }) if pointer.as_deref() == Some("/triage") => {}
                    Err(other) => panic!("round {round}, sender {sender}: {other:?}"),
                }
            }
            assert_eq!(assigned, 3, "round {round}, sender {sender}: every entry assigned once");
            for id in [e1.id, e2.id, e3.id] {
                let got = entry_of(store, id).await;
                assert_eq!((got.version, got.data.triage), (2, Some(Triage::Assigned)), "round {round}, sender {sender}");
                assert!(got.data.customer_id == Some(first) || got.data.customer_id == Some(second));
            }
        }
    }
    // Each customer got each of their senders' addresses exactly once.
    let alice_contacts = store.get::<Customer>(alice.id, false).await.unwrap().data.contacts;
    for round in 0..8 {
        let address = format!("d-{round}@example.com");
        assert_eq!(alice_contacts.iter().filter(|c| c.normalized == address).count(), 1, "{address}");
    }
    for (customer, sender) in [(alice.id, "a"), (bob.id, "b")] {
        let contacts = store.get::<Customer>(customer, false).await.unwrap().data.contacts;
        for round in 0..8 {
            let address = format!("{sender}-{round}@example.com");
            assert_eq!(contacts.iter().filter(|c| c.normalized == address).count(), 1, "{address}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Listing

async fn timeline_filters(db: &TestDb) {
    let store = &db.store;
    let agent = Uuid::now_v7();
    let mine = create_customer(store, json!({"name": "Δικός μου", "assigned_to": agent})).await;
    let theirs = create_customer(store, json!({"name": "Άλλου"})).await;
    let make = |customer: Uuid, kind, direction, at_text: &str, subject: &str| {
        let mut data = entry(kind, direction, at(at_text));
        data.customer_id = Some(customer);
        data.subject = Some(subject.into());
        data
    };
    let e1 = store.create(make(mine.id, CommsType::Email, Direction::Inbound, "2026-01-01T10:00:00Z", "Καμπάνες")).await.unwrap();
    let e2 = store.create(make(mine.id, CommsType::Call, Direction::Outbound, "2026-01-02T10:00:00Z", "Τηλέφωνο")).await.unwrap();
    let e3 =
        store.create(make(mine.id, CommsType::Note, Direction::Internal, "2026-01-03T10:00:00Z", "Σημείωση για καμπάνες")).await.unwrap();
    let e4 = store.create(make(theirs.id, CommsType::Email, Direction::Outbound, "2026-01-02T12:00:00Z", "Προσφορά")).await.unwrap();
    let e5 = store.create(make(theirs.id, CommsType::Email, Direction::Inbound, "2026-01-04T10:00:00Z", "Καμπάνα")).await.unwrap();
    let deleted = store.create(make(mine.id, CommsType::Email, Direction::Inbound, "2026-01-02T11:00:00Z", "Καμπάνες")).await.unwrap();
    store.delete::<CommsEntry>(deleted.id, None).await.unwrap();
    let unmatched = inbound("<un@x>", "ev-un", None);
    store.log_inbound(vec![unmatched.clone()]).await.unwrap();

    let list = |filter: CommsFilter| async move {
        let query =
            ListQuery { filter, sort: Some("occurred_at".into()), direction: SortDirection::Asc, limit: Some(2), ..Default::default() };
        ids(&timeline(store, query).await)
    };
    let all = CommsFilter::default();
    assert_eq!(list(all.clone()).await, vec![e1.id, e2.id, e4.id, e3.id, e5.id, unmatched.id]);
    assert_eq!(list(CommsFilter { customer_id: Some(mine.id), ..Default::default() }).await, vec![e1.id, e2.id, e3.id]);
    assert_eq!(list(CommsFilter { kind: Some(CommsType::Email), ..Default::default() }).await, vec![e1.id, e4.id, e5.id, unmatched.id]);
    assert_eq!(list(CommsFilter { direction: Some(Direction::Outbound), ..Default::default() }).await, vec![e2.id, e4.id]);
    assert_eq!(
        list(CommsFilter {
            kind: Some(CommsType::Email),
            direction: Some(Direction::Inbound),
            customer_id: Some(theirs.id),
            ..Default::default()
        })
        .await,
        vec![e5.id]
    );
    assert_eq!(list(CommsFilter { customer_assigned_to: Some(agent), ..Default::default() }).await, vec![e1.id, e2.id, e3.id]);
    assert!(list(CommsFilter { customer_assigned_to: Some(Uuid::now_v7()), ..Default::default() }).await.is_empty());
    assert_eq!(list(CommsFilter { triage: Some(Triage::Unmatched), ..Default::default() }).await, vec![unmatched.id]);
    assert_eq!(
        list(CommsFilter {
            occurred_from: Some(at("2026-01-02T00:00:00Z")),
            occurred_to: Some(at("2026-01-04T00:00:00Z")),
            customer_id: Some(mine.id),
            ..Default::default()
        })
        .await,
        vec![e2.id, e3.id]
    );

    // Search over subject and body, with filters.
    let search = |term: &str, filter: CommsFilter| ListQuery { terms: vec![term.into()], filter, ..Default::default() };
    assert_eq!(set(ids(&timeline(store, search("καμπαν", all.clone())).await)), set([e1.id, e3.id, e5.id]));
    assert_eq!(
        set(ids(&timeline(store, search("καμπαν", CommsFilter { customer_id: Some(mine.id), ..Default::default() })).await)),
        set([e1.id, e3.id])
    );
    assert_eq!(
        ids(&timeline(store, search("sender@example", all.clone())).await),
        vec![unmatched.id],
        "the sender's address is searchable"
    );
    // The deleted one only when asked for.
    let with_deleted = ListQuery { include_deleted: true, ..search("καμπανεσ", CommsFilter::default()) };
    assert_eq!(set(ids(&timeline(store, with_deleted).await)), set([e1.id, e3.id, deleted.id]));
    // Sorts the log does not offer are refused.
    assert_invalid(store.list::<CommsEntry>(&ListQuery { sort: Some("subject".into()), ..Default::default() }).await, "/sort");
}

/// `occurred_from` is inclusive and `occurred_to` exclusive, to the microsecond.
async fn occurred_range_boundaries(db: &TestDb) {
    let store = &db.store;
    let customer = create_customer(store, json!({"name": "Γιώργος"})).await;
    let from = at("2026-05-10T00:00:00Z");
    let to = at("2026-05-11T00:00:00Z");
    let micro = Duration::microseconds(1);
    let mut made = Vec::new();
    for time in [from - micro, from, from + micro, to - micro, to, to + micro] {
        let mut data = entry(CommsType::Note, Direction::Internal, time);
        data.customer_id = Some(customer.id);
        data.body = time.to_rfc3339();
        made.push(store.create(data).await.unwrap().id);
    }
    let range = |from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>| async move {
        let query = ListQuery {
            filter: CommsFilter { occurred_from: from, occurred_to: to, ..Default::default() },
            sort: Some("occurred_at".into()),
            direction: SortDirection::Asc,
            ..Default::default()
        };
        ids(&timeline(store, query).await)
    };
    assert_eq!(range(Some(from), Some(to)).await, made[1..4].to_vec());
    assert_eq!(range(Some(from), None).await, made[1..].to_vec());
    assert_eq!(range(None, Some(to)).await, made[..4].to_vec());
    assert_eq!(range(Some(to), Some(to)).await, Vec::<Uuid>::new(), "an empty range");
    assert_eq!(range(Some(to), Some(from)).await, Vec::<Uuid>::new(), "a reversed range");
    assert_eq!(range(Some(to - micro), Some(to)).await, vec![made[3]], "a one-microsecond range");
}

/// Many entries at the same instant: every page continues exactly where the last one ended, in
/// both directions and at every page size.
async fn timeline_pages_across_equal_times(db: &TestDb) {
    let store = &db.store;
    let customer = create_customer(store, json!({"name": "Γιώργος"})).await;
    let times =
        [at("2026-01-01T00:00:00Z"), at("2026-01-01T00:00:00.000001Z"), at("2026-01-02T00:00:00Z"), at("2026-06-30T23:59:59.999999Z")];
    let mut made: Vec<(DateTime<Utc>, Uuid)> = Vec::new();
    for i in 0..24 {
        // Created in an order unrelated to the time.
        let time = times[(i * 3) % 4];
        let mut data = entry(CommsType::Note, Direction::Internal, time);
        data.customer_id = Some(customer.id);
        data.body = format!("note {i}");
        made.push((time, store.create(data).await.unwrap().id));
    }
    made.sort();
    let ascending: Vec<Uuid> = made.iter().map(|(_, id)| *id).collect();
    let descending: Vec<Uuid> = ascending.iter().rev().copied().collect();
    for (direction, expected) in [(SortDirection::Asc, &ascending), (SortDirection::Desc, &descending)] {
        for limit in [1, 4, 5, 6, 7, 23, 24, 25] {
            let query = ListQuery::<CommsFilter> { sort: Some("occurred_at".into()), direction, limit: Some(limit), ..Default::default() };
            let pages = all_pages(|cursor| {
                let query = ListQuery { cursor, ..query.clone() };
                async move { store.list::<CommsEntry>(&query).await }
            })
            .await;
            let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
            let full = 24 / limit as usize;
            let mut expected_sizes = vec![limit as usize; full.min(24)];
            if 24 % limit as usize != 0 {
                expected_sizes.push(24 % limit as usize);
            }
            assert_eq!(sizes, expected_sizes, "{direction:?} by {limit}: no empty last page, no short page before it");
            let got: Vec<Uuid> = pages.into_iter().flatten().map(|r| r.id).collect();
            assert_eq!(&got, expected, "{direction:?} by {limit}");
        }
    }
    // A page of a range, from the middle of a run of equal times.
    let query = ListQuery::<CommsFilter> {
        filter: CommsFilter { occurred_from: Some(times[1]), occurred_to: Some(times[3]), ..Default::default() },
        sort: Some("occurred_at".into()),
        direction: SortDirection::Asc,
        limit: Some(4),
        ..Default::default()
    };
    let expected: Vec<Uuid> = made.iter().filter(|(t, _)| *t >= times[1] && *t < times[3]).map(|(_, id)| *id).collect();
    assert_eq!(expected.len(), 12);
    assert_eq!(ids(&timeline(store, query).await), expected);
    // A cursor of the occurred_at listing is refused by the created_at listing.
    let first =
        store.list::<CommsEntry>(&ListQuery { sort: Some("occurred_at".into()), limit: Some(2), ..Default::default() }).await.unwrap();
    let cursor = first.next_cursor.expect("more pages");
    assert_invalid(store.list::<CommsEntry>(&ListQuery { cursor: Some(cursor), ..Default::default() }).await, "/cursor");
}

async fn unmatched_inbox_listing(db: &TestDb) {
    let store = &db.store;
    let customer = create_customer(store, json!({"name": "Γιώργος"})).await;
    let mut items = Vec::new();
    for i in 0..7 {
        let mut item = inbound(&format!("<in-{i}@x>"), &format!("ev-in-{i}"), if i % 3 == 0 { Some(customer.id) } else { None });
        // Two share a time, so the page boundary falls on a tie.
        item.entry.occurred_at = at("2026-04-01T00:00:00Z") + Duration::hours([0, 1, 2, 3, 2, 4, 5][i]);
        items.push(item);
    }
    store.log_inbound(items.clone()).await.unwrap();
    let inbox = |direction| async move {
        let query = ListQuery {
            filter: CommsFilter { triage: Some(Triage::Unmatched), ..Default::default() },
            sort: Some("occurred_at".into()),
            direction,
            limit: Some(2),
            ..Default::default()
        };
        ids(&timeline(store, query).await)
    };
    let mut unmatched: Vec<(DateTime<Utc>, Uuid)> =
        items.iter().filter(|i| i.entry.triage == Some(Triage::Unmatched)).map(|i| (i.entry.occurred_at, i.id)).collect();
    unmatched.sort();
    let oldest_first: Vec<Uuid> = unmatched.iter().map(|(_, id)| *id).collect();
    assert_eq!(oldest_first.len(), 4);
    assert_eq!(inbox(SortDirection::Asc).await, oldest_first);
    assert_eq!(inbox(SortDirection::Desc).await, oldest_first.iter().rev().copied().collect::<Vec<_>>());
    let unmatched_filter = CommsFilter { triage: Some(Triage::Unmatched), ..Default::default() };
    assert_eq!(store.count::<CommsEntry>(&unmatched_filter).await.unwrap(), 4);
    assert_eq!(store.count::<CommsEntry>(&CommsFilter::default()).await.unwrap(), 7);

    // Worked entries leave the inbox and show under their new state. (All four share the
    // sender: assigning one assigns the others, but not the dismissed one.)
    store.dismiss_unmatched(oldest_first[2], None).await.unwrap();
    assert_eq!(store.assign_unmatched(oldest_first[0], customer.id, None).await.unwrap().also_assigned, 2);
    assert!(inbox(SortDirection::Asc).await.is_empty());
    assert_eq!(store.count::<CommsEntry>(&unmatched_filter).await.unwrap(), 0);
    let state = |triage| async move {
        set(ids(
            &timeline(store, ListQuery { filter: CommsFilter { triage: Some(triage), ..Default::default() }, ..Default::default() }).await
        ))
    };
    assert_eq!(state(Triage::Assigned).await, set([oldest_first[0], oldest_first[1], oldest_first[3]]));
    assert_eq!(state(Triage::Dismissed).await, set([oldest_first[2]]));
}

async fn media_filters(db: &TestDb) {
    let store = &db.store;
    let agent = Uuid::now_v7();
    let mine = create_customer(store, json!({"name": "Δικός μου", "assigned_to": agent})).await;
    let theirs = create_customer(store, json!({"name": "Άλλου"})).await;
    let product = create_product(store, json!({"sku": "BELL-1", "name": "Καμπάνα", "category": "part", "price": 1000})).await;
    let my_order = create_order(store, mine.id, product.id, 1).await;
    let their_order = create_order(store, theirs.id, product.id, 1).await;
    let file = |customer: Option<Uuid>, order: Option<Uuid>, name: &str| Media { order_id: order, ..media(customer, name) };
    let m1 = store.create(file(Some(mine.id), None, "m1.jpg")).await.unwrap();
    let m2 = store.create(file(None, Some(my_order.id), "m2.jpg")).await.unwrap();
    let m3 = store.create(file(Some(theirs.id), Some(their_order.id), "m3.jpg")).await.unwrap();
    let m4 = store.create(file(Some(theirs.id), None, "m4.jpg")).await.unwrap();
    let m5 = store.create(file(Some(mine.id), Some(my_order.id), "m5.jpg")).await.unwrap();

    let list = |filter: MediaFilter| async move {
        let query = ListQuery { filter, limit: Some(2), direction: SortDirection::Asc, ..Default::default() };
        let pages = all_pages(|cursor| {
            let query = ListQuery { cursor, ..query.clone() };
            async move { store.list::<Media>(&query).await }
        })
        .await;
        pages.into_iter().flatten().map(|r| r.id).collect::<Vec<_>>()
    };
    assert_eq!(list(MediaFilter::default()).await, vec![m1.id, m2.id, m3.id, m4.id, m5.id]);
    assert_eq!(list(MediaFilter { customer_id: Some(mine.id), ..Default::default() }).await, vec![m1.id, m5.id]);
    assert_eq!(list(MediaFilter { order_id: Some(my_order.id), ..Default::default() }).await, vec![m2.id, m5.id]);
    assert_eq!(list(MediaFilter { customer_id: Some(theirs.id), order_id: Some(their_order.id), ..Default::default() }).await, vec![m3.id]);
    // An agent sees their customers' files and their customers' orders' files.
    assert_eq!(list(MediaFilter { customer_assigned_to: Some(agent), ..Default::default() }).await, vec![m1.id, m2.id, m5.id]);
    assert!(list(MediaFilter { customer_assigned_to: Some(Uuid::now_v7()), ..Default::default() }).await.is_empty());

    // By where the bytes are, alone and with the other filters; counted the same way.
    let pending =
        store.create(Media { status: MediaStatus::Pending, nextcloud_path: None, ..file(Some(mine.id), None, "m6.jpg") }).await.unwrap();
    let failed = store.create(Media { status: MediaStatus::Failed, ..file(Some(theirs.id), None, "m7.jpg") }).await.unwrap();
    assert_eq!(list(MediaFilter { status: Some(MediaStatus::Pending), ..Default::default() }).await, vec![pending.id]);
    assert_eq!(list(MediaFilter { status: Some(MediaStatus::Failed), ..Default::default() }).await, vec![failed.id]);
    assert_eq!(
        list(MediaFilter { status: Some(MediaStatus::External), customer_id: Some(mine.id), ..Default::default() }).await,
        vec![m1.id, m5.id]
    );
    assert_eq!(
        list(MediaFilter { status: Some(MediaStatus::Pending), customer_assigned_to: Some(agent), ..Default::default() }).await,
        vec![pending.id]
    );
    assert!(list(MediaFilter { status: Some(MediaStatus::Stored), ..Default::default() }).await.is_empty());
    assert_eq!(store.count::<Media>(&MediaFilter::default()).await.unwrap(), 7);
    assert_eq!(store.count::<Media>(&MediaFilter { status: Some(MediaStatus::External), ..Default::default() }).await.unwrap(), 5);
    assert_eq!(store.count::<Media>(&MediaFilter { customer_assigned_to: Some(agent), ..Default::default() }).await.unwrap(), 4);
    store.delete::<Media>(m1.id, None).await.unwrap();
    assert_eq!(
        store.count::<Media>(&MediaFilter { customer_id: Some(mine.id), ..Default::default() }).await.unwrap(),
        2,
        "deleted files are not counted"
    );
}
