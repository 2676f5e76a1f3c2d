//! The core's side of the bus in the store: the transactional outbox (messages written with the
//! change that asks for them, published later by the relay), the dead letters filed for ops, and
//! the connector instances seen through their heartbeats.

use crate::db::{Sql, Tx, Value};
use crate::query::{MAX_LIMIT, Page, SortDirection, SortKey, SortKind, next_cursor, page_size, push_page};
use crate::resources::sort;
use crate::resources::{json, now};
use crate::{Result, Store, StoreError};
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use uuid::Uuid;

/// Dead letters are listed in the order they were filed (their `seq`).
const FILED: SortKey = sort("filed", "seq", SortKind::Int);

/// Writes an outbox message inside the caller's transaction.
pub(crate) async fn enqueue(tx: &mut Tx, envelope: &serde_json::Value, now: DateTime<Utc>) -> Result<()> {
    let mut sql = Sql::new("INSERT INTO outbox (envelope, created_at) VALUES (");
    sql.bind(json(envelope)?).push(", ").bind(Value::Time(Some(now))).push(")");
    tx.execute(&sql).await?;
    Ok(())
}

/// An outbox message claimed for publishing.
#[derive(Debug, Clone)]
pub struct OutboxMessage {
    /// Its place in the outbox.
    pub seq: i64,
    /// The CloudEvents structured JSON.
    pub envelope: serde_json::Value,
    /// Earlier failed attempts.
    pub attempts: i64,
}

/// When an outbox message that could not be published is claimed again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxRetry {
    /// At once (the bus was unavailable: every message would have failed alike, and the relay
    /// backs off as a whole).
    Now,
    /// After `first`, doubled for each earlier failed attempt, at most `max`: the message itself
    /// failed (no queue takes it, no confirm), and the messages after it keep flowing meanwhile.
    Backoff {
        /// After the first failure.
        first: Duration,
        /// The longest wait.
        max: Duration,
    },
}

/// `first` doubled for each failed attempt after the first, at most `max`.
fn backoff(first: Duration, max: Duration, attempts: i64) -> Duration {
    let doublings = u32::try_from((attempts - 1).clamp(0, 30)).unwrap_or(30);
    first.checked_mul(1 << doublings).map_or(max, |wait| wait.min(max))
}

/// An unsent outbox message that failed at least once.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct OutboxFailure {
    /// Its place in the outbox.
    pub seq: i64,
    /// The message's CloudEvents id.
    pub envelope_id: String,
    /// Its CloudEvents type.
    pub event_type: String,
    /// When it was written.
    pub created_at: DateTime<Utc>,
    /// Failed attempts so far.
    pub attempts: i64,
    /// Why the last attempt failed.
    pub last_error: String,
    /// Not claimed again before this.
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// A dead letter filed for ops.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DeadLetter {
    /// Identifier.
    pub id: Uuid,
    /// The consumer group that gave up on it (`core.events`, `connector.email.commands`).
    pub consumer: String,
    /// The message's CloudEvents id.
    pub envelope_id: String,
    /// The message's CloudEvents type.
    pub event_type: String,
    /// Its routing key.
    pub routing_key: String,
    /// The whole message (CloudEvents structured JSON); without its `data` and `subject` when
    /// `data_redacted`.
    pub envelope: serde_json::Value,
    /// Whether the message's data, subject and reason were left out: they may hold any
    /// customer's messages, addresses and files, and the caller may not see every customer.
    pub data_redacted: bool,
    /// Why it was given up on.
    pub reason: String,
    /// How many times it was tried.
    pub attempts: i64,
    /// When it was given up on.
    pub dead_at: DateTime<Utc>,
    /// `dead`, `replayed` or `discarded`.
    pub status: String,
    /// When it was replayed or discarded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<DateTime<Utc>>,
    /// Who replayed or discarded it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_by: Option<String>,
}

