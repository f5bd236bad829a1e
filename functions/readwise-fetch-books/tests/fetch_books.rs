//! readwise-fetch-books against local stubs of the Readwise API and the app's callback, with
//! each user's key in SSM Parameter Store (moto, started by `infra/local/with-services.sh`).
#![allow(clippy::unwrap_used)] // Tests: an unwrap that fails is a failed test.

use cairn::testing::{StubServer, TestRun};
use cairn::{StepId, StepState};
use readwise_fetch_books::{Config, FetchBooks, KeyStore, TOTAL_TIMEOUT, function_with};
use serde_json::{Value, json};
use std::io::Write;
use std::sync::{Arc, Mutex};

const KEY: &str = "k-secret-123";

/// Readwise with 5 books over 3 pages for the right key; 401 otherwise.
async fn readwise() -> StubServer {
    StubServer::start(|request| {
        if request.header("authorization") != Some(&format!("Token {KEY}")) {
            return (401, json!({"detail": "Invalid token."}).to_string());
        }
        let page: u32 = request.path.rsplit("page=").next().unwrap().parse().unwrap();
        let (count, next) = match page {
            1 | 2 => (2, json!(format!("/api/v2/books/?page={}", page + 1))),
            _ => (1, Value::Null),
        };
        let results: Vec<Value> = (0..count).map(|n| json!({"id": page * 10 + n, "title": "A book"})).collect();
        (200, json!({"count": 5, "next": next, "previous": null, "results": results}).to_string())
    })
    .await
}

