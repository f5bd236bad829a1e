//! Hostile JSON from fuzz bytes: deep nesting, extreme numbers, long and unicode strings, and
//! the keys the decoders look for, so structured targets reach deep code quickly.

use arbitrary::{Result, Unstructured};
use serde_json::{Map, Number, Value};

/// Keys the decoders and matchers read, plus awkward ones.
pub const KEYS: &[&str] = &[
    "data",
    "id",
    "name",
    "ts",
    "source",
    "detail-type",
    "detail",
    "time",
    "cairn",
    "cron",
    "run_id",
    "Records",
    "body",
    "messageId",
    "n",
    "tags",
    "email",
    "$or",
    "",
    "é",
    "a.b",
    "user",
    "v",
];

/// Strings that tend to break parsers, case folding and globs.
pub const STRINGS: &[&str] = &[
    "",
    " ",
    "\u{0}",
    "\u{feff}",
    "🦀",
    "İ",
    "ß",
    "ﬃ",
    "Ω",
    "*",
    "**",
    "a*b",
    "*@*.com",
    "\\*",
    "<aws.",
    "<aws.scheduler.scheduled-time>",
    "NaN",
    "-0",
    "1e400",
    "9223372036854775808",
    "null",
    "{}",
    "[]",
    "\"",
    "app/my.event",
    "inngest/scheduled.timer",
    "cairn/run.resume",
    "aws.events",
    "Scheduled Event",
    "2026-12-02T03:00:00Z",
    "+275760-09-13T00:00:00Z",
    "1970-01-01T00:00:00-23:59",
];

/// A key, usually one the code reads.
pub fn key(u: &mut Unstructured<'_>) -> Result<String> {
    if u.ratio(3, 4)? { Ok((*u.choose(KEYS)?).to_string()) } else { string(u) }
}

/// A string: arbitrary unicode, a known troublemaker, or a long run of one character.
pub fn string(u: &mut Unstructured<'_>) -> Result<String> {
    Ok(match u.int_in_range(0..=3u8)? {
        0 => u.arbitrary::<String>()?,
        1 => (*u.choose(STRINGS)?).to_string(),
        2 => {
            let unit = *u.choose(&["a", "*", "é", "🦀", "İ", "("])?;
            unit.repeat(usize::from(u.int_in_range(0..=4096u16)?))
        }
        _ => format!("{}{}", u.choose(STRINGS)?, u.arbitrary::<String>()?),
    })
}

/// A number at or near the edges of i64, u64 and f64.
pub fn number(u: &mut Unstructured<'_>) -> Result<Number> {
    Ok(match u.int_in_range(0..=5u8)? {
        0 => Number::from(u.arbitrary::<i64>()?),
        1 => Number::from(u.arbitrary::<u64>()?),
        2 => Number::from(*u.choose(&[i64::MIN, i64::MAX, 0, -1, 1, 1_795_392_000_000])?),
        3 => Number::from(u64::MAX),
        4 => Number::from_f64(*u.choose(&[f64::MAX, f64::MIN, f64::MIN_POSITIVE, 5e-324, -0.0, 0.1, 1e300, 2.5])?)
            .unwrap_or_else(|| Number::from(0)),
        _ => Number::from_f64(u.arbitrary::<f64>()?).unwrap_or_else(|| Number::from(0)),
    })
}

/// A scalar.
pub fn scalar(u: &mut Unstructured<'_>) -> Result<Value> {
    Ok(match u.int_in_range(0..=3u8)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::Number(number(u)?),
        _ => Value::String(string(u)?),
    })
}

/// Any JSON value, up to `depth` levels (or a chain of up to 120 levels: what serde_json
/// would still parse).
pub fn value(u: &mut Unstructured<'_>, depth: u8) -> Result<Value> {
    if depth == 0 {
        return scalar(u);
    }
    Ok(match u.int_in_range(0..=6u8)? {
        0..=2 => scalar(u)?,
        3 => {
            let len = u.int_in_range(0..=4u8)?;
            Value::Array((0..len).map(|_| value(u, depth - 1)).collect::<Result<_>>()?)
        }
        4 | 5 => Value::Object(object(u, depth - 1)?),
        _ => {
            let mut inner = scalar(u)?;
            for _ in 0..u.int_in_range(0..=120u8)? {
                inner = if u.arbitrary()? {
                    Value::Array(vec![inner])
                } else {
                    Value::Object(Map::from_iter([(key(u)?, inner)]))
                };
            }
            inner
        }
    })
}

/// A JSON object of up to five fields.
pub fn object(u: &mut Unstructured<'_>, depth: u8) -> Result<Map<String, Value>> {
    let mut map = Map::new();
    for _ in 0..u.int_in_range(0..=5u8)? {
        map.insert(key(u)?, value(u, depth)?);
    }
    Ok(map)
}
