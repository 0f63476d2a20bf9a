//! Re-offers cannot make the server keep state: a client that re-offers (padded to the
//! message limit) before its publisher connection is up leaves at most one offer pending,
//! so 300 of them cost no memory (webrtc-rs queues every re-offer, with a copy of its whole
//! description, behind the first negotiation; the outside tester saw 2,000 of them leave
//! the server at 590 MB).

mod common;

use std::time::{Duration, Instant};

use common::{client_api, dev_token, recv_type, send_json, TestServer, TestServerExt};
use futures_util::StreamExt;
use serde_json::{json, Value};
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::rtp_transceiver::rtp_codec::RTPCodecType;

fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn re_offers_before_the_connection_is_up_keep_one_pending() {
    // Limits on message and offer rates raised, so the deferral itself is what is tested.
    let server = TestServer::start_with(&[
        ("SWITCHYARD_SIGNAL_MESSAGES_PER_SECOND", "100000"),
        ("SWITCHYARD_SIGNAL_MESSAGE_BURST", "100000"),
        ("SWITCHYARD_SIGNAL_PUBLISH_OFFERS_PER_MINUTE", "100000"),
        ("SWITCHYARD_SIGNAL_PUBLISH_OFFER_BURST", "100000"),
    ])
    .await;
    let mut ws = server.connect().await;
    send_json(
        &mut ws,
        json!({"type": "join", "room": "r", "name": "reofferer", "token": dev_token("r", "reofferer")}),
    )
    .await;
    recv_type(&mut ws, "joined", Duration::from_secs(5)).await;
    // A genuine offer, never followed by the answer: the connection never comes up.
    let (api, _mux) = client_api();
    let pc = api
        .new_peer_connection(RTCConfiguration::default())
        .await
        .unwrap();
    pc.add_transceiver_from_kind(RTPCodecType::Video, None)
        .await
        .unwrap();
    pc.add_transceiver_from_kind(RTPCodecType::Audio, None)
        .await
        .unwrap();
    let offer = pc.create_offer(None).await.unwrap();
    pc.set_local_description(offer).await.unwrap();
    let sdp = pc.local_description().await.unwrap().sdp;
    send_json(&mut ws, json!({"type": "publish_offer", "sdp": sdp})).await;
    recv_type(&mut ws, "publish_answer", Duration::from_secs(5)).await;

    // The same offer padded towards the 64 KiB message limit, 300 times.
    let mut padded = sdp.clone();
    while padded.len() < 58_000 {
        padded.push_str(&format!("a=x-pad:{}\r\n", "p".repeat(1000)));
    }
    let before = resident_kib();
    let started = Instant::now();
    for _ in 0..300 {
        send_json(&mut ws, json!({"type": "publish_offer", "sdp": padded})).await;
    }
    // Give the participant time to take them all (and webrtc-rs to queue them, if it did).
    let (status, _) = server.http("GET", "/healthz", None, None).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = resident_kib();
    let grown_mib = after.saturating_sub(before) as f64 / 1024.0;
    eprintln!(
        "300 padded re-offers in {:?}: resident {before} KiB -> {after} KiB (+{grown_mib:.1} MiB)",
        started.elapsed()
    );
    assert!(
        grown_mib < 12.0,
        "300 re-offers of {} bytes grew the process by {grown_mib:.1} MiB",
        padded.len()
    );
    // None was answered (nor refused): the newest waits for the connection.
    let mut answered = Vec::new();
    while let Ok(Some(Ok(message))) =
        tokio::time::timeout(Duration::from_millis(200), ws.next()).await
    {
        if let Ok(text) = message.into_text() {
            let m: Value = serde_json::from_str(&text).unwrap();
            if m["type"] == "publish_answer" || m["type"] == "error" {
                answered.push(m["type"].clone());
            }
        }
    }
    assert!(answered.is_empty(), "{answered:?}");
    let _ = pc.close().await;
}
