//! The two backends behind one face: connection set-up, migrations, transactions, and the
//! handful of places where SQLite and PostgreSQL differ (value encoding, search clause, row
//! locks). Everything above this module writes SQL once.

use crate::audit::Actor;
use crate::{Result, StoreError};
use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::value::RawValue;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{ConnectOptions, Executor, PgPool, Postgres, Row as _, Sqlite, SqlitePool, Transaction};
use std::fmt::Write as _;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite, the embedded default.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// How to reach the database. The URL may hold a password: it is never printed by `Debug`.
#[derive(Clone)]
pub struct StoreConfig {
    /// `sqlite://path/to/file.db` or `postgres://user:pass@host/db`.
    pub url: String,
    /// Connections in the pool (PostgreSQL) or readers (SQLite; there is one writer).
    pub max_connections: u32,
    /// How long to wait for a connection or a lock.
    pub acquire_timeout: Duration,
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .finish()
    }
}

/// The URL with any password replaced by `***`.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

impl StoreConfig {
    /// A SQLite database in `path`, created if missing.
    pub fn sqlite_file(path: impl AsRef<Path>) -> Self {
        Self::from_url(format!("sqlite://{}", path.as_ref().display()))
    }

    /// Any supported URL with default pool settings.
    pub fn from_url(url: impl Into<String>) -> Self {
        StoreConfig { url: url.into(), max_connections: 8, acquire_timeout: Duration::from_secs(10) }
    }

    /// The backend the URL names.
    pub fn backend(&self) -> Result<Backend> {
        if self.url.starts_with("postgres://") || self.url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else if self.url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else {
            Err(StoreError::Config(format!("unsupported database URL `{}`: use sqlite:// or postgres://", redact_url(&self.url))))
        }
    }
}

/// The store: cheap to clone, shared by all request handlers.
#[derive(Debug, Clone)]
pub struct Store {
    pools: Pools,
    /// Who the changes made through this handle are attributed to in the audit trail.
    pub(crate) actor: Arc<Actor>,
}

#[derive(Debug, Clone)]
enum Pools {
    /// SQLite allows one writer at a time: writes go through a single connection so
    /// transactions queue instead of failing with SQLITE_BUSY; reads use their own pool.
    Sqlite {
        read: SqlitePool,
        write: SqlitePool,
    },
    Postgres(PgPool),
}

impl Store {
    /// Connects to the database the configuration names (creating a SQLite file and its
    /// directory when missing). Does not migrate: call [`Store::migrate`].
    pub async fn connect(config: &StoreConfig) -> Result<Store> {
        let pools = match config.backend()? {
            Backend::Sqlite => {
                let options = SqliteConnectOptions::from_str(&config.url)?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .foreign_keys(true)
                    .busy_timeout(config.acquire_timeout)
                    .log_statements(tracing::log::LevelFilter::Trace);
                if let Some(dir) = options.get_filename().parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| StoreError::Config(format!("cannot create {}: {e}", dir.display())))?;
                }
                let write = SqlitePoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(config.acquire_timeout)
                    .connect_with(options.clone())
                    .await?;
                let read = SqlitePoolOptions::new()
                    .max_connections(config.max_connections.max(1))
                    .acquire_timeout(config.acquire_timeout)
                    .connect_with(options.read_only(true))
                    .await?;
                Pools::Sqlite { read, write }
            }
            Backend::Postgres => {
                let options = PgConnectOptions::from_str(&config.url)?.log_statements(tracing::log::LevelFilter::Trace);
                // One direct connection first: a pool would retry a refused connection until its
                // timeout and then report only "pool timed out", hiding the cause.
                sqlx::Connection::close(options.connect().await?).await?;
                let pool = PgPoolOptions::new()
                    .max_connections(config.max_connections.max(1))
                    .acquire_timeout(config.acquire_timeout)
                    .connect_with(options)
                    .await?;
                Pools::Postgres(pool)
            }
        };
        Ok(Store { pools, actor: Arc::new(Actor::default()) })
    }

    /// Applies the backend's pending migrations (and the data changes that need Rust).
    #[tracing::instrument(skip_all, fields(backend = ?self.backend()))]
    pub async fn migrate(&self) -> Result<()> {
        match &self.pools {
            Pools::Sqlite { write, .. } => sqlx::migrate!("../../migrations/sqlite").run(write).await?,
            Pools::Postgres(pool) => sqlx::migrate!("../../migrations/postgres").run(pool).await?,
        }
        crate::comms::rekey_long_channel_ids(self).await?;
        Ok(())
    }

    /// A handle on the same database whose changes are attributed to `actor` in the audit trail.
    pub fn acting_as(&self, actor: Actor) -> Store {
        Store { pools: self.pools.clone(), actor: Arc::new(actor) }
    }

    /// Who this handle acts as.
    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    /// Which backend this store runs on.
    pub fn backend(&self) -> Backend {
        match self.pools {
            Pools::Sqlite { .. } => Backend::Sqlite,
            Pools::Postgres(_) => Backend::Postgres,
        }
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<()> {
        match &self.pools {
            Pools::Sqlite { read, .. } => read.execute("SELECT 1").await.map(drop)?,
            Pools::Postgres(pool) => pool.execute("SELECT 1").await.map(drop)?,
        }
        Ok(())
    }

    /// Runs one administrative statement (no bound values, no result), e.g. `CREATE DATABASE`
    /// for test set-up. Never pass user input.
    pub async fn execute_raw(&self, statement: &str) -> Result<()> {
        match &self.pools {
            Pools::Sqlite { write, .. } => write.execute(sqlx::raw_sql(statement)).await.map(drop)?,
            Pools::Postgres(pool) => pool.execute(sqlx::raw_sql(statement)).await.map(drop)?,
        }
        Ok(())
    }

    /// Closes every connection.
    pub async fn close(&self) {
        match &self.pools {
            Pools::Sqlite { read, write } => {
                read.close().await;
                write.close().await;
            }
            Pools::Postgres(pool) => pool.close().await,
        }
    }

    /// Starts a write transaction.
    pub(crate) async fn begin(&self) -> Result<Tx> {
        Ok(match &self.pools {
            Pools::Sqlite { write, .. } => Tx::Sqlite(write.begin().await?),
            Pools::Postgres(pool) => Tx::Postgres(pool.begin().await?),
        })
    }

    /// Runs a read-only query outside any transaction.
    pub(crate) async fn fetch_all(&self, sql: &Sql) -> Result<Vec<Row>> {
        match &self.pools {
            Pools::Sqlite { read, .. } => sqlite::fetch_all(read, sql).await,
            Pools::Postgres(pool) => postgres::fetch_all(pool, sql).await,
        }
    }
}

