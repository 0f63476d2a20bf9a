//! Janus (1.x, VideoRoom plugin) as a load-test [`Target`], over Janus's WebSocket API.
//!
//! Each simulated participant gets what a janus.js VideoRoom client has: its own WebSocket
//! (subprotocol `janus-protocol`) and Janus session, kept alive every 20 s; one publisher
//! handle that joins the room; and, once there is something to receive, one subscriber
//! handle with a single multistream subscription (Janus 1.x) to every other publisher.
//!
//! How a participant learns about publishers: every participant joins as `ptype:
//! publisher` whether or not it will publish (Janus counts only publishers with media
//! against the room's `publishers` limit), so Janus tells it about publishers itself: the
//! `joined` answer lists the active ones and a `publishers` event announces each new one.
//! Janus sends both only after that publisher's PeerConnection is up (`webrtcup`), which is
//! exactly when subscribing to it can succeed (before, Janus answers 428 "No such feed").
//! `unpublished` / `leaving` events retire feeds. No polling.
//!
//! Subscriptions: the first time other publishers are known, `join ptype: subscriber` with
//! `streams: [{feed}...]`; later ones `subscribe` on the same handle. Janus answers each with
//! an offer (or, if an offer of its own is still unanswered, `updating`, and the offer comes
//! later as an event); when a subscribed publisher leaves Janus sends a new offer itself.
//! [`Session::next_subscriber_offer`] returns all of these in order.
//!
//! Simulcast: the publisher's offer goes to Janus as is; its `a=rid` order is read to tell
//! Janus which rid is the low layer (`rid_order`, Janus assumes high first otherwise).
//! Subscribers receive one layer, Janus's highest unless [`JanusTarget::with_substream`]
//! asks for another: every subscribed stream then carries that `substream`.
//!
//! This module owns only signaling: no WebRTC, no media.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use async_trait::async_trait;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

use super::{Session, Target};

const PLUGIN: &str = "janus.plugin.videoroom";

/// Janus error codes the target acts on (janus_videoroom.c).
const ERR_NO_SUCH_FEED: i64 = 428;
const ERR_ROOM_EXISTS: i64 = 427;

/// A simulcast layer a subscriber asks Janus for (Janus's `substream`: 0, 1, 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Substream {
    Low = 0,
    Medium = 1,
    High = 2,
}

/// Settings of a [`JanusTarget`].
#[derive(Debug, Clone)]
pub struct JanusOptions {
    /// The layer every subscription asks for; `None`: Janus's default, the highest.
    pub substream: Option<Substream>,
    /// The room's bitrate cap (bit/s), which Janus sends publishers as REMB: set well above
    /// what any simulated publisher sends, so the cap never shapes a measurement.
    pub room_bitrate: u64,
    /// How long one request may wait for its answer (Janus under load can be slow).
    pub request_timeout: Duration,
    /// Janus drops a session after 60 s without traffic; 20 s leaves margin.
    pub keepalive: Duration,
}

impl Default for JanusOptions {
    fn default() -> Self {
        JanusOptions {
            substream: None,
            room_bitrate: 20_000_000,
            request_timeout: Duration::from_secs(30),
            keepalive: Duration::from_secs(20),
        }
    }
}

/// Janus's VideoRoom at `url` (e.g. `ws://127.0.0.1:8188`).
#[derive(Debug, Clone)]
pub struct JanusTarget {
    url: String,
    options: JanusOptions,
}

impl JanusTarget {
    pub fn new(url: impl Into<String>) -> JanusTarget {
        JanusTarget {
            url: url.into(),
            options: JanusOptions::default(),
        }
    }

    pub fn with_options(url: impl Into<String>, options: JanusOptions) -> JanusTarget {
        JanusTarget {
            url: url.into(),
            options,
        }
    }

    /// Subscribers ask for `substream` of every simulcast publisher (the benchmark's
    /// meetings put subscribers on [`Substream::Medium`]).
    pub fn with_substream(mut self, substream: Substream) -> JanusTarget {
        self.options.substream = Some(substream);
        self
    }

    pub fn options(&self) -> &JanusOptions {
        &self.options
    }
}

/// The numeric VideoRoom id for a room name: FNV-1a, so every run and every process maps a
/// name to the same room; 52 bits so it is also exact as a JavaScript number (janus.js).
pub fn room_id(room: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in room.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash & ((1 << 52) - 1)).max(1)
}

