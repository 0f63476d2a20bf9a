//! Publishers sending three simulcast layers (rid q/h/f) through a real Switchyard server:
//! the server takes them as one track with three layers, each receiver gets one layer of
//! it (the full one, by default) with nothing lost.

mod common;

use std::sync::Arc;
use std::time::Duration;

use switchyard_loadtest::client::MediaPlan;
use switchyard_loadtest::run::run;
use switchyard_loadtest::target::switchyard::SwitchyardTarget;
use switchyard_signal::token::{DEV_API_KEY, DEV_API_SECRET};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_receiver_gets_one_layer_of_each_simulcast_track() {
    let server = common::TestServer::start().await;
    let config = common::config(
        server.ws_url(),
        2,
        1,
        MediaPlan {
            video_bps: 600_000,
            simulcast: true,
            audio_only: false,
        },
        Duration::from_secs(4),
    );
    let target = Arc::new(SwitchyardTarget::new(
        server.ws_url(),
        DEV_API_KEY,
        DEV_API_SECRET,
    ));
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
            // The server starts a subscriber on whatever layer has a keyframe first, then
            // moves it up to the one it wants ("high"): it must end there.
            assert_eq!(
                layers.last(),
                Some(&"video2"),
                "{} from {publisher}: {layers:?}\n{summary}",
                r.identity
            );
            // Once on the full layer, it stays for most of the run.
            let full = r
                .streams
                .iter()
                .filter(|s| s.publisher == publisher && s.stream == "video2")
                .map(|s| s.seconds)
                .sum::<f64>();
            assert!(
                full > 3.0,
                "{} from {publisher}: {full:.2} s on video2\n{summary}",
                r.identity
            );
        }
    }
    server.shutdown().await;
}
