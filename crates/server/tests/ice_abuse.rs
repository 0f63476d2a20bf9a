//! ICE candidates cannot aim the server at third parties: a client that names another
//! participant's address (with ICE restarts, over and over) does not disturb that
//! participant's media, and 10,000 trickled candidates make the server send a bounded
//! number of connectivity checks.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{http_get, wait_until, Mallory, RtcClient, ServerProcess, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn naming_another_participants_address_does_not_disturb_its_media() {
    // Restarts as often as the attacker likes: what protects the victims here is that a
    // check sent to an address does not divert that address's packets.
    let server =
        TestServer::start_with(&[("SWITCHYARD_RTC_ICE_RESTART_MIN_INTERVAL_MS", "0")]).await;
    let alice = RtcClient::join(&server, "victims", "alice").await;
    let bob = RtcClient::join(&server, "victims", "bob").await;
    wait_until("media flows both ways", Duration::from_secs(20), || {
        alice.count(&bob.id, "bob-mic") > 20 && bob.count(&alice.id, "alice-mic") > 20
    })
    .await;
    let mut victims = alice.media_addresses().await;
    victims.extend(bob.media_addresses().await);
    assert_eq!(victims.len(), 4, "both connections of both: {victims:?}");

    // Mallory names all four, in her offers and trickled, restarting ICE every 1.5 s.
    let mut mallory = Mallory::join(&server, "victims", "mallory").await;
    let start = Instant::now();
    // The microphones send every 20 ms: a stall shows within a few packets.
    let mut last = (
        alice.count(&bob.id, "bob-mic"),
        bob.count(&alice.id, "alice-mic"),
    );
    let mut last_progress = [Instant::now(); 2];
    let mut longest_stall = [Duration::ZERO; 2];
    let mut offers = 0;
    let mut next_offer = Instant::now();
    while start.elapsed() < Duration::from_secs(9) {
        if Instant::now() >= next_offer {
            mallory.offer(offers > 0, &victims).await;
            for (i, target) in victims.iter().enumerate() {
                mallory.trickle(i, *target).await;
            }
            offers += 1;
            next_offer += Duration::from_millis(1500);
        }
        mallory.drain().await;
        let now = (
            alice.count(&bob.id, "bob-mic"),
            bob.count(&alice.id, "alice-mic"),
        );
        for (i, (n, l)) in [(now.0, last.0), (now.1, last.1)].into_iter().enumerate() {
            if n > l {
                last_progress[i] = Instant::now();
            }
            longest_stall[i] = longest_stall[i].max(last_progress[i].elapsed());
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "{offers} offers; longest stalls: alice {:?}, bob {:?}",
        longest_stall[0], longest_stall[1]
    );
    assert!(offers >= 6, "{offers} offers");
    assert!(
        longest_stall
            .iter()
            .all(|s| *s < Duration::from_millis(500)),
        "the victims' audio stalled: alice {:?}, bob {:?}",
        longest_stall[0],
        longest_stall[1]
    );
    assert!(!alice.saw(|m| m["type"] == "participant_left" && m["participant_id"] == bob.id));
    alice.close().await;
    bob.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_trickled_candidates_cost_a_bounded_number_of_checks() {
    // With the default message rate limit a client this fast is cut off after 200
    // messages (bad_input.rs); here it may send them all, so the candidate limits show.
    // A server process of its own, so that its CPU time is the server's alone.
    let server = ServerProcess::start(
        &[
            ("SWITCHYARD_SIGNAL_MESSAGES_PER_SECOND", "100000"),
            ("SWITCHYARD_SIGNAL_MESSAGE_BURST", "100000"),
        ],
        None,
    )
    .await;
    let cpu_before = server.cpu_seconds();
    // Where the candidates point: a socket that counts what the server sends it.
    let sink = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let target = sink.local_addr().unwrap();
    let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = received.clone();
    let sink_task = tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while sink.recv_from(&mut buf).await.is_ok() {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });

    let mut mallory = Mallory::join(&server, "flood", "mallory").await;
    mallory.apply_answers = false;
    mallory.offer(false, &[]).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !mallory
        .drain()
        .await
        .iter()
        .any(|m| m["type"] == "publish_answer")
    {
        assert!(Instant::now() < deadline, "mallory's offer is answered");
    }
    let mut errors = 0;
    let flood_started = Instant::now();
    for i in 0..10_000usize {
        // Half name the sink itself, half its neighbours' ports.
        let aim = if i % 2 == 0 {
            target
        } else {
            SocketAddr::new(target.ip(), 20_000 + (i % 20_000) as u16)
        };
        mallory.trickle(i, aim).await;
        // Paced: a socket with more than 256 messages waiting is a flood the server cuts
        // off (bad_input.rs); this one sends slowly enough to stay connected.
        if i % 50 == 49 {
            errors += mallory.drain_counting("type", "error").await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // Long enough for every admitted pair to use up its checks (webrtc-ice: 7 each,
    // 200 ms apart).
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(6) {
        errors += mallory.drain_counting("type", "error").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let checks = received.load(std::sync::atomic::Ordering::Relaxed);
    let cpu = server.cpu_seconds() - cpu_before;
    let spent = flood_started.elapsed();
    // A figure for the note, never an assertion: CPU time depends on the machine.
    eprintln!(
        "10,000 candidates: {checks} datagrams to the named address, {errors} error(s), \
         server CPU {cpu:.2} s in {:.1} s",
        spent.as_secs_f64()
    );
    assert!(checks > 0, "the first candidate is checked like any other");
    // At most 8 checks per pair (webrtc-ice gives up after 7 retries), one pair per local
    // candidate of the server (a few interfaces): not one per candidate named.
    assert!(checks <= 40, "{checks} datagrams to one address");
    assert_eq!(errors, 1, "told once that it is over the limit");
    // The server still serves everyone else.
    let (status, _, _) = http_get(server.http, "/healthz", &[]).await;
    assert_eq!(status, 200);
    sink_task.abort();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ice_restarts_are_rate_limited() {
    let server = TestServer::start().await;
    let mut mallory = Mallory::join(&server, "restarts", "mallory").await;
    mallory.offer(false, &[]).await;
    // Re-offers are applied once the first negotiation is up.
    let deadline = Instant::now() + Duration::from_secs(10);
    while mallory.pc.connection_state()
        != webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState::Connected
    {
        assert!(Instant::now() < deadline, "mallory's publisher connects");
        mallory.drain().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut answers = 0;
    let mut refused = Vec::new();
    for _ in 0..5 {
        mallory.offer(true, &[]).await;
        let until = Instant::now() + Duration::from_millis(400);
        while Instant::now() < until {
            for m in mallory.drain().await {
                if m["type"] == "publish_answer" {
                    answers += 1;
                } else if m["code"] == "rate_limited" {
                    refused.push(m["message"].as_str().unwrap().to_owned());
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // The first restart is answered; the next ones, within 5 s of it, are refused, each
    // saying why.
    assert_eq!(answers, 1, "{refused:?}");
    assert!(!refused.is_empty());
    assert!(refused[0].contains("one every 5s"), "{}", refused[0]);
}
