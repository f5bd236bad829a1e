//! `cairn dev -u URL`: the dev server as an Inngest executor for apps that speak the Inngest SDK
//! protocol (the official TypeScript SDK's included), so TypeScript and Rust functions share one
//! dev server, one event log and one dashboard.
//!
//! Apps are synced in band (a `PUT` every 5 s, answered with their functions) or out of band
//! (the SDK posts to `/fn/register`); their `step.sendEvent`s arrive at `/e/{key}` and are routed
//! like any other event. A run is driven one request at a time (no checkpointing: `ctx.fn_id` is
//! not sent), its steps kept in the same store as Cairn's runs: `StepRun` and `StepFailed` are
//! memoized, `StepPlanned` steps are called by id, `Sleep` and `WaitForEvent` suspend the run on a
//! dev schedule and a wait, `StepError` and function errors are retried with Inngest's back-off.
//! `InvokeFunction` is not supported yet: the run fails saying so.

use crate::dev::{Dev, Entry, INNGEST_PREFIX};
use crate::devdb::{Invocation, Schedule};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cairn::{
    CronSchedule, EventPayload, MatchExpr, Millis, RunId, RunMeta, RunStatus, RunStore, StepError, StepId, StepKind,
    StepRecord, StepState, Wait,
};
use cairn_aws::{ControlMessage, WireError};
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

/// The queue target that matches an event against the apps' pending waits.
pub const WAITS_TARGET: &str = "waits";
/// The latest wake-up time: 9999-12-31T23:59:59Z, the last second an `at()` expression (and the
/// dashboard) can show. A longer sleep saturates here.
pub const MAX_WAKE_AT: Millis = 253_402_300_799_000;
/// The longest in-band sync call: a hung app is retried soon, not after a whole app timeout.
const SYNC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// One synced function.
#[derive(Clone, Debug)]
struct AppFunction {
    id: String,
    name: String,
    app_url: String,
    events: Vec<(String, Option<String>)>,
    crons: Vec<String>,
    max_attempts: u32,
}

/// The Inngest-protocol apps the dev server drives.
#[derive(Debug, Default)]
pub struct InngestApps {
    urls: Vec<String>,
    functions: RwLock<Vec<AppFunction>>,
    run_locks: tokio::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    has_waiters: AtomicBool,
    http: reqwest::Client,
    timeout: std::time::Duration,
}

type Result<T> = std::result::Result<T, String>;

fn store_err(err: cairn::StoreError) -> String {
    err.to_string()
}

