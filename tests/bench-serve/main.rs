//! The serve benchmark (README, Performance), side by side in one run: requests per second and
//! p50/p99 latency of a POST that replays a 100-step memo and runs one new step, against the
//! Rust endpoint (conformance-app) and the official TypeScript SDK's node handler serving the
//! same function. Both in dev mode, each in its own process, on loopback.
//!
//! Usage: bench-serve PATH-TO-conformance-app TS-APP-DIR [SECONDS]

use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CONNECTIONS: usize = 8;

struct App(Child);

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("a port").local_addr().expect("an address").port()
}

fn start(mut command: Command) -> (App, String) {
    let port = free_port();
    let child = command
        .env("PORT", port.to_string())
        .env("INNGEST_DEV", "1")
        .env("CAIRN_BENCH_FUNCTION", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the app starts");
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (App(child), format!("http://127.0.0.1:{port}/api/inngest?fnId=conformance-bench-hundred&stepId=step"))
}

fn request_body() -> String {
    let ids: Vec<String> = (0..100).map(|n| cairn::StepId::for_name("step", n).to_string()).collect();
    let steps: serde_json::Map<String, Value> =
        ids.iter().enumerate().map(|(n, id)| (id.clone(), json!({"data": n}))).collect();
    let event = json!({"name": "bench/hundred", "data": {}, "id": "01J000000000000000000000EV", "ts": 1, "user": {}});
    json!({"event": event, "events": [event], "steps": steps,
           "ctx": {"run_id": "01J0000000000000000000RUN1", "attempt": 0, "max_attempts": 5, "stack": {"stack": ids, "current": 100}},
           "version": 2})
    .to_string()
}

async fn load(url: &str, seconds: u64) -> (f64, Duration, Duration, usize) {
    let client = reqwest::Client::builder().pool_max_idle_per_host(CONNECTIONS).build().expect("a client");
    let body = Arc::new(request_body());
    // Warm up (JIT, connections), then measure.
    for _ in 0..200 {
        let answer = client.post(url).body(body.as_str().to_string()).send().await.expect("an answer");
        assert_eq!(answer.status(), 206, "the new step runs");
        answer.bytes().await.expect("a body");
    }
    let until = Instant::now() + Duration::from_secs(seconds);
    let workers = (0..CONNECTIONS).map(|_| {
        let (client, body, url) = (client.clone(), Arc::clone(&body), url.to_string());
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < until {
                let started = Instant::now();
                let answer = client.post(&url).body(body.as_str().to_string()).send().await.expect("an answer");
                answer.bytes().await.expect("a body");
                latencies.push(started.elapsed());
            }
            latencies
        })
    });
    let started = Instant::now();
    let mut latencies: Vec<Duration> = Vec::new();
    for worker in workers {
        latencies.extend(worker.await.expect("a worker"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let count = latencies.len();
    (count as f64 / elapsed, latencies[count / 2], latencies[count * 99 / 100], count)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let rust_app = args.next().expect("usage: bench-serve CONFORMANCE_APP TS_DIR [SECONDS]");
    let ts_dir = args.next().expect("usage: bench-serve CONFORMANCE_APP TS_DIR [SECONDS]");
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(10);
    let (_rust, rust_url) = start(Command::new(&rust_app));
    let ts_dir = std::fs::canonicalize(&ts_dir).expect("the TypeScript app's folder").display().to_string();
    let mut node = Command::new("node");
    node.arg(format!("{ts_dir}/app.mjs")).current_dir(&ts_dir);
    let (_ts, ts_url) = start(node);
    println!(
        "## POST replaying a 100-step memo and running one new step ({CONNECTIONS} connections, {seconds} s each, loopback)"
    );
    println!("| endpoint | requests/s | p50 | p99 | requests |\n|---|---|---|---|---|");
    let mut results = Vec::new();
    for (name, url) in [("Cairn (Rust, axum)", &rust_url), ("inngest 4.24 (TypeScript, node)", &ts_url)] {
        let (rps, p50, p99, count) = load(url, seconds).await;
        println!(
            "| {name} | {rps:.0} | {:.2} ms | {:.2} ms | {count} |",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        );
        results.push((rps, p99));
    }
    println!(
        "\nthroughput ratio: {:.1}x; p99 ratio: {:.1}x lower",
        results[0].0 / results[1].0,
        results[1].1.as_secs_f64() / results[0].1.as_secs_f64()
    );
}
