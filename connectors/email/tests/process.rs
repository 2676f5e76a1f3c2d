//! The email connector as its own process on RabbitMQ, watching a real Dovecot: killed with
//! SIGKILL in the middle of a stream of messages, with Dovecot restarted before it comes back,
//! it loses none and publishes again at most the one in flight; it heartbeats and stops
//! gracefully on SIGTERM.
//!
//! Needs RabbitMQ at `CRM_TEST_AMQP_URL` (default `amqp://guest:guest@127.0.0.1:5672/%2f`); the
//! test is skipped when it is unreachable, unless `CRM_REQUIRE_RABBITMQ=1`. It uses its own bus
//! prefix and deletes its queues at the end.

mod common;

use common::peers::{Dovecot, PASSWORD};
use common::simple_message;
use crm_bus::message::{Channel, ConnectorState, MessageReceived};
use crm_bus::{Bus, Exchange, Subscriber, Subscription};
use crm_connector::testing::{ConnectorProcess, amqp_url, clean_up, heartbeat, test_bus};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_crm-connector-email");
const WAIT: Duration = Duration::from_secs(90);
const ALICE: &str = "alice@example.test";

/// The connector binary with the configuration file `config`, working in `work`.
fn start(prefix: &str, instance: &str, config: &Path, work: &Path) -> ConnectorProcess {
    let mut command = ConnectorProcess::command(BIN, &amqp_url(), prefix, instance);
    command.arg("--config").arg(config).current_dir(work);
    ConnectorProcess::spawn(&mut command, &work.join(format!("{instance}.log")))
}

async fn subscribe(bus: &Bus, group: &str, binding: &str) -> Subscriber {
    bus.subscribe(Subscription::new(group, Exchange::Events, &[binding]).with_prefetch(500)).await.unwrap()
}

/// Counts received messages by channel id until `until` distinct ones were seen.
async fn receive(received: &mut Subscriber, counts: &mut HashMap<String, usize>, until: usize, process: &ConnectorProcess) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while counts.len() < until {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Ok(Some(delivery)) = tokio::time::timeout(left, received.next()).await else {
            panic!("{} of {until} messages published; log:\n{}", counts.len(), process.logs());
        };
        let message: MessageReceived = delivery.envelope.decode().unwrap();
        *counts.entry(message.channel_message_id).or_default() += 1;
        let _ = delivery.ack().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_and_a_dovecot_restart_lose_nothing_and_repeat_at_most_one() {
    let Some((bus, prefix)) = test_bus("email").await else { return };
    let dovecot = Arc::new(Dovecot::start());
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("email.toml");
    std::fs::write(
        &config,
        format!(
            "domain = \"bells.example\"\nstate_dir = \"{}\"\nfetch_batch = 20\n\n\
             [[accounts]]\nname = \"alice\"\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"plain\"\nallow_plaintext = true\n\
             username = \"{ALICE}\"\npassword = \"{PASSWORD}\"\nfolders = [\"INBOX\"]\n",
            work.path().join("state").display(),
            dovecot.imap_port
        ),
    )
    .unwrap();
    let mut received = subscribe(&bus, "core.email", "email.message.received").await;
    let mut beats = subscribe(&bus, "core.heartbeats", "connector.email.heartbeat").await;
    let total = 150usize;
    let messages: Vec<Vec<u8>> =
        (0..total).map(|i| simple_message(&format!("<p-{i}@example.gr>"), "nikos@example.gr", ALICE, &format!("Order {i}"), "")).collect();

    let mut first = start(&prefix, "first", &config, work.path());
    let ready = heartbeat(&mut beats, "first", ConnectorState::Ready, &first, WAIT).await;
    assert_eq!((ready.name.as_str(), ready.channel), ("email", Channel::Email));

    // Messages keep arriving while the connector is killed.
    let feeder = {
        let dovecot = dovecot.clone();
        let messages = messages.clone();
        tokio::task::spawn_blocking(move || {
            for raw in &messages {
                dovecot.save(ALICE, "INBOX", raw);
            }
        })
    };
    let mut counts: HashMap<String, usize> = HashMap::new();
    receive(&mut received, &mut counts, 40, &first).await;
    first.kill();
    let before_kill = counts.len();
    dovecot.restart();

    let mut second = start(&prefix, "second", &config, work.path());
    feeder.await.unwrap();
    receive(&mut received, &mut counts, total, &second).await;
    // Whatever else comes (nothing, or the one in flight at the kill).
    while let Ok(Some(delivery)) = tokio::time::timeout(Duration::from_secs(2), received.next()).await {
        let message: MessageReceived = delivery.envelope.decode().unwrap();
        *counts.entry(message.channel_message_id).or_default() += 1;
        let _ = delivery.ack().await;
    }
    let published: usize = counts.values().sum();
    eprintln!("{before_kill} distinct before SIGKILL; {published} published for {total} delivered");
    assert_eq!(counts.len(), total, "no message lost");
    for i in 0..total {
        assert!(counts.contains_key(&format!("<p-{i}@example.gr>")), "message {i} lost");
    }
    let duplicates: Vec<(&String, &usize)> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(published - total <= 1, "at most the one in flight at the kill is published again: {duplicates:?}");

    second.terminate();
    let status = second.exit(WAIT).await;
    assert!(status.success(), "graceful exit, got {status}; log:\n{}", second.logs());
    let logs = second.logs();
    assert!(!logs.contains(PASSWORD), "the IMAP password is never logged");
    for line in logs.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
    clean_up(&bus, Channel::Email).await;
}
