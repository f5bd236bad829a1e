//! Whether an event resumes a pending `wait_for_event`, and what an invoke's answer says: the
//! rules every driver applies the same way (the Runner for Rust functions, in production and
//! under `TestRun` in unit tests, and the dev server's executor for Inngest-protocol apps).

use crate::error::StepError;
use crate::event::EventPayload;
use crate::expr::MatchExpr;
use crate::id::{RunId, StepId};
use crate::record::{InvokedBy, Millis, StepKind, StepRecord, StepState};
use serde_json::Value;

/// What [`match_wait`] decided.
#[derive(Clone, Debug, PartialEq)]
pub enum WaitMatch {
    /// The event resumes the wait: commit this completed record (the event is its output).
    Resumes(Box<StepRecord>),
    /// The wait is resolved already (matched, or timed out): drop its registration.
    Stale,
    /// The event does not resume this wait: the name or the `if` expression differs, or the
    /// event already resumed another wait of the run.
    NoMatch,
}

/// Decides whether `event` resumes the wait step `step_id` of a run triggered by `trigger`
/// whose steps are `steps`:
///
/// - the step must still be pending (not final);
/// - an event that already resumed a wait of this run never resumes another (EventBridge
///   delivers at least once, and a redelivery must not complete a later wait);
/// - the `expression`, if any, must hold over `event` (the trigger) and `async` (the
///   candidate); an expression that fails to parse or evaluate does not match.
pub fn match_wait(
    trigger: &EventPayload,
    steps: &[StepRecord],
    step_id: &StepId,
    expression: Option<&str>,
    event: &EventPayload,
    now: Millis,
) -> WaitMatch {
    let Some(step) = steps.iter().find(|record| &record.id == step_id && !record.state.is_final()) else {
        return WaitMatch::Stale;
    };
    let consumed = event.id.is_some()
        && steps.iter().any(|record| {
            record.kind == StepKind::WaitForEvent
                && matches!(&record.state, StepState::Completed { output }
                    if output.get("id").and_then(Value::as_str) == event.id.as_deref())
        });
    if consumed {
        return WaitMatch::NoMatch;
    }
    let candidate = serde_json::to_value(event).unwrap_or(Value::Null);
    if let Some(expression) = expression {
        let trigger = serde_json::to_value(trigger).unwrap_or(Value::Null);
        let matched = MatchExpr::cached(expression).and_then(|expr| expr.matches(&trigger, &candidate));
        if !matched.unwrap_or(false) {
            return WaitMatch::NoMatch;
        }
    }
    let mut record = step.clone();
    record.state = StepState::Completed { output: candidate };
    record.ended_at = Some(now);
    WaitMatch::Resumes(Box::new(record))
}

/// The caller's step and the result an `inngest/function.finished` event carries back to a
/// `step.invoke` (its `data.correlation_id` is `<run id>.<step id>`); `None` for a finished
/// event that answers no invoke.
pub fn invoke_answer(event: &EventPayload) -> Option<(InvokedBy, Result<Value, StepError>)> {
    let (run, step) = event.data["correlation_id"].as_str()?.split_once('.')?;
    let invoked_by = InvokedBy { run_id: RunId::new(run), step_id: StepId::from_hashed(step) };
    let result = match event.data.get("error").filter(|error| !error.is_null()) {
        Some(error) => Err(serde_json::from_value::<StepError>(error.clone())
            .unwrap_or_else(|_| StepError::non_retriable(error.to_string()))),
        None => Ok(event.data.get("result").cloned().unwrap_or(Value::Null)),
    };
    Some((invoked_by, result))
}

/// The record that resolves an invoke step with `result`.
pub fn invoke_resolved(step: &StepRecord, result: Result<Value, StepError>, now: Millis) -> StepRecord {
    let mut record = step.clone();
    record.state = match result {
        Ok(output) => StepState::Completed { output },
        Err(error) => StepState::Failed { error },
    };
    record.ended_at = Some(now);
    record
}
