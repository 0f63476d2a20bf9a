//! Per-connection signaling rules: parsing with clear errors, the message-size limit, and
//! which messages are allowed in which phase (nothing but `join` and `ping` before joining).
//!
//! This module owns no socket: the server hands it every text frame and acts on the
//! [`Inbound`] it returns, so every rule here is testable without a network.

use std::time::Instant;

use crate::limit::TokenBucket;
use crate::protocol::{ClientMessage, ErrorCode, ServerMessage};

/// Limits that protect the server from one misbehaving connection.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// Largest text message accepted; a larger one closes the connection with code 1009.
    pub max_message_bytes: usize,
    /// Longest room name, in bytes.
    pub max_room_name_bytes: usize,
    /// Longest display name, in bytes.
    pub max_display_name_bytes: usize,
    /// Longest identity (a token's `sub`), in bytes.
    pub max_identity_bytes: usize,
    /// Messages per second a connection may send on average, and in one burst; beyond
    /// that the connection is closed with code 1008.
    pub messages_per_second: u32,
    pub message_burst: u32,
    /// `publish_offer`s per minute on average, and in one burst; beyond that each is
    /// refused with `rate_limited`.
    pub publish_offers_per_minute: u32,
    pub publish_offer_burst: u32,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            max_message_bytes: 64 * 1024,
            max_room_name_bytes: 128,
            max_display_name_bytes: 64,
            max_identity_bytes: 128,
            messages_per_second: 50,
            message_burst: 200,
            publish_offers_per_minute: 60,
            publish_offer_burst: 10,
        }
    }
}

/// Entries a `publish_offer`'s `tracks` may have, and the longest track id (browsers use
/// 36-character UUIDs).
pub const MAX_DECLARED_TRACKS: usize = 64;
pub const MAX_TRACK_ID_BYTES: usize = 128;

/// Why a client message was refused. Each maps to a stable [`ErrorCode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignalError {
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    #[error("message must be a JSON object with a string field `type`")]
    MissingType,
    #[error("unknown message type `{0}`")]
    UnknownType(String),
    #[error("invalid `{type_name}` message: {detail}")]
    InvalidField { type_name: String, detail: String },
    #[error("`{0}` is not allowed before `join`")]
    NotJoined(&'static str),
    #[error("this connection already joined a room")]
    AlreadyJoined,
    #[error("binary messages are not supported: send JSON text")]
    Binary,
    #[error("too many `{what}` messages: at most {limit}")]
    RateLimited { what: &'static str, limit: String },
}

impl SignalError {
    pub fn code(&self) -> ErrorCode {
        match self {
            SignalError::MalformedJson(_)
            | SignalError::MissingType
            | SignalError::UnknownType(_)
            | SignalError::InvalidField { .. }
            | SignalError::Binary => ErrorCode::BadRequest,
            SignalError::NotJoined(_) => ErrorCode::NotJoined,
            SignalError::AlreadyJoined => ErrorCode::AlreadyJoined,
            SignalError::RateLimited { .. } => ErrorCode::RateLimited,
        }
    }

    pub fn to_message(&self) -> ServerMessage {
        ServerMessage::error(self.code(), self.to_string())
    }
}

const CLIENT_TYPES: &[&str] = &[
    "join",
    "publish_offer",
    "subscribe_answer",
    "candidate",
    "mute",
    "update_subscription",
    "leave",
    "ping",
];

/// Parses one client message, naming the problem when it is not valid.
pub fn parse_client_message(text: &str) -> Result<ClientMessage, SignalError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| SignalError::MalformedJson(e.to_string()))?;
    let type_name = value
        .get("type")
        .and_then(|t| t.as_str())
        .ok_or(SignalError::MissingType)?
        .to_owned();
    if !CLIENT_TYPES.contains(&type_name.as_str()) {
        return Err(SignalError::UnknownType(type_name));
    }
    serde_json::from_value(value).map_err(|e| SignalError::InvalidField {
        type_name,
        detail: e.to_string(),
    })
}

