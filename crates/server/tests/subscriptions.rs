//! `update_subscription` through the real server: `off` stops a track for that subscriber
//! alone, asking again resumes it (at a keyframe, so the output has no gap), and a track
//! the participant does not receive is refused with `unknown_track`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{wait_until, ClientOptions, RtcClient, TestServer};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn off_stops_and_high_resumes_for_that_subscriber_only() {
    let server = TestServer::start().await;
    let alice = RtcClient::join(&server, "subs", "alice").await;
    let bob = RtcClient::join(&server, "subs", "bob").await;
    let carol = RtcClient::join(&server, "subs", "carol").await;
    wait_until(
        "bob and carol receive alice's video",
        Duration::from_secs(20),
        || bob.count(&alice.id, "alice-cam") > 20 && carol.count(&alice.id, "alice-cam") > 20,
    )
    .await;

    bob.send(json!({"type": "update_subscription", "track_id": "alice-cam", "quality": "off"}));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let paused_at = bob.count(&alice.id, "alice-cam");
    let carol_at = carol.count(&alice.id, "alice-cam");
    let audio_at = bob.count(&alice.id, "alice-mic");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        bob.count(&alice.id, "alice-cam"),
        paused_at,
        "bob still receives alice's video"
    );
    assert!(
        carol.count(&alice.id, "alice-cam") > carol_at + 20,
        "carol is unaffected"
    );
    assert!(
        bob.count(&alice.id, "alice-mic") > audio_at + 20,
        "bob still hears alice"
    );

    bob.send(json!({"type": "update_subscription", "track_id": "alice-cam", "quality": "high"}));
    // The synthetic publisher sends a keyframe every 2 s; resuming waits for one.
    wait_until(
        "bob receives alice's video again",
        Duration::from_secs(5),
        || bob.count(&alice.id, "alice-cam") > paused_at + 20,
    )
    .await;
    let seen = bob.seen(&alice.id, "alice-cam").unwrap();
    assert_eq!(seen.duplicates, 0);

    // A tile size is accepted too (one layer here: it stays on it).
    bob.send(json!({"type": "update_subscription", "track_id": "alice-cam", "width": 320, "height": 180}));
    bob.send(json!({"type": "update_subscription", "track_id": "nope", "quality": "low"}));
    bob.send(json!({"type": "update_subscription", "track_id": "bob-cam", "quality": "low"}));
    wait_until("unknown tracks are refused", Duration::from_secs(5), || {
        bob.saw(|m| {
            m["type"] == "error"
                && m["code"] == "unknown_track"
                && m["message"].as_str().unwrap().contains("nope")
        }) && bob
            .saw(|m| m["type"] == "error" && m["message"].as_str().unwrap().contains("bob-cam"))
    })
    .await;
    let errors = bob
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|m| m["type"] == "error")
        .count();
    assert_eq!(errors, 2, "the tile-size request was accepted");
    alice.close().await;
    bob.close().await;
    carol.close().await;
}

/// A client that turns a video off as soon as it hears of it (before answering the offer
/// that carries it, as a page hiding the tile would) is obeyed: no error, and the video is
/// never forwarded to it while its audio is.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wish_sent_before_the_answer_is_kept() {
    let server = TestServer::start().await;
    let bob = RtcClient::join_opts(
        &server,
        "early-wish",
        "bob",
        ClientOptions {
            // bob hears of his own tracks too; only alice's camera is turned off.
            on_track_published: Some(Arc::new(|m| {
                (m["track"]["id"] == "alice-cam").then(|| {
                    json!({"type": "update_subscription", "track_id": "alice-cam", "quality": "off"})
                })
            })),
            ..ClientOptions::default()
        },
    )
    .await;
    let alice = RtcClient::join(&server, "early-wish", "alice").await;
    wait_until(
        "bob hears alice and alice sees bob's video",
        Duration::from_secs(20),
        || bob.count(&alice.id, "alice-mic") > 50 && alice.count(&bob.id, "bob-cam") > 20,
    )
    .await;
    assert!(
        bob.saw(|m| m["type"] == "track_published" && m["track"]["id"] == "alice-cam"),
        "bob heard of alice's camera"
    );
    assert_eq!(
        bob.count(&alice.id, "alice-cam"),
        0,
        "alice's video is off for bob"
    );
    assert!(
        !bob.saw(|m| m["type"] == "error"),
        "no error: {:?}",
        bob.events.lock().unwrap()
    );

    // Asking for it later works as usual.
    bob.send(json!({"type": "update_subscription", "track_id": "alice-cam", "quality": "high"}));
    wait_until("bob receives alice's video", Duration::from_secs(5), || {
        bob.count(&alice.id, "alice-cam") > 20
    })
    .await;
    alice.close().await;
    bob.close().await;
}
