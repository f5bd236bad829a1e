//! The endpoint driven with `tower::ServiceExt::oneshot`, as an Inngest executor calls it:
//! exact statuses, headers, opcodes, step ids and data; signing; bad input.
#![allow(clippy::unwrap_used)] // Tests: an unwrap that fails is a failed test.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use cairn::prelude::*;
use cairn::testing::ManualClock;
use cairn::{Registry, StepId};
use cairn_http::{ServeConfig, SigningKey, serve_with_clock, signing};
use http_body_util::BodyExt;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use tower::ServiceExt;

const KEY: &str = "signkey-test-8ee2262a15e8d3c42d6a840db7af3de2aab08ef632b32a37a687f24b34dba3ff";

fn functions(calls: Arc<AtomicU32>) -> Registry {
    let hello = Function::new("hello")
        .on_event("app/my.event")
        .handler(move |_: Event, step: Step| {
            let calls = Arc::clone(&calls);
            async move {
                let result: Value = step
                    .run("step-name", || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        Ok(json!({"success": true}))
                    })
                    .await?;
                step.sleep("wait", "1h").await?;
                Ok(result)
            }
        })
        .unwrap();
    let parallel = Function::new("parallel")
        .on_event("test/parallel")
        .handler(|_: Event, step: Step| async move {
            let (a, b) =
                join!(step.run("a", || async { Ok("A".to_string()) }), step.run("b", || async { Ok("B".to_string()) }));
            Ok(vec![a?, b?])
        })
        .unwrap();
    let flaky = Function::new("flaky")
        .on_event("test/flaky")
        .retries(2)
        .handler(|_: Event, step: Step| async move {
            step.run("may-fail", || async { Err::<String, _>(StepError::new("boom")) }).await
        })
        .unwrap();
    let fatal = Function::new("fatal")
        .on_event("test/fatal")
        .handler(|_: Event, step: Step| async move {
            step.run("fatal-step", || async { Err::<(), _>(StepError::non_retriable("nope")) }).await
        })
        .unwrap();
    let waiter = Function::new("waiter")
        .on_event("test/wait")
        .awaits("test/approved")
        .handler(|_: Event, step: Step| async move {
            let wait = WaitFor::event("test/approved").timeout("1d").if_expr("async.data.id == event.data.id");
            Ok(step.wait_for_event("wait-approval", wait).await?.map(|e| e.data))
        })
        .unwrap();
    let invoker = Function::new("invoker")
        .on_event("test/invoke")
        .invokes("hello")
        .handler(|_: Event, step: Step| async move {
            step.invoke::<Value>("call-hello", Invoke::function("hello").data(json!({"userId": "x"}))).await
        })
        .unwrap();
    let slow = Function::new("slow")
        .on_event("test/slow")
        .handler(|_: Event, step: Step| async move {
            step.run("slow-step", || async {
                tokio::time::sleep(std::time::Duration::from_millis(350)).await;
                Ok("done".to_string())
            })
            .await
        })
        .unwrap();
    let patient = Function::new("patient")
        .on_event("test/patient")
        .handler(|_: Event, step: Step| async move {
            let options = StepOptions::new("hung-call")
                .timeout(std::time::Duration::from_millis(20))
                .backoff(Backoff::table(["45s", "2m"]));
            step.run(options, std::future::pending::<StepResult<()>>).await
        })
        .unwrap();
    let signaled = Function::new("signaled")
        .on_event("test/signaled")
        .signals()
        .handler(|event: Event, step: Step| async move {
            let signal = format!("approve-{}", event.data["id"]);
            let got = step.wait_for_signal::<Value>("approval", &signal, "2h").await?;
            let events = step.events::<Value>()?.len();
            Ok(json!({"signal": got, "events": events}))
        })
        .unwrap();
    let mapped = Function::new("mapped")
        .on_event("test/mapped")
        .handler(|_: Event, step: Step| async move {
            step.map("fetch", ["a", "bb", "ccc"], 2, |page| async move { Ok(page.len()) }).await
        })
        .unwrap();
    let raced = Function::new("raced")
        .on_event("test/raced")
        .awaits("test/reply")
        .handler(|_: Event, step: Step| async move {
            use futures::FutureExt;
            let reply = step
                .wait_for_event::<Value>("reply", WaitFor::event("test/reply").timeout("1d"))
                .map(|got| got.map(|event| event.is_some()));
            let give_up = step.sleep("give-up", "1h").map(|slept| slept.map(|()| false));
            let (winner, replied) = step.race("first", vec![reply.boxed(), give_up.boxed()]).await?;
            Ok(json!([winner, replied]))
        })
        .unwrap();
    Registry::new([hello, parallel, flaky, fatal, waiter, invoker, slow, patient, signaled, mapped, raced]).unwrap()
}

