//! Listing: filters, search terms, sorting and cursor pagination, shared by every resource.
//!
//! Pages are keyset-paginated on `(sort column, id)`, so a page costs the same however deep it
//! is and rows inserted meanwhile never shift the pages that follow. The cursor is opaque to
//! clients (base64url JSON) and remembers the listing it belongs to: its sort, and a digest of
//! its query (resource, filters, search, the caller's view), so that it cannot continue another.

use crate::db::{Sql, Value};
use crate::{Result, StoreError};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use crm_domain::Violations;
use crm_domain::comms::{CommsType, Direction, MediaStatus, Triage};
use crm_domain::customer::CustomerStatus;
use crm_domain::order::{OrderStatus, PaymentStatus};
use crm_domain::product::ProductCategory;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Smallest and largest page sizes, and the default.
pub const DEFAULT_LIMIT: u32 = 20;
/// The largest page a client may ask for.
pub const MAX_LIMIT: u32 = 200;

/// Ascending or descending.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SortDirection {
    /// Smallest first.
    Asc,
    /// Largest first.
    #[default]
    Desc,
}

/// One page of a listing.
#[derive(Debug, Clone, Serialize)]
pub struct Page<T> {
    /// The records.
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct ListQuery<F> {
    /// Resource-specific filters.
    pub filter: F,
    /// Folded search terms; every one must occur in the record's search text.
    pub terms: Vec<String>,
    /// Created at or after.
    pub created_from: Option<DateTime<Utc>>,
    /// Created before.
    pub created_to: Option<DateTime<Utc>>,
    /// Include soft-deleted records.
    pub include_deleted: bool,
    /// A sort key the resource offers; `created_at` when absent.
    pub sort: Option<String>,
    /// Sort direction; descending when absent.
    pub direction: SortDirection,
    /// Cursor from the previous page.
    pub cursor: Option<String>,
    /// Page size, 1 to [`MAX_LIMIT`]; [`DEFAULT_LIMIT`] when absent.
    pub limit: Option<u32>,
}

/// Filters on customers.
#[derive(Debug, Clone, Default)]
pub struct CustomerFilter {
    /// Has this tag (compared in lower case).
    pub tag: Option<String>,
    /// In this status.
    pub status: Option<CustomerStatus>,
    /// Assigned to this user.
    pub assigned_to: Option<Uuid>,
}

/// Filters on products.
#[derive(Debug, Clone, Default)]
pub struct ProductFilter {
    /// In this category.
    pub category: Option<ProductCategory>,
    /// On sale or not.
    pub active: Option<bool>,
}

/// Filters on orders.
#[derive(Debug, Clone, Default)]
pub struct OrderFilter {
    /// For this customer.
    pub customer_id: Option<Uuid>,
    /// In this status.
    pub status: Option<OrderStatus>,
    /// In this payment status.
    pub payment_status: Option<PaymentStatus>,
    /// Assigned to this user.
    pub assigned_to: Option<Uuid>,
}

/// One condition of a listing, made by the store's filter types (opaque to other crates).
#[derive(Debug)]
pub struct Condition(Cond);

#[derive(Debug)]
enum Cond {
    /// `column = value`.
    Eq(&'static str, Value),
    /// `column <op> value` for `>=` and `<`.
    Cmp(&'static str, &'static str, Value),
    /// The customer has this tag.
    CustomerTag(String),
    /// The record's customer is assigned to this user.
    CustomerAssignedTo(Uuid),
    /// The record's customer is assigned to this user, or it has no customer and its order's
    /// customer is (the rule reading one record by id applies too).
    CustomerOrOrderAssignedTo(Uuid),
}

impl Condition {
    /// `column = value`.
    pub(crate) fn eq(column: &'static str, value: Value) -> Condition {
        Condition(Cond::Eq(column, value))
    }

