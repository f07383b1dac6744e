//! The protocol-neutral value that crosses the wire boundary, and the
//! XenAPI datetime form ([`format_datetime`], [`now_datetime`]).
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
//! [`Rows`] are array items made from a snapshot's members (the first
//! `event.from` of a client: one `add` event per record), which a codec
//! writes by splicing the snapshot's encoded members, encoding nothing
//! twice.

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock};

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
    /// Items of the enclosing [`Value::Array`], one struct per member of
    /// a snapshot (never stored). Alone, it is an array of those items.
    #[serde(skip)]
    Rows(Rows),
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
    encodings: [OnceLock<Encoding>; ENCODING_SLOTS],
    derived: [Mutex<Option<Derived>>; ENCODING_SLOTS],
}

/// An encoding made from a snapshot's, with the key it was made for.
type Derived = (Vec<u8>, Bytes);

/// One codec's encoding of a [`Snapshot`]: the whole struct, and where
/// each member's encoded name and encoded value lie in it, so that the
/// members can be written again elsewhere without being encoded again.
#[derive(Debug, Clone, Default)]
pub struct Encoding {
    /// The encoded struct.
    pub bytes: Bytes,
    /// Per member, in order: the byte ranges of its name and its value.
    pub members: Vec<(Range<usize>, Range<usize>)>,
}

impl Encoding {
    /// Each member's encoded name and encoded value.
    pub fn member_parts(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.members.iter().map(|(name, value)| {
            (
                self.bytes.get(name.clone()).unwrap_or_default(),
                self.bytes.get(value.clone()).unwrap_or_default(),
            )
        })
    }
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
            derived: Default::default(),
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
    pub fn encoded(&self, slot: usize, encode: impl FnOnce(&Snapshot) -> Encoding) -> &Encoding {
        self.0.encodings[slot].get_or_init(|| encode(self))
    }

    /// An encoding made from this snapshot's (rows over its members), kept
    /// in `slot` under `key`: made by `make` the first time `key` is asked
    /// for, and kept until another key is (one per slot, so its size stays
    /// bounded by the snapshot's).
    pub fn derived_encoding(
        &self,
        slot: usize,
        key: &[u8],
        make: impl FnOnce() -> Vec<u8>,
    ) -> Bytes {
        let mut kept = self.0.derived[slot]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((k, bytes)) = kept.as_ref()
            && k.as_slice() == key
        {
            return bytes.clone();
        }
        let bytes = Bytes::from(make());
        *kept = Some((key.to_vec(), bytes.clone()));
        bytes
    }
}

/// Array items made from a [`Snapshot`]: for each of its members, a
/// struct of the `head` members, then the member's name as `name_as` and
/// its value as `value_as`. Cloning shares it.
#[derive(Clone, PartialEq)]
pub struct Rows {
    source: Snapshot,
    head: Arc<Vec<(String, Value)>>,
    name_as: &'static str,
    value_as: &'static str,
}

impl Rows {
    /// One row per member of `source`.
    pub fn new(
        source: Snapshot,
        head: Vec<(String, Value)>,
        name_as: &'static str,
        value_as: &'static str,
    ) -> Rows {
        Rows {
            source,
            head: Arc::new(head),
            name_as,
            value_as,
        }
    }

    /// The snapshot the rows are made from.
    pub fn source(&self) -> &Snapshot {
        &self.source
    }

    /// The members every row starts with.
    pub fn head(&self) -> &[(String, Value)] {
        &self.head
    }

    /// The row member that holds the snapshot member's name.
    pub fn name_as(&self) -> &'static str {
        self.name_as
    }

    /// The row member that holds the snapshot member's value.
    pub fn value_as(&self) -> &'static str {
        self.value_as
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.source.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.source.is_empty()
    }

    /// Visit every row as an ordinary struct.
    pub fn for_each(&self, mut visit: impl FnMut(Value)) {
        self.source.for_each(|name, value| {
            let mut members = self.head.as_ref().clone();
            members.push((self.name_as.to_owned(), Value::str(name)));
            members.push((self.value_as.to_owned(), value));
            visit(Value::Struct(members));
        });
    }
}

impl fmt::Debug for Rows {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Rows({} of {:?})", self.len(), self.head)
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

    /// The same value made only of plain variants: snapshots become
    /// structs and rows become the array items they stand for.
    pub fn expanded(&self) -> Value {
        match self {
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        Value::Rows(rows) => rows.for_each(|row| out.push(row.expanded())),
                        other => out.push(other.expanded()),
                    }
                }
                Value::Array(out)
            }
            Value::Struct(members) => Value::Struct(
                members
                    .iter()
                    .map(|(k, v)| (k.clone(), v.expanded()))
                    .collect(),
            ),
            Value::Snapshot(snapshot) => snapshot.to_struct().expanded(),
            Value::Rows(rows) => Value::Array(vec![Value::Rows(rows.clone())]).expanded(),
            plain => plain.clone(),
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
            Value::Array(_) | Value::Rows(_) => "array",
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
            Value::Rows(_) => self.expanded().fmt(f),
        }
    }
}

/// Now as a XenAPI datetime.
pub fn now_datetime() -> Value {
    Value::DateTime(format_datetime(std::time::SystemTime::now()))
}

/// Format a time as `YYYYMMDDTHH:MM:SSZ` (UTC).
pub fn format_datetime(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (proleptic Gregorian), Howard Hinnant's algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Values for the codecs' tests.
#[cfg(test)]
pub mod samples {
    use super::{Rows, Snapshot, Value};

    /// An event batch as `event.from` builds it: rows of a snapshot (with
    /// names that need escaping) between two plain items.
    pub fn rows_batch() -> Value {
        let records = Snapshot::new(3, |visit| {
            for (i, name) in ["OpaqueRef:a", "OpaqueRef:<b>&\"c\"", "OpaqueRef:é"]
                .iter()
                .enumerate()
            {
                visit(
                    name,
                    Value::Struct(vec![
                        ("uuid".into(), Value::String(format!("u{i}"))),
                        ("n".into(), Value::Int(i as i64)),
                        ("x".into(), Value::Float(60.1)),
                        ("set".into(), Value::strings(["a", "b"])),
                    ]),
                );
            }
        });
        let rows = Rows::new(
            records,
            vec![
                ("id".into(), Value::str("7")),
                ("class".into(), Value::str("pci")),
            ],
            "ref",
            "snapshot",
        );
        let plain = Value::Struct(vec![("id".into(), Value::str("8"))]);
        Value::Struct(vec![
            (
                "events".into(),
                Value::Array(vec![plain.clone(), Value::Rows(rows.clone()), plain]),
            ),
            ("alone".into(), Value::Rows(rows)),
            (
                "empty".into(),
                Value::Array(vec![Value::Rows(Rows::new(
                    Snapshot::new(0, |_| {}),
                    vec![],
                    "r",
                    "s",
                ))]),
            ),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_are_xapi_basic_form() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_742_357_784);
        assert_eq!(format_datetime(t), "20250319T04:16:24Z");
        assert_eq!(format_datetime(std::time::UNIX_EPOCH), "19700101T00:00:00Z");
    }
}
