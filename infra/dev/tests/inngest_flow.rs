//! `cairn dev -u URL` enforces the flow control an app on the official TypeScript SDK declares
//! (tests/conformance-ts/flow.mjs): the same admission, queues, listeners and timeouts as a Rust
//! function's, with the dashboard saying why a run is not running (its API, and the "Why" line in
//! headless Chromium). Periods are seconds long, so the scenarios run in real time; no Rust
//! function is involved (no `cargo lambda watch`).
#![allow(clippy::unwrap_used)] // Tests: an unwrap that fails is a failed test.

mod common;

use cairn::RunId;
use cairn_tests::{free_port, workspace};
use common::{DevServer, NodeApp, get, run_by_id, run_of, send, until};
use serde_json::{Value, json};
use std::process::Command;

fn reason(body: &Value) -> &str {
    body["run"]["reason"].as_str().unwrap_or_default()
}

fn first_step_started(body: &Value) -> i64 {
    body["steps"].as_array().unwrap().iter().map(|step| step["started_at"].as_i64().unwrap()).min().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cairn_dev_enforces_the_flow_control_a_typescript_app_syncs() {
    let app_dir = format!("{}/tests/conformance-ts", workspace());
    let Some(_) = cairn_tests::tools::inngest_npm(&app_dir) else { return };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("dev.db").display().to_string();
    let app_port = free_port();
    let app_url = format!("http://127.0.0.1:{app_port}/api/inngest");
    // No function binary runs: nothing listens on the Lambda URL.
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let dev = DevServer::start_with(&format!("{}/template.yaml", workspace()), &db, &nowhere, &["-u", &app_url]);
    let url = dev.url.clone();
    let _app = NodeApp::start("flow.mjs", &app_dir, app_port, &url);
    until("the app to sync", 30, || async {
        let list = get(&format!("{url}/api/functions")).await;
        list["functions"].as_array().unwrap().iter().any(|f| f["id"] == "flow-throttled").then_some(())
    })
    .await;

    // Throttle, 1 per 2 s: three events at once start 2 s apart, the later ones queued meanwhile.
    let throttled = [
        send(&url, "flow/throttled", json!({"n": 1})).await,
        send(&url, "flow/throttled", json!({"n": 2})).await,
        send(&url, "flow/throttled", json!({"n": 3})).await,
    ];
    // Concurrency 1 per user: three runs of 600 ms steps for `a` never overlap; `b` is not held up.
    let mut serial = Vec::new();
    for (n, user) in [(1, "a"), (2, "a"), (3, "a"), (4, "b")] {
        serial.push(send(&url, "flow/serial", json!({"n": n, "user": user})).await);
    }
    // Rate limit, 1 per minute per user.
    let rate = [
        send(&url, "flow/rate", json!({"user": "a"})).await,
        send(&url, "flow/rate", json!({"user": "a"})).await,
        send(&url, "flow/rate", json!({"user": "b"})).await,
    ];
    // Idempotency per cart.
    let charges = [
        send(&url, "flow/charge", json!({"cart": "c1"})).await,
        send(&url, "flow/charge", json!({"cart": "c1"})).await,
    ];
    // Singleton (skip): the second run for `a` is skipped while the first sleeps.
    let single = send(&url, "flow/single", json!({"user": "a"})).await;
    run_of(&url, "flow-singleton", &single, &["sleeping"]).await;
    let single_again = send(&url, "flow/single", json!({"user": "a"})).await;
    // Singleton (cancel): the second run replaces the first.
    let replaced = send(&url, "flow/replace", json!({"n": 1})).await;
    run_of(&url, "flow-replace", &replaced, &["sleeping"]).await;
    let replacing = send(&url, "flow/replace", json!({"n": 2})).await;
    // cancelOn: deleting user `a` cancels a's sleeping run, not b's.
    let (start_a, start_b) =
        (send(&url, "flow/start", json!({"user": "a"})).await, send(&url, "flow/start", json!({"user": "b"})).await);
    run_of(&url, "flow-cancellable", &start_a, &["sleeping"]).await;
    run_of(&url, "flow-cancellable", &start_b, &["sleeping"]).await;
    let deleted = send(&url, "flow/user.deleted", json!({"user": "a"})).await;
    // timeouts.finish 2 s: cancelled while it sleeps 30 s.
    let bounded = send(&url, "flow/bounded", json!({})).await;
    // Debounce 2 s per user: a's three events start one run, with the last; b's its own.
    let mut typed = Vec::new();
    for (n, user) in [(1, "a"), (2, "a"), (3, "b"), (4, "a")] {
        typed.push(send(&url, "flow/typed", json!({"n": n, "user": user})).await);
    }
    let quiet = send(&url, "flow/quiet", json!({"n": 1})).await;
    // Signals: one waiter per signal; another run's step.sendSignal and the dashboard's API
    // deliver them.
    let awaiting = send(&url, "flow/approval", json!({"id": 1})).await;
    run_of(&url, "flow-approval", &awaiting, &["waiting"]).await;
    let rival = send(&url, "flow/approval", json!({"id": 1})).await;
    let by_api = send(&url, "flow/approval", json!({"id": 2})).await;
    run_of(&url, "flow-approval", &by_api, &["waiting"]).await;
    let by_page = send(&url, "flow/approval", json!({"id": 3})).await;
    let approve = send(&url, "flow/approve", json!({"id": 1, "by": "ann"})).await;
    // group.parallel race: the first step in the memo wins; the run goes on after it.
    let race = send(&url, "flow/race", json!({})).await;
    // Batches of 3: four events make one full batch at once and one of one event 2 s later.
    let mut batched = Vec::new();
    for n in 1..=4 {
        batched.push(send(&url, "flow/batched", json!({"n": n})).await);
    }
    // Throttle, 1 per minute: of two events, one waits its turn, queued, for the rest of the test.
    let gated = [send(&url, "flow/gated", json!({"n": 1})).await, send(&url, "flow/gated", json!({"n": 2})).await];

    let third = run_of(&url, "flow-throttled", &throttled[2], &["queued", "completed"]).await;
    if third["run"]["status"] == "queued" {
        assert!(reason(&third).starts_with("queued by throttle, "), "{third}");
    }
    let mut starts = Vec::new();
    for (n, event) in throttled.iter().enumerate() {
        let body = run_of(&url, "flow-throttled", event, &["completed"]).await;
        assert_eq!(body["run"]["output"], json!(n + 1));
        starts.push(first_step_started(&body));
    }
    let created =
        run_of(&url, "flow-throttled", &throttled[0], &["completed"]).await["run"]["created_at"].as_i64().unwrap();
    for (n, start) in starts.iter().enumerate() {
        // The limiter admits the n-th start no earlier than n periods after the first admission,
        // which came after the first run was created.
        assert!(
            *start >= created + 2_000 * n as i64,
            "run {n} started {} ms after the first was created",
            start - created
        );
    }

    let mut spans = Vec::new();
    for (n, event) in serial.iter().enumerate() {
        let body = run_of(&url, "flow-serial", event, &["completed"]).await;
        assert_eq!(body["run"]["output"], json!(n + 1));
        let step = &body["steps"][0];
        spans.push((step["started_at"].as_i64().unwrap(), step["ended_at"].as_i64().unwrap()));
    }
    for pair in spans[..3].windows(2) {
        assert!(pair[0].1 <= pair[1].0, "user a's steps overlap: {spans:?}");
    }
    assert!(spans[3].0 < spans[2].0, "user b waited behind user a: {spans:?}");

    assert_eq!(run_of(&url, "flow-rate", &rate[0], &["completed"]).await["run"]["output"], json!("a"));
    let limited = run_of(&url, "flow-rate", &rate[1], &["skipped"]).await;
    assert_eq!(reason(&limited), "skipped by rate_limit for key `a`");
    assert_eq!(run_of(&url, "flow-rate", &rate[2], &["completed"]).await["run"]["output"], json!("b"));

    assert_eq!(run_of(&url, "flow-idempotent", &charges[0], &["completed"]).await["run"]["output"], json!("c1"));
    let duplicate = run_of(&url, "flow-idempotent", &charges[1], &["skipped"]).await;
    assert_eq!(reason(&duplicate), "skipped by idempotency for key `c1`");

    let first = RunId::for_event("flow-singleton", &single);
    let skipped = run_of(&url, "flow-singleton", &single_again, &["skipped"]).await;
    assert_eq!(reason(&skipped), format!("skipped by singleton: run `{first}` is active for key `a`"));
    assert_eq!(run_of(&url, "flow-singleton", &single, &["completed"]).await["run"]["output"], json!("done"));

    let old = run_of(&url, "flow-replace", &replaced, &["cancelled"]).await;
    let new = RunId::for_event("flow-replace", &replacing);
    assert_eq!(reason(&old), format!("singleton: replaced by run `{new}`"));
    run_of(&url, "flow-replace", &replacing, &["sleeping"]).await;

    let cancelled = run_of(&url, "flow-cancellable", &start_a, &["cancelled"]).await;
    assert_eq!(reason(&cancelled), format!("cancel_on: event `flow/user.deleted` ({deleted})"));
    let events = get(&format!("{url}/api/events?name=inngest/function.cancelled")).await;
    let cancelled_runs: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["envelope"]["detail"]["data"]["run_id"].as_str())
        .collect();
    assert!(cancelled_runs.contains(&RunId::for_event("flow-cancellable", &start_a).as_str()), "{events}");
    assert_eq!(run_of(&url, "flow-cancellable", &start_b, &["sleeping"]).await["run"]["reason"], Value::Null);

    let timed_out = run_of(&url, "flow-bounded", &bounded, &["cancelled"]).await;
    assert_eq!(reason(&timed_out), "timeouts.finish: not finished 2s after its first step started");
    assert_eq!(timed_out["steps"][0]["output"], json!("started"));
    let ended = timed_out["run"]["ended_at"].as_i64().unwrap();
    assert!(ended >= first_step_started(&timed_out) + 2_000, "{timed_out}");

    let gates = [
        run_of(&url, "flow-gated", &gated[0], &["completed", "queued"]).await,
        run_of(&url, "flow-gated", &gated[1], &["completed", "queued"]).await,
    ];
    let (done, queued) = if gates[0]["run"]["status"] == "completed" { (0, 1) } else { (1, 0) };
    assert_eq!(gates[done]["run"]["output"], json!(done + 1));
    let queued_run = RunId::for_event("flow-gated", &gated[queued]);
    let waiting = get(&format!("{url}/api/runs/{queued_run}")).await;
    assert_eq!(waiting["run"]["status"], "queued", "{waiting}");
    // The limiter's next start is a minute after the first was admitted (while that run was
    // driven, between its creation and its end); the dashboard shows it to the second.
    let at = |field: &str| gates[done]["run"][field].as_i64().unwrap() + 60_000;
    let why = reason(&waiting).to_string();
    assert!(why.starts_with("queued by throttle, 0 ahead, until "), "{why}");
    let turn_at = chrono::DateTime::parse_from_rfc3339(why.trim_start_matches("queued by throttle, 0 ahead, until "))
        .unwrap()
        .timestamp_millis();
    assert!(turn_at > at("created_at") - 1_000 && turn_at <= at("ended_at"), "{why} vs {}", gates[done]);

    // Debounce: a's window started one run with its last event; the placeholders name their runs.
    let a_window = RunId::for_event("flow-debounced", &typed[0]);
    let a_run = cairn::flow::fired_run(&a_window, "flow-debounced");
    let b_window = RunId::for_event("flow-debounced", &typed[2]);
    let b_run = cairn::flow::fired_run(&b_window, "flow-debounced");
    let superseded = run_by_id(&url, &a_window, &["skipped"]).await;
    assert_eq!(reason(&superseded), format!("debounced for key `a`: the window's run is `{a_run}`"));
    for (run, output) in [(&a_run, 4), (&b_run, 3)] {
        let body = run_by_id(&url, run, &["completed"]).await;
        assert_eq!(body["run"]["output"], json!(output), "{body}");
    }
    for later in [&typed[1], &typed[3]] {
        let status = get(&format!("{url}/api/runs/{}", RunId::for_event("flow-debounced", later))).await;
        assert_eq!(status["run"], Value::Null, "an event that joined a window leaves no run: {status}");
    }
    // Signals: the rival failed naming the waiter; the approver's signal reached the waiter.
    let waiter = RunId::for_event("flow-approval", &awaiting);
    let failed = run_of(&url, "flow-approval", &rival, &["failed"]).await;
    let conflict = format!("step `approval`: signal `approve-1` is already awaited by run `{waiter}`");
    assert_eq!(failed["steps"][0]["error"]["message"], json!(conflict), "{failed}");
    let approved = run_of(&url, "flow-approval", &awaiting, &["completed"]).await;
    assert_eq!(approved["run"]["output"], json!({"signal": "approve-1", "data": {"by": "ann"}}));
    let approver = run_of(&url, "flow-approver", &approve, &["completed"]).await;
    assert_eq!(approver["run"]["output"], json!({"runId": waiter.as_str()}));
    let (status, body) = common::post(&format!("{url}/api/signals"), json!({"signal": "approve-2", "data": 42})).await;
    assert_eq!((status, &body["data"]["run_id"]), (200, &json!(RunId::for_event("flow-approval", &by_api))), "{body}");
    let approved = run_of(&url, "flow-approval", &by_api, &["completed"]).await;
    assert_eq!(approved["run"]["output"], json!({"signal": "approve-2", "data": 42}));
    let (status, body) = common::post(&format!("{url}/api/signals"), json!({"signal": "approve-9"})).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("no run waits for signal `approve-9`")));
    let raced = run_of(&url, "flow-racer", &race, &["completed"]).await;
    assert_eq!(raced["run"]["output"], json!("fast won"), "{raced}");
    let names: Vec<&str> = raced["steps"].as_array().unwrap().iter().filter_map(|step| step["name"].as_str()).collect();
    assert_eq!(names, ["fast", "slow", "after"], "{raced}");
    // Batches: the app's handler got every event of its batch, the first as `event`.
    let mut batch_runs = Vec::new();
    for (first, expected) in
        [(&batched[0], json!({"first": 1, "all": [1, 2, 3]})), (&batched[3], json!({"first": 4, "all": [4]}))]
    {
        let run = cairn::flow::fired_run(&RunId::for_event("flow-batched", first), "flow-batched");
        let body = run_by_id(&url, &run, &["completed"]).await;
        assert_eq!(body["run"]["output"], expected, "{body}");
        batch_runs.push((run, body["run"]["started_by"].as_str().unwrap_or_default().to_string()));
    }
    assert_eq!((batch_runs[0].1.as_str(), batch_runs[1].1.as_str()), ("batch of 3 events", "batch of 1 event"));
    let quiet_window = RunId::for_event("flow-quiet", &quiet);
    let open = get(&format!("{url}/api/runs/{quiet_window}")).await;
    assert_eq!(open["run"]["status"], "queued", "{open}");
    let open_why = reason(&open).to_string();
    assert!(open_why.starts_with("debounced until ") && open_why.ends_with(" (1 event)"), "{open_why}");

    // The dashboard says the same, in headless Chromium.
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "Debian's chromium is missing: apt-get install -y chromium (make test installs it)"
    );
    let shown = [
        (RunId::for_event("flow-singleton", &single_again), "skipped", reason(&skipped).to_string()),
        (RunId::for_event("flow-rate", &rate[1]), "skipped", reason(&limited).to_string()),
        (RunId::for_event("flow-replace", &replaced), "cancelled", reason(&old).to_string()),
        (RunId::for_event("flow-cancellable", &start_a), "cancelled", reason(&cancelled).to_string()),
        (RunId::for_event("flow-bounded", &bounded), "cancelled", reason(&timed_out).to_string()),
        (queued_run, "queued", why),
        (a_window, "skipped", reason(&superseded).to_string()),
        (quiet_window, "queued", open_why),
    ];
    let mut expected: Vec<(RunId, Value)> =
        shown.into_iter().map(|(run, status, why)| (run, json!({"status": status, "why": why}))).collect();
    // A batch's run says what started it.
    expected.push((
        batch_runs[0].0.clone(),
        json!({"status": "completed", "why": null, "started_by": "batch of 3 events"}),
    ));
    let output = Command::new("node")
        .arg("why.mjs")
        .arg(&url)
        .arg(format!("{}/target/dashboard-screenshots", workspace()))
        .args(expected.iter().map(|(run, _)| run.to_string()))
        .current_dir(format!("{}/tests/dashboard", env!("CARGO_MANIFEST_DIR")))
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let seen: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&output.stderr)));
    assert!(output.status.success(), "{seen} {}", String::from_utf8_lossy(&output.stderr));
    for (run, shown) in &expected {
        assert_eq!(&seen["runs"][run.as_str()], shown, "run {run}");
    }
    assert_eq!(seen["errors"], json!([]));

    // A run waiting for a signal: its page sends it.
    let page_run = RunId::for_event("flow-approval", &by_page);
    run_of(&url, "flow-approval", &by_page, &["waiting"]).await;
    let output = Command::new("node")
        .arg("signal.mjs")
        .arg(&url)
        .arg(format!("{}/target/dashboard-screenshots", workspace()))
        .arg(page_run.to_string())
        .arg(r#"{"by": "the dashboard"}"#)
        .current_dir(format!("{}/tests/dashboard", env!("CARGO_MANIFEST_DIR")))
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let clicked: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&output.stderr)));
    assert!(output.status.success(), "{clicked} {}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(clicked, json!({"signal": "approve-3", "toast": format!("Signal sent to {page_run}"), "errors": []}));
    let approved = run_of(&url, "flow-approval", &by_page, &["completed"]).await;
    assert_eq!(approved["run"]["output"], json!({"signal": "approve-3", "data": {"by": "the dashboard"}}));

    // Cancelled while queued, a run leaves its throttle queue (woken once more, after its
    // wake-ups were deleted): the next event's run is first in line.
    let (status, body) = common::post(&format!("{url}/api/runs/{}/cancel", expected[5].0), json!({})).await;
    assert_eq!(status, 200, "{body}");
    until("the cancelled run to be woken to leave its queue", 30, || async {
        let invocations = get(&format!("{url}/api/invocations?limit=1000")).await;
        let invocations = invocations["invocations"].as_array().unwrap().clone();
        invocations.iter().any(|i| i["cause"] == "leave-queues" && i["status"] == "ok").then_some(())
    })
    .await;
    let next = send(&url, "flow/gated", json!({"n": 3})).await;
    let behind = run_of(&url, "flow-gated", &next, &["queued"]).await;
    assert!(reason(&behind).starts_with("queued by throttle, 0 ahead, until "), "{behind}");
}
