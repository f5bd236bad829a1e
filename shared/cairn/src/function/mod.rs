//! Function definitions: id, name, triggers (events and crons), retries, an `on_failure`
//! handler, and the handler itself, typed by the event it receives.

mod failure;
mod flow;
mod registry;
mod trigger;

pub use failure::FailureData;
pub use registry::Registry;
pub use trigger::{CronSchedule, Trigger};

use crate::error::{DefinitionError, StepError};
use crate::event::{Event, EventData, EventPayload, FAILED_EVENT, SCHEDULED_EVENT};
use crate::expr::MatchExpr;
use crate::flow::FlowControl;
use crate::step::Step;
use serde::Serialize;
use serde_json::Value;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;

/// Inngest's default: 4 retries, so 5 attempts.
pub const DEFAULT_RETRIES: u32 = 4;
/// Inngest's cap on retries.
pub const MAX_RETRIES: u32 = 20;

pub(crate) type HandlerFuture = Pin<Box<dyn Future<Output = Result<Value, StepError>> + Send>>;
pub(crate) type ErasedHandler = Arc<dyn Fn(&EventPayload, Step) -> HandlerFuture + Send + Sync>;

/// A workflow: triggers, options and an async handler. Cheap to clone.
#[derive(Clone)]
pub struct Function {
    inner: Arc<FunctionInner>,
}

struct FunctionInner {
    id: String,
    name: Option<String>,
    triggers: Vec<Trigger>,
    retries: u32,
    handler: ErasedHandler,
    on_failure: Option<Function>,
    sends: Vec<String>,
    awaits: Vec<String>,
    invokes: Vec<String>,
    flow: FlowControl,
}

impl fmt::Debug for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Function")
            .field("id", &self.inner.id)
            .field("triggers", &self.inner.triggers)
            .field("retries", &self.inner.retries)
            .field("sends", &self.inner.sends)
            .field("awaits", &self.inner.awaits)
            .field("invokes", &self.inner.invokes)
            .field("flow", &self.inner.flow)
            .finish_non_exhaustive()
    }
}

impl Function {
    /// Starts an untyped function definition: add triggers with [`FunctionBuilder::on_event`]
    /// and [`FunctionBuilder::cron`]; the handler receives `Event<serde_json::Value>`.
    ///
    /// ```
    /// use cairn::prelude::*;
    /// let f = Function::new("nightly")
    ///     .cron("TZ=Europe/Paris 0 3 * * *")
    ///     .handler(|_event: Event, _step: Step| async move { Ok(json!({"ok": true})) })
    ///     .unwrap();
    /// assert_eq!(f.id(), "nightly");
    /// assert!(Function::new("bad").cron("not a cron").handler(|_: Event, _: Step| async { Ok(()) }).is_err());
    /// ```
    #[allow(clippy::new_ret_no_self)] // `Function::new(id)...handler(h)` reads as the definition it is.
    pub fn new(id: impl Into<String>) -> FunctionBuilder<Value> {
        FunctionBuilder::start(id.into(), Vec::new())
    }

    /// Starts a function triggered by the typed event `E`: its name comes from `E::NAME`, so a
    /// misspelt trigger cannot compile, and the handler receives `Event<E>`.
    pub fn on<E: EventData>(id: impl Into<String>) -> FunctionBuilder<E> {
        FunctionBuilder::start(id.into(), vec![Trigger::Event { name: E::NAME.to_string(), expression: None }])
    }

    /// The function id.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The display name (the id when none was set).
    pub fn name(&self) -> &str {
        self.inner.name.as_deref().unwrap_or(&self.inner.id)
    }

    /// Its triggers.
    pub fn triggers(&self) -> &[Trigger] {
        &self.inner.triggers
    }

    /// Retries after the first attempt, for each step and for function-level errors.
    pub fn retries(&self) -> u32 {
        self.inner.retries
    }

    /// The event names its steps may send with `step.send_event` ([`FunctionBuilder::sends`]).
    pub fn sends(&self) -> &[String] {
        &self.inner.sends
    }

    /// The event names its steps may wait for with `step.wait_for_event`
    /// ([`FunctionBuilder::awaits`]): what the deployment must route to it.
    pub fn awaits(&self) -> &[String] {
        &self.inner.awaits
    }

    /// The function ids its steps may call with `step.invoke` ([`FunctionBuilder::invokes`]).
    pub fn invokes(&self) -> &[String] {
        &self.inner.invokes
    }

    /// Its flow-control options ([`FunctionBuilder::concurrency`], [`FunctionBuilder::throttle`], ...).
    pub fn flow(&self) -> &FlowControl {
        &self.inner.flow
    }

