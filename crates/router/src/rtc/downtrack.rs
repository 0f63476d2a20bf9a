//! One published track as sent to one subscriber: a [`TrackLocal`] of our own that learns
//! the subscriber's SSRC, payload type and header-extension ids when its answer binds it,
//! and a [`DownSink`] that turns each forwarding decision into that subscriber's packet,
//! sealed for its connection's [`Egress`]. The uptrack's reader does that inline for every
//! subscriber and sends them all in batches: nobody waits for anybody else, since a UDP
//! send does not wait for its receiver.

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use rustix::net::SocketAddrAny;
use tokio::task::JoinHandle;
use webrtc::rtcp::packet::Packet as RtcpPacket;
use webrtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtcp::receiver_report::ReceiverReport;
use webrtc::rtcp::sender_report::SenderReport;
use webrtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use webrtc::rtp::header::Header;
use webrtc::rtp_transceiver::rtp_codec::{
    RTCRtpCodecCapability, RTCRtpCodecParameters, RTPCodecType,
};
use webrtc::rtp_transceiver::rtp_sender::RTCRtpSender;
use webrtc::track::track_local::{TrackLocal, TrackLocalContext};
use webrtc::util::{Marshal, MarshalSize};

use switchyard_stats::quality::ntp_time;
use switchyard_stats::{KeyframeRequest, Live, LiveGuard, MediaStats, ReceptionReport, ResendSkip};

use super::egress::{Accounting, Batch, Egress};
use super::uptrack::{LayerWish, UpPacket, UpTrack};
use crate::ids::ParticipantId;
use crate::media::sender_report::SenderReportState;
use crate::media::vp8;
use crate::track::{NackLimits, Outgoing};

const SDES_MID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

/// What the subscriber's answer negotiated for this track's packets.
#[derive(Clone, Debug, PartialEq)]
struct Negotiated {
    ssrc: u32,
    payload_type: u8,
    /// The subscriber's id for the mid header extension, and the mid.
    mid: Option<(u8, Bytes)>,
    /// The subscriber's id for the audio-level extension, if it accepted it.
    audio_level: Option<u8>,
    /// Where resends go when the subscriber negotiated RTX (RFC 4588) for our codec.
    rtx: Option<Rtx>,
}

/// A sender's retransmission stream: its own SSRC, payload type and sequence numbers, so a
/// resend never reuses the media stream's SRTP nonces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rtx {
    ssrc: u32,
    payload_type: u8,
}

/// The RTX payload type the subscriber negotiated for `payload_type` (`apt=`), if any.
fn rtx_payload_type(payload_type: u8, negotiated: &[RTCRtpCodecParameters]) -> Option<u8> {
    negotiated
        .iter()
        .filter(|c| c.capability.mime_type.eq_ignore_ascii_case("video/rtx"))
        .find(|c| {
            c.capability
                .sdp_fmtp_line
                .split(';')
                .filter_map(|p| p.trim().strip_prefix("apt="))
                .any(|apt| apt.trim().parse() == Ok(payload_type))
        })
        .map(|c| c.payload_type)
}

/// A per-subscriber local track: webrtc-rs binds it when the subscriber's answer arrives,
/// and that binding is what its [`DownSink`] writes by.
pub(crate) struct DownTrackLocal {
    id: String,
    stream_id: String,
    codec: RTCRtpCodecCapability,
    binding: Mutex<Option<Negotiated>>,
    /// Bumped on every bind and unbind, so the sink re-reads `binding` only when it
    /// changed instead of locking and cloning it for every packet.
    generation: AtomicU64,
}

impl DownTrackLocal {
    pub fn new(codec: RTCRtpCodecCapability, id: String, stream_id: String) -> Self {
        DownTrackLocal {
            id,
            stream_id,
            codec,
            binding: Mutex::new(None),
            generation: AtomicU64::new(0),
        }
    }

    fn set_binding(&self, binding: Option<Negotiated>) {
        *self.binding.lock().unwrap_or_else(|e| e.into_inner()) = binding;
        self.generation.fetch_add(1, Ordering::Release);
    }

    fn binding(&self) -> Option<Negotiated> {
        self.binding
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The SSRC the subscriber knows this track by, once bound.
    fn ssrc(&self) -> Option<u32> {
        self.binding
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|b| b.ssrc)
    }
}

