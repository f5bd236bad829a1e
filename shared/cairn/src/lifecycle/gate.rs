//! Before a run's code executes: its timeouts, its throttle turn and a slot of each of its
//! concurrency keys, decided in Inngest's order (flow-control reference, 4.10, 4.5 and 4.3).
//! Every driver asks these questions here and acts on the answers its own way: the Runner
//! releases its lease and arms its timer, the dev server's executor suspends the app's run.

use crate::flow::{Acquired, FlowControl, Slot, Throttled};
use crate::record::{Millis, Queued, RunMeta, StepRecord};
use crate::store::{RunStore, StoreError};

/// When a queued run tries for a slot again if no release woke it (the reconciler drives it).
pub const QUEUE_RECHECK: Millis = 60_000;

/// When the run's first step started (`None`: none has): where `timeouts.finish` counts from.
pub fn first_started(steps: &[StepRecord]) -> Option<Millis> {
    steps.iter().map(|step| step.started_at).min()
}

/// Why `timeouts.start` cancels the run, if it does: no step started (`first_started`), on
/// the first attempt, by `created_at + start`.
pub fn start_overdue(flow: &FlowControl, meta: &RunMeta, first_started: Option<Millis>, now: Millis) -> Option<String> {
    let start = flow.start_timeout()?;
    (first_started.is_none() && meta.attempt == 0 && now >= meta.created_at.saturating_add(start))
        .then(|| format!("timeouts.start: not started {}s after it was created", start / 1000))
}

/// When `timeouts.finish` ends the run: that long after its first step started (or `now`, the
/// first step starting now).
pub fn finish_at(flow: &FlowControl, first_started: Option<Millis>, now: Millis) -> Option<Millis> {
    flow.finish_timeout().map(|finish| first_started.unwrap_or(now).saturating_add(finish))
}

/// Why `timeouts.finish` cancels a run that passed its [`finish_at`].
pub fn finish_reason(flow: &FlowControl) -> String {
    let finish = flow.finish_timeout().unwrap_or(0) / 1000;
    format!("timeouts.finish: not finished {finish}s after its first step started")
}

/// A run's turn at a gate.
#[derive(Clone, Debug, PartialEq)]
pub enum Turn<T> {
    /// The gate does not apply (no such option, or the run passed it before).
    Open,
    /// Through: what the run now holds (nothing for a throttle, the slots for concurrency).
    Passed(T),
    /// Not yet: the run waits `queued` (the head says behind what) and is woken by `wake_at`.
    Queued {
        /// Why it waits, as the dashboard shows it.
        queued: Queued,
        /// When it is driven again: its throttle turn, or a concurrency recheck should no
        /// release wake it first.
        wake_at: Millis,
    },
}

/// The throttle (once per run, before its first step): the key's limiter admits the run, or
/// puts it in the key's queue until its turn. `passed`: the run went through before (its
/// head's flag, or earlier in this drive).
///
/// # Errors
/// The store failed.
pub async fn throttle_turn<S: RunStore>(
    store: &S,
    function_id: &str,
    flow: &FlowControl,
    meta: &RunMeta,
    first_started: Option<Millis>,
    passed: bool,
    now: Millis,
) -> Result<Turn<()>, StoreError> {
    if first_started.is_some() || meta.attempt > 0 || passed || meta.throttle_passed {
        return Ok(Turn::Open);
    }
    let Some(throttle) = flow.throttle_key(function_id, &meta.event, meta.created_at) else {
        return Ok(Turn::Open);
    };
    Ok(match store.throttle_start(&meta.run_id, &throttle.key, throttle.limiter, throttle.score, now).await? {
        Throttled::Admitted => Turn::Passed(()),
        Throttled::Queued { position, at } => Turn::Queued {
            queued: Queued { option: "throttle".into(), key: throttle.text, position, until: Some(at), events: None },
            wake_at: at,
        },
    })
}

/// A slot of every concurrency key, held until `hold_until` (renewed while the run executes),
/// or the run's place in the first full key's queue.
///
/// # Errors
/// The store failed.
pub async fn concurrency_turn<S: RunStore>(
    store: &S,
    function_id: &str,
    flow: &FlowControl,
    meta: &RunMeta,
    now: Millis,
    hold_until: Millis,
) -> Result<Turn<Vec<Slot>>, StoreError> {
    let slots = flow.slots(function_id, &meta.event, meta.created_at);
    if slots.is_empty() {
        return Ok(Turn::Open);
    }
    let plain: Vec<Slot> = slots.iter().map(|(slot, _)| slot.clone()).collect();
    Ok(match store.acquire_slots(&meta.run_id, &plain, now, hold_until).await? {
        Acquired::Granted => Turn::Passed(plain),
        Acquired::Queued { slot, position } => Turn::Queued {
            queued: Queued {
                option: "concurrency".into(),
                key: slots[slot].1.clone(),
                position,
                until: None,
                events: None,
            },
            wake_at: now.saturating_add(QUEUE_RECHECK),
        },
    })
}
