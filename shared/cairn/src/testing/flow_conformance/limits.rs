//! Rate limits, idempotency, singletons and bursts: what admission decides per event.

#![allow(clippy::unwrap_used)] // Test support: a failed unwrap is a failed contract.

use super::*;

/// R1, R4, R5: `rate_limit {limit: 1, period: "4h", key: company}`; a duplicate spends nothing;
/// a `false` key exempts the event.
pub async fn rate_limit_skips_events_over_the_limit<S: RunStore>(store: S) {
    let scenario = Scenario::new(store, |prefix| {
        let limited = Function::new(format!("{prefix}-sync"))
            .on_event("fc/company")
            .rate_limit(RateLimit::new(1, "4h").key("event.data.company_id"))
            .handler(done)
            .unwrap();
        let exempt = Function::new(format!("{prefix}-exempt"))
            .on_event("fc/maybe")
            .rate_limit(RateLimit::new(1, "1h").key("event.data.limited"))
            .handler(done)
            .unwrap();
        vec![limited, exempt]
    });
    let hour = 3_600;
    let c1_first = scenario.send_at(0, "fc/company", json!({"company_id": "c1"})).await;
    // R4: the same event delivered again finds its run and spends no token.
    let event = EventPayload::new("fc/company", json!({"company_id": "c1"})).with_id(&c1_first);
    scenario.runner().accept(&event).await.unwrap();
    let c1_later = scenario.send_at(hour, "fc/company", json!({"company_id": "c1"})).await;
    let c2 = scenario.send_at(hour, "fc/company", json!({"company_id": "c2"})).await;
    let c1_after = scenario.send_at(4 * hour, "fc/company", json!({"company_id": "c1"})).await;
    assert_eq!(scenario.status("sync", &c1_first).await, COMPLETED);
    assert_eq!(scenario.status("sync", &c1_later).await, (RunStatus::Skipped, Some(SkipReason::RateLimit)));
    assert_eq!(scenario.status("sync", &c2).await, COMPLETED);
    assert_eq!(scenario.status("sync", &c1_after).await, COMPLETED);
    let skipped = scenario.head("sync", &c1_later).await;
    assert_eq!(skipped.skipped.unwrap().key.as_deref(), Some("c1"));
    assert_eq!((skipped.ended_at, skipped.outbox.len(), skipped.wake_at), (Some(hour * 1_000), 0, None));
    // R5: `false` turns the limit off for the event.
    for _ in 0..5 {
        let id = scenario.send_at(5 * hour, "fc/maybe", json!({"limited": false})).await;
        assert_eq!(scenario.status("exempt", &id).await, COMPLETED);
    }
}

/// R2: `{limit: 10, period: "60s"}` admits its hidden burst of 2 at once, then one per 6 s.
pub async fn rate_limit_has_inngests_hidden_burst<S: RunStore>(store: S) {
    let scenario = Scenario::new(store, |prefix| {
        vec![
            Function::new(format!("{prefix}-burst"))
                .on_event("fc/burst")
                .rate_limit(RateLimit::new(10, "60s"))
                .handler(done)
                .unwrap(),
        ]
    });
    let mut at_zero = Vec::new();
    for _ in 0..10 {
        at_zero.push(scenario.send_at(0, "fc/burst", json!({})).await);
    }
    let mut ran = 0;
    for id in &at_zero {
        if scenario.status("burst", id).await == COMPLETED {
            ran += 1;
        }
    }
    assert_eq!(ran, 2);
    let mut later = Vec::new();
    for at in [6, 7, 12] {
        let id = scenario.send_at(at, "fc/burst", json!({})).await;
        later.push(scenario.status("burst", &id).await.0);
    }
    assert_eq!(later, [RunStatus::Completed, RunStatus::Skipped, RunStatus::Completed]);
}