/// The subscriber's payload type for our codec: same MIME type and, where the format
/// parameters tell incompatible streams apart (H.264 profiles, VP9 profiles), the same ones.
fn matching_codec(
    ours: &RTCRtpCodecCapability,
    theirs: &[RTCRtpCodecParameters],
) -> Option<RTCRtpCodecParameters> {
    let same_mime =
        |c: &&RTCRtpCodecParameters| c.capability.mime_type.eq_ignore_ascii_case(&ours.mime_type);
    theirs
        .iter()
        .filter(same_mime)
        .find(|c| c.capability.sdp_fmtp_line == ours.sdp_fmtp_line)
        .or_else(|| {
            let key = |fmtp: &str| -> Vec<String> {
                fmtp.split(';')
                    .map(str::trim)
                    .filter(|p| p.starts_with("profile-id") || p.starts_with("packetization-mode"))
                    .map(str::to_owned)
                    .chain(
                        fmtp.split(';')
                            .map(str::trim)
                            .filter_map(|p| p.strip_prefix("profile-level-id="))
                            .map(|v| v.get(..4).unwrap_or(v).to_ascii_lowercase()),
                    )
                    .collect()
            };
            let wanted = key(&ours.sdp_fmtp_line);
            let mut keyed: Vec<_> = theirs.iter().filter(same_mime).collect();
            keyed.sort_by_key(|c| key(&c.capability.sdp_fmtp_line) != wanted);
            keyed.into_iter().next()
        })
        .cloned()
}

#[async_trait::async_trait]
impl TrackLocal for DownTrackLocal {
    async fn bind(&self, t: &TrackLocalContext) -> webrtc::error::Result<RTCRtpCodecParameters> {
        let codec = matching_codec(&self.codec, t.codec_parameters())
            .ok_or(webrtc::Error::ErrUnsupportedCodec)?;
        let extension_id = |uri: &str| {
            t.header_extensions()
                .iter()
                .find(|e| e.uri == uri)
                .map(|e| e.id as u8)
        };
        let mid = extension_id(SDES_MID_URI)
            .zip(t.mid())
            .map(|(id, mid)| (id, Bytes::copy_from_slice(mid.as_bytes())));
        let rtx = t
            .rtx_ssrc()
            .zip(rtx_payload_type(codec.payload_type, t.codec_parameters()))
            .map(|(ssrc, payload_type)| Rtx { ssrc, payload_type });
        self.set_binding(Some(Negotiated {
            ssrc: t.ssrc(),
            payload_type: codec.payload_type,
            mid,
            audio_level: extension_id(AUDIO_LEVEL_URI),
            rtx,
        }));
        Ok(codec)
    }

    async fn unbind(&self, _t: &TrackLocalContext) -> webrtc::error::Result<()> {
        self.set_binding(None);
        Ok(())
    }

    fn id(&self) -> &str {
        &self.id
    }

    fn rid(&self) -> Option<&str> {
        None
    }

    fn stream_id(&self) -> &str {
        &self.stream_id
    }

