//! Field-level validation results, collected so that one bad request reports every bad field at
//! once instead of the first one only.

use std::collections::BTreeMap;

/// The outcome of parsing one field: the valid value, or a human message saying what is wrong.
pub type FieldResult<T> = Result<T, String>;

/// Every invalid field of one input, keyed by its path in the input (`sections[0].rows[2].seats`).
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
#[error("invalid input: {}", self.summary())]
pub struct FieldErrors {
    fields: BTreeMap<String, String>,
}

impl FieldErrors {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn single(field: impl Into<String>, message: impl Into<String>) -> Self {
        let mut errors = Self::new();
        errors.add(field, message);
        errors
    }

    /// Records a problem with `field`; the first message recorded for a field wins.
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.fields
            .entry(field.into())
            .or_insert_with(|| message.into());
    }

    /// Keeps the value of a field that parsed, or records why it did not.
    pub fn check<T>(&mut self, field: &str, result: FieldResult<T>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(message) => {
                self.add(field, message);
                None
            }
        }
    }

    /// Merges errors of a nested input under `prefix`.
    pub fn absorb(&mut self, prefix: &str, nested: FieldErrors) {
        for (field, message) in nested.fields {
            let path = if prefix.is_empty() {
                field
            } else if field.starts_with('[') {
                format!("{prefix}{field}")
            } else {
                format!("{prefix}.{field}")
            };
            self.add(path, message);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    pub fn fields(&self) -> &BTreeMap<String, String> {
        &self.fields
    }

    /// `Ok(())` when nothing was recorded, so callers can `?` after checking every field.
    pub fn into_result(self) -> Result<(), FieldErrors> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }

    fn summary(&self) -> String {
        self.fields
            .iter()
            .map(|(field, message)| format!("{field} {message}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}
