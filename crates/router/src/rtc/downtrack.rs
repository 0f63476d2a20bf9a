//! One published track as sent to one subscriber: a [`TrackLocal`] of our own (one
//! binding, the subscriber's SSRC, payload type and header-extension ids), fed through a
//! bounded queue by the uptrack's forwarding decisions and drained by its own writer task,
//! so a slow or stalled subscriber delays nobody else.

use std::any::Any;
use std::sync::{Arc, Mutex, Weak};

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use webrtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use webrtc::rtp::packet::Packet;
use webrtc::rtp_transceiver::rtp_codec::{
    RTCRtpCodecCapability, RTCRtpCodecParameters, RTPCodecType,
};
use webrtc::rtp_transceiver::rtp_sender::RTCRtpSender;
use webrtc::track::track_local::{TrackLocal, TrackLocalContext, TrackLocalWriter};

use switchyard_stats::{DropReason, Live, MediaStats};

use super::uptrack::{LayerWish, UpTrack};
use crate::ids::ParticipantId;
use crate::media::vp8;
use crate::track::Outgoing;

const SDES_MID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";

/// Where and how this track's packets go once the subscriber's answer bound it.
#[derive(Clone)]
struct Binding {
    ssrc: u32,
    payload_type: u8,
    writer: Arc<dyn TrackLocalWriter + Send + Sync>,
    /// The subscriber's id for the mid header extension, and the mid.
    mid: Option<(u8, Bytes)>,
}

/// A per-subscriber local track: it writes exactly the packets its forwarder chose,
/// rewritten, to its one binding.
pub(crate) struct DownTrackLocal {
    id: String,
    stream_id: String,
    codec: RTCRtpCodecCapability,
    binding: Mutex<Option<Binding>>,
}

impl DownTrackLocal {
    pub fn new(codec: RTCRtpCodecCapability, id: String, stream_id: String) -> Self {
        DownTrackLocal {
            id,
            stream_id,
            codec,
            binding: Mutex::new(None),
        }
    }

    fn binding(&self) -> Option<Binding> {
        self.binding
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
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
        let mid = t
            .header_extensions()
            .iter()
            .find(|e| e.uri == SDES_MID_URI)
            .zip(t.mid())
            .map(|(e, mid)| (e.id as u8, Bytes::copy_from_slice(mid.as_bytes())));
        *self.binding.lock().unwrap_or_else(|e| e.into_inner()) = Some(Binding {
            ssrc: t.ssrc(),
            payload_type: codec.payload_type,
            writer: t.write_stream(),
            mid,
        });
        Ok(codec)
    }

    async fn unbind(&self, _t: &TrackLocalContext) -> webrtc::error::Result<()> {
        *self.binding.lock().unwrap_or_else(|e| e.into_inner()) = None;
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
    queue: Option<mpsc::Sender<Outgoing<Arc<Packet>>>>,
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
        let writer = tokio::spawn(write_packets(local, rx, stats.clone()));
        let rtcp_reader = tokio::spawn(read_subscriber_rtcp(
            sender.clone(),
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
    mut rx: mpsc::Receiver<Outgoing<Arc<Packet>>>,
    stats: Arc<MediaStats>,
) {
    // Counted while the writer task exists (aborting it drops the guard).
    let _live = stats.live_guard(Live::DownTracks);
    while let Some(out) = rx.recv().await {
        let Some(binding) = local.binding() else {
            // Not bound yet (the subscriber has not answered): nowhere to send it.
            stats.dropped.add(DropReason::WriteFailed);
            continue;
        };
        let mut header = out.packet.header.clone();
        header.sequence_number = out.forward.seq as u16;
        header.timestamp = out.forward.ts as u32;
        header.ssrc = binding.ssrc;
        header.payload_type = binding.payload_type;
        if let Some((id, mid)) = &binding.mid {
            let _ = header.set_extension(*id, mid.clone());
        }
        let payload = match (out.forward.vp8, &out.vp8) {
            (Some(rewrite), Some(descriptor)) => {
                let mut copy = BytesMut::from(&out.packet.payload[..]);
                vp8::rewrite(&mut copy, descriptor, rewrite.picture_id, rewrite.tl0picidx);
                copy.freeze()
            }
            _ => out.packet.payload.clone(),
        };
        let bytes = payload.len();
        match binding.writer.write_rtp(&Packet { header, payload }).await {
            Ok(_) => stats.forwarded.add(bytes),
            Err(_) => stats.dropped.add(DropReason::WriteFailed),
        }
    }
}

/// Drains the subscriber's RTCP for this sender: NACKs are answered from the uptrack's
/// per-layer cache (they never reach the publisher); PLI and FIR become throttled keyframe
/// requests for the layer this subscriber receives. Reports are not relayed: each leg
/// terminates its own RTCP.
async fn read_subscriber_rtcp(
    sender: Arc<RTCRtpSender>,
    uptrack: Weak<UpTrack>,
    subscriber: ParticipantId,
    stats: Arc<MediaStats>,
) {
    let mut lost = Vec::new();
    while let Ok((packets, _)) = sender.read_rtcp().await {
        let Some(up) = uptrack.upgrade() else { return };
        for packet in packets {
            let any = packet.as_any();
            if any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>() {
                stats
                    .keyframe_requests_received
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                up.request_keyframe_for(&subscriber);
            } else if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                lost.clear();
                for pair in &nack.nacks {
                    lost.extend(pair.packet_list());
                }
                up.on_nack(&subscriber, &lost);
            }
        }
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
