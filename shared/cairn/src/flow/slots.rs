//! Concurrency slots (flow-control reference, section 3.5): per key, the runs holding a slot
//! while their code executes and a FIFO queue of the runs waiting for one, ordered by score
//! (creation time minus priority). One item per key holds both, so every store decides with
//! this one rule inside its own atomic, version-checked write.

use crate::id::RunId;
use crate::record::Millis;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One concurrency limit a run needs a slot of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// The key's store key.
    pub key: String,
    /// The limit, as this function sets it (functions sharing a key compare the shared count
    /// with their own limit, as in Inngest).
    pub limit: u32,
    /// The run's place in the queue: its creation time minus its priority, in milliseconds.
    pub score: Millis,
}

/// A key's holders and queue, as a store keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotState {
    /// Runs holding a slot, with when their hold lapses if their invocation dies.
    #[serde(default)]
    pub holders: BTreeMap<String, Millis>,
    /// Runs waiting, by score, then in the order they came (equal scores: first come, first
    /// served).
    #[serde(default)]
    pub queue: Vec<(Millis, String)>,
}

/// How many queued runs are ahead of `run` (score `score`): its place if it is queued, else
/// every run whose score is not later than its own (it would queue behind them).
pub(crate) fn ahead(queue: &[(Millis, String)], run: &str, score: Millis) -> usize {
    queue
        .iter()
        .position(|(_, queued)| queued == run)
        .unwrap_or_else(|| queue.iter().filter(|(queued_score, _)| *queued_score <= score).count())
}

/// What [`acquire`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    /// The run holds a slot of every key.
    Granted,
    /// The run waits in the queue of the key at `slot`, at `position` (0: next).
    Queued {
        /// Which slot refused.
        slot: usize,
        /// Its place in that key's queue.
        position: usize,
    },
}

impl SlotState {
    fn enqueue(&mut self, run: &str, score: Millis) -> usize {
        if !self.queue.iter().any(|(_, queued)| queued == run) {
            let at = ahead(&self.queue, run, score);
            self.queue.insert(at, (score, run.to_string()));
        }
        self.queue.iter().position(|(_, queued)| queued == run).unwrap_or(0)
    }

    fn forget(&mut self, run: &str) {
        self.holders.remove(run);
        self.queue.retain(|(_, queued)| queued != run);
    }
}

/// Decides whether `run` gets a slot of every key in `slots` (states as stored, one per slot)
/// at `now`, held until `hold_until`: the states to write, and the decision. A run gets a slot
/// when the key has room for it counting only live holders (a hold whose invocation died lapses)
/// and no run queued ahead of it would be left waiting: queued runs start oldest first, and a
/// newcomer queues behind them. Refused by any key, the run holds none and waits in that key's
/// queue only.
pub fn acquire(
    slots: &[Slot],
    states: &[SlotState],
    run: &RunId,
    now: Millis,
    hold_until: Millis,
) -> (Vec<SlotState>, Acquired) {
    let run = run.as_str();
    let mut next: Vec<SlotState> = states.to_vec();
    next.resize(slots.len(), SlotState::default());
    for state in &mut next {
        state.holders.retain(|_, until| *until > now);
    }
    let refused = slots.iter().zip(&next).position(|(slot, state)| {
        if state.holders.contains_key(run) {
            return false;
        }
        let free = usize::try_from(slot.limit).unwrap_or(usize::MAX).saturating_sub(state.holders.len());
        free <= ahead(&state.queue, run, slot.score)
    });
    match refused {
        None => {
            for state in &mut next {
                state.queue.retain(|(_, queued)| queued != run);
                state.holders.insert(run.to_string(), hold_until);
            }
            (next, Acquired::Granted)
        }
        Some(index) => {
            for (at, state) in next.iter_mut().enumerate() {
                if at != index {
                    state.forget(run);
                }
            }
            next[index].holders.remove(run);
            let position = next[index].enqueue(run, slots[index].score);
            (next, Acquired::Queued { slot: index, position })
        }
    }
}

