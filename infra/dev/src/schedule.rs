//! EventBridge Scheduler expressions: `at(yyyy-mm-ddThh:mm:ss)`, `cron(min hour dom month dow
//! year)` and `rate(n unit)`, each read in its schedule's time zone, and when each fires next;
//! the dev server's own `rate(n seconds)` (the reconciler tick of `--reconcile-secs`); and the
//! context attributes Scheduler substitutes in a target's input.

use crate::DevError;
use cairn::{CronSchedule, Millis};
use chrono::{NaiveDateTime, TimeZone};
use chrono_tz::Tz;

/// A parsed schedule expression.
#[derive(Debug)]
pub enum Expression {
    /// One time, wall-clock in the schedule's zone.
    At(NaiveDateTime),
    /// A cron, converted to Cairn's 5-field form (the year field must be `*`).
    Cron(Box<CronSchedule>),
    /// Every this many milliseconds from the schedule's creation.
    Rate(Millis),
}

impl Expression {
    /// Parses `expression` with `time_zone` (IANA name, `UTC` when empty).
    ///
    /// # Errors
    /// A sentence naming what is wrong, as Scheduler's ValidationException would.
    pub fn parse(expression: &str, time_zone: &str) -> Result<Expression, DevError> {
        Expression::parse_with(expression, time_zone, false)
    }

    /// As [`Expression::parse`], also taking `rate(n second)` / `rate(n seconds)`, which
    /// Scheduler refuses but the dev server uses for its own schedules (the reconciler tick).
    ///
    /// # Errors
    /// As [`Expression::parse`].
    pub fn parse_dev(expression: &str, time_zone: &str) -> Result<Expression, DevError> {
        Expression::parse_with(expression, time_zone, true)
    }

    fn parse_with(expression: &str, time_zone: &str, seconds: bool) -> Result<Expression, DevError> {
        let zone = parse_zone(time_zone)?;
        let expression = expression.trim();
        let inner = |prefix: &str| expression.strip_prefix(prefix).and_then(|rest| rest.strip_suffix(')'));
        if let Some(at) = inner("at(") {
            return NaiveDateTime::parse_from_str(at, "%Y-%m-%dT%H:%M:%S").map(Expression::At).map_err(|_| {
                DevError::new(format!("Invalid Schedule Expression {expression}: at() takes yyyy-mm-ddThh:mm:ss"))
            });
        }
        if let Some(rate) = inner("rate(") {
            let (count, unit) = rate.trim().split_once(' ').ok_or(format!(
                "Invalid Schedule Expression {expression}: rate() takes a number and a unit, e.g. rate(5 minutes)"
            ))?;
            let count: i64 =
                count.parse().ok().filter(|n| *n > 0).ok_or(format!(
                    "Invalid Schedule Expression {expression}: the rate must be a positive whole number"
                ))?;
            let unit_ms = match unit.trim() {
                "second" | "seconds" if seconds => 1_000,
                "minute" | "minutes" => 60_000,
                "hour" | "hours" => 3_600_000,
                "day" | "days" => 86_400_000,
                other => {
                    return Err(format!("Invalid Schedule Expression {expression}: unknown unit `{other}`").into());
                }
            };
            let every = count
                .checked_mul(unit_ms)
                .ok_or(format!("Invalid Schedule Expression {expression}: the rate is too long"))?;
            return Ok(Expression::Rate(every));
        }
        if let Some(cron) = inner("cron(") {
            let fields: Vec<&str> = cron.split_whitespace().collect();
            let [minute, hour, day_of_month, month, day_of_week, year] = fields[..] else {
                return Err(format!(
                    "Invalid Schedule Expression {expression}: cron() needs 6 fields (minutes hours day-of-month month day-of-week year), found {}",
                    fields.len()
                ).into());
            };
            if (day_of_month == "?") == (day_of_week == "?") {
                return Err(format!(
                    "Invalid Schedule Expression {expression}: exactly one of day-of-month and day-of-week must be `?`"
                )
                .into());
            }
            if year != "*" {
                return Err(format!(
                    "Invalid Schedule Expression {expression}: only `*` is supported in the year field"
                )
                .into());
            }
            let day_of_week = unshift_weekdays(day_of_week);
            let source = format!("TZ={zone} {minute} {hour} {day_of_month} {month} {day_of_week}").replace('?', "*");
            return CronSchedule::parse(&source)
                .map(|cron| Expression::Cron(Box::new(cron)))
                .map_err(|err| DevError::with_source(format!("Invalid Schedule Expression {expression}: {err}"), err));
        }
        Err(format!("Invalid Schedule Expression {expression}: expected at(...), cron(...) or rate(...)").into())
    }

