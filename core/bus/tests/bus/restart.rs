//! The journaled in-process bus (`crm serve` without RabbitMQ) across a restart: queues and
//! bindings are durable; what was queued, held unacknowledged, waiting for a retry or
//! dead-lettered comes back, and nothing acknowledged does; a crash (the process killed) loses nothing a publish returned for; a write cut short by
//! the crash is skipped; a second process cannot open the same journal.

use crate::support::{assert_quiet, command, event, queue_figures, recv, test_config};
use crm_bus::{Bus, BusConfig, DEAD_LETTER_GROUP, Delivery, Exchange, RetryPolicy, Subscriber, Subscription};
use std::collections::BTreeSet;
use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

const GROUP: &str = "core.events";

/// Retries wait an hour, so a retried message is still waiting when the bus restarts.
fn config() -> BusConfig {
    BusConfig { retry: RetryPolicy { max_attempts: 3, backoff: vec![Duration::from_secs(3600)] }, ..test_config("restart") }
}

/// A fresh directory (removed when dropped) and the journal's path in it.
fn journal_path() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("bus.journal");
    (dir, path)
}

/// Leaves `sent` queued for [`GROUP`] in the journal at `path` (the bus closed afterwards).
async fn queue_and_close(path: &Path, sent: &[crm_bus::Envelope]) {
    let bus = open(path);
    bus.declare(&Subscription::new(GROUP, Exchange::Events, &["#"])).await.unwrap();
    bus.publish_all(sent).await.unwrap();
    bus.close().await;
}

/// Appends `bytes` to the file at `path`, as damage from outside the bus.
fn append(path: &Path, bytes: &[u8]) {
    std::fs::OpenOptions::new().append(true).open(path).unwrap().write_all(bytes).unwrap();
}

fn open(path: &Path) -> Bus {
    Bus::in_process_durable(config(), path).expect("open the journal")
}

async fn subscribe(bus: &Bus) -> Subscriber {
    bus.subscribe(Subscription::new(GROUP, Exchange::Events, &["#"]).with_prefetch(500)).await.expect("subscribe")
}

