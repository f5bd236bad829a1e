//! The generic cell rate algorithm Inngest's throttle and rate limit use (flow-control reference,
//! section 3.6): one number per key, the theoretical arrival time `tat`.

use crate::record::Millis;

/// A GCRA limiter: one admission per `interval` on average, `tolerance / interval` at once from
/// idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// `period / limit`, in milliseconds.
    pub interval: Millis,
    /// How far ahead of now `tat` may run, in milliseconds.
    pub tolerance: Millis,
}

impl Gcra {
    /// Inngest's `rateLimit`: `limit` per `period` with a hidden burst of `limit / 10`, so an
    /// idle key admits `limit / 10 + 1` events at once, then one per `period / limit`.
    ///
    /// ```
    /// use cairn::flow::Gcra;
    /// let limiter = Gcra::rate_limit(10, 60_000);
    /// let mut tat = None;
    /// let admitted: Vec<bool> = (0..3).map(|_| limiter.admit(tat, 0).map(|next| tat = Some(next)).is_some()).collect();
    /// assert_eq!(admitted, [true, true, false]);
    /// ```
    pub fn rate_limit(limit: u32, period: Millis) -> Gcra {
        let interval = period / Millis::from(limit.max(1));
        Gcra { interval, tolerance: interval * (Millis::from(limit / 10) + 1) }
    }

    /// Inngest's `throttle`: an idle key admits `limit + burst` at once, then one per
    /// `period / limit`.
    pub fn throttle(limit: u32, period: Millis, burst: u32) -> Gcra {
        let interval = period / Millis::from(limit.max(1));
        Gcra { interval, tolerance: interval * (Millis::from(limit.max(1)) + Millis::from(burst)) }
    }

    /// The new `tat` if an arrival at `now` is admitted with the key at `tat` (`None`: idle);
    /// `None` if it is not (a refusal leaves `tat` unchanged).
    pub fn admit(&self, tat: Option<Millis>, now: Millis) -> Option<Millis> {
        let base = tat.unwrap_or(now).max(now);
        (base + self.interval - self.tolerance <= now).then_some(base + self.interval)
    }

    /// The earliest time a refused arrival could be admitted.
    pub fn next_admission(&self, tat: Millis) -> Millis {
        tat + self.interval - self.tolerance
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Admission times for arrivals at `times`, queued ones retried at the next admission.
    fn starts(limiter: Gcra, times: &[Millis]) -> Vec<Millis> {
        let mut tat = None;
        times
            .iter()
            .map(|&at| {
                let mut now = at;
                loop {
                    match limiter.admit(tat, now) {
                        Some(next) => {
                            tat = Some(next);
                            return now;
                        }
                        None => now = limiter.next_admission(tat.unwrap_or(now)).max(now),
                    }
                }
            })
            .collect()
    }

    #[test]
    fn throttle_spreads_starts_as_inngest_does() {
        // T1: limit 2 per 10 s, five at once.
        assert_eq!(starts(Gcra::throttle(2, 10_000, 0), &[0; 5]), [0, 0, 5_000, 10_000, 15_000]);
        // T2: limit 1 per 5 s, burst 2, six at once.
        assert_eq!(starts(Gcra::throttle(1, 5_000, 2), &[0; 6]), [0, 0, 0, 5_000, 10_000, 15_000]);
        // T3: limit 2 per 6 s, burst 1.
        assert_eq!(starts(Gcra::throttle(2, 6_000, 1), &[0; 6]), [0, 0, 0, 3_000, 6_000, 9_000]);
        // T4 (refill) and T5 (partial refill).
        assert_eq!(
            starts(Gcra::throttle(2, 10_000, 0), &[0, 0, 30_000, 30_000, 30_000]),
            [0, 0, 30_000, 30_000, 35_000]
        );
        assert_eq!(starts(Gcra::throttle(2, 10_000, 0), &[0, 0, 2_000, 7_000]), [0, 0, 5_000, 10_000]);
    }

    #[test]
    fn rate_limit_admits_the_hidden_burst_then_one_per_interval() {
        let limiter = Gcra::rate_limit(10, 60_000);
        let mut tat = None;
        let mut admit = |now| limiter.admit(tat, now).map(|next| tat = Some(next)).is_some();
        // R2: ten at 0 (two admitted), then at 6, 7 and 12 s.
        let at_zero: Vec<bool> = (0..10).map(|_| admit(0)).collect();
        assert_eq!(at_zero.iter().filter(|admitted| **admitted).count(), 2);
        assert_eq!([admit(6_000), admit(7_000), admit(12_000)], [true, false, true]);
        // R3: 100 per minute admits 11 at once.
        let limiter = Gcra::rate_limit(100, 60_000);
        let mut tat = None;
        let admitted = (0..100).filter(|_| limiter.admit(tat, 0).map(|next| tat = Some(next)).is_some()).count();
        assert_eq!(admitted, 11);
    }
}