/// A write transaction on either backend. Dropped without [`Tx::commit`], it rolls back.
pub(crate) enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

impl Tx {
    pub(crate) fn backend(&self) -> Backend {
        match self {
            Tx::Sqlite(_) => Backend::Sqlite,
            Tx::Postgres(_) => Backend::Postgres,
        }
    }

    pub(crate) async fn execute(&mut self, sql: &Sql) -> Result<u64> {
        match self {
            Tx::Sqlite(tx) => sqlite::execute(&mut **tx, sql).await,
            Tx::Postgres(tx) => postgres::execute(&mut **tx, sql).await,
        }
    }

    pub(crate) async fn fetch_all(&mut self, sql: &Sql) -> Result<Vec<Row>> {
        match self {
            Tx::Sqlite(tx) => sqlite::fetch_all(&mut **tx, sql).await,
            Tx::Postgres(tx) => postgres::fetch_all(&mut **tx, sql).await,
        }
    }

    pub(crate) async fn fetch_optional(&mut self, sql: &Sql) -> Result<Option<Row>> {
        Ok(self.fetch_all(sql).await?.into_iter().next())
    }

    pub(crate) async fn commit(self) -> Result<()> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await?,
            Tx::Postgres(tx) => tx.commit().await?,
        }
        Ok(())
    }
}

/// A value to bind, encoded per backend: UUIDs and times are native types on PostgreSQL and
/// text on SQLite (times in a fixed-width UTC form, so text order is time order).
#[derive(Debug, Clone)]
pub(crate) enum Value {
    Text(Option<String>),
    Int(Option<i64>),
    Bool(bool),
    Uuid(Option<Uuid>),
    Time(Option<DateTime<Utc>>),
    Json(Box<RawValue>),
}

/// The SQLite text form of a time: `2026-11-21T08:01:49.123456Z`.
fn sqlite_time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn parse_sqlite_time(text: &str) -> Result<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.6fZ")
        .map(|t| t.and_utc())
        .map_err(|e| StoreError::Corrupt(format!("time `{text}`: {e}")))
}

/// SQL text with its bound values; [`Sql::bind`] appends the next `$N` placeholder.
#[derive(Debug, Default)]
pub(crate) struct Sql {
    text: String,
    args: Vec<Value>,
    /// Where each placeholder is in `text`, in order (text only grows at its end, so the
    /// placeholders come in the order of their values).
    placeholders: Vec<std::ops::Range<usize>>,
    /// Planned for its values at every execution rather than through a cached statement.
    plan_each_time: bool,
}

