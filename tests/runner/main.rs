//! The Runner over MemoryStore, MemoryBus and MemoryTimer with a ManualClock: whole runs,
//! duplicate deliveries, leases, waits, invokes, failures, budgets and determinism errors.
#![allow(clippy::unwrap_used)] // Tests: an unwrap that fails is a failed test.

use cairn::prelude::*;
use cairn::store::RunQuery;
use cairn::testing::ManualClock;
use cairn::{
    Drive, FailureData, MemoryBus, MemoryStore, MemoryTimer, Registry, RunId, RunMeta, RunStatus, RunStore, Runner,
    RunnerConfig, StepId, StepState,
};
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

type LocalRunner = Runner<MemoryStore, MemoryBus, MemoryTimer>;

struct Harness {
    runner: LocalRunner,
    clock: ManualClock,
}

fn harness(functions: Vec<Function>) -> Harness {
    harness_with(functions, RunnerConfig::default(), MemoryStore::new(), ManualClock::new())
}

fn harness_with(functions: Vec<Function>, config: RunnerConfig, store: MemoryStore, clock: ManualClock) -> Harness {
    let runner = Runner::new(Registry::new(functions).unwrap(), store, MemoryBus::new(), MemoryTimer::new())
        .with_clock(Arc::new(clock.clone()))
        .with_config(config);
    Harness { runner, clock }
}

impl Harness {
    async fn send(&self, name: &str, data: Value) -> String {
        let id = self.runner.send(EventPayload::new(name, data)).await.unwrap();
        self.runner.run_until_idle().await.unwrap();
        id
    }

    async fn meta(&self, run: &RunId) -> RunMeta {
        self.runner.store().load(run).await.unwrap().unwrap().meta
    }

    async fn only_run(&self, function: &str) -> RunMeta {
        let query = RunQuery { function_id: Some(function.into()), ..RunQuery::default() };
        let runs = self.runner.store().list_runs(&query).await.unwrap();
        assert_eq!(runs.len(), 1, "{runs:?}");
        runs.into_iter().next().unwrap()
    }

    /// Moves the clock to the next timer and processes everything due.
    async fn advance_to_next_timer(&self) {
        let due = self.runner.timer().next_due().expect("a pending timer");
        self.clock.set(due);
        self.runner.run_until_idle().await.unwrap();
    }
}

fn counted_hello(calls: Arc<AtomicU32>) -> Function {
    Function::new("hello")
        .on_event("app/my.event")
        .handler(move |_: Event, step: Step| {
            let calls = Arc::clone(&calls);
            async move {
                let result: Value = step
                    .run("step-name", || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        Ok(json!({"success": true}))
                    })
                    .await?;
                step.sleep("wait", "1h").await?;
                Ok(result)
            }
        })
        .unwrap()
}

#[tokio::test]
async fn hello_runs_its_step_sleeps_on_the_timer_and_completes_an_hour_later() {
    let h = harness(vec![hello::function()]);
    let start = h.clock.now_ms();
    let event_id = h.send("app/my.event", json!({})).await;
    let run = RunId::for_event("hello", &event_id);
    let meta = h.meta(&run).await;
    assert_eq!((meta.status, meta.lease.clone()), (RunStatus::Sleeping, None));
    assert_eq!(h.runner.timer().next_due(), Some(start + 3_600_000));
    let steps = h.runner.store().load(&run).await.unwrap().unwrap().steps;
    assert_eq!(steps[0].state, StepState::Completed { output: json!({"success": true}) });
    assert_eq!(steps[1].state, StepState::Scheduled { wake_at: start + 3_600_000 });

    h.advance_to_next_timer().await;
    let meta = h.meta(&run).await;
    assert_eq!(meta.status, RunStatus::Completed);
    assert_eq!(meta.output, Some(json!({"success": true})));
    assert_eq!(meta.ended_at, Some(start + 3_600_000));
    assert_eq!(meta.expires_at, Some(start + 3_600_000 + 7 * 86_400_000));
    assert!(h.runner.timer().is_empty());
}

