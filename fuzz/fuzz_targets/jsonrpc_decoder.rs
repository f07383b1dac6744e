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
        serde_json::from_slice::<serde_json::Value>(&reply).expect("replies are JSON");
    }
});
