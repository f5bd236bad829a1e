//! Differential tests against the official TypeScript SDK: the Rust conformance app and its
//! TypeScript twin (npm `inngest`, tests/conformance-ts) get the same executor requests, in dev
//! mode and in signed mode, and must answer alike in status codes, op codes, step ids, names,
//! options and data (not in headers naming the SDK, timing, stacks or formatting).
//! `make test` installs the npm package; without it (or without node) these skip.
#![allow(clippy::unwrap_used)] // Tests: an unwrap that fails is a failed test.

use cairn::StepId;
use cairn::testing::StubServer;
use cairn_http::{SigningKey, signing};
use cairn_tests::{free_port, spawn_listening, spawn_log};
use serde_json::{Value, json};
use std::process::{Child, Command};

const KEY: &str = "signkey-test-8ee2262a15e8d3c42d6a840db7af3de2aab08ef632b32a37a687f24b34dba3ff";

struct App {
    child: Child,
    url: String,
    /// What the app printed: a failed call shows it.
    log: std::path::PathBuf,
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(mut command: Command, signed: bool, event_api: &str, what: &str) -> App {
    let port = free_port();
    command.env("PORT", port.to_string());
    // Both send events to the same stub of Inngest's event API.
    command.env("INNGEST_BASE_URL", event_api).env("INNGEST_EVENT_KEY", "test-key");
    if signed {
        command.env("INNGEST_DEV", "0").env("INNGEST_SIGNING_KEY", KEY);
    } else {
        command.env("INNGEST_DEV", "1");
    }
    let child = spawn_listening(command, port, what);
    App { child, url: format!("http://127.0.0.1:{port}/api/inngest"), log: spawn_log(what, port) }
}

fn apps(signed: bool, event_api: &str) -> Option<(App, App)> {
    let ts = format!("{}/conformance-ts", env!("CARGO_MANIFEST_DIR"));
    cairn_tests::tools::inngest_npm(&ts)?;
    let rust = start(Command::new(env!("CARGO_BIN_EXE_conformance-app")), signed, event_api, "conformance-app");
    let mut node = Command::new("node");
    node.arg(format!("{ts}/app.mjs")).current_dir(&ts);
    Some((rust, start(node, signed, event_api, "conformance-ts")))
}

/// What is compared of an answer.
#[derive(Debug, PartialEq)]
struct Answer {
    status: u16,
    no_retry: Option<String>,
    body: Value,
}

fn strip(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for key in ["timing", "stack", "__serialized", "cause"] {
                map.remove(key);
            }
            map.values_mut().for_each(strip);
        }
        Value::Array(items) => items.iter_mut().for_each(strip),
        _ => {}
    }
}

async fn call(client: &reqwest::Client, app: &App, fn_id: &str, step: &str, body: &Value, signed: bool) -> Answer {
    let text = serde_json_canonicalizer::to_string(body).unwrap();
    let mut request = client
        .post(format!("{}?fnId=conformance-{fn_id}&stepId={step}", app.url))
        .header("content-type", "application/json")
        .header("x-inngest-req-version", "2")
        .header("x-run-id", "01J0000000000000000000RUN1");
    if signed {
        let now = cairn::Clock::now(&cairn::SystemClock) / 1000;
        request = request.header("x-inngest-signature", SigningKey::new(KEY).header(text.as_bytes(), now));
    }
    let response = request.body(text).send().await.unwrap_or_else(|error| {
        let output = std::fs::read_to_string(&app.log).unwrap_or_default();
        panic!("{} did not answer: {error}; its output ({}):\n{output}", app.url, app.log.display())
    });
    let status = response.status().as_u16();
    let no_retry = response.headers().get("x-inngest-no-retry").map(|v| v.to_str().unwrap().to_string());
    let mut body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap_or(Value::Null);
    strip(&mut body);
    if status >= 400 {
        // Error bodies: what the executor reads of them.
        body = json!({"name": body["name"], "message": body["message"]});
    }
    Answer { status, no_retry, body }
}

fn body(event: &str, data: Value, steps: Value, ctx: Value) -> Value {
    let mut context = json!({"run_id": "01J0000000000000000000RUN1", "attempt": 0, "max_attempts": 3, "disable_immediate_execution": false, "use_api": false,
                             "stack": {"stack": steps.as_object().map(|s| s.keys().cloned().collect::<Vec<_>>()).unwrap_or_default(), "current": 0}});
    for (k, v) in ctx.as_object().unwrap() {
        context[k] = v.clone();
    }
    let event = json!({"name": event, "data": data, "id": "01J000000000000000000000EV", "ts": 1_700_000_000_000_i64, "user": {}});
    json!({"event": event, "events": [event], "steps": steps, "ctx": context, "version": 2, "use_api": false})
}

