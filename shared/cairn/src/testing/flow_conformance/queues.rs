//! Concurrency, throttle and priority: runs that wait their turn, and the options combined.

#![allow(clippy::unwrap_used)] // Test support: a failed unwrap is a failed contract.

use super::*;

/// The store's concurrency contract (C1's queue, FIFO, priority, lapsed holds, two limits): a
/// key's holders never exceed its limit, queued runs start oldest first, and a run refused by
/// one of two keys holds neither.
pub async fn concurrency_slots_are_held_and_queued_in_order<S: RunStore>(store: S) {
    let key = unique("slot");
    let slot = |score| Slot { key: key.clone(), limit: 2, score };
    let runs: Vec<RunId> = (0..7).map(|n| RunId::new(unique(&format!("c{n}")))).collect();
    let granted = |acquired: Acquired| acquired == Acquired::Granted;
    let queued = |position| Acquired::Queued { slot: 0, position };
    // C1: five at once under a limit of 2: two hold, three wait in order.
    assert!(granted(store.acquire_slots(&runs[1], &[slot(1)], 0, 60_000).await.unwrap()));
    assert!(granted(store.acquire_slots(&runs[2], &[slot(2)], 0, 60_000).await.unwrap()));
    for (n, position) in [(3, 0), (4, 1), (5, 2)] {
        assert_eq!(store.acquire_slots(&runs[n], &[slot(n as i64)], 0, 60_000).await.unwrap(), queued(position));
    }
    // Trying again does not queue a run twice.
    assert_eq!(store.acquire_slots(&runs[4], &[slot(4)], 0, 60_000).await.unwrap(), queued(1));
    // A release wakes the head only; the head then takes the slot, a run behind it cannot.
    assert_eq!(store.release_slots(&runs[1], &[slot(1)], 10).await.unwrap(), [runs[3].clone()]);
    assert_eq!(store.acquire_slots(&runs[4], &[slot(4)], 10, 60_000).await.unwrap(), queued(1));
    assert!(granted(store.acquire_slots(&runs[3], &[slot(3)], 10, 120_000).await.unwrap()));
    // Priority: a newcomer whose score is earlier goes ahead of the queue.
    assert_eq!(store.acquire_slots(&runs[6], &[slot(0)], 20, 180_000).await.unwrap(), queued(0));
    // Run 2's invocation died: its hold lapses at 60 s and the head takes its place.
    assert!(granted(store.acquire_slots(&runs[6], &[slot(0)], 60_001, 180_000).await.unwrap()));
    assert_eq!(store.acquire_slots(&runs[4], &[slot(4)], 60_001, 180_000).await.unwrap(), queued(0));
    // Two limits: refused by the second, a run holds neither.
    let (a, b) = (unique("slot-a"), unique("slot-b"));
    let one = |key: &str| Slot { key: key.to_string(), limit: 1, score: 0 };
    assert!(granted(store.acquire_slots(&runs[0], &[one(&b)], 0, 60_000).await.unwrap()));
    assert_eq!(
        store.acquire_slots(&runs[5], &[one(&a), one(&b)], 0, 60_000).await.unwrap(),
        Acquired::Queued { slot: 1, position: 0 }
    );
    assert!(granted(store.acquire_slots(&runs[2], &[one(&a)], 0, 60_000).await.unwrap()), "run 5 holds no slot of a");
    assert_eq!(store.release_slots(&runs[0], &[one(&b)], 0).await.unwrap(), [runs[5].clone()]);
}

