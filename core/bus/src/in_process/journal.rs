//! The in-process bus's journal: its queues, their bindings and what they hold, on disk, so a
//! restart of `crm serve` loses no message. An append-only file of JSON lines: `{"bind":…}` when a
//! group's queue gets a binding (queues and bindings are durable, as on RabbitMQ), `{"put":…}`
//! when a message enters a queue (published, retried, dead-lettered, replayed) and
//! `{"done":seq}` when it leaves for good (acknowledged, or moved on as a new `put`). A publish
//! (or retry, or dead-lettering) returns once its lines are on disk (`fsync`, shared by every call
//! waiting at that moment); an ack's `done` is written without waiting, since losing one only
//! means a redelivery. Opening the journal reads it back, keeps the messages not done (a last
//! line cut short by a crash is skipped; other damaged lines too, once the file is copied aside)
//! and rewrites the file with only those; a running journal rewrites itself the same way when it
//! has grown well past what it holds, or to repair itself after a failed write. A lock file keeps
//! a second process off it.
//!
//! One writer thread owns the file; the broker sends it operations in the order it changes its
//! queues (under its lock), so a `done` is never written before its `put`.

use super::broker::Message;
use crate::BusError;
use crate::delivery::DeadInfo;
use crate::envelope::{Envelope, Trace};
use crate::message::Exchange;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead as _, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// The journal is rewritten when it is larger than this and four times what it holds.
pub(super) const COMPACT_ABOVE: u64 = 64 * 1024 * 1024;

/// A message read back from the journal, for the queue it was in.
#[derive(Debug)]
pub(super) struct Restored {
    pub(super) queue: String,
    pub(super) group: String,
    pub(super) message: Message,
}

/// What a journal held when it was opened: the bindings of the groups' queues and the messages,
/// in the order they were queued.
#[derive(Debug, Default)]
pub(super) struct Contents {
    pub(super) bindings: Vec<Binding>,
    pub(super) messages: Vec<Restored>,
}

/// A group's queue bound to a topic pattern on an exchange.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Binding {
    pub(super) exchange: Exchange,
    pub(super) pattern: String,
    pub(super) queue: String,
    pub(super) group: String,
}

impl Binding {
    fn key(&self) -> String {
        format!("{} {} {}", self.exchange.kind(), self.pattern, self.queue)
    }
}

/// The broker's handle on the journal's writer thread.
#[derive(Debug)]
pub(super) struct Journal {
    path: PathBuf,
    ops: Mutex<Option<mpsc::Sender<Op>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    last_seq: AtomicU64,
}

#[derive(Debug)]
enum Op {
    Bind {
        key: String,
        line: Vec<u8>,
    },
    Put {
        seq: u64,
        line: Vec<u8>,
        /// The message this one takes the place of (a retry or a dead-lettering): one line, so
        /// no crash can leave both or neither.
        replaces: Option<u64>,
    },
    Done(u64),
    /// Answers once everything sent before is on disk.
    Sync(oneshot::Sender<Result<(), String>>),
    /// Forgets every message (the bus's topology was deleted).
    Clear,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Line {
    Bind(Binding),
    Put(Box<Put>),
    Done(u64),
}

#[derive(Debug, Serialize, Deserialize)]
struct Put {
    seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    replaces: Option<u64>,
    queue: String,
    group: String,
    attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dead: Option<Dead>,
    envelope: Stored,
}

#[derive(Debug, Serialize, Deserialize)]
struct Dead {
    group: String,
    reason: String,
    attempts: u32,
    dead_at: DateTime<Utc>,
}

/// An envelope exactly as published (the data in base64, so a malformed body survives as is).
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    id: String,
    source: String,
    kind: String,
    time: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    exchange: String,
    routing_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    traceparent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
    data: String,
}

