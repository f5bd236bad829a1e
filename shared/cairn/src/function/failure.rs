//! [`FailureData`]: what an `on_failure` handler receives.

use crate::error::StepError;
use crate::event::{EventData, EventPayload, FAILED_EVENT};
use serde::{Deserialize, Serialize};

/// The data of the `inngest/function.failed` event an `on_failure` handler receives.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailureData {
    /// The function whose run failed.
    pub function_id: String,
    /// The failed run.
    pub run_id: String,
    /// The event that started it. On the bus it carries no data (see [`EventPayload::summary`]);
    /// the runner fills in the full event from the failed run's head before the handler starts.
    pub event: EventPayload,
    /// The final error.
    pub error: StepError,
}

impl EventData for FailureData {
    const NAME: &'static str = FAILED_EVENT;
}
