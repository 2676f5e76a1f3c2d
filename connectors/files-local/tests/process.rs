//! The files-local connector as its own process on RabbitMQ: the built binary stores and returns
//! a file byte-identically, heartbeats and stops gracefully on SIGTERM, and after a SIGKILL in the
//! middle of 200 store commands and a restart, every file is stored exactly once and every
//! command has a result.
//!
//! Needs RabbitMQ at `CRM_TEST_AMQP_URL` (default `amqp://guest:guest@127.0.0.1:5672/%2f`); the
//! tests are skipped when it is unreachable, unless `CRM_REQUIRE_RABBITMQ=1`. Each test uses its
//! own bus prefix and deletes its queues at the end.

mod common;

use common::{file_content, file_result, sha256};
use crm_bus::message::{Bytes, Channel, ConnectorState, FileOutcome, FileRead, ReadFile, StoreFile};
use crm_bus::{Bus, BusError, Envelope, Exchange, Subscriber, Subscription, Trace};
use crm_connector::testing::{ConnectorProcess, ack, amqp_url, clean_up, heartbeat, test_bus};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_crm-connector-files-local");
const WAIT: Duration = Duration::from_secs(60);

/// The connector binary keeping files in `data_dir`, working in `work`.
fn start(prefix: &str, instance: &str, data_dir: &Path, work: &Path) -> ConnectorProcess {
    let mut command = ConnectorProcess::command(BIN, &amqp_url(), prefix, instance);
    command
        .env("CRM_CONNECTOR_PREFETCH", "8")
        .env("CRM_CONNECTOR_MAX_IN_FLIGHT", "4")
        .env("CRM_CONNECTOR_LOG_FILTER", "info")
        .env("CRM_CONNECTOR_FILES_LOCAL_DATA_DIR", data_dir)
        .current_dir(work);
    ConnectorProcess::spawn(&mut command, &work.join(format!("{instance}.log")))
}

/// Publishes, retrying while the broker is unreachable (another test may be restarting it):
/// callers of `Bus::publish` retry `Unavailable` until it succeeds.
async fn publish(bus: &Bus, envelope: &Envelope) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match bus.publish(envelope).await {
            Ok(()) => return,
            Err(err @ (BusError::Unavailable(_) | BusError::Timeout(_))) if tokio::time::Instant::now() < deadline => {
                eprintln!("publish failed ({err}); retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => panic!("publish failed: {err}"),
        }
    }
}

