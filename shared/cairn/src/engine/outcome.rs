//! What an execution reports ([`Outcome`]) and which steps it may execute itself
//! ([`ExecutionPolicy`]).

use crate::error::StepError;
use crate::id::StepId;
use crate::op::Op;
use crate::record::{Millis, StepRecord};
use serde_json::Value;

/// Which discovered `run` steps the engine may execute itself.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum ExecutionPolicy {
    /// Execute every discovered `run` step, in code order, parallel groups included (the Runner
    /// and the Lambda driver).
    #[default]
    Eager,
    /// Execute a `run` step only when it is the only step discovered; plan otherwise (Inngest's
    /// immediate execution).
    Lone,
    /// Never execute: report every discovered step as planned.
    Plan,
    /// Execute exactly this step when the code reaches it (Inngest's targeted `stepId`).
    Target(StepId),
}

/// What the workflow needs next.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The function returned this output.
    Completed(Value),
    /// A step finished (a `run` that succeeded, a sleep that ended, a wait that timed out):
    /// commit the record, hand it to [`Execution::committed`](super::Execution::committed), call `next` again.
    StepCompleted(StepRecord),
    /// A `run` step failed. With `retry_at`, the record is `Retrying`: commit it and resume at
    /// that time with a fresh `Execution`. Without, it is final: commit it, hand it back and
    /// continue, as with `StepCompleted` (the code sees the error).
    StepFailed {
        /// The record to commit.
        record: StepRecord,
        /// When the next attempt may run.
        retry_at: Option<Millis>,
    },
    /// The only pending step is a sleep (or a retry back-off) until `until`.
    Sleeping {
        /// The op.
        op: Op,
        /// When to resume.
        until: Millis,
    },
    /// The only pending step waits for an event.
    Waiting {
        /// The op.
        op: Op,
    },
    /// Steps the driver must perform or schedule (events to send, functions to invoke, several
    /// parallel sleeps or waits, or runs the policy did not let the engine execute).
    Planned(Vec<Op>),
    /// The function failed outside any step (or let a step's error through).
    Failed {
        /// The error.
        error: StepError,
        /// When to retry the whole function; `None` when the failure is final.
        retry_at: Option<Millis>,
    },
}
