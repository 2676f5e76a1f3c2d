//! The communications log and the media index in the store: their tables as resources (so the
//! generic create / get / update / delete / list serve the API), and the operations the bus side
//! of the core needs: logging a batch of inbound messages exactly once, threading, delivery
//! reports, file-store results, the unmatched inbox, and records whose creation asks a connector
//! to act (written with their outbox messages in one transaction).

use crate::audit;
use crate::db::{Dialect, Row, Sql, Tx, Value};
use crate::outbox::{enqueue, skip_locked};
use crate::query::{CommsFilter, MediaFilter, SortKind};
use crate::resources::{Resource, Table, decode, insert_with_id, json, load_locked, now, overwrite, sort};
use crate::{Result, Store, StoreError};
use crm_domain::Record;
use crm_domain::comms::{AddressKind, CommsEntry, DeliveryStatus, Direction, MatchInfo, Media, MediaStatus, Triage};
use crm_domain::contact::{Contact, ContactType};
use crm_domain::customer::Customer;
use std::collections::HashMap;
use uuid::Uuid;

/// A client's key for one request that creates a record (the `Idempotency-Key` header), with
/// the request it was first sent with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// The client's key.
    pub key: String,
    /// A digest of the request (its route and body): a key stands for one request.
    pub request: String,
}

/// What a create with an idempotency key came to.
#[derive(Debug, Clone)]
pub enum Created<R> {
    /// The record this request created.
    New(Record<R>),
    /// The record an earlier request with the same key created (as it is now).
    Earlier(Record<R>),
}

/// Inserts a record with its audit record and its outbox messages.
async fn insert_with_commands<R: Resource>(
    tx: &mut Tx,
    actor: &audit::Actor,
    id: Uuid,
    data: R,
    commands: &[serde_json::Value],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Record<R>> {
    let record = insert_with_id(tx, id, data, now).await?;
    audit::record_change(tx, actor, "create", R::TABLE, record.id, None, Some(&record.data)).await?;
    for command in commands {
        enqueue(tx, command, now).await?;
    }
    Ok(record)
}

impl Resource for CommsEntry {
    type Filter = CommsFilter;
}

impl Table for CommsEntry {
    const TABLE: &'static str = "comms_log";
    const SORTS: &'static [crate::query::SortKey] = &[
        sort("occurred_at", "occurred_at", SortKind::Time),
        sort("created_at", "created_at", SortKind::Time),
        sort("updated_at", "updated_at", SortKind::Time),
    ];

    /// A message on its way to a connector is not deleted: its command is already in the
    /// outbox or on the bus, and deleting the entry would not stop it, only hide its outcome.
    fn check_delete(current: &Record<Self>) -> Result<()> {
        match current.data.delivery_status {
            Some(DeliveryStatus::Queued) => Err(StoreError::conflict(
                Some("/delivery_status"),
                "the message is queued for sending: it can be deleted once it is sent or has failed",
            )),
            _ => Ok(()),
        }
    }

    fn columns(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("customer_id", Value::Uuid(self.customer_id)),
            ("kind", Value::Text(Some(self.kind.as_str().into()))),
            ("direction", Value::Text(Some(self.direction.as_str().into()))),
            ("occurred_at", Value::Time(Some(self.occurred_at))),
            ("ext_key", Value::Text(self.ext_key())),
            ("raw_event_id", Value::Text(self.raw_event_id.clone())),
            ("thread_id", Value::Uuid(self.thread_id)),
            ("triage", Value::Text(self.triage.map(|t| t.as_str().into()))),
            ("delivery_status", Value::Text(self.delivery_status.map(|s| s.as_str().into()))),
        ]
    }

    fn search_text(&self) -> String {
        CommsEntry::search_text(self)
    }

    fn unique_conflict(&self) -> StoreError {
        StoreError::conflict(Some("/ext_message_id"), "this message is already in the log")
    }
}

/// The key that makes a channel message unique in the log: `<type>:<channel message id>`.
trait ExtKey {
    fn ext_key(&self) -> Option<String>;
}

impl ExtKey for CommsEntry {
    fn ext_key(&self) -> Option<String> {
        self.ext_message_id.as_ref().map(|id| ext_key(self.kind.as_str(), id))
    }
}

/// The unique key of a channel message id on a channel (`email:<id@host>`). An id longer than
/// [`EXT_KEY_MAX_ID_BYTES`] is keyed by its SHA-256 (`email#sha256:<hex>`): a unique index entry
/// must fit in a third of a PostgreSQL page (~2.7 KB), and the same key is used on both backends.
pub fn ext_key(channel: &str, channel_message_id: &str) -> String {
    if channel_message_id.len() <= EXT_KEY_MAX_ID_BYTES {
        format!("{channel}:{channel_message_id}")
    } else {
        format!("{channel}#sha256:{}", crm_domain::sha256_hex(channel_message_id.as_bytes()))
    }
}

/// The longest channel message id kept as it is in its key; real ones (RFC 5322 Message-IDs,
/// WhatsApp ids) are far shorter.
pub const EXT_KEY_MAX_ID_BYTES: usize = 512;

impl Resource for Media {
    type Filter = MediaFilter;
}

impl Table for Media {
    const TABLE: &'static str = "media";
    const SORTS: &'static [crate::query::SortKey] =
        &[sort("created_at", "created_at", SortKind::Time), sort("updated_at", "updated_at", SortKind::Time)];

    /// A file the files connector is still storing is not deleted: the store command is on its
    /// way, and its result would be lost on a deleted record.
    fn check_delete(current: &Record<Self>) -> Result<()> {
        match current.data.status {
            MediaStatus::Pending => Err(StoreError::conflict(
                Some("/status"),
                "the file is still being stored: it can be deleted once it is stored or has failed",
            )),
            _ => Ok(()),
        }
    }

