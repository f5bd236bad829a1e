//! The [`Runner`]: drives runs to their next suspension over any [`RunStore`], [`Bus`] and
//! [`Timer`]. It loads the journal, executes, commits each step as it completes, and keeps
//! going in the same invocation until the run completes, sleeps longer than a threshold, waits
//! for an event, or its time budget runs out; then it hands over to the [`Timer`], and a later
//! [`Runner::drive`] resumes the run.

mod lease;
mod recovery;

pub use recovery::{RECONCILE_BATCH, Reconciled};

use crate::bus::{Bus, BusError, Timer};
use crate::clock::{Clock, SystemClock};
use crate::engine::{Execution, Op, OpKind, Outcome};
use crate::error::{EngineError, StepError};
use crate::event::{EventPayload, FAILED_EVENT, FINISHED_EVENT, INVOKED_EVENT};
use crate::function::Registry;
use crate::id::{RunId, StepId, new_event_id};
use crate::lifecycle::transition;
use crate::lifecycle::waits::invoke_resolved;
use crate::lifecycle::{ControlError, RunControl, RunEnd, WaitMatch, invoke_answer, match_wait};
use crate::record::{InvokedBy, Millis, RunMeta, RunStatus, StepKind, StepRecord, StepState, Wait};
use crate::step::millis;
use crate::store::{Commit, CreateRun, RunStore, StoreError};
use lease::{Halt, Hold, Released};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tracing::Instrument;

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

/// What a [`Runner::drive`] call left the run in.
#[derive(Clone, Debug, PartialEq)]
pub enum Drive {
    /// The run finished with this output.
    Completed(Value),
    /// The run finally failed.
    Failed(StepError),
    /// The run is suspended; the [`Timer`] will wake it (at `wake_at`), or an event will.
    Suspended {
        /// Sleeping or waiting.
        status: RunStatus,
        /// When the timer fires.
        wake_at: Option<Millis>,
    },
    /// The budget ran out; the run continues in a fresh call (already scheduled).
    Continued,
    /// Another invocation holds the run's lease; this one did nothing.
    Busy,
    /// The run had already finished; nothing was done.
    AlreadyFinished(RunStatus),
    /// The run's function is not registered with this runner; nothing was done.
    NotRegistered(String),
}

/// The engine dates a step's record when its pass began; a `step.run` that reached its final
/// state ended when its code returned, `now`.
fn ended_at(outcome: Outcome, now: Millis) -> Outcome {
    let stamp = |mut record: StepRecord| {
        if record.kind == StepKind::Run && record.ended_at.is_some() {
            record.ended_at = Some(now.max(record.started_at));
        }
        record
    };
    match outcome {
        Outcome::StepCompleted(record) => Outcome::StepCompleted(stamp(record)),
        Outcome::StepFailed { record, retry_at } => Outcome::StepFailed { record: stamp(record), retry_at },
        other => other,
    }
}

/// What [`Runner::accept_detailed`] did with a delivered event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Accepted {
    /// The runs to drive: those it started or found started, and those whose wait it resolved.
    pub runs: Vec<RunId>,
    /// The runs this delivery created, with their function ids (none for a duplicate delivery).
    pub started: Vec<(RunId, String)>,
}

/// What a run reports while it is driven, e.g. streamed to a caller as NDJSON.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Progress {
    /// This invocation took the run's lease and started (or resumed) executing it.
    RunStarted {
        /// The run.
        run_id: RunId,
        /// Its function.
        function_id: String,
    },
    /// A step reached a final state (or failed an attempt, with `retry_at`).
    StepCompleted {
        /// The run.
        run_id: RunId,
        /// The step's id.
        step_id: StepId,
        /// Its name.
        name: String,
        /// `run`, `sleep`, ...
        kind: String,
        /// `completed`, `failed` or `retrying`.
        state: String,
        /// Attempts made.
        attempts: u32,
        /// From the step's start (its first attempt, or when it was scheduled) to its final
        /// state; `None` while it is retrying.
        #[serde(skip_serializing_if = "Option::is_none")]
        duration_ms: Option<Millis>,
    },
    /// The run is suspended until a time or an event.
    RunSuspended {
        /// The run.
        run_id: RunId,
        /// Sleeping or waiting.
        status: RunStatus,
        /// When the timer wakes it.
        wake_at: Option<Millis>,
    },
    /// The run checkpointed at its budget and continues in a fresh invocation.
    RunContinued {
        /// The run.
        run_id: RunId,
    },
    /// The run finished with an output.
    RunCompleted {
        /// The run.
        run_id: RunId,
        /// Its output.
        output: Value,
    },
    /// The run finally failed.
    RunFailed {
        /// The run.
        run_id: RunId,
        /// Its error.
        error: StepError,
    },
}

