//! JSON-RPC 1.0 and 2.0 as xapi speaks them on `/jsonrpc`: version from the
//! `jsonrpc` member, `id` required (integer or string), v1 `params` an
//! array, v2 `params` absent, an array or one object; replies in the
//! request's version with xapi's error shapes.

use bytes::Bytes;
use serde_json::{Map, Number, Value as Json};

use crate::value::{Encoding, Rows, Snapshot, Value};
use crate::wire::body::{Chunks, ReplyBody, Sink};

/// The protocol version of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// No `jsonrpc` member.
    V1,
    /// `"jsonrpc": "2.0"`.
    V2,
}

/// A decoded request.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonCall {
    /// Version.
    pub version: Version,
    /// The request id, echoed in the reply.
    pub id: Json,
    /// `Class.message`.
    pub method: String,
    /// Positional parameters.
    pub params: Vec<Value>,
}

/// Why a body is not a JSON-RPC request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonRpcError {
    /// Not JSON (or not UTF-8).
    #[error("the request is not valid JSON")]
    Malformed,
    /// Not an object with a string `method`.
    #[error("the request has no method")]
    NoMethod,
    /// `jsonrpc` is present but not "2.0".
    #[error("unsupported jsonrpc version")]
    BadVersion,
    /// `id` missing, null or not an integer or string.
    #[error("the request id must be an integer or a string")]
    BadId,
    /// `params` of the wrong shape.
    #[error("params must be an array (or, in 2.0, an object)")]
    BadParams,
    /// Nested deeper than the limit.
    #[error("the request is nested too deeply")]
    TooDeep,
    /// A batch (an array of requests).
    #[error("batches are not supported: send one call per request")]
    Batch,
    /// A member given twice (which one counts would be a guess).
    #[error("the request has the member {0:?} twice")]
    Duplicate(String),
    /// More values than [`crate::wire::MAX_VALUES`].
    #[error("the request holds more than {} values", crate::wire::MAX_VALUES)]
    TooManyValues,
}

/// Whether the JSON text `body` holds more than `limit` values, counted
/// before anything is decoded: every array or object opened and every
/// `,` outside strings (each starts another element or member).
fn over_values(body: &[u8], limit: usize) -> bool {
    let (mut seen, mut in_string, mut escaped) = (0usize, false, false);
    for &b in body {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' | b',' => {
                seen += 1;
                if seen > limit {
                    return true;
                }
            }
            _ => {}
        }
    }
    false
}

impl JsonRpcError {
    /// The JSON-RPC 2.0 error code the specification names for it:
    /// -32700 (parse error) for a body that is not JSON, -32600 (invalid
    /// request) for anything else.
    pub fn code(&self) -> i64 {
        match self {
            JsonRpcError::Malformed => -32700,
            _ => -32600,
        }
    }
}

/// The top-level member names of a JSON object, in order, duplicates kept
/// (serde_json's map keeps only the last of a name).
fn member_names(body: &[u8]) -> Option<Vec<String>> {
    struct Names(Vec<String>);
    impl<'de> serde::Deserialize<'de> for Names {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Names, D::Error> {
            struct Visit;
            impl<'de> serde::de::Visitor<'de> for Visit {
                type Value = Names;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Names, A::Error> {
                    let mut names = Vec::new();
                    while let Some(name) = map.next_key::<String>()? {
                        map.next_value::<serde::de::IgnoredAny>()?;
                        names.push(name);
                    }
                    Ok(Names(names))
                }
            }
            d.deserialize_map(Visit)
        }
    }
    serde_json::from_slice::<Names>(body).ok().map(|n| n.0)
}

/// Deepest nesting accepted in parameters.
const MAX_DEPTH: usize = 64;

fn to_value(json: Json, depth: usize) -> Result<Value, JsonRpcError> {
    if depth > MAX_DEPTH {
        return Err(JsonRpcError::TooDeep);
    }
    Ok(match json {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::Bool(b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(0.0)),
        },
        Json::String(s) => Value::String(s),
        Json::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|v| to_value(v, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Json::Object(map) => Value::Struct(
            map.into_iter()
                .map(|(k, v)| to_value(v, depth + 1).map(|v| (k, v)))
                .collect::<Result<_, _>>()?,
        ),
    })
}

