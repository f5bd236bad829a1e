//! Inngest's opcodes: what an SDK answers a call with (`GeneratorOpcode`,
//! `reference/inngest-protocol.md` section 5), typed once for both sides. The serve endpoint
//! writes them ([`answer`](crate::call::answer)); the dev server's executor reads an app's
//! (`cairn dev -u`).

use cairn::StepError;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What an opcode asks for or reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Opcode {
    /// A step ran in this request: its output is `data`.
    StepRun,
    /// The older name of `StepRun`.
    Step,
    /// A step to run in a later request (parallel steps, `step.sendEvent`).
    StepPlanned,
    /// An attempt of a step failed and may be retried.
    StepError,
    /// A step failed for good.
    StepFailed,
    /// A sleep: until the time (or for the duration) in `name` or `opts.duration`.
    Sleep,
    /// `step.waitForEvent`: [`WaitOpts`].
    WaitForEvent,
    /// `step.waitForSignal`: [`SignalOpts`].
    WaitForSignal,
    /// `step.invoke`: [`InvokeOpts`].
    InvokeFunction,
    /// The run ended with `data` (an SDK answering with opcodes only).
    RunComplete,
    /// An opcode this side does not know, by name.
    #[serde(untagged)]
    Other(String),
}

/// One opcode of an answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneratorOpcode {
    /// What it is.
    pub op: Opcode,
    /// The step's hashed id.
    pub id: String,
    /// The step's name (a sleep's duration, a wait's event, a signal): absent for an invoke.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The name the user gave the step.
    #[serde(rename = "displayName", default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// The opcode's options (typed by [`GeneratorOpcode::opts`]).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub opts: Value,
    /// The step as the user's code names it, with the repeat index of a name used twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userland: Option<Userland>,
    /// A failed step's error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<SerializedError>,
    /// A step's output (written `null` when there is none, as the TypeScript SDK does).
    #[serde(default)]
    pub data: Value,
}

impl GeneratorOpcode {
    /// An opcode with empty options and no data: callers set the rest.
    pub fn new(op: Opcode, id: impl Into<String>) -> Self {
        GeneratorOpcode {
            op,
            id: id.into(),
            name: None,
            display_name: None,
            opts: Value::Object(serde_json::Map::new()),
            userland: None,
            error: None,
            data: Value::Null,
        }
    }

    /// The options as `T` (a field missing or of another type reads as `T`'s default).
    pub fn opts<T: DeserializeOwned + Default>(&self) -> T {
        serde_json::from_value(self.opts.clone()).unwrap_or_default()
    }

    /// The name to show: the user's name for the step, else its name, else its id.
    pub fn shown_name(&self) -> &str {
        self.display_name
            .as_deref()
            .or(self.userland.as_ref().map(|userland| userland.id.as_str()))
            .or(self.name.as_deref())
            .unwrap_or(&self.id)
    }
}

/// `userland`: the step's own name and, for a name used again, which repeat it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Userland {
    /// The name in the user's code.
    pub id: String,
    /// Which repeat of the name (absent for the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
}

/// An error as the SDKs serialize it (`{name, message, stack, __serialized}`, and whatever else
/// the error carried, such as its `cause`, kept as it came).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerializedError {
    /// The error's class (`Error`, `NonRetriableError`, ...).
    #[serde(default = "error_name", deserialize_with = "text")]
    pub name: String,
    /// Its message (an SDK passes a thrown object's non-string `message` through: read as text).
    #[serde(default, deserialize_with = "text")]
    pub message: String,
    /// Its stack, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
    /// The SDKs' marker of a serialized error (written only when set).
    #[serde(rename = "__serialized", default, skip_serializing_if = "is_false")]
    pub serialized: bool,
    /// Every other field of the error (`cause`, a user's own), as it came.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

impl SerializedError {
    /// An `Error` with `message` and nothing else.
    pub fn new(message: impl Into<String>) -> Self {
        SerializedError {
            name: error_name(),
            message: message.into(),
            stack: None,
            serialized: false,
            extra: serde_json::Map::new(),
        }
    }
}

/// Any JSON value as text: a string as it is, anything else as its JSON (`null`: empty).
fn text<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    Ok(match Value::deserialize(deserializer)? {
        Value::String(text) => text,
        Value::Null => String::new(),
        other => other.to_string(),
    })
}

fn error_name() -> String {
    "Error".into()
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_false(value: &bool) -> bool {
    !value
}

impl From<&StepError> for SerializedError {
    fn from(error: &StepError) -> Self {
        SerializedError {
            name: error.name.clone(),
            message: error.message.clone(),
            stack: Some(error.stack.clone().unwrap_or_default()),
            serialized: true,
            extra: serde_json::Map::new(),
        }
    }
}

impl From<&SerializedError> for StepError {
    /// A retriable error with the same name, message and stack (the answer's headers and
    /// opcode say whether it is retried).
    fn from(error: &SerializedError) -> Self {
        let mut step_error = StepError::new(error.message.clone());
        step_error.name.clone_from(&error.name);
        step_error.stack = error.stack.clone().filter(|stack| !stack.is_empty());
        step_error
    }
}

/// `Sleep`'s options.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SleepOpts {
    /// How long (the SDKs also put it in the opcode's `name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
}

