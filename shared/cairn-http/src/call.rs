//! A call request from an Inngest executor (`POST ?fnId=..&stepId=..`), its memo decoded into a
//! journal, and the engine's outcome encoded as Inngest's answer (`reference/inngest-protocol.md`
//! sections 4.3, 5).

use crate::opcode::{
    GeneratorOpcode, InvokeOpts, Opcode, PlannedOpts, SerializedError, SignalOpts, Userland, WaitOpts,
};
use cairn::{EventPayload, Millis, Op, OpKind, Outcome, StepError, StepId, StepKind, StepRecord, StepState};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// The body of a call request: what the dev server's executor sends an app, and what the
/// serve endpoint reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallRequest {
    /// The triggering event.
    pub event: EventPayload,
    /// Every event the run was started with (a batch's; else the trigger alone).
    #[serde(default)]
    pub events: Vec<EventPayload>,
    /// Memoized steps: hashed id to value.
    #[serde(default)]
    pub steps: Map<String, Value>,
    /// Execution context.
    #[serde(default)]
    pub ctx: CallContext,
    /// Deprecated duplicate of [`CallContext::use_api`].
    #[serde(default)]
    pub use_api: bool,
    /// The request's version (2).
    #[serde(default)]
    pub version: u32,
}

/// `ctx` of a call request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CallContext {
    /// The run.
    #[serde(default)]
    pub run_id: String,
    /// Attempts already made of the current step (0-based).
    #[serde(default)]
    pub attempt: u32,
    /// Total attempts allowed.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Plan `run` steps instead of running them.
    #[serde(default)]
    pub disable_immediate_execution: bool,
    /// Completion order of the memoized steps.
    #[serde(default)]
    pub stack: Option<CallStack>,
    /// The memo and events were left out for the SDK to fetch from Inngest's API (state over
    /// 4 MiB); Cairn refuses such calls rather than run with an empty memo.
    #[serde(default)]
    pub use_api: bool,
}

/// `ctx.stack`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CallStack {
    /// Hashed ids in completion order.
    #[serde(default)]
    pub stack: Vec<String>,
    /// How many of them the SDK has seen (all of them).
    #[serde(default)]
    pub current: usize,
}

/// A call request body that is not one.
#[derive(Debug, thiserror::Error)]
#[error("malformed call request: {0}")]
pub struct MalformedCall(#[source] pub serde_json::Error);

/// Decodes a call request body.
///
/// # Errors
/// [`MalformedCall`], naming what is malformed.
pub fn decode(body: &[u8]) -> Result<CallRequest, MalformedCall> {
    serde_json::from_slice(body).map_err(MalformedCall)
}

/// Decodes the memo into records, ordered as `ctx.stack` says (else as given). The rule is the
/// TypeScript SDK's: an object with only `data` is that data, with only `error` a failure, with
/// only `input` no result yet; anything else (null, an event) is the data itself.
pub fn journal(request: &CallRequest) -> Vec<StepRecord> {
    let mut order: Vec<&String> = request.ctx.stack.as_ref().map(|s| s.stack.iter().collect()).unwrap_or_default();
    for id in request.steps.keys() {
        if !order.contains(&id) {
            order.push(id);
        }
    }
    order
        .into_iter()
        .filter_map(|id| {
            let value = request.steps.get(id)?;
            let state = match value {
                Value::Object(map) if map.keys().all(|k| k == "data" || k == "type") && map.contains_key("data") => {
                    StepState::Completed { output: map["data"].clone() }
                }
                Value::Object(map) if map.len() == 1 && map.contains_key("error") => {
                    let error = &map["error"];
                    StepState::Failed {
                        error: StepError {
                            name: error["name"].as_str().unwrap_or("Error").to_string(),
                            message: error["message"].as_str().unwrap_or_default().to_string(),
                            stack: error["stack"].as_str().map(str::to_string),
                            retriable: false,
                            retry_after_ms: None,
                        },
                    }
                }
                Value::Object(map) if map.len() == 1 && map.contains_key("input") => return None,
                other => StepState::Completed { output: other.clone() },
            };
            Some((id, state))
        })
        .enumerate()
        .map(|(position, (id, state))| StepRecord {
            id: StepId::from_hashed(id.clone()),
            name: id.clone(),
            kind: StepKind::Run,
            position: u32::try_from(position).unwrap_or(u32::MAX),
            state,
            attempts: 1,
            started_at: 0,
            ended_at: None,
            detail: None,
        })
        .collect()
}

/// Inngest's answer: status, the `X-Inngest-No-Retry` / `Retry-After` headers, and the body.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// `X-Inngest-No-Retry`, when the answer is an error.
    pub no_retry: Option<bool>,
    /// `Retry-After` seconds.
    pub retry_after: Option<u64>,
    /// JSON body.
    pub body: Value,
}

