//! Golden files for the XML-RPC codec: requests as the Python SDK, Xen
//! Orchestra and xapi write them decode to the committed JSON form;
//! responses encode byte for byte to the committed XML (which the Python
//! suite also feeds to `xmlrpc.client`). `PCIPASS_BLESS=1` rewrites them.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions: a failure should fail the test"
)]

use std::path::Path;

use pcipass::value::Value;
use pcipass::wire::{jsonrpc, xmlrpc};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/xmlrpc");

fn golden(path: &Path, actual: &[u8]) {
    if std::env::var_os("PCIPASS_BLESS").is_some() {
        std::fs::write(path, actual).unwrap();
    }
    let expected = std::fs::read(path).unwrap_or_default();
    assert!(
        expected == actual,
        "{} differs:\n{}",
        path.display(),
        String::from_utf8_lossy(actual)
    );
}

#[test]
fn requests_decode_to_golden_values() {
    let mut seen = 0;
    for entry in std::fs::read_dir(format!("{DIR}/requests")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "xml") {
            continue;
        }
        let call = xmlrpc::parse_call(&std::fs::read(&path).unwrap()).unwrap();
        let json = serde_json::json!({
            "method": call.method,
            "params": call.params.iter().map(jsonrpc::to_json).collect::<Vec<_>>(),
        });
        let mut text = serde_json::to_string_pretty(&json).unwrap();
        text.push('\n');
        golden(&path.with_extension("json"), text.as_bytes());
        seen += 1;
    }
    assert!(seen >= 5);
}

fn record() -> Value {
    Value::Struct(vec![
        (
            "uuid".into(),
            Value::str("3c0b6d6a-0e51-4e36-a1b4-6c0a6f4b8e11"),
        ),
        ("class_id".into(), Value::str("0300")),
        ("vendor_name".into(), Value::str("NVIDIA Corporation")),
        (
            "device_name".into(),
            Value::str("TU104 [GeForce RTX 2080 Rev. A]"),
        ),
        (
            "host".into(),
            Value::str("OpaqueRef:9d1b3b4e-1111-4222-8333-944455556666"),
        ),
        ("pci_id".into(), Value::str("0000:01:00.0")),
        (
            "dependencies".into(),
            Value::strings(["OpaqueRef:0a1b3b4e-1111-4222-8333-944455556666"]),
        ),
        ("other_config".into(), Value::Struct(vec![])),
        ("driver_name".into(), Value::str("")),
    ])
}

#[test]
fn responses_encode_to_golden_bytes() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "login-success",
            xmlrpc::write_success(&Value::str(
                "OpaqueRef:5d6c1c51-1111-4222-8333-944455556666",
            )),
        ),
        (
            "status",
            xmlrpc::write_success(&Value::str("disable_on_reboot")),
        ),
        ("void", xmlrpc::write_success(&Value::void())),
        ("api-version", xmlrpc::write_success(&Value::Int(21))),
        ("pci-record", xmlrpc::write_success(&record())),
        (
            "event-from",
            xmlrpc::write_success(&Value::Struct(vec![
                ("events".into(), Value::Array(vec![])),
                (
                    "valid_ref_counts".into(),
                    Value::Struct(vec![
                        ("pci".into(), Value::Int32(13)),
                        ("task".into(), Value::Int32(0)),
                    ]),
                ),
                (
                    "token".into(),
                    Value::str("00000000000000000011,00000000000000000000"),
                ),
            ])),
        ),
        (
            "failure",
            xmlrpc::write_failure(&[
                "SESSION_AUTHENTICATION_FAILED".into(),
                "root".into(),
                "Authentication failure".into(),
            ]),
        ),
        (
            "list-methods",
            xmlrpc::write_bare(&Value::strings([
                "PCI.get_all_records",
                "pool.get_all_records",
            ])),
        ),
        (
            "awkward-text",
            xmlrpc::write_success(&Value::str("a<b>&c \u{1} \r\n\t\u{ffff} é")),
        ),
    ];
    for (name, bytes) in cases {
        assert!(
            !bytes.iter().any(|b| *b == b'\n' && name != "awkward-text"),
            "{name}: no whitespace between tags"
        );
        golden(Path::new(&format!("{DIR}/responses/{name}.xml")), &bytes);
    }
}
