//! The generator against a real Switchyard server on loopback for a few seconds: everyone
//! joins and receives every publisher, and the report's numbers are what loopback must
//! give (no loss, sub-second latency, packet counts that match the send rates).

mod common;

use std::sync::Arc;
use std::time::Duration;

use switchyard_loadtest::client::MediaPlan;
use switchyard_loadtest::media::{video_packets_per_second, AUDIO_PACKETS_PER_SECOND};
use switchyard_loadtest::run::run;
use switchyard_loadtest::target::switchyard::SwitchyardTarget;
use switchyard_signal::token::{DEV_API_KEY, DEV_API_SECRET};

const VIDEO_BPS: u64 = 400_000;
const DURATION: Duration = Duration::from_secs(4);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_publishers_two_subscribers_on_loopback() {
    let server = common::TestServer::start().await;
    let mut config = common::config(
        server.ws_url(),
        2,
        2,
        MediaPlan {
            video_bps: VIDEO_BPS,
            simulcast: false,
            audio_only: false,
            pacing: switchyard_loadtest::media::BROWSER_PACING,
        },
        DURATION,
    );
    // The server runs in this process: its CPU and memory are this process's.
    config.server_pid = Some(std::process::id());
    let target = Arc::new(SwitchyardTarget::new(
        server.ws_url(),
        DEV_API_KEY,
        DEV_API_SECRET,
    ));
    let report = run(&config, target).await.expect("the run completes");
    let summary = serde_json::to_string_pretty(&report).unwrap();

    let p = &report.participants;
    assert!(report.all_participants_ok(), "{:?}", report.failures);
    assert_eq!(
        (p.total, p.joined, p.receivers, p.received_from_all),
        (4, 4, 4, 4)
    );

    // Every receiver has audio and video from every other publisher in the room.
    for r in &report.receivers {
        let mut got: Vec<_> = r
            .streams
            .iter()
            .map(|s| (s.publisher.as_str(), s.stream.as_str()))
            .collect();
        got.sort_unstable();
        let want: Vec<(&str, &str)> = match r.identity.as_str() {
            "pub-0-0" => vec![("pub-0-1", "audio"), ("pub-0-1", "video0")],
            "pub-0-1" => vec![("pub-0-0", "audio"), ("pub-0-0", "video0")],
            _ => vec![
                ("pub-0-0", "audio"),
                ("pub-0-0", "video0"),
                ("pub-0-1", "audio"),
                ("pub-0-1", "video0"),
            ],
        };
        assert_eq!(got, want, "{} receives", r.identity);
    }

    // Loopback loses nothing (NACKs repair what a busy socket drops).
    assert!(report.packets.expected > 0);
    assert_eq!(report.packets.lost, 0, "{summary}");
    assert_eq!(report.packets.unstamped, 0);

    let latency = &report.latency;
    assert_eq!(latency.samples, report.packets.received);
    let (p50, p99) = (latency.p50_ms.unwrap(), latency.p99_ms.unwrap());
    assert!(p50 > 0.0 && p99 >= p50 && p99 < 1000.0, "{summary}");

    // Each stream's expected count is its send rate times how long it was received.
    let video_rate = f64::from(video_packets_per_second(VIDEO_BPS));
    for r in &report.receivers {
        for s in &r.streams {
            let rate = if s.stream == "audio" {
                f64::from(AUDIO_PACKETS_PER_SECOND)
            } else {
                video_rate
            };
            let want = s.seconds * rate;
            assert!(
                (s.expected as f64 - want).abs() <= 0.15 * want + 2.0,
                "{} from {} {}: expected {} packets in {:.2} s at {rate}/s\n{summary}",
                r.identity,
                s.publisher,
                s.stream,
                s.expected,
                s.seconds
            );
            // Media flowed for (nearly) the whole measurement.
            assert!(
                s.seconds > DURATION.as_secs_f64() * 0.8,
                "{} from {} {}: only {:.2} s",
                r.identity,
                s.publisher,
                s.stream,
                s.seconds
            );
        }
        assert!(r.kbps > 0.0);
    }

    // Joining and first media are timed for everyone; keyframes arrive on every video.
    assert_eq!(report.join_ms.count, 4);
    assert_eq!(report.first_media_ms.count, 4);
    assert_eq!(report.first_keyframe_ms.count, 6, "2 + 2 x 2 video tracks");
    assert!(report.join_ms.p50.unwrap() > 0.0);
    // New subscribers make the server ask publishers for keyframes, over RTCP.
    assert!(report.generator.keyframe_requests > 0, "{summary}");
    assert!(report.generator.sent_packets > 0);

    let s = report.server.as_ref().expect("--server-pid was given");
    assert!(
        s.cpu_s > 0.0 && s.cpu_us_per_packet.unwrap() > 0.0,
        "{summary}"
    );
    assert!(s.peak_rss_mib >= s.rss_before_mib && s.rss_before_mib > 0.0);

    server.shutdown().await;
}