    fn kind(&self) -> RTPCodecType {
        if self
            .codec
            .mime_type
            .to_ascii_lowercase()
            .starts_with("audio/")
        {
            RTPCodecType::Audio
        } else {
            RTPCodecType::Video
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// One subscriber's end of one track: what the uptrack's reader hands each forwarded
/// packet to. It writes the packet as this subscriber knows the track (its SSRC, payload
/// type, header-extension ids; sequence number and timestamp as the forwarder decided)
/// and seals it for the subscriber's connection.
pub(crate) struct DownSink {
    local: Arc<DownTrackLocal>,
    egress: Arc<Egress>,
    clock_rate: u32,
    state: Mutex<SinkState>,
    _live: LiveGuard,
}

struct SinkState {
    /// The binding as of `seen`; refreshed only when a bind or unbind bumped the generation.
    seen: u64,
    negotiated: Option<Negotiated>,
    /// The first output sequence number sent under the current binding. A resend of an
    /// earlier one would be written with other ids than its first send (the SRTP nonce
    /// would repeat with other bytes), so it is not sent.
    binding_start: Option<u64>,
    /// Reused from packet to packet: its extension list keeps its capacity.
    header: Header,
    report: SenderReportState,
    /// The RTX stream's next sequence number.
    rtx_seq: u16,
}

impl DownSink {
    fn new(
        local: Arc<DownTrackLocal>,
        egress: Arc<Egress>,
        clock_rate: u32,
        stats: &Arc<MediaStats>,
    ) -> Arc<DownSink> {
        let sink = Arc::new(DownSink {
            local,
            egress,
            clock_rate,
            state: Mutex::new(SinkState {
                seen: u64::MAX,
                negotiated: None,
                binding_start: None,
                header: Header::default(),
                report: SenderReportState::default(),
                rtx_seq: 0,
            }),
            _live: stats.live_guard(Live::DownTracks),
        });
        sink.egress.register(&sink);
        sink
    }

    /// Writes `out` as this subscriber's packet into `buffer`, sealed; returns where it
    /// goes and its payload size, or `None` if it cannot go yet (the subscriber has not
    /// answered, or its connection's DTLS is not up).
    pub(crate) fn seal(
        &self,
        out: &Outgoing<Arc<UpPacket>>,
        buffer: &mut Vec<u8>,
        now: SystemTime,
    ) -> Option<(SocketAddrAny, usize)> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let state = &mut *state;
        let generation = self.local.generation.load(Ordering::Acquire);
        if generation != state.seen {
            state.negotiated = self.local.binding();
            state.seen = generation;
            state.binding_start = None;
            // RFC 4588: the RTX stream starts at a random sequence number; its SSRC is one.
            state.rtx_seq = state
                .negotiated
                .as_ref()
                .and_then(|n| n.rtx)
                .map_or(0, |rtx| rtx.ssrc as u16);
        }
        let negotiated = state.negotiated.as_ref()?;
        if out.forward.resend {
            if state
                .binding_start
                .is_none_or(|start| out.forward.seq < start)
            {
                return None;
            }
        } else if state.binding_start.is_none() {
            state.binding_start = Some(out.forward.seq);
        }
        // A resend goes on the RTX stream where there is one (a fresh sequence number of its
        // own each time), else again under its own sequence number, byte for byte.
        let rtx = match (out.forward.resend, negotiated.rtx) {
            (true, Some(rtx)) => {
                let seq = state.rtx_seq;
                state.rtx_seq = seq.wrapping_add(1);
                Some((rtx, seq))
            }
            _ => None,
        };
        let payload_bytes = write_packet(&mut state.header, out, negotiated, rtx, buffer)?;
        let destination = self.egress.seal(buffer, &state.header)?;
        if rtx.is_none() {
            state
                .report
                .on_sent(state.header.timestamp, payload_bytes, now);
        }
        Some((destination, payload_bytes))
    }

    /// This stream's Sender Report at `now`, once it is bound and has sent something.
    pub(crate) fn sender_report(&self, now: SystemTime) -> Option<SenderReport> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let ssrc = state.negotiated.as_ref()?.ssrc;
        let fields = state.report.report(self.clock_rate, now)?;
        Some(SenderReport {
            ssrc,
            ntp_time: ntp_time(fields.ntp_time),
            rtp_time: fields.rtp_time,
            packet_count: fields.packet_count,
            octet_count: fields.octet_count,
            ..Default::default()
        })
    }
}

/// How a subscriber's NACKs are answered (the per-second budget is its connection's, in
/// its [`Egress`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct NackPolicy {
    /// Sequence numbers looked at per NACK.
    pub max_per_request: u32,
    /// A packet resent less than this ago is not resent again.
    pub resend_interval: Duration,
}

pub(crate) struct DownTrack {
    pub uptrack: Arc<UpTrack>,
    pub sender: Arc<RTCRtpSender>,
    sink: Arc<DownSink>,
    /// Whether the uptrack forwards to the sink yet (it does once the answer bound it).
    active: bool,
    /// The subscriber's latest `update_subscription` while not yet active: applied when
    /// forwarding starts, so a tile size sent before the answer is not lost.
    pending_wish: Option<LayerWish>,
    rtcp_reader: JoinHandle<()>,
}

impl DownTrack {
    /// Prepares forwarding `uptrack` to `subscriber`: the caller has added `local` to the
    /// subscriber's connection, whose way out is `egress`, and got `sender` back. Nothing
    /// flows until [`Self::activate`].
    pub fn start(
        uptrack: Arc<UpTrack>,
        subscriber: ParticipantId,
        local: Arc<DownTrackLocal>,
        sender: Arc<RTCRtpSender>,
        egress: Arc<Egress>,
        stats: Arc<MediaStats>,
        nacks: NackPolicy,
    ) -> DownTrack {
        let sink = DownSink::new(
            local.clone(),
            egress.clone(),
            uptrack.codec.clock_rate,
            &stats,
        );
        let rtcp_reader = tokio::spawn(read_subscriber_rtcp(
            sender.clone(),
            local,
            Arc::downgrade(&uptrack),
            subscriber.clone(),
            egress.clone(),
            nacks,
            stats,
        ));
        DownTrack {
            uptrack,
            sender,
            sink,
            active: false,
            pending_wish: None,
            rtcp_reader,
        }
    }