/// A replay's hold on a dead letter, from [`Store::lease_dead_letter`]: only the replay that
/// took it can release it or mark the letter replayed.
#[derive(Debug, Clone)]
pub struct DeadLetterLease {
    /// The letter, as it was when leased.
    pub letter: DeadLetter,
    /// When the lease ends; also what tells this lease from a later one on the same letter.
    until: DateTime<Utc>,
}

/// A connector instance as its last heartbeat described it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ConnectorInstance {
    /// Connector name.
    pub name: String,
    /// Instance (host and process).
    pub instance: String,
    /// Version.
    pub version: String,
    /// Channel.
    pub channel: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Its last heartbeat.
    pub last_heartbeat: DateTime<Utc>,
    /// The state it reported (`starting`, `ready`, `degraded`, `stopping`).
    pub state: String,
    /// Detail it reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Commands in flight.
    pub in_flight: i64,
    /// Seconds between its heartbeats.
    pub interval_seconds: i64,
}

impl Store {
    /// Claims up to `limit` unsent outbox messages, oldest first, for `lease`: another relay
    /// skips them until the lease ends, so a relay that dies mid-publish only delays them.
    pub async fn claim_outbox(&self, limit: u32, lease: Duration) -> Result<Vec<OutboxMessage>> {
        let now = now();
        let mut tx = self.begin().await?;
        let mut sql = Sql::new("UPDATE outbox SET lease_until = ");
        sql.bind(Value::Time(Some(now + lease)));
        sql.push(" WHERE seq IN (SELECT seq FROM outbox WHERE sent_at IS NULL AND (lease_until IS NULL OR lease_until < ")
            .bind(Value::Time(Some(now)))
            .push(&format!(") ORDER BY seq LIMIT {limit}{})", skip_locked(tx.backend())));
        sql.push(&format!(" RETURNING seq, {} AS envelope, attempts", json_text(tx.backend(), "envelope")));
        let rows = tx.fetch_all(&sql).await?;
        tx.commit().await?;
        let mut messages = Vec::with_capacity(rows.len());
        for row in rows {
            let text = row.get::<String>("envelope")?;
            let envelope = serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("outbox envelope: {e}")))?;
            messages.push(OutboxMessage { seq: row.get("seq")?, envelope, attempts: row.get("attempts")? });
        }
        messages.sort_by_key(|m| m.seq);
        Ok(messages)
    }

    /// Marks outbox messages published.
    pub async fn outbox_sent(&self, seqs: &[i64]) -> Result<()> {
        if seqs.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        let mut sql = Sql::new("UPDATE outbox SET sent_at = ");
        sql.bind(Value::Time(Some(now()))).push(", lease_until = NULL WHERE seq IN (");
        push_ints(&mut sql, seqs);
        tx.execute(&sql).await?;
        tx.commit().await
    }

    /// Releases claimed messages that could not be published, with the error (`attempts` + 1,
    /// `last_error`), to be claimed again as `retry` says. Messages already sent are left alone.
    pub async fn outbox_failed(&self, seqs: &[i64], error: &str, retry: OutboxRetry) -> Result<()> {
        if seqs.is_empty() {
            return Ok(());
        }
        let error: String = error.chars().take(1_000).collect();
        let mut tx = self.begin().await?;
        match retry {
            OutboxRetry::Now => {
                let mut sql = Sql::new("UPDATE outbox SET lease_until = NULL, attempts = attempts + 1, last_error = ");
                sql.bind(Value::Text(Some(error))).push(" WHERE sent_at IS NULL AND seq IN (");
                push_ints(&mut sql, seqs);
                tx.execute(&sql).await?;
            }
            OutboxRetry::Backoff { first, max } => {
                let mut sql = Sql::new("SELECT seq, attempts FROM outbox WHERE sent_at IS NULL AND seq IN (");
                push_ints(&mut sql, seqs);
                let now = now();
                for row in tx.fetch_all(&sql).await? {
                    let attempts = row.get::<i64>("attempts")? + 1;
                    let mut update = Sql::new("UPDATE outbox SET attempts = ");
                    update.bind(Value::Int(Some(attempts))).push(", last_error = ").bind(Value::Text(Some(error.clone())));
                    update.push(", lease_until = ").bind(Value::Time(Some(now + backoff(first, max, attempts))));
                    update.push(" WHERE seq = ").bind(Value::Int(Some(row.get::<i64>("seq")?)));
                    tx.execute(&update).await?;
                }
            }
        }
        tx.commit().await
    }

    /// Unsent outbox messages that failed at least once, oldest first, at most `limit`: what
    /// ops look at when something is stuck.
    pub async fn outbox_failing(&self, limit: u32) -> Result<Vec<OutboxFailure>> {
        let sql = Sql::new(format!(
            "SELECT seq, {} AS envelope, created_at, attempts, last_error, lease_until FROM outbox \
             WHERE sent_at IS NULL AND attempts > 0 ORDER BY seq LIMIT {}",
            json_text(self.backend(), "envelope"),
            limit.clamp(1, MAX_LIMIT)
        ));
        let rows = self.fetch_all(&sql).await?;
        rows.iter()
            .map(|row| {
                let text = row.get::<String>("envelope")?;
                let envelope: serde_json::Value =
                    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("outbox envelope: {e}")))?;
                let field = |name: &str| envelope.get(name).and_then(|v| v.as_str()).unwrap_or("unknown").to_owned();
                Ok(OutboxFailure {
                    seq: row.get("seq")?,
                    envelope_id: field("id"),
                    event_type: field("type"),
                    created_at: row.time("created_at")?.unwrap_or_default(),
                    attempts: row.get("attempts")?,
                    last_error: row.get::<Option<String>>("last_error")?.unwrap_or_default(),
                    next_attempt_at: row.time("lease_until")?,
                })
            })
            .collect()
    }

    /// How many outbox messages wait to be published, and the age of the oldest.
    pub async fn outbox_backlog(&self) -> Result<(i64, Option<DateTime<Utc>>)> {
        let rows = self.fetch_all(&Sql::new("SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM outbox WHERE sent_at IS NULL")).await?;
        let row = rows.first().ok_or_else(|| StoreError::Corrupt("no count".into()))?;
        Ok((row.get("n")?, row.time("oldest")?))
    }

    /// Deletes outbox messages published more than `age` ago (a thousand per transaction, so
    /// that a large backlog of them never holds the table for long); how many.
    pub async fn prune_outbox(&self, age: Duration) -> Result<u64> {
        let before = now() - age;
        let mut pruned = 0;
        loop {
            let mut tx = self.begin().await?;
            let mut sql = Sql::new("DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE sent_at IS NOT NULL AND sent_at < ");
            sql.bind(Value::Time(Some(before))).push(&format!(" ORDER BY seq LIMIT {PRUNE_BATCH})"));
            let n = tx.execute(&sql).await?;
            tx.commit().await?;
            pruned += n;
            if n < PRUNE_BATCH {
                return Ok(pruned);
            }
        }
    }

    /// Files a dead letter from the bus. The same dead letter delivered twice is filed once.
    #[allow(clippy::too_many_arguments)]
    pub async fn file_dead_letter(
        &self,
        consumer: &str,
        envelope_id: &str,
        event_type: &str,
        routing_key: &str,
        envelope: &serde_json::Value,
        reason: &str,
        attempts: i64,
        dead_at: DateTime<Utc>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let mut sql = Sql::new(
            "INSERT INTO dead_letters (id, consumer, envelope_id, event_type, routing_key, envelope, reason, attempts, dead_at, status) VALUES (",
        );
        sql.bind(Value::Uuid(Some(Uuid::now_v7())));
        for value in [consumer, envelope_id, event_type, routing_key] {
            sql.push(", ").bind(Value::Text(Some(value.into())));
        }
        sql.push(", ").bind(json(envelope)?).push(", ").bind(Value::Text(Some(reason.into())));
        sql.push(", ").bind(Value::Int(Some(attempts))).push(", ").bind(Value::Time(Some(dead_at)));
        sql.push(", 'dead') ON CONFLICT DO NOTHING");
        tx.execute(&sql).await?;
        tx.commit().await
    }

    /// Dead letters, newest filed first, optionally only those in `status` or of `consumer`; a
    /// page at a time, like every listing (`cursor` from the previous page, `limit` 1 to
    /// [`MAX_LIMIT`]).
    pub async fn dead_letters(
        &self,
        status: Option<&str>,
        consumer: Option<&str>,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Page<DeadLetter>> {
        let limit = page_size(limit)?;
        let mut sql = Sql::new(format!("SELECT seq, {} FROM dead_letters WHERE 1 = 1", dead_letter_columns(self.backend())));
        if let Some(status) = status {
            sql.push(" AND status = ").bind(Value::Text(Some(status.into())));
        }
        if let Some(consumer) = consumer {
            sql.push(" AND consumer = ").bind(Value::Text(Some(consumer.into())));
        }
        let listing = push_page(&mut sql, FILED, SortDirection::Desc, cursor, limit)?;
        let rows = self.fetch_all(&sql).await?;
        let more = rows.len() > limit as usize;
        let mut items = Vec::new();
        let mut next = None;
        for (i, row) in rows.iter().take(limit as usize).enumerate() {
            let letter = decode_dead_letter(row)?;
            if more && i + 1 == limit as usize {
                next = Some(next_cursor(FILED, SortDirection::Desc, listing.clone(), row.get::<i64>("seq")?.into(), letter.id));
            }
            items.push(letter);
        }
        Ok(Page { items, next_cursor: next })
    }

    /// One dead letter.
    pub async fn dead_letter(&self, id: Uuid) -> Result<DeadLetter> {
        self.fetch_all(&select_dead_letter(self.backend(), id)).await?.first().map(decode_dead_letter).ok_or(StoreError::NotFound)?
    }

    /// Leases a dead letter to the replay about to publish it, for `lease`: until then, or until
    /// [`Store::release_dead_letter`], another replay or a discard of it is refused, so a letter
    /// is never published twice by two replays at once. Refuses a letter already resolved or
    /// leased. A replay cut off midway leaves its lease to end by itself.
    pub async fn lease_dead_letter(&self, id: Uuid, lease: Duration) -> Result<DeadLetterLease> {
        let now = now();
        let until = now + lease;
        let mut tx = self.begin().await?;
        let mut sql = Sql::new("UPDATE dead_letters SET lease_until = ");
        sql.bind(Value::Time(Some(until)));
        sql.push(" WHERE status = 'dead' AND id = ").bind(Value::Uuid(Some(id)));
        push_not_leased(&mut sql, now);
        let changed = tx.execute(&sql).await?;
        // Read in the same transaction: a lease is only taken along with the letter it is for.
        let letter = dead_letter_in(&mut tx, id).await?;
        if changed == 0 {
            return Err(refusal(&letter));
        }
        tx.commit().await?;
        Ok(DeadLetterLease { letter, until })
    }

    /// Gives back the lease of a replay that did not publish, so the letter can be replayed or
    /// discarded again at once; a lease that has ended and been taken by another replay since is
    /// left to that replay.
    pub async fn release_dead_letter(&self, lease: &DeadLetterLease) -> Result<()> {
        let mut tx = self.begin().await?;
        let mut sql = Sql::new("UPDATE dead_letters SET lease_until = NULL");
        push_held(&mut sql, lease);
        tx.execute(&sql).await?;
        tx.commit().await
    }

    /// Marks a leased dead letter `replayed`, once the bus has its message. Refused (a
    /// conflict) when the lease is no longer this replay's.
    pub async fn mark_replayed(&self, lease: &DeadLetterLease, by: &str) -> Result<DeadLetter> {
        let mut sql = Sql::new("UPDATE dead_letters SET status = 'replayed', resolved_at = ");
        sql.bind(Value::Time(Some(now()))).push(", resolved_by = ").bind(Value::Text(Some(by.into()))).push(", lease_until = NULL");
        push_held(&mut sql, lease);
        self.resolve(lease.letter.id, &sql).await
    }

    /// Marks a dead letter `replayed` (when it was put back on its queue some other way) or
    /// `discarded`; refuses one already resolved or leased to a replay.
    pub async fn resolve_dead_letter(&self, id: Uuid, status: &str, by: &str) -> Result<DeadLetter> {
        let now = now();
        let mut sql = Sql::new("UPDATE dead_letters SET status = ");
        sql.bind(Value::Text(Some(status.into()))).push(", resolved_at = ").bind(Value::Time(Some(now)));
        sql.push(", resolved_by = ").bind(Value::Text(Some(by.into())));
        sql.push(" WHERE status = 'dead' AND id = ").bind(Value::Uuid(Some(id)));
        push_not_leased(&mut sql, now);
        self.resolve(id, &sql).await
    }

    /// Runs `update`, which resolves dead letter `id` when it may; the letter, or why not.
    async fn resolve(&self, id: Uuid, update: &Sql) -> Result<DeadLetter> {
        let mut tx = self.begin().await?;
        let changed = tx.execute(update).await?;
        let letter = dead_letter_in(&mut tx, id).await?;
        if changed == 0 {
            return Err(refusal(&letter));
        }
        tx.commit().await?;
        Ok(letter)
    }

    /// Dead letters waiting for ops, per consumer group.
    pub async fn dead_letter_counts(&self) -> Result<Vec<(String, i64)>> {
        let rows = self
            .fetch_all(&Sql::new(
                "SELECT consumer, COUNT(*) AS n FROM dead_letters WHERE status = 'dead' GROUP BY consumer ORDER BY consumer",
            ))
            .await?;
        rows.iter().map(|r| Ok((r.get::<String>("consumer")?, r.get::<i64>("n")?))).collect()
    }

    /// Records a connector heartbeat (a late, older heartbeat does not overwrite a newer one).
    pub async fn record_heartbeat(&self, instance: &ConnectorInstance) -> Result<()> {
        let mut tx = self.begin().await?;
        let mut sql = Sql::new(
            "INSERT INTO connector_instances (name, instance, version, channel, started_at, last_heartbeat, state, detail, in_flight, interval_seconds) VALUES (",
        );
        for (i, value) in [&instance.name, &instance.instance, &instance.version, &instance.channel].into_iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.bind(Value::Text(Some(value.clone())));
        }
        sql.push(", ").bind(Value::Time(Some(instance.started_at))).push(", ").bind(Value::Time(Some(instance.last_heartbeat)));
        sql.push(", ").bind(Value::Text(Some(instance.state.clone()))).push(", ").bind(Value::Text(instance.detail.clone()));
        sql.push(", ").bind(Value::Int(Some(instance.in_flight))).push(", ").bind(Value::Int(Some(instance.interval_seconds)));
        sql.push(
            ") ON CONFLICT (name, instance) DO UPDATE SET version = excluded.version, channel = excluded.channel, \
             started_at = excluded.started_at, last_heartbeat = excluded.last_heartbeat, state = excluded.state, \
             detail = excluded.detail, in_flight = excluded.in_flight, interval_seconds = excluded.interval_seconds \
             WHERE connector_instances.last_heartbeat <= excluded.last_heartbeat",
        );
        tx.execute(&sql).await?;
        tx.commit().await
    }

    /// Every connector instance seen, by name and instance.
    pub async fn connector_instances(&self) -> Result<Vec<ConnectorInstance>> {
        let rows = self
            .fetch_all(&Sql::new(
                "SELECT name, instance, version, channel, started_at, last_heartbeat, state, detail, in_flight, interval_seconds \
                 FROM connector_instances ORDER BY name, instance",
            ))
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ConnectorInstance {
                    name: r.get("name")?,
                    instance: r.get("instance")?,
                    version: r.get("version")?,
                    channel: r.get("channel")?,
                    started_at: r.time("started_at")?.unwrap_or_default(),
                    last_heartbeat: r.time("last_heartbeat")?.unwrap_or_default(),
                    state: r.get("state")?,
                    detail: r.get("detail")?,
                    in_flight: r.get("in_flight")?,
                    interval_seconds: r.get("interval_seconds")?,
                })
            })
            .collect()
    }

    /// Forgets connector instances not heard from since `before` (stopped long ago).
    pub async fn forget_connector_instances(&self, before: DateTime<Utc>) -> Result<u64> {
        let mut tx = self.begin().await?;
        let mut sql = Sql::new("DELETE FROM connector_instances WHERE last_heartbeat < ");
        sql.bind(Value::Time(Some(before)));
        let n = tx.execute(&sql).await?;
        tx.commit().await?;
        Ok(n)
    }
}

