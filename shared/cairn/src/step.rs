//! The step tools a workflow calls: `run`, `sleep`, `sleep_until`, `wait_for_event`,
//! `send_event` and `invoke`.
//!
//! **Determinism**: await each step where you call it (or in a `join!` / `try_join_all`), give
//! every step a stable name, and keep side effects and ambient time or randomness inside
//! `step.run`. Code outside steps runs again on every replay.

use crate::duration::IntoDuration;
use crate::engine::{Begun, OpKind, Shared, lock};
use crate::error::{StepError, StepResult};
use crate::event::{Event, EventData, EventPayload};
use crate::expr::MatchExpr;
use crate::id::{RunId, StepId};
use crate::record::{Millis, StepKind, StepRecord, StepState};
use futures::FutureExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::Instrument;

/// Longest sleep, wait or invoke timeout Inngest accepts.
pub const MAX_WAIT: Duration = Duration::from_secs(366 * 86_400);

/// The step tools of one run. Cheap to clone; pass it into helpers freely.
#[derive(Clone)]
pub struct Step {
    shared: Arc<Mutex<Shared>>,
}

impl std::fmt::Debug for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Step").field("run_id", &lock(&self.shared).run_id).finish()
    }
}

/// A step's name and options. `&str` converts into it.
#[derive(Clone, Debug)]
pub struct StepOptions {
    name: String,
    retries: Option<u32>,
}

impl StepOptions {
    /// Options for the step `name`.
    pub fn new(name: impl Into<String>) -> Self {
        StepOptions { name: name.into(), retries: None }
    }

    /// Retries for this step, overriding the function's.
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = Some(retries);
        self
    }
}

impl From<&str> for StepOptions {
    fn from(name: &str) -> Self {
        StepOptions::new(name)
    }
}

impl From<String> for StepOptions {
    fn from(name: String) -> Self {
        StepOptions::new(name)
    }
}

/// What `step.wait_for_event` waits for; `T` is the awaited event's data type.
#[derive(Debug)]
pub struct WaitFor<T = Value> {
    event: String,
    timeout: Result<Duration, String>,
    expression: Option<String>,
    _data: PhantomData<fn() -> T>,
}

impl WaitFor<Value> {
    /// Waits for the event `name` (untyped data).
    pub fn event(name: impl Into<String>) -> Self {
        WaitFor {
            event: name.into(),
            timeout: Err("a timeout is required".into()),
            expression: None,
            _data: PhantomData,
        }
    }
}

impl<T: EventData> WaitFor<T> {
    /// Waits for the typed event `T`.
    pub fn typed() -> Self {
        WaitFor {
            event: T::NAME.into(),
            timeout: Err("a timeout is required".into()),
            expression: None,
            _data: PhantomData,
        }
    }
}

impl<T> WaitFor<T> {
    /// Gives up after `timeout` (`"1d"` or a `Duration`); the step then returns `None`.
    pub fn timeout(mut self, timeout: impl IntoDuration) -> Self {
        self.timeout = timeout.into_duration();
        self
    }

    /// Only an event for which this CEL condition holds: `async.data.id == event.data.id`,
    /// with `event` the run's trigger and `async` the candidate.
    pub fn if_expr(mut self, expression: impl Into<String>) -> Self {
        self.expression = Some(expression.into());
        self
    }

    /// Inngest's `match`: the field at `path` (e.g. `data.userId`) must be equal in both events.
    pub fn matching(self, path: &str) -> Self {
        self.if_expr(format!("event.{path} == async.{path}"))
    }
}

/// What `step.invoke` calls: a function by id, with the data of its triggering event.
#[derive(Debug, Clone)]
pub struct Invoke {
    function_id: String,
    data: Value,
    timeout: Result<Duration, String>,
}

impl Invoke {
    /// Calls the function `function_id` (in the same app) with empty data and no timeout
    /// beyond Inngest's maximum of 366 days.
    pub fn function(function_id: impl Into<String>) -> Self {
        Invoke { function_id: function_id.into(), data: Value::Object(Default::default()), timeout: Ok(MAX_WAIT) }
    }

    /// The data of the invoked function's event.
    pub fn data(mut self, data: Value) -> Self {
        self.data = data;
        self
    }

    /// Fails the step with `InngestInvokeTimeoutError` when the function has not finished in time.
    pub fn timeout(mut self, timeout: impl IntoDuration) -> Self {
        self.timeout = timeout.into_duration();
        self
    }
}

/// One or many events for `step.send_event`.
pub trait IntoEvents {
    /// The events, or a message naming what cannot be sent.
    fn into_events(self) -> Result<Vec<EventPayload>, String>;
}

impl IntoEvents for EventPayload {
    fn into_events(self) -> Result<Vec<EventPayload>, String> {
        Ok(vec![self])
    }
}