/// `WaitForEvent`'s options.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitOpts {
    /// The event (the SDKs also put it in the opcode's `name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// The CEL condition over `event` (the trigger) and `async` (the awaited event).
    #[serde(rename = "if", default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// How long to wait (`"1d"`), or until when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// `WaitForSignal`'s options.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalOpts {
    /// The signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// How long to wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// When another run already waits: `"fail"` (this wait fails) or `"replace"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflict: Option<String>,
}

/// `InvokeFunction`'s options.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InvokeOpts {
    /// The invoked function's composite id (`<app>-<function>`).
    #[serde(default)]
    pub function_id: String,
    /// What it is invoked with (`{"data": ..}`).
    #[serde(default)]
    pub payload: Value,
    /// How long to wait for its result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// `StepPlanned`'s options: `{"type": "step.sendEvent"}` for a planned `step.sendEvent`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedOpts {
    /// The tool that planned it.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// A streamed answer's last chunk (after the keep-alive spaces): the answer, wrapped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamEnvelope {
    /// The answer's status.
    pub status: u16,
    /// The answer's headers (its signature among them).
    #[serde(default)]
    pub headers: serde_json::Map<String, Value>,
    /// The answer's body, as text.
    #[serde(default)]
    pub body: String,
    /// The envelope's version (2).
    #[serde(default)]
    pub version: u32,
}

impl StreamEnvelope {
    /// A header of the wrapped answer, by name in any case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).and_then(|(_, value)| value.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_sdk_answer_reads_as_typed_opcodes_and_writes_back_the_same() {
        let answer = json!([
            {"op": "StepRun", "id": "a1", "name": "fetch", "displayName": "fetch", "opts": {}, "userland": {"id": "fetch"}, "data": {"n": 1}},
            {"op": "WaitForEvent", "id": "b2", "name": "app/approved", "displayName": "approval", "opts": {"timeout": "1d", "if": "async.data.id == event.data.id"}, "data": null},
            {"op": "WaitForSignal", "id": "c3", "name": "approve-7", "opts": {"signal": "approve-7", "timeout": "2d", "conflict": "replace"}, "data": null},
            {"op": "StepError", "id": "d4", "name": "charge", "opts": {}, "error": {"name": "Error", "message": "boom", "stack": "at x", "__serialized": true, "cause": {"name": "Error", "message": "socket hang up"}}, "data": null},
            {"op": "InvokeFunction", "id": "e5", "displayName": "charge", "opts": {"function_id": "app-charge", "payload": {"data": {"x": 1}}}, "data": null},
            {"op": "Teleport", "id": "f6", "name": "?", "data": null}
        ]);
        let ops: Vec<GeneratorOpcode> = serde_json::from_value(answer.clone()).unwrap();
        assert_eq!(
            ops.iter().map(|op| op.op.clone()).collect::<Vec<_>>(),
            [
                Opcode::StepRun,
                Opcode::WaitForEvent,
                Opcode::WaitForSignal,
                Opcode::StepError,
                Opcode::InvokeFunction,
                Opcode::Other("Teleport".into())
            ]
        );
        assert_eq!(ops[1].opts::<WaitOpts>().condition.as_deref(), Some("async.data.id == event.data.id"));
        assert_eq!(ops[2].opts::<SignalOpts>().conflict.as_deref(), Some("replace"));
        assert_eq!(ops[4].opts::<InvokeOpts>().function_id, "app-charge");
        assert_eq!((ops[0].shown_name(), ops[2].shown_name(), ops[4].shown_name()), ("fetch", "approve-7", "charge"));
        let error = StepError::from(ops[3].error.as_ref().unwrap());
        assert_eq!(
            (error.name.as_str(), error.message.as_str(), error.stack.as_deref()),
            ("Error", "boom", Some("at x"))
        );
        assert_eq!(serde_json::to_value(&ops).unwrap(), answer, "written back whole, the error's cause with it");
    }

    #[test]
    fn an_error_with_a_thrown_objects_message_reads_as_text() {
        let error: SerializedError =
            serde_json::from_value(json!({"name": "Error", "message": {"code": 7}, "__serialized": true})).unwrap();
        assert_eq!(error.message, r#"{"code":7}"#);
        let bare: SerializedError = serde_json::from_value(json!({})).unwrap();
        assert_eq!((bare.name.as_str(), bare.message.as_str()), ("Error", ""));
    }

    #[test]
    fn a_streamed_answer_reads_its_headers_in_any_case() {
        let envelope: StreamEnvelope = serde_json::from_value(
            json!({"status": 206, "headers": {"X-Inngest-No-Retry": "true"}, "body": "[]", "version": 2}),
        )
        .unwrap();
        assert_eq!((envelope.status, envelope.header("x-inngest-no-retry")), (206, Some("true")));
        assert_eq!(envelope.header("retry-after"), None);
    }
}
