//! Event batches (flow-control reference, section 4.6), the option: [`BatchEvents`]. A batch is
//! a [window](super::window) that fires `timeout` after its first event or once it holds
//! `max_size` events, and whose run receives every event.

use super::values::{Expr, Period, SECOND};
use super::window::WindowRule;
use serde_json::{Map, Value, json};

/// The largest batch Cairn accepts (Inngest's largest plan allows 500 events).
pub const MAX_BATCH_SIZE: u32 = 1_000;
/// The longest a batch may wait for more events (Inngest's largest plan allows 5 minutes).
const MAX_BATCH_TIMEOUT: u64 = 3_600 * SECOND;

/// One run receives up to `max_size` events, started when the batch is full or `timeout` after
/// its first event (Inngest's `batchEvents`): the handler's event is the first, and
/// [`Step::events`](crate::Step::events) gives them all, in the order they came.
#[derive(Debug, Clone)]
pub struct BatchEvents {
    pub(crate) max_size: u32,
    timeout_source: String,
    pub(crate) timeout: Option<Period>,
    key_source: Option<String>,
    pub(crate) key: Option<Expr>,
    condition_source: Option<String>,
    pub(crate) condition: Option<Expr>,
}

impl BatchEvents {
    /// Batches of up to `max_size` events (2 to 1,000), each closed at most `timeout` (`"1s"` to
    /// `"1h"`) after its first event.
    pub fn new(max_size: u32, timeout: impl Into<String>) -> Self {
        BatchEvents {
            max_size,
            timeout_source: timeout.into(),
            timeout: None,
            key_source: None,
            key: None,
            condition_source: None,
            condition: None,
        }
    }

    /// A CEL expression over `event`: one batch per value.
    pub fn key(mut self, expression: impl Into<String>) -> Self {
        self.key_source = Some(expression.into()).filter(|source: &String| !source.trim().is_empty());
        self
    }

    /// Only events for which this CEL condition holds are batched (Inngest's `if`); the others
    /// (and those it fails on) start a run of their own at once.
    pub fn when(mut self, condition: impl Into<String>) -> Self {
        self.condition_source = Some(condition.into());
        self
    }

    pub(crate) fn check(&mut self) -> Result<(), String> {
        if !(2..=MAX_BATCH_SIZE).contains(&self.max_size) {
            return Err(format!("max size {} is out of bounds: from 2 to {MAX_BATCH_SIZE}", self.max_size));
        }
        self.timeout = Some(
            Period::parse(&self.timeout_source, SECOND, MAX_BATCH_TIMEOUT, "from 1s to 1h")
                .map_err(|reason| format!("timeout: {reason}"))?,
        );
        if let Some(source) = &self.key_source {
            self.key = Some(Expr::parse(source)?);
        }
        if let Some(source) = &self.condition_source {
            self.condition = Some(Expr::parse(source)?);
        }
        Ok(())
    }

    pub(crate) fn wire(&self) -> Value {
        let mut object = Map::new();
        object.insert("maxSize".into(), json!(self.max_size));
        object.insert("timeout".into(), json!(self.timeout_source));
        if let Some(key) = &self.key_source {
            object.insert("key".into(), json!(key));
        }
        if let Some(condition) = &self.condition_source {
            object.insert("if".into(), json!(condition));
        }
        Value::Object(object)
    }

    /// Reads Inngest's `batchEvents` object.
    pub(crate) fn from_wire(value: &Value) -> Self {
        let text = |field: &str| value[field].as_str().map(str::to_string);
        let max_size = u32::try_from(value["maxSize"].as_u64().unwrap_or(0)).unwrap_or(u32::MAX);
        let mut option = BatchEvents::new(max_size, text("timeout").unwrap_or_default());
        if let Some(key) = text("key") {
            option = option.key(key);
        }
        if let Some(condition) = text("if") {
            option = option.when(condition);
        }
        option
    }

    pub(crate) fn rule(&self) -> WindowRule {
        let timeout = self.timeout.as_ref().map_or(SECOND, |period| period.millis);
        WindowRule::Batch { max_size: self.max_size, timeout: i64::try_from(timeout).unwrap_or(i64::MAX) }
    }
}
