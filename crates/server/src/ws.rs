//! The `/rtc` WebSocket: one task per connection runs the signaling [`Session`] rules and
//! hands what they accept to the router.

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::Extension;
use std::sync::Arc;
use std::time::Duration;

use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;

use switchyard_router::{ParticipantSession, RoomId, SignalTx};
use switchyard_signal::{ClientMessage, ErrorCode, Inbound, ServerMessage, Session};

use crate::auth::authorize_join;
use crate::http::ConnectionSlot;
use crate::AppState;
use switchyard_signal::token::unix_now;

/// Close code for a message over the size limit (RFC 6455 "message too big").
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Close code when the server shuts down (RFC 6455 "going away").
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code for a client that breaks the rules on how much it may send or how long it
/// may wait to join (RFC 6455 "policy violation"); the reason says which.
pub const CLOSE_POLICY: u16 = 1008;

/// Read and write buffer of one signaling WebSocket.
const SOCKET_BUFFER: usize = 4096;

/// Server messages queued for one client before it counts as not reading.
const SIGNAL_QUEUE: usize = 1024;

pub async fn upgrade(
    ws: WebSocketUpgrade,
    State(app): State<AppState>,
    slot: Option<Extension<Arc<ConnectionSlot>>>,
) -> Response {
    let limit = app.config.signal.max_message_bytes;
    // Let frames through up to one byte over the limit so the session itself sees the
    // oversize message and closes with 1009; the transport refuses anything larger.
    ws.max_message_size(limit + 1)
        .max_frame_size(limit + 1)
        // tungstenite reserves 128 KiB each for reading and writing per connection: more
        // than the rest of a participant costs. Signaling messages are small; a larger one
        // just takes more reads.
        .read_buffer_size(SOCKET_BUFFER)
        .write_buffer_size(SOCKET_BUFFER)
        .on_upgrade(move |socket| run_session(socket, app, slot.map(|Extension(s)| s)))
}

/// `slot`: the connection's place in its IP's count of unauthenticated connections, freed
/// once a join succeeds.
async fn run_session(socket: WebSocket, app: AppState, slot: Option<Arc<ConnectionSlot>>) {
    let (mut sink, mut stream) = socket.split();
    let mut session = Session::new(app.config.session_limits());
    let (signal_tx, mut signal_rx) = mpsc::channel::<ServerMessage>(SIGNAL_QUEUE);
    // Held until a join succeeds; then only the router holds senders, so the channel
    // closing means the router let this participant go.
    let mut own_signal_tx: Option<SignalTx> = Some(signal_tx);
    let mut participant: Option<ParticipantSession> = None;
    let mut shutdown = app.shutdown.clone();
    // A connection that has not joined by then is closed: it holds a socket and a task
    // without anyone knowing who it is.
    let join_deadline =
        tokio::time::Instant::now() + Duration::from_millis(app.config.signal.join_timeout_ms);

    let close: Option<(u16, &'static str)> = loop {
        let reply = tokio::select! {
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    match session.handle_text(text.as_str(), std::time::Instant::now()) {
                        Inbound::TooLarge => break Some((CLOSE_TOO_BIG, "message too big")),
                        Inbound::Flooding => break Some((CLOSE_POLICY, "too many messages")),
                        Inbound::Reply(message) => Some(message),
                        Inbound::Reject(e) => Some(e.to_message()),
                        Inbound::Message(ClientMessage::Join { room, name, token }) => {
                            let Some(tx) = own_signal_tx.clone() else { continue };
                            let mut joiner = match authorize_join(
                                &app.keys,
                                token.as_deref(),
                                &room,
                                &name,
                                &session.limits(),
                                unix_now(),
                            ) {
                                Ok(joiner) => joiner,
                                Err(refused) => {
                                    tracing::info!(%room, reason = %refused.message, "join refused");
                                    let reply = ServerMessage::error(refused.code, refused.message);
                                    if sink.send(Message::Text(reply.to_json().into())).await.is_err() {
                                        break None;
                                    }
                                    continue;
                                }
                            };
                            joiner.local = slot.as_ref().is_some_and(|s| s.ip().is_loopback());
                            match app.router.join(RoomId::new(room), joiner, tx).await {
                                Ok(p) => {
                                    session.joined();
                                    if let Some(slot) = &slot {
                                        slot.authenticated();
                                    }
                                    participant = Some(p);
                                    own_signal_tx = None;
                                    None
                                }
                                Err(e) => {
                                    tracing::info!(error = %e, "join refused");
                                    Some(ServerMessage::error(e.code(), e.client_message()))
                                }
                            }
                        }
                        Inbound::Message(ClientMessage::Leave {}) => {
                            if let Some(p) = participant.take() {
                                // Leave never queues: it cannot fail.
                                let _ = p.handle(ClientMessage::Leave {});
                            }
                            break Some((1000, "left"));
                        }
                        Inbound::Message(message) => {
                            if let Some(p) = &participant {
                                if p.handle(message).is_err() {
                                    break Some((CLOSE_POLICY, "too many messages waiting"));
                                }
                            }
                            None
                        }
                    }
                }
                Some(Ok(Message::Binary(bytes))) => {
                    match session.handle_binary(bytes.len(), std::time::Instant::now()) {
                        Inbound::TooLarge => break Some((CLOSE_TOO_BIG, "message too big")),
                        Inbound::Flooding => break Some((CLOSE_POLICY, "too many messages")),
                        Inbound::Reject(e) => Some(e.to_message()),
                        _ => None,
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => None,
                Some(Ok(Message::Close(_))) | None => break None,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "websocket read failed");
                    break too_big(&e).then_some((CLOSE_TOO_BIG, "message too big"));
                }
            },
            outgoing = signal_rx.recv(), if participant.is_some() => match outgoing {
                Some(message) => {
                    // The router's last word before it lets this participant go.
                    if ends_session(&message) {
                        let _ = sink.send(Message::Text(message.to_json().into())).await;
                        break Some((1000, "disconnected by the server"));
                    }
                    Some(message)
                }
                None => break Some((1011, "removed from the room")),
            },
            _ = shutdown.changed() => break Some((CLOSE_GOING_AWAY, "server shutting down")),
            _ = tokio::time::sleep_until(join_deadline), if participant.is_none() => {
                break Some((CLOSE_POLICY, "no join in time"));
            }
        };
        if let Some(message) = reply {
            if sink
                .send(Message::Text(message.to_json().into()))
                .await
                .is_err()
            {
                break None;
            }
        }
    };
    if let Some((code, reason)) = close {
        if code == CLOSE_TOO_BIG || code == CLOSE_POLICY {
            let who = participant.as_ref().map(|p| p.id().to_string());
            tracing::info!(participant = ?who, code, reason, "closing a signaling connection");
        }
    }
    drop(participant);
    if let Some((code, reason)) = close {
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code,
                reason: Utf8Bytes::from_static(reason),
            })))
            .await;
    }
}

/// Messages after which the router drops the participant: the socket closes normally.
fn ends_session(message: &ServerMessage) -> bool {
    matches!(
        message,
        ServerMessage::Disconnected { .. }
            | ServerMessage::Error {
                code: ErrorCode::DuplicateIdentity,
                ..
            }
    )
}

/// Whether a read error is the transport refusing a message over the size limit.
fn too_big(e: &axum::Error) -> bool {
    let text = e.to_string();
    text.contains("too long") || text.contains("too big") || text.contains("Space limit")
}
