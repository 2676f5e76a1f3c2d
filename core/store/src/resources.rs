//! The operations every resource shares (create, get, replace, soft delete, restore, list),
//! written once over the [`Resource`] description of each table, and the three resources:
//! customers, products and orders, with the rules that need the database (unique SKUs, order
//! numbers, stock movements) applied inside the same transaction as the change.

use crate::audit;
use crate::db::{Dialect, Row, Sql, Tx, Value};
use crate::query::{ListFilter, ListQuery, Page, SortKey, SortKind, next_cursor, page_size, push_page, serde_plain};
use crate::{CustomerFilter, OrderFilter, ProductFilter, Result, Store, StoreError};
use chrono::{DateTime, Datelike, SubsecRound, Utc};
use crm_domain::customer::Customer;
use crm_domain::order::{Order, OrderStatus, StockEffect, UpdateRefused, order_number};
use crm_domain::product::{Product, Stock};
use crm_domain::{Record, Violations, fold_for_search};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::future::Future;
use uuid::Uuid;

/// A kind of record the store keeps. Implemented here for [`Customer`], [`Product`] and
/// [`Order`]; its workings (`Table`) are private to the store.
#[allow(private_bounds)]
pub trait Resource: Table {
    /// The filters its listing takes.
    type Filter: ListFilter + Default + Send + Sync;
}

