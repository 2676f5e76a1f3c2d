//! The audit trail: who did what to which record, with a field-level diff, written inside the
//! transaction of the change itself (so a failed change leaves no record, and a change never
//! goes unrecorded), and read back with filters.

use crate::db::{Row, Sql, Tx, Value};
use crate::query::{SortDirection, SortKey, SortKind, next_cursor, page_size, push_page};
use crate::resources::{now, sort};
use crate::{Page, Result, Store, StoreError};
use chrono::{DateTime, Utc};
use crm_domain::audit::{FieldChange, diff};
use serde::Serialize;
use uuid::Uuid;

/// Who is acting: stamped on every audit record a store handle writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actor {
    /// What kind of principal.
    pub kind: ActorKind,
    /// The user or API key id.
    pub id: Option<Uuid>,
    /// The request that caused the change.
    pub request_id: Option<String>,
}

/// Kinds of principal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// The server itself, the command line, migrations.
    #[default]
    System,
    /// A console user.
    User,
    /// A service credential.
    ApiKey,
}

impl Actor {
    /// `user:<id>`, `api_key:<id>` or `system`: who, across requests.
    pub(crate) fn label(&self) -> String {
        match self.id {
            Some(id) => format!("{}:{id}", self.kind.as_str()),
            None => self.kind.as_str().to_owned(),
        }
    }
}

impl ActorKind {
    fn as_str(self) -> &'static str {
        match self {
            ActorKind::System => "system",
            ActorKind::User => "user",
            ActorKind::ApiKey => "api_key",
        }
    }

    fn parse(text: &str) -> ActorKind {
        match text {
            "user" => ActorKind::User,
            "api_key" => ActorKind::ApiKey,
            _ => ActorKind::System,
        }
    }
}

/// One audit record.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// Identifier.
    pub id: Uuid,
    /// When.
    pub at: DateTime<Utc>,
    /// Kind of actor.
    pub actor_kind: ActorKind,
    /// The user or API key.
    pub actor_id: Option<Uuid>,
    /// `create`, `update`, `delete`, `restore`, `login`, `login_failed`, `logout`,
    /// `password_reset`.
    pub action: String,
    /// The kind of record (`customers`, `users`, `api_keys`, ...).
    pub resource: String,
    /// The record.
    pub resource_id: Option<Uuid>,
    /// Fields that changed.
    pub changes: Vec<FieldChange>,
    /// The request that made the change.
    pub request_id: Option<String>,
}

/// Filters on the audit trail.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Done by this user or key.
    pub actor_id: Option<Uuid>,
    /// On this kind of record.
    pub resource: Option<String>,
    /// On this record.
    pub resource_id: Option<Uuid>,
    /// At or after.
    pub from: Option<DateTime<Utc>>,
    /// Before.
    pub to: Option<DateTime<Utc>>,
    /// Cursor from the previous page.
    pub cursor: Option<String>,
    /// Page size.
    pub limit: Option<u32>,
}

const AUDIT_SORT: SortKey = sort("at", "at", SortKind::Time);

