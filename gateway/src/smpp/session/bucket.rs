//! The token bucket behind the per-bind TPS share.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Token bucket for the per-bind TPS share. Burst = one second's worth (at least 1).
pub struct TokenBucket {
    /// f64 bits of the rate; 0 = unlimited.
    rate: AtomicU64,
    state: Mutex<BucketState>,
}

#[derive(Debug, Clone, Copy)]
pub struct BucketState {
    pub tokens: f64,
    pub last: Instant,
}

/// Takes one token at `now`, or says how long to wait. Pure.
pub fn take_token(state: &mut BucketState, now: Instant, rate: f64) -> Result<(), Duration> {
    take_tokens(state, now, rate, 1)
}

/// Takes `n` tokens at `now` (a message of `n` parts), or says how long to wait. A whole token
/// must be there; the rest may go into debt that later refills pay back, so a message with
/// more parts than the burst still passes once, and the rate over time stays `rate`. Pure.
pub fn take_tokens(
    state: &mut BucketState,
    now: Instant,
    rate: f64,
    n: u32,
) -> Result<(), Duration> {
    let burst = rate.max(1.0);
    let elapsed = now.saturating_duration_since(state.last).as_secs_f64();
    state.tokens = (state.tokens + elapsed * rate).min(burst);
    state.last = now;
    if state.tokens >= 1.0 {
        state.tokens -= f64::from(n.max(1));
        Ok(())
    } else {
        Err(Duration::from_secs_f64((1.0 - state.tokens) / rate))
    }
}

impl TokenBucket {
    pub fn new(rate: Option<f64>) -> Self {
        let b = Self {
            rate: AtomicU64::new(0),
            state: Mutex::new(BucketState {
                tokens: 0.0,
                last: Instant::now(),
            }),
        };
        b.set_rate(rate);
        b.state.lock().expect("bucket").tokens = rate.unwrap_or(0.0).max(1.0);
        b
    }

    pub fn set_rate(&self, rate: Option<f64>) {
        let r = rate.filter(|r| *r > 0.0).unwrap_or(0.0);
        self.rate.store(r.to_bits(), Ordering::Relaxed);
    }

    pub fn rate(&self) -> Option<f64> {
        let r = f64::from_bits(self.rate.load(Ordering::Relaxed));
        (r > 0.0).then_some(r)
    }

    pub async fn acquire(&self) {
        loop {
            let Some(rate) = self.rate() else { return };
            let wait = {
                let mut s = self.state.lock().expect("bucket");
                match take_token(&mut s, Instant::now(), rate) {
                    Ok(()) => return,
                    Err(w) => w,
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_at_rate_and_caps_at_burst() {
        let t0 = Instant::now();
        let mut s = BucketState {
            tokens: 0.0,
            last: t0,
        };
        assert_eq!(
            take_token(&mut s, t0, 10.0),
            Err(Duration::from_millis(100))
        );
        assert!(take_token(&mut s, t0 + Duration::from_millis(100), 10.0).is_ok());
        assert!(take_token(&mut s, t0 + Duration::from_millis(100), 10.0).is_err());
        // a long idle period refills to the burst (10), not more
        let later = t0 + Duration::from_secs(100);
        for _ in 0..10 {
            assert!(take_token(&mut s, later, 10.0).is_ok());
        }
        assert!(take_token(&mut s, later, 10.0).is_err());
    }

    #[test]
    fn a_message_of_many_parts_takes_them_all_and_its_debt_is_paid_first() {
        let t0 = Instant::now();
        let mut s = BucketState {
            tokens: 2.0,
            last: t0,
        };
        // 5 parts at 2/s with 2 tokens: it passes, leaving a debt of 3.
        assert!(take_tokens(&mut s, t0, 2.0, 5).is_ok());
        assert_eq!(s.tokens, -3.0);
        // 4 tokens are needed before the next one: 2 s at 2/s.
        assert_eq!(take_tokens(&mut s, t0, 2.0, 1), Err(Duration::from_secs(2)));
        assert!(take_tokens(&mut s, t0 + Duration::from_millis(1500), 2.0, 1).is_err());
        assert!(take_tokens(&mut s, t0 + Duration::from_secs(2), 2.0, 1).is_ok());
    }

    #[tokio::test]
    async fn bucket_rate_changes_in_place() {
        let b = TokenBucket::new(Some(5.0));
        assert_eq!(b.rate(), Some(5.0));
        b.set_rate(None);
        let start = Instant::now();
        for _ in 0..1000 {
            b.acquire().await;
        }
        assert!(start.elapsed() < Duration::from_millis(200));
        // A limit set in place is enforced: burst 2, so the third token waits ~0.5 s.
        b.set_rate(Some(2.0));
        let start = Instant::now();
        for _ in 0..3 {
            b.acquire().await;
        }
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(400) && took < Duration::from_secs(2),
            "3 tokens at 2/s took {took:?}"
        );
    }
}
