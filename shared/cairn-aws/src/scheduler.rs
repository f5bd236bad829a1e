//! [`SchedulerTimer`]: a run's long wake-up (more than 15 minutes ahead, beyond an SQS delay) as
//! one one-time EventBridge Scheduler schedule per run (`at(...)`, `ActionAfterCompletion:
//! DELETE`) whose target is the function itself with a resume payload. The [`QueueTimer`]
//! (crate::QueueTimer) arms it to fire early and deletes it when the run ends; the run then
//! re-arms its exact time on the timer queue, since a schedule fires only to the minute.

use crate::wire::ControlMessage;
use aws_sdk_scheduler::Client;
use aws_sdk_scheduler::error::DisplayErrorContext;
use aws_sdk_scheduler::types::{ActionAfterCompletion, FlexibleTimeWindow, FlexibleTimeWindowMode, Target};
use cairn::{BusError, Millis, RunId, StepId};
use chrono::{TimeZone, Utc};

/// The event that resumes a run at once (accepted by the driver; nothing sends it any more).
pub const RESUME_EVENT: &str = "cairn/run.resume";

/// A function's long wake-ups on the Scheduler.
#[derive(Clone, Debug)]
pub struct SchedulerTimer {
    client: Client,
    group: String,
    target_arn: String,
    role_arn: String,
    function_id: String,
    scope: String,
}

impl SchedulerTimer {
    /// Schedules in `group` invoking `target_arn` (this function, `function_id`) through
    /// `role_arn`.
    pub fn new(
        client: Client,
        group: impl Into<String>,
        target_arn: impl Into<String>,
        role_arn: impl Into<String>,
        function_id: impl Into<String>,
    ) -> Self {
        SchedulerTimer {
            client,
            group: group.into(),
            target_arn: target_arn.into(),
            role_arn: role_arn.into(),
            scope: "cairn".into(),
            function_id: function_id.into(),
        }
    }

    /// Names its schedules `<scope>.<hash of the run>` (default scope `cairn`): the template
    /// lets each function create and delete only schedules named after its own scope.
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = scope.into();
        self
    }

    /// The `at(...)` expression for `at`, rounded up to the second, in UTC. A time past the
    /// calendar's end (only a corrupt record holds one) is its last second, never 1970, which
    /// would fire at once and again on every re-arm.
    pub fn at_expression(at: Millis) -> String {
        let seconds = at.saturating_add(999).div_euclid(1000);
        let fallback = if at > 0 { chrono::DateTime::<Utc>::MAX_UTC } else { chrono::DateTime::UNIX_EPOCH };
        let time = Utc.timestamp_opt(seconds, 0).single().unwrap_or(fallback);
        format!("at({})", time.format("%Y-%m-%dT%H:%M:%S"))
    }

    /// The name of a run's one long wake-up schedule: `<scope>.` and as much of the run id's
    /// hash as fits in Scheduler's 64 characters (at least 20 hex digits).
    pub fn run_schedule_name(&self, run_id: &RunId) -> String {
        let hash = StepId::hash(run_id.as_str()).to_string();
        let room = 63usize.saturating_sub(self.scope.len()).clamp(20, 40);
        format!("{}.{}", self.scope, &hash[..room])
    }

    /// The payload the schedule delivers to the function.
    pub fn resume_payload(&self, run_id: &RunId) -> serde_json::Value {
        ControlMessage::resume(self.function_id.clone(), run_id.clone()).to_value()
    }

    /// Arms the run's one long wake-up schedule to fire at `at` (replacing an earlier one):
    /// its delivery drives the run, which re-arms the exact time on the timer queue.
    ///
    /// # Errors
    /// The Scheduler's error, naming the schedule.
    pub async fn replace_run_schedule(&self, run_id: &RunId, at: Millis) -> Result<(), BusError> {
        if !self.create(run_id, at).await? {
            self.delete_run_schedule(run_id).await?;
            if !self.create(run_id, at).await? {
                let name = self.run_schedule_name(run_id);
                return Err(BusError::new(format!("CreateSchedule {name}: it exists again right after its deletion")));
            }
        }
        Ok(())
    }

    /// Deletes the run's long wake-up schedule, if any (the run ended).
    ///
    /// # Errors
    /// The Scheduler's error other than "not found".
    pub async fn delete_run_schedule(&self, run_id: &RunId) -> Result<(), BusError> {
        let name = self.run_schedule_name(run_id);
        match self.client.delete_schedule().name(&name).group_name(&self.group).send().await {
            Ok(_) => Ok(()),
            Err(err) if err.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => Ok(()),
            Err(err) => {
                Err(BusError::with_source(format!("DeleteSchedule {name}: {}", DisplayErrorContext(&err)), err))
            }
        }
    }

    /// Creates the run's schedule; `false` when one already exists.
    async fn create(&self, run_id: &RunId, at: Millis) -> Result<bool, BusError> {
        let name = self.run_schedule_name(run_id);
        let window = FlexibleTimeWindow::builder()
            .mode(FlexibleTimeWindowMode::Off)
            .build()
            .map_err(|err| BusError::with_source(err.to_string(), err))?;
        let target = Target::builder()
            .arn(&self.target_arn)
            .role_arn(&self.role_arn)
            .input(self.resume_payload(run_id).to_string())
            .build()
            .map_err(|err| BusError::with_source(err.to_string(), err))?;
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
            Ok(_) => Ok(true),
            Err(err) if err.as_service_error().is_some_and(|e| e.is_conflict_exception()) => Ok(false),
            Err(err) => {
                Err(BusError::with_source(format!("CreateSchedule {name}: {}", DisplayErrorContext(&err)), err))
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
        // `at + 999` overflowed here; then the unrepresentable time became 1970.
        assert_eq!(SchedulerTimer::at_expression(i64::MAX), "at(+262142-12-31T23:59:59)");
        assert_eq!(SchedulerTimer::at_expression(i64::MIN), "at(1970-01-01T00:00:00)");
    }

    #[test]
    fn run_schedule_names_are_stable_valid_and_start_with_the_scope() {
        let aws = aws_sdk_scheduler::Config::builder()
            .behavior_version(aws_sdk_scheduler::config::BehaviorVersion::latest())
            .build();
        let timer =
            |scope: &str| SchedulerTimer::new(Client::from_conf(aws.clone()), "g", "arn", "role", "f").scope(scope);
        let run = RunId::new("run_abc");
        let hello = timer("hello");
        let name = hello.run_schedule_name(&run);
        assert_eq!(name, hello.run_schedule_name(&run));
        assert_eq!(name, format!("hello.{}", &StepId::hash("run_abc").as_str()[..40]));
        assert_ne!(name, hello.run_schedule_name(&RunId::new("run_abd")));
        let long = timer(&"s".repeat(crate::MAX_SCOPE_LEN)).run_schedule_name(&run);
        assert_eq!(long.len(), 64);
        for name in [name, long] {
            assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')), "{name}");
        }
    }
}
