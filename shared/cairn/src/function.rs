//! Function definitions: id, name, triggers (events and crons), retries, an `on_failure`
//! handler, and the handler itself, typed by the event it receives.

use crate::error::{DefinitionError, StepError};
use crate::event::{Event, EventData, EventPayload, FAILED_EVENT, SCHEDULED_EVENT};
use crate::expr::MatchExpr;
use crate::record::Millis;
use crate::step::Step;
use chrono::{TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
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

/// What starts a function.
#[derive(Clone, Debug)]
pub enum Trigger {
    /// An event by name, optionally filtered by a CEL condition over `event`.
    Event {
        /// Event name.
        name: String,
        /// Optional condition.
        expression: Option<MatchExpr>,
    },
    /// A cron schedule.
    Cron(Box<CronSchedule>),
}

impl Trigger {
    /// The event name this trigger delivers (`inngest/scheduled.timer` for crons).
    pub fn event_name(&self) -> &str {
        match self {
            Trigger::Event { name, .. } => name,
            Trigger::Cron(_) => SCHEDULED_EVENT,
        }
    }
}

/// A parsed 5-field cron expression with an optional `TZ=Area/City ` prefix (UTC otherwise).
#[derive(Clone)]
pub struct CronSchedule {
    source: String,
    pattern: String,
    zone: chrono_tz::Tz,
    cron: croner::Cron,
}

impl fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CronSchedule").field(&self.source).finish()
    }
}

impl CronSchedule {
    /// Parses `0 3 * * *` or `TZ=Europe/Paris 0 12 * * 5`.
    ///
    /// ```
    /// use cairn::CronSchedule;
    /// let paris = CronSchedule::parse("TZ=Europe/Paris 0 12 * * 5").unwrap();
    /// assert_eq!(paris.time_zone(), "Europe/Paris");
    /// assert!(CronSchedule::parse("61 * * * *").is_err());
    /// ```
    ///
    /// # Errors
    /// A message naming the bad time zone or cron field.
    pub fn parse(source: &str) -> Result<Self, String> {
        let trimmed = source.trim();
        let (zone, pattern) = match trimmed.strip_prefix("TZ=") {
            Some(rest) => {
                let (zone, pattern) =
                    rest.split_once(char::is_whitespace).ok_or_else(|| "nothing follows the TZ= prefix".to_string())?;
                let zone: chrono_tz::Tz = zone
                    .parse()
                    .map_err(|_| format!("unknown time zone `{zone}` (expected an IANA name like Europe/Paris)"))?;
                (zone, pattern.trim())
            }
            None => (chrono_tz::UTC, trimmed),
        };
        let fields = pattern.split_whitespace().count();
        if fields != 5 {
            return Err(format!("expected 5 fields (minute hour day-of-month month day-of-week), found {fields}"));
        }
        let parser = croner::parser::CronParser::builder().seconds(croner::parser::Seconds::Disallowed).build();

        let cron = parser.parse(pattern).map_err(|err| err.to_string())?;
        Ok(CronSchedule { source: trimmed.to_string(), pattern: pattern.to_string(), zone, cron })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The five fields, without the `TZ=` prefix.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The IANA time zone it is evaluated in.
    pub fn time_zone(&self) -> &str {
        self.zone.name()
    }

    /// The first firing strictly after `after` (ms since the epoch).
    pub fn next_after(&self, after: Millis) -> Option<Millis> {
        let start = Utc.timestamp_millis_opt(after).single()?.with_timezone(&self.zone);
        self.cron.find_next_occurrence(&start, false).ok().map(|next| next.timestamp_millis())
    }
}

/// The data of the `inngest/function.failed` event an `on_failure` handler receives.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailureData {
    /// The function whose run failed.
    pub function_id: String,
    /// The failed run.
    pub run_id: String,
    /// The event that started it. On the bus it carries no data (see [`EventPayload::summary`]);
    /// the runner fills in the full event from the failed run's head before the handler starts.
    pub event: EventPayload,
    /// The final error.
    pub error: StepError,
}

impl EventData for FailureData {
    const NAME: &'static str = FAILED_EVENT;
}

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
}

impl fmt::Debug for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Function")
            .field("id", &self.inner.id)
            .field("triggers", &self.inner.triggers)
            .field("retries", &self.inner.retries)
            .field("sends", &self.inner.sends)
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
                reason,
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
                reason,
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

/// The functions of one app, by id. Ids must be unique; failure handlers are included.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    functions: Vec<Function>,
    by_id: HashMap<String, usize>,
}

impl Registry {
    /// Registers `functions` and their failure handlers.
    ///
    /// # Errors
    /// [`DefinitionError::DuplicateFunctionId`] when two share an id.
    pub fn new(functions: impl IntoIterator<Item = Function>) -> Result<Self, DefinitionError> {
        let mut registry = Registry::default();
        for function in functions {
            let failure = function.failure_handler().cloned();
            registry.add(function)?;
            if let Some(failure) = failure {
                registry.add(failure)?;
            }
        }
        Ok(registry)
    }

    fn add(&mut self, function: Function) -> Result<(), DefinitionError> {
        if self.by_id.contains_key(function.id()) {
            return Err(DefinitionError::DuplicateFunctionId(function.id().to_string()));
        }
        self.by_id.insert(function.id().to_string(), self.functions.len());
        self.functions.push(function);
        Ok(())
    }

    /// The function with this id.
    pub fn get(&self, id: &str) -> Option<&Function> {
        self.by_id.get(id).map(|&index| &self.functions[index])
    }

    /// All functions, failure handlers included, in registration order.
    pub fn functions(&self) -> &[Function] {
        &self.functions
    }

    /// The functions `event` starts.
    pub fn triggered_by<'a>(&'a self, event: &'a EventPayload) -> impl Iterator<Item = &'a Function> + 'a {
        self.functions.iter().filter(move |function| function.is_triggered_by(event))
    }
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
    fn duplicate_ids_are_rejected() {
        let a = Function::new("same").on_event("a/b").handler(noop).unwrap();
        let b = Function::new("same").on_event("c/d").handler(noop).unwrap();
        assert_eq!(
            Registry::new([a, b]).unwrap_err().to_string(),
            "duplicate function id `same`: every function of an app needs its own id"
        );
    }

    #[test]
    fn cron_fires_in_its_time_zone() {
        // 2026-11-23T00:00:00Z; 03:00 in Paris (UTC+1 in winter) is 02:00Z.
        let midnight = 1_795_392_000_000;
        let paris = CronSchedule::parse("TZ=Europe/Paris 0 3 * * *").unwrap();
        assert_eq!(paris.next_after(midnight), Some(midnight + 2 * 3_600_000));
        let utc = CronSchedule::parse("0 3 * * *").unwrap();
        assert_eq!(utc.next_after(midnight), Some(midnight + 3 * 3_600_000));
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
