//! Any body: the XML-RPC decoder answers Ok or Err, never panics; a decoded
//! call's parameters encode to XML our decoder reads back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pcipass::wire::xmlrpc;

fuzz_target!(|data: &[u8]| {
    if let Ok(call) = xmlrpc::parse_call(data) {
        let mut body = b"<methodCall><methodName>m</methodName><params>".to_vec();
        for p in &call.params {
            body.extend_from_slice(b"<param>");
            xmlrpc::write_value(p, &mut body);
            body.extend_from_slice(b"</param>");
        }
        body.extend_from_slice(b"</params></methodCall>");
        let again = xmlrpc::parse_call(&body).expect("our own encoding decodes");
        assert_eq!(again.params.len(), call.params.len());
    }
});
