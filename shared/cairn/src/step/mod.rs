//! The step tools a workflow calls: `run`, `sleep`, `sleep_until`, `wait_for_event`,
//! `send_event` and `invoke`.
//!
//! **Determinism**: await each step where you call it (or in a `join!` / `try_join_all`), give
//! every step a stable name, and keep side effects and ambient time or randomness inside
//! `step.run`. Code outside steps runs again on every replay.

mod combinators;
mod options;
mod support;

pub use options::{IntoEvents, Invoke, SendResult, Signal, StepOptions, WaitFor};

/// `duration` in whole milliseconds (kept here for the drivers that import it from `step`).
pub(crate) use crate::duration::millis;

use crate::duration::IntoDuration;
use crate::error::{StepError, StepResult};
use crate::event::Event;
use crate::event::SIGNAL_EVENT;
use crate::event::signal_condition;
use crate::expr::MatchExpr;
use crate::id::{RunId, StepId};
use crate::op::OpKind;
use crate::record::{Millis, StepKind, StepRecord, StepState};
use crate::state::{Attempt, Begun, SharedState};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::{
    Permit, Settled, checked_name, checked_timeout, checked_wait, decode_event, decode_output, decode_signal, execute,
    halt,
};
use tracing::Instrument;

/// Longest sleep, wait or invoke timeout Inngest accepts.
pub const MAX_WAIT: Duration = Duration::from_secs(366 * 86_400);

/// The step tools of one run. Cheap to clone; pass it into helpers freely.
#[derive(Clone)]
pub struct Step {
    state: SharedState,
}

impl std::fmt::Debug for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Step").field("run_id", self.state.lock().run_id()).finish()
    }
}

/// The outcome of trying to start a step.
#[allow(clippy::large_enum_variant)] // Short-lived, on the stack, never stored.
enum Begin<R> {
    Memoized(R),
    Pending { id: StepId, position: u32, existing: Option<StepRecord> },
    Halt,
}

impl Step {
    pub(crate) fn new(state: SharedState) -> Self {
        Step { state }
    }

    /// The id of the run this step belongs to.
    pub fn run_id(&self) -> RunId {
        self.state.lock().run_id().clone()
    }

    /// The 0-based attempt of the step running now (Inngest's `attempt`): call it inside a
    /// `run` closure, e.g. to behave differently on a retry.
    pub fn attempt(&self) -> u32 {
        self.state.lock().current_attempt()
    }

    /// Every event this run was started with, oldest first: a batch's
    /// ([`BatchEvents`](crate::flow::BatchEvents)), a debounce window's when its function asks
    /// for them ([`Debounce::all_events`](crate::flow::Debounce::all_events)), else the one
    /// triggering event. Not a step: nothing is memoized or re-read.
    ///
    /// # Errors
    /// An event whose data does not deserialize as `T`, naming the event and field.
    pub fn events<T: DeserializeOwned>(&self) -> StepResult<Vec<Event<T>>> {
        let state = self.state.lock();
        state.events().iter().map(|payload| Event::from_payload(payload).map_err(StepError::non_retriable)).collect()
    }

    /// True while the code is replaying steps memoized before this invocation: use it to keep
    /// logs outside steps from repeating.
    pub fn is_replaying(&self) -> bool {
        self.state.lock().is_replaying()
    }

