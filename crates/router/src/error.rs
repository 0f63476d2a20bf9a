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
    /// A description the router itself refuses; the text is ours, safe to show.
    #[error("invalid SDP: {0}")]
    InvalidSdp(String),
    /// A description webrtc-rs could not parse or apply: its error is for the log only.
    #[error("invalid SDP: {0}")]
    SdpNotApplied(webrtc::Error),
    #[error("invalid ICE candidate: {0}")]
    InvalidCandidate(String),
    #[error("invalid ICE candidate: {0}")]
    CandidateNotApplied(webrtc::Error),
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
            RouterError::InvalidSdp(_) | RouterError::SdpNotApplied(_) => ErrorCode::InvalidSdp,
            RouterError::InvalidCandidate(_) | RouterError::CandidateNotApplied(_) => {
                ErrorCode::InvalidCandidate
            }
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

impl RouterError {
    /// What the client is told: a stable, short text. webrtc-rs's and the OS's error
    /// texts (internal names, addresses, state dumps) go to the log only; the code says
    /// what kind of failure it was.
    pub fn client_message(&self) -> String {
        match self {
            RouterError::SdpNotApplied(_) => {
                "invalid SDP: it could not be parsed or applied to the connection".into()
            }
            RouterError::CandidateNotApplied(_) => {
                "invalid ICE candidate: it could not be added to the connection".into()
            }
            RouterError::Webrtc(_) | RouterError::Io(_) => {
                "the server could not complete the request".into()
            }
            other => other.to_string(),
        }
    }
}

pub type Result<T, E = RouterError> = std::result::Result<T, E>;
