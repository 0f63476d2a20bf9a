//! What happens in rooms, for whoever listens outside the media path (webhooks today;
//! later a cluster bus). Published on a broadcast channel: a listener that falls behind
//! loses the oldest events (and learns how many), never slowing a room down.

use serde::Serialize;

use switchyard_signal::TrackInfo;

/// How many events a slow listener may fall behind before it loses the oldest.
pub const EVENT_BUFFER: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    RoomStarted,
    RoomFinished,
    ParticipantJoined,
    ParticipantLeft,
    TrackPublished,
    TrackUnpublished,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::RoomStarted => "room_started",
            EventKind::RoomFinished => "room_finished",
            EventKind::ParticipantJoined => "participant_joined",
            EventKind::ParticipantLeft => "participant_left",
            EventKind::TrackPublished => "track_published",
            EventKind::TrackUnpublished => "track_unpublished",
        }
    }
}

/// The participant an event is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventParticipant {
    pub id: String,
    pub identity: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouterEvent {
    pub event: EventKind,
    pub room: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participant: Option<EventParticipant>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track: Option<TrackInfo>,
    /// When it happened, Unix milliseconds.
    pub created_at_ms: u64,
}

pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
