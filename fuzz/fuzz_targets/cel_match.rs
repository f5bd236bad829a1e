//! Fuzz target `cel_match`: the body is `fuzz/bodies/cel.rs`, which `make test` also runs
//! (tests/fuzz) on the seed corpus `fuzz/corpus/cel_match` and generated inputs.
#![no_main]

#[allow(dead_code)]
#[path = "../bodies/mod.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::cel::run(data));