impl Journal {
    /// Opens (or creates) the journal at `path`, returns what it holds, in the order it was
    /// queued, and rewrites it with only that. Fails when another process has it open. A journal
    /// with damaged lines (other than a last line cut short by a crash) is first copied aside
    /// (`<path>.damaged-<time>`), so the rewrite destroys nothing.
    pub(super) fn open(path: &Path, compact_above: u64) -> Result<(Journal, Contents), BusError> {
        let failed = |what: &str, err: io::Error| BusError::Unavailable(format!("bus journal {}: {what}: {err}", path.display()));
        // Every directory made is synced into its parent, from the first that exists down, so a
        // power cut cannot take back the directory of a journal that was already synced.
        let mut missing = Vec::new();
        let mut at = path.parent();
        while let Some(dir) = at.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
            missing.push(dir);
            at = dir.parent();
        }
        for dir in missing.into_iter().rev() {
            match std::fs::create_dir(dir) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
                Err(err) => return Err(failed("cannot create its directory", err)),
            }
            sync_dir(directory(dir)).map_err(|e| failed("cannot sync its directory's parent", e))?;
        }
        let lock = private_file(&suffixed(path, ".lock"), false).map_err(|e| failed("cannot open its lock file", e))?;
        lock.try_lock().map_err(|_| BusError::Unavailable(format!("bus journal {} is in use by another process", path.display())))?;

        let read = read(path).map_err(|e| failed("cannot read it", e))?;
        if read.torn {
            tracing::warn!(journal = %path.display(), "skipped the journal's last line, cut short by a crash");
        }
        if read.damaged > 0 {
            let copy = suffixed(path, &format!(".damaged-{}", Utc::now().format("%Y%m%dT%H%M%S%.fZ")));
            std::fs::copy(path, &copy)
                .and_then(|_| File::open(&copy)?.sync_all())
                .and_then(|()| sync_dir(directory(path)))
                .map_err(|e| failed("cannot keep a copy of its damaged lines", e))?;
            tracing::error!(journal = %path.display(), damaged = read.damaged, copy = %copy.display(), "skipped damaged journal lines; the journal as it was is kept in the copy");
        }
        let mut contents =
            Contents { bindings: Vec::with_capacity(read.bindings.len()), messages: Vec::with_capacity(read.messages.len()) };
        let mut held = Held::default();
        for (key, (binding, line)) in read.bindings {
            contents.bindings.push(binding);
            held.bind(key, line);
        }
        for (seq, (message, line)) in read.messages {
            contents.messages.push(message);
            held.put(seq, line);
        }
        let last_seq = held.lines.keys().next_back().copied().unwrap_or(0);
        let (file, dir_synced) = rewrite(path, held.all()).map_err(|e| failed("cannot rewrite it", e))?;
        dir_synced.map_err(|e| failed("cannot sync its directory", e))?;
        if !contents.messages.is_empty() {
            tracing::info!(journal = %path.display(), messages = contents.messages.len(), "in-process bus: restored the messages queued before the restart");
        }
        let writer = Writer {
            path: path.to_owned(),
            file: BufWriter::new(file),
            held,
            written: 0,
            compact_above,
            failure: None,
            last_repair: None,
            repair_pause: REPAIR_PAUSE,
            _lock: lock,
        };
        let journal = Journal::start(writer, last_seq).map_err(|e| failed("cannot start its writer", e))?;
        Ok((journal, contents))
    }

    /// Runs `writer` on its own thread.
    fn start(writer: Writer, last_seq: u64) -> io::Result<Journal> {
        let path = writer.path.clone();
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new().name("bus-journal".into()).spawn(move || writer.run(&rx))?;
        Ok(Journal { path, ops: Mutex::new(Some(tx)), writer: Mutex::new(Some(thread)), last_seq: AtomicU64::new(last_seq) })
    }

    /// Records a new binding of a group's queue.
    pub(super) fn bind(&self, binding: Binding) {
        let key = binding.key();
        let mut line = serde_json::to_vec(&Line::Bind(binding)).expect("a journal line serializes");
        line.push(b'\n');
        self.send(Op::Bind { key, line });
    }

    /// Records that `message` entered `queue`, in place of message `replaces` when it moved
    /// there from another queue; returns its sequence number.
    pub(super) fn put(&self, queue: &str, group: &str, message: &Message, replaces: Option<u64>) -> u64 {
        let seq = self.last_seq.fetch_add(1, Ordering::Relaxed) + 1;
        let put = Put::of(seq, replaces, queue, group, message);
        let mut line = serde_json::to_vec(&Line::Put(Box::new(put))).expect("a journal line serializes");
        line.push(b'\n');
        self.send(Op::Put { seq, line, replaces });
        seq
    }

    /// Records that message `seq` left its queue for good.
    pub(super) fn done(&self, seq: u64) {
        self.send(Op::Done(seq));
    }

    /// Forgets every message.
    pub(super) fn clear(&self) {
        self.send(Op::Clear);
    }

    /// Resolves once everything recorded so far is on disk.
    pub(super) fn synced(&self) -> impl Future<Output = Result<(), BusError>> + use<> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Sync(tx));
        let path = self.path.clone();
        async move {
            match rx.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(err)) => Err(BusError::Unavailable(format!("bus journal {}: {err}", path.display()))),
                Err(_) => Err(BusError::Closed),
            }
        }
    }

    fn send(&self, op: Op) {
        if let Some(ops) = self.ops.lock().unwrap_or_else(PoisonError::into_inner).as_ref() {
            // The writer only stops when this handle is dropped; a `Sync` sent after that
            // resolves as `Closed`.
            let _ = ops.send(op);
        }
    }
}

