//! The files-local connector as a task on the in-process bus, the way `crm serve` runs it:
//! store / ensure / read round trip, idempotent redelivery, conflicts, the size cap, unsafe paths
//! and malformed commands.

mod common;

use common::{file_content, file_result, sha256};
use crm_bus::message::{Bytes, EnsureFolder, FileContent, FileOutcome, FileRead, FileResult, ReadFile, StoreFile};
use crm_bus::{Bus, BusConfig, Delivery, Envelope, Exchange, Subscriber, Subscription, Trace};
use crm_connector::{CancellationToken, ConnectorContext, RunSettings};
use crm_connector_files_local::{FilesLocal, FilesLocalConfig};
use std::path::Path;
use std::time::Duration;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(20);
const GROUP: &str = "connector.files.commands";

struct Running {
    bus: Bus,
    results: Subscriber,
    token: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
    data: std::path::PathBuf,
}

async fn start(max_file_bytes: u64) -> Running {
    start_on(Bus::in_process(BusConfig::default()), max_file_bytes).await
}

async fn start_on(bus: Bus, max_file_bytes: u64) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("files");
    let results = bus.subscribe(Subscription::new("core.files", Exchange::Events, &["files.file.*"])).await.unwrap();
    let connector = FilesLocal::new(FilesLocalConfig { data_dir: data.clone(), max_file_bytes }).unwrap();
    let token = CancellationToken::new();
    let settings = RunSettings { instance: Some("test".into()), ..RunSettings::default() };
    let task = crm_connector::spawn_with(connector, ConnectorContext::new(bus.clone(), token.clone()).with_settings(settings));
    let deadline = tokio::time::Instant::now() + WAIT;
    while !bus.queue_stats().await.unwrap().iter().any(|q| q.group == GROUP && q.consumers >= 1) {
        assert!(tokio::time::Instant::now() < deadline, "the connector did not subscribe");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Running { bus, results, token, task, _dir: dir, data: std::fs::canonicalize(data).unwrap() }
}

impl Running {
    async fn result(&mut self) -> (FileResult, Envelope) {
        let delivery: Delivery = tokio::time::timeout(WAIT, self.results.next()).await.expect("a result in time").unwrap();
        let result = file_result(&delivery.envelope);
        let envelope = delivery.envelope.clone();
        delivery.ack().await.unwrap();
        (result, envelope)
    }

    async fn store(&mut self, path: &str, content: &[u8], overwrite: bool) -> FileResult {
        let message = StoreFile {
            media_id: Uuid::now_v7(),
            path: path.into(),
            mime_type: "application/octet-stream".into(),
            overwrite,
            content: Bytes(content.to_vec()),
        };
        self.bus.publish(&Envelope::new("/crm/core", &message, Trace::new(format!("req-{}", message.media_id)))).await.unwrap();
        let (result, _) = self.result().await;
        assert_eq!(result.media_id, Some(message.media_id));
        result
    }

    async fn read(&self, path: &str) -> FileRead {
        let request = Envelope::new("/crm/core", &ReadFile { path: path.into() }, Trace::new("req-read"));
        let reply = self.bus.request(&request, WAIT).await.unwrap();
        let content = file_content(&reply);
        assert_eq!(content.path, path);
        content.result
    }

    async fn stop(self) {
        self.token.cancel();
        tokio::time::timeout(WAIT, self.task).await.unwrap().unwrap().unwrap();
    }
}

