//! `cairn console`: the dashboard and its runs API over a deployed stack, served from the
//! operator's machine (nothing runs in AWS). It reads the stack's table through the `runs`
//! index (no Scan), and cancels, reruns, replays and invokes with the core's
//! [`RunControl`] on that stack's own parts: the table, the EventBridge bus (system events) and
//! each function's SQS timer queue (wake-ups), so the deployed functions do the rest exactly as
//! they would for any other run.
//!
//! Every function binary is a **scope** of the table (`CAIRN_SCOPE`, the binary's name): the
//! console holds one store per scope, finds a run by trying each, and acts on it with that
//! scope's timer queue.

use crate::DevError;
use crate::api::{self, BulkRequest, RunsQuery, control_error, error, rerun_from};
use crate::template::Template;
use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cairn::lifecycle::{BulkReport, ControlError, RunControl};
use cairn::{BusError, Clock, EventPayload, Journal, Millis, RunId, RunStore, RunnerConfig, SystemClock, Timer};
use cairn_aws::{DynamoDbStore, EventBridgeBus, QueueTimer, SchedulerTimer};
use serde_json::{Value, json};
use std::sync::Arc;

/// Where a deployed stack's parts are (from its outputs, or flags).
#[derive(Clone, Debug, Default)]
pub struct ConsoleConfig {
    /// The runs table (`RunsTableName`).
    pub table: String,
    /// The event bus (`EventBusName`).
    pub bus: String,
    /// The Scheduler group of long wake-ups (the stack's name, as the template names it).
    pub schedule_group: String,
    /// Each function binary (scope) and its timer queue URL (`TimerQueues`: `scope=url, ...`).
    pub timer_queues: Vec<(String, String)>,
    /// More scopes to read, with no timer queue known (reruns there start at the reconciler's
    /// next pass).
    pub scopes: Vec<String>,
    /// Host names answered besides the loopback ones.
    pub allowed_hosts: Vec<String>,
}

impl ConsoleConfig {
    /// Parses `scope=url, scope=url` (the `TimerQueues` output).
    ///
    /// # Errors
    /// An entry without `=`, or with an empty scope or URL, named.
    pub fn parse_timer_queues(text: &str) -> Result<Vec<(String, String)>, DevError> {
        text.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| match entry.split_once('=') {
                Some((scope, url)) if !scope.trim().is_empty() && !url.trim().is_empty() => {
                    cairn_aws::check_scope(scope.trim()).map_err(DevError::caused_by)?;
                    Ok((scope.trim().to_string(), url.trim().to_string()))
                }
                _ => Err(DevError::new(format!("timer queue `{entry}` is not `scope=queue-url`"))),
            })
            .collect()
    }
}

/// One function binary's slice of the stack: its store and its timer.
#[derive(Clone, Debug)]
pub struct Scope {
    /// The binary's name.
    pub name: String,
    /// Its items in the table.
    pub store: DynamoDbStore,
    /// Its wake-ups.
    pub timer: ScopeTimer,
}

/// A scope's timer: its SQS queue when known, and its Scheduler schedules (to forget them).
#[derive(Clone, Debug)]
pub struct ScopeTimer {
    queue: Option<QueueTimer>,
    schedules: SchedulerTimer,
}

impl Timer for ScopeTimer {
    async fn wake_at(&self, run_id: &RunId, function_id: &str, key: &str, at: Millis) -> Result<(), BusError> {
        match &self.queue {
            Some(queue) => queue.wake_at(run_id, function_id, key, at).await,
            None => {
                tracing::warn!(%run_id, "no timer queue for this function: the reconciler starts the run");
                Ok(())
            }
        }
    }

    async fn forget(&self, run_id: &RunId) -> Result<(), BusError> {
        self.schedules.delete_run_schedule(run_id).await
    }
}

/// The console's state.
#[derive(Debug)]
pub struct Console {
    /// The configuration it was started with.
    pub config: ConsoleConfig,
    /// One per function binary.
    pub scopes: Vec<Scope>,
    /// The stack's bus.
    pub bus: EventBridgeBus,
    /// The template (function descriptions and triggers), when one is at hand.
    pub template: Option<Template>,
    clock: SystemClock,
}

