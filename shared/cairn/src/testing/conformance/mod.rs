//! The behaviour every [`RunStore`] backend must have. A backend joins with one line:
#![allow(clippy::unwrap_used)] // Test support: a failed unwrap is a failed contract.
//!
//! ```text
//! cairn::store_conformance!(sqlite, || async { SqliteStore::in_memory().unwrap() });
//! ```
//!
//! which expands to one `#[test]` per contract, named after it (`sqlite::final_record_is_never_overwritten`).

mod control;

use crate::error::StepError;
use crate::event::EventPayload;
use crate::id::{RunId, StepId};
use crate::record::{Lease, RunMeta, RunStatus, StepKind, StepRecord, StepState, Wait, WaitKey};
use crate::store::{Commit, CreateRun, RunQuery, RunStore, StoreError};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub use super::flow_conformance::{
    admit_run_spends_claims_with_the_head, batches_start_one_run_per_batch_with_every_event,
    bursts_start_at_inngests_times, cancel_on_ends_sleeping_and_waiting_runs,
    cancel_on_ignores_earlier_events_its_own_trigger_and_expired_rules, combined_options_act_in_inngests_order,
    concurrency_queues_runs_while_a_slot_is_held, concurrency_slots_are_held_and_queued_in_order,
    conditions_over_the_trigger_and_locks_through_retries, debounce_starts_one_run_per_burst_with_the_last_event,
    idempotency_allows_one_run_per_key_per_day, priority_orders_the_queue_and_keys_stay_apart,
    rate_limit_has_inngests_hidden_burst, rate_limit_skips_events_over_the_limit,
    singleton_cancel_mode_replaces_the_active_run, singleton_skips_while_a_run_for_the_key_is_active,
    throttle_starts_runs_on_schedule_and_queues_the_rest, timeouts_cancel_runs_that_start_or_finish_late,
};
pub use control::{
    bulk_cancel_and_replay_by_filter, cancel_ends_the_run_and_sends_its_events,
    rerun_starts_a_new_run_from_the_start_or_the_failed_step,
};

static UNIQUE: AtomicU64 = AtomicU64::new(0);

fn run_id(tag: &str) -> RunId {
    // Unique per test and process, so suites may share one backend (a DynamoDB table).
    RunId::new(format!("run-{tag}-{}-{}", std::process::id(), UNIQUE.fetch_add(1, Ordering::Relaxed)))
}

fn meta(run_id: &RunId, function_id: &str, created_at: i64) -> RunMeta {
    RunMeta::new(run_id.clone(), function_id, EventPayload::new("app/test", json!({"n": 1})).with_id("e1"), created_at)
}

fn record(name: &str, position: u32, state: StepState) -> StepRecord {
    StepRecord {
        id: StepId::for_name(name, 0),
        name: name.to_string(),
        kind: StepKind::Run,
        position,
        state,
        attempts: 1,
        started_at: 1_000,
        ended_at: Some(2_000),
        detail: None,
    }
}

fn completed(output: serde_json::Value) -> StepState {
    StepState::Completed { output }
}

/// Loading a run that was never created returns `None`, not an error.
pub async fn load_unknown_returns_none<S: RunStore>(store: S) {
    assert_eq!(store.load(&run_id("unknown")).await.unwrap(), None);
}

/// Creating a run twice (a duplicate delivery) keeps the first and reports it.
pub async fn create_run_is_idempotent<S: RunStore>(store: S) {
    let id = run_id("create");
    let first = meta(&id, "f", 10);
    assert_eq!(store.create_run(first.clone()).await.unwrap(), CreateRun::Created(first.clone()));
    let mut second = meta(&id, "f", 20);
    second.attempt = 3;
    assert_eq!(store.create_run(second).await.unwrap(), CreateRun::Existing(first.clone()));
    assert_eq!(store.load(&id).await.unwrap().unwrap().meta, first);
}

