//! Unit tests of `order-approval` with `TestRun`: the wait is satisfied by a matching event, not
//! by another order's, and times out after a day.

use cairn::testing::TestRun;
use cairn::{EventPayload, Outcome};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn ships_when_the_same_order_is_approved() -> anyhow::Result<()> {
    let mut run = TestRun::new(order_approval::function()).event(order_approval::PLACED, json!({"order_id": "o-1"}));
    assert!(matches!(run.next().await?, Outcome::StepCompleted(_)));
    assert!(matches!(run.next().await?, Outcome::Waiting { .. }));
    assert!(!run.send(EventPayload::new(order_approval::APPROVED, json!({"order_id": "o-2", "by": "bob"}))));
    assert!(run.send(EventPayload::new(order_approval::APPROVED, json!({"order_id": "o-1", "by": "ann"}))));
    assert_eq!(run.result().await, Ok(json!({"order_id": "o-1", "shipped": true, "approved_by": "ann"})));
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