#[tokio::test]
async fn an_event_delivered_three_times_starts_one_run_and_runs_its_step_once() {
    let calls = Arc::new(AtomicU32::new(0));
    let h = harness(vec![counted_hello(Arc::clone(&calls))]);
    let event = EventPayload::new("app/my.event", json!({})).with_id("dup-1").with_ts(h.clock.now_ms());
    let deliveries = (0..3).map(|_| async {
        let runs = h.runner.accept(&event).await.unwrap();
        for run in &runs {
            h.runner.drive(run).await.unwrap();
        }
        runs
    });
    let started = futures::future::join_all(deliveries).await;
    assert!(started.iter().all(|runs| runs == &started[0]));
    assert_eq!(h.runner.store().list_runs(&RunQuery::default()).await.unwrap().len(), 1);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_held_lease_makes_a_second_invocation_exit_cleanly() {
    let calls = Arc::new(AtomicU32::new(0));
    let store = MemoryStore::new();
    let clock = ManualClock::new();
    let first = harness_with(
        vec![counted_hello(Arc::clone(&calls))],
        RunnerConfig::default().owner("a"),
        store.clone(),
        clock.clone(),
    );
    let second = harness_with(
        vec![counted_hello(Arc::clone(&calls))],
        RunnerConfig::default().owner("b"),
        store.clone(),
        clock.clone(),
    );
    let event = EventPayload::new("app/my.event", json!({})).with_id("lease-1");
    let run = first.runner.accept(&event).await.unwrap().remove(0);
    // Invocation "a" took the lease and died before doing anything else.
    let mut meta = first.meta(&run).await;
    meta.lease = Some(cairn::Lease { owner: "a".into(), expires_at: clock.now_ms() + 60_000 });
    store.update_meta(&meta).await.unwrap();
    assert_eq!(second.runner.drive(&run).await.unwrap(), Drive::Busy);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    // Once the lease lapses, "b" takes over.
    clock.advance(Duration::from_secs(61));
    assert!(matches!(second.runner.drive(&run).await.unwrap(), Drive::Suspended { status: RunStatus::Sleeping, .. }));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

fn waiter() -> Function {
    Function::new("waiter")
        .on_event("test/wait")
        .awaits("test/approved")
        .handler(|_: Event, step: Step| async move {
            let wait = WaitFor::event("test/approved").timeout("1d").if_expr("async.data.id == event.data.id");
            let approval = step.wait_for_event("wait-approval", wait).await?;
            Ok(approval.map(|event| event.data))
        })
        .unwrap()
}

/// Waits are filed under the value their condition requires: an event finds the waits filed
/// under its own value, and general-form waits are judged on the trigger fields they carry.
#[tokio::test]
async fn an_event_finds_only_the_waits_filed_under_its_value() {
    let h = harness(vec![waiter()]);
    for id in ["o-1", "o-2"] {
        h.send("test/wait", json!({ "id": id })).await;
    }
    let store = h.runner.store();
    let filed = store.waits_for(&EventPayload::new("test/approved", json!({"id": "o-2"}))).await.unwrap();
    assert_eq!(filed.len(), 1, "{filed:?}");
    assert_eq!(filed[0].key, Some(cairn::WaitKey { path: "data.id".into(), value: "s:o-2".into() }));
    let resumed =
        h.runner.accept(&EventPayload::new("test/approved", json!({"id": "o-2"})).with_id("a-2")).await.unwrap();
    assert_eq!(resumed, vec![filed[0].run_id.clone()]);
    h.runner.run_until_idle().await.unwrap();
    let statuses: Vec<(Value, RunStatus)> = h
        .runner
        .store()
        .list_runs(&RunQuery::default())
        .await
        .unwrap()
        .into_iter()
        .map(|run| (run.event.data["id"].clone(), run.status))
        .collect();
    assert!(statuses.contains(&(json!("o-1"), RunStatus::Waiting)), "{statuses:?}");
    assert!(statuses.contains(&(json!("o-2"), RunStatus::Completed)), "{statuses:?}");
}

#[tokio::test]
async fn a_matching_event_resumes_a_waiting_run_and_others_do_not() {
    let h = harness(vec![waiter()]);
    h.send("test/wait", json!({"id": 7})).await;
    let run = h.only_run("waiter").await;
    assert_eq!(run.status, RunStatus::Waiting);
    h.send("test/approved", json!({"id": 8})).await;
    assert_eq!(h.meta(&run.run_id).await.status, RunStatus::Waiting);
    h.send("test/approved", json!({"id": 7, "by": "ann"})).await;
    let meta = h.meta(&run.run_id).await;
    assert_eq!((meta.status, meta.output), (RunStatus::Completed, Some(json!({"id": 7, "by": "ann"}))));
    assert!(
        h.runner.store().waits_for(&EventPayload::new("test/approved", json!({"id": 7}))).await.unwrap().is_empty()
    );
}

#[tokio::test]
async fn an_event_sent_just_before_the_wait_began_still_matches_it() {
    // The approval races ahead of the wait: it arrives while the run is still in its first step.
    let waiter = Function::new("racy")
        .on_event("test/wait")
        .awaits("test/approved")
        .handler(|_: Event, step: Step| async move {
            step.run("prepare", || async { Ok(()) }).await?;
            let wait = WaitFor::event("test/approved").timeout("1d").matching("data.id");
            Ok(step.wait_for_event("wait-approval", wait).await?.map(|event| event.data))
        })
        .unwrap();
    for (lookback, expected) in [(Duration::from_secs(60), json!({"id": 7})), (Duration::ZERO, Value::Null)] {
        let config = RunnerConfig::default().wait_lookback(lookback);
        let h = harness_with(vec![waiter.clone()], config, MemoryStore::new(), ManualClock::new());
        let trigger = h.runner.send(EventPayload::new("test/wait", json!({"id": 7}))).await.unwrap();
        h.runner.send(EventPayload::new("test/approved", json!({"id": 7}))).await.unwrap();
        h.clock.advance(Duration::from_secs(30));
        h.runner.run_until_idle().await.unwrap();
        let run = RunId::for_event("racy", &trigger);
        if lookback.is_zero() {
            assert_eq!(h.meta(&run).await.status, RunStatus::Waiting, "without lookback the early event is missed");
            h.advance_to_next_timer().await;
        }
        assert_eq!(h.meta(&run).await.output, Some(expected), "lookback {lookback:?}");
    }
}

#[tokio::test]
async fn a_wait_that_times_out_returns_none() {
    let h = harness(vec![waiter()]);
    h.send("test/wait", json!({"id": 7})).await;
    h.advance_to_next_timer().await;
    let run = h.only_run("waiter").await;
    assert_eq!((run.status, run.output), (RunStatus::Completed, Some(Value::Null)));
    let approval = EventPayload::new("test/approved", json!({"id": 7}));
    assert!(h.runner.store().waits_for(&approval).await.unwrap().is_empty(), "the timed-out wait is removed");
}

#[tokio::test]
async fn invoke_calls_another_function_and_returns_its_result() {
    let invoker = Function::new("invoker")
        .on_event("test/invoke")
        .invokes("hello")
        .handler(|_: Event, step: Step| async move {
            let result: Value =
                step.invoke("call-hello", Invoke::function("hello").data(json!({"userId": "x"}))).await?;
            Ok(result)
        })
        .unwrap();
    let h = harness(vec![invoker, hello::function()]);
    h.send("test/invoke", json!({})).await;
    assert_eq!(h.only_run("invoker").await.status, RunStatus::Waiting);
    let child = h.only_run("hello").await;
    assert_eq!(child.event.data["userId"], json!("x"));
    assert_eq!(child.invoked_by.as_ref().map(|by| by.step_id.clone()), Some(StepId::hash("call-hello")));
    // hello sleeps an hour, then the invoker resumes with its output.
    h.advance_to_next_timer().await;
    let parent = h.only_run("invoker").await;
    assert_eq!((parent.status, parent.output), (RunStatus::Completed, Some(json!({"success": true}))));
    // The child's `finished` event names the invoker in its event's system metadata (what the
    // template's rule routes it back by) and carries none of the data it was invoked with.
    let finished = h.runner.bus().sent().into_iter().find(|e| e.name == "inngest/function.finished").unwrap();
    assert_eq!(finished.data["event"]["data"]["_inngest"]["source_fn_id"], json!("invoker"));
    assert_eq!(finished.data["event"]["data"].as_object().unwrap().len(), 1, "{finished:?}");
}

#[tokio::test]
async fn invoking_an_unknown_function_fails_the_step() {
    let invoker = Function::new("invoker")
        .on_event("test/invoke")
        .invokes("nope")
        .handler(|_: Event, step: Step| async move { step.invoke::<Value>("call", Invoke::function("nope")).await })
        .unwrap();
    let h = harness(vec![invoker]);
    h.send("test/invoke", json!({})).await;
    let run = h.only_run("invoker").await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.error.unwrap().message, "invoked function `nope` does not exist");
}

#[tokio::test]
async fn a_flaky_step_retries_after_its_backoff_on_the_timer() {
    let calls = Arc::new(AtomicU32::new(0));
    let seen = Arc::clone(&calls);
    let flaky = Function::new("flaky")
        .on_event("test/flaky")
        .retries(2)
        .handler(move |_: Event, step: Step| {
            let calls = Arc::clone(&seen);
            async move {
                step.run("may-fail", || async move {
                    if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                        Err(StepError::new("boom"))
                    } else {
                        Ok("ok".to_string())
                    }
                })
                .await
            }
        })
        .unwrap();
    let h = harness(vec![flaky]);
    h.send("test/flaky", json!({})).await;
    let run = h.only_run("flaky").await;
    assert_eq!(run.status, RunStatus::Sleeping);
    h.advance_to_next_timer().await;
    let run = h.only_run("flaky").await;
    assert_eq!((run.status, run.output), (RunStatus::Completed, Some(json!("ok"))));
    let step = &h.runner.store().load(&run.run_id).await.unwrap().unwrap().steps[0];
    assert_eq!((step.attempts, calls.load(Ordering::SeqCst)), (2, 2));
}

