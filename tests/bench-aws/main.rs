//! The AWS runtime's benchmark (README, Performance), run by `make bench` with moto started:
//! 1. DynamoDB requests and bytes per step of a 100-step run (counted by a proxy);
//! 2. the commit of a step against a bare PutItem of the same item size, side by side;
//!    and the reconciler's cost: an idle pass, and a pass over 100 runs whose invocations died;
//! 3. flow control: the DynamoDB requests a run costs with each option, and admissions per
//!    second on one concurrency key and one throttle key; debounce's and batches' requests per event;
//! 4. one event against 10,000 pending waits, filed by value and of the general form;
//! 5. a function binary's cold start, from exec to its first event handled, against a local
//!    Lambda Runtime API, and its stripped size.
//!
//! Usage: bench-aws [PATH-TO-RELEASE-FUNCTION-BINARY]; `CAIRN_BENCH_ONLY=waits` runs only 4,
//! `CAIRN_BENCH_ONLY=flow` only 3 (with debounce's and batches' cost per event).

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

/// A flow-control option applied to a function builder.
type WithOption = Box<dyn Fn(cairn::FunctionBuilder<serde_json::Value>) -> cairn::FunctionBuilder<serde_json::Value>>;

/// Flow control on DynamoDB: the requests of a one-step run with each option (20 runs, each
/// with its own key, so every one is admitted at once), beside the same run with none; and how
/// many admissions one key takes per second (acquire + release of a concurrency slot; throttle
/// starts), one client after the other.
async fn flow_control_cost(endpoint: &str) -> anyhow::Result<()> {
    use cairn::flow::{CancelOn, Concurrency, Gcra, RateLimit, Singleton, Slot, Throttle, Timeouts};
    let proxy = FaultProxy::start(endpoint, |_, _| Fault::None).await;
    let store = store(proxy.url(), &format!("bench-flow-{}", std::process::id())).await;
    let options: Vec<(&str, WithOption)> = vec![
        ("none", Box::new(|f| f)),
        ("idempotency", Box::new(|f| f.idempotency("event.data.n"))),
        ("rate_limit", Box::new(|f| f.rate_limit(RateLimit::new(1_000, "1m").key("event.data.n")))),
        ("singleton", Box::new(|f| f.singleton(Singleton::skip().key("event.data.n")))),
        ("concurrency", Box::new(|f| f.concurrency(Concurrency::new(10).key("event.data.n")))),
        ("throttle", Box::new(|f| f.throttle(Throttle::new(1_000, "1m").key("event.data.n")))),
        ("cancel_on", Box::new(|f| f.cancel_on(CancelOn::event("bench/cancel").matching("data.n")))),
        ("timeouts", Box::new(|f| f.timeouts(Timeouts::new().finish("1h")))),
    ];
    let functions = options
        .iter()
        .map(|(name, with)| {
            with(Function::new(format!("flow-{name}")).on_event(format!("bench/{name}")))
                .handler(|_: Event, step: Step| async move { step.run("one", || async { Ok(1) }).await })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let runner = Runner::new(Registry::new(functions)?, store.clone(), MemoryBus::new(), MemoryTimer::new());
    println!("## Flow control on DynamoDB: requests per one-step run (20 runs each)");
    println!("| option | reads | writes | all requests | writes over none |");
    println!("|---|---|---|---|---|");
    let mut baseline = 0.0;
    for (name, _) in &options {
        proxy.reset();
        for n in 0..20 {
            let event = EventPayload::new(format!("bench/{name}"), json!({"n": n})).with_id(format!("{name}-{n}"));
            for run in runner.accept(&event).await? {
                runner.drive(&run).await?;
            }
        }
        let traffic = proxy.traffic();
        let count =
            |ops: &[&str]| ops.iter().map(|op| traffic.get(*op).map_or(0, |t| t.requests)).sum::<usize>() as f64 / 20.0;
        let reads = count(&["GetItem", "Query", "BatchGetItem"]);
        let writes = count(&["PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems"]);
        let all = traffic.values().map(|t| t.requests).sum::<usize>() as f64 / 20.0;
        if *name == "none" {
            baseline = writes;
        }
        println!("| {name} | {reads:.1} | {writes:.1} | {all:.1} | {:+.1} |", writes - baseline);
    }
    let samples = 200;
    let slot = [Slot { key: format!("bench-key-{}", std::process::id()), limit: 1, score: 0 }];
    let started = Instant::now();
    for n in 0..samples {
        let run = RunId::new(format!("slot-{n}"));
        store.acquire_slots(&run, &slot, 0, 60_000).await?;
        store.release_slots(&run, &slot, 0).await?;
    }
    let concurrency = f64::from(samples) / started.elapsed().as_secs_f64();
    let limiter = Gcra::throttle(1_000_000, 1_000, 0);
    let key = format!("bench-throttle-{}", std::process::id());
    let started = Instant::now();
    for n in 0..samples {
        store.throttle_start(&RunId::new(format!("t-{n}")), &key, limiter, 0, 0).await?;
    }
    let throttle = f64::from(samples) / started.elapsed().as_secs_f64();
    println!(
        "\nadmissions per second on one key, one client (moto): concurrency (acquire + release) {concurrency:.0}, throttle {throttle:.0}\n"
    );
    Ok(())
}

/// A one-step function with a window option whose run returns how many events it received.
fn with_events_counted(id: &str, batch: cairn::flow::BatchEvents) -> Result<Function, cairn::DefinitionError> {
    Function::new(id).on_event(format!("bench/{id}")).batch_events(batch).handler(|_: Event, step: Step| async move {
        let events = step.events::<serde_json::Value>()?.len();
        step.run("one", || async move { Ok(events) }).await
    })
}

/// Debounce and batches on DynamoDB: the requests each event of a burst costs (a debounce,
/// with a rate limit spent per event, with `all_events`, and a batch of 100), and what opening
/// and firing a window adds to the run it starts; 100 events, one key, 1 KB of data each. The
/// batch's 100th event's delivery drives the batch: one invocation runs it with all 100.
async fn window_cost(endpoint: &str) -> anyhow::Result<()> {
    use cairn::flow::{BatchEvents, Debounce, RateLimit};
    use cairn::testing::ManualClock;
    let proxy = FaultProxy::start(endpoint, |_, _| Fault::None).await;
    let store = store(proxy.url(), &format!("bench-debounce-{}", std::process::id())).await;
    let one_step = |id: &str,
                    with: &dyn Fn(
        cairn::FunctionBuilder<serde_json::Value>,
    ) -> cairn::FunctionBuilder<serde_json::Value>| {
        with(Function::new(id).on_event(format!("bench/{id}")))
            .handler(|_: Event, step: Step| async move { step.run("one", || async { Ok(1) }).await })
    };
    let functions = vec![
        one_step("plain", &|f| f)?,
        one_step("debounced", &|f| f.debounce(Debounce::new("5s")))?,
        one_step("limited", &|f| f.debounce(Debounce::new("5s")).rate_limit(RateLimit::new(1_000, "1m")))?,
        one_step("all_events", &|f| f.debounce(Debounce::new("5s").all_events()))?,
        with_events_counted("batched", BatchEvents::new(100, "60s"))?,
    ];
    let clock = ManualClock::at(1_800_000_000_000);
    let runner = Runner::new(Registry::new(functions)?, store, MemoryBus::new(), MemoryTimer::new())
        .with_clock(std::sync::Arc::new(clock.clone()));
    let count = |traffic: &std::collections::BTreeMap<String, cairn_tests::Traffic>, ops: &[&str]| {
        ops.iter().map(|op| traffic.get(*op).map_or(0, |t| t.requests)).sum::<usize>()
    };
    const READS: [&str; 3] = ["GetItem", "Query", "BatchGetItem"];
    const WRITES: [&str; 4] = ["PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems"];
    let filler = "x".repeat(1_000);
    // A plain run of the same step, for comparison.
    proxy.reset();
    for run in runner.accept(&EventPayload::new("bench/plain", json!({"pad": filler})).with_id("plain-1")).await? {
        runner.drive(&run).await?;
    }
    let plain = proxy.traffic();
    // What any delivered event costs, whatever it triggers: the waits it may resume (a read)
    // and the lookback log (a write).
    proxy.reset();
    for n in 0..99 {
        runner
            .accept(&EventPayload::new("bench/nobody", json!({"pad": filler})).with_id(format!("nobody-{n}")))
            .await?;
    }
    let nobody = proxy.traffic();
    let (base_reads, base_writes) = (count(&nobody, &READS) as f64 / 99.0, count(&nobody, &WRITES) as f64 / 99.0);
    println!("## Debounce and batches on DynamoDB: requests per event of a 100-event burst (one key, 1 KB events)");
    println!(
        "Any event costs {base_reads:.0} read and {base_writes:.0} write whatever it triggers (waits, lookback log); the columns add to that. A plain one-step run: {} reads, {} writes.",
        count(&plain, &READS),
        count(&plain, &WRITES)
    );
    println!(
        "| function | reads per later event | writes per later event | opening the window | firing it (its run included) |"
    );
    println!("|---|---|---|---|---|");
    for name in ["debounced", "limited", "all_events", "batched"] {
        proxy.reset();
        let first = EventPayload::new(format!("bench/{name}"), json!({"pad": filler})).with_id(format!("{name}-0"));
        runner.accept(&first).await?;
        let opened = proxy.traffic();
        proxy.reset();
        let mut to_drive = Vec::new();
        for n in 1..100 {
            clock.advance(Duration::from_millis(10));
            let event =
                EventPayload::new(format!("bench/{name}"), json!({"pad": filler})).with_id(format!("{name}-{n}"));
            let due = runner.accept(&event).await?;
            // The 100th event fills the batch: its delivery is told to drive it now.
            if name == "batched" && n == 99 {
                anyhow::ensure!(due.len() == 1, "the full batch's placeholder is driven at once: {due:?}");
                to_drive = due;
            } else {
                anyhow::ensure!(due.is_empty(), "a windowed event starts nothing: {due:?}");
            }
        }
        let burst = proxy.traffic();
        proxy.reset();
        if name != "batched" {
            // A debounce fires when its timer wakes the placeholder, 5 s after the last event.
            clock.advance(Duration::from_secs(6));
            to_drive = runner.timer().take_due(clock.now_ms());
        }
        let placeholder = RunId::for_event(name, &format!("{name}-0"));
        anyhow::ensure!(to_drive == [placeholder.clone()], "the placeholder, and only it, is due: {to_drive:?}");
        let drive = runner.drive(&placeholder).await?;
        let expected = if name == "batched" { json!(100) } else { json!(1) };
        anyhow::ensure!(drive == cairn::Drive::Completed(expected), "the window's run completed: {drive:?}");
        let fired = proxy.traffic();
        let per = |traffic, ops: &[&str]| count(traffic, ops) as f64 / 99.0;
        println!(
            "| {name} | {:.2} | {:.2} | {:.0} reads, {:.0} writes | {} reads, {} writes |",
            per(&burst, &READS) - base_reads,
            per(&burst, &WRITES) - base_writes,
            count(&opened, &READS) as f64 - base_reads,
            count(&opened, &WRITES) as f64 - base_writes,
            count(&fired, &READS),
            count(&fired, &WRITES),
        );
    }
    println!();
    Ok(())
}

/// One event against 10,000 pending waits: the waits of a name are filed under the value their
/// condition requires (`async.data.id == event.data.id`), so an event reads its own value's
/// partition; waits of the general form (`async.data.total > event.data.min`) are all read, in
/// pages, and evaluated against the trigger fields they carry, without loading their runs.
/// Each set has 10,000 registered waits plus 5 real waiting runs; 5 events each resume one.
async fn wait_matching(endpoint: &str) -> anyhow::Result<()> {
    const PENDING: usize = 10_000;
    let proxy = FaultProxy::start(endpoint, |_, _| Fault::None).await;
    let store = store(proxy.url(), &format!("bench-waits-{}", std::process::id())).await;
    let waiter = |name: &str, awaited: &'static str, condition: &'static str| {
        Function::new(name).on_event(format!("bench/{name}")).awaits(awaited).handler(
            move |_: Event, step: Step| async move {
                let wait = WaitFor::event(awaited).timeout("1d").if_expr(condition);
                step.wait_for_event("approval", wait).await
            },
        )
    };
    let forms = [
        ("filed", "bench/approved", "async.data.id == event.data.id"),
        ("general", "bench/scored", "async.data.total > event.data.min"),
    ];
    let functions = forms
        .iter()
        .map(|(name, awaited, condition)| waiter(name, awaited, condition))
        .collect::<Result<Vec<_>, _>>()?;
    let runner = Runner::new(Registry::new(functions)?, store.clone(), MemoryBus::new(), MemoryTimer::new());
    println!("## One event against {PENDING} pending waits (moto)");
    println!(
        "| condition | reads per event | writes per event | median time per event | one Query in the same table (moto's floor) | registering {PENDING} waits |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, awaited, condition) in forms {
        let started = Instant::now();
        let mut workers = tokio::task::JoinSet::new();
        for worker in 0..8 {
            let store = store.clone();
            workers.spawn(async move {
                for n in (worker..PENDING).step_by(8) {
                    let trigger =
                        EventPayload::new(format!("bench/{name}"), json!({"id": format!("o-{n}"), "min": 1_000_000}));
                    let run = RunId::new(format!("{name}-pending-{n}"));
                    let step = StepId::for_name("approval", 0);
                    let wait =
                        cairn::Wait::new(awaited, &run, &step, Some(condition.into()), &trigger, i64::MAX / 2, 0);
                    store.put_wait(&wait).await?;
                }
                Ok::<_, cairn::StoreError>(())
            });
        }
        while let Some(done) = workers.join_next().await {
            done??;
        }
        let registering = started.elapsed();
        for n in 0..5 {
            let trigger = EventPayload::new(format!("bench/{name}"), json!({"id": format!("real-{n}"), "min": n}))
                .with_id(format!("{name}-real-{n}"));
            for run in runner.accept(&trigger).await? {
                runner.drive(&run).await?;
            }
        }
        proxy.reset();
        let mut samples = Vec::new();
        for n in 0..5 {
            let event = EventPayload::new(awaited, json!({"id": format!("real-{n}"), "total": n + 1}))
                .with_id(format!("{name}-answer-{n}"));
            let started = Instant::now();
            let resumed = runner.accept(&event).await?;
            samples.push(started.elapsed());
            if resumed.len() != 1 {
                let run = RunId::for_event(name, &format!("{name}-real-{n}"));
                let status = store.load(&run).await?.map(|journal| (journal.meta.status, journal.meta.error));
                let found = store.waits_for(&event).await?;
                anyhow::bail!("{name}: event {n} resumed {resumed:?}; run {run} is {status:?}; waits found: {found:?}");
            }
        }
        let traffic = proxy.traffic();
        let count =
            |ops: &[&str]| ops.iter().map(|op| traffic.get(*op).map_or(0, |t| t.requests)).sum::<usize>() as f64 / 5.0;
        // Moto answers a Query in time that grows with the table, not the partition: a one-item
        // Query beside it shows that floor (DynamoDB's time depends on the items returned).
        let mut floor = Vec::new();
        for n in 0..5 {
            let started = Instant::now();
            store.load(&RunId::new(format!("absent-{n}"))).await?;
            floor.push(started.elapsed());
        }
        println!(
            "| {name}: `{condition}` | {:.1} | {:.1} | {:.1} ms | {:.1} ms | {:.1} s |",
            count(&["GetItem", "Query", "BatchGetItem"]),
            count(&["PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems"]),
            median(samples).as_secs_f64() * 1000.0,
            median(floor).as_secs_f64() * 1000.0,
            registering.as_secs_f64()
        );
    }
    // Where the general form's time goes: reading its 10,000 waits, and judging them in process.
    let event = EventPayload::new("bench/scored", json!({"id": "nobody", "total": 1}));
    let started = Instant::now();
    let waits = store.waits_for(&event).await?;
    let read = started.elapsed();
    let candidate = serde_json::to_value(&event)?;
    let count = waits.len();
    let started = Instant::now();
    let possible = cairn::Wait::possible(waits, &candidate);
    let judged = started.elapsed();
    println!(
        "\ngeneral form: reading its {count} waits took {:.0} ms on moto; judging them in process {:.1} ms ({} could match)\n",
        read.as_secs_f64() * 1000.0,
        judged.as_secs_f64() * 1000.0,
        possible.len()
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
    match std::env::var("CAIRN_BENCH_ONLY").as_deref() {
        Ok("waits") => return wait_matching(&endpoint).await,
        Ok("flow") => {
            flow_control_cost(&endpoint).await?;
            return window_cost(&endpoint).await;
        }
        _ => {}
    }
    requests_per_step(&endpoint).await?;
    reconciler_cost(&endpoint).await?;
    commit_overhead(&endpoint).await?;
    flow_control_cost(&endpoint).await?;
    window_cost(&endpoint).await?;
    wait_matching(&endpoint).await?;
    if let Some(binary) = std::env::args().nth(1) {
        cold_start(&binary).await?;
    }
    Ok(())
}
