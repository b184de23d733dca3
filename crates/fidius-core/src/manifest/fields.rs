//! Reads typed fields out of a TOML table while collecting every problem instead of stopping at the first.

use serde::de::DeserializeOwned;

use super::ManifestProblem;

/// Takes fields out of one table; whatever is left at [`TableReader::finish`] is an unknown key.
pub(super) struct TableReader<'p> {
    prefix: &'static str,
    table: toml::Table,
    problems: &'p mut Vec<ManifestProblem>,
}

impl<'p> TableReader<'p> {
    pub(super) fn new(
        prefix: &'static str,
        table: toml::Table,
        problems: &'p mut Vec<ManifestProblem>,
    ) -> Self {
        Self {
            prefix,
            table,
            problems,
        }
    }

    fn field_name(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.prefix)
        }
    }

    /// A field that must be present.
    pub(super) fn required<T: DeserializeOwned>(
        &mut self,
        key: &str,
        expected: &'static str,
    ) -> Option<T> {
        if !self.table.contains_key(key) {
            let field = self.field_name(key);
            self.problems
                .push(ManifestProblem::MissingField { field, expected });
            return None;
        }
        self.optional(key, expected)
    }

    /// A field that may be absent; present with the wrong type is a problem.
    pub(super) fn optional<T: DeserializeOwned>(
        &mut self,
        key: &str,
        expected: &'static str,
    ) -> Option<T> {
        let value = self.table.remove(key)?;
        let found = describe(&value);
        match value.try_into() {
            Ok(typed) => Some(typed),
            Err(_) => {
                let field = self.field_name(key);
                self.problems.push(ManifestProblem::WrongType {
                    field,
                    expected,
                    found,
                });
                None
            }
        }
    }

    /// Reports every key nobody asked for.
    pub(super) fn finish(self) {
        let unknown: Vec<String> = self.table.keys().map(|key| self.field_name(key)).collect();
        self.problems.extend(
            unknown
                .into_iter()
                .map(|key| ManifestProblem::UnknownKey { key }),
        );
    }
}

/// The type of a value, plus the value itself when it is a short scalar.
pub(super) fn describe(value: &toml::Value) -> String {
    match value {
        toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) => {
            format!("{} {value}", value.type_str())
        }
        other => other.type_str().to_owned(),
    }
}
