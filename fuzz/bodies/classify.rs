//! The Lambda payload classifier (`cairn_aws::classify`): hostile JSON never panics and is
//! either refused or classified consistently with the payload; and what Cairn itself sends
//! (its bus's EventBridge events, timer-queue messages, Scheduler resumes) classifies back
//! to exactly what was sent.

use crate::bodies::hostile;
use arbitrary::{Result, Unstructured};
use cairn::prelude::*;
use cairn::{EventPayload, Registry, RunId};
use cairn_aws::{Invocation, QueueTimer, classify};
use serde_json::{Value, json};
use std::sync::OnceLock;

const NOW: i64 = 1_795_392_000_000;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let function = Function::new("fuzz")
            .on_event("app/my.event")
            .cron("0 * * * *")
            .handler(|_: Event, _: Step| async move { Ok(()) });
        match function.map(|f| Registry::new(vec![f])) {
            Ok(Ok(registry)) => registry,
            _ => unreachable!("a valid definition"),
        }
    })
}

/// The target body.
pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut u = Unstructured::new(rest);
    let _ = match mode % 4 {
        0 => {
            raw(rest);
            Ok(())
        }
        1 => hostile(&mut u),
        2 => own_event(&mut u),
        _ => own_timers(&mut u),
    };
}

/// Bytes as the Lambda runtime hands them over: JSON or nothing.
fn raw(data: &[u8]) {
    if let Ok(payload) = serde_json::from_slice::<Value>(data) {
        check(&payload);
    }
}

/// A payload shaped like one the classifier accepts, with hostile fields.
fn hostile(u: &mut Unstructured<'_>) -> Result<()> {
    let mut payload = hostile::object(u, 4)?;
    let shape = match u.int_in_range(0..=4u8)? {
        0 => vec![("cairn", json!("resume"))],
        1 => vec![("cairn", json!("cron"))],
        2 => vec![("Records", Value::Null)],
        3 => vec![("source", json!("aws.events")), ("detail-type", json!("Scheduled Event"))],
        _ => vec![("source", json!("app")), ("detail-type", json!("app/my.event"))],
    };
    for (key, value) in shape {
        if u.arbitrary()? {
            payload.insert(key.to_string(), value);
        }
    }
    if payload.contains_key("Records") || u.ratio(1, 8)? {
        let records = (0..u.int_in_range(0..=3u8)?)
            .map(|_| {
                let body = if u.arbitrary()? {
                    json!({"run_id": hostile::value(u, 2)?}).to_string()
                } else {
                    hostile::string(u)?
                };
                Ok(json!({"messageId": hostile::value(u, 1)?, "body": body}))
            })
            .collect::<Result<Vec<_>>>()?;
        payload.insert("Records".into(), Value::Array(records));
    }
    check(&Value::Object(payload));
    Ok(())
}

/// Properties of any classification.
fn check(payload: &Value) {
    match classify(payload, registry(), NOW) {
        Ok(Invocation::Event(event)) => {
            assert!(payload.is_object(), "only an object is an invocation");
            assert!(event.id.is_some() && event.ts.is_some(), "a classified event has an id and a time: {event:?}");
        }
        Ok(Invocation::Resume(run_id)) => {
            assert!(payload.is_object());
            assert!(payload.to_string().contains(&serde_json::to_string(run_id.as_str()).unwrap_or_default()));
        }
        Ok(Invocation::Queue(messages)) => {
            assert_eq!(Some(messages.len()), payload["Records"].as_array().map(Vec::len));
        }
        Ok(Invocation::Reconcile) => assert_eq!(payload["cairn"], "reconcile"),
        Err(_) => {}
    }
}

/// An event as Cairn's own bus sends it (the whole event is the detail) classifies back to it.
fn own_event(u: &mut Unstructured<'_>) -> Result<()> {
    let name = if u.arbitrary()? { "app/my.event".to_string() } else { hostile::string(u)? };
    let mut event = EventPayload::new(name.clone(), Value::Object(hostile::object(u, 3)?))
        .with_id(hostile::string(u)?)
        .with_ts(u.arbitrary()?);
    if u.arbitrary()? {
        event.v = Some(hostile::string(u)?);
    }
    if u.arbitrary()? {
        event.user = Some(Value::Object(hostile::object(u, 2)?));
    }
    let envelope = json!({
        "version": "0", "id": hostile::string(u)?, "detail-type": name, "source": "cairn",
        "time": "2026-11-23T00:00:00Z", "resources": [], "detail": event,
    });
    // Through text, as Lambda delivers it.
    let Ok(payload) = serde_json::from_str::<Value>(&envelope.to_string()) else { return Ok(()) };
    let expected = if name == cairn_aws::RESUME_EVENT {
        match event.data["run_id"].as_str() {
            Some(run_id) => Invocation::Resume(RunId::new(run_id)),
            None => return Ok(()),
        }
    } else {
        Invocation::Event(event)
    };
    assert_eq!(classify(&payload, registry(), NOW).ok(), Some(expected));
    Ok(())
}

/// Timer-queue messages and Scheduler resumes classify back to their runs.
fn own_timers(u: &mut Unstructured<'_>) -> Result<()> {
    let runs: Vec<(String, RunId)> = (0..u.int_in_range(0..=4u8)?)
        .map(|_| Ok((hostile::string(u)?, RunId::new(hostile::string(u)?))))
        .collect::<Result<_>>()?;
    let records: Vec<Value> = runs
        .iter()
        .map(|(id, run)| json!({"messageId": id, "body": QueueTimer::message_body(run, "fuzz", NOW), "eventSource": "aws:sqs"}))
        .collect();
    let batch = serde_json::from_str::<Value>(&json!({"Records": records}).to_string()).unwrap_or_default();
    assert_eq!(classify(&batch, registry(), NOW).ok(), Some(Invocation::Queue(runs.clone())));
    if let Some((_, run)) = runs.first() {
        let resume = json!({"cairn": "resume", "function_id": "fuzz", "run_id": run});
        assert_eq!(classify(&resume, registry(), NOW).ok(), Some(Invocation::Resume(run.clone())));
    }
    Ok(())
}
