//! A new run's admission, through the lifecycle's [`RunControl::admit`](crate::lifecycle::RunControl::admit)
//! (the rules every driver shares): the flow-control claims its function's options make are
//! written with its head, all or nothing; an event they turn away leaves a `skipped` run. And
//! a window's placeholder waking, through
//! [`RunControl::fire_window`](crate::lifecycle::RunControl::fire_window).

use super::{Drive, Runner, RunnerError};
use crate::bus::{Bus, Timer};
use crate::function::Function;
use crate::id::RunId;
use crate::lifecycle::{Admitted, Fired};
use crate::record::{RunMeta, RunStatus};
use crate::store::RunStore;

impl<S: RunStore, B: Bus, T: Timer> Runner<S, B, T> {
    /// Creates `meta`'s run of `function` with the claims its options make.
    pub(crate) async fn admit(&self, function: &Function, meta: RunMeta) -> Result<Admitted, RunnerError> {
        // Boxed: the admission future (store, bus and timer calls, a singleton's cancel) is
        // large, and a 2 MB worker thread also holds event delivery's.
        Ok(Box::pin(self.control().admit(function.id(), function.flow(), meta)).await?)
    }

    /// The placeholder of a window (debounce, batch) woke: it sleeps on if the window is not due
    /// (`Ok(Ok(drive))`), else the window's run is to be driven next (`Ok(Err(run))`).
    pub(super) async fn fire_window(&self, placeholder: &RunMeta) -> Result<Result<Drive, RunId>, RunnerError> {
        let Some(function) = self.registry.get(&placeholder.function_id) else {
            return Ok(Ok(Drive::NotRegistered(placeholder.function_id.clone())));
        };
        let fired = Box::pin(self.control().fire_window(function.id(), function.flow(), placeholder)).await?;
        Ok(match fired {
            Fired::Waiting(at) => Ok(Drive::Suspended { status: RunStatus::Queued, wake_at: Some(at) }),
            Fired::Started(run_id) => Err(run_id),
        })
    }
}
