//! A published track as received from its publisher: reads its RTP once and fans each
//! packet out to every subscriber's downtrack queue.
//!
//! Per packet the work shared by all subscribers (parsing, stripping the publisher's
//! header-extension ids, counting) happens once; per subscriber it is one reference-count
//! increment and a non-blocking queue push. A full queue drops for that subscriber alone.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtp::packet::Packet;
use webrtc::rtp_transceiver::rtp_codec::RTCRtpCodecCapability;
use webrtc::track::track_remote::TrackRemote;

use switchyard_signal::TrackKind;
use switchyard_stats::{DropReason, Live, LiveGuard, MediaStats};

use crate::fanout::Fanout;
use crate::ids::{ParticipantId, TrackId};
use crate::keyframe::{KeyframeDecision, KeyframeThrottle};

pub struct UpTrack {
    pub id: TrackId,
    pub publisher: ParticipantId,
    pub kind: TrackKind,
    pub codec: RTCRtpCodecCapability,
    fanout: Fanout<Arc<Packet>>,
    keyframe_requests: Option<mpsc::Sender<()>>,
    stats: Arc<MediaStats>,
    _live: LiveGuard,
}

impl UpTrack {
    /// Starts reading `remote` and, for video, the task that sends throttled PLIs to
    /// `publisher_pc`. `on_end` runs once the track stops (its connection closed).
    pub(crate) fn start(
        id: TrackId,
        publisher: ParticipantId,
        remote: Arc<TrackRemote>,
        publisher_pc: Weak<RTCPeerConnection>,
        keyframe_interval: Duration,
        stats: Arc<MediaStats>,
        on_end: impl FnOnce(TrackId) + Send + 'static,
    ) -> Arc<UpTrack> {
        let kind = match remote.kind() {
            webrtc::rtp_transceiver::rtp_codec::RTPCodecType::Audio => TrackKind::Audio,
            _ => TrackKind::Video,
        };
        let keyframe_requests = (kind == TrackKind::Video).then(|| {
            let (tx, rx) = mpsc::channel(8);
            tokio::spawn(request_keyframes(
                publisher_pc,
                remote.ssrc(),
                rx,
                keyframe_interval,
                stats.clone(),
            ));
            tx
        });
        let up = Arc::new(UpTrack {
            id: id.clone(),
            publisher,
            kind,
            codec: remote.codec().capability,
            fanout: Fanout::default(),
            keyframe_requests,
            _live: stats.live_guard(Live::UpTracks),
            stats,
        });
        let reader = up.clone();
        tokio::spawn(async move {
            reader.read_loop(remote).await;
            on_end(id);
        });
        up
    }

    async fn read_loop(&self, remote: Arc<TrackRemote>) {
        let mut buf = vec![0u8; 1500];
        loop {
            let mut packet = match remote.read(&mut buf).await {
                Ok((packet, _)) => packet,
                Err(e) => {
                    tracing::info!(track = %self.id, error = %e, "uptrack ended");
                    return;
                }
            };
            self.stats.received.add(packet.payload.len());
            // Extension ids are negotiated per connection: the publisher's mean nothing to
            // a subscriber. The downtrack writes the subscriber's own.
            strip_header_extensions(&mut packet.header);
            self.fan_out(Arc::new(packet));
        }
    }

    fn fan_out(&self, packet: Arc<Packet>) {
        for _ in 0..self.fanout.push(packet) {
            self.stats.dropped.add(DropReason::QueueFull);
        }
    }

    pub(crate) fn add_sink(&self, subscriber: ParticipantId, queue: mpsc::Sender<Arc<Packet>>) {
        self.fanout.add(subscriber, queue);
    }

    pub(crate) fn remove_sink(&self, subscriber: &ParticipantId) {
        self.fanout.remove(subscriber);
    }

    pub fn subscriber_count(&self) -> usize {
        self.fanout.len()
    }

    /// Asks the publisher for a keyframe (throttled; a no-op for audio).
    pub fn request_keyframe(&self) {
        if let Some(tx) = &self.keyframe_requests {
            // A full queue already holds a pending request: nothing is lost.
            let _ = tx.try_send(());
        }
    }
}

/// Removes every header extension. The parsed padding must go too: left behind, it would
/// be marshalled into a header whose length no longer matches, and receivers drop it.
fn strip_header_extensions(header: &mut webrtc::rtp::header::Header) {
    header.extension = false;
    header.extension_profile = 0;
    header.extensions.clear();
    header.extensions_padding = 0;
}

async fn request_keyframes(
    pc: Weak<RTCPeerConnection>,
    media_ssrc: u32,
    mut requests: mpsc::Receiver<()>,
    interval: Duration,
    stats: Arc<MediaStats>,
) {
    let mut throttle = KeyframeThrottle::new(interval);
    let mut due: Option<Instant> = None;
    loop {
        let send = tokio::select! {
            request = requests.recv() => match request {
                None => return,
                Some(()) => match throttle.request(Instant::now().into_std()) {
                    KeyframeDecision::SendNow => true,
                    KeyframeDecision::Deferred(at) => {
                        due = Some(Instant::from_std(at));
                        false
                    }
                },
            },
            _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                due = None;
                throttle.poll(Instant::now().into_std())
            }
        };
        if !send {
            continue;
        }
        let Some(pc) = pc.upgrade() else { return };
        let pli = PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc,
        };
        match pc.write_rtcp(&[Box::new(pli)]).await {
            Ok(_) => {
                stats
                    .keyframe_requests_sent
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => tracing::debug!(error = %e, "sending PLI"),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use webrtc::rtp::packet::Packet;
    use webrtc::util::{Marshal, Unmarshal};

    use super::strip_header_extensions;

    /// Chrome's packets carry one-byte extensions with padding; after stripping and adding
    /// the subscriber's own (as the downtrack does), the packet must still parse.
    #[test]
    fn stripped_packet_reencodes_cleanly() {
        let mut original = Packet::default();
        original.header.version = 2;
        original.header.payload_type = 96;
        original.header.sequence_number = 7;
        original
            .header
            .set_extension(3, Bytes::from_static(&[1, 2]))
            .unwrap();
        original.payload = Bytes::from_static(&[0xAA; 100]);
        let wire = original.marshal().unwrap();
        let mut parsed = Packet::unmarshal(&mut &wire[..]).unwrap();
        assert!(
            parsed.header.extensions_padding > 0,
            "the case that broke: padded extensions"
        );

        strip_header_extensions(&mut parsed.header);
        parsed
            .header
            .set_extension(1, Bytes::from_static(b"0"))
            .unwrap();
        let rewired = parsed.marshal().unwrap();
        let back = Packet::unmarshal(&mut &rewired[..]).unwrap();
        assert_eq!(back.payload, original.payload);
        assert_eq!(back.header.get_extension(1), Some(Bytes::from_static(b"0")));
        assert_eq!(back.header.get_extension(3), None);
    }
}
