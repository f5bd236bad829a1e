//! Scripted engine tests: each feeds a journal, runs the engine once (or a few times), and
//! asserts the exact `Outcome` and the records it produced.
#![allow(clippy::unwrap_used)] // Tests: an unwrap that fails is a failed test.

use cairn::prelude::*;
use cairn::{
    EngineError, Execution, ExecutionPolicy, Millis, Op, OpKind, Outcome, RunId, StepId, StepKind, StepRecord,
    StepState,
};
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

const NOW: Millis = 1_800_000_000_000;

fn event() -> EventPayload {
    EventPayload::new("app/my.event", json!({"userId": "u1", "id": 7})).with_id("ev-1").with_ts(NOW)
}

fn run_id() -> RunId {
    RunId::new("run-1")
}

fn exec(function: &Function, steps: &[StepRecord]) -> Execution {
    Execution::new(function, run_id(), &event(), steps, 0)
}

fn done(name: &str, index: u32, position: u32, output: Value) -> StepRecord {
    StepRecord {
        id: StepId::for_name(name, index),
        name: name.into(),
        kind: StepKind::Run,
        position,
        state: StepState::Completed { output },
        attempts: 1,
        started_at: NOW - 10,
        ended_at: Some(NOW - 10),
        detail: None,
    }
}

/// Three sequential steps, the function returning the sum of their outputs.
fn three_steps(calls: Arc<AtomicU32>) -> Function {
    Function::new("three")
        .on_event("app/my.event")
        .handler(move |_: Event, step: Step| {
            let calls = Arc::clone(&calls);
            async move {
                let mut total = 0u32;
                for name in ["a", "b", "c"] {
                    let calls = Arc::clone(&calls);
                    let n: u32 = step
                        .run(name, || async move {
                            calls.fetch_add(1, Ordering::SeqCst);
                            Ok(1)
                        })
                        .await?;
                    total += n;
                }
                Ok(total)
            }
        })
        .unwrap()
}

