//! Durable run state: the [`RunStore`] contract and its embedded backends, [`MemoryStore`] and
//! `SqliteStore` (feature `sqlite`). Every backend passes the conformance suite in
//! `cairn::testing::conformance`.

mod memory;
#[cfg(feature = "sqlite")]
pub mod schema;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use memory::MemoryStore;
#[cfg(feature = "sqlite")]
pub use sqlite::{STORE_SCHEMA, SqliteStore};

use crate::event::EventPayload;
use crate::flow::{Acquired, Claim, Gcra, Slot, Throttled, WindowChange, Windowed};
use crate::id::RunId;
use crate::record::{Journal, Millis, RunMeta, RunStatus, StepRecord, Wait};
use std::future::Future;

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// An optimistic-concurrency check failed: someone else updated the run first.
    #[error("run {run_id}: version conflict (expected version {expected})")]
    Conflict {
        /// The run.
        run_id: RunId,
        /// The version the caller read.
        expected: u64,
    },
    /// The run does not exist.
    #[error("run {0} not found")]
    NotFound(RunId),
    /// The backend asked us to slow down.
    #[error("store throttled: {0}")]
    Throttled(String),
    /// The backend is unreachable or failed transiently.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A record could not be encoded or decoded.
    #[error("store record malformed: {0}")]
    Serialization(String),
    /// A step output over the store's limit: the step fails, non-retriably.
    #[error("step `{step}`: its output is {bytes} bytes, over the {limit}-byte limit")]
    TooLarge {
        /// The step's name.
        step: String,
        /// The output's size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// A run head (its event, output or error) over the store's item limit: the run fails,
    /// naming the size, instead of being stuck.
    #[error("run {run_id}: its head record is {bytes} bytes (output or error included), over the {limit}-byte limit")]
    RunTooLarge {
        /// The run.
        run_id: RunId,
        /// The record's size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// Anything else the backend reported.
    #[error("store error: {0}")]
    Backend(String),
}

impl StoreError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Throttled(_) | StoreError::Unavailable(_))
    }
}

/// What [`RunStore::create_run`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum CreateRun {
    /// The run is new.
    Created(RunMeta),
    /// A run with this id already exists (a duplicate delivery): nothing was written.
    Existing(RunMeta),
}

/// What [`RunStore::admit_run`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// Every claim was granted and the run is new.
    Created(RunMeta),
    /// A run with this id already exists (a duplicate delivery): nothing was written and no
    /// claim spent.
    Existing(RunMeta),
    /// The claim at this index (in the order given) was refused: nothing was written.
    Refused {
        /// Which claim.
        claim: usize,
        /// For a lock, the run holding it.
        holder: Option<RunId>,
    },
}

/// What [`RunStore::commit_step`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Commit {
    /// The record is stored.
    Committed,
    /// A final record for this step was already stored (by a concurrent invocation, or an
    /// earlier attempt of this one); it is returned, and the caller adopts it.
    Existing(Box<StepRecord>),
}

/// A filter for [`RunStore::list_runs`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunQuery {
    /// Only runs of this function.
    pub function_id: Option<String>,
    /// Only runs in this status.
    pub status: Option<RunStatus>,
    /// Only runs created at or after this time.
    pub created_from: Option<Millis>,
    /// Only runs created before this time.
    pub created_before: Option<Millis>,
    /// At most this many (newest first); 0 means 100.
    pub limit: usize,
}

impl RunQuery {
    /// Whether `meta` passes the filters (not the limit).
    pub fn matches(&self, meta: &RunMeta) -> bool {
        self.function_id.as_ref().is_none_or(|function| &meta.function_id == function)
            && self.status.is_none_or(|status| meta.status == status)
            && self.created_from.is_none_or(|from| meta.created_at >= from)
            && self.created_before.is_none_or(|before| meta.created_at < before)
    }
}

