//! The one webrtc-rs `API` every peer connection is made from, and the single shared UDP
//! port all media of all participants flows through.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use webrtc::api::interceptor_registry::configure_twcc_receiver_only;
use webrtc::api::media_engine::{
    MediaEngine, MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8, MIME_TYPE_VP9,
};
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::{APIBuilder, API};
use webrtc::dtls_transport::RTCDtlsTransport;
use webrtc::ice::mdns::MulticastDnsMode;
use webrtc::ice::network_type::NetworkType;
use webrtc::ice::udp_mux::{UDPMuxDefault, UDPMuxParams};
use webrtc::ice::udp_network::UDPNetwork;
use webrtc::ice_transport::ice_candidate_type::RTCIceCandidateType;
use webrtc::interceptor::nack::generator::Generator;
use webrtc::interceptor::noop::NoOp;
use webrtc::interceptor::registry::Registry;
use webrtc::interceptor::report::receiver::ReceiverReport;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtp_transceiver::rtp_codec::{
    RTCRtpCodecCapability, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RTPCodecType,
};
use webrtc::rtp_transceiver::rtp_sender::RTCRtpSender;
use webrtc::rtp_transceiver::RTCPFeedback;
use webrtc::track::track_local::TrackLocal;

use switchyard_signal::Target;

use super::egress::MediaSocket;
use crate::error::Result;
use crate::ice_policy::CandidateLimits;

/// Media settings the server's config provides.
#[derive(Debug, Clone)]
pub struct RtcSettings {
    /// The one UDP socket all media uses (port 0 picks a free one).
    pub udp_bind: SocketAddr,
    /// Addresses announced in ICE candidates instead of the interfaces' own (1:1 NAT).
    pub announce_ips: Vec<IpAddr>,
    /// Announce loopback addresses too (needed when clients run on this host).
    pub include_loopback: bool,
    /// Minimum time between two keyframe requests sent to one publisher's track.
    pub keyframe_request_interval: Duration,
    /// Packets kept per published layer to answer subscribers' NACKs (rounded up to a
    /// power of two).
    pub nack_buffer_packets: u16,
    /// And for at most this long: a retransmission later than that is useless.
    pub nack_buffer_max_age: Duration,
    /// Output packets each subscriber of a video track remembers, so a resend is the
    /// packet exactly as first sent (a quarter of it for audio).
    pub resend_history_packets: usize,
    /// Sequence numbers looked at per NACK; the rest of a longer one is ignored.
    pub nack_max_packets_per_request: u32,
    /// Resends per subscriber connection per second (and in one burst).
    pub nack_max_resends_per_second: u32,
    /// A packet resent less than this ago is not resent again for another NACK.
    pub nack_resend_interval: Duration,
    /// Distinct remote candidate addresses per connection and ICE generation.
    pub max_remote_candidates: usize,
    /// Minimum time between two ICE restarts of one connection.
    pub ice_restart_interval: Duration,
    /// Audio and video sections a publisher's offer may have.
    pub max_publish_sections: usize,
    /// Kernel receive and send buffer of the media socket, in bytes. Every participant's
    /// media shares this one socket: a small buffer overflows (the kernel drops datagrams,
    /// DTLS handshakes included) whenever the server falls a few milliseconds behind.
    pub udp_buffer_bytes: usize,
    /// The data channels' limits.
    pub data: crate::data::DataLimits,
}

impl Default for RtcSettings {
    fn default() -> Self {
        RtcSettings {
            udp_bind: SocketAddr::from(([0, 0, 0, 0], 7882)),
            announce_ips: Vec::new(),
            include_loopback: true,
            keyframe_request_interval: Duration::from_millis(500),
            nack_buffer_packets: 1024,
            nack_buffer_max_age: Duration::from_secs(2),
            resend_history_packets: 512,
            nack_max_packets_per_request: 256,
            nack_max_resends_per_second: 500,
            nack_resend_interval: Duration::from_millis(100),
            max_remote_candidates: 16,
            ice_restart_interval: Duration::from_secs(5),
            max_publish_sections: 32,
            udp_buffer_bytes: 4 << 20,
            data: crate::data::DataLimits::default(),
        }
    }
}

