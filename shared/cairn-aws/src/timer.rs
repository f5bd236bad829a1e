//! [`QueueTimer`]: wake-ups with one-second precision. Up to 15 minutes ahead, an SQS message
//! with a per-message delay on the function's own timer queue (its event source mapping
//! delivers it on time); further ahead, one EventBridge Scheduler schedule per run (Scheduler
//! fires only to the minute) set to fire ten minutes early, whose delivery re-arms the exact
//! time on the queue. The run's schedule is replaced by its next long wake-up and deleted when
//! the run ends. Messages are hints: a lost one is made good by the reconciler.

use crate::scheduler::SchedulerTimer;
use crate::wire::ControlMessage;
use aws_sdk_sqs::Client;
use cairn::{BusError, Millis, RunId, Timer};
use chrono::Utc;

/// The longest delay SQS holds a message (15 minutes).
pub const MAX_QUEUE_DELAY_MS: Millis = 900_000;
/// A long wake-up's schedule fires this much early and hands over to the queue.
pub const HANDOVER_MS: Millis = 600_000;

/// Where a function's wake-ups go.
#[derive(Clone, Debug)]
pub struct QueueTimer {
    sqs: Client,
    queue_url: String,
    long: SchedulerTimer,
}

impl QueueTimer {
    /// Wake-ups on `queue_url` (this function's timer queue), and through `long` (this
    /// function's Scheduler target) beyond 15 minutes.
    pub fn new(sqs: Client, queue_url: impl Into<String>, long: SchedulerTimer) -> Self {
        QueueTimer { sqs, queue_url: queue_url.into(), long }
    }

    /// The queue URL.
    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    /// The Scheduler timer for wake-ups beyond 15 minutes.
    pub fn long(&self) -> &SchedulerTimer {
        &self.long
    }

    /// Whole seconds to delay a message due at `at` (rounded up, so it never fires early).
    pub fn delay_seconds(at: Millis, now: Millis) -> i32 {
        let ms = (at - now).clamp(0, MAX_QUEUE_DELAY_MS);
        i32::try_from((ms + 999) / 1000).unwrap_or(900)
    }

    /// The message body: the resume payload the driver reads.
    pub fn message_body(run_id: &RunId, function_id: &str, at: Millis) -> String {
        ControlMessage::resume(function_id, run_id.clone()).at(at).to_string()
    }
}

impl Timer for QueueTimer {
    async fn wake_at(&self, run_id: &RunId, function_id: &str, key: &str, at: Millis) -> Result<(), BusError> {
        let now = Utc::now().timestamp_millis();
        if at - now > MAX_QUEUE_DELAY_MS {
            return self.long.replace_run_schedule(run_id, at - HANDOVER_MS).await;
        }
        let delay = Self::delay_seconds(at, now);
        self.sqs
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(Self::message_body(run_id, function_id, at))
            .delay_seconds(delay)
            .send()
            .await
            .map_err(|err| {
                let message = format!(
                    "SQS SendMessage to {} ({key}, {delay} s): {}",
                    self.queue_url,
                    aws_sdk_sqs::error::DisplayErrorContext(&err)
                );
                BusError::with_source(message, err)
            })?;
        Ok(())
    }

    async fn forget(&self, run_id: &RunId) -> Result<(), BusError> {
        self.long.delete_run_schedule(run_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_round_up_to_the_second_and_stay_within_sqs_limits() {
        let now = 1_000_000;
        assert_eq!(QueueTimer::delay_seconds(now + 2_000, now), 2);
        assert_eq!(QueueTimer::delay_seconds(now + 2_001, now), 3);
        assert_eq!(QueueTimer::delay_seconds(now - 5, now), 0);
        assert_eq!(QueueTimer::delay_seconds(now + 900_000, now), 900);
        assert_eq!(QueueTimer::delay_seconds(now + 5_000_000, now), 900);
    }
}
