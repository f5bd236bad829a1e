//! Flow-control scenarios every [`RunStore`] backend must pass, with the exact times of
//! `reference/flow-control.md` (section 4) on a manual clock: the production [`Runner`] over
//! the store under test, an in-memory bus and timer. They join the store conformance suite
//! (`store_conformance!`), so each runs against memory, SQLite and DynamoDB alike.
#![allow(clippy::unwrap_used)] // Test support: a failed unwrap is a failed contract.

use super::TestRuns;
use crate::bus::{MemoryBus, MemoryTimer};
use crate::clock::ManualClock;
use crate::event::{CANCELLED_EVENT, FAILED_EVENT};
use crate::event::{Event, EventPayload};
use crate::flow::{Acquired, CancelOn, Claim, Concurrency, Gcra, RateLimit, Singleton, Slot, Throttle, Timeouts};
use crate::function::Function;
use crate::id::RunId;
use crate::record::{RunMeta, RunStatus, SkipReason};
use crate::runner::Runner;
use crate::step::Step;
use crate::step::WaitFor;
use crate::store::{Admission, RunStore};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

mod cancel;
mod limits;
mod queues;
mod windows;

pub use cancel::*;
pub use limits::*;
pub use queues::*;
pub use windows::*;

static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// Event ids (and so run ids) unique per process and call, so suites may share one table.
fn unique(tag: &str) -> String {
    format!("{tag}-{}-{}", std::process::id(), UNIQUE.fetch_add(1, Ordering::Relaxed))
}

/// [`TestRuns`] over the store under test, with function ids unique per scenario (a shared
/// table keeps flow keys apart) and event ids unique per process.
struct Scenario<S: RunStore> {
    runs: TestRuns<S>,
    prefix: String,
}

impl<S: RunStore> Scenario<S> {
    fn new(store: S, functions: impl FnOnce(&str) -> Vec<Function>) -> Self {
        Self::with_clock(store, |prefix, _| functions(prefix))
    }

    /// Like [`Scenario::new`], the functions given the clock (a step that "takes" 40 s
    /// advances it).
    fn with_clock(store: S, functions: impl FnOnce(&str, &ManualClock) -> Vec<Function>) -> Self {
        let prefix = unique("fc");
        let clock = ManualClock::at(0);
        let functions = functions(&prefix, &clock);
        Scenario { runs: TestRuns::with_store(store, functions, clock), prefix }
    }

    fn runner(&self) -> &Runner<S, MemoryBus, MemoryTimer> {
        self.runs.runner()
    }

    /// Sets the clock to `secs`, wakes what is due, sends `name` with `data` (its id returned)
    /// and drives everything until idle.
    async fn send_at(&self, secs: i64, name: &str, data: Value) -> String {
        self.runs.send_at(secs, name, data).await
    }

    /// Sends `event` at `ms` milliseconds ([`TestRuns::send_event_at_ms`]).
    async fn send_event_at_ms(&self, ms: i64, event: EventPayload) -> String {
        self.runs.send_event_at_ms(ms, event).await
    }

    /// Moves the clock to `secs`, waking what is due on the way.
    async fn at(&self, secs: i64) {
        self.runs.at(secs).await;
    }

    async fn head(&self, function: &str, event_id: &str) -> RunMeta {
        let run = RunId::for_event(&format!("{}-{function}", self.prefix), event_id);
        self.runner().store().load(&run).await.unwrap().unwrap_or_else(|| panic!("no run for {event_id}")).meta
    }

    async fn steps(&self, function: &str, event_id: &str) -> Vec<String> {
        let run = self.head(function, event_id).await.run_id;
        let journal = self.runner().store().load(&run).await.unwrap().unwrap();
        journal.steps.iter().map(|step| step.name.clone()).collect()
    }

    /// The system events named `name` sent for the run of `function` for `event_id`.
    async fn system_events(&self, function: &str, event_id: &str, name: &str) -> usize {
        let run = self.head(function, event_id).await.run_id;
        self.runner().bus().sent().iter().filter(|e| e.name == name && e.data["run_id"] == run.as_str()).count()
    }

    async fn status(&self, function: &str, event_id: &str) -> (RunStatus, Option<SkipReason>) {
        let head = self.head(function, event_id).await;
        (head.status, head.skipped.map(|skipped| skipped.reason))
    }
}

async fn done(_: Event, _: Step) -> Result<&'static str, crate::StepError> {
    Ok("done")
}

/// Sleeps `data.secs` seconds (staying active), then completes.
async fn sleep_then_finish(event: Event, step: Step) -> Result<&'static str, crate::StepError> {
    let secs = event.data["secs"].as_u64().unwrap_or(30);
    step.sleep("hold", Duration::from_secs(secs)).await?;
    Ok("done")
}

const COMPLETED: (RunStatus, Option<SkipReason>) = (RunStatus::Completed, None);

