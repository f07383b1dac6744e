//! The protocol-neutral value that crosses the wire boundary.
//!
//! The XML-RPC and JSON-RPC codecs translate between their text and
//! [`Value`]; everything above the wire sees only this type. It mirrors the
//! XenAPI type system rather than either encoding: an `Int` is a 64-bit API
//! int (a bare decimal in XML-RPC), `Int32` exists only for
//! `event.from`'s `valid_ref_counts` (`<i4>` in XML-RPC), and a `Struct`
//! keeps its members in insertion order so records come out in datamodel
//! order. A [`Snapshot`] is a large struct (a class's `get_all_records`)
//! made on demand, member by member, and shared between replies; each codec
//! keeps its encoding of it, so a large unchanged reply is encoded once.

use std::fmt;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

/// A XenAPI value.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Value {
    /// A string; also enums, refs and (on input) ints sent as strings.
    String(String),
    /// A 64-bit API int.
    Int(i64),
    /// A 32-bit int, written `<i4>` in XML-RPC (only `valid_ref_counts`).
    Int32(i32),
    /// A boolean.
    Bool(bool),
    /// A float.
    Float(f64),
    /// A datetime in XenAPI's basic form, `YYYYMMDDTHH:MM:SSZ`.
    DateTime(String),
    /// An array (sets, options, lists).
    Array(Vec<Value>),
    /// A struct or map, members in order.
    Struct(Vec<(String, Value)>),
    /// XML-RPC `<nil/>` / JSON `null`.
    Nil,
    /// A struct made on demand and shared between replies (never stored).
    #[serde(skip)]
    Snapshot(Snapshot),
}

/// Number of codecs that may keep an encoding in a [`Snapshot`].
pub const ENCODING_SLOTS: usize = 2;

type MemberSource = dyn Fn(&mut dyn FnMut(&str, Value)) + Send + Sync;

/// A struct whose members are produced on demand, one at a time, by a
/// closure over immutable data, with a slot per codec for its encoding.
/// Cloning shares it. Two snapshots are equal only if they are the same one.
#[derive(Clone)]
pub struct Snapshot(Arc<SnapshotInner>);

struct SnapshotInner {
    members: Box<MemberSource>,
    len: usize,
    encodings: [OnceLock<Bytes>; ENCODING_SLOTS],
}

impl Snapshot {
    /// A snapshot of `len` members that `members` hands, in order, to the
    /// function it is given.
    pub fn new(
        len: usize,
        members: impl Fn(&mut dyn FnMut(&str, Value)) + Send + Sync + 'static,
    ) -> Snapshot {
        Snapshot(Arc::new(SnapshotInner {
            members: Box::new(members),
            len,
            encodings: Default::default(),
        }))
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.0.len
    }

    /// Whether there are no members.
    pub fn is_empty(&self) -> bool {
        self.0.len == 0
    }

    /// Visit every member in order.
    pub fn for_each(&self, mut visit: impl FnMut(&str, Value)) {
        (self.0.members)(&mut visit);
    }

    /// The members as an ordinary struct.
    pub fn to_struct(&self) -> Value {
        let mut members = Vec::with_capacity(self.len());
        self.for_each(|name, value| members.push((name.to_owned(), value)));
        Value::Struct(members)
    }

    /// The encoding in `slot` (one slot per codec), made by `encode` the
    /// first time it is asked for.
    pub fn encoded(&self, slot: usize, encode: impl FnOnce(&Snapshot) -> Vec<u8>) -> Bytes {
        self.0.encodings[slot]
            .get_or_init(|| Bytes::from(encode(self)))
            .clone()
    }
}

impl PartialEq for Snapshot {
    fn eq(&self, other: &Snapshot) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Snapshot({} members)", self.len())
    }
}

impl Value {
    /// A string value.
    pub fn str(s: impl Into<String>) -> Value {
        Value::String(s.into())
    }

    /// The empty value that a void result is written as.
    pub fn void() -> Value {
        Value::String(String::new())
    }

    /// An array of strings.
    pub fn strings<I, S>(items: I) -> Value
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Value::Array(items.into_iter().map(|s| Value::String(s.into())).collect())
    }

    /// The string inside, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// A struct member by name.
    pub fn member(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Struct(members) => members.iter().find(|(k, _)| k == name).map(|(_, v)| v),
            _ => None,
        }
    }

    /// A short name of the value's kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::String(_) => "string",
            Value::Int(_) | Value::Int32(_) => "int",
            Value::Bool(_) => "bool",
            Value::Float(_) => "float",
            Value::DateTime(_) => "datetime",
            Value::Array(_) => "array",
            Value::Struct(_) | Value::Snapshot(_) => "struct",
            Value::Nil => "nil",
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::String(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::String(s)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Value {
        Value::Int(n)
    }
}

impl fmt::Display for Value {
    /// The human form used by the CLI: strings bare, sets joined by `; `,
    /// maps as `k: v; k: v`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::String(s) | Value::DateTime(s) => f.write_str(s),
            Value::Int(n) => write!(f, "{n}"),
            Value::Int32(n) => write!(f, "{n}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Nil => Ok(()),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{item}")?;
                }
                Ok(())
            }
            Value::Struct(members) => {
                for (i, (k, v)) in members.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{k}: {v}")?;
                }
                Ok(())
            }
            Value::Snapshot(snapshot) => snapshot.to_struct().fmt(f),
        }
    }
}
