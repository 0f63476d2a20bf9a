//! The Janus target against a real Janus (Debian's 1.1.2) on loopback, with webrtc-rs
//! peers on both sides: what the load generator will do, minus the load.
//!
//! Janus is started by `loadtest/janus/run-janus.sh` (which builds the loopback shim with
//! gcc). Without janus installed these tests FAIL, naming the install script: a skipped
//! test would count as passed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use switchyard_loadtest::target::janus::{JanusTarget, Substream};
use switchyard_loadtest::target::{Session, Target};

use webrtc::api::interceptor_registry::register_default_interceptors;
use webrtc::api::media_engine::{MediaEngine, MIME_TYPE_OPUS, MIME_TYPE_VP8};
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::{APIBuilder, API};
use webrtc::ice::mdns::MulticastDnsMode;
use webrtc::ice::network_type::NetworkType;
use webrtc::interceptor::registry::Registry;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtp::header::Header;
use webrtc::rtp::packet::Packet;
use webrtc::rtp_transceiver::rtp_codec::{
    RTCRtpCodecCapability, RTCRtpHeaderExtensionCapability, RTPCodecType,
};
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_local::{TrackLocal, TrackLocalWriter};

/// Marks this test's payloads, so what arrives is known to be what was sent.
const MAGIC: &[u8; 4] = b"SYJT";

/// A Janus started by run-janus.sh, stopped (SIGTERM to the script, which stops Janus)
/// when dropped.
struct Janus {
    script: Child,
    url: String,
    janus_pid: i32,
    dir: std::path::PathBuf,
}

impl Janus {
    /// Starts Janus; panics, naming the install script, where it is not installed.
    async fn start() -> Janus {
        // `janus --version` exits with 1 even when it works: look at what it prints.
        let installed = std::process::Command::new("janus")
            .arg("--version")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("Janus version"));
        assert!(
            installed,
            "janus not installed: run loadtest/install-janus.sh (scripts/install-test-deps does)"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!(
            "switchyard-janus-test-{}-{port}",
            std::process::id()
        ));
        let mut script = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/janus/run-janus.sh"))
            .args(["--dir", dir.to_str().unwrap(), "--port", &port.to_string()])
            // Bounds a Janus this test could fail to stop.
            .args(["--lifetime", "300"])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(false)
            .spawn()
            .expect("run-janus.sh starts");
        let mut lines = BufReader::new(script.stdout.take().unwrap()).lines();
        let mut vars = HashMap::new();
        let read = async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some((k, v)) = line.split_once('=') {
                    vars.insert(k.to_owned(), v.to_owned());
                }
                if vars.contains_key("JANUS_LOG") {
                    break;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(20), read)
            .await
            .expect("run-janus.sh reports Janus ready within 20 s");
        let url = vars
            .get("JANUS_URL")
            .cloned()
            .unwrap_or_else(|| panic!("run-janus.sh failed (its stderr is above): {vars:?}"));
        let janus_pid = vars["JANUS_PID"].parse().unwrap();
        Janus {
            script,
            url,
            janus_pid,
            dir,
        }
    }
}

impl Drop for Janus {
    fn drop(&mut self) {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        if let Some(pid) = self.script.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
        // In case the script is gone already: Janus itself.
        let _ = kill(Pid::from_raw(self.janus_pid), Signal::SIGTERM);
        // Janus's config and log stay for a failed test to be read.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// One webrtc-rs API (and so its own sockets) per connection, loopback only.
fn api(simulcast: bool) -> API {
    let mut media = MediaEngine::default();
    media.register_default_codecs().unwrap();
    if simulcast {
        // A simulcast sender tags each layer with its rid (and the mid) in header extensions.
        for uri in [
            "urn:ietf:params:rtp-hdrext:sdes:mid",
            "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
        ] {
            media
                .register_header_extension(
                    RTCRtpHeaderExtensionCapability {
                        uri: uri.to_owned(),
                    },
                    RTPCodecType::Video,
                    None,
                )
                .unwrap();
        }
    }
    let registry = register_default_interceptors(Registry::new(), &mut media).unwrap();
    let mut settings = SettingEngine::default();
    settings.set_ice_multicast_dns_mode(MulticastDnsMode::Disabled);
    settings.set_network_types(vec![NetworkType::Udp4]);
    settings.set_include_loopback_candidate(true);
    settings.set_ip_filter(Box::new(|ip| ip.is_loopback()));
    APIBuilder::new()
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_setting_engine(settings)
        .build()
}

async fn peer(simulcast: bool) -> Arc<RTCPeerConnection> {
    Arc::new(
        api(simulcast)
            .new_peer_connection(RTCConfiguration::default())
            .await
            .unwrap(),
    )
}

/// Sets `description` locally and returns the SDP once ICE gathering is done (Janus
/// gets no trickled candidates).
async fn gathered(pc: &RTCPeerConnection, description: RTCSessionDescription) -> String {
    let mut done = pc.gathering_complete_promise().await;
    pc.set_local_description(description).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), done.recv())
        .await
        .expect("ICE gathering completes");
    pc.local_description().await.unwrap().sdp
}

