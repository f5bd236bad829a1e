//! The dev server's own records, in the SQLite file beside the run store: the event log, the
//! invocation queue (so an accepted event is never dropped, even across a restart) and the
//! Scheduler's schedules.

use crate::DevError;
use cairn::Millis;
use cairn::store::schema::migrate;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde_json::Value;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

mod schedules;
mod schema;

pub use schema::DEV_SCHEMA;

/// A handle on the dev tables (cheap to clone).
#[derive(Clone, Debug)]
pub struct DevDb {
    connection: Arc<Mutex<Connection>>,
}

/// An event as logged.
#[derive(Clone, Debug, Serialize)]
pub struct LoggedEvent {
    /// Log sequence.
    pub seq: i64,
    /// The EventBridge envelope id.
    pub id: String,
    /// The id runs are keyed by: the Cairn event's own id when the detail carries one, else `id`.
    pub event_id: String,
    /// When the dev server accepted it.
    pub received_at: Millis,
    /// Bus.
    pub bus: String,
    /// `source`.
    pub source: String,
    /// `detail-type`: the event name.
    pub name: String,
    /// The whole envelope as delivered to targets.
    pub envelope: Value,
    /// The functions it was routed to (binaries).
    pub targets: Vec<String>,
}

/// One queued or finished invocation of a function under `cargo lambda watch`.
#[derive(Clone, Debug, Serialize)]
pub struct Invocation {
    /// Queue sequence.
    pub seq: i64,
    /// The binary invoked.
    pub function: String,
    /// Why: `event`, `schedule:<name>`, `dashboard`, `rerun`, ...
    pub cause: String,
    /// The event that caused it, if any.
    pub event_id: Option<String>,
    /// The payload sent.
    pub payload: Value,
    /// `queued`, `running`, `ok` or `failed`.
    pub status: String,
    /// Attempts made.
    pub attempts: u32,
    /// When it was queued.
    pub created_at: Millis,
    /// When it is (or was last) due.
    pub next_at: Millis,
    /// When it finished.
    pub finished_at: Option<Millis>,
    /// The function's answer.
    pub response: Option<Value>,
    /// The last error.
    pub error: Option<String>,
}

/// A Scheduler schedule (one-time `at()` or recurring).
#[derive(Clone, Debug, Serialize)]
pub struct Schedule {
    /// Group.
    pub group_name: String,
    /// Name.
    pub name: String,
    /// `ScheduleExpression`.
    pub expression: String,
    /// `ScheduleExpressionTimezone`.
    pub time_zone: String,
    /// Target ARN.
    pub target_arn: String,
    /// Target input.
    pub input: String,
    /// `ActionAfterCompletion: DELETE`.
    pub delete_after: bool,
    /// Creation time.
    pub created_at: Millis,
    /// Next firing (`None` once a one-time schedule fired).
    pub next_at: Option<Millis>,
}

/// An entry to put on a bus, validated.
#[derive(Clone, Debug)]
pub struct Entry {
    /// `Source`.
    pub source: String,
    /// `DetailType`: the event name.
    pub detail_type: String,
    /// `Detail`, a JSON object.
    pub detail: Value,
    /// `EventBusName` (a name or ARN).
    pub bus: String,
    /// `Time`.
    pub time: Option<Millis>,
    /// `Resources`.
    pub resources: Vec<String>,
}

/// A new invocation to queue.
#[derive(Clone, Debug)]
pub struct NewInvocation {
    /// The binary.
    pub function: String,
    /// Why.
    pub cause: String,
    /// The causing event.
    pub event_id: Option<String>,
    /// The payload.
    pub payload: Value,
    /// When it is due (`None`: now), e.g. an SQS message's `DelaySeconds` later.
    pub due_at: Option<Millis>,
}

fn sql_err(err: rusqlite::Error) -> DevError {
    DevError::with_source(format!("dev database: {err}"), err)
}

