//! An embedded SQLite store (bundled SQLite, one file): the local-mode store of `cargo lambda
//! watch` and the dev server. Tables mirror the DynamoDB design: `runs` (META), `steps`
//! (`STEP#`), `waits` (`WAIT#`), `flow` (`FLOW#`).

mod migrations;
mod waits;

use super::schema::migrate;
use super::{Admission, Commit, CreateRun, RunQuery, RunStore, StoreError, effective_limit};
use crate::event::EventPayload;
use crate::flow::{
    Acquired, Claim, FlowItem, Gcra, SlotState, ThrottleState, Throttled, WindowChange, WindowState, Windowed, acquire,
    apply, decide, leave, redelivered, release, throttle,
};
use crate::id::RunId;
use crate::record::{Journal, Millis, RunMeta, StepRecord, Wait};
pub use migrations::STORE_SCHEMA;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// A store in one SQLite file (or in memory). Clones share one connection.
///
/// Calls run on the caller's thread: SQLite answers in microseconds, and the file is local.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    connection: Arc<Mutex<Connection>>,
}

impl SqliteStore {
    /// Reads the JSON states of `keys` in `table` (`slots`, `throttles` or `windows`), applies `decide`
    /// and writes them back, in one IMMEDIATE transaction.
    fn update_states<T: Serialize + DeserializeOwned + Default, R>(
        &self,
        table: &str,
        keys: &[&str],
        decide: impl FnOnce(&[T]) -> (Vec<T>, R),
    ) -> Result<R, StoreError> {
        let mut connection = self.connection();
        let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate).map_err(backend)?;
        let mut states = Vec::with_capacity(keys.len());
        for key in keys {
            let state = transaction
                .query_row(&format!("SELECT state FROM {table} WHERE key = ?1"), [key], |row| row.get::<_, String>(0))
                .optional()
                .map_err(backend)?;
            states.push(state.map(|state| decode(&state)).transpose()?.unwrap_or_default());
        }
        let (next, outcome) = decide(&states);
        for (key, state) in keys.iter().zip(next) {
            transaction
                .execute(
                    &format!(
                        "INSERT INTO {table} (key, state) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET state = excluded.state"
                    ),
                    params![key, encode(&state)?],
                )
                .map_err(backend)?;
        }
        transaction.commit().map_err(backend)?;
        Ok(outcome)
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, in WAL mode so readers (the dev
    /// server, the CLI) never block the functions writing to it, and brings its schema to the
    /// current version ([`STORE_SCHEMA`]).
    ///
    /// # Errors
    /// When the file cannot be opened or its schema cannot be upgraded, or was written by a
    /// newer version (`StoreError::Backend`, naming the file and both versions).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let connection = Connection::open(path.as_ref()).map_err(|err| {
            StoreError::Unavailable(format!("cannot open SQLite database {}: {err}", path.as_ref().display()))
        })?;
        Self::init(connection, &path.as_ref().display().to_string())
    }

    /// A private in-memory database.
    ///
    /// # Errors
    /// When SQLite cannot allocate it.
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory().map_err(backend)?, ":memory:")
    }

    fn init(mut connection: Connection, path: &str) -> Result<Self, StoreError> {
        connection.busy_timeout(Duration::from_secs(5)).map_err(backend)?;
        connection.pragma_update(None, "journal_mode", "WAL").map_err(backend)?;
        connection.pragma_update(None, "synchronous", "NORMAL").map_err(backend)?;
        migrate(&mut connection, path, &STORE_SCHEMA).map_err(|err| StoreError::Backend(err.to_string()))?;
        Ok(SqliteStore { connection: Arc::new(Mutex::new(connection)) })
    }

    fn connection(&self) -> MutexGuard<'_, Connection> {
        self.connection.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn backend(err: rusqlite::Error) -> StoreError {
    match err {
        rusqlite::Error::SqliteFailure(code, _)
            if matches!(code.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) =>
        {
            StoreError::Unavailable(err.to_string())
        }
        other => StoreError::Backend(other.to_string()),
    }
}

fn encode<T: Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|err| StoreError::Serialization(err.to_string()))
}

fn decode<T: DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|err| StoreError::Serialization(err.to_string()))
}

