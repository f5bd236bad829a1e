//! Events in: a delivery starts the runs its triggers match (invoked runs and failure
//! handlers included), resumes the waits it matches and answers the invokes it finishes.

use super::{Accepted, Runner, RunnerError};
use crate::bus::{Bus, Timer};
use crate::error::StepError;
use crate::event::{EventPayload, FAILED_EVENT, FINISHED_EVENT, INVOKED_EVENT};
use crate::id::{RunId, new_event_id};
use crate::lifecycle::Admitted;
use crate::lifecycle::invoke::{invoke_answer, invoke_resolved, invoked_function, invoked_run};
use crate::lifecycle::transition;
use crate::lifecycle::{WaitMatch, match_wait};
use crate::record::{InvokedBy, Millis, RunMeta, StepRecord, Wait};
use crate::store::{Commit, CreateRun, RunStore};
use serde_json::Value;

impl<S: RunStore, B: Bus, T: Timer> Runner<S, B, T> {
    /// Sends an event from application code (assigning an id and timestamp if missing).
    ///
    /// # Errors
    /// [`RunnerError::InvalidEvent`] naming the problem, or the bus's error.
    pub async fn send(&self, mut event: EventPayload) -> Result<String, RunnerError> {
        event.validate().map_err(RunnerError::InvalidEvent)?;
        let now = self.clock.now();
        let id = event.id.get_or_insert_with(|| new_event_id(now)).clone();
        event.ts.get_or_insert(now);
        self.bus.send(std::slice::from_ref(&event)).await?;
        Ok(id)
    }

    /// Sends `data` to the run waiting for `signal` ([`send_signal`](crate::send_signal)) on
    /// this runner's bus.
    ///
    /// # Errors
    /// An empty signal name, or the bus's error.
    pub async fn send_signal(&self, signal: &str, data: Value) -> Result<String, RunnerError> {
        Ok(crate::bus::send_signal(&self.bus, signal, data, self.clock.now()).await?)
    }

    /// Handles one delivered event: starts a run of every function it triggers (once per event
    /// id, however often it is delivered) and resolves the waits it satisfies. Returns the runs
    /// to drive.
    ///
    /// # Errors
    /// [`RunnerError::InvalidEvent`] for an event without an id or with a bad shape; store errors.
    pub async fn accept(&self, event: &EventPayload) -> Result<Vec<RunId>, RunnerError> {
        Ok(self.accept_detailed(event).await?.runs)
    }

    /// [`Runner::accept`], also saying which runs this delivery created (for metrics: a
    /// duplicate delivery creates none).
    ///
    /// # Errors
    /// As [`Runner::accept`].
    pub async fn accept_detailed(&self, event: &EventPayload) -> Result<Accepted, RunnerError> {
        event.validate().map_err(RunnerError::InvalidEvent)?;
        let event_id = event
            .id
            .clone()
            .ok_or_else(|| RunnerError::InvalidEvent(format!("event `{}` has no id", event.name).into()))?;
        let now = self.clock.now();
        if !self.config.wait_lookback.is_zero() {
            self.store.record_event(event, now).await?;
        }
        let mut runs = Vec::new();
        let mut started = Vec::new();
        let mut cancelled = Vec::new();
        if event.name == INVOKED_EVENT {
            if let Some((run, created)) = self.start_invoked(event, now).await? {
                if let Some(function_id) = created {
                    started.push((run.clone(), function_id));
                }
                runs.push(run);
            }
        } else {
            if event.name == FINISHED_EVENT
                && let Some(run) = self.answer_invoke(event, now).await?
            {
                runs.push(run);
            }
            let mut failure: Option<EventPayload> = None;
            for function in self.registry.triggered_by(event) {
                let run_id = RunId::for_event(function.id(), &event_id);
                let trigger = if event.name == FAILED_EVENT {
                    if failure.is_none() {
                        failure = Some(self.with_failed_run_event(event).await?);
                    }
                    failure.clone().unwrap_or_else(|| event.clone())
                } else {
                    event.clone()
                };
                let meta = RunMeta::new(run_id.clone(), function.id(), trigger, now);
                match self.admit(function, meta).await? {
                    Admitted::Started(_) => {
                        tracing::info!(function = function.id(), run_id = %run_id, "run started");
                        started.push((run_id.clone(), function.id().to_string()));
                        runs.push(run_id);
                    }
                    Admitted::Existing(_) => {
                        tracing::debug!(run_id = %run_id, "duplicate delivery, run exists");
                        runs.push(run_id);
                    }
                    // A full window's placeholder is driven now: a full batch runs in this
                    // invocation.
                    Admitted::Windowed { placeholder, due: true } => runs.push(placeholder),
                    Admitted::Skipped(_) | Admitted::Windowed { .. } => {}
                }
            }
        }
        let candidate = serde_json::to_value(event).unwrap_or_default();
        for wait in Wait::possible(self.store.waits_for(event).await?, &candidate) {
            if wait.cancels {
                cancelled.extend(self.hear_cancel(&wait, event).await?);
                continue;
            }
            if self.resolve_wait(&wait, event, now, true).await?.is_some() && !runs.contains(&wait.run_id) {
                runs.push(wait.run_id.clone());
            }
        }
        Ok(Accepted { runs, started, cancelled })
    }

