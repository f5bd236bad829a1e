//! How drivers send events ([`Bus`]) and wake runs later ([`Timer`]), with in-process
//! implementations. EventBridge and EventBridge Scheduler implement them in `cairn-aws`.

use crate::event::EventPayload;
use crate::id::RunId;
use crate::record::Millis;
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

/// A bus or timer failure: what failed, and the error that caused it (an SDK error, a
/// serialization error), kept as its [`source`](std::error::Error::source).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct BusError {
    message: String,
    #[source]
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl BusError {
    /// A failure described by `message` alone.
    pub fn new(message: impl Into<String>) -> Self {
        BusError { message: message.into(), source: None }
    }

    /// A failure described by `message`, caused by `source`.
    pub fn with_source(message: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        BusError { message: message.into(), source: Some(Arc::new(source)) }
    }

    /// What failed.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl PartialEq for BusError {
    /// Equal when they say the same (sources are compared by their messages only).
    fn eq(&self, other: &Self) -> bool {
        self.message == other.message
    }
}

impl Eq for BusError {}

/// Sends events to whatever routes them to functions.
pub trait Bus: Send + Sync + 'static {
    /// Sends `events` (ids already assigned) and returns their ids in order.
    ///
    /// # Behavior
    /// - All or nothing from the caller's view: an error means the step will be retried, and
    ///   the same ids make the retry harmless.
    fn send(&self, events: &[EventPayload]) -> impl Future<Output = Result<Vec<String>, BusError>> + Send;
}

/// Wakes a run at a time.
pub trait Timer: Send + Sync + 'static {
    /// Resumes `run_id` (a run of `function_id`) at `at`. Idempotent per (`run_id`, `key`, `at`):
    /// asking twice schedules once.
    fn wake_at(
        &self,
        run_id: &RunId,
        function_id: &str,
        key: &str,
        at: Millis,
    ) -> impl Future<Output = Result<(), BusError>> + Send;

    /// The run ended: drop what is still armed for it (e.g. a long wake-up's schedule), so it
    /// does not fire for nothing. Best effort; a wake-up that fires anyway finds the run ended.
    fn forget(&self, run_id: &RunId) -> impl Future<Output = Result<(), BusError>> + Send {
        let _ = run_id;
        async { Ok(()) }
    }
}

/// Sends `data` to the run waiting for `signal` (`step.wait_for_signal`) over `bus` (EventBridge
/// in AWS, the Runner's bus in process), at `now`: the signal event's id. The run waiting for it
/// when it arrives receives it; with none waiting, nothing happens (a signal is not kept for a
/// wait that begins later, unlike an event, so it is never delivered twice).
///
/// # Errors
/// An empty signal name, or the bus's error.
pub async fn send_signal<B: Bus>(bus: &B, signal: &str, data: Value, now: Millis) -> Result<String, BusError> {
    let signal = signal.trim();
    if signal.is_empty() {
        return Err(BusError::new("a signal name must not be empty"));
    }
    let id = crate::id::new_event_id(now);
    let event = crate::event::signal(signal, data).with_id(&id).with_ts(now);
    bus.send(std::slice::from_ref(&event)).await?;
    Ok(id)
}

/// An in-process bus: sent events queue up until a driver takes them.
#[derive(Clone, Debug, Default)]
pub struct MemoryBus {
    inner: Arc<Mutex<BusInner>>,
}

#[derive(Debug, Default)]
struct BusInner {
    pending: VecDeque<EventPayload>,
    sent: Vec<EventPayload>,
}

impl MemoryBus {
    /// An empty bus.
    pub fn new() -> Self {
        MemoryBus::default()
    }

    fn lock(&self) -> MutexGuard<'_, BusInner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes the events not yet delivered.
    pub fn take_pending(&self) -> Vec<EventPayload> {
        self.lock().pending.drain(..).collect()
    }

    /// Every event ever sent, in order.
    pub fn sent(&self) -> Vec<EventPayload> {
        self.lock().sent.clone()
    }
}

impl Bus for MemoryBus {
    async fn send(&self, events: &[EventPayload]) -> Result<Vec<String>, BusError> {
        let mut inner = self.lock();
        inner.pending.extend(events.iter().cloned());
        inner.sent.extend(events.iter().cloned());
        Ok(events.iter().map(|event| event.id.clone().unwrap_or_default()).collect())
    }
}

/// An in-process timer: a list of (run, key) wake-ups a driver polls with [`MemoryTimer::take_due`].
#[derive(Clone, Debug, Default)]
pub struct MemoryTimer {
    inner: Arc<Mutex<BTreeMap<(RunId, String), Millis>>>,
}

impl MemoryTimer {
    /// No wake-ups.
    pub fn new() -> Self {
        MemoryTimer::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<(RunId, String), Millis>> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Removes and returns the runs due at `now`, earliest first, each once.
    pub fn take_due(&self, now: Millis) -> Vec<RunId> {
        let mut entries = self.lock();
        let mut due: Vec<((RunId, String), Millis)> =
            entries.iter().filter(|(_, at)| **at <= now).map(|(key, at)| (key.clone(), *at)).collect();
        due.sort_by_key(|(_, at)| *at);
        let mut runs: Vec<RunId> = Vec::new();
        for (key, _) in due {
            entries.remove(&key);
            if !runs.contains(&key.0) {
                runs.push(key.0);
            }
        }
        runs
    }

    /// The earliest pending wake-up.
    pub fn next_due(&self) -> Option<Millis> {
        self.lock().values().min().copied()
    }

    /// How many wake-ups are pending.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none are pending.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

impl Timer for MemoryTimer {
    async fn wake_at(&self, run_id: &RunId, _function_id: &str, key: &str, at: Millis) -> Result<(), BusError> {
        self.lock().insert((run_id.clone(), key.to_string()), at);
        Ok(())
    }
}
