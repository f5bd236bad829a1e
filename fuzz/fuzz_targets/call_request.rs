//! Fuzz target `call_request`: the body is `fuzz/bodies/call_request.rs`, which `make test` also runs
//! (tests/fuzz) on the seed corpus `fuzz/corpus/call_request` and generated inputs.
#![no_main]

#[allow(dead_code)]
#[path = "../bodies/mod.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::call_request::run(data));
