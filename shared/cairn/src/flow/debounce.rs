//! Debounce (flow-control reference, section 4.5): events for a key gather in a window; each
//! one restarts the quiet `period` (capped by `timeout` from the first); when the period passes
//! with no new event, one run starts with the last event.
//!
//! A window is one item per key. The event that opens it leaves a placeholder run, `queued by
//! debounce ... until`, which the timer (or, if the timer is lost, the reconciler) wakes at the
//! window's firing time: that is what makes a window visible in the dashboard and what fires it
//! after any crash. Firing takes the window (moved to `closed`, so a new event opens a new one
//! meanwhile), admits the real run under the function's other options, then forgets the window
//! and marks the placeholder superseded. Every step is idempotent: the real run's id derives
//! from the placeholder's.
//!
//! A rate limit (or idempotency) is spent per incoming event in the same atomic write as the
//! window, so a duplicate delivery never spends twice, and the fired run is not limited again.

use super::options::{DAY, Expr, Period, SECOND};
use super::{Gcra, store_key, truncated};
use crate::event::EventPayload;
use crate::id::RunId;
use crate::record::Millis;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// With `all_events`, a window holding this many events fires at once (its item must stay
/// under DynamoDB's 400 KB; the reference's batch cap is 100 events).
pub const MAX_WINDOW_EVENTS: usize = 100;
/// With `all_events`, a window whose events reach this many bytes (JSON) fires at once.
pub const MAX_WINDOW_BYTES: usize = 256 * 1024;

/// Starts one run per burst of events: when no event for the key arrived for `period`
/// (Inngest's `debounce`), with the last event. Cairn's `all_events` also hands the run every
/// event of the window.
#[derive(Debug, Clone)]
pub struct Debounce {
    period_source: String,
    pub(crate) period: Option<Period>,
    key_source: Option<String>,
    pub(crate) key: Option<Expr>,
    timeout_source: Option<String>,
    pub(crate) timeout: Option<Period>,
    pub(crate) all_events: bool,
}

impl Debounce {
    /// Starts a run once no event arrived for `period` (`"1s"` to `"7d"`).
    pub fn new(period: impl Into<String>) -> Self {
        Debounce {
            period_source: period.into(),
            period: None,
            key_source: None,
            key: None,
            timeout_source: None,
            timeout: None,
            all_events: false,
        }
    }

    /// A CEL expression over `event`: each value has its own window (an empty one means none).
    pub fn key(mut self, expression: impl Into<String>) -> Self {
        self.key_source = Some(expression.into()).filter(|source: &String| !source.trim().is_empty());
        self
    }

    /// The longest a window may delay its run, from its first event (`"1s"` to `"7d"`).
    pub fn timeout(mut self, timeout: impl Into<String>) -> Self {
        self.timeout_source = Some(timeout.into());
        self
    }

    /// The run also receives every event of the window, oldest first
    /// ([`Step::events`](crate::Step::events)). A window fires early once it holds
    /// [`MAX_WINDOW_EVENTS`] events or [`MAX_WINDOW_BYTES`] of them.
    pub fn all_events(mut self) -> Self {
        self.all_events = true;
        self
    }

    pub(crate) fn check(&mut self) -> Result<(), String> {
        self.period = Some(Period::parse(&self.period_source, SECOND, 7 * DAY, "from 1s to 7d")?);
        if let Some(source) = &self.timeout_source {
            self.timeout = Some(
                Period::parse(source, SECOND, 7 * DAY, "from 1s to 7d")
                    .map_err(|reason| format!("timeout: {reason}"))?,
            );
        }
        if let Some(source) = &self.key_source {
            self.key = Some(Expr::parse(source)?);
        }
        Ok(())
    }

    pub(crate) fn wire(&self) -> Value {
        let mut object = Map::new();
        object.insert("period".into(), json!(self.period_source));
        if let Some(key) = &self.key_source {
            object.insert("key".into(), json!(key));
        }
        if let Some(timeout) = &self.timeout_source {
            object.insert("timeout".into(), json!(timeout));
        }
        Value::Object(object)
    }

    /// Where `event`'s window lives for `function_id`, and the key's text (none without a key).
    /// A key that fails to evaluate is Inngest's shared `<invalid>` window.
    pub(crate) fn window_key(&self, function_id: &str, event: &EventPayload) -> (String, Option<String>) {
        let value = self.key.as_ref().map(|key| {
            let event = serde_json::to_value(event).unwrap_or(Value::Null);
            match key.compiled.value(&event) {
                Ok(value) => value.key_text().to_string(),
                Err(_) => "<invalid>".to_string(),
            }
        });
        let text = value.as_deref().unwrap_or("");
        let key = store_key("debounce", function_id, self.key.as_ref().map(Expr::source), text);
        (key, value.map(|value| truncated(&value)))
    }

