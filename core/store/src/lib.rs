//! Persistence for crm-hub: one [`Store`] over two backends, SQLite (the embedded default, one
//! file in WAL mode) and PostgreSQL (production), chosen by the database URL.
//!
//! Every record lives in a table of the same shape (id, version, timestamps, soft deletion, a
//! folded search text, the validated data as JSON) plus the columns its filters and sorts need.
//! SQL is written once with `$N` placeholders, which both sqlx drivers accept; what differs
//! between the backends (search index, row locks, how values are encoded) is in `db`.
//! Migrations live in `migrations/sqlite` and `migrations/postgres` at the repository root and
//! run at start-up.
//!
//! ```no_run
//! # async fn demo() -> Result<(), crm_store::StoreError> {
//! use crm_store::{Store, StoreConfig};
//! let store = Store::connect(&StoreConfig::sqlite_file("./data/crm.db")).await?;
//! store.migrate().await?;
//! # Ok(()) }
//! ```

mod audit;
mod auth;
mod comms;
mod db;
mod error;
mod outbox;
mod query;
mod resources;

pub use audit::{Actor, ActorKind, AuditEntry, AuditQuery};
pub use auth::{ApiKeyFilter, RefreshOutcome, UserFilter};
pub use comms::{
    Assigned, Created, DeliveryRecorded, EXT_KEY_MAX_ID_BYTES, FileStored, HELD_REPORTS_KEPT, IdempotencyKey, InboundEntry, Logged, ext_key,
};
pub use db::{Backend, Store, StoreConfig, redact_url};
pub use error::StoreError;
pub use outbox::{ConnectorInstance, DeadLetter, DeadLetterLease, OutboxFailure, OutboxMessage, OutboxRetry};
pub use query::{
    CommsFilter, Condition, CustomerFilter, DEFAULT_LIMIT, ListFilter, ListQuery, MAX_LIMIT, MediaFilter, OrderFilter, Page, ProductFilter,
    SortDirection,
};
pub use resources::Resource;
pub use sqlx::Error as SqlxError;

/// Result alias for store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
