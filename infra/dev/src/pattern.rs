//! EventBridge event patterns: the matching rules of
//! <https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-event-patterns.html> that a
//! template's rules use, checked when the template is read so a typo fails at start-up.
//!
//! A pattern is an object whose leaves are lists of matchers: literals (string, number, boolean,
//! null) and the content filters `prefix`, `suffix`, `equals-ignore-case`, `anything-but`,
//! `exists`, `numeric` and `wildcard`; `$or` takes a list of patterns.

use crate::DevError;
use serde_json::Value;

/// Checks that `pattern` is a pattern, naming the first field that is not.
///
/// # Errors
/// A sentence naming the field path and what is wrong with it.
pub fn validate(pattern: &Value) -> Result<(), DevError> {
    validate_at(pattern, "")
}

fn validate_at(pattern: &Value, path: &str) -> Result<(), DevError> {
    let Some(object) = pattern.as_object() else {
        return Err(format!("{} must be an object of fields", name(path)).into());
    };
    if object.is_empty() {
        return Err(format!("{} matches nothing: it has no fields", name(path)).into());
    }
    for (key, value) in object {
        let here = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
        if key == "$or" {
            let alternatives =
                value.as_array().filter(|a| !a.is_empty()).ok_or(format!("{here} must be a list of patterns"))?;
            for alternative in alternatives {
                validate_at(alternative, path)?;
            }
            continue;
        }
        match value {
            Value::Object(_) => validate_at(value, &here)?,
            Value::Array(matchers) if !matchers.is_empty() => {
                for matcher in matchers {
                    validate_matcher(matcher, &here)?;
                }
            }
            Value::Array(_) => return Err(format!("{here} is an empty list, which matches nothing").into()),
            other => {
                return Err(format!("{here} must be a list of values (e.g. [{other}]), found {}", kind(other)).into());
            }
        }
    }
    Ok(())
}

fn validate_matcher(matcher: &Value, path: &str) -> Result<(), DevError> {
    let Some(filter) = matcher.as_object() else {
        return if matcher.is_array() { Err(format!("{path} has a nested list").into()) } else { Ok(()) };
    };
    let [(operator, operand)] = filter.iter().collect::<Vec<_>>()[..] else {
        return Err(format!("{path}: a content filter has exactly one operator").into());
    };
    let ok = match operator.as_str() {
        "prefix" | "suffix" => operand.is_string() || operand.get("equals-ignore-case").is_some_and(Value::is_string),
        "equals-ignore-case" | "wildcard" => operand.is_string(),
        "exists" => operand.is_boolean(),
        "anything-but" => match operand {
            Value::Array(items) => items.iter().all(|i| i.is_string() || i.is_number()),
            Value::Object(inner) => inner.get("prefix").or(inner.get("suffix")).is_some_and(Value::is_string),
            other => other.is_string() || other.is_number(),
        },
        "numeric" => numeric_ok(operand),
        other => return Err(format!("{path}: unknown content filter `{other}`").into()),
    };
    if ok { Ok(()) } else { Err(format!("{path}: `{operator}` has an invalid operand {operand}").into()) }
}

fn numeric_ok(operand: &Value) -> bool {
    let Some(items) = operand.as_array() else { return false };
    !items.is_empty()
        && items.len() % 2 == 0
        && items
            .chunks(2)
            .all(|pair| matches!(pair[0].as_str(), Some("<" | "<=" | "=" | ">" | ">=")) && pair[1].is_number())
}

