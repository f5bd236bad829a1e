//! The IAM side of template.yaml against the code: what each function may read and write in
//! the table, send on the bus, schedule and pass, and that names are the stack's and every
//! reference resolves. Each check returns its problems as sentences naming the resource.

use cairn::Function;
use serde_yaml::Value;
use std::collections::BTreeSet;

/// The DynamoDB actions the store uses (TransactWriteItems is authorized as its Put and Update).
pub(crate) const TABLE_ACTIONS: [&str; 5] =
    ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:Query"];

/// `value` without its YAML tag (`!Sub`, `!If`, ...).
pub(crate) fn untag(value: &Value) -> &Value {
    match value {
        Value::Tagged(tagged) => untag(&tagged.value),
        other => other,
    }
}

/// The intrinsic a value is (`Ref`, `GetAtt`, `Sub`, `If`, ...), short or long form.
fn intrinsic(value: &Value) -> Option<(String, &Value)> {
    match value {
        Value::Tagged(tagged) => Some((tagged.tag.to_string().trim_start_matches('!').to_string(), &tagged.value)),
        Value::Mapping(map) if map.len() == 1 => match map.iter().next() {
            Some((Value::String(key), inner)) if key == "Ref" || key.starts_with("Fn::") => {
                Some((key.trim_start_matches("Fn::").to_string(), inner))
            }
            _ => None,
        },
        _ => None,
    }
}

/// A value as text: a literal, or what an intrinsic names (`!Sub 'a-${X}'` is `a-${X}`,
/// `!GetAtt X.Arn` is `X.Arn`, `!Ref X` is `X`), prefixed by the intrinsic (`GetAtt X.Arn`).
pub(crate) fn text(value: &Value) -> String {
    match intrinsic(value) {
        Some((tag, inner)) => match untag(inner) {
            Value::String(s) => format!("{tag} {s}"),
            Value::Sequence(parts) => {
                format!("{tag} {}", parts.iter().filter_map(|p| untag(p).as_str()).collect::<Vec<_>>().join("."))
            }
            _ => tag,
        },
        None => untag(value).as_str().map(str::to_string).unwrap_or_default(),
    }
}

/// One string or a list of them.
fn list(value: &Value) -> BTreeSet<String> {
    match value {
        Value::Sequence(items) => items.iter().map(text).collect(),
        Value::Null => BTreeSet::new(),
        other => BTreeSet::from([text(other)]),
    }
}

/// A function's policy statements: the `Statement` lists of its `Policies` (a conditional
/// `!If [cond, statement, !Ref AWS::NoValue]` counts as its statement), plus the names of the
/// SAM policy templates it uses.
fn statements(policies: &Value) -> (Vec<Value>, Vec<(String, Value)>) {
    let mut found = Vec::new();
    let mut templates = Vec::new();
    for policy in untag(policies).as_sequence().into_iter().flatten() {
        for (key, body) in untag(policy).as_mapping().into_iter().flatten() {
            let key = key.as_str().unwrap_or_default().to_string();
            if key != "Statement" {
                templates.push((key, body.clone()));
                continue;
            }
            for statement in untag(body).as_sequence().into_iter().flatten() {
                match intrinsic(statement) {
                    Some((tag, branches)) if tag == "If" => {
                        if let Some(chosen) = untag(branches).as_sequence().and_then(|b| b.get(1)) {
                            found.push(untag(chosen).clone());
                        }
                    }
                    _ => found.push(untag(statement).clone()),
                }
            }
        }
    }
    (found, templates)
}

/// The events `functions` (one binary) may put on the bus: what they declare with `.sends`, the
/// runtime's `inngest/function.finished` and `failed` (every run ends, and may fail), and
/// `inngest/function.invoked` when the binary calls `step.invoke`.
pub(crate) fn sendable(functions: &[Function], invokes: bool) -> BTreeSet<String> {
    let registry = cairn::Registry::new(functions.to_vec()).unwrap();
    let mut names: BTreeSet<String> = registry.functions().iter().flat_map(|f| f.sends().iter().cloned()).collect();
    names.insert(cairn::FINISHED_EVENT.to_string());
    names.insert(cairn::FAILED_EVENT.to_string());
    if invokes {
        names.insert(cairn::INVOKED_EVENT.to_string());
    }
    names
}

