//! [`LambdaDriver`]: a function binary's Lambda handler. It accepts an EventBridge event whose
//! `detail-type` is a trigger, the "Scheduled Event" of a cron rule, a Scheduler (ScheduleV2)
//! cron or resume payload, a `cairn/run.resume` event, and a plain `{"name", "data"}` event from
//! `cargo lambda invoke`; then it drives the runs concerned until done or suspended, stopping
//! before the invocation's deadline.

use crate::any::{AnyBus, AnyStore, AnyTimer};
use crate::metrics::{Metric, Metrics, Observer, sent_at, wake_ups};
use crate::scheduler::RESUME_EVENT;
use crate::wire::{ControlMessage, Resume};
use cairn::{Drive, EventPayload, Function, Millis, Progress, Registry, RunId, Runner, SCHEDULED_EVENT, Trigger};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// What one invocation asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Invocation {
    /// An event to start runs and resolve waits.
    Event(EventPayload),
    /// Resume this run (a wake-up, a continuation, a resolved wait or invoke).
    Resume(RunId),
    /// Wake-ups from the function's SQS timer queue: (message id, run) pairs. Failed ones are
    /// reported back (`batchItemFailures`) so SQS redelivers them.
    Queue(Vec<(String, RunId)>),
    /// The reconciler's tick (`{"cairn": "reconcile"}` from the template's schedule).
    Reconcile,
}

/// Why a payload was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// The payload is none of the accepted shapes.
    #[error("unrecognized payload: {0}")]
    BadPayload(String),
    /// Running failed; the invocation should be retried.
    #[error(transparent)]
    Runner(#[from] cairn::RunnerError),
}

/// Reads an invocation payload. `now` dates events that carry no time.
///
/// # Errors
/// [`DriverError::BadPayload`] naming what is missing.
pub fn classify(payload: &Value, registry: &Registry, now: Millis) -> Result<Invocation, DriverError> {
    if let Some(message) = ControlMessage::parse(payload) {
        return match message.map_err(|err| DriverError::BadPayload(err.to_string()))? {
            ControlMessage::Resume(resume) | ControlMessage::Continue(resume) => Ok(Invocation::Resume(resume.run_id)),
            // `id` is Scheduler's `<aws.scheduler.scheduled-time>`: every delivery of one
            // firing, retries included, names the same run.
            ControlMessage::Cron(firing) => {
                Ok(Invocation::Event(scheduled_event(&firing.cron, firing.id.as_deref(), now)))
            }
            ControlMessage::Reconcile => Ok(Invocation::Reconcile),
        };
    }
    if let Some(records) = payload.get("Records").and_then(Value::as_array) {
        let mut messages = Vec::with_capacity(records.len());
        for record in records {
            let id = record["messageId"].as_str().unwrap_or_default().to_string();
            let body: Value = record["body"]
                .as_str()
                .and_then(|body| serde_json::from_str(body).ok())
                .ok_or_else(|| DriverError::BadPayload(format!("SQS message {id}: the body is not a JSON object")))?;
            // A timer-queue body is a `ControlMessage::Resume`; only its `run_id` is needed.
            let resume = Resume::parse(&body)
                .ok_or_else(|| DriverError::BadPayload(format!("SQS message {id}: a resume needs `run_id`")))?;
            messages.push((id, resume.run_id));
        }
        return Ok(Invocation::Queue(messages));
    }
    if let (Some(detail_type), Some(source)) =
        (payload.get("detail-type").and_then(Value::as_str), payload.get("source").and_then(Value::as_str))
    {
        let envelope_id = payload["id"].as_str();
        if source == "aws.events" && detail_type == "Scheduled Event" {
            let cron = registry
                .functions()
                .iter()
                .flat_map(|f| f.triggers())
                .find_map(|t| match t {
                    Trigger::Cron(cron) => Some(cron.source().to_string()),
                    Trigger::Event { .. } => None,
                })
                .ok_or_else(|| DriverError::BadPayload("a scheduled event reached a function without a cron".into()))?;
            // The rule's scheduled time (`time`) names the run, as a Scheduler firing does.
            return Ok(Invocation::Event(scheduled_event(&cron, payload["time"].as_str().or(envelope_id), now)));
        }
        let detail = payload.get("detail").cloned().unwrap_or(json!({}));
        // Cairn's own bus sends the whole event as the detail; anything else is the data.
        let mut event = match serde_json::from_value::<EventPayload>(detail.clone()) {
            Ok(event) if event.name == detail_type => event,
            _ => EventPayload::new(detail_type, detail),
        };
        if detail_type == RESUME_EVENT {
            return Resume::parse(&event.data)
                .map(|resume| Invocation::Resume(resume.run_id))
                .ok_or_else(|| DriverError::BadPayload(format!("`{RESUME_EVENT}` needs data.run_id")));
        }
        if event.id.is_none() {
            event.id = envelope_id.map(str::to_string);
        }
        if event.ts.is_none() {
            event.ts = payload["time"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.timestamp_millis());
        }
        return Ok(Invocation::Event(fill(event, now)));
    }
    if payload.get("name").and_then(Value::as_str).is_some() {
        let event: EventPayload =
            serde_json::from_value(payload.clone()).map_err(|err| DriverError::BadPayload(format!("event: {err}")))?;
        return Ok(Invocation::Event(fill(event, now)));
    }
    Err(DriverError::BadPayload(
        "expected an EventBridge event, {\"cairn\": \"resume\", \"run_id\": ...}, or an event {\"name\": ..., \"data\": {...}}".into(),
    ))
}

