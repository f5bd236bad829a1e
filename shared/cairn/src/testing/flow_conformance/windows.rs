//! Debounce and batches: event windows and the runs they fire.

#![allow(clippy::unwrap_used)] // Test support: a failed unwrap is a failed contract.

use super::*;

/// The run a debounce window of `function` started, given its first event.
async fn fired<S: RunStore>(scenario: &Scenario<S>, function: &str, first_event: &str) -> Option<RunMeta> {
    let function = format!("{}-{function}", scenario.prefix);
    let placeholder = RunId::for_event(&function, first_event);
    let run = crate::flow::fired_run(&placeholder, &function);
    scenario.runner().store().load(&run).await.unwrap().map(|journal| journal.meta)
}

/// Completes with the numbers (`data.n`) of every event it was started with.
async fn window_numbers(event: Event, step: Step) -> Result<Value, crate::StepError> {
    let numbers: Vec<Value> = step.events::<Value>()?.into_iter().map(|event| event.data["n"].clone()).collect();
    Ok(json!({"last": event.data["n"], "events": numbers}))
}

/// D1 to D7 and V4's empty key, M1, M2, a start timeout counted from the firing, Cairn's
/// `all_events`, and a cancelled window: debounce starts one run per burst, at the exact time.
pub async fn debounce_starts_one_run_per_burst_with_the_last_event<S: RunStore>(store: S) {
    use crate::flow::Debounce;
    let scenario = Scenario::new(store, |prefix| {
        let debounced = |id: &str, trigger: &str, debounce: Debounce| {
            Function::new(format!("{prefix}-{id}")).on_event(trigger).debounce(debounce)
        };
        vec![
            debounced("d1", "fc/d1", Debounce::new("5s").key("")).handler(window_numbers).unwrap(),
            debounced("d2", "fc/d2", Debounce::new("5s").timeout("10s")).handler(window_numbers).unwrap(),
            debounced("d3", "fc/d3", Debounce::new("5s").key("event.data.user")).handler(window_numbers).unwrap(),
            debounced("d6", "fc/d6", Debounce::new("5s"))
                .rate_limit(RateLimit::new(1, "1h"))
                .handler(window_numbers)
                .unwrap(),
            debounced("m1", "fc/m1", Debounce::new("5s")).idempotency("event.data.k").handler(window_numbers).unwrap(),
            debounced("m2", "fc/m2", Debounce::new("5s"))
                .singleton(Singleton::skip())
                .handler(sleep_then_finish)
                .unwrap(),
            debounced("late", "fc/late", Debounce::new("5s"))
                .timeouts(Timeouts::new().start("3s"))
                .handler(window_numbers)
                .unwrap(),
            debounced("all", "fc/all", Debounce::new("5s").all_events()).handler(window_numbers).unwrap(),
        ]
    });
    // Each part is its own boxed future: one poll frame holding every await of the whole
    // scenario outgrows a 2 MB test thread in debug builds.
    Box::pin(debounce_bursts(&scenario)).await;
    Box::pin(debounce_keys_and_order(&scenario)).await;
    Box::pin(debounce_with_limits(&scenario)).await;
    Box::pin(debounce_windows_and_cancel(&scenario)).await;
}