/// `run` gives its slots back: the states to write, and the queued runs now at the head with
/// room for them, to wake (they take their slots when they run).
pub fn release(slots: &[Slot], states: &[SlotState], run: &RunId, now: Millis) -> (Vec<SlotState>, Vec<RunId>) {
    let mut next: Vec<SlotState> = states.to_vec();
    next.resize(slots.len(), SlotState::default());
    let mut wake = Vec::new();
    for (slot, state) in slots.iter().zip(&mut next) {
        state.forget(run.as_str());
        state.holders.retain(|_, until| *until > now);
        let free = usize::try_from(slot.limit).unwrap_or(usize::MAX).saturating_sub(state.holders.len());
        for (_, queued) in state.queue.iter().take(free) {
            let queued = RunId::new(queued.clone());
            if !wake.contains(&queued) {
                wake.push(queued);
            }
        }
    }
    (next, wake)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// One thing that can happen to a key under chaos.
    #[derive(Debug, Clone)]
    enum Event {
        /// Run `n` (score `n`) tries for a slot; `dies` means its invocation crashes while
        /// holding it (it never releases; its hold lapses).
        Try { n: u8, dies: bool },
        /// The same try delivered again (a duplicate invocation).
        Again { n: u8 },
        /// A holder finishes and gives its slot back.
        Release { n: u8 },
        /// Time passes, in seconds.
        Wait { secs: u8 },
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            (0u8..12, prop::bool::weighted(0.15)).prop_map(|(n, dies)| Event::Try { n, dies }),
            (0u8..12).prop_map(|n| Event::Again { n }),
            (0u8..12).prop_map(|n| Event::Release { n }),
            (1u8..90).prop_map(|secs| Event::Wait { secs }),
        ]
    }

    proptest! {
        /// C16 on the decision every store applies: crashes (holds that lapse), duplicate
        /// tries and releases in any order never let more runs hold a key than its limit, never
        /// lose a queued run, keep the queue in score order without duplicates, and grant a
        /// queued run only when no run is queued ahead of it.
        #[test]
        fn chaos_never_breaks_the_limit_loses_a_run_or_jumps_the_queue(
            limit in 1u32..4,
            events in prop::collection::vec(event(), 1..120),
        ) {
            let slot = Slot { key: "k".into(), limit, score: 0 };
            let mut state = SlotState::default();
            let mut now: Millis = 0;
            let mut waiting: std::collections::BTreeSet<u8> = Default::default();
            let mut dead: std::collections::BTreeSet<u8> = Default::default();
            for event in events {
                let (run, dies) = match event {
                    Event::Wait { secs } => {
                        now += Millis::from(secs) * 1_000;
                        continue;
                    }
                    Event::Release { n } => {
                        if dead.contains(&n) {
                            continue; // a crashed holder never releases
                        }
                        let (next, wake) = release(std::slice::from_ref(&slot), std::slice::from_ref(&state), &RunId::new(n.to_string()), now);
                        state = next.into_iter().next().unwrap();
                        waiting.remove(&n);
                        // Woken runs are the queue's heads.
                        for (woken, (_, head)) in wake.iter().zip(&state.queue) {
                            prop_assert_eq!(woken.as_str(), head.as_str());
                        }
                        continue;
                    }
                    Event::Try { n, dies } => (n, dies),
                    Event::Again { n } => (n, false),
                };
                let id = RunId::new(run.to_string());
                let ahead = ahead(&state.queue, id.as_str(), Millis::from(run));
                let holds = state.holders.get(id.as_str()).is_some_and(|until| *until > now);
                let probe = Slot { score: Millis::from(run), ..slot.clone() };
                let (next, acquired) = acquire(&[probe], &[state.clone()], &id, now, now + 60_000);
                state = next.into_iter().next().unwrap();
                match acquired {
                    Acquired::Granted => {
                        // Granted (unless it already held a slot: a duplicate try) only with
                        // fewer runs queued ahead than there are slots.
                        prop_assert!(holds || ahead < usize::try_from(limit).unwrap());
                        waiting.remove(&run);
                        if dies {
                            dead.insert(run);
                        }
                    }
                    Acquired::Queued { .. } => {
                        waiting.insert(run);
                    }
                }
                let live = state.holders.values().filter(|until| **until > now).count();
                prop_assert!(live <= usize::try_from(limit).unwrap(), "{live} holders over {limit}");
                prop_assert!(state.queue.windows(2).all(|pair| pair[0].0 <= pair[1].0), "queue out of order");
                let distinct: std::collections::BTreeSet<&String> = state.queue.iter().map(|(_, queued)| queued).collect();
                prop_assert_eq!(distinct.len(), state.queue.len());
                for (_, queued) in &state.queue {
                    prop_assert!(!state.holders.contains_key(queued), "{queued} both holds and waits");
                }
                // Every run that waits is in the queue: none is lost.
                let queued: std::collections::BTreeSet<u8> =
                    state.queue.iter().map(|(_, queued)| queued.parse().unwrap()).collect();
                prop_assert_eq!(&queued, &waiting);
            }
        }
    }
}