fn fill(mut event: EventPayload, now: Millis) -> EventPayload {
    if event.id.is_none() {
        event.id = Some(cairn::new_event_id(now));
    }
    event.ts.get_or_insert(now);
    event
}

/// The event a cron delivers. Its id is the firing's scheduled time, so a retried or
/// duplicated delivery names the same run; a payload without one (an old template) falls back
/// to the minute it was handled, with a warning.
fn scheduled_event(cron: &str, scheduled: Option<&str>, now: Millis) -> EventPayload {
    let when = match scheduled {
        Some(time) if !time.is_empty() && !time.starts_with("<aws.") => time.to_string(),
        _ => {
            tracing::warn!(cron, "cron payload without its scheduled time (`id`); duplicates of it may start twice");
            format!("minute-{}", now / 60_000)
        }
    };
    EventPayload::new(SCHEDULED_EVENT, json!({ "cron": cron })).with_id(format!("cron:{cron}:{when}")).with_ts(now)
}

/// Budgets for one invocation.
#[derive(Clone, Debug)]
pub struct DriverConfig {
    /// Stop starting steps this long before the Lambda deadline (`CAIRN_DEADLINE_MARGIN_SECS`, default 10 s).
    pub margin: Duration,
    /// Used when the deadline is missing or bogus, as under `cargo lambda watch`
    /// (`CAIRN_BUDGET_SECS`, default 600 s).
    pub fallback_budget: Duration,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig { margin: Duration::from_secs(10), fallback_budget: Duration::from_secs(600) }
    }
}

impl DriverConfig {
    /// Reads `CAIRN_DEADLINE_MARGIN_SECS` and `CAIRN_BUDGET_SECS`.
    pub fn from_env() -> Self {
        let secs = |name: &str, default: Duration| {
            std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok()).map(Duration::from_secs).unwrap_or(default)
        };
        let defaults = DriverConfig::default();
        DriverConfig {
            margin: secs("CAIRN_DEADLINE_MARGIN_SECS", defaults.margin),
            fallback_budget: secs("CAIRN_BUDGET_SECS", defaults.fallback_budget),
        }
    }

    /// When to stop starting steps, given the invocation's deadline (ms since the epoch, 0 when
    /// unknown). A deadline in the past or more than 15 minutes out is bogus (cargo lambda watch
    /// sends a constant 600000): the fallback budget applies.
    pub fn stop_at(&self, deadline: Millis, now: Millis) -> Millis {
        let plausible = deadline > now && deadline <= now + 15 * 60_000 + 1_000;
        if plausible {
            deadline - i64::try_from(self.margin.as_millis()).unwrap_or(0)
        } else {
            now + i64::try_from(self.fallback_budget.as_millis()).unwrap_or(0)
        }
    }
}

/// A function binary's Lambda handler.
#[derive(Clone, Debug)]
pub struct LambdaDriver {
    runner: Arc<Runner<AnyStore, AnyBus, AnyTimer>>,
    config: DriverConfig,
    metrics: Metrics,
}