/// D1, D7, D2.
async fn debounce_bursts<S: RunStore>(scenario: &Scenario<S>) {
    let output = |meta: &RunMeta| (meta.status, meta.created_at, meta.output.clone());
    // D1: events at 0, 2 and 4 start one run at 9 with the event from 4; the first event's
    // placeholder showed the window, then names the run.
    let first = scenario.send_at(0, "fc/d1", json!({"n": 0})).await;
    let placeholder = scenario.head("d1", &first).await;
    let queued = placeholder.queued.clone().unwrap();
    assert_eq!(
        (placeholder.status, queued.describe()),
        (RunStatus::Queued, "debounced until 1970-01-01T00:00:05Z (1 event)".into())
    );
    scenario.send_at(2, "fc/d1", json!({"n": 2})).await;
    scenario.send_at(4, "fc/d1", json!({"n": 4})).await;
    scenario.at(8).await;
    assert!(fired(scenario, "d1", &first).await.is_none(), "nothing before 9");
    assert_eq!(
        scenario.head("d1", &first).await.queued.unwrap().describe(),
        "debounced until 1970-01-01T00:00:09Z (3 events)"
    );
    scenario.at(9).await;
    let run = fired(scenario, "d1", &first).await.unwrap();
    assert_eq!(output(&run), (RunStatus::Completed, 9_000, Some(json!({"last": 4, "events": [4]}))));
    let placeholder = scenario.head("d1", &first).await;
    assert_eq!(
        (placeholder.status, placeholder.skipped.unwrap().describe()),
        (RunStatus::Skipped, format!("debounced: the window's run is `{}`", run.run_id))
    );
    // D7: the placeholder woken again (a duplicate timer) starts nothing more.
    scenario.runner().drive(&RunId::for_event(&format!("{}-d1", scenario.prefix), &first)).await.unwrap();
    let query = crate::store::RunQuery { function_id: Some(format!("{}-d1", scenario.prefix)), ..Default::default() };
    let runs = scenario.runner().store().list_runs(&query).await.unwrap();
    assert_eq!(runs.len(), 2, "one placeholder and one run: later events leave no head");
    // D2: events at 100, 103, 106, 109 and 112 with a 10 s timeout: a run at 110 with the event
    // from 109; the event at 112 opens a new window, run at 117.
    let d2 = scenario.send_at(100, "fc/d2", json!({"n": 0})).await;
    for (at, n) in [(103, 3), (106, 6), (109, 9)] {
        scenario.send_at(at, "fc/d2", json!({"n": n})).await;
    }
    let d2_second = scenario.send_at(112, "fc/d2", json!({"n": 12})).await;
    let run = fired(scenario, "d2", &d2).await.unwrap();
    assert_eq!(output(&run), (RunStatus::Completed, 110_000, Some(json!({"last": 9, "events": [9]}))));
    scenario.at(117).await;
    let run = fired(scenario, "d2", &d2_second).await.unwrap();
    assert_eq!(output(&run), (RunStatus::Completed, 117_000, Some(json!({"last": 12, "events": [12]}))));
}

/// D3, D4, D5.
async fn debounce_keys_and_order<S: RunStore>(scenario: &Scenario<S>) {
    let output = |meta: &RunMeta| (meta.status, meta.created_at, meta.output.clone());
    // D3: A@200, B@200.5, A@201: B's run at 205.5, A's at 206.
    let a = scenario.send_event_at_ms(200_000, EventPayload::new("fc/d3", json!({"user": "a", "n": 1}))).await;
    let b = scenario.send_event_at_ms(200_500, EventPayload::new("fc/d3", json!({"user": "b", "n": 2}))).await;
    scenario.send_event_at_ms(201_000, EventPayload::new("fc/d3", json!({"user": "a", "n": 3}))).await;
    scenario.at(210).await;
    let (run_a, run_b) = (fired(scenario, "d3", &a).await.unwrap(), fired(scenario, "d3", &b).await.unwrap());
    assert_eq!(output(&run_b), (RunStatus::Completed, 205_500, Some(json!({"last": 2, "events": [2]}))));
    assert_eq!(output(&run_a), (RunStatus::Completed, 206_000, Some(json!({"last": 3, "events": [3]}))));
    assert_eq!(
        scenario.head("d3", &a).await.skipped.unwrap().describe(),
        format!("debounced for key `a`: the window's run is `{}`", run_a.run_id)
    );
    // D4: e1 (ts 310) at 300, e2 (ts 305) at 302: the run at 305 has e1; e2 did not extend.
    let e1 = EventPayload { ts: Some(310_000), ..EventPayload::new("fc/d1", json!({"n": "e1"})) };
    let e1 = scenario.send_event_at_ms(300_000, e1).await;
    let e2 = EventPayload { ts: Some(305_000), ..EventPayload::new("fc/d1", json!({"n": "e2"})) };
    scenario.send_event_at_ms(302_000, e2).await;
    scenario.at(305).await;
    let run = fired(scenario, "d1", &e1).await.unwrap();
    assert_eq!(output(&run), (RunStatus::Completed, 305_000, Some(json!({"last": "e1", "events": ["e1"]}))));
    // D5: e@400 and e@406 are two windows: runs at 405 and 411.
    let w1 = scenario.send_at(400, "fc/d1", json!({"n": 1})).await;
    let w2 = scenario.send_at(406, "fc/d1", json!({"n": 2})).await;
    scenario.at(411).await;
    assert_eq!(fired(scenario, "d1", &w1).await.unwrap().created_at, 405_000);
    assert_eq!(fired(scenario, "d1", &w2).await.unwrap().created_at, 411_000);
}

