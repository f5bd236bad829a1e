//! Flow control for Inngest-protocol apps' runs under `cairn dev -u`: the options an app syncs
//! (`concurrency`, `throttle`, `rateLimit`, `idempotency`, `priority`, `singleton`, `cancelOn`,
//! `timeouts`) enforced with the core's operations and rules, as the Runner enforces a Rust
//! function's: admission and `cancelOn` through [`RunControl`], slots and throttle queues in the
//! same store items, the same reasons on the dashboard.

use super::{AppFunction, INNGEST_PREFIX, InngestApps, MAX_WAKE_AT, Result, store_err};
use crate::devdb::Schedule;
use crate::host::{Host, HostBus};
use cairn::flow::{Acquired, Slot};
use cairn::lifecycle::gate::{self, Turn};
use cairn::lifecycle::transition::Durations;
use cairn::lifecycle::{ControlError, RunControl};
use cairn::{BusError, Millis, RunId, RunMeta, RunStatus, RunStore, RunnerConfig, StepRecord, Timer};
use cairn_aws::ControlMessage;
use std::sync::Arc;

pub(super) fn durations() -> Durations {
    RunnerConfig::default().durations()
}

/// Wakes an app's runs with one-time dev schedules that resume them.
pub(super) struct AppTimer<H>(pub Arc<H>);

impl<H: Host> Timer for AppTimer<H> {
    async fn wake_at(
        &self,
        run_id: &RunId,
        function_id: &str,
        _key: &str,
        at: Millis,
    ) -> std::result::Result<(), BusError> {
        schedule_resume(self.0.as_ref(), function_id, run_id, at).map_err(BusError::new)
    }

    async fn forget(&self, run_id: &RunId) -> std::result::Result<(), BusError> {
        self.0.db().delete_schedules_of_run(run_id.as_str()).map(|_| ()).map_err(BusError::new)
    }
}

