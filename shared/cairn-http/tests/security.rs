//! The endpoint's doors, each tried the way an attacker would: keys that are no keys, unsigned
//! syncs, a forged `Host`, an injected deploy id, bodies near the limit, calls whose memo was
//! left out (`use_api`), and streamed answers that must be signed like plain ones.
#![allow(clippy::unwrap_used)] // Tests: an unwrap that fails is a failed test.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use cairn::Registry;
use cairn::prelude::*;
use cairn::testing::ManualClock;
use cairn_http::{ConfigError, ServeConfig, ServeOrigin, SigningKey, serve_with_clock, signing};
use http_body_util::BodyExt;
use serde_json::Value;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tower::ServiceExt;

const KEY: &str = "signkey-prod-8ee2262a15e8d3c42d6a840db7af3de2aab08ef632b32a37a687f24b34dba3ff";
const NOW: i64 = 1_700_000_000_000;

struct Endpoint {
    router: axum::Router,
    calls: Arc<AtomicU32>,
}

fn endpoint(config: ServeConfig) -> Endpoint {
    let calls = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&calls);
    let echo = Function::new("echo")
        .on_event("app/echo")
        .handler(move |event: Event, step: Step| {
            let calls = Arc::clone(&counted);
            async move {
                let size = step
                    .run("measure", || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        Ok(event.data["blob"].as_str().map_or(0, str::len))
                    })
                    .await?;
                step.sleep("rest", "1h").await?;
                Ok(size)
            }
        })
        .unwrap();
    let notify = Function::new("notify")
        .on_event("app/notify")
        .sends("app/told")
        .handler(|_: Event, step: Step| async move {
            step.send_event("tell", EventPayload::new("app/told", json!({}))).await?;
            Ok(())
        })
        .unwrap();
    let registry = Registry::new([echo, notify]).unwrap();
    Endpoint { router: serve_with_clock(config, registry, Arc::new(ManualClock::at(NOW))), calls }
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
    let body = serde_json::from_slice(raw.trim_ascii_start()).unwrap_or(Value::Null);
    Reply { status, headers, body, raw }
}

fn call(data: Value, ctx: Value) -> Value {
    let mut context = json!({"run_id": "01J0000000000000000000RUN1", "attempt": 0});
    for (k, v) in ctx.as_object().unwrap() {
        context[k] = v.clone();
    }
    json!({"event": {"name": "app/echo", "data": data, "id": "ev1", "ts": 1}, "steps": {}, "ctx": context})
}

fn signed(body: &[u8], key: &SigningKey) -> String {
    key.header(&signing::canonical(body).unwrap(), NOW / 1000)
}

fn cloud() -> ServeConfig {
    ServeConfig::cloud("app", KEY, None).unwrap()
}

#[test]
fn an_empty_whitespace_or_short_signing_key_is_refused_naming_the_variable() {
    for key in ["", "   ", "signkey-prod-"] {
        let err = ServeConfig::cloud("app", key, None).unwrap_err();
        let expected = if key.trim().is_empty() {
            ConfigError::MissingSigningKey { variable: "INNGEST_SIGNING_KEY" }
        } else {
            ConfigError::WeakSigningKey { variable: "INNGEST_SIGNING_KEY", length: 0 }
        };
        assert_eq!(err, expected, "{key:?}");
    }
    assert_eq!(
        ServeConfig::cloud("app", "", None).unwrap_err().to_string(),
        "INNGEST_SIGNING_KEY is required outside dev mode and must not be empty (set INNGEST_DEV=1 for local work)"
    );
    assert_eq!(
        ServeConfig::cloud("app", KEY, Some("signkey-prod-abc")).unwrap_err().to_string(),
        "INNGEST_SIGNING_KEY_FALLBACK is too short: 3 characters after its signkey- prefix, at least 32 needed"
    );
    // An empty fallback is no fallback.
    assert_eq!(ServeConfig::cloud("app", KEY, Some(" ")).unwrap().keys.len(), 1);
    assert_eq!(
        cloud().serve_origin("http://app.example.com").unwrap_err().to_string(),
        "INNGEST_SERVE_ORIGIN must be an https:// origin outside dev mode, got `http://app.example.com`"
    );
    assert!(cloud().serve_origin("https://app.example.com/api?x=1").is_err());
    assert_eq!(
        cloud().serve_origin("https://app.example.com/").unwrap().serve_origin.as_deref(),
        Some("https://app.example.com")
    );
}

