//! [`TestRun`]: one run of a function over an in-memory journal and a [`ManualClock`].

use crate::clock::{Clock, ManualClock};
use crate::engine::{Execution, OpKind, Outcome};
use crate::error::{EngineError, StepError};
use crate::event::{EventData, EventPayload};
use crate::function::{Function, Trigger};
use crate::id::RunId;
use crate::lifecycle::{WaitMatch, match_wait};
use crate::record::{Millis, StepRecord};
use crate::runner::RunnerConfig;
use crate::step::millis;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};

/// A run of one function in a unit test: no store, no bus, no real time.
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
    function: Function,
    run_id: RunId,
    event: EventPayload,
    clock: ManualClock,
    journal: BTreeMap<u32, StepRecord>,
    execution: Option<Execution>,
    attempt: u32,
    retry_at: Option<(Millis, StepError)>,
    mocks: HashMap<String, Result<Value, StepError>>,
    invoke_results: HashMap<String, Result<Value, StepError>>,
    sent: Vec<EventPayload>,
    waits: Vec<PendingWait>,
    received: Vec<(Millis, EventPayload)>,
    finished: Option<Result<Value, StepError>>,
}

#[derive(Debug, Clone)]
struct PendingWait {
    record: StepRecord,
    event: String,
    expression: Option<String>,
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
        TestRun {
            run_id: RunId::for_event(function.id(), "test-event"),
            function,
            event,
            clock,
            journal: BTreeMap::new(),
            execution: None,
            attempt: 0,
            retry_at: None,
            mocks: HashMap::new(),
            invoke_results: HashMap::new(),
            sent: Vec::new(),
            waits: Vec::new(),
            received: Vec::new(),
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
        self.mocks.insert(name.to_string(), Ok(output));
        self
    }

    /// Makes the `run` step `name` fail with `error` without executing its code.
    pub fn mock_step_error(mut self, name: &str, error: StepError) -> Self {
        self.mocks.insert(name.to_string(), Err(error));
        self
    }