fn hid(name: &str) -> String {
    StepId::hash(name).to_string()
}

/// The executor requests both apps answer.
fn scenarios() -> Vec<(&'static str, &'static str, String, Value)> {
    let none = json!({});
    let list = vec![
        (
            "hello: first call runs the step",
            "hello",
            "step".to_string(),
            body("app/my.event", none.clone(), none.clone(), none.clone()),
        ),
        (
            "hello: then sleeps",
            "hello",
            "step".into(),
            body("app/my.event", none.clone(), json!({hid("step-name"): {"data": {"success": true}}}), none.clone()),
        ),
        (
            "hello: then returns",
            "hello",
            "step".into(),
            body(
                "app/my.event",
                none.clone(),
                json!({hid("step-name"): {"data": {"success": true}}, hid("wait"): null}),
                none.clone(),
            ),
        ),
        (
            "repeated: second page",
            "repeated-step",
            "step".into(),
            body(
                "test/repeat",
                json!({"userId": "u1"}),
                json!({hid("fetch-page"): {"data": {"page": 1, "count": 10}}}),
                none.clone(),
            ),
        ),
        (
            "repeated: save",
            "repeated-step",
            "step".into(),
            body(
                "test/repeat",
                json!({"userId": "u1"}),
                json!({
            hid("fetch-page"): {"data": {"page": 1, "count": 10}}, hid("fetch-page:1"): {"data": {"page": 2, "count": 10}}, hid("fetch-page:2"): {"data": {"page": 3, "count": 10}}}),
                none.clone(),
            ),
        ),
        (
            "repeated: returns",
            "repeated-step",
            "step".into(),
            body(
                "test/repeat",
                json!({"userId": "u1"}),
                json!({
            hid("fetch-page"): {"data": {"page": 1, "count": 10}}, hid("fetch-page:1"): {"data": {"page": 2, "count": 10}}, hid("fetch-page:2"): {"data": {"page": 3, "count": 10}}, hid("save-count"): {"data": 30}}),
                none.clone(),
            ),
        ),
        (
            "fan-out: lists users",
            "daily-fan-out",
            "step".into(),
            body("inngest/scheduled.timer", json!({"cron": "0 3 * * *"}), none.clone(), none.clone()),
        ),
        (
            "fan-out: plans the send",
            "daily-fan-out",
            "step".into(),
            body(
                "inngest/scheduled.timer",
                json!({"cron": "0 3 * * *"}),
                json!({hid("list-users"): {"data": ["u1", "u2"]}}),
                none.clone(),
            ),
        ),
        (
            "fan-out: returns",
            "daily-fan-out",
            "step".into(),
            body(
                "inngest/scheduled.timer",
                json!({"cron": "0 3 * * *"}),
                json!({hid("list-users"): {"data": ["u1", "u2"]}, hid("fan-out"): {"data": {"ids": ["x", "y"]}}}),
                none.clone(),
            ),
        ),
        (
            "parallel: plans both",
            "parallel",
            "step".into(),
            body("test/parallel", none.clone(), none.clone(), none.clone()),
        ),
        (
            "parallel: runs b when targeted",
            "parallel",
            hid("b"),
            body("test/parallel", none.clone(), none.clone(), json!({"disable_immediate_execution": true})),
        ),
        (
            "parallel: joins",
            "parallel",
            "step".into(),
            body(
                "test/parallel",
                none.clone(),
                json!({hid("a"): {"data": "A"}, hid("b"): {"data": "B"}}),
                none.clone(),
            ),
        ),
        (
            "flaky: first attempt errors",
            "flaky",
            "step".into(),
            body("test/flaky", none.clone(), none.clone(), json!({"attempt": 0})),
        ),
        (
            "flaky: retry succeeds",
            "flaky",
            "step".into(),
            body("test/flaky", none.clone(), none.clone(), json!({"attempt": 1})),
        ),
        ("fatal: fails for good", "fatal", "step".into(), body("test/fatal", none.clone(), none.clone(), none.clone())),
        (
            "fatal: the memoized failure fails the function",
            "fatal",
            "step".into(),
            body(
                "test/fatal",
                none.clone(),
                json!({hid("fatal-step"): {"error": {"name": "NonRetriableError", "message": "nope"}}}),
                none.clone(),
            ),
        ),
        ("waiter: waits", "waiter", "step".into(), body("test/wait", json!({"id": 7}), none.clone(), none.clone())),
        (
            "waiter: event arrived",
            "waiter",
            "step".into(),
            body(
                "test/wait",
                json!({"id": 7}),
                json!({hid("wait-approval"): {"name": "test/approved", "data": {"id": 7, "by": "ann"}, "id": "e2", "ts": 5, "user": {}}}),
                none.clone(),
            ),
        ),
        (
            "waiter: timed out",
            "waiter",
            "step".into(),
            body("test/wait", json!({"id": 7}), json!({hid("wait-approval"): null}), none.clone()),
        ),
        ("invoker: invokes", "invoker", "step".into(), body("test/invoke", none.clone(), none.clone(), none.clone())),
        (
            "invoker: returns the result",
            "invoker",
            "step".into(),
            body("test/invoke", none.clone(), json!({hid("call-double"): {"data": 42}}), none.clone()),
        ),
        (
            "invoker: invokes with a timeout",
            "invoker",
            "step".into(),
            body("test/invoke", json!({"slow": true}), none.clone(), none.clone()),
        ),
        (
            "invoker: the timeout fails the function",
            "invoker",
            "step".into(),
            body(
                "test/invoke",
                json!({"slow": true}),
                json!({hid("call-hello"): {"error": {"name": "InngestInvokeTimeoutError", "message": "Timed out waiting for invoked function to complete"}}}),
                none.clone(),
            ),
        ),
        (
            "invoker: invokes a function by reference",
            "invoker",
            "step".into(),
            body("test/invoke", json!({"missing": true}), none.clone(), none.clone()),
        ),
        (
            "invoker: a failed invoke fails the function",
            "invoker",
            "step".into(),
            body(
                "test/invoke",
                json!({"failing": true}),
                json!({hid("call-fatal"): {"error": {"name": "NonRetriableError", "message": "nope"}}}),
                none.clone(),
            ),
        ),
        (
            "invoker: invokes two at once",
            "invoker",
            "step".into(),
            body("test/invoke", json!({"both": true}), none.clone(), none.clone()),
        ),
        (
            "invoker: joins both results",
            "invoker",
            "step".into(),
            body(
                "test/invoke",
                json!({"both": true}),
                json!({hid("double-one"): {"data": 2}, hid("double-two"): {"data": 4}}),
                none.clone(),
            ),
        ),
        ("double: doubles", "double", "step".into(), body("test/double", json!({"n": 21}), none.clone(), none.clone())),
        ("unknown function", "nope", "step".into(), body("x/y", none.clone(), none.clone(), none.clone())),
    ];
    list
}

