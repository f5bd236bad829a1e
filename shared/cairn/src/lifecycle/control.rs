//! What an operator does to runs, on any [`RunStore`] with any [`Bus`] and [`Timer`]: cancel,
//! rerun from the start or from the failed step, and the same in bulk over a [`RunQuery`]
//! (bulk cancel, replay). The dashboard, `cairn runs` and the console over a deployed stack
//! all call these, with the store, bus and timers of the environment they operate on.

use super::events::RunEnd;
use super::transition::{self, Durations};
use crate::bus::{Bus, BusError, Timer};
use crate::event::EventPayload;
use crate::id::RunId;
use crate::record::{Millis, RunMeta, RunStatus, StepRecord, StepState, Wait};
use crate::store::{RunQuery, RunStore, StoreError};

/// How many times an operation re-reads a run whose head keeps moving before giving up.
const CONFLICT_ATTEMPTS: usize = 5;

/// Why an operation on a run was refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// No run has this id (or it expired).
    #[error("no run `{0}`")]
    NotFound(RunId),
    /// The run ended already: it cannot be cancelled.
    #[error("run `{run_id}` already ended {status}")]
    AlreadyEnded {
        /// The run.
        run_id: RunId,
        /// How it ended.
        status: RunStatus,
    },
    /// A rerun from the failed step of a run with no failed step.
    #[error("run `{0}` has no failed step; rerun it from the start")]
    NoFailedStep(RunId),
    /// The run's head changed under every attempt (a busy run): nothing was written.
    #[error("run `{0}` kept changing; try again")]
    Contended(RunId),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The bus or a timer failed.
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// Where a rerun starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RerunFrom {
    /// From the first step: nothing is kept.
    #[default]
    Start,
    /// From the first failed step: the steps that completed before it are copied into the new
    /// run, so they do not run again.
    Failed,
}

impl RerunFrom {
    /// Parses `start` or `failed`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "start" => Some(RerunFrom::Start),
            "failed" => Some(RerunFrom::Failed),
            _ => None,
        }
    }

    /// `start` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            RerunFrom::Start => "start",
            RerunFrom::Failed => "failed",
        }
    }
}

/// What a bulk operation did, run by run.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct BulkReport {
    /// Runs the filter matched.
    pub matched: usize,
    /// For a bulk cancel, the runs cancelled; for a replay, `(old run, new run)`.
    pub done: Vec<(RunId, Option<RunId>)>,
    /// Runs left alone, with the reason (ended already, or an error).
    pub skipped: Vec<(RunId, String)>,
}

/// The operations on runs, over one environment's store, bus and timer, at `now`.
#[derive(Debug)]
pub struct RunControl<'a, S, B, T> {
    pub(super) store: &'a S,
    pub(super) bus: &'a B,
    pub(super) timer: &'a T,
    pub(super) now: Millis,
    pub(super) durations: Durations,
}

impl<'a, S: RunStore, B: Bus, T: Timer> RunControl<'a, S, B, T> {
    /// Operations at `now`, keeping heads as `durations` say.
    pub fn new(store: &'a S, bus: &'a B, timer: &'a T, now: Millis, durations: Durations) -> Self {
        RunControl { store, bus, timer, now, durations }
    }

    /// Cancels a running, sleeping or waiting run: its head ends `cancelled` (with
    /// `inngest/function.cancelled` and `inngest/function.finished` in its outbox, so a parent
    /// waiting on it through `step.invoke` gets the cancellation as an error), its pending waits
    /// are removed, its timers forgotten and its outbox delivered. A drive executing a step
    /// meanwhile may finish that step but loses the run at its next commit.
    ///
    /// The head is the truth: if removing waits, forgetting timers or delivering fails, the run
    /// is cancelled all the same (a late wake-up finds it ended; the reconciler delivers the
    /// outbox).
    ///
    /// # Errors
    /// [`ControlError::NotFound`], [`ControlError::AlreadyEnded`], [`ControlError::Contended`],
    /// or the store's error (nothing written).
    pub async fn cancel(&self, run_id: &RunId) -> Result<RunMeta, ControlError> {
        self.cancel_because(run_id, None).await
    }

    /// [`RunControl::cancel`], recording what cancelled the run ([`RunMeta::cancelled_by`]):
    /// flow control's `cancel_on`, `timeouts` and `singleton` say which event, timeout or run.
    ///
    /// # Errors
    /// As [`RunControl::cancel`].
    pub async fn cancel_because(&self, run_id: &RunId, because: Option<String>) -> Result<RunMeta, ControlError> {
        Ok(self.cancel_replacing(run_id, because).await?.1)
    }

