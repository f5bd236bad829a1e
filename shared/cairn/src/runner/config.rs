//! How a [`Runner`](super::Runner) spends an invocation: its budget, sleep threshold, lease,
//! retention and wait lookback.

use crate::lifecycle::transition;
use crate::step::millis;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How a [`Runner`] spends an invocation.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunnerConfig {
    /// Sleeps and back-offs up to this long (and within the budget) happen in process; longer
    /// ones hand over to the [`Timer`]. Default 5 s.
    pub sleep_threshold: Duration,
    /// How long one [`Runner::drive`] may keep executing before it checkpoints and continues in
    /// a fresh call. Default 10 min (under Lambda's 15-minute limit).
    pub budget: Duration,
    /// How long a drive's hold on a run lasts without renewal: a live drive renews it between
    /// steps and every third of it while a step runs, so this is how long a crashed
    /// invocation blocks others before the reconciler resumes its run. Default 60 s
    /// (`CAIRN_LEASE_SECS` in the Lambda driver).
    pub lease: Duration,
    /// This runner's lease owner id.
    pub owner: String,
    /// Finished runs are kept this long (the TTL written to `expires_at`). Default 7 days.
    pub retention: Duration,
    /// A `wait_for_event` also matches events received up to this long before it was
    /// registered (so an event racing the wait is not missed). Default 60 s; zero turns the
    /// lookback, and the event log it needs, off.
    pub wait_lookback: Duration,
}

impl RunnerConfig {
    /// The lease and retention lengths the lifecycle's transitions and [`RunControl`] need.
    pub fn durations(&self) -> transition::Durations {
        transition::Durations { lease: millis(self.lease), retention: millis(self.retention) }
    }
}

impl Default for RunnerConfig {
    fn default() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let budget = Duration::from_secs(600);
        RunnerConfig {
            sleep_threshold: Duration::from_secs(5),
            budget,
            lease: Duration::from_secs(60),
            owner: format!("runner-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)),
            retention: Duration::from_secs(7 * 86_400),
            wait_lookback: Duration::from_secs(60),
        }
    }
}

impl RunnerConfig {
    /// Sets [`RunnerConfig::sleep_threshold`].
    pub fn sleep_threshold(mut self, threshold: Duration) -> Self {
        self.sleep_threshold = threshold;
        self
    }

    /// Sets [`RunnerConfig::budget`].
    pub fn budget(mut self, budget: Duration) -> Self {
        self.budget = budget;
        self
    }

    /// Sets [`RunnerConfig::wait_lookback`].
    pub fn wait_lookback(mut self, lookback: Duration) -> Self {
        self.wait_lookback = lookback;
        self
    }

    /// Sets [`RunnerConfig::lease`] (at least one second).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_secs(1));
        self
    }

    /// Sets [`RunnerConfig::retention`].
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Sets [`RunnerConfig::owner`].
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = owner.into();
        self
    }
}
