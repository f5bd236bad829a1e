//! cairn-aws against moto (DynamoDB, EventBridge, SQS, Scheduler), which `make test` installs
//! and starts (infra/local/with-services.sh). Without `CAIRN_TEST_AWS_ENDPOINT` these skip (fail under CI).
#![allow(clippy::unwrap_used)] // Tests: an unwrap that fails is a failed test.

use aws_sdk_eventbridge::types::Target as RuleTarget;
use cairn::prelude::*;
use cairn::store::Commit;
use cairn::{Bus, Registry, Runner, RunnerConfig};
use cairn::{RunId, RunMeta, RunStatus, RunStore, StepId, StepKind, StepRecord, StepState, StoreError, Timer};
use cairn_aws::{
    AnyBus, AnyStore, AnyTimer, DriverConfig, DynamoDbStore, EventBridgeBus, Invocation, LambdaDriver, QueueTimer,
    SchedulerTimer,
};
use serde_json::Value;
use std::sync::atomic::{AtomicU32, Ordering};

static UNIQUE: AtomicU32 = AtomicU32::new(0);

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), UNIQUE.fetch_add(1, Ordering::Relaxed))
}

async fn aws() -> aws_config::SdkConfig {
    aws_config::load_from_env().await
}

async fn fresh_store() -> DynamoDbStore {
    let store = DynamoDbStore::new(aws_sdk_dynamodb::Client::new(&aws().await), unique("cairn-test"), "test").unwrap();
    store.create_table().await.unwrap();
    store
}

cairn::store_conformance!(dynamodb, fresh_store, requires = cairn_tests::tools::moto);

/// Runs `body` on a runtime with sockets, or skips when moto is missing (fails under CI).
fn with_aws<F: std::future::Future<Output = ()>>(body: impl FnOnce() -> F) {
    if cairn_tests::tools::moto().is_none() {
        return;
    }
    cairn::testing::block_on(body());
}

fn completed(name: &str, output: Value) -> StepRecord {
    StepRecord {
        id: StepId::hash(name),
        name: name.into(),
        kind: StepKind::Run,
        position: 0,
        state: StepState::Completed { output },
        attempts: 1,
        started_at: 1_795_392_000_000,
        ended_at: Some(1_795_392_000_000),
        detail: None,
    }
}

#[test]
fn outputs_over_one_item_are_chunked_and_reassembled_exactly() {
    with_aws(|| async {
        let store = fresh_store().await;
        let run = RunId::new(unique("run"));
        store.create_run(RunMeta::new(run.clone(), "f", EventPayload::new("a/b", json!({})), 1)).await.unwrap();
        // 1.2 MB with multi-byte characters, so chunk edges fall inside them if done wrong.
        let big = completed("big", json!({"text": "é€😀x".repeat(120_000)}));
        assert_eq!(store.commit_step(&run, &big).await.unwrap(), Commit::Committed);
        assert_eq!(store.load(&run).await.unwrap().unwrap().steps, vec![big.clone()]);
        // A racing loser with another output adopts the winner's, chunks and all.
        let loser = completed("big", json!({"text": "other".repeat(100_000)}));
        assert_eq!(store.commit_step(&run, &loser).await.unwrap(), Commit::Existing(Box::new(big.clone())));
        assert_eq!(store.load(&run).await.unwrap().unwrap().steps, vec![big]);
    });
}

#[test]
fn an_output_over_4_mb_fails_the_step_naming_it_and_its_size() {
    with_aws(|| async {
        let store = fresh_store().await;
        let run = RunId::new(unique("run"));
        store.create_run(RunMeta::new(run.clone(), "f", EventPayload::new("a/b", json!({})), 1)).await.unwrap();
        let huge = completed("export", json!("x".repeat(5 * 1024 * 1024)));
        let err = store.commit_step(&run, &huge).await.unwrap_err();
        assert_eq!(
            err,
            StoreError::TooLarge { step: "export".into(), bytes: 5 * 1024 * 1024 + 2, limit: 4 * 1024 * 1024 }
        );
        assert_eq!(err.to_string(), "step `export`: its output is 5242882 bytes, over the 4194304-byte limit");
        assert!(store.load(&run).await.unwrap().unwrap().steps.is_empty(), "nothing half-written");

        // Through the runner, the step fails for good with that message.
        let f = Function::new("exporter")
            .on_event("app/export")
            .handler(|_: Event, step: Step| async move {
                step.run("export", || async { Ok("x".repeat(5 * 1024 * 1024)) }).await
            })
            .unwrap();
        let runner =
            Runner::new(Registry::new([f]).unwrap(), store.clone(), cairn::MemoryBus::new(), cairn::MemoryTimer::new());
        let id = runner.send(EventPayload::new("app/export", json!({}))).await.unwrap();
        runner.run_until_idle().await.unwrap();
        let meta = store.load(&RunId::for_event("exporter", &id)).await.unwrap().unwrap().meta;
        assert_eq!(meta.status, RunStatus::Failed);
        assert_eq!(
            meta.error.unwrap().message,
            "step `export`: its output is 5242882 bytes, over the 4194304-byte limit"
        );
    });
}

