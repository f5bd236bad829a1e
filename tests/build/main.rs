//! `sam build` on the generated template.yaml, as `make build` runs it (a release build with
//! cargo-lambda and zig: slow, so `make build-test` runs it, and CI builds one function end to
//! end, `HelloFunction`, unless `CAIRN_BUILD_FUNCTIONS` names others or `all`). Each built
//! bootstrap must exist, be an ELF executable for the template's architecture, and start
//! against a local Lambda Runtime API, answering invocations with its state in moto.
#![allow(clippy::unwrap_used)] // Tests: an unwrap that fails is a failed test.

use cairn::testing::StubServer;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// ELF `e_machine` of x86_64 and arm64.
const EM_X86_64: u16 = 0x3E;
const EM_AARCH64: u16 = 0xB7;

/// The template's functions built by `sam build` (the logical ids), with their binaries.
fn built_functions(template: &serde_yaml::Value, wanted: &str) -> Vec<(String, String)> {
    let mut functions: Vec<(String, String)> = template["Resources"]
        .as_mapping()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["Type"].as_str() == Some("AWS::Serverless::Function"))
        .map(|(id, r)| {
            let binary = r["Metadata"]["BuildProperties"]["Binary"].as_str().unwrap().to_string();
            (id.as_str().unwrap().to_string(), binary)
        })
        .collect();
    if wanted != "all" {
        let wanted: Vec<&str> = wanted.split(',').map(str::trim).collect();
        functions.retain(|(id, _)| wanted.contains(&id.as_str()));
        assert_eq!(functions.len(), wanted.len(), "CAIRN_BUILD_FUNCTIONS names a function the template lacks");
    }
    functions
}