/// How a resource maps onto its table, and the hooks its rules need.
pub(crate) trait Table: Serialize + Clone + DeserializeOwned + Send + Sync + Sized + 'static {
    /// Table name.
    const TABLE: &'static str;
    /// Sort keys clients may use.
    const SORTS: &'static [SortKey];

    /// Extra columns written with the record, for filters and sorting.
    fn columns(&self) -> Vec<(&'static str, Value)>;

    /// Folded text for search.
    fn search_text(&self) -> String;

    /// Applies rules that need the database, before `next` is written over `current` (absent on
    /// create).
    fn prepare(
        tx: &mut Tx,
        current: Option<&Record<Self>>,
        next: &mut Self,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<()>> + Send {
        let _ = (tx, current, next, now);
        async { Ok(()) }
    }

    /// Keeps side tables in step after the record was written.
    fn after_write(tx: &mut Tx, id: Uuid, data: &Self) -> impl Future<Output = Result<()>> + Send {
        let _ = (tx, id, data);
        async { Ok(()) }
    }

    /// Cleans up after a soft delete (e.g. ends a disabled user's sessions).
    fn after_delete(tx: &mut Tx, id: Uuid) -> impl Future<Output = Result<()>> + Send {
        let _ = (tx, id);
        async { Ok(()) }
    }

    /// Refuses a soft delete the resource's rules do not allow.
    fn check_delete(current: &Record<Self>) -> Result<()> {
        let _ = current;
        Ok(())
    }

    /// The error for a unique constraint violation on write.
    fn unique_conflict(&self) -> StoreError {
        StoreError::conflict(None, "a unique value is already in use")
    }
}

pub(crate) const fn sort(name: &'static str, column: &'static str, kind: SortKind) -> SortKey {
    SortKey { name, column, kind }
}

pub(crate) fn decode<R: Table>(row: &Row) -> Result<Record<R>> {
    let doc = row.get::<String>("doc")?;
    let data = serde_json::from_str(&doc).map_err(|e| StoreError::Corrupt(format!("{} document: {e}", R::TABLE)))?;
    Ok(Record {
        id: row.uuid("id")?,
        version: row.get::<i64>("version")?,
        created_at: row.time("created_at")?.ok_or_else(|| StoreError::Corrupt("created_at is null".into()))?,
        updated_at: row.time("updated_at")?.ok_or_else(|| StoreError::Corrupt("updated_at is null".into()))?,
        deleted_at: row.time("deleted_at")?,
        data,
    })
}

pub(crate) fn json<T: Serialize>(data: &T) -> Result<Value> {
    serde_json::value::to_raw_value(data).map(Value::Json).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Now, to the microsecond both backends keep.
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Reads a record inside a transaction and locks it until the transaction ends.
pub(crate) async fn load_locked<R: Table>(tx: &mut Tx, id: Uuid, deleted: Option<bool>) -> Result<Record<R>> {
    let backend = tx.backend();
    let mut sql = Sql::new(format!("SELECT {} FROM {} WHERE id = ", backend.record_columns(), R::TABLE));
    sql.bind(Value::Uuid(Some(id)));
    match deleted {
        Some(true) => sql.push(" AND deleted_at IS NOT NULL"),
        Some(false) => sql.push(" AND deleted_at IS NULL"),
        None => &mut sql,
    };
    sql.push(backend.lock_rows());
    let row = tx.fetch_optional(&sql).await?.ok_or(StoreError::NotFound)?;
    decode(&row)
}

pub(crate) fn check_version<R>(current: &Record<R>, expected: Option<i64>) -> Result<()> {
    match expected {
        Some(v) if v != current.version => Err(StoreError::VersionMismatch { current: current.version }),
        _ => Ok(()),
    }
}

/// Writes `data` over the record `current`, bumping its version.
pub(crate) async fn overwrite<R: Table>(tx: &mut Tx, current: &Record<R>, data: R, now: DateTime<Utc>) -> Result<Record<R>> {
    let mut sql = Sql::new(format!("UPDATE {} SET version = ", R::TABLE));
    sql.bind(Value::Int(Some(current.version + 1)));
    sql.push(", updated_at = ").bind(Value::Time(Some(now)));
    sql.push(", search_text = ").bind(Value::Text(Some(data.search_text())));
    sql.push(", doc = ").bind(json(&data)?);
    for (column, value) in data.columns() {
        sql.push(&format!(", {column} = ")).bind(value);
    }
    sql.push(" WHERE id = ").bind(Value::Uuid(Some(current.id)));
    if let Err(err) = tx.execute(&sql).await {
        return Err(if err.is_unique_violation() { data.unique_conflict() } else { err });
    }
    R::after_write(tx, current.id, &data).await?;
    Ok(Record {
        id: current.id,
        version: current.version + 1,
        created_at: current.created_at,
        updated_at: now,
        deleted_at: current.deleted_at,
        data,
    })
}

/// Inserts a new record inside `tx`, applying the resource's rules.
pub(crate) async fn insert<R: Table>(tx: &mut Tx, data: R, now: DateTime<Utc>) -> Result<Record<R>> {
    insert_with_id(tx, Uuid::now_v7(), data, now).await
}

/// Inserts a new record with an id chosen beforehand (so a message about it can be written in
/// the same transaction).
pub(crate) async fn insert_with_id<R: Table>(tx: &mut Tx, id: Uuid, mut data: R, now: DateTime<Utc>) -> Result<Record<R>> {
    R::prepare(tx, None, &mut data, now).await?;
    let columns = data.columns();
    let mut sql = Sql::new(format!(
        "INSERT INTO {} (id, version, created_at, updated_at, search_text, doc{}) VALUES (",
        R::TABLE,
        columns.iter().map(|(c, _)| format!(", {c}")).collect::<String>()
    ));
    sql.bind(Value::Uuid(Some(id))).push(", 1, ").bind(Value::Time(Some(now))).push(", ").bind(Value::Time(Some(now)));
    sql.push(", ").bind(Value::Text(Some(data.search_text()))).push(", ").bind(json(&data)?);
    for (_, value) in columns {
        sql.push(", ").bind(value);
    }
    sql.push(")");
    if let Err(err) = tx.execute(&sql).await {
        return Err(if err.is_unique_violation() { data.unique_conflict() } else { err });
    }
    R::after_write(tx, id, &data).await?;
    Ok(Record { id, version: 1, created_at: now, updated_at: now, deleted_at: None, data })
}

/// Sets or clears `deleted_at`.
async fn set_deleted<R: Table>(
    tx: &mut Tx,
    current: Record<R>,
    deleted_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<Record<R>> {
    let mut sql = Sql::new(format!("UPDATE {} SET version = version + 1, updated_at = ", R::TABLE));
    sql.bind(Value::Time(Some(now))).push(", deleted_at = ").bind(Value::Time(deleted_at));
    sql.push(" WHERE id = ").bind(Value::Uuid(Some(current.id)));
    tx.execute(&sql).await?;
    Ok(Record { version: current.version + 1, updated_at: now, deleted_at, ..current })
}

// `Resource` is sealed: its workings (`Table`) stay private to the store on purpose.
#[allow(private_interfaces, private_bounds)]
impl Store {
    /// Creates a record.
    #[tracing::instrument(skip_all, fields(table = R::TABLE))]
    pub async fn create<R: Resource>(&self, data: R) -> Result<Record<R>> {
        let mut tx = self.begin().await?;
        let record = insert(&mut tx, data, now()).await?;
        audit::record_change(&mut tx, &self.actor, "create", R::TABLE, record.id, None, Some(&record.data)).await?;
        tx.commit().await?;
        Ok(record)
    }

    /// Reads a record; a soft-deleted one only when `include_deleted`.
    #[tracing::instrument(skip_all, fields(table = R::TABLE, %id))]
    pub async fn get<R: Resource>(&self, id: Uuid, include_deleted: bool) -> Result<Record<R>> {
        let mut sql = Sql::new(format!("SELECT {} FROM {} WHERE id = ", self.backend().record_columns(), R::TABLE));
        sql.bind(Value::Uuid(Some(id)));
        if !include_deleted {
            sql.push(" AND deleted_at IS NULL");
        }
        let rows = self.fetch_all(&sql).await?;
        decode(rows.first().ok_or(StoreError::NotFound)?)
    }

    /// Reads the live records among `ids` (missing ones are left out).
    pub async fn get_many<R: Resource>(&self, ids: &[Uuid]) -> Result<Vec<Record<R>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut sql =
            Sql::new(format!("SELECT {} FROM {} WHERE deleted_at IS NULL AND id IN (", self.backend().record_columns(), R::TABLE));
        sql.bind_list(ids.iter().map(|id| Value::Uuid(Some(*id))));
        self.fetch_all(&sql).await?.iter().map(decode).collect()
    }

    /// Replaces a live record's data. With `expected_version`, refuses if the record has moved
    /// on since.
    #[tracing::instrument(skip_all, fields(table = R::TABLE, %id))]
    pub async fn update<R: Resource>(&self, id: Uuid, expected_version: Option<i64>, mut data: R) -> Result<Record<R>> {
        let now = now();
        let mut tx = self.begin().await?;
        let current = load_locked::<R>(&mut tx, id, Some(false)).await?;
        check_version(&current, expected_version)?;
        R::prepare(&mut tx, Some(&current), &mut data, now).await?;
        let record = overwrite(&mut tx, &current, data, now).await?;
        audit::record_change(&mut tx, &self.actor, "update", R::TABLE, id, Some(&current.data), Some(&record.data)).await?;
        tx.commit().await?;
        Ok(record)
    }

    /// Soft-deletes a live record.
    #[tracing::instrument(skip_all, fields(table = R::TABLE, %id))]
    pub async fn delete<R: Resource>(&self, id: Uuid, expected_version: Option<i64>) -> Result<Record<R>> {
        let now = now();
        let mut tx = self.begin().await?;
        let current = load_locked::<R>(&mut tx, id, Some(false)).await?;
        check_version(&current, expected_version)?;
        R::check_delete(&current)?;
        let record = set_deleted(&mut tx, current, Some(now), now).await?;
        audit::record_deletion(&mut tx, &self.actor, "delete", R::TABLE, id, None, record.deleted_at).await?;
        R::after_delete(&mut tx, id).await?;
        tx.commit().await?;
        Ok(record)
    }

    /// Brings back a soft-deleted record; restoring a live one changes nothing.
    #[tracing::instrument(skip_all, fields(table = R::TABLE, %id))]
    pub async fn restore<R: Resource>(&self, id: Uuid, expected_version: Option<i64>) -> Result<Record<R>> {
        let now = now();
        let mut tx = self.begin().await?;
        let current = load_locked::<R>(&mut tx, id, None).await?;
        check_version(&current, expected_version)?;
        if current.deleted_at.is_none() {
            return Ok(current);
        }
        let deleted_at = current.deleted_at;
        let record = set_deleted(&mut tx, current, None, now).await?;
        audit::record_deletion(&mut tx, &self.actor, "restore", R::TABLE, id, deleted_at, None).await?;
        tx.commit().await?;
        Ok(record)
    }

    /// Counts the live records matching `filter`.
    #[tracing::instrument(skip_all, fields(table = R::TABLE))]
    pub async fn count<R: Resource>(&self, filter: &R::Filter) -> Result<i64> {
        let mut sql = Sql::new(format!("SELECT COUNT(*) AS n FROM {} WHERE deleted_at IS NULL", R::TABLE));
        for condition in filter.conditions() {
            condition.push(&mut sql);
        }
        self.fetch_all(&sql).await?.first().map_or(Ok(0), |row| row.get::<i64>("n"))
    }

    /// Lists records matching `query`, one page at a time.
    #[tracing::instrument(skip_all, fields(table = R::TABLE))]
    pub async fn list<R: Resource>(&self, query: &ListQuery<R::Filter>) -> Result<Page<Record<R>>> {
        let key = SortKey::find(R::SORTS, query.sort.as_deref())?;
        let limit = page_size(query.limit)?;
        let backend = self.backend();
        let mut sql = Sql::new(format!("SELECT {}, {} AS sort_key FROM {} WHERE 1 = 1", backend.record_columns(), key.column, R::TABLE));
        if !query.include_deleted {
            sql.push(" AND deleted_at IS NULL");
        }
        if let Some(from) = query.created_from {
            sql.push(" AND created_at >= ").bind(Value::Time(Some(from)));
        }
        if let Some(to) = query.created_to {
            sql.push(" AND created_at < ").bind(Value::Time(Some(to)));
        }
        for term in &query.terms {
            backend.push_search(&mut sql, R::TABLE, term);
        }
        for condition in query.filter.conditions() {
            condition.push(&mut sql);
        }
        let listing = push_page(&mut sql, key, query.direction, query.cursor.as_deref(), limit)?;
        let rows = self.fetch_all(&sql).await?;
        let more = rows.len() > limit as usize;
        let mut items = Vec::with_capacity(limit as usize);
        let mut next = None;
        for (i, row) in rows.iter().take(limit as usize).enumerate() {
            let record = decode::<R>(row)?;
            if more && i + 1 == limit as usize {
                let value = match key.kind {
                    SortKind::Text => serde_json::Value::from(row.get::<String>("sort_key")?),
                    SortKind::Int => serde_json::Value::from(row.get::<i64>("sort_key")?),
                    SortKind::Time => {
                        serde_json::Value::from(row.time("sort_key")?.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)))
                    }
                };
                next = Some(next_cursor(key, query.direction, listing.clone(), value, record.id));
            }
            items.push(record);
        }
        Ok(Page { items, next_cursor: next })
    }
}

