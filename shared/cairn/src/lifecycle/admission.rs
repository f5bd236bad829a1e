//! Flow control at the edges of a run, for every driver (the Runner behind Lambda, `cairn dev`
//! and `TestRun`, and the dev server's executor for Inngest-protocol apps): a new run's
//! admission, and a `cancel_on` listener hearing an event.
//!
//! Admission registers the run's `cancel_on` listeners, writes its head with the claims its
//! function's options make (idempotency, rate limit, singleton) all or nothing, leaves a
//! `skipped` run saying why when one refuses, and arms the `timeouts.start` wake-up. A function
//! without such options just creates its run.

use super::control::{ControlError, RunControl};
use super::transition;
use crate::bus::{Bus, Timer};
use crate::event::EventPayload;
use crate::expr::MatchExpr;
use crate::flow::{Claim, FlowControl, SingletonMode};
use crate::record::{RunMeta, Skipped, Wait};
use crate::store::{Admission, CreateRun, RunStore};
use serde_json::Value;

/// How often a refused lock is retried after its holder gave way (it ended, or was cancelled).
const LOCK_ATTEMPTS: usize = 3;

/// What admitting a run did.
#[derive(Debug, Clone, PartialEq)]
pub enum Admitted {
    /// The run is new: drive it.
    Started(RunMeta),
    /// It existed (a duplicate delivery): drive it, it may not have finished.
    Existing(RunMeta),
    /// Flow control turned the event away: a `skipped` head records why.
    Skipped(RunMeta),
    /// The event opened or joined a window (debounce, batch): the window's placeholder run
    /// fires it; `due` when the window is full, so the placeholder may be driven now (else
    /// its timer drives it later).
    Windowed {
        /// The placeholder.
        placeholder: crate::id::RunId,
        /// Full: drive the placeholder now.
        due: bool,
    },
}

