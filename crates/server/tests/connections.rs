//! Connections that never join are closed, and one address cannot hold the server's
//! descriptors: a WebSocket that does not join in time, a TCP connection that never sends
//! a request, a client that dribbles its headers, and more than the per-IP number of
//! unauthenticated connections are all dropped, while everyone else is served.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::{dev_token, recv_type, send_json, ServerProcess, TestServer, TestServerExt};
use futures_util::StreamExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// A TCP connection to `server` from the loopback address `from` (the whole of
/// 127.0.0.0/8 is this host, so each stands for another client).
async fn connect_from(from: &str, server: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0))?;
    socket.connect(server).await
}

/// Whether the server closed `stream` within `within` (reads EOF or a reset).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // e.g. a 408 before the close
        }
    }
}

fn short_timeouts() -> [(&'static str, &'static str); 3] {
    [
        ("SWITCHYARD_SIGNAL_JOIN_TIMEOUT_MS", "600"),
        ("SWITCHYARD_SERVER_HTTP_HEADER_TIMEOUT_MS", "600"),
        ("SWITCHYARD_SERVER_MAX_UNAUTHENTICATED_PER_IP", "8"),
    ]
}

#[tokio::test]
async fn a_websocket_that_does_not_join_in_time_is_closed() {
    let server = TestServer::start_with(&short_timeouts()).await;
    let mut ws = server.connect().await;
    let started = Instant::now();
    // Pings are answered, but they are not a join.
    send_json(&mut ws, json!({"type": "ping"})).await;
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break frame,
            Ok(Some(Ok(_))) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    let close = close.expect("a close code");
    assert_eq!(close.code, CloseCode::Policy);
    assert_eq!(close.reason.as_str(), "no join in time");
    assert!(started.elapsed() >= Duration::from_millis(500));
    // One that joins in time stays.
    let mut joined = server.connect().await;
    send_json(
        &mut joined,
        json!({"type": "join", "room": "r", "name": "quick", "token": dev_token("r", "quick")}),
    )
    .await;
    recv_type(&mut joined, "joined", Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    send_json(&mut joined, json!({"type": "ping"})).await;
    recv_type(&mut joined, "pong", Duration::from_secs(5)).await;
}

#[tokio::test]
async fn silent_and_slow_header_connections_are_closed() {
    let server = TestServer::start_with(&short_timeouts()).await;
    // Connects and never sends a byte.
    let mut silent = connect_from("127.0.0.1", server.http).await.unwrap();
    // Sends its request head one byte every 100 ms: it would take seconds.
    let mut slow = connect_from("127.0.0.1", server.http).await.unwrap();
    let dribble = tokio::spawn(async move {
        for byte in b"GET /healthz HTTP/1.1\r\nHost: switchyard\r\nX-Slow: 1\r\n\r\n" {
            if slow.write_all(&[*byte]).await.is_err() {
                return Some(slow);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    });
    assert!(
        closed_within(&mut silent, Duration::from_secs(3)).await,
        "a silent connection stays open"
    );
    let slow = tokio::time::timeout(Duration::from_secs(10), dribble)
        .await
        .expect("the dribble ends")
        .unwrap();
    assert!(
        slow.is_some(),
        "the slow client got to send its whole request"
    );
    // A normal request on a kept-alive connection: answered, then closed when idle.
    let mut keep_alive = connect_from("127.0.0.1", server.http).await.unwrap();
    keep_alive
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: switchyard\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = keep_alive.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert!(
        closed_within(&mut keep_alive, Duration::from_secs(3)).await,
        "an idle kept-alive connection stays open"
    );
}

#[tokio::test]
async fn one_address_cannot_hold_more_than_its_share() {
    let server = TestServer::start_with(&short_timeouts()).await;
    // 8 idle connections from 127.0.0.2 are its limit; the 9th and later are closed at once.
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(connect_from("127.0.0.2", server.http).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut over = connect_from("127.0.0.2", server.http).await.unwrap();
    assert!(closed_within(&mut over, Duration::from_millis(300)).await);
    // Everyone else is served meanwhile: health checks, and joins from other addresses.
    let (status, _) = server.http("GET", "/healthz", None, None).await;
    assert_eq!(status, 200);
    let mut ws = server.connect().await;
    send_json(
        &mut ws,
        json!({"type": "join", "room": "r", "name": "ann", "token": dev_token("r", "ann")}),
    )
    .await;
    recv_type(&mut ws, "joined", Duration::from_secs(5)).await;
    // Joined WebSockets do not count: many participants may share one address (a NAT).
    let mut joined = Vec::new();
    for i in 0..10 {
        let stream = connect_from("127.0.0.3", server.http).await.unwrap();
        let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
        let (mut ws, _) = tokio_tungstenite::client_async(server.ws_url(), stream)
            .await
            .expect("websocket from 127.0.0.3");
        let name = format!("nat-{i}");
        send_json(
            &mut ws,
            json!({"type": "join", "room": "nat", "name": name, "token": dev_token("nat", &name)}),
        )
        .await;
        recv_type(&mut ws, "joined", Duration::from_secs(5)).await;
        joined.push(ws);
    }
    assert_eq!(joined.len(), 10);
}

/// The binary raises its open files limit at start and says so; at a soft limit of 256,
/// 300 idle connections from several addresses do not stop it answering.
#[tokio::test]
async fn the_server_raises_its_open_files_limit_and_survives_idle_sockets() {
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .expect("getrlimit");
    assert!(
        hard > 1024,
        "this test needs a hard open files limit above 1024 (it is {hard})"
    );
    let server = ServerProcess::start(
        &[
            ("SWITCHYARD_LOG_LEVEL", "info"),
            ("SWITCHYARD_SERVER_HTTP_HEADER_TIMEOUT_MS", "60000"),
        ],
        Some(256),
    )
    .await;
    let mut idle = Vec::new();
    for source in 2..=6 {
        for _ in 0..60 {
            idle.push(
                connect_from(&format!("127.0.0.{source}"), server.http)
                    .await
                    .unwrap(),
            );
        }
    }
    let (status, _, _) = common::http_get(server.http, "/healthz", &[]).await;
    assert_eq!(
        status,
        200,
        "healthz answers with {} idle sockets open",
        idle.len()
    );
    let log = server.stop().await;
    assert!(
        log.contains(&format!("open_files={hard}")),
        "the limit was raised to {hard} and logged:\n{log}"
    );
}

/// Log lines driven by network input are rate-limited: 20,000 malformed STUN datagrams
/// (each logged by the UDP mux) make at most a burst and a trickle of lines, and one
/// summary says how many were dropped.
#[tokio::test]
async fn network_driven_log_lines_are_rate_limited() {
    let server =
        ServerProcess::start(&[("SWITCHYARD_LOG_LEVEL", "webrtc_ice=debug,info")], None).await;
    // A STUN header (type, length, magic cookie, transaction id) announcing an attribute
    // that is not there: the mux cannot decode it.
    let mut datagram = vec![0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xa4, 0x42];
    datagram.extend([7u8; 12]);
    datagram.extend([0x00, 0x06, 0x00, 0x40]);
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let started = Instant::now();
    for i in 0..20_000 {
        socket.send_to(&datagram, server.udp).await.unwrap();
        if i % 1000 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let sending = started.elapsed();
    // The summary comes within the 10 s reporting interval.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let log = server.stop().await;
    let lines = log.matches("Failed to decode STUN").count();
    eprintln!("20,000 malformed STUN datagrams in {sending:?}: {lines} log lines");
    assert!(lines > 0, "the mux logs an undecodable datagram (at debug)");
    // A burst of 100, then 20 a second over the whole run at most.
    let allowed = 100 + 20 * (started.elapsed().as_secs() as usize + 1);
    assert!(lines <= allowed, "{lines} lines (at most {allowed})");
    assert!(
        log.contains("log lines over the rate limit were dropped"),
        "a summary of what was dropped:\n{}",
        &log[log.len().saturating_sub(3000)..]
    );
}