    /// The generated failure handler function (`<id>-failure`), if `on_failure` was set.
    pub fn failure_handler(&self) -> Option<&Function> {
        self.inner.on_failure.as_ref()
    }

    /// Whether `event` starts this function (name and any `if` condition).
    pub fn is_triggered_by(&self, event: &EventPayload) -> bool {
        self.inner.triggers.iter().any(|trigger| match trigger {
            Trigger::Event { name, expression } => {
                name == &event.name
                    && expression.as_ref().is_none_or(|expr| {
                        let event_json = serde_json::to_value(event).unwrap_or(Value::Null);
                        expr.matches(&event_json, &Value::Null).unwrap_or(false)
                    })
            }
            Trigger::Cron(cron) => {
                event.name == SCHEDULED_EVENT && event.data.get("cron").and_then(Value::as_str) == Some(cron.source())
            }
        })
    }

    pub(crate) fn call(&self, event: &EventPayload, step: Step) -> HandlerFuture {
        (self.inner.handler)(event, step)
    }
}

/// Builds a [`Function`]; `T` is the event data type its handler receives.
pub struct FunctionBuilder<T> {
    id: String,
    name: Option<String>,
    triggers: Vec<Trigger>,
    retries: u32,
    on_failure: Option<ErasedHandler>,
    sends: Vec<String>,
    awaits: Vec<String>,
    invokes: Vec<String>,
    flow: FlowControl,
    errors: Vec<DefinitionError>,
    _event: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for FunctionBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FunctionBuilder").field("id", &self.id).field("triggers", &self.triggers).finish()
    }
}

