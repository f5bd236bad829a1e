//! Throttle queues (flow-control reference, section 4.2): per key, a GCRA limiter's `tat` and the
//! runs waiting for a start, oldest first by score. A run over the limit is queued, never
//! dropped, and told when its turn comes (`at`), so its wake-up lands on the exact admission
//! time: `limit 2 per 10s` with five at once starts them at 0, 0, 5, 10 and 15 s.

use super::Gcra;
use super::slots::ahead;
use crate::id::RunId;
use crate::record::Millis;
use serde::{Deserialize, Serialize};

/// A throttle key as a store keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThrottleState {
    /// The limiter's theoretical arrival time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tat: Option<Millis>,
    /// Runs waiting to start, by score, then in the order they came.
    #[serde(default)]
    pub queue: Vec<(Millis, String)>,
}

/// What [`throttle`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttled {
    /// The run may start now.
    Admitted,
    /// The run waits: `position` runs are ahead of it, and its turn comes at `at`.
    Queued {
        /// Runs ahead of it.
        position: usize,
        /// When it may start, if nothing changes meanwhile.
        at: Millis,
    },
}

/// Decides whether `run` (queue score `score`) may start at `now` under `limiter`: admitted
/// when no run is queued ahead of it and the limiter admits an arrival now (which moves `tat`);
/// otherwise queued (once), with the time its turn comes.
pub fn throttle(
    limiter: Gcra,
    state: &ThrottleState,
    run: &RunId,
    score: Millis,
    now: Millis,
) -> (ThrottleState, Throttled) {
    let mut next = state.clone();
    let ahead = ahead(&next.queue, run.as_str(), score);
    if ahead == 0
        && let Some(tat) = limiter.admit(next.tat, now)
    {
        next.tat = Some(tat);
        next.queue.retain(|(_, queued)| queued != run.as_str());
        return (next, Throttled::Admitted);
    }
    if !next.queue.iter().any(|(_, queued)| queued == run.as_str()) {
        next.queue.insert(ahead, (score, run.to_string()));
    }
    let position = ahead;
    let first = next.tat.map_or(now, |tat| limiter.next_admission(tat)).max(now);
    let steps = Millis::try_from(position).unwrap_or(Millis::MAX);
    (next, Throttled::Queued { position, at: first.saturating_add(limiter.interval.saturating_mul(steps)) })
}

/// `run` leaves the queue (it ended while waiting).
pub fn leave(state: &ThrottleState, run: &RunId) -> ThrottleState {
    let mut next = state.clone();
    next.queue.retain(|(_, queued)| queued != run.as_str());
    next
}