/// Owns the shared UDP mux and the `API`s; cheap to share behind an `Arc`.
pub struct RtcEngine {
    /// For publisher connections: NACKs, Receiver Reports and TWCC towards publishers.
    publisher_api: API,
    /// For subscriber connections: no interceptors. Forwarded media bypasses them
    /// (egress.rs, which also sends the Sender Reports), the subscribers' RTCP is read
    /// straight from the senders, and no media arrives on these connections; each
    /// interceptor would only add its timer (the NACK generator ticks every 100 ms) to
    /// every subscriber connection.
    subscriber_api: API,
    udp_mux: Arc<UDPMuxDefault>,
    /// The mux's socket again, for forwarded media (see egress.rs).
    media_socket: Arc<MediaSocket>,
    udp_addr: SocketAddr,
    settings: RtcSettings,
}

/// What the UDP mux reads at most (webrtc-ice's receive buffer).
const PUBLISHER_RECEIVE_MTU: usize = 8192;

const RTCP_FEEDBACK_VIDEO: [(&str, &str); 4] = [
    ("goog-remb", ""),
    ("ccm", "fir"),
    ("nack", ""),
    ("nack", "pli"),
];

fn video_codec(mime: &str, fmtp: &str, payload_type: u8) -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        capability: RTCRtpCodecCapability {
            mime_type: mime.to_owned(),
            clock_rate: 90000,
            channels: 0,
            sdp_fmtp_line: fmtp.to_owned(),
            rtcp_feedback: RTCP_FEEDBACK_VIDEO
                .iter()
                .map(|(typ, parameter)| RTCPFeedback {
                    typ: (*typ).to_owned(),
                    parameter: (*parameter).to_owned(),
                })
                .collect(),
        },
        payload_type,
        ..Default::default()
    }
}

/// Which side of a participant a media engine is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// Receives publishers' media. No RTX: webrtc-rs 0.17 drops repaired streams, so
    /// without it Chrome retransmits in the main stream, which the router forwards as is.
    Publisher,
    /// Sends to subscribers. With RTX where the subscriber negotiates it: resends go on
    /// their own stream (own SSRC and sequence numbers), as browsers send theirs.
    Subscriber,
}

/// The codecs Switchyard forwards.
fn media_engine(side: Side) -> Result<MediaEngine> {
    let mut m = MediaEngine::default();
    m.register_codec(
        RTCRtpCodecParameters {
            capability: RTCRtpCodecCapability {
                mime_type: MIME_TYPE_OPUS.to_owned(),
                clock_rate: 48000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                rtcp_feedback: vec![],
            },
            payload_type: 111,
            ..Default::default()
        },
        RTPCodecType::Audio,
    )?;
    for codec in [
        video_codec(MIME_TYPE_VP8, "", 96),
        video_codec(MIME_TYPE_VP9, "profile-id=0", 98),
        video_codec(
            MIME_TYPE_H264,
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
            102,
        ),
        video_codec(
            MIME_TYPE_H264,
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f",
            108,
        ),
    ] {
        let payload_type = codec.payload_type;
        m.register_codec(codec, RTPCodecType::Video)?;
        // Each video codec's RTX (RFC 4588) codec is the next payload type.
        if side == Side::Subscriber {
            m.register_codec(
                RTCRtpCodecParameters {
                    capability: RTCRtpCodecCapability {
                        mime_type: "video/rtx".to_owned(),
                        clock_rate: 90000,
                        channels: 0,
                        sdp_fmtp_line: format!("apt={payload_type}"),
                        rtcp_feedback: vec![],
                    },
                    payload_type: payload_type + 1,
                    ..Default::default()
                },
                RTPCodecType::Video,
            )?;
        }
    }
    // mid/rid are what webrtc-rs needs to demultiplex (and, later, to receive simulcast).
    for (uri, kinds) in [
        (
            "urn:ietf:params:rtp-hdrext:sdes:mid",
            &[RTPCodecType::Audio, RTPCodecType::Video][..],
        ),
        (
            "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
            &[RTPCodecType::Video][..],
        ),
        (
            "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
            &[RTPCodecType::Video][..],
        ),
        (
            "urn:ietf:params:rtp-hdrext:ssrc-audio-level",
            &[RTPCodecType::Audio][..],
        ),
    ] {
        for kind in kinds {
            m.register_header_extension(
                RTCRtpHeaderExtensionCapability {
                    uri: uri.to_owned(),
                },
                *kind,
                None,
            )?;
        }
    }
    Ok(m)
}

