//! Recovery with no human action: the outbox (events owed by a finished run, written with the
//! state that owes them and sent until acknowledged) and the reconciler, which finds through
//! the stores' `wake_at` index every run that needs a driver and got none (a holder that died,
//! a lost wake-up, an undelivered outbox) and wakes it. Messages are hints; the store is the
//! truth.

use super::{Runner, RunnerError};
use crate::bus::{Bus, Timer};
use crate::lifecycle;
use crate::record::RunMeta;
use crate::store::RunStore;

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
    /// Sends a finished run's outbox, then acknowledges it (see [`lifecycle::deliver_outbox`]).
    pub(super) async fn deliver_outbox(&self, meta: RunMeta) -> Result<(), RunnerError> {
        Ok(lifecycle::deliver_outbox(&self.store, &self.bus, meta).await?)
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
