//! The dev server's EventBridge pattern matcher (`cairn_dev::pattern`): hostile patterns and
//! events never panic; on patterns of the usual shape (nested fields, literal and content
//! filters) it agrees with a plain reference written from AWS's documentation; and `$or`
//! of one pattern, or of a pattern and anything, behaves as that pattern or better.

use crate::bodies::hostile;
use arbitrary::{Result, Unstructured};
use cairn_dev::pattern::{matches, validate};
use serde_json::{Map, Value, json};

const FIELDS: &[&str] = &["source", "detail-type", "detail", "a", "b"];
const WORDS: &[&str] = &["", "a", "A", "ab", "app", "App/x", "é", "É", "İ", "i̇", "ß", "SS", "x*y", "🦀"];

/// The target body.
pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let _ = body(&mut u);
}

fn body(u: &mut Unstructured<'_>) -> Result<()> {
    if u.ratio(1, 4)? {
        // Anything at all: no panic, whether or not it validates.
        let (pattern, event) = (hostile::value(u, 5)?, hostile::value(u, 5)?);
        let _ = validate(&pattern);
        let _ = matches(&pattern, &event);
        return Ok(());
    }
    let pattern = Value::Object(pattern(u, 2)?);
    let event = Value::Object(event(u, 2)?);
    let matched = matches(&pattern, &event);
    if validate(&pattern).is_ok() {
        assert_eq!(matched, reference(&pattern, &event), "pattern {pattern} on event {event}");
    }
    assert_eq!(matches(&json!({"$or": [pattern.clone()]}), &event), matched);
    if matched {
        assert!(matches(&json!({"$or": [pattern, {"zzz": ["never"]}]}), &event));
    }
    Ok(())
}

fn word(u: &mut Unstructured<'_>) -> Result<String> {
    if u.ratio(5, 6)? { Ok((*u.choose(WORDS)?).to_string()) } else { hostile::string(u) }
}

fn pattern(u: &mut Unstructured<'_>, depth: u8) -> Result<Map<String, Value>> {
    let mut fields = Map::new();
    for _ in 0..u.int_in_range(1..=3u8)? {
        let value = if depth > 0 && u.ratio(1, 3)? {
            Value::Object(pattern(u, depth - 1)?)
        } else if depth > 0 && u.ratio(1, 8)? {
            let alternatives = (0..u.int_in_range(1..=2u8)?).map(|_| pattern(u, depth - 1).map(Value::Object));
            fields.insert("$or".into(), Value::Array(alternatives.collect::<Result<_>>()?));
            continue;
        } else {
            Value::Array((0..u.int_in_range(1..=3u8)?).map(|_| matcher(u)).collect::<Result<_>>()?)
        };
        fields.insert((*u.choose(FIELDS)?).to_string(), value);
    }
    Ok(fields)
}

fn number(u: &mut Unstructured<'_>) -> Result<Value> {
    Ok(if u.arbitrary()? { json!(u.int_in_range(-3..=3i8)?) } else { Value::Number(hostile::number(u)?) })
}

fn matcher(u: &mut Unstructured<'_>) -> Result<Value> {
    Ok(match u.int_in_range(0..=11u8)? {
        0 => json!(word(u)?),
        1 => number(u)?,
        2 => u.choose(&[json!(null), json!(true), json!(false)])?.clone(),
        3 => json!({"prefix": word(u)?}),
        4 => json!({"suffix": word(u)?}),
        5 => json!({"prefix": {"equals-ignore-case": word(u)?}}),
        6 => json!({"equals-ignore-case": word(u)?}),
        7 => {
            let star = if u.arbitrary()? { "*" } else { "" };
            json!({"wildcard": format!("{}{star}{}", word(u)?, word(u)?)})
        }
        8 => json!({"exists": u.arbitrary::<bool>()?}),
        9 => {
            let ops = ["<", "<=", "=", ">", ">="];
            let mut operand = Vec::new();
            for _ in 0..u.int_in_range(1..=2u8)? {
                operand.push(json!(*u.choose(&ops)?));
                operand.push(number(u)?);
            }
            json!({"numeric": operand})
        }
        10 => match u.int_in_range(0..=2u8)? {
            0 => json!({"anything-but": word(u)?}),
            1 => json!({"anything-but": [word(u)?, number(u)?]}),
            _ => json!({"anything-but": {"prefix": word(u)?}}),
        },
        _ => hostile::value(u, 2)?,
    })
}

fn leaf(u: &mut Unstructured<'_>) -> Result<Value> {
    Ok(match u.int_in_range(0..=3u8)? {
        0 => json!(word(u)?),
        1 => number(u)?,
        2 => Value::Array((0..u.int_in_range(0..=3u8)?).map(|_| leaf_scalar(u)).collect::<Result<_>>()?),
        _ => leaf_scalar(u)?,
    })
}

