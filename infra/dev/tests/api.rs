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
    start_with(&format!("{}/template.yaml", workspace()), &format!("http://127.0.0.1:{}", free_port()), None).await
}

async fn start_with(template: &str, lambda_url: &str, reconcile_secs: Option<u64>) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("dev.db").display().to_string();
    let store = SqliteStore::open(&db).unwrap();
    let config = DevConfig {
        template_path: template.to_string(),
        db_path: db,
        lambda_url: lambda_url.to_string(),
        apps: Vec::new(),
        region: "us-east-1".into(),
        concurrency: 4,
        app_timeout: Duration::from_secs(300),
        allowed_hosts: Vec::new(),
        reconcile_secs,
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
        .header("content-type", "application/x-amz-json-1.1")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-amzn-errortype"], "UnknownOperationException");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["message"],
        "the dev server does not implement AWSEvents.DeleteEventBus; it serves AWSEvents.PutEvents, ListRules and ListEventBuses, and AmazonSQS.SendMessage, SendMessageBatch, GetQueueUrl and ListQueues"
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

    // SchedulerTimer: a run's long wake-up is one one-time schedule, replaced (not doubled) when
    // armed again; when due it fires at the target, then is deleted.
    let timer = SchedulerTimer::new(
        aws_sdk_scheduler::Client::new(&config),
        "cairn",
        server.dev.function_arn("cairn-hello"),
        "arn:aws:iam::000000000000:role/cairn-dev",
        "hello",
    );
    let run = RunId::new("run_timer");
    let at: Millis = chrono::Utc::now().timestamp_millis() + 1_500;
    timer.replace_run_schedule(&run, at + 60_000).await.unwrap();
    timer.replace_run_schedule(&run, at).await.unwrap();
    let name = timer.run_schedule_name(&run);
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
    // The template's cron and every function's reconciler are installed as schedules.
    let schedules = get(&format!("{url}/api/schedules")).await;
    let names: Vec<&str> =
        schedules["schedules"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, template_schedules());
    assert!(names.contains(&"ReadwiseDailySyncFunction.Cron1") && names.contains(&"HelloFunction.Reconcile"));
}

