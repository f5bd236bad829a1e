//! The sans-IO engine: given a function, a run's journal and `now`, it runs the workflow up to
//! its next decision and reports it as an [`Outcome`]. It performs no store, bus or timer I/O;
//! drivers (the [`Runner`](crate::Runner), the Lambda driver, the HTTP endpoint) do.
//!
//! An [`Execution`] is stateful so a driver can keep going in one invocation: after
//! [`Outcome::StepCompleted`] it commits the record, hands it back with
//! [`Execution::committed`], and calls [`Execution::next`] again; the workflow continues where
//! it stopped, with no replay. After a suspension (sleep, wait, plan) a driver resumes later with
//! a fresh `Execution` over the reloaded journal, which replays memoized steps in microseconds.

mod journal;

use crate::error::{EngineError, StepError};
use crate::event::EventPayload;
use crate::function::{Function, HandlerFuture};
use crate::id::{FastHash, HexId, RunId, StepId};
use crate::record::{Millis, StepKind, StepRecord, StepState};
use crate::step::{Step, millis, panic_message};
use futures::FutureExt;
use journal::JournalIndex;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

/// Locks the shared state; a panic while holding it (impossible in this crate's code) must not
/// wedge every later step, so poisoning is ignored.
pub(crate) fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Which discovered `run` steps the engine may execute itself.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum ExecutionPolicy {
    /// Execute every discovered `run` step, in code order, parallel groups included (the Runner
    /// and the Lambda driver).
    #[default]
    Eager,
    /// Execute a `run` step only when it is the only step discovered; plan otherwise (Inngest's
    /// immediate execution).
    Lone,
    /// Never execute: report every discovered step as planned.
    Plan,
    /// Execute exactly this step when the code reaches it (Inngest's targeted `stepId`).
    Target(StepId),
}

/// A step the code asked for that has no final record yet.
#[derive(Clone, Debug, PartialEq)]
pub struct Op {
    /// Hashed id.
    pub id: StepId,
    /// Name as written.
    pub name: String,
    /// Order of the call in the code.
    pub position: u32,
    /// What it needs.
    pub kind: OpKind,
    /// Not in the journal yet: persist [`Op::scheduled_record`] (for timers, waits and invokes)
    /// before suspending.
    pub new: bool,
    /// When the code asked for it.
    pub discovered_at: Millis,
    replay_required: bool,
}

/// What an [`Op`] needs from the driver.
#[derive(Clone, Debug, PartialEq)]
pub enum OpKind {
    /// A `run` step to execute.
    Run {
        /// Attempts made before.
        attempts_made: u32,
    },
    /// A `run` step waiting out its retry back-off.
    Retry {
        /// When it may be attempted again.
        until: Millis,
        /// Attempts made before.
        attempts_made: u32,
    },
    /// A sleep.
    Sleep {
        /// When it ends.
        until: Millis,
    },
    /// A wait for an event.
    WaitForEvent {
        /// Awaited event name.
        event: String,
        /// CEL condition over `event` and `async`.
        expression: Option<String>,
        /// When it gives up.
        timeout_at: Millis,
    },
    /// Events to send (ids already assigned).
    SendEvent {
        /// The events.
        events: Vec<EventPayload>,
    },
    /// Another function to start and wait for.
    Invoke {
        /// Its id.
        function_id: String,
        /// Its event data.
        data: Value,
        /// When the invoke step fails with a timeout.
        timeout_at: Millis,
    },
}

impl Op {
    /// The step kind of this op.
    pub fn step_kind(&self) -> StepKind {
        match self.kind {
            OpKind::Run { .. } | OpKind::Retry { .. } => StepKind::Run,
            OpKind::Sleep { .. } => StepKind::Sleep,
            OpKind::WaitForEvent { .. } => StepKind::WaitForEvent,
            OpKind::SendEvent { .. } => StepKind::SendEvent,
            OpKind::Invoke { .. } => StepKind::Invoke,
        }
    }

