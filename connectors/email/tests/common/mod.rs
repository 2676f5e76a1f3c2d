//! Helpers shared by the integration tests: the real peers ([`peers`]), the fixtures, connector
//! configurations and an event collector.

#![allow(dead_code, unreachable_pub)]

pub(crate) mod peers;

use crm_bus::message::{DeliveryStatus, MessageReceived};
use crm_bus::{Bus, Envelope, Exchange, Subscriber, Subscription};
use crm_connector::{CancellationToken, ConnectorContext, RunSettings};
use crm_connector_email::{Email, EmailConfig, ImapAccount, Security, SmtpConfig};
use peers::{Dovecot, PASSWORD};
use std::path::Path;
use std::time::Duration;

/// The shared fixtures (the repository is cloned next to `shared/`).
pub(crate) const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/fixtures/email");
/// Our Message-ID domain in the tests.
pub(crate) const DOMAIN: &str = "bells.example";

/// Every email fixture: (path relative to the fixtures folder, bytes), sorted.
pub(crate) fn fixtures() -> Vec<(String, Vec<u8>)> {
    let mut found = Vec::new();
    for folder in std::fs::read_dir(FIXTURES).unwrap_or_else(|e| panic!("{FIXTURES}: {e}")) {
        let folder = folder.unwrap().path();
        if !folder.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&folder).unwrap() {
            let path = file.unwrap().path();
            if path.extension().is_some_and(|e| e == "json" || e == "md") {
                continue;
            }
            let name = path.strip_prefix(FIXTURES).unwrap().to_string_lossy().into_owned();
            found.push((name, std::fs::read(&path).unwrap()));
        }
    }
    found.sort();
    assert!(found.len() >= 16, "the email fixtures are missing from {FIXTURES}");
    found
}

/// An IMAP account of `user` on `dovecot` (plain, allowed: loopback).
pub(crate) fn account(dovecot: &Dovecot, name: &str, user: &str, folders: &[&str], idle: bool) -> ImapAccount {
    ImapAccount {
        name: name.into(),
        host: "127.0.0.1".into(),
        port: Some(dovecot.imap_port),
        security: Security::Plain,
        allow_plaintext: true,
        ca_file: None,
        username: user.into(),
        password: Some(PASSWORD.to_owned().into()),
        folders: folders.iter().map(|f| (*f).to_owned()).collect(),
        idle,
        poll_interval_seconds: 1,
        idle_renew_seconds: 60,
    }
}

/// SMTP through `port` (plain, allowed), from our sales address.
pub(crate) fn smtp(port: u16, auth: Option<(&str, &str)>, sent_folder: Option<&str>) -> SmtpConfig {
    SmtpConfig {
        host: "127.0.0.1".into(),
        port: Some(port),
        security: Security::Plain,
        allow_plaintext: true,
        ca_file: None,
        username: auth.map(|(u, _)| u.to_owned()),
        password: auth.map(|(_, p)| p.to_owned().into()),
        from: "Bells Sales <alice@example.test>".into(),
        timeout_seconds: 20,
        sent_account: None,
        sent_folder: sent_folder.map(str::to_owned),
    }
}

/// A configuration with `accounts` and `smtp`, state in `state_dir`.
pub(crate) fn config(state_dir: &Path, accounts: Vec<ImapAccount>, smtp: Option<SmtpConfig>) -> EmailConfig {
    EmailConfig { domain: DOMAIN.into(), state_dir: state_dir.to_owned(), accounts, smtp, ..EmailConfig::default() }
}

/// Subscribes a test consumer to everything the connector publishes about messages.
pub(crate) async fn subscribe_events(bus: &Bus, group: &str) -> Subscriber {
    bus.subscribe(Subscription::new(group, Exchange::Events, &["email.message.received", "email.message.status"]).with_prefetch(1000))
        .await
        .unwrap()
}

/// The connector running as a task on a bus.
pub(crate) struct Running {
    pub(crate) token: CancellationToken,
    pub(crate) task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Spawns the connector with `config` on `bus` and waits until it took its command queue.
    pub(crate) async fn start(bus: &Bus, config: EmailConfig) -> Running {
        if std::env::var_os("RUST_LOG").is_some() {
            let _ =
                tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).with_test_writer().try_init();
        }
        let connector = Email::new(config).unwrap();
        let token = CancellationToken::new();
        let settings = RunSettings { instance: Some("test".into()), shutdown_timeout: Duration::from_secs(10), ..RunSettings::default() };
        let task = crm_connector::spawn_with(connector, ConnectorContext::new(bus.clone(), token.clone()).with_settings(settings));
        let group = crm_bus::message::command_group(crm_bus::message::Channel::Email);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !bus.queue_stats().await.unwrap().iter().any(|q| q.group == group && q.consumers >= 1) {
            assert!(tokio::time::Instant::now() < deadline, "the connector did not subscribe");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Running { token, task }
    }

    /// Stops it gracefully.
    pub(crate) async fn stop(self) {
        self.token.cancel();
        tokio::time::timeout(Duration::from_secs(60), self.task).await.expect("the connector stops").unwrap().unwrap();
    }
}

/// One event the connector published.
#[derive(Debug, Clone)]
pub(crate) enum Event {
    Received(MessageReceived),
    Status(DeliveryStatus),
}

impl Event {
    pub(crate) fn of(envelope: &Envelope) -> Event {
        match envelope.kind.as_str() {
            "crm.message.received.v1" => Event::Received(envelope.decode().unwrap()),
            "crm.message.status.v1" => Event::Status(envelope.decode().unwrap()),
            other => panic!("unexpected event {other}"),
        }
    }

    /// The channel id the event is about.
    pub(crate) fn id(&self) -> String {
        match self {
            Event::Received(m) => m.channel_message_id.clone(),
            Event::Status(s) => s.channel_message_id.clone().unwrap_or_default(),
        }
    }
}

/// Takes events (acknowledging them) until `done` says so; panics after `wait`.
pub(crate) async fn collect(events: &mut Subscriber, wait: Duration, mut done: impl FnMut(&[Event]) -> bool) -> Vec<Event> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while !done(&seen) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Ok(Some(delivery)) = tokio::time::timeout(left, events.next()).await else {
            panic!("timed out after {} events: {:#?}", seen.len(), seen.iter().map(Event::id).collect::<Vec<_>>());
        };
        seen.push(Event::of(&delivery.envelope));
        let _ = delivery.ack().await;
    }
    seen
}

/// Takes whatever arrives within `quiet` of the last event.
pub(crate) async fn drain(events: &mut Subscriber, quiet: Duration) -> Vec<Event> {
    let mut seen = Vec::new();
    while let Ok(Some(delivery)) = tokio::time::timeout(quiet, events.next()).await {
        seen.push(Event::of(&delivery.envelope));
        let _ = delivery.ack().await;
    }
    seen
}

/// A small message with `id`, from `from` to `to`.
pub(crate) fn simple_message(id: &str, from: &str, to: &str, subject: &str, extra_headers: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: {id}\r\nDate: Sat, 21 Nov 2026 10:00:00 +0200\r\nMIME-Version: 1.0\r\n{extra_headers}Content-Type: text/plain; charset=utf-8\r\n\r\nBody of {subject}\r\n"
    )
    .into_bytes()
}
