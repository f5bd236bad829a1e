//! Driving a run: take its lease, replay and execute, commit each step as it completes, act on
//! each [`Outcome`], and suspend or finish through the lifecycle's transitions.

use super::lease::{Halt, Hold, Released};
use super::report::ended_at;
use super::{DRIVE_SEQUENCE, Decision, Drive, Progress, ProgressSink, Runner, RunnerError};
use crate::bus::{Bus, Timer};
use crate::engine::{Execution, ExecutionPolicy, Op, OpKind, Outcome};
use crate::flow::Slot;
use crate::id::RunId;
use crate::lifecycle::gate::{self, Turn};
use crate::lifecycle::transition;
use crate::record::{Millis, RunStatus};
use crate::step::millis;
use crate::store::{RunStore, StoreError};
use std::sync::atomic::Ordering;
use tracing::Instrument;

impl<S: RunStore, B: Bus, T: Timer> Runner<S, B, T> {
    /// Drives a run to its next suspension (or its end).
    ///
    /// # Errors
    /// Store, bus or timer failures; whatever was committed stays committed, and driving the run
    /// again resumes it.
    pub async fn drive(&self, run_id: &RunId) -> Result<Drive, RunnerError> {
        self.drive_until(run_id, self.clock.now() + millis(self.config.budget)).await
    }

    /// Drives a run like [`Runner::drive`], but stops starting new steps at `deadline` (ms since
    /// the epoch), e.g. the Lambda deadline minus a margin.
    ///
    /// # Errors
    /// As [`Runner::drive`].
    pub async fn drive_until(&self, run_id: &RunId, deadline: Millis) -> Result<Drive, RunnerError> {
        self.drive_observed(run_id, deadline, &|_| {}).await
    }

    /// Drives a run like [`Runner::drive_until`], reporting [`Progress`] to `progress` as steps
    /// complete and when the run suspends or ends.
    ///
    /// # Errors
    /// As [`Runner::drive`].
    pub async fn drive_observed(
        &self,
        run_id: &RunId,
        deadline: Millis,
        progress: ProgressSink<'_>,
    ) -> Result<Drive, RunnerError> {
        self.drive_with(run_id, deadline, progress, None).await
    }

    /// Drives a run through exactly one decision of its code, acted on as in any drive, then
    /// checkpoints as at a deadline (how [`TestRun`](crate::testing::TestRun) steps a run).
    /// Returns the decision too: `None` when the drive made none (a back-off not yet over).
    #[cfg(feature = "testing")]
    pub(crate) async fn drive_one_decision(&self, run_id: &RunId) -> Result<(Drive, Decision), RunnerError> {
        let mut decision = None;
        let deadline = self.clock.now() + millis(self.config.budget);
        let drive = self.drive_with(run_id, deadline, &|_| {}, Some(&mut decision)).await?;
        Ok((drive, decision))
    }

    /// Drives `run_id`; when it was a debounce window's placeholder that just fired, drives the
    /// window's run next (one after the other, so the stack never holds two drives).
    async fn drive_with(
        &self,
        run_id: &RunId,
        deadline: Millis,
        progress: ProgressSink<'_>,
        mut stepping: Option<&mut Decision>,
    ) -> Result<Drive, RunnerError> {
        let mut run_id = run_id.clone();
        loop {
            match self.drive_once(&run_id, deadline, progress, stepping.as_deref_mut()).await? {
                Ok(drive) => return Ok(drive),
                Err(fired) => run_id = fired,
            }
        }
    }

