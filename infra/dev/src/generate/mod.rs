//! `cairn template`: template.yaml's function resources derived from the code. For each
//! [`Lambda`] of the project's one list it writes the timer queue and its event source
//! mapping, the Scheduler role, and the function with its environment, least-privilege policy,
//! rules (its triggers, the events it awaits, invokes out and back, failures), schedules (its
//! crons, converted for EventBridge) and reconciler tick; then the `TimerQueues` output.
//!
//! Everything else in template.yaml (parameters, shared resources, the serve function, other
//! outputs) is the user's: the generated parts sit between `# BEGIN cairn template` and
//! `# END cairn template` lines, and only they are rewritten.

use cairn::{FAILED_EVENT, FINISHED_EVENT, Function, INVOKED_EVENT, Trigger};
use cairn_aws::{ControlMessage, EnvValue, Lambda};
use std::collections::BTreeSet;
use std::fmt::Write as _;

mod events;
mod policies;

pub use events::detail_filter;

/// The line that opens a generated part.
pub const BEGIN: &str = "# BEGIN cairn template";
/// The line that closes it.
pub const END: &str = "# END cairn template";

/// Why the template cannot be generated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GenerateError {
    /// A cron EventBridge cannot express.
    #[error("function `{function}`: {reason}")]
    Cron {
        /// The function.
        function: String,
        /// What EventBridge cannot express.
        #[source]
        reason: cairn::CronError,
    },
    /// Two binaries, or a binary and a hand-written resource, share a name.
    #[error("binary `{0}` appears twice in the list of functions")]
    DuplicateBinary(String),
    /// The template lacks the markers of a generated part.
    #[error(
        "template.yaml has no `{BEGIN} ({part})` ... `{END} ({part})` lines; add them (indented two spaces) where the generated {part} go"
    )]
    MissingMarkers {
        /// `resources` or `outputs`.
        part: &'static str,
    },
    /// An environment variable names a parameter the template does not declare.
    #[error(
        "binary `{binary}`: {variable} reads parameter `{parameter}`, which template.yaml's Parameters do not declare"
    )]
    UnknownParameter {
        /// The binary.
        binary: String,
        /// The variable.
        variable: String,
        /// The parameter.
        parameter: String,
    },
}

/// `hello-world` as `HelloWorld`: the logical-id prefix of a binary's resources.
pub fn logical_id(binary: &str) -> String {
    binary
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map(|first| first.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        })
        .collect()
}

/// A YAML single-quoted string.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Every function a binary runs, failure handlers included.
fn all_functions(lambda: &Lambda) -> Vec<Function> {
    let mut functions = Vec::new();
    for function in lambda.functions() {
        functions.push(function.clone());
        if let Some(failure) = function.failure_handler() {
            functions.push(failure.clone());
        }
    }
    functions
}

/// The generated resources and outputs for `lambdas`, and the parameters they reference.
#[derive(Debug, Default)]
pub struct Generated {
    /// The resources, indented under `Resources:`.
    pub resources: String,
    /// The outputs, indented under `Outputs:`.
    pub outputs: String,
    /// Template parameters the environment references.
    pub parameters: BTreeSet<(String, String, String)>,
}

/// The function resources of `lambdas`.
///
/// # Errors
/// A cron EventBridge cannot express, or a binary listed twice.
pub fn generate(lambdas: &[Lambda]) -> Result<Generated, GenerateError> {
    let mut generated = Generated::default();
    let mut seen = BTreeSet::new();
    for lambda in lambdas {
        if !seen.insert(lambda.binary().to_string()) {
            return Err(GenerateError::DuplicateBinary(lambda.binary().to_string()));
        }
        generated.resources.push_str(&resources(lambda)?);
        for (variable, value) in lambda.env_vars() {
            if let EnvValue::Parameter(parameter) = value {
                generated.parameters.insert((lambda.binary().to_string(), variable.clone(), parameter.clone()));
            }
        }
    }
    let queues: Vec<String> =
        lambdas.iter().map(|l| format!("{}=${{{}TimerQueue}}", l.binary(), logical_id(l.binary()))).collect();
    let _ = write!(
        generated.outputs,
        "  TimerQueues:\n    Description: Each function binary's timer queue, for `cairn console --timer-queues`\n    Value: !Sub {}\n",
        quoted(&queues.join(","))
    );
    Ok(generated)
}

