//! One simulated participant: real webrtc-rs peer connections, signaled through a
//! [`Target`], sending synthetic media and measuring what it receives.
//!
//! Like a browser, each participant has a subscriber connection (the server offers, it
//! answers) and, if it publishes, a publisher connection (it offers audio and VP8 video,
//! simulcast or not). Every connection's ICE agent binds its own UDP socket, as a
//! browser's does: the server tells connections apart by the client's address (see
//! `connection_api` for why there is no UDP mux and the buffers are the kernel's).
//!
//! Nothing here is shared between participants while media flows: each reader task owns
//! its measurements, and the live counters are per participant.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use webrtc::api::interceptor_registry::{configure_nack, configure_rtcp_reports};
use webrtc::api::media_engine::{MediaEngine, MIME_TYPE_OPUS, MIME_TYPE_VP8};
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::{APIBuilder, API};
use webrtc::ice::mdns::MulticastDnsMode;
use webrtc::ice::network_type::NetworkType;
use webrtc::interceptor::registry::Registry;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtp::header::Header;
use webrtc::rtp::packet::Packet;
use webrtc::rtp_transceiver::rtp_codec::{
    RTCRtpCodecCapability, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RTPCodecType,
};
use webrtc::rtp_transceiver::rtp_sender::RTCRtpSender;
use webrtc::rtp_transceiver::rtp_transceiver_direction::RTCRtpTransceiverDirection;
use webrtc::rtp_transceiver::{RTCPFeedback, RTCRtpTransceiverInit};
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_local::TrackLocalWriter;
use webrtc::track::track_remote::TrackRemote;
use webrtc::util::MarshalSize;

use crate::measure::{Arrival, TrackMeter, TrackResult};
use crate::media::{
    self, audio_payload, frame_payload_sizes, unix_micros, video_layers, vp8_payload, Stamp,
    StreamId, VideoLayer,
};
use crate::target::{Session, Target};

/// How long joining and publishing may take before the participant counts as failed.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long leaving and closing may take at the end.
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(5);
const OPUS_PT: u8 = 111;
const VP8_PT: u8 = 96;

/// The end of the measurement: `None` while the run goes on, then the instant it ended.
pub type Stop = watch::Receiver<Option<Instant>>;

/// What publishers send.
#[derive(Debug, Clone, Copy)]
pub struct MediaPlan {
    pub video_bps: u64,
    pub simulcast: bool,
    pub audio_only: bool,
    /// Video is sent at up to this many times its bitrate, as a browser's pacer sends it
    /// ([`media::BROWSER_PACING`]); 0 writes each frame's packets back to back.
    pub pacing: f64,
}

impl MediaPlan {
    /// Streams a receiver gets from each publisher (audio, and video unless audio-only).
    pub fn tracks_per_publisher(&self) -> u32 {
        if self.audio_only {
            1
        } else {
            2
        }
    }
}

/// Who a participant is.
#[derive(Debug, Clone)]
pub struct ParticipantSpec {
    pub room: String,
    pub room_index: usize,
    pub identity: String,
    /// Its publisher index when it publishes.
    pub publisher: Option<u32>,
    /// The publishers it should receive: everyone else who publishes in its room.
    pub expected_publishers: Vec<u32>,
}

/// Live counters of one participant, read by the progress task while the run goes on.
#[derive(Debug, Default)]
pub struct Live {
    pub joined: AtomicBool,
    pub failed: AtomicBool,
    /// Received tracks that delivered at least one stamped packet.
    pub tracks_receiving: AtomicU32,
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    /// Packets expected on the received streams (from their counters), so far.
    pub expected: AtomicU64,
    /// Packets and bytes the publisher connection sent.
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    /// Video frames the publisher produced, and those produced more than a frame
    /// interval late (the generator could not keep up).
    pub frames: AtomicU64,
    pub late_frames: AtomicU64,
    /// PLIs and FIRs the server sent this publisher.
    pub keyframe_requests: AtomicU64,
}

