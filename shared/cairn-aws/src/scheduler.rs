//! [`SchedulerTimer`]: wake-ups as one-time EventBridge Scheduler schedules (`at(...)`,
//! `ActionAfterCompletion: DELETE`) whose target is the function itself with a resume payload.
//! Wake-ups due now go through the bus instead (a `cairn/run.resume` event routed back to the
//! function), since a schedule fires only to the minute.

use crate::eventbridge::EventBridgeBus;
use aws_sdk_scheduler::Client;
use aws_sdk_scheduler::types::{ActionAfterCompletion, FlexibleTimeWindow, FlexibleTimeWindowMode, Target};
use cairn::{Bus, BusError, EventPayload, Millis, RunId, StepId, Timer};
use chrono::{TimeZone, Utc};
use serde_json::json;

/// The event that resumes a run at once.
pub const RESUME_EVENT: &str = "cairn/run.resume";

/// Where wake-ups go.
#[derive(Clone, Debug)]
pub struct SchedulerTimer {
    client: Client,
    group: String,
    target_arn: String,
    role_arn: String,
    function_id: String,
    bus: EventBridgeBus,
}

impl SchedulerTimer {
    /// Schedules in `group` invoking `target_arn` (this function, `function_id`) through
    /// `role_arn`; immediate wake-ups go to `bus` as `cairn/run.resume` events, which the rule of
    /// the run's function routes back to it.
    pub fn new(
        client: Client,
        group: impl Into<String>,
        target_arn: impl Into<String>,
        role_arn: impl Into<String>,
        function_id: impl Into<String>,
        bus: EventBridgeBus,
    ) -> Self {
        SchedulerTimer {
            client,
            group: group.into(),
            target_arn: target_arn.into(),
            role_arn: role_arn.into(),
            function_id: function_id.into(),
            bus,
        }
    }

    /// The schedule name for a wake-up: the same (run, key, time) always gives the same name,
    /// so a retried request schedules once (the second gets `ConflictException`).
    pub fn schedule_name(run_id: &RunId, key: &str, at: Millis) -> String {
        format!("cairn-{}", &StepId::hash(&format!("{run_id}/{key}/{at}")).to_string()[..40])
    }

    /// The `at(...)` expression for `at`, rounded up to the second, in UTC.
    pub fn at_expression(at: Millis) -> String {
        let seconds = (at + 999).div_euclid(1000);
        let time = Utc.timestamp_opt(seconds, 0).single().unwrap_or_default();
        format!("at({})", time.format("%Y-%m-%dT%H:%M:%S"))
    }

    /// The name of a run's one long wake-up schedule (see [`SchedulerTimer::replace_run_schedule`]).
    pub fn run_schedule_name(run_id: &RunId) -> String {
        format!("cairn-run-{}", &StepId::hash(run_id.as_str()).to_string()[..40])
    }

    /// Arms the run's one long wake-up schedule to fire at `at` (replacing an earlier one):
    /// its delivery drives the run, which re-arms the exact time on the timer queue.
    ///
    /// # Errors
    /// The Scheduler's error, naming the schedule.
    pub async fn replace_run_schedule(&self, run_id: &RunId, at: Millis) -> Result<(), BusError> {
        let name = Self::run_schedule_name(run_id);
        match self.create(&name, run_id, at).await {
            Err(err) if err.as_service_error().is_some_and(|e| e.is_conflict_exception()) => {
                self.delete_run_schedule(run_id).await?;
                self.create(&name, run_id, at).await.map(|_| ()).map_err(|err| {
                    BusError(format!("CreateSchedule {name}: {}", aws_sdk_scheduler::error::DisplayErrorContext(&err)))
                })
            }
            Err(err) => {
                Err(BusError(format!("CreateSchedule {name}: {}", aws_sdk_scheduler::error::DisplayErrorContext(&err))))
            }
            Ok(_) => Ok(()),
        }
    }

