//! Tests of `order-approval`: with `TestRun`, the wait is satisfied by a matching event, not by
//! another order's, and times out after a day; with the in-process `Runner` (the same lifecycle
//! as Lambda), the charge really is invoked, its result comes back through
//! `inngest/function.finished`, and a declined charge fails the run and runs `on_failure`.
#![allow(clippy::unwrap_used)] // Tests: an unwrap that fails is a failed test.

use cairn::store::RunQuery;
use cairn::testing::{ManualClock, TestRun};
use cairn::{EventPayload, MemoryBus, MemoryStore, MemoryTimer, Outcome, Registry, RunId, RunStatus, RunStore, Runner};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test]
async fn ships_when_the_same_order_is_approved() -> anyhow::Result<()> {
    let mut run = TestRun::new(order_approval::function())
        .event(order_approval::PLACED, json!({"order_id": "o-1", "amount": 30}))
        .mock_invoke("charge", Ok(json!({"order_id": "o-1", "charged": 30.0})));
    assert!(matches!(run.next().await?, Outcome::StepCompleted(_)));
    assert!(matches!(run.next().await?, Outcome::Waiting { .. }));
    assert!(!run.send(EventPayload::new(order_approval::APPROVED, json!({"order_id": "o-2", "by": "bob"}))));
    assert!(run.send(EventPayload::new(order_approval::APPROVED, json!({"order_id": "o-1", "by": "ann"}))));
    assert_eq!(
        run.result().await,
        Ok(json!({"order_id": "o-1", "shipped": true, "approved_by": "ann", "charged": 30.0}))
    );
    Ok(())
}

#[tokio::test]
async fn releases_the_stock_when_nobody_approves_within_a_day() -> anyhow::Result<()> {
    let mut run = TestRun::new(order_approval::function()).event(order_approval::PLACED, json!({"order_id": "o-1"}));
    assert!(matches!(run.next().await?, Outcome::StepCompleted(_)));
    assert!(matches!(run.next().await?, Outcome::Waiting { .. }));
    run.clock().advance(Duration::from_secs(86_400));
    assert_eq!(run.result().await, Ok(json!({"released": "o-1", "shipped": false})));
    Ok(())
}

fn runner() -> Runner<MemoryStore, MemoryBus, MemoryTimer> {
    Runner::new(
        Registry::new(order_approval::functions()).unwrap(),
        MemoryStore::new(),
        MemoryBus::new(),
        MemoryTimer::new(),
    )
    .with_clock(Arc::new(ManualClock::new()))
}

async fn place_and_approve(runner: &Runner<MemoryStore, MemoryBus, MemoryTimer>, amount: i64) -> RunId {
    runner
        .send(
            EventPayload::new(order_approval::PLACED, json!({"order_id": "o-9", "amount": amount})).with_id("placed-9"),
        )
        .await
        .unwrap();
    runner.run_until_idle().await.unwrap();
    runner
        .send(
            EventPayload::new(order_approval::APPROVED, json!({"order_id": "o-9", "by": "ann"})).with_id("approved-9"),
        )
        .await
        .unwrap();
    runner.run_until_idle().await.unwrap();
    RunId::for_event("order-approval", "placed-9")
}

#[tokio::test]
async fn the_charge_is_invoked_and_its_result_comes_back() {
    let runner = runner();
    let run = place_and_approve(&runner, 30).await;
    let journal = runner.store().load(&run).await.unwrap().unwrap();
    assert_eq!(journal.meta.status, RunStatus::Completed);
    assert_eq!(
        journal.meta.output,
        Some(json!({"order_id": "o-9", "shipped": true, "approved_by": "ann", "charged": 30.0}))
    );
    let sent: Vec<String> = runner.bus().sent().iter().map(|e| e.name.clone()).collect();
    assert!(sent.contains(&cairn::INVOKED_EVENT.to_string()), "{sent:?}");
    assert_eq!(sent.iter().filter(|name| *name == cairn::FINISHED_EVENT).count(), 2, "{sent:?}");
}

#[tokio::test]
async fn a_declined_charge_fails_the_run_and_runs_on_failure() {
    let runner = runner();
    let run = place_and_approve(&runner, 0).await;
    let journal = runner.store().load(&run).await.unwrap().unwrap();
    assert_eq!(journal.meta.status, RunStatus::Failed);
    assert_eq!(journal.meta.error.unwrap().message, "payment declined: amount 0 is not positive");
    let query = RunQuery { function_id: Some("order-approval-failure".into()), limit: 10, ..RunQuery::default() };
    let handlers = runner.store().list_runs(&query).await.unwrap();
    assert_eq!(handlers.len(), 1, "{handlers:?}");
    assert_eq!(handlers[0].status, RunStatus::Completed);
    assert_eq!(handlers[0].event.data["run_id"], run.as_str());
    assert_eq!(
        handlers[0].output,
        Some(json!({"released": "o-9", "reason": "payment declined: amount 0 is not positive"}))
    );
}
