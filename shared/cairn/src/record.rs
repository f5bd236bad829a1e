//! What a store keeps for a run: its [`RunMeta`] and one [`StepRecord`] per step.

use crate::error::StepError;
use crate::event::EventPayload;
use crate::id::{RunId, StepId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

pub use crate::clock::Millis;

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

/// Which flow-control option turned an event away.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// `rate_limit`: the key's limit for the period is used up.
    RateLimit,
    /// `idempotency`: a run for the key started in the last 24 hours.
    Idempotency,
    /// `singleton` in skip mode: a run for the key is active.
    Singleton,
    /// `debounce`: a later event of the window started the run (`by`).
    Debounce,
    /// `batch_events`: the event joined a batch, whose run is `by`.
    Batch,
}

impl SkipReason {
    /// The option's name as the builder spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::RateLimit => "rate_limit",
            SkipReason::Idempotency => "idempotency",
            SkipReason::Singleton => "singleton",
            SkipReason::Debounce => "debounce",
            SkipReason::Batch => "batch_events",
        }
    }
}

/// Why a run is [`RunStatus::Skipped`], for the dashboard and `cairn runs show`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// The option.
    pub reason: SkipReason,
    /// The key's value (its first 256 characters), when the option has a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The active run that holds the key (singleton).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<RunId>,
    /// What went wrong evaluating the key, when that is why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Skipped {
    /// One line for the dashboard and the CLI, e.g. ``skipped by singleton: run `r1` is active
    /// for key `u1` ``.
    pub fn describe(&self) -> String {
        if let (SkipReason::Debounce | SkipReason::Batch, Some(by)) = (self.reason, &self.by) {
            let (what, whose) =
                if self.reason == SkipReason::Debounce { ("debounced", "window") } else { ("batched", "batch") };
            let mut text = what.to_string();
            if let Some(key) = &self.key {
                text.push_str(&format!(" for key `{key}`"));
            }
            text.push_str(&format!(": the {whose}'s run is `{by}`"));
            return text;
        }
        let mut text = format!("skipped by {}", self.reason.as_str());
        if let Some(error) = &self.error {
            text.push_str(&format!(": its key failed to evaluate: {error}"));
            return text;
        }
        match (&self.by, &self.key) {
            (Some(by), Some(key)) => text.push_str(&format!(": run `{by}` is active for key `{key}`")),
            (Some(by), None) => text.push_str(&format!(": run `{by}` is active")),
            (None, Some(key)) => text.push_str(&format!(" for key `{key}`")),
            (None, None) => {}
        }
        text
    }
}

/// Why a run is [`RunStatus::Queued`]: the option and key it waits for, and its place.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queued {
    /// `concurrency` or `throttle`.
    pub option: String,
    /// The key's value (its first 256 characters), or none for a keyless limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Its place in the key's queue when it last tried (0: next).
    pub position: usize,
    /// When a throttled run's turn comes, or a debounce window fires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Millis>,
    /// The events a debounce window has gathered so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<u32>,
}

impl Queued {
    /// One line for the dashboard and the CLI, e.g. ``queued by throttle for key `u1`, 2
    /// ahead, until 2026-12-06T10:00:15Z``.
    pub fn describe(&self) -> String {
        let at = |millis: Millis| {
            chrono::DateTime::from_timestamp_millis(millis)
                .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default()
        };
        let events = self.events.unwrap_or(1);
        let plural = if events == 1 { "" } else { "s" };
        if self.option == "debounce" || self.option == "batch" {
            let mut text = if self.option == "debounce" {
                "debounced".to_string()
            } else {
                format!("batch of {events} event{plural}")
            };
            if let Some(key) = &self.key {
                text.push_str(&format!(" for key `{key}`"));
            }
            if let Some(until) = self.until {
                text.push_str(&format!(" until {}", at(until)));
            }
            if self.option == "debounce" {
                text.push_str(&format!(" ({events} event{plural})"));
            }
            return text;
        }
        let mut text = format!("queued by {}", self.option);
        if let Some(key) = &self.key {
            text.push_str(&format!(" for key `{key}`"));
        }
        text.push_str(&format!(", {} ahead", self.position));
        if let Some(until) = self.until.and_then(chrono::DateTime::from_timestamp_millis) {
            text.push_str(&format!(", until {}", until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)));
        }
        text
    }
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

/// A pending `wait_for_event` or `cancel_on` listener, found when a matching event arrives.
/// Build one with [`Wait::new`](crate::lifecycle::waits), which files it under its [`WaitKey`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Wait {
    /// The awaited event name.
    pub event: String,
    /// The waiting run.
    pub run_id: RunId,
    /// Its wait step.
    pub step_id: StepId,
    /// CEL condition over `event` (the trigger) and `async` (the candidate), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
    /// When the wait times out.
    pub timeout_at: Millis,
    /// When the wait was registered (events received since this minus the lookback still match).
    pub created_at: Millis,
    /// A `cancel_on` listener: a matching event cancels the run instead of resuming a step
    /// (`step_id` names the rule, `cancel-<n>`), and no event from before it was registered
    /// counts.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancels: bool,
    /// The value its condition requires at one field of the event (`async.data.id ==
    /// event.data.id` on a trigger with `data.id` 7 requires 7 at `data.id`): stores file the
    /// wait under it, so an event is compared only with the waits it could resume. `None` for
    /// the general form, matched by evaluating the condition against every such wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<WaitKey>,
    /// For the general form: the trigger's fields the condition reads, so the condition is
    /// evaluated without loading the run. `None` when it reads more (the run is then loaded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Value>,
}

/// Where a wait is filed: the dotted path of a field of the awaited event, and the canonical
/// text of the value that field must have (values CEL holds equal share a text: `7` and `7.0` are both `n:7`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WaitKey {
    /// E.g. `data.id`.
    pub path: String,
    /// E.g. `s:order-7` or `n:7`.
    pub value: String,
}
