//! What a store keeps for a run: its [`RunMeta`] and one [`StepRecord`] per step, with the
//! waits it files ([`Wait`]) and the reasons flow control gives ([`Skipped`], [`Queued`]).

mod flow;
mod step;
mod wait;

pub use flow::{Queued, SkipReason, Skipped};
pub use step::{StepKind, StepRecord, StepState};
pub use wait::{Wait, WaitKey};

use crate::error::StepError;
use crate::event::EventPayload;
use crate::id::{RunId, StepId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

pub use crate::clock::Millis;

/// The status of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Being executed, or ready to be.
    Running,
    /// Suspended until a time (a sleep or a retry back-off).
    Sleeping,
    /// Suspended until an event (or an invoked function) arrives, or a timeout.
    Waiting,
    /// Finished with an output.
    Completed,
    /// Finished with an error.
    Failed,
    /// Cancelled by a user.
    Cancelled,
    /// Never started: flow control turned the event away (see [`RunMeta::skipped`]).
    Skipped,
    /// Waiting for a concurrency slot (see [`RunMeta::queued`]).
    Queued,
}

impl RunStatus {
    /// The name used in the store and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Sleeping => "sleeping",
            RunStatus::Waiting => "waiting",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Skipped => "skipped",
            RunStatus::Queued => "queued",
        }
    }

    /// Parses [`RunStatus::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "running" => RunStatus::Running,
            "sleeping" => RunStatus::Sleeping,
            "waiting" => RunStatus::Waiting,
            "completed" => RunStatus::Completed,
            "failed" => RunStatus::Failed,
            "cancelled" => RunStatus::Cancelled,
            "skipped" => RunStatus::Skipped,
            "queued" => RunStatus::Queued,
            _ => return None,
        })
    }

    /// Completed, failed, cancelled or skipped.
    pub fn is_finished(self) -> bool {
        matches!(self, RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled | RunStatus::Skipped)
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An invocation holding the lease on a run, so two invocations never execute it at once.
/// The holder renews it between steps (and while a long step runs); a holder that died lets it
/// lapse, and the reconciler then resumes the run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Who holds it (an invocation id).
    pub owner: String,
    /// When it lapses if its holder dies.
    pub expires_at: Millis,
}

/// Who invoked a run with `step.invoke`, so its end resolves the caller's step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvokedBy {
    /// The calling run.
    pub run_id: RunId,
    /// The caller's invoke step.
    pub step_id: StepId,
}

/// The head record of a run (DynamoDB `SK = META`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunMeta {
    /// Run id.
    pub run_id: RunId,
    /// The function it runs.
    pub function_id: String,
    /// The triggering event.
    pub event: EventPayload,
    /// Status.
    pub status: RunStatus,
    /// Function-level attempt (errors raised outside steps), 0-based.
    pub attempt: u32,
    /// When a function-level retry may start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<Millis>,
    /// Optimistic-concurrency version: every update must name the version it read.
    pub version: u64,
    /// The lease, when an invocation is executing the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    /// The output of a completed run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// The error of a failed run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<StepError>,
    /// Set when `step.invoke` started this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoked_by: Option<InvokedBy>,
    /// Creation time.
    pub created_at: Millis,
    /// Last update.
    pub updated_at: Millis,
    /// When the run finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Millis>,
    /// When a store may forget the run (DynamoDB TTL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Millis>,
    /// When the run needs a driver even if no message arrives: a sleep's end, a wait's
    /// timeout, the lease's expiry, or soon after an outbox was recorded. Stores index it (with
    /// the function id) for the reconciler; `None` once the run is finished and its outbox
    /// delivered, which takes it out of the index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake_at: Option<Millis>,
    /// Events owed because of the state this head records (`inngest/function.finished`,
    /// `inngest/function.failed`): written in the same write as that state, sent with their
    /// fixed ids until acknowledged (cleared), so a crash after the write never loses them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbox: Vec<EventPayload>,
    /// Flow-control locks the run holds until it ends (a singleton key), released with its
    /// outbox ([`deliver_outbox`](crate::lifecycle::deliver_outbox)).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holds: Vec<String>,
    /// Why flow control skipped the run (status [`RunStatus::Skipped`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<Skipped>,
    /// What cancelled the run, when not an operator: a `cancel_on` event, a timeout, a
    /// singleton's newer run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_by: Option<String>,
    /// Why the run waits (status [`RunStatus::Queued`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued: Option<Queued>,
    /// Its throttle let it start (once: a run queued by concurrency afterwards keeps it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub throttle_passed: bool,
    /// On a window's placeholder run (debounce, batch): the window's store key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_key: Option<String>,
    /// On a window's run that receives every event of its window (a batch; a debounce with
    /// `all_events`): the placeholder they are kept under, read for
    /// [`Step::events`](crate::Step::events). `None`: the trigger alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<RunId>,
    /// What started the run, when a window did: "batch of 3 events", "debounce window of 5
    /// events" (the dashboard and `cairn runs show` say it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
}

impl RunMeta {
    /// A new run in `Running` state at version 0.
    pub fn new(run_id: RunId, function_id: impl Into<String>, event: EventPayload, now: Millis) -> Self {
        RunMeta {
            run_id,
            function_id: function_id.into(),
            event,
            status: RunStatus::Running,
            attempt: 0,
            retry_at: None,
            version: 0,
            lease: None,
            output: None,
            error: None,
            invoked_by: None,
            created_at: now,
            updated_at: now,
            ended_at: None,
            expires_at: None,
            wake_at: None,
            outbox: Vec::new(),
            holds: Vec::new(),
            skipped: None,
            cancelled_by: None,
            queued: None,
            throttle_passed: false,
            window_key: None,
            window: None,
            started_by: None,
        }
    }

    /// Keeps the head `retention` ms past the last moment the run needs it: its next wake-up
    /// or its last update, whichever is later (once finished, its end). Set on every head write
    /// from creation on, so a run nothing drives any more (its event included) is forgotten one
    /// retention period later, while a run sleeping for a month outlives its sleep.
    pub fn retain_for(&mut self, retention: Millis) {
        let needed = match self.wake_at {
            Some(wake_at) if !self.status.is_finished() => wake_at.max(self.updated_at),
            _ => self.updated_at,
        };
        self.expires_at = Some(needed.saturating_add(retention));
    }
}

/// A run as loaded from a store: its head and its steps in position order.
#[derive(Clone, Debug, PartialEq)]
pub struct Journal {
    /// The head record.
    pub meta: RunMeta,
    /// The steps, ordered by position.
    pub steps: Vec<StepRecord>,
}
