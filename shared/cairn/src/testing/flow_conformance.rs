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

/// R1, R4, R5: `rate_limit {limit: 1, period: "4h", key: company}`; a duplicate spends nothing;
/// a `false` key exempts the event.
pub async fn rate_limit_skips_events_over_the_limit<S: RunStore>(store: S) {
    let scenario = Scenario::new(store, |prefix| {
        let limited = Function::new(format!("{prefix}-sync"))
            .on_event("fc/company")
            .rate_limit(RateLimit::new(1, "4h").key("event.data.company_id"))
            .handler(done)
            .unwrap();
        let exempt = Function::new(format!("{prefix}-exempt"))
            .on_event("fc/maybe")
            .rate_limit(RateLimit::new(1, "1h").key("event.data.limited"))
            .handler(done)
            .unwrap();
        vec![limited, exempt]
    });
    let hour = 3_600;
    let c1_first = scenario.send_at(0, "fc/company", json!({"company_id": "c1"})).await;
    // R4: the same event delivered again finds its run and spends no token.
    let event = EventPayload::new("fc/company", json!({"company_id": "c1"})).with_id(&c1_first);
    scenario.runner().accept(&event).await.unwrap();
    let c1_later = scenario.send_at(hour, "fc/company", json!({"company_id": "c1"})).await;
    let c2 = scenario.send_at(hour, "fc/company", json!({"company_id": "c2"})).await;
    let c1_after = scenario.send_at(4 * hour, "fc/company", json!({"company_id": "c1"})).await;
    assert_eq!(scenario.status("sync", &c1_first).await, COMPLETED);
    assert_eq!(scenario.status("sync", &c1_later).await, (RunStatus::Skipped, Some(SkipReason::RateLimit)));
    assert_eq!(scenario.status("sync", &c2).await, COMPLETED);
    assert_eq!(scenario.status("sync", &c1_after).await, COMPLETED);
    let skipped = scenario.head("sync", &c1_later).await;
    assert_eq!(skipped.skipped.unwrap().key.as_deref(), Some("c1"));
    assert_eq!((skipped.ended_at, skipped.outbox.len(), skipped.wake_at), (Some(hour * 1_000), 0, None));
    // R5: `false` turns the limit off for the event.
    for _ in 0..5 {
        let id = scenario.send_at(5 * hour, "fc/maybe", json!({"limited": false})).await;
        assert_eq!(scenario.status("exempt", &id).await, COMPLETED);
    }
}

/// R2: `{limit: 10, period: "60s"}` admits its hidden burst of 2 at once, then one per 6 s.
pub async fn rate_limit_has_inngests_hidden_burst<S: RunStore>(store: S) {
    let scenario = Scenario::new(store, |prefix| {
        vec![
            Function::new(format!("{prefix}-burst"))
                .on_event("fc/burst")
                .rate_limit(RateLimit::new(10, "60s"))
                .handler(done)
                .unwrap(),
        ]
    });
    let mut at_zero = Vec::new();
    for _ in 0..10 {
        at_zero.push(scenario.send_at(0, "fc/burst", json!({})).await);
    }
    let mut ran = 0;
    for id in &at_zero {
        if scenario.status("burst", id).await == COMPLETED {
            ran += 1;
        }
    }
    assert_eq!(ran, 2);
    let mut later = Vec::new();
    for at in [6, 7, 12] {
        let id = scenario.send_at(at, "fc/burst", json!({})).await;
        later.push(scenario.status("burst", &id).await.0);
    }
    assert_eq!(later, [RunStatus::Completed, RunStatus::Skipped, RunStatus::Completed]);
}

/// I1, I2, I5: one run per key per 24 h; a skipped event does not extend the window; `false`
/// exempts.
pub async fn idempotency_allows_one_run_per_key_per_day<S: RunStore>(store: S) {
    let scenario = Scenario::new(store, |prefix| {
        vec![
            Function::new(format!("{prefix}-charge"))
                .on_event("fc/cart")
                .idempotency("event.data.cartId")
                .handler(done)
                .unwrap(),
        ]
    });
    let (hour, day) = (3_600, 86_400);
    let a0 = scenario.send_at(0, "fc/cart", json!({"cartId": "A"})).await;
    let a1h = scenario.send_at(hour, "fc/cart", json!({"cartId": "A"})).await;
    let b1h = scenario.send_at(hour, "fc/cart", json!({"cartId": "B"})).await;
    let a23h = scenario.send_at(23 * hour, "fc/cart", json!({"cartId": "A"})).await;
    let a_before = scenario.send_at(day - 1, "fc/cart", json!({"cartId": "A"})).await;
    let a_day = scenario.send_at(day, "fc/cart", json!({"cartId": "A"})).await;
    let skipped = (RunStatus::Skipped, Some(SkipReason::Idempotency));
    assert_eq!(scenario.status("charge", &a0).await, COMPLETED);
    assert_eq!(scenario.status("charge", &a1h).await, skipped);
    assert_eq!(scenario.status("charge", &b1h).await, COMPLETED);
    assert_eq!(scenario.status("charge", &a23h).await, skipped);
    assert_eq!(scenario.status("charge", &a_before).await, skipped);
    assert_eq!(scenario.status("charge", &a_day).await, COMPLETED);
    for _ in 0..3 {
        let id = scenario.send_at(day + 1, "fc/cart", json!({"cartId": false})).await;
        assert_eq!(scenario.status("charge", &id).await, COMPLETED);
    }
}

/// S1, S3, S8: skip mode keeps one active run per key (sleeping counts), other keys and
/// `false` keys run, and the key is free again once the run ends.
pub async fn singleton_skips_while_a_run_for_the_key_is_active<S: RunStore>(store: S) {
    let scenario = Scenario::new(store, |prefix| {
        vec![
            Function::new(format!("{prefix}-solo"))
                .on_event("fc/work")
                .singleton(Singleton::skip().key("event.data.user"))
                .handler(sleep_then_finish)
                .unwrap(),
        ]
    });
    let a1 = scenario.send_at(0, "fc/work", json!({"user": "A", "secs": 30})).await;
    let b1 = scenario.send_at(1, "fc/work", json!({"user": "B", "secs": 30})).await;
    let a2 = scenario.send_at(5, "fc/work", json!({"user": "A", "secs": 30})).await;
    assert_eq!(scenario.status("solo", &a1).await.0, RunStatus::Sleeping);
    assert_eq!(scenario.status("solo", &b1).await.0, RunStatus::Sleeping);
    assert_eq!(scenario.status("solo", &a2).await, (RunStatus::Skipped, Some(SkipReason::Singleton)));
    let a1_run = scenario.head("solo", &a1).await.run_id;
    assert_eq!(scenario.head("solo", &a2).await.skipped.unwrap().by, Some(a1_run));
    scenario.at(30).await;
    assert_eq!(scenario.status("solo", &a1).await, COMPLETED);
    let a3 = scenario.send_at(31, "fc/work", json!({"user": "A", "secs": 1})).await;
    assert_eq!(scenario.status("solo", &a3).await.0, RunStatus::Sleeping);
    // S8: `false` keys are not singletons.
    let solo1 = scenario.send_at(40, "fc/work", json!({"user": false, "secs": 5})).await;
    let solo2 = scenario.send_at(40, "fc/work", json!({"user": false, "secs": 5})).await;
    assert_eq!(scenario.status("solo", &solo1).await.0, RunStatus::Sleeping);
    assert_eq!(scenario.status("solo", &solo2).await.0, RunStatus::Sleeping);
}