/// What a participant did, handed over when the run ends.
#[derive(Debug)]
pub struct Outcome {
    pub spec: ParticipantSpec,
    /// When it started connecting: the zero of its join and first-media times.
    pub started: Instant,
    /// From `started` until the server said `joined`.
    pub joined_after: Option<Duration>,
    /// Why it failed (joining, publishing, signaling ended early), if it did.
    pub error: Option<String>,
    pub tracks: Vec<TrackResult>,
}

/// The local address to send from: the one the kernel routes towards the server behind
/// `url` (loopback for a local server). Nothing is sent to find it.
pub fn local_ip_towards(url: &str) -> anyhow::Result<IpAddr> {
    let uri: tokio_tungstenite::tungstenite::http::Uri = url
        .parse()
        .with_context(|| format!("`{url}` is not a URL"))?;
    let host = uri.host().context("the URL has no host")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(80);
    let server = (host, port)
        .to_socket_addrs()
        .with_context(|| format!("resolving {host}"))?
        .find(SocketAddr::is_ipv4)
        .with_context(|| format!("{host} has no IPv4 address (the generator uses IPv4)"))?;
    let probe = UdpSocket::bind("0.0.0.0:0")?;
    probe.connect(server)?;
    Ok(probe.local_addr()?.ip())
}

fn media_engine() -> anyhow::Result<MediaEngine> {
    let mut m = MediaEngine::default();
    m.register_codec(
        RTCRtpCodecParameters {
            capability: opus(),
            payload_type: OPUS_PT,
            ..Default::default()
        },
        RTPCodecType::Audio,
    )?;
    m.register_codec(
        RTCRtpCodecParameters {
            capability: RTCRtpCodecCapability {
                // NACK and PLI feedback are added by `configure_nack`.
                rtcp_feedback: vec![RTCPFeedback {
                    typ: "ccm".to_owned(),
                    parameter: "fir".to_owned(),
                }],
                ..vp8()
            },
            payload_type: VP8_PT,
            ..Default::default()
        },
        RTPCodecType::Video,
    )?;
    // mid and rid identify simulcast layers that have no a=ssrc line.
    for (uri, kind) in [
        ("urn:ietf:params:rtp-hdrext:sdes:mid", RTPCodecType::Audio),
        ("urn:ietf:params:rtp-hdrext:sdes:mid", RTPCodecType::Video),
        (
            "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
            RTPCodecType::Video,
        ),
    ] {
        m.register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: uri.to_owned(),
            },
            kind,
            None,
        )?;
    }
    Ok(m)
}