const NOW: i64 = 1_800_000_000_000;

struct Endpoint {
    router: axum::Router,
    calls: Arc<AtomicU32>,
}

fn endpoint(config: ServeConfig) -> Endpoint {
    let calls = Arc::new(AtomicU32::new(0));
    let router = serve_with_clock(config, functions(Arc::clone(&calls)), Arc::new(ManualClock::at(NOW)));
    Endpoint { router, calls }
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
    raw: Vec<u8>,
}

async fn send(endpoint: &Endpoint, request: Request<Body>) -> Reply {
    let response = endpoint.router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let raw = response.into_body().collect().await.unwrap().to_bytes().to_vec();
    let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    Reply { status, headers, body, raw }
}

fn call_body(event: &str, steps: Value, ctx: Value) -> Value {
    let mut context = json!({"run_id": "01J0000000000000000000RUN1", "attempt": 0});
    for (k, v) in ctx.as_object().unwrap() {
        context[k] = v.clone();
    }
    json!({"event": {"name": event, "data": {"id": 7}, "id": "ev1", "ts": 1}, "events": [], "steps": steps, "ctx": context, "version": 2})
}

async fn post(endpoint: &Endpoint, function: &str, step: &str, body: &Value) -> Reply {
    let uri = format!("/?fnId=app-{function}&stepId={step}");
    send(endpoint, Request::post(uri).body(Body::from(body.to_string())).unwrap()).await
}

fn hid(name: &str) -> String {
    StepId::hash(name).to_string()
}

#[tokio::test]
async fn get_introspects_in_dev_mode() {
    let e = endpoint(ServeConfig::dev("app"));
    let reply = send(&e, Request::get("/").body(Body::empty()).unwrap()).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.body,
        json!({"extra": {"native_crypto": true}, "has_event_key": false, "has_signing_key": false, "function_count": 11, "mode": "dev", "schema_version": "2024-05-24"})
    );
    assert_eq!(reply.headers["x-inngest-sdk"], "cairn:v0.1.0");
    assert_eq!(reply.headers["x-inngest-req-version"], "2");
}

#[tokio::test]
async fn hello_runs_one_step_per_request_then_sleeps_then_returns() {
    let e = endpoint(ServeConfig::dev("app"));
    let first = post(&e, "hello", "step", &call_body("app/my.event", json!({}), json!({}))).await;
    assert_eq!(first.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        first.body,
        json!([{"id": hid("step-name"), "op": "StepRun", "name": "step-name", "displayName": "step-name", "opts": {},
                "userland": {"id": "step-name"}, "data": {"success": true}}])
    );
    let memo = json!({ hid("step-name"): {"data": {"success": true}} });
    let second = post(&e, "hello", "step", &call_body("app/my.event", memo.clone(), json!({}))).await;
    assert_eq!(
        second.body,
        json!([{"id": hid("wait"), "op": "Sleep", "name": "1h", "displayName": "wait", "opts": {}, "userland": {"id": "wait"}, "data": null}])
    );
    let mut done = memo.clone();
    done[hid("wait")] = Value::Null;
    let last = post(&e, "hello", "step", &call_body("app/my.event", done, json!({}))).await;
    assert_eq!((last.status, last.body), (StatusCode::OK, json!({"success": true})));
    assert_eq!(e.calls.load(Ordering::SeqCst), 1, "the memoized step never ran again");
}