    /// [`RunControl::cancel_because`], returning also the head the cancellation replaced: the
    /// run as it was at that moment (whether an invocation held its lease, say).
    ///
    /// # Errors
    /// As [`RunControl::cancel`].
    pub async fn cancel_replacing(
        &self,
        run_id: &RunId,
        because: Option<String>,
    ) -> Result<(RunMeta, RunMeta), ControlError> {
        for _ in 0..CONFLICT_ATTEMPTS {
            let journal = self.store.load(run_id).await?.ok_or_else(|| ControlError::NotFound(run_id.clone()))?;
            let meta = journal.meta;
            if meta.status.is_finished() {
                return Err(ControlError::AlreadyEnded { run_id: run_id.clone(), status: meta.status });
            }
            let was_queued = meta.status == RunStatus::Queued;
            let replaced = meta.clone();
            let mut cancelled = transition::ended(meta, &RunEnd::Cancelled, self.now, self.durations);
            cancelled.cancelled_by.clone_from(&because);
            let stored = match self.store.update_meta(&cancelled).await {
                Ok(stored) => stored,
                Err(StoreError::Conflict { .. }) => continue,
                Err(other) => return Err(other.into()),
            };
            tracing::info!(run_id = %run_id, function = %stored.function_id, because = ?because, "run cancelled");
            for step in journal.steps.iter().filter(|step| matches!(step.state, StepState::Scheduled { .. })) {
                if let Some(wait) = Wait::of_step(&stored.event, run_id, step)
                    && let Err(error) = self.store.remove_wait(&wait).await
                {
                    tracing::warn!(%error, "could not remove a cancelled run's wait; it will find the run ended");
                }
            }
            // A window's placeholder takes its window with it: a later event opens a new one.
            if let Some(key) = stored.window_key.as_deref() {
                let drop = crate::flow::WindowChange::Drop { run_id: run_id.clone() };
                if let Err(error) = self.store.window(&[key], &drop, self.now).await {
                    tracing::warn!(%error, "could not drop a cancelled window; its events join it until it fires");
                }
            }
            if let Err(error) = self.timer.forget(run_id).await {
                tracing::warn!(%error, "could not drop a cancelled run's wake-ups; they will find the run ended");
            }
            // A run cancelled while queued still sits in its throttle or concurrency queue, ahead
            // of later runs: woken once more, its driver finds it ended and takes it out (the
            // wake-up that would have done so was just forgotten).
            if was_queued
                && let Err(error) = self.timer.wake_at(run_id, &stored.function_id, "leave-queues", self.now).await
            {
                tracing::warn!(%error, "could not wake a cancelled queued run; its queue's recheck will");
            }
            if let Err(error) = deliver_outbox(self.store, self.bus, stored.clone()).await {
                tracing::warn!(%error, "could not deliver a cancelled run's events; the reconciler will");
            }
            return Ok((replaced, stored));
        }
        Err(ControlError::Contended(run_id.clone()))
    }

    /// Starts a new run of `run_id`'s function with the same event, from the start or from its
    /// failed step, and wakes it through the timer. Returns the new run's id.
    ///
    /// # Errors
    /// [`ControlError::NotFound`], [`ControlError::NoFailedStep`], or a store, bus or timer
    /// error (a new run already created is then started by the reconciler).
    pub async fn rerun(&self, run_id: &RunId, from: RerunFrom) -> Result<RunId, ControlError> {
        let journal = self.store.load(run_id).await?.ok_or_else(|| ControlError::NotFound(run_id.clone()))?;
        let keep: Vec<&StepRecord> = match from {
            RerunFrom::Start => Vec::new(),
            RerunFrom::Failed => {
                let failed = journal
                    .steps
                    .iter()
                    .find(|step| matches!(step.state, StepState::Failed { .. }))
                    .ok_or_else(|| ControlError::NoFailedStep(run_id.clone()))?;
                journal
                    .steps
                    .iter()
                    .filter(|step| step.position < failed.position && matches!(step.state, StepState::Completed { .. }))
                    .collect()
            }
        };
        let function_id = journal.meta.function_id.clone();
        let marker = format!("{run_id}/rerun/{}", crate::id::new_event_id(self.now));
        let new_id = RunId::for_event(&function_id, &marker);
        let meta = RunMeta::new(new_id.clone(), function_id.clone(), journal.meta.event.clone(), self.now);
        // Due one lease from now, so the copied steps are in place before anything drives it.
        self.store.create_run(transition::created(meta, self.now, self.durations)).await?;
        for step in keep {
            self.store.commit_step(&new_id, step).await?;
        }
        self.timer.wake_at(&new_id, &function_id, "rerun", self.now).await?;
        tracing::info!(run_id = %run_id, new_run_id = %new_id, from = from.as_str(), "run rerun");
        Ok(new_id)
    }

