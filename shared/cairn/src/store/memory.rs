//! An in-process store: fast, for tests, benchmarks and `TestRun`.

use super::{Admission, Commit, CreateRun, RunQuery, RunStore, StoreError, effective_limit};
use crate::event::EventPayload;
use crate::flow::{
    Acquired, Claim, FlowItem, Gcra, Slot, SlotState, ThrottleState, Throttled, WindowChange, WindowState, Windowed,
    acquire, apply, decide, leave, redelivered, release, throttle,
};
use crate::id::{FastHash, RunId, StepId};
use crate::record::{Journal, Millis, RunMeta, StepRecord, Wait, WaitKey};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

/// Keeps everything in memory. Clones share the same data.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    runs: HashMap<RunId, StoredRun>,
    waits: BTreeMap<(String, RunId, StepId), Wait>,
    events: BTreeMap<(String, Millis, String), EventPayload>,
    flow: HashMap<String, FlowItem>,
    slots: HashMap<String, SlotState>,
    throttles: HashMap<String, ThrottleState>,
    windows: HashMap<String, WindowState>,
    /// Events kept under a window's placeholder, in order.
    window_events: HashMap<RunId, Vec<EventPayload>>,
}

#[derive(Debug)]
struct StoredRun {
    meta: RunMeta,
    /// Records in commit order (so, for most runs, position order) and their index by id: a
    /// commit and a load cost the same at step 10,000 as at step 1.
    steps: Vec<StepRecord>,
    by_id: HashMap<StepId, usize, FastHash>,
}

impl StoredRun {
    fn step(&self, id: &StepId) -> Option<&StepRecord> {
        self.by_id.get(id).map(|&index| &self.steps[index])
    }

