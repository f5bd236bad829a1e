//! The `/api/inngest` endpoint as an axum [`Router`]: `GET` introspection, `POST` calls, signing.

use crate::call::{self, CallRequest};
use crate::config::{HTTP_CONNECT_TIMEOUT, ServeConfig};
use crate::opcode::{Opcode, SerializedError, StreamEnvelope};
use crate::response::{SDK, ServeOrigin, json_response};
use crate::signing::{self, SigningKey};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use cairn::{
    Clock, EventPayload, Execution, ExecutionPolicy, Function, OpKind, Outcome, Registry, RunId, StepId, SystemClock,
};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

struct App {
    config: ServeConfig,
    registry: Registry,
    clock: Arc<dyn Clock>,
    http: reqwest::Client,
}

/// The endpoint for `functions`, to mount at `/api/inngest` (or anywhere):
/// `axum::Router::new().nest("/api/inngest", cairn_http::serve(config, registry))`.
pub fn serve(config: ServeConfig, registry: Registry) -> Router {
    serve_with_clock(config, registry, Arc::new(SystemClock))
}

/// The whole Inngest endpoint at `/api/inngest`: [`serve`] (introspection, sync, calls) and
/// [`ingest`](crate::ingest()) (events in at `/api/inngest/send` and `/api/inngest/e/{key}`, onto `bus`).
pub fn endpoint<B: cairn::Bus + 'static>(
    config: ServeConfig,
    registry: Registry,
    ingest: crate::IngestConfig,
    bus: B,
) -> Router {
    Router::new().nest("/api/inngest", serve(config, registry).merge(crate::ingest(ingest, bus)))
}

/// [`serve`] on a given clock (tests pin time to check signatures' windows).
pub fn serve_with_clock(config: ServeConfig, registry: Registry, clock: Arc<dyn Clock>) -> Router {
    // Bounded calls: a hung event API or Inngest API cannot hold a call past its deadline.
    let http = reqwest::Client::builder()
        .connect_timeout(HTTP_CONNECT_TIMEOUT)
        .timeout(config.http_timeout)
        .build()
        .unwrap_or_default();
    let app = Arc::new(App { config, registry, clock, http });
    Router::new().route("/", axum::routing::any(handle)).with_state(app)
}

fn unauthorized() -> Response {
    let mut response = (StatusCode::UNAUTHORIZED, json!({"message": "Unauthorized"}).to_string()).into_response();
    response.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
    response
}

async fn handle(
    State(app): State<Arc<App>>,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
    method: Method,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    origin: Option<axum::Extension<ServeOrigin>>,
    body: axum::body::Body,
) -> Response {
    let now_ms = app.clock.now();
    let now = now_ms / 1000;
    // Read up to the configured limit ourselves: the `Bytes` extractor would stop at axum's 2 MiB.
    let limit = app.config.max_body_bytes;
    let Ok(body) = axum::body::to_bytes(body, limit).await else {
        let message = format!("the request body is over the {limit}-byte limit");
        return json_response(StatusCode::PAYLOAD_TOO_LARGE, &json!({"message": message}));
    };
    let signature = headers.get("x-inngest-signature").and_then(|v| v.to_str().ok());
    let key = if app.config.dev {
        None
    } else {
        match signing::verify(signature, &body, &app.config.keys, now) {
            Ok(key) => Some(key.clone()),
            Err(_) if method == Method::GET => return unauthorized(),
            // Unlike the TypeScript SDK's default, a sync needs a signature too: it makes the app
            // re-register with its own key, and in band it answers with the whole configuration.
            Err(error) => {
                tracing::warn!(%error, "refused a call with a bad signature");
                return unauthorized();
            }
        }
    };
    if method == Method::POST && app.config.streaming {
        return stream_call(Arc::clone(&app), query, body, now_ms, key);
    }
    let mut response = match method {
        Method::GET => json_response(StatusCode::OK, &introspection(&app, key.as_ref())),
        Method::POST => call(&app, &query, &body, now_ms).await,
        Method::PUT => {
            let origin = origin.map(|axum::Extension(origin)| origin);
            crate::sync::sync(&app.config, &app.registry, &app.http, &headers, origin.as_ref(), &uri, &query).await
        }
        _ => json_response(StatusCode::METHOD_NOT_ALLOWED, &json!({"message": "Method not allowed"})),
    };
    if let Some(key) = key {
        // Cloud mode signs what it answers, over the raw body.
        let bytes = match response_body(&mut response).await {
            Some(bytes) => bytes,
            None => return response,
        };
        if let Ok(value) = HeaderValue::from_str(&key.header(&bytes, now)) {
            response.headers_mut().insert("x-inngest-signature", value);
        }
        *response.body_mut() = axum::body::Body::from(bytes);
    }
    response
}

