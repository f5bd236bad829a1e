//! What a step asks of the driver: an [`Op`] (a `run` to execute, a sleep, a wait, events to
//! send, a function to invoke) and the records a driver persists for it.

use crate::error::StepError;
use crate::event::EventPayload;
use crate::id::StepId;
use crate::record::{Millis, StepKind, StepRecord, StepState};
use serde_json::{Value, json};

/// A step the code asked for that has no final record yet.
#[derive(Clone, Debug, PartialEq)]
pub struct Op {
    /// Hashed id.
    pub id: StepId,
    /// Name as written.
    pub name: String,
    /// Order of the call in the code.
    pub position: u32,
    /// What it needs.
    pub kind: OpKind,
    /// Not in the journal yet: persist [`Op::scheduled_record`] (for timers, waits and invokes)
    /// before suspending.
    pub new: bool,
    /// When the code asked for it.
    pub discovered_at: Millis,
    /// A retry back-off committed in this execution: the attempt runs on the next replay.
    pub(crate) replay_required: bool,
}

/// What an [`Op`] needs from the driver.
#[derive(Clone, Debug, PartialEq)]
pub enum OpKind {
    /// A `run` step to execute.
    Run {
        /// Attempts made before.
        attempts_made: u32,
    },
    /// A `run` step waiting out its retry back-off.
    Retry {
        /// When it may be attempted again.
        until: Millis,
        /// Attempts made before.
        attempts_made: u32,
    },
    /// A sleep.
    Sleep {
        /// When it ends.
        until: Millis,
    },
    /// A wait for an event.
    WaitForEvent {
        /// Awaited event name.
        event: String,
        /// CEL condition over `event` and `async`.
        expression: Option<String>,
        /// When it gives up.
        timeout_at: Millis,
    },
    /// Events to send (ids already assigned).
    SendEvent {
        /// The events.
        events: Vec<EventPayload>,
    },
    /// Another function to start and wait for.
    Invoke {
        /// Its id.
        function_id: String,
        /// Its event data.
        data: Value,
        /// When the invoke step fails with a timeout.
        timeout_at: Millis,
    },
    /// A decision the code made (a race's winner): completed at once with `output`, so a
    /// replay finds it recorded.
    Decide {
        /// The recorded output.
        output: Value,
    },
    /// A step of kind `kind` the code gave up on (a race's losing branch): recorded failed
    /// with `error` at once; it never runs, and a sleep or wait stops waiting.
    Cancelled {
        /// The step's kind, as begun.
        kind: StepKind,
        /// Why (`StepCancelledError`).
        error: StepError,
    },
}

impl Op {
    /// The step kind of this op.
    pub fn step_kind(&self) -> StepKind {
        match self.kind {
            OpKind::Run { .. } | OpKind::Retry { .. } | OpKind::Decide { .. } => StepKind::Run,
            OpKind::Sleep { .. } => StepKind::Sleep,
            OpKind::WaitForEvent { .. } => StepKind::WaitForEvent,
            OpKind::SendEvent { .. } => StepKind::SendEvent,
            OpKind::Invoke { .. } => StepKind::Invoke,
            OpKind::Cancelled { kind, .. } => kind,
        }
    }

    /// When the run must be woken for this op, if it is time-bound.
    pub fn wake_at(&self) -> Option<Millis> {
        match &self.kind {
            OpKind::Retry { until, .. } | OpKind::Sleep { until } => Some(*until),
            OpKind::WaitForEvent { timeout_at, .. } | OpKind::Invoke { timeout_at, .. } => Some(*timeout_at),
            OpKind::Run { .. } | OpKind::SendEvent { .. } | OpKind::Decide { .. } | OpKind::Cancelled { .. } => None,
        }
    }

    /// What a record of this op keeps beside its state: the awaited event or the invoked call.
    fn detail(&self) -> Option<Value> {
        match &self.kind {
            OpKind::WaitForEvent { event, expression, .. } if event == crate::event::SIGNAL_EVENT => {
                // The dashboard offers to send the signal a waiting run waits for.
                let signal = expression
                    .as_deref()
                    .and_then(|source| crate::expr::MatchExpr::cached(source).ok())
                    .and_then(|expr| expr.equality(&Value::Null))
                    .map(|(_, signal)| signal);
                Some(json!({"event": event, "if": expression, "signal": signal}))
            }
            OpKind::WaitForEvent { event, expression, .. } => Some(json!({"event": event, "if": expression})),
            OpKind::Invoke { function_id, data, .. } => Some(json!({"function_id": function_id, "data": data})),
            _ => None,
        }
    }

    /// The `Scheduled` record a driver persists for a new sleep, wait or invoke.
    pub fn scheduled_record(&self) -> Option<StepRecord> {
        if !matches!(self.kind, OpKind::Sleep { .. } | OpKind::WaitForEvent { .. } | OpKind::Invoke { .. }) {
            return None;
        }
        Some(StepRecord {
            id: self.id.clone(),
            name: self.name.clone(),
            kind: self.step_kind(),
            position: self.position,
            state: StepState::Scheduled { wake_at: self.wake_at()? },
            attempts: 0,
            started_at: self.discovered_at,
            ended_at: None,
            detail: self.detail(),
        })
    }

    /// The final record of this op with `output` (a sent event's ids, a received event, an
    /// invoked function's result).
    pub fn completed_record(&self, output: Value, now: Millis) -> StepRecord {
        self.final_record(StepState::Completed { output }, now)
    }

    /// The final record of this op failing with `error`.
    pub fn failed_record(&self, error: StepError, now: Millis) -> StepRecord {
        self.final_record(StepState::Failed { error }, now)
    }

    fn final_record(&self, state: StepState, now: Millis) -> StepRecord {
        StepRecord {
            id: self.id.clone(),
            name: self.name.clone(),
            kind: self.step_kind(),
            position: self.position,
            state,
            attempts: 1,
            started_at: self.discovered_at,
            ended_at: Some(now),
            detail: self.detail(),
        }
    }
}
