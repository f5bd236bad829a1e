//! Runs of 10,000 steps are supported: the Runner and TestRun take one to completion, with the
//! exact output, and replaying its journal gives the same output again.
#![allow(clippy::unwrap_used)] // Tests: an unwrap that fails is a failed test.

use cairn::prelude::*;
use cairn::testing::{ManualClock, TestRun};
use cairn::{Drive, Execution, MemoryBus, MemoryStore, MemoryTimer, Outcome, Registry, RunStore, Runner, StepState};
use std::sync::Arc;

const STEPS: u64 = 10_000;

/// `STEPS` steps named alike (so ids `step`, `step:1`, ... `step:9999`), step `i` returning `i`;
/// the output is their sum and the count.
fn long_run() -> Function {
    Function::new("long-run")
        .on_event("test/long.run")
        .handler(|_: Event, step: Step| async move {
            let mut sum = 0u64;
            for i in 0..STEPS {
                sum += step.run("step", move || async move { Ok(i) }).await?;
            }
            Ok(json!({ "sum": sum, "steps": STEPS }))
        })
        .unwrap()
}

fn expected() -> serde_json::Value {
    json!({ "sum": STEPS * (STEPS - 1) / 2, "steps": STEPS })
}

#[test]
fn runner_completes_a_run_of_ten_thousand_steps() {
    cairn::testing::block_on(async {
        let clock = ManualClock::new();
        let runner =
            Runner::new(Registry::new([long_run()]).unwrap(), MemoryStore::new(), MemoryBus::new(), MemoryTimer::new())
                .with_clock(Arc::new(clock.clone()));
        let event = EventPayload::new("test/long.run", json!({})).with_id("ev-long").with_ts(clock.now_ms());
        let runs = runner.accept(&event).await.unwrap();
        assert_eq!(runs.len(), 1);
        let drive = runner.drive(&runs[0]).await.unwrap();
        assert_eq!(drive, Drive::Completed(expected()));

        let journal = runner.store().load(&runs[0]).await.unwrap().unwrap();
        assert_eq!(journal.steps.len(), 10_000);
        let last = journal.steps.last().unwrap();
        assert_eq!((last.position, &last.state), (9_999, &StepState::Completed { output: json!(9_999) }));

        // A fresh execution over the whole journal replays it to the same output.
        let mut execution = Execution::new(&long_run(), runs[0].clone(), &event, &journal.steps, 0);
        assert_eq!(execution.next(clock.now_ms()).await.unwrap(), Outcome::Completed(expected()));
    });
}

#[test]
fn test_run_completes_a_run_of_ten_thousand_steps() {
    cairn::testing::block_on(async {
        let mut run = TestRun::new(long_run());
        assert_eq!(run.result().await.unwrap(), expected());
        assert_eq!(run.steps().len(), 10_000);
    });
}
