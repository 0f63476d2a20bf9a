//! The wire protocol: every JSON message that crosses the signaling WebSocket.
//!
//! Messages are objects tagged by `type` with snake_case fields. The core set is a stable
//! contract: later versions add messages and optional fields, never rename or remove these.
//! `docs/protocol.md` documents each one with an example.

use serde::{Deserialize, Serialize};

/// Which of a participant's two peer connections a message refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// The connection the client offers and publishes its tracks on.
    Publisher,
    /// The connection the server offers and forwards other participants' tracks on.
    Subscriber,
}

/// An ICE candidate as the browser's `RTCIceCandidateInit`, in snake_case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceCandidate {
    pub candidate: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_mline_index: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_fragment: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackKind {
    Audio,
    Video,
}

/// What a track carries, as the publisher declared it (or inferred from its kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TrackSource {
    Camera,
    Microphone,
    Screen,
    /// The audio of a shared screen or tab (`getDisplayMedia` with audio).
    ScreenAudio,
    #[default]
    Unknown,
}

impl TrackSource {
    /// The source assumed for a track whose publisher did not declare one.
    pub fn default_for(kind: TrackKind) -> Self {
        match kind {
            TrackKind::Audio => TrackSource::Microphone,
            TrackKind::Video => TrackSource::Camera,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackInfo {
    pub id: String,
    pub kind: TrackKind,
    pub source: TrackSource,
    pub muted: bool,
    /// The simulcast layers the publisher sends, lowest first; empty for a track without
    /// simulcast (audio, or video sent as one encoding).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<LayerInfo>,
}

/// A quality a subscriber can ask for, and the name of each simulcast layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    Low,
    Medium,
    High,
    /// Forward nothing of this track.
    Off,
}

/// One simulcast layer of a published track.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    pub quality: Quality,
    /// The publisher's RTP stream id for it (`q`, `h`, `f` from the web client).
    pub rid: String,
}

/// An active speaker, loudest first in `active_speakers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveSpeaker {
    pub participant_id: String,
    /// 0.0 (silent) to 1.0 (loudest), over the last few hundred milliseconds.
    pub level: f32,
}

/// A participant: `id` names this session (a new one per join), `identity` the user
/// (from the access token; unique in the room).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantInfo {
    pub id: String,
    #[serde(default)]
    pub identity: String,
    pub name: String,
}

/// A participant already in the room when someone joins, with what it publishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteParticipant {
    pub id: String,
    #[serde(default)]
    pub identity: String,
    pub name: String,
    pub tracks: Vec<TrackInfo>,
}

/// Why the server ended a participant's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisconnectReason {
    /// An operator removed the participant (admin API).
    Removed,
    /// An operator deleted the room.
    RoomDeleted,
}

/// An ICE server for the client's `RTCPeerConnection` configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// Optional per-track metadata a publisher sends with its offer (keyed by the track id in
/// the offer's `a=msid`), so the server knows e.g. a screen share from a camera.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedTrackMeta {
    pub track_id: String,
    pub source: TrackSource,
}

/// Messages from the client to the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    Join {
        room: String,
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    PublishOffer {
        sdp: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tracks: Vec<PublishedTrackMeta>,
    },
    SubscribeAnswer {
        sdp: String,
    },
    Candidate {
        target: Target,
        candidate: IceCandidate,
    },
    Mute {
        track_id: String,
        muted: bool,
    },
    /// What the subscriber wants of a track it receives: a `quality`, or the size of the
    /// tile it is shown in (`width`, `height`: the router picks the smallest layer that
    /// covers it). Exactly one of the two forms.
    UpdateSubscription {
        track_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        quality: Option<Quality>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        width: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        height: Option<u32>,
    },
    Leave {},
    Ping {},
}

