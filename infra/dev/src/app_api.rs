//! The routes an Inngest app calls on its dev server: the out-of-band sync, the event API and
//! the dev-server probe.

use crate::dev::{Dev, Entry};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::sync::Arc;

/// The routes an Inngest app calls on its dev server.
pub fn routes() -> axum::Router<Arc<Dev>> {
    axum::Router::new()
        .route("/fn/register", post(register))
        .route("/e/{key}", post(send))
        .route("/dev", get(|| async { Json(json!({"version": "cairn-dev", "is_single_node": true})) }))
}

/// `POST /fn/register`: an out-of-band sync.
/// Only an app given with `-u` or served on loopback: otherwise any local process (or a page,
/// were the server not guarded) could have the dev server post every matching event elsewhere.
async fn register(State(dev): State<Arc<Dev>>, Json(body): Json<Value>) -> Response {
    let reported = body["url"].as_str().unwrap_or_default().to_string();
    if !dev.inngest.urls().contains(&reported) && !crate::loopback::is_loopback_url(&reported) {
        let error = format!(
            "app URL `{reported}` refused: the dev server drives only apps given with -u or served on loopback (localhost, 127.0.0.1, [::1])"
        );
        return (StatusCode::FORBIDDEN, Json(json!({"code": "forbidden", "error": error, "status": 403})))
            .into_response();
    }
    // Call the app at the URL it was given with (`-u`) when the reported one is the same endpoint.
    let path = |url: &str| {
        url.split_once("://")
            .map(|(_, rest)| rest.split_once('/').map_or("", |(_, p)| p).split('?').next().unwrap_or("").to_string())
    };
    let url = dev.inngest.urls().iter().find(|u| path(u) == path(&reported)).cloned().unwrap_or(reported);
    match dev.inngest.register(dev.as_ref(), &url, &body) {
        Ok(()) => Json(json!({"ok": true, "modified": true})).into_response(),
        Err(error) => {
            (StatusCode::BAD_REQUEST, Json(json!({"code": "invalid_request", "error": error, "status": 400})))
                .into_response()
        }
    }
}

/// `POST /e/{key}`: the event API apps send with (any key is accepted, as Inngest's dev server
/// does). Events are logged and routed like PutEvents entries, on the template's bus.
async fn send(State(dev): State<Arc<Dev>>, Path(_key): Path<String>, Json(body): Json<Value>) -> Response {
    let events = match body {
        Value::Array(events) => events,
        single => vec![single],
    };
    let now = dev.now();
    let bus = dev.template.buses().into_iter().find(|b| b != "default").unwrap_or_else(|| "default".into());
    let mut entries = Vec::new();
    let mut ids = Vec::new();
    for (index, mut event) in events.into_iter().enumerate() {
        let Some(name) = event["name"].as_str().filter(|n| !n.is_empty()).map(str::to_string) else {
            let error = format!("event {index} has no `name`");
            return (StatusCode::BAD_REQUEST, Json(json!({"ids": [], "status": 400, "error": error}))).into_response();
        };
        if event["data"].is_null() {
            event["data"] = json!({});
        }
        if !event["data"].is_object() {
            let error = format!("event {index} (`{name}`): `data` must be an object");
            return (StatusCode::BAD_REQUEST, Json(json!({"ids": [], "status": 400, "error": error}))).into_response();
        }
        let id = event["id"].as_str().map_or_else(|| cairn::new_event_id(now), str::to_string);
        event["id"] = json!(id);
        if event["ts"].is_null() {
            event["ts"] = json!(now);
        }
        ids.push(id);
        entries.push(Entry {
            source: "inngest.app".into(),
            detail_type: name,
            detail: event,
            bus: bus.clone(),
            time: Some(now),
            resources: Vec::new(),
        });
    }
    match dev.put(entries, "inngest-send", None) {
        Ok(_) => Json(json!({"ids": ids, "status": 200})).into_response(),
        Err(error) => {
            (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"ids": [], "status": 500, "error": error}))).into_response()
        }
    }
}
