//! Driving a run of an app's function: one call request at a time until the run finishes or
//! suspends, with every change of the run's status made by the core's lifecycle
//! ([`cairn::lifecycle`]): the same transitions, wait matching and system events as the
//! Runner's, so a TypeScript run and a Rust run behave alike in the dev server.

use super::apply::Applied;
use super::flow::{AppControl, Gate, control_err, durations, finish_at, schedule_resume};
use super::protocol::{event_of_envelope, memo};
use super::{AppFunction, InngestApps, Result, WAITS_TARGET, store_err};
use crate::devdb::Invocation;
use crate::host::{Host, HostBus};
use cairn::lifecycle::transition;
use cairn::lifecycle::{Admitted, Fired, RunEnd, deliver_outbox};
use cairn::{
    EventPayload, MatchExpr, Millis, RunId, RunMeta, RunStatus, RunStore, StepError, StepKind, StepRecord, StepState,
    Wait,
};
use cairn_aws::{ControlMessage, WireError};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::Arc;

/// Who holds a run while the dev server drives it (its lease's owner).
const OWNER: &str = "cairn-dev";

impl InngestApps {
    /// Executes one queued invocation for function `target` (or the waits matcher).
    ///
    /// # Errors
    /// The app could not be reached, or the store failed; the dispatcher retries.
    pub async fn execute<H: Host>(&self, dev: &Arc<H>, target: &str, invocation: &Invocation) -> Result<Value> {
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
                match self.start(dev, &function, event).await? {
                    (run_id, None) => run_id,
                    (run_id, Some(status)) => return Ok(json!({"runs": [{"run_id": run_id, "status": status}]})),
                }
            }
            _ => {
                let event = event_of_envelope(payload, dev.now());
                if let Some(run_id) = self.start_invoked(dev, &function, &event).await? {
                    let status = self.drive(dev, &function, &run_id).await?;
                    return Ok(json!({"runs": [{"run_id": run_id, "status": status}]}));
                }
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
                match self.start(dev, &function, event).await? {
                    (run_id, None) => run_id,
                    (run_id, Some(status)) => return Ok(json!({"runs": [{"run_id": run_id, "status": status}]})),
                }
            }
        };
        let status = self.drive(dev, &function, &run_id).await?;
        Ok(json!({"runs": [{"run_id": run_id, "status": status}]}))
    }

    /// Admits a run of `function` for `event` under its flow control (the core's admission):
    /// its id, and the status to report instead of driving it (flow control skipped it, or a
    /// debounce window took the event: the id is then the window's placeholder).
    async fn start<H: Host>(
        &self,
        dev: &Arc<H>,
        function: &AppFunction,
        event: EventPayload,
    ) -> Result<(RunId, Option<RunStatus>)> {
        let run_id = RunId::for_event(&function.id, event.id.as_deref().unwrap_or_default());
        let meta = RunMeta::new(run_id.clone(), function.id.clone(), event, dev.now());
        let control = AppControl::new(dev);
        let admitted = control.runs().admit(&function.id, &function.flow, meta).await.map_err(control_err)?;
        Ok(match admitted {
            Admitted::Skipped(_) => (run_id, Some(RunStatus::Skipped)),
            Admitted::Windowed { placeholder, due: true } => (placeholder, None),
            Admitted::Windowed { placeholder, due: false } => (placeholder, Some(RunStatus::Queued)),
            Admitted::Started(_) | Admitted::Existing(_) => (run_id, None),
        })
    }

    pub(super) async fn lock(&self, run_id: &RunId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.run_locks.lock().await;
        Arc::clone(locks.entry(run_id.to_string()).or_default())
    }

    /// Calls the app until the run finishes or suspends; returns its status. Concurrency slots
    /// taken for the calls are given back when it stops.
    pub(super) async fn drive<H: Host>(
        &self,
        dev: &Arc<H>,
        function: &AppFunction,
        run_id: &RunId,
    ) -> Result<RunStatus> {
        let lock = self.lock(run_id).await;
        let _held = lock.lock().await;
        let mut slots = Vec::new();
        let status = self.drive_held(dev, function, run_id, &mut slots).await;
        self.give_back(dev, &function.id, run_id, &slots).await;
        status
    }

    async fn drive_held<H: Host>(
        &self,
        dev: &Arc<H>,
        function: &AppFunction,
        run_id: &RunId,
        slots: &mut Vec<cairn::flow::Slot>,
    ) -> Result<RunStatus> {
        // How many steps had completed when the app was last called in this drive.
        let mut seen_completed: Option<usize> = None;
        for _ in 0..1_000 {
            let journal =
                dev.store().load(run_id).await.map_err(store_err)?.ok_or_else(|| format!("no run `{run_id}`"))?;
            let mut meta = journal.meta;
            // A step ended (completed or failed) that the app has not seen: it is called even
            // while other steps sleep or wait (a race, `group.parallel({mode: "race"})`, may be
            // decided, and a failed invoke or step may be caught).
            let completed = journal.steps.iter().filter(|step| step.state.is_final()).count();
            let fresh = match seen_completed {
                Some(seen) => completed > seen,
                None => journal
                    .steps
                    .iter()
                    .any(|step| step.state.is_final() && step.ended_at.is_some_and(|ended| ended > meta.updated_at)),
            };
            if meta.status.is_finished() {
                self.leave_queues(dev, function, &meta).await;
                return Ok(meta.status);
            }
            if meta.status == RunStatus::Queued && meta.window_key.is_some() {
                let control = AppControl::new(dev);
                let fired =
                    control.runs().fire_window(&function.id, &function.flow, &meta).await.map_err(control_err)?;
                return match fired {
                    Fired::Waiting(_) => Ok(RunStatus::Queued),
                    Fired::Started(run_id) => Box::pin(self.drive(dev, function, &run_id)).await,
                };
            }
            if let Gate::Stopped(status) = self.overdue(dev, function, &mut meta, &journal.steps).await? {
                return Ok(status);
            }
            let now = dev.now();
            // No wake-up later than the finish timeout: the run is woken to be cancelled then.
            let cap = |at: Millis| finish_at(function, &journal.steps, now).map_or(at, |finish| at.min(finish));
            if let Some(at) = meta.retry_at.filter(|at| *at > now) {
                return self.suspend(dev, &mut meta, RunStatus::Sleeping, cap(at)).await;
            }
            // Time-bound steps: due ones resolve (then the run is read again); pending invokes are
            // sent; the run suspends until the earliest pending one unless a retry is due now.
            let mut target = ("step".to_string(), meta.attempt);
            let mut resolved = false;
            let mut pending: Option<(Millis, RunStatus)> = None;
            let mut pend = |at: Millis, status: RunStatus| {
                let waiting = status == RunStatus::Waiting || pending.is_some_and(|(_, s)| s == RunStatus::Waiting);
                let earliest = pending.map_or(at, |(earlier, _)| earlier.min(at));
                pending = Some((earliest, if waiting { RunStatus::Waiting } else { status }));
            };
            for step in &journal.steps {
                match &step.state {
                    StepState::Scheduled { wake_at } if *wake_at <= now => {
                        resolved = true;
                        // Under the run's lock no event resolves it meanwhile: a wait already gone
                        // was never registered (a crash), and the step times out all the same.
                        if let Some(wait) = Wait::of_step(&meta.event, run_id, step) {
                            dev.store().remove_wait(&wait).await.map_err(store_err)?;
                        }
                        // A sleep ends and a wait times out with null; an invoke times out failed.
                        let state = if step.kind == StepKind::Invoke {
                            StepState::Failed { error: StepError::invoke_timeout() }
                        } else {
                            StepState::Completed { output: Value::Null }
                        };
                        let done = StepRecord { state, ended_at: Some(now), ..step.clone() };
                        dev.store().commit_step(run_id, &done).await.map_err(store_err)?;
                    }
                    StepState::Scheduled { wake_at } if !fresh => {
                        if step.kind == StepKind::Invoke && !self.send_invoke(dev, &meta, step).await? {
                            resolved = true; // No function takes the invoke: its step failed.
                            continue;
                        }
                        let sleeping = !matches!(step.kind, StepKind::WaitForEvent | StepKind::Invoke);
                        pend(*wake_at, if sleeping { RunStatus::Sleeping } else { RunStatus::Waiting });
                    }
                    StepState::Retrying { retry_at, .. } if *retry_at > now => pend(*retry_at, RunStatus::Sleeping),
                    StepState::Retrying { .. } => target = (step.id.to_string(), step.attempts),
                    _ => {}
                }
            }
            if resolved {
                continue;
            }
            let retry_due = target.0 != "step";
            if let Some((at, status)) = pending.filter(|_| !retry_due) {
                return self.suspend(dev, &mut meta, status, cap(at)).await;
            }
            if let Gate::Stopped(status) = self.gate(dev, function, &mut meta, &journal.steps, slots).await? {
                return Ok(status);
            }
            if meta.status != RunStatus::Running || meta.retry_at.is_some() || meta.lease.is_none() {
                let mut running = transition::started(meta, OWNER, now, durations());
                running.retry_at = None; // The attempt it waited for starts now.
                meta = dev.store().update_meta(&running).await.map_err(store_err)?;
            }
            let memo = memo(&journal.steps);
            seen_completed = Some(completed);
            // A batch's run hands the app every event of its batch (the SDK's `events`).
            let events = AppControl::new(dev).runs().run_events(&meta).await.map_err(control_err)?;
            let mut queue = VecDeque::from([target]);
            // The gate took the slots for the first call; later calls renew them.
            let mut renew = false;
            while let Some((step_id, attempt)) = queue.pop_front() {
                if std::mem::replace(&mut renew, true) && !self.renew_slots(dev, run_id, slots).await? {
                    meta.queued = Some(cairn::Queued {
                        option: "concurrency".into(),
                        key: None,
                        position: 0,
                        until: None,
                        events: None,
                    });
                    let recheck = dev.now().saturating_add(cairn::lifecycle::gate::QUEUE_RECHECK);
                    return self.suspend(dev, &mut meta, RunStatus::Queued, recheck).await;
                }
                let answer = self.call(function, &meta, &events, &step_id, attempt, &memo).await?;
                match self.apply(dev, function, &mut meta, answer, &journal.steps, attempt).await? {
                    Applied::Continue(planned) => queue.extend(planned.into_iter().map(|id| (id, 0))),
                    Applied::Finished(status) => return Ok(status),
                }
            }
        }
        Err(format!("run `{run_id}` made no progress in 1,000 calls").into())
    }

    pub(super) async fn suspend<H: Host>(
        &self,
        dev: &Arc<H>,
        meta: &mut RunMeta,
        status: RunStatus,
        until: Millis,
    ) -> Result<RunStatus> {
        if meta.status != status || meta.lease.is_some() || meta.wake_at != Some(until) {
            let suspended = transition::suspended(meta.clone(), status, Some(until), dev.now(), durations());
            *meta = dev.store().update_meta(&suspended).await.map_err(store_err)?;
        }
        self.wake_at(dev, &meta.function_id, &meta.run_id, until)?;
        Ok(status)
    }

    /// A one-time dev schedule that resumes the run at `at` (idempotent by name).
    pub(super) fn wake_at<H: Host>(&self, dev: &Arc<H>, function_id: &str, run_id: &RunId, at: Millis) -> Result<()> {
        schedule_resume(dev.as_ref(), function_id, run_id, at)
    }

    /// Ends the run (completed or failed) through the lifecycle, then delivers its system events
    /// (`inngest/function.finished`, and `failed`) on the bus.
    pub(super) async fn finish<H: Host>(
        &self,
        dev: &Arc<H>,
        meta: &mut RunMeta,
        result: std::result::Result<Value, StepError>,
    ) -> Result<RunStatus> {
        // Steps still sleeping or waiting lost a race (`group.parallel({mode: "race"})`): they
        // are recorded cancelled, their waits removed, before the run ends.
        if let Some(journal) = dev.store().load(&meta.run_id).await.map_err(store_err)? {
            for step in journal.steps.iter().filter(|step| matches!(step.state, StepState::Scheduled { .. })) {
                if let Some(wait) = Wait::of_step(&meta.event, &meta.run_id, step) {
                    dev.store().remove_wait(&wait).await.map_err(store_err)?;
                }
                let error = StepError {
                    name: "StepCancelledError".into(),
                    ..StepError::non_retriable(format!("step `{}`: cancelled: the run ended first", step.name))
                };
                let cancelled =
                    StepRecord { state: StepState::Failed { error }, ended_at: Some(dev.now()), ..step.clone() };
                dev.store().commit_step(&meta.run_id, &cancelled).await.map_err(store_err)?;
            }
        }
        let ended = transition::ended(meta.clone(), &RunEnd::from(result), dev.now(), durations());
        *meta = dev.store().update_meta(&ended).await.map_err(store_err)?;
        if let Err(error) = deliver_outbox(dev.store(), &HostBus(Arc::clone(dev)), meta.clone()).await {
            tracing::warn!(run_id = %meta.run_id, %error, "cannot send the run's system events");
        }
        Ok(meta.status)
    }

    /// The synced function a run belongs to, if it is an app's.
    pub(super) async fn function_of_run<H: Host>(&self, dev: &Arc<H>, run_id: &RunId) -> Result<Option<AppFunction>> {
        let journal = dev.store().load(run_id).await.map_err(store_err)?;
        Ok(journal.and_then(|journal| self.function(&journal.meta.function_id)))
    }
}
