//! `cairn dev -u URL`: the dev server as an Inngest executor for apps that speak the Inngest SDK
//! protocol (the official TypeScript SDK's included), so TypeScript and Rust functions share one
//! dev server, one event log and one dashboard.
//!
//! Apps are synced in band (a `PUT` every 5 s, answered with their functions) or out of band
//! (the SDK posts to `/fn/register`); their `step.sendEvent`s arrive at `/e/{key}` and are routed
//! like any other event. A run is driven one request at a time (no checkpointing: `ctx.fn_id` is
//! not sent), its steps kept in the same store as Cairn's runs: `StepRun` and `StepFailed` are
//! memoized, `StepPlanned` steps are called by id, `Sleep` and `WaitForEvent` suspend the run on a
//! dev schedule and a wait, `StepError` and function errors are retried as the Runner retries
//! (`cairn::RetryPolicy`: Inngest's back-off, an answer's `Retry-After` and `X-Inngest-No-Retry`
//! honoured).
//! `InvokeFunction` sends `inngest/function.invoked` and suspends the step until the invoked
//! run's `inngest/function.finished` answers it or its timeout fails it
//! ([`cairn::lifecycle::invoke`], as the Runner). The functions' flow-control
//! options (`concurrency`, `throttle`, `rateLimit`, `idempotency`, `priority`, `singleton`,
//! `cancelOn`, `timeouts`) are enforced as a Rust function's are ([`flow`]).

mod apply;
mod executor;
mod flow;
mod protocol;
mod resume;

use crate::DevError;
use crate::devdb::Schedule;
use crate::host::Host;
use cairn::{CronSchedule, Millis};
use cairn_aws::ControlMessage;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

/// The prefix of queued invocations that go to an Inngest-protocol app instead of a binary.
pub const INNGEST_PREFIX: &str = "inngest:";

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
    /// Its synced flow-control options, enforced as a Rust function's are.
    flow: cairn::flow::FlowControl,
}

impl AppFunction {
    /// Its retry policy (the synced `retries`): the same decision the Runner makes for a Rust
    /// function's attempts, honouring an answer's `X-Inngest-No-Retry` and `Retry-After`.
    fn retries(&self) -> cairn::RetryPolicy<'static> {
        cairn::RetryPolicy::with_retries(self.max_attempts.saturating_sub(1))
    }
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

type Result<T> = std::result::Result<T, DevError>;

pub(crate) fn store_err(err: cairn::StoreError) -> DevError {
    DevError::caused_by(err)
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

    /// The functions an event named `name` (`detail` the event itself) starts: those it
    /// triggers; for `inngest/function.invoked`, only the function it names (Inngest routes an
    /// invoke to its function directly, which needs no trigger for it).
    pub fn triggered_by(&self, name: &str, detail: &Value) -> Vec<String> {
        let functions = self.read();
        if name == cairn::INVOKED_EVENT {
            let invoked = detail["data"]["_inngest"]["fn_id"].as_str();
            return functions.iter().filter(|f| invoked == Some(f.id.as_str())).map(|f| f.id.clone()).collect();
        }
        functions.iter().filter(|f| f.events.iter().any(|(event, _)| event == name)).map(|f| f.id.clone()).collect()
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

    /// The app URLs given with `-u`.
    pub fn urls(&self) -> &[String] {
        &self.urls
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
    pub async fn sync_forever<H: Host>(&self, dev: &H) {
        futures::future::join_all(self.urls.iter().map(|url| self.sync_app_forever(dev, url))).await;
    }

    async fn sync_app_forever<H: Host>(&self, dev: &H, url: &str) {
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

    async fn sync<H: Host>(&self, dev: &H, url: &str) -> Result<()> {
        let response = self
            .http
            .put(url)
            .header("x-inngest-sync-kind", "in_band")
            .header("x-inngest-server-kind", "dev")
            .json(&json!({"url": url}))
            .timeout(SYNC_TIMEOUT.min(self.timeout))
            .send()
            .await
            .map_err(DevError::caused_by)?;
        let in_band = response.headers().get("x-inngest-sync-kind").is_some_and(|v| v == "in_band");
        let status = response.status();
        let body: Value = response.json().await.unwrap_or_default();
        if !status.is_success() {
            return Err(format!("sync answered {status}: {body}").into());
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
    pub fn register<H: Host>(&self, dev: &H, url: &str, body: &Value) -> Result<()> {
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
            let flow = cairn::flow::FlowControl::from_wire(function)
                .map_err(|error| DevError::with_source(format!("function `{id}`: {error}"), error))?;
            synced.push(AppFunction {
                id: id.to_string(),
                name: function["name"].as_str().unwrap_or(id).to_string(),
                app_url: url.to_string(),
                events,
                crons,
                max_attempts: u32::try_from(retries).unwrap_or(4) + 1,
                flow,
            });
        }
        let now = dev.now();
        for function in &synced {
            for (index, source) in function.crons.iter().enumerate() {
                let cron = CronSchedule::parse(source)
                    .map_err(|err| DevError::with_source(format!("{}: cron `{source}`: {err}", function.id), err))?;
                let expressions = cairn_aws::schedule_expression(&cron)
                    .map_err(|err| format!("{}: cron `{source}`: {err}", function.id))?;
                let time_zone = cron.time_zone().to_string();
                let count = expressions.len();
                for (part, expression) in expressions.into_iter().enumerate() {
                    // A cron restricting both days is two schedules (see `schedule_expression`).
                    let name = if count == 1 {
                        format!("{}.{index}", function.id)
                    } else {
                        format!("{}.{index}.{part}", function.id)
                    };
                    let exists = dev
                        .db()
                        .schedules(Some("inngest"))?
                        .iter()
                        .any(|s| s.name == name && s.expression == expression);
                    if exists {
                        continue;
                    }
                    let next_at = crate::schedule::Expression::parse(&expression, &time_zone)
                        .ok()
                        .and_then(|e| e.next_after(now, now, &time_zone));
                    dev.db().put_schedule(&Schedule {
                        group_name: "inngest".into(),
                        name,
                        expression,
                        time_zone: time_zone.clone(),
                        target_arn: format!("{INNGEST_PREFIX}{}", function.id),
                        input: ControlMessage::cron(source.as_str(), None).to_string(),
                        delete_after: false,
                        created_at: now,
                        next_at,
                    })?;
                }
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
}