/// D6, M1, M2.
async fn debounce_with_limits<S: RunStore>(scenario: &Scenario<S>) {
    let output = |meta: &RunMeta| (meta.status, meta.created_at, meta.output.clone());
    // D6: with a rate limit of 1 per hour, e@502 is dropped before debouncing (a skipped run),
    // so the run at 505 has e@500.
    let kept = scenario.send_at(500, "fc/d6", json!({"n": 0})).await;
    let dropped = scenario.send_at(502, "fc/d6", json!({"n": 2})).await;
    assert_eq!(scenario.status("d6", &dropped).await, (RunStatus::Skipped, Some(SkipReason::RateLimit)));
    scenario.at(510).await;
    let run = fired(scenario, "d6", &kept).await.unwrap();
    assert_eq!(output(&run), (RunStatus::Completed, 505_000, Some(json!({"last": 0, "events": [0]}))));
    // M1: idempotency acts per event before debouncing: A@602 is skipped; the run at 605 has A@600.
    let kept = scenario.send_at(600, "fc/m1", json!({"k": "A", "n": 0})).await;
    let skipped = scenario.send_at(602, "fc/m1", json!({"k": "A", "n": 2})).await;
    assert_eq!(scenario.status("m1", &skipped).await, (RunStatus::Skipped, Some(SkipReason::Idempotency)));
    scenario.at(610).await;
    assert_eq!(fired(scenario, "m1", &kept).await.unwrap().output, Some(json!({"last": 0, "events": [0]})));
    // M2: the singleton is checked when the window fires: A@700 fires at 705 (sleeps 20 s);
    // A@710 fires at 715 while it is active, and is skipped.
    let m2a = scenario.send_at(700, "fc/m2", json!({"secs": 20})).await;
    let m2b = scenario.send_at(710, "fc/m2", json!({"secs": 20})).await;
    scenario.at(715).await;
    assert_eq!(fired(scenario, "m2", &m2a).await.unwrap().status, RunStatus::Sleeping);
    let second = fired(scenario, "m2", &m2b).await.unwrap();
    assert_eq!(
        (second.status, second.created_at, second.skipped.map(|s| s.reason)),
        (RunStatus::Skipped, 715_000, Some(SkipReason::Singleton))
    );
}

/// A start timeout counted from the firing, `all_events`, a cancelled window.
async fn debounce_windows_and_cancel<S: RunStore>(scenario: &Scenario<S>) {
    // A start timeout counts from the firing, not from the first event.
    let late = scenario.send_at(800, "fc/late", json!({"n": 1})).await;
    scenario.at(810).await;
    assert_eq!(fired(scenario, "late", &late).await.unwrap().status, RunStatus::Completed);
    // Cairn's all_events: the run sees every event of its window, oldest first.
    let all = scenario.send_at(900, "fc/all", json!({"n": 1})).await;
    scenario.send_at(901, "fc/all", json!({"n": 2})).await;
    scenario.send_at(903, "fc/all", json!({"n": 3})).await;
    scenario.at(908).await;
    assert_eq!(fired(scenario, "all", &all).await.unwrap().output, Some(json!({"last": 3, "events": [1, 2, 3]})));
    // Cancelling a window's placeholder drops the window: the next event opens a new one.
    let dropped = scenario.send_at(1_000, "fc/d1", json!({"n": 1})).await;
    let placeholder = RunId::for_event(&format!("{}-d1", scenario.prefix), &dropped);
    scenario.runner().control().cancel(&placeholder).await.unwrap();
    let next = scenario.send_at(1_002, "fc/d1", json!({"n": 2})).await;
    scenario.at(1_010).await;
    assert!(fired(scenario, "d1", &dropped).await.is_none(), "a cancelled window starts nothing");
    assert_eq!(fired(scenario, "d1", &next).await.unwrap().created_at, 1_007_000);
}