/// `update_subscription` names a quality, or a tile size, never both nor half a size.
fn one_subscription_form(quality: bool, width: bool, height: bool) -> bool {
    match quality {
        true => !width && !height,
        false => width && height,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitingJoin,
    Joined,
    Left,
}

/// What the server should do with one incoming text frame.
#[derive(Debug, PartialEq)]
pub enum Inbound {
    /// A valid message, allowed in the current phase: act on it.
    Message(ClientMessage),
    /// Answer a `ping` directly; it needs nothing from the room.
    Reply(ServerMessage),
    /// Refuse with this error message; the connection stays open.
    Reject(SignalError),
    /// Over the size limit: close the connection with code 1009.
    TooLarge,
    /// Over the message rate limit (a flood): close the connection with code 1008.
    Flooding,
}

/// The signaling state of one WebSocket connection.
#[derive(Debug)]
pub struct Session {
    limits: SessionLimits,
    phase: Phase,
    messages: TokenBucket,
    publish_offers: TokenBucket,
}

impl Session {
    pub fn new(limits: SessionLimits) -> Self {
        Session {
            limits,
            phase: Phase::AwaitingJoin,
            messages: TokenBucket::new(f64::from(limits.messages_per_second), limits.message_burst),
            publish_offers: TokenBucket::new(
                f64::from(limits.publish_offers_per_minute) / 60.0,
                limits.publish_offer_burst,
            ),
        }
    }

    pub fn limits(&self) -> SessionLimits {
        self.limits
    }

    pub fn is_joined(&self) -> bool {
        self.phase == Phase::Joined
    }

    /// Classifies one text frame, received at `now`. A `join` is only *accepted* here:
    /// call [`Session::joined`] once the room has admitted the participant, so a refused
    /// join can be retried.
    pub fn handle_text(&mut self, text: &str, now: Instant) -> Inbound {
        if text.len() > self.limits.max_message_bytes {
            return Inbound::TooLarge;
        }
        // Counted before parsing: garbage costs the same as a valid message.
        if !self.messages.try_take(now) {
            return Inbound::Flooding;
        }
        let message = match parse_client_message(text) {
            Ok(m) => m,
            Err(e) => return Inbound::Reject(e),
        };
        match (&message, self.phase) {
            (ClientMessage::Ping {}, _) => Inbound::Reply(ServerMessage::Pong {}),
            (ClientMessage::Join { room, name, .. }, Phase::AwaitingJoin) => {
                match self.validate_join(room, name) {
                    Ok(()) => Inbound::Message(message),
                    Err(e) => Inbound::Reject(e),
                }
            }
            (ClientMessage::Join { .. }, Phase::Joined) => {
                Inbound::Reject(SignalError::AlreadyJoined)
            }
            (m, Phase::AwaitingJoin | Phase::Left) => {
                Inbound::Reject(SignalError::NotJoined(m.type_name()))
            }
            (
                ClientMessage::UpdateSubscription {
                    quality,
                    width,
                    height,
                    ..
                },
                Phase::Joined,
            ) if !one_subscription_form(quality.is_some(), width.is_some(), height.is_some()) => {
                Inbound::Reject(SignalError::InvalidField {
                    type_name: "update_subscription".into(),
                    detail: "give either `quality` or both `width` and `height`".into(),
                })
            }
            (ClientMessage::Leave {}, Phase::Joined) => {
                self.phase = Phase::Left;
                Inbound::Message(message)
            }
            (ClientMessage::PublishOffer { tracks, .. }, Phase::Joined) => {
                if let Err(e) = validate_declared_tracks(tracks) {
                    return Inbound::Reject(e);
                }
                if !self.publish_offers.try_take(now) {
                    return Inbound::Reject(SignalError::RateLimited {
                        what: "publish_offer",
                        limit: format!(
                            "{} per minute (bursts of {})",
                            self.limits.publish_offers_per_minute, self.limits.publish_offer_burst
                        ),
                    });
                }
                Inbound::Message(message)
            }
            (_, Phase::Joined) => Inbound::Message(message),
        }
    }

    /// A binary frame of `len` bytes at `now`: refused (the protocol is JSON text), counted
    /// against the same limits as text.
    pub fn handle_binary(&mut self, len: usize, now: Instant) -> Inbound {
        if len > self.limits.max_message_bytes {
            return Inbound::TooLarge;
        }
        if !self.messages.try_take(now) {
            return Inbound::Flooding;
        }
        Inbound::Reject(SignalError::Binary)
    }

    /// The room admitted this connection's participant.
    pub fn joined(&mut self) {
        self.phase = Phase::Joined;
    }

    fn validate_join(&self, room: &str, name: &str) -> Result<(), SignalError> {
        let invalid = |detail: String| SignalError::InvalidField {
            type_name: "join".into(),
            detail,
        };
        validate_room_name(room, self.limits.max_room_name_bytes)
            .map_err(|e| invalid(format!("`room` {e}")))?;
        validate_display_name(name, self.limits.max_display_name_bytes)
            .map_err(|e| invalid(format!("`name` {e}")))?;
        Ok(())
    }
}

fn validate_declared_tracks(tracks: &[crate::PublishedTrackMeta]) -> Result<(), SignalError> {
    let invalid = |detail: String| SignalError::InvalidField {
        type_name: "publish_offer".into(),
        detail,
    };
    if tracks.len() > MAX_DECLARED_TRACKS {
        return Err(invalid(format!(
            "`tracks` has {} entries; at most {MAX_DECLARED_TRACKS}",
            tracks.len()
        )));
    }
    for meta in tracks {
        let id = &meta.track_id;
        if id.is_empty() || id.len() > MAX_TRACK_ID_BYTES || id.chars().any(char::is_control) {
            return Err(invalid(format!(
                "a `track_id` must be 1 to {MAX_TRACK_ID_BYTES} bytes without control characters"
            )));
        }
    }
    Ok(())
}

/// The rule for display names, wherever one comes from (`join`, a token's `name`): 1 to
/// `max_bytes` bytes, not blank, no control characters (no newlines or terminal escapes
/// reach other participants' screens or the logs). The error completes "`name` ...".
pub fn validate_display_name(name: &str, max_bytes: usize) -> Result<(), String> {
    if name.trim().is_empty() || name.len() > max_bytes {
        return Err(format!("must be 1 to {max_bytes} bytes and not blank"));
    }
    if name.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

/// The rule for identities (a token's `sub`): 1 to `max_bytes` bytes of printable
/// characters with no whitespace. The error completes "`sub` ...".
pub fn validate_identity(identity: &str, max_bytes: usize) -> Result<(), String> {
    if identity.is_empty() || identity.len() > max_bytes {
        return Err(format!("must be 1 to {max_bytes} bytes"));
    }
    if identity
        .chars()
        .any(|c| c.is_control() || c.is_whitespace())
    {
        return Err("must not contain whitespace or control characters".into());
    }
    Ok(())
}

/// The rule for room names, wherever a room is named (`join`, the admin API): 1 to
/// `max_bytes` bytes, no whitespace or control characters. The error completes "`room` ...".
pub fn validate_room_name(room: &str, max_bytes: usize) -> Result<(), String> {
    if room.is_empty() || room.len() > max_bytes {
        return Err(format!("must be 1 to {max_bytes} bytes"));
    }
    if room.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("must not contain whitespace or control characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        Session::new(SessionLimits::default())
    }

    fn rejected_code(inbound: Inbound) -> (ErrorCode, String) {
        match inbound {
            Inbound::Reject(e) => (e.code(), e.to_string()),
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn malformed_json_is_bad_request() {
        let (code, msg) = rejected_code(session().handle_text("{not json", Instant::now()));
        assert_eq!(code, ErrorCode::BadRequest);
        assert!(msg.starts_with("malformed JSON"), "{msg}");
    }

    #[test]
    fn unknown_type_is_named() {
        let (code, msg) =
            rejected_code(session().handle_text(r#"{"type":"dance"}"#, Instant::now()));
        assert_eq!(code, ErrorCode::BadRequest);
        assert!(msg.contains("`dance`"), "{msg}");
    }

    #[test]
    fn missing_and_ill_typed_fields_are_named() {
        let (code, msg) =
            rejected_code(session().handle_text(r#"{"type":"join","name":"a"}"#, Instant::now()));
        assert_eq!(code, ErrorCode::BadRequest);
        assert!(msg.contains("room"), "{msg}");
        let (_, msg) = rejected_code(
            session().handle_text(r#"{"type":"join","room":5,"name":"a"}"#, Instant::now()),
        );
        assert!(msg.contains("invalid type"), "{msg}");
        let (_, msg) = rejected_code(session().handle_text(
            r#"{"type":"join","room":"r","name":"a","colour":1}"#,
            Instant::now(),
        ));
        assert!(msg.contains("colour"), "{msg}");
    }

    #[test]
    fn nothing_but_join_and_ping_before_join() {
        let mut s = session();
        assert_eq!(
            s.handle_text(r#"{"type":"ping"}"#, Instant::now()),
            Inbound::Reply(ServerMessage::Pong {})
        );
        let (code, _) =
            rejected_code(s.handle_text(r#"{"type":"publish_offer","sdp":"v=0"}"#, Instant::now()));
        assert_eq!(code, ErrorCode::NotJoined);
        let (code, _) = rejected_code(s.handle_text(r#"{"type":"leave"}"#, Instant::now()));
        assert_eq!(code, ErrorCode::NotJoined);
        assert!(matches!(
            s.handle_text(r#"{"type":"join","room":"r","name":"Ann"}"#, Instant::now()),
            Inbound::Message(ClientMessage::Join { .. })
        ));
        s.joined();
        let (code, _) = rejected_code(
            s.handle_text(r#"{"type":"join","room":"r","name":"Ann"}"#, Instant::now()),
        );
        assert_eq!(code, ErrorCode::AlreadyJoined);
        assert!(matches!(
            s.handle_text(
                r#"{"type":"mute","track_id":"t","muted":true}"#,
                Instant::now()
            ),
            Inbound::Message(_)
        ));
        assert!(matches!(
            s.handle_text(r#"{"type":"leave"}"#, Instant::now()),
            Inbound::Message(_)
        ));
        let (code, _) = rejected_code(s.handle_text(
            r#"{"type":"mute","track_id":"t","muted":true}"#,
            Instant::now(),
        ));
        assert_eq!(code, ErrorCode::NotJoined);
    }

    #[test]
    fn update_subscription_takes_one_form() {
        let mut s = session();
        s.handle_text(r#"{"type":"join","room":"r","name":"Ann"}"#, Instant::now());
        s.joined();
        for ok in [
            r#"{"type":"update_subscription","track_id":"t","quality":"low"}"#,
            r#"{"type":"update_subscription","track_id":"t","width":320,"height":180}"#,
        ] {
            assert!(
                matches!(s.handle_text(ok, Instant::now()), Inbound::Message(_)),
                "{ok}"
            );
        }
        for bad in [
            r#"{"type":"update_subscription","track_id":"t"}"#,
            r#"{"type":"update_subscription","track_id":"t","width":320}"#,
            r#"{"type":"update_subscription","track_id":"t","quality":"low","width":1,"height":1}"#,
            r#"{"type":"update_subscription","track_id":"t","quality":"ultra"}"#,
        ] {
            assert_eq!(
                rejected_code(s.handle_text(bad, Instant::now())).0,
                ErrorCode::BadRequest,
                "{bad}"
            );
        }
    }

    #[test]
    fn oversized_message_closes() {
        let mut s = Session::new(SessionLimits {
            max_message_bytes: 16,
            ..SessionLimits::default()
        });
        assert_eq!(
            s.handle_text(&"x".repeat(17), Instant::now()),
            Inbound::TooLarge
        );
    }

    #[test]
    fn join_fields_are_validated() {
        for bad in [
            r#"{"type":"join","room":"","name":"a"}"#,
            r#"{"type":"join","room":"a b","name":"a"}"#,
            r#"{"type":"join","room":"r","name":"  "}"#,
        ] {
            let (code, _) = rejected_code(session().handle_text(bad, Instant::now()));
            assert_eq!(code, ErrorCode::BadRequest, "{bad}");
        }
        let long = format!(
            r#"{{"type":"join","room":"{}","name":"a"}}"#,
            "r".repeat(129)
        );
        assert_eq!(
            rejected_code(session().handle_text(&long, Instant::now())).0,
            ErrorCode::BadRequest
        );
    }

    #[test]
    fn a_flood_closes_the_connection_and_offers_are_rate_limited() {
        let t0 = Instant::now();
        let mut s = Session::new(SessionLimits {
            messages_per_second: 10,
            message_burst: 20,
            publish_offers_per_minute: 6,
            publish_offer_burst: 2,
            ..SessionLimits::default()
        });
        s.handle_text(r#"{"type":"join","room":"r","name":"Ann"}"#, t0);
        s.joined();
        let offer = r#"{"type":"publish_offer","sdp":"v=0"}"#;
        assert!(matches!(s.handle_text(offer, t0), Inbound::Message(_)));
        assert!(matches!(s.handle_text(offer, t0), Inbound::Message(_)));
        let (code, message) = rejected_code(s.handle_text(offer, t0));
        assert_eq!(code, ErrorCode::RateLimited);
        assert!(message.contains("6 per minute"), "{message}");
        // One more after 10 s (6 a minute).
        let later = t0 + std::time::Duration::from_secs(10);
        assert!(matches!(s.handle_text(offer, later), Inbound::Message(_)));
        // 20 messages in a burst at most (the bucket refilled meanwhile; that offer was one),
        // garbage included; then the connection goes.
        for _ in 0..19 {
            assert_ne!(s.handle_text("{garbage", later), Inbound::Flooding);
        }
        assert_eq!(
            s.handle_text(r#"{"type":"ping"}"#, later),
            Inbound::Flooding
        );
    }

    #[test]
    fn declared_tracks_are_bounded() {
        let mut s = session();
        s.handle_text(r#"{"type":"join","room":"r","name":"Ann"}"#, Instant::now());
        s.joined();
        let offer = |tracks: Vec<String>| {
            let tracks: Vec<String> = tracks
                .iter()
                .map(|id| format!(r#"{{"track_id":"{id}","source":"camera"}}"#))
                .collect();
            format!(
                r#"{{"type":"publish_offer","sdp":"v=0","tracks":[{}]}}"#,
                tracks.join(",")
            )
        };
        let many = (0..65).map(|i| format!("t{i}")).collect();
        assert_eq!(
            rejected_code(s.handle_text(&offer(many), Instant::now())).0,
            ErrorCode::BadRequest
        );
        let long = vec!["x".repeat(129)];
        assert_eq!(
            rejected_code(s.handle_text(&offer(long), Instant::now())).0,
            ErrorCode::BadRequest
        );
        let fine = vec!["a1b2".to_owned()];
        assert!(matches!(
            s.handle_text(&offer(fine), Instant::now()),
            Inbound::Message(_)
        ));
    }

    #[test]
    fn names_and_identities_follow_one_rule() {
        assert!(validate_display_name("Ada Lovelace", 64).is_ok());
        assert!(validate_display_name(&"x".repeat(65), 64).is_err());
        assert!(validate_display_name("two\nlines", 64).is_err());
        assert!(validate_display_name("\u{1b}[31mred", 64).is_err());
        assert!(validate_display_name("   ", 64).is_err());
        assert!(validate_identity("ada@example.org", 128).is_ok());
        assert!(validate_identity("", 128).is_err());
        assert!(validate_identity("ada lovelace", 128).is_err());
        assert!(validate_identity("ada\u{7}", 128).is_err());
        assert!(validate_identity(&"a".repeat(129), 128).is_err());
    }
}
