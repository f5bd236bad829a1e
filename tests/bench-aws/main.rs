//! The AWS runtime's benchmark (README, Performance), run by `make bench` with moto started:
//! 1. DynamoDB requests and bytes per step of a 100-step run (counted by a proxy);
//! 2. the commit of a step against a bare PutItem of the same item size, side by side;
//!    and the reconciler's cost: an idle pass, and a pass over 100 runs whose invocations died;
//! 3. a function binary's cold start, from exec to its first event handled, against a local
//!    Lambda Runtime API, and its stripped size.
//!
//! Usage: bench-aws [PATH-TO-RELEASE-FUNCTION-BINARY]

use aws_sdk_dynamodb::types::AttributeValue;
use cairn::prelude::*;
use cairn::testing::StubServer;
use cairn::{
    MemoryBus, MemoryTimer, Registry, RunId, RunMeta, RunStore, Runner, StepId, StepKind, StepRecord, StepState,
};
use cairn_aws::DynamoDbStore;
use cairn_tests::{Fault, FaultProxy};
use std::time::{Duration, Instant};

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn hundred_steps() -> Function {
    Function::new("hundred")
        .on_event("bench/hundred")
        .handler(|_: Event, step: Step| async move {
            let mut total = 0u64;
            for _ in 0..100 {
                total += step
                    .run("step", || async { Ok(json!({"ok": true, "n": 1})) })
                    .await
                    .map(|v: serde_json::Value| v["n"].as_u64().unwrap_or(0))?;
            }
            Ok(total)
        })
        .expect("valid")
}

async fn store(endpoint: &str, table: &str) -> DynamoDbStore {
    let config = aws_config::load_from_env().await;
    let dynamo = aws_sdk_dynamodb::config::Builder::from(&config).endpoint_url(endpoint).build();
    let store = DynamoDbStore::new(aws_sdk_dynamodb::Client::from_conf(dynamo), table, "bench").expect("scope");
    store.create_table().await.expect("table");
    store
}

async fn requests_per_step(endpoint: &str) -> anyhow::Result<()> {
    let proxy = FaultProxy::start(endpoint, |_, _| Fault::None).await;
    let store = store(proxy.url(), &format!("bench-traffic-{}", std::process::id())).await;
    proxy.reset();
    let runner = Runner::new(Registry::new([hundred_steps()])?, store, MemoryBus::new(), MemoryTimer::new());
    let runs = runner.accept(&EventPayload::new("bench/hundred", json!({})).with_id("b-1")).await?;
    let drive = runner.drive(&runs[0]).await?;
    println!("## DynamoDB traffic of one 100-step run ({drive:?})");
    println!("| operation | requests | bytes sent | bytes received |");
    println!("|---|---|---|---|");
    let mut writes = 0;
    let mut total = cairn_tests::Traffic::default();
    for (operation, traffic) in proxy.traffic() {
        println!("| {operation} | {} | {} | {} |", traffic.requests, traffic.sent, traffic.received);
        if operation == "PutItem" || operation == "TransactWriteItems" || operation == "UpdateItem" {
            writes += traffic.requests;
        }
        total.requests += traffic.requests;
        total.sent += traffic.sent;
        total.received += traffic.received;
    }
    println!(
        "\nwrites: {writes} = 100 steps + {} per invocation; all requests: {}; bytes per step (sent + received, all requests / 100): {}\n",
        writes - 100,
        total.requests,
        (total.sent + total.received) / 100
    );
    Ok(())
}

/// What the reconciler costs: a pass with nothing due, and a pass that finds 100 runs whose
/// invocations died after creating them (each woken once).
async fn reconciler_cost(endpoint: &str) -> anyhow::Result<()> {
    let proxy = FaultProxy::start(endpoint, |_, _| Fault::None).await;
    let store = store(proxy.url(), &format!("bench-reconcile-{}", std::process::id())).await;
    let clock = cairn::testing::ManualClock::at(cairn::Clock::now(&cairn::SystemClock));
    let timer = MemoryTimer::new();
    let runner = Runner::new(Registry::new([hundred_steps()])?, store, MemoryBus::new(), timer.clone())
        .with_clock(std::sync::Arc::new(clock.clone()));
    proxy.reset();
    let idle = runner.reconcile().await?;
    let idle_requests: usize = proxy.traffic().values().map(|t| t.requests).sum();
    for n in 0..100 {
        // Accepted, never driven: the invocation "died" right after creating the run.
        runner.accept(&EventPayload::new("bench/hundred", json!({})).with_id(format!("dead-{n}"))).await?;
    }
    clock.advance(Duration::from_secs(61));
    proxy.reset();
    let pass = runner.reconcile().await?;
    let traffic = proxy.traffic();
    let requests: usize = traffic.values().map(|t| t.requests).sum();
    let read: usize = traffic.values().map(|t| t.received).sum();
    println!("## The reconciler (one function)");
    println!(
        "- idle pass: {idle_requests} DynamoDB request(s) ({} due)\n- a pass finding 100 runs whose invocation died: {requests} request(s) ({}), {} wake-up messages, {:.0} bytes read per run\n",
        idle.examined,
        traffic.iter().map(|(op, t)| format!("{} {op}", t.requests)).collect::<Vec<_>>().join(", "),
        timer.len(),
        read as f64 / pass.examined.max(1) as f64
    );
    assert_eq!(pass.resumed, 100);
    Ok(())
}

