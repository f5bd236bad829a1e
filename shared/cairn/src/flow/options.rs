//! The flow-control options a user writes on the function builder, each with Inngest's bounds
//! (`reference/flow-control.md` sections 1.3 and 1.4) checked when the function is defined, and
//! written back in the JSON shape Inngest's TypeScript SDK registers (section 2).

use super::batch::BatchEvents;
use super::debounce::Debounce;
use super::values::{DAY, Expr, Period, SECOND};
use serde_json::{Map, Value, json};

/// A flow-control option Inngest would refuse: which option (as the builder names it:
/// `throttle`, `rate_limit`, ...), and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid `{option}`: {reason}")]
pub struct OptionError {
    /// The option.
    pub option: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl From<(&'static str, String)> for OptionError {
    fn from((option, reason): (&'static str, String)) -> Self {
        OptionError { option, reason }
    }
}

/// Which runs share a concurrency limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConcurrencyScope {
    /// This function's runs only (Inngest's `fn`, the default).
    #[default]
    Function,
    /// Every function of the environment (a Cairn deployment: one stack) with the same key.
    Environment,
    /// Every function of the account with the same key.
    Account,
}

impl ConcurrencyScope {
    fn wire(self) -> &'static str {
        match self {
            ConcurrencyScope::Function => "fn",
            ConcurrencyScope::Environment => "env",
            ConcurrencyScope::Account => "account",
        }
    }
}

/// At most `limit` invocations executing code at once, per value of `key` (Inngest's
/// `concurrency`). Sleeping, waiting and backing off do not hold a slot.
///
/// ```
/// use cairn::flow::{Concurrency, ConcurrencyScope};
/// let per_user = Concurrency::new(1).key("event.data.userId");
/// let shared = Concurrency::new(20).key("\"readwise-api\"").scope(ConcurrencyScope::Account);
/// # let _ = (per_user, shared);
/// ```
#[derive(Debug, Clone)]
pub struct Concurrency {
    pub(crate) limit: u32,
    key_source: Option<String>,
    pub(crate) key: Option<Expr>,
    pub(crate) scope: ConcurrencyScope,
}

impl Concurrency {
    /// A limit of `limit` (0: no limit).
    pub fn new(limit: u32) -> Self {
        Concurrency { limit, key_source: None, key: None, scope: ConcurrencyScope::Function }
    }

    /// A CEL expression over `event`: each value has its own limit.
    pub fn key(mut self, expression: impl Into<String>) -> Self {
        self.key_source = Some(expression.into());
        self
    }

    /// Which runs share the limit (default: this function's).
    pub fn scope(mut self, scope: ConcurrencyScope) -> Self {
        self.scope = scope;
        self
    }

    pub(crate) fn check(&mut self) -> Result<(), String> {
        if let Some(source) = &self.key_source {
            self.key = Some(Expr::parse(source)?);
        } else if self.scope != ConcurrencyScope::Function {
            return Err(format!("scope `{}` needs a key", self.scope.wire()));
        }
        Ok(())
    }

    pub(super) fn wire(&self) -> Value {
        let mut object = Map::new();
        object.insert("limit".into(), json!(self.limit));
        if let Some(key) = &self.key_source {
            object.insert("key".into(), json!(key));
        }
        if self.scope != ConcurrencyScope::Function {
            object.insert("scope".into(), json!(self.scope.wire()));
        }
        Value::Object(object)
    }
}

/// At most `limit` run starts per `period` per key, with `burst` more from idle; runs over it
/// wait in a queue, none is dropped (Inngest's `throttle`, a GCRA limiter).
#[derive(Debug, Clone)]
pub struct Throttle {
    pub(crate) limit: u32,
    period_source: String,
    pub(crate) period: Option<Period>,
    pub(crate) burst: u32,
    key_source: Option<String>,
    pub(crate) key: Option<Expr>,
}

