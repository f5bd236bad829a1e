//! template.yaml matches the code: every functions/* binary has its function, and each
//! function's triggers are exactly its EventBridge rules and ScheduleV2 crons; its permissions
//! are exactly what its code uses (`policy`); names are the stack's; the Inngest endpoint
//! exists only with a signing key.
#![allow(clippy::unwrap_used)] // Tests: an unwrap that fails is a failed test.

mod policy;

use cairn::{Function, Trigger};
use serde_yaml::Value;
use std::collections::BTreeSet;

fn template() -> Value {
    let path = format!("{}/../template.yaml", env!("CARGO_MANIFEST_DIR"));
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The project's one list (functions/registry): each binary and its functions.
fn code() -> Vec<(String, Vec<Function>)> {
    cairn_functions::lambdas().into_iter().map(|l| (l.binary().to_string(), l.into_functions())).collect()
}

fn functions_of(binary: &str) -> Vec<Function> {
    code().into_iter().find(|(b, _)| b == binary).map(|(_, f)| f).unwrap_or_default()
}

/// The functions a binary's code calls with `step.invoke`, as its functions declare them
/// (`.invokes`): their results come back to it as `inngest/function.finished`.
fn invokes(binary: &str) -> Vec<String> {
    functions_of(binary).iter().flat_map(|f| f.invokes().to_vec()).collect()
}

/// Events a function's `wait_for_event` waits for (`.awaits`): its rules must route them too,
/// or the waiting run never hears of them.
fn awaited(binary: &str) -> Vec<String> {
    functions_of(binary).iter().flat_map(|f| f.awaits().to_vec()).collect()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .map(|items| items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// The problems with `binary`'s resource in `template`, each a sentence naming the resource.
fn check(template: &Value, binary: &str, functions: &[Function]) -> Vec<String> {
    let registry = cairn::Registry::new(functions.to_vec()).unwrap();
    let function = &functions[0];
    let resources = template["Resources"].as_mapping().unwrap();
    let Some((name, resource)) =
        resources.iter().find(|(_, r)| r["Metadata"]["BuildProperties"]["Binary"].as_str() == Some(binary))
    else {
        return vec![format!("no AWS::Serverless::Function builds binary `{binary}`")];
    };
    let name = name.as_str().unwrap();
    let mut problems = Vec::new();
    let properties = &resource["Properties"];
    let expected_name = format!("Sub ${{AWS::StackName}}-{binary}");
    if policy::text(&properties["FunctionName"]) != expected_name {
        problems.push(format!(
            "{name}: FunctionName should be !{expected_name} (its Scheduler role and CAIRN_FUNCTION_ARN name it)"
        ));
    }
    let mut routed = BTreeSet::new();
    let mut schedules = BTreeSet::new();
    let (mut timer, mut reconcile) = (false, false);
    let timer_queue = format!("{name}TimerQueue").replace("FunctionTimerQueue", "TimerQueue");
    let yaml = |value: &Value| serde_yaml::to_string(value).unwrap_or_default();
    for (event_name, event) in properties["Events"].as_mapping().into_iter().flatten() {
        let event_name = event_name.as_str().unwrap_or_default();
        let props = &event["Properties"];
        match event["Type"].as_str() {
            Some("EventBridgeRule") => {
                let types = strings(&props["Pattern"]["detail-type"]);
                let data = &props["Pattern"]["detail"]["data"];
                for kind in &types {
                    // System events are routed by what they concern, never wholesale.
                    let keyed = match kind.as_str() {
                        // Any of its functions may be called, by `step.invoke` or `cairn invoke`.
                        cairn::INVOKED_EVENT => {
                            strings(&data["_inngest"]["fn_id"]).iter().all(|id| registry.get(id).is_some())
                        }
                        // Its invokes' results: of calls its own functions made (failure handlers too).
                        cairn::FINISHED_EVENT => {
                            let callers = strings(&data["event"]["data"]["_inngest"]["source_fn_id"]);
                            !callers.is_empty() && callers.iter().all(|id| registry.get(id).is_some())
                        }
                        cairn::FAILED_EVENT => strings(&data["function_id"]) == [function.id()],
                        _ => true,
                    };
                    if !keyed {
                        problems
                            .push(format!("{name}.{event_name}: `{kind}` is not routed by the ids this binary owns"));
                    }
                }
                routed.extend(types);
            }
            Some("ScheduleV2") => {
                let input: serde_json::Value =
                    serde_json::from_str(props["Input"].as_str().unwrap_or("null")).unwrap_or_default();
                if input["cairn"] == "reconcile" {
                    reconcile = true;
                    continue;
                }
                if input["id"] != "<aws.scheduler.scheduled-time>" {
                    problems.push(format!(
                        "{name}.{event_name}: the cron's Input needs \"id\": \"<aws.scheduler.scheduled-time>\" (one run per firing)"
                    ));
                }
                schedules.insert((
                    props["ScheduleExpression"].as_str().unwrap_or_default().to_string(),
                    props["ScheduleExpressionTimezone"].as_str().unwrap_or("UTC").to_string(),
                    input["cron"].as_str().unwrap_or_default().to_string(),
                ));
            }
            Some("SQS") => problems.push(format!(
                "{name}.{event_name}: SAM's SQS event lets the function receive from every queue of the account \
                 (AWSLambdaSQSQueueExecutionRole); write an AWS::Lambda::EventSourceMapping"
            )),
            other => problems.push(format!("{name}.{event_name}: unexpected event type {other:?}")),
        }
    }
    // Its timer queue's event source mapping.
    for (_, mapping) in resources.iter().filter(|(_, r)| r["Type"].as_str() == Some("AWS::Lambda::EventSourceMapping"))
    {
        let props = &mapping["Properties"];
        if policy::text(&props["FunctionName"]) == format!("Ref {name}")
            && policy::text(&props["EventSourceArn"]) == format!("GetAtt {timer_queue}.Arn")
            && strings(&props["FunctionResponseTypes"]) == ["ReportBatchItemFailures"]
        {
            timer = true;
        }
    }
    let mut triggers = BTreeSet::new();
    let mut crons = BTreeSet::new();
    for function in registry.functions() {
        for trigger in function.triggers() {
            match trigger {
                Trigger::Event { name, .. } => {
                    triggers.insert(name.clone());
                }
                Trigger::Cron(cron) => {
                    for expression in cairn_aws::schedule_expression(cron).unwrap() {
                        crons.insert((expression, cron.time_zone().to_string(), cron.source().to_string()));
                    }
                }
            }
        }
    }
    triggers.insert(cairn::INVOKED_EVENT.to_string());
    if !invokes(binary).is_empty() {
        triggers.insert(cairn::FINISHED_EVENT.to_string());
    }
    for missing in triggers.difference(&routed) {
        problems.push(format!("{name}: trigger `{missing}` has no EventBridgeRule"));
    }
    for awaited in awaited(binary) {
        if !routed.contains(&awaited) {
            problems
                .push(format!("{name}: `{awaited}` is awaited by a wait_for_event but no EventBridgeRule routes it"));
        }
    }
    for extra in routed.difference(&triggers).filter(|e| !awaited(binary).contains(e)) {
        problems.push(format!("{name}: a rule routes `{extra}`, which function `{}` does not handle", function.id()));
    }
    for missing in crons.difference(&schedules) {
        problems.push(format!(
            "{name}: cron `{}` needs a ScheduleV2 with {} in {} and Input cron `{}`",
            missing.2, missing.0, missing.1, missing.2
        ));
    }
    for extra in schedules.difference(&crons) {
        problems.push(format!("{name}: ScheduleV2 {} ({}) matches no cron of the code", extra.0, extra.2));
    }
    if !timer {
        problems.push(format!(
            "{name}: needs an AWS::Lambda::EventSourceMapping from !GetAtt {timer_queue}.Arn with FunctionResponseTypes [ReportBatchItemFailures]"
        ));
    }
    if !yaml(&properties["Environment"]["Variables"]["CAIRN_TIMER_QUEUE_URL"]).contains(&timer_queue) {
        problems.push(format!("{name}: CAIRN_TIMER_QUEUE_URL should be !Ref {timer_queue}"));
    }
    if !yaml(&properties["Policies"]).contains(&format!("{timer_queue}.QueueName")) {
        problems.push(format!("{name}: needs SQSSendMessagePolicy on {timer_queue}"));
    }
    if !reconcile {
        problems.push(format!("{name}: needs a ScheduleV2 with Input {{\"cairn\": \"reconcile\"}} (the reconciler)"));
    }
    problems
}

#[test]
fn every_function_binary_is_in_the_template_with_rules_matching_its_triggers() {
    let template = template();
    let problems: Vec<String> =
        code().iter().flat_map(|(binary, functions)| check(&template, binary, functions)).collect();
    assert!(problems.is_empty(), "{problems:#?}");
    let dir = format!("{}/../functions", env!("CARGO_MANIFEST_DIR"));
    // `serve` is the Inngest endpoint for all of them and `registry` their list, not workflows.
    let mut on_disk: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name != "serve" && name != "registry")
        .collect();
    on_disk.sort();
    let mut known: Vec<String> = code().iter().map(|(b, _)| b.to_string()).collect();
    known.sort();
    assert_eq!(on_disk, known, "every functions/* crate is checked here and deployed by the template");
}

/// The logical id of the function that builds `binary`.
fn resource_of(template: &Value, binary: &str) -> String {
    let resources = template["Resources"].as_mapping().unwrap();
    let found = resources.iter().find(|(_, r)| r["Metadata"]["BuildProperties"]["Binary"].as_str() == Some(binary));
    found.map(|(name, _)| name.as_str().unwrap().to_string()).unwrap_or_default()
}

/// Each function may touch only its own items, send only the events its code sends, schedule
/// only its own wake-ups and pass only its own Scheduler role (which can only invoke it).
#[test]
fn each_function_may_touch_only_its_own_items_events_and_schedules() {
    let template = template();
    let problems: Vec<String> = code()
        .iter()
        .flat_map(|(binary, functions)| {
            let name = resource_of(&template, binary);
            policy::check(&template, &name, binary, functions, !invokes(binary).is_empty())
        })
        .collect();
    assert!(problems.is_empty(), "{problems:#?}");
    let mut wildcards = Vec::new();
    policy::wildcards(&template["Resources"], "Resources", &mut wildcards);
    assert!(wildcards.is_empty(), "{wildcards:#?}");
    // The Inngest endpoint keeps no state here and sends nothing to the bus.
    assert!(template["Resources"]["ServeFunction"]["Properties"]["Policies"].is_null());
}

#[test]
fn a_widened_policy_is_reported_naming_the_function_and_the_grant() {
    let text = std::fs::read_to_string(format!("{}/../template.yaml", env!("CARGO_MANIFEST_DIR")))
        .unwrap()
        .replacen("dynamodb:DeleteItem, dynamodb:Query]", "dynamodb:DeleteItem, dynamodb:Query, dynamodb:Scan]", 1)
        .replacen("dynamodb:LeadingKeys: ['hello#*']", "dynamodb:LeadingKeys: ['*']", 1)
        .replacen(
            "events:detail-type: [inngest/function.failed, inngest/function.finished]",
            "events:detail-type: [inngest/function.failed, inngest/function.finished, app/order.approved]",
            1,
        )
        .replacen("schedule/${ScheduleGroup}/hello.*'", "schedule/${ScheduleGroup}/*'", 1);
    let template: Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(
        policy::check(&template, "HelloFunction", "hello", &[hello::function()], false),
        [
            "HelloFunction: statement OwnItems grants [\"dynamodb:Scan\"], which the store never calls (LeadingKeys cannot confine a Scan)",
            "HelloFunction: statement OwnItems should carry exactly ForAllValues:StringLike dynamodb:LeadingKeys [hello#*], not {\"*\"}",
            "HelloFunction: statement DeclaredEvents lets it send {\"app/order.approved\", \"inngest/function.failed\", \"inngest/function.finished\"}; its code sends exactly {\"inngest/function.failed\", \"inngest/function.finished\"} (declared with .sends, plus the runtime's)",
            "HelloFunction: statement OwnSchedules should allow {\"scheduler:CreateSchedule\", \"scheduler:DeleteSchedule\"} on !Sub arn:${AWS::Partition}:scheduler:${AWS::Region}:${AWS::AccountId}:schedule/${ScheduleGroup}/hello.* only, not {\"scheduler:CreateSchedule\", \"scheduler:DeleteSchedule\"} on {\"Sub arn:${AWS::Partition}:scheduler:${AWS::Region}:${AWS::AccountId}:schedule/${ScheduleGroup}/*\"}",
        ]
    );
    // A function whose code sends an event it may not: declared in code, missing in the template.
    let sync = readwise_daily_sync::function();
    let template = self::template();
    let hello_policy_on_sync = policy::check(&template, "HelloFunction", "hello", &[sync], false);
    assert!(hello_policy_on_sync.iter().any(|p| p.contains("its code sends exactly {\"inngest/function.failed\", \"inngest/function.finished\", \"readwise/fetch-books\"}")), "{hello_policy_on_sync:#?}");
}

#[test]
fn names_are_the_stacks_and_every_reference_resolves() {
    let template = template();
    assert_eq!(policy::fixed_names(&template), Vec::<String>::new());
    assert_eq!(policy::unresolved(&template), Vec::<String>::new());
    let broken: Value = serde_yaml::from_str(
        &std::fs::read_to_string(format!("{}/../template.yaml", env!("CARGO_MANIFEST_DIR")))
            .unwrap()
            .replacen("Name: !Ref AWS::StackName", "Name: cairn", 1)
            .replacen("Resource: !GetAtt HelloSchedulerRole.Arn", "Resource: !GetAtt HeloSchedulerRole.Arn", 1),
    )
    .unwrap();
    assert_eq!(policy::fixed_names(&broken), ["EventBus.Name: `cairn` is fixed; use the stack name"]);
    let unresolved = policy::unresolved(&broken);
    assert_eq!(unresolved.len(), 1, "{unresolved:#?}");
    assert!(unresolved[0].ends_with("!GetAtt HeloSchedulerRole names nothing in the template"), "{unresolved:#?}");
}

/// With the signing key's default (empty) no public endpoint exists at all; a key given must
/// look like one.
#[test]
fn the_inngest_endpoint_and_its_public_url_exist_only_with_a_signing_key() {
    let template = template();
    let key = &template["Parameters"]["InngestSigningKey"];
    assert_eq!((key["NoEcho"].as_bool(), key["Default"].as_str()), (Some(true), Some("")));
    assert_eq!(key["AllowedPattern"].as_str(), Some("^$|^(signkey-[A-Za-z0-9]+-)?[0-9A-Fa-f]{32,}$"));
    assert_eq!(
        serde_yaml::to_string(&template["Conditions"]["HasSigningKey"]).unwrap().trim(),
        "!Not\n- !Equals\n  - !Ref InngestSigningKey\n  - ''"
    );
    assert_eq!(template["Resources"]["ServeFunction"]["Condition"].as_str(), Some("HasSigningKey"));
    assert_eq!(template["Outputs"]["ServeUrl"]["Condition"].as_str(), Some("HasSigningKey"));
    let serve = &template["Resources"]["ServeFunction"]["Properties"]["Environment"]["Variables"];
    assert_eq!(policy::text(&serve["INNGEST_SIGNING_KEY"]), "Ref InngestSigningKey");
    assert_eq!(policy::text(&serve["INNGEST_SERVE_ORIGIN"]), "Ref ServeOrigin");
    assert_eq!(template["Parameters"]["ServeOrigin"]["Default"].as_str(), Some(""));
}

#[test]
fn every_function_has_a_streaming_function_url() {
    let template = template();
    for (name, resource) in template["Resources"].as_mapping().unwrap() {
        if resource["Type"].as_str() == Some("AWS::Serverless::Function") {
            let config = &resource["Properties"]["FunctionUrlConfig"];
            assert_eq!(config["InvokeMode"].as_str(), Some("RESPONSE_STREAM"), "{name:?}");
            // The Inngest endpoint authenticates by signature; the workflows' URLs by IAM.
            let auth = if name.as_str() == Some("ServeFunction") { "NONE" } else { "AWS_IAM" };
            assert_eq!(config["AuthType"].as_str(), Some(auth), "{name:?}");
        }
    }
    let serve = &template["Resources"]["ServeFunction"];
    assert_eq!(serve["Metadata"]["BuildProperties"]["Binary"].as_str(), Some("serve"));
    assert!(serve["Properties"]["Events"].is_null(), "serve is driven over HTTP only");
}

#[test]
fn a_misspelt_rule_and_a_wrong_cron_are_reported_naming_the_resource() {
    let text = std::fs::read_to_string(format!("{}/../template.yaml", env!("CARGO_MANIFEST_DIR")))
        .unwrap()
        .replace("detail-type: [app/my.event]", "detail-type: [app/my.evnt]")
        .replace("cron(0 3 * * ? *)", "cron(0 4 * * ? *)");
    let template: Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(
        check(&template, "hello", &[hello::function()]),
        vec![
            "HelloFunction: trigger `app/my.event` has no EventBridgeRule".to_string(),
            "HelloFunction: a rule routes `app/my.evnt`, which function `hello` does not handle".to_string(),
        ]
    );
    assert_eq!(
        check(&template, "readwise-daily-sync", &[readwise_daily_sync::function()]),
        vec![
            "ReadwiseDailySyncFunction: cron `0 3 * * *` needs a ScheduleV2 with cron(0 3 * * ? *) in UTC and Input cron `0 3 * * *`".to_string(),
            "ReadwiseDailySyncFunction: ScheduleV2 cron(0 4 * * ? *) (0 3 * * *) matches no cron of the code".to_string(),
        ]
    );
}