    /// When the run must be woken for this op, if it is time-bound.
    pub fn wake_at(&self) -> Option<Millis> {
        match &self.kind {
            OpKind::Retry { until, .. } | OpKind::Sleep { until } => Some(*until),
            OpKind::WaitForEvent { timeout_at, .. } | OpKind::Invoke { timeout_at, .. } => Some(*timeout_at),
            OpKind::Run { .. } | OpKind::SendEvent { .. } => None,
        }
    }

    /// What a record of this op keeps beside its state: the awaited event or the invoked call.
    fn detail(&self) -> Option<Value> {
        match &self.kind {
            OpKind::WaitForEvent { event, expression, .. } => Some(json!({"event": event, "if": expression})),
            OpKind::Invoke { function_id, data, .. } => Some(json!({"function_id": function_id, "data": data})),
            _ => None,
        }
    }

    /// The `Scheduled` record a driver persists for a new sleep, wait or invoke.
    pub fn scheduled_record(&self) -> Option<StepRecord> {
        if !matches!(self.kind, OpKind::Sleep { .. } | OpKind::WaitForEvent { .. } | OpKind::Invoke { .. }) {
            return None;
        }
        Some(StepRecord {
            id: self.id.clone(),
            name: self.name.clone(),
            kind: self.step_kind(),
            position: self.position,
            state: StepState::Scheduled { wake_at: self.wake_at()? },
            attempts: 0,
            started_at: self.discovered_at,
            ended_at: None,
            detail: self.detail(),
        })
    }

    /// The final record of this op with `output` (a sent event's ids, a received event, an
    /// invoked function's result).
    pub fn completed_record(&self, output: Value, now: Millis) -> StepRecord {
        self.final_record(StepState::Completed { output }, now)
    }

    /// The final record of this op failing with `error`.
    pub fn failed_record(&self, error: StepError, now: Millis) -> StepRecord {
        self.final_record(StepState::Failed { error }, now)
    }

    fn final_record(&self, state: StepState, now: Millis) -> StepRecord {
        StepRecord {
            id: self.id.clone(),
            name: self.name.clone(),
            kind: self.step_kind(),
            position: self.position,
            state,
            attempts: 1,
            started_at: self.discovered_at,
            ended_at: Some(now),
            detail: self.detail(),
        }
    }
}

/// What the workflow needs next.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The function returned this output.
    Completed(Value),
    /// A step finished (a `run` that succeeded, a sleep that ended, a wait that timed out):
    /// commit the record, hand it to [`Execution::committed`], call `next` again.
    StepCompleted(StepRecord),
    /// A `run` step failed. With `retry_at`, the record is `Retrying`: commit it and resume at
    /// that time with a fresh `Execution`. Without, it is final: commit it, hand it back and
    /// continue, as with `StepCompleted` (the code sees the error).
    StepFailed {
        /// The record to commit.
        record: StepRecord,
        /// When the next attempt may run.
        retry_at: Option<Millis>,
    },
    /// The only pending step is a sleep (or a retry back-off) until `until`.
    Sleeping {
        /// The op.
        op: Op,
        /// When to resume.
        until: Millis,
    },
    /// The only pending step waits for an event.
    Waiting {
        /// The op.
        op: Op,
    },
    /// Steps the driver must perform or schedule (events to send, functions to invoke, several
    /// parallel sleeps or waits, or runs the policy did not let the engine execute).
    Planned(Vec<Op>),
    /// The function failed outside any step (or let a step's error through).
    Failed {
        /// The error.
        error: StepError,
        /// When to retry the whole function; `None` when the failure is final.
        retry_at: Option<Millis>,
    },
}

/// State shared between the engine and the [`Step`] handle of one execution.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) run_id: RunId,
    pub(crate) now: Millis,
    pub(crate) default_retries: u32,
    /// The function's id and the events it declared it sends (`step.send_event` checks them).
    pub(crate) function_id: String,
    pub(crate) sends: Vec<String>,
    /// The run's records, then those committed since.
    journal: JournalIndex,
    name_counts: HashMap<String, u32, FastHash>,
    next_position: u32,
    ops: BTreeMap<u32, Op>,
    pub(crate) permitted: Option<StepId>,
    pub(crate) report: Option<StepRecord>,
    pub(crate) settled: HashMap<StepId, StepRecord, FastHash>,
    error: Option<EngineError>,
    pub(crate) mocks: HashMap<String, Result<Value, StepError>>,
    /// Match memoized steps by id only (Inngest's memo carries no kinds or positions).
    lenient: bool,
    /// Attempts already made of a step with no record (the executor's `ctx.attempt`).
    pub(crate) prior_attempts: u32,
    /// The 0-based attempt of the step executing now.
    pub(crate) current_attempt: u32,
}

