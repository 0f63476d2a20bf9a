//! The room task: one task owns each room's [`RoomState`] and applies its effects; everyone
//! else talks to it through a channel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use switchyard_signal::{ActiveSpeaker, ParticipantInfo, ServerMessage, TrackSource};
use switchyard_stats::{Live, LiveGuard};

use crate::error::{Result, RouterError};
use crate::ids::{ParticipantId, RoomId, TrackId};
use crate::media::speaker::{ActiveSpeakerDetector, SpeakerConfig};
use crate::room_state::{Effect, PublishedTrack, RoomState};
use crate::rtc::participant::{self, ParticipantCommand, ParticipantContext, ParticipantTx};
use crate::rtc::uptrack::{Speakers, UpTrack};
use crate::{RouterShared, SignalTx};

pub(crate) enum RoomCommand {
    Join {
        id: ParticipantId,
        name: String,
        signal: SignalTx,
        reply: oneshot::Sender<Result<ParticipantTx>>,
    },
    Leave {
        id: ParticipantId,
    },
    TrackPublished {
        id: ParticipantId,
        uptrack: Arc<UpTrack>,
        source: TrackSource,
    },
    TrackEnded {
        id: ParticipantId,
        track: TrackId,
    },
    Mute {
        id: ParticipantId,
        track: TrackId,
        muted: bool,
    },
    Close,
}

pub(crate) type RoomTx = mpsc::UnboundedSender<RoomCommand>;

/// A running room as the router's registry holds it.
#[derive(Clone)]
pub(crate) struct RoomHandle {
    pub tx: RoomTx,
    /// Distinguishes this room from a later one of the same name.
    pub generation: u64,
}

struct Member {
    signal: SignalTx,
    actor: ParticipantTx,
}

struct RoomTask {
    state: RoomState,
    members: HashMap<ParticipantId, Member>,
    uptracks: HashMap<TrackId, Arc<UpTrack>>,
    speakers: Speakers,
    shared: Arc<RouterShared>,
    tx: RoomTx,
    /// Counts the room in the rooms gauge while its task lives.
    _live: LiveGuard,
}

pub(crate) fn spawn(id: RoomId, generation: u64, shared: Arc<RouterShared>) -> RoomHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = RoomTask {
        state: RoomState::new(id.clone(), shared.config.max_participants),
        members: HashMap::new(),
        uptracks: HashMap::new(),
        speakers: Arc::new(Mutex::new(ActiveSpeakerDetector::new(
            SpeakerConfig::default(),
        ))),
        _live: shared.stats.live_guard(Live::Rooms),
        shared,
        tx: tx.clone(),
    };
    let span = tracing::info_span!("room", room = %id);
    tokio::spawn(tracing::Instrument::instrument(
        task.run(rx, generation),
        span,
    ));
    RoomHandle { tx, generation }
}

