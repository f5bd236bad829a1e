//! Routing read from `template.yaml`: each `AWS::Serverless::Function`, the binary that
//! `cargo lambda watch` runs for it, its `EventBridgeRule` patterns, its `ScheduleV2` crons and
//! its `SQS` event sources (the dev server serves queue `timer-<binary>` to a function with one).
//! A mistake is reported naming the resource and the problem, before anything starts.

mod resolve;

use crate::pattern;
use crate::schedule::Expression;
use resolve::{Resolver, yaml_to_json};
use serde_json::Value;
use serde_yaml::Value as Yaml;

/// The routing of one template.
#[derive(Debug, Default)]
pub struct Template {
    /// Its functions, in template order.
    pub functions: Vec<TemplateFunction>,
}

/// One `AWS::Serverless::Function`.
#[derive(Debug)]
pub struct TemplateFunction {
    /// The logical id, e.g. `HelloFunction`.
    pub resource: String,
    /// The binary (`Metadata.BuildProperties.Binary`): the name `cargo lambda watch` serves.
    pub binary: String,
    /// `FunctionName` (the name in AWS, with the stack name [`LOCAL_STACK_NAME`]), e.g.
    /// `cairn-hello`; the logical id when it has none.
    pub function_name: String,
    /// The Cairn function id: what its resume rule routes, else the binary name.
    pub function_id: String,
    /// `Description`.
    pub description: String,
    /// Its EventBridge rules.
    pub rules: Vec<Rule>,
    /// Its ScheduleV2 schedules.
    pub schedules: Vec<TemplateSchedule>,
    /// Its SQS event sources.
    pub queues: Vec<SqsSource>,
    /// The names of its `Environment.Variables` (the dev server forwards these from its own
    /// environment to the functions).
    pub environment: Vec<String>,
}

/// The stack name the dev server gives `${AWS::StackName}` (so `!Sub '${AWS::StackName}-hello'`
/// is `cairn-hello` and the bus named `!Ref AWS::StackName` is `cairn`).
pub const LOCAL_STACK_NAME: &str = "cairn";

/// The queue prefix of the per-function timer queues: function `hello`'s is `timer-hello`.
pub const TIMER_QUEUE_PREFIX: &str = "timer-";

/// The message size limit of a queue without `MaximumMessageSize` (256 KiB).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// An `SQS` event source (an event source mapping from an `AWS::SQS::Queue` of the template).
#[derive(Debug)]
pub struct SqsSource {
    /// `Resource.Events.<name>`.
    pub name: String,
    /// The queue's logical id (`Queue: !GetAtt <id>.Arn`).
    pub queue_resource: String,
    /// `BatchSize` (10 when absent).
    pub batch_size: u32,
    /// `FunctionResponseTypes: [ReportBatchItemFailures]`: the function answers
    /// `{"batchItemFailures": [...]}` to have messages redelivered.
    pub report_batch_item_failures: bool,
    /// The queue's `RedrivePolicy.maxReceiveCount`, if it has one.
    pub max_receive_count: Option<u32>,
    /// The queue's `DelaySeconds` (0 when absent): a message's delay when it gives none.
    pub delay_seconds: u32,
    /// The queue's `MaximumMessageSize` (256 KiB when absent).
    pub max_message_bytes: usize,
}

/// An `EventBridgeRule` event source.
#[derive(Debug)]
pub struct Rule {
    /// `Resource.Events.<name>`.
    pub name: String,
    /// The bus it listens on.
    pub bus: String,
    /// The event pattern.
    pub pattern: Value,
}

/// A `ScheduleV2` event source.
#[derive(Debug)]
pub struct TemplateSchedule {
    /// `Resource.Events.<name>`.
    pub name: String,
    /// `ScheduleExpression` as written.
    pub expression_text: String,
    /// Parsed.
    pub expression: Expression,
    /// `ScheduleExpressionTimezone` (UTC when absent).
    pub time_zone: String,
    /// `Input`: the payload delivered.
    pub input: String,
}

/// Why a template cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct TemplateError {
    /// The file, or `file: Resource.Property`.
    pub path: String,
    /// The problem.
    pub message: String,
}

impl TemplateFunction {
    /// Whether anything routes to it (`serve`, driven over HTTP only, has no rules).
    pub fn is_routed(&self) -> bool {
        !self.rules.is_empty() || !self.schedules.is_empty() || !self.queues.is_empty()
    }

