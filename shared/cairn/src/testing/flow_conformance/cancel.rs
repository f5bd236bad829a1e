//! `cancel_on` and `timeouts`: what ends a run early.

#![allow(clippy::unwrap_used)] // Test support: a failed unwrap is a failed contract.

use super::*;

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
