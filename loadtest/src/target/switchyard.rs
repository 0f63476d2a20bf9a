//! Switchyard as a load-test target: its JSON signaling over one WebSocket per
//! participant (docs/protocol.md), joining with an access token minted here.
//!
//! Candidates travel in the SDP both ways. Candidates the server trickles later (only
//! for addresses it finds after answering; none on a host with fixed addresses) are
//! ignored.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::{bail, Context};
use async_trait::async_trait;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use switchyard_signal::token::{mint, unix_now, Claims, Grant};
use switchyard_signal::{ClientMessage, Quality, ServerMessage, TrackInfo, TrackKind};

use super::{Session, Target};

/// How long the server has to answer `join` and `publish_offer`.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);
/// docs/protocol.md: a ping every 10 to 30 s keeps proxies from closing an idle socket.
const PING_INTERVAL: Duration = Duration::from_secs(15);
/// Join tokens outlive any run.
const TOKEN_TTL_SECS: u64 = 24 * 3600;

/// A Switchyard server reached at its `/rtc` WebSocket URL.
pub struct SwitchyardTarget {
    url: String,
    api_key: String,
    api_secret: String,
    /// The layer every receiver asks for; `None`: the server's default.
    quality: Option<Quality>,
}

impl SwitchyardTarget {
    /// `api_key`/`api_secret` sign the join tokens (development mode's `devkey`/`secret`
    /// on a server run with its defaults).
    pub fn new(
        url: impl Into<String>,
        api_key: impl Into<String>,
        api_secret: impl Into<String>,
    ) -> Self {
        SwitchyardTarget {
            url: url.into(),
            api_key: api_key.into(),
            api_secret: api_secret.into(),
            quality: None,
        }
    }

    /// Every receiver asks for `quality` of each video track (`update_subscription`), as
    /// soon as it learns of the track.
    pub fn with_quality(mut self, quality: Quality) -> Self {
        self.quality = Some(quality);
        self
    }

    fn token(&self, room: &str, identity: &str) -> String {
        let claims = Claims::new(&self.api_key, identity, unix_now(), TOKEN_TTL_SECS)
            .with_grant(Grant::join(room));
        mint(&claims, &self.api_secret)
    }
}

#[async_trait]
impl Target for SwitchyardTarget {
    async fn prepare_room(&self, _room: &str, _publishers: usize) -> anyhow::Result<()> {
        // A room opens with its first join.
        Ok(())
    }

    async fn connect(&self, room: &str, identity: &str) -> anyhow::Result<Box<dyn Session>> {
        // No Nagle: signaling is small request/response messages.
        let (ws, _) = tokio_tungstenite::connect_async_with_config(&self.url, None, true)
            .await
            .with_context(|| format!("WebSocket connect to {}", self.url))?;
        let (mut sink, mut stream) = ws.split();
        let join = ClientMessage::Join {
            room: room.to_owned(),
            name: identity.to_owned(),
            token: Some(self.token(room, identity)),
        };
        sink.send(text(&join)).await.context("sending join")?;
        let (own_id, present) = tokio::time::timeout(ANSWER_TIMEOUT, async {
            loop {
                match stream.next().await {
                    Some(Ok(Message::Text(t))) => match serde_json::from_str(&t) {
                        Ok(ServerMessage::Joined {
                            participant,
                            participants,
                            ..
                        }) => {
                            let tracks: Vec<_> =
                                participants.into_iter().flat_map(|p| p.tracks).collect();
                            return Ok((participant.id, tracks));
                        }
                        Ok(ServerMessage::Error { code, message }) => {
                            bail!("join refused: {code}: {message}")
                        }
                        _ => {}
                    },
                    Some(Ok(Message::Close(frame))) => {
                        bail!("closed before joined: {}", closed(frame))
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => bail!("WebSocket error before joined: {e}"),
                    None => bail!("WebSocket ended before joined"),
                }
            }
        })
        .await
        .context("no `joined` in time")??;

        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Message>();
        let quality = self.quality;
        // The wish for a track is kept by the server even before the subscriber's answer.
        let ask = move |out: &mpsc::UnboundedSender<Message>, track: &TrackInfo| {
            if let (Some(quality), TrackKind::Video) = (quality, track.kind) {
                let _ = out.send(text(&ClientMessage::UpdateSubscription {
                    track_id: track.id.clone(),
                    quality: Some(quality),
                    width: None,
                    height: None,
                }));
            }
        };
        for track in &present {
            ask(&out_tx, track);
        }
        let asks = out_tx.clone();
        let writer = tokio::spawn(async move {
            let mut ping = tokio::time::interval(PING_INTERVAL);
            ping.tick().await;
            loop {
                let message = tokio::select! {
                    m = out_rx.recv() => match m {
                        Some(m) => m,
                        None => break,
                    },
                    _ = ping.tick() => text(&ClientMessage::Ping {}),
                };
                if sink.send(message).await.is_err() {
                    return;
                }
            }
            let _ = sink.close().await;
        });
        let (event_tx, events) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            let ended = loop {
                match stream.next().await {
                    Some(Ok(Message::Text(t))) => {
                        // Types this client does not know are ignored, as the protocol asks.
                        let event = match serde_json::from_str(&t) {
                            Ok(ServerMessage::PublishAnswer { sdp }) => Event::PublishAnswer(sdp),
                            Ok(ServerMessage::SubscribeOffer { sdp }) => Event::SubscribeOffer(sdp),
                            // Its own tracks are announced to a publisher too: not for it.
                            Ok(ServerMessage::TrackPublished {
                                participant_id,
                                track,
                            }) => {
                                if participant_id != own_id {
                                    ask(&asks, &track);
                                }
                                continue;
                            }
                            Ok(ServerMessage::Error { code, message }) => {
                                Event::Error(format!("{code}: {message}"))
                            }
                            Ok(ServerMessage::Disconnected { reason }) => {
                                break format!("disconnected by the server: {reason:?}")
                            }
                            _ => continue,
                        };
                        if event_tx.send(event).is_err() {
                            return;
                        }
                    }
                    Some(Ok(Message::Close(frame))) => break format!("closed: {}", closed(frame)),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break format!("WebSocket error: {e}"),
                    None => break "WebSocket ended".to_owned(),
                }
            };
            let _ = event_tx.send(Event::Ended(ended));
        });
        Ok(Box::new(SwitchyardSession {
            out: out_tx,
            events,
            offers: VecDeque::new(),
            ended: None,
            writer,
            reader,
        }))
    }
}