impl LambdaDriver {
    /// A driver over `runner`, writing its metrics (EMF lines, see [`crate::metrics`]) to stdout.
    pub fn new(runner: Runner<AnyStore, AnyBus, AnyTimer>, config: DriverConfig) -> Self {
        LambdaDriver { runner: Arc::new(runner), config, metrics: Metrics::stdout() }
    }

    /// The same driver with its metrics written to `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The runner.
    pub fn runner(&self) -> &Runner<AnyStore, AnyBus, AnyTimer> {
        &self.runner
    }

    /// Handles one payload and reports what each run concerned did.
    ///
    /// # Errors
    /// A bad payload, or a store / bus failure (Lambda retries the invocation, which resumes).
    pub async fn handle(&self, payload: Value, deadline: Millis) -> Result<Value, DriverError> {
        self.handle_observed(payload, deadline, &|_| {}).await
    }

    /// Like [`LambdaDriver::handle`], reporting each run's [`Progress`](cairn::Progress).
    ///
    /// # Errors
    /// As [`LambdaDriver::handle`].
    pub async fn handle_observed(
        &self,
        payload: Value,
        deadline: Millis,
        progress: cairn::ProgressSink<'_>,
    ) -> Result<Value, DriverError> {
        let now = self.runner.clock().now();
        let stop_at = self.config.stop_at(deadline, now);
        let observer = Observer::new(&self.metrics, self.runner.clock().as_ref(), progress);
        let observed = |event: Progress| observer.progress(event);
        let progress: cairn::ProgressSink<'_> = &observed;
        let invocation = classify(&payload, self.runner.registry(), now)?;
        for (function, run_id, due) in wake_ups(&payload) {
            let delay = now.saturating_sub(due).max(0).unsigned_abs();
            observer.emit(&function, Metric::QueueDelay, delay, run_id.as_ref(), None);
        }
        let runs = match invocation {
            Invocation::Event(event) => {
                tracing::info!(event.name = %event.name, event.id = event.id.as_deref().unwrap_or_default(), "event received");
                match self.runner.accept_detailed(&event).await {
                    Ok(accepted) => {
                        let sent = sent_at(&payload, &event);
                        for (run_id, function) in &accepted.started {
                            observer.emit(function, Metric::RunsStarted, 1, Some(run_id), None);
                            if let Some(sent) = sent {
                                let delay = now.saturating_sub(sent).max(0).unsigned_abs();
                                observer.emit(function, Metric::QueueDelay, delay, Some(run_id), None);
                            }
                        }
                        for (run_id, function) in &accepted.cancelled {
                            observer.emit(function, Metric::RunsCancelled, 1, Some(run_id), None);
                        }
                        accepted.runs
                    }
                    // An invalid event fails the same way on every retry: it is refused once,
                    // loudly, instead of being retried into the dead-letter queue.
                    Err(cairn::RunnerError::InvalidEvent(reason)) => {
                        tracing::error!(%reason, event.name = %event.name, "refused an invalid event");
                        return Ok(json!({ "refused": reason.message() }));
                    }
                    Err(other) => return Err(other.into()),
                }
            }
            Invocation::Resume(run_id) => vec![run_id],
            Invocation::Reconcile => {
                let reconciled = self.runner.reconcile().await?;
                tracing::info!(?reconciled, "reconciler pass");
                return Ok(json!({ "reconciled": reconciled }));
            }
            Invocation::Queue(messages) => return Ok(self.drive_messages(messages, stop_at, &observer).await),
        };
        let mut report = Vec::new();
        for run_id in runs {
            let drive = self.runner.drive_observed(&run_id, stop_at, progress).await?;
            observer.drive_ended(&run_id, &drive);
            report.push(drive_report(&run_id, &drive));
        }
        Ok(json!({ "runs": report }))
    }

