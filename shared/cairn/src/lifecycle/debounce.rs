//! Debounce at the edges of a run, for every driver (flow-control reference, section 4.5; the
//! window's rules are [`crate::flow::apply`]'s).
//!
//! ```text
//!   event --> rate limit spent with the window (refused: a skipped run)
//!         --> opens a window: placeholder run `queued` ("debounced until T"), timer at T
//!         --> or extends the open window (nothing else is written)
//!   T: the placeholder wakes --> not due yet: its "until" moves, timer at the new T
//!                            --> due: the window's run is admitted (singleton, cancel_on,
//!                                timeouts, concurrency as any new run; no second rate limit)
//!                                with the last event; the placeholder ends `skipped`:
//!                                "debounced: the window's run is `R`"
//! ```

use super::admission::Admitted;
use super::control::{ControlError, RunControl};
use super::transition;
use crate::bus::{Bus, Timer};
use crate::flow::{Claim, Debounce, DebounceChange, Debounced, FlowControl, fired_run};
use crate::id::RunId;
use crate::record::{Queued, RunMeta, RunStatus, SkipReason, Skipped};
use crate::store::{CreateRun, RunStore, StoreError};

/// How often superseding a placeholder re-reads a head that keeps moving.
const SUPERSEDE_ATTEMPTS: usize = 5;

/// What waking a debounce window's placeholder did.
#[derive(Debug, Clone, PartialEq)]
pub enum Fired {
    /// The window is not due: the placeholder sleeps until this time.
    Waiting(crate::record::Millis),
    /// The window's run was admitted (or had been, or flow control skipped it): drive it.
    Started(RunId),
}

