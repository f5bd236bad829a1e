//! Event windows at the edges of a run, for every driver: debounce (flow-control reference,
//! section 4.5) and event batches (section 4.6). The window's rules are
//! [`crate::flow::apply`]'s.
//!
//! ```text
//!   event --> (batch: its `if` false or failing: a run of its own, at once)
//!         --> debounce: rate limit spent with the window (refused: a skipped run)
//!         --> opens a window: placeholder run `queued` ("debounced until T", "batch of N
//!             events until T"), timer at T
//!         --> or joins the open window (nothing else is written; a full batch is due now)
//!   T, or full: the placeholder wakes --> not due: its "until" moves, timer at the new T
//!                                     --> due: the window's run is admitted (singleton,
//!                                         cancel_on, timeouts, concurrency as any new run;
//!                                         no second rate limit) with the last event (debounce)
//!                                         or all of them (batch); the placeholder ends
//!                                         `skipped`: "debounced: the window's run is `R`"
//! ```

use super::admission::Admitted;
use super::control::{ControlError, RunControl};
use super::transition;
use crate::bus::{Bus, Timer};
use crate::event::EventPayload;
use crate::flow::{Claim, FlowControl, WindowChange, WindowRule, Windowed, fired_run};
use crate::id::RunId;
use crate::record::{Millis, Queued, RunMeta, RunStatus, SkipReason, Skipped};
use crate::store::{CreateRun, RunStore, StoreError};
use serde_json::Value;

/// How often superseding a placeholder re-reads a head that keeps moving.
const SUPERSEDE_ATTEMPTS: usize = 5;

/// What waking a window's placeholder did.
#[derive(Debug, Clone, PartialEq)]
pub enum Fired {
    /// The window is not due: the placeholder sleeps until this time.
    Waiting(Millis),
    /// The window's run was admitted (or had been, or flow control skipped it): drive it.
    Started(RunId),
}

