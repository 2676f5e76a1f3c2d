//! The store's error type. `NotFound`, stale versions and conflicts are their own variants so
//! the API can answer 404, 412 and 409 without looking at database error text.

use crm_domain::Violations;

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No record with that id (or it is deleted and deleted records were not asked for).
    #[error("not found")]
    NotFound,
    /// The caller's version is not the record's current version.
    #[error("the record has changed: it is at version {current}")]
    VersionMismatch {
        /// The record's current version.
        current: i64,
    },
    /// The change clashes with the data: a duplicate unique value, a refused status change,
    /// too little stock.
    #[error("{detail}")]
    Conflict {
        /// The field concerned, as a JSON Pointer, if one is.
        pointer: Option<String>,
        /// What clashes.
        detail: String,
    },
    /// The input refers to something that does not exist (checked inside the transaction).
    #[error(transparent)]
    Invalid(#[from] Violations),
    /// The database failed or is unreachable.
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value could not be read back.
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    /// The configuration is unusable.
    #[error("invalid store configuration: {0}")]
    Config(String),
}

impl StoreError {
    /// A conflict on `pointer`.
    pub fn conflict(pointer: Option<&str>, detail: impl Into<String>) -> Self {
        StoreError::Conflict { pointer: pointer.map(str::to_owned), detail: detail.into() }
    }

    /// Whether the database could not be reached (as opposed to refusing the statement):
    /// waiting and trying again is the cure. Connection loss shows as an I/O or TLS error, an
    /// exhausted or closed pool, a crashed SQLite worker, or a server error of class 08
    /// (connection), a shutdown (57P01, 57P03), too many connections (53300), a serialization
    /// failure or deadlock (40001, 40P01) or SQLite's busy / locked (5, 6). `Protocol` is not
    /// among them: sqlx raises it before sending a statement it cannot encode (more than 65,535
    /// parameters: "too many arguments"), and such a statement fails the same way every time.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Database(
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) | sqlx::Error::WorkerCrashed
            )
        ) || matches!(self, StoreError::Database(sqlx::Error::Database(e)) if e.code().is_some_and(|c| c.starts_with("08") || c == "57P01" || c == "57P03" || c == "53300" || c == "40001" || c == "40P01" || c == "5" || c == "6"))
    }

    /// Whether the database reported a unique constraint violation.
    pub(crate) fn is_unique_violation(&self) -> bool {
        matches!(self, StoreError::Database(sqlx::Error::Database(e)) if e.is_unique_violation())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statement_sqlx_cannot_send_is_not_an_unavailable_database() {
        let too_many = StoreError::Database(sqlx::Error::Protocol("PgConnection::run(): too many arguments for query: 70001".into()));
        assert!(!too_many.is_unavailable());
        let lost = StoreError::Database(sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset)));
        assert!(lost.is_unavailable());
        assert!(StoreError::Database(sqlx::Error::PoolTimedOut).is_unavailable());
    }
}
