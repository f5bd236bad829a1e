//! The sans-IO engine: given a function, a run's journal and `now`, it runs the workflow up to
//! its next decision and reports it as an [`Outcome`]. It performs no store, bus or timer I/O;
//! drivers (the [`Runner`](crate::Runner), the Lambda driver, the HTTP endpoint) do.
//!
//! An [`Execution`] is stateful so a driver can keep going in one invocation: after
//! [`Outcome::StepCompleted`] it commits the record, hands it back with
//! [`Execution::committed`], and calls [`Execution::next`] again; the workflow continues where
//! it stopped, with no replay. After a suspension (sleep, wait, plan) a driver resumes later with
//! a fresh `Execution` over the reloaded journal, which replays memoized steps in microseconds
//! (the cost of a step is the same at step 10,000 as at step 100).
//!
//! # One execution
//!
//! ```text
//!   Execution::new(function, run, event, journal, attempt)
//!        |
//!        v
//!   next(now) --- replays memoized steps, runs the code to its next decision
//!        |
//!        +--> StepCompleted(record) ----------------+
//!        +--> StepFailed { record, retry_at: None } +--> commit, committed(record), next(now)
//!        |                                               (the code goes on in this execution)
//!        +--> StepFailed { record, retry_at: Some(t) } --> commit; resume at t (fresh Execution)
//!        +--> Sleeping { op, until } ----------------> persist op's scheduled record; resume at until
//!        +--> Waiting { op } ------------------------> persist it, register the wait; resume on
//!        |                                               the event or at the timeout
//!        +--> Planned(ops) --------------------------> perform / schedule each op; resume
//!        +--> Completed(output)  (final)
//!        +--> Failed { error, retry_at: Some(t) } ---> count the attempt; resume at t
//!        +--> Failed { error, retry_at: None }  (final)
//!        +--> Err(EngineError) --------------------> the code no longer matches the journal:
//!                                                      fail the run, write no step
//! ```
//!
//! # What a driver must do for each outcome
//!
//! | Outcome | The driver |
//! |---|---|
//! | `StepCompleted(record)` | commits `record` (adopting a concurrent winner's), hands it to [`Execution::committed`], calls `next` again |
//! | `StepFailed { retry_at: None, .. }` | the same: the code sees the step's error |
//! | `StepFailed { retry_at: Some(t), .. }` | commits the `Retrying` record; resumes the run at `t` with a fresh `Execution` (if the commit returned a final record instead, hands that back and goes on) |
//! | `Sleeping { op, until }` | persists [`Op::scheduled_record`] if `op.new`; sleeps in process or arms a timer for `until` |
//! | `Waiting { op }` | persists the scheduled record, registers the wait; resumes on a matching event or at [`Op::wake_at`] |
//! | `Planned(ops)` | performs what it can now (send events, start invokes, persist scheduled records), hands committed records back and calls `next`, or suspends until the earliest [`Op::wake_at`] or an event |
//! | `Completed(output)` | finishes the run with `output` |
//! | `Failed { retry_at: Some(t), .. }` | increments the run's attempt; resumes at `t` with a fresh `Execution` |
//! | `Failed { retry_at: None, .. }` | fails the run with the error |
//! | `Err(EngineError)` | fails the run with [`EngineError::to_step_error`]; writes nothing for it |
//!
//! Retries are decided in one place (`backoff::RetryPolicy`), for steps and for functions.

mod outcome;
mod pick;

pub use crate::op::{Op, OpKind};
pub use outcome::{ExecutionPolicy, Outcome};

use crate::error::{EngineError, StepError, panic_message};
use crate::event::EventPayload;
use crate::function::{Function, HandlerFuture};
use crate::id::RunId;
use crate::record::{Millis, StepRecord, StepState};
use crate::state::{Declared, ExecutionState, JournalIndex, SharedState};
use crate::step::Step;
use futures::FutureExt;
use pick::{Pick, pick};
#[cfg(feature = "testing")]
use serde_json::Value;
use std::panic::AssertUnwindSafe;
use std::task::{Context, Poll};

/// One pass of a run over its journal; see the module docs.
pub struct Execution {
    state: SharedState,
    future: Option<HandlerFuture>,
    policy: ExecutionPolicy,
    attempt: u32,
    finished: Option<Result<Outcome, EngineError>>,
}

impl std::fmt::Debug for Execution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Execution").field("run_id", self.state.lock().run_id()).finish_non_exhaustive()
    }
}

impl Execution {
    /// Prepares `function` to run over `steps` (the run's journal) for the event `event`.
    /// `attempt` is the function-level attempt (0-based) from the run's head record.
    pub fn new(function: &Function, run_id: RunId, event: &EventPayload, steps: &[StepRecord], attempt: u32) -> Self {
        Self::start(function, run_id, event, JournalIndex::new(steps), attempt)
    }

    /// Like [`Execution::new`], taking the journal a driver loaded instead of copying it.
    pub fn from_journal(
        function: &Function,
        run_id: RunId,
        event: &EventPayload,
        steps: Vec<StepRecord>,
        attempt: u32,
    ) -> Self {
        Self::start(function, run_id, event, JournalIndex::from_vec(steps), attempt)
    }