impl Resource for Customer {
    type Filter = CustomerFilter;
}

impl Table for Customer {
    const TABLE: &'static str = "customers";
    const SORTS: &'static [SortKey] = &[
        sort("created_at", "created_at", SortKind::Time),
        sort("updated_at", "updated_at", SortKind::Time),
        sort("name", "name_key", SortKind::Text),
    ];
    fn columns(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("name_key", Value::Text(Some(fold_for_search(&self.name)))),
            ("status", Value::Text(Some(self.status.as_str().into()))),
            ("assigned_to", Value::Uuid(self.assigned_to)),
        ]
    }

    fn search_text(&self) -> String {
        Customer::search_text(self)
    }

    /// Tags and canonical contact values go to `customer_keys`, which serves the tag filter
    /// and finding a customer by address.
    fn after_write(tx: &mut Tx, id: Uuid, data: &Self) -> impl Future<Output = Result<()>> + Send {
        let mut keys: Vec<(&'static str, String)> = data.tags.iter().map(|t| ("tag", t.clone())).collect();
        for contact in &data.contacts {
            let kind = match contact.kind {
                crm_domain::contact::ContactType::Email => "email",
                crm_domain::contact::ContactType::Phone | crm_domain::contact::ContactType::Whatsapp => "phone",
                crm_domain::contact::ContactType::Other => continue,
            };
            if !keys.iter().any(|(k, v)| *k == kind && *v == contact.normalized) {
                keys.push((kind, contact.normalized.clone()));
            }
        }
        async move {
            let mut delete = Sql::new("DELETE FROM customer_keys WHERE customer_id = ");
            delete.bind(Value::Uuid(Some(id)));
            tx.execute(&delete).await?;
            if keys.is_empty() {
                return Ok(());
            }
            let mut insert = Sql::new("INSERT INTO customer_keys (customer_id, kind, key) VALUES ");
            for (i, (kind, key)) in keys.into_iter().enumerate() {
                insert.push(if i == 0 { "(" } else { ", (" });
                insert
                    .bind(Value::Uuid(Some(id)))
                    .push(", ")
                    .bind(Value::Text(Some(kind.into())))
                    .push(", ")
                    .bind(Value::Text(Some(key)))
                    .push(")");
            }
            tx.execute(&insert).await?;
            Ok(())
        }
    }
}

