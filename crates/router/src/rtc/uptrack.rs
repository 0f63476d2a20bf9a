//! A published track as received from its publisher: one reader per simulcast layer, all
//! feeding the track's [`TrackCore`], which decides for every subscriber.
//!
//! Per packet, work shared by all subscribers happens once here (parsing, keyframe
//! detection, the audio level); per
//! subscriber it is the forwarder's decision, then writing and sealing that subscriber's
//! copy, and all copies go out in batched sends. The core's mutex is held only for the
//! decisions, never across an await and never while sealing or sending.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtp::packet::Packet;
use webrtc::rtp_transceiver::rtp_codec::RTCRtpCodecCapability;
use webrtc::track::track_remote::TrackRemote;

use switchyard_signal::{LayerInfo, Quality, TrackKind};
use switchyard_stats::rate::TrackTraffic;
use switchyard_stats::{DropReason, KeyframeRequest, Live, LiveGuard, MediaKind, MediaStats};

use super::downtrack::DownSink;
use super::egress::{Accounting, Batch, CopyOf, MediaSocket};
use crate::ids::{ParticipantId, TrackId};
use crate::keyframe::{KeyframeDecision, KeyframeThrottle};
use crate::media::codec::{is_keyframe_start, Codec};
use crate::media::layers::{Layer, LayerStatus, MAX_LAYERS};
use crate::media::speaker::{parse_audio_level, ActiveSpeakerDetector};
use crate::media::vp8;
use crate::track::{Incoming, NackLimits, NackOutcome, TrackCore, DROP_REASONS};

/// A received packet as every subscriber's sink sees it, with what of its header
/// extensions is forwarded kept aside: their ids are the publisher's and mean nothing to a
/// subscriber, so each sink writes a fresh header under the subscriber's own ids.
pub(crate) struct UpPacket {
    pub rtp: Packet,
    /// The audio-level extension's byte (RFC 6464: V flag and -dBov level), if it came.
    pub audio_level: Option<u8>,
    /// When the uptrack read it: each writer measures its forwarding latency from here.
    pub received_at: std::time::Instant,
}

/// The room's active-speaker detector, fed by its audio tracks.
pub(crate) type Speakers = Arc<Mutex<ActiveSpeakerDetector<ParticipantId>>>;

/// A layer with no frame for this long is not live (the publisher dropped it, or sends
/// only padding on it): see `LayerMonitor`. Its subscribers see a freeze of this long plus
/// a keyframe's round trip before they are on another layer; a healthy layer, even at
/// 5 fps, never goes this long without a frame, and 3 frames within it (4 fps) make a
/// layer live again.
const LAYER_TIMEOUT: Duration = Duration::from_millis(750);

pub struct UpTrack {
    pub id: TrackId,
    pub publisher: ParticipantId,
    pub kind: TrackKind,
    pub codec: RTCRtpCodecCapability,
    codec_kind: Codec,
    /// Simulcast layers the publisher declared, lowest first (empty without simulcast).
    pub layers: Vec<LayerInfo>,
    core: Mutex<TrackCore<Arc<UpPacket>, Arc<DownSink>>>,
    /// Where every subscriber's copies are sent from.
    socket: Arc<MediaSocket>,
    ssrcs: Arc<[AtomicU32; MAX_LAYERS]>,
    keyframe_requests: Option<mpsc::Sender<Layer>>,
    muted: AtomicBool,
    ended: AtomicBool,
    /// Set when the publisher lost the right to publish: the readers stop.
    stopped: AtomicBool,
    /// Bytes in (per layer) and out (all subscribers), sampled into bitrates by the room.
    pub traffic: Arc<TrackTraffic>,
    speakers: Option<Speakers>,
    stats: Arc<MediaStats>,
    _live: LiveGuard,
}

pub(crate) struct UpTrackConfig {
    pub cache_packets: usize,
    pub cache_max_age: Duration,
    /// Output packets each video subscriber remembers for resends (a quarter for audio).
    pub send_history: usize,
    pub keyframe_interval: Duration,
    /// The room's detector, fed by audio tracks.
    pub speakers: Option<Speakers>,
    pub stats: Arc<MediaStats>,
    pub socket: Arc<MediaSocket>,
}