#[tokio::test]
async fn executes_new_steps_in_one_execution_and_records_each() {
    let calls = Arc::new(AtomicU32::new(0));
    let f = three_steps(Arc::clone(&calls));
    let mut execution = exec(&f, &[]);
    for (position, name) in ["a", "b", "c"].into_iter().enumerate() {
        let outcome = execution.next(NOW + position as i64).await.unwrap();
        let expected = StepRecord {
            id: StepId::for_name(name, 0),
            name: name.into(),
            kind: StepKind::Run,
            position: position as u32,
            state: StepState::Completed { output: json!(1) },
            attempts: 1,
            started_at: NOW + position as i64,
            ended_at: Some(NOW + position as i64),
            detail: None,
        };
        assert_eq!(outcome, Outcome::StepCompleted(expected.clone()));
        execution.committed(expected);
    }
    assert_eq!(execution.next(NOW + 3).await.unwrap(), Outcome::Completed(json!(3)));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn replays_memoized_steps_without_rerunning_them() {
    let calls = Arc::new(AtomicU32::new(0));
    let f = three_steps(Arc::clone(&calls));
    let journal = [done("a", 0, 0, json!(1)), done("b", 0, 1, json!(1)), done("c", 0, 2, json!(1))];
    assert_eq!(exec(&f, &journal).next(NOW).await.unwrap(), Outcome::Completed(json!(3)));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn repeated_names_get_inngest_indexed_ids() {
    let f = Function::new("repeat")
        .on_event("app/my.event")
        .handler(|_: Event, step: Step| async move {
            let mut pages = Vec::new();
            for page in 1..=3 {
                pages.push(step.run("fetch-page", || async move { Ok(page) }).await?);
            }
            Ok(pages)
        })
        .unwrap();
    let mut execution = exec(&f, &[]);
    let mut ids = Vec::new();
    for _ in 0..3 {
        let Outcome::StepCompleted(record) = execution.next(NOW).await.unwrap() else { panic!("step expected") };
        ids.push(record.id.to_string());
        execution.committed(record);
    }
    let expected: Vec<String> =
        ["fetch-page", "fetch-page:1", "fetch-page:2"].iter().map(|s| StepId::hash(s).to_string()).collect();
    assert_eq!(ids, expected);
    assert_eq!(execution.next(NOW).await.unwrap(), Outcome::Completed(json!([1, 2, 3])));
}

fn parallel() -> Function {
    Function::new("parallel")
        .on_event("app/my.event")
        .handler(|_: Event, step: Step| async move {
            let (a, b) =
                join!(step.run("a", || async { Ok("A".to_string()) }), step.run("b", || async { Ok("B".to_string()) }));
            Ok(vec![a?, b?])
        })
        .unwrap()
}

#[tokio::test]
async fn parallel_steps_run_one_after_another_under_the_eager_policy() {
    let f = parallel();
    let mut execution = exec(&f, &[]);
    let Outcome::StepCompleted(a) = execution.next(NOW).await.unwrap() else { panic!() };
    assert_eq!((a.name.as_str(), a.position), ("a", 0));
    execution.committed(a);
    let Outcome::StepCompleted(b) = execution.next(NOW).await.unwrap() else { panic!() };
    assert_eq!((b.name.as_str(), b.position), ("b", 1));
    execution.committed(b);
    assert_eq!(execution.next(NOW).await.unwrap(), Outcome::Completed(json!(["A", "B"])));
}

#[tokio::test]
async fn parallel_steps_are_planned_together_under_the_lone_policy() {
    let f = parallel();
    let Outcome::Planned(ops) = exec(&f, &[]).policy(ExecutionPolicy::Lone).next(NOW).await.unwrap() else {
        panic!("a plan")
    };
    let planned: Vec<_> = ops.iter().map(|op| (op.name.as_str(), op.id.to_string(), op.kind.clone())).collect();
    assert_eq!(
        planned,
        vec![
            ("a", StepId::hash("a").to_string(), OpKind::Run { attempts_made: 0 }),
            ("b", StepId::hash("b").to_string(), OpKind::Run { attempts_made: 0 }),
        ]
    );
    // A targeted request runs exactly the named step.
    let target = ExecutionPolicy::Target(StepId::hash("b"));
    let Outcome::StepCompleted(b) = exec(&f, &[]).policy(target).next(NOW).await.unwrap() else { panic!() };
    assert_eq!(b.state, StepState::Completed { output: json!("B") });
    // Half done: the other is the lone remaining step, so it runs.
    let journal = [done("a", 0, 0, json!("A"))];
    let Outcome::StepCompleted(b) = exec(&f, &journal).policy(ExecutionPolicy::Lone).next(NOW).await.unwrap() else {
        panic!()
    };
    assert_eq!(b.name, "b");
}

fn flaky(fails: u32, error: fn() -> StepError, retries: Option<u32>) -> (Function, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    let seen = Arc::clone(&calls);
    let f = Function::new("flaky")
        .on_event("app/my.event")
        .retries(2)
        .handler(move |_: Event, step: Step| {
            let calls = Arc::clone(&calls);
            async move {
                let options = match retries {
                    Some(n) => StepOptions::new("may-fail").retries(n),
                    None => StepOptions::new("may-fail"),
                };
                let out: String = step
                    .run(options, || async move {
                        if calls.fetch_add(1, Ordering::SeqCst) < fails { Err(error()) } else { Ok("ok".into()) }
                    })
                    .await?;
                Ok(out)
            }
        })
        .unwrap();
    (f, seen)
}

#[tokio::test]
async fn a_failing_step_is_retried_with_backoff_then_succeeds() {
    let (f, calls) = flaky(1, || StepError::new("boom"), None);
    let Outcome::StepFailed { record, retry_at: Some(retry_at) } = exec(&f, &[]).next(NOW).await.unwrap() else {
        panic!("a retry")
    };
    let delay = retry_at - NOW;
    assert!((15_000..45_000).contains(&delay), "first back-off is 15 s plus up to 30 s jitter, got {delay}");
    assert_eq!(record.state, StepState::Retrying { error: StepError::new("boom"), retry_at });
    assert_eq!(record.attempts, 1);
    // Before the back-off ends the run sleeps; nothing runs.
    let Outcome::Sleeping { until, .. } = exec(&f, std::slice::from_ref(&record)).next(NOW + 1).await.unwrap() else {
        panic!("sleeping")
    };
    assert_eq!((until, calls.load(Ordering::SeqCst)), (retry_at, 1));
    // Then the second attempt succeeds.
    let mut execution = exec(&f, std::slice::from_ref(&record));
    let Outcome::StepCompleted(second) = execution.next(retry_at).await.unwrap() else { panic!("second attempt") };
    assert_eq!((second.attempts, second.started_at, second.ended_at), (2, NOW, Some(retry_at)));
    execution.committed(second);
    assert_eq!(execution.next(retry_at).await.unwrap(), Outcome::Completed(json!("ok")));
}

#[tokio::test]
async fn a_step_fails_for_good_after_its_retries_and_replays_identically() {
    let (f, calls) = flaky(10, || StepError::new("boom"), None);
    let mut journal: Vec<StepRecord> = Vec::new();
    let mut now = NOW;
    // retries(2): three attempts.
    for attempt in 1..=3 {
        let mut execution = exec(&f, &journal);
        match execution.next(now).await.unwrap() {
            Outcome::StepFailed { record, retry_at: Some(at) } if attempt < 3 => {
                journal = vec![record];
                now = at;
            }
            Outcome::StepFailed { record, retry_at: None } if attempt == 3 => {
                assert_eq!(record.state, StepState::Failed { error: StepError::new("boom") });
                assert_eq!(record.attempts, 3);
                execution.committed(record.clone());
                // The error reaches the code; uncaught, it fails the function without retry.
                let expected = StepError { retriable: false, ..StepError::new("boom") };
                let failed = Outcome::Failed { error: expected, retry_at: None };
                assert_eq!(execution.next(now).await.unwrap(), failed);
                journal = vec![record];
                assert_eq!(exec(&f, &journal).next(now + 1).await.unwrap(), failed);
            }
            other => panic!("attempt {attempt}: {other:?}"),
        }
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3, "the memoized failure never reruns the step");
}

#[tokio::test]
async fn non_retriable_and_retry_after_errors_are_honoured() {
    let (f, _) = flaky(1, || StepError::non_retriable("nope"), None);
    let Outcome::StepFailed { record, retry_at: None } = exec(&f, &[]).next(NOW).await.unwrap() else { panic!() };
    assert_eq!(record.state, StepState::Failed { error: StepError::non_retriable("nope") });

    let (f, _) = flaky(1, || StepError::retry_after("later", Duration::from_secs(30)), None);
    let Outcome::StepFailed { retry_at, .. } = exec(&f, &[]).next(NOW).await.unwrap() else { panic!() };
    assert_eq!(retry_at, Some(NOW + 30_000));

    // A per-step override of zero retries makes the first failure final.
    let (f, _) = flaky(1, || StepError::new("boom"), Some(0));
    let Outcome::StepFailed { retry_at, .. } = exec(&f, &[]).next(NOW).await.unwrap() else { panic!() };
    assert_eq!(retry_at, None);
}

#[tokio::test]
async fn retry_after_is_clamped_to_inngests_one_second_to_one_day() {
    // Unclamped, `now + u64::MAX ms` overflowed: a panic in debug, a retry in the past in release.
    let cases: [(fn() -> StepError, Millis); 5] = [
        (|| StepError::retry_after("later", Duration::MAX), 86_400_000),
        (|| StepError::retry_after("later", Duration::from_secs(90_000)), 86_400_000),
        (|| StepError { retry_after_ms: Some(u64::MAX), ..StepError::new("from a record") }, 86_400_000),
        (|| StepError::retry_after("now", Duration::ZERO), 1_000),
        (|| StepError::retry_after("later", Duration::from_secs(3_600)), 3_600_000),
    ];
    for (error, delay) in cases {
        let (f, _) = flaky(1, error, None);
        let Outcome::StepFailed { retry_at, .. } = exec(&f, &[]).next(NOW).await.unwrap() else { panic!() };
        assert_eq!(retry_at, Some(NOW + delay), "{:?}", error());
    }
    assert_eq!(StepError::retry_after("later", Duration::MAX).retry_after_ms, Some(86_400_000));
    // The same clamp when the function itself fails.
    let f = Function::new("fails")
        .on_event("app/my.event")
        .handler(|_: Event, _: Step| async move { Err::<(), _>(StepError::retry_after("later", Duration::MAX)) })
        .unwrap();
    let Outcome::Failed { retry_at, .. } = exec(&f, &[]).next(NOW).await.unwrap() else { panic!() };
    assert_eq!(retry_at, Some(NOW + 86_400_000));
}

#[tokio::test]
async fn sleep_until_further_than_366_days_is_refused_not_wrapped() {
    let sleeper = |secs: u64| {
        Function::new("sleeper")
            .on_event("app/my.event")
            .handler(move |_: Event, step: Step| async move {
                step.sleep_until("nap", std::time::UNIX_EPOCH + Duration::from_secs(secs)).await
            })
            .unwrap()
    };
    let now_secs = u64::try_from(NOW / 1000).unwrap();
    let f = sleeper(now_secs + 366 * 86_400);
    let Outcome::Sleeping { until, .. } = exec(&f, &[]).next(NOW).await.unwrap() else { panic!() };
    assert_eq!(until, NOW + 366 * 86_400_000);
    // Past i64 milliseconds, the wake-up used to saturate at i64::MAX, which timers turned
    // into a schedule in 1970 (it fired at once, again and again).
    for secs in [now_secs + 367 * 86_400, u64::try_from(i64::MAX).unwrap()] {
        let Outcome::Failed { error, retry_at: None } = exec(&sleeper(secs), &[]).next(NOW).await.unwrap() else {
            panic!()
        };
        assert!(!error.retriable);
        assert!(error.message.ends_with("is more than the 366-day maximum ahead"), "{}", error.message);
    }
}

#[tokio::test]
async fn a_caught_step_failure_lets_the_function_continue() {
    let f = Function::new("catch")
        .on_event("app/my.event")
        .handler(|_: Event, step: Step| async move {
            let failed: StepResult<u32> =
                step.run("fatal-step", || async { Err(StepError::non_retriable("nope")) }).await;
            Ok(json!({"recovered": failed.unwrap_err().message}))
        })
        .unwrap();
    let mut execution = exec(&f, &[]);
    let Outcome::StepFailed { record, retry_at: None } = execution.next(NOW).await.unwrap() else { panic!() };
    execution.committed(record);
    assert_eq!(execution.next(NOW).await.unwrap(), Outcome::Completed(json!({"recovered": "nope"})));
}

#[tokio::test]
async fn a_panicking_step_is_a_retriable_failure() {
    let f = Function::new("panics")
        .on_event("app/my.event")
        .handler(|_: Event, step: Step| async move {
            step.run("explode", || async {
                if true {
                    panic!("kaboom");
                }
                Ok(1)
            })
            .await
        })
        .unwrap();
    let Outcome::StepFailed { record, retry_at: Some(_) } = exec(&f, &[]).next(NOW).await.unwrap() else { panic!() };
    let StepState::Retrying { error, .. } = record.state else { panic!() };
    assert_eq!(error.message, "step `explode` panicked: kaboom");
}

#[tokio::test]
async fn a_function_level_error_is_retried_then_final() {
    let f = Function::new("fails")
        .on_event("app/my.event")
        .retries(1)
        .handler(|_: Event, _: Step| async move { Err::<(), _>(StepError::new("outside")) })
        .unwrap();
    let Outcome::Failed { error, retry_at: Some(at) } = exec(&f, &[]).next(NOW).await.unwrap() else { panic!() };
    assert_eq!(error, StepError::new("outside"));
    assert!(at >= NOW + 15_000);
    let last = Execution::new(&f, run_id(), &event(), &[], 1).next(NOW).await.unwrap();
    assert_eq!(last, Outcome::Failed { error: StepError::new("outside"), retry_at: None });
}

fn sleeper() -> Function {
    Function::new("sleeper")
        .on_event("app/my.event")
        .handler(|_: Event, step: Step| async move {
            step.sleep("nap", "1h").await?;
            step.run("after", || async { Ok("awake".to_string()) }).await
        })
        .unwrap()
}

#[tokio::test]
async fn a_sleep_is_scheduled_then_completes_when_due() {
    let f = sleeper();
    let Outcome::Sleeping { op, until } = exec(&f, &[]).next(NOW).await.unwrap() else { panic!() };
    assert_eq!(until, NOW + 3_600_000);
    assert_eq!(Op::wake_at(&op), Some(until));
    assert!(op.new);
    let scheduled = op.scheduled_record().expect("sleeps are scheduled");
    assert_eq!(
        scheduled,
        StepRecord {
            id: StepId::hash("nap"),
            name: "nap".into(),
            kind: StepKind::Sleep,
            position: 0,
            state: StepState::Scheduled { wake_at: until },
            attempts: 0,
            started_at: NOW,
            ended_at: None,
            detail: None,
        }
    );
    // Replayed a millisecond before it is due: still sleeping, and no longer new.
    let journal = [scheduled];
    let Outcome::Sleeping { op, until: again } = exec(&f, &journal).next(until - 1).await.unwrap() else { panic!() };
    assert_eq!((op.new, again), (false, until));
    // Due: the engine completes the sleep, then runs the next step.
    let mut execution = exec(&f, &journal);
    let Outcome::StepCompleted(woke) = execution.next(until).await.unwrap() else { panic!() };
    assert_eq!((woke.state.clone(), woke.ended_at), (StepState::Completed { output: Value::Null }, Some(until)));
    // It spans the whole sleep: it started when it was scheduled, not when it woke.
    assert_eq!(woke.started_at, NOW);
    execution.committed(woke);
    let Outcome::StepCompleted(after) = execution.next(until).await.unwrap() else { panic!() };
    assert_eq!(after.position, 1);
    execution.committed(after);
    assert_eq!(execution.next(until).await.unwrap(), Outcome::Completed(json!("awake")));
}

fn waiter() -> Function {
    Function::new("waiter")
        .on_event("app/my.event")
        .awaits("test/approved")
        .handler(|_: Event, step: Step| async move {
            let approval = step
                .wait_for_event(
                    "wait-approval",
                    WaitFor::event("test/approved").timeout("1d").if_expr("async.data.id == event.data.id"),
                )
                .await?;
            Ok(approval.map(|event| event.data))
        })
        .unwrap()
}

#[tokio::test]
async fn wait_for_event_waits_then_returns_the_event_or_none() {
    let f = waiter();
    let Outcome::Waiting { op } = exec(&f, &[]).next(NOW).await.unwrap() else { panic!() };
    assert_eq!(
        op.kind,
        OpKind::WaitForEvent {
            event: "test/approved".into(),
            expression: Some("async.data.id == event.data.id".into()),
            timeout_at: NOW + 86_400_000
        }
    );
    let scheduled = op.scheduled_record().unwrap();
    assert_eq!(scheduled.detail, Some(json!({"event": "test/approved", "if": "async.data.id == event.data.id"})));
    // A driver matched an event: the step's record holds it.
    let arrived = EventPayload::new("test/approved", json!({"id": 7, "by": "ann"})).with_id("e2");
    let mut matched = scheduled.clone();
    matched.state = StepState::Completed { output: serde_json::to_value(&arrived).unwrap() };
    assert_eq!(exec(&f, &[matched]).next(NOW + 5).await.unwrap(), Outcome::Completed(json!({"id": 7, "by": "ann"})));
    // Nobody came: at the timeout the step completes with null and the code sees None.
    let mut execution = exec(&f, std::slice::from_ref(&scheduled));
    let Outcome::StepCompleted(timed_out) = execution.next(NOW + 86_400_000).await.unwrap() else { panic!() };
    assert_eq!(timed_out.state, StepState::Completed { output: Value::Null });
    execution.committed(timed_out);
    assert_eq!(execution.next(NOW + 86_400_000).await.unwrap(), Outcome::Completed(Value::Null));
}

#[tokio::test]
async fn send_event_plans_events_with_ids_stable_across_replays() {
    let f = Function::new("fan-out")
        .on_event("app/my.event")
        .sends("readwise/fetch-books")
        .handler(|_: Event, step: Step| async move {
            let events = vec![
                EventPayload::new("readwise/fetch-books", json!({"userId": "u1"})),
                EventPayload::new("readwise/fetch-books", json!({"userId": "u2"})),
            ];
            let sent = step.send_event("fan-out", events).await?;
            Ok(sent.ids.len())
        })
        .unwrap();
    let plan = |outcome: Outcome| match outcome {
        Outcome::Planned(ops) => ops,
        other => panic!("a plan, got {other:?}"),
    };
    let first = plan(exec(&f, &[]).next(NOW).await.unwrap());
    let again = plan(exec(&f, &[]).next(NOW).await.unwrap());
    let OpKind::SendEvent { events } = &first[0].kind else { panic!() };
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].ts, Some(NOW));
    assert_ne!(events[0].id, events[1].id);
    assert_eq!(first, again, "a retried send carries the same ids");
    let mut execution = exec(&f, &[]);
    execution.next(NOW).await.unwrap();
    execution.committed(first[0].completed_record(json!({"ids": ["x", "y"]}), NOW));
    assert_eq!(execution.next(NOW).await.unwrap(), Outcome::Completed(json!(2)));
}