impl<T> FunctionBuilder<T> {
    fn start(id: String, triggers: Vec<Trigger>) -> Self {
        let mut errors = Vec::new();
        if id.trim().is_empty() {
            errors.push(DefinitionError::EmptyFunctionId);
        } else if !id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
            errors.push(DefinitionError::InvalidFunctionId(id.clone()));
        }
        FunctionBuilder {
            id,
            name: None,
            triggers,
            retries: DEFAULT_RETRIES,
            on_failure: None,
            sends: Vec::new(),
            awaits: Vec::new(),
            invokes: Vec::new(),
            flow: FlowControl::default(),
            errors,
            _event: PhantomData,
        }
    }

    /// A display name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Retries after the first attempt (default 4, at most 20). Steps can override it.
    pub fn retries(mut self, retries: u32) -> Self {
        if retries > MAX_RETRIES {
            self.errors.push(DefinitionError::TooManyRetries { function: self.id.clone(), retries });
        }
        self.retries = retries;
        self
    }

    /// Declares an event this function's steps send with `step.send_event` (call it once per
    /// name). Sending an undeclared name fails the step, naming the event: the declarations are
    /// what `template.yaml` lets the function put on the bus (`events:detail-type`). The
    /// `on_failure` handler may send the same events. Names under `inngest/` and `cairn/` are the
    /// runtime's own and cannot be declared.
    pub fn sends(mut self, event: impl Into<String>) -> Self {
        let event = event.into();
        let reason = if event.trim().is_empty() {
            Some("the name is empty")
        } else if event.starts_with("inngest/") || event.starts_with("cairn/") {
            Some("names under inngest/ and cairn/ are sent by the runtime itself")
        } else {
            None
        };
        match reason {
            Some(reason) => self.errors.push(DefinitionError::InvalidSend {
                function: self.id.clone(),
                event,
                reason: reason.to_string(),
            }),
            None if !self.sends.contains(&event) => self.sends.push(event),
            None => {}
        }
        self
    }

    /// Declares an event this function's steps wait for with `step.wait_for_event` (once per
    /// name). Waiting for an undeclared name fails the step, naming the event: the
    /// declarations are what `cairn template` routes to the function, so a waiting run hears
    /// of the event in AWS too.
    pub fn awaits(mut self, event: impl Into<String>) -> Self {
        let event = event.into();
        if event.trim().is_empty() {
            self.errors.push(DefinitionError::EmptyEventName { function: self.id.clone() });
        } else if !self.awaits.contains(&event) {
            self.awaits.push(event);
        }
        self
    }

    /// Declares that its steps wait for and send signals (`step.wait_for_signal`,
    /// `step.send_signal`): the deployment routes signal events to it and lets it send them.
    pub fn signals(mut self) -> Self {
        for list in [&mut self.awaits, &mut self.sends] {
            if !list.iter().any(|event| event == crate::event::SIGNAL_EVENT) {
                list.push(crate::event::SIGNAL_EVENT.to_string());
            }
        }
        self
    }

    /// Declares a function this function's steps call with `step.invoke` (once per id).
    /// Invoking an undeclared id fails the step, naming it: the declarations are what
    /// `cairn template` routes (the call out, its result back).
    pub fn invokes(mut self, function_id: impl Into<String>) -> Self {
        let function_id = function_id.into();
        if function_id.trim().is_empty() {
            self.errors.push(DefinitionError::EmptyFunctionId);
        } else if !self.invokes.contains(&function_id) {
            self.invokes.push(function_id);
        }
        self
    }

    /// Runs `handler` once when a run of this function finally fails. It is a function of its
    /// own, `<id>-failure`, started by the `inngest/function.failed` event, as in Inngest.
    pub fn on_failure<F, Fut, R>(mut self, handler: F) -> Self
    where
        F: Fn(Event<FailureData>, Step) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, StepError>> + Send + 'static,
        R: Serialize + 'static,
    {
        self.on_failure = Some(erase(handler));
        self
    }

    /// Finishes the definition with its handler.
    ///
    /// # Errors
    /// The first problem found: an empty or invalid id, no trigger, a bad cron or expression,
    /// too many retries.
    pub fn handler<F, Fut, R>(self, handler: F) -> Result<Function, DefinitionError>
    where
        T: serde::de::DeserializeOwned + Send + 'static,
        F: Fn(Event<T>, Step) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, StepError>> + Send + 'static,
        R: Serialize + 'static,
    {
        if let Some(first) = self.errors.into_iter().next() {
            return Err(first);
        }
        if self.triggers.is_empty() {
            return Err(DefinitionError::NoTrigger(self.id));
        }
        if let Err(crate::flow::OptionError { option, reason }) = self.flow.validate() {
            return Err(DefinitionError::InvalidFlowControl { function: self.id, option, reason });
        }
        let on_failure = self.on_failure.map(|failure_handler| {
            let failure_id = format!("{}-failure", self.id);
            let expression = MatchExpr::parse(&format!("event.data.function_id == '{}'", self.id))
                .expect("a quoted kebab-case id is a valid CEL string literal");
            Function {
                inner: Arc::new(FunctionInner {
                    name: Some(format!("{} (failure)", self.name.as_deref().unwrap_or(&self.id))),
                    id: failure_id,
                    triggers: vec![Trigger::Event { name: FAILED_EVENT.to_string(), expression: Some(expression) }],
                    retries: 1,
                    handler: failure_handler,
                    on_failure: None,
                    sends: self.sends.clone(),
                    awaits: self.awaits.clone(),
                    invokes: self.invokes.clone(),
                    flow: FlowControl::default(),
                }),
            }
        });
        Ok(Function {
            inner: Arc::new(FunctionInner {
                id: self.id,
                name: self.name,
                triggers: self.triggers,
                retries: self.retries,
                handler: erase(handler),
                on_failure,
                sends: self.sends,
                awaits: self.awaits,
                invokes: self.invokes,
                flow: self.flow,
            }),
        })
    }
}

impl FunctionBuilder<Value> {
    /// Adds an event trigger by name.
    pub fn on_event(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        if name.trim().is_empty() {
            self.errors.push(DefinitionError::EmptyEventName { function: self.id.clone() });
        }
        self.triggers.push(Trigger::Event { name, expression: None });
        self
    }

    /// Adds an event trigger that only fires when the CEL condition over `event` holds,
    /// e.g. `event.data.plan == 'pro'`.
    pub fn on_event_if(mut self, name: impl Into<String>, expression: &str) -> Self {
        match MatchExpr::parse(expression) {
            Ok(expr) => self.triggers.push(Trigger::Event { name: name.into(), expression: Some(expr) }),
            Err(reason) => self.errors.push(DefinitionError::InvalidExpression {
                function: self.id.clone(),
                expression: expression.to_string(),
                reason: reason.to_string(),
            }),
        }
        self
    }

    /// Adds a cron trigger: 5 fields, optional `TZ=Area/City ` prefix.
    pub fn cron(mut self, expression: &str) -> Self {
        match CronSchedule::parse(expression) {
            Ok(cron) => self.triggers.push(Trigger::Cron(Box::new(cron))),
            Err(reason) => self.errors.push(DefinitionError::InvalidCron {
                function: self.id.clone(),
                cron: expression.to_string(),
                reason: reason.to_string(),
            }),
        }
        self
    }
}

