//! Recovery with the real pieces and nobody's help: `cairn dev` (EventBridge, Scheduler and
//! SQS stand-ins, reconciler every 2 s) with every function under `cargo lambda watch`, leases
//! of 4 s. Scenarios, run concurrently:
//! - a function process SIGKILLed in the middle of a step that calls a (stub) Readwise: the
//!   run completes by itself, its committed step is not run again. `cargo lambda watch` never
//!   replaces a killed instance (its invocations hang), so the test restarts watch, as Lambda
//!   starts a fresh execution environment after a crash; nothing is sent to the run;
//! - one cron firing delivered twice (Scheduler delivers at least once): one run;
//! - `step.invoke` and an `on_failure` handler routed by the template's rules;
//! - sleeps of 2 s, 10 s and 90 s through the SQS timer end within a second of their due time
//!   (lateness printed, for README).
//!
//! `make test` provides cargo-lambda and the aws CLI; without them this skips (fails under CI).
#![allow(clippy::unwrap_used)] // Tests: an unwrap that fails is a failed test.

mod common;

use cairn::RunId;
use cairn::testing::StubServer;
use cairn_tests::{free_port, workspace};
use common::{DevServer, READWISE_KEYS, get, put_readwise_keys, sdk_config, until, watch_functions};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

async fn put(dev: &str, name: &str, detail: Value) -> String {
    let client = aws_sdk_eventbridge::Client::new(&sdk_config(dev).await);
    let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
        .event_bus_name("cairn")
        .source("tests")
        .detail_type(name)
        .detail(detail.to_string())
        .build();
    let answer = client.put_events().entries(entry).send().await.unwrap();
    answer.entries()[0].event_id().unwrap().to_string()
}

async fn run_in(dev: &str, run_id: &str, statuses: &[&str], secs: u64) -> Value {
    until(&format!("run {run_id} to be {statuses:?}"), secs, || async {
        let body = get(&format!("{dev}/api/runs/{run_id}")).await;
        statuses.contains(&body["run"]["status"].as_str().unwrap_or_default()).then_some(body)
    })
    .await
}

