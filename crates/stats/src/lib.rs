//! Switchyard's counters: what the router counts on the media path, read by the server.
//!
//! Counters are plain atomics updated with `Relaxed` ordering: the hot path never takes a
//! lock to count. Distributions (latency, RTT, jitter, loss) are Prometheus histograms,
//! whose `observe` is a few atomic adds, also lock-free. [`metrics`] exports all of it in
//! the Prometheus text format, reading the atomics at scrape time. No I/O here, except
//! the process collector reading `/proc/self` during a scrape.

pub mod metrics;
pub mod quality;
pub mod rate;

use std::ops::Index;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

pub use quality::{Quality, ReceptionReport};

/// Audio or video: the media counters are kept per kind, since their rates, sizes and
/// loss sensitivity differ by orders of magnitude.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    Audio,
    Video,
}

impl MediaKind {
    pub const ALL: [MediaKind; 2] = [MediaKind::Audio, MediaKind::Video];

    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
        }
    }
}

/// One `T` per [`MediaKind`], indexed by it.
#[derive(Debug, Default)]
pub struct PerKind<T>([T; MediaKind::ALL.len()]);

impl<T> PerKind<T> {
    pub fn from_fn(mut f: impl FnMut(MediaKind) -> T) -> Self {
        PerKind(MediaKind::ALL.map(&mut f))
    }
}

impl<T> Index<MediaKind> for PerKind<T> {
    type Output = T;

    #[inline]
    fn index(&self, kind: MediaKind) -> &T {
        &self.0[kind as usize]
    }
}

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

    /// `packets` packets of `bytes` in all, counted with two atomic adds.
    #[inline]
    pub fn add_many(&self, packets: u64, bytes: u64) {
        self.packets.fetch_add(packets, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
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
    /// The media socket's send buffer stayed full: the server could not keep up.
    QueueFull,
    /// The subscriber's connection did not send it: closed, not yet negotiated, or its
    /// DTLS/SRTP not up yet.
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
    /// A publisher's packet larger than the server forwards (counted once per packet).
    Oversized,
    /// A publisher's packet with a payload type its track was not negotiated with.
    UnknownPayloadType,
    /// A publisher's packet that does not parse as RTP.
    Malformed,
}

impl DropReason {
    pub const ALL: [DropReason; 11] = [
        DropReason::QueueFull,
        DropReason::WriteFailed,
        DropReason::Paused,
        DropReason::OtherLayer,
        DropReason::WaitingForKeyframe,
        DropReason::Padding,
        DropReason::TooLate,
        DropReason::Duplicate,
        DropReason::Oversized,
        DropReason::UnknownPayloadType,
        DropReason::Malformed,
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
            DropReason::Oversized => "oversized",
            DropReason::UnknownPayloadType => "unknown_payload_type",
            DropReason::Malformed => "malformed",
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

/// Why a packet a subscriber NACKed was not resent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResendSkip {
    /// Resent moments ago (within `rtc.nack_resend_interval_ms`): that copy is on its way.
    Recent,
    /// Never sent to this subscriber, sent too long ago, or no longer cached.
    Unavailable,
    /// Beyond the per-NACK or per-second limits.
    OverLimit,
}

impl ResendSkip {
    pub const ALL: [ResendSkip; 3] = [
        ResendSkip::Recent,
        ResendSkip::Unavailable,
        ResendSkip::OverLimit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ResendSkip::Recent => "recent",
            ResendSkip::Unavailable => "unavailable",
            ResendSkip::OverLimit => "over_limit",
        }
    }
}

/// NACKed packets not resent, by reason.
#[derive(Debug, Default)]
pub struct ResendSkipCounters {
    by_reason: [AtomicU64; ResendSkip::ALL.len()],
}

impl ResendSkipCounters {
    #[inline]
    pub fn add_n(&self, reason: ResendSkip, n: u64) {
        if n > 0 {
            self.by_reason[reason as usize].fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn get(&self, reason: ResendSkip) -> u64 {
        self.by_reason[reason as usize].load(Ordering::Relaxed)
    }
}

/// The two ways RTCP asks for a keyframe (RFC 4585 PLI, RFC 5104 FIR).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyframeRequest {
    Pli,
    Fir,
}

impl KeyframeRequest {
    pub const ALL: [KeyframeRequest; 2] = [KeyframeRequest::Pli, KeyframeRequest::Fir];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyframeRequest::Pli => "pli",
            KeyframeRequest::Fir => "fir",
        }
    }
}

