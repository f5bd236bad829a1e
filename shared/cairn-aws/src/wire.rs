//! The control messages Cairn sends itself, typed once for the sender and the receiver: a
//! run's wake-up on its function's timer queue ([`QueueTimer`](crate::QueueTimer)), the
//! resume a long wake-up's schedule delivers ([`SchedulerTimer`](crate::SchedulerTimer)), the
//! dev server's queued resumes, a cron firing and the reconciler's tick (the template's
//! ScheduleV2 `Input`s). Each is a JSON object whose `cairn` field names its kind:
//!
//! ```
//! use cairn::RunId;
//! use cairn_aws::{ControlMessage, Resume};
//!
//! let wake_up = ControlMessage::resume("hello", RunId::new("run_a")).at(1_000);
//! let json = wake_up.to_value();
//! assert_eq!(json, serde_json::json!({"cairn": "resume", "function_id": "hello", "run_id": "run_a", "at": 1_000}));
//! assert_eq!(ControlMessage::parse(&json), Some(Ok(wake_up)));
//! assert_eq!(ControlMessage::parse(&serde_json::json!({"cairn": "reconcile"})), Some(Ok(ControlMessage::Reconcile)));
//! ```
//!
//! Reading is lenient where the driver always was: a field other than the one a kind needs
//! (`run_id`, `cron`) is read when it has its type and ignored otherwise, and unknown fields are
//! ignored, so an older or newer sender's message still resumes its run.

use cairn::{Millis, RunId};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// A control message: the payload of a Cairn function's own invocations, tagged by `cairn`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "cairn", rename_all = "lowercase")]
pub enum ControlMessage {
    /// Drive this run now: a wake-up (timer queue, schedule), a resolved wait or invoke.
    Resume(Resume),
    /// Drive this run on: it checkpointed before the invocation's deadline.
    Continue(Resume),
    /// A cron firing (a ScheduleV2's `Input`).
    Cron(CronFiring),
    /// The reconciler's tick (`{"cairn": "reconcile"}`, the template's schedule).
    Reconcile,
}

/// Which run a [`ControlMessage::Resume`] or [`ControlMessage::Continue`] drives.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Resume {
    /// The function that owns the run (absent from the dev server's Inngest resumes).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "lenient_string")]
    pub function_id: Option<String>,
    /// The run.
    pub run_id: RunId,
    /// When the wake-up was due (ms since the epoch), on timer-queue messages.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "lenient_millis")]
    pub at: Option<Millis>,
}

/// A [`ControlMessage::Cron`] firing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CronFiring {
    /// The function's cron, as declared (`0 3 * * *`, `TZ=Europe/Paris 0 12 * * 1-5`).
    pub cron: String,
    /// The firing's scheduled time (Scheduler's `<aws.scheduler.scheduled-time>`), which
    /// names its run; absent from older templates' inputs.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "lenient_string")]
    pub id: Option<String>,
}

/// Why a payload tagged `cairn` is not a control message. The texts are the driver's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// A `resume` or `continue` without a string `run_id`.
    #[error("a cairn resume needs `run_id`")]
    NoRunId,
    /// A `cron` without a string `cron`.
    #[error("a cairn cron needs `cron`")]
    NoCron,
    /// A kind Cairn does not send.
    #[error("unknown cairn payload kind `{0}`")]
    UnknownKind(String),
}

impl ControlMessage {
    /// Resume `run_id` of `function_id`.
    pub fn resume(function_id: impl Into<String>, run_id: RunId) -> Self {
        ControlMessage::Resume(Resume { function_id: Some(function_id.into()), run_id, at: None })
    }

    /// Resume `run_id`, its function known to the receiver (the dev server's Inngest apps).
    pub fn resume_run(run_id: RunId) -> Self {
        ControlMessage::Resume(Resume { function_id: None, run_id, at: None })
    }

    /// A firing of `cron`, its run named by `id` (the scheduled time) when given.
    pub fn cron(cron: impl Into<String>, id: Option<String>) -> Self {
        ControlMessage::Cron(CronFiring { cron: cron.into(), id })
    }

    /// This resume (or continue), due at `at`; other kinds are returned unchanged.
    #[must_use]
    pub fn at(mut self, at: Millis) -> Self {
        if let ControlMessage::Resume(resume) | ControlMessage::Continue(resume) = &mut self {
            resume.at = Some(at);
        }
        self
    }

    /// The kind, as the `cairn` field names it.
    pub fn kind(&self) -> &'static str {
        match self {
            ControlMessage::Resume(_) => "resume",
            ControlMessage::Continue(_) => "continue",
            ControlMessage::Cron(_) => "cron",
            ControlMessage::Reconcile => "reconcile",
        }
    }

    /// The run a resume or continue drives.
    pub fn run_id(&self) -> Option<&RunId> {
        match self {
            ControlMessage::Resume(resume) | ControlMessage::Continue(resume) => Some(&resume.run_id),
            ControlMessage::Cron(_) | ControlMessage::Reconcile => None,
        }
    }

    /// Reads `payload`: `None` when it is no control message (no string `cairn` field), else
    /// the message or why it is malformed.
    pub fn parse(payload: &Value) -> Option<Result<Self, WireError>> {
        let kind = payload.get("cairn")?.as_str()?;
        Some(match kind {
            "resume" => Resume::parse(payload).map(ControlMessage::Resume).ok_or(WireError::NoRunId),
            "continue" => Resume::parse(payload).map(ControlMessage::Continue).ok_or(WireError::NoRunId),
            "cron" => CronFiring::deserialize(payload).map(ControlMessage::Cron).map_err(|_| WireError::NoCron),
            "reconcile" => Ok(ControlMessage::Reconcile),
            other => Err(WireError::UnknownKind(other.to_string())),
        })
    }

    /// The message as JSON.
    pub fn to_value(&self) -> Value {
        // Strings, integers and options of them: serializing cannot fail.
        serde_json::to_value(self).unwrap_or_default()
    }
}

