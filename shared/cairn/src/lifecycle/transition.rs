//! Head transitions: the only functions that change a run's [`RunStatus`]. Each takes the head
//! as read and returns the head to write (the caller writes it with
//! [`RunStore::update_meta`](crate::RunStore::update_meta), fenced by its version); none does
//! I/O. Every transition also moves `wake_at` (the reconciler's index) and the retention TTL.

use super::events::{RunEnd, system_events};
use crate::record::{Lease, Millis, RunMeta, RunStatus, Skipped};

/// How long things last, in milliseconds: what the transitions need from the driver's
/// configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Durations {
    /// A lease's length.
    pub lease: Millis,
    /// How long a head is kept past the last moment its run needs it.
    pub retention: Millis,
}

/// A new run's head, due one lease from now: the creator drives it at once, and if it dies
/// first the reconciler starts it once a lease would have lapsed.
pub fn created(mut meta: RunMeta, now: Millis, durations: Durations) -> RunMeta {
    meta.wake_at = Some(now + durations.lease);
    meta.retain_for(durations.retention);
    meta
}

/// `running`, held by `owner` until the lease expires (when the reconciler finds it if the
/// holder died). Also a renewal of a held run's lease.
pub fn started(mut meta: RunMeta, owner: &str, now: Millis, durations: Durations) -> RunMeta {
    let expires_at = now + durations.lease;
    meta.lease = Some(Lease { owner: owner.to_string(), expires_at });
    meta.wake_at = Some(expires_at);
    meta.status = RunStatus::Running;
    meta.queued = None;
    meta.updated_at = now;
    meta.retain_for(durations.retention);
    meta
}

/// A held run's lease extended to a full length from `now`; the status is unchanged.
pub fn renewed(mut meta: RunMeta, owner: &str, now: Millis, durations: Durations) -> RunMeta {
    let expires_at = now + durations.lease;
    meta.lease = Some(Lease { owner: owner.to_string(), expires_at });
    meta.wake_at = Some(expires_at);
    meta.retain_for(durations.retention);
    meta
}

/// Given up in `status` (`sleeping`, `waiting`, or `running` at a checkpoint), due again at
/// `wake_at`. The caller arms its timer only after this head is written, so the woken
/// invocation never finds the run still held.
pub fn suspended(
    mut meta: RunMeta,
    status: RunStatus,
    wake_at: Option<Millis>,
    now: Millis,
    durations: Durations,
) -> RunMeta {
    meta.lease = None;
    meta.status = status;
    meta.wake_at = wake_at;
    meta.updated_at = now;
    meta.retain_for(durations.retention);
    meta
}

/// A function-level failure with attempts left: the next attempt starts at `retry_at`. The
/// lease is kept (the holder sleeps through a short back-off, or suspends next).
pub fn retrying(mut meta: RunMeta, retry_at: Millis, now: Millis) -> RunMeta {
    meta.attempt += 1;
    meta.retry_at = Some(retry_at);
    meta.updated_at = now;
    meta
}

/// A held run given back after its drive failed, due now: the invocation's retry or the
/// reconciler resumes it at once rather than after the lease.
pub fn abandoned(mut meta: RunMeta, now: Millis, durations: Durations) -> RunMeta {
    meta.lease = None;
    meta.wake_at = Some(now);
    meta.retain_for(durations.retention);
    meta
}

/// Ended: completed, failed or cancelled, with the events it owes in its outbox (written in the
/// same write, then delivered and acknowledged with [`acknowledged`]). Due one lease from now
/// so the reconciler delivers the outbox if the writer dies first.
pub fn ended(mut meta: RunMeta, end: &RunEnd, now: Millis, durations: Durations) -> RunMeta {
    meta.lease = None;
    meta.updated_at = now;
    meta.ended_at = Some(now);
    meta.retry_at = None;
    meta.status = end.status();
    match end {
        RunEnd::Completed(output) => meta.output = Some(output.clone()),
        RunEnd::Failed(_) | RunEnd::Cancelled => meta.error = end.error(),
    }
    meta.outbox = system_events(&meta, end, now);
    meta.wake_at = Some(now + durations.lease);
    meta.retain_for(durations.retention);
    meta
}

/// Turned away by flow control before it started: `skipped`, saying why, with nothing owed (an
/// event Inngest skips starts no run, so no system event is sent) and no lock held.
pub fn skipped(mut meta: RunMeta, skipped: Skipped, now: Millis, durations: Durations) -> RunMeta {
    meta.status = RunStatus::Skipped;
    meta.skipped = Some(skipped);
    meta.holds.clear();
    meta.updated_at = now;
    meta.ended_at = Some(now);
    meta.wake_at = None;
    meta.retain_for(durations.retention);
    meta
}

/// An ended run whose outbox was delivered and locks released: both cleared, and out of the
/// reconciler's index.
pub fn acknowledged(mut meta: RunMeta) -> RunMeta {
    meta.outbox.clear();
    meta.holds.clear();
    meta.wake_at = None;
    meta
}