/// S2 and S6: cancel mode cancels the active run (with `inngest/function.cancelled`) and starts
/// the new one; a lock whose holder ended without releasing it (a lost release) is taken over.
pub async fn singleton_cancel_mode_replaces_the_active_run<S: RunStore>(store: S) {
    let scenario = Scenario::new(store, |prefix| {
        vec![
            Function::new(format!("{prefix}-latest"))
                .on_event("fc/work")
                .singleton(Singleton::cancel().key("event.data.user"))
                .handler(sleep_then_finish)
                .unwrap(),
        ]
    });
    let a1 = scenario.send_at(0, "fc/work", json!({"user": "A", "secs": 3_600})).await;
    let a2 = scenario.send_at(5, "fc/work", json!({"user": "A", "secs": 3_600})).await;
    let first = scenario.head("latest", &a1).await;
    assert_eq!((first.status, first.ended_at), (RunStatus::Cancelled, Some(5_000)));
    assert_eq!(scenario.status("latest", &a2).await.0, RunStatus::Sleeping);
    let cancelled: Vec<EventPayload> = scenario
        .runner()
        .bus()
        .sent()
        .into_iter()
        .filter(|event| event.name == crate::event::CANCELLED_EVENT && event.data["run_id"] == first.run_id.as_str())
        .collect();
    assert_eq!(cancelled.len(), 1);
    // a2 ends and releases the key.
    scenario.at(3_605).await;
    let second = scenario.head("latest", &a2).await;
    assert_eq!((second.status, second.holds.len()), (RunStatus::Completed, 0));
    // S6: a run for the key ended without releasing it (a crash lost its release): made here
    // by taking the lock for a run and ending that run's head without the release.
    let store = scenario.runner().store();
    let key = singleton_key(&scenario, &a2).await;
    let ghost = RunMeta::new(RunId::new(unique("ghost")), &second.function_id, second.event.clone(), 3_605_000);
    let taken = store.admit_run(ghost.clone(), &[Claim::Lock { key, replaces: None }], 3_605_000).await.unwrap();
    assert_eq!(taken, Admission::Created(ghost.clone()));
    let mut ended = store.load(&ghost.run_id).await.unwrap().unwrap().meta;
    ended.status = RunStatus::Completed;
    store.update_meta(&ended).await.unwrap();
    // The next run finds the holder ended and takes the key over.
    let a3 = scenario.send_at(3_700, "fc/work", json!({"user": "A", "secs": 1})).await;
    assert_eq!(scenario.status("latest", &a3).await.0, RunStatus::Sleeping);
}

/// The singleton lock key `event_id`'s run of `latest` held (recomputed as admission does).
async fn singleton_key<S: RunStore>(scenario: &Scenario<S>, event_id: &str) -> String {
    let head = scenario.head("latest", event_id).await;
    let function = scenario.runner().registry().get(&head.function_id).unwrap().clone();
    let claims = function.flow().claims(function.id(), &head.event).unwrap();
    claims[0].claim.key().to_string()
}

/// X1, X2, X7, X8, X11: a matching event cancels every sleeping or waiting run it matches,
/// with `inngest/function.cancelled` and no `function.failed`; their next step never runs; a
/// later event does not resume a cancelled wait; others go on.
pub async fn cancel_on_ends_sleeping_and_waiting_runs<S: RunStore>(store: S) {
    let scenario = Scenario::new(store, |prefix| {
        let reminder = Function::new(format!("{prefix}-reminder"))
            .on_event("fc/reminder.created")
            .cancel_on(CancelOn::event("fc/reminder.deleted").when("async.data.id == event.data.id"))
            .handler(|_: Event, step: Step| async move {
                step.run("first", || async { Ok(1) }).await?;
                step.sleep("wait", Duration::from_secs(3_600)).await?;
                step.run("second", || async { Ok(2) }).await
            })
            .unwrap();
        let order = Function::new(format!("{prefix}-order"))
            .on_event("fc/order")
            .awaits("fc/approved")
            .cancel_on(CancelOn::event("fc/order.void").matching("data.id"))
            .handler(|_: Event, step: Step| async move {
                let wait = WaitFor::event("fc/approved").timeout("1d").if_expr("async.data.id == event.data.id");
                Ok(step.wait_for_event("approval", wait).await?.is_some())
            })
            .unwrap();
        vec![reminder, order]
    });
    let mut r1 = Vec::new();
    for _ in 0..3 {
        r1.push(scenario.send_at(0, "fc/reminder.created", json!({"id": "r1"})).await);
    }
    let r2 = scenario.send_at(0, "fc/reminder.created", json!({"id": "r2"})).await;
    let deleted = scenario.send_at(600, "fc/reminder.deleted", json!({"id": "r1"})).await;
    for event in &r1 {
        let head = scenario.head("reminder", event).await;
        assert_eq!((head.status, head.ended_at), (RunStatus::Cancelled, Some(600_000)));
        assert_eq!(head.cancelled_by, Some(format!("cancel_on: event `fc/reminder.deleted` ({deleted})")));
        assert_eq!(scenario.system_events("reminder", event, CANCELLED_EVENT).await, 1);
        assert_eq!(scenario.system_events("reminder", event, FAILED_EVENT).await, 0);
    }
    scenario.at(3_600).await;
    assert_eq!(scenario.status("reminder", &r2).await, COMPLETED);
    assert_eq!(scenario.steps("reminder", &r2).await, ["first", "wait", "second"]);
    assert_eq!(scenario.steps("reminder", &r1[0]).await, ["first", "wait"]);
    // X7 and X8 (`matching`): a waiting run is cancelled; the awaited event then resumes nothing.
    let o1 = scenario.send_at(4_000, "fc/order", json!({"id": "o1"})).await;
    assert_eq!(scenario.status("order", &o1).await.0, RunStatus::Waiting);
    scenario.send_at(4_010, "fc/order.void", json!({"id": "o1"})).await;
    scenario.send_at(4_020, "fc/approved", json!({"id": "o1"})).await;
    let head = scenario.head("order", &o1).await;
    assert_eq!((head.status, head.ended_at), (RunStatus::Cancelled, Some(4_010_000)));
    // The wait step is still the scheduled one: the approval resumed nothing.
    assert!(!scenario.runner().store().load(&head.run_id).await.unwrap().unwrap().steps[0].state.is_final());
}

/// X3, X4, X9: an event from before the run, the run's own trigger, and an event after the
/// rule's timeout cancel nothing.
pub async fn cancel_on_ignores_earlier_events_its_own_trigger_and_expired_rules<S: RunStore>(store: S) {
    let scenario = Scenario::new(store, |prefix| {
        let sleeps = |id: String, rule: CancelOn, trigger: &str| {
            Function::new(id).on_event(trigger).cancel_on(rule).handler(sleep_then_finish).unwrap()
        };
        vec![
            sleeps(format!("{prefix}-matched"), CancelOn::event("fc/stop").matching("data.id"), "fc/start"),
            sleeps(format!("{prefix}-brief"), CancelOn::event("fc/brief.stop").timeout("1h"), "fc/brief"),
            sleeps(format!("{prefix}-same"), CancelOn::event("fc/x"), "fc/x"),
        ]
    });
    // X3: the cancel event came first.
    scenario.send_at(0, "fc/stop", json!({"id": "r3"})).await;
    let r3 = scenario.send_at(1, "fc/start", json!({"id": "r3", "secs": 60})).await;
    // X4: the rule listens for an hour; the event comes at two.
    let brief = scenario.send_at(1, "fc/brief", json!({"secs": 3 * 3_600})).await;
    scenario.send_at(2 * 3_600, "fc/brief.stop", json!({})).await;
    assert_eq!(scenario.status("matched", &r3).await, COMPLETED);
    assert_eq!(scenario.status("brief", &brief).await.0, RunStatus::Sleeping);
    scenario.at(3 * 3_600 + 1).await;
    assert_eq!(scenario.status("brief", &brief).await, COMPLETED);
    // X9: triggered by the event that also cancels it: x#1 starts R1, x#2 cancels R1 and starts R2.
    let x1 = scenario.send_at(20_000, "fc/x", json!({"secs": 3_600})).await;
    assert_eq!(scenario.status("same", &x1).await.0, RunStatus::Sleeping);
    let x2 = scenario.send_at(20_010, "fc/x", json!({"secs": 3_600})).await;
    assert_eq!(scenario.status("same", &x1).await.0, RunStatus::Cancelled);
    assert_eq!(scenario.status("same", &x2).await.0, RunStatus::Sleeping);
}

