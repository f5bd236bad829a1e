//! A drive's hold on a run: taking the lease, keeping it (renewed between steps and on a
//! heartbeat while a long step runs), and giving it up before any wake-up is sent.
//!
//! The lease is the fence for commits: a drive commits only while its lease is unexpired by
//! its own clock, and renews it (a version-fenced write) when less than half is left, so a
//! drive whose lease another invocation took, or whose run was cancelled, learns it at its next
//! commit and stops. Every head write also moves `wake_at`, the reconciler's index: while a
//! run is held, `wake_at` is the lease's expiry, so a holder that dies is found once it lapses.

use super::{Drive, Runner, RunnerError};
use crate::bus::{Bus, BusError, Timer};
use crate::lifecycle::transition::{self, Durations};
use crate::record::{Millis, RunMeta, RunStatus};
use crate::step::millis;
use crate::store::{RunStore, StoreError};

/// This drive's hold on a run: the head as last written, and whether the run was woken from
/// outside (a wait resolved, an invoke answered) while held, so it must be replayed, not
/// suspended.
#[derive(Debug)]
pub(super) struct Hold {
    pub(super) meta: RunMeta,
    pub(super) owner: String,
    pub(super) poked: bool,
    /// When `timeouts.finish` cancels the run: no sleep or wait of this drive lasts past it.
    pub(super) finish_at: Option<Millis>,
    /// Whether this drive holds concurrency slots (it then never sleeps in process).
    pub(super) holds_slots: bool,
}

/// Why a drive stops early: the run is no longer its own (`Stop`, a normal answer), or a
/// store, bus or timer failed.
#[derive(Debug)]
pub(super) enum Halt {
    /// Another invocation holds the run, or it was cancelled: report this and do nothing more.
    Stop(Drive),
    /// Something failed; whatever was committed stays, and the run resumes later.
    Failed(RunnerError),
    /// The run is a debounce window's placeholder (this head): fire its window, outside the
    /// run loop's deep frame.
    Debounce(Box<crate::record::RunMeta>),
}

impl From<RunnerError> for Halt {
    fn from(error: RunnerError) -> Self {
        Halt::Failed(error)
    }
}

impl From<StoreError> for Halt {
    fn from(error: StoreError) -> Self {
        Halt::Failed(error.into())
    }
}

impl From<BusError> for Halt {
    fn from(error: BusError) -> Self {
        Halt::Failed(error.into())
    }
}

/// What giving up the lease found.
pub(super) enum Released {
    /// The head is written; the run is no longer held.
    Done,
    /// The run was woken while held: replay it instead of suspending.
    Replay,
}

impl<S: RunStore, B: Bus, T: Timer> Runner<S, B, T> {
    fn lease_ms(&self) -> Millis {
        millis(self.config.lease)
    }

    /// The lease and retention lengths the lifecycle's transitions need.
    pub(crate) fn durations(&self) -> Durations {
        self.config.durations()
    }

    /// Takes the lease on `meta` for `owner`. `Ok(None)`: the head moved since it was read
    /// (reload and try again).
    pub(super) async fn take_lease(&self, meta: RunMeta, owner: &str) -> Result<Option<Hold>, RunnerError> {
        let meta = transition::started(meta, owner, self.clock.now(), self.durations());
        match self.store.update_meta(&meta).await {
            Ok(stored) => Ok(Some(Hold {
                meta: stored,
                owner: owner.to_string(),
                poked: false,
                finish_at: None,
                holds_slots: false,
            })),
            Err(StoreError::Conflict { .. }) => Ok(None),
            Err(other) => Err(other.into()),
        }
    }

    /// Another invocation holds the run: arrange a wake-up at its lease's expiry, so the run is
    /// resumed even if its holder died and nothing else arrives. Never a silent success.
    pub(super) async fn busy(&self, meta: &RunMeta, until: Millis) -> Halt {
        tracing::info!(until, "run held by another invocation; wake-up arranged at its lease's expiry");
        match self.timer.wake_at(&meta.run_id, &meta.function_id, "lease", until).await {
            Ok(()) => Halt::Stop(Drive::Busy),
            Err(error) => error.into(),
        }
    }

