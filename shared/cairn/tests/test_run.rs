//! `TestRun`, the harness workflow authors use: sleeps, waits, invokes, sends and mocks, in
//! milliseconds; and tracing that stays quiet while memoized steps replay.
#![allow(clippy::unwrap_used)] // Tests: an unwrap that fails is a failed test.

use cairn::prelude::*;
use cairn::testing::TestRun;
use cairn::{Execution, Outcome, RunId, StepKind, StepState};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

fn approval_flow() -> Function {
    Function::new("approval")
        .on_event("app/request.created")
        .sends("app/request.done")
        .awaits("app/request.approved")
        .invokes("scorer")
        .handler(|event: Event, step: Step| async move {
            let id = event.data["id"].clone();
            step.sleep("cool-off", "1h").await?;
            let wait = WaitFor::event("app/request.approved").timeout("1d").matching("data.id");
            let approval = step.wait_for_event("wait-approval", wait).await?;
            let Some(approval) = approval else { return Ok(json!({"id": id, "approved": false})) };
            let score: u32 = step.invoke("score", Invoke::function("scorer").data(json!({"id": id}))).await?;
            step.send_event("notify", EventPayload::new("app/request.done", json!({"id": id}))).await?;
            Ok(json!({"id": id, "approved": true, "by": approval.data["by"], "score": score}))
        })
        .unwrap()
}

#[tokio::test]
async fn a_one_hour_sleep_a_wait_and_an_invoke_take_no_real_time() {
    let started = std::time::Instant::now();
    let mut run = TestRun::new(approval_flow())
        .event("app/request.created", json!({"id": 9}))
        .mock_invoke("score", Ok(json!(77)));
    let Outcome::Sleeping { until, .. } = run.next().await.unwrap() else { panic!() };
    run.clock().set(until);
    assert!(matches!(run.next().await.unwrap(), Outcome::StepCompleted(_)), "the sleep ends");
    let Outcome::Waiting { op } = run.next().await.unwrap() else { panic!() };
    assert_eq!(op.name, "wait-approval");
    assert!(!run.send(EventPayload::new("app/request.approved", json!({"id": 10, "by": "bob"}))), "another request");
    assert!(run.send(EventPayload::new("app/request.approved", json!({"id": 9, "by": "ann"}))));
    assert_eq!(run.result().await.unwrap(), json!({"id": 9, "approved": true, "by": "ann", "score": 77}));
    assert_eq!(run.sent_events().len(), 1);
    assert_eq!(run.sent_events()[0].name, "app/request.done");
    let kinds: Vec<StepKind> = run.steps().iter().map(|s| s.kind).collect();
    assert_eq!(kinds, [StepKind::Sleep, StepKind::WaitForEvent, StepKind::Invoke, StepKind::SendEvent]);
    assert!(started.elapsed() < Duration::from_secs(5), "a day of workflow time passes at once");
}

#[tokio::test]
async fn a_wait_with_no_event_times_out_to_none() {
    let mut run = TestRun::new(approval_flow()).event("app/request.created", json!({"id": 9}));
    assert_eq!(run.result().await.unwrap(), json!({"id": 9, "approved": false}));
    let wait = &run.steps()[1];
    assert_eq!(wait.state, StepState::Completed { output: Value::Null });
}

#[tokio::test]
async fn a_mocked_failing_invoke_fails_the_run() {
    let mut run = TestRun::new(approval_flow())
        .event("app/request.created", json!({"id": 9}))
        .mock_invoke("score", Err(StepError::non_retriable("scorer is down")));
    run.next().await.unwrap();
    run.clock().advance(Duration::from_secs(3600));
    run.next().await.unwrap();
    run.next().await.unwrap();
    assert!(run.send(EventPayload::new("app/request.approved", json!({"id": 9}))));
    let error = run.result().await.unwrap_err();
    assert_eq!((error.message.as_str(), error.retriable), ("scorer is down", false));
}

#[tokio::test]
async fn mocked_step_errors_exercise_retries() {
    let f = Function::new("charge")
        .on_event("shop/order.placed")
        .retries(1)
        .handler(|_: Event, step: Step| async move {
            step.run("charge-card", || async { Ok(json!({"id": "ch_real"})) }).await
        })
        .unwrap();
    let mut run = TestRun::new(f).mock_step_error("charge-card", StepError::new("card network timeout"));
    let error = run.result().await.unwrap_err();
    assert_eq!(error.message, "card network timeout");
    assert_eq!(run.steps()[0].attempts, 2, "one retry, then final");
}

