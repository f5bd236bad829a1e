//! Function binaries under `cargo lambda watch`, invoked with `cargo lambda invoke` and
//! EventBridge-shaped payloads, with their state in moto's DynamoDB, their wake-ups in moto's
//! Scheduler and their sent events routed by moto's EventBridge to an SQS queue.
//! `make test` provides moto and cargo-lambda; without them these skip.
#![allow(clippy::unwrap_used)] // Tests: an unwrap that fails is a failed test.

use aws_sdk_eventbridge::types::Target as RuleTarget;
use cairn::testing::StubServer;
use cairn::{RunId, RunStore, StepState};
use cairn_aws::DynamoDbStore;
use cairn_tests::Watch;
use serde_json::{Value, json};

fn fixture(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_run_under_cargo_lambda_watch_against_moto() {
    let (Some(endpoint), Some(cargo_lambda)) = (cairn_tests::tools::moto(), cairn_tests::tools::cargo_lambda()) else {
        return;
    };
    let suffix = format!("{}", std::process::id());
    let config = aws_config::load_from_env().await;
    let table = format!("cairn-watch-{suffix}");
    let store = DynamoDbStore::new(aws_sdk_dynamodb::Client::new(&config), &table, "watch").unwrap();
    store.create_table().await.unwrap();
    let scheduler = aws_sdk_scheduler::Client::new(&config);
    let group = format!("cairn-{suffix}");
    scheduler.create_schedule_group().name(&group).send().await.unwrap();
    // The bus, with sent fetch-books events routed to a queue we read back.
    let events = aws_sdk_eventbridge::Client::new(&config);
    let bus = format!("cairn-{suffix}");
    events.create_event_bus().name(&bus).send().await.unwrap();
    let sqs = aws_sdk_sqs::Client::new(&config);
    let queue_url = sqs.create_queue().queue_name(format!("fetch-{suffix}")).send().await.unwrap().queue_url.unwrap();
    let queue_arn = format!("arn:aws:sqs:us-east-1:123456789012:fetch-{suffix}");
    events
        .put_rule()
        .name("fetch")
        .event_bus_name(&bus)
        .event_pattern(r#"{"detail-type": ["readwise/fetch-books"]}"#)
        .send()
        .await
        .unwrap();
    events
        .put_targets()
        .rule("fetch")
        .event_bus_name(&bus)
        .targets(RuleTarget::builder().id("q").arn(queue_arn).build().unwrap())
        .send()
        .await
        .unwrap();
    let timer_queue = sqs.create_queue().queue_name(format!("timer-{suffix}")).send().await.unwrap().queue_url.unwrap();
    let users = StubServer::start(|_| {
        (200, json!([{"userId": "u1", "apiKey": "k1"}, {"userId": "u2", "apiKey": "k2"}]).to_string())
    })
    .await;

    let env = [
        ("AWS_ENDPOINT_URL", endpoint.clone()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ("CAIRN_TABLE", table.clone()),
        // One scope for every binary cargo lambda watch runs (they share this environment).
        ("CAIRN_SCOPE", "watch".into()),
        ("CAIRN_BUS", bus.clone()),
        ("CAIRN_SCHEDULE_GROUP", group.clone()),
        ("CAIRN_SCHEDULER_ROLE_ARN", "arn:aws:iam::123456789012:role/cairn-scheduler".into()),
        ("CAIRN_FUNCTION_ARN", "arn:aws:lambda:us-east-1:123456789012:function:cairn-hello".into()),
        ("CAIRN_TIMER_QUEUE_URL", timer_queue.clone()),
        ("READWISE_USERS_URL", users.url().to_string()),
    ];
    let watch = tokio::task::spawn_blocking(move || Watch::start(&cargo_lambda, &env)).await.unwrap();
    let watch = std::sync::Arc::new(watch);

    // hello: an EventBridge event starts it; its step lands in DynamoDB; its one-hour sleep, beyond
    // the queue's 15 minutes, in one Scheduler schedule that hands over to the queue.
    let w = watch.clone();
    let answer =
        tokio::task::spawn_blocking(move || w.invoke("hello", &fixture("eventbridge-my-event.json"))).await.unwrap();
    let run = RunId::for_event("hello", "6a7e8feb-b491-4cf7-a9f1-bf3703467718");
    assert_eq!(answer["runs"][0]["run_id"], json!(run.as_str()));
    assert_eq!(answer["runs"][0]["status"], json!("sleeping"));
    let journal = store.load(&run).await.unwrap().unwrap();
    assert_eq!(journal.steps[0].state, StepState::Completed { output: json!({"success": true}) });
    let schedules = scheduler.list_schedules().group_name(&group).send().await.unwrap().schedules;
    assert_eq!(schedules.len(), 1);
    let schedule =
        scheduler.get_schedule().group_name(&group).name(schedules[0].name.clone().unwrap()).send().await.unwrap();
    let input: Value = serde_json::from_str(schedule.target.unwrap().input.as_deref().unwrap()).unwrap();
    assert_eq!(input, json!({"cairn": "resume", "function_id": "hello", "run_id": run.as_str()}));

    // The Scheduler's resume payload, delivered early (as a retry might): the run sleeps on.
    let w = watch.clone();
    let resumed = tokio::task::spawn_blocking(move || w.invoke("hello", &input)).await.unwrap();
    assert_eq!(resumed["runs"][0]["status"], json!("sleeping"));

    // readwise-daily-sync: the cron's Scheduled Event fans out through moto's EventBridge.
    let w = watch.clone();
    let synced = tokio::task::spawn_blocking(move || {
        w.invoke("readwise-daily-sync", &fixture("eventbridge-scheduled-event.json"))
    })
    .await
    .unwrap();
    assert_eq!(synced["runs"][0]["status"], json!("completed"));
    assert_eq!(synced["runs"][0]["output"], json!({"sent": 2}));
    let received = sqs.receive_message().queue_url(&queue_url).max_number_of_messages(10).send().await.unwrap();
    let mut users_sent: Vec<Value> = received
        .messages
        .unwrap_or_default()
        .iter()
        .map(|m| serde_json::from_str::<Value>(m.body.as_deref().unwrap()).unwrap()["detail"]["data"].clone())
        .collect();
    users_sent.sort_by_key(|d| d["userId"].as_str().unwrap().to_string());
    // Ids only: the users endpoint's keys (an old app still sends them) never reach the bus.
    assert_eq!(users_sent, vec![json!({"userId": "u1"}), json!({"userId": "u2"})]);
}