/// A head update names the version it read; the store bumps it and rejects stale writers.
pub async fn update_meta_is_optimistic<S: RunStore>(store: S) {
    let id = run_id("meta");
    store.create_run(meta(&id, "f", 10)).await.unwrap();
    let mut read = store.load(&id).await.unwrap().unwrap().meta;
    read.status = RunStatus::Sleeping;
    read.lease = Some(Lease { owner: "a".into(), expires_at: 99 });
    let stored = store.update_meta(&read).await.unwrap();
    assert_eq!(stored.version, 1);
    assert_eq!(store.load(&id).await.unwrap().unwrap().meta, stored);
    // The same stale version again: conflict, nothing written.
    read.status = RunStatus::Failed;
    assert_eq!(store.update_meta(&read).await.unwrap_err(), StoreError::Conflict { run_id: id.clone(), expected: 0 });
    assert_eq!(store.load(&id).await.unwrap().unwrap().meta.status, RunStatus::Sleeping);
    let unknown = meta(&run_id("missing"), "f", 1);
    assert_eq!(store.update_meta(&unknown).await.unwrap_err(), StoreError::NotFound(unknown.run_id.clone()));
}

/// Of many concurrent head updates from one version, exactly one wins.
pub async fn concurrent_meta_updates_have_one_winner<S: RunStore>(store: S) {
    let store = Arc::new(store);
    let id = run_id("meta-race");
    store.create_run(meta(&id, "f", 10)).await.unwrap();
    let read = store.load(&id).await.unwrap().unwrap().meta;
    let attempts = (0..8).map(|n| {
        let store = Arc::clone(&store);
        let mut mine = read.clone();
        mine.lease = Some(Lease { owner: format!("owner-{n}"), expires_at: 100 });
        async move { store.update_meta(&mine).await }
    });
    let results = futures::future::join_all(attempts).await;
    let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    assert!(results.iter().filter(|r| r.is_err()).all(|r| matches!(r, Err(StoreError::Conflict { .. }))));
    assert_eq!(&store.load(&id).await.unwrap().unwrap().meta, winners[0]);
}

/// Committed steps come back exactly, ordered by position, whatever the commit order.
pub async fn steps_round_trip_in_position_order<S: RunStore>(store: S) {
    let id = run_id("steps");
    store.create_run(meta(&id, "f", 10)).await.unwrap();
    let mut scheduled = record("wait", 2, StepState::Scheduled { wake_at: 5_000 });
    scheduled.kind = StepKind::WaitForEvent;
    scheduled.ended_at = None;
    scheduled.detail = Some(json!({"event": "app/approved", "if": "async.data.id == event.data.id"}));
    let retrying = record(
        "flaky",
        1,
        StepState::Retrying {
            error: StepError::retry_after("later", std::time::Duration::from_secs(30)),
            retry_at: 40_000,
        },
    );
    let failed = record("fatal", 3, StepState::Failed { error: StepError::non_retriable("nope") });
    let done = record("first", 0, completed(json!({"success": true, "nested": [1, 2.5, "x", null]})));
    for r in [&scheduled, &failed, &done, &retrying] {
        assert_eq!(store.commit_step(&id, r).await.unwrap(), Commit::Committed);
    }
    let journal = store.load(&id).await.unwrap().unwrap();
    assert_eq!(journal.steps, vec![done, retrying, scheduled, failed]);
}

/// A final record is never overwritten; the loser gets the winner's record to adopt.
pub async fn final_record_is_never_overwritten<S: RunStore>(store: S) {
    let id = run_id("final");
    store.create_run(meta(&id, "f", 10)).await.unwrap();
    let winner = record("charge", 0, completed(json!({"charge": "ch_1"})));
    let loser = record("charge", 0, completed(json!({"charge": "ch_2"})));
    assert_eq!(store.commit_step(&id, &winner).await.unwrap(), Commit::Committed);
    assert_eq!(store.commit_step(&id, &loser).await.unwrap(), Commit::Existing(Box::new(winner.clone())));
    // Identical re-commit (a retried write) is answered the same way, and changes nothing.
    assert_eq!(store.commit_step(&id, &winner).await.unwrap(), Commit::Existing(Box::new(winner.clone())));
    assert_eq!(store.load(&id).await.unwrap().unwrap().steps, vec![winner]);
}