/// A step sending an event its function did not declare fails for good, naming the event and
/// the fix, rather than reaching the bus (whose IAM policy would refuse it); a send already
/// memoized replays as it was.
#[tokio::test]
async fn an_undeclared_send_fails_naming_the_event_and_the_declaration() {
    let undeclared = Function::new("notifier")
        .on_event("app/my.event")
        .handler(|_: Event, step: Step| async move {
            step.send_event("notify", EventPayload::new("app/order.shipped", json!({}))).await?;
            Ok(())
        })
        .unwrap();
    let Outcome::Failed { error, retry_at: None } = exec(&undeclared, &[]).next(NOW).await.unwrap() else {
        panic!("the run should fail for good")
    };
    assert_eq!(
        error.message,
        "step `notify`: function `notifier` does not declare that it sends `app/order.shipped`: add \
         `.sends(\"app/order.shipped\")` to its definition (its IAM policy lets it put only declared events on the bus)"
    );
    let sent = StepRecord { kind: StepKind::SendEvent, ..done("notify", 0, 0, json!({"ids": ["e1"]})) };
    assert_eq!(exec(&undeclared, &[sent]).next(NOW).await.unwrap(), Outcome::Completed(Value::Null));
}

/// A wait or an invoke the function does not declare fails for good, naming the declaration
/// (`cairn template` routes only declared events and calls to the function).
#[tokio::test]
async fn an_undeclared_wait_or_invoke_fails_naming_the_declaration() {
    let waits = Function::new("waiter")
        .on_event("app/my.event")
        .handler(|_: Event, step: Step| async move {
            step.wait_for_event("approval", WaitFor::event("app/approved").timeout("1h")).await?;
            Ok(())
        })
        .unwrap();
    let Outcome::Failed { error, retry_at: None } = exec(&waits, &[]).next(NOW).await.unwrap() else { panic!() };
    assert_eq!(
        error.message,
        "step `approval`: function `waiter` does not declare that it waits for `app/approved`: add \
         `.awaits(\"app/approved\")` to its definition (its deployment routes only declared events to it)"
    );
    let invokes = Function::new("caller")
        .on_event("app/my.event")
        .invokes("other")
        .handler(|_: Event, step: Step| async move { step.invoke::<Value>("call", Invoke::function("scorer")).await })
        .unwrap();
    assert_eq!(invokes.invokes(), ["other"]);
    let Outcome::Failed { error, retry_at: None } = exec(&invokes, &[]).next(NOW).await.unwrap() else { panic!() };
    assert_eq!(
        error.message,
        "step `call`: function `caller` does not declare that it invokes `scorer`: add `.invokes(\"scorer\")` \
         to its definition (its deployment routes only declared calls and their results)"
    );
}

