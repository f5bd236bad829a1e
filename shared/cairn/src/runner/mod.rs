//! The [`Runner`]: drives runs to their next suspension over any [`RunStore`], [`Bus`] and
//! [`Timer`]. It loads the journal, executes, commits each step as it completes, and keeps
//! going in the same invocation until the run completes, sleeps longer than a threshold, waits
//! for an event, or its time budget runs out; then it hands over to the [`Timer`], and a later
//! [`Runner::drive`] resumes the run.

mod lease;
mod recovery;

pub use recovery::{RECONCILE_BATCH, Reconciled};

mod accept;
mod admission;
mod config;
mod drive;
mod finish;
mod listeners;
mod ops;
mod report;

use crate::bus::{Bus, Timer};
use crate::clock::{Clock, SystemClock};
use crate::function::Registry;
use crate::lifecycle::RunControl;
use crate::store::RunStore;
pub use config::RunnerConfig;
pub use report::{Accepted, Drive, Progress, ProgressSink, RunnerError};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

/// Drives runs of the functions in a [`Registry`].
#[derive(Debug)]
pub struct Runner<S, B, T> {
    registry: Registry,
    store: S,
    bus: B,
    timer: T,
    clock: Arc<dyn Clock>,
    config: RunnerConfig,
    /// `run` steps answered without executing their code ([`TestRun::mock_step`](crate::testing::TestRun::mock_step)).
    #[cfg(feature = "testing")]
    pub(crate) step_mocks: std::collections::HashMap<String, Result<serde_json::Value, crate::error::StepError>>,
}

/// The one decision a stepped drive made ([`Runner::drive_one_decision`]): what the engine
/// decided, or why it could not go on; `None` while the drive has made none.
pub(crate) type Decision = Option<Result<crate::engine::Outcome, crate::error::EngineError>>;

pub(super) static DRIVE_SEQUENCE: AtomicU64 = AtomicU64::new(0);

impl<S: RunStore, B: Bus, T: Timer> Runner<S, B, T> {
    /// A runner on the system clock with default configuration.
    pub fn new(registry: Registry, store: S, bus: B, timer: T) -> Self {
        Runner {
            registry,
            store,
            bus,
            timer,
            clock: Arc::new(SystemClock),
            config: RunnerConfig::default(),
            #[cfg(feature = "testing")]
            step_mocks: std::collections::HashMap::new(),
        }
    }

    /// Uses `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Uses `config`.
    pub fn with_config(mut self, config: RunnerConfig) -> Self {
        self.config = config;
        self
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The bus.
    pub fn bus(&self) -> &B {
        &self.bus
    }

    /// The timer.
    pub fn timer(&self) -> &T {
        &self.timer
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Operations on this runner's runs (cancel, rerun, replay) at the clock's now, with its
    /// store, bus and timer.
    pub fn control(&self) -> RunControl<'_, S, B, T> {
        RunControl::new(&self.store, &self.bus, &self.timer, self.clock.now(), self.durations())
    }
}

/// The in-process loop: deliver queued events and wake due runs until nothing is left.
impl<S: RunStore> Runner<S, crate::bus::MemoryBus, crate::bus::MemoryTimer> {
    /// Delivers every queued event and drives every due run, repeatedly, until idle.
    /// Returns how many drives it made.
    ///
    /// # Errors
    /// The first store, bus or timer failure.
    pub async fn run_until_idle(&self) -> Result<usize, RunnerError> {
        let mut drives = 0;
        loop {
            let mut ready = Vec::new();
            for event in self.bus.take_pending() {
                for run in self.accept(&event).await? {
                    if !ready.contains(&run) {
                        ready.push(run);
                    }
                }
            }
            for run in self.timer.take_due(self.clock.now()) {
                if !ready.contains(&run) {
                    ready.push(run);
                }
            }
            if ready.is_empty() {
                return Ok(drives);
            }
            for run in ready {
                self.drive(&run).await?;
                drives += 1;
            }
        }
    }
}