#[tokio::test]
async fn a_step_attempt_that_times_out_is_retried_on_the_timer_after_the_steps_backoff() {
    let calls = Arc::new(AtomicU32::new(0));
    let seen = Arc::clone(&calls);
    let hung = Function::new("hung")
        .on_event("test/hung")
        .handler(move |_: Event, step: Step| {
            let calls = Arc::clone(&seen);
            async move {
                let options =
                    StepOptions::new("call").timeout(Duration::from_millis(20)).backoff(Backoff::table(["10s"]));
                step.run(options, || async move {
                    if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                        std::future::pending::<()>().await;
                    }
                    Ok("answered".to_string())
                })
                .await
            }
        })
        .unwrap();
    let h = harness(vec![hung]);
    let sent_at = h.clock.now_ms();
    h.send("test/hung", json!({})).await;
    let run = h.only_run("hung").await;
    assert_eq!(run.status, RunStatus::Sleeping);
    let step = &h.runner.store().load(&run.run_id).await.unwrap().unwrap().steps[0];
    let StepState::Retrying { error, retry_at } = &step.state else { panic!("{step:?}") };
    assert_eq!((error.name.as_str(), *retry_at), ("StepTimeoutError", sent_at + 10_000));
    assert_eq!(h.runner.timer().next_due(), Some(sent_at + 10_000));
    h.advance_to_next_timer().await;
    let run = h.only_run("hung").await;
    assert_eq!((run.status, run.output), (RunStatus::Completed, Some(json!("answered"))));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// Waits for the signal `data.signal` for an hour; completes with what it received.