/// A step that takes `secs` on the scenario's clock.
async fn takes(clock: ManualClock, secs: u64) -> crate::StepResult<u64> {
    clock.advance(Duration::from_secs(secs));
    Ok(secs)
}

/// TO2, TO3, TO4, TO5, and the start timeout of a run first driven late: timeouts cancel, and
/// only before something new would start.
pub async fn timeouts_cancel_runs_that_start_or_finish_late<S: RunStore>(store: S) {
    let scenario = Scenario::with_clock(store, |prefix, clock| {
        let finish = || Timeouts::new().finish("30s");
        let (c2, c3, c4, c5) = (clock.clone(), clock.clone(), clock.clone(), clock.clone());
        vec![
            Function::new(format!("{prefix}-to2"))
                .on_event("fc/to2")
                .timeouts(finish())
                .handler(move |_: Event, step: Step| {
                    let clock = c2.clone();
                    async move {
                        step.run("one", || takes(clock, 10)).await?;
                        step.sleep("nap", Duration::from_secs(3_600)).await?;
                        step.run("two", || async { Ok(0) }).await
                    }
                })
                .unwrap(),
            Function::new(format!("{prefix}-to3"))
                .on_event("fc/to3")
                .timeouts(finish())
                .handler(move |_: Event, step: Step| {
                    let clock = c3.clone();
                    async move { step.run("long", || takes(clock, 40)).await }
                })
                .unwrap(),
            Function::new(format!("{prefix}-to4"))
                .on_event("fc/to4")
                .timeouts(finish())
                .handler(move |_: Event, step: Step| {
                    let clock = c4.clone();
                    async move {
                        step.run("long", || takes(clock, 40)).await?;
                        step.run("short", || async { Ok(1) }).await
                    }
                })
                .unwrap(),
            Function::new(format!("{prefix}-to5"))
                .on_event("fc/to5")
                .timeouts(Timeouts::new().start("10s"))
                .handler(move |_: Event, step: Step| {
                    let clock = c5.clone();
                    async move {
                        step.run("a", || takes(clock, 5)).await?;
                        step.sleep("nap", Duration::from_secs(20)).await?;
                        step.run("b", || async { Ok(5) }).await
                    }
                })
                .unwrap(),
        ]
    });
    let finish_reason = "timeouts.finish: not finished 30s after its first step started";
    // TO2: cancelled at 30 while sleeping.
    let to2 = scenario.send_at(0, "fc/to2", json!({})).await;
    scenario.at(30).await;
    let head = scenario.head("to2", &to2).await;
    assert_eq!(
        (head.status, head.ended_at, head.cancelled_by.as_deref()),
        (RunStatus::Cancelled, Some(30_000), Some(finish_reason))
    );
    assert_eq!(scenario.steps("to2", &to2).await, ["one", "nap"]);
    // TO3: its last step ends past the deadline, and the run still completes.
    let to3 = scenario.send_at(100, "fc/to3", json!({})).await;
    let head = scenario.head("to3", &to3).await;
    assert_eq!((head.status, head.ended_at), (RunStatus::Completed, Some(140_000)));
    // TO4: the long step is kept; the next never starts.
    let to4 = scenario.send_at(200, "fc/to4", json!({})).await;
    let head = scenario.head("to4", &to4).await;
    assert_eq!((head.status, head.ended_at), (RunStatus::Cancelled, Some(240_000)));
    assert_eq!(scenario.steps("to4", &to4).await, ["long"]);
    // TO5: a start timeout no longer applies once the first step started.
    let to5 = scenario.send_at(300, "fc/to5", json!({})).await;
    scenario.at(325).await;
    assert_eq!(scenario.status("to5", &to5).await, COMPLETED);
    // A run whose first drive comes after its start timeout (its invocation died after
    // accepting the event) is cancelled by the start-timeout wake-up, at 410 exactly, and never
    // runs.
    scenario.at(400).await;
    let late = unique("late");
    scenario.runner().accept(&EventPayload::new("fc/to5", json!({})).with_id(&late).with_ts(400_000)).await.unwrap();
    scenario.at(411).await;
    let head = scenario.head("to5", &late).await;
    assert_eq!(
        (head.status, head.ended_at, head.cancelled_by.as_deref()),
        (RunStatus::Cancelled, Some(410_000), Some("timeouts.start: not started 10s after it was created"))
    );
    assert!(scenario.steps("to5", &late).await.is_empty());
}

/// The store's concurrency contract (C1's queue, FIFO, priority, lapsed holds, two limits): a
/// key's holders never exceed its limit, queued runs start oldest first, and a run refused by
/// one of two keys holds neither.
pub async fn concurrency_slots_are_held_and_queued_in_order<S: RunStore>(store: S) {
    let key = unique("slot");
    let slot = |score| Slot { key: key.clone(), limit: 2, score };
    let runs: Vec<RunId> = (0..7).map(|n| RunId::new(unique(&format!("c{n}")))).collect();
    let granted = |acquired: Acquired| acquired == Acquired::Granted;
    let queued = |position| Acquired::Queued { slot: 0, position };
    // C1: five at once under a limit of 2: two hold, three wait in order.
    assert!(granted(store.acquire_slots(&runs[1], &[slot(1)], 0, 60_000).await.unwrap()));
    assert!(granted(store.acquire_slots(&runs[2], &[slot(2)], 0, 60_000).await.unwrap()));
    for (n, position) in [(3, 0), (4, 1), (5, 2)] {
        assert_eq!(store.acquire_slots(&runs[n], &[slot(n as i64)], 0, 60_000).await.unwrap(), queued(position));
    }
    // Trying again does not queue a run twice.
    assert_eq!(store.acquire_slots(&runs[4], &[slot(4)], 0, 60_000).await.unwrap(), queued(1));
    // A release wakes the head only; the head then takes the slot, a run behind it cannot.
    assert_eq!(store.release_slots(&runs[1], &[slot(1)], 10).await.unwrap(), [runs[3].clone()]);
    assert_eq!(store.acquire_slots(&runs[4], &[slot(4)], 10, 60_000).await.unwrap(), queued(1));
    assert!(granted(store.acquire_slots(&runs[3], &[slot(3)], 10, 120_000).await.unwrap()));
    // Priority: a newcomer whose score is earlier goes ahead of the queue.
    assert_eq!(store.acquire_slots(&runs[6], &[slot(0)], 20, 180_000).await.unwrap(), queued(0));
    // Run 2's invocation died: its hold lapses at 60 s and the head takes its place.
    assert!(granted(store.acquire_slots(&runs[6], &[slot(0)], 60_001, 180_000).await.unwrap()));
    assert_eq!(store.acquire_slots(&runs[4], &[slot(4)], 60_001, 180_000).await.unwrap(), queued(0));
    // Two limits: refused by the second, a run holds neither.
    let (a, b) = (unique("slot-a"), unique("slot-b"));
    let one = |key: &str| Slot { key: key.to_string(), limit: 1, score: 0 };
    assert!(granted(store.acquire_slots(&runs[0], &[one(&b)], 0, 60_000).await.unwrap()));
    assert_eq!(
        store.acquire_slots(&runs[5], &[one(&a), one(&b)], 0, 60_000).await.unwrap(),
        Acquired::Queued { slot: 1, position: 0 }
    );
    assert!(granted(store.acquire_slots(&runs[2], &[one(&a)], 0, 60_000).await.unwrap()), "run 5 holds no slot of a");
    assert_eq!(store.release_slots(&runs[0], &[one(&b)], 0).await.unwrap(), [runs[5].clone()]);
}