/// Receives [`Progress`] while a run is driven.
pub type ProgressSink<'a> = &'a (dyn Fn(Progress) + Send + Sync);

/// A Runner failure: the run is untouched beyond what was committed, and driving it again
/// resumes it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunnerError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The bus or timer failed.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// No such run.
    #[error("run {0} not found")]
    UnknownRun(RunId),
    /// An event was rejected.
    #[error("invalid event: {0}")]
    InvalidEvent(String),
}

impl From<ControlError> for RunnerError {
    fn from(error: ControlError) -> Self {
        match error {
            ControlError::Store(error) => RunnerError::Store(error),
            ControlError::Bus(error) => RunnerError::Bus(error),
            ControlError::NotFound(run_id) => RunnerError::UnknownRun(run_id),
            other => RunnerError::Store(StoreError::Backend(other.to_string())),
        }
    }
}

/// Drives runs of the functions in a [`Registry`].
#[derive(Debug)]
pub struct Runner<S, B, T> {
    registry: Registry,
    store: S,
    bus: B,
    timer: T,
    clock: Arc<dyn Clock>,
    config: RunnerConfig,
}

static DRIVE_SEQUENCE: AtomicU64 = AtomicU64::new(0);

impl<S: RunStore, B: Bus, T: Timer> Runner<S, B, T> {
    /// A runner on the system clock with default configuration.
    pub fn new(registry: Registry, store: S, bus: B, timer: T) -> Self {
        Runner { registry, store, bus, timer, clock: Arc::new(SystemClock), config: RunnerConfig::default() }
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

    /// Sends an event from application code (assigning an id and timestamp if missing).
    ///
    /// # Errors
    /// [`RunnerError::InvalidEvent`] naming the problem, or the bus's error.
    pub async fn send(&self, mut event: EventPayload) -> Result<String, RunnerError> {
        event.validate().map_err(RunnerError::InvalidEvent)?;
        let now = self.clock.now();
        let id = event.id.get_or_insert_with(|| new_event_id(now)).clone();
        event.ts.get_or_insert(now);
        self.bus.send(std::slice::from_ref(&event)).await?;
        Ok(id)
    }

    /// Handles one delivered event: starts a run of every function it triggers (once per event
    /// id, however often it is delivered) and resolves the waits it satisfies. Returns the runs
    /// to drive.
    ///
    /// # Errors
    /// [`RunnerError::InvalidEvent`] for an event without an id or with a bad shape; store errors.
    pub async fn accept(&self, event: &EventPayload) -> Result<Vec<RunId>, RunnerError> {
        Ok(self.accept_detailed(event).await?.runs)
    }

    /// [`Runner::accept`], also saying which runs this delivery created (for metrics: a
    /// duplicate delivery creates none).
    ///
    /// # Errors
    /// As [`Runner::accept`].
    pub async fn accept_detailed(&self, event: &EventPayload) -> Result<Accepted, RunnerError> {
        event.validate().map_err(RunnerError::InvalidEvent)?;
        let event_id =
            event.id.clone().ok_or_else(|| RunnerError::InvalidEvent(format!("event `{}` has no id", event.name)))?;
        let now = self.clock.now();
        if !self.config.wait_lookback.is_zero() {
            self.store.record_event(event, now).await?;
        }
        let mut runs = Vec::new();
        let mut started = Vec::new();
        if event.name == INVOKED_EVENT {
            if let Some((run, created)) = self.start_invoked(event, now).await? {
                if let Some(function_id) = created {
                    started.push((run.clone(), function_id));
                }
                runs.push(run);
            }
        } else {
            if event.name == FINISHED_EVENT
                && let Some(run) = self.answer_invoke(event, now).await?
            {
                runs.push(run);
            }
            let mut failure: Option<EventPayload> = None;
            for function in self.registry.triggered_by(event) {
                let run_id = RunId::for_event(function.id(), &event_id);
                let trigger = if event.name == FAILED_EVENT {
                    if failure.is_none() {
                        failure = Some(self.with_failed_run_event(event).await?);
                    }
                    failure.clone().unwrap_or_else(|| event.clone())
                } else {
                    event.clone()
                };
                let meta = RunMeta::new(run_id.clone(), function.id(), trigger, now);
                match self.store.create_run(transition::created(meta, now, self.durations())).await? {
                    CreateRun::Created(_) => {
                        tracing::info!(function = function.id(), run_id = %run_id, "run started");
                        started.push((run_id.clone(), function.id().to_string()));
                    }
                    CreateRun::Existing(_) => tracing::debug!(run_id = %run_id, "duplicate delivery, run exists"),
                }
                runs.push(run_id);
            }
        }
        for wait in self.store.waits_for(&event.name).await? {
            if self.resolve_wait(&wait, event, now, true).await?.is_some() && !runs.contains(&wait.run_id) {
                runs.push(wait.run_id.clone());
            }
        }
        Ok(Accepted { runs, started })
    }

    /// A failure event with the failed run's triggering event in full, read from the run's head
    /// (the bus carries only its name and id). Unchanged if the head is gone or not this app's.
    async fn with_failed_run_event(&self, event: &EventPayload) -> Result<EventPayload, RunnerError> {
        let mut event = event.clone();
        let (Some(run_id), Some(function_id)) = (event.data["run_id"].as_str(), event.data["function_id"].as_str())
        else {
            return Ok(event);
        };
        if let Some(journal) = self.store.load(&RunId::new(run_id)).await?
            && journal.meta.function_id == function_id
        {
            event.data["event"] = serde_json::to_value(&journal.meta.event).unwrap_or(Value::Null);
        }
        Ok(event)
    }

    /// The invoked run, with its function id if this delivery created it.
    async fn start_invoked(
        &self,
        event: &EventPayload,
        now: Millis,
    ) -> Result<Option<(RunId, Option<String>)>, RunnerError> {
        let meta = &event.data["_inngest"];
        let (Some(function_id), Some(correlation)) =
            (meta["fn_id"].as_str(), meta["correlation_id"].as_str().and_then(|c| c.split_once('.')))
        else {
            return Err(RunnerError::InvalidEvent(format!(
                "`{INVOKED_EVENT}` needs data._inngest.fn_id and correlation_id"
            )));
        };
        let invoked_by = InvokedBy { run_id: RunId::new(correlation.0), step_id: StepId::from_hashed(correlation.1) };
        if self.registry.get(function_id).is_none() {
            let error = StepError::non_retriable(format!("invoked function `{function_id}` does not exist"));
            self.resolve_invoke(&invoked_by, Err(error), now).await?;
            return Ok(None);
        }
        let event_id = event.id.clone().unwrap_or_default();
        let run_id = RunId::for_event(function_id, &event_id);
        let mut run = RunMeta::new(run_id.clone(), function_id, event.clone(), now);
        run.invoked_by = Some(invoked_by);
        let created = matches!(
            self.store.create_run(transition::created(run, now, self.durations())).await?,
            CreateRun::Created(_)
        );
        Ok(Some((run_id, created.then(|| function_id.to_string()))))
    }

    /// Completes `wait` with `event` if it matches; returns the committed record. With `wake`,
    /// the run is woken to continue (not needed when the caller is driving it).
    async fn resolve_wait(
        &self,
        wait: &Wait,
        event: &EventPayload,
        now: Millis,
        wake: bool,
    ) -> Result<Option<StepRecord>, RunnerError> {
        let journal = match self.store.load(&wait.run_id).await? {
            Some(journal) if !journal.meta.status.is_finished() => journal,
            // Gone, or ended (cancelled) while it waited: nothing to resume.
            _ => {
                self.store.remove_wait(&wait.event, &wait.run_id, &wait.step_id).await?;
                return Ok(None);
            }
        };
        let record = match match_wait(
            &journal.meta.event,
            &journal.steps,
            &wait.step_id,
            wait.expression.as_deref(),
            event,
            now,
        ) {
            WaitMatch::Resumes(record) => *record,
            WaitMatch::NoMatch => return Ok(None),
            WaitMatch::Stale => {
                // Resolved already (a timeout, or a crash before the wait was removed): drop it.
                self.store.remove_wait(&wait.event, &wait.run_id, &wait.step_id).await?;
                return Ok(None);
            }
        };
        // From outside the run (`wake`): the commit and the run's wake-up are one write, so the
        // run is resumed (by the message below, or else the reconciler) even if we die now.
        let commit = if wake {
            self.store.commit_and_wake(&wait.run_id, &record, now).await?
        } else {
            self.store.commit_step(&wait.run_id, &record).await?
        };
        let resolved = matches!(commit, Commit::Committed);
        self.store.remove_wait(&wait.event, &wait.run_id, &wait.step_id).await?;
        if resolved && wake {
            self.timer
                .wake_at(&wait.run_id, &journal.meta.function_id, &format!("event-{}", wait.step_id), now)
                .await?;
        }
        Ok(resolved.then_some(record))
    }

    async fn resolve_invoke(
        &self,
        invoked_by: &InvokedBy,
        result: Result<Value, StepError>,
        now: Millis,
    ) -> Result<(), RunnerError> {
        let Some(journal) = self.store.load(&invoked_by.run_id).await? else {
            return Ok(());
        };
        let Some(step) = journal.steps.iter().find(|record| record.id == invoked_by.step_id) else {
            return Ok(());
        };
        let record = invoke_resolved(step, result, now);
        if let Commit::Committed = self.store.commit_and_wake(&invoked_by.run_id, &record, now).await? {
            self.timer
                .wake_at(&invoked_by.run_id, &journal.meta.function_id, &format!("invoke-{}", invoked_by.step_id), now)
                .await?;
        }
        Ok(())
    }

    /// An `inngest/function.finished` event answering one of this runner's `step.invoke`s
    /// (its `data.correlation_id` names the caller's run and step): resolves that step.
    /// Returns the caller's run, to drive.
    async fn answer_invoke(&self, event: &EventPayload, now: Millis) -> Result<Option<RunId>, RunnerError> {
        let Some((invoked_by, result)) = invoke_answer(event) else {
            return Ok(None);
        };
        let Some(caller) = self.store.load(&invoked_by.run_id).await? else { return Ok(None) };
        if self.registry.get(&caller.meta.function_id).is_none() {
            return Ok(None); // another binary's run
        }
        self.resolve_invoke(&invoked_by, result, now).await?;
        Ok(Some(invoked_by.run_id))
    }

    /// Drives a run to its next suspension (or its end).
    ///
    /// # Errors
    /// Store, bus or timer failures; whatever was committed stays committed, and driving the run
    /// again resumes it.
    pub async fn drive(&self, run_id: &RunId) -> Result<Drive, RunnerError> {
        self.drive_until(run_id, self.clock.now() + millis(self.config.budget)).await
    }

    /// Drives a run like [`Runner::drive`], but stops starting new steps at `deadline` (ms since
    /// the epoch), e.g. the Lambda deadline minus a margin.
    ///
    /// # Errors
    /// As [`Runner::drive`].
    pub async fn drive_until(&self, run_id: &RunId, deadline: Millis) -> Result<Drive, RunnerError> {
        self.drive_observed(run_id, deadline, &|_| {}).await
    }

    /// Drives a run like [`Runner::drive_until`], reporting [`Progress`] to `progress` as steps
    /// complete and when the run suspends or ends.
    ///
    /// # Errors
    /// As [`Runner::drive`].
    pub async fn drive_observed(
        &self,
        run_id: &RunId,
        deadline: Millis,
        progress: ProgressSink<'_>,
    ) -> Result<Drive, RunnerError> {
        let span = tracing::info_span!("run", run_id = %run_id, function = tracing::field::Empty, attempt = tracing::field::Empty);
        // Each drive is its own lease owner: two concurrent drives in one process exclude each
        // other exactly as two Lambda invocations do.
        let owner = format!("{}#{}", self.config.owner, DRIVE_SEQUENCE.fetch_add(1, Ordering::Relaxed));
        // Boxed: the run loop's state machine is deep, and callers nest it further (Lambda, HTTP).
        let drive = match Box::pin(self.drive_inner(run_id, deadline, &owner, progress)).instrument(span).await {
            Ok(drive) | Err(Halt::Stop(drive)) => drive,
            Err(Halt::Failed(error)) => {
                self.abandon(run_id, &owner).await;
                return Err(error);
            }
        };
        let run_id = run_id.clone();
        match &drive {
            Drive::Suspended { status, wake_at } => {
                progress(Progress::RunSuspended { run_id, status: *status, wake_at: *wake_at })
            }
            Drive::Continued => progress(Progress::RunContinued { run_id }),
            Drive::Completed(output) => progress(Progress::RunCompleted { run_id, output: output.clone() }),
            Drive::Failed(error) => progress(Progress::RunFailed { run_id, error: error.clone() }),
            Drive::Busy | Drive::AlreadyFinished(_) | Drive::NotRegistered(_) => {}
        }
        Ok(drive)
    }

    async fn drive_inner(
        &self,
        run_id: &RunId,
        deadline: Millis,
        owner: &str,
        progress: ProgressSink<'_>,
    ) -> Result<Drive, Halt> {
        let mut started = false;
        let mut conflicts = 0;
        'replay: loop {
            let journal = self.store.load(run_id).await?.ok_or_else(|| RunnerError::UnknownRun(run_id.clone()))?;
            let meta = journal.meta;
            if meta.status.is_finished() {
                if !meta.outbox.is_empty() {
                    // The drive that finished it died before delivering: deliver now.
                    self.deliver_outbox(meta.clone()).await?;
                }
                return Ok(Drive::AlreadyFinished(meta.status));
            }
            if self.registry.get(&meta.function_id).is_none() {
                // Another binary's run (a misrouted resume): leave it untouched for its owner.
                tracing::warn!(function = %meta.function_id, "run belongs to a function not registered here");
                return Ok(Drive::NotRegistered(meta.function_id));
            }
            let now = self.clock.now();
            let mut hold = match &meta.lease {
                Some(lease) if lease.owner == owner => Hold { meta, owner: owner.to_string(), poked: false },
                Some(lease) if lease.expires_at > now => {
                    let until = lease.expires_at;
                    return Err(self.busy(&meta, until).await);
                }
                _ => match self.take_lease(meta, owner).await? {
                    Some(hold) => hold,
                    None if conflicts < 5 => {
                        conflicts += 1;
                        continue 'replay;
                    }
                    None => {
                        let lease_end = now + millis(self.config.lease);
                        let meta =
                            self.store.load(run_id).await?.ok_or_else(|| RunnerError::UnknownRun(run_id.clone()))?.meta;
                        return Err(self.busy(&meta, lease_end).await);
                    }
                },
            };
            tracing::Span::current()
                .record("function", hold.meta.function_id.as_str())
                .record("attempt", hold.meta.attempt);
            if !started {
                started = true;
                progress(Progress::RunStarted { run_id: run_id.clone(), function_id: hold.meta.function_id.clone() });
            }
            if let Some(retry_at) = hold.meta.retry_at.filter(|at| *at > now) {
                match self.wait_until(&mut hold, retry_at, deadline, RunStatus::Sleeping, "retry").await? {
                    Some(drive) => return Ok(drive),
                    None => continue 'replay,
                }
            }
            let function = self.registry.get(&hold.meta.function_id).cloned().expect("checked before taking the lease");
            let mut execution =
                Execution::new(&function, run_id.clone(), &hold.meta.event, &journal.steps, hold.meta.attempt);
            loop {
                let now = self.clock.now();
                if now >= deadline {
                    // Checkpoint: the run is due now, for the fresh invocation the wake-up starts
                    // (or the reconciler, if that wake-up is lost).
                    match self.release(&mut hold, RunStatus::Running, Some(now)).await? {
                        Released::Done => {
                            self.timer.wake_at(run_id, &hold.meta.function_id, "continue", now).await?;
                            return Ok(Drive::Continued);
                        }
                        Released::Replay => continue 'replay,
                    }
                }
                let outcome = {
                    // A long step keeps the lease alive; if the run is lost meanwhile, stop.
                    let next = std::pin::pin!(execution.next(now));
                    let beat = std::pin::pin!(self.heartbeat(&mut hold));
                    match futures::future::select(next, beat).await {
                        futures::future::Either::Left((outcome, _)) => outcome,
                        futures::future::Either::Right((lost, _)) => return Err(lost),
                    }
                };
                let outcome = match outcome {
                    Ok(outcome) => ended_at(outcome, self.clock.now()),
                    Err(error) => return self.fail_determinism(hold, error).await,
                };
                match outcome {
                    Outcome::StepCompleted(record) | Outcome::StepFailed { record, retry_at: None } => {
                        let adopted = self.commit(&mut hold, record, progress).await?;
                        self.forget_timed_out_wait(run_id, &adopted).await?;
                        execution.committed(adopted);
                    }
                    Outcome::StepFailed { record, retry_at: Some(retry_at) } => {
                        let adopted = self.commit(&mut hold, record, progress).await?;
                        if adopted.state.is_final() {
                            execution.committed(adopted);
                            continue;
                        }
                        match self.wait_until(&mut hold, retry_at, deadline, RunStatus::Sleeping, "retry").await? {
                            Some(drive) => return Ok(drive),
                            None => continue 'replay,
                        }
                    }
                    Outcome::Sleeping { op, until } => {
                        if let Some(record) = self.persist_scheduled(&mut hold, &op, progress).await?
                            && record.state.is_final()
                        {
                            execution.committed(record);
                            continue;
                        }
                        match self
                            .wait_until(&mut hold, until, deadline, RunStatus::Sleeping, &op.id.to_string())
                            .await?
                        {
                            Some(drive) => return Ok(drive),
                            None => continue 'replay,
                        }
                    }
                    Outcome::Waiting { op } => {
                        if self.handle_ops(&mut hold, std::slice::from_ref(&op), &mut execution, progress).await? {
                            continue; // an event received just before the wait matched it
                        }
                        match self.suspend(&mut hold, std::slice::from_ref(&op)).await? {
                            Some(drive) => return Ok(drive),
                            None => continue 'replay,
                        }
                    }
                    Outcome::Planned(ops) => {
                        if self.handle_ops(&mut hold, &ops, &mut execution, progress).await? {
                            continue;
                        }
                        let earliest = ops.iter().filter_map(Op::wake_at).min();
                        let waits_on_others =
                            ops.iter().any(|op| matches!(op.kind, OpKind::WaitForEvent { .. } | OpKind::Invoke { .. }));
                        let suspended = match earliest {
                            Some(at) if !waits_on_others => {
                                self.wait_until(&mut hold, at, deadline, RunStatus::Sleeping, "planned").await?
                            }
                            _ => self.suspend(&mut hold, &ops).await?,
                        };
                        match suspended {
                            Some(drive) => return Ok(drive),
                            None => continue 'replay,
                        }
                    }
                    Outcome::Completed(output) => return self.finish(hold, Ok(output)).await,
                    Outcome::Failed { error, retry_at: Some(retry_at) } => {
                        tracing::warn!(%error, "function failed, will retry");
                        self.keep_lease(&mut hold).await?;
                        let meta = transition::retrying(hold.meta.clone(), retry_at, now);
                        hold.meta = match self.store.update_meta(&meta).await {
                            Ok(stored) => stored,
                            Err(StoreError::Conflict { .. }) => continue 'replay,
                            Err(other) => return Err(other.into()),
                        };
                        match self.wait_until(&mut hold, retry_at, deadline, RunStatus::Sleeping, "retry").await? {
                            Some(drive) => return Ok(drive),
                            None => continue 'replay,
                        }
                    }
                    Outcome::Failed { error, retry_at: None } => return self.finish(hold, Err(error)).await,
                }
            }
        }
    }

