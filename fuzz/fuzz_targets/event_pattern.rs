//! Fuzz target `event_pattern`: the body is `fuzz/bodies/pattern.rs`, which `make test` also runs
//! (tests/fuzz) on the seed corpus `fuzz/corpus/event_pattern` and generated inputs.
#![no_main]

#[allow(dead_code)]
#[path = "../bodies/mod.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::pattern::run(data));
