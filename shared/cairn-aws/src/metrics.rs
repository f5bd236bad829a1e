//! Per-function metrics in CloudWatch Embedded Metric Format (EMF): one JSON line on stdout per
//! event, which CloudWatch Logs turns into metrics in the `Cairn` namespace with the dimension
//! `FunctionName` (the Cairn function id), no API call and no agent. The lines are also plain
//! log records, so Logs Insights can query them (`RunId`, `StepName` ride along as properties).
//!
//! Spec: <https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>
//!
//! | Metric | Unit | When |
//! |---|---|---|
//! | `RunsStarted` | Count | an event (or an invoke) created a run (duplicate deliveries do not) |
//! | `RunsCompleted` | Count | a run ended with an output |
//! | `RunsFailed` | Count | a run finally failed |
//! | `RunsCancelled` | Count | a `cancel_on` event cancelled a run no invocation was executing (counted by the invocation that received the event), or a run being executed stopped because it was cancelled (counted by that invocation): each such cancel once |
//! | `StepDuration` | Milliseconds | a `step.run` reached its final state: from its first attempt's start to its end (retries included) |
//! | `QueueDelay` | Milliseconds | from when the event was sent, or the wake-up was due, to when the driver picked it up |

use cairn::{Clock, Drive, EventPayload, Millis, Progress, ProgressSink, RunId, RunStatus, SCHEDULED_EVENT};
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The CloudWatch namespace of every metric.
pub const NAMESPACE: &str = "Cairn";

/// The one dimension: the Cairn function id.
pub const DIMENSION: &str = "FunctionName";

/// A metric the driver emits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// A run was created.
    RunsStarted,
    /// A run ended with an output.
    RunsCompleted,
    /// A run finally failed.
    RunsFailed,
    /// A run being executed was cancelled.
    RunsCancelled,
    /// A `step.run`'s time from its first attempt to its final state.
    StepDuration,
    /// From when the event was sent or the wake-up was due to when the driver picked it up.
    QueueDelay,
}

impl Metric {
    /// Its CloudWatch name.
    pub fn name(self) -> &'static str {
        match self {
            Metric::RunsStarted => "RunsStarted",
            Metric::RunsCompleted => "RunsCompleted",
            Metric::RunsFailed => "RunsFailed",
            Metric::RunsCancelled => "RunsCancelled",
            Metric::StepDuration => "StepDuration",
            Metric::QueueDelay => "QueueDelay",
        }
    }

    /// Its CloudWatch unit.
    pub fn unit(self) -> &'static str {
        match self {
            Metric::RunsStarted | Metric::RunsCompleted | Metric::RunsFailed | Metric::RunsCancelled => "Count",
            Metric::StepDuration | Metric::QueueDelay => "Milliseconds",
        }
    }
}