/// A bus, an SQS queue and a rule routing `detail-type` prefix `test/` to it.
async fn routed_bus() -> (EventBridgeBus, aws_sdk_sqs::Client, String) {
    let config = aws().await;
    let events = aws_sdk_eventbridge::Client::new(&config);
    let sqs = aws_sdk_sqs::Client::new(&config);
    let bus_name = unique("bus");
    events.create_event_bus().name(&bus_name).send().await.unwrap();
    let queue_url = sqs.create_queue().queue_name(unique("queue")).send().await.unwrap().queue_url.unwrap();
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone();
    events
        .put_rule()
        .name("to-queue")
        .event_bus_name(&bus_name)
        .event_pattern(r#"{"detail-type": [{"prefix": "test/"}]}"#)
        .send()
        .await
        .unwrap();
    events
        .put_targets()
        .rule("to-queue")
        .event_bus_name(&bus_name)
        .targets(RuleTarget::builder().id("q").arn(arn).build().unwrap())
        .send()
        .await
        .unwrap();
    (EventBridgeBus::new(events, bus_name), sqs, queue_url)
}

async fn drain(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Vec<Value> {
    let mut bodies = Vec::new();
    loop {
        let received = sqs.receive_message().queue_url(queue_url).max_number_of_messages(10).send().await.unwrap();
        let messages = received.messages.unwrap_or_default();
        if messages.is_empty() {
            return bodies;
        }
        for message in messages {
            bodies.push(serde_json::from_str(message.body.as_deref().unwrap()).unwrap());
            sqs.delete_message()
                .queue_url(queue_url)
                .receipt_handle(message.receipt_handle.unwrap())
                .send()
                .await
                .unwrap();
        }
    }
}

#[test]
fn the_bus_sends_in_batches_of_ten_and_rules_route_by_event_name() {
    with_aws(|| async {
        let (bus, sqs, queue_url) = routed_bus().await;
        let events: Vec<EventPayload> = (0..23)
            .map(|n| {
                EventPayload::new(if n % 2 == 0 { "test/even" } else { "other/odd" }, json!({"n": n}))
                    .with_id(format!("e{n}"))
                    .with_ts(7)
            })
            .collect();
        let ids = bus.send(&events).await.unwrap();
        assert_eq!(ids, (0..23).map(|n| format!("e{n}")).collect::<Vec<_>>());
        let mut routed: Vec<(String, Value)> = drain(&sqs, &queue_url)
            .await
            .into_iter()
            .map(|envelope| (envelope["detail-type"].as_str().unwrap().to_string(), envelope["detail"].clone()))
            .collect();
        routed.sort_by_key(|(_, detail)| detail["data"]["n"].as_i64());
        let expected: Vec<(String, Value)> = (0..23)
            .filter(|n| n % 2 == 0)
            .map(|n| {
                (
                    "test/even".to_string(),
                    json!({"name": "test/even", "data": {"n": n}, "id": format!("e{n}"), "ts": 7}),
                )
            })
            .collect();
        assert_eq!(routed, expected);
    });
}

#[test]
fn an_oversized_event_is_refused_before_anything_is_sent() {
    with_aws(|| async {
        let (bus, sqs, queue_url) = routed_bus().await;
        let events = vec![
            EventPayload::new("test/small", json!({})).with_id("ok"),
            EventPayload::new("test/huge", json!({"blob": "x".repeat(300 * 1024)})).with_id("big"),
        ];
        let err = bus.send(&events).await.unwrap_err();
        assert!(err.message().starts_with("event `test/huge` is 307"), "{}", err.message());
        assert!(err.message().ends_with("bytes, over EventBridge's 262144-byte entry limit"), "{}", err.message());
        assert!(drain(&sqs, &queue_url).await.is_empty(), "the batch is all or nothing");
    });
}

/// A function's `QueueTimer` on moto, with its timer queue and Scheduler group.
async fn queue_timer() -> (QueueTimer, aws_sdk_sqs::Client, String, aws_sdk_scheduler::Client, String) {
    let config = aws().await;
    let scheduler = aws_sdk_scheduler::Client::new(&config);
    let group = unique("group");
    scheduler.create_schedule_group().name(&group).send().await.unwrap();
    let sqs = aws_sdk_sqs::Client::new(&config);
    let queue_url = sqs.create_queue().queue_name(unique("timer")).send().await.unwrap().queue_url.unwrap();
    let long = SchedulerTimer::new(
        scheduler.clone(),
        &group,
        "arn:aws:lambda:us-east-1:123456789012:function:hello",
        "arn:aws:iam::123456789012:role/cairn-scheduler",
        "hello",
    )
    .scope("hello");
    (QueueTimer::new(sqs.clone(), &queue_url, long), sqs, queue_url, scheduler, group)
}

#[test]
fn the_queue_timer_sends_a_delayed_message_and_hands_long_waits_to_one_schedule_per_run() {
    with_aws(|| async {
        let (timer, sqs, queue_url, scheduler, group) = queue_timer().await;
        let run = RunId::new("run_abc");
        let now = cairn::Clock::now(&cairn::SystemClock);
        // Up to 15 minutes ahead: a message on the function's queue, delayed to the second.
        timer.wake_at(&run, "hello", "sleep", now + 1_500).await.unwrap();
        let received = sqs
            .receive_message()
            .queue_url(&queue_url)
            .wait_time_seconds(5)
            .send()
            .await
            .unwrap()
            .messages
            .unwrap_or_default();
        assert_eq!(received.len(), 1);
        let body: Value = serde_json::from_str(received[0].body.as_deref().unwrap()).unwrap();
        assert_eq!(body, json!({"cairn": "resume", "function_id": "hello", "run_id": "run_abc", "at": now + 1_500}));
        assert!(cairn::Clock::now(&cairn::SystemClock) >= now + 1_500, "delivered before its DelaySeconds");
        assert!(scheduler.list_schedules().group_name(&group).send().await.unwrap().schedules.is_empty());

        // Further ahead: the run's one schedule, 10 minutes early; a later one replaces it.
        let name = timer.long().run_schedule_name(&run);
        for at in [now + 3_600_000, now + 7_200_000] {
            timer.wake_at(&run, "hello", "timeout", at).await.unwrap();
            let listed = scheduler.list_schedules().group_name(&group).send().await.unwrap().schedules;
            assert_eq!(listed.len(), 1, "one schedule per run");
            let schedule = scheduler.get_schedule().group_name(&group).name(&name).send().await.unwrap();
            let expected = SchedulerTimer::at_expression(at - cairn_aws::HANDOVER_MS);
            assert_eq!(schedule.schedule_expression.as_deref(), Some(expected.as_str()));
            assert_eq!(schedule.schedule_expression_timezone.as_deref(), Some("UTC"));
            assert_eq!(schedule.action_after_completion.map(|a| a.as_str().to_string()), Some("DELETE".into()));
            let target = schedule.target.unwrap();
            assert_eq!(target.arn, "arn:aws:lambda:us-east-1:123456789012:function:hello");
            let input: Value = serde_json::from_str(target.input.as_deref().unwrap()).unwrap();
            assert_eq!(input, json!({"cairn": "resume", "function_id": "hello", "run_id": "run_abc"}));
        }
        // The run ended: its schedule goes, and forgetting again is harmless.
        timer.forget(&run).await.unwrap();
        timer.forget(&run).await.unwrap();
        assert!(scheduler.list_schedules().group_name(&group).send().await.unwrap().schedules.is_empty());
    });
}

fn fixture(name: &str) -> Value {
    let path = format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn daily() -> Function {
    Function::new("daily").cron("0 3 * * *").handler(|_: Event, _: Step| async move { Ok(()) }).unwrap()
}

#[test]
fn the_driver_reads_every_payload_shape() {
    let registry = Registry::new([hello::function(), daily()]).unwrap();
    let now = 1_795_402_800_000;
    let Invocation::Event(event) = cairn_aws::classify(&fixture("eventbridge-my-event.json"), &registry, now).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        event,
        EventPayload::new("app/my.event", json!({"userId": "u1"}))
            .with_id("6a7e8feb-b491-4cf7-a9f1-bf3703467718")
            .with_ts(1_795_424_400_000)
    );
    let Invocation::Event(cron) =
        cairn_aws::classify(&fixture("eventbridge-scheduled-event.json"), &registry, now).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        cron,
        // Named by the rule's scheduled time (`time`), not the delivery: a retry is the same run.
        EventPayload::new(cairn::SCHEDULED_EVENT, json!({"cron": "0 3 * * *"}))
            .with_id("cron:0 3 * * *:2026-11-23T03:00:00Z")
            .with_ts(now)
    );
    let Invocation::Event(sent) =
        cairn_aws::classify(&fixture("eventbridge-cairn-event.json"), &registry, now).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        sent,
        EventPayload::new("readwise/fetch-books", json!({"userId": "u2"}))
            .with_id("evt-from-step")
            .with_ts(1_795_402_801_000)
    );
    assert_eq!(
        cairn_aws::classify(&fixture("scheduler-resume.json"), &registry, now).unwrap(),
        Invocation::Resume(RunId::new("run_0123456789abcdef0123456789"))
    );
    let Invocation::Event(plain) =
        cairn_aws::classify(&json!({"name": "app/my.event", "data": {"a": 1}}), &registry, now).unwrap()
    else {
        panic!()
    };
    assert_eq!((plain.name.as_str(), plain.ts, plain.id.is_some()), ("app/my.event", Some(now), true));
    // A Scheduler firing names its run by the scheduled time, however often it is delivered.
    let firing = json!({"cairn": "cron", "cron": "0 3 * * *", "id": "2026-11-23T03:00:00Z"});
    let Invocation::Event(v2) = cairn_aws::classify(&firing, &registry, now).unwrap() else { panic!() };
    assert_eq!(v2.id.as_deref(), Some("cron:0 3 * * *:2026-11-23T03:00:00Z"));
    let Invocation::Event(old) =
        cairn_aws::classify(&json!({"cairn": "cron", "cron": "0 3 * * *"}), &registry, now).unwrap()
    else {
        panic!()
    };
    assert_eq!(old.id.as_deref(), Some("cron:0 3 * * *:minute-29923380"), "an old template's firing: the minute");
    // Timer messages from the function's SQS queue, and the reconciler's tick.
    let batch = json!({"Records": [
        {"messageId": "m1", "eventSource": "aws:sqs", "body": "{\"cairn\":\"resume\",\"run_id\":\"run_a\"}"},
        {"messageId": "m2", "eventSource": "aws:sqs", "body": "{\"cairn\":\"resume\",\"run_id\":\"run_b\"}"}
    ]});
    assert_eq!(
        cairn_aws::classify(&batch, &registry, now).unwrap(),
        Invocation::Queue(vec![("m1".into(), RunId::new("run_a")), ("m2".into(), RunId::new("run_b"))])
    );
    assert_eq!(
        cairn_aws::classify(&json!({"Records": [{"messageId": "m3", "body": "nope"}]}), &registry, now)
            .unwrap_err()
            .to_string(),
        "unrecognized payload: SQS message m3: the body is not a JSON object"
    );
    assert_eq!(cairn_aws::classify(&json!({"cairn": "reconcile"}), &registry, now).unwrap(), Invocation::Reconcile);
    let err = cairn_aws::classify(&json!({"hello": "world"}), &registry, now).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unrecognized payload: expected an EventBridge event, {\"cairn\": \"resume\", \"run_id\": ...}, or an event {\"name\": ..., \"data\": {...}}"
    );
    assert_eq!(
        cairn_aws::classify(&json!({"cairn": "resume"}), &registry, now).unwrap_err().to_string(),
        "unrecognized payload: a cairn resume needs `run_id`"
    );
}