impl Resource for Product {
    type Filter = ProductFilter;
}

impl Table for Product {
    const TABLE: &'static str = "products";
    const SORTS: &'static [SortKey] = &[
        sort("created_at", "created_at", SortKind::Time),
        sort("updated_at", "updated_at", SortKind::Time),
        sort("name", "name_key", SortKind::Text),
        sort("sku", "sku_key", SortKind::Text),
        sort("price", "price", SortKind::Int),
    ];
    fn columns(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("name_key", Value::Text(Some(fold_for_search(&self.name)))),
            ("sku_key", Value::Text(Some(self.sku_key()))),
            ("category", Value::Text(Some(self.category.as_str().into()))),
            ("active", Value::Bool(self.active)),
            ("price", Value::Int(Some(self.price.minor()))),
        ]
    }

    fn search_text(&self) -> String {
        Product::search_text(self)
    }

    /// Clients set `on_hand`; `reserved` belongs to the orders.
    fn prepare(
        _tx: &mut Tx,
        current: Option<&Record<Self>>,
        next: &mut Self,
        _now: DateTime<Utc>,
    ) -> impl Future<Output = Result<()>> + Send {
        let reserved = current.map_or(0, |c| c.data.stock.reserved);
        next.stock = Stock::new(next.stock.on_hand, reserved);
        async { Ok(()) }
    }

    fn unique_conflict(&self) -> StoreError {
        StoreError::conflict(Some("/sku"), format!("SKU `{}` is already used by another product (perhaps a deleted one)", self.sku))
    }
}