    fn columns(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("customer_id", Value::Uuid(self.customer_id)),
            ("order_id", Value::Uuid(self.order_id)),
            ("comms_id", Value::Uuid(self.comms_id)),
            ("status", Value::Text(Some(self.status.as_str().into()))),
        ]
    }

    fn search_text(&self) -> String {
        Media::search_text(self)
    }
}

/// An inbound message, matched and ready to log.
#[derive(Debug, Clone)]
pub struct InboundEntry {
    /// The id the entry gets.
    pub id: Uuid,
    /// The entry (customer or `triage: unmatched` decided by the caller; thread left to the store).
    pub entry: CommsEntry,
    /// Channel keys ([`ext_key`]) of the messages it answers, most direct first.
    pub answers: Vec<String>,
    /// Log entries it answers, named by our own outbound message ids.
    pub answers_entries: Vec<Uuid>,
    /// Files to index with it (their ids chosen by the caller).
    pub media: Vec<(Uuid, Media)>,
    /// Outbox messages (CloudEvents structured JSON) to send if the entry is new.
    pub commands: Vec<serde_json::Value>,
}

/// What logging an inbound message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logged {
    /// A new entry.
    Created(Uuid),
    /// The message was already in the log (a redelivery): nothing changed.
    Duplicate(Uuid),
}

/// What recording a delivery report did.
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryRecorded {
    /// The outbound entry it is about, as the report left it (a deleted entry too: it is kept,
    /// and may be restored, with what became of the message).
    Entry(Box<Record<CommsEntry>>),
    /// It names only a channel message id that no entry has yet: held until one gets it.
    Held,
    /// It names no outbound entry (an unknown entry, an inbound message).
    Unknown,
}

impl DeliveryRecorded {
    /// The entry, when the report found one.
    pub fn entry(self) -> Option<Record<CommsEntry>> {
        match self {
            Self::Entry(record) => Some(*record),
            Self::Held | Self::Unknown => None,
        }
    }
}

/// How long a held delivery report waits for an entry with its channel message id (a report
/// for a message sent outside the CRM never finds one).
pub const HELD_REPORTS_KEPT: chrono::Duration = chrono::Duration::days(30);

/// The outcome of storing a file, reported by the files connector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileStored {
    /// Stored at `path`.
    Stored {
        /// Path in the file store.
        path: String,
        /// Size in bytes.
        size: u64,
        /// SHA-256, hex.
        sha256: String,
    },
    /// Refused.
    Failed {
        /// Why.
        reason: String,
        /// The path the file store was asked for, when the report names one (a command the
        /// core gave up on does not).
        path: Option<String>,
    },
}

impl FileStored {
    /// Why this report is not about the file `media` waits for, if it is not. A record made
    /// for a file to store keeps the path it asked for and the SHA-256 of the bytes it sent,
    /// so a report of another path or other bytes (a forged event, or a dead letter replayed
    /// with changed data) cannot point it at another file; a record of a file stored elsewhere
    /// (`external`) asked the file store for nothing.
    fn mismatch(&self, media: &Media) -> Option<String> {
        if media.status == MediaStatus::External {
            return Some("the media record indexes a file stored elsewhere: it asked the file store for nothing".into());
        }
        let (path, sha256) = match self {
            Self::Stored { path, sha256, .. } => (Some(path), Some(sha256)),
            Self::Failed { path, .. } => (path.as_ref(), None),
        };
        if let (Some(asked), Some(path)) = (&media.nextcloud_path, path)
            && asked != path
        {
            return Some(format!("the file store reports the path {path:?}, but the media record asked for {asked:?}"));
        }
        if let (Some(sent), Some(sha256)) = (&media.sha256, sha256)
            && !sent.eq_ignore_ascii_case(sha256)
        {
            return Some(format!("the file store reports SHA-256 {sha256}, but the media record sent bytes with {sent}"));
        }
        None
    }
}

/// What assigning an unmatched entry did.
#[derive(Debug, Clone)]
pub struct Assigned {
    /// The entry, now the customer's.
    pub entry: Record<CommsEntry>,
    /// Whether the sender's address was added to the customer's contacts.
    pub contact_added: bool,
    /// Other unmatched entries from the same address assigned with it.
    pub also_assigned: u64,
}

impl Store {
    /// Live customers found by matcher lookup keys, in one query for a whole batch: each
    /// `(kind, value)` pair with the customers whose canonical contact (`email` lower case,
    /// `phone` E.164) or folded name (`name`, exact) equals the value.
    pub async fn customers_by_keys(&self, keys: &[(&str, &str)]) -> Result<Vec<(String, String, Uuid)>> {
        let (names, contacts): (Vec<_>, Vec<_>) = keys.iter().partition(|(kind, _)| *kind == "name");
        let mut found = Vec::new();
        for kind in ["email", "phone"] {
            let values: Vec<String> = contacts.iter().filter(|(k, _)| *k == kind).map(|(_, v)| (*v).to_owned()).collect();
            if values.is_empty() {
                continue;
            }
            let mut sql = Sql::new(
                "SELECT DISTINCT k.key AS k, k.customer_id AS id FROM customer_keys k \
                 JOIN customers c ON c.id = k.customer_id WHERE c.deleted_at IS NULL AND k.kind = ",
            );
            sql.bind(Value::Text(Some(kind.into()))).push(" AND k.key IN (");
            push_list(&mut sql, values);
            for row in self.fetch_all(&sql).await? {
                found.push((kind.to_owned(), row.get::<String>("k")?, row.uuid("id")?));
            }
        }
        if !names.is_empty() {
            let mut sql = Sql::new("SELECT name_key AS k, id FROM customers WHERE deleted_at IS NULL AND name_key IN (");
            push_list(&mut sql, names.iter().map(|(_, v)| (*v).to_owned()).collect());
            for row in self.fetch_all(&sql).await? {
                found.push(("name".to_owned(), row.get::<String>("k")?, row.uuid("id")?));
            }
        }
        Ok(found)
    }