    /// Commits a step record while holding the lease (the fence: a drive that lost its run
    /// stops here, without writing); returns the record now stored (ours, or the winner's).
    async fn commit(
        &self,
        hold: &mut Hold,
        record: StepRecord,
        progress: ProgressSink<'_>,
    ) -> Result<StepRecord, Halt> {
        self.keep_lease(hold).await?;
        let run_id = hold.meta.run_id.clone();
        let (record, commit) = match self.store.commit_step(&run_id, &record).await {
            Err(too_large @ StoreError::TooLarge { .. }) => {
                // No retry can shrink the output: the step fails for good, with the reason.
                let mut failed = record;
                failed.state = StepState::Failed { error: StepError::non_retriable(too_large.to_string()) };
                let commit = self.store.commit_step(&run_id, &failed).await?;
                (failed, commit)
            }
            other => (record, other?),
        };
        let stored = match commit {
            Commit::Committed => record,
            Commit::Existing(winner) => {
                tracing::debug!(step.id = %winner.id, "step already committed by another invocation; adopting its result");
                *winner
            }
        };
        let state = match &stored.state {
            StepState::Completed { .. } => "completed",
            StepState::Failed { .. } => "failed",
            StepState::Retrying { .. } => "retrying",
            StepState::Scheduled { .. } => return Ok(stored),
        };
        progress(Progress::StepCompleted {
            run_id,
            step_id: stored.id.clone(),
            name: stored.name.clone(),
            kind: stored.kind.to_string(),
            state: state.to_string(),
            attempts: stored.attempts,
            duration_ms: stored.ended_at.map(|ended| ended.saturating_sub(stored.started_at)),
        });
        Ok(stored)
    }

