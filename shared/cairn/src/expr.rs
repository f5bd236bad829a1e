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
pub(crate) fn on_cel_stack<R: Send>(work: impl FnOnce() -> R + Send) -> Result<R, String> {
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
        on_cel_stack(|| self.matches_here(event, candidate))?
    }

    /// [`MatchExpr::matches`] on the calling thread: only inside [`on_cel_stack`], which runs
    /// many evaluations on one thread.
    pub(crate) fn matches_here(&self, event: &Value, candidate: &Value) -> Result<bool, crate::error::ExprError> {
        let outcome = {
            let mut context = cel::Context::default();
            context.add_variable("event", event).map_err(|err| err.to_string())?;
            context.add_variable("async", candidate).map_err(|err| err.to_string())?;
            self.program.execute(&context)
        };
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

/// What a wait's condition reveals about the events it can match, so that an arriving event is
/// compared only with the waits it could resume (see [`MatchExpr::equality`] and
/// [`MatchExpr::event_paths`]).
impl MatchExpr {
    /// The first top-level conjunct of the form `async.<path> == <x>` (either way round), where
    /// `<x>` is a literal or an `event.<path>` field, with `<x>` resolved against `trigger`:
    /// `async.data.id == event.data.id` on a trigger whose `data.id` is `7` gives
    /// `("data.id", 7)`. Any event this condition accepts has that value at that path, so a
    /// store can file the wait under it. `None` when no conjunct has this form, or the value is
    /// not a scalar (the condition is then matched the general way).
    pub fn equality(&self, trigger: &Value) -> Option<(String, Value)> {
        let mut conjuncts = Vec::new();
        conjuncts_of(&self.program.expression().expr, &mut conjuncts);
        conjuncts.into_iter().find_map(|conjunct| {
            let Expr::Call(call) = conjunct else { return None };
            if call.func_name != operators::EQUALS || call.target.is_some() || call.args.len() != 2 {
                return None;
            }
            let (left, right) = (&call.args[0].expr, &call.args[1].expr);
            [(left, right), (right, left)].into_iter().find_map(|(candidate_side, other)| {
                let path = field_path(candidate_side, "async")?;
                let value = match other {
                    Expr::Literal(literal) => literal_json(literal)?,
                    _ => lookup(trigger, &field_path(other, "event")?)?.clone(),
                };
                let scalar = matches!(value, Value::String(_) | Value::Number(_) | Value::Bool(_) | Value::Null);
                scalar.then(|| (path.join("."), value))
            })
        })
    }

    /// The `event.<path>` fields the condition reads, or `None` if it reads `event` any other
    /// way (whole, by index, or inside a comprehension that could rebind it). A wait can keep
    /// just these fields of its trigger and evaluate the condition without loading its run.
    pub fn event_paths(&self) -> Option<Vec<Vec<String>>> {
        let mut paths = Vec::new();
        event_paths_of(&self.program.expression().expr, &mut paths).then_some(paths)
    }
}

/// The canonical text of a scalar an index files it under: values CEL's `==` holds equal
/// share a text (`7` and `7.0` both give `n:7`), so filing never hides a match.
pub(crate) fn index_text(value: &Value) -> Option<String> {
    Some(match value {
        Value::String(text) => format!("s:{text}"),
        Value::Bool(flag) => format!("b:{flag}"),
        Value::Null => "z".to_string(),
        Value::Number(number) => match (number.as_i64(), number.as_u64(), number.as_f64()) {
            (Some(n), _, _) => format!("n:{n}"),
            (None, Some(n), _) => format!("n:{n}"),
            #[allow(clippy::cast_possible_truncation)]
            (None, None, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => format!("n:{}", f as i64),
            (None, None, Some(f)) => format!("n:{f}"),
            _ => return None,
        },
        Value::Array(_) | Value::Object(_) => return None,
    })
}

/// The value at a dotted `path` of `value`, if every step exists.
pub(crate) fn lookup<'v>(value: &'v Value, path: &[String]) -> Option<&'v Value> {
    path.iter().try_fold(value, |value, field| value.as_object()?.get(field))
}

use cel::common::ast::{Expr, LiteralValue, operators};

fn conjuncts_of<'e>(expr: &'e Expr, out: &mut Vec<&'e Expr>) {
    match expr {
        Expr::Call(call) if call.func_name == operators::LOGICAL_AND && call.target.is_none() => {
            for arg in &call.args {
                conjuncts_of(&arg.expr, out);
            }
        }
        other => out.push(other),
    }
}

/// `root.a.b` as `["a", "b"]`; `None` for anything else.
fn field_path(expr: &Expr, root: &str) -> Option<Vec<String>> {
    let mut fields = Vec::new();
    let mut at = expr;
    loop {
        match at {
            Expr::Select(select) if !select.test => {
                fields.push(select.field.clone());
                at = &select.operand.expr;
            }
            Expr::Ident(name) if name == root && !fields.is_empty() => {
                fields.reverse();
                return Some(fields);
            }
            _ => return None,
        }
    }
}

