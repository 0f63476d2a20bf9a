//! The room task: one task owns each room's [`RoomState`] and applies its effects; everyone
//! else (sessions, participant tasks, the admin API) talks to it through a channel.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use switchyard_signal::{
    ActiveSpeaker, DisconnectReason, ErrorCode, ParticipantInfo, ServerMessage, TrackSource,
};
use switchyard_stats::rate::BitrateSampler;
use switchyard_stats::{LayerGuard, Live, LiveGuard};

use crate::admin::{
    layer_view, ParticipantView, PermissionsView, RoomInfo, RoomOptions, RoomStats, TrackStatsView,
    TrackView,
};
use crate::data::DataRelay;
use crate::error::{Result, RouterError};
use crate::events::{unix_ms, EventKind, EventParticipant, RouterEvent};
use crate::ids::{ParticipantId, RoomId, TrackId};
use crate::media::layers::{layer_for_rid, MAX_LAYERS};
use crate::media::speaker::{ActiveSpeakerDetector, Speaker, SpeakerConfig};
use crate::room_state::{Effect, Joiner, MemberView, Permissions, PublishedTrack, RoomState};
use crate::rtc::participant::{
    self, ConnectionStates, ParticipantCommand, ParticipantContext, ParticipantTx,
};
use crate::rtc::uptrack::{LayerSnapshot, Speakers, UpTrack};
use crate::{RouterShared, SignalTx};