impl Sql {
    pub(crate) fn new(text: impl Into<String>) -> Self {
        Sql { text: text.into(), ..Sql::default() }
    }

    pub(crate) fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// A short digest of the statement so far, its text and its values: what a listing's cursor
    /// is tied to, so that a cursor is refused by any other listing (another resource, filter,
    /// search or user's view).
    pub(crate) fn digest(&self) -> String {
        use sha2::Digest as _;
        let mut hasher = sha2::Sha256::new();
        hasher.update(self.text.as_bytes());
        for value in &self.args {
            hasher.update([0]);
            hasher.update(format!("{value:?}").as_bytes());
        }
        hasher.finalize()[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Binds `values` as a comma-separated list and closes the parenthesis (after `IN (`).
    pub(crate) fn bind_list(&mut self, values: impl IntoIterator<Item = Value>) -> &mut Self {
        for (i, value) in values.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.bind(value);
        }
        self.push(")")
    }

    pub(crate) fn bind(&mut self, value: Value) -> &mut Self {
        self.args.push(value);
        let start = self.text.len();
        let _ = write!(self.text, "${}", self.args.len());
        self.placeholders.push(start..self.text.len());
        self
    }

    /// The text with every placeholder written as SQLite's anonymous `?` (they are numbered in
    /// order anyway). SQLite looks a named parameter such as `$7` up by a walk along the
    /// statement's list of names, once per value: quadratic in the values, which made a batch
    /// insert of 500 log entries (12,500 values) spend most of its time there.
    fn anonymous_text(&self) -> String {
        let mut text = String::with_capacity(self.text.len());
        let mut copied = 0;
        for placeholder in &self.placeholders {
            text.push_str(&self.text[copied..placeholder.start]);
            text.push('?');
            copied = placeholder.end;
        }
        text.push_str(&self.text[copied..]);
        text
    }

    #[cfg(test)]
    fn text(&self) -> &str {
        &self.text
    }
}

/// One result row, decoded by column name into backend-neutral values.
pub(crate) enum Row {
    Sqlite(SqliteRow),
    Postgres(PgRow),
}

impl Row {
    pub(crate) fn uuid(&self, column: &str) -> Result<Uuid> {
        match self {
            Row::Sqlite(r) => {
                let text: String = r.try_get(column)?;
                Uuid::parse_str(&text).map_err(|e| StoreError::Corrupt(format!("{column} `{text}`: {e}")))
            }
            Row::Postgres(r) => Ok(r.try_get(column)?),
        }
    }

    /// A column whose type both drivers decode natively (text, integers, booleans).
    pub(crate) fn get<T>(&self, column: &str) -> Result<T>
    where
        T: for<'r> sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite> + for<'r> sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
    {
        Ok(match self {
            Row::Sqlite(r) => r.try_get(column)?,
            Row::Postgres(r) => r.try_get(column)?,
        })
    }

    pub(crate) fn optional_uuid(&self, column: &str) -> Result<Option<Uuid>> {
        match self {
            Row::Sqlite(r) => r
                .try_get::<Option<String>, _>(column)?
                .map(|text| Uuid::parse_str(&text).map_err(|e| StoreError::Corrupt(format!("{column} `{text}`: {e}"))))
                .transpose(),
            Row::Postgres(r) => Ok(r.try_get(column)?),
        }
    }

