//! [`TestRun`]: one run of a function, driven by the [`Runner`] over a [`MemoryStore`], an
//! in-memory bus and timer, and a [`ManualClock`].

use crate::bus::{MemoryBus, MemoryTimer};
use crate::clock::{Clock, ManualClock};
use crate::engine::Outcome;
use crate::error::{EngineError, StepError};
use crate::event::{CANCELLED_EVENT, EventData, EventPayload, FAILED_EVENT, FINISHED_EVENT, INVOKED_EVENT};
use crate::function::{Function, Registry, Trigger};
use crate::id::{RunId, new_event_id};
use crate::lifecycle::{RunEnd, invoked_function, invoked_run, system_events};
use crate::record::{RunMeta, RunStatus, StepRecord};
use crate::runner::{Drive, Runner, RunnerConfig};
use crate::store::{MemoryStore, RunStore};
use futures::FutureExt;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// A run of one function in a unit test: no server, no real time.
///
/// It is the production [`Runner`] underneath, over an in-memory store, bus and timer and a
/// manual clock, stepped one decision at a time: steps are committed, waits registered and
/// matched, invokes sent and answered, retries scheduled and runs ended by the same code (and
/// the same lifecycle) as in Lambda, so a unit test and production cannot disagree. Each
/// [`TestRun::next`] replays the journal, as every invocation in production does.
///
/// ```
/// use cairn::prelude::*;
/// use cairn::testing::TestRun;
/// use cairn::Outcome;
/// use std::time::Duration;
///
/// # cairn::testing::block_on(async {
/// let function = Function::new("hello").on_event("app/my.event")
///     .handler(|_: Event, step: Step| async move {
///         let out: serde_json::Value = step.run("step-name", || async { Ok(json!({"success": true})) }).await?;
///         step.sleep("wait", "1h").await?;
///         Ok(out)
///     }).unwrap();
/// let mut run = TestRun::new(function).event("app/my.event", json!({}));
/// assert!(matches!(run.next().await.unwrap(), Outcome::StepCompleted(_)));
/// assert!(matches!(run.next().await.unwrap(), Outcome::Sleeping { .. }));
/// run.clock().advance(Duration::from_secs(3600));
/// assert_eq!(run.result().await.unwrap(), json!({"success": true}));
/// # });
/// ```
#[derive(Debug)]
pub struct TestRun {
    runner: Runner<MemoryStore, MemoryBus, MemoryTimer>,
    function_id: String,
    run_id: RunId,
    event: EventPayload,
    clock: ManualClock,
    created: bool,
    invoke_results: HashMap<String, Result<Value, StepError>>,
    sent: Vec<EventPayload>,
    last: Option<Outcome>,
    finished: Option<Result<Value, StepError>>,
}

/// The in-memory parts answer at once; a future of theirs that does not is a bug in them.
fn at_once<F: Future>(future: F) -> F::Output {
    future.now_or_never().expect("the in-memory store, bus and timer answer at once")
}

impl TestRun {
    /// A run of `function`, triggered by its first event trigger with empty data (set the
    /// event with [`TestRun::event`]).
    pub fn new(function: Function) -> Self {
        let name = function
            .triggers()
            .iter()
            .find_map(|trigger| match trigger {
                Trigger::Event { name, .. } => Some(name.clone()),
                Trigger::Cron(_) => None,
            })
            .unwrap_or_else(|| crate::event::SCHEDULED_EVENT.to_string());
        let clock = ManualClock::new();
        let event = EventPayload::new(name, json!({})).with_id("test-event").with_ts(clock.now());
        let function_id = function.id().to_string();
        let run_id = RunId::for_event(&function_id, "test-event");
        let registry = Registry::new([function]).expect("a single function cannot collide with another");
        // Sleeps and back-offs always go through the timer, so each is a decision the test sees.
        let config = RunnerConfig::default().sleep_threshold(Duration::ZERO).owner("test-run");
        let runner = Runner::new(registry, MemoryStore::new(), MemoryBus::new(), MemoryTimer::new())
            .with_clock(Arc::new(clock.clone()))
            .with_config(config);
        TestRun {
            runner,
            function_id,
            run_id,
            event,
            clock,
            created: false,
            invoke_results: HashMap::new(),
            sent: Vec::new(),
            last: None,
            finished: None,
        }
    }

