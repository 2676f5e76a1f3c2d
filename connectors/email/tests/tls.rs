//! Encrypted connections against the real servers with a private CA (a test CA made with
//! openssl, trusted through `ca_file`, and a server certificate for `localhost`): IMAP over implicit TLS and over
//! STARTTLS, SMTP over STARTTLS (with AUTH) and over implicit TLS.

mod common;

use common::peers::{Dovecot, Smtp, free_port, test_ca};
use common::{DOMAIN, Event, Running, account, collect, config, simple_message, smtp, subscribe_events};
use crm_bus::message::{Address, Channel, DeliveryState, SendMessage, entry_message_id};
use crm_bus::{Bus, BusConfig, Envelope, Trace};
use crm_connector_email::Security;
use std::collections::HashSet;
use std::time::Duration;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);
const ALICE: &str = "alice@example.test";
const BOB: &str = "bob@example.test";
const CAROL: &str = "carol@example.test";

fn send_to_carol(entry_id: Uuid) -> SendMessage {
    SendMessage {
        entry_id,
        channel: Channel::Email,
        to: vec![Address::email(CAROL, None)],
        cc: vec![],
        subject: Some("Over TLS".into()),
        body: "Κρυπτογραφημένο.".into(),
        body_html: None,
        in_reply_to: None,
        references: vec![],
        attachments: vec![],
    }
}

fn count(dovecot: &Dovecot, user: &str) -> usize {
    dovecot.doveadm(&["search", "-u", user, "mailbox", "INBOX", "ALL"], None).lines().count()
}

async fn sent(events: &mut crm_bus::Subscriber, entry_id: Uuid) {
    let got = collect(events, WAIT, |seen| seen.iter().any(|e| matches!(e, Event::Status(s) if s.entry_id == Some(entry_id)))).await;
    let status = got
        .iter()
        .find_map(|e| match e {
            Event::Status(s) if s.entry_id == Some(entry_id) => Some(s.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(status.status, DeliveryState::Sent, "{status:?}");
    assert_eq!(status.channel_message_id, Some(entry_message_id(entry_id, DOMAIN)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_and_smtp_over_tls_and_starttls_with_a_private_ca() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_ca(certs.path());
    let dovecot = Dovecot::start_with(Some((&cert, &key)));
    let state = tempfile::tempdir().unwrap();
    let bus = Bus::in_process(BusConfig::default());
    let mut events = subscribe_events(&bus, "test.events").await;

    let mut implicit = account(&dovecot, "alice", ALICE, &["INBOX"], true);
    implicit.host = "localhost".into();
    implicit.port = dovecot.imaps_port;
    implicit.security = Security::Tls;
    implicit.allow_plaintext = false;
    implicit.ca_file = Some(ca.clone());
    let mut starttls = account(&dovecot, "bob", BOB, &["INBOX"], true);
    starttls.host = "localhost".into();
    starttls.security = Security::Starttls;
    starttls.allow_plaintext = false;
    starttls.ca_file = Some(ca.clone());

    let auth = Some(("sales", "tls-secret"));
    let starttls_server = Smtp::start_tls(free_port(), &dovecot, auth, Some(("starttls", &cert, &key)));
    let mut outbound = smtp(starttls_server.port, auth, None);
    outbound.host = "localhost".into();
    outbound.security = Security::Starttls;
    outbound.allow_plaintext = false;
    outbound.ca_file = Some(ca.clone());
    let running = Running::start(&bus, config(state.path(), vec![implicit.clone(), starttls], Some(outbound))).await;

    dovecot.save(ALICE, "INBOX", &simple_message("<tls-1@example.gr>", "a@example.gr", ALICE, "implicit", ""));
    dovecot.save(BOB, "INBOX", &simple_message("<tls-2@example.gr>", "b@example.gr", BOB, "starttls", ""));
    let got = collect(&mut events, WAIT, |seen| seen.len() >= 2).await;
    assert_eq!(
        got.iter().map(Event::id).collect::<HashSet<_>>(),
        HashSet::from(["<tls-1@example.gr>".to_owned(), "<tls-2@example.gr>".to_owned()])
    );

    let first = Uuid::now_v7();
    bus.publish(&Envelope::new("/crm/core", &send_to_carol(first), Trace::new("req-tls-1"))).await.unwrap();
    sent(&mut events, first).await;
    running.stop().await;

    // SMTPS (implicit TLS) this time.
    let implicit_server = Smtp::start_tls(free_port(), &dovecot, None, Some(("implicit", &cert, &key)));
    let mut outbound = smtp(implicit_server.port, None, None);
    outbound.host = "localhost".into();
    outbound.security = Security::Tls;
    outbound.allow_plaintext = false;
    outbound.ca_file = Some(ca.clone());
    let running = Running::start(&bus, config(state.path(), vec![implicit], Some(outbound))).await;
    let second = Uuid::now_v7();
    bus.publish(&Envelope::new("/crm/core", &send_to_carol(second), Trace::new("req-tls-2"))).await.unwrap();
    sent(&mut events, second).await;
    running.stop().await;

    let deadline = tokio::time::Instant::now() + WAIT;
    while count(&dovecot, CAROL) < 2 {
        assert!(tokio::time::Instant::now() < deadline, "both reached carol:\n{}\n{}", starttls_server.log(), implicit_server.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(starttls_server.messages().len(), 1);
    assert_eq!(implicit_server.messages().len(), 1);
}
