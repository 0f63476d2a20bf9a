//! Every kind of bad signaling input gets a clear error with a stable code, and costs
//! nothing else: the connection stays usable, other participants are unaffected. Garbage
//! on the media port is dropped without effect on anyone's media.

mod common;

use std::time::Duration;

use common::{
    dev_token, recv_json, recv_type, send_json, wait_until, RtcClient, TestServer, TestServerExt,
    Ws,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(5);

async fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::Text(text.to_owned().into()))
        .await
        .unwrap();
}

/// The next message that answers what this raw client sent: the server's own
/// `subscribe_offer` (made at join, for the data channels) and its candidates are not
/// answers, and this client never takes them up.
async fn recv_reply(ws: &mut Ws) -> Value {
    loop {
        let m = recv_json(ws, WAIT).await;
        if m["type"] != "subscribe_offer" && m["type"] != "candidate" {
            return m;
        }
    }
}

async fn expect_error(ws: &mut Ws, code: &str) -> String {
    let m = recv_reply(ws).await;
    assert_eq!(m["type"], "error", "expected an error, got {m}");
    assert_eq!(m["code"], code, "wrong code in {m}");
    m["message"].as_str().unwrap().to_owned()
}

/// The connection still answers, i.e. the bad message cost nothing.
async fn assert_alive(ws: &mut Ws) {
    send_json(ws, json!({"type": "ping"})).await;
    assert_eq!(recv_reply(ws).await, json!({"type": "pong"}));
}

async fn join(ws: &mut Ws, room: &str, name: &str) -> Value {
    send_json(
        ws,
        json!({"type": "join", "room": room, "name": name, "token": dev_token(room, name)}),
    )
    .await;
    recv_type(ws, "joined", WAIT).await
}

async fn expect_close(ws: &mut Ws, code: u16) {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("closes in time")
        {
            Some(Ok(Message::Close(Some(frame)))) => {
                assert_eq!(frame.code, CloseCode::from(code), "close frame {frame:?}");
                return;
            }
            Some(Ok(Message::Close(None))) | None => panic!("closed without code {code}"),
            Some(Err(e)) => panic!("connection failed instead of closing with {code}: {e}"),
            Some(Ok(_)) => continue,
        }
    }
}

#[tokio::test]
async fn malformed_json_is_bad_request_and_connection_stays() {
    let server = TestServer::start().await;
    let mut ws = server.connect().await;
    send_text(&mut ws, "{\"type\": \"join\", ").await;
    let message = expect_error(&mut ws, "bad_request").await;
    assert!(message.contains("malformed JSON"), "{message}");
    assert_alive(&mut ws).await;
    join(&mut ws, "r", "after-garbage").await;
}

#[tokio::test]
async fn unknown_type_is_bad_request_naming_it() {
    let server = TestServer::start().await;
    let mut ws = server.connect().await;
    send_json(&mut ws, json!({"type": "teleport", "to": "mars"})).await;
    let message = expect_error(&mut ws, "bad_request").await;
    assert!(message.contains("teleport"), "{message}");
    send_json(&mut ws, json!({"no_type": true})).await;
    let message = expect_error(&mut ws, "bad_request").await;
    assert!(message.contains("type"), "{message}");
    assert_alive(&mut ws).await;
}

#[tokio::test]
async fn missing_or_ill_typed_field_is_bad_request_naming_it() {
    let server = TestServer::start().await;
    let mut ws = server.connect().await;
    send_json(&mut ws, json!({"type": "join", "name": "ann"})).await;
    let message = expect_error(&mut ws, "bad_request").await;
    assert!(message.contains("`room`"), "{message}");
    send_json(
        &mut ws,
        json!({"type": "join", "room": ["r"], "name": "ann"}),
    )
    .await;
    let message = expect_error(&mut ws, "bad_request").await;
    assert!(message.contains("invalid type"), "{message}");
    send_json(&mut ws, json!({"type": "join", "room": "", "name": "ann"})).await;
    let message = expect_error(&mut ws, "bad_request").await;
    assert!(message.contains("`room`"), "{message}");
    // Joined, a bad field in another message keeps the participant in.
    join(&mut ws, "r", "ann").await;
    send_json(
        &mut ws,
        json!({"type": "mute", "track_id": "t", "muted": "yes"}),
    )
    .await;
    let message = expect_error(&mut ws, "bad_request").await;
    assert!(message.contains("mute"), "{message}");
    assert_alive(&mut ws).await;
    assert_eq!(server.router.room_count(), 1);
}

