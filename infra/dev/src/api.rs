//! The dashboard's JSON API (also what `cairn runs` reads): functions, runs with their steps,
//! events with the runs they started, and the actions: invoke, rerun, cancel. `GET /api/live`
//! is a server-sent event stream that ticks whenever a run, an event or the queue changes.

use crate::control::DevControl;
use crate::dev::{Dev, Entry, INNGEST_PREFIX};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use cairn::lifecycle::{ControlError, RerunFrom};
use cairn::store::RunQuery;
use cairn::{Journal, RunId, RunMeta, RunStatus, RunStore, StepRecord, StepState};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

/// A JSON error answer: `{"error": message}`.
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

/// A run as listed.
pub fn run_summary(meta: &RunMeta) -> Value {
    let end = meta.ended_at.unwrap_or(meta.updated_at);
    json!({
        "run_id": meta.run_id,
        "function_id": meta.function_id,
        "status": meta.status,
        "event_name": meta.event.name,
        "event_id": meta.event.id,
        "attempt": meta.attempt,
        "created_at": meta.created_at,
        "updated_at": meta.updated_at,
        "ended_at": meta.ended_at,
        "duration_ms": end - meta.created_at,
        "output": meta.output,
        "error": meta.error,
        "started_by": meta.started_by,
        // Why a run is not running, when flow control decided it.
        "reason": meta
            .skipped
            .as_ref()
            .map(cairn::Skipped::describe)
            .or_else(|| meta.cancelled_by.clone())
            .or_else(|| meta.queued.as_ref().filter(|_| meta.status == cairn::RunStatus::Queued).map(cairn::Queued::describe)),
    })
}

/// A step as the timeline shows it.
pub fn step_json(step: &StepRecord) -> Value {
    let (status, output, error, wake_at) = match &step.state {
        StepState::Completed { output } => ("completed", Some(output.clone()), None, None),
        StepState::Failed { error } => ("failed", None, Some(error), None),
        StepState::Retrying { error, retry_at } => ("retrying", None, Some(error), Some(*retry_at)),
        StepState::Scheduled { wake_at } => ("scheduled", None, None, Some(*wake_at)),
    };
    json!({
        "id": step.id,
        "name": step.name,
        "kind": step.kind,
        "position": step.position,
        "status": status,
        "output": output,
        "error": error,
        "wake_at": wake_at,
        "attempts": step.attempts,
        "started_at": step.started_at,
        "ended_at": step.ended_at,
        "detail": step.detail,
    })
}

/// `GET /api/functions`.
pub async fn functions(State(dev): State<Arc<Dev>>) -> Response {
    let now = dev.now();
    let mut list: Vec<Value> = dev
        .template
        .functions
        .iter()
        .filter(|f| f.is_routed())
        .map(|f| {
            let mut triggers: Vec<Value> = f.event_names().into_iter().map(|name| json!({"event": name})).collect();
            triggers.extend(f.schedules.iter().map(|s| {
                json!({"schedule": s.expression_text, "time_zone": s.time_zone, "next_at": s.expression.next_after(now, now, &s.time_zone)})
            }));
            if let (Some(queue), Some(source)) = (f.timer_queue(), f.queues.first()) {
                triggers.push(json!({
                    "queue": queue,
                    "resource": source.queue_resource,
                    "batch_size": source.batch_size,
                    "report_batch_item_failures": source.report_batch_item_failures,
                }));
            }
            json!({
                "id": f.function_id,
                "binary": f.binary,
                "function_name": f.function_name,
                "resource": f.resource,
                "description": f.description,
                "runtime": "lambda",
                "triggers": triggers,
            })
        })
        .collect();
    list.extend(dev.inngest.functions_json());
    Json(json!({"functions": list})).into_response()
}

/// Filters of `GET /api/runs` (and of the bulk operations).
#[derive(Debug, Default, Deserialize)]
pub struct RunsQuery {
    function: Option<String>,
    status: Option<String>,
    /// Created at or after (ms since the epoch).
    since: Option<i64>,
    /// Created before (ms since the epoch).
    until: Option<i64>,
    limit: Option<usize>,
}

impl RunsQuery {
    /// The store's query, or a `400` naming the bad status.
    pub(crate) fn to_query(&self) -> Result<RunQuery, Response> {
        let status = match self.status.as_deref().filter(|s| !s.is_empty()) {
            None => None,
            Some(text) => Some(RunStatus::parse(text).ok_or_else(|| {
                error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "unknown status `{text}`: expected running, sleeping, waiting, completed, failed or cancelled"
                    ),
                )
            })?),
        };
        Ok(RunQuery {
            function_id: self.function.clone().filter(|f| !f.is_empty()),
            status,
            created_from: self.since,
            created_before: self.until,
            limit: self.limit.unwrap_or(100).clamp(1, 10_000),
        })
    }
}