impl UpTrack {
    /// Creates the track from its first layer to arrive; add every layer (that one
    /// included) with [`UpTrack::add_layer`].
    pub(crate) fn new(
        id: TrackId,
        publisher: ParticipantId,
        first: &TrackRemote,
        layers: Vec<LayerInfo>,
        publisher_pc: Weak<RTCPeerConnection>,
        config: UpTrackConfig,
    ) -> Arc<UpTrack> {
        let UpTrackConfig {
            cache_packets,
            cache_max_age,
            send_history,
            keyframe_interval,
            speakers,
            stats,
            socket,
        } = config;
        let codec = first.codec().capability;
        let codec_kind = Codec::from_mime(&codec.mime_type);
        let kind = if codec.mime_type.to_ascii_lowercase().starts_with("audio/") {
            TrackKind::Audio
        } else {
            TrackKind::Video
        };
        // Audio packets come 3-5 times slower than video's: the same time span needs fewer.
        let send_history = match kind {
            TrackKind::Audio => send_history / 4,
            TrackKind::Video => send_history,
        };
        let ssrcs: Arc<[AtomicU32; MAX_LAYERS]> =
            Arc::new(std::array::from_fn(|_| AtomicU32::new(0)));
        let keyframe_requests = (kind == TrackKind::Video).then(|| {
            let (tx, rx) = mpsc::channel(16);
            tokio::spawn(request_keyframes(
                publisher_pc,
                ssrcs.clone(),
                rx,
                keyframe_interval,
                stats.clone(),
            ));
            tx
        });
        Arc::new(UpTrack {
            id,
            publisher,
            kind,
            core: Mutex::new(
                TrackCore::new(codec.clock_rate, cache_packets, LAYER_TIMEOUT)
                    .with_cache_max_age(cache_max_age)
                    .with_send_history(send_history),
            ),
            socket,
            codec,
            codec_kind,
            layers,
            ssrcs,
            keyframe_requests,
            muted: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            traffic: Arc::default(),
            speakers: speakers.filter(|_| kind == TrackKind::Audio),
            _live: stats.live_guard(Live::UpTracks),
            stats,
        })
    }

    /// Starts reading one layer. `audio_level_ext` is the id the publisher negotiated for
    /// the audio-level header extension. `on_end` runs once, when the track stops.
    pub(crate) fn add_layer(
        self: &Arc<Self>,
        remote: Arc<TrackRemote>,
        layer: Layer,
        audio_level_ext: Option<u8>,
        on_end: impl FnOnce(Arc<UpTrack>) + Send + 'static,
    ) {
        self.ssrcs[layer as usize].store(remote.ssrc(), Ordering::Relaxed);
        let track = self.clone();
        tokio::spawn(async move {
            track.read_loop(remote, layer, audio_level_ext).await;
            if track.mark_ended() {
                on_end(track);
            }
        });
    }

    /// Whether a reader for `layer` was started (it may have ended since).
    pub(crate) fn reads_layer(&self, layer: Layer) -> bool {
        self.ssrcs[layer as usize].load(Ordering::Relaxed) != 0
    }

    /// Marks the track ended; true for the one caller that ended it (its end is reported
    /// once, whether its reader saw the close or its publisher replaced it).
    pub(crate) fn mark_ended(&self) -> bool {
        !self.ended.swap(true, Ordering::Relaxed)
    }