    /// The subscriber's answer bound the sender: start forwarding. The forwarder begins
    /// at a keyframe, and asks the publisher for one, so what flows first is decodable.
    pub fn activate(&mut self, subscriber: &ParticipantId) {
        if !self.active {
            self.active = true;
            let wish = self.pending_wish.take();
            self.uptrack
                .subscribe(subscriber.clone(), self.sink.clone(), wish);
        }
    }

    /// The subscriber's `update_subscription`: applied now if forwarding has started,
    /// else kept for [`Self::activate`].
    pub fn update(&mut self, subscriber: &ParticipantId, wish: LayerWish) {
        if !self.active {
            self.pending_wish = Some(wish);
        } else {
            // Active means subscribed; the uptrack only says no for an unknown subscriber.
            self.uptrack.set_wish(subscriber, wish);
        }
    }

    pub fn stop(self, subscriber: &ParticipantId) {
        self.uptrack.unsubscribe(subscriber);
        self.rtcp_reader.abort();
    }
}

/// Writes the packet `out` as the subscriber negotiated it (`to`) into `buffer`, reusing
/// `header`: RTP header with the subscriber's ids, then the payload, its VP8 descriptor
/// rewritten in place. With `rtx` (the stream and its sequence number), as an RTX packet
/// (RFC 4588 4): the RTX stream's header, the original sequence number, then the same
/// payload. Returns the payload size, `None` if the header cannot be written.
fn write_packet(
    header: &mut Header,
    out: &Outgoing<Arc<UpPacket>>,
    to: &Negotiated,
    rtx: Option<(Rtx, u16)>,
    buffer: &mut Vec<u8>,
) -> Option<usize> {
    let source = &out.packet.rtp;
    header.version = 2;
    // webrtc-rs took any padding off the payload when it parsed the packet.
    header.padding = false;
    header.marker = source.header.marker;
    header.timestamp = out.forward.ts as u32;
    let original_seq = out.forward.seq as u16;
    (header.ssrc, header.payload_type, header.sequence_number) = match rtx {
        Some((rtx, seq)) => (rtx.ssrc, rtx.payload_type, seq),
        None => (to.ssrc, to.payload_type, original_seq),
    };
    // Almost always both empty: skip the slice comparison, a libc call per copy.
    if !(header.csrc.is_empty() && source.header.csrc.is_empty()) {
        header.csrc.clone_from(&source.header.csrc);
    }
    // Only the subscriber's own extension ids: the publisher's header is never copied.
    header.extension = false;
    header.extension_profile = 0;
    header.extensions.clear();
    header.extensions_padding = 0;
    if let Some((id, mid)) = &to.mid {
        let _ = header.set_extension(*id, mid.clone());
    }
    if let (Some(id), Some(level)) = (to.audio_level, out.packet.audio_level) {
        let byte = &AUDIO_LEVEL_BYTES[level as usize..level as usize + 1];
        let _ = header.set_extension(id, Bytes::from_static(byte));
    }
    let header_len = header.marshal_size();
    buffer.clear();
    buffer.resize(header_len, 0);
    header.marshal_to(&mut buffer[..]).ok()?;
    if rtx.is_some() {
        buffer.extend_from_slice(&original_seq.to_be_bytes());
    }
    let payload_start = buffer.len();
    buffer.extend_from_slice(&source.payload);
    if let (Some(rewrite), Some(descriptor)) = (out.forward.vp8, &out.vp8) {
        vp8::rewrite(
            &mut buffer[payload_start..],
            descriptor,
            rewrite.picture_id,
            rewrite.tl0picidx,
        );
    }
    Some(source.payload.len())
}

/// RFC 6464 audio-level bytes, so the extension's payload never needs an allocation.
static AUDIO_LEVEL_BYTES: [u8; 256] = {
    let mut bytes = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        bytes[i] = i as u8;
        i += 1;
    }
    bytes
};

