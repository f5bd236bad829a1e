//! The SQS stand-in: `SendMessage` and `SendMessageBatch` (AWS JSON 1.0, `X-Amz-Target:
//! AmazonSQS.*`, query-compatible error codes in `x-amzn-query-error`, as `aws-sdk-sqs` reads
//! them), plus `GetQueueUrl` and `ListQueues`. The queues are the functions' timer queues: queue
//! `timer-<binary>` exists when template.yaml gives that function an `SQS` event source. Each
//! message is logged (bus `sqs`) and queued as an invocation of the function due `DelaySeconds`
//! later, with Lambda's SQS event as the payload; a failed delivery, or the message reported in
//! `batchItemFailures`, is redelivered seconds later (SQS waits for the visibility timeout).

use crate::dev::Dev;
use crate::devdb::{LoggedEvent, NewInvocation};
pub use crate::sqs_delivery::{CAUSE_PREFIX, DEFAULT_MAX_RECEIVES, reported_failure, set_receive_count};
use crate::template::{SqsSource, TemplateFunction};
use crate::wire::{ACCOUNT, new_envelope_id};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use cairn::Millis;
use serde_json::{Map, Value, json};

/// The content type of AWS JSON 1.0 (SQS's protocol).
pub const JSON_10: &str = "application/x-amz-json-1.0";
/// The longest `DelaySeconds`.
pub const MAX_DELAY_SECONDS: i64 = 900;
/// The most entries one `SendMessageBatch` takes.
pub const MAX_BATCH_ENTRIES: usize = 10;
/// The bus name the event log shows messages under.
pub const LOG_BUS: &str = "sqs";

/// An SQS error: `__type` `com.amazonaws.sqs#<kind>` and the query-compatible `code` in
/// `x-amzn-query-error` (what the SDK matches, e.g. `AWS.SimpleQueueService.NonExistentQueue`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqsError {
    /// The JSON shape name, e.g. `QueueDoesNotExist`.
    pub kind: &'static str,
    /// The query-compatible code, e.g. `AWS.SimpleQueueService.NonExistentQueue`.
    pub code: &'static str,
    /// The message.
    pub message: String,
}

impl SqsError {
    fn new(kind: &'static str, code: &'static str, message: impl Into<String>) -> SqsError {
        SqsError { kind, code, message: message.into() }
    }

    fn invalid(message: impl Into<String>) -> SqsError {
        SqsError::new("InvalidParameterValue", "InvalidParameterValue", message)
    }

    fn missing(parameter: &str) -> SqsError {
        SqsError::new(
            "MissingParameter",
            "MissingParameter",
            format!("The request must contain the parameter {parameter}."),
        )
    }

    fn into_response(self) -> Response {
        let kind = format!("com.amazonaws.sqs#{}", self.kind);
        let body = json!({"__type": kind, "message": self.message});
        (
            StatusCode::BAD_REQUEST,
            [
                ("content-type", JSON_10.to_string()),
                ("x-amzn-errortype", kind),
                ("x-amzn-query-error", format!("{};Sender", self.code)),
            ],
            body.to_string(),
        )
            .into_response()
    }
}

fn ok(body: &Value) -> Response {
    (StatusCode::OK, [("content-type", JSON_10)], body.to_string()).into_response()
}

/// `POST /` with `X-Amz-Target: AmazonSQS.<operation>`.
pub fn handle(dev: &Dev, operation: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    let request: Value = match serde_json::from_slice(body) {
        Ok(value @ Value::Object(_)) => value,
        Ok(_) => {
            return SqsError::new("SerializationException", "SerializationException", "the body must be a JSON object")
                .into_response();
        }
        Err(err) => {
            return SqsError::new(
                "SerializationException",
                "SerializationException",
                format!("the request body is not JSON: {err}"),
            )
            .into_response();
        }
    };
    let result = match operation {
        "SendMessage" => send_message(dev, &request),
        "SendMessageBatch" => send_message_batch(dev, &request),
        "GetQueueUrl" => get_queue_url(dev, headers, &request),
        "ListQueues" => Ok(list_queues(dev, headers, &request)),
        other => Err(SqsError::new(
            "UnsupportedOperation",
            "AWS.SimpleQueueService.UnsupportedOperation",
            format!(
                "the dev server does not implement AmazonSQS.{other}; it serves SendMessage, SendMessageBatch, GetQueueUrl and ListQueues"
            ),
        )),
    };
    match result {
        Ok(body) => ok(&body),
        Err(err) => err.into_response(),
    }
}

