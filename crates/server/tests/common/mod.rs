//! A real WebRTC client (webrtc-rs) speaking Switchyard's signaling over a real WebSocket,
//! and a server started on loopback ports, for integration tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use webrtc::api::interceptor_registry::register_default_interceptors;
use webrtc::api::media_engine::{MediaEngine, MIME_TYPE_OPUS, MIME_TYPE_VP8};
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::{APIBuilder, API};
use webrtc::ice::mdns::MulticastDnsMode;
use webrtc::ice::network_type::NetworkType;
use webrtc::ice::udp_mux::{UDPMuxDefault, UDPMuxParams};
use webrtc::ice::udp_network::UDPNetwork;
use webrtc::interceptor::registry::Registry;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::offer_answer_options::RTCOfferOptions;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtcp::payload_feedbacks::full_intra_request::{FirEntry, FullIntraRequest};
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtcp::sender_report::SenderReport;
use webrtc::rtcp::transport_feedbacks::transport_layer_nack::{NackPair, TransportLayerNack};
use webrtc::rtp_transceiver::rtp_codec::{RTCRtpCodecCapability, RTPCodecType};
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_local::TrackLocalWriter;

use switchyard_signal::token::{mint, unix_now, Claims, Grant, DEV_API_KEY, DEV_API_SECRET};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub use switchyard_server::testing::TestServer;

/// Where a client's signaling goes: an in-process [`TestServer`] or a [`ServerProcess`].
pub trait Endpoint {
    fn ws_url(&self) -> String;
}

impl Endpoint for TestServer {
    fn ws_url(&self) -> String {
        TestServer::ws_url(self)
    }
}

/// The `switchyard` binary run as its own process on free loopback ports, for what only a
/// process shows: its memory and descriptors alone, its log, its start-up. Killed on drop.
pub struct ServerProcess {
    pub http: SocketAddr,
    pub udp: SocketAddr,
    child: Option<tokio::process::Child>,
    /// Its stderr as read so far: read all along, or a full pipe would block its logging
    /// (and with it the server).
    log: Arc<Mutex<Vec<u8>>>,
    log_reader: JoinHandle<()>,
}

impl ServerProcess {
    /// Starts it with `SWITCHYARD_*` overrides; with `open_files`, under that soft limit
    /// (`ulimit -Sn`). Its stderr (the log) is kept for [`Self::stop`].
    pub async fn start(env: &[(&str, &str)], open_files: Option<u64>) -> ServerProcess {
        let free_port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let free_udp_port = || {
            std::net::UdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let udp: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
        let binary = env!("CARGO_BIN_EXE_switchyard");
        let command = match open_files {
            Some(limit) => format!("ulimit -Sn {limit} && exec {binary}"),
            None => format!("exec {binary}"),
        };
        let mut process = tokio::process::Command::new("sh");
        process
            .arg("-c")
            .arg(format!("{command} --bind {http} --udp-port {}", udp.port()))
            .env("SWITCHYARD_RTC_UDP_IP", "127.0.0.1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        for (key, value) in env {
            process.env(key, value);
        }
        let mut child = process.spawn().expect("the switchyard binary starts");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let log: Arc<Mutex<Vec<u8>>> = Arc::default();
        let sink = log.clone();
        let log_reader = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut buf = [0u8; 8192];
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        for _ in 0..200 {
            if TcpStream::connect(http).await.is_ok() {
                return ServerProcess {
                    http,
                    udp,
                    child: Some(child),
                    log,
                    log_reader,
                };
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the switchyard binary did not listen on {http}");
    }

    fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .and_then(|c| c.id())
            .expect("the server process runs")
    }

    /// Its resident memory (VmRSS), in KiB.
    pub fn resident_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// The CPU time it has used so far (user + system), in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // Fields after the parenthesised command name (which may hold spaces):
        // utime and stime are the 14th and 15th fields of the line.
        let after_name = &stat[stat.rfind(')').expect("(comm) in /proc/PID/stat") + 2..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .unwrap_or(100);
        ticks as f64 / per_second as f64
    }

    /// Its open file descriptors.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .expect("/proc/PID/fd")
    }

    /// The value of an unlabelled metric from its `/metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        let (_, _, body) = http_get(self.http, "/metrics", &[]).await;
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no metric {name}"))
    }

    /// Stops it; returns its log.
    pub async fn stop(mut self) -> String {
        let mut child = self.child.take().expect("running");
        let _ = child.start_kill();
        let _ = child.wait().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.log_reader).await;
        let log = self.log.lock().unwrap();
        String::from_utf8_lossy(&log).into_owned()
    }
}

impl Endpoint for ServerProcess {
    fn ws_url(&self) -> String {
        format!("ws://{}/rtc", self.http)
    }
}

/// What the server's own tests do with a [`TestServer`] beyond starting and stopping it.
pub trait TestServerExt {
    /// One HTTP/1.1 request to the server (`Connection: close`); returns the status and
    /// the body parsed as JSON (`Value::Null` when empty, a string when not JSON).
    async fn http(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<&str>,
    ) -> (u16, Value);

    /// A WebSocket to `/rtc`.
    async fn connect(&self) -> Ws;
}