impl Drop for Journal {
    /// Lets the writer finish what was sent and waits for it, so the file and its lock are free
    /// when the bus is gone.
    fn drop(&mut self) {
        self.ops.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(writer) = self.writer.lock().unwrap_or_else(PoisonError::into_inner).take() {
            let _ = writer.join();
        }
    }
}

/// The lines of what a journal holds: bindings by key, messages by sequence number, and their
/// size in bytes.
#[derive(Debug, Default)]
struct Held {
    bindings: BTreeMap<String, Vec<u8>>,
    lines: BTreeMap<u64, Vec<u8>>,
    bytes: u64,
}

impl Held {
    fn bind(&mut self, key: String, line: Vec<u8>) {
        self.bytes += line.len() as u64;
        if let Some(old) = self.bindings.insert(key, line) {
            self.bytes -= old.len() as u64;
        }
    }

    fn put(&mut self, seq: u64, line: Vec<u8>) {
        self.bytes += line.len() as u64;
        if let Some(old) = self.lines.insert(seq, line) {
            self.bytes -= old.len() as u64;
        }
    }

    /// Forgets message `seq`; whether it was held.
    fn done(&mut self, seq: u64) -> bool {
        let Some(line) = self.lines.remove(&seq) else { return false };
        self.bytes -= line.len() as u64;
        true
    }

    fn clear(&mut self) {
        *self = Held::default();
    }

    /// Every line, bindings first: the journal rewritten.
    fn all(&self) -> impl Iterator<Item = &Vec<u8>> {
        self.bindings.values().chain(self.lines.values())
    }
}

/// How long a journal whose write failed waits before it tries to repair itself again.
const REPAIR_PAUSE: Duration = Duration::from_secs(1);

/// The writer thread's state: the open journal and the lines of what it holds.
struct Writer {
    path: PathBuf,
    file: BufWriter<File>,
    held: Held,
    /// Bytes appended since the file was last rewritten.
    written: u64,
    compact_above: u64,
    /// Set when an append or an `fsync` failed (the file may lack lines), until a rewrite from
    /// `held` repairs it; syncs report it meanwhile.
    failure: Option<String>,
    last_repair: Option<Instant>,
    repair_pause: Duration,
    _lock: File,
}