/// Which repeat of `name` the step `id` is (0 for the first), as Inngest reports it in
/// `userland.index`; ids are hashes, so it is found by hashing `name:n` (at most 1,000 steps).
fn repeat_index(name: &str, id: &StepId) -> u32 {
    (0..1_000).find(|&n| &StepId::for_name(name, n) == id).unwrap_or(0)
}

fn userland(op_name: &str, id: &StepId) -> Userland {
    let index = repeat_index(op_name, id);
    Userland { id: op_name.to_string(), index: (index > 0).then_some(index) }
}

/// An opcode of step `id` as every answer writes it: its name, shown name and `userland`.
fn base(id: &StepId, name: &str, op: Opcode) -> GeneratorOpcode {
    let mut opcode = GeneratorOpcode::new(op, id.to_string());
    opcode.name = Some(name.to_string());
    opcode.display_name = Some(name.to_string());
    opcode.userland = Some(userland(name, id));
    opcode
}

/// The same, shown as `shown` (the user's name) while its `name` says what it is (a sleep's
/// duration, a wait's event, a signal).
fn named(id: &StepId, name: &str, shown: &str, op: Opcode) -> GeneratorOpcode {
    let mut opcode = base(id, shown, op);
    opcode.name = Some(name.to_string());
    opcode
}

fn options(opts: impl Serialize) -> Value {
    serde_json::to_value(opts).unwrap_or_default()
}

/// The `StepRun` op of a step that ran in this request with `output`.
pub fn step_run(id: &StepId, name: &str, output: Value) -> GeneratorOpcode {
    let mut opcode = base(id, name, Opcode::StepRun);
    opcode.data = output;
    opcode
}

/// The signal a wait on [`cairn::SIGNAL_EVENT`] waits for (`step.wait_for_signal` files it as
/// `async.data.signal == "<signal>"`).
fn signal_of(event: &str, expression: Option<&str>) -> Option<String> {
    if event != cairn::SIGNAL_EVENT {
        return None;
    }
    let expr = cairn::MatchExpr::cached(expression?).ok()?;
    match expr.equality(&Value::Null)? {
        (path, Value::String(signal)) if path == "data.signal" => Some(signal),
        _ => None,
    }
}

/// A planned op as Inngest's opcode. `app_id` makes invoked function ids composite.
pub fn opcode(op: &Op, now: Millis, app_id: &str) -> GeneratorOpcode {
    let remaining =
        |at: Millis| cairn::format_duration(std::time::Duration::from_millis(u64::try_from(at - now).unwrap_or(0)));
    match &op.kind {
        // A decision or a cancellation is recorded by the engine before any plan is made.
        OpKind::Run { .. } | OpKind::Retry { .. } | OpKind::Decide { .. } | OpKind::Cancelled { .. } => {
            base(&op.id, &op.name, Opcode::StepPlanned)
        }
        OpKind::Sleep { until } => named(&op.id, &remaining(*until), &op.name, Opcode::Sleep),
        OpKind::WaitForEvent { event, expression, timeout_at }
            if let Some(signal) = signal_of(event, expression.as_deref()) =>
        {
            // Inngest's own signal wait: its executor resolves it by name (one waiter).
            let mut opcode = named(&op.id, &signal, &op.name, Opcode::WaitForSignal);
            opcode.opts = options(SignalOpts {
                signal: Some(signal.clone()),
                timeout: Some(remaining(*timeout_at)),
                conflict: Some("fail".into()),
            });
            opcode
        }
        OpKind::WaitForEvent { event, expression, timeout_at } => {
            let mut opcode = named(&op.id, event, &op.name, Opcode::WaitForEvent);
            opcode.opts =
                options(WaitOpts { event: None, condition: expression.clone(), timeout: Some(remaining(*timeout_at)) });
            opcode
        }
        OpKind::SendEvent { .. } => {
            let mut opcode = named(&op.id, "sendEvent", &op.name, Opcode::StepPlanned);
            opcode.opts = options(PlannedOpts { kind: Some("step.sendEvent".into()) });
            opcode
        }
        OpKind::Invoke { function_id, data, timeout_at } => {
            let mut opcode = base(&op.id, &op.name, Opcode::InvokeFunction);
            opcode.name = None;
            let forever = *timeout_at - now >= std::time::Duration::from_secs(366 * 86_400).as_millis() as i64;
            opcode.opts = options(InvokeOpts {
                function_id: format!("{app_id}-{function_id}"),
                // No data given: no `data` field, as the TypeScript SDK sends it.
                payload: if data.is_null() { json!({}) } else { json!({"data": data}) },
                timeout: (!forever).then(|| remaining(*timeout_at)),
            });
            opcode
        }
    }
}

