//! Outbound through a real SMTP server (aiosmtpd relaying over LMTP into Dovecot), the connector
//! as a task on the in-process bus: a threaded reply reaches the customer's mailbox with our
//! Message-ID, In-Reply-To and References and a copy lands in Sent; the customer's answer comes
//! back with `in_reply_to` naming our message; a bounce of it fails the right entry; a
//! redelivered command is not sent twice; 5xx refusals fail, 4xx / unreachable servers retry;
//! AUTH works and a wrong password fails.

mod common;

use common::peers::{Dovecot, Smtp, free_port};
use common::{DOMAIN, Event, Running, account, collect, config, drain, smtp, subscribe_events};
use crm_bus::message::{Address, Bytes, Channel, DeliveryState, OutboundAttachment, SendMessage, entry_message_id};
use crm_bus::{Bus, BusConfig, Envelope, Trace};
use crm_connector_email::parse::{Inbound, ParseOptions, parse};
use lettre::AsyncTransport as _;
use std::time::Duration;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);
const ALICE: &str = "alice@example.test";
const BOB: &str = "bob@example.test";

fn fast_bus() -> Bus {
    let mut config = BusConfig::default();
    config.retry.backoff = vec![Duration::from_millis(500)];
    config.retry.max_attempts = 30;
    Bus::in_process(config)
}

fn reply_to_bob(entry_id: Uuid) -> SendMessage {
    SendMessage {
        entry_id,
        channel: Channel::Email,
        to: vec![Address::email(BOB, Some("Μπάμπης Πελάτης".into()))],
        cc: vec![],
        subject: Some("Re: Προσφορά για καμπάνες".into()),
        body: "Καλημέρα,\nη προσφορά επισυνάπτεται.".into(),
        body_html: Some("<p>Καλημέρα,<br>η προσφορά επισυνάπτεται.</p>".into()),
        in_reply_to: Some("<q1@example.test>".into()),
        references: vec!["<q0@example.test>".into()],
        attachments: vec![OutboundAttachment {
            filename: "προσφορά.pdf".into(),
            mime_type: "application/pdf".into(),
            content: Bytes(b"%PDF-1.4 offer".to_vec()),
        }],
    }
}

async fn command(bus: &Bus, send: &SendMessage) {
    bus.publish(&Envelope::new("/crm/core", send, Trace::new(format!("req-{}", send.entry_id)))).await.unwrap();
}

fn statuses(events: &[Event]) -> Vec<crm_bus::message::DeliveryStatus> {
    events.iter().filter_map(|e| if let Event::Status(s) = e { Some(s.clone()) } else { None }).collect()
}

