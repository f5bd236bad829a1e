//! `cairn template`: template.yaml's function resources are what the functions generate, and
//! the generator's refusals name what is wrong.
#![allow(clippy::unwrap_used)] // Tests: an unwrap that fails is a failed test.

use cairn::prelude::*;
use cairn_aws::{EnvValue, Lambda};
use cairn_dev::generate::{GenerateError, generate, regenerate};

fn template_path() -> String {
    format!("{}/../../template.yaml", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn template_yaml_is_what_the_functions_generate() {
    let text = std::fs::read_to_string(template_path()).unwrap();
    let generated = regenerate(&text, &cairn_functions::lambdas()).unwrap();
    if generated != text {
        let (line, (ours, theirs)) =
            generated.lines().zip(text.lines()).enumerate().find(|(_, (a, b))| a != b).unwrap_or((0, ("", "")));
        panic!(
            "template.yaml differs from what the functions generate; run `make generate` and commit it \
             (first difference at line {}: generated `{ours}`, file `{theirs}`)",
            line + 1
        );
    }
}

fn cron_lambda(cron: &str) -> Lambda {
    let function = Function::new("nightly").cron(cron).handler(|_: Event, _: Step| async move { Ok(()) }).unwrap();
    Lambda::new("nightly", vec![function])
}

#[test]
fn a_cron_on_both_days_becomes_two_schedules_with_one_run_id() {
    let resources = generate(&[cron_lambda("TZ=Europe/Paris 0 9 1 * 1")]).unwrap().resources;
    assert!(resources.contains("        Cron1Part1:\n"), "{resources}");
    assert!(
        resources
            .contains("ScheduleExpression: cron(0 9 1 * ? *)\n            ScheduleExpressionTimezone: Europe/Paris")
    );
    assert!(
        resources
            .contains("ScheduleExpression: cron(0 9 ? * 2 *)\n            ScheduleExpressionTimezone: Europe/Paris")
    );
    let input = "Input: '{\"cairn\":\"cron\",\"cron\":\"TZ=Europe/Paris 0 9 1 * 1\",\"id\":\"<aws.scheduler.scheduled-time>\"}'";
    assert_eq!(resources.matches(input).count(), 2, "{resources}");
    let weekend = generate(&[cron_lambda("0 0 * * 5-7")]).unwrap().resources;
    assert!(weekend.contains("ScheduleExpression: cron(0 0 ? * 1,6,7 *)\n"), "{weekend}");
}

#[test]
fn refusals_name_what_is_wrong() {
    let text = std::fs::read_to_string(template_path()).unwrap();
    let unknown = Lambda::new("nightly", cron_lambda("0 3 * * *").into_functions())
        .env("NIGHTLY_URL", EnvValue::parameter("NightlyUrl"));
    assert_eq!(
        regenerate(&text, &[unknown]).unwrap_err().to_string(),
        "binary `nightly`: NIGHTLY_URL reads parameter `NightlyUrl`, which template.yaml's Parameters do not declare"
    );
    assert_eq!(
        regenerate("Resources:\n", &[cron_lambda("0 3 * * *")]).unwrap_err(),
        GenerateError::MissingMarkers { part: "resources" }
    );
    assert_eq!(
        generate(&[cron_lambda("0 3 * * *"), cron_lambda("0 4 * * *")]).unwrap_err().to_string(),
        "binary `nightly` appears twice in the list of functions"
    );
    // A cron EventBridge cannot express never gets this far: `Function::cron` refuses it.
    let refused = Function::new("nightly").cron("0 3 * * 1#2,3").handler(|_: Event, _: Step| async move { Ok(()) });
    assert!(refused.unwrap_err().to_string().contains("`#` and `L` must stand alone"));
}

/// An `if` of the common equality form becomes an EventBridge filter that the generated
/// template's rules apply (here through the dev server's matcher, as EventBridge would): both
/// shapes of an event's detail pass when the condition holds, and neither when it does not.
#[test]
fn a_trigger_condition_filters_its_rule_for_both_event_shapes() {
    let pro = Function::new("pro-welcome")
        .on_event_if("app/user.created", "event.data.plan == 'pro' && event.data.seats == 5")
        .handler(|_: Event, _: Step| async move { Ok(()) })
        .unwrap();
    let text = std::fs::read_to_string(template_path()).unwrap();
    let generated = regenerate(&text, &[Lambda::new("pro-welcome", vec![pro])]).unwrap();
    assert!(
        generated.contains("        # Triggers pro-welcome when event.data.plan == 'pro' && event.data.seats == 5.\n")
    );
    let template = cairn_dev::template::Template::parse("template.yaml", &generated).unwrap();
    let routed = |detail: serde_json::Value| {
        let envelope = serde_json::json!({"source": "app", "detail-type": "app/user.created", "detail": detail});
        template.route("cairn", &envelope).iter().map(|f| f.binary.clone()).collect::<Vec<_>>()
    };
    assert_eq!(
        routed(serde_json::json!({"plan": "pro", "seats": 5})),
        ["pro-welcome"],
        "put-events: detail is the data"
    );
    let from_cairn = serde_json::json!({"name": "app/user.created", "data": {"plan": "pro", "seats": 5}, "id": "e1"});
    assert_eq!(routed(from_cairn), ["pro-welcome"], "Cairn's bus: detail is the whole event");
    assert!(routed(serde_json::json!({"plan": "free", "seats": 5})).is_empty());
    assert!(routed(serde_json::json!({"name": "app/user.created", "data": {"plan": "pro", "seats": 4}})).is_empty());
}