/// The SSM parameters a binary reads (`Lambda::reads_parameters`): the path prefixes, as the
/// `!Sub` strings its policy must name.
pub(crate) fn parameter_paths(binary: &str) -> Vec<String> {
    cairn_functions::lambdas()
        .into_iter()
        .find(|lambda| lambda.binary() == binary)
        .map(|lambda| lambda.parameter_paths().to_vec())
        .unwrap_or_default()
}

/// The problems with the permissions of `binary`'s function (`name`, e.g. `HelloFunction`).
pub(crate) fn check(template: &Value, name: &str, binary: &str, functions: &[Function], invokes: bool) -> Vec<String> {
    let paths = parameter_paths(binary);
    let resource = &template["Resources"][name];
    let properties = &resource["Properties"];
    let env = &properties["Environment"]["Variables"];
    let prefix = name.strip_suffix("Function").unwrap_or(name);
    let role = format!("{prefix}SchedulerRole");
    let scope = binary;
    let mut problems = Vec::new();
    let mut problem = |message: String| problems.push(format!("{name}: {message}"));
    if text(&env["CAIRN_SCOPE"]) != scope {
        problem(format!("CAIRN_SCOPE should be `{scope}` (the prefix of every key it writes)"));
    }
    let function_arn = format!(
        "Sub arn:${{AWS::Partition}}:lambda:${{AWS::Region}}:${{AWS::AccountId}}:function:${{AWS::StackName}}-{binary}"
    );
    if text(&env["CAIRN_FUNCTION_ARN"]) != function_arn {
        problem(format!("CAIRN_FUNCTION_ARN should be !{function_arn}"));
    }
    if text(&env["CAIRN_SCHEDULER_ROLE_ARN"]) != format!("GetAtt {role}.Arn") {
        problem(format!("CAIRN_SCHEDULER_ROLE_ARN should be !GetAtt {role}.Arn (its own Scheduler role)"));
    }
    let (statements, templates) = statements(&properties["Policies"]);
    for (kind, body) in &templates {
        let own_queue = format!("GetAtt {prefix}TimerQueue.QueueName");
        if kind != "SQSSendMessagePolicy" || text(&body["QueueName"]) != own_queue {
            problem(format!("policy template `{kind}` grants more than its own timer queue: write the statements"));
        }
    }
    let mut seen = BTreeSet::new();
    for statement in &statements {
        let sid = text(&statement["Sid"]);
        let actions = list(&statement["Action"]);
        let resources = list(&statement["Resource"]);
        let condition = &statement["Condition"];
        if text(&statement["Effect"]) != "Allow" {
            continue;
        }
        if resources.contains("*") {
            problem(format!("statement {sid} grants {actions:?} on every resource (`*`)"));
        }
        let service = actions.iter().next().and_then(|a| a.split(':').next()).unwrap_or_default().to_string();
        if actions.iter().any(|a| !a.starts_with(&format!("{service}:"))) {
            problem(format!("statement {sid} mixes services: {actions:?}"));
            continue;
        }
        seen.insert(service.clone());
        match service.as_str() {
            "dynamodb" => {
                let extra: Vec<&String> = actions.iter().filter(|a| !TABLE_ACTIONS.contains(&a.as_str())).collect();
                if !extra.is_empty() {
                    problem(format!(
                        "statement {sid} grants {extra:?}, which the store never calls (LeadingKeys cannot confine a Scan)"
                    ));
                }
                let table =
                    BTreeSet::from(["GetAtt RunsTable.Arn".to_string(), "Sub ${RunsTable.Arn}/index/due".to_string()]);
                if resources != table {
                    problem(format!("statement {sid} should be on the table and its `due` index, not {resources:?}"));
                }
                let keys = list(&condition["ForAllValues:StringLike"]["dynamodb:LeadingKeys"]);
                if keys != BTreeSet::from([format!("{scope}#*")])
                    || untag(condition).as_mapping().map(|m| m.len()) != Some(1)
                {
                    problem(format!(
                        "statement {sid} should carry exactly ForAllValues:StringLike dynamodb:LeadingKeys [{scope}#*], not {keys:?}"
                    ));
                }
            }
            "events" => {
                let allowed = list(&condition["StringEquals"]["events:detail-type"]);
                let expected = sendable(functions, invokes);
                if actions != BTreeSet::from(["events:PutEvents".to_string()])
                    || resources != BTreeSet::from(["GetAtt EventBus.Arn".to_string()])
                {
                    problem(format!("statement {sid} should be events:PutEvents on !GetAtt EventBus.Arn only"));
                }
                if allowed != expected {
                    problem(format!(
                        "statement {sid} lets it send {allowed:?}; its code sends exactly {expected:?} (declared with .sends, plus the runtime's)"
                    ));
                }
                if text(&condition["StringEquals"]["events:source"]) != "cairn" {
                    problem(format!(
                        "statement {sid} should require events:source `cairn` (what EventBridgeBus sends)"
                    ));
                }
            }
            "scheduler" => {
                let schedules = format!(
                    "Sub arn:${{AWS::Partition}}:scheduler:${{AWS::Region}}:${{AWS::AccountId}}:schedule/${{ScheduleGroup}}/{scope}.*"
                );
                let wanted =
                    BTreeSet::from(["scheduler:CreateSchedule".to_string(), "scheduler:DeleteSchedule".to_string()]);
                if actions != wanted || resources != BTreeSet::from([schedules.clone()]) {
                    problem(format!(
                        "statement {sid} should allow {wanted:?} on !{schedules} only, not {actions:?} on {resources:?}"
                    ));
                }
            }
            "iam" => {
                let passed = text(&condition["StringEquals"]["iam:PassedToService"]);
                if actions != BTreeSet::from(["iam:PassRole".to_string()])
                    || resources != BTreeSet::from([format!("GetAtt {role}.Arn")])
                    || passed != "scheduler.amazonaws.com"
                {
                    problem(format!("statement {sid} should pass only !GetAtt {role}.Arn, to scheduler.amazonaws.com"));
                }
            }
            "ssm" => {
                let wanted: BTreeSet<String> = paths
                    .iter()
                    .map(|path| {
                        format!("Sub arn:${{AWS::Partition}}:ssm:${{AWS::Region}}:${{AWS::AccountId}}:parameter{path}*")
                    })
                    .collect();
                if actions != BTreeSet::from(["ssm:GetParameter".to_string()])
                    || resources.len() != 1
                    || !resources.is_subset(&wanted)
                {
                    problem(format!(
                        "statement {sid} should be ssm:GetParameter on one of {wanted:?} (its .reads_parameters) only"
                    ));
                }
            }
            "sqs" => {
                let wanted = BTreeSet::from(
                    ["sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ReceiveMessage"].map(String::from),
                );
                if actions != wanted || resources != BTreeSet::from([format!("GetAtt {prefix}TimerQueue.Arn")]) {
                    problem(format!(
                        "statement {sid} should let its event source mapping read its own timer queue only, not {actions:?} on {resources:?}"
                    ));
                }
            }
            "kms" => {
                if text(&condition["StringEquals"]["kms:ViaService"]).is_empty() {
                    problem(format!("statement {sid} should be conditioned on kms:ViaService"));
                }
            }
            other => problem(format!("statement {sid}: unexpected {other} permissions {actions:?}")),
        }
    }
    for needed in ["dynamodb", "events", "scheduler", "iam", "sqs"] {
        if !seen.contains(needed) {
            problem(format!("no {needed} statement: the code needs one"));
        }
    }
    if paths.is_empty() == seen.contains("ssm") {
        problem("ssm:GetParameter belongs exactly to the functions that declare .reads_parameters".to_string());
    }
    for (event_name, event) in untag(&properties["Events"]).as_mapping().into_iter().flatten() {
        let event_name = event_name.as_str().unwrap_or_default();
        if text(&event["Type"]) == "ScheduleV2"
            && (text(&event["Properties"]["RoleArn"]) != format!("GetAtt {role}.Arn")
                || text(&event["Properties"]["GroupName"]) != "Ref ScheduleGroup")
        {
            problems.push(format!(
                "{name}.{event_name}: a ScheduleV2 should run as !GetAtt {role}.Arn in !Ref ScheduleGroup (SAM's default names collide across stacks)"
            ));
        }
    }
    problems.extend(scheduler_role(template, &role, &function_arn));
    problems
}

