//! Validation errors that name the offending field by its JSON Pointer (RFC 6901) path, so the
//! API can report every problem of a request at once.

use chrono::{DateTime, Datelike as _, Utc};
use serde::{Deserialize, Deserializer, Serialize};

/// One problem with one field of an input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// JSON Pointer to the field, e.g. `/contacts/1/value`.
    pub pointer: String,
    /// What is wrong, in words a user can act on.
    pub detail: String,
}

/// Every problem found while parsing one input. Never empty when returned as an error.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
#[error("{} invalid field(s): {}", .0.len(), .0.iter().map(|e| format!("{} {}", e.pointer, e.detail)).collect::<Vec<_>>().join("; "))]
pub struct Violations(pub Vec<FieldError>);

impl Violations {
    /// A single violation.
    pub fn one(pointer: impl Into<String>, detail: impl Into<String>) -> Self {
        let mut v = Self::default();
        v.push(pointer, detail);
        v
    }

    /// Records a problem at `pointer`.
    pub fn push(&mut self, pointer: impl Into<String>, detail: impl Into<String>) {
        self.0.push(FieldError { pointer: pointer.into(), detail: detail.into() });
    }

    /// Keeps the value of `result`, or records its error at `pointer` and returns `None`.
    pub fn check<T, E: std::fmt::Display>(&mut self, pointer: impl Into<String>, result: Result<T, E>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(err) => {
                self.push(pointer, err.to_string());
                None
            }
        }
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(value)` when nothing was recorded, otherwise the violations.
    pub fn finish<T>(self, value: impl FnOnce() -> T) -> Result<T, Self> {
        if self.is_empty() { Ok(value()) } else { Err(self) }
    }
}

/// Trims `value` and refuses it when empty or longer than `max` characters.
pub fn required_text(value: &str, max: usize) -> Result<String, String> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err("must not be empty".into());
    }
    optional_text(trimmed, max).map(|v| v.unwrap_or_default())
}

/// Trims `value`; empty becomes `None`; longer than `max` characters is refused.
pub fn optional_text(value: &str, max: usize) -> Result<Option<String>, String> {
    let trimmed = value.trim();
    if trimmed.chars().count() > max {
        return Err(format!("must be at most {max} characters"));
    }
    Ok((!trimmed.is_empty()).then(|| trimmed.to_owned()))
}

/// Refuses a time outside the years 1 to 9999: PostgreSQL cannot store some of them, and
/// SQLite keeps times as text whose order is time order only within those years.
pub fn storable_time(value: Option<DateTime<Utc>>) -> Result<Option<DateTime<Utc>>, String> {
    match value {
        Some(time) if !(1..=9999).contains(&time.year()) => Err(format!("{time} is outside the years 1 to 9999")),
        other => Ok(other),
    }
}

/// Deserializes an optional time (RFC 3339) that must be [`storable_time`]: for query
/// parameters, which have no parse step of their own.
pub fn deserialize_storable_time<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    storable_time(Option::<DateTime<Utc>>::deserialize(deserializer)?).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// chrono reads years beyond four digits and before year 1; the store could not keep them.
    #[test]
    fn times_outside_the_storable_years_are_refused() {
        for (text, storable) in [
            ("\"0001-01-01T00:00:00Z\"", true),
            ("\"9999-12-31T23:59:59.999999Z\"", true),
            ("\"+10000-01-01T00:00:00Z\"", false),
            ("\"-5000-01-01T00:00:00Z\"", false),
            ("\"0000-12-31T23:59:59Z\"", false),
        ] {
            let time: DateTime<Utc> = serde_json::from_str(text).unwrap_or_else(|e| panic!("{text} reads: {e}"));
            assert_eq!(storable_time(Some(time)).is_ok(), storable, "{text}");
            let read = deserialize_storable_time(&mut serde_json::Deserializer::from_str(text));
            assert_eq!(read.is_ok(), storable, "{text}: {read:?}");
        }
        assert_eq!(storable_time(None), Ok(None));
    }
}