    pub(crate) fn time(&self, column: &str) -> Result<Option<DateTime<Utc>>> {
        match self {
            Row::Sqlite(r) => r.try_get::<Option<String>, _>(column)?.as_deref().map(parse_sqlite_time).transpose(),
            Row::Postgres(r) => Ok(r.try_get(column)?),
        }
    }
}

/// Makes `%`, `_` and `\` in a search term match themselves in a LIKE pattern.
pub(crate) fn escape_like(term: &str) -> String {
    let mut out = String::with_capacity(term.len());
    for c in term.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The SQL that differs between the backends.
pub(crate) trait Dialect {
    /// The column list that reads a record (`doc` as text on both, read with `Row::get`).
    fn record_columns(&self) -> &'static str;
    /// Appends ` AND <condition>` matching rows of `table` whose folded search text contains
    /// `term`, answered by the backend's trigram index.
    fn push_search(&self, sql: &mut Sql, table: &str, term: &str);
    /// The suffix that locks selected rows until the transaction ends.
    fn lock_rows(&self) -> &'static str;
}

impl Dialect for Backend {
    fn record_columns(&self) -> &'static str {
        match self {
            Backend::Sqlite => "id, version, created_at, updated_at, deleted_at, doc",
            Backend::Postgres => "id, version, created_at, updated_at, deleted_at, doc::text AS doc",
        }
    }

    fn push_search(&self, sql: &mut Sql, table: &str, term: &str) {
        match self {
            // FTS5 with the trigram tokenizer. A quoted phrase of three characters or more
            // matches as a substring from the index alone. A LIKE would not: with an ESCAPE
            // clause SQLite does not hand it to FTS5 at all (every search read the whole table),
            // and even without one FTS5 re-reads every candidate row to check the pattern.
            // Shorter terms have no trigram and take LIKE, which scans.
            Backend::Sqlite => {
                sql.push(&format!(" AND {table}.rowid IN (SELECT rowid FROM {table}_fts WHERE "));
                if term.chars().count() >= 3 {
                    sql.push(&format!("{table}_fts MATCH "))
                        .bind(Value::Text(Some(format!("\"{}\"", term.replace('"', "\"\"")))))
                        .push(")");
                } else {
                    sql.push("search_text LIKE ").bind(Value::Text(Some(format!("%{}%", escape_like(term))))).push(" ESCAPE '\\')");
                }
            }
            // pg_trgm's GIN index answers LIKE. A cached generic plan cannot see the pattern and
            // may walk the sort index instead, filtering every row, which is slow for a rare
            // term: searches are planned for their terms each time.
            Backend::Postgres => {
                sql.push(&format!(" AND {table}.search_text LIKE "))
                    .bind(Value::Text(Some(format!("%{}%", escape_like(term)))))
                    .push(" ESCAPE '\\'");
                sql.plan_each_time = true;
            }
        };
    }

    fn lock_rows(&self) -> &'static str {
        match self {
            // One writer connection: a write transaction already excludes all others.
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE",
        }
    }
}

mod sqlite {
    use super::*;
    use sqlx::query::Query;
    use sqlx::sqlite::SqliteArguments;

    fn bind<'q>(query: Query<'q, Sqlite, SqliteArguments<'q>>, value: &'q Value) -> Query<'q, Sqlite, SqliteArguments<'q>> {
        match value {
            Value::Text(v) => query.bind(v.as_deref()),
            Value::Int(v) => query.bind(*v),
            Value::Bool(v) => query.bind(*v),
            Value::Uuid(v) => query.bind(v.map(|u| u.hyphenated().to_string())),
            Value::Time(v) => query.bind(v.as_ref().map(sqlite_time)),
            Value::Json(v) => query.bind(v.get()),
        }
    }

    fn query<'q>(text: &'q str, args: &'q [Value]) -> Query<'q, Sqlite, SqliteArguments<'q>> {
        args.iter().fold(sqlx::query(text), bind)
    }

    pub(super) async fn execute<'e, E: Executor<'e, Database = Sqlite>>(executor: E, sql: &Sql) -> Result<u64> {
        let text = sql.anonymous_text();
        Ok(query(&text, &sql.args).execute(executor).await?.rows_affected())
    }

    pub(super) async fn fetch_all<'e, E: Executor<'e, Database = Sqlite>>(executor: E, sql: &Sql) -> Result<Vec<Row>> {
        let text = sql.anonymous_text();
        Ok(query(&text, &sql.args).fetch_all(executor).await?.into_iter().map(Row::Sqlite).collect())
    }
}

mod postgres {
    use super::*;
    use sqlx::postgres::PgArguments;
    use sqlx::query::Query;
    use sqlx::types::Json;

    fn bind<'q>(query: Query<'q, Postgres, PgArguments>, value: &'q Value) -> Query<'q, Postgres, PgArguments> {
        match value {
            Value::Text(v) => query.bind(v.as_deref()),
            Value::Int(v) => query.bind(*v),
            Value::Bool(v) => query.bind(*v),
            Value::Uuid(v) => query.bind(*v),
            Value::Time(v) => query.bind(*v),
            Value::Json(v) => query.bind(Json(v.as_ref())),
        }
    }