/// A VP8 key frame as Janus parses one (payload descriptor with a 15-bit PictureID, then
/// the key frame header with its start code), followed by the marker: every packet is a
/// key frame, so Janus may switch simulcast layers at any of them.
fn vp8_payload(layer: u8, counter: u32) -> Vec<u8> {
    let picture_id = (counter & 0x7fff) as u16;
    let mut p = vec![
        0x90,
        0x80,
        0x80 | (picture_id >> 8) as u8,
        picture_id as u8,
        0x10,
        0x00,
        0x00,
        0x9d,
        0x01,
        0x2a,
        0x40,
        0x01,
        0xb4,
        0x00,
    ];
    p.extend_from_slice(MAGIC);
    p.push(layer);
    p.extend_from_slice(&counter.to_be_bytes());
    p.resize(300, 0);
    p
}

fn opus_payload(counter: u32) -> Vec<u8> {
    let mut p = vec![0xfc];
    p.extend_from_slice(MAGIC);
    p.push(b'a');
    p.extend_from_slice(&counter.to_be_bytes());
    p.resize(80, 0);
    p
}

/// The layer byte and counter after the marker (Janus rewrites the VP8 descriptor of a
/// simulcast stream, so the marker is searched for, not read at a fixed offset).
fn marker(payload: &[u8]) -> Option<(u8, u32)> {
    let at = payload.windows(4).position(|w| w == MAGIC)? + 4;
    let layer = *payload.get(at)?;
    let counter = u32::from_be_bytes(payload.get(at + 1..at + 5)?.try_into().ok()?);
    Some((layer, counter))
}

/// Sends `payload(counter)` on `track` every `every` until the task is aborted.
fn send_every(
    track: Arc<TrackLocalStaticRTP>,
    every: Duration,
    clock_step: u32,
    payload: impl Fn(u32) -> Vec<u8> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        for counter in 0u32.. {
            tick.tick().await;
            let packet = Packet {
                header: Header {
                    version: 2,
                    marker: true,
                    sequence_number: counter as u16,
                    timestamp: counter.wrapping_mul(clock_step),
                    ..Header::default()
                },
                payload: payload(counter).into(),
            };
            // Before the connection is up writes have nowhere to go; that is fine.
            let _ = track.write_rtp(&packet).await;
        }
    })
}

/// What a subscriber received: per (kind, layer byte) the counters, in arrival order.
type Seen = Arc<Mutex<HashMap<(String, u8), Vec<u32>>>>;

fn count(seen: &Seen, kind: &str, layer: u8) -> usize {
    seen.lock()
        .unwrap()
        .get(&(kind.to_owned(), layer))
        .map_or(0, Vec::len)
}

/// Answers every offer the session gets for its subscriber connection, recording what
/// arrives on the tracks; returns the subscriber connection and the record.
async fn subscribe(session: &mut Box<dyn Session>) -> (Arc<RTCPeerConnection>, Seen) {
    let pc = peer(false).await;
    let seen: Seen = Arc::default();
    {
        let seen = Arc::clone(&seen);
        pc.on_track(Box::new(move |track, _, _| {
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let kind = track.kind().to_string();
                while let Ok((packet, _)) = track.read_rtp().await {
                    if let Some((layer, counter)) = marker(&packet.payload) {
                        seen.lock()
                            .unwrap()
                            .entry((kind.clone(), layer))
                            .or_default()
                            .push(counter);
                    }
                }
            });
            Box::pin(async {})
        }));
    }
    let offer = tokio::time::timeout(Duration::from_secs(20), session.next_subscriber_offer())
        .await
        .expect("Janus offers a subscription within 20 s")
        .unwrap()
        .expect("the session is still up");
    answer_offer(&pc, session, offer).await;
    (pc, seen)
}