fn signal_waiter() -> Function {
    Function::new("approver")
        .on_event("test/approve")
        .signals()
        .handler(|event: Event, step: Step| async move {
            let signal = event.data["signal"].as_str().unwrap_or_default().to_string();
            let got = step.wait_for_signal::<Value>("approval", &signal, "1h").await?;
            Ok(got.map(|signal| signal.data))
        })
        .unwrap()
}

#[tokio::test]
async fn a_signal_has_one_waiter_at_a_time_and_resumes_it() {
    let h = harness(vec![signal_waiter()]);
    let first = h.send("test/approve", json!({"signal": "order-1"})).await;
    let second = h.send("test/approve", json!({"signal": "order-1"})).await;
    let first_run = RunId::for_event("approver", &first);
    let second_run = RunId::for_event("approver", &second);
    assert_eq!(h.meta(&first_run).await.status, RunStatus::Waiting);
    let loser = h.meta(&second_run).await;
    let error = loser.error.unwrap();
    assert_eq!(
        (loser.status, error.name.as_str(), error.message),
        (
            RunStatus::Failed,
            "SignalConflictError",
            format!("step `approval`: signal `order-1` is already awaited by run `{first_run}`")
        )
    );
    h.runner.send_signal("order-1", json!({"ok": true})).await.unwrap();
    h.runner.run_until_idle().await.unwrap();
    let done = h.meta(&first_run).await;
    assert_eq!((done.status, done.output), (RunStatus::Completed, Some(json!({"ok": true}))));
    // Once the first waiter is done, the signal is free again.
    let third = h.send("test/approve", json!({"signal": "order-1"})).await;
    assert_eq!(h.meta(&RunId::for_event("approver", &third)).await.status, RunStatus::Waiting);
    // A signal is not kept for a wait that begins later (unlike an event within the lookback):
    // the one that resumed the first run does not resume the third, nor does an early one.
    h.runner.send_signal("order-2", json!({"early": true})).await.unwrap();
    h.runner.run_until_idle().await.unwrap();
    let late = h.send("test/approve", json!({"signal": "order-2"})).await;
    let late = RunId::for_event("approver", &late);
    assert_eq!(h.meta(&late).await.status, RunStatus::Waiting);
    h.clock.advance(Duration::from_secs(3_600));
    h.runner.run_until_idle().await.unwrap();
    let timed_out = h.meta(&late).await;
    assert_eq!((timed_out.status, timed_out.output), (RunStatus::Completed, Some(Value::Null)));
}

