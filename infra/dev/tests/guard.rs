//! What a web page or a stranger cannot make the dev server do: answer a Host that is not a
//! loopback name (DNS rebinding), accept a cross-origin write, a write that is not JSON (a
//! `text/plain` fetch, a form post) or a body-less POST that changes state, or register an app
//! URL that is neither given with `-u` nor on loopback. Every refusal is checked for its exact
//! status and message, and that nothing was logged, queued or scheduled.
#![allow(clippy::unwrap_used)] // Tests: an unwrap that fails is a failed test.

mod common;

use cairn_tests::workspace;
use common::{DevServer, get};
use serde_json::{Value, json};

fn server(more: &[&str]) -> (DevServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("dev.db").display().to_string();
    // Nothing listens on port 9: a delivery would fail, and still be recorded.
    let dev = DevServer::start_with(&format!("{}/template.yaml", workspace()), &db, "http://127.0.0.1:9", more);
    (dev, dir)
}

/// Sends `method path` with these headers and body; returns the status and the JSON body.
async fn send(url: &str, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut request = client.request(method.parse().unwrap(), format!("{url}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.body(body.to_string());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn refusal(kind: &str, message: &str) -> Value {
    json!({"__type": kind, "message": message, "error": message})
}

/// Nothing was logged, queued or scheduled (but the template's own schedules).
async fn nothing_accepted(url: &str) {
    assert_eq!(get(&format!("{url}/api/events")).await["total"], 0);
    assert_eq!(get(&format!("{url}/api/invocations")).await["invocations"], json!([]));
    let schedules = get(&format!("{url}/api/schedules")).await;
    let groups: Vec<&str> =
        schedules["schedules"].as_array().unwrap().iter().map(|s| s["group_name"].as_str().unwrap()).collect();
    assert!(groups.iter().all(|g| *g == "template"), "{schedules}");
}

const ATTACK_SCHEDULE: &str = r#"{"ScheduleExpression":"at(2000-01-01T00:00:00)","FlexibleTimeWindow":{"Mode":"OFF"},"Target":{"Arn":"x:hello","RoleArn":"r","Input":"{\"name\":\"app/my.event\",\"data\":{}}"}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_loopback_host_names_are_answered() {
    let (dev, _dir) = server(&[]);
    let url = dev.url.clone();
    let port = url.rsplit(':').next().unwrap().to_string();
    for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}"), format!("[::1]:{port}"), "localhost".into()]
    {
        let (status, body) = send(&url, "GET", "/api/health", &[("host", &host)], None).await;
        assert_eq!((status, body), (200, json!({"ok": true, "server": "cairn-dev"})), "Host {host}");
    }
    // A DNS-rebinding page reads and writes as `evil.test`: refused, reads included.
    let evil = format!("evil.test:{port}");
    let message = format!(
        "the dev server answers only requests for localhost, 127.0.0.1 or [::1] (a guard against DNS rebinding), not Host `{evil}`; to reach it under another name, start it with --allowed-host evil.test"
    );
    for path in ["/", "/api/events", "/api/runs"] {
        let (status, body) = send(&url, "GET", path, &[("host", &evil)], None).await;
        assert_eq!((status, body), (403, refusal("AccessDeniedException", &message)), "{path}");
    }
    let (status, body) = send(
        &url,
        "POST",
        "/api/functions/hello/invoke",
        &[("host", &evil), ("content-type", "application/json"), ("origin", &format!("http://{evil}"))],
        Some(r#"{"data": {}}"#),
    )
    .await;
    assert_eq!((status, body), (403, refusal("AccessDeniedException", &message)));
    let (status, _) = send(&url, "GET", "/api/health", &[("host", "127.0.0.1.evil.test")], None).await;
    assert_eq!(status, 403);
    nothing_accepted(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_given_with_allowed_host_is_answered() {
    let (dev, _dir) = server(&["--allowed-host", "cairn.internal"]);
    let (status, _) = send(&dev.url, "GET", "/api/health", &[("host", "Cairn.Internal:8288")], None).await;
    assert_eq!(status, 200);
    let (status, _) = send(&dev.url, "GET", "/api/health", &[("host", "evil.test")], None).await;
    assert_eq!(status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_that_are_not_json_or_come_from_another_origin_are_refused() {
    let (dev, _dir) = server(&[]);
    let url = dev.url.clone();
    let not_json = |what: &str, path: &str, got: &str| {
        let message = format!(
            "{what} {path} refused: the dev server takes writes only as JSON (Content-Type application/json, application/x-amz-json-1.0 or application/x-amz-json-1.1), so that a web page cannot forge them; got {got}"
        );
        refusal("UnsupportedMediaTypeException", &message)
    };
    // The drive-by CSRF of the review: a text/plain CreateSchedule that fires at once.
    let path = "/schedules/attack?groupName=cairn";
    let (status, body) = send(&url, "POST", path, &[("content-type", "text/plain")], Some(ATTACK_SCHEDULE)).await;
    assert_eq!((status, body), (415, not_json("POST", "/schedules/attack", "`text/plain`")));
    // Body-less POSTs that would cancel, rerun or invoke.
    for path in ["/api/runs/run_x/cancel", "/api/runs/run_x/rerun", "/api/functions/hello/invoke"] {
        let (status, body) = send(&url, "POST", path, &[], None).await;
        assert_eq!((status, body), (415, not_json("POST", path, "no Content-Type")));
    }
    // A form post, a text/plain PutEvents and Inngest's event API.
    let path = "/api/functions/hello/invoke";
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let (status, body) = send(&url, "POST", path, &form, Some("data=1")).await;
    assert_eq!((status, body), (415, not_json("POST", path, "`application/x-www-form-urlencoded`")));
    let events = r#"{"Entries":[{"EventBusName":"cairn","Source":"x","DetailType":"app/my.event","Detail":"{}"}]}"#;
    let plain = [("content-type", "text/plain;charset=UTF-8"), ("x-amz-target", "AWSEvents.PutEvents")];
    let (status, body) = send(&url, "POST", "/", &plain, Some(events)).await;
    assert_eq!((status, body), (415, not_json("POST", "/", "`text/plain;charset=UTF-8`")));
    let (status, body) =
        send(&url, "POST", "/e/key", &[("content-type", "text/plain")], Some(r#"{"name":"a/b"}"#)).await;
    assert_eq!((status, body), (415, not_json("POST", "/e/key", "`text/plain`")));
    // JSON from another origin.
    let json = ("content-type", "application/json");
    let cross = |origin: &str, method: &str, path: &str| {
        let message = format!("cross-origin {method} {path} refused: Origin `{origin}` is not this dev server ({url})");
        refusal("AccessDeniedException", &message)
    };
    for origin in ["http://evil.test", "null", "http://127.0.0.1:1"] {
        let (status, body) = send(&url, "POST", path, &[json, ("origin", origin)], Some("{}")).await;
        assert_eq!((status, body), (403, cross(origin, "POST", path)));
    }
    let (status, body) = send(&url, "DELETE", "/schedules/reconcile", &[("origin", "http://evil.test")], None).await;
    assert_eq!((status, body), (403, cross("http://evil.test", "DELETE", "/schedules/reconcile")));
    nothing_accepted(&url).await;

    // What the dashboard, the CLI, the SDKs and the Inngest SDK send is accepted.
    let own = url.clone();
    let (status, body) = send(&url, "POST", path, &[json, ("origin", &own)], Some(r#"{"data": {"n": 1}}"#)).await;
    assert_eq!(status, 200, "{body}");
    let target = [("content-type", "application/x-amz-json-1.1"), ("x-amz-target", "AWSEvents.PutEvents")];
    let (status, body) = send(&url, "POST", "/", &target, Some(events)).await;
    assert_eq!((status, &body["FailedEntryCount"]), (200, &json!(0)), "{body}");
    let (status, body) =
        send(&url, "POST", "/e/key", &[("content-type", "application/json")], Some(r#"{"name":"a/b"}"#)).await;
    assert_eq!(status, 200, "{body}");
    // A body-less DELETE (the SDK's DeleteSchedule) needs no content type: browsers cannot send
    // one across origins without a CORS preflight, which the dev server never grants.
    let (status, body) = send(&url, "DELETE", "/schedules/nope?groupName=cairn", &[], None).await;
    assert_eq!((status, &body["Message"]), (404, &json!("Schedule nope does not exist.")));
    let (status, _) = send(&url, "OPTIONS", path, &[("origin", "http://evil.test")], None).await;
    assert_eq!(status, 405, "no CORS preflight is granted");
    assert_eq!(get(&format!("{url}/api/events")).await["total"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fn_register_takes_only_loopback_or_command_line_app_urls() {
    let (dev, _dir) = server(&["-u", "http://app.internal:3000/api/inngest"]);
    let url = dev.url.clone();
    let register = |app: &str| {
        json!({"url": app, "v": "0.1", "deployType": "ping", "sdk": "js:v3", "framework": "node", "appName": "x",
            "functions": [{"id": "x-fn", "name": "x", "triggers": [{"event": "app/my.event"}],
                "steps": {"step": {"id": "step", "name": "step", "runtime": {"type": "http", "url": app}}}}]})
        .to_string()
    };
    let json = [("content-type", "application/json")];
    for app in ["https://attacker.example/api/inngest", "http://10.0.0.7:3000/api/inngest", "file:///etc/passwd"] {
        let (status, body) = send(&url, "POST", "/fn/register", &json, Some(&register(app))).await;
        let error = format!(
            "app URL `{app}` refused: the dev server drives only apps given with -u or served on loopback (localhost, 127.0.0.1, [::1])"
        );
        assert_eq!((status, body), (403, json!({"code": "forbidden", "error": error, "status": 403})), "{app}");
    }
    let functions = get(&format!("{url}/api/functions")).await;
    assert!(functions["functions"].as_array().unwrap().iter().all(|f| f["id"] != "x-fn"), "{functions}");
    for app in ["http://localhost:3001/api/other", "http://app.internal:3000/api/inngest"] {
        let (status, body) = send(&url, "POST", "/fn/register", &json, Some(&register(app))).await;
        assert_eq!((status, body), (200, json!({"ok": true, "modified": true})), "{app}");
        let functions = get(&format!("{url}/api/functions")).await;
        let synced =
            functions["functions"].as_array().unwrap().iter().any(|f| f["id"] == "x-fn" && f["app_url"] == app);
        assert!(synced, "{functions}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_page_in_chromium_changes_and_reads_nothing() {
    use cairn::{EventPayload, RunId, RunMeta, RunStatus, RunStore, SqliteStore};
    let chromium = std::process::Command::new(format!("{}/infra/local/ensure-tools.sh", workspace()))
        .arg("chromium")
        .output()
        .unwrap();
    assert!(chromium.status.success(), "{}", String::from_utf8_lossy(&chromium.stderr));
    let (dev, dir) = server(&[]);
    let url = dev.url.clone();
    // A sleeping run the page tries to cancel and rerun.
    let store = SqliteStore::open(dir.path().join("dev.db").to_str().unwrap()).unwrap();
    let run = RunId::new("run_victim");
    let mut meta = RunMeta::new(run.clone(), "hello", EventPayload::new("app/my.event", json!({})), 1_000);
    meta.status = RunStatus::Sleeping;
    store.create_run(meta).await.unwrap();

    let output = std::process::Command::new("node")
        .args(["attack.mjs", &url, run.as_str()])
        .current_dir(format!("{}/tests/dashboard", env!("CARGO_MANIFEST_DIR")))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let seen: Value = serde_json::from_slice(&output.stdout).unwrap();

    // Each write from the other origin reached the dev server and was refused for its Origin.
    let requests = seen["requests"].as_array().unwrap();
    let answered = |host: &str, method: &str| -> Vec<(String, u64, String)> {
        requests
            .iter()
            .filter(|r| r["host"] == host && r["method"] == method)
            .map(|r| {
                let error = r["body"]["error"].as_str().unwrap_or_default();
                (r["path"].as_str().unwrap().to_string(), r["status"].as_u64().unwrap(), error.to_string())
            })
            .collect()
    };
    let mut posts = answered("loopback", "POST");
    posts.sort();
    let paths: Vec<&str> = posts.iter().map(|(path, _, _)| path.as_str()).collect();
    let cancel = format!("/api/runs/{run}/cancel");
    let rerun = format!("/api/runs/{run}/rerun");
    assert_eq!(
        paths,
        [
            "/api/functions/hello/invoke",
            "/api/functions/hello/invoke",
            cancel.as_str(),
            cancel.as_str(),
            rerun.as_str(),
            "/fn/register",
            "/schedules/attack-form?groupName=cairn",
            "/schedules/attack?groupName=cairn",
        ],
        "{seen}"
    );
    // The fetches' answers are opaque even to the browser's tools; the forms' show the reason.
    let mut explained = 0;
    for (path, status, error) in &posts {
        assert_eq!(*status, 403, "{path}: {error}");
        if !error.is_empty() {
            let path = path.split('?').next().unwrap();
            assert!(
                error.starts_with(&format!("cross-origin POST {path} refused: Origin `http://127.0.0.1:")),
                "{error}"
            );
            assert!(error.ends_with(&format!("` is not this dev server ({url})")), "{error}");
            explained += 1;
        }
    }
    assert_eq!(explained, 2, "the two form posts: {posts:?}");
    // The JSON fetch needs a CORS preflight, which is never granted: it is not even sent.
    assert_eq!(seen["crossOrigin"]["jsonWithPreflight"], json!({"error": "TypeError"}));
    for (name, outcome) in seen["crossOrigin"].as_object().unwrap() {
        if name != "jsonWithPreflight" {
            assert_eq!(outcome, &json!({"type": "opaque", "status": 0}), "{name}");
        }
    }

    // DNS rebinding: every request with Host evil.test is refused, reads included.
    let port = url.rsplit(':').next().unwrap();
    let host_refusal = format!(
        "the dev server answers only requests for localhost, 127.0.0.1 or [::1] (a guard against DNS rebinding), not Host `evil.test:{port}`; to reach it under another name, start it with --allowed-host evil.test"
    );
    let refused = refusal("AccessDeniedException", &host_refusal);
    let rebinding = &seen["rebinding"];
    assert_eq!((rebinding["eventsStatus"].as_u64(), &rebinding["eventsBody"]), (Some(403), &refused));
    assert_eq!(rebinding["rootStatus"], 403);
    for read in ["events", "invoke", "register"] {
        assert_eq!(rebinding["fetched"][read], json!({"status": 403, "body": refused}), "{read}");
    }
    let mut evil: Vec<(String, u64)> = ["GET", "POST"]
        .iter()
        .flat_map(|method| answered("evil.test", method))
        .map(|(path, status, _)| (path, status))
        .collect();
    evil.sort();
    assert_eq!(
        evil,
        [
            ("/".to_string(), 403),
            ("/api/events".to_string(), 403),
            ("/api/events".to_string(), 403),
            ("/api/functions/hello/invoke".to_string(), 403),
            ("/fn/register".to_string(), 403)
        ]
    );

    // Nothing happened: no event, invocation or schedule, the run still sleeps, no rerun.
    nothing_accepted(&url).await;
    let runs = get(&format!("{url}/api/runs")).await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1, "{runs}");
    assert_eq!(
        (runs["runs"][0]["run_id"].as_str(), runs["runs"][0]["status"].as_str()),
        (Some("run_victim"), Some("sleeping"))
    );
    let functions = get(&format!("{url}/api/functions")).await;
    assert!(functions["functions"].as_array().unwrap().iter().all(|f| f.get("app_url").is_none()), "{functions}");
}