/// The queue URL base the request was addressed to, e.g. `http://127.0.0.1:8288`.
fn base_url(headers: &HeaderMap) -> String {
    let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1:8288");
    format!("http://{host}")
}

fn not_found(dev: &Dev, queue: &str) -> SqsError {
    let known = dev.template.queue_names();
    SqsError::new(
        "QueueDoesNotExist",
        "AWS.SimpleQueueService.NonExistentQueue",
        format!(
            "The specified queue does not exist: {queue} (the dev server serves queue timer-<binary> for each function in template.yaml with an SQS event source; {})",
            if known.is_empty() { "there is none".to_string() } else { format!("queues: {}", known.join(", ")) }
        ),
    )
}

/// The function and event source behind `QueueUrl` (`<any base>/<account>/<queue name>`).
fn resolve<'a>(dev: &'a Dev, request: &Value) -> Result<(String, &'a TemplateFunction, &'a SqsSource), SqsError> {
    let url = request["QueueUrl"].as_str().filter(|u| !u.is_empty()).ok_or_else(|| SqsError::missing("QueueUrl"))?;
    let name = url.trim_end_matches('/').rsplit('/').next().unwrap_or(url).to_string();
    match dev.template.queue(&name) {
        Some((function, source)) => Ok((name, function, source)),
        None => Err(not_found(dev, &name)),
    }
}

/// A message to queue, validated.
#[derive(Debug, Clone, PartialEq)]
struct Message {
    body: String,
    delay_seconds: u32,
    /// In Lambda's event shape.
    attributes: Value,
}

fn read_message(entry: &Value, source: &SqsSource) -> Result<Message, SqsError> {
    let body =
        entry["MessageBody"].as_str().filter(|b| !b.is_empty()).ok_or_else(|| SqsError::missing("MessageBody"))?;
    if let Some(bad) = body.chars().find(|c| !allowed_char(*c)) {
        return Err(SqsError::new(
            "InvalidMessageContents",
            "InvalidMessageContents",
            format!(
                "Invalid binary character '#x{:X}' was found in the message body, the set of allowed characters is #x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF",
                u32::from(bad)
            ),
        ));
    }
    let delay_seconds = match &entry["DelaySeconds"] {
        Value::Null => source.delay_seconds,
        value => match value.as_i64().filter(|d| (0..=MAX_DELAY_SECONDS).contains(d)) {
            Some(delay) => u32::try_from(delay).unwrap_or(0),
            None => {
                return Err(SqsError::invalid(format!(
                    "Value {value} for parameter DelaySeconds is invalid. Reason: DelaySeconds must be >= 0 and <= {MAX_DELAY_SECONDS}."
                )));
            }
        },
    };
    if body.len() > source.max_message_bytes {
        return Err(SqsError::invalid(format!(
            "One or more parameters are invalid. Reason: Message must be shorter than {} bytes.",
            source.max_message_bytes
        )));
    }
    let attributes: Map<String, Value> = entry["MessageAttributes"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, attribute)| {
            let mut lambda = json!({
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": attribute["DataType"],
            });
            if let Some(text) = attribute["StringValue"].as_str() {
                lambda["stringValue"] = json!(text);
            }
            if let Some(binary) = attribute["BinaryValue"].as_str() {
                lambda["binaryValue"] = json!(binary);
            }
            (name.clone(), lambda)
        })
        .collect();
    Ok(Message { body: body.to_string(), delay_seconds, attributes: Value::Object(attributes) })
}

/// SQS's allowed message characters.
fn allowed_char(c: char) -> bool {
    matches!(u32::from(c), 0x9 | 0xA | 0xD | 0x20..=0xD7FF | 0xE000..=0xFFFD | 0x10000..=0x10_FFFF)
}

