//! What every stored record carries beside its data (identity, version, timestamps, soft
//! deletion), and the handling of read-only fields when a client sends a record back.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// A stored record: metadata plus the resource's data, flattened into one JSON object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Record<T> {
    /// Identifier (UUID v7, time-ordered).
    pub id: Uuid,
    /// Incremented by every change; sent as the ETag and checked against `If-Match`.
    pub version: i64,
    /// When the record was created.
    pub created_at: DateTime<Utc>,
    /// When the record last changed.
    pub updated_at: DateTime<Utc>,
    /// When the record was soft-deleted; absent while it is live.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<DateTime<Utc>>,
    /// The resource's own fields.
    #[serde(flatten)]
    pub data: T,
}

/// Fields every record has that clients may echo back but never set.
pub const RECORD_READ_ONLY: &[&str] = &["/id", "/version", "/created_at", "/updated_at", "/deleted_at"];

/// Removes read-only fields from a client's JSON before it is parsed, so that a record fetched
/// with GET can be edited and sent back with PUT as it is. Pointers are JSON Pointers where a
/// `*` segment stands for every element of an array.
pub fn strip_read_only(value: &mut Value, pointers: &[&str]) {
    for pointer in RECORD_READ_ONLY.iter().chain(pointers) {
        let segments: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
        remove_at(value, &segments);
    }
}

fn remove_at(value: &mut Value, segments: &[&str]) {
    match (segments, value) {
        ([last], Value::Object(map)) => {
            map.remove(*last);
        }
        (["*", rest @ ..], Value::Array(items)) => items.iter_mut().for_each(|item| remove_at(item, rest)),
        ([first, rest @ ..], Value::Object(map)) => {
            if let Some(child) = map.get_mut(*first) {
                remove_at(child, rest);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strips_nested_and_array_fields() {
        let mut v = json!({"id": 1, "name": "x", "contacts": [{"value": "a", "normalized": "a"}, {"normalized": "b"}], "costs": {"total": 3, "pcb": 1}});
        strip_read_only(&mut v, &["/contacts/*/normalized", "/costs/total", "/absent/deep"]);
        assert_eq!(v, json!({"name": "x", "contacts": [{"value": "a"}, {}], "costs": {"pcb": 1}}));
    }
}