#[test]
fn sends_declarations_are_checked() {
    let noop = |_: Event, _: Step| async { Ok(()) };
    let declared = Function::new("f").on_event("a/b").sends("app/x").sends("app/y").sends("app/x").handler(noop);
    assert_eq!(declared.unwrap().sends(), ["app/x", "app/y"]);
    let reserved = Function::new("f").on_event("a/b").sends("inngest/function.failed").handler(noop).unwrap_err();
    assert_eq!(
        reserved.to_string(),
        "function `f`: cannot declare `.sends(\"inngest/function.failed\")`: names under inngest/ and cairn/ are sent by the runtime itself"
    );
    let empty = Function::new("f").on_event("a/b").sends(" ").handler(noop).unwrap_err();
    assert_eq!(empty.to_string(), "function `f`: cannot declare `.sends(\" \")`: the name is empty");
}

#[tokio::test]
async fn invoke_plans_a_call_and_times_out_with_inngests_error() {
    let f = Function::new("invoker")
        .on_event("app/my.event")
        .invokes("hello")
        .handler(|_: Event, step: Step| async move {
            let call = Invoke::function("hello").data(json!({"userId": "x"})).timeout("1h");
            let result: Value = step.invoke("call-hello", call).await?;
            Ok(result)
        })
        .unwrap();
    let Outcome::Planned(ops) = exec(&f, &[]).next(NOW).await.unwrap() else { panic!() };
    assert_eq!(
        ops[0].kind,
        OpKind::Invoke { function_id: "hello".into(), data: json!({"userId": "x"}), timeout_at: NOW + 3_600_000 }
    );
    let scheduled = ops[0].scheduled_record().unwrap();
    let mut finished = scheduled.clone();
    finished.state = StepState::Completed { output: json!({"success": true}) };
    assert_eq!(exec(&f, &[finished]).next(NOW).await.unwrap(), Outcome::Completed(json!({"success": true})));
    let Outcome::StepFailed { record, retry_at: None } = exec(&f, &[scheduled]).next(NOW + 3_600_000).await.unwrap()
    else {
        panic!()
    };
    let StepState::Failed { error } = record.state else { panic!() };
    assert_eq!(
        (error.name.as_str(), error.message.as_str()),
        ("InngestInvokeTimeoutError", "Timed out waiting for invoked function to complete")
    );
}

