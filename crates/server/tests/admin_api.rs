//! The room admin API and access tokens through the real server: every endpoint's success
//! and each of its error codes, the same bad tokens refused at the admin API and at
//! `join`, permissions enforced, and what participants see of an operator's actions.

mod common;

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use common::{
    dev_token, recv_type, send_json, token_with, wait_until, ClientOptions, RtcClient, TestServer,
    TestServerExt, Ws,
};
use switchyard_signal::token::{mint, unix_now, Claims, Grant, DEV_API_KEY, DEV_API_SECRET};

const WAIT: Duration = Duration::from_secs(5);
const PROD_KEY: &str = "prodkey";
const PROD_SECRET: &str = "a-production-secret-of-32-chars!";

fn admin_token() -> String {
    token_with(
        "ops",
        Grant {
            room_admin: true,
            room_create: true,
            room_list: true,
            ..Grant::default()
        },
    )
}

fn signed(claims: Claims, secret: &str) -> String {
    mint(&claims, secret)
}

/// Tokens that must be refused: (what is wrong, token). All would otherwise grant
/// everything on room `r`.
fn bad_tokens() -> Vec<(&'static str, String)> {
    let all = Grant {
        room_admin: true,
        room_create: true,
        room_list: true,
        ..Grant::join("r")
    };
    let now = unix_now();
    let claims = |nbf: u64, exp: u64| {
        let mut c = Claims::new(DEV_API_KEY, "ada", nbf, 1).with_grant(all.clone());
        c.nbf = nbf;
        c.exp = exp;
        c
    };
    vec![
        (
            "expired",
            signed(claims(now - 120, now - 60), DEV_API_SECRET),
        ),
        (
            "not yet valid",
            signed(claims(now + 600, now + 900), DEV_API_SECRET),
        ),
        (
            "signed with another secret",
            signed(claims(now - 1, now + 600), "not-the-dev-secret"),
        ),
        (
            "from an unknown key",
            signed(
                Claims::new("nobody", "ada", now, 600).with_grant(all.clone()),
                DEV_API_SECRET,
            ),
        ),
        ("garbage", "not.a.token".to_owned()),
    ]
}

async fn expect_error(ws: &mut Ws, code: &str) -> String {
    let m = recv_type(ws, "error", WAIT).await;
    assert_eq!(m["code"], code, "wrong code in {m}");
    m["message"].as_str().unwrap().to_owned()
}

async fn expect_close(ws: &mut Ws, code: u16) {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("closes in time")
        {
            Some(Ok(Message::Close(Some(frame)))) => {
                assert_eq!(u16::from(frame.code), code, "close code ({frame:?})");
                return;
            }
            Some(Ok(Message::Close(None))) | None => panic!("closed without code {code}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("websocket error before close {code}: {e}"),
        }
    }
}