/// Takes `count` deliveries.
async fn take(subscriber: &mut Subscriber, count: usize) -> Vec<Delivery> {
    let mut deliveries = Vec::with_capacity(count);
    for _ in 0..count {
        deliveries.push(recv(subscriber).await);
    }
    deliveries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_brings_back_everything_not_acknowledged() {
    let (_dir, path) = journal_path();
    let sent: Vec<_> = (0..6).map(|n| event("email.message.received", n)).collect();
    {
        let bus = open(&path);
        let mut sub = subscribe(&bus).await;
        bus.publish_all(&sent).await.unwrap();
        let [acked, held, retried, dead, requeued, acked_too] = <[Delivery; 6]>::try_from(take(&mut sub, 6).await).unwrap();
        acked.ack().await.unwrap();
        retried.retry("the store is down").await.unwrap();
        dead.dead_letter("no such customer field").await.unwrap();
        requeued.requeue().await.unwrap();
        let requeued = recv(&mut sub).await;
        assert_eq!(requeued.envelope, sent[4]);
        acked_too.ack().await.unwrap();
        bus.close().await;
        drop((held, requeued, sub));
    }

    let bus = open(&path);
    assert_eq!(queue_figures(&bus, GROUP).await, Some((3, 0)), "the group's queue holds its three messages before anyone subscribes");
    assert_eq!(queue_figures(&bus, DEAD_LETTER_GROUP).await, Some((1, 0)), "the dead letter is back");
    let mut sub = subscribe(&bus).await;
    let back = take(&mut sub, 3).await;
    assert_quiet(&mut sub).await;
    let ids: BTreeSet<&str> = back.iter().map(|d| d.envelope.id.as_str()).collect();
    assert_eq!(ids, [1, 2, 4].iter().map(|&i| sent[i].id.as_str()).collect(), "held, retried and requeued come back; acked ones do not");
    for delivery in &back {
        let original = sent.iter().find(|s| s.id == delivery.envelope.id).unwrap();
        assert_eq!(&delivery.envelope, original, "the envelope comes back exactly as published");
        assert!(delivery.redelivered, "a restored message may have been seen: it is marked redelivered");
        let expected_attempt = if delivery.envelope.id == sent[2].id { 2 } else { 1 };
        assert_eq!(delivery.attempt, expected_attempt, "a retry keeps its attempt count across the restart");
    }
    let mut dead = bus.dead_letters().await.unwrap();
    let letter = recv(&mut dead).await;
    assert_eq!(letter.envelope, sent[3]);
    let info = letter.dead.clone().expect("dead-letter information");
    assert_eq!((info.group.as_str(), info.reason.as_str(), info.attempts), (GROUP, "no such customer field", 1));
    letter.ack().await.unwrap();
    for delivery in back {
        delivery.ack().await.unwrap();
    }
    bus.close().await;
    drop((sub, dead, bus));

    let bus = open(&path);
    assert_eq!(queue_figures(&bus, GROUP).await, Some((0, 0)), "the queue is durable; nothing acknowledged comes back");
    assert_eq!(queue_figures(&bus, DEAD_LETTER_GROUP).await, Some((0, 0)));
    bus.publish(&sent[5]).await.unwrap();
    assert_eq!(
        queue_figures(&bus, GROUP).await,
        Some((1, 0)),
        "its bindings are durable too: an event published before anyone subscribes waits"
    );
    let mut sub = subscribe(&bus).await;
    assert_eq!(recv(&mut sub).await.envelope, sent[5], "a restarted bus works as before");
    assert_quiet(&mut sub).await;
    bus.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_lettered_request_is_kept_across_a_restart() {
    let (_dir, path) = journal_path();
    let asked = command("files.file.read", 1);
    {
        let bus = open(&path);
        let mut sub = bus.subscribe(Subscription::new("connector.files.commands", Exchange::Commands, &["files.#"])).await.unwrap();
        let requester = {
            let bus = bus.clone();
            let asked = asked.clone();
            tokio::spawn(async move { bus.request(&asked, Duration::from_secs(30)).await })
        };
        let delivery = recv(&mut sub).await;
        assert_eq!(delivery.envelope, asked);
        delivery.dead_letter("the path is not valid").await.unwrap();
        requester.abort();
        bus.close().await;
    }
    let bus = open(&path);
    assert_eq!(queue_figures(&bus, DEAD_LETTER_GROUP).await, Some((1, 0)), "the dead letter outlives its requester");
    let mut dead = bus.dead_letters().await.unwrap();
    let letter = recv(&mut dead).await;
    assert_eq!(letter.envelope, asked);
    assert_eq!(letter.dead.as_ref().map(|d| d.reason.as_str()), Some("the path is not valid"));
    letter.ack().await.unwrap();
    bus.close().await;
}

/// The child half of [`a_crash_loses_nothing_a_publish_returned_for`]: publishes 200 events,
/// acknowledges the first 50, publishes one more (which returns once everything before it is on
/// disk), prints the ids it expects back and waits to be killed. Does nothing in a normal run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by a_crash_loses_nothing_a_publish_returned_for in a child process"]
async fn crashing_child() {
    let Some(path) = std::env::var_os("CRM_TEST_JOURNAL_CHILD") else { return };
    let bus = open(Path::new(&path));
    let mut sub = subscribe(&bus).await;
    let mut unacked = Vec::new();
    for n in 0..200 {
        let sent = event("email.message.received", n);
        bus.publish(&sent).await.unwrap();
        unacked.push(sent.id);
    }
    for delivery in take(&mut sub, 50).await {
        assert_eq!(delivery.envelope.id, unacked[0]);
        unacked.remove(0);
        delivery.ack().await.unwrap();
    }
    let last = event("email.message.received", 200);
    bus.publish(&last).await.unwrap();
    unacked.push(last.id);
    let mut out = std::io::stdout().lock();
    writeln!(out, "READY {}", serde_json::to_string(&unacked).unwrap()).unwrap();
    out.flush().unwrap();
    drop(out);
    tokio::time::sleep(Duration::from_secs(600)).await;
    drop(sub);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loses_nothing_a_publish_returned_for() {
    let (_dir, path) = journal_path();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "restart::crashing_child", "--nocapture", "--test-threads=1"])
        .env("CRM_TEST_JOURNAL_CHILD", &path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the child");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest prints the test's name first, on the same line.
            if let Some((_, ids)) = line.split_once("READY ") {
                let _ = tx.send(ids.to_owned());
            }
        }
    });
    let ready = rx.recv_timeout(Duration::from_secs(120));
    child.kill().expect("kill the child (SIGKILL)");
    child.wait().unwrap();
    let expected: Vec<String> = serde_json::from_str(&ready.expect("the child published and printed READY")).unwrap();
    assert_eq!(expected.len(), 151);

    let bus = open(&path);
    let mut sub = subscribe(&bus).await;
    let back = take(&mut sub, expected.len()).await;
    assert_quiet(&mut sub).await;
    let ids: Vec<&str> = back.iter().map(|d| d.envelope.id.as_str()).collect();
    assert_eq!(ids, expected.iter().map(String::as_str).collect::<Vec<_>>(), "every unacknowledged message, in publishing order");
    assert!(back.iter().all(|d| d.redelivered));
    bus.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_last_line_is_skipped_and_the_journal_rewritten() {
    let (_dir, path) = journal_path();
    let sent: Vec<_> = (0..3).map(|n| event("email.message.received", n)).collect();
    queue_and_close(&path, &sent).await;
    append(&path, br#"{"put":{"seq":4,"queue":"restart.core.events","group":"core.events","attempt":1,"envel"#);

    let bus = open(&path);
    let journal = std::fs::read_to_string(&path).unwrap();
    assert!(!journal.contains(r#""seq":4"#), "the torn line is gone");
    assert_eq!(journal.lines().filter(|l| l.starts_with(r#"{"bind""#)).count(), 1, "the rewritten journal holds the binding");
    assert_eq!(journal.lines().filter(|l| l.starts_with(r#"{"put""#)).count(), 3, "and the three messages, nothing else");
    assert_eq!(journal.lines().count(), 4);
    let mut sub = subscribe(&bus).await;
    let back = take(&mut sub, 3).await;
    assert_quiet(&mut sub).await;
    assert_eq!(back.iter().map(|d| &d.envelope).collect::<Vec<_>>(), sent.iter().collect::<Vec<_>>());
    bus.close().await;
}

/// A retry or dead letter is one line that puts the message in its new place and replaces the
/// old one; when that line is damaged, the message stays where it was rather than vanishing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_move_leaves_the_message_where_it_was() {
    let (_dir, path) = journal_path();
    let sent = event("email.message.received", 1);
    queue_and_close(&path, std::slice::from_ref(&sent)).await;
    let journal = std::fs::read_to_string(&path).unwrap();
    let put = journal.lines().find(|l| l.starts_with(r#"{"put""#)).expect("the message's line");
    let mut moved: serde_json::Value = serde_json::from_str(put).unwrap();
    let seq = moved["put"]["seq"].as_u64().unwrap();
    moved["put"]["seq"] = (seq + 1).into();
    moved["put"]["replaces"] = seq.into();
    moved["put"]["data"] = "%%% not base64 %%%".into();
    append(&path, format!("{moved}\n").as_bytes());

    let bus = open(&path);
    let mut sub = subscribe(&bus).await;
    let back = take(&mut sub, 1).await;
    assert_quiet(&mut sub).await;
    assert_eq!(back[0].envelope, sent);
    bus.close().await;
}

/// A journal in directories that do not exist yet: they are made (and synced), and it works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_in_new_directories_is_opened() {
    let (dir, _) = journal_path();
    let path = dir.path().join("a/b/c/bus.journal");
    let sent = event("email.message.received", 2);
    queue_and_close(&path, std::slice::from_ref(&sent)).await;
    let bus = open(&path);
    let mut sub = subscribe(&bus).await;
    assert_eq!(take(&mut sub, 1).await[0].envelope, sent);
    bus.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_retry_and_dead_letter_return_once_the_journal_has_them() {
    let (_dir, path) = journal_path();
    let journal = || std::fs::read_to_string(&path).unwrap();
    let bus = open(&path);
    let mut sub = subscribe(&bus).await;
    for n in 0..20 {
        let sent = event("email.message.received", n);
        bus.publish(&sent).await.unwrap();
        assert!(journal().contains(&sent.id), "message {n} is in the journal when its publish returns");
    }
    let first = recv(&mut sub).await;
    let id = first.envelope.id.clone();
    first.retry("the store is down").await.unwrap();
    assert!(journal().contains(r#""attempt":2"#), "the retry is in the journal when it returns");
    let second = recv(&mut sub).await;
    second.dead_letter("no such customer field").await.unwrap();
    let journal = journal();
    let dead = journal.lines().find(|l| l.contains("no such customer field")).expect("the dead letter is in the journal when it returns");
    assert!(dead.contains(r#""queue":"restart.dead-letters""#), "in the dead-letter queue: {dead}");
    assert!(journal.contains(&id));
    bus.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_lines_are_skipped_and_kept_in_a_copy() {
    let (dir, path) = journal_path();
    let sent: Vec<_> = (0..2).map(|n| event("email.message.received", n)).collect();
    queue_and_close(&path, &sent[..1]).await;
    append(&path, b"{\"put\":{\"seq\":\"garbled\"}}\n");
    queue_and_close(&path, &sent[1..]).await;
    let copies: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("bus.journal.damaged-"))
        .collect();
    assert_eq!(copies.len(), 1, "the journal as it was is kept once");
    assert!(std::fs::read_to_string(&copies[0]).unwrap().contains("garbled"));
    assert!(!std::fs::read_to_string(&path).unwrap().contains("garbled"), "the journal itself no longer has the damaged line");
    let bus = open(&path);
    let mut sub = subscribe(&bus).await;
    let back = take(&mut sub, 2).await;
    assert_quiet(&mut sub).await;
    assert_eq!(
        back.iter().map(|d| &d.envelope).collect::<Vec<_>>(),
        sent.iter().collect::<Vec<_>>(),
        "the readable messages all come back"
    );
    bus.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_is_used_by_one_bus_at_a_time() {
    let (_dir, path) = journal_path();
    let bus = open(&path);
    let second = Bus::in_process_durable(config(), &path).expect_err("a second bus on the same journal is refused");
    assert!(second.to_string().contains("in use"), "{second}");
    bus.close().await;
    drop(bus);
    open(&path).close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_topology_empties_the_journal() {
    let (_dir, path) = journal_path();
    {
        let bus = open(&path);
        bus.declare(&Subscription::new(GROUP, Exchange::Events, &["#"])).await.unwrap();
        bus.publish(&event("email.message.received", 1)).await.unwrap();
        bus.delete_topology().await.unwrap();
        bus.close().await;
    }
    let bus = open(&path);
    assert_eq!(queue_figures(&bus, GROUP).await, None, "no queue and no message came back");
    bus.close().await;
}
