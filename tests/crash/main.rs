//! Crash-and-recover property: generated workflows (runs, sleeps, waits, failing steps,
//! parallel groups, sends) are driven by a Runner whose process "dies" at random points: the
//! store operation fails before or after its write lands (so also after taking the lease, and
//! between a commit and the side effects it owes), and every later operation of that process
//! fails too, as a dead process does nothing. Nothing restarts the run by hand: a crashed
//! invocation is retried once at once as Lambda retries a failed async invocation (inside the
//! dead holder's lease, so usually `Busy`, which arranges a wake-up at the lease's expiry), and
//! time then passes with only the production mechanisms at work: the timer's wake-ups and the
//! reconciler's pass every 30 s. Every run must end with the output of an uncrashed run, its
//! `inngest/function.finished` event must be delivered (the outbox), and no step's final result
//! may be committed twice.
//!
//! The same chaos with many runs of a concurrency-limited function driven at once: the limit
//! holds, no queued run is lost, and runs start first come, first served. And with events
//! batched (`batch_events`): no event is lost or handed to two runs.
#![allow(clippy::unwrap_used)] // Tests: an unwrap that fails is a failed test.

use cairn::flow::Claim;
use cairn::prelude::*;
use cairn::store::{Admission, Commit, CreateRun, MemoryStore, RunQuery, RunStore, StoreError};
use cairn::testing::ManualClock;
use cairn::{
    Bus, Journal, MemoryBus, MemoryTimer, Registry, RunId, RunMeta, RunStatus, Runner, RunnerConfig, StepId,
    StepRecord, Wait,
};
use proptest::prelude::*;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One element of a generated workflow.
#[derive(Clone, Debug)]
enum Item {
    /// A step that fails `fails` times (retriably) before returning its output.
    Run { fails: u32 },
    /// A step that always fails non-retriably; the code catches the error.
    Fatal,
    /// A sleep of this many seconds (short ones happen in process, long ones on the timer).
    Sleep { secs: u64 },
    /// A wait for `test/signal` with this run's id; `arrives` says whether the test sends it.
    Wait { arrives: bool },
    /// Parallel steps, each failing `fails` times first.
    Parallel { fails: Vec<u32> },
    /// A send_event of one event.
    Send,
}

fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        3 => (0u32..3).prop_map(|fails| Item::Run { fails }),
        1 => Just(Item::Fatal),
        2 => prop_oneof![Just(1u64), Just(3), Just(600), Just(7_200)].prop_map(|secs| Item::Sleep { secs }),
        1 => any::<bool>().prop_map(|arrives| Item::Wait { arrives }),
        1 => proptest::collection::vec(0u32..2, 2..4).prop_map(|fails| Item::Parallel { fails }),
        1 => Just(Item::Send),
    ]
}

/// Builds the workflow for `items`; side-effect attempts are counted per step name.
fn workflow(items: Vec<Item>, attempts: Arc<Mutex<HashMap<String, u32>>>) -> Function {
    let items = Arc::new(items);
    Function::new("generated")
        .on_event("test/start")
        .sends("test/sent")
        .awaits("test/signal")
        .retries(3)
        .handler(move |event: Event, step: Step| {
            let items = Arc::clone(&items);
            let attempts = Arc::clone(&attempts);
            async move {
                let mut outputs = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Item::Run { fails } => {
                            outputs.push(flaky(&step, format!("run-{i}"), *fails, &attempts).await?);
                        }
                        Item::Fatal => {
                            let name = format!("fatal-{i}");
                            let counter = Arc::clone(&attempts);
                            let key = name.clone();
                            let result: StepResult<Value> = step
                                .run(name.as_str(), || async move {
                                    *counter.lock().unwrap().entry(key.clone()).or_default() += 1;
                                    Err(StepError::non_retriable(format!("{key} failed")))
                                })
                                .await;
                            outputs.push(json!({"caught": result.unwrap_err().message}));
                        }
                        Item::Sleep { secs } => {
                            step.sleep(&format!("sleep-{i}"), Duration::from_secs(*secs)).await?;
                            outputs.push(json!("slept"));
                        }
                        Item::Wait { .. } => {
                            let wait = WaitFor::event("test/signal").timeout("30d").matching("data.run");
                            let got = step.wait_for_event(&format!("wait-{i}"), wait).await?;
                            outputs.push(got.map(|e| e.data["n"].clone()).unwrap_or(Value::Null));
                        }
                        Item::Parallel { fails } => {
                            let group = fails
                                .iter()
                                .enumerate()
                                .map(|(j, f)| flaky(&step, format!("par-{i}-{j}"), *f, &attempts));
                            outputs.push(json!(try_join_all(group).await?));
                        }
                        Item::Send => {
                            let sent = step
                                .send_event(&format!("send-{i}"), EventPayload::new("test/sent", json!({"i": i})))
                                .await?;
                            outputs.push(json!(sent.ids.len()));
                        }
                    }
                }
                Ok(json!({"run": event.data["run"], "outputs": outputs}))
            }
        })
        .unwrap()
}