    /// Appends ` AND <condition>`.
    pub(crate) fn push(self, sql: &mut Sql) {
        match self.0 {
            Cond::Eq(column, value) => sql.push(&format!(" AND {column} = ")).bind(value),
            Cond::Cmp(column, op, value) => sql.push(&format!(" AND {column} {op} ")).bind(value),
            Cond::CustomerTag(tag) => sql
                .push(" AND id IN (SELECT customer_id FROM customer_keys WHERE kind = 'tag' AND key = ")
                .bind(Value::Text(Some(tag)))
                .push(")"),
            Cond::CustomerAssignedTo(user) => {
                sql.push(" AND customer_id IN (SELECT id FROM customers WHERE assigned_to = ").bind(Value::Uuid(Some(user))).push(")")
            }
            Cond::CustomerOrOrderAssignedTo(user) => sql
                .push(" AND (customer_id IN (SELECT id FROM customers WHERE assigned_to = ")
                .bind(Value::Uuid(Some(user)))
                .push(") OR (customer_id IS NULL AND order_id IN (SELECT o.id FROM orders o JOIN customers c ON c.id = o.customer_id WHERE c.assigned_to = ")
                .bind(Value::Uuid(Some(user)))
                .push(")))"),
        };
    }
}

/// A resource's list filters, as conditions.
pub trait ListFilter {
    /// The conditions every listed record must meet.
    fn conditions(&self) -> Vec<Condition>;
}

fn eq(column: &'static str, value: Option<Value>) -> Option<Condition> {
    value.map(|v| Condition(Cond::Eq(column, v)))
}

fn text(value: &str) -> Value {
    Value::Text(Some(value.to_owned()))
}

impl ListFilter for CustomerFilter {
    fn conditions(&self) -> Vec<Condition> {
        let tag = self.tag.as_ref().map(|t| Condition(Cond::CustomerTag(t.trim().to_lowercase())));
        [tag, eq("status", self.status.map(|s| text(s.as_str()))), eq("assigned_to", self.assigned_to.map(|u| Value::Uuid(Some(u))))]
            .into_iter()
            .flatten()
            .collect()
    }
}

impl ListFilter for ProductFilter {
    fn conditions(&self) -> Vec<Condition> {
        [eq("category", self.category.map(|c| text(c.as_str()))), eq("active", self.active.map(Value::Bool))]
            .into_iter()
            .flatten()
            .collect()
    }
}

impl ListFilter for OrderFilter {
    fn conditions(&self) -> Vec<Condition> {
        [
            eq("customer_id", self.customer_id.map(|u| Value::Uuid(Some(u)))),
            eq("status", self.status.map(|s| text(s.as_str()))),
            eq("payment_status", self.payment_status.map(|s| text(&serde_plain(&s)))),
            eq("assigned_to", self.assigned_to.map(|u| Value::Uuid(Some(u)))),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// Filters on the communications log.
#[derive(Debug, Clone, Default)]
pub struct CommsFilter {
    /// About this customer.
    pub customer_id: Option<Uuid>,
    /// Of this type.
    pub kind: Option<CommsType>,
    /// In this direction.
    pub direction: Option<Direction>,
    /// Happened at or after.
    pub occurred_from: Option<DateTime<Utc>>,
    /// Happened before.
    pub occurred_to: Option<DateTime<Utc>>,
    /// In this triage state (the unmatched inbox is `triage = unmatched`).
    pub triage: Option<Triage>,
    /// In this conversation.
    pub thread_id: Option<Uuid>,
    /// Only entries whose customer is assigned to this user (an agent's view).
    pub customer_assigned_to: Option<Uuid>,
}

impl ListFilter for CommsFilter {
    fn conditions(&self) -> Vec<Condition> {
        let time = |op, t: Option<DateTime<Utc>>| t.map(|t| Condition(Cond::Cmp("occurred_at", op, Value::Time(Some(t)))));
        [
            eq("customer_id", self.customer_id.map(|u| Value::Uuid(Some(u)))),
            eq("kind", self.kind.map(|k| text(k.as_str()))),
            eq("direction", self.direction.map(|d| text(d.as_str()))),
            time(">=", self.occurred_from),
            time("<", self.occurred_to),
            eq("triage", self.triage.map(|t| text(t.as_str()))),
            eq("thread_id", self.thread_id.map(|u| Value::Uuid(Some(u)))),
            self.customer_assigned_to.map(|u| Condition(Cond::CustomerAssignedTo(u))),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// Filters on the media index.
#[derive(Debug, Clone, Default)]
pub struct MediaFilter {
    /// Of this customer.
    pub customer_id: Option<Uuid>,
    /// Of this order.
    pub order_id: Option<Uuid>,
    /// Only files whose customer, or whose order's customer, is assigned to this user (an
    /// agent's view).
    pub customer_assigned_to: Option<Uuid>,
    /// With its bytes in this state.
    pub status: Option<MediaStatus>,
}

impl ListFilter for MediaFilter {
    fn conditions(&self) -> Vec<Condition> {
        [
            eq("customer_id", self.customer_id.map(|u| Value::Uuid(Some(u)))),
            eq("order_id", self.order_id.map(|u| Value::Uuid(Some(u)))),
            self.customer_assigned_to.map(|u| Condition(Cond::CustomerOrOrderAssignedTo(u))),
            eq("status", self.status.map(|s| text(s.as_str()))),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// The wire name of a unit enum (`"in_production"`).
pub(crate) fn serde_plain<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// A column a listing may be sorted by.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SortKey {
    /// The name clients use.
    pub(crate) name: &'static str,
    /// The column.
    pub(crate) column: &'static str,
    /// How its values are read and bound.
    pub(crate) kind: SortKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SortKind {
    Text,
    Int,
    Time,
}

/// Where the previous page ended.
#[derive(Debug, Serialize, Deserialize)]
struct Cursor {
    /// Sort name and direction it belongs to.
    s: String,
    d: SortDirection,
    /// The digest of the listing's query ([`Sql::digest`]).
    q: String,
    /// The last row's sort value and id.
    v: serde_json::Value,
    id: Uuid,
}

fn invalid(parameter: &str, detail: impl Into<String>) -> StoreError {
    StoreError::Invalid(Violations::one(format!("/{parameter}"), detail))
}

impl SortKey {
    pub(crate) fn find(keys: &'static [SortKey], name: Option<&str>) -> Result<SortKey> {
        let name = name.unwrap_or("created_at");
        keys.iter().copied().find(|k| k.name == name).ok_or_else(|| {
            invalid(
                "sort",
                format!("cannot sort by `{name}`; choose one of {}", keys.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")),
            )
        })
    }

    fn value_from_json(&self, v: &serde_json::Value) -> Option<Value> {
        match self.kind {
            SortKind::Text => v.as_str().map(|s| Value::Text(Some(s.to_owned()))),
            SortKind::Int => v.as_i64().map(|i| Value::Int(Some(i))),
            SortKind::Time => {
                v.as_str().and_then(|s| DateTime::parse_from_rfc3339(s).ok()).map(|t| Value::Time(Some(t.with_timezone(&Utc))))
            }
        }
    }
}

/// Appends the keyset condition for `cursor` (if any), the order and the limit to the listing's
/// query `sql`. Returns the listing's digest, for [`next_cursor`].
pub(crate) fn push_page(sql: &mut Sql, key: SortKey, direction: SortDirection, cursor: Option<&str>, limit: u32) -> Result<String> {
    let (op, dir) = match direction {
        SortDirection::Asc => (">", "ASC"),
        SortDirection::Desc => ("<", "DESC"),
    };
    let listing = sql.digest();
    if let Some(cursor) = cursor {
        let bad = || invalid("cursor", "is not a cursor from this listing");
        let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
        let cursor: Cursor = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        if cursor.s != key.name || cursor.d != direction {
            return Err(invalid("cursor", format!("belongs to a listing sorted by {} {:?}; start again without it", cursor.s, cursor.d)));
        }
        if cursor.q != listing {
            return Err(invalid("cursor", "belongs to another listing (other filters or search); start again without it"));
        }
        let value = key.value_from_json(&cursor.v).ok_or_else(bad)?;
        sql.push(&format!(" AND ({col}, id) {op} (", col = key.column)).bind(value).push(", ").bind(Value::Uuid(Some(cursor.id))).push(")");
    }
    sql.push(&format!(" ORDER BY {col} {dir}, id {dir} LIMIT {limit}", col = key.column, limit = limit + 1));
    Ok(listing)
}

/// The cursor that continues the listing with digest `listing` after a row with this sort value
/// and id.
pub(crate) fn next_cursor(key: SortKey, direction: SortDirection, listing: String, value: serde_json::Value, id: Uuid) -> String {
    let cursor = Cursor { s: key.name.to_owned(), d: direction, q: listing, v: value, id };
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&cursor).unwrap_or_default())
}

/// Checks a requested page size.
pub(crate) fn page_size(limit: Option<u32>) -> Result<u32> {
    match limit.unwrap_or(DEFAULT_LIMIT) {
        n @ 1..=MAX_LIMIT => Ok(n),
        n => Err(invalid("limit", format!("{n} is out of range: a page holds 1 to {MAX_LIMIT} records"))),
    }
}
