//! The Vercel Function's request handling, locally: requests go through `vercel_runtime`'s own
//! axum layer (`VercelLayer`, the service `vercel_runtime::run` serves) over an in-memory HTTP/1
//! connection, with no Vercel server: introspection, a signed call executing a step with a
//! signed answer, and the refusals of unsigned and badly signed calls.
#![allow(clippy::unwrap_used)] // Tests: an unwrap that fails is a failed test.

use cairn_http::signing::{SigningKey, canonical};
use cairn_http::{IngestConfig, ServeConfig};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::{Value, json};
use tower::{Layer, ServiceExt};
use vercel_runtime::{AppState, LogContext};

const KEY: &str = "signkey-test-0123456789abcdef0123456789abcdef";

/// Sends `request` through `VercelLayer` around the project's app, as `vercel_runtime::run`
/// does, and reads the whole answer.
async fn send(request: hyper::Request<Full<Bytes>>) -> (u16, hyper::HeaderMap, Value) {
    let config = ServeConfig::cloud("cairn", KEY, None).unwrap();
    let app = cairn_vercel::app_with(config, IngestConfig { keys: Vec::new() }, cairn_aws::AnyBus::Log).unwrap();
    let response = send_to(app, request).await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// Sends `request` through `VercelLayer` around `app` over an in-memory HTTP/1 connection; the
/// answer's body is read as it arrives.
async fn send_to(app: axum::Router, request: hyper::Request<Full<Bytes>>) -> hyper::Response<hyper::body::Incoming> {
    let service = vercel_runtime::axum::VercelLayer::new().layer(app);
    let (client_io, server_io) = tokio::io::duplex(1 << 20);
    tokio::spawn(async move {
        let handler = hyper::service::service_fn(move |request: vercel_runtime::Request| {
            service.clone().oneshot((AppState::new(LogContext::new(None, None, None)), request))
        });
        hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(server_io), handler)
            .await
            .unwrap();
    });
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(client_io)).await.unwrap();
    tokio::spawn(connection);
    sender.send_request(request).await.unwrap()
}

fn post(path: &str, body: &Value, signature: Option<String>) -> hyper::Request<Full<Bytes>> {
    let mut request =
        hyper::Request::post(path).header("host", "my-app.vercel.app").header("content-type", "application/json");
    if let Some(signature) = signature {
        request = request.header("x-inngest-signature", signature);
    }
    request.body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

#[tokio::test]
async fn a_signed_call_runs_the_step_and_the_answer_is_signed() {
    let call =
        json!({"event": {"name": "app/my.event", "data": {}}, "steps": {}, "ctx": {"run_id": "r1", "attempt": 0}});
    let key = SigningKey::new(KEY);
    let signature = key.header(&canonical(call.to_string().as_bytes()).unwrap(), now());
    let (status, headers, ops) = send(post("/api/inngest?fnId=cairn-hello&stepId=step", &call, Some(signature))).await;
    assert_eq!(status, 206, "{ops}");
    assert_eq!((ops[0]["op"].clone(), ops[0]["data"].clone()), (json!("StepRun"), json!({"success": true})));
    assert_eq!(headers["x-inngest-sdk"], "cairn:v0.1.0");
    assert!(headers["x-inngest-signature"].to_str().unwrap().starts_with("t="), "the answer is signed");
}

#[tokio::test]
async fn unsigned_and_badly_signed_calls_are_refused() {
    let call =
        json!({"event": {"name": "app/my.event", "data": {}}, "steps": {}, "ctx": {"run_id": "r1", "attempt": 0}});
    let (status, _, body) = send(post("/api/inngest?fnId=cairn-hello&stepId=step", &call, None)).await;
    assert_eq!((status, body), (401, json!({"message": "Unauthorized"})));
    let wrong = SigningKey::new("signkey-test-ffffffffffffffffffffffffffffffff").header(b"{}", now());
    let (status, _, body) = send(post("/api/inngest?fnId=cairn-hello&stepId=step", &call, Some(wrong))).await;
    assert_eq!((status, body), (401, json!({"message": "Unauthorized"})));
}

#[tokio::test]
async fn signed_introspection_lists_every_function_of_the_list() {
    let signature = SigningKey::new(KEY).header(b"", now());
    let request = hyper::Request::get("/api/inngest")
        .header("host", "my-app.vercel.app")
        .header("x-inngest-signature", signature)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, _, body) = send(request).await;
    assert_eq!(status, 200, "{body}");
    let count = cairn::Registry::new(cairn_functions::functions()).unwrap().functions().len();
    assert_eq!(body["function_count"], json!(count), "{body}");
    assert_eq!(body["mode"], json!("cloud"), "{body}");
}

