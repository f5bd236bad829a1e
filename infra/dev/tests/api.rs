//! The dev server in process, on a free port, with the project's template: its AWS APIs against
//! raw requests, the AWS SDK clients Cairn's functions use, and the aws CLI; bad input gets
//! AWS-shaped errors and nothing accepted is lost. `cargo lambda watch` is not running here, so
//! deliveries fail, are retried twice, and are recorded as failed.
#![allow(clippy::unwrap_used)] // Tests: an unwrap that fails is a failed test.

mod common;

use cairn::{
    EventPayload, Millis, RunId, RunMeta, RunStore, SqliteStore, StepError, StepId, StepKind, StepRecord, StepState,
};
use cairn_aws::{AnyStore, EventBridgeBus, SchedulerTimer};
use cairn_dev::dev::{Dev, DevConfig};
use cairn_tests::{free_port, workspace};
use common::{get, sdk_config};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Server {
    url: String,
    dev: Arc<Dev>,
    store: SqliteStore,
    _dir: tempfile::TempDir,
}

/// `lambda_url` points at a port nothing listens on.
async fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("dev.db").display().to_string();
    let store = SqliteStore::open(&db).unwrap();
    let config = DevConfig {
        template_path: format!("{}/template.yaml", workspace()),
        db_path: db,
        lambda_url: format!("http://127.0.0.1:{}", free_port()),
        apps: Vec::new(),
        region: "us-east-1".into(),
        concurrency: 4,
    };
    let dev = Dev::new(config, AnyStore::Sqlite(store.clone())).unwrap();
    dev.spawn_background();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, cairn_dev::server::router(Arc::clone(&dev))).into_future());
    Server { url, dev, store, _dir: dir }
}