/// NACK generation, Receiver Reports and TWCC feedback towards publishers. Built by hand
/// rather than `register_default_interceptors`: subscribers' NACKs are answered by the
/// router from one cache per published layer, so webrtc-rs's responder (a buffer of 8192
/// packets per outgoing stream, about 10 MB of video for every subscriber) is left out;
/// and forwarded packets bypass the interceptors (egress.rs), which send their own Sender
/// Reports, so webrtc-rs's Sender Report interceptor, which would see none of them and
/// report nonsense timestamps, is left out too.
fn interceptors(media: &mut MediaEngine) -> Result<Registry> {
    let mut registry = Registry::new();
    registry.add(Box::new(Generator::builder()));
    registry.add(Box::new(ReceiverReport::builder()));
    registry = configure_twcc_receiver_only(registry, media)?;
    Ok(registry)
}

/// Binds a UDP socket for WebRTC media with the kernel buffers asked for, and warns when
/// the kernel grants less (Linux caps them at `net.core.rmem_max` / `wmem_max`). The
/// server's media port uses it, and so do test clients, which need browser-sized buffers.
pub fn bind_media_socket(
    addr: SocketAddr,
    buffer_bytes: usize,
) -> std::io::Result<tokio::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if buffer_bytes > 0 {
        // Best effort: a refused size leaves the default, which still works.
        let _ = socket.set_recv_buffer_size(buffer_bytes);
        let _ = socket.set_send_buffer_size(buffer_bytes);
        // Linux reports twice the size it books (it counts its own overhead).
        let granted = socket.recv_buffer_size().unwrap_or(0) / 2;
        if granted < buffer_bytes / 2 {
            tracing::warn!(
                asked = buffer_bytes,
                granted,
                "the media socket's receive buffer is smaller than configured \
                 (rtc.udp_buffer_bytes); raise net.core.rmem_max and net.core.wmem_max \
                 (sysctl) so bursts are not dropped"
            );
        } else {
            tracing::debug!(granted, "media socket receive buffer");
        }
    }
    if addr.is_ipv4() {
        set_dont_fragment(&socket);
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    tokio::net::UdpSocket::from_std(socket.into())
}

/// Sets the Don't Fragment bit on an IPv4 UDP socket's datagrams (best effort). Media
/// packets are sized to fit any path (about 1200 bytes), so fragmenting them would only
/// hide a problem; and for a datagram without DF the kernel must draw a fresh IP ID from a
/// shared, hashed generator, about 5 % of the server's CPU per forwarded copy. `PROBE`
/// rather than `DO`: DF without the kernel's path-MTU cache (as QUIC stacks do), so a stray
/// ICMP message cannot make sends fail.
pub fn set_dont_fragment(socket: &impl std::os::fd::AsFd) {
    use rustix::net::sockopt::{set_ip_mtu_discover, Ipv4PathMtuDiscovery};
    if let Err(e) = set_ip_mtu_discover(socket, Ipv4PathMtuDiscovery::PROBE) {
        tracing::debug!(error = %e, "IP_MTU_DISCOVER");
    }
}