/// Races a reply against a one-hour sleep.
fn racer() -> Function {
    use futures::FutureExt;
    Function::new("racer")
        .on_event("test/race")
        .awaits("test/reply")
        .handler(|_: Event, step: Step| async move {
            let reply = step
                .wait_for_event::<Value>("reply", WaitFor::event("test/reply").timeout("1d"))
                .map(|got| got.map(|event| event.map(|event| event.data)));
            let timeout = step.sleep("timeout", "1h").map(|slept| slept.map(|()| None));
            let (winner, got) = step.race("first", vec![reply.boxed(), timeout.boxed()]).await?;
            Ok(json!({"winner": winner, "got": got}))
        })
        .unwrap()
}

#[tokio::test]
async fn a_race_across_suspensions_takes_the_first_and_cancels_the_rest() {
    let h = harness(vec![racer()]);
    // The reply comes while the run waits: the sleep is cancelled, its timer finds it done.
    let answered = h.send("test/race", json!({})).await;
    let answered = RunId::for_event("racer", &answered);
    assert_eq!(h.meta(&answered).await.status, RunStatus::Waiting);
    h.send("test/reply", json!({"ok": 1})).await;
    let run = h.meta(&answered).await;
    assert_eq!((run.status, run.output), (RunStatus::Completed, Some(json!({"winner": 0, "got": {"ok": 1}}))));
    // No reply: the timer ends the sleep, which wins; a late reply resumes nothing.
    h.clock.advance(Duration::from_secs(7_200));
    let silent = h.send("test/race", json!({})).await;
    let silent = RunId::for_event("racer", &silent);
    h.advance_to_next_timer().await;
    let run = h.meta(&silent).await;
    assert_eq!((run.status, run.output), (RunStatus::Completed, Some(json!({"winner": 1, "got": null}))));
    let steps = h.runner.store().load(&silent).await.unwrap().unwrap().steps;
    let reply = steps.iter().find(|step| step.name == "reply").unwrap();
    assert!(matches!(&reply.state, StepState::Failed { error } if error.name == "StepCancelledError"), "{reply:?}");
    h.send("test/reply", json!({"late": true})).await;
    assert_eq!(h.meta(&silent).await.output, Some(json!({"winner": 1, "got": null})));
}