/// A value from trusted JSON (replies to our own client).
pub fn from_json(json: Json) -> Value {
    match json {
        Json::Array(items) => Value::Array(items.into_iter().map(from_json).collect()),
        Json::Object(map) => {
            Value::Struct(map.into_iter().map(|(k, v)| (k, from_json(v))).collect())
        }
        other => to_value(other, 0).unwrap_or(Value::Nil),
    }
}

/// The JSON form of a value.
pub fn to_json(value: &Value) -> Json {
    match value {
        Value::String(s) | Value::DateTime(s) => Json::String(s.clone()),
        Value::Int(n) => Json::Number((*n).into()),
        Value::Int32(n) => Json::Number((*n).into()),
        Value::Bool(b) => Json::Bool(*b),
        Value::Float(x) => Number::from_f64(*x)
            .map(Json::Number)
            .unwrap_or(Json::Number(0.into())),
        Value::Array(items) if items.iter().any(|i| matches!(i, Value::Rows(_))) => {
            to_json(&value.expanded())
        }
        Value::Array(items) => Json::Array(items.iter().map(to_json).collect()),
        Value::Struct(members) => Json::Object(
            members
                .iter()
                .map(|(k, v)| (k.clone(), to_json(v)))
                .collect::<Map<_, _>>(),
        ),
        Value::Nil => Json::Null,
        Value::Snapshot(snapshot) => to_json(&snapshot.to_struct()),
        Value::Rows(_) => to_json(&value.expanded()),
    }
}

/// The [`Snapshot`] encoding slot of this codec.
const SNAPSHOT_SLOT: usize = 1;

/// The JSON object of a snapshot, made once per snapshot, member by
/// member, with where each member's name and value lie in it.
fn snapshot_encoding(snapshot: &Snapshot) -> &Encoding {
    snapshot.encoded(SNAPSHOT_SLOT, |s| {
        let mut out = Vec::with_capacity(2 + s.len() * 1024);
        let mut members = Vec::with_capacity(s.len());
        out.push(b'{');
        s.for_each(|name, value| {
            if !members.is_empty() {
                out.push(b',');
            }
            let name_start = out.len();
            write_string(name, &mut out);
            let name_end = out.len();
            out.push(b':');
            write_json(&value, &mut out);
            members.push((name_start..name_end, name_end + 1..out.len()));
        });
        out.push(b'}');
        out.shrink_to_fit();
        Encoding {
            bytes: Bytes::from(out),
            members,
        }
    })
}

