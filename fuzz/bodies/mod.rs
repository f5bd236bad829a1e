//! The bodies of the fuzz targets, shared by the cargo-fuzz binaries (`fuzz/fuzz_targets`)
//! and the workspace test `tests/fuzz`, which runs each on its seed corpus and a few thousand
//! generated inputs in `make test`. Each takes raw bytes and panics on a broken property.

pub mod call_request;
pub mod cel;
pub mod classify;
pub mod hostile;
pub mod pattern;
pub mod put_events;
pub mod schedule;

/// A target's body: any bytes in, a panic when a property breaks.
pub type Body = fn(&[u8]);

/// Every target: its name (the fuzz binary and corpus folder) and body.
pub const TARGETS: &[(&str, Body)] = &[
    ("call_request", call_request::run),
    ("lambda_payload", classify::run),
    ("put_events", put_events::run),
    ("schedule_request", schedule::run),
    ("event_pattern", pattern::run),
    ("cel_match", cel::run),
];
