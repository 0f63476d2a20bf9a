//! Publishers sending three simulcast layers (rid q/h/f) through a real Switchyard server:
//! the server takes them as one track with three layers, each receiver gets one layer of
//! it (the full one by default, or the one `--layer` asks for) with nothing lost.

mod common;

use std::sync::Arc;
use std::time::Duration;

use switchyard_loadtest::client::MediaPlan;
use switchyard_loadtest::run::run;
use switchyard_loadtest::target::switchyard::SwitchyardTarget;
use switchyard_signal::token::{DEV_API_KEY, DEV_API_SECRET};
use switchyard_signal::Quality;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_receiver_gets_one_layer_of_each_simulcast_track() {
    // The server starts a subscriber on whatever layer has a keyframe first, then moves it
    // up to the one it wants by default ("high").
    receivers_end_on(None, "video2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_that_ask_for_medium_get_the_medium_layer() {
    receivers_end_on(Some(Quality::Medium), "video1").await;
}

/// A run of three-layer publishers (600 kbit/s across the layers, paced as a browser).
fn simulcast_run(
    server: &common::TestServer,
    publishers: usize,
    subscribers: usize,
    duration: Duration,
) -> switchyard_loadtest::run::RunConfig {
    common::config(
        server.ws_url(),
        publishers,
        subscribers,
        MediaPlan {
            video_bps: 600_000,
            simulcast: true,
            audio_only: false,
            pacing: switchyard_loadtest::media::BROWSER_PACING,
        },
        duration,
    )
}

async fn receivers_end_on(quality: Option<Quality>, wanted: &str) {
    let server = common::TestServer::start().await;
    let config = simulcast_run(&server, 2, 1, Duration::from_secs(4));
    let mut target = SwitchyardTarget::new(server.ws_url(), DEV_API_KEY, DEV_API_SECRET);
    if let Some(quality) = quality {
        target = target.with_quality(quality);
    }
    let target = Arc::new(target);
    let report = run(&config, target).await.expect("the run completes");
    let summary = serde_json::to_string_pretty(&report).unwrap();
    assert!(report.all_participants_ok(), "{summary}");
    assert_eq!(report.participants.received_from_all, 3);
    assert_eq!(report.packets.lost, 0, "{summary}");

    for r in &report.receivers {
        for publisher in ["pub-0-0", "pub-0-1"] {
            if r.identity == publisher {
                continue;
            }
            let layers: Vec<&str> = r
                .streams
                .iter()
                .filter(|s| s.publisher == publisher && s.stream != "audio")
                .map(|s| s.stream.as_str())
                .collect();
            assert_eq!(
                layers.last(),
                Some(&wanted),
                "{} from {publisher}: {layers:?}\n{summary}",
                r.identity
            );
            // Once on the wanted layer, it stays for most of the run.
            let on_it = r
                .streams
                .iter()
                .filter(|s| s.publisher == publisher && s.stream == wanted)
                .map(|s| s.seconds)
                .sum::<f64>();
            assert!(
                on_it > 3.0,
                "{} from {publisher}: {on_it:.2} s on {wanted}\n{summary}",
                r.identity
            );
        }
    }
    server.shutdown().await;
}

/// What an operator sees of a healthy simulcast publisher in the admin API's participant
/// view: every layer live by its frames, no padding, and the receivers on the layer they
/// asked for (the full one by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_view_shows_each_layer_live_by_its_frames_and_who_receives_it() {
    let server = common::TestServer::start().await;
    let config = simulcast_run(&server, 1, 2, Duration::from_secs(5));
    let room = switchyard_router::RoomId::new(format!("{}-0", config.room_prefix));
    let target = Arc::new(SwitchyardTarget::new(
        server.ws_url(),
        DEV_API_KEY,
        DEV_API_SECRET,
    ));
    let run = tokio::spawn(async move { run(&config, target).await });

    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    let mut last = String::from("no view yet");
    let seen = loop {
        if let Ok(view) = server.router.participant(&room, "pub-0-0").await {
            let layers = view
                .tracks
                .iter()
                .find(|t| !t.layers.is_empty())
                .map(|t| t.layers.clone())
                .unwrap_or_default();
            last = serde_json::to_string(&layers).unwrap();
            let healthy = layers.len() == 3
                && layers.iter().all(|l| {
                    l.state == "live"
                        && l.frames_per_second > 0
                        && l.padding_packets_per_second == 0
                })
                && layers.iter().map(|l| l.subscribers).collect::<Vec<_>>() == [0, 0, 2];
            if healthy {
                break layers;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the layers never all showed live with both receivers on the full one: {last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Frames, not packets, per second: the generator sends 30 frames a second per layer.
    for layer in &seen {
        assert!(
            (10..=40).contains(&layer.frames_per_second),
            "{}: {} frames/s: {last}",
            layer.rid,
            layer.frames_per_second
        );
    }
    let report = run.await.unwrap().expect("the run completes");
    assert!(report.all_participants_ok());
    server.shutdown().await;
}