/// Completes with its trigger's number (`data.n`) and the numbers of every event it was
/// started with.
async fn batch_numbers(event: Event, step: Step) -> Result<Value, crate::StepError> {
    let numbers: Vec<Value> = step.events::<Value>()?.into_iter().map(|event| event.data["n"].clone()).collect();
    Ok(json!({"trigger": event.data["n"], "events": numbers}))
}

/// B1 to B5, B7 and B8, and a full batch of 100 events run as one run in the delivery of its
/// last event: batches start one run per batch, at the exact time, with every event in order.
pub async fn batches_start_one_run_per_batch_with_every_event<S: RunStore>(store: S) {
    use crate::flow::BatchEvents;
    let scenario = Scenario::new(store, |prefix| {
        let batched = |id: &str, trigger: &str, batch: BatchEvents| {
            Function::new(format!("{prefix}-{id}")).on_event(trigger).batch_events(batch)
        };
        vec![
            batched("b1", "fc/b1", BatchEvents::new(3, "5s")).handler(batch_numbers).unwrap(),
            batched("b2", "fc/b2", BatchEvents::new(3, "5s").key("event.data.acct")).handler(batch_numbers).unwrap(),
            batched("b3", "fc/b3", BatchEvents::new(10, "5s").when("event.data.plan == \"free\""))
                .handler(batch_numbers)
                .unwrap(),
            batched("b7", "fc/b7", BatchEvents::new(3, "5s"))
                .concurrency(Concurrency::new(1).key("event.data.acct"))
                .handler(batch_numbers)
                .unwrap(),
            batched("big", "fc/big", BatchEvents::new(100, "60s")).handler(batch_numbers).unwrap(),
        ]
    });
    Box::pin(batch_sizes_and_timeouts(&scenario)).await;
    Box::pin(batch_keys_conditions_and_duplicates(&scenario)).await;
}

/// B1, B8, B5 and a full batch of 100.
async fn batch_sizes_and_timeouts<S: RunStore>(scenario: &Scenario<S>) {
    let output = |meta: &RunMeta| (meta.status, meta.created_at, meta.output.clone());
    // B1 and B8: seven events at 0 start [1,2,3] and [4,5,6] at 0, and [7] at 5; each run's
    // trigger is its first event.
    let mut ids = Vec::new();
    for n in 1..=7 {
        ids.push(scenario.send_at(0, "fc/b1", json!({"n": n})).await);
    }
    let first = fired(scenario, "b1", &ids[0]).await.unwrap();
    assert_eq!(output(&first), (RunStatus::Completed, 0, Some(json!({"trigger": 1, "events": [1, 2, 3]}))));
    assert_eq!(first.started_by.as_deref(), Some("batch of 3 events"));
    let second = fired(scenario, "b1", &ids[3]).await.unwrap();
    assert_eq!(output(&second), (RunStatus::Completed, 0, Some(json!({"trigger": 4, "events": [4, 5, 6]}))));
    let placeholder = scenario.head("b1", &ids[6]).await;
    assert_eq!(placeholder.queued.unwrap().describe(), "batch of 1 event until 1970-01-01T00:00:05Z");
    scenario.at(5).await;
    let last = fired(scenario, "b1", &ids[6]).await.unwrap();
    assert_eq!(output(&last), (RunStatus::Completed, 5_000, Some(json!({"trigger": 7, "events": [7]}))));
    let placeholder = scenario.head("b1", &ids[0]).await;
    assert_eq!(
        (placeholder.status, placeholder.skipped.unwrap().describe()),
        (RunStatus::Skipped, format!("batched: the batch's run is `{}`", first.run_id))
    );
    for joined in [&ids[1], &ids[2], &ids[4], &ids[5]] {
        let run = RunId::for_event(&format!("{}-b1", scenario.prefix), joined);
        assert!(scenario.runner().store().load(&run).await.unwrap().is_none(), "a joining event leaves no run");
    }
    // B5: the timeout counts from the first event: e1@100 and e2@104 run at 105.
    let e1 = scenario.send_at(100, "fc/b1", json!({"n": 1})).await;
    scenario.send_at(104, "fc/b1", json!({"n": 2})).await;
    scenario.at(105).await;
    let run = fired(scenario, "b1", &e1).await.unwrap();
    assert_eq!(output(&run), (RunStatus::Completed, 105_000, Some(json!({"trigger": 1, "events": [1, 2]}))));
    // A full batch of 100 runs in the delivery of its last event, with all 100 in order.
    let mut big = Vec::new();
    for n in 0..100 {
        big.push(scenario.send_at(200, "fc/big", json!({"n": n})).await);
    }
    let run = fired(scenario, "big", &big[0]).await.unwrap();
    let expected: Vec<i32> = (0..100).collect();
    assert_eq!(output(&run), (RunStatus::Completed, 200_000, Some(json!({"trigger": 0, "events": expected}))));
}