impl RtcEngine {
    /// Binds the media UDP port and prepares the shared `API`.
    pub async fn bind(settings: RtcSettings) -> Result<Self> {
        let socket = bind_media_socket(settings.udp_bind, settings.udp_buffer_bytes)?;
        let udp_addr = socket.local_addr()?;
        // A second descriptor of the same socket: forwarded media is written through it
        // (egress.rs) while the mux keeps reading and answering ICE and DTLS on the first.
        let socket = socket.into_std()?;
        let media_socket = Arc::new(MediaSocket::new(tokio::net::UdpSocket::from_std(
            socket.try_clone()?,
        )?));
        let socket = tokio::net::UdpSocket::from_std(socket)?;
        let udp_mux = UDPMuxDefault::new(UDPMuxParams::new(socket));

        let mut setting_engine = SettingEngine::default();
        setting_engine.set_udp_network(UDPNetwork::Muxed(udp_mux.clone()));
        // mDNS would open a multicast socket per connection, which fails where there is
        // no multicast (containers, sandboxes) and gains nothing for a server.
        setting_engine.set_ice_multicast_dns_mode(MulticastDnsMode::Disabled);
        setting_engine.set_network_types(vec![NetworkType::Udp4]);
        setting_engine.set_include_loopback_candidate(settings.include_loopback);
        // The stats interceptor sends a message to a per-connection task for every packet
        // read and written (once per packet per subscriber). Nothing here calls get_stats:
        // quality comes from the subscribers' RTCP (see downtrack.rs) and our counters.
        setting_engine.disable_rtp_stats(true);
        // Data channels are read and written by our own loops (datachannel.rs).
        setting_engine.detach_data_channels();
        if !settings.announce_ips.is_empty() {
            setting_engine.set_nat_1to1_ips(
                settings
                    .announce_ips
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                RTCIceCandidateType::Host,
            );
        }
        let bound_ip = udp_addr.ip();
        if !bound_ip.is_unspecified() {
            // Bound to one address: announce only it, not every interface's.
            setting_engine.set_ip_filter(Box::new(move |ip| ip == bound_ip));
        }

        let mut media = media_engine(Side::Publisher)?;
        let registry = interceptors(&mut media)?;
        // Publishers' packets are read whole whatever their size (up to what the UDP mux
        // reads), so one too big to forward reaches the uptrack, which drops and counts it
        // (uptrack.rs); with webrtc-rs's 1460 it would be cut short and fail SRTP's check.
        let mut publisher_settings = setting_engine.clone();
        publisher_settings.set_receive_mtu(PUBLISHER_RECEIVE_MTU);
        let publisher_api = APIBuilder::new()
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_setting_engine(publisher_settings)
            .build();
        // Each subscriber sender gets an RTX stream (used when the subscriber negotiates RTX).
        let mut subscriber_settings = setting_engine;
        subscriber_settings.enable_sender_rtx(true);
        let subscriber_api = APIBuilder::new()
            .with_media_engine(media_engine(Side::Subscriber)?)
            .with_interceptor_registry(Registry::new())
            .with_setting_engine(subscriber_settings)
            .build();
        Ok(RtcEngine {
            publisher_api,
            subscriber_api,
            udp_mux,
            media_socket,
            udp_addr,
            settings,
        })
    }

    /// The address of the shared media socket.
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp_addr
    }

    pub fn settings(&self) -> &RtcSettings {
        &self.settings
    }

    /// What a connection accepts of its client's candidates. Loopback addresses only from
    /// a client on this host (`local`): from anyone else they would aim the server's checks
    /// at its own services.
    pub(crate) fn candidate_limits(&self, local: bool) -> CandidateLimits {
        let port = self.udp_addr.port();
        CandidateLimits {
            max_addresses: self.settings.max_remote_candidates,
            restart_interval: self.settings.ice_restart_interval,
            allow_loopback: self.settings.include_loopback && local,
            own_addresses: std::iter::once(self.udp_addr)
                .chain(
                    self.settings
                        .announce_ips
                        .iter()
                        .map(|ip| SocketAddr::new(*ip, port)),
                )
                .collect(),
        }
    }

    pub(crate) fn media_socket(&self) -> Arc<MediaSocket> {
        self.media_socket.clone()
    }

    /// A connection for one side of a participant: what it publishes (`Publisher`), or
    /// what the server forwards to it (`Subscriber`).
    pub(crate) async fn new_peer_connection(&self, side: Target) -> Result<Arc<RTCPeerConnection>> {
        let api = match side {
            Target::Publisher => &self.publisher_api,
            Target::Subscriber => &self.subscriber_api,
        };
        // The server never gathers through STUN/TURN: its candidates are its own addresses.
        let pc = api.new_peer_connection(RTCConfiguration::default()).await?;
        Ok(Arc::new(pc))
    }

    /// A sender for `track` on a subscriber connection whose DTLS transport is `transport`,
    /// for a transceiver being reused (subscriber connections have no interceptors).
    pub(crate) async fn new_subscriber_sender(
        &self,
        track: Arc<dyn TrackLocal + Send + Sync>,
        transport: Arc<RTCDtlsTransport>,
    ) -> Arc<RTCRtpSender> {
        Arc::new(
            self.subscriber_api
                .new_rtp_sender(Some(track), transport, Arc::new(NoOp))
                .await,
        )
    }

    /// Stops the shared socket; call after every peer connection is closed.
    pub async fn close(&self) {
        use webrtc::ice::udp_mux::UDPMux;
        if let Err(e) = self.udp_mux.close().await {
            tracing::debug!(error = %e, "closing UDP mux");
        }
    }
}
