//! Any body: the JSON-RPC decoder answers Ok or Err, never panics, and a
//! reply to a decoded request is valid JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pcipass::wire::jsonrpc;

fuzz_target!(|data: &[u8]| {
    if let Ok(call) = jsonrpc::parse_request(data) {
        let reply = jsonrpc::write_success(
            call.version,
            &call.id,
            &pcipass::value::Value::Array(call.params),
        );
        // Checked as raw JSON: an id is echoed byte for byte, and a number
        // too large for an f64 is still JSON (a `Value` cannot hold it).
        serde_json::from_slice::<&serde_json::value::RawValue>(&reply).expect("replies are JSON");
    }
});
