//! Ending a run: its result and outbox written in one head write, a timeout's cancellation, a
//! determinism failure, and giving concurrency slots back.

use super::lease::{Halt, Hold};
use super::{Drive, Runner};
use crate::bus::{Bus, Timer};
use crate::error::{EngineError, StepError};
use crate::flow::Slot;
use crate::id::RunId;
use crate::lifecycle::transition;
use crate::lifecycle::{ControlError, RunEnd};
use crate::record::RunStatus;
use crate::store::{RunStore, StoreError};
use serde_json::Value;

impl<S: RunStore, B: Bus, T: Timer> Runner<S, B, T> {
    /// Gives a drive's concurrency slots back and wakes the queued runs that now have room
    /// (best effort: a lost release lapses with the hold, a lost wake-up is found by the
    /// reconciler at the queued run's recheck).
    pub(super) async fn give_back_slots(&self, run_id: &RunId, function_id: &str, slots: &[Slot]) {
        let now = self.clock.now();
        match self.store.release_slots(run_id, slots, now).await {
            Ok(wake) => {
                for queued in wake.iter().filter(|queued| *queued != run_id) {
                    if let Err(error) = self.timer.wake_at(queued, function_id, "slot", now).await {
                        tracing::warn!(%error, run_id = %queued, "could not wake a queued run; the reconciler will");
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "could not give concurrency slots back; they lapse with the hold"),
        }
    }

    /// Ends a run a timeout caught, saying which (`because`).
    pub(super) async fn cancel_overdue(&self, hold: &Hold, because: String) -> Result<Drive, Halt> {
        tracing::info!(run_id = %hold.meta.run_id, because, "run timed out");
        match self.control().cancel_because(&hold.meta.run_id, Some(because)).await {
            Ok(_) | Err(ControlError::AlreadyEnded { .. }) => Ok(Drive::AlreadyFinished(RunStatus::Cancelled)),
            Err(other) => Err(Halt::Failed(other.into())),
        }
    }

    pub(super) async fn fail_determinism(&self, hold: Hold, error: EngineError) -> Result<Drive, Halt> {
        tracing::error!(%error, "the code no longer matches the run's journal");
        self.finish(hold, Err(error.to_step_error())).await
    }

    /// Ends the run: the head records the result and, in the same write, the events owed for it
    /// (its outbox), which are then delivered and acknowledged.
    pub(super) async fn finish(&self, mut hold: Hold, result: Result<Value, StepError>) -> Result<Drive, Halt> {
        self.keep_lease(&mut hold).await?;
        let now = self.clock.now();
        let mut result = result;
        let mut shrunk = false;
        // The head records the end and, in the same write, the events owed for it (its outbox).
        let stored = loop {
            let meta = transition::ended(hold.meta.clone(), &RunEnd::from(result.clone()), now, self.durations());
            match self.store.update_meta(&meta).await {
                Ok(stored) => break stored,
                Err(too_large @ StoreError::RunTooLarge { .. }) if !shrunk => {
                    // The run fails cleanly, naming the size, rather than never finishing.
                    tracing::error!(error = %too_large, "run result too large to store");
                    result = Err(StepError::non_retriable(too_large.to_string()));
                    shrunk = true;
                }
                // The head moved (a late wake-up): the run ends as decided, unless it is no longer
                // ours (cancelled, or taken over), which `reread` reports.
                Err(StoreError::Conflict { .. }) => self.reread(&mut hold).await?,
                Err(other) => return Err(other.into()),
            }
        };
        match &result {
            Ok(_) => tracing::info!("run completed"),
            Err(error) => tracing::error!(%error, "run failed"),
        }
        let run_id = stored.run_id.clone();
        self.deliver_outbox(stored).await?;
        if let Err(error) = self.timer.forget(&run_id).await {
            tracing::warn!(%error, "could not drop the ended run's pending wake-up; it will find the run ended");
        }
        Ok(match result {
            Ok(output) => Drive::Completed(output),
            Err(error) => Drive::Failed(error),
        })
    }
}