    pub(crate) fn rule(&self) -> WindowRule {
        let millis = |period: &Option<Period>| period.as_ref().map(|p| i64::try_from(p.millis).unwrap_or(i64::MAX));
        WindowRule {
            period: millis(&self.period).unwrap_or(1_000),
            timeout: millis(&self.timeout),
            all_events: self.all_events,
        }
    }
}

/// How a window behaves, from the function's [`Debounce`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowRule {
    /// The quiet period, ms.
    pub period: Millis,
    /// The cap on the total delay from the first event, ms.
    pub timeout: Option<Millis>,
    /// Whether the window keeps every event.
    pub all_events: bool,
}

/// One open (or closing) debounce window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// The placeholder run the window's first event left.
    pub run_id: RunId,
    /// The last event: the one the run starts with.
    pub event: EventPayload,
    /// Every event, oldest first (with `all_events` only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<EventPayload>,
    /// How many events the window took.
    pub count: u32,
    /// When the window fires if no event comes.
    pub fire_at: Millis,
    /// The timeout's deadline, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Millis>,
    /// Bytes of the kept events (with `all_events` only).
    #[serde(default)]
    pub bytes: usize,
}

impl Window {
    fn holds(&self, event: &EventPayload) -> bool {
        let same = |other: &EventPayload| other.id.is_some() && other.id == event.id;
        same(&self.event) || self.events.iter().any(same)
    }

    fn full(&self) -> bool {
        self.events.len() >= MAX_WINDOW_EVENTS || self.bytes >= MAX_WINDOW_BYTES
    }
}

/// A debounce item as a store keeps it: the key's open window, windows being fired, and, when
/// the item is a debounced function's rate-limit bucket instead, the bucket's `tat`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DebounceState {
    /// The window events join.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open: Option<Window>,
    /// Windows taken for firing whose run is not yet confirmed started.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub closed: Vec<Window>,
    /// A rate-limit bucket's theoretical arrival time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tat: Option<Millis>,
}

/// A change to a window, applied atomically by a store ([`apply`]).
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // Short-lived, built for one store call.
pub enum DebounceChange {
    /// An event arrives: spend the rate limit's `limiter` on the second key (if any), then
    /// open a window with `placeholder` or extend the open one.
    Push {
        /// The event.
        event: EventPayload,
        /// The window's rule.
        rule: WindowRule,
        /// The run id the event's placeholder gets if it opens a window.
        placeholder: RunId,
        /// The rate limit (or idempotency) spent per event, on the second key.
        limiter: Option<Gcra>,
    },
    /// The placeholder `run_id` woke: take its window if it is due.
    Take {
        /// The placeholder.
        run_id: RunId,
    },
    /// The run of placeholder `run_id`'s window started: forget the window.
    Finish {
        /// The placeholder.
        run_id: RunId,
    },
    /// The placeholder `run_id` was cancelled: drop its window, whatever its state.
    Drop {
        /// The placeholder.
        run_id: RunId,
    },
}

/// What [`apply`] decided.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // Short-lived, the answer of one store call.
pub enum Debounced {
    /// The event opened a window (or is a redelivery of the event that did): its placeholder
    /// `run_id` fires at `fire_at`.
    Opened {
        /// The placeholder.
        run_id: RunId,
        /// When it fires if nothing else comes.
        fire_at: Millis,
    },
    /// The event joined the open window of placeholder `run_id`.
    Extended {
        /// The placeholder.
        run_id: RunId,
        /// The window's new firing time.
        fire_at: Millis,
        /// The window is full (`all_events`): fire it now.
        full: bool,
    },
    /// Nothing changed: the event was already in the window, or is older than its last event
    /// (Inngest ignores an out-of-order event).
    Ignored {
        /// The window's placeholder.
        run_id: RunId,
    },
    /// The rate limit turned the event away.
    Limited,
    /// The window is not due yet: it fires at `fire_at`, holding `count` events.
    NotYet {
        /// Its firing time.
        fire_at: Millis,
        /// Its events so far.
        count: u32,
    },
    /// The window is due, and now closed: start its run.
    Due(Window),
    /// No window of this placeholder exists (already fired, or dropped).
    Gone,
}