impl Shared {
    pub(crate) fn is_replaying(&self) -> bool {
        self.journal.replaying() && self.ops.is_empty()
    }

    /// Records a step call: its id and position, and the journal's record of it if any.
    /// `None` when the call contradicts the journal (the error is kept for the engine).
    pub(crate) fn begin(&mut self, kind: StepKind, name: &str) -> Begun<'_> {
        let index = match self.name_counts.get_mut(name) {
            Some(count) => {
                *count += 1;
                *count - 1
            }
            None => {
                self.name_counts.insert(name.to_string(), 1);
                0
            }
        };
        // Compared with the journal on the stack: a memoized step allocates nothing.
        let hex = HexId::for_name(name, index);
        let position = self.next_position;
        self.next_position += 1;
        if self.error.is_some() {
            return Begun::Halt;
        }
        if let Some(slot) = self.journal.find(hex.as_str(), position) {
            let record = self.journal.get(slot);
            if !self.lenient && (record.kind != kind || record.position != position) {
                self.error = Some(mismatch(position, record, name, kind, &record.id));
                return Begun::Halt;
            }
            self.journal.visit(position);
            let record = self.journal.get(slot);
            if record.state.is_final() {
                return Begun::Memoized(record);
            }
            return Begun::Pending { id: record.id.clone(), position, existing: Some(record.clone()) };
        }
        let id = StepId::from_hashed(hex.as_str());
        if let Some(other) = self.journal.at(position).filter(|_| !self.lenient) {
            self.error = Some(mismatch(position, other, name, kind, &id));
            return Begun::Halt;
        }
        Begun::Pending { id, position, existing: None }
    }

    pub(crate) fn register(&mut self, id: StepId, name: &str, position: u32, kind: OpKind, new: bool) {
        // A step already scheduled or retrying started then, not when this pass found it again.
        let discovered_at =
            self.journal.find(id.as_str(), position).map_or(self.now, |slot| self.journal.get(slot).started_at);
        let op = Op { id, name: name.to_string(), position, kind, new, discovered_at, replay_required: false };
        self.ops.insert(position, op);
    }
}

/// What the journal says about a step call.
#[allow(clippy::large_enum_variant)] // Short-lived, on the stack, never stored.
pub(crate) enum Begun<'a> {
    /// A final record: decode it in place (no copy).
    Memoized(&'a StepRecord),
    /// No final record: the step must run, or wait for what it waits on.
    Pending { id: StepId, position: u32, existing: Option<StepRecord> },
    /// The call contradicts the journal; the engine reports the error.
    Halt,
}

fn mismatch(position: u32, recorded: &StepRecord, name: &str, kind: StepKind, id: &StepId) -> EngineError {
    EngineError::Mismatch {
        position,
        recorded_name: recorded.name.clone(),
        recorded_kind: recorded.kind.to_string(),
        recorded_id: recorded.id.clone(),
        found_name: name.to_string(),
        found_kind: kind.to_string(),
        found_id: id.clone(),
    }
}

/// One pass of a run over its journal; see the module docs.
pub struct Execution {
    shared: Arc<Mutex<Shared>>,
    future: Option<HandlerFuture>,
    policy: ExecutionPolicy,
    attempt: u32,
    max_attempts: u32,
    finished: Option<Result<Outcome, EngineError>>,
}

impl std::fmt::Debug for Execution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Execution").field("run_id", &lock(&self.shared).run_id).finish_non_exhaustive()
    }
}