    /// Drives the run of each timer message; a message whose drive failed is reported in
    /// `batchItemFailures` so SQS delivers it again (and only it).
    async fn drive_messages(&self, messages: Vec<(String, RunId)>, stop_at: Millis, observer: &Observer<'_>) -> Value {
        let mut report = Vec::new();
        let mut failures = Vec::new();
        let observed = |event: Progress| observer.progress(event);
        for (message_id, run_id) in messages {
            match self.runner.drive_observed(&run_id, stop_at, &observed).await {
                Ok(drive) => {
                    observer.drive_ended(&run_id, &drive);
                    report.push(drive_report(&run_id, &drive));
                }
                Err(error) => {
                    tracing::error!(run_id = %run_id, %error, "wake-up failed; SQS will deliver it again");
                    failures.push(json!({ "itemIdentifier": message_id }));
                }
            }
        }
        json!({ "runs": report, "batchItemFailures": failures })
    }
}

/// A Function URL request (`InvokeMode: RESPONSE_STREAM`): its body is the invocation payload.
fn function_url_body(payload: &Value) -> Option<Result<Value, String>> {
    payload.get("requestContext")?.get("http")?;
    let body = payload["body"].as_str().unwrap_or_default();
    let text = if payload["isBase64Encoded"].as_bool() == Some(true) {
        use base64::Engine;
        match base64::engine::general_purpose::STANDARD.decode(body) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).to_string(),
            Err(err) => return Some(Err(format!("the request body is not valid base64: {err}"))),
        }
    } else {
        body.to_string()
    };
    Some(serde_json::from_str(&text).map_err(|err| format!("the request body is not JSON: {err}")))
}

fn drive_report(run_id: &RunId, drive: &Drive) -> Value {
    match drive {
        Drive::Completed(output) => json!({"run_id": run_id, "status": "completed", "output": output}),
        Drive::Failed(error) => json!({"run_id": run_id, "status": "failed", "error": error}),
        Drive::Suspended { status, wake_at } => json!({"run_id": run_id, "status": status, "wake_at": wake_at}),
        Drive::Continued => json!({"run_id": run_id, "status": "continued"}),
        Drive::Busy => json!({"run_id": run_id, "status": "busy"}),
        Drive::AlreadyFinished(status) => json!({"run_id": run_id, "status": status, "already_finished": true}),
        Drive::NotRegistered(function) => json!({"run_id": run_id, "status": "not_here", "function_id": function}),
    }
}

/// What one invocation answers: a JSON report, or an NDJSON progress stream for a Function URL.
pub type DriverResponse = lambda_runtime::FunctionResponse<Value, lambda_runtime::streaming::Body>;

/// The NDJSON content type of progress streams.
pub const NDJSON: &str = "application/x-ndjson";

impl LambdaDriver {
    /// Answers one invocation. A Function URL request (`InvokeMode: RESPONSE_STREAM`) gets a
    /// stream of NDJSON lines (each [`Progress`](cairn::Progress), a `heartbeat` every
    /// `heartbeat`, and a final `done` with the report) so the caller can watch a long run
    /// without a timeout; anything else gets the JSON report.
    ///
    /// # Errors
    /// As [`LambdaDriver::handle`], for non-streamed invocations.
    pub async fn respond(
        &self,
        payload: Value,
        deadline: Millis,
        heartbeat: Duration,
    ) -> Result<DriverResponse, DriverError> {
        let Some(body) = function_url_body(&payload) else {
            return Ok(lambda_runtime::FunctionResponse::BufferedResponse(self.handle(payload, deadline).await?));
        };
        let (mut sender, stream) = lambda_runtime::streaming::channel();
        let status = if body.is_ok() { 200 } else { 400 };
        let driver = self.clone();
        tokio::spawn(async move {
            let payload = match body {
                Ok(payload) => payload,
                Err(message) => {
                    let line = json!({"type": "error", "message": message}).to_string() + "\n";
                    let _ = sender.send_data(line.into()).await;
                    return;
                }
            };
            let (lines, mut receive) = tokio::sync::mpsc::unbounded_channel::<Value>();
            let sink = move |progress: cairn::Progress| {
                let _ = lines.send(serde_json::to_value(progress).unwrap_or(Value::Null));
            };
            let work = driver.handle_observed(payload, deadline, &sink);
            tokio::pin!(work);
            let mut ticks = tokio::time::interval(heartbeat);
            ticks.tick().await;
            let last = loop {
                tokio::select! {
                    done = &mut work => break match done {
                        Ok(report) => json!({"type": "done", "runs": report["runs"]}),
                        Err(err) => json!({"type": "error", "message": err.to_string()}),
                    },
                    Some(line) = receive.recv() => {
                        if sender.send_data((line.to_string() + "\n").into()).await.is_err() {
                            tracing::warn!("the caller went away; the run goes on");
                        }
                    }
                    _ = ticks.tick() => {
                        let beat = json!({"type": "heartbeat", "at": cairn::Clock::now(&cairn::SystemClock)});
                        let _ = sender.send_data((beat.to_string() + "\n").into()).await;
                    }
                }
            };
            while let Ok(line) = receive.try_recv() {
                let _ = sender.send_data((line.to_string() + "\n").into()).await;
            }
            let _ = sender.send_data((last.to_string() + "\n").into()).await;
        });
        let mut headers = http::HeaderMap::new();
        headers.insert("content-type", http::HeaderValue::from_static(NDJSON));
        let prelude = lambda_runtime::MetadataPrelude {
            status_code: http::StatusCode::from_u16(status).unwrap_or_default(),
            headers,
            cookies: Vec::new(),
        };
        Ok(lambda_runtime::FunctionResponse::StreamingResponse(lambda_runtime::StreamResponse {
            metadata_prelude: prelude,
            stream,
        }))
    }
}

