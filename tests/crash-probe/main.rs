//! A process the fault tests kill on purpose: it runs the `probe` function (step `effect`
//! appends a line to `$MARKER_FILE`, step `second` returns 2) over DynamoDB, and aborts the
//! process at `$CRASH_POINT`: `after-effect` (the side effect happened, nothing committed) or
//! `after-commit` (the step's record is stored, nothing after).

use cairn::prelude::*;
use cairn::store::{Commit, CreateRun, RunQuery};
use cairn::{Journal, RunId, RunMeta, RunStore, StepRecord, StoreError, Wait};
use cairn_aws::DynamoDbStore;
use std::io::Write;
use std::time::Duration;

/// Aborts the process right after the `effect` step's record is stored, when asked to.
#[derive(Clone, Debug)]
struct AbortAfterCommit(DynamoDbStore, bool);

impl RunStore for AbortAfterCommit {
    async fn admit_run(
        &self,
        meta: RunMeta,
        claims: &[cairn::flow::Claim],
        now: cairn::Millis,
    ) -> Result<cairn::store::Admission, StoreError> {
        self.0.admit_run(meta, claims, now).await
    }
    async fn acquire_slots(
        &self,
        run_id: &RunId,
        slots: &[cairn::flow::Slot],
        now: cairn::Millis,
        hold_until: cairn::Millis,
    ) -> Result<cairn::flow::Acquired, StoreError> {
        self.0.acquire_slots(run_id, slots, now, hold_until).await
    }
    async fn release_slots(
        &self,
        run_id: &RunId,
        slots: &[cairn::flow::Slot],
        now: cairn::Millis,
    ) -> Result<Vec<RunId>, StoreError> {
        self.0.release_slots(run_id, slots, now).await
    }
    async fn throttle_start(
        &self,
        run_id: &RunId,
        key: &str,
        limiter: cairn::flow::Gcra,
        score: cairn::Millis,
        now: cairn::Millis,
    ) -> Result<cairn::flow::Throttled, StoreError> {
        self.0.throttle_start(run_id, key, limiter, score, now).await
    }
    async fn leave_throttle(&self, run_id: &RunId, key: &str) -> Result<(), StoreError> {
        self.0.leave_throttle(run_id, key).await
    }
    async fn window(
        &self,
        keys: &[&str],
        change: &cairn::flow::WindowChange,
        now: cairn::Millis,
    ) -> Result<cairn::flow::Windowed, StoreError> {
        self.0.window(keys, change, now).await
    }
    async fn window_events(&self, run_id: &RunId) -> Result<Vec<cairn::EventPayload>, StoreError> {
        self.0.window_events(run_id).await
    }
    async fn release_lock(&self, key: &str, holder: &RunId) -> Result<(), StoreError> {
        self.0.release_lock(key, holder).await
    }
    async fn create_run(&self, meta: RunMeta) -> Result<CreateRun, StoreError> {
        self.0.create_run(meta).await
    }
    async fn load(&self, run_id: &RunId) -> Result<Option<Journal>, StoreError> {
        self.0.load(run_id).await
    }
    async fn update_meta(&self, meta: &RunMeta) -> Result<RunMeta, StoreError> {
        self.0.update_meta(meta).await
    }
    async fn commit_step(&self, run_id: &RunId, record: &StepRecord) -> Result<Commit, StoreError> {
        let commit = self.0.commit_step(run_id, record).await?;
        if self.1 && record.name == "effect" {
            std::process::abort();
        }
        Ok(commit)
    }
    async fn commit_and_wake(
        &self,
        run_id: &RunId,
        record: &StepRecord,
        now: cairn::Millis,
    ) -> Result<Commit, StoreError> {
        self.0.commit_and_wake(run_id, record, now).await
    }
    async fn due_runs(&self, function_id: &str, now: cairn::Millis, limit: usize) -> Result<Vec<RunMeta>, StoreError> {
        self.0.due_runs(function_id, now, limit).await
    }
    async fn put_wait(&self, wait: &Wait) -> Result<(), StoreError> {
        self.0.put_wait(wait).await
    }
    async fn waits_for(&self, event: &EventPayload) -> Result<Vec<Wait>, StoreError> {
        self.0.waits_for(event).await
    }
    async fn remove_wait(&self, wait: &Wait) -> Result<bool, StoreError> {
        self.0.remove_wait(wait).await
    }
    async fn record_event(&self, event: &EventPayload, received_at: cairn::Millis) -> Result<(), StoreError> {
        self.0.record_event(event, received_at).await
    }
    async fn events_since(&self, name: &str, since: cairn::Millis) -> Result<Vec<EventPayload>, StoreError> {
        self.0.events_since(name, since).await
    }
    async fn list_runs(&self, query: &RunQuery) -> Result<Vec<RunMeta>, StoreError> {
        self.0.list_runs(query).await
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let marker = std::env::var("MARKER_FILE")?;
    let crash = std::env::var("CRASH_POINT").unwrap_or_default();
    let abort_after_effect = crash == "after-effect";
    let probe = Function::new("probe").on_event("test/probe").handler(move |_: Event, step: Step| {
        let marker = marker.clone();
        async move {
            let one: u32 = step
                .run("effect", || async move {
                    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&marker)?;
                    writeln!(file, "effect")?;
                    file.sync_all()?;
                    if abort_after_effect {
                        std::process::abort();
                    }
                    Ok(1)
                })
                .await?;
            let two: u32 = step.run("second", || async { Ok(2) }).await?;
            Ok(one + two)
        }
    })?;
    let config = aws_config::load_from_env().await;
    let store = DynamoDbStore::new(
        aws_sdk_dynamodb::Client::new(&config),
        std::env::var("CAIRN_TABLE")?,
        std::env::var("CAIRN_SCOPE")?,
    )?;
    let store = AbortAfterCommit(store, crash == "after-commit");
    let runner =
        cairn::Runner::new(cairn::Registry::new([probe])?, store, cairn::MemoryBus::new(), cairn::MemoryTimer::new())
            .with_config(cairn::RunnerConfig::default().lease(Duration::from_secs(2)));
    let event = EventPayload::new("test/probe", json!({})).with_id("probe-1");
    for run in runner.accept(&event).await? {
        let drive = runner.drive(&run).await?;
        println!("{}", serde_json::to_string(&format!("{drive:?}"))?);
    }
    Ok(())
}