/// Keyframe requests counted by type.
#[derive(Debug, Default)]
pub struct KeyframeRequestCounters {
    by_type: [AtomicU64; KeyframeRequest::ALL.len()],
}

impl KeyframeRequestCounters {
    #[inline]
    pub fn add(&self, request: KeyframeRequest) {
        self.by_type[request as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, request: KeyframeRequest) -> u64 {
        self.by_type[request as usize].load(Ordering::Relaxed)
    }
}

/// Kinds of long-lived objects the router counts while they exist, so a leak (a task or
/// connection that outlives its participant) shows as a gauge that never returns to zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Live {
    /// Room tasks.
    Rooms,
    /// Participant tasks (each owns two peer connections).
    Participants,
    /// Published tracks being read.
    UpTracks,
    /// Per-subscriber forwarding of one track.
    DownTracks,
}

impl Live {
    pub const ALL: [Live; 4] = [
        Live::Rooms,
        Live::Participants,
        Live::UpTracks,
        Live::DownTracks,
    ];
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

/// Whether a simulcast layer carries media, by its frames (the router's layer monitor).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerState {
    /// Frames at a steady rate.
    Live,
    /// A frame now and then: picked only when no layer of its track is live.
    Sporadic,
    /// No frame lately (nothing, or padding only).
    Idle,
}

impl LayerState {
    pub const ALL: [LayerState; 3] = [LayerState::Live, LayerState::Sporadic, LayerState::Idle];

    pub fn as_str(self) -> &'static str {
        match self {
            LayerState::Live => "live",
            LayerState::Sporadic => "sporadic",
            LayerState::Idle => "idle",
        }
    }
}

/// Simulcast layer names by index, lowest first, as the metrics label them.
pub const LAYER_QUALITIES: [&str; 3] = ["low", "medium", "high"];

/// Counts one simulcast layer in a state until dropped (or replaced by the next state).
#[derive(Debug)]
pub struct LayerGuard {
    stats: Arc<MediaStats>,
    layer: usize,
    state: LayerState,
}

impl LayerGuard {
    pub fn state(&self) -> LayerState {
        self.state
    }
}

impl Drop for LayerGuard {
    fn drop(&mut self) {
        self.stats.layers[self.layer][self.state as usize].fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why a data-channel message (or one receiver's copy of it) was not relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataDrop {
    /// The sender's token (or an operator) does not allow publishing data.
    Forbidden,
    /// Larger than the channel's max-message-size, or than that once the envelope is on.
    TooLarge,
    /// An envelope that could not be read.
    Invalid,
    /// A lossy message for a receiver whose queue was full (that receiver's copy).
    QueueFull,
    /// A reliable message for a receiver whose queue overflowed: its channel is reset, and
    /// this copy (and any until the new channel opens) is lost.
    Reset,
}

impl DataDrop {
    pub const ALL: [DataDrop; 5] = [
        DataDrop::Forbidden,
        DataDrop::TooLarge,
        DataDrop::Invalid,
        DataDrop::QueueFull,
        DataDrop::Reset,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DataDrop::Forbidden => "forbidden",
            DataDrop::TooLarge => "too_large",
            DataDrop::Invalid => "invalid",
            DataDrop::QueueFull => "queue_full",
            DataDrop::Reset => "reset",
        }
    }
}

/// Data-channel traffic: messages from senders (`received`), copies written to receivers
/// (`sent`; envelope bytes), and what was not relayed.
#[derive(Debug, Default)]
pub struct DataCounters {
    pub received: PacketCounter,
    pub sent: PacketCounter,
    dropped: [AtomicU64; DataDrop::ALL.len()],
    /// Receivers' reliable channels reset because their queue overflowed.
    pub resets: AtomicU64,
}

impl DataCounters {
    pub fn drop(&self, reason: DataDrop) {
        self.drop_n(reason, 1);
    }

