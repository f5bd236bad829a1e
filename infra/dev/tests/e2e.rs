//! `cairn dev` with the real pieces: the `cairn` binary on a free port, every function under
//! `cargo lambda watch` using it as EventBridge and Scheduler and sharing its SQLite file, the aws
//! CLI's `put-events`, and the dashboard in Debian's headless Chromium. One test drives the
//! scenarios concurrently (the cron waits for the next minute meanwhile):
//! hello's 2-second sleep resumes through its SQS timer queue; order-approval's wait_for_event
//! is satisfied by a later matching event only; a cron fires and fans out through the bus;
//! cancel and rerun; the CLI; the dashboard. Stub servers stand in for Readwise only.
//! `make test` provides cargo-lambda, the aws CLI and Chromium; without them this skips (fails under CI).
#![allow(clippy::unwrap_used)] // Tests: an unwrap that fails is a failed test.

mod common;

use cairn::RunId;
use cairn::testing::StubServer;
use cairn_tests::{free_port, workspace};
use common::{DevServer, READWISE_KEYS, get, post, put_readwise_keys, until, watch_functions};
use serde_json::{Value, json};
use std::process::{Command, Stdio};

const GHOST: &str = "
  GhostFunction:
    Type: AWS::Serverless::Function
    Metadata:
      BuildProperties:
        Binary: ghost
    Properties:
      FunctionName: cairn-ghost
      Events:
        Ghost:
          Type: EventBridgeRule
          Properties:
            EventBusName: !Ref EventBus
            Pattern:
              detail-type: [app/ghost]

Outputs:";

async fn run_in(dev: &str, run_id: &str, statuses: &[&str]) -> Value {
    // Long enough for `cargo lambda watch` to compile a function on its first invocation.
    until(&format!("run {run_id} to be {statuses:?}"), 300, || async {
        let body = get(&format!("{dev}/api/runs/{run_id}")).await;
        statuses.contains(&body["run"]["status"].as_str().unwrap_or_default()).then_some(body)
    })
    .await
}

/// Waits until every delivery of an event is done (so whatever it does has happened).
async fn delivered(dev: &str, event_id: &str) -> Value {
    until(&format!("event {event_id} to be delivered"), 300, || async {
        let body = get(&format!("{dev}/api/events/{event_id}")).await;
        let invocations = body["invocations"].as_array().cloned().unwrap_or_default();
        (!invocations.is_empty() && invocations.iter().all(|i| i["status"] == "ok")).then_some(body)
    })
    .await
}

/// `aws events put-events` through the dev server; returns the envelope ids.
fn put_events(aws: &str, dev: &str, entries: &[(&str, Value)]) -> Vec<String> {
    let entries: Vec<Value> = entries
        .iter()
        .map(|(name, detail)| json!({"EventBusName": "cairn", "Source": "tests", "DetailType": name, "Detail": detail.to_string()}))
        .collect();
    let output = Command::new(aws)
        .args(["events", "put-events", "--endpoint-url", dev, "--output", "json", "--entries"])
        .arg(Value::Array(entries).to_string())
        .env("AWS_ACCESS_KEY_ID", "cairn-dev")
        .env("AWS_SECRET_ACCESS_KEY", "cairn-dev")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .output()
        .unwrap();
    assert!(output.status.success(), "put-events failed: {}", String::from_utf8_lossy(&output.stderr));
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(answer["FailedEntryCount"], 0, "{answer}");
    answer["Entries"].as_array().unwrap().iter().map(|e| e["EventId"].as_str().unwrap().to_string()).collect()
}