impl IntoEvents for Vec<EventPayload> {
    fn into_events(self) -> Result<Vec<EventPayload>, String> {
        Ok(self)
    }
}

/// What `step.send_event` returns: the ids of the sent events, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SendResult {
    /// Event ids.
    pub ids: Vec<String>,
}

/// The outcome of trying to start a step.
#[allow(clippy::large_enum_variant)] // Short-lived, on the stack, never stored.
enum Begin<R> {
    Memoized(R),
    Pending { id: StepId, position: u32, existing: Option<StepRecord> },
    Halt,
}

impl Step {
    pub(crate) fn new(shared: Arc<Mutex<Shared>>) -> Self {
        Step { shared }
    }

    /// The id of the run this step belongs to.
    pub fn run_id(&self) -> RunId {
        lock(&self.shared).run_id.clone()
    }

    /// The 0-based attempt of the step running now (Inngest's `attempt`): call it inside a
    /// `run` closure, e.g. to behave differently on a retry.
    pub fn attempt(&self) -> u32 {
        lock(&self.shared).current_attempt
    }

    /// True while the code is replaying steps memoized before this invocation: use it to keep
    /// logs outside steps from repeating.
    pub fn is_replaying(&self) -> bool {
        lock(&self.shared).is_replaying()
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
        let (id, position, existing) = match self.begin(StepKind::Run, name, decode_output) {
            Begin::Memoized(result) => return result,
            Begin::Halt => return halt().await,
            Begin::Pending { id, position, existing } => (id, position, existing),
        };
        let mut attempts_made =
            existing.as_ref().map_or_else(|| lock(&self.shared).prior_attempts, |record| record.attempts);
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
            Permit { shared: &self.shared, id: &id }.await;
            let (now, default_retries, mock, run_id) = {
                let mut shared = lock(&self.shared);
                shared.current_attempt = attempts_made;
                (shared.now, shared.default_retries, shared.mocks.get(name).cloned(), shared.run_id.clone())
            };
            let attempt = attempts_made + 1;
            let span = tracing::info_span!("step", step.id = %id, step.name = name, step.kind = "run", attempt);
            let result: Result<Value, StepError> = match (mock, f.take()) {
                (Some(mocked), _) => mocked,
                (None, Some(f)) => execute(name, f).instrument(span.clone()).await,
                // A retry within the same invocation: the closure was consumed by the failed
                // attempt, so the retry happens on the next replay, which builds a fresh one.
                (None, None) => return halt().await,
            };
            let max_attempts = options.retries.unwrap_or(default_retries) + 1;
            let state = match result {
                Ok(output) => StepState::Completed { output },
                Err(error) if error.retriable && attempt < max_attempts => {
                    let delay = crate::backoff::retry_delay(&error, attempt, &format!("{run_id}/{id}"));
                    StepState::Retrying { error, retry_at: now.saturating_add(millis(delay)) }
                }
                Err(error) => StepState::Failed { error },
            };
            span.in_scope(|| match &state {
                StepState::Completed { .. } => tracing::info!("step completed"),
                StepState::Retrying { error, .. } => tracing::warn!(%error, "step failed, will retry"),
                _ => tracing::error!("step failed"),
            });
            let record = StepRecord {
                id: id.clone(),
                name: name.to_string(),
                kind: StepKind::Run,
                position,
                ended_at: state.is_final().then_some(now),
                state,
                attempts: attempt,
                started_at: *started_at.get_or_insert(now),
                detail: None,
            };
            lock(&self.shared).report = Some(record);
            let record = Settled { shared: &self.shared, id: &id }.await;
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
        if at.saturating_sub(lock(&self.shared).now) > millis(MAX_WAIT) {
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
        let timeout_at = self.scheduled_at(&existing, |now| now.saturating_add(millis(timeout)));
        let kind = OpKind::WaitForEvent { event: wait.event, expression: wait.expression, timeout_at };
        self.register(&id, name, position, kind, existing.is_none());
        let record = self.settle_record(&id).await;
        decode_event(name, &record)
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
            let shared = lock(&self.shared);
            // Checked once the step is known to be unsent: a run that sent before the check
            // existed replays its memoized result.
            if let Some(undeclared) = events.iter().find(|event| !shared.sends.contains(&event.name)) {
                return Err(StepError::non_retriable(format!(
                    "step `{name}`: function `{}` does not declare that it sends `{event}`: add `.sends(\"{event}\")` \
                     to its definition (its IAM policy lets it put only declared events on the bus)",
                    shared.function_id,
                    event = undeclared.name,
                )));
            }
            (shared.run_id.clone(), shared.now)
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
        let timeout_at = self.scheduled_at(&existing, |now| now.saturating_add(millis(timeout)));
        let kind = OpKind::Invoke { function_id: invoke.function_id, data: invoke.data, timeout_at };
        self.register(&id, name, position, kind, existing.is_none());
        self.settle(&id).await
    }

    /// Starts a step call; a memoized result is decoded by `decode` under the lock, uncopied.
    fn begin<R>(&self, kind: StepKind, name: &str, decode: impl FnOnce(&StepRecord) -> R) -> Begin<R> {
        match lock(&self.shared).begin(kind, name) {
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
            _ => from(lock(&self.shared).now),
        }
    }

    fn register(&self, id: &StepId, name: &str, position: u32, kind: OpKind, new: bool) {
        lock(&self.shared).register(id.clone(), name, position, kind, new);
    }

    async fn settle<T: DeserializeOwned>(&self, id: &StepId) -> StepResult<T> {
        let record = self.settle_record(id).await;
        decode_output(&record)
    }

    async fn settle_record(&self, id: &StepId) -> StepRecord {
        loop {
            let record = Settled { shared: &self.shared, id }.await;
            if record.state.is_final() {
                return record;
            }
        }
    }
}

fn checked_name(name: &str) -> StepResult<&str> {
    if name.trim().is_empty() {
        return Err(StepError::non_retriable("a step name must not be empty"));
    }
    Ok(name)
}

fn checked_wait(name: &str, duration: Result<Duration, String>) -> StepResult<Duration> {
    let duration = duration.map_err(|reason| StepError::non_retriable(format!("step `{name}`: {reason}")))?;
    if duration > MAX_WAIT {
        return Err(StepError::non_retriable(format!(
            "step `{name}`: {} exceeds the 366-day maximum",
            crate::duration::format_duration(duration)
        )));
    }
    Ok(duration)
}

pub(crate) fn millis(duration: Duration) -> Millis {
    Millis::try_from(duration.as_millis()).unwrap_or(Millis::MAX)
}

fn decode_output<T: DeserializeOwned>(record: &StepRecord) -> StepResult<T> {
    match &record.state {
        // The message names the field, never the value: step outputs may hold secrets.
        StepState::Completed { output } => serde_path_to_error::deserialize(output).map_err(|err| {
            let path = err.path().to_string();
            let reason = crate::event::redact_serde_error(&err.into_inner().to_string());
            StepError::non_retriable(format!(
                "step `{}`: its output does not match the expected type at `{path}`: {reason}",
                record.name
            ))
        }),
        StepState::Failed { error } => Err(error.clone().into_final()),
        other => Err(StepError::non_retriable(format!("step `{}` is not finished: {other:?}", record.name))),
    }
}

fn decode_event<T: DeserializeOwned>(name: &str, record: &StepRecord) -> StepResult<Option<Event<T>>> {
    match &record.state {
        StepState::Completed { output: Value::Null } => Ok(None),
        StepState::Completed { output } => {
            let payload: EventPayload = serde_json::from_value(output.clone()).map_err(|err| {
                StepError::non_retriable(format!("step `{name}`: the received event is malformed: {err}"))
            })?;
            Event::from_payload(&payload)
                .map(Some)
                .map_err(|reason| StepError::non_retriable(format!("step `{name}`: {reason}")))
        }
        _ => decode_output(record),
    }
}

async fn execute<T, F, Fut>(name: &str, f: F) -> Result<Value, StepError>
where
    T: Serialize,
    F: FnOnce() -> Fut,
    Fut: Future<Output = StepResult<T>>,
{
    match AssertUnwindSafe(f()).catch_unwind().await {
        Ok(Ok(value)) => serde_json::to_value(value)
            .map_err(|err| StepError::non_retriable(format!("step `{name}`: output is not JSON: {err}"))),
        Ok(Err(err)) => Err(err),
        Err(panic) => Err(StepError::new(format!("step `{name}` panicked: {}", panic_message(&panic)))),
    }
}

pub(crate) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Never resolves: how a step suspends the workflow. The driver drops the future.
async fn halt<T>() -> T {
    futures::future::pending().await
}

/// Resolves when the engine allows this step to execute.
struct Permit<'a> {
    shared: &'a Mutex<Shared>,
    id: &'a StepId,
}

impl Future for Permit<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        // The engine re-polls the workflow after every permit, so no waker is needed.
        if lock(self.shared).permitted.as_ref() == Some(self.id) { Poll::Ready(()) } else { Poll::Pending }
    }
}

/// Resolves with the record the driver committed for this step.
struct Settled<'a> {
    shared: &'a Mutex<Shared>,
    id: &'a StepId,
}

impl Future for Settled<'_> {
    type Output = StepRecord;
    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<StepRecord> {
        match lock(self.shared).settled.remove(self.id) {
            Some(record) => Poll::Ready(record),
            None => Poll::Pending,
        }
    }
}
