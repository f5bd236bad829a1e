//! The Inngest SDK protocol as the executor speaks it: the call request (the event, the
//! memoized steps in Inngest's formats, `ctx`), the answer (the streaming envelope unwrapped),
//! and the values inside (errors, sleep times, events in EventBridge envelopes).

use super::{AppFunction, InngestApps, MAX_WAKE_AT, Result};
use crate::DevError;
use cairn::{EventPayload, Millis, RunMeta, StepError, StepKind, StepRecord, StepState};
use serde_json::{Value, json};

/// An app's answer to a call request.
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) no_retry: bool,
    pub(super) body: Value,
}

impl InngestApps {
    /// One call request; returns (status, no-retry, body), the streaming envelope unwrapped.
    pub(super) async fn call(
        &self,
        function: &AppFunction,
        meta: &RunMeta,
        events: &[cairn::EventPayload],
        step_id: &str,
        attempt: u32,
        memo: &Memo,
    ) -> Result<Answer> {
        let event = serde_json::to_value(&meta.event).unwrap_or_default();
        let body = json!({
            "event": event,
            "events": events,
            "steps": memo.steps,
            "ctx": {
                "run_id": meta.run_id,
                "attempt": attempt,
                "max_attempts": function.max_attempts,
                "disable_immediate_execution": false,
                "use_api": false,
                "stack": {"stack": memo.stack, "current": memo.stack.len()},
            },
            "version": 2,
            "use_api": false,
        });
        let response = self
            .http
            .post(format!(
                "{}{}fnId={}&stepId={step_id}",
                function.app_url,
                if function.app_url.contains('?') { '&' } else { '?' },
                function.id
            ))
            .header("x-inngest-req-version", "2")
            .header("x-run-id", meta.run_id.as_str())
            .json(&body)
            .send()
            .await
            .map_err(|err| self.call_error(&function.app_url, &err))?;
        let mut status = response.status().as_u16();
        let mut no_retry = response.headers().get("x-inngest-no-retry").is_some_and(|v| v == "true");
        let text = response.text().await.map_err(|err| self.call_error(&function.app_url, &err))?;
        let mut body: Value = serde_json::from_str(text.trim()).unwrap_or(Value::String(text));
        if status == 201 {
            // Streaming: keep-alive spaces, then {"status", "headers", "body": "<json text>"}.
            status = u16::try_from(body["status"].as_u64().unwrap_or(500)).unwrap_or(500);
            no_retry =
                body["headers"]["x-inngest-no-retry"] == "true" || body["headers"]["X-Inngest-No-Retry"] == "true";
            body = match &body["body"] {
                Value::String(inner) => serde_json::from_str(inner).unwrap_or(Value::String(inner.clone())),
                other => other.clone(),
            };
        }
        Ok(Answer { status, no_retry, body })
    }

    fn call_error(&self, app_url: &str, err: &reqwest::Error) -> String {
        if err.is_timeout() {
            format!(
                "the Inngest app at {app_url} did not answer within {} s (--app-timeout-secs)",
                self.timeout.as_secs()
            )
        } else {
            format!("cannot reach the Inngest app at {app_url}: {err}")
        }
    }
}

/// What the executor sends as `steps` and `ctx.stack`.
pub(super) struct Memo {
    pub(super) steps: serde_json::Map<String, Value>,
    pub(super) stack: Vec<String>,
}

/// Memoized values in Inngest's formats (§5.3 of the protocol notes).
pub(super) fn memo(steps: &[StepRecord]) -> Memo {
    let mut memo = Memo { steps: serde_json::Map::new(), stack: Vec::new() };
    for step in steps {
        let signal_wait = step.detail.as_ref().is_some_and(|detail| detail["event"] == cairn::SIGNAL_EVENT);
        let value = match (&step.state, step.kind) {
            // Inngest memoizes a received signal as `{"data": {signal, data}}` (a timeout: null).
            (StepState::Completed { output }, StepKind::WaitForEvent) if signal_wait && !output.is_null() => {
                json!({"data": output["data"]})
            }
            (StepState::Completed { output }, StepKind::Sleep | StepKind::WaitForEvent) => output.clone(),
            (StepState::Completed { output }, _) => json!({"data": output}),
            (StepState::Failed { error }, _) => {
                json!({"error": step.detail.as_ref().map_or_else(|| json!({"name": error.name, "message": error.message}), |d| d["error"].clone())})
            }
            _ => continue,
        };
        memo.steps.insert(step.id.to_string(), value);
        memo.stack.push(step.id.to_string());
    }
    memo
}

pub(super) fn step_error(error: &Value) -> StepError {
    let mut step_error = StepError::new(error["message"].as_str().unwrap_or("error"));
    step_error.name = error["name"].as_str().unwrap_or("Error").to_string();
    step_error.stack = error["stack"].as_str().map(str::to_string);
    step_error
}

pub(super) fn error_of(body: &Value, status: u16) -> StepError {
    match body {
        Value::Object(_) if body.get("message").is_some() => step_error(body),
        other => StepError::new(format!("the app answered {status}: {other}")),
    }
}

pub(super) fn backoff_ms(attempts: u32, seed: &str) -> Millis {
    i64::try_from(cairn::backoff(attempts, seed).as_millis()).unwrap_or(i64::MAX)
}

/// A sleep's end: an ISO time, or a duration from `now`; at most [`MAX_WAKE_AT`].
pub(super) fn sleep_until(text: &str, now: Millis) -> Result<Millis> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(at.timestamp_millis().min(MAX_WAKE_AT));
    }
    let duration = cairn::parse_duration(text).map_err(DevError::caused_by)?;
    Ok(now.saturating_add(i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)).min(MAX_WAKE_AT))
}

/// The Inngest event inside an EventBridge envelope (Cairn's own detail is the whole event).
pub(super) fn event_of_envelope(envelope: &Value, now: Millis) -> EventPayload {
    let name = envelope["detail-type"].as_str().unwrap_or_default();
    let detail = &envelope["detail"];
    let mut event = match serde_json::from_value::<EventPayload>(detail.clone()) {
        Ok(event) if event.name == name => event,
        _ => EventPayload::new(name, detail.clone()),
    };
    if event.id.is_none() {
        event.id = envelope["id"].as_str().map(str::to_string);
    }
    event.ts.get_or_insert(now);
    event
}
