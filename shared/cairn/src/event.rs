//! Events: the wire form [`EventPayload`], typed [`Event<T>`], and [`EventData`], which binds an
//! event name to its payload type so a misspelt trigger is a compile error.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The name of the event a cron trigger delivers (Inngest's).
pub const SCHEDULED_EVENT: &str = "inngest/scheduled.timer";
/// The name of the event that starts an invoked function (Inngest's).
pub const INVOKED_EVENT: &str = "inngest/function.invoked";
/// The name of the event emitted when a run finally fails; `on_failure` handlers receive it.
pub const FAILED_EVENT: &str = "inngest/function.failed";
/// Sent when any run ends (completed, failed or cancelled), as Inngest does; it also carries an invoked
/// run's result back to the caller (`data.correlation_id`).
pub const FINISHED_EVENT: &str = "inngest/function.finished";
/// Sent when a run is cancelled (with `inngest/function.finished`, never `failed`), as Inngest
/// does.
pub const CANCELLED_EVENT: &str = "inngest/function.cancelled";
/// The event a signal travels as ([`signal`]): `data.signal` names it, `data.data` carries its
/// payload. Reserved: outside senders use a signal endpoint, which builds it.
pub const SIGNAL_EVENT: &str = "cairn/signal";

/// The condition a signal wait is filed under: the signal event's `data.signal` equals `signal`
/// (a literal, so the wait is found by value).
pub fn signal_condition(signal: &str) -> String {
    format!("async.data.signal == {}", Value::String(signal.to_string()))
}

/// The event that delivers `data` to the run waiting for `signal` (`step.wait_for_signal`):
/// send it on any [`Bus`](crate::Bus), or with [`send_signal`](crate::send_signal).
pub fn signal(signal: &str, data: Value) -> EventPayload {
    EventPayload::new(SIGNAL_EVENT, serde_json::json!({"signal": signal, "data": data}))
}

/// Longest accepted event name, as Inngest.
pub const MAX_EVENT_NAME_LEN: usize = 512;
/// The longest event id accepted. Ids become parts of store keys (DynamoDB sort keys hold at
/// most 1,024 bytes), so an unbounded id would be a poison event that fails every attempt.
pub const MAX_EVENT_ID_LEN: usize = 256;
/// Event-name prefixes only Cairn and Inngest emit (resumes, invokes, finished and failed
/// runs). Ingest from outside refuses them: a forged `inngest/function.finished` could
/// complete another run's invoke.
pub const RESERVED_PREFIXES: [&str; 2] = ["cairn/", "inngest/"];

/// Whether `name` is one only the system may send (see [`RESERVED_PREFIXES`]).
pub fn is_reserved_name(name: &str) -> bool {
    RESERVED_PREFIXES.iter().any(|prefix| name.starts_with(prefix))
}

/// A payload type bound to one event name.
///
/// ```
/// use cairn::EventData;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// #[serde(rename_all = "camelCase")]
/// struct FetchBooks { user_id: String }
///
/// impl EventData for FetchBooks { const NAME: &'static str = "readwise/fetch-books"; }
/// ```
pub trait EventData: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The event name, `domain/noun.verb`.
    const NAME: &'static str;
}

/// An event as it travels: Inngest's JSON shape (`name`, `data`, `id`, `ts` in ms, `v`, `user`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventPayload {
    /// Event name.
    pub name: String,
    /// Payload object.
    #[serde(default = "empty_object")]
    pub data: Value,
    /// Idempotency id: the same id never starts a second run of a function.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<i64>,
    /// Optional schema version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v: Option<String>,
    /// Deprecated user object, kept for Inngest compatibility.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Value>,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

impl EventPayload {
    /// An event with this name and data and no id or timestamp yet.
    pub fn new(name: impl Into<String>, data: Value) -> Self {
        EventPayload { name: name.into(), data, id: None, ts: None, v: None, user: None }
    }

    /// The wire form of a typed payload.
    ///
    /// # Errors
    /// When `data` does not serialize to JSON.
    pub fn typed<T: EventData>(data: &T) -> Result<Self, serde_json::Error> {
        Ok(EventPayload::new(T::NAME, serde_json::to_value(data)?))
    }

    /// Sets the idempotency id.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Sets the timestamp (ms since the epoch).
    pub fn with_ts(mut self, ts: i64) -> Self {
        self.ts = Some(ts);
        self
    }

    /// The event without its data (name, id, time, and only the system's `data._inngest`
    /// metadata, by which an invoke's result is routed back), for system events that refer to
    /// it without carrying what it holds.
    pub fn summary(&self) -> EventPayload {
        let mut data = serde_json::Map::new();
        if let Some(system) = self.data.get("_inngest") {
            data.insert("_inngest".into(), system.clone());
        }
        EventPayload {
            name: self.name.clone(),
            data: Value::Object(data),
            id: self.id.clone(),
            ts: self.ts,
            user: None,
            v: self.v.clone(),
        }
    }

    /// Checks the event the way Inngest's event API does.
    ///
    /// # Errors
    /// A message naming what is wrong: an empty or over-long name, or `data` that is not an object.
    pub fn validate(&self) -> Result<(), crate::error::EventError> {
        if self.name.trim().is_empty() {
            return Err("event name must not be empty".into());
        }
        if self.name.len() > MAX_EVENT_NAME_LEN {
            return Err(format!("event name is {} bytes, the limit is {MAX_EVENT_NAME_LEN}", self.name.len()).into());
        }
        if !self.data.is_object() {
            return Err(format!("event `{}`: data must be a JSON object", self.name).into());
        }
        if let Some(id) = &self.id
            && (id.is_empty() || id.len() > MAX_EVENT_ID_LEN)
        {
            return Err(
                format!("event `{}`: id is {} bytes, it must be 1 to {MAX_EVENT_ID_LEN}", self.name, id.len()).into()
            );
        }
        Ok(())
    }
}