impl Writer {
    fn run(mut self, ops: &mpsc::Receiver<Op>) {
        while let Ok(first) = ops.recv() {
            let mut waiting = Vec::new();
            let mut clear = false;
            for op in std::iter::once(first).chain(ops.try_iter()) {
                match op {
                    Op::Bind { key, line } => {
                        self.append(&line);
                        self.held.bind(key, line);
                    }
                    Op::Put { seq, line, replaces } => {
                        self.append(&line);
                        self.held.put(seq, line);
                        if let Some(old) = replaces {
                            self.held.done(old);
                        }
                    }
                    Op::Done(seq) => {
                        if self.held.done(seq) {
                            self.append(format!("{{\"done\":{seq}}}\n").as_bytes());
                        }
                    }
                    Op::Sync(waiter) => waiting.push(waiter),
                    Op::Clear => {
                        self.held.clear();
                        clear = true;
                    }
                }
            }
            if let Err(err) = self.file.flush() {
                self.fail(&err);
            }
            let repair = self.failure.is_some() && self.last_repair.is_none_or(|at| at.elapsed() >= self.repair_pause);
            let compact = self.written > self.compact_above && self.written > 4 * self.held.bytes;
            if clear || repair || compact {
                self.rewrite(repair);
            }
            if !waiting.is_empty()
                && self.failure.is_none()
                && let Err(err) = self.file.get_ref().sync_data()
            {
                self.fail(&err);
            }
            let outcome = self.failure.clone().map_or(Ok(()), Err);
            for waiter in waiting {
                let _ = waiter.send(outcome.clone());
            }
        }
        if let Err(err) = self.file.flush().and_then(|()| self.file.get_ref().sync_data()) {
            self.fail(&err);
        }
    }

    /// Replaces the file with what is held. A compaction that fails leaves the old file, whole
    /// and still appended to, and is tried again when as much more has been written; a repair
    /// that fails keeps the failure until the next one.
    fn rewrite(&mut self, repair: bool) {
        if repair {
            self.last_repair = Some(Instant::now());
        }
        match rewrite(&self.path, self.held.all()) {
            Ok((file, dir_synced)) => {
                (self.file, self.written) = (BufWriter::new(file), 0);
                match dir_synced {
                    // The rename may not survive a power loss: repaired by the next rewrite.
                    Err(err) => self.fail(&err),
                    Ok(()) => {
                        if self.failure.take().is_some() {
                            tracing::info!(journal = %self.path.display(), "in-process bus journal writable again: rewritten");
                        }
                    }
                }
            }
            Err(err) if repair => self.fail(&err),
            Err(err) => {
                tracing::warn!(journal = %self.path.display(), error = %err, "could not compact the in-process bus journal; it keeps growing until a later try works");
                self.written = 0;
            }
        }
    }

    fn append(&mut self, line: &[u8]) {
        match self.file.write_all(line) {
            Ok(()) => self.written += line.len() as u64,
            Err(err) => self.fail(&err),
        }
    }

    fn fail(&mut self, err: &io::Error) {
        if self.failure.is_none() {
            tracing::error!(journal = %self.path.display(), error = %err, "in-process bus journal write failed; publishing fails until it is repaired");
        }
        self.failure = Some(err.to_string());
    }
}

/// A journal file read back: bindings (by key) and messages not done (by sequence number), each
/// with its line; whether the last line was cut short and how many others could not be read.
#[derive(Default)]
struct Read {
    bindings: BTreeMap<String, (Binding, Vec<u8>)>,
    messages: BTreeMap<u64, (Restored, Vec<u8>)>,
    torn: bool,
    damaged: usize,
}