impl ClientMessage {
    /// The `type` tag, for logs and error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            ClientMessage::Join { .. } => "join",
            ClientMessage::PublishOffer { .. } => "publish_offer",
            ClientMessage::SubscribeAnswer { .. } => "subscribe_answer",
            ClientMessage::Candidate { .. } => "candidate",
            ClientMessage::Mute { .. } => "mute",
            ClientMessage::UpdateSubscription { .. } => "update_subscription",
            ClientMessage::Leave {} => "leave",
            ClientMessage::Ping {} => "ping",
        }
    }
}

/// Messages from the server to the client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Joined {
        room: String,
        /// The room's metadata, as the operator set it (empty when unset).
        #[serde(default)]
        room_metadata: String,
        participant: ParticipantInfo,
        participants: Vec<RemoteParticipant>,
        ice_servers: Vec<IceServer>,
    },
    /// The operator changed the room's metadata.
    RoomUpdated {
        metadata: String,
    },
    /// The server ends this session (the socket closes right after).
    Disconnected {
        reason: DisconnectReason,
    },
    PublishAnswer {
        sdp: String,
    },
    SubscribeOffer {
        sdp: String,
    },
    Candidate {
        target: Target,
        candidate: IceCandidate,
    },
    ParticipantJoined {
        participant: ParticipantInfo,
    },
    ParticipantLeft {
        participant_id: String,
    },
    TrackPublished {
        participant_id: String,
        track: TrackInfo,
    },
    TrackUnpublished {
        participant_id: String,
        track_id: String,
    },
    TrackMuted {
        participant_id: String,
        track_id: String,
        muted: bool,
    },
    /// Who is speaking now, loudest first; sent when the set or order changes.
    ActiveSpeakers {
        speakers: Vec<ActiveSpeaker>,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
    Pong {},
}

impl ServerMessage {
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMessage::Error {
            code,
            message: message.into(),
        }
    }

    pub fn to_json(&self) -> String {
        // Serializing these plain structs cannot fail: no maps with non-string keys, no
        // custom serializers.
        serde_json::to_string(self).expect("server messages always serialize")
    }
}