    /// One drive of `run_id`: its result, or the run a debounce placeholder's firing started.
    async fn drive_once(
        &self,
        run_id: &RunId,
        deadline: Millis,
        progress: ProgressSink<'_>,
        stepping: Option<&mut Decision>,
    ) -> Result<Result<Drive, RunId>, RunnerError> {
        let span = tracing::info_span!("run", run_id = %run_id, function = tracing::field::Empty, attempt = tracing::field::Empty);
        // Each drive is its own lease owner: two concurrent drives in one process exclude each
        // other exactly as two Lambda invocations do.
        let owner = format!("{}#{}", self.config.owner, DRIVE_SEQUENCE.fetch_add(1, Ordering::Relaxed));
        // Boxed: the run loop's state machine is deep, and callers nest it further (Lambda, HTTP).
        let mut held = None;
        let outcome =
            Box::pin(self.drive_inner(run_id, deadline, &owner, progress, stepping, &mut held)).instrument(span).await;
        // Concurrency slots are held while code executes: given back however the drive ended.
        if let Some((function_id, slots)) = held {
            self.give_back_slots(run_id, &function_id, &slots).await;
        }
        let drive = match outcome {
            Ok(drive) | Err(Halt::Stop(drive)) => drive,
            Err(Halt::Debounce(placeholder)) => match Box::pin(self.fire_window(&placeholder)).await? {
                Ok(drive) => drive,
                Err(fired) => return Ok(Err(fired)),
            },
            Err(Halt::Failed(error)) => {
                self.abandon(run_id, &owner).await;
                return Err(error);
            }
        };
        let run_id = run_id.clone();
        match &drive {
            Drive::Suspended { status, wake_at } => {
                progress(Progress::RunSuspended { run_id, status: *status, wake_at: *wake_at })
            }
            Drive::Continued => progress(Progress::RunContinued { run_id }),
            Drive::Completed(output) => progress(Progress::RunCompleted { run_id, output: output.clone() }),
            Drive::Failed(error) => progress(Progress::RunFailed { run_id, error: error.clone() }),
            Drive::Busy | Drive::AlreadyFinished(_) | Drive::NotRegistered(_) => {}
        }
        Ok(Ok(drive))
    }

