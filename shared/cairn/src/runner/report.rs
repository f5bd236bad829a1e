//! What the Runner reports: how a drive left a run, what a delivery started, progress as it
//! happens, and its errors.

use crate::bus::BusError;
use crate::engine::Outcome;
use crate::error::StepError;
use crate::id::{RunId, StepId};
use crate::lifecycle::ControlError;
use crate::record::{Millis, RunStatus, StepKind, StepRecord};
use crate::store::StoreError;
use serde_json::Value;

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
pub(super) fn ended_at(outcome: Outcome, now: Millis) -> Outcome {
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
    /// The runs this delivery cancelled (`cancel_on`) that no invocation was executing, with
    /// their function ids (a run being executed is reported by the drive that finds it
    /// cancelled: [`Drive::AlreadyFinished`]).
    pub cancelled: Vec<(RunId, String)>,
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
    InvalidEvent(#[source] crate::error::EventError),
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