/// Sends a request, retrying while the broker is unreachable.
async fn request(bus: &Bus, envelope: &Envelope) -> Envelope {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match bus.request(envelope, WAIT).await {
            Ok(reply) => return reply,
            Err(err @ (BusError::Unavailable(_) | BusError::Timeout(_))) if tokio::time::Instant::now() < deadline => {
                eprintln!("request failed ({err}); retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => panic!("request failed: {err}"),
        }
    }
}

async fn subscribe(bus: &Bus, group: &str, binding: &str) -> Subscriber {
    bus.subscribe(Subscription::new(group, Exchange::Events, &[binding]).with_prefetch(500)).await.unwrap()
}

fn store_command(path: &str, content: Vec<u8>, request_id: &str) -> (Uuid, Envelope) {
    let media_id = Uuid::now_v7();
    let message =
        StoreFile { media_id, path: path.into(), mime_type: "application/octet-stream".into(), overwrite: false, content: Bytes(content) };
    (media_id, Envelope::new("/crm/core", &message, Trace::new(request_id)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_stores_and_returns_a_file_byte_identically() {
    let Some((bus, prefix)) = test_bus("files").await else { return };
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("files");
    let mut results = subscribe(&bus, "core.files", "files.file.*").await;
    let mut beats = subscribe(&bus, "core.heartbeats", "connector.files.heartbeat").await;
    let mut process = start(&prefix, "solo", &data, work.path());

    let ready = heartbeat(&mut beats, "solo", ConnectorState::Ready, &process, WAIT).await;
    assert_eq!(ready.name, "files-local");
    assert_eq!(ready.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(ready.channel, Channel::Files);
    assert_eq!(ready.interval_seconds, 1);

    let bytes: Vec<u8> = (0..2_500_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    let request_id = format!("req-{}", Uuid::new_v4());
    let (media_id, command) = store_command("customers/7/drawing.dxf", bytes.clone(), &request_id);
    publish(&bus, &command).await;
    let delivery = tokio::time::timeout(WAIT, results.next()).await.expect("a result").unwrap();
    let result = file_result(&delivery.envelope);
    assert_eq!(delivery.envelope.trace.request_id.as_deref(), Some(request_id.as_str()));
    assert_eq!(delivery.envelope.source, "/connectors/files-local/solo");
    ack(delivery).await;
    assert_eq!(result.media_id, Some(media_id));
    assert_eq!(result.outcome, FileOutcome::Stored { size: bytes.len() as u64, sha256: sha256(&bytes) });

    let read = Envelope::new("/crm/core", &ReadFile { path: "customers/7/drawing.dxf".into() }, Trace::new("req-read"));
    let reply = request(&bus, &read).await;
    assert_eq!(file_content(&reply).result, FileRead::Found { content: Bytes(bytes.clone()) });
    assert_eq!(std::fs::read(data.join("customers/7/drawing.dxf")).unwrap(), bytes);

    process.terminate();
    let status = process.exit(WAIT).await;
    assert!(status.success(), "graceful exit, got {status}; log:\n{}", process.logs());
    let last = heartbeat(&mut beats, "solo", ConnectorState::Stopping, &process, WAIT).await;
    assert_eq!(last.started_at, ready.started_at);

    // JSON lines, and the store command's request id is on its log lines.
    let logs = process.logs();
    for line in logs.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
    assert!(logs.lines().any(|l| l.contains(&request_id) && l.contains("stored")), "{logs}");
    assert!(!logs.contains("guest:guest"), "the AMQP password is never logged");
    clean_up(&bus, Channel::Files).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_stream_and_restarted_every_file_is_stored_exactly_once() {
    let Some((bus, prefix)) = test_bus("files").await else { return };
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("files");
    let mut results = subscribe(&bus, "core.files", "files.file.*").await;
    let mut beats = subscribe(&bus, "core.heartbeats", "connector.files.heartbeat").await;

    let files: Vec<(Uuid, String, Vec<u8>, Envelope)> = (0..200u32)
        .map(|i| {
            let path = format!("batch/{:02}/file-{i:03}.bin", i % 7);
            let content: Vec<u8> = (0..64 * 1024u32).map(|j| (j.wrapping_mul(31).wrapping_add(i * 7919) >> 3) as u8).collect();
            let (media_id, command) = store_command(&path, content.clone(), &format!("req-{i}"));
            (media_id, path, content, command)
        })
        .collect();
    let expected: HashMap<Uuid, (String, String)> =
        files.iter().map(|(id, path, content, _)| (*id, (path.clone(), sha256(content)))).collect();
    let mut seen: HashMap<Uuid, Vec<FileOutcome>> = HashMap::new();

    let mut first = start(&prefix, "first", &data, work.path());
    heartbeat(&mut beats, "first", ConnectorState::Ready, &first, WAIT).await;
    // 120 commands now; SIGKILL once some results are in, while the rest are being worked on.
    for (_, _, _, command) in &files[..120] {
        publish(&bus, command).await;
    }
    while seen.len() < 20 {
        let delivery = tokio::time::timeout(WAIT, results.next()).await.expect("results from the first process").unwrap();
        let result = file_result(&delivery.envelope);
        seen.entry(result.media_id.unwrap()).or_default().push(result.outcome);
        ack(delivery).await;
    }
    first.kill();
    let done_before_kill = seen.len();
    // The other 80 arrive while no connector runs: they wait in the queue.
    for (_, _, _, command) in &files[120..] {
        publish(&bus, command).await;
    }

    let mut second = start(&prefix, "second", &data, work.path());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    let mut results_received = seen.values().map(Vec::len).sum::<usize>();
    while seen.len() < files.len() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Ok(Some(delivery)) = tokio::time::timeout(left, results.next()).await else {
            panic!("{} of {} commands have a result; log:\n{}", seen.len(), files.len(), second.logs());
        };
        let result = file_result(&delivery.envelope);
        seen.entry(result.media_id.unwrap()).or_default().push(result.outcome);
        results_received += 1;
        ack(delivery).await;
    }
    eprintln!("{done_before_kill} results before SIGKILL; {results_received} results for {} commands", files.len());

    // Every command has a result, and every result says stored with the right digest (a
    // redelivered command finds its own bytes and says stored again).
    for (media_id, outcomes) in &seen {
        let (path, digest) = &expected[media_id];
        for outcome in outcomes {
            assert_eq!(outcome, &FileOutcome::Stored { size: 64 * 1024, sha256: digest.clone() }, "{path}");
        }
    }
    // On disk: each file once, byte-identical, nothing else but (possibly) a temporary file left
    // by the kill.
    let mut on_disk = Vec::new();
    for folder in std::fs::read_dir(data.join("batch")).unwrap() {
        for entry in std::fs::read_dir(folder.unwrap().path()).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            if !name.starts_with(".crm-tmp-") {
                on_disk.push(entry.path());
            }
        }
    }
    assert_eq!(on_disk.len(), files.len());
    for (_, path, content, _) in &files {
        assert!(std::fs::read(data.join(path)).unwrap() == *content, "{path} differs");
    }

    second.terminate();
    let status = second.exit(WAIT).await;
    assert!(status.success(), "graceful exit, got {status}; log:\n{}", second.logs());
    clean_up(&bus, Channel::Files).await;
}
