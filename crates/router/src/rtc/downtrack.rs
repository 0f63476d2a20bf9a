//! One published track as sent to one subscriber: a [`TrackLocal`] of our own (one
//! binding, the subscriber's SSRC, payload type and header-extension ids), fed through a
//! bounded queue by the uptrack's forwarding decisions and drained by its own writer task,
//! so a slow or stalled subscriber delays nobody else.

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use webrtc::rtcp::packet::Packet as RtcpPacket;
use webrtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtcp::receiver_report::ReceiverReport;
use webrtc::rtcp::sender_report::SenderReport;
use webrtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use webrtc::rtp::packet::Packet;
use webrtc::rtp_transceiver::rtp_codec::{
    RTCRtpCodecCapability, RTCRtpCodecParameters, RTPCodecType,
};
use webrtc::rtp_transceiver::rtp_sender::RTCRtpSender;
use webrtc::track::track_local::{TrackLocal, TrackLocalContext, TrackLocalWriter};

use switchyard_stats::rate::TrackTraffic;
use switchyard_stats::{DropReason, KeyframeRequest, Live, MediaKind, MediaStats, ReceptionReport};

use super::uptrack::{LayerWish, UpPacket, UpTrack};
use crate::ids::ParticipantId;
use crate::media::vp8;
use crate::track::Outgoing;

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
}

/// Where and how this track's packets go once the subscriber's answer bound it.
#[derive(Clone)]
struct Binding {
    negotiated: Negotiated,
    writer: Arc<dyn TrackLocalWriter + Send + Sync>,
}

/// A per-subscriber local track: it writes exactly the packets its forwarder chose,
/// rewritten, to its one binding.
pub(crate) struct DownTrackLocal {
    id: String,
    stream_id: String,
    codec: RTCRtpCodecCapability,
    binding: Mutex<Option<Binding>>,
    /// Bumped on every bind and unbind, so the writer re-reads `binding` only when it
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

    fn set_binding(&self, binding: Option<Binding>) {
        *self.binding.lock().unwrap_or_else(|e| e.into_inner()) = binding;
        self.generation.fetch_add(1, Ordering::Release);
    }

