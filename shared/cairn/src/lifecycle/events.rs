//! The system events a run owes when it ends, with Inngest's names and payloads. They are
//! written to the head's outbox in the same write as the final status, so a crash never loses
//! them, and their ids are derived from the run, so a redelivery is a duplicate.

use crate::error::StepError;
use crate::event::{CANCELLED_EVENT, EventPayload, FAILED_EVENT, FINISHED_EVENT};
use crate::function::FailureData;
use crate::id::StepId;
use crate::record::{Millis, RunMeta, RunStatus};
use serde_json::{Value, json};

/// The error message of a cancelled run, as Inngest words it.
pub const CANCELLED_MESSAGE: &str = "function cancelled";

/// How a run ended.
#[derive(Clone, Debug, PartialEq)]
pub enum RunEnd {
    /// With this output.
    Completed(Value),
    /// With this final error.
    Failed(StepError),
    /// Cancelled by an operator (or, later, by an event or a timeout).
    Cancelled,
}

impl RunEnd {
    /// The status a run that ended this way has.
    pub fn status(&self) -> RunStatus {
        match self {
            RunEnd::Completed(_) => RunStatus::Completed,
            RunEnd::Failed(_) => RunStatus::Failed,
            RunEnd::Cancelled => RunStatus::Cancelled,
        }
    }

    /// The error the run ended with: its own, or [`CANCELLED_MESSAGE`].
    pub fn error(&self) -> Option<StepError> {
        match self {
            RunEnd::Completed(_) => None,
            RunEnd::Failed(error) => Some(error.clone()),
            RunEnd::Cancelled => Some(StepError::non_retriable(CANCELLED_MESSAGE)),
        }
    }
}

impl From<Result<Value, StepError>> for RunEnd {
    fn from(result: Result<Value, StepError>) -> Self {
        match result {
            Ok(output) => RunEnd::Completed(output),
            Err(error) => RunEnd::Failed(error),
        }
    }
}

/// The events a run owes when it ends: `inngest/function.finished` always (it also answers a
/// `step.invoke` through its `correlation_id`), then `inngest/function.failed` on failure (for
/// `on_failure` handlers) or `inngest/function.cancelled` on cancellation (never `failed`).
///
/// The triggering event travels by name and id only: its data may hold secrets, and these
/// events go over the bus to every subscriber (and its dead-letter queue). A failure handler
/// gets the full event from the run's head when its run starts.
pub fn system_events(meta: &RunMeta, end: &RunEnd, now: Millis) -> Vec<EventPayload> {
    let id = |kind: &str| StepId::hash(&format!("{kind}/{}", meta.run_id)).as_str()[..26].to_string();
    let event = meta.event.summary();
    let mut data = json!({
        "function_id": meta.function_id,
        "run_id": meta.run_id,
        "event": event,
    });
    match end {
        RunEnd::Completed(output) => data["result"] = output.clone(),
        RunEnd::Failed(_) | RunEnd::Cancelled => {
            data["error"] = serde_json::to_value(end.error()).unwrap_or(Value::Null);
        }
    }
    if let Some(invoked_by) = &meta.invoked_by {
        data["correlation_id"] = json!(invoked_by.correlation_id());
    }
    let mut events = vec![EventPayload::new(FINISHED_EVENT, data).with_id(id("finished")).with_ts(now)];
    let (name, kind) = match end {
        RunEnd::Completed(_) => return events,
        RunEnd::Failed(_) => (FAILED_EVENT, "failed"),
        RunEnd::Cancelled => (CANCELLED_EVENT, "cancelled"),
    };
    let Some(error) = end.error() else { return events };
    let failed = FailureData { function_id: meta.function_id.clone(), run_id: meta.run_id.to_string(), event, error };
    let data = serde_json::to_value(&failed).unwrap_or(Value::Null);
    events.push(EventPayload::new(name, data).with_id(id(kind)).with_ts(now));
    events
}