/// The problems with a function's Scheduler role: it may invoke only that function (and send
/// dead letters), and only Scheduler, for this account's schedule group, may assume it.
fn scheduler_role(template: &Value, role: &str, function_arn: &str) -> Vec<String> {
    let resource = &template["Resources"][role];
    if text(&resource["Type"]) != "AWS::IAM::Role" {
        return vec![format!("{role}: missing (each function has its own Scheduler role)")];
    }
    let mut problems = Vec::new();
    let trust = &resource["Properties"]["AssumeRolePolicyDocument"]["Statement"][0];
    let condition = &trust["Condition"]["StringEquals"];
    if text(&trust["Principal"]["Service"]) != "scheduler.amazonaws.com"
        || text(&condition["aws:SourceAccount"]) != "Ref AWS::AccountId"
        || text(&condition["aws:SourceArn"]) != "GetAtt ScheduleGroup.Arn"
    {
        problems.push(format!(
            "{role}: only scheduler.amazonaws.com for this account's ScheduleGroup (aws:SourceAccount, aws:SourceArn) may assume it"
        ));
    }
    for policy in untag(&resource["Properties"]["Policies"]).as_sequence().into_iter().flatten() {
        for statement in untag(&policy["PolicyDocument"]["Statement"]).as_sequence().into_iter().flatten() {
            let actions = list(&statement["Action"]);
            let resources = list(&statement["Resource"]);
            let allowed = (actions == BTreeSet::from(["lambda:InvokeFunction".to_string()])
                && resources == BTreeSet::from([function_arn.to_string()]))
                || (actions == BTreeSet::from(["sqs:SendMessage".to_string()])
                    && resources == BTreeSet::from(["GetAtt DeadLetterQueue.Arn".to_string()]));
            if !allowed {
                problems
                    .push(format!("{role}: grants {actions:?} on {resources:?}; it may only invoke !{function_arn}"));
            }
        }
    }
    problems
}

