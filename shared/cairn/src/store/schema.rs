//! Versioned SQLite schemas (feature `sqlite`): each part of a file's schema is an ordered list
//! of migrations, its version kept in `PRAGMA user_version`, applied in one transaction when
//! the file is opened.
//!
//! One file can hold two parts: `cairn dev` keeps its own tables (the event log, the invocation
//! queue, schedules) beside the run store's in `.cairn/dev.db`, and the functions under `cargo
//! lambda watch` open the same file with the run store only. So `user_version` holds one 16-bit
//! version per part: the run store's in the low 16 bits ([`Slot::Low`]), the dev server's in the
//! high 16 ([`Slot::High`]). Each part upgrades and checks only its own.
//!
//! - Opening a file with an older version of a part applies the missing migrations, in order,
//!   in one transaction (`BEGIN IMMEDIATE`, so two processes opening the file at once take turns).
//! - A file with a newer version is refused: [`SchemaError::Newer`] names the file and both
//!   versions, and nothing is changed.
//! - Files made before versioning have `user_version` 0 and the version-1 tables. Migration 1
//!   creates version 1 idempotently (`CREATE ... IF NOT EXISTS`, columns added if missing), so
//!   on such a file it changes nothing and the file is recognised as version 1.

use rusqlite::{Connection, Transaction, TransactionBehavior};

/// Which 16 bits of `user_version` hold a part's version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// Bits 0-15: the run store ([`SqliteStore`](crate::SqliteStore)).
    Low,
    /// Bits 16-31: the dev server's tables.
    High,
}

impl Slot {
    fn shift(self) -> u32 {
        match self {
            Slot::Low => 0,
            Slot::High => 16,
        }
    }
}

/// One migration: brings the part from the version before it to the next.
pub type Migration = fn(&Transaction<'_>) -> rusqlite::Result<()>;

/// A part of a SQLite file's schema and its history.
#[derive(Clone, Copy, Debug)]
pub struct Schema {
    /// What the part is, for messages: "run store", "dev server".
    pub name: &'static str,
    /// Where its version is kept.
    pub slot: Slot,
    /// `migrations[i]` takes the part from version `i` to `i + 1`; the current version is
    /// `migrations.len()`. Migration 1 must accept a file made before versioning (see the module).
    pub migrations: &'static [Migration],
}

impl Schema {
    /// The version this build writes.
    pub fn current(&self) -> u32 {
        u32::try_from(self.migrations.len()).unwrap_or(u32::MAX)
    }
}

/// Why a file's schema could not be brought to the current version.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// The file was written by a newer build.
    #[error(
        "{path}: its {part} schema is version {found}, newer than version {supported}, the newest this build \
         knows: the file was written by a newer Cairn; open it with that version, or move it away to start afresh"
    )]
    Newer {
        /// The file.
        path: String,
        /// The part ([`Schema::name`]).
        part: &'static str,
        /// The file's version of the part.
        found: u32,
        /// This build's version.
        supported: u32,
    },
    /// SQLite failed (the migration is rolled back).
    #[error("{path}: upgrading its {part} schema: {source}")]
    Sqlite {
        /// The file.
        path: String,
        /// The part.
        part: &'static str,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
}

/// The `user_version` of `connection`'s main database.
///
/// # Errors
/// SQLite's.
pub fn user_version(connection: &Connection) -> rusqlite::Result<u32> {
    // Stored as a signed 32-bit integer; the high part may set its sign bit.
    connection.query_row("PRAGMA user_version", [], |row| row.get::<_, i64>(0)).map(|v| v as u32)
}

/// The version of `schema`'s part in a `user_version` value.
pub fn part_version(user_version: u32, slot: Slot) -> u32 {
    (user_version >> slot.shift()) & 0xFFFF
}