/// Replays `recorded` against `code` and returns the engine's error.
async fn expect_mismatch_on_replay(recorded: &[StepRecord], code: Function) -> EngineError {
    match exec(&code, recorded).next(NOW).await {
        Err(error) => error,
        Ok(outcome) => panic!("expected a determinism error, got {outcome:?}"),
    }
}

fn steps(names: &'static [&'static str]) -> Function {
    Function::new("code")
        .on_event("app/my.event")
        .handler(move |_: Event, step: Step| async move {
            for name in names {
                step.run(*name, || async { Ok(1) }).await?;
            }
            Ok(())
        })
        .unwrap()
}

#[tokio::test]
async fn a_renamed_step_is_a_determinism_error_naming_both() {
    let recorded = [done("fetch", 0, 0, json!(1)), done("save", 0, 1, json!(1))];
    let error = expect_mismatch_on_replay(&recorded, steps(&["fetch-page", "save"])).await;
    assert_eq!(
        error.to_string(),
        format!(
            "determinism mismatch at step position 0: the journal recorded run `fetch` ({}) but the code now asks for \
             run `fetch-page` ({}); the code changed while the run was in flight",
            StepId::hash("fetch"),
            StepId::hash("fetch-page")
        )
    );
}

#[tokio::test]
async fn reordered_steps_and_changed_kinds_are_determinism_errors() {
    let recorded = [done("a", 0, 0, json!(1)), done("b", 0, 1, json!(1))];
    let reordered = expect_mismatch_on_replay(&recorded, steps(&["b", "a"])).await;
    assert!(matches!(reordered, EngineError::Mismatch { position: 0, .. }), "{reordered}");
    let as_sleep = Function::new("code")
        .on_event("app/my.event")
        .handler(|_: Event, step: Step| async move { step.sleep("a", "1s").await })
        .unwrap();
    let changed = expect_mismatch_on_replay(&recorded, as_sleep).await;
    let EngineError::Mismatch { recorded_kind, found_kind, .. } = changed else { panic!() };
    assert_eq!((recorded_kind.as_str(), found_kind.as_str()), ("run", "sleep"));
}