impl DevDb {
    /// Opens (creating) the dev tables in the SQLite file at `path`, bringing them to the current
    /// version ([`DEV_SCHEMA`]); invocations left running by a previous process are queued again.
    ///
    /// # Errors
    /// The file cannot be opened or upgraded, or was written by a newer version (the message
    /// names the file and both versions).
    pub fn open(path: &str) -> Result<DevDb, DevError> {
        if let Some(parent) = std::path::Path::new(path).parent() {
            std::fs::create_dir_all(parent).map_err(|err| DevError::with_source(format!("{path}: {err}"), err))?;
        }
        let mut connection = Connection::open(path).map_err(sql_err)?;
        connection.busy_timeout(Duration::from_secs(10)).map_err(sql_err)?;
        connection.pragma_update(None, "journal_mode", "WAL").map_err(sql_err)?;
        connection.pragma_update(None, "synchronous", "NORMAL").map_err(sql_err)?;
        migrate(&mut connection, path, &DEV_SCHEMA).map_err(DevError::caused_by)?;
        connection
            .execute("UPDATE dev_invocations SET status = 'queued' WHERE status = 'running'", [])
            .map_err(sql_err)?;
        Ok(DevDb { connection: Arc::new(Mutex::new(connection)) })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.connection.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Logs accepted events and queues their invocations in one transaction: either all of a
    /// request's entries are kept or none is (and the caller answers an error).
    ///
    /// # Errors
    /// A database error.
    pub fn accept(&self, events: &[LoggedEvent], invocations: &[NewInvocation], now: Millis) -> Result<(), DevError> {
        let mut connection = self.lock();
        let tx = connection.transaction().map_err(sql_err)?;
        for event in events {
            tx.execute(
                "INSERT OR IGNORE INTO dev_events (id, event_id, received_at, bus, source, name, envelope, targets) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    event.id,
                    event.event_id,
                    event.received_at,
                    event.bus,
                    event.source,
                    event.name,
                    event.envelope.to_string(),
                    serde_json::to_string(&event.targets).unwrap_or_default()
                ],
            )
            .map_err(sql_err)?;
        }
        for invocation in invocations {
            queue(&tx, invocation, now)?;
        }
        tx.commit().map_err(sql_err)
    }

    /// Claims, in queue order, the due invocations `admit` takes (it answers what to keep with
    /// each, e.g. a permit of the target's lane), marking them running; the others stay queued.
    ///
    /// # Errors
    /// A database error.
    pub fn claim_due<T>(
        &self,
        now: Millis,
        mut admit: impl FnMut(&Invocation) -> Option<T>,
    ) -> Result<Vec<(Invocation, T)>, DevError> {
        let mut connection = self.lock();
        let tx = connection.transaction().map_err(sql_err)?;
        let mut due = Vec::new();
        {
            let mut statement = tx
                .prepare(&format!("{INVOCATION_COLUMNS} WHERE status = 'queued' AND next_at <= ?1 ORDER BY seq"))
                .map_err(sql_err)?;
            for invocation in statement.query_map(params![now], invocation_row).map_err(sql_err)? {
                let invocation = invocation.map_err(sql_err)?;
                if let Some(taken) = admit(&invocation) {
                    due.push((invocation, taken));
                }
            }
        }
        for (invocation, _) in &due {
            tx.execute(
                "UPDATE dev_invocations SET status = 'running', attempts = attempts + 1 WHERE seq = ?1",
                params![invocation.seq],
            )
            .map_err(sql_err)?;
        }
        tx.commit().map_err(sql_err)?;
        Ok(due
            .into_iter()
            .map(|(i, taken)| (Invocation { attempts: i.attempts + 1, status: "running".into(), ..i }, taken))
            .collect())
    }