    /// The first firing strictly after `after`, for a schedule created at `created_at` in
    /// `time_zone`; `None` once a one-time schedule has passed.
    pub fn next_after(&self, after: Millis, created_at: Millis, time_zone: &str) -> Option<Millis> {
        match self {
            Expression::At(wall) => {
                let zone = parse_zone(time_zone).unwrap_or(Tz::UTC);
                let at = zone.from_local_datetime(wall).earliest()?.timestamp_millis();
                (at > after).then_some(at)
            }
            Expression::Cron(cron) => cron.next_after(after),
            // `None` when the next firing is past the end of time (a rate of millions of years).
            Expression::Rate(every) => {
                // Never, if that is past the end of the clock.
                let periods = after.saturating_sub(created_at).div_euclid(*every).saturating_add(1);
                periods.max(1).checked_mul(*every).and_then(|since| created_at.checked_add(since))
            }
        }
    }

    /// Whether the schedule fires once only.
    pub fn is_one_time(&self) -> bool {
        matches!(self, Expression::At(_))
    }
}

/// What Scheduler substitutes in a target's `Input` for one firing.
#[derive(Clone, Debug)]
pub struct FiringContext<'a> {
    /// The time the schedule was due (not when it fired), ms since the epoch.
    pub scheduled_at: Millis,
    /// A fresh id of this firing.
    pub execution_id: &'a str,
    /// The schedule's ARN.
    pub schedule_arn: &'a str,
    /// The delivery attempt (1: the dev server does not redeliver a schedule's target).
    pub attempt: u32,
}

/// Scheduler's context attributes in `input`, substituted as AWS does:
/// `<aws.scheduler.scheduled-time>` (RFC 3339 UTC to the second, e.g. `2026-12-02T03:00:00Z`),
/// `<aws.scheduler.execution-id>`, `<aws.scheduler.schedule-arn>` and
/// `<aws.scheduler.attempt-number>`.
pub fn substitute_context(input: &str, context: &FiringContext<'_>) -> String {
    let scheduled = chrono::DateTime::from_timestamp_millis(context.scheduled_at)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    input
        .replace("<aws.scheduler.scheduled-time>", &scheduled)
        .replace("<aws.scheduler.execution-id>", context.execution_id)
        .replace("<aws.scheduler.schedule-arn>", context.schedule_arn)
        .replace("<aws.scheduler.attempt-number>", &context.attempt.to_string())
}

fn parse_zone(time_zone: &str) -> Result<Tz, DevError> {
    if time_zone.is_empty() {
        return Ok(Tz::UTC);
    }
    time_zone
        .parse::<Tz>()
        .map_err(|_| DevError::new(format!("Invalid ScheduleExpressionTimezone {time_zone}: not an IANA time zone")))
}