impl TestServerExt for TestServer {
    async fn http(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<&str>,
    ) -> (u16, Value) {
        let mut headers = Vec::new();
        let authorization = bearer.map(|token| format!("Bearer {token}"));
        if let Some(value) = &authorization {
            headers.push(("Authorization", value.as_str()));
        }
        let body = body.unwrap_or("");
        if !body.is_empty() {
            headers.push(("Content-Type", "application/json"));
        }
        let (status, _, payload) = http_request(self.http, method, path, &headers, body).await;
        let value = if payload.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&payload).unwrap_or(Value::String(payload))
        };
        (status, value)
    }

    async fn connect(&self) -> Ws {
        let (ws, _) = tokio_tungstenite::connect_async(self.ws_url())
            .await
            .expect("websocket connects");
        ws
    }
}

pub async fn send_json(ws: &mut Ws, value: Value) {
    ws.send(Message::Text(value.to_string().into()))
        .await
        .expect("websocket send");
}

/// The next text message as JSON (skipping pings), or panics after `within`.
pub async fn recv_json(ws: &mut Ws, within: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let message = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("a message arrives in time")
            .expect("websocket still open")
            .expect("websocket read");
        match message {
            Message::Text(text) => return serde_json::from_str(&text).expect("server sends JSON"),
            Message::Close(frame) => panic!("websocket closed: {frame:?}"),
            _ => continue,
        }
    }
}

/// Reads until a message of `type_name` arrives, returning it (others are dropped).
pub async fn recv_type(ws: &mut Ws, type_name: &str, within: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let m = recv_json(ws, left).await;
        if m["type"] == type_name {
            return m;
        }
    }
}

/// A webrtc-rs API as the test clients use it: loopback only, its own UDP socket (close the
/// mux when done with it: its reader task holds the socket open otherwise).
pub fn client_api() -> (API, Arc<UDPMuxDefault>) {
    client_api_with(None)
}

/// Splits a signaling socket: what is sent on the returned sender goes out in order,
/// written by the returned task (which closes the socket when the sender is dropped); the
/// stream half is the caller's to read.
pub fn split_ws(
    ws: Ws,
) -> (
    mpsc::UnboundedSender<Value>,
    futures_util::stream::SplitStream<Ws>,
    JoinHandle<()>,
) {
    let (outbound, mut outbound_rx) = mpsc::unbounded_channel::<Value>();
    let (mut sink, stream) = ws.split();
    let writer = tokio::spawn(async move {
        while let Some(v) = outbound_rx.recv().await {
            if sink
                .send(Message::Text(v.to_string().into()))
                .await
                .is_err()
            {
                break;
            }
        }
        let _ = sink.close().await;
    });
    (outbound, stream, writer)
}

/// The next JSON message of a signaling stream, also appended to `log`; None once the
/// stream ends.
pub async fn next_logged(
    stream: &mut futures_util::stream::SplitStream<Ws>,
    log: &Mutex<Vec<Value>>,
) -> Option<Value> {
    while let Some(Ok(message)) = stream.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        let m: Value = serde_json::from_str(&text).expect("the server sends JSON");
        log.lock().unwrap().push(m.clone());
        return Some(m);
    }
    None
}

/// A peer connection of `api` with the default configuration.
pub async fn peer_connection(api: &API) -> Arc<RTCPeerConnection> {
    Arc::new(
        api.new_peer_connection(RTCConfiguration::default())
            .await
            .expect("a peer connection"),
    )
}

/// RTX packets a client received: (SSRC, sequence number, payload: the original sequence
/// number and the original payload).
pub type RtxPackets = Arc<Mutex<Vec<(u32, u16, Vec<u8>)>>>;

/// As [`client_api`]; with `rtx`, it also negotiates RTX for VP8 (as browsers do) and
/// records every RTX packet it receives there (webrtc-rs 0.17 reads RTX streams but hands
/// their packets to nobody).
pub fn client_api_with(rtx: Option<RtxPackets>) -> (API, Arc<UDPMuxDefault>) {
    let mut media = MediaEngine::default();
    media.register_default_codecs().expect("codecs");
    if rtx.is_some() {
        media
            .register_codec(
                webrtc::rtp_transceiver::rtp_codec::RTCRtpCodecParameters {
                    capability: RTCRtpCodecCapability {
                        mime_type: "video/rtx".to_owned(),
                        clock_rate: 90000,
                        sdp_fmtp_line: "apt=96".to_owned(),
                        ..Default::default()
                    },
                    payload_type: 97,
                    ..Default::default()
                },
                RTPCodecType::Video,
            )
            .expect("rtx codec");
    }
    let mut registry =
        register_default_interceptors(Registry::new(), &mut media).expect("interceptors");
    if let Some(packets) = rtx {
        registry.add(Box::new(RtxTapBuilder(packets)));
    }
    let mut settings = SettingEngine::default();
    settings.set_ice_multicast_dns_mode(MulticastDnsMode::Disabled);
    settings.set_network_types(vec![NetworkType::Udp4]);
    settings.set_include_loopback_candidate(true);
    // Loopback only: the tests never send anywhere else.
    settings.set_ip_filter(Box::new(|ip| ip.is_loopback()));
    // So a retransmission of a packet already received is delivered, not dropped as a
    // replay: the NACK test needs to see it.
    settings.disable_srtp_replay_protection(true);
    // The connection's socket, with buffers as large as a browser's: with the kernel's
    // 208 KiB default, a test that sends in bursts on a busy machine loses datagrams in the
    // client's own socket, DTLS handshakes included.
    let socket =
        switchyard_router::rtc::engine::bind_media_socket("127.0.0.1:0".parse().unwrap(), 4 << 20)
            .expect("client socket");
    let mux = UDPMuxDefault::new(UDPMuxParams::new(socket));
    settings.set_udp_network(UDPNetwork::Muxed(mux.clone()));
    let api = APIBuilder::new()
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_setting_engine(settings)
        .build();
    (api, mux)
}

