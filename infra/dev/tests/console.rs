//! `cairn console` over a stack on moto, with the table (both indexes), the bus and a timer
//! queue as template.yaml declares them: the dashboard in headless Chromium and the CLI list,
//! cancel, rerun, replay and invoke runs, and what they do goes through the stack's own parts
//! (the table's items, `inngest/function.cancelled` on the bus, resume messages on the function's
//! timer queue), where the deployed functions would pick it up.
#![allow(clippy::unwrap_used)] // Tests: an unwrap that fails is a failed test.

mod common;

use cairn::{EventPayload, RunId, RunMeta, RunStatus, RunStore, StepError, StepId, StepKind, StepRecord, StepState};
use cairn_aws::DynamoDbStore;
use cairn_tests::{free_port, workspace};
use common::{get, sdk_config};
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct ConsoleProcess {
    child: Child,
    url: String,
}

impl Drop for ConsoleProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

fn step(name: &str, position: u32, state: StepState, at: i64) -> StepRecord {
    StepRecord {
        id: StepId::for_name(name, 0),
        name: name.into(),
        kind: StepKind::Run,
        position,
        state,
        attempts: 1,
        started_at: at,
        ended_at: Some(at + 10),
        detail: None,
    }
}

/// A run of `function` created at `at`, left in `status`.
async fn seed(store: &DynamoDbStore, id: &str, function: &str, at: i64, status: RunStatus) -> RunId {
    let run = RunId::new(id);
    let event = EventPayload::new("app/my.event", json!({"n": at})).with_id(format!("ev-{id}")).with_ts(at);
    store.create_run(RunMeta::new(run.clone(), function, event, at)).await.unwrap();
    let mut meta = store.load(&run).await.unwrap().unwrap().meta;
    meta.status = status;
    store.update_meta(&meta).await.unwrap();
    run
}

fn cairn(url: &str, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_cairn")).args(args).env("CAIRN_DEV_URL", url).output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).trim().to_string(),
        String::from_utf8_lossy(&output.stderr).trim().to_string(),
    )
}