/// Logs `messages` and queues their deliveries in one transaction; their ids and body MD5s.
fn accept(dev: &Dev, queue: &str, function: &TemplateFunction, messages: &[Message]) -> Result<Vec<Value>, SqsError> {
    let now = dev.now();
    let arn = format!("arn:aws:sqs:{}:{ACCOUNT}:{queue}", dev.config.region);
    let mut events = Vec::with_capacity(messages.len());
    let mut invocations = Vec::with_capacity(messages.len());
    let mut results = Vec::with_capacity(messages.len());
    for message in messages {
        let id = new_envelope_id();
        let md5 = md5_hex(message.body.as_bytes());
        let due = now + Millis::from(message.delay_seconds) * 1_000;
        let payload = json!({"Records": [{
            "messageId": id,
            "receiptHandle": format!("{id}#{now}"),
            "body": message.body,
            "attributes": {
                "ApproximateReceiveCount": "1",
                "SentTimestamp": now.to_string(),
                "SenderId": ACCOUNT,
                "ApproximateFirstReceiveTimestamp": due.to_string(),
            },
            "messageAttributes": message.attributes,
            "md5OfBody": md5,
            "eventSource": "aws:sqs",
            "eventSourceARN": arn,
            "awsRegion": dev.config.region,
        }]});
        events.push(LoggedEvent {
            seq: 0,
            id: id.clone(),
            event_id: id.clone(),
            received_at: now,
            bus: LOG_BUS.to_string(),
            source: "aws.sqs".to_string(),
            name: queue.to_string(),
            envelope: payload.clone(),
            targets: vec![function.binary.clone()],
        });
        invocations.push(NewInvocation {
            function: function.binary.clone(),
            cause: format!("{CAUSE_PREFIX}{queue}"),
            event_id: Some(id.clone()),
            payload,
            due_at: Some(due),
        });
        results.push(json!({"MessageId": id, "MD5OfMessageBody": md5}));
    }
    dev.db.accept(&events, &invocations, now).map_err(|err| SqsError::new("InternalError", "InternalError", err))?;
    dev.queued.notify_one();
    Ok(results)
}

fn send_message(dev: &Dev, request: &Value) -> Result<Value, SqsError> {
    let (queue, function, source) = resolve(dev, request)?;
    let message = read_message(request, source)?;
    let mut results = accept(dev, &queue, function, std::slice::from_ref(&message))?;
    Ok(results.pop().unwrap_or(Value::Null))
}

fn send_message_batch(dev: &Dev, request: &Value) -> Result<Value, SqsError> {
    let (queue, function, source) = resolve(dev, request)?;
    let entries = match &request["Entries"] {
        Value::Null => return Err(SqsError::missing("Entries")),
        Value::Array(entries) => entries,
        _ => return Err(SqsError::new("SerializationException", "SerializationException", "Entries must be a list")),
    };
    if entries.is_empty() {
        return Err(SqsError::new(
            "EmptyBatchRequest",
            "AWS.SimpleQueueService.EmptyBatchRequest",
            "There should be at least one SendMessageBatchRequestEntry in the request.",
        ));
    }
    if entries.len() > MAX_BATCH_ENTRIES {
        return Err(SqsError::new(
            "TooManyEntriesInBatchRequest",
            "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
            format!("Maximum number of entries per request are {MAX_BATCH_ENTRIES}. You have sent {}.", entries.len()),
        ));
    }
    let mut ids: Vec<&str> = Vec::with_capacity(entries.len());
    for entry in entries {
        let id = entry["Id"].as_str().unwrap_or_default();
        if id.is_empty() || id.len() > 80 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(SqsError::new(
                "InvalidBatchEntryId",
                "AWS.SimpleQueueService.InvalidBatchEntryId",
                "A batch entry id can only contain alphanumeric characters, hyphens and underscores. It can be at most 80 letters long.",
            ));
        }
        if ids.contains(&id) {
            return Err(SqsError::new(
                "BatchEntryIdsNotDistinct",
                "AWS.SimpleQueueService.BatchEntryIdsNotDistinct",
                format!("Id {id} repeated."),
            ));
        }
        ids.push(id);
    }
    let total: usize = entries.iter().map(|e| e["MessageBody"].as_str().map_or(0, str::len)).sum();
    if total > source.max_message_bytes {
        return Err(SqsError::new(
            "BatchRequestTooLong",
            "AWS.SimpleQueueService.BatchRequestTooLong",
            format!(
                "Batch requests cannot be longer than {} bytes. You have sent {total} bytes.",
                source.max_message_bytes
            ),
        ));
    }
    let mut failed = Vec::new();
    let mut accepted = Vec::new();
    for (entry, id) in entries.iter().zip(&ids) {
        match read_message(entry, source) {
            Ok(message) => accepted.push((*id, message)),
            Err(err) => failed.push(json!({"Id": id, "SenderFault": true, "Code": err.code, "Message": err.message})),
        }
    }
    let messages: Vec<Message> = accepted.iter().map(|(_, m)| m.clone()).collect();
    let results = if messages.is_empty() { Vec::new() } else { accept(dev, &queue, function, &messages)? };
    let successful: Vec<Value> = accepted
        .iter()
        .zip(results)
        .map(|((id, _), mut result)| {
            result["Id"] = json!(id);
            result
        })
        .collect();
    Ok(json!({"Successful": successful, "Failed": failed}))
}