/// Resource names: stack-scoped (or left to CloudFormation), never fixed, so two stacks can
/// share an account and region.
pub(crate) fn fixed_names(template: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, resource) in untag(&template["Resources"]).as_mapping().into_iter().flatten() {
        let name = name.as_str().unwrap_or_default();
        let properties = &resource["Properties"];
        for key in ["Name", "FunctionName", "QueueName", "TableName", "RoleName", "GroupName"] {
            let value = &properties[key];
            // A literal, or a `!Sub` without the stack name (a `!Ref` names another resource).
            let fixed = matches!(value, Value::String(_)) || text(value).starts_with("Sub ");
            if fixed && !text(value).contains("AWS::StackName") {
                problems.push(format!("{name}.{key}: `{}` is fixed; use the stack name", text(value)));
            }
        }
        for (event_name, event) in untag(&properties["Events"]).as_mapping().into_iter().flatten() {
            let event_name = event_name.as_str().unwrap_or_default();
            let value = &event["Properties"]["Name"];
            if !value.is_null() && !text(value).contains("AWS::StackName") {
                problems.push(format!("{name}.Events.{event_name}.Name: `{}` is fixed", text(value)));
            }
        }
    }
    problems
}

/// Every `Resource: '*'` in the template (none is needed: each action used has resource-level
/// permissions).
pub(crate) fn wildcards(value: &Value, at: &str, found: &mut Vec<String>) {
    match untag(value) {
        Value::Mapping(map) => {
            for (key, inner) in map {
                let key = key.as_str().unwrap_or_default();
                if key == "Resource" && list(inner).contains("*") {
                    found.push(format!("{at}: Resource '*'"));
                }
                wildcards(inner, &format!("{at}.{key}"), found);
            }
        }
        Value::Sequence(items) => {
            for (i, inner) in items.iter().enumerate() {
                wildcards(inner, &format!("{at}[{i}]"), found);
            }
        }
        _ => {}
    }
}

