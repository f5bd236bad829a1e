//! How a queued SQS message is delivered to its function, as Lambda's event source mapping
//! does: the invocation's cause, the receive count, and the failures the function reports.

use crate::template::SqsSource;
use serde_json::{Value, json};

/// The prefix of the invocations' cause: `sqs:<queue>`.
pub const CAUSE_PREFIX: &str = "sqs:";
/// Receives of a message that keeps failing, when its queue has no `RedrivePolicy` (SQS would
/// keep it until its retention period ends; the dev server gives up sooner).
pub const DEFAULT_MAX_RECEIVES: u32 = 10;

/// How a delivery of a queued message ended, for redelivery: `Some(reason)` when the function
/// reported the message failed (`batchItemFailures`, read only with `ReportBatchItemFailures`).
pub fn reported_failure(source: &SqsSource, response: &Value) -> Option<String> {
    if !source.report_batch_item_failures {
        return None;
    }
    let failures = response["batchItemFailures"].as_array().filter(|f| !f.is_empty())?;
    Some(format!("the function reported the message in batchItemFailures: {}", Value::Array(failures.clone())))
}

/// Sets the receive count of a delivery (the `attempts`-th receive) in Lambda's SQS event.
pub fn set_receive_count(payload: &mut Value, receives: u32) {
    if let Some(records) = payload["Records"].as_array_mut() {
        for record in records {
            record["attributes"]["ApproximateReceiveCount"] = json!(receives.to_string());
        }
    }
}