impl Console {
    /// A console over the stack `config` names, with AWS clients from `aws` (credentials,
    /// region and endpoint as the SDK finds them).
    ///
    /// # Errors
    /// No scope to read, or a scope name that cannot be one.
    pub fn new(
        config: ConsoleConfig,
        aws: &aws_config::SdkConfig,
        template: Option<Template>,
    ) -> Result<Self, DevError> {
        let dynamodb = aws_sdk_dynamodb::Client::new(aws);
        let sqs = aws_sdk_sqs::Client::new(aws);
        let scheduler = aws_sdk_scheduler::Client::new(aws);
        let mut names: Vec<String> = config.timer_queues.iter().map(|(scope, _)| scope.clone()).collect();
        names.extend(config.scopes.iter().cloned());
        names.extend(
            template.iter().flat_map(|t| t.functions.iter().filter(|f| f.is_routed()).map(|f| f.binary.clone())),
        );
        let mut seen = std::collections::HashSet::new();
        names.retain(|name| seen.insert(name.clone()));
        if names.is_empty() {
            return Err("no function to read: give --timer-queues scope=url,... (the stack's TimerQueues output), --scope, or --template".into());
        }
        let scopes = names
            .into_iter()
            .map(|name| {
                let store = DynamoDbStore::new(dynamodb.clone(), &config.table, &name).map_err(DevError::caused_by)?;
                let schedules = SchedulerTimer::new(scheduler.clone(), &config.schedule_group, "", "", "").scope(&name);
                let queue = config
                    .timer_queues
                    .iter()
                    .find(|(scope, _)| *scope == name)
                    .map(|(_, url)| QueueTimer::new(sqs.clone(), url, schedules.clone()));
                Ok(Scope { name, store, timer: ScopeTimer { queue, schedules } })
            })
            .collect::<Result<Vec<_>, DevError>>()?;
        let bus = EventBridgeBus::new(aws_sdk_eventbridge::Client::new(aws), &config.bus);
        Ok(Console { config, scopes, bus, template, clock: SystemClock })
    }

    fn control<'a>(&'a self, scope: &'a Scope) -> RunControl<'a, DynamoDbStore, EventBridgeBus, ScopeTimer> {
        RunControl::new(&scope.store, &self.bus, &scope.timer, self.clock.now(), RunnerConfig::default().durations())
    }

    /// The run and the scope that holds it.
    ///
    /// # Errors
    /// [`ControlError::NotFound`] when no scope has it, or the store's error.
    pub async fn find(&self, run_id: &RunId) -> Result<(&Scope, Journal), ControlError> {
        for scope in &self.scopes {
            if let Some(journal) = scope.store.load(run_id).await? {
                return Ok((scope, journal));
            }
        }
        Err(ControlError::NotFound(run_id.clone()))
    }

    /// The scope whose binary runs `function_id`: the template's, else the one with runs of it.
    async fn scope_of(&self, function_id: &str) -> Result<&Scope, ControlError> {
        if let Some(function) = self.template.as_ref().and_then(|t| t.by_function_id(function_id))
            && let Some(scope) = self.scopes.iter().find(|scope| scope.name == function.binary)
        {
            return Ok(scope);
        }
        for scope in &self.scopes {
            if scope.store.functions().await?.iter().any(|known| known == function_id) {
                return Ok(scope);
            }
        }
        Err(ControlError::Store(cairn::StoreError::Backend(format!(
            "no function `{function_id}` in this stack's scopes ({})",
            self.scopes.iter().map(|scope| scope.name.as_str()).collect::<Vec<_>>().join(", ")
        ))))
    }

    /// Runs of every scope, newest first.
    async fn list(&self, query: &cairn::store::RunQuery) -> Result<Vec<cairn::RunMeta>, ControlError> {
        let mut runs = Vec::new();
        for scope in &self.scopes {
            runs.extend(scope.store.list_runs(query).await?);
        }
        runs.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| b.run_id.cmp(&a.run_id)));
        runs.truncate(if query.limit == 0 { 100 } else { query.limit });
        Ok(runs)
    }

    /// The functions: the template's, and any other with runs in a scope.
    async fn functions(&self) -> Result<Vec<Value>, ControlError> {
        let mut list: Vec<Value> = Vec::new();
        let mut known = std::collections::HashSet::new();
        for function in self.template.iter().flat_map(|t| t.functions.iter().filter(|f| f.is_routed())) {
            known.insert(function.function_id.clone());
            let mut triggers: Vec<Value> =
                function.event_names().into_iter().map(|name| json!({"event": name})).collect();
            triggers.extend(
                function.schedules.iter().map(|s| json!({"schedule": s.expression_text, "time_zone": s.time_zone})),
            );
            list.push(json!({
                "id": function.function_id,
                "binary": function.binary,
                "function_name": function.function_name,
                "description": function.description,
                "runtime": "lambda",
                "triggers": triggers,
            }));
        }
        for scope in &self.scopes {
            for function in scope.store.functions().await? {
                if known.insert(function.clone()) {
                    list.push(json!({
                        "id": function, "binary": scope.name, "function_name": scope.name,
                        "description": "", "runtime": "lambda", "triggers": [],
                    }));
                }
            }
        }
        Ok(list)
    }
}

