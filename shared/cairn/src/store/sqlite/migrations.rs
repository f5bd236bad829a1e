//! The run store's tables in a SQLite file, as an ordered list of migrations (see
//! [`schema`](crate::store::schema)): a change to the tables is a new migration at the end.

use crate::store::schema::{Schema, Slot};
use rusqlite::Transaction;

/// The run store's part of the file's schema (the low 16 bits of `user_version`; see
/// [`schema`](crate::store::schema)). A change to the tables is a new migration at the end.
pub const STORE_SCHEMA: Schema =
    Schema { name: "run store", slot: Slot::Low, migrations: &[version_1, version_2, version_3, version_4] };

/// Version 2: flow-control items (rate-limit and idempotency buckets, singleton locks) and
/// concurrency slots and throttle queues (each key's state, as JSON).
fn version_2(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS flow (key TEXT PRIMARY KEY, tat INTEGER, holder TEXT);
         CREATE TABLE IF NOT EXISTS slots (key TEXT PRIMARY KEY, state TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS throttles (key TEXT PRIMARY KEY, state TEXT NOT NULL);",
    )
}

/// Version 3: waits filed under the value their condition requires of one event field
/// ([`Wait::key`]), so an event reads only the waits it could resume. Earlier waits have no key
/// and are matched the general way.
fn version_3(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "ALTER TABLE waits ADD COLUMN key_path TEXT;
         ALTER TABLE waits ADD COLUMN key_value TEXT;
         CREATE INDEX IF NOT EXISTS waits_by_key ON waits (event, key_path, key_value);",
    )
}

/// Version 4: event windows (debounce, batches; and a debounced function's rate-limit
/// buckets), as JSON, and the events a window keeps, one row each.
fn version_4(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS windows (key TEXT PRIMARY KEY, state TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS window_events (
             placeholder TEXT NOT NULL, event_id TEXT NOT NULL, seq INTEGER NOT NULL, event TEXT NOT NULL,
             PRIMARY KEY (placeholder, event_id));",
    )
}

/// Version 1: the tables as they were when versioning began. Idempotent, so a file made before
/// versioning (`user_version` 0, these tables present) is recognised as version 1.
fn version_1(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(VERSION_1)?;
    // Files made before the reconciler's index existed gain its column.
    let has_wake_at: bool =
        tx.query_row("SELECT COUNT(*) FROM pragma_table_info('runs') WHERE name = 'wake_at'", [], |row| row.get(0))?;
    if !has_wake_at {
        tx.execute_batch("ALTER TABLE runs ADD COLUMN wake_at INTEGER")?;
    }
    // The reconciler's index: only runs that need a driver have a `wake_at`.
    tx.execute_batch("CREATE INDEX IF NOT EXISTS runs_due ON runs (function_id, wake_at) WHERE wake_at IS NOT NULL")
}

const VERSION_1: &str = "
CREATE TABLE IF NOT EXISTS runs (
    run_id      TEXT PRIMARY KEY,
    function_id TEXT NOT NULL,
    status      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    version     INTEGER NOT NULL,
    meta        TEXT NOT NULL,
    wake_at     INTEGER
);
CREATE INDEX IF NOT EXISTS runs_by_created ON runs (created_at DESC);
CREATE TABLE IF NOT EXISTS steps (
    run_id   TEXT NOT NULL,
    step_id  TEXT NOT NULL,
    position INTEGER NOT NULL,
    final    INTEGER NOT NULL,
    record   TEXT NOT NULL,
    PRIMARY KEY (run_id, step_id)
);
-- A run's journal is read in position order: through this index, not a sort per load.
CREATE INDEX IF NOT EXISTS steps_by_position ON steps (run_id, position);
CREATE TABLE IF NOT EXISTS waits (
    event      TEXT NOT NULL,
    run_id     TEXT NOT NULL,
    step_id    TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    wait       TEXT NOT NULL,
    PRIMARY KEY (event, run_id, step_id)
);
CREATE TABLE IF NOT EXISTS events (
    name        TEXT NOT NULL,
    id          TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    event       TEXT NOT NULL,
    PRIMARY KEY (name, id)
);
CREATE INDEX IF NOT EXISTS events_by_time ON events (name, received_at);
";