impl InngestApps {
    /// Apps served at `urls` (their serve endpoints, e.g. `http://localhost:3000/api/inngest`),
    /// called with `http`, whose total timeout is `timeout`.
    pub fn new(urls: Vec<String>, http: reqwest::Client, timeout: std::time::Duration) -> Self {
        InngestApps { urls, http, timeout, ..InngestApps::default() }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<AppFunction>> {
        self.functions.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn function(&self, id: &str) -> Option<AppFunction> {
        self.read().iter().find(|f| f.id == id).cloned()
    }

    /// The functions an event named `name` starts.
    pub fn triggered_by(&self, name: &str) -> Vec<String> {
        self.read().iter().filter(|f| f.events.iter().any(|(event, _)| event == name)).map(|f| f.id.clone()).collect()
    }

    /// Whether events must be matched against the apps' waits (there are apps: a wait may be
    /// pending in the store from before a restart).
    pub fn matches_waits(&self) -> bool {
        !self.urls.is_empty() || self.has_waiters.load(Ordering::Relaxed)
    }

    /// The URL of the app that serves function `id`.
    pub fn app_url(&self, id: &str) -> Option<String> {
        self.function(id).map(|f| f.app_url)
    }

    /// Whether a function with this id is synced.
    pub fn has_function(&self, id: &str) -> bool {
        self.function(id).is_some()
    }

    /// The first event trigger of a function (the cron event for a cron function).
    pub fn first_trigger(&self, id: &str) -> Option<String> {
        let function = self.function(id)?;
        function
            .events
            .first()
            .map(|(name, _)| name.clone())
            .or_else(|| (!function.crons.is_empty()).then(|| cairn::SCHEDULED_EVENT.to_string()))
    }

    /// The functions, as `GET /api/functions` lists them.
    pub fn functions_json(&self) -> Vec<Value> {
        self.read()
            .iter()
            .map(|f| {
                let mut triggers: Vec<Value> = f.events.iter().map(|(event, _)| json!({"event": event})).collect();
                triggers.extend(f.crons.iter().map(|cron| json!({"schedule": cron, "time_zone": "UTC"})));
                json!({
                    "id": f.id, "binary": "", "function_name": f.name, "resource": "", "runtime": "inngest",
                    "description": format!("{} (Inngest app)", f.name), "app_url": f.app_url, "triggers": triggers,
                })
            })
            .collect()
    }

    /// Keeps the apps synced: an in-band sync `PUT` to each URL every second until it answers,
    /// then every 5 seconds (so code changes show up, as with Inngest's dev server). Each app
    /// on its own, so a hung one delays no other.
    pub async fn sync_forever(&self, dev: &Dev) {
        futures::future::join_all(self.urls.iter().map(|url| self.sync_app_forever(dev, url))).await;
    }

    async fn sync_app_forever(&self, dev: &Dev, url: &str) {
        let mut warned = false;
        let mut synced = false;
        loop {
            match self.sync(dev, url).await {
                Ok(()) => {
                    warned = false;
                    synced = true;
                }
                Err(err) if !warned => {
                    tracing::warn!(app = %url, error = %err, "cannot sync the Inngest app yet (retrying)");
                    warned = true;
                }
                Err(_) => {}
            }
            tokio::time::sleep(std::time::Duration::from_secs(if synced { 5 } else { 1 })).await;
        }
    }

    async fn sync(&self, dev: &Dev, url: &str) -> Result<()> {
        let response = self
            .http
            .put(url)
            .header("x-inngest-sync-kind", "in_band")
            .header("x-inngest-server-kind", "dev")
            .json(&json!({"url": url}))
            .timeout(SYNC_TIMEOUT.min(self.timeout))
            .send()
            .await
            .map_err(|err| err.to_string())?;
        let in_band = response.headers().get("x-inngest-sync-kind").is_some_and(|v| v == "in_band");
        let status = response.status();
        let body: Value = response.json().await.unwrap_or_default();
        if !status.is_success() {
            return Err(format!("sync answered {status}: {body}"));
        }
        if in_band {
            self.register(dev, url, &body)?;
        }
        Ok(())
    }

    /// Registers an app's functions (from an in-band answer or a `/fn/register` body).
    ///
    /// # Errors
    /// A body without `functions`.
    pub fn register(&self, dev: &Dev, url: &str, body: &Value) -> Result<()> {
        let list = body["functions"].as_array().ok_or("the app's sync has no `functions` list")?;
        let mut synced = Vec::new();
        for function in list {
            let Some(id) = function["id"].as_str() else { continue };
            let mut events = Vec::new();
            let mut crons = Vec::new();
            for trigger in function["triggers"].as_array().into_iter().flatten() {
                if let Some(event) = trigger["event"].as_str() {
                    events.push((event.to_string(), trigger["expression"].as_str().map(str::to_string)));
                } else if let Some(cron) = trigger["cron"].as_str() {
                    crons.push(cron.to_string());
                }
            }
            let retries = function["steps"]["step"]["retries"]["attempts"].as_u64().unwrap_or(4).min(20);
            synced.push(AppFunction {
                id: id.to_string(),
                name: function["name"].as_str().unwrap_or(id).to_string(),
                app_url: url.to_string(),
                events,
                crons,
                max_attempts: u32::try_from(retries).unwrap_or(4) + 1,
            });
        }
        let now = dev.now();
        for function in &synced {
            for (index, source) in function.crons.iter().enumerate() {
                let cron =
                    CronSchedule::parse(source).map_err(|err| format!("{}: cron `{source}`: {err}", function.id))?;
                let (expression, time_zone) = cairn_aws::schedule_expression(&cron);
                let exists = dev
                    .db
                    .schedules(Some("inngest"))?
                    .iter()
                    .any(|s| s.name == format!("{}.{index}", function.id) && s.expression == expression);
                if exists {
                    continue;
                }
                let next_at = crate::schedule::Expression::parse(&expression, &time_zone)
                    .ok()
                    .and_then(|e| e.next_after(now, now, &time_zone));
                dev.db.put_schedule(&Schedule {
                    group_name: "inngest".into(),
                    name: format!("{}.{index}", function.id),
                    expression,
                    time_zone,
                    target_arn: format!("{INNGEST_PREFIX}{}", function.id),
                    input: ControlMessage::cron(source.as_str(), None).to_string(),
                    delete_after: false,
                    created_at: now,
                    next_at,
                })?;
            }
        }
        let mut functions = self.functions.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = functions.len();
        functions.retain(|f| f.app_url != url);
        let added = synced.len();
        functions.extend(synced);
        if functions.len() != before {
            tracing::info!(app = %url, functions = added, "Inngest app synced");
        }
        Ok(())
    }

    /// Executes one queued invocation for function `target` (or the waits matcher).
    ///
    /// # Errors
    /// The app could not be reached, or the store failed; the dispatcher retries.
    pub async fn execute(&self, dev: &Dev, target: &str, invocation: &Invocation) -> Result<Value> {
        if target == WAITS_TARGET {
            return self.resolve_waits(dev, &invocation.payload).await;
        }
        let function = self.function(target).ok_or_else(|| format!("no synced Inngest function `{target}`"))?;
        let payload = &invocation.payload;
        let message = match ControlMessage::parse(payload) {
            Some(Ok(message)) => Some(message),
            // A malformed resume or cron keeps its kind, as the dev server always read them: a
            // resume of no run, a firing of no cron.
            Some(Err(WireError::NoRunId)) if payload["cairn"] == "resume" => {
                Some(ControlMessage::resume_run(RunId::new("")))
            }
            Some(Err(WireError::NoCron)) => Some(ControlMessage::cron("", None)),
            _ => None,
        };
        let run_id = match message {
            Some(ControlMessage::Resume(resume)) => resume.run_id,
            Some(ControlMessage::Cron(firing)) => {
                let now = dev.now();
                let event = EventPayload::new(cairn::SCHEDULED_EVENT, json!({"cron": firing.cron}))
                    .with_id(format!("cron:{}:{}", function.id, now / 60_000))
                    .with_ts(now);
                self.start(dev, &function, event).await?
            }
            _ => {
                let event = event_of_envelope(payload, dev.now());
                let scheduled = event.name == cairn::SCHEDULED_EVENT && !function.crons.is_empty();
                let matched = scheduled
                    || function.events.iter().any(|(name, expression)| {
                        name == &event.name
                            && expression.as_ref().is_none_or(|expr| {
                                MatchExpr::parse(expr)
                                    .and_then(|m| {
                                        m.matches(&serde_json::to_value(&event).unwrap_or_default(), &Value::Null)
                                    })
                                    .unwrap_or(false)
                            })
                    });
                if !matched {
                    return Ok(json!({"runs": []}));
                }
                self.start(dev, &function, event).await?
            }
        };
        let status = self.drive(dev, &function, &run_id).await?;
        Ok(json!({"runs": [{"run_id": run_id, "status": status}]}))
    }

    async fn start(&self, dev: &Dev, function: &AppFunction, event: EventPayload) -> Result<RunId> {
        let run_id = RunId::for_event(&function.id, event.id.as_deref().unwrap_or_default());
        let meta = RunMeta::new(run_id.clone(), function.id.clone(), event, dev.now());
        dev.store.create_run(meta).await.map_err(store_err)?;
        Ok(run_id)
    }

    async fn lock(&self, run_id: &RunId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.run_locks.lock().await;
        Arc::clone(locks.entry(run_id.to_string()).or_default())
    }

    /// Calls the app until the run finishes or suspends; returns its status.
    async fn drive(&self, dev: &Dev, function: &AppFunction, run_id: &RunId) -> Result<RunStatus> {
        let lock = self.lock(run_id).await;
        let _held = lock.lock().await;
        for _ in 0..1_000 {
            let journal =
                dev.store.load(run_id).await.map_err(store_err)?.ok_or_else(|| format!("no run `{run_id}`"))?;
            let mut meta = journal.meta;
            if meta.status.is_finished() {
                return Ok(meta.status);
            }
            let now = dev.now();
            if let Some(at) = meta.retry_at.filter(|at| *at > now) {
                return self.suspend(dev, &mut meta, RunStatus::Sleeping, at).await;
            }
            // Time-bound steps: due ones resolve, others suspend the run.
            let mut target = ("step".to_string(), meta.attempt);
            let mut resolved = false;
            for step in &journal.steps {
                match &step.state {
                    StepState::Scheduled { wake_at } if *wake_at <= now => {
                        if step.kind == StepKind::WaitForEvent {
                            let event = step.detail.as_ref().and_then(|d| d["event"].as_str()).unwrap_or_default();
                            if !dev.store.remove_wait(event, run_id, &step.id).await.map_err(store_err)? {
                                continue; // An event took it meanwhile; reload.
                            }
                        }
                        let done = StepRecord {
                            state: StepState::Completed { output: Value::Null },
                            ended_at: Some(now),
                            ..step.clone()
                        };
                        dev.store.commit_step(run_id, &done).await.map_err(store_err)?;
                        resolved = true;
                    }
                    StepState::Scheduled { wake_at } => {
                        let status =
                            if step.kind == StepKind::WaitForEvent { RunStatus::Waiting } else { RunStatus::Sleeping };
                        return self.suspend(dev, &mut meta, status, *wake_at).await;
                    }
                    StepState::Retrying { retry_at, .. } if *retry_at > now => {
                        return self.suspend(dev, &mut meta, RunStatus::Sleeping, *retry_at).await;
                    }
                    StepState::Retrying { .. } => target = (step.id.to_string(), step.attempts),
                    _ => {}
                }
            }
            if resolved {
                continue;
            }
            if meta.status != RunStatus::Running || meta.retry_at.is_some() {
                meta.status = RunStatus::Running;
                meta.retry_at = None;
                meta.updated_at = now;
                meta = dev.store.update_meta(&meta).await.map_err(store_err)?;
            }
            let memo = memo(&journal.steps);
            let mut queue = VecDeque::from([target]);
            while let Some((step_id, attempt)) = queue.pop_front() {
                let answer = self.call(function, &meta, &step_id, attempt, &memo).await?;
                match self.apply(dev, function, &mut meta, answer, &journal.steps, attempt).await? {
                    Applied::Continue(planned) => queue.extend(planned.into_iter().map(|id| (id, 0))),
                    Applied::Finished(status) => return Ok(status),
                }
            }
        }
        Err(format!("run `{run_id}` made no progress in 1,000 calls"))
    }

    async fn suspend(&self, dev: &Dev, meta: &mut RunMeta, status: RunStatus, until: Millis) -> Result<RunStatus> {
        if meta.status != status {
            meta.status = status;
            meta.updated_at = dev.now();
            *meta = dev.store.update_meta(meta).await.map_err(store_err)?;
        }
        self.wake_at(dev, &meta.function_id, &meta.run_id, until)?;
        Ok(status)
    }

    /// A one-time dev schedule that resumes the run at `at` (idempotent by name).
    fn wake_at(&self, dev: &Dev, function_id: &str, run_id: &RunId, at: Millis) -> Result<()> {
        let at = at.min(MAX_WAKE_AT);
        let name = format!("{run_id}-{at}");
        dev.db.create_schedule(&Schedule {
            group_name: "inngest".into(),
            name,
            expression: cairn_aws::SchedulerTimer::at_expression(at),
            time_zone: "UTC".into(),
            target_arn: format!("{INNGEST_PREFIX}{function_id}"),
            input: ControlMessage::resume_run(run_id.clone()).to_string(),
            delete_after: true,
            created_at: dev.now(),
            next_at: Some(at),
        })?;
        Ok(())
    }

    /// One call request; returns (status, no-retry, body), the streaming envelope unwrapped.
    async fn call(
        &self,
        function: &AppFunction,
        meta: &RunMeta,
        step_id: &str,
        attempt: u32,
        memo: &Memo,
    ) -> Result<Answer> {
        let event = serde_json::to_value(&meta.event).unwrap_or_default();
        let body = json!({
            "event": event,
            "events": [event],
            "steps": memo.steps,
            "ctx": {
                "run_id": meta.run_id,
                "attempt": attempt,
                "max_attempts": function.max_attempts,
                "disable_immediate_execution": false,
                "use_api": false,
                "stack": {"stack": memo.stack, "current": memo.stack.len()},
            },
            "version": 2,
            "use_api": false,
        });
        let response = self
            .http
            .post(format!(
                "{}{}fnId={}&stepId={step_id}",
                function.app_url,
                if function.app_url.contains('?') { '&' } else { '?' },
                function.id
            ))
            .header("x-inngest-req-version", "2")
            .header("x-run-id", meta.run_id.as_str())
            .json(&body)
            .send()
            .await
            .map_err(|err| self.call_error(&function.app_url, &err))?;
        let mut status = response.status().as_u16();
        let mut no_retry = response.headers().get("x-inngest-no-retry").is_some_and(|v| v == "true");
        let text = response.text().await.map_err(|err| self.call_error(&function.app_url, &err))?;
        let mut body: Value = serde_json::from_str(text.trim()).unwrap_or(Value::String(text));
        if status == 201 {
            // Streaming: keep-alive spaces, then {"status", "headers", "body": "<json text>"}.
            status = u16::try_from(body["status"].as_u64().unwrap_or(500)).unwrap_or(500);
            no_retry =
                body["headers"]["x-inngest-no-retry"] == "true" || body["headers"]["X-Inngest-No-Retry"] == "true";
            body = match &body["body"] {
                Value::String(inner) => serde_json::from_str(inner).unwrap_or(Value::String(inner.clone())),
                other => other.clone(),
            };
        }
        Ok(Answer { status, no_retry, body })
    }

    fn call_error(&self, app_url: &str, err: &reqwest::Error) -> String {
        if err.is_timeout() {
            format!(
                "the Inngest app at {app_url} did not answer within {} s (--app-timeout-secs)",
                self.timeout.as_secs()
            )
        } else {
            format!("cannot reach the Inngest app at {app_url}: {err}")
        }
    }

    async fn apply(
        &self,
        dev: &Dev,
        function: &AppFunction,
        meta: &mut RunMeta,
        answer: Answer,
        steps: &[StepRecord],
        attempt: u32,
    ) -> Result<Applied> {
        let now = dev.now();
        let run_id = meta.run_id.clone();
        match answer.status {
            200 => return self.finish(dev, meta, Ok(answer.body)).await.map(Applied::Finished),
            206 => {}
            status => {
                let error = error_of(&answer.body, status);
                if answer.no_retry || attempt + 1 >= function.max_attempts {
                    return self.finish(dev, meta, Err(error)).await.map(Applied::Finished);
                }
                meta.attempt = attempt + 1;
                meta.retry_at = Some(now.saturating_add(backoff_ms(attempt + 1, run_id.as_str())));
                meta.status = RunStatus::Sleeping;
                meta.updated_at = now;
                *meta = dev.store.update_meta(meta).await.map_err(store_err)?;
                self.wake_at(dev, &function.id, &run_id, meta.retry_at.unwrap_or(now))?;
                return Ok(Applied::Finished(RunStatus::Sleeping));
            }
        }
        let ops = match answer.body {
            Value::Array(ops) => ops,
            single @ Value::Object(_) => vec![single],
            other => return Err(format!("206 without opcodes: {other}")),
        };
        let mut planned = Vec::new();
        let mut position = u32::try_from(steps.len()).unwrap_or(u32::MAX);
        let existing = |id: &str| steps.iter().find(|s| s.id.as_str() == id).cloned();
        for op in ops {
            let id = op["id"].as_str().unwrap_or_default().to_string();
            let name = op["displayName"]
                .as_str()
                .or(op["userland"]["id"].as_str())
                .or(op["name"].as_str())
                .unwrap_or(&id)
                .to_string();
            let record = |kind: StepKind, state: StepState, attempts: u32, detail: Option<Value>, position: u32| {
                let prior = existing(&id);
                StepRecord {
                    id: StepId::from_hashed(id.clone()),
                    name: name.clone(),
                    kind,
                    position: prior.as_ref().map_or(position, |p| p.position),
                    ended_at: state.is_final().then_some(now),
                    state,
                    attempts,
                    started_at: prior.map_or(now, |p| p.started_at),
                    detail,
                }
            };
            let kind = if op["opts"]["type"] == "step.sendEvent" { StepKind::SendEvent } else { StepKind::Run };
            let run_ref = &run_id;
            let commit =
                |record: StepRecord| async move { dev.store.commit_step(run_ref, &record).await.map_err(store_err) };
            match op["op"].as_str().unwrap_or_default() {
                "StepRun" | "Step" => {
                    commit(record(
                        kind,
                        StepState::Completed { output: op["data"].clone() },
                        attempt + 1,
                        None,
                        position,
                    ))
                    .await?;
                    position += 1;
                }
                "StepPlanned" => planned.push(id.clone()),
                "StepFailed" | "StepError" => {
                    // A StepError with no attempts left is final, as a StepFailed is.
                    let error = step_error(&op["error"]);
                    let last = op["op"] == "StepFailed" || attempt + 1 >= function.max_attempts;
                    let retry_at = now.saturating_add(backoff_ms(attempt + 1, &format!("{run_id}/{id}")));
                    let (state, detail) = if last {
                        (StepState::Failed { error }, Some(json!({"error": op["error"]})))
                    } else {
                        (StepState::Retrying { error, retry_at }, None)
                    };
                    commit(record(kind, state, attempt + 1, detail, position)).await?;
                    if !last {
                        self.wake_at(dev, &function.id, &run_id, retry_at)?;
                    }
                    position += 1;
                }
                "Sleep" => {
                    let until = op["opts"]["duration"].as_str().or(op["name"].as_str()).unwrap_or_default();
                    let wake_at = sleep_until(until, now)?;
                    commit(record(StepKind::Sleep, StepState::Scheduled { wake_at }, 0, None, position)).await?;
                    position += 1;
                }
                "WaitForEvent" => {
                    let event = op["opts"]["event"].as_str().or(op["name"].as_str()).unwrap_or_default().to_string();
                    let timeout = op["opts"]["timeout"].as_str().unwrap_or("1d");
                    let timeout_at = sleep_until(timeout, now)?;
                    let expression = op["opts"]["if"].as_str().map(str::to_string);
                    let detail = json!({"event": event, "if": expression});
                    commit(record(
                        StepKind::WaitForEvent,
                        StepState::Scheduled { wake_at: timeout_at },
                        0,
                        Some(detail),
                        position,
                    ))
                    .await?;
                    position += 1;
                    let wait = Wait {
                        event,
                        run_id: run_id.clone(),
                        step_id: StepId::from_hashed(id.clone()),
                        expression,
                        timeout_at,
                        created_at: now,
                    };
                    dev.store.put_wait(&wait).await.map_err(store_err)?;
                    self.has_waiters.store(true, Ordering::Relaxed);
                }
                "RunComplete" => return self.finish(dev, meta, Ok(op["data"].clone())).await.map(Applied::Finished),
                other => {
                    let message = if other == "InvokeFunction" {
                        "step.invoke is not supported by `cairn dev -u` yet".to_string()
                    } else {
                        format!("opcode `{other}` is not supported by `cairn dev -u`")
                    };
                    return self.finish(dev, meta, Err(StepError::non_retriable(message))).await.map(Applied::Finished);
                }
            }
        }
        Ok(Applied::Continue(planned))
    }

    async fn finish(
        &self,
        dev: &Dev,
        meta: &mut RunMeta,
        result: std::result::Result<Value, StepError>,
    ) -> Result<RunStatus> {
        let now = dev.now();
        match result {
            Ok(output) => {
                meta.status = RunStatus::Completed;
                meta.output = Some(output);
            }
            Err(error) => {
                meta.status = RunStatus::Failed;
                meta.error = Some(error);
            }
        }
        meta.ended_at = Some(now);
        meta.updated_at = now;
        meta.retry_at = None;
        *meta = dev.store.update_meta(meta).await.map_err(store_err)?;
        Ok(meta.status)
    }

    /// Matches an event against the apps' pending waits; each matched run resumes.
    async fn resolve_waits(&self, dev: &Dev, payload: &Value) -> Result<Value> {
        let event = event_of_envelope(payload, dev.now());
        let candidate = serde_json::to_value(&event).unwrap_or_default();
        let mut resumed = Vec::new();
        for wait in dev.store.waits_for(&event.name).await.map_err(store_err)? {
            let Some(journal) = dev.store.load(&wait.run_id).await.map_err(store_err)? else { continue };
            let Some(function) = self.function(&journal.meta.function_id) else { continue };
            let trigger = serde_json::to_value(&journal.meta.event).unwrap_or_default();
            let matched = wait.expression.as_ref().is_none_or(|expr| {
                MatchExpr::parse(expr).and_then(|m| m.matches(&trigger, &candidate)).unwrap_or(false)
            });
            if !matched || wait.timeout_at <= dev.now() {
                continue;
            }
            let lock = self.lock(&wait.run_id).await;
            {
                let _held = lock.lock().await;
                if !dev.store.remove_wait(&wait.event, &wait.run_id, &wait.step_id).await.map_err(store_err)? {
                    continue;
                }
                if let Some(step) = journal.steps.iter().find(|s| s.id == wait.step_id) {
                    let done = StepRecord {
                        state: StepState::Completed { output: candidate.clone() },
                        ended_at: Some(dev.now()),
                        ..step.clone()
                    };
                    dev.store.commit_step(&wait.run_id, &done).await.map_err(store_err)?;
                }
            }
            let status = self.drive(dev, &function, &wait.run_id).await?;
            resumed.push(json!({"run_id": wait.run_id, "status": status}));
        }
        Ok(json!({"runs": resumed}))
    }
}

enum Applied {
    Continue(Vec<String>),
    Finished(RunStatus),
}

struct Answer {
    status: u16,
    no_retry: bool,
    body: Value,
}

/// What the executor sends as `steps` and `ctx.stack`.
struct Memo {
    steps: serde_json::Map<String, Value>,
    stack: Vec<String>,
}

/// Memoized values in Inngest's formats (§5.3 of the protocol notes).
fn memo(steps: &[StepRecord]) -> Memo {
    let mut memo = Memo { steps: serde_json::Map::new(), stack: Vec::new() };
    for step in steps {
        let value = match (&step.state, step.kind) {
            (StepState::Completed { output }, StepKind::Sleep | StepKind::WaitForEvent) => output.clone(),
            (StepState::Completed { output }, _) => json!({"data": output}),
            (StepState::Failed { error }, _) => {
                json!({"error": step.detail.as_ref().map_or_else(|| json!({"name": error.name, "message": error.message}), |d| d["error"].clone())})
            }
            _ => continue,
        };
        memo.steps.insert(step.id.to_string(), value);
        memo.stack.push(step.id.to_string());
    }
    memo
}

fn step_error(error: &Value) -> StepError {
    let mut step_error = StepError::new(error["message"].as_str().unwrap_or("error"));
    step_error.name = error["name"].as_str().unwrap_or("Error").to_string();
    step_error.stack = error["stack"].as_str().map(str::to_string);
    step_error
}

fn error_of(body: &Value, status: u16) -> StepError {
    match body {
        Value::Object(_) if body.get("message").is_some() => step_error(body),
        other => StepError::new(format!("the app answered {status}: {other}")),
    }
}

fn backoff_ms(attempts: u32, seed: &str) -> Millis {
    i64::try_from(cairn::backoff(attempts, seed).as_millis()).unwrap_or(i64::MAX)
}

/// A sleep's end: an ISO time, or a duration from `now`; at most [`MAX_WAKE_AT`].
fn sleep_until(text: &str, now: Millis) -> Result<Millis> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(at.timestamp_millis().min(MAX_WAKE_AT));
    }
    let duration = cairn::parse_duration(text)?;
    Ok(now.saturating_add(i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)).min(MAX_WAKE_AT))
}

