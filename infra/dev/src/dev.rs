//! The dev server's core: accepting events (logged and queued in one transaction), routing them
//! by the template's rules, firing schedules on time (with Scheduler's context attributes in
//! their input), delivering SQS messages when their delay ends, and invoking functions under
//! `cargo lambda watch` asynchronously with Lambda's retries (SQS's redeliveries for messages).

use crate::DevError;
pub use crate::devdb::Entry;
use crate::devdb::{DevDb, Invocation, LoggedEvent, NewInvocation, Schedule};
use crate::inngest::InngestApps;
use crate::schedule::Expression;
use crate::template::Template;
pub use crate::wire::{ACCOUNT, new_envelope_id, rfc3339};
use cairn::{Clock, Millis, SystemClock};
use cairn_aws::AnyStore;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};

/// The largest entry PutEvents accepts (256 KiB, as in AWS).
pub const MAX_ENTRY_BYTES: usize = 256 * 1024;
/// Delays before the two retries of a failed asynchronous invocation (Lambda waits 1 and 2
/// minutes; the dev server, seconds).
pub const RETRY_DELAYS: [Millis; 2] = [1_000, 2_000];
pub use crate::inngest::INNGEST_PREFIX;
/// How long the dev server waits to connect to `cargo lambda watch` or an app.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest Lambda invocation (Lambda's limit is 15 minutes).
pub const LAMBDA_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// How the dev server is set up.
#[derive(Clone, Debug)]
pub struct DevConfig {
    /// `template.yaml`.
    pub template_path: String,
    /// The SQLite file (run store and dev tables).
    pub db_path: String,
    /// `cargo lambda watch`'s Lambda API, e.g. `http://127.0.0.1:9000`.
    pub lambda_url: String,
    /// Inngest-protocol apps to drive (`-u`).
    pub apps: Vec<String>,
    /// Region in ARNs.
    pub region: String,
    /// Invocations in flight at once, per target: `cargo lambda watch`, and each Inngest app.
    pub concurrency: usize,
    /// The longest call to an Inngest app (`--app-timeout-secs`), so a hung app frees its
    /// permit and the call is retried.
    pub app_timeout: Duration,
    /// Host names answered besides the loopback ones (`--allowed-host`, and `--host` when it
    /// is not a loopback address).
    pub allowed_hosts: Vec<String>,
    /// Fire the reconciler schedules (input `{"cairn": "reconcile"}`) every this many seconds
    /// instead of their template expression (`--reconcile-secs`, `CAIRN_RECONCILE_SECS`).
    pub reconcile_secs: Option<u64>,
}

/// Why a delivery failed.
#[derive(Debug)]
pub enum Delivery {
    /// Worth retrying: the function failed, or watch was unreachable.
    Retry(String),
    /// Not worth retrying: no such function.
    Final(String),
}

/// The running dev server's state (shared by the HTTP handlers and the background loops).
#[derive(Debug)]
pub struct Dev {
    /// Routing.
    pub template: Template,
    /// Event log, invocation queue, schedules.
    pub db: DevDb,
    /// Run state (what the functions write).
    pub store: AnyStore,
    /// Setup.
    pub config: DevConfig,
    /// HTTP client for invocations: connect timeout, and `app_timeout` unless a call sets its own.
    pub http: reqwest::Client,
    /// SSM Parameter Store.
    pub parameters: crate::ssm::ParameterStore,
    /// Wakes the dispatcher when work is queued.
    pub queued: Notify,
    /// Inngest-protocol apps.
    pub inngest: InngestApps,
    /// A fingerprint of what the dashboard shows, updated while a dashboard is open.
    pub changes: tokio::sync::watch::Sender<u64>,
    clock: SystemClock,
}