/// C1, C3, C15 through the Runner: while one run executes under `concurrency: 1`, the next is
/// `queued` (saying why), starts when the slot is given back, sleeping holds no slot, and a
/// run cancelled while queued leaves the queue without blocking the one behind it.
pub async fn concurrency_queues_runs_while_a_slot_is_held<S: RunStore>(store: S) {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let order = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let scenario = Scenario::new(store, |prefix| {
        vec![gated_worker(format!("{prefix}-one"), "fc/one", &gate, &order, true, |f| f)]
    });
    let event = |name: &str, blocks: bool| {
        EventPayload::new("fc/one", json!({"user": "u1", "name": name, "blocks": blocks})).with_id(unique(name))
    };
    let (first, second, third) = (event("first", true), event("second", false), event("third", false));
    let function = format!("{}-one", scenario.prefix);
    let run_of = |event: &EventPayload| RunId::for_event(&function, event.id.as_deref().unwrap());
    for event in [&first, &second, &third] {
        scenario.runner().accept(event).await.unwrap();
    }
    let runner = scenario.runner();
    let (first_run, second_run, third_run) = (run_of(&first), run_of(&second), run_of(&third));
    let blocked = runner.drive(&first_run);
    let others = async {
        // The first run is in its step, holding the key's only slot.
        while order.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        let second_drive = runner.drive(&second_run).await.unwrap();
        let third_drive = runner.drive(&third_run).await.unwrap();
        (second_drive, third_drive)
    };
    let (first_drive, (second_drive, third_drive)) = futures::join!(blocked, async {
        let drives = others.await;
        // Cancel the second while it waits; then let the first finish its step.
        runner.control().cancel(&second_run).await.unwrap();
        gate.add_permits(1);
        drives
    });
    assert!(
        matches!(second_drive, crate::runner::Drive::Suspended { status: RunStatus::Queued, .. }),
        "{second_drive:?}"
    );
    assert!(
        matches!(third_drive, crate::runner::Drive::Suspended { status: RunStatus::Queued, .. }),
        "{third_drive:?}"
    );
    // The first run sleeps now, holding no slot; its release woke the queue's head.
    assert!(matches!(first_drive.unwrap(), crate::runner::Drive::Suspended { status: RunStatus::Sleeping, .. }));
    let third_head = runner.store().load(&third_run).await.unwrap().unwrap().meta;
    assert_eq!(third_head.status, RunStatus::Queued);
    assert_eq!(
        third_head.queued.as_ref().map(crate::record::Queued::describe).as_deref(),
        Some("queued by concurrency for key `u1`, 1 ahead")
    );
    runner.run_until_idle().await.unwrap();
    // The cancelled second run left the queue when woken; the third ran in its place.
    assert_eq!(*order.lock().unwrap(), ["first", "third"]);
    assert_eq!(runner.store().load(&third_run).await.unwrap().unwrap().meta.status, RunStatus::Sleeping);
    scenario.at(120).await;
    for run in [&first_run, &third_run] {
        assert_eq!(runner.store().load(run).await.unwrap().unwrap().meta.status, RunStatus::Completed);
    }
}