/// Writes one audit record.
pub(crate) async fn write(
    tx: &mut Tx,
    actor: &Actor,
    action: &str,
    resource: &str,
    resource_id: Option<Uuid>,
    changes: &[FieldChange],
) -> Result<()> {
    let changes = serde_json::value::to_raw_value(changes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let mut sql =
        Sql::new("INSERT INTO audit_log (id, at, actor_kind, actor_id, action, resource, resource_id, changes, request_id) VALUES (");
    sql.bind(Value::Uuid(Some(Uuid::now_v7()))).push(", ").bind(Value::Time(Some(now()))).push(", ");
    sql.bind(Value::Text(Some(actor.kind.as_str().into()))).push(", ").bind(Value::Uuid(actor.id)).push(", ");
    sql.bind(Value::Text(Some(action.into()))).push(", ").bind(Value::Text(Some(resource.into()))).push(", ");
    sql.bind(Value::Uuid(resource_id))
        .push(", ")
        .bind(Value::Json(changes))
        .push(", ")
        .bind(Value::Text(actor.request_id.clone()))
        .push(")");
    tx.execute(&sql).await?;
    Ok(())
}

/// Records a create or update with the field diff between the two versions.
pub(crate) async fn record_change<T: Serialize>(
    tx: &mut Tx,
    actor: &Actor,
    action: &str,
    resource: &str,
    id: Uuid,
    before: Option<&T>,
    after: Option<&T>,
) -> Result<()> {
    let to_json = |v: Option<&T>| v.map_or(Ok(serde_json::json!({})), serde_json::to_value).map_err(|e| StoreError::Corrupt(e.to_string()));
    let changes = diff(&to_json(before)?, &to_json(after)?);
    write(tx, actor, action, resource, Some(id), &changes).await
}

/// Records a soft delete or restore.
pub(crate) async fn record_deletion(
    tx: &mut Tx,
    actor: &Actor,
    action: &str,
    resource: &str,
    id: Uuid,
    before: Option<DateTime<Utc>>,
    after: Option<DateTime<Utc>>,
) -> Result<()> {
    let change = FieldChange { pointer: "/deleted_at".into(), before: serde_json::json!(before), after: serde_json::json!(after) };
    write(tx, actor, action, resource, Some(id), &[change]).await
}

fn decode(row: &Row) -> Result<AuditEntry> {
    let changes = row.get::<String>("changes")?;
    Ok(AuditEntry {
        id: row.uuid("id")?,
        at: row.time("at")?.ok_or_else(|| StoreError::Corrupt("audit at is null".into()))?,
        actor_kind: ActorKind::parse(&row.get::<String>("actor_kind")?),
        actor_id: row.optional_uuid("actor_id")?,
        action: row.get::<String>("action")?,
        resource: row.get::<String>("resource")?,
        resource_id: row.optional_uuid("resource_id")?,
        changes: serde_json::from_str(&changes).map_err(|e| StoreError::Corrupt(format!("audit changes: {e}")))?,
        request_id: row.get::<Option<String>>("request_id")?,
    })
}

impl Store {
    /// Reads the audit trail, newest first.
    pub async fn audit_trail(&self, query: &AuditQuery) -> Result<Page<AuditEntry>> {
        let limit = page_size(query.limit)?;
        let changes = match self.backend() {
            crate::Backend::Sqlite => "changes",
            crate::Backend::Postgres => "changes::text AS changes",
        };
        let mut sql = Sql::new(format!(
            "SELECT id, at, actor_kind, actor_id, action, resource, resource_id, {changes}, request_id, at AS sort_key FROM audit_log WHERE 1 = 1"
        ));
        if let Some(actor) = query.actor_id {
            sql.push(" AND actor_id = ").bind(Value::Uuid(Some(actor)));
        }
        if let Some(resource) = &query.resource {
            sql.push(" AND resource = ").bind(Value::Text(Some(resource.clone())));
        }
        if let Some(id) = query.resource_id {
            sql.push(" AND resource_id = ").bind(Value::Uuid(Some(id)));
        }
        if let Some(from) = query.from {
            sql.push(" AND at >= ").bind(Value::Time(Some(from)));
        }
        if let Some(to) = query.to {
            sql.push(" AND at < ").bind(Value::Time(Some(to)));
        }
        let listing = push_page(&mut sql, AUDIT_SORT, SortDirection::Desc, query.cursor.as_deref(), limit)?;
        let rows = self.fetch_all(&sql).await?;
        let more = rows.len() > limit as usize;
        let items: Vec<AuditEntry> = rows.iter().take(limit as usize).map(decode).collect::<Result<_>>()?;
        let next = match items.last() {
            Some(last) if more => Some(next_cursor(
                AUDIT_SORT,
                SortDirection::Desc,
                listing,
                serde_json::json!(last.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
                last.id,
            )),
            _ => None,
        };
        Ok(Page { items, next_cursor: next })
    }
}
