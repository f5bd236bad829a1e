//! Each function's EventBridge rules and schedules: its triggers (with their `if` filters where a
//! pattern can express them), the events it awaits, invoke and failure routes, cancel events,
//! its crons converted for EventBridge and its reconciler tick.

use super::*;

/// An EventBridge rule on the stack's bus: `detail-type` `name`, with `detail` below it if any.
pub(super) fn rule(title: &str, comment: &str, name: &str, detail: &str, retry: bool) -> String {
    let retry = if retry {
        "            RetryPolicy:\n              MaximumRetryAttempts: 185\n              MaximumEventAgeInSeconds: 86400\n"
    } else {
        ""
    };
    format!(
        "        # {comment}\n        {title}:\n          Type: EventBridgeRule\n          Properties:\n            EventBusName: !Ref EventBus\n            Pattern:\n              detail-type: [{name}]\n{detail}{retry}            DeadLetterConfig:\n              Arn: !GetAtt DeadLetterQueue.Arn\n"
    )
}

/// The EventBridge pre-filter for an `if` condition of the common form, equalities on the
/// event's data joined by `&&` (`event.data.plan == 'pro' && event.data.seats == 5`): a
/// `$or` of the two shapes an event's `detail` takes (the data itself, from `put-events`, or
/// the whole event, from Cairn's bus). `None` for any other condition: the rule routes by name
/// and the runtime applies the condition (it always does; the filter only saves invocations).
pub fn detail_filter(expression: &str) -> Option<String> {
    let mut clauses: Vec<(Vec<String>, String)> = Vec::new();
    for clause in expression.split("&&") {
        let (left, right) = clause.split_once("==")?;
        let path = left.trim().strip_prefix("event.data.")?;
        let path: Vec<String> = path.split('.').map(str::to_string).collect();
        let identifier = |part: &String| {
            part.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        if !path.iter().all(identifier)
            || clauses.iter().any(|(other, _)| other.starts_with(&path) || path.starts_with(other))
        {
            return None;
        }
        let right = right.trim();
        let quoted_with = |q: char| right.len() >= 2 && right.starts_with(q) && right.ends_with(q);
        let literal = if quoted_with('\'') || quoted_with('"') {
            let inner = &right[1..right.len() - 1];
            if inner.contains(['\'', '"', '\\']) {
                return None;
            }
            quoted(inner)
        } else if right == "true" || right == "false" || right.parse::<f64>().is_ok_and(f64::is_finite) {
            right.to_string()
        } else {
            return None;
        };
        clauses.push((path, literal));
    }
    let tree = |indent: usize| {
        let mut out = String::new();
        let mut sorted = clauses.clone();
        sorted.sort();
        let mut open: Vec<String> = Vec::new();
        for (path, literal) in sorted {
            let common = open.iter().zip(&path).take_while(|(a, b)| a == b).count();
            open.truncate(common);
            for part in &path[common..path.len() - 1] {
                let _ = writeln!(out, "{}{part}:", " ".repeat(indent + 2 * open.len()));
                open.push(part.clone());
            }
            let _ = writeln!(out, "{}{}: [{literal}]", " ".repeat(indent + 2 * open.len()), path[path.len() - 1]);
        }
        out
    };
    Some(format!(
        "              $or:\n                - detail:\n{}                - detail:\n                    data:\n{}",
        tree(20),
        tree(22)
    ))
}

pub(super) fn list(items: &BTreeSet<String>) -> String {
    items.iter().cloned().collect::<Vec<_>>().join(", ")
}

/// A function an event triggers, with its `if` condition's source if any.
type Triggering = (String, Option<String>);

pub(super) fn events(lambda: &Lambda, id: &str, functions: &[Function]) -> Result<String, GenerateError> {
    let mut out = String::new();
    let mut routed = BTreeSet::new();
    let mut crons = Vec::new();
    // Each event trigger's rule: filtered by its `if` when that is the common equality form and
    // it is the only trigger of its event here (else by name; the runtime applies every `if`).
    let mut triggered: Vec<(String, Vec<Triggering>)> = Vec::new();
    for function in functions {
        for trigger in function.triggers() {
            match trigger {
                // Failures reach failure handlers through one rule below.
                Trigger::Event { name, .. } if name == FAILED_EVENT => {}
                Trigger::Event { name, expression } => {
                    let filter = expression.as_ref().map(|e| e.source().to_string());
                    match triggered.iter_mut().find(|(event, _)| event == name) {
                        Some((_, by)) => by.push((function.id().to_string(), filter)),
                        None => triggered.push((name.clone(), vec![(function.id().to_string(), filter)])),
                    }
                }
                Trigger::Cron(cron) => crons.push((function.id().to_string(), cron.clone())),
            }
        }
    }
    for (name, by) in &triggered {
        routed.insert(name.clone());
        let ids: Vec<&str> = by.iter().map(|(id, _)| id.as_str()).collect();
        let filter = match by.as_slice() {
            [(_, Some(expression))] => detail_filter(expression),
            _ => None,
        };
        let comment = match (&filter, by.as_slice()) {
            (Some(_), [(_, Some(expression))]) => format!("Triggers {} when {expression}.", ids.join(", ")),
            _ => format!("Triggers {}.", ids.join(", ")),
        };
        out.push_str(&rule(&format!("On{}", logical_id(name)), &comment, name, filter.as_deref().unwrap_or(""), true));
    }
    for function in functions {
        for awaited in function.awaits() {
            if routed.insert(awaited.clone()) {
                let comment = format!("Awaited by {}'s wait_for_event: it must reach the waiting run.", function.id());
                out.push_str(&rule(&format!("Awaits{}", logical_id(awaited)), &comment, awaited, "", true));
            }
        }
        for cancelling in function.flow().cancel_events() {
            if routed.insert(cancelling.to_string()) {
                let comment = format!("Cancels {}'s runs (cancel_on): it must reach them.", function.id());
                out.push_str(&rule(&format!("CancelOn{}", logical_id(cancelling)), &comment, cancelling, "", true));
            }
        }
    }
    let callable: BTreeSet<String> = lambda.functions().iter().map(|f| f.id().to_string()).collect();
    out.push_str(&rule(
        "Invoked",
        "Its functions called by step.invoke or `cairn invoke`.",
        INVOKED_EVENT,
        &format!("              detail:\n                data:\n                  _inngest:\n                    fn_id: [{}]\n", list(&callable)),
        false,
    ));
    let invokers: BTreeSet<String> =
        functions.iter().filter(|f| !f.invokes().is_empty()).map(|f| f.id().to_string()).collect();
    if !invokers.is_empty() {
        out.push_str(&rule(
            "InvokeResults",
            "The results of the functions its step.invoke calls.",
            FINISHED_EVENT,
            &format!(
                "              detail:\n                data:\n                  event:\n                    data:\n                      _inngest:\n                        source_fn_id: [{}]\n",
                list(&invokers)
            ),
            false,
        ));
    }
    let failing: BTreeSet<String> =
        lambda.functions().iter().filter(|f| f.failure_handler().is_some()).map(|f| f.id().to_string()).collect();
    if !failing.is_empty() {
        out.push_str(&rule(
            "Failures",
            "Failed runs, for the on_failure handlers.",
            FAILED_EVENT,
            &format!(
                "              detail:\n                data:\n                  function_id: [{}]\n",
                list(&failing)
            ),
            false,
        ));
    }
    for (index, (function, cron)) in crons.iter().enumerate() {
        let expressions = cairn_aws::schedule_expression(cron)
            .map_err(|reason| GenerateError::Cron { function: function.clone(), reason })?;
        let input = ControlMessage::cron(cron.source(), Some("<aws.scheduler.scheduled-time>".into())).to_string();
        for (part, expression) in expressions.iter().enumerate() {
            let title = match expressions.len() {
                1 => format!("Cron{}", index + 1),
                _ => format!("Cron{}Part{}", index + 1, part + 1),
            };
            let _ = write!(
                out,
                r#"        # {function}'s cron `{source}`; the firing time names the run, so a retried or
        # duplicated firing (or both parts of a split cron on one day) starts it once.
        {title}:
          Type: ScheduleV2
          Properties:
            GroupName: !Ref ScheduleGroup
            RoleArn: !GetAtt {id}SchedulerRole.Arn
            ScheduleExpression: {expression}
            ScheduleExpressionTimezone: {zone}
            FlexibleTimeWindow:
              Mode: 'OFF'
            Input: {input}
            RetryPolicy:
              MaximumRetryAttempts: 185
              MaximumEventAgeInSeconds: 86400
            DeadLetterConfig:
              Arn: !GetAtt DeadLetterQueue.Arn
"#,
                source = cron.source(),
                zone = cron.time_zone(),
                input = quoted(&input),
            );
        }
    }
    let _ = write!(
        out,
        r#"        # Finds and resumes runs nothing woke (a crashed invocation, a lost wake-up, an
        # undelivered outbox), through the table's `due` index.
        Reconcile:
          Type: ScheduleV2
          Properties:
            GroupName: !Ref ScheduleGroup
            RoleArn: !GetAtt {id}SchedulerRole.Arn
            ScheduleExpression: rate(1 minute)
            FlexibleTimeWindow:
              Mode: 'OFF'
            Input: '{reconcile}'
"#,
        reconcile = ControlMessage::Reconcile,
    );
    Ok(out)
}