/// I1, I2, I5: one run per key per 24 h; a skipped event does not extend the window; `false`
/// exempts.
pub async fn idempotency_allows_one_run_per_key_per_day<S: RunStore>(store: S) {
    let scenario = Scenario::new(store, |prefix| {
        vec![
            Function::new(format!("{prefix}-charge"))
                .on_event("fc/cart")
                .idempotency("event.data.cartId")
                .handler(done)
                .unwrap(),
        ]
    });
    let (hour, day) = (3_600, 86_400);
    let a0 = scenario.send_at(0, "fc/cart", json!({"cartId": "A"})).await;
    let a1h = scenario.send_at(hour, "fc/cart", json!({"cartId": "A"})).await;
    let b1h = scenario.send_at(hour, "fc/cart", json!({"cartId": "B"})).await;
    let a23h = scenario.send_at(23 * hour, "fc/cart", json!({"cartId": "A"})).await;
    let a_before = scenario.send_at(day - 1, "fc/cart", json!({"cartId": "A"})).await;
    let a_day = scenario.send_at(day, "fc/cart", json!({"cartId": "A"})).await;
    let skipped = (RunStatus::Skipped, Some(SkipReason::Idempotency));
    assert_eq!(scenario.status("charge", &a0).await, COMPLETED);
    assert_eq!(scenario.status("charge", &a1h).await, skipped);
    assert_eq!(scenario.status("charge", &b1h).await, COMPLETED);
    assert_eq!(scenario.status("charge", &a23h).await, skipped);
    assert_eq!(scenario.status("charge", &a_before).await, skipped);
    assert_eq!(scenario.status("charge", &a_day).await, COMPLETED);
    for _ in 0..3 {
        let id = scenario.send_at(day + 1, "fc/cart", json!({"cartId": false})).await;
        assert_eq!(scenario.status("charge", &id).await, COMPLETED);
    }
}

/// S1, S3, S8: skip mode keeps one active run per key (sleeping counts), other keys and
/// `false` keys run, and the key is free again once the run ends.
pub async fn singleton_skips_while_a_run_for_the_key_is_active<S: RunStore>(store: S) {
    let scenario = Scenario::new(store, |prefix| {
        vec![
            Function::new(format!("{prefix}-solo"))
                .on_event("fc/work")
                .singleton(Singleton::skip().key("event.data.user"))
                .handler(sleep_then_finish)
                .unwrap(),
        ]
    });
    let a1 = scenario.send_at(0, "fc/work", json!({"user": "A", "secs": 30})).await;
    let b1 = scenario.send_at(1, "fc/work", json!({"user": "B", "secs": 30})).await;
    let a2 = scenario.send_at(5, "fc/work", json!({"user": "A", "secs": 30})).await;
    assert_eq!(scenario.status("solo", &a1).await.0, RunStatus::Sleeping);
    assert_eq!(scenario.status("solo", &b1).await.0, RunStatus::Sleeping);
    assert_eq!(scenario.status("solo", &a2).await, (RunStatus::Skipped, Some(SkipReason::Singleton)));
    let a1_run = scenario.head("solo", &a1).await.run_id;
    assert_eq!(scenario.head("solo", &a2).await.skipped.unwrap().by, Some(a1_run));
    scenario.at(30).await;
    assert_eq!(scenario.status("solo", &a1).await, COMPLETED);
    let a3 = scenario.send_at(31, "fc/work", json!({"user": "A", "secs": 1})).await;
    assert_eq!(scenario.status("solo", &a3).await.0, RunStatus::Sleeping);
    // S8: `false` keys are not singletons.
    let solo1 = scenario.send_at(40, "fc/work", json!({"user": false, "secs": 5})).await;
    let solo2 = scenario.send_at(40, "fc/work", json!({"user": false, "secs": 5})).await;
    assert_eq!(scenario.status("solo", &solo1).await.0, RunStatus::Sleeping);
    assert_eq!(scenario.status("solo", &solo2).await.0, RunStatus::Sleeping);
}

