//! Match expressions in the CEL form Inngest uses: `event.data.userId == async.data.userId`,
//! where `event` is the run's triggering event and `async` the candidate event.

use serde_json::Value;
use std::fmt;
use std::sync::Arc;

/// A compiled CEL condition.
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
    pub fn parse(source: &str) -> Result<Self, String> {
        if source.trim().is_empty() {
            return Err("expression is empty".into());
        }
        let program = cel::Program::compile(source).map_err(|err| err.to_string().trim().replace('\n', " "))?;
        Ok(MatchExpr { source: source.to_string(), program: Arc::new(program) })
    }

    /// Inngest's `match: "data.id"` shorthand: `event.data.id == async.data.id`.
    ///
    /// # Errors
    /// As [`MatchExpr::parse`].
    pub fn field(path: &str) -> Result<Self, String> {
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
    pub fn matches(&self, event: &Value, candidate: &Value) -> Result<bool, String> {
        let mut context = cel::Context::default();
        context.add_variable("event", event).map_err(|err| err.to_string())?;
        context.add_variable("async", candidate).map_err(|err| err.to_string())?;
        match self.program.execute(&context) {
            Ok(cel::Value::Bool(value)) => Ok(value),
            Ok(other) => Err(format!("expression `{}` gave {other:?}, not a boolean", self.source)),
            Err(cel::ExecutionError::NoSuchKey(_)) => Ok(false),
            Err(err) => Err(format!("expression `{}`: {err}", self.source)),
        }
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
    fn invalid_expressions_are_errors() {
        assert_eq!(MatchExpr::parse("  ").unwrap_err(), "expression is empty");
        assert!(MatchExpr::parse("event.data.id == ").is_err());
        let not_bool = MatchExpr::parse("event.data.id").unwrap();
        assert!(not_bool.matches(&json!({"data": {"id": 1}}), &json!({})).unwrap_err().contains("not a boolean"));
    }
}
