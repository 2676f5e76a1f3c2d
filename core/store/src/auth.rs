//! What authentication needs from the database: users with their password hashes, refresh
//! token families, service credentials, and the server's own secrets. Hashing itself happens
//! in the API; only hashes are stored here.

use crate::audit::{self, Actor};
use crate::db::{Dialect, Sql, Tx, Value};
use crate::query::{Condition, ListFilter, SortKey, SortKind};
use crate::resources::{Resource, Table, decode, insert, load_locked, now, overwrite, sort};
use crate::{Result, Store, StoreError};
use chrono::{DateTime, Utc};
use crm_domain::access::Role;
use crm_domain::user::{ApiKey, User};
use crm_domain::{Record, fold_for_search};
use std::future::Future;
use uuid::Uuid;

/// Filters on users.
#[derive(Debug, Clone, Default)]
pub struct UserFilter {
    /// With this role.
    pub role: Option<Role>,
    /// Active or disabled.
    pub active: Option<bool>,
}

impl ListFilter for UserFilter {
    fn conditions(&self) -> Vec<Condition> {
        [
            self.role.map(|r| Condition::eq("role", Value::Text(Some(r.as_str().into())))),
            self.active.map(|a| Condition::eq("active", Value::Bool(a))),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

impl Resource for User {
    type Filter = UserFilter;
}

impl Table for User {
    const TABLE: &'static str = "users";
    const SORTS: &'static [SortKey] = &[
        sort("created_at", "created_at", SortKind::Time),
        sort("updated_at", "updated_at", SortKind::Time),
        sort("email", "email_key", SortKind::Text),
    ];

    fn columns(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("email_key", Value::Text(Some(self.email_key()))),
            ("role", Value::Text(Some(self.role.as_str().into()))),
            ("active", Value::Bool(self.active)),
        ]
    }

    fn search_text(&self) -> String {
        fold_for_search(&format!("{} {}", self.display_name, self.email))
    }

    fn unique_conflict(&self) -> StoreError {
        StoreError::conflict(Some("/email"), format!("a user with e-mail {} already exists", self.email))
    }

    /// A disabled user's sessions end at once.
    fn after_write(tx: &mut Tx, id: Uuid, data: &Self) -> impl Future<Output = Result<()>> + Send {
        let active = data.active;
        async move { if active { Ok(()) } else { revoke_sessions(tx, id).await } }
    }

    fn after_delete(tx: &mut Tx, id: Uuid) -> impl Future<Output = Result<()>> + Send {
        revoke_sessions(tx, id)
    }
}

/// Filters on service credentials (none yet).
#[derive(Debug, Clone, Default)]
pub struct ApiKeyFilter;

impl ListFilter for ApiKeyFilter {
    fn conditions(&self) -> Vec<Condition> {
        Vec::new()
    }
}

impl Resource for ApiKey {
    type Filter = ApiKeyFilter;
}

impl Table for ApiKey {
    const TABLE: &'static str = "api_keys";
    const SORTS: &'static [SortKey] = &[sort("created_at", "created_at", SortKind::Time), sort("name", "name_key", SortKind::Text)];

    fn columns(&self) -> Vec<(&'static str, Value)> {
        vec![("name_key", Value::Text(Some(fold_for_search(&self.name))))]
    }

    fn search_text(&self) -> String {
        fold_for_search(&format!("{} {}", self.name, self.prefix))
    }
}

async fn revoke_sessions(tx: &mut Tx, user_id: Uuid) -> Result<()> {
    let mut sql = Sql::new("UPDATE refresh_tokens SET revoked_at = ");
    sql.bind(Value::Time(Some(now()))).push(" WHERE revoked_at IS NULL AND user_id = ").bind(Value::Uuid(Some(user_id)));
    tx.execute(&sql).await?;
    Ok(())
}

async fn set_secret_column(tx: &mut Tx, table: &str, column: &str, id: Uuid, value: Option<String>) -> Result<()> {
    let mut sql = Sql::new(format!("UPDATE {table} SET {column} = "));
    sql.bind(Value::Text(value)).push(" WHERE id = ").bind(Value::Uuid(Some(id)));
    tx.execute(&sql).await?;
    Ok(())
}

/// What presenting a refresh token led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// The token was current: it is now used, and the next one (given by the caller) issued.
    Rotated {
        /// Whose session it is.
        user_id: Uuid,
        /// The session family.
        family_id: Uuid,
    },
    /// The token had already been used: someone replayed it, so the whole family is revoked.
    Reused,
    /// Unknown, expired or revoked.
    Invalid,
}

