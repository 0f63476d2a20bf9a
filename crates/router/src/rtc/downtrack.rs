//! One published track as sent to one subscriber: its own bounded queue and writer task,
//! so a slow or stalled subscriber delays nobody else.

use std::sync::{Arc, Weak};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use webrtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtp::packet::Packet;
use webrtc::rtp_transceiver::rtp_sender::RTCRtpSender;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_local::TrackLocalWriter;

use switchyard_stats::{DropReason, Live, MediaStats};

use super::uptrack::UpTrack;

pub(crate) struct DownTrack {
    pub uptrack: Arc<UpTrack>,
    pub sender: Arc<RTCRtpSender>,
    writer: JoinHandle<()>,
    rtcp_reader: JoinHandle<()>,
}

impl DownTrack {
    /// Starts forwarding: the caller has added `local` to the subscriber's connection and
    /// got `sender` back. Packets flow once the subscriber's answer binds the sender.
    pub fn start(
        uptrack: Arc<UpTrack>,
        local: Arc<TrackLocalStaticRTP>,
        sender: Arc<RTCRtpSender>,
        queue_packets: usize,
        stats: Arc<MediaStats>,
    ) -> (DownTrack, mpsc::Sender<Arc<Packet>>) {
        let (tx, mut rx) = mpsc::channel::<Arc<Packet>>(queue_packets.max(1));
        let writer_stats = stats.clone();
        let live = stats.live_guard(Live::DownTracks);
        let writer = tokio::spawn(async move {
            // Counted while the writer task exists (aborting it drops the guard).
            let _live = live;
            while let Some(packet) = rx.recv().await {
                match local.write_rtp(&packet).await {
                    Ok(n) if n > 0 => writer_stats.forwarded.add(packet.payload.len()),
                    // Not bound yet (the subscriber has not answered): nothing was sent.
                    Ok(_) => {}
                    Err(_) => writer_stats.dropped.add(DropReason::WriteFailed),
                }
            }
        });
        let rtcp_reader = tokio::spawn(read_subscriber_rtcp(
            sender.clone(),
            Arc::downgrade(&uptrack),
            stats,
        ));
        (
            DownTrack {
                uptrack,
                sender,
                writer,
                rtcp_reader,
            },
            tx,
        )
    }

    pub fn stop(self) {
        self.writer.abort();
        self.rtcp_reader.abort();
    }
}

/// Drains the subscriber's RTCP for this sender. Draining is what keeps webrtc-rs's NACK
/// responder answering retransmissions from its buffer (NACKs never reach the publisher);
/// PLI and FIR become throttled keyframe requests to the publisher. Reports are not relayed:
/// each leg terminates its own RTCP.
async fn read_subscriber_rtcp(
    sender: Arc<RTCRtpSender>,
    uptrack: Weak<UpTrack>,
    stats: Arc<MediaStats>,
) {
    while let Ok((packets, _)) = sender.read_rtcp().await {
        for packet in packets {
            let any = packet.as_any();
            if any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>() {
                stats
                    .keyframe_requests_received
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                match uptrack.upgrade() {
                    Some(up) => up.request_keyframe(),
                    None => return,
                }
            }
        }
    }
}