    pub(super) async fn drive_inner(
        &self,
        run_id: &RunId,
        deadline: Millis,
        owner: &str,
        progress: ProgressSink<'_>,
        mut stepping: Option<&mut Decision>,
        held: &mut Option<(String, Vec<Slot>)>,
    ) -> Result<Drive, Halt> {
        let mut started = false;
        // Admitted by its throttle in this drive: a replay (a reload after a conflict) must not
        // spend a second token before the flag reaches the head.
        let mut throttle_passed = false;
        let mut conflicts = 0;
        'replay: loop {
            let journal = self.store.load(run_id).await?.ok_or_else(|| RunnerError::UnknownRun(run_id.clone()))?;
            let meta = journal.meta;
            if meta.status.is_finished() {
                if !meta.outbox.is_empty() {
                    // The drive that finished it died before delivering: deliver now.
                    self.deliver_outbox(meta.clone()).await?;
                }
                // Woken from a queue after it was cancelled there (a run that completed or
                // failed gave its slots back in its own drive): it leaves the queues, and the
                // next run is woken.
                if meta.status == RunStatus::Cancelled
                    && let Some(function) = self.registry.get(&meta.function_id)
                {
                    if !meta.throttle_passed
                        && let Some(throttle) =
                            function.flow().throttle_key(function.id(), &meta.event, meta.created_at)
                    {
                        self.store.leave_throttle(run_id, &throttle.key).await?;
                    }
                    let slots = function.flow().slots(function.id(), &meta.event, meta.created_at);
                    if !slots.is_empty() && held.is_none() {
                        *held = Some((function.id().to_string(), slots.into_iter().map(|(slot, _)| slot).collect()));
                    }
                }
                return Ok(Drive::AlreadyFinished(meta.status));
            }
            if self.registry.get(&meta.function_id).is_none() {
                // Another binary's run (a misrouted resume): leave it untouched for its owner.
                tracing::warn!(function = %meta.function_id, "run belongs to a function not registered here");
                return Ok(Drive::NotRegistered(meta.function_id));
            }
            if meta.status == RunStatus::Queued && meta.window_key.is_some() {
                return Err(Halt::Debounce(Box::new(meta)));
            }
            let now = self.clock.now();
            let mut hold = match &meta.lease {
                Some(lease) if lease.owner == owner => {
                    Hold { meta, owner: owner.to_string(), poked: false, finish_at: None, holds_slots: false }
                }
                Some(lease) if lease.expires_at > now => {
                    let until = lease.expires_at;
                    return Err(self.busy(&meta, until).await);
                }
                _ => match self.take_lease(meta, owner).await? {
                    Some(hold) => hold,
                    None if conflicts < 5 => {
                        conflicts += 1;
                        continue 'replay;
                    }
                    None => {
                        let lease_end = now + millis(self.config.lease);
                        let meta =
                            self.store.load(run_id).await?.ok_or_else(|| RunnerError::UnknownRun(run_id.clone()))?.meta;
                        return Err(self.busy(&meta, lease_end).await);
                    }
                },
            };
            tracing::Span::current()
                .record("function", hold.meta.function_id.as_str())
                .record("attempt", hold.meta.attempt);
            if !started {
                started = true;
                progress(Progress::RunStarted { run_id: run_id.clone(), function_id: hold.meta.function_id.clone() });
            }
            let function = self.registry.get(&hold.meta.function_id).cloned().expect("checked before taking the lease");
            // Timeouts (flow-control reference, 4.10): `start` until the first step starts,
            // `finish` from then on, checked before anything runs.
            let first_started = gate::first_started(&journal.steps);
            if let Some(because) = gate::start_overdue(function.flow(), &hold.meta, first_started, now) {
                return self.cancel_overdue(&hold, because).await;
            }
            hold.finish_at = gate::finish_at(function.flow(), first_started, now);
            if let Some(retry_at) = hold.meta.retry_at.filter(|at| *at > now) {
                if hold.finish_at.is_some_and(|at| now >= at) {
                    return self.cancel_overdue(&hold, gate::finish_reason(function.flow())).await;
                }
                match self.wait_until(&mut hold, retry_at, deadline, RunStatus::Sleeping, "retry").await? {
                    Some(drive) => return Ok(drive),
                    None => continue 'replay,
                }
            }
            // Throttle: a run starts when its key's limiter lets it, or waits in the key's queue
            // until its turn (once: its first step, or the head's flag, says it passed).
            // Boxed, as every store call inside the drive's loop: a DynamoDB call's future is large,
            // and a drive runs on a 2 MB stack in Lambda.
            let throttle = Box::pin(gate::throttle_turn(
                &self.store,
                function.id(),
                function.flow(),
                &hold.meta,
                first_started,
                throttle_passed,
                now,
            ))
            .await?;
            match throttle {
                Turn::Open => {}
                Turn::Passed(()) => throttle_passed = true,
                Turn::Queued { queued, wake_at } => {
                    hold.meta.queued = Some(queued);
                    match self.release(&mut hold, RunStatus::Queued, Some(wake_at)).await? {
                        Released::Done => {
                            self.timer.wake_at(run_id, function.id(), "throttle", wake_at).await?;
                            return Ok(Drive::Suspended { status: RunStatus::Queued, wake_at: Some(wake_at) });
                        }
                        Released::Replay => continue 'replay,
                    }
                }
            }
            hold.meta.throttle_passed |= throttle_passed;
            // Concurrency: a slot of every key before any code runs, or wait in the queue.
            if held.is_none() {
                let hold_until = deadline.max(now).saturating_add(millis(self.config.lease));
                let turn = Box::pin(gate::concurrency_turn(
                    &self.store,
                    function.id(),
                    function.flow(),
                    &hold.meta,
                    now,
                    hold_until,
                ));
                match turn.await? {
                    Turn::Open => {}
                    Turn::Passed(slots) => *held = Some((function.id().to_string(), slots)),
                    Turn::Queued { queued, wake_at } => {
                        hold.meta.queued = Some(queued);
                        match self.release(&mut hold, RunStatus::Queued, Some(wake_at)).await? {
                            Released::Done => {
                                return Ok(Drive::Suspended { status: RunStatus::Queued, wake_at: Some(wake_at) });
                            }
                            Released::Replay => continue 'replay,
                        }
                    }
                }
            }
            hold.holds_slots = held.is_some();
            // A window's run reads every event of its window (a batch, `all_events`).
            let events = match &hold.meta.window {
                Some(placeholder) => self.store.window_events(placeholder).await?,
                None => Vec::new(),
            };
            let mut execution =
                Execution::from_journal(&function, run_id.clone(), &hold.meta.event, journal.steps, hold.meta.attempt)
                    .with_events(events);
            #[cfg(feature = "testing")]
            for (name, result) in &self.step_mocks {
                execution.mock(name, result.clone());
            }
            loop {
                let now = self.clock.now();
                // Past the finish timeout, nothing new starts: the code may only report its end.
                let overdue = hold.finish_at.is_some_and(|at| now >= at);
                if overdue {
                    execution.set_policy(ExecutionPolicy::Plan);
                }
                let decided = stepping.as_ref().is_some_and(|decision| decision.is_some());
                if now >= deadline || decided {
                    // Checkpoint: the run is due now, for the fresh invocation the wake-up starts
                    // (or the reconciler, if that wake-up is lost).
                    match self.release(&mut hold, RunStatus::Running, Some(now)).await? {
                        Released::Done => {
                            self.timer.wake_at(run_id, &hold.meta.function_id, "continue", now).await?;
                            return Ok(Drive::Continued);
                        }
                        Released::Replay => continue 'replay,
                    }
                }
                let outcome = {
                    // A long step keeps the lease alive; if the run is lost meanwhile, stop.
                    let next = std::pin::pin!(execution.next(now));
                    let beat = std::pin::pin!(self.heartbeat(&mut hold));
                    match futures::future::select(next, beat).await {
                        futures::future::Either::Left((outcome, _)) => outcome,
                        futures::future::Either::Right((lost, _)) => return Err(lost),
                    }
                };
                let outcome = match outcome {
                    Ok(outcome) => ended_at(outcome, self.clock.now()),
                    Err(error) => {
                        if let Some(decision) = stepping.as_deref_mut() {
                            *decision = Some(Err(error.clone()));
                        }
                        return self.fail_determinism(hold, error).await;
                    }
                };
                if let Some(decision) = stepping.as_deref_mut() {
                    *decision = Some(Ok(outcome.clone()));
                }
                if overdue && !matches!(outcome, Outcome::Completed(_) | Outcome::Failed { retry_at: None, .. }) {
                    return self.cancel_overdue(&hold, gate::finish_reason(function.flow())).await;
                }
                match outcome {
                    Outcome::StepCompleted(record) | Outcome::StepFailed { record, retry_at: None } => {
                        let adopted = self.commit(&mut hold, record, progress).await?;
                        self.forget_timed_out_wait(&hold.meta.event, run_id, &adopted).await?;
                        execution.committed(adopted);
                    }
                    Outcome::StepFailed { record, retry_at: Some(retry_at) } => {
                        let adopted = self.commit(&mut hold, record, progress).await?;
                        if adopted.state.is_final() {
                            execution.committed(adopted);
                            continue;
                        }
                        match self.wait_until(&mut hold, retry_at, deadline, RunStatus::Sleeping, "retry").await? {
                            Some(drive) => return Ok(drive),
                            None => continue 'replay,
                        }
                    }
                    Outcome::Sleeping { op, until } => {
                        if let Some(record) = self.persist_scheduled(&mut hold, &op, progress).await?
                            && record.state.is_final()
                        {
                            execution.committed(record);
                            continue;
                        }
                        match self
                            .wait_until(&mut hold, until, deadline, RunStatus::Sleeping, &op.id.to_string())
                            .await?
                        {
                            Some(drive) => return Ok(drive),
                            None => continue 'replay,
                        }
                    }
                    Outcome::Waiting { op } => {
                        if self.handle_ops(&mut hold, std::slice::from_ref(&op), &mut execution, progress).await? {
                            continue; // an event received just before the wait matched it
                        }
                        match self.suspend(&mut hold, std::slice::from_ref(&op)).await? {
                            Some(drive) => return Ok(drive),
                            None => continue 'replay,
                        }
                    }
                    Outcome::Planned(ops) => {
                        if self.handle_ops(&mut hold, &ops, &mut execution, progress).await? {
                            continue;
                        }
                        let earliest = ops.iter().filter_map(Op::wake_at).min();
                        let waits_on_others =
                            ops.iter().any(|op| matches!(op.kind, OpKind::WaitForEvent { .. } | OpKind::Invoke { .. }));
                        let suspended = match earliest {
                            Some(at) if !waits_on_others => {
                                self.wait_until(&mut hold, at, deadline, RunStatus::Sleeping, "planned").await?
                            }
                            _ => self.suspend(&mut hold, &ops).await?,
                        };
                        match suspended {
                            Some(drive) => return Ok(drive),
                            None => continue 'replay,
                        }
                    }
                    Outcome::Completed(output) => return self.finish(hold, Ok(output)).await,
                    Outcome::Failed { error, retry_at: Some(retry_at) } => {
                        tracing::warn!(%error, "function failed, will retry");
                        self.keep_lease(&mut hold).await?;
                        let meta = transition::retrying(hold.meta.clone(), retry_at, now);
                        hold.meta = match self.store.update_meta(&meta).await {
                            Ok(stored) => stored,
                            Err(StoreError::Conflict { .. }) => continue 'replay,
                            Err(other) => return Err(other.into()),
                        };
                        match self.wait_until(&mut hold, retry_at, deadline, RunStatus::Sleeping, "retry").await? {
                            Some(drive) => return Ok(drive),
                            None => continue 'replay,
                        }
                    }
                    Outcome::Failed { error, retry_at: None } => return self.finish(hold, Err(error)).await,
                }
            }
        }
    }
}
