//! Switchyard's router: rooms, participants, tracks, and the forwarding of RTP from each
//! publisher to every other participant.
//!
//! Layout: [`room_state`] and [`keyframe`] are sans-IO decision code (no tasks, no
//! webrtc-rs, `now` passed in) tested synchronously; `room` runs one task per room that
//! applies those decisions; [`rtc`] is the only module that touches webrtc-rs.

pub mod admin;
pub mod data;
pub mod error;
pub mod events;

pub mod ice_policy;
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

use tokio::sync::{broadcast, mpsc, oneshot};

use switchyard_signal::{ClientMessage, IceServer, ServerMessage};
use switchyard_stats::MediaStats;

pub use admin::{ParticipantView, RoomInfo, RoomOptions, RoomStats, TrackView};
pub use data::DataLimits;
pub use error::{Result, RouterError};
pub use events::{EventKind, RouterEvent};
pub use ids::{ParticipantId, RoomId, TrackId};
pub use room_state::{Joiner, Permissions};
pub use rtc::engine::{RtcEngine, RtcSettings};

use room::{AdminCommand, RoomCommand, RoomHandle};
use rtc::participant::ParticipantTx;

/// Where the router sends a participant's signaling messages (its session drains it).
pub type SignalTx = mpsc::Sender<ServerMessage>;

/// Room-level settings from the server's config.
#[derive(Debug, Clone)]
pub struct RoomSettings {
    /// For rooms a join opens, and the default for rooms the admin API creates.
    pub max_participants: usize,
    /// Default empty timeout of rooms the admin API creates, in seconds.
    pub empty_timeout_secs: u64,
    /// ICE servers handed to clients in `joined`.
    pub ice_servers: Vec<IceServer>,
}