/// An event handed to a function, with its data deserialized into `T`
/// (`serde_json::Value` for untyped functions).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event<T = Value> {
    /// Event name.
    pub name: String,
    /// Payload.
    pub data: T,
    /// Idempotency id, if the sender set one.
    pub id: Option<String>,
    /// Milliseconds since the epoch.
    pub ts: Option<i64>,
}

impl<T: DeserializeOwned> Event<T> {
    /// Deserializes the payload of `payload` into `T`.
    ///
    /// # Errors
    /// A message that names the event and the path of the offending field, never its value
    /// (event data may hold secrets, and the message lands in the run's error and the logs), e.g.
    /// ``event `app/x`: field `data.userId`: invalid type: integer, expected a string``.
    pub fn from_payload(payload: &EventPayload) -> Result<Self, crate::error::EventError> {
        let data = serde_path_to_error::deserialize(&payload.data)
            .map_err(|err| {
                let path = err.path().to_string();
                let inner = redact_serde_error(&err.into_inner().to_string());
                if path == "." {
                    format!("event `{}`: data does not match the function's type: {inner}", payload.name)
                } else {
                    format!("event `{}`: field `data.{path}`: {inner}", payload.name)
                }
            })
            .map_err(crate::error::EventError::from)?;
        Ok(Event { name: payload.name.clone(), data, id: payload.id.clone(), ts: payload.ts })
    }
}

/// serde's message for a value that did not deserialize, without the value itself:
/// `invalid type: string "sk-123", expected u32` becomes `invalid type: string, expected u32`.
/// Messages of unknown shape (a custom `Deserialize` may say anything) become `invalid value`.
pub fn redact_serde_error(message: &str) -> String {
    // serde_json appends " at line L column C"; the position is harmless but says nothing here.
    let message = message.split(" at line ").next().unwrap_or(message);
    for lead in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(lead)
            && let Some((unexpected, expected)) = rest.split_once(", expected ")
        {
            // `string "x"`, `integer `1``, `floating point `1.5``, `boolean `true``: keep the kind.
            let kind = unexpected.split(['`', '"']).next().unwrap_or_default().trim();
            return format!("{lead}{kind}, expected {expected}");
        }
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        let expected = rest.split_once(", expected ").map(|(_, e)| e).unwrap_or("a known variant");
        return format!("unknown variant, expected {expected}");
    }
    let known = ["missing field `", "unknown field `", "duplicate field `", "invalid length "];
    if known.iter().any(|prefix| message.starts_with(prefix)) {
        return message.to_string();
    }
    "invalid value".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Typed {
        user_id: String,
        inner: Inner,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        count: u32,
    }

    #[test]
    fn deserialize_errors_name_the_field() {
        let bad = EventPayload::new("app/x", json!({"userId": "u", "inner": {"count": "many"}}));
        let err = Event::<Typed>::from_payload(&bad).unwrap_err();
        assert_eq!(err, "event `app/x`: field `data.inner.count`: invalid type: string, expected u32");
        let missing = EventPayload::new("app/x", json!({"inner": {"count": 1}}));
        let err = Event::<Typed>::from_payload(&missing).unwrap_err();
        assert_eq!(err, "event `app/x`: data does not match the function's type: missing field `userId`");
    }

    #[test]
    fn validation_names_the_problem() {
        assert_eq!(EventPayload::new(" ", json!({})).validate().unwrap_err(), "event name must not be empty");
        assert_eq!(
            EventPayload::new("a/b", json!([1])).validate().unwrap_err(),
            "event `a/b`: data must be a JSON object"
        );
        assert!(EventPayload::new("a/b", json!({})).validate().is_ok());
        let long = "x".repeat(MAX_EVENT_ID_LEN + 1);
        assert_eq!(
            EventPayload::new("a/b", json!({})).with_id(long).validate().unwrap_err(),
            "event `a/b`: id is 257 bytes, it must be 1 to 256"
        );
        assert!(EventPayload::new("a/b", json!({})).with_id("x".repeat(MAX_EVENT_ID_LEN)).validate().is_ok());
        assert!(is_reserved_name("inngest/function.finished") && is_reserved_name("cairn/run.resume"));
        assert!(!is_reserved_name("app/inngest"));
    }

    #[test]
    fn deserialize_errors_never_echo_the_value() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        enum Plan {
            Free,
        }
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Secretive {
            count: u32,
            ratio: Option<u8>,
            plan: Option<Plan>,
        }
        let cases = [
            (json!({"count": "sk-live-123"}), "field `data.count`: invalid type: string, expected u32"),
            (json!({"count": 1, "ratio": 300}), "field `data.ratio`: invalid value: integer, expected u8"),
            (json!({"count": true}), "field `data.count`: invalid type: boolean, expected u32"),
            (json!({"count": 1, "plan": "sk-live-123"}), "field `data.plan`: unknown variant, expected `Free`"),
            (json!({"count": 1.5}), "field `data.count`: invalid type: floating point, expected u32"),
        ];
        for (data, expected) in cases {
            let err = Event::<Secretive>::from_payload(&EventPayload::new("app/x", data)).unwrap_err();
            assert_eq!(err, format!("event `app/x`: {expected}"));
            assert!(!err.contains("sk-live") && !err.contains("300") && !err.contains("1.5"), "{err}");
        }
        assert_eq!(redact_serde_error("my custom check failed for secret-x"), "invalid value");
    }
}