/// The processes holding an open TCP connection to `port` on loopback (from /proc): the
/// function process in the middle of a request to the stub listening there.
fn connected_to(port: u16) -> Vec<u32> {
    let mut inodes = std::collections::HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table).unwrap_or_default().lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // remote address `IP:PORT` (hex), state 01 = ESTABLISHED, inode.
            let remote_port = fields[2].rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
            if remote_port == Some(port) && fields[3] == "01" {
                inodes.insert(format!("socket:[{}]", fields[9]));
            }
        }
    }
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        if pid == std::process::id() {
            continue; // the stub's own end of the connection
        }
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { continue };
        if fds.flatten().any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| inodes.contains(&*l.to_string_lossy()))) {
            pids.push(pid);
        }
    }
    pids
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runs_recover_and_timers_fire_on_time_with_nobody_touching_a_run() {
    let Some(cargo_lambda) = cairn_tests::tools::cargo_lambda() else { return };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("dev.db").display().to_string();
    let template = format!("{}/template.yaml", workspace());

    // Readwise: one page then a second; the second page of the key `k-kill` hangs the first
    // time until the test has killed the process that asked.
    let entered = Arc::new(AtomicBool::new(false));
    let killed = Arc::new(AtomicBool::new(false));
    let (entered_flag, killed_flag) = (Arc::clone(&entered), Arc::clone(&killed));
    let readwise = StubServer::start(move |request| {
        let page2 = request.path.contains("page=2");
        if page2
            && request.header("authorization") == Some("Token k-kill")
            && !entered_flag.swap(true, Ordering::SeqCst)
        {
            // Held until the test has killed the caller, at most a minute so a failing test never
            // hangs on it (block_in_place: the runtime's other tasks and timers go on meanwhile).
            let held = Instant::now();
            tokio::task::block_in_place(|| {
                while !killed_flag.load(Ordering::SeqCst) && held.elapsed() < Duration::from_secs(60) {
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
        }
        let next = if page2 { Value::Null } else { json!("more") };
        (200, json!({"count": 3, "next": next, "results": [{"id": 1}]}).to_string())
    })
    .await;
    let users = StubServer::start(|_| (200, json!([{"userId": "u-cron"}]).to_string())).await;
    let app = StubServer::start(|_| (200, "{}".into())).await;

    let watch_port = free_port();
    let dev =
        DevServer::start_with(&template, &db, &format!("http://127.0.0.1:{watch_port}"), &["--reconcile-secs", "2"]);
    let url = dev.url.clone();
    let extra = [
        ("CAIRN_LEASE_SECS", "4".to_string()),
        // Every sleep goes through the timer queue, none in process.
        ("CAIRN_SLEEP_THRESHOLD_SECS", "0".to_string()),
        ("READWISE_USERS_URL", users.url().to_string()),
        ("READWISE_BASE_URL", readwise.url().to_string()),
        ("READWISE_CALLBACK_URL", format!("{}/count", app.url())),
        ("READWISE_KEY_PARAMETER_PREFIX", READWISE_KEYS.to_string()),
    ];
    put_readwise_keys(&url, &[("u-kill", "k-kill"), ("u-cron", "k-cron")]).await;
    // An Option, so a restart stops the old watch (freeing its port) before starting the new.
    let mut watch = Some(watch_functions(&cargo_lambda, watch_port, &url, &db, &extra));

    let killed_mid_step = async {
        let id = put(&url, "readwise/fetch-books", json!({"userId": "u-kill"})).await;
        let run_id = RunId::for_event("readwise-fetch-books", &id).to_string();
        // Long enough for watch to compile the function on its first invocation.
        until("the second page to be asked for", 300, || async { entered.load(Ordering::SeqCst).then_some(()) }).await;
        // The process in the middle of the step: the one connected to the Readwise stub.
        let port: u16 = readwise.url().rsplit(':').next().unwrap().trim_end_matches('/').parse().unwrap();
        let pids = connected_to(port);
        let names: Vec<String> =
            pids.iter().map(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default()).collect();
        println!("killing {pids:?} {names:?}");
        assert_eq!(pids.len(), 1, "one process is asking the stub for page 2: {pids:?} {names:?}");
        let status = std::process::Command::new("kill").args(["-KILL", &pids[0].to_string()]).status().unwrap();
        assert!(status.success());
        let killed_at = Instant::now();
        killed.store(true, Ordering::SeqCst);
        // Lambda would start a fresh environment for the next invocation; watch needs a restart.
        drop(watch.take());
        watch = Some(watch_functions(&cargo_lambda, watch_port, &url, &db, &extra));
        let body = run_in(&url, &run_id, &["completed"], 120).await;
        let recovered = killed_at.elapsed();
        assert_eq!(body["run"]["output"], json!({"userId": "u-kill", "total": 2, "callbackStatus": 200}));
        let pages: Vec<String> = readwise
            .requests()
            .iter()
            .filter(|r| r.header("authorization") == Some("Token k-kill"))
            .map(|r| r.path.clone())
            .collect();
        // Page 1 was committed before the kill and never asked for again; page 2 twice.
        assert_eq!(pages.iter().filter(|p| p.contains("page=1")).count(), 1, "{pages:?}");
        assert_eq!(pages.iter().filter(|p| p.contains("page=2")).count(), 2, "{pages:?}");
        let posts = app.requests().iter().filter(|r| r.body.contains("u-kill")).count();
        assert_eq!(posts, 1, "the callback is posted once");
        println!(
            "recovery: the killed run completed {:.1} s after the kill (lease 4 s, reconciler every 2 s)",
            recovered.as_secs_f64()
        );
        assert!(recovered < Duration::from_secs(60), "recovered in {recovered:?}");
    };

    let cron_twice = async {
        // One Scheduler firing, delivered twice, as Scheduler's at-least-once delivery may.
        let firing = json!({"cairn": "cron", "cron": "0 3 * * *", "id": "2026-12-02T03:00:00Z"});
        let invoke = format!("http://127.0.0.1:{watch_port}/2015-03-31/functions/readwise-daily-sync/invocations");
        let client = reqwest::Client::new();
        for _ in 0..2 {
            let answer = client.post(&invoke).json(&firing).send().await.unwrap();
            assert!(answer.status().is_success(), "{answer:?}");
        }
        let runs = until("the cron's run to complete", 300, || async {
            let runs = get(&format!("{url}/api/runs?function=readwise-daily-sync")).await["runs"].clone();
            let runs = runs.as_array().cloned().unwrap_or_default();
            runs.iter().all(|r| r["status"] == "completed").then_some(runs).filter(|r| !r.is_empty())
        })
        .await;
        assert_eq!(runs.len(), 1, "one run for one scheduled time: {runs:?}");
        let expected = RunId::for_event("readwise-daily-sync", "cron:0 3 * * *:2026-12-02T03:00:00Z");
        assert_eq!(runs[0]["run_id"], expected.as_str());
    };

    let invoke_and_on_failure = async {
        let ok = put(&url, "app/order.placed", json!({"order_id": "o-ok", "amount": 30})).await;
        let bad = put(&url, "app/order.placed", json!({"order_id": "o-bad", "amount": 0})).await;
        let (ok_run, bad_run) =
            (RunId::for_event("order-approval", &ok).to_string(), RunId::for_event("order-approval", &bad).to_string());
        run_in(&url, &ok_run, &["waiting"], 300).await;
        run_in(&url, &bad_run, &["waiting"], 300).await;
        put(&url, "app/order.approved", json!({"order_id": "o-ok", "by": "ann"})).await;
        put(&url, "app/order.approved", json!({"order_id": "o-bad", "by": "bob"})).await;
        let shipped = run_in(&url, &ok_run, &["completed"], 120).await;
        assert_eq!(
            shipped["run"]["output"],
            json!({"order_id": "o-ok", "shipped": true, "approved_by": "ann", "charged": 30.0})
        );
        let failed = run_in(&url, &bad_run, &["failed"], 120).await;
        assert_eq!(failed["run"]["error"]["message"], "payment declined: amount 0 is not positive");
        let handler = until("the on_failure handler to complete", 120, || async {
            let runs = get(&format!("{url}/api/runs?function=order-approval-failure")).await["runs"].clone();
            runs.as_array().and_then(|runs| runs.iter().find(|r| r["status"] == "completed").cloned())
        })
        .await;
        let handler = get(&format!("{url}/api/runs/{}", handler["run_id"].as_str().unwrap())).await;
        assert_eq!(
            handler["run"]["output"],
            json!({"released": "o-bad", "reason": "payment declined: amount 0 is not positive"})
        );
    };

    let timers = async {
        let mut ids = Vec::new();
        for (sleep, ms) in [("2s", 2_000), ("10s", 10_000), ("90s", 90_000)] {
            for n in 0..4 {
                let id = put(&url, "app/my.event", json!({"user": format!("t{n}"), "sleep": sleep})).await;
                ids.push((RunId::for_event("hello", &id).to_string(), ms));
            }
        }
        let mut lateness = Vec::new();
        for (run_id, ms) in &ids {
            let body = run_in(&url, run_id, &["completed"], 400).await;
            let wait = &body["steps"][1];
            let late = wait["ended_at"].as_i64().unwrap() - wait["started_at"].as_i64().unwrap() - ms;
            assert!(late >= 0, "the {ms} ms sleep of {run_id} ended {late} ms early");
            lateness.push(late);
        }
        lateness.sort_unstable();
        println!(
            "timer lateness over {} sleeps of 2 s, 10 s and 90 s: p50 {} ms, p99 {} ms, max {} ms",
            lateness.len(),
            percentile(&lateness, 50.0),
            percentile(&lateness, 99.0),
            lateness[lateness.len() - 1]
        );
        // The figures above are the measurement (README); this bound only catches a timer that
        // is missed, leaving room for a loaded 2-core machine.
        assert!(lateness[lateness.len() - 1] < 10_000, "a sleep ended more than 10 s late: {lateness:?}");
    };

    // Timers and invokes first (a restart of watch would delay their deliveries), then the
    // kill, then the cron (so its fan-out's calls to the stub do not mix with the killed one).
    tokio::join!(invoke_and_on_failure, timers);
    killed_mid_step.await;
    cron_twice.await;
    drop(watch);
}
