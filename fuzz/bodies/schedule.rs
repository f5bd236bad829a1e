//! The dev server's CreateSchedule decoding and schedule expressions
//! (`cairn_dev::aws::decode_create_schedule`, `cairn_dev::schedule::Expression`): any body or
//! expression is refused or parsed, never a panic or an overflow; a schedule's next firing is
//! strictly after the time asked about, and a rate's firings fall on its period.

use crate::bodies::hostile;
use arbitrary::{Result, Unstructured};
use cairn_dev::aws::decode_create_schedule;
use cairn_dev::schedule::Expression;
use serde_json::json;
use std::collections::HashMap;

const NOW: i64 = 1_795_392_000_000;
const UNITS: &[&str] = &["minute", "minutes", "hour", "hours", "day", "days", "second", "seconds", "week", ""];
const ZONES: &[&str] = &["UTC", "", "Europe/Paris", "America/St_Johns", "Pacific/Kiritimati", "Mars/Olympus", "utc"];
const CRON_FIELDS: &[&str] =
    &["*", "?", "0", "59", "60", "1-5", "2/2", "*/15", "L", "W", "#", "1,7", "MON-FRI", "99999999999"];

/// The target body.
pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut u = Unstructured::new(rest);
    let _ = match mode % 3 {
        0 => {
            let decoded = decode_create_schedule("fuzz", &HashMap::new(), rest, NOW);
            if let Ok(schedule) = decoded {
                assert!(schedule.next_at.is_none_or(|at| at >= NOW));
            }
            Ok(())
        }
        1 => request(&mut u),
        _ => expression(&mut u),
    };
}

fn text(u: &mut Unstructured<'_>) -> Result<String> {
    Ok(match u.int_in_range(0..=3u8)? {
        0 => {
            let count = match u.int_in_range(0..=3u8)? {
                0 => u.arbitrary::<i64>()?.to_string(),
                1 => u
                    .choose(&[
                        "0",
                        "-1",
                        "+5",
                        "1e3",
                        " 5",
                        "9223372036854775807",
                        "153722867280912",
                        "106751991167301",
                    ])?
                    .to_string(),
                2 => u.int_in_range(1..=1000u16)?.to_string(),
                _ => hostile::string(u)?,
            };
            format!("rate({count} {})", u.choose(UNITS)?)
        }
        1 => {
            let fields = (0..u.int_in_range(5..=7u8)?).map(|_| Ok(u.choose(CRON_FIELDS)?.to_string()));
            format!("cron({})", fields.collect::<Result<Vec<_>>>()?.join(" "))
        }
        2 => {
            let year = u.choose(&["2026", "1970", "0000", "9999", "+262143", "-262144", "262144"])?;
            format!(
                "at({year}-{:02}-{:02}T{:02}:{:02}:{:02})",
                u.int_in_range(0..=13u8)?,
                u.int_in_range(0..=32u8)?,
                u.int_in_range(0..=25u8)?,
                u.int_in_range(0..=61u8)?,
                u.int_in_range(0..=61u8)?
            )
        }
        _ => hostile::string(u)?,
    })
}

fn request(u: &mut Unstructured<'_>) -> Result<()> {
    let body = json!({
        "ScheduleExpression": text(u)?,
        "ScheduleExpressionTimezone": u.choose(ZONES)?,
        "FlexibleTimeWindow": {"Mode": u.choose(&["OFF", "FLEXIBLE", "ON"])?},
        "Target": {"Arn": hostile::string(u)?, "RoleArn": "arn:aws:iam::000000000000:role/r", "Input": hostile::string(u)?},
        "GroupName": hostile::value(u, 1)?,
        "ActionAfterCompletion": u.choose(&["DELETE", "NONE"])?,
    });
    let now = if u.arbitrary()? { NOW } else { u.arbitrary()? };
    if let Ok(schedule) = decode_create_schedule("fuzz", &HashMap::new(), body.to_string().as_bytes(), now) {
        assert!(schedule.next_at.is_none_or(|at| at >= now));
        assert_eq!(schedule.expression, body["ScheduleExpression"]);
    }
    Ok(())
}

fn expression(u: &mut Unstructured<'_>) -> Result<()> {
    let source = text(u)?;
    let zone = *u.choose(ZONES)?;
    let parsed = if u.arbitrary()? { Expression::parse(&source, zone) } else { Expression::parse_dev(&source, zone) };
    let Ok(expression) = parsed else { return Ok(()) };
    let created_at = if u.arbitrary()? { NOW } else { u.arbitrary()? };
    let mut after = if u.arbitrary()? { created_at } else { u.arbitrary()? };
    for _ in 0..3 {
        let Some(next) = expression.next_after(after, created_at, zone) else { break };
        assert!(next > after, "{source}: next firing {next} is not after {after}");
        if let Expression::Rate(every) = &expression {
            let every = *every;
            assert!(every > 0);
            assert_eq!((i128::from(next) - i128::from(created_at)) % i128::from(every), 0, "{source}");
        }
        after = next;
    }
    Ok(())
}