async fn join_raw(server: &TestServer, room: &str, name: &str, token: Option<&str>) -> Ws {
    let mut ws = server.connect().await;
    let mut join = json!({"type": "join", "room": room, "name": name});
    if let Some(token) = token {
        join["token"] = json!(token);
    }
    send_json(&mut ws, join).await;
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_tokens_are_refused_at_the_admin_api_and_at_join() {
    let server = TestServer::start().await;
    // The room exists, so a refusal can only be about the token.
    let (status, _) = server
        .http(
            "POST",
            "/api/v1/rooms",
            Some(&admin_token()),
            Some(r#"{"name": "r"}"#),
        )
        .await;
    assert_eq!(status, 201);

    for (what, token) in bad_tokens() {
        for (method, path) in [("GET", "/api/v1/rooms"), ("GET", "/api/v1/rooms/r")] {
            let (status, body) = server.http(method, path, Some(&token), None).await;
            assert_eq!(status, 401, "{what}: {method} {path}: {body}");
            assert_eq!(body["error"]["code"], "unauthorized", "{what}");
        }
        let mut ws = join_raw(&server, "r", "ada", Some(&token)).await;
        let message = expect_error(&mut ws, "unauthorized").await;
        assert!(!message.is_empty(), "{what}");
    }

    // No token at all.
    let (status, body) = server.http("GET", "/api/v1/rooms", None, None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let mut ws = join_raw(&server, "r", "ada", None).await;
    expect_error(&mut ws, "unauthorized").await;

    // A valid token for another room: refused at join (unauthorized) and, on the admin
    // API, forbidden for this room's participants.
    let other_room = token_with(
        "ada",
        Grant {
            room_admin: true,
            ..Grant::join("elsewhere")
        },
    );
    let mut ws = join_raw(&server, "r", "ada", Some(&other_room)).await;
    let message = expect_error(&mut ws, "unauthorized").await;
    assert!(message.contains("room `r`"), "{message}");
    let (status, body) = server
        .http(
            "GET",
            "/api/v1/rooms/r/participants",
            Some(&other_room),
            None,
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );

    // Valid, but missing the grant: forbidden on the API, unauthorized at join.
    let join_only = dev_token("r", "ada");
    for (method, path, body) in [
        ("GET", "/api/v1/rooms", None),
        ("POST", "/api/v1/rooms", Some(r#"{"name": "x"}"#)),
        ("DELETE", "/api/v1/rooms/r", None),
        ("GET", "/api/v1/rooms/r/participants", None),
    ] {
        let (status, reply) = server.http(method, path, Some(&join_only), body).await;
        assert_eq!(status, 403, "{method} {path}: {reply}");
        assert_eq!(reply["error"]["code"], "forbidden");
    }
    let no_join_grant = token_with(
        "ada",
        Grant {
            room_join: false,
            ..Grant::join("r")
        },
    );
    let mut ws = join_raw(&server, "r", "ada", Some(&no_join_grant)).await;
    expect_error(&mut ws, "unauthorized").await;

    // And a good one gets in.
    let mut ws = join_raw(&server, "r", "Ada", Some(&dev_token("r", "ada"))).await;
    let joined = recv_type(&mut ws, "joined", WAIT).await;
    assert_eq!(joined["participant"]["identity"], "ada");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn configured_keys_work_and_dev_mode_off_removes_the_dev_route() {
    let keys = format!(r#"[{{"key": "{PROD_KEY}", "secret": "{PROD_SECRET}"}}]"#);
    let server = TestServer::start_with(&[
        ("SWITCHYARD_AUTH_DEV_MODE", "false"),
        ("SWITCHYARD_AUTH_KEYS", &keys),
    ])
    .await;
    let (status, _) = server
        .http("GET", "/dev/token?room=r&identity=i", None, None)
        .await;
    assert_eq!(status, 404, "no dev token route outside dev mode");
    // The development key is not accepted either.
    let mut ws = join_raw(&server, "r", "ada", Some(&dev_token("r", "ada"))).await;
    let message = expect_error(&mut ws, "unauthorized").await;
    assert!(message.contains("devkey"), "{message}");
    let mut ws = join_raw(&server, "r", "ada", None).await;
    expect_error(&mut ws, "unauthorized").await;

    let prod = mint(
        &Claims::new(PROD_KEY, "ada", unix_now(), 600).with_grant(Grant::join("r")),
        PROD_SECRET,
    );
    let mut ws = join_raw(&server, "r", "Ada", Some(&prod)).await;
    recv_type(&mut ws, "joined", WAIT).await;
    let lister = mint(
        &Claims::new(PROD_KEY, "", unix_now(), 600).with_grant(Grant {
            room_list: true,
            ..Grant::default()
        }),
        PROD_SECRET,
    );
    let (status, body) = server
        .http("GET", "/api/v1/rooms", Some(&lister), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rooms"][0]["name"], "r");
    assert_eq!(body["rooms"][0]["num_participants"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dev_mode_hands_out_join_tokens() {
    let server = TestServer::start().await;
    let (status, body) = server
        .http(
            "GET",
            "/dev/token?room=standup&identity=ada&name=Ada",
            None,
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().unwrap().to_owned();
    let mut ws = join_raw(&server, "standup", "typed", Some(&token)).await;
    let joined = recv_type(&mut ws, "joined", WAIT).await;
    assert_eq!(
        joined["participant"]["name"], "Ada",
        "the token's name wins"
    );
    let (status, body) = server
        .http("GET", "/dev/token?room=standup", None, None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn room_endpoints_succeed_and_fail_as_documented() {
    let server = TestServer::start().await;
    let admin = admin_token();
    let t = Some(admin.as_str());

    // Create: 201, then 409; 400 naming the field; 413.
    let (status, room) = server
        .http(
            "POST",
            "/api/v1/rooms",
            t,
            Some(r#"{"name": "board", "max_participants": 2, "empty_timeout": 60, "metadata": "q3"}"#),
        )
        .await;
    assert_eq!(status, 201, "{room}");
    assert_eq!(room["name"], "board");
    assert_eq!(room["max_participants"], 2);
    assert_eq!(room["empty_timeout_secs"], 60);
    assert_eq!(room["metadata"], "q3");
    assert_eq!(room["num_participants"], 0);
    let (status, body) = server
        .http("POST", "/api/v1/rooms", t, Some(r#"{"name": "board"}"#))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("conflict"))
    );
    for (body, field) in [
        (r#"{"name": "has space"}"#, "name"),
        (
            r#"{"name": "ok", "max_participants": "ten"}"#,
            "max_participants",
        ),
        (
            r#"{"name": "ok", "max_participants": 0}"#,
            "max_participants",
        ),
        (r#"{"name": "ok", "colour": "red"}"#, "colour"),
        (r#"{"max_participants": 3}"#, "name"),
    ] {
        let (status, reply) = server.http("POST", "/api/v1/rooms", t, Some(body)).await;
        assert_eq!(status, 400, "{body}: {reply}");
        assert_eq!(reply["error"]["code"], "bad_request");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(field),
            "{body}: `{message}` does not name `{field}`"
        );
    }
    let (status, reply) = server
        .http("POST", "/api/v1/rooms", t, Some("{not json"))
        .await;
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    let huge = format!(r#"{{"name": "big", "metadata": "{}"}}"#, "x".repeat(70_000));
    let (status, reply) = server.http("POST", "/api/v1/rooms", t, Some(&huge)).await;
    assert_eq!(status, 413, "{reply}");
    assert_eq!(reply["error"]["code"], "payload_too_large");

    // List and get.
    let (status, list) = server.http("GET", "/api/v1/rooms", t, None).await;
    assert_eq!(status, 200);
    assert_eq!(list["rooms"].as_array().unwrap().len(), 1);
    let (status, got) = server.http("GET", "/api/v1/rooms/board", t, None).await;
    assert_eq!((status, &got["metadata"]), (200, &json!("q3")));
    let (status, body) = server.http("GET", "/api/v1/rooms/nope", t, None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );

    // max_participants is enforced at join.
    let mut a = join_raw(&server, "board", "a", Some(&dev_token("board", "a"))).await;
    recv_type(&mut a, "joined", WAIT).await;
    let mut b = join_raw(&server, "board", "b", Some(&dev_token("board", "b"))).await;
    let joined_b = recv_type(&mut b, "joined", WAIT).await;
    assert_eq!(joined_b["room_metadata"], "q3");
    let mut c = join_raw(&server, "board", "c", Some(&dev_token("board", "c"))).await;
    expect_error(&mut c, "room_full").await;

    // Update: metadata reaches everyone as room_updated; 404; 400.
    let (status, updated) = server
        .http(
            "PATCH",
            "/api/v1/rooms/board",
            t,
            Some(r#"{"metadata": "q4", "max_participants": 3}"#),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(
        (&updated["metadata"], &updated["max_participants"]),
        (&json!("q4"), &json!(3))
    );
    for ws in [&mut a, &mut b] {
        let m = recv_type(ws, "room_updated", WAIT).await;
        assert_eq!(m["metadata"], "q4");
    }
    let (status, _) = server
        .http(
            "PATCH",
            "/api/v1/rooms/nope",
            t,
            Some(r#"{"metadata": "x"}"#),
        )
        .await;
    assert_eq!(status, 404);
    let (status, reply) = server
        .http(
            "PATCH",
            "/api/v1/rooms/board",
            t,
            Some(r#"{"metadata": 5}"#),
        )
        .await;
    assert_eq!(status, 400);
    assert!(reply["error"]["message"]
        .as_str()
        .unwrap()
        .contains("metadata"));

    // Stats of a room with no media yet.
    let (status, stats) = server
        .http("GET", "/api/v1/rooms/board/stats", t, None)
        .await;
    assert_eq!((status, &stats["room"]), (200, &json!("board")));
    let (status, _) = server
        .http("GET", "/api/v1/rooms/nope/stats", t, None)
        .await;
    assert_eq!(status, 404);

    // Delete: everyone is told why and the socket closes; then the room is gone.
    let (status, _) = server.http("DELETE", "/api/v1/rooms/board", t, None).await;
    assert_eq!(status, 204);
    for ws in [&mut a, &mut b] {
        let m = recv_type(ws, "disconnected", WAIT).await;
        assert_eq!(m["reason"], "room_deleted");
        expect_close(ws, 1000).await;
    }
    let (status, _) = server.http("GET", "/api/v1/rooms/board", t, None).await;
    assert_eq!(status, 404);
    let (status, _) = server.http("DELETE", "/api/v1/rooms/board", t, None).await;
    assert_eq!(status, 404);
    let (status, body) = server.http("GET", "/api/v1/no/such/route", t, None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );

    // An API-created room closes after its empty timeout.
    let (status, _) = server
        .http(
            "POST",
            "/api/v1/rooms",
            t,
            Some(r#"{"name": "brief", "empty_timeout": 1}"#),
        )
        .await;
    assert_eq!(status, 201);
    wait_until(
        "the empty room closes after 1 s",
        Duration::from_secs(5),
        || server.router.room_count() == 0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn participant_endpoints_act_live_on_a_real_session() {
    let server = TestServer::start().await;
    let admin = admin_token();
    let t = Some(admin.as_str());
    let alice = RtcClient::join(&server, "live", "alice").await;
    let bob = RtcClient::join(&server, "live", "bob").await;
    wait_until(
        "bob receives alice's media",
        Duration::from_secs(20),
        || bob.count(&alice.id, "alice-mic") > 25 && bob.count(&alice.id, "alice-cam") > 25,
    )
    .await;
    // Let the room sample bitrates (once a second).
    tokio::time::sleep(Duration::from_millis(2200)).await;

    let (status, list) = server
        .http("GET", "/api/v1/rooms/live/participants", t, None)
        .await;
    assert_eq!(status, 200, "{list}");
    let identities: Vec<&str> = list["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["identity"].as_str().unwrap())
        .collect();
    assert_eq!(identities, ["alice", "bob"]);
    let (status, _) = server
        .http("GET", "/api/v1/rooms/nope/participants", t, None)
        .await;
    assert_eq!(status, 404);

    let (status, p) = server
        .http("GET", "/api/v1/rooms/live/participants/alice", t, None)
        .await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["id"], alice.id.as_str());
    assert_eq!(p["name"], "alice");
    assert!(p["joined_at"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(p["publisher_state"], "connected");
    assert_eq!(p["subscriber_state"], "connected");
    assert_eq!(
        p["permissions"],
        json!({"can_publish": true, "can_subscribe": true, "can_publish_data": true})
    );
    let cam = track(&p, "alice-cam");
    assert_eq!(cam["kind"], "video");
    assert_eq!(cam["mime_type"], "video/VP8");
    assert_eq!(cam["subscribers"], 1);
    // The synthetic camera sends 1000-byte payloads every 33 ms: about 240 kbit/s.
    let cam_in = cam["bitrate_in_bps"].as_u64().unwrap();
    assert!(
        (100_000..500_000).contains(&cam_in),
        "camera in: {cam_in} bit/s"
    );
    assert!(cam["bitrate_out_bps"].as_u64().unwrap() > 100_000, "{cam}");
    let (status, _) = server
        .http("GET", "/api/v1/rooms/live/participants/nobody", t, None)
        .await;
    assert_eq!(status, 404);

    let (status, stats) = server
        .http("GET", "/api/v1/rooms/live/stats", t, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(stats["tracks"].as_array().unwrap().len(), 4, "{stats}");
    assert!(
        stats["bitrate_in_bps"].as_u64().unwrap() > 200_000,
        "{stats}"
    );

    // Server-side mute: everyone hears it, bob stops receiving alice's camera; unmute
    // brings it back.
    let (status, muted) = server
        .http(
            "POST",
            "/api/v1/rooms/live/participants/alice/tracks/alice-cam/mute",
            t,
            Some(r#"{"muted": true}"#),
        )
        .await;
    assert_eq!((status, &muted["muted"]), (200, &json!(true)), "{muted}");
    for me in [&alice, &bob] {
        wait_until(&format!("{} hears the mute", me.name), WAIT, || {
            me.saw(|m| {
                m["type"] == "track_muted" && m["track_id"] == "alice-cam" && m["muted"] == true
            })
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let frozen = bob.count(&alice.id, "alice-cam");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        bob.count(&alice.id, "alice-cam"),
        frozen,
        "a muted track is not forwarded"
    );
    let (status, _) = server
        .http(
            "POST",
            "/api/v1/rooms/live/participants/alice/tracks/alice-cam/mute",
            t,
            Some(r#"{"muted": false}"#),
        )
        .await;
    assert_eq!(status, 200);
    wait_until(
        "alice's camera resumes for bob (at a keyframe)",
        Duration::from_secs(5),
        || bob.count(&alice.id, "alice-cam") > frozen + 10,
    )
    .await;
    let (status, _) = server
        .http(
            "POST",
            "/api/v1/rooms/live/participants/alice/tracks/nope/mute",
            t,
            Some(r#"{"muted": true}"#),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = server
        .http(
            "POST",
            "/api/v1/rooms/live/participants/alice/tracks/alice-cam/mute",
            t,
            Some(r#"{"muted": "yes"}"#),
        )
        .await;
    assert_eq!(status, 400);

    // Revoking subscribe stops what bob receives; revoking publish unpublishes alice's
    // tracks for everyone.
    let (status, p) = server
        .http(
            "PATCH",
            "/api/v1/rooms/live/participants/bob/permissions",
            t,
            Some(r#"{"can_subscribe": false}"#),
        )
        .await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["permissions"]["can_subscribe"], false);
    assert_eq!(
        p["permissions"]["can_publish"], true,
        "unchanged fields stay"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = bob.count(&alice.id, "alice-mic");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        bob.count(&alice.id, "alice-mic"),
        before,
        "nothing forwarded to bob"
    );
    let (status, p) = server
        .http(
            "PATCH",
            "/api/v1/rooms/live/participants/alice/permissions",
            t,
            Some(r#"{"can_publish": false}"#),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(p["tracks"], json!([]), "{p}");
    wait_until("bob hears alice's tracks go", WAIT, || {
        bob.saw(|m| m["type"] == "track_unpublished" && m["track_id"] == "alice-mic")
            && bob.saw(|m| m["type"] == "track_unpublished" && m["track_id"] == "alice-cam")
    })
    .await;
    // And alice may not publish again.
    alice.send(json!({"type": "publish_offer", "sdp": "v=0"}));
    wait_until("alice's new offer is forbidden", WAIT, || {
        alice.saw(|m| m["type"] == "error" && m["code"] == "forbidden")
    })
    .await;
    let (status, _) = server
        .http(
            "PATCH",
            "/api/v1/rooms/live/participants/nobody/permissions",
            t,
            Some(r#"{"can_publish": true}"#),
        )
        .await;
    assert_eq!(status, 404);

    // Remove bob: he is told and his session ends; a second removal is a 404.
    let (status, _) = server
        .http("DELETE", "/api/v1/rooms/live/participants/bob", t, None)
        .await;
    assert_eq!(status, 204);
    wait_until("bob is told he was removed", WAIT, || {
        bob.saw(|m| m["type"] == "disconnected" && m["reason"] == "removed")
    })
    .await;
    wait_until("alice hears bob left", WAIT, || {
        alice.saw(|m| m["type"] == "participant_left" && m["participant_id"] == bob.id.as_str())
    })
    .await;
    let (status, _) = server
        .http("DELETE", "/api/v1/rooms/live/participants/bob", t, None)
        .await;
    assert_eq!(status, 404);
    alice.close().await;
    bob.close().await;
}

fn track<'a>(participant: &'a Value, id: &str) -> &'a Value {
    participant["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .unwrap_or_else(|| panic!("no track {id} in {participant}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn token_permissions_and_identities_are_enforced_at_join() {
    let server = TestServer::start().await;
    let alice = RtcClient::join(&server, "perm", "alice").await;
    // A watcher may not publish: its offer is forbidden.
    let watcher = RtcClient::join_opts(
        &server,
        "perm",
        "watcher",
        ClientOptions {
            token: Some(token_with(
                "watcher",
                Grant {
                    can_publish: false,
                    ..Grant::join("perm")
                },
            )),
            ..ClientOptions::default()
        },
    )
    .await;
    // A lurker receives nothing.
    let lurker = RtcClient::join_opts(
        &server,
        "perm",
        "lurker",
        ClientOptions {
            token: Some(token_with(
                "lurker",
                Grant {
                    can_subscribe: false,
                    ..Grant::join("perm")
                },
            )),
            ..ClientOptions::default()
        },
    )
    .await;
    wait_until("the watcher's offer is forbidden", WAIT, || {
        watcher.saw(|m| m["type"] == "error" && m["code"] == "forbidden")
    })
    .await;
    wait_until(
        "the watcher receives alice and the lurker's tracks",
        Duration::from_secs(20),
        || {
            watcher.count(&alice.id, "alice-cam") > 25
                && watcher.count(&lurker.id, "lurker-cam") > 25
        },
    )
    .await;
    assert_eq!(
        alice.count(&watcher.id, "watcher-cam"),
        0,
        "the watcher published nothing"
    );
    assert!(
        lurker.snapshot().is_empty(),
        "the lurker received {:?}",
        lurker.snapshot()
    );

    // A second session with alice's identity replaces the first.
    let mut first = join_raw(&server, "dup", "A", Some(&dev_token("dup", "same"))).await;
    recv_type(&mut first, "joined", WAIT).await;
    let mut second = join_raw(&server, "dup", "A again", Some(&dev_token("dup", "same"))).await;
    let joined = recv_type(&mut second, "joined", WAIT).await;
    assert_eq!(
        joined["participants"],
        json!([]),
        "the first session is gone"
    );
    expect_error(&mut first, "duplicate_identity").await;
    expect_close(&mut first, 1000).await;
    alice.close().await;
    watcher.close().await;
    lurker.close().await;
}
