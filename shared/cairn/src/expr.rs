//! Match expressions in the CEL form Inngest uses: `event.data.userId == async.data.userId`,
//! where `event` is the run's triggering event and `async` the candidate event.

use serde_json::Value;
use std::fmt;
use std::sync::Arc;

/// The longest expression accepted. Match conditions are short; CEL's parser and evaluator
/// recurse once per nesting level or operator, so the length bounds their depth.
pub const MAX_EXPRESSION_BYTES: usize = 1024;

/// Compiled conditions kept by [`MatchExpr::cached`].
const EXPRESSION_CACHE_ENTRIES: usize = 4_096;

/// The stack CEL runs on. Its parser takes about 200 KB per nesting level in a debug build,
/// so ten parentheses overflowed a 2 MB tokio worker and aborted the process; 64 MB holds
/// the deepest expression of [`MAX_EXPRESSION_BYTES`] (only touched pages are committed).
const CEL_STACK_BYTES: usize = 64 << 20;

/// Runs `work` on a thread with [`CEL_STACK_BYTES`] of stack; a panic in CEL is an error.
fn on_cel_stack<R: Send>(work: impl FnOnce() -> R + Send) -> Result<R, String> {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("cel".into())
            .stack_size(CEL_STACK_BYTES)
            .spawn_scoped(scope, work)
            .map_err(|err| format!("cannot start the expression thread: {err}"))?
            .join()
            .map_err(|panic| format!("the expression evaluator failed: {}", crate::error::panic_message(&panic)))
    })
}

/// What an expression gave for one event, as flow-control keys use it (Inngest's rules, section
/// 1.2 of the flow-control reference): text for every scalar, `false` kept apart (it turns a rate
/// limit, idempotency or singleton off for that event), null for a missing field.
#[derive(Debug, Clone, PartialEq)]
pub enum ExprValue {
    /// A string as is; numbers and `true` formatted as text.
    Text(String),
    /// The boolean `false`.
    False,
    /// `null`, or a field the event does not have.
    Null,
}

impl ExprValue {
    /// The value as a key: its text, `"false"`, or Inngest's shared `<nil>` bucket.
    pub fn key_text(&self) -> &str {
        match self {
            ExprValue::Text(text) => text,
            ExprValue::False => "false",
            ExprValue::Null => "<nil>",
        }
    }
}

/// A compiled CEL expression: a condition, or a key or priority over the event.
#[derive(Clone)]
pub struct MatchExpr {
    source: String,
    program: Arc<cel::Program>,
}

impl fmt::Debug for MatchExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("MatchExpr").field(&self.source).finish()
    }
}

impl MatchExpr {
    /// Compiles `source`.
    ///
    /// ```
    /// use cairn::MatchExpr;
    /// use serde_json::json;
    /// let expr = MatchExpr::parse("async.data.id == event.data.id").unwrap();
    /// assert!(expr.matches(&json!({"data": {"id": 7}}), &json!({"data": {"id": 7}})).unwrap());
    /// assert!(MatchExpr::parse("event.data.id ==").is_err());
    /// ```
    ///
    /// # Errors
    /// The parser's message when `source` is not valid CEL (or is empty).
    pub fn parse(source: &str) -> Result<Self, crate::error::ExprError> {
        if source.trim().is_empty() {
            return Err("expression is empty".into());
        }
        if source.len() > MAX_EXPRESSION_BYTES {
            return Err(format!("expression is {} bytes, the limit is {MAX_EXPRESSION_BYTES}", source.len()).into());
        }
        let program =
            on_cel_stack(|| cel::Program::compile(source))?.map_err(|err| err.to_string().trim().replace('\n', " "))?;
        Ok(MatchExpr { source: source.to_string(), program: Arc::new(program) })
    }

    /// [`MatchExpr::parse`] through a process-wide cache: matching an event against many
    /// waits or cancel listeners compiles each distinct condition once, not once per wait.
    ///
    /// # Errors
    /// As [`MatchExpr::parse`].
    pub fn cached(source: &str) -> Result<Self, crate::error::ExprError> {
        static CACHE: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<String, MatchExpr>>> =
            std::sync::LazyLock::new(Default::default);
        let mut cache = CACHE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(expr) = cache.get(source) {
            return Ok(expr.clone());
        }
        let expr = MatchExpr::parse(source)?;
        if cache.len() >= EXPRESSION_CACHE_ENTRIES {
            cache.clear(); // bounded: a flood of distinct conditions cannot grow it without end
        }
        cache.insert(source.to_string(), expr.clone());
        Ok(expr)
    }

    /// Inngest's `match: "data.id"` shorthand: `event.data.id == async.data.id`.
    ///
    /// # Errors
    /// As [`MatchExpr::parse`].
    pub fn field(path: &str) -> Result<Self, crate::error::ExprError> {
        Self::parse(&format!("event.{path} == async.{path}"))
    }

