//! The Function URL entry in `RESPONSE_STREAM` mode, under `cargo lambda watch` (which emulates
//! Function URLs with real response streaming): a run's progress arrives as NDJSON lines while
//! it runs, with heartbeats keeping the connection alive through a sleep.
#![allow(clippy::unwrap_used)] // Tests: an unwrap that fails is a failed test.

use cairn_tests::Watch;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_url_call_streams_progress_and_heartbeats_until_the_run_ends() {
    let Some(cargo_lambda) = cairn_tests::tools::cargo_lambda() else { return };
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("CAIRN_SQLITE_PATH", dir.path().join("stream.db").display().to_string()),
        ("CAIRN_SLEEP_THRESHOLD_SECS", "10".to_string()),
        // Its sleeps all happen in process: no timer needed, said explicitly.
        ("CAIRN_TIMER", "log".to_string()),
        ("CAIRN_STREAM_HEARTBEAT_SECS", "1".to_string()),
    ];
    let watch = tokio::task::spawn_blocking(move || Watch::start(&cargo_lambda, &env)).await.unwrap();
    let url = format!("http://127.0.0.1:{}/lambda-url/stream-probe/", watch.port);
    let client = cairn_tests::Watch::client();
    // The first call compiles and starts the binary; time the second, on a warm function.
    let warm = client
        .post(&url)
        .body(json!({"name": "test/slow", "data": {}, "id": "warm-up"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(warm.headers()["content-type"], "application/x-ndjson");
    warm.text().await.unwrap();

    let started = Instant::now();
    let mut response = client
        .post(&url)
        .body(json!({"name": "test/slow", "data": {}, "id": "streamed"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut lines: Vec<(Duration, Value)> = Vec::new();
    let mut pending = String::new();
    while let Some(chunk) = response.chunk().await.unwrap() {
        pending.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = pending.find('\n') {
            let line: String = pending.drain(..=end).collect();
            if !line.trim().is_empty() {
                lines.push((started.elapsed(), serde_json::from_str(line.trim()).unwrap()));
            }
        }
    }
    let kinds: Vec<String> = lines
        .iter()
        .filter(|(_, line)| line["type"] != "heartbeat")
        .map(|(_, line)| match line["type"].as_str().unwrap() {
            "step_completed" => format!("step_completed:{}", line["name"].as_str().unwrap()),
            other => other.to_string(),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "run_started",
            "step_completed:first",
            "step_completed:pause",
            "step_completed:second",
            "run_completed",
            "done"
        ]
    );
    let at = |kind: &str, name: &str| {
        lines
            .iter()
            .find(|(_, l)| l["type"] == kind && (name.is_empty() || l["name"] == name))
            .map(|(t, _)| *t)
            .unwrap()
    };
    let first = at("step_completed", "first");
    let end = at("done", "");
    assert!(end >= first + Duration::from_millis(2_500), "the 3 s sleep lies between: {first:?} .. {end:?}");
    assert!(first + Duration::from_secs(2) < end, "progress arrives while the run goes on, not all at the end");
    let beats = lines.iter().filter(|(t, l)| l["type"] == "heartbeat" && *t > first && *t < end).count();
    assert!(beats >= 2, "heartbeats keep the connection alive during the sleep: {beats}");
    let completed = lines.iter().find(|(_, l)| l["type"] == "run_completed").unwrap();
    assert_eq!(completed.1["output"], json!("done"));

    // A body that is not JSON: a 400 with a line naming the problem.
    let bad = client.post(&url).body("not json").send().await.unwrap();
    assert_eq!(bad.status(), 400);
    let text = bad.text().await.unwrap();
    assert!(text.contains("the request body is not JSON"), "{text}");
}

/// The Inngest endpoint on lambda_http, as behind its Function URL: `functions/serve` under
/// `cargo lambda watch`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_serve_binary_answers_on_its_function_url() {
    let Some(cargo_lambda) = cairn_tests::tools::cargo_lambda() else { return };
    let env = [("INNGEST_DEV", "1".to_string()), ("CAIRN_EVENT_KEYS", "k-1".to_string())];
    let watch = tokio::task::spawn_blocking(move || Watch::start(&cargo_lambda, &env)).await.unwrap();
    let base = format!("http://127.0.0.1:{}/lambda-url/serve/api/inngest", watch.port);
    let client = cairn_tests::Watch::client();
    let introspection: Value = client.get(&base).send().await.unwrap().json().await.unwrap();
    // Every function of the project's one list (functions/registry), failure handlers included.
    let count = cairn::Registry::new(cairn_functions::functions()).unwrap().functions().len();
    assert_eq!((introspection["mode"].clone(), introspection["function_count"].clone()), (json!("dev"), json!(count)));
    let call =
        json!({"event": {"name": "app/my.event", "data": {}}, "steps": {}, "ctx": {"run_id": "r1", "attempt": 0}});
    let answer =
        client.post(format!("{base}?fnId=cairn-hello&stepId=step")).body(call.to_string()).send().await.unwrap();
    assert_eq!(answer.status(), 206);
    assert_eq!(answer.headers()["x-inngest-sdk"], "cairn:v0.1.0");
    let ops: Value = answer.json().await.unwrap();
    assert_eq!((ops[0]["op"].clone(), ops[0]["data"].clone()), (json!("StepRun"), json!({"success": true})));
    let unauthorized = client.post(format!("{base}/send")).body("{}").send().await.unwrap();
    assert_eq!(unauthorized.status(), 401);
}