/// C1, C3, C15 through the Runner: while one run executes under `concurrency: 1`, the next is
/// `queued` (saying why), starts when the slot is given back, sleeping holds no slot, and a
/// run cancelled while queued leaves the queue without blocking the one behind it.
pub async fn concurrency_queues_runs_while_a_slot_is_held<S: RunStore>(store: S) {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let order = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let scenario = Scenario::new(store, |prefix| {
        vec![gated_worker(format!("{prefix}-one"), "fc/one", &gate, &order, true, |f| f)]
    });
    let event = |name: &str, blocks: bool| {
        EventPayload::new("fc/one", json!({"user": "u1", "name": name, "blocks": blocks})).with_id(unique(name))
    };
    let (first, second, third) = (event("first", true), event("second", false), event("third", false));
    let function = format!("{}-one", scenario.prefix);
    let run_of = |event: &EventPayload| RunId::for_event(&function, event.id.as_deref().unwrap());
    for event in [&first, &second, &third] {
        scenario.runner().accept(event).await.unwrap();
    }
    let runner = scenario.runner();
    let (first_run, second_run, third_run) = (run_of(&first), run_of(&second), run_of(&third));
    let blocked = runner.drive(&first_run);
    let others = async {
        // The first run is in its step, holding the key's only slot.
        while order.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        let second_drive = runner.drive(&second_run).await.unwrap();
        let third_drive = runner.drive(&third_run).await.unwrap();
        (second_drive, third_drive)
    };
    let (first_drive, (second_drive, third_drive)) = futures::join!(blocked, async {
        let drives = others.await;
        // Cancel the second while it waits; then let the first finish its step.
        runner.control().cancel(&second_run).await.unwrap();
        gate.add_permits(1);
        drives
    });
    assert!(
        matches!(second_drive, crate::runner::Drive::Suspended { status: RunStatus::Queued, .. }),
        "{second_drive:?}"
    );
    assert!(
        matches!(third_drive, crate::runner::Drive::Suspended { status: RunStatus::Queued, .. }),
        "{third_drive:?}"
    );
    // The first run sleeps now, holding no slot; its release woke the queue's head.
    assert!(matches!(first_drive.unwrap(), crate::runner::Drive::Suspended { status: RunStatus::Sleeping, .. }));
    let third_head = runner.store().load(&third_run).await.unwrap().unwrap().meta;
    assert_eq!(third_head.status, RunStatus::Queued);
    assert_eq!(
        third_head.queued.as_ref().map(crate::record::Queued::describe).as_deref(),
        Some("queued by concurrency for key `u1`, 1 ahead")
    );
    runner.run_until_idle().await.unwrap();
    // The cancelled second run left the queue when woken; the third ran in its place.
    assert_eq!(*order.lock().unwrap(), ["first", "third"]);
    assert_eq!(runner.store().load(&third_run).await.unwrap().unwrap().meta.status, RunStatus::Sleeping);
    scenario.at(120).await;
    for run in [&first_run, &third_run] {
        assert_eq!(runner.store().load(run).await.unwrap().unwrap().meta.status, RunStatus::Completed);
    }
}

/// T1, T6, T9, T12: a throttle starts runs on GCRA's schedule (limit 2 per 10 s, five at once:
/// 0, 0, 5, 10, 15 s), queues the rest saying until when, keeps keys apart, lets a start
/// timeout cancel queued runs, and a duplicate delivery spends nothing.
pub async fn throttle_starts_runs_on_schedule_and_queues_the_rest<S: RunStore>(store: S) {
    let starts = Starts::default();
    let scenario = Scenario::with_clock(store, |prefix, clock| {
        vec![
            start_recorder(format!("{prefix}-spaced"), "fc/t", &starts, clock, |f| f.throttle(Throttle::new(2, "10s"))),
            start_recorder(format!("{prefix}-keyed"), "fc/tk", &starts, clock, |f| {
                f.throttle(Throttle::new(1, "10s").key("event.data.user"))
            }),
            start_recorder(format!("{prefix}-timed"), "fc/tt", &starts, clock, |f| {
                f.throttle(Throttle::new(2, "10s")).timeouts(Timeouts::new().start("7s"))
            }),
        ]
    });
    let started = |from: usize| starts.lock().unwrap()[from..].to_vec();
    let at = |pairs: &[(&str, i64)]| pairs.iter().map(|(name, secs)| (name.to_string(), *secs)).collect::<Vec<_>>();
    // T1, with T12: the first event delivered twice.
    let mut ids = Vec::new();
    for name in ["e1", "e2", "e3", "e4", "e5"] {
        ids.push(scenario.send_at(0, "fc/t", json!({"name": name})).await);
    }
    let duplicate = EventPayload::new("fc/t", json!({"name": "e1"})).with_id(&ids[0]);
    scenario.runner().accept(&duplicate).await.unwrap();
    scenario.runner().run_until_idle().await.unwrap();
    let fourth = scenario.head("spaced", &ids[3]).await;
    assert_eq!(fourth.status, RunStatus::Queued);
    assert_eq!(
        fourth.queued.as_ref().map(crate::record::Queued::describe).as_deref(),
        Some("queued by throttle, 1 ahead, until 1970-01-01T00:00:10Z")
    );
    for secs in [5, 10, 15, 20] {
        scenario.at(secs).await;
    }
    assert_eq!(started(0), at(&[("e1", 0), ("e2", 0), ("e3", 5), ("e4", 10), ("e5", 15)]));
    // T6: each user has its own limiter.
    for name in ["u1-a", "u2-a", "u1-b", "u2-b", "u1-c", "u2-c"] {
        scenario.send_at(100, "fc/tk", json!({"name": name, "user": &name[..2]})).await;
    }
    for secs in [110, 120] {
        scenario.at(secs).await;
    }
    // (Two keys due at the same instant start in either order.)
    let mut keyed = started(5);
    keyed.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    assert_eq!(keyed, at(&[("u1-a", 100), ("u2-a", 100), ("u1-b", 110), ("u2-b", 110), ("u1-c", 120), ("u2-c", 120)]));
    // T9: a start timeout of 7 s cancels the runs still queued at 207.
    let mut timed = Vec::new();
    for name in ["t1", "t2", "t3", "t4", "t5"] {
        timed.push(scenario.send_at(200, "fc/tt", json!({"name": name})).await);
    }
    for secs in [205, 207, 210, 215, 220] {
        scenario.at(secs).await;
    }
    assert_eq!(started(11), at(&[("t1", 200), ("t2", 200), ("t3", 205)]));
    for id in &timed[3..] {
        let head = scenario.head("timed", id).await;
        assert_eq!((head.status, head.ended_at), (RunStatus::Cancelled, Some(207_000)));
    }
}

