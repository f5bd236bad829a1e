//! Retry back-off, as Inngest's executor computes it: a doubling-ish table
//! (15 s, 30 s, 1 min, 2 min, 5 min, 10 min, 20 min, 40 min, 1 h, 2 h, then 2 h) plus up to
//! 30 s of jitter, so runs that failed together do not retry together.

use crate::error::StepError;
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
    fn jitter_differs_between_runs() {
        let spread: std::collections::HashSet<_> = (0..20).map(|i| backoff(1, &format!("run-{i}"))).collect();
        assert!(spread.len() > 15);
    }
}