impl Execution {
    /// Prepares `function` to run over `steps` (the run's journal) for the event `event`.
    /// `attempt` is the function-level attempt (0-based) from the run's head record.
    pub fn new(function: &Function, run_id: RunId, event: &EventPayload, steps: &[StepRecord], attempt: u32) -> Self {
        let journal = JournalIndex::new(steps);
        let shared = Arc::new(Mutex::new(Shared {
            run_id,
            now: 0,
            default_retries: function.retries(),
            function_id: function.id().to_string(),
            sends: function.sends().to_vec(),
            journal,
            name_counts: HashMap::default(),
            next_position: 0,
            ops: BTreeMap::new(),
            permitted: None,
            report: None,
            settled: HashMap::default(),
            error: None,
            mocks: HashMap::new(),
            lenient: false,
            prior_attempts: 0,
            current_attempt: 0,
        }));
        let future = function.call(event, Step::new(Arc::clone(&shared)));
        let future: HandlerFuture = Box::pin(AssertUnwindSafe(future).catch_unwind().map(|result| match result {
            Ok(result) => result,
            Err(panic) => Err(StepError::new(format!("the function panicked: {}", panic_message(&panic)))),
        }));
        Execution {
            shared,
            future: Some(future),
            policy: ExecutionPolicy::Eager,
            attempt,
            max_attempts: function.retries() + 1,
            finished: None,
        }
    }

    /// Matches memoized steps by id only, as Inngest does: for journals built from an Inngest
    /// memo, which records neither kinds nor positions (no determinism check beyond ids).
    pub fn lenient(self) -> Self {
        lock(&self.shared).lenient = true;
        self
    }

    /// Takes retries from an executor: `attempt` attempts were already made of the step to run
    /// (Inngest's `ctx.attempt`), out of `max_attempts`.
    pub fn attempts(mut self, attempt: u32, max_attempts: u32) -> Self {
        let mut shared = lock(&self.shared);
        shared.prior_attempts = attempt;
        shared.default_retries = max_attempts.saturating_sub(1);
        drop(shared);
        self.attempt = attempt;
        self.max_attempts = max_attempts.max(1);
        self
    }