impl Throttle {
    /// `limit` starts per `period` (`"1s"` to `"7d"`); a limit of 0 counts as 1, as in Inngest.
    pub fn new(limit: u32, period: impl Into<String>) -> Self {
        Throttle { limit, period_source: period.into(), period: None, burst: 0, key_source: None, key: None }
    }

    /// Starts allowed at once from idle beyond `limit` (default 0).
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = burst;
        self
    }

    /// A CEL expression over `event`: each value has its own limiter.
    pub fn key(mut self, expression: impl Into<String>) -> Self {
        self.key_source = Some(expression.into());
        self
    }

    pub(crate) fn check(&mut self) -> Result<(), String> {
        self.limit = self.limit.max(1);
        self.period = Some(Period::parse(&self.period_source, SECOND, 7 * DAY, "from 1s to 7d")?);
        if let Some(source) = &self.key_source {
            self.key = Some(Expr::parse(source)?);
        }
        Ok(())
    }

    pub(super) fn wire(&self) -> Value {
        let mut object = Map::new();
        object.insert("limit".into(), json!(self.limit));
        object.insert("period".into(), json!(self.period_source));
        if self.burst > 0 {
            object.insert("burst".into(), json!(self.burst));
        }
        if let Some(key) = &self.key_source {
            object.insert("key".into(), json!(key));
        }
        Value::Object(object)
    }
}

/// At most `limit` runs per `period` per key; events over it start nothing (Inngest's
/// `rateLimit`: GCRA with a hidden burst of `limit / 10`).
#[derive(Debug, Clone)]
pub struct RateLimit {
    pub(crate) limit: u32,
    period_source: String,
    pub(crate) period: Option<Period>,
    key_source: Option<String>,
    pub(crate) key: Option<Expr>,
}

impl RateLimit {
    /// `limit` runs per `period` (`"1s"` to `"24h"`).
    pub fn new(limit: u32, period: impl Into<String>) -> Self {
        RateLimit { limit, period_source: period.into(), period: None, key_source: None, key: None }
    }

    /// A CEL expression over `event`: each value has its own limit; `false` exempts the event.
    pub fn key(mut self, expression: impl Into<String>) -> Self {
        self.key_source = Some(expression.into());
        self
    }

    pub(crate) fn check(&mut self) -> Result<(), String> {
        if self.limit == 0 {
            return Err("limit must be at least 1".into());
        }
        self.period = Some(Period::parse(&self.period_source, SECOND, DAY, "from 1s to 24h")?);
        if let Some(source) = &self.key_source {
            self.key = Some(Expr::parse(source)?);
        }
        Ok(())
    }

    pub(super) fn wire(&self) -> Value {
        let mut object = Map::new();
        object.insert("limit".into(), json!(self.limit));
        object.insert("period".into(), json!(self.period_source));
        if let Some(key) = &self.key_source {
            object.insert("key".into(), json!(key));
        }
        Value::Object(object)
    }
}

/// What a singleton does when a run for its key is already active.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SingletonMode {
    /// The new run is skipped.
    Skip,
    /// The active run is cancelled and the new one starts.
    Cancel,
}

/// At most one active run per key (Inngest's `singleton`).
#[derive(Debug, Clone)]
pub struct Singleton {
    pub(crate) mode: SingletonMode,
    key_source: Option<String>,
    pub(crate) key: Option<Expr>,
}

impl Singleton {
    /// A new run is skipped while one for its key is active.
    pub fn skip() -> Self {
        Singleton { mode: SingletonMode::Skip, key_source: None, key: None }
    }

    /// A new run cancels the active one for its key.
    pub fn cancel() -> Self {
        Singleton { mode: SingletonMode::Cancel, key_source: None, key: None }
    }

    /// A CEL expression over `event` (default: one active run per function); `false` exempts
    /// the event.
    pub fn key(mut self, expression: impl Into<String>) -> Self {
        self.key_source = Some(expression.into());
        self
    }

    pub(crate) fn check(&mut self) -> Result<(), String> {
        if let Some(source) = &self.key_source {
            self.key = Some(Expr::parse(source)?);
        }
        Ok(())
    }