#[async_trait]
impl Target for JanusTarget {
    async fn prepare_room(&self, room: &str, publishers: usize) -> anyhow::Result<()> {
        let id = room_id(room);
        let (conn, _events) = Conn::open(&self.url, self.options.request_timeout).await?;
        let session = conn.create_session().await?;
        let handle = conn.attach(session).await?;
        let create = json!({
            "request": "create",
            "room": id,
            "description": room,
            "publishers": publishers.max(1),
            "bitrate": self.options.room_bitrate,
            "audiocodec": "opus",
            "videocodec": "vp8",
            "notify_joining": false,
        });
        let created = match conn.message(session, handle, create.clone(), None).await {
            Err(e) if janus_code(&e) == Some(ERR_ROOM_EXISTS) => {
                // Left over from an earlier run against the same Janus: make it again, so
                // its settings are this run's.
                conn.message(
                    session,
                    handle,
                    json!({"request": "destroy", "room": id}),
                    None,
                )
                .await
                .with_context(|| format!("destroying the stale Janus room {id} ({room})"))?;
                conn.message(session, handle, create, None).await
            }
            other => other,
        }
        .with_context(|| format!("creating the Janus room {id} ({room})"))?;
        if created.data["videoroom"] != "created" {
            bail!("Janus did not create room {id}: {}", created.data);
        }
        conn.destroy_session(session).await?;
        conn.close();
        Ok(())
    }

    async fn connect(&self, room: &str, identity: &str) -> anyhow::Result<Box<dyn Session>> {
        let room = room_id(room);
        let (conn, events) = Conn::open(&self.url, self.options.request_timeout).await?;
        let joining = async {
            let session = conn.create_session().await?;
            let publisher = conn.attach(session).await?;
            let joined = conn
                .message(
                    session,
                    publisher,
                    json!({"request": "join", "ptype": "publisher", "room": room, "display": identity}),
                    None,
                )
                .await
                .with_context(|| format!("{identity} joining Janus room {room}"))?;
            if joined.data["videoroom"] != "joined" {
                bail!("{identity}: unexpected answer to join: {}", joined.data);
            }
            let feed = joined.data["id"]
                .as_u64()
                .ok_or_else(|| anyhow!("{identity}: no feed id in {}", joined.data))?;
            Ok((session, publisher, feed, joined))
        };
        let (session, publisher, feed, joined) = match joining.await {
            Ok(joined) => joined,
            Err(e) => {
                // Closing the WebSocket makes Janus drop the half-made session.
                conn.close();
                return Err(e);
            }
        };
        let keepalive = {
            let conn = Arc::clone(&conn);
            let every = self.options.keepalive;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    // Its answer is an `ack` nobody waits for: the reader drops it.
                    if conn
                        .send(json!({"janus": "keepalive", "session_id": session}))
                        .is_err()
                    {
                        return;
                    }
                }
            })
        };
        let mut janus_session = JanusSession {
            identity: identity.to_owned(),
            conn,
            events,
            session,
            room,
            publisher,
            feed,
            private_id: joined.data["private_id"].as_u64(),
            subscriber: None,
            known: BTreeSet::new(),
            subscribed: BTreeSet::new(),
            substream: self.options.substream,
            published: false,
            ended: false,
            keepalive: Some(keepalive),
        };
        janus_session.note_publishers(&joined.data["publishers"]);
        Ok(Box::new(janus_session))
    }
}

/// One participant: a Janus session with its publisher handle and, once needed, a
/// subscriber handle.
pub struct JanusSession {
    identity: String,
    conn: Arc<Conn>,
    events: mpsc::UnboundedReceiver<Value>,
    session: u64,
    room: u64,
    publisher: u64,
    /// This participant's own feed id, never subscribed to.
    feed: u64,
    private_id: Option<u64>,
    subscriber: Option<u64>,
    /// Other publishers whose media is up.
    known: BTreeSet<u64>,
    /// Feeds in this participant's subscription.
    subscribed: BTreeSet<u64>,
    substream: Option<Substream>,
    /// Whether `publish` succeeded: `leave` then unpublishes first.
    published: bool,
    ended: bool,
    keepalive: Option<JoinHandle<()>>,
}