impl Dev {
    /// Loads the template and opens the stores; the template's schedules are (re)installed.
    ///
    /// # Errors
    /// A template mistake or an unopenable store, as a message naming it.
    pub fn new(config: DevConfig, store: AnyStore) -> Result<Arc<Dev>, DevError> {
        let mut template = Template::load(&config.template_path).map_err(DevError::caused_by)?;
        if let Some(secs) = config.reconcile_secs {
            if secs == 0 {
                return Err("the reconcile interval must be at least 1 second".into());
            }
            template.reconcile_every(secs);
        }
        let db = DevDb::open(&config.db_path)?;
        let parameters = crate::ssm::ParameterStore::open(&config.db_path)?;
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(config.app_timeout)
            .build()
            .map_err(DevError::caused_by)?;
        let dev = Arc::new(Dev {
            inngest: InngestApps::new(config.apps.clone(), http.clone(), config.app_timeout),
            parameters,
            template,
            db,
            store,
            config,
            http,
            queued: Notify::new(),
            changes: tokio::sync::watch::Sender::new(0),
            clock: SystemClock,
        });
        dev.install_template_schedules()?;
        Ok(dev)
    }

    /// Milliseconds since the epoch.
    pub fn now(&self) -> Millis {
        self.clock.now()
    }

    fn install_template_schedules(&self) -> Result<(), DevError> {
        let now = self.now();
        for function in &self.template.functions {
            for schedule in &function.schedules {
                self.db.put_schedule(&Schedule {
                    group_name: "template".into(),
                    name: format!("{}.{}", function.resource, schedule.name),
                    expression: schedule.expression_text.clone(),
                    time_zone: schedule.time_zone.clone(),
                    target_arn: self.function_arn(&function.function_name),
                    input: schedule.input.clone(),
                    delete_after: false,
                    created_at: now,
                    next_at: schedule.expression.next_after(now, now, &schedule.time_zone),
                })?;
            }
        }
        Ok(())
    }

    /// The ARN of a Lambda function named `name`.
    pub fn function_arn(&self, name: &str) -> String {
        format!("arn:aws:lambda:{}:{ACCOUNT}:function:{name}", self.config.region)
    }

    /// The bus name of a name or ARN.
    pub fn bus_name(bus: &str) -> &str {
        bus.rsplit('/').next().unwrap_or(bus)
    }

    /// Accepts entries: each becomes an EventBridge envelope, is routed by the template's rules
    /// (and to Inngest apps' triggers), and is logged with its invocations queued, all in one
    /// transaction. Returns the envelope ids.
    ///
    /// # Errors
    /// The log could not be written: nothing was accepted.
    /// With `only`, the rules are bypassed and every entry goes to that target alone (a binary,
    /// or `inngest:<function id>`): the dashboard's "invoke".
    pub fn put(&self, entries: Vec<Entry>, cause: &str, only: Option<&str>) -> Result<Vec<String>, DevError> {
        let now = self.now();
        let mut events = Vec::with_capacity(entries.len());
        let mut invocations = Vec::new();
        for entry in entries {
            let id = new_envelope_id();
            let bus = Dev::bus_name(&entry.bus).to_string();
            let time = entry.time.unwrap_or(now);
            let envelope = json!({
                "version": "0",
                "id": id,
                "detail-type": entry.detail_type,
                "source": entry.source,
                "account": ACCOUNT,
                "time": rfc3339(time),
                "region": self.config.region,
                "resources": entry.resources,
                "detail": entry.detail,
            });
            // Cairn's bus sends the whole event as the detail; its id keys the runs.
            let event_id = match (entry.detail["id"].as_str(), entry.detail["name"].as_str()) {
                (Some(own), Some(name)) if name == entry.detail_type => own.to_string(),
                _ => id.clone(),
            };
            let targets: Vec<String> = match only {
                Some(target) => vec![target.to_string()],
                None => {
                    let mut targets: Vec<String> =
                        self.template.route(&bus, &envelope).iter().map(|f| f.binary.clone()).collect();
                    if entry.detail_type != cairn_aws::RESUME_EVENT {
                        targets.extend(
                            self.inngest
                                .triggered_by(&entry.detail_type, &entry.detail)
                                .iter()
                                .map(|id| format!("{INNGEST_PREFIX}{id}")),
                        );
                    }
                    targets
                }
            };
            for target in &targets {
                invocations.push(NewInvocation {
                    function: target.clone(),
                    cause: cause.to_string(),
                    event_id: Some(event_id.clone()),
                    payload: envelope.clone(),
                    due_at: None,
                });
            }
            if only.is_none() && entry.detail_type != cairn_aws::RESUME_EVENT && self.inngest.matches_waits() {
                // Delivered to the Inngest apps' pending waits too (Cairn functions get the events
                // they wait for through their rules).
                invocations.push(NewInvocation {
                    function: format!("{INNGEST_PREFIX}{}", crate::inngest::WAITS_TARGET),
                    cause: cause.to_string(),
                    event_id: Some(event_id.clone()),
                    payload: envelope.clone(),
                    due_at: None,
                });
            }
            events.push(LoggedEvent {
                seq: 0,
                id,
                event_id,
                received_at: now,
                bus,
                source: entry.source,
                name: entry.detail_type,
                envelope,
                targets,
            });
        }
        self.db.accept(&events, &invocations, now)?;
        if !invocations.is_empty() {
            self.queued.notify_one();
        }
        Ok(events.into_iter().map(|e| e.id).collect())
    }