/// Starts `bootstrap` against a Runtime API that hands it `event`; returns the body of its
/// first answer (`/response` or `/error`).
async fn invoke(bootstrap: &std::path::Path, binary: &str, env: &[(&str, String)], event: Value) -> (String, Value) {
    let event = event.to_string();
    let function_arn = format!("arn:aws:lambda:us-east-1:123456789012:function:cairn-{binary}");
    let runtime_api = StubServer::start_with_headers(move |request| {
        if request.path.ends_with("/invocation/next") {
            let headers = vec![
                ("Lambda-Runtime-Aws-Request-Id".to_string(), "req-1".to_string()),
                ("Lambda-Runtime-Deadline-Ms".to_string(), "9999999999999".to_string()),
                ("Lambda-Runtime-Invoked-Function-Arn".to_string(), function_arn.clone()),
                ("Lambda-Runtime-Trace-Id".to_string(), "Root=1-0-0".to_string()),
            ];
            (200, headers, event.clone())
        } else {
            (202, Vec::new(), "{}".to_string())
        }
    })
    .await;
    let mut child = std::process::Command::new(bootstrap)
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", runtime_api.url().trim_start_matches("http://"))
        .env("AWS_LAMBDA_FUNCTION_NAME", format!("cairn-{binary}"))
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("CAIRN_SCOPE", binary)
        .env("CAIRN_FUNCTION_ARN", format!("arn:aws:lambda:us-east-1:123456789012:function:cairn-{binary}"))
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let answer = loop {
        let answered = runtime_api
            .requests()
            .into_iter()
            .find(|r| r.method == "POST" && (r.path.ends_with("/response") || r.path.ends_with("/error")));
        if let Some(answer) = answered {
            break answer;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{binary}: no answer from its bootstrap in 60 s");
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{binary}: bootstrap exited with {status} before answering");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    let body = serde_json::from_str(&answer.body).unwrap_or(Value::String(answer.body.clone()));
    (answer.path, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sam_build_gives_bootstraps_that_start_against_a_runtime_api() {
    let Ok(sam) = std::env::var("CAIRN_SAM") else {
        eprintln!("skipped: `make build-test` runs this (it sets CAIRN_SAM to the sam CLI)");
        return;
    };
    let Some(endpoint) = cairn_tests::tools::moto() else { return };
    let root = cairn_tests::workspace();
    let template: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(format!("{root}/template.yaml")).unwrap()).unwrap();
    let architecture = std::env::var("ARCH").unwrap_or_else(|_| "x86_64".into());
    let functions =
        built_functions(&template, &std::env::var("CAIRN_BUILD_FUNCTIONS").unwrap_or_else(|_| "HelloFunction".into()));
    // `sam build` takes one resource or none (all of them): one build directory per call.
    let every = std::env::var("CAIRN_BUILD_FUNCTIONS").is_ok_and(|wanted| wanted == "all");
    let builds: Vec<(Option<&str>, String)> = if every {
        vec![(None, format!("{root}/target/sam-build"))]
    } else {
        functions.iter().map(|(id, _)| (Some(id.as_str()), format!("{root}/target/sam-build-{id}"))).collect()
    };
    let started = Instant::now();
    for (resource, build_dir) in &builds {
        let status = std::process::Command::new(&sam)
            .current_dir(&root)
            .arg("build")
            .args(resource)
            .args(["--build-dir", build_dir, "--parameter-overrides", &format!("Architecture={architecture}")])
            .status()
            .unwrap();
        assert!(status.success(), "sam build {resource:?} failed");
    }
    eprintln!("sam build of {} function(s): {:.0} s", functions.len(), started.elapsed().as_secs_f64());
    let build_dir_of = |id: &str| match &builds[..] {
        [(None, dir)] => dir.clone(),
        _ => format!("{root}/target/sam-build-{id}"),
    };

    let config = aws_config::load_from_env().await;
    let table = format!("cairn-build-{}", std::process::id());
    let store = cairn_aws::DynamoDbStore::new(aws_sdk_dynamodb::Client::new(&config), &table, "build").unwrap();
    store.create_table().await.unwrap();
    let group = format!("cairn-build-{}", std::process::id());
    aws_sdk_scheduler::Client::new(&config).create_schedule_group().name(&group).send().await.unwrap();
    let sqs = aws_sdk_sqs::Client::new(&config);
    let queue = sqs.create_queue().queue_name(format!("timer-build-{}", std::process::id())).send().await.unwrap();
    let env = [
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_ACCESS_KEY_ID", "test".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
        ("CAIRN_TABLE", table),
        ("CAIRN_BUS", "cairn-build".to_string()),
        ("CAIRN_SCHEDULE_GROUP", group),
        ("CAIRN_TIMER_QUEUE_URL", queue.queue_url.unwrap()),
        ("CAIRN_SCHEDULER_ROLE_ARN", "arn:aws:iam::123456789012:role/cairn-scheduler".to_string()),
        ("RUST_LOG", "warn".to_string()),
    ];
    let machine = if architecture == "arm64" { EM_AARCH64 } else { EM_X86_64 };
    for (id, binary) in &functions {
        let bootstrap = std::path::Path::new(&build_dir_of(id)).join(id).join("bootstrap");
        let bytes = std::fs::read(&bootstrap).unwrap_or_else(|err| panic!("{id}: {}: {err}", bootstrap.display()));
        assert_eq!(&bytes[..4], b"\x7fELF", "{id}: bootstrap is not an ELF file");
        assert_eq!(u16::from_le_bytes([bytes[18], bytes[19]]), machine, "{id}: bootstrap is not {architecture}");
        eprintln!("{id}: bootstrap {:.1} MB", bytes.len() as f64 / 1e6);
        if binary == "serve" {
            continue; // the Inngest endpoint answers HTTP, checked by functions/serve's tests
        }
        // Every function answers the reconciler's tick.
        let (path, answer) = invoke(&bootstrap, binary, &env, json!({"cairn": "reconcile"})).await;
        assert!(path.ends_with("/response"), "{id}: {answer}");
    }
    // hello end to end: an EventBridge event starts a run whose step lands in DynamoDB.
    if let Some((id, binary)) = functions.iter().find(|(_, binary)| binary == "hello") {
        let bootstrap = std::path::Path::new(&build_dir_of(id)).join(id).join("bootstrap");
        let event = serde_json::from_str(
            &std::fs::read_to_string(format!("{root}/tests/fixtures/eventbridge-my-event.json")).unwrap(),
        )
        .unwrap();
        let mut env = env.to_vec();
        env.push(("HELLO_SLEEP", "1h".to_string()));
        let (path, answer) = invoke(&bootstrap, binary, &env, event).await;
        assert!(path.ends_with("/response"), "{answer}");
        assert_eq!(answer["runs"][0]["status"], json!("sleeping"), "{answer}");
        let run = cairn::RunId::for_event("hello", "6a7e8feb-b491-4cf7-a9f1-bf3703467718");
        // Its items, under its scope (CAIRN_SCOPE, its binary's name).
        let table = env.iter().find(|(name, _)| *name == "CAIRN_TABLE").unwrap().1.clone();
        let own = cairn_aws::DynamoDbStore::new(aws_sdk_dynamodb::Client::new(&config), &table, binary).unwrap();
        let journal = cairn::RunStore::load(&own, &run).await.unwrap().unwrap();
        assert_eq!(journal.steps[0].state, cairn::StepState::Completed { output: json!({"success": true}) });
    }
}
