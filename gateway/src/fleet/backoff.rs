//! Reconnect delays: exponential with full jitter in the upper half, capped. Pure: the random
//! draw is passed in, so the policy is tested without a clock or an RNG.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(100));
        Self {
            initial,
            max: max.max(initial),
        }
    }

    /// Ceiling of the delay before attempt `attempt` (0 = first retry): initial · 2^attempt, capped.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u64.checked_shl(attempt.min(30)).unwrap_or(u64::MAX);
        let ms = (self.initial.as_millis() as u64).saturating_mul(factor);
        Duration::from_millis(ms).min(self.max)
    }

    /// Delay for `attempt` given a uniform draw `unit` in [0, 1): between half the ceiling and
    /// the ceiling, so pods that failed together do not retry in lock-step, yet never retry
    /// faster than half the schedule.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let ceil = self.ceiling(attempt);
        let unit = unit.clamp(0.0, 1.0);
        ceil.mul_f64(0.5 + 0.5 * unit)
    }

    /// Delay with a fresh random draw.
    pub fn next_delay(&self, attempt: u32) -> Duration {
        self.delay(attempt, rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b() -> Backoff {
        Backoff::new(Duration::from_secs(1), Duration::from_secs(60))
    }

    #[test]
    fn doubles_then_caps() {
        assert_eq!(b().ceiling(0), Duration::from_secs(1));
        assert_eq!(b().ceiling(1), Duration::from_secs(2));
        assert_eq!(b().ceiling(5), Duration::from_secs(32));
        assert_eq!(b().ceiling(6), Duration::from_secs(60));
        assert_eq!(b().ceiling(400), Duration::from_secs(60));
    }

    #[test]
    fn jitter_stays_in_upper_half() {
        assert_eq!(b().delay(3, 0.0), Duration::from_secs(4));
        assert_eq!(b().delay(3, 1.0), Duration::from_secs(8));
        let d = b().delay(3, 0.5);
        assert!(d > Duration::from_secs(4) && d < Duration::from_secs(8));
        for _ in 0..100 {
            let d = b().next_delay(2);
            assert!(
                d >= Duration::from_secs(2) && d <= Duration::from_secs(4),
                "{d:?}"
            );
        }
    }

    #[test]
    fn degenerate_settings_are_sane() {
        let z = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(z.ceiling(0), Duration::from_millis(100));
        assert!(z.max >= z.initial);
    }
}