impl JanusSession {
    /// This participant's feed id in the room.
    pub fn feed(&self) -> u64 {
        self.feed
    }

    fn note_publishers(&mut self, list: &Value) {
        for publisher in list.as_array().into_iter().flatten() {
            if let Some(id) = publisher["id"].as_u64() {
                if id != self.feed && !publisher["dummy"].as_bool().unwrap_or(false) {
                    self.known.insert(id);
                }
            }
        }
    }

    fn forget(&mut self, feed: &Value) {
        // Janus sends `"unpublished": "ok"` / `"leaving": "ok"` about oneself: not a feed.
        if let Some(id) = feed.as_u64() {
            self.known.remove(&id);
            self.subscribed.remove(&id);
        }
    }

    /// Takes in one event Janus sent without being asked; returns the offer it carries for
    /// the subscriber connection, if any.
    fn handle_event(&mut self, event: Value) -> Option<String> {
        let sender = event["sender"].as_u64();
        match event["janus"].as_str() {
            Some("event") => {
                let data = &event["plugindata"]["data"];
                if sender.is_some() && sender == self.subscriber {
                    if event["jsep"]["type"] == "offer" {
                        return event["jsep"]["sdp"].as_str().map(str::to_owned);
                    }
                } else if sender == Some(self.publisher) {
                    self.note_publishers(&data["publishers"]);
                    self.forget(&data["unpublished"]);
                    self.forget(&data["leaving"]);
                    self.forget(&data["kicked"]);
                }
                if let Some(code) = data["error_code"].as_i64() {
                    tracing::warn!(identity = %self.identity, code, error = %data["error"], "Janus plugin error event");
                }
            }
            Some("timeout") => {
                tracing::warn!(identity = %self.identity, "Janus timed the session out");
                self.ended = true;
            }
            Some("hangup") => {
                tracing::debug!(identity = %self.identity, reason = %event["reason"], handle = ?sender, "Janus hung up a PeerConnection");
            }
            _ => {}
        }
        None
    }

    /// Subscribes to `feeds`; returns Janus's offer, or `None` when Janus postponed it
    /// (`updating`: it comes later as an event) or nothing changed.
    async fn subscribe(&mut self, feeds: &[u64]) -> anyhow::Result<Option<String>> {
        let streams: Vec<Value> = feeds
            .iter()
            .map(|feed| match self.substream {
                Some(layer) => json!({"feed": feed, "substream": layer as u8}),
                None => json!({"feed": feed}),
            })
            .collect();
        let reply = match self.subscriber {
            None => {
                let handle = self.conn.attach(self.session).await?;
                let mut join = json!({
                    "request": "join",
                    "ptype": "subscriber",
                    "room": self.room,
                    "streams": streams,
                });
                if let Some(private_id) = self.private_id {
                    // Ties the subscription to this participant, as janus.js does.
                    join["private_id"] = json!(private_id);
                }
                let reply = self.conn.message(self.session, handle, join, None).await;
                if reply.is_err() {
                    // Nothing was subscribed: the next attempt attaches a fresh handle.
                    let _ = self.conn.detach(self.session, handle).await;
                } else {
                    self.subscriber = Some(handle);
                }
                reply?
            }
            Some(handle) => {
                self.conn
                    .message(
                        self.session,
                        handle,
                        json!({"request": "subscribe", "streams": streams}),
                        None,
                    )
                    .await?
            }
        };
        self.subscribed.extend(feeds.iter().copied());
        match reply.jsep {
            Some(jsep) if jsep["type"] == "offer" => Ok(Some(
                jsep["sdp"]
                    .as_str()
                    .ok_or_else(|| anyhow!("Janus offer without sdp: {jsep}"))?
                    .to_owned(),
            )),
            _ => Ok(None),
        }
    }

    fn drain_events(&mut self) -> Option<String> {
        while let Ok(event) = self.events.try_recv() {
            if let Some(offer) = self.handle_event(event) {
                return Some(offer);
            }
        }
        None
    }
}

