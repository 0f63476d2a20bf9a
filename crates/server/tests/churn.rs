//! Join/leave churn: 100 cycles of a real client (webrtc-rs) joining a meeting, publishing,
//! receiving and leaving. Every cycle must receive media both ways, and what the cycles
//! leave behind must not grow: the long-lived participant's subscriber connection keeps a
//! bounded number of m-sections (they are reused), the server's live objects return to
//! what they were, and so do the process's open file descriptors.

mod common;

use std::time::Duration;

use common::{try_wait_until, wait_until, RtcClient, TestServer};
use switchyard_stats::Live;

const CYCLES: usize = 100;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Cycles run before memory is sampled: the allocator's pools and the server's first-use
/// structures have settled by then.
const SETTLE_CYCLES: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_join_leave_cycles_all_receive_media_and_leave_nothing_behind() {
    let server = TestServer::start().await;
    let stats = server.router.stats().clone();
    let anchor = RtcClient::join(&server, "churn", "anchor").await;
    wait_until("the anchor publishes", Duration::from_secs(10), || {
        stats.live(Live::UpTracks) == 2
    })
    .await;
    // Warm up once so lazily created things (the first connection's) are in the baseline.
    let warmup = RtcClient::join(&server, "churn", "warmup").await;
    wait_until("warm-up receives", Duration::from_secs(20), || {
        warmup.count(&anchor.id, "anchor-cam") > 5
    })
    .await;
    warmup.close().await;
    wait_until("warm-up gone", Duration::from_secs(10), || {
        stats.live(Live::Participants) == 1
    })
    .await;
    let fds_before = open_fds();

    let mut failures = Vec::new();
    let mut settled_kib = 0;
    for cycle in 0..CYCLES {
        if cycle == SETTLE_CYCLES {
            settled_kib = resident_kib();
        }
        let churner = RtcClient::join(&server, "churn", "churner").await;
        let outcome = try_wait_until("media both ways", Duration::from_secs(15), || {
            churner.count(&anchor.id, "anchor-cam") > 5
                && churner.count(&anchor.id, "anchor-mic") > 5
                && anchor.count(&churner.id, "churner-cam") > 5
        })
        .await;
        if let Err(e) = outcome {
            failures.push(format!("cycle {cycle}: {e}"));
        }
        churner.close().await;
        wait_until("the churner has left", Duration::from_secs(10), || {
            stats.live(Live::Participants) == 1 && stats.live(Live::UpTracks) == 2
        })
        .await;
    }
    assert!(
        failures.is_empty(),
        "{} of {CYCLES} cycles failed: {failures:?}",
        failures.len()
    );
    // Memory (of this process: server and clients) stays where it was once settled: no
    // per-cycle leak. 130 KB a cycle (the old transceiver growth) would be 11.7 MB here.
    let grown_kib = resident_kib().saturating_sub(settled_kib);
    let per_cycle = grown_kib / (CYCLES - SETTLE_CYCLES) as u64;
    eprintln!(
        "resident memory grew {grown_kib} KiB over {} cycles ({per_cycle} KiB a cycle)",
        CYCLES - SETTLE_CYCLES
    );
    assert!(per_cycle < 60, "{per_cycle} KiB a cycle");

    // The anchor is still there, and still receives: nobody closed its socket.
    assert!(
        !anchor.saw(|m| m["type"] == "error"),
        "the anchor was told of an error"
    );
    let last_offer = anchor
        .events
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|m| m["type"] == "subscribe_offer")
        .map(|m| m["sdp"].as_str().unwrap().to_owned())
        .expect("the anchor was offered tracks");
    let sections = last_offer.matches("\nm=").count();
    assert!(
        sections <= 4,
        "the anchor's subscriber connection has {sections} m-sections"
    );
    wait_until("the downtracks are gone", Duration::from_secs(10), || {
        stats.live(Live::DownTracks) == 0
    })
    .await;
    // File descriptors come back (a little slack: sockets closing in the background).
    let settle = try_wait_until("fds return", Duration::from_secs(10), || {
        open_fds() <= fds_before + 4
    })
    .await;
    assert!(
        settle.is_ok(),
        "fds: {fds_before} before, {} after",
        open_fds()
    );
    anchor.close().await;
}