    /// Live customers whose folded name contains every one of `words` (a fuzzy match; at most
    /// `limit`).
    pub async fn customers_by_name_words(&self, words: &[&str], limit: u32) -> Result<Vec<Uuid>> {
        if words.is_empty() {
            return Ok(Vec::new());
        }
        let mut sql = Sql::new("SELECT id FROM customers WHERE deleted_at IS NULL");
        for word in words {
            sql.push(" AND name_key LIKE ").bind(Value::Text(Some(format!("%{}%", crate::db::escape_like(word))))).push(" ESCAPE '\\'");
        }
        sql.push(&format!(" LIMIT {limit}"));
        self.fetch_all(&sql).await?.iter().map(|row| row.uuid("id")).collect()
    }

    /// Logs a batch of inbound messages in one transaction. A message already in the log (same
    /// channel and channel message id, or same bus event) is reported as a duplicate and changes
    /// nothing, also when another core instance logs it at the same moment. Replies join the
    /// thread of the message they answer. Not audited: the entry records the event it came from.
    #[tracing::instrument(skip_all, fields(batch = batch.len()))]
    pub async fn log_inbound(&self, mut batch: Vec<InboundEntry>) -> Result<Vec<Logged>> {
        self.log_inbound_in(&mut batch).await
    }

    /// [`Store::log_inbound`] on entries the caller keeps (only their thread ids change).
    async fn log_inbound_in(&self, batch: &mut [InboundEntry]) -> Result<Vec<Logged>> {
        // Another core may log a message of the batch between our look and our insert, which
        // then skips it. The whole batch is decided again, seeing that entry both as a duplicate
        // and as a thread. Each retry finds at least one more key of the batch logged, so this
        // ends; only an item whose id (not key) is taken can exhaust it.
        for _ in 0..=2 * batch.len() {
            if let Some(outcomes) = self.try_log_inbound(batch).await? {
                return Ok(outcomes);
            }
        }
        Err(StoreError::Corrupt("an inbound entry clashes with a log entry that has none of its keys".into()))
    }

    /// Logs a batch like [`Store::log_inbound`], isolating what cannot be stored: when the
    /// batch is refused for a reason other than the database being unavailable, it is split in
    /// halves and each half logged on its own (earlier half first, so replies still find their
    /// thread), down to single entries. One outcome per entry, in batch order: the entries that
    /// fail alone get their error, the others are committed. `Err` only when the database is
    /// unavailable; the entries committed before that are duplicates when the batch is retried.
    #[tracing::instrument(skip_all, fields(batch = batch.len()))]
    pub async fn log_inbound_each(&self, mut batch: Vec<InboundEntry>) -> Result<Vec<Result<Logged>>> {
        let mut outcomes: Vec<Option<Result<Logged>>> = batch.iter().map(|_| None).collect();
        // Parts still to log, as ranges of the batch; the next one is on top.
        let mut parts: Vec<std::ops::Range<usize>> = Vec::new();
        parts.push(0..batch.len());
        while let Some(range) = parts.pop() {
            let part = &mut batch[range.clone()];
            match self.log_inbound_in(part).await {
                Ok(logged) => {
                    for (outcome, slot) in logged.into_iter().zip(&mut outcomes[range]) {
                        *slot = Some(Ok(outcome));
                    }
                }
                Err(err) if err.is_unavailable() => return Err(err),
                Err(err) if part.len() == 1 => {
                    tracing::warn!(error = %err, id = %part[0].id, raw_event_id = ?part[0].entry.raw_event_id, "an inbound entry cannot be stored");
                    outcomes[range.start] = Some(Err(err));
                }
                Err(err) => {
                    tracing::info!(error = %err, entries = part.len(), "a batch of inbound entries was refused; logging it in halves");
                    let middle = range.start + part.len() / 2;
                    parts.push(middle..range.end);
                    parts.push(range.start..middle);
                }
            }
        }
        Ok(outcomes.into_iter().map(|o| o.expect("every part is logged or failed")).collect())
    }

    /// One attempt at [`Store::log_inbound`]: `None`, with nothing written, when another writer
    /// logged a message of the batch since we looked.
    async fn try_log_inbound(&self, batch: &mut [InboundEntry]) -> Result<Option<Vec<Logged>>> {
        let now = now();
        let mut tx = self.begin().await?;
        let existing = existing_entries(&mut tx, batch).await?;
        let threads = threads_of(&mut tx, batch).await?;
        let mut outcomes = Vec::with_capacity(batch.len());
        // The keys and threads of the entries this batch adds, for the items after them.
        let mut seen: HashMap<String, Uuid> = HashMap::new();
        let mut thread_of: HashMap<Uuid, Uuid> = HashMap::new();
        for item in batch.iter_mut() {
            let keys = [item.entry.ext_key(), item.entry.raw_event_id.clone()];
            if let Some(id) = keys.iter().flatten().find_map(|k| existing.get(k).or_else(|| seen.get(k))) {
                outcomes.push(Logged::Duplicate(*id));
                continue;
            }
            let thread = item
                .answers
                .iter()
                .find_map(|key| threads.by_key.get(key).or_else(|| seen.get(key).and_then(|id| thread_of.get(id))))
                .or_else(|| item.answers_entries.iter().find_map(|id| threads.by_id.get(id)))
                .copied()
                .unwrap_or(item.id);
            item.entry.thread_id = Some(thread);
            thread_of.insert(item.id, thread);
            for key in keys.into_iter().flatten() {
                seen.insert(key, item.id);
            }
            outcomes.push(Logged::Created(item.id));
        }
        let new: Vec<&InboundEntry> = batch.iter().filter(|i| thread_of.contains_key(&i.id)).collect();
        let inserted = insert_entries(&mut tx, &new, now).await?;
        if inserted.len() < new.len() {
            return Ok(None);
        }
        for item in new {
            for (id, media) in &item.media {
                let mut media = media.clone();
                media.comms_id = Some(item.id);
                insert_with_id(&mut tx, *id, media, now).await?;
            }
            for command in &item.commands {
                enqueue(&mut tx, command, now).await?;
            }
        }
        tx.commit().await?;
        Ok(Some(outcomes))
    }