#[tokio::test]
async fn a_final_failure_runs_the_on_failure_handler_once() {
    let handled = Arc::new(AtomicU32::new(0));
    let seen = Arc::clone(&handled);
    let fatal = Function::new("fatal")
        .on_event("test/fatal")
        .on_failure(move |event: Event<FailureData>, step: Step| {
            let handled = Arc::clone(&seen);
            async move {
                step.run("alert", || async move {
                    handled.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                })
                .await?;
                // The handler sees the failed run's event in full, read from the run's head.
                Ok(json!([event.data.error.message, event.data.event.data["apiKey"] == "secret-key-1"]))
            }
        })
        .handler(|_: Event, step: Step| async move {
            step.run("fatal-step", || async { Err::<(), _>(StepError::non_retriable("nope")) }).await
        })
        .unwrap();
    let h = harness(vec![fatal]);
    let id = h.send("test/fatal", json!({"apiKey": "secret-key-1"})).await;
    let failed = h.only_run("fatal").await;
    assert_eq!((failed.status, failed.error.map(|e| e.message)), (RunStatus::Failed, Some("nope".into())));
    let handler = h.only_run("fatal-failure").await;
    assert_eq!((handler.status, handler.output), (RunStatus::Completed, Some(json!(["nope", true]))));
    assert_eq!(handled.load(Ordering::SeqCst), 1);
    // What went over the bus names the event but carries none of its data.
    let system: Vec<EventPayload> = h
        .runner
        .bus()
        .sent()
        .into_iter()
        .filter(|e| e.name.starts_with("inngest/") && e.data["function_id"] == "fatal")
        .collect();
    assert_eq!(system.len(), 2, "{system:?}");
    for event in &system {
        assert_eq!(
            event.data["event"],
            json!({"name": "test/fatal", "id": id, "ts": event.data["event"]["ts"], "data": {}})
        );
        assert!(!serde_json::to_string(event).unwrap().contains("secret-key-1"), "{event:?}");
    }
}

#[tokio::test]
async fn a_run_head_expires_one_retention_period_after_it_was_last_needed() {
    let sleeper = Function::new("sleeper")
        .on_event("test/sleep")
        .handler(|_: Event, step: Step| async move {
            step.sleep("nap", "30d").await?;
            Ok("awake")
        })
        .unwrap();
    let store = MemoryStore::new();
    let config = RunnerConfig::default().retention(Duration::from_secs(86_400));
    let h = harness_with(vec![sleeper], config, store, ManualClock::new());
    let start = cairn::Clock::now(&h.clock);
    let id = h.runner.send(EventPayload::new("test/sleep", json!({"token": "t"}))).await.unwrap();
    // Created but never driven (the invocation died): the head still expires.
    let run_id = h.runner.accept(&EventPayload::new("test/sleep", json!({"token": "t"})).with_id(&id)).await.unwrap();
    let created = h.meta(&run_id[0]).await;
    assert_eq!(created.expires_at, Some(created.wake_at.unwrap() + 86_400_000));
    assert!(created.expires_at.unwrap() < start + 2 * 86_400_000);
    // Sleeping for 30 days: kept until a day after the sleep ends, not deleted mid-sleep.
    h.runner.run_until_idle().await.unwrap();
    let sleeping = h.meta(&run_id[0]).await;
    assert_eq!(sleeping.status, RunStatus::Sleeping);
    assert_eq!(sleeping.expires_at, Some(sleeping.wake_at.unwrap() + 86_400_000));
    assert!(sleeping.wake_at.unwrap() >= start + 30 * 86_400_000);
    h.advance_to_next_timer().await;
    let done = h.meta(&run_id[0]).await;
    assert_eq!(done.status, RunStatus::Completed);
    assert_eq!(done.expires_at, Some(done.ended_at.unwrap() + 86_400_000));
}