    /// Records a new sleep, wait or invoke as scheduled; returns what is stored (a final record
    /// if someone resolved the step first).
    async fn persist_scheduled(
        &self,
        hold: &mut Hold,
        op: &Op,
        progress: ProgressSink<'_>,
    ) -> Result<Option<StepRecord>, Halt> {
        match op.scheduled_record() {
            Some(record) if op.new => Ok(Some(self.commit(hold, record, progress).await?)),
            _ => Ok(None),
        }
    }

    /// A wait that timed out leaves its registration behind; remove it.
    async fn forget_timed_out_wait(&self, run_id: &RunId, record: &StepRecord) -> Result<(), RunnerError> {
        if record.kind == StepKind::WaitForEvent
            && let Some(event) = record.detail.as_ref().and_then(|detail| detail["event"].as_str())
        {
            self.store.remove_wait(event, run_id, &record.id).await?;
        }
        Ok(())
    }

    /// Performs what the driver owes planned ops; `true` if a step was committed (so the
    /// execution can go on at once).
    async fn handle_ops(
        &self,
        hold: &mut Hold,
        ops: &[Op],
        execution: &mut Execution,
        progress: ProgressSink<'_>,
    ) -> Result<bool, Halt> {
        let now = self.clock.now();
        let run_id = hold.meta.run_id.clone();
        let mut progressed = false;
        for op in ops {
            match &op.kind {
                OpKind::SendEvent { events } => {
                    let ids = self.bus.send(events).await?;
                    let adopted = self.commit(hold, op.completed_record(json!({ "ids": ids }), now), progress).await?;
                    execution.committed(adopted);
                    progressed = true;
                }
                OpKind::WaitForEvent { event, expression, timeout_at } => {
                    // Registered on every pass, not only the first: a crash between the
                    // scheduled record and the wait must not leave the run deaf (idempotent).
                    if let Some(record) = self.persist_scheduled(hold, op, progress).await?
                        && record.state.is_final()
                    {
                        execution.committed(record);
                        progressed = true;
                        continue;
                    }
                    let wait = Wait {
                        event: event.clone(),
                        run_id: run_id.clone(),
                        step_id: op.id.clone(),
                        expression: expression.clone(),
                        timeout_at: *timeout_at,
                        created_at: now,
                    };
                    self.store.put_wait(&wait).await?;
                    if !self.config.wait_lookback.is_zero() {
                        let since = now - millis(self.config.wait_lookback);
                        for earlier in self.store.events_since(event, since).await? {
                            self.keep_lease(hold).await?;
                            if let Some(record) = self.resolve_wait(&wait, &earlier, now, false).await? {
                                tracing::info!(step.id = %op.id, "wait matched an event received before it began");
                                execution.committed(record);
                                progressed = true;
                                break;
                            }
                        }
                    }
                }
                OpKind::Invoke { function_id, data, .. } => {
                    // Sent again on later passes for the same reason; the event id (so the
                    // child run) is derived from the step, so a resend starts nothing new.
                    if let Some(record) = self.persist_scheduled(hold, op, progress).await?
                        && record.state.is_final()
                    {
                        execution.committed(record);
                        progressed = true;
                        continue;
                    }
                    let mut payload = data.clone();
                    if !payload.is_object() {
                        payload = json!({});
                    }
                    payload["_inngest"] = json!({
                        "fn_id": function_id,
                        "correlation_id": format!("{}.{}", run_id, op.id),
                        "source_fn_id": hold.meta.function_id,
                    });
                    let event = EventPayload::new(INVOKED_EVENT, payload)
                        .with_id(StepId::hash(&format!("{run_id}/{}", op.id)).as_str()[..26].to_string())
                        .with_ts(now);
                    self.bus.send(std::slice::from_ref(&event)).await?;
                }
                OpKind::Sleep { .. } => {
                    if let Some(record) = self.persist_scheduled(hold, op, progress).await?
                        && record.state.is_final()
                    {
                        execution.committed(record);
                        progressed = true;
                    }
                }
                _ => {}
            }
        }
        Ok(progressed)
    }

