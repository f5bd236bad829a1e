//! Acting on what a decision asks for: commit each completed step inside the lease, arm the
//! timer for sleeps and scheduled retries, register waits (and withdraw them), and suspend a
//! run that waits.

use super::lease::{Halt, Hold, Released};
use super::{Drive, Progress, ProgressSink, Runner, RunnerError};
use crate::bus::{Bus, Timer};
use crate::engine::{Execution, Op, OpKind};
use crate::error::StepError;
use crate::event::EventPayload;
use crate::id::RunId;
use crate::lifecycle::invoke::invoke_event;
use crate::lifecycle::waits::{Registered, register_wait, signal_of};
use crate::record::{Millis, RunStatus, StepRecord, StepState, Wait};
use crate::step::millis;
use crate::store::{Commit, RunStore, StoreError};
use serde_json::json;

impl<S: RunStore, B: Bus, T: Timer> Runner<S, B, T> {
    /// Commits a step record while holding the lease (the fence: a drive that lost its run
    /// stops here, without writing); returns the record now stored (ours, or the winner's).
    pub(super) async fn commit(
        &self,
        hold: &mut Hold,
        record: StepRecord,
        progress: ProgressSink<'_>,
    ) -> Result<StepRecord, Halt> {
        self.keep_lease(hold).await?;
        let run_id = hold.meta.run_id.clone();
        let (record, commit) = match self.store.commit_step(&run_id, &record).await {
            Err(too_large @ StoreError::TooLarge { .. }) => {
                // No retry can shrink the output: the step fails for good, with the reason.
                let mut failed = record;
                failed.state = StepState::Failed { error: StepError::non_retriable(too_large.to_string()) };
                let commit = self.store.commit_step(&run_id, &failed).await?;
                (failed, commit)
            }
            other => (record, other?),
        };
        let stored = match commit {
            Commit::Committed => record,
            Commit::Existing(winner) => {
                tracing::debug!(step.id = %winner.id, "step already committed by another invocation; adopting its result");
                *winner
            }
        };
        let state = match &stored.state {
            StepState::Completed { .. } => "completed",
            StepState::Failed { .. } => "failed",
            StepState::Retrying { .. } => "retrying",
            StepState::Scheduled { .. } => return Ok(stored),
        };
        progress(Progress::StepCompleted {
            run_id,
            step_id: stored.id.clone(),
            name: stored.name.clone(),
            kind: stored.kind.to_string(),
            state: state.to_string(),
            attempts: stored.attempts,
            duration_ms: stored.ended_at.map(|ended| ended.saturating_sub(stored.started_at)),
        });
        Ok(stored)
    }

    /// Records a new sleep, wait or invoke as scheduled; returns what is stored (a final record
    /// if someone resolved the step first).
    pub(super) async fn persist_scheduled(
        &self,
        hold: &mut Hold,
        op: &Op,
        progress: ProgressSink<'_>,
    ) -> Result<Option<StepRecord>, Halt> {
        match op.scheduled_record() {
            Some(record) if op.new => Ok(Some(self.commit(hold, record, progress).await?)),
            _ => Ok(None),
        }
    }

    /// A wait that timed out leaves its registration behind; remove it.
    pub(super) async fn forget_timed_out_wait(
        &self,
        trigger: &EventPayload,
        run_id: &RunId,
        record: &StepRecord,
    ) -> Result<(), RunnerError> {
        if let Some(wait) = Wait::of_step(trigger, run_id, record) {
            self.store.remove_wait(&wait).await?;
        }
        Ok(())
    }

