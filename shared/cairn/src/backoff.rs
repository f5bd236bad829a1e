//! Retries: [`RetryPolicy`], the one place Cairn decides whether a failed attempt (of a `run`
//! step or of a whole function) is tried again and when; and the back-off, as Inngest's executor
//! computes it: a doubling-ish table (15 s, 30 s, 1 min, 2 min, 5 min, 10 min, 20 min, 40 min,
//! 1 h, 2 h, then 2 h) plus up to 30 s of jitter, so runs that failed together do not retry
//! together.

use crate::clock::Millis;
use crate::duration::{IntoDuration, millis};
use crate::error::{BackoffError, MAX_RETRY_AFTER, MIN_RETRY_AFTER, StepError};
use sha1::{Digest, Sha1};
use std::sync::Arc;
use std::time::Duration;

const TABLE_SECS: [u64; 10] = [15, 30, 60, 120, 300, 600, 1_200, 2_400, 3_600, 7_200];
const MAX_JITTER_MS: u64 = 30_000;

/// The delay before the attempt that follows `attempts_made` failed attempts (1 = after the
/// first failure). The jitter is derived from `seed` (run and step), so a replay computes the
/// same delay while different runs spread out.
///
/// ```
/// use std::time::Duration;
/// let first = cairn::backoff(1, "run-1/step-a");
/// assert!(first >= Duration::from_secs(15) && first < Duration::from_secs(45));
/// assert_eq!(first, cairn::backoff(1, "run-1/step-a"));
/// assert!(cairn::backoff(20, "x") >= Duration::from_secs(7_200));
/// ```
pub fn backoff(attempts_made: u32, seed: &str) -> Duration {
    let index = usize::try_from(attempts_made.saturating_sub(1)).unwrap_or(usize::MAX).min(TABLE_SECS.len() - 1);
    let digest = Sha1::digest(format!("{seed}#{attempts_made}").as_bytes());
    let jitter =
        u64::from_be_bytes([digest[0], digest[1], digest[2], digest[3], digest[4], digest[5], digest[6], digest[7]])
            % MAX_JITTER_MS;
    Duration::from_secs(TABLE_SECS[index]) + Duration::from_millis(jitter)
}

/// The delay before the attempt that follows `attempts_made` failed attempts, the last
/// ending with `error`: its retry-after within [`MIN_RETRY_AFTER`, `MAX_RETRY_AFTER`] (the
/// field may come from a record or the wire, so it is clamped here too), else the back-off.
pub(crate) fn retry_delay(error: &StepError, attempts_made: u32, seed: &str) -> Duration {
    match error.retry_after_ms {
        Some(ms) => Duration::from_millis(ms).clamp(MIN_RETRY_AFTER, MAX_RETRY_AFTER),
        None => backoff(attempts_made, seed),
    }
}

/// A step's own back-off, replacing the default table
/// ([`StepOptions::backoff`](crate::StepOptions::backoff)): a table of delays, or a function of
/// the number of failed attempts. Delays are clamped to [`MIN_RETRY_AFTER`, `MAX_RETRY_AFTER`]
/// and carry no jitter. An error's own [`StepError::retry_after`] still wins.
///
/// ```
/// use cairn::Backoff;
/// use std::time::Duration;
/// let table = Backoff::table(["1s", "10s", "1m"]);
/// assert_eq!(table.delay(1).unwrap(), Duration::from_secs(1));
/// assert_eq!(table.delay(7).unwrap(), Duration::from_secs(60)); // the last entry repeats
/// let doubling = Backoff::function(|failed| Duration::from_secs(2u64.saturating_pow(failed)));
/// assert_eq!(doubling.delay(3).unwrap(), Duration::from_secs(8));
/// ```
#[derive(Clone)]
pub struct Backoff(BackoffKind);

#[derive(Clone)]
enum BackoffKind {
    Table(Result<Vec<Duration>, BackoffError>),
    Function(Arc<dyn Fn(u32) -> Duration + Send + Sync>),
}

impl std::fmt::Debug for Backoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            BackoffKind::Table(table) => f.debug_tuple("Backoff::table").field(table).finish(),
            BackoffKind::Function(_) => f.write_str("Backoff::function(..)"),
        }
    }
}

impl Backoff {
    /// The delay after the n-th failed attempt is the n-th entry (`"5s"` or a `Duration`); the
    /// last entry repeats for later attempts.
    pub fn table<D: IntoDuration>(delays: impl IntoIterator<Item = D>) -> Self {
        let table = delays
            .into_iter()
            .enumerate()
            .map(|(index, delay)| {
                delay.into_duration().map_err(|reason| BackoffError::from(format!("entry {index}: {reason}")))
            })
            .collect::<Result<Vec<_>, _>>()
            .and_then(|table| if table.is_empty() { Err(BackoffError::from("the table is empty")) } else { Ok(table) });
        Backoff(BackoffKind::Table(table))
    }

    /// The delay after `failed` failed attempts (1 after the first) is `f(failed)`. It must be
    /// a pure function of its argument: a replay computes the same delay.
    pub fn function(f: impl Fn(u32) -> Duration + Send + Sync + 'static) -> Self {
        Backoff(BackoffKind::Function(Arc::new(f)))
    }