#[test]
fn the_driver_runs_hello_on_dynamodb_and_schedules_its_wake_up() {
    with_aws(|| async {
        let store = fresh_store().await;
        let (timer, _sqs, _queue, scheduler, group) = queue_timer().await;
        let (bus, _sqs, _queue) = routed_bus().await;
        let runner = Runner::new(
            Registry::new([hello::function()]).unwrap(),
            AnyStore::DynamoDb(store.clone()),
            AnyBus::EventBridge(bus),
            AnyTimer::Queue(timer),
        )
        .with_config(RunnerConfig::default());
        let driver = LambdaDriver::new(runner, DriverConfig::default());
        let payload = fixture("eventbridge-my-event.json");
        // cargo lambda watch's bogus deadline (600000 ms since the epoch) falls back to the budget.
        let report = driver.handle(payload.clone(), 600_000).await.unwrap();
        let run = RunId::for_event("hello", "6a7e8feb-b491-4cf7-a9f1-bf3703467718");
        assert_eq!(report["runs"][0]["run_id"], json!(run.as_str()));
        assert_eq!(report["runs"][0]["status"], json!("sleeping"));
        let journal = store.load(&run).await.unwrap().unwrap();
        assert_eq!(journal.steps[0].state, StepState::Completed { output: json!({"success": true}) });
        assert!(matches!(journal.steps[1].state, StepState::Scheduled { .. }));
        assert_eq!(scheduler.list_schedules().group_name(&group).send().await.unwrap().schedules.len(), 1);
        // The same event delivered again starts nothing new and runs nothing again.
        let again = driver.handle(payload, 600_000).await.unwrap();
        assert_eq!(again["runs"][0]["status"], json!("sleeping"));
        assert_eq!(store.load(&run).await.unwrap().unwrap().steps, journal.steps);
    });
}

