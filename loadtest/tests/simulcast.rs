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

async fn receivers_end_on(quality: Option<Quality>, wanted: &str) {
    let server = common::TestServer::start().await;
    let config = common::config(
        server.ws_url(),
        2,
        1,
        MediaPlan {
            video_bps: 600_000,
            simulcast: true,
            audio_only: false,
            pacing: switchyard_loadtest::media::BROWSER_PACING,
        },
        Duration::from_secs(4),
    );
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