#[tokio::test]
async fn binary_frames_are_refused() {
    let server = TestServer::start().await;
    let mut ws = server.connect().await;
    ws.send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    expect_error(&mut ws, "bad_request").await;
    assert_alive(&mut ws).await;
}

#[tokio::test]
async fn anything_but_join_or_ping_before_join_is_not_joined() {
    let server = TestServer::start().await;
    let mut ws = server.connect().await;
    for message in [
        json!({"type": "publish_offer", "sdp": "v=0"}),
        json!({"type": "subscribe_answer", "sdp": "v=0"}),
        json!({"type": "candidate", "target": "publisher", "candidate": {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host"}}),
        json!({"type": "mute", "track_id": "t", "muted": true}),
        json!({"type": "leave"}),
    ] {
        send_json(&mut ws, message.clone()).await;
        let text = expect_error(&mut ws, "not_joined").await;
        assert!(text.contains(message["type"].as_str().unwrap()), "{text}");
    }
    assert_alive(&mut ws).await;
    join(&mut ws, "r", "late").await;
    send_json(
        &mut ws,
        json!({"type": "join", "room": "r", "name": "twice"}),
    )
    .await;
    expect_error(&mut ws, "already_joined").await;
}

#[tokio::test]
async fn candidates_are_kept_up_to_a_limit_of_distinct_addresses() {
    let server = TestServer::start().await;
    let mut ws = server.connect().await;
    join(&mut ws, "r", "trickler").await;
    // Kept for the publish_offer that has not come (no error for any of these).
    let candidate = |port: u32| {
        json!({"type": "candidate", "target": "publisher",
               "candidate": {"candidate": format!("candidate:1 1 udp 1 127.0.0.1 {port} typ host")}})
    };
    for port in 0..16 {
        send_json(&mut ws, candidate(10_000 + port)).await;
        // The same address again is not another one.
        send_json(&mut ws, candidate(10_000 + port)).await;
    }
    // Ignored without an error: the server cannot use them.
    send_json(
        &mut ws,
        json!({"type": "candidate", "target": "publisher", "candidate": {"candidate":
        "candidate:2 1 tcp 1 127.0.0.1 9 typ host tcptype active"}}),
    )
    .await;
    send_json(
        &mut ws,
        json!({"type": "candidate", "target": "publisher", "candidate": {"candidate":
        "candidate:3 1 udp 1 0b7f1c1e-7c1d-4f7e-8ad6-1c3b0c7b6a1e.local 5000 typ host"}}),
    )
    .await;
    assert_alive(&mut ws).await;
    // One more address is a misbehaving client: refused once, and the participant stays.
    for port in 20_000..20_010 {
        send_json(&mut ws, candidate(port)).await;
    }
    let message = expect_error(&mut ws, "invalid_candidate").await;
    assert!(message.contains("more than 16"), "{message}");
    assert_alive(&mut ws).await;
    // Addresses no client can have are refused each time: the server's own media port.
    let own = format!(
        "candidate:1 1 udp 1 127.0.0.1 {} typ host",
        server.udp.port()
    );
    send_json(
        &mut ws,
        json!({"type": "candidate", "target": "subscriber", "candidate": {"candidate": own}}),
    )
    .await;
    let message = expect_error(&mut ws, "invalid_candidate").await;
    assert!(message.contains("not allowed"), "{message}");
    assert_alive(&mut ws).await;
    assert_eq!(server.router.room_count(), 1);
}

#[tokio::test]
async fn oversized_message_closes_with_1009_and_others_are_unaffected() {
    let server = TestServer::start_with(&[("SWITCHYARD_SIGNAL_MAX_MESSAGE_BYTES", "2048")]).await;
    let mut bystander = server.connect().await;
    join(&mut bystander, "r", "bystander").await;

    // Just over the limit: refused by the session itself.
    let mut ws = server.connect().await;
    let over = json!({"type": "ping", "pad": "x".repeat(2100)}).to_string();
    send_text(&mut ws, &over).await;
    expect_close(&mut ws, 1009).await;

    // Far over the limit: the transport refuses to buffer it, same close code.
    let mut ws = server.connect().await;
    join(&mut ws, "r", "big-sender").await;
    let huge = json!({"type": "publish_offer", "sdp": "v".repeat(1 << 20)}).to_string();
    let _ = ws.send(Message::Text(huge.into())).await;
    expect_close(&mut ws, 1009).await;

    // The bystander saw big-sender come and go, and still works.
    let left = recv_type(&mut bystander, "participant_left", WAIT).await;
    assert!(left["participant_id"].is_string());
    assert_alive(&mut bystander).await;
}

#[tokio::test]
async fn invalid_sdp_is_refused_and_participant_stays() {
    let server = TestServer::start().await;
    let mut ws = server.connect().await;
    let joined = join(&mut ws, "r", "sloppy").await;
    let my_id = joined["participant"]["id"].clone();

    send_json(
        &mut ws,
        json!({"type": "publish_offer", "sdp": "this is not sdp"}),
    )
    .await;
    // A stable text: webrtc-rs's own error (its type names, its parser's state) stays in
    // the server's log.
    let unparsable = expect_error(&mut ws, "invalid_sdp").await;
    assert_eq!(
        unparsable,
        "invalid SDP: it could not be parsed or applied to the connection"
    );
    // Parses as SDP, but offers nothing WebRTC can use.
    send_json(&mut ws, json!({"type": "publish_offer", "sdp": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n"})).await;
    let unusable = expect_error(&mut ws, "invalid_sdp").await;
    assert_eq!(unusable, unparsable);
    // A garbage answer to the subscribe offer the server made at join: refused, and the
    // offer stays open for a good answer.
    send_json(&mut ws, json!({"type": "subscribe_answer", "sdp": "v=0"})).await;
    expect_error(&mut ws, "invalid_sdp").await;
    assert_alive(&mut ws).await;

    // Still in the room: a newcomer sees it there.
    let mut other = server.connect().await;
    let joined = join(&mut other, "r", "newcomer").await;
    assert_eq!(joined["participants"][0]["id"], my_id);
    let announced = recv_type(&mut ws, "participant_joined", WAIT).await;
    assert_eq!(announced["participant"]["name"], "newcomer");
}

#[tokio::test]
async fn room_limit_is_enforced_with_room_full() {
    let server = TestServer::start_with(&[("SWITCHYARD_ROOM_MAX_PARTICIPANTS", "2")]).await;
    let mut a = server.connect().await;
    let mut b = server.connect().await;
    let mut c = server.connect().await;
    join(&mut a, "small", "a").await;
    join(&mut b, "small", "b").await;
    send_json(
        &mut c,
        json!({"type": "join", "room": "small", "name": "c", "token": dev_token("small", "c")}),
    )
    .await;
    expect_error(&mut c, "room_full").await;
    // Refused, not dropped: another room still admits it.
    join(&mut c, "other", "c").await;
}

#[tokio::test]
async fn unknown_track_mute_is_refused() {
    let server = TestServer::start().await;
    let mut ws = server.connect().await;
    join(&mut ws, "r", "muter").await;
    send_json(
        &mut ws,
        json!({"type": "mute", "track_id": "nope", "muted": true}),
    )
    .await;
    let message = expect_error(&mut ws, "unknown_track").await;
    assert!(message.contains("nope"), "{message}");
    assert_alive(&mut ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_datagrams_on_the_media_port_change_nothing() {
    let server = TestServer::start().await;
    let alice = RtcClient::join(&server, "garbage", "alice").await;
    let bob = RtcClient::join(&server, "garbage", "bob").await;
    wait_until("media flows both ways", Duration::from_secs(20), || {
        alice.count(&bob.id, "bob-cam") > 20 && bob.count(&alice.id, "alice-mic") > 20
    })
    .await;

    // 3000 datagrams of noise, STUN-shaped junk and truncated RTP/DTLS-looking bytes, from
    // a loopback socket the server has never seen.
    let noise = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..3000u32 {
        let len = (next() % 1400) as usize + 1;
        let mut datagram: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        match i % 4 {
            0 => datagram[0] = 0x00, // STUN range
            1 => datagram[0] = 0x80, // RTP/RTCP range
            2 => datagram[0] = 0x16, // DTLS range
            _ => {}
        }
        noise.send_to(&datagram, server.udp).await.unwrap();
        if i % 200 == 0 {
            tokio::task::yield_now().await;
        }
    }

    let before = (
        alice.count(&bob.id, "bob-cam"),
        bob.count(&alice.id, "alice-mic"),
    );
    wait_until(
        "media keeps flowing after the garbage",
        Duration::from_secs(10),
        || {
            alice.count(&bob.id, "bob-cam") > before.0 + 30
                && bob.count(&alice.id, "alice-mic") > before.1 + 30
        },
    )
    .await;
    assert!(!alice.saw(|m| m["type"] == "participant_left"));
    assert!(!bob.saw(|m| m["type"] == "error"));
    alice.close().await;
    bob.close().await;
}

/// A publisher's bad packets (too big to forward, a payload type nobody negotiated) are
/// dropped and counted; its track goes on, and its subscriber keeps receiving it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_publishers_bad_packets_do_not_end_its_track() {
    let server = TestServer::start().await;
    let alice = RtcClient::join(&server, "bad-rtp", "alice").await;
    let bob = RtcClient::join(&server, "bad-rtp", "bob").await;
    wait_until(
        "bob receives alice's camera",
        Duration::from_secs(20),
        || bob.count(&alice.id, "alice-cam") > 20,
    )
    .await;
    let stats = server.router.stats().clone();
    for _ in 0..20 {
        // 3000 bytes: more than any path's MTU; and payload type 55, not negotiated.
        assert!(alice.send_raw_video(96, vec![0x10; 3000]).await);
        assert!(alice.send_raw_video(55, vec![0x10, 0x00, 0x9d]).await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    use switchyard_stats::DropReason;
    let counted = || {
        (
            stats.dropped.get(DropReason::Oversized),
            stats.dropped.get(DropReason::UnknownPayloadType),
        )
    };
    if let Err(e) = common::try_wait_until(
        "both kinds are dropped and counted",
        Duration::from_secs(5),
        || counted().0 >= 20 && counted().1 >= 20,
    )
    .await
    {
        panic!("{e}: (oversized, unknown payload type) = {:?}", counted());
    }
    let before = bob.count(&alice.id, "alice-cam");
    wait_until(
        "alice's camera still reaches bob",
        Duration::from_secs(5),
        || bob.count(&alice.id, "alice-cam") > before + 30,
    )
    .await;
    assert!(!bob.saw(|m| m["type"] == "track_unpublished"));
    alice.close().await;
    bob.close().await;
}

#[tokio::test]
async fn a_flood_of_messages_closes_the_socket_and_others_are_unaffected() {
    let server = TestServer::start().await;
    let mut bystander = server.connect().await;
    join(&mut bystander, "r", "bystander").await;
    let mut flooder = server.connect().await;
    join(&mut flooder, "r", "flooder").await;
    // 1,000 mutes at once: far over 50 a second in bursts of 200.
    for _ in 0..1000 {
        if flooder
            .send(Message::Text(
                json!({"type": "mute", "track_id": "t", "muted": true})
                    .to_string()
                    .into(),
            ))
            .await
            .is_err()
        {
            break;
        }
    }
    expect_close(&mut flooder, 1008).await;
    let left = recv_type(&mut bystander, "participant_left", WAIT).await;
    assert!(left["participant_id"].is_string());
    assert_alive(&mut bystander).await;
}

#[tokio::test]
async fn publish_offers_are_rate_limited() {
    let server = TestServer::start().await;
    let mut ws = server.connect().await;
    join(&mut ws, "r", "reofferer").await;
    for _ in 0..12 {
        send_json(&mut ws, json!({"type": "publish_offer", "sdp": "v=0"})).await;
    }
    let mut codes = Vec::new();
    for _ in 0..12 {
        let m = recv_type(&mut ws, "error", WAIT).await;
        codes.push(m["code"].as_str().unwrap().to_owned());
    }
    // The burst of 10 is applied (and these SDPs are refused as SDP); the rest are not
    // even looked at.
    assert_eq!(
        codes.iter().filter(|c| *c == "invalid_sdp").count(),
        10,
        "{codes:?}"
    );
    assert_eq!(
        codes.iter().filter(|c| *c == "rate_limited").count(),
        2,
        "{codes:?}"
    );
    assert_alive(&mut ws).await;
}

/// A track named with control characters, or thousands of declared tracks: refused
/// before anything is kept.
#[tokio::test]
async fn declared_tracks_are_bounded() {
    let server = TestServer::start().await;
    let mut ws = server.connect().await;
    join(&mut ws, "r", "declarer").await;
    let many: Vec<Value> = (0..100)
        .map(|i| json!({"track_id": format!("t{i}"), "source": "camera"}))
        .collect();
    send_json(
        &mut ws,
        json!({"type": "publish_offer", "sdp": "v=0", "tracks": many}),
    )
    .await;
    let message = expect_error(&mut ws, "bad_request").await;
    assert!(message.contains("at most 64"), "{message}");
    send_json(
        &mut ws,
        json!({"type": "publish_offer", "sdp": "v=0", "tracks": [{"track_id": "a\u{1b}[2J", "source": "screen"}]}),
    )
    .await;
    let message = expect_error(&mut ws, "bad_request").await;
    assert!(message.contains("control characters"), "{message}");
    assert_alive(&mut ws).await;
}

/// A token's `name` and `sub` reach every participant's screen and the server's log: they
/// obey the rules of typed names (no 40 KB names, no newlines or terminal escapes).
#[tokio::test]
async fn token_claims_are_held_to_the_rules_of_typed_names() {
    use switchyard_signal::token::{mint, unix_now, Claims, Grant, DEV_API_KEY, DEV_API_SECRET};
    let server = TestServer::start().await;
    let token = |identity: &str, name: Option<String>| {
        let mut claims =
            Claims::new(DEV_API_KEY, identity, unix_now(), 60).with_grant(Grant::join("r"));
        claims.name = name;
        mint(&claims, DEV_API_SECRET)
    };
    let mut bystander = server.connect().await;
    join(&mut bystander, "r", "bystander").await;
    for token in [
        token("ann", Some("A".repeat(40_000))),
        token("ann", Some("Ann\nmallory is now an admin".into())),
        token("ann", Some("\u{1b}[2J\u{1b}[31mAnn".into())),
        token("ann\n2026-12-02T12:00:00Z INFO fake log line", None),
    ] {
        let mut ws = server.connect().await;
        send_json(
            &mut ws,
            json!({"type": "join", "room": "r", "name": "typed", "token": token}),
        )
        .await;
        let message = expect_error(&mut ws, "unauthorized").await;
        assert!(message.starts_with("the token's"), "{message}");
    }
    // Nobody saw any of them come in.
    send_json(&mut bystander, json!({"type": "ping"})).await;
    let next = recv_reply(&mut bystander).await;
    assert_eq!(next, json!({"type": "pong"}), "{next}");
}
