//! The AWS wire details the dev server's APIs share: the account id, AWS JSON 1.1 errors,
//! EventBridge envelope ids and times. A leaf module, so the API modules depend on it and not
//! on each other.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cairn::{Clock, Millis, SystemClock};
use serde_json::json;

/// The account id the dev server reports in ARNs and envelopes.
pub const ACCOUNT: &str = "000000000000";
/// The content type of AWS JSON 1.1 (EventBridge's and SSM's protocol).
pub const JSON_11: &str = "application/x-amz-json-1.1";

/// An AWS JSON 1.1 error (`__type` and `message`, as the SDKs and the CLI read them).
pub fn json11_error(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    let body = json!({"__type": kind, "message": message.into()});
    (status, [("content-type", JSON_11), ("x-amzn-errortype", kind)], body.to_string()).into_response()
}

/// A fresh envelope id (a UUID v4 shape, as EventBridge's).
pub fn new_envelope_id() -> String {
    let hex = cairn::StepId::hash(&cairn::new_event_id(SystemClock.now())).to_string();
    format!("{}-{}-4{}-a{}-{}", &hex[0..8], &hex[8..12], &hex[13..16], &hex[17..20], &hex[20..32])
}

/// RFC 3339 UTC to the second, as EventBridge's `time`.
pub fn rfc3339(at: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(at).unwrap_or_default().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}
