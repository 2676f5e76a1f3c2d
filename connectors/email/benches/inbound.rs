//! Inbound throughput: 5,000 messages (`BENCH_MESSAGES`) are delivered over LMTP into a real
//! Dovecot mailbox; then the connector starts on the in-process bus beside the core's hub
//! (SQLite store, native matcher) and we measure how long until every message was published,
//! and until every message is an entry in the communications log.
//!
//! `cargo bench -p crm-connector-email --bench inbound` (`BENCH_PUBLISH_BATCH` sets the
//! connector's `publish_batch`, default 1).

#![allow(clippy::print_stdout, dead_code, unreachable_pub)]

#[path = "../tests/common/peers.rs"]
mod peers;

use crm_bus::{Bus, BusConfig, Exchange, Subscription};
use crm_connector::{CancellationToken, ConnectorContext, RunSettings};
use crm_connector_email::{Email, EmailConfig, ImapAccount, Security};
use crm_domain::comms::CommsEntry;
use crm_domain::contact::Region;
use crm_hub::{Hub, HubConfig, NativeMatcher};
use crm_store::{CommsFilter, Store, StoreConfig};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

const ALICE: &str = "alice@example.test";

fn message(i: usize) -> Vec<u8> {
    format!(
        "From: =?UTF-8?B?{name}?= <customer{sender}@example.gr>\r\nTo: Bells <{ALICE}>\r\n\
Subject: =?UTF-8?Q?Παραγγελία_{i}?=\r\nMessage-ID: <bench-{i}@example.gr>\r\nDate: Sat, 21 Nov 2026 10:00:00 +0200\r\n\
MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
Καλημέρα σας,\r\nθα θέλαμε μια καμπάνα 40 εκατοστών για την ενορία, παραγγελία αριθμός {i}.\r\n\r\nΜε εκτίμηση,\r\nΠελάτης {sender}\r\n",
        name = "zpXOvc6/z4HOr86xIM6RzrPOr86/z4Ugzp3Ouc66zr/Ou86szr/PhQ==",
        sender = i % 250,
    )
    .into_bytes()
}

fn main() {
    let count: usize = std::env::var("BENCH_MESSAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(5_000);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(run(count));
}

async fn run(count: usize) {
    let dovecot = peers::Dovecot::start();
    let messages: Vec<Vec<u8>> = (0..count).map(message).collect();
    let started = Instant::now();
    dovecot.deliver_lmtp(ALICE, &messages);
    let delivering = started.elapsed();
    println!(
        "delivered {count} messages over LMTP into Dovecot in {:.2} s ({:.0}/s)",
        delivering.as_secs_f64(),
        count as f64 / delivering.as_secs_f64()
    );

    let work = tempfile::tempdir().expect("tempdir");
    let store = Store::connect(&StoreConfig::sqlite_file(work.path().join("crm.db"))).await.expect("store");
    store.migrate().await.expect("migrate");
    let bus = Bus::in_process(BusConfig::default());
    let mut published = bus
        .subscribe(Subscription::new("bench.count", Exchange::Events, &["email.message.received"]).with_prefetch(1000))
        .await
        .expect("subscribe");
    let hub =
        Hub::start(store.clone(), bus.clone(), Arc::new(NativeMatcher::new(Region::GR)), HubConfig::default(), Arc::new(Notify::new()))
            .await
            .expect("hub");

    let config = EmailConfig {
        domain: "bells.example".into(),
        state_dir: work.path().join("state"),
        accounts: vec![ImapAccount {
            name: "alice".into(),
            host: "127.0.0.1".into(),
            port: Some(dovecot.imap_port),
            security: Security::Plain,
            allow_plaintext: true,
            username: ALICE.into(),
            password: Some(peers::PASSWORD.to_owned().into()),
            ..ImapAccount::default()
        }],
        publish_batch: std::env::var("BENCH_PUBLISH_BATCH")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(EmailConfig::default().publish_batch),
        ..EmailConfig::default()
    };
    let (fetch_batch, publish_batch) = (config.fetch_batch, config.publish_batch);
    let token = CancellationToken::new();
    let started = Instant::now();
    let task = crm_connector::spawn_with(
        Email::new(config).expect("config"),
        ConnectorContext::new(bus.clone(), token.clone())
            .with_settings(RunSettings { instance: Some("bench".into()), ..RunSettings::default() }),
    );
    let mut seen = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(900);
    while seen.len() < count {
        let delivery = tokio::time::timeout(Duration::from_secs(120), published.next()).await.expect("events keep coming").expect("open");
        let message: crm_bus::message::MessageReceived = delivery.envelope.decode().expect("a message");
        seen.insert(message.channel_message_id);
        let _ = delivery.ack().await;
        assert!(Instant::now() < deadline, "too slow");
    }
    let publishing = started.elapsed();
    println!(
        "published all {count} (fetch_batch {fetch_batch}, publish_batch {publish_batch}) {:.2} s after the connector started: {:.0} messages/s",
        publishing.as_secs_f64(),
        count as f64 / publishing.as_secs_f64()
    );
    loop {
        let logged = store.count::<CommsEntry>(&CommsFilter::default()).await.expect("count") as usize;
        if logged >= count {
            break;
        }
        assert!(Instant::now() < deadline, "only {logged} logged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let logging = started.elapsed();
    println!(
        "all {count} in the communications log (SQLite) {:.2} s after the connector started: {:.0} messages/s",
        logging.as_secs_f64(),
        count as f64 / logging.as_secs_f64()
    );
    token.cancel();
    let _ = task.await;
    hub.shutdown().await;
    bus.close().await;
}