async fn flaky(
    step: &Step,
    name: String,
    fails: u32,
    attempts: &Arc<Mutex<HashMap<String, u32>>>,
) -> StepResult<Value> {
    let counter = Arc::clone(attempts);
    let key = name.clone();
    step.run(name.as_str(), || async move {
        let attempt = {
            let mut counts = counter.lock().unwrap();
            let n = counts.entry(key.clone()).or_default();
            *n += 1;
            *n
        };
        if attempt <= fails { Err(StepError::new(format!("{key} attempt {attempt} failed"))) } else { Ok(json!(key)) }
    })
    .await
}

/// A store that fails one operation: `crash_at` counts down across operations; at zero the
/// operation fails, either before it reaches the store or after it landed (the reply is lost).
#[derive(Clone, Debug)]
struct CrashingStore {
    inner: MemoryStore,
    countdown: Arc<AtomicI64>,
    after_write: Arc<Mutex<bool>>,
    /// The process died: every operation fails until a new invocation starts.
    dead: Arc<AtomicBool>,
    final_commits: Arc<Mutex<HashMap<(RunId, StepId), u32>>>,
}

impl CrashingStore {
    fn new() -> Self {
        CrashingStore {
            inner: MemoryStore::new(),
            countdown: Arc::new(AtomicI64::new(i64::MAX)),
            after_write: Arc::new(Mutex::new(false)),
            dead: Arc::new(AtomicBool::new(false)),
            final_commits: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// A fresh process: it crashes at the `point`'s operation count (before or after the
    /// write), or never.
    fn arm(&self, point: Option<&(i64, bool)>) {
        let (at, after) = point.copied().unwrap_or((i64::MAX, false));
        self.countdown.store(at, Ordering::SeqCst);
        *self.after_write.lock().unwrap() = after;
        self.dead.store(false, Ordering::SeqCst);
    }

    fn crash(&self) -> Option<bool> {
        if self.dead.load(Ordering::SeqCst) {
            return Some(false);
        }
        let crash = (self.countdown.fetch_sub(1, Ordering::SeqCst) == 1).then(|| *self.after_write.lock().unwrap());
        if crash.is_some() {
            self.dead.store(true, Ordering::SeqCst);
        }
        crash
    }

    fn count_final(&self, run_id: &RunId, record: &StepRecord, commit: &Commit) {
        if *commit == Commit::Committed && record.state.is_final() {
            *self.final_commits.lock().unwrap().entry((run_id.clone(), record.id.clone())).or_default() += 1;
        }
    }

    fn crashed() -> StoreError {
        StoreError::Unavailable("process crashed".into())
    }
}

impl RunStore for CrashingStore {
    async fn admit_run(&self, meta: RunMeta, claims: &[Claim], now: cairn::Millis) -> Result<Admission, StoreError> {
        match self.crash() {
            Some(false) => Err(Self::crashed()),
            Some(true) => self.inner.admit_run(meta, claims, now).await.and(Err(Self::crashed())),
            None => self.inner.admit_run(meta, claims, now).await,
        }
    }
    async fn acquire_slots(
        &self,
        run_id: &RunId,
        slots: &[cairn::flow::Slot],
        now: cairn::Millis,
        hold_until: cairn::Millis,
    ) -> Result<cairn::flow::Acquired, StoreError> {
        match self.crash() {
            Some(false) => Err(Self::crashed()),
            Some(true) => self.inner.acquire_slots(run_id, slots, now, hold_until).await.and(Err(Self::crashed())),
            None => self.inner.acquire_slots(run_id, slots, now, hold_until).await,
        }
    }
    async fn release_slots(
        &self,
        run_id: &RunId,
        slots: &[cairn::flow::Slot],
        now: cairn::Millis,
    ) -> Result<Vec<RunId>, StoreError> {
        match self.crash() {
            Some(false) => Err(Self::crashed()),
            Some(true) => self.inner.release_slots(run_id, slots, now).await.and(Err(Self::crashed())),
            None => self.inner.release_slots(run_id, slots, now).await,
        }
    }
    async fn throttle_start(
        &self,
        run_id: &RunId,
        key: &str,
        limiter: cairn::flow::Gcra,
        score: cairn::Millis,
        now: cairn::Millis,
    ) -> Result<cairn::flow::Throttled, StoreError> {
        self.inner.throttle_start(run_id, key, limiter, score, now).await
    }
    async fn leave_throttle(&self, run_id: &RunId, key: &str) -> Result<(), StoreError> {
        self.inner.leave_throttle(run_id, key).await
    }
    async fn window(
        &self,
        keys: &[&str],
        change: &cairn::flow::WindowChange,
        now: cairn::Millis,
    ) -> Result<cairn::flow::Windowed, StoreError> {
        match self.crash() {
            Some(false) => Err(Self::crashed()),
            Some(true) => self.inner.window(keys, change, now).await.and(Err(Self::crashed())),
            None => self.inner.window(keys, change, now).await,
        }
    }
    async fn window_events(&self, run_id: &RunId) -> Result<Vec<cairn::EventPayload>, StoreError> {
        self.inner.window_events(run_id).await
    }
    async fn release_lock(&self, key: &str, holder: &RunId) -> Result<(), StoreError> {
        match self.crash() {
            Some(false) => Err(Self::crashed()),
            Some(true) => self.inner.release_lock(key, holder).await.and(Err(Self::crashed())),
            None => self.inner.release_lock(key, holder).await,
        }
    }
    async fn create_run(&self, meta: RunMeta) -> Result<CreateRun, StoreError> {
        match self.crash() {
            Some(false) => Err(Self::crashed()),
            Some(true) => self.inner.create_run(meta).await.and(Err(Self::crashed())),
            None => self.inner.create_run(meta).await,
        }
    }
    async fn load(&self, run_id: &RunId) -> Result<Option<Journal>, StoreError> {
        match self.crash() {
            Some(_) => Err(Self::crashed()),
            None => self.inner.load(run_id).await,
        }
    }
    async fn update_meta(&self, meta: &RunMeta) -> Result<RunMeta, StoreError> {
        match self.crash() {
            Some(false) => Err(Self::crashed()),
            Some(true) => self.inner.update_meta(meta).await.and(Err(Self::crashed())),
            None => self.inner.update_meta(meta).await,
        }
    }
    async fn commit_step(&self, run_id: &RunId, record: &StepRecord) -> Result<Commit, StoreError> {
        let crash = self.crash();
        if crash == Some(false) {
            return Err(Self::crashed());
        }
        let commit = self.inner.commit_step(run_id, record).await?;
        self.count_final(run_id, record, &commit);
        if crash == Some(true) { Err(Self::crashed()) } else { Ok(commit) }
    }
    async fn commit_and_wake(
        &self,
        run_id: &RunId,
        record: &StepRecord,
        now: cairn::Millis,
    ) -> Result<Commit, StoreError> {
        let crash = self.crash();
        if crash == Some(false) {
            return Err(Self::crashed());
        }
        let commit = self.inner.commit_and_wake(run_id, record, now).await?;
        self.count_final(run_id, record, &commit);
        if crash == Some(true) { Err(Self::crashed()) } else { Ok(commit) }
    }
    async fn due_runs(&self, function_id: &str, now: cairn::Millis, limit: usize) -> Result<Vec<RunMeta>, StoreError> {
        match self.crash() {
            Some(_) => Err(Self::crashed()),
            None => self.inner.due_runs(function_id, now, limit).await,
        }
    }
    async fn put_wait(&self, wait: &Wait) -> Result<(), StoreError> {
        match self.crash() {
            Some(false) => Err(Self::crashed()),
            Some(true) => self.inner.put_wait(wait).await.and(Err(Self::crashed())),
            None => self.inner.put_wait(wait).await,
        }
    }
    async fn waits_for(&self, event: &EventPayload) -> Result<Vec<Wait>, StoreError> {
        match self.crash() {
            Some(_) => Err(Self::crashed()),
            None => self.inner.waits_for(event).await,
        }
    }
    async fn remove_wait(&self, wait: &Wait) -> Result<bool, StoreError> {
        match self.crash() {
            Some(false) => Err(Self::crashed()),
            Some(true) => self.inner.remove_wait(wait).await.and(Err(Self::crashed())),
            None => self.inner.remove_wait(wait).await,
        }
    }
    async fn record_event(&self, event: &EventPayload, received_at: cairn::Millis) -> Result<(), StoreError> {
        match self.crash() {
            Some(false) => Err(Self::crashed()),
            Some(true) => self.inner.record_event(event, received_at).await.and(Err(Self::crashed())),
            None => self.inner.record_event(event, received_at).await,
        }
    }
    async fn events_since(&self, name: &str, since: cairn::Millis) -> Result<Vec<EventPayload>, StoreError> {
        match self.crash() {
            Some(_) => Err(Self::crashed()),
            None => self.inner.events_since(name, since).await,
        }
    }
    async fn list_runs(&self, query: &RunQuery) -> Result<Vec<RunMeta>, StoreError> {
        self.inner.list_runs(query).await
    }
}

struct Outcome {
    output: Value,
    final_commits: HashMap<(RunId, StepId), u32>,
    crashes: u32,
}

/// How often the reconciler runs (the template's schedule; the test's clock is manual).
const RECONCILE_EVERY: Duration = Duration::from_secs(30);

/// Drives one run of `items` to its end, crashing at the given operation counts.
async fn drive(items: &[Item], crash_points: &[(i64, bool)]) -> Outcome {
    let attempts = Arc::new(Mutex::new(HashMap::new()));
    let registry = Registry::new([workflow(items.to_vec(), attempts)]).unwrap();
    let clock = ManualClock::new();
    let store = CrashingStore::new();
    let (bus, timer) = (MemoryBus::new(), MemoryTimer::new());
    let new_runner = |n: u32| {
        Runner::new(registry.clone(), store.clone(), bus.clone(), timer.clone())
            .with_clock(Arc::new(clock.clone()))
            .with_config(
                RunnerConfig::default()
                    .budget(Duration::from_secs(60))
                    .lease(Duration::from_secs(60))
                    .owner(format!("invocation-{n}")),
            )
    };
    let mut invocation = 0;
    let mut runner = new_runner(invocation);
    let mut crashes = 0;
    let mut points = crash_points.iter();
    store.arm(points.next());
    let start = EventPayload::new("test/start", json!({"run": "r1"})).with_id("start-1");
    let run_id = RunId::for_event("generated", "start-1");
    let mut next_reconcile = clock.now_ms() + RECONCILE_EVERY.as_millis() as i64;
    for _ in 0..2_000 {
        // At-least-once delivery: EventBridge retries the trigger until its run exists.
        if store.inner.load(&run_id).await.unwrap().is_none() {
            bus.send(std::slice::from_ref(&start)).await.unwrap();
        }
        let mut pass = runner.run_until_idle().await.map(|_| ());
        if pass.is_ok() && clock.now_ms() >= next_reconcile {
            next_reconcile = clock.now_ms() + RECONCILE_EVERY.as_millis() as i64;
            pass = runner.reconcile().await.map(|_| ());
        }
        if pass.is_err() {
            // The invocation died. Lambda retries it at once: a fresh process, inside the dead
            // one's lease (so `Busy`, which arranges a wake-up at the lease's expiry).
            crashes += 1;
            invocation += 1;
            runner = new_runner(invocation);
            store.arm(points.next());
            if store.inner.load(&run_id).await.unwrap().is_some() {
                let _ = runner.drive(&run_id).await;
            }
            continue;
        }
        let Some(journal) = store.inner.load(&run_id).await.unwrap() else {
            continue;
        };
        if journal.meta.status.is_finished() && journal.meta.outbox.is_empty() && journal.meta.wake_at.is_none() {
            assert_eq!(journal.meta.status, RunStatus::Completed, "{:?}", journal.meta.error);
            let finished = bus.sent().iter().filter(|e| e.name == cairn::FINISHED_EVENT).count();
            assert!(finished >= 1, "the run's inngest/function.finished was never sent");
            return Outcome {
                output: journal.meta.output.unwrap(),
                final_commits: store.final_commits.lock().unwrap().clone(),
                crashes,
            };
        }
        // Deliver the signal a pending wait expects, if the workflow says it arrives.
        let pending = store.inner.waits_for(&EventPayload::new("test/signal", json!({"run": "r1"}))).await.unwrap();
        // The signal a waiting step expects; redelivered (same id) until the wait is gone, as
        // EventBridge redelivers, so a duplicate must never satisfy a later wait of the run.
        let expected = pending.iter().find_map(|wait| {
            journal.steps.iter().find(|s| {
                s.id == wait.step_id
                    && matches!(
                        items[s.name.trim_start_matches("wait-").parse::<usize>().unwrap()],
                        Item::Wait { arrives: true }
                    )
            })
        });
        if let Some(step) = expected {
            let signal = EventPayload::new("test/signal", json!({"run": "r1", "n": 42}))
                .with_id(format!("signal-{}", step.name));
            // A failed send is retried on the next round, as the sender would.
            let _ = runner.send(signal).await;
            continue;
        }
        // Nothing to do now: time passes to the next armed wake-up or the first reconciler pass
        // that finds the run due (the passes before it find nothing), whichever comes first.
        let every = RECONCILE_EVERY.as_millis() as i64;
        let pass = journal.meta.wake_at.map(|due| {
            let behind = (due - next_reconcile).max(0);
            next_reconcile + (behind + every - 1) / every * every
        });
        let next = match (timer.next_due(), pass) {
            (Some(at), Some(pass)) => at.min(pass),
            (at, pass) => at.or(pass).unwrap_or(next_reconcile),
        };
        if next >= next_reconcile {
            next_reconcile = next;
        }
        clock.set(next.max(clock.now_ms()));
    }
    panic!("no end after 2000 rounds")
}

proptest! {
    // 96 cases by default; PROPTEST_CASES=5000 for a longer hunt.
    #![proptest_config(ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(96), ..ProptestConfig::default() })]

    #[test]
    fn crashed_runs_end_like_uncrashed_ones_and_commit_each_step_once(
        items in proptest::collection::vec(item(), 1..7),
        crash_points in proptest::collection::vec((1i64..25, any::<bool>()), 0..5),
    ) {
        let reference = cairn::testing::block_on(drive(&items, &[]));
        let crashed = cairn::testing::block_on(drive(&items, &crash_points));
        prop_assert_eq!(&crashed.output, &reference.output);
        for ((run, step), count) in &crashed.final_commits {
            prop_assert_eq!(*count, 1, "step {} of {} committed {} times", step, run, count);
        }
        prop_assert_eq!(crashed.final_commits.len(), reference.final_commits.len());
        prop_assert!(crashed.crashes as usize <= crash_points.len());
    }
}

/// Runs inside `work` steps, per user: how many at once at most, and the order they entered.
#[derive(Default)]
struct Inside {
    now: HashMap<String, usize>,
    most: HashMap<String, usize>,
    entered: Vec<(String, u64)>,
}

/// Yields to the executor once, so concurrent drives interleave inside a step.
async fn yield_once() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if std::mem::replace(&mut yielded, true) {
            std::task::Poll::Ready(())
        } else {
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await;
}

/// A function limited to `limit` executions per user: a `work` step that stays inside across a
/// few yields (so drives running at once overlap there), a sleep (which holds no slot), then
/// its output.
fn limited(limit: u32, inside: Arc<Mutex<Inside>>) -> Function {
    Function::new("limited")
        .on_event("test/limited")
        .concurrency(Concurrency::new(limit).key("event.data.user"))
        .handler(move |event: Event, step: Step| {
            let inside = Arc::clone(&inside);
            async move {
                let user = event.data["user"].as_str().unwrap_or_default().to_string();
                let n = event.data["n"].as_u64().unwrap_or_default();
                let worked: u64 = step
                    .run("work", || async move {
                        {
                            let mut seen = inside.lock().unwrap();
                            let count = seen.now.entry(user.clone()).or_default();
                            *count += 1;
                            let count = *count;
                            let most = seen.most.entry(user.clone()).or_default();
                            *most = (*most).max(count);
                            seen.entered.push((user.clone(), n));
                        }
                        for _ in 0..3 {
                            yield_once().await;
                        }
                        *inside.lock().unwrap().now.entry(user).or_default() -= 1;
                        Ok(n)
                    })
                    .await?;
                step.sleep("rest", "10s").await?;
                Ok(worked)
            }
        })
        .unwrap()
}

struct ChaosOutcome {
    outputs: Vec<Value>,
    most_inside: HashMap<String, usize>,
    entered: Vec<(String, u64)>,
    final_commits: HashMap<(RunId, StepId), u32>,
}

/// `runs` events (users `a` and `b` in turn) for a function limited to `limit` per user, every
/// due run driven at once each round, with crashes at `crash_points` and the events delivered
/// again at the rounds in `duplicates`. Recovery is production's only: events redelivered until
/// their run exists, the timer's wake-ups, and the reconciler's pass every 30 s.
async fn drive_limited(
    limit: u32,
    runs: u64,
    crash_points: &[(i64, bool)],
    duplicates: &[(usize, u64)],
) -> ChaosOutcome {
    let inside = Arc::new(Mutex::new(Inside::default()));
    let registry = Registry::new([limited(limit, Arc::clone(&inside))]).unwrap();
    let clock = ManualClock::new();
    let store = CrashingStore::new();
    let (bus, timer) = (MemoryBus::new(), MemoryTimer::new());
    let new_runner = |n: u32| {
        Runner::new(registry.clone(), store.clone(), bus.clone(), timer.clone())
            .with_clock(Arc::new(clock.clone()))
            .with_config(RunnerConfig::default().lease(Duration::from_secs(60)).owner(format!("invocation-{n}")))
    };
    let mut invocation = 0;
    let mut runner = new_runner(invocation);
    let mut points = crash_points.iter();
    store.arm(points.next());
    let events: Vec<EventPayload> = (0..runs)
        .map(|n| {
            let user = if n % 2 == 0 { "a" } else { "b" };
            EventPayload::new("test/limited", json!({"user": user, "n": n})).with_id(format!("e-{n}"))
        })
        .collect();
    let run_ids: Vec<RunId> = (0..runs).map(|n| RunId::for_event("limited", &format!("e-{n}"))).collect();
    let mut next_reconcile = clock.now_ms() + RECONCILE_EVERY.as_millis() as i64;
    for round in 0..3_000 {
        // At-least-once delivery: an event is delivered again until its run exists, and again
        // at the rounds `duplicates` names.
        for (n, event) in events.iter().enumerate() {
            let duplicate = duplicates.contains(&(round, n as u64));
            if duplicate || store.inner.load(&run_ids[n]).await.unwrap().is_none() {
                bus.send(std::slice::from_ref(event)).await.unwrap();
            }
        }
        // One invocation per delivery and per due wake-up, all at once.
        let mut pass: Result<(), cairn::RunnerError> = Ok(());
        let mut ready = Vec::new();
        for event in bus.take_pending() {
            match runner.accept(&event).await {
                Ok(accepted) => ready.extend(accepted),
                Err(error) => pass = Err(error),
            }
        }
        ready.extend(timer.take_due(clock.now_ms()));
        if pass.is_ok() {
            let drives = futures::future::join_all(ready.iter().map(|run| runner.drive(run))).await;
            pass = drives.into_iter().try_for_each(|drive| drive.map(|_| ()));
        }
        if pass.is_ok() && clock.now_ms() >= next_reconcile {
            next_reconcile = clock.now_ms() + RECONCILE_EVERY.as_millis() as i64;
            pass = runner.reconcile().await.map(|_| ());
        }
        if pass.is_err() {
            // The process died; the next invocations run in a fresh one.
            invocation += 1;
            runner = new_runner(invocation);
            store.arm(points.next());
            continue;
        }
        let mut heads = Vec::new();
        for run in &run_ids {
            heads.push(store.inner.load(run).await.unwrap().map(|journal| journal.meta));
        }
        let settled = heads.iter().all(|head| {
            head.as_ref()
                .is_some_and(|meta| meta.status.is_finished() && meta.outbox.is_empty() && meta.wake_at.is_none())
        });
        if settled {
            let inside = inside.lock().unwrap();
            return ChaosOutcome {
                outputs: heads.into_iter().map(|meta| meta.unwrap().output.unwrap_or(Value::Null)).collect(),
                most_inside: inside.most.clone(),
                entered: inside.entered.clone(),
                final_commits: store.final_commits.lock().unwrap().clone(),
            };
        }
        if timer.next_due().is_some_and(|at| at <= clock.now_ms()) {
            continue;
        }
        // Time passes to the next wake-up or reconciler pass.
        let next = timer.next_due().map_or(next_reconcile, |at| at.min(next_reconcile));
        clock.set(next.max(clock.now_ms()));
    }
    panic!("runs still unfinished after 3000 rounds")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(48), ..ProptestConfig::default() })]

    /// Concurrency under chaos (flow-control reference, C16), through the Runner: crashes at
    /// random store operations and duplicate deliveries never let more runs of a user execute
    /// at once than the limit, lose no queued run (every run completes with its output), commit
    /// no step twice; without crashes, each user's runs start in the order their events came.
    #[test]
    fn concurrency_holds_its_limit_and_loses_no_run_under_crashes_and_duplicates(
        limit in 1u32..3,
        runs in 2u64..7,
        crash_points in proptest::collection::vec((1i64..60, any::<bool>()), 0..4),
        duplicates in proptest::collection::vec((0usize..6, 0u64..6), 0..4),
    ) {
        let calm = cairn::testing::block_on(drive_limited(limit, runs, &[], &[]));
        let chaos = cairn::testing::block_on(drive_limited(limit, runs, &crash_points, &duplicates));
        let expected: Vec<Value> = (0..runs).map(|n| json!(n)).collect();
        prop_assert_eq!(&calm.outputs, &expected);
        prop_assert_eq!(&chaos.outputs, &expected);
        for outcome in [&calm, &chaos] {
            for (user, most) in &outcome.most_inside {
                prop_assert!(*most <= limit as usize, "{} of user {} inside at once, limit {}", most, user, limit);
            }
            for ((run, step), count) in &outcome.final_commits {
                prop_assert_eq!(*count, 1, "step {} of {} committed {} times", step, run, count);
            }
        }
        // First come, first served per user.
        for user in ["a", "b"] {
            let order: Vec<u64> = calm.entered.iter().filter(|(u, _)| u == user).map(|(_, n)| *n).collect();
            prop_assert!(order.windows(2).all(|pair| pair[0] < pair[1]), "user {}: {:?}", user, order);
        }
    }
}

