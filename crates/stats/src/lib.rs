//! Switchyard's counters: what the router counts on the media path, read by the server.
//!
//! Counters are plain atomics updated with `Relaxed` ordering: the hot path never takes a
//! lock to count. No I/O here; exporting (Prometheus) reads these.

use std::sync::atomic::{AtomicU64, Ordering};

/// Packets and bytes through one point of the media path.
#[derive(Debug, Default)]
pub struct PacketCounter {
    packets: AtomicU64,
    bytes: AtomicU64,
}

impl PacketCounter {
    #[inline]
    pub fn add(&self, bytes: usize) {
        self.packets.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn packets(&self) -> u64 {
        self.packets.load(Ordering::Relaxed)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// Why the router did not forward a packet to a subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The subscriber's queue was full: its connection could not keep up.
    QueueFull,
    /// The subscriber's connection refused the write (closed, or not yet negotiated).
    WriteFailed,
}

impl DropReason {
    pub const ALL: [DropReason; 2] = [DropReason::QueueFull, DropReason::WriteFailed];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::WriteFailed => "write_failed",
        }
    }
}

/// Drops counted by reason.
#[derive(Debug, Default)]
pub struct DropCounters {
    by_reason: [AtomicU64; DropReason::ALL.len()],
}

impl DropCounters {
    #[inline]
    pub fn add(&self, reason: DropReason) {
        self.by_reason[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, reason: DropReason) -> u64 {
        self.by_reason[reason as usize].load(Ordering::Relaxed)
    }
}

/// Process-wide media counters, shared by every room.
#[derive(Debug, Default)]
pub struct MediaStats {
    /// RTP received from publishers.
    pub received: PacketCounter,
    /// RTP written to subscribers.
    pub forwarded: PacketCounter,
    pub dropped: DropCounters,
    /// Keyframe requests (PLI) sent to publishers.
    pub keyframe_requests_sent: AtomicU64,
    /// PLI/FIR received from subscribers.
    pub keyframe_requests_received: AtomicU64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_count() {
        let s = MediaStats::default();
        s.received.add(100);
        s.received.add(50);
        s.dropped.add(DropReason::QueueFull);
        assert_eq!(s.received.packets(), 2);
        assert_eq!(s.received.bytes(), 150);
        assert_eq!(s.dropped.get(DropReason::QueueFull), 1);
        assert_eq!(s.dropped.get(DropReason::WriteFailed), 0);
    }
}