fn read(path: &Path) -> io::Result<Read> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Read::default()),
        Err(err) => return Err(err),
    };
    let mut read = Read::default();
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        if line.last() != Some(&b'\n') {
            // Only the last line can lack its newline: a write cut short by a crash.
            read.torn = !line.iter().all(u8::is_ascii_whitespace);
            break;
        }
        match serde_json::from_slice::<Line>(&line) {
            Ok(Line::Bind(binding)) => {
                read.bindings.insert(binding.key(), (binding, line.clone()));
            }
            Ok(Line::Put(put)) => {
                let (seq, replaces) = (put.seq, put.replaces);
                match put.into_restored() {
                    Some(restored) => {
                        // The move (a retry, a dead letter) is applied only once its new place
                        // reads back: a damaged one leaves the message where it was.
                        if let Some(old) = replaces {
                            read.messages.remove(&old);
                        }
                        read.messages.insert(seq, (restored, line.clone()));
                    }
                    None => read.damaged += 1,
                }
            }
            Ok(Line::Done(seq)) => {
                read.messages.remove(&seq);
            }
            Err(_) if line.iter().all(u8::is_ascii_whitespace) => {}
            Err(_) => read.damaged += 1,
        }
    }
    Ok(read)
}

/// Replaces the journal with `lines` (written to a temporary file, synced, renamed over it).
/// `Err` when the old file is still the journal. Once renamed, the new file is the journal
/// whatever comes next, so it is returned open at its end for appending, with the outcome of
/// syncing the directory that makes the rename durable.
fn rewrite<'a>(path: &Path, lines: impl Iterator<Item = &'a Vec<u8>>) -> io::Result<(File, io::Result<()>)> {
    let temporary = suffixed(path, ".rewrite");
    let written = (|| {
        let mut out = BufWriter::new(private_file(&temporary, true)?);
        for line in lines {
            out.write_all(line)?;
        }
        let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)?;
        Ok(file)
    })();
    match written {
        Ok(file) => Ok((file, sync_dir(directory(path)))),
        Err(err) => {
            // Whatever part of it was written would only take room (on a full disk, the room).
            let _ = std::fs::remove_file(&temporary);
            Err(err)
        }
    }
}

/// The directory `path` is in (`.` for a bare file name).
fn directory(path: &Path) -> &Path {
    path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(test)]
    if tests::FAILING_DIRS.lock().unwrap_or_else(PoisonError::into_inner).iter().any(|d| d == dir) {
        return Err(io::Error::other("injected: the directory cannot be synced"));
    }
    File::open(dir)?.sync_all()
}