    /// Creates a record and the outbox messages that ask connectors to act on it, in one
    /// transaction with its audit record: either both are stored or neither.
    #[allow(private_bounds)]
    pub async fn create_with_commands<R: Resource>(&self, id: Uuid, data: R, commands: &[serde_json::Value]) -> Result<Record<R>> {
        let now = now();
        let mut tx = self.begin().await?;
        let record = insert_with_commands(&mut tx, &self.actor, id, data, commands, now).await?;
        tx.commit().await?;
        Ok(record)
    }

    /// [`Store::create_with_commands`] for a request that carries an idempotency key: the key
    /// is stored in the same transaction, so the first request with it creates the record and
    /// every later one by the same caller gets that record back ([`Created::Earlier`]), with no
    /// second record and no second command, even when they run at once. The same key with
    /// another request is refused (422 at `/Idempotency-Key`).
    #[allow(private_bounds)]
    pub async fn create_once_with_commands<R: Resource>(
        &self,
        key: &IdempotencyKey,
        id: Uuid,
        data: R,
        commands: &[serde_json::Value],
    ) -> Result<Created<R>> {
        let now = now();
        let mut tx = self.begin().await?;
        let mut sql = Sql::new("INSERT INTO idempotency_keys (actor, key, request, record_id, created_at) VALUES (");
        sql.bind(Value::Text(Some(self.actor.label()))).push(", ").bind(Value::Text(Some(key.key.clone()))).push(", ");
        sql.bind(Value::Text(Some(key.request.clone()))).push(", ").bind(Value::Uuid(Some(id))).push(", ");
        // Waits for a concurrent request with the same key to end; taken, if it committed.
        sql.bind(Value::Time(Some(now))).push(") ON CONFLICT DO NOTHING");
        if tx.execute(&sql).await? == 0 {
            drop(tx);
            let earlier = self.created_with_key(key).await?;
            return earlier.map(Created::Earlier).ok_or_else(|| StoreError::Corrupt(format!("idempotency key {:?} vanished", key.key)));
        }
        let record = insert_with_commands(&mut tx, &self.actor, id, data, commands, now).await?;
        tx.commit().await?;
        Ok(Created::New(record))
    }

    /// The record an earlier request of this caller with `key` created (as it is now, deleted or
    /// not), if there was one. The same key with another request is refused (422 at
    /// `/Idempotency-Key`).
    #[allow(private_bounds)]
    pub async fn created_with_key<R: Resource>(&self, key: &IdempotencyKey) -> Result<Option<Record<R>>> {
        let mut sql = Sql::new("SELECT request, record_id FROM idempotency_keys WHERE actor = ");
        sql.bind(Value::Text(Some(self.actor.label()))).push(" AND key = ").bind(Value::Text(Some(key.key.clone())));
        let Some(row) = self.fetch_all(&sql).await?.into_iter().next() else { return Ok(None) };
        if row.get::<String>("request")? != key.request {
            return Err(StoreError::Invalid(crm_domain::Violations::one(
                "/Idempotency-Key",
                "was used for another request: a new request needs a new key",
            )));
        }
        Ok(Some(self.get::<R>(row.uuid("record_id")?, true).await?))
    }

    /// Deletes the idempotency keys older than `age` (a request with one of them after that is
    /// a new request); how many.
    pub async fn prune_idempotency_keys(&self, age: chrono::Duration) -> Result<u64> {
        let mut tx = self.begin().await?;
        let mut sql = Sql::new("DELETE FROM idempotency_keys WHERE created_at < ");
        sql.bind(Value::Time(Some(now() - age)));
        let n = tx.execute(&sql).await?;
        tx.commit().await?;
        Ok(n)
    }

    /// Records a delivery report for an outbound entry, found by id or by its channel key. A
    /// report never moves the status back (reports arrive out of order). The first channel
    /// message id reported becomes the entry's, so replies to it find the thread.
    ///
    /// A report naming only a channel message id that no entry has yet is held: a connector can
    /// see "delivered" before it publishes the "sent" report that names the entry. Held reports
    /// are applied, in the same transaction, when an entry gets that id, and dropped after
    /// [`HELD_REPORTS_KEPT`] when none does.
    pub async fn record_delivery(
        &self,
        entry_id: Option<Uuid>,
        channel_key: Option<(&str, &str)>,
        status: DeliveryStatus,
        reason: Option<String>,
    ) -> Result<DeliveryRecorded> {
        let now = now();
        let key = channel_key.map(|(channel, message_id)| ext_key(channel, message_id));
        let mut tx = self.begin().await?;
        if let Some(key) = &key {
            lock_channel_key(&mut tx, key).await?;
        }
        let id = match (entry_id, &key) {
            (Some(id), _) => id,
            (None, Some(key)) => match find_by_ext_key(&mut tx, key).await? {
                Some(id) => id,
                None => {
                    hold_report(&mut tx, key, status, reason.as_deref(), now).await?;
                    tx.commit().await?;
                    return Ok(DeliveryRecorded::Held);
                }
            },
            (None, None) => return Ok(DeliveryRecorded::Unknown),
        };
        let current = match load_locked::<CommsEntry>(&mut tx, id, None).await {
            Ok(current) if current.data.direction == Direction::Outbound => current,
            Ok(_) | Err(StoreError::NotFound) => return Ok(DeliveryRecorded::Unknown),
            Err(err) => return Err(err),
        };
        let mut next = current.data.clone();
        let mut reports = vec![(status, reason)];
        if let (None, Some((_, message_id)), Some(key)) = (&next.ext_message_id, channel_key, &key) {
            next.ext_message_id = Some(message_id.to_owned());
            reports.extend(take_held_reports(&mut tx, key, now).await?);
        }
        for (status, reason) in reports {
            if next.delivery_status.unwrap_or(DeliveryStatus::Queued).advances_to(status) {
                next.delivery_status = Some(status);
                next.status_reason = reason;
            }
        }
        if next == current.data {
            tx.commit().await?;
            return Ok(DeliveryRecorded::Entry(Box::new(current)));
        }
        let record = overwrite(&mut tx, &current, next, now).await?;
        tx.commit().await?;
        Ok(DeliveryRecorded::Entry(Box::new(record)))
    }