    /// The source text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates the condition with `event` (the trigger) and `async` (the candidate).
    /// A field missing on either side makes the condition false, as in Inngest.
    ///
    /// # Errors
    /// When the expression does not evaluate to a boolean.
    pub fn matches(&self, event: &Value, candidate: &Value) -> Result<bool, crate::error::ExprError> {
        let program = &self.program;
        let outcome = on_cel_stack(|| {
            let mut context = cel::Context::default();
            context.add_variable("event", event).map_err(|err| err.to_string())?;
            context.add_variable("async", candidate).map_err(|err| err.to_string())?;
            Ok::<_, String>(program.execute(&context))
        })??;
        match outcome {
            Ok(cel::Value::Bool(value)) => Ok(value),
            Ok(other) => Err(format!("expression `{}` gave {other:?}, not a boolean", self.source).into()),
            Err(cel::ExecutionError::NoSuchKey(_)) => Ok(false),
            Err(err) => Err(format!("expression `{}`: {err}", self.source).into()),
        }
    }
}

impl MatchExpr {
    /// Evaluates the expression over `event` alone (a flow-control key or priority).
    ///
    /// # Errors
    /// When evaluation fails for another reason than a missing field.
    pub fn value(&self, event: &Value) -> Result<ExprValue, crate::error::ExprError> {
        let program = &self.program;
        let outcome = on_cel_stack(|| {
            let mut context = cel::Context::default();
            context.add_variable("event", event).map_err(|err| err.to_string())?;
            Ok::<_, String>(program.execute(&context))
        })??;
        Ok(match outcome {
            Ok(cel::Value::Bool(false)) => ExprValue::False,
            Ok(cel::Value::Bool(true)) => ExprValue::Text("true".into()),
            Ok(cel::Value::Null) | Err(cel::ExecutionError::NoSuchKey(_)) => ExprValue::Null,
            Ok(cel::Value::String(text)) => ExprValue::Text(text.to_string()),
            Ok(cel::Value::Int(n)) => ExprValue::Text(n.to_string()),
            Ok(cel::Value::UInt(n)) => ExprValue::Text(n.to_string()),
            Ok(cel::Value::Float(n)) => ExprValue::Text(n.to_string()),
            Ok(other) => ExprValue::Text(format!("{other:?}")),
            Err(err) => return Err(format!("expression `{}`: {err}", self.source).into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn matches_on_fields_and_rejects_others() {
        let expr = MatchExpr::parse("event.data.userId == async.data.userId").unwrap();
        let trigger = json!({"name": "a/b", "data": {"userId": "u1"}});
        assert!(expr.matches(&trigger, &json!({"data": {"userId": "u1"}})).unwrap());
        assert!(!expr.matches(&trigger, &json!({"data": {"userId": "u2"}})).unwrap());
        assert!(!expr.matches(&trigger, &json!({"data": {}})).unwrap());
    }

    #[test]
    fn field_shorthand_expands_like_inngest() {
        let expr = MatchExpr::field("data.id").unwrap();
        assert_eq!(expr.source(), "event.data.id == async.data.id");
    }

    #[test]
    fn deep_expressions_evaluate_on_their_own_stack_and_long_ones_are_refused() {
        // On a 2 MB thread (a tokio worker's), as the runner evaluates waits: ten nested
        // parentheses overflowed the stack there and aborted the process.
        let outcome = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(|| {
                let nested = MatchExpr::parse(&format!("{}true{}", "(".repeat(90), ")".repeat(90))).unwrap();
                let chain = MatchExpr::parse(&format!("event.data.n{} == 0", " + 1".repeat(200))).unwrap();
                (nested.matches(&json!({}), &json!({})), chain.matches(&json!({"data": {"n": -200}}), &json!({})))
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(outcome, (Ok(true), Ok(true)));
        assert_eq!(
            MatchExpr::parse(&"1 == 1 && ".repeat(103)).unwrap_err(),
            "expression is 1030 bytes, the limit is 1024"
        );
    }

    #[test]
    fn values_follow_inngests_key_rules() {
        let event = json!({"data": {"user": "u1", "n": 7, "off": false, "on": true, "none": null}});
        let value = |source: &str| MatchExpr::parse(source).unwrap().value(&event).unwrap();
        assert_eq!(value("event.data.user"), ExprValue::Text("u1".into()));
        assert_eq!(value("event.data.n"), ExprValue::Text("7".into()));
        assert_eq!(value("event.data.on"), ExprValue::Text("true".into()));
        assert_eq!(value("event.data.off"), ExprValue::False);
        assert_eq!(value("event.data.none"), ExprValue::Null);
        assert_eq!(value("event.data.missing"), ExprValue::Null);
        assert_eq!(value("event.data.missing").key_text(), "<nil>");
        assert_eq!(value("\"openai\""), ExprValue::Text("openai".into()));
        assert_eq!(value("event.data.n > 5 ? 120 : 0"), ExprValue::Text("120".into()));
    }

    #[test]
    fn invalid_expressions_are_errors() {
        assert_eq!(MatchExpr::parse("  ").unwrap_err(), "expression is empty");
        assert!(MatchExpr::parse("event.data.id == ").is_err());
        let not_bool = MatchExpr::parse("event.data.id").unwrap();
        assert!(not_bool.matches(&json!({"data": {"id": 1}}), &json!({})).unwrap_err().contains("not a boolean"));
    }
}