/// Durable state for runs: head records, memoized steps and pending waits.
///
/// Methods return `impl Future + Send` so a backend can be async (DynamoDB) or not (SQLite).
pub trait RunStore: Send + Sync + 'static {
    /// Creates a run unless one with its id exists.
    ///
    /// # Behavior
    /// - New id: stores `meta` (version 0) and returns `Created`.
    /// - Existing id: writes nothing and returns `Existing` with the stored head.
    fn create_run(&self, meta: RunMeta) -> impl Future<Output = Result<CreateRun, StoreError>> + Send;

    /// Creates a run together with its flow-control claims ([`Claim`]), all or nothing.
    ///
    /// # Behavior
    /// - Existing id: writes nothing, spends nothing, returns `Existing`.
    /// - Every claim granted at `now`: each bucket's `tat` moves on ([`Gcra::admit`]), each lock
    ///   names the run, the head is stored (version 0): `Created`.
    /// - A bucket that does not admit now, or a lock held by another run than the claim's
    ///   `replaces`: nothing written, `Refused` naming the first such claim (and the lock's
    ///   holder).
    ///
    /// [`Gcra::admit`]: crate::flow::Gcra::admit
    fn admit_run(
        &self,
        meta: RunMeta,
        claims: &[Claim],
        now: Millis,
    ) -> impl Future<Output = Result<Admission, StoreError>> + Send;

    /// Releases a lock `holder` holds; a lock held by another run, or none, is left alone.
    fn release_lock(&self, key: &str, holder: &RunId) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Takes a concurrency slot of every key in `slots` for `run_id`, held until `hold_until`,
    /// or queues it ([`flow::acquire`](crate::flow::acquire): room counts only live holds, and
    /// queued runs go first, by score), in one atomic write over the keys.
    ///
    /// # Behavior
    /// - Room in every key, nobody queued ahead: the run holds a slot of each (a run already
    ///   holding one just extends it), `Granted`.
    /// - Otherwise: the run holds none, waits in the refusing key's queue (once), `Queued`.
    fn acquire_slots(
        &self,
        run_id: &RunId,
        slots: &[Slot],
        now: Millis,
        hold_until: Millis,
    ) -> impl Future<Output = Result<Acquired, StoreError>> + Send;

    /// Gives back `run_id`'s slots and leaves any queue it is in; returns the queued runs at
    /// the heads of the queues that now have room, to wake.
    fn release_slots(
        &self,
        run_id: &RunId,
        slots: &[Slot],
        now: Millis,
    ) -> impl Future<Output = Result<Vec<RunId>, StoreError>> + Send;

    /// Lets `run_id` (queue score `score`) start under the throttle `key` at `now`, or queues
    /// it ([`flow::throttle`](crate::flow::throttle)), atomically.
    ///
    /// # Behavior
    /// - Nobody queued ahead and the limiter admits now: its `tat` moves on, `Admitted`.
    /// - Otherwise: the run waits in the key's queue (once), `Queued` with its turn's time.
    fn throttle_start(
        &self,
        run_id: &RunId,
        key: &str,
        limiter: Gcra,
        score: Millis,
        now: Millis,
    ) -> impl Future<Output = Result<Throttled, StoreError>> + Send;

    /// Applies a window `change` at `now` ([`flow::apply`](crate::flow::apply)) to the items
    /// under `keys` (the window's; for an event of a rate-limited function, then the rate
    /// limit's bucket), atomically.
    ///
    /// # Behavior
    /// - A `Push` whose rule keeps events ([`WindowRule::keeps_events`]) also keeps the event
    ///   under the placeholder that took it ([`Windowed::taken_by`]), in the same write, with
    ///   its place in the window; if that placeholder already keeps an event with this id, it
    ///   writes nothing and answers [`flow::redelivered`](crate::flow::redelivered).
    ///
    /// [`WindowRule::keeps_events`]: crate::flow::WindowRule::keeps_events
    fn window(
        &self,
        keys: &[&str],
        change: &WindowChange,
        now: Millis,
    ) -> impl Future<Output = Result<Windowed, StoreError>> + Send;

    /// The events kept under the window of placeholder `run_id`, in the order they came.
    fn window_events(&self, run_id: &RunId) -> impl Future<Output = Result<Vec<EventPayload>, StoreError>> + Send;

    /// `run_id` leaves the throttle `key`'s queue (it ended while waiting).
    fn leave_throttle(&self, run_id: &RunId, key: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Loads a run's head and all its steps, ordered by position.
    ///
    /// # Behavior
    /// - Unknown run: `Ok(None)`, never an error.
    /// - Reads are strongly consistent: a commit that returned is visible.
    fn load(&self, run_id: &RunId) -> impl Future<Output = Result<Option<Journal>, StoreError>> + Send;

    /// Replaces the head record if its stored version is `meta.version`; returns the stored head
    /// with its new version (`meta.version + 1`).
    ///
    /// # Behavior
    /// - Version moved on: `StoreError::Conflict`, nothing written.
    /// - Unknown run: `StoreError::NotFound`.
    fn update_meta(&self, meta: &RunMeta) -> impl Future<Output = Result<RunMeta, StoreError>> + Send;

    /// Stores a step record with one conditional write.
    ///
    /// # Behavior
    /// - No record, or a non-final one (`Scheduled`, `Retrying`) with no more attempts:
    ///   stores it, `Committed`.
    /// - A final record exists: writes nothing and returns it as `Existing` (the loser of a race
    ///   adopts the winner's result; a final result is never recorded twice).
    /// - A non-final record with more attempts exists: writes nothing and returns it as
    ///   `Existing` (a stale writer never brings back retries that were used up).
    fn commit_step(
        &self,
        run_id: &RunId,
        record: &StepRecord,
    ) -> impl Future<Output = Result<Commit, StoreError>> + Send;

    /// Commits a final `record` for a step of a run from outside the run's lease (a matched
    /// event, an invoked function's result) and makes the run due at `now`, in one atomic
    /// write: the head's `wake_at` becomes `now` and its version moves on, so a holder of the
    /// lease that is about to suspend the run gets a conflict, reloads and sees the record, and
    /// the reconciler finds the run even if every wake-up message is lost.
    ///
    /// # Behavior
    /// - No final record for the step: stores it, wakes the head, `Committed`.
    /// - A final record exists: writes nothing and returns it as `Existing`.
    /// - Unknown run: `StoreError::NotFound`, nothing written.
    fn commit_and_wake(
        &self,
        run_id: &RunId,
        record: &StepRecord,
        now: Millis,
    ) -> impl Future<Output = Result<Commit, StoreError>> + Send;

    /// Heads of `function_id`'s runs whose `wake_at` is at or before `now`, earliest first, at
    /// most `limit`: the reconciler's work list, read through an index (never a table scan).
    ///
    /// # Behavior
    /// - Runs with no `wake_at` (finished, outbox delivered) are never listed.
    fn due_runs(
        &self,
        function_id: &str,
        now: Millis,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<RunMeta>, StoreError>> + Send;

    /// Registers a pending wait or `cancel_on` listener (idempotent), filed under its
    /// [`Wait::key`] when it has one.
    fn put_wait(&self, wait: &Wait) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The pending waits `event` could resume, oldest first: those filed under a key `event`
    /// has ([`WaitKey::of_event`](crate::WaitKey::of_event) for each path waits of its name are
    /// filed under), and every general-form wait of its name.
    ///
    /// # Behavior
    /// - Reads scale with the waits returned, not with the waits pending: a filed wait whose
    ///   value differs from the event's is never read.
    fn waits_for(&self, event: &EventPayload) -> impl Future<Output = Result<Vec<Wait>, StoreError>> + Send;

    /// Removes a wait (found by its event name, run, step and key); `true` if it existed (so
    /// only one deliverer resumes the run).
    fn remove_wait(&self, wait: &Wait) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Keeps a received event for the wait lookback (an event that arrived shortly before a
    /// `wait_for_event` was registered still matches it).
    ///
    /// # Behavior
    /// - Idempotent per (event name, event id); stores may forget events after a day.
    fn record_event(
        &self,
        event: &EventPayload,
        received_at: Millis,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Events named `name` received at or after `since`, oldest first.
    fn events_since(
        &self,
        name: &str,
        since: Millis,
    ) -> impl Future<Output = Result<Vec<EventPayload>, StoreError>> + Send;

    /// Run heads matching `query`, newest first.
    fn list_runs(&self, query: &RunQuery) -> impl Future<Output = Result<Vec<RunMeta>, StoreError>> + Send;
}

pub(crate) fn effective_limit(query: &RunQuery) -> usize {
    if query.limit == 0 { 100 } else { query.limit }
}
