//! Recovery with no human action: the outbox (events owed by a finished run, written with the
//! state that owes them and sent until acknowledged) and the reconciler, which finds through
//! the stores' `wake_at` index every run that needs a driver and got none (a holder that died,
//! a lost wake-up, an undelivered outbox) and wakes it. Messages are hints; the store is the
//! truth.

use super::{Runner, RunnerError};
use crate::bus::{Bus, Timer};
use crate::error::StepError;
use crate::event::{EventPayload, FAILED_EVENT, FINISHED_EVENT};
use crate::function::FailureData;
use crate::id::StepId;
use crate::record::{Millis, RunMeta};
use crate::store::{RunStore, StoreError};
use serde_json::{Value, json};

/// How many due runs of one function a reconciler pass handles; the rest wait for the next.
pub const RECONCILE_BATCH: usize = 500;

/// What one reconciler pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Reconciled {
    /// Due runs found through the index.
    pub examined: usize,
    /// Unfinished runs woken (their holder died, or their wake-up was lost).
    pub resumed: usize,
    /// Finished runs whose outbox was delivered.
    pub delivered: usize,
    /// Runs that could not be handled this pass (logged; the next pass tries again).
    pub failed: usize,
}

impl<S: RunStore, B: Bus, T: Timer> Runner<S, B, T> {
    /// The events a run owes when it ends: `inngest/function.finished` always (it also answers
    /// a `step.invoke` through its `correlation_id`), `inngest/function.failed` on failure
    /// (`on_failure` handlers). Ids are derived from the run, so a redelivery is a duplicate.
    pub(super) fn finish_events(
        &self,
        meta: &RunMeta,
        result: &Result<Value, StepError>,
        now: Millis,
    ) -> Vec<EventPayload> {
        let id = |kind: &str| StepId::hash(&format!("{kind}/{}", meta.run_id)).as_str()[..26].to_string();
        // The triggering event travels by name and id only: its data may hold secrets, and these
        // events go over the bus to every subscriber (and its dead-letter queue). A failure
        // handler gets the full event from the run's head in `accept`.
        let event = meta.event.summary();
        let mut data = json!({
            "function_id": meta.function_id,
            "run_id": meta.run_id,
            "event": event,
        });
        match result {
            Ok(output) => data["result"] = output.clone(),
            Err(error) => data["error"] = serde_json::to_value(error).unwrap_or(Value::Null),
        }
        if let Some(invoked_by) = &meta.invoked_by {
            data["correlation_id"] = json!(format!("{}.{}", invoked_by.run_id, invoked_by.step_id));
        }
        let mut events = vec![EventPayload::new(FINISHED_EVENT, data).with_id(id("finished")).with_ts(now)];
        if let Err(error) = result {
            let failed = FailureData {
                function_id: meta.function_id.clone(),
                run_id: meta.run_id.to_string(),
                event,
                error: error.clone(),
            };
            let data = serde_json::to_value(&failed).unwrap_or(Value::Null);
            events.push(EventPayload::new(FAILED_EVENT, data).with_id(id("failed")).with_ts(now));
        }
        events
    }

    /// Sends a finished run's outbox, then acknowledges it (clears it and takes the run out of
    /// the reconciler's index). Sending twice is harmless: the events keep their ids.
    pub(super) async fn deliver_outbox(&self, mut meta: RunMeta) -> Result<(), RunnerError> {
        if !meta.outbox.is_empty() {
            self.bus.send(&meta.outbox).await?;
        }
        loop {
            meta.outbox.clear();
            meta.wake_at = None;
            match self.store.update_meta(&meta).await {
                Ok(_) => return Ok(()),
                Err(StoreError::Conflict { .. }) => {
                    let run_id = meta.run_id.clone();
                    meta = self.store.load(&run_id).await?.ok_or(RunnerError::UnknownRun(run_id))?.meta;
                    if meta.outbox.is_empty() && meta.wake_at.is_none() {
                        return Ok(());
                    }
                    if !meta.outbox.is_empty() {
                        // A rerun or another finish wrote a new outbox: deliver it too.
                        self.bus.send(&meta.outbox).await?;
                    }
                }
                Err(other) => return Err(other.into()),
            }
        }
    }

    /// One reconciler pass over every function of this runner: each run whose `wake_at` has
    /// passed is woken through the [`Timer`] (its holder died, or its wake-up was lost), and each
    /// finished run with an undelivered outbox gets it delivered. Runs still validly held are
    /// left to their holder. A run that fails here is counted and tried again next pass.
    ///
    /// # Errors
    /// Reading the index failed.
    pub async fn reconcile(&self) -> Result<Reconciled, RunnerError> {
        let now = self.clock.now();
        let mut report = Reconciled::default();
        for function in self.registry.functions() {
            for meta in self.store.due_runs(function.id(), now, RECONCILE_BATCH).await? {
                report.examined += 1;
                let run_id = meta.run_id.clone();
                let handled = if meta.status.is_finished() {
                    let owed = !meta.outbox.is_empty();
                    let delivered = self.deliver_outbox(meta).await;
                    if delivered.is_ok() && owed {
                        report.delivered += 1;
                    }
                    delivered
                } else if meta.lease.as_ref().is_some_and(|lease| lease.expires_at > now) {
                    Ok(()) // held: its holder (or the wake-up it arranged at expiry) handles it
                } else {
                    tracing::info!(run_id = %run_id, wake_at = meta.wake_at, status = %meta.status, "reconciler: resuming a run nothing woke");
                    report.resumed += 1;
                    self.timer.wake_at(&run_id, &meta.function_id, "reconcile", now).await.map_err(RunnerError::from)
                };
                if let Err(error) = handled {
                    tracing::warn!(run_id = %run_id, %error, "reconciler: could not handle a due run; next pass");
                    report.failed += 1;
                }
            }
        }
        Ok(report)
    }
}