fn approval_waiter() -> Function {
    Function::new("approval")
        .on_event("test/request")
        .awaits("test/approved")
        .handler(|_: Event, step: Step| async move {
            let wait = WaitFor::event("test/approved").timeout("1d").matching("data.id");
            Ok(step.wait_for_event("wait-approval", wait).await?.map(|event| event.data))
        })
        .unwrap()
}

/// The approval waiter behind a Lambda driver on `store` (no bus or scheduler needed).
fn approval_driver(store: &DynamoDbStore) -> LambdaDriver {
    let registry = Registry::new([approval_waiter()]).unwrap();
    LambdaDriver::new(
        Runner::new(registry, AnyStore::DynamoDb(store.clone()), AnyBus::Log, AnyTimer::Log),
        DriverConfig::default(),
    )
}

/// An EventBridge envelope, as a rule delivers it.
fn envelope(id: &str, detail_type: &str, detail: Value) -> Value {
    json!({"version": "0", "id": id, "detail-type": detail_type, "source": "app", "detail": detail})
}

#[test]
fn a_matching_event_delivered_to_the_function_resumes_its_waiting_run_on_dynamodb() {
    with_aws(|| async {
        let store = fresh_store().await;
        let driver = approval_driver(&store);
        let started = driver.handle(envelope("req-1", "test/request", json!({"id": 7})), 0).await.unwrap();
        assert_eq!(started["runs"][0]["status"], json!("waiting"));
        let other = driver.handle(envelope("ok-8", "test/approved", json!({"id": 8})), 0).await.unwrap();
        assert_eq!(other["runs"], json!([]), "another request's approval resumes nothing");
        let resumed = driver.handle(envelope("ok-7", "test/approved", json!({"id": 7, "by": "ann"})), 0).await.unwrap();
        assert_eq!(resumed["runs"][0]["status"], json!("completed"));
        assert_eq!(resumed["runs"][0]["output"], json!({"id": 7, "by": "ann"}));
        assert!(
            store.waits_for(&cairn::EventPayload::new("test/approved", json!({"id": 7}))).await.unwrap().is_empty()
        );
    });
}