fn failed(result: &FileResult) -> &str {
    match &result.outcome {
        FileOutcome::Failed { reason } => reason,
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test]
async fn store_ensure_and_read_round_trip() {
    let mut running = start(25 * 1024 * 1024).await;

    let folder = EnsureFolder { path: "customers/Παπαδόπουλος".into() };
    let ensure = Envelope::new("/crm/core", &folder, Trace::new("req-folder"));
    running.bus.publish(&ensure).await.unwrap();
    let (result, envelope) = running.result().await;
    assert_eq!(
        result,
        FileResult { media_id: None, path: folder.path.clone(), outcome: FileOutcome::Stored { size: 0, sha256: String::new() } }
    );
    assert_eq!(envelope.routing_key, "files.file.stored");
    assert_eq!(envelope.trace.request_id.as_deref(), Some("req-folder"), "the request id follows the command");
    assert!(envelope.source.starts_with("/connectors/files-local/"));
    assert!(running.data.join("customers/Παπαδόπουλος").is_dir());

    let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let result = running.store("customers/Παπαδόπουλος/σχέδιο v2.dxf", &bytes, false).await;
    assert_eq!(result.outcome, FileOutcome::Stored { size: bytes.len() as u64, sha256: sha256(&bytes) });
    assert_eq!(std::fs::read(running.data.join("customers/Παπαδόπουλος/σχέδιο v2.dxf")).unwrap(), bytes);

    assert_eq!(running.read("customers/Παπαδόπουλος/σχέδιο v2.dxf").await, FileRead::Found { content: Bytes(bytes) });
    assert_eq!(running.read("customers/nobody.pdf").await, FileRead::NotFound);
    assert!(matches!(running.read("../etc/passwd").await, FileRead::Failed { reason } if reason.contains("'..'")));
    // An empty file is a file.
    let result = running.store("empty.txt", b"", false).await;
    assert_eq!(result.outcome, FileOutcome::Stored { size: 0, sha256: sha256(b"") });
    assert_eq!(running.read("empty.txt").await, FileRead::Found { content: Bytes(Vec::new()) });
    running.stop().await;
}

#[tokio::test]
async fn a_redelivered_store_is_a_success_and_different_bytes_need_overwrite() {
    let mut running = start(1024 * 1024).await;
    let message = StoreFile {
        media_id: Uuid::now_v7(),
        path: "a/b.txt".into(),
        mime_type: "text/plain".into(),
        overwrite: false,
        content: Bytes(b"first".to_vec()),
    };
    let envelope = Envelope::new("/crm/core", &message, Trace::new("req-1"));
    // The same command twice, as after a lost acknowledgement.
    running.bus.publish(&envelope).await.unwrap();
    running.bus.publish(&envelope).await.unwrap();
    for _ in 0..2 {
        let (result, _) = running.result().await;
        assert_eq!(result.outcome, FileOutcome::Stored { size: 5, sha256: sha256(b"first") });
    }

    let result = running.store("a/b.txt", b"second", false).await;
    assert!(failed(&result).contains("exists with different content"), "{result:?}");
    assert_eq!(std::fs::read(running.data.join("a/b.txt")).unwrap(), b"first");

    let result = running.store("a/b.txt", b"second", true).await;
    assert_eq!(result.outcome, FileOutcome::Stored { size: 6, sha256: sha256(b"second") });
    assert_eq!(std::fs::read(running.data.join("a/b.txt")).unwrap(), b"second");
    let names: Vec<_> = std::fs::read_dir(running.data.join("a")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names, ["b.txt"], "no temporary files left");
    running.stop().await;
}

#[tokio::test]
async fn files_over_the_cap_and_unsafe_paths_fail_with_a_reason() {
    let mut running = start(1000).await;
    let result = running.store("big.bin", &[7u8; 1001], false).await;
    let reason = failed(&result);
    assert!(reason.contains("1001 bytes") && reason.contains("1000-byte cap"), "{reason}");
    assert!(!running.data.join("big.bin").exists());
    let result = running.store("exact.bin", &[7u8; 1000], false).await;
    assert!(matches!(result.outcome, FileOutcome::Stored { size: 1000, .. }));

    let outside = tempfile::tempdir().unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(outside.path(), running.data.join("out")).unwrap();
    for path in [
        "../escape.txt",
        "/etc/passwd",
        "a\\b",
        "a//b",
        "nul\0byte",
        "a/./b",
        "out/x.txt",
        "",
        "C:evil.txt",
        "CON.txt",
        "x\u{202E}fdp.exe",
        "dot.",
    ] {
        let result = running.store(path, b"x", false).await;
        assert_eq!(result.path, path);
        assert!(!failed(&result).is_empty());
    }
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0, "nothing written outside");
    assert!(!running.dir_has_escape());
    running.stop().await;
}

