//! Validation errors that name the offending field by its JSON Pointer (RFC 6901) path, so the
//! API can report every problem of a request at once.

use serde::Serialize;

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