#[test]
fn an_approval_that_races_ahead_of_the_wait_still_resumes_it_on_dynamodb() {
    with_aws(|| async {
        let store = fresh_store().await;
        let driver = approval_driver(&store);
        // The approval is delivered first; the request a moment later.
        let early = driver.handle(envelope("ok-7", "test/approved", json!({"id": 7})), 0).await.unwrap();
        assert_eq!(early["runs"], json!([]));
        let started = driver.handle(envelope("req-1", "test/request", json!({"id": 7})), 0).await.unwrap();
        assert_eq!(started["runs"][0]["status"], json!("completed"));
        assert_eq!(started["runs"][0]["output"], json!({"id": 7}));
    });
}

/// The review's L1: an event id too long for a DynamoDB sort key failed every attempt (a poison
/// event that ends in the dead-letter queue after retries). It is refused once, with the reason,
/// and the invocation succeeds; nothing is written.
#[test]
fn an_event_with_an_unstorable_id_is_refused_once_not_retried() {
    with_aws(|| async {
        let store = fresh_store().await;
        let driver = approval_driver(&store);
        let mut event = envelope("eb-1", "test/request", json!({}));
        event["detail"] = json!({"name": "test/request", "data": {"id": 7}, "id": "x".repeat(2000)});
        let report = driver.handle(event, 0).await.unwrap();
        assert_eq!(report, json!({"refused": "event `test/request`: id is 2000 bytes, it must be 1 to 256"}));
        assert!(store.list_runs(&cairn::store::RunQuery::default()).await.unwrap().is_empty());
    });
}