/// T1, T6, T9, T12: a throttle starts runs on GCRA's schedule (limit 2 per 10 s, five at once:
/// 0, 0, 5, 10, 15 s), queues the rest saying until when, keeps keys apart, lets a start
/// timeout cancel queued runs, and a duplicate delivery spends nothing.
pub async fn throttle_starts_runs_on_schedule_and_queues_the_rest<S: RunStore>(store: S) {
    let starts = Starts::default();
    let scenario = Scenario::with_clock(store, |prefix, clock| {
        vec![
            start_recorder(format!("{prefix}-spaced"), "fc/t", &starts, clock, |f| f.throttle(Throttle::new(2, "10s"))),
            start_recorder(format!("{prefix}-keyed"), "fc/tk", &starts, clock, |f| {
                f.throttle(Throttle::new(1, "10s").key("event.data.user"))
            }),
            start_recorder(format!("{prefix}-timed"), "fc/tt", &starts, clock, |f| {
                f.throttle(Throttle::new(2, "10s")).timeouts(Timeouts::new().start("7s"))
            }),
        ]
    });
    let started = |from: usize| starts.lock().unwrap()[from..].to_vec();
    let at = |pairs: &[(&str, i64)]| pairs.iter().map(|(name, secs)| (name.to_string(), *secs)).collect::<Vec<_>>();
    // T1, with T12: the first event delivered twice.
    let mut ids = Vec::new();
    for name in ["e1", "e2", "e3", "e4", "e5"] {
        ids.push(scenario.send_at(0, "fc/t", json!({"name": name})).await);
    }
    let duplicate = EventPayload::new("fc/t", json!({"name": "e1"})).with_id(&ids[0]);
    scenario.runner().accept(&duplicate).await.unwrap();
    scenario.runner().run_until_idle().await.unwrap();
    let fourth = scenario.head("spaced", &ids[3]).await;
    assert_eq!(fourth.status, RunStatus::Queued);
    assert_eq!(
        fourth.queued.as_ref().map(crate::record::Queued::describe).as_deref(),
        Some("queued by throttle, 1 ahead, until 1970-01-01T00:00:10Z")
    );
    for secs in [5, 10, 15, 20] {
        scenario.at(secs).await;
    }
    assert_eq!(started(0), at(&[("e1", 0), ("e2", 0), ("e3", 5), ("e4", 10), ("e5", 15)]));
    // T6: each user has its own limiter.
    for name in ["u1-a", "u2-a", "u1-b", "u2-b", "u1-c", "u2-c"] {
        scenario.send_at(100, "fc/tk", json!({"name": name, "user": &name[..2]})).await;
    }
    for secs in [110, 120] {
        scenario.at(secs).await;
    }
    // (Two keys due at the same instant start in either order.)
    let mut keyed = started(5);
    keyed.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    assert_eq!(keyed, at(&[("u1-a", 100), ("u2-a", 100), ("u1-b", 110), ("u2-b", 110), ("u1-c", 120), ("u2-c", 120)]));
    // T9: a start timeout of 7 s cancels the runs still queued at 207.
    let mut timed = Vec::new();
    for name in ["t1", "t2", "t3", "t4", "t5"] {
        timed.push(scenario.send_at(200, "fc/tt", json!({"name": name})).await);
    }
    for secs in [205, 207, 210, 215, 220] {
        scenario.at(secs).await;
    }
    assert_eq!(started(11), at(&[("t1", 200), ("t2", 200), ("t3", 205)]));
    for id in &timed[3..] {
        let head = scenario.head("timed", id).await;
        assert_eq!((head.status, head.ended_at), (RunStatus::Cancelled, Some(207_000)));
    }
}

/// The combined scenarios of the reference (section 5) that need no debounce: M3, a singleton
/// is checked at admission, before a throttle could queue the run; M4, a run cancelled while
/// its throttle queues it never starts, and leaves the limiter as it was.
pub async fn combined_options_act_in_inngests_order<S: RunStore>(store: S) {
    let starts = Starts::default();
    let scenario = Scenario::with_clock(store, |prefix, clock| {
        vec![
            start_recorder(format!("{prefix}-single"), "fc/m3", &starts, clock, |f| {
                f.throttle(Throttle::new(1, "10s")).singleton(Singleton::skip())
            }),
            start_recorder(format!("{prefix}-cancellable"), "fc/m4", &starts, clock, |f| {
                f.throttle(Throttle::new(2, "10s")).cancel_on(CancelOn::event("fc/m4.stop").matching("data.name"))
            }),
        ]
    });
    let started = |from: usize| starts.lock().unwrap()[from..].to_vec();
    let at = |pairs: &[(&str, i64)]| pairs.iter().map(|(name, secs)| (name.to_string(), *secs)).collect::<Vec<_>>();
    // M3: the second event is skipped at once by the singleton, not queued by the throttle.
    let first = scenario.send_at(0, "fc/m3", json!({"name": "a0", "secs": 30})).await;
    let second = scenario.send_at(1, "fc/m3", json!({"name": "a1", "secs": 30})).await;
    assert_eq!(scenario.status("single", &first).await.0, RunStatus::Sleeping);
    let skipped = scenario.head("single", &second).await;
    assert_eq!(
        (skipped.status, skipped.skipped.map(|s| s.reason), skipped.ended_at),
        (RunStatus::Skipped, Some(SkipReason::Singleton), Some(1_000))
    );
    assert_eq!(started(0), at(&[("a0", 0)]));
    // M4: T1's five events; the fifth, queued for 15, is cancelled at 12.
    let mut ids = Vec::new();
    for name in ["e1", "e2", "e3", "e4", "e5"] {
        ids.push(scenario.send_at(100, "fc/m4", json!({"name": name})).await);
    }
    for secs in [105, 110] {
        scenario.at(secs).await;
    }
    scenario.send_at(112, "fc/m4.stop", json!({"name": "e5"})).await;
    let cancelled = scenario.head("cancellable", &ids[4]).await;
    assert_eq!((cancelled.status, cancelled.ended_at), (RunStatus::Cancelled, Some(112_000)));
    // The limiter's next start is still 115: a new event then starts at once.
    let sixth = scenario.send_at(115, "fc/m4", json!({"name": "e6"})).await;
    scenario.at(120).await;
    assert_eq!(started(1), at(&[("e1", 100), ("e2", 100), ("e3", 105), ("e4", 110), ("e6", 115)]));
    assert_eq!(scenario.status("cancellable", &sixth).await, COMPLETED);
    assert_eq!(scenario.steps("cancellable", &ids[4]).await, Vec::<String>::new());
}