/// Scheduled and retrying records are replaced by later ones, final or not.
pub async fn non_final_records_are_replaced<S: RunStore>(store: S) {
    let id = run_id("replace");
    store.create_run(meta(&id, "f", 10)).await.unwrap();
    let first = record("flaky", 0, StepState::Retrying { error: StepError::new("boom"), retry_at: 15_000 });
    let mut second = record("flaky", 0, StepState::Retrying { error: StepError::new("boom again"), retry_at: 45_000 });
    second.attempts = 2;
    let mut last = record("flaky", 0, completed(json!("ok")));
    last.attempts = 3;
    for r in [&first, &second, &last] {
        assert_eq!(store.commit_step(&id, r).await.unwrap(), Commit::Committed);
    }
    assert_eq!(store.load(&id).await.unwrap().unwrap().steps, vec![last]);
}

/// A stale writer (fewer attempts) never replaces a newer non-final record: retries that were
/// used up do not come back.
pub async fn stale_records_do_not_replace_newer_ones<S: RunStore>(store: S) {
    let id = run_id("stale");
    store.create_run(meta(&id, "f", 10)).await.unwrap();
    let mut newer = record("flaky", 0, StepState::Retrying { error: StepError::new("third"), retry_at: 90_000 });
    newer.attempts = 3;
    let mut stale = record("flaky", 0, StepState::Retrying { error: StepError::new("second"), retry_at: 45_000 });
    stale.attempts = 2;
    assert_eq!(store.commit_step(&id, &newer).await.unwrap(), Commit::Committed);
    assert_eq!(store.commit_step(&id, &stale).await.unwrap(), Commit::Existing(Box::new(newer.clone())));
    assert_eq!(store.load(&id).await.unwrap().unwrap().steps, vec![newer]);
}

/// `commit_and_wake` commits a final record and makes the run due now in one write: the head's
/// version moves on (a holder's stale update conflicts) and the reconciler's index lists it.
pub async fn commit_and_wake_makes_the_run_due<S: RunStore>(store: S) {
    let id = run_id("wake");
    let function = format!("fn-{id}");
    let mut head = meta(&id, &function, 10);
    head.status = RunStatus::Waiting;
    head.wake_at = Some(86_400_000);
    store.create_run(head).await.unwrap();
    let scheduled = record("approval", 0, StepState::Scheduled { wake_at: 86_400_000 });
    store.commit_step(&id, &scheduled).await.unwrap();
    assert_eq!(store.due_runs(&function, 20_000, 10).await.unwrap(), vec![]);
    let matched = record("approval", 0, completed(json!({"name": "app/approved"})));
    assert_eq!(store.commit_and_wake(&id, &matched, 20_000).await.unwrap(), Commit::Committed);
    let journal = store.load(&id).await.unwrap().unwrap();
    assert_eq!((journal.meta.version, journal.meta.wake_at), (1, Some(20_000)));
    assert_eq!(journal.steps, vec![matched.clone()]);
    let due: Vec<RunId> = store.due_runs(&function, 20_000, 10).await.unwrap().into_iter().map(|m| m.run_id).collect();
    assert_eq!(due, vec![id.clone()]);
    // A second resolution adopts the first, and wakes nothing again.
    let other = record("approval", 0, completed(json!({"name": "app/approved", "id": "later"})));
    assert_eq!(store.commit_and_wake(&id, &other, 30_000).await.unwrap(), Commit::Existing(Box::new(matched)));
    assert_eq!(store.load(&id).await.unwrap().unwrap().meta.version, 1);
    // A holder that read version 0 and now suspends the run gets a conflict (and replays).
    let mut stale = journal.meta.clone();
    stale.version = 0;
    assert!(matches!(store.update_meta(&stale).await, Err(StoreError::Conflict { .. })));
    let missing = run_id("missing");
    assert_eq!(
        store.commit_and_wake(&missing, &record("x", 0, completed(json!(1))), 1).await.unwrap_err(),
        StoreError::NotFound(missing)
    );
}

