//! The Inngest SDK protocol as the executor speaks it: the call request (the event, the
//! memoized steps in Inngest's formats, `ctx`), the answer (the streaming envelope unwrapped),
//! and the values inside (errors, sleep times, events in EventBridge envelopes).

use super::{AppFunction, InngestApps, MAX_WAKE_AT, Result};
use crate::DevError;
use cairn::{EventPayload, Millis, RunMeta, StepError, StepKind, StepRecord, StepState};
use cairn_http::call::{CallContext, CallRequest, CallStack};
use cairn_http::opcode::{SerializedError, StreamEnvelope};
use serde_json::{Value, json};

/// An app's answer to a call request.
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) no_retry: bool,
    /// `Retry-After` as the app sent it: the delay it asked for before the next attempt
    /// ([`retry_after_ms`] reads it).
    pub(super) retry_after: Option<String>,
    pub(super) body: Value,
}

/// A `Retry-After` value as milliseconds from `now`: whole seconds, or a time (the TypeScript
/// SDK's `RetryAfterError` sends an ISO time, `toISOString()`; HTTP's own form is a date).
pub(super) fn retry_after_ms(value: &str, now: Millis) -> Option<u64> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(seconds.saturating_mul(1000));
    }
    let at = chrono::DateTime::parse_from_rfc3339(value).or_else(|_| chrono::DateTime::parse_from_rfc2822(value));
    Some(u64::try_from(at.ok()?.timestamp_millis().saturating_sub(now)).unwrap_or(0))
}

/// A failed attempt as the app reported it, judged by `policy` as the Runner judges its own:
/// `no_retry` (`X-Inngest-No-Retry`, or a `StepFailed`) makes it final, `retry_after_ms`
/// (`Retry-After`) sets its delay. Returns the error to record and when the next attempt runs
/// (`None`: the failure is final, and the error keeps no delay, since nothing follows).
pub(super) fn judged(
    policy: &cairn::RetryPolicy<'_>,
    mut error: StepError,
    no_retry: bool,
    retry_after_ms: Option<u64>,
    attempts_made: u32,
    now: Millis,
    seed: &str,
) -> (StepError, Option<Millis>) {
    error.retriable = !no_retry;
    error.retry_after_ms = retry_after_ms;
    let retry_at = policy.retry_at(&error, attempts_made, now, seed);
    if retry_at.is_none() {
        error.retry_after_ms = None;
    }
    (error, retry_at)
}

impl InngestApps {
    /// One call request; returns the app's answer (status, `X-Inngest-No-Retry`, `Retry-After`,
    /// body), the streaming envelope unwrapped.
    pub(super) async fn call(
        &self,
        function: &AppFunction,
        meta: &RunMeta,
        events: &[cairn::EventPayload],
        step_id: &str,
        attempt: u32,
        memo: &Memo,
    ) -> Result<Answer> {
        let body = CallRequest {
            event: meta.event.clone(),
            events: events.to_vec(),
            steps: memo.steps.clone(),
            ctx: CallContext {
                run_id: meta.run_id.to_string(),
                attempt,
                max_attempts: Some(function.max_attempts),
                disable_immediate_execution: false,
                stack: Some(CallStack { stack: memo.stack.clone(), current: memo.stack.len() }),
                use_api: false,
            },
            use_api: false,
            version: 2,
        };
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
            .map_err(|err| self.call_error(&function.app_url, err))?;
        let mut status = response.status().as_u16();
        let mut no_retry = response.headers().get("x-inngest-no-retry").is_some_and(|v| v == "true");
        let mut retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
        let text = response.text().await.map_err(|err| self.call_error(&function.app_url, err))?;
        let mut body: Value = serde_json::from_str(text.trim()).unwrap_or(Value::String(text));
        if status == 201 {
            // Streaming: keep-alive spaces, then the answer in its envelope (none: an error).
            match serde_json::from_value::<StreamEnvelope>(body.clone()) {
                Ok(envelope) => {
                    status = envelope.status;
                    no_retry = envelope.header("x-inngest-no-retry") == Some("true");
                    retry_after = envelope.header("retry-after").map(str::to_string);
                    body = serde_json::from_str(&envelope.body).unwrap_or(Value::String(envelope.body));
                }
                Err(_) => status = 500,
            }
        }
        Ok(Answer { status, no_retry, retry_after, body })
    }

    fn call_error(&self, app_url: &str, err: reqwest::Error) -> DevError {
        let message = if err.is_timeout() {
            format!(
                "the Inngest app at {app_url} did not answer within {} s (--app-timeout-secs)",
                self.timeout.as_secs()
            )
        } else {
            format!("cannot reach the Inngest app at {app_url}: {err}")
        };
        DevError::with_source(message, err)
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
                // The error as the app reported it when the step's detail keeps it.
                let reported = step.detail.as_ref().and_then(|detail| detail.get("error")).cloned();
                json!({"error": reported.unwrap_or_else(|| json!({"name": error.name, "message": error.message}))})
            }
            _ => continue,
        };
        memo.steps.insert(step.id.to_string(), value);
        memo.stack.push(step.id.to_string());
    }
    memo
}

pub(super) fn error_of(body: &Value, status: u16) -> StepError {
    match body {
        Value::Object(_) if body.get("message").is_some() => serde_json::from_value::<SerializedError>(body.clone())
            .map_or_else(
                |_| StepError::new(format!("the app answered {status}: {body}")),
                |error| StepError::from(&error),
            ),
        other => StepError::new(format!("the app answered {status}: {other}")),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        let now = 1_795_392_000_000; // 2026-11-23T00:00:00Z, a Monday
        assert_eq!(retry_after_ms("90", now), Some(90_000));
        assert_eq!(retry_after_ms(" 5 ", now), Some(5_000));
        assert_eq!(retry_after_ms("Mon, 23 Nov 2026 00:01:00 GMT", now), Some(60_000));
        assert_eq!(retry_after_ms("Sun, 22 Nov 2026 23:00:00 GMT", now), Some(0), "a date past is now");
        assert_eq!(retry_after_ms("2026-11-23T00:00:30.000Z", now), Some(30_000), "the TypeScript SDK's form");
        assert_eq!(retry_after_ms("soon", now), None);
    }

    /// What an answer says of retrying decides, through the Runner's `RetryPolicy`, when (and
    /// whether) the next attempt runs.
    #[test]
    fn an_answer_says_whether_and_when_the_next_attempt_runs() {
        let policy = cairn::RetryPolicy::with_retries(3);
        let judge = |error: &str, no_retry, asked, attempts| {
            judged(&policy, StepError::new(error), no_retry, asked, attempts, 1_000, "r/s")
        };
        let (asked, at) = judge("rate limited", false, Some(90_000), 1);
        assert_eq!((asked.retry_after_ms, at), (Some(90_000), Some(91_000)));
        let backoff = i64::try_from(cairn::backoff(1, "r/s").as_millis()).unwrap();
        assert_eq!(judge("boom", false, None, 1).1, Some(1_000 + backoff));
        let (fatal, at) = judge("no", true, Some(90_000), 1);
        assert_eq!((fatal.retriable, fatal.retry_after_ms, at), (false, None, None), "a final failure keeps no delay");
        let (spent, at) = judge("boom", false, Some(90_000), 4);
        assert_eq!((spent.retry_after_ms, at), (None, None), "four attempts made of four");
    }
}
