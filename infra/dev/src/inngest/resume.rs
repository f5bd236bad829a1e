//! What resumes an app's suspended run besides its timer: an event matching one of its waits
//! (the lifecycle's matching rules, as the Runner's), and the answer to a `step.invoke`. Invokes
//! go through the core's [`cairn::lifecycle::invoke`] as the Runner's do: an invoked event starts
//! the run it names, a pending invoke step sends that event whenever its run suspends on it, and
//! the invoked run's `inngest/function.finished` answers the step and drives the caller on.

use super::flow::{AppControl, control_err, durations};
use super::protocol::event_of_envelope;
use super::{AppFunction, InngestApps, Result, store_err};
use crate::DevError;
use crate::host::{Host, HostBus};
use cairn::lifecycle::invoke::invoke_resolved;
use cairn::lifecycle::transition;
use cairn::lifecycle::{WaitMatch, invoke_answer, invoke_event, invoked_function, invoked_run, match_wait};
use cairn::{Bus, EventPayload, RunId, RunMeta, RunStore, StepError, StepKind, StepRecord, Wait};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;

impl InngestApps {
    /// The run an `inngest/function.invoked` event for `function` starts (created once, however
    /// often the event is delivered; flow control does not apply to an invoke, as in the
    /// Runner); `None` for any other event.
    pub(super) async fn start_invoked<H: Host>(
        &self,
        dev: &Arc<H>,
        function: &AppFunction,
        event: &EventPayload,
    ) -> Result<Option<RunId>> {
        let Some((function_id, invoked_by)) =
            invoked_function(event).filter(|(id, _)| event.name == cairn::INVOKED_EVENT && *id == function.id)
        else {
            return Ok(None);
        };
        let now = dev.now();
        let meta = invoked_run(&function_id, invoked_by, event, now);
        let run_id = meta.run_id.clone();
        dev.store().create_run(transition::created(meta, now, durations())).await.map_err(store_err)?;
        Ok(Some(run_id))
    }

    /// Sends the `inngest/function.invoked` event of `meta`'s pending invoke `step` (again on
    /// every drive that suspends on it, as the Runner: the event's id derives from the step, so
    /// a resend after a crash starts nothing new). Returns false when no function takes it: the
    /// step then fails at once, as Inngest fails an invoke of an unknown function.
    pub(super) async fn send_invoke<H: Host>(&self, dev: &Arc<H>, meta: &RunMeta, step: &StepRecord) -> Result<bool> {
        let detail = step.detail.clone().unwrap_or_default();
        let function_id = detail["function_id"].as_str().unwrap_or_default();
        let event = invoke_event(&meta.run_id, &meta.function_id, &step.id, function_id, &detail["data"], dev.now());
        // Its answer, `inngest/function.finished`, comes back through the waits matcher.
        self.has_waiters.store(true, Ordering::Relaxed);
        let ids = HostBus(Arc::clone(dev)).send(std::slice::from_ref(&event)).await.map_err(DevError::caused_by)?;
        let routed = match ids.first() {
            Some(id) => dev.db().event(id)?.is_some_and(|logged| !logged.targets.is_empty()),
            None => false,
        };
        if !routed {
            let error = StepError::non_retriable(format!("invoked function `{function_id}` does not exist"));
            let failed = invoke_resolved(step, Err(error), dev.now());
            dev.store().commit_step(&meta.run_id, &failed).await.map_err(store_err)?;
        }
        Ok(routed)
    }

    /// Resolves an app run's pending invoke step with the `inngest/function.finished` event
    /// that answers it, and drives the run on; `None` if the event answers no app run's invoke.
    pub(super) async fn answer_invoke<H: Host>(&self, dev: &Arc<H>, event: &EventPayload) -> Result<Option<Value>> {
        let Some((invoked_by, result)) = invoke_answer(event) else { return Ok(None) };
        let Some(function) = self.function_of_run(dev, &invoked_by.run_id).await? else { return Ok(None) };
        let lock = self.lock(&invoked_by.run_id).await;
        {
            let _held = lock.lock().await;
            let Some(journal) = dev.store().load(&invoked_by.run_id).await.map_err(store_err)? else {
                return Ok(None);
            };
            let pending = journal
                .steps
                .iter()
                .find(|step| step.id == invoked_by.step_id && step.kind == StepKind::Invoke && !step.state.is_final());
            let Some(step) = pending.filter(|_| !journal.meta.status.is_finished()) else {
                return Ok(None); // answered already, timed out, or the run ended
            };
            let mut resolved = invoke_resolved(step, result, dev.now());
            // The child's error as it was serialized (stack, cause): the memo hands it to the app.
            if let Some(error) = event.data.get("error").filter(|error| !error.is_null())
                && let Some(detail) = resolved.detail.as_mut()
            {
                detail["error"] = error.clone();
            }
            dev.store().commit_step(&invoked_by.run_id, &resolved).await.map_err(store_err)?;
        }
        let status = self.drive(dev, &function, &invoked_by.run_id).await?;
        Ok(Some(json!({"run_id": invoked_by.run_id, "status": status})))
    }

    /// Matches an event against the apps' pending waits (the lifecycle's rules: the wait still
    /// pending, an event resumes one wait of a run at most, the `if` expression); each matched run
    /// resumes.
    pub(super) async fn resolve_waits<H: Host>(&self, dev: &Arc<H>, payload: &Value) -> Result<Value> {
        let event = event_of_envelope(payload, dev.now());
        let mut resumed = Vec::new();
        if event.name == cairn::FINISHED_EVENT
            && let Some(run) = self.answer_invoke(dev, &event).await?
        {
            resumed.push(run);
        }
        let candidate = serde_json::to_value(&event).unwrap_or_default();
        for wait in Wait::possible(dev.store().waits_for(&event).await.map_err(store_err)?, &candidate) {
            if wait.cancels {
                let control = AppControl::new(dev);
                control.runs().hear_cancel(&wait, &event).await.map_err(control_err)?;
                continue;
            }
            if wait.timeout_at <= dev.now() {
                continue;
            }
            let Some(function) = self.function_of_run(dev, &wait.run_id).await? else { continue };
            let lock = self.lock(&wait.run_id).await;
            {
                let _held = lock.lock().await;
                let Some(journal) = dev.store().load(&wait.run_id).await.map_err(store_err)? else { continue };
                let pending = !journal.meta.status.is_finished();
                let step_id = &wait.step_id;
                let now = dev.now();
                match match_wait(&journal.meta.event, &journal.steps, step_id, wait.expression.as_deref(), &event, now)
                {
                    WaitMatch::Resumes(record) if pending => {
                        if !dev.store().remove_wait(&wait).await.map_err(store_err)? {
                            continue;
                        }
                        dev.store().commit_step(&wait.run_id, &record).await.map_err(store_err)?;
                    }
                    WaitMatch::NoMatch => continue,
                    WaitMatch::Stale | WaitMatch::Resumes(_) => {
                        // Resolved already, or the run ended: the wait is left over.
                        dev.store().remove_wait(&wait).await.map_err(store_err)?;
                        continue;
                    }
                }
            }
            let status = self.drive(dev, &function, &wait.run_id).await?;
            resumed.push(json!({"run_id": wait.run_id, "status": status}));
        }
        Ok(json!({"runs": resumed}))
    }
}