fn get_queue_url(dev: &Dev, headers: &HeaderMap, request: &Value) -> Result<Value, SqsError> {
    let name = request["QueueName"].as_str().ok_or_else(|| SqsError::missing("QueueName"))?;
    if dev.template.queue(name).is_none() {
        return Err(not_found(dev, name));
    }
    Ok(json!({"QueueUrl": format!("{}/{ACCOUNT}/{name}", base_url(headers))}))
}

fn list_queues(dev: &Dev, headers: &HeaderMap, request: &Value) -> Value {
    let prefix = request["QueueNamePrefix"].as_str().unwrap_or_default();
    let base = base_url(headers);
    let urls: Vec<String> = dev
        .template
        .queue_names()
        .into_iter()
        .filter(|name| name.starts_with(prefix))
        .map(|name| format!("{base}/{ACCOUNT}/{name}"))
        .collect();
    json!({"QueueUrls": urls})
}

/// MD5 (RFC 1321) of `data`, as lowercase hex: SQS's `MD5OfMessageBody`.
pub fn md5_hex(data: &[u8]) -> String {
    use md5::Digest;
    md5::Md5::digest(data).iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn md5_matches_rfc_1321() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(md5_hex(b"a"), "0cc175b9c0f1b6a831c399e269772661");
        assert_eq!(md5_hex(b"message digest"), "f96b697d7cb7938d525a2f31aaf161d0");
        assert_eq!(
            md5_hex(b"12345678901234567890123456789012345678901234567890123456789012345678901234567890"),
            "57edf4a22be3c955ac49da2e2107b67a"
        );
        assert_eq!(md5_hex("hello".as_bytes()), "5d41402abc4b2a76b9719d911017c592");
    }

    fn source() -> SqsSource {
        SqsSource {
            name: "Timer".into(),
            queue_resource: "HelloTimerQueue".into(),
            batch_size: 10,
            report_batch_item_failures: true,
            max_receive_count: None,
            delay_seconds: 0,
            max_message_bytes: 256 * 1024,
        }
    }

    #[test]
    fn messages_are_validated_as_sqs_does() {
        let source = source();
        let read = |entry: Value| read_message(&entry, &source);
        assert_eq!(read(json!({"MessageBody": "x", "DelaySeconds": 900})).unwrap().delay_seconds, 900);
        assert_eq!(read(json!({"MessageBody": "x"})).unwrap().delay_seconds, 0);
        assert_eq!(
            read(json!({"MessageBody": "x", "DelaySeconds": 901})).unwrap_err(),
            SqsError::invalid(
                "Value 901 for parameter DelaySeconds is invalid. Reason: DelaySeconds must be >= 0 and <= 900."
            )
        );
        assert_eq!(read(json!({"MessageBody": "x", "DelaySeconds": -1})).unwrap_err().code, "InvalidParameterValue");
        assert_eq!(read(json!({})).unwrap_err().message, "The request must contain the parameter MessageBody.");
        assert_eq!(read(json!({"MessageBody": "x".repeat(256 * 1024)})).map(|m| m.body.len()), Ok(256 * 1024));
        assert_eq!(
            read(json!({"MessageBody": "x".repeat(256 * 1024 + 1)})).unwrap_err().message,
            "One or more parameters are invalid. Reason: Message must be shorter than 262144 bytes."
        );
        assert_eq!(read(json!({"MessageBody": "a\u{1}"})).unwrap_err().kind, "InvalidMessageContents");
        let with = read(
            json!({"MessageBody": "x", "MessageAttributes": {"kind": {"DataType": "String", "StringValue": "t"}}}),
        );
        assert_eq!(
            with.unwrap().attributes,
            json!({"kind": {"stringValue": "t", "stringListValues": [], "binaryListValues": [], "dataType": "String"}})
        );
    }

    #[test]
    fn batch_item_failures_count_only_when_reported() {
        let mut source = source();
        let failed = json!({"batchItemFailures": [{"itemIdentifier": "m-1"}]});
        assert!(reported_failure(&source, &failed).is_some());
        assert!(reported_failure(&source, &json!({"batchItemFailures": []})).is_none());
        assert!(reported_failure(&source, &json!(null)).is_none());
        source.report_batch_item_failures = false;
        assert!(reported_failure(&source, &failed).is_none(), "ignored without ReportBatchItemFailures");
        let mut payload = json!({"Records": [{"attributes": {"ApproximateReceiveCount": "1"}}]});
        set_receive_count(&mut payload, 3);
        assert_eq!(payload["Records"][0]["attributes"]["ApproximateReceiveCount"], "3");
    }
}