#[async_trait]
impl Session for JanusSession {
    async fn publish(&mut self, offer_sdp: String) -> anyhow::Result<String> {
        let mut jsep = json!({"type": "offer", "sdp": offer_sdp, "trickle": false});
        if let Some(order) = rid_order(&offer_sdp) {
            jsep["rid_order"] = json!(order);
        }
        let reply = self
            .conn
            .message(
                self.session,
                self.publisher,
                json!({"request": "configure", "audio": true, "video": true}),
                Some(jsep),
            )
            .await
            .with_context(|| format!("{}: publishing to Janus", self.identity))?;
        if reply.data["configured"] != "ok" {
            bail!(
                "{}: Janus did not configure the publisher: {}",
                self.identity,
                reply.data
            );
        }
        let answer = reply
            .jsep
            .filter(|jsep| jsep["type"] == "answer")
            .and_then(|jsep| jsep["sdp"].as_str().map(str::to_owned))
            .ok_or_else(|| anyhow!("{}: no answer from Janus", self.identity))?;
        self.published = true;
        Ok(answer)
    }

    async fn next_subscriber_offer(&mut self) -> anyhow::Result<Option<String>> {
        // A feed Janus no longer knows makes the whole request fail with 428; each retry
        // drops the feed it names, so this ends.
        let mut retries = 0;
        loop {
            if let Some(offer) = self.drain_events() {
                return Ok(Some(offer));
            }
            if self.ended {
                return Ok(None);
            }
            let new: Vec<u64> = self.known.difference(&self.subscribed).copied().collect();
            if !new.is_empty() {
                match self.subscribe(&new).await {
                    Ok(Some(offer)) => return Ok(Some(offer)),
                    Ok(None) => {}
                    Err(e) if janus_code(&e) == Some(ERR_NO_SUCH_FEED) && retries < 16 => {
                        retries += 1;
                        let gone = e
                            .downcast_ref::<JanusError>()
                            .and_then(|je| feed_in_reason(&je.reason));
                        tracing::debug!(identity = %self.identity, ?gone, "a feed left before the subscription");
                        match gone {
                            Some(feed) => {
                                self.known.remove(&feed);
                            }
                            // Unnamed: wait for the `unpublished` event that explains it.
                            None => tokio::time::sleep(Duration::from_millis(100)).await,
                        }
                        continue;
                    }
                    Err(e) => {
                        return Err(
                            e.context(format!("{}: subscribing to feeds {new:?}", self.identity))
                        )
                    }
                }
            }
            match self.events.recv().await {
                Some(event) => {
                    if let Some(offer) = self.handle_event(event) {
                        return Ok(Some(offer));
                    }
                }
                None => {
                    self.ended = true;
                    return Ok(None);
                }
            }
        }
    }

    async fn answer_subscriber(&mut self, answer_sdp: String) -> anyhow::Result<()> {
        let handle = self
            .subscriber
            .ok_or_else(|| anyhow!("{}: no subscriber offer to answer", self.identity))?;
        let reply = self
            .conn
            .message(
                self.session,
                handle,
                json!({"request": "start"}),
                Some(json!({"type": "answer", "sdp": answer_sdp, "trickle": false})),
            )
            .await
            .with_context(|| format!("{}: answering Janus's subscriber offer", self.identity))?;
        if reply.data["started"] != "ok" {
            bail!(
                "{}: Janus did not start the subscription: {}",
                self.identity,
                reply.data
            );
        }
        Ok(())
    }

    async fn leave(&mut self) -> anyhow::Result<()> {
        if self.ended {
            return Ok(());
        }
        self.ended = true;
        // A publisher unpublishes first: Janus handles `unpublish` synchronously, telling
        // the others (`unpublished`) and renegotiating their subscriptions. Destroying the
        // session alone would not: Janus skips that work for a handle whose session is
        // already being destroyed, and subscribers would keep dead streams.
        let unpublished = if self.published {
            self.conn
                .message(
                    self.session,
                    self.publisher,
                    json!({"request": "unpublish"}),
                    None,
                )
                .await
                .map(drop)
        } else {
            Ok(())
        };
        // Then `leave` (the others hear `leaving`); destroying the session frees every handle.
        let left = self
            .conn
            .message(
                self.session,
                self.publisher,
                json!({"request": "leave"}),
                None,
            )
            .await;
        let destroyed = self.conn.destroy_session(self.session).await;
        if let Some(task) = self.keepalive.take() {
            task.abort();
        }
        self.conn.close();
        unpublished.with_context(|| format!("{}: unpublishing from Janus", self.identity))?;
        left.with_context(|| format!("{}: leaving the Janus room", self.identity))?;
        destroyed.with_context(|| format!("{}: destroying the Janus session", self.identity))
    }
}