impl Resource for Order {
    type Filter = OrderFilter;
}

impl Table for Order {
    const TABLE: &'static str = "orders";
    const SORTS: &'static [SortKey] = &[
        sort("created_at", "created_at", SortKind::Time),
        sort("updated_at", "updated_at", SortKind::Time),
        sort("order_number", "number_key", SortKind::Int),
        sort("total", "total", SortKind::Int),
    ];
    fn columns(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("customer_id", Value::Uuid(Some(self.customer_id))),
            ("order_number", Value::Text(Some(self.order_number.clone()))),
            ("number_key", Value::Int(Some(order_number_key(&self.order_number)))),
            ("status", Value::Text(Some(self.status.as_str().into()))),
            ("payment_status", Value::Text(Some(serde_plain(&self.payment_status)))),
            ("total", Value::Int(Some(self.total.minor()))),
            ("assigned_to", Value::Uuid(self.assigned_to)),
        ]
    }

    fn search_text(&self) -> String {
        Order::search_text(self)
    }

    /// On create: the customer must exist, the order starts as a draft and gets the next
    /// number of the year. On update: the status machine decides, and stock moves with it.
    fn prepare(
        tx: &mut Tx,
        current: Option<&Record<Self>>,
        next: &mut Self,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<()>> + Send {
        let current = current.map(|c| c.data.clone());
        async move {
            match current {
                None => {
                    if next.status != OrderStatus::Draft {
                        return Err(Violations::one("/status", "a new order starts as a draft").into());
                    }
                    ensure_customer(tx, next.customer_id).await?;
                    next.order_number = next_order_number(tx, now.year()).await?;
                }
                Some(current) => {
                    let effect = current.check_update(next, now).map_err(|e| match e {
                        UpdateRefused::Transition(t) => StoreError::conflict(Some("/status"), t.to_string()),
                        frozen @ UpdateRefused::Frozen(_) => StoreError::conflict(None, frozen.to_string()),
                    })?;
                    if next.customer_id != current.customer_id {
                        ensure_customer(tx, next.customer_id).await?;
                    }
                    move_stock(tx, next, effect, now).await?;
                }
            }
            Ok(())
        }
    }

    fn check_delete(current: &Record<Self>) -> Result<()> {
        match current.data.status {
            OrderStatus::Confirmed | OrderStatus::InProduction => {
                Err(StoreError::conflict(Some("/status"), "the order holds reserved stock: cancel it before deleting it"))
            }
            _ => Ok(()),
        }
    }
}

