//! [`EventBridgeBus`]: events out through `PutEvents`, `detail-type` = event name, so rules route
//! them by name. At most 10 entries per call; failed entries are retried with back-off.

use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::error::ProvideErrorMetadata;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use cairn::{Bus, BusError, EventPayload};
use std::time::Duration;

/// PutEvents takes at most this many entries.
pub const MAX_BATCH: usize = 10;
/// The largest event entry accepted (EventBridge's classic 256 KB limit, the safe one).
pub const MAX_ENTRY_BYTES: usize = 256 * 1024;

/// Sends events to an EventBridge bus. Cheap to clone.
#[derive(Clone, Debug)]
pub struct EventBridgeBus {
    client: Client,
    bus_name: String,
    source: String,
    attempts: u32,
}

impl EventBridgeBus {
    /// A bus sender for `bus_name`; entries carry `Source: cairn`.
    pub fn new(client: Client, bus_name: impl Into<String>) -> Self {
        EventBridgeBus { client, bus_name: bus_name.into(), source: "cairn".into(), attempts: 4 }
    }

    /// Sets the `Source` of the entries.
    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.source = source.into();
        self
    }

    /// The bus name.
    pub fn bus_name(&self) -> &str {
        &self.bus_name
    }

    fn entry(&self, event: &EventPayload) -> Result<PutEventsRequestEntry, BusError> {
        let detail = serde_json::to_string(event).map_err(|err| BusError::with_source(err.to_string(), err))?;
        if detail.len() > MAX_ENTRY_BYTES {
            return Err(BusError::new(format!(
                "event `{}` is {} bytes, over EventBridge's {MAX_ENTRY_BYTES}-byte entry limit",
                event.name,
                detail.len()
            )));
        }
        Ok(PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus_name)
            .source(&self.source)
            .detail_type(&event.name)
            .detail(detail)
            .build())
    }

    async fn put_batch(&self, events: &[EventPayload]) -> Result<(), BusError> {
        let mut pending: Vec<usize> = (0..events.len()).collect();
        let mut last_error = String::new();
        for attempt in 0..self.attempts {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
            let entries = pending.iter().map(|&i| self.entry(&events[i])).collect::<Result<Vec<_>, _>>()?;
            let response = match self.client.put_events().set_entries(Some(entries)).send().await {
                Ok(response) => response,
                Err(err) => {
                    last_error = format!(
                        "PutEvents: {}",
                        err.message().map(str::to_string).unwrap_or_else(|| format!("{err:?}"))
                    );
                    continue;
                }
            };
            let results = response.entries.unwrap_or_default();
            let failed: Vec<usize> = pending
                .iter()
                .zip(results.iter())
                .filter(|(_, result)| result.error_code.is_some())
                .map(|(&i, _)| i)
                .collect();
            if let Some(result) = results.iter().find(|result| result.error_code.is_some()) {
                last_error = format!(
                    "{}: {}",
                    result.error_code.as_deref().unwrap_or_default(),
                    result.error_message.as_deref().unwrap_or_default()
                );
            }
            if failed.is_empty() {
                return Ok(());
            }
            tracing::warn!(failed = failed.len(), error = %last_error, "PutEvents entries failed; retrying them");
            pending = failed;
        }
        Err(BusError::new(format!(
            "{} of {} events not accepted after {} attempts: {last_error}",
            pending.len(),
            events.len(),
            self.attempts
        )))
    }
}

impl Bus for EventBridgeBus {
    async fn send(&self, events: &[EventPayload]) -> Result<Vec<String>, BusError> {
        for batch in events.chunks(MAX_BATCH) {
            self.put_batch(batch).await?;
        }
        Ok(events.iter().map(|event| event.id.clone().unwrap_or_default()).collect())
    }
}