    /// Queues one invocation of `function` (a binary) with `payload`.
    ///
    /// # Errors
    /// The queue could not be written.
    pub fn enqueue(&self, invocation: NewInvocation) -> Result<(), DevError> {
        self.db.accept(&[], &[invocation], self.now())?;
        self.queued.notify_one();
        Ok(())
    }

    /// Runs the dispatcher and the schedule loop until the process ends.
    pub fn spawn_background(self: &Arc<Self>) {
        let dev = Arc::clone(self);
        tokio::spawn(async move { dev.dispatch_forever().await });
        let dev = Arc::clone(self);
        tokio::spawn(async move { dev.schedule_forever().await });
        let dev = Arc::clone(self);
        tokio::spawn(async move { dev.inngest.sync_forever(dev.as_ref()).await });
        let dev = Arc::clone(self);
        tokio::spawn(async move { dev.watch_changes_forever().await });
    }

    /// Every 300 ms while a dashboard is connected: the event log, the queue and the newest
    /// runs, hashed (the functions write runs from their own processes, so this polls).
    async fn watch_changes_forever(self: Arc<Self>) {
        use std::hash::{Hash, Hasher};
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if self.changes.receiver_count() == 0 {
                continue;
            }
            let mut hasher = std::hash::DefaultHasher::new();
            self.db.fingerprint().hash(&mut hasher);
            let newest = cairn::store::RunQuery { limit: 50, ..Default::default() };
            if let Ok(runs) = cairn::RunStore::list_runs(&self.store, &newest).await {
                for run in runs {
                    (run.run_id.as_str(), run.version, run.updated_at).hash(&mut hasher);
                }
            }
            self.changes.send_if_modified(|last| std::mem::replace(last, hasher.finish()) != *last);
        }
    }

    /// Where an invocation goes: `cargo lambda watch`, or an Inngest app (by URL). Each has its
    /// own `--concurrency` permits, so a hung app holds only its own.
    fn lane(&self, function: &str) -> String {
        match function.strip_prefix(INNGEST_PREFIX) {
            Some(target) => self.inngest.app_url(target).unwrap_or_else(|| function.to_string()),
            None => "lambda".into(),
        }
    }

    async fn dispatch_forever(self: Arc<Self>) {
        let mut lanes: HashMap<String, Arc<Semaphore>> = HashMap::new();
        let per_lane = self.config.concurrency.max(1);
        loop {
            // Due invocations in order, each taken only if its lane has a permit free.
            let now = self.now();
            let claimed = self.db.claim_due(now, |invocation| {
                let lane =
                    lanes.entry(self.lane(&invocation.function)).or_insert_with(|| Arc::new(Semaphore::new(per_lane)));
                Arc::clone(lane).try_acquire_owned().ok()
            });
            match claimed {
                Ok(due) if !due.is_empty() => {
                    for (invocation, permit) in due {
                        let dev = Arc::clone(&self);
                        tokio::spawn(async move {
                            dev.run_invocation(invocation).await;
                            drop(permit);
                            dev.queued.notify_one();
                        });
                    }
                    continue;
                }
                Ok(_) => {}
                Err(err) => tracing::error!(error = %err, "cannot read the invocation queue"),
            }
            let wait = match self.db.next_due() {
                // Due when claimed, so its lane is full: a freed permit notifies.
                Some(at) if at <= now => Duration::from_secs(1),
                Some(at) => {
                    Duration::from_millis(u64::try_from(at.saturating_sub(self.now())).unwrap_or(0).clamp(5, 1_000))
                }
                None => Duration::from_secs(1),
            };
            let _ = tokio::time::timeout(wait, self.queued.notified()).await;
        }
    }

    async fn run_invocation(self: &Arc<Self>, mut invocation: Invocation) {
        // An SQS message: its queue's event source decides on redelivery.
        let queue =
            invocation.cause.strip_prefix(crate::sqs_delivery::CAUSE_PREFIX).and_then(|q| self.template.queue(q));
        if queue.is_some() {
            crate::sqs_delivery::set_receive_count(&mut invocation.payload, invocation.attempts);
        }
        let result = if let Some(target) = invocation.function.strip_prefix(INNGEST_PREFIX) {
            self.inngest.execute(self, target, &invocation).await.map_err(|error| Delivery::Retry(error.to_string()))
        } else {
            self.invoke_lambda(&invocation.function, &invocation.payload).await
        };
        let result = match (result, queue) {
            (Ok(response), Some((_, source))) => match crate::sqs_delivery::reported_failure(source, &response) {
                Some(reason) => Err(Delivery::Retry(reason)),
                None => Ok(response),
            },
            (result, _) => result,
        };
        let now = self.now();
        let retry_at = match (&result, queue) {
            (Err(Delivery::Retry(_)), Some((_, source))) => {
                // SQS receives the message again once its visibility timeout ends (seconds here),
                // until the redrive policy's maxReceiveCount.
                let limit = source.max_receive_count.unwrap_or(crate::sqs_delivery::DEFAULT_MAX_RECEIVES);
                (invocation.attempts < limit)
                    .then(|| now + RETRY_DELAYS[usize::try_from(invocation.attempts).unwrap_or(2).clamp(1, 2) - 1])
            }
            (Err(Delivery::Retry(_)), None) => {
                RETRY_DELAYS.get(usize::try_from(invocation.attempts).unwrap_or(9).saturating_sub(1)).map(|d| now + d)
            }
            (Err(Delivery::Final(_)) | Ok(_), _) => None,
        };
        let result = match (result, queue) {
            (Err(Delivery::Retry(err)), Some((_, source))) if retry_at.is_none() => Err(Delivery::Retry(format!(
                "{err} (given up after {} receives{})",
                invocation.attempts,
                if source.max_receive_count.is_some() {
                    ", the queue's maxReceiveCount: in AWS it would move to the dead-letter queue"
                } else {
                    ""
                }
            ))),
            (result, _) => result,
        };
        let result = result.map_err(|(Delivery::Retry(err) | Delivery::Final(err))| err);
        match &result {
            Ok(_) => tracing::info!(function = %invocation.function, cause = %invocation.cause, "invoked"),
            Err(err) => {
                tracing::warn!(function = %invocation.function, attempt = invocation.attempts, retry = retry_at.is_some(), error = %err, "invocation failed")
            }
        }
        if let Err(err) = self.db.finish(invocation.seq, result, retry_at, now) {
            tracing::error!(error = %err, "cannot record an invocation");
        }
    }

    /// Invokes `binary` under `cargo lambda watch` and returns its answer.
    ///
    /// # Errors
    /// Unreachable watch or the function's error (retried), or no such function (final).
    pub async fn invoke_lambda(&self, binary: &str, payload: &Value) -> Result<Value, Delivery> {
        let url = format!("{}/2015-03-31/functions/{binary}/invocations", self.config.lambda_url.trim_end_matches('/'));
        let response = self.http.post(&url).json(payload).timeout(LAMBDA_TIMEOUT).send().await.map_err(|err| {
            Delivery::Retry(format!("cannot reach cargo lambda watch at {}: {err}", self.config.lambda_url))
        })?;
        let status = response.status();
        let function_error = response.headers().get("x-amz-function-error").is_some();
        let body = response.text().await.map_err(|err| Delivery::Retry(err.to_string()))?;
        let value = serde_json::from_str(&body).unwrap_or(Value::String(body.clone()));
        if status.is_success() && !function_error && value.get("errorType").is_none() {
            Ok(value)
        } else if status.as_u16() == 404 {
            // As Lambda's ResourceNotFoundException: retrying cannot help.
            let detail = value["detail"].as_str().unwrap_or(&body);
            Err(Delivery::Final(format!("function `{binary}` is not served by cargo lambda watch: {detail}")))
        } else {
            Err(Delivery::Retry(format!("{binary} answered {status}: {body}")))
        }
    }

    async fn schedule_forever(self: Arc<Self>) {
        loop {
            let now = self.now();
            match self.db.due_schedules(now) {
                Ok(due) => {
                    for schedule in due {
                        self.fire(&schedule, now);
                    }
                }
                Err(err) => tracing::error!(error = %err, "cannot read schedules"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn fire(&self, schedule: &Schedule, now: Millis) {
        let next = Expression::parse_dev(&schedule.expression, &schedule.time_zone).ok().and_then(|e| {
            if e.is_one_time() { None } else { e.next_after(now, schedule.created_at, &schedule.time_zone) }
        });
        let function = if schedule.target_arn.starts_with(INNGEST_PREFIX) {
            schedule.target_arn.clone()
        } else {
            self.template
                .function(&schedule.target_arn)
                .map(|f| f.binary.clone())
                .unwrap_or_else(|| schedule.target_arn.rsplit(':').next().unwrap_or_default().to_string())
        };
        let arn = format!(
            "arn:aws:scheduler:{}:{ACCOUNT}:schedule/{}/{}",
            self.config.region, schedule.group_name, schedule.name
        );
        let input = crate::schedule::substitute_context(
            &schedule.input,
            &crate::schedule::FiringContext {
                scheduled_at: schedule.next_at.unwrap_or(now),
                execution_id: &new_envelope_id(),
                schedule_arn: &arn,
                attempt: 1,
            },
        );
        let payload = serde_json::from_str(&input).unwrap_or(Value::String(input));
        let invocation = NewInvocation {
            function,
            cause: format!("schedule:{}/{}", schedule.group_name, schedule.name),
            event_id: None,
            payload,
            due_at: None,
        };
        // A reconciler tick while the last one is still queued or running would only pile up
        // behind a busy function: it is skipped (the pending tick does the same work).
        let coalesce = crate::template::is_reconcile(&schedule.input);
        match self.db.fired(schedule, next, &invocation, now, coalesce) {
            Ok(true) => {
                tracing::info!(schedule = %schedule.name, target = %invocation.function, "schedule fired");
                self.queued.notify_one();
            }
            Ok(false) => tracing::debug!(schedule = %schedule.name, "reconciler tick skipped: the last one is pending"),
            Err(err) => tracing::error!(error = %err, "cannot fire a schedule"),
        }
    }
}

impl crate::host::Host for Dev {
    fn store(&self) -> &AnyStore {
        &self.store
    }

    fn db(&self) -> &DevDb {
        &self.db
    }

    fn now(&self) -> Millis {
        Dev::now(self)
    }

    fn put_events(&self, entries: Vec<Entry>, cause: &str) -> Result<Vec<String>, DevError> {
        self.put(entries, cause, None)
    }
}