impl RoomTask {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<RoomCommand>, generation: u64) {
        tracing::info!("room opened");
        // The detector rate-limits what it reports; polling often keeps changes prompt.
        let mut speaker_poll = tokio::time::interval(Duration::from_millis(100));
        speaker_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let command = tokio::select! {
                command = rx.recv() => command,
                _ = speaker_poll.tick() => {
                    self.poll_speakers();
                    continue;
                }
            };
            let Some(command) = command else { break };
            let closing = matches!(command, RoomCommand::Close);
            self.handle(command);
            if closing || self.state.is_empty() {
                break;
            }
        }
        // Unregister first, so new joins create a fresh room; then refuse whatever was
        // queued meanwhile, so those joins retry there.
        self.shared.unregister(self.state.id(), generation);
        rx.close();
        while let Ok(command) = rx.try_recv() {
            if let RoomCommand::Join { reply, .. } = command {
                let _ = reply.send(Err(RouterError::RoomClosed));
            }
        }
        let ids: Vec<_> = self.members.keys().cloned().collect();
        for id in ids {
            self.leave(&id);
        }
        tracing::info!("room closed");
    }

    fn handle(&mut self, command: RoomCommand) {
        match command {
            RoomCommand::Join {
                id,
                name,
                signal,
                reply,
            } => {
                let result = self.join(id, name, signal);
                let _ = reply.send(result);
            }
            RoomCommand::Leave { id } => self.leave(&id),
            RoomCommand::TrackPublished {
                id,
                uptrack,
                source,
            } => self.publish(id, uptrack, source),
            RoomCommand::TrackEnded { id, track } => {
                if self.uptracks.get(&track).is_some_and(|u| u.publisher == id) {
                    self.uptracks.remove(&track);
                    let effects = self.state.unpublish(&id, &track);
                    self.apply(effects);
                }
            }
            RoomCommand::Mute { id, track, muted } => {
                match self.state.set_muted(&id, &track, muted) {
                    Ok(effects) => {
                        if let Some(uptrack) = self.uptracks.get(&track) {
                            uptrack.set_muted(muted);
                        }
                        self.apply(effects);
                    }
                    Err(e) => self.send(&id, ServerMessage::error(e.code(), e.to_string())),
                }
            }
            RoomCommand::Close => {}
        }
    }

    fn join(&mut self, id: ParticipantId, name: String, signal: SignalTx) -> Result<ParticipantTx> {
        let (present, effects) = self.state.join(id.clone(), name.clone())?;
        let actor = participant::spawn(ParticipantContext {
            id: id.clone(),
            engine: self.shared.engine.clone(),
            room: self.tx.clone(),
            signal: signal.clone(),
            stats: self.shared.stats.clone(),
            speakers: self.speakers.clone(),
        });
        // `joined` goes out before anything the effects send to the newcomer.
        let _ = signal.try_send(ServerMessage::Joined {
            room: self.state.id().to_string(),
            participant: ParticipantInfo {
                id: id.to_string(),
                name,
            },
            participants: present,
            ice_servers: self.shared.config.ice_servers.clone(),
        });
        self.members.insert(
            id.clone(),
            Member {
                signal,
                actor: actor.clone(),
            },
        );
        tracing::info!(participant = %id, count = self.state.participant_count(), "joined");
        self.apply(effects);
        Ok(actor)
    }

    fn leave(&mut self, id: &ParticipantId) {
        let Some(member) = self.members.remove(id) else {
            return;
        };
        let _ = member.actor.send(ParticipantCommand::Close);
        self.speakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        self.uptracks.retain(|_, u| &u.publisher != id);
        let effects = self.state.leave(id);
        self.apply(effects);
        tracing::info!(participant = %id, count = self.state.participant_count(), "left");
    }

    fn publish(&mut self, id: ParticipantId, uptrack: Arc<UpTrack>, source: TrackSource) {
        let track = PublishedTrack {
            id: uptrack.id.clone(),
            kind: uptrack.kind,
            source,
            muted: false,
            layers: uptrack.layers.clone(),
        };
        match self.state.publish(&id, track) {
            Ok(effects) => {
                self.uptracks.insert(uptrack.id.clone(), uptrack);
                self.apply(effects);
            }
            Err(e) => {
                tracing::info!(error = %e, "track refused");
                self.send(&id, ServerMessage::error(e.code(), e.to_string()));
            }
        }
    }

    fn poll_speakers(&mut self) {
        let changed = self
            .speakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .poll(std::time::Instant::now());
        let Some(list) = changed else { return };
        let speakers: Vec<ActiveSpeaker> = list
            .into_iter()
            .map(|s| ActiveSpeaker {
                participant_id: s.key.to_string(),
                level: s.level,
            })
            .collect();
        let ids: Vec<ParticipantId> = self.members.keys().cloned().collect();
        for id in ids {
            self.send(
                &id,
                ServerMessage::ActiveSpeakers {
                    speakers: speakers.clone(),
                },
            );
        }
    }

    fn apply(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Send { to, message } => self.send(&to, message),
                Effect::Subscribe {
                    subscriber, track, ..
                } => {
                    if let (Some(member), Some(uptrack)) =
                        (self.members.get(&subscriber), self.uptracks.get(&track))
                    {
                        let _ = member
                            .actor
                            .send(ParticipantCommand::Subscribe(uptrack.clone()));
                    }
                }
                Effect::Unsubscribe { subscriber, track } => {
                    if let Some(member) = self.members.get(&subscriber) {
                        let _ = member.actor.send(ParticipantCommand::Unsubscribe(track));
                    }
                }
            }
        }
    }

    fn send(&self, to: &ParticipantId, message: ServerMessage) {
        let Some(member) = self.members.get(to) else {
            return;
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = member.signal.try_send(message) {
            // A client that stops reading its socket must not make the server buffer
            // without bound: it is removed, like a dropped connection.
            tracing::warn!(participant = %to, "signaling queue full; disconnecting");
            let _ = self.tx.send(RoomCommand::Leave { id: to.clone() });
        }
    }
}
