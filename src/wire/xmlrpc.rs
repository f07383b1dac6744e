//! XML-RPC: requests parsed with dxr (after smoothing the forms xapi
//! accepts but dxr rejects), responses written by a compact writer in
//! xapi's exact style: no whitespace, bare `<value>text</value>` strings,
//! ints as bare decimals, the Status/Value/ErrorDescription envelope.

use bytes::Bytes;

use crate::value::{Encoding, Rows, Snapshot, Value};
use crate::wire::body::{Chunks, ReplyBody, Sink};

/// A decoded method call.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// `Class.message`.
    pub method: String,
    /// Positional parameters.
    pub params: Vec<Value>,
}

/// Why a request body is not an XML-RPC call. Messages are short and never
/// contain the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlRpcError {
    /// The body is not UTF-8.
    #[error("the request body is not valid UTF-8")]
    InvalidUtf8,
    /// Not a well-formed `methodCall`.
    #[error("the request is not a well-formed XML-RPC methodCall")]
    Malformed,
    /// `methodName` is missing or empty.
    #[error("the request has no methodName")]
    NoMethodName,
    /// More values than [`crate::wire::MAX_VALUES`].
    #[error("the request holds more than {} values", crate::wire::MAX_VALUES)]
    TooManyValues,
}

/// Whether `body` opens more than `limit` `<value>` elements (counted in
/// the text, before anything is decoded; a `<value` in a comment counts
/// too, which only errs on the side of refusing).
fn over_values(body: &[u8], limit: usize) -> bool {
    const OPEN: &[u8] = b"<value";
    let mut seen = 0;
    let mut rest = body;
    while let Some(at) = rest.windows(OPEN.len()).position(|w| w == OPEN) {
        seen += 1;
        if seen > limit {
            return true;
        }
        rest = &rest[at + OPEN.len()..];
    }
    false
}

/// Stand-in for an empty struct member name, which dxr refuses.
const EMPTY_NAME: &str = "\u{E000}pcipass-empty-name\u{E000}";

/// Rewrite the forms dxr rejects into ones it reads.
fn smooth(text: &str) -> std::borrow::Cow<'_, str> {
    let needs_z = text.contains("Z</dateTime.iso8601>");
    let needs_name =
        text.contains("<name></name>") || text.contains("<name/>") || text.contains("<name />");
    if !needs_z && !needs_name {
        return std::borrow::Cow::Borrowed(text);
    }
    let empty = format!("<name>{EMPTY_NAME}</name>");
    let mut s = text.replace("Z</dateTime.iso8601>", "</dateTime.iso8601>");
    if needs_name {
        s = s
            .replace("<name></name>", &empty)
            .replace("<name/>", &empty)
            .replace("<name />", &empty);
    }
    std::borrow::Cow::Owned(s)
}

fn convert(value: dxr::Value) -> Value {
    match value {
        dxr::Value::Integer(n) => Value::Int(n.into()),
        dxr::Value::Long(n) => Value::Int(n),
        dxr::Value::Boolean(b) => Value::Bool(b),
        dxr::Value::String(s) => Value::String(s),
        dxr::Value::Double(x) => Value::Float(x),
        dxr::Value::DateTime(d) => Value::DateTime(format!("{}Z", d.to_string().replace('-', ""))),
        dxr::Value::Base64(bytes) => Value::String(String::from_utf8_lossy(&bytes).into_owned()),
        dxr::Value::Struct(members) => Value::Struct(
            members
                .into_iter()
                .map(|(k, v)| (if k == EMPTY_NAME { String::new() } else { k }, convert(v)))
                .collect(),
        ),
        dxr::Value::Array(items) => Value::Array(items.into_iter().map(convert).collect()),
        dxr::Value::Nil => Value::Nil,
        _ => Value::Nil,
    }
}