/// `due_runs` lists a function's runs whose `wake_at` has passed, earliest first, and never a
/// run without one.
pub async fn due_runs_lists_what_needs_a_driver<S: RunStore>(store: S) {
    let function = format!("fn-{}", run_id("due"));
    let ids: Vec<RunId> = (0..4).map(|n| run_id(&format!("due{n}"))).collect();
    for (id, function_id, wake_at) in [
        (&ids[0], function.as_str(), Some(300)),
        (&ids[1], function.as_str(), Some(100)),
        (&ids[2], function.as_str(), None),
        (&ids[3], "another-function", Some(50)),
    ] {
        let mut head = meta(id, function_id, 10);
        head.wake_at = wake_at;
        store.create_run(head).await.unwrap();
    }
    let due = |now: i64, limit: usize| {
        let store = &store;
        let function = function.clone();
        async move { store.due_runs(&function, now, limit).await.unwrap().into_iter().map(|m| m.run_id).collect::<Vec<_>>() }
    };
    assert_eq!(due(99, 10).await, Vec::<RunId>::new());
    assert_eq!(due(200, 10).await, vec![ids[1].clone()]);
    assert_eq!(due(300, 10).await, vec![ids[1].clone(), ids[0].clone()]);
    assert_eq!(due(300, 1).await, vec![ids[1].clone()]);
    // Finished and delivered: out of the index.
    let mut done = store.load(&ids[1]).await.unwrap().unwrap().meta;
    done.status = RunStatus::Completed;
    done.wake_at = None;
    store.update_meta(&done).await.unwrap();
    assert_eq!(due(300, 10).await, vec![ids[0].clone()]);
}

/// Of many concurrent final commits of one step, exactly one is stored; all others adopt it.
pub async fn concurrent_commits_have_one_winner<S: RunStore>(store: S) {
    let store = Arc::new(store);
    let id = run_id("race");
    store.create_run(meta(&id, "f", 10)).await.unwrap();
    let attempts = (0..8).map(|n| {
        let store = Arc::clone(&store);
        let id = id.clone();
        async move {
            let mine = record("pay", 0, completed(json!({ "by": n })));
            (mine.clone(), store.commit_step(&id, &mine).await.unwrap())
        }
    });
    let results = futures::future::join_all(attempts).await;
    let winners: Vec<&StepRecord> =
        results.iter().filter(|(_, c)| *c == Commit::Committed).map(|(mine, _)| mine).collect();
    assert_eq!(winners.len(), 1);
    for (_, commit) in &results {
        if let Commit::Existing(adopted) = commit {
            assert_eq!(&**adopted, winners[0]);
        }
    }
    assert_eq!(store.load(&id).await.unwrap().unwrap().steps, vec![winners[0].clone()]);
}

/// A 300 KB output round-trips byte for byte.
pub async fn large_outputs_round_trip<S: RunStore>(store: S) {
    let id = run_id("large");
    store.create_run(meta(&id, "f", 10)).await.unwrap();
    let big = record("big", 0, completed(json!({"blob": "x".repeat(300 * 1024)})));
    store.commit_step(&id, &big).await.unwrap();
    assert_eq!(store.load(&id).await.unwrap().unwrap().steps, vec![big]);
}