fn literal_json(literal: &LiteralValue) -> Option<Value> {
    Some(match literal {
        LiteralValue::String(text) => Value::String(text.inner().to_string()),
        LiteralValue::Int(n) => Value::from(*n.inner()),
        LiteralValue::UInt(n) => Value::from(*n.inner()),
        LiteralValue::Double(n) => Value::from(*n.inner()),
        LiteralValue::Boolean(flag) => Value::Bool(*flag.inner()),
        LiteralValue::Null => Value::Null,
        LiteralValue::Bytes(_) => return None,
    })
}

/// Collects the `event.<path>` chains under `expr`; `false` if `event` is read another way.
fn event_paths_of(expr: &Expr, out: &mut Vec<Vec<String>>) -> bool {
    if let Some(path) = field_path(expr, "event") {
        out.push(path);
        return true;
    }
    match expr {
        Expr::Ident(name) => name != "event",
        Expr::Select(select) => {
            if select.test
                && let Some(mut path) = field_path(&select.operand.expr, "event")
            {
                path.push(select.field.clone());
                out.push(path);
                return true;
            }
            event_paths_of(&select.operand.expr, out)
        }
        Expr::Call(call) => {
            call.target.as_ref().is_none_or(|target| event_paths_of(&target.expr, out))
                && call.args.iter().all(|arg| event_paths_of(&arg.expr, out))
        }
        Expr::List(list) => list.elements.iter().all(|element| event_paths_of(&element.expr, out)),
        Expr::Map(map) => map.entries.iter().all(|entry| match &entry.expr {
            cel::common::ast::EntryExpr::MapEntry(entry) => {
                event_paths_of(&entry.key.expr, out) && event_paths_of(&entry.value.expr, out)
            }
            cel::common::ast::EntryExpr::StructField(field) => event_paths_of(&field.value.expr, out),
        }),
        Expr::Literal(_) | Expr::Unspecified => true,
        Expr::Comprehension(_) | Expr::Struct(_) => false,
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
    fn an_equality_on_the_awaited_event_names_the_value_it_requires() {
        let trigger = json!({"name": "app/order", "data": {"id": "o-1", "n": 7, "tags": ["a"]}});
        let equality = |source: &str| MatchExpr::parse(source).unwrap().equality(&trigger);
        let id = Some(("data.id".to_string(), json!("o-1")));
        assert_eq!(equality("async.data.id == event.data.id"), id);
        assert_eq!(equality("event.data.id == async.data.id"), id);
        assert_eq!(equality("async.data.ok && (async.data.id == event.data.id)"), id, "any top-level conjunct");
        assert_eq!(equality("async.data.n == 7 && async.data.id == event.data.id"), Some(("data.n".into(), json!(7))));
        assert_eq!(equality("async.name == 'x'"), Some(("name".into(), json!("x"))));
        assert_eq!(equality("async.data.id == event.data.id || async.data.any"), None, "a disjunction");
        assert_eq!(equality("async.data.id != event.data.id"), None);
        assert_eq!(equality("async.data.tags == event.data.tags"), None, "not a scalar");
        assert_eq!(equality("async.data.id == event.data.missing"), None);
        assert_eq!(equality("async.data['id'] == event.data.id"), None, "index syntax");
    }

    #[test]
    fn the_trigger_fields_a_condition_reads_are_listed_unless_it_reads_more() {
        let paths = |source: &str| MatchExpr::parse(source).unwrap().event_paths();
        let path = |text: &str| text.split('.').map(str::to_string).collect::<Vec<_>>();
        assert_eq!(
            paths("async.data.total > event.data.min && has(event.data.max)"),
            Some(vec![path("data.min"), path("data.max")])
        );
        assert_eq!(paths("async.data.ok"), Some(vec![]));
        assert_eq!(paths("event == async"), None);
        assert_eq!(paths("event['data'].id == async.data.id"), None);
        assert_eq!(paths("async.data.items.exists(i, i == event.data.id)"), None);
    }

    #[test]
    fn equal_scalars_share_an_index_text() {
        assert_eq!(index_text(&json!(7)), index_text(&json!(7.0)));
        assert_eq!(index_text(&json!(7)).as_deref(), Some("n:7"));
        assert_eq!(index_text(&json!(1.5)).as_deref(), Some("n:1.5"));
        assert_ne!(index_text(&json!("7")), index_text(&json!(7)));
        assert_eq!(index_text(&json!(true)).as_deref(), Some("b:true"));
        assert_eq!(index_text(&json!(null)).as_deref(), Some("z"));
        assert_eq!(index_text(&json!({"a": 1})), None);
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
