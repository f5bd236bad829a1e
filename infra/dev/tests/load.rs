//! Load: 1,000 events put at `cairn dev` (100 PutEvents of 10, 20 at a time, through the AWS
//! SDK) end in 1,000 completed `hello` runs under `cargo lambda watch`, none lost. Each run
//! sleeps 2 s (`HELLO_SLEEP`) through its SQS timer queue on the dev server, so every run is two
//! invocations and one timer message. Prints the accept rate and the time to drain (README's
//! figures); asserts only that nothing was lost or failed.
#![allow(clippy::unwrap_used)] // Tests: an unwrap that fails is a failed test.

mod common;

use cairn_tests::{free_port, workspace};
use common::{DevServer, get, until};
use futures::StreamExt;
use serde_json::Value;
use std::time::Instant;

const EVENTS: usize = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_events_end_in_a_thousand_completed_runs() {
    let Some(cargo_lambda) = cairn_tests::tools::cargo_lambda() else { return };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("dev.db").display().to_string();
    let watch_port = free_port();
    let dev =
        DevServer::start(&format!("{}/template.yaml", workspace()), &db, &format!("http://127.0.0.1:{watch_port}"));
    let url = dev.url.clone();
    let extra = [("HELLO_SLEEP", "2s".to_string()), ("CAIRN_SLEEP_THRESHOLD_SECS", "0".to_string())];
    let watch = common::watch_functions(&cargo_lambda, watch_port, &url, &db, &extra);
    // One run first, so hello is compiled and started before the clock runs.
    let config = common::sdk_config(&url).await;
    let client = aws_sdk_eventbridge::Client::new(&config);
    let entry = |i: usize| {
        aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
            .event_bus_name("cairn")
            .source("load")
            .detail_type("app/my.event")
            .detail(format!("{{\"i\": {i}}}"))
            .build()
    };
    client.put_events().entries(entry(EVENTS)).send().await.unwrap();
    until("the warm-up run", 300, || async {
        let runs = get(&format!("{url}/api/runs?status=completed")).await;
        (!runs["runs"].as_array().unwrap().is_empty()).then_some(())
    })
    .await;

    let start = Instant::now();
    let batches = futures::stream::iter(0..EVENTS / 10)
        .map(|batch| {
            let client = client.clone();
            async move {
                let answer = client
                    .put_events()
                    .set_entries(Some((batch * 10..batch * 10 + 10).map(entry).collect()))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(answer.failed_entry_count, 0);
                answer.entries.unwrap().len()
            }
        })
        .buffer_unordered(20)
        .collect::<Vec<usize>>()
        .await;
    let accepted = start.elapsed();
    assert_eq!(batches.iter().sum::<usize>(), EVENTS);
    let completed = until("1,000 runs to complete", 600, || async {
        let runs = get(&format!("{url}/api/runs?function=hello&status=completed&limit=2000")).await;
        let n = runs["runs"].as_array().unwrap().len();
        (n == EVENTS + 1).then_some(n)
    })
    .await;
    let drained = start.elapsed();
    assert_eq!(completed, EVENTS + 1);

    // None lost: every event logged once, every delivery succeeded, nothing left queued.
    let events = get(&format!("{url}/api/events?limit=5000&name=app/my.event")).await;
    assert_eq!(events["events"].as_array().unwrap().len(), EVENTS + 1);
    // Settled first: a reconciler tick (every minute, as in AWS) may be in flight right now.
    let invocations = common::settled_invocations(&url, 5_000).await;
    let not_ok: Vec<&Value> = invocations.iter().filter(|i| i["status"] != "ok").collect();
    assert!(not_ok.is_empty(), "{} deliveries not ok: {:?}", not_ok.len(), not_ok.first());
    let woken = invocations.iter().filter(|i| i["cause"] == "sqs:timer-hello").count();
    println!("deliveries: {} ({woken} by hello's timer queue)", invocations.len());
    assert_eq!(woken, EVENTS + 1, "one timer message delivered per run");
    let retried = invocations.iter().filter(|i| i["attempts"] != 1).count();
    println!(
        "load: {EVENTS} events accepted in {:.2} s ({:.0} events/s); {EVENTS} runs (each 2 invocations and a 2 s sleep) completed {:.1} s after the first put ({:.0} runs/s); {retried} deliveries retried",
        accepted.as_secs_f64(),
        EVENTS as f64 / accepted.as_secs_f64(),
        drained.as_secs_f64(),
        EVENTS as f64 / drained.as_secs_f64()
    );
    drop(watch);
    drop(dev);
}