    fn query(sql: &Sql) -> Query<'_, Postgres, PgArguments> {
        sql.args.iter().fold(sqlx::query(sql.text.as_str()), bind).persistent(!sql.plan_each_time)
    }

    pub(super) async fn execute<'e, E: Executor<'e, Database = Postgres>>(executor: E, sql: &Sql) -> Result<u64> {
        Ok(query(sql).execute(executor).await?.rows_affected())
    }

    pub(super) async fn fetch_all<'e, E: Executor<'e, Database = Postgres>>(executor: E, sql: &Sql) -> Result<Vec<Row>> {
        Ok(query(sql).fetch_all(executor).await?.into_iter().map(Row::Postgres).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unreachable_server_is_reported_with_its_cause() {
        let config = StoreConfig { acquire_timeout: Duration::from_secs(30), ..StoreConfig::from_url("postgres://crm:pw@127.0.0.1:1/crm") };
        let started = std::time::Instant::now();
        let err = Store::connect(&config).await.expect_err("nothing listens on port 1");
        let chain = format!("{err}: {:?}", std::error::Error::source(&err));
        assert!(chain.to_lowercase().contains("refused"), "{chain}");
        assert!(started.elapsed() < Duration::from_secs(10), "reported only after {:?}", started.elapsed());
    }

    /// A commit is on disk before it returns (the WAL is synced at each commit): ingest acks a
    /// batch to the bus after its commit, so a power cut must not take back what was acked.
    #[tokio::test]
    async fn sqlite_commits_are_synced() {
        let dir = std::env::temp_dir().join(format!("crm-store-sync-{}", Uuid::now_v7()));
        let store = Store::connect(&StoreConfig::from_url(format!("sqlite://{}", dir.join("crm.db").display()))).await.unwrap();
        let Pools::Sqlite { write, .. } = &store.pools else { unreachable!("a SQLite URL") };
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous").fetch_one(write).await.unwrap();
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(write).await.unwrap();
        store.close().await;
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!((synchronous, journal.as_str()), (2, "wal"), "synchronous = FULL in WAL mode");
    }

    #[test]
    fn passwords_never_show_in_debug() {
        let config = StoreConfig::from_url("postgres://crm:s3cret@db.internal:5432/crm");
        let printed = format!("{config:?}");
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(printed.contains("postgres://crm:***@db.internal:5432/crm"), "{printed}");
    }

    #[test]
    fn sqlite_times_sort_as_text() {
        let a = DateTime::parse_from_rfc3339("2026-01-01T00:00:00.5Z").unwrap().with_timezone(&Utc);
        let b = DateTime::parse_from_rfc3339("2026-01-01T00:00:00.123456Z").unwrap().with_timezone(&Utc);
        assert!(sqlite_time(&b) < sqlite_time(&a));
        assert_eq!(parse_sqlite_time(&sqlite_time(&a)).unwrap(), a);
    }

    #[test]
    fn placeholders_are_numbered() {
        let mut sql = Sql::new("SELECT 1 WHERE a = ");
        sql.bind(Value::Int(Some(1))).push(" AND b = ").bind(Value::Bool(true));
        assert_eq!(sql.text(), "SELECT 1 WHERE a = $1 AND b = $2");
    }

    /// For SQLite, only the placeholders become `?`: a `$` in a literal (a JSON path) stays.
    #[test]
    fn sqlite_placeholders_are_anonymous() {
        let mut sql = Sql::new("SELECT json_extract(d, '$.a[1]') FROM t WHERE a IN (");
        sql.bind_list((0..12).map(|i| Value::Int(Some(i)))).push(" AND b = '$1'");
        let anonymous = sql.anonymous_text();
        assert_eq!(anonymous, format!("SELECT json_extract(d, '$.a[1]') FROM t WHERE a IN ({}) AND b = '$1'", ["?"; 12].join(", ")));
        assert_eq!(Sql::new("SELECT 1").anonymous_text(), "SELECT 1");
    }

    /// The search clauses stay answerable from the trigram indexes (see `push_search`).
    #[test]
    fn searches_use_the_trigram_indexes() {
        let mut sql = Sql::new("");
        Backend::Sqlite.push_search(&mut sql, "t", "a\"b%");
        Backend::Sqlite.push_search(&mut sql, "t", "%");
        assert_eq!(
            sql.text(),
            " AND t.rowid IN (SELECT rowid FROM t_fts WHERE t_fts MATCH $1) AND t.rowid IN (SELECT rowid FROM t_fts WHERE search_text LIKE $2 ESCAPE '\\')"
        );
        assert!(matches!(&sql.args[..], [Value::Text(Some(a)), Value::Text(Some(b))] if a == "\"a\"\"b%\"" && b == "%\\%%"));
        assert!(!sql.plan_each_time);

        let mut sql = Sql::new("");
        Backend::Postgres.push_search(&mut sql, "t", "a_b");
        assert_eq!(sql.text(), " AND t.search_text LIKE $1 ESCAPE '\\'");
        assert!(matches!(&sql.args[..], [Value::Text(Some(a))] if a == "%a\\_b%"));
        assert!(sql.plan_each_time, "a cached generic plan cannot use the trigram index");
    }
}
