//! The dashboard's JSON API (also what `cairn runs` reads): functions, runs with their steps,
//! events with the runs they started, and the actions: invoke, rerun, cancel. `GET /api/live`
//! is a server-sent event stream that ticks whenever a run, an event or the queue changes.

use crate::dev::{Dev, Entry, INNGEST_PREFIX};
use crate::devdb::NewInvocation;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use cairn::store::RunQuery;
use cairn::{Journal, RunId, RunMeta, RunStatus, RunStore, StepRecord, StepState};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

fn error(status: StatusCode, message: impl Into<String>) -> Response {
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

/// Filters of `GET /api/runs`.
#[derive(Debug, Deserialize)]
pub struct RunsQuery {
    function: Option<String>,
    status: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/runs`.
pub async fn runs(State(dev): State<Arc<Dev>>, Query(query): Query<RunsQuery>) -> Response {
    let status = match query.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(text) => match RunStatus::parse(text) {
            Some(status) => Some(status),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "unknown status `{text}`: expected running, sleeping, waiting, completed, failed or cancelled"
                    ),
                );
            }
        },
    };
    let run_query = RunQuery {
        function_id: query.function.filter(|f| !f.is_empty()),
        status,
        limit: query.limit.unwrap_or(100).clamp(1, 10_000),
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

/// `GET /api/runs/{id}`: the run, its event and its steps in order.
pub async fn run(State(dev): State<Arc<Dev>>, Path(run_id): Path<String>) -> Response {
    match load(&dev, &run_id).await {
        Ok(journal) => {
            let mut run = run_summary(&journal.meta);
            run["event"] = serde_json::to_value(&journal.meta.event).unwrap_or_default();
            run["invoked_by"] = serde_json::to_value(&journal.meta.invoked_by).unwrap_or_default();
            Json(json!({"run": run, "steps": journal.steps.iter().map(step_json).collect::<Vec<_>>()})).into_response()
        }
        Err(response) => response,
    }
}

/// `POST /api/runs/{id}/cancel`: a running, sleeping or waiting run ends `cancelled`; its
/// pending wake-ups are deleted and its waits removed.
pub async fn cancel(State(dev): State<Arc<Dev>>, Path(run_id): Path<String>) -> Response {
    for _ in 0..5 {
        let journal = match load(&dev, &run_id).await {
            Ok(journal) => journal,
            Err(response) => return response,
        };
        let mut meta = journal.meta;
        if meta.status.is_finished() {
            return error(StatusCode::CONFLICT, format!("run `{run_id}` already ended {}", meta.status));
        }
        let now = dev.now();
        meta.status = RunStatus::Cancelled;
        meta.ended_at = Some(now);
        meta.updated_at = now;
        meta.lease = None;
        match dev.store.update_meta(&meta).await {
            Ok(_) => {
                for step in journal.steps.iter().filter(|s| matches!(s.state, StepState::Scheduled { .. })) {
                    if let Some(event) = step.detail.as_ref().and_then(|d| d["event"].as_str()) {
                        let _ = dev.store.remove_wait(event, &meta.run_id, &step.id).await;
                    }
                }
                if let Err(err) = dev.db.delete_schedules_of_run(&run_id) {
                    tracing::warn!(error = %err, "cannot delete the run's schedules");
                }
                return Json(json!({"run_id": run_id, "status": "cancelled"})).into_response();
            }
            Err(cairn::StoreError::Conflict { .. }) => continue,
            Err(err) => return error(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
        }
    }
    error(StatusCode::CONFLICT, format!("run `{run_id}` kept changing; try again"))
}

/// Body of `POST /api/runs/{id}/rerun`.
#[derive(Debug, Default, Deserialize)]
pub struct RerunRequest {
    /// `start` (default) or `failed`: keep the steps that completed before the first failed one.
    #[serde(default)]
    from: Option<String>,
}

/// `POST /api/runs/{id}/rerun`: a new run of the same function with the same event, from the
/// start or from the failed step (the steps completed before it are copied, so they do not run
/// again).
pub async fn rerun(
    State(dev): State<Arc<Dev>>,
    Path(run_id): Path<String>,
    body: Option<Json<RerunRequest>>,
) -> Response {
    let from = body.and_then(|Json(b)| b.from).unwrap_or_else(|| "start".into());
    let journal = match load(&dev, &run_id).await {
        Ok(journal) => journal,
        Err(response) => return response,
    };
    let keep: Vec<&StepRecord> = match from.as_str() {
        "start" => Vec::new(),
        "failed" => {
            let Some(failed) = journal.steps.iter().find(|s| matches!(s.state, StepState::Failed { .. })) else {
                return error(
                    StatusCode::CONFLICT,
                    format!("run `{run_id}` has no failed step; rerun it from the start"),
                );
            };
            journal
                .steps
                .iter()
                .filter(|s| s.position < failed.position && matches!(s.state, StepState::Completed { .. }))
                .collect()
        }
        other => return error(StatusCode::BAD_REQUEST, format!("`from` is `start` or `failed`, not `{other}`")),
    };
    let now = dev.now();
    let new_id = RunId::for_event(&journal.meta.function_id, &format!("{run_id}/rerun/{}", cairn::new_event_id(now)));
    let meta = RunMeta::new(new_id.clone(), journal.meta.function_id.clone(), journal.meta.event.clone(), now);
    if let Err(err) = dev.store.create_run(meta).await {
        return error(StatusCode::INTERNAL_SERVER_ERROR, err.to_string());
    }
    for step in keep {
        if let Err(err) = dev.store.commit_step(&new_id, step).await {
            return error(StatusCode::INTERNAL_SERVER_ERROR, err.to_string());
        }
    }
    match resume(&dev, &journal.meta.function_id, &new_id, "rerun") {
        Ok(()) => Json(json!({"run_id": new_id, "from": from, "rerun_of": run_id})).into_response(),
        Err(response) => response,
    }
}

/// Queues a resume of `run_id` on the function that owns it.
fn resume(dev: &Dev, function_id: &str, run_id: &RunId, cause: &str) -> Result<(), Response> {
    let target = if let Some(f) = dev.template.by_function_id(function_id) {
        f.binary.clone()
    } else if dev.inngest.has_function(function_id) {
        format!("{INNGEST_PREFIX}{function_id}")
    } else {
        return Err(error(
            StatusCode::NOT_FOUND,
            format!("no function `{function_id}` in template.yaml or the Inngest apps"),
        ));
    };
    dev.enqueue(NewInvocation {
        function: target,
        cause: cause.into(),
        event_id: None,
        payload: json!({"cairn": "resume", "function_id": function_id, "run_id": run_id}),
        due_at: None,
    })
    .map_err(|err| error(StatusCode::INTERNAL_SERVER_ERROR, err))
}

/// Body of `POST /api/functions/{id}/invoke`.
#[derive(Debug, Default, Deserialize)]
pub struct InvokeRequest {
    /// The event data.
    #[serde(default)]
    data: Value,
    /// The event name (default: the function's first trigger).
    #[serde(default)]
    name: Option<String>,
}

/// `POST /api/functions/{id}/invoke`: runs the function with an event carrying `data`, logged
/// like any other event but delivered to this function only.
pub async fn invoke(
    State(dev): State<Arc<Dev>>,
    Path(function_id): Path<String>,
    body: Option<Json<InvokeRequest>>,
) -> Response {
    let request = body.map(|Json(b)| b).unwrap_or_default();
    let data = if request.data.is_null() { json!({}) } else { request.data };
    if !data.is_object() {
        return error(StatusCode::BAD_REQUEST, "`data` must be a JSON object");
    }
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