/// Drains the subscriber's RTCP for this sender: NACKs are answered from the uptrack's
/// per-layer cache (they never reach the publisher); PLI and FIR become throttled keyframe
/// requests for the layer this subscriber receives; report blocks feed the reception
/// quality histograms. Reports are not relayed: each leg terminates its own RTCP.
async fn read_subscriber_rtcp(
    sender: Arc<RTCRtpSender>,
    local: Arc<DownTrackLocal>,
    uptrack: Weak<UpTrack>,
    subscriber: ParticipantId,
    egress: Arc<Egress>,
    nacks: NackPolicy,
    stats: Arc<MediaStats>,
) {
    let mut batch = Batch::new(egress.socket().clone());
    let mut resends = Vec::new();
    while let Ok((packets, _)) = sender.read_rtcp().await {
        let Some(up) = uptrack.upgrade() else { return };
        // Nothing is sent before the answer binds the track, so nothing before it is
        // feedback about this stream.
        let Some(ssrc) = local.ssrc() else { continue };
        // The clock our Sender Reports are stamped with (egress.rs), for the RTT.
        let arrival = SystemTime::now();
        for packet in &packets {
            match feedback(packet.as_ref(), ssrc) {
                Some(Feedback::KeyframeRequest(request)) => {
                    stats.keyframe_requests_received.add(request);
                    up.request_keyframe_for(&subscriber);
                }
                Some(Feedback::Nack(nack)) => {
                    // Bounded work whatever the NACK's length: at most `max_per_request`
                    // sequence numbers are looked at, and the connection's per-second
                    // budget bounds how many are resent.
                    let requested: u64 = nack
                        .nacks
                        .iter()
                        .map(|pair| 1 + u64::from(pair.lost_packets.count_ones()))
                        .sum();
                    stats.nacks_received.fetch_add(1, Ordering::Relaxed);
                    stats.nacked_packets.fetch_add(requested, Ordering::Relaxed);
                    let examined = requested.min(u64::from(nacks.max_per_request)) as u32;
                    let granted =
                        egress.take_resends(tokio::time::Instant::now().into_std(), examined);
                    let limits = NackLimits {
                        max_examined: examined,
                        max_resends: granted,
                        min_interval: nacks.resend_interval,
                    };
                    let outcome = up.on_nack(&subscriber, nacked(nack), limits, &mut resends);
                    egress.refund_resends(granted - outcome.resent);
                    stats
                        .retransmissions_sent
                        .fetch_add(u64::from(outcome.resent), Ordering::Relaxed);
                    let skipped = &stats.resends_skipped;
                    skipped.add_n(ResendSkip::Recent, outcome.recent.into());
                    skipped.add_n(ResendSkip::Unavailable, outcome.unavailable.into());
                    skipped.add_n(
                        ResendSkip::OverLimit,
                        u64::from(outcome.over_limit) + (requested - u64::from(examined)),
                    );
                    let to = Accounting {
                        kind: up.media_kind(),
                        stats: &stats,
                        traffic: &up.traffic,
                    };
                    batch.send(&mut resends, &to).await;
                }
                Some(Feedback::Report(report)) => stats.quality.observe_report(
                    up.media_kind(),
                    up.codec.clock_rate,
                    arrival,
                    &report,
                ),
                None => {}
            }
        }
    }
}

/// The sequence numbers a NACK names, in order, without collecting them (RFC 4585
/// 6.2.1: each pair is a packet id and a bitmask of the 16 after it).
fn nacked(nack: &TransportLayerNack) -> impl Iterator<Item = u16> + '_ {
    nack.nacks.iter().flat_map(|pair| {
        let bits = pair.lost_packets;
        std::iter::once(pair.packet_id).chain(
            (0..16u16)
                .filter(move |i| bits & (1 << i) != 0)
                .map(move |i| pair.packet_id.wrapping_add(i + 1)),
        )
    })
}

/// What an RTCP packet from the subscriber says about one of the streams we send it.
#[derive(Debug, PartialEq)]
enum Feedback<'a> {
    KeyframeRequest(KeyframeRequest),
    Nack(&'a TransportLayerNack),
    Report(ReceptionReport),
}

