//! Event windows, shared by debounce (flow-control reference, section 4.5) and event batches
//! (section 4.6): events for a key gather in one window until it fires, and one run starts for
//! the window.
//!
//! - **Debounce**: each event restarts the quiet `period` (capped by `timeout` from the first);
//!   the run starts with the last event. An event older than the stored one is ignored.
//! - **Batch**: the window fires `timeout` after its first event, or at once when it holds
//!   `max_size` events (or [`MAX_WINDOW_BYTES`] of them); the run starts with every event, the
//!   first as its trigger.
//!
//! A window is one small item per key: the open window and any being fired, each naming its
//! placeholder run (the run the window's first event left, which the timer or the reconciler
//! wakes at the firing time). The events a run receives in full (a batch; a debounce with
//! `all_events`) are kept one item each under the placeholder, written with the window in one
//! atomic write, once per event id. [`apply`] is the one rule every store applies.

use super::Gcra;
use crate::event::EventPayload;
use crate::id::RunId;
use crate::record::Millis;
use serde::{Deserialize, Serialize};

/// A window whose kept events reach this many bytes (JSON) fires at once (Inngest's batch cap
/// is 10 MiB; a run reads its events into memory on every invocation).
pub const MAX_WINDOW_BYTES: usize = 10 * 1024 * 1024;

/// How a window gathers and when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowRule {
    /// Debounce: fire once `period` passed with no event, at most `timeout` after the first.
    Debounce {
        /// The quiet period, ms.
        period: Millis,
        /// The cap on the total delay from the first event, ms.
        timeout: Option<Millis>,
        /// Whether every event is kept for the run (Cairn's `all_events`).
        keep_events: bool,
    },
    /// Batch: fire `timeout` after the first event, or when `max_size` events are in.
    Batch {
        /// Events per run.
        max_size: u32,
        /// From the first event, ms.
        timeout: Millis,
    },
}

impl WindowRule {
    /// Whether the run receives every event of the window (kept one item each).
    pub fn keeps_events(self) -> bool {
        match self {
            WindowRule::Debounce { keep_events, .. } => keep_events,
            WindowRule::Batch { .. } => true,
        }
    }

    /// What the dashboard calls the option: `debounce` or `batch`.
    pub fn option(self) -> &'static str {
        match self {
            WindowRule::Debounce { .. } => "debounce",
            WindowRule::Batch { .. } => "batch",
        }
    }
}

/// One open (or firing) window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// The placeholder run the window's first event left.
    pub run_id: RunId,
    /// The event the run starts with: a debounce's last, a batch's first.
    pub event: EventPayload,
    /// The id of the last event taken (a redelivery of it changes nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_id: Option<String>,
    /// How many events the window took.
    pub count: u32,
    /// When the window fires if nothing else happens.
    pub fire_at: Millis,
    /// A debounce's timeout deadline, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Millis>,
    /// Bytes of the kept events.
    #[serde(default)]
    pub bytes: usize,
    /// Full: it fires at once, and the next event opens a new window.
    #[serde(default)]
    pub full: bool,
}

/// A window item as a store keeps it: the key's open window, windows being fired, and, when
/// the item is a debounced function's rate-limit bucket instead, the bucket's `tat`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowState {
    /// The window events join.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open: Option<Window>,
    /// Windows closed (taken for firing, or full) whose run is not yet confirmed started.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub closed: Vec<Window>,
    /// A rate-limit bucket's theoretical arrival time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tat: Option<Millis>,
    /// The placeholders of the last windows fired ([`FIRED_KEPT`]): a redelivery of the event
    /// that opened one is a duplicate, not a new window under a placeholder that has ended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fired: Vec<RunId>,
}

/// How many fired placeholders a window item remembers.
pub const FIRED_KEPT: usize = 32;

