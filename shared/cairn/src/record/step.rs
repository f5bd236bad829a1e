//! One step of a run's journal: what the code asked for and where it stands.

use crate::clock::Millis;
use crate::error::StepError;
use crate::id::StepId;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

/// The kind of a step, as the code asked for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// `step.run`.
    Run,
    /// `step.sleep` / `step.sleep_until`.
    Sleep,
    /// `step.wait_for_event`.
    WaitForEvent,
    /// `step.send_event`.
    SendEvent,
    /// `step.invoke`.
    Invoke,
}

impl StepKind {
    /// The name used in messages and the store (`run`, `sleep`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Run => "run",
            StepKind::Sleep => "sleep",
            StepKind::WaitForEvent => "wait_for_event",
            StepKind::SendEvent => "send_event",
            StepKind::Invoke => "invoke",
        }
    }

    /// Parses [`StepKind::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "run" => StepKind::Run,
            "sleep" => StepKind::Sleep,
            "wait_for_event" => StepKind::WaitForEvent,
            "send_event" => StepKind::SendEvent,
            "invoke" => StepKind::Invoke,
            _ => return None,
        })
    }
}

impl fmt::Display for StepKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a step stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum StepState {
    /// A sleep, wait or invoke in flight: it resolves at `wake_at` at the latest.
    Scheduled {
        /// When the sleep ends or the wait / invoke times out.
        wake_at: Millis,
    },
    /// A `run` whose last attempt failed and that will be attempted again at `retry_at`.
    Retrying {
        /// The last attempt's error.
        error: StepError,
        /// When the next attempt may start.
        retry_at: Millis,
    },
    /// Finished with an output (JSON `null` for a sleep or a timed-out wait).
    Completed {
        /// The memoized output.
        output: Value,
    },
    /// Finally failed: replays fail with the same error.
    Failed {
        /// The memoized error.
        error: StepError,
    },
}

impl StepState {
    /// Completed or failed: a final record is never overwritten.
    pub fn is_final(&self) -> bool {
        matches!(self, StepState::Completed { .. } | StepState::Failed { .. })
    }
}

/// One step of a run's journal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Hashed step id.
    pub id: StepId,
    /// The step's name as written in code (with no repeat suffix).
    pub name: String,
    /// Its kind.
    pub kind: StepKind,
    /// The order in which the code asked for it (0-based): the determinism check's key.
    pub position: u32,
    /// Where it stands.
    #[serde(flatten)]
    pub state: StepState,
    /// Attempts made so far (1 after the first execution of a `run`).
    pub attempts: u32,
    /// When the step started (first attempt or when it was scheduled).
    pub started_at: Millis,
    /// When it reached a final state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Millis>,
    /// Detail of a scheduled wait or invoke, kept so a resumed run and the dashboard can see it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
}