/// Rows [`Store::prune_outbox`] deletes per transaction.
const PRUNE_BATCH: u64 = 1_000;

/// The suffix that locks selected rows, skipping rows another transaction holds.
pub(crate) fn skip_locked(backend: crate::Backend) -> &'static str {
    match backend {
        crate::Backend::Sqlite => "",
        crate::Backend::Postgres => " FOR UPDATE SKIP LOCKED",
    }
}

fn json_text(backend: crate::Backend, column: &str) -> String {
    match backend {
        crate::Backend::Sqlite => column.to_owned(),
        crate::Backend::Postgres => format!("{column}::text"),
    }
}

/// A dead letter as read inside `tx`.
async fn dead_letter_in(tx: &mut Tx, id: Uuid) -> Result<DeadLetter> {
    tx.fetch_all(&select_dead_letter(tx.backend(), id)).await?.first().map(decode_dead_letter).ok_or(StoreError::NotFound)?
}

fn select_dead_letter(backend: crate::Backend, id: Uuid) -> Sql {
    let mut sql = Sql::new(format!("SELECT {} FROM dead_letters WHERE id = ", dead_letter_columns(backend)));
    sql.bind(Value::Uuid(Some(id)));
    sql
}

/// Only the dead letter `lease` is for, while that lease is still the one it holds.
fn push_held(sql: &mut Sql, lease: &DeadLetterLease) {
    sql.push(" WHERE status = 'dead' AND id = ").bind(Value::Uuid(Some(lease.letter.id)));
    sql.push(" AND lease_until = ").bind(Value::Time(Some(lease.until)));
}