/// Waits are found by the events that could resume them, oldest first, and removed exactly
/// once: a wait whose condition compares a field of the event with a value (`async.data.id ==
/// event.data.id`) is filed under that value, so only an event with that value finds it; a
/// wait of the general form is found by every event of its name.
pub async fn waits_are_listed_and_removed_once<S: RunStore>(store: S) {
    let event = format!("app/approved-{}", UNIQUE.fetch_add(1, Ordering::Relaxed));
    let order = |id: Value| EventPayload::new("app/order.created", json!({ "id": id }));
    let candidate = |data: Value| EventPayload::new(event.clone(), data);
    let wait = |run: &str, expression: &str, trigger: &EventPayload, created_at: i64| {
        Wait::new(
            &event,
            &run_id(run),
            &StepId::for_name("approval", 0),
            Some(expression.into()),
            trigger,
            9_000,
            created_at,
        )
    };
    let by_id = "async.data.id == event.data.id";
    let (first, second) =
        (wait("wait-a", by_id, &order(json!("o-1")), 20), wait("wait-b", by_id, &order(json!("o-2")), 10));
    let numeric = wait("wait-n", "event.data.id == async.data.id && async.data.ok", &order(json!(7)), 30);
    let general = wait("wait-g", "async.data.total > event.data.id", &order(json!(10)), 40);
    assert_eq!(first.key, Some(WaitKey { path: "data.id".into(), value: "s:o-1".into() }));
    assert_eq!(numeric.key, Some(WaitKey { path: "data.id".into(), value: "n:7".into() }));
    assert_eq!((general.key.clone(), general.trigger.clone()), (None, Some(json!({"data": {"id": 10}}))));
    for pending in [&first, &second, &second, &numeric, &general] {
        store.put_wait(pending).await.unwrap();
    }
    let found = |data: Value| {
        let store = &store;
        let event = candidate(data);
        async move { store.waits_for(&event).await.unwrap() }
    };
    assert_eq!(found(json!({"id": "o-1"})).await, vec![first.clone(), general.clone()]);
    assert_eq!(found(json!({"id": "o-2", "total": 3})).await, vec![second.clone(), general.clone()]);
    assert_eq!(found(json!({"id": 7.0})).await, vec![numeric.clone(), general.clone()], "7 and 7.0 are filed alike");
    assert_eq!(found(json!({})).await, vec![general.clone()]);
    assert_eq!(store.waits_for(&EventPayload::new("app/other-event", json!({"id": "o-1"}))).await.unwrap(), vec![]);
    assert!(store.remove_wait(&first).await.unwrap());
    assert!(!store.remove_wait(&first).await.unwrap());
    assert!(store.remove_wait(&general).await.unwrap());
    assert_eq!(found(json!({"id": "o-1"})).await, vec![]);
    assert_eq!(found(json!({"id": "o-2"})).await, vec![second]);
}

/// Received events are listed by name from a time on, oldest first, once per event id.
pub async fn events_are_kept_for_the_wait_lookback<S: RunStore>(store: S) {
    let name = format!("app/signal-{}", UNIQUE.fetch_add(1, Ordering::Relaxed));
    let event = |id: &str, n: u32| EventPayload::new(name.clone(), json!({"n": n})).with_id(id).with_ts(1);
    store.record_event(&event("a", 1), 1_000).await.unwrap();
    store.record_event(&event("b", 2), 2_000).await.unwrap();
    store.record_event(&event("b", 2), 2_500).await.unwrap();
    store.record_event(&event("c", 3), 3_000).await.unwrap();
    store.record_event(&EventPayload::new("app/other", json!({})).with_id("x"), 2_000).await.unwrap();
    assert_eq!(store.events_since(&name, 1_500).await.unwrap(), vec![event("b", 2), event("c", 3)]);
    assert_eq!(store.events_since(&name, 0).await.unwrap().len(), 3);
    assert_eq!(store.events_since(&name, 3_001).await.unwrap(), vec![]);
}

