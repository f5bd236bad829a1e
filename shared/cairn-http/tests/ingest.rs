//! Event ingest through `oneshot`: one or many events, keys, validation, nothing half-sent.
#![allow(clippy::unwrap_used)] // Tests: an unwrap that fails is a failed test.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use cairn::MemoryBus;
use cairn::testing::ManualClock;
use cairn_http::{IngestConfig, ingest_with_clock};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::sync::Arc;
use tower::ServiceExt;

const NOW: i64 = 1_800_000_000_000;

async fn post(bus: &MemoryBus, uri: &str, key: Option<&str>, body: &str) -> (StatusCode, Value) {
    let router =
        ingest_with_clock(IngestConfig { keys: vec!["k-1".into()] }, bus.clone(), Arc::new(ManualClock::at(NOW)));
    let mut request = Request::post(uri);
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    let response = router.oneshot(request.body(Body::from(body.to_string())).unwrap()).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn one_or_many_events_are_forwarded_with_their_ids() {
    let bus = MemoryBus::new();
    let (status, body) =
        post(&bus, "/send", Some("k-1"), r#"{"name": "app/user.created", "data": {"id": 1}, "id": "u-1"}"#).await;
    // A caller's id is kept (resending it is a duplicate) but namespaced: see the squatting test.
    assert_eq!((status, body), (StatusCode::OK, json!({"ids": ["ext-u-1"], "status": 200})));
    let many = r#"[{"name": "app/a", "data": {}}, {"name": "app/b"}]"#;
    let (status, body) = post(&bus, "/e/k-1", None, many).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["ids"].as_array().unwrap().len(), 2);
    let sent = bus.sent();
    let names: Vec<&str> = sent.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["app/user.created", "app/a", "app/b"]);
    assert_eq!(sent[2].data, json!({}), "missing data becomes an empty object");
    assert_eq!(sent[1].ts, Some(NOW));
    assert_eq!(body["ids"][0], json!(sent[1].id.clone().unwrap()));
}

