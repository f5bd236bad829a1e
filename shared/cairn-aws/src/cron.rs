//! Unix 5-field crons (Inngest's) as EventBridge Scheduler expressions.

use cairn::CronSchedule;

/// The `ScheduleExpression` and `ScheduleExpressionTimezone` of a ScheduleV2 for `cron`:
/// EventBridge wants six fields (a year), `?` in one of day-of-month / day-of-week, and numbers
/// days of the week 1-7 from Sunday where Unix uses 0-6.
///
/// ```
/// let cron = cairn::CronSchedule::parse("TZ=Europe/Paris 0 12 * * 1-5").unwrap();
/// assert_eq!(cairn_aws::schedule_expression(&cron), ("cron(0 12 ? * 2-6 *)".to_string(), "Europe/Paris".to_string()));
/// let daily = cairn::CronSchedule::parse("0 3 * * *").unwrap();
/// assert_eq!(cairn_aws::schedule_expression(&daily).0, "cron(0 3 * * ? *)");
/// ```
pub fn schedule_expression(cron: &CronSchedule) -> (String, String) {
    let fields: Vec<&str> = cron.pattern().split_whitespace().collect();
    let [minute, hour, day_of_month, month, day_of_week] = fields[..] else {
        return (format!("cron({})", cron.pattern()), cron.time_zone().to_string());
    };
    let (day_of_month, day_of_week) = match (day_of_month, day_of_week) {
        (dom, "*") => (dom.to_string(), "?".to_string()),
        ("*", dow) => ("?".to_string(), shift_weekdays(dow)),
        (dom, dow) => (dom.to_string(), shift_weekdays(dow)),
    };
    (format!("cron({minute} {hour} {day_of_month} {month} {day_of_week} *)"), cron.time_zone().to_string())
}

/// Unix 0-6 (Sunday = 0 or 7) to EventBridge 1-7 (Sunday = 1), in lists, ranges and steps.
fn shift_weekdays(field: &str) -> String {
    field
        .split(',')
        .map(|part| {
            let (range, step) = match part.split_once('/') {
                Some((range, step)) => (range, Some(step)),
                None => (part, None),
            };
            let shifted: Vec<String> = range
                .split('-')
                .map(|day| match day.parse::<u8>() {
                    Ok(n) => ((n % 7) + 1).to_string(),
                    Err(_) => day.to_string(),
                })
                .collect();
            match step {
                Some(step) => format!("{}/{step}", shifted.join("-")),
                None => shifted.join("-"),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weekdays_shift_to_eventbridge_numbering() {
        assert_eq!(shift_weekdays("0"), "1");
        assert_eq!(shift_weekdays("7"), "1");
        assert_eq!(shift_weekdays("1-5"), "2-6");
        assert_eq!(shift_weekdays("0,6"), "1,7");
        assert_eq!(shift_weekdays("MON"), "MON");
        assert_eq!(shift_weekdays("1-5/2"), "2-6/2");
    }
}