impl Drop for JanusSession {
    fn drop(&mut self) {
        // Closing the WebSocket is enough for Janus to destroy the session.
        if let Some(task) = self.keepalive.take() {
            task.abort();
        }
        self.conn.close();
    }
}

/// Janus's `rid_order` for an offer: "lmh" when the first video section lists its rids from
/// the lowest layer up (Chrome's q/h/f, or l/m/h), "hml" when from the highest down, `None`
/// when there are no rids or the names tell nothing (Janus then assumes "hml").
pub fn rid_order(sdp: &str) -> Option<&'static str> {
    let mut in_video = false;
    let mut seen_video = false;
    let mut rids: Vec<&str> = Vec::new();
    for line in sdp.lines() {
        let line = line.trim_end();
        if let Some(media) = line.strip_prefix("m=") {
            if seen_video {
                break;
            }
            in_video = media.starts_with("video");
            seen_video |= in_video;
        } else if in_video {
            if let Some(rest) = line.strip_prefix("a=rid:") {
                let mut parts = rest.split_whitespace();
                if let (Some(rid), Some("send")) = (parts.next(), parts.next()) {
                    rids.push(rid);
                }
            }
        }
    }
    if rids.len() < 2 {
        return None;
    }
    let lower: Vec<String> = rids.iter().map(|r| r.to_ascii_lowercase()).collect();
    let has = |names: &[&str]| lower.iter().any(|r| names.contains(&r.as_str()));
    // "h" is "half" among q/h/f but "high" among l/m/h: the other names decide.
    let rank = |rid: &str| -> Option<u8> {
        if has(&["q", "f"]) {
            ["q", "h", "f"].iter().position(|n| *n == rid)
        } else if has(&["l", "m"]) {
            ["l", "m", "h"].iter().position(|n| *n == rid)
        } else {
            ["0", "1", "2"].iter().position(|n| *n == rid)
        }
        .map(|p| p as u8)
    };
    let ranks: Option<Vec<u8>> = lower.iter().map(|r| rank(r)).collect();
    let ranks = ranks?;
    if ranks.windows(2).all(|w| w[0] < w[1]) {
        Some("lmh")
    } else if ranks.windows(2).all(|w| w[0] > w[1]) {
        Some("hml")
    } else {
        None
    }
}

/// The feed id in Janus's "No such feed (ID)".
fn feed_in_reason(reason: &str) -> Option<u64> {
    let start = reason.find('(')? + 1;
    let end = start + reason[start..].find(')')?;
    reason[start..end].trim().parse().ok()
}

/// An error Janus reported, core (`janus: error`) or plugin (`error_code`).
#[derive(Debug, Clone)]
pub struct JanusError {
    pub code: i64,
    pub reason: String,
}

impl fmt::Display for JanusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Janus error {}: {}", self.code, self.reason)
    }
}

impl std::error::Error for JanusError {}

fn janus_code(error: &anyhow::Error) -> Option<i64> {
    error
        .chain()
        .find_map(|e| e.downcast_ref::<JanusError>())
        .map(|e| e.code)
}

/// A plugin's answer: `plugindata.data` and the JSEP it carried.
struct Reply {
    data: Value,
    jsep: Option<Value>,
}

/// One WebSocket to Janus: requests matched to answers by transaction, everything else
/// handed to the session as events.
struct Conn {
    out: mpsc::UnboundedSender<Message>,
    pending: Arc<Mutex<HashMap<String, oneshot::Sender<Value>>>>,
    next: AtomicU64,
    timeout: Duration,
    reader: Mutex<Option<JoinHandle<()>>>,
}

impl Conn {
    async fn open(
        url: &str,
        timeout: Duration,
    ) -> anyhow::Result<(Arc<Conn>, mpsc::UnboundedReceiver<Value>)> {
        let mut request = url
            .into_client_request()
            .with_context(|| format!("bad Janus URL {url}"))?;
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static("janus-protocol"),
        );
        let (ws, _) = tokio::time::timeout(timeout, tokio_tungstenite::connect_async(request))
            .await
            .map_err(|_| anyhow!("connecting to Janus at {url} timed out"))?
            .with_context(|| format!("connecting to Janus at {url}"))?;
        let (mut sink, mut stream) = ws.split();
        let (out, mut out_rx) = mpsc::unbounded_channel::<Message>();
        let (events_tx, events) = mpsc::unbounded_channel();
        let pending: Arc<Mutex<HashMap<String, oneshot::Sender<Value>>>> = Arc::default();