/// The Inngest event inside an EventBridge envelope (Cairn's own detail is the whole event).
fn event_of_envelope(envelope: &Value, now: Millis) -> EventPayload {
    let name = envelope["detail-type"].as_str().unwrap_or_default();
    let detail = &envelope["detail"];
    let mut event = match serde_json::from_value::<EventPayload>(detail.clone()) {
        Ok(event) if event.name == name => event,
        _ => EventPayload::new(name, detail.clone()),
    };
    if event.id.is_none() {
        event.id = envelope["id"].as_str().map(str::to_string);
    }
    event.ts.get_or_insert(now);
    event
}

/// The routes an Inngest app calls on its dev server.
pub fn routes() -> axum::Router<Arc<Dev>> {
    axum::Router::new()
        .route("/fn/register", post(register))
        .route("/e/{key}", post(send))
        .route("/dev", get(|| async { Json(json!({"version": "cairn-dev", "is_single_node": true})) }))
}

/// `POST /fn/register`: an out-of-band sync.
/// Only an app given with `-u` or served on loopback: otherwise any local process (or a page,
/// were the server not guarded) could have the dev server post every matching event elsewhere.
async fn register(State(dev): State<Arc<Dev>>, Json(body): Json<Value>) -> Response {
    let reported = body["url"].as_str().unwrap_or_default().to_string();
    if !dev.inngest.urls.contains(&reported) && !crate::loopback::is_loopback_url(&reported) {
        let error = format!(
            "app URL `{reported}` refused: the dev server drives only apps given with -u or served on loopback (localhost, 127.0.0.1, [::1])"
        );
        return (StatusCode::FORBIDDEN, Json(json!({"code": "forbidden", "error": error, "status": 403})))
            .into_response();
    }
    // Call the app at the URL it was given with (`-u`) when the reported one is the same endpoint.
    let path = |url: &str| {
        url.split_once("://")
            .map(|(_, rest)| rest.split_once('/').map_or("", |(_, p)| p).split('?').next().unwrap_or("").to_string())
    };
    let url = dev.inngest.urls.iter().find(|u| path(u) == path(&reported)).cloned().unwrap_or(reported);
    match dev.inngest.register(&dev, &url, &body) {
        Ok(()) => Json(json!({"ok": true, "modified": true})).into_response(),
        Err(error) => {
            (StatusCode::BAD_REQUEST, Json(json!({"code": "invalid_request", "error": error, "status": 400})))
                .into_response()
        }
    }
}