/// Runs `functions` as this Lambda function: tracing as JSON lines, the runner from the
/// environment, then the Lambda runtime loop. This is a function binary's whole `main`.
///
/// # Errors
/// Configuration errors before the loop starts, or the runtime's.
pub fn run(functions: Vec<Function>) -> futures::future::LocalBoxFuture<'static, Result<(), lambda_runtime::Error>> {
    // Boxed: the runtime loop around the run loop is deep enough to overflow the compiler's
    // layout query depth in the caller's `main` otherwise.
    Box::pin(async move {
        crate::logging::init();
        let runner = crate::runner_from_env(functions)
            .await
            .map_err(|err| -> lambda_runtime::Error { err.to_string().into() })?;
        let driver = LambdaDriver::new(runner, DriverConfig::from_env()).with_metrics(Metrics::from_env());
        let heartbeat = Duration::from_secs(
            std::env::var("CAIRN_STREAM_HEARTBEAT_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(5).max(1),
        );
        lambda_runtime::run(lambda_runtime::service_fn(move |event: lambda_runtime::LambdaEvent<Value>| {
            let driver = driver.clone();
            let handled: futures::future::BoxFuture<'static, Result<DriverResponse, lambda_runtime::Error>> =
                Box::pin(async move {
                    let deadline = Millis::try_from(event.context.deadline).unwrap_or(0);
                    driver
                        .respond(event.payload, deadline, heartbeat)
                        .await
                        .map_err(|err| -> lambda_runtime::Error { err.to_string().into() })
                });
            handled
        }))
        .await
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_before_a_real_deadline_and_budgets_a_bogus_one() {
        let config = DriverConfig { margin: Duration::from_secs(10), fallback_budget: Duration::from_secs(600) };
        let now = 1_795_392_000_000;
        // A Lambda deadline 15 minutes out: stop 10 s before it.
        assert_eq!(config.stop_at(now + 900_000, now), now + 890_000);
        // cargo lambda watch's constant 600000 (1970), a missing deadline, one far off: the budget.
        assert_eq!(config.stop_at(600_000, now), now + 600_000);
        assert_eq!(config.stop_at(0, now), now + 600_000);
        assert_eq!(config.stop_at(now + 86_400_000, now), now + 600_000);
    }

    #[test]
    fn function_url_bodies_are_read_plain_or_base64() {
        let plain = json!({"requestContext": {"http": {"method": "POST"}}, "body": "{\"name\":\"a/b\"}", "isBase64Encoded": false});
        assert_eq!(function_url_body(&plain).unwrap().unwrap(), json!({"name": "a/b"}));
        let encoded = json!({"requestContext": {"http": {}}, "body": "eyJuYW1lIjoiYS9iIn0=", "isBase64Encoded": true});
        assert_eq!(function_url_body(&encoded).unwrap().unwrap(), json!({"name": "a/b"}));
        let bad = json!({"requestContext": {"http": {}}, "body": "nope"});
        assert!(function_url_body(&bad).unwrap().unwrap_err().starts_with("the request body is not JSON"));
        assert!(function_url_body(&json!({"detail-type": "x"})).is_none());
    }
}
