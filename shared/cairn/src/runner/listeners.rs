//! `cancel_on` listeners hearing an event (flow-control reference, section 4.8): a matching
//! event cancels the run, whatever it is doing; the step in flight may finish, the run does not
//! continue.

use super::{Runner, RunnerError};
use crate::bus::{Bus, Timer};
use crate::event::EventPayload;
use crate::expr::MatchExpr;
use crate::lifecycle::ControlError;
use crate::record::{Millis, Wait};
use crate::store::RunStore;
use serde_json::Value;

impl<S: RunStore, B: Bus, T: Timer> Runner<S, B, T> {
    /// `listener` heard `event`: cancels its run if the rule's condition holds. A listener past
    /// its timeout, or of a run that has ended, is dropped. The run's own trigger, and an event
    /// sent at or before the run was created, never cancel it.
    pub(super) async fn hear_cancel(
        &self,
        listener: &Wait,
        event: &EventPayload,
        now: Millis,
    ) -> Result<(), RunnerError> {
        let meta = match self.store.load(&listener.run_id).await? {
            Some(journal) if !journal.meta.status.is_finished() && now <= listener.timeout_at => journal.meta,
            _ => {
                self.store.remove_wait(listener).await?;
                return Ok(());
            }
        };
        if meta.event.id == event.id || event.ts.unwrap_or(now) <= meta.created_at {
            return Ok(());
        }
        if let Some(source) = &listener.expression {
            let trigger = serde_json::to_value(&meta.event).unwrap_or(Value::Null);
            let incoming = serde_json::to_value(event).unwrap_or(Value::Null);
            match MatchExpr::cached(source).and_then(|expr| expr.matches(&trigger, &incoming)) {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(error) => {
                    tracing::warn!(%error, run_id = %meta.run_id, "cancel_on condition failed; the run goes on");
                    return Ok(());
                }
            }
        }
        let because = format!("cancel_on: event `{}` ({})", event.name, event.id.as_deref().unwrap_or("no id"));
        match self.control().cancel_because(&meta.run_id, Some(because)).await {
            Ok(_) | Err(ControlError::AlreadyEnded { .. } | ControlError::NotFound(_)) => {}
            Err(other) => return Err(other.into()),
        }
        self.store.remove_wait(listener).await?;
        Ok(())
    }
}