#[tokio::test]
async fn a_run_past_its_budget_checkpoints_and_continues_in_a_fresh_call() {
    let clock = ManualClock::new();
    let work_clock = clock.clone();
    let slow = Function::new("slow")
        .on_event("test/slow")
        .handler(move |_: Event, step: Step| {
            let clock = work_clock.clone();
            async move {
                for n in 0..6 {
                    let clock = clock.clone();
                    // Each step works for 2 s.
                    step.run(format!("work-{n}"), || async move {
                        clock.advance(Duration::from_secs(2));
                        Ok(n)
                    })
                    .await?;
                }
                Ok("done")
            }
        })
        .unwrap();
    let config = RunnerConfig::default().budget(Duration::from_secs(5));
    let h = harness_with(vec![slow], config, MemoryStore::new(), clock);
    let id = h.runner.send(EventPayload::new("test/slow", json!({}))).await.unwrap();
    for event in h.runner.bus().take_pending() {
        h.runner.accept(&event).await.unwrap();
    }
    let run = RunId::for_event("slow", &id);
    // Three steps fit in the 5 s budget; then the run checkpoints.
    assert_eq!(h.runner.drive(&run).await.unwrap(), Drive::Continued);
    let journal = h.runner.store().load(&run).await.unwrap().unwrap();
    assert_eq!((journal.meta.status, journal.meta.lease, journal.steps.len()), (RunStatus::Running, None, 3));
    h.runner.run_until_idle().await.unwrap();
    assert_eq!(h.meta(&run).await.output, Some(json!("done")));
}

#[tokio::test]
async fn a_renamed_step_fails_the_run_with_a_determinism_error_and_overwrites_nothing() {
    let v1 = Function::new("evolving")
        .on_event("test/evolve")
        .handler(|_: Event, step: Step| async move {
            step.run("fetch", || async { Ok(1) }).await?;
            step.sleep("pause", "1h").await?;
            Ok(())
        })
        .unwrap();
    let v2 = Function::new("evolving")
        .on_event("test/evolve")
        .handler(|_: Event, step: Step| async move {
            step.run("fetch-page", || async { Ok(2) }).await?;
            step.sleep("pause", "1h").await?;
            Ok(())
        })
        .unwrap();
    let store = MemoryStore::new();
    let clock = ManualClock::new();
    let old = harness_with(vec![v1], RunnerConfig::default(), store.clone(), clock.clone());
    old.send("test/evolve", json!({})).await;
    let run = old.only_run("evolving").await.run_id;
    let before = store.load(&run).await.unwrap().unwrap().steps;
    // Redeployed with the step renamed; the sleep ends.
    let new = harness_with(vec![v2], RunnerConfig::default(), store.clone(), clock.clone());
    clock.advance(Duration::from_secs(3600));
    let Drive::Failed(error) = new.runner.drive(&run).await.unwrap() else { panic!("a failed run") };
    assert_eq!(error.name, "DeterminismError");
    assert!(error.message.starts_with("determinism mismatch at step position 0: the journal recorded run `fetch`"));
    let after = store.load(&run).await.unwrap().unwrap();
    assert_eq!(after.steps, before, "no step record was written or overwritten");
    assert_eq!(after.meta.status, RunStatus::Failed);
}

