//! Engine benchmarks (README, Performance):
//! (a) replaying a run with 1,000 memoized steps;
//! (b) executing one new step and committing it, with MemoryStore and with SqliteStore;
//! (c) how the cost of a step grows with the length of the run (100, 1,000 and 10,000 steps):
//!     `replay_memoized_steps/N` (the engine alone), `runner_replay_memoized_steps/{memory,sqlite}/N`
//!     (the Runner loading the journal and replaying it up to a sleep) and
//!     `runner_execute_new_steps/{memory,sqlite}/N` (the Runner executing and committing every
//!     step of a fresh run). Their throughput is in steps, so criterion prints the time per step.
//!
//! Run with `make bench` (`cargo bench -p cairn --bench engine`).
#![allow(missing_docs, clippy::unwrap_used)]

use cairn::prelude::*;
use cairn::store::{MemoryStore, RunStore, SqliteStore};
use cairn::testing::ManualClock;
use cairn::{
    Drive, Execution, MemoryBus, MemoryTimer, Millis, Outcome, Registry, RunId, RunMeta, RunStatus, Runner,
    RunnerConfig, StepId, StepKind, StepRecord, StepState,
};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures::executor::block_on;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

const NOW: Millis = 1_800_000_000_000;
const SIZES: [u32; 3] = [100, 1_000, 10_000];

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

/// `count` steps, then a day's sleep: a drive replays the steps and suspends again, so the same
/// run can be driven over and over.
fn many_steps_then_sleep(count: u32) -> Function {
    Function::new("parked")
        .on_event("bench/parked")
        .handler(move |_: Event, step: Step| async move {
            let mut total = 0u64;
            for _ in 0..count {
                total += step.run("step", || async { Ok(1u64) }).await?;
            }
            step.sleep("park", "1d").await?;
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

/// The engine alone replaying `N` memoized steps to completion.
fn replay_sizes(c: &mut Criterion) {
    let mut group = c.benchmark_group("replay_memoized_steps");
    group.sample_size(10);
    let event = EventPayload::new("bench/run", json!({})).with_id("e");
    let run_id = RunId::new("run-bench");
    for size in SIZES {
        let function = many_steps(size);
        let journal = memoized_journal(size);
        group.throughput(Throughput::Elements(u64::from(size)));
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, &size| {
            b.iter(|| {
                let mut execution = Execution::new(&function, run_id.clone(), &event, black_box(&journal), 0);
                let outcome = block_on(execution.next(NOW)).unwrap();
                assert_eq!(outcome, Outcome::Completed(json!(u64::from(size))));
            })
        });
    }
    group.finish();
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

type BenchRunner<S> = Runner<S, MemoryBus, MemoryTimer>;

fn runner<S: RunStore>(function: Function, store: S) -> BenchRunner<S> {
    Runner::new(Registry::new([function]).unwrap(), store, MemoryBus::new(), MemoryTimer::new())
        .with_clock(Arc::new(ManualClock::at(NOW)))
        .with_config(RunnerConfig::default().wait_lookback(std::time::Duration::ZERO))
}

/// Starts a run of the runner's function for a new event; returns its id.
fn start<S: RunStore>(runner: &BenchRunner<S>, event_name: &str) -> RunId {
    let id = format!("e-{}", RUN.fetch_add(1, Ordering::Relaxed));
    let runs = block_on(runner.accept(&EventPayload::new(event_name, json!({})).with_id(id).with_ts(NOW))).unwrap();
    runs.into_iter().next().unwrap()
}

/// The Runner driving a run whose `N` steps are memoized: it loads the journal, replays the
/// steps, reaches the sleep and suspends the run again.
fn runner_replay<S: RunStore + Clone>(c: &mut Criterion, store_name: &str, store: impl Fn() -> S) {
    let mut group = c.benchmark_group(format!("runner_replay_memoized_steps/{store_name}"));
    group.sample_size(10);
    for size in SIZES {
        let runner = runner(many_steps_then_sleep(size), store());
        let run_id = start(&runner, "bench/parked");
        let first = block_on(runner.drive(&run_id)).unwrap();
        assert!(matches!(first, Drive::Suspended { status: RunStatus::Sleeping, .. }), "{first:?}");
        group.throughput(Throughput::Elements(u64::from(size)));
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| {
                let drive = block_on(runner.drive(black_box(&run_id))).unwrap();
                assert!(matches!(drive, Drive::Suspended { status: RunStatus::Sleeping, .. }), "{drive:?}");
            })
        });
    }
    group.finish();
}

/// The Runner executing and committing every step of a fresh run of `N` steps (the run is
/// created outside the timing).
fn runner_execute<S: RunStore + Clone>(c: &mut Criterion, store_name: &str, store: impl Fn() -> S) {
    let mut group = c.benchmark_group(format!("runner_execute_new_steps/{store_name}"));
    group.sample_size(10);
    for size in SIZES {
        let function = many_steps(size);
        group.throughput(Throughput::Elements(u64::from(size)));
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, &size| {
            b.iter_batched(
                || {
                    let runner = runner(function.clone(), store());
                    let run_id = start(&runner, "bench/run");
                    (runner, run_id)
                },
                |(runner, run_id)| {
                    let drive = block_on(runner.drive(&run_id)).unwrap();
                    assert_eq!(drive, Drive::Completed(json!(u64::from(size))));
                    runner // dropped outside the timing
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

fn runner_sizes(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(dir.path().join("runner.db")).unwrap();
    runner_replay(c, "memory", MemoryStore::new);
    runner_replay(c, "sqlite", || sqlite.clone());
    runner_execute(c, "memory", MemoryStore::new);
    runner_execute(c, "sqlite", || sqlite.clone());
}

criterion_group!(benches, replay, execute_one_step, replay_sizes, runner_sizes);
criterion_main!(benches);