/// Only a dead letter no replay holds a lease on (or whose lease has ended).
fn push_not_leased(sql: &mut Sql, now: DateTime<Utc>) {
    sql.push(" AND (lease_until IS NULL OR lease_until < ").bind(Value::Time(Some(now))).push(")");
}

/// Why a dead letter cannot be leased or resolved now.
fn refusal(letter: &DeadLetter) -> StoreError {
    if letter.status == "dead" {
        StoreError::conflict(Some("/status"), "the dead letter is being replayed; try again when that replay has ended")
    } else {
        StoreError::conflict(Some("/status"), format!("the dead letter was already {}", letter.status))
    }
}

fn dead_letter_columns(backend: crate::Backend) -> String {
    format!(
        "id, consumer, envelope_id, event_type, routing_key, {} AS envelope, reason, attempts, dead_at, status, resolved_at, resolved_by",
        json_text(backend, "envelope")
    )
}

fn decode_dead_letter(row: &crate::db::Row) -> Result<DeadLetter> {
    let text = row.get::<String>("envelope")?;
    Ok(DeadLetter {
        id: row.uuid("id")?,
        consumer: row.get("consumer")?,
        envelope_id: row.get("envelope_id")?,
        event_type: row.get("event_type")?,
        routing_key: row.get("routing_key")?,
        envelope: serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("dead letter envelope: {e}")))?,
        reason: row.get("reason")?,
        attempts: row.get("attempts")?,
        dead_at: row.time("dead_at")?.unwrap_or_default(),
        status: row.get("status")?,
        resolved_at: row.time("resolved_at")?,
        resolved_by: row.get("resolved_by")?,
        data_redacted: false,
    })
}

fn push_ints(sql: &mut Sql, values: &[i64]) {
    sql.bind_list(values.iter().map(|value| Value::Int(Some(*value))));
}