#[tokio::test]
async fn sleep_until_wakes_at_the_given_instant() {
    let wake = UNIX_EPOCH + Duration::from_millis(cairn::testing::ManualClock::DEFAULT_START as u64 + 90_000);
    let f = Function::new("alarm")
        .on_event("app/alarm.set")
        .handler(move |_: Event, step: Step| async move {
            step.sleep_until("until-alarm", wake).await?;
            Ok("ring")
        })
        .unwrap();
    let mut run = TestRun::new(f);
    let Outcome::Sleeping { until, .. } = run.next().await.unwrap() else { panic!() };
    assert_eq!(until, cairn::testing::ManualClock::DEFAULT_START + 90_000);
    assert_eq!(run.result().await.unwrap(), json!("ring"));
}

/// Records the names of spans opened, with their `step.name` field if any.
#[derive(Clone, Default)]
struct SpanLog(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for SpanLog {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _id: &tracing::span::Id,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        struct Name(Option<String>);
        impl tracing::field::Visit for Name {
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                if field.name() == "step.name" {
                    self.0 = Some(value.to_string());
                }
            }
            fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
        }
        let mut name = Name(None);
        attrs.record(&mut name);
        self.0.lock().unwrap().push(format!("{}:{}", attrs.metadata().name(), name.0.unwrap_or_default()));
    }
}

#[test]
fn step_spans_are_opened_for_executed_steps_only_not_for_replays() {
    use tracing_subscriber::layer::SubscriberExt;
    let log = SpanLog::default();
    let subscriber = tracing_subscriber::registry().with(log.clone());
    tracing::subscriber::with_default(subscriber, || {
        futures::executor::block_on(async {
            let f = Function::new("two")
                .on_event("a/b")
                .handler(|_: Event, step: Step| async move {
                    step.run("first", || async { Ok(1) }).await?;
                    step.run("second", || async { Ok(2) }).await
                })
                .unwrap();
            let event = EventPayload::new("a/b", json!({}));
            let mut execution = Execution::new(&f, RunId::new("r"), &event, &[], 0);
            let Outcome::StepCompleted(first) = execution.next(0).await.unwrap() else { panic!() };
            // A fresh execution replays `first` and executes `second`.
            let mut replay = Execution::new(&f, RunId::new("r"), &event, &[first], 0);
            let Outcome::StepCompleted(second) = replay.next(1).await.unwrap() else { panic!() };
            assert_eq!(second.state, StepState::Completed { output: json!(2) });
        })
    });
    assert_eq!(*log.0.lock().unwrap(), vec!["step:first".to_string(), "step:second".to_string()]);
}

/// Two waits for the same event name, in parallel; each matches `data.id`.
fn two_approvals() -> Function {
    Function::new("two-approvals")
        .on_event("app/pair.created")
        .awaits("app/approved")
        .handler(|_: Event, step: Step| async move {
            step.run("prepare", || async { Ok(1) }).await?;
            let first = WaitFor::event("app/approved").timeout("1h").matching("data.id");
            let second = WaitFor::event("app/approved").timeout("1h").matching("data.id");
            let first = step.wait_for_event("first", first).await?;
            let second = step.wait_for_event("second", second).await?;
            Ok(json!({"first": first.map(|e| e.data["by"].clone()), "second": second.map(|e| e.data["by"].clone())}))
        })
        .unwrap()
}

#[tokio::test]
async fn an_event_sent_just_before_a_wait_begins_is_received_as_in_production() {
    let mut run = TestRun::new(two_approvals()).event("app/pair.created", json!({"id": 4}));
    assert!(!run.send(EventPayload::new("app/approved", json!({"id": 4, "by": "ann"}))), "nothing waits yet");
    run.clock().advance(Duration::from_secs(30));
    // `prepare` runs, then `first` begins 30 s after the event: within the Runner's 60 s lookback.
    assert!(matches!(run.next().await.unwrap(), Outcome::StepCompleted(_)));
    let Outcome::Waiting { op } = run.next().await.unwrap() else { panic!() };
    assert_eq!(op.name, "first");
    // The same event never resumes a second wait: `second` waits on, and times out.
    assert_eq!(run.result().await.unwrap(), json!({"first": "ann", "second": null}));
}

