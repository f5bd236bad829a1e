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
/// Sent when any run ends (completed or failed), as Inngest does; it also carries an invoked
/// run's result back to the caller (`data.correlation_id`).
pub const FINISHED_EVENT: &str = "inngest/function.finished";
/// Longest accepted event name, as Inngest.
pub const MAX_EVENT_NAME_LEN: usize = 512;

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

    /// Checks the event the way Inngest's event API does.
    ///
    /// # Errors
    /// A message naming what is wrong: an empty or over-long name, or `data` that is not an object.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("event name must not be empty".into());
        }
        if self.name.len() > MAX_EVENT_NAME_LEN {
            return Err(format!("event name is {} bytes, the limit is {MAX_EVENT_NAME_LEN}", self.name.len()));
        }
        if !self.data.is_object() {
            return Err(format!("event `{}`: data must be a JSON object", self.name));
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
    /// A message that names the event and the path of the offending field, e.g.
    /// ``event `app/x`: field `data.userId`: invalid type: integer `1`, expected a string``.
    pub fn from_payload(payload: &EventPayload) -> Result<Self, String> {
        let data = serde_path_to_error::deserialize(&payload.data).map_err(|err| {
            let path = err.path().to_string();
            let inner = err.into_inner();
            if path == "." {
                format!("event `{}`: data does not match the function's type: {inner}", payload.name)
            } else {
                format!("event `{}`: field `data.{path}`: {inner}", payload.name)
            }
        })?;
        Ok(Event { name: payload.name.clone(), data, id: payload.id.clone(), ts: payload.ts })
    }
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
        assert_eq!(err, "event `app/x`: field `data.inner.count`: invalid type: string \"many\", expected u32");
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
    }
}