/// Packets received per (publishing participant id, track id).
pub type Received = Arc<Mutex<HashMap<(String, String), u64>>>;

/// What the subscriber side saw of one remote track.
#[derive(Debug, Default, Clone)]
pub struct TrackSeen {
    pub ssrc: u32,
    pub mime_type: String,
    pub last_seq: u16,
    /// The newest packet's RTP timestamp, and when it arrived.
    pub last_ts: u32,
    pub last_arrival: Option<Instant>,
    /// A hash of each packet's bytes (header and payload) by sequence number.
    packets: HashMap<u16, u64>,
    /// Packets whose sequence number had already arrived (retransmissions).
    pub duplicates: u64,
    /// Of those, packets whose bytes differ from the first packet with that sequence
    /// number: SRTP would have encrypted two plaintexts with one key stream.
    pub mismatched_duplicates: u64,
    /// A hash of each packet's payload by sequence number (to compare an RTX packet's).
    payloads: HashMap<u16, u64>,
}

impl TrackSeen {
    /// A hash of the payload first received under `seq`.
    pub fn payload_digest(&self, seq: u16) -> Option<u64> {
        self.payloads.get(&seq).copied()
    }
}

/// A hash of bytes, to compare payloads without keeping them.
pub fn digest(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

/// RTCP the publisher side received from the server, on its video sender.
#[derive(Debug, Default)]
pub struct PublisherFeedback {
    pub plis: AtomicU64,
    pub nacks: AtomicU64,
}

/// The video codec a test client publishes.
#[derive(Debug, Clone, Copy)]
pub enum VideoCodec {
    Vp8,
    Vp9,
    H264,
}

impl VideoCodec {
    fn capability(self) -> RTCRtpCodecCapability {
        let (mime_type, fmtp) = match self {
            VideoCodec::Vp8 => (MIME_TYPE_VP8, ""),
            VideoCodec::Vp9 => (webrtc::api::media_engine::MIME_TYPE_VP9, "profile-id=0"),
            VideoCodec::H264 => (
                webrtc::api::media_engine::MIME_TYPE_H264,
                "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
            ),
        };
        RTCRtpCodecCapability {
            mime_type: mime_type.to_owned(),
            clock_rate: 90000,
            sdp_fmtp_line: fmtp.to_owned(),
            ..Default::default()
        }
    }
}

/// A function of a `track_published` message that returns a message to send at once.
pub type TrackPublishedReply = Arc<dyn Fn(&Value) -> Option<Value> + Send + Sync>;

/// How an [`RtcClient`] behaves.
#[derive(Clone)]
pub struct ClientOptions {
    pub codec: VideoCodec,
    /// How often the microphone sends (a real one: every 20 ms). A shorter interval is a
    /// burst of the first 500 packets, so media arrives at the server the moment DTLS is
    /// up; then it settles to 20 ms.
    pub audio_interval: Duration,
    /// Answers `track_published` straight from the signaling task, before any later
    /// message (such as the `subscribe_offer` that carries the track) is handled.
    pub on_track_published: Option<TrackPublishedReply>,
    /// The join token; default: a development-key token for the name as identity.
    pub token: Option<String>,
    /// Reads the server's RTCP on every received track, so the client's report
    /// interceptor answers the server's Sender Reports (LSR/DLSR: the server's RTT), as a
    /// browser does. Off by default: webrtc-rs 0.17.2's `RTCRtpReceiver::read_rtcp` holds
    /// the receiver's track lock while it waits, so each renegotiation waits for the next
    /// Sender Report (up to 1 s), and the track's RTP reads queue behind it.
    pub read_sender_reports: bool,
    /// Negotiate RTX for VP8 on the subscriber connection, as browsers do, and record the
    /// RTX packets received ([`RtcClient::rtx`]).
    pub rtx: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            codec: VideoCodec::Vp8,
            audio_interval: Duration::from_millis(20),
            on_track_published: None,
            token: None,
            read_sender_reports: false,
            rtx: false,
        }
    }
}

/// A participant driven by webrtc-rs: joins, publishes synthetic Opus-sized audio and VP8
/// video, answers every subscribe offer, and counts what it receives per track.
pub struct RtcClient {
    pub name: String,
    pub id: String,
    pub joined: Value,
    pub received: Received,
    pub seen: Arc<Mutex<HashMap<(String, String), TrackSeen>>>,
    pub feedback: Arc<PublisherFeedback>,
    /// RTX packets received on the subscriber connection (with `rtx`).
    pub rtx: RtxPackets,
    /// Sender Reports the server sent, with their arrival (with `read_sender_reports`).
    pub sender_reports: Arc<Mutex<Vec<(SenderReport, Instant)>>>,
    /// Every server message the signaling task saw after `joined`, in order.
    pub events: Arc<Mutex<Vec<Value>>>,
    outbound: mpsc::UnboundedSender<Value>,
    /// The camera's sender as bound, for packets the synthetic camera would never send.
    raw_video: Arc<RawWriter>,
    publisher: Arc<RTCPeerConnection>,
    subscriber: Arc<RTCPeerConnection>,
    muxes: [Arc<UDPMuxDefault>; 2],
    tasks: Vec<JoinHandle<()>>,
    /// The synthetic microphone and camera.
    media_tasks: Vec<JoinHandle<()>>,
}