impl Store {
    /// Creates a user with an optional password hash, in one transaction with its audit record.
    pub async fn create_user(&self, user: User, password_hash: Option<String>) -> Result<Record<User>> {
        let mut tx = self.begin().await?;
        let record = insert(&mut tx, user, now()).await?;
        let has_password = password_hash.is_some();
        set_secret_column(&mut tx, "users", "password_hash", record.id, password_hash).await?;
        audit::record_change(&mut tx, &self.actor, "create", "users", record.id, None, Some(&record.data)).await?;
        if has_password {
            audit::write(&mut tx, &self.actor, "password_reset", "users", Some(record.id), &[]).await?;
        }
        tx.commit().await?;
        Ok(record)
    }

    /// A live user by e-mail with their password hash, for signing in.
    pub async fn user_credentials(&self, email: &str) -> Result<Option<(Record<User>, Option<String>)>> {
        let backend = self.backend();
        let mut sql =
            Sql::new(format!("SELECT {}, password_hash FROM users WHERE deleted_at IS NULL AND email_key = ", backend.record_columns()));
        sql.bind(Value::Text(Some(email.trim().to_lowercase())));
        let rows = self.fetch_all(&sql).await?;
        match rows.first() {
            None => Ok(None),
            Some(row) => Ok(Some((decode(row)?, row.get::<Option<String>>("password_hash")?))),
        }
    }

    /// How many users exist (deleted ones included).
    pub async fn count_users(&self) -> Result<i64> {
        let rows = self.fetch_all(&Sql::new("SELECT COUNT(*) AS n FROM users")).await?;
        rows.first().map_or(Ok(0), |r| r.get::<i64>("n"))
    }

    /// Sets a user's password hash and ends their sessions.
    pub async fn set_password(&self, user_id: Uuid, password_hash: String) -> Result<()> {
        let mut tx = self.begin().await?;
        load_locked::<User>(&mut tx, user_id, Some(false)).await?;
        set_secret_column(&mut tx, "users", "password_hash", user_id, Some(password_hash)).await?;
        revoke_sessions(&mut tx, user_id).await?;
        audit::write(&mut tx, &self.actor, "password_reset", "users", Some(user_id), &[]).await?;
        tx.commit().await
    }

    /// Records a sign-in attempt in the audit trail (`login` or `login_failed`).
    pub async fn record_sign_in(&self, action: &str, user_id: Option<Uuid>) -> Result<()> {
        let mut tx = self.begin().await?;
        audit::write(&mut tx, &self.actor, action, "users", user_id, &[]).await?;
        tx.commit().await
    }

    /// Stores a new refresh token of `family_id`.
    pub async fn insert_refresh_token(&self, user_id: Uuid, family_id: Uuid, token_hash: &str, expires_at: DateTime<Utc>) -> Result<()> {
        let mut tx = self.begin().await?;
        insert_token(&mut tx, user_id, family_id, token_hash, expires_at).await?;
        tx.commit().await
    }

    /// Uses a refresh token: if it is current, marks it used and stores `next_hash` as the next
    /// token of its family; if it was used before, revokes the whole family.
    pub async fn rotate_refresh_token(&self, token_hash: &str, next_hash: &str, next_expires_at: DateTime<Utc>) -> Result<RefreshOutcome> {
        let now = now();
        let mut tx = self.begin().await?;
        let mut sql = Sql::new("SELECT family_id, user_id, expires_at, used_at, revoked_at FROM refresh_tokens WHERE token_hash = ");
        sql.bind(Value::Text(Some(token_hash.into()))).push(tx.backend().lock_rows());
        let Some(row) = tx.fetch_optional(&sql).await? else { return Ok(RefreshOutcome::Invalid) };
        let (family_id, user_id) = (row.uuid("family_id")?, row.uuid("user_id")?);
        if row.time("revoked_at")?.is_some() || row.time("expires_at")?.is_some_and(|t| t <= now) {
            return Ok(RefreshOutcome::Invalid);
        }
        if row.time("used_at")?.is_some() {
            revoke_family(&mut tx, family_id).await?;
            audit::write(&mut tx, &Actor::default(), "refresh_reuse", "users", Some(user_id), &[]).await?;
            tx.commit().await?;
            return Ok(RefreshOutcome::Reused);
        }
        let mut used = Sql::new("UPDATE refresh_tokens SET used_at = ");
        used.bind(Value::Time(Some(now))).push(" WHERE token_hash = ").bind(Value::Text(Some(token_hash.into())));
        tx.execute(&used).await?;
        insert_token(&mut tx, user_id, family_id, next_hash, next_expires_at).await?;
        tx.commit().await?;
        Ok(RefreshOutcome::Rotated { user_id, family_id })
    }