    fn binding(&self) -> Option<Binding> {
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
            .map(|b| b.negotiated.ssrc)
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
        self.set_binding(Some(Binding {
            negotiated: Negotiated {
                ssrc: t.ssrc(),
                payload_type: codec.payload_type,
                mid,
                audio_level: extension_id(AUDIO_LEVEL_URI),
            },
            writer: t.write_stream(),
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

pub(crate) struct DownTrack {
    pub uptrack: Arc<UpTrack>,
    pub sender: Arc<RTCRtpSender>,
    /// Handed to the uptrack once the subscriber's answer bound the sender.
    queue: Option<mpsc::Sender<Outgoing<Arc<UpPacket>>>>,
    /// The subscriber's latest `update_subscription` while not yet active: applied when
    /// forwarding starts, so a tile size sent before the answer is not lost.
    pending_wish: Option<LayerWish>,
    writer: JoinHandle<()>,
    rtcp_reader: JoinHandle<()>,
}

impl DownTrack {
    /// Prepares forwarding `uptrack` to `subscriber`: the caller has added `local` to the
    /// subscriber's connection and got `sender` back. Nothing flows until [`Self::activate`].
    pub fn start(
        uptrack: Arc<UpTrack>,
        subscriber: ParticipantId,
        local: Arc<DownTrackLocal>,
        sender: Arc<RTCRtpSender>,
        queue_packets: usize,
        stats: Arc<MediaStats>,
    ) -> DownTrack {
        let (tx, rx) = mpsc::channel(queue_packets.max(1));
        let writer = tokio::spawn(write_packets(
            local.clone(),
            rx,
            uptrack.media_kind(),
            stats.clone(),
            uptrack.traffic.clone(),
        ));
        let rtcp_reader = tokio::spawn(read_subscriber_rtcp(
            sender.clone(),
            local,
            Arc::downgrade(&uptrack),
            subscriber.clone(),
            stats,
        ));
        DownTrack {
            uptrack,
            sender,
            queue: Some(tx),
            pending_wish: None,
            writer,
            rtcp_reader,
        }
    }

    /// The subscriber's answer bound the sender: start forwarding. The forwarder begins
    /// at a keyframe, and asks the publisher for one, so what flows first is decodable.
    pub fn activate(&mut self, subscriber: &ParticipantId) {
        if let Some(queue) = self.queue.take() {
            let wish = self.pending_wish.take();
            self.uptrack.subscribe(subscriber.clone(), queue, wish);
        }
    }

    /// The subscriber's `update_subscription`: applied now if forwarding has started,
    /// else kept for [`Self::activate`].
    pub fn update(&mut self, subscriber: &ParticipantId, wish: LayerWish) {
        if self.queue.is_some() {
            self.pending_wish = Some(wish);
        } else {
            // Active means subscribed; the uptrack only says no for an unknown subscriber.
            self.uptrack.set_wish(subscriber, wish);
        }
    }

    pub fn stop(self, subscriber: &ParticipantId) {
        self.uptrack.unsubscribe(subscriber);
        self.writer.abort();
        self.rtcp_reader.abort();
    }
}

async fn write_packets(
    local: Arc<DownTrackLocal>,
    mut rx: mpsc::Receiver<Outgoing<Arc<UpPacket>>>,
    kind: MediaKind,
    stats: Arc<MediaStats>,
    traffic: Arc<TrackTraffic>,
) {
    // Counted while the writer task exists (aborting it drops the guard).
    let _live = stats.live_guard(Live::DownTracks);
    let mut rewriter = Rewriter::default();
    // The binding as of `seen`; refreshed only when a bind or unbind bumped the generation.
    let mut seen = u64::MAX;
    let mut current: Option<Binding> = None;
    while let Some(out) = rx.recv().await {
        let generation = local.generation.load(Ordering::Acquire);
        if generation != seen {
            current = local.binding();
            seen = generation;
        }
        let Some(binding) = &current else {
            // Not bound yet (the subscriber has not answered): nowhere to send it.
            stats.dropped.add(DropReason::WriteFailed);
            continue;
        };
        let packet = rewriter.rewrite(&out, &binding.negotiated);
        let bytes = packet.payload.len();
        let written = binding.writer.write_rtp(packet).await;
        rewriter.release();
        match written {
            // webrtc-rs answers Ok(0) for a packet it did not send: the sender is paused,
            // or the connection's DTLS/SRTP is not up yet. Counting those as forwarded
            // would report media the subscriber never got.
            Ok(0) | Err(_) => stats.dropped.add(DropReason::WriteFailed),
            Ok(_) => {
                stats.forwarded[kind].add(bytes);
                traffic.add_sent(bytes);
                stats
                    .quality
                    .observe_forwarding_latency(kind, out.packet.received_at.elapsed());
            }
        }
    }
}

/// Turns a forwarded packet into the one this subscriber receives, reusing its buffers
/// from packet to packet: the header's extension list keeps its capacity, and a VP8
/// payload whose descriptor must change is copied into a buffer that is reclaimed once
/// the write is done. In steady state it allocates nothing.
#[derive(Default)]
struct Rewriter {
    packet: Packet,
    payload: BytesMut,
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

impl Rewriter {
    fn rewrite(&mut self, out: &Outgoing<Arc<UpPacket>>, to: &Negotiated) -> &Packet {
        let source = &out.packet.rtp;
        let header = &mut self.packet.header;
        header.version = source.header.version;
        header.padding = source.header.padding;
        header.marker = source.header.marker;
        header.payload_type = to.payload_type;
        header.sequence_number = out.forward.seq as u16;
        header.timestamp = out.forward.ts as u32;
        header.ssrc = to.ssrc;
        if header.csrc != source.header.csrc {
            header.csrc.clone_from(&source.header.csrc);
        }
        // The subscriber's own extension ids (the publisher's were stripped on receipt).
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
        self.packet.payload = match (out.forward.vp8, &out.vp8) {
            (Some(rewrite), Some(descriptor)) => {
                self.payload.clear();
                self.payload.extend_from_slice(&source.payload);
                vp8::rewrite(
                    &mut self.payload,
                    descriptor,
                    rewrite.picture_id,
                    rewrite.tl0picidx,
                );
                self.payload.split().freeze()
            }
            _ => source.payload.clone(),
        };
        &self.packet
    }

    /// Drops this packet's payload so the next VP8 rewrite can reclaim its buffer.
    fn release(&mut self) {
        self.packet.payload = Bytes::new();
    }
}

/// Drains the subscriber's RTCP for this sender: NACKs are answered from the uptrack's
/// per-layer cache (they never reach the publisher); PLI and FIR become throttled keyframe
/// requests for the layer this subscriber receives; report blocks feed the reception
/// quality histograms. Reports are not relayed: each leg terminates its own RTCP.
async fn read_subscriber_rtcp(
    sender: Arc<RTCRtpSender>,
    local: Arc<DownTrackLocal>,
    uptrack: Weak<UpTrack>,
    subscriber: ParticipantId,
    stats: Arc<MediaStats>,
) {
    let mut lost = Vec::new();
    while let Ok((packets, _)) = sender.read_rtcp().await {
        let Some(up) = uptrack.upgrade() else { return };
        // Nothing is sent before the answer binds the track, so nothing before it is
        // feedback about this stream.
        let Some(ssrc) = local.ssrc() else { continue };
        // The clock webrtc-rs stamps our Sender Reports with, for the RTT.
        let arrival = SystemTime::now();
        for packet in &packets {
            match feedback(packet.as_ref(), ssrc) {
                Some(Feedback::KeyframeRequest(request)) => {
                    stats.keyframe_requests_received.add(request);
                    up.request_keyframe_for(&subscriber);
                }
                Some(Feedback::Nack(nack)) => {
                    lost.clear();
                    for pair in &nack.nacks {
                        lost.extend(pair.packet_list());
                    }
                    stats.nacks_received.fetch_add(1, Ordering::Relaxed);
                    stats
                        .nacked_packets
                        .fetch_add(lost.len() as u64, Ordering::Relaxed);
                    up.on_nack(&subscriber, &lost);
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
        }
    }

    fn on_the_wire(packet: &Packet) -> Packet {
        use webrtc::util::{Marshal, Unmarshal};
        let wire = packet.marshal().unwrap();
        Packet::unmarshal(&mut &wire[..]).unwrap()
    }

    #[test]
    fn audio_gets_the_subscribers_ids_and_keeps_its_level() {
        let mut rewriter = Rewriter::default();
        let out = outgoing(&[1, 2, 3], Some(0x80 | 30), false);
        let sent = on_the_wire(rewriter.rewrite(&out, &negotiated(Some(5))));
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
        rewriter.release();
        let sent = on_the_wire(rewriter.rewrite(&out, &negotiated(None)));
        assert_eq!(sent.header.extensions.len(), 1);
        assert_eq!(sent.header.get_extension(5), None);
    }

    #[test]
    fn vp8_descriptor_is_rewritten_in_a_reused_buffer() {
        // X=1, S=1; I=1; 15-bit PictureID 0x0102; then payload bytes.
        static PAYLOAD: [u8; 8] = [0x90, 0x80, 0x81, 0x02, 0xAA, 0xBB, 0xCC, 0xDD];
        let out = outgoing(&PAYLOAD, None, true);
        let mut rewriter = Rewriter::default();
        let first = rewriter.rewrite(&out, &negotiated(None)).payload.clone();
        assert_eq!(
            &first[..],
            &[0x90, 0x80, 0x80 | 0x12, 0x34, 0xAA, 0xBB, 0xCC, 0xDD]
        );
        assert_eq!(
            &out.packet.rtp.payload[..],
            &PAYLOAD,
            "the shared packet is untouched"
        );
        let first_ptr = first.as_ptr();
        drop(first);
        rewriter.release();
        let second = rewriter.rewrite(&out, &negotiated(None)).payload.as_ptr();
        assert_eq!(
            second, first_ptr,
            "the buffer is reclaimed, not reallocated"
        );
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
