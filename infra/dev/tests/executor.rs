//! The Inngest-protocol executor against apps that misbehave: one that accepts connections and
//! never answers cannot stall the deliveries to anything else (each target has its own permits,
//! and every call has a total timeout), and a `Sleep` longer than time itself saturates instead
//! of overflowing.
#![allow(clippy::unwrap_used)] // Tests: an unwrap that fails is a failed test.

mod common;

use axum::Json;
use axum::extract::Query;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use cairn::RunId;
use cairn_tests::workspace;
use common::{DevServer, get, post, until};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, router).into_future());
    url
}

/// A Lambda Invoke API that answers at once and records which function it ran when.
async fn stub_lambda() -> (String, Arc<Mutex<Vec<(String, Instant)>>>) {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&calls);
    let router = axum::Router::new().route(
        "/2015-03-31/functions/{name}/invocations",
        axum::routing::post(move |axum::extract::Path(name): axum::extract::Path<String>| {
            let seen = Arc::clone(&seen);
            async move {
                seen.lock().unwrap().push((name, Instant::now()));
                Json(json!({}))
            }
        }),
    );
    (serve(router).await, calls)
}

/// An app on loopback that accepts connections and never answers; returns its serve URL.
fn hung_app() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/api/inngest", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut open = Vec::new();
        for stream in listener.incoming() {
            open.push(stream); // Held open, never read or answered.
        }
    });
    url
}

async fn put_events(url: &str, name: &str, count: usize) {
    let entries: Vec<Value> = (0..count)
        .map(|_| json!({"EventBusName": "cairn", "Source": "tests", "DetailType": name, "Detail": "{}"}))
        .collect();
    put_entries(url, entries).await;
}

/// PutEvents as the aws CLI sends it; every entry must be accepted.
async fn put_entries(url: &str, entries: Vec<Value>) {
    let answer: Value = reqwest::Client::new()
        .post(url)
        .header("x-amz-target", "AWSEvents.PutEvents")
        .header("content-type", "application/x-amz-json-1.1")
        .body(json!({"Entries": entries}).to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["FailedEntryCount"], 0, "{answer}");
}

fn register_body(app: &str, id: &str, event: &str) -> Value {
    json!({"url": app, "v": "0.1", "deployType": "ping", "sdk": "js:v3", "framework": "node", "appName": "t",
        "functions": [{"id": id, "name": id, "triggers": [{"event": event}],
            "steps": {"step": {"id": "step", "name": "step", "runtime": {"type": "http", "url": app}}}}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_app_does_not_stall_the_deliveries_to_other_functions() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("dev.db").display().to_string();
    let (lambda, calls) = stub_lambda().await;
    let hung = hung_app();
    let dev = DevServer::start_env(
        &format!("{}/template.yaml", workspace()),
        &db,
        &lambda,
        &["--concurrency", "2", "-u", &hung],
        &[("CAIRN_APP_TIMEOUT_SECS", "4")],
    );
    let url = dev.url.clone();
    until("the dev server to answer", 10, || async {
        reqwest::get(format!("{url}/api/health")).await.ok().map(|_| ())
    })
    .await;
    let (status, body) = post(&format!("{url}/fn/register"), register_body(&hung, "stuck", "test/stuck")).await;
    assert_eq!(status, 200, "{body}");

    // More calls to the hung app than --concurrency, then an event for the Rust function hello.
    put_events(&url, "test/stuck", 3).await;
    until("calls to the hung app to be in flight", 10, || async {
        let list = get(&format!("{url}/api/invocations")).await;
        let running = list["invocations"].as_array().unwrap().iter().filter(|i| i["status"] == "running").count();
        (running >= 2).then_some(())
    })
    .await;
    let sent = Instant::now();
    put_events(&url, "app/my.event", 1).await;
    let delivered = until("hello to be invoked", 10, || async {
        calls.lock().unwrap().iter().find(|(name, _)| name == "hello").map(|(_, at)| *at)
    })
    .await;
    let waited = delivered.duration_since(sent);
    assert!(waited < Duration::from_secs(2), "hello waited {waited:?} behind the hung app");

    // The hung calls end at the app timeout, as a retried failure naming it.
    let failed = until("the hung calls to time out", 20, || async {
        let list = get(&format!("{url}/api/invocations")).await;
        let stuck: Vec<Value> = list["invocations"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["function"] == "inngest:stuck" && i["error"].is_string())
            .cloned()
            .collect();
        (stuck.len() == 3).then_some(stuck)
    })
    .await;
    for invocation in failed {
        assert_eq!(
            invocation["error"],
            format!("the Inngest app at {hung} did not answer within 4 s (--app-timeout-secs)"),
            "{invocation}"
        );
    }
}

/// An app whose one function sleeps for `duration` at once.
async fn sleeping_app(duration: &'static str) -> String {
    let router = axum::Router::new().route(
        "/api/inngest",
        axum::routing::put(|| async {
            let functions =
                json!({"functions": [{"id": "sleeper", "name": "sleeper", "triggers": [{"event": "test/sleep"}]}]});
            ([("x-inngest-sync-kind", "in_band")], Json(functions)).into_response()
        })
        .post(move |_: Query<HashMap<String, String>>, _: HeaderMap| async move {
            let op = json!([{"op": "Sleep", "id": cairn::StepId::hash("nap").as_str(), "name": "nap",
                "displayName": "nap", "opts": {"duration": duration}}]);
            (axum::http::StatusCode::PARTIAL_CONTENT, Json(op)).into_response()
        }),
    );
    format!("{}/api/inngest", serve(router).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleep_past_the_end_of_time_saturates() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("dev.db").display().to_string();
    let app = sleeping_app("1000000000y").await;
    let dev =
        DevServer::start_with(&format!("{}/template.yaml", workspace()), &db, "http://127.0.0.1:9", &["-u", &app]);
    let url = dev.url.clone();
    until("the app to sync", 20, || async {
        let list = get(&format!("{url}/api/functions")).await;
        list["functions"].as_array().unwrap().iter().any(|f| f["id"] == "sleeper").then_some(())
    })
    .await;
    let event_id = "evt-sleep";
    let detail = json!({"name": "test/sleep", "data": {}, "id": event_id}).to_string();
    put_entries(
        &url,
        vec![json!({"EventBusName": "cairn", "Source": "t", "DetailType": "test/sleep", "Detail": detail})],
    )
    .await;
    let run_id = RunId::for_event("sleeper", event_id);
    let run = until("the run to sleep", 20, || async {
        let body = get(&format!("{url}/api/runs/{run_id}")).await;
        (body["run"]["status"] == "sleeping").then_some(body)
    })
    .await;
    // 9999-12-31T23:59:59Z: the last second Scheduler's at() and the dashboard can show.
    assert_eq!(
        (run["steps"][0]["name"].as_str(), run["steps"][0]["status"].as_str(), run["steps"][0]["wake_at"].as_i64()),
        (Some("nap"), Some("scheduled"), Some(253_402_300_799_000))
    );
    let schedules = get(&format!("{url}/api/schedules")).await;
    let wake = schedules["schedules"].as_array().unwrap().iter().find(|s| s["group_name"] == "inngest").cloned();
    assert_eq!(wake.unwrap()["expression"], "at(9999-12-31T23:59:59)");
}
