//! The operator contracts every [`RunStore`] backend must meet through [`RunControl`]: cancel,
//! rerun from the start or the failed step, bulk cancel and replay by filter.
#![allow(clippy::unwrap_used)] // Test support: a failed unwrap is a failed contract.

use super::{UNIQUE, completed, meta, record, run_id};
use crate::bus::{MemoryBus, MemoryTimer};
use crate::error::StepError;
use crate::event::EventPayload;
use crate::id::RunId;
use crate::lifecycle::transition::Durations;
use crate::lifecycle::{RerunFrom, RunControl};
use crate::record::{RunStatus, StepKind, StepState, Wait};
use crate::store::{RunQuery, RunStore};
use serde_json::json;
use std::sync::atomic::Ordering;

const DURATIONS: Durations = Durations { lease: 30_000, retention: 86_400_000 };

/// A run of a fresh function with a completed step `a`, a failed step `b` and a wait `w` on
/// `app/approved`, sleeping (as a driver leaves it while it waits).
async fn run_with_history<S: RunStore>(store: &S, function: &str) -> RunId {
    let id = run_id("history");
    let mut head = meta(&id, function, 1_000);
    head.status = RunStatus::Waiting;
    store.create_run(head).await.unwrap();
    store.commit_step(&id, &record("a", 0, completed(json!("a-out")))).await.unwrap();
    let failed = StepState::Failed { error: StepError::non_retriable("b broke") };
    store.commit_step(&id, &record("b", 1, failed)).await.unwrap();
    let mut wait = record("w", 2, StepState::Scheduled { wake_at: 90_000 });
    wait.kind = StepKind::WaitForEvent;
    wait.detail = Some(json!({"event": "app/approved"}));
    store.commit_step(&id, &wait).await.unwrap();
    let pending = Wait::new("app/approved", &id, &wait.id, None, &EventPayload::new("app/x", json!({})), 90_000, 1_000);
    store.put_wait(&pending).await.unwrap();
    id
}

/// Cancelling ends the run `cancelled`, removes its waits and sends `finished` and
/// `cancelled` (then clears the outbox); a second cancel is refused, naming the status.
pub async fn cancel_ends_the_run_and_sends_its_events<S: RunStore>(store: S) {
    let function = format!("cancel-{}", UNIQUE.fetch_add(1, Ordering::Relaxed));
    let id = run_with_history(&store, &function).await;
    let (bus, timer) = (MemoryBus::new(), MemoryTimer::new());
    let control = RunControl::new(&store, &bus, &timer, 5_000, DURATIONS);
    let cancelled = control.cancel(&id).await.unwrap();
    assert_eq!((cancelled.status, cancelled.ended_at), (RunStatus::Cancelled, Some(5_000)));
    let head = store.load(&id).await.unwrap().unwrap().meta;
    assert_eq!((head.status, head.outbox.len(), head.wake_at, head.lease), (RunStatus::Cancelled, 0, None, None));
    let sent: Vec<(String, serde_json::Value)> =
        bus.sent().into_iter().map(|event| (event.name, event.data["run_id"].clone())).collect();
    assert_eq!(
        sent,
        vec![
            ("inngest/function.finished".to_string(), json!(id)),
            ("inngest/function.cancelled".to_string(), json!(id)),
        ]
    );
    assert_eq!(bus.sent()[1].data["error"]["message"], json!("function cancelled"));
    let approved = EventPayload::new("app/approved", json!({}));
    assert!(store.waits_for(&approved).await.unwrap().iter().all(|wait| wait.run_id != id));
    let again = control.cancel(&id).await.unwrap_err();
    assert_eq!(again.to_string(), format!("run `{id}` already ended cancelled"));
    let unknown = run_id("nobody");
    assert_eq!(control.cancel(&unknown).await.unwrap_err().to_string(), format!("no run `{unknown}`"));
}

/// A rerun is a new run of the same function and event, woken at once; from the failed step it
/// starts with the completed steps before that step, from the start with none.
pub async fn rerun_starts_a_new_run_from_the_start_or_the_failed_step<S: RunStore>(store: S) {
    let function = format!("rerun-{}", UNIQUE.fetch_add(1, Ordering::Relaxed));
    let id = run_with_history(&store, &function).await;
    let (bus, timer) = (MemoryBus::new(), MemoryTimer::new());
    let control = RunControl::new(&store, &bus, &timer, 7_000, DURATIONS);
    let from_failed = control.rerun(&id, RerunFrom::Failed).await.unwrap();
    let journal = store.load(&from_failed).await.unwrap().unwrap();
    assert_ne!(from_failed, id);
    assert_eq!((journal.meta.function_id.as_str(), journal.meta.created_at), (function.as_str(), 7_000));
    assert_eq!(journal.meta.event, store.load(&id).await.unwrap().unwrap().meta.event);
    assert_eq!(journal.meta.wake_at, Some(7_000 + DURATIONS.lease));
    let kept: Vec<(&str, &StepState)> = journal.steps.iter().map(|step| (step.name.as_str(), &step.state)).collect();
    assert_eq!(kept, vec![("a", &completed(json!("a-out")))]);
    let from_start = control.rerun(&id, RerunFrom::Start).await.unwrap();
    assert!(store.load(&from_start).await.unwrap().unwrap().steps.is_empty());
    let mut woken = timer.take_due(7_000);
    woken.sort();
    let mut expected = vec![from_failed.clone(), from_start];
    expected.sort();
    assert_eq!(woken, expected);
    let no_failure = control.rerun(&from_failed, RerunFrom::Failed).await.unwrap_err();
    assert_eq!(no_failure.to_string(), format!("run `{from_failed}` has no failed step; rerun it from the start"));
}

/// Bulk cancel and replay act on what a filter matches, and report what they skipped and why.
pub async fn bulk_cancel_and_replay_by_filter<S: RunStore>(store: S) {
    let function = format!("bulk-{}", UNIQUE.fetch_add(1, Ordering::Relaxed));
    let ids: Vec<RunId> = (0..3).map(|n| run_id(&format!("bulk{n}"))).collect();
    for (n, id) in ids.iter().enumerate() {
        store.create_run(meta(id, &function, 100 + n as i64)).await.unwrap();
    }
    let mut done = store.load(&ids[0]).await.unwrap().unwrap().meta;
    done.status = RunStatus::Completed;
    store.update_meta(&done).await.unwrap();
    let (bus, timer) = (MemoryBus::new(), MemoryTimer::new());
    let control = RunControl::new(&store, &bus, &timer, 9_000, DURATIONS);
    let query = RunQuery { function_id: Some(function.clone()), ..RunQuery::default() };
    let report = control.cancel_matching(&query).await.unwrap();
    assert_eq!(report.matched, 3);
    assert_eq!(report.done, vec![(ids[2].clone(), None), (ids[1].clone(), None)]);
    assert_eq!(report.skipped, vec![(ids[0].clone(), format!("run `{}` already ended completed", ids[0]))]);
    let cancelled = RunQuery { status: Some(RunStatus::Cancelled), ..query };
    let replay = control.replay_matching(&cancelled, RerunFrom::Start).await.unwrap();
    assert_eq!((replay.matched, replay.done.len(), replay.skipped.len()), (2, 2, 0));
    for (old, new) in &replay.done {
        let new = new.clone().unwrap();
        assert_eq!(
            store.load(&new).await.unwrap().unwrap().meta.event,
            store.load(old).await.unwrap().unwrap().meta.event
        );
    }
    assert_eq!(timer.len(), 2);
}