impl<S: RunStore, B: Bus, T: Timer> RunControl<'_, S, B, T> {
    /// An event for a function with a window (debounce, batch): opens a window (leaving the
    /// placeholder run) or joins the open one; a batch's event its `if` excludes starts a run of
    /// its own.
    pub(super) async fn window_event(
        &self,
        function_id: &str,
        flow: &FlowControl,
        meta: RunMeta,
    ) -> Result<Admitted, ControlError> {
        let (key, key_text, rule, limiter, bucket) = if let Some(batch) = &flow.batch {
            if let Some(condition) = &batch.condition {
                let event = serde_json::to_value(&meta.event).unwrap_or(Value::Null);
                if !condition.compiled.matches(&event, &Value::Null).unwrap_or(false) {
                    return self.admit_run(function_id, flow, meta, true).await;
                }
            }
            match crate::flow::window_key("batch", function_id, batch.key.as_ref(), &meta.event) {
                Ok((key, text)) => (key, text, batch.rule(), None, None),
                Err(error) => {
                    let skipped = Skipped { reason: SkipReason::Batch, key: None, by: None, error: Some(error) };
                    return self.skip(meta, skipped).await;
                }
            }
        } else if let Some(debounce) = &flow.debounce {
            let (key, text) = crate::flow::window_key("debounce", function_id, debounce.key.as_ref(), &meta.event)
                .unwrap_or_else(|_| unreachable!("a debounce key that fails is the `<invalid>` window"));
            let planned = match flow.claims(function_id, &meta.event) {
                Ok(planned) => planned,
                Err(skipped) => return self.skip(meta, skipped).await,
            };
            let bucket = planned.into_iter().find(|planned| matches!(planned.claim, Claim::Bucket { .. }));
            let limiter = match bucket.as_ref().map(|planned| &planned.claim) {
                Some(Claim::Bucket { key, limiter }) => Some((key.clone(), *limiter)),
                _ => None,
            };
            (key, text, debounce.rule(), limiter, bucket)
        } else {
            return self.admit_run(function_id, flow, meta, true).await;
        };
        let bucket_key = limiter.as_ref().map(|(bucket_key, _)| bucket_key.clone());
        let mut keys = vec![key.as_str()];
        if let Some(bucket_key) = &bucket_key {
            keys.push(bucket_key);
        }
        let size = if rule.keeps_events() { serde_json::to_vec(&meta.event).map_or(0, |bytes| bytes.len()) } else { 0 };
        let change = WindowChange::Push {
            event: meta.event.clone(),
            size,
            rule,
            placeholder: meta.run_id.clone(),
            limiter: limiter.map(|(_, limiter)| limiter),
        };
        match self.store.window(&keys, &change, self.now).await? {
            Windowed::Limited => {
                let skipped = bucket.map(|planned| planned.skipped(None)).unwrap_or(Skipped {
                    reason: SkipReason::RateLimit,
                    key: None,
                    by: None,
                    error: None,
                });
                self.skip(meta, skipped).await
            }
            Windowed::Opened { run_id, fire_at, full } => {
                let mut placeholder = transition::created(meta, self.now, self.durations);
                placeholder.status = RunStatus::Queued;
                placeholder.queued = Some(Queued {
                    option: rule.option().into(),
                    key: key_text,
                    position: 0,
                    until: Some(fire_at),
                    events: Some(1),
                });
                placeholder.wake_at = Some(fire_at);
                placeholder.window_key = Some(key);
                // A redelivery of the opening event finds its placeholder made.
                let placeholder = match self.store.create_run(placeholder).await? {
                    CreateRun::Created(meta) | CreateRun::Existing(meta) => meta,
                };
                let at = if full { self.now } else { fire_at };
                self.timer.wake_at(&run_id, function_id, rule.option(), at).await?;
                tracing::info!(function = function_id, placeholder = %run_id, fire_at, "window opened");
                Ok(Admitted::Windowed { placeholder: placeholder.run_id, due: full })
            }
            Windowed::Joined { run_id, full, .. } => {
                if full {
                    // Fired now rather than at its time; the caller may drive it at once.
                    self.timer.wake_at(&run_id, function_id, "window-full", self.now).await?;
                }
                Ok(Admitted::Windowed { placeholder: run_id, due: full })
            }
            Windowed::Ignored { run_id } => Ok(Admitted::Windowed { placeholder: run_id, due: false }),
            other => Err(StoreError::Backend(format!("a window push answered {other:?}")).into()),
        }
    }

    /// The placeholder of a window woke (its timer, or the reconciler): if the window is due,
    /// admits its run and supersedes the placeholder; if not, moves the placeholder's "until"
    /// and re-arms its timer.
    ///
    /// # Errors
    /// The store or timer failed (the wake-up is retried: every step is idempotent).
    pub async fn fire_window(
        &self,
        function_id: &str,
        flow: &FlowControl,
        placeholder: &RunMeta,
    ) -> Result<Fired, ControlError> {
        let Some(key) = placeholder.window_key.as_deref() else {
            return Err(
                StoreError::Backend(format!("run `{}` is not a window's placeholder", placeholder.run_id)).into()
            );
        };
        let rule = match (&flow.batch, &flow.debounce) {
            (Some(batch), _) => batch.rule(),
            (None, Some(debounce)) => debounce.rule(),
            // The function lost its window option since: the run starts with what it has.
            (None, None) => WindowRule::Debounce { period: 0, timeout: None, keep_events: false },
        };
        let take = WindowChange::Take { run_id: placeholder.run_id.clone() };
        let (event, count) = match self.store.window(&[key], &take, self.now).await? {
            Windowed::NotYet { fire_at, count } => {
                self.extend_placeholder(placeholder, fire_at, count).await?;
                self.timer.wake_at(&placeholder.run_id, function_id, rule.option(), fire_at).await?;
                return Ok(Fired::Waiting(fire_at));
            }
            Windowed::Due(window) => (window.event, Some(window.count)),
            // Fired before (the placeholder's end was not written), or the window was lost:
            // the run starts, once, with the placeholder's event.
            _ => (placeholder.event.clone(), None),
        };
        let run_id = fired_run(&placeholder.run_id, function_id);
        let mut meta = RunMeta::new(run_id.clone(), function_id, event, self.now);
        meta.started_by = count.map(|count| {
            let plural = if count == 1 { "" } else { "s" };
            match rule {
                WindowRule::Debounce { .. } => format!("debounce window of {count} event{plural}"),
                WindowRule::Batch { .. } => format!("batch of {count} event{plural}"),
            }
        });
        if rule.keeps_events() {
            meta.window = Some(placeholder.run_id.clone());
            if let WindowRule::Batch { .. } = rule {
                // A batch's run is triggered by its first event.
                if let Some(first) = self.store.window_events(&placeholder.run_id).await?.into_iter().next() {
                    meta.event = first;
                }
            }
        }
        Box::pin(self.admit_without_limits(function_id, flow, meta)).await?;
        self.store.window(&[key], &WindowChange::Finish { run_id: placeholder.run_id.clone() }, self.now).await?;
        let reason = match rule {
            WindowRule::Debounce { .. } => SkipReason::Debounce,
            WindowRule::Batch { .. } => SkipReason::Batch,
        };
        self.supersede(placeholder, &run_id, reason).await?;
        tracing::info!(function = function_id, placeholder = %placeholder.run_id, run_id = %run_id, "window fired");
        Ok(Fired::Started(run_id))
    }

    /// The events the run `meta` was started with: a window's kept events, else its trigger.
    ///
    /// # Errors
    /// The store failed.
    pub async fn run_events(&self, meta: &RunMeta) -> Result<Vec<EventPayload>, ControlError> {
        match &meta.window {
            Some(placeholder) => Ok(self.store.window_events(placeholder).await?),
            None => Ok(vec![meta.event.clone()]),
        }
    }

    /// The placeholder shows the window's new firing time and size.
    async fn extend_placeholder(&self, placeholder: &RunMeta, fire_at: Millis, count: u32) -> Result<(), ControlError> {
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
    async fn supersede(&self, placeholder: &RunMeta, run_id: &RunId, reason: SkipReason) -> Result<(), ControlError> {
        let mut meta = placeholder.clone();
        for _ in 0..SUPERSEDE_ATTEMPTS {
            if meta.status != RunStatus::Queued {
                return Ok(());
            }
            let key = meta.queued.as_ref().and_then(|queued| queued.key.clone());
            let skipped = Skipped { reason, key, by: Some(run_id.clone()), error: None };
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
