//! What operators see and change through the admin API: room options, and snapshots of
//! rooms, participants and tracks. Plain data, answered by each room's task from its own
//! state, so a query never touches the media path.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use switchyard_signal::{LayerInfo, TrackKind, TrackSource};

use crate::media::layers::{LayerStatus, Liveness};

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

/// One simulcast layer of a published track: how it arrives, and who receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LayerView {
    /// "low", "medium" or "high".
    #[schema(value_type = String)]
    pub quality: switchyard_signal::Quality,
    pub rid: String,
    /// Media payload received, bits per second (padding carries no payload).
    pub bitrate_bps: u64,
    /// By its frames, never its packets: "live" (frames at a steady rate), "sporadic" (a
    /// frame now and then; picked only when no layer of the track is live) or "idle" (no
    /// frames: nothing arrives, or padding only).
    pub state: String,
    pub frames_per_second: u32,
    /// Padding-only packets received per second (bandwidth probing).
    pub padding_packets_per_second: u32,
    /// Subscribers receiving this layer now.
    pub subscribers: usize,
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

/// A signal-level layer with what the room sampled of it (`None`: not sampled yet).
pub(crate) fn layer_view(
    layer: &LayerInfo,
    bitrate_bps: u64,
    sampled: Option<(LayerStatus, usize)>,
) -> LayerView {
    let (liveness, frames_per_second, padding_packets_per_second, subscribers) =
        sampled.map_or((Liveness::Idle, 0, 0, 0), |(status, subscribers)| {
            (
                status.liveness,
                status.frames_per_second,
                status.padding_per_second,
                subscribers,
            )
        });
    LayerView {
        quality: layer.quality,
        rid: layer.rid.clone(),
        bitrate_bps,
        state: liveness.as_str().to_owned(),
        frames_per_second,
        padding_packets_per_second,
        subscribers,
    }
}
