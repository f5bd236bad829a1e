//! Retries: [`RetryPolicy`], the one place Cairn decides whether a failed attempt (of a `run`
//! step or of a whole function) is tried again and when; and the back-off, as Inngest's executor
//! computes it: a doubling-ish table (15 s, 30 s, 1 min, 2 min, 5 min, 10 min, 20 min, 40 min,
//! 1 h, 2 h, then 2 h) plus up to 30 s of jitter, so runs that failed together do not retry
//! together.

use crate::duration::millis;
use crate::error::StepError;
use crate::record::Millis;
use sha1::{Digest, Sha1};
use std::time::Duration;

/// The longest delay [`StepError::retry_after`] may ask for: Inngest's executor clamps
/// `Retry-After` to [1 s, 24 h], and an unclamped one could land past the end of time.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400);
/// The shortest delay [`StepError::retry_after`] may ask for (Inngest's).
pub const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);

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

/// How many attempts a step or a function gets, and when the next one runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RetryPolicy {
    max_attempts: u32,
}

impl RetryPolicy {
    /// `retries` after the first attempt.
    pub(crate) fn with_retries(retries: u32) -> Self {
        RetryPolicy { max_attempts: retries.saturating_add(1) }
    }

    /// When the attempt after `attempts_made` attempts (the last failing with `error` at `now`)
    /// runs; `None` when the failure is final (non-retriable, or the attempts are used up).
    /// `seed` spreads the jitter (the run, or the run and step).
    pub(crate) fn retry_at(&self, error: &StepError, attempts_made: u32, now: Millis, seed: &str) -> Option<Millis> {
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
    fn jitter_differs_between_runs() {
        let spread: std::collections::HashSet<_> = (0..20).map(|i| backoff(1, &format!("run-{i}"))).collect();
        assert!(spread.len() > 15);
    }
}