fn leaf_scalar(u: &mut Unstructured<'_>) -> Result<Value> {
    Ok(if u.arbitrary()? {
        json!(word(u)?)
    } else {
        u.choose(&[json!(null), json!(true), json!(1), json!(-2.0)])?.clone()
    })
}

fn event(u: &mut Unstructured<'_>, depth: u8) -> Result<Map<String, Value>> {
    let mut fields = Map::new();
    for _ in 0..u.int_in_range(0..=4u8)? {
        let value = if depth > 0 && u.ratio(1, 3)? { Value::Object(event(u, depth - 1)?) } else { leaf(u)? };
        fields.insert((*u.choose(FIELDS)?).to_string(), value);
    }
    Ok(fields)
}

/// EventBridge matching as documented, for objects of fields whose leaves are scalars or
/// lists of scalars.
fn reference(pattern: &Value, event: &Value) -> bool {
    let Some(fields) = pattern.as_object() else { return false };
    fields.iter().all(|(key, expected)| {
        if key == "$or" {
            return expected.as_array().into_iter().flatten().any(|alternative| reference(alternative, event));
        }
        let field = event.as_object().and_then(|object| object.get(key));
        match expected {
            Value::Object(_) => field.is_some_and(|inner| reference(expected, inner)),
            Value::Array(matchers) => matchers.iter().any(|matcher| {
                if let Some(exists) = matcher.get("exists").and_then(Value::as_bool) {
                    return exists == matches!(field, Some(v) if !v.is_object());
                }
                let values: Vec<&Value> = match field {
                    Some(Value::Array(items)) => items.iter().collect(),
                    Some(value) => vec![value],
                    None => vec![],
                };
                values.into_iter().any(|value| leaf_matches(matcher, value))
            }),
            _ => false,
        }
    })
}

fn same(expected: &Value, value: &Value) -> bool {
    match (expected, value) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        _ => expected == value,
    }
}

fn leaf_matches(matcher: &Value, value: &Value) -> bool {
    let Some(filter) = matcher.as_object() else { return same(matcher, value) };
    let Some((operator, operand)) = filter.iter().next() else { return false };
    let text = value.as_str();
    let fold = |s: &str| s.to_lowercase();
    let affix = |operand: &Value, t: &str, test: fn(&str, &str) -> bool| match operand {
        Value::String(p) => test(t, p),
        other => other["equals-ignore-case"].as_str().is_some_and(|p| test(&fold(t), &fold(p))),
    };
    match (operator.as_str(), text) {
        ("prefix", Some(t)) => affix(operand, t, |t, p| t.starts_with(p)),
        ("suffix", Some(t)) => affix(operand, t, |t, s| t.ends_with(s)),
        ("equals-ignore-case", Some(t)) => operand.as_str().is_some_and(|s| fold(t) == fold(s)),
        ("wildcard", Some(t)) => operand.as_str().is_some_and(|glob| glob_matches(glob, t)),
        ("anything-but", _) => match operand {
            Value::Array(items) => items.iter().all(|item| !same(item, value)),
            // What is not a string does not start with the prefix.
            Value::Object(inner) => match (inner.get("prefix"), inner.get("suffix")) {
                (Some(prefix), _) => !text.is_some_and(|t| affix(prefix, t, |t, p| t.starts_with(p))),
                (None, Some(suffix)) => !text.is_some_and(|t| affix(suffix, t, |t, s| t.ends_with(s))),
                (None, None) => false,
            },
            single => !same(single, value),
        },
        ("numeric", _) => value.as_f64().is_some_and(|n| {
            operand.as_array().into_iter().flatten().collect::<Vec<_>>().chunks(2).all(|pair| {
                let bound = pair.get(1).and_then(|b| b.as_f64()).unwrap_or(f64::NAN);
                match pair[0].as_str().unwrap_or_default() {
                    "<" => n < bound,
                    "<=" => n <= bound,
                    "=" => n == bound,
                    ">" => n > bound,
                    _ => n >= bound,
                }
            })
        }),
        _ => false,
    }
}

/// `*` as any run of characters, by dynamic programming over characters.
fn glob_matches(glob: &str, text: &str) -> bool {
    let (glob, text): (Vec<char>, Vec<char>) = (glob.chars().collect(), text.chars().collect());
    let mut row = vec![false; text.len() + 1];
    row[0] = true;
    for &g in &glob {
        let mut next = vec![false; text.len() + 1];
        if g == '*' {
            next[0] = row[0];
        }
        for i in 1..=text.len() {
            next[i] = if g == '*' { next[i - 1] || row[i] } else { row[i - 1] && text[i - 1] == g };
        }
        row = next;
    }
    row[text.len()]
}