fn write_string(text: &str, out: &mut Vec<u8>) {
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

/// The rows as comma-separated objects, made once per snapshot and head
/// by splicing the encoded members of the rows' snapshot.
fn rows_fragment(rows: &Rows) -> Bytes {
    let mut head = b"{".to_vec();
    for (name, value) in rows.head() {
        write_string(name, &mut head);
        head.push(b':');
        write_json(value, &mut head);
        head.push(b',');
    }
    write_string(rows.name_as(), &mut head);
    head.push(b':');
    let mut middle = b",".to_vec();
    write_string(rows.value_as(), &mut middle);
    middle.push(b':');
    let key = [head.as_slice(), &middle].concat();
    rows.source().derived_encoding(SNAPSHOT_SLOT, &key, || {
        let encoding = snapshot_encoding(rows.source());
        let mut out =
            Vec::with_capacity(encoding.bytes.len() + rows.len() * (head.len() + middle.len() + 2));
        for (name, value) in encoding.member_parts() {
            if !out.is_empty() {
                out.push(b',');
            }
            out.extend_from_slice(&head);
            out.extend_from_slice(name);
            out.extend_from_slice(&middle);
            out.extend_from_slice(value);
            out.push(b'}');
        }
        out
    })
}

/// Append the rows to an array whose items so far are `first`-less.
fn write_rows(rows: &Rows, first: &mut bool, out: &mut impl Sink) {
    if rows.is_empty() {
        return;
    }
    if !std::mem::take(first) {
        out.buf().push(b',');
    }
    out.shared(&rows_fragment(rows));
}

/// Append the JSON text of a value: what [`to_json`] gives, written
/// directly; snapshots and rows are passed to `out` as their shared
/// encodings.
pub fn write_json(value: &Value, out: &mut impl Sink) {
    match value {
        Value::String(s) | Value::DateTime(s) => write_string(s, out.buf()),
        Value::Int(n) => out.buf().extend_from_slice(n.to_string().as_bytes()),
        Value::Int32(n) => out.buf().extend_from_slice(n.to_string().as_bytes()),
        Value::Bool(b) => out
            .buf()
            .extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Float(x) => match Number::from_f64(*x) {
            Some(n) => out.buf().extend_from_slice(n.to_string().as_bytes()),
            None => out.buf().push(b'0'),
        },
        Value::Array(items) => {
            out.buf().push(b'[');
            let mut first = true;
            for item in items {
                match item {
                    Value::Rows(rows) => write_rows(rows, &mut first, out),
                    item => {
                        if !std::mem::take(&mut first) {
                            out.buf().push(b',');
                        }
                        write_json(item, out);
                    }
                }
            }
            out.buf().push(b']');
        }
        Value::Struct(members) => {
            out.buf().push(b'{');
            for (i, (name, value)) in members.iter().enumerate() {
                if i > 0 {
                    out.buf().push(b',');
                }
                write_string(name, out.buf());
                out.buf().push(b':');
                write_json(value, out);
            }
            out.buf().push(b'}');
        }
        Value::Nil => out.buf().extend_from_slice(b"null"),
        Value::Snapshot(snapshot) => out.shared(&snapshot_encoding(snapshot).bytes),
        Value::Rows(rows) => {
            out.buf().push(b'[');
            write_rows(rows, &mut true, out);
            out.buf().push(b']');
        }
    }
}

/// Parse a request body.
pub fn parse_request(body: &[u8]) -> Result<JsonCall, JsonRpcError> {
    if over_values(body, crate::wire::MAX_VALUES) {
        return Err(JsonRpcError::TooManyValues);
    }
    // serde_json's own recursion limit (128) guards the parse itself.
    let json: Json = serde_json::from_slice(body).map_err(|_| JsonRpcError::Malformed)?;
    let mut object = match json {
        Json::Object(object) => object,
        Json::Array(_) => return Err(JsonRpcError::Batch),
        _ => return Err(JsonRpcError::NoMethod),
    };
    let mut names = member_names(body).unwrap_or_default();
    names.sort();
    if let Some(pair) = names.windows(2).find(|p| p[0] == p[1]) {
        return Err(JsonRpcError::Duplicate(pair[0].clone()));
    }
    let version = match object.remove("jsonrpc") {
        None => Version::V1,
        Some(Json::String(v)) if v == "2.0" => Version::V2,
        Some(_) => return Err(JsonRpcError::BadVersion),
    };
    let id = match object.remove("id") {
        Some(id @ (Json::String(_) | Json::Number(_))) if !id.is_f64() => id,
        _ => return Err(JsonRpcError::BadId),
    };
    let Some(Json::String(method)) = object.remove("method") else {
        return Err(JsonRpcError::NoMethod);
    };
    let params = match (version, object.remove("params")) {
        (_, Some(Json::Array(items))) => items,
        (Version::V2, None | Some(Json::Null)) => Vec::new(),
        (Version::V2, Some(obj @ Json::Object(_))) => vec![obj],
        _ => return Err(JsonRpcError::BadParams),
    };
    Ok(JsonCall {
        version,
        id,
        method,
        params: params
            .into_iter()
            .map(|p| to_value(p, 1))
            .collect::<Result<_, _>>()?,
    })
}

/// The envelope of a success reply up to its result.
fn success_head(version: Version, id: &Json) -> Vec<u8> {
    let id = serde_json::to_string(id).unwrap_or_else(|_| "null".into());
    match version {
        Version::V1 => format!("{{\"error\":null,\"id\":{id},\"result\":"),
        Version::V2 => format!("{{\"id\":{id},\"jsonrpc\":\"2.0\",\"result\":"),
    }
    .into_bytes()
}

/// A success reply.
pub fn write_success(version: Version, id: &Json, result: &Value) -> Vec<u8> {
    let mut out = success_head(version, id);
    write_json(result, &mut out);
    out.push(b'}');
    out
}

/// [`write_success`] as a reply body; the cached encodings of snapshots
/// and rows are sent as they are, not copied.
pub fn success_body(version: Version, id: &Json, result: &Value) -> ReplyBody {
    let mut out = Chunks::default();
    out.buf().extend_from_slice(&success_head(version, id));
    write_json(result, &mut out);
    out.buf().push(b'}');
    out.into_body()
}

/// A failure reply for `[CODE, params...]`.
pub fn write_failure(version: Version, id: &Json, description: &[String]) -> Vec<u8> {
    let reply = match version {
        Version::V1 => serde_json::json!({"result": null, "error": description, "id": id}),
        Version::V2 => {
            let (code, data) = description
                .split_first()
                .map(|(c, d)| (c.as_str(), d))
                .unwrap_or(("INTERNAL_ERROR", &[]));
            serde_json::json!({"jsonrpc": "2.0", "error": {"code": 1, "message": code, "data": data}, "id": id})
        }
    };
    serde_json::to_vec(&reply).unwrap_or_default()
}

/// The reply to a body that is not a request: the JSON-RPC 2.0 error the
/// specification names (-32700 parse error, -32600 invalid request) with
/// id null, as it requires when the id cannot be told, the reason in
/// `data` (xapi answers such requests with HTTP 500; a JSON reply is
/// kinder to clients and carries the reason).
pub fn write_parse_failure(error: &JsonRpcError) -> Vec<u8> {
    let message = match error.code() {
        -32700 => "Parse error",
        _ => "Invalid Request",
    };
    let reply = serde_json::json!({
        "jsonrpc": "2.0",
        "error": {"code": error.code(), "message": message, "data": [format!("JSON-RPC request: {error}")]},
        "id": null,
    });
    serde_json::to_vec(&reply).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_counted_outside_strings_before_decoding() {
        // (body, limit, refused)
        for (body, limit, refused) in [
            (&br#"{"a":1}"#[..], 1, false),
            (br#"{"a":1,"b":2}"#, 1, true),
            (br#"["a,b,c"]"#, 1, false),
            (br#"["a\",[,,"]"#, 1, false),
            (br#"[[],[]]"#, 4, false),
            (br#"[[],[],[]]"#, 4, true),
        ] {
            assert_eq!(
                over_values(body, limit),
                refused,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let call = |n: usize| {
            format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"m","params":[{}]}}"#,
                vec!["0"; n].join(",")
            )
        };
        let max = crate::wire::MAX_VALUES;
        assert!(parse_request(call(max / 2).as_bytes()).is_ok());
        assert_eq!(
            parse_request(call(max + 1).as_bytes()).unwrap_err(),
            JsonRpcError::TooManyValues
        );
    }
    use crate::value::samples::rows_batch;

    #[test]
    fn rows_are_written_as_the_items_they_stand_for() {
        let batch = rows_batch();
        let (mut spliced, mut plain) = (Vec::new(), Vec::new());
        write_json(&batch, &mut spliced);
        write_json(&batch.expanded(), &mut plain);
        assert_eq!(
            String::from_utf8(spliced.clone()).unwrap(),
            String::from_utf8(plain).unwrap()
        );
        let parsed: Json = serde_json::from_slice(&spliced).unwrap();
        assert_eq!(parsed, to_json(&batch.expanded()));
        assert_eq!(parsed["events"].as_array().unwrap().len(), 5);
        assert_eq!(
            parsed["events"][1]["snapshot"]["x"],
            serde_json::json!(60.1)
        );
        assert_eq!(parsed["empty"], serde_json::json!([]));
        let id = Json::Number(0.into());
        assert_eq!(
            success_body(Version::V2, &id, &batch).to_vec(),
            write_success(Version::V2, &id, &batch.expanded())
        );
    }

    #[test]
    fn direct_writer_agrees_with_serde() {
        for value in [
            Value::Float(60.1),
            Value::Float(1.0),
            Value::Float(1e300),
            Value::Float(f64::NAN),
            Value::Int(-3),
            Value::str("\u{1}\"\\/é"),
            Value::Nil,
            Value::Struct(vec![("k".into(), Value::Array(vec![Value::Bool(true)]))]),
        ] {
            let mut out = Vec::new();
            write_json(&value, &mut out);
            let expected = serde_json::to_vec(&to_json(&value)).unwrap();
            assert_eq!(
                String::from_utf8(out).unwrap(),
                String::from_utf8(expected).unwrap()
            );
        }
    }

    #[test]
    fn versions_ids_and_params() {
        let c = parse_request(
            br#"{"id":0,"jsonrpc":"2.0","method":"event.from","params":["s",["pool"],"t",60.1]}"#,
        )
        .unwrap();
        assert_eq!(c.version, Version::V2);
        assert_eq!(c.params[3], Value::Float(60.1));
        let c = parse_request(br#"{"id":"a","method":"m","params":[1]}"#).unwrap();
        assert_eq!(
            (c.version, c.params.clone()),
            (Version::V1, vec![Value::Int(1)])
        );
        assert_eq!(
            parse_request(br#"{"jsonrpc":"2.0","id":1,"method":"m"}"#)
                .unwrap()
                .params,
            vec![]
        );
        assert_eq!(
            parse_request(br#"{"id":1,"method":"m"}"#),
            Err(JsonRpcError::BadParams)
        );
        assert_eq!(
            parse_request(br#"{"jsonrpc":"1.5","id":1,"method":"m","params":[]}"#),
            Err(JsonRpcError::BadVersion)
        );
        assert_eq!(
            parse_request(br#"{"jsonrpc":"2.0","id":null,"method":"m"}"#),
            Err(JsonRpcError::BadId)
        );
        assert_eq!(
            parse_request(br#"{"jsonrpc":"2.0","id":1.5,"method":"m"}"#),
            Err(JsonRpcError::BadId)
        );
        assert_eq!(parse_request(b"{\"id\":1,"), Err(JsonRpcError::Malformed));
        // 2^64 is no integer serde_json keeps: refused, not answered as 0.
        assert_eq!(
            parse_request(br#"{"jsonrpc":"2.0","id":18446744073709551616,"method":"m"}"#),
            Err(JsonRpcError::BadId)
        );
        assert_eq!(
            parse_request(br#"{"jsonrpc":"2.0","id":18446744073709551615,"method":"m"}"#)
                .unwrap()
                .id
                .to_string(),
            "18446744073709551615"
        );
        assert_eq!(
            parse_request(br#"[{"jsonrpc":"2.0","id":1,"method":"m"}]"#),
            Err(JsonRpcError::Batch)
        );
        assert_eq!(
            parse_request(br#"{"jsonrpc":"2.0","id":1,"method":"session.logout","method":"m"}"#),
            Err(JsonRpcError::Duplicate("method".into()))
        );
    }

    #[test]
    fn a_body_that_is_no_request_gets_the_specifications_error_with_id_null() {
        for (body, code) in [
            (&b"{"[..], -32700),
            (br#"[{"jsonrpc":"2.0","id":1,"method":"m"}]"#, -32600),
            (br#"{"jsonrpc":"2.0","id":null,"method":"m"}"#, -32600),
            (br#"{"jsonrpc":"2.0","id":1,"id":2,"method":"m"}"#, -32600),
        ] {
            let error = parse_request(body).unwrap_err();
            let reply: Json = serde_json::from_slice(&write_parse_failure(&error)).unwrap();
            assert_eq!(reply["error"]["code"], code, "{error}");
            assert_eq!(reply["id"], Json::Null);
            assert_eq!(reply["jsonrpc"], "2.0");
        }
    }

    #[test]
    fn reply_shapes_match_xapi() {
        let id = Json::Number(0.into());
        assert_eq!(
            String::from_utf8(write_success(Version::V2, &id, &Value::str("x"))).unwrap(),
            r#"{"id":0,"jsonrpc":"2.0","result":"x"}"#
        );
        let v2: Json = serde_json::from_slice(&write_failure(
            Version::V2,
            &id,
            &["HANDLE_INVALID".into(), "PCI".into(), "r".into()],
        ))
        .unwrap();
        assert_eq!(
            v2,
            serde_json::json!({"jsonrpc":"2.0","error":{"code":1,"message":"HANDLE_INVALID","data":["PCI","r"]},"id":0})
        );
        let v1: Json = serde_json::from_slice(&write_failure(
            Version::V1,
            &Json::String("a".into()),
            &["X".into()],
        ))
        .unwrap();
        assert_eq!(
            v1,
            serde_json::json!({"result":null,"error":["X"],"id":"a"})
        );
        let ok: Json =
            serde_json::from_slice(&write_success(Version::V1, &id, &Value::Int(2))).unwrap();
        assert_eq!(ok, serde_json::json!({"result":2,"error":null,"id":0}));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let deep = format!(
            r#"{{"id":1,"method":"m","params":[{}{}]}}"#,
            "[".repeat(100),
            "]".repeat(100)
        );
        assert_eq!(parse_request(deep.as_bytes()), Err(JsonRpcError::TooDeep));
    }
}