#[tokio::test]
async fn parallel_steps_are_planned_then_run_by_target_then_joined() {
    let e = endpoint(ServeConfig::dev("app"));
    let plan = post(&e, "parallel", "step", &call_body("test/parallel", json!({}), json!({}))).await;
    let ops: Vec<(String, String)> = plan
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|op| (op["op"].as_str().unwrap().into(), op["id"].as_str().unwrap().into()))
        .collect();
    assert_eq!(ops, vec![("StepPlanned".into(), hid("a")), ("StepPlanned".into(), hid("b"))]);
    let b = post(
        &e,
        "parallel",
        &hid("b"),
        &call_body("test/parallel", json!({}), json!({"disable_immediate_execution": true})),
    )
    .await;
    assert_eq!((b.body[0]["op"].clone(), b.body[0]["data"].clone()), (json!("StepRun"), json!("B")));
    let both = json!({ hid("a"): {"data": "A"}, hid("b"): {"data": "B"} });
    let joined = post(&e, "parallel", "step", &call_body("test/parallel", both, json!({}))).await;
    assert_eq!((joined.status, joined.body), (StatusCode::OK, json!(["A", "B"])));
}

#[tokio::test]
async fn a_failing_step_errors_until_its_last_attempt_then_fails() {
    let e = endpoint(ServeConfig::dev("app"));
    let early =
        post(&e, "flaky", "step", &call_body("test/flaky", json!({}), json!({"attempt": 0, "max_attempts": 3}))).await;
    assert_eq!(early.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(early.headers["x-inngest-no-retry"], "false");
    // The whole opcode, as the TypeScript SDK writes it: a retriable attempt's error, no data.
    let error = json!({"name": "Error", "message": "boom", "stack": "", "__serialized": true});
    assert_eq!(
        early.body,
        json!([{"id": hid("may-fail"), "op": "StepError", "name": "may-fail", "displayName": "may-fail", "opts": {},
                "userland": {"id": "may-fail"}, "error": error, "data": null}])
    );
    let last =
        post(&e, "flaky", "step", &call_body("test/flaky", json!({}), json!({"attempt": 2, "max_attempts": 3}))).await;
    assert_eq!(last.headers["x-inngest-no-retry"], "true");
    assert_eq!(
        last.body,
        json!([{"id": hid("may-fail"), "op": "StepFailed", "name": "may-fail", "displayName": "may-fail", "opts": {},
                "userland": {"id": "may-fail"}, "error": error, "data": error}])
    );
    let fatal = post(&e, "fatal", "step", &call_body("test/fatal", json!({}), json!({}))).await;
    assert_eq!(
        (fatal.body[0]["op"].clone(), fatal.headers["x-inngest-no-retry"].clone()),
        (json!("StepFailed"), "true".parse().unwrap())
    );
    // Replayed with the failure memoized, the uncaught error fails the function for good.
    let memo = json!({ hid("fatal-step"): {"error": {"name": "NonRetriableError", "message": "nope"}} });
    let failed = post(&e, "fatal", "step", &call_body("test/fatal", memo, json!({}))).await;
    assert_eq!(failed.status, StatusCode::BAD_REQUEST);
    assert_eq!(failed.headers["x-inngest-no-retry"], "true");
    assert_eq!(failed.body, json!({"name": "NonRetriableError", "message": "nope", "stack": "", "__serialized": true}));
}

#[tokio::test]
async fn a_timed_out_attempt_is_a_step_error_whose_retry_after_is_the_steps_own_backoff() {
    let e = endpoint(ServeConfig::dev("app"));
    for (attempt, delay) in [(0, "45"), (1, "120"), (2, "120")] {
        let body = call_body("test/patient", json!({}), json!({"attempt": attempt, "max_attempts": 5}));
        let reply = post(&e, "patient", "step", &body).await;
        assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(
            (reply.headers["x-inngest-no-retry"].to_str().unwrap(), reply.headers["retry-after"].to_str().unwrap()),
            ("false", delay)
        );
        assert_eq!(reply.body[0]["op"], json!("StepError"));
        assert_eq!(reply.body[0]["error"]["name"], json!("StepTimeoutError"));
        assert_eq!(
            reply.body[0]["error"]["message"],
            json!(format!("step `hung-call`: attempt {} timed out after 20ms", attempt + 1))
        );
    }
}

#[tokio::test]
async fn waits_and_invokes_become_their_opcodes() {
    let e = endpoint(ServeConfig::dev("app"));
    let wait = post(&e, "waiter", "step", &call_body("test/wait", json!({}), json!({}))).await;
    assert_eq!(
        wait.body,
        json!([{"id": hid("wait-approval"), "op": "WaitForEvent", "name": "test/approved", "displayName": "wait-approval",
                "opts": {"timeout": "1d", "if": "async.data.id == event.data.id"}, "userland": {"id": "wait-approval"}, "data": null}])
    );
    let matched =
        json!({ hid("wait-approval"): {"name": "test/approved", "data": {"id": 7, "ok": true}, "id": "e2", "ts": 2} });
    let resumed = post(&e, "waiter", "step", &call_body("test/wait", matched, json!({}))).await;
    assert_eq!((resumed.status, resumed.body), (StatusCode::OK, json!({"id": 7, "ok": true})));
    let timed_out =
        post(&e, "waiter", "step", &call_body("test/wait", json!({ hid("wait-approval"): null }), json!({}))).await;
    assert_eq!(timed_out.body, Value::Null);
    let invoke = post(&e, "invoker", "step", &call_body("test/invoke", json!({}), json!({}))).await;
    assert_eq!(
        invoke.body,
        json!([{"id": hid("call-hello"), "op": "InvokeFunction", "displayName": "call-hello",
                "opts": {"function_id": "app-hello", "payload": {"data": {"userId": "x"}}},
                "userland": {"id": "call-hello"}, "data": null}])
    );
    let returned = post(
        &e,
        "invoker",
        "step",
        &call_body("test/invoke", json!({ hid("call-hello"): {"data": {"success": true}} }), json!({})),
    )
    .await;
    assert_eq!(returned.body, json!({"success": true}));
}

#[tokio::test]
async fn a_signal_wait_is_inngests_wait_for_signal_and_a_batch_arrives_as_events() {
    let e = endpoint(ServeConfig::dev("app"));
    let wait = post(&e, "signaled", "step", &call_body("test/signaled", json!({}), json!({}))).await;
    assert_eq!(
        wait.body,
        json!([{"id": hid("approval"), "op": "WaitForSignal", "name": "approve-7", "displayName": "approval",
                "opts": {"signal": "approve-7", "timeout": "2h", "conflict": "fail"}, "userland": {"id": "approval"}, "data": null}])
    );
    // Inngest memoizes a received signal as `{"data": {signal, data}}`, a timeout as null.
    let mut body = call_body(
        "test/signaled",
        json!({ hid("approval"): {"data": {"signal": "approve-7", "data": {"ok": true}}} }),
        json!({}),
    );
    body["events"] = json!([body["event"].clone(), {"name": "test/signaled", "data": {"id": 8}}]);
    let received = post(&e, "signaled", "step", &body).await;
    assert_eq!(
        (received.status, received.body),
        (StatusCode::OK, json!({"signal": {"signal": "approve-7", "data": {"ok": true}}, "events": 2}))
    );
    let memo = json!({ hid("approval"): null });
    let timed_out = post(&e, "signaled", "step", &call_body("test/signaled", memo, json!({}))).await;
    assert_eq!(timed_out.body, json!({"signal": null, "events": 1}));
}

#[tokio::test]
async fn a_map_plans_at_most_its_concurrency_and_a_race_records_its_winner_then_cancels() {
    let e = endpoint(ServeConfig::dev("app"));
    let ops = |reply: &Reply| -> Vec<(String, String)> {
        reply.body.as_array().unwrap().iter().map(|op| (op["op"].to_string(), op["displayName"].to_string())).collect()
    };
    let planned = |names: &[&str]| -> Vec<(String, String)> {
        names.iter().map(|name| ("\"StepPlanned\"".to_string(), format!("\"{name}\""))).collect()
    };
    // Two of three items at once; as one finishes, the next is planned.
    let first = post(&e, "mapped", "step", &call_body("test/mapped", json!({}), json!({}))).await;
    assert_eq!(ops(&first), planned(&["fetch[0]", "fetch[1]"]));
    let memo = json!({ hid("fetch[1]"): {"data": 2} });
    let next = post(&e, "mapped", "step", &call_body("test/mapped", memo, json!({}))).await;
    assert_eq!(ops(&next), planned(&["fetch[0]", "fetch[2]"]));
    let all = json!({ hid("fetch[0]"): {"data": 1}, hid("fetch[1]"): {"data": 2}, hid("fetch[2]"): {"data": 3} });
    let done = post(&e, "mapped", "step", &call_body("test/mapped", all, json!({}))).await;
    assert_eq!((done.status, done.body), (StatusCode::OK, json!([1, 2, 3])));
    // A race: both branches wait; the reply comes; the winner is recorded, then the sleep is
    // cancelled, then the run completes.
    let waiting = post(&e, "raced", "step", &call_body("test/raced", json!({}), json!({}))).await;
    let kinds: Vec<&str> = waiting.body.as_array().unwrap().iter().map(|op| op["op"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["WaitForEvent", "Sleep"]);
    let mut memo = json!({ hid("reply"): {"name": "test/reply", "data": {}, "id": "r1", "ts": 5} });
    let decided = post(&e, "raced", "step", &call_body("test/raced", memo.clone(), json!({}))).await;
    assert_eq!(
        (decided.body[0]["op"].clone(), decided.body[0]["id"].clone(), decided.body[0]["data"].clone()),
        (json!("StepRun"), json!(hid("first")), json!({"winner": 0}))
    );
    memo[hid("first")] = json!({"data": {"winner": 0}});
    let cancelled = post(&e, "raced", "step", &call_body("test/raced", memo.clone(), json!({}))).await;
    assert_eq!(
        (cancelled.body[0]["op"].clone(), cancelled.body[0]["id"].clone(), cancelled.body[0]["error"]["name"].clone()),
        (json!("StepFailed"), json!(hid("give-up")), json!("StepCancelledError"))
    );
    memo[hid("give-up")] = json!({"error": cancelled.body[0]["error"].clone()});
    let finished = post(&e, "raced", "step", &call_body("test/raced", memo, json!({}))).await;
    assert_eq!((finished.status, finished.body), (StatusCode::OK, json!([0, true])));
}

#[tokio::test]
async fn bad_requests_get_clear_errors_and_run_nothing() {
    let e = endpoint(ServeConfig::dev("app").max_body_bytes(1024));
    let unknown = post(&e, "nope", "step", &call_body("x/y", json!({}), json!({}))).await;
    assert_eq!(unknown.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        unknown.body["message"],
        json!("Function \"app-nope\" was not found in this app; is the app synced correctly?")
    );
    let never = post(&e, "hello", &hid("never-planned"), &call_body("app/my.event", json!({}), json!({}))).await;
    assert_eq!(never.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(never.body["requestedStep"], json!(hid("never-planned")));
    assert_eq!(never.body["foundSteps"][0]["name"], json!("step-name"));
    let malformed =
        send(&e, Request::post("/?fnId=app-hello&stepId=step").body(Body::from("{not json")).unwrap()).await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert!(malformed.body["message"].as_str().unwrap().starts_with("malformed call request: "));
    let no_event = send(&e, Request::post("/?fnId=app-hello&stepId=step").body(Body::from("{}")).unwrap()).await;
    assert_eq!(no_event.body["message"], json!("malformed call request: missing field `event` at line 1 column 2"));
    let big = call_body("app/my.event", json!({"x": {"data": "y".repeat(2000)}}), json!({}));
    let too_big = post(&e, "hello", "step", &big).await;
    assert_eq!(too_big.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(too_big.body["message"], json!("the request body is over the 1024-byte limit"));
    let delete = send(&e, Request::delete("/").body(Body::empty()).unwrap()).await;
    assert_eq!(
        (delete.status, delete.body),
        (StatusCode::METHOD_NOT_ALLOWED, json!({"message": "Method not allowed"}))
    );
    assert_eq!(e.calls.load(Ordering::SeqCst), 0);
}

fn signed(body: &Value, key: &SigningKey, t: i64) -> String {
    key.header(&signing::canonical(body.to_string().as_bytes()).unwrap(), t)
}

#[tokio::test]
async fn cloud_mode_refuses_unsigned_stale_and_wrong_signatures_and_signs_its_answers() {
    let primary = format!("signkey-prod-{}", "0".repeat(64));
    let e = endpoint(ServeConfig::cloud("app", &primary, Some(KEY)).unwrap());
    let body = call_body("app/my.event", json!({}), json!({}));
    let uri = "/?fnId=app-hello&stepId=step";
    let now = NOW / 1000;
    let key = SigningKey::new(KEY);
    for header in
        [None, Some(signed(&body, &key, now - 301)), Some(signed(&body, &SigningKey::new("signkey-prod-ffff"), now))]
    {
        let mut request = Request::post(uri);
        if let Some(header) = &header {
            request = request.header("x-inngest-signature", header);
        }
        let reply = send(&e, request.body(Body::from(body.to_string())).unwrap()).await;
        assert_eq!(
            (reply.status, reply.body.clone()),
            (StatusCode::UNAUTHORIZED, json!({"message": "Unauthorized"})),
            "{header:?}"
        );
    }
    assert_eq!(e.calls.load(Ordering::SeqCst), 0, "nothing ran");
    // Signed with the fallback key, over the canonical body (sent pretty-printed here).
    let pretty = serde_json::to_string_pretty(&body).unwrap();
    let request =
        Request::post(uri).header("x-inngest-signature", signed(&body, &key, now)).body(Body::from(pretty)).unwrap();
    let reply = send(&e, request).await;
    assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(e.calls.load(Ordering::SeqCst), 1);
    let answer_signature = reply.headers["x-inngest-signature"].to_str().unwrap();
    assert_eq!(answer_signature, key.header(&reply.raw, now), "signed over the raw answer with the key that verified");
    let unsigned_get = send(&e, Request::get("/").body(Body::empty()).unwrap()).await;
    assert_eq!(unsigned_get.status, StatusCode::UNAUTHORIZED);
    let get = Request::get("/").header("x-inngest-signature", key.header(b"", now)).body(Body::empty()).unwrap();
    let introspected = send(&e, get).await;
    assert_eq!(
        (introspected.body["mode"].clone(), introspected.body["app_id"].clone()),
        (json!("cloud"), json!("app"))
    );
    assert_eq!(introspected.body["signing_key_hash"], json!(key.hash()));
}

#[tokio::test]
async fn a_streamed_call_answers_201_keeps_alive_then_sends_the_envelope() {
    let e = endpoint(ServeConfig::dev("app").streaming(std::time::Duration::from_millis(100)));
    let reply = post(&e, "slow", "step", &call_body("test/slow", json!({}), json!({}))).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(reply.headers["x-inngest-sdk"], "cairn:v0.1.0");
    let text = String::from_utf8(reply.raw).unwrap();
    let spaces = text.len() - text.trim_start().len();
    assert!(spaces >= 2, "keep-alive spaces while the 350 ms step ran: {spaces}");
    let envelope: Value = serde_json::from_str(text.trim_start()).unwrap();
    assert_eq!((envelope["status"].clone(), envelope["version"].clone()), (json!(206), json!(2)));
    assert_eq!(envelope["headers"]["x-inngest-req-version"], json!("2"));
    let inner: Value = serde_json::from_str(envelope["body"].as_str().unwrap()).unwrap();
    assert_eq!((inner[0]["op"].clone(), inner[0]["data"].clone()), (json!("StepRun"), json!("done")));
}