/// Every route of the console: the dashboard and the runs part of its API.
pub fn router(console: Arc<Console>) -> Router {
    let allowed: Arc<[String]> = console.config.allowed_hosts.clone().into();
    crate::server::dashboard_assets()
        .route(
            "/api/health",
            get(|State(console): State<Arc<Console>>| async move {
                Json(json!({"ok": true, "server": "cairn-console", "table": console.config.table, "bus": console.config.bus}))
            }),
        )
        .route("/api/functions", get(functions))
        .route("/api/functions/{id}/invoke", post(invoke))
        .route("/api/runs", get(runs))
        .route("/api/runs/cancel", post(cancel_matching))
        .route("/api/runs/replay", post(replay_matching))
        .route("/api/runs/{id}", get(run))
        .route("/api/runs/{id}/cancel", post(cancel))
        .route("/api/runs/{id}/rerun", post(rerun))
        .fallback(|| async { (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "application/json")], r#"{"error":"not found"}"#) })
        .layer(axum::middleware::from_fn_with_state(allowed, crate::server::guard))
        .with_state(console)
}

async fn functions(State(console): State<Arc<Console>>) -> Response {
    match console.functions().await {
        Ok(list) => Json(json!({"functions": list})).into_response(),
        Err(err) => control_error(err),
    }
}

async fn runs(State(console): State<Arc<Console>>, Query(query): Query<RunsQuery>) -> Response {
    let query = match query.to_query() {
        Ok(query) => query,
        Err(response) => return response,
    };
    match console.list(&query).await {
        Ok(runs) => Json(json!({"runs": runs.iter().map(api::run_summary).collect::<Vec<_>>()})).into_response(),
        Err(err) => control_error(err),
    }
}

async fn run(State(console): State<Arc<Console>>, Path(run_id): Path<String>) -> Response {
    match console.find(&RunId::new(&run_id)).await {
        Ok((_, journal)) => Json(api::run_json(&journal)).into_response(),
        Err(err) => control_error(err),
    }
}

async fn cancel(State(console): State<Arc<Console>>, Path(run_id): Path<String>) -> Response {
    let run_id = RunId::new(&run_id);
    let result = match console.find(&run_id).await {
        Ok((scope, _)) => console.control(scope).cancel(&run_id).await,
        Err(err) => Err(err),
    };
    match result {
        Ok(_) => Json(json!({"run_id": run_id, "status": "cancelled"})).into_response(),
        Err(err) => control_error(err),
    }
}

async fn rerun(
    State(console): State<Arc<Console>>,
    Path(run_id): Path<String>,
    body: Option<Json<api::RerunRequest>>,
) -> Response {
    let from = match rerun_from(body.and_then(|Json(body)| body.from)) {
        Ok(from) => from,
        Err(response) => return response,
    };
    let run_id = RunId::new(&run_id);
    let result = match console.find(&run_id).await {
        Ok((scope, _)) => console.control(scope).rerun(&run_id, from).await,
        Err(err) => Err(err),
    };
    match result {
        Ok(new_id) => Json(json!({"run_id": new_id, "from": from, "rerun_of": run_id})).into_response(),
        Err(err) => control_error(err),
    }
}

/// Merges the per-scope reports of a bulk operation.
fn merge(reports: Vec<BulkReport>) -> BulkReport {
    reports.into_iter().fold(BulkReport::default(), |mut all, report| {
        all.matched += report.matched;
        all.done.extend(report.done);
        all.skipped.extend(report.skipped);
        all
    })
}

async fn cancel_matching(State(console): State<Arc<Console>>, Json(body): Json<BulkRequest>) -> Response {
    let query = match body.filter.to_query() {
        Ok(query) => query,
        Err(response) => return response,
    };
    let mut reports = Vec::new();
    for scope in &console.scopes {
        match console.control(scope).cancel_matching(&query).await {
            Ok(report) => reports.push(report),
            Err(err) => return control_error(err),
        }
    }
    Json(merge(reports)).into_response()
}

async fn replay_matching(State(console): State<Arc<Console>>, Json(body): Json<BulkRequest>) -> Response {
    let (query, from) = match (body.filter.to_query(), rerun_from(body.from)) {
        (Ok(query), Ok(from)) => (query, from),
        (Err(response), _) | (_, Err(response)) => return response,
    };
    let mut reports = Vec::new();
    for scope in &console.scopes {
        match console.control(scope).replay_matching(&query, from).await {
            Ok(report) => reports.push(report),
            Err(err) => return control_error(err),
        }
    }
    Json(merge(reports)).into_response()
}

/// Starts a run of the function with an event carrying `data` and wakes it through the
/// function's timer queue: the deployed function runs it.
async fn invoke(
    State(console): State<Arc<Console>>,
    Path(function_id): Path<String>,
    body: Option<Json<api::InvokeRequest>>,
) -> Response {
    let mut request = body.map(|Json(body)| body).unwrap_or_default();
    let data = match request.data() {
        Ok(data) => data,
        Err(response) => return response,
    };
    let scope = match console.scope_of(&function_id).await {
        Ok(scope) => scope,
        Err(err) => return error(StatusCode::NOT_FOUND, err.to_string()),
    };
    let default_name = console
        .template
        .as_ref()
        .and_then(|t| t.by_function_id(&function_id))
        .and_then(|f| f.event_names().into_iter().next())
        .unwrap_or_else(|| "cairn/console.invoke".to_string());
    let event_id = cairn::new_event_id(console.clock.now());
    let event = EventPayload::new(request.name.unwrap_or(default_name), data).with_id(event_id.clone());
    match console.control(scope).invoke(&function_id, event).await {
        Ok(run_id) => Json(json!({"run_id": run_id, "event_id": event_id})).into_response(),
        Err(err) => control_error(err),
    }
}