    /// Sleeps in process when `until` is near and within the budget (`None`: replay now), or
    /// gives the run up (due at `until`) and then arms the timer.
    async fn wait_until(
        &self,
        hold: &mut Hold,
        until: Millis,
        deadline: Millis,
        status: RunStatus,
        key: &str,
    ) -> Result<Option<Drive>, Halt> {
        let now = self.clock.now();
        if until <= now {
            return Ok(None);
        }
        if until - now <= millis(self.config.sleep_threshold) && until < deadline {
            // Held through the sleep: renew first if the lease would lapse meanwhile.
            if hold.meta.lease.as_ref().is_some_and(|lease| lease.expires_at < until + millis(self.config.lease) / 2) {
                self.keep_lease(hold).await?;
            }
            self.clock.sleep_until(until).await;
            return Ok(None);
        }
        match self.release(hold, status, Some(until)).await? {
            Released::Replay => Ok(None),
            Released::Done => {
                self.timer.wake_at(&hold.meta.run_id, &hold.meta.function_id, key, until).await?;
                Ok(Some(Drive::Suspended { status, wake_at: Some(until) }))
            }
        }
    }

    /// Gives a waiting run up (due at its earliest timeout), then arms the timer for it.
    /// `None`: the run was woken meanwhile, replay it.
    async fn suspend(&self, hold: &mut Hold, ops: &[Op]) -> Result<Option<Drive>, Halt> {
        let wake_at = ops.iter().filter_map(Op::wake_at).min();
        match self.release(hold, RunStatus::Waiting, wake_at).await? {
            Released::Replay => Ok(None),
            Released::Done => {
                if let Some(at) = wake_at {
                    self.timer.wake_at(&hold.meta.run_id, &hold.meta.function_id, "timeout", at).await?;
                }
                Ok(Some(Drive::Suspended { status: RunStatus::Waiting, wake_at }))
            }
        }
    }