    /// Marks an outbound entry `failed` with `reason` when it is still `queued`: its send command
    /// was given up on. An entry that got further (a connector reported it sent) is left alone.
    /// Returns whether it changed.
    pub async fn fail_queued_delivery(&self, entry_id: Uuid, reason: String) -> Result<bool> {
        Ok(self.switch_delivery(entry_id, DeliveryStatus::Queued, DeliveryStatus::Failed, Some(reason)).await?.is_some())
    }

    /// Puts a `failed` outbound entry back to `queued`: its send command is being replayed.
    /// Returns the reason it had failed with (to restore should the replay not go out), or
    /// `None` when the entry was not failed.
    pub async fn requeue_failed_delivery(&self, entry_id: Uuid) -> Result<Option<String>> {
        Ok(self.switch_delivery(entry_id, DeliveryStatus::Failed, DeliveryStatus::Queued, None).await?.map(Option::unwrap_or_default))
    }

    /// Moves a live outbound entry from `from` to `to` with `reason`, only when it is in `from`
    /// (outside the forward order of delivery reports: a command given up on, or replayed).
    /// Returns the reason it had, or `None` when it was not in `from`.
    async fn switch_delivery(
        &self,
        entry_id: Uuid,
        from: DeliveryStatus,
        to: DeliveryStatus,
        reason: Option<String>,
    ) -> Result<Option<Option<String>>> {
        let mut tx = self.begin().await?;
        let current = match load_locked::<CommsEntry>(&mut tx, entry_id, Some(false)).await {
            Ok(current) => current,
            Err(StoreError::NotFound) => return Ok(None),
            Err(err) => return Err(err),
        };
        if current.data.direction != Direction::Outbound || current.data.delivery_status != Some(from) {
            return Ok(None);
        }
        let mut next = current.data.clone();
        next.delivery_status = Some(to);
        let previous = std::mem::replace(&mut next.status_reason, reason);
        overwrite(&mut tx, &current, next, now()).await?;
        tx.commit().await?;
        Ok(Some(previous))
    }

    /// How many delivery reports are held, waiting for an entry with their channel message id.
    pub async fn held_delivery_reports(&self) -> Result<i64> {
        let rows = self.fetch_all(&Sql::new("SELECT COUNT(*) AS n FROM held_delivery_reports")).await?;
        rows.first().ok_or_else(|| StoreError::Corrupt("no count".into()))?.get("n")
    }

    /// Records what the file store did with a media record's file, on the media record and on
    /// the log entry it came with. Reports for unknown or deleted media are ignored (`None`); a
    /// report of another path or other bytes than the record asked to store is a conflict at
    /// `/path` and changes nothing.
    pub async fn record_file_result(&self, media_id: Uuid, result: FileStored) -> Result<Option<Record<Media>>> {
        let now = now();
        let mut tx = self.begin().await?;
        // The entry is locked before the media record, in the order assigning an entry takes
        // them, so that the two never wait for each other. (`comms_id` never changes.)
        let entry = match entry_of_media(&mut tx, media_id).await? {
            Some(comms_id) => match load_locked::<CommsEntry>(&mut tx, comms_id, None).await {
                Ok(entry) => Some(entry),
                Err(StoreError::NotFound) => None,
                Err(err) => return Err(err),
            },
            None => None,
        };
        let current = match load_locked::<Media>(&mut tx, media_id, Some(false)).await {
            Ok(current) => current,
            Err(StoreError::NotFound) => return Ok(None),
            Err(err) => return Err(err),
        };
        if let Some(mismatch) = result.mismatch(&current.data) {
            return Err(StoreError::conflict(Some("/path"), mismatch));
        }
        let mut media = current.data.clone();
        match &result {
            FileStored::Stored { path, size, sha256 } => {
                media.status = MediaStatus::Stored;
                media.nextcloud_path = Some(path.clone());
                // What the record sent is what it knows best; the report fills in the rest.
                media.size = media.size.or(Some(*size));
                media.sha256 = Some(media.sha256.take().unwrap_or_else(|| sha256.to_ascii_lowercase()));
                media.status_reason = None;
            }
            FileStored::Failed { reason, .. } => {
                if media.status == MediaStatus::Stored {
                    // A late failure report of a redelivered command: the file is there.
                    return Ok(Some(current));
                }
                media.status = MediaStatus::Failed;
                media.status_reason = Some(reason.clone());
            }
        }
        if media == current.data {
            return Ok(Some(current));
        }
        let record = overwrite(&mut tx, &current, media, now).await?;
        if let Some(entry) = entry {
            let mut next = entry.data.clone();
            for attachment in next.attachments.iter_mut().filter(|a| a.media_id == Some(media_id)) {
                match &result {
                    FileStored::Stored { path, .. } => {
                        attachment.nextcloud_path = Some(path.clone());
                        attachment.refused = None;
                    }
                    FileStored::Failed { reason, .. } => attachment.refused = Some(reason.clone()),
                }
            }
            if next != entry.data {
                overwrite(&mut tx, &entry, next, now).await?;
            }
        }
        tx.commit().await?;
        Ok(Some(record))
    }