/// Applies `change` at `now` to the items under its keys (the window's, then the rate limit's
/// bucket for a `Push` with a limiter): the items to write, and what happened. Every store
/// applies this one rule inside its own atomic write.
pub fn apply(change: &DebounceChange, states: &[DebounceState], now: Millis) -> (Vec<DebounceState>, Debounced) {
    let mut next = states.to_vec();
    let outcome = match change {
        DebounceChange::Push { event, rule, placeholder, limiter } => {
            push(&mut next, event, *rule, placeholder, *limiter, now)
        }
        DebounceChange::Take { run_id } => {
            let state = &mut next[0];
            match state.open.take() {
                Some(open) if &open.run_id == run_id && open.fire_at > now && !fires_early(&open) => {
                    let outcome = Debounced::NotYet { fire_at: open.fire_at, count: open.count };
                    state.open = Some(open);
                    outcome
                }
                Some(open) if &open.run_id == run_id => {
                    state.closed.push(open.clone());
                    Debounced::Due(open)
                }
                other => {
                    state.open = other;
                    match state.closed.iter().find(|closed| &closed.run_id == run_id) {
                        // Taken before, its run perhaps not started (a crash): take it again.
                        Some(closed) => Debounced::Due(closed.clone()),
                        None => Debounced::Gone,
                    }
                }
            }
        }
        DebounceChange::Finish { run_id } | DebounceChange::Drop { run_id } => {
            let state = &mut next[0];
            state.closed.retain(|closed| &closed.run_id != run_id);
            if matches!(change, DebounceChange::Drop { .. })
                && state.open.as_ref().is_some_and(|open| &open.run_id == run_id)
            {
                state.open = None;
            }
            Debounced::Gone
        }
    };
    (next, outcome)
}

/// An `all_events` window that is full fires without waiting.
fn fires_early(window: &Window) -> bool {
    !window.events.is_empty() && window.full()
}

fn push(
    states: &mut [DebounceState],
    event: &EventPayload,
    rule: WindowRule,
    placeholder: &RunId,
    limiter: Option<Gcra>,
    now: Millis,
) -> Debounced {
    if let Some(open) = &states[0].open
        && open.holds(event)
    {
        // A redelivery: answer as the first delivery did, spending nothing.
        return if &open.run_id == placeholder {
            Debounced::Opened { run_id: open.run_id.clone(), fire_at: open.fire_at }
        } else {
            Debounced::Ignored { run_id: open.run_id.clone() }
        };
    }
    if let Some(closed) = states[0].closed.iter().find(|closed| closed.holds(event)) {
        return Debounced::Ignored { run_id: closed.run_id.clone() };
    }
    if let (Some(limiter), Some(bucket)) = (limiter, states.get_mut(1)) {
        match limiter.admit(bucket.tat, now) {
            Some(tat) => bucket.tat = Some(tat),
            None => return Debounced::Limited,
        }
    }
    let ts = event.ts.unwrap_or(now);
    let size = if rule.all_events { serde_json::to_vec(event).map_or(0, |bytes| bytes.len()) } else { 0 };
    let state = &mut states[0];
    match &mut state.open {
        Some(open) => {
            if ts < open.event.ts.unwrap_or(Millis::MIN) {
                return Debounced::Ignored { run_id: open.run_id.clone() };
            }
            open.event = event.clone();
            if rule.all_events {
                open.events.push(event.clone());
                open.bytes = open.bytes.saturating_add(size);
            }
            open.count = open.count.saturating_add(1);
            let quiet = now.saturating_add(rule.period);
            open.fire_at = open.deadline.map_or(quiet, |deadline| quiet.min(deadline));
            Debounced::Extended {
                run_id: open.run_id.clone(),
                fire_at: open.fire_at,
                full: rule.all_events && open.full(),
            }
        }
        None => {
            let deadline = rule.timeout.map(|timeout| now.saturating_add(timeout));
            let quiet = now.saturating_add(rule.period);
            let fire_at = deadline.map_or(quiet, |deadline| quiet.min(deadline));
            state.open = Some(Window {
                run_id: placeholder.clone(),
                event: event.clone(),
                events: if rule.all_events { vec![event.clone()] } else { Vec::new() },
                count: 1,
                fire_at,
                deadline,
                bytes: size,
            });
            Debounced::Opened { run_id: placeholder.clone(), fire_at }
        }
    }
}