/// What `packet` says about the stream sent with `ssrc`, if anything. webrtc-rs hands a
/// whole compound packet to every sender whose SSRC any part of it names (an RR with a
/// block per stream, followed by a NACK for one of them, reaches them all), so each
/// downtrack must pick out what concerns its own stream, or a NACK for a video track
/// would resend audio packets with the same sequence numbers.
fn feedback(packet: &(dyn RtcpPacket + Send + Sync), ssrc: u32) -> Option<Feedback<'_>> {
    let any = packet.as_any();
    if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
        (pli.media_ssrc == ssrc).then_some(Feedback::KeyframeRequest(KeyframeRequest::Pli))
    } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
        // RFC 5104 4.3.1: a FIR names its streams in its entries; the media SSRC is
        // unused (0), though some senders set it.
        (fir.media_ssrc == ssrc || fir.fir.iter().any(|entry| entry.ssrc == ssrc))
            .then_some(Feedback::KeyframeRequest(KeyframeRequest::Fir))
    } else if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
        (nack.media_ssrc == ssrc).then_some(Feedback::Nack(nack))
    } else {
        let reports = if let Some(rr) = any.downcast_ref::<ReceiverReport>() {
            &rr.reports
        } else if let Some(sr) = any.downcast_ref::<SenderReport>() {
            &sr.reports
        } else {
            return None;
        };
        reports
            .iter()
            .find(|block| block.ssrc == ssrc)
            .map(|block| {
                Feedback::Report(ReceptionReport {
                    fraction_lost: block.fraction_lost,
                    jitter: block.jitter,
                    last_sender_report: block.last_sender_report,
                    delay: block.delay,
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use webrtc::rtp::packet::Packet;

    fn codec(mime: &str, fmtp: &str, pt: u8) -> RTCRtpCodecParameters {
        RTCRtpCodecParameters {
            capability: RTCRtpCodecCapability {
                mime_type: mime.into(),
                clock_rate: 90000,
                sdp_fmtp_line: fmtp.into(),
                ..Default::default()
            },
            payload_type: pt,
            ..Default::default()
        }
    }

    fn outgoing(
        payload: &'static [u8],
        audio_level: Option<u8>,
        vp8: bool,
    ) -> Outgoing<Arc<UpPacket>> {
        let rtp = Packet {
            header: webrtc::rtp::header::Header {
                version: 2,
                marker: true,
                payload_type: 100,
                sequence_number: 1,
                timestamp: 1,
                ssrc: 0xdead,
                ..Default::default()
            },
            payload: Bytes::from_static(payload),
        };
        let descriptor = vp8.then(|| vp8::parse(payload).unwrap());
        Outgoing {
            packet: Arc::new(UpPacket {
                rtp,
                audio_level,
                received_at: std::time::Instant::now(),
            }),
            forward: crate::media::forwarder::Forward {
                seq: 0x1_0005,
                ts: 0x1_0000_0007,
                vp8: vp8.then_some(vp8::Vp8Rewrite {
                    picture_id: Some(0x1234),
                    tl0picidx: None,
                }),
                switched: false,
                resend: false,
            },
            vp8: descriptor,
        }
    }

    fn negotiated(audio_level: Option<u8>) -> Negotiated {
        Negotiated {
            ssrc: 42,
            payload_type: 111,
            mid: Some((1, Bytes::from_static(b"3"))),
            audio_level,
            rtx: None,
        }
    }

    /// Writes `out` for `to` with a reused header and buffer, and parses what was written.
    fn on_the_wire(
        header: &mut Header,
        buffer: &mut Vec<u8>,
        out: &Outgoing<Arc<UpPacket>>,
        to: &Negotiated,
    ) -> Packet {
        use webrtc::util::Unmarshal;
        let payload_bytes = write_packet(header, out, to, None, buffer).unwrap();
        assert_eq!(payload_bytes, out.packet.rtp.payload.len());
        Packet::unmarshal(&mut &buffer[..]).unwrap()
    }

    #[test]
    fn audio_gets_the_subscribers_ids_and_keeps_its_level() {
        let (mut header, mut buffer) = (Header::default(), Vec::new());
        let out = outgoing(&[1, 2, 3], Some(0x80 | 30), false);
        let sent = on_the_wire(&mut header, &mut buffer, &out, &negotiated(Some(5)));
        assert_eq!(sent.header.sequence_number, 5, "truncated extended seq");
        assert_eq!(sent.header.timestamp, 7, "truncated extended timestamp");
        assert_eq!(sent.header.ssrc, 42);
        assert_eq!(sent.header.payload_type, 111);
        assert!(sent.header.marker);
        assert_eq!(sent.header.get_extension(1), Some(Bytes::from_static(b"3")));
        assert_eq!(
            sent.header.get_extension(5),
            Some(Bytes::from_static(&[0x80 | 30]))
        );
        assert_eq!(&sent.payload[..], &[1, 2, 3]);

        // A subscriber that did not negotiate audio levels gets none; nothing stale stays.
        let sent = on_the_wire(&mut header, &mut buffer, &out, &negotiated(None));
        assert_eq!(sent.header.extensions.len(), 1);
        assert_eq!(sent.header.get_extension(5), None);
        assert_eq!(&sent.payload[..], &[1, 2, 3]);
    }

    #[test]
    fn vp8_descriptor_is_rewritten_in_the_output_buffer_only() {
        // X=1, S=1; I=1; 15-bit PictureID 0x0102; then payload bytes.
        static PAYLOAD: [u8; 8] = [0x90, 0x80, 0x81, 0x02, 0xAA, 0xBB, 0xCC, 0xDD];
        let out = outgoing(&PAYLOAD, None, true);
        let (mut header, mut buffer) = (Header::default(), Vec::with_capacity(1500));
        let sent = on_the_wire(&mut header, &mut buffer, &out, &negotiated(None));
        assert_eq!(
            &sent.payload[..],
            &[0x90, 0x80, 0x80 | 0x12, 0x34, 0xAA, 0xBB, 0xCC, 0xDD]
        );
        assert_eq!(
            &out.packet.rtp.payload[..],
            &PAYLOAD,
            "the shared packet is untouched"
        );
        let first_ptr = buffer.as_ptr();
        on_the_wire(&mut header, &mut buffer, &out, &negotiated(None));
        assert_eq!(
            buffer.as_ptr(),
            first_ptr,
            "the buffer is reused, not reallocated"
        );
    }

    /// A resend on RTX (RFC 4588 4): the RTX stream's SSRC, payload type and sequence
    /// number, then the original sequence number, then the payload exactly as first sent
    /// (VP8 descriptor rewritten the same way).
    #[test]
    fn a_resend_on_rtx_carries_the_original_packet() {
        use webrtc::util::Unmarshal;
        static PAYLOAD: [u8; 8] = [0x90, 0x80, 0x81, 0x02, 0xAA, 0xBB, 0xCC, 0xDD];
        let out = outgoing(&PAYLOAD, None, true);
        let to = Negotiated {
            rtx: Some(Rtx {
                ssrc: 4242,
                payload_type: 97,
            }),
            ..negotiated(None)
        };
        let (mut header, mut buffer) = (Header::default(), Vec::new());
        let first = on_the_wire(&mut header, &mut buffer, &out, &to);
        let rtx = Rtx {
            ssrc: 4242,
            payload_type: 97,
        };
        let payload_bytes = write_packet(&mut header, &out, &to, Some((rtx, 900)), &mut buffer);
        assert_eq!(payload_bytes, Some(PAYLOAD.len()));
        let resent = Packet::unmarshal(&mut &buffer[..]).unwrap();
        assert_eq!(
            (
                resent.header.ssrc,
                resent.header.payload_type,
                resent.header.sequence_number
            ),
            (4242, 97, 900)
        );
        assert_eq!(resent.header.timestamp, first.header.timestamp);
        assert_eq!(resent.header.marker, first.header.marker);
        assert_eq!(
            &resent.payload[..2],
            &first.header.sequence_number.to_be_bytes()
        );
        assert_eq!(
            &resent.payload[2..],
            &first.payload[..],
            "the same payload, rewritten alike"
        );
    }

    #[test]
    fn the_rtx_payload_type_is_the_one_whose_apt_names_ours() {
        let rtx = |pt: u8, fmtp: &str| RTCRtpCodecParameters {
            capability: RTCRtpCodecCapability {
                mime_type: "video/rtx".into(),
                clock_rate: 90000,
                sdp_fmtp_line: fmtp.into(),
                ..Default::default()
            },
            payload_type: pt,
            ..Default::default()
        };
        let theirs = [
            codec("video/VP8", "", 96),
            rtx(97, "apt=96"),
            codec("video/VP9", "profile-id=0", 98),
            rtx(99, "apt=98;rtx-time=3000"),
        ];
        assert_eq!(rtx_payload_type(96, &theirs), Some(97));
        assert_eq!(rtx_payload_type(98, &theirs), Some(99));
        assert_eq!(rtx_payload_type(102, &theirs), None);
    }

    /// Chrome's packets carry one-byte extensions with padding: none of them, and none of
    /// their padding, reaches the subscriber, whose packet carries only its own ids.
    #[test]
    fn publishers_extensions_are_not_forwarded() {
        use webrtc::util::{Marshal, Unmarshal};
        let mut chrome = Packet::default();
        chrome.header.version = 2;
        chrome.header.payload_type = 96;
        chrome
            .header
            .set_extension(3, Bytes::from_static(&[1, 2]))
            .unwrap();
        chrome.payload = Bytes::from_static(&[0xAA; 100]);
        let wire = chrome.marshal().unwrap();
        let parsed = Packet::unmarshal(&mut &wire[..]).unwrap();
        assert!(
            parsed.header.extensions_padding > 0,
            "the case that broke: padded extensions"
        );
        let mut out = outgoing(&[0xAA; 100], None, false);
        Arc::get_mut(&mut out.packet).unwrap().rtp = parsed;
        let (mut header, mut buffer) = (Header::default(), Vec::new());
        let sent = on_the_wire(&mut header, &mut buffer, &out, &negotiated(None));
        assert_eq!(sent.header.get_extension(3), None);
        assert_eq!(sent.header.get_extension(1), Some(Bytes::from_static(b"3")));
        assert_eq!(sent.payload, chrome.payload);
    }

    /// A publisher's padded packet (webrtc-rs strips the padding when it parses) goes out
    /// without the padding bit, or the receiver would cut the payload's last bytes.
    #[test]
    fn padding_bit_is_not_forwarded() {
        let mut out = outgoing(&[1, 2, 3, 4, 5], None, false);
        Arc::get_mut(&mut out.packet).unwrap().rtp.header.padding = true;
        let (mut header, mut buffer) = (Header::default(), Vec::new());
        let sent = on_the_wire(&mut header, &mut buffer, &out, &negotiated(None));
        assert!(!sent.header.padding);
        assert_eq!(&sent.payload[..], &[1, 2, 3, 4, 5]);
    }

    /// A compound packet as Chrome sends it reaches every sender it names: each takes
    /// only what is about its own SSRC.
    #[test]
    fn feedback_is_picked_per_stream_from_a_compound_packet() {
        use webrtc::rtcp::payload_feedbacks::full_intra_request::FirEntry;
        use webrtc::rtcp::reception_report::ReceptionReport as Block;
        use webrtc::rtcp::transport_feedbacks::transport_layer_nack::NackPair;

        const AUDIO: u32 = 1111;
        const VIDEO: u32 = 2222;
        let block = |ssrc, fraction_lost| Block {
            ssrc,
            fraction_lost,
            jitter: 480,
            last_sender_report: 0x1234_5678,
            delay: 655,
            ..Default::default()
        };
        let compound: Vec<Box<dyn RtcpPacket + Send + Sync>> = vec![
            Box::new(ReceiverReport {
                ssrc: 1,
                reports: vec![block(AUDIO, 0), block(VIDEO, 26)],
                ..Default::default()
            }),
            Box::new(TransportLayerNack {
                sender_ssrc: 1,
                media_ssrc: VIDEO,
                nacks: vec![NackPair {
                    packet_id: 77,
                    lost_packets: 0,
                }],
            }),
            Box::new(PictureLossIndication {
                sender_ssrc: 1,
                media_ssrc: VIDEO,
            }),
            Box::new(FullIntraRequest {
                sender_ssrc: 1,
                media_ssrc: 0,
                fir: vec![FirEntry {
                    ssrc: VIDEO,
                    sequence_number: 1,
                }],
            }),
        ];
        let seen = |ssrc| -> Vec<_> {
            compound
                .iter()
                .filter_map(|p| feedback(p.as_ref(), ssrc))
                .collect()
        };
        let report = |fraction_lost| {
            Feedback::Report(ReceptionReport {
                fraction_lost,
                jitter: 480,
                last_sender_report: 0x1234_5678,
                delay: 655,
            })
        };
        assert_eq!(seen(AUDIO), vec![report(0)]);
        let video = seen(VIDEO);
        assert_eq!(video.len(), 4, "{video:?}");
        assert_eq!(video[0], report(26));
        assert!(matches!(video[1], Feedback::Nack(n) if n.nacks[0].packet_id == 77));
        assert_eq!(video[2], Feedback::KeyframeRequest(KeyframeRequest::Pli));
        assert_eq!(video[3], Feedback::KeyframeRequest(KeyframeRequest::Fir));
        assert!(seen(3333).is_empty());
    }

    #[test]
    fn codec_matching() {
        let theirs = [
            codec("video/VP8", "", 96),
            codec(
                "video/H264",
                "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f",
                102,
            ),
            codec(
                "video/H264",
                "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
                108,
            ),
            codec("video/VP9", "profile-id=0", 98),
        ];
        let find = |mime: &str, fmtp: &str| {
            matching_codec(&codec(mime, fmtp, 0).capability, &theirs).map(|c| c.payload_type)
        };
        assert_eq!(find("video/vp8", ""), Some(96));
        assert_eq!(
            find(
                "video/H264",
                "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
            ),
            Some(108)
        );
        assert_eq!(
            find("video/H264", "packetization-mode=1;profile-level-id=42e034"),
            Some(108),
            "same profile, other level"
        );
        assert_eq!(find("video/VP9", "profile-id=0"), Some(98));
        assert_eq!(find("video/AV1", ""), None);
    }
}