/// A function on `trigger` limited to one execution per `data.user` (shaped further by
/// `options`) whose `work` step records `data.name` in `order` and, when `data.blocks`, waits
/// for a permit of `gate` (so the test holds the slot as long as it likes); with `rest`, it then
/// sleeps 60 s (holding no slot).
fn gated_worker(
    id: String,
    trigger: &str,
    gate: &Arc<tokio::sync::Semaphore>,
    order: &Arc<std::sync::Mutex<Vec<String>>>,
    rest: bool,
    options: impl FnOnce(crate::function::FunctionBuilder<Value>) -> crate::function::FunctionBuilder<Value>,
) -> Function {
    let (gate, order) = (Arc::clone(gate), Arc::clone(order));
    options(Function::new(id).on_event(trigger).concurrency(Concurrency::new(1).key("event.data.user")))
        .handler(move |event: Event, step: Step| {
            let (gate, order) = (Arc::clone(&gate), Arc::clone(&order));
            async move {
                let name = event.data["name"].as_str().unwrap_or_default().to_string();
                let blocks = event.data["blocks"].as_bool().unwrap_or(false);
                step.run("work", || async {
                    order.lock().unwrap().push(name.clone());
                    if blocks {
                        gate.acquire().await.unwrap().forget();
                    }
                    Ok(())
                })
                .await?;
                if rest {
                    step.sleep("rest", Duration::from_secs(60)).await?;
                }
                Ok(name)
            }
        })
        .unwrap()
}

/// When each run started its first step: `(data.name, seconds)`, in start order.
type Starts = Arc<std::sync::Mutex<Vec<(String, i64)>>>;

/// A function on `trigger`, shaped by `options`, whose first step records `(data.name, now in
/// seconds)` in `starts`; it then sleeps `data.secs` seconds, if given (staying active).
fn start_recorder(
    id: String,
    trigger: &str,
    starts: &Starts,
    clock: &ManualClock,
    options: impl FnOnce(crate::function::FunctionBuilder<Value>) -> crate::function::FunctionBuilder<Value>,
) -> Function {
    let (starts, clock) = (Arc::clone(starts), clock.clone());
    options(Function::new(id).on_event(trigger))
        .handler(move |event: Event, step: Step| {
            let (starts, clock) = (Arc::clone(&starts), clock.clone());
            async move {
                let name = event.data["name"].as_str().unwrap_or_default().to_string();
                step.run("start", || async {
                    starts.lock().unwrap().push((name.clone(), clock.now_ms() / 1_000));
                    Ok(())
                })
                .await?;
                let secs = event.data["secs"].as_u64().unwrap_or(0);
                if secs > 0 {
                    step.sleep("hold", Duration::from_secs(secs)).await?;
                }
                Ok::<_, crate::StepError>("done")
            }
        })
        .unwrap()
}

/// The store's admission contract: claims are spent with the head, all or nothing, and never
/// by a duplicate.
pub async fn admit_run_spends_claims_with_the_head<S: RunStore>(store: S) {
    let bucket = Claim::Bucket { key: unique("bucket"), limiter: Gcra::rate_limit(1, 60_000) };
    let lock_key = unique("lock");
    let lock = Claim::Lock { key: lock_key.clone(), replaces: None };
    let event = EventPayload::new("fc/x", json!({})).with_id("e");
    let head = |tag: &str| RunMeta::new(RunId::new(unique(tag)), "f", event.clone(), 0);
    let first = head("first");
    let created = store.admit_run(first.clone(), &[bucket.clone(), lock.clone()], 0).await.unwrap();
    assert_eq!(created, Admission::Created(first.clone()));
    // The same run again (a duplicate delivery): found, nothing spent.
    assert_eq!(
        store.admit_run(first.clone(), std::slice::from_ref(&bucket), 0).await.unwrap(),
        Admission::Existing(first.clone())
    );
    // Another run: the bucket is empty until 60 s, and nothing of it is written.
    let second = head("second");
    let refused = store.admit_run(second.clone(), std::slice::from_ref(&bucket), 30_000).await.unwrap();
    assert_eq!(refused, Admission::Refused { claim: 0, holder: None });
    assert_eq!(store.load(&second.run_id).await.unwrap(), None);
    // A free bucket but a held lock: refused at the lock, naming its holder; the bucket unspent.
    let refused = store.admit_run(second.clone(), &[bucket.clone(), lock.clone()], 60_000).await.unwrap();
    assert_eq!(refused, Admission::Refused { claim: 1, holder: Some(first.run_id.clone()) });
    // Replacing the holder by name takes the lock, and the bucket admits (it was not spent).
    let replacing = Claim::Lock { key: lock_key.clone(), replaces: Some(first.run_id.clone()) };
    let created = store.admit_run(second.clone(), &[bucket.clone(), replacing], 60_000).await.unwrap();
    assert_eq!(created, Admission::Created(second.clone()));
    // Only the holder releases: the first run's release leaves the second's lock.
    store.release_lock(&lock_key, &first.run_id).await.unwrap();
    let third = head("third");
    let refused = store.admit_run(third.clone(), std::slice::from_ref(&lock), 60_000).await.unwrap();
    assert_eq!(refused, Admission::Refused { claim: 0, holder: Some(second.run_id.clone()) });
    store.release_lock(&lock_key, &second.run_id).await.unwrap();
    assert_eq!(store.admit_run(third.clone(), &[lock], 60_000).await.unwrap(), Admission::Created(third));
}