    /// Performs what the driver owes planned ops; `true` if a step was committed (so the
    /// execution can go on at once).
    pub(super) async fn handle_ops(
        &self,
        hold: &mut Hold,
        ops: &[Op],
        execution: &mut Execution,
        progress: ProgressSink<'_>,
    ) -> Result<bool, Halt> {
        let now = self.clock.now();
        let run_id = hold.meta.run_id.clone();
        let mut progressed = false;
        for op in ops {
            match &op.kind {
                OpKind::SendEvent { events } => {
                    let ids = self.bus.send(events).await?;
                    let adopted = self.commit(hold, op.completed_record(json!({ "ids": ids }), now), progress).await?;
                    execution.committed(adopted);
                    progressed = true;
                }
                OpKind::WaitForEvent { event, expression, timeout_at } => {
                    // Registered on every pass, not only the first: a crash between the
                    // scheduled record and the wait must not leave the run deaf (idempotent).
                    if let Some(record) = self.persist_scheduled(hold, op, progress).await?
                        && record.state.is_final()
                    {
                        execution.committed(record);
                        progressed = true;
                        continue;
                    }
                    let wait =
                        Wait::new(event, &run_id, &op.id, expression.clone(), &hold.meta.event, *timeout_at, now);
                    if let Registered::Conflict(error) =
                        Box::pin(register_wait(&self.store, &wait, &op.name, false)).await?
                    {
                        let adopted = self.commit(hold, op.failed_record(error, now), progress).await?;
                        execution.committed(adopted);
                        progressed = true;
                        continue;
                    }
                    // A signal goes to the run waiting for it when it is sent, or to none (as
                    // Inngest's): it is not looked back for, so it is never delivered twice.
                    if !self.config.wait_lookback.is_zero() && signal_of(&wait).is_none() {
                        let since = now - millis(self.config.wait_lookback);
                        for earlier in self.store.events_since(event, since).await? {
                            self.keep_lease(hold).await?;
                            if let Some(record) = self.resolve_wait(&wait, &earlier, now, false).await? {
                                tracing::info!(step.id = %op.id, "wait matched an event received before it began");
                                execution.committed(record);
                                progressed = true;
                                break;
                            }
                        }
                    }
                }
                OpKind::Invoke { function_id, data, .. } => {
                    // Sent again on later passes for the same reason; the event id (so the
                    // child run) is derived from the step, so a resend starts nothing new.
                    if let Some(record) = self.persist_scheduled(hold, op, progress).await?
                        && record.state.is_final()
                    {
                        execution.committed(record);
                        progressed = true;
                        continue;
                    }
                    let event = invoke_event(&run_id, &hold.meta.function_id, &op.id, function_id, data, now);
                    self.bus.send(std::slice::from_ref(&event)).await?;
                }
                OpKind::Sleep { .. } => {
                    if let Some(record) = self.persist_scheduled(hold, op, progress).await?
                        && record.state.is_final()
                    {
                        execution.committed(record);
                        progressed = true;
                    }
                }
                _ => {}
            }
        }
        Ok(progressed)
    }

    /// Sleeps in process when `until` is near and within the budget (`None`: replay now), or
    /// gives the run up (due at `until`) and then arms the timer.
    pub(super) async fn wait_until(
        &self,
        hold: &mut Hold,
        until: Millis,
        deadline: Millis,
        status: RunStatus,
        key: &str,
    ) -> Result<Option<Drive>, Halt> {
        let now = self.clock.now();
        // Woken at the finish timeout at the latest, to be cancelled then.
        let until = hold.finish_at.map_or(until, |finish_at| until.min(finish_at));
        if until <= now {
            return Ok(None);
        }
        // A run holding concurrency slots never sleeps in process: sleeping holds no slot.
        if until - now <= millis(self.config.sleep_threshold) && until < deadline && !hold.holds_slots {
            // Held through the sleep: renew first if the lease would lapse meanwhile.
            if hold.meta.lease.as_ref().is_some_and(|lease| lease.expires_at < until + millis(self.config.lease) / 2) {
                self.keep_lease(hold).await?;
            }
            self.clock.sleep_until(until).await;
            return Ok(None);
        }
        match self.release(hold, status, Some(until)).await? {
            Released::Replay => Ok(None),
            Released::Done => {
                self.timer.wake_at(&hold.meta.run_id, &hold.meta.function_id, key, until).await?;
                Ok(Some(Drive::Suspended { status, wake_at: Some(until) }))
            }
        }
    }

    /// Gives a waiting run up (due at its earliest timeout), then arms the timer for it.
    /// `None`: the run was woken meanwhile, replay it.
    pub(super) async fn suspend(&self, hold: &mut Hold, ops: &[Op]) -> Result<Option<Drive>, Halt> {
        let wake_at = ops.iter().filter_map(Op::wake_at).chain(hold.finish_at).min();
        match self.release(hold, RunStatus::Waiting, wake_at).await? {
            Released::Replay => Ok(None),
            Released::Done => {
                if let Some(at) = wake_at {
                    self.timer.wake_at(&hold.meta.run_id, &hold.meta.function_id, "timeout", at).await?;
                }
                Ok(Some(Drive::Suspended { status: RunStatus::Waiting, wake_at }))
            }
        }
    }
}
