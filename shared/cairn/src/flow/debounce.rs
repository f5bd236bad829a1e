//! Debounce (flow-control reference, section 4.5), the option: [`Debounce`]. A debounce is a
//! [window](super::window) each event restarts; its run starts with the last event.

use super::values::{DAY, Expr, Period, SECOND};
use super::window::WindowRule;
use serde_json::{Map, Value, json};

/// Starts one run per burst of events: when no event for the key arrived for `period`
/// (Inngest's `debounce`), with the last event. Cairn's `all_events` also hands the run every
/// event of the window.
#[derive(Debug, Clone)]
pub struct Debounce {
    period_source: String,
    pub(crate) period: Option<Period>,
    key_source: Option<String>,
    pub(crate) key: Option<Expr>,
    timeout_source: Option<String>,
    pub(crate) timeout: Option<Period>,
    pub(crate) all_events: bool,
}

impl Debounce {
    /// Starts a run once no event arrived for `period` (`"1s"` to `"7d"`).
    pub fn new(period: impl Into<String>) -> Self {
        Debounce {
            period_source: period.into(),
            period: None,
            key_source: None,
            key: None,
            timeout_source: None,
            timeout: None,
            all_events: false,
        }
    }

    /// A CEL expression over `event`: each value has its own window (an empty one means none).
    pub fn key(mut self, expression: impl Into<String>) -> Self {
        self.key_source = Some(expression.into()).filter(|source: &String| !source.trim().is_empty());
        self
    }

    /// The longest a window may delay its run, from its first event (`"1s"` to `"7d"`).
    pub fn timeout(mut self, timeout: impl Into<String>) -> Self {
        self.timeout_source = Some(timeout.into());
        self
    }

    /// The run also receives every event of the window, oldest first
    /// ([`Step::events`](crate::Step::events)); each is kept one item under the window, and a
    /// window fires early once they reach [`MAX_WINDOW_BYTES`](super::MAX_WINDOW_BYTES).
    pub fn all_events(mut self) -> Self {
        self.all_events = true;
        self
    }

    pub(crate) fn check(&mut self) -> Result<(), String> {
        self.period = Some(Period::parse(&self.period_source, SECOND, 7 * DAY, "from 1s to 7d")?);
        if let Some(source) = &self.timeout_source {
            self.timeout = Some(
                Period::parse(source, SECOND, 7 * DAY, "from 1s to 7d")
                    .map_err(|reason| format!("timeout: {reason}"))?,
            );
        }
        if let Some(source) = &self.key_source {
            self.key = Some(Expr::parse(source)?);
        }
        Ok(())
    }

    pub(crate) fn wire(&self) -> Value {
        let mut object = Map::new();
        object.insert("period".into(), json!(self.period_source));
        if let Some(key) = &self.key_source {
            object.insert("key".into(), json!(key));
        }
        if let Some(timeout) = &self.timeout_source {
            object.insert("timeout".into(), json!(timeout));
        }
        Value::Object(object)
    }

    /// Reads Inngest's `debounce` object.
    pub(crate) fn from_wire(value: &Value) -> Self {
        let text = |field: &str| value[field].as_str().map(str::to_string);
        let mut option = Debounce::new(text("period").unwrap_or_default());
        if let Some(key) = text("key") {
            option = option.key(key);
        }
        if let Some(timeout) = text("timeout") {
            option = option.timeout(timeout);
        }
        option
    }

    pub(crate) fn rule(&self) -> WindowRule {
        let millis = |period: &Option<Period>| period.as_ref().map(|p| i64::try_from(p.millis).unwrap_or(i64::MAX));
        WindowRule::Debounce {
            period: millis(&self.period).unwrap_or(1_000),
            timeout: millis(&self.timeout),
            keep_events: self.all_events,
        }
    }
}
