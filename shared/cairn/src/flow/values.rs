//! The values options are written with: a key or condition expression, compiled once, and a
//! period checked against an option's bounds.

use crate::duration::parse_duration;
use crate::expr::MatchExpr;

pub(crate) const SECOND: u64 = 1_000;
pub(crate) const DAY: u64 = 86_400 * SECOND;

/// An expression as written, and compiled.
#[derive(Debug, Clone)]
pub(crate) struct Expr {
    pub(crate) compiled: MatchExpr,
}

impl Expr {
    pub(crate) fn parse(source: &str) -> Result<Self, String> {
        MatchExpr::parse(source)
            .map(|compiled| Expr { compiled })
            .map_err(|err| format!("invalid expression `{source}`: {err}"))
    }

    pub(crate) fn source(&self) -> &str {
        self.compiled.source()
    }
}

/// A period as written (`"10s"`), and in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Period {
    pub(crate) source: String,
    pub(crate) millis: u64,
}

impl Period {
    /// Parses `source` and checks it lies in `min..=max` milliseconds.
    pub(crate) fn parse(source: &str, min: u64, max: u64, bounds: &str) -> Result<Self, String> {
        let millis = parse_duration(source).map_err(|err| err.to_string())?.as_millis();
        let millis = u64::try_from(millis).unwrap_or(u64::MAX);
        if millis < min || millis > max {
            return Err(format!("period `{source}` is out of bounds: {bounds}"));
        }
        Ok(Period { source: source.to_string(), millis })
    }
}
