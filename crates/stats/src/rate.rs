//! Per-track traffic and the bitrates computed from it.
//!
//! The media path only adds to atomics ([`TrackTraffic`]); a slow periodic task (the room,
//! once a second) samples them into bitrates ([`BitrateSampler`]), so nothing on the hot
//! path ever computes a rate or takes a lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Bytes of one published track: received per simulcast layer, and sent to all its
/// subscribers together.
#[derive(Debug, Default)]
pub struct TrackTraffic {
    received: [AtomicU64; 3],
    sent: AtomicU64,
}

impl TrackTraffic {
    #[inline]
    pub fn add_received(&self, layer: usize, bytes: usize) {
        if let Some(counter) = self.received.get(layer) {
            counter.fetch_add(bytes as u64, Ordering::Relaxed);
        }
    }

    #[inline]
    pub fn add_sent(&self, bytes: usize) {
        self.sent.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn received(&self, layer: usize) -> u64 {
        self.received
            .get(layer)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

/// Turns a growing byte count into bits per second between two samples.
#[derive(Debug, Default, Clone, Copy)]
pub struct BitrateSampler {
    last: Option<(Instant, u64)>,
    bps: u64,
}

impl BitrateSampler {
    /// Records `total_bytes` at `now` and returns the rate since the previous sample
    /// (0 for the first). A sample in the same instant keeps the previous rate.
    pub fn sample(&mut self, now: Instant, total_bytes: u64) -> u64 {
        if let Some((at, bytes)) = self.last {
            let secs = now.saturating_duration_since(at).as_secs_f64();
            if secs <= 0.0 {
                return self.bps;
            }
            self.bps = (total_bytes.saturating_sub(bytes) as f64 * 8.0 / secs) as u64;
        }
        self.last = Some((now, total_bytes));
        self.bps
    }

    pub fn bps(&self) -> u64 {
        self.bps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bitrate_between_samples() {
        let t0 = Instant::now();
        let mut s = BitrateSampler::default();
        assert_eq!(s.sample(t0, 1_000), 0);
        // 125 000 bytes in one second = 1 Mbit/s.
        assert_eq!(s.sample(t0 + Duration::from_secs(1), 126_000), 1_000_000);
        assert_eq!(s.sample(t0 + Duration::from_secs(1), 999_999), 1_000_000);
        assert_eq!(s.sample(t0 + Duration::from_millis(1500), 126_000), 0);
    }

    #[test]
    fn traffic_counts_by_layer() {
        let t = TrackTraffic::default();
        t.add_received(0, 10);
        t.add_received(2, 30);
        t.add_received(7, 99);
        t.add_sent(5);
        t.add_sent(5);
        assert_eq!((t.received(0), t.received(1), t.received(2)), (10, 0, 30));
        assert_eq!(t.sent(), 10);
    }
}