/// With streaming on (`INNGEST_STREAMING`), a long step's call is answered `201` at once and
/// kept alive: the runtime's layer passes each heartbeat on while the step still runs (it streams
/// `application/json`), then the signed answer arrives in its envelope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_answer_passes_through_the_runtime_as_it_is_written() {
    use cairn::prelude::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let finished = Arc::new(AtomicBool::new(false));
    let done = Arc::clone(&finished);
    let slow = Function::new("slow")
        .on_event("test/slow")
        .handler(move |_: Event, step: Step| {
            let done = Arc::clone(&done);
            async move {
                step.run("wait", || async move {
                    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
                    done.store(true, Ordering::SeqCst);
                    Ok(json!("done"))
                })
                .await
            }
        })
        .unwrap();
    let config = ServeConfig::cloud("cairn", KEY, None).unwrap().streaming(std::time::Duration::from_millis(50));
    let registry = cairn::Registry::new(vec![slow]).unwrap();
    let app = cairn_http::endpoint(config, registry, IngestConfig { keys: Vec::new() }, cairn_aws::AnyBus::Log);
    let call = json!({"event": {"name": "test/slow", "data": {}}, "steps": {}, "ctx": {"run_id": "r1", "attempt": 0}});
    let signature = SigningKey::new(KEY).header(&canonical(call.to_string().as_bytes()).unwrap(), now());
    let response = send_to(app, post("/api/inngest?fnId=cairn-slow&stepId=step", &call, Some(signature))).await;
    assert_eq!(response.status().as_u16(), 201);
    assert_eq!(response.headers()["content-type"], "application/json");
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b" ", "a heartbeat first");
    assert!(!finished.load(Ordering::SeqCst), "the heartbeat arrived while the step still ran");
    let rest = body.collect().await.unwrap().to_bytes();
    let text = String::from_utf8(rest.to_vec()).unwrap();
    let envelope: Value = serde_json::from_str(text.trim_start()).unwrap();
    assert!(finished.load(Ordering::SeqCst));
    assert_eq!((envelope["status"].clone(), envelope["version"].clone()), (json!(206), json!(2)), "{envelope}");
    assert!(envelope["headers"]["x-inngest-signature"].as_str().unwrap().starts_with("t="), "{envelope}");
    let ops: Value = serde_json::from_str(envelope["body"].as_str().unwrap()).unwrap();
    assert_eq!((ops[0]["op"].clone(), ops[0]["data"].clone()), (json!("StepRun"), json!("done")));
}

/// vercel.json gives every Function (each `[[bin]]` of Cargo.toml, an `api/*.rs`) Vercel's
/// longest duration on its plans' default, 300 s, and names no file that is not a Function.
#[test]
fn vercel_json_configures_every_function() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let config: Value = serde_json::from_str(&std::fs::read_to_string(format!("{dir}/vercel.json")).unwrap()).unwrap();
    let manifest = std::fs::read_to_string(format!("{dir}/Cargo.toml")).unwrap();
    let mut bins: Vec<&str> = manifest
        .lines()
        .filter_map(|line| line.trim().strip_prefix("path = \""))
        .map(|path| path.trim_end_matches('"'))
        .filter(|path| path.starts_with("api/"))
        .collect();
    bins.sort_unstable();
    let functions = config["functions"].as_object().unwrap();
    let mut configured: Vec<&str> = functions.keys().map(String::as_str).collect();
    configured.sort_unstable();
    assert_eq!(configured, bins);
    for (path, settings) in functions {
        assert_eq!(settings["maxDuration"], json!(300), "{path}");
        assert!(std::path::Path::new(&format!("{dir}/{path}")).is_file(), "{path}");
    }
}