/// `GET /api/runs`.
pub async fn runs(State(dev): State<Arc<Dev>>, Query(query): Query<RunsQuery>) -> Response {
    let run_query = match query.to_query() {
        Ok(query) => query,
        Err(response) => return response,
    };
    match dev.store.list_runs(&run_query).await {
        Ok(runs) => Json(json!({"runs": runs.iter().map(run_summary).collect::<Vec<_>>()})).into_response(),
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
    }
}

async fn load(dev: &Dev, run_id: &str) -> Result<Journal, Response> {
    match dev.store.load(&RunId::new(run_id)).await {
        Ok(Some(journal)) => Ok(journal),
        Ok(None) => Err(error(StatusCode::NOT_FOUND, format!("no run `{run_id}`"))),
        Err(err) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, err.to_string())),
    }
}

/// A run with its event and its steps in order, as `GET /api/runs/{id}` answers.
pub fn run_json(journal: &Journal) -> Value {
    let mut run = run_summary(&journal.meta);
    run["event"] = serde_json::to_value(&journal.meta.event).unwrap_or_default();
    run["invoked_by"] = serde_json::to_value(&journal.meta.invoked_by).unwrap_or_default();
    json!({"run": run, "steps": journal.steps.iter().map(step_json).collect::<Vec<_>>()})
}

/// `GET /api/runs/{id}`: the run, its event and its steps in order.
pub async fn run(State(dev): State<Arc<Dev>>, Path(run_id): Path<String>) -> Response {
    match load(&dev, &run_id).await {
        Ok(journal) => Json(run_json(&journal)).into_response(),
        Err(response) => response,
    }
}