/// Brings `schema`'s part of the file `path` (for messages) open on `connection` to the
/// current version in one transaction; answers the version it found (0: a new file).
///
/// # Errors
/// [`SchemaError::Newer`] when the file's version is newer than this build's (nothing is
/// changed); [`SchemaError::Sqlite`] when a migration fails (it is rolled back).
pub fn migrate(connection: &mut Connection, path: &str, schema: &Schema) -> Result<u32, SchemaError> {
    let sqlite = |source| SchemaError::Sqlite { path: path.to_string(), part: schema.name, source };
    let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sqlite)?;
    let packed = user_version(&tx).map_err(sqlite)?;
    let found = part_version(packed, schema.slot);
    let current = schema.current();
    if found > current {
        return Err(SchemaError::Newer { path: path.to_string(), part: schema.name, found, supported: current });
    }
    for migration in schema.migrations.iter().skip(found as usize) {
        migration(&tx).map_err(sqlite)?;
    }
    if found < current {
        let shift = schema.slot.shift();
        let packed = (packed & !(0xFFFF << shift)) | (current << shift);
        // SQLite keeps it as a signed 32-bit integer.
        tx.pragma_update(None, "user_version", packed as i32).map_err(sqlite)?;
    }
    tx.commit().map_err(sqlite)?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn v1(tx: &Transaction<'_>) -> rusqlite::Result<()> {
        tx.execute_batch("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL);")
    }
    fn v2(tx: &Transaction<'_>) -> rusqlite::Result<()> {
        tx.execute_batch("ALTER TABLE notes ADD COLUMN author TEXT NOT NULL DEFAULT 'unknown';")
    }
    fn other(tx: &Transaction<'_>) -> rusqlite::Result<()> {
        tx.execute_batch("CREATE TABLE IF NOT EXISTS other (x);")
    }
    fn broken(tx: &Transaction<'_>) -> rusqlite::Result<()> {
        tx.execute_batch("CREATE TABLE half_done (x); THIS IS NOT SQL;")
    }

    const NOTES_V1: Schema = Schema { name: "notes", slot: Slot::Low, migrations: &[v1] };
    const NOTES_V2: Schema = Schema { name: "notes", slot: Slot::Low, migrations: &[v1, v2] };

    #[test]
    fn an_older_file_is_upgraded_in_order_and_keeps_its_rows() {
        let mut connection = Connection::open_in_memory().unwrap();
        assert_eq!(migrate(&mut connection, "notes.db", &NOTES_V1).unwrap(), 0);
        connection.execute("INSERT INTO notes (text) VALUES ('kept')", []).unwrap();
        assert_eq!(user_version(&connection).unwrap(), 1);
        assert_eq!(migrate(&mut connection, "notes.db", &NOTES_V2).unwrap(), 1);
        assert_eq!(user_version(&connection).unwrap(), 2);
        let row: (String, String) =
            connection.query_row("SELECT text, author FROM notes", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        assert_eq!(row, ("kept".into(), "unknown".into()));
        // Opening again at the current version changes nothing.
        assert_eq!(migrate(&mut connection, "notes.db", &NOTES_V2).unwrap(), 2);
    }

    #[test]
    fn a_newer_file_is_refused_naming_it_and_both_versions() {
        let mut connection = Connection::open_in_memory().unwrap();
        migrate(&mut connection, "notes.db", &NOTES_V2).unwrap();
        let err = migrate(&mut connection, "/tmp/notes.db", &NOTES_V1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/tmp/notes.db: its notes schema is version 2, newer than version 1, the newest this build knows: the \
             file was written by a newer Cairn; open it with that version, or move it away to start afresh"
        );
        assert_eq!(user_version(&connection).unwrap(), 2);
    }

    #[test]
    fn a_failed_migration_leaves_the_file_as_it_was() {
        const BROKEN: Schema = Schema { name: "notes", slot: Slot::Low, migrations: &[v1, broken] };
        let mut connection = Connection::open_in_memory().unwrap();
        migrate(&mut connection, "notes.db", &NOTES_V1).unwrap();
        assert!(migrate(&mut connection, "notes.db", &BROKEN).is_err());
        assert_eq!(user_version(&connection).unwrap(), 1);
        let half_done: i64 = connection
            .query_row("SELECT COUNT(*) FROM sqlite_master WHERE name = 'half_done'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(half_done, 0);
    }

    #[test]
    fn two_parts_share_user_version_without_touching_each_other() {
        const HIGH: Schema = Schema { name: "other", slot: Slot::High, migrations: &[other, other, other] };
        let mut connection = Connection::open_in_memory().unwrap();
        migrate(&mut connection, "both.db", &NOTES_V2).unwrap();
        migrate(&mut connection, "both.db", &HIGH).unwrap();
        let packed = user_version(&connection).unwrap();
        assert_eq!((part_version(packed, Slot::Low), part_version(packed, Slot::High)), (2, 3));
        // The low part at its current version opens, whatever the high part's version.
        assert_eq!(migrate(&mut connection, "both.db", &NOTES_V2).unwrap(), 2);
        assert_eq!(part_version(user_version(&connection).unwrap(), Slot::High), 3);
    }
}