impl<S: RunStore, B: Bus, T: Timer> RunControl<'_, S, B, T> {
    /// An event for a debounced function: spends its rate limit with the window, then opens a
    /// window (leaving the placeholder run) or joins the open one.
    pub(super) async fn debounce_event(
        &self,
        function_id: &str,
        flow: &FlowControl,
        debounce: &Debounce,
        meta: RunMeta,
    ) -> Result<Admitted, ControlError> {
        let (key, key_text) = debounce.window_key(function_id, &meta.event);
        let planned = match flow.claims(function_id, &meta.event) {
            Ok(planned) => planned,
            Err(skipped) => return self.skip(meta, skipped).await,
        };
        let bucket = planned.iter().find(|planned| matches!(planned.claim, Claim::Bucket { .. }));
        let mut keys = vec![key.as_str()];
        let mut limiter = None;
        if let Some(Claim::Bucket { key, limiter: bucket_limiter }) = bucket.map(|planned| &planned.claim) {
            keys.push(key);
            limiter = Some(*bucket_limiter);
        }
        let change = DebounceChange::Push {
            event: meta.event.clone(),
            rule: debounce.rule(),
            placeholder: meta.run_id.clone(),
            limiter,
        };
        match self.store.debounce(&keys, &change, self.now).await? {
            Debounced::Limited => {
                let skipped = bucket.map(|planned| planned.skipped(None)).unwrap_or_else(|| Skipped {
                    reason: SkipReason::RateLimit,
                    key: None,
                    by: None,
                    error: None,
                });
                self.skip(meta, skipped).await
            }
            Debounced::Opened { run_id, fire_at } => {
                let mut placeholder = transition::created(meta, self.now, self.durations);
                placeholder.status = RunStatus::Queued;
                placeholder.queued = Some(Queued {
                    option: "debounce".into(),
                    key: key_text,
                    position: 0,
                    until: Some(fire_at),
                    events: Some(1),
                });
                placeholder.wake_at = Some(fire_at);
                placeholder.debounce = Some(key);
                // A redelivery of the opening event finds its placeholder made.
                let placeholder = match self.store.create_run(placeholder).await? {
                    CreateRun::Created(meta) | CreateRun::Existing(meta) => meta,
                };
                self.timer.wake_at(&run_id, function_id, "debounce", fire_at).await?;
                tracing::info!(function = function_id, placeholder = %run_id, fire_at, "debounce window opened");
                Ok(Admitted::Debounced(placeholder.run_id))
            }
            Debounced::Extended { run_id, full, .. } => {
                if full {
                    // A full `all_events` window fires now rather than at its quiet time.
                    self.timer.wake_at(&run_id, function_id, "debounce-full", self.now).await?;
                }
                Ok(Admitted::Debounced(run_id))
            }
            Debounced::Ignored { run_id } => Ok(Admitted::Debounced(run_id)),
            other => Err(StoreError::Backend(format!("debounce push answered {other:?}")).into()),
        }
    }

    /// The placeholder of a debounce window woke (its timer, or the reconciler): if the window
    /// is due, admits its run with the last event and supersedes the placeholder; if not,
    /// moves the placeholder's "until" and re-arms its timer.
    ///
    /// # Errors
    /// The store or timer failed (the wake-up is retried: every step is idempotent).
    pub async fn fire_debounce(
        &self,
        function_id: &str,
        flow: &FlowControl,
        placeholder: &RunMeta,
    ) -> Result<Fired, ControlError> {
        let Some(key) = placeholder.debounce.as_deref() else {
            return Err(StoreError::Backend(format!("run `{}` is not a debounce window", placeholder.run_id)).into());
        };
        let take = DebounceChange::Take { run_id: placeholder.run_id.clone() };
        let (event, events) = match self.store.debounce(&[key], &take, self.now).await? {
            Debounced::NotYet { fire_at, count } => {
                self.extend_placeholder(placeholder, fire_at, count).await?;
                self.timer.wake_at(&placeholder.run_id, function_id, "debounce", fire_at).await?;
                return Ok(Fired::Waiting(fire_at));
            }
            Debounced::Due(window) => (window.event, window.events),
            // Fired before (the placeholder's end was not written), or the window was lost:
            // the run starts, once, with the placeholder's event.
            _ => (placeholder.event.clone(), Vec::new()),
        };
        let run_id = fired_run(&placeholder.run_id, function_id);
        let mut meta = RunMeta::new(run_id.clone(), function_id, event, self.now);
        meta.events = events;
        Box::pin(self.admit_without_limits(function_id, flow, meta)).await?;
        self.store.debounce(&[key], &DebounceChange::Finish { run_id: placeholder.run_id.clone() }, self.now).await?;
        self.supersede(placeholder, &run_id).await?;
        tracing::info!(function = function_id, placeholder = %placeholder.run_id, run_id = %run_id, "debounce window fired");
        Ok(Fired::Started(run_id))
    }

    /// The placeholder shows the window's new firing time and size.
    async fn extend_placeholder(
        &self,
        placeholder: &RunMeta,
        fire_at: crate::record::Millis,
        count: u32,
    ) -> Result<(), ControlError> {
        let mut meta = placeholder.clone();
        if let Some(queued) = meta.queued.as_mut() {
            queued.until = Some(fire_at);
            queued.events = Some(count);
        }
        meta.wake_at = Some(fire_at);
        meta.updated_at = self.now;
        match self.store.update_meta(&meta).await {
            // Another wake-up wrote it first: the window, not the head, is the truth.
            Ok(_) | Err(StoreError::Conflict { .. }) => Ok(()),
            Err(other) => Err(other.into()),
        }
    }

    /// The placeholder ends `skipped`, naming the window's run.
    async fn supersede(&self, placeholder: &RunMeta, run_id: &RunId) -> Result<(), ControlError> {
        let mut meta = placeholder.clone();
        for _ in 0..SUPERSEDE_ATTEMPTS {
            if meta.status != RunStatus::Queued {
                return Ok(());
            }
            let key = meta.queued.as_ref().and_then(|queued| queued.key.clone());
            let skipped = Skipped { reason: SkipReason::Debounce, key, by: Some(run_id.clone()), error: None };
            let mut ended = transition::skipped(meta.clone(), skipped, self.now, self.durations);
            ended.queued = None;
            match self.store.update_meta(&ended).await {
                Ok(_) => return Ok(()),
                Err(StoreError::Conflict { .. }) => {
                    meta = match self.store.load(&placeholder.run_id).await? {
                        Some(journal) => journal.meta,
                        None => return Ok(()),
                    };
                }
                Err(other) => return Err(other.into()),
            }
        }
        Err(ControlError::Contended(placeholder.run_id.clone()))
    }
}