/// B2, B3, B4 and B7.
async fn batch_keys_conditions_and_duplicates<S: RunStore>(scenario: &Scenario<S>) {
    let output = |meta: &RunMeta| (meta.status, meta.created_at, meta.output.clone());
    // B2: one batch per account: a1@300, b1@300, a2@301, a3@302: [a1,a2,a3] at 302, [b1] at 305.
    let a1 = scenario.send_at(300, "fc/b2", json!({"acct": "a", "n": 1})).await;
    let b1 = scenario.send_at(300, "fc/b2", json!({"acct": "b", "n": 10})).await;
    scenario.send_at(301, "fc/b2", json!({"acct": "a", "n": 2})).await;
    scenario.send_at(302, "fc/b2", json!({"acct": "a", "n": 3})).await;
    let run = fired(scenario, "b2", &a1).await.unwrap();
    assert_eq!(output(&run), (RunStatus::Completed, 302_000, Some(json!({"trigger": 1, "events": [1, 2, 3]}))));
    assert_eq!(
        scenario.head("b2", &b1).await.queued.unwrap().describe(),
        "batch of 1 event for key `b` until 1970-01-01T00:05:05Z"
    );
    scenario.at(305).await;
    let run = fired(scenario, "b2", &b1).await.unwrap();
    assert_eq!(output(&run), (RunStatus::Completed, 305_000, Some(json!({"trigger": 10, "events": [10]}))));
    // B3: an event the `if` excludes runs alone at once; the others batch.
    let f1 = scenario.send_at(400, "fc/b3", json!({"plan": "free", "n": 1})).await;
    let p1 = scenario.send_at(400, "fc/b3", json!({"plan": "paid", "n": 2})).await;
    scenario.send_at(401, "fc/b3", json!({"plan": "free", "n": 3})).await;
    let alone = scenario.head("b3", &p1).await;
    assert_eq!(output(&alone), (RunStatus::Completed, 400_000, Some(json!({"trigger": 2, "events": [2]}))));
    scenario.at(405).await;
    let run = fired(scenario, "b3", &f1).await.unwrap();
    assert_eq!(output(&run), (RunStatus::Completed, 405_000, Some(json!({"trigger": 1, "events": [1, 3]}))));
    // B4: an event delivered twice is batched once.
    let once = EventPayload::new("fc/b1", json!({"n": 1})).with_id(unique("b4"));
    let e1 = scenario.send_event_at_ms(500_000, once.clone()).await;
    scenario.send_event_at_ms(500_000, once).await;
    scenario.send_at(501, "fc/b1", json!({"n": 2})).await;
    scenario.at(505).await;
    let run = fired(scenario, "b1", &e1).await.unwrap();
    assert_eq!(output(&run), (RunStatus::Completed, 505_000, Some(json!({"trigger": 1, "events": [1, 2]}))));
    // B7: the run's concurrency key comes from its first event.
    let a = scenario.send_at(600, "fc/b7", json!({"acct": "a", "n": 1})).await;
    scenario.send_at(600, "fc/b7", json!({"acct": "b", "n": 2})).await;
    scenario.at(605).await;
    let run = fired(scenario, "b7", &a).await.unwrap();
    let function = scenario.runner().registry().get(&format!("{}-b7", scenario.prefix)).unwrap().clone();
    let slots = function.flow().slots(function.id(), &run.event, run.created_at);
    assert_eq!((run.status, slots[0].1.as_deref()), (RunStatus::Completed, Some("a")));
}