async fn commit_overhead(endpoint: &str) -> anyhow::Result<()> {
    let table = format!("bench-commit-{}", std::process::id());
    let store = store(endpoint, &table).await;
    let config = aws_config::load_from_env().await;
    let client = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&config).endpoint_url(endpoint).build(),
    );
    let run = RunId::new("bench-run");
    store.create_run(RunMeta::new(run.clone(), "f", EventPayload::new("a/b", json!({})), 0)).await?;
    let (mut commits, mut bare) = (Vec::new(), Vec::new());
    for i in 0..400u32 {
        let record = StepRecord {
            id: StepId::for_name("step", i),
            name: "step".into(),
            kind: StepKind::Run,
            position: i,
            state: StepState::Completed { output: json!({"ok": true, "n": 1}) },
            attempts: 1,
            started_at: 1_795_392_000_000,
            ended_at: Some(1_795_392_000_000),
            detail: None,
        };
        let encoded = serde_json::to_string(&record)?;
        // Alternate which goes first so drift in the server hits both alike.
        let bare_put = || {
            client
                .put_item()
                .table_name(&table)
                .item("PK", AttributeValue::S("BARE#run".into()))
                .item("SK", AttributeValue::S(format!("STEP#{i}")))
                .item("record", AttributeValue::S(encoded.clone()))
                .send()
        };
        if i % 2 == 0 {
            let t = Instant::now();
            store.commit_step(&run, &record).await?;
            commits.push(t.elapsed());
            let t = Instant::now();
            bare_put().await?;
            bare.push(t.elapsed());
        } else {
            let t = Instant::now();
            bare_put().await?;
            bare.push(t.elapsed());
            let t = Instant::now();
            store.commit_step(&run, &record).await?;
            commits.push(t.elapsed());
        }
    }
    let (commit, put) = (median(commits), median(bare));
    println!("## Step commit against a bare PutItem (moto, 400 each, interleaved)");
    println!(
        "| | median |\n|---|---|\n| bare PutItem | {:.0} µs |\n| DynamoDbStore::commit_step | {:.0} µs |",
        put.as_micros(),
        commit.as_micros()
    );
    println!("\nratio: {:.2}x\n", commit.as_secs_f64() / put.as_secs_f64());
    Ok(())
}

async fn cold_start(binary: &str) -> anyhow::Result<()> {
    let event = json!({"version": "0", "id": "cold-1", "detail-type": "app/my.event", "source": "bench", "detail": {}})
        .to_string();
    let runtime_api = StubServer::start_with_headers(move |request| {
        if request.path.ends_with("/invocation/next") {
            let headers = vec![
                ("Lambda-Runtime-Aws-Request-Id".to_string(), "req-1".to_string()),
                ("Lambda-Runtime-Deadline-Ms".to_string(), "9999999999999".to_string()),
                (
                    "Lambda-Runtime-Invoked-Function-Arn".to_string(),
                    "arn:aws:lambda:us-east-1:123456789012:function:cairn-hello".to_string(),
                ),
                ("Lambda-Runtime-Trace-Id".to_string(), "Root=1-0-0".to_string()),
            ];
            (200, headers, event.clone())
        } else {
            (202, Vec::new(), "{}".to_string())
        }
    })
    .await;
    let address = runtime_api.url().trim_start_matches("http://").to_string();
    let dir = tempfile::tempdir()?;
    let mut samples = Vec::new();
    for n in 0..20 {
        let before = runtime_api.requests().len();
        let started = Instant::now();
        let mut child = std::process::Command::new(binary)
            .env_clear()
            .env("AWS_LAMBDA_RUNTIME_API", &address)
            .env("AWS_LAMBDA_FUNCTION_NAME", "cairn-hello")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", "bench")
            .env("CAIRN_SQLITE_PATH", dir.path().join(format!("cold-{n}.db")))
            .env("RUST_LOG", "off")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        loop {
            let answered =
                runtime_api.requests()[before..].iter().any(|r| r.method == "POST" && r.path.ends_with("/response"));
            if answered {
                samples.push(started.elapsed());
                break;
            }
            if started.elapsed() > Duration::from_secs(10) {
                anyhow::bail!("the function did not answer within 10 s");
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        child.kill()?;
        child.wait()?;
    }
    let stripped = dir.path().join("stripped");
    std::fs::copy(binary, &stripped)?;
    std::process::Command::new("strip").arg(&stripped).status()?;
    let size = std::fs::metadata(&stripped)?.len();
    println!("## Cold start of `{binary}` (exec to its first event handled, 20 runs, local Runtime API, SQLite store)");
    println!(
        "median {:.1} ms; stripped size {:.1} MB",
        median(samples).as_secs_f64() * 1000.0,
        size as f64 / 1_048_576.0
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let endpoint = std::env::var("CAIRN_TEST_AWS_ENDPOINT")
        .map_err(|_| anyhow::anyhow!("run under infra/local/with-services.sh"))?;
    requests_per_step(&endpoint).await?;
    reconciler_cost(&endpoint).await?;
    commit_overhead(&endpoint).await?;
    if let Some(binary) = std::env::args().nth(1) {
        cold_start(&binary).await?;
    }
    Ok(())
}