/// The status and message of a refused or failed run operation.
pub(crate) fn control_error(err: ControlError) -> Response {
    let status = match &err {
        ControlError::NotFound(_) => StatusCode::NOT_FOUND,
        ControlError::AlreadyEnded { .. } | ControlError::NoFailedStep(_) | ControlError::Contended(_) => {
            StatusCode::CONFLICT
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, err.to_string())
}

/// `POST /api/runs/{id}/cancel`: a running, sleeping or waiting run ends `cancelled` (the
/// core's [`cairn::lifecycle::RunControl::cancel`]): its wake-ups are deleted, its waits removed
/// and `inngest/function.cancelled` sent.
pub async fn cancel(State(dev): State<Arc<Dev>>, Path(run_id): Path<String>) -> Response {
    let control = DevControl::new(dev);
    match control.runs().cancel(&RunId::new(&run_id)).await {
        Ok(_) => Json(json!({"run_id": run_id, "status": "cancelled"})).into_response(),
        Err(err) => control_error(err),
    }
}

/// Body of `POST /api/runs/{id}/rerun`.
#[derive(Debug, Default, Deserialize)]
pub struct RerunRequest {
    /// `start` (default) or `failed`: keep the steps that completed before the first failed one.
    #[serde(default)]
    pub(crate) from: Option<String>,
}

/// `start` (the default) or `failed`, else a `400`.
pub(crate) fn rerun_from(text: Option<String>) -> Result<RerunFrom, Response> {
    match text.as_deref() {
        None => Ok(RerunFrom::Start),
        Some(text) => RerunFrom::parse(text)
            .ok_or_else(|| error(StatusCode::BAD_REQUEST, format!("`from` is `start` or `failed`, not `{text}`"))),
    }
}

/// `POST /api/runs/{id}/rerun`: a new run of the same function with the same event, from the
/// start or from the failed step (the steps completed before it are copied, so they do not run
/// again).
pub async fn rerun(
    State(dev): State<Arc<Dev>>,
    Path(run_id): Path<String>,
    body: Option<Json<RerunRequest>>,
) -> Response {
    let from = match rerun_from(body.and_then(|Json(b)| b.from)) {
        Ok(from) => from,
        Err(response) => return response,
    };
    let control = DevControl::new(dev);
    match control.runs().rerun(&RunId::new(&run_id), from).await {
        Ok(new_id) => Json(json!({"run_id": new_id, "from": from, "rerun_of": run_id})).into_response(),
        Err(err) => control_error(err),
    }
}

/// Body of the bulk operations `POST /api/runs/cancel` and `POST /api/runs/replay`: the filter
/// (as `GET /api/runs` takes it, with a time window in milliseconds) and, for a replay, where
/// each rerun starts.
#[derive(Debug, Default, Deserialize)]
pub struct BulkRequest {
    #[serde(flatten)]
    pub(crate) filter: RunsQuery,
    #[serde(default)]
    pub(crate) from: Option<String>,
}

/// `POST /api/runs/cancel`: cancels every unfinished run the filter matches.
pub async fn cancel_matching(State(dev): State<Arc<Dev>>, Json(body): Json<BulkRequest>) -> Response {
    let query = match body.filter.to_query() {
        Ok(query) => query,
        Err(response) => return response,
    };
    let control = DevControl::new(dev);
    match control.runs().cancel_matching(&query).await {
        Ok(report) => Json(report).into_response(),
        Err(err) => control_error(err),
    }
}

/// `POST /api/runs/replay`: reruns every run the filter matches (from `start` or `failed`).
pub async fn replay_matching(State(dev): State<Arc<Dev>>, Json(body): Json<BulkRequest>) -> Response {
    let (query, from) = match (body.filter.to_query(), rerun_from(body.from)) {
        (Ok(query), Ok(from)) => (query, from),
        (Err(response), _) | (_, Err(response)) => return response,
    };
    let control = DevControl::new(dev);
    match control.runs().replay_matching(&query, from).await {
        Ok(report) => Json(report).into_response(),
        Err(err) => control_error(err),
    }
}

/// Body of `POST /api/functions/{id}/invoke`.
#[derive(Debug, Default, Deserialize)]
pub struct InvokeRequest {
    /// The event data.
    #[serde(default)]
    data: Value,
    /// The event name (default: the function's first trigger).
    #[serde(default)]
    pub(crate) name: Option<String>,
}

impl InvokeRequest {
    /// The event data: `{}` when none was given, else a JSON object or a `400`.
    pub(crate) fn data(&mut self) -> Result<Value, Response> {
        match std::mem::take(&mut self.data) {
            Value::Null => Ok(json!({})),
            data if data.is_object() => Ok(data),
            _ => Err(error(StatusCode::BAD_REQUEST, "`data` must be a JSON object")),
        }
    }
}

/// `POST /api/functions/{id}/invoke`: runs the function with an event carrying `data`, logged
/// like any other event but delivered to this function only.
pub async fn invoke(
    State(dev): State<Arc<Dev>>,
    Path(function_id): Path<String>,
    body: Option<Json<InvokeRequest>>,
) -> Response {
    let mut request = body.map(|Json(b)| b).unwrap_or_default();
    let data = match request.data() {
        Ok(data) => data,
        Err(response) => return response,
    };
    let (target, default_name) =
        if let Some(f) = dev.template.by_function_id(&function_id).or(dev.template.function(&function_id)) {
            let name = f.event_names().into_iter().next().unwrap_or_else(|| cairn::SCHEDULED_EVENT.to_string());
            (f.binary.clone(), name)
        } else if let Some(name) = dev.inngest.first_trigger(&function_id) {
            (format!("{INNGEST_PREFIX}{function_id}"), name)
        } else {
            return error(
                StatusCode::NOT_FOUND,
                format!("no function `{function_id}` in template.yaml or the Inngest apps"),
            );
        };
    let name = request.name.unwrap_or(default_name);
    let mut data = data;
    if name == cairn::SCHEDULED_EVENT && data.get("cron").is_none() {
        // A cron function starts on the scheduled event of its own cron.
        let cron = dev.template.function(&target).and_then(|f| f.schedules.first()).and_then(|s| {
            serde_json::from_str::<Value>(&s.input).ok().and_then(|input| input["cron"].as_str().map(str::to_string))
        });
        if let Some(cron) = cron {
            data["cron"] = json!(cron);
        }
    }
    let now = dev.now();
    let event_id = cairn::new_event_id(now);
    let entry = Entry {
        source: "cairn.dashboard".into(),
        detail_type: name.clone(),
        detail: json!({"name": name, "data": data, "id": event_id, "ts": now}),
        bus: "dashboard".into(),
        time: Some(now),
        resources: Vec::new(),
    };
    if let Err(err) = dev.put(vec![entry], "dashboard", Some(&target)) {
        return error(StatusCode::INTERNAL_SERVER_ERROR, err);
    }
    let function_id = dev.template.function(&target).map_or(function_id.clone(), |f| f.function_id.clone());
    Json(json!({"event_id": event_id, "run_id": RunId::for_event(&function_id, &event_id)})).into_response()
}

/// `POST /api/signals` (the dashboard, `cairn`'s own clients) and `POST /v1/signals` (the
/// Inngest SDK's `sendSignal`): `{"signal": "...", "data": ...}` goes to the run waiting for
/// the signal, as `{"data": {"run_id": ...}}`; 404 when no run waits for it (the SDK's "no
/// run"), and nothing is sent.
pub async fn signal(State(dev): State<Arc<Dev>>, Json(body): Json<Value>) -> Response {
    let Some(signal) = body["signal"].as_str().map(str::trim).filter(|signal| !signal.is_empty()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "`signal` must be a non-empty string: {\"signal\": \"...\", \"data\": ...}",
        );
    };
    let waiter = match cairn::lifecycle::waits::signal_waiter(&dev.store, signal, None).await {
        Ok(Some(run_id)) => run_id,
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no run waits for signal `{signal}`")),
        Err(err) => return error(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
    };
    let now = dev.now();
    let event_id = cairn::new_event_id(now);
    let data = body.get("data").cloned().unwrap_or(Value::Null);
    let event = cairn::signal(signal, data).with_id(&event_id).with_ts(now);
    let entry = Entry {
        source: "cairn.signal".into(),
        detail_type: event.name.clone(),
        detail: serde_json::to_value(&event).unwrap_or_default(),
        bus: "dashboard".into(),
        time: Some(now),
        resources: Vec::new(),
    };
    if let Err(err) = dev.put(vec![entry], "signal", None) {
        return error(StatusCode::INTERNAL_SERVER_ERROR, err);
    }
    Json(json!({"data": {"run_id": waiter}, "event_id": event_id})).into_response()
}

/// Filters of `GET /api/events`.
#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    limit: Option<usize>,
    name: Option<String>,
}