async fn compare(signed: bool) {
    let event_api = StubServer::start(|request| {
        let sent: Value = serde_json::from_str(&request.body).unwrap_or(Value::Null);
        let ids: Vec<String> = (0..sent.as_array().map_or(0, Vec::len)).map(|n| format!("evt-{n}")).collect();
        (200, json!({"ids": ids, "status": 200}).to_string())
    })
    .await;
    let url = event_api.url().to_string();
    let Some((rust, ts)) = tokio::task::spawn_blocking(move || apps(signed, &url)).await.unwrap() else { return };
    let client = reqwest::Client::new();
    let mut differences = Vec::new();
    for (name, function, step, request) in scenarios() {
        let ours = call(&client, &rust, function, &step, &request, signed).await;
        let theirs = call(&client, &ts, function, &step, &request, signed).await;
        if ours != theirs {
            differences.push(format!("{name}:\n  cairn:      {ours:?}\n  typescript: {theirs:?}"));
        }
    }
    assert!(
        differences.is_empty(),
        "{} of {} answers differ:\n{}",
        differences.len(),
        scenarios().len(),
        differences.join("\n")
    );
    // Both sent the fan-out's events to the event API, at /e/<key>, with the same names and data.
    let sends: Vec<Value> = event_api
        .requests()
        .iter()
        .map(|r| {
            assert_eq!(r.path, "/e/test-key");
            let events: Vec<Value> = serde_json::from_str(&r.body).unwrap();
            Value::Array(events.iter().map(|e| json!({"name": e["name"], "data": e["data"]})).collect())
        })
        .collect();
    assert_eq!(sends.len(), 2, "one send per app");
    assert_eq!(sends[0], sends[1]);
    if signed {
        for url in [&rust.url, &ts.url] {
            let unsigned = client
                .post(format!("{url}?fnId=conformance-hello&stepId=step"))
                .body(body("app/my.event", json!({}), json!({}), json!({})).to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(unsigned.status(), 401, "{url}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_answers_match_the_typescript_sdk() {
    compare(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_mode_answers_match_the_typescript_sdk() {
    compare(true).await;
}

#[test]
fn the_signature_helper_is_the_one_under_test() {
    // Guards the harness: it signs the canonical form, as the executor does.
    let canonical = signing::canonical(br#"{"b":1,"a":2}"#).unwrap();
    assert_eq!(canonical, br#"{"a":2,"b":1}"#);
}

/// The functions of a register payload, with the app's own origin replaced so two apps compare.
fn registered(body: &Value, origin: &str) -> Vec<Value> {
    let text = body["functions"].to_string().replace(origin, "<origin>");
    let mut functions: Vec<Value> = serde_json::from_str(&text).unwrap();
    for function in &mut functions {
        let step = &function["steps"]["step"];
        let kept =
            json!({"id": step["id"], "name": step["name"], "runtime": step["runtime"], "retries": step["retries"]});
        // Every other field is compared as sent: flow control (concurrency, throttle, rateLimit,
        // idempotency, priority, singleton, cancel, timeouts) included.
        if let Some(fields) = function.as_object_mut() {
            fields.remove("steps");
            fields.insert("step".into(), kept);
        }
    }
    functions.sort_by_key(|f| f["id"].as_str().unwrap_or_default().to_string());
    functions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_registers_the_same_functions_as_the_typescript_sdk() {
    let api = StubServer::start(|_| (200, json!({"ok": true, "modified": true}).to_string())).await;
    let url = api.url().to_string();
    let Some((rust, ts)) = tokio::task::spawn_blocking(move || apps(false, &url)).await.unwrap() else { return };
    let client = reqwest::Client::new();
    for app in [&rust, &ts] {
        let answer = client.put(&app.url).header("x-inngest-server-kind", "dev").body("{}").send().await.unwrap();
        assert_eq!(answer.status(), 200, "{}", app.url);
        assert_eq!(answer.headers()["x-inngest-sync-kind"], "out_of_band");
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body, json!({"message": "Successfully registered", "modified": true}));
    }
    let requests = api.requests();
    assert_eq!(requests.len(), 2);
    let mut payloads = Vec::new();
    for (request, app) in requests.iter().zip([&rust, &ts]) {
        assert_eq!((request.method.as_str(), request.path.as_str()), ("POST", "/fn/register"));
        assert_eq!(request.header("x-inngest-sync-kind"), Some("out_of_band"));
        assert_eq!(request.header("x-inngest-expected-server-kind"), Some("dev"));
        let origin = app.url.trim_end_matches("/api/inngest").to_string();
        payloads.push(registered(&serde_json::from_str(&request.body).unwrap(), &origin));
    }
    assert_eq!(payloads[0], payloads[1]);
    assert_eq!(payloads[0].len(), 12);
    // The flow-control options are there to compare (the SDK turns `match` into an `if`).
    let sync = payloads[0].iter().find(|f| f["id"] == "conformance-flow-sync").unwrap();
    assert_eq!(
        (&sync["throttle"], &sync["cancel"][0]),
        (
            &json!({"limit": 2, "period": "10s", "burst": 1, "key": "event.data.userId"}),
            &json!({"event": "test/user.deleted", "if": "event.data.userId == async.data.userId", "timeout": "1h"})
        )
    );
}

/// The review's C1 as a user meets it: a deploy that left the signing key empty. Outside dev
/// mode the endpoint does not start, and says which variable to set.
#[test]
fn outside_dev_mode_the_endpoint_refuses_to_start_without_a_real_signing_key() {
    for key in ["", "   "] {
        let output = Command::new(env!("CARGO_BIN_EXE_conformance-app"))
            .env("INNGEST_DEV", "0")
            .env("INNGEST_SIGNING_KEY", key)
            .env("PORT", free_port().to_string())
            .output()
            .unwrap();
        assert!(!output.status.success(), "started with {key:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(
                "INNGEST_SIGNING_KEY is required outside dev mode and must not be empty (set INNGEST_DEV=1 for local work)"
            ),
            "{stderr}"
        );
    }
}