    fn core(&self) -> MutexGuard<'_, TrackCore<Arc<UpPacket>, Arc<DownSink>>> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads one layer until the publisher's track closes. Nothing a publisher puts in a
    /// packet ends the track: a packet that cannot be forwarded is dropped and counted.
    async fn read_loop(&self, remote: Arc<TrackRemote>, layer: Layer, audio_level_ext: Option<u8>) {
        let mut buf = vec![0u8; MAX_PACKET_BYTES];
        let mut copies: Vec<CopyOf> = Vec::new();
        let mut batch = Batch::new(self.socket.clone());
        let kind = self.media_kind();
        // The payload type this layer was negotiated with: a packet with another one is
        // not this track's codec (or not a codec at all), whatever webrtc-rs makes of it.
        // A simulcast layer's track learns it from its first packet (0 until then).
        let mut payload_type = Some(remote.payload_type()).filter(|&pt| pt != 0);
        loop {
            let packet = match remote.read(&mut buf).await {
                Ok((packet, _)) => packet,
                Err(e) => match read_failure(&e) {
                    ReadFailure::Dropped(reason) => {
                        self.stats.dropped.add(reason);
                        continue;
                    }
                    ReadFailure::Closed => {
                        tracing::info!(track = %self.id, layer, error = %e, "uptrack ended");
                        return;
                    }
                },
            };
            if self.stopped.load(Ordering::Relaxed) {
                return;
            }
            if *payload_type.get_or_insert(packet.header.payload_type) != packet.header.payload_type
            {
                self.stats.dropped.add(DropReason::UnknownPayloadType);
                continue;
            }
            let now = Instant::now().into_std();
            self.stats.received[self.media_kind()].add(packet.payload.len());
            if packet.payload.is_empty() {
                self.stats.received_padding.fetch_add(1, Ordering::Relaxed);
            }
            self.traffic
                .add_received(layer as usize, packet.payload.len());
            let audio_level_byte = audio_level_ext
                .and_then(|ext| packet.header.get_extension(ext))
                .and_then(|payload| payload.first().copied());
            if let (Some(speakers), Some(byte)) = (&self.speakers, audio_level_byte) {
                if !self.muted.load(Ordering::Relaxed) {
                    if let Some(level) = parse_audio_level(&[byte]) {
                        speakers.lock().unwrap_or_else(|e| e.into_inner()).observe(
                            &self.publisher,
                            level,
                            now,
                        );
                    }
                }
            }
            let vp8 = match self.codec_kind {
                Codec::Vp8 => vp8::parse(&packet.payload).ok(),
                _ => None,
            };
            let keyframe_start = match &vp8 {
                Some(d) => d.is_keyframe,
                None => {
                    !packet.payload.is_empty()
                        && is_keyframe_start(self.codec_kind, &packet.payload)
                }
            };
            let dimensions = vp8
                .as_ref()
                .filter(|d| d.is_keyframe)
                .and_then(|d| vp8_frame_size(&packet.payload[d.header_len..]));
            let incoming = Incoming {
                layer,
                seq: packet.header.sequence_number,
                ts: packet.header.timestamp,
                keyframe_start,
                padding_only: packet.payload.is_empty(),
                vp8,
                bytes: packet.payload.len(),
                packet: Arc::new(UpPacket {
                    rtp: packet,
                    audio_level: audio_level_byte,
                    received_at: now,
                }),
                now,
            };
            let outcome = {
                let mut core = self.core();
                if let Some((w, h)) = dimensions {
                    core.set_dimensions(layer, w, h);
                }
                core.on_packet(incoming, &mut copies)
            };
            if outcome.duplicate {
                self.stats.dropped.add(DropReason::Duplicate);
            }
            for (reason, count) in DROP_REASONS.iter().zip(outcome.dropped) {
                self.stats
                    .dropped
                    .add_n(stats_reason(*reason), count as u64);
            }
            if let Some(tx) = &self.keyframe_requests {
                for layer in outcome.keyframe_requests.iter() {
                    // A full queue already holds pending requests: nothing is lost.
                    let _ = tx.try_send(layer);
                }
            }
            let to = Accounting {
                kind,
                stats: &self.stats,
                traffic: &self.traffic,
            };
            batch.send(&mut copies, &to).await;
        }
    }

    /// Starts forwarding to `subscriber`: the layer it asked for, or, until it says
    /// otherwise, the best there is.
    pub(crate) fn subscribe(
        &self,
        subscriber: ParticipantId,
        sink: Arc<DownSink>,
        wish: Option<LayerWish>,
    ) {
        let mut core = self.core();
        let desired = match wish {
            Some(wish) => desired_layer(&core, wish),
            None => Some((MAX_LAYERS - 1) as Layer),
        };
        core.subscribe(subscriber, sink, desired);
    }

    pub(crate) fn unsubscribe(&self, subscriber: &ParticipantId) {
        self.core().unsubscribe(subscriber);
    }

    pub fn subscriber_count(&self) -> usize {
        self.core().subscriber_count()
    }

    /// Each layer's liveness and rates, and how many subscribers receive it: for the
    /// admin API and the metrics, sampled once a second (a brief lock, no await).
    pub(crate) fn layer_snapshot(&self) -> LayerSnapshot {
        let now = Instant::now().into_std();
        let core = self.core();
        LayerSnapshot {
            status: core.layer_status(now),
            subscribers: core.subscribers_per_layer(),
        }
    }

    /// Applies a subscriber's `update_subscription`; false if it is not subscribed.
    pub(crate) fn set_wish(&self, subscriber: &ParticipantId, wish: LayerWish) -> bool {
        let mut core = self.core();
        let desired = desired_layer(&core, wish);
        core.set_desired(subscriber, desired)
    }

