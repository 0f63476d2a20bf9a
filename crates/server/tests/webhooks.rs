//! Webhooks through the real server on loopback: a receiver (axum, in the test) gets every
//! room, participant and track event of a real two-client session, each signed, in the
//! order it happened; a receiver that fails at first still gets them all, in order, after
//! retries the counters account for; and a receiver that never answers neither delays the
//! session nor lets events pile up beyond the queue.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use common::{wait_until, RtcClient, TestServer};
use switchyard_server::webhook::TOKEN_TTL_SECS;
use switchyard_signal::token::{unix_now, ApiKeys, DEV_API_KEY, DEV_API_SECRET};

/// One request as the receiver got it.
#[derive(Debug, Clone)]
struct Hit {
    at: Instant,
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

/// A webhook receiver on 127.0.0.1 that records every request and answers 500 to the
/// first `fail_first` attempts of each event (by its id), 200 after, each `delay` after
/// the request arrived.
#[derive(Clone)]
struct Receiver {
    fail_first: usize,
    delay: Duration,
    hits: Arc<Mutex<Vec<Hit>>>,
    attempts: Arc<Mutex<HashMap<String, usize>>>,
}

impl Receiver {
    async fn start(fail_first: usize) -> (Receiver, String) {
        Receiver::start_slow(fail_first, Duration::ZERO).await
    }