    fn put(&mut self, record: &StepRecord) {
        match self.by_id.get(&record.id) {
            Some(&index) => self.steps[index] = record.clone(),
            None => {
                self.by_id.insert(record.id.clone(), self.steps.len());
                self.steps.push(record.clone());
            }
        }
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl RunStore for MemoryStore {
    async fn admit_run(&self, meta: RunMeta, claims: &[Claim], now: Millis) -> Result<Admission, StoreError> {
        let mut inner = self.lock();
        if let Some(existing) = inner.runs.get(&meta.run_id) {
            return Ok(Admission::Existing(existing.meta.clone()));
        }
        let stored: Vec<Option<FlowItem>> = claims.iter().map(|claim| inner.flow.get(claim.key()).cloned()).collect();
        let items = match decide(claims, &stored, &meta.run_id, now) {
            Ok(items) => items,
            Err((claim, holder)) => return Ok(Admission::Refused { claim, holder }),
        };
        for (claim, item) in claims.iter().zip(items) {
            inner.flow.insert(claim.key().to_string(), item);
        }
        let mut meta = meta;
        meta.version = 0;
        let run = StoredRun { meta: meta.clone(), steps: Vec::new(), by_id: HashMap::default() };
        inner.runs.insert(meta.run_id.clone(), run);
        Ok(Admission::Created(meta))
    }

    async fn acquire_slots(
        &self,
        run_id: &RunId,
        slots: &[Slot],
        now: Millis,
        hold_until: Millis,
    ) -> Result<Acquired, StoreError> {
        let mut inner = self.lock();
        let states: Vec<SlotState> =
            slots.iter().map(|slot| inner.slots.get(&slot.key).cloned().unwrap_or_default()).collect();
        let (next, acquired) = acquire(slots, &states, run_id, now, hold_until);
        for (slot, state) in slots.iter().zip(next) {
            inner.slots.insert(slot.key.clone(), state);
        }
        Ok(acquired)
    }

    async fn release_slots(&self, run_id: &RunId, slots: &[Slot], now: Millis) -> Result<Vec<RunId>, StoreError> {
        let mut inner = self.lock();
        let states: Vec<SlotState> =
            slots.iter().map(|slot| inner.slots.get(&slot.key).cloned().unwrap_or_default()).collect();
        let (next, wake) = release(slots, &states, run_id, now);
        for (slot, state) in slots.iter().zip(next) {
            inner.slots.insert(slot.key.clone(), state);
        }
        Ok(wake)
    }

    async fn throttle_start(
        &self,
        run_id: &RunId,
        key: &str,
        limiter: Gcra,
        score: Millis,
        now: Millis,
    ) -> Result<Throttled, StoreError> {
        let mut inner = self.lock();
        let state = inner.throttles.get(key).cloned().unwrap_or_default();
        let (next, throttled) = throttle(limiter, &state, run_id, score, now);
        inner.throttles.insert(key.to_string(), next);
        Ok(throttled)
    }

    async fn window(&self, keys: &[&str], change: &WindowChange, now: Millis) -> Result<Windowed, StoreError> {
        let mut inner = self.lock();
        let states: Vec<WindowState> =
            keys.iter().map(|key| inner.windows.get(*key).cloned().unwrap_or_default()).collect();
        let (next, outcome) = apply(change, &states, now);
        if let (Some((event, placeholder)), Some(taken_by)) = (change.kept(), outcome.taken_by()) {
            let kept = inner.window_events.entry(taken_by.clone()).or_default();
            if kept.iter().any(|kept| kept.id == event.id) {
                return Ok(redelivered(&states[0], placeholder));
            }
            kept.push(event.clone());
        }
        for (key, state) in keys.iter().zip(next) {
            inner.windows.insert((*key).to_string(), state);
        }
        Ok(outcome)
    }

    async fn window_events(&self, run_id: &RunId) -> Result<Vec<EventPayload>, StoreError> {
        Ok(self.lock().window_events.get(run_id).cloned().unwrap_or_default())
    }

    async fn leave_throttle(&self, run_id: &RunId, key: &str) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if let Some(state) = inner.throttles.get(key) {
            let next = leave(state, run_id);
            inner.throttles.insert(key.to_string(), next);
        }
        Ok(())
    }

    async fn release_lock(&self, key: &str, holder: &RunId) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if inner.flow.get(key).and_then(|item| item.holder.as_ref()) == Some(holder) {
            inner.flow.remove(key);
        }
        Ok(())
    }

    async fn create_run(&self, meta: RunMeta) -> Result<CreateRun, StoreError> {
        let mut inner = self.lock();
        if let Some(existing) = inner.runs.get(&meta.run_id) {
            return Ok(CreateRun::Existing(existing.meta.clone()));
        }
        let mut meta = meta;
        meta.version = 0;
        inner.runs.insert(
            meta.run_id.clone(),
            StoredRun { meta: meta.clone(), steps: Vec::new(), by_id: HashMap::default() },
        );
        Ok(CreateRun::Created(meta))
    }

    async fn load(&self, run_id: &RunId) -> Result<Option<Journal>, StoreError> {
        let inner = self.lock();
        Ok(inner.runs.get(run_id).map(|run| {
            let mut steps = run.steps.clone();
            if !steps.is_sorted_by_key(|record| record.position) {
                steps.sort_by_key(|record| record.position);
            }
            Journal { meta: run.meta.clone(), steps }
        }))
    }

    async fn update_meta(&self, meta: &RunMeta) -> Result<RunMeta, StoreError> {
        let mut inner = self.lock();
        let run = inner.runs.get_mut(&meta.run_id).ok_or_else(|| StoreError::NotFound(meta.run_id.clone()))?;
        if run.meta.version != meta.version {
            return Err(StoreError::Conflict { run_id: meta.run_id.clone(), expected: meta.version });
        }
        let mut stored = meta.clone();
        stored.version += 1;
        run.meta = stored.clone();
        Ok(stored)
    }

