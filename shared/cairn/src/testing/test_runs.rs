//! [`TestRuns`]: many events, many runs, on a manual clock: how a user unit-tests a function's
//! flow control (a throttle, a rate limit, a singleton, `cancel_on`) in milliseconds, through
//! the production [`Runner`] over an in-memory store, bus and timer.
#![allow(clippy::unwrap_used)] // Test support: the in-memory parts do not fail; a failure is a failed test.

use crate::bus::{MemoryBus, MemoryTimer};
use crate::clock::ManualClock;
use crate::event::EventPayload;
use crate::function::{Function, Registry};
use crate::id::{RunId, new_event_id};
use crate::record::{RunMeta, RunStatus};
use crate::runner::{Runner, RunnerConfig};
use crate::store::{MemoryStore, RunStore};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// Functions run as in production, with time in the test's hands: send events at given
/// seconds, move the clock, and read each run's status.
///
/// ```
/// use cairn::prelude::*;
/// use cairn::testing::TestRuns;
/// use cairn::RunStatus;
/// # cairn::testing::block_on(async {
/// let sync = Function::new("sync")
///     .on_event("app/sync")
///     .throttle(Throttle::new(2, "10s"))
///     .handler(|_: Event, step: Step| async move { step.run("fetch", || async { Ok(1) }).await })
///     .unwrap();
/// let runs = TestRuns::new([sync]);
/// let mut events = Vec::new();
/// for _ in 0..5 {
///     events.push(runs.send_at(0, "app/sync", json!({})).await);
/// }
/// // Two start at once, the others wait their turn: 5 s, 10 s and 15 s.
/// let status = |n: usize| runs.status("sync", &events[n]);
/// assert_eq!((status(1).await, status(2).await), (RunStatus::Completed, RunStatus::Queued));
/// runs.at(5).await;
/// assert_eq!((status(2).await, status(3).await), (RunStatus::Completed, RunStatus::Queued));
/// runs.at(15).await;
/// assert_eq!(status(4).await, RunStatus::Completed);
/// # });
/// ```
#[derive(Debug)]
pub struct TestRuns<S: RunStore = MemoryStore> {
    runner: Runner<S, MemoryBus, MemoryTimer>,
    clock: ManualClock,
}

impl TestRuns<MemoryStore> {
    /// `functions` over an in-memory store, the clock at 0.
    ///
    /// # Panics
    /// When two functions share an id.
    pub fn new(functions: impl IntoIterator<Item = Function>) -> Self {
        Self::with_store(MemoryStore::new(), functions, ManualClock::at(0))
    }
}

impl<S: RunStore> TestRuns<S> {
    /// `functions` over `store`, on `clock` (a step may advance it to "take" time). Sleeps
    /// always go through the timer, so each is a moment the test controls.
    ///
    /// # Panics
    /// When two functions share an id.
    pub fn with_store(store: S, functions: impl IntoIterator<Item = Function>, clock: ManualClock) -> Self {
        let registry = Registry::new(functions).unwrap_or_else(|error| panic!("{error}"));
        let runner = Runner::new(registry, store, MemoryBus::new(), MemoryTimer::new())
            .with_clock(Arc::new(clock.clone()))
            .with_config(RunnerConfig::default().sleep_threshold(Duration::ZERO));
        TestRuns { runner, clock }
    }

    /// Moves the clock to `secs` (wakes what is due on the way there, in order), sends `name`
    /// with `data`, drives everything until idle, and returns the event's id.
    ///
    /// # Panics
    /// When the event is invalid, naming the problem.
    pub async fn send_at(&self, secs: i64, name: &str, data: Value) -> String {
        self.send_event_at_ms(secs * 1_000, EventPayload::new(name, data)).await
    }

    /// Like [`TestRuns::send_at`], at `ms` milliseconds, with the event as given (an id and
    /// `ts` it lacks are filled in).
    ///
    /// # Panics
    /// When the event is invalid, naming the problem.
    pub async fn send_event_at_ms(&self, ms: i64, event: EventPayload) -> String {
        self.at_ms(ms).await;
        let mut event = event;
        let id = event.id.get_or_insert_with(|| new_event_id(self.clock.now_ms())).clone();
        self.runner.send(event).await.unwrap_or_else(|error| panic!("{error}"));
        self.runner.run_until_idle().await.unwrap();
        id
    }

    /// Moves the clock to `secs`, waking what is due at each wake-up time on the way (a
    /// throttled run starts at its exact turn), and drives everything until idle.
    pub async fn at(&self, secs: i64) {
        self.at_ms(secs * 1_000).await;
    }

    /// Like [`TestRuns::at`], to `target` milliseconds.
    pub async fn at_ms(&self, target: i64) {
        // Bounded: a function that keeps re-arming wake-ups at the same instant is a bug to see.
        for _ in 0..100_000 {
            let Some(due) = self.runner.timer().next_due().filter(|due| *due <= target) else { break };
            self.clock.set(due.max(self.clock.now_ms()));
            self.runner.run_until_idle().await.unwrap();
        }
        self.clock.set(target.max(self.clock.now_ms()));
        self.runner.run_until_idle().await.unwrap();
    }

    /// The head of `function_id`'s run for `event_id`.
    ///
    /// # Panics
    /// When there is no such run.
    pub async fn run(&self, function_id: &str, event_id: &str) -> RunMeta {
        let run = RunId::for_event(function_id, event_id);
        let journal = self.runner.store().load(&run).await.unwrap();
        journal.unwrap_or_else(|| panic!("no run of `{function_id}` for event `{event_id}`")).meta
    }

    /// The status of `function_id`'s run for `event_id`.
    ///
    /// # Panics
    /// When there is no such run.
    pub async fn status(&self, function_id: &str, event_id: &str) -> RunStatus {
        self.run(function_id, event_id).await.status
    }

    /// The names of the steps `function_id`'s run for `event_id` recorded, in order.
    ///
    /// # Panics
    /// When there is no such run.
    pub async fn steps(&self, function_id: &str, event_id: &str) -> Vec<String> {
        let run = RunId::for_event(function_id, event_id);
        let journal = self.runner.store().load(&run).await.unwrap();
        journal.map(|journal| journal.steps.iter().map(|step| step.name.clone()).collect()).unwrap_or_default()
    }

    /// Every event sent (the functions' own and the system events), in order.
    pub fn sent_events(&self) -> Vec<EventPayload> {
        self.runner.bus().sent()
    }

    /// The runner, for what the helpers above do not cover.
    pub fn runner(&self) -> &Runner<S, MemoryBus, MemoryTimer> {
        &self.runner
    }

    /// The clock.
    pub fn clock(&self) -> &ManualClock {
        &self.clock
    }
}