    /// Runs `f` once and memoizes its result (inside `f`, `?` turns any error into a retriable
    /// [`StepError`]); replays return the memoized value (or error)
    /// without calling `f`. A retriable error is retried with back-off up to the step's or the
    /// function's retries; then the step fails, and replays fail with the same error.
    ///
    /// ```no_run
    /// # use cairn::prelude::*;
    /// # async fn demo(step: Step) -> StepResult<()> {
    /// let user: serde_json::Value = step.run("load-user", || async { Ok(json!({"id": 1})) }).await?;
    /// let again: u32 = step.run(StepOptions::new("flaky-call").retries(1), || async { Ok(2) }).await?;
    /// # Ok(()) }
    /// ```
    pub async fn run<T, F, Fut>(&self, options: impl Into<StepOptions>, f: F) -> StepResult<T>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = StepResult<T>> + Send,
    {
        let options = options.into();
        let name = checked_name(&options.name)?;
        let timeout = checked_timeout(name, options.timeout.clone())?;
        if let Some(reason) = options.backoff.as_ref().and_then(|backoff| backoff.check().err()) {
            return Err(StepError::non_retriable(format!("step `{name}`: invalid back-off: {reason}")));
        }
        let (id, position, existing) = match self.begin(StepKind::Run, name, decode_output) {
            Begin::Memoized(result) => return result,
            Begin::Halt => return halt().await,
            Begin::Pending { id, position, existing } => (id, position, existing),
        };
        let mut attempts_made =
            existing.as_ref().map_or_else(|| self.state.lock().prior_attempts(), |record| record.attempts);
        let mut started_at = existing.as_ref().map(|record| record.started_at);
        let kind = match &existing {
            Some(StepRecord { state: StepState::Retrying { retry_at, .. }, .. }) => {
                OpKind::Retry { until: *retry_at, attempts_made }
            }
            _ => OpKind::Run { attempts_made },
        };
        self.register(&id, name, position, kind, existing.is_none());
        let mut f = Some(f);
        loop {
            Permit { state: &self.state, id: &id }.await;
            let (now, mock) = self.state.lock().start_attempt(name, attempts_made);
            let attempt = attempts_made + 1;
            let span = tracing::info_span!("step", step.id = %id, step.name = name, step.kind = "run", attempt);
            let result: Result<Value, StepError> = match (mock, f.take()) {
                (Some(mocked), _) => mocked,
                (None, Some(f)) => {
                    execute(name, f, timeout.map(|limit| (limit, attempt))).instrument(span.clone()).await
                }
                // A retry within the same invocation: the closure was consumed by the failed
                // attempt, so the retry happens on the next replay, which builds a fresh one.
                (None, None) => return halt().await,
            };
            let finished = Attempt {
                id: &id,
                name,
                position,
                started_at: *started_at.get_or_insert(now),
                number: attempt,
                retries: options.retries,
                backoff: options.backoff.as_ref(),
                now,
            };
            // The retry policy judges the attempt: completed, retrying or failed.
            let record = self.state.lock().attempt_record(finished, result);
            span.in_scope(|| match &record.state {
                StepState::Completed { .. } => tracing::info!("step completed"),
                StepState::Retrying { error, .. } => tracing::warn!(%error, "step failed, will retry"),
                _ => tracing::error!("step failed"),
            });
            self.state.lock().report(record);
            let record = Settled { state: &self.state, id: &id }.await;
            if !matches!(record.state, StepState::Retrying { .. }) {
                return decode_output(&record);
            }
            attempts_made = record.attempts;
        }
    }

    /// Pauses the run for `duration` (`"1h"`, `"2d"` or a `Duration`). Long sleeps suspend the
    /// run and resume it later; nothing is consumed meanwhile.
    pub async fn sleep(&self, name: &str, duration: impl IntoDuration) -> StepResult<()> {
        let name = checked_name(name)?;
        let duration = checked_wait(name, duration.into_duration())?;
        self.sleep_inner(name, |now| now.saturating_add(millis(duration))).await
    }

    /// Pauses the run until `until`, at most 366 days ahead ([`MAX_WAIT`], as Inngest): a
    /// later time is refused rather than scheduled past what timers can represent.
    pub async fn sleep_until(&self, name: &str, until: SystemTime) -> StepResult<()> {
        let name = checked_name(name)?;
        let at = until.duration_since(UNIX_EPOCH).map(millis).unwrap_or(0);
        // Time only moves on, so a time accepted once is accepted on every replay.
        if at.saturating_sub(self.state.lock().now()) > millis(MAX_WAIT) {
            return Err(StepError::non_retriable(format!(
                "step `{name}`: sleeping until {at} ms since the epoch is more than the 366-day maximum ahead"
            )));
        }
        self.sleep_inner(name, |_| at).await
    }

    async fn sleep_inner(&self, name: &str, until: impl FnOnce(Millis) -> Millis) -> StepResult<()> {
        let (id, position, existing) = match self.begin(StepKind::Sleep, name, decode_output) {
            Begin::Memoized(result) => return result,
            Begin::Halt => return halt().await,
            Begin::Pending { id, position, existing } => (id, position, existing),
        };
        let until = self.scheduled_at(&existing, until);
        self.register(&id, name, position, OpKind::Sleep { until }, existing.is_none());
        self.settle(&id).await
    }

