//! Fuzz target `put_events`: the body is `fuzz/bodies/put_events.rs`, which `make test` also runs
//! (tests/fuzz) on the seed corpus `fuzz/corpus/put_events` and generated inputs.
#![no_main]

#[allow(dead_code)]
#[path = "../bodies/mod.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::put_events::run(data));