/// One EMF log line: the `_aws` metadata, the dimension, the metric's value under its name,
/// then properties that are not metrics.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct Line<'a> {
    #[serde(rename = "_aws")]
    aws: Metadata<'a>,
    function_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    runs_started: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    runs_completed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    runs_failed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    runs_cancelled: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    step_duration: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    queue_delay: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    run_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    step_name: Option<&'a str>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct Metadata<'a> {
    timestamp: Millis,
    cloud_watch_metrics: [Directive<'a>; 1],
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct Directive<'a> {
    namespace: &'a str,
    dimensions: [[&'a str; 1]; 1],
    metrics: [Definition<'a>; 1],
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct Definition<'a> {
    name: &'a str,
    unit: &'a str,
}

/// One metric event: what to write as an EMF line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample<'a> {
    /// The Cairn function id (the `FunctionName` dimension).
    pub function: &'a str,
    /// The metric.
    pub metric: Metric,
    /// Its value: 1 for counts, milliseconds for durations.
    pub value: u64,
    /// The run concerned.
    pub run_id: Option<&'a RunId>,
    /// The step concerned.
    pub step_name: Option<&'a str>,
    /// When (ms since the epoch): the line's `Timestamp`.
    pub at: Millis,
}

impl Sample<'_> {
    /// The EMF JSON line (no newline).
    pub fn to_line(&self) -> String {
        let value = |metric: Metric| (self.metric == metric).then_some(self.value);
        let line = Line {
            aws: Metadata {
                timestamp: self.at,
                cloud_watch_metrics: [Directive {
                    namespace: NAMESPACE,
                    dimensions: [[DIMENSION]],
                    metrics: [Definition { name: self.metric.name(), unit: self.metric.unit() }],
                }],
            },
            function_name: self.function,
            runs_started: value(Metric::RunsStarted),
            runs_completed: value(Metric::RunsCompleted),
            runs_failed: value(Metric::RunsFailed),
            runs_cancelled: value(Metric::RunsCancelled),
            step_duration: value(Metric::StepDuration),
            queue_delay: value(Metric::QueueDelay),
            run_id: self.run_id.map(RunId::as_str),
            step_name: self.step_name,
        };
        // Plain strings and integers: serializing cannot fail.
        serde_json::to_string(&line).unwrap_or_default()
    }
}

type Sink = Arc<dyn Fn(&str) + Send + Sync>;

/// Where metric lines go: stdout in Lambda (CloudWatch Logs reads it), anywhere in tests.
#[derive(Clone)]
pub struct Metrics {
    sink: Sink,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::stdout()
    }
}

impl Metrics {
    /// One line per sample on stdout.
    pub fn stdout() -> Self {
        Metrics::to(|line| println!("{line}"))
    }

    /// No metrics (`CAIRN_METRICS=off`).
    pub fn off() -> Self {
        Metrics::to(|_| {})
    }

    /// Each line to `sink`.
    pub fn to(sink: impl Fn(&str) + Send + Sync + 'static) -> Self {
        Metrics { sink: Arc::new(sink) }
    }

    /// `CAIRN_METRICS=off` turns them off; anything else writes them to stdout.
    pub fn from_env() -> Self {
        if std::env::var("CAIRN_METRICS").is_ok_and(|v| v.eq_ignore_ascii_case("off")) {
            Metrics::off()
        } else {
            Metrics::stdout()
        }
    }

    /// Writes one sample.
    pub fn emit(&self, sample: &Sample<'_>) {
        (self.sink)(&sample.to_line());
    }
}

/// Turns what one invocation's drives report into metrics, passing every report on to `outer`.
pub(crate) struct Observer<'a> {
    metrics: &'a Metrics,
    clock: &'a dyn Clock,
    outer: ProgressSink<'a>,
    /// The function of each run this invocation executes (from `RunStarted`).
    functions: Mutex<HashMap<RunId, String>>,
}

impl<'a> Observer<'a> {
    pub(crate) fn new(metrics: &'a Metrics, clock: &'a dyn Clock, outer: ProgressSink<'a>) -> Self {
        Observer { metrics, clock, outer, functions: Mutex::new(HashMap::new()) }
    }

    /// Writes one sample, dated now.
    pub(crate) fn emit(&self, function: &str, metric: Metric, value: u64, run_id: Option<&RunId>, step: Option<&str>) {
        let at = self.clock.now();
        self.metrics.emit(&Sample { function, metric, value, run_id, step_name: step, at });
    }

    /// Passes `event` on, noting a run's function and a `step.run`'s duration.
    pub(crate) fn progress(&self, event: Progress) {
        match &event {
            Progress::RunStarted { run_id, function_id } => {
                self.functions
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(run_id.clone(), function_id.clone());
            }
            Progress::StepCompleted { run_id, name, kind, duration_ms: Some(duration), .. } if kind == "run" => {
                if let Some(function) = self.function_of(run_id) {
                    let duration = (*duration).max(0).unsigned_abs();
                    self.emit(&function, Metric::StepDuration, duration, Some(run_id), Some(name));
                }
            }
            _ => {}
        }
        (self.outer)(event);
    }

