//! CEL match expressions (`cairn::MatchExpr`, behind trigger `if` and wait_for_event `match`)
//! against hostile events: any expression compiles or is refused, and any compiled one
//! evaluates to a boolean or an error, never a panic; Inngest's `match` shorthand holds for
//! equal fields and fails for a missing or different one.

use crate::bodies::hostile;
use arbitrary::{Result, Unstructured};
use cairn::MatchExpr;
use serde_json::{Value, json};

const PATHS: &[&str] =
    &["event.data.k", "async.data.k", "event.data", "async.data.k.k", "event.name", "async.ts", "event"];
const LITERALS: &[&str] = &[
    "1",
    "0",
    "-1",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551615u",
    "0u",
    "1.0",
    "1e308",
    "-1e308",
    "5e-324",
    "'🦀'",
    "'İ'",
    "''",
    "\"\\u00e9\"",
    "b'\\xff'",
    "null",
    "true",
    "[]",
    "{}",
    "[1, 'a']",
    "{'k': 1}",
    "duration('1s')",
    "timestamp('2026-11-23T00:00:00Z')",
];
const BINARY: &[&str] = &["==", "!=", "<", "<=", ">", ">=", "&&", "||", "+", "-", "*", "/", "%", "in"];
const CALLS: &[&str] = &[
    "size({})",
    "has({}.k)",
    "{}.startsWith('a')",
    "{}.contains('')",
    "{}.matches('^(a+)+$')",
    "int({})",
    "uint({})",
    "double({})",
    "string({})",
    "{}.all(x, x > 0)",
    "{}.exists(x, x == 1)",
    "{}.map(x, x * 2)",
    "type({})",
    "!{}",
    "-{}",
    "{}[0]",
    "{}['k']",
    "timestamp({})",
    "duration({})",
];

/// The target body.
pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut u = Unstructured::new(rest);
    let _ = match mode % 3 {
        0 => raw(&mut u),
        1 => generated(&mut u),
        _ => shorthand(&mut u),
    };
}

fn event(u: &mut Unstructured<'_>) -> Result<Value> {
    Ok(
        json!({"name": hostile::string(u)?, "data": {"k": hostile::value(u, 4)?}, "ts": Value::Number(hostile::number(u)?)}),
    )
}

fn evaluate(source: &str, u: &mut Unstructured<'_>) -> Result<()> {
    if let Ok(expr) = MatchExpr::parse(source) {
        let (trigger, candidate) = (event(u)?, event(u)?);
        let _ = expr.matches(&trigger, &candidate);
    }
    Ok(())
}

fn raw(u: &mut Unstructured<'_>) -> Result<()> {
    let most = u.len().min(4096) as u16;
    let len = u.int_in_range(0..=most)?;
    let source = String::from_utf8_lossy(u.bytes(usize::from(len))?).into_owned();
    evaluate(&source, u)
}

fn term(u: &mut Unstructured<'_>, depth: u8) -> Result<String> {
    if depth == 0 {
        return Ok(if u.arbitrary()? { u.choose(PATHS)? } else { u.choose(LITERALS)? }.to_string());
    }
    Ok(match u.int_in_range(0..=4u8)? {
        0 => format!("{} {} {}", term(u, depth - 1)?, u.choose(BINARY)?, term(u, depth - 1)?),
        1 => u.choose(CALLS)?.replace("{}", &term(u, depth - 1)?),
        2 => format!("({}) ? {} : {}", term(u, depth - 1)?, term(u, depth - 1)?, term(u, depth - 1)?),
        3 => {
            // Deep nesting, as a hostile expression would have.
            let n = usize::from(u.int_in_range(1..=200u8)?);
            let (open, close) = *u.choose(&[("(", ")"), ("[", "]"), ("!", ""), ("-", ""), ("size(", ")")])?;
            format!("{}{}{}", open.repeat(n), term(u, 0)?, close.repeat(n))
        }
        _ => term(u, 0)?,
    })
}

fn generated(u: &mut Unstructured<'_>) -> Result<()> {
    let source = term(u, 4)?;
    evaluate(&source, u)
}

fn shorthand(u: &mut Unstructured<'_>) -> Result<()> {
    let value = hostile::value(u, 3)?;
    let Ok(expr) = MatchExpr::field("data.k") else { unreachable!("a valid expression") };
    let trigger = json!({"name": "a/b", "data": {"k": value}});
    assert_eq!(expr.matches(&trigger, &trigger.clone()), Ok(true), "{trigger}");
    assert_eq!(expr.matches(&trigger, &json!({"data": {}})), Ok(false));
    assert_eq!(expr.matches(&json!({"data": {}}), &trigger), Ok(false));
    let other = hostile::string(u)?;
    if Value::String(other.clone()) != trigger["data"]["k"] {
        assert_eq!(expr.matches(&trigger, &json!({"data": {"k": other}})), Ok(false), "{trigger}");
    }
    Ok(())
}