    /// Sets which `run` steps the engine executes itself (default [`ExecutionPolicy::Eager`]).
    pub fn policy(mut self, policy: ExecutionPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Replaces the result of the step named `name` (every occurrence) without running it.
    #[cfg(feature = "testing")]
    pub fn mock(&mut self, name: &str, result: Result<Value, StepError>) {
        lock(&self.shared).mocks.insert(name.to_string(), result);
    }

    /// Runs the workflow up to its next decision at time `now`.
    ///
    /// # Errors
    /// [`EngineError`] when the code no longer matches the journal; the run should be failed
    /// with [`EngineError::to_step_error`] and nothing written for it.
    pub async fn next(&mut self, now: Millis) -> Result<Outcome, EngineError> {
        lock(&self.shared).now = now;
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// The driver committed `record` (its own, or the one a concurrent invocation committed
    /// first, which it adopts): the step's future resolves with it on the next `next`.
    pub fn committed(&mut self, record: StepRecord) {
        let mut shared = lock(&self.shared);
        let final_ = record.state.is_final();
        if let Some(op) = shared.ops.get_mut(&record.position) {
            match &record.state {
                _ if final_ => {}
                StepState::Retrying { retry_at, .. } => {
                    op.kind = OpKind::Retry { until: *retry_at, attempts_made: record.attempts };
                    op.replay_required = true;
                    op.new = false;
                }
                _ => op.new = false,
            }
        }
        if final_ {
            shared.ops.remove(&record.position);
        }
        shared.journal.visit(record.position);
        shared.journal.put(record.clone());
        shared.settled.insert(record.id.clone(), record);
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Outcome, EngineError>> {
        loop {
            let Some(future) = self.future.as_mut() else {
                return Poll::Ready(self.finished.clone().unwrap_or(Ok(Outcome::Planned(Vec::new()))));
            };
            let polled = future.as_mut().poll(cx);
            let mut shared = lock(&self.shared);
            if let Some(error) = shared.error.clone() {
                drop(shared);
                return Poll::Ready(self.finish(Err(error)));
            }
            if let Poll::Ready(result) = polled {
                let lenient = shared.lenient;
                let leftover = shared
                    .journal
                    .records()
                    .iter()
                    .filter(|record| !lenient && !shared.journal.visited(record.position))
                    .min_by_key(|record| record.position)
                    .map(|record| EngineError::StepRemoved {
                        position: record.position,
                        recorded_name: record.name.clone(),
                        recorded_kind: record.kind.to_string(),
                    });
                let now = shared.now;
                let run_id = shared.run_id.to_string();
                drop(shared);
                let outcome = match (leftover, result) {
                    (Some(error), _) => Err(error),
                    (None, Ok(output)) => Ok(Outcome::Completed(output)),
                    (None, Err(error)) => Ok(self.function_failed(error, now, &run_id)),
                };
                return Poll::Ready(self.finish(outcome));
            }
            if let Some(record) = shared.report.take() {
                shared.permitted = None;
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
            if shared.permitted.is_some() {
                // A step's code is running and will wake us.
                return Poll::Pending;
            }
            match pick(&shared, &self.policy) {
                Pick::Permit(id) => {
                    shared.permitted = Some(id);
                }
                Pick::Complete(record)
                    if record.state.is_final() && matches!(record.state, StepState::Failed { .. }) =>
                {
                    return Poll::Ready(Ok(Outcome::StepFailed { record, retry_at: None }));
                }
                Pick::Complete(record) => return Poll::Ready(Ok(Outcome::StepCompleted(record))),
                Pick::Suspend(outcome) => return Poll::Ready(Ok(outcome)),
                Pick::Nothing => return Poll::Pending,
            }
        }
    }

    fn function_failed(&self, error: StepError, now: Millis, run_id: &str) -> Outcome {
        let attempts_made = self.attempt + 1;
        let retry_at = (error.retriable && attempts_made < self.max_attempts)
            .then(|| now.saturating_add(millis(crate::backoff::retry_delay(&error, attempts_made, run_id))));
        Outcome::Failed { error, retry_at }
    }

    fn finish(&mut self, outcome: Result<Outcome, EngineError>) -> Result<Outcome, EngineError> {
        self.future = None;
        self.finished = Some(outcome.clone());
        outcome
    }
}

enum Pick {
    Permit(StepId),
    Complete(StepRecord),
    Suspend(Outcome),
    Nothing,
}

fn pick(shared: &Shared, policy: &ExecutionPolicy) -> Pick {
    if shared.ops.is_empty() {
        return Pick::Nothing;
    }
    let now = shared.now;
    let only_one = shared.ops.len() == 1;
    for op in shared.ops.values() {
        let runnable = match &op.kind {
            OpKind::Run { .. } => true,
            OpKind::Retry { until, .. } => !op.replay_required && *until <= now,
            _ => false,
        };
        if runnable {
            let allowed = match policy {
                ExecutionPolicy::Eager => true,
                ExecutionPolicy::Lone => only_one,
                ExecutionPolicy::Plan => false,
                ExecutionPolicy::Target(id) => id == &op.id,
            };
            if allowed {
                return Pick::Permit(op.id.clone());
            }
            continue;
        }
        if op.new {
            continue;
        }
        match &op.kind {
            OpKind::Sleep { until } if *until <= now => {
                return Pick::Complete(op.completed_record(Value::Null, now));
            }
            OpKind::WaitForEvent { timeout_at, .. } if *timeout_at <= now => {
                return Pick::Complete(op.completed_record(Value::Null, now));
            }
            OpKind::Invoke { timeout_at, .. } if *timeout_at <= now => {
                let error = StepError {
                    name: "InngestInvokeTimeoutError".into(),
                    ..StepError::non_retriable("Timed out waiting for invoked function to complete")
                };
                return Pick::Complete(op.failed_record(error, now));
            }
            _ => {}
        }
    }
    let ops: Vec<Op> = shared.ops.values().cloned().collect();
    if let [op] = ops.as_slice() {
        match op.kind {
            OpKind::Sleep { until } | OpKind::Retry { until, .. } => {
                return Pick::Suspend(Outcome::Sleeping { op: op.clone(), until });
            }
            OpKind::WaitForEvent { .. } => return Pick::Suspend(Outcome::Waiting { op: op.clone() }),
            _ => {}
        }
    }
    Pick::Suspend(Outcome::Planned(ops))
}
