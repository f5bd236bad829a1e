//! The HTTP surface on one port: the AWS APIs, the dashboard (assets compiled in) and its API,
//! behind [`guard`], which keeps web pages and other hosts' names out.

use crate::dev::Dev;
use crate::loopback::{is_loopback_name, split_host};
use crate::{api, aws};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use std::sync::Arc;

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const STYLE_CSS: &str = include_str!("../assets/style.css");

/// The media types a write may carry: JSON, and the AWS JSON protocols (1.0 is SQS's, 1.1
/// EventBridge's and SSM's; Scheduler's REST API sends `application/json`).
pub const JSON_TYPES: [&str; 3] = ["application/json", "application/x-amz-json-1.0", "application/x-amz-json-1.1"];

/// The dashboard's page and assets (the dev server and `cairn console` serve the same).
pub fn dashboard_assets<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX_HTML) }))
        .route("/assets/app.js", get(|| async { ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], APP_JS) }))
        .route("/assets/style.css", get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE_CSS) }))
}

/// Every route of the dev server.
pub fn router(dev: Arc<Dev>) -> Router {
    let allowed_hosts: Arc<[String]> = dev.config.allowed_hosts.clone().into();
    dashboard_assets()
        .route("/", post(aws::json11))
        .route("/schedules", get(aws::list_schedules))
        .route("/schedules/{name}", post(aws::create_schedule).delete(aws::delete_schedule).get(aws::get_schedule))
        .route("/schedule-groups/{name}", post(aws::create_schedule_group))
        .route("/api/health", get(|| async { axum::Json(serde_json::json!({"ok": true, "server": "cairn-dev"})) }))
        .route("/api/functions", get(api::functions))
        .route("/api/functions/{id}/invoke", post(api::invoke))
        .route("/api/runs", get(api::runs))
        .route("/api/runs/cancel", post(api::cancel_matching))
        .route("/api/runs/replay", post(api::replay_matching))
        .route("/api/runs/{id}", get(api::run))
        .route("/api/runs/{id}/cancel", post(api::cancel))
        .route("/api/runs/{id}/rerun", post(api::rerun))
        .route("/api/events", get(api::events))
        .route("/api/signals", post(api::signal))
        .route("/v1/signals", post(api::signal))
        .route("/api/events/{id}", get(api::event))
        .route("/api/schedules", get(api::schedules))
        .route("/api/invocations", get(api::invocations))
        .route("/api/parameters", get(api::parameters))
        .route("/api/live", get(api::live))
        .merge(crate::app_api::routes())
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found").into_response() })
        .layer(axum::middleware::from_fn_with_state(allowed_hosts, guard))
        .layer(axum::extract::DefaultBodyLimit::max(8 * 1024 * 1024))
        .with_state(dev)
}

/// Refuses what a web page or another host could send, before any handler runs:
/// - a `Host` that is not a loopback name (or one allowed with `--allowed-host`): a page that
///   rebinds its own DNS name to 127.0.0.1 would otherwise read and write as the same origin;
/// - a write (any method but GET, HEAD and OPTIONS) whose `Origin` is another origin;
/// - a POST, or a write with a body, that is not JSON: the `text/plain`, form and body-less
///   requests a page can send across origins without a CORS preflight. The dev server answers no
///   preflight, so a page cannot send JSON (or a DELETE) across origins at all.
pub async fn guard(State(allowed_hosts): State<Arc<[String]>>, request: Request<Body>, next: Next) -> Response {
    match refusal(&allowed_hosts, request.method(), request.uri().path(), request.headers()) {
        Some((status, kind, message)) => {
            tracing::warn!(%message, "request refused");
            let body = json!({"__type": kind, "message": message, "error": message});
            (status, [("content-type", "application/json"), ("x-amzn-errortype", kind)], body.to_string())
                .into_response()
        }
        None => next.run(request).await,
    }
}

/// Why a request is refused: its status, AWS error type and message. The answer carries both
/// AWS's `__type` / `X-Amzn-ErrorType` and `message` (the SDKs and the aws CLI show them) and
/// `error` (the dashboard and `cairn`).
fn refusal(
    allowed_hosts: &[String],
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Option<(StatusCode, &'static str, String)> {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    let (name, port) = split_host(host);
    if !is_loopback_name(name) && !allowed_hosts.iter().any(|allowed| allowed.eq_ignore_ascii_case(name)) {
        let message = format!(
            "the dev server answers only requests for localhost, 127.0.0.1 or [::1] (a guard against DNS rebinding), not Host `{host}`; to reach it under another name, start it with --allowed-host {name}"
        );
        return Some((StatusCode::FORBIDDEN, "AccessDeniedException", message));
    }
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return None;
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = String::from_utf8_lossy(origin.as_bytes());
        if !is_same_origin(&origin, name, port) {
            let message = format!(
                "cross-origin {method} {path} refused: Origin `{origin}` is not this dev server (http://{host})"
            );
            return Some((StatusCode::FORBIDDEN, "AccessDeniedException", message));
        }
    }
    let content_type = headers.get(header::CONTENT_TYPE).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let has_body = headers.get(header::TRANSFER_ENCODING).is_some()
        || headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).is_some_and(|length| length.trim() != "0");
    let is_json = content_type.as_deref().is_some_and(|text| {
        let media = text.split(';').next().unwrap_or_default().trim();
        JSON_TYPES.iter().any(|json| json.eq_ignore_ascii_case(media))
    });
    if (*method == Method::POST || has_body) && !is_json {
        let got = content_type.map_or_else(|| "no Content-Type".to_string(), |text| format!("`{text}`"));
        let message = format!(
            "{method} {path} refused: the dev server takes writes only as JSON (Content-Type {}), so that a web page cannot forge them; got {got}",
            "application/json, application/x-amz-json-1.0 or application/x-amz-json-1.1"
        );
        return Some((StatusCode::UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaTypeException", message));
    }
    None
}

fn is_same_origin(origin: &str, name: &str, port: Option<u16>) -> bool {
    reqwest::Url::parse(origin).is_ok_and(|url| {
        url.scheme() == "http"
            && url.host_str().is_some_and(|host| host.eq_ignore_ascii_case(name))
            && url.port_or_known_default() == Some(port.unwrap_or(80))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_origin_is_scheme_host_and_port() {
        assert!(is_same_origin("http://127.0.0.1:8288", "127.0.0.1", Some(8288)));
        assert!(is_same_origin("http://[::1]:8288", "[::1]", Some(8288)));
        assert!(is_same_origin("http://LOCALHOST", "localhost", None));
        assert!(!is_same_origin("http://127.0.0.1:8289", "127.0.0.1", Some(8288)));
        assert!(!is_same_origin("https://127.0.0.1:8288", "127.0.0.1", Some(8288)));
        assert!(!is_same_origin("http://localhost:8288", "127.0.0.1", Some(8288)));
        assert!(!is_same_origin("null", "127.0.0.1", Some(8288)));
    }
}
