//! The stored object and the types a batch and the event log are made of.

use std::sync::Arc;

use crate::value::Value;

/// One stored object: its class, ref, uuid and every field (uuid included)
/// in datamodel order.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// Class name, e.g. `PCI`.
    pub class: String,
    /// `OpaqueRef:<uuid4>`.
    pub reference: String,
    /// The object's uuid.
    pub uuid: String,
    /// Fields in order.
    pub fields: Vec<(String, Value)>,
}

impl Object {
    /// A field's value.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// A string field, or "" when absent or not a string.
    pub fn get_str(&self, name: &str) -> &str {
        self.get(name).and_then(Value::as_str).unwrap_or("")
    }

    /// Set a field, appending it when new.
    pub fn set(&mut self, name: &str, value: Value) {
        match self.fields.iter_mut().find(|(k, _)| k == name) {
            Some((_, v)) => *v = value,
            None => self.fields.push((name.to_owned(), value)),
        }
    }
}

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Created.
    Add,
    /// Modified (or touched by `event.inject`).
    Mod,
    /// Destroyed.
    Del,
}

impl Operation {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Add => "add",
            Operation::Mod => "mod",
            Operation::Del => "del",
        }
    }
}

/// One entry of the event log.
#[derive(Debug, Clone)]
pub struct Event {
    /// Generation at which it happened (1-based, monotonic).
    pub id: u64,
    /// Class name.
    pub class: String,
    /// What happened.
    pub operation: Operation,
    /// The object's ref.
    pub reference: String,
    /// The object after the change; for `Del`, the object as it was when
    /// deleted (who may see a deletion is decided from it, as for the
    /// other changes).
    pub snapshot: Arc<Object>,
}

/// A change in a batch.
#[derive(Debug, Clone)]
pub enum Change {
    /// Create an object.
    Create(Object),
    /// Replace some fields of an object.
    Update {
        /// The object.
        reference: String,
        /// Fields to set.
        fields: Vec<(String, Value)>,
    },
    /// Destroy an object.
    Delete(String),
    /// Record a `mod` event for an unchanged object (`event.inject`).
    Touch(String),
}