    /// A failure event with the failed run's triggering event in full, read from the run's head
    /// (the bus carries only its name and id). Unchanged if the head is gone or not this app's.
    pub(super) async fn with_failed_run_event(&self, event: &EventPayload) -> Result<EventPayload, RunnerError> {
        let mut event = event.clone();
        let (Some(run_id), Some(function_id)) = (event.data["run_id"].as_str(), event.data["function_id"].as_str())
        else {
            return Ok(event);
        };
        if let Some(journal) = self.store.load(&RunId::new(run_id)).await?
            && journal.meta.function_id == function_id
        {
            event.data["event"] = serde_json::to_value(&journal.meta.event).unwrap_or(Value::Null);
        }
        Ok(event)
    }

    /// The invoked run, with its function id if this delivery created it.
    pub(super) async fn start_invoked(
        &self,
        event: &EventPayload,
        now: Millis,
    ) -> Result<Option<(RunId, Option<String>)>, RunnerError> {
        let Some((function_id, invoked_by)) = invoked_function(event) else {
            return Err(RunnerError::InvalidEvent(
                format!("`{INVOKED_EVENT}` needs data._inngest.fn_id and correlation_id").into(),
            ));
        };
        if self.registry.get(&function_id).is_none() {
            let error = StepError::non_retriable(format!("invoked function `{function_id}` does not exist"));
            self.resolve_invoke(&invoked_by, Err(error), now).await?;
            return Ok(None);
        }
        let run = invoked_run(&function_id, invoked_by, event, now);
        let run_id = run.run_id.clone();
        let created = matches!(
            self.store.create_run(transition::created(run, now, self.durations())).await?,
            CreateRun::Created(_)
        );
        Ok(Some((run_id, created.then_some(function_id))))
    }

    /// Completes `wait` with `event` if it matches; returns the committed record. With `wake`,
    /// the run is woken to continue (not needed when the caller is driving it).
    pub(super) async fn resolve_wait(
        &self,
        wait: &Wait,
        event: &EventPayload,
        now: Millis,
        wake: bool,
    ) -> Result<Option<StepRecord>, RunnerError> {
        let journal = match self.store.load(&wait.run_id).await? {
            Some(journal) if !journal.meta.status.is_finished() => journal,
            // Gone, or ended (cancelled) while it waited: nothing to resume.
            _ => {
                self.store.remove_wait(wait).await?;
                return Ok(None);
            }
        };
        let record = match match_wait(
            &journal.meta.event,
            &journal.steps,
            &wait.step_id,
            wait.expression.as_deref(),
            event,
            now,
        ) {
            WaitMatch::Resumes(record) => *record,
            WaitMatch::NoMatch => return Ok(None),
            WaitMatch::Stale => {
                // Resolved already (a timeout, or a crash before the wait was removed): drop it.
                self.store.remove_wait(wait).await?;
                return Ok(None);
            }
        };
        // From outside the run (`wake`): the commit and the run's wake-up are one write, so the
        // run is resumed (by the message below, or else the reconciler) even if we die now.
        let commit = if wake {
            self.store.commit_and_wake(&wait.run_id, &record, now).await?
        } else {
            self.store.commit_step(&wait.run_id, &record).await?
        };
        let resolved = matches!(commit, Commit::Committed);
        self.store.remove_wait(wait).await?;
        if resolved && wake {
            self.timer
                .wake_at(&wait.run_id, &journal.meta.function_id, &format!("event-{}", wait.step_id), now)
                .await?;
        }
        Ok(resolved.then_some(record))
    }

    pub(super) async fn resolve_invoke(
        &self,
        invoked_by: &InvokedBy,
        result: Result<Value, StepError>,
        now: Millis,
    ) -> Result<(), RunnerError> {
        let Some(journal) = self.store.load(&invoked_by.run_id).await? else {
            return Ok(());
        };
        let Some(step) = journal.steps.iter().find(|record| record.id == invoked_by.step_id) else {
            return Ok(());
        };
        let record = invoke_resolved(step, result, now);
        if let Commit::Committed = self.store.commit_and_wake(&invoked_by.run_id, &record, now).await? {
            self.timer
                .wake_at(&invoked_by.run_id, &journal.meta.function_id, &format!("invoke-{}", invoked_by.step_id), now)
                .await?;
        }
        Ok(())
    }

    /// An `inngest/function.finished` event answering one of this runner's `step.invoke`s
    /// (its `data.correlation_id` names the caller's run and step): resolves that step.
    /// Returns the caller's run, to drive.
    pub(super) async fn answer_invoke(&self, event: &EventPayload, now: Millis) -> Result<Option<RunId>, RunnerError> {
        let Some((invoked_by, result)) = invoke_answer(event) else {
            return Ok(None);
        };
        let Some(caller) = self.store.load(&invoked_by.run_id).await? else { return Ok(None) };
        if self.registry.get(&caller.meta.function_id).is_none() {
            return Ok(None); // another binary's run
        }
        self.resolve_invoke(&invoked_by, result, now).await?;
        Ok(Some(invoked_by.run_id))
    }
}
