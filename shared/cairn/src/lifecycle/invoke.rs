//! `step.invoke` on every driver: the `inngest/function.invoked` event a caller sends, the run
//! it starts, and the `inngest/function.finished` answer that resolves the caller's step (a
//! timeout fails it with [`StepError::invoke_timeout`]). The Runner and the dev server's
//! executor for Inngest-protocol apps both build and read these here, so their invokes cannot
//! drift apart.

use crate::error::StepError;
use crate::event::{EventPayload, INVOKED_EVENT};
use crate::id::{RunId, StepId};
use crate::record::{InvokedBy, Millis, RunMeta, StepRecord, StepState};
use serde_json::{Value, json};

impl InvokedBy {
    /// Inngest's `correlation_id`, `<run id>.<step id>`: the invoked event carries it, and the
    /// invoked run's `inngest/function.finished` carries it back.
    pub fn correlation_id(&self) -> String {
        format!("{}.{}", self.run_id, self.step_id)
    }

    /// The caller a `correlation_id` names; `None` if it is not `<run id>.<step id>`.
    pub fn from_correlation_id(correlation_id: &str) -> Option<InvokedBy> {
        let (run, step) = correlation_id.split_once('.')?;
        Some(InvokedBy { run_id: RunId::new(run), step_id: StepId::from_hashed(step) })
    }
}

/// The event that invokes `function_id` for step `step_id` of run `caller` (of function
/// `caller_function`): `data` with Inngest's `_inngest` block. Its id derives from the caller's
/// run and step, so a driver that sends it again (after a crash, or on every pass while the
/// step is pending) starts no second run.
pub fn invoke_event(
    caller: &RunId,
    caller_function: &str,
    step_id: &StepId,
    function_id: &str,
    data: &Value,
    now: Millis,
) -> EventPayload {
    let mut data = if data.is_object() { data.clone() } else { json!({}) };
    let invoked_by = InvokedBy { run_id: caller.clone(), step_id: step_id.clone() };
    data["_inngest"] = json!({
        "fn_id": function_id,
        "correlation_id": invoked_by.correlation_id(),
        "source_fn_id": caller_function,
    });
    EventPayload::new(INVOKED_EVENT, data)
        .with_id(StepId::hash(&format!("{caller}/{step_id}")).as_str()[..26].to_string())
        .with_ts(now)
}

/// The function an `inngest/function.invoked` event invokes, and its caller; `None` if the
/// event lacks `data._inngest.fn_id` or a well-formed `correlation_id`.
pub fn invoked_function(event: &EventPayload) -> Option<(String, InvokedBy)> {
    let meta = &event.data["_inngest"];
    let function_id = meta["fn_id"].as_str()?;
    let invoked_by = InvokedBy::from_correlation_id(meta["correlation_id"].as_str()?)?;
    Some((function_id.to_string(), invoked_by))
}

/// The head of the run an invoked event starts (not yet created): its id derives from the
/// function and the event's id, so a redelivery finds the run it started.
pub fn invoked_run(function_id: &str, invoked_by: InvokedBy, event: &EventPayload, now: Millis) -> RunMeta {
    let run_id = RunId::for_event(function_id, event.id.as_deref().unwrap_or_default());
    let mut meta = RunMeta::new(run_id, function_id, event.clone(), now);
    meta.invoked_by = Some(invoked_by);
    meta
}

/// The caller's step and the result an `inngest/function.finished` event carries back to a
/// `step.invoke` (its `data.correlation_id`); `None` for a finished event that answers no
/// invoke.
pub fn invoke_answer(event: &EventPayload) -> Option<(InvokedBy, Result<Value, StepError>)> {
    let invoked_by = InvokedBy::from_correlation_id(event.data["correlation_id"].as_str()?)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invoke_event_names_its_caller_and_keeps_its_id_across_resends() {
        let caller = RunId::new("run_1");
        let step = StepId::hash("call");
        let event = invoke_event(&caller, "parent", &step, "child", &json!({"n": 21}), 5);
        assert_eq!(event.name, INVOKED_EVENT);
        assert_eq!(
            event.data,
            json!({"n": 21, "_inngest": {"fn_id": "child", "correlation_id": format!("run_1.{step}"), "source_fn_id": "parent"}})
        );
        assert_eq!(event.id, invoke_event(&caller, "parent", &step, "child", &json!({}), 9).id);
        let (function, invoked_by) = invoked_function(&event).unwrap();
        assert_eq!((function.as_str(), &invoked_by), ("child", &InvokedBy { run_id: caller, step_id: step }));
        let run = invoked_run(&function, invoked_by.clone(), &event, 5);
        assert_eq!(run.run_id, RunId::for_event("child", event.id.as_deref().unwrap()));
        assert_eq!(run.invoked_by, Some(invoked_by));
    }

    #[test]
    fn an_invoked_event_without_its_block_or_with_a_bad_correlation_id_invokes_nothing() {
        let bare = EventPayload::new(INVOKED_EVENT, json!({"n": 1}));
        assert_eq!(invoked_function(&bare), None);
        let bad = EventPayload::new(INVOKED_EVENT, json!({"_inngest": {"fn_id": "f", "correlation_id": "no-dot"}}));
        assert_eq!(invoked_function(&bad), None);
    }

    #[test]
    fn a_finished_event_answers_the_caller_with_its_result_or_error() {
        let ok = EventPayload::new(crate::FINISHED_EVENT, json!({"correlation_id": "run_1.abc", "result": 42}));
        let (caller, result) = invoke_answer(&ok).unwrap();
        assert_eq!(caller, InvokedBy { run_id: RunId::new("run_1"), step_id: StepId::from_hashed("abc") });
        assert_eq!(result, Ok(json!(42)));
        let failed = EventPayload::new(
            crate::FINISHED_EVENT,
            json!({"correlation_id": "run_1.abc", "error": {"name": "Error", "message": "boom"}}),
        );
        assert_eq!(invoke_answer(&failed).unwrap().1.unwrap_err().message, "boom");
        assert_eq!(invoke_answer(&EventPayload::new(crate::FINISHED_EVENT, json!({"result": 1}))), None);
    }
}
