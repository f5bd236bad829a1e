//! Unix 5-field crons (Inngest's) as EventBridge Scheduler expressions.

use cairn::{CronError, CronSchedule};

/// The `ScheduleExpression`s of the ScheduleV2s that fire `cron` (in its time zone,
/// `cron.time_zone()`): EventBridge wants six fields (a year), `?` in one of day-of-month /
/// day-of-week, ascending day-of-week ranges numbered 1-7 from Sunday where Unix uses 0-7, and
/// `0/5` for Unix's `*/5`.
///
/// A cron that restricts both days (`0 9 1 * 1`: the 1st of the month *or* a Monday, in Unix
/// cron) becomes two schedules, one per day field; both carry the firing time as the run's id,
/// so a day matching both starts one run.
///
/// ```
/// let cron = cairn::CronSchedule::parse("TZ=Europe/Paris 0 12 * * 1-5").unwrap();
/// assert_eq!(cairn_aws::schedule_expression(&cron).unwrap(), ["cron(0 12 ? * 2-6 *)"]);
/// let weekend = cairn::CronSchedule::parse("0 0 * * 5-7").unwrap();
/// assert_eq!(cairn_aws::schedule_expression(&weekend).unwrap(), ["cron(0 0 ? * 1,6,7 *)"]);
/// let either = cairn::CronSchedule::parse("0 9 1 * 1").unwrap();
/// assert_eq!(cairn_aws::schedule_expression(&either).unwrap(), ["cron(0 9 1 * ? *)", "cron(0 9 ? * 2 *)"]);
/// ```
///
/// # Errors
/// [`CronError`] naming the field EventBridge cannot express (e.g. `#` or `L` inside a list).
pub fn schedule_expression(cron: &CronSchedule) -> Result<Vec<String>, CronError> {
    let fields: Vec<&str> = cron.pattern().split_whitespace().collect();
    let [minute, hour, day_of_month, month, day_of_week] = fields[..] else {
        return Err(format!("cron `{}`: expected 5 fields", cron.source()).into());
    };
    let minute = increments_from(minute, 0);
    let hour = increments_from(hour, 0);
    let month = increments_from(month, 1);
    let expression = |dom: &str, dow: &str| format!("cron({minute} {hour} {dom} {month} {dow} *)");
    Ok(match (day_of_month, day_of_week) {
        (dom, "*" | "?") => vec![expression(&increments_from(dom, 1), "?")],
        ("*" | "?", dow) => vec![expression("?", &weekdays(dow, cron.source())?)],
        (dom, dow) => {
            vec![expression(&increments_from(dom, 1), "?"), expression("?", &weekdays(dow, cron.source())?)]
        }
    })
}

/// Unix `*/n` as EventBridge's `first/n`.
fn increments_from(field: &str, first: u8) -> String {
    field.split(',').map(|part| part.replace("*/", &format!("{first}/"))).collect::<Vec<_>>().join(",")
}

const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// A Unix day of the week (0-7, Sunday both 0 and 7, or a name) as 0-6.
fn unix_day(text: &str) -> Option<u8> {
    match text.parse::<u8>() {
        Ok(n) if n <= 7 => Some(n % 7),
        Ok(_) => None,
        Err(_) => DAY_NAMES.iter().position(|name| name.eq_ignore_ascii_case(text)).map(|i| i as u8),
    }
}