fn count(dovecot: &Dovecot, user: &str, folder: &str) -> usize {
    dovecot.doveadm(&["search", "-u", user, "mailbox", folder, "ALL"], None).lines().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_reaches_the_customer_threaded_and_the_answer_comes_back() {
    let dovecot = Dovecot::start();
    let server = Smtp::start(&dovecot, None);
    let state = tempfile::tempdir().unwrap();
    let bus = fast_bus();
    let mut events = subscribe_events(&bus, "test.events").await;
    let cfg = config(state.path(), vec![account(&dovecot, "alice", ALICE, &["INBOX"], true)], Some(smtp(server.port, None, Some("Sent"))));
    let running = Running::start(&bus, cfg).await;

    let entry_id = Uuid::now_v7();
    let our_id = entry_message_id(entry_id, DOMAIN);
    let send = reply_to_bob(entry_id);
    command(&bus, &send).await;
    let got = collect(&mut events, WAIT, |seen| !statuses(seen).is_empty()).await;
    let sent = &statuses(&got)[0];
    assert_eq!(sent.status, DeliveryState::Sent, "{sent:?}\n{}", server.log());
    assert_eq!(sent.entry_id, Some(entry_id));
    assert_eq!(sent.channel_message_id.as_deref(), Some(our_id.as_str()));

    // In Bob's mailbox, through SMTP and LMTP: our headers, the Greek text and the attachment.
    let deadline = tokio::time::Instant::now() + WAIT;
    while count(&dovecot, BOB, "INBOX") == 0 {
        assert!(tokio::time::Instant::now() < deadline, "nothing reached bob; smtp log:\n{}\ndovecot:\n{}", server.log(), dovecot.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let raw = &dovecot.fetch_all(BOB, "INBOX")[0];
    let headers = raw.split("\r\n\r\n").next().unwrap_or(raw).replace("\r\n", "\n");
    assert!(headers.contains(&format!("Message-ID: {our_id}")), "{headers}");
    assert!(headers.contains("In-Reply-To: <q1@example.test>"), "{headers}");
    assert!(headers.contains("References: <q0@example.test> <q1@example.test>"), "{headers}");
    let Inbound::Message(at_bob) = parse(raw.as_bytes(), &ParseOptions::default()).unwrap() else { panic!("a message") };
    assert_eq!(at_bob.channel_message_id, our_id);
    assert_eq!(at_bob.from, Address::email(ALICE, Some("Bells Sales".into())));
    assert_eq!(at_bob.to, vec![Address::email(BOB, Some("Μπάμπης Πελάτης".into()))]);
    assert_eq!(at_bob.subject.as_deref(), Some("Re: Προσφορά για καμπάνες"));
    assert_eq!(at_bob.body, "Καλημέρα,\nη προσφορά επισυνάπτεται.");
    assert_eq!(at_bob.attachments.len(), 1);
    assert_eq!(at_bob.attachments[0].filename, "προσφορά.pdf");
    assert_eq!(at_bob.attachments[0].content.as_ref().unwrap().0, b"%PDF-1.4 offer");
    // A copy in our Sent folder.
    assert_eq!(count(&dovecot, ALICE, "Sent"), 1);
    assert_eq!(server.messages().len(), 1);

    // The same command again (a redelivery): answered `sent` from the record, not sent again.
    command(&bus, &send).await;
    let again = collect(&mut events, WAIT, |seen| !statuses(seen).is_empty()).await;
    assert_eq!(statuses(&again)[0].status, DeliveryState::Sent);
    assert_eq!(statuses(&again)[0].channel_message_id.as_deref(), Some(our_id.as_str()));
    assert_eq!(server.messages().len(), 1, "not sent twice");

    // Bob answers through the SMTP server into our watched INBOX.
    let answer = format!(
        "From: Μπάμπης <{BOB}>\r\nTo: {ALICE}\r\nSubject: Re: Re: Προσφορά για καμπάνες\r\nMessage-ID: <answer-1@example.test>\r\n\
In-Reply-To: {our_id}\r\nReferences: <q0@example.test> <q1@example.test> {our_id}\r\nDate: Sat, 21 Nov 2026 12:00:00 +0200\r\n\
MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nΕυχαριστώ, συμφωνώ.\r\n"
    );
    let transport = lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous("127.0.0.1").port(server.port).build();
    let envelope = lettre::address::Envelope::new(Some(BOB.parse().unwrap()), vec![ALICE.parse().unwrap()]).unwrap();
    transport.send_raw(&envelope, answer.as_bytes()).await.unwrap();
    let got = collect(&mut events, WAIT, |seen| seen.iter().any(|e| matches!(e, Event::Received(_)))).await;
    let Some(Event::Received(answer)) = got.iter().find(|e| matches!(e, Event::Received(_))) else { unreachable!() };
    assert_eq!(answer.channel_message_id, "<answer-1@example.test>");
    assert_eq!(answer.in_reply_to.as_deref(), Some(our_id.as_str()));
    assert_eq!(answer.references.last().map(String::as_str), Some(our_id.as_str()));
    assert_eq!(crm_bus::message::entry_of_message_id(answer.in_reply_to.as_deref().unwrap()), Some(entry_id));
    assert_eq!(answer.body, "Ευχαριστώ, συμφωνώ.");

    // A bounce of our message (RFC 3464, returned headers) fails our entry, not a new thread.
    let bounce = format!(
        "From: MAILER-DAEMON@example.test\r\nTo: {ALICE}\r\nSubject: Undelivered Mail Returned to Sender\r\nMessage-ID: <bounce-1@example.test>\r\n\
Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b1\"\r\n\r\n\
--b1\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n\
--b1\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.test\r\n\r\nFinal-Recipient: rfc822; {BOB}\r\nAction: failed\r\nStatus: 5.2.2\r\nDiagnostic-Code: smtp; 552 5.2.2 Mailbox full\r\n\r\n\
--b1\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: {ALICE}\r\nTo: {BOB}\r\nMessage-ID: {our_id}\r\nSubject: Re: offer\r\n\r\n--b1--\r\n"
    );
    dovecot.save(ALICE, "INBOX", bounce.as_bytes());
    let got = collect(&mut events, WAIT, |seen| !statuses(seen).is_empty()).await;
    let failed = &statuses(&got)[0];
    assert_eq!(failed.status, DeliveryState::Failed);
    assert_eq!(failed.entry_id, Some(entry_id));
    assert_eq!(failed.channel_message_id.as_deref(), Some(our_id.as_str()));
    assert_eq!(failed.reason.as_deref(), Some("bob@example.test: 5.2.2 (552 5.2.2 Mailbox full)"));
    assert!(got.iter().all(|e| matches!(e, Event::Status(_))), "the bounce is no conversation: {got:?}");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_fail_and_outages_are_retried_with_auth() {
    let dovecot = Dovecot::start();
    let port = free_port();
    let state = tempfile::tempdir().unwrap();
    let bus = fast_bus();
    let mut events = subscribe_events(&bus, "test.events").await;
    let auth = Some(("sales", "s3cret-smtp"));
    let running = Running::start(&bus, config(state.path(), vec![], Some(smtp(port, auth, None)))).await;

    // The server is not up yet: transient, retried until it is.
    let entry_id = Uuid::now_v7();
    let mut send = reply_to_bob(entry_id);
    send.in_reply_to = None;
    send.references.clear();
    command(&bus, &send).await;
    assert!(statuses(&drain(&mut events, Duration::from_millis(1500)).await).is_empty(), "no status while the server is down");
    let server = Smtp::start_on(port, &dovecot, auth);
    let got = collect(&mut events, WAIT, |seen| !statuses(seen).is_empty()).await;
    assert_eq!(statuses(&got)[0].status, DeliveryState::Sent, "{:?}\n{}", statuses(&got), server.log());
    assert_eq!(statuses(&got)[0].entry_id, Some(entry_id));
    assert_eq!(server.messages().len(), 1);

    // 550 for the recipient: failed with the server's reply, and done.
    let refused = Uuid::now_v7();
    let mut send = reply_to_bob(refused);
    send.to = vec![Address::email("reject-me@example.test", None)];
    command(&bus, &send).await;
    let got = collect(&mut events, WAIT, |seen| !statuses(seen).is_empty()).await;
    let failed = &statuses(&got)[0];
    assert_eq!(failed.status, DeliveryState::Failed);
    assert_eq!(failed.entry_id, Some(refused));
    assert!(failed.reason.as_deref().unwrap().contains("550"), "{failed:?}");
    assert!(failed.reason.as_deref().unwrap().contains("User unknown"), "{failed:?}");

    // 451: transient, retried (no status yet).
    let mut send = reply_to_bob(Uuid::now_v7());
    send.to = vec![Address::email("later@example.test", None)];
    command(&bus, &send).await;
    assert!(statuses(&drain(&mut events, Duration::from_millis(2000)).await).is_empty(), "a 4xx is retried, not failed");
    running.stop().await;

    // A wrong password is refused for good (535).
    let wrong = config(state.path(), vec![], Some(smtp(port, Some(("sales", "wrong")), None)));
    let running = Running::start(&bus, wrong).await;
    let entry = Uuid::now_v7();
    command(&bus, &reply_to_bob(entry)).await;
    let got = collect(&mut events, WAIT, |seen| statuses(seen).iter().any(|s| s.entry_id == Some(entry))).await;
    let failed = statuses(&got).into_iter().find(|s| s.entry_id == Some(entry)).unwrap();
    assert_eq!(failed.status, DeliveryState::Failed, "{failed:?}");
    assert!(failed.reason.as_deref().unwrap().contains("535"), "{failed:?}");
    running.stop().await;
}