/// S2 and S6: cancel mode cancels the active run (with `inngest/function.cancelled`) and starts
/// the new one; a lock whose holder ended without releasing it (a lost release) is taken over.
pub async fn singleton_cancel_mode_replaces_the_active_run<S: RunStore>(store: S) {
    let scenario = Scenario::new(store, |prefix| {
        vec![
            Function::new(format!("{prefix}-latest"))
                .on_event("fc/work")
                .singleton(Singleton::cancel().key("event.data.user"))
                .handler(sleep_then_finish)
                .unwrap(),
        ]
    });
    let a1 = scenario.send_at(0, "fc/work", json!({"user": "A", "secs": 3_600})).await;
    let a2 = scenario.send_at(5, "fc/work", json!({"user": "A", "secs": 3_600})).await;
    let first = scenario.head("latest", &a1).await;
    assert_eq!((first.status, first.ended_at), (RunStatus::Cancelled, Some(5_000)));
    assert_eq!(scenario.status("latest", &a2).await.0, RunStatus::Sleeping);
    let cancelled: Vec<EventPayload> = scenario
        .runner()
        .bus()
        .sent()
        .into_iter()
        .filter(|event| event.name == crate::event::CANCELLED_EVENT && event.data["run_id"] == first.run_id.as_str())
        .collect();
    assert_eq!(cancelled.len(), 1);
    // a2 ends and releases the key.
    scenario.at(3_605).await;
    let second = scenario.head("latest", &a2).await;
    assert_eq!((second.status, second.holds.len()), (RunStatus::Completed, 0));
    // S6: a run for the key ended without releasing it (a crash lost its release): made here
    // by taking the lock for a run and ending that run's head without the release.
    let store = scenario.runner().store();
    let key = singleton_key(&scenario, &a2).await;
    let ghost = RunMeta::new(RunId::new(unique("ghost")), &second.function_id, second.event.clone(), 3_605_000);
    let taken = store.admit_run(ghost.clone(), &[Claim::Lock { key, replaces: None }], 3_605_000).await.unwrap();
    assert_eq!(taken, Admission::Created(ghost.clone()));
    let mut ended = store.load(&ghost.run_id).await.unwrap().unwrap().meta;
    ended.status = RunStatus::Completed;
    store.update_meta(&ended).await.unwrap();
    // The next run finds the holder ended and takes the key over.
    let a3 = scenario.send_at(3_700, "fc/work", json!({"user": "A", "secs": 1})).await;
    assert_eq!(scenario.status("latest", &a3).await.0, RunStatus::Sleeping);
}

/// The singleton lock key `event_id`'s run of `latest` held (recomputed as admission does).
async fn singleton_key<S: RunStore>(scenario: &Scenario<S>, event_id: &str) -> String {
    let head = scenario.head("latest", event_id).await;
    let function = scenario.runner().registry().get(&head.function_id).unwrap().clone();
    let claims = function.flow().claims(function.id(), &head.event).unwrap();
    claims[0].claim.key().to_string()
}

/// T2, T3 and R3: bursts. A throttle starts `limit + burst` runs at once from idle, then one
/// every `period / limit` (T2: 1 per 5 s with burst 2, six events at 0 start at 0, 0, 0, 5, 10,
/// 15; T3: 2 per 6 s with burst 1, at 0, 0, 0, 3, 6, 9); a rate limit of 100 a minute admits its
/// hidden burst of 10 plus one of 100 events at once and skips the other 89.
pub async fn bursts_start_at_inngests_times<S: RunStore>(store: S) {
    let starts = Starts::default();
    let scenario = Scenario::with_clock(store, |prefix, clock| {
        vec![
            start_recorder(format!("{prefix}-t2"), "fc/t2", &starts, clock, |f| {
                f.throttle(Throttle::new(1, "5s").burst(2))
            }),
            start_recorder(format!("{prefix}-t3"), "fc/t3", &starts, clock, |f| {
                f.throttle(Throttle::new(2, "6s").burst(1))
            }),
            Function::new(format!("{prefix}-r3"))
                .on_event("fc/r3")
                .rate_limit(RateLimit::new(100, "1m"))
                .handler(done)
                .unwrap(),
        ]
    });
    let started = |from: usize| starts.lock().unwrap()[from..].iter().map(|(_, secs)| *secs).collect::<Vec<_>>();
    for n in 0..6 {
        scenario.send_at(0, "fc/t2", json!({"name": format!("t2-{n}")})).await;
    }
    for secs in [5, 10, 15] {
        scenario.at(secs).await;
    }
    assert_eq!(started(0), [0, 0, 0, 5, 10, 15]);
    for n in 0..6 {
        scenario.send_at(100, "fc/t3", json!({"name": format!("t3-{n}")})).await;
    }
    for secs in [103, 106, 109] {
        scenario.at(secs).await;
    }
    assert_eq!(started(6), [100, 100, 100, 103, 106, 109]);
    let mut statuses = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..100 {
        let id = scenario.send_at(200, "fc/r3", json!({})).await;
        *statuses.entry(scenario.status("r3", &id).await.0.to_string()).or_default() += 1;
    }
    assert_eq!(statuses, [("completed".to_string(), 11), ("skipped".to_string(), 89)].into());
}
