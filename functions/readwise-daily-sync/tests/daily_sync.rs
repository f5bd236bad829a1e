//! readwise-daily-sync against a local stub of the app's users endpoint, alone and together with
//! readwise-fetch-books in one Runner.
#![allow(clippy::unwrap_used)] // Tests: an unwrap that fails is a failed test.

use cairn::store::RunQuery;
use cairn::testing::{StubServer, TestRun};
use cairn::{EventPayload, MemoryBus, MemoryStore, MemoryTimer, Registry, RunStatus, RunStore, Runner, StepState};
use serde_json::{Value, json};

/// The users endpoint; it still sends keys (an old app), which the sync must not relay.
async fn users() -> StubServer {
    StubServer::start(|_| {
        (200, json!([{"userId": "u1", "apiKey": "k1"}, {"userId": "u2", "apiKey": "k2"}]).to_string())
    })
    .await
}

#[tokio::test]
async fn lists_users_then_sends_one_fetch_event_each_with_ids_only() {
    let users = users().await;
    let mut run = TestRun::new(readwise_daily_sync::function_with(Some(users.url().into())));
    assert_eq!(run.result().await.unwrap(), json!({"sent": 2}));
    let listed = &run.steps()[0];
    assert_eq!(listed.state, StepState::Completed { output: json!(["u1", "u2"]) });
    let sent: Vec<(String, Value)> = run.sent_events().iter().map(|e| (e.name.clone(), e.data.clone())).collect();
    assert_eq!(
        sent,
        vec![
            ("readwise/fetch-books".to_string(), json!({"userId": "u1"})),
            ("readwise/fetch-books".to_string(), json!({"userId": "u2"})),
        ]
    );
    let stored = serde_json::to_string(&run.steps()).unwrap();
    assert!(!stored.contains("k1") && !stored.contains("k2"), "{stored}");
    let sent = serde_json::to_string(&run.sent_events()).unwrap();
    assert!(!sent.contains("k1") && !sent.contains("k2"), "{sent}");
}

#[tokio::test]
async fn the_cron_fans_out_and_every_user_is_fetched() {
    let users = users().await;
    let api = StubServer::start(|_| (200, json!({"count": 1, "next": null, "results": [{"id": 1}]}).to_string())).await;
    let app = StubServer::start(|_| (200, "{}".into())).await;
    // The keys live in SSM (moto), never in the users endpoint's answer the sync relays.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let prefix = format!("/sync-{nanos}/readwise/users/");
    let ssm = aws_sdk_ssm::Client::new(&aws_config::load_from_env().await);
    for (user, key) in [("u1", "k1"), ("u2", "k2")] {
        let put = ssm.put_parameter().name(format!("{prefix}{user}")).value(key);
        put.r#type(aws_sdk_ssm::types::ParameterType::SecureString).send().await.unwrap();
    }
    let fetch = readwise_fetch_books::function_with(readwise_fetch_books::Config {
        base_url: api.url().into(),
        callback_url: Some(format!("{}/count", app.url())),
        keys: readwise_fetch_books::KeyStore::ssm(prefix),
        timeout: readwise_fetch_books::TOTAL_TIMEOUT,
    });
    let registry = Registry::new([readwise_daily_sync::function_with(Some(users.url().into())), fetch]).unwrap();
    let runner = Runner::new(registry, MemoryStore::new(), MemoryBus::new(), MemoryTimer::new());
    runner.send(EventPayload::new(cairn::SCHEDULED_EVENT, json!({"cron": "0 3 * * *"}))).await.unwrap();
    runner.run_until_idle().await.unwrap();
    let query = RunQuery { function_id: Some("readwise-fetch-books".into()), ..RunQuery::default() };
    let fetched = runner.store().list_runs(&query).await.unwrap();
    assert_eq!(fetched.len(), 2);
    assert!(fetched.iter().all(|m| m.status == RunStatus::Completed));
    let mut counts: Vec<Value> = app.requests().iter().map(|r| serde_json::from_str(&r.body).unwrap()).collect();
    counts.sort_by_key(|v| v["userId"].as_str().unwrap().to_string());
    assert_eq!(counts, vec![json!({"userId": "u1", "count": 1}), json!({"userId": "u2", "count": 1})]);
    let keys: Vec<String> = api.requests().iter().map(|r| r.header("authorization").unwrap().to_string()).collect();
    assert_eq!(keys.len(), 2);
    assert!(keys.contains(&"Token k1".to_string()) && keys.contains(&"Token k2".to_string()));
}
