//! [`ExecutionState`]: what one execution's engine and its [`Step`](crate::Step) handle share,
//! and the whole interface between them.
//!
//! The step tools (`step/`) see a step call's side of it: [`ExecutionState::begin`] a call
//! (memoized, pending, or contradicting the journal), [`ExecutionState::register`] what a
//! pending step needs, wait until [`ExecutionState::is_permitted`] to execute a `run`, then
//! [`ExecutionState::report`] the attempt's record and wait for
//! [`ExecutionState::take_settled`] to hand back the record the driver committed.
//!
//! The engine (`engine/`) sees the other side: it sets the time, takes a reported record
//! ([`ExecutionState::take_report`]), permits a `run` ([`ExecutionState::permit`]), reads the
//! pending [`Op`]s, and hands committed records back ([`ExecutionState::committed`]).
//!
//! Neither side decides retries: [`ExecutionState::attempt_record`] and
//! [`ExecutionState::function_retry`] both ask the one [`RetryPolicy`].

mod journal;

pub(crate) use journal::JournalIndex;

use crate::backoff::{Backoff, RetryPolicy};
use crate::error::{EngineError, StepError};
use crate::event::EventPayload;
use crate::id::{FastHash, HexId, RunId, StepId};
use crate::op::{Op, OpKind};
use crate::record::{Millis, StepKind, StepRecord, StepState};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

/// The state of one execution, shared by its engine and its `Step` handles. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct SharedState(Arc<Mutex<ExecutionState>>);

impl SharedState {
    pub(crate) fn new(state: ExecutionState) -> Self {
        SharedState(Arc::new(Mutex::new(state)))
    }

    /// Locks the state; a panic while holding it (impossible in this crate's code) must not
    /// wedge every later step, so poisoning is ignored.
    pub(crate) fn lock(&self) -> MutexGuard<'_, ExecutionState> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What the function being executed declares, as the state needs it.
#[derive(Debug)]
pub(crate) struct Declared {
    /// The function's id.
    pub(crate) function_id: String,
    /// The events it declared it sends (`step.send_event` checks them).
    pub(crate) sends: Vec<String>,
    /// The events it declared it waits for (`step.wait_for_event` checks them).
    pub(crate) awaits: Vec<String>,
    /// The functions it declared it invokes (`step.invoke` checks them).
    pub(crate) invokes: Vec<String>,
    /// Retries after the first attempt, for steps without their own and for the function.
    pub(crate) retries: u32,
}

/// One execution's state; see the module docs.
#[derive(Debug)]
pub(crate) struct ExecutionState {
    run_id: RunId,
    now: Millis,
    declared: Declared,
    /// The run's records, then those committed since.
    journal: JournalIndex,
    name_counts: HashMap<String, u32, FastHash>,
    next_position: u32,
    ops: BTreeMap<u32, Op>,
    permitted: Option<StepId>,
    report: Option<StepRecord>,
    settled: HashMap<StepId, StepRecord, FastHash>,
    error: Option<EngineError>,
    mocks: HashMap<String, Result<Value, StepError>>,
    /// Match memoized steps by id only (Inngest's memo carries no kinds or positions).
    lenient: bool,
    /// Attempts already made of a step with no record (the executor's `ctx.attempt`).
    prior_attempts: u32,
    /// The 0-based attempt of the step executing now.
    current_attempt: u32,
    /// Every event the run was started with: its trigger, or a debounce window's.
    events: Vec<EventPayload>,
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

/// One finished attempt of a `run` step, before the retry policy has judged it.
#[derive(Debug)]
pub(crate) struct Attempt<'a> {
    pub(crate) id: &'a StepId,
    pub(crate) name: &'a str,
    pub(crate) position: u32,
    /// When the step's first attempt started.
    pub(crate) started_at: Millis,
    /// 1-based.
    pub(crate) number: u32,
    /// The step's own retries ([`StepOptions::retries`](crate::StepOptions::retries)), if set.
    pub(crate) retries: Option<u32>,
    /// The step's own back-off ([`StepOptions::backoff`](crate::StepOptions::backoff)), if set.
    pub(crate) backoff: Option<&'a Backoff>,
    /// When the attempt ran.
    pub(crate) now: Millis,
}

impl ExecutionState {
    /// The state of an execution of `declared` over `steps` (the run's journal).
    pub(crate) fn new(run_id: RunId, declared: Declared, journal: JournalIndex) -> Self {
        ExecutionState {
            run_id,
            now: 0,
            declared,
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
            events: Vec::new(),
        }
    }