    /// Assigns an entry of the unmatched inbox to a customer, adds the sender's address to the
    /// customer's contacts (unless it is there already), and assigns every other unmatched
    /// entry from the same address with it; the files that came with them (their media
    /// records) become the customer's too. Audited.
    pub async fn assign_unmatched(&self, entry_id: Uuid, customer_id: Uuid, expected_version: Option<i64>) -> Result<Assigned> {
        let now = now();
        let mut tx = self.begin().await?;
        let current = load_locked::<CommsEntry>(&mut tx, entry_id, Some(false)).await?;
        crate::resources::check_version(&current, expected_version)?;
        if current.data.triage != Some(Triage::Unmatched) {
            return Err(StoreError::conflict(Some("/triage"), "the entry is not in the unmatched inbox"));
        }
        let customer = load_locked::<Customer>(&mut tx, customer_id, Some(false)).await.map_err(|e| {
            if matches!(e, StoreError::NotFound) {
                crm_domain::Violations::one("/customer_id", format!("no customer {customer_id}")).into()
            } else {
                e
            }
        })?;
        let address = current.data.channel_address.clone();
        let match_info = MatchInfo { confidence: 100, reason: "assigned by a user".into(), matcher: actor_label(&self.actor) };
        let mut contact_added = false;
        if let Some(address) = address.as_ref()
            && let Some(normalized) = address.normalized.clone()
        {
            let kind = match address.kind {
                AddressKind::Email => ContactType::Email,
                AddressKind::Phone => ContactType::Phone,
            };
            let known = customer.data.contacts.iter().any(|c| c.normalized == normalized);
            if !known {
                let mut next = customer.data.clone();
                let label = crm_domain::contact::label_from_name(address.name.as_deref());
                next.contacts.push(Contact { kind, label, value: address.value.clone(), normalized, primary: false });
                let updated = overwrite(&mut tx, &customer, next, now).await?;
                audit::record_change(&mut tx, &self.actor, "update", "customers", customer_id, Some(&customer.data), Some(&updated.data))
                    .await?;
                contact_added = true;
            }
        }
        let assign = |entry: &Record<CommsEntry>| {
            let mut next = entry.data.clone();
            next.customer_id = Some(customer_id);
            next.triage = Some(Triage::Assigned);
            next.matched = Some(match_info.clone());
            next
        };
        let next = assign(&current);
        let record = overwrite(&mut tx, &current, next, now).await?;
        audit::record_change(&mut tx, &self.actor, "assign", CommsEntry::TABLE, entry_id, Some(&current.data), Some(&record.data)).await?;
        let mut also_assigned = 0;
        let mut assigned = vec![entry_id];
        if let Some(normalized) = address.and_then(|a| a.normalized) {
            for other in unmatched_from(&mut tx, &normalized, entry_id).await? {
                let next = assign(&other);
                let updated = overwrite(&mut tx, &other, next, now).await?;
                audit::record_change(&mut tx, &self.actor, "assign", CommsEntry::TABLE, other.id, Some(&other.data), Some(&updated.data))
                    .await?;
                also_assigned += 1;
                assigned.push(other.id);
            }
        }
        for media in media_of_entries(&mut tx, &assigned).await? {
            if media.data.customer_id == Some(customer_id) {
                continue;
            }
            let next = Media { customer_id: Some(customer_id), ..media.data.clone() };
            let updated = overwrite(&mut tx, &media, next, now).await?;
            audit::record_change(&mut tx, &self.actor, "assign", Media::TABLE, media.id, Some(&media.data), Some(&updated.data)).await?;
        }
        tx.commit().await?;
        Ok(Assigned { entry: record, contact_added, also_assigned })
    }

    /// Dismisses an entry of the unmatched inbox (spam, not a customer). Audited.
    pub async fn dismiss_unmatched(&self, entry_id: Uuid, expected_version: Option<i64>) -> Result<Record<CommsEntry>> {
        let mut tx = self.begin().await?;
        let current = load_locked::<CommsEntry>(&mut tx, entry_id, Some(false)).await?;
        crate::resources::check_version(&current, expected_version)?;
        if current.data.triage != Some(Triage::Unmatched) {
            return Err(StoreError::conflict(Some("/triage"), "the entry is not in the unmatched inbox"));
        }
        let mut next = current.data.clone();
        next.triage = Some(Triage::Dismissed);
        let record = overwrite(&mut tx, &current, next, now()).await?;
        audit::record_change(&mut tx, &self.actor, "dismiss", CommsEntry::TABLE, entry_id, Some(&current.data), Some(&record.data)).await?;
        tx.commit().await?;
        Ok(record)
    }
}

/// Entries already logged under any key of the batch: key → entry id.
async fn existing_entries(tx: &mut Tx, batch: &[InboundEntry]) -> Result<HashMap<String, Uuid>> {
    let ext: Vec<String> = batch.iter().filter_map(|i| i.entry.ext_key()).collect();
    let raw: Vec<String> = batch.iter().filter_map(|i| i.entry.raw_event_id.clone()).collect();
    let mut found = HashMap::new();
    for (column, keys) in [("ext_key", ext), ("raw_event_id", raw)] {
        for chunk in keys.chunks(MAX_LOOKUP_BINDS) {
            let mut sql = Sql::new(format!("SELECT id, {column} AS k FROM comms_log WHERE {column} IN ("));
            push_list(&mut sql, chunk.to_vec());
            for row in tx.fetch_all(&sql).await? {
                found.insert(row.get::<String>("k")?, row.uuid("id")?);
            }
        }
    }
    Ok(found)
}

/// Thread ids of the entries a batch answers, by channel key and by entry id.
struct Threads {
    by_key: HashMap<String, Uuid>,
    by_id: HashMap<Uuid, Uuid>,
}