impl Default for RoomSettings {
    fn default() -> Self {
        RoomSettings {
            max_participants: 100,
            empty_timeout_secs: 300,
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
    events: broadcast::Sender<RouterEvent>,
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
                events: broadcast::channel(events::EVENT_BUFFER).0,
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

    /// Room lifecycle, participant and track events, in the order they happened.
    pub fn events(&self) -> broadcast::Receiver<RouterEvent> {
        self.shared.events.subscribe()
    }

    fn spawn_room(&self, room: &RoomId, options: RoomOptions) -> RoomHandle {
        let generation = self.shared.next_generation.fetch_add(1, Ordering::Relaxed);
        room::spawn(room.clone(), options, generation, self.shared.clone())
    }

    fn handle(&self, room: &RoomId) -> Result<RoomHandle> {
        self.rooms()
            .get(room)
            .cloned()
            .ok_or_else(|| RouterError::UnknownRoom(room.to_string()))
    }

    /// Opens a room ahead of its first participant (admin API).
    pub async fn create_room(&self, room: RoomId, options: RoomOptions) -> Result<RoomInfo> {
        let handle = {
            let mut rooms = self.rooms();
            if rooms.contains_key(&room) {
                return Err(RouterError::RoomExists(room.to_string()));
            }
            let handle = self.spawn_room(&room, options);
            rooms.insert(room.clone(), handle.clone());
            handle
        };
        ask(&handle, AdminCommand::Info)
            .await
            .ok_or(RouterError::RoomClosed)
    }

    /// The room options a join-opened room gets, and the defaults for created ones.
    pub fn default_room_options(&self) -> RoomOptions {
        RoomOptions {
            max_participants: self.shared.config.max_participants,
            empty_timeout_secs: self.shared.config.empty_timeout_secs,
            metadata: String::new(),
        }
    }

    /// Every open room, by name.
    pub async fn list_rooms(&self) -> Vec<RoomInfo> {
        let handles: Vec<RoomHandle> = self.rooms().values().cloned().collect();
        let mut infos = Vec::with_capacity(handles.len());
        for handle in handles {
            // A room closing meanwhile simply drops out of the list.
            if let Some(info) = ask(&handle, AdminCommand::Info).await {
                infos.push(info);
            }
        }
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        infos
    }

    pub async fn room_info(&self, room: &RoomId) -> Result<RoomInfo> {
        let handle = self.handle(room)?;
        ask(&handle, AdminCommand::Info)
            .await
            .ok_or_else(|| RouterError::UnknownRoom(room.to_string()))
    }

    /// Disconnects everyone (`disconnected {reason: room_deleted}`) and closes the room.
    pub async fn delete_room(&self, room: &RoomId) -> Result<()> {
        let handle = self.handle(room)?;
        ask(&handle, AdminCommand::Delete)
            .await
            .ok_or_else(|| RouterError::UnknownRoom(room.to_string()))
    }

    pub async fn update_room(
        &self,
        room: &RoomId,
        metadata: Option<String>,
        max_participants: Option<usize>,
    ) -> Result<RoomInfo> {
        let handle = self.handle(room)?;
        ask(&handle, |reply| AdminCommand::Update {
            metadata,
            max_participants,
            reply,
        })
        .await
        .ok_or_else(|| RouterError::UnknownRoom(room.to_string()))
    }

    pub async fn room_stats(&self, room: &RoomId) -> Result<RoomStats> {
        let handle = self.handle(room)?;
        ask(&handle, AdminCommand::Stats)
            .await
            .ok_or_else(|| RouterError::UnknownRoom(room.to_string()))
    }

    pub async fn participants(&self, room: &RoomId) -> Result<Vec<ParticipantView>> {
        let handle = self.handle(room)?;
        ask(&handle, AdminCommand::Participants)
            .await
            .ok_or_else(|| RouterError::UnknownRoom(room.to_string()))
    }

    pub async fn participant(&self, room: &RoomId, identity: &str) -> Result<ParticipantView> {
        let handle = self.handle(room)?;
        let identity = identity.to_owned();
        ask(&handle, |reply| AdminCommand::Participant {
            identity,
            reply,
        })
        .await
        .ok_or_else(|| RouterError::UnknownRoom(room.to_string()))?
    }

    /// Disconnects one participant (`disconnected {reason: removed}`).
    pub async fn remove_participant(&self, room: &RoomId, identity: &str) -> Result<()> {
        let handle = self.handle(room)?;
        let identity = identity.to_owned();
        ask(&handle, |reply| AdminCommand::Remove { identity, reply })
            .await
            .ok_or_else(|| RouterError::UnknownRoom(room.to_string()))?
    }

    /// Mutes or unmutes a published track from the server side: forwarding stops or
    /// resumes and everyone hears `track_muted`.
    pub async fn mute_track(
        &self,
        room: &RoomId,
        identity: &str,
        track: TrackId,
        muted: bool,
    ) -> Result<TrackView> {
        let handle = self.handle(room)?;
        let identity = identity.to_owned();
        ask(&handle, |reply| AdminCommand::MuteTrack {
            identity,
            track,
            muted,
            reply,
        })
        .await
        .ok_or_else(|| RouterError::UnknownRoom(room.to_string()))?
    }

    /// Changes what a participant may do, live.
    pub async fn set_permissions(
        &self,
        room: &RoomId,
        identity: &str,
        permissions: Permissions,
    ) -> Result<ParticipantView> {
        let handle = self.handle(room)?;
        let identity = identity.to_owned();
        ask(&handle, |reply| AdminCommand::SetPermissions {
            identity,
            permissions,
            reply,
        })
        .await
        .ok_or_else(|| RouterError::UnknownRoom(room.to_string()))?
    }

    /// Admits a participant to `room` (opening it if needed). The room sends `joined` and
    /// everything after it through `signal`.
    pub async fn join(
        &self,
        room: RoomId,
        joiner: Joiner,
        signal: SignalTx,
    ) -> Result<ParticipantSession> {
        let id = ParticipantId::generate();
        // A room that empties closes; a join racing with that is refused by the closing
        // room and retried on a fresh one.
        for _ in 0..4 {
            let handle = {
                let mut rooms = self.rooms();
                if let Some(handle) = rooms.get(&room) {
                    handle.clone()
                } else {
                    // A room a join opens closes as soon as it is empty again.
                    let options = RoomOptions {
                        empty_timeout_secs: 0,
                        ..self.default_room_options()
                    };
                    let handle = self.spawn_room(&room, options);
                    rooms.insert(room.clone(), handle.clone());
                    handle
                }
            };
            let (reply, answer) = oneshot::channel();
            let sent = handle.tx.send(RoomCommand::Join {
                id: id.clone(),
                joiner: joiner.clone(),
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

/// Sends a room an admin request and waits for its answer; `None` if the room closed.
async fn ask<T>(
    handle: &RoomHandle,
    command: impl FnOnce(oneshot::Sender<T>) -> AdminCommand,
) -> Option<T> {
    let (reply, answer) = oneshot::channel();
    handle.tx.send(RoomCommand::Admin(command(reply))).ok()?;
    answer.await.ok()
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
    /// arrive through the session's signal channel. `Err` when the participant's queue is
    /// full: the client sends faster than the server handles; the session should close.
    pub fn handle(&self, message: ClientMessage) -> std::result::Result<(), QueueFull> {
        match message {
            ClientMessage::Leave {} => {
                let _ = self.room.tx.send(RoomCommand::Leave {
                    id: self.id.clone(),
                });
                Ok(())
            }
            // The session answers these itself.
            ClientMessage::Join { .. } | ClientMessage::Ping {} => Ok(()),
            other => match self.actor.try_send_client(other) {
                true => Ok(()),
                false => Err(QueueFull),
            },
        }
    }
}

/// A participant's queue of client messages is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "more than {} messages waiting for this participant",
    rtc::participant::CLIENT_QUEUE
)]
pub struct QueueFull;

impl Drop for ParticipantSession {
    fn drop(&mut self) {
        let _ = self.room.tx.send(RoomCommand::Leave {
            id: self.id.clone(),
        });
    }
}
