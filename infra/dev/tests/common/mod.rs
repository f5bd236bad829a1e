//! What the process-level tests share: the `cairn dev` binary on a free port, and polling.
#![allow(dead_code, clippy::unwrap_used)] // Each test binary uses a part; an unwrap that fails is a failed test.

use cairn::RunId;
use cairn_tests::{Watch, free_port, workspace};
use serde_json::{Value, json};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The `cairn dev` process, stopped by its PID on drop.
pub(crate) struct DevServer {
    child: Child,
    /// Where it listens.
    pub(crate) url: String,
}

impl DevServer {
    pub(crate) fn start(template: &str, db: &str, lambda_url: &str) -> DevServer {
        DevServer::start_with(template, db, lambda_url, &[])
    }

    /// Like [`DevServer::start`], with more arguments (e.g. `-u URL`).
    pub(crate) fn start_with(template: &str, db: &str, lambda_url: &str, more: &[&str]) -> DevServer {
        DevServer::start_env(template, db, lambda_url, more, &[])
    }

    /// Like [`DevServer::start_with`], with environment variables (e.g. `CAIRN_APP_TIMEOUT_SECS`).
    pub(crate) fn start_env(
        template: &str,
        db: &str,
        lambda_url: &str,
        more: &[&str],
        env: &[(&str, &str)],
    ) -> DevServer {
        // A port another process took meanwhile makes the server exit at once: try another.
        for _ in 0..5 {
            let port = free_port();
            let log = std::fs::File::create(std::env::temp_dir().join(format!("cairn-dev-{port}.log"))).unwrap();
            let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
                .args(["dev", "--port", &port.to_string(), "--template", template, "--db", db])
                .args(["--lambda-url", lambda_url])
                .args(more)
                .envs(env.iter().copied())
                .current_dir(workspace())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            // Ready when it accepts connections (up to 60 s on a loaded machine).
            for _ in 0..1_200 {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break;
                }
                if cairn_tests::listening(port) {
                    return DevServer { child, url: format!("http://127.0.0.1:{port}") };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
        panic!("cairn dev did not start listening (see the cairn-dev-<port>.log files in the temp directory)")
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

pub(crate) async fn get(url: &str) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

pub(crate) async fn post(url: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new().post(url).json(&body).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// Polls `check` every 200 ms until it returns `Some`, failing after `secs` with `what`.
pub(crate) async fn until<T, F, Fut>(what: &str, secs: u64, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {secs} s waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// AWS SDK configuration for a local endpoint with dummy credentials.
pub(crate) async fn sdk_config(url: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(url)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_eventbridge::config::Credentials::new(
            "cairn-dev",
            "cairn-dev",
            None,
            None,
            "tests",
        ))
        .load()
        .await
}

/// `cargo lambda watch` on `port` running every function with the environment `cairn dev
/// --watch` gives them (the dev server at `dev_url` as EventBridge, Scheduler and SQS, the
/// SQLite file `db`), plus `extra`.
pub(crate) fn watch_functions(
    cargo_lambda: &str,
    port: u16,
    dev_url: &str,
    db: &str,
    extra: &[(&str, String)],
) -> Watch {
    let mut env = cairn_dev::cli::function_env(dev_url, db, "cairn");
    env.extend(extra.iter().map(|(name, value)| (name.to_string(), value.clone())));
    let env: Vec<(&str, String)> = env.iter().map(|(name, value)| (name.as_str(), value.clone())).collect();
    Watch::start_on(cargo_lambda, port, &env)
}

/// Where the dev tests keep Readwise keys (what template.yaml names `/<stack>/readwise/users/`).
pub(crate) const READWISE_KEYS: &str = "/cairn/readwise/users/";

/// Stores each user's Readwise key in the dev server's SSM Parameter Store, as an operator would
/// with `aws ssm put-parameter`; readwise-fetch-books reads it there at run time.
#[allow(dead_code)] // Not every test binary stores keys.
pub(crate) async fn put_readwise_keys(url: &str, keys: &[(&str, &str)]) {
    let ssm = aws_sdk_ssm::Client::new(&sdk_config(url).await);
    for (user, key) in keys {
        let put = ssm.put_parameter().name(format!("{READWISE_KEYS}{user}")).value(*key).overwrite(true);
        put.r#type(aws_sdk_ssm::types::ParameterType::SecureString).send().await.expect("the key is stored");
    }
}

/// A TypeScript app (`node app.mjs` in tests/conformance-ts), stopped by its PID on drop.
pub(crate) struct NodeApp(pub(crate) Child);

impl NodeApp {
    /// `node SCRIPT` in `dir` (an app on the official SDK), serving on `port`, its events sent
    /// to the dev server at `dev_url`.
    pub(crate) fn start(script: &str, dir: &str, port: u16, dev_url: &str) -> NodeApp {
        NodeApp(
            Command::new("node")
                .arg(script)
                .current_dir(dir)
                .env("PORT", port.to_string())
                .env("INNGEST_DEV", dev_url)
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        )
    }
}

impl Drop for NodeApp {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

/// Puts one event on the dev server's bus through PutEvents; returns its id.
pub(crate) async fn send(url: &str, name: &str, data: Value) -> String {
    let detail = json!({"name": name, "data": data, "id": cairn::new_event_id(chrono::Utc::now().timestamp_millis())});
    put_detail(url, &detail).await;
    detail["id"].as_str().unwrap().to_string()
}

/// Puts the event `detail` (a Cairn event: name, data, id) on the dev server's bus through
/// PutEvents, as the functions do; again, it is what EventBridge's at-least-once delivery does.
pub(crate) async fn put_detail(url: &str, detail: &Value) {
    let name = detail["name"].as_str().unwrap();
    let body = json!({"Entries": [{"EventBusName": "cairn", "Source": "tests", "DetailType": name, "Detail": detail.to_string()}]});
    let answer: Value = reqwest::Client::new()
        .post(url)
        .header("x-amz-target", "AWSEvents.PutEvents")
        .header("content-type", "application/x-amz-json-1.1")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["FailedEntryCount"], 0, "{answer}");
}

/// The dev server's last `limit` deliveries once none is queued or running (a cron or
/// reconciler tick may be in flight when a test checks that nothing was lost).
#[allow(dead_code)] // Not every test binary checks its deliveries.
pub(crate) async fn settled_invocations(url: &str, limit: usize) -> Vec<Value> {
    until("the deliveries to settle", 120, || async {
        let invocations = get(&format!("{url}/api/invocations?limit={limit}")).await;
        let invocations = invocations["invocations"].as_array().unwrap().clone();
        let settled = invocations.iter().all(|i| i["status"] != "running" && i["status"] != "queued");
        settled.then_some(invocations)
    })
    .await
}

/// The run of `function` for event `event_id`, once its status is one of `statuses`.
pub(crate) async fn run_of(url: &str, function: &str, event_id: &str, statuses: &[&str]) -> Value {
    run_by_id(url, &RunId::for_event(function, event_id), statuses).await
}

/// The run `run_id` (one no event id names: a window's run), once its status is one of
/// `statuses`.
pub(crate) async fn run_by_id(url: &str, run_id: &RunId, statuses: &[&str]) -> Value {
    until(&format!("run {run_id} to be {statuses:?}"), 60, || async {
        let body = get(&format!("{url}/api/runs/{run_id}")).await;
        statuses.contains(&body["run"]["status"].as_str().unwrap_or_default()).then_some(body)
    })
    .await
}
