//! Switchyard's counters: what the router counts on the media path, read by the server.
//!
//! Counters are plain atomics updated with `Relaxed` ordering: the hot path never takes a
//! lock to count. No I/O here; exporting (Prometheus) reads these.

pub mod rate;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

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

/// Why the router did not forward a packet to a subscriber (or at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The subscriber's queue was full: its connection could not keep up.
    QueueFull,
    /// The subscriber's connection refused the write (closed, or not yet negotiated).
    WriteFailed,
    /// The subscriber asked for nothing of the track (`off`).
    Paused,
    /// A simulcast layer the subscriber is not on.
    OtherLayer,
    /// The target layer's packets before its first keyframe.
    WaitingForKeyframe,
    /// Padding only (bandwidth probing).
    Padding,
    /// Too late to place in the subscriber's stream.
    TooLate,
    /// An upstream retransmission of a packet already received.
    Duplicate,
}

impl DropReason {
    pub const ALL: [DropReason; 8] = [
        DropReason::QueueFull,
        DropReason::WriteFailed,
        DropReason::Paused,
        DropReason::OtherLayer,
        DropReason::WaitingForKeyframe,
        DropReason::Padding,
        DropReason::TooLate,
        DropReason::Duplicate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::WriteFailed => "write_failed",
            DropReason::Paused => "paused",
            DropReason::OtherLayer => "other_layer",
            DropReason::WaitingForKeyframe => "waiting_for_keyframe",
            DropReason::Padding => "padding",
            DropReason::TooLate => "too_late",
            DropReason::Duplicate => "duplicate",
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
        self.add_n(reason, 1);
    }

    #[inline]
    pub fn add_n(&self, reason: DropReason, n: u64) {
        if n > 0 {
            self.by_reason[reason as usize].fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn get(&self, reason: DropReason) -> u64 {
        self.by_reason[reason as usize].load(Ordering::Relaxed)
    }
}

/// Kinds of long-lived objects the router counts while they exist, so a leak (a task or
/// connection that outlives its participant) shows as a gauge that never returns to zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Live {
    /// Participant tasks (each owns two peer connections).
    Participants,
    /// Published tracks being read.
    UpTracks,
    /// Per-subscriber forwarding of one track.
    DownTracks,
}

impl Live {
    pub const ALL: [Live; 3] = [Live::Participants, Live::UpTracks, Live::DownTracks];
}

/// Counts one live object of a kind until dropped.
#[derive(Debug)]
pub struct LiveGuard {
    stats: Arc<MediaStats>,
    kind: Live,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.stats.live[self.kind as usize].fetch_sub(1, Ordering::Relaxed);
    }
}

/// Process-wide media counters, shared by every room.
#[derive(Debug, Default)]
pub struct MediaStats {
    live: [AtomicI64; Live::ALL.len()],
    /// RTP received from publishers.
    pub received: PacketCounter,
    /// RTP written to subscribers.
    pub forwarded: PacketCounter,
    pub dropped: DropCounters,
    /// Keyframe requests (PLI) sent to publishers.
    pub keyframe_requests_sent: AtomicU64,
    /// PLI/FIR received from subscribers.
    pub keyframe_requests_received: AtomicU64,
    /// Packets resent to subscribers from the router's cache after a NACK.
    pub retransmissions_sent: AtomicU64,
    /// Webhook deliveries (the server's webhook dispatcher counts them).
    pub webhooks: WebhookCounters,
}

/// Webhook requests by outcome.
#[derive(Debug, Default)]
pub struct WebhookCounters {
    /// Events the receiver accepted (2xx).
    pub delivered: AtomicU64,
    /// Attempts that failed (connection error, timeout, non-2xx); each retry counts again.
    pub failed_attempts: AtomicU64,
    /// Events given up after the last retry, or dropped because the queue was full.
    pub dropped: AtomicU64,
}

impl MediaStats {
    /// Counts one more live object of `kind` until the guard is dropped.
    pub fn live_guard(self: &Arc<Self>, kind: Live) -> LiveGuard {
        self.live[kind as usize].fetch_add(1, Ordering::Relaxed);
        LiveGuard {
            stats: self.clone(),
            kind,
        }
    }

    pub fn live(&self, kind: Live) -> i64 {
        self.live[kind as usize].load(Ordering::Relaxed)
    }
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

    #[test]
    fn live_guards_count_while_alive() {
        let s = Arc::new(MediaStats::default());
        let a = s.live_guard(Live::UpTracks);
        let b = s.live_guard(Live::UpTracks);
        assert_eq!(s.live(Live::UpTracks), 2);
        assert_eq!(s.live(Live::DownTracks), 0);
        drop(a);
        drop(b);
        assert_eq!(s.live(Live::UpTracks), 0);
    }
}