    /// Sets the triggering event.
    pub fn event(mut self, name: &str, data: Value) -> Self {
        self.event = EventPayload::new(name, data).with_id("test-event").with_ts(self.clock.now());
        self
    }

    /// Sets a typed triggering event.
    ///
    /// # Panics
    /// When `data` does not serialize.
    pub fn typed_event<E: EventData>(self, data: &E) -> Self {
        let value = serde_json::to_value(data).expect("event data serializes");
        self.event(E::NAME, value)
    }

    /// Makes the `run` step `name` return `output` without executing its code.
    pub fn mock_step(mut self, name: &str, output: Value) -> Self {
        self.runner.step_mocks.insert(name.to_string(), Ok(output));
        self
    }

    /// Makes the `run` step `name` fail with `error` without executing its code.
    pub fn mock_step_error(mut self, name: &str, error: StepError) -> Self {
        self.runner.step_mocks.insert(name.to_string(), Err(error));
        self
    }

    /// Makes the `invoke` step `name` return `result`, answered as the invoked run's
    /// `inngest/function.finished` event would (otherwise it waits until its timeout).
    pub fn mock_invoke(mut self, name: &str, result: Result<Value, StepError>) -> Self {
        self.invoke_results.insert(name.to_string(), result);
        self
    }

    /// The run's clock: advance it past a sleep, a back-off or a timeout.
    pub fn clock(&self) -> &ManualClock {
        &self.clock
    }

    /// The journal so far, in position order.
    pub fn steps(&self) -> Vec<StepRecord> {
        at_once(self.runner.store().load(&self.run_id))
            .expect("the in-memory store does not fail")
            .map(|journal| journal.steps)
            .unwrap_or_default()
    }

    /// Events the run sent with `send_event` (not the system events Cairn sends for it).
    pub fn sent_events(&self) -> &[EventPayload] {
        &self.sent
    }

    /// Delivers `event` as the bus would (an id and timestamp are added if missing); `true` if
    /// it resumed one of this run's `wait_for_event`s. The Runner's rules apply: the `if`
    /// expression, an event that already resumed a wait never resumes another, and an event
    /// that matches no wait is kept for the lookback (a wait the run begins within a minute
    /// still receives it).
    ///
    /// # Panics
    /// When the event is invalid (no name, data not an object), naming the problem.
    pub fn send(&mut self, mut event: EventPayload) -> bool {
        self.create_run();
        let now = self.clock.now();
        event.id.get_or_insert_with(|| new_event_id(now));
        event.ts.get_or_insert(now);
        let accepted = at_once(self.runner.accept_detailed(&event)).unwrap_or_else(|error| panic!("{error}"));
        // A delivery that only started runs (this function's trigger, sent again) resumed nothing.
        accepted.runs.contains(&self.run_id) && !accepted.started.iter().any(|(run, _)| *run == self.run_id)
    }

    /// Delivers the signal `signal` with `data` ([`send_signal`](crate::send_signal)); `true`
    /// if it resumed this run's `wait_for_signal`.
    pub fn signal(&mut self, signal: &str, data: Value) -> bool {
        self.send(crate::event::signal(signal, data))
    }

    /// Creates the run in the store (once), as the first delivery of its event would: through
    /// the Runner's admission, so its flow-control claims are made as in production.
    fn create_run(&mut self) {
        if std::mem::replace(&mut self.created, true) {
            return;
        }
        let now = self.clock.now();
        let meta = RunMeta::new(self.run_id.clone(), &self.function_id, self.event.clone(), now);
        let function = self.runner.registry().get(&self.function_id).expect("the registry holds the function").clone();
        at_once(self.runner.admit(&function, meta)).expect("the in-memory store does not fail");
    }