/// A function binary with a durable store but no way to wake its runs refuses to start, naming
/// exactly what is missing (it would otherwise leave every sleeping run asleep for ever).
#[test]
fn a_function_without_a_timer_refuses_to_start_naming_what_is_missing() {
    let start = |extra: &[(&str, &str)]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_stream-probe"))
            .env_clear()
            .envs([("CAIRN_TABLE", "runs"), ("AWS_REGION", "us-east-1"), ("AWS_LAMBDA_FUNCTION_NAME", "slow")])
            .envs(extra.iter().copied())
            .output()
            .unwrap();
        assert!(!output.status.success());
        String::from_utf8_lossy(&output.stderr).to_string()
    };
    // With the table but no scope: the keys it would write are not the ones its policy allows.
    let stderr = start(&[]);
    assert!(
        stderr.contains(
            "CAIRN_TABLE=runs is set but CAIRN_SCOPE is not: every key this function writes starts with its scope \
             (template.yaml sets CAIRN_SCOPE to the binary's name, and its IAM policy allows only those keys)"
        ),
        "{stderr}"
    );
    let stderr = start(&[("CAIRN_SCOPE", "has#hash")]);
    assert!(stderr.contains("CAIRN_SCOPE: scope `has#hash` is not usable: it must be 1 to 43 letters"), "{stderr}");
    let stderr = start(&[("CAIRN_SCOPE", "slow")]);
    assert!(
        stderr.contains(
            "no way to wake runs: CAIRN_TIMER_QUEUE_URL, CAIRN_BUS, CAIRN_SCHEDULE_GROUP, CAIRN_SCHEDULER_ROLE_ARN not set."
        ),
        "{stderr}"
    );
    let stderr = start(&[
        ("CAIRN_SCOPE", "slow"),
        ("CAIRN_BUS", "cairn"),
        ("CAIRN_SCHEDULE_GROUP", "cairn"),
        ("CAIRN_SCHEDULER_ROLE_ARN", "r"),
    ]);
    assert!(stderr.contains("no way to wake runs: CAIRN_TIMER_QUEUE_URL not set."), "{stderr}");
    assert!(stderr.contains("Set CAIRN_TIMER=log to run without timers anyway."), "{stderr}");
}

/// A run whose result does not fit its head item fails cleanly, naming the size (it is never
/// stuck), and a step whose error is too large to store fails with its size instead.
#[test]
fn oversized_results_fail_cleanly_naming_the_size_on_dynamodb() {
    with_aws(|| async {
        let store = fresh_store().await;
        let big = Function::new("big")
            .on_event("test/big")
            .handler(|event: Event, step: Step| async move {
                if event.data["error"] == true {
                    let huge = "e".repeat(400 * 1024);
                    step.run("explode", || async move { Err::<Value, _>(StepError::non_retriable(huge)) }).await
                } else {
                    step.run("make", || async { Ok(json!("x".repeat(500 * 1024))) }).await
                }
            })
            .unwrap();
        let runner = Runner::new(
            Registry::new([big]).unwrap(),
            store.clone(),
            cairn::MemoryBus::new(),
            cairn::MemoryTimer::new(),
        );
        for (id, error) in [("out", false), ("err", true)] {
            let event = EventPayload::new("test/big", json!({"error": error})).with_id(id);
            let run = runner.accept(&event).await.unwrap().remove(0);
            let drive = runner.drive(&run).await.unwrap();
            assert!(matches!(drive, cairn::Drive::Failed(_)), "{id}: {drive:?}");
            let journal = store.load(&run).await.unwrap().unwrap();
            assert_eq!((journal.meta.status, journal.meta.output.clone()), (RunStatus::Failed, None), "{id}");
            let message = journal.meta.error.unwrap().message;
            if error {
                assert!(message.starts_with("step `explode`: its output is "), "{message}");
                assert!(message.ends_with(", over the 358400-byte limit"), "{message}");
            } else {
                // The step's 500 KB output is stored (in chunks); only the run head cannot hold it.
                assert!(
                    matches!(&journal.steps[0].state, StepState::Completed { output } if output.as_str().map(str::len) == Some(500 * 1024))
                );
                assert!(message.starts_with(&format!("run {run}: its head record is ")), "{message}");
                assert!(message.ends_with("bytes (output or error included), over the 389120-byte limit"), "{message}");
            }
            assert!(
                journal.meta.wake_at.is_none() && journal.meta.outbox.is_empty(),
                "{id}: delivered, out of the index"
            );
        }
    });
}