    /// A subscriber NACKed these output sequence numbers: appends to `resends` what can
    /// be sent again within `limits`, each exactly as first sent.
    pub(crate) fn on_nack(
        &self,
        subscriber: &ParticipantId,
        lost: impl IntoIterator<Item = u16>,
        limits: NackLimits,
        resends: &mut Vec<CopyOf>,
    ) -> NackOutcome {
        let now = Instant::now().into_std();
        self.core().on_nack(subscriber, lost, limits, now, resends)
    }

    /// A subscriber's PLI/FIR: ask the publisher for a keyframe of the layer it receives.
    pub(crate) fn request_keyframe_for(&self, subscriber: &ParticipantId) {
        let layer = self.core().current_layer(subscriber);
        if let (Some(tx), Some(layer)) = (&self.keyframe_requests, layer) {
            let _ = tx.try_send(layer);
        }
    }

    /// Its readers stopped: the publisher's track is gone.
    pub(crate) fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Relaxed)
    }

    pub(crate) fn media_kind(&self) -> MediaKind {
        match self.kind {
            TrackKind::Audio => MediaKind::Audio,
            TrackKind::Video => MediaKind::Video,
        }
    }

    /// Stops reading the publisher's packets for good (its right to publish was revoked).
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        self.core().set_muted(true);
    }

    /// Muted by its publisher or an operator: nothing is forwarded until unmuted, and it
    /// leaves the speaker detector.
    pub(crate) fn set_muted(&self, muted: bool) {
        self.muted.store(muted, Ordering::Relaxed);
        self.core().set_muted(muted);
        if muted {
            if let Some(speakers) = &self.speakers {
                speakers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&self.publisher);
            }
        }
    }
}

/// Per layer (lowest first): how it arrives, and how many subscribers receive it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LayerSnapshot {
    pub status: [LayerStatus; MAX_LAYERS],
    pub subscribers: [usize; MAX_LAYERS],
}

/// What a subscriber asked of a video track with `update_subscription`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LayerWish {
    Quality(Quality),
    /// The size of the tile it is shown in: the smallest layer that covers it.
    TileSize {
        width: u32,
        height: u32,
    },
}

/// The layer a wish stands for (`None`: forward nothing).
fn desired_layer<P: Clone, S: Clone>(core: &TrackCore<P, S>, wish: LayerWish) -> Option<Layer> {
    match wish {
        LayerWish::Quality(Quality::Low) => Some(0),
        LayerWish::Quality(Quality::Medium) => Some(1),
        LayerWish::Quality(Quality::High) => Some(2),
        LayerWish::Quality(Quality::Off) => None,
        LayerWish::TileSize { width, height } => Some(core.layer_for_size(width, height)),
    }
}

fn stats_reason(reason: crate::media::forwarder::DropReason) -> DropReason {
    use crate::media::forwarder::DropReason as F;
    match reason {
        F::Paused => DropReason::Paused,
        F::OtherLayer => DropReason::OtherLayer,
        F::WaitingForKeyframe => DropReason::WaitingForKeyframe,
        F::Padding => DropReason::Padding,
        F::TooLate => DropReason::TooLate,
    }
}

/// The largest RTP packet read from a publisher: a packet has to fit a path's MTU to
/// reach us, and a subscriber's path too to be worth forwarding.
const MAX_PACKET_BYTES: usize = 1500;

/// What a failed read from a publisher's track means.
#[derive(Debug, PartialEq, Eq)]
enum ReadFailure {
    /// The track (its receiver, its connection) is closed: stop reading.
    Closed,
    /// One bad packet, dropped (webrtc-rs consumed it); the next read goes on.
    Dropped(DropReason),
}

fn read_failure(e: &webrtc::Error) -> ReadFailure {
    use webrtc::util::Error as UtilError;
    use webrtc::Error as E;
    let util = match e {
        E::Util(u) => Some(u),
        E::Interceptor(webrtc::interceptor::Error::Util(u)) => Some(u),
        E::Srtp(webrtc::srtp::Error::Util(u)) => Some(u),
        E::Interceptor(webrtc::interceptor::Error::Srtp(webrtc::srtp::Error::Util(u))) => Some(u),
        _ => None,
    };
    match (e, util) {
        (_, Some(UtilError::ErrBufferShort)) => ReadFailure::Dropped(DropReason::Oversized),
        // A payload type no codec of the connection has.
        (E::ErrCodecNotFound, _) => ReadFailure::Dropped(DropReason::UnknownPayloadType),
        (E::Rtp(_) | E::Interceptor(webrtc::interceptor::Error::Rtp(_)), _) => {
            ReadFailure::Dropped(DropReason::Malformed)
        }
        _ => ReadFailure::Closed,
    }
}

