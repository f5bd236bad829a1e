//! A pending wait as a store files it: the event it waits for and the key it is found by.

use crate::clock::Millis;
use crate::id::{RunId, StepId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A pending `wait_for_event` or `cancel_on` listener, found when a matching event arrives.
/// Build one with [`Wait::new`](crate::lifecycle::waits), which files it under its [`WaitKey`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Wait {
    /// The awaited event name.
    pub event: String,
    /// The waiting run.
    pub run_id: RunId,
    /// Its wait step.
    pub step_id: StepId,
    /// CEL condition over `event` (the trigger) and `async` (the candidate), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
    /// When the wait times out.
    pub timeout_at: Millis,
    /// When the wait was registered (events received since this minus the lookback still match).
    pub created_at: Millis,
    /// A `cancel_on` listener: a matching event cancels the run instead of resuming a step
    /// (`step_id` names the rule, `cancel-<n>`), and no event from before it was registered
    /// counts.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancels: bool,
    /// The value its condition requires at one field of the event (`async.data.id ==
    /// event.data.id` on a trigger with `data.id` 7 requires 7 at `data.id`): stores file the
    /// wait under it, so an event is compared only with the waits it could resume. `None` for
    /// the general form, matched by evaluating the condition against every such wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<WaitKey>,
    /// For the general form: the trigger's fields the condition reads, so the condition is
    /// evaluated without loading the run. `None` when it reads more (the run is then loaded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Value>,
}

/// Where a wait is filed: the dotted path of a field of the awaited event, and the canonical
/// text of the value that field must have (values CEL holds equal share a text: `7` and `7.0` are both `n:7`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WaitKey {
    /// E.g. `data.id`.
    pub path: String,
    /// E.g. `s:order-7` or `n:7`.
    pub value: String,
}
