//! Durations as users write them: a [`std::time::Duration`] or an Inngest time string
//! (`"30s"`, `"90m"`, `"1h"`, `"2d"`, `"1h30m"`).

pub(crate) use crate::clock::millis;
use crate::error::DurationError;
use std::time::Duration;

/// Something that names a duration; `&str` is parsed with [`humantime`].
pub trait IntoDuration {
    /// The duration, or a [`DurationError`] naming what cannot be parsed.
    fn into_duration(self) -> Result<Duration, DurationError>;
}

impl IntoDuration for Duration {
    fn into_duration(self) -> Result<Duration, DurationError> {
        Ok(self)
    }
}

impl IntoDuration for &str {
    fn into_duration(self) -> Result<Duration, DurationError> {
        parse_duration(self)
    }
}

impl IntoDuration for String {
    fn into_duration(self) -> Result<Duration, DurationError> {
        parse_duration(&self)
    }
}

/// Parses `"1h"`, `"90m"`, `"2d"`, `"1h30m"`, `"500ms"`.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(cairn::parse_duration("1h").unwrap(), Duration::from_secs(3600));
/// assert_eq!(cairn::parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
/// assert_eq!(cairn::parse_duration("soon").unwrap_err(), "invalid duration `soon`: expected a number like `30s`, `1h` or `2d`");
/// ```
///
/// # Errors
/// A message that quotes the input, when it is empty or not a duration.
pub fn parse_duration(text: &str) -> Result<Duration, crate::error::DurationError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("invalid duration ``: it is empty".into());
    }
    humantime::parse_duration(trimmed)
        .map_err(|err| match err {
            humantime::DurationError::NumberExpected(_) | humantime::DurationError::InvalidCharacter(_) => {
                format!("invalid duration `{trimmed}`: expected a number like `30s`, `1h` or `2d`")
            }
            other => format!("invalid duration `{trimmed}`: {other}"),
        })
        .map_err(crate::error::DurationError::from)
}

/// Formats a duration the way Inngest's `Sleep` op names it (`"1h"`, `"90m"`, `"45s"`).
pub fn format_duration(duration: Duration) -> String {
    let secs = duration.as_secs().max(u64::from(duration.subsec_nanos() > 0));
    match secs {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_inngest_time_strings() {
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        assert_eq!(parse_duration("90m").unwrap(), Duration::from_secs(5_400));
        assert_eq!(parse_duration(" 30s ").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("").unwrap_err(), "invalid duration ``: it is empty");
        assert_eq!(
            parse_duration("1x").unwrap_err(),
            "invalid duration `1x`: unknown time unit \"x\", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations)"
        );
    }

    #[test]
    fn formats_like_inngest_sleep_names() {
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(format_duration(Duration::from_secs(5400)), "90m");
        assert_eq!(format_duration(Duration::from_secs(172_800)), "2d");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1s");
        assert_eq!(format_duration(Duration::from_millis(200)), "1s");
    }
}