    /// Whether a session family still has an unrevoked token (so its access tokens are good).
    pub async fn session_active(&self, family_id: Uuid) -> Result<bool> {
        let mut sql = Sql::new("SELECT 1 AS n FROM refresh_tokens WHERE revoked_at IS NULL AND family_id = ");
        sql.bind(Value::Uuid(Some(family_id))).push(" LIMIT 1");
        Ok(!self.fetch_all(&sql).await?.is_empty())
    }

    /// Ends the session a refresh token belongs to. Returns its user, if the token was known.
    pub async fn revoke_refresh_family(&self, token_hash: &str) -> Result<Option<Uuid>> {
        let mut tx = self.begin().await?;
        let mut sql = Sql::new("SELECT family_id, user_id FROM refresh_tokens WHERE token_hash = ");
        sql.bind(Value::Text(Some(token_hash.into())));
        let Some(row) = tx.fetch_optional(&sql).await? else { return Ok(None) };
        let user_id = row.uuid("user_id")?;
        revoke_family(&mut tx, row.uuid("family_id")?).await?;
        audit::write(&mut tx, &self.actor, "logout", "users", Some(user_id), &[]).await?;
        tx.commit().await?;
        Ok(Some(user_id))
    }

    /// Creates a service credential whose key hashes to `key_hash`.
    pub async fn create_api_key(&self, key: ApiKey, key_hash: String) -> Result<Record<ApiKey>> {
        let mut tx = self.begin().await?;
        let record = insert(&mut tx, key, now()).await?;
        set_secret_column(&mut tx, "api_keys", "key_hash", record.id, Some(key_hash)).await?;
        audit::record_change(&mut tx, &self.actor, "create", "api_keys", record.id, None, Some(&record.data)).await?;
        tx.commit().await?;
        Ok(record)
    }

    /// The live (not revoked) service credential with this key hash.
    pub async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<Record<ApiKey>>> {
        let mut sql =
            Sql::new(format!("SELECT {} FROM api_keys WHERE deleted_at IS NULL AND key_hash = ", self.backend().record_columns()));
        sql.bind(Value::Text(Some(key_hash.into())));
        self.fetch_all(&sql).await?.first().map(decode).transpose()
    }

    /// Notes that a service credential was used (not audited: it is not a change of anything).
    pub async fn touch_api_key(&self, id: Uuid, at: DateTime<Utc>) -> Result<()> {
        let mut tx = self.begin().await?;
        let current = load_locked::<ApiKey>(&mut tx, id, Some(false)).await?;
        let mut data = current.data.clone();
        data.last_used_at = Some(at);
        overwrite(&mut tx, &current, data, now()).await?;
        tx.commit().await
    }

    /// The secret named `name`, created with `generate` the first time it is asked for.
    pub async fn server_secret(&self, name: &str, generate: impl FnOnce() -> String) -> Result<String> {
        let mut tx = self.begin().await?;
        let mut sql = Sql::new("INSERT INTO server_secrets (name, value) VALUES (");
        sql.bind(Value::Text(Some(name.into()))).push(", ").bind(Value::Text(Some(generate()))).push(") ON CONFLICT (name) DO NOTHING");
        tx.execute(&sql).await?;
        let mut read = Sql::new("SELECT value FROM server_secrets WHERE name = ");
        read.bind(Value::Text(Some(name.into())));
        let row = tx.fetch_optional(&read).await?.ok_or_else(|| StoreError::Corrupt(format!("secret {name} vanished")))?;
        let value = row.get::<String>("value")?;
        tx.commit().await?;
        Ok(value)
    }
}

async fn insert_token(tx: &mut Tx, user_id: Uuid, family_id: Uuid, token_hash: &str, expires_at: DateTime<Utc>) -> Result<()> {
    let mut sql = Sql::new("INSERT INTO refresh_tokens (token_hash, family_id, user_id, created_at, expires_at) VALUES (");
    sql.bind(Value::Text(Some(token_hash.into())))
        .push(", ")
        .bind(Value::Uuid(Some(family_id)))
        .push(", ")
        .bind(Value::Uuid(Some(user_id)));
    sql.push(", ").bind(Value::Time(Some(now()))).push(", ").bind(Value::Time(Some(expires_at))).push(")");
    tx.execute(&sql).await?;
    Ok(())
}

async fn revoke_family(tx: &mut Tx, family_id: Uuid) -> Result<()> {
    let mut sql = Sql::new("UPDATE refresh_tokens SET revoked_at = ");
    sql.bind(Value::Time(Some(now()))).push(" WHERE revoked_at IS NULL AND family_id = ").bind(Value::Uuid(Some(family_id)));
    tx.execute(&sql).await?;
    Ok(())
}
