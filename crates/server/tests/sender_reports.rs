//! The server writes forwarded media itself (not through webrtc-rs's interceptors), so it
//! sends its own Sender Reports. A receiver uses them to sync a participant's audio with
//! its video and to measure the round trip: each report must name the stream, count what
//! was sent, and map its wall-clock time to the RTP timestamps the receiver sees.

mod common;

use std::time::{Duration, Instant};

use common::{wait_until, ClientOptions, RtcClient, TestServer};
use webrtc::rtcp::sender_report::SenderReport;

/// An NTP timestamp (32.32 fixed point) in seconds.
fn ntp_seconds(ntp: u64) -> f64 {
    (ntp >> 32) as f64 + (ntp & 0xffff_ffff) as f64 / 4_294_967_296.0
}

/// The reports about `ssrc`, each once: webrtc-rs hands a compound RTCP packet to every
/// receiver whose SSRC it names, so one holding the audio's and the video's reports is
/// read twice.
fn reports_for(client: &RtcClient, ssrc: u32) -> Vec<(SenderReport, Instant)> {
    let mut reports: Vec<(SenderReport, Instant)> = client
        .sender_reports
        .lock()
        .unwrap()
        .iter()
        .filter(|(sr, _)| sr.ssrc == ssrc)
        .cloned()
        .collect();
    reports.dedup_by_key(|(sr, _)| sr.ntp_time);
    reports
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sender_reports_count_the_stream_and_map_its_timestamps() {
    let server = TestServer::start().await;
    let alice = RtcClient::join(&server, "sr", "alice").await;
    let bob = RtcClient::join_opts(
        &server,
        "sr",
        "bob",
        ClientOptions {
            read_sender_reports: true,
            ..ClientOptions::default()
        },
    )
    .await;
    // The test client sends one 1000-byte video packet per 33 ms frame at 90 kHz and one
    // 160-byte audio packet per 20 ms at 48 kHz.
    for (track, clock_rate, payload_bytes, packet_interval) in [
        ("alice-cam", 90_000.0, 1000, 0.033),
        ("alice-mic", 48_000.0, 160, 0.020),
    ] {
        wait_until(
            &format!("bob gets four Sender Reports for {track}"),
            Duration::from_secs(20),
            || {
                bob.seen(&alice.id, track)
                    .is_some_and(|seen| reports_for(&bob, seen.ssrc).len() >= 4)
            },
        )
        .await;
        let seen = bob.seen(&alice.id, track).unwrap();
        let reports = reports_for(&bob, seen.ssrc);
        for pair in reports.windows(2) {
            let (earlier, later) = (&pair[0].0, &pair[1].0);
            let wall = ntp_seconds(later.ntp_time) - ntp_seconds(earlier.ntp_time);
            assert!(
                (0.5..2.0).contains(&wall),
                "{track}: reports about a second apart, got {wall} s"
            );
            // The RTP clock in the reports runs at the media clock rate (give or take the
            // delay of the packet each report is extrapolated from, on a busy machine).
            let rtp = later.rtp_time.wrapping_sub(earlier.rtp_time) as f64 / clock_rate;
            assert!(
                (rtp - wall).abs() < 0.1 * wall,
                "{track}: RTP time advanced {rtp} s in {wall} s of wall clock"
            );
            // Counts: what was sent in between, and exactly its payload bytes.
            let packets = later.packet_count.wrapping_sub(earlier.packet_count);
            let expected = wall / packet_interval;
            assert!(
                (packets as f64 - expected).abs() <= expected * 0.15 + 2.0,
                "{track}: {packets} packets in {wall} s, expected about {expected}"
            );
            assert_eq!(
                later.octet_count.wrapping_sub(earlier.octet_count),
                packets * payload_bytes,
                "{track}: octets are the payload bytes of the packets counted"
            );
        }
        // The mapping matches what bob receives: the newest report's RTP time, carried to
        // the newest packet's arrival, is that packet's timestamp (within jitter).
        let seen = bob.seen(&alice.id, track).unwrap();
        let (report, report_arrival) = reports_for(&bob, seen.ssrc).pop().unwrap();
        let since_report = seen
            .last_arrival
            .unwrap()
            .duration_since(report_arrival)
            .as_secs_f64();
        let predicted = report
            .rtp_time
            .wrapping_add((since_report * clock_rate) as u32);
        let error = predicted.wrapping_sub(seen.last_ts) as i32 as f64 / clock_rate;
        assert!(
            error.abs() < 0.25,
            "{track}: the report's mapping is {error} s off what arrives"
        );
    }
    alice.close().await;
    bob.close().await;
}
