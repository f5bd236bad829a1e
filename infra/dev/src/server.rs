//! The HTTP surface on one port: the AWS APIs, the dashboard (assets compiled in) and its API.

use crate::dev::Dev;
use crate::{api, aws};
use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use std::sync::Arc;

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const STYLE_CSS: &str = include_str!("../assets/style.css");

/// Every route of the dev server.
pub fn router(dev: Arc<Dev>) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX_HTML) }).post(aws::json11),
        )
        .route("/assets/app.js", get(|| async { ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], APP_JS) }))
        .route("/assets/style.css", get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE_CSS) }))
        .route("/schedules", get(aws::list_schedules))
        .route("/schedules/{name}", post(aws::create_schedule).delete(aws::delete_schedule).get(aws::get_schedule))
        .route("/schedule-groups/{name}", post(aws::create_schedule_group))
        .route("/api/health", get(|| async { axum::Json(serde_json::json!({"ok": true, "server": "cairn-dev"})) }))
        .route("/api/functions", get(api::functions))
        .route("/api/functions/{id}/invoke", post(api::invoke))
        .route("/api/runs", get(api::runs))
        .route("/api/runs/{id}", get(api::run))
        .route("/api/runs/{id}/cancel", post(api::cancel))
        .route("/api/runs/{id}/rerun", post(api::rerun))
        .route("/api/events", get(api::events))
        .route("/api/events/{id}", get(api::event))
        .route("/api/schedules", get(api::schedules))
        .route("/api/invocations", get(api::invocations))
        .route("/api/live", get(api::live))
        .merge(crate::inngest::routes())
        .fallback(|| async { (axum::http::StatusCode::NOT_FOUND, "not found").into_response() })
        .layer(axum::extract::DefaultBodyLimit::max(8 * 1024 * 1024))
        .with_state(dev)
}
