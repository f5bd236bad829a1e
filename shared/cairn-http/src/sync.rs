//! Sync (`PUT`): the app registers its functions with Inngest (`reference/inngest-protocol.md`
//! section 4.2): out of band by POSTing its configuration to `{api_base}/fn/register`, or in band
//! by answering with it when the request says `X-Inngest-Sync-Kind: in_band`.

use crate::config::{ServeConfig, is_https_origin};
use crate::response::{SDK, ServeOrigin, json_response};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::Response;
use cairn::{Registry, Trigger};
use serde_json::{Value, json};
use std::collections::HashMap;

/// The URL Inngest calls this endpoint at: `INNGEST_SERVE_ORIGIN`, else the https origin the
/// host adapter vouches for, else (dev mode only) the request's host. A `Host` header is the
/// caller's to choose, so outside dev mode it never names what Inngest will call.
fn serve_url(
    config: &ServeConfig,
    headers: &HeaderMap,
    vouched: Option<&ServeOrigin>,
    uri: &Uri,
) -> Result<String, String> {
    let origin = match (&config.serve_origin, vouched) {
        (Some(origin), _) => origin.clone(),
        (None, Some(ServeOrigin(origin))) if config.dev || is_https_origin(origin) => origin.clone(),
        (None, _) if config.dev => {
            let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("localhost");
            format!("http://{host}")
        }
        (None, _) => {
            return Err("set INNGEST_SERVE_ORIGIN to the https:// origin Inngest reaches this endpoint at".into());
        }
    };
    Ok(format!("{}{}", origin.trim_end_matches('/'), uri.path()))
}

/// The functions as Inngest's register payload describes them.
pub fn functions(config: &ServeConfig, registry: &Registry, url: &str) -> Vec<Value> {
    registry
        .functions()
        .iter()
        .map(|function| {
            let id = format!("{}-{}", config.app_id, function.id());
            let triggers: Vec<Value> = function
                .triggers()
                .iter()
                .map(|trigger| match trigger {
                    Trigger::Event { name, expression: Some(expression) } => {
                        json!({"event": name, "expression": expression.source()})
                    }
                    Trigger::Event { name, expression: None } => json!({"event": name}),
                    Trigger::Cron(cron) => json!({"cron": cron.source()}),
                })
                .collect();
            let mut step = json!({
                "id": "step", "name": "step",
                "runtime": {"type": "http", "url": format!("{url}?fnId={id}&stepId=step")}
            });
            // As the TypeScript SDK: Inngest's default (4 retries) goes unsaid.
            if function.retries() != cairn::DEFAULT_RETRIES {
                step["retries"] = json!({"attempts": function.retries()});
            }
            let mut config = json!({"id": id, "name": function.name(), "triggers": triggers, "steps": {"step": step}});
            // Flow control in the TypeScript SDK's shape, so Inngest enforces it when it drives us.
            if let Value::Object(fields) = &mut config {
                fields.extend(function.flow().wire());
            }
            config
        })
        .collect()
}

pub(crate) async fn sync(
    config: &ServeConfig,
    registry: &Registry,
    http: &reqwest::Client,
    headers: &HeaderMap,
    vouched: Option<&ServeOrigin>,
    uri: &Uri,
    query: &HashMap<String, String>,
) -> Response {
    let url = match serve_url(config, headers, vouched, uri) {
        Ok(url) => url,
        Err(reason) => {
            let body = json!({"message": format!("Failed to register; {reason}"), "modified": false});
            return json_response(StatusCode::INTERNAL_SERVER_ERROR, &body);
        }
    };
    let functions = functions(config, registry, &url);
    let in_band = headers.get("x-inngest-sync-kind").and_then(|v| v.to_str().ok()) == Some("in_band");
    if in_band {
        let body = json!({
            "app_id": config.app_id, "framework": "axum", "functions": functions, "sdk": sdk_field(),
            "sdk_author": "cairn", "sdk_language": "rust", "sdk_version": env!("CARGO_PKG_VERSION"),
            "capabilities": {"trust_probe": "v1"}, "url": url, "env": null
        });
        let mut response = json_response(StatusCode::OK, &body);
        response.headers_mut().insert("x-inngest-sync-kind", HeaderValue::from_static("in_band"));
        return response;
    }
    let mut body = json!({
        "url": url, "deployType": "ping", "framework": "axum", "appName": config.app_id,
        "functions": functions, "sdk": sdk_field(), "v": "0.1", "capabilities": {"trust_probe": "v1"}
    });
    let mut register = match reqwest::Url::parse(&format!("{}/fn/register", config.api_base)) {
        Ok(url) => url,
        Err(err) => {
            let body = json!({"message": format!("Failed to register; bad API URL: {err}"), "modified": false});
            return json_response(StatusCode::INTERNAL_SERVER_ERROR, &body);
        }
    };
    if let Some(deploy_id) = query.get("deployId") {
        body["deployId"] = json!(deploy_id);
        // Encoded, so a deploy id cannot add query parameters of its own.
        register.query_pairs_mut().append_pair("deployId", deploy_id);
    }
    let mut request = http
        .post(register)
        .header("x-inngest-sdk", SDK)
        .header("x-inngest-framework", "axum")
        .header("x-inngest-sync-kind", "out_of_band")
        .json(&body);
    if let Some(key) = config.keys.first() {
        request = request.header("authorization", format!("Bearer {}", key.hashed()));
    }
    if let Some(kind) = headers.get("x-inngest-server-kind").and_then(|v| v.to_str().ok()) {
        request = request.header("x-inngest-expected-server-kind", kind);
    }
    let outcome = match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            // Inngest puts the real status in the body; TypeScript reads that, not the HTTP one.
            let status = answer["status"].as_u64().map_or(status, |s| u16::try_from(s).unwrap_or(500));
            if status < 300 {
                Ok(answer["modified"].as_bool().unwrap_or(false))
            } else {
                Err(answer["error"].as_str().unwrap_or("registration refused").to_string())
            }
        }
        Err(err) => Err(err.to_string()),
    };
    let (status, body) = match outcome {
        Ok(modified) => (StatusCode::OK, json!({"message": "Successfully registered", "modified": modified})),
        Err(reason) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"message": format!("Failed to register; {reason}"), "modified": false}),
        ),
    };
    let mut response = json_response(status, &body);
    response.headers_mut().insert("x-inngest-sync-kind", HeaderValue::from_static("out_of_band"));
    response
}

fn sdk_field() -> String {
    format!("rust:v{}", env!("CARGO_PKG_VERSION"))
}