    fn start(function: &Function, run_id: RunId, event: &EventPayload, journal: JournalIndex, attempt: u32) -> Self {
        let declared = Declared {
            function_id: function.id().to_string(),
            sends: function.sends().to_vec(),
            awaits: function.awaits().to_vec(),
            invokes: function.invokes().to_vec(),
            retries: function.retries(),
        };
        let state = SharedState::new(ExecutionState::new(run_id, declared, journal));
        state.lock().set_events(vec![event.clone()]);
        let future = function.call(event, Step::new(state.clone()));
        let future: HandlerFuture = Box::pin(AssertUnwindSafe(future).catch_unwind().map(|result| match result {
            Ok(result) => result,
            Err(panic) => Err(StepError::new(format!("the function panicked: {}", panic_message(&panic)))),
        }));
        Execution { state, future: Some(future), policy: ExecutionPolicy::Eager, attempt, finished: None }
    }

    /// Hands the run every event it was started with, oldest first, when more than its
    /// trigger (a debounce window's with `all_events`): what [`Step::events`] returns.
    pub fn with_events(self, events: Vec<EventPayload>) -> Self {
        if !events.is_empty() {
            self.state.lock().set_events(events);
        }
        self
    }

    /// Matches memoized steps by id only, as Inngest does: for journals built from an Inngest
    /// memo, which records neither kinds nor positions (no determinism check beyond ids).
    pub fn lenient(self) -> Self {
        self.state.lock().set_lenient();
        self
    }

    /// Takes retries from an executor: `attempt` attempts were already made of the step to run
    /// (Inngest's `ctx.attempt`), out of `max_attempts`.
    pub fn attempts(mut self, attempt: u32, max_attempts: u32) -> Self {
        self.state.lock().set_attempts(attempt, max_attempts.saturating_sub(1));
        self.attempt = attempt;
        self
    }

    /// Changes the policy from the next call of `next` on (a drive past its finish timeout
    /// plans instead of executing).
    pub fn set_policy(&mut self, policy: ExecutionPolicy) {
        self.policy = policy;
    }

    /// Sets which `run` steps the engine executes itself (default [`ExecutionPolicy::Eager`]).
    pub fn policy(mut self, policy: ExecutionPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Replaces the result of the step named `name` (every occurrence) without running it.
    #[cfg(feature = "testing")]
    pub fn mock(&mut self, name: &str, result: Result<Value, StepError>) {
        self.state.lock().mock(name, result);
    }

    /// Runs the workflow up to its next decision at time `now`.
    ///
    /// # Errors
    /// [`EngineError`] when the code no longer matches the journal; the run should be failed
    /// with [`EngineError::to_step_error`] and nothing written for it.
    pub async fn next(&mut self, now: Millis) -> Result<Outcome, EngineError> {
        self.state.lock().set_now(now);
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// The driver committed `record` (its own, or the one a concurrent invocation committed
    /// first, which it adopts): the step's future resolves with it on the next `next`.
    pub fn committed(&mut self, record: StepRecord) {
        self.state.lock().committed(record);
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Outcome, EngineError>> {
        loop {
            let Some(future) = self.future.as_mut() else {
                return Poll::Ready(self.finished.clone().unwrap_or(Ok(Outcome::Planned(Vec::new()))));
            };
            let polled = future.as_mut().poll(cx);
            let mut state = self.state.lock();
            if let Some(error) = state.error().cloned() {
                drop(state);
                return Poll::Ready(self.finish(Err(error)));
            }
            if let Poll::Ready(result) = polled {
                let outcome = match (state.leftover(), result) {
                    (Some(error), _) => Err(error),
                    (None, Ok(output)) => Ok(Outcome::Completed(output)),
                    (None, Err(error)) => {
                        let retry_at = state.function_retry(&error, self.attempt + 1, state.now());
                        Ok(Outcome::Failed { error, retry_at })
                    }
                };
                drop(state);
                return Poll::Ready(self.finish(outcome));
            }
            if let Some(record) = state.take_report() {
                let retry_at = match &record.state {
                    StepState::Retrying { retry_at, .. } => Some(*retry_at),
                    _ => None,
                };
                let outcome = match &record.state {
                    StepState::Completed { .. } => Outcome::StepCompleted(record),
                    _ => Outcome::StepFailed { record, retry_at },
                };
                return Poll::Ready(Ok(outcome));
            }
            if state.is_running() {
                // A step's code is running and will wake us.
                return Poll::Pending;
            }
            match pick(&state, &self.policy) {
                Pick::Permit(id) => state.permit(id),
                Pick::Complete(record) if matches!(record.state, StepState::Failed { .. }) => {
                    return Poll::Ready(Ok(Outcome::StepFailed { record, retry_at: None }));
                }
                Pick::Complete(record) => return Poll::Ready(Ok(Outcome::StepCompleted(record))),
                Pick::Suspend(outcome) => return Poll::Ready(Ok(outcome)),
                Pick::Nothing => return Poll::Pending,
            }
        }
    }

    fn finish(&mut self, outcome: Result<Outcome, EngineError>) -> Result<Outcome, EngineError> {
        self.future = None;
        self.finished = Some(outcome.clone());
        outcome
    }
}
