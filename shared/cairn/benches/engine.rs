//! Engine benchmarks (README, Performance):
//! (a) replaying a run with 1,000 memoized steps;
//! (b) executing one new step and committing it, with MemoryStore and with SqliteStore.
//!
//! Run with `make bench` (`cargo bench -p cairn --bench engine`).
#![allow(missing_docs, clippy::unwrap_used)]

use cairn::prelude::*;
use cairn::store::{MemoryStore, RunStore, SqliteStore};
use cairn::{Execution, Millis, Outcome, RunId, RunMeta, StepId, StepKind, StepRecord, StepState};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use futures::executor::block_on;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

const NOW: Millis = 1_800_000_000_000;

fn many_steps(count: u32) -> Function {
    Function::new("many")
        .on_event("bench/run")
        .handler(move |_: Event, step: Step| async move {
            let mut total = 0u64;
            for _ in 0..count {
                total += step.run("step", || async { Ok(1u64) }).await?;
            }
            Ok(total)
        })
        .unwrap()
}

fn memoized_journal(count: u32) -> Vec<StepRecord> {
    (0..count)
        .map(|i| StepRecord {
            id: StepId::for_name("step", i),
            name: "step".into(),
            kind: StepKind::Run,
            position: i,
            state: StepState::Completed { output: serde_json::json!(1) },
            attempts: 1,
            started_at: NOW,
            ended_at: Some(NOW),
            detail: None,
        })
        .collect()
}

fn replay(c: &mut Criterion) {
    let function = many_steps(1_000);
    let journal = memoized_journal(1_000);
    let event = EventPayload::new("bench/run", json!({})).with_id("e");
    let run_id = RunId::new("run-bench");
    c.bench_function("replay_1000_memoized_steps", |b| {
        b.iter(|| {
            let mut execution = Execution::new(&function, run_id.clone(), &event, black_box(&journal), 0);
            let outcome = block_on(execution.next(NOW)).unwrap();
            assert_eq!(outcome, Outcome::Completed(json!(1_000)));
        })
    });
}

static RUN: AtomicU64 = AtomicU64::new(0);

/// A fresh run (created outside the timing) and the work of one step: execute it, commit it,
/// and hand the committed record back to the execution.
fn execute_and_commit<S: RunStore>(c: &mut Criterion, name: &str, store: S) {
    let function = many_steps(1);
    let event = EventPayload::new("bench/run", json!({})).with_id("e");
    c.bench_function(name, |b| {
        b.iter_batched(
            || {
                let run_id = RunId::new(format!("run-{}", RUN.fetch_add(1, Ordering::Relaxed)));
                block_on(store.create_run(RunMeta::new(run_id.clone(), "many", event.clone(), NOW))).unwrap();
                run_id
            },
            |run_id| {
                let mut execution = Execution::new(&function, run_id.clone(), &event, &[], 0);
                let Outcome::StepCompleted(record) = block_on(execution.next(NOW)).unwrap() else { unreachable!() };
                block_on(store.commit_step(&run_id, &record)).unwrap();
                execution.committed(record);
            },
            BatchSize::SmallInput,
        )
    });
}

fn execute_one_step(c: &mut Criterion) {
    execute_and_commit(c, "execute_and_commit_one_step/memory", MemoryStore::new());
    let dir = tempfile::tempdir().unwrap();
    execute_and_commit(
        c,
        "execute_and_commit_one_step/sqlite",
        SqliteStore::open(dir.path().join("bench.db")).unwrap(),
    );
}

criterion_group!(benches, replay, execute_one_step);
criterion_main!(benches);