/// The combined scenarios of the reference (section 5) that need no debounce: M3, a singleton
/// is checked at admission, before a throttle could queue the run; M4, a run cancelled while
/// its throttle queues it never starts, and leaves the limiter as it was.
pub async fn combined_options_act_in_inngests_order<S: RunStore>(store: S) {
    let starts = Starts::default();
    let scenario = Scenario::with_clock(store, |prefix, clock| {
        vec![
            start_recorder(format!("{prefix}-single"), "fc/m3", &starts, clock, |f| {
                f.throttle(Throttle::new(1, "10s")).singleton(Singleton::skip())
            }),
            start_recorder(format!("{prefix}-cancellable"), "fc/m4", &starts, clock, |f| {
                f.throttle(Throttle::new(2, "10s")).cancel_on(CancelOn::event("fc/m4.stop").matching("data.name"))
            }),
        ]
    });
    let started = |from: usize| starts.lock().unwrap()[from..].to_vec();
    let at = |pairs: &[(&str, i64)]| pairs.iter().map(|(name, secs)| (name.to_string(), *secs)).collect::<Vec<_>>();
    // M3: the second event is skipped at once by the singleton, not queued by the throttle.
    let first = scenario.send_at(0, "fc/m3", json!({"name": "a0", "secs": 30})).await;
    let second = scenario.send_at(1, "fc/m3", json!({"name": "a1", "secs": 30})).await;
    assert_eq!(scenario.status("single", &first).await.0, RunStatus::Sleeping);
    let skipped = scenario.head("single", &second).await;
    assert_eq!(
        (skipped.status, skipped.skipped.map(|s| s.reason), skipped.ended_at),
        (RunStatus::Skipped, Some(SkipReason::Singleton), Some(1_000))
    );
    assert_eq!(started(0), at(&[("a0", 0)]));
    // M4: T1's five events; the fifth, queued for 15, is cancelled at 12.
    let mut ids = Vec::new();
    for name in ["e1", "e2", "e3", "e4", "e5"] {
        ids.push(scenario.send_at(100, "fc/m4", json!({"name": name})).await);
    }
    for secs in [105, 110] {
        scenario.at(secs).await;
    }
    scenario.send_at(112, "fc/m4.stop", json!({"name": "e5"})).await;
    let cancelled = scenario.head("cancellable", &ids[4]).await;
    assert_eq!((cancelled.status, cancelled.ended_at), (RunStatus::Cancelled, Some(112_000)));
    // The limiter's next start is still 115: a new event then starts at once.
    let sixth = scenario.send_at(115, "fc/m4", json!({"name": "e6"})).await;
    scenario.at(120).await;
    assert_eq!(started(1), at(&[("e1", 100), ("e2", 100), ("e3", 105), ("e4", 110), ("e6", 115)]));
    assert_eq!(scenario.status("cancellable", &sixth).await, COMPLETED);
    assert_eq!(scenario.steps("cancellable", &ids[4]).await, Vec::<String>::new());
}

/// T2, T3 and R3: bursts. A throttle starts `limit + burst` runs at once from idle, then one
/// every `period / limit` (T2: 1 per 5 s with burst 2, six events at 0 start at 0, 0, 0, 5, 10,
/// 15; T3: 2 per 6 s with burst 1, at 0, 0, 0, 3, 6, 9); a rate limit of 100 a minute admits its
/// hidden burst of 10 plus one of 100 events at once and skips the other 89.
pub async fn bursts_start_at_inngests_times<S: RunStore>(store: S) {
    let starts = Starts::default();
    let scenario = Scenario::with_clock(store, |prefix, clock| {
        vec![
            start_recorder(format!("{prefix}-t2"), "fc/t2", &starts, clock, |f| {
                f.throttle(Throttle::new(1, "5s").burst(2))
            }),
            start_recorder(format!("{prefix}-t3"), "fc/t3", &starts, clock, |f| {
                f.throttle(Throttle::new(2, "6s").burst(1))
            }),
            Function::new(format!("{prefix}-r3"))
                .on_event("fc/r3")
                .rate_limit(RateLimit::new(100, "1m"))
                .handler(done)
                .unwrap(),
        ]
    });
    let started = |from: usize| starts.lock().unwrap()[from..].iter().map(|(_, secs)| *secs).collect::<Vec<_>>();
    for n in 0..6 {
        scenario.send_at(0, "fc/t2", json!({"name": format!("t2-{n}")})).await;
    }
    for secs in [5, 10, 15] {
        scenario.at(secs).await;
    }
    assert_eq!(started(0), [0, 0, 0, 5, 10, 15]);
    for n in 0..6 {
        scenario.send_at(100, "fc/t3", json!({"name": format!("t3-{n}")})).await;
    }
    for secs in [103, 106, 109] {
        scenario.at(secs).await;
    }
    assert_eq!(started(6), [100, 100, 100, 103, 106, 109]);
    let mut statuses = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..100 {
        let id = scenario.send_at(200, "fc/r3", json!({})).await;
        *statuses.entry(scenario.status("r3", &id).await.0.to_string()).or_default() += 1;
    }
    assert_eq!(statuses, [("completed".to_string(), 11), ("skipped".to_string(), 89)].into());
}

/// X10 and S4: a cancel rule whose condition also reads the trigger (`event.data.cancellable
/// == true && async.data.id == event.data.id`) cannot cancel a run whose trigger fails it; a
/// singleton's key stays locked while its run backs off after a failed step.
pub async fn conditions_over_the_trigger_and_locks_through_retries<S: RunStore>(store: S) {
    let attempts = Arc::new(AtomicU64::new(0));
    let scenario = Scenario::new(store, |prefix| {
        let attempts = Arc::clone(&attempts);
        vec![
            Function::new(format!("{prefix}-guarded"))
                .on_event("fc/guarded")
                .cancel_on(
                    CancelOn::event("fc/guarded.stop")
                        .when("event.data.cancellable == true && async.data.id == event.data.id"),
                )
                .handler(sleep_then_finish)
                .unwrap(),
            Function::new(format!("{prefix}-retried"))
                .on_event("fc/retried")
                .singleton(Singleton::skip().key("event.data.user"))
                .handler(move |_: Event, step: Step| {
                    let attempts = Arc::clone(&attempts);
                    async move {
                        step.run("flaky", || async {
                            if attempts.fetch_add(1, Ordering::SeqCst) == 0 {
                                Err(crate::StepError::new("first attempt fails"))
                            } else {
                                Ok(())
                            }
                        })
                        .await?;
                        Ok::<_, crate::StepError>("done")
                    }
                })
                .unwrap(),
        ]
    });
    let kept = scenario.send_at(0, "fc/guarded", json!({"id": "r1", "cancellable": false, "secs": 3_600})).await;
    let open = scenario.send_at(0, "fc/guarded", json!({"id": "r2", "cancellable": true, "secs": 3_600})).await;
    scenario.send_at(10, "fc/guarded.stop", json!({"id": "r1"})).await;
    scenario.send_at(11, "fc/guarded.stop", json!({"id": "r2"})).await;
    assert_eq!(scenario.status("guarded", &kept).await.0, RunStatus::Sleeping);
    assert_eq!(scenario.status("guarded", &open).await.0, RunStatus::Cancelled);
    // S4: the first attempt fails; the run backs off holding the key, so A2 is skipped.
    let a1 = scenario.send_at(1_000, "fc/retried", json!({"user": "A"})).await;
    assert_eq!(scenario.status("retried", &a1).await.0, RunStatus::Sleeping);
    let a2 = scenario.send_at(1_010, "fc/retried", json!({"user": "A"})).await;
    assert_eq!(scenario.status("retried", &a2).await, (RunStatus::Skipped, Some(SkipReason::Singleton)));
    scenario.at(1_100).await;
    assert_eq!(scenario.status("retried", &a1).await, COMPLETED);
}