    async fn start_slow(fail_first: usize, delay: Duration) -> (Receiver, String) {
        let receiver = Receiver {
            fail_first,
            delay,
            hits: Arc::default(),
            attempts: Arc::default(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .fallback(record)
            .with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, url)
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// The events answered 200, in the order they arrived.
    fn accepted(&self) -> Vec<Hit> {
        let mut tries: HashMap<String, usize> = HashMap::new();
        self.hits()
            .into_iter()
            .filter(|hit| {
                let n = tries.entry(body_id(hit)).or_default();
                *n += 1;
                *n > self.fail_first
            })
            .collect()
    }
}

async fn record(
    State(receiver): State<Receiver>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let hit = Hit {
        at: Instant::now(),
        path: uri.path().to_owned(),
        headers,
        body,
    };
    let id = body_id(&hit);
    receiver.hits.lock().unwrap().push(hit);
    let attempt = {
        let mut attempts = receiver.attempts.lock().unwrap();
        let n = attempts.entry(id).or_default();
        *n += 1;
        *n
    };
    tokio::time::sleep(receiver.delay).await;
    if attempt <= receiver.fail_first {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

fn body_id(hit: &Hit) -> String {
    let body: Value = serde_json::from_slice(&hit.body).expect("a JSON body");
    body["id"].as_str().expect("an id").to_owned()
}

/// Checks a request the way a receiver should (docs/webhooks.md) and returns its event:
/// the Authorization JWT is signed by the dev key, is short-lived, and its `sha256` claim
/// is the hex SHA-256 of the exact body bytes.
fn verified(hit: &Hit) -> Value {
    assert_eq!(hit.path, "/hook");
    assert_eq!(hit.headers["content-type"], "application/json");
    let token = hit.headers["authorization"].to_str().unwrap();
    let keys = ApiKeys::new([(DEV_API_KEY.to_owned(), DEV_API_SECRET.to_owned())]);
    let now = unix_now();
    let claims = keys
        .verify(token, now)
        .unwrap_or_else(|e| panic!("signature of {:?}: {e}", hit.body));
    assert_eq!(claims.iss, DEV_API_KEY);
    assert_eq!(
        claims.sha256,
        Some(hex::encode(Sha256::digest(&hit.body))),
        "the token vouches for this very body"
    );
    assert!(
        claims.exp <= now + TOKEN_TTL_SECS,
        "short-lived: {claims:?}"
    );
    serde_json::from_slice(&hit.body).unwrap()
}

/// alice and bob join `room` and publish audio and video; once each receives the other's
/// media, alice leaves, then bob (closing the room). Returns their participant ids.
async fn session(server: &TestServer, room: &str) -> (String, String) {
    let alice = RtcClient::join(server, room, "alice").await;
    let bob = RtcClient::join(server, room, "bob").await;
    wait_until(
        "alice and bob receive each other's audio and video",
        Duration::from_secs(20),
        || {
            [(&alice, &bob), (&bob, &alice)].iter().all(|(me, other)| {
                me.count(&other.id, &format!("{}-mic", other.name)) >= 10
                    && me.count(&other.id, &format!("{}-cam", other.name)) >= 10
            })
        },
    )
    .await;
    let ids = (alice.id.clone(), bob.id.clone());
    alice.send(json!({"type": "leave"}));
    wait_until("bob hears alice leave", Duration::from_secs(5), || {
        bob.saw(|m| m["type"] == "participant_left" && m["participant_id"] == ids.0.as_str())
    })
    .await;
    alice.close().await;
    bob.send(json!({"type": "leave"}));
    wait_until("the room closes", Duration::from_secs(5), || {
        server.router.room_count() == 0
    })
    .await;
    bob.close().await;
    ids
}

/// The events of `session`, in the order they happened: the room brackets everything;
/// per participant, joined, its two tracks published, unpublished, left; alice joined
/// before bob and was gone before bob's tracks went.
fn assert_session_order(events: &[Value], room: &str, alice_id: &str, bob_id: &str) {
    let summary: Vec<String> = events
        .iter()
        .map(|e| {
            format!(
                "{} {} {}",
                e["event"].as_str().unwrap_or("?"),
                e["participant"]["identity"].as_str().unwrap_or(""),
                e["track"]["id"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        events.len(),
        14,
        "1 + 2 joins + 4 publishes + 4 unpublishes + 2 leaves + 1: {summary:#?}"
    );
    assert!(events.iter().all(|e| e["room"] == room), "{summary:#?}");
    let ids: HashSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), events.len(), "every event has its own id");
    assert_eq!(events[0]["event"], "room_started", "{summary:#?}");
    assert_eq!(events[13]["event"], "room_finished", "{summary:#?}");

    let position = |event: &str, identity: &str| {
        events
            .iter()
            .position(|e| e["event"] == event && e["participant"]["identity"] == identity)
            .unwrap_or_else(|| panic!("no {event} of {identity}: {summary:#?}"))
    };
    for (identity, id) in [("alice", alice_id), ("bob", bob_id)] {
        let own: Vec<&Value> = events
            .iter()
            .filter(|e| e["participant"]["identity"] == identity)
            .collect();
        assert!(
            own.iter().all(|e| e["participant"]["id"] == id),
            "{summary:#?}"
        );
        let kinds: Vec<&str> = own.iter().map(|e| e["event"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "participant_joined",
                "track_published",
                "track_published",
                "track_unpublished",
                "track_unpublished",
                "participant_left"
            ],
            "{identity}'s events in order: {summary:#?}"
        );
        let tracks = |range: std::ops::Range<usize>| -> HashSet<String> {
            own[range]
                .iter()
                .map(|e| e["track"]["id"].as_str().unwrap().to_owned())
                .collect()
        };
        let want: HashSet<String> = [format!("{identity}-mic"), format!("{identity}-cam")].into();
        assert_eq!(tracks(1..3), want, "{identity} published both tracks");
        assert_eq!(tracks(3..5), want, "{identity} unpublished both tracks");
    }
    assert!(position("participant_joined", "alice") < position("participant_joined", "bob"));
    assert!(
        position("participant_left", "alice") < position("track_unpublished", "bob"),
        "alice left before bob did: {summary:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_event_of_a_session_arrives_signed_and_in_order() {
    let started = Instant::now();
    let (receiver, url) = Receiver::start(0).await;
    let server = TestServer::start_with(&[("SWITCHYARD_WEBHOOK_URLS", &url)]).await;
    let room = "wh-order";
    let (alice, bob) = session(&server, room).await;
    wait_until(
        "room_finished reaches the receiver",
        Duration::from_secs(10),
        || {
            receiver
                .hits()
                .last()
                .is_some_and(|hit| verified(hit)["event"] == "room_finished")
        },
    )
    .await;

    let events: Vec<Value> = receiver.hits().iter().map(verified).collect();
    assert_session_order(&events, room, &alice, &bob);
    let joined = &events[1];
    assert_eq!(joined["event"], "participant_joined");
    assert_eq!(joined["participant"]["name"], "alice");
    assert!(joined["created_at_ms"].as_u64().unwrap() > 1_600_000_000_000);

    let w = &server.router.stats().webhooks;
    wait_until("14 deliveries counted", Duration::from_secs(5), || {
        w.delivered.load(std::sync::atomic::Ordering::Relaxed) == 14
    })
    .await;
    assert_eq!(
        w.failed_attempts.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert_eq!(w.dropped.load(std::sync::atomic::Ordering::Relaxed), 0);
    server.shutdown().await;
    assert_eq!(receiver.hits().len(), 14, "nothing more, nothing twice");
    eprintln!("ordered session test took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_attempts_are_retried_with_backoff_without_reordering() {
    let started = Instant::now();
    let (receiver, url) = Receiver::start(2).await;
    let server = TestServer::start_with(&[
        ("SWITCHYARD_WEBHOOK_URLS", &url),
        ("SWITCHYARD_WEBHOOK_INITIAL_BACKOFF_MS", "100"),
        ("SWITCHYARD_WEBHOOK_MAX_BACKOFF_MS", "1000"),
    ])
    .await;
    let room = "wh-retry";
    let (alice, bob) = session(&server, room).await;
    let session_took = started.elapsed();
    wait_until("all 14 events accepted", Duration::from_secs(30), || {
        receiver.accepted().len() == 14
    })
    .await;

    // Attempts of one event are back to back: the next event is sent only once the
    // previous one was accepted.
    let hits = receiver.hits();
    let mut runs: Vec<(String, Vec<Instant>)> = Vec::new();
    for hit in &hits {
        verified(hit);
        let id = body_id(hit);
        match runs.last_mut() {
            Some((last, times)) if *last == id => times.push(hit.at),
            _ => runs.push((id, vec![hit.at])),
        }
    }
    let attempts: Vec<usize> = runs.iter().map(|(_, t)| t.len()).collect();
    assert_eq!(attempts, [3; 14], "each event tried 3 times, in one run");
    let mut gaps = Vec::new();
    for (_, times) in &runs {
        let first = times[1] - times[0];
        let second = times[2] - times[1];
        assert!(
            first >= Duration::from_millis(100),
            "first retry waited {first:?}"
        );
        assert!(
            second >= Duration::from_millis(200),
            "second retry waited {second:?}"
        );
        gaps.push((first.as_millis(), second.as_millis()));
    }
    let events: Vec<Value> = receiver.accepted().iter().map(verified).collect();
    assert_session_order(&events, room, &alice, &bob);

    let w = &server.router.stats().webhooks;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    wait_until("14 deliveries counted", Duration::from_secs(5), || {
        load(&w.delivered) == 14
    })
    .await;
    assert_eq!(
        load(&w.failed_attempts),
        28,
        "two failed attempts per event"
    );
    assert_eq!(load(&w.dropped), 0);
    server.shutdown().await;
    eprintln!(
        "retry test: session {session_took:?}, all delivered after {:?}, {} requests; \
         retry gaps (ms) {gaps:?}",
        started.elapsed(),
        hits.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receiver_that_never_answers_delays_nothing_and_overflow_is_counted() {
    let started = Instant::now();
    // Accepts connections, reads nothing, answers nothing.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", silent.local_addr().unwrap());
    let connections = Arc::new(Mutex::new(Vec::new()));
    let held = connections.clone();
    let acceptor = tokio::spawn(async move {
        while let Ok((socket, _)) = silent.accept().await {
            held.lock().unwrap().push(socket);
        }
    });
    let server = TestServer::start_with(&[
        ("SWITCHYARD_WEBHOOK_URLS", &url),
        // Far longer than the session: the first event is in flight throughout.
        ("SWITCHYARD_WEBHOOK_TIMEOUT_MS", "60000"),
        ("SWITCHYARD_WEBHOOK_QUEUE_SIZE", "2"),
        ("SWITCHYARD_SERVER_SHUTDOWN_TIMEOUT_MS", "1000"),
    ])
    .await;
    let mut events = server.router.events();

    // The whole session, media included, while the first delivery hangs.
    session(&server, "wh-stuck").await;
    let session_took = started.elapsed();
    let mut emitted = 0u64;
    while events.try_recv().is_ok() {
        emitted += 1;
    }
    assert_eq!(emitted, 14);

    let stats = server.router.stats().clone();
    let w = &stats.webhooks;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    // One event in flight and two queued; every other one dropped and counted.
    wait_until(
        "11 events counted as dropped",
        Duration::from_secs(5),
        || load(&w.dropped) == emitted - 3,
    )
    .await;
    assert_eq!(load(&w.delivered), 0);
    assert_eq!(
        load(&w.failed_attempts),
        0,
        "the first attempt is still waiting"
    );
    assert_eq!(
        connections.lock().unwrap().len(),
        1,
        "one request at a time per URL"
    );

    // Shutdown gives up on the three at its deadline instead of waiting for the receiver.
    let stopping = Instant::now();
    server.shutdown().await;
    let shutdown_took = stopping.elapsed();
    assert!(
        shutdown_took < Duration::from_secs(4),
        "shutdown took {shutdown_took:?}"
    );
    assert_eq!(
        load(&w.dropped),
        emitted,
        "every event delivered or counted dropped"
    );
    acceptor.abort();
    eprintln!(
        "stuck receiver test: session {session_took:?} with deliveries hung, shutdown \
         {shutdown_took:?}, {} dropped",
        load(&w.dropped)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_delivers_the_closing_rooms_last_events() {
    // Slow to answer, so the closing room's events are still on their way when the rooms
    // are gone: only the server's flush gets them there.
    let (receiver, url) = Receiver::start_slow(0, Duration::from_millis(200)).await;
    let server = TestServer::start_with(&[("SWITCHYARD_WEBHOOK_URLS", &url)]).await;
    let ada = RtcClient::join(&server, "wh-shutdown", "ada").await;
    wait_until(
        "ada's two tracks announced",
        Duration::from_secs(20),
        || receiver.hits().len() == 4,
    )
    .await;

    // Ada is still in the room: the server closes it, and its last events (800 ms of
    // answers) must still go out before the server stops.
    let stats = server.router.stats().clone();
    server.shutdown().await;
    let delivered = stats
        .webhooks
        .delivered
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(delivered, 8);
    let events: Vec<String> = receiver
        .hits()
        .iter()
        .map(|hit| verified(hit)["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        events,
        [
            "room_started",
            "participant_joined",
            "track_published",
            "track_published",
            "track_unpublished",
            "track_unpublished",
            "participant_left",
            "room_finished"
        ]
    );
    ada.close().await;
}