    pub(super) fn wire(&self) -> Value {
        let mode = match self.mode {
            SingletonMode::Skip => "skip",
            SingletonMode::Cancel => "cancel",
        };
        let mut object = Map::new();
        object.insert("mode".into(), json!(mode));
        if let Some(key) = &self.key_source {
            object.insert("key".into(), json!(key));
        }
        Value::Object(object)
    }
}

/// Cancels a run when an event arrives (Inngest's `cancelOn`).
#[derive(Debug, Clone)]
pub struct CancelOn {
    pub(crate) event: String,
    condition_source: Option<String>,
    pub(crate) condition: Option<Expr>,
    timeout_source: Option<String>,
    pub(crate) timeout: Option<Period>,
}

impl CancelOn {
    /// Cancels on every `event` received after the run was created.
    pub fn event(event: impl Into<String>) -> Self {
        CancelOn { event: event.into(), condition_source: None, condition: None, timeout_source: None, timeout: None }
    }

    /// Only when the CEL condition over `event` (the run's trigger) and `async` (the incoming
    /// event) holds, e.g. `async.data.userId == event.data.userId`.
    pub fn when(mut self, condition: impl Into<String>) -> Self {
        self.condition_source = Some(condition.into());
        self
    }

    /// Inngest's `match: "data.userId"`: the field is equal on both events.
    pub fn matching(self, field: &str) -> Self {
        self.when(format!("event.{field} == async.{field}"))
    }

    /// Stop listening this long after the run was created (default: as long as it runs).
    pub fn timeout(mut self, timeout: impl Into<String>) -> Self {
        self.timeout_source = Some(timeout.into());
        self
    }

    pub(crate) fn check(&mut self) -> Result<(), String> {
        if self.event.trim().is_empty() {
            return Err("the event name is empty".into());
        }
        if let Some(source) = &self.condition_source {
            self.condition = Some(Expr::parse(source)?);
        }
        if let Some(source) = &self.timeout_source {
            self.timeout = Some(Period::parse(source, SECOND, 365 * DAY, "from 1s to 365d")?);
        }
        Ok(())
    }

    pub(super) fn wire(&self) -> Value {
        let mut object = Map::new();
        object.insert("event".into(), json!(self.event));
        if let Some(condition) = &self.condition_source {
            object.insert("if".into(), json!(condition));
        }
        if let Some(timeout) = &self.timeout_source {
            object.insert("timeout".into(), json!(timeout));
        }
        Value::Object(object)
    }
}

/// Cancels runs that wait too long to start, or run too long (Inngest's `timeouts`).
#[derive(Debug, Clone, Default)]
pub struct Timeouts {
    start_source: Option<String>,
    pub(crate) start: Option<Period>,
    finish_source: Option<String>,
    pub(crate) finish: Option<Period>,
}

impl Timeouts {
    /// No timeouts yet: add [`Timeouts::start`] and/or [`Timeouts::finish`].
    pub fn new() -> Self {
        Timeouts::default()
    }

    /// Cancel a run that has not started its first step this long after it was created.
    pub fn start(mut self, timeout: impl Into<String>) -> Self {
        self.start_source = Some(timeout.into());
        self
    }

    /// Cancel a run that has not finished this long after its first step started.
    pub fn finish(mut self, timeout: impl Into<String>) -> Self {
        self.finish_source = Some(timeout.into());
        self
    }

    pub(crate) fn check(&mut self) -> Result<(), String> {
        if self.start_source.is_none() && self.finish_source.is_none() {
            return Err("set start, finish or both".into());
        }
        if let Some(source) = &self.start_source {
            self.start = Some(Period::parse(source, SECOND, 365 * DAY, "from 1s to 365d")?);
        }
        if let Some(source) = &self.finish_source {
            self.finish = Some(Period::parse(source, SECOND, 365 * DAY, "from 1s to 365d")?);
        }
        Ok(())
    }

