//! What the dev server's parts (the Inngest executor, the run operations) need from it: its
//! store, its tables, its clock and its PutEvents path. The dev server (`Dev`) implements
//! [`Host`]; the parts depend on this trait, not on `Dev`, so no module depends back on the
//! server that holds it.

use crate::DevError;
use crate::devdb::{DevDb, Entry};
use crate::template::LOCAL_STACK_NAME;
use cairn::{Bus, BusError, EventPayload, Millis};
use cairn_aws::AnyStore;
use std::sync::Arc;

/// The dev server, as its parts see it.
pub trait Host: Send + Sync + 'static {
    /// The runs' store (the functions' SQLite file, or DynamoDB).
    fn store(&self) -> &AnyStore;
    /// The event log, the invocation queue and the schedules.
    fn db(&self) -> &DevDb;
    /// Now, in milliseconds.
    fn now(&self) -> Millis;
    /// Accepts events as PutEvents does (logged, then routed by the template and to the apps);
    /// returns their envelope ids.
    ///
    /// # Errors
    /// The log could not be written: nothing was accepted.
    fn put_events(&self, entries: Vec<Entry>, cause: &str) -> Result<Vec<String>, DevError>;
}

/// Sends events as the functions do (PutEvents on the stack's bus): the [`Bus`] of the core's
/// lifecycle operations in the dev server.
#[derive(Debug)]
pub struct HostBus<H>(pub Arc<H>);

impl<H> Clone for HostBus<H> {
    fn clone(&self) -> Self {
        HostBus(Arc::clone(&self.0))
    }
}

impl<H: Host> Bus for HostBus<H> {
    async fn send(&self, events: &[EventPayload]) -> Result<Vec<String>, BusError> {
        let entries = events
            .iter()
            .map(|event| {
                Ok(Entry {
                    source: "cairn".into(),
                    detail_type: event.name.clone(),
                    detail: serde_json::to_value(event).map_err(|err| BusError::with_source(err.to_string(), err))?,
                    bus: LOCAL_STACK_NAME.into(),
                    time: None,
                    resources: Vec::new(),
                })
            })
            .collect::<Result<Vec<_>, BusError>>()?;
        self.0.put_events(entries, "outbox").map_err(BusError::new)?;
        Ok(events.iter().map(|event| event.id.clone().unwrap_or_default()).collect())
    }
}