/// `template` with its generated parts replaced by what `lambdas` generate.
///
/// # Errors
/// As [`generate`], missing markers, or an environment variable reading an undeclared parameter.
pub fn regenerate(template: &str, lambdas: &[Lambda]) -> Result<String, GenerateError> {
    let generated = generate(lambdas)?;
    let declared = declared_parameters(template);
    for (binary, variable, parameter) in &generated.parameters {
        if !declared.contains(parameter) {
            return Err(GenerateError::UnknownParameter {
                binary: binary.clone(),
                variable: variable.clone(),
                parameter: parameter.clone(),
            });
        }
    }
    let text = replace_part(template, "resources", &generated.resources)?;
    replace_part(&text, "outputs", &generated.outputs)
}

/// The names under the template's top-level `Parameters:`.
fn declared_parameters(template: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut inside = false;
    for line in template.lines() {
        if !line.starts_with(' ') && !line.trim().is_empty() && !line.starts_with('#') {
            inside = line.trim_end() == "Parameters:";
            continue;
        }
        if inside
            && let Some(name) = line.strip_prefix("  ").and_then(|rest| rest.strip_suffix(':'))
            && !name.starts_with([' ', '#'])
        {
            names.insert(name.to_string());
        }
    }
    names
}

fn replace_part(template: &str, part: &'static str, body: &str) -> Result<String, GenerateError> {
    let begin = format!("  {BEGIN} ({part})");
    let end = format!("  {END} ({part})");
    let missing = || GenerateError::MissingMarkers { part };
    let start = template.find(&begin).ok_or_else(missing)?;
    let after_begin = template[start..].find('\n').map(|i| start + i + 1).ok_or_else(missing)?;
    let stop = template[after_begin..].find(&end).map(|i| after_begin + i).ok_or_else(missing)?;
    let note =
        "  # Generated by `cairn template` from functions/registry: edit the functions, then run `make generate`.\n";
    Ok(format!("{}{note}{body}{}", &template[..after_begin], &template[stop..]))
}

/// The resources of one binary.
fn resources(lambda: &Lambda) -> Result<String, GenerateError> {
    let binary = lambda.binary();
    let id = logical_id(binary);
    let functions = all_functions(lambda);
    let mut out = String::new();
    let function_arn = format!(
        "!Sub 'arn:${{AWS::Partition}}:lambda:${{AWS::Region}}:${{AWS::AccountId}}:function:${{AWS::StackName}}-{binary}'"
    );
    let _ = write!(
        out,
        r#"
  # {binary}'s wake-ups: SendMessage with DelaySeconds (up to 15 minutes), delivered to it on time.
  {id}TimerQueue:
    Type: AWS::SQS::Queue
    Properties:
      VisibilityTimeout: 960
      RedrivePolicy:
        deadLetterTargetArn: !GetAtt DeadLetterQueue.Arn
        maxReceiveCount: 5

  # A resource rather than SAM's `SQS` event, which would let it receive from every queue of
  # the account (AWSLambdaSQSQueueExecutionRole); its Policies allow its own queue only.
  {id}Timer:
    Type: AWS::Lambda::EventSourceMapping
    Properties:
      FunctionName: !Ref {id}Function
      EventSourceArn: !GetAtt {id}TimerQueue.Arn
      BatchSize: 10
      FunctionResponseTypes: [ReportBatchItemFailures]

  # What Scheduler assumes for {binary}'s schedules (its long wake-ups, crons, reconciler tick):
  # it can invoke {binary} and nothing else, and only for this stack's schedule group.
  {id}SchedulerRole:
    Type: AWS::IAM::Role
    Properties:
      AssumeRolePolicyDocument:
        Version: '2012-10-17'
        Statement:
          - Effect: Allow
            Principal:
              Service: scheduler.amazonaws.com
            Action: sts:AssumeRole
            Condition:
              StringEquals:
                aws:SourceAccount: !Ref AWS::AccountId
                aws:SourceArn: !GetAtt ScheduleGroup.Arn
      Policies:
        - PolicyName: invoke-{binary}
          PolicyDocument:
            Version: '2012-10-17'
            Statement:
              - Effect: Allow
                Action: lambda:InvokeFunction
                Resource: {function_arn}
              - Effect: Allow
                Action: sqs:SendMessage
                Resource: !GetAtt DeadLetterQueue.Arn

  {id}Function:
    Type: AWS::Serverless::Function
    Metadata:
      BuildMethod: rust-cargolambda
      BuildProperties:
        Binary: {binary}
    Properties:
      FunctionName: !Sub '${{AWS::StackName}}-{binary}'
      # POST an event to the function's URL to run it and watch its progress as NDJSON.
      FunctionUrlConfig:
        AuthType: AWS_IAM
        InvokeMode: RESPONSE_STREAM
      Description: {description}
      Environment:
        Variables:
          # Every key it writes in the table starts with `{binary}#` (its Policies allow no other).
          CAIRN_SCOPE: {binary}
          CAIRN_FUNCTION_ARN: {function_arn}
          CAIRN_SCHEDULER_ROLE_ARN: !GetAtt {id}SchedulerRole.Arn
          CAIRN_TIMER_QUEUE_URL: !Ref {id}TimerQueue
"#,
        description = quoted(lambda.description_text()),
    );
    for (name, value) in lambda.env_vars() {
        let value = match value {
            EnvValue::Literal(text) => quoted(text),
            EnvValue::Parameter(parameter) => format!("!Ref {parameter}"),
            EnvValue::Sub(text) => format!("!Sub {}", quoted(text)),
        };
        let _ = writeln!(out, "          {name}: {value}");
    }
    out.push_str(&policies::policies(lambda, &id, &functions));
    out.push_str("      Events:\n");
    out.push_str(&events::events(lambda, &id, &functions)?);
    Ok(out)
}