fn cairn(dev: &str, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_cairn")).args(args).env("CAIRN_DEV_URL", dev).output().unwrap();
    assert!(output.status.success(), "cairn {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dev_server_drives_the_functions_like_aws_does() {
    use cairn_tests::tools;
    let (Some(cargo_lambda), Some(venv), Some(_chromium)) =
        (tools::cargo_lambda(), tools::aws_cli_venv(), tools::chromium())
    else {
        return;
    };
    let aws = format!("{venv}/bin/aws");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("dev.db").display().to_string();
    // The project's template with the daily cron every minute, so the test sees it fire.
    let template = std::fs::read_to_string(format!("{}/template.yaml", workspace()))
        .unwrap()
        .replace("ScheduleExpression: cron(0 3 * * ? *)", "ScheduleExpression: cron(* * * * ? *)")
        // A function whose binary does not exist: its deliveries fail, once, naming it.
        .replace("\nOutputs:", GHOST);
    let template_path = dir.path().join("template.yaml").display().to_string();
    std::fs::write(&template_path, template).unwrap();

    // The users endpoint lists ids only; each user's key is in (the dev server's) SSM.
    let users = StubServer::start(|_| (200, json!([{"userId": "u1"}, {"userId": "u2"}]).to_string())).await;
    let readwise =
        StubServer::start(|_| (200, json!({"count": 2, "next": null, "results": [{"id": 1}, {"id": 2}]}).to_string()))
            .await;
    let app = StubServer::start(|_| (200, "{}".into())).await;

    // Start the dev server first (its port goes into the functions' environment).
    let watch_port = free_port();
    let dev = DevServer::start(&template_path, &db, &format!("http://127.0.0.1:{watch_port}"));
    let url = dev.url.clone();
    let extra = [
        ("HELLO_SLEEP", "2s".to_string()),
        // Every sleep goes through the timer queue, none in process.
        ("CAIRN_SLEEP_THRESHOLD_SECS", "0".to_string()),
        ("READWISE_USERS_URL", users.url().to_string()),
        ("READWISE_BASE_URL", readwise.url().to_string()),
        ("READWISE_CALLBACK_URL", format!("{}/count", app.url())),
        ("READWISE_KEY_PARAMETER_PREFIX", READWISE_KEYS.to_string()),
    ];
    put_readwise_keys(&url, &[("u1", "k1"), ("u2", "k2")]).await;
    let watch = watch_functions(&cargo_lambda, watch_port, &url, &db, &extra);
    assert_eq!(get(&format!("{url}/api/health")).await["server"], "cairn-dev");

    let hello = async {
        let ids = put_events(&aws, &url, &[("app/my.event", json!({"user": "ann"}))]);
        let run_id = RunId::for_event("hello", &ids[0]).to_string();
        let body = run_in(&url, &run_id, &["completed"]).await;
        assert_eq!(body["run"]["output"], json!({"success": true}));
        let steps: Vec<(&str, &str, &str)> = body["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["name"].as_str().unwrap(), s["kind"].as_str().unwrap(), s["status"].as_str().unwrap()))
            .collect();
        assert_eq!(steps, [("step-name", "run", "completed"), ("wait", "sleep", "completed")]);
        assert_eq!(body["steps"][0]["output"], json!({"success": true}));
        let slept = body["steps"][1]["ended_at"].as_i64().unwrap() - body["steps"][1]["started_at"].as_i64().unwrap();
        assert!(slept >= 2_000, "the sleep ended after {slept} ms, before its 2 s");
        // The wake-up went through the dev server's SQS: hello's timer queue delivered it.
        let invocations = get(&format!("{url}/api/invocations?limit=500")).await;
        let woke = invocations["invocations"].as_array().unwrap().iter().any(|i| {
            i["function"] == "hello"
                && i["cause"] == "sqs:timer-hello"
                && i["payload"]["Records"][0]["body"].as_str().unwrap_or_default().contains(run_id.as_str())
        });
        assert!(woke, "no timer message woke {run_id}: {invocations}");
        run_id
    };

    let order = async {
        let ids = put_events(&aws, &url, &[("app/order.placed", json!({"order_id": "o-7", "amount": 25}))]);
        let run_id = RunId::for_event("order-approval", &ids[0]).to_string();
        run_in(&url, &run_id, &["waiting"]).await;
        // Another order's approval does not resume it.
        let other = put_events(&aws, &url, &[("app/order.approved", json!({"order_id": "o-8", "by": "bob"}))]);
        delivered(&url, &other[0]).await;
        assert_eq!(get(&format!("{url}/api/runs/{run_id}")).await["run"]["status"], "waiting");
        put_events(&aws, &url, &[("app/order.approved", json!({"order_id": "o-7", "by": "ann"}))]);
        let body = run_in(&url, &run_id, &["completed"]).await;
        // Charged by invoking order-charge, its result routed back by the template's rules.
        assert_eq!(
            body["run"]["output"],
            json!({"order_id": "o-7", "shipped": true, "approved_by": "ann", "charged": 25.0})
        );
        let waited = &body["steps"][1];
        assert_eq!(
            (waited["name"].as_str(), waited["status"].as_str()),
            (Some("wait-for-approval"), Some("completed"))
        );
        assert_eq!(waited["output"]["data"], json!({"order_id": "o-7", "by": "ann"}));
    };

    let cancel = async {
        let ids = put_events(&aws, &url, &[("app/order.placed", json!({"order_id": "o-9"}))]);
        let run_id = RunId::for_event("order-approval", &ids[0]).to_string();
        run_in(&url, &run_id, &["waiting"]).await;
        let (status, body) = post(&format!("{url}/api/runs/{run_id}/cancel"), json!({})).await;
        assert_eq!((status, body), (200, json!({"run_id": run_id, "status": "cancelled"})));
        let approved = put_events(&aws, &url, &[("app/order.approved", json!({"order_id": "o-9", "by": "ann"}))]);
        delivered(&url, &approved[0]).await;
        let body = get(&format!("{url}/api/runs/{run_id}")).await;
        assert_eq!(body["run"]["status"], "cancelled");
        assert_eq!(body["steps"].as_array().unwrap().len(), 2, "nothing ran after the cancel: {body}");
        let (status, body) = post(&format!("{url}/api/runs/{run_id}/cancel"), json!({})).await;
        assert_eq!((status, body), (409, json!({"error": format!("run `{run_id}` already ended cancelled")})));
    };

    let cron = async {
        // The minute's cron fires readwise-daily-sync, which fans out through the bus (it may fire
        // again in a later minute while the functions compile; each firing is a run of its own).
        let daily = until("a cron run and the fetch-books runs it started to complete", 300, || async {
            let daily = get(&format!("{url}/api/runs?function=readwise-daily-sync&status=completed")).await;
            let fetched = get(&format!("{url}/api/runs?function=readwise-fetch-books&status=completed")).await;
            let (daily, fetched) =
                (daily["runs"].as_array().unwrap().clone(), fetched["runs"].as_array().unwrap().clone());
            (!daily.is_empty() && fetched.len() >= 2 * daily.len()).then_some(daily)
        })
        .await;
        for run in &daily {
            assert_eq!(
                (&run["output"], run["event_name"].as_str()),
                (&json!({"sent": 2}), Some(cairn::SCHEDULED_EVENT))
            );
        }
        let mut counts: Vec<Value> = app.requests().iter().map(|r| serde_json::from_str(&r.body).unwrap()).collect();
        counts.sort_by_key(|c| c["userId"].as_str().unwrap().to_string());
        counts.dedup();
        assert_eq!(counts, [json!({"userId": "u1", "count": 2}), json!({"userId": "u2", "count": 2})]);
    };

    let ghost = async {
        let ids = put_events(&aws, &url, &[("app/ghost", json!({}))]);
        let delivery = until("the ghost delivery to fail", 60, || async {
            let body = get(&format!("{url}/api/events/{}", ids[0])).await;
            (body["invocations"][0]["status"] == "failed").then(|| body["invocations"][0].clone())
        })
        .await;
        assert_eq!(delivery["attempts"], 1, "no such function: not retried");
        let error = delivery["error"].as_str().unwrap();
        assert!(
            error.starts_with("function `ghost` is not served by cargo lambda watch: that function doesn't exist as a binary in your project."),
            "{error}"
        );
    };

    let (hello_run, (), (), (), ()) = tokio::join!(hello, order, cancel, cron, ghost);

    // Rerun from the start: a new run of the same event completes the same way.
    let (status, body) = post(&format!("{url}/api/runs/{hello_run}/rerun"), json!({"from": "start"})).await;
    assert_eq!(status, 200, "{body}");
    let rerun = body["run_id"].as_str().unwrap().to_string();
    assert_ne!(rerun, hello_run);
    assert_eq!(run_in(&url, &rerun, &["completed"]).await["run"]["output"], json!({"success": true}));
    let (status, body) = post(&format!("{url}/api/runs/{hello_run}/rerun"), json!({"from": "failed"})).await;
    assert_eq!(
        (status, body),
        (409, json!({"error": format!("run `{hello_run}` has no failed step; rerun it from the start")}))
    );

    // The CLI reads the same state.
    let listed = cairn(&url, &["runs", "--function", "hello", "--status", "completed"]);
    assert!(listed.starts_with("RUN "), "{listed}");
    assert!(listed.contains(&hello_run) && listed.contains(&rerun), "{listed}");
    assert!(listed.lines().skip(1).all(|line| line.contains(" hello ") && line.contains(" completed ")), "{listed}");
    let shown = cairn(&url, &["runs", "show", &hello_run]);
    assert!(shown.starts_with("hello completed "), "{shown}");
    assert!(shown.contains("  ✓ step-name ") && shown.contains("{\"success\":true}"), "{shown}");
    assert!(shown.contains("  ✓ wait ") && shown.trim_end().ends_with("output   {\"success\":true}"), "{shown}");
    let sent = cairn(&url, &["send", "app/order.placed", "--data", r#"{"order_id": "o-cli"}"#, "--wait"]);
    assert!(sent.starts_with("sent app/order.placed event "), "{sent}");
    assert!(sent.contains("routed to order-approval") && sent.contains("waiting order-approval run_"), "{sent}");
    let bad = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["runs", "--status", "asleep"])
        .env("CAIRN_DEV_URL", &url)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&bad.stderr).trim(),
        "cairn: unknown status `asleep`: expected running, sleeping, waiting, completed, failed or cancelled"
    );

    // The dashboard in headless Chromium.
    let shots = format!("{}/target/dashboard-screenshots", workspace());
    let script = format!("{}/tests/dashboard", env!("CARGO_MANIFEST_DIR"));
    let waiting = get(&format!("{url}/api/runs?function=order-approval&status=waiting")).await;
    let waiting = waiting["runs"][0]["run_id"].as_str().unwrap().to_string();
    let output = Command::new("node")
        .args(["dashboard.mjs", &url, &hello_run, &shots, &waiting])
        .current_dir(&script)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let seen: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(seen["steps"], json!([["step-name", "completed"], ["wait", "completed"]]));
    assert_eq!(seen["firstStepOutput"], json!({"success": true}));
    assert_eq!((seen["runStatus"].as_str(), &seen["runOutput"]), (Some("completed"), &json!({"success": true})));
    // Every binary of the project's list (a template function each), in template order, then the
    // run of a function the template no longer has.
    let mut listed: Vec<String> = cairn_functions::lambdas().iter().map(|l| l.binary().to_string()).collect();
    listed.push("ghost".into());
    assert_eq!(seen["functions"], json!(listed));
    assert_eq!(seen["cancelled"], json!({"status": "cancelled", "cancelDisabled": true}));
    assert_eq!(get(&format!("{url}/api/runs/{waiting}")).await["run"]["status"], "cancelled");
    let rerun_in_ui = seen["rerunRun"].as_str().unwrap();
    assert_ne!(rerun_in_ui, hello_run);
    assert_eq!(get(&format!("{url}/api/runs/{rerun_in_ui}")).await["run"]["output"], json!({"success": true}));
    assert!(seen["badJsonError"].as_str().unwrap().starts_with("Invalid JSON: "), "{seen}");
    assert_eq!(seen["invokedEvent"], json!({"from": "dashboard"}));
    assert_eq!(seen["invokedSteps"], json!([["step-name", "completed"], ["wait", "completed"]]));
    assert_eq!(seen["eventPayload"], json!({"from": "dashboard"}));
    assert_eq!(seen["errors"], json!([]));
    let invoked = get(&format!("{url}/api/runs/{}", seen["invokedRun"].as_str().unwrap())).await;
    assert_eq!(invoked["run"]["status"], "completed");
    for shot in ["1-runs", "2-timeline", "3-invoke", "4-invoked-run", "5-events", "6-cancelled", "7-rerun"] {
        assert!(std::fs::metadata(format!("{shots}/{shot}.png")).unwrap().len() > 10_000, "{shot}.png is empty");
    }

    // Nothing accepted was lost: every delivery succeeded (but the ghost's), once settled (the
    // every-minute cron and reconcilers may have one in flight right now).
    let invocations = common::settled_invocations(&url, 1_000).await;
    let failed: Vec<&Value> = invocations.iter().filter(|i| i["status"] != "ok" && i["function"] != "ghost").collect();
    assert!(failed.is_empty(), "{failed:#?}");
    drop(watch);
    drop(dev);
}
