//! What the step tools take and return: [`StepOptions`], [`WaitFor`], [`Invoke`], events to
//! send ([`IntoEvents`]), [`SendResult`] and [`Signal`].

use super::MAX_WAIT;
use crate::backoff::Backoff;
use crate::duration::IntoDuration;
use crate::event::{EventData, EventPayload};
use serde::Serialize;
use serde_json::Value;
use std::marker::PhantomData;
use std::time::Duration;

/// A step's name and options. `&str` converts into it.
#[derive(Clone, Debug)]
pub struct StepOptions {
    pub(super) name: String,
    pub(super) retries: Option<u32>,
    pub(super) timeout: Option<Result<Duration, crate::error::DurationError>>,
    pub(super) backoff: Option<Backoff>,
}

impl StepOptions {
    /// Options for the step `name`.
    pub fn new(name: impl Into<String>) -> Self {
        StepOptions { name: name.into(), retries: None, timeout: None, backoff: None }
    }

    /// Retries for this step, overriding the function's.
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = Some(retries);
        self
    }

    /// Bounds one attempt of `step.run` (`"30s"` or a `Duration`): an attempt still running
    /// then is dropped and counts as a failed attempt (`StepTimeoutError`), retried under the
    /// step's retries and back-off. It measures the attempt's own time in this process.
    pub fn timeout(mut self, timeout: impl IntoDuration) -> Self {
        self.timeout = Some(timeout.into_duration());
        self
    }

    /// This step's delays between attempts, instead of the default table with jitter.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = Some(backoff);
        self
    }
}

impl From<&str> for StepOptions {
    fn from(name: &str) -> Self {
        StepOptions::new(name)
    }
}

impl From<String> for StepOptions {
    fn from(name: String) -> Self {
        StepOptions::new(name)
    }
}

/// What `step.wait_for_event` waits for; `T` is the awaited event's data type.
#[derive(Debug)]
pub struct WaitFor<T = Value> {
    pub(super) event: String,
    pub(super) timeout: Result<Duration, crate::error::DurationError>,
    pub(super) expression: Option<String>,
    _data: PhantomData<fn() -> T>,
}

impl WaitFor<Value> {
    /// Waits for the event `name` (untyped data).
    pub fn event(name: impl Into<String>) -> Self {
        WaitFor {
            event: name.into(),
            timeout: Err("a timeout is required".into()),
            expression: None,
            _data: PhantomData,
        }
    }
}

impl<T: EventData> WaitFor<T> {
    /// Waits for the typed event `T`.
    pub fn typed() -> Self {
        WaitFor {
            event: T::NAME.into(),
            timeout: Err("a timeout is required".into()),
            expression: None,
            _data: PhantomData,
        }
    }
}

impl<T> WaitFor<T> {
    /// Gives up after `timeout` (`"1d"` or a `Duration`); the step then returns `None`.
    pub fn timeout(mut self, timeout: impl IntoDuration) -> Self {
        self.timeout = timeout.into_duration();
        self
    }

    /// Only an event for which this CEL condition holds: `async.data.id == event.data.id`,
    /// with `event` the run's trigger and `async` the candidate.
    pub fn if_expr(mut self, expression: impl Into<String>) -> Self {
        self.expression = Some(expression.into());
        self
    }

    /// Inngest's `match`: the field at `path` (e.g. `data.userId`) must be equal in both events.
    pub fn matching(self, path: &str) -> Self {
        self.if_expr(format!("event.{path} == async.{path}"))
    }
}

/// What `step.invoke` calls: a function by id, with the data of its triggering event.
#[derive(Debug, Clone)]
pub struct Invoke {
    pub(super) function_id: String,
    pub(super) data: Value,
    pub(super) timeout: Result<Duration, crate::error::DurationError>,
}

impl Invoke {
    /// Calls the function `function_id` (in the same app) with no data (its event's `data` is
    /// then `{}`; the Inngest wire sends no `data`, as the SDK) and no timeout beyond Inngest's
    /// maximum of 366 days.
    pub fn function(function_id: impl Into<String>) -> Self {
        Invoke { function_id: function_id.into(), data: Value::Null, timeout: Ok(MAX_WAIT) }
    }

    /// The data of the invoked function's event.
    pub fn data(mut self, data: Value) -> Self {
        self.data = data;
        self
    }

    /// Fails the step with `InngestInvokeTimeoutError` when the function has not finished in time.
    pub fn timeout(mut self, timeout: impl IntoDuration) -> Self {
        self.timeout = timeout.into_duration();
        self
    }
}

/// One or many events for `step.send_event`.
pub trait IntoEvents {
    /// The events, or a message naming what cannot be sent.
    fn into_events(self) -> Result<Vec<EventPayload>, crate::error::EventError>;
}

impl IntoEvents for EventPayload {
    fn into_events(self) -> Result<Vec<EventPayload>, crate::error::EventError> {
        Ok(vec![self])
    }
}

impl IntoEvents for Vec<EventPayload> {
    fn into_events(self) -> Result<Vec<EventPayload>, crate::error::EventError> {
        Ok(self)
    }
}

/// What `step.wait_for_signal` returns: the signal's name and the data sent with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Signal<T = Value> {
    /// The signal.
    pub signal: String,
    /// What was sent with it.
    pub data: T,
}

/// What `step.send_event` returns: the ids of the sent events, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SendResult {
    /// Event ids.
    pub ids: Vec<String>,
}
