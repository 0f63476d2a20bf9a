//! Join/leave churn: 100 cycles of a real client (webrtc-rs) joining a meeting, publishing,
//! receiving and leaving. Every cycle must receive media both ways, and what the cycles
//! leave behind must not grow: the long-lived participant's subscriber connection keeps a
//! bounded number of m-sections (they are reused), the server's live objects return to
//! what they were, and so do its resident memory and open file descriptors. The server
//! runs as its own process, so its memory and descriptors are its own, not the clients'.

mod common;

use std::time::Duration;

use common::{try_wait_until, wait_until, RtcClient, ServerProcess};

const CYCLES: usize = 100;

/// Cycles run before memory is sampled: the allocator's pools and the server's first-use
/// structures have settled by then.
const SETTLE_CYCLES: usize = 10;

/// Waits until the server's metric `name` is `value`.
async fn wait_metric(server: &ServerProcess, name: &str, value: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = server.metric(name).await;
        if now == value {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} is {now}, not {value}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_join_leave_cycles_all_receive_media_and_leave_nothing_behind() {
    let server = ServerProcess::start(&[], None).await;
    let anchor = RtcClient::join(&server, "churn", "anchor").await;
    wait_metric(&server, "switchyard_published_tracks", 2.0).await;

    let mut failures = Vec::new();
    let mut settled = (0, 0);
    for cycle in 0..CYCLES {
        if cycle == SETTLE_CYCLES {
            settled = (server.resident_kib(), server.open_fds());
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
        wait_metric(&server, "switchyard_participants", 1.0).await;
        wait_metric(&server, "switchyard_published_tracks", 2.0).await;
    }
    assert!(
        failures.is_empty(),
        "{} of {CYCLES} cycles failed: {failures:?}",
        failures.len()
    );

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
    wait_metric(&server, "switchyard_subscriptions", 0.0).await;

    // The server's memory and descriptors stay where they were once settled: no per-cycle
    // leak (the old transceiver growth was about 130 KB a cycle).
    let (settled_kib, settled_fds) = settled;
    let fds_settle = try_wait_until("fds return", Duration::from_secs(10), || {
        server.open_fds() <= settled_fds + 2
    })
    .await;
    let grown_kib = server.resident_kib().saturating_sub(settled_kib);
    let per_cycle = grown_kib / (CYCLES - SETTLE_CYCLES) as u64;
    eprintln!(
        "server: resident {settled_kib} KiB -> +{grown_kib} KiB over {} cycles ({per_cycle} KiB a cycle); fds {settled_fds} -> {}",
        CYCLES - SETTLE_CYCLES,
        server.open_fds()
    );
    assert!(
        fds_settle.is_ok(),
        "fds: {settled_fds} settled, {} after",
        server.open_fds()
    );
    assert!(per_cycle < 50, "{per_cycle} KiB a cycle");
    anchor.close().await;
    wait_until("the room empties", Duration::from_secs(10), || true).await;
    server.stop().await;
}