#[tokio::test]
async fn an_event_older_than_the_lookback_is_not_received() {
    let mut run = TestRun::new(two_approvals()).event("app/pair.created", json!({"id": 4}));
    assert!(!run.send(EventPayload::new("app/approved", json!({"id": 4, "by": "ann"}))));
    run.clock().advance(Duration::from_secs(61));
    assert_eq!(run.result().await.unwrap(), json!({"first": null, "second": null}));
}

#[tokio::test]
async fn the_if_expression_decides_and_an_event_resumes_one_wait_only() {
    let mut run = TestRun::new(two_approvals()).event("app/pair.created", json!({"id": 4}));
    run.next().await.unwrap();
    let Outcome::Waiting { .. } = run.next().await.unwrap() else { panic!() };
    assert!(!run.send(EventPayload::new("app/approved", json!({"id": 5, "by": "eve"}))), "another id");
    let approval = EventPayload::new("app/approved", json!({"id": 4, "by": "ann"})).with_id("approval-1");
    assert!(run.send(approval.clone()));
    // The wait's step was committed by the delivery: the run goes on to the second wait.
    let Outcome::Waiting { op } = run.next().await.unwrap() else { panic!() };
    assert_eq!(op.name, "second");
    assert!(!run.send(approval), "a duplicate delivery of the same event resumes nothing more");
    assert!(run.send(EventPayload::new("app/approved", json!({"id": 4, "by": "bob"}))));
    assert_eq!(run.result().await.unwrap(), json!({"first": "ann", "second": "bob"}));
}

#[tokio::test]
async fn a_run_backing_off_does_not_execute_until_its_retry_is_due() {
    let calls = Arc::new(Mutex::new(0));
    let counted = calls.clone();
    let f = Function::new("flaky")
        .on_event("app/flaky")
        .retries(1)
        .handler(move |_: Event, _: Step| {
            let counted = counted.clone();
            async move {
                *counted.lock().unwrap() += 1;
                Err::<Value, _>(StepError::new("boom"))
            }
        })
        .unwrap();
    let mut run = TestRun::new(f);
    let Outcome::Failed { retry_at: Some(retry_at), .. } = run.next().await.unwrap() else { panic!() };
    let again = run.next().await.unwrap();
    assert_eq!(again, Outcome::Failed { error: StepError::new("boom"), retry_at: Some(retry_at) });
    assert_eq!(*calls.lock().unwrap(), 1, "the back-off is not over: the code did not run again");
    run.clock().set(retry_at);
    let Outcome::Failed { error, retry_at: None } = run.next().await.unwrap() else { panic!() };
    assert_eq!((error.message.as_str(), *calls.lock().unwrap()), ("boom", 2));
    assert_eq!(run.result().await.unwrap_err().message, "boom");
}

#[tokio::test]
async fn sent_events_hold_the_runs_own_events_not_the_system_events() {
    let f = Function::new("notifier")
        .on_event("app/start")
        .sends("app/note")
        .handler(|_: Event, step: Step| async move {
            step.send_event("note", EventPayload::new("app/note", json!({"n": 1}))).await?;
            Ok(json!("done"))
        })
        .unwrap();
    let mut run = TestRun::new(f);
    assert_eq!(run.result().await.unwrap(), json!("done"));
    let names: Vec<&str> = run.sent_events().iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["app/note"], "inngest/function.finished went to the bus, not here");
}

/// A step whose first attempt hangs and whose second answers, with a 50 ms timeout per attempt.
fn slow_then_fast(backoff: Backoff) -> (Function, Arc<Mutex<u32>>) {
    let calls = Arc::new(Mutex::new(0));
    let counted = calls.clone();
    let f = Function::new("lookup")
        .on_event("app/lookup")
        .handler(move |_: Event, step: Step| {
            let counted = counted.clone();
            let backoff = backoff.clone();
            async move {
                let options =
                    StepOptions::new("call-api").timeout(Duration::from_millis(50)).retries(2).backoff(backoff);
                step.run(options, move || async move {
                    let call = {
                        let mut calls = counted.lock().unwrap();
                        *calls += 1;
                        *calls
                    };
                    if call == 1 {
                        std::future::pending::<()>().await;
                    }
                    Ok(format!("answer {call}"))
                })
                .await
            }
        })
        .unwrap();
    (f, calls)
}

