//! Time as drivers see it: [`SystemClock`] in production, `ManualClock` in tests.

use futures::future::BoxFuture;
use std::fmt::Debug;

/// Milliseconds since the Unix epoch: every timestamp Cairn stores.
pub type Millis = i64;

/// `duration` in whole milliseconds, saturating (timestamps are [`Millis`]).
pub(crate) fn millis(duration: std::time::Duration) -> Millis {
    Millis::try_from(duration.as_millis()).unwrap_or(Millis::MAX)
}

/// A source of time that can also wait.
pub trait Clock: Send + Sync + Debug + 'static {
    /// Milliseconds since the Unix epoch.
    fn now(&self) -> Millis;
    /// Resolves at `at` (immediately if it has passed).
    fn sleep_until(&self, at: Millis) -> BoxFuture<'static, ()>;
    /// Resolves after `every` of real time: the beat at which a driver renews its lease while
    /// a long step runs. A manual clock never beats (its time only moves when told to).
    fn heartbeat(&self, every: std::time::Duration) -> BoxFuture<'static, ()>;
}

/// The wall clock, sleeping with tokio's timer.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Millis {
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Millis::try_from(since.as_millis()).unwrap_or(Millis::MAX)
    }

    fn sleep_until(&self, at: Millis) -> BoxFuture<'static, ()> {
        let wait = u64::try_from(at.saturating_sub(self.now())).unwrap_or(0);
        Box::pin(tokio::time::sleep(std::time::Duration::from_millis(wait)))
    }

    fn heartbeat(&self, every: std::time::Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(every))
    }
}

/// A clock that moves only when told to (or when something sleeps on it, which jumps it
/// forward at once), so a one-hour sleep takes no time in a test.
#[cfg(feature = "testing")]
#[derive(Clone, Debug)]
pub struct ManualClock {
    now: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

#[cfg(feature = "testing")]
impl ManualClock {
    /// 2026-01-01T00:00:00Z, a fixed start so test output is stable.
    pub const DEFAULT_START: Millis = 1_767_225_600_000;

    /// A clock at [`ManualClock::DEFAULT_START`].
    pub fn new() -> Self {
        Self::at(Self::DEFAULT_START)
    }

    /// A clock at `start`.
    pub fn at(start: Millis) -> Self {
        ManualClock { now: std::sync::Arc::new(std::sync::atomic::AtomicI64::new(start)) }
    }

    /// Moves time forward.
    pub fn advance(&self, by: std::time::Duration) {
        self.now.fetch_add(millis(by), std::sync::atomic::Ordering::SeqCst);
    }

    /// The current time in ms since the epoch (the same as [`Clock::now`]).
    pub fn now_ms(&self) -> Millis {
        self.now.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Sets the time (never backwards).
    pub fn set(&self, to: Millis) {
        self.now.fetch_max(to, std::sync::atomic::Ordering::SeqCst);
    }
}

#[cfg(feature = "testing")]
impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(feature = "testing")]
impl Clock for ManualClock {
    fn now(&self) -> Millis {
        self.now.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn sleep_until(&self, at: Millis) -> BoxFuture<'static, ()> {
        self.set(at);
        Box::pin(std::future::ready(()))
    }

    fn heartbeat(&self, _every: std::time::Duration) -> BoxFuture<'static, ()> {
        Box::pin(std::future::pending())
    }
}