fn ops_body(ops: &[GeneratorOpcode]) -> Value {
    serde_json::to_value(ops).unwrap_or_default()
}

/// The answer for an engine outcome.
pub fn answer(outcome: &Outcome, now: Millis, app_id: &str) -> Answer {
    let ok = |status: u16, body: Value| Answer { status, no_retry: None, retry_after: None, body };
    match outcome {
        Outcome::Completed(output) => ok(200, output.clone()),
        Outcome::StepCompleted(record) => match &record.state {
            StepState::Completed { output } => ok(206, ops_body(&[step_run(&record.id, &record.name, output.clone())])),
            // A sleep or wait the engine completed itself has nothing to report: ask again.
            _ => ok(206, json!([])),
        },
        Outcome::StepFailed { record, retry_at } => {
            let error = match &record.state {
                StepState::Retrying { error, .. } | StepState::Failed { error } => error.clone(),
                _ => StepError::new("step failed"),
            };
            let final_failure = retry_at.is_none();
            let mut opcode =
                base(&record.id, &record.name, if final_failure { Opcode::StepFailed } else { Opcode::StepError });
            let serialized = SerializedError::from(&error);
            if final_failure {
                opcode.data = serde_json::to_value(&serialized).unwrap_or_default();
            }
            opcode.error = Some(serialized);
            Answer {
                status: 206,
                no_retry: Some(final_failure),
                retry_after: error.retry_after_ms.map(|ms| ms.div_ceil(1000)),
                body: ops_body(&[opcode]),
            }
        }
        Outcome::Sleeping { op, .. } | Outcome::Waiting { op } => ok(206, ops_body(&[opcode(op, now, app_id)])),
        Outcome::Planned(ops) => ok(206, ops_body(&ops.iter().map(|op| opcode(op, now, app_id)).collect::<Vec<_>>())),
        Outcome::Failed { error, retry_at } => Answer {
            status: if retry_at.is_some() { 500 } else { 400 },
            no_retry: Some(retry_at.is_none()),
            retry_after: error.retry_after_ms.map(|ms| ms.div_ceil(1000)),
            body: serde_json::to_value(SerializedError::from(error)).unwrap_or_default(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memo_values_decode_by_the_sdks_rule_in_stack_order() {
        let request: CallRequest = serde_json::from_value(json!({
            "event": {"name": "a/b", "data": {}},
            "steps": {
                "s1": {"data": {"ok": true}},
                "s2": {"error": {"name": "Error", "message": "boom"}},
                "s3": null,
                "s4": {"name": "test/approved", "data": {"id": 7}},
                "s5": {"input": [1]}
            },
            "ctx": {"run_id": "r", "stack": {"stack": ["s3", "s1"], "current": 2}}
        }))
        .unwrap();
        let records = journal(&request);
        let summary: Vec<(String, u32, StepState)> =
            records.iter().map(|r| (r.id.to_string(), r.position, r.state.clone())).collect();
        assert_eq!(summary[0], ("s3".into(), 0, StepState::Completed { output: Value::Null }));
        assert_eq!(summary[1], ("s1".into(), 1, StepState::Completed { output: json!({"ok": true}) }));
        assert!(matches!(&summary[2].2, StepState::Failed { error } if error.message == "boom"));
        assert_eq!(summary[3].2, StepState::Completed { output: json!({"name": "test/approved", "data": {"id": 7}}) });
        assert_eq!(records.len(), 4, "an input-only memo is no result");
    }
}
