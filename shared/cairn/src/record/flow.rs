//! Why flow control skipped a run or holds it queued, as the dashboard and `cairn runs show`
//! tell it.

use crate::clock::Millis;
use crate::id::RunId;
use serde::{Deserialize, Serialize};

/// Which flow-control option turned an event away.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// `rate_limit`: the key's limit for the period is used up.
    RateLimit,
    /// `idempotency`: a run for the key started in the last 24 hours.
    Idempotency,
    /// `singleton` in skip mode: a run for the key is active.
    Singleton,
    /// `debounce`: a later event of the window started the run (`by`).
    Debounce,
    /// `batch_events`: the event joined a batch, whose run is `by`.
    Batch,
}

impl SkipReason {
    /// The option's name as the builder spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::RateLimit => "rate_limit",
            SkipReason::Idempotency => "idempotency",
            SkipReason::Singleton => "singleton",
            SkipReason::Debounce => "debounce",
            SkipReason::Batch => "batch_events",
        }
    }
}

/// Why a run is [`RunStatus::Skipped`], for the dashboard and `cairn runs show`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// The option.
    pub reason: SkipReason,
    /// The key's value (its first 256 characters), when the option has a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The active run that holds the key (singleton).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<RunId>,
    /// What went wrong evaluating the key, when that is why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Skipped {
    /// One line for the dashboard and the CLI, e.g. ``skipped by singleton: run `r1` is active
    /// for key `u1` ``.
    pub fn describe(&self) -> String {
        if let (SkipReason::Debounce | SkipReason::Batch, Some(by)) = (self.reason, &self.by) {
            let (what, whose) =
                if self.reason == SkipReason::Debounce { ("debounced", "window") } else { ("batched", "batch") };
            let mut text = what.to_string();
            if let Some(key) = &self.key {
                text.push_str(&format!(" for key `{key}`"));
            }
            text.push_str(&format!(": the {whose}'s run is `{by}`"));
            return text;
        }
        let mut text = format!("skipped by {}", self.reason.as_str());
        if let Some(error) = &self.error {
            text.push_str(&format!(": its key failed to evaluate: {error}"));
            return text;
        }
        match (&self.by, &self.key) {
            (Some(by), Some(key)) => text.push_str(&format!(": run `{by}` is active for key `{key}`")),
            (Some(by), None) => text.push_str(&format!(": run `{by}` is active")),
            (None, Some(key)) => text.push_str(&format!(" for key `{key}`")),
            (None, None) => {}
        }
        text
    }
}

/// Why a run is [`RunStatus::Queued`]: the option and key it waits for, and its place.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queued {
    /// `concurrency` or `throttle`.
    pub option: String,
    /// The key's value (its first 256 characters), or none for a keyless limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Its place in the key's queue when it last tried (0: next).
    pub position: usize,
    /// When a throttled run's turn comes, or a debounce window fires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Millis>,
    /// The events a debounce window has gathered so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<u32>,
}

impl Queued {
    /// One line for the dashboard and the CLI, e.g. ``queued by throttle for key `u1`, 2
    /// ahead, until 2026-12-06T10:00:15Z``.
    pub fn describe(&self) -> String {
        let at = |millis: Millis| {
            chrono::DateTime::from_timestamp_millis(millis)
                .map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default()
        };
        let events = self.events.unwrap_or(1);
        let plural = if events == 1 { "" } else { "s" };
        if self.option == "debounce" || self.option == "batch" {
            let mut text = if self.option == "debounce" {
                "debounced".to_string()
            } else {
                format!("batch of {events} event{plural}")
            };
            if let Some(key) = &self.key {
                text.push_str(&format!(" for key `{key}`"));
            }
            if let Some(until) = self.until {
                text.push_str(&format!(" until {}", at(until)));
            }
            if self.option == "debounce" {
                text.push_str(&format!(" ({events} event{plural})"));
            }
            return text;
        }
        let mut text = format!("queued by {}", self.option);
        if let Some(key) = &self.key {
            text.push_str(&format!(" for key `{key}`"));
        }
        text.push_str(&format!(", {} ahead", self.position));
        if let Some(until) = self.until.and_then(chrono::DateTime::from_timestamp_millis) {
            text.push_str(&format!(", until {}", until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)));
        }
        text
    }
}
