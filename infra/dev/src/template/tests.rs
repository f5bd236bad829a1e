//! The template reader against the project's template.yaml and hand-written mistakes.
#![allow(clippy::unwrap_used)]
use super::*;
use serde_json::json;

fn project_template() -> Template {
    Template::load(&format!("{}/../../template.yaml", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn reads_the_project_template() {
    let template = project_template();
    let hello = template.function("hello").unwrap();
    assert_eq!(
        (hello.resource.as_str(), hello.function_name.as_str(), hello.function_id.as_str()),
        ("HelloFunction", "cairn-hello", "hello")
    );
    assert_eq!(hello.rules[0].bus, "cairn");
    // Its trigger, and calls from `step.invoke` or `cairn invoke`.
    assert_eq!(hello.event_names(), ["app/my.event", "inngest/function.invoked"]);
    // Its timer queue, through an AWS::Lambda::EventSourceMapping resource.
    let timer = &hello.queues[0];
    assert_eq!(
        (timer.name.as_str(), timer.queue_resource.as_str(), timer.batch_size, timer.report_batch_item_failures),
        ("HelloTimer", "HelloTimerQueue", 10, true)
    );
    assert_eq!(template.queue("timer-hello").map(|(f, _)| f.binary.as_str()), Some("hello"));
    assert!(template.function("arn:aws:lambda:us-east-1:000000000000:function:cairn-hello").is_some());
    let daily = template.function("readwise-daily-sync").unwrap();
    assert!(daily.schedules.iter().any(|s| s.expression_text == "cron(0 3 * * ? *)"));
    let cron = daily.schedules.iter().find(|s| s.expression_text.starts_with("cron(")).unwrap();
    assert_eq!(cron.input, r#"{"cairn":"cron","cron":"0 3 * * *","id":"<aws.scheduler.scheduled-time>"}"#);
    let envelope = json!({"source": "app", "detail-type": "app/my.event", "detail": {}});
    let routed: Vec<&str> = template.route("cairn", &envelope).iter().map(|f| f.binary.as_str()).collect();
    assert_eq!(routed, ["hello"]);
    assert!(template.route("default", &envelope).is_empty(), "rules listen on their own bus");
    // An invoked function's result goes back to the caller's binary only.
    let finished = json!({"detail-type": "inngest/function.finished", "detail": {"data": {"event": {"data": {"_inngest": {"source_fn_id": "order-approval"}}}}}});
    let routed: Vec<&str> = template.route("cairn", &finished).iter().map(|f| f.binary.as_str()).collect();
    assert_eq!(routed, ["order-approval"]);
}

fn with_events(events: &str) -> String {
    format!(
        "Resources:\n  Bus:\n    Type: AWS::Events::EventBus\n    Properties:\n      Name: cairn\n  HelloFunction:\n    Type: AWS::Serverless::Function\n    Metadata:\n      BuildProperties:\n        Binary: hello\n    Properties:\n      Events:\n{events}"
    )
}

const QUEUE: &str = "  HelloTimerQueue:\n    Type: AWS::SQS::Queue\n    Properties:\n      RedrivePolicy:\n        maxReceiveCount: 3\n        deadLetterTargetArn: arn\n  Other:\n    Type: AWS::Events::EventBus\n";

#[test]
fn sqs_event_sources_serve_the_timer_queue_of_their_function() {
    let text = format!(
        "{}{QUEUE}",
        with_events(
            "        Timer:\n          Type: SQS\n          Properties:\n            Queue: !GetAtt HelloTimerQueue.Arn\n            BatchSize: 5\n            FunctionResponseTypes: [ReportBatchItemFailures]\n"
        )
    );
    let template = Template::parse("template.yaml", &text).unwrap();
    let hello = template.function("hello").unwrap();
    assert!(hello.is_routed());
    let source = &hello.queues[0];
    assert_eq!(
        (source.name.as_str(), source.queue_resource.as_str(), source.batch_size, source.report_batch_item_failures),
        ("Timer", "HelloTimerQueue", 5, true)
    );
    assert_eq!((source.max_receive_count, source.delay_seconds, source.max_message_bytes), (Some(3), 0, 262_144));
    assert_eq!(template.queue_names(), ["timer-hello"]);
    assert_eq!(template.queue("timer-hello").map(|(f, _)| f.binary.as_str()), Some("hello"));
    assert!(template.queue("timer-nope").is_none() && template.queue("hello").is_none());
    // The long form, and defaults.
    let long = format!(
        "{}{QUEUE}",
        with_events(
            "        Timer:\n          Type: SQS\n          Properties:\n            Queue:\n              Fn::GetAtt: [HelloTimerQueue, Arn]\n"
        )
    );
    let template = Template::parse("template.yaml", &long).unwrap();
    let source = &template.functions[0].queues[0];
    assert_eq!((source.batch_size, source.report_batch_item_failures), (10, false));
    // A function without an SQS source has no queue.
    let plain = Template::parse("t", &with_events("        Daily:\n          Type: ScheduleV2\n          Properties:\n            ScheduleExpression: rate(1 day)\n")).unwrap();
    assert!(plain.queue("timer-hello").is_none() && plain.queue_names().is_empty());

    let err = |queue: &str| {
        let text = format!(
            "{}{QUEUE}",
            with_events(&format!(
                "        Timer:\n          Type: SQS\n          Properties:\n            Queue: {queue}\n"
            ))
        );
        Template::parse("template.yaml", &text).unwrap_err().to_string()
    };
    assert_eq!(
        err("!GetAtt Other.Arn"),
        "template.yaml: HelloFunction.Events.Timer.Queue: !GetAtt Other.Arn: not an AWS::SQS::Queue"
    );
    assert_eq!(
        err("!GetAtt Nope.Arn"),
        "template.yaml: HelloFunction.Events.Timer.Queue: !GetAtt Nope.Arn: no such resource"
    );
    assert_eq!(
        err("!GetAtt HelloTimerQueue.QueueUrl"),
        "template.yaml: HelloFunction.Events.Timer.Queue: !GetAtt HelloTimerQueue.QueueUrl: expected !GetAtt <an AWS::SQS::Queue of this template>.Arn"
    );
}

#[test]
fn reconcile_schedules_can_fire_every_few_seconds() {
    let text = with_events(
        "        Reconcile:\n          Type: ScheduleV2\n          Properties:\n            ScheduleExpression: rate(1 minute)\n            Input: '{\"cairn\": \"reconcile\"}'\n        Daily:\n          Type: ScheduleV2\n          Properties:\n            ScheduleExpression: cron(0 3 * * ? *)\n            Input: '{\"cairn\": \"cron\"}'\n",
    );
    let mut template = Template::parse("template.yaml", &text).unwrap();
    assert_eq!(template.functions[0].schedules[0].expression_text, "rate(1 minute)");
    template.reconcile_every(2);
    let schedules = &template.functions[0].schedules;
    assert_eq!(
        (schedules[0].expression_text.as_str(), schedules[1].expression_text.as_str()),
        ("rate(2 seconds)", "cron(0 3 * * ? *)"),
        "only the reconciler changes"
    );
    assert_eq!(schedules[0].expression.next_after(10_000, 10_000, "UTC"), Some(12_000));
    template.reconcile_every(1);
    assert_eq!(template.functions[0].schedules[0].expression_text, "rate(1 second)");
    assert!(is_reconcile(r#"{"cairn": "reconcile", "x": 1}"#));
    assert!(!is_reconcile(r#"{"cairn": "cron"}"#) && !is_reconcile("reconcile") && !is_reconcile("[]"));
}

#[test]
fn stack_scoped_names_resolve_with_the_local_stack_name() {
    let text = |name: &str| {
        format!(
            "Resources:\n  Bus:\n    Type: AWS::Events::EventBus\n    Properties:\n      Name: !Ref AWS::StackName\n  F:\n    Type: AWS::Serverless::Function\n    Metadata:\n      BuildProperties:\n        Binary: hello\n    Properties:\n      FunctionName: {name}\n      Events:\n        A:\n          Type: EventBridgeRule\n          Properties:\n            EventBusName: !Ref Bus\n            Pattern:\n              detail-type: [a]\n"
        )
    };
    let template = Template::parse("t", &text("!Sub '${AWS::StackName}-hello'")).unwrap();
    assert_eq!(
        (template.functions[0].function_name.as_str(), template.buses()),
        ("cairn-hello", vec!["cairn".to_string(), "default".to_string()])
    );
    let long = Template::parse("t", &text("{'Fn::Sub': 'x-${AWS::StackName}'}")).unwrap();
    assert_eq!(long.functions[0].function_name, "x-cairn");
    assert_eq!(
        Template::parse("t", &text("!Sub '${Env}-hello'")).unwrap_err().to_string(),
        "t: F.FunctionName: !Sub \"${Env}-hello\": only ${AWS::StackName} is resolved here, not ${Env}-hello"
    );
}

#[test]
fn mistakes_name_the_resource_and_the_problem() {
    let err = |text: &str| Template::parse("template.yaml", text).unwrap_err().to_string();
    assert_eq!(
        err(&with_events(
            "        A:\n          Type: EventBridgeRule\n          Properties:\n            EventBusName: !Ref Bus\n            Pattern:\n              detail-type: app/my.event\n"
        )),
        "template.yaml: HelloFunction.Events.A.Pattern: detail-type must be a list of values (e.g. [\"app/my.event\"]), found a string"
    );
    assert_eq!(
        err(&with_events(
            "        A:\n          Type: EventBridgeRule\n          Properties:\n            EventBusName: !Ref Nope\n            Pattern:\n              detail-type: [a]\n"
        )),
        "template.yaml: HelloFunction.Events.A.EventBusName: !Ref Nope: no such resource or parameter"
    );
    assert_eq!(
        err(&with_events(
            "        Daily:\n          Type: ScheduleV2\n          Properties:\n            ScheduleExpression: cron(0 3 * * *)\n"
        )),
        "template.yaml: HelloFunction.Events.Daily.ScheduleExpression: Invalid Schedule Expression cron(0 3 * * *): cron() needs 6 fields (minutes hours day-of-month month day-of-week year), found 5"
    );
    assert_eq!(
        err("Resources:\n  F:\n    Type: AWS::Serverless::Function\n    Properties: {}\n"),
        "template.yaml: F.Metadata: no BuildProperties.Binary: which functions/* binary does it run?"
    );
    assert!(err("Resources: [").starts_with("template.yaml: not valid YAML: "));
}