        // The writer ends after sending a Close frame, or when every sender is gone.
        tokio::spawn(async move {
            while let Some(message) = out_rx.recv().await {
                let close = matches!(message, Message::Close(_));
                if sink.send(message).await.is_err() || close {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        let reader = {
            let pending = Arc::clone(&pending);
            tokio::spawn(async move {
                while let Some(Ok(message)) = stream.next().await {
                    let text = match message {
                        Message::Text(text) => text,
                        Message::Close(_) => break,
                        _ => continue,
                    };
                    let Ok(value) = serde_json::from_str::<Value>(text.as_str()) else {
                        tracing::warn!(%text, "Janus sent something that is not JSON");
                        continue;
                    };
                    // An asynchronous request is acknowledged first and answered by an
                    // `event` with the same transaction later (the ack may even come after
                    // the event): only the answer completes it.
                    if value["janus"] == "ack" {
                        continue;
                    }
                    let waiter = value["transaction"].as_str().and_then(|transaction| {
                        pending.lock().expect("pending lock").remove(transaction)
                    });
                    match waiter {
                        Some(waiter) => {
                            let _ = waiter.send(value);
                        }
                        None => {
                            if events_tx.send(value).is_err() {
                                break;
                            }
                        }
                    }
                }
                // Requests still waiting fail now instead of at their timeout.
                pending.lock().expect("pending lock").clear();
            })
        };
        let conn = Arc::new(Conn {
            out,
            pending,
            next: AtomicU64::new(1),
            timeout,
            reader: Mutex::new(Some(reader)),
        });
        Ok((conn, events))
    }

    fn send(&self, mut message: Value) -> anyhow::Result<()> {
        let transaction = format!("t{}", self.next.fetch_add(1, Ordering::Relaxed));
        message["transaction"] = json!(transaction);
        self.out
            .send(Message::text(message.to_string()))
            .map_err(|_| anyhow!("the Janus connection is closed"))
    }

    /// Sends `message` and waits for its answer (`success`, `event` or `error`).
    async fn call(&self, mut message: Value) -> anyhow::Result<Value> {
        let transaction = format!("t{}", self.next.fetch_add(1, Ordering::Relaxed));
        message["transaction"] = json!(transaction);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .expect("pending lock")
            .insert(transaction.clone(), tx);
        let what = message["janus"].as_str().unwrap_or("?").to_owned();
        let request = message["body"]["request"].as_str().map(str::to_owned);
        if self.out.send(Message::text(message.to_string())).is_err() {
            self.pending
                .lock()
                .expect("pending lock")
                .remove(&transaction);
            bail!("the Janus connection is closed");
        }
        let answer = match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => bail!("the Janus connection closed before answering {what} {request:?}"),
            Err(_) => {
                self.pending
                    .lock()
                    .expect("pending lock")
                    .remove(&transaction);
                bail!(
                    "Janus did not answer {what} {request:?} within {:?}",
                    self.timeout
                )
            }
        };
        if answer["janus"] == "error" {
            return Err(JanusError {
                code: answer["error"]["code"].as_i64().unwrap_or(0),
                reason: answer["error"]["reason"].as_str().unwrap_or("").to_owned(),
            }
            .into());
        }
        Ok(answer)
    }

    async fn create_session(&self) -> anyhow::Result<u64> {
        let answer = self.call(json!({"janus": "create"})).await?;
        answer["data"]["id"]
            .as_u64()
            .ok_or_else(|| anyhow!("no session id in {answer}"))
    }

    async fn attach(&self, session: u64) -> anyhow::Result<u64> {
        let answer = self
            .call(json!({"janus": "attach", "session_id": session, "plugin": PLUGIN}))
            .await?;
        answer["data"]["id"]
            .as_u64()
            .ok_or_else(|| anyhow!("no handle id in {answer}"))
    }

    async fn detach(&self, session: u64, handle: u64) -> anyhow::Result<()> {
        self.call(json!({"janus": "detach", "session_id": session, "handle_id": handle}))
            .await
            .map(drop)
    }

    async fn destroy_session(&self, session: u64) -> anyhow::Result<()> {
        self.call(json!({"janus": "destroy", "session_id": session}))
            .await
            .map(drop)
    }

    /// A VideoRoom request on `handle`; fails on the plugin's `error_code` too.
    async fn message(
        &self,
        session: u64,
        handle: u64,
        body: Value,
        jsep: Option<Value>,
    ) -> anyhow::Result<Reply> {
        let mut message = json!({
            "janus": "message",
            "session_id": session,
            "handle_id": handle,
            "body": body,
        });
        if let Some(jsep) = jsep {
            message["jsep"] = jsep;
        }
        let mut answer = self.call(message).await?;
        let data = answer["plugindata"]["data"].take();
        if let Some(code) = data["error_code"].as_i64() {
            return Err(JanusError {
                code,
                reason: data["error"].as_str().unwrap_or("").to_owned(),
            }
            .into());
        }
        let jsep = match answer["jsep"].take() {
            Value::Null => None,
            jsep => Some(jsep),
        };
        Ok(Reply { data, jsep })
    }

    /// Closes the WebSocket: the writer sends a Close frame and ends; the reader stops at
    /// once (Janus's closing reply is of no use), which also ends the session's events.
    fn close(&self) {
        let _ = self.out.send(Message::Close(None));
        if let Some(reader) = self.reader.lock().expect("reader lock").take() {
            reader.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_ids_are_stable_distinct_and_js_safe() {
        // Pinned: a change would send a running benchmark's participants to other rooms.
        assert_eq!(room_id("room-0"), room_id("room-0"));
        assert_ne!(room_id("room-0"), room_id("room-1"));
        for name in ["", "a", "room-0", "a much longer room name than usual"] {
            let id = room_id(name);
            assert!(id > 0 && id < (1 << 52), "{name}: {id}");
        }
        assert_eq!(room_id(""), 0xcbf2_9ce4_8422_2325 & ((1 << 52) - 1));
    }

    fn video_with_rids(rids: &[&str]) -> String {
        let mut sdp = String::from(
            "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n",
        );
        for rid in rids {
            sdp.push_str(&format!("a=rid:{rid} send\r\n"));
        }
        sdp.push_str(&format!("a=simulcast:send {}\r\n", rids.join(";")));
        sdp
    }

    #[test]
    fn rid_order_follows_the_layer_names() {
        assert_eq!(rid_order(&video_with_rids(&["q", "h", "f"])), Some("lmh"));
        assert_eq!(rid_order(&video_with_rids(&["f", "h", "q"])), Some("hml"));
        assert_eq!(rid_order(&video_with_rids(&["l", "m", "h"])), Some("lmh"));
        assert_eq!(rid_order(&video_with_rids(&["h", "m", "l"])), Some("hml"));
        assert_eq!(rid_order(&video_with_rids(&["0", "1", "2"])), Some("lmh"));
        assert_eq!(rid_order(&video_with_rids(&["q", "h"])), Some("lmh"));
        // Two layers named h and f: "h" is half, below full.
        assert_eq!(rid_order(&video_with_rids(&["f", "h"])), Some("hml"));
        // No simulcast, or names that say nothing: leave Janus's default.
        assert_eq!(rid_order(&video_with_rids(&[])), None);
        assert_eq!(rid_order(&video_with_rids(&["a", "b", "c"])), None);
        assert_eq!(rid_order(&video_with_rids(&["h", "q", "f"])), None);
    }

    #[test]
    fn rid_lines_of_other_sections_do_not_count() {
        let sdp = "m=video 9 X 96\r\na=mid:0\r\nm=video 9 X 96\r\na=rid:f send\r\na=rid:q send\r\n";
        // Only the first video section is read (the camera; a screen share comes later).
        assert_eq!(rid_order(sdp), None);
        let recv = "m=video 9 X 96\r\na=rid:q recv\r\na=rid:f recv\r\n";
        assert_eq!(rid_order(recv), None);
    }

    #[test]
    fn the_feed_a_428_names_is_found() {
        assert_eq!(feed_in_reason("No such feed (1234567)"), Some(1234567));
        assert_eq!(feed_in_reason("No such feed"), None);
        assert_eq!(feed_in_reason("No such mid '1' in feed (77)"), Some(77));
    }
}