    /// Runs to the next decision and acts on it as the Runner does in production: commits
    /// steps, sends events, registers sleeps and waits, schedules retries, ends the run.
    ///
    /// # Errors
    /// [`EngineError`] when the code does not match the journal (the run then fails).
    ///
    /// # Panics
    /// If the in-memory parts fail, which they do not.
    pub async fn next(&mut self) -> Result<Outcome, EngineError> {
        if let Some(finished) = &self.finished {
            return Ok(match finished {
                Ok(output) => Outcome::Completed(output.clone()),
                Err(error) => Outcome::Failed { error: error.clone(), retry_at: None },
            });
        }
        self.create_run();
        let (drive, decision) =
            self.runner.drive_one_decision(&self.run_id).await.unwrap_or_else(|error| panic!("{error}"));
        self.deliver_sent().await;
        match drive {
            Drive::Completed(output) => self.finished = Some(Ok(output)),
            Drive::Failed(error) => self.finished = Some(Err(error)),
            _ => {}
        }
        let outcome = match decision {
            Some(Err(error)) => return Err(error),
            Some(Ok(outcome)) => outcome,
            // No decision: the run is backing off after a failed attempt; the last one stands.
            None => self.last.clone().expect("a run backs off only after a decision"),
        };
        self.last = Some(outcome.clone());
        Ok(outcome)
    }

    /// Takes what the run sent: its own events are kept for [`TestRun::sent_events`], and an
    /// invoke with a mocked result is answered as the invoked run's end would answer it.
    async fn deliver_sent(&mut self) {
        for event in self.runner.bus().take_pending() {
            match event.name.as_str() {
                INVOKED_EVENT => self.answer_invoke(&event).await,
                FINISHED_EVENT | FAILED_EVENT | CANCELLED_EVENT => {}
                _ => self.sent.push(event),
            }
        }
    }

    async fn answer_invoke(&mut self, invoked: &EventPayload) {
        let Some((function_id, invoked_by)) = invoked_function(invoked) else { return };
        let Some(result) = self
            .steps()
            .iter()
            .find(|record| record.id == invoked_by.step_id)
            .and_then(|record| self.invoke_results.get(&record.name))
            .cloned()
        else {
            return; // not mocked: the invoke waits until its timeout
        };
        let child = invoked_run(&function_id, invoked_by, invoked, self.clock.now());
        let now = self.clock.now();
        for event in system_events(&child, &RunEnd::from(result), now) {
            if event.name == FINISHED_EVENT {
                self.runner.accept(&event).await.unwrap_or_else(|error| panic!("{error}"));
            }
        }
    }

    /// Runs to the end and returns the output or the final error, driving the run as the
    /// Runner does in production (steps run back to back in one drive) and jumping the clock
    /// to each wake-up the run arms: sleeps, back-offs and timeouts pass instantly, and a wait
    /// with no event sent times out.
    ///
    /// # Errors
    /// The run's final error (a determinism mismatch becomes a `DeterminismError`).
    ///
    /// # Panics
    /// After 100,000 drives, which only a workflow that never ends reaches.
    pub async fn result(&mut self) -> Result<Value, StepError> {
        for _ in 0..100_000 {
            if let Some(finished) = &self.finished {
                return finished.clone();
            }
            self.create_run();
            let drive = self.runner.drive(&self.run_id).await.unwrap_or_else(|error| panic!("{error}"));
            self.deliver_sent().await;
            match drive {
                Drive::Completed(output) => self.finished = Some(Ok(output)),
                Drive::Failed(error) => self.finished = Some(Err(error)),
                Drive::Suspended { .. } | Drive::Continued | Drive::Busy => {
                    let timer = self.runner.timer();
                    // Every wait and invoke has a timeout, so a suspended run always has a wake-up.
                    let Some(at) = timer.next_due() else {
                        panic!("TestRun::result: run `{}` is suspended with no wake-up", self.run_id);
                    };
                    self.clock.set(at);
                    timer.take_due(self.clock.now());
                }
                Drive::AlreadyFinished(RunStatus::Cancelled) => {
                    // A timeout or `cancel_on` ended it: the result is the cancellation.
                    let head =
                        at_once(self.runner.store().load(&self.run_id)).ok().flatten().map(|journal| journal.meta);
                    let error = head
                        .and_then(|meta| meta.error)
                        .unwrap_or_else(|| StepError::non_retriable(crate::lifecycle::CANCELLED_MESSAGE));
                    self.finished = Some(Err(error));
                }
                Drive::AlreadyFinished(status) => {
                    panic!("TestRun::result: run `{}` ended {status} outside the test", self.run_id)
                }
                Drive::NotRegistered(function) => panic!("TestRun::result: function `{function}` is not registered"),
            }
        }
        panic!("TestRun::result: the run was driven 100000 times without finishing");
    }
}