/// P1 and C2 through the Runner: while R0 executes under `concurrency: 1`, runs that arrive
/// queue by creation time minus their priority (P1: e1 and e2 at 1 and 2 s, e3 at 3 s with
/// priority 120 goes first: e3, e1, e2), and another key's run does not wait (C2).
pub async fn priority_orders_the_queue_and_keys_stay_apart<S: RunStore>(store: S) {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let order = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let scenario = Scenario::new(store, |prefix| {
        vec![gated_worker(format!("{prefix}-ranked"), "fc/ranked", &gate, &order, false, |f| {
            f.priority("event.data.p")
        })]
    });
    let event = |name: &str, user: &str, p: i64, blocks: bool| {
        EventPayload::new("fc/ranked", json!({"user": user, "name": name, "p": p, "blocks": blocks}))
            .with_id(unique(name))
    };
    let function = format!("{}-ranked", scenario.prefix);
    let run_of = |event: &EventPayload| RunId::for_event(&function, event.id.as_deref().unwrap());
    let runner = scenario.runner();
    let r0 = event("r0", "A", 0, true);
    runner.accept(&r0).await.unwrap();
    let r0_run = run_of(&r0);
    let blocked = runner.drive(&r0_run);
    let arrivals = async {
        while order.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        // R0 is in its step, holding A's only slot.
        let mut queued = Vec::new();
        for (secs, name, user, p) in [(1, "e1", "A", 0), (2, "e2", "A", 0), (3, "e3", "A", 120), (4, "b1", "B", 0)] {
            scenario.runs.clock().set(secs * 1_000);
            let arriving = event(name, user, p, false);
            runner.accept(&arriving).await.unwrap();
            queued.push((name, runner.drive(&run_of(&arriving)).await.unwrap()));
        }
        gate.add_permits(1);
        queued
    };
    let (first, queued) = futures::join!(blocked, arrivals);
    assert!(matches!(first.unwrap(), crate::runner::Drive::Completed(_)));
    for (name, drive) in &queued[..3] {
        assert!(
            matches!(drive, crate::runner::Drive::Suspended { status: RunStatus::Queued, .. }),
            "{name}: {drive:?}"
        );
    }
    assert!(matches!(queued[3].1, crate::runner::Drive::Completed(_)), "B's run did not wait: {:?}", queued[3].1);
    runner.run_until_idle().await.unwrap();
    assert_eq!(*order.lock().unwrap(), ["r0", "b1", "e3", "e1", "e2"]);
}

/// The run a debounce window of `function` started, given its first event.
async fn fired<S: RunStore>(scenario: &Scenario<S>, function: &str, first_event: &str) -> Option<RunMeta> {
    let function = format!("{}-{function}", scenario.prefix);
    let placeholder = RunId::for_event(&function, first_event);
    let run = crate::flow::fired_run(&placeholder, &function);
    scenario.runner().store().load(&run).await.unwrap().map(|journal| journal.meta)
}

/// Completes with the numbers (`data.n`) of every event it was started with.
async fn window_numbers(event: Event, step: Step) -> Result<Value, crate::StepError> {
    let numbers: Vec<Value> = step.events::<Value>()?.into_iter().map(|event| event.data["n"].clone()).collect();
    Ok(json!({"last": event.data["n"], "events": numbers}))
}

/// D1 to D7 and V4's empty key, M1, M2, a start timeout counted from the firing, Cairn's
/// `all_events`, and a cancelled window: debounce starts one run per burst, at the exact time.
pub async fn debounce_starts_one_run_per_burst_with_the_last_event<S: RunStore>(store: S) {
    use crate::flow::Debounce;
    let scenario = Scenario::new(store, |prefix| {
        let debounced = |id: &str, trigger: &str, debounce: Debounce| {
            Function::new(format!("{prefix}-{id}")).on_event(trigger).debounce(debounce)
        };
        vec![
            debounced("d1", "fc/d1", Debounce::new("5s").key("")).handler(window_numbers).unwrap(),
            debounced("d2", "fc/d2", Debounce::new("5s").timeout("10s")).handler(window_numbers).unwrap(),
            debounced("d3", "fc/d3", Debounce::new("5s").key("event.data.user")).handler(window_numbers).unwrap(),
            debounced("d6", "fc/d6", Debounce::new("5s"))
                .rate_limit(RateLimit::new(1, "1h"))
                .handler(window_numbers)
                .unwrap(),
            debounced("m1", "fc/m1", Debounce::new("5s")).idempotency("event.data.k").handler(window_numbers).unwrap(),
            debounced("m2", "fc/m2", Debounce::new("5s"))
                .singleton(Singleton::skip())
                .handler(sleep_then_finish)
                .unwrap(),
            debounced("late", "fc/late", Debounce::new("5s"))
                .timeouts(Timeouts::new().start("3s"))
                .handler(window_numbers)
                .unwrap(),
            debounced("all", "fc/all", Debounce::new("5s").all_events()).handler(window_numbers).unwrap(),
        ]
    });
    // Each part is its own boxed future: one poll frame holding every await of the whole
    // scenario outgrows a 2 MB test thread in debug builds.
    Box::pin(debounce_bursts(&scenario)).await;
    Box::pin(debounce_keys_and_order(&scenario)).await;
    Box::pin(debounce_with_limits(&scenario)).await;
    Box::pin(debounce_windows_and_cancel(&scenario)).await;
}

/// D1, D7, D2.
async fn debounce_bursts<S: RunStore>(scenario: &Scenario<S>) {
    let output = |meta: &RunMeta| (meta.status, meta.created_at, meta.output.clone());
    // D1: events at 0, 2 and 4 start one run at 9 with the event from 4; the first event's
    // placeholder showed the window, then names the run.
    let first = scenario.send_at(0, "fc/d1", json!({"n": 0})).await;
    let placeholder = scenario.head("d1", &first).await;
    let queued = placeholder.queued.clone().unwrap();
    assert_eq!(
        (placeholder.status, queued.describe()),
        (RunStatus::Queued, "debounced until 1970-01-01T00:00:05Z (1 event)".into())
    );
    scenario.send_at(2, "fc/d1", json!({"n": 2})).await;
    scenario.send_at(4, "fc/d1", json!({"n": 4})).await;
    scenario.at(8).await;
    assert!(fired(scenario, "d1", &first).await.is_none(), "nothing before 9");
    assert_eq!(
        scenario.head("d1", &first).await.queued.unwrap().describe(),
        "debounced until 1970-01-01T00:00:09Z (3 events)"
    );
    scenario.at(9).await;
    let run = fired(scenario, "d1", &first).await.unwrap();
    assert_eq!(output(&run), (RunStatus::Completed, 9_000, Some(json!({"last": 4, "events": [4]}))));
    let placeholder = scenario.head("d1", &first).await;
    assert_eq!(
        (placeholder.status, placeholder.skipped.unwrap().describe()),
        (RunStatus::Skipped, format!("debounced: the window's run is `{}`", run.run_id))
    );
    // D7: the placeholder woken again (a duplicate timer) starts nothing more.
    scenario.runner().drive(&RunId::for_event(&format!("{}-d1", scenario.prefix), &first)).await.unwrap();
    let query = crate::store::RunQuery { function_id: Some(format!("{}-d1", scenario.prefix)), ..Default::default() };
    let runs = scenario.runner().store().list_runs(&query).await.unwrap();
    assert_eq!(runs.len(), 2, "one placeholder and one run: later events leave no head");
    // D2: events at 100, 103, 106, 109 and 112 with a 10 s timeout: a run at 110 with the event
    // from 109; the event at 112 opens a new window, run at 117.
    let d2 = scenario.send_at(100, "fc/d2", json!({"n": 0})).await;
    for (at, n) in [(103, 3), (106, 6), (109, 9)] {
        scenario.send_at(at, "fc/d2", json!({"n": n})).await;
    }
    let d2_second = scenario.send_at(112, "fc/d2", json!({"n": 12})).await;
    let run = fired(scenario, "d2", &d2).await.unwrap();
    assert_eq!(output(&run), (RunStatus::Completed, 110_000, Some(json!({"last": 9, "events": [9]}))));
    scenario.at(117).await;
    let run = fired(scenario, "d2", &d2_second).await.unwrap();
    assert_eq!(output(&run), (RunStatus::Completed, 117_000, Some(json!({"last": 12, "events": [12]}))));
}