/// `POST /e/{key}`: the event API apps send with (any key is accepted, as Inngest's dev server
/// does). Events are logged and routed like PutEvents entries, on the template's bus.
async fn send(State(dev): State<Arc<Dev>>, Path(_key): Path<String>, Json(body): Json<Value>) -> Response {
    let events = match body {
        Value::Array(events) => events,
        single => vec![single],
    };
    let now = dev.now();
    let bus = dev.template.buses().into_iter().find(|b| b != "default").unwrap_or_else(|| "default".into());
    let mut entries = Vec::new();
    let mut ids = Vec::new();
    for (index, mut event) in events.into_iter().enumerate() {
        let Some(name) = event["name"].as_str().filter(|n| !n.is_empty()).map(str::to_string) else {
            let error = format!("event {index} has no `name`");
            return (StatusCode::BAD_REQUEST, Json(json!({"ids": [], "status": 400, "error": error}))).into_response();
        };
        if event["data"].is_null() {
            event["data"] = json!({});
        }
        if !event["data"].is_object() {
            let error = format!("event {index} (`{name}`): `data` must be an object");
            return (StatusCode::BAD_REQUEST, Json(json!({"ids": [], "status": 400, "error": error}))).into_response();
        }
        let id = event["id"].as_str().map_or_else(|| cairn::new_event_id(now), str::to_string);
        event["id"] = json!(id);
        if event["ts"].is_null() {
            event["ts"] = json!(now);
        }
        ids.push(id);
        entries.push(Entry {
            source: "inngest.app".into(),
            detail_type: name,
            detail: event,
            bus: bus.clone(),
            time: Some(now),
            resources: Vec::new(),
        });
    }
    match dev.put(entries, "inngest-send", None) {
        Ok(_) => Json(json!({"ids": ids, "status": 200})).into_response(),
        Err(error) => {
            (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"ids": [], "status": 500, "error": error}))).into_response()
        }
    }
}