#[tokio::test]
async fn keys_are_required_and_bad_events_are_refused_whole() {
    let bus = MemoryBus::new();
    let event = r#"{"name": "app/a", "data": {}}"#;
    assert_eq!(
        post(&bus, "/send", None, event).await,
        (
            StatusCode::UNAUTHORIZED,
            json!({"ids": [], "status": 401, "error": "an event key is required (Authorization: Bearer <key>)"})
        )
    );
    assert_eq!(post(&bus, "/e/wrong", None, event).await.0, StatusCode::UNAUTHORIZED);
    let (status, body) =
        post(&bus, "/send", Some("k-1"), r#"[{"name": "app/a", "data": {}}, {"name": "", "data": {}}]"#).await;
    assert_eq!(
        (status, body["error"].clone()),
        (StatusCode::BAD_REQUEST, json!("event 1: event name must not be empty"))
    );
    let (status, body) = post(&bus, "/send", Some("k-1"), r#"{"name": "app/a", "data": [1]}"#).await;
    assert_eq!(
        (status, body["error"].clone()),
        (StatusCode::BAD_REQUEST, json!("event 0: event `app/a`: data must be a JSON object"))
    );
    let (status, body) = post(&bus, "/send", Some("k-1"), "{not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"].as_str().unwrap().starts_with("the body is not JSON"));
    let huge = json!({"name": "app/a", "data": {"blob": "x".repeat(600 * 1024)}}).to_string();
    let (status, body) = post(&bus, "/send", Some("k-1"), &huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(body["error"].as_str().unwrap().ends_with("bytes, over the 524288-byte limit"));
    assert!(bus.sent().is_empty(), "nothing forwarded");
}

#[tokio::test]
async fn reserved_names_are_refused_and_caller_ids_cannot_squat_internal_ones() {
    let bus = MemoryBus::new();
    for name in ["inngest/function.finished", "inngest/function.invoked", "cairn/run.resume"] {
        let event = json!({"name": name, "data": {"correlation_id": "run.step"}}).to_string();
        let (status, body) = post(&bus, "/send", Some("k-1"), &event).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            body["error"],
            json!(format!(
                "event 0: `{name}` is a reserved name (cairn/* and inngest/* events are sent only by Cairn and Inngest)"
            ))
        );
    }
    // A cron firing's id, chosen by a caller: it lands in the caller namespace, not on the cron's run.
    let cron_id = "cron:0 9 * * *:2026-12-03T09:00:00Z";
    let event = json!({"name": "app/a", "data": {}, "id": cron_id}).to_string();
    let (status, body) = post(&bus, "/send", Some("k-1"), &event).await;
    assert_eq!((status, body["ids"].clone()), (StatusCode::OK, json!([format!("ext-{cron_id}")])));
    // Ids are bounded (an id too long for a store key would fail every attempt downstream).
    let long = json!({"name": "app/a", "data": {}, "id": "x".repeat(253)}).to_string();
    let (status, body) = post(&bus, "/send", Some("k-1"), &long).await;
    assert_eq!(
        (status, body["error"].clone()),
        (StatusCode::BAD_REQUEST, json!("event 0: id is 253 bytes, it must be 1 to 252"))
    );
    assert_eq!(bus.sent().len(), 1, "only the accepted event went out");
}

#[tokio::test]
async fn inbound_keys_are_only_cairn_event_keys_never_the_outbound_inngest_key() {
    let vars = |name: &str| match name {
        "CAIRN_EVENT_KEYS" => Some(" k-1, ,k-2 ".to_string()),
        "INNGEST_EVENT_KEY" => Some("outbound".to_string()),
        _ => None,
    };
    assert_eq!(IngestConfig::from_vars(vars).keys, ["k-1", "k-2"]);
    assert!(IngestConfig::from_vars(|_| None).keys.is_empty(), "no keys: ingest is closed");
    let bus = MemoryBus::new();
    let event = r#"{"name": "app/a", "data": {}}"#;
    for wrong in ["k-3", "k-", "k-11", "outbound"] {
        assert_eq!(post(&bus, "/send", Some(wrong), event).await.0, StatusCode::UNAUTHORIZED, "{wrong}");
    }
    assert!(bus.sent().is_empty());
}

#[tokio::test]
async fn a_signal_is_sent_with_an_event_key_and_the_signal_event_only_comes_from_that_route() {
    let bus = MemoryBus::new();
    let (status, body) = post(&bus, "/signal", Some("k-1"), r#"{"signal": "approve-7", "data": {"ok": true}}"#).await;
    assert_eq!(status, StatusCode::OK);
    let sent = bus.sent();
    assert_eq!(body, json!({"ids": [sent[0].id.clone().unwrap()], "status": 200}));
    assert_eq!(
        (sent[0].name.as_str(), &sent[0].data, sent[0].ts),
        ("cairn/signal", &json!({"signal": "approve-7", "data": {"ok": true}}), Some(NOW))
    );
    assert_eq!(post(&bus, "/signal", None, r#"{"signal": "approve-7"}"#).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(post(&bus, "/signal", Some("nope"), r#"{"signal": "approve-7"}"#).await.0, StatusCode::UNAUTHORIZED);
    let expected = json!({"ids": [], "status": 400, "error": "`signal` must be a string of 1 to 256 bytes: {\"signal\": \"...\", \"data\": ...}"});
    assert_eq!(
        post(&bus, "/signal", Some("k-1"), r#"{"signal": ""}"#).await,
        (StatusCode::BAD_REQUEST, expected.clone())
    );
    assert_eq!(post(&bus, "/signal", Some("k-1"), r#"{"data": 1}"#).await, (StatusCode::BAD_REQUEST, expected));
    // The signal event cannot be forged through the event routes.
    let (status, body) =
        post(&bus, "/send", Some("k-1"), r#"{"name": "cairn/signal", "data": {"signal": "approve-7"}}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(bus.sent().len(), 1, "nothing more was sent");
}