    /// The name of the timer queue the dev server serves it (`timer-<binary>`), if it has an SQS
    /// event source.
    pub fn timer_queue(&self) -> Option<String> {
        (!self.queues.is_empty()).then(|| format!("{TIMER_QUEUE_PREFIX}{}", self.binary))
    }

    /// Whether `name` (a bare name, `FunctionName`, or a Lambda ARN ending in either) is this function.
    pub fn is_named(&self, name: &str) -> bool {
        let name = name.rsplit(':').next().unwrap_or(name);
        name == self.binary || name == self.function_name || name == self.resource
    }

    /// The event names its rules route by `detail-type` (excluding Cairn's own resume events).
    pub fn event_names(&self) -> Vec<String> {
        self.rules
            .iter()
            .flat_map(|rule| rule.pattern["detail-type"].as_array().cloned().unwrap_or_default())
            .filter_map(|v| v.as_str().map(str::to_string))
            .filter(|name| name != cairn_aws::RESUME_EVENT)
            .collect()
    }
}

impl Template {
    /// Reads and checks the template at `path`.
    ///
    /// # Errors
    /// The file cannot be read or parsed, or a resource has a mistake (named).
    pub fn load(path: &str) -> Result<Template, TemplateError> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| TemplateError { path: path.to_string(), message: format!("cannot read: {err}") })?;
        Template::parse(path, &text)
    }

    /// Parses template `text` (named `file` in errors).
    ///
    /// # Errors
    /// As [`Template::load`].
    pub fn parse(file: &str, text: &str) -> Result<Template, TemplateError> {
        let document: Yaml = serde_yaml::from_str(text)
            .map_err(|err| TemplateError { path: file.to_string(), message: format!("not valid YAML: {err}") })?;
        let resources = document
            .get("Resources")
            .and_then(Yaml::as_mapping)
            .ok_or_else(|| TemplateError { path: file.to_string(), message: "no Resources section".to_string() })?;
        let resolver = Resolver { document: &document };
        let mut functions = Vec::new();
        for (logical_id, resource) in resources {
            let logical_id = logical_id.as_str().unwrap_or_default().to_string();
            if resource.get("Type").and_then(Yaml::as_str) != Some("AWS::Serverless::Function") {
                continue;
            }
            let fail = |property: &str, message: String| TemplateError {
                path: format!("{file}: {logical_id}{}{property}", if property.is_empty() { "" } else { "." }),
                message,
            };
            let binary = resource
                .get("Metadata")
                .and_then(|m| m.get("BuildProperties"))
                .and_then(|b| b.get("Binary"))
                .and_then(Yaml::as_str)
                .ok_or_else(|| {
                    fail("Metadata", "no BuildProperties.Binary: which functions/* binary does it run?".to_string())
                })?
                .to_string();
            let properties = resource.get("Properties").cloned().unwrap_or(Yaml::Null);
            let function_name = match properties.get("FunctionName") {
                None => logical_id.clone(),
                Some(value) => resolver.name(value).map_err(|message| fail("FunctionName", message))?,
            };
            let description = properties.get("Description").and_then(Yaml::as_str).unwrap_or_default().to_string();
            let environment = properties
                .get("Environment")
                .and_then(|e| e.get("Variables"))
                .and_then(Yaml::as_mapping)
                .into_iter()
                .flatten()
                .filter_map(|(name, _)| name.as_str().map(str::to_string))
                .collect();
            let mut function = TemplateFunction {
                resource: logical_id.clone(),
                function_id: binary.clone(),
                binary,
                function_name,
                description,
                rules: Vec::new(),
                schedules: Vec::new(),
                queues: Vec::new(),
                environment,
            };
            for (event_name, event) in properties.get("Events").and_then(Yaml::as_mapping).into_iter().flatten() {
                let event_name = event_name.as_str().unwrap_or_default().to_string();
                let here = format!("Events.{event_name}");
                let props = event.get("Properties").cloned().unwrap_or(Yaml::Null);
                match event.get("Type").and_then(Yaml::as_str) {
                    Some("EventBridgeRule") => {
                        let pattern = props
                            .get("Pattern")
                            .ok_or_else(|| fail(&here, "an EventBridgeRule needs a Pattern".to_string()))?;
                        let pattern = yaml_to_json(pattern);
                        pattern::validate(&pattern)
                            .map_err(|error| fail(&format!("{here}.Pattern"), error.to_string()))?;
                        let bus = match props.get("EventBusName") {
                            None => "default".to_string(),
                            Some(value) => resolver
                                .string(value)
                                .map_err(|message| fail(&format!("{here}.EventBusName"), message))?,
                        };
                        if let Some(id) = resume_function_id(&pattern) {
                            function.function_id = id;
                        }
                        function.rules.push(Rule { name: event_name, bus, pattern });
                    }
                    Some("ScheduleV2") => {
                        let text = props
                            .get("ScheduleExpression")
                            .and_then(Yaml::as_str)
                            .ok_or_else(|| fail(&here, "a ScheduleV2 needs a ScheduleExpression".to_string()))?;
                        let time_zone =
                            props.get("ScheduleExpressionTimezone").and_then(Yaml::as_str).unwrap_or("UTC").to_string();
                        let expression = Expression::parse(text, &time_zone)
                            .map_err(|error| fail(&format!("{here}.ScheduleExpression"), error.to_string()))?;
                        let input = props.get("Input").and_then(Yaml::as_str).unwrap_or("{}").to_string();
                        serde_json::from_str::<Value>(&input)
                            .map_err(|err| fail(&format!("{here}.Input"), format!("not JSON: {err}")))?;
                        function.schedules.push(TemplateSchedule {
                            name: event_name,
                            expression_text: text.to_string(),
                            expression,
                            time_zone,
                            input,
                        });
                    }
                    Some("SQS") => {
                        let queue = props
                            .get("Queue")
                            .ok_or_else(|| fail(&here, "an SQS event source needs a Queue".to_string()))?;
                        let source = sqs_source(&resolver, event_name, queue, &props)
                            .map_err(|(property, message)| fail(&format!("{here}.{property}"), message))?;
                        function.queues.push(source);
                    }
                    _ => {}
                }
            }
            functions.push(function);
        }
        // Event source mappings written as resources (the template's timer queues: SAM's `SQS`
        // event type would attach a receive policy on every queue of the account).
        for (logical_id, resource) in resources {
            if resource.get("Type").and_then(Yaml::as_str) != Some("AWS::Lambda::EventSourceMapping") {
                continue;
            }
            let logical_id = logical_id.as_str().unwrap_or_default().to_string();
            let props = resource.get("Properties").cloned().unwrap_or(Yaml::Null);
            let fail = |property: &str, message: String| TemplateError {
                path: format!("{file}: {logical_id}.{property}"),
                message,
            };
            let target = props.get("FunctionName").and_then(|name| match name {
                Yaml::Tagged(tagged) if tagged.tag == "Ref" => tagged.value.as_str(),
                Yaml::Mapping(map) => map.get("Ref").and_then(Yaml::as_str),
                _ => None,
            });
            let function =
                target.and_then(|target| functions.iter_mut().find(|f| f.resource == target)).ok_or_else(|| {
                    fail("FunctionName", "expected !Ref <an AWS::Serverless::Function of this template>".into())
                })?;
            let queue = props
                .get("EventSourceArn")
                .ok_or_else(|| fail("EventSourceArn", "an event source mapping needs an EventSourceArn".into()))?;
            let source = sqs_source(&resolver, logical_id.clone(), queue, &props).map_err(|(property, message)| {
                fail(if property == "Queue" { "EventSourceArn" } else { property }, message)
            })?;
            function.queues.push(source);
        }
        Ok(Template { functions })
    }

    /// The function named `name` (binary, `FunctionName`, logical id or ARN).
    pub fn function(&self, name: &str) -> Option<&TemplateFunction> {
        self.functions.iter().find(|f| f.is_named(name))
    }

    /// The function with Cairn function id `id`.
    pub fn by_function_id(&self, id: &str) -> Option<&TemplateFunction> {
        self.functions.iter().find(|f| f.function_id == id)
    }

    /// Every function with a rule on `bus` matching the EventBridge `envelope`.
    pub fn route<'a>(&'a self, bus: &str, envelope: &Value) -> Vec<&'a TemplateFunction> {
        self.functions
            .iter()
            .filter(|f| f.rules.iter().any(|rule| rule.bus == bus && pattern::matches(&rule.pattern, envelope)))
            .collect()
    }

    /// The function served by the queue named `queue` (`timer-<binary>` of a function with an SQS
    /// event source), with that source.
    pub fn queue(&self, queue: &str) -> Option<(&TemplateFunction, &SqsSource)> {
        let binary = queue.strip_prefix(TIMER_QUEUE_PREFIX)?;
        let function = self.functions.iter().find(|f| f.binary == binary)?;
        function.queues.first().map(|source| (function, source))
    }

    /// The queues the dev server serves, by name.
    pub fn queue_names(&self) -> Vec<String> {
        self.functions.iter().filter_map(TemplateFunction::timer_queue).collect()
    }

    /// Makes every schedule whose input is `{"cairn": "reconcile", ...}` fire every `secs`
    /// seconds instead of its template expression (`cairn dev --reconcile-secs`).
    pub fn reconcile_every(&mut self, secs: u64) {
        for schedule in self.functions.iter_mut().flat_map(|f| f.schedules.iter_mut()) {
            if is_reconcile(&schedule.input) {
                let text = format!("rate({secs} {})", if secs == 1 { "second" } else { "seconds" });
                if let Ok(expression) = Expression::parse_dev(&text, &schedule.time_zone) {
                    schedule.expression_text = text;
                    schedule.expression = expression;
                }
            }
        }
    }

    /// The buses the rules listen on (plus `default`).
    pub fn buses(&self) -> Vec<String> {
        let mut buses: Vec<String> =
            self.functions.iter().flat_map(|f| f.rules.iter().map(|r| r.bus.clone())).collect();
        buses.push("default".to_string());
        buses.sort();
        buses.dedup();
        buses
    }
}