/// The run a window fires: its id derives from the placeholder's, so firing twice starts one.
pub fn fired_run(placeholder: &RunId, function_id: &str) -> RunId {
    RunId::for_event(function_id, &format!("debounce:{placeholder}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, ts: Millis) -> EventPayload {
        EventPayload { id: Some(id.into()), ts: Some(ts), ..EventPayload::new("app/e", json!({})) }
    }

    fn push_at(state: &DebounceState, id: &str, at: Millis, rule: WindowRule) -> (DebounceState, Debounced) {
        let change = DebounceChange::Push {
            event: event(id, at),
            rule,
            placeholder: RunId::new(format!("p-{id}")),
            limiter: None,
        };
        let (next, outcome) = apply(&change, std::slice::from_ref(state), at);
        (next.into_iter().next().unwrap_or_default(), outcome)
    }

    const RULE: WindowRule = WindowRule { period: 5_000, timeout: None, all_events: false };

    #[test]
    fn each_event_restarts_the_quiet_period_up_to_the_timeout() {
        let rule = WindowRule { timeout: Some(10_000), ..RULE };
        let (state, opened) = push_at(&DebounceState::default(), "e0", 0, rule);
        assert_eq!(opened, Debounced::Opened { run_id: RunId::new("p-e0"), fire_at: 5_000 });
        let (state, _) = push_at(&state, "e3", 3_000, rule);
        let (state, _) = push_at(&state, "e6", 6_000, rule);
        let (state, extended) = push_at(&state, "e9", 9_000, rule);
        assert_eq!(extended, Debounced::Extended { run_id: RunId::new("p-e0"), fire_at: 10_000, full: false });
        let open = state.open.clone().unwrap();
        assert_eq!((open.event.id.as_deref(), open.count, open.events.len()), (Some("e9"), 4, 0));
        let take = DebounceChange::Take { run_id: RunId::new("p-e0") };
        let (_, early) = apply(&take, std::slice::from_ref(&state), 9_999);
        assert_eq!(early, Debounced::NotYet { fire_at: 10_000, count: 4 });
        let (taken, due) = apply(&take, std::slice::from_ref(&state), 10_000);
        assert_eq!(due, Debounced::Due(open.clone()));
        // Taken again (a crash before its run started): the same window.
        let (_, again) = apply(&take, &taken, 10_500);
        assert_eq!(again, Debounced::Due(open));
        // Meanwhile a new event opens a new window; finishing forgets only the old one.
        let (state, reopened) = push_at(&taken[0], "e12", 12_000, rule);
        assert_eq!(reopened, Debounced::Opened { run_id: RunId::new("p-e12"), fire_at: 17_000 });
        let (finished, _) = apply(&DebounceChange::Finish { run_id: RunId::new("p-e0") }, &[state], 12_000);
        assert!(finished[0].closed.is_empty() && finished[0].open.is_some());
    }

    #[test]
    fn out_of_order_and_redelivered_events_change_nothing() {
        let (state, _) = push_at(&DebounceState::default(), "e1", 10_000, RULE);
        let older = DebounceChange::Push {
            event: event("e2", 5_000),
            rule: RULE,
            placeholder: RunId::new("p-e2"),
            limiter: None,
        };
        let (next, ignored) = apply(&older, std::slice::from_ref(&state), 12_000);
        assert_eq!((ignored, &next[0]), (Debounced::Ignored { run_id: RunId::new("p-e1") }, &state));
        let (next, again) = push_at(&state, "e1", 10_000, RULE);
        assert_eq!((again, next), (Debounced::Opened { run_id: RunId::new("p-e1"), fire_at: 15_000 }, state));
    }

    #[test]
    fn the_rate_limit_is_spent_per_new_event_only() {
        let limiter = Gcra::rate_limit(1, 3_600_000);
        let push = |id: &str, placeholder: &str| DebounceChange::Push {
            event: event(id, 0),
            rule: RULE,
            placeholder: RunId::new(placeholder),
            limiter: Some(limiter),
        };
        let empty = [DebounceState::default(), DebounceState::default()];
        let (state, opened) = apply(&push("a", "p-a"), &empty, 0);
        assert!(matches!(opened, Debounced::Opened { .. }));
        let (_, redelivered) = apply(&push("a", "p-a"), &state, 1_000);
        assert!(matches!(redelivered, Debounced::Opened { .. }), "a duplicate spends nothing");
        let (unchanged, limited) = apply(&push("b", "p-b"), &state, 2_000);
        assert_eq!((limited, &unchanged), (Debounced::Limited, &state.to_vec()));
    }

    #[test]
    fn an_all_events_window_keeps_every_event_and_fires_when_full() {
        let rule = WindowRule { all_events: true, ..RULE };
        let mut state = DebounceState::default();
        let mut last = None;
        for n in 0..MAX_WINDOW_EVENTS {
            let (next, outcome) = push_at(&state, &format!("e{n}"), 0, rule);
            state = next;
            last = Some(outcome);
        }
        assert_eq!(state.open.as_ref().map(|open| open.events.len()), Some(MAX_WINDOW_EVENTS));
        assert!(matches!(last, Some(Debounced::Extended { full: true, .. })));
        let take = DebounceChange::Take { run_id: RunId::new("p-e0") };
        assert!(matches!(apply(&take, &[state], 1).1, Debounced::Due(_)), "a full window is due at once");
    }
}
