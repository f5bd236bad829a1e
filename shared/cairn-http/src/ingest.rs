//! Event ingest for callers outside AWS: `POST /send` (with `Authorization: Bearer <key>`) and
//! Inngest's own `POST /e/{key}`. One event or an array; all are validated before any is
//! forwarded to the [`Bus`] (EventBridge in AWS, the dev server locally); the answer lists their
//! ids, as Inngest's event API does (`{"ids": [...], "status": 200}`). And `POST /signal`
//! (`{"signal": "...", "data": ...}`, the same key): the signal a run's `step.wait_for_signal`
//! waits for, which only this route may send (its event name is reserved).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use cairn::{Bus, Clock, EventPayload, SystemClock};
use serde_json::{Value, json};
use std::sync::Arc;

/// The largest event accepted (Inngest's default).
pub const MAX_EVENT_BYTES: usize = 512 * 1024;
/// Caller-chosen event ids are kept (a resend with the same id is a duplicate, as in Inngest)
/// but namespaced with this prefix, so an outside sender can never choose the id of an event
/// Cairn makes itself (a cron firing, a step's `send_event`) and squat the run it would start.
pub const CALLER_ID_PREFIX: &str = "ext-";

/// Who may send events.
#[derive(Clone, Debug)]
pub struct IngestConfig {
    /// Accepted event keys (as `Bearer` tokens or in the `/e/{key}` path).
    pub keys: Vec<String>,
}

impl IngestConfig {
    /// From `CAIRN_EVENT_KEYS` (comma-separated). `INNGEST_EVENT_KEY` is the key Cairn *sends*
    /// with and is deliberately not accepted here: SDKs treat it as low-sensitivity.
    pub fn from_env() -> Self {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`IngestConfig::from_env`] over any source of variables.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let keys = var("CAIRN_EVENT_KEYS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(str::to_string)
            .collect();
        IngestConfig { keys }
    }

    /// Whether `key` is one of the accepted keys, compared in constant time.
    fn accepts(&self, key: &str) -> bool {
        use subtle::ConstantTimeEq;
        // Every known key is compared, so the time taken says nothing about which one matched.
        self.keys.iter().fold(false, |found, known| found | bool::from(known.as_bytes().ct_eq(key.as_bytes())))
    }
}

struct Ingest<B> {
    config: IngestConfig,
    bus: B,
    clock: Arc<dyn Clock>,
}

/// The ingest routes (`/send`, `/e/{key}`), to merge beside [`serve`](crate::serve).
pub fn ingest<B: Bus + 'static>(config: IngestConfig, bus: B) -> Router {
    ingest_with_clock(config, bus, Arc::new(SystemClock))
}

/// [`ingest`] on a given clock.
pub fn ingest_with_clock<B: Bus + 'static>(config: IngestConfig, bus: B, clock: Arc<dyn Clock>) -> Router {
    let state = Arc::new(Ingest { config, bus, clock });
    Router::new()
        .route("/send", axum::routing::post(send_bearer::<B>))
        .route("/e/{key}", axum::routing::post(send_keyed::<B>))
        .route("/signal", axum::routing::post(send_signal::<B>))
        .with_state(state)
}

fn answer(status: StatusCode, ids: &[String], error: Option<String>) -> Response {
    let mut body = json!({"ids": ids, "status": status.as_u16()});
    if let Some(error) = error {
        body["error"] = json!(error);
    }
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert("content-type", axum::http::HeaderValue::from_static("application/json"));
    response
}

async fn send_bearer<B: Bus>(State(state): State<Arc<Ingest<B>>>, headers: HeaderMap, body: Bytes) -> Response {
    let key = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    accept(&state, key, &body).await
}

/// The longest signal name accepted (it becomes part of a store key).
const MAX_SIGNAL_LEN: usize = 256;

