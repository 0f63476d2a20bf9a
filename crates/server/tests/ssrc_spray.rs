//! A publisher cannot make the server keep state per SSRC it invents: 10,000 streams under
//! random SSRCs, encrypted with its connection's keys, leave the server's memory bounded
//! and its own camera flowing (webrtc-srtp kept a state for every SSRC a datagram named,
//! even before checking that the datagram authenticated).

mod common;

use std::time::{Duration, Instant};

use common::{wait_until, RtcClient, ServerProcess};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invented_ssrcs_cost_bounded_memory() {
    let server = ServerProcess::start(&[], None).await;
    let alice = RtcClient::join(&server, "spray", "alice").await;
    let bob = RtcClient::join(&server, "spray", "bob").await;
    wait_until(
        "bob receives alice's camera",
        Duration::from_secs(20),
        || bob.count(&alice.id, "alice-cam") > 20,
    )
    .await;
    let before = server.resident_kib();
    let started = Instant::now();
    let mut seed: u32 = 0x1234_5678;
    for i in 0..10_000u32 {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        assert!(
            alice
                .send_raw_rtp(seed, 96, (i % 60_000) as u16, vec![0x10, 0x01, 0, 0])
                .await
        );
        if i % 200 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = server.resident_kib();
    let grown_mib = after.saturating_sub(before) as f64 / 1024.0;
    eprintln!(
        "10,000 invented SSRCs in {:?}: resident {before} KiB -> {after} KiB (+{grown_mib:.1} MiB)",
        started.elapsed()
    );
    let count = bob.count(&alice.id, "alice-cam");
    wait_until(
        "alice's camera still reaches bob",
        Duration::from_secs(5),
        || bob.count(&alice.id, "alice-cam") > count + 30,
    )
    .await;
    assert!(grown_mib < 16.0, "+{grown_mib:.1} MiB for invented SSRCs");
    let log = server.stop().await;
    assert!(!log.contains("panicked"), "{log}");
    alice.close().await;
    bob.close().await;
}
