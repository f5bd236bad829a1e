//! Fuzz target `lambda_payload`: the body is `fuzz/bodies/classify.rs`, which `make test` also runs
//! (tests/fuzz) on the seed corpus `fuzz/corpus/lambda_payload` and generated inputs.
#![no_main]

#[allow(dead_code)]
#[path = "../bodies/mod.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::classify::run(data));
