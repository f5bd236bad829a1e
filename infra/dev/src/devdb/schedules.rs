//! The Scheduler stand-in's schedules: created, replaced, deleted, listed, and fired when due.

use super::{DevDb, NewInvocation, SCHEDULE_COLUMNS, Schedule, queue, schedule_row, sql_err};
use crate::DevError;
use cairn::Millis;
use rusqlite::{OptionalExtension, params};

impl DevDb {
    /// Creates a schedule; `Ok(false)` when one with that name exists in the group.
    ///
    /// # Errors
    /// A database error.
    pub fn create_schedule(&self, schedule: &Schedule) -> Result<bool, DevError> {
        let inserted = self
            .lock()
            .execute(
                "INSERT OR IGNORE INTO dev_schedules (group_name, name, expression, time_zone, target_arn, input, delete_after, created_at, next_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    schedule.group_name,
                    schedule.name,
                    schedule.expression,
                    schedule.time_zone,
                    schedule.target_arn,
                    schedule.input,
                    schedule.delete_after,
                    schedule.created_at,
                    schedule.next_at
                ],
            )
            .map_err(sql_err)?;
        Ok(inserted == 1)
    }

    /// Replaces a schedule (the template's, at start-up).
    ///
    /// # Errors
    /// A database error.
    pub fn put_schedule(&self, schedule: &Schedule) -> Result<(), DevError> {
        self.delete_schedule(&schedule.group_name, &schedule.name)?;
        self.create_schedule(schedule).map(|_| ())
    }

    /// Deletes a schedule; `Ok(false)` when there was none.
    ///
    /// # Errors
    /// A database error.
    pub fn delete_schedule(&self, group: &str, name: &str) -> Result<bool, DevError> {
        let deleted = self
            .lock()
            .execute("DELETE FROM dev_schedules WHERE group_name = ?1 AND name = ?2", params![group, name])
            .map_err(sql_err)?;
        Ok(deleted == 1)
    }

    /// Deletes the wake-ups of a run (their input names it); returns how many.
    ///
    /// # Errors
    /// A database error.
    pub fn delete_schedules_of_run(&self, run_id: &str) -> Result<usize, DevError> {
        self.lock()
            .execute("DELETE FROM dev_schedules WHERE input LIKE ?1", params![format!("%\"{run_id}\"%")])
            .map_err(sql_err)
    }

    /// Schedules (of one group when given), by name.
    ///
    /// # Errors
    /// A database error.
    pub fn schedules(&self, group: Option<&str>) -> Result<Vec<Schedule>, DevError> {
        let connection = self.lock();
        let mut statement = connection
            .prepare(&format!("{SCHEDULE_COLUMNS} WHERE (?1 IS NULL OR group_name = ?1) ORDER BY group_name, name"))
            .map_err(sql_err)?;
        statement
            .query_map(params![group], schedule_row)
            .map_err(sql_err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql_err)
    }

    /// Schedules due at `now`.
    ///
    /// # Errors
    /// A database error.
    pub fn due_schedules(&self, now: Millis) -> Result<Vec<Schedule>, DevError> {
        let connection = self.lock();
        let mut statement = connection
            .prepare(&format!("{SCHEDULE_COLUMNS} WHERE next_at IS NOT NULL AND next_at <= ?1 ORDER BY next_at"))
            .map_err(sql_err)?;
        statement
            .query_map(params![now], schedule_row)
            .map_err(sql_err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql_err)
    }

    /// After a firing: the next time, or the end of a one-time schedule (deleted or kept idle).
    /// The firing's invocation is queued in the same transaction, so a crash cannot lose or
    /// repeat it. With `coalesce`, it is not queued while one with the same cause is still queued
    /// or running. Returns whether it was queued.
    ///
    /// # Errors
    /// A database error.
    pub fn fired(
        &self,
        schedule: &Schedule,
        next_at: Option<Millis>,
        invocation: &NewInvocation,
        now: Millis,
        coalesce: bool,
    ) -> Result<bool, DevError> {
        let mut connection = self.lock();
        let tx = connection.transaction().map_err(sql_err)?;
        if next_at.is_none() && schedule.delete_after {
            tx.execute(
                "DELETE FROM dev_schedules WHERE group_name = ?1 AND name = ?2",
                params![schedule.group_name, schedule.name],
            )
        } else {
            tx.execute(
                "UPDATE dev_schedules SET next_at = ?3 WHERE group_name = ?1 AND name = ?2",
                params![schedule.group_name, schedule.name, next_at],
            )
        }
        .map_err(sql_err)?;
        let pending = coalesce
            && tx
                .query_row(
                    "SELECT 1 FROM dev_invocations WHERE cause = ?1 AND status IN ('queued', 'running') LIMIT 1",
                    [&invocation.cause],
                    |_| Ok(()),
                )
                .optional()
                .map_err(sql_err)?
                .is_some();
        if !pending {
            queue(&tx, invocation, now)?;
        }
        tx.commit().map_err(sql_err)?;
        Ok(!pending)
    }
}