fn opus() -> RTCRtpCodecCapability {
    RTCRtpCodecCapability {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

fn vp8() -> RTCRtpCodecCapability {
    RTCRtpCodecCapability {
        mime_type: MIME_TYPE_VP8.to_owned(),
        clock_rate: 90000,
        ..Default::default()
    }
}

/// An `API` for one peer connection. Its ICE agent binds a socket of its own, one per
/// connection as a browser has, with the kernel's default buffers (208 KiB: about 90
/// full-size packets, over half a second of a 1.5 Mbit/s stream). No UDP mux: the mux's
/// per-connection task hop on every received packet cost the generator 21 % of its CPU at
/// 400 subscribers; without it one core drives 600 (0 loss). With a mux for the publisher
/// only, 600 subscribers lost 13-30 % (not understood; measured twice).
fn connection_api(local_ip: IpAddr) -> anyhow::Result<API> {
    let mut media = media_engine()?;
    // What a browser does: NACKs for lost video (and answers to the server's), and RTCP
    // reports. No TWCC: the server estimates no bandwidth from it, and it costs the
    // generator's CPU on every packet.
    let registry = configure_rtcp_reports(configure_nack(Registry::new(), &mut media));
    let mut settings = SettingEngine::default();
    settings.set_ice_multicast_dns_mode(MulticastDnsMode::Disabled);
    settings.set_network_types(vec![NetworkType::Udp4]);
    settings.set_include_loopback_candidate(local_ip.is_loopback());
    settings.set_ip_filter(Box::new(move |ip| ip == local_ip));
    // The generator measures from its own stamps, never from get_stats: the stats
    // interceptor's message per packet would only eat the core it shares with everyone.
    settings.disable_rtp_stats(true);
    Ok(APIBuilder::new()
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_setting_engine(settings)
        .build())
}

/// What does not change over a participant's life.
struct Ctx<'a> {
    spec: &'a ParticipantSpec,
    plan: MediaPlan,
    local_ip: IpAddr,
    live: &'a Arc<Live>,
    started: Instant,
}

/// What a participant holds until the end of the run.
#[derive(Default)]
struct Conn {
    /// From `started` until `joined`.
    joined_after: Option<Duration>,
    session: Option<Box<dyn Session>>,
    pcs: Vec<Arc<RTCPeerConnection>>,
    /// Media senders and RTCP readers.
    tasks: Vec<JoinHandle<()>>,
    readers: Arc<Mutex<Vec<JoinHandle<TrackResult>>>>,
}

/// Runs one participant until the run's end (`stop`), then leaves and hands over what it
/// measured. Failures end up in [`Outcome::error`]; the participant then stays silent
/// until the end, so the others' measurements are not cut short.
pub async fn run_participant(
    spec: ParticipantSpec,
    plan: MediaPlan,
    target: Arc<dyn Target>,
    local_ip: IpAddr,
    live: Arc<Live>,
    mut stop: Stop,
) -> Outcome {
    let started = Instant::now();
    let ctx = Ctx {
        spec: &spec,
        plan,
        local_ip,
        live: &live,
        started,
    };
    let mut conn = Conn::default();
    let result = participate(&ctx, &*target, &mut stop, &mut conn).await;
    let error = result.err().map(|e| {
        live.failed.store(true, Ordering::Relaxed);
        tracing::warn!(participant = %spec.identity, error = %format!("{e:#}"), "participant failed");
        format!("{e:#}")
    });

    // Readers end themselves when the run does; tracks that start later are not measured.
    stopped_at(&mut stop).await;
    let readers = std::mem::take(&mut *conn.readers.lock().unwrap_or_else(|e| e.into_inner()));
    let mut tracks = Vec::with_capacity(readers.len());
    for reader in readers {
        if let Ok(Ok(result)) = tokio::time::timeout(TEARDOWN_TIMEOUT, reader).await {
            tracks.push(result);
        }
    }
    if let Some(session) = conn.session.as_mut() {
        let _ = tokio::time::timeout(TEARDOWN_TIMEOUT, session.leave()).await;
    }
    for pc in conn.pcs.drain(..) {
        // Handlers hold their captures until replaced (webrtc-rs#772): drop them first.
        pc.on_track(Box::new(|_, _, _| Box::pin(async {})));
        let _ = tokio::time::timeout(TEARDOWN_TIMEOUT, pc.close()).await;
    }
    for task in conn.tasks.drain(..) {
        task.abort();
    }
    Outcome {
        spec,
        started,
        joined_after: conn.joined_after,
        error,
        tracks,
    }
}

async fn stopped_at(stop: &mut Stop) -> Instant {
    match stop.wait_for(Option::is_some).await {
        Ok(end) => end.unwrap_or_else(Instant::now),
        // The run was dropped: stop now.
        Err(_) => Instant::now(),
    }
}

async fn participate(
    ctx: &Ctx<'_>,
    target: &dyn Target,
    stop: &mut Stop,
    conn: &mut Conn,
) -> anyhow::Result<()> {
    let (spec, live) = (ctx.spec, ctx.live);
    let session = tokio::time::timeout(JOIN_TIMEOUT, target.connect(&spec.room, &spec.identity))
        .await
        .context("joining timed out")?
        .context("joining")?;
    conn.joined_after = Some(ctx.started.elapsed());
    live.joined.store(true, Ordering::Relaxed);
    conn.session = Some(session);

    let api = connection_api(ctx.local_ip)?;
    let subscriber = Arc::new(api.new_peer_connection(RTCConfiguration::default()).await?);
    conn.pcs.push(subscriber.clone());
    let readers = conn.readers.clone();
    let (reader_live, reader_stop) = (live.clone(), stop.clone());
    subscriber.on_track(Box::new(move |track, _, _| {
        let reader = tokio::spawn(read_track(track, reader_live.clone(), reader_stop.clone()));
        readers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(reader);
        Box::pin(async {})
    }));

    if let Some(index) = spec.publisher {
        tokio::time::timeout(JOIN_TIMEOUT, publish(ctx, index, stop, conn))
            .await
            .context("publishing timed out")??;
    }

    let session = conn.session.as_mut().expect("set above");
    loop {
        let offer = tokio::select! {
            biased;
            _ = stopped_at(stop) => return Ok(()),
            offer = session.next_subscriber_offer() => offer?,
        };
        let Some(offer) = offer else {
            anyhow::bail!("signaling ended before the run did");
        };
        let answer = answer_offer(&subscriber, offer)
            .await
            .context("answering subscribe_offer")?;
        session.answer_subscriber(answer).await?;
    }
}

/// Applies an offer and returns the complete answer (candidates gathered).
async fn answer_offer(pc: &RTCPeerConnection, offer: String) -> anyhow::Result<String> {
    pc.set_remote_description(RTCSessionDescription::offer(offer)?)
        .await?;
    let answer = pc.create_answer(None).await?;
    let mut gathered = pc.gathering_complete_promise().await;
    pc.set_local_description(answer).await?;
    let _ = gathered.recv().await;
    Ok(pc
        .local_description()
        .await
        .context("no local description")?
        .sdp)
}

async fn publish(ctx: &Ctx<'_>, index: u32, stop: &Stop, conn: &mut Conn) -> anyhow::Result<()> {
    let (plan, live) = (ctx.plan, ctx.live);
    let identity = ctx.spec.identity.as_str();
    let api = connection_api(ctx.local_ip)?;
    let pc = Arc::new(api.new_peer_connection(RTCConfiguration::default()).await?);
    conn.pcs.push(pc.clone());
    let sendonly = || {
        Some(RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Sendonly,
            send_encodings: vec![],
        })
    };

    let audio = Arc::new(TrackLocalStaticRTP::new(
        opus(),
        format!("{identity}-mic"),
        identity.to_owned(),
    ));
    let sender = pc
        .add_transceiver_from_track(audio.clone(), sendonly())
        .await?
        .sender()
        .await;
    // Drained so the RTCP interceptors (reports) keep working.
    conn.tasks.push(tokio::spawn(async move {
        while sender.read_rtcp().await.is_ok() {}
    }));

    let keyframe_wanted: Arc<[AtomicBool; 3]> = Arc::default();
    let mut video = Vec::new();
    if !plan.audio_only {
        let layers = video_layers(plan.video_bps, plan.simulcast);
        let tracks: Vec<_> = layers
            .iter()
            .map(|layer| {
                let id = format!("{identity}-cam");
                Arc::new(if layer.rid.is_empty() {
                    TrackLocalStaticRTP::new(vp8(), id, identity.to_owned())
                } else {
                    TrackLocalStaticRTP::new_with_rid(
                        vp8(),
                        id,
                        layer.rid.to_owned(),
                        identity.to_owned(),
                    )
                })
            })
            .collect();
        let sender = pc
            .add_transceiver_from_track(tracks[0].clone(), sendonly())
            .await?
            .sender()
            .await;
        // Simulcast: one sender, one encoding per rid (a=rid and a=simulcast in the offer).
        for track in &tracks[1..] {
            sender.add_encoding(track.clone()).await?;
        }
        for (layer, info) in layers.iter().enumerate() {
            let rid = plan.simulcast.then_some(info.rid);
            conn.tasks.push(tokio::spawn(read_feedback(
                sender.clone(),
                rid,
                layer,
                keyframe_wanted.clone(),
                live.clone(),
            )));
        }
        video = layers.into_iter().zip(tracks).collect();
    }

    let offer = pc.create_offer(None).await?;
    let mut gathered = pc.gathering_complete_promise().await;
    pc.set_local_description(offer).await?;
    let _ = gathered.recv().await;
    let offer = pc
        .local_description()
        .await
        .context("no local description")?
        .sdp;
    let session = conn.session.as_mut().context("not joined")?;
    let answer = session.publish(offer).await?;
    pc.set_remote_description(RTCSessionDescription::answer(answer)?)
        .await
        .context("applying publish_answer")?;

    conn.tasks.push(tokio::spawn(send_audio(
        audio,
        index,
        live.clone(),
        stop.clone(),
    )));
    if !video.is_empty() {
        conn.tasks.push(tokio::spawn(send_video(
            video,
            plan.pacing,
            index,
            keyframe_wanted,
            live.clone(),
            stop.clone(),
        )));
    }
    Ok(())
}

