//! Per-connection signaling rules: parsing with clear errors, the message-size limit, and
//! which messages are allowed in which phase (nothing but `join` and `ping` before joining).
//!
//! This module owns no socket: the server hands it every text frame and acts on the
//! [`Inbound`] it returns, so every rule here is testable without a network.

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
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            max_message_bytes: 64 * 1024,
            max_room_name_bytes: 128,
            max_display_name_bytes: 64,
        }
    }
}

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
}

impl SignalError {
    pub fn code(&self) -> ErrorCode {
        match self {
            SignalError::MalformedJson(_)
            | SignalError::MissingType
            | SignalError::UnknownType(_)
            | SignalError::InvalidField { .. } => ErrorCode::BadRequest,
            SignalError::NotJoined(_) => ErrorCode::NotJoined,
            SignalError::AlreadyJoined => ErrorCode::AlreadyJoined,
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
}

/// The signaling state of one WebSocket connection.
#[derive(Debug)]
pub struct Session {
    limits: SessionLimits,
    phase: Phase,
}

impl Session {
    pub fn new(limits: SessionLimits) -> Self {
        Session {
            limits,
            phase: Phase::AwaitingJoin,
        }
    }

    pub fn limits(&self) -> SessionLimits {
        self.limits
    }

    pub fn is_joined(&self) -> bool {
        self.phase == Phase::Joined
    }

    /// Classifies one text frame. A `join` is only *accepted* here: call [`Session::joined`]
    /// once the room has admitted the participant, so a refused join can be retried.
    pub fn handle_text(&mut self, text: &str) -> Inbound {
        if text.len() > self.limits.max_message_bytes {
            return Inbound::TooLarge;
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
            (_, Phase::Joined) => Inbound::Message(message),
        }
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
        if name.trim().is_empty() || name.len() > self.limits.max_display_name_bytes {
            return Err(invalid(format!(
                "`name` must be 1 to {} bytes and not blank",
                self.limits.max_display_name_bytes
            )));
        }
        if name.chars().any(char::is_control) {
            return Err(invalid("`name` must not contain control characters".into()));
        }
        Ok(())
    }
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
        let (code, msg) = rejected_code(session().handle_text("{not json"));
        assert_eq!(code, ErrorCode::BadRequest);
        assert!(msg.starts_with("malformed JSON"), "{msg}");
    }

    #[test]
    fn unknown_type_is_named() {
        let (code, msg) = rejected_code(session().handle_text(r#"{"type":"dance"}"#));
        assert_eq!(code, ErrorCode::BadRequest);
        assert!(msg.contains("`dance`"), "{msg}");
    }

    #[test]
    fn missing_and_ill_typed_fields_are_named() {
        let (code, msg) = rejected_code(session().handle_text(r#"{"type":"join","name":"a"}"#));
        assert_eq!(code, ErrorCode::BadRequest);
        assert!(msg.contains("room"), "{msg}");
        let (_, msg) =
            rejected_code(session().handle_text(r#"{"type":"join","room":5,"name":"a"}"#));
        assert!(msg.contains("invalid type"), "{msg}");
        let (_, msg) = rejected_code(
            session().handle_text(r#"{"type":"join","room":"r","name":"a","colour":1}"#),
        );
        assert!(msg.contains("colour"), "{msg}");
    }

    #[test]
    fn nothing_but_join_and_ping_before_join() {
        let mut s = session();
        assert_eq!(
            s.handle_text(r#"{"type":"ping"}"#),
            Inbound::Reply(ServerMessage::Pong {})
        );
        let (code, _) = rejected_code(s.handle_text(r#"{"type":"publish_offer","sdp":"v=0"}"#));
        assert_eq!(code, ErrorCode::NotJoined);
        let (code, _) = rejected_code(s.handle_text(r#"{"type":"leave"}"#));
        assert_eq!(code, ErrorCode::NotJoined);
        assert!(matches!(
            s.handle_text(r#"{"type":"join","room":"r","name":"Ann"}"#),
            Inbound::Message(ClientMessage::Join { .. })
        ));
        s.joined();
        let (code, _) = rejected_code(s.handle_text(r#"{"type":"join","room":"r","name":"Ann"}"#));
        assert_eq!(code, ErrorCode::AlreadyJoined);
        assert!(matches!(
            s.handle_text(r#"{"type":"mute","track_id":"t","muted":true}"#),
            Inbound::Message(_)
        ));
        assert!(matches!(
            s.handle_text(r#"{"type":"leave"}"#),
            Inbound::Message(_)
        ));
        let (code, _) =
            rejected_code(s.handle_text(r#"{"type":"mute","track_id":"t","muted":true}"#));
        assert_eq!(code, ErrorCode::NotJoined);
    }

    #[test]
    fn update_subscription_takes_one_form() {
        let mut s = session();
        s.handle_text(r#"{"type":"join","room":"r","name":"Ann"}"#);
        s.joined();
        for ok in [
            r#"{"type":"update_subscription","track_id":"t","quality":"low"}"#,
            r#"{"type":"update_subscription","track_id":"t","width":320,"height":180}"#,
        ] {
            assert!(matches!(s.handle_text(ok), Inbound::Message(_)), "{ok}");
        }
        for bad in [
            r#"{"type":"update_subscription","track_id":"t"}"#,
            r#"{"type":"update_subscription","track_id":"t","width":320}"#,
            r#"{"type":"update_subscription","track_id":"t","quality":"low","width":1,"height":1}"#,
            r#"{"type":"update_subscription","track_id":"t","quality":"ultra"}"#,
        ] {
            assert_eq!(
                rejected_code(s.handle_text(bad)).0,
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
        assert_eq!(s.handle_text(&"x".repeat(17)), Inbound::TooLarge);
    }

    #[test]
    fn join_fields_are_validated() {
        for bad in [
            r#"{"type":"join","room":"","name":"a"}"#,
            r#"{"type":"join","room":"a b","name":"a"}"#,
            r#"{"type":"join","room":"r","name":"  "}"#,
        ] {
            let (code, _) = rejected_code(session().handle_text(bad));
            assert_eq!(code, ErrorCode::BadRequest, "{bad}");
        }
        let long = format!(
            r#"{{"type":"join","room":"{}","name":"a"}}"#,
            "r".repeat(129)
        );
        assert_eq!(
            rejected_code(session().handle_text(&long)).0,
            ErrorCode::BadRequest
        );
    }
}
