//! The AWS wire APIs the functions and the aws CLI speak: EventBridge `PutEvents` (AWS JSON 1.1,
//! `X-Amz-Target: AWSEvents.PutEvents`), SQS (AWS JSON 1.0, `AmazonSQS.*`, in [`crate::sqs`]),
//! SSM Parameter Store (AWS JSON 1.1, `AmazonSSM.*`, in [`crate::ssm`]) and Scheduler's `CreateSchedule` / `DeleteSchedule` /
//! `GetSchedule` / `ListSchedules` (REST JSON), with AWS-shaped errors, so the SDKs and
//! `aws --endpoint-url http://localhost:8288` work unchanged.

use crate::DevError;
use crate::dev::{ACCOUNT, Dev, Entry, MAX_ENTRY_BYTES};
use crate::devdb::Schedule;
use crate::schedule::Expression;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use cairn::Millis;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

/// The most entries one PutEvents takes.
pub const MAX_ENTRIES: usize = 10;

const JSON_11: &str = "application/x-amz-json-1.1";

pub use crate::wire::json11_error;

/// A REST JSON error (the `X-Amzn-ErrorType` header and `Message`).
fn rest_error(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    let body = json!({"Message": message.into()});
    (status, [("content-type", "application/json"), ("x-amzn-errortype", kind)], body.to_string()).into_response()
}

/// `POST /`: the AWS JSON 1.1 operations (and SQS's JSON 1.0 ones), by `X-Amz-Target`.
pub async fn json11(State(dev): State<Arc<Dev>>, headers: HeaderMap, body: Bytes) -> Response {
    let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if let Some(operation) = target.strip_prefix("AmazonSQS.") {
        return crate::sqs::handle(&dev, operation, &headers, &body);
    }
    let request: Value = match serde_json::from_slice(&body) {
        Ok(value @ Value::Object(_)) => value,
        Ok(_) => {
            return json11_error(
                StatusCode::BAD_REQUEST,
                "SerializationException",
                "the request body must be a JSON object",
            );
        }
        Err(err) => {
            return json11_error(
                StatusCode::BAD_REQUEST,
                "SerializationException",
                format!("the request body is not JSON: {err}"),
            );
        }
    };
    if let Some(operation) = target.strip_prefix("AmazonSSM.") {
        return dev.parameters.handle(operation, &request, &dev.config.region, dev.now());
    }
    match target {
        "AWSEvents.PutEvents" => put_events(&dev, &request),
        "AWSEvents.ListRules" => list_rules(&dev, &request),
        "AWSEvents.ListEventBuses" => {
            let buses: Vec<Value> = dev
                .template
                .buses()
                .iter()
                .map(|name| json!({"Name": name, "Arn": format!("arn:aws:events:{}:{ACCOUNT}:event-bus/{name}", dev.config.region)}))
                .collect();
            (StatusCode::OK, [("content-type", JSON_11)], json!({"EventBuses": buses}).to_string()).into_response()
        }
        "" => json11_error(StatusCode::BAD_REQUEST, "UnknownOperationException", "missing X-Amz-Target header"),
        other => json11_error(
            StatusCode::BAD_REQUEST,
            "UnknownOperationException",
            format!(
                "the dev server does not implement {other}; it serves AWSEvents.PutEvents, ListRules and ListEventBuses, and AmazonSQS.SendMessage, SendMessageBatch, GetQueueUrl and ListQueues"
            ),
        ),
    }
}

fn put_events(dev: &Dev, request: &Value) -> Response {
    let decoded = match decode_put_events(request, &dev.template.buses()) {
        Ok(decoded) => decoded,
        Err((kind, message)) => return json11_error(StatusCode::BAD_REQUEST, kind, message),
    };
    let mut results: Vec<Value> = Vec::with_capacity(decoded.len());
    let mut accepted = Vec::new();
    for entry in decoded {
        match entry {
            Ok(entry) => {
                accepted.push((results.len(), entry));
                results.push(Value::Null);
            }
            Err((code, message)) => results.push(json!({"ErrorCode": code, "ErrorMessage": message})),
        }
    }
    let failed = results.len() - accepted.len();
    let (positions, entries): (Vec<usize>, Vec<Entry>) = accepted.into_iter().unzip();
    match dev.put(entries, "put-events", None) {
        Ok(ids) => {
            for (position, id) in positions.into_iter().zip(ids) {
                results[position] = json!({"EventId": id});
            }
        }
        Err(err) => return json11_error(StatusCode::INTERNAL_SERVER_ERROR, "InternalException", err),
    }
    let body = json!({"FailedEntryCount": failed, "Entries": results});
    (StatusCode::OK, [("content-type", JSON_11)], body.to_string()).into_response()
}