/// Reads the RTCP the server sends about one video encoding; a PLI or FIR makes the next
/// frame of that layer a keyframe. Reading also keeps the NACK responder working.
async fn read_feedback(
    sender: Arc<RTCRtpSender>,
    rid: Option<&'static str>,
    layer: usize,
    keyframe_wanted: Arc<[AtomicBool; 3]>,
    live: Arc<Live>,
) {
    loop {
        let read = match rid {
            Some(rid) => sender.read_rtcp_simulcast(rid).await,
            None => sender.read_rtcp().await,
        };
        let Ok((packets, _)) = read else { return };
        for packet in packets {
            let any = packet.as_any();
            if any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>() {
                keyframe_wanted[layer].store(true, Ordering::Relaxed);
                live.keyframe_requests.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Writes one packet; false once the track can no longer be written.
async fn write(track: &TrackLocalStaticRTP, header: Header, payload: &[u8], live: &Live) -> bool {
    let packet = Packet {
        header,
        payload: Bytes::copy_from_slice(payload),
    };
    match track.write_rtp(&packet).await {
        // 0 bytes: not bound yet (the connection is still coming up).
        Ok(0) => true,
        Ok(n) => {
            live.tx_packets.fetch_add(1, Ordering::Relaxed);
            live.tx_bytes.fetch_add(n as u64, Ordering::Relaxed);
            true
        }
        Err(_) => false,
    }
}

/// 50 Opus-sized packets a second until the run ends.
async fn send_audio(
    track: Arc<TrackLocalStaticRTP>,
    publisher: u32,
    live: Arc<Live>,
    mut stop: Stop,
) {
    let mut ticker = tokio::time::interval(media::AUDIO_INTERVAL);
    // Behind schedule (a busy generator), skip rather than burst: a real microphone
    // does not catch up either.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut seq: u16 = rand::random();
    let mut ts: u32 = rand::random();
    let mut payload = Vec::with_capacity(media::AUDIO_PAYLOAD);
    for counter in 0u64.. {
        if stop.borrow().is_some() {
            return;
        }
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        let stamp = Stamp {
            publisher,
            stream: StreamId::AUDIO,
            counter,
            sent_us: unix_micros(),
            frame: counter as u32,
            frame_packets: 1,
            index_in_frame: 0,
            keyframe: false,
        };
        audio_payload(&mut payload, &stamp);
        let header = Header {
            version: 2,
            payload_type: OPUS_PT,
            sequence_number: seq,
            timestamp: ts,
            ..Default::default()
        };
        if !write(&track, header, &payload, &live).await {
            return;
        }
        seq = seq.wrapping_add(1);
        ts = ts.wrapping_add(media::AUDIO_TICKS_PER_PACKET);
    }
}

struct LayerState {
    layer: VideoLayer,
    track: Arc<TrackLocalStaticRTP>,
    sizes: Vec<usize>,
    seq: u16,
    ts: u32,
    picture_id: u16,
    counter: u64,
}

/// 30 frames a second on every layer until the run ends; a keyframe every 2 s and
/// whenever the server asks. All layers' packets share one pacer, at `pacing` times
/// their total bitrate.
async fn send_video(
    layers: Vec<(VideoLayer, Arc<TrackLocalStaticRTP>)>,
    pacing: f64,
    publisher: u32,
    keyframe_wanted: Arc<[AtomicBool; 3]>,
    live: Arc<Live>,
    mut stop: Stop,
) {
    let mut layers: Vec<LayerState> = layers
        .into_iter()
        .map(|(layer, track)| LayerState {
            sizes: frame_payload_sizes(layer.bitrate_bps),
            layer,
            track,
            seq: rand::random(),
            ts: rand::random(),
            picture_id: rand::random::<u16>() & 0x7fff,
            counter: 0,
        })
        .collect();
    let total_bps = layers.iter().map(|l| l.layer.bitrate_bps).sum();
    let mut pacer = media::Pacer::new(pacing, total_bps);
    let mut ticker = tokio::time::interval(media::VIDEO_FRAME_INTERVAL);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut payload = Vec::with_capacity(media::MAX_PAYLOAD);
    for frame in 0u64.. {
        if stop.borrow().is_some() {
            return;
        }
        let due = tokio::select! {
            due = ticker.tick() => due,
            _ = stop.changed() => return,
        };
        live.frames.fetch_add(1, Ordering::Relaxed);
        if due.elapsed() > media::VIDEO_FRAME_INTERVAL {
            live.late_frames.fetch_add(1, Ordering::Relaxed);
        }
        for (index, l) in layers.iter_mut().enumerate() {
            let asked = keyframe_wanted[index].swap(false, Ordering::Relaxed);
            let keyframe = frame % media::KEYFRAME_EVERY_FRAMES == 0 || asked;
            let frame_bytes = l.sizes.iter().sum();
            let packets = l.sizes.len();
            for (i, &size) in l.sizes.iter().enumerate() {
                if let Some(pacer) = &mut pacer {
                    let now = Instant::now();
                    let at = pacer.send_at(size, now);
                    if at > now {
                        tokio::time::sleep_until(at.into()).await;
                    }
                }
                let stamp = Stamp {
                    publisher,
                    stream: StreamId::video(index as u8),
                    counter: l.counter,
                    sent_us: unix_micros(),
                    frame: frame as u32,
                    frame_packets: packets as u16,
                    index_in_frame: i as u16,
                    keyframe,
                };
                vp8_payload(
                    &mut payload,
                    l.picture_id,
                    l.layer.width,
                    l.layer.height,
                    &stamp,
                    frame_bytes,
                    size,
                );
                let header = Header {
                    version: 2,
                    marker: i + 1 == packets,
                    payload_type: VP8_PT,
                    sequence_number: l.seq,
                    timestamp: l.ts,
                    ..Default::default()
                };
                if !write(&l.track, header, &payload, &live).await {
                    return;
                }
                l.counter += 1;
                l.seq = l.seq.wrapping_add(1);
            }
            l.picture_id = (l.picture_id + 1) & 0x7fff;
            l.ts = l.ts.wrapping_add(media::VIDEO_TICKS_PER_FRAME);
        }
    }
}

/// Measures one received track until the run ends.
async fn read_track(track: Arc<TrackRemote>, live: Arc<Live>, mut stop: Stop) -> TrackResult {
    let mut meter = TrackMeter::new(track.kind() == RTPCodecType::Video);
    let mut buf = vec![0u8; 1500];
    let mut receiving = false;
    loop {
        if let Some(end) = *stop.borrow() {
            return meter.finish(end);
        }
        // `read` is not cancel-safe, which only matters for the packet in flight when the
        // run ends: it is not measured anyway.
        let read = tokio::select! {
            read = track.read(&mut buf) => read,
            changed = stop.changed() => {
                if changed.is_err() {
                    return meter.finish(Instant::now());
                }
                continue;
            }
        };
        let Ok((packet, _)) = read else {
            // The track ended before the run: silent (frozen) until the end.
            let end = stopped_at(&mut stop).await;
            return meter.finish(end);
        };
        let arrival = Arrival {
            at: Instant::now(),
            at_us: unix_micros(),
            bytes: packet.header.marshal_size() + packet.payload.len(),
        };
        let effect = meter.on_payload(&packet.payload, arrival);
        if effect.new {
            if !receiving {
                receiving = true;
                live.tracks_receiving.fetch_add(1, Ordering::Relaxed);
            }
            live.rx_packets.fetch_add(1, Ordering::Relaxed);
            live.rx_bytes
                .fetch_add(arrival.bytes as u64, Ordering::Relaxed);
        }
        if effect.expected_added > 0 {
            live.expected
                .fetch_add(effect.expected_added, Ordering::Relaxed);
        }
    }
}
