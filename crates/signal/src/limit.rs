//! Rate limits on what one participant may make the server do: signaling messages,
//! re-offers and ICE restarts here, NACK resends in the router.
//!
//! Sans-IO: the caller passes `now`, so every limit is tested in simulated time.

use std::time::{Duration, Instant};

/// A token bucket: `burst` tokens at most, refilled at `per_second`. Each unit of work
/// takes a token; with none left the work is refused (or shrunk to what is left).
#[derive(Debug, Clone)]
pub struct TokenBucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(per_second: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            per_second: per_second.max(0.0),
            burst,
            tokens: burst,
            last: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        }
        if self.last.is_none_or(|last| now > last) {
            self.last = Some(now);
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.take_up_to(now, 1) == 1
    }

    /// Takes up to `wanted` tokens; returns how many it got.
    pub fn take_up_to(&mut self, now: Instant, wanted: u32) -> u32 {
        self.refill(now);
        let granted = (self.tokens.floor() as u32).min(wanted);
        self.tokens -= f64::from(granted);
        granted
    }

    /// Gives back tokens taken but not used.
    pub fn refund(&mut self, tokens: u32) {
        self.tokens = (self.tokens + f64::from(tokens)).min(self.burst);
    }

    /// How long until a token is available (zero if one is now).
    pub fn wait_for_token(&mut self, now: Instant) -> Duration {
        self.refill(now);
        if self.tokens >= 1.0 || self.per_second == 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((1.0 - self.tokens) / self.per_second)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut b = TokenBucket::new(10.0, 3);
        assert!(b.try_take(t0));
        assert!(b.try_take(t0));
        assert!(b.try_take(t0));
        assert!(!b.try_take(t0), "burst spent");
        assert_eq!(b.wait_for_token(t0), Duration::from_millis(100));
        assert!(!b.try_take(ms(50)));
        assert!(b.try_take(ms(100)), "refilled at 10/s");
        // A long pause refills to the burst, never beyond.
        assert_eq!(b.take_up_to(ms(60_000), 100), 3);
    }

    #[test]
    fn partial_grants_and_refunds() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100.0, 50);
        assert_eq!(b.take_up_to(t0, 40), 40);
        assert_eq!(b.take_up_to(t0, 40), 10);
        b.refund(5);
        assert_eq!(b.take_up_to(t0, 40), 5);
        assert_eq!(b.take_up_to(t0, 40), 0);
        // A clock that goes backwards grants nothing extra.
        assert_eq!(b.take_up_to(t0 - Duration::from_secs(1), 1), 0);
    }
}
