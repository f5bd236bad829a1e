//! `cancel_on` listeners hearing an event, through the lifecycle's
//! [`RunControl::hear_cancel`](crate::lifecycle::RunControl::hear_cancel) (flow-control
//! reference, section 4.8): a matching event cancels the run, whatever it is doing.

use super::{Runner, RunnerError};
use crate::bus::{Bus, Timer};
use crate::event::EventPayload;
use crate::record::Wait;
use crate::store::RunStore;

impl<S: RunStore, B: Bus, T: Timer> Runner<S, B, T> {
    /// `listener` heard `event`: cancels its run if the rule's condition holds.
    pub(super) async fn hear_cancel(&self, listener: &Wait, event: &EventPayload) -> Result<(), RunnerError> {
        // Boxed, as admission is: a cancel inside event delivery's future.
        Ok(Box::pin(self.control().hear_cancel(listener, event)).await?)
    }
}