/// A one-time dev schedule that resumes `run_id` at `at` (idempotent by name).
pub(super) fn schedule_resume<H: Host>(dev: &H, function_id: &str, run_id: &RunId, at: Millis) -> Result<()> {
    let at = at.min(MAX_WAKE_AT);
    dev.db().create_schedule(&Schedule {
        group_name: "inngest".into(),
        name: format!("{run_id}-{at}"),
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

/// The core's run operations over the dev server's store, bus and app timers, at now.
pub(super) struct AppControl<H> {
    dev: Arc<H>,
    bus: HostBus<H>,
    timer: AppTimer<H>,
}

impl<H: Host> AppControl<H> {
    pub(super) fn new(dev: &Arc<H>) -> Self {
        AppControl { dev: Arc::clone(dev), bus: HostBus(Arc::clone(dev)), timer: AppTimer(Arc::clone(dev)) }
    }

    pub(super) fn runs(&self) -> RunControl<'_, cairn_aws::AnyStore, HostBus<H>, AppTimer<H>> {
        RunControl::new(self.dev.store(), &self.bus, &self.timer, self.dev.now(), durations())
    }
}

pub(super) fn control_err(error: ControlError) -> String {
    error.to_string()
}

/// What the gates decided before the app is called.
pub(super) enum Gate {
    /// Call the app (holding `held`'s slots, if any).
    Call,
    /// The run stopped here: queued behind its throttle or concurrency key, or cancelled by a
    /// timeout.
    Stopped(RunStatus),
}

/// When the run's `timeouts.finish` passes: from its first step (or now, before one).
pub(super) fn finish_at(function: &AppFunction, steps: &[StepRecord], now: Millis) -> Option<Millis> {
    gate::finish_at(&function.flow, gate::first_started(steps), now)
}

impl InngestApps {
    /// The timeouts, checked whenever the run is driven, before anything else (the Runner's
    /// order): `timeouts.start` until the first step, then `timeouts.finish`. An overdue run is
    /// cancelled saying which.
    pub(super) async fn overdue<H: Host>(
        &self,
        dev: &Arc<H>,
        function: &AppFunction,
        meta: &mut RunMeta,
        steps: &[StepRecord],
    ) -> Result<Gate> {
        let now = dev.now();
        if let Some(because) = gate::start_overdue(&function.flow, meta, gate::first_started(steps), now) {
            return self.cancel_overdue(dev, meta, because).await;
        }
        if finish_at(function, steps, now).is_some_and(|at| now >= at) {
            return self.cancel_overdue(dev, meta, gate::finish_reason(&function.flow)).await;
        }
        Ok(Gate::Call)
    }

    /// The checks before the app is called: the throttle (once, before the first step), then a
    /// slot of every concurrency key, kept in `held` while the app is called (a hold lapses one
    /// minute after the longest call, should the dev server die).
    pub(super) async fn gate<H: Host>(
        &self,
        dev: &Arc<H>,
        function: &AppFunction,
        meta: &mut RunMeta,
        steps: &[StepRecord],
        held: &mut Vec<Slot>,
    ) -> Result<Gate> {
        let flow = &function.flow;
        if flow.is_empty() {
            return Ok(Gate::Call);
        }
        let now = dev.now();
        let store = dev.store();
        match gate::throttle_turn(store, &function.id, flow, meta, gate::first_started(steps), false, now)
            .await
            .map_err(store_err)?
        {
            Turn::Open => {}
            Turn::Passed(()) => meta.throttle_passed = true,
            Turn::Queued { queued, wake_at } => {
                meta.queued = Some(queued);
                return self.suspend(dev, meta, RunStatus::Queued, wake_at).await.map(Gate::Stopped);
            }
        }
        let hold_until = self.hold_until(now);
        match gate::concurrency_turn(store, &function.id, flow, meta, now, hold_until).await.map_err(store_err)? {
            Turn::Open => {}
            Turn::Passed(slots) => *held = slots,
            Turn::Queued { queued, wake_at } => {
                meta.queued = Some(queued);
                return self.suspend(dev, meta, RunStatus::Queued, wake_at).await.map(Gate::Stopped);
            }
        }
        Ok(Gate::Call)
    }

    /// When a slot taken now lapses if the dev server dies: one minute after the longest call.
    fn hold_until(&self, now: Millis) -> Millis {
        now.saturating_add(i64::try_from(self.timeout.as_millis()).unwrap_or(i64::MAX / 2) + 60_000)
    }

    /// Extends `held` slots before another call to the app, so a drive of many calls keeps
    /// them; `false` if a hold lapsed meanwhile and another run took the slot (the run then
    /// holds none and must queue again).
    pub(super) async fn renew_slots<H: Host>(
        &self,
        dev: &Arc<H>,
        run_id: &RunId,
        held: &mut Vec<Slot>,
    ) -> Result<bool> {
        if held.is_empty() {
            return Ok(true);
        }
        let now = dev.now();
        match dev.store().acquire_slots(run_id, held, now, self.hold_until(now)).await.map_err(store_err)? {
            Acquired::Granted => Ok(true),
            Acquired::Queued { .. } => {
                // Queued again by that try: nothing is held, nothing is given back.
                held.clear();
                Ok(false)
            }
        }
    }

    async fn cancel_overdue<H: Host>(&self, dev: &Arc<H>, meta: &mut RunMeta, because: String) -> Result<Gate> {
        let control = AppControl::new(dev);
        match control.runs().cancel_because(&meta.run_id, Some(because)).await {
            Ok(cancelled) => *meta = cancelled,
            Err(ControlError::AlreadyEnded { .. }) => {}
            Err(other) => return Err(control_err(other).into()),
        }
        Ok(Gate::Stopped(RunStatus::Cancelled))
    }

    /// Gives `held` slots back and wakes the runs queued for them.
    pub(super) async fn give_back<H: Host>(&self, dev: &Arc<H>, function_id: &str, run_id: &RunId, held: &[Slot]) {
        if held.is_empty() {
            return;
        }
        let now = dev.now();
        match dev.store().release_slots(run_id, held, now).await {
            Ok(wake) => {
                for queued in wake.iter().filter(|queued| *queued != run_id) {
                    // Woken as a run of its own function: a key of scope `env` or `account` is
                    // shared by several.
                    let owner = match dev.store().load(queued).await {
                        Ok(Some(journal)) => journal.meta.function_id,
                        _ => function_id.to_string(),
                    };
                    if !self.has_function(&owner) {
                        continue; // a Rust function's run: its queue's recheck wakes it
                    }
                    if let Err(error) = schedule_resume(dev.as_ref(), &owner, queued, now) {
                        tracing::warn!(%error, run_id = %queued, "could not wake a queued run; its recheck will");
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "could not give concurrency slots back; they lapse with the hold"),
        }
    }

    /// A run cancelled while queued leaves its throttle queue and its concurrency queues.
    pub(super) async fn leave_queues<H: Host>(&self, dev: &Arc<H>, function: &AppFunction, meta: &RunMeta) {
        if meta.status != RunStatus::Cancelled {
            return;
        }
        if !meta.throttle_passed
            && let Some(throttle) = function.flow.throttle_key(&function.id, &meta.event, meta.created_at)
            && let Err(error) = dev.store().leave_throttle(&meta.run_id, &throttle.key).await
        {
            tracing::warn!(%error, "could not leave the throttle queue");
        }
        let slots: Vec<Slot> =
            function.flow.slots(&function.id, &meta.event, meta.created_at).into_iter().map(|(slot, _)| slot).collect();
        self.give_back(dev, &function.id, &meta.run_id, &slots).await;
    }
}