    /// Records an invocation's result: done (`ok` / `failed`) or retried at `retry_at`.
    ///
    /// # Errors
    /// A database error.
    pub fn finish(
        &self,
        seq: i64,
        result: Result<Value, String>,
        retry_at: Option<Millis>,
        now: Millis,
    ) -> Result<(), DevError> {
        let connection = self.lock();
        match (result, retry_at) {
            (Ok(response), _) => connection.execute(
                "UPDATE dev_invocations SET status = 'ok', finished_at = ?2, response = ?3, error = NULL WHERE seq = ?1",
                params![seq, now, response.to_string()],
            ),
            (Err(error), Some(at)) => connection.execute(
                "UPDATE dev_invocations SET status = 'queued', next_at = ?2, error = ?3 WHERE seq = ?1",
                params![seq, at, error],
            ),
            (Err(error), None) => connection.execute(
                "UPDATE dev_invocations SET status = 'failed', finished_at = ?2, error = ?3 WHERE seq = ?1",
                params![seq, now, error],
            ),
        }
        .map_err(sql_err)?;
        Ok(())
    }

    /// The earliest `next_at` of a queued invocation.
    pub fn next_due(&self) -> Option<Millis> {
        self.lock()
            .query_row("SELECT MIN(next_at) FROM dev_invocations WHERE status = 'queued'", [], |row| row.get(0))
            .ok()
            .flatten()
    }

    /// Events, newest first.
    ///
    /// # Errors
    /// A database error.
    pub fn events(&self, limit: usize, name: Option<&str>) -> Result<Vec<LoggedEvent>, DevError> {
        let connection = self.lock();
        let mut statement = connection
            .prepare(&format!("{EVENT_COLUMNS} WHERE (?2 IS NULL OR name = ?2) ORDER BY seq DESC LIMIT ?1"))
            .map_err(sql_err)?;
        statement
            .query_map(params![i64::try_from(limit).unwrap_or(i64::MAX), name], event_row)
            .map_err(sql_err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql_err)
    }

    /// One event by envelope id or event id.
    ///
    /// # Errors
    /// A database error.
    pub fn event(&self, id: &str) -> Result<Option<LoggedEvent>, DevError> {
        self.lock()
            .query_row(&format!("{EVENT_COLUMNS} WHERE id = ?1 OR event_id = ?1 LIMIT 1"), params![id], event_row)
            .optional()
            .map_err(sql_err)
    }

    /// How many events were logged.
    pub fn event_count(&self) -> i64 {
        self.lock().query_row("SELECT COUNT(*) FROM dev_events", [], |row| row.get(0)).unwrap_or(0)
    }

    /// Invocations, newest first (of one event when `event_id` is given).
    ///
    /// # Errors
    /// A database error.
    pub fn invocations(&self, limit: usize, event_id: Option<&str>) -> Result<Vec<Invocation>, DevError> {
        let connection = self.lock();
        let mut statement = connection
            .prepare(&format!("{INVOCATION_COLUMNS} WHERE (?2 IS NULL OR event_id = ?2) ORDER BY seq DESC LIMIT ?1"))
            .map_err(sql_err)?;
        statement
            .query_map(params![i64::try_from(limit).unwrap_or(i64::MAX), event_id], invocation_row)
            .map_err(sql_err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql_err)
    }

