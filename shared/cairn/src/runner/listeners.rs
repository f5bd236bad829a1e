//! `cancel_on` listeners hearing an event, through the lifecycle's
//! [`RunControl::hear_cancel`](crate::lifecycle::RunControl::hear_cancel) (flow-control
//! reference, section 4.8): a matching event cancels the run, whatever it is doing.

use super::{Runner, RunnerError};
use crate::bus::{Bus, Timer};
use crate::event::EventPayload;
use crate::id::RunId;
use crate::record::Wait;
use crate::store::RunStore;

impl<S: RunStore, B: Bus, T: Timer> Runner<S, B, T> {
    /// `listener` heard `event`: cancels its run if the rule's condition holds. Returns the run
    /// and its function if it cancelled a run no invocation was executing: a run being executed
    /// is reported by the invocation that finds it cancelled, so each cancel is counted once.
    pub(super) async fn hear_cancel(
        &self,
        listener: &Wait,
        event: &EventPayload,
    ) -> Result<Option<(RunId, String)>, RunnerError> {
        // Boxed, as admission is: a cancel inside event delivery's future.
        let cancelled = Box::pin(self.control().hear_cancel(listener, event)).await?;
        let now = self.clock.now();
        let idle = |meta: &crate::record::RunMeta| meta.lease.as_ref().is_none_or(|lease| lease.expires_at <= now);
        Ok(cancelled.filter(idle).map(|meta| (meta.run_id, meta.function_id)))
    }
}