fn name(path: &str) -> String {
    if path.is_empty() { "the pattern".to_string() } else { path.to_string() }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Whether `event` (the whole envelope: `source`, `detail-type`, `detail`, ...) matches `pattern`.
pub fn matches(pattern: &Value, event: &Value) -> bool {
    let Some(fields) = pattern.as_object() else { return false };
    fields.iter().all(|(key, expected)| {
        if key == "$or" {
            return expected.as_array().is_some_and(|alternatives| alternatives.iter().any(|p| matches(p, event)));
        }
        let actual = event.get(key);
        match expected {
            Value::Object(_) => actual.is_some_and(|actual| matches(expected, actual)),
            Value::Array(matchers) => matchers.iter().any(|matcher| field_matches(matcher, actual)),
            _ => false,
        }
    })
}

/// One matcher against a field that may be missing, a value, or a list (any element matches).
fn field_matches(matcher: &Value, actual: Option<&Value>) -> bool {
    if let Some(exists) = matcher.get("exists").and_then(Value::as_bool) {
        return exists == actual.is_some_and(|v| !v.is_object());
    }
    match actual {
        None => false,
        Some(Value::Array(items)) => items.iter().any(|item| value_matches(matcher, item)),
        Some(value) => value_matches(matcher, value),
    }
}

fn value_matches(matcher: &Value, value: &Value) -> bool {
    let Some(filter) = matcher.as_object() else { return literal_eq(matcher, value) };
    let Some((operator, operand)) = filter.iter().next() else { return false };
    let text = value.as_str();
    match operator.as_str() {
        "prefix" => affix(operand, text, |t, p| t.starts_with(p)),
        "suffix" => affix(operand, text, |t, p| t.ends_with(p)),
        "equals-ignore-case" => {
            text.zip(operand.as_str()).is_some_and(|(t, expected)| t.to_lowercase() == expected.to_lowercase())
        }
        "wildcard" => text.zip(operand.as_str()).is_some_and(|(t, glob)| wildcard(glob, t)),
        "anything-but" => match operand {
            Value::Array(items) => !items.iter().any(|item| literal_eq(item, value)),
            Value::Object(inner) => match (inner.get("prefix"), inner.get("suffix")) {
                (Some(p), _) => !affix(p, text, |t, p| t.starts_with(p)),
                (_, Some(s)) => !affix(s, text, |t, s| t.ends_with(s)),
                _ => false,
            },
            single => !literal_eq(single, value),
        },
        "numeric" => value.as_f64().is_some_and(|n| numeric(operand, n)),
        _ => false,
    }
}

fn affix(operand: &Value, text: Option<&str>, test: fn(&str, &str) -> bool) -> bool {
    let Some(text) = text else { return false };
    match (operand.as_str(), operand.get("equals-ignore-case").and_then(Value::as_str)) {
        (Some(affix), _) => test(text, affix),
        (None, Some(affix)) => test(&text.to_lowercase(), &affix.to_lowercase()),
        _ => false,
    }
}

fn literal_eq(expected: &Value, value: &Value) -> bool {
    match (expected.as_f64(), value.as_f64()) {
        (Some(a), Some(b)) => a == b,
        _ => expected == value,
    }
}

fn numeric(operand: &Value, n: f64) -> bool {
    operand.as_array().is_some_and(|items| {
        items.chunks(2).all(|pair| {
            let bound = pair.get(1).and_then(Value::as_f64).unwrap_or(f64::NAN);
            match pair[0].as_str() {
                Some("<") => n < bound,
                Some("<=") => n <= bound,
                Some("=") => n == bound,
                Some(">") => n > bound,
                Some(">=") => n >= bound,
                _ => false,
            }
        })
    })
}

/// `*` matches any run of characters.
fn wildcard(glob: &str, text: &str) -> bool {
    let parts: Vec<&str> = glob.split('*').collect();
    let [first, middle @ .., last] = parts.as_slice() else { return glob == text };
    if parts.len() == 1 {
        return glob == text;
    }
    let Some(mut rest) = text.strip_prefix(first) else { return false };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn event() -> Value {
        json!({"source": "app", "detail-type": "app/my.event", "detail": {"data": {"function_id": "hello", "n": 5, "tags": ["a", "b"], "email": "Ann@Example.com"}}})
    }

    #[test]
    fn literals_and_nested_fields() {
        assert!(matches(&json!({"detail-type": ["app/my.event"]}), &event()));
        assert!(!matches(&json!({"detail-type": ["app/other"]}), &event()));
        assert!(matches(&json!({"detail": {"data": {"function_id": ["hello", "x"]}}}), &event()));
        assert!(!matches(&json!({"detail": {"data": {"function_id": ["x"]}}}), &event()));
        assert!(matches(&json!({"detail": {"data": {"tags": ["b"]}}}), &event()), "any element of a list");
        assert!(matches(&json!({"detail": {"data": {"n": [5.0]}}}), &event()), "numbers compare as numbers");
        assert!(!matches(&json!({"detail": {"missing": ["x"]}}), &event()));
    }

    #[test]
    fn content_filters() {
        let e = event();
        let m = |p: Value| matches(&json!({"detail": {"data": p}}), &e);
        assert!(m(json!({"function_id": [{"prefix": "hel"}]})));
        assert!(!m(json!({"function_id": [{"prefix": "x"}]})));
        assert!(m(json!({"function_id": [{"suffix": "llo"}]})));
        assert!(m(json!({"email": [{"equals-ignore-case": "ann@example.COM"}]})));
        assert!(m(json!({"email": [{"prefix": {"equals-ignore-case": "ANN"}}]})));
        assert!(m(json!({"function_id": [{"anything-but": ["x", "y"]}]})));
        assert!(!m(json!({"function_id": [{"anything-but": "hello"}]})));
        assert!(!m(json!({"function_id": [{"anything-but": {"prefix": "he"}}]})));
        assert!(m(json!({"n": [{"numeric": [">", 1, "<=", 5]}]})));
        assert!(!m(json!({"n": [{"numeric": [">", 5]}]})));
        assert!(m(json!({"missing": [{"exists": false}]})));
        assert!(m(json!({"n": [{"exists": true}]})));
        assert!(!m(json!({"missing": [{"exists": true}]})));
        assert!(m(json!({"email": [{"wildcard": "*@*.com"}]})));
        assert!(!m(json!({"email": [{"wildcard": "*@*.org"}]})));
        assert!(matches(&json!({"$or": [{"source": ["x"]}, {"detail-type": ["app/my.event"]}]}), &e));
    }

    #[test]
    fn invalid_patterns_name_the_field() {
        assert_eq!(
            validate(&json!({"detail-type": "app/my.event"})).unwrap_err(),
            "detail-type must be a list of values (e.g. [\"app/my.event\"]), found a string"
        );
        assert_eq!(
            validate(&json!({"detail": {"data": {"id": []}}})).unwrap_err(),
            "detail.data.id is an empty list, which matches nothing"
        );
        assert_eq!(
            validate(&json!({"source": [{"startswith": "a"}]})).unwrap_err(),
            "source: unknown content filter `startswith`"
        );
        assert_eq!(
            validate(&json!({"n": [{"numeric": [">", "1"]}]})).unwrap_err(),
            "n: `numeric` has an invalid operand [\">\",\"1\"]"
        );
        assert_eq!(validate(&json!({})).unwrap_err(), "the pattern matches nothing: it has no fields");
        validate(&json!({"detail-type": ["a"], "detail": {"data": {"x": [{"prefix": "p"}, 1, null]}}})).unwrap();
    }
}