/// A Unix day-of-week field as EventBridge's: the days it names, numbered 1-7 from Sunday,
/// in ascending lists and ranges (`5-7`, Friday to Sunday, is `1,6,7`). `n#k` and `nL` are
/// kept (renumbered) when they stand alone, as EventBridge allows them only so.
fn weekdays(field: &str, source: &str) -> Result<String, String> {
    let day_of =
        |text: &str| unix_day(text).ok_or_else(|| format!("cron `{source}`: unknown day of the week `{text}`"));
    let special = |suffix: &str, day: &str| day_of(day).map(|d| format!("{}{suffix}", d + 1));
    if let Some((day, nth)) = field.split_once('#') {
        if field.contains(',') {
            return Err(format!("cron `{source}`: EventBridge allows `#` in the day of the week only alone"));
        }
        return special(&format!("#{nth}"), day);
    }
    if let Some(day) = field.strip_suffix('L').filter(|day| !day.is_empty()) {
        if field.contains(',') || field.contains('-') {
            return Err(format!("cron `{source}`: EventBridge allows `L` in the day of the week only alone"));
        }
        return special("L", day);
    }
    let mut days = [false; 7];
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => (
                range,
                step.parse::<u8>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("cron `{source}`: bad step in `{part}`"))?,
            ),
            None => (part, 1),
        };
        let (first, last) = match range {
            "*" => (0, 6),
            _ => match range.split_once('-') {
                // `7` ends a range as Sunday after Saturday.
                Some((a, "7")) => (day_of(a)?, 7),
                Some((a, b)) => (day_of(a)?, day_of(b)?),
                None if step > 1 => (day_of(range)?, 6),
                None => (day_of(range)?, day_of(range)?),
            },
        };
        let mut day = first;
        while day <= last {
            days[usize::from(day % 7)] = true;
            day += step;
        }
    }
    // EventBridge numbering: Sunday 1 ... Saturday 7, in ascending runs.
    let numbers: Vec<u8> = (0..7u8).filter(|d| days[usize::from(*d)]).map(|d| d + 1).collect();
    let mut parts = Vec::new();
    let mut index = 0;
    while index < numbers.len() {
        let start = numbers[index];
        let mut end = start;
        while index + 1 < numbers.len() && numbers[index + 1] == end + 1 {
            index += 1;
            end += 1;
        }
        parts.push(if end >= start + 2 {
            format!("{start}-{end}")
        } else if end == start + 1 {
            format!("{start},{end}")
        } else {
            start.to_string()
        });
        index += 1;
    }
    if parts.len() == 1 && numbers.len() == 7 {
        return Ok("*".to_string());
    }
    Ok(parts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn converted(source: &str) -> Vec<String> {
        schedule_expression(&CronSchedule::parse(source).unwrap()).unwrap()
    }

    #[test]
    fn weekdays_become_ascending_eventbridge_days() {
        assert_eq!(weekdays("0", "").unwrap(), "1");
        assert_eq!(weekdays("7", "").unwrap(), "1");
        assert_eq!(weekdays("1-5", "").unwrap(), "2-6");
        assert_eq!(weekdays("0,6", "").unwrap(), "1,7");
        assert_eq!(weekdays("MON", "").unwrap(), "2");
        assert_eq!(weekdays("mon-fri", "").unwrap(), "2-6");
        assert_eq!(weekdays("1-5/2", "").unwrap(), "2,4,6");
        assert_eq!(weekdays("5-7", "").unwrap(), "1,6,7");
        assert_eq!(weekdays("*/2", "").unwrap(), "1,3,5,7");
        assert_eq!(weekdays("0-6", "").unwrap(), "*");
        assert_eq!(weekdays("5L", "").unwrap(), "6L");
        assert_eq!(weekdays("1#2", "").unwrap(), "2#2");
        assert_eq!(
            weekdays("1#2,3", "x").unwrap_err(),
            "cron `x`: EventBridge allows `#` in the day of the week only alone"
        );
    }

    #[test]
    fn crons_aws_rejected_before_now_convert() {
        assert_eq!(converted("0 9 1 * 1"), ["cron(0 9 1 * ? *)", "cron(0 9 ? * 2 *)"]);
        assert_eq!(converted("0 0 * * 5-7"), ["cron(0 0 ? * 1,6,7 *)"]);
        assert_eq!(converted("*/15 */2 * * *"), ["cron(0/15 0/2 * * ? *)"]);
        assert_eq!(converted("0 3 */2 */3 *"), ["cron(0 3 1/2 1/3 ? *)"]);
        assert_eq!(converted("0 3 * * *"), ["cron(0 3 * * ? *)"]);
    }
}