    async fn commit_step(&self, run_id: &RunId, record: &StepRecord) -> Result<Commit, StoreError> {
        let mut inner = self.lock();
        let run = inner.runs.get_mut(run_id).ok_or_else(|| StoreError::NotFound(run_id.clone()))?;
        match run.step(&record.id) {
            Some(existing) if existing.state.is_final() || existing.attempts > record.attempts => {
                Ok(Commit::Existing(Box::new(existing.clone())))
            }
            _ => {
                run.put(record);
                Ok(Commit::Committed)
            }
        }
    }

    async fn commit_and_wake(&self, run_id: &RunId, record: &StepRecord, now: Millis) -> Result<Commit, StoreError> {
        let mut inner = self.lock();
        let run = inner.runs.get_mut(run_id).ok_or_else(|| StoreError::NotFound(run_id.clone()))?;
        if let Some(existing) = run.step(&record.id).filter(|existing| existing.state.is_final()) {
            return Ok(Commit::Existing(Box::new(existing.clone())));
        }
        run.put(record);
        run.meta.version += 1;
        run.meta.wake_at = Some(now);
        Ok(Commit::Committed)
    }

    async fn due_runs(&self, function_id: &str, now: Millis, limit: usize) -> Result<Vec<RunMeta>, StoreError> {
        let inner = self.lock();
        let mut due: Vec<RunMeta> = inner
            .runs
            .values()
            .map(|run| &run.meta)
            .filter(|meta| meta.function_id == function_id && meta.wake_at.is_some_and(|at| at <= now))
            .cloned()
            .collect();
        due.sort_by(|a, b| a.wake_at.cmp(&b.wake_at).then_with(|| a.run_id.cmp(&b.run_id)));
        due.truncate(limit);
        Ok(due)
    }

    async fn put_wait(&self, wait: &Wait) -> Result<(), StoreError> {
        let key = (wait.event.clone(), wait.run_id.clone(), wait.step_id.clone());
        self.lock().waits.insert(key, wait.clone());
        Ok(())
    }

    async fn waits_for(&self, event: &EventPayload) -> Result<Vec<Wait>, StoreError> {
        let candidate = serde_json::to_value(event).unwrap_or_default();
        let inner = self.lock();
        let mut waits: Vec<Wait> = inner
            .waits
            .iter()
            .filter(|((name, _, _), wait)| {
                name == &event.name
                    && wait
                        .key
                        .as_ref()
                        .is_none_or(|key| WaitKey::of_event(&key.path, &candidate).as_ref() == Some(key))
            })
            .map(|(_, wait)| wait.clone())
            .collect();
        waits.sort_by_key(|wait| wait.created_at);
        Ok(waits)
    }

    async fn remove_wait(&self, wait: &Wait) -> Result<bool, StoreError> {
        let key = (wait.event.clone(), wait.run_id.clone(), wait.step_id.clone());
        Ok(self.lock().waits.remove(&key).is_some())
    }

    async fn record_event(&self, event: &EventPayload, received_at: Millis) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let id = event.id.clone().unwrap_or_default();
        if !inner.events.keys().any(|(name, _, known)| name == &event.name && known == &id) {
            inner.events.insert((event.name.clone(), received_at, id), event.clone());
        }
        Ok(())
    }

    async fn events_since(&self, name: &str, since: Millis) -> Result<Vec<EventPayload>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .events
            .range((name.to_string(), since, String::new())..)
            .take_while(|((event, _, _), _)| event == name)
            .map(|(_, event)| event.clone())
            .collect())
    }

    async fn list_runs(&self, query: &RunQuery) -> Result<Vec<RunMeta>, StoreError> {
        let inner = self.lock();
        let mut runs: Vec<RunMeta> =
            inner.runs.values().map(|run| &run.meta).filter(|meta| query.matches(meta)).cloned().collect();
        runs.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| b.run_id.cmp(&a.run_id)));
        runs.truncate(effective_limit(query));
        Ok(runs)
    }
}