    /// Waits for an event, up to a timeout: `Some(event)` when one matching arrived, `None`
    /// on timeout. An event that arrived shortly before the wait began also matches when the
    /// driver is configured with a lookback.
    ///
    /// ```no_run
    /// # use cairn::prelude::*;
    /// # async fn demo(step: Step) -> StepResult<()> {
    /// let approval = step
    ///     .wait_for_event("wait-approval", WaitFor::event("test/approved").timeout("1d").if_expr("async.data.id == event.data.id"))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn wait_for_event<T>(&self, name: &str, wait: WaitFor<T>) -> StepResult<Option<Event<T>>>
    where
        T: DeserializeOwned + Send + 'static,
    {
        let name = checked_name(name)?;
        let timeout = checked_wait(name, wait.timeout)?;
        if wait.event.trim().is_empty() {
            return Err(StepError::non_retriable(format!("step `{name}`: the awaited event name is empty")));
        }
        if let Some(expression) = &wait.expression {
            MatchExpr::parse(expression).map_err(|reason| {
                StepError::non_retriable(format!("step `{name}`: invalid match expression `{expression}`: {reason}"))
            })?;
        }
        let (id, position, existing) =
            match self.begin(StepKind::WaitForEvent, name, |record| decode_event(name, record)) {
                Begin::Memoized(result) => return result,
                Begin::Halt => return halt().await,
                Begin::Pending { id, position, existing } => (id, position, existing),
            };
        {
            // Checked once the step is known to be unresolved (as `send_event`'s declarations).
            let state = self.state.lock();
            if !state.awaits(&wait.event) {
                return Err(StepError::non_retriable(format!(
                    "step `{name}`: function `{}` does not declare that it waits for `{event}`: add `.awaits(\"{event}\")` \
                     to its definition (its deployment routes only declared events to it)",
                    state.function_id(),
                    event = wait.event,
                )));
            }
        }
        let timeout_at = self.scheduled_at(&existing, |now| now.saturating_add(millis(timeout)));
        let kind = OpKind::WaitForEvent { event: wait.event, expression: wait.expression, timeout_at };
        self.register(&id, name, position, kind, existing.is_none());
        let record = self.settle_record(&id).await;
        decode_event(name, &record)
    }

    /// Waits up to `timeout` for the signal `signal` (AWS durable functions' callback: an
    /// external system, a person approving, a webhook, completes the step by name):
    /// `Some(signal)` with the data [`send_signal`](crate::send_signal), `POST /api/inngest/signal`
    /// or the dashboard sent, `None` on timeout. While a run waits for a signal no other run may:
    /// a second waiter's step fails with `SignalConflictError` naming the first. Declare
    /// `.signals()` on the function (what `cairn template` routes to it).
    ///
    /// ```no_run
    /// # use cairn::prelude::*;
    /// # async fn demo(event: Event, step: Step) -> StepResult<()> {
    /// let order = event.data["order"].as_str().unwrap_or_default();
    /// let approval = step.wait_for_signal::<serde_json::Value>("approval", &format!("approve-{order}"), "2d").await?;
    /// # Ok(()) }
    /// ```
    pub async fn wait_for_signal<T>(
        &self,
        name: &str,
        signal: &str,
        timeout: impl IntoDuration,
    ) -> StepResult<Option<Signal<T>>>
    where
        T: DeserializeOwned + Send + 'static,
    {
        let name = checked_name(name)?;
        let timeout = checked_wait(name, timeout.into_duration())?;
        // Senders trim the name too, so " approve-1" and "approve-1" are one signal.
        let signal = signal.trim();
        if signal.is_empty() {
            return Err(StepError::non_retriable(format!("step `{name}`: the signal name is empty")));
        }
        let (id, position, existing) =
            match self.begin(StepKind::WaitForEvent, name, |record| decode_signal(name, record)) {
                Begin::Memoized(result) => return result,
                Begin::Halt => return halt().await,
                Begin::Pending { id, position, existing } => (id, position, existing),
            };
        {
            let state = self.state.lock();
            if !state.awaits(SIGNAL_EVENT) {
                return Err(StepError::non_retriable(format!(
                    "step `{name}`: function `{}` does not declare that it waits for signals: add `.signals()` to its \
                     definition (its deployment routes signals only to functions that declare them)",
                    state.function_id(),
                )));
            }
        }
        let timeout_at = self.scheduled_at(&existing, |now| now.saturating_add(millis(timeout)));
        let expression = signal_condition(signal);
        let kind = OpKind::WaitForEvent { event: SIGNAL_EVENT.to_string(), expression: Some(expression), timeout_at };
        self.register(&id, name, position, kind, existing.is_none());
        let record = self.settle_record(&id).await;
        decode_signal(name, &record)
    }

    /// Sends `data` to the run waiting for `signal` (from one run to another; a retry never
    /// sends twice). Declare `.signals()` on the function.
    pub async fn send_signal(&self, name: &str, signal: &str, data: Value) -> StepResult<SendResult> {
        let signal = signal.trim();
        if signal.is_empty() {
            return Err(StepError::non_retriable(format!("step `{name}`: the signal name is empty")));
        }
        self.send_event(name, crate::event::signal(signal, data)).await
    }

