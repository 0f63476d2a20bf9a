//! The forwarding duties around the packets themselves: a new subscriber makes the server
//! ask the publisher for a keyframe; a subscriber's NACK is answered by the server from its
//! own buffer and never reaches the publisher; VP9 and H.264 are forwarded like VP8.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{digest, wait_until, ClientOptions, RtcClient, TestServer, VideoCodec};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn new_subscriber_gets_a_keyframe_request_and_nacks_stay_on_the_server() {
    let server = TestServer::start().await;
    let alice = RtcClient::join(&server, "kf", "alice").await;
    // alice publishes alone for a while: nobody to send a keyframe to yet.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let plis_before = alice.feedback.plis.load(Ordering::Relaxed);

    let bob = RtcClient::join(&server, "kf", "bob").await;
    wait_until(
        "bob receives alice's video",
        Duration::from_secs(20),
        || bob.count(&alice.id, "alice-cam") >= 20,
    )
    .await;
    wait_until(
        "the server asks alice for a keyframe for bob",
        Duration::from_secs(5),
        || alice.feedback.plis.load(Ordering::Relaxed) > plis_before,
    )
    .await;

    // bob NACKs a packet he has: the server retransmits it from its buffer.
    let seen = bob
        .seen(&alice.id, "alice-cam")
        .expect("bob tracks alice-cam");
    assert_eq!(seen.duplicates, 0);
    let nacked = seen.last_seq.wrapping_sub(5);
    bob.send_nack(seen.ssrc, nacked).await;
    wait_until(
        "bob receives the retransmission",
        Duration::from_secs(3),
        || bob.seen(&alice.id, "alice-cam").unwrap().duplicates >= 1,
    )
    .await;
    // ... byte for byte the packet first sent under that number (one SRTP nonce, one
    // plaintext); a second NACK for it right away is not answered again.
    bob.send_nack(seen.ssrc, nacked).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let after = bob.seen(&alice.id, "alice-cam").unwrap();
    assert_eq!(after.mismatched_duplicates, 0);
    assert_eq!(
        after.duplicates, 1,
        "a NACK repeated within 100 ms was answered"
    );
    // ... and alice, the publisher, never hears of it.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        alice.feedback.nacks.load(Ordering::Relaxed),
        0,
        "a subscriber's NACK reached the publisher"
    );
    alice.close().await;
    bob.close().await;
}

/// A subscriber that negotiated RTX (as browsers do) gets resends on the RTX stream: its
/// own SSRC and sequence numbers (never the media stream's SRTP nonces again), carrying the
/// original sequence number and the payload exactly as first sent (RFC 4588).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nacks_are_answered_on_rtx_where_the_subscriber_negotiated_it() {
    let server = TestServer::start().await;
    let alice = RtcClient::join(&server, "rtx", "alice").await;
    let options = ClientOptions {
        rtx: true,
        ..ClientOptions::default()
    };
    let bob = RtcClient::join_opts(&server, "rtx", "bob", options).await;
    wait_until(
        "bob receives alice's video",
        Duration::from_secs(20),
        || bob.count(&alice.id, "alice-cam") >= 20,
    )
    .await;
    let seen = bob.seen(&alice.id, "alice-cam").unwrap();
    let nacked = seen.last_seq.wrapping_sub(5);
    let original = seen.payload_digest(nacked).expect("bob has that packet");
    bob.send_nack(seen.ssrc, nacked).await;
    wait_until("an RTX packet arrives", Duration::from_secs(3), || {
        !bob.rtx.lock().unwrap().is_empty()
    })
    .await;
    let (rtx_ssrc, first_rtx_seq, payload) = bob.rtx.lock().unwrap()[0].clone();
    assert_ne!(rtx_ssrc, seen.ssrc, "its own SSRC");
    assert_eq!(
        &payload[..2],
        &nacked.to_be_bytes(),
        "the original sequence number"
    );
    assert_eq!(digest(&payload[2..]), original, "the payload as first sent");
    // Nothing came again under the media stream's sequence number.
    let after = bob.seen(&alice.id, "alice-cam").unwrap();
    assert_eq!(after.duplicates, 0);
    // Lost again later: another RTX packet, under the next RTX sequence number.
    tokio::time::sleep(Duration::from_millis(150)).await;
    bob.send_nack(seen.ssrc, nacked).await;
    wait_until("a second RTX packet", Duration::from_secs(3), || {
        bob.rtx.lock().unwrap().len() >= 2
    })
    .await;
    let (ssrc, seq, again) = bob.rtx.lock().unwrap()[1].clone();
    assert_eq!((ssrc, seq), (rtx_ssrc, first_rtx_seq.wrapping_add(1)));
    assert_eq!(again, payload);
    alice.close().await;
    bob.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn vp9_and_h264_are_forwarded() {
    let server = TestServer::start().await;
    let alice = RtcClient::join_with(&server, "codecs", "alice", VideoCodec::Vp9).await;
    let bob = RtcClient::join_with(&server, "codecs", "bob", VideoCodec::H264).await;
    wait_until(
        "both receive the other's video",
        Duration::from_secs(20),
        || bob.count(&alice.id, "alice-cam") >= 20 && alice.count(&bob.id, "bob-cam") >= 20,
    )
    .await;
    assert_eq!(
        bob.seen(&alice.id, "alice-cam")
            .unwrap()
            .mime_type
            .to_lowercase(),
        "video/vp9"
    );
    assert_eq!(
        alice
            .seen(&bob.id, "bob-cam")
            .unwrap()
            .mime_type
            .to_lowercase(),
        "video/h264"
    );
    alice.close().await;
    bob.close().await;
}