/// The review's C1: a call signed with the empty key was answered 206 and ran a step.
#[tokio::test]
async fn a_call_signed_with_an_empty_key_is_refused_even_if_one_is_configured() {
    let config = ServeConfig { keys: vec![SigningKey::new("")], ..cloud() };
    let e = endpoint(config);
    let body = call(json!({}), json!({})).to_string();
    let forged = SigningKey::new("").header(&signing::canonical(body.as_bytes()).unwrap(), NOW / 1000);
    let request = Request::post("/?fnId=app-echo&stepId=step").header("x-inngest-signature", forged);
    let reply = send(&e, request.body(Body::from(body)).unwrap()).await;
    assert_eq!((reply.status, reply.body), (StatusCode::UNAUTHORIZED, json!({"message": "Unauthorized"})));
    assert_eq!(e.calls.load(Ordering::SeqCst), 0);
}

/// A stand-in for Inngest's API (a third party): records what a sync registers.
struct InngestApi {
    url: String,
    seen: Arc<Mutex<Vec<(String, Value)>>>,
}

async fn inngest_api() -> InngestApi {
    let seen: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let record = Arc::clone(&seen);
    let app = axum::Router::new().route(
        "/fn/register",
        axum::routing::post(move |uri: axum::http::Uri, body: axum::body::Bytes| {
            let record = Arc::clone(&record);
            async move {
                let body: Value = serde_json::from_slice(&body).unwrap();
                record.lock().unwrap().push((uri.query().unwrap_or_default().to_string(), body));
                axum::Json(json!({"ok": true, "modified": true}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    InngestApi { url, seen }
}

fn put(uri: &str, host: &str, signature: Option<String>) -> Request<Body> {
    let mut request = Request::put(uri).header("host", host);
    if let Some(signature) = signature {
        request = request.header("x-inngest-signature", signature);
    }
    request.body(Body::empty()).unwrap()
}

#[tokio::test]
async fn a_sync_needs_a_signature_and_registers_only_the_configured_https_origin() {
    let api = inngest_api().await;
    let key = SigningKey::new(KEY);
    let config = ServeConfig { api_base: api.url.clone(), ..cloud() };
    // Unsigned: refused, nothing registered.
    let e = endpoint(config.clone().serve_origin("https://app.example.com").unwrap());
    let unsigned = send(&e, put("/", "evil.example", None)).await;
    assert_eq!((unsigned.status, unsigned.body), (StatusCode::UNAUTHORIZED, json!({"message": "Unauthorized"})));
    let in_band = Request::put("/").header("x-inngest-sync-kind", "in_band").body(Body::from("{}")).unwrap();
    assert_eq!(send(&e, in_band).await.status, StatusCode::UNAUTHORIZED, "in-band sync shows the configuration");
    assert!(api.seen.lock().unwrap().is_empty());
    // Signed, with a forged Host and a deploy id that tries to add a parameter.
    let synced = send(&e, put("/?deployId=d1%26x%3D1", "evil.example", Some(signed(b"", &key)))).await;
    assert_eq!(synced.status, StatusCode::OK, "{:?}", synced.body);
    let (query, body) = api.seen.lock().unwrap()[0].clone();
    assert_eq!(query, "deployId=d1%26x%3D1");
    assert_eq!(body["deployId"], json!("d1&x=1"));
    assert_eq!(body["url"], json!("https://app.example.com/"));
    assert_eq!(
        body["functions"][0]["steps"]["step"]["runtime"]["url"],
        json!("https://app.example.com/?fnId=app-echo&stepId=step")
    );
    // No configured origin: the one the host adapter vouches for, else a clear refusal.
    let e = endpoint(config);
    let vouched = put("/", "evil.example", Some(signed(b"", &key)));
    let (mut parts, body) = vouched.into_parts();
    parts.extensions.insert(ServeOrigin("https://abc.lambda-url.eu-west-1.on.aws".into()));
    assert_eq!(send(&e, Request::from_parts(parts, body)).await.status, StatusCode::OK);
    assert_eq!(api.seen.lock().unwrap()[1].1["url"], json!("https://abc.lambda-url.eu-west-1.on.aws/"));
    let refused = send(&e, put("/", "evil.example", Some(signed(b"", &key)))).await;
    assert_eq!(
        (refused.status, refused.body),
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"message": "Failed to register; set INNGEST_SERVE_ORIGIN to the https:// origin Inngest reaches this endpoint at", "modified": false})
        )
    );
    assert_eq!(api.seen.lock().unwrap().len(), 2, "nothing registered from the Host header");
}

#[tokio::test]
async fn the_body_limit_is_the_configured_4_mib_not_axums_2_mib() {
    let e = endpoint(ServeConfig::dev("app"));
    let blob = "b".repeat(3 * 1024 * 1024);
    let body = call(json!({"blob": blob}), json!({})).to_string();
    let reply = send(&e, Request::post("/?fnId=app-echo&stepId=step").body(Body::from(body)).unwrap()).await;
    assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT, "{:?}", reply.body);
    assert_eq!(reply.body[0]["data"], json!(3 * 1024 * 1024));
    let over = call(json!({"blob": "b".repeat(4 * 1024 * 1024)}), json!({})).to_string();
    let reply = send(&e, Request::post("/?fnId=app-echo&stepId=step").body(Body::from(over)).unwrap()).await;
    assert_eq!(
        (reply.status, reply.body),
        (StatusCode::PAYLOAD_TOO_LARGE, json!({"message": "the request body is over the 4194304-byte limit"}))
    );
}

#[tokio::test]
async fn a_call_whose_memo_was_left_out_is_refused_not_run_with_an_empty_memo() {
    let e = endpoint(ServeConfig::dev("app"));
    for ctx in [json!({"use_api": true}), json!({})] {
        let mut body = call(json!({}), ctx.clone());
        if ctx == json!({}) {
            body["use_api"] = json!(true);
        }
        let reply =
            send(&e, Request::post("/?fnId=app-echo&stepId=step").body(Body::from(body.to_string())).unwrap()).await;
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(reply.headers["x-inngest-no-retry"], "true");
        assert_eq!(
            reply.body["message"],
            json!(
                "the call for run 01J0000000000000000000RUN1 asks the SDK to fetch its state from Inngest's API (use_api), which Cairn does not do; the run's state is over Inngest's 4 MiB request limit: keep step outputs smaller"
            )
        );
    }
    assert_eq!(e.calls.load(Ordering::SeqCst), 0, "no completed step re-ran");
}

#[tokio::test]
async fn a_streamed_answer_is_signed_like_a_plain_one() {
    let key = SigningKey::new(KEY);
    let e = endpoint(cloud().streaming(std::time::Duration::from_millis(50)));
    let body = call(json!({"blob": "abc"}), json!({})).to_string();
    let request =
        Request::post("/?fnId=app-echo&stepId=step").header("x-inngest-signature", signed(body.as_bytes(), &key));
    let reply = send(&e, request.body(Body::from(body)).unwrap()).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let inner = reply.body["body"].as_str().unwrap();
    assert_eq!(reply.body["status"], json!(206));
    assert_eq!(reply.body["headers"]["x-inngest-signature"], json!(key.header(inner.as_bytes(), NOW / 1000)));
    assert!(!reply.raw.is_empty());
}

/// An event API that accepts the connection and never answers: the send fails on the client's
/// timeout, as a step error Inngest retries, instead of holding the call until the host kills it.
#[tokio::test]
async fn a_hung_event_api_fails_the_send_on_the_timeout() {
    let events = cairn::testing::StubServer::hung().await;
    let config = ServeConfig {
        event_api: events.url().to_string(),
        http_timeout: std::time::Duration::from_millis(300),
        ..ServeConfig::dev("app")
    };
    let e = endpoint(config);
    let mut body = call(json!({}), json!({}));
    body["event"]["name"] = json!("app/notify");
    let reply =
        send(&e, Request::post("/?fnId=app-notify&stepId=step").body(Body::from(body.to_string())).unwrap()).await;
    assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(reply.body[0]["op"], json!("StepError"));
    assert_eq!(
        reply.body[0]["error"]["message"],
        json!("Failed to send event: the event API did not answer within 300ms")
    );
    assert_eq!(reply.headers["x-inngest-no-retry"], "false");
}