/// Stable error codes. Clients switch on these; the message is for humans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Malformed JSON, an unknown `type`, or a missing or ill-typed field.
    BadRequest,
    /// A message other than `join` or `ping` before `join`.
    NotJoined,
    /// A second `join` on a connection that already joined.
    AlreadyJoined,
    /// The room is at its configured participant limit.
    RoomFull,
    /// An SDP that could not be parsed or applied.
    InvalidSdp,
    /// A candidate that could not be parsed or applied.
    InvalidCandidate,
    /// A `mute` for a track this participant does not publish.
    UnknownTrack,
    /// `join` without a valid access token for that room.
    Unauthorized,
    /// The token does not grant this (e.g. `publish_offer` without `can_publish`).
    Forbidden,
    /// Another session joined with the same identity; this one is closed.
    DuplicateIdentity,
    /// Too many of these too fast (re-offers, ICE restarts): the request was not acted on;
    /// the message says the limit.
    RateLimited,
    /// A data message larger than the data channel's `a=max-message-size` (or larger than
    /// that once the server's envelope is around it): dropped; the channel stays open.
    MessageTooLarge,
    /// A data message whose envelope could not be read (docs/protocol.md, "Data messages"):
    /// dropped; the channel stays open.
    InvalidData,
    /// This receiver's reliable data channel fell further behind than the server queues
    /// for it: the server reset the channel (and opened a new one); messages in between
    /// were lost.
    DataOverflow,
    /// The server could not complete the request; nothing the client sent was wrong.
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::AlreadyJoined => "already_joined",
            ErrorCode::RoomFull => "room_full",
            ErrorCode::InvalidSdp => "invalid_sdp",
            ErrorCode::InvalidCandidate => "invalid_candidate",
            ErrorCode::UnknownTrack => "unknown_track",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::DuplicateIdentity => "duplicate_identity",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::MessageTooLarge => "message_too_large",
            ErrorCode::InvalidData => "invalid_data",
            ErrorCode::DataOverflow => "data_overflow",
            ErrorCode::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn track() -> TrackInfo {
        TrackInfo {
            id: "t1".into(),
            kind: TrackKind::Video,
            source: TrackSource::Camera,
            muted: false,
            layers: vec![
                LayerInfo {
                    quality: Quality::Low,
                    rid: "q".into(),
                },
                LayerInfo {
                    quality: Quality::High,
                    rid: "f".into(),
                },
            ],
        }
    }

    fn candidate() -> IceCandidate {
        IceCandidate {
            candidate: "candidate:1 1 udp 2130706431 127.0.0.1 7882 typ host".into(),
            sdp_mid: Some("0".into()),
            sdp_mline_index: Some(0),
            username_fragment: None,
        }
    }

    fn all_client_messages() -> Vec<ClientMessage> {
        vec![
            ClientMessage::Join {
                room: "r".into(),
                name: "Ann".into(),
                token: None,
            },
            ClientMessage::Join {
                room: "r".into(),
                name: "Ann".into(),
                token: Some("jwt".into()),
            },
            ClientMessage::PublishOffer {
                sdp: "v=0".into(),
                tracks: vec![],
            },
            ClientMessage::PublishOffer {
                sdp: "v=0".into(),
                tracks: vec![PublishedTrackMeta {
                    track_id: "t1".into(),
                    source: TrackSource::Screen,
                }],
            },
            ClientMessage::SubscribeAnswer { sdp: "v=0".into() },
            ClientMessage::Candidate {
                target: Target::Subscriber,
                candidate: candidate(),
            },
            ClientMessage::Mute {
                track_id: "t1".into(),
                muted: true,
            },
            ClientMessage::UpdateSubscription {
                track_id: "t1".into(),
                quality: Some(Quality::Off),
                width: None,
                height: None,
            },
            ClientMessage::UpdateSubscription {
                track_id: "t1".into(),
                quality: None,
                width: Some(320),
                height: Some(180),
            },
            ClientMessage::Leave {},
            ClientMessage::Ping {},
        ]
    }

    fn all_server_messages() -> Vec<ServerMessage> {
        let p = ParticipantInfo {
            id: "PA_1".into(),
            identity: "ann".into(),
            name: "Ann".into(),
        };
        vec![
            ServerMessage::Joined {
                room: "r".into(),
                room_metadata: "{\"topic\": \"standup\"}".into(),
                participant: p.clone(),
                participants: vec![RemoteParticipant {
                    id: "PA_2".into(),
                    identity: "bo".into(),
                    name: "Bo".into(),
                    tracks: vec![track()],
                }],
                ice_servers: vec![IceServer {
                    urls: vec!["stun:127.0.0.1:3478".into()],
                    username: None,
                    credential: None,
                }],
            },
            ServerMessage::PublishAnswer { sdp: "v=0".into() },
            ServerMessage::SubscribeOffer { sdp: "v=0".into() },
            ServerMessage::Candidate {
                target: Target::Publisher,
                candidate: candidate(),
            },
            ServerMessage::ParticipantJoined { participant: p },
            ServerMessage::ParticipantLeft {
                participant_id: "PA_1".into(),
            },
            ServerMessage::TrackPublished {
                participant_id: "PA_1".into(),
                track: track(),
            },
            ServerMessage::TrackUnpublished {
                participant_id: "PA_1".into(),
                track_id: "t1".into(),
            },
            ServerMessage::TrackMuted {
                participant_id: "PA_1".into(),
                track_id: "t1".into(),
                muted: true,
            },
            ServerMessage::ActiveSpeakers {
                speakers: vec![ActiveSpeaker {
                    participant_id: "PA_1".into(),
                    level: 0.5,
                }],
            },
            ServerMessage::RoomUpdated {
                metadata: "m".into(),
            },
            ServerMessage::Disconnected {
                reason: DisconnectReason::RoomDeleted,
            },
            ServerMessage::error(ErrorCode::BadRequest, "nope"),
            ServerMessage::error(ErrorCode::DuplicateIdentity, "replaced"),
            ServerMessage::Pong {},
        ]
    }

    #[test]
    fn every_client_message_round_trips() {
        for m in all_client_messages() {
            let text = serde_json::to_string(&m).unwrap();
            let value: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(value["type"], m.type_name(), "{text}");
            assert_eq!(serde_json::from_str::<ClientMessage>(&text).unwrap(), m);
        }
    }

    #[test]
    fn every_server_message_round_trips() {
        for m in all_server_messages() {
            let text = m.to_json();
            assert_eq!(
                serde_json::from_str::<ServerMessage>(&text).unwrap(),
                m,
                "{text}"
            );
        }
    }

    #[test]
    fn wire_shape_is_snake_case_and_tagged() {
        let m = ServerMessage::TrackMuted {
            participant_id: "PA_1".into(),
            track_id: "t1".into(),
            muted: true,
        };
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            json!({"type": "track_muted", "participant_id": "PA_1", "track_id": "t1", "muted": true})
        );
        let c: ClientMessage = serde_json::from_value(json!({
            "type": "candidate", "target": "publisher",
            "candidate": {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host", "sdp_mid": "0", "sdp_mline_index": 0}
        }))
        .unwrap();
        assert!(matches!(
            c,
            ClientMessage::Candidate {
                target: Target::Publisher,
                ..
            }
        ));
        for code in [
            ErrorCode::BadRequest,
            ErrorCode::NotJoined,
            ErrorCode::InvalidSdp,
            ErrorCode::RoomFull,
        ] {
            assert_eq!(serde_json::to_value(code).unwrap(), json!(code.as_str()));
        }
    }

    /// docs/protocol.md is the contract clients are written against: every JSON example in
    /// it must parse as the message it claims to be, and every message type must appear.
    #[test]
    fn protocol_doc_examples_parse() {
        let doc = include_str!("../../../docs/protocol.md");
        let mut client_types = std::collections::BTreeSet::new();
        let mut server_types = std::collections::BTreeSet::new();
        let mut lines = doc.lines();
        while let Some(line) = lines.next() {
            let direction = match line.trim() {
                "```json client" => "client",
                "```json server" => "server",
                _ => continue,
            };
            let block: String = lines
                .by_ref()
                .take_while(|l| l.trim() != "```")
                .collect::<Vec<_>>()
                .join("\n");
            let value: Value = serde_json::from_str(&block)
                .unwrap_or_else(|e| panic!("example is not JSON ({e}):\n{block}"));
            let type_name = value["type"].as_str().unwrap().to_owned();
            if direction == "client" {
                let m: ClientMessage = serde_json::from_value(value.clone())
                    .unwrap_or_else(|e| panic!("client example does not parse ({e}):\n{block}"));
                assert_eq!(
                    serde_json::to_value(&m).unwrap(),
                    value,
                    "not canonical:\n{block}"
                );
                client_types.insert(type_name);
            } else {
                let m: ServerMessage = serde_json::from_value(value.clone())
                    .unwrap_or_else(|e| panic!("server example does not parse ({e}):\n{block}"));
                assert_eq!(
                    serde_json::to_value(&m).unwrap(),
                    value,
                    "not canonical:\n{block}"
                );
                server_types.insert(type_name);
            }
        }
        let expect_client: std::collections::BTreeSet<_> = all_client_messages()
            .iter()
            .map(|m| m.type_name().to_owned())
            .collect();
        let expect_server: std::collections::BTreeSet<_> = all_server_messages()
            .iter()
            .map(|m| {
                serde_json::to_value(m).unwrap()["type"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(client_types, expect_client, "client messages documented");
        assert_eq!(server_types, expect_server, "server messages documented");
    }
}