    pub fn drop_n(&self, reason: DataDrop, n: u64) {
        if n > 0 {
            self.dropped[reason as usize].fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn dropped(&self, reason: DataDrop) -> u64 {
        self.dropped[reason as usize].load(Ordering::Relaxed)
    }
}

/// Process-wide media counters, shared by every room.
#[derive(Debug, Default)]
pub struct MediaStats {
    live: [AtomicI64; Live::ALL.len()],
    /// Simulcast layers of published tracks, by layer and [`LayerState`].
    layers: [[AtomicI64; 3]; 3],
    /// RTP received from publishers (payload bytes).
    pub received: PerKind<PacketCounter>,
    /// Padding-only RTP packets received from publishers (counted in `received` too).
    pub received_padding: AtomicU64,
    /// RTP the subscribers' connections sent (payload bytes), retransmissions included.
    pub forwarded: PerKind<PacketCounter>,
    pub dropped: DropCounters,
    /// Keyframe requests sent to publishers.
    pub keyframe_requests_sent: KeyframeRequestCounters,
    /// Keyframe requests received from subscribers.
    pub keyframe_requests_received: KeyframeRequestCounters,
    /// NACK messages received from subscribers.
    pub nacks_received: AtomicU64,
    /// Packets those NACKs asked for (a NACK can name up to 17 per pair).
    pub nacked_packets: AtomicU64,
    /// Packets resent to subscribers from the router's cache after a NACK.
    pub retransmissions_sent: AtomicU64,
    /// NACKed packets not resent, by reason.
    pub resends_skipped: ResendSkipCounters,
    /// Webhook deliveries (the server's webhook dispatcher counts them).
    pub webhooks: WebhookCounters,
    /// Data-channel messages relayed between participants.
    pub data: DataCounters,
    /// Forwarding latency and the subscribers' reception quality.
    pub quality: Quality,
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

    /// Counts simulcast layer `layer` (0 = low) of some track in `state` until the guard
    /// is dropped.
    pub fn layer_guard(self: &Arc<Self>, layer: usize, state: LayerState) -> LayerGuard {
        let layer = layer.min(LAYER_QUALITIES.len() - 1);
        self.layers[layer][state as usize].fetch_add(1, Ordering::Relaxed);
        LayerGuard {
            stats: self.clone(),
            layer,
            state,
        }
    }

    /// Simulcast layers `layer` (0 = low) of all tracks now in `state`.
    pub fn layers(&self, layer: usize, state: LayerState) -> i64 {
        self.layers
            .get(layer)
            .map_or(0, |l| l[state as usize].load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_count() {
        let s = MediaStats::default();
        s.received[MediaKind::Video].add(100);
        s.received[MediaKind::Video].add(50);
        s.received[MediaKind::Audio].add(20);
        s.dropped.add(DropReason::QueueFull);
        assert_eq!(s.received[MediaKind::Video].packets(), 2);
        assert_eq!(s.received[MediaKind::Video].bytes(), 150);
        assert_eq!(s.received[MediaKind::Audio].packets(), 1);
        assert_eq!(s.forwarded[MediaKind::Audio].packets(), 0);
        assert_eq!(s.dropped.get(DropReason::QueueFull), 1);
        assert_eq!(s.dropped.get(DropReason::WriteFailed), 0);
        s.keyframe_requests_received.add(KeyframeRequest::Fir);
        assert_eq!(s.keyframe_requests_received.get(KeyframeRequest::Fir), 1);
        assert_eq!(s.keyframe_requests_received.get(KeyframeRequest::Pli), 0);
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