/// Parse a request body.
pub fn parse_call(body: &[u8]) -> Result<Call, XmlRpcError> {
    if over_values(body, crate::wire::MAX_VALUES) {
        return Err(XmlRpcError::TooManyValues);
    }
    let text = std::str::from_utf8(body).map_err(|_| XmlRpcError::InvalidUtf8)?;
    let text = text.trim_start_matches('\u{feff}');
    let call = dxr::MethodCall::from_xml(&smooth(text)).map_err(|_| XmlRpcError::Malformed)?;
    let method = call.name.trim().to_owned();
    if method.is_empty() {
        return Err(XmlRpcError::NoMethodName);
    }
    Ok(Call {
        method,
        params: call.params.into_iter().map(convert).collect(),
    })
}

/// Append `text` escaped for XML character data. Characters XML 1.0
/// cannot carry are replaced by U+FFFD so that every client can parse the
/// reply; `\r` is written as `&#13;` so it survives.
pub fn escape_into(text: &str, out: &mut Vec<u8>) {
    // Most text needs nothing: find the first byte that may (markup, a
    // control character, or the lead byte of U+FFFE/U+FFFF) and copy the
    // rest in one piece.
    let bytes = text.as_bytes();
    let needs_look = |b: &u8| matches!(*b, b'&' | b'<' | b'>' | 0xef) || *b < 0x20;
    let Some(first) = bytes.iter().position(needs_look) else {
        out.extend_from_slice(bytes);
        return;
    };
    out.extend_from_slice(&bytes[..first]);
    let mut start = first;
    for (offset, c) in text[first..].char_indices() {
        let i = first + offset;
        let replacement: &[u8] = match c {
            '&' => b"&amp;",
            '<' => b"&lt;",
            '>' => b"&gt;",
            '\r' => b"&#13;",
            '\t' | '\n' => continue,
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => "\u{fffd}".as_bytes(),
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(replacement);
        start = i + c.len_utf8();
    }
    out.extend_from_slice(&bytes[start..]);
}

fn write_float(x: f64, out: &mut Vec<u8>) {
    // XML-RPC has no NaN or infinity; xapi would not send them either.
    let x = if x.is_finite() { x } else { 0.0 };
    out.extend_from_slice(format!("{x:?}").as_bytes());
}

/// The [`Snapshot`] encoding slot of this codec.
const SNAPSHOT_SLOT: usize = 0;

/// The `<value>` fragment of a snapshot, made once per snapshot, with
/// where each member's name and value lie in it.
fn snapshot_encoding(snapshot: &Snapshot) -> &Encoding {
    snapshot.encoded(SNAPSHOT_SLOT, |s| {
        // Records are about 1.7 KB each in XML: start near the final size.
        let mut out = Vec::with_capacity(64 + s.len() * 2048);
        let mut members = Vec::with_capacity(s.len());
        out.extend_from_slice(b"<value><struct>");
        s.for_each(|name, v| {
            out.extend_from_slice(b"<member><name>");
            let name_start = out.len();
            escape_into(name, &mut out);
            let name_end = out.len();
            out.extend_from_slice(b"</name>");
            write_value(&v, &mut out);
            members.push((name_start..name_end, name_end + 7..out.len()));
            out.extend_from_slice(b"</member>");
        });
        out.extend_from_slice(b"</struct></value>");
        out.shrink_to_fit();
        Encoding {
            bytes: Bytes::from(out),
            members,
        }
    })
}

fn write_member(name: &str, value: &Value, out: &mut impl Sink) {
    out.buf().extend_from_slice(b"<member><name>");
    escape_into(name, out.buf());
    out.buf().extend_from_slice(b"</name>");
    write_value(value, out);
    out.buf().extend_from_slice(b"</member>");
}

/// The `<value>` items of the rows, made once per snapshot and head by
/// splicing the encoded members of the rows' snapshot: nothing of the
/// snapshot is encoded again.
fn rows_fragment(rows: &Rows) -> Bytes {
    let mut head = b"<value><struct>".to_vec();
    for (name, value) in rows.head() {
        write_member(name, value, &mut head);
    }
    head.extend_from_slice(b"<member><name>");
    escape_into(rows.name_as(), &mut head);
    head.extend_from_slice(b"</name><value>");
    let mut middle = b"</value></member><member><name>".to_vec();
    escape_into(rows.value_as(), &mut middle);
    middle.extend_from_slice(b"</name>");
    // The head and middle together say what the rows are; the snapshot
    // keeps the fragment under them.
    let key = [head.as_slice(), &middle].concat();
    rows.source().derived_encoding(SNAPSHOT_SLOT, &key, || {
        let encoding = snapshot_encoding(rows.source());
        let tail = b"</member></struct></value>";
        let mut out = Vec::with_capacity(
            encoding.bytes.len() + rows.len() * (head.len() + middle.len() + tail.len()),
        );
        for (name, value) in encoding.member_parts() {
            out.extend_from_slice(&head);
            out.extend_from_slice(name);
            out.extend_from_slice(&middle);
            out.extend_from_slice(value);
            out.extend_from_slice(tail);
        }
        out
    })
}

/// Append a `<value>…</value>` fragment; snapshots and rows are passed
/// to `out` as their shared encodings.
pub fn write_value(value: &Value, out: &mut impl Sink) {
    match value {
        Value::Snapshot(snapshot) => {
            out.shared(&snapshot_encoding(snapshot).bytes);
            return;
        }
        Value::Rows(rows) => {
            out.buf().extend_from_slice(b"<value><array><data>");
            out.shared(&rows_fragment(rows));
            out.buf().extend_from_slice(b"</data></array></value>");
            return;
        }
        _ => {}
    }
    let buf = out.buf();
    buf.extend_from_slice(b"<value>");
    match value {
        Value::String(s) => escape_into(s, buf),
        Value::Int(n) => buf.extend_from_slice(n.to_string().as_bytes()),
        Value::Int32(n) => {
            buf.extend_from_slice(b"<i4>");
            buf.extend_from_slice(n.to_string().as_bytes());
            buf.extend_from_slice(b"</i4>");
        }
        Value::Bool(b) => buf.extend_from_slice(if *b {
            b"<boolean>1</boolean>"
        } else {
            b"<boolean>0</boolean>"
        }),
        Value::Float(x) => {
            buf.extend_from_slice(b"<double>");
            write_float(*x, buf);
            buf.extend_from_slice(b"</double>");
        }
        Value::DateTime(d) => {
            buf.extend_from_slice(b"<dateTime.iso8601>");
            escape_into(d, buf);
            buf.extend_from_slice(b"</dateTime.iso8601>");
        }
        Value::Array(items) => {
            buf.extend_from_slice(b"<array><data>");
            for item in items {
                match item {
                    Value::Rows(rows) => out.shared(&rows_fragment(rows)),
                    item => write_value(item, out),
                }
            }
            out.buf().extend_from_slice(b"</data></array>");
        }
        Value::Struct(members) => {
            buf.extend_from_slice(b"<struct>");
            for (name, v) in members {
                write_member(name, v, out);
            }
            out.buf().extend_from_slice(b"</struct>");
        }
        Value::Nil => buf.extend_from_slice(b"<nil/>"),
        Value::Snapshot(_) | Value::Rows(_) => unreachable!("written above"),
    }
    out.buf().extend_from_slice(b"</value>");
}

const HEAD: &[u8] = b"<?xml version=\"1.0\"?><methodResponse><params><param>";
const TAIL: &[u8] = b"</param></params></methodResponse>";
const SUCCESS_HEAD: &[u8] = b"<?xml version=\"1.0\"?><methodResponse><params><param><value><struct><member><name>Status</name><value>Success</value></member><member><name>Value</name>";
const SUCCESS_TAIL: &[u8] = b"</member></struct></value></param></params></methodResponse>";

/// `{Status: Success, Value: value}`.
pub fn write_success(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(SUCCESS_HEAD);
    write_value(value, &mut out);
    out.extend_from_slice(SUCCESS_TAIL);
    out
}

/// [`write_success`] as a reply body; the cached encodings of snapshots
/// and rows are sent as they are, not copied.
pub fn success_body(value: &Value) -> ReplyBody {
    let mut out = Chunks::default();
    out.buf().extend_from_slice(SUCCESS_HEAD);
    write_value(value, &mut out);
    out.buf().extend_from_slice(SUCCESS_TAIL);
    out.into_body()
}

/// `{Status: Failure, ErrorDescription: [CODE, params...]}`.
pub fn write_failure(description: &[String]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(HEAD);
    out.extend_from_slice(
        b"<value><struct><member><name>Status</name><value>Failure</value></member><member><name>ErrorDescription</name><value><array><data>",
    );
    for item in description {
        out.extend_from_slice(b"<value>");
        escape_into(item, &mut out);
        out.extend_from_slice(b"</value>");
    }
    out.extend_from_slice(b"</data></array></value></member></struct></value>");
    out.extend_from_slice(TAIL);
    out
}

/// An unwrapped result (`system.listMethods`).
pub fn write_bare(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(4096);
    out.extend_from_slice(HEAD);
    write_value(value, &mut out);
    out.extend_from_slice(TAIL);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_counted_before_decoding() {
        let call = |n: usize| {
            format!(
                "<methodCall><methodName>m</methodName><params><param><value><array><data>{}\
                 </data></array></value></param></params></methodCall>",
                "<value>x</value>".repeat(n)
            )
        };
        // (values in the array, limit, refused): the array's own <value> counts.
        for (n, limit, refused) in [(0, 1, false), (1, 2, false), (2, 2, true), (3, 10, false)] {
            assert_eq!(
                over_values(call(n).as_bytes(), limit),
                refused,
                "{n} {limit}"
            );
        }
        assert!(!over_values(b"", 0));
        assert!(over_values(b"<value/>", 0));
        let max = crate::wire::MAX_VALUES;
        assert!(parse_call(call(max - 1).as_bytes()).is_ok());
        assert_eq!(
            parse_call(call(max).as_bytes()),
            Err(XmlRpcError::TooManyValues)
        );
    }
    use crate::value::samples::rows_batch;

    #[test]
    fn rows_are_written_as_the_items_they_stand_for() {
        let batch = rows_batch();
        let (mut spliced, mut plain) = (Vec::new(), Vec::new());
        write_value(&batch, &mut spliced);
        write_value(&batch.expanded(), &mut plain);
        assert_eq!(
            String::from_utf8(spliced).unwrap(),
            String::from_utf8(plain).unwrap()
        );
        let Value::Struct(members) = batch.expanded() else {
            panic!()
        };
        let Value::Array(events) = &members[0].1 else {
            panic!()
        };
        assert_eq!(events.len(), 5);
        assert_eq!(
            events[2].member("ref"),
            Some(&Value::str("OpaqueRef:<b>&\"c\""))
        );
    }

    fn parse(text: &str) -> Call {
        parse_call(text.as_bytes()).unwrap()
    }

    #[test]
    fn python_pretty_request() {
        let call = parse(
            "<?xml version='1.0'?>\n<methodCall>\n<methodName>PCI.get_record</methodName>\n<params>\n<param>\n<value><string>OpaqueRef:a</string></value>\n</param>\n<param>\n<value><int>5</int></value>\n</param>\n</params>\n</methodCall>\n",
        );
        assert_eq!(call.method, "PCI.get_record");
        assert_eq!(call.params, vec![Value::str("OpaqueRef:a"), Value::Int(5)]);
    }

    #[test]
    fn xen_orchestra_compact_request() {
        let call = parse(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><methodCall><methodName>system.listMethods</methodName><params /></methodCall>",
        );
        assert!(call.params.is_empty());
        let call = parse(
            "<methodCall><methodName>event.from</methodName><params><param><value>s</value></param><param><value><array><data><value>pool</value></data></array></value></param><param><value></value></param><param><value><double>60.1</double></value></param><param><value><nil /></value></param></params></methodCall>",
        );
        assert_eq!(
            call.params,
            vec![
                Value::str("s"),
                Value::strings(["pool"]),
                Value::str(""),
                Value::Float(60.1),
                Value::Nil
            ]
        );
    }

    #[test]
    fn xapi_forms_dxr_rejects() {
        let call = parse(
            "<methodCall><methodName>m</methodName><params><param><value><dateTime.iso8601>20240101T00:00:00Z</dateTime.iso8601></value></param><param><value><struct><member><name></name><value>v</value></member></struct></value></param><param><value><i8>9000000000</i8></value></param></params></methodCall>",
        );
        assert_eq!(call.params[0], Value::DateTime("20240101T00:00:00Z".into()));
        assert_eq!(
            call.params[1],
            Value::Struct(vec![(String::new(), Value::str("v"))])
        );
        assert_eq!(call.params[2], Value::Int(9_000_000_000));
    }

    #[test]
    fn bad_requests_have_short_errors() {
        assert_eq!(parse_call(b"\xff\xfe"), Err(XmlRpcError::InvalidUtf8));
        let err = parse_call(b"<methodCall><methodName>x</methodName><params><param>").unwrap_err();
        assert_eq!(err, XmlRpcError::Malformed);
        let bomb = "<?xml version=\"1.0\"?><!DOCTYPE l [<!ENTITY a \"aaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;\">]><methodCall><methodName>&b;</methodName><params/></methodCall>";
        assert!(parse_call(bomb.as_bytes()).is_err());
        let deep = format!(
            "<methodCall><methodName>m</methodName><params><param>{}{}</param></params></methodCall>",
            "<value><array><data>".repeat(500),
            "</data></array></value>".repeat(500)
        );
        assert!(parse_call(deep.as_bytes()).is_err());
    }

    #[test]
    fn writer_is_compact_and_xapi_shaped() {
        let v = Value::Struct(vec![
            ("s".into(), Value::str("a<b&c")),
            ("e".into(), Value::str("")),
            ("n".into(), Value::Int(2)),
            ("c".into(), Value::Int32(3)),
            ("b".into(), Value::Bool(true)),
            ("l".into(), Value::Array(vec![])),
        ]);
        let out = String::from_utf8(write_success(&v)).unwrap();
        assert_eq!(
            out,
            "<?xml version=\"1.0\"?><methodResponse><params><param><value><struct><member><name>Status</name><value>Success</value></member><member><name>Value</name><value><struct><member><name>s</name><value>a&lt;b&amp;c</value></member><member><name>e</name><value></value></member><member><name>n</name><value>2</value></member><member><name>c</name><value><i4>3</i4></value></member><member><name>b</name><value><boolean>1</boolean></value></member><member><name>l</name><value><array><data></data></array></value></member></struct></value></member></struct></value></param></params></methodResponse>"
        );
        let fail = String::from_utf8(write_failure(&[
            "HANDLE_INVALID".into(),
            "PCI".into(),
            "x".into(),
        ]))
        .unwrap();
        assert!(fail.contains("<value>Failure</value>"));
        assert!(fail.contains(
            "<data><value>HANDLE_INVALID</value><value>PCI</value><value>x</value></data>"
        ));
    }

    #[test]
    fn control_characters_never_reach_the_wire() {
        let mut out = Vec::new();
        escape_into("a\u{1}b\rc\u{ffff}", &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "a\u{fffd}b&#13;c\u{fffd}");
    }

    #[test]
    fn round_trip_through_our_parser() {
        let v = Value::Struct(vec![
            ("k".into(), Value::strings(["x", "  y  "])),
            ("".into(), Value::Float(1.5)),
        ]);
        let mut body = b"<methodCall><methodName>m</methodName><params><param>".to_vec();
        write_value(&v, &mut body);
        body.extend_from_slice(b"</param></params></methodCall>");
        let call = parse_call(&body).unwrap();
        let Value::Struct(mut members) = call.params[0].clone() else {
            panic!()
        };
        members.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            members,
            vec![
                ("".into(), Value::Float(1.5)),
                ("k".into(), Value::strings(["x", "  y  "]))
            ]
        );
    }
}
