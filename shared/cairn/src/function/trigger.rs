//! What starts a function: a [`Trigger`] (an event, optionally filtered, or a cron) and the
//! parsed [`CronSchedule`].

use crate::event::SCHEDULED_EVENT;
use crate::expr::MatchExpr;
use crate::record::Millis;
use chrono::{TimeZone, Utc};
use std::fmt;

/// What starts a function.
#[derive(Clone, Debug)]
pub enum Trigger {
    /// An event by name, optionally filtered by a CEL condition over `event`.
    Event {
        /// Event name.
        name: String,
        /// Optional condition.
        expression: Option<MatchExpr>,
    },
    /// A cron schedule.
    Cron(Box<CronSchedule>),
}

impl Trigger {
    /// The event name this trigger delivers (`inngest/scheduled.timer` for crons).
    pub fn event_name(&self) -> &str {
        match self {
            Trigger::Event { name, .. } => name,
            Trigger::Cron(_) => SCHEDULED_EVENT,
        }
    }
}

/// A parsed 5-field cron expression with an optional `TZ=Area/City ` prefix (UTC otherwise).
#[derive(Clone)]
pub struct CronSchedule {
    source: String,
    pattern: String,
    zone: chrono_tz::Tz,
    cron: croner::Cron,
}

impl fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CronSchedule").field(&self.source).finish()
    }
}

impl CronSchedule {
    /// Parses `0 3 * * *` or `TZ=Europe/Paris 0 12 * * 5`.
    ///
    /// ```
    /// use cairn::CronSchedule;
    /// let paris = CronSchedule::parse("TZ=Europe/Paris 0 12 * * 5").unwrap();
    /// assert_eq!(paris.time_zone(), "Europe/Paris");
    /// assert!(CronSchedule::parse("61 * * * *").is_err());
    /// ```
    ///
    /// # Errors
    /// A message naming the bad time zone or cron field.
    pub fn parse(source: &str) -> Result<Self, crate::error::CronError> {
        let trimmed = source.trim();
        let (zone, pattern) = match trimmed.strip_prefix("TZ=") {
            Some(rest) => {
                let (zone, pattern) =
                    rest.split_once(char::is_whitespace).ok_or_else(|| "nothing follows the TZ= prefix".to_string())?;
                let zone: chrono_tz::Tz = zone
                    .parse()
                    .map_err(|_| format!("unknown time zone `{zone}` (expected an IANA name like Europe/Paris)"))?;
                (zone, pattern.trim())
            }
            None => (chrono_tz::UTC, trimmed),
        };
        let fields = pattern.split_whitespace().count();
        if fields != 5 {
            return Err(
                format!("expected 5 fields (minute hour day-of-month month day-of-week), found {fields}").into()
            );
        }
        let parser = croner::parser::CronParser::builder().seconds(croner::parser::Seconds::Disallowed).build();

        let cron = parser.parse(pattern).map_err(|err| err.to_string())?;
        // Crons deploy as EventBridge Scheduler expressions, which take `#` and `L` in the day
        // of the week only alone: refuse what could never be deployed, at definition time.
        let day_of_week = pattern.split_whitespace().nth(4).unwrap_or_default();
        if day_of_week.contains(['#', 'L']) && day_of_week.contains([',', '-', '/']) {
            return Err(format!(
                "day of the week `{day_of_week}`: `#` and `L` must stand alone (EventBridge Scheduler allows them in no list, range or step)"
            )
            .into());
        }
        Ok(CronSchedule { source: trimmed.to_string(), pattern: pattern.to_string(), zone, cron })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The five fields, without the `TZ=` prefix.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The IANA time zone it is evaluated in.
    pub fn time_zone(&self) -> &str {
        self.zone.name()
    }

    /// The first firing strictly after `after` (ms since the epoch).
    pub fn next_after(&self, after: Millis) -> Option<Millis> {
        let start = Utc.timestamp_millis_opt(after).single()?.with_timezone(&self.zone);
        self.cron.find_next_occurrence(&start, false).ok().map(|next| next.timestamp_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_fires_in_its_time_zone() {
        // 2026-11-23T00:00:00Z; 03:00 in Paris (UTC+1 in winter) is 02:00Z.
        let midnight = 1_795_392_000_000;
        let paris = CronSchedule::parse("TZ=Europe/Paris 0 3 * * *").unwrap();
        assert_eq!(paris.next_after(midnight), Some(midnight + 2 * 3_600_000));
        let utc = CronSchedule::parse("0 3 * * *").unwrap();
        assert_eq!(utc.next_after(midnight), Some(midnight + 3 * 3_600_000));
    }
}