/// An AWS error code and message.
pub type Refusal = (&'static str, String);

/// Decodes a PutEvents request as AWS checks it: the entry list (present, 1 to
/// [`MAX_ENTRIES`], [`MAX_ENTRY_BYTES`] in all), then each entry, read or refused on its own.
/// Pure, so it can be fuzzed.
///
/// # Errors
/// The whole request's refusal: `ValidationException` or `SerializationException`.
pub fn decode_put_events(request: &Value, buses: &[String]) -> Result<Vec<Result<Entry, Refusal>>, Refusal> {
    let Some(entries) = request.get("Entries") else {
        return Err((
            "ValidationException",
            "1 validation error detected: Value null at 'entries' failed to satisfy constraint: Member must not be null"
                .into(),
        ));
    };
    let Some(entries) = entries.as_array() else {
        return Err(("SerializationException", "Entries must be a list".into()));
    };
    if entries.is_empty() {
        return Err((
            "ValidationException",
            "1 validation error detected: Value '[]' at 'entries' failed to satisfy constraint: Member must have length greater than or equal to 1".into(),
        ));
    }
    if entries.len() > MAX_ENTRIES {
        return Err((
            "ValidationException",
            format!(
                "1 validation error detected: Value at 'entries' failed to satisfy constraint: Member must have length less than or equal to {MAX_ENTRIES} (got {})",
                entries.len()
            ),
        ));
    }
    let total: usize = entries.iter().map(entry_size).sum();
    if total > MAX_ENTRY_BYTES {
        return Err((
            "ValidationException",
            format!(
                "Total size of the entries in the request is over the limit: {total} bytes, the limit is {MAX_ENTRY_BYTES}"
            ),
        ));
    }
    Ok(entries.iter().map(|entry| read_entry(entry, buses)).collect())
}

/// AWS's entry size: Time (14 bytes), Source, DetailType, Detail and Resources in UTF-8.
fn entry_size(entry: &Value) -> usize {
    let text = |key: &str| entry[key].as_str().map_or(0, str::len);
    let resources: usize =
        entry["Resources"].as_array().map_or(0, |r| r.iter().filter_map(Value::as_str).map(str::len).sum());
    (if entry.get("Time").is_some() { 14 } else { 0 })
        + text("Source")
        + text("DetailType")
        + text("Detail")
        + resources
}

fn read_entry(entry: &Value, buses: &[String]) -> Result<Entry, Refusal> {
    let required = |key: &str| -> Result<String, Refusal> {
        match entry[key].as_str() {
            Some(text) if !text.is_empty() => Ok(text.to_string()),
            _ => {
                Err(("InvalidArgument", format!("Parameter {key} is not valid. Reason: {key} is a required argument.")))
            }
        }
    };
    let source = required("Source")?;
    let detail_type = required("DetailType")?;
    let detail_text = required("Detail")?;
    let detail: Value = serde_json::from_str(&detail_text)
        .ok()
        .filter(Value::is_object)
        .ok_or(("MalformedDetail", "Detail is malformed: it must be a JSON object.".to_string()))?;
    let bus = entry["EventBusName"].as_str().unwrap_or("default").to_string();
    let name = Dev::bus_name(&bus);
    if !buses.iter().any(|b| b == name) {
        return Err((
            "ResourceNotFoundException",
            format!("Event bus {name} does not exist. (template.yaml's rules listen on: {})", buses.join(", ")),
        ));
    }
    let time = match &entry["Time"] {
        Value::Null => None,
        // Epoch seconds, as the SDKs send them (`1795392000.123`): rounded, since the product
        // is often a hair under the millisecond; a time the calendar cannot hold is refused.
        Value::Number(n) => Some(
            n.as_f64()
                .map(|seconds| (seconds * 1000.0).round() as i64)
                .filter(|&ms| chrono::DateTime::from_timestamp_millis(ms).is_some())
                .ok_or(("InvalidArgument", format!("Parameter Time is not valid: {n}")))?,
        ),
        Value::String(text) => Some(
            chrono::DateTime::parse_from_rfc3339(text)
                .map_err(|_| ("InvalidArgument", format!("Parameter Time is not valid: {text}")))?
                .timestamp_millis(),
        ),
        _ => return Err(("InvalidArgument", "Parameter Time is not valid.".to_string())),
    };
    let resources = entry["Resources"]
        .as_array()
        .map(|r| r.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    Ok(Entry { source, detail_type, detail, bus, time, resources })
}

fn list_rules(dev: &Dev, request: &Value) -> Response {
    let bus = request["EventBusName"].as_str().map(Dev::bus_name).unwrap_or("default");
    let rules: Vec<Value> = dev
        .template
        .functions
        .iter()
        .flat_map(|f| f.rules.iter().map(move |rule| (f, rule)))
        .filter(|(_, rule)| rule.bus == bus)
        .map(|(f, rule)| {
            json!({"Name": format!("{}-{}", f.resource, rule.name), "EventBusName": rule.bus, "EventPattern": rule.pattern.to_string(), "State": "ENABLED"})
        })
        .collect();
    (StatusCode::OK, [("content-type", JSON_11)], json!({"Rules": rules}).to_string()).into_response()
}

fn group_of(query: &HashMap<String, String>, body: Option<&Value>) -> String {
    body.and_then(|b| b["GroupName"].as_str())
        .or(query.get("groupName").map(String::as_str))
        .or(query.get("GroupName").map(String::as_str))
        .unwrap_or("default")
        .to_string()
}

/// `POST /schedules/{Name}`: CreateSchedule.
pub async fn create_schedule(
    State(dev): State<Arc<Dev>>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let schedule = match decode_create_schedule(&name, &query, &body, dev.now()) {
        Ok(schedule) => schedule,
        Err(message) => return rest_error(StatusCode::BAD_REQUEST, "ValidationException", message),
    };
    let target_arn = &schedule.target_arn;
    if target_arn.starts_with("arn:aws:lambda:") && dev.template.function(target_arn).is_none() {
        return rest_error(
            StatusCode::BAD_REQUEST,
            "ValidationException",
            format!("Target.Arn {target_arn}: no AWS::Serverless::Function of that name in template.yaml"),
        );
    }
    match dev.db.create_schedule(&schedule) {
        Ok(true) => {
            let arn =
                format!("arn:aws:scheduler:{}:{ACCOUNT}:schedule/{}/{name}", dev.config.region, schedule.group_name);
            (StatusCode::OK, [("content-type", "application/json")], json!({"ScheduleArn": arn}).to_string())
                .into_response()
        }
        Ok(false) => rest_error(StatusCode::CONFLICT, "ConflictException", format!("Schedule {name} already exists.")),
        Err(err) => rest_error(StatusCode::INTERNAL_SERVER_ERROR, "InternalServerException", err),
    }
}

/// Decodes a CreateSchedule request for the schedule `name`, created at `now`, with the
/// checks Scheduler makes; whether a Lambda target is in the template is the handler's check.
/// Pure, so it can be fuzzed.
///
/// # Errors
/// The `ValidationException` message.
pub fn decode_create_schedule(
    name: &str,
    query: &HashMap<String, String>,
    body: &[u8],
    now: Millis,
) -> Result<Schedule, DevError> {
    let request: Value = match serde_json::from_slice(body) {
        Ok(value @ Value::Object(_)) => value,
        _ => return Err("the request body must be a JSON object".into()),
    };
    let group = group_of(query, Some(&request));
    let text = request["ScheduleExpression"].as_str().ok_or("ScheduleExpression is required")?;
    let time_zone = request["ScheduleExpressionTimezone"].as_str().unwrap_or("UTC").to_string();
    let expression = Expression::parse(text, &time_zone)?;
    if !matches!(request["FlexibleTimeWindow"]["Mode"].as_str(), Some("OFF" | "FLEXIBLE")) {
        return Err("FlexibleTimeWindow.Mode is required (OFF or FLEXIBLE)".into());
    }
    let target_arn = request["Target"]["Arn"].as_str().ok_or("Target.Arn is required")?;
    if request["Target"]["RoleArn"].as_str().is_none() {
        return Err("Target.RoleArn is required".into());
    }
    Ok(Schedule {
        group_name: group,
        name: name.to_string(),
        expression: text.to_string(),
        // A one-time schedule whose time has passed fires at once, as Scheduler does.
        next_at: expression.next_after(now, now, &time_zone).or(expression.is_one_time().then_some(now)),
        time_zone,
        target_arn: target_arn.to_string(),
        input: request["Target"]["Input"].as_str().unwrap_or("{}").to_string(),
        delete_after: request["ActionAfterCompletion"].as_str() == Some("DELETE"),
        created_at: now,
    })
}

/// `DELETE /schedules/{Name}`: DeleteSchedule.
pub async fn delete_schedule(
    State(dev): State<Arc<Dev>>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    match dev.db.delete_schedule(&group_of(&query, None), &name) {
        Ok(true) => (StatusCode::OK, [("content-type", "application/json")], "{}").into_response(),
        Ok(false) => {
            rest_error(StatusCode::NOT_FOUND, "ResourceNotFoundException", format!("Schedule {name} does not exist."))
        }
        Err(err) => rest_error(StatusCode::INTERNAL_SERVER_ERROR, "InternalServerException", err),
    }
}

fn schedule_json(dev: &Dev, s: &Schedule) -> Value {
    json!({
        "Arn": format!("arn:aws:scheduler:{}:{ACCOUNT}:schedule/{}/{}", dev.config.region, s.group_name, s.name),
        "Name": s.name,
        "GroupName": s.group_name,
        "ScheduleExpression": s.expression,
        "ScheduleExpressionTimezone": s.time_zone,
        "State": if s.next_at.is_some() { "ENABLED" } else { "DISABLED" },
        "ActionAfterCompletion": if s.delete_after { "DELETE" } else { "NONE" },
        "FlexibleTimeWindow": {"Mode": "OFF"},
        "Target": {"Arn": s.target_arn, "RoleArn": format!("arn:aws:iam::{ACCOUNT}:role/cairn-dev"), "Input": s.input},
        "CreationDate": s.created_at as f64 / 1000.0,
    })
}

/// `GET /schedules/{Name}`: GetSchedule.
pub async fn get_schedule(
    State(dev): State<Arc<Dev>>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let group = group_of(&query, None);
    match dev.db.schedules(Some(&group)) {
        Ok(schedules) => match schedules.iter().find(|s| s.name == name) {
            Some(s) => (StatusCode::OK, [("content-type", "application/json")], schedule_json(&dev, s).to_string())
                .into_response(),
            None => rest_error(
                StatusCode::NOT_FOUND,
                "ResourceNotFoundException",
                format!("Schedule {name} does not exist."),
            ),
        },
        Err(err) => rest_error(StatusCode::INTERNAL_SERVER_ERROR, "InternalServerException", err),
    }
}

/// `GET /schedules`: ListSchedules.
pub async fn list_schedules(State(dev): State<Arc<Dev>>, Query(query): Query<HashMap<String, String>>) -> Response {
    let group = query.get("ScheduleGroup").or(query.get("GroupName")).or(query.get("groupName"));
    match dev.db.schedules(group.map(String::as_str)) {
        Ok(schedules) => {
            let list: Vec<Value> = schedules.iter().map(|s| schedule_json(&dev, s)).collect();
            (StatusCode::OK, [("content-type", "application/json")], json!({"Schedules": list}).to_string())
                .into_response()
        }
        Err(err) => rest_error(StatusCode::INTERNAL_SERVER_ERROR, "InternalServerException", err),
    }
}

/// `POST /schedule-groups/{Name}`: CreateScheduleGroup (groups are implicit here).
pub async fn create_schedule_group(State(dev): State<Arc<Dev>>, Path(name): Path<String>) -> Response {
    let arn = format!("arn:aws:scheduler:{}:{ACCOUNT}:schedule-group/{name}", dev.config.region);
    (StatusCode::OK, [("content-type", "application/json")], json!({"ScheduleGroupArn": arn}).to_string())
        .into_response()
}