    /// Renews the lease when less than half of it is left (the fence before every commit).
    /// `Halt::Stop` when the run is no longer ours: stop without committing.
    pub(super) async fn keep_lease(&self, hold: &mut Hold) -> Result<(), Halt> {
        let left = hold.meta.lease.as_ref().map_or(0, |lease| lease.expires_at - self.clock.now());
        if left > self.lease_ms() / 2 {
            return Ok(());
        }
        self.renew(hold).await
    }

    /// Extends the lease by its full length (a version-fenced write).
    async fn renew(&self, hold: &mut Hold) -> Result<(), Halt> {
        loop {
            let renewed = transition::renewed(hold.meta.clone(), &hold.owner, self.clock.now(), self.durations());
            match self.store.update_meta(&renewed).await {
                Ok(stored) => {
                    hold.meta = stored;
                    return Ok(());
                }
                Err(StoreError::Conflict { .. }) => self.reread(hold).await?,
                Err(other) => return Err(other.into()),
            }
        }
    }

    /// After a version conflict: `Halt::Stop` when the run is no longer ours, else the fresh
    /// head is adopted and the hold marked as woken.
    pub(super) async fn reread(&self, hold: &mut Hold) -> Result<(), Halt> {
        let run_id = hold.meta.run_id.clone();
        let fresh = self.store.load(&run_id).await?.ok_or(RunnerError::UnknownRun(run_id))?.meta;
        if fresh.status.is_finished() {
            tracing::info!(status = %fresh.status, "run ended by someone else (cancelled); stopping");
            return Err(Halt::Stop(Drive::AlreadyFinished(fresh.status)));
        }
        let ours = fresh.lease.as_ref().is_some_and(|lease| lease.owner == hold.owner);
        let lapsed = fresh.lease.as_ref().is_none_or(|lease| lease.expires_at <= self.clock.now());
        if !ours && !lapsed {
            tracing::warn!("lease taken over by another invocation; stopping");
            return Err(Halt::Stop(Drive::Busy));
        }
        hold.meta = fresh;
        hold.poked = true;
        Ok(())
    }

    /// Renews the lease every third of its length while a long step runs, so a live drive
    /// keeps its run and a dead one lets it lapse. Resolves only if the run is lost.
    pub(super) async fn heartbeat(&self, hold: &mut Hold) -> Halt {
        loop {
            self.clock.heartbeat(self.config.lease / 3).await;
            match self.renew(hold).await {
                Ok(()) => {}
                Err(stop @ (Halt::Stop(_) | Halt::Debounce(_))) => return stop,
                Err(Halt::Failed(error)) => {
                    tracing::warn!(%error, "lease renewal failed; trying again at the next beat");
                }
            }
        }
    }

    /// Gives the run up in `status`, due again at `wake_at`: the head is written before any
    /// wake-up is sent, so the woken invocation never finds the run still held.
    pub(super) async fn release(
        &self,
        hold: &mut Hold,
        status: RunStatus,
        wake_at: Option<Millis>,
    ) -> Result<Released, Halt> {
        if hold.poked {
            hold.poked = false;
            return Ok(Released::Replay);
        }
        let meta = transition::suspended(hold.meta.clone(), status, wake_at, self.clock.now(), self.durations());
        match self.store.update_meta(&meta).await {
            Ok(stored) => {
                hold.meta = stored;
                Ok(Released::Done)
            }
            Err(StoreError::Conflict { .. }) => {
                self.reread(hold).await?;
                hold.poked = false;
                Ok(Released::Replay)
            }
            Err(other) => Err(other.into()),
        }
    }

    /// After a failed drive: gives the lease back (best effort) so the invocation's retry, or
    /// the reconciler, resumes the run at once rather than after the lease.
    pub(super) async fn abandon(&self, run_id: &crate::id::RunId, owner: &str) {
        let Ok(Some(journal)) = self.store.load(run_id).await else { return };
        let meta = journal.meta;
        if meta.status.is_finished() || meta.lease.as_ref().is_none_or(|lease| lease.owner != owner) {
            return;
        }
        let meta = transition::abandoned(meta, self.clock.now(), self.durations());
        if let Err(error) = self.store.update_meta(&meta).await {
            tracing::warn!(%error, "could not give the lease back; the run resumes once it lapses");
        }
    }
}