/// File-system errors that retrying cannot fix give a `failed` result at once (no retries, no
/// dead letter): a read-only folder (only where the tests are not root, who writes anyway) and
/// a file where the data directory should be (not a directory).
#[tokio::test]
async fn errors_retrying_cannot_fix_are_failed_results() {
    let mut running = start(1024).await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let locked = running.data.join("locked");
        std::fs::create_dir(&locked).unwrap();
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
        let probe = locked.join("probe");
        if std::fs::write(&probe, b"x").is_err() {
            let result = running.store("locked/a.txt", b"x", false).await;
            let reason = failed(&result);
            assert!(reason.contains("cannot store the file 'locked/a.txt'") && reason.contains("ermission denied"), "{reason}");
        } else {
            std::fs::remove_file(&probe).unwrap();
        }
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::remove_dir_all(&running.data).unwrap();
    std::fs::write(&running.data, b"a file where the data directory was").unwrap();
    let result = running.store("a/b.txt", b"x", false).await;
    let reason = failed(&result);
    assert!(reason.contains("cannot store the file 'a/b.txt'") && reason.contains("ot a directory"), "{reason}");
    running.stop().await;
}

impl Running {
    fn dir_has_escape(&self) -> bool {
        Path::new(&self.data).parent().unwrap().join("escape.txt").exists()
    }
}

#[tokio::test]
async fn malformed_commands_are_dead_lettered_with_the_reason() {
    let running = start(1000).await;
    let mut dead = running.bus.dead_letters().await.unwrap();
    let message =
        StoreFile { media_id: Uuid::now_v7(), path: "x".into(), mime_type: "text/plain".into(), overwrite: false, content: Bytes(vec![1]) };
    let mut envelope = Envelope::new("/crm/core", &message, Trace::new("req-bad"));
    envelope.data = br#"{"media_id":"00000000-0000-0000-0000-000000000000","path":"x","mime_type":"a","content":"not base64!"}"#.to_vec();
    running.bus.publish(&envelope).await.unwrap();
    let letter = tokio::time::timeout(WAIT, dead.next()).await.unwrap().unwrap();
    assert_eq!(letter.envelope.id, envelope.id);
    let info = letter.dead.clone().unwrap();
    assert_eq!(info.group, GROUP);
    assert!(info.reason.contains("content") && info.reason.contains("base64"), "{}", info.reason);
    letter.ack().await.unwrap();
    running.stop().await;
}

/// crm-bus's own types decode what the connector sends.
#[test]
fn catalog_decodes_file_messages() {
    let result =
        FileResult { media_id: Some(Uuid::now_v7()), path: "a".into(), outcome: FileOutcome::Stored { size: 1, sha256: "00".into() } };
    let envelope = Envelope::new("/connectors/files-local/x", &result, Trace::default());
    assert_eq!(envelope.decode::<FileResult>().unwrap(), result);
    let content = FileContent { path: "a".into(), result: FileRead::NotFound };
    let envelope = Envelope::new("/connectors/files-local/x", &content, Trace::default());
    assert_eq!(envelope.decode::<FileContent>().unwrap(), content);
}

/// A file whose bytes, as base64, would make a reply larger than the bus takes is refused with
/// the reason at once (the API answers 502), not read and then refused by the bus; a file that
/// fits is read.
#[tokio::test]
async fn a_file_too_large_for_a_reply_is_refused_with_the_reason() {
    // Room for files of up to 100,848 bytes: (200,000 - 64 KiB) / 4 * 3.
    let bus = Bus::in_process(BusConfig { max_message_bytes: 200_000, ..BusConfig::default() });
    let running = start_on(bus, 1024 * 1024).await;
    std::fs::write(running.data.join("large.bin"), vec![7u8; 100_849]).unwrap();
    std::fs::write(running.data.join("small.bin"), vec![7u8; 100_848]).unwrap();
    match running.read("large.bin").await {
        FileRead::Failed { reason } => assert!(reason.contains("100849 bytes, over the 100848-byte cap"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(running.read("small.bin").await, FileRead::Found { content: Bytes(vec![7u8; 100_848]) });
    running.stop().await;
}