/// The `ScheduleV2` events of template.yaml's functions, as `<Function>.<Event>`, sorted: what
/// the dev server installs (read here with serde_yaml, not the dev server's reader).
fn template_schedules() -> Vec<String> {
    let text = std::fs::read_to_string(format!("{}/template.yaml", workspace())).unwrap();
    let template: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let mut names = Vec::new();
    for (logical, resource) in template["Resources"].as_mapping().unwrap() {
        if resource["Type"].as_str() != Some("AWS::Serverless::Function") {
            continue;
        }
        for (event, spec) in resource["Properties"]["Events"].as_mapping().into_iter().flatten() {
            if spec["Type"].as_str() == Some("ScheduleV2") {
                names.push(format!("{}.{}", logical.as_str().unwrap(), event.as_str().unwrap()));
            }
        }
    }
    names.sort();
    names
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
    let missing = reqwest::Client::new()
        .post(format!("{}/api/runs/run_nope/cancel", server.url))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
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
            "cairn: {}: HelloFunction.Events.OnAppMyEvent.Pattern: detail-type must be a list of values (e.g. [\"app/my.event\"]), found a string",
            path.display()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_cli_shows_the_validation_error() {
    let Some(venv) = cairn_tests::tools::aws_cli_venv() else { return };
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
    let Some(endpoint) = cairn_tests::tools::moto() else { return };
    let config = sdk_config(&endpoint).await;
    let table = format!("cairn-dev-{}", std::process::id());
    let store = cairn_aws::DynamoDbStore::new(aws_sdk_dynamodb::Client::new(&config), &table, "dev").unwrap();
    store.create_table().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dev_config = DevConfig {
        template_path: format!("{}/template.yaml", workspace()),
        db_path: dir.path().join("dev.db").display().to_string(),
        lambda_url: format!("http://127.0.0.1:{}", free_port()),
        apps: Vec::new(),
        region: "us-east-1".into(),
        concurrency: 4,
        app_timeout: Duration::from_secs(300),
        allowed_hosts: Vec::new(),
        reconcile_secs: None,
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
    let cancelled = reqwest::Client::new()
        .post(format!("{url}/api/runs/run_in_dynamodb/cancel"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 200);
    assert_eq!(store.load(&run).await.unwrap().unwrap().meta.status, cairn::RunStatus::Cancelled);
}

/// A template with a function on an SQS timer queue (`timed`, maxReceiveCount 2) and one with
/// only a reconciler schedule (`plain`).
const TIMER_TEMPLATE: &str = r#"
Resources:
  TimedFunction:
    Type: AWS::Serverless::Function
    Metadata:
      BuildProperties:
        Binary: timed
    Properties:
      FunctionName: cairn-timed
      Events:
        Timer:
          Type: SQS
          Properties:
            Queue: !GetAtt TimedTimerQueue.Arn
            BatchSize: 10
            FunctionResponseTypes: [ReportBatchItemFailures]
  TimedTimerQueue:
    Type: AWS::SQS::Queue
    Properties:
      VisibilityTimeout: 900
      RedrivePolicy:
        maxReceiveCount: 2
        deadLetterTargetArn: arn:aws:sqs:us-east-1:000000000000:dead
  PlainFunction:
    Type: AWS::Serverless::Function
    Metadata:
      BuildProperties:
        Binary: plain
    Properties:
      Events:
        Reconcile:
          Type: ScheduleV2
          Properties:
            ScheduleExpression: rate(1 minute)
            Input: '{"cairn": "reconcile", "at": "<aws.scheduler.scheduled-time>", "id": "<aws.scheduler.execution-id>", "arn": "<aws.scheduler.schedule-arn>", "attempt": "<aws.scheduler.attempt-number>"}'
"#;

type Received = Arc<std::sync::Mutex<Vec<(String, Value, Instant)>>>;

/// A stand-in for `cargo lambda watch`'s Invoke API: records each invocation (function, payload,
/// when), and reports a message whose body is `fail` in `batchItemFailures`.
async fn stub_lambda() -> (String, Received) {
    use axum::extract::{Path, State};
    let received: Received = Arc::default();
    let app =
        axum::Router::new()
            .route(
                "/2015-03-31/functions/{name}/invocations",
                axum::routing::post(
                    |State(received): State<Received>,
                     Path(name): Path<String>,
                     axum::Json(payload): axum::Json<Value>| async move {
                        received.lock().unwrap().push((name, payload.clone(), Instant::now()));
                        let record = &payload["Records"][0];
                        let failures: Vec<Value> = if record["body"] == "fail" {
                            vec![json!({"itemIdentifier": record["messageId"]})]
                        } else {
                            Vec::new()
                        };
                        axum::Json(json!({"batchItemFailures": failures}))
                    },
                ),
            )
            .with_state(Arc::clone(&received));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, app).into_future());
    (url, received)
}

fn deliveries(received: &Received, function: &str, body: Option<&str>) -> Vec<(Value, Instant)> {
    received
        .lock()
        .unwrap()
        .iter()
        .filter(|(name, payload, _)| name == function && body.is_none_or(|b| payload["Records"][0]["body"] == b))
        .map(|(_, payload, at)| (payload.clone(), *at))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_messages_sent_with_the_sdk_are_delivered_when_their_delay_ends() {
    use aws_sdk_sqs::error::ProvideErrorMetadata;
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("template.yaml");
    std::fs::write(&template, TIMER_TEMPLATE).unwrap();
    let (lambda, received) = stub_lambda().await;
    let server = start_with(&template.display().to_string(), &lambda, None).await;
    let sqs = aws_sdk_sqs::Client::new(&sdk_config(&server.url).await);
    let prefix = cairn_dev::cli::timer_queue_prefix(&server.url);
    let queue = format!("{prefix}timed");

    // Delivered to the function 2 s after the send, in Lambda's SQS event.
    let sent = Instant::now();
    let output = sqs.send_message().queue_url(&queue).message_body("hello").delay_seconds(2).send().await.unwrap();
    assert_eq!(output.md5_of_message_body(), Some("5d41402abc4b2a76b9719d911017c592"));
    let (payload, at) = common::until("the delayed message", 10, || {
        let found = deliveries(&received, "timed", Some("hello"));
        async move { found.into_iter().next() }
    })
    .await;
    let delay = at - sent;
    assert!(
        // Never early; the upper bound leaves room for a loaded machine's dispatch.
        (Duration::from_millis(1_500)..=Duration::from_millis(6_000)).contains(&delay),
        "delivered {delay:?} after the send"
    );
    let record = &payload["Records"][0];
    assert_eq!(record["messageId"].as_str(), output.message_id());
    assert_eq!(
        (
            &record["body"],
            &record["md5OfBody"],
            &record["eventSource"],
            &record["eventSourceARN"],
            &record["awsRegion"]
        ),
        (
            &json!("hello"),
            &json!("5d41402abc4b2a76b9719d911017c592"),
            &json!("aws:sqs"),
            &json!("arn:aws:sqs:us-east-1:000000000000:timer-timed"),
            &json!("us-east-1")
        )
    );
    assert_eq!(record["attributes"]["ApproximateReceiveCount"], "1");
    assert!(record["attributes"]["SentTimestamp"].as_str().unwrap().parse::<i64>().is_ok());
    assert!(record["receiptHandle"].is_string() && record["messageAttributes"] == json!({}));

    // AWS's errors, as the SDK reads them.
    let err = sqs
        .send_message()
        .queue_url(&queue)
        .message_body("late")
        .delay_seconds(901)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(
        (err.code(), err.message()),
        (
            Some("InvalidParameterValue"),
            Some("Value 901 for parameter DelaySeconds is invalid. Reason: DelaySeconds must be >= 0 and <= 900.")
        )
    );
    for unknown in ["plain", "nope"] {
        let err = sqs
            .send_message()
            .queue_url(format!("{prefix}{unknown}"))
            .message_body("x")
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert!(err.is_queue_does_not_exist(), "{err:?}");
        assert_eq!(
            err.message(),
            Some(format!("The specified queue does not exist: timer-{unknown} (the dev server serves queue timer-<binary> for each function in template.yaml with an SQS event source; queues: timer-timed)").as_str())
        );
    }

    // A message the function reports in batchItemFailures is received again a second later,
    // until the queue's maxReceiveCount (2).
    sqs.send_message().queue_url(&queue).message_body("fail").send().await.unwrap();
    let failing = common::until("two receives of the failing message", 10, || {
        let found = deliveries(&received, "timed", Some("fail"));
        async move { (found.len() >= 2).then_some(found) }
    })
    .await;
    let counts: Vec<&Value> =
        failing.iter().map(|(p, _)| &p["Records"][0]["attributes"]["ApproximateReceiveCount"]).collect();
    assert_eq!(counts, [&json!("1"), &json!("2")]);
    assert!(failing[1].1 - failing[0].1 >= Duration::from_millis(900));
    let failed = common::until("the failing message given up", 10, || {
        let url = server.url.clone();
        async move {
            let invocations = get(&format!("{url}/api/invocations")).await["invocations"].clone();
            invocations
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["payload"]["Records"][0]["body"] == "fail" && i["status"] == "failed")
                .cloned()
        }
    })
    .await;
    assert_eq!((&failed["cause"], &failed["attempts"]), (&json!("sqs:timer-timed"), &json!(2)));
    assert!(
        failed["error"].as_str().unwrap().contains("given up after 2 receives, the queue's maxReceiveCount"),
        "{failed}"
    );

    // A batch: the bad entry fails alone.
    let entry = |id: &str, delay: i32| {
        aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
            .id(id)
            .message_body(format!("batch-{id}"))
            .delay_seconds(delay)
            .build()
            .unwrap()
    };
    let batch = sqs
        .send_message_batch()
        .queue_url(&queue)
        .entries(entry("a", 0))
        .entries(entry("b", 901))
        .send()
        .await
        .unwrap();
    assert_eq!(batch.successful().iter().map(|s| s.id()).collect::<Vec<_>>(), ["a"]);
    assert_eq!(
        batch.failed().iter().map(|f| (f.id(), f.code(), f.sender_fault())).collect::<Vec<_>>(),
        [("b", "InvalidParameterValue", true)]
    );
    common::until("the batch's message", 10, || {
        let found = deliveries(&received, "timed", Some("batch-a"));
        async move { found.into_iter().next() }
    })
    .await;

    // The messages are in the event log, with their deliveries.
    let events = get(&format!("{}/api/events", server.url)).await;
    let logged: Vec<(&Value, &Value, &Value)> =
        events["events"].as_array().unwrap().iter().map(|e| (&e["bus"], &e["name"], &e["targets"])).collect();
    assert_eq!(logged.len(), 3);
    assert!(logged.iter().all(|e| e == &(&json!("sqs"), &json!("timer-timed"), &json!(["timed"]))), "{logged:?}");
    let first = get(&format!("{}/api/events/{}", server.url, output.message_id().unwrap())).await;
    assert_eq!(first["invocations"][0]["status"], "ok");
    assert_eq!(first["invocations"][0]["cause"], "sqs:timer-timed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_reconcile_secs_the_reconciler_ticks_every_second_with_its_scheduled_time() {
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("template.yaml");
    std::fs::write(&template, TIMER_TEMPLATE).unwrap();
    let (lambda, received) = stub_lambda().await;
    let server = start_with(&template.display().to_string(), &lambda, Some(1)).await;
    let ticks = common::until("three reconciler ticks", 10, || {
        let found = deliveries(&received, "plain", None);
        async move { (found.len() >= 3).then_some(found) }
    })
    .await;
    let at = |i: usize| chrono::DateTime::parse_from_rfc3339(ticks[i].0["at"].as_str().unwrap()).unwrap();
    for i in 1..3 {
        // Scheduled a whole number of seconds apart: 1, or more when a loaded machine stalled a
        // tick past the next (a tick is skipped, never fired twice), and delivered no sooner.
        let scheduled = (at(i) - at(i - 1)).num_milliseconds();
        assert!(scheduled >= 1_000 && scheduled % 1_000 == 0, "{:?}", ticks[i].0);
        assert_ne!(ticks[i].0["id"], ticks[i - 1].0["id"], "a fresh execution id each time");
        let gap = ticks[i].1 - ticks[i - 1].1;
        assert!(gap >= Duration::from_millis(500), "{gap:?}");
    }
    assert_eq!(
        (&ticks[0].0["cairn"], &ticks[0].0["arn"], &ticks[0].0["attempt"]),
        (
            &json!("reconcile"),
            &json!("arn:aws:scheduler:us-east-1:000000000000:schedule/template/PlainFunction.Reconcile"),
            &json!("1")
        )
    );
    assert!(ticks[0].0["at"].as_str().unwrap().ends_with('Z'));
    let schedules = get(&format!("{}/api/schedules", server.url)).await;
    assert_eq!(schedules["schedules"][0]["expression"], "rate(1 second)");
}

/// A run flow control skipped says why, in the API the dashboard reads, in its status filter,
/// and in `cairn runs show`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skipped_run_says_which_option_skipped_it_and_for_which_key() {
    let server = start().await;
    let event = EventPayload::new("app/my.event", json!({"user": "ann"})).with_id("ev-s").with_ts(1_000);
    let meta = RunMeta::new(RunId::new("run_skipped"), "hello", event, 1_000);
    // The head the runner writes when a singleton's key is held (flow_conformance tests that).
    let skipped = cairn::Skipped {
        reason: cairn::SkipReason::Singleton,
        key: Some("ann".into()),
        by: Some(RunId::new("run_active")),
        error: None,
    };
    let durations = cairn::lifecycle::transition::Durations { lease: 60_000, retention: 86_400_000 };
    server.store.create_run(cairn::lifecycle::transition::skipped(meta, skipped, 1_000, durations)).await.unwrap();
    let reason = "skipped by singleton: run `run_active` is active for key `ann`";
    let body = get(&format!("{}/api/runs/run_skipped", server.url)).await;
    assert_eq!((body["run"]["status"].as_str(), body["run"]["reason"].as_str()), (Some("skipped"), Some(reason)));
    let listed = get(&format!("{}/api/runs?status=skipped", server.url)).await;
    assert_eq!(listed["runs"][0]["run_id"], "run_skipped");
    let shown = cairn_dev::cli::render_timeline(&body, cairn_dev::cli::Style::plain());
    assert!(shown.ends_with(&format!("why      {reason}")), "{shown}");
}