/// An SQS event source: `queue` (`!GetAtt <queue>.Arn`) and the `BatchSize` and
/// `FunctionResponseTypes` of `props`. An error names the property.
fn sqs_source(
    resolver: &Resolver<'_>,
    name: String,
    queue: &Yaml,
    props: &Yaml,
) -> Result<SqsSource, (&'static str, String)> {
    let (queue_resource, queue) = resolver.queue(queue).map_err(|message| ("Queue", message))?;
    let batch_size = match props.get("BatchSize") {
        None => 10,
        Some(value) => value
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| (1..=10_000).contains(n))
            .ok_or(("BatchSize", "must be a whole number from 1 to 10000".to_string()))?,
    };
    let report_batch_item_failures = props
        .get("FunctionResponseTypes")
        .and_then(Yaml::as_sequence)
        .is_some_and(|types| types.iter().any(|t| t.as_str() == Some("ReportBatchItemFailures")));
    let queue_number = |key: &str| {
        queue
            .get("Properties")
            .and_then(|p| p.get(key))
            .and_then(|v| v.as_u64().or_else(|| v.as_str().and_then(|text| text.parse().ok())))
    };
    let max_receive_count = queue
        .get("Properties")
        .and_then(|p| p.get("RedrivePolicy"))
        .and_then(|r| r.get("maxReceiveCount"))
        .and_then(|v| v.as_u64().or_else(|| v.as_str().and_then(|text| text.parse().ok())))
        .and_then(|n| u32::try_from(n).ok());
    Ok(SqsSource {
        name,
        queue_resource,
        batch_size,
        report_batch_item_failures,
        max_receive_count,
        delay_seconds: queue_number("DelaySeconds").and_then(|n| u32::try_from(n).ok()).unwrap_or(0).min(900),
        max_message_bytes: queue_number("MaximumMessageSize")
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(DEFAULT_MAX_MESSAGE_BYTES),
    })
}

/// Whether a schedule's input is a reconciler tick: a JSON object with `"cairn": "reconcile"`.
pub fn is_reconcile(input: &str) -> bool {
    serde_json::from_str::<Value>(input).is_ok_and(|value| {
        matches!(cairn_aws::ControlMessage::parse(&value), Some(Ok(cairn_aws::ControlMessage::Reconcile)))
    })
}

/// The function id a `cairn/run.resume` rule routes.
fn resume_function_id(pattern: &Value) -> Option<String> {
    let types = pattern["detail-type"].as_array()?;
    if types.len() != 1 || types[0] != cairn_aws::RESUME_EVENT {
        return None;
    }
    pattern["detail"]["data"]["function_id"].as_array()?.first()?.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests;
