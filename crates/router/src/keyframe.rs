//! Throttling of keyframe requests (PLI) sent to a publisher.
//!
//! Many subscribers joining at once must not flood a publisher with PLIs (each makes its
//! encoder produce a large keyframe), yet no request may be lost: a request inside the
//! throttle window is deferred to the end of it. Sans-IO: `now` is passed in.

use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct KeyframeThrottle {
    min_interval: Duration,
    last_sent: Option<Instant>,
    pending: bool,
}

/// What to do with a keyframe request right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyframeDecision {
    /// Send a PLI now.
    SendNow,
    /// A PLI went out recently; one is due at this instant (call [`KeyframeThrottle::poll`]).
    Deferred(Instant),
}

impl KeyframeThrottle {
    pub fn new(min_interval: Duration) -> Self {
        KeyframeThrottle {
            min_interval,
            last_sent: None,
            pending: false,
        }
    }

    pub fn request(&mut self, now: Instant) -> KeyframeDecision {
        match self.last_sent {
            Some(last) if now.saturating_duration_since(last) < self.min_interval => {
                self.pending = true;
                KeyframeDecision::Deferred(last + self.min_interval)
            }
            _ => {
                self.last_sent = Some(now);
                self.pending = false;
                KeyframeDecision::SendNow
            }
        }
    }

    /// True when a deferred request is now due (and marks it sent).
    pub fn poll(&mut self, now: Instant) -> bool {
        match self.last_sent {
            Some(last)
                if self.pending && now.saturating_duration_since(last) >= self.min_interval =>
            {
                self.pending = false;
                self.last_sent = Some(now);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_collapse_into_one_deferred_request() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut k = KeyframeThrottle::new(ms(500));
        assert_eq!(k.request(t0), KeyframeDecision::SendNow);
        for i in 1..10 {
            assert_eq!(
                k.request(t0 + ms(i * 10)),
                KeyframeDecision::Deferred(t0 + ms(500))
            );
        }
        assert!(!k.poll(t0 + ms(499)));
        assert!(k.poll(t0 + ms(500)));
        assert!(
            !k.poll(t0 + ms(600)),
            "the burst became exactly one more PLI"
        );
        assert_eq!(k.request(t0 + ms(1000)), KeyframeDecision::SendNow);
    }

    #[test]
    fn nothing_pending_means_nothing_due() {
        let t0 = Instant::now();
        let mut k = KeyframeThrottle::new(Duration::from_millis(500));
        assert!(!k.poll(t0));
        k.request(t0);
        assert!(!k.poll(t0 + Duration::from_secs(5)));
    }
}
