//! The dev server as the [`Bus`] and [`Timer`] of the core's [`RunControl`], so the dashboard's
//! cancel, rerun and replay are the same operations as in production: events go through
//! PutEvents' path (logged, routed by the template and to the Inngest apps), wake-ups are queued
//! resumes of the function (a binary, or an Inngest app's function) that owns the run.

use crate::DevError;
use crate::dev::{Dev, INNGEST_PREFIX};
use crate::devdb::NewInvocation;
use crate::host::HostBus;
use cairn::lifecycle::RunControl;
use cairn::{BusError, Millis, RunId, RunnerConfig, Timer};
use cairn_aws::{AnyStore, ControlMessage};
use std::sync::Arc;

/// Sends events as the functions do: PutEvents on the stack's bus.
pub type DevBus = HostBus<Dev>;

/// Wakes runs through the dev server's queue, as a function's timer queue does in AWS.
#[derive(Clone, Debug)]
pub struct DevTimer(pub Arc<Dev>);

impl Timer for DevTimer {
    async fn wake_at(&self, run_id: &RunId, function_id: &str, key: &str, at: Millis) -> Result<(), BusError> {
        let due_at = (at > self.0.now()).then_some(at);
        queue_resume(&self.0, function_id, run_id, key, due_at).map_err(BusError::new)
    }

    async fn forget(&self, run_id: &RunId) -> Result<(), BusError> {
        self.0.db.delete_schedules_of_run(run_id.as_str()).map(|_| ()).map_err(BusError::new)
    }
}

/// Queues a resume of `run_id` on the function that owns it, due at `due_at` (now if `None`).
///
/// # Errors
/// No binary of the template and no Inngest app has `function_id`, or the queue could not be
/// written.
pub fn queue_resume(
    dev: &Dev,
    function_id: &str,
    run_id: &RunId,
    cause: &str,
    due_at: Option<Millis>,
) -> Result<(), DevError> {
    let target = if let Some(function) = dev.template.by_function_id(function_id) {
        function.binary.clone()
    } else if dev.inngest.has_function(function_id) {
        format!("{INNGEST_PREFIX}{function_id}")
    } else {
        return Err(format!("no function `{function_id}` in template.yaml or the Inngest apps").into());
    };
    dev.enqueue(NewInvocation {
        function: target,
        cause: cause.into(),
        event_id: None,
        payload: ControlMessage::resume(function_id, run_id.clone()).to_value(),
        due_at,
    })
}

/// The dev server's bus and timer, owned so a [`RunControl`] can borrow them.
#[derive(Clone, Debug)]
pub struct DevControl {
    dev: Arc<Dev>,
    bus: DevBus,
    timer: DevTimer,
}

impl DevControl {
    /// Operations on `dev`'s runs.
    pub fn new(dev: Arc<Dev>) -> Self {
        DevControl { bus: HostBus(Arc::clone(&dev)), timer: DevTimer(Arc::clone(&dev)), dev }
    }

    /// The core's operations, at the dev server's now.
    pub fn runs(&self) -> RunControl<'_, AnyStore, DevBus, DevTimer> {
        RunControl::new(&self.dev.store, &self.bus, &self.timer, self.dev.now(), RunnerConfig::default().durations())
    }
}