/// A fresh prefix in SSM holding `keys` (user id, key) as SecureStrings.
async fn keys(keys: &[(&str, &str)]) -> KeyStore {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let prefix = format!("/test-{nanos}/readwise/users/");
    let ssm = aws_sdk_ssm::Client::new(&aws_config::load_from_env().await);
    for (user, key) in keys {
        let put = ssm.put_parameter().name(format!("{prefix}{user}")).value(*key);
        put.r#type(aws_sdk_ssm::types::ParameterType::SecureString).send().await.unwrap();
    }
    KeyStore::ssm(prefix)
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn fetches_every_page_posts_the_count_and_never_stores_or_logs_the_key() {
    let api = readwise().await;
    let app = StubServer::start(|_| (200, "{}".into())).await;
    let config = Config {
        base_url: api.url().into(),
        callback_url: Some(format!("{}/api/readwise/books-count", app.url())),
        keys: keys(&[("u1", KEY)]).await,
        timeout: TOTAL_TIMEOUT,
    };
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let event = FetchBooks { user_id: "u1".into() };
    let mut run = TestRun::new(function_with(config)).typed_event(&event);
    assert_eq!(run.result().await.unwrap(), json!({"userId": "u1", "total": 5, "callbackStatus": 200}));

    let pages: Vec<(String, Value)> = run
        .steps()
        .iter()
        .map(|s| match &s.state {
            StepState::Completed { output } => (s.id.to_string(), output.clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        pages,
        vec![
            (StepId::for_name("fetch-page", 0).to_string(), json!({"page": 1, "count": 2, "more": true})),
            (StepId::for_name("fetch-page", 1).to_string(), json!({"page": 2, "count": 2, "more": true})),
            (StepId::for_name("fetch-page", 2).to_string(), json!({"page": 3, "count": 1, "more": false})),
            (StepId::for_name("post-count", 0).to_string(), json!(200)),
        ]
    );
    let paths: Vec<String> = api.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths,
        [
            "/api/v2/books/?page_size=1000&page=1",
            "/api/v2/books/?page_size=1000&page=2",
            "/api/v2/books/?page_size=1000&page=3"
        ]
    );
    let posted = app.requests();
    assert_eq!((posted[0].method.as_str(), posted[0].path.as_str()), ("POST", "/api/readwise/books-count"));
    assert_eq!(serde_json::from_str::<Value>(&posted[0].body).unwrap(), json!({"userId": "u1", "count": 5}));

    let stored = serde_json::to_string(&run.steps()).unwrap();
    assert!(!stored.contains(KEY), "a step output holds the key");
    let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logged.contains("step completed"), "the capture works: {logged}");
    assert!(!logged.contains(KEY), "the key was logged");
    assert!(!serde_json::to_string(&event).unwrap().contains(KEY), "the event never holds the key");
}

#[tokio::test]
async fn a_refused_key_fails_at_once_without_retrying() {
    let api = readwise().await;
    let config = Config {
        base_url: api.url().into(),
        callback_url: Some("http://127.0.0.1:9/unused".into()),
        keys: keys(&[("u1", "wrong")]).await,
        timeout: TOTAL_TIMEOUT,
    };
    let mut run = TestRun::new(function_with(config)).typed_event(&FetchBooks { user_id: "u1".into() });
    let error = run.result().await.unwrap_err();
    assert_eq!((error.message.as_str(), error.retriable), ("Readwise refused the API key (401 Unauthorized)", false));
    assert_eq!(api.requests().len(), 1);
}

#[tokio::test]
async fn a_user_without_a_stored_key_or_with_a_path_for_an_id_fails_at_once_naming_it() {
    let api = readwise().await;
    let store = keys(&[("u1", KEY)]).await;
    let KeyStore::Ssm { prefix, .. } = &store else { unreachable!() };
    let prefix = prefix.clone();
    for (user, expected) in [
        ("u2", format!("no Readwise key is stored for user u2 ({prefix}u2)")),
        ("../u1", "userId must be 1 to 128 letters, digits or `_-.@`".to_string()),
        ("u1/../u1", "userId must be 1 to 128 letters, digits or `_-.@`".to_string()),
    ] {
        let config =
            Config { base_url: api.url().into(), callback_url: None, keys: store.clone(), timeout: TOTAL_TIMEOUT };
        let mut run = TestRun::new(function_with(config)).typed_event(&FetchBooks { user_id: user.into() });
        let error = run.result().await.unwrap_err();
        assert_eq!((error.message.as_str(), error.retriable), (expected.as_str(), false), "{user}");
    }
    let unconfigured =
        Config { base_url: api.url().into(), callback_url: None, keys: KeyStore::Unconfigured, timeout: TOTAL_TIMEOUT };
    let mut run = TestRun::new(function_with(unconfigured)).typed_event(&FetchBooks { user_id: "u1".into() });
    assert_eq!(run.result().await.unwrap_err().message, "READWISE_KEY_PARAMETER_PREFIX is not set");
    assert!(api.requests().is_empty(), "Readwise was never called without a key");
}

#[tokio::test]
async fn an_event_without_a_user_id_is_rejected_naming_the_field_not_echoing_values() {
    let config = Config {
        base_url: "http://127.0.0.1:9".into(),
        callback_url: None,
        keys: KeyStore::Unconfigured,
        timeout: TOTAL_TIMEOUT,
    };
    let data = json!({"userId": 42, "apiKey": "legacy-key-in-event"});
    let mut run = TestRun::new(function_with(config)).event("readwise/fetch-books", data);
    let error = run.result().await.unwrap_err();
    assert_eq!(
        error.message,
        "event `readwise/fetch-books`: field `data.userId`: invalid type: integer, expected a string"
    );
    assert!(run.steps().is_empty());
}

/// A Readwise that accepts the connection and never answers: the attempt fails on the client's
/// timeout (and is retried), instead of holding the step until Lambda kills the invocation.
#[tokio::test]
async fn a_hung_readwise_fails_the_attempt_on_the_timeout() {
    let readwise = StubServer::hung().await;
    let config = Config {
        base_url: readwise.url().to_string(),
        callback_url: None,
        keys: keys(&[("u1", KEY)]).await,
        timeout: std::time::Duration::from_millis(300),
    };
    let mut run = TestRun::new(function_with(config)).typed_event(&FetchBooks { user_id: "u1".into() });
    let error = run.result().await.unwrap_err();
    assert_eq!(error.message, "Readwise page 1 timed out");
    // Each timed-out attempt counted, retried under the function's policy (5 attempts).
    assert_eq!(run.steps()[0].attempts, cairn::DEFAULT_RETRIES + 1);
}