/// Runs list newest first, filtered by function and status, up to the limit.
pub async fn list_runs_filters_and_orders<S: RunStore>(store: S) {
    let function = format!("list-{}", UNIQUE.fetch_add(1, Ordering::Relaxed));
    let ids: Vec<RunId> = (0..3).map(|n| run_id(&format!("list{n}"))).collect();
    for (n, id) in ids.iter().enumerate() {
        store.create_run(meta(id, &function, 100 + n as i64)).await.unwrap();
    }
    let mut failed = store.load(&ids[1]).await.unwrap().unwrap().meta;
    failed.status = RunStatus::Failed;
    store.update_meta(&failed).await.unwrap();
    let query = RunQuery { function_id: Some(function.clone()), ..RunQuery::default() };
    let all: Vec<RunId> = store.list_runs(&query).await.unwrap().into_iter().map(|m| m.run_id).collect();
    assert_eq!(all, vec![ids[2].clone(), ids[1].clone(), ids[0].clone()]);
    let only_failed = RunQuery { status: Some(RunStatus::Failed), ..query.clone() };
    let failed_ids: Vec<RunId> = store.list_runs(&only_failed).await.unwrap().into_iter().map(|m| m.run_id).collect();
    assert_eq!(failed_ids, vec![ids[1].clone()]);
    let limited = RunQuery { limit: 2, ..query.clone() };
    assert_eq!(store.list_runs(&limited).await.unwrap().len(), 2);
    let window = RunQuery { created_from: Some(101), created_before: Some(102), ..query };
    let in_window: Vec<RunId> = store.list_runs(&window).await.unwrap().into_iter().map(|m| m.run_id).collect();
    assert_eq!(in_window, vec![ids[1].clone()]);
}

/// Expands to one `#[test]` per contract of [`crate::testing::conformance`] in a module
/// named `$name`, each on a fresh store from the async `$factory`. With `requires = tool`, for
/// backends that need a server, each test first calls `tool()` (an `Option`, from
/// [`require_env`](crate::testing::require_env) or its kin): `None` skips the test, and under CI
/// the call panics.
#[macro_export]
macro_rules! store_conformance {
    ($name:ident, $factory:expr, requires = $tool:expr) => {
        $crate::store_conformance!(@module $name, $factory, || ($tool)().is_some());
    };
    ($name:ident, $factory:expr) => {
        $crate::store_conformance!(@module $name, $factory, || true);
    };
    // The one list of contracts: a new contract is added here and nowhere else.
    (@module $name:ident, $factory:expr, $guard:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $crate::store_conformance!(@tests $factory, $guard;
                load_unknown_returns_none,
                create_run_is_idempotent,
                update_meta_is_optimistic,
                concurrent_meta_updates_have_one_winner,
                steps_round_trip_in_position_order,
                final_record_is_never_overwritten,
                non_final_records_are_replaced,
                stale_records_do_not_replace_newer_ones,
                commit_and_wake_makes_the_run_due,
                due_runs_lists_what_needs_a_driver,
                concurrent_commits_have_one_winner,
                large_outputs_round_trip,
                waits_are_listed_and_removed_once,
                events_are_kept_for_the_wait_lookback,
                list_runs_filters_and_orders,
                cancel_ends_the_run_and_sends_its_events,
                rerun_starts_a_new_run_from_the_start_or_the_failed_step,
                bulk_cancel_and_replay_by_filter,
                admit_run_spends_claims_with_the_head,
                rate_limit_skips_events_over_the_limit,
                rate_limit_has_inngests_hidden_burst,
                idempotency_allows_one_run_per_key_per_day,
                singleton_skips_while_a_run_for_the_key_is_active,
                singleton_cancel_mode_replaces_the_active_run,
                cancel_on_ends_sleeping_and_waiting_runs,
                cancel_on_ignores_earlier_events_its_own_trigger_and_expired_rules,
                timeouts_cancel_runs_that_start_or_finish_late,
                concurrency_slots_are_held_and_queued_in_order,
                concurrency_queues_runs_while_a_slot_is_held,
                throttle_starts_runs_on_schedule_and_queues_the_rest,
                combined_options_act_in_inngests_order,
                bursts_start_at_inngests_times,
                conditions_over_the_trigger_and_locks_through_retries,
                priority_orders_the_queue_and_keys_stay_apart,
                debounce_starts_one_run_per_burst_with_the_last_event,
                batches_start_one_run_per_batch_with_every_event
            );
        }
    };
    (@tests $factory:expr, $guard:expr; $($contract:ident),*) => {
        $(
            #[test]
            fn $contract() {
                if !($guard)() {
                    return;
                }
                $crate::testing::block_on(async {
                    let store = ($factory)().await;
                    $crate::testing::conformance::$contract(store).await;
                });
            }
        )*
    };
}
