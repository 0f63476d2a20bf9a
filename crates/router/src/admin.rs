//! What operators see and change through the admin API: room options, and snapshots of
//! rooms, participants and tracks. Plain data, answered by each room's task from its own
//! state, so a query never touches the media path.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use switchyard_signal::{LayerInfo, TrackKind, TrackSource};

/// How a room is set up when an operator creates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomOptions {
    pub max_participants: usize,
    /// How long the room stays open while empty (before the first join, after the last
    /// leave), in seconds; 0 closes it as soon as it is empty.
    pub empty_timeout_secs: u64,
    pub metadata: String,
}

/// A room as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RoomInfo {
    pub name: String,
    /// Unix seconds.
    pub created_at: u64,
    pub max_participants: usize,
    pub empty_timeout_secs: u64,
    pub metadata: String,
    pub num_participants: usize,
    pub num_tracks: usize,
}

/// What a participant may do (its token's grant, or what an operator set since).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PermissionsView {
    pub can_publish: bool,
    pub can_subscribe: bool,
    pub can_publish_data: bool,
}

/// One simulcast layer of a published track, with its current receive bitrate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LayerView {
    /// "low", "medium" or "high".
    #[schema(value_type = String)]
    pub quality: switchyard_signal::Quality,
    pub rid: String,
    pub bitrate_bps: u64,
}

/// A published track.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TrackView {
    pub id: String,
    #[schema(value_type = String)]
    pub kind: TrackKind,
    #[schema(value_type = String)]
    pub source: TrackSource,
    pub muted: bool,
    pub mime_type: String,
    /// Simulcast layers, lowest first (empty without simulcast).
    pub layers: Vec<LayerView>,
    /// Received from the publisher, all layers together.
    pub bitrate_in_bps: u64,
    /// Sent to all its subscribers together.
    pub bitrate_out_bps: u64,
    pub subscribers: usize,
}

/// A participant as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ParticipantView {
    /// This session's id (`PA_...`).
    pub id: String,
    pub identity: String,
    pub name: String,
    /// Unix seconds.
    pub joined_at: u64,
    pub permissions: PermissionsView,
    /// The peer connections' states: "new", "connecting", "connected", "disconnected",
    /// "failed" or "closed".
    pub publisher_state: String,
    pub subscriber_state: String,
    pub tracks: Vec<TrackView>,
}

/// Bitrates of every track of a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RoomStats {
    pub room: String,
    pub tracks: Vec<TrackStatsView>,
    pub bitrate_in_bps: u64,
    pub bitrate_out_bps: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TrackStatsView {
    pub participant_identity: String,
    pub track_id: String,
    #[schema(value_type = String)]
    pub kind: TrackKind,
    pub bitrate_in_bps: u64,
    pub bitrate_out_bps: u64,
    pub subscribers: usize,
}

/// Reduces a signal-level layer to its view (bitrate filled in by the room).
pub(crate) fn layer_view(layer: &LayerInfo, bitrate_bps: u64) -> LayerView {
    LayerView {
        quality: layer.quality,
        rid: layer.rid.clone(),
        bitrate_bps,
    }
}