/// The most values one lookup query binds. PostgreSQL's protocol allows 65,535 parameters and
/// SQLite 32,766 by default; a batch's keys are looked up in chunks well below both.
const MAX_LOOKUP_BINDS: usize = 1_000;

async fn threads_of(tx: &mut Tx, batch: &[InboundEntry]) -> Result<Threads> {
    let keys: Vec<String> =
        batch.iter().flat_map(|i| i.answers.iter().cloned()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    let ids: Vec<Uuid> =
        batch.iter().flat_map(|i| i.answers_entries.iter().copied()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    let mut threads = Threads { by_key: HashMap::new(), by_id: HashMap::new() };
    let thread = |row: &Row| -> Result<Uuid> { Ok(row.optional_uuid("thread_id")?.unwrap_or(row.uuid("id")?)) };
    for chunk in keys.chunks(MAX_LOOKUP_BINDS) {
        let mut sql = Sql::new("SELECT id, thread_id, ext_key FROM comms_log WHERE ext_key IN (");
        push_list(&mut sql, chunk.to_vec());
        for row in tx.fetch_all(&sql).await? {
            threads.by_key.insert(row.get::<String>("ext_key")?, thread(&row)?);
        }
    }
    for chunk in ids.chunks(MAX_LOOKUP_BINDS) {
        let mut sql = Sql::new("SELECT id, thread_id FROM comms_log WHERE id IN (");
        push_ids(&mut sql, chunk);
        for row in tx.fetch_all(&sql).await? {
            threads.by_id.insert(row.uuid("id")?, thread(&row)?);
        }
    }
    Ok(threads)
}

fn push_list(sql: &mut Sql, values: Vec<String>) {
    sql.bind_list(values.into_iter().map(|value| Value::Text(Some(value))));
}

/// `ids` as a bound list, closing the `IN (`.
fn push_ids(sql: &mut Sql, ids: &[Uuid]) {
    sql.bind_list(ids.iter().map(|id| Value::Uuid(Some(*id))));
}

/// Inserts log entries in one statement, skipping any that another writer logged meanwhile;
/// returns the ids actually inserted. Rows go in key order, so that two writers of the same
/// messages wait for each other instead of deadlocking on each other's half-inserted rows.
async fn insert_entries(tx: &mut Tx, items: &[&InboundEntry], now: chrono::DateTime<chrono::Utc>) -> Result<Vec<Uuid>> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let mut items = items.to_vec();
    items.sort_by_cached_key(|i| (i.entry.ext_key(), i.entry.raw_event_id.clone()));
    let columns = items[0].entry.columns();
    let mut sql = Sql::new(format!(
        "INSERT INTO comms_log (id, version, created_at, updated_at, search_text, doc{}) VALUES ",
        columns.iter().map(|(c, _)| format!(", {c}")).collect::<String>()
    ));
    for (i, item) in items.iter().enumerate() {
        sql.push(if i == 0 { "(" } else { ", (" });
        sql.bind(Value::Uuid(Some(item.id))).push(", 1, ").bind(Value::Time(Some(now))).push(", ").bind(Value::Time(Some(now)));
        sql.push(", ").bind(Value::Text(Some(item.entry.search_text()))).push(", ").bind(json(&item.entry)?);
        for (_, value) in item.entry.columns() {
            sql.push(", ").bind(value);
        }
        sql.push(")");
    }
    sql.push(" ON CONFLICT DO NOTHING RETURNING id");
    tx.fetch_all(&sql).await?.iter().map(|row| row.uuid("id")).collect()
}

/// Gives entries logged before long channel message ids were hashed the key [`ext_key`] makes
/// now, so that a redelivery still finds them. Only keys over [`EXT_KEY_MAX_ID_BYTES`] bytes are
/// looked at, through a partial index of just those (migration 0004): run after the migrations,
/// it costs next to nothing once they are re-keyed.
pub(crate) async fn rekey_long_channel_ids(store: &Store) -> Result<u64> {
    let bytes = match store.backend() {
        crate::Backend::Sqlite => "length(CAST(ext_key AS BLOB))",
        crate::Backend::Postgres => "octet_length(ext_key)",
    };
    let sql = Sql::new(format!(
        "SELECT id, kind, ext_key, doc ->> 'ext_message_id' AS ext_message_id FROM comms_log WHERE {bytes} > {EXT_KEY_MAX_ID_BYTES}"
    ));
    let mut rekeyed = 0;
    for row in store.fetch_all(&sql).await? {
        let (Some(id), Some(old)) = (row.get::<Option<String>>("ext_message_id")?, row.get::<Option<String>>("ext_key")?) else { continue };
        let new = ext_key(&row.get::<String>("kind")?, &id);
        if new == old {
            continue;
        }
        let entry = row.uuid("id")?;
        let mut tx = store.begin().await?;
        if let Some(other) = find_by_ext_key(&mut tx, &new).await? {
            // The same message was logged again under the new key before this step ran: the
            // two entries stay as they are, for a user to merge or delete.
            tracing::warn!(%entry, %other, "an entry with a long channel message id is logged twice; not re-keyed");
            continue;
        }
        let mut update = Sql::new("UPDATE comms_log SET ext_key = ");
        update.bind(Value::Text(Some(new))).push(" WHERE id = ").bind(Value::Uuid(Some(entry)));
        rekeyed += tx.execute(&update).await?;
        tx.commit().await?;
    }
    if rekeyed > 0 {
        tracing::info!(rekeyed, "entries with long channel message ids re-keyed by their hash");
    }
    Ok(rekeyed)
}

/// Serializes the reports naming one channel key, so that a report held as the entry gets that
/// key is never missed by both: either it finds the entry, or the entry's transaction finds it
/// held. (PostgreSQL: a transaction-scoped advisory lock; SQLite has one writer at a time.)
async fn lock_channel_key(tx: &mut Tx, key: &str) -> Result<()> {
    if tx.backend() == crate::Backend::Postgres {
        let mut sql = Sql::new("SELECT pg_advisory_xact_lock(hashtextextended(");
        sql.bind(Value::Text(Some(key.to_owned()))).push(", 0))");
        tx.execute(&sql).await?;
    }
    Ok(())
}

/// Keeps a report for a channel message id no entry has yet (once per status), and drops the
/// held reports older than [`HELD_REPORTS_KEPT`].
async fn hold_report(
    tx: &mut Tx,
    key: &str,
    status: DeliveryStatus,
    reason: Option<&str>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<()> {
    let mut sql = Sql::new("DELETE FROM held_delivery_reports WHERE received_at < ");
    sql.bind(Value::Time(Some(now - HELD_REPORTS_KEPT)));
    tx.execute(&sql).await?;
    let mut sql = Sql::new("INSERT INTO held_delivery_reports (ext_key, status, reason, received_at) VALUES (");
    sql.bind(Value::Text(Some(key.to_owned())))
        .push(", ")
        .bind(Value::Text(Some(status.as_str().to_owned())))
        .push(", ")
        .bind(Value::Text(reason.map(str::to_owned)))
        .push(", ")
        .bind(Value::Time(Some(now)))
        .push(") ON CONFLICT (ext_key, status) DO NOTHING");
    tx.execute(&sql).await?;
    Ok(())
}

/// Removes and returns the reports held for `key` (not expired), in the order the statuses
/// advance.
async fn take_held_reports(tx: &mut Tx, key: &str, now: chrono::DateTime<chrono::Utc>) -> Result<Vec<(DeliveryStatus, Option<String>)>> {
    // Expired ones are left to the purge in `hold_report` (taking them here too could lock them
    // in another order than that purge).
    let mut sql = Sql::new("DELETE FROM held_delivery_reports WHERE ext_key = ");
    sql.bind(Value::Text(Some(key.to_owned()))).push(" AND received_at >= ").bind(Value::Time(Some(now - HELD_REPORTS_KEPT)));
    sql.push(" RETURNING status, reason");
    let mut held = Vec::new();
    for row in tx.fetch_all(&sql).await? {
        let status: String = row.get("status")?;
        let status = DeliveryStatus::from_name(&status).ok_or_else(|| StoreError::Corrupt(format!("held report status `{status}`")))?;
        held.push((status, row.get::<Option<String>>("reason")?));
    }
    held.sort_by_key(|(status, _)| status.rank());
    Ok(held)
}

async fn find_by_ext_key(tx: &mut Tx, key: &str) -> Result<Option<Uuid>> {
    let mut sql = Sql::new("SELECT id FROM comms_log WHERE ext_key = ");
    sql.bind(Value::Text(Some(key.into())));
    tx.fetch_optional(&sql).await?.map(|row| row.uuid("id")).transpose()
}

/// Live unmatched entries from the sender with this normalised address, except `except`, locked.
/// Only that sender's entries are locked (locking the whole inbox made two users assigning
/// different senders at once deadlock), and entries another transaction holds are skipped:
/// someone is assigning or changing them right now.
async fn unmatched_from(tx: &mut Tx, normalized: &str, except: Uuid) -> Result<Vec<Record<CommsEntry>>> {
    let backend = tx.backend();
    let mut sql = Sql::new(format!(
        "SELECT {} FROM comms_log WHERE deleted_at IS NULL AND triage = 'unmatched' \
         AND doc -> 'channel_address' ->> 'normalized' = ",
        backend.record_columns()
    ));
    sql.bind(Value::Text(Some(normalized.to_owned()))).push(" AND id <> ").bind(Value::Uuid(Some(except)));
    sql.push(" ORDER BY id").push(skip_locked(backend));
    tx.fetch_all(&sql).await?.iter().map(decode::<CommsEntry>).collect()
}

/// The entry a media record came with, read without a lock (it never changes).
async fn entry_of_media(tx: &mut Tx, media_id: Uuid) -> Result<Option<Uuid>> {
    let mut sql = Sql::new("SELECT comms_id FROM media WHERE id = ");
    sql.bind(Value::Uuid(Some(media_id)));
    match tx.fetch_optional(&sql).await? {
        Some(row) => row.optional_uuid("comms_id"),
        None => Ok(None),
    }
}

/// The media records (deleted ones too) that came with `entries` (locked, so no new ones come),
/// locked in id order, a chunk of ids per query: a sender with tens of thousands of unmatched
/// messages must not make one query with more values than the database binds.
async fn media_of_entries(tx: &mut Tx, entries: &[Uuid]) -> Result<Vec<Record<Media>>> {
    let mut ids = Vec::new();
    for chunk in entries.chunks(MAX_LOOKUP_BINDS) {
        let mut sql = Sql::new("SELECT id FROM media WHERE comms_id IN (");
        push_ids(&mut sql, chunk);
        for row in tx.fetch_all(&sql).await? {
            ids.push(row.uuid("id")?);
        }
    }
    ids.sort_unstable();
    let backend = tx.backend();
    let mut media = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(MAX_LOOKUP_BINDS) {
        let mut sql = Sql::new(format!("SELECT {} FROM media WHERE id IN (", backend.record_columns()));
        push_ids(&mut sql, chunk);
        sql.push(" ORDER BY id").push(backend.lock_rows());
        for row in tx.fetch_all(&sql).await? {
            media.push(decode::<Media>(&row)?);
        }
    }
    Ok(media)
}

/// `user:<id>`, `api_key:<id>` or `system`: who made a decision, as the log records it.
fn actor_label(actor: &crate::Actor) -> String {
    let kind = crate::query::serde_plain(&actor.kind);
    match actor.id {
        Some(id) => format!("{kind}:{id}"),
        None => kind,
    }
}