/// EventBridge numbers weekdays 1-7 from Sunday; Unix crons 0-6.
fn unshift_weekdays(field: &str) -> String {
    let mut out = String::new();
    let mut number = String::new();
    let flush = |number: &mut String, out: &mut String| {
        if let Ok(n) = number.parse::<u8>() {
            out.push_str(&(n.saturating_sub(1) % 7).to_string());
        }
        number.clear();
    };
    let mut after_slash = false;
    for c in field.chars() {
        if c.is_ascii_digit() && !after_slash {
            number.push(c);
            continue;
        }
        flush(&mut number, &mut out);
        after_slash = c == '/' || (after_slash && c.is_ascii_digit());
        out.push(c);
    }
    flush(&mut number, &mut out);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const NOV_23_2026: Millis = 1_795_392_000_000; // 2026-11-23T00:00:00Z, a Monday

    #[test]
    fn a_rate_too_long_for_the_clock_is_refused_or_never_fires() {
        assert_eq!(
            Expression::parse("rate(9223372036854775807 days)", "UTC").err().as_deref(),
            Some("Invalid Schedule Expression rate(9223372036854775807 days): the rate is too long")
        );
        let longest = Expression::parse(&format!("rate({} minutes)", i64::MAX / 60_000), "UTC").unwrap();
        assert_eq!(longest.next_after(NOV_23_2026, NOV_23_2026, "UTC"), None);
    }

    #[test]
    fn at_fires_once_in_its_zone() {
        let at = Expression::parse("at(2026-11-23T00:00:02)", "UTC").unwrap();
        assert_eq!(at.next_after(NOV_23_2026, 0, "UTC"), Some(NOV_23_2026 + 2_000));
        assert_eq!(at.next_after(NOV_23_2026 + 2_000, 0, "UTC"), None);
        let paris = Expression::parse("at(2026-11-23T01:00:00)", "Europe/Paris").unwrap();
        assert_eq!(paris.next_after(0, 0, "Europe/Paris"), Some(NOV_23_2026));
        assert!(at.is_one_time());
    }

    #[test]
    fn crons_use_eventbridge_fields() {
        let daily = Expression::parse("cron(0 3 * * ? *)", "UTC").unwrap();
        assert_eq!(daily.next_after(NOV_23_2026, 0, "UTC"), Some(NOV_23_2026 + 3 * 3_600_000));
        // 2-6 is Monday-Friday in EventBridge; the 23rd is a Monday.
        let weekdays = Expression::parse("cron(0 12 ? * 2-6 *)", "UTC").unwrap();
        assert_eq!(weekdays.next_after(NOV_23_2026, 0, "UTC"), Some(NOV_23_2026 + 12 * 3_600_000));
        let sundays = Expression::parse("cron(0 0 ? * 1 *)", "UTC").unwrap();
        assert_eq!(sundays.next_after(NOV_23_2026, 0, "UTC"), Some(NOV_23_2026 + 6 * 86_400_000));
        let paris = Expression::parse("cron(0 3 * * ? *)", "Europe/Paris").unwrap();
        assert_eq!(paris.next_after(NOV_23_2026, 0, "Europe/Paris"), Some(NOV_23_2026 + 2 * 3_600_000));
        let every_minute = Expression::parse("cron(* * * * ? *)", "UTC").unwrap();
        assert_eq!(every_minute.next_after(NOV_23_2026 + 1, 0, "UTC"), Some(NOV_23_2026 + 60_000));
    }

    #[test]
    fn rates_count_from_creation() {
        let rate = Expression::parse("rate(5 minutes)", "").unwrap();
        assert_eq!(rate.next_after(1_000, 1_000, "UTC"), Some(301_000));
        assert_eq!(rate.next_after(301_000, 1_000, "UTC"), Some(601_000));
    }

    #[test]
    fn huge_rates_are_refused_or_never_fire_instead_of_wrapping() {
        assert_eq!(
            Expression::parse("rate(9223372036854775807 minutes)", "UTC").unwrap_err(),
            "Invalid Schedule Expression rate(9223372036854775807 minutes): the rate is too long"
        );
        assert!(Expression::parse("rate(106751991167301 days)", "UTC").is_err());
        let long = Expression::parse("rate(100000000 days)", "UTC").unwrap();
        assert_eq!(long.next_after(NOV_23_2026, NOV_23_2026, "UTC"), Some(NOV_23_2026 + 100_000_000 * 86_400_000));
        // A period that fits in i64 milliseconds, but whose first firing does not.
        let beyond = Expression::parse("rate(153722867280912 minutes)", "UTC").unwrap();
        assert_eq!(beyond.next_after(NOV_23_2026, NOV_23_2026, "UTC"), None);
        assert_eq!(beyond.next_after(i64::MAX, i64::MIN, "UTC"), None);
    }

    #[test]
    fn seconds_are_the_dev_servers_own_unit() {
        assert_eq!(
            Expression::parse("rate(5 seconds)", "UTC").unwrap_err(),
            "Invalid Schedule Expression rate(5 seconds): unknown unit `seconds`"
        );
        let tick = Expression::parse_dev("rate(5 seconds)", "UTC").unwrap();
        assert_eq!(tick.next_after(1_000, 1_000, "UTC"), Some(6_000));
        assert_eq!(tick.next_after(6_000, 1_000, "UTC"), Some(11_000));
        let one = Expression::parse_dev("rate(1 second)", "UTC").unwrap();
        assert_eq!(one.next_after(1_500, 1_000, "UTC"), Some(2_000));
        assert!(!tick.is_one_time());
    }

    #[test]
    fn scheduler_context_attributes_are_substituted() {
        let context = FiringContext {
            scheduled_at: 1_796_180_400_000, // 2026-12-02T03:00:00Z
            execution_id: "exec-1",
            schedule_arn: "arn:aws:scheduler:us-east-1:000000000000:schedule/template/F.Daily",
            attempt: 1,
        };
        let input = r#"{"cairn": "cron", "scheduled": "<aws.scheduler.scheduled-time>", "id": "<aws.scheduler.execution-id>", "arn": "<aws.scheduler.schedule-arn>", "attempt": "<aws.scheduler.attempt-number>", "again": "<aws.scheduler.scheduled-time>"}"#;
        assert_eq!(
            substitute_context(input, &context),
            r#"{"cairn": "cron", "scheduled": "2026-12-02T03:00:00Z", "id": "exec-1", "arn": "arn:aws:scheduler:us-east-1:000000000000:schedule/template/F.Daily", "attempt": "1", "again": "2026-12-02T03:00:00Z"}"#
        );
        // Milliseconds are dropped, as Scheduler's time is to the second.
        let context = FiringContext { scheduled_at: 1_796_180_400_999, ..context };
        assert_eq!(substitute_context("<aws.scheduler.scheduled-time>", &context), "2026-12-02T03:00:00Z");
        assert_eq!(substitute_context(r#"{"a": 1}"#, &context), r#"{"a": 1}"#);
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        let err = |e: &str, tz: &str| Expression::parse(e, tz).unwrap_err();
        assert_eq!(
            err("cron(0 3 * *)", "UTC"),
            "Invalid Schedule Expression cron(0 3 * *): cron() needs 6 fields (minutes hours day-of-month month day-of-week year), found 4"
        );
        assert_eq!(
            err("cron(0 3 * * * *)", "UTC"),
            "Invalid Schedule Expression cron(0 3 * * * *): exactly one of day-of-month and day-of-week must be `?`"
        );
        assert_eq!(
            err("rate(0 minutes)", "UTC"),
            "Invalid Schedule Expression rate(0 minutes): the rate must be a positive whole number"
        );
        assert_eq!(
            err("at(tomorrow)", "UTC"),
            "Invalid Schedule Expression at(tomorrow): at() takes yyyy-mm-ddThh:mm:ss"
        );
        assert_eq!(err("daily", "UTC"), "Invalid Schedule Expression daily: expected at(...), cron(...) or rate(...)");
        assert_eq!(
            err("rate(1 day)", "Mars/Olympus"),
            "Invalid ScheduleExpressionTimezone Mars/Olympus: not an IANA time zone"
        );
        assert!(err("cron(99 3 * * ? *)", "UTC").starts_with("Invalid Schedule Expression cron(99 3 * * ? *): "));
    }

    #[test]
    fn weekdays_unshift() {
        assert_eq!(unshift_weekdays("2-6"), "1-5");
        assert_eq!(unshift_weekdays("1,7"), "0,6");
        assert_eq!(unshift_weekdays("MON-FRI"), "MON-FRI");
        assert_eq!(unshift_weekdays("*"), "*");
        assert_eq!(unshift_weekdays("2/2"), "1/2");
    }
}