    /// Deletes the run's long wake-up schedule, if any (a run that ended, or whose next wake-up
    /// is short).
    ///
    /// # Errors
    /// The Scheduler's error other than "not found".
    pub async fn delete_run_schedule(&self, run_id: &RunId) -> Result<(), BusError> {
        let name = Self::run_schedule_name(run_id);
        match self.client.delete_schedule().name(&name).group_name(&self.group).send().await {
            Ok(_) => Ok(()),
            Err(err) if err.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => Ok(()),
            Err(err) => {
                Err(BusError(format!("DeleteSchedule {name}: {}", aws_sdk_scheduler::error::DisplayErrorContext(&err))))
            }
        }
    }

    async fn create(
        &self,
        name: &str,
        run_id: &RunId,
        at: Millis,
    ) -> Result<
        aws_sdk_scheduler::operation::create_schedule::CreateScheduleOutput,
        aws_sdk_scheduler::error::SdkError<aws_sdk_scheduler::operation::create_schedule::CreateScheduleError>,
    > {
        let window = FlexibleTimeWindow::builder().mode(FlexibleTimeWindowMode::Off).build().expect("mode is set");
        let target = Target::builder()
            .arn(&self.target_arn)
            .role_arn(&self.role_arn)
            .input(self.resume_payload(run_id).to_string())
            .build()
            .expect("arn and role are set");
        self.client
            .create_schedule()
            .name(name)
            .group_name(&self.group)
            .schedule_expression(Self::at_expression(at))
            .schedule_expression_timezone("UTC")
            .flexible_time_window(window)
            .action_after_completion(ActionAfterCompletion::Delete)
            .target(target)
            .send()
            .await
    }

    /// The payload the schedule delivers to the function.
    pub fn resume_payload(&self, run_id: &RunId) -> serde_json::Value {
        json!({"cairn": "resume", "function_id": self.function_id, "run_id": run_id})
    }
}

impl Timer for SchedulerTimer {
    async fn wake_at(&self, run_id: &RunId, function_id: &str, key: &str, at: Millis) -> Result<(), BusError> {
        let now = Utc::now().timestamp_millis();
        let name = Self::schedule_name(run_id, key, at);
        if at <= now + 1_000 {
            let data = json!({"cairn": "resume", "function_id": function_id, "run_id": run_id});
            let event = EventPayload::new(RESUME_EVENT, data).with_id(name).with_ts(now);
            self.bus.send(std::slice::from_ref(&event)).await?;
            return Ok(());
        }
        let window = FlexibleTimeWindow::builder()
            .mode(FlexibleTimeWindowMode::Off)
            .build()
            .map_err(|e| BusError(e.to_string()))?;
        let target = Target::builder()
            .arn(&self.target_arn)
            .role_arn(&self.role_arn)
            .input(self.resume_payload(run_id).to_string())
            .build()
            .map_err(|e| BusError(e.to_string()))?;
        let created = self
            .client
            .create_schedule()
            .name(&name)
            .group_name(&self.group)
            .schedule_expression(Self::at_expression(at))
            .schedule_expression_timezone("UTC")
            .flexible_time_window(window)
            .action_after_completion(ActionAfterCompletion::Delete)
            .target(target)
            .send()
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(err) if err.as_service_error().is_some_and(|e| e.is_conflict_exception()) => Ok(()),
            Err(err) => {
                Err(BusError(format!("CreateSchedule {name}: {}", aws_sdk_scheduler::error::DisplayErrorContext(&err))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_expressions_round_up_to_the_second_in_utc() {
        assert_eq!(SchedulerTimer::at_expression(1_795_392_000_000), "at(2026-11-23T00:00:00)");
        assert_eq!(SchedulerTimer::at_expression(1_795_392_000_001), "at(2026-11-23T00:00:01)");
    }

    #[test]
    fn schedule_names_are_stable_and_valid() {
        let run = RunId::new("run_abc");
        let name = SchedulerTimer::schedule_name(&run, "retry", 5);
        assert_eq!(name, SchedulerTimer::schedule_name(&run, "retry", 5));
        assert_ne!(name, SchedulerTimer::schedule_name(&run, "retry", 6));
        assert!(name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    }
}