impl<S: RunStore, B: Bus, T: Timer> RunControl<'_, S, B, T> {
    /// Creates `meta`'s run of function `function_id` under its options `flow`.
    ///
    /// # Errors
    /// The store, or the timer of `timeouts.start`, failed.
    pub async fn admit(&self, function_id: &str, flow: &FlowControl, meta: RunMeta) -> Result<Admitted, ControlError> {
        if flow.debounce.is_some() || flow.batch.is_some() {
            return Box::pin(self.window_event(function_id, flow, meta)).await;
        }
        self.admit_run(function_id, flow, meta, true).await
    }

    /// Admits a window's run: as [`RunControl::admit`], but its events already passed the
    /// rate limit (or idempotency) when they arrived.
    pub(super) async fn admit_without_limits(
        &self,
        function_id: &str,
        flow: &FlowControl,
        meta: RunMeta,
    ) -> Result<Admitted, ControlError> {
        self.admit_run(function_id, flow, meta, false).await
    }

    pub(super) async fn admit_run(
        &self,
        function_id: &str,
        flow: &FlowControl,
        meta: RunMeta,
        limits: bool,
    ) -> Result<Admitted, ControlError> {
        let run_id = meta.run_id.clone();
        for listener in flow.cancel_listeners(&run_id, &meta.event, self.now) {
            self.store.put_wait(&listener).await?;
        }
        let admitted = self.admit_head(function_id, flow, meta, limits).await?;
        // Inngest arms no start timeout for a batch's run.
        if let (Admitted::Started(_), Some(start), None) = (&admitted, flow.start_timeout(), &flow.batch) {
            self.timer.wake_at(&run_id, function_id, "start-timeout", self.now.saturating_add(start)).await?;
        }
        Ok(admitted)
    }

    async fn admit_head(
        &self,
        function_id: &str,
        flow: &FlowControl,
        meta: RunMeta,
        limits: bool,
    ) -> Result<Admitted, ControlError> {
        let mut meta = transition::created(meta, self.now, self.durations);
        let mut planned = match flow.claims(function_id, &meta.event) {
            Ok(planned) => planned,
            Err(skipped) if limits => return self.skip(meta, skipped).await,
            Err(_) => Vec::new(),
        };
        if !limits {
            planned.retain(|planned| !matches!(planned.claim, Claim::Bucket { .. }));
        }
        if planned.is_empty() {
            return Ok(match self.store.create_run(meta).await? {
                CreateRun::Created(meta) => Admitted::Started(meta),
                CreateRun::Existing(meta) => Admitted::Existing(meta),
            });
        }
        meta.holds = planned
            .iter()
            .filter(|planned| matches!(planned.claim, Claim::Lock { .. }))
            .map(|planned| planned.claim.key().to_string())
            .collect();
        let mut claims: Vec<Claim> = planned.iter().map(|planned| planned.claim.clone()).collect();
        for _ in 0..LOCK_ATTEMPTS {
            let (refused, holder) = match self.store.admit_run(meta.clone(), &claims, self.now).await? {
                Admission::Created(meta) => return Ok(Admitted::Started(meta)),
                Admission::Existing(meta) => return Ok(Admitted::Existing(meta)),
                Admission::Refused { claim, holder } => (claim, holder),
            };
            let Some(holder) = holder else {
                return self.skip(meta, planned[refused].skipped(None)).await;
            };
            // The lock's holder gives way if it has ended (its release was lost) or, for a
            // singleton in cancel mode, once cancelled.
            let ended = self.store.load(&holder).await?.is_none_or(|journal| journal.meta.status.is_finished());
            let cancels = flow.singleton_mode() == Some(SingletonMode::Cancel);
            if !ended && !cancels {
                return self.skip(meta, planned[refused].skipped(Some(holder))).await;
            }
            if !ended {
                let because = format!("singleton: replaced by run `{}`", meta.run_id);
                // Boxed: a cancel's future is large (store, bus and timer calls), and admission
                // runs inside event delivery's own.
                match Box::pin(self.cancel_because(&holder, Some(because))).await {
                    Ok(_) | Err(ControlError::AlreadyEnded { .. } | ControlError::NotFound(_)) => {}
                    Err(other) => return Err(other),
                }
                tracing::info!(function = function_id, cancelled = %holder, by = %meta.run_id, "singleton: active run cancelled");
            }
            claims[refused] = Claim::Lock { key: claims[refused].key().to_string(), replaces: Some(holder) };
        }
        // Another new run took the lock each time: this one is skipped behind it.
        self.skip(meta, planned[planned.len() - 1].skipped(None)).await
    }

    pub(super) async fn skip(&self, meta: RunMeta, skipped: Skipped) -> Result<Admitted, ControlError> {
        tracing::info!(run_id = %meta.run_id, reason = skipped.reason.as_str(), "run skipped by flow control");
        let meta = transition::skipped(meta, skipped, self.now, self.durations);
        Ok(match self.store.create_run(meta).await? {
            CreateRun::Created(meta) => Admitted::Skipped(meta),
            CreateRun::Existing(meta) => Admitted::Existing(meta),
        })
    }

    /// `listener` (a `cancel_on` rule's wait) heard `event` (flow-control reference, section
    /// 4.8): cancels its run if the rule's condition holds, whatever the run is doing; the step
    /// in flight may finish, the run does not continue. A listener past its timeout, or of a
    /// run that has ended, is dropped. The run's own trigger, and an event sent at or before
    /// the run was created, never cancel it. Returns the head the cancellation replaced (the run
    /// as it was at that moment: whether an invocation held its lease), if the event cancelled it.
    ///
    /// # Errors
    /// The store, bus or timer failed (the event is delivered again).
    pub async fn hear_cancel(&self, listener: &Wait, event: &EventPayload) -> Result<Option<RunMeta>, ControlError> {
        let meta = match self.store.load(&listener.run_id).await? {
            Some(journal) if !journal.meta.status.is_finished() && self.now <= listener.timeout_at => journal.meta,
            _ => {
                self.store.remove_wait(listener).await?;
                return Ok(None);
            }
        };
        if meta.event.id == event.id || event.ts.unwrap_or(self.now) <= meta.created_at {
            return Ok(None);
        }
        if let Some(source) = &listener.expression {
            let trigger = serde_json::to_value(&meta.event).unwrap_or(Value::Null);
            let incoming = serde_json::to_value(event).unwrap_or(Value::Null);
            match MatchExpr::cached(source).and_then(|expr| expr.matches(&trigger, &incoming)) {
                Ok(true) => {}
                Ok(false) => return Ok(None),
                Err(error) => {
                    tracing::warn!(%error, run_id = %meta.run_id, "cancel_on condition failed; the run goes on");
                    return Ok(None);
                }
            }
        }
        let because = format!("cancel_on: event `{}` ({})", event.name, event.id.as_deref().unwrap_or("no id"));
        // Boxed, as in admission: this runs inside event delivery's future.
        let cancelled = match Box::pin(self.cancel_replacing(&meta.run_id, Some(because))).await {
            Ok((replaced, _)) => Some(replaced),
            Err(ControlError::AlreadyEnded { .. } | ControlError::NotFound(_)) => None,
            Err(other) => return Err(other),
        };
        self.store.remove_wait(listener).await?;
        Ok(cancelled)
    }
}