/// Every `!Ref`, `!GetAtt`, `!Sub` reference and condition name that names nothing: SAM's
/// validation lets a bad `!Ref` in a policy through.
pub(crate) fn unresolved(template: &Value) -> Vec<String> {
    let mut known: BTreeSet<String> =
        ["AWS::StackName", "AWS::Region", "AWS::AccountId", "AWS::Partition", "AWS::NoValue", "AWS::URLSuffix"]
            .into_iter()
            .map(str::to_string)
            .collect();
    for section in ["Resources", "Parameters"] {
        for (name, resource) in untag(&template[section]).as_mapping().into_iter().flatten() {
            let name = name.as_str().unwrap_or_default().to_string();
            // What SAM generates for a function: its role and its Function URL.
            if text(&resource["Type"]) == "AWS::Serverless::Function" {
                known.insert(format!("{name}Role"));
                known.insert(format!("{name}Url"));
            }
            known.insert(name);
        }
    }
    let conditions: BTreeSet<String> = untag(&template["Conditions"])
        .as_mapping()
        .into_iter()
        .flatten()
        .filter_map(|(k, _)| k.as_str().map(str::to_string))
        .collect();
    let mut problems = Vec::new();
    walk_references(template, "", &known, &conditions, &mut problems);
    problems
}

fn walk_references(
    value: &Value,
    at: &str,
    known: &BTreeSet<String>,
    conditions: &BTreeSet<String>,
    out: &mut Vec<String>,
) {
    if let Some((tag, inner)) = intrinsic(value) {
        let names: Vec<String> = match (tag.as_str(), untag(inner)) {
            ("Ref", Value::String(name)) => vec![name.clone()],
            ("GetAtt", Value::String(name)) => vec![name.split('.').next().unwrap_or_default().to_string()],
            ("GetAtt", Value::Sequence(parts)) => {
                parts.first().and_then(|p| untag(p).as_str()).map(str::to_string).into_iter().collect()
            }
            ("Sub", Value::String(text)) => text
                .split("${")
                .skip(1)
                .filter_map(|rest| rest.split('}').next())
                .filter(|name| !name.starts_with('!'))
                .map(|name| name.split('.').next().unwrap_or_default().to_string())
                .collect(),
            ("If", Value::Sequence(parts)) => {
                let condition = parts.first().and_then(|p| untag(p).as_str()).unwrap_or_default();
                if !conditions.contains(condition) {
                    out.push(format!("{at}: !If names no condition `{condition}`"));
                }
                Vec::new()
            }
            _ => Vec::new(),
        };
        for name in names {
            if !known.contains(&name) {
                out.push(format!("{at}: !{tag} {name} names nothing in the template"));
            }
        }
        walk_references(inner, at, known, conditions, out);
        return;
    }
    match untag(value) {
        Value::Mapping(map) => {
            for (key, inner) in map {
                let key = key.as_str().unwrap_or_default();
                // A resource's or output's `Condition: Name` (a policy's Condition is a mapping).
                if let (true, Some(name)) = (key == "Condition", untag(inner).as_str())
                    && !conditions.contains(name)
                {
                    out.push(format!("{at}.Condition: no condition `{name}`"));
                }
                walk_references(inner, &format!("{at}.{key}"), known, conditions, out);
            }
        }
        Value::Sequence(items) => {
            for (i, inner) in items.iter().enumerate() {
                walk_references(inner, &format!("{at}[{i}]"), known, conditions, out);
            }
        }
        _ => {}
    }
}
