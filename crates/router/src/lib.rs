//! Switchyard's router: rooms, participants, tracks, and the forwarding of RTP from each
//! publisher to every other participant.
//!
//! Layout: [`room_state`] and [`keyframe`] are sans-IO decision code (no tasks, no
//! webrtc-rs, `now` passed in) tested synchronously; `room` runs one task per room that
//! applies those decisions; [`rtc`] is the only module that touches webrtc-rs.

pub mod error;

pub mod ids;
pub mod keyframe;
pub mod media;
mod room;
pub mod room_state;
pub mod rtc;
pub mod track;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use switchyard_signal::{ClientMessage, IceServer, ServerMessage};
use switchyard_stats::MediaStats;

pub use error::{Result, RouterError};
pub use ids::{ParticipantId, RoomId, TrackId};
pub use rtc::engine::{RtcEngine, RtcSettings};

use room::{RoomCommand, RoomHandle};
use rtc::participant::{ParticipantCommand, ParticipantTx};

/// Where the router sends a participant's signaling messages (its session drains it).
pub type SignalTx = mpsc::Sender<ServerMessage>;

/// Room-level settings from the server's config.
#[derive(Debug, Clone)]
pub struct RoomSettings {
    pub max_participants: usize,
    /// ICE servers handed to clients in `joined`.
    pub ice_servers: Vec<IceServer>,
}

impl Default for RoomSettings {
    fn default() -> Self {
        RoomSettings {
            max_participants: 100,
            ice_servers: Vec::new(),
        }
    }
}

pub(crate) struct RouterShared {
    engine: Arc<RtcEngine>,
    config: RoomSettings,
    stats: Arc<MediaStats>,
    rooms: Mutex<HashMap<RoomId, RoomHandle>>,
    next_generation: AtomicU64,
}

impl RouterShared {
    fn unregister(&self, id: &RoomId, generation: u64) {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        if rooms.get(id).is_some_and(|r| r.generation == generation) {
            rooms.remove(id);
        }
    }
}

/// The process's rooms. Cheap to clone.
#[derive(Clone)]
pub struct Router {
    shared: Arc<RouterShared>,
}

impl Router {
    pub fn new(engine: Arc<RtcEngine>, config: RoomSettings, stats: Arc<MediaStats>) -> Self {
        Router {
            shared: Arc::new(RouterShared {
                engine,
                config,
                stats,
                rooms: Mutex::new(HashMap::new()),
                next_generation: AtomicU64::new(1),
            }),
        }
    }

    pub fn stats(&self) -> &Arc<MediaStats> {
        &self.shared.stats
    }

    pub fn room_count(&self) -> usize {
        self.rooms().len()
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, HashMap<RoomId, RoomHandle>> {
        self.shared.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a participant to `room` (opening it if needed). The room sends `joined` and
    /// everything after it through `signal`.
    pub async fn join(
        &self,
        room: RoomId,
        name: String,
        signal: SignalTx,
    ) -> Result<ParticipantSession> {
        let id = ParticipantId::generate();
        // A room that empties closes; a join racing with that is refused by the closing
        // room and retried on a fresh one.
        for _ in 0..4 {
            let handle = {
                let mut rooms = self.rooms();
                rooms
                    .entry(room.clone())
                    .or_insert_with(|| {
                        let generation =
                            self.shared.next_generation.fetch_add(1, Ordering::Relaxed);
                        room::spawn(room.clone(), generation, self.shared.clone())
                    })
                    .clone()
            };
            let (reply, answer) = oneshot::channel();
            let sent = handle.tx.send(RoomCommand::Join {
                id: id.clone(),
                name: name.clone(),
                signal: signal.clone(),
                reply,
            });
            if sent.is_err() {
                self.shared.unregister(&room, handle.generation);
                continue;
            }
            match answer.await {
                Ok(Ok(actor)) => {
                    return Ok(ParticipantSession {
                        id,
                        room: handle,
                        actor,
                    })
                }
                Ok(Err(RouterError::RoomClosed)) | Err(_) => continue,
                Ok(Err(e)) => return Err(e),
            }
        }
        Err(RouterError::RoomClosed)
    }

    /// Closes every room: all participants are disconnected and their connections closed.
    pub fn close_all(&self) {
        for handle in self.rooms().values() {
            let _ = handle.tx.send(RoomCommand::Close);
        }
    }
}

/// A joined participant, as its signaling session holds it. Dropping it leaves the room.
pub struct ParticipantSession {
    id: ParticipantId,
    room: RoomHandle,
    actor: ParticipantTx,
}

impl ParticipantSession {
    pub fn id(&self) -> &ParticipantId {
        &self.id
    }

    /// Acts on a message from this participant's client (after `join`). Answers and errors
    /// arrive through the session's signal channel.
    pub fn handle(&self, message: ClientMessage) {
        match message {
            ClientMessage::Mute { track_id, muted } => {
                let _ = self.room.tx.send(RoomCommand::Mute {
                    id: self.id.clone(),
                    track: TrackId::new(track_id),
                    muted,
                });
            }
            ClientMessage::Leave {} => {
                let _ = self.room.tx.send(RoomCommand::Leave {
                    id: self.id.clone(),
                });
            }
            other @ (ClientMessage::PublishOffer { .. }
            | ClientMessage::SubscribeAnswer { .. }
            | ClientMessage::Candidate { .. }
            | ClientMessage::UpdateSubscription { .. }) => {
                let _ = self.actor.send(ParticipantCommand::Signal(other));
            }
            // The session answers these itself.
            ClientMessage::Join { .. } | ClientMessage::Ping {} => {}
        }
    }
}

impl Drop for ParticipantSession {
    fn drop(&mut self) {
        let _ = self.room.tx.send(RoomCommand::Leave {
            id: self.id.clone(),
        });
    }
}
