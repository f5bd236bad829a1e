//! Fuzzes the decoding of Inngest call requests: any bytes either decode into a request whose
//! memo turns into a journal, or give an error message; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match cairn_http::call::decode(data) {
        Ok(request) => {
            let records = cairn_http::call::journal(&request);
            assert!(records.len() <= request.steps.len());
        }
        Err(message) => assert!(message.starts_with("malformed call request: ")),
    }
    let _ = cairn_http::signing::canonical(data);
});
