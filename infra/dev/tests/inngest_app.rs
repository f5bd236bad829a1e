//! `cairn dev -u URL` drives an app built on the official TypeScript SDK (npm `inngest`,
//! tests/conformance-ts) beside the Rust functions under `cargo lambda watch`: one event log, one
//! run list. Covers sync, repeated steps, a parallel plan, a fatal error, a wait satisfied by the
//! matching event only, a retried step, `step.invoke` (answered, delivered twice, timed out, failed, two at once, of
//! an unknown function), a cron
//! function invoked from the API whose `step.sendEvent`s (through the
//! dev server's `/e/{key}`) are routed by template.yaml to a Rust function.
#![allow(clippy::unwrap_used)] // Tests: an unwrap that fails is a failed test.

mod common;

use cairn::RunId;
use cairn_tests::{free_port, workspace};
use common::{DevServer, NodeApp, get, post, run_of, send, until};
use serde_json::{Value, json};

fn steps(body: &Value) -> Vec<(String, String, Value)> {
    body["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let outcome = if s["status"] == "failed" { s["error"]["message"].clone() } else { s["output"].clone() };
            (s["name"].as_str().unwrap().to_string(), s["status"].as_str().unwrap().to_string(), outcome)
        })
        .collect()
}

/// The first logged `inngest/function.invoked` event of the invoke step `correlation_id` names
/// (the caller sends it again whenever it suspends while the step is pending).
async fn invoked_for(url: &str, correlation_id: &Value) -> Value {
    until("the invoke to be logged", 30, || async {
        let events = get(&format!("{url}/api/events?name=inngest/function.invoked&limit=1000")).await;
        let logged = events["events"].as_array().unwrap().clone();
        logged
            .into_iter()
            .rev()
            .find(|event| event["envelope"]["detail"]["data"]["_inngest"]["correlation_id"] == *correlation_id)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cairn_dev_drives_a_typescript_inngest_app_beside_the_rust_functions() {
    let Some(cargo_lambda) = cairn_tests::tools::cargo_lambda() else { return };
    let app_dir = format!("{}/tests/conformance-ts", workspace());
    let Some(_) = cairn_tests::tools::inngest_npm(&app_dir) else { return };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("dev.db").display().to_string();
    let (app_port, watch_port) = (free_port(), free_port());
    let app_url = format!("http://127.0.0.1:{app_port}/api/inngest");
    let dev = DevServer::start_with(
        &format!("{}/template.yaml", workspace()),
        &db,
        &format!("http://127.0.0.1:{watch_port}"),
        &["-u", &app_url],
    );
    let url = dev.url.clone();
    let _app = NodeApp::start("app.mjs", &app_dir, app_port, &url);
    let _watch = common::watch_functions(&cargo_lambda, watch_port, &url, &db, &[]);

    // Synced in band: the app's functions are listed beside the template's.
    let functions = until("the app to sync", 30, || async {
        let list = get(&format!("{url}/api/functions")).await;
        let ids: Vec<String> =
            list["functions"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap().to_string()).collect();
        ids.iter().any(|id| id.starts_with("conformance-")).then_some(ids)
    })
    .await;
    let template_functions = cairn_functions::lambdas().iter().map(|l| l.binary().to_string()).collect::<Vec<_>>();
    assert_eq!(functions[..template_functions.len()], template_functions);
    assert_eq!(
        functions[template_functions.len()..],
        [
            "conformance-hello",
            "conformance-repeated-step",
            "conformance-daily-fan-out",
            "conformance-parallel",
            "conformance-flaky",
            "conformance-fatal",
            "conformance-waiter",
            "conformance-double",
            "conformance-invoker",
            "conformance-flow-sync",
            "conformance-flow-charge",
            "conformance-flow-limited"
        ]
    );

    // Its first attempt fails; Inngest's back-off (15 s plus jitter) runs while the rest goes on.
    let flaky = send(&url, "test/flaky", json!({})).await;
    let retrying = run_of(&url, "conformance-flaky", &flaky, &["sleeping"]).await;
    assert_eq!(retrying["steps"][0]["status"], "retrying");
    assert_eq!(retrying["steps"][0]["error"]["message"], "boom");

    let repeat = send(&url, "test/repeat", json!({"userId": "u1"})).await;
    let body = run_of(&url, "conformance-repeated-step", &repeat, &["completed"]).await;
    assert_eq!(body["run"]["output"], json!({"userId": "u1", "total": 30}));
    assert_eq!(
        steps(&body),
        [
            ("fetch-page".into(), "completed".into(), json!({"page": 1, "count": 10})),
            ("fetch-page".into(), "completed".into(), json!({"page": 2, "count": 10})),
            ("fetch-page".into(), "completed".into(), json!({"page": 3, "count": 10})),
            ("save-count".into(), "completed".into(), json!(30)),
        ]
    );
    // Inngest's step ids: sha1 of the name, then of "name:1", "name:2".
    let ids: Vec<&str> = body["steps"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids[..3],
        [
            cairn::StepId::hash("fetch-page").as_str(),
            cairn::StepId::hash("fetch-page:1").as_str(),
            cairn::StepId::hash("fetch-page:2").as_str()
        ]
    );

    let parallel = send(&url, "test/parallel", json!({})).await;
    let body = run_of(&url, "conformance-parallel", &parallel, &["completed"]).await;
    assert_eq!(body["run"]["output"], json!(["A", "B"]));

    let fatal = send(&url, "test/fatal", json!({})).await;
    let body = run_of(&url, "conformance-fatal", &fatal, &["failed"]).await;
    assert_eq!(body["run"]["error"]["message"], "nope");
    assert_eq!(steps(&body), [("fatal-step".into(), "failed".into(), json!("nope"))]);

    // `step.invoke`: the invoked run starts from `inngest/function.invoked` and its
    // `inngest/function.finished` answers the caller's step.
    let invoke = send(&url, "test/invoke", json!({})).await;
    let body = run_of(&url, "conformance-invoker", &invoke, &["completed"]).await;
    assert_eq!(body["run"]["output"], json!(42));
    assert_eq!(steps(&body), [("call-double".into(), "completed".into(), json!(42))]);
    assert_eq!(body["steps"][0]["kind"], "invoke");
    let caller = RunId::for_event("conformance-invoker", &invoke);
    let call_step = cairn::StepId::hash("call-double");
    let invoked_event = invoked_for(&url, &json!(format!("{caller}.{call_step}"))).await;
    assert_eq!(invoked_event["targets"], json!(["inngest:conformance-double"]));
    assert_eq!(
        invoked_event["envelope"]["detail"]["data"],
        json!({"n": 21, "_inngest": {"fn_id": "conformance-double", "correlation_id": format!("{caller}.{call_step}"), "source_fn_id": "conformance-invoker"}})
    );
    let child = run_of(&url, "conformance-double", invoked_event["event_id"].as_str().unwrap(), &["completed"]).await;
    assert_eq!(child["run"]["output"], json!(42));
    assert_eq!(child["run"]["invoked_by"], json!({"run_id": caller, "step_id": call_step}));

    // Delivered again (EventBridge delivers at least once), the invoke starts no second run and
    // its answer changes neither run.
    let correlation_id = json!(format!("{caller}.{call_step}"));
    let finished = until("the invoked run's answer to be logged", 30, || async {
        let events = get(&format!("{url}/api/events?name=inngest/function.finished")).await;
        let answers = events["events"].as_array().unwrap().clone();
        answers.into_iter().find(|event| event["envelope"]["detail"]["data"]["correlation_id"] == correlation_id)
    })
    .await;
    let deliveries = |event: &Value| {
        let (url, id) = (url.clone(), event["event_id"].as_str().unwrap().to_string());
        async move { get(&format!("{url}/api/events/{id}")).await["invocations"].as_array().unwrap().clone() }
    };
    let before = (deliveries(&invoked_event).await.len(), deliveries(&finished).await.len());
    common::put_detail(&url, &invoked_event["envelope"]["detail"]).await;
    common::put_detail(&url, &finished["envelope"]["detail"]).await;
    until("the second deliveries to be handled", 30, || async {
        let (invokes, answers) = (deliveries(&invoked_event).await, deliveries(&finished).await);
        let done = invokes.len() == 2 * before.0 && answers.len() == 2 * before.1;
        (done && invokes.iter().chain(&answers).all(|i| i["status"] == "ok")).then_some(())
    })
    .await;
    let doubles = get(&format!("{url}/api/runs?function=conformance-double")).await;
    assert_eq!(doubles["runs"].as_array().unwrap().len(), 1, "{doubles}");
    let again = run_of(&url, "conformance-invoker", &invoke, &["completed"]).await;
    assert_eq!((&again["run"]["output"], steps(&again)), (&json!(42), steps(&body)));

    // An invoke that outlives its timeout fails the caller with Inngest's error; the invoked
    // run goes on (it sleeps an hour).
    let slow = send(&url, "test/invoke", json!({"slow": true})).await;
    let body = run_of(&url, "conformance-invoker", &slow, &["failed"]).await;
    assert_eq!(body["run"]["error"]["message"], "Timed out waiting for invoked function to complete");
    assert_eq!(body["steps"][0]["error"]["name"], "InngestInvokeTimeoutError");
    let slow_call =
        json!(format!("{}.{}", RunId::for_event("conformance-invoker", &slow), cairn::StepId::hash("call-hello")));
    let slow_invoke = invoked_for(&url, &slow_call).await;
    assert_eq!(slow_invoke["targets"], json!(["inngest:conformance-hello"]));
    let hello_run = run_of(&url, "conformance-hello", slow_invoke["event_id"].as_str().unwrap(), &["sleeping"]).await;
    assert_eq!(hello_run["run"]["event"]["data"]["userId"], "x");

    // A failed invoked run fails the caller's step with its error.
    let failing = send(&url, "test/invoke", json!({"failing": true})).await;
    let body = run_of(&url, "conformance-invoker", &failing, &["failed"]).await;
    assert_eq!(body["run"]["error"]["message"], "nope");
    assert_eq!(steps(&body), [("call-fatal".into(), "failed".into(), json!("nope"))]);

    // Two invokes at once are both sent; the caller joins both results.
    let both = send(&url, "test/invoke", json!({"both": true})).await;
    let body = run_of(&url, "conformance-invoker", &both, &["completed"]).await;
    assert_eq!(body["run"]["output"], json!([2, 4]));
    assert_eq!(
        steps(&body),
        [("double-one".into(), "completed".into(), json!(2)), ("double-two".into(), "completed".into(), json!(4))]
    );
    // Both were sent when the caller suspended, before either invoked run had finished.
    let both_caller = RunId::for_event("conformance-invoker", &both);
    let call = |name: &str| json!(format!("{both_caller}.{}", cairn::StepId::hash(name)));
    let sent = [invoked_for(&url, &call("double-one")).await, invoked_for(&url, &call("double-two")).await];
    let answers = get(&format!("{url}/api/events?name=inngest/function.finished&limit=1000")).await;
    let first_answer = answers["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| {
            [call("double-one"), call("double-two")].contains(&event["envelope"]["detail"]["data"]["correlation_id"])
        })
        .map(|event| event["received_at"].as_i64().unwrap())
        .min()
        .unwrap();
    for invoke in &sent {
        assert!(invoke["received_at"].as_i64().unwrap() <= first_answer, "{invoke} after {first_answer}");
    }

    // An invoke of a function nothing serves fails at once, naming it.
    let missing = send(&url, "test/invoke", json!({"missing": true})).await;
    let body = run_of(&url, "conformance-invoker", &missing, &["failed"]).await;
    assert_eq!(body["run"]["error"]["message"], "invoked function `conformance-missing` does not exist");

    let wait = send(&url, "test/wait", json!({"id": 1})).await;
    run_of(&url, "conformance-waiter", &wait, &["waiting"]).await;
    let other = send(&url, "test/approved", json!({"id": 2})).await;
    until("the other approval to be delivered", 30, || async {
        let body = get(&format!("{url}/api/events/{other}")).await;
        body["invocations"]
            .as_array()
            .is_some_and(|i| !i.is_empty() && i.iter().all(|i| i["status"] == "ok"))
            .then_some(())
    })
    .await;
    assert_eq!(run_of(&url, "conformance-waiter", &wait, &["waiting", "completed"]).await["run"]["status"], "waiting");
    send(&url, "test/approved", json!({"id": 1})).await;
    let body = run_of(&url, "conformance-waiter", &wait, &["completed"]).await;
    assert_eq!(body["run"]["output"], json!({"id": 1}));

    // The cron function, invoked by hand, sends two events through /e/{key}; template.yaml routes
    // them to the Rust readwise-fetch-books, which finds no key for these users and fails at once.
    let (status, invoked) =
        post(&format!("{url}/api/functions/conformance-daily-fan-out/invoke"), json!({"data": {"cron": "0 3 * * *"}}))
            .await;
    assert_eq!(status, 200, "{invoked}");
    let body = run_of(&url, "conformance-daily-fan-out", invoked["event_id"].as_str().unwrap(), &["completed"]).await;
    assert_eq!(body["run"]["output"], json!({"sent": 2}));
    let sent = until("the sent events to reach the Rust function", 60, || async {
        let events = get(&format!("{url}/api/events?name=readwise/fetch-books")).await;
        let events = events["events"].as_array().unwrap().clone();
        (events.len() == 2).then_some(events)
    })
    .await;
    for event in &sent {
        assert_eq!(
            (event["source"].as_str(), &event["targets"]),
            (Some("inngest.app"), &json!(["readwise-fetch-books"]))
        );
        let run = run_of(&url, "readwise-fetch-books", event["event_id"].as_str().unwrap(), &["failed"]).await;
        let message = run["run"]["error"]["message"].as_str().unwrap();
        let expected =
            ["u1", "u2"].map(|u| format!("no Readwise key is stored for user {u} (/cairn/readwise/users/{u})"));
        assert!(expected.contains(&message.to_string()), "{message}");
    }

    let body = until("the flaky run's retry to succeed", 90, || async {
        let body = get(&format!("{url}/api/runs/{}", RunId::for_event("conformance-flaky", &flaky))).await;
        (body["run"]["status"] == "completed").then_some(body)
    })
    .await;
    assert_eq!(body["run"]["output"], json!("ok"));
    assert_eq!(
        (body["steps"][0]["status"].as_str(), body["steps"][0]["attempts"].as_u64()),
        (Some("completed"), Some(2))
    );
}