/// The values of condition `operator` / `key` in `binary`'s policy in template.yaml (e.g.
/// `ForAllValues:StringLike` / `dynamodb:LeadingKeys`).
fn policy_condition(binary: &str, operator: &str, key: &str) -> Vec<String> {
    let text = std::fs::read_to_string(format!("{}/../template.yaml", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let template: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let resources = template["Resources"].as_mapping().unwrap();
    let (_, function) =
        resources.iter().find(|(_, r)| r["Metadata"]["BuildProperties"]["Binary"].as_str() == Some(binary)).unwrap();
    let mut patterns = Vec::new();
    for policy in function["Properties"]["Policies"].as_sequence().unwrap() {
        for statement in policy["Statement"].as_sequence().into_iter().flatten() {
            let keys = &statement["Condition"][operator][key];
            patterns.extend(keys.as_sequence().into_iter().flatten().filter_map(|k| k.as_str().map(str::to_string)));
        }
    }
    assert!(!patterns.is_empty(), "{binary}: no {operator} {key} condition in template.yaml");
    patterns
}

/// IAM's `StringLike`: `*` matches any run of characters, `?` one.
fn like(pattern: &str, text: &str) -> bool {
    match pattern.chars().next() {
        None => text.is_empty(),
        Some('*') => (0..=text.len()).filter(|i| text.is_char_boundary(*i)).any(|i| like(&pattern[1..], &text[i..])),
        Some(c) => {
            text.chars().next().is_some_and(|t| c == '?' || c == t)
                && like(&pattern[c.len_utf8()..], &text[text.chars().next().map_or(0, char::len_utf8)..])
        }
    }
}

/// What order-approval really writes (runs of both its functions and of its failure handler,
/// waits, the event log, the invoke of order-charge and its result) all falls under the
/// `dynamodb:LeadingKeys` its policy in template.yaml allows, GSI key included; and every event
/// it sends is one its PutEvents condition allows. moto enforces no IAM, so this is where the
/// policy meets the code.
#[test]
fn order_approval_writes_only_keys_and_sends_only_events_its_template_policy_allows() {
    with_aws(|| async {
        let client = aws_sdk_dynamodb::Client::new(&aws().await);
        let table = unique("cairn-iam");
        // As the Lambda builds it: CAIRN_SCOPE from the template (the binary's name).
        let store = DynamoDbStore::new(client.clone(), &table, "order-approval").unwrap();
        store.create_table().await.unwrap();
        let bus = cairn::MemoryBus::new();
        let runner = Runner::new(
            Registry::new(order_approval::functions()).unwrap(),
            store.clone(),
            bus.clone(),
            cairn::MemoryTimer::new(),
        );
        let patterns = policy_condition("order-approval", "ForAllValues:StringLike", "dynamodb:LeadingKeys");
        // Every item's partition key (and `due` and `runs` index keys), at every stage (waits and index
        // entries are gone once the runs end).
        let mut kinds = std::collections::BTreeSet::new();
        let mut check_keys = async || {
            let items = client.scan().table_name(&table).send().await.unwrap().items.unwrap_or_default();
            for item in &items {
                let mut keys = vec![item["PK"].as_s().unwrap().clone()];
                keys.extend(item.get("due_fn").map(|due| due.as_s().unwrap().clone()));
                keys.extend(item.get("fn_key").map(|runs| runs.as_s().unwrap().clone()));
                for key in keys {
                    assert!(patterns.iter().any(|p| like(p, &key)), "key `{key}` matches none of {patterns:?}");
                    kinds.insert(key.split('#').nth(1).unwrap_or_default().to_string());
                }
            }
        };
        let mut ours = Vec::new();
        for (order, amount) in [("o-1", 25), ("o-2", 0)] {
            let placed = EventPayload::new(order_approval::PLACED, json!({"order_id": order, "amount": amount}));
            ours.push(runner.send(placed).await.unwrap());
            runner.run_until_idle().await.unwrap();
            check_keys().await;
            let approved = EventPayload::new(order_approval::APPROVED, json!({"order_id": order, "by": "ann"}));
            ours.push(runner.send(approved).await.unwrap());
            runner.run_until_idle().await.unwrap();
            check_keys().await;
        }
        let statuses: Vec<(String, RunStatus)> = store
            .list_runs(&cairn::store::RunQuery { limit: 100, ..Default::default() })
            .await
            .unwrap()
            .into_iter()
            .map(|run| (run.function_id, run.status))
            .collect();
        for expected in [
            ("order-approval".to_string(), RunStatus::Completed),
            ("order-approval".to_string(), RunStatus::Failed),
            ("order-charge".to_string(), RunStatus::Completed),
            ("order-charge".to_string(), RunStatus::Failed),
            ("order-approval-failure".to_string(), RunStatus::Completed),
        ] {
            assert!(statuses.contains(&expected), "{expected:?} in {statuses:?}");
        }

        assert_eq!(
            kinds,
            ["EVENTS", "FN", "FUNCTIONS", "RUN", "WAIT", "WAITKEY"].map(String::from).into(),
            "every kind of key was checked"
        );

        let allowed = policy_condition("order-approval", "StringEquals", "events:detail-type");
        let sent: std::collections::BTreeSet<String> = bus
            .sent()
            .into_iter()
            .filter(|event| !ours.contains(event.id.as_ref().unwrap()))
            .map(|event| event.name)
            .collect();
        assert_eq!(
            sent,
            [cairn::FAILED_EVENT, cairn::FINISHED_EVENT, cairn::INVOKED_EVENT].map(String::from).into(),
            "the runtime's events, all sent"
        );
        for name in sent {
            assert!(allowed.contains(&name), "`{name}` is not in order-approval's PutEvents condition: {allowed:?}");
        }
    });
}

/// An index as compared: its name, key schema, projection type and projected attributes.
type IndexShape = (String, Vec<(String, String)>, String, Vec<String>);

/// The table `DynamoDbStore::create_table` makes on moto (the stand-in every other test here
/// uses) is the one template.yaml declares: the same keys, attribute types and indexes (the
/// reconciler's `due` and the console's `runs`, with their projections), so what these tests
/// show of the stores and the console holds for a deployed stack.
#[test]
fn the_test_table_is_the_one_template_yaml_declares() {
    with_aws(|| async {
        let store = fresh_store().await;
        let client = aws_sdk_dynamodb::Client::new(&aws().await);
        let table = client.describe_table().table_name(store.table()).send().await.unwrap().table.unwrap();
        let text = std::fs::read_to_string(format!("{}/template.yaml", cairn_tests::workspace())).unwrap();
        let template: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let declared = &template["Resources"]["RunsTable"]["Properties"];
        let yaml_str = |value: &serde_yaml::Value| value.as_str().unwrap().to_string();

        let mut attributes: Vec<(String, String)> = table
            .attribute_definitions()
            .iter()
            .map(|a| (a.attribute_name().to_string(), a.attribute_type().as_str().to_string()))
            .collect();
        attributes.sort();
        let mut declared_attributes: Vec<(String, String)> = declared["AttributeDefinitions"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|a| (yaml_str(&a["AttributeName"]), yaml_str(&a["AttributeType"])))
            .collect();
        declared_attributes.sort();
        assert_eq!(attributes, declared_attributes);

        let keys = |schema: &[aws_sdk_dynamodb::types::KeySchemaElement]| -> Vec<(String, String)> {
            schema.iter().map(|k| (k.attribute_name().to_string(), k.key_type().as_str().to_string())).collect()
        };
        let declared_keys = |schema: &serde_yaml::Value| -> Vec<(String, String)> {
            schema
                .as_sequence()
                .unwrap()
                .iter()
                .map(|k| (yaml_str(&k["AttributeName"]), yaml_str(&k["KeyType"])))
                .collect()
        };
        assert_eq!(keys(table.key_schema()), declared_keys(&declared["KeySchema"]));

        let mut indexes: Vec<IndexShape> = table
            .global_secondary_indexes()
            .iter()
            .map(|index| {
                let projection = index.projection().unwrap();
                (
                    index.index_name().unwrap().to_string(),
                    keys(index.key_schema()),
                    projection.projection_type().unwrap().as_str().to_string(),
                    projection.non_key_attributes().to_vec(),
                )
            })
            .collect();
        indexes.sort();
        let mut declared_indexes: Vec<IndexShape> = declared["GlobalSecondaryIndexes"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|index| {
                let projection = &index["Projection"];
                let non_key = projection["NonKeyAttributes"]
                    .as_sequence()
                    .map(|names| names.iter().map(yaml_str).collect())
                    .unwrap_or_default();
                (
                    yaml_str(&index["IndexName"]),
                    declared_keys(&index["KeySchema"]),
                    yaml_str(&projection["ProjectionType"]),
                    non_key,
                )
            })
            .collect();
        declared_indexes.sort();
        assert_eq!(indexes, declared_indexes);
        assert_eq!(indexes.iter().map(|index| index.0.as_str()).collect::<Vec<_>>(), ["due", "runs"]);
    });
}