    /// Makes the `invoke` step `name` return `result` (otherwise it waits until its timeout).
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
        self.journal.values().cloned().collect()
    }

    /// Events the run sent with `send_event`.
    pub fn sent_events(&self) -> &[EventPayload] {
        &self.sent
    }

    /// Delivers `event` to a pending `wait_for_event`; `true` if one matched. The Runner's
    /// rules apply ([`match_wait`]): the `if` expression, and an event that already resumed a
    /// wait never resumes another. An event that matches no wait is kept for the lookback: a
    /// wait the run begins within a minute still receives it, as in production.
    pub fn send(&mut self, event: EventPayload) -> bool {
        let now = self.clock.now();
        let steps = self.steps();
        let resumed = self.waits.iter().enumerate().find_map(|(index, wait)| {
            if wait.event != event.name {
                return None;
            }
            match match_wait(&self.event, &steps, &wait.record.id, wait.expression.as_deref(), &event, now) {
                WaitMatch::Resumes(record) => Some((index, record)),
                WaitMatch::Stale | WaitMatch::NoMatch => None,
            }
        });
        let Some((index, record)) = resumed else {
            self.received.push((now, event));
            return false;
        };
        self.waits.remove(index);
        self.journal.insert(record.position, *record);
        self.execution = None;
        true
    }

    /// An event sent before the wait `record` began, within the lookback, that resumes it.
    fn received_match(
        &self,
        record: &StepRecord,
        event: &str,
        expression: Option<&str>,
        now: Millis,
    ) -> Option<StepRecord> {
        let since = now.saturating_sub(millis(RunnerConfig::default().wait_lookback));
        let steps = self.steps();
        self.received.iter().filter(|(at, received)| *at >= since && received.name == event).find_map(
            |(_, received)| match match_wait(&self.event, &steps, &record.id, expression, received, now) {
                WaitMatch::Resumes(record) => Some(*record),
                WaitMatch::Stale | WaitMatch::NoMatch => None,
            },
        )
    }

    /// Runs to the next decision and applies it as a driver would: commits steps, sends events,
    /// registers sleeps and waits.
    ///
    /// # Errors
    /// [`EngineError`] when the code does not match the journal.
    pub async fn next(&mut self) -> Result<Outcome, EngineError> {
        if let Some(finished) = &self.finished {
            return Ok(match finished {
                Ok(output) => Outcome::Completed(output.clone()),
                Err(error) => Outcome::Failed { error: error.clone(), retry_at: None },
            });
        }
        let now = self.clock.now();
        if let Some((retry_at, error)) = &self.retry_at {
            if *retry_at > now {
                return Ok(Outcome::Failed { error: error.clone(), retry_at: Some(*retry_at) });
            }
            self.retry_at = None;
        }
        let mut execution = match self.execution.take() {
            Some(execution) => execution,
            None => {
                let steps: Vec<StepRecord> = self.journal.values().cloned().collect();
                let mut execution =
                    Execution::new(&self.function, self.run_id.clone(), &self.event, &steps, self.attempt);
                for (name, result) in &self.mocks {
                    execution.mock(name, result.clone());
                }
                execution
            }
        };
        let outcome = execution.next(now).await?;
        let mut keep = false;
        match &outcome {
            Outcome::StepCompleted(record) | Outcome::StepFailed { record, retry_at: None } => {
                self.waits.retain(|wait| wait.record.id != record.id);
                self.journal.insert(record.position, record.clone());
                execution.committed(record.clone());
                keep = true;
            }
            Outcome::StepFailed { record, retry_at: Some(_) } => {
                self.journal.insert(record.position, record.clone());
            }
            Outcome::Sleeping { op, .. } | Outcome::Waiting { op } => keep = self.apply_op(op, now, &mut execution),
            Outcome::Planned(ops) => {
                for op in ops {
                    keep |= self.apply_op(op, now, &mut execution);
                }
            }
            Outcome::Completed(output) => self.finished = Some(Ok(output.clone())),
            Outcome::Failed { error, retry_at: None } => self.finished = Some(Err(error.clone())),
            Outcome::Failed { error, retry_at: Some(at) } => {
                self.attempt += 1;
                self.retry_at = Some((*at, error.clone()));
            }
        }
        if keep {
            self.execution = Some(execution);
        }
        Ok(outcome)
    }

    /// Applies one op; `true` when it committed a step the execution can continue past.
    fn apply_op(&mut self, op: &crate::engine::Op, now: Millis, execution: &mut Execution) -> bool {
        match &op.kind {
            OpKind::SendEvent { events } => {
                self.sent.extend(events.iter().cloned());
                let ids: Vec<String> = events.iter().map(|event| event.id.clone().unwrap_or_default()).collect();
                let record = op.completed_record(json!({ "ids": ids }), now);
                self.journal.insert(record.position, record.clone());
                execution.committed(record);
                true
            }
            OpKind::Invoke { .. } if op.new => match self.invoke_results.get(&op.name) {
                Some(Ok(output)) => {
                    let record = op.completed_record(output.clone(), now);
                    self.journal.insert(record.position, record.clone());
                    execution.committed(record);
                    true
                }
                Some(Err(error)) => {
                    let record = op.failed_record(error.clone(), now);
                    self.journal.insert(record.position, record.clone());
                    execution.committed(record);
                    true
                }
                None => self.schedule(op),
            },
            OpKind::WaitForEvent { event, expression, .. } if op.new => {
                let Some(record) = op.scheduled_record() else { return self.schedule(op) };
                self.journal.insert(record.position, record.clone());
                if let Some(resumed) = self.received_match(&record, event, expression.as_deref(), now) {
                    self.journal.insert(resumed.position, resumed.clone());
                    execution.committed(resumed);
                    return true;
                }
                self.waits.push(PendingWait { record, event: event.clone(), expression: expression.clone() });
                false
            }
            _ if op.new => self.schedule(op),
            _ => false,
        }
    }

    fn schedule(&mut self, op: &crate::engine::Op) -> bool {
        if let Some(record) = op.scheduled_record() {
            self.journal.insert(record.position, record);
        }
        false
    }

    /// Runs to the end and returns the output or the final error. Sleeps, back-offs and
    /// timeouts pass instantly (the clock jumps); a wait with no event sent times out.
    ///
    /// # Errors
    /// The run's final error (a determinism mismatch becomes a `DeterminismError`).
    ///
    /// # Panics
    /// After 100,000 decisions, which only a workflow that never ends reaches.
    pub async fn result(&mut self) -> Result<Value, StepError> {
        for _ in 0..100_000 {
            let outcome = match self.next().await {
                Ok(outcome) => outcome,
                Err(error) => {
                    let error = error.to_step_error();
                    self.finished = Some(Err(error.clone()));
                    return Err(error);
                }
            };
            match outcome {
                Outcome::Completed(output) => return Ok(output),
                Outcome::Failed { error, retry_at: None } => return Err(error),
                Outcome::StepCompleted(_) | Outcome::StepFailed { retry_at: None, .. } => {}
                Outcome::Failed { retry_at: Some(at), .. } | Outcome::StepFailed { retry_at: Some(at), .. } => {
                    self.clock.set(at)
                }
                Outcome::Sleeping { until, .. } => self.clock.set(until),
                Outcome::Waiting { op } => self.clock.set(op.wake_at().unwrap_or(0)),
                Outcome::Planned(ops) => {
                    if let Some(at) = ops.iter().filter_map(crate::engine::Op::wake_at).min() {
                        self.clock.set(at);
                    }
                }
            }
        }
        panic!("TestRun::result: the run made 100000 decisions without finishing");
    }
}
