//! The `waits` table (pending waits, filed by the value their condition requires or under
//! their event name) and the `events` log kept for the lookback of waits that begin late.

use super::{SqliteStore, backend, decode, encode};
use crate::event::EventPayload;
use crate::record::{Millis, Wait, WaitKey};
use crate::store::StoreError;
use rusqlite::params;

impl SqliteStore {
    /// Files `wait` under its key (path and value), or under its event name alone.
    pub(super) fn write_wait(&self, wait: &Wait) -> Result<(), StoreError> {
        let (path, value) = wait.key.as_ref().map(|key| (key.path.as_str(), key.value.as_str())).unzip();
        self.connection()
            .execute(
                "INSERT OR REPLACE INTO waits (event, run_id, step_id, created_at, wait, key_path, key_value)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    wait.event,
                    wait.run_id.as_str(),
                    wait.step_id.as_str(),
                    wait.created_at,
                    encode(wait)?,
                    path,
                    value
                ],
            )
            .map_err(backend)?;
        Ok(())
    }

    /// The waits `event` may resume: those filed under a key the event has, and the general
    /// ones of its name, oldest first.
    pub(super) fn find_waits(&self, event: &EventPayload) -> Result<Vec<Wait>, StoreError> {
        let candidate = serde_json::to_value(event).map_err(|err| StoreError::Serialization(err.to_string()))?;
        let connection = self.connection();
        let paths: Vec<String> = connection
            .prepare_cached("SELECT DISTINCT key_path FROM waits WHERE event = ?1 AND key_path IS NOT NULL")
            .map_err(backend)?
            .query_map([&event.name], |row| row.get::<_, String>(0))
            .map_err(backend)?
            .collect::<Result<_, _>>()
            .map_err(backend)?;
        let mut texts: Vec<String> = connection
            .prepare_cached("SELECT wait FROM waits WHERE event = ?1 AND key_path IS NULL")
            .map_err(backend)?
            .query_map([&event.name], |row| row.get::<_, String>(0))
            .map_err(backend)?
            .collect::<Result<_, _>>()
            .map_err(backend)?;
        let mut filed = connection
            .prepare_cached("SELECT wait FROM waits WHERE event = ?1 AND key_path = ?2 AND key_value = ?3")
            .map_err(backend)?;
        for key in paths.iter().filter_map(|path| WaitKey::of_event(path, &candidate)) {
            let rows = filed.query_map(params![event.name, key.path, key.value], |row| row.get::<_, String>(0));
            for text in rows.map_err(backend)? {
                texts.push(text.map_err(backend)?);
            }
        }
        let mut waits: Vec<Wait> = texts.iter().map(|text| decode(text)).collect::<Result<_, _>>()?;
        waits.sort_by(|a, b| (a.created_at, &a.run_id, &a.step_id).cmp(&(b.created_at, &b.run_id, &b.step_id)));
        Ok(waits)
    }

    /// Removes `wait`; whether it was still there.
    pub(super) fn delete_wait(&self, wait: &Wait) -> Result<bool, StoreError> {
        let removed = self
            .connection()
            .execute(
                "DELETE FROM waits WHERE event = ?1 AND run_id = ?2 AND step_id = ?3",
                params![wait.event, wait.run_id.as_str(), wait.step_id.as_str()],
            )
            .map_err(backend)?;
        Ok(removed == 1)
    }

    /// Keeps `event` for the lookback of waits that begin after it.
    pub(super) fn log_event(&self, event: &EventPayload, received_at: Millis) -> Result<(), StoreError> {
        self.connection()
            .execute(
                "INSERT OR IGNORE INTO events (name, id, received_at, event) VALUES (?1, ?2, ?3, ?4)",
                params![event.name, event.id.clone().unwrap_or_default(), received_at, encode(event)?],
            )
            .map_err(backend)?;
        Ok(())
    }

    /// The events named `name` received since `since`, in the order received.
    pub(super) fn logged_events(&self, name: &str, since: Millis) -> Result<Vec<EventPayload>, StoreError> {
        let connection = self.connection();
        let mut statement = connection
            .prepare_cached("SELECT event FROM events WHERE name = ?1 AND received_at >= ?2 ORDER BY received_at, id")
            .map_err(backend)?;
        statement
            .query_map(params![name, since], |row| row.get::<_, String>(0))
            .map_err(backend)?
            .map(|row| row.map_err(backend).and_then(|text| decode(&text)))
            .collect()
    }
}