async fn response_body(response: &mut Response) -> Option<Bytes> {
    let body = std::mem::take(response.body_mut());
    axum::body::to_bytes(body, usize::MAX).await.ok()
}

fn introspection(app: &App, key: Option<&SigningKey>) -> Value {
    let count = app.registry.functions().len();
    match key {
        None => json!({
            "extra": {"native_crypto": true}, "has_event_key": false, "has_signing_key": !app.config.keys.is_empty(),
            "function_count": count, "mode": "dev", "schema_version": "2024-05-24"
        }),
        Some(key) => json!({
            "extra": {"native_crypto": true, "is_streaming": false}, "has_event_key": false, "has_signing_key": true,
            "function_count": count, "mode": "cloud", "schema_version": "2024-05-24", "authentication_succeeded": true,
            "app_id": app.config.app_id, "sdk_language": "rust", "sdk_version": env!("CARGO_PKG_VERSION"),
            "framework": "axum", "signing_key_hash": key.hash(), "capabilities": {"trust_probe": "v1"}
        }),
    }
}

fn internal(message: String) -> Response {
    json_response(StatusCode::INTERNAL_SERVER_ERROR, &json!({"type": "internal", "name": "Error", "message": message}))
}

async fn call(app: &App, query: &HashMap<String, String>, body: &[u8], now: cairn::Millis) -> Response {
    let Some(fn_id) = query.get("fnId") else {
        return json_response(StatusCode::BAD_REQUEST, &json!({"message": "the fnId query parameter is required"}));
    };
    let function: Option<&Function> =
        fn_id.strip_prefix(&format!("{}-", app.config.app_id)).and_then(|id| app.registry.get(id));
    let Some(function) = function else {
        return internal(format!("Function \"{fn_id}\" was not found in this app; is the app synced correctly?"));
    };
    let request: CallRequest = match call::decode(body) {
        Ok(request) => request,
        Err(error) => return json_response(StatusCode::BAD_REQUEST, &json!({ "message": error.to_string() })),
    };
    if request.ctx.use_api || request.use_api {
        // Inngest left the memo out (over 4 MiB) for the SDK to fetch; running without it would
        // re-run every completed step, so the call is refused, without retries.
        let mut response = internal(format!(
            "the call for run {} asks the SDK to fetch its state from Inngest's API (use_api), which Cairn does not \
             do; the run's state is over Inngest's 4 MiB request limit: keep step outputs smaller",
            request.ctx.run_id
        ));
        response.headers_mut().insert("x-inngest-no-retry", HeaderValue::from_static("true"));
        return response;
    }
    let step_id = query.get("stepId").map(String::as_str).unwrap_or("step");
    let policy = match step_id {
        "step" if request.ctx.disable_immediate_execution => ExecutionPolicy::Plan,
        "step" => ExecutionPolicy::Lone,
        target => ExecutionPolicy::Target(StepId::from_hashed(target)),
    };
    let journal = call::journal(&request);
    let max_attempts = request.ctx.max_attempts.unwrap_or(function.retries() + 1);
    let mut execution =
        Execution::new(function, RunId::new(&request.ctx.run_id), &request.event, &journal, request.ctx.attempt)
            .lenient()
            .with_events(request.events.clone())
            .attempts(request.ctx.attempt, max_attempts)
            .policy(policy.clone());
    let outcome = match execution.next(now).await {
        Ok(outcome) => outcome,
        Err(error) => return internal(error.to_string()),
    };
    // `step.send_event` runs in the SDK, as in Inngest: the events go to the event API.
    let send = match (&outcome, &policy) {
        (Outcome::Planned(ops), ExecutionPolicy::Lone) if ops.len() == 1 => ops.first(),
        (Outcome::Planned(ops), ExecutionPolicy::Target(target)) => ops.iter().find(|op| &op.id == target),
        _ => None,
    }
    .filter(|op| matches!(op.kind, OpKind::SendEvent { .. }));
    if let ExecutionPolicy::Target(target) = &policy {
        let ran = send.is_some()
            || matches!(&outcome, Outcome::StepCompleted(r) | Outcome::StepFailed { record: r, .. } if &r.id == target);
        if !ran {
            let found: Vec<Value> = match &outcome {
                Outcome::Planned(ops) => {
                    ops.iter().map(|op| json!({"id": op.id, "name": op.name, "displayName": op.name})).collect()
                }
                Outcome::Sleeping { op, .. } | Outcome::Waiting { op } => {
                    vec![json!({"id": op.id, "name": op.name, "displayName": op.name})]
                }
                _ => Vec::new(),
            };
            let mut response = json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({
                    "error": format!("Could not find step \"{target}\" to run; it was never planned"),
                    "requestedStep": target, "foundSteps": found, "totalFoundSteps": found.len()
                }),
            );
            response.headers_mut().insert("x-inngest-no-retry", HeaderValue::from_static("false"));
            return response;
        }
    }
    if let Some(op) = send {
        let events = match &op.kind {
            OpKind::SendEvent { events } => events.as_slice(),
            _ => &[],
        };
        let mut opcode = call::opcode(op, now, &app.config.app_id);
        let no_retry = match send_events(app, events).await {
            Ok(ids) => {
                opcode.op = Opcode::StepRun;
                opcode.data = json!({ "ids": ids });
                None
            }
            Err(message) => {
                opcode.op = Opcode::StepError;
                opcode.error = Some(SerializedError::new(message));
                Some("false")
            }
        };
        let mut response = json_response(StatusCode::PARTIAL_CONTENT, &json!([opcode]));
        if let Some(value) = no_retry {
            response.headers_mut().insert("x-inngest-no-retry", HeaderValue::from_static(value));
        }
        return response;
    }
    let answer = call::answer(&outcome, now, &app.config.app_id);
    let mut response = json_response(StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK), &answer.body);
    if let Some(no_retry) = answer.no_retry {
        response
            .headers_mut()
            .insert("x-inngest-no-retry", HeaderValue::from_static(if no_retry { "true" } else { "false" }));
    }
    if let Some(seconds) = answer.retry_after
        && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
    {
        response.headers_mut().insert("retry-after", value);
    }
    response
}

