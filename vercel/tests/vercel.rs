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

/// Sends `request` through `VercelLayer` around the app, as `vercel_runtime::run` does.
async fn send(request: hyper::Request<Full<Bytes>>) -> (u16, hyper::HeaderMap, Value) {
    let config = ServeConfig::cloud("cairn", KEY, None).unwrap();
    let app = cairn_vercel::app_with(config, IngestConfig { keys: Vec::new() }, cairn_aws::AnyBus::Log).unwrap();
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
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, serde_json::from_slice(&body).unwrap_or(Value::Null))
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