/// `GET /api/events`: the event log, newest first, each with the runs it started.
pub async fn events(State(dev): State<Arc<Dev>>, Query(query): Query<EventsQuery>) -> Response {
    let limit = query.limit.unwrap_or(100).clamp(1, 10_000);
    match dev.db.events(limit, query.name.as_deref().filter(|n| !n.is_empty())) {
        Ok(events) => {
            let list: Vec<Value> = events
                .iter()
                .map(|e| {
                    let mut value = serde_json::to_value(e).unwrap_or_default();
                    value["runs"] = json!(runs_of(&dev, &e.targets, &e.event_id));
                    value
                })
                .collect();
            Json(json!({"events": list, "total": dev.db.event_count()})).into_response()
        }
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, err),
    }
}

/// The run ids an event starts in each target (run ids derive from function and event id).
fn runs_of(dev: &Dev, targets: &[String], event_id: &str) -> Vec<RunId> {
    targets
        .iter()
        .map(|target| {
            let function_id = target
                .strip_prefix(INNGEST_PREFIX)
                .map(str::to_string)
                .or_else(|| dev.template.function(target).map(|f| f.function_id.clone()))
                .unwrap_or_else(|| target.clone());
            RunId::for_event(&function_id, event_id)
        })
        .collect()
}

/// `GET /api/events/{id}`: one event, its invocations, and the runs it started that exist.
pub async fn event(State(dev): State<Arc<Dev>>, Path(id): Path<String>) -> Response {
    let event = match dev.db.event(&id) {
        Ok(Some(event)) => event,
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no event `{id}`")),
        Err(err) => return error(StatusCode::INTERNAL_SERVER_ERROR, err),
    };
    let mut runs = Vec::new();
    for run_id in runs_of(&dev, &event.targets, &event.event_id) {
        if let Ok(Some(journal)) = dev.store.load(&run_id).await {
            runs.push(run_summary(&journal.meta));
        }
    }
    let invocations = dev.db.invocations(100, Some(&event.event_id)).unwrap_or_default();
    Json(json!({"event": event, "runs": runs, "invocations": invocations})).into_response()
}

/// `GET /api/schedules`.
pub async fn schedules(State(dev): State<Arc<Dev>>) -> Response {
    match dev.db.schedules(None) {
        Ok(list) => Json(json!({"schedules": list})).into_response(),
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, err),
    }
}

/// `GET /api/parameters`: the SSM parameters' names, types and versions, never their values.
pub async fn parameters(State(dev): State<Arc<Dev>>) -> Response {
    match dev.parameters.list() {
        Ok(list) => Json(json!({"parameters": list})).into_response(),
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, err),
    }
}

/// `GET /api/invocations`.
pub async fn invocations(State(dev): State<Arc<Dev>>, Query(query): Query<HashMap<String, String>>) -> Response {
    let limit = query.get("limit").and_then(|l| l.parse().ok()).unwrap_or(100);
    match dev.db.invocations(limit, None) {
        Ok(list) => Json(json!({"invocations": list})).into_response(),
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, err),
    }
}

/// `GET /api/live`: `change` whenever something the dashboard shows changed, with keep-alives.
/// Every open dashboard shares the one watcher of [`Dev::changes`].
pub async fn live(
    State(dev): State<Arc<Dev>>,
) -> Sse<impl futures::Stream<Item = Result<SseEvent, std::convert::Infallible>>> {
    let changes = dev.changes.subscribe();
    let stream = futures::stream::unfold((changes, true), |(mut changes, first)| async move {
        if !first {
            changes.changed().await.ok()?;
        }
        let now = *changes.borrow_and_update();
        Some((Ok(SseEvent::default().event("change").data(now.to_string())), (changes, false)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
