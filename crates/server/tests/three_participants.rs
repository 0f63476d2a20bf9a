//! Three webrtc-rs participants in one room through the real server on loopback: each
//! receives the other two's audio and video, never its own; when one leaves, the others
//! hear `participant_left` and its media stops.

mod common;

use std::time::Duration;

use common::{wait_until, RtcClient, TestServer};
use serde_json::json;
use switchyard_stats::Live;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_participants_forward_and_leave() {
    let server = TestServer::start().await;
    let room = "it-three";
    let alice = RtcClient::join(&server, room, "alice").await;
    let bob = RtcClient::join(&server, room, "bob").await;
    let carol = RtcClient::join(&server, room, "carol").await;

    // `joined` lists who was already there.
    assert_eq!(alice.joined["participants"], json!([]));
    assert_eq!(carol.joined["participants"].as_array().unwrap().len(), 2);

    let everyone = [&alice, &bob, &carol];
    // Each client receives both others' audio and video: 4 tracks, at least 25 packets each.
    wait_until(
        "every client receives 4 remote tracks",
        Duration::from_secs(30),
        || {
            everyone.iter().all(|me| {
                everyone.iter().filter(|p| p.id != me.id).all(|p| {
                    me.count(&p.id, &format!("{}-mic", p.name)) >= 25
                        && me.count(&p.id, &format!("{}-cam", p.name)) >= 25
                })
            })
        },
    )
    .await;
    for me in everyone {
        let tracks = me.snapshot();
        assert_eq!(
            tracks.len(),
            4,
            "{} receives exactly 4 tracks: {tracks:?}",
            me.name
        );
        assert!(
            tracks.keys().all(|(publisher, _)| publisher != &me.id),
            "{} never receives its own media",
            me.name
        );
    }
    assert_eq!(server.router.room_count(), 1);
    let stats = server.router.stats().clone();
    assert_eq!(stats.live(Live::Participants), 3);
    assert_eq!(stats.live(Live::UpTracks), 6);
    assert_eq!(stats.live(Live::DownTracks), 12);

    // carol leaves: the others hear it and stop receiving her tracks.
    let carol_id = carol.id.clone();
    carol.send(json!({"type": "leave"}));
    for me in [&alice, &bob] {
        wait_until(
            &format!("{} hears participant_left", me.name),
            Duration::from_secs(5),
            || {
                me.saw(|m| {
                    m["type"] == "participant_left" && m["participant_id"] == carol_id.as_str()
                })
            },
        )
        .await;
        assert!(me.saw(|m| m["type"] == "track_unpublished"
            && m["participant_id"] == carol_id.as_str()
            && m["track_id"] == "carol-cam"));
    }
    // Everything of carol's is released while alice and bob go on: 2 participant tasks,
    // 4 uptracks (alice's and bob's), 4 downtracks (each receives the other's two).
    wait_until(
        "carol's tasks and tracks are released",
        Duration::from_secs(10),
        || {
            stats.live(Live::Participants) == 2
                && stats.live(Live::UpTracks) == 4
                && stats.live(Live::DownTracks) == 4
        },
    )
    .await;
    // Let in-flight packets land, then carol's counts must freeze while alice<->bob continue.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let frozen_at_alice = (
        alice.count(&carol_id, "carol-mic"),
        alice.count(&carol_id, "carol-cam"),
    );
    let frozen_at_bob = (
        bob.count(&carol_id, "carol-mic"),
        bob.count(&carol_id, "carol-cam"),
    );
    let bob_audio_at_alice = alice.count(&bob.id, "bob-mic");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        (
            alice.count(&carol_id, "carol-mic"),
            alice.count(&carol_id, "carol-cam")
        ),
        frozen_at_alice,
        "alice still receives carol's media after she left"
    );
    assert_eq!(
        (
            bob.count(&carol_id, "carol-mic"),
            bob.count(&carol_id, "carol-cam")
        ),
        frozen_at_bob,
        "bob still receives carol's media after she left"
    );
    assert!(
        alice.count(&bob.id, "bob-mic") > bob_audio_at_alice + 25,
        "alice keeps receiving bob"
    );

    // The last two leave by dropping their connections: the room closes.
    carol.close().await;
    alice.close().await;
    bob.close().await;
    wait_until("the empty room closes", Duration::from_secs(10), || {
        server.router.room_count() == 0
    })
    .await;
    // Everything of every participant is released: tasks ended, tracks dropped.
    wait_until(
        "every participant task, uptrack and downtrack is released",
        Duration::from_secs(10),
        || Live::ALL.iter().all(|kind| stats.live(*kind) == 0),
    )
    .await;
    server.shutdown().await;
}