enum Event {
    PublishAnswer(String),
    SubscribeOffer(String),
    Error(String),
    Ended(String),
}

struct SwitchyardSession {
    out: mpsc::UnboundedSender<Message>,
    events: mpsc::UnboundedReceiver<Event>,
    /// Subscribe offers that arrived while a publish waited for its answer.
    offers: VecDeque<String>,
    ended: Option<String>,
    writer: JoinHandle<()>,
    reader: JoinHandle<()>,
}

impl SwitchyardSession {
    fn send(&self, message: &ClientMessage) -> anyhow::Result<()> {
        self.out
            .send(text(message))
            .map_err(|_| anyhow::anyhow!("signaling connection closed"))
    }

    async fn next_event(&mut self) -> Option<Event> {
        if self.ended.is_some() {
            return None;
        }
        let event = self.events.recv().await;
        if let Some(Event::Ended(reason)) = &event {
            self.ended = Some(reason.clone());
        }
        event
    }
}

#[async_trait]
impl Session for SwitchyardSession {
    async fn publish(&mut self, offer_sdp: String) -> anyhow::Result<String> {
        self.send(&ClientMessage::PublishOffer {
            sdp: offer_sdp,
            tracks: Vec::new(),
        })?;
        let answer = tokio::time::timeout(ANSWER_TIMEOUT, async {
            loop {
                match self.next_event().await {
                    Some(Event::PublishAnswer(sdp)) => return Ok(sdp),
                    Some(Event::SubscribeOffer(sdp)) => self.offers.push_back(sdp),
                    Some(Event::Error(e)) => bail!("publish_offer refused: {e}"),
                    Some(Event::Ended(reason)) => {
                        bail!("signaling ended before publish_answer: {reason}")
                    }
                    None => bail!("signaling ended before publish_answer"),
                }
            }
        })
        .await
        .context("no `publish_answer` in time")??;
        Ok(answer)
    }

    async fn next_subscriber_offer(&mut self) -> anyhow::Result<Option<String>> {
        if let Some(offer) = self.offers.pop_front() {
            return Ok(Some(offer));
        }
        // Cancel-safe: the only await is a channel receive, and state changes only after it.
        loop {
            match self.next_event().await {
                Some(Event::SubscribeOffer(sdp)) => return Ok(Some(sdp)),
                Some(Event::Error(e)) => bail!("server error: {e}"),
                Some(Event::PublishAnswer(_)) => {}
                Some(Event::Ended(reason)) => bail!("signaling ended: {reason}"),
                None => return Ok(None),
            }
        }
    }

    async fn answer_subscriber(&mut self, answer_sdp: String) -> anyhow::Result<()> {
        self.send(&ClientMessage::SubscribeAnswer { sdp: answer_sdp })
    }

    async fn leave(&mut self) -> anyhow::Result<()> {
        if self.ended.is_some() {
            return Ok(());
        }
        self.send(&ClientMessage::Leave {})?;
        // The server closes the socket after `leave`; wait for that (briefly) so the
        // participant is gone from the room when this returns.
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while self.next_event().await.is_some() {}
        })
        .await;
        Ok(())
    }
}

impl Drop for SwitchyardSession {
    fn drop(&mut self) {
        self.writer.abort();
        self.reader.abort();
    }
}

fn text(message: &ClientMessage) -> Message {
    Message::Text(
        serde_json::to_string(message)
            .expect("client messages always serialize")
            .into(),
    )
}

fn closed(frame: Option<CloseFrame>) -> String {
    match frame {
        Some(f) => format!("code {} {:?}", u16::from(f.code), f.reason.as_str()),
        None => "no close frame".to_owned(),
    }
}