async fn send_signal<B: Bus>(State(state): State<Arc<Ingest<B>>>, headers: HeaderMap, body: Bytes) -> Response {
    let key = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if let Some(refused) = refuse_key(&state, key) {
        return refused;
    }
    if body.len() > MAX_EVENT_BYTES {
        let message = format!("the signal is {} bytes, over the {MAX_EVENT_BYTES}-byte limit", body.len());
        return answer(StatusCode::PAYLOAD_TOO_LARGE, &[], Some(message));
    }
    let value: Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(err) => return answer(StatusCode::BAD_REQUEST, &[], Some(format!("the body is not JSON: {err}"))),
    };
    let signal = match value["signal"].as_str().map(str::trim) {
        Some(signal) if !signal.is_empty() && signal.len() <= MAX_SIGNAL_LEN => signal.to_string(),
        _ => {
            let message = format!(
                "`signal` must be a string of 1 to {MAX_SIGNAL_LEN} bytes: {{\"signal\": \"...\", \"data\": ...}}"
            );
            return answer(StatusCode::BAD_REQUEST, &[], Some(message));
        }
    };
    let data = value.get("data").cloned().unwrap_or(Value::Null);
    match cairn::send_signal(&state.bus, &signal, data, state.clock.now()).await {
        Ok(id) => answer(StatusCode::OK, &[id], None),
        Err(err) => answer(StatusCode::BAD_GATEWAY, &[], Some(format!("the signal was not forwarded: {err}"))),
    }
}

/// The answer refusing `key`, if it is missing or unknown.
fn refuse_key<B>(state: &Ingest<B>, key: Option<&str>) -> Option<Response> {
    match key {
        None => Some(answer(
            StatusCode::UNAUTHORIZED,
            &[],
            Some("an event key is required (Authorization: Bearer <key>)".into()),
        )),
        Some(key) if !state.config.accepts(key) => {
            Some(answer(StatusCode::UNAUTHORIZED, &[], Some("unknown event key".into())))
        }
        Some(_) => None,
    }
}

async fn send_keyed<B: Bus>(State(state): State<Arc<Ingest<B>>>, Path(key): Path<String>, body: Bytes) -> Response {
    accept(&state, Some(&key), &body).await
}

async fn accept<B: Bus>(state: &Ingest<B>, key: Option<&str>, body: &[u8]) -> Response {
    if let Some(refused) = refuse_key(state, key) {
        return refused;
    }
    let value: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(err) => return answer(StatusCode::BAD_REQUEST, &[], Some(format!("the body is not JSON: {err}"))),
    };
    let items = match value {
        Value::Array(items) => items,
        single => vec![single],
    };
    if items.is_empty() {
        return answer(StatusCode::BAD_REQUEST, &[], Some("no events in the body".into()));
    }
    let now = state.clock.now();
    let mut events = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let size = item.to_string().len();
        if size > MAX_EVENT_BYTES {
            let message = format!("event {index} is {size} bytes, over the {MAX_EVENT_BYTES}-byte limit");
            return answer(StatusCode::PAYLOAD_TOO_LARGE, &[], Some(message));
        }
        let mut event: EventPayload = match serde_json::from_value(item) {
            Ok(event) => event,
            Err(err) => return answer(StatusCode::BAD_REQUEST, &[], Some(format!("event {index}: {err}"))),
        };
        if cairn::is_reserved_name(&event.name) {
            let message = format!(
                "event {index}: `{}` is a reserved name (cairn/* and inngest/* events are sent only by Cairn and Inngest)",
                event.name
            );
            return answer(StatusCode::BAD_REQUEST, &[], Some(message));
        }
        if let Some(id) = &event.id {
            let limit = cairn::MAX_EVENT_ID_LEN - CALLER_ID_PREFIX.len();
            if id.is_empty() || id.len() > limit {
                let message = format!("event {index}: id is {} bytes, it must be 1 to {limit}", id.len());
                return answer(StatusCode::BAD_REQUEST, &[], Some(message));
            }
            event.id = Some(format!("{CALLER_ID_PREFIX}{id}"));
        }
        if let Err(problem) = event.validate() {
            return answer(StatusCode::BAD_REQUEST, &[], Some(format!("event {index}: {problem}")));
        }
        event.id.get_or_insert_with(|| cairn::new_event_id(now));
        event.ts.get_or_insert(now);
        events.push(event);
    }
    match state.bus.send(&events).await {
        Ok(ids) => answer(StatusCode::OK, &ids, None),
        Err(err) => answer(StatusCode::BAD_GATEWAY, &[], Some(format!("the events were not forwarded: {err}"))),
    }
}