    /// Sends one or many events (a retry never sends twice: ids derive from the run and step).
    pub async fn send_event(&self, name: &str, events: impl IntoEvents) -> StepResult<SendResult> {
        let name = checked_name(name)?;
        let mut events =
            events.into_events().map_err(|reason| StepError::non_retriable(format!("step `{name}`: {reason}")))?;
        for event in &events {
            event.validate().map_err(|reason| StepError::non_retriable(format!("step `{name}`: {reason}")))?;
        }
        let (id, position, existing) = match self.begin(StepKind::SendEvent, name, decode_output) {
            Begin::Memoized(result) => return result,
            Begin::Halt => return halt().await,
            Begin::Pending { id, position, existing } => (id, position, existing),
        };
        let (run_id, now) = {
            let state = self.state.lock();
            // Checked once the step is known to be unsent: a run that sent before the check
            // existed replays its memoized result.
            if let Some(undeclared) = state.undeclared(&events) {
                return Err(StepError::non_retriable(format!(
                    "step `{name}`: function `{}` does not declare that it sends `{event}`: add `.sends(\"{event}\")` \
                     to its definition (its IAM policy lets it put only declared events on the bus)",
                    state.function_id(),
                    event = undeclared.name,
                )));
            }
            (state.run_id().clone(), state.now())
        };
        for (index, event) in events.iter_mut().enumerate() {
            if event.id.is_none() {
                event.id = Some(StepId::hash(&format!("{run_id}/{id}/{index}")).as_str()[..26].to_string());
            }
            event.ts.get_or_insert(now);
        }
        self.register(&id, name, position, OpKind::SendEvent { events }, existing.is_none());
        self.settle(&id).await
    }

    /// Calls another function of the app and waits for its result. Its failure, or a timeout,
    /// fails this step.
    pub async fn invoke<T>(&self, name: &str, invoke: Invoke) -> StepResult<T>
    where
        T: DeserializeOwned + Send + 'static,
    {
        let name = checked_name(name)?;
        let timeout = checked_wait(name, invoke.timeout)?;
        if invoke.function_id.trim().is_empty() {
            return Err(StepError::non_retriable(format!("step `{name}`: the invoked function id is empty")));
        }
        let (id, position, existing) = match self.begin(StepKind::Invoke, name, decode_output) {
            Begin::Memoized(result) => return result,
            Begin::Halt => return halt().await,
            Begin::Pending { id, position, existing } => (id, position, existing),
        };
        {
            let state = self.state.lock();
            if !state.invokes(&invoke.function_id) {
                return Err(StepError::non_retriable(format!(
                    "step `{name}`: function `{}` does not declare that it invokes `{target}`: add `.invokes(\"{target}\")` \
                     to its definition (its deployment routes only declared calls and their results)",
                    state.function_id(),
                    target = invoke.function_id,
                )));
            }
        }
        let timeout_at = self.scheduled_at(&existing, |now| now.saturating_add(millis(timeout)));
        let kind = OpKind::Invoke { function_id: invoke.function_id, data: invoke.data, timeout_at };
        self.register(&id, name, position, kind, existing.is_none());
        self.settle(&id).await
    }

    /// Starts a step call; a memoized result is decoded by `decode` under the lock, uncopied.
    fn begin<R>(&self, kind: StepKind, name: &str, decode: impl FnOnce(&StepRecord) -> R) -> Begin<R> {
        match self.state.lock().begin(kind, name) {
            Begun::Memoized(record) => Begin::Memoized(decode(record)),
            Begun::Pending { id, position, existing } => Begin::Pending { id, position, existing },
            Begun::Halt => Begin::Halt,
        }
    }

    /// When a sleep, wait or invoke resolves: as first scheduled (a replay must not move it),
    /// or, the first time, `from(now)`.
    fn scheduled_at(&self, existing: &Option<StepRecord>, from: impl FnOnce(Millis) -> Millis) -> Millis {
        match existing {
            Some(StepRecord { state: StepState::Scheduled { wake_at }, .. }) => *wake_at,
            _ => from(self.state.lock().now()),
        }
    }

    fn register(&self, id: &StepId, name: &str, position: u32, kind: OpKind, new: bool) {
        self.state.lock().register(id.clone(), name, position, kind, new);
    }

    async fn settle<T: DeserializeOwned>(&self, id: &StepId) -> StepResult<T> {
        let record = self.settle_record(id).await;
        decode_output(&record)
    }

    async fn settle_record(&self, id: &StepId) -> StepRecord {
        loop {
            let record = Settled { state: &self.state, id }.await;
            if record.state.is_final() {
                return record;
            }
        }
    }
}
