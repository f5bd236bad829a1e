//! The SSM Parameter Store stand-in: a secret put with the aws CLI is read with the AWS SDK (as
//! a function does) and with the CLI given only the environment `cairn dev --watch` gives the
//! functions; AWS's errors come back typed; no API, event or log line shows a value.
#![allow(clippy::unwrap_used)] // Tests: an unwrap that fails is a failed test.

mod common;

use aws_sdk_ssm::types::ParameterType;
use cairn_tests::workspace;
use common::{DevServer, get, sdk_config};
use serde_json::{Value, json};

const NAME: &str = "/cairn/readwise/users/u1";

async fn aws(venv: &str, args: &[&str], env: &[(String, String)]) -> (Option<i32>, String, String) {
    let output = tokio::process::Command::new(format!("{venv}/bin/aws"))
        .args(args)
        .env_remove("AWS_ENDPOINT_URL")
        .env("AWS_ACCESS_KEY_ID", "cairn-dev")
        .env("AWS_SECRET_ACCESS_KEY", "cairn-dev")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .envs(env.iter().cloned())
        .output()
        .await
        .unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).trim().to_string();
    (output.status.code(), text(&output.stdout), text(&output.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_put_with_the_cli_is_read_with_the_sdk_and_shown_nowhere_else() {
    let Some(venv) = cairn_tests::tools::aws_cli_venv() else { return };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("dev.db").display().to_string();
    let dev = DevServer::start_with(&format!("{}/template.yaml", workspace()), &db, "http://127.0.0.1:9", &[]);
    let url = dev.url.clone();

    let put = ["ssm", "put-parameter", "--endpoint-url", &url, "--name", NAME, "--type", "SecureString"];
    let (code, stdout, stderr) = aws(&venv, &[&put[..], &["--value", "rw-key-1"]].concat(), &[]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(serde_json::from_str::<Value>(&stdout).unwrap(), json!({"Version": 1, "Tier": "Standard"}));
    let (code, _, stderr) = aws(&venv, &[&put[..], &["--value", "rw-key-2"]].concat(), &[]).await;
    assert_eq!(code, Some(255));
    assert_eq!(
        stderr,
        "An error occurred (ParameterAlreadyExists) when calling the PutParameter operation: The parameter already exists. To overwrite this value, set the overwrite option in the request to true."
    );

    // The SDK, as readwise-fetch-books reads a user's key.
    let ssm = aws_sdk_ssm::Client::new(&sdk_config(&url).await);
    let got = ssm.get_parameter().name(NAME).with_decryption(true).send().await.unwrap();
    let parameter = got.parameter().unwrap();
    assert_eq!(
        (parameter.name(), parameter.r#type(), parameter.value(), parameter.version()),
        (Some(NAME), Some(&ParameterType::SecureString), Some("rw-key-1"), 1)
    );
    assert_eq!(parameter.arn(), Some("arn:aws:ssm:us-east-1:000000000000:parameter/cairn/readwise/users/u1"));
    let hidden = ssm.get_parameter().name(NAME).send().await.unwrap();
    let hidden = hidden.parameter().unwrap().value().unwrap();
    assert!(!hidden.contains("rw-key-1"), "without WithDecryption: {hidden}");
    let missing = ssm.get_parameter().name("/cairn/readwise/users/nobody").send().await.unwrap_err();
    let missing = missing.into_service_error();
    assert!(missing.is_parameter_not_found(), "{missing:?}");
    assert_eq!(missing.meta().message(), Some("Parameter /cairn/readwise/users/nobody not found."));
    let created = ssm.put_parameter().name("/plain").value("x").send().await.unwrap_err().into_service_error();
    assert_eq!(created.meta().code(), Some("ValidationException"));
    assert_eq!(created.meta().message(), Some("A parameter type is required when you create a parameter."));

    // Overwritten (its type kept), then read by the CLI with the functions' environment only.
    let version = ssm.put_parameter().name(NAME).value("rw-key-2").overwrite(true).send().await.unwrap().version();
    assert_eq!(version, 2);
    let functions = cairn_dev::cli::function_env(&url, &db, "cairn");
    let (code, stdout, stderr) =
        aws(&venv, &["ssm", "get-parameter", "--name", NAME, "--with-decryption"], &functions).await;
    assert_eq!(code, Some(0), "{stderr}");
    let shown: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (&shown["Parameter"]["Value"], &shown["Parameter"]["Type"], &shown["Parameter"]["Version"]),
        (&json!("rw-key-2"), &json!("SecureString"), &json!(2))
    );
    let both = ssm.get_parameters().names(NAME).names("/nope").with_decryption(true).send().await.unwrap();
    assert_eq!(both.parameters().iter().map(|p| p.value().unwrap()).collect::<Vec<_>>(), ["rw-key-2"]);
    assert_eq!(both.invalid_parameters(), ["/nope"]);

    // Names, types and versions only; no event, invocation or log line carries a value.
    let listed = get(&format!("{url}/api/parameters")).await;
    let modified = listed["parameters"][0]["modified_at"].clone();
    assert_eq!(
        listed,
        json!({"parameters": [{"name": NAME, "type": "SecureString", "version": 2, "modified_at": modified}]})
    );
    assert_eq!(get(&format!("{url}/api/events")).await["total"], 0);
    assert_eq!(get(&format!("{url}/api/invocations")).await["invocations"], json!([]));
    let port = url.rsplit(':').next().unwrap();
    let log = std::fs::read_to_string(std::env::temp_dir().join(format!("cairn-dev-{port}.log"))).unwrap();
    assert!(!log.contains("rw-key"), "{log}");
}