async fn put_events(url: &str, body: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(url)
        .header("x-amz-target", "AWSEvents.PutEvents")
        .header("content-type", "application/x-amz-json-1.1")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

fn entry(name: &str, detail: &str) -> Value {
    json!({"EventBusName": "cairn", "Source": "tests", "DetailType": name, "Detail": detail})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_put_events_get_aws_shaped_errors_and_nothing_is_logged() {
    let server = start().await;
    let url = &server.url;
    let (status, body) = put_events(url, "{\"Entries\": [").await;
    assert_eq!(status, 400);
    assert_eq!(body["__type"], "SerializationException");
    assert!(body["message"].as_str().unwrap().starts_with("the request body is not JSON: EOF while parsing"), "{body}");
    assert_eq!(
        put_events(url, "{}").await,
        (
            400,
            json!({"__type": "ValidationException", "message": "1 validation error detected: Value null at 'entries' failed to satisfy constraint: Member must not be null"})
        )
    );
    let eleven: Vec<Value> = (0..11).map(|i| entry("app/my.event", &format!("{{\"i\": {i}}}"))).collect();
    assert_eq!(
        put_events(url, &json!({"Entries": eleven}).to_string()).await,
        (
            400,
            json!({"__type": "ValidationException", "message": "1 validation error detected: Value at 'entries' failed to satisfy constraint: Member must have length less than or equal to 10 (got 11)"})
        )
    );
    let big = json!({"blob": "x".repeat(300 * 1024)}).to_string();
    let (status, body) = put_events(url, &json!({"Entries": [entry("app/my.event", &big)]}).to_string()).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["message"],
        format!(
            "Total size of the entries in the request is over the limit: {} bytes, the limit is 262144",
            big.len() + 5 + 12
        )
    );
    let response = reqwest::Client::new()
        .post(url)
        .header("x-amz-target", "AWSEvents.DeleteEventBus")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-amzn-errortype"], "UnknownOperationException");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["message"],
        "the dev server does not implement AWSEvents.DeleteEventBus; it serves AWSEvents.PutEvents, ListRules and ListEventBuses"
    );
    assert_eq!(get(&format!("{url}/api/events")).await["total"], 0, "a refused request logs nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_entries_fail_alone_and_the_good_ones_are_logged_and_delivered_with_retries() {
    let server = start().await;
    let url = &server.url;
    let entries = json!({"Entries": [
        entry("app/my.event", "{\"user\": \"ann\"}"),
        {"EventBusName": "cairn", "Source": "tests", "DetailType": "app/my.event"},
        entry("app/my.event", "[1, 2]"),
        {"EventBusName": "nope", "Source": "tests", "DetailType": "app/my.event", "Detail": "{}"},
        entry("app/unrouted", "{}"),
    ]});
    let (status, body) = put_events(url, &entries.to_string()).await;
    assert_eq!(status, 200);
    assert_eq!(body["FailedEntryCount"], 3);
    let results = body["Entries"].as_array().unwrap();
    assert_eq!(
        results[1],
        json!({"ErrorCode": "InvalidArgument", "ErrorMessage": "Parameter Detail is not valid. Reason: Detail is a required argument."})
    );
    assert_eq!(
        results[2],
        json!({"ErrorCode": "MalformedDetail", "ErrorMessage": "Detail is malformed: it must be a JSON object."})
    );
    assert_eq!(
        results[3],
        json!({"ErrorCode": "ResourceNotFoundException", "ErrorMessage": "Event bus nope does not exist. (template.yaml's rules listen on: cairn, default)"})
    );
    let (first, unrouted) = (results[0]["EventId"].as_str().unwrap(), results[4]["EventId"].as_str().unwrap());
    let logged = get(&format!("{url}/api/events")).await;
    assert_eq!(logged["total"], 2);
    let names: Vec<(&str, Vec<Value>)> = logged["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["id"].as_str().unwrap(), e["targets"].as_array().unwrap().clone()))
        .collect();
    assert_eq!(names, [(unrouted, vec![]), (first, vec![json!("hello")])]);
    let envelope = &logged["events"][1]["envelope"];
    assert_eq!(
        (&envelope["detail-type"], &envelope["source"], &envelope["account"], &envelope["detail"]),
        (&json!("app/my.event"), &json!("tests"), &json!("000000000000"), &json!({"user": "ann"}))
    );
    // Nothing serves the functions here: the delivery is tried three times (as Lambda's async
    // invocations are), then recorded as failed with the reason; the event stays in the log.
    let deadline = Instant::now() + Duration::from_secs(20);
    let invocation = loop {
        let detail = get(&format!("{url}/api/events/{first}")).await;
        let invocation = detail["invocations"][0].clone();
        if invocation["status"] == "failed" {
            break invocation;
        }
        assert!(Instant::now() < deadline, "{detail}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(invocation["attempts"], 3);
    assert_eq!(invocation["payload"], *envelope);
    let lambda = &server.dev.config.lambda_url;
    assert!(
        invocation["error"].as_str().unwrap().starts_with(&format!("cannot reach cargo lambda watch at {lambda}: ")),
        "{invocation}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_clients_cairn_uses_work_unchanged() {
    let server = start().await;
    let config = sdk_config(&server.url).await;
    // EventBridgeBus: 25 events in batches of 10.
    let bus = EventBridgeBus::new(aws_sdk_eventbridge::Client::new(&config), "cairn");
    let events: Vec<EventPayload> = (0..25)
        .map(|i| EventPayload::new("readwise/fetch-books", json!({"i": i})).with_id(format!("ev-{i}")))
        .collect();
    cairn::Bus::send(&bus, &events).await.unwrap();
    let logged = get(&format!("{}/api/events?limit=100", server.url)).await;
    assert_eq!(logged["total"], 25);
    let mut ids: Vec<&str> =
        logged["events"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    ids.sort_by_key(|id| id[3..].parse::<u32>().unwrap());
    assert_eq!(ids, (0..25).map(|i| format!("ev-{i}")).collect::<Vec<_>>());
    assert!(logged["events"].as_array().unwrap().iter().all(|e| e["targets"] == json!(["readwise-fetch-books"])));

    // SchedulerTimer: a wake-up 1.5 s out is a one-time schedule; scheduling it again is a no-op
    // (ConflictException, as in AWS); when due it fires at the target, then is deleted.
    let timer = SchedulerTimer::new(
        aws_sdk_scheduler::Client::new(&config),
        "cairn",
        server.dev.function_arn("cairn-hello"),
        "arn:aws:iam::000000000000:role/cairn-dev",
        "hello",
        bus,
    );
    let run = RunId::new("run_timer");
    let at: Millis = chrono::Utc::now().timestamp_millis() + 1_500;
    cairn::Timer::wake_at(&timer, &run, "hello", "sleep", at).await.unwrap();
    cairn::Timer::wake_at(&timer, &run, "hello", "sleep", at).await.unwrap();
    let name = SchedulerTimer::schedule_name(&run, "sleep", at);
    let schedules = get(&format!("{}/api/schedules", server.url)).await["schedules"].clone();
    let ours: Vec<&Value> = schedules.as_array().unwrap().iter().filter(|s| s["name"] == name.as_str()).collect();
    assert_eq!(ours.len(), 1);
    assert_eq!(ours[0]["expression"], SchedulerTimer::at_expression(at));
    assert_eq!(ours[0]["input"], json!({"cairn": "resume", "function_id": "hello", "run_id": "run_timer"}).to_string());
    let deadline = Instant::now() + Duration::from_secs(10);
    let fired = loop {
        let invocations = get(&format!("{}/api/invocations", server.url)).await;
        if let Some(fired) = invocations["invocations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["cause"] == format!("schedule:cairn/{name}"))
        {
            break fired.clone();
        }
        assert!(Instant::now() < deadline, "the schedule did not fire");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(chrono::Utc::now().timestamp_millis() >= at, "fired before its time");
    assert_eq!(
        (fired["function"].as_str(), &fired["payload"]),
        (Some("hello"), &json!({"cairn": "resume", "function_id": "hello", "run_id": "run_timer"}))
    );
    let schedules = get(&format!("{}/api/schedules", server.url)).await;
    assert!(!schedules.to_string().contains(&name), "ActionAfterCompletion DELETE: {schedules}");
}

async fn create_schedule(url: &str, name: &str, body: Value) -> (u16, String, Value) {
    let response = reqwest::Client::new().post(format!("{url}/schedules/{name}")).json(&body).send().await.unwrap();
    let kind = response.headers().get("x-amzn-errortype").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    (response.status().as_u16(), kind, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_schedules_get_aws_shaped_errors() {
    let server = start().await;
    let url = &server.url;
    let schedule = |expression: &str, target: &str| {
        json!({"GroupName": "cairn", "ScheduleExpression": expression, "FlexibleTimeWindow": {"Mode": "OFF"},
               "Target": {"Arn": target, "RoleArn": "arn:aws:iam::000000000000:role/x", "Input": "{}"}})
    };
    let hello = server.dev.function_arn("cairn-hello");
    let (status, _, body) = create_schedule(url, "s1", schedule("rate(5 minutes)", &hello)).await;
    assert_eq!(
        (status, body),
        (200, json!({"ScheduleArn": "arn:aws:scheduler:us-east-1:000000000000:schedule/cairn/s1"}))
    );
    assert_eq!(
        create_schedule(url, "s1", schedule("rate(5 minutes)", &hello)).await,
        (409, "ConflictException".into(), json!({"Message": "Schedule s1 already exists."}))
    );
    assert_eq!(
        create_schedule(url, "s2", schedule("cron(0 3 * *)", &hello)).await,
        (
            400,
            "ValidationException".into(),
            json!({"Message": "Invalid Schedule Expression cron(0 3 * *): cron() needs 6 fields (minutes hours day-of-month month day-of-week year), found 4"})
        )
    );
    let unknown = server.dev.function_arn("cairn-nope");
    assert_eq!(
        create_schedule(url, "s3", schedule("rate(1 hour)", &unknown)).await,
        (
            400,
            "ValidationException".into(),
            json!({"Message": format!("Target.Arn {unknown}: no AWS::Serverless::Function of that name in template.yaml")})
        )
    );
    let response = reqwest::Client::new().delete(format!("{url}/schedules/s9?groupName=cairn")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"Message": "Schedule s9 does not exist."}));
    let response = reqwest::Client::new().delete(format!("{url}/schedules/s1?groupName=cairn")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    // The template's cron is installed as a schedule of its own.
    let schedules = get(&format!("{url}/api/schedules")).await;
    let names: Vec<&str> =
        schedules["schedules"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["ReadwiseDailySyncFunction.Daily"]);
}

fn record(name: &str, position: u32, state: StepState, at: Millis) -> StepRecord {
    StepRecord {
        id: StepId::for_name(name, 0),
        name: name.into(),
        kind: StepKind::Run,
        position,
        state,
        attempts: 1,
        started_at: at,
        ended_at: Some(at + 5),
        detail: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_from_the_failed_step_keeps_what_completed_before_it() {
    let server = start().await;
    let run = RunId::new("run_failed");
    let event = EventPayload::new("app/my.event", json!({"user": "ann"})).with_id("ev-1").with_ts(1_000);
    let mut meta = RunMeta::new(run.clone(), "hello", event.clone(), 1_000);
    server.store.create_run(meta.clone()).await.unwrap();
    let done = record("fetch", 0, StepState::Completed { output: json!({"n": 3}) }, 1_000);
    let failed = record("charge", 1, StepState::Failed { error: StepError::new("card declined") }, 1_010);
    server.store.commit_step(&run, &done).await.unwrap();
    server.store.commit_step(&run, &failed).await.unwrap();
    meta.status = cairn::RunStatus::Failed;
    server.store.update_meta(&meta).await.unwrap();

    let response = reqwest::Client::new()
        .post(format!("{}/api/runs/run_failed/rerun", server.url))
        .json(&json!({"from": "failed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let new_run = RunId::new(body["run_id"].as_str().unwrap());
    assert_eq!((body["from"].as_str(), body["rerun_of"].as_str()), (Some("failed"), Some("run_failed")));
    let journal = server.store.load(&new_run).await.unwrap().unwrap();
    assert_eq!(journal.steps, vec![done], "only the step before the failed one is kept");
    assert_eq!((journal.meta.function_id.as_str(), &journal.meta.event), ("hello", &event));
    assert_eq!(journal.meta.status, cairn::RunStatus::Running);
    let invocations = get(&format!("{}/api/invocations", server.url)).await;
    let resume = invocations["invocations"].as_array().unwrap().iter().find(|i| i["cause"] == "rerun").unwrap().clone();
    assert_eq!(resume["function"], "hello");
    assert_eq!(resume["payload"], json!({"cairn": "resume", "function_id": "hello", "run_id": new_run}));

    // Bad requests name the problem.
    let bad = reqwest::Client::new()
        .post(format!("{}/api/runs/run_failed/rerun", server.url))
        .json(&json!({"from": "middle"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.json::<Value>().await.unwrap(), json!({"error": "`from` is `start` or `failed`, not `middle`"}));
    let missing = reqwest::Client::new().post(format!("{}/api/runs/run_nope/cancel", server.url)).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.json::<Value>().await.unwrap(), json!({"error": "no run `run_nope`"}));
    let invoke = reqwest::Client::new()
        .post(format!("{}/api/functions/nope/invoke", server.url))
        .json(&json!({"data": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(invoke.status(), 404);
    assert_eq!(
        invoke.json::<Value>().await.unwrap(),
        json!({"error": "no function `nope` in template.yaml or the Inngest apps"})
    );
    let invoke = reqwest::Client::new()
        .post(format!("{}/api/functions/hello/invoke", server.url))
        .json(&json!({"data": [1]}))
        .send()
        .await
        .unwrap();
    assert_eq!(invoke.status(), 400);
    assert_eq!(invoke.json::<Value>().await.unwrap(), json!({"error": "`data` must be a JSON object"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_is_served_from_the_binary_with_no_cdn() {
    let server = start().await;
    let response = reqwest::get(format!("{}/", server.url)).await.unwrap();
    assert_eq!(response.headers()["content-type"], "text/html; charset=utf-8");
    let html = response.text().await.unwrap();
    assert!(html.contains(r#"<script src="/assets/app.js"></script>"#) && html.contains(r#"href="/assets/style.css""#));
    for asset in ["/assets/app.js", "/assets/style.css"] {
        let text = reqwest::get(format!("{}{asset}", server.url)).await.unwrap().text().await.unwrap();
        assert!(text.len() > 1_000, "{asset}");
        assert!(!text.contains("https://") && !text.contains("http://"), "{asset} loads nothing from elsewhere");
    }
    // The only URL in the page is the SVG namespace of its inline icons.
    let html = html.replace("http://www.w3.org/2000/svg", "");
    assert!(!html.contains("https://") && !html.contains("http://"), "the page loads nothing from elsewhere");
}

#[test]
fn a_template_mistake_stops_cairn_dev_with_the_resource_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(format!("{}/template.yaml", workspace()))
        .unwrap()
        .replace("detail-type: [app/my.event]", "detail-type: app/my.event");
    let path = dir.path().join("template.yaml");
    std::fs::write(&path, text).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["dev", "--port", &free_port().to_string(), "--db"])
        .arg(dir.path().join("dev.db"))
        .arg("--template")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).trim(),
        format!(
            "cairn: {}: HelloFunction.Events.AppMyEvent.Pattern: detail-type must be a list of values (e.g. [\"app/my.event\"]), found a string",
            path.display()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_cli_shows_the_validation_error() {
    let Ok(venv) = std::env::var("CAIRN_TOOLS_VENV") else {
        eprintln!("skipped: CAIRN_TOOLS_VENV is not set (make test sets it)");
        return;
    };
    let server = start().await;
    let eleven: Vec<Value> = (0..11).map(|_| entry("app/my.event", "{}")).collect();
    let output = tokio::process::Command::new(format!("{venv}/bin/aws"))
        .args(["events", "put-events", "--endpoint-url", &server.url, "--entries"])
        .arg(Value::Array(eleven).to_string())
        .env("AWS_ACCESS_KEY_ID", "cairn-dev")
        .env("AWS_SECRET_ACCESS_KEY", "cairn-dev")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(255));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).trim(),
        "An error occurred (ValidationException) when calling the PutEvents operation: 1 validation error detected: Value at 'entries' failed to satisfy constraint: Member must have length less than or equal to 10 (got 11)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_dynamodb_table_the_dashboard_api_reads_and_cancels_runs_there() {
    let Ok(endpoint) = std::env::var("CAIRN_TEST_AWS_ENDPOINT") else {
        eprintln!("skipped: CAIRN_TEST_AWS_ENDPOINT is not set (make test starts moto)");
        return;
    };
    let config = sdk_config(&endpoint).await;
    let table = format!("cairn-dev-{}", std::process::id());
    let store = cairn_aws::DynamoDbStore::new(aws_sdk_dynamodb::Client::new(&config), &table);
    store.create_table().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dev_config = DevConfig {
        template_path: format!("{}/template.yaml", workspace()),
        db_path: dir.path().join("dev.db").display().to_string(),
        lambda_url: format!("http://127.0.0.1:{}", free_port()),
        apps: Vec::new(),
        region: "us-east-1".into(),
        concurrency: 4,
    };
    let dev = Dev::new(dev_config, AnyStore::DynamoDb(store.clone())).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, cairn_dev::server::router(dev)).into_future());

    let run = RunId::new("run_in_dynamodb");
    let event = EventPayload::new("app/my.event", json!({})).with_id("ev-d").with_ts(1_000);
    let mut meta = RunMeta::new(run.clone(), "hello", event, 1_000);
    store.create_run(meta.clone()).await.unwrap();
    meta.status = cairn::RunStatus::Sleeping;
    store.update_meta(&meta).await.unwrap();
    let listed = get(&format!("{url}/api/runs?function=hello")).await;
    assert_eq!(listed["runs"].as_array().unwrap().len(), 1);
    assert_eq!(
        (listed["runs"][0]["run_id"].as_str(), listed["runs"][0]["status"].as_str()),
        (Some("run_in_dynamodb"), Some("sleeping"))
    );
    let cancelled = reqwest::Client::new().post(format!("{url}/api/runs/run_in_dynamodb/cancel")).send().await.unwrap();
    assert_eq!(cancelled.status(), 200);
    assert_eq!(store.load(&run).await.unwrap().unwrap().meta.status, cairn::RunStatus::Cancelled);
}