/// `path` with `suffix` added to its file name.
fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Opens `path` for writing, readable by this user only (it holds customers' messages).
fn private_file(path: &Path, truncate: bool) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(truncate);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

impl Put {
    fn of(seq: u64, replaces: Option<u64>, queue: &str, group: &str, message: &Message) -> Put {
        let envelope = &message.envelope;
        Put {
            seq,
            replaces,
            queue: queue.to_owned(),
            group: group.to_owned(),
            attempt: message.attempt,
            dead: message.dead.as_ref().map(|d| Dead {
                group: d.group.clone(),
                reason: d.reason.clone(),
                attempts: d.attempts,
                dead_at: d.dead_at,
            }),
            envelope: Stored {
                id: envelope.id.clone(),
                source: envelope.source.clone(),
                kind: envelope.kind.clone(),
                time: envelope.time,
                subject: envelope.subject.clone(),
                exchange: envelope.exchange.kind().to_owned(),
                routing_key: envelope.routing_key.clone(),
                traceparent: envelope.trace.traceparent.clone(),
                request_id: envelope.trace.request_id.clone(),
                data: BASE64.encode(&envelope.data),
            },
        }
    }

    /// The message as its queue held it, marked redelivered since it may have been delivered
    /// before the restart; `None` when the line is damaged.
    fn into_restored(self) -> Option<Restored> {
        let stored = &self.envelope;
        let exchange = Exchange::from_kind(&stored.exchange)?;
        let data = BASE64.decode(&stored.data).ok()?;
        let envelope = Envelope {
            id: stored.id.clone(),
            source: stored.source.clone(),
            kind: stored.kind.clone(),
            time: stored.time,
            subject: stored.subject.clone(),
            exchange,
            routing_key: stored.routing_key.clone(),
            trace: Trace { traceparent: stored.traceparent.clone(), request_id: stored.request_id.clone() },
            data,
        };
        let dead = self.dead.map(|d| DeadInfo { group: d.group, reason: d.reason, attempts: d.attempts, dead_at: d.dead_at });
        let message = Message { seq: self.seq, attempt: self.attempt, redelivered: true, dead, ..Message::new(envelope) };
        Some(Restored { queue: self.queue, group: self.group, message })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Exchange;

    fn message(n: usize) -> Message {
        Message::new(Envelope {
            id: format!("m-{n}"),
            source: "/tests/journal".into(),
            kind: "crm.test.ping.v1".into(),
            time: DateTime::from_timestamp(1_790_000_000, 123_456_000).unwrap(),
            subject: None,
            exchange: Exchange::Events,
            routing_key: "email.message.received".into(),
            trace: Trace::default(),
            data: vec![0xff, b'{', 0x00, b'\n'],
        })
    }

    fn size(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap().len()
    }

    /// Directories whose sync fails (a fault injected into [`sync_dir`]).
    pub(super) static FAILING_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

    #[tokio::test]
    async fn a_rewrite_whose_directory_cannot_be_synced_fails_syncs_until_repaired_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bus.journal");
        let (journal, _) = Journal::open(&path, 16 * 1024).unwrap();
        let first = journal.put("crm.core.events", "core.events", &message(0), None);
        journal.synced().await.unwrap();
        FAILING_DIRS.lock().unwrap().push(dir.path().to_owned());
        // Churn until a compaction renames the rewritten file over the journal.
        let mut n = 1;
        loop {
            let seq = journal.put("crm.core.events", "core.events", &message(n), None);
            journal.done(seq);
            if journal.synced().await.is_err() {
                break;
            }
            n += 1;
            assert!(n < 5_000, "no compaction happened");
        }
        // Confirmed only once the journal is whole again: appended to the renamed file and the
        // rename made durable.
        let second = journal.put("crm.core.events", "core.events", &message(99_999), None);
        FAILING_DIRS.lock().unwrap().retain(|d| d != dir.path());
        let deadline = Instant::now() + Duration::from_secs(30);
        while journal.synced().await.is_err() {
            assert!(Instant::now() < deadline, "the journal was never repaired");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(journal);
        let (_journal, contents) = Journal::open(&path, 16 * 1024).unwrap();
        assert_eq!(contents.messages.iter().map(|r| r.message.seq).collect::<Vec<_>>(), [first, second]);
    }

    #[tokio::test]
    async fn a_moved_message_replaces_its_old_place_in_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bus.journal");
        let (journal, _) = Journal::open(&path, u64::MAX).unwrap();
        let old = journal.put("crm.core.events", "core.events", &message(1), None);
        let moved = journal.put("crm.dead-letters", "dead-letters", &message(1), Some(old));
        journal.synced().await.unwrap();
        // As a crash would leave it: the two puts and no `done` line.
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(!text.contains("\"done\""), "{text}");
        let read = read(&path).unwrap();
        assert_eq!(read.messages.keys().copied().collect::<Vec<_>>(), [moved]);
        drop(journal);
        let (_journal, contents) = Journal::open(&path, u64::MAX).unwrap();
        assert_eq!(contents.messages.iter().map(|r| (r.queue.as_str(), r.message.seq)).collect::<Vec<_>>(), [("crm.dead-letters", moved)]);
    }

    #[test]
    fn a_bare_file_name_is_in_the_current_directory() {
        assert_eq!(directory(Path::new("bus.journal")), Path::new("."));
        assert_eq!(directory(Path::new("data/bus.journal")), Path::new("data"));
    }

    #[tokio::test]
    async fn a_compaction_that_fails_leaves_the_journal_working_and_is_tried_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bus.journal");
        let (journal, _) = Journal::open(&path, 16 * 1024).unwrap();
        // The temporary file cannot be created while a directory has its name.
        let blocker = suffixed(&path, ".rewrite");
        std::fs::create_dir(&blocker).unwrap();
        let kept = journal.put("crm.core.events", "core.events", &message(0), None);
        for n in 1..400 {
            let seq = journal.put("crm.core.events", "core.events", &message(n), None);
            journal.done(seq);
            journal.synced().await.expect("publishing works while compaction fails");
        }
        assert!(size(&path) > 64 * 1024, "not compacted: {} bytes", size(&path));
        std::fs::remove_dir(&blocker).unwrap();
        for n in 400..800 {
            let seq = journal.put("crm.core.events", "core.events", &message(n), None);
            journal.done(seq);
        }
        journal.synced().await.unwrap();
        assert!(size(&path) < 32 * 1024, "compacted again: {} bytes", size(&path));
        drop(journal);
        let (_journal, contents) = Journal::open(&path, 16 * 1024).unwrap();
        assert_eq!(contents.messages.iter().map(|r| r.message.seq).collect::<Vec<_>>(), [kept]);
    }

    #[tokio::test]
    async fn a_failed_write_fails_the_sync_until_a_rewrite_repairs_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bus.journal");
        std::fs::write(&path, b"").unwrap();
        let blocker = suffixed(&path, ".rewrite");
        std::fs::create_dir(&blocker).unwrap();
        // A writer whose file refuses writes (opened read-only), and whose repair cannot write
        // its temporary file at first.
        let writer = Writer {
            path: path.clone(),
            file: BufWriter::new(File::open(&path).unwrap()),
            held: Held::default(),
            written: 0,
            compact_above: u64::MAX,
            failure: None,
            last_repair: None,
            repair_pause: Duration::ZERO,
            _lock: private_file(&suffixed(&path, ".lock"), false).unwrap(),
        };
        let journal = Journal::start(writer, 0).unwrap();
        journal.put("crm.core.events", "core.events", &message(1), None);
        assert!(journal.synced().await.is_err(), "a publish is not confirmed while its line cannot be written");
        std::fs::remove_dir(&blocker).unwrap();
        journal.put("crm.core.events", "core.events", &message(2), None);
        journal.synced().await.expect("the rewrite repaired the journal");
        drop(journal);
        let (_journal, contents) = Journal::open(&path, u64::MAX).unwrap();
        let ids: Vec<&str> = contents.messages.iter().map(|r| r.message.envelope.id.as_str()).collect();
        assert_eq!(ids, ["m-1", "m-2"], "the message whose write failed is in the repaired journal too");
    }

    #[tokio::test]
    async fn a_running_journal_rewrites_itself_to_what_it_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bus.journal");
        let (journal, contents) = Journal::open(&path, 16 * 1024).unwrap();
        assert!(contents.messages.is_empty());
        let mut largest = 0;
        let mut kept = Vec::new();
        for n in 0..2_000 {
            let seq = journal.put("crm.core.events", "core.events", &message(n), None);
            if n % 500 == 0 {
                kept.push(seq);
            } else {
                journal.done(seq);
            }
            if n % 100 == 0 {
                journal.synced().await.unwrap();
                largest = largest.max(std::fs::metadata(&path).unwrap().len());
            }
        }
        journal.synced().await.unwrap();
        // 2,000 puts and dones are ~800 KB; the file never held much more than the threshold.
        assert!(largest < 64 * 1024, "the journal grew to {largest} bytes");
        drop(journal);

        let (_journal, contents) = Journal::open(&path, 16 * 1024).unwrap();
        let seqs: Vec<u64> = contents.messages.iter().map(|r| r.message.seq).collect();
        assert_eq!(seqs, kept, "what was not done survives the rewrites");
        let first = &contents.messages[0].message;
        assert_eq!(first.envelope, message(0).envelope, "data that is not JSON (nor UTF-8) comes back byte for byte");
        assert!(first.redelivered);
    }
}
