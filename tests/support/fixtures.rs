//! Records the bus side of the core would make, written straight to the store: inbound entries
//! of the communications log (as the ingest logs them, matched or waiting in the unmatched
//! inbox), customers and queued outbound entries, and dead letters filed for ops.

use chrono::{DateTime, Utc};
use crm_bus::message::{Address, Channel, MessageReceived};
use crm_bus::{Envelope, Trace};
use crm_domain::Record;
use crm_domain::comms::{AddressKind, ChannelAddress, CommsEntry, CommsType, Direction, Triage};
use crm_domain::contact::{ContactInput, ContactType, Region};
use crm_domain::customer::{Customer, CustomerInput};
use crm_store::{InboundEntry, Logged, Store};
use uuid::Uuid;

/// An inbound email from `from`, for `customer` (or unmatched when `None`), with the channel
/// message id `message_id`.
pub fn inbound_email(customer: Option<Uuid>, from: &str, subject: &str, message_id: &str, occurred_at: DateTime<Utc>) -> InboundEntry {
    let entry = CommsEntry {
        customer_id: customer,
        kind: CommsType::Email,
        direction: Direction::Inbound,
        subject: Some(subject.to_owned()),
        body: format!("{subject}: body"),
        attachments: Vec::new(),
        ext_message_id: Some(message_id.to_owned()),
        channel_address: Some(ChannelAddress {
            kind: AddressKind::Email,
            value: from.to_owned(),
            normalized: Some(from.to_lowercase()),
            name: Some("Sender".into()),
        }),
        recipients: Vec::new(),
        logged_by: "connector:email".into(),
        occurred_at,
        thread_id: None,
        in_reply_to: None,
        references: Vec::new(),
        delivery_status: None,
        status_reason: None,
        raw_event_id: Some(Uuid::now_v7().to_string()),
        matched: None,
        triage: customer.is_none().then_some(Triage::Unmatched),
        auto_reply: false,
    };
    InboundEntry { id: Uuid::now_v7(), entry, answers: Vec::new(), answers_entries: Vec::new(), media: Vec::new(), commands: Vec::new() }
}

/// Stores a Greek customer named `name` with the e-mail contact `email`.
pub async fn customer_with_email(store: &Store, name: &str, email: &str) -> Record<Customer> {
    let input = CustomerInput {
        name: Some(name.into()),
        contacts: vec![ContactInput { kind: ContactType::Email, label: None, value: email.into(), primary: true }],
        ..Default::default()
    };
    store.create(input.parse(Region::GR, Utc::now()).expect("valid customer")).await.expect("customer stored")
}

/// A queued outbound message to `customer` on `kind`, as the API logs it before its command
/// reaches the connector.
pub fn queued_outbound(customer: Uuid, kind: CommsType, subject: Option<&str>, body: &str) -> CommsEntry {
    CommsEntry {
        customer_id: Some(customer),
        kind,
        direction: Direction::Outbound,
        subject: subject.map(str::to_owned),
        body: body.to_owned(),
        attachments: Vec::new(),
        ext_message_id: None,
        channel_address: None,
        recipients: Vec::new(),
        logged_by: "user:test".into(),
        occurred_at: Utc::now(),
        thread_id: None,
        in_reply_to: None,
        references: Vec::new(),
        delivery_status: Some(crm_domain::comms::DeliveryStatus::Queued),
        status_reason: None,
        raw_event_id: None,
        matched: None,
        triage: None,
        auto_reply: false,
    }
}

/// Logs `entry` and returns its id.
pub async fn log_inbound(store: &Store, entry: InboundEntry) -> Uuid {
    match store.log_inbound(vec![entry]).await.expect("log inbound").as_slice() {
        [Logged::Created(id)] => *id,
        other => panic!("the entry was not logged as new: {other:?}"),
    }
}

/// Logs an unmatched inbound email from `from` and returns its id.
pub async fn log_unmatched(store: &Store, from: &str, subject: &str, occurred_at: DateTime<Utc>) -> Uuid {
    let message_id = format!("<{}@mail.example.gr>", Uuid::now_v7().simple());
    log_inbound(store, inbound_email(None, from, subject, &message_id, occurred_at)).await
}

/// A `crm.message.received.v1` event as an email connector publishes it.
pub fn received_email(from: &str, subject: &str) -> Envelope {
    let message = MessageReceived {
        channel: Channel::Email,
        channel_message_id: format!("<{}@mail.example.gr>", Uuid::now_v7().simple()),
        from: Address::email(from, None),
        to: Vec::new(),
        cc: Vec::new(),
        subject: Some(subject.to_owned()),
        body: "body".into(),
        occurred_at: Utc::now(),
        in_reply_to: None,
        references: Vec::new(),
        auto_reply: false,
        attachments: Vec::new(),
    };
    Envelope::new("/connectors/email/test", &message, Trace::new(format!("req-{}", Uuid::now_v7().simple())))
}

/// Files `envelope` as a dead letter given up on by `consumer`, and returns the dead letter's id.
pub async fn file_dead_letter(store: &Store, consumer: &str, envelope: &Envelope, reason: &str) -> Uuid {
    store
        .file_dead_letter(consumer, &envelope.id, &envelope.kind, &envelope.routing_key, &envelope.to_structured(), reason, 5, Utc::now())
        .await
        .expect("file dead letter");
    let letters = store.dead_letters(None, Some(consumer), None, Some(200)).await.expect("dead letters").items;
    letters.into_iter().find(|l| l.envelope_id == envelope.id).map(|l| l.id).expect("the dead letter just filed")
}