/// A function batching up to 3 events (or 5 s of them) whose run records the ids it received.
fn batcher() -> Function {
    Function::new("batcher")
        .on_event("test/batched")
        .batch_events(cairn::flow::BatchEvents::new(3, "5s"))
        .handler(|_: Event, step: Step| async move {
            let ids: Vec<String> = step.events::<Value>()?.into_iter().filter_map(|event| event.id).collect();
            step.run("record", move || async move { Ok(ids) }).await
        })
        .unwrap()
}

/// `events` events for the batching function, `per_round` delivered each round, with crashes at
/// `crash_points`. A delivery whose invocation failed is delivered again (Lambda retries a failed
/// asynchronous invocation); time passes to the next wake-up, with the reconciler every 30 s. The
/// ids each window's run received, once everything settled.
async fn drive_batches(events: u64, per_round: usize, crash_points: &[(i64, bool)]) -> Vec<Vec<String>> {
    let registry = Registry::new([batcher()]).unwrap();
    let clock = ManualClock::new();
    let store = CrashingStore::new();
    let (bus, timer) = (MemoryBus::new(), MemoryTimer::new());
    let new_runner = |n: u32| {
        Runner::new(registry.clone(), store.clone(), bus.clone(), timer.clone())
            .with_clock(Arc::new(clock.clone()))
            .with_config(RunnerConfig::default().lease(Duration::from_secs(60)).owner(format!("invocation-{n}")))
    };
    let mut invocation = 0;
    let mut runner = new_runner(invocation);
    let mut points = crash_points.iter();
    store.arm(points.next());
    let mut undelivered: std::collections::VecDeque<EventPayload> = (0..events)
        .map(|n| EventPayload::new("test/batched", json!({"n": n})).with_id(format!("e-{n}")).with_ts(clock.now_ms()))
        .collect();
    let mut next_reconcile = clock.now_ms() + RECONCILE_EVERY.as_millis() as i64;
    for _ in 0..3_000 {
        let mut pass: Result<(), cairn::RunnerError> = Ok(());
        let mut ready = Vec::new();
        let mut failed = Vec::new();
        for _ in 0..per_round {
            let Some(event) = undelivered.pop_front() else { break };
            if pass.is_err() {
                failed.push(event);
                continue;
            }
            match runner.accept(&event).await {
                Ok(runs) => ready.extend(runs),
                Err(error) => {
                    pass = Err(error);
                    failed.push(event);
                }
            }
        }
        // A failed delivery is retried.
        for event in failed.into_iter().rev() {
            undelivered.push_front(event);
        }
        ready.extend(timer.take_due(clock.now_ms()));
        if pass.is_ok() {
            for run in &ready {
                if let Err(error) = runner.drive(run).await {
                    pass = Err(error);
                    break;
                }
            }
        }
        if pass.is_ok() && clock.now_ms() >= next_reconcile {
            next_reconcile = clock.now_ms() + RECONCILE_EVERY.as_millis() as i64;
            pass = runner.reconcile().await.map(|_| ());
        }
        if pass.is_err() {
            invocation += 1;
            runner = new_runner(invocation);
            store.arm(points.next());
            continue;
        }
        let query = RunQuery { function_id: Some("batcher".into()), ..RunQuery::default() };
        let heads = store.inner.list_runs(&query).await.unwrap();
        let settled = undelivered.is_empty()
            && !heads.is_empty()
            && heads.iter().all(|meta| meta.status.is_finished() && meta.outbox.is_empty() && meta.wake_at.is_none());
        if settled {
            return heads
                .into_iter()
                .filter(|meta| meta.status == RunStatus::Completed)
                .map(|meta| serde_json::from_value(meta.output.unwrap_or(Value::Null)).unwrap())
                .collect();
        }
        if !undelivered.is_empty() || timer.next_due().is_some_and(|at| at <= clock.now_ms()) {
            continue;
        }
        let next = timer.next_due().map_or(next_reconcile, |at| at.min(next_reconcile));
        clock.set(next.max(clock.now_ms()));
    }
    panic!("batches still unfinished after 3000 rounds")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(48), ..ProptestConfig::default() })]

    /// Batches under chaos: crashes at random store operations (before or after the write
    /// lands) while events are batched and batches fire, with failed deliveries retried, never
    /// lose an event nor hand one to two runs; every batch holds at most 3 events, in the order
    /// they came; without crashes, batches are exactly the events in threes.
    #[test]
    fn batches_lose_no_event_and_run_each_once_under_crashes(
        events in 1u64..9,
        per_round in 1usize..4,
        crash_points in proptest::collection::vec((1i64..40, any::<bool>()), 0..4),
    ) {
        let all: Vec<String> = (0..events).map(|n| format!("e-{n}")).collect();
        let calm = cairn::testing::block_on(drive_batches(events, per_round, &[]));
        let mut calm_sorted = calm.clone();
        calm_sorted.sort();
        let expected: Vec<Vec<String>> = all.chunks(3).map(<[String]>::to_vec).collect();
        prop_assert_eq!(&calm_sorted, &expected);
        let chaos = cairn::testing::block_on(drive_batches(events, per_round, &crash_points));
        let mut received: Vec<String> = chaos.iter().flatten().cloned().collect();
        received.sort_by_key(|id| id[2..].parse::<u64>().unwrap());
        prop_assert_eq!(&received, &all, "every event in exactly one run: {:?}", chaos);
        for batch in &chaos {
            prop_assert!(batch.len() <= 3, "{:?}", batch);
            let order: Vec<u64> = batch.iter().map(|id| id[2..].parse().unwrap()).collect();
            prop_assert!(order.windows(2).all(|pair| pair[0] < pair[1]), "{:?}", batch);
        }
    }
}