/// Sends events to the event API (`POST {event_api}/e/{key}`) and returns their ids.
async fn send_events(app: &App, events: &[EventPayload]) -> Result<Vec<String>, String> {
    let key = app
        .config
        .event_key
        .as_deref()
        .ok_or_else(|| "Failed to send event: no event key; set INNGEST_EVENT_KEY".to_string())?;
    let url = format!("{}/e/{key}", app.config.event_api);
    let failed = |err: reqwest::Error| match err.is_timeout() {
        true => format!("Failed to send event: the event API did not answer within {:?}", app.config.http_timeout),
        false => format!("Failed to send event: {err}"),
    };
    let response = app.http.post(&url).json(events).send().await.map_err(failed)?;
    let status = response.status();
    let body: Value = response.json().await.map_err(|err| format!("Failed to send event: {err}"))?;
    if !status.is_success() || body.get("error").is_some_and(|e| !e.is_null()) {
        return Err(format!("Failed to send event: {status} {}", body["error"]));
    }
    Ok(body["ids"]
        .as_array()
        .map(|ids| ids.iter().filter_map(|id| id.as_str().map(str::to_string)).collect())
        .unwrap_or_default())
}

/// A call answered as a stream: `201` now, a space per heartbeat, then the envelope
/// `{"status", "headers", "body" (the answer as a string), "version"}` (section 10).
/// The inner answer is signed like a plain one (the signature in the envelope's headers, over the
/// inner body), since the outer headers leave before the answer exists.
fn stream_call(
    app: Arc<App>,
    query: HashMap<String, String>,
    body: Bytes,
    now_ms: cairn::Millis,
    key: Option<SigningKey>,
) -> Response {
    let heartbeat = app.config.heartbeat;
    let (done, answer) = tokio::sync::oneshot::channel::<String>();
    tokio::spawn(async move {
        let mut response = call(&app, &query, &body, now_ms).await;
        let status = response.status().as_u16();
        let mut headers: serde_json::Map<String, Value> = response
            .headers()
            .iter()
            .filter_map(|(name, value)| Some((name.to_string(), json!(value.to_str().ok()?))))
            .collect();
        let inner = response_body(&mut response).await.unwrap_or_default();
        if let Some(key) = key {
            let signed_at = app.clock.now() / 1000;
            headers.insert("x-inngest-signature".into(), json!(key.header(&inner, signed_at)));
        }
        let envelope =
            StreamEnvelope { status, headers, body: String::from_utf8_lossy(&inner).into_owned(), version: 2 };
        let _ = done.send(serde_json::to_string(&envelope).unwrap_or_default());
    });
    let ticks = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    let chunks = futures::stream::unfold(Some((answer, ticks)), |state| async move {
        let (mut answer, mut ticks) = state?;
        tokio::select! {
            envelope = &mut answer => {
                let envelope = envelope.unwrap_or_else(|_| json!({"error": "the call was dropped"}).to_string());
                Some((Ok::<Bytes, std::io::Error>(Bytes::from(envelope)), None))
            }
            _ = ticks.tick() => Some((Ok(Bytes::from_static(b" ")), Some((answer, ticks)))),
        }
    });
    let mut response = (StatusCode::CREATED, axum::body::Body::from_stream(chunks)).into_response();
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("x-inngest-sdk", HeaderValue::from_static(SDK));
    response
}