    // The step tools' side.

    pub(crate) fn run_id(&self) -> &RunId {
        &self.run_id
    }

    pub(crate) fn now(&self) -> Millis {
        self.now
    }

    pub(crate) fn function_id(&self) -> &str {
        &self.declared.function_id
    }

    /// The first of `events` the function did not declare it sends.
    pub(crate) fn undeclared<'e>(&self, events: &'e [EventPayload]) -> Option<&'e EventPayload> {
        events.iter().find(|event| !self.declared.sends.contains(&event.name))
    }

    /// Whether the function declared that it waits for `event`.
    pub(crate) fn awaits(&self, event: &str) -> bool {
        self.declared.awaits.iter().any(|declared| declared == event)
    }

    /// Whether the function declared that it invokes `function_id`.
    pub(crate) fn invokes(&self, function_id: &str) -> bool {
        self.declared.invokes.iter().any(|declared| declared == function_id)
    }

    /// The 0-based attempt of the `run` step executing now.
    pub(crate) fn current_attempt(&self) -> u32 {
        self.current_attempt
    }

    /// Attempts already made of a `run` step that has no record yet.
    pub(crate) fn prior_attempts(&self) -> u32 {
        self.prior_attempts
    }

    /// Memoized steps remain ahead of the code.
    pub(crate) fn is_replaying(&self) -> bool {
        self.journal.replaying() && self.ops.is_empty()
    }

    /// Records a step call: its id and position, and the journal's record of it if any.
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

    /// Declares what a pending step needs from the driver.
    pub(crate) fn register(&mut self, id: StepId, name: &str, position: u32, kind: OpKind, new: bool) {
        // A step already scheduled or retrying started then, not when this pass found it again.
        let discovered_at =
            self.journal.find(id.as_str(), position).map_or(self.now, |slot| self.journal.get(slot).started_at);
        let op = Op { id, name: name.to_string(), position, kind, new, discovered_at, replay_required: false };
        self.ops.insert(position, op);
    }

    /// The position the next step call gets.
    pub(crate) fn next_position(&self) -> u32 {
        self.next_position
    }

    /// Gives up on the steps pending at `positions` (a race's losers): each is recorded failed
    /// with `StepCancelledError` saying `because`, without running or waiting any more.
    pub(crate) fn cancel_ops(&mut self, positions: &[u32], because: &str) {
        for position in positions {
            if let Some(op) = self.ops.get_mut(position)
                && !matches!(op.kind, OpKind::Cancelled { .. })
            {
                let error = StepError {
                    name: "StepCancelledError".into(),
                    ..StepError::non_retriable(format!("step `{}`: {because}", op.name))
                };
                op.kind = OpKind::Cancelled { kind: op.step_kind(), error };
                op.replay_required = false;
            }
        }
    }

    /// Whether the engine lets the `run` step `id` execute now.
    pub(crate) fn is_permitted(&self, id: &StepId) -> bool {
        self.permitted.as_ref() == Some(id)
    }

    /// Starts attempt `attempts_made + 1` of the `run` step `name`: returns the time and the
    /// step's mocked result, if any.
    pub(crate) fn start_attempt(
        &mut self,
        name: &str,
        attempts_made: u32,
    ) -> (Millis, Option<Result<Value, StepError>>) {
        self.current_attempt = attempts_made;
        (self.now, self.mocks.get(name).cloned())
    }

    /// The record of a finished attempt: completed, retrying (when the retry policy grants
    /// another attempt) or failed.
    pub(crate) fn attempt_record(&self, attempt: Attempt<'_>, result: Result<Value, StepError>) -> StepRecord {
        let policy =
            RetryPolicy::with_retries(attempt.retries.unwrap_or(self.declared.retries)).backoff(attempt.backoff);
        let state = match result {
            Ok(output) => StepState::Completed { output },
            Err(error) => {
                let error = policy.judged(error, attempt.number);
                let seed = format!("{}/{}", self.run_id, attempt.id);
                match policy.retry_at(&error, attempt.number, attempt.now, &seed) {
                    Some(retry_at) => StepState::Retrying { error, retry_at },
                    None => StepState::Failed { error },
                }
            }
        };
        StepRecord {
            id: attempt.id.clone(),
            name: attempt.name.to_string(),
            kind: StepKind::Run,
            position: attempt.position,
            ended_at: state.is_final().then_some(attempt.now),
            state,
            attempts: attempt.number,
            started_at: attempt.started_at,
            detail: None,
        }
    }

    /// Hands a `run` step's record to the engine, which reports it to the driver.
    pub(crate) fn report(&mut self, record: StepRecord) {
        self.report = Some(record);
    }

    /// The record the driver committed for step `id`, once it has.
    pub(crate) fn take_settled(&mut self, id: &StepId) -> Option<StepRecord> {
        self.settled.remove(id)
    }

    // The engine's side.

    pub(crate) fn set_now(&mut self, now: Millis) {
        self.now = now;
    }

    pub(crate) fn set_events(&mut self, events: Vec<EventPayload>) {
        self.events = events;
    }

    /// The events the run was started with (its trigger alone, unless a driver said more).
    pub(crate) fn events(&self) -> &[EventPayload] {
        &self.events
    }

    pub(crate) fn set_lenient(&mut self) {
        self.lenient = true;
    }

    /// Takes retries from an executor: `prior` attempts were already made of the step to run,
    /// and steps and the function get `retries` after their first attempt.
    pub(crate) fn set_attempts(&mut self, prior: u32, retries: u32) {
        self.prior_attempts = prior;
        self.declared.retries = retries;
    }

    #[cfg(feature = "testing")]
    pub(crate) fn mock(&mut self, name: &str, result: Result<Value, StepError>) {
        self.mocks.insert(name.to_string(), result);
    }

    /// When the function, failing with `error` after `attempts_made` attempts at `now`, is
    /// attempted again; `None` when the failure is final.
    pub(crate) fn function_retry(&self, error: &StepError, attempts_made: u32, now: Millis) -> Option<Millis> {
        RetryPolicy::with_retries(self.declared.retries).retry_at(error, attempts_made, now, self.run_id.as_str())
    }

    /// The contradiction between the code and the journal, if a step call found one.
    pub(crate) fn error(&self) -> Option<&EngineError> {
        self.error.as_ref()
    }

    /// The record a `run` step reported, if any; its permit ends with it.
    pub(crate) fn take_report(&mut self) -> Option<StepRecord> {
        let record = self.report.take()?;
        self.permitted = None;
        Some(record)
    }

    /// Whether a permitted step's code is running.
    pub(crate) fn is_running(&self) -> bool {
        self.permitted.is_some()
    }

    /// Lets the `run` step `id` execute.
    pub(crate) fn permit(&mut self, id: StepId) {
        self.permitted = Some(id);
    }

    /// The steps the code is waiting on, by position.
    pub(crate) fn ops(&self) -> &BTreeMap<u32, Op> {
        &self.ops
    }

    /// The driver committed `record`: the step's future resolves with it.
    pub(crate) fn committed(&mut self, record: StepRecord) {
        let final_ = record.state.is_final();
        if let Some(op) = self.ops.get_mut(&record.position) {
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
            self.ops.remove(&record.position);
        }
        self.journal.visit(record.position);
        self.journal.put(record.clone());
        self.settled.insert(record.id.clone(), record);
    }

    /// When the function has returned: the first recorded step the code no longer reached.
    pub(crate) fn leftover(&self) -> Option<EngineError> {
        if self.lenient {
            return None;
        }
        self.journal
            .records()
            .iter()
            .filter(|record| !self.journal.visited(record.position))
            .min_by_key(|record| record.position)
            .map(|record| EngineError::StepRemoved {
                position: record.position,
                recorded_name: record.name.clone(),
                recorded_kind: record.kind.to_string(),
            })
    }
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
