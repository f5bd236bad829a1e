//! What the engine does next when the workflow waits on its pending steps: permit a `run`,
//! complete a step whose time has come, or suspend with an [`Outcome`].

use super::{ExecutionPolicy, Outcome};
use crate::error::StepError;
use crate::id::StepId;
use crate::op::{Op, OpKind};
use crate::record::StepRecord;
use crate::state::ExecutionState;
use serde_json::Value;

pub(super) enum Pick {
    /// Let this `run` step execute.
    Permit(StepId),
    /// This step is over (a sleep that ended, a wait or invoke that timed out).
    Complete(StepRecord),
    /// Nothing can go on in process: report this.
    Suspend(Outcome),
    /// Nothing is pending yet.
    Nothing,
}

pub(super) fn pick(state: &ExecutionState, policy: &ExecutionPolicy) -> Pick {
    if state.ops().is_empty() {
        return Pick::Nothing;
    }
    let now = state.now();
    let only_one = state.ops().len() == 1;
    for op in state.ops().values() {
        let runnable = match &op.kind {
            OpKind::Run { .. } => true,
            OpKind::Retry { until, .. } => !op.replay_required && *until <= now,
            _ => false,
        };
        if runnable {
            let allowed = match policy {
                ExecutionPolicy::Eager => true,
                ExecutionPolicy::Lone => only_one,
                ExecutionPolicy::Plan => false,
                ExecutionPolicy::Target(id) => id == &op.id,
            };
            if allowed {
                return Pick::Permit(op.id.clone());
            }
            continue;
        }
        // A decision or a cancellation is recorded at once, persisted or not.
        match &op.kind {
            OpKind::Decide { output } => return Pick::Complete(op.completed_record(output.clone(), now)),
            OpKind::Cancelled { error, .. } => return Pick::Complete(op.failed_record(error.clone(), now)),
            _ => {}
        }
        if op.new {
            continue;
        }
        match &op.kind {
            OpKind::Sleep { until } if *until <= now => {
                return Pick::Complete(op.completed_record(Value::Null, now));
            }
            OpKind::WaitForEvent { timeout_at, .. } if *timeout_at <= now => {
                return Pick::Complete(op.completed_record(Value::Null, now));
            }
            OpKind::Invoke { timeout_at, .. } if *timeout_at <= now => {
                return Pick::Complete(op.failed_record(StepError::invoke_timeout(), now));
            }
            _ => {}
        }
    }
    let ops: Vec<Op> = state.ops().values().cloned().collect();
    if let [op] = ops.as_slice() {
        match op.kind {
            OpKind::Sleep { until } | OpKind::Retry { until, .. } => {
                return Pick::Suspend(Outcome::Sleeping { op: op.clone(), until });
            }
            OpKind::WaitForEvent { .. } => return Pick::Suspend(Outcome::Waiting { op: op.clone() }),
            _ => {}
        }
    }
    Pick::Suspend(Outcome::Planned(ops))
}
