//! The step tools' plumbing: argument checks, decoding memoized records, executing a `run`
//! closure, and the futures through which a step waits for the engine.

use super::MAX_WAIT;
use super::Signal;
use crate::duration::format_duration;
use crate::error::{StepError, StepResult, panic_message};
use crate::event::{Event, EventPayload};
use crate::id::StepId;
use crate::record::{StepRecord, StepState};
use crate::state::SharedState;
use futures::FutureExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

pub(super) fn checked_name(name: &str) -> StepResult<&str> {
    if name.trim().is_empty() {
        return Err(StepError::non_retriable("a step name must not be empty"));
    }
    Ok(name)
}

pub(super) fn checked_wait(
    name: &str,
    duration: Result<Duration, crate::error::DurationError>,
) -> StepResult<Duration> {
    let duration = duration.map_err(|reason| StepError::non_retriable(format!("step `{name}`: {reason}")))?;
    if duration > MAX_WAIT {
        return Err(StepError::non_retriable(format!(
            "step `{name}`: {} exceeds the 366-day maximum",
            format_duration(duration)
        )));
    }
    Ok(duration)
}

pub(super) fn checked_timeout(
    name: &str,
    timeout: Option<Result<Duration, crate::error::DurationError>>,
) -> StepResult<Option<Duration>> {
    match timeout {
        None => Ok(None),
        Some(Err(reason)) => Err(StepError::non_retriable(format!("step `{name}`: invalid timeout: {reason}"))),
        Some(Ok(limit)) if limit.is_zero() => {
            Err(StepError::non_retriable(format!("step `{name}`: invalid timeout: it must be longer than zero")))
        }
        Some(Ok(limit)) => Ok(Some(limit)),
    }
}

pub(super) fn decode_output<T: DeserializeOwned>(record: &StepRecord) -> StepResult<T> {
    match &record.state {
        // The message names the field, never the value: step outputs may hold secrets.
        StepState::Completed { output } => serde_path_to_error::deserialize(output).map_err(|err| {
            let path = err.path().to_string();
            let reason = crate::event::redact_serde_error(&err.into_inner().to_string());
            StepError::non_retriable(format!(
                "step `{}`: its output does not match the expected type at `{path}`: {reason}",
                record.name
            ))
        }),
        StepState::Failed { error } => Err(error.clone().into_final()),
        other => Err(StepError::non_retriable(format!("step `{}` is not finished: {other:?}", record.name))),
    }
}

pub(super) fn decode_event<T: DeserializeOwned>(name: &str, record: &StepRecord) -> StepResult<Option<Event<T>>> {
    match &record.state {
        StepState::Completed { output: Value::Null } => Ok(None),
        StepState::Completed { output } => {
            let payload: EventPayload = serde_json::from_value(output.clone()).map_err(|err| {
                StepError::non_retriable(format!("step `{name}`: the received event is malformed: {err}"))
            })?;
            Event::from_payload(&payload)
                .map(Some)
                .map_err(|reason| StepError::non_retriable(format!("step `{name}`: {reason}")))
        }
        _ => decode_output(record),
    }
}

/// A signal wait's result: `None` on timeout; the signal from the signal event a Cairn driver
/// recorded, or from the `{signal, data}` an Inngest executor memoizes.
pub(super) fn decode_signal<T: DeserializeOwned>(name: &str, record: &StepRecord) -> StepResult<Option<Signal<T>>> {
    let output = match &record.state {
        StepState::Completed { output: Value::Null } => return Ok(None),
        StepState::Completed { output } => output,
        _ => return decode_output(record),
    };
    let signal = if output["name"] == crate::event::SIGNAL_EVENT { &output["data"] } else { output };
    serde_path_to_error::deserialize(signal).map(Some).map_err(|err| {
        let path = err.path().to_string();
        let reason = crate::event::redact_serde_error(&err.into_inner().to_string());
        StepError::non_retriable(format!(
            "step `{name}`: the signal's data does not match the expected type at `{path}`: {reason}"
        ))
    })
}

/// Runs one attempt of a `run` closure; with a `(limit, attempt)` timeout, an attempt still
/// running at `limit` is dropped and fails with `StepTimeoutError`.
pub(super) async fn execute<T, F, Fut>(name: &str, f: F, timeout: Option<(Duration, u32)>) -> Result<Value, StepError>
where
    T: Serialize,
    F: FnOnce() -> Fut,
    Fut: Future<Output = StepResult<T>>,
{
    let attempt = AssertUnwindSafe(f()).catch_unwind();
    let finished = match timeout {
        None => attempt.await,
        Some((limit, number)) => match tokio::time::timeout(limit, attempt).await {
            Ok(finished) => finished,
            Err(_) => {
                return Err(StepError {
                    name: "StepTimeoutError".into(),
                    ..StepError::new(format!(
                        "step `{name}`: attempt {number} timed out after {}",
                        humantime::format_duration(limit)
                    ))
                });
            }
        },
    };
    match finished {
        Ok(Ok(value)) => serde_json::to_value(value)
            .map_err(|err| StepError::non_retriable(format!("step `{name}`: output is not JSON: {err}"))),
        Ok(Err(err)) => Err(err),
        Err(panic) => Err(StepError::new(format!("step `{name}` panicked: {}", panic_message(&panic)))),
    }
}

/// Never resolves: how a step suspends the workflow. The driver drops the future.
pub(super) async fn halt<T>() -> T {
    futures::future::pending().await
}

/// Resolves when the engine allows this step to execute.
pub(super) struct Permit<'a> {
    pub(super) state: &'a SharedState,
    pub(super) id: &'a StepId,
}

impl Future for Permit<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        // The engine re-polls the workflow after every permit, so no waker is needed.
        if self.state.lock().is_permitted(self.id) { Poll::Ready(()) } else { Poll::Pending }
    }
}

/// Resolves with the record the driver committed for this step.
pub(super) struct Settled<'a> {
    pub(super) state: &'a SharedState,
    pub(super) id: &'a StepId,
}

impl Future for Settled<'_> {
    type Output = StepRecord;
    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<StepRecord> {
        match self.state.lock().take_settled(self.id) {
            Some(record) => Poll::Ready(record),
            None => Poll::Pending,
        }
    }
}