    /// Counts how a drive this invocation executed ended. A drive that found the run already
    /// ended (a late wake-up) executed nothing and counts nothing.
    pub(crate) fn drive_ended(&self, run_id: &RunId, drive: &Drive) {
        let Some(function) = self.function_of(run_id) else { return };
        let metric = match drive {
            Drive::Completed(_) => Metric::RunsCompleted,
            Drive::Failed(_) => Metric::RunsFailed,
            Drive::AlreadyFinished(RunStatus::Cancelled) => Metric::RunsCancelled,
            _ => return,
        };
        self.emit(&function, metric, 1, Some(run_id), None);
    }

    fn function_of(&self, run_id: &RunId) -> Option<String> {
        self.functions.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(run_id).cloned()
    }
}

/// When the event that started runs was sent (its `ts`), or for a cron firing when it was
/// scheduled (Scheduler's `id`, the rule's `time`): the start of its queue delay.
pub(crate) fn sent_at(payload: &Value, event: &EventPayload) -> Option<Millis> {
    let rfc3339 = |value: &Value| {
        value.as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()).map(|t| t.timestamp_millis())
    };
    if event.name == SCHEDULED_EVENT {
        return rfc3339(&payload["id"]).or_else(|| rfc3339(&payload["time"]));
    }
    event.ts
}

