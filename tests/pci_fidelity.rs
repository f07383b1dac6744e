//! Wire fidelity of PCI records: over XML-RPC and JSON-RPC, a PCI record
//! (get_record, get_all_records, event snapshots) has exactly xapi's public
//! field set, and the fields xapi keeps internal have no getters, while
//! pcipass still stores them (sync's SR-IOV relations).
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions: a failure should fail the test"
)]

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use pcipass::api::context::Context;
use pcipass::api::session_table::create_session;
use pcipass::api::{Role, Value};
use pcipass::config::Settings;
use pcipass::idl::datamodel;
use pcipass::wire::dispatch::Dispatcher;
use pcipass::wire::http::{Peer, Protocol, RpcHandler, RpcRequest};
use pcipass::wire::{jsonrpc, xmlrpc};

/// xapi's public PCI fields (ocaml/idl/datamodel.ml, `pci`).
const XAPI_PCI_FIELDS: [&str; 16] = [
    "uuid",
    "class_id",
    "class_name",
    "vendor_id",
    "vendor_name",
    "device_id",
    "device_name",
    "host",
    "pci_id",
    "dependencies",
    "other_config",
    "subsystem_vendor_id",
    "subsystem_vendor_name",
    "subsystem_device_id",
    "subsystem_device_name",
    "driver_name",
];

/// Internal in xapi: stored, never on the wire.
const INTERNAL: [&str; 4] = [
    "functions",
    "virtual_functions",
    "physical_function",
    "attached_VMs",
];

fn context(dir: &tempfile::TempDir) -> Arc<Context> {
    let settings = Settings::demo_under(dir.path()).unwrap();
    pcipass::daemon::build_context(&settings).unwrap()
}

/// Call `method` over `protocol` and decode the reply to a [`Value`]:
/// `Ok(result)` or `Err(error description)`.
async fn call(
    dispatcher: &Dispatcher,
    protocol: Protocol,
    method: &str,
    params: Vec<Value>,
) -> Result<Value, Vec<String>> {
    let body = match protocol {
        Protocol::XmlRpc => {
            let mut out = format!(
                "<?xml version=\"1.0\"?><methodCall><methodName>{method}</methodName><params>"
            )
            .into_bytes();
            for p in &params {
                out.extend_from_slice(b"<param>");
                xmlrpc::write_value(p, &mut out);
                out.extend_from_slice(b"</param>");
            }
            out.extend_from_slice(b"</params></methodCall>");
            out
        }
        Protocol::JsonRpc => serde_json::to_vec(&serde_json::json!({
            "jsonrpc": "2.0",
            "id": 1,
            "method": method,
            "params": params.iter().map(jsonrpc::to_json).collect::<Vec<_>>(),
        }))
        .unwrap(),
    };
    let reply = dispatcher
        .handle(RpcRequest {
            protocol,
            path: "/".into(),
            peer: Peer::Tcp("127.0.0.1:1".parse().unwrap()),
            body: Bytes::from(body),
        })
        .await
        .body
        .to_vec();
    match protocol {
        Protocol::XmlRpc => {
            // Reread the response's value with the call parser.
            let text = String::from_utf8(reply).unwrap();
            let text = text
                .replacen(
                    "<methodResponse>",
                    "<methodCall><methodName>r</methodName>",
                    1,
                )
                .replacen("</methodResponse>", "</methodCall>", 1);
            let reply = xmlrpc::parse_call(text.as_bytes()).unwrap();
            let outcome = reply.params.into_iter().next().unwrap();
            match outcome.member("Status").and_then(Value::as_str) {
                Some("Success") => Ok(outcome.member("Value").cloned().unwrap()),
                Some(_) => Err(strings(outcome.member("ErrorDescription").unwrap())),
                // system.* answers without the Status envelope.
                None => Ok(outcome),
            }
        }
        Protocol::JsonRpc => {
            let json: serde_json::Value = serde_json::from_slice(&reply).unwrap();
            match json.get("result") {
                Some(result) => Ok(jsonrpc::from_json(result.clone())),
                None => {
                    let error = &json["error"];
                    let mut description = vec![error["message"].as_str().unwrap().to_owned()];
                    description.extend(strings(&jsonrpc::from_json(error["data"].clone())));
                    Err(description)
                }
            }
        }
    }
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().unwrap_or("").to_owned())
            .collect(),
        _ => vec![],
    }
}