async fn answer_offer(pc: &RTCPeerConnection, session: &mut Box<dyn Session>, offer: String) {
    pc.set_remote_description(RTCSessionDescription::offer(offer).unwrap())
        .await
        .unwrap();
    let answer = pc.create_answer(None).await.unwrap();
    let sdp = gathered(pc, answer).await;
    session.answer_subscriber(sdp).await.unwrap();
}

/// Waits until `done`, or fails saying what was awaited and what had arrived.
async fn wait_for(what: &str, within: Duration, seen: &[&Seen], mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        if Instant::now() >= deadline {
            let counts: Vec<HashMap<(String, u8), usize>> = seen
                .iter()
                .map(|s| {
                    s.lock()
                        .unwrap()
                        .iter()
                        .map(|(k, v)| (k.clone(), v.len()))
                        .collect()
                })
                .collect();
            panic!("timed out waiting for {what}; packets seen per (kind, layer): {counts:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_and_video_reach_a_subscriber_through_janus() {
    let janus = Janus::start().await;
    let t0 = Instant::now();
    let target = JanusTarget::new(janus.url.clone());
    target.prepare_room("meeting", 2).await.unwrap();
    // Again: a room left over from an earlier run is replaced, not an error.
    target.prepare_room("meeting", 2).await.unwrap();

    // A room nobody prepared: Janus's refusal comes back as the error.
    let error = target
        .connect("no such room", "mallory")
        .await
        .err()
        .expect("joining an unprepared room fails");
    assert!(
        format!("{error:#}").contains("Janus error 426"),
        "{error:#}"
    );

    let mut alice = target.connect("meeting", "alice").await.unwrap();
    let mut bob = target.connect("meeting", "bob").await.unwrap();
    let joined = t0.elapsed();

    let publisher = peer(false).await;
    let codec = |mime: &str, clock_rate, channels| RTCRtpCodecCapability {
        mime_type: mime.to_owned(),
        clock_rate,
        channels,
        ..Default::default()
    };
    let audio = Arc::new(TrackLocalStaticRTP::new(
        codec(MIME_TYPE_OPUS, 48000, 2),
        "audio".to_owned(),
        "alice".to_owned(),
    ));
    let video = Arc::new(TrackLocalStaticRTP::new(
        codec(MIME_TYPE_VP8, 90000, 0),
        "video".to_owned(),
        "alice".to_owned(),
    ));
    for track in [&audio, &video] {
        let sender = publisher
            .add_track(Arc::clone(track) as Arc<dyn TrackLocal + Send + Sync>)
            .await
            .unwrap();
        // The NACK responder and RTCP reports work only while RTCP is read.
        tokio::spawn(async move { while sender.read_rtcp().await.is_ok() {} });
    }
    let offer = publisher.create_offer(None).await.unwrap();
    let offer = gathered(&publisher, offer).await;
    let answer = alice.publish(offer).await.unwrap();
    assert!(
        answer.contains("m=audio") && answer.contains("m=video"),
        "{answer}"
    );
    publisher
        .set_remote_description(RTCSessionDescription::answer(answer).unwrap())
        .await
        .unwrap();
    let published = t0.elapsed();
    let senders = [
        send_every(
            Arc::clone(&audio),
            Duration::from_millis(20),
            960,
            opus_payload,
        ),
        send_every(Arc::clone(&video), Duration::from_millis(33), 3000, |c| {
            vp8_payload(b'v', c)
        }),
    ];

    // Bob is told about alice once her media is up, and subscribes.
    let (subscriber, seen) = subscribe(&mut bob).await;
    let offered = t0.elapsed();
    wait_for(
        "alice's first packets at bob",
        Duration::from_secs(15),
        &[&seen],
        || count(&seen, "audio", b'a') > 0 && count(&seen, "video", b'v') > 0,
    )
    .await;
    let first_media = t0.elapsed();
    wait_for(
        "50 audio and 30 video packets",
        Duration::from_secs(15),
        &[&seen],
        || count(&seen, "audio", b'a') >= 50 && count(&seen, "video", b'v') >= 30,
    )
    .await;
    {
        let seen = seen.lock().unwrap();
        for key in [("audio".to_owned(), b'a'), ("video".to_owned(), b'v')] {
            let counters = &seen[&key];
            // Loopback: in order, and each counter once.
            assert!(
                counters.windows(2).all(|w| w[0] < w[1]),
                "{key:?} out of order: {counters:?}"
            );
        }
        assert_eq!(seen.len(), 2, "only alice's two streams: {:?}", seen.keys());
    }

    // Alice publishes alone: nothing to subscribe to, so no offer (her own feed is skipped).
    let own =
        tokio::time::timeout(Duration::from_millis(1500), alice.next_subscriber_offer()).await;
    assert!(own.is_err(), "alice was offered something: {own:?}");

    // When alice leaves, Janus renegotiates bob's subscription without her streams.
    for task in &senders {
        task.abort();
    }
    alice.leave().await.unwrap();
    let update = tokio::time::timeout(Duration::from_secs(10), bob.next_subscriber_offer())
        .await
        .expect("Janus updates bob's subscription when alice leaves")
        .unwrap()
        .expect("bob's session is up");
    answer_offer(&subscriber, &mut bob, update).await;
    bob.leave().await.unwrap();
    // Once left, a session offers nothing more.
    assert_eq!(bob.next_subscriber_offer().await.unwrap(), None);

    eprintln!(
        "janus target timing: two joins {:?}, publish answered {:?}, subscriber offer {:?}, first media at the subscriber {:?}, total {:?}",
        joined,
        published,
        offered,
        first_media,
        t0.elapsed()
    );
    publisher.close().await.unwrap();
    subscriber.close().await.unwrap();
    drop(janus);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_gets_the_simulcast_layer_it_asks_for() {
    let janus = Janus::start().await;
    let t0 = Instant::now();
    let medium = JanusTarget::new(janus.url.clone()).with_substream(Substream::Medium);
    let highest = JanusTarget::new(janus.url.clone());
    medium.prepare_room("simulcast", 1).await.unwrap();
    let mut carol = medium.connect("simulcast", "carol").await.unwrap();
    let mut dave = medium.connect("simulcast", "dave").await.unwrap();
    let mut erin = highest.connect("simulcast", "erin").await.unwrap();

    // Three layers named as Chrome names them, lowest first: q, h, f.
    let publisher = peer(true).await;
    let layers: Vec<Arc<TrackLocalStaticRTP>> = ["q", "h", "f"]
        .iter()
        .map(|rid| {
            Arc::new(TrackLocalStaticRTP::new_with_rid(
                RTCRtpCodecCapability {
                    mime_type: MIME_TYPE_VP8.to_owned(),
                    clock_rate: 90000,
                    ..Default::default()
                },
                "video".to_owned(),
                rid.to_string(),
                "carol".to_owned(),
            ))
        })
        .collect();
    let sender = publisher
        .add_track(Arc::clone(&layers[0]) as Arc<dyn TrackLocal + Send + Sync>)
        .await
        .unwrap();
    for layer in &layers[1..] {
        sender
            .add_encoding(Arc::clone(layer) as Arc<dyn TrackLocal + Send + Sync>)
            .await
            .unwrap();
    }
    tokio::spawn(async move { while sender.read_rtcp().await.is_ok() {} });
    let offer = publisher.create_offer(None).await.unwrap();
    let offer = gathered(&publisher, offer).await;
    assert!(offer.contains("a=simulcast:send q;h;f"), "{offer}");
    let answer = carol.publish(offer).await.unwrap();
    publisher
        .set_remote_description(RTCSessionDescription::answer(answer).unwrap())
        .await
        .unwrap();
    let senders: Vec<_> = layers
        .iter()
        .enumerate()
        .map(|(index, track)| {
            send_every(
                Arc::clone(track),
                Duration::from_millis(33),
                3000,
                move |c| vp8_payload(index as u8, c),
            )
        })
        .collect();

    let (dave_pc, dave_seen) = subscribe(&mut dave).await;
    let (erin_pc, erin_seen) = subscribe(&mut erin).await;
    wait_for(
        "40 packets of the asked layer",
        Duration::from_secs(20),
        &[&dave_seen, &erin_seen],
        || count(&dave_seen, "video", 1) >= 40 && count(&erin_seen, "video", 2) >= 40,
    )
    .await;
    for (who, seen, wanted) in [("dave", &dave_seen, 1u8), ("erin", &erin_seen, 2u8)] {
        let seen = seen.lock().unwrap();
        // Janus forwards whichever layer brings the first key frame, then switches to the
        // asked one at its first key frame (every packet here is one): a few packets of
        // another layer may lead, none may follow.
        let others: usize = seen
            .iter()
            .filter(|((_, layer), _)| *layer != wanted)
            .map(|(_, counters)| counters.len())
            .sum();
        assert!(
            others <= 5,
            "{who}: {others} packets of other layers: {:?}",
            seen.keys()
        );
        let wanted_counters = &seen[&("video".to_owned(), wanted)];
        assert!(
            wanted_counters.windows(2).all(|w| w[0] < w[1]),
            "{who}: out of order"
        );
    }
    eprintln!(
        "janus simulcast test: layers as asked after {:?}",
        t0.elapsed()
    );

    for task in senders {
        task.abort();
    }
    for session in [&mut carol, &mut dave, &mut erin] {
        session.leave().await.unwrap();
    }
    for pc in [publisher, dave_pc, erin_pc] {
        pc.close().await.unwrap();
    }
    drop(janus);
}

/// The load generator itself (switchyard-loadtest's `run`) through JanusTarget: two
/// simulcast publishers and a subscriber meet, and the report is what loopback gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generator_runs_a_simulcast_meeting_through_janus() {
    use switchyard_loadtest::client::MediaPlan;
    use switchyard_loadtest::run::{fresh_room_prefix, run, Progress, RunConfig};

    let janus = Janus::start().await;
    let config = RunConfig {
        target: "janus".to_owned(),
        url: janus.url.clone(),
        rooms: 1,
        publishers: 2,
        subscribers: 1,
        media: MediaPlan {
            video_bps: 400_000,
            simulcast: true,
            audio_only: false,
            pacing: switchyard_loadtest::media::BROWSER_PACING,
        },
        duration: Duration::from_secs(4),
        ramp: 20.0,
        server_pid: Some(janus.janus_pid as u32),
        progress: Progress::Off,
        room_prefix: fresh_room_prefix(),
    };
    let report = run(&config, Arc::new(JanusTarget::new(janus.url.clone())))
        .await
        .expect("the run completes");
    let summary = serde_json::to_string_pretty(&report).unwrap();

    let p = &report.participants;
    assert!(report.all_participants_ok(), "{:?}", report.failures);
    assert_eq!(
        (p.total, p.joined, p.received_from_all),
        (3, 3, 3),
        "{summary}"
    );
    // Janus forwards its default layer, the highest: with the rid order read from the
    // generator's offer (q/h/f, lowest first) that is "f", the generator's layer 2.
    for r in &report.receivers {
        let others = if r.identity.starts_with("pub") { 1 } else { 2 };
        let full = r.streams.iter().filter(|s| s.stream == "video2").count();
        assert_eq!(
            full, others,
            "{} gets every other publisher's full layer: {summary}",
            r.identity
        );
    }
    assert!(report.packets.expected > 0);
    assert!(report.packets.loss_pct < 1.0, "{summary}");
    assert_eq!(report.packets.unstamped, 0);
    let p99 = report.latency.p99_ms.expect("latency measured");
    assert!(p99 < 1000.0, "{summary}");
    // The server's figures come from Janus's own /proc entries.
    let server = report.server.as_ref().expect("server figures");
    assert_eq!(server.pid, janus.janus_pid as u32);
    assert!(
        server.cpu_us_per_packet.is_some_and(|us| us > 0.0),
        "{summary}"
    );
    drop(janus);
}