/// Receives from `queue` until `found` holds for the bodies seen, failing after 20 s.
async fn receive_until(
    sqs: &aws_sdk_sqs::Client,
    queue: &str,
    what: &str,
    found: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut bodies = Vec::new();
    while !found(&bodies) {
        assert!(Instant::now() < deadline, "{what}: only {bodies:?}");
        let answer = sqs.receive_message().queue_url(queue).max_number_of_messages(10).send().await.unwrap();
        for message in answer.messages.unwrap_or_default() {
            bodies.push(serde_json::from_str(message.body.as_deref().unwrap_or("null")).unwrap());
            sqs.delete_message().queue_url(queue).receipt_handle(message.receipt_handle.unwrap()).send().await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_lists_and_acts_on_a_deployed_stacks_runs_through_its_own_bus_and_queues() {
    let Some(endpoint) = cairn_tests::tools::moto() else { return };
    let aws = sdk_config(&endpoint).await;
    let pid = std::process::id();
    let (table, bus) = (format!("cairn-console-{pid}"), format!("cairn-console-{pid}"));
    let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
    // The stores as the Lambdas build them: scope = the binary's name.
    let hello = DynamoDbStore::new(dynamodb.clone(), &table, "hello").unwrap();
    hello.create_table().await.unwrap();
    let orders = DynamoDbStore::new(dynamodb.clone(), &table, "order-approval").unwrap();
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let timer_queue =
        sqs.create_queue().queue_name(format!("console-hello-timer-{pid}")).send().await.unwrap().queue_url.unwrap();
    let events_queue =
        sqs.create_queue().queue_name(format!("console-events-{pid}")).send().await.unwrap().queue_url.unwrap();
    let events_arn = sqs
        .get_queue_attributes()
        .queue_url(&events_queue)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone();
    let events = aws_sdk_eventbridge::Client::new(&aws);
    events.create_event_bus().name(&bus).send().await.unwrap();
    events
        .put_rule()
        .name("system-events")
        .event_bus_name(&bus)
        .event_pattern(json!({"detail-type": ["inngest/function.cancelled"]}).to_string())
        .send()
        .await
        .unwrap();
    let target = aws_sdk_eventbridge::types::Target::builder().id("events").arn(&events_arn).build().unwrap();
    events.put_targets().rule("system-events").event_bus_name(&bus).targets(target).send().await.unwrap();

    let sleeping = seed(&hello, "run_hello_sleeping", "hello", 1_000, RunStatus::Sleeping).await;
    let failed = seed(&hello, "run_hello_failed", "hello", 2_000, RunStatus::Failed).await;
    hello.commit_step(&failed, &step("a", 0, StepState::Completed { output: json!("kept") }, 2_000)).await.unwrap();
    let broke = StepState::Failed { error: StepError::non_retriable("b broke") };
    hello.commit_step(&failed, &step("b", 1, broke, 2_100)).await.unwrap();
    let waiting = seed(&orders, "run_order_waiting", "order-approval", 3_000, RunStatus::Waiting).await;
    let charged = seed(&orders, "run_charge_done", "order-charge", 4_000, RunStatus::Completed).await;

    let port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_cairn"));
    command
        .args(["console", "--port", &port.to_string(), "--table", &table, "--bus", &bus])
        .args(["--timer-queues", &format!("hello={timer_queue}")])
        .args(["--template", &format!("{}/template.yaml", workspace())])
        .envs([
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "cairn-dev"),
            ("AWS_SECRET_ACCESS_KEY", "cairn-dev"),
        ])
        .env_remove("CAIRN_TABLE")
        .env_remove("CAIRN_BUS");
    let child = cairn_tests::spawn_listening(command, port, "cairn-console");
    let console = ConsoleProcess { child, url: format!("http://127.0.0.1:{port}") };
    let url = console.url.clone();

    // Listed through the `runs` index, every scope, newest first; filters by function and status.
    let ids = |body: &Value| -> Vec<String> {
        body["runs"].as_array().unwrap().iter().map(|run| run["run_id"].as_str().unwrap().to_string()).collect()
    };
    let all = get(&format!("{url}/api/runs")).await;
    assert_eq!(ids(&all), ["run_charge_done", "run_order_waiting", "run_hello_failed", "run_hello_sleeping"]);
    assert_eq!(ids(&get(&format!("{url}/api/runs?function=hello&status=failed")).await), ["run_hello_failed"]);
    assert_eq!(
        ids(&get(&format!("{url}/api/runs?since=2000&until=4000")).await),
        ["run_order_waiting", "run_hello_failed"]
    );
    let health = get(&format!("{url}/api/health")).await;
    assert_eq!((health["server"].as_str(), health["table"].as_str()), (Some("cairn-console"), Some(table.as_str())));
    let functions = get(&format!("{url}/api/functions")).await;
    let function_ids: Vec<&str> =
        functions["functions"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap()).collect();
    assert!(
        function_ids.starts_with(&["hello", "order-approval"]) && function_ids.contains(&"order-charge"),
        "{function_ids:?}"
    );
    let (ok, listed, _) = cairn(&url, &["runs", "--function", "hello", "--json"]);
    assert!(ok);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2);

    // The dashboard in headless Chromium.
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "Debian's chromium is missing: apt-get install -y chromium (make test installs it)"
    );
    let shots = format!("{}/target/dashboard-screenshots", workspace());
    let output = Command::new("node")
        .args(["console.mjs", &url, failed.as_str(), sleeping.as_str(), "order-approval", &shots])
        .current_dir(format!("{}/tests/dashboard", env!("CARGO_MANIFEST_DIR")))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let seen: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&output.stderr)));
    assert!(output.status.success(), "{seen} {}", String::from_utf8_lossy(&output.stderr));
    assert_eq!((seen["mode"].as_str(), &seen["nav"]), (Some("console"), &json!(["runs", "functions"])));
    assert_eq!(seen["rows"], json!(["run_charge_done", "run_order_waiting", "run_hello_failed", "run_hello_sleeping"]));
    assert_eq!(seen["failedSteps"], json!([["a", "completed"], ["b", "failed"]]));
    assert_eq!(seen["rerunSteps"], json!([["a", "completed"]]));
    assert_eq!(seen["cancelled"], "cancelled");
    assert_eq!(seen["bulkToast"], "Cancelled 1 of 1");
    assert_eq!(seen["errors"], json!([]));

    // What the clicks did, in the stack's own parts.
    let rerun = RunId::new(seen["rerunRun"].as_str().unwrap());
    let rerun_journal = hello.load(&rerun).await.unwrap().unwrap();
    assert_eq!(rerun_journal.meta.event, hello.load(&failed).await.unwrap().unwrap().meta.event);
    assert_eq!(rerun_journal.steps.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["a"]);
    assert_eq!(hello.load(&sleeping).await.unwrap().unwrap().meta.status, RunStatus::Cancelled);
    assert_eq!(orders.load(&waiting).await.unwrap().unwrap().meta.status, RunStatus::Cancelled);
    assert_eq!(orders.load(&charged).await.unwrap().unwrap().meta.status, RunStatus::Completed);
    let rerun_id = rerun.to_string();
    receive_until(&sqs, &timer_queue, "the rerun's resume on hello's timer queue", |bodies| {
        bodies.iter().any(|b| b["cairn"] == "resume" && b["function_id"] == "hello" && b["run_id"] == rerun_id.as_str())
    })
    .await;
    let cancelled_events = receive_until(&sqs, &events_queue, "both cancellations on the bus", |bodies| {
        let runs: Vec<&str> = bodies.iter().filter_map(|b| b["detail"]["data"]["run_id"].as_str()).collect();
        runs.contains(&"run_hello_sleeping") && runs.contains(&"run_order_waiting")
    })
    .await;
    assert!(cancelled_events.iter().all(|b| b["detail-type"] == "inngest/function.cancelled"), "{cancelled_events:?}");
    assert_eq!(cancelled_events[0]["detail"]["data"]["error"]["message"], "function cancelled");

    // The CLI against the console: invoke, rerun, refusals, and a bulk replay.
    let (ok, invoked, stderr) = cairn(&url, &["invoke", "hello", "--data", r#"{"x": 1}"#]);
    assert!(ok, "{stderr}");
    let invoked_run = RunId::new(invoked.strip_prefix("invoked hello: ").unwrap());
    let invoked_head = hello.load(&invoked_run).await.unwrap().unwrap().meta;
    assert_eq!((invoked_head.event.name.as_str(), &invoked_head.event.data), ("app/my.event", &json!({"x": 1})));
    let invoked_id = invoked_run.to_string();
    receive_until(&sqs, &timer_queue, "the invoked run's resume", |bodies| {
        bodies.iter().any(|b| b["run_id"] == invoked_id.as_str())
    })
    .await;
    let (ok, rerun_text, _) = cairn(&url, &["runs", "rerun", failed.as_str(), "--from", "failed"]);
    assert!(ok && rerun_text.starts_with("rerun of run_hello_failed from failed: run_"), "{rerun_text}");
    let (ok, _, refused) = cairn(&url, &["runs", "cancel", charged.as_str()]);
    assert_eq!((ok, refused.as_str()), (false, "cairn: run `run_charge_done` already ended completed"));
    let (ok, _, refused) = cairn(&url, &["runs", "rerun", sleeping.as_str(), "--from", "failed"]);
    assert_eq!(
        (ok, refused.as_str()),
        (false, "cairn: run `run_hello_sleeping` has no failed step; rerun it from the start")
    );
    let (ok, _, refused) = cairn(&url, &["runs", "cancel", "run_nobody"]);
    assert_eq!((ok, refused.as_str()), (false, "cairn: no run `run_nobody`"));
    let (ok, report, _) =
        cairn(&url, &["runs", "replay", "--function", "order-approval", "--status", "cancelled", "--json"]);
    assert!(ok, "{report}");
    let report: Value = serde_json::from_str(&report).unwrap();
    assert_eq!((report["matched"].as_u64(), report["done"][0][0].as_str()), (Some(1), Some("run_order_waiting")));
    let replayed = RunId::new(report["done"][0][1].as_str().unwrap());
    assert_eq!(orders.load(&replayed).await.unwrap().unwrap().meta.function_id, "order-approval");
}