    async fn fail_determinism(&self, hold: Hold, error: EngineError) -> Result<Drive, Halt> {
        tracing::error!(%error, "the code no longer matches the run's journal");
        self.finish(hold, Err(error.to_step_error())).await
    }

    /// Ends the run: the head records the result and, in the same write, the events owed for it
    /// (its outbox), which are then delivered and acknowledged.
    async fn finish(&self, mut hold: Hold, result: Result<Value, StepError>) -> Result<Drive, Halt> {
        self.keep_lease(&mut hold).await?;
        let now = self.clock.now();
        let mut result = result;
        let mut shrunk = false;
        // The head records the end and, in the same write, the events owed for it (its outbox).
        let stored = loop {
            let meta = transition::ended(hold.meta.clone(), &RunEnd::from(result.clone()), now, self.durations());
            match self.store.update_meta(&meta).await {
                Ok(stored) => break stored,
                Err(too_large @ StoreError::RunTooLarge { .. }) if !shrunk => {
                    // The run fails cleanly, naming the size, rather than never finishing.
                    tracing::error!(error = %too_large, "run result too large to store");
                    result = Err(StepError::non_retriable(too_large.to_string()));
                    shrunk = true;
                }
                // The head moved (a late wake-up): the run ends as decided, unless it is no longer
                // ours (cancelled, or taken over), which `reread` reports.
                Err(StoreError::Conflict { .. }) => self.reread(&mut hold).await?,
                Err(other) => return Err(other.into()),
            }
        };
        match &result {
            Ok(_) => tracing::info!("run completed"),
            Err(error) => tracing::error!(%error, "run failed"),
        }
        let run_id = stored.run_id.clone();
        self.deliver_outbox(stored).await?;
        if let Err(error) = self.timer.forget(&run_id).await {
            tracing::warn!(%error, "could not drop the ended run's pending wake-up; it will find the run ended");
        }
        Ok(match result {
            Ok(output) => Drive::Completed(output),
            Err(error) => Drive::Failed(error),
        })
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