async fn ensure_customer(tx: &mut Tx, id: Uuid) -> Result<()> {
    let mut sql = Sql::new("SELECT id FROM customers WHERE deleted_at IS NULL AND id = ");
    sql.bind(Value::Uuid(Some(id)));
    match tx.fetch_optional(&sql).await? {
        Some(_) => Ok(()),
        None => Err(Violations::one("/customer_id", format!("no customer {id}")).into()),
    }
}

/// The integer that sorts order numbers in order: `ORD-2026-007` is 2026000007.
fn order_number_key(number: &str) -> i64 {
    let mut parts = number.rsplitn(2, '-');
    let sequence: i64 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let year: i64 = parts.next().and_then(|rest| rest.rsplit('-').next()).and_then(|y| y.parse().ok()).unwrap_or(0);
    year * 1_000_000 + sequence
}

/// The year's next order number. The counter row stays locked until the transaction ends, so
/// concurrent orders get consecutive numbers, and a rolled-back order gives its number back
/// rather than leaving a gap.
async fn next_order_number(tx: &mut Tx, year: i32) -> Result<String> {
    let mut sql = Sql::new("INSERT INTO order_sequences (year, last_value) VALUES (");
    sql.bind(Value::Int(Some(i64::from(year))));
    sql.push(", 1) ON CONFLICT (year) DO UPDATE SET last_value = order_sequences.last_value + 1 RETURNING last_value");
    let row = tx.fetch_optional(&sql).await?.ok_or_else(|| StoreError::Corrupt("order sequence returned nothing".into()))?;
    Ok(order_number(year, row.get::<i64>("last_value")?))
}

/// Applies a status change's stock movement to every product of the order, in id order so
/// that concurrent orders lock products in the same order.
async fn move_stock(tx: &mut Tx, order: &Order, effect: StockEffect, now: DateTime<Utc>) -> Result<()> {
    if effect == StockEffect::None {
        return Ok(());
    }
    let mut lines = order.stock_lines();
    lines.sort();
    for (product_id, quantity) in lines {
        let current = match load_locked::<Product>(tx, product_id, None).await {
            Err(StoreError::NotFound) => {
                return Err(StoreError::conflict(Some("/items"), format!("product {product_id} no longer exists")));
            }
            other => other?,
        };
        let Stock { on_hand, reserved, .. } = current.data.stock;
        let (on_hand, reserved) = match effect {
            StockEffect::Reserve => (on_hand, reserved + quantity),
            StockEffect::Release => (on_hand, (reserved - quantity).max(0)),
            StockEffect::Consume if on_hand < quantity => {
                let p = &current.data;
                let detail = format!("cannot ship {quantity} × {} ({}): only {on_hand} on hand", p.name, p.sku);
                return Err(StoreError::conflict(Some("/status"), detail));
            }
            StockEffect::Consume => (on_hand - quantity, (reserved - quantity).max(0)),
            StockEffect::None => (on_hand, reserved),
        };
        let mut data = current.data.clone();
        data.stock = Stock::new(on_hand, reserved);
        overwrite(tx, &current, data, now).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::order_number_key;

    #[test]
    fn order_numbers_sort_numerically_across_widths_and_years() {
        let numbers = ["ORD-2025-1200", "ORD-2026-001", "ORD-2026-999", "ORD-2026-1000", "ORD-2027-002"];
        let keys: Vec<i64> = numbers.iter().map(|n| order_number_key(n)).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
        assert_eq!(order_number_key("ORD-2026-007"), 2_026_000_007);
    }
}