/// P1 and C2 through the Runner: while R0 executes under `concurrency: 1`, runs that arrive
/// queue by creation time minus their priority (P1: e1 and e2 at 1 and 2 s, e3 at 3 s with
/// priority 120 goes first: e3, e1, e2), and another key's run does not wait (C2).
pub async fn priority_orders_the_queue_and_keys_stay_apart<S: RunStore>(store: S) {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let order = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let scenario = Scenario::new(store, |prefix| {
        vec![gated_worker(format!("{prefix}-ranked"), "fc/ranked", &gate, &order, false, |f| {
            f.priority("event.data.p")
        })]
    });
    let event = |name: &str, user: &str, p: i64, blocks: bool| {
        EventPayload::new("fc/ranked", json!({"user": user, "name": name, "p": p, "blocks": blocks}))
            .with_id(unique(name))
    };
    let function = format!("{}-ranked", scenario.prefix);
    let run_of = |event: &EventPayload| RunId::for_event(&function, event.id.as_deref().unwrap());
    let runner = scenario.runner();
    let r0 = event("r0", "A", 0, true);
    runner.accept(&r0).await.unwrap();
    let r0_run = run_of(&r0);
    let blocked = runner.drive(&r0_run);
    let arrivals = async {
        while order.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        // R0 is in its step, holding A's only slot.
        let mut queued = Vec::new();
        for (secs, name, user, p) in [(1, "e1", "A", 0), (2, "e2", "A", 0), (3, "e3", "A", 120), (4, "b1", "B", 0)] {
            scenario.runs.clock().set(secs * 1_000);
            let arriving = event(name, user, p, false);
            runner.accept(&arriving).await.unwrap();
            queued.push((name, runner.drive(&run_of(&arriving)).await.unwrap()));
        }
        gate.add_permits(1);
        queued
    };
    let (first, queued) = futures::join!(blocked, arrivals);
    assert!(matches!(first.unwrap(), crate::runner::Drive::Completed(_)));
    for (name, drive) in &queued[..3] {
        assert!(
            matches!(drive, crate::runner::Drive::Suspended { status: RunStatus::Queued, .. }),
            "{name}: {drive:?}"
        );
    }
    assert!(matches!(queued[3].1, crate::runner::Drive::Completed(_)), "B's run did not wait: {:?}", queued[3].1);
    runner.run_until_idle().await.unwrap();
    assert_eq!(*order.lock().unwrap(), ["r0", "b1", "e3", "e1", "e2"]);
}
