//! The dev tables' schema, versioned in the file's `user_version` (see `cairn::store::schema`).

use cairn::store::schema::{Schema, Slot};
use rusqlite::Transaction;

/// The dev server's part of the file's schema: the high 16 bits of `user_version` (the run
/// store, sharing the file, has the low 16; see `cairn::store::schema`). A change to the dev
/// tables is a new migration at the end.
pub const DEV_SCHEMA: Schema = Schema { name: "dev server", slot: Slot::High, migrations: &[version_1] };

/// Version 1: the dev tables as they were when versioning began. Idempotent, so a file made
/// before versioning (`user_version` 0, these tables present) is recognised as version 1.
fn version_1(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(VERSION_1)
}

const VERSION_1: &str = "
CREATE TABLE IF NOT EXISTS dev_events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    event_id    TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    bus         TEXT NOT NULL,
    source      TEXT NOT NULL,
    name        TEXT NOT NULL,
    envelope    TEXT NOT NULL,
    targets     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS dev_invocations (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    function     TEXT NOT NULL,
    cause        TEXT NOT NULL,
    event_id     TEXT,
    payload      TEXT NOT NULL,
    status       TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_at      INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    finished_at  INTEGER,
    response     TEXT,
    error        TEXT
);
CREATE INDEX IF NOT EXISTS dev_invocations_due ON dev_invocations (status, next_at);
CREATE TABLE IF NOT EXISTS dev_schedules (
    group_name  TEXT NOT NULL,
    name        TEXT NOT NULL,
    expression  TEXT NOT NULL,
    time_zone   TEXT NOT NULL,
    target_arn  TEXT NOT NULL,
    input       TEXT NOT NULL,
    delete_after INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    next_at     INTEGER,
    PRIMARY KEY (group_name, name)
);
";
