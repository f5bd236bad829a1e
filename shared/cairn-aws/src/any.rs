//! Runtime-chosen backends: DynamoDB or the embedded SQLite store, EventBridge or a log, the
//! Scheduler or a log, so one binary runs in AWS and under `cargo lambda watch` with no AWS.

use crate::dynamodb::DynamoDbStore;
use crate::eventbridge::EventBridgeBus;
use crate::timer::QueueTimer;
#[cfg(feature = "sqlite")]
use cairn::SqliteStore;
use cairn::flow::{Acquired, Claim, Gcra, Slot, Throttled};
use cairn::store::{Admission, Commit, CreateRun, RunQuery};
use cairn::{Bus, BusError, EventPayload, Journal, Millis, RunId, RunMeta, RunStore, StepRecord};
use cairn::{StoreError, Timer, Wait};

/// The store a function uses: DynamoDB when `CAIRN_TABLE` is set, else (feature `sqlite`) a
/// local SQLite file.
#[derive(Clone, Debug)]
pub enum AnyStore {
    /// DynamoDB.
    DynamoDb(DynamoDbStore),
    /// The embedded SQLite file.
    #[cfg(feature = "sqlite")]
    Sqlite(SqliteStore),
}

macro_rules! dispatch {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            AnyStore::DynamoDb($store) => $call.await,
            #[cfg(feature = "sqlite")]
            AnyStore::Sqlite($store) => $call.await,
        }
    };
}

impl RunStore for AnyStore {
    async fn admit_run(&self, meta: RunMeta, claims: &[Claim], now: Millis) -> Result<Admission, StoreError> {
        dispatch!(self, s => s.admit_run(meta, claims, now))
    }
    async fn release_lock(&self, key: &str, holder: &RunId) -> Result<(), StoreError> {
        dispatch!(self, s => s.release_lock(key, holder))
    }
    async fn acquire_slots(
        &self,
        run_id: &RunId,
        slots: &[Slot],
        now: Millis,
        hold_until: Millis,
    ) -> Result<Acquired, StoreError> {
        dispatch!(self, s => s.acquire_slots(run_id, slots, now, hold_until))
    }
    async fn release_slots(&self, run_id: &RunId, slots: &[Slot], now: Millis) -> Result<Vec<RunId>, StoreError> {
        dispatch!(self, s => s.release_slots(run_id, slots, now))
    }
    async fn throttle_start(
        &self,
        run_id: &RunId,
        key: &str,
        limiter: Gcra,
        score: Millis,
        now: Millis,
    ) -> Result<Throttled, StoreError> {
        dispatch!(self, s => s.throttle_start(run_id, key, limiter, score, now))
    }
    async fn leave_throttle(&self, run_id: &RunId, key: &str) -> Result<(), StoreError> {
        dispatch!(self, s => s.leave_throttle(run_id, key))
    }
    async fn window(
        &self,
        keys: &[&str],
        change: &cairn::flow::WindowChange,
        now: Millis,
    ) -> Result<cairn::flow::Windowed, StoreError> {
        dispatch!(self, s => s.window(keys, change, now))
    }
    async fn window_events(&self, run_id: &RunId) -> Result<Vec<EventPayload>, StoreError> {
        dispatch!(self, s => s.window_events(run_id))
    }
    async fn create_run(&self, meta: RunMeta) -> Result<CreateRun, StoreError> {
        dispatch!(self, s => s.create_run(meta))
    }
    async fn load(&self, run_id: &RunId) -> Result<Option<Journal>, StoreError> {
        dispatch!(self, s => s.load(run_id))
    }
    async fn update_meta(&self, meta: &RunMeta) -> Result<RunMeta, StoreError> {
        dispatch!(self, s => s.update_meta(meta))
    }
    async fn commit_step(&self, run_id: &RunId, record: &StepRecord) -> Result<Commit, StoreError> {
        dispatch!(self, s => s.commit_step(run_id, record))
    }
    async fn commit_and_wake(&self, run_id: &RunId, record: &StepRecord, now: Millis) -> Result<Commit, StoreError> {
        dispatch!(self, s => s.commit_and_wake(run_id, record, now))
    }
    async fn due_runs(&self, function_id: &str, now: Millis, limit: usize) -> Result<Vec<RunMeta>, StoreError> {
        dispatch!(self, s => s.due_runs(function_id, now, limit))
    }
    async fn put_wait(&self, wait: &Wait) -> Result<(), StoreError> {
        dispatch!(self, s => s.put_wait(wait))
    }
    async fn waits_for(&self, event: &EventPayload) -> Result<Vec<Wait>, StoreError> {
        dispatch!(self, s => s.waits_for(event))
    }
    async fn remove_wait(&self, wait: &Wait) -> Result<bool, StoreError> {
        dispatch!(self, s => s.remove_wait(wait))
    }
    async fn record_event(&self, event: &EventPayload, received_at: Millis) -> Result<(), StoreError> {
        dispatch!(self, s => s.record_event(event, received_at))
    }
    async fn events_since(&self, name: &str, since: Millis) -> Result<Vec<EventPayload>, StoreError> {
        dispatch!(self, s => s.events_since(name, since))
    }
    async fn list_runs(&self, query: &RunQuery) -> Result<Vec<RunMeta>, StoreError> {
        dispatch!(self, s => s.list_runs(query))
    }
}

/// Where sent events go: EventBridge when `CAIRN_BUS` is set, else the log.
#[derive(Clone, Debug)]
pub enum AnyBus {
    /// An EventBridge bus.
    EventBridge(EventBridgeBus),
    /// Logged only (local mode with no bus): the events are printed, nothing routes them.
    Log,
}

impl Bus for AnyBus {
    async fn send(&self, events: &[EventPayload]) -> Result<Vec<String>, BusError> {
        match self {
            AnyBus::EventBridge(bus) => bus.send(events).await,
            AnyBus::Log => {
                for event in events {
                    tracing::info!(event.name = %event.name, event.id = event.id.as_deref().unwrap_or_default(), "event sent (no CAIRN_BUS: logged only)");
                }
                Ok(events.iter().map(|event| event.id.clone().unwrap_or_default()).collect())
            }
        }
    }
}

/// What wakes runs: the function's SQS timer queue (with the Scheduler beyond 15 minutes), or
/// (only when asked for with `CAIRN_TIMER=log`) the log.
#[derive(Clone, Debug)]
pub enum AnyTimer {
    /// The timer queue, handing long wake-ups to the Scheduler.
    Queue(QueueTimer),
    /// Logged only: resume by hand with `{"cairn": "resume", "run_id": ...}`.
    Log,
}

impl Timer for AnyTimer {
    async fn wake_at(&self, run_id: &RunId, function_id: &str, key: &str, at: Millis) -> Result<(), BusError> {
        match self {
            AnyTimer::Queue(timer) => timer.wake_at(run_id, function_id, key, at).await,
            AnyTimer::Log => {
                tracing::info!(run_id = %run_id, wake_at = at, key, "wake-up due (no scheduler: invoke {{\"cairn\":\"resume\",\"run_id\":\"{run_id}\"}})");
                Ok(())
            }
        }
    }

    async fn forget(&self, run_id: &RunId) -> Result<(), BusError> {
        match self {
            AnyTimer::Queue(timer) => timer.forget(run_id).await,
            AnyTimer::Log => Ok(()),
        }
    }
}