    pub(super) fn wire(&self) -> Value {
        let mut object = Map::new();
        if let Some(start) = &self.start_source {
            object.insert("start".into(), json!(start));
        }
        if let Some(finish) = &self.finish_source {
            object.insert("finish".into(), json!(finish));
        }
        Value::Object(object)
    }
}

/// Every flow-control option of one function, checked.
#[derive(Debug, Clone, Default)]
pub struct FlowControl {
    pub(crate) concurrency: Vec<Concurrency>,
    pub(crate) throttle: Option<Throttle>,
    pub(crate) rate_limit: Option<RateLimit>,
    pub(crate) idempotency: Option<Expr>,
    pub(crate) priority: Option<Expr>,
    pub(crate) singleton: Option<Singleton>,
    pub(crate) cancel: Vec<CancelOn>,
    pub(crate) timeouts: Option<Timeouts>,
    pub(crate) debounce: Option<Debounce>,
    pub(crate) batch: Option<BatchEvents>,
}

/// Inngest's caps (`pkg/consts`).
pub(crate) const MAX_CONCURRENCY_LIMITS: usize = 2;
pub(crate) const MAX_CANCEL_RULES: usize = 5;
/// The priority factor's bounds in seconds (Inngest's documented range).
pub const MAX_PRIORITY_SECS: i64 = 600;

impl FlowControl {
    /// Whether no option is set: such a function pays nothing for flow control.
    pub fn is_empty(&self) -> bool {
        self.concurrency.is_empty()
            && self.throttle.is_none()
            && self.rate_limit.is_none()
            && self.idempotency.is_none()
            && self.priority.is_none()
            && self.singleton.is_none()
            && self.cancel.is_empty()
            && self.timeouts.is_none()
            && self.debounce.is_none()
            && self.batch.is_none()
    }

    /// The event names `cancel_on` listens for (what the deployment must route to the function).
    pub fn cancel_events(&self) -> Vec<&str> {
        self.cancel.iter().map(|rule| rule.event.as_str()).collect()
    }

    /// `timeouts.start` in milliseconds.
    pub fn start_timeout(&self) -> Option<i64> {
        self.timeouts.as_ref().and_then(|t| t.start.as_ref()).map(|p| i64::try_from(p.millis).unwrap_or(i64::MAX))
    }

    /// `timeouts.finish` in milliseconds.
    pub fn finish_timeout(&self) -> Option<i64> {
        self.timeouts.as_ref().and_then(|t| t.finish.as_ref()).map(|p| i64::try_from(p.millis).unwrap_or(i64::MAX))
    }

    /// The options set on this function's builder, in the order Inngest's validator checks
    /// them; the first problem, naming its option.
    pub(crate) fn validate(&self) -> Result<(), OptionError> {
        if self.concurrency.len() > MAX_CONCURRENCY_LIMITS {
            return Err((
                "concurrency",
                format!("at most {MAX_CONCURRENCY_LIMITS} limits, got {}", self.concurrency.len()),
            )
                .into());
        }
        if self.cancel.len() > MAX_CANCEL_RULES {
            return Err(("cancel_on", format!("at most {MAX_CANCEL_RULES} rules, got {}", self.cancel.len())).into());
        }
        if self.batch.is_some() {
            // Inngest's validator refuses the first four; its docs also the last two.
            let clashes = [
                ("cancel_on", !self.cancel.is_empty()),
                ("debounce", self.debounce.is_some()),
                ("singleton", self.singleton.is_some()),
                ("priority", self.priority.is_some()),
                ("idempotency", self.idempotency.is_some()),
                ("rate_limit", self.rate_limit.is_some()),
            ];
            if let Some((other, _)) = clashes.iter().find(|(_, set)| *set) {
                return Err((
                    "batch_events",
                    format!("cannot be combined with `{other}` (a batch's run has no single triggering event)"),
                )
                    .into());
            }
        }
        if self.idempotency.is_some() && self.rate_limit.is_some() {
            return Err((
                "idempotency",
                "set idempotency or rate_limit, not both: idempotency is a rate limit of 1 per 24h".into(),
            )
                .into());
        }
        Ok(())
    }
}