impl RtcClient {
    pub async fn join(server: &impl Endpoint, room: &str, name: &str) -> RtcClient {
        RtcClient::join_with(server, room, name, VideoCodec::Vp8).await
    }

    pub async fn join_with(
        server: &impl Endpoint,
        room: &str,
        name: &str,
        codec: VideoCodec,
    ) -> RtcClient {
        let options = ClientOptions {
            codec,
            ..ClientOptions::default()
        };
        RtcClient::join_opts(server, room, name, options).await
    }

    pub async fn join_opts(
        server: &impl Endpoint,
        room: &str,
        name: &str,
        options: ClientOptions,
    ) -> RtcClient {
        let ClientOptions {
            codec,
            audio_interval,
            on_track_published,
            token,
            read_sender_reports,
            rtx,
        } = options;
        let token = token.unwrap_or_else(|| dev_token(room, name));
        let (mut ws, _) = tokio_tungstenite::connect_async(server.ws_url())
            .await
            .expect("websocket connects");
        send_json(
            &mut ws,
            json!({"type": "join", "room": room, "name": name, "token": token}),
        )
        .await;
        let joined = recv_type(&mut ws, "joined", Duration::from_secs(5)).await;
        let id = joined["participant"]["id"].as_str().unwrap().to_owned();

        // One API (and so one socket) per connection, as a browser has: the server tells
        // its connections apart by the client's address.
        let (publisher_api, publisher_mux) = client_api();
        let rtx_packets: RtxPackets = Arc::default();
        let (subscriber_api, subscriber_mux) = client_api_with(rtx.then(|| rtx_packets.clone()));
        let publisher = peer_connection(&publisher_api).await;
        let subscriber = peer_connection(&subscriber_api).await;
        let received: Received = Arc::default();
        let events: Arc<Mutex<Vec<Value>>> = Arc::default();

        let seen: Arc<Mutex<HashMap<(String, String), TrackSeen>>> = Arc::default();
        let counts = received.clone();
        let seen_by_track = seen.clone();
        let sender_reports: Arc<Mutex<Vec<(SenderReport, Instant)>>> = Arc::default();
        let reports = sender_reports.clone();
        subscriber.on_track(Box::new(move |track, receiver, _| {
            let counts = counts.clone();
            let seen = seen_by_track.clone();
            if read_sender_reports {
                // The report interceptor answers only the Sender Reports it reads.
                let reports = reports.clone();
                tokio::spawn(async move {
                    while let Ok((packets, _)) = receiver.read_rtcp().await {
                        let arrival = Instant::now();
                        for packet in packets {
                            if let Some(sr) = packet.as_any().downcast_ref::<SenderReport>() {
                                reports.lock().unwrap().push((sr.clone(), arrival));
                            }
                        }
                    }
                });
            }
            tokio::spawn(async move {
                let key = (track.stream_id(), track.id());
                let mut buf = vec![0u8; 1500];
                while let Ok((packet, _)) = track.read(&mut buf).await {
                    *counts.lock().unwrap().entry(key.clone()).or_default() += 1;
                    let mut seen = seen.lock().unwrap();
                    let entry = seen.entry(key.clone()).or_default();
                    entry.ssrc = track.ssrc();
                    entry.mime_type = track.codec().capability.mime_type;
                    entry.last_seq = packet.header.sequence_number;
                    entry.last_ts = packet.header.timestamp;
                    entry.last_arrival = Some(Instant::now());
                    entry
                        .payloads
                        .entry(packet.header.sequence_number)
                        .or_insert_with(|| digest(&packet.payload));
                    let digest = packet_digest(&packet);
                    if let Some(first) = entry.packets.insert(packet.header.sequence_number, digest)
                    {
                        entry.duplicates += 1;
                        if first != digest {
                            entry.mismatched_duplicates += 1;
                        }
                    }
                }
            });
            Box::pin(async {})
        }));

        let (outbound, mut stream, writer) = split_ws(ws);

        let sub = subscriber.clone();
        let publ = publisher.clone();
        let reply = outbound.clone();
        let log = events.clone();
        let reader = tokio::spawn(async move {
            while let Some(m) = next_logged(&mut stream, &log).await {
                match m["type"].as_str().unwrap() {
                    "track_published" => {
                        if let Some(reply_to) = &on_track_published {
                            if let Some(message) = reply_to(&m) {
                                let _ = reply.send(message);
                            }
                        }
                    }
                    "subscribe_offer" => {
                        let offer =
                            RTCSessionDescription::offer(m["sdp"].as_str().unwrap().to_owned())
                                .unwrap();
                        // Fails only once the test closed this client's connections.
                        let Ok(sdp) = answer_offer(&sub, offer).await else {
                            break;
                        };
                        let _ = reply.send(json!({"type": "subscribe_answer", "sdp": sdp}));
                    }
                    "publish_answer" => {
                        let answer =
                            RTCSessionDescription::answer(m["sdp"].as_str().unwrap().to_owned())
                                .unwrap();
                        if publ.set_remote_description(answer).await.is_err() {
                            break;
                        }
                    }
                    _ => {}
                }
            }
        });

        let mut client = RtcClient {
            name: name.to_owned(),
            id,
            joined,
            received,
            seen,
            rtx: rtx_packets,
            sender_reports,
            feedback: Arc::default(),
            events,
            outbound,
            raw_video: Arc::default(),
            publisher,
            subscriber,
            muxes: [publisher_mux, subscriber_mux],
            tasks: vec![writer, reader],
            media_tasks: Vec::new(),
        };
        client.publish(codec, audio_interval).await;
        client
    }

