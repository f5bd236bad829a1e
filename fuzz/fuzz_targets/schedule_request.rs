//! Fuzz target `schedule_request`: the body is `fuzz/bodies/schedule.rs`, which `make test` also runs
//! (tests/fuzz) on the seed corpus `fuzz/corpus/schedule_request` and generated inputs.
#![no_main]

#[allow(dead_code)]
#[path = "../bodies/mod.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::schedule::run(data));