#[tokio::test]
async fn a_step_attempt_past_its_timeout_fails_and_is_retried_after_the_steps_own_backoff() {
    let (f, calls) = slow_then_fast(Backoff::table(["7s", "1m"]));
    let mut run = TestRun::new(f);
    let start = run.clock().now_ms();
    let Outcome::StepFailed { record, retry_at: Some(retry_at) } = run.next().await.unwrap() else { panic!() };
    let StepState::Retrying { error, .. } = &record.state else { panic!("{record:?}") };
    assert_eq!(
        (error.name.as_str(), error.message.as_str(), error.retriable, error.retry_after_ms),
        ("StepTimeoutError", "step `call-api`: attempt 1 timed out after 50ms", true, Some(7_000))
    );
    assert_eq!(retry_at, start + 7_000, "the table's first delay, without jitter");
    run.clock().set(retry_at);
    assert_eq!(run.result().await.unwrap(), json!("answer 2"));
    assert_eq!((run.steps()[0].attempts, *calls.lock().unwrap()), (2, 2));
}

#[tokio::test]
async fn a_backoff_function_sets_each_delay_and_an_errors_own_retry_after_wins() {
    let f = Function::new("flaky")
        .on_event("app/flaky")
        .handler(|_: Event, step: Step| async move {
            let options = StepOptions::new("call")
                .retries(3)
                .backoff(Backoff::function(|failed| Duration::from_secs(10 * u64::from(failed))));
            step.run(options, || async {
                Err::<(), _>(match step.attempt() {
                    1 => StepError::retry_after("slow down", Duration::from_secs(2)),
                    _ => StepError::new("boom"),
                })
            })
            .await
        })
        .unwrap();
    let mut run = TestRun::new(f);
    let mut delays = Vec::new();
    loop {
        let now = run.clock().now_ms();
        match run.next().await.unwrap() {
            Outcome::StepFailed { retry_at: Some(at), .. } => {
                delays.push(at - now);
                run.clock().set(at);
            }
            Outcome::StepFailed { retry_at: None, .. } => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(delays, [10_000, 2_000, 30_000], "attempt 2 asked for 2 s itself");
    assert_eq!(run.result().await.unwrap_err().message, "boom");
}

#[tokio::test]
async fn invalid_step_timeouts_and_backoff_tables_fail_the_step_naming_the_problem() {
    for (options, expected) in [
        (StepOptions::new("s").timeout("soon"), "step `s`: invalid timeout: "),
        (StepOptions::new("s").timeout(Duration::ZERO), "step `s`: invalid timeout: it must be longer than zero"),
        (StepOptions::new("s").backoff(Backoff::table(["1s", "x"])), "step `s`: invalid back-off: entry 1: "),
        (
            StepOptions::new("s").backoff(Backoff::table(Vec::<Duration>::new())),
            "step `s`: invalid back-off: the table is empty",
        ),
    ] {
        let f = Function::new("bad")
            .on_event("app/bad")
            .handler(move |_: Event, step: Step| {
                let options = options.clone();
                async move { step.run(options, || async { Ok(1) }).await }
            })
            .unwrap();
        let error = TestRun::new(f).result().await.unwrap_err();
        assert!(error.message.starts_with(expected) && !error.retriable, "{error:?}");
    }
}

#[derive(serde::Deserialize, Debug, PartialEq)]
struct Approval {
    by: String,
}

fn approval_by_signal() -> Function {
    Function::new("expense")
        .on_event("app/expense.submitted")
        .signals()
        .handler(|event: Event, step: Step| async move {
            let signal = format!("approve-{}", event.data["id"].as_str().unwrap_or_default());
            let approval = step.wait_for_signal::<Approval>("approval", &signal, "1d").await?;
            Ok(approval.map(|signal| json!({"signal": signal.signal, "by": signal.data.by})))
        })
        .unwrap()
}

#[tokio::test]
async fn a_signal_completes_the_step_waiting_for_it_with_its_typed_data() {
    let mut run = TestRun::new(approval_by_signal()).event("app/expense.submitted", json!({"id": "e7"}));
    let Outcome::Waiting { op } = run.next().await.unwrap() else { panic!() };
    assert_eq!(op.name, "approval");
    assert!(!run.signal("approve-e8", json!({"by": "ann"})), "another signal resumes nothing");
    assert!(run.signal("approve-e7", json!({"by": "ann"})));
    assert_eq!(run.result().await.unwrap(), json!({"signal": "approve-e7", "by": "ann"}));
}

#[tokio::test]
async fn a_signal_wait_times_out_with_none_and_bad_data_names_the_field() {
    let mut run = TestRun::new(approval_by_signal()).event("app/expense.submitted", json!({"id": "e1"}));
    run.next().await.unwrap();
    run.clock().advance(Duration::from_secs(86_400));
    assert_eq!(run.result().await.unwrap(), Value::Null);
    let mut run = TestRun::new(approval_by_signal()).event("app/expense.submitted", json!({"id": "e2"}));
    run.next().await.unwrap();
    assert!(run.signal("approve-e2", json!({"by": 7})));
    let error = run.result().await.unwrap_err();
    assert!(
        error.message.starts_with("step `approval`: the signal's data does not match the expected type at `data.by`: "),
        "{error:?}"
    );
    let undeclared = Function::new("quiet")
        .on_event("app/q")
        .handler(|_: Event, step: Step| async move { step.wait_for_signal::<Value>("s", "x", "1h").await })
        .unwrap();
    let error = TestRun::new(undeclared).result().await.unwrap_err();
    assert!(error.message.contains("does not declare that it waits for signals: add `.signals()`"), "{error:?}");
}

fn reply_or_give_up() -> Function {
    use futures::FutureExt;
    Function::new("ask")
        .on_event("app/ask")
        .awaits("app/reply")
        .handler(|_: Event, step: Step| async move {
            let reply = step
                .wait_for_event::<Value>("reply", WaitFor::event("app/reply").timeout("1d"))
                .map(|got| got.map(|event| event.map(|event| event.data)));
            let give_up = step.sleep("give-up", "1h").map(|slept| slept.map(|()| None));
            let (winner, got) = step.race("first", vec![reply.boxed(), give_up.boxed()]).await?;
            step.run("after", || async { Ok(1) }).await?;
            Ok(json!({"winner": winner, "got": got}))
        })
        .unwrap()
}

fn state_of(run: &TestRun, name: &str) -> StepState {
    run.steps().into_iter().find(|step| step.name == name).unwrap_or_else(|| panic!("no step {name}")).state
}

#[tokio::test]
async fn a_race_returns_the_first_step_to_finish_and_cancels_the_others() {
    // The reply comes first: the sleep is cancelled and recorded so.
    let mut run = TestRun::new(reply_or_give_up());
    let Outcome::Planned(ops) = run.next().await.unwrap() else { panic!() };
    assert_eq!(ops.iter().map(|op| op.name.as_str()).collect::<Vec<_>>(), ["reply", "give-up"]);
    run.clock().advance(Duration::from_secs(60));
    assert!(run.send(EventPayload::new("app/reply", json!({"ok": true}))));
    assert_eq!(run.result().await.unwrap(), json!({"winner": 0, "got": {"ok": true}}));
    assert_eq!(state_of(&run, "first"), StepState::Completed { output: json!({"winner": 0}) });
    let StepState::Failed { error } = state_of(&run, "give-up") else { panic!() };
    assert_eq!(
        (error.name.as_str(), error.message.as_str()),
        ("StepCancelledError", "step `give-up`: cancelled: branch 0 of race `first` finished first")
    );
    // Replayed over its journal, the run takes the same branch and asks for nothing.
    let steps = run.steps();
    let replay =
        Execution::new(&reply_or_give_up(), RunId::new("run-1"), &EventPayload::new("app/ask", json!({})), &steps, 0)
            .next(0)
            .await
            .unwrap();
    assert_eq!(replay, Outcome::Completed(json!({"winner": 0, "got": {"ok": true}})));
    // No reply within the hour: the sleep wins and the wait is cancelled.
    let mut run = TestRun::new(reply_or_give_up());
    run.next().await.unwrap();
    run.clock().advance(Duration::from_secs(3_600));
    assert_eq!(run.result().await.unwrap(), json!({"winner": 1, "got": null}));
    assert!(matches!(state_of(&run, "reply"), StepState::Failed { error } if error.name == "StepCancelledError"));
    assert!(!run.send(EventPayload::new("app/reply", json!({"late": true}))), "a cancelled wait resumes nothing");
}

#[tokio::test]
async fn a_raced_run_step_that_lost_never_runs() {
    use futures::FutureExt;
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = calls.clone();
    let f = Function::new("two")
        .on_event("app/two")
        .handler(move |_: Event, step: Step| {
            let seen = seen.clone();
            async move {
                let branch = |label: &'static str| {
                    let seen = seen.clone();
                    step.run(label, move || async move {
                        seen.lock().unwrap().push(label);
                        Ok(label.to_string())
                    })
                    .boxed()
                };
                let (winner, label) = step.race("pick", vec![branch("a"), branch("b")]).await?;
                Ok(json!([winner, label]))
            }
        })
        .unwrap();
    let mut run = TestRun::new(f);
    assert_eq!(run.result().await.unwrap(), json!([0, "a"]));
    assert_eq!(*calls.lock().unwrap(), ["a"]);
    assert!(matches!(state_of(&run, "b"), StepState::Failed { error } if error.name == "StepCancelledError"));
}

#[tokio::test]
async fn map_runs_a_step_per_item_in_order_and_stops_at_the_first_failure() {
    let f = Function::new("sizes")
        .on_event("app/sizes")
        .handler(|event: Event, step: Step| async move {
            let pages: Vec<String> = serde_json::from_value(event.data["pages"].clone()).unwrap_or_default();
            let sizes: Vec<usize> = step
                .map("fetch", pages, 2, |page| async move {
                    if page == "bad" {
                        return Err(StepError::non_retriable(format!("page `{page}` is gone")));
                    }
                    Ok(page.len())
                })
                .await?;
            Ok(sizes)
        })
        .unwrap();
    let mut run = TestRun::new(f.clone()).event("app/sizes", json!({"pages": ["a", "bb", "ccc", "dddd", "eeeee"]}));
    assert_eq!(run.result().await.unwrap(), json!([1, 2, 3, 4, 5]));
    let names: Vec<String> = run.steps().into_iter().map(|step| step.name).collect();
    assert_eq!(names, ["fetch[0]", "fetch[1]", "fetch[2]", "fetch[3]", "fetch[4]"]);
    let mut failing = TestRun::new(f).event("app/sizes", json!({"pages": ["a", "bad", "c"]}));
    assert_eq!(failing.result().await.unwrap_err().message, "page `bad` is gone");
}

#[tokio::test]
async fn a_failed_map_item_cancels_the_pending_ones_and_the_run_goes_on_when_it_is_caught() {
    let f = Function::new("tolerant")
        .on_event("app/tolerant")
        .handler(|_: Event, step: Step| async move {
            let failed = step
                .map("fetch", ["bad", "b", "c"], 2, |page| async move {
                    if page == "bad" { Err(StepError::non_retriable("page `bad` is gone")) } else { Ok(page.len()) }
                })
                .await;
            let after: u32 = step.run("after", || async { Ok(7) }).await?;
            Ok(json!([failed.map_err(|error| error.message).err(), after]))
        })
        .unwrap();
    let mut run = TestRun::new(f);
    assert_eq!(run.result().await.unwrap(), json!(["page `bad` is gone", 7]));
    let StepState::Failed { error } = state_of(&run, "fetch[1]") else { panic!("{:?}", run.steps()) };
    assert_eq!(
        (error.name.as_str(), error.message.as_str()),
        ("StepCancelledError", "step `fetch[1]`: cancelled: an item of map `fetch` failed")
    );
    assert!(run.steps().iter().all(|step| step.name != "fetch[2]"), "item 2 never started");
}

#[tokio::test]
async fn a_race_branch_that_is_not_one_step_is_refused_and_leaves_nothing_pending() {
    use futures::FutureExt;
    let f = Function::new("bad-race")
        .on_event("app/bad-race")
        .handler(|_: Event, step: Step| async move {
            let waits = step.sleep("nap", "1h");
            let refused =
                step.race("pick", vec![waits.boxed(), futures::future::ready(Ok(())).boxed()]).await.map(|(w, _)| w);
            let after: u32 = step.run("after", || async { Ok(1) }).await?;
            Ok(json!([refused.map_err(|error| error.message).err(), after]))
        })
        .unwrap();
    let mut run = TestRun::new(f);
    let output = run.result().await.unwrap();
    assert_eq!(
        output,
        json!([
            "step `pick`: branch 1 of the race must be one step (a `run`, `sleep`, `wait_for_event`, `wait_for_signal` or `invoke`); it began 0",
            1
        ])
    );
    assert!(matches!(state_of(&run, "nap"), StepState::Failed { error } if error.name == "StepCancelledError"));
}