/// The events a binary may put on the bus: its declared sends and the runtime's own.
fn detail_types(functions: &[Function]) -> BTreeSet<String> {
    let mut types: BTreeSet<String> = functions.iter().flat_map(|f| f.sends().iter().cloned()).collect();
    types.insert(FAILED_EVENT.to_string());
    types.insert(FINISHED_EVENT.to_string());
    if functions.iter().any(|f| !f.invokes().is_empty()) {
        types.insert(INVOKED_EVENT.to_string());
    }
    types
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logical_ids_are_camel_case() {
        assert_eq!(logical_id("order-approval"), "OrderApproval");
        assert_eq!(logical_id("app/my.event"), "AppMyEvent");
        assert_eq!(logical_id("hello"), "Hello");
    }

    #[test]
    fn equalities_on_the_data_become_detail_filters_of_both_shapes() {
        assert_eq!(
            detail_filter("event.data.plan == 'pro' && event.data.account.seats == 5").unwrap(),
            "              $or:\n                - detail:\n                    account:\n                      seats: [5]\n                    plan: ['pro']\n                - detail:\n                    data:\n                      account:\n                        seats: [5]\n                      plan: ['pro']\n"
        );
        assert_eq!(detail_filter("event.data.vip == true").unwrap().matches("vip: [true]").count(), 2);
        for general in [
            "event.data.plan != 'pro'",
            "event.data.plan == 'pro' || event.data.plan == 'team'",
            "event.user.id == 'u1'",
            "event.data.plan == event.data.other",
            "event.data.a == 1 && event.data.a.b == 2",
            "size(event.data.items) == 2",
        ] {
            assert_eq!(detail_filter(general), None, "{general}");
        }
    }

    #[test]
    fn cancel_on_events_are_routed_to_the_function() {
        use cairn::prelude::*;
        let function = Function::new("sync")
            .on_event("app/sync.requested")
            .cancel_on(CancelOn::event("app/user.deleted").matching("data.userId"))
            .handler(|_: Event, _: Step| async { Ok(()) })
            .unwrap();
        let generated = generate(&[cairn_aws::Lambda::new("sync", vec![function])]).unwrap();
        assert!(
            generated.resources.contains("Cancels sync's runs (cancel_on): it must reach them."),
            "{}",
            generated.resources
        );
        assert!(generated.resources.contains("detail-type: [app/user.deleted]"), "{}", generated.resources);
    }

    #[test]
    fn parameters_are_read_from_the_template() {
        let template =
            "Parameters:\n  One:\n    Type: String\n  # note\n  Two:\n    Type: String\nResources:\n  Three:\n";
        assert_eq!(declared_parameters(template), BTreeSet::from(["One".to_string(), "Two".to_string()]));
    }
}
