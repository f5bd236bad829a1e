//! Unit tests of `hello` with `TestRun`: no AWS, no waiting.

use cairn::testing::TestRun;
use cairn::{Outcome, StepId, StepKind, StepState};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn runs_the_step_then_sleeps_an_hour_then_returns_its_result() -> anyhow::Result<()> {
    let mut run = TestRun::new(hello::function()).event("app/my.event", json!({"user": "u1"}));
    let start = run.clock().now_ms();

    let Outcome::StepCompleted(step) = run.next().await? else { anyhow::bail!("expected the step to run") };
    assert_eq!(step.id, StepId::for_name("step-name", 0));
    assert_eq!(step.state, StepState::Completed { output: json!({"success": true}) });

    let Outcome::Sleeping { op, until } = run.next().await? else { anyhow::bail!("expected the sleep") };
    assert_eq!((op.name.as_str(), until), ("wait", start + 3_600_000));
    // Nothing happens before the hour is up.
    run.clock().advance(Duration::from_secs(3599));
    assert!(matches!(run.next().await?, Outcome::Sleeping { .. }));
    run.clock().advance(Duration::from_secs(1));

    assert_eq!(run.result().await, Ok(json!({"success": true})));
    let kinds: Vec<_> = run.steps().iter().map(|s| (s.name.clone(), s.kind)).collect();
    assert_eq!(kinds, vec![("step-name".into(), StepKind::Run), ("wait".into(), StepKind::Sleep)]);
    Ok(())
}

#[tokio::test]
async fn a_mocked_step_result_is_returned_without_running_the_step() {
    let mut run = TestRun::new(hello::function()).mock_step("step-name", json!({"success": false, "mocked": true}));
    assert_eq!(run.result().await, Ok(json!({"success": false, "mocked": true})));
}
