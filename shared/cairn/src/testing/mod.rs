//! Test support (feature `testing`): [`TestRun`] to unit-test a workflow in milliseconds,
//! [`TestRuns`] for many events and runs (flow control) on a manual clock, and
//! the store [`conformance`] suite every [`RunStore`](crate::RunStore) backend passes.

pub mod conformance;
mod flow_conformance;
mod require;
mod stub;
mod test_run;
mod test_runs;

pub use crate::clock::ManualClock;
pub use require::{Missing, is_ci, missing, require, require_env, require_path};
pub use stub::{StubRequest, StubServer};
pub use test_run::TestRun;
pub use test_runs::TestRuns;

/// Runs `future` to completion on a fresh current-thread tokio runtime (timers, and sockets
/// when a backend's crate enables them).
///
/// # Panics
/// When the runtime cannot be built (out of file descriptors).
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime")
        .block_on(future)
}
