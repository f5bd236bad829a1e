//! A new run's admission, through the lifecycle's [`RunControl::admit`](crate::lifecycle::RunControl::admit)
//! (the rules every driver shares): the flow-control claims its function's options make are
//! written with its head, all or nothing; an event they turn away leaves a `skipped` run.

use super::{Runner, RunnerError};
use crate::bus::{Bus, Timer};
use crate::function::Function;
use crate::lifecycle::Admitted;
use crate::record::RunMeta;
use crate::store::RunStore;

impl<S: RunStore, B: Bus, T: Timer> Runner<S, B, T> {
    /// Creates `meta`'s run of `function` with the claims its options make.
    pub(crate) async fn admit(&self, function: &Function, meta: RunMeta) -> Result<Admitted, RunnerError> {
        // Boxed: the admission future (store, bus and timer calls, a singleton's cancel) is
        // large, and a 2 MB worker thread also holds event delivery's.
        Ok(Box::pin(self.control().admit(function.id(), function.flow(), meta)).await?)
    }
}