#[tokio::test]
async fn a_cron_fan_out_starts_one_run_per_sent_event() {
    let fan_out = Function::new("daily-fan-out")
        .cron("0 3 * * *")
        .sends("readwise/fetch-books")
        .handler(|_: Event, step: Step| async move {
            let users: Vec<String> =
                step.run("list-users", || async { Ok(vec!["u1".to_string(), "u2".to_string()]) }).await?;
            let events: Vec<EventPayload> =
                users.iter().map(|u| EventPayload::new("readwise/fetch-books", json!({"userId": u}))).collect();
            step.send_event("fan-out", events).await?;
            Ok(json!({"sent": users.len()}))
        })
        .unwrap();
    let fetch = Function::new("fetch-books")
        .on_event("readwise/fetch-books")
        .handler(|event: Event, _: Step| async move { Ok(event.data["userId"].clone()) })
        .unwrap();
    let h = harness(vec![fan_out, fetch]);
    h.send(cairn::SCHEDULED_EVENT, json!({"cron": "0 3 * * *"})).await;
    assert_eq!(h.only_run("daily-fan-out").await.output, Some(json!({"sent": 2})));
    let query = RunQuery { function_id: Some("fetch-books".into()), ..RunQuery::default() };
    let mut outputs: Vec<Value> =
        h.runner.store().list_runs(&query).await.unwrap().into_iter().filter_map(|m| m.output).collect();
    outputs.sort_by_key(|v| v.to_string());
    assert_eq!(outputs, vec![json!("u1"), json!("u2")]);
}

#[tokio::test]
async fn an_invalid_event_is_rejected_with_its_problem_and_starts_nothing() {
    let h = harness(vec![hello::function()]);
    let err = h.runner.send(EventPayload::new("", json!({}))).await.unwrap_err();
    assert_eq!(err.to_string(), "invalid event: event name must not be empty");
    let err = h.runner.accept(&EventPayload::new("app/my.event", json!({}))).await.unwrap_err();
    assert_eq!(err.to_string(), "invalid event: event `app/my.event` has no id");
    assert!(h.runner.store().list_runs(&RunQuery::default()).await.unwrap().is_empty());
}

/// A `cancel_on` event reports the runs it cancelled that no invocation was executing (the
/// invocation that received it counts them in `RunsCancelled`); a run whose lease is held is
/// left to the invocation executing it, which finds it cancelled, so each cancel counts once.
#[tokio::test]
async fn a_cancel_on_event_reports_the_idle_runs_it_cancelled_and_leaves_executing_ones_to_their_driver() {
    let napper = Function::new("napper")
        .on_event("test/nap")
        .cancel_on(cairn::flow::CancelOn::event("test/stop"))
        .handler(|_: Event, step: Step| async move {
            step.sleep("nap", "1h").await?;
            Ok(json!("woke"))
        })
        .unwrap();
    let h = harness(vec![napper]);
    let idle = h.runner.accept(&EventPayload::new("test/nap", json!({})).with_id("nap-idle")).await.unwrap().remove(0);
    let busy = h.runner.accept(&EventPayload::new("test/nap", json!({})).with_id("nap-busy")).await.unwrap().remove(0);
    for run in [&idle, &busy] {
        assert!(matches!(h.runner.drive(run).await.unwrap(), Drive::Suspended { status: RunStatus::Sleeping, .. }));
    }
    // An invocation is executing `busy` (it holds the lease).
    let mut meta = h.meta(&busy).await;
    meta.lease = Some(cairn::Lease { owner: "elsewhere".into(), expires_at: h.clock.now_ms() + 60_000 });
    h.runner.store().update_meta(&meta).await.unwrap();
    h.clock.advance(Duration::from_secs(1));

    let stop = EventPayload::new("test/stop", json!({})).with_id("stop-1").with_ts(h.clock.now_ms());
    let accepted = h.runner.accept_detailed(&stop).await.unwrap();
    assert_eq!(accepted.cancelled, vec![(idle.clone(), "napper".to_string())]);
    assert_eq!((h.meta(&idle).await.status, h.meta(&busy).await.status), (RunStatus::Cancelled, RunStatus::Cancelled));
    // Delivered again, it cancels nothing more.
    assert_eq!(h.runner.accept_detailed(&stop).await.unwrap().cancelled, vec![]);
}