    /// A number that changes whenever the log or the queue does (for live updates).
    pub fn fingerprint(&self) -> (i64, i64, i64) {
        self.lock()
            .query_row(
                "SELECT (SELECT COALESCE(MAX(seq), 0) FROM dev_events), (SELECT COALESCE(MAX(seq), 0) FROM dev_invocations), (SELECT COUNT(*) FROM dev_invocations WHERE status IN ('queued', 'running'))",
                [],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .unwrap_or_default()
    }
}

/// Queues one invocation, due at its `due_at` (else now), inside the caller's transaction.
fn queue(tx: &rusqlite::Transaction<'_>, invocation: &NewInvocation, now: Millis) -> Result<(), DevError> {
    tx.execute(
        "INSERT INTO dev_invocations (function, cause, event_id, payload, status, next_at, created_at) VALUES (?1, ?2, ?3, ?4, 'queued', ?5, ?6)",
        params![
            invocation.function,
            invocation.cause,
            invocation.event_id,
            invocation.payload.to_string(),
            invocation.due_at.unwrap_or(now),
            now
        ],
    )
    .map(|_| ())
    .map_err(sql_err)
}

const EVENT_COLUMNS: &str =
    "SELECT seq, id, event_id, received_at, bus, source, name, envelope, targets FROM dev_events";
const INVOCATION_COLUMNS: &str = "SELECT seq, function, cause, event_id, payload, status, attempts, created_at, finished_at, response, error, next_at FROM dev_invocations";
const SCHEDULE_COLUMNS: &str = "SELECT group_name, name, expression, time_zone, target_arn, input, delete_after, created_at, next_at FROM dev_schedules";

fn json_column(text: String) -> Value {
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

fn event_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<LoggedEvent> {
    Ok(LoggedEvent {
        seq: row.get(0)?,
        id: row.get(1)?,
        event_id: row.get(2)?,
        received_at: row.get(3)?,
        bus: row.get(4)?,
        source: row.get(5)?,
        name: row.get(6)?,
        envelope: json_column(row.get(7)?),
        targets: serde_json::from_str(&row.get::<_, String>(8)?).unwrap_or_default(),
    })
}

fn invocation_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Invocation> {
    Ok(Invocation {
        seq: row.get(0)?,
        function: row.get(1)?,
        cause: row.get(2)?,
        event_id: row.get(3)?,
        payload: json_column(row.get(4)?),
        status: row.get(5)?,
        attempts: row.get(6)?,
        created_at: row.get(7)?,
        finished_at: row.get(8)?,
        response: row.get::<_, Option<String>>(9)?.map(json_column),
        error: row.get(10)?,
        next_at: row.get(11)?,
    })
}

fn schedule_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Schedule> {
    Ok(Schedule {
        group_name: row.get(0)?,
        name: row.get(1)?,
        expression: row.get(2)?,
        time_zone: row.get(3)?,
        target_arn: row.get(4)?,
        input: row.get(5)?,
        delete_after: row.get(6)?,
        created_at: row.get(7)?,
        next_at: row.get(8)?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn an_invocation_in_flight_when_the_server_stops_is_delivered_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dev.db").display().to_string();
        let db = DevDb::open(&path).unwrap();
        let event = LoggedEvent {
            seq: 0,
            id: "e-1".into(),
            event_id: "e-1".into(),
            received_at: 5,
            bus: "cairn".into(),
            source: "tests".into(),
            name: "app/my.event".into(),
            envelope: json!({"detail": {}}),
            targets: vec!["hello".into()],
        };
        let invocation = NewInvocation {
            function: "hello".into(),
            cause: "put-events".into(),
            event_id: Some("e-1".into()),
            payload: json!({"a": 1}),
            due_at: None,
        };
        db.accept(std::slice::from_ref(&event), std::slice::from_ref(&invocation), 5).unwrap();
        let claimed = claim_all(&db, 10);
        assert_eq!((claimed.len(), claimed[0].status.as_str(), claimed[0].attempts), (1, "running", 1));
        assert!(claim_all(&db, 10).is_empty(), "claimed once");
        drop(db);
        // The process died mid-delivery; the next one delivers it again.
        let db = DevDb::open(&path).unwrap();
        let again = claim_all(&db, 10);
        assert_eq!((again[0].seq, again[0].attempts, &again[0].payload), (claimed[0].seq, 2, &json!({"a": 1})));
        assert_eq!(db.events(10, None).unwrap()[0].targets, ["hello"]);
        // A duplicate envelope id is logged once.
        db.accept(std::slice::from_ref(&event), &[], 6).unwrap();
        assert_eq!(db.event_count(), 1);
    }

    /// A `.cairn/dev.db` as made before schema versioning: today's CREATE statements (a
    /// fixture), one run and one logged event written as today's code writes them.
    fn unversioned_file(path: &str) {
        use cairn::{EventPayload, RunId, RunMeta};
        let connection = Connection::open(path).unwrap();
        connection.execute_batch(include_str!("../../tests/fixtures/dev-db-v1.sql")).unwrap();
        let meta = RunMeta::new(RunId::new("run_old"), "hello", EventPayload::new("app/my.event", json!({"n": 1})), 7);
        connection
            .execute(
                "INSERT INTO runs (run_id, function_id, status, created_at, version, meta) VALUES ('run_old', 'hello', 'running', 7, 0, ?1)",
                [serde_json::to_string(&meta).unwrap()],
            )
            .unwrap();
        connection
            .execute(
                "INSERT INTO dev_events (id, event_id, received_at, bus, source, name, envelope, targets) VALUES ('e-old', 'e-old', 7, 'cairn', 'tests', 'app/my.event', '{}', '[\"hello\"]')",
                [],
            )
            .unwrap();
        assert_eq!(cairn::store::schema::user_version(&connection).unwrap(), 0);
    }

    #[tokio::test]
    async fn a_file_from_before_versioning_is_upgraded_and_keeps_its_data() {
        use cairn::{RunId, RunStore};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dev.db").display().to_string();
        unversioned_file(&path);
        let store = cairn::SqliteStore::open(&path).unwrap();
        let db = DevDb::open(&path).unwrap();
        let journal = store.load(&RunId::new("run_old")).await.unwrap().expect("the old run");
        assert_eq!(journal.meta.event.data, json!({"n": 1}));
        assert_eq!(db.event("e-old").unwrap().expect("the old event").targets, ["hello"]);
        let version = cairn::store::schema::user_version(&Connection::open(&path).unwrap()).unwrap();
        let current = (DEV_SCHEMA.current() << 16) | cairn::store::STORE_SCHEMA.current();
        // The run store's version 1 (the tables before versioning), then 2 (flow control), 3
        // (waits filed by value), then 4 (debounce windows).
        assert_eq!((version, current), (0x0001_0004, 0x0001_0004));
        let flow_items: i64 =
            Connection::open(&path).unwrap().query_row("SELECT COUNT(*) FROM flow", [], |row| row.get(0)).unwrap();
        assert_eq!(flow_items, 0);
        // Opening again (the next `cairn dev`) changes nothing.
        drop((store, db));
        DevDb::open(&path).unwrap();
        cairn::SqliteStore::open(&path).unwrap();
        assert_eq!(cairn::store::schema::user_version(&Connection::open(&path).unwrap()).unwrap(), current);
    }

    #[test]
    fn a_file_from_a_newer_version_is_refused_naming_it_and_both_versions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dev.db").display().to_string();
        unversioned_file(&path);
        DevDb::open(&path).unwrap();
        cairn::SqliteStore::open(&path).unwrap();
        let set = |version: u32| {
            Connection::open(&path).unwrap().pragma_update(None, "user_version", version as i32).unwrap();
        };
        // The dev tables from a newer `cairn dev`: the dev server refuses the file; the
        // functions, which only use the run store, still open it.
        set(0x0002_0003);
        assert_eq!(
            DevDb::open(&path).unwrap_err(),
            format!(
                "{path}: its dev server schema is version 2, newer than version 1, the newest this build knows: the \
                 file was written by a newer Cairn; open it with that version, or move it away to start afresh"
            )
        );
        cairn::SqliteStore::open(&path).unwrap();
        // The run store from a newer Cairn.
        set(0x0001_0005);
        assert_eq!(
            cairn::SqliteStore::open(&path).unwrap_err().to_string(),
            format!(
                "store error: {path}: its run store schema is version 5, newer than version 4, the newest this build \
                 knows: the file was written by a newer Cairn; open it with that version, or move it away to start \
                 afresh"
            )
        );
        assert_eq!(cairn::store::schema::user_version(&Connection::open(&path).unwrap()).unwrap(), 0x0001_0005);
    }

    fn claim_all(db: &DevDb, now: Millis) -> Vec<Invocation> {
        db.claim_due(now, |_| Some(())).unwrap().into_iter().map(|(invocation, ())| invocation).collect()
    }

    #[test]
    fn what_admit_refuses_stays_queued_and_the_rest_is_claimed_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let db = DevDb::open(&dir.path().join("dev.db").display().to_string()).unwrap();
        let to = |function: &str| NewInvocation {
            function: function.into(),
            cause: "put-events".into(),
            event_id: None,
            payload: json!({}),
            due_at: None,
        };
        db.accept(&[], &[to("inngest:stuck"), to("inngest:stuck"), to("hello"), to("inngest:stuck")], 1).unwrap();
        let mut stuck_permits = 1;
        let claimed = db
            .claim_due(2, |i| match i.function.as_str() {
                "inngest:stuck" if stuck_permits == 0 => None,
                "inngest:stuck" => {
                    stuck_permits -= 1;
                    Some(i.seq)
                }
                _ => Some(i.seq),
            })
            .unwrap();
        let functions: Vec<&str> = claimed.iter().map(|(i, _)| i.function.as_str()).collect();
        assert_eq!(functions, ["inngest:stuck", "hello"]);
        assert_eq!(claim_all(&db, 2).len(), 2, "the two refused are still queued");
    }

    #[test]
    fn a_delayed_invocation_is_claimed_at_its_due_time_only() {
        let dir = tempfile::tempdir().unwrap();
        let db = DevDb::open(&dir.path().join("dev.db").display().to_string()).unwrap();
        let later = NewInvocation {
            function: "hello".into(),
            cause: "sqs:timer-hello".into(),
            event_id: None,
            payload: json!({}),
            due_at: Some(2_000),
        };
        db.accept(&[], &[later], 100).unwrap();
        assert_eq!(db.next_due(), Some(2_000));
        assert!(claim_all(&db, 1_999).is_empty(), "not before its time");
        let due = claim_all(&db, 2_000);
        assert_eq!((due.len(), due[0].created_at, due[0].next_at), (1, 100, 2_000));
    }

    #[test]
    fn a_reconciler_tick_is_not_queued_while_the_last_one_is_pending() {
        let dir = tempfile::tempdir().unwrap();
        let db = DevDb::open(&dir.path().join("dev.db").display().to_string()).unwrap();
        let schedule = Schedule {
            group_name: "template".into(),
            name: "HelloFunction.Reconcile".into(),
            expression: "rate(2 seconds)".into(),
            time_zone: "UTC".into(),
            target_arn: "arn:aws:lambda:us-east-1:000000000000:function:cairn-hello".into(),
            input: r#"{"cairn": "reconcile"}"#.into(),
            delete_after: false,
            created_at: 0,
            next_at: Some(2_000),
        };
        db.put_schedule(&schedule).unwrap();
        let tick = NewInvocation {
            function: "hello".into(),
            cause: "schedule:template/HelloFunction.Reconcile".into(),
            event_id: None,
            payload: json!({"cairn": "reconcile"}),
            due_at: None,
        };
        assert!(db.fired(&schedule, Some(4_000), &tick, 2_000, true).unwrap());
        assert!(!db.fired(&schedule, Some(6_000), &tick, 4_000, true).unwrap(), "the first is still queued");
        let claimed = claim_all(&db, 4_000);
        assert_eq!(claimed.len(), 1);
        assert!(!db.fired(&schedule, Some(8_000), &tick, 6_000, true).unwrap(), "the first is running");
        db.finish(claimed[0].seq, Ok(json!({})), None, 6_500).unwrap();
        assert!(db.fired(&schedule, Some(10_000), &tick, 8_000, true).unwrap(), "the last one ended");
        // Other schedules (crons) are never coalesced.
        assert!(db.fired(&schedule, Some(12_000), &tick, 10_000, false).unwrap());
    }
}