fn erase<T, F, Fut, R>(handler: F) -> ErasedHandler
where
    T: serde::de::DeserializeOwned + Send + 'static,
    F: Fn(Event<T>, Step) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, StepError>> + Send + 'static,
    R: Serialize + 'static,
{
    let handler = Arc::new(handler);
    Arc::new(move |payload: &EventPayload, step: Step| -> HandlerFuture {
        let event = Event::<T>::from_payload(payload);
        let handler = Arc::clone(&handler);
        Box::pin(async move {
            // Bad input is final: no retry can make the payload deserialize.
            let event = event.map_err(StepError::non_retriable)?;
            let output = handler(event, step).await?;
            serde_json::to_value(output)
                .map_err(|err| StepError::non_retriable(format!("the function's output is not JSON: {err}")))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn noop(_: Event, _: Step) -> Result<(), StepError> {
        Ok(())
    }

    #[test]
    fn definition_errors_name_the_problem() {
        let err = Function::new("").on_event("a/b").handler(noop).unwrap_err();
        assert_eq!(err.to_string(), "function id must not be empty");
        let err = Function::new("f").handler(noop).unwrap_err();
        assert_eq!(err.to_string(), "function `f` has no trigger: add an event or a cron");
        let err = Function::new("f").cron("0 3 * *").handler(noop).unwrap_err();
        assert_eq!(
            err.to_string(),
            "function `f`: invalid cron `0 3 * *`: expected 5 fields (minute hour day-of-month month day-of-week), found 4"
        );
        let err = Function::new("f").cron("TZ=Mars/Olympus 0 3 * * *").handler(noop).unwrap_err();
        assert_eq!(
            err.to_string(),
            "function `f`: invalid cron `TZ=Mars/Olympus 0 3 * * *`: unknown time zone `Mars/Olympus` (expected an IANA name like Europe/Paris)"
        );
        let err = Function::new("f").cron("0 3 * * 1#2,5").handler(noop).unwrap_err();
        assert_eq!(
            err.to_string(),
            "function `f`: invalid cron `0 3 * * 1#2,5`: day of the week `1#2,5`: `#` and `L` must stand alone (EventBridge Scheduler allows them in no list, range or step)"
        );
        assert!(Function::new("f").cron("0 3 * * 5L").handler(noop).is_ok(), "alone, EventBridge takes it");
        let err = Function::new("f").on_event("").handler(noop).unwrap_err();
        assert_eq!(err.to_string(), "function `f`: event trigger name must not be empty");
        let err = Function::new("f").on_event("a/b").retries(21).handler(noop).unwrap_err();
        assert_eq!(err.to_string(), "function `f`: retries must be at most 20, got 21");
        let err = Function::new("f").on_event_if("a/b", "event.data.x ==").handler(noop).unwrap_err();
        assert!(err.to_string().starts_with("function `f`: invalid expression `event.data.x ==`: "), "{err}");
        let err = Function::new("has space").on_event("a/b").handler(noop).unwrap_err();
        assert_eq!(err.to_string(), "function id `has space` may only contain letters, digits, '-', '_' and '.'");
    }

    #[test]
    fn triggers_match_names_conditions_and_crons() {
        let f = Function::new("f")
            .on_event_if("shop/order.placed", "event.data.total > 100")
            .cron("0 3 * * *")
            .handler(noop)
            .unwrap();
        assert!(f.is_triggered_by(&EventPayload::new("shop/order.placed", serde_json::json!({"total": 150}))));
        assert!(!f.is_triggered_by(&EventPayload::new("shop/order.placed", serde_json::json!({"total": 50}))));
        assert!(f.is_triggered_by(&EventPayload::new(SCHEDULED_EVENT, serde_json::json!({"cron": "0 3 * * *"}))));
        assert!(!f.is_triggered_by(&EventPayload::new(SCHEDULED_EVENT, serde_json::json!({"cron": "0 4 * * *"}))));
    }

    #[test]
    fn on_failure_becomes_a_function_of_its_own() {
        let f = Function::new("charge")
            .on_event("a/b")
            .on_failure(|_: Event<FailureData>, _: Step| async { Ok(()) })
            .handler(noop)
            .unwrap();
        let registry = Registry::new([f]).unwrap();
        let failure = registry.get("charge-failure").expect("generated");
        assert_eq!(failure.retries(), 1);
        let failed = EventPayload::new(FAILED_EVENT, serde_json::json!({"function_id": "charge"}));
        assert!(failure.is_triggered_by(&failed));
        let other = EventPayload::new(FAILED_EVENT, serde_json::json!({"function_id": "other"}));
        assert!(!failure.is_triggered_by(&other));
    }
}