impl RunStore for SqliteStore {
    async fn admit_run(&self, meta: RunMeta, claims: &[Claim], now: Millis) -> Result<Admission, StoreError> {
        let mut meta = meta;
        meta.version = 0;
        let mut connection = self.connection();
        // IMMEDIATE: the dev server and the functions under `cargo lambda watch` share the file,
        // and a claim is read and then written.
        let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate).map_err(backend)?;
        let existing = transaction
            .query_row("SELECT meta FROM runs WHERE run_id = ?1", [meta.run_id.as_str()], |row| row.get::<_, String>(0))
            .optional()
            .map_err(backend)?;
        if let Some(existing) = existing {
            return Ok(Admission::Existing(decode(&existing)?));
        }
        let mut stored = Vec::with_capacity(claims.len());
        for claim in claims {
            let item = transaction
                .query_row("SELECT tat, holder FROM flow WHERE key = ?1", [claim.key()], |row| {
                    Ok(FlowItem { tat: row.get(0)?, holder: row.get::<_, Option<String>>(1)?.map(RunId::new) })
                })
                .optional()
                .map_err(backend)?;
            stored.push(item);
        }
        let items = match decide(claims, &stored, &meta.run_id, now) {
            Ok(items) => items,
            Err((claim, holder)) => return Ok(Admission::Refused { claim, holder }),
        };
        for (claim, item) in claims.iter().zip(items) {
            transaction
                .execute(
                    "INSERT INTO flow (key, tat, holder) VALUES (?1, ?2, ?3)
                     ON CONFLICT (key) DO UPDATE SET tat = excluded.tat, holder = excluded.holder",
                    params![claim.key(), item.tat, item.holder.as_ref().map(RunId::as_str)],
                )
                .map_err(backend)?;
        }
        transaction
            .execute(
                "INSERT INTO runs (run_id, function_id, status, created_at, version, meta, wake_at)
                 VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6)",
                params![
                    meta.run_id.as_str(),
                    meta.function_id,
                    meta.status.as_str(),
                    meta.created_at,
                    encode(&meta)?,
                    meta.wake_at
                ],
            )
            .map_err(backend)?;
        transaction.commit().map_err(backend)?;
        Ok(Admission::Created(meta))
    }

    async fn acquire_slots(
        &self,
        run_id: &RunId,
        slots: &[crate::flow::Slot],
        now: Millis,
        hold_until: Millis,
    ) -> Result<Acquired, StoreError> {
        let keys: Vec<&str> = slots.iter().map(|slot| slot.key.as_str()).collect();
        self.update_states("slots", &keys, |states: &[SlotState]| acquire(slots, states, run_id, now, hold_until))
    }

    async fn release_slots(
        &self,
        run_id: &RunId,
        slots: &[crate::flow::Slot],
        now: Millis,
    ) -> Result<Vec<RunId>, StoreError> {
        let keys: Vec<&str> = slots.iter().map(|slot| slot.key.as_str()).collect();
        self.update_states("slots", &keys, |states: &[SlotState]| release(slots, states, run_id, now))
    }

    async fn throttle_start(
        &self,
        run_id: &RunId,
        key: &str,
        limiter: Gcra,
        score: Millis,
        now: Millis,
    ) -> Result<Throttled, StoreError> {
        self.update_states("throttles", &[key], |states: &[ThrottleState]| {
            let (next, throttled) = throttle(limiter, &states[0], run_id, score, now);
            (vec![next], throttled)
        })
    }

    async fn window(&self, keys: &[&str], change: &WindowChange, now: Millis) -> Result<Windowed, StoreError> {
        let mut connection = self.connection();
        let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate).map_err(backend)?;
        let mut states = Vec::with_capacity(keys.len());
        for key in keys {
            let state = transaction
                .query_row("SELECT state FROM windows WHERE key = ?1", [key], |row| row.get::<_, String>(0))
                .optional()
                .map_err(backend)?;
            states.push(state.map(|state| decode::<WindowState>(&state)).transpose()?.unwrap_or_default());
        }
        let (next, outcome) = apply(change, &states, now);
        if let (Some((event, placeholder)), Some(taken_by)) = (change.kept(), outcome.taken_by()) {
            let inserted = transaction
                .execute(
                    "INSERT OR IGNORE INTO window_events (placeholder, event_id, seq, event)
                     VALUES (?1, ?2, (SELECT COUNT(*) FROM window_events WHERE placeholder = ?1), ?3)",
                    params![taken_by.as_str(), event.id.as_deref().unwrap_or_default(), encode(event)?],
                )
                .map_err(backend)?;
            if inserted == 0 {
                return Ok(redelivered(&states[0], placeholder));
            }
        }
        for (key, state) in keys.iter().zip(next) {
            transaction
                .execute(
                    "INSERT INTO windows (key, state) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET state = excluded.state",
                    params![key, encode(&state)?],
                )
                .map_err(backend)?;
        }
        transaction.commit().map_err(backend)?;
        Ok(outcome)
    }

    async fn window_events(&self, run_id: &RunId) -> Result<Vec<EventPayload>, StoreError> {
        let connection = self.connection();
        let mut statement = connection
            .prepare("SELECT event FROM window_events WHERE placeholder = ?1 ORDER BY seq")
            .map_err(backend)?;
        let rows = statement.query_map([run_id.as_str()], |row| row.get::<_, String>(0)).map_err(backend)?;
        rows.map(|row| decode(&row.map_err(backend)?)).collect()
    }

    async fn leave_throttle(&self, run_id: &RunId, key: &str) -> Result<(), StoreError> {
        self.update_states("throttles", &[key], |states: &[ThrottleState]| (vec![leave(&states[0], run_id)], ()))
    }

    async fn release_lock(&self, key: &str, holder: &RunId) -> Result<(), StoreError> {
        self.connection()
            .execute("DELETE FROM flow WHERE key = ?1 AND holder = ?2", params![key, holder.as_str()])
            .map_err(backend)?;
        Ok(())
    }

    async fn create_run(&self, meta: RunMeta) -> Result<CreateRun, StoreError> {
        let mut meta = meta;
        meta.version = 0;
        let connection = self.connection();
        let inserted = connection
            .execute(
                "INSERT INTO runs (run_id, function_id, status, created_at, version, meta, wake_at)
                 VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6) ON CONFLICT (run_id) DO NOTHING",
                params![
                    meta.run_id.as_str(),
                    meta.function_id,
                    meta.status.as_str(),
                    meta.created_at,
                    encode(&meta)?,
                    meta.wake_at
                ],
            )
            .map_err(backend)?;
        if inserted == 1 {
            return Ok(CreateRun::Created(meta));
        }
        let existing: String = connection
            .query_row("SELECT meta FROM runs WHERE run_id = ?1", [meta.run_id.as_str()], |row| row.get(0))
            .map_err(backend)?;
        Ok(CreateRun::Existing(decode(&existing)?))
    }

    async fn load(&self, run_id: &RunId) -> Result<Option<Journal>, StoreError> {
        let connection = self.connection();
        let Some(meta) = connection
            .prepare_cached("SELECT meta FROM runs WHERE run_id = ?1")
            .map_err(backend)?
            .query_row([run_id.as_str()], |row| row.get::<_, String>(0))
            .optional()
            .map_err(backend)?
        else {
            return Ok(None);
        };
        let mut statement = connection
            .prepare_cached("SELECT record FROM steps WHERE run_id = ?1 ORDER BY position")
            .map_err(backend)?;
        let steps = statement
            .query_map([run_id.as_str()], |row| row.get::<_, String>(0))
            .map_err(backend)?
            .map(|row| row.map_err(backend).and_then(|text| decode::<StepRecord>(&text)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(Journal { meta: decode(&meta)?, steps }))
    }

    async fn update_meta(&self, meta: &RunMeta) -> Result<RunMeta, StoreError> {
        let mut stored = meta.clone();
        stored.version = meta.version + 1;
        let connection = self.connection();
        // Statements on the hot path (every step, every lease) are prepared once per connection.
        let updated = connection
            .prepare_cached(
                "UPDATE runs SET status = ?1, version = ?2, meta = ?3, wake_at = ?6 WHERE run_id = ?4 AND version = ?5",
            )
            .map_err(backend)?
            .execute(params![
                stored.status.as_str(),
                i64::try_from(stored.version).map_err(|err| StoreError::Serialization(err.to_string()))?,
                encode(&stored)?,
                meta.run_id.as_str(),
                i64::try_from(meta.version).map_err(|err| StoreError::Serialization(err.to_string()))?,
                stored.wake_at,
            ])
            .map_err(backend)?;
        if updated == 1 {
            return Ok(stored);
        }
        let exists = connection
            .query_row("SELECT 1 FROM runs WHERE run_id = ?1", [meta.run_id.as_str()], |_| Ok(()))
            .optional()
            .map_err(backend)?;
        Err(match exists {
            Some(()) => StoreError::Conflict { run_id: meta.run_id.clone(), expected: meta.version },
            None => StoreError::NotFound(meta.run_id.clone()),
        })
    }

    async fn commit_step(&self, run_id: &RunId, record: &StepRecord) -> Result<Commit, StoreError> {
        let connection = self.connection();
        // One conditional write, as DynamoDB's PutItem: replace only a non-final record.
        let written = connection
            .prepare_cached(
                "INSERT INTO steps (run_id, step_id, position, final, record) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (run_id, step_id) DO UPDATE SET position = excluded.position, final = excluded.final,
                     record = excluded.record
                 WHERE steps.final = 0 AND json_extract(steps.record, '$.attempts') <= ?6",
            )
            .map_err(backend)?
            .execute(params![
                run_id.as_str(),
                record.id.as_str(),
                record.position,
                record.state.is_final(),
                encode(record)?,
                record.attempts
            ])
            .map_err(backend)?;
        if written == 1 {
            return Ok(Commit::Committed);
        }
        let existing: String = connection
            .query_row(
                "SELECT record FROM steps WHERE run_id = ?1 AND step_id = ?2",
                params![run_id.as_str(), record.id.as_str()],
                |row| row.get(0),
            )
            .map_err(backend)?;
        Ok(Commit::Existing(Box::new(decode(&existing)?)))
    }

    async fn commit_and_wake(&self, run_id: &RunId, record: &StepRecord, now: Millis) -> Result<Commit, StoreError> {
        let mut connection = self.connection();
        let transaction = connection.transaction().map_err(backend)?;
        let meta = transaction
            .query_row("SELECT meta FROM runs WHERE run_id = ?1", [run_id.as_str()], |row| row.get::<_, String>(0))
            .optional()
            .map_err(backend)?
            .ok_or_else(|| StoreError::NotFound(run_id.clone()))?;
        let existing = transaction
            .query_row(
                "SELECT record FROM steps WHERE run_id = ?1 AND step_id = ?2 AND final = 1",
                params![run_id.as_str(), record.id.as_str()],
                |row| row.get::<_, String>(0),
            )
            .optional()
            .map_err(backend)?;
        if let Some(existing) = existing {
            return Ok(Commit::Existing(Box::new(decode(&existing)?)));
        }
        transaction
            .execute(
                "INSERT INTO steps (run_id, step_id, position, final, record) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (run_id, step_id) DO UPDATE SET position = excluded.position, final = excluded.final,
                     record = excluded.record",
                params![run_id.as_str(), record.id.as_str(), record.position, record.state.is_final(), encode(record)?],
            )
            .map_err(backend)?;
        let mut meta: RunMeta = decode(&meta)?;
        meta.version += 1;
        meta.wake_at = Some(now);
        transaction
            .execute(
                "UPDATE runs SET version = ?1, meta = ?2, wake_at = ?3 WHERE run_id = ?4",
                params![
                    i64::try_from(meta.version).map_err(|err| StoreError::Serialization(err.to_string()))?,
                    encode(&meta)?,
                    now,
                    run_id.as_str()
                ],
            )
            .map_err(backend)?;
        transaction.commit().map_err(backend)?;
        Ok(Commit::Committed)
    }

    async fn due_runs(&self, function_id: &str, now: Millis, limit: usize) -> Result<Vec<RunMeta>, StoreError> {
        let connection = self.connection();
        let mut statement = connection
            .prepare_cached(
                "SELECT meta FROM runs WHERE function_id = ?1 AND wake_at IS NOT NULL AND wake_at <= ?2
                 ORDER BY wake_at, run_id LIMIT ?3",
            )
            .map_err(backend)?;
        statement
            .query_map(params![function_id, now, i64::try_from(limit).unwrap_or(i64::MAX)], |row| {
                row.get::<_, String>(0)
            })
            .map_err(backend)?
            .map(|row| row.map_err(backend).and_then(|text| decode(&text)))
            .collect()
    }

    async fn put_wait(&self, wait: &Wait) -> Result<(), StoreError> {
        self.write_wait(wait)
    }

    async fn waits_for(&self, event: &EventPayload) -> Result<Vec<Wait>, StoreError> {
        self.find_waits(event)
    }

    async fn remove_wait(&self, wait: &Wait) -> Result<bool, StoreError> {
        self.delete_wait(wait)
    }

    async fn record_event(&self, event: &EventPayload, received_at: Millis) -> Result<(), StoreError> {
        self.log_event(event, received_at)
    }

    async fn events_since(&self, name: &str, since: Millis) -> Result<Vec<EventPayload>, StoreError> {
        self.logged_events(name, since)
    }

    async fn list_runs(&self, query: &RunQuery) -> Result<Vec<RunMeta>, StoreError> {
        let connection = self.connection();
        let mut statement = connection
            .prepare_cached(
                "SELECT meta FROM runs WHERE (?1 IS NULL OR function_id = ?1) AND (?2 IS NULL OR status = ?2)
                 AND (?4 IS NULL OR created_at >= ?4) AND (?5 IS NULL OR created_at < ?5)
                 ORDER BY created_at DESC, run_id DESC LIMIT ?3",
            )
            .map_err(backend)?;
        let limit = i64::try_from(effective_limit(query)).unwrap_or(i64::MAX);
        statement
            .query_map(
                params![
                    query.function_id,
                    query.status.map(|s| s.as_str()),
                    limit,
                    query.created_from,
                    query.created_before
                ],
                |row| row.get::<_, String>(0),
            )
            .map_err(backend)?
            .map(|row| row.map_err(backend).and_then(|text| decode(&text)))
            .collect()
    }
}
