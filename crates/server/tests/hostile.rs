//! A real meeting while hostile clients do everything the hardening is about, at once:
//! the meeting keeps flowing, the server's memory and descriptors stay bounded, `/healthz`
//! answers throughout, and each abuse gets what it should (refused, limited, closed).
//!
//! The abuses: naming the participants' addresses as ICE candidates with ICE restarts;
//! thousands of trickled candidates; floods of messages; padded re-offers; NACKs naming
//! 4,250 packets, 100 a second; idle sockets, WebSockets that never join and slowloris
//! headers from several addresses; tokens with hostile names; garbage datagrams on the
//! media port. The server runs as its own process (its memory and fds are its own).

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    dev_token, http_get, recv_type, send_json, Endpoint, Mallory, RtcClient, ServerProcess,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use webrtc::rtcp::transport_feedbacks::transport_layer_nack::NackPair;

const ABUSE: Duration = Duration::from_secs(15);

async fn connect_from(from: &str, server: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0))?;
    socket.connect(server).await
}

/// How long a counter went without moving, sampled every 20 ms while `running`.
fn watch_stall(
    count: impl Fn() -> u64 + Send + 'static,
    running: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Duration> {
    tokio::spawn(async move {
        let mut last = count();
        let mut moved = Instant::now();
        let mut longest = Duration::ZERO;
        while running.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = count();
            if now > last {
                last = now;
                moved = Instant::now();
            }
            longest = longest.max(moved.elapsed());
        }
        longest
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_meeting_survives_every_abuse_at_once() {
    let server = ServerProcess::start(&[], None).await;
    let alice = RtcClient::join(&server, "meeting", "alice").await;
    let bob = RtcClient::join(&server, "meeting", "bob").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(alice.count(&bob.id, "bob-cam") > 20 && bob.count(&alice.id, "alice-cam") > 20) {
        assert!(Instant::now() < deadline, "the meeting's media flows");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let baseline = (server.resident_kib(), server.open_fds());
    let mut victims = alice.media_addresses().await;
    victims.extend(bob.media_addresses().await);

    let running = Arc::new(AtomicBool::new(true));
    let alice = Arc::new(alice);
    let bob = Arc::new(bob);
    let stalls = [
        {
            let (a, b) = (alice.clone(), bob.id.clone());
            watch_stall(move || a.count(&b, "bob-mic"), running.clone())
        },
        {
            let (a, b) = (alice.clone(), bob.id.clone());
            watch_stall(move || a.count(&b, "bob-cam"), running.clone())
        },
        {
            let (b, a) = (bob.clone(), alice.id.clone());
            watch_stall(move || b.count(&a, "alice-mic"), running.clone())
        },
        {
            let (b, a) = (bob.clone(), alice.id.clone());
            watch_stall(move || b.count(&a, "alice-cam"), running.clone())
        },
    ];
    let health_failures = Arc::new(AtomicU64::new(0));
    let health = {
        let (running, failures, http) = (running.clone(), health_failures.clone(), server.http);
        tokio::spawn(async move {
            let mut checks = 0u64;
            while running.load(Ordering::Relaxed) {
                let answered =
                    tokio::time::timeout(Duration::from_secs(2), http_get(http, "/healthz", &[]))
                        .await;
                if !matches!(answered, Ok((200, _, _))) {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                checks += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            checks
        })
    };

    let mut abuses = Vec::new();
    // 1. Naming the participants' addresses, in offers and trickled, restarting ICE every
    //    1.5 s (most restarts are refused).
    {
        let (ws_url, victims, running) = (server.ws_url(), victims.clone(), running.clone());
        abuses.push(tokio::spawn(async move {
            let endpoint = Url(ws_url);
            let mut mallory = Mallory::join(&endpoint, "meeting", "mallory").await;
            let mut restarts = 0;
            while running.load(Ordering::Relaxed) {
                mallory.offer(restarts > 0, &victims).await;
                for (i, v) in victims.iter().enumerate() {
                    mallory.trickle(i, *v).await;
                }
                restarts += 1;
                let until = Instant::now() + Duration::from_millis(1500);
                while Instant::now() < until {
                    mallory.drain().await;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            format!("{restarts} offers naming the participants")
        }));
    }
    // 2. Floods: 1,000 messages at once, again and again (each socket is closed).
    {
        let (ws_url, running) = (server.ws_url(), running.clone());
        abuses.push(tokio::spawn(async move {
            let mut closed = 0;
            while running.load(Ordering::Relaxed) {
                let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
                let name = format!("flooder-{closed}");
                send_json(&mut ws, json!({"type": "join", "room": "meeting", "name": name, "token": dev_token("meeting", &name)})).await;
                recv_type(&mut ws, "joined", Duration::from_secs(5)).await;
                for i in 0..1000 {
                    let candidate = format!("candidate:1 1 udp 1 10.{}.{}.1 9 typ host", i / 250, i % 250);
                    let m = json!({"type": "candidate", "target": "publisher", "candidate": {"candidate": candidate}});
                    if ws.send(Message::Text(m.to_string().into())).await.is_err() {
                        break;
                    }
                }
                while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(2), ws.next()).await {
                    if let Message::Close(Some(frame)) = m {
                        assert_eq!(u16::from(frame.code), 1008, "{frame:?}");
                        closed += 1;
                        break;
                    }
                }
            }
            format!("{closed} flooding sockets closed with 1008")
        }));
    }
    // 3. Padded re-offers, as fast as they go (refused with rate_limited past the burst).
    {
        let (ws_url, running) = (server.ws_url(), running.clone());
        abuses.push(tokio::spawn(async move {
            let endpoint = Url(ws_url);
            let mut mallory = Mallory::join(&endpoint, "meeting", "reofferer").await;
            mallory.offer(false, &[]).await;
            let offer = mallory.pc.local_description().await.unwrap().sdp;
            let mut padded = offer.clone();
            while padded.len() < 58_000 {
                padded.push_str(&format!("a=x-pad:{}\r\n", "p".repeat(1000)));
            }
            let mut limited = 0;
            while running.load(Ordering::Relaxed) {
                send_json(
                    &mut mallory.ws,
                    json!({"type": "publish_offer", "sdp": padded}),
                )
                .await;
                limited += mallory.drain_counting("code", "rate_limited").await;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            assert!(limited > 0, "re-offers are rate-limited");
            format!("{limited} re-offers refused with rate_limited")
        }));
    }
    // 4. NACKs naming 4,250 packets each (250 pairs, every bit), 100 a second, from a
    //    subscriber of bob's camera.
    {
        let (ws_url, running, bob_id) = (server.ws_url(), running.clone(), bob.id.clone());
        abuses.push(tokio::spawn(async move {
            let endpoint = Url(ws_url);
            let carol = RtcClient::join(&endpoint, "meeting", "carol").await;
            let deadline = Instant::now() + Duration::from_secs(20);
            while carol.seen(&bob_id, "bob-cam").is_none() {
                assert!(Instant::now() < deadline, "carol receives bob's camera");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let ssrc = carol.seen(&bob_id, "bob-cam").unwrap().ssrc;
            let mut sent = 0;
            while running.load(Ordering::Relaxed) {
                let newest = carol.seen(&bob_id, "bob-cam").unwrap().last_seq;
                // 250 pairs: webrtc-rs writes no more in one NACK.
                let pairs = (0..250u16)
                    .map(|i| NackPair {
                        packet_id: newest.wrapping_sub(17 * i),
                        lost_packets: 0xffff,
                    })
                    .collect();
                carol.send_nack_pairs(ssrc, pairs).await;
                sent += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            carol.close().await;
            format!("{sent} NACKs of 4,250 packets")
        }));
    }
    // 5. Idle sockets, WebSockets that never join, and slowloris headers, from several
    //    addresses (each capped at server.max_unauthenticated_per_ip, 64).
    {
        let (http, ws_url, running) = (server.http, server.ws_url(), running.clone());
        abuses.push(tokio::spawn(async move {
            let mut held = Vec::new();
            let mut refused = 0;
            for source in 2..=6 {
                for _ in 0..80 {
                    match connect_from(&format!("127.0.0.{source}"), http).await {
                        Ok(s) => held.push(s),
                        Err(_) => refused += 1,
                    }
                }
            }
            let mut silent_ws = Vec::new();
            for _ in 0..30 {
                if let Ok((ws, _)) = tokio_tungstenite::connect_async(&ws_url).await {
                    silent_ws.push(ws);
                }
            }
            let mut slow = Vec::new();
            for _ in 0..20 {
                if let Ok(s) = connect_from("127.0.0.7", http).await {
                    slow.push(s);
                }
            }
            while running.load(Ordering::Relaxed) {
                for s in &mut slow {
                    let _ = s.write_all(b"X").await;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            format!(
                "{} idle sockets held ({refused} refused), {} silent WebSockets, {} slow headers",
                held.len(),
                silent_ws.len(),
                slow.len()
            )
        }));
    }
    // 6. Tokens with hostile claims, and garbage on the media port.
    {
        let (ws_url, udp, running) = (server.ws_url(), server.udp, running.clone());
        abuses.push(tokio::spawn(async move {
            use switchyard_signal::token::{mint, unix_now, Claims, Grant, DEV_API_KEY, DEV_API_SECRET};
            let mut refused = 0;
            let noise = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
            let mut datagrams = 0;
            while running.load(Ordering::Relaxed) {
                let mut claims = Claims::new(DEV_API_KEY, "eve\n\u{1b}[2J", unix_now(), 60).with_grant(Grant::join("meeting"));
                claims.name = Some("E".repeat(40_000));
                let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
                send_json(&mut ws, json!({"type": "join", "room": "meeting", "name": "eve", "token": mint(&claims, DEV_API_SECRET)})).await;
                let m = recv_type(&mut ws, "error", Duration::from_secs(5)).await;
                assert_eq!(m["code"], "unauthorized");
                refused += 1;
                for _ in 0..500 {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let len = (seed % 1200) as usize + 1;
                    let mut d: Vec<u8> = (0..len).map(|i| (seed >> (i % 56)) as u8).collect();
                    d[0] = [0x00, 0x80, 0x16][(seed % 3) as usize];
                    let _ = noise.send_to(&d, udp).await;
                    datagrams += 1;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            format!("{refused} hostile tokens refused, {datagrams} garbage datagrams")
        }));
    }

    tokio::time::sleep(ABUSE).await;
    let peak = (server.resident_kib(), server.open_fds());
    running.store(false, Ordering::Relaxed);
    for abuse in abuses {
        let report = tokio::time::timeout(Duration::from_secs(20), abuse)
            .await
            .expect("the abuse ends")
            .expect("the abuse ran as expected");
        eprintln!("abuse: {report}");
    }
    let mut longest = Vec::new();
    for stall in stalls {
        longest.push(stall.await.unwrap());
    }
    let checks = health.await.unwrap();
    eprintln!(
        "longest stalls (alice<-bob mic, cam; bob<-alice mic, cam): {longest:?}; healthz {checks} checks, {} failed",
        health_failures.load(Ordering::Relaxed)
    );
    eprintln!(
        "server: resident {} KiB -> {} KiB at the peak, fds {} -> {}",
        baseline.0, peak.0, baseline.1, peak.1
    );

    // The meeting never stopped: no stall a person would notice.
    for stall in &longest {
        assert!(*stall < Duration::from_millis(1500), "a stall of {stall:?}");
    }
    assert_eq!(health_failures.load(Ordering::Relaxed), 0, "healthz failed");
    assert!(!alice.saw(|m| m["type"] == "participant_left" && m["participant_id"] == bob.id));
    // Bounded: the abuses hold at most their per-address connections, and memory does not
    // run away.
    assert!(
        peak.1 < baseline.1 + 5 * 64 + 100,
        "fds {} -> {}",
        baseline.1,
        peak.1
    );
    assert!(
        peak.0 < baseline.0 + 200 * 1024,
        "resident {} KiB -> {} KiB",
        baseline.0,
        peak.0
    );
    let skipped = {
        let (_, _, body) = http_get(server.http, "/metrics", &[]).await;
        body.lines()
            .find(|l| l.starts_with("switchyard_nack_resends_skipped_total{reason=\"over_limit\"}"))
            .and_then(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let nack_lines: Vec<String> = {
        let (_, _, body) = http_get(server.http, "/metrics", &[]).await;
        body.lines()
            .filter(|l| l.contains("nack") || l.contains("retransmit"))
            .map(str::to_owned)
            .collect()
    };
    assert!(
        skipped > 0.0,
        "the NACK flood was limited and counted: {nack_lines:#?}"
    );

    // Once the abusers are gone, their descriptors are released (idle ones by the header
    // timeout, 5 s).
    let deadline = Instant::now() + Duration::from_secs(15);
    while server.open_fds() > baseline.1 + 10 {
        assert!(
            Instant::now() < deadline,
            "fds {} -> {}",
            baseline.1,
            server.open_fds()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = server.stop().await;
    assert!(!log.contains("panicked"), "the server panicked:\n{log}");
}

/// A server reached by its WebSocket URL only.
struct Url(String);

impl Endpoint for Url {
    fn ws_url(&self) -> String {
        self.0.clone()
    }
}
