//! What every answer of the endpoint shares: the SDK's name and protocol version headers, JSON
//! answers, and the origin the host adapter vouches for. The router and the sync both use it.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// The SDK name and version Cairn reports in `X-Inngest-SDK`.
pub const SDK: &str = concat!("cairn:v", env!("CARGO_PKG_VERSION"));
/// The execution version Cairn speaks.
pub const REQ_VERSION: &str = "2";

/// The origin (`https://host`) the host adapter vouches for, as a request extension: e.g. a
/// Lambda Function URL's domain from the invocation's request context, which AWS sets. A sync
/// in cloud mode registers it when `INNGEST_SERVE_ORIGIN` is unset; the `Host` header never is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServeOrigin(pub String);

/// `body` as a JSON answer with `status`, naming the SDK and the protocol version.
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("x-inngest-sdk", HeaderValue::from_static(SDK));
    headers.insert("x-inngest-req-version", HeaderValue::from_static(REQ_VERSION));
    response
}
