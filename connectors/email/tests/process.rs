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
use crm_bus::message::{Channel, ConnectorState, Heartbeat, MessageReceived};
use crm_bus::{Bus, BusConfig, Exchange, Subscriber, Subscription};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_crm-connector-email");
const WAIT: Duration = Duration::from_secs(90);
const ALICE: &str = "alice@example.test";

fn amqp_url() -> String {
    std::env::var("CRM_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

async fn test_bus() -> Option<(Bus, String)> {
    let prefix = format!("t-email-{}", &Uuid::new_v4().simple().to_string()[..12]);
    let config = BusConfig { prefix: prefix.clone(), ..BusConfig::default() };
    match tokio::time::timeout(Duration::from_secs(15), Bus::connect(&amqp_url(), config)).await {
        Ok(Ok(bus)) => Some((bus, prefix)),
        failure => {
            let why = match failure {
                Ok(Err(err)) => err.to_string(),
                _ => "timed out".into(),
            };
            if std::env::var("CRM_REQUIRE_RABBITMQ").as_deref() == Ok("1") {
                panic!("RabbitMQ is required (CRM_REQUIRE_RABBITMQ=1) but unreachable: {why}");
            }
            eprintln!("skipped: RabbitMQ unreachable at {}: {why}", crm_bus::redact_url(&amqp_url()));
            None
        }
    }
}

struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    fn start(prefix: &str, instance: &str, config: &Path, work: &Path) -> Process {
        let log = work.join(format!("{instance}.log"));
        let child = Command::new(BIN)
            .arg("--config")
            .arg(config)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("CRM_CONNECTOR_AMQP_URL", amqp_url())
            .env("CRM_CONNECTOR_BUS_PREFIX", prefix)
            .env("CRM_CONNECTOR_INSTANCE", instance)
            .env("CRM_CONNECTOR_HEARTBEAT_INTERVAL_SECONDS", "1")
            .env("CRM_CONNECTOR_LOG_FORMAT", "json")
            .current_dir(work)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("the connector binary starts");
        Process { child, log }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn terminate(&self) {
        assert!(Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap().success());
    }

    async fn exit(&mut self) -> std::process::ExitStatus {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(tokio::time::Instant::now() < deadline, "the connector did not exit; log:\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn subscribe(bus: &Bus, group: &str, binding: &str) -> Subscriber {
    bus.subscribe(Subscription::new(group, Exchange::Events, &[binding]).with_prefetch(500)).await.unwrap()
}

async fn heartbeat(beats: &mut Subscriber, instance: &str, state: ConnectorState, process: &Process) -> Heartbeat {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Ok(Some(delivery)) = tokio::time::timeout(left, beats.next()).await else {
            panic!("no {state:?} heartbeat from {instance}; log:\n{}", process.logs());
        };
        let beat: Heartbeat = delivery.envelope.decode().unwrap();
        let _ = delivery.ack().await;
        if beat.instance == instance && beat.state == state {
            return beat;
        }
    }
}

/// Counts received messages by channel id until `until` distinct ones were seen.
async fn receive(received: &mut Subscriber, counts: &mut HashMap<String, usize>, until: usize, process: &Process) {
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
    let Some((bus, prefix)) = test_bus().await else { return };
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

    let mut first = Process::start(&prefix, "first", &config, work.path());
    let ready = heartbeat(&mut beats, "first", ConnectorState::Ready, &first).await;
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

    let mut second = Process::start(&prefix, "second", &config, work.path());
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
    let status = second.exit().await;
    assert!(status.success(), "graceful exit, got {status}; log:\n{}", second.logs());
    let logs = second.logs();
    assert!(!logs.contains(PASSWORD), "the IMAP password is never logged");
    for line in logs.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
    match bus.subscribe(Subscription::new("connector.email.commands", Exchange::Commands, &["email.#"])).await {
        Ok(commands) => drop(commands),
        Err(err) => eprintln!("clean-up: {err}"),
    }
    if let Err(err) = bus.delete_topology().await {
        eprintln!("clean-up: {err}");
    }
    bus.close().await;
}