    async fn publish(&mut self, codec: VideoCodec, audio_interval: Duration) {
        let audio = Arc::new(TrackLocalStaticRTP::new(
            RTCRtpCodecCapability {
                mime_type: MIME_TYPE_OPUS.to_owned(),
                clock_rate: 48000,
                channels: 2,
                ..Default::default()
            },
            format!("{}-mic", self.name),
            format!("{}-stream", self.name),
        ));
        let video = Arc::new(TrackLocalStaticRTP::new(
            codec.capability(),
            format!("{}-cam", self.name),
            format!("{}-stream", self.name),
        ));
        let audio_sender = self.publisher.add_track(audio.clone()).await.unwrap();
        let camera = Arc::new(CapturingTrack {
            inner: video.clone(),
            raw: self.raw_video.clone(),
        });
        let video_sender = self.publisher.add_track(camera).await.unwrap();
        // Drain RTCP so the interceptors (NACK, reports) keep working; count what the
        // server asks of the video publisher.
        self.tasks.push(tokio::spawn(async move {
            while audio_sender.read_rtcp().await.is_ok() {}
        }));
        let feedback = self.feedback.clone();
        self.tasks.push(tokio::spawn(async move {
            while let Ok((packets, _)) = video_sender.read_rtcp().await {
                for packet in packets {
                    let any = packet.as_any();
                    if any.is::<PictureLossIndication>() {
                        feedback.plis.fetch_add(1, Ordering::Relaxed);
                    } else if any.is::<TransportLayerNack>() {
                        feedback.nacks.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
        let offer = self.publisher.create_offer(None).await.unwrap();
        let mut gathered = self.publisher.gathering_complete_promise().await;
        self.publisher.set_local_description(offer).await.unwrap();
        let _ = gathered.recv().await;
        let sdp = self.publisher.local_description().await.unwrap().sdp;
        self.send(json!({"type": "publish_offer", "sdp": sdp}));

        self.media_tasks.push(tokio::spawn(send_synthetic(
            audio,
            audio_interval,
            160,
            None,
            Arc::default(),
        )));
        self.media_tasks.push(tokio::spawn(send_synthetic(
            video,
            Duration::from_millis(33),
            1000,
            Some(codec),
            self.raw_video.next_seq.clone(),
        )));
    }

    pub fn send(&self, value: Value) {
        let _ = self.outbound.send(value);
    }

    pub fn count(&self, publisher_id: &str, track_id: &str) -> u64 {
        self.received
            .lock()
            .unwrap()
            .get(&(publisher_id.to_owned(), track_id.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    pub fn seen(&self, publisher_id: &str, track_id: &str) -> Option<TrackSeen> {
        self.seen
            .lock()
            .unwrap()
            .get(&(publisher_id.to_owned(), track_id.to_owned()))
            .cloned()
    }

    /// Sends an RTP packet on the camera's stream exactly as given (payload type, size),
    /// as a broken or hostile publisher would; false if the camera is not bound yet.
    pub async fn send_raw_video(&self, payload_type: u8, payload: Vec<u8>) -> bool {
        let Some(ssrc) = self.raw_video.binding.lock().unwrap().as_ref().map(|b| b.0) else {
            return false;
        };
        let seq = self.raw_video.next_seq.fetch_add(1, Ordering::Relaxed);
        self.send_raw_rtp(ssrc, payload_type, seq, payload).await
    }

    /// Sends an RTP packet under any SSRC through the camera's sender (so it is encrypted
    /// with the connection's keys): a publisher inventing streams.
    pub async fn send_raw_rtp(
        &self,
        ssrc: u32,
        payload_type: u8,
        seq: u16,
        payload: Vec<u8>,
    ) -> bool {
        let Some(writer) = self
            .raw_video
            .binding
            .lock()
            .unwrap()
            .as_ref()
            .map(|b| b.1.clone())
        else {
            return false;
        };
        let packet = webrtc::rtp::packet::Packet {
            header: webrtc::rtp::header::Header {
                version: 2,
                payload_type,
                sequence_number: seq,
                ssrc,
                ..Default::default()
            },
            payload: payload.into(),
        };
        writer.write_rtp(&packet).await.is_ok()
    }

    /// Sends the server a NACK for `seq` of a track this client receives.
    pub async fn send_nack(&self, media_ssrc: u32, seq: u16) {
        let nack = TransportLayerNack {
            sender_ssrc: 0,
            media_ssrc,
            nacks: vec![NackPair {
                packet_id: seq,
                lost_packets: 0,
            }],
        };
        self.subscriber
            .write_rtcp(&[Box::new(nack)])
            .await
            .expect("NACK sent");
    }

    /// Sends the server one NACK naming `pairs` (each a packet id and a bitmask of the 16
    /// after it) for a track this client receives.
    pub async fn send_nack_pairs(&self, media_ssrc: u32, pairs: Vec<NackPair>) {
        let nack = TransportLayerNack {
            sender_ssrc: 0,
            media_ssrc,
            nacks: pairs,
        };
        if let Err(e) = self.subscriber.write_rtcp(&[Box::new(nack)]).await {
            eprintln!("NACK not sent: {e}");
        }
    }

    /// Sends the server a keyframe request (PLI, or FIR when `fir`) for a track this
    /// client receives.
    pub async fn send_keyframe_request(&self, media_ssrc: u32, fir: bool) {
        let packet: Box<dyn webrtc::rtcp::packet::Packet + Send + Sync> = if fir {
            // RFC 5104: a FIR names the stream in its entry, not in the media SSRC.
            Box::new(FullIntraRequest {
                sender_ssrc: 0,
                media_ssrc: 0,
                fir: vec![FirEntry {
                    ssrc: media_ssrc,
                    sequence_number: 1,
                }],
            })
        } else {
            Box::new(PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc,
            })
        };
        self.subscriber
            .write_rtcp(&[packet])
            .await
            .expect("keyframe request sent");
    }

    /// The client's own addresses (local side of the selected ICE pair) of its publisher
    /// and subscriber connections, once connected.
    pub async fn media_addresses(&self) -> Vec<SocketAddr> {
        let mut addresses = Vec::new();
        for pc in [&self.publisher, &self.subscriber] {
            let pair = pc
                .sctp()
                .transport()
                .ice_transport()
                .get_selected_candidate_pair()
                .await;
            if let Some(pair) = pair {
                if let Ok(ip) = pair.local.address.parse::<std::net::IpAddr>() {
                    addresses.push(SocketAddr::new(ip, pair.local.port));
                }
            }
        }
        addresses
    }

    /// Stops publishing media (the connections stay up).
    pub fn stop_media(&mut self) {
        for task in self.media_tasks.drain(..) {
            task.abort();
        }
    }

    pub fn snapshot(&self) -> HashMap<(String, String), u64> {
        self.received.lock().unwrap().clone()
    }

    pub fn saw(&self, predicate: impl Fn(&Value) -> bool) -> bool {
        self.events.lock().unwrap().iter().any(predicate)
    }

    pub async fn close(self) {
        for task in self.tasks.iter().chain(&self.media_tasks) {
            task.abort();
        }
        let _ = self.publisher.close().await;
        let _ = self.subscriber.close().await;
        for mux in &self.muxes {
            use webrtc::ice::udp_mux::UDPMux;
            let _ = mux.close().await;
        }
    }
}

/// A hash of a received packet's header and payload, to tell a byte-identical
/// retransmission from a different packet under the same sequence number.
fn packet_digest(packet: &webrtc::rtp::packet::Packet) -> u64 {
    use std::hash::{Hash, Hasher};
    use webrtc::util::Marshal;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    packet
        .marshal()
        .map(|bytes| bytes.to_vec())
        .unwrap_or_default()
        .hash(&mut hasher);
    hasher.finish()
}

/// Records the RTX packets a connection receives (see [`client_api_with`]).
struct RtxTapBuilder(RtxPackets);

impl webrtc::interceptor::InterceptorBuilder for RtxTapBuilder {
    fn build(
        &self,
        _id: &str,
    ) -> Result<Arc<dyn webrtc::interceptor::Interceptor + Send + Sync>, webrtc::interceptor::Error>
    {
        Ok(Arc::new(RtxTap(self.0.clone())))
    }
}

struct RtxTap(RtxPackets);

#[async_trait::async_trait]
impl webrtc::interceptor::Interceptor for RtxTap {
    async fn bind_rtcp_reader(
        &self,
        reader: Arc<dyn webrtc::interceptor::RTCPReader + Send + Sync>,
    ) -> Arc<dyn webrtc::interceptor::RTCPReader + Send + Sync> {
        reader
    }

    async fn bind_rtcp_writer(
        &self,
        writer: Arc<dyn webrtc::interceptor::RTCPWriter + Send + Sync>,
    ) -> Arc<dyn webrtc::interceptor::RTCPWriter + Send + Sync> {
        writer
    }

    async fn bind_local_stream(
        &self,
        _info: &webrtc::interceptor::stream_info::StreamInfo,
        writer: Arc<dyn webrtc::interceptor::RTPWriter + Send + Sync>,
    ) -> Arc<dyn webrtc::interceptor::RTPWriter + Send + Sync> {
        writer
    }

    async fn unbind_local_stream(&self, _info: &webrtc::interceptor::stream_info::StreamInfo) {}

    async fn bind_remote_stream(
        &self,
        info: &webrtc::interceptor::stream_info::StreamInfo,
        reader: Arc<dyn webrtc::interceptor::RTPReader + Send + Sync>,
    ) -> Arc<dyn webrtc::interceptor::RTPReader + Send + Sync> {
        if info.mime_type.eq_ignore_ascii_case("video/rtx") {
            Arc::new(RtxTapReader {
                inner: reader,
                packets: self.0.clone(),
            })
        } else {
            reader
        }
    }

    async fn unbind_remote_stream(&self, _info: &webrtc::interceptor::stream_info::StreamInfo) {}

    async fn close(&self) -> Result<(), webrtc::interceptor::Error> {
        Ok(())
    }
}

struct RtxTapReader {
    inner: Arc<dyn webrtc::interceptor::RTPReader + Send + Sync>,
    packets: RtxPackets,
}

#[async_trait::async_trait]
impl webrtc::interceptor::RTPReader for RtxTapReader {
    async fn read(
        &self,
        buf: &mut [u8],
        attributes: &webrtc::interceptor::Attributes,
    ) -> Result<
        (webrtc::rtp::packet::Packet, webrtc::interceptor::Attributes),
        webrtc::interceptor::Error,
    > {
        let (packet, attributes) = self.inner.read(buf, attributes).await?;
        self.packets.lock().unwrap().push((
            packet.header.ssrc,
            packet.header.sequence_number,
            packet.payload.to_vec(),
        ));
        Ok((packet, attributes))
    }
}

/// Where a [`CapturingTrack`] was bound: its SSRC and the sender's writer; and the
/// camera's next sequence number, shared with the synthetic camera so raw packets take
/// their place in its stream (SRTP's replay window refuses numbers far from it).
#[derive(Default)]
struct RawWriter {
    binding: Mutex<Option<(u32, Arc<dyn TrackLocalWriter + Send + Sync>)>>,
    next_seq: Arc<std::sync::atomic::AtomicU16>,
}

/// A local track that behaves as `inner` and keeps the sender's raw writer, so a test can
/// send packets `inner` would never write (another payload type, any size).
struct CapturingTrack {
    inner: Arc<TrackLocalStaticRTP>,
    raw: Arc<RawWriter>,
}

#[async_trait::async_trait]
impl webrtc::track::track_local::TrackLocal for CapturingTrack {
    async fn bind(
        &self,
        t: &webrtc::track::track_local::TrackLocalContext,
    ) -> webrtc::error::Result<webrtc::rtp_transceiver::rtp_codec::RTCRtpCodecParameters> {
        let codec = self.inner.bind(t).await?;
        *self.raw.binding.lock().unwrap() = Some((t.ssrc(), t.write_stream()));
        Ok(codec)
    }

    async fn unbind(
        &self,
        t: &webrtc::track::track_local::TrackLocalContext,
    ) -> webrtc::error::Result<()> {
        *self.raw.binding.lock().unwrap() = None;
        self.inner.unbind(t).await
    }

    fn id(&self) -> &str {
        self.inner.id()
    }

    fn rid(&self) -> Option<&str> {
        self.inner.rid()
    }

    fn stream_id(&self) -> &str {
        self.inner.stream_id()
    }

    fn kind(&self) -> webrtc::rtp_transceiver::rtp_codec::RTPCodecType {
        self.inner.kind()
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// A participant that signals by hand: a real webrtc-rs publisher connection, so its
/// offers (and ICE restarts) are genuine, and whatever candidates it likes.
pub struct Mallory {
    pub ws: Ws,
    pub pc: Arc<RTCPeerConnection>,
    /// Whether to apply the server's answers (without, the server's ICE agent keeps
    /// checking every pair: the most its candidates can make it send).
    pub apply_answers: bool,
}

impl Mallory {
    pub async fn join(server: &impl Endpoint, room: &str, name: &str) -> Mallory {
        let (mut ws, _) = tokio_tungstenite::connect_async(server.ws_url())
            .await
            .expect("websocket connects");
        send_json(
            &mut ws,
            json!({"type": "join", "room": room, "name": name, "token": dev_token(room, name)}),
        )
        .await;
        recv_type(&mut ws, "joined", Duration::from_secs(5)).await;
        // (The API's socket stays open for the rest of this short test.)
        let pc = Arc::new(
            client_api()
                .0
                .new_peer_connection(RTCConfiguration::default())
                .await
                .unwrap(),
        );
        pc.add_transceiver_from_kind(RTPCodecType::Video, None)
            .await
            .unwrap();
        Mallory {
            ws,
            pc,
            apply_answers: true,
        }
    }

    /// Sends a publish_offer (an ICE restart when `restart`) naming `targets` in its SDP.
    pub async fn offer(&mut self, restart: bool, targets: &[SocketAddr]) {
        let options = restart.then(|| RTCOfferOptions {
            ice_restart: true,
            ..Default::default()
        });
        let offer = self.pc.create_offer(options).await.unwrap();
        let mut gathered = self.pc.gathering_complete_promise().await;
        self.pc.set_local_description(offer).await.unwrap();
        let _ = gathered.recv().await;
        let mut sdp = self.pc.local_description().await.unwrap().sdp;
        for (i, target) in targets.iter().enumerate() {
            sdp.push_str(&candidate_line(i, *target));
            sdp.push_str("\r\n");
        }
        send_json(&mut self.ws, json!({"type": "publish_offer", "sdp": sdp})).await;
    }

    pub async fn trickle(&mut self, index: usize, target: SocketAddr) {
        send_json(
            &mut self.ws,
            json!({"type": "candidate", "target": "publisher",
                   "candidate": {"candidate": &candidate_line(index, target)[2..]}}),
        )
        .await;
    }

    /// Reads whatever the server sent, as [`Self::drain`] does, and counts the messages
    /// whose `field` is `value` (e.g. `"type"`, `"error"`).
    pub async fn drain_counting(&mut self, field: &str, value: &str) -> usize {
        self.drain()
            .await
            .iter()
            .filter(|m| m[field] == value)
            .count()
    }

    /// Reads whatever the server sent (answers, errors), applying answers.
    pub async fn drain(&mut self) -> Vec<Value> {
        let mut seen = Vec::new();
        while let Ok(Some(Ok(message))) =
            tokio::time::timeout(Duration::from_millis(5), self.ws.next()).await
        {
            if let tokio_tungstenite::tungstenite::Message::Close(frame) = &message {
                panic!("mallory's socket was closed: {frame:?}");
            }
            let Ok(text) = message.into_text() else {
                continue;
            };
            let Ok(m) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            if m["type"] == "publish_answer" && self.apply_answers {
                let answer = webrtc::peer_connection::sdp::session_description::RTCSessionDescription::answer(
                    m["sdp"].as_str().unwrap().to_owned(),
                )
                .unwrap();
                let _ = self.pc.set_remote_description(answer).await;
            }
            seen.push(m);
        }
        seen
    }
}

/// An `a=candidate` line for `target` with priority high enough to be checked first.
pub fn candidate_line(index: usize, target: SocketAddr) -> String {
    format!(
        "a=candidate:{} 1 udp 2130706431 {} {} typ host",
        9000 + index,
        target.ip(),
        target.port()
    )
}

/// Applies a subscribe offer and returns the complete answer (candidates gathered).
async fn answer_offer(
    pc: &RTCPeerConnection,
    offer: RTCSessionDescription,
) -> webrtc::error::Result<String> {
    pc.set_remote_description(offer).await?;
    let answer = pc.create_answer(None).await?;
    let mut gathered = pc.gathering_complete_promise().await;
    pc.set_local_description(answer).await?;
    let _ = gathered.recv().await;
    Ok(pc
        .local_description()
        .await
        .map(|d| d.sdp)
        .unwrap_or_default())
}

/// Writes RTP at a steady rate: `size`-byte payloads every `interval`. Video payloads
/// start the way their codec marks a keyframe (every 60th frame) or a delta frame, so the
/// server's keyframe detection sees what a real encoder sends.
async fn send_synthetic(
    track: Arc<TrackLocalStaticRTP>,
    interval: Duration,
    size: usize,
    video: Option<VideoCodec>,
    next_seq: Arc<std::sync::atomic::AtomicU16>,
) {
    // A short interval is a burst at start-up (what matters is the moment DTLS comes up);
    // after `BURST` packets the track settles to a real microphone's 20 ms.
    const BURST: u64 = 500;
    const STEADY: Duration = Duration::from_millis(20);
    let mut ticker = tokio::time::interval(interval);
    let clock_rate_khz = if video.is_some() { 90 } else { 48 };
    let mut clock_step = (clock_rate_khz * interval.as_micros() / 1000) as u32;
    next_seq.store(1, Ordering::Relaxed);
    let mut ts: u32 = 0;
    for frame in 0u64.. {
        if frame == BURST && interval < STEADY {
            ticker = tokio::time::interval(STEADY);
            clock_step = (clock_rate_khz * STEADY.as_micros() / 1000) as u32;
        }
        ticker.tick().await;
        let key = frame % 60 == 0;
        let mut payload = vec![0u8; size];
        match video {
            // VP8: descriptor S=1, then the payload header's P bit (0 = keyframe).
            Some(VideoCodec::Vp8) => {
                payload[..2].copy_from_slice(&[0x10, if key { 0x00 } else { 0x01 }])
            }
            // VP9: B=1, and P=1 for an inter frame.
            Some(VideoCodec::Vp9) => payload[0] = if key { 0x08 } else { 0x48 },
            // H.264: an IDR slice, or a non-IDR one.
            Some(VideoCodec::H264) => payload[0] = if key { 0x65 } else { 0x41 },
            None => {}
        }
        let packet = webrtc::rtp::packet::Packet {
            header: webrtc::rtp::header::Header {
                version: 2,
                marker: true,
                sequence_number: next_seq.fetch_add(1, Ordering::Relaxed),
                timestamp: ts,
                ..Default::default()
            },
            payload: payload.into(),
        };
        if track.write_rtp(&packet).await.is_err() {
            return;
        }
        ts = ts.wrapping_add(clock_step);
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// A join token for `identity` in `room`, signed with development mode's key (the test
/// server runs on the embedded defaults, where dev mode is on).
pub fn dev_token(room: &str, identity: &str) -> String {
    token_with(identity, Grant::join(room))
}

/// A token for `identity` with `grant`, signed with the development key, valid for an hour.
pub fn token_with(identity: &str, grant: Grant) -> String {
    mint(
        &Claims::new(DEV_API_KEY, identity, unix_now(), 3600).with_grant(grant),
        DEV_API_SECRET,
    )
}

/// A GET of `path` with `headers`: the status, the response headers (names lowercased)
/// and the body.
pub async fn http_get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, HashMap<String, String>, String) {
    http_request(addr, "GET", path, headers, "").await
}

/// One HTTP/1.1 request on a fresh connection (closed after the response): the status,
/// the response headers (names lowercased) and the body, de-chunked.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, HashMap<String, String>, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.expect("HTTP connects");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream
        .write_all(request.as_bytes())
        .await
        .expect("HTTP write");
    // A server refusing a large body may answer (and close) before reading it all.
    let _ = stream.write_all(body.as_bytes()).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("HTTP response in time");
    let text = String::from_utf8_lossy(&response);
    let (head, payload) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let body = if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        dechunk(payload)
    } else {
        payload.to_owned()
    };
    (status, headers, body)
}

/// Polls `condition` every 50 ms until it holds, or panics with `what` after `within`.
pub async fn wait_until(what: &str, within: Duration, condition: impl FnMut() -> bool) {
    if let Err(e) = try_wait_until(what, within, condition).await {
        panic!("{e}");
    }
}

/// As [`wait_until`], returning the timeout as an error so the caller can add detail.
pub async fn try_wait_until(
    what: &str,
    within: Duration,
    mut condition: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + within;
    while !condition() {
        if tokio::time::Instant::now() > deadline {
            return Err(format!("timed out after {within:?} waiting for: {what}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