pub(crate) enum RoomCommand {
    Join {
        id: ParticipantId,
        joiner: Joiner,
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
    /// A published track's readers stopped. It names the instance: a publisher that
    /// shares its screen again reuses the track id, and the old one's end must not
    /// unpublish the new one.
    TrackEnded {
        id: ParticipantId,
        uptrack: Arc<UpTrack>,
    },
    /// The publisher muted or unmuted its own track.
    Mute {
        id: ParticipantId,
        track: TrackId,
        muted: bool,
    },
    Admin(AdminCommand),
    /// The server shuts down.
    Close,
}

/// Operator requests (admin API), each answered on its own channel.
pub(crate) enum AdminCommand {
    Info(oneshot::Sender<RoomInfo>),
    Participants(oneshot::Sender<Vec<ParticipantView>>),
    Participant {
        identity: String,
        reply: oneshot::Sender<Result<ParticipantView>>,
    },
    Remove {
        identity: String,
        reply: oneshot::Sender<Result<()>>,
    },
    MuteTrack {
        identity: String,
        track: TrackId,
        muted: bool,
        reply: oneshot::Sender<Result<TrackView>>,
    },
    SetPermissions {
        identity: String,
        permissions: Permissions,
        reply: oneshot::Sender<Result<ParticipantView>>,
    },
    Update {
        metadata: Option<String>,
        max_participants: Option<usize>,
        reply: oneshot::Sender<RoomInfo>,
    },
    Stats(oneshot::Sender<RoomStats>),
    /// Disconnect everyone (`disconnected {reason: room_deleted}`) and close.
    Delete(oneshot::Sender<()>),
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
    connection: Arc<ConnectionStates>,
    can_publish: Arc<AtomicBool>,
    can_publish_data: Arc<AtomicBool>,
}

/// Bitrates of one published track, sampled once a second from its traffic counters,
/// and its layers' liveness, sampled with them.
#[derive(Default)]
struct TrackRates {
    layers: [BitrateSampler; MAX_LAYERS],
    sent: BitrateSampler,
    snapshot: Option<LayerSnapshot>,
    /// Each declared simulcast layer in the `simulcast_layers` gauge, by its state.
    gauges: [Option<LayerGuard>; MAX_LAYERS],
}

struct RoomTask {
    state: RoomState,
    members: HashMap<ParticipantId, Member>,
    uptracks: HashMap<TrackId, Arc<UpTrack>>,
    rates: HashMap<TrackId, TrackRates>,
    speakers: Speakers,
    /// Relays data-channel messages among the members.
    data: Arc<DataRelay>,
    shared: Arc<RouterShared>,
    tx: RoomTx,
    /// Unix seconds.
    created_at: u64,
    empty_timeout: Duration,
    /// Since when the room has had nobody in it.
    empty_since: Option<Instant>,
    /// Counts the room in the rooms gauge while its task lives.
    _live: LiveGuard,
}

/// How often bitrates are sampled for the admin API.
const RATE_INTERVAL: Duration = Duration::from_secs(1);

pub(crate) fn spawn(
    id: RoomId,
    options: RoomOptions,
    generation: u64,
    shared: Arc<RouterShared>,
) -> RoomHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut state = RoomState::new(id.clone(), options.max_participants);
    let _ = state.set_metadata(options.metadata);
    let task = RoomTask {
        state,
        members: HashMap::new(),
        uptracks: HashMap::new(),
        rates: HashMap::new(),
        speakers: Arc::new(Mutex::new(ActiveSpeakerDetector::new(
            SpeakerConfig::default(),
        ))),
        _live: shared.stats.live_guard(Live::Rooms),
        data: DataRelay::new(shared.engine.settings().data, shared.stats.clone()),
        shared,
        tx: tx.clone(),
        created_at: unix_ms() / 1000,
        empty_timeout: Duration::from_secs(options.empty_timeout_secs),
        empty_since: Some(Instant::now()),
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
        self.emit(EventKind::RoomStarted, None, None);
        // The detector rate-limits what it reports; polling often keeps changes prompt.
        let mut speaker_poll = tokio::time::interval(Duration::from_millis(100));
        speaker_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut rate_poll = tokio::time::interval(RATE_INTERVAL);
        rate_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            // A room a join opened (timeout 0) closes right after its last participant
            // leaves; one an operator created waits its empty timeout first.
            let empty_deadline = self
                .empty_since
                .filter(|_| !self.empty_timeout.is_zero())
                .map(|since| since + self.empty_timeout);
            let command = tokio::select! {
                command = rx.recv() => command,
                _ = speaker_poll.tick() => {
                    self.poll_speakers();
                    continue;
                }
                _ = rate_poll.tick() => {
                    self.sample_rates();
                    continue;
                }
                _ = tokio::time::sleep_until(empty_deadline.unwrap_or_else(Instant::now)),
                    if empty_deadline.is_some() => {
                    tracing::info!("empty timeout");
                    break;
                }
            };
            let Some(command) = command else { break };
            let closing = matches!(
                command,
                RoomCommand::Close | RoomCommand::Admin(AdminCommand::Delete(_))
            );
            self.handle(command);
            if closing {
                break;
            }
            if self.state.is_empty() {
                if self.empty_timeout.is_zero() {
                    break;
                }
                self.empty_since.get_or_insert_with(Instant::now);
            } else {
                self.empty_since = None;
            }
        }
        // Unregister first, so new joins create a fresh room; then refuse whatever was
        // queued meanwhile, so those joins retry there.
        self.shared.unregister(self.state.id(), generation);
        rx.close();
        while let Ok(command) = rx.try_recv() {
            match command {
                RoomCommand::Join { reply, .. } => {
                    let _ = reply.send(Err(RouterError::RoomClosed));
                }
                RoomCommand::Admin(AdminCommand::Delete(reply)) => {
                    let _ = reply.send(());
                }
                _ => {}
            }
        }
        let ids: Vec<_> = self.members.keys().cloned().collect();
        for id in ids {
            self.leave(&id);
        }
        self.emit(EventKind::RoomFinished, None, None);
        tracing::info!("room closed");
    }

    fn handle(&mut self, command: RoomCommand) {
        match command {
            RoomCommand::Join {
                id,
                joiner,
                signal,
                reply,
            } => {
                let result = self.join(id, joiner, signal);
                let _ = reply.send(result);
            }
            RoomCommand::Leave { id } => self.leave(&id),
            RoomCommand::TrackPublished {
                id,
                uptrack,
                source,
            } => self.publish(id, uptrack, source),
            RoomCommand::TrackEnded { id, uptrack } => {
                let current = self.uptracks.get(&uptrack.id);
                if current.is_some_and(|u| u.publisher == id && Arc::ptr_eq(u, &uptrack)) {
                    self.unpublish(&id, &uptrack.id);
                }
            }
            RoomCommand::Mute { id, track, muted } => {
                if let Err(e) = self.set_muted(&id, &track, muted) {
                    self.send(&id, ServerMessage::error(e.code(), e.client_message()));
                }
            }
            RoomCommand::Admin(command) => self.admin(command),
            RoomCommand::Close => {}
        }
    }

    fn admin(&mut self, command: AdminCommand) {
        match command {
            AdminCommand::Info(reply) => {
                let _ = reply.send(self.info());
            }
            AdminCommand::Participants(reply) => {
                let views = self
                    .state
                    .participants()
                    .iter()
                    .map(|m| self.participant_view(m))
                    .collect();
                let _ = reply.send(views);
            }
            AdminCommand::Participant { identity, reply } => {
                let _ = reply.send(
                    self.member_by_identity(&identity)
                        .map(|m| self.participant_view(&m)),
                );
            }
            AdminCommand::Remove { identity, reply } => {
                let result = self.member_by_identity(&identity).map(|m| {
                    self.evict(
                        &m.id,
                        ServerMessage::Disconnected {
                            reason: DisconnectReason::Removed,
                        },
                    );
                });
                let _ = reply.send(result);
            }
            AdminCommand::MuteTrack {
                identity,
                track,
                muted,
                reply,
            } => {
                let result = self.member_by_identity(&identity).and_then(|m| {
                    self.set_muted(&m.id, &track, muted)?;
                    let member = self
                        .state
                        .participant(&m.id)
                        .ok_or(RouterError::ParticipantGone)?;
                    let published = member
                        .tracks
                        .iter()
                        .find(|t| t.id == track)
                        .ok_or_else(|| RouterError::UnknownTrack(track.to_string()))?;
                    Ok(self.track_view(published))
                });
                let _ = reply.send(result);
            }
            AdminCommand::SetPermissions {
                identity,
                permissions,
                reply,
            } => {
                let result = self.member_by_identity(&identity).and_then(|m| {
                    self.set_permissions(&m.id, permissions)?;
                    let view = self
                        .state
                        .participant(&m.id)
                        .ok_or(RouterError::ParticipantGone)?;
                    Ok(self.participant_view(&view))
                });
                let _ = reply.send(result);
            }
            AdminCommand::Update {
                metadata,
                max_participants,
                reply,
            } => {
                if let Some(max) = max_participants {
                    self.state.set_max_participants(max);
                }
                if let Some(metadata) = metadata {
                    let effects = self.state.set_metadata(metadata);
                    self.apply(effects);
                }
                let _ = reply.send(self.info());
            }
            AdminCommand::Stats(reply) => {
                let _ = reply.send(self.stats());
            }
            AdminCommand::Delete(reply) => {
                let ids: Vec<ParticipantId> = self
                    .state
                    .participants()
                    .into_iter()
                    .map(|m| m.id)
                    .collect();
                for id in ids {
                    self.evict(
                        &id,
                        ServerMessage::Disconnected {
                            reason: DisconnectReason::RoomDeleted,
                        },
                    );
                }
                let _ = reply.send(());
            }
        }
    }

    fn join(
        &mut self,
        id: ParticipantId,
        joiner: Joiner,
        signal: SignalTx,
    ) -> Result<ParticipantTx> {
        // One session per identity: the newest wins, the older is told why and closed.
        if let Some(previous) = self.state.by_identity(&joiner.identity).cloned() {
            tracing::info!(participant = %previous, identity = %joiner.identity, "replaced by a new session");
            self.evict(
                &previous,
                ServerMessage::error(
                    ErrorCode::DuplicateIdentity,
                    "another session joined with this identity",
                ),
            );
        }
        let now = unix_ms() / 1000;
        let permissions = joiner.permissions;
        let local = joiner.local;
        let info = ParticipantInfo {
            id: id.to_string(),
            identity: joiner.identity.clone(),
            name: joiner.name.clone(),
        };
        let (present, effects) = self.state.join(id.clone(), joiner, now)?;
        let connection = Arc::new(ConnectionStates::default());
        let can_publish = Arc::new(AtomicBool::new(permissions.can_publish));
        let can_publish_data = Arc::new(AtomicBool::new(permissions.can_publish_data));
        let actor = participant::spawn(ParticipantContext {
            id: id.clone(),
            identity: Arc::from(info.identity.as_str()),
            data: self.data.clone(),
            can_publish_data: can_publish_data.clone(),
            engine: self.shared.engine.clone(),
            room: self.tx.clone(),
            signal: signal.clone(),
            stats: self.shared.stats.clone(),
            speakers: self.speakers.clone(),
            connection: connection.clone(),
            can_publish: can_publish.clone(),
            local,
        });
        // `joined` goes out before anything the effects send to the newcomer.
        let _ = signal.try_send(ServerMessage::Joined {
            room: self.state.id().to_string(),
            room_metadata: self.state.metadata().to_owned(),
            participant: info.clone(),
            participants: present,
            ice_servers: self.shared.config.ice_servers.clone(),
        });
        // `active_speakers` is sent on changes only, so a newcomer is told the current list
        // (an unchanged speaker would otherwise stay unknown to it until the list changes).
        let speaking = self.current_speakers();
        if !speaking.is_empty() {
            let _ = signal.try_send(ServerMessage::ActiveSpeakers { speakers: speaking });
        }
        self.members.insert(
            id.clone(),
            Member {
                signal,
                actor: actor.clone(),
                connection,
                can_publish,
                can_publish_data,
            },
        );
        tracing::info!(participant = %id, identity = %info.identity, count = self.state.participant_count(), "joined");
        self.emit(
            EventKind::ParticipantJoined,
            Some(event_participant(&info)),
            None,
        );
        self.apply(effects);
        Ok(actor)
    }

    /// Ends `id`'s session from the server side: `last_word` is the final message its
    /// client gets before the socket closes.
    fn evict(&mut self, id: &ParticipantId, last_word: ServerMessage) {
        if let Some(member) = self.members.get(id) {
            let _ = member.signal.try_send(last_word);
        }
        self.leave(id);
    }

    fn leave(&mut self, id: &ParticipantId) {
        let Some(member) = self.members.remove(id) else {
            return;
        };
        member.actor.send(ParticipantCommand::Close);
        self.data.remove(id);
        self.speakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        let who = self.state.participant(id);
        if let Some(who) = &who {
            for track in &who.tracks {
                self.emit(
                    EventKind::TrackUnpublished,
                    Some(view_participant(who)),
                    Some(track.info()),
                );
            }
        }
        self.uptracks.retain(|_, u| &u.publisher != id);
        self.rates.retain(|t, _| self.uptracks.contains_key(t));
        let effects = self.state.leave(id);
        self.apply(effects);
        if let Some(who) = &who {
            self.emit(
                EventKind::ParticipantLeft,
                Some(view_participant(who)),
                None,
            );
        }
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
        let info = track.info();
        match self.state.publish(&id, track) {
            Ok(effects) => {
                self.rates.insert(uptrack.id.clone(), TrackRates::default());
                self.uptracks.insert(uptrack.id.clone(), uptrack);
                self.apply(effects);
                let who = self.state.participant(&id);
                self.emit(
                    EventKind::TrackPublished,
                    who.as_ref().map(view_participant),
                    Some(info),
                );
            }
            Err(e) => {
                tracing::info!(error = %e, "track refused");
                uptrack.stop();
                self.send(&id, ServerMessage::error(e.code(), e.client_message()));
            }
        }
    }

    fn unpublish(&mut self, id: &ParticipantId, track: &TrackId) {
        let who = self.state.participant(id);
        let info = who
            .as_ref()
            .and_then(|w| w.tracks.iter().find(|t| &t.id == track))
            .map(PublishedTrack::info);
        if let Some(uptrack) = self.uptracks.remove(track) {
            uptrack.stop();
        }
        self.rates.remove(track);
        let effects = self.state.unpublish(id, track);
        self.apply(effects);
        if let (Some(who), Some(info)) = (who, info) {
            self.emit(
                EventKind::TrackUnpublished,
                Some(view_participant(&who)),
                Some(info),
            );
        }
    }

    fn set_muted(&mut self, id: &ParticipantId, track: &TrackId, muted: bool) -> Result<()> {
        let effects = self.state.set_muted(id, track, muted)?;
        if let Some(uptrack) = self.uptracks.get(track) {
            uptrack.set_muted(muted);
        }
        self.apply(effects);
        Ok(())
    }

    fn set_permissions(&mut self, id: &ParticipantId, permissions: Permissions) -> Result<()> {
        let revoked: Vec<TrackId> = if permissions.can_publish {
            Vec::new()
        } else {
            self.state.tracks_of(id).map(|t| t.id.clone()).collect()
        };
        if let Some(member) = self.members.get(id) {
            member
                .can_publish
                .store(permissions.can_publish, Ordering::Relaxed);
            member
                .can_publish_data
                .store(permissions.can_publish_data, Ordering::Relaxed);
        }
        // Unpublish one by one (events, stopping the readers), then the rest of the change.
        for track in &revoked {
            self.unpublish(id, track);
        }
        let effects = self.state.set_permissions(id, permissions)?;
        self.apply(effects);
        Ok(())
    }

    fn member_by_identity(&self, identity: &str) -> Result<MemberView> {
        self.state
            .by_identity(identity)
            .and_then(|id| self.state.participant(id))
            .ok_or_else(|| RouterError::UnknownParticipant(identity.to_owned()))
    }

    fn info(&self) -> RoomInfo {
        RoomInfo {
            name: self.state.id().to_string(),
            created_at: self.created_at,
            max_participants: self.state.max_participants(),
            empty_timeout_secs: self.empty_timeout.as_secs(),
            metadata: self.state.metadata().to_owned(),
            num_participants: self.state.participant_count(),
            num_tracks: self.state.track_count(),
        }
    }

    fn track_view(&self, track: &PublishedTrack) -> TrackView {
        let uptrack = self.uptracks.get(&track.id);
        let rates = self.rates.get(&track.id);
        let layer_bps = |i: usize| rates.map_or(0, |r| r.layers[i].bps());
        let snapshot = rates.and_then(|r| r.snapshot);
        let layers = track
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let layer = layer_for_rid(&l.rid).map_or(i, usize::from);
                let status = snapshot.map(|s| (s.status[layer], s.subscribers[layer]));
                layer_view(l, layer_bps(layer), status)
            })
            .collect();
        TrackView {
            id: track.id.to_string(),
            kind: track.kind,
            source: track.source,
            muted: track.muted,
            mime_type: uptrack.map_or_else(String::new, |u| u.codec.mime_type.clone()),
            layers,
            bitrate_in_bps: (0..MAX_LAYERS).map(layer_bps).sum(),
            bitrate_out_bps: rates.map_or(0, |r| r.sent.bps()),
            subscribers: uptrack.map_or(0, |u| u.subscriber_count()),
        }
    }

    fn participant_view(&self, member: &MemberView) -> ParticipantView {
        let connection = self.members.get(&member.id).map(|m| m.connection.clone());
        ParticipantView {
            id: member.id.to_string(),
            identity: member.identity.clone(),
            name: member.name.clone(),
            joined_at: member.joined_at,
            permissions: PermissionsView {
                can_publish: member.permissions.can_publish,
                can_subscribe: member.permissions.can_subscribe,
                can_publish_data: member.permissions.can_publish_data,
            },
            publisher_state: connection
                .as_ref()
                .map_or("closed", |c| c.publisher())
                .to_owned(),
            subscriber_state: connection
                .as_ref()
                .map_or("closed", |c| c.subscriber())
                .to_owned(),
            tracks: member.tracks.iter().map(|t| self.track_view(t)).collect(),
        }
    }

    fn stats(&self) -> RoomStats {
        let mut tracks = Vec::new();
        for member in self.state.participants() {
            for track in &member.tracks {
                let view = self.track_view(track);
                tracks.push(TrackStatsView {
                    participant_identity: member.identity.clone(),
                    track_id: view.id,
                    kind: view.kind,
                    bitrate_in_bps: view.bitrate_in_bps,
                    bitrate_out_bps: view.bitrate_out_bps,
                    subscribers: view.subscribers,
                });
            }
        }
        RoomStats {
            room: self.state.id().to_string(),
            bitrate_in_bps: tracks.iter().map(|t| t.bitrate_in_bps).sum(),
            bitrate_out_bps: tracks.iter().map(|t| t.bitrate_out_bps).sum(),
            tracks,
        }
    }

    fn sample_rates(&mut self) {
        let now = Instant::now().into_std();
        for (track, rates) in &mut self.rates {
            let Some(uptrack) = self.uptracks.get(track) else {
                continue;
            };
            for (layer, sampler) in rates.layers.iter_mut().enumerate() {
                sampler.sample(now, uptrack.traffic.received(layer));
            }
            rates.sent.sample(now, uptrack.traffic.sent());
            let snapshot = uptrack.layer_snapshot();
            rates.snapshot = Some(snapshot);
            for layer in uptrack.layers.iter().filter_map(|l| layer_for_rid(&l.rid)) {
                let state = snapshot.status[layer as usize].liveness;
                let gauge = &mut rates.gauges[layer as usize];
                if gauge.as_ref().map(LayerGuard::state) != Some(state) {
                    // The old state's count goes down as the new one's goes up.
                    *gauge = Some(self.shared.stats.layer_guard(layer as usize, state));
                }
            }
        }
    }

    fn emit(
        &self,
        event: EventKind,
        participant: Option<EventParticipant>,
        track: Option<switchyard_signal::TrackInfo>,
    ) {
        // No listener is fine: nobody asked for events.
        let _ = self.shared.events.send(RouterEvent {
            event,
            room: self.state.id().to_string(),
            participant,
            track,
            created_at_ms: unix_ms(),
        });
    }

    fn current_speakers(&self) -> Vec<ActiveSpeaker> {
        let detector = self.speakers.lock().unwrap_or_else(|e| e.into_inner());
        detector.current().iter().map(active_speaker).collect()
    }

    fn poll_speakers(&mut self) {
        let changed = self
            .speakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .poll(std::time::Instant::now());
        let Some(list) = changed else { return };
        let speakers: Vec<ActiveSpeaker> = list.iter().map(active_speaker).collect();
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
                        member
                            .actor
                            .send(ParticipantCommand::Subscribe(uptrack.clone()));
                    }
                }
                Effect::Unsubscribe { subscriber, track } => {
                    if let Some(member) = self.members.get(&subscriber) {
                        member.actor.send(ParticipantCommand::Unsubscribe(track));
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

fn active_speaker(speaker: &Speaker<ParticipantId>) -> ActiveSpeaker {
    ActiveSpeaker {
        participant_id: speaker.key.to_string(),
        level: speaker.level,
    }
}

fn event_participant(info: &ParticipantInfo) -> EventParticipant {
    EventParticipant {
        id: info.id.clone(),
        identity: info.identity.clone(),
        name: info.name.clone(),
    }
}

fn view_participant(view: &MemberView) -> EventParticipant {
    EventParticipant {
        id: view.id.to_string(),
        identity: view.identity.clone(),
        name: view.name.clone(),
    }
}
