//! Field-level differences between two versions of a record, for the audit trail.

use serde::Serialize;
use serde_json::Value;

/// One changed field: its JSON Pointer and the values before and after (absent = `null`).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct FieldChange {
    /// JSON Pointer of the field.
    pub pointer: String,
    /// Value before the change.
    pub before: Value,
    /// Value after the change.
    pub after: Value,
}

/// The fields that differ between `before` and `after`. Objects are compared key by key, down to
/// the leaves; arrays and scalars are compared whole (an array change is one entry with both
/// arrays), which keeps diffs of lists readable.
pub fn diff(before: &Value, after: &Value) -> Vec<FieldChange> {
    let mut changes = Vec::new();
    walk("", before, after, &mut changes);
    changes
}

fn walk(pointer: &str, before: &Value, after: &Value, out: &mut Vec<FieldChange>) {
    match (before, after) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys().filter(|k| !a.contains_key(*k))).collect();
            keys.sort();
            for key in keys {
                let child = format!("{pointer}/{}", key.replace('~', "~0").replace('/', "~1"));
                walk(&child, a.get(key).unwrap_or(&Value::Null), b.get(key).unwrap_or(&Value::Null), out);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(FieldChange { pointer: pointer.to_owned(), before: a.clone(), after: b.clone() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_fields_and_whole_arrays() {
        let before = json!({"name": "a", "location": {"city": "Βόλος"}, "tags": ["x"], "same": 1});
        let after = json!({"name": "b", "location": {"city": "Λάρισα", "country": "GR"}, "tags": ["x", "y"], "same": 1});
        let changes = diff(&before, &after);
        let summary: Vec<(&str, &Value, &Value)> = changes.iter().map(|c| (c.pointer.as_str(), &c.before, &c.after)).collect();
        assert_eq!(
            summary,
            vec![
                ("/location/city", &json!("Βόλος"), &json!("Λάρισα")),
                ("/location/country", &Value::Null, &json!("GR")),
                ("/name", &json!("a"), &json!("b")),
                ("/tags", &json!(["x"]), &json!(["x", "y"])),
            ]
        );
    }

    #[test]
    fn identical_documents_have_no_changes() {
        let doc = json!({"a": [1, {"b": 2}]});
        assert!(diff(&doc, &doc).is_empty());
    }
}