/// D3, D4, D5.
async fn debounce_keys_and_order<S: RunStore>(scenario: &Scenario<S>) {
    let output = |meta: &RunMeta| (meta.status, meta.created_at, meta.output.clone());
    // D3: A@200, B@200.5, A@201: B's run at 205.5, A's at 206.
    let a = scenario.send_event_at_ms(200_000, EventPayload::new("fc/d3", json!({"user": "a", "n": 1}))).await;
    let b = scenario.send_event_at_ms(200_500, EventPayload::new("fc/d3", json!({"user": "b", "n": 2}))).await;
    scenario.send_event_at_ms(201_000, EventPayload::new("fc/d3", json!({"user": "a", "n": 3}))).await;
    scenario.at(210).await;
    let (run_a, run_b) = (fired(scenario, "d3", &a).await.unwrap(), fired(scenario, "d3", &b).await.unwrap());
    assert_eq!(output(&run_b), (RunStatus::Completed, 205_500, Some(json!({"last": 2, "events": [2]}))));
    assert_eq!(output(&run_a), (RunStatus::Completed, 206_000, Some(json!({"last": 3, "events": [3]}))));
    assert_eq!(
        scenario.head("d3", &a).await.skipped.unwrap().describe(),
        format!("debounced for key `a`: the window's run is `{}`", run_a.run_id)
    );
    // D4: e1 (ts 310) at 300, e2 (ts 305) at 302: the run at 305 has e1; e2 did not extend.
    let e1 = EventPayload { ts: Some(310_000), ..EventPayload::new("fc/d1", json!({"n": "e1"})) };
    let e1 = scenario.send_event_at_ms(300_000, e1).await;
    let e2 = EventPayload { ts: Some(305_000), ..EventPayload::new("fc/d1", json!({"n": "e2"})) };
    scenario.send_event_at_ms(302_000, e2).await;
    scenario.at(305).await;
    let run = fired(scenario, "d1", &e1).await.unwrap();
    assert_eq!(output(&run), (RunStatus::Completed, 305_000, Some(json!({"last": "e1", "events": ["e1"]}))));
    // D5: e@400 and e@406 are two windows: runs at 405 and 411.
    let w1 = scenario.send_at(400, "fc/d1", json!({"n": 1})).await;
    let w2 = scenario.send_at(406, "fc/d1", json!({"n": 2})).await;
    scenario.at(411).await;
    assert_eq!(fired(scenario, "d1", &w1).await.unwrap().created_at, 405_000);
    assert_eq!(fired(scenario, "d1", &w2).await.unwrap().created_at, 411_000);
}

/// D6, M1, M2.
async fn debounce_with_limits<S: RunStore>(scenario: &Scenario<S>) {
    let output = |meta: &RunMeta| (meta.status, meta.created_at, meta.output.clone());
    // D6: with a rate limit of 1 per hour, e@502 is dropped before debouncing (a skipped run),
    // so the run at 505 has e@500.
    let kept = scenario.send_at(500, "fc/d6", json!({"n": 0})).await;
    let dropped = scenario.send_at(502, "fc/d6", json!({"n": 2})).await;
    assert_eq!(scenario.status("d6", &dropped).await, (RunStatus::Skipped, Some(SkipReason::RateLimit)));
    scenario.at(510).await;
    let run = fired(scenario, "d6", &kept).await.unwrap();
    assert_eq!(output(&run), (RunStatus::Completed, 505_000, Some(json!({"last": 0, "events": [0]}))));
    // M1: idempotency acts per event before debouncing: A@602 is skipped; the run at 605 has A@600.
    let kept = scenario.send_at(600, "fc/m1", json!({"k": "A", "n": 0})).await;
    let skipped = scenario.send_at(602, "fc/m1", json!({"k": "A", "n": 2})).await;
    assert_eq!(scenario.status("m1", &skipped).await, (RunStatus::Skipped, Some(SkipReason::Idempotency)));
    scenario.at(610).await;
    assert_eq!(fired(scenario, "m1", &kept).await.unwrap().output, Some(json!({"last": 0, "events": [0]})));
    // M2: the singleton is checked when the window fires: A@700 fires at 705 (sleeps 20 s);
    // A@710 fires at 715 while it is active, and is skipped.
    let m2a = scenario.send_at(700, "fc/m2", json!({"secs": 20})).await;
    let m2b = scenario.send_at(710, "fc/m2", json!({"secs": 20})).await;
    scenario.at(715).await;
    assert_eq!(fired(scenario, "m2", &m2a).await.unwrap().status, RunStatus::Sleeping);
    let second = fired(scenario, "m2", &m2b).await.unwrap();
    assert_eq!(
        (second.status, second.created_at, second.skipped.map(|s| s.reason)),
        (RunStatus::Skipped, 715_000, Some(SkipReason::Singleton))
    );
}

/// A start timeout counted from the firing, `all_events`, a cancelled window.
async fn debounce_windows_and_cancel<S: RunStore>(scenario: &Scenario<S>) {
    // A start timeout counts from the firing, not from the first event.
    let late = scenario.send_at(800, "fc/late", json!({"n": 1})).await;
    scenario.at(810).await;
    assert_eq!(fired(scenario, "late", &late).await.unwrap().status, RunStatus::Completed);
    // Cairn's all_events: the run sees every event of its window, oldest first.
    let all = scenario.send_at(900, "fc/all", json!({"n": 1})).await;
    scenario.send_at(901, "fc/all", json!({"n": 2})).await;
    scenario.send_at(903, "fc/all", json!({"n": 3})).await;
    scenario.at(908).await;
    assert_eq!(fired(scenario, "all", &all).await.unwrap().output, Some(json!({"last": 3, "events": [1, 2, 3]})));
    // Cancelling a window's placeholder drops the window: the next event opens a new one.
    let dropped = scenario.send_at(1_000, "fc/d1", json!({"n": 1})).await;
    let placeholder = RunId::for_event(&format!("{}-d1", scenario.prefix), &dropped);
    scenario.runner().control().cancel(&placeholder).await.unwrap();
    let next = scenario.send_at(1_002, "fc/d1", json!({"n": 2})).await;
    scenario.at(1_010).await;
    assert!(fired(scenario, "d1", &dropped).await.is_none(), "a cancelled window starts nothing");
    assert_eq!(fired(scenario, "d1", &next).await.unwrap().created_at, 1_007_000);
}

/// Completes with its trigger's number (`data.n`) and the numbers of every event it was
/// started with.
async fn batch_numbers(event: Event, step: Step) -> Result<Value, crate::StepError> {
    let numbers: Vec<Value> = step.events::<Value>()?.into_iter().map(|event| event.data["n"].clone()).collect();
    Ok(json!({"trigger": event.data["n"], "events": numbers}))
}