/// The frame size a VP8 keyframe declares (RFC 6386 9.1): after the 3-byte frame tag, the
/// start code 9d 01 2a, then 14-bit width and height.
fn vp8_frame_size(frame: &[u8]) -> Option<(u32, u32)> {
    if frame.len() < 10 || frame[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let width = u16::from_le_bytes([frame[6], frame[7]]) & 0x3fff;
    let height = u16::from_le_bytes([frame[8], frame[9]]) & 0x3fff;
    (width > 0 && height > 0).then_some((width as u32, height as u32))
}

/// Sends throttled PLIs to the publisher, per layer (each layer is its own SSRC).
async fn request_keyframes(
    pc: Weak<RTCPeerConnection>,
    ssrcs: Arc<[AtomicU32; MAX_LAYERS]>,
    mut requests: mpsc::Receiver<Layer>,
    interval: Duration,
    stats: Arc<MediaStats>,
) {
    let mut throttles: [KeyframeThrottle; MAX_LAYERS] =
        std::array::from_fn(|_| KeyframeThrottle::new(interval));
    let mut due: [Option<Instant>; MAX_LAYERS] = [None; MAX_LAYERS];
    loop {
        let next_due = due.iter().flatten().min().copied();
        let to_send: Vec<Layer> = tokio::select! {
            request = requests.recv() => match request {
                None => return,
                Some(layer) => match throttles[layer as usize].request(Instant::now().into_std()) {
                    KeyframeDecision::SendNow => vec![layer],
                    KeyframeDecision::Deferred(at) => {
                        due[layer as usize] = Some(Instant::from_std(at));
                        vec![]
                    }
                },
            },
            _ = tokio::time::sleep_until(next_due.unwrap_or_else(Instant::now)), if next_due.is_some() => {
                let now = Instant::now();
                (0..MAX_LAYERS as Layer)
                    .filter(|&l| {
                        let is_due = due[l as usize].is_some_and(|t| t <= now);
                        if is_due {
                            due[l as usize] = None;
                        }
                        is_due && throttles[l as usize].poll(now.into_std())
                    })
                    .collect()
            }
        };
        if to_send.is_empty() {
            continue;
        }
        let Some(pc) = pc.upgrade() else { return };
        for layer in to_send {
            let media_ssrc = ssrcs[layer as usize].load(Ordering::Relaxed);
            if media_ssrc == 0 {
                continue;
            }
            let pli = PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc,
            };
            match pc.write_rtcp(&[Box::new(pli)]).await {
                Ok(_) => {
                    stats.keyframe_requests_sent.add(KeyframeRequest::Pli);
                }
                Err(e) => tracing::debug!(error = %e, "sending PLI"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_closed_track_ends_the_read_loop() {
        use webrtc::util::Error as UtilError;
        let cases = [
            (
                webrtc::Error::Util(UtilError::ErrBufferShort),
                ReadFailure::Dropped(DropReason::Oversized),
            ),
            (
                webrtc::Error::Interceptor(webrtc::interceptor::Error::Util(
                    UtilError::ErrBufferShort,
                )),
                ReadFailure::Dropped(DropReason::Oversized),
            ),
            (
                webrtc::Error::ErrCodecNotFound,
                ReadFailure::Dropped(DropReason::UnknownPayloadType),
            ),
            (
                webrtc::Error::Rtp(webrtc::rtp::Error::ErrHeaderSizeInsufficient),
                ReadFailure::Dropped(DropReason::Malformed),
            ),
            (webrtc::Error::ErrClosedPipe, ReadFailure::Closed),
            (
                webrtc::Error::Util(UtilError::ErrBufferClosed),
                ReadFailure::Closed,
            ),
            (webrtc::Error::ErrRTPReceiverNil, ReadFailure::Closed),
        ];
        for (error, expected) in cases {
            assert_eq!(read_failure(&error), expected, "{error}");
        }
    }

    #[test]
    fn vp8_keyframe_size() {
        // Frame tag (3 bytes), start code, 1280 x 720 (scale bits set, masked off).
        let frame = [0x50, 0x2a, 0x01, 0x9d, 0x01, 0x2a, 0x00, 0x45, 0xd0, 0x02];
        assert_eq!(vp8_frame_size(&frame), Some((1280, 720)));
        assert_eq!(vp8_frame_size(&frame[..9]), None);
        assert_eq!(vp8_frame_size(&[0; 10]), None);
    }
}