/// The wake-ups in a payload that say when they were due (`at`, as the timer queue's messages
/// carry it), with their function and run.
pub(crate) fn wake_ups(payload: &Value) -> Vec<(String, Option<RunId>, Millis)> {
    let due = |body: &Value| {
        let function = body["function_id"].as_str()?.to_string();
        let run_id = body["run_id"].as_str().map(RunId::new);
        Some((function, run_id, body["at"].as_i64()?))
    };
    match payload.get("Records").and_then(Value::as_array) {
        Some(records) => records
            .iter()
            .filter_map(|record| record["body"].as_str().and_then(|body| serde_json::from_str(body).ok()))
            .filter_map(|body: Value| due(&body))
            .collect(),
        None if payload["cairn"] == "resume" || payload["cairn"] == "continue" => due(payload).into_iter().collect(),
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_is_one_emf_line_with_its_directive() {
        let run = RunId::new("run_1");
        let sample = Sample {
            function: "hello",
            metric: Metric::RunsStarted,
            value: 1,
            run_id: Some(&run),
            step_name: None,
            at: 1_795_392_000_123,
        };
        assert_eq!(
            sample.to_line(),
            r#"{"_aws":{"Timestamp":1795392000123,"CloudWatchMetrics":[{"Namespace":"Cairn","Dimensions":[["FunctionName"]],"Metrics":[{"Name":"RunsStarted","Unit":"Count"}]}]},"FunctionName":"hello","RunsStarted":1,"RunId":"run_1"}"#
        );
    }

    #[test]
    fn durations_are_milliseconds_and_carry_the_step() {
        let run = RunId::new("run_1");
        let step = Sample {
            function: "readwise-fetch-books",
            metric: Metric::StepDuration,
            value: 250,
            run_id: Some(&run),
            step_name: Some("fetch-page-1"),
            at: 5,
        };
        assert_eq!(
            step.to_line(),
            r#"{"_aws":{"Timestamp":5,"CloudWatchMetrics":[{"Namespace":"Cairn","Dimensions":[["FunctionName"]],"Metrics":[{"Name":"StepDuration","Unit":"Milliseconds"}]}]},"FunctionName":"readwise-fetch-books","StepDuration":250,"RunId":"run_1","StepName":"fetch-page-1"}"#
        );
        let delay =
            Sample { function: "hello", metric: Metric::QueueDelay, value: 1200, run_id: None, step_name: None, at: 7 };
        assert_eq!(
            delay.to_line(),
            r#"{"_aws":{"Timestamp":7,"CloudWatchMetrics":[{"Namespace":"Cairn","Dimensions":[["FunctionName"]],"Metrics":[{"Name":"QueueDelay","Unit":"Milliseconds"}]}]},"FunctionName":"hello","QueueDelay":1200}"#
        );
    }

    #[test]
    fn every_metric_has_its_name_and_unit() {
        let all = [
            (Metric::RunsStarted, "RunsStarted", "Count"),
            (Metric::RunsCompleted, "RunsCompleted", "Count"),
            (Metric::RunsFailed, "RunsFailed", "Count"),
            (Metric::RunsCancelled, "RunsCancelled", "Count"),
            (Metric::StepDuration, "StepDuration", "Milliseconds"),
            (Metric::QueueDelay, "QueueDelay", "Milliseconds"),
        ];
        for (metric, name, unit) in all {
            assert_eq!((metric.name(), metric.unit()), (name, unit));
            let line: serde_json::Value = serde_json::from_str(
                &Sample { function: "f", metric, value: 3, run_id: None, step_name: None, at: 0 }.to_line(),
            )
            .unwrap_or_default();
            assert_eq!(line[name], 3, "{line}");
        }
    }

    type Lines = std::sync::Arc<std::sync::Mutex<Vec<Value>>>;

    /// A driver over `functions` on an in-memory SQLite store and `clock`, and the metric lines
    /// it writes.
    #[cfg(feature = "sqlite")]
    fn metered_driver(functions: Vec<cairn::Function>, clock: &cairn::ManualClock) -> (crate::LambdaDriver, Lines) {
        use crate::{AnyBus, AnyStore, AnyTimer, DriverConfig, LambdaDriver};
        use cairn::{Registry, Runner, SqliteStore};

        let registry = Registry::new(functions).expect("a registry");
        let store = AnyStore::Sqlite(SqliteStore::in_memory().expect("in-memory SQLite"));
        let runner = Runner::new(registry, store, AnyBus::Log, AnyTimer::Log).with_clock(Arc::new(clock.clone()));
        let lines = Lines::default();
        let sink = Arc::clone(&lines);
        let driver = LambdaDriver::new(runner, DriverConfig::default()).with_metrics(Metrics::to(move |line| {
            sink.lock().expect("lines").push(serde_json::from_str(line).expect("a JSON line"));
        }));
        (driver, lines)
    }

    /// Each line as (function, metric, value, run id), after checking it is a valid EMF record
    /// of the Cairn namespace.
    fn summary(lines: &[Value]) -> Vec<(String, String, u64, String)> {
        lines
            .iter()
            .map(|line| {
                let directive = &line["_aws"]["CloudWatchMetrics"][0];
                assert_eq!(
                    (&directive["Namespace"], &directive["Dimensions"]),
                    (&serde_json::json!("Cairn"), &serde_json::json!([["FunctionName"]]))
                );
                let name = directive["Metrics"][0]["Name"].as_str().expect("a metric name");
                assert!(line[name].is_u64(), "{line}");
                let text = |key: &str| line[key].as_str().unwrap_or_default().to_string();
                (text("FunctionName"), name.to_string(), line[name].as_u64().unwrap_or_default(), text("RunId"))
            })
            .collect()
    }

    fn row(function: &str, metric: &str, value: u64, run: &RunId) -> (String, String, u64, String) {
        (function.to_string(), metric.to_string(), value, run.as_str().to_string())
    }

    /// Through the driver: an event that starts two runs (one completes after a 250 ms step,
    /// one fails), then a timer message two seconds late.
    #[cfg(feature = "sqlite")]
    #[test]
    fn the_driver_writes_one_line_per_event() {
        use cairn::ManualClock;
        use cairn::prelude::*;

        const START: Millis = 1_795_392_000_000;
        let clock = ManualClock::at(START);
        let step_clock = clock.clone();
        let works = Function::new("metered")
            .on_event("test/go")
            .handler(move |_: Event, step: Step| {
                let clock = step_clock.clone();
                async move {
                    step.run("work", || async move {
                        clock.advance(std::time::Duration::from_millis(250));
                        Ok(json!(1))
                    })
                    .await
                }
            })
            .expect("a valid definition");
        let fails = Function::new("metered-fail")
            .on_event("test/go")
            .retries(0)
            .handler(|_: Event, step: Step| async move {
                step.run("boom", || async { Err::<Value, _>(StepError::non_retriable("no")) }).await
            })
            .expect("a valid definition");
        let (driver, lines) = metered_driver(vec![works, fails], &clock);
        let event = json!({"name": "test/go", "data": {}, "id": "e-1", "ts": START - 1_500});
        cairn::testing::block_on(driver.handle(event, 0)).expect("handled");
        let late = serde_json::json!({"cairn": "resume", "function_id": "metered", "run_id": "run_gone", "at": clock.now_ms() - 2_000});
        let batch = json!({"Records": [{"messageId": "m-1", "body": late.to_string()}]});
        cairn::testing::block_on(driver.handle(batch, 0)).expect("handled");

        let lines = lines.lock().expect("lines").clone();
        let (ok, failed) = (RunId::for_event("metered", "e-1"), RunId::for_event("metered-fail", "e-1"));
        assert_eq!(
            summary(&lines),
            vec![
                row("metered", "RunsStarted", 1, &ok),
                row("metered", "QueueDelay", 1_500, &ok),
                row("metered-fail", "RunsStarted", 1, &failed),
                row("metered-fail", "QueueDelay", 1_500, &failed),
                row("metered", "StepDuration", 250, &ok),
                row("metered", "RunsCompleted", 1, &ok),
                row("metered-fail", "StepDuration", 0, &failed),
                row("metered-fail", "RunsFailed", 1, &failed),
                row("metered", "QueueDelay", 2_000, &RunId::new("run_gone")),
            ]
        );
        assert_eq!(lines[4]["StepName"], "work");
    }

    /// A `cancel_on` event cancels a sleeping run: the invocation that received the event counts
    /// it, once (the event delivered again cancels nothing more).
    #[cfg(feature = "sqlite")]
    #[test]
    fn a_run_cancel_on_ends_is_counted_once_by_the_invocation_that_cancelled_it() {
        use cairn::flow::CancelOn;
        use cairn::prelude::*;
        use cairn::{ManualClock, RunStatus, RunStore};

        const START: Millis = 1_795_392_000_000;
        let clock = ManualClock::at(START);
        let sleeper = Function::new("napper")
            .on_event("test/nap")
            .cancel_on(CancelOn::event("test/stop"))
            .handler(|_: Event, step: Step| async move {
                step.sleep("nap", "1h").await?;
                Ok(json!("woke"))
            })
            .expect("a valid definition");
        let (driver, lines) = metered_driver(vec![sleeper], &clock);
        let nap = json!({"name": "test/nap", "data": {}, "id": "e-nap", "ts": START});
        cairn::testing::block_on(driver.handle(nap, 0)).expect("handled");
        clock.advance(std::time::Duration::from_secs(5));
        let stop = json!({"name": "test/stop", "data": {}, "id": "e-stop", "ts": clock.now_ms()});
        cairn::testing::block_on(driver.handle(stop.clone(), 0)).expect("handled");
        cairn::testing::block_on(driver.handle(stop, 0)).expect("handled again");

        let run = RunId::for_event("napper", "e-nap");
        let head = cairn::testing::block_on(driver.runner().store().load(&run)).expect("loaded").expect("the run");
        assert_eq!(head.meta.status, RunStatus::Cancelled);
        let lines = lines.lock().expect("lines").clone();
        assert_eq!(
            summary(&lines),
            vec![
                row("napper", "RunsStarted", 1, &run),
                row("napper", "QueueDelay", 0, &run),
                row("napper", "RunsCancelled", 1, &run),
            ]
        );
    }
}