fn members(v: &Value) -> Vec<(String, Value)> {
    match v {
        Value::Struct(m) => m.clone(),
        other => panic!("not a struct: {other:?}"),
    }
}

/// Member names as a set (a decoder need not keep the wire order).
fn field_names(record: &Value) -> BTreeSet<String> {
    members(record).into_iter().map(|(k, _)| k).collect()
}

fn assert_xapi_fields(record: &Value, what: &str) {
    let want: BTreeSet<String> = XAPI_PCI_FIELDS.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(field_names(record), want, "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pci_records_have_exactly_xapis_public_fields_in_both_protocols() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(&dir);
    let session =
        create_session(&ctx, "admin", Role::PoolAdmin, false, "fidelity", "users").unwrap();
    let dispatcher = Dispatcher::new(ctx.clone());
    let s = || Value::String(session.clone());
    for protocol in [Protocol::XmlRpc, Protocol::JsonRpc] {
        let all = call(&dispatcher, protocol, "PCI.get_all_records", vec![s()])
            .await
            .unwrap();
        let all = members(&all);
        assert!(all.len() >= 10, "{protocol:?}: {} PCIs", all.len());
        for (reference, record) in &all {
            assert_xapi_fields(record, &format!("{protocol:?} get_all_records {reference}"));
            let one = call(
                &dispatcher,
                protocol,
                "PCI.get_record",
                vec![s(), Value::String(reference.clone())],
            )
            .await
            .unwrap();
            assert_xapi_fields(&one, &format!("{protocol:?} get_record {reference}"));
        }
        let (reference, _) = &all[0];
        for field in INTERNAL {
            let err = call(
                &dispatcher,
                protocol,
                &format!("PCI.get_{field}"),
                vec![s(), Value::String(reference.clone())],
            )
            .await
            .unwrap_err();
            assert_eq!(
                err,
                vec![
                    "MESSAGE_METHOD_UNKNOWN".to_owned(),
                    format!("PCI.get_{field}")
                ],
                "{protocol:?}"
            );
        }
        let events = call(
            &dispatcher,
            protocol,
            "event.from",
            vec![
                s(),
                Value::strings(["PCI"]),
                Value::str(""),
                Value::Float(0.0),
            ],
        )
        .await
        .unwrap();
        let events = events.member("events").cloned().unwrap();
        let Value::Array(events) = events else {
            panic!("events: {events:?}")
        };
        assert!(!events.is_empty(), "{protocol:?}: no PCI events");
        for event in &events {
            let snapshot = event.member("snapshot").unwrap();
            assert_xapi_fields(snapshot, &format!("{protocol:?} event snapshot"));
        }
    }
    let methods = call(&dispatcher, Protocol::XmlRpc, "system.listMethods", vec![])
        .await
        .unwrap();
    let methods: BTreeSet<String> = strings(&methods).into_iter().collect();
    assert!(methods.contains("PCI.get_pci_id"));
    for field in INTERNAL {
        assert!(!methods.contains(&format!("PCI.get_{field}")), "{field}");
        assert!(datamodel().method(&format!("PCI.get_{field}")).is_none());
    }
}

#[test]
fn internal_pci_fields_are_stored_but_not_public() {
    let pci = datamodel().class("PCI").unwrap();
    let public: Vec<&str> = pci.public_fields().map(|f| f.name.as_str()).collect();
    assert_eq!(public, XAPI_PCI_FIELDS);
    for field in INTERNAL {
        assert!(pci.field(field).unwrap().internal, "{field}");
    }
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(&dir);
    let stored = ctx.store.all("PCI");
    assert!(!stored.is_empty());
    for object in &stored {
        for field in INTERNAL {
            assert!(object.get(field).is_some(), "{field} not stored");
        }
    }
}