    /// The delay after `failed` failed attempts, clamped to [`MIN_RETRY_AFTER`,
    /// `MAX_RETRY_AFTER`].
    ///
    /// # Errors
    /// [`BackoffError`] naming the table entry that is not a duration, or an empty table.
    pub fn delay(&self, failed: u32) -> Result<Duration, BackoffError> {
        let delay = match &self.0 {
            BackoffKind::Table(table) => {
                let table = table.as_ref().map_err(Clone::clone)?;
                let index = usize::try_from(failed.saturating_sub(1)).unwrap_or(usize::MAX).min(table.len() - 1);
                table[index]
            }
            BackoffKind::Function(f) => f(failed),
        };
        Ok(delay.clamp(MIN_RETRY_AFTER, MAX_RETRY_AFTER))
    }

    /// Checks a table once, before the step runs: `Err` names what is wrong.
    pub(crate) fn check(&self) -> Result<(), &BackoffError> {
        match &self.0 {
            BackoffKind::Table(Err(reason)) => Err(reason),
            _ => Ok(()),
        }
    }
}

/// How many attempts a step or a function gets, and when the next one runs: the one place a
/// driver decides whether a failed attempt is tried again (the Runner for Rust functions, the
/// dev server's executor for Inngest-protocol apps).
///
/// ```
/// use cairn::{RetryPolicy, StepError};
/// let policy = RetryPolicy::with_retries(1);
/// let failed = StepError::new("boom");
/// assert!(policy.retry_at(&failed, 1, 0, "run-1").is_some_and(|at| at >= 15_000)); // Inngest's back-off
/// assert_eq!(policy.retry_at(&failed, 2, 0, "run-1"), None); // no attempt left
/// let asked = StepError::retry_after("rate limited", std::time::Duration::from_secs(90));
/// assert_eq!(policy.retry_at(&asked, 1, 0, "run-1"), Some(90_000)); // the error's own delay wins
/// ```
#[derive(Clone, Debug)]
pub struct RetryPolicy<'a> {
    max_attempts: u32,
    backoff: Option<&'a Backoff>,
}

impl<'a> RetryPolicy<'a> {
    /// `retries` after the first attempt.
    pub fn with_retries(retries: u32) -> Self {
        RetryPolicy { max_attempts: retries.saturating_add(1), backoff: None }
    }

    /// Delays from `backoff` instead of the default table, if given.
    pub fn backoff(mut self, backoff: Option<&'a Backoff>) -> Self {
        self.backoff = backoff;
        self
    }

    /// The error a failed attempt is recorded with: under a custom back-off, it carries its
    /// delay as its retry-after (how the Inngest protocol conveys a step's delay to the
    /// executor), unless it already asks for one.
    pub fn judged(&self, mut error: StepError, attempts_made: u32) -> StepError {
        if let (Some(backoff), None) = (self.backoff, error.retry_after_ms)
            && error.retriable
            && attempts_made < self.max_attempts
            && let Ok(delay) = backoff.delay(attempts_made)
        {
            error.retry_after_ms = Some(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
        }
        error
    }

    /// When the attempt after `attempts_made` attempts (the last failing with `error` at `now`)
    /// runs; `None` when the failure is final (non-retriable, or the attempts are used up).
    /// `seed` spreads the jitter (the run, or the run and step).
    pub fn retry_at(&self, error: &StepError, attempts_made: u32, now: Millis, seed: &str) -> Option<Millis> {
        (error.retriable && attempts_made < self.max_attempts)
            .then(|| now.saturating_add(millis(retry_delay(error, attempts_made, seed))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_with_attempts_and_caps() {
        let base: Vec<u64> = (1..=12).map(|n| backoff(n, "s").as_secs()).collect();
        for (n, secs) in base.iter().enumerate() {
            let floor = TABLE_SECS[n.min(9)];
            assert!(*secs >= floor && *secs < floor + 30, "attempt {}: {secs}", n + 1);
        }
    }

    #[test]
    fn retries_until_the_attempts_are_used_up() {
        let policy = RetryPolicy::with_retries(2);
        let error = StepError::new("boom");
        assert!(policy.retry_at(&error, 1, 0, "s").is_some_and(|at| at >= 15_000));
        assert!(policy.retry_at(&error, 2, 0, "s").is_some());
        assert_eq!(policy.retry_at(&error, 3, 0, "s"), None);
        assert_eq!(policy.retry_at(&StepError::non_retriable("no"), 1, 0, "s"), None);
        assert_eq!(RetryPolicy::with_retries(u32::MAX).retry_at(&error, 1, 5, "s").map(|at| at > 5), Some(true));
    }

    #[test]
    fn custom_delays_are_clamped_to_the_retry_after_bounds() {
        assert_eq!(Backoff::table(["0s"]).delay(1), Ok(MIN_RETRY_AFTER));
        assert_eq!(Backoff::function(|_| Duration::from_secs(200_000)).delay(1), Ok(MAX_RETRY_AFTER));
        let policy = RetryPolicy::with_retries(1);
        let table = Backoff::table(["9s"]);
        let judged = policy.clone().backoff(Some(&table)).judged(StepError::new("boom"), 1);
        assert_eq!(judged.retry_after_ms, Some(9_000));
        let last = policy.backoff(Some(&table)).judged(StepError::new("boom"), 2);
        assert_eq!(last.retry_after_ms, None, "no attempt follows the last: nothing to wait for");
    }

    #[test]
    fn jitter_differs_between_runs() {
        let spread: std::collections::HashSet<_> = (0..20).map(|i| backoff(1, &format!("run-{i}"))).collect();
        assert!(spread.len() > 15);
    }
}