    /// Starts a run of `function_id` with `event` (given an id if it has none) and wakes it
    /// through the timer, as if the event had been routed to that function alone: the
    /// dashboard's and `cairn invoke`'s "run this function now". The run id derives from the
    /// function and the event id, so invoking twice with one event starts one run.
    ///
    /// # Errors
    /// The store's or the timer's error (a run already created is then started by the
    /// reconciler).
    pub async fn invoke(&self, function_id: &str, mut event: EventPayload) -> Result<RunId, ControlError> {
        let event_id = event.id.get_or_insert_with(|| crate::id::new_event_id(self.now)).clone();
        if event.ts.is_none() {
            event.ts = Some(self.now);
        }
        let run_id = RunId::for_event(function_id, &event_id);
        let meta = RunMeta::new(run_id.clone(), function_id.to_string(), event, self.now);
        self.store.create_run(transition::created(meta, self.now, self.durations)).await?;
        self.timer.wake_at(&run_id, function_id, "invoke", self.now).await?;
        tracing::info!(run_id = %run_id, function = function_id, "run invoked");
        Ok(run_id)
    }

    /// Cancels every unfinished run `query` matches (its `status` filter, if any, applies too).
    ///
    /// # Errors
    /// Listing failed; a run that cannot be cancelled is reported in [`BulkReport::skipped`].
    pub async fn cancel_matching(&self, query: &RunQuery) -> Result<BulkReport, ControlError> {
        let runs = self.store.list_runs(query).await?;
        let mut report = BulkReport { matched: runs.len(), ..BulkReport::default() };
        for run in runs {
            match self.cancel(&run.run_id).await {
                Ok(_) => report.done.push((run.run_id, None)),
                Err(error) => report.skipped.push((run.run_id, error.to_string())),
            }
        }
        Ok(report)
    }

    /// Reruns every run `query` matches (a replay), each as a new run from `from`.
    ///
    /// # Errors
    /// Listing failed; a run that cannot be rerun is reported in [`BulkReport::skipped`].
    pub async fn replay_matching(&self, query: &RunQuery, from: RerunFrom) -> Result<BulkReport, ControlError> {
        let runs = self.store.list_runs(query).await?;
        let mut report = BulkReport { matched: runs.len(), ..BulkReport::default() };
        for run in runs {
            match self.rerun(&run.run_id, from).await {
                Ok(new_id) => report.done.push((run.run_id, Some(new_id))),
                Err(error) => report.skipped.push((run.run_id, error.to_string())),
            }
        }
        Ok(report)
    }
}

/// Sends an ended run's outbox and releases its flow-control locks ([`RunMeta::holds`]: a
/// singleton key), then acknowledges it (clears both and takes the run out of the reconciler's
/// index). Sending or releasing twice is harmless: the events keep their ids, and a lock is
/// released only by its holder.
///
/// # Errors
/// The bus's or the store's error; the outbox stays, and the reconciler delivers it.
pub async fn deliver_outbox<S: RunStore, B: Bus>(store: &S, bus: &B, mut meta: RunMeta) -> Result<(), ControlError> {
    if !meta.outbox.is_empty() {
        bus.send(&meta.outbox).await?;
    }
    if meta.status.is_finished() {
        for key in &meta.holds {
            store.release_lock(key, &meta.run_id).await?;
        }
    }
    loop {
        match store.update_meta(&transition::acknowledged(meta.clone())).await {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict { .. }) => {
                let run_id = meta.run_id.clone();
                meta = store.load(&run_id).await?.ok_or(ControlError::NotFound(run_id))?.meta;
                if meta.outbox.is_empty() && meta.wake_at.is_none() {
                    return Ok(());
                }
                if !meta.outbox.is_empty() {
                    // A rerun or another end wrote a new outbox: deliver it too.
                    bus.send(&meta.outbox).await?;
                }
            }
            Err(other) => return Err(other.into()),
        }
    }
}
