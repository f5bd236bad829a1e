//! A new run's admission: the flow-control claims its function's options make (idempotency,
//! rate limit, singleton) are written with its head, all or nothing; an event they turn away
//! leaves a `skipped` run saying why. A function without such options just creates its run.

use super::{Runner, RunnerError};
use crate::bus::{Bus, Timer};
use crate::flow::{Claim, SingletonMode};
use crate::function::Function;
use crate::lifecycle::{ControlError, transition};
use crate::record::{Millis, RunMeta, Skipped};
use crate::store::{Admission, CreateRun, RunStore};

/// How often a refused lock is retried after its holder gave way (it ended, or was cancelled).
const LOCK_ATTEMPTS: usize = 3;

/// What admitting a run did.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Admitted {
    /// The run is new: drive it.
    Started(RunMeta),
    /// It existed (a duplicate delivery): drive it, it may not have finished.
    Existing(RunMeta),
    /// Flow control turned the event away: a `skipped` head records why.
    Skipped(RunMeta),
}

impl<S: RunStore, B: Bus, T: Timer> Runner<S, B, T> {
    /// Creates `meta`'s run of `function` with the claims its options make.
    pub(crate) async fn admit(&self, function: &Function, meta: RunMeta, now: Millis) -> Result<Admitted, RunnerError> {
        let run_id = meta.run_id.clone();
        for listener in function.flow().cancel_listeners(&run_id, &meta.event, now) {
            self.store.put_wait(&listener).await?;
        }
        let admitted = self.admit_head(function, meta, now).await?;
        if let (Admitted::Started(_), Some(start)) = (&admitted, function.flow().start_timeout()) {
            self.timer.wake_at(&run_id, function.id(), "start-timeout", now.saturating_add(start)).await?;
        }
        Ok(admitted)
    }

    async fn admit_head(&self, function: &Function, meta: RunMeta, now: Millis) -> Result<Admitted, RunnerError> {
        let mut meta = transition::created(meta, now, self.durations());
        let planned = match function.flow().claims(function.id(), &meta.event) {
            Ok(planned) => planned,
            Err(skipped) => return self.skip(meta, skipped, now).await,
        };
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
            let (refused, holder) = match self.store.admit_run(meta.clone(), &claims, now).await? {
                Admission::Created(meta) => return Ok(Admitted::Started(meta)),
                Admission::Existing(meta) => return Ok(Admitted::Existing(meta)),
                Admission::Refused { claim, holder } => (claim, holder),
            };
            let Some(holder) = holder else {
                return self.skip(meta, planned[refused].skipped(None), now).await;
            };
            // The lock's holder gives way if it has ended (its release was lost) or, for a
            // singleton in cancel mode, once cancelled.
            let ended = self.store.load(&holder).await?.is_none_or(|journal| journal.meta.status.is_finished());
            let cancels = function.flow().singleton_mode() == Some(SingletonMode::Cancel);
            if !ended && !cancels {
                return self.skip(meta, planned[refused].skipped(Some(holder)), now).await;
            }
            if !ended {
                let because = format!("singleton: replaced by run `{}`", meta.run_id);
                match self.control().cancel_because(&holder, Some(because)).await {
                    Ok(_) | Err(ControlError::AlreadyEnded { .. } | ControlError::NotFound(_)) => {}
                    Err(other) => return Err(other.into()),
                }
                tracing::info!(function = function.id(), cancelled = %holder, by = %meta.run_id, "singleton: active run cancelled");
            }
            claims[refused] = Claim::Lock { key: claims[refused].key().to_string(), replaces: Some(holder) };
        }
        // Another new run took the lock each time: this one is skipped behind it.
        self.skip(meta, planned[planned.len() - 1].skipped(None), now).await
    }

    async fn skip(&self, meta: RunMeta, skipped: Skipped, now: Millis) -> Result<Admitted, RunnerError> {
        tracing::info!(run_id = %meta.run_id, reason = skipped.reason.as_str(), "run skipped by flow control");
        let meta = transition::skipped(meta, skipped, now, self.durations());
        Ok(match self.store.create_run(meta).await? {
            CreateRun::Created(meta) => Admitted::Skipped(meta),
            CreateRun::Existing(meta) => Admitted::Existing(meta),
        })
    }
}