impl std::fmt::Display for ControlMessage {
    /// The message as JSON text: an SQS body, a schedule's `Input`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.to_value())
    }
}

impl Resume {
    /// Reads the run from a JSON object with a string `run_id` (whatever its `cairn` kind, as
    /// a timer-queue body or a `cairn/run.resume` event's data is read); `None` otherwise.
    pub fn parse(value: &Value) -> Option<Self> {
        value.as_object()?;
        Resume::deserialize(value).ok()
    }
}

/// A string, or `None` for anything else.
fn lenient_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Ok(Value::deserialize(deserializer)?.as_str().map(str::to_string))
}

/// An integer of milliseconds, or `None` for anything else.
fn lenient_millis<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Millis>, D::Error> {
    Ok(Value::deserialize(deserializer)?.as_i64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_are_written_as_the_senders_wrote_them() {
        let run = RunId::new("run_a");
        assert_eq!(
            ControlMessage::resume("hello", run.clone()).at(1_500).to_string(),
            json!({"cairn": "resume", "function_id": "hello", "run_id": "run_a", "at": 1_500}).to_string()
        );
        assert_eq!(
            ControlMessage::resume("hello", run.clone()).to_value(),
            json!({"cairn": "resume", "function_id": "hello", "run_id": "run_a"})
        );
        assert_eq!(ControlMessage::resume_run(run).to_value(), json!({"cairn": "resume", "run_id": "run_a"}));
        assert_eq!(ControlMessage::cron("0 3 * * *", None).to_value(), json!({"cairn": "cron", "cron": "0 3 * * *"}));
        assert_eq!(
            ControlMessage::cron("0 3 * * *", Some("<aws.scheduler.scheduled-time>".into())).to_value(),
            json!({"cairn": "cron", "cron": "0 3 * * *", "id": "<aws.scheduler.scheduled-time>"})
        );
        assert_eq!(ControlMessage::Reconcile.to_value(), json!({"cairn": "reconcile"}));
    }

    #[test]
    fn what_is_sent_reads_back() {
        for message in [
            ControlMessage::resume("hello", RunId::new("run_a")).at(7),
            ControlMessage::resume_run(RunId::new("")),
            ControlMessage::Continue(Resume { function_id: None, run_id: RunId::new("run_b"), at: None }),
            ControlMessage::cron("0 3 * * *", Some("2026-11-23T03:00:00Z".into())),
            ControlMessage::cron("0 3 * * *", None),
            ControlMessage::Reconcile,
        ] {
            let text: Value = serde_json::from_str(&message.to_string()).unwrap();
            assert_eq!(ControlMessage::parse(&text), Some(Ok(message.clone())));
            assert_eq!(text["cairn"], message.kind());
        }
    }

    #[test]
    fn reading_needs_only_what_the_kind_needs() {
        let parse = |value: Value| ControlMessage::parse(&value);
        assert_eq!(parse(json!({"hello": "world"})), None);
        assert_eq!(parse(json!({"cairn": 1, "run_id": "run_a"})), None);
        assert_eq!(parse(json!("resume")), None);
        // Fields of the wrong type are ignored, as are unknown ones.
        assert_eq!(
            parse(json!({"cairn": "resume", "run_id": "run_a", "function_id": 3, "at": "soon", "x": [1]})),
            Some(Ok(ControlMessage::resume_run(RunId::new("run_a"))))
        );
        assert_eq!(parse(json!({"cairn": "resume"})), Some(Err(WireError::NoRunId)));
        assert_eq!(parse(json!({"cairn": "continue", "run_id": 5})), Some(Err(WireError::NoRunId)));
        assert_eq!(parse(json!({"cairn": "cron", "id": "x"})), Some(Err(WireError::NoCron)));
        assert_eq!(
            parse(json!({"cairn": "cron", "cron": "0 3 * * *", "id": 9})),
            Some(Ok(ControlMessage::cron("0 3 * * *", None)))
        );
        assert_eq!(
            parse(json!({"cairn": "reconcile", "at": "<aws.scheduler.scheduled-time>"})),
            Some(Ok(ControlMessage::Reconcile))
        );
        assert_eq!(parse(json!({"cairn": "nap"})), Some(Err(WireError::UnknownKind("nap".into()))));
        assert_eq!(WireError::UnknownKind("nap".into()).to_string(), "unknown cairn payload kind `nap`");
        // A timer-queue body or a resume event's data: only `run_id` counts.
        assert_eq!(Resume::parse(&json!({"run_id": "run_a"})).map(|r| r.run_id), Some(RunId::new("run_a")));
        assert_eq!(Resume::parse(&json!(["run_a"])), None);
        assert_eq!(Resume::parse(&json!({"run_id": null})), None);
    }
}