#[tokio::test]
async fn a_removed_step_is_a_determinism_error_when_the_code_finishes() {
    let recorded = [done("a", 0, 0, json!(1)), done("b", 0, 1, json!(1))];
    let error = expect_mismatch_on_replay(&recorded, steps(&["a"])).await;
    assert_eq!(
        error.to_string(),
        "determinism mismatch: the journal recorded run `b` at position 1 but the code never asked for it; \
         the code changed while the run was in flight"
    );
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct FetchBooks {
    user_id: String,
    page_size: u32,
}

impl EventData for FetchBooks {
    const NAME: &'static str = "readwise/fetch-books";
}

#[tokio::test]
async fn bad_event_data_fails_the_run_naming_the_field_and_runs_nothing() {
    let calls = Arc::new(AtomicU32::new(0));
    let seen = Arc::clone(&calls);
    let f = Function::on::<FetchBooks>("typed")
        .handler(move |event: Event<FetchBooks>, step: Step| {
            let calls = Arc::clone(&seen);
            async move {
                step.run("count", || async move { Ok(calls.fetch_add(1, Ordering::SeqCst)) }).await?;
                Ok(event.data.user_id)
            }
        })
        .unwrap();
    assert_eq!(f.triggers()[0].event_name(), "readwise/fetch-books");
    let bad = EventPayload::new("readwise/fetch-books", json!({"userId": "u1", "pageSize": "ten"}));
    let outcome = Execution::new(&f, run_id(), &bad, &[], 0).next(NOW).await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Failed {
            error: StepError::non_retriable(
                "event `readwise/fetch-books`: field `data.pageSize`: invalid type: string, expected u32"
            ),
            retry_at: None
        }
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

fn failing_with(body: fn(Step) -> futures::future::BoxFuture<'static, StepResult<()>>) -> Function {
    Function::new("f").on_event("a/b").handler(move |_: Event, step: Step| body(step)).unwrap()
}

#[tokio::test]
async fn bad_step_arguments_fail_with_a_clear_non_retriable_error() {
    let cases: Vec<(Function, &str)> = vec![
        (
            failing_with(|step| Box::pin(async move { step.sleep("nap", "soon").await })),
            "step `nap`: invalid duration `soon`: expected a number like `30s`, `1h` or `2d`",
        ),
        (
            failing_with(|step| Box::pin(async move { step.run("", || async { Ok(()) }).await })),
            "a step name must not be empty",
        ),
        (
            failing_with(|step| {
                Box::pin(async move {
                    let wait = WaitFor::event("x/y").timeout("1h").if_expr("async.data ==");
                    step.wait_for_event("w", wait).await.map(|_| ())
                })
            }),
            "step `w`: invalid match expression `async.data ==`: ",
        ),
        (
            failing_with(|step| {
                Box::pin(async move { step.wait_for_event("w", WaitFor::event("x/y")).await.map(|_| ()) })
            }),
            "step `w`: a timeout is required",
        ),
        (
            failing_with(|step| Box::pin(async move { step.sleep("long", "400d").await })),
            "step `long`: 400d exceeds the 366-day maximum",
        ),
    ];
    for (function, message) in cases {
        let Outcome::Failed { error, retry_at: None } = exec(&function, &[]).next(NOW).await.unwrap() else {
            panic!("{message}")
        };
        assert!(!error.retriable);
        assert!(error.message.starts_with(message), "{} does not start with {message}", error.message);
    }
}