/// B1 to B5, B7 and B8, and a full batch of 100 events run as one run in the delivery of its
/// last event: batches start one run per batch, at the exact time, with every event in order.
pub async fn batches_start_one_run_per_batch_with_every_event<S: RunStore>(store: S) {
    use crate::flow::BatchEvents;
    let scenario = Scenario::new(store, |prefix| {
        let batched = |id: &str, trigger: &str, batch: BatchEvents| {
            Function::new(format!("{prefix}-{id}")).on_event(trigger).batch_events(batch)
        };
        vec![
            batched("b1", "fc/b1", BatchEvents::new(3, "5s")).handler(batch_numbers).unwrap(),
            batched("b2", "fc/b2", BatchEvents::new(3, "5s").key("event.data.acct")).handler(batch_numbers).unwrap(),
            batched("b3", "fc/b3", BatchEvents::new(10, "5s").when("event.data.plan == \"free\""))
                .handler(batch_numbers)
                .unwrap(),
            batched("b7", "fc/b7", BatchEvents::new(3, "5s"))
                .concurrency(Concurrency::new(1).key("event.data.acct"))
                .handler(batch_numbers)
                .unwrap(),
            batched("big", "fc/big", BatchEvents::new(100, "60s")).handler(batch_numbers).unwrap(),
        ]
    });
    Box::pin(batch_sizes_and_timeouts(&scenario)).await;
    Box::pin(batch_keys_conditions_and_duplicates(&scenario)).await;
}

/// B1, B8, B5 and a full batch of 100.
async fn batch_sizes_and_timeouts<S: RunStore>(scenario: &Scenario<S>) {
    let output = |meta: &RunMeta| (meta.status, meta.created_at, meta.output.clone());
    // B1 and B8: seven events at 0 start [1,2,3] and [4,5,6] at 0, and [7] at 5; each run's
    // trigger is its first event.
    let mut ids = Vec::new();
    for n in 1..=7 {
        ids.push(scenario.send_at(0, "fc/b1", json!({"n": n})).await);
    }
    let first = fired(scenario, "b1", &ids[0]).await.unwrap();
    assert_eq!(output(&first), (RunStatus::Completed, 0, Some(json!({"trigger": 1, "events": [1, 2, 3]}))));
    assert_eq!(first.started_by.as_deref(), Some("batch of 3 events"));
    let second = fired(scenario, "b1", &ids[3]).await.unwrap();
    assert_eq!(output(&second), (RunStatus::Completed, 0, Some(json!({"trigger": 4, "events": [4, 5, 6]}))));
    let placeholder = scenario.head("b1", &ids[6]).await;
    assert_eq!(placeholder.queued.unwrap().describe(), "batch of 1 event until 1970-01-01T00:00:05Z");
    scenario.at(5).await;
    let last = fired(scenario, "b1", &ids[6]).await.unwrap();
    assert_eq!(output(&last), (RunStatus::Completed, 5_000, Some(json!({"trigger": 7, "events": [7]}))));
    let placeholder = scenario.head("b1", &ids[0]).await;
    assert_eq!(
        (placeholder.status, placeholder.skipped.unwrap().describe()),
        (RunStatus::Skipped, format!("batched: the batch's run is `{}`", first.run_id))
    );
    for joined in [&ids[1], &ids[2], &ids[4], &ids[5]] {
        let run = RunId::for_event(&format!("{}-b1", scenario.prefix), joined);
        assert!(scenario.runner().store().load(&run).await.unwrap().is_none(), "a joining event leaves no run");
    }
    // B5: the timeout counts from the first event: e1@100 and e2@104 run at 105.
    let e1 = scenario.send_at(100, "fc/b1", json!({"n": 1})).await;
    scenario.send_at(104, "fc/b1", json!({"n": 2})).await;
    scenario.at(105).await;
    let run = fired(scenario, "b1", &e1).await.unwrap();
    assert_eq!(output(&run), (RunStatus::Completed, 105_000, Some(json!({"trigger": 1, "events": [1, 2]}))));
    // A full batch of 100 runs in the delivery of its last event, with all 100 in order.
    let mut big = Vec::new();
    for n in 0..100 {
        big.push(scenario.send_at(200, "fc/big", json!({"n": n})).await);
    }
    let run = fired(scenario, "big", &big[0]).await.unwrap();
    let expected: Vec<i32> = (0..100).collect();
    assert_eq!(output(&run), (RunStatus::Completed, 200_000, Some(json!({"trigger": 0, "events": expected}))));
}

/// B2, B3, B4 and B7.
async fn batch_keys_conditions_and_duplicates<S: RunStore>(scenario: &Scenario<S>) {
    let output = |meta: &RunMeta| (meta.status, meta.created_at, meta.output.clone());
    // B2: one batch per account: a1@300, b1@300, a2@301, a3@302: [a1,a2,a3] at 302, [b1] at 305.
    let a1 = scenario.send_at(300, "fc/b2", json!({"acct": "a", "n": 1})).await;
    let b1 = scenario.send_at(300, "fc/b2", json!({"acct": "b", "n": 10})).await;
    scenario.send_at(301, "fc/b2", json!({"acct": "a", "n": 2})).await;
    scenario.send_at(302, "fc/b2", json!({"acct": "a", "n": 3})).await;
    let run = fired(scenario, "b2", &a1).await.unwrap();
    assert_eq!(output(&run), (RunStatus::Completed, 302_000, Some(json!({"trigger": 1, "events": [1, 2, 3]}))));
    assert_eq!(
        scenario.head("b2", &b1).await.queued.unwrap().describe(),
        "batch of 1 event for key `b` until 1970-01-01T00:05:05Z"
    );
    scenario.at(305).await;
    let run = fired(scenario, "b2", &b1).await.unwrap();
    assert_eq!(output(&run), (RunStatus::Completed, 305_000, Some(json!({"trigger": 10, "events": [10]}))));
    // B3: an event the `if` excludes runs alone at once; the others batch.
    let f1 = scenario.send_at(400, "fc/b3", json!({"plan": "free", "n": 1})).await;
    let p1 = scenario.send_at(400, "fc/b3", json!({"plan": "paid", "n": 2})).await;
    scenario.send_at(401, "fc/b3", json!({"plan": "free", "n": 3})).await;
    let alone = scenario.head("b3", &p1).await;
    assert_eq!(output(&alone), (RunStatus::Completed, 400_000, Some(json!({"trigger": 2, "events": [2]}))));
    scenario.at(405).await;
    let run = fired(scenario, "b3", &f1).await.unwrap();
    assert_eq!(output(&run), (RunStatus::Completed, 405_000, Some(json!({"trigger": 1, "events": [1, 3]}))));
    // B4: an event delivered twice is batched once.
    let once = EventPayload::new("fc/b1", json!({"n": 1})).with_id(unique("b4"));
    let e1 = scenario.send_event_at_ms(500_000, once.clone()).await;
    scenario.send_event_at_ms(500_000, once).await;
    scenario.send_at(501, "fc/b1", json!({"n": 2})).await;
    scenario.at(505).await;
    let run = fired(scenario, "b1", &e1).await.unwrap();
    assert_eq!(output(&run), (RunStatus::Completed, 505_000, Some(json!({"trigger": 1, "events": [1, 2]}))));
    // B7: the run's concurrency key comes from its first event.
    let a = scenario.send_at(600, "fc/b7", json!({"acct": "a", "n": 1})).await;
    scenario.send_at(600, "fc/b7", json!({"acct": "b", "n": 2})).await;
    scenario.at(605).await;
    let run = fired(scenario, "b7", &a).await.unwrap();
    let function = scenario.runner().registry().get(&format!("{}-b7", scenario.prefix)).unwrap().clone();
    let slots = function.flow().slots(function.id(), &run.event, run.created_at);
    assert_eq!((run.status, slots[0].1.as_deref()), (RunStatus::Completed, Some("a")));
}