/// A change to a window, applied atomically by a store ([`apply`]).
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // Short-lived, built for one store call.
pub enum WindowChange {
    /// An event arrives: spend the rate limit's `limiter` on the second key (if any), then
    /// open a window with `placeholder` or join the open one.
    Push {
        /// The event.
        event: EventPayload,
        /// Its size, when the window keeps events.
        size: usize,
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

impl WindowChange {
    /// For a `Push` whose rule keeps events: the event to keep, and the placeholder of the
    /// window it would open (for [`redelivered`]).
    pub fn kept(&self) -> Option<(&EventPayload, &RunId)> {
        match self {
            WindowChange::Push { event, rule, placeholder, .. } if rule.keeps_events() => Some((event, placeholder)),
            _ => None,
        }
    }
}

/// What [`apply`] decided.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // Short-lived, the answer of one store call.
pub enum Windowed {
    /// The event opened a window (or is a redelivery of the event that did): its placeholder
    /// `run_id` fires at `fire_at`.
    Opened {
        /// The placeholder.
        run_id: RunId,
        /// When it fires if nothing else comes.
        fire_at: Millis,
        /// It is full already: fire it now.
        full: bool,
    },
    /// The event joined the open window of placeholder `run_id`.
    Joined {
        /// The placeholder.
        run_id: RunId,
        /// The window's firing time.
        fire_at: Millis,
        /// The window is full: fire it now.
        full: bool,
    },
    /// Nothing changed: the event was already in the window, or is older than a debounce's
    /// last event (Inngest ignores an out-of-order event).
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

impl Windowed {
    /// The placeholder whose window took a pushed event, if one did (where its kept copy goes).
    pub fn taken_by(&self) -> Option<&RunId> {
        match self {
            Windowed::Opened { run_id, .. } | Windowed::Joined { run_id, .. } => Some(run_id),
            _ => None,
        }
    }
}

/// Applies `change` at `now` to the items under its keys (the window's, then the rate limit's
/// bucket for a `Push` with a limiter): the items to write, and what happened. Every store
/// applies this one rule inside its own atomic write; a store that keeps the pushed event
/// writes it under [`Windowed::taken_by`] in the same write, and if that event is already kept
/// there, writes nothing and answers [`redelivered`] instead.
pub fn apply(change: &WindowChange, states: &[WindowState], now: Millis) -> (Vec<WindowState>, Windowed) {
    let mut next = states.to_vec();
    let outcome = match change {
        WindowChange::Push { event, size, rule, placeholder, limiter } => {
            push(&mut next, event, *size, *rule, placeholder, *limiter, now)
        }
        WindowChange::Take { run_id } => take(&mut next[0], run_id, now),
        WindowChange::Finish { run_id } | WindowChange::Drop { run_id } => {
            let state = &mut next[0];
            state.closed.retain(|closed| &closed.run_id != run_id);
            if !state.fired.contains(run_id) {
                state.fired.push(run_id.clone());
                let excess = state.fired.len().saturating_sub(FIRED_KEPT);
                state.fired.drain(..excess);
            }
            if matches!(change, WindowChange::Drop { .. })
                && state.open.as_ref().is_some_and(|open| &open.run_id == run_id)
            {
                state.open = None;
            }
            Windowed::Gone
        }
    };
    (next, outcome)
}

/// The answer to a pushed event a store found already kept under a window: as its first
/// delivery was answered (a redelivery of a window's first event re-opens it idempotently).
pub fn redelivered(state: &WindowState, placeholder: &RunId) -> Windowed {
    match state.open.iter().chain(&state.closed).find(|window| &window.run_id == placeholder) {
        Some(window) => Windowed::Opened { run_id: window.run_id.clone(), fire_at: window.fire_at, full: window.full },
        None => Windowed::Ignored {
            run_id: state.open.as_ref().map_or_else(|| placeholder.clone(), |open| open.run_id.clone()),
        },
    }
}

fn take(state: &mut WindowState, run_id: &RunId, now: Millis) -> Windowed {
    match state.open.take() {
        Some(open) if &open.run_id == run_id && open.fire_at > now && !open.full => {
            let outcome = Windowed::NotYet { fire_at: open.fire_at, count: open.count };
            state.open = Some(open);
            outcome
        }
        Some(open) if &open.run_id == run_id => {
            state.closed.push(open.clone());
            Windowed::Due(open)
        }
        other => {
            state.open = other;
            match state.closed.iter().find(|closed| &closed.run_id == run_id) {
                // Full, or taken before and its run perhaps not started (a crash): due.
                Some(closed) => Windowed::Due(closed.clone()),
                None => Windowed::Gone,
            }
        }
    }
}

fn push(
    states: &mut [WindowState],
    event: &EventPayload,
    size: usize,
    rule: WindowRule,
    placeholder: &RunId,
    limiter: Option<Gcra>,
    now: Millis,
) -> Windowed {
    let seen = |window: &Window| event.id.is_some() && (window.last_id == event.id || window.event.id == event.id);
    if states[0].open.iter().chain(&states[0].closed).any(seen) {
        return redelivered(&states[0], placeholder);
    }
    // The event opened a window that has fired (or was dropped) since: a redelivery.
    if states[0].fired.contains(placeholder) {
        return Windowed::Ignored { run_id: placeholder.clone() };
    }
    if let (Some(limiter), Some(bucket)) = (limiter, states.get_mut(1)) {
        match limiter.admit(bucket.tat, now) {
            Some(tat) => bucket.tat = Some(tat),
            None => return Windowed::Limited,
        }
    }
    let size = if rule.keeps_events() { size } else { 0 };
    let state = &mut states[0];
    // A full window waits to be fired; the event opens the next one.
    if state.open.as_ref().is_some_and(|open| open.full)
        && let Some(full) = state.open.take()
    {
        state.closed.push(full);
    }
    let ts = event.ts.unwrap_or(now);
    match (&mut state.open, rule) {
        (Some(open), WindowRule::Debounce { period, keep_events, .. }) => {
            if ts < open.event.ts.unwrap_or(Millis::MIN) {
                return Windowed::Ignored { run_id: open.run_id.clone() };
            }
            open.event = event.clone();
            open.last_id.clone_from(&event.id);
            open.count = open.count.saturating_add(1);
            let quiet = now.saturating_add(period);
            open.fire_at = open.deadline.map_or(quiet, |deadline| quiet.min(deadline));
            if keep_events {
                open.bytes = open.bytes.saturating_add(size);
                open.full = open.bytes >= MAX_WINDOW_BYTES;
            }
            Windowed::Joined { run_id: open.run_id.clone(), fire_at: open.fire_at, full: open.full }
        }
        (Some(open), WindowRule::Batch { max_size, .. }) => {
            open.last_id.clone_from(&event.id);
            open.count = open.count.saturating_add(1);
            open.bytes = open.bytes.saturating_add(size);
            open.full = open.count >= max_size || open.bytes >= MAX_WINDOW_BYTES;
            Windowed::Joined { run_id: open.run_id.clone(), fire_at: open.fire_at, full: open.full }
        }
        (None, rule) => {
            let (fire_at, deadline) = match rule {
                WindowRule::Debounce { period, timeout, .. } => {
                    let deadline = timeout.map(|timeout| now.saturating_add(timeout));
                    let quiet = now.saturating_add(period);
                    (deadline.map_or(quiet, |deadline| quiet.min(deadline)), deadline)
                }
                WindowRule::Batch { timeout, .. } => (now.saturating_add(timeout), None),
            };
            let full = match rule {
                WindowRule::Debounce { .. } => size >= MAX_WINDOW_BYTES,
                WindowRule::Batch { max_size, .. } => max_size <= 1 || size >= MAX_WINDOW_BYTES,
            };
            state.open = Some(Window {
                run_id: placeholder.clone(),
                event: event.clone(),
                last_id: event.id.clone(),
                count: 1,
                fire_at,
                deadline,
                bytes: size,
                full,
            });
            Windowed::Opened { run_id: placeholder.clone(), fire_at, full }
        }
    }
}

/// The run a window fires: its id derives from the placeholder's, so firing twice starts one.
pub fn fired_run(placeholder: &RunId, function_id: &str) -> RunId {
    RunId::for_event(function_id, &format!("window:{placeholder}"))
}

/// Where `event`'s window lives for `function_id` under `option` (`debounce`, `batch`) with the
/// CEL `key`, and the key's text for the dashboard (none without a key). A key that fails to
/// evaluate is Inngest's shared `<invalid>` window for a debounce; for a batch it is an error
/// (Inngest refuses the append), returned with the evaluation's message.
pub(crate) fn window_key(
    option: &str,
    function_id: &str,
    key: Option<&super::Expr>,
    event: &EventPayload,
) -> Result<(String, Option<String>), String> {
    let value = match key {
        None => None,
        Some(key) => {
            let event = serde_json::to_value(event).unwrap_or(serde_json::Value::Null);
            match key.compiled.value(&event) {
                Ok(value) => Some(value.key_text().to_string()),
                Err(_) if option == "debounce" => Some("<invalid>".to_string()),
                Err(error) => return Err(error.to_string()),
            }
        }
    };
    let text = value.as_deref().unwrap_or("");
    let store_key = super::store_key(option, function_id, key.map(super::Expr::source), text);
    Ok((store_key, value.map(|value| super::truncated(&value))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(id: &str, ts: Millis) -> EventPayload {
        EventPayload { id: Some(id.into()), ts: Some(ts), ..EventPayload::new("app/e", json!({})) }
    }

    fn push_at(state: &WindowState, id: &str, at: Millis, rule: WindowRule) -> (WindowState, Windowed) {
        let change = WindowChange::Push {
            event: event(id, at),
            size: 100,
            rule,
            placeholder: RunId::new(format!("p-{id}")),
            limiter: None,
        };
        let (next, outcome) = apply(&change, std::slice::from_ref(state), at);
        (next.into_iter().next().unwrap_or_default(), outcome)
    }

    const DEBOUNCE: WindowRule = WindowRule::Debounce { period: 5_000, timeout: None, keep_events: false };

    #[test]
    fn each_event_restarts_a_debounce_up_to_its_timeout() {
        let rule = WindowRule::Debounce { period: 5_000, timeout: Some(10_000), keep_events: false };
        let (state, opened) = push_at(&WindowState::default(), "e0", 0, rule);
        assert_eq!(opened, Windowed::Opened { run_id: RunId::new("p-e0"), fire_at: 5_000, full: false });
        let (state, _) = push_at(&state, "e3", 3_000, rule);
        let (state, _) = push_at(&state, "e6", 6_000, rule);
        let (state, joined) = push_at(&state, "e9", 9_000, rule);
        assert_eq!(joined, Windowed::Joined { run_id: RunId::new("p-e0"), fire_at: 10_000, full: false });
        let open = state.open.clone().unwrap();
        assert_eq!((open.event.id.as_deref(), open.count, open.bytes), (Some("e9"), 4, 0));
        let take = WindowChange::Take { run_id: RunId::new("p-e0") };
        let (_, early) = apply(&take, std::slice::from_ref(&state), 9_999);
        assert_eq!(early, Windowed::NotYet { fire_at: 10_000, count: 4 });
        let (taken, due) = apply(&take, std::slice::from_ref(&state), 10_000);
        assert_eq!(due, Windowed::Due(open.clone()));
        // Taken again (a crash before its run started): the same window.
        let (_, again) = apply(&take, &taken, 10_500);
        assert_eq!(again, Windowed::Due(open));
        // Meanwhile a new event opens a new window; finishing forgets only the old one.
        let (state, reopened) = push_at(&taken[0], "e12", 12_000, rule);
        assert_eq!(reopened, Windowed::Opened { run_id: RunId::new("p-e12"), fire_at: 17_000, full: false });
        let (finished, _) = apply(&WindowChange::Finish { run_id: RunId::new("p-e0") }, &[state], 12_000);
        assert!(finished[0].closed.is_empty() && finished[0].open.is_some());
    }

    #[test]
    fn the_event_that_opened_a_fired_window_is_a_duplicate_when_redelivered() {
        let (state, _) = push_at(&WindowState::default(), "e1", 0, DEBOUNCE);
        let take = WindowChange::Take { run_id: RunId::new("p-e1") };
        let (taken, _) = apply(&take, &[state], 5_000);
        let (finished, _) = apply(&WindowChange::Finish { run_id: RunId::new("p-e1") }, &taken, 5_000);
        let (unchanged, again) = push_at(&finished[0], "e1", 6_000, DEBOUNCE);
        assert_eq!((again, unchanged.open), (Windowed::Ignored { run_id: RunId::new("p-e1") }, None));
    }

    #[test]
    fn out_of_order_and_redelivered_events_change_nothing() {
        let (state, _) = push_at(&WindowState::default(), "e1", 10_000, DEBOUNCE);
        let older = WindowChange::Push {
            event: event("e2", 5_000),
            size: 0,
            rule: DEBOUNCE,
            placeholder: RunId::new("p-e2"),
            limiter: None,
        };
        let (next, ignored) = apply(&older, std::slice::from_ref(&state), 12_000);
        assert_eq!((ignored, &next[0]), (Windowed::Ignored { run_id: RunId::new("p-e1") }, &state));
        let (next, again) = push_at(&state, "e1", 10_000, DEBOUNCE);
        assert_eq!(
            (again, next),
            (Windowed::Opened { run_id: RunId::new("p-e1"), fire_at: 15_000, full: false }, state)
        );
    }

    #[test]
    fn the_rate_limit_is_spent_per_new_event_only() {
        let limiter = Gcra::rate_limit(1, 3_600_000);
        let push = |id: &str, placeholder: &str| WindowChange::Push {
            event: event(id, 0),
            size: 0,
            rule: DEBOUNCE,
            placeholder: RunId::new(placeholder),
            limiter: Some(limiter),
        };
        let empty = [WindowState::default(), WindowState::default()];
        let (state, opened) = apply(&push("a", "p-a"), &empty, 0);
        assert!(matches!(opened, Windowed::Opened { .. }));
        let (_, redelivered) = apply(&push("a", "p-a"), &state, 1_000);
        assert!(matches!(redelivered, Windowed::Opened { .. }), "a duplicate spends nothing");
        let (unchanged, limited) = apply(&push("b", "p-b"), &state, 2_000);
        assert_eq!((limited, &unchanged), (Windowed::Limited, &state.to_vec()));
    }

    #[test]
    fn a_batch_fires_when_full_or_at_its_timeout_from_the_first_event() {
        let rule = WindowRule::Batch { max_size: 3, timeout: 5_000 };
        let (state, opened) = push_at(&WindowState::default(), "e1", 0, rule);
        assert_eq!(opened, Windowed::Opened { run_id: RunId::new("p-e1"), fire_at: 5_000, full: false });
        let (state, _) = push_at(&state, "e2", 4_000, rule);
        let (state, joined) = push_at(&state, "e3", 4_500, rule);
        assert_eq!(joined, Windowed::Joined { run_id: RunId::new("p-e1"), fire_at: 5_000, full: true });
        let open = state.open.clone().unwrap();
        assert_eq!(
            (open.event.id.as_deref(), open.count, open.bytes),
            (Some("e1"), 3, 300),
            "the first is the trigger"
        );
        // The next event opens the next batch; the full one is due at once.
        let (state, next) = push_at(&state, "e4", 4_600, rule);
        assert_eq!(next, Windowed::Opened { run_id: RunId::new("p-e4"), fire_at: 9_600, full: false });
        let take = WindowChange::Take { run_id: RunId::new("p-e1") };
        assert_eq!(apply(&take, std::slice::from_ref(&state), 4_600).1, Windowed::Due(open));
        let take = WindowChange::Take { run_id: RunId::new("p-e4") };
        assert_eq!(apply(&take, &[state], 4_600).1, Windowed::NotYet { fire_at: 9_600, count: 1 });
    }

    #[test]
    fn a_window_of_kept_events_fires_at_its_byte_cap() {
        let rule = WindowRule::Debounce { period: 5_000, timeout: None, keep_events: true };
        let change = |id: &str, size| WindowChange::Push {
            event: event(id, 0),
            size,
            rule,
            placeholder: RunId::new(format!("p-{id}")),
            limiter: None,
        };
        let (state, _) = apply(&change("a", MAX_WINDOW_BYTES - 10), &[WindowState::default()], 0);
        let (_, joined) = apply(&change("b", 10), &state, 1);
        assert_eq!(joined, Windowed::Joined { run_id: RunId::new("p-a"), fire_at: 5_001, full: true });
        assert_eq!(
            redelivered(&state[0], &RunId::new("p-a")),
            Windowed::Opened { run_id: RunId::new("p-a"), fire_at: 5_000, full: false }
        );
        assert_eq!(redelivered(&state[0], &RunId::new("p-x")), Windowed::Ignored { run_id: RunId::new("p-a") });
    }
}
