use switchyard_signal::ErrorCode;

/// Everything the router refuses or fails at, each with the signaling code a client sees.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("room is full ({0} participants)")]
    RoomFull(usize),
    #[error("room is closed")]
    RoomClosed,
    #[error("participant is gone")]
    ParticipantGone,
    #[error("unknown track `{0}`")]
    UnknownTrack(String),
    #[error("the access token does not allow {0}")]
    Forbidden(&'static str),
    #[error("no room `{0}`")]
    UnknownRoom(String),
    #[error("room `{0}` already exists")]
    RoomExists(String),
    #[error("no participant `{0}` in this room")]
    UnknownParticipant(String),
    #[error("track `{0}` is already published in this room")]
    DuplicateTrack(String),
    #[error("invalid SDP: {0}")]
    InvalidSdp(String),
    #[error("invalid ICE candidate: {0}")]
    InvalidCandidate(String),
    #[error("unexpected `{0}`: {1}")]
    UnexpectedMessage(&'static str, &'static str),
    #[error("{0}")]
    RateLimited(String),
    #[error("WebRTC: {0}")]
    Webrtc(#[from] webrtc::Error),
    #[error("UDP socket: {0}")]
    Io(#[from] std::io::Error),
}

impl RouterError {
    /// The stable signaling error code for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            RouterError::RoomFull(_) => ErrorCode::RoomFull,
            RouterError::UnknownTrack(_) => ErrorCode::UnknownTrack,
            RouterError::Forbidden(_) => ErrorCode::Forbidden,
            RouterError::DuplicateTrack(_) | RouterError::UnexpectedMessage(..) => {
                ErrorCode::BadRequest
            }
            RouterError::InvalidSdp(_) => ErrorCode::InvalidSdp,
            RouterError::InvalidCandidate(_) => ErrorCode::InvalidCandidate,
            RouterError::RateLimited(_) => ErrorCode::RateLimited,
            RouterError::UnknownRoom(_)
            | RouterError::RoomExists(_)
            | RouterError::UnknownParticipant(_) => ErrorCode::BadRequest,
            RouterError::RoomClosed
            | RouterError::ParticipantGone
            | RouterError::Webrtc(_)
            | RouterError::Io(_) => ErrorCode::Internal,
        }
    }
}

pub type Result<T, E = RouterError> = std::result::Result<T, E>;
