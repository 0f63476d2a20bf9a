//! One participant's media: its publisher and subscriber peer connections, the tracks it
//! publishes (uptracks) and the tracks it receives (downtracks).
//!
//! One task per participant owns both connections, so the slow WebRTC operations
//! (applying SDP, gathering) of one participant never hold up its room or anyone else.
//! It never takes a lock across an await; everything it shares is behind channels.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use webrtc::ice_transport::ice_candidate::{RTCIceCandidate, RTCIceCandidateInit};
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtp_transceiver::rtp_sender::RTCRtpSender;
use webrtc::rtp_transceiver::rtp_transceiver_direction::RTCRtpTransceiverDirection;
use webrtc::rtp_transceiver::{RTCRtpTransceiver, RTCRtpTransceiverInit};
use webrtc::track::track_local::TrackLocal;
use webrtc::track::track_remote::TrackRemote;

use switchyard_signal::{
    ClientMessage, ErrorCode, IceCandidate, LayerInfo, PublishedTrackMeta, Quality, ServerMessage,
    Target, TrackKind, TrackSource,
};
use switchyard_stats::{Live, LiveGuard, MediaStats};

use super::datachannel::{
    accept_publisher_channels, advertise_max_message_size, open_subscriber_channels,
};
use super::downtrack::{DownTrack, DownTrackLocal, NackPolicy};
use super::egress::Egress;
use super::engine::RtcEngine;
use super::uptrack::{LayerWish, Speakers, UpTrack, UpTrackConfig};
use crate::data::{DataRelay, DataSender};
use crate::error::{Result, RouterError};
use crate::ice_policy::{sdp_ice_ufrag, CandidatePolicy};
use crate::ids::{ParticipantId, TrackId};
use crate::media::layers::layer_for_rid;
use crate::media::speaker::AUDIO_LEVEL_URI;
use crate::room::{RoomCommand, RoomTx};
use crate::SignalTx;

/// How long to wait for ICE gathering so the SDP carries the server's candidates (clients
/// that never trickle, such as aiortc, need them there). With the shared UDP port this
/// completes at once; the bound only guards against a stuck gatherer.
const GATHER_TIMEOUT: Duration = Duration::from_secs(2);

/// What the room tells a participant's task (never dropped: the room's own messages).
pub(crate) enum ParticipantCommand {
    Subscribe(Arc<UpTrack>),
    Unsubscribe(TrackId),
    Close,
}

/// Client messages queued for one participant's task before its session counts as
/// flooding it (the session closes then). A publish_offer takes milliseconds to apply;
/// meanwhile a client trickles a few candidates.
pub const CLIENT_QUEUE: usize = 256;

/// How a participant's task is reached: the room's commands, and its client's messages
/// (`publish_offer`, `subscribe_answer`, `candidate`, `update_subscription`, `mute`) in a
/// bounded queue of their own, so a client that floods can fill only its own.
#[derive(Clone)]
pub(crate) struct ParticipantTx {
    commands: mpsc::UnboundedSender<ParticipantCommand>,
    client: mpsc::Sender<ClientMessage>,
}

impl ParticipantTx {
    pub fn send(&self, command: ParticipantCommand) {
        // A closed task is a participant already gone: nothing left to tell it.
        let _ = self.commands.send(command);
    }

    /// Queues a client message; `false` when the queue is full (or the task is gone).
    pub fn try_send_client(&self, message: ClientMessage) -> bool {
        self.client.try_send(message).is_ok()
    }
}

enum PeerEvent {
    PublisherTrack(Arc<TrackRemote>),
    /// The publisher connection reached `connected`.
    PublisherConnected,
    /// A published track's readers stopped (by the track id of its msid).
    PublishedTrackEnded(String),
}

pub(crate) struct ParticipantContext {
    pub id: ParticipantId,
    pub identity: Arc<str>,
    /// The room's data relay: this participant sends into it and receives from it.
    pub data: Arc<DataRelay>,
    /// Whether data messages are relayed; the room flips it like `can_publish`.
    pub can_publish_data: Arc<AtomicBool>,
    pub engine: Arc<RtcEngine>,
    pub room: RoomTx,
    pub signal: SignalTx,
    pub stats: Arc<MediaStats>,
    pub speakers: Speakers,
    /// The peer connections' states, for the admin API.
    pub connection: Arc<ConnectionStates>,
    /// Whether `publish_offer` is allowed; the room flips it when an operator changes the
    /// participant's permissions.
    pub can_publish: Arc<AtomicBool>,
    /// The client connects from this host (loopback candidates are admitted).
    pub local: bool,
}

/// The latest state of each of a participant's two peer connections.
#[derive(Debug, Default)]
pub(crate) struct ConnectionStates {
    publisher: AtomicU8,
    subscriber: AtomicU8,
}

impl ConnectionStates {
    fn set(&self, target: Target, state: RTCPeerConnectionState) {
        let slot = match target {
            Target::Publisher => &self.publisher,
            Target::Subscriber => &self.subscriber,
        };
        slot.store(state as u8, Ordering::Relaxed);
    }

    pub fn publisher(&self) -> &'static str {
        state_name(self.publisher.load(Ordering::Relaxed))
    }

    pub fn subscriber(&self) -> &'static str {
        state_name(self.subscriber.load(Ordering::Relaxed))
    }
}

fn state_name(state: u8) -> &'static str {
    match RTCPeerConnectionState::from(state) {
        RTCPeerConnectionState::Connecting => "connecting",
        RTCPeerConnectionState::Connected => "connected",
        RTCPeerConnectionState::Disconnected => "disconnected",
        RTCPeerConnectionState::Failed => "failed",
        RTCPeerConnectionState::Closed => "closed",
        _ => "new",
    }
}

/// Starts the participant's task; it creates both peer connections before handling any
/// command, so commands sent right away are simply queued.
pub(crate) fn spawn(ctx: ParticipantContext) -> ParticipantTx {
    let (tx, rx) = mpsc::unbounded_channel();
    let (client_tx, client_rx) = mpsc::channel(CLIENT_QUEUE);
    let span = tracing::info_span!("participant", id = %ctx.id);
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            match Participant::new(ctx).await {
                Ok((participant, events)) => participant.run(rx, client_rx, events).await,
                Err((e, room, id)) => {
                    tracing::error!(error = %e, "could not create peer connections");
                    let _ = room.send(RoomCommand::Leave { id });
                }
            }
        },
        span,
    ));
    ParticipantTx {
        commands: tx,
        client: client_tx,
    }
}

struct Participant {
    ctx: ParticipantContext,
    /// Made at the first `publish_offer`: a participant that only watches never pays for
    /// a second connection (its ICE agent, DTLS and SRTP state, and tasks).
    publisher: Option<Arc<RTCPeerConnection>>,
    subscriber: Arc<RTCPeerConnection>,
    /// How forwarded media leaves for the subscriber connection, and the task that sets
    /// it up and sends its Sender Reports.
    egress: Arc<Egress>,
    egress_task: JoinHandle<()>,
    /// Where the publisher connection reports its tracks, once it exists.
    events: mpsc::UnboundedSender<PeerEvent>,
    /// This participant as a sender of data messages (its channels' readers hold a `Weak`).
    data_sender: Arc<DataSender>,
    publisher_sdp_sent: Arc<AtomicBool>,
    subscriber_sdp_sent: Arc<AtomicBool>,
    /// Sources the client declared in its latest `publish_offer`, by track id.
    declared_sources: HashMap<String, TrackSource>,
    /// A re-offer that came while the publisher connection had not connected yet: applied
    /// when it does. Only the latest is kept (the client wants the answer to that one).
    pending_publish_offer: Option<(String, Vec<PublishedTrackMeta>)>,
    /// What this participant publishes, by the track id of its msid (simulcast layers
    /// arrive as separate remote tracks of one id).
    published: HashMap<String, Arc<UpTrack>>,
    downtracks: HashMap<TrackId, DownTrack>,
    /// A `subscribe_offer` is out and its answer has not come back.
    awaiting_answer: bool,
    /// The set of downtracks changed since the last offer.
    needs_offer: bool,
    /// Subscribed since the last offer was made: not in any offer yet.
    activate_after_next_offer: Vec<TrackId>,
    /// In the offer that is out: forwarding starts once its answer binds them.
    activate_after_answer: Vec<TrackId>,
    /// Transceivers whose track was unsubscribed, waiting for an offer that says so.
    freed_after_next_offer: Vec<Arc<RTCRtpTransceiver>>,
    /// In the offer that is out as inactive: reusable once it is answered.
    freed_after_answer: Vec<Arc<RTCRtpTransceiver>>,
    /// Negotiated inactive: the next subscription of their kind reuses one rather than
    /// adding an m-section (a subscriber connection would otherwise grow by one section
    /// per track ever received, and its answers past the signaling message limit).
    free_transceivers: Vec<Arc<RTCRtpTransceiver>>,
    /// Client candidates that arrived before the description they belong to (admitted by
    /// the connection's policy, so bounded like the rest).
    early_candidates: HashMap<Target, Vec<RTCIceCandidateInit>>,
    /// Which remote candidates each connection takes, and its ICE restarts.
    candidate_policies: HashMap<Target, CandidatePolicy>,
    _live: LiveGuard,
}

impl Participant {
    #[allow(clippy::type_complexity)]
    async fn new(
        ctx: ParticipantContext,
    ) -> std::result::Result<
        (Participant, mpsc::UnboundedReceiver<PeerEvent>),
        (RouterError, RoomTx, ParticipantId),
    > {
        let subscriber = match ctx.engine.new_peer_connection(Target::Subscriber).await {
            Ok(pc) => pc,
            Err(e) => return Err((e, ctx.room.clone(), ctx.id.clone())),
        };
        let egress = Egress::new(
            ctx.engine.media_socket(),
            ctx.engine.settings().nack_max_resends_per_second,
        );
        let egress_task = tokio::spawn(
            egress
                .clone()
                .run(Arc::downgrade(&subscriber), subscriber.sctp().transport()),
        );
        // The server's data channels exist before the first offer, which therefore carries
        // the `m=application` section; messages for this participant queue until they open.
        let recipient = ctx.data.add(ctx.id.clone(), ctx.identity.clone());
        if let Err(e) = open_subscriber_channels(
            &subscriber,
            recipient,
            ctx.signal.clone(),
            ctx.stats.clone(),
        )
        .await
        {
            ctx.data.remove(&ctx.id);
            egress_task.abort();
            let _ = subscriber.close().await;
            return Err((e, ctx.room.clone(), ctx.id.clone()));
        }
        let data_sender = Arc::new(DataSender::new(
            ctx.id.clone(),
            ctx.identity.clone(),
            ctx.data.clone(),
            ctx.can_publish_data.clone(),
            ctx.signal.clone(),
        ));
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let publisher_sdp_sent = Arc::new(AtomicBool::new(false));
        let subscriber_sdp_sent = Arc::new(AtomicBool::new(false));
        watch_connection(
            &subscriber,
            Target::Subscriber,
            &ctx.id,
            &ctx.signal,
            subscriber_sdp_sent.clone(),
            ctx.connection.clone(),
            None,
        );
        Ok((
            Participant {
                publisher: None,
                subscriber,
                egress,
                egress_task,
                events: events_tx,
                data_sender,
                publisher_sdp_sent,
                subscriber_sdp_sent,
                declared_sources: HashMap::new(),
                pending_publish_offer: None,
                published: HashMap::new(),
                downtracks: HashMap::new(),
                awaiting_answer: false,
                // The first offer goes out at once: the subscriber connection (its data
                // channels, ICE and DTLS) is up before the first track is forwarded.
                needs_offer: true,
                activate_after_next_offer: Vec::new(),
                activate_after_answer: Vec::new(),
                freed_after_next_offer: Vec::new(),
                freed_after_answer: Vec::new(),
                free_transceivers: Vec::new(),
                early_candidates: HashMap::new(),
                candidate_policies: [Target::Publisher, Target::Subscriber]
                    .into_iter()
                    .map(|t| {
                        (
                            t,
                            CandidatePolicy::new(ctx.engine.candidate_limits(ctx.local)),
                        )
                    })
                    .collect(),
                _live: ctx.stats.live_guard(Live::Participants),
                ctx,
            },
            events_rx,
        ))
    }

    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<ParticipantCommand>,
        mut client: mpsc::Receiver<ClientMessage>,
        mut events: mpsc::UnboundedReceiver<PeerEvent>,
    ) {
        loop {
            tokio::select! {
                // The room's word first: a Close must not wait behind a client's backlog.
                biased;
                command = commands.recv() => match command {
                    None | Some(ParticipantCommand::Close) => break,
                    Some(command) => self.handle(command).await,
                },
                Some(message) = client.recv() => self.on_client_message(message).await,
                Some(event) = events.recv() => match event {
                    PeerEvent::PublisherTrack(track) => self.on_publisher_track(track).await,
                    PeerEvent::PublisherConnected => {
                        if let Some((sdp, tracks)) = self.pending_publish_offer.take() {
                            if let Err(e) = self.on_publish_offer(sdp, tracks).await {
                                self.refuse(e);
                            }
                        }
                    }
                    PeerEvent::PublishedTrackEnded(raw_id) => {
                        // The track under this id now may be a newer one, still live.
                        if self.published.get(&raw_id).is_some_and(|t| t.is_ended()) {
                            self.published.remove(&raw_id);
                        }
                    }
                },
            }
            if let Err(e) = self.negotiate_subscriber().await {
                tracing::warn!(error = %e, "subscriber negotiation failed");
                self.send_error(
                    e.code(),
                    format!("subscriber negotiation failed: {}", e.client_message()),
                );
            }
        }
        self.close().await;
    }

    fn send(&self, message: ServerMessage) {
        // A full or closed signaling queue means the session is gone or hopelessly
        // behind; the session notices and ends the participant.
        let _ = self.ctx.signal.try_send(message);
    }

    fn send_error(&self, code: ErrorCode, message: String) {
        self.send(ServerMessage::error(code, message));
    }

    async fn handle(&mut self, command: ParticipantCommand) {
        let result = match command {
            ParticipantCommand::Subscribe(uptrack) => self.subscribe(uptrack).await,
            ParticipantCommand::Unsubscribe(track) => self.unsubscribe(&track).await,
            ParticipantCommand::Close => Ok(()),
        };
        if let Err(e) = result {
            self.refuse(e);
        }
    }

    async fn on_client_message(&mut self, message: ClientMessage) {
        let result = match message {
            ClientMessage::PublishOffer { sdp, tracks } => self.on_publish_offer(sdp, tracks).await,
            ClientMessage::SubscribeAnswer { sdp } => self.on_subscribe_answer(sdp).await,
            ClientMessage::Candidate { target, candidate } => {
                self.on_candidate(target, candidate).await
            }
            ClientMessage::UpdateSubscription {
                track_id,
                quality,
                width,
                height,
            } => self.update_subscription(track_id, quality, width.zip(height)),
            ClientMessage::Mute { track_id, muted } => {
                let _ = self.ctx.room.send(RoomCommand::Mute {
                    id: self.ctx.id.clone(),
                    track: TrackId::new(track_id),
                    muted,
                });
                Ok(())
            }
            other => {
                tracing::warn!(message = other.type_name(), "not for the participant task");
                Ok(())
            }
        };
        if let Err(e) = result {
            self.refuse(e);
        }
    }

    /// Tells the client why its request failed (the safe text), and the log the whole story.
    fn refuse(&self, e: RouterError) {
        tracing::info!(error = %e, "request refused");
        self.send_error(e.code(), e.client_message());
    }

    async fn on_publish_offer(
        &mut self,
        sdp: String,
        tracks: Vec<PublishedTrackMeta>,
    ) -> Result<()> {
        if !self.ctx.can_publish.load(Ordering::Relaxed) {
            return Err(RouterError::Forbidden("publishing"));
        }
        // An ICE restart too soon after the last is refused now, whether or not it would
        // have to wait below.
        if let Some(ufrag) = sdp_ice_ufrag(&sdp) {
            self.policy(Target::Publisher)
                .check_description(ufrag, Instant::now())
                .map_err(|e| RouterError::RateLimited(e.to_string()))?;
        }
        // webrtc-rs applies a re-offer only after the first one's ICE and DTLS are up, and
        // until then queues it, with a copy of the whole description, without bound. A
        // re-offer before that waits here instead, one at a time: the newest replaces it.
        if let Some(publisher) = &self.publisher {
            if publisher.remote_description().await.is_some()
                && publisher.connection_state() != RTCPeerConnectionState::Connected
            {
                tracing::debug!("publish_offer deferred until the publisher connection is up");
                self.pending_publish_offer = Some((sdp, tracks));
                return Ok(());
            }
        }
        let sections = media_sections(&sdp);
        let max_sections = self.ctx.engine.settings().max_publish_sections;
        if sections > max_sections {
            return Err(RouterError::InvalidSdp(format!(
                "{sections} media sections; at most {max_sections} are accepted"
            )));
        }
        // Only the latest offer's declarations matter: they are read when its tracks
        // arrive, and published tracks keep the source they were published with.
        self.declared_sources = tracks
            .into_iter()
            .map(|meta| (meta.track_id, meta.source))
            .collect();
        let sdp = self.admit_description(Target::Publisher, &sdp)?;
        let offer = RTCSessionDescription::offer(sdp).map_err(RouterError::SdpNotApplied)?;
        let publisher = self.publisher().await?;
        publisher
            .set_remote_description(offer)
            .await
            .map_err(RouterError::SdpNotApplied)?;
        self.flush_early_candidates(Target::Publisher).await;
        let answer = publisher.create_answer(None).await?;
        let sdp = set_local_and_gather(&publisher, answer).await?;
        let sdp = advertise_max_message_size(sdp, self.ctx.data.limits().max_message_bytes);
        self.publisher_sdp_sent.store(true, Ordering::Relaxed);
        self.send(ServerMessage::PublishAnswer { sdp });
        Ok(())
    }

    /// The publisher connection, made on first use.
    async fn publisher(&mut self) -> Result<Arc<RTCPeerConnection>> {
        if let Some(pc) = &self.publisher {
            return Ok(pc.clone());
        }
        let pc = self
            .ctx
            .engine
            .new_peer_connection(Target::Publisher)
            .await?;
        let events = self.events.clone();
        // Handlers capture channel senders and ids only, never a connection's Arc: webrtc-rs
        // keeps handlers alive after close, so an Arc here would leak the connection.
        pc.on_track(Box::new(move |track, _receiver, _transceiver| {
            let _ = events.send(PeerEvent::PublisherTrack(track));
            Box::pin(async {})
        }));
        accept_publisher_channels(&pc, Arc::downgrade(&self.data_sender));
        watch_connection(
            &pc,
            Target::Publisher,
            &self.ctx.id,
            &self.ctx.signal,
            self.publisher_sdp_sent.clone(),
            self.ctx.connection.clone(),
            Some(self.events.clone()),
        );
        self.publisher = Some(pc.clone());
        Ok(pc)
    }

    async fn on_subscribe_answer(&mut self, sdp: String) -> Result<()> {
        if !self.awaiting_answer {
            return Err(RouterError::UnexpectedMessage(
                "subscribe_answer",
                "no subscribe_offer is waiting for an answer",
            ));
        }
        let sdp = self.admit_description(Target::Subscriber, &sdp)?;
        let answer = RTCSessionDescription::answer(sdp).map_err(RouterError::SdpNotApplied)?;
        // On failure the offer stays pending, so the client can send a corrected answer.
        self.subscriber
            .set_remote_description(answer)
            .await
            .map_err(RouterError::SdpNotApplied)?;
        self.awaiting_answer = false;
        self.free_transceivers.append(&mut self.freed_after_answer);
        self.flush_early_candidates(Target::Subscriber).await;
        // The senders are bound now: what is forwarded from here on reaches the subscriber.
        for track in std::mem::take(&mut self.activate_after_answer) {
            if let Some(downtrack) = self.downtracks.get_mut(&track) {
                downtrack.activate(&self.ctx.id);
            }
        }
        Ok(())
    }

    /// The client's description for `target` as it will be applied: an ICE restart in it
    /// is refused if too soon after the last, and only the candidates the connection's
    /// policy admits are kept (the client hears once if it sent too many).
    fn admit_description(&mut self, target: Target, sdp: &str) -> Result<String> {
        let policy = self.policy(target);
        if let Some(ufrag) = sdp_ice_ufrag(sdp) {
            let ufrag = ufrag.to_owned();
            let restarted = policy
                .on_description(&ufrag, Instant::now())
                .map_err(|e| RouterError::RateLimited(e.to_string()))?;
            if restarted {
                tracing::info!(?target, "ICE restart");
            }
        }
        let (sdp, refused) = policy.filter_sdp(sdp);
        for e in refused {
            self.send_error(
                ErrorCode::InvalidCandidate,
                format!("candidate ignored: {e}"),
            );
        }
        Ok(sdp)
    }

    fn policy(&mut self, target: Target) -> &mut CandidatePolicy {
        self.candidate_policies
            .get_mut(&target)
            .expect("a policy per connection, made with the participant")
    }

    async fn on_candidate(&mut self, target: Target, candidate: IceCandidate) -> Result<()> {
        if candidate.candidate.is_empty() {
            // End of candidates: nothing to add.
            return Ok(());
        }
        let policy = self.policy(target);
        match policy.admit(&candidate.candidate) {
            Ok(true) => {}
            // Already admitted: adding it again gains nothing.
            Ok(false) => return Ok(()),
            Err(e) => {
                return match policy.should_report(&e) {
                    true => Err(RouterError::InvalidCandidate(e.to_string())),
                    false => Ok(()),
                }
            }
        }
        let init = RTCIceCandidateInit {
            candidate: candidate.candidate,
            sdp_mid: candidate.sdp_mid,
            sdp_mline_index: candidate.sdp_mline_index,
            username_fragment: candidate.username_fragment,
        };
        let pc = match self.pc(target) {
            Some(pc) if pc.remote_description().await.is_some() => pc,
            _ => {
                self.early_candidates.entry(target).or_default().push(init);
                return Ok(());
            }
        };
        pc.add_ice_candidate(init)
            .await
            .map_err(RouterError::CandidateNotApplied)
    }

    async fn flush_early_candidates(&mut self, target: Target) {
        let Some(candidates) = self.early_candidates.remove(&target) else {
            return;
        };
        let Some(pc) = self.pc(target) else { return };
        for init in candidates {
            if let Err(e) = pc.add_ice_candidate(init).await {
                self.refuse(RouterError::CandidateNotApplied(e));
            }
        }
    }

    fn pc(&self, target: Target) -> Option<Arc<RTCPeerConnection>> {
        match target {
            Target::Publisher => self.publisher.clone(),
            Target::Subscriber => Some(self.subscriber.clone()),
        }
    }

    async fn on_publisher_track(&mut self, remote: Arc<TrackRemote>) {
        let mut raw_id = remote.id();
        if raw_id.is_empty() {
            raw_id = format!("{}-{}", remote.kind(), remote.ssrc());
        }
        let Some(layer) = layer_for_rid(remote.rid()) else {
            tracing::warn!(track = %raw_id, rid = remote.rid(), "unknown simulcast rid; ignored");
            return;
        };
        let audio_level_ext = remote
            .params()
            .header_extensions
            .iter()
            .find(|e| e.uri == AUDIO_LEVEL_URI)
            .map(|e| e.id as u8);
        let room = self.ctx.room.clone();
        let publisher = self.ctx.id.clone();
        let events = self.events.clone();
        let ended_id = raw_id.clone();
        let on_end = move |uptrack| {
            let _ = room.send(RoomCommand::TrackEnded {
                id: publisher,
                uptrack,
            });
            let _ = events.send(PeerEvent::PublishedTrackEnded(ended_id));
        };
        // A track id used again after its track ended is a new track, never a layer of
        // the dead one.
        if let Some(uptrack) = self.published.get(&raw_id).filter(|t| !t.is_ended()) {
            if !uptrack.reads_layer(layer) {
                tracing::info!(track = %raw_id, layer, "simulcast layer arrived");
                uptrack.add_layer(remote, layer, audio_level_ext, on_end);
                return;
            }
            // A layer it already reads, arriving again: the publisher stopped this
            // transceiver's track and sends a new one in it (a screen shared again reuses
            // its m-section and track id). webrtc-rs has stopped the old receiver; end the
            // old track now, so the room unpublishes it before it hears of the new one.
            tracing::info!(track = %raw_id, layer, "track replaced by its publisher");
            uptrack.stop();
            if uptrack.mark_ended() {
                let _ = self.ctx.room.send(RoomCommand::TrackEnded {
                    id: self.ctx.id.clone(),
                    uptrack: uptrack.clone(),
                });
            }
        }
        let kind = match remote.kind() {
            webrtc::rtp_transceiver::rtp_codec::RTPCodecType::Audio => TrackKind::Audio,
            _ => TrackKind::Video,
        };
        let source = self
            .declared_sources
            .get(&raw_id)
            .copied()
            .unwrap_or_else(|| TrackSource::default_for(kind));
        // Tracks come from the publisher connection, so it exists.
        let Some(publisher) = self.publisher.clone() else {
            return;
        };
        let layers = match publisher.remote_description().await {
            Some(offer) => simulcast_layers(&offer.sdp, &raw_id),
            None => Vec::new(),
        };
        let id = TrackId::new(&raw_id);
        tracing::info!(track = %id, ?kind, layers = layers.len(), codec = %remote.codec().capability.mime_type, "publishing");
        let settings = self.ctx.engine.settings();
        let uptrack = UpTrack::new(
            id,
            self.ctx.id.clone(),
            &remote,
            layers,
            Arc::downgrade(&publisher),
            UpTrackConfig {
                cache_packets: settings.nack_buffer_packets as usize,
                cache_max_age: settings.nack_buffer_max_age,
                send_history: settings.resend_history_packets,
                keyframe_interval: settings.keyframe_request_interval,
                speakers: Some(self.ctx.speakers.clone()),
                stats: self.ctx.stats.clone(),
                socket: self.ctx.engine.media_socket(),
            },
        );
        uptrack.add_layer(remote, layer, audio_level_ext, on_end);
        self.published.insert(raw_id, uptrack.clone());
        let _ = self.ctx.room.send(RoomCommand::TrackPublished {
            id: self.ctx.id.clone(),
            uptrack,
            source,
        });
    }

    fn update_subscription(
        &mut self,
        track_id: String,
        quality: Option<Quality>,
        size: Option<(u32, u32)>,
    ) -> Result<()> {
        let downtrack = self
            .downtracks
            .get_mut(&TrackId::new(&track_id))
            .ok_or(RouterError::UnknownTrack(track_id))?;
        let wish = match (quality, size) {
            (Some(quality), _) => LayerWish::Quality(quality),
            (None, Some((width, height))) => LayerWish::TileSize { width, height },
            (None, None) => return Ok(()),
        };
        downtrack.update(&self.ctx.id, wish);
        Ok(())
    }

    async fn subscribe(&mut self, uptrack: Arc<UpTrack>) -> Result<()> {
        if self.downtracks.contains_key(&uptrack.id) {
            return Ok(());
        }
        let settings = self.ctx.engine.settings();
        // msid = "<publisher participant id> <track id>": how clients map what they receive.
        let local = Arc::new(DownTrackLocal::new(
            uptrack.codec.clone(),
            uptrack.id.to_string(),
            uptrack.publisher.to_string(),
        ));
        let reusable = self
            .free_transceivers
            .iter()
            .position(|t| t.kind() == local.kind());
        let sender = match reusable {
            Some(index) => {
                // Its old sender was stopped with the old track; a fresh one sends the new
                // track under a new SSRC and msid in the same m-section.
                let transceiver = self.free_transceivers.swap_remove(index);
                let sender = self
                    .ctx
                    .engine
                    .new_subscriber_sender(local.clone(), self.subscriber.sctp().transport())
                    .await;
                transceiver
                    .set_sender_track(sender.clone(), Some(local.clone()))
                    .await?;
                sender
            }
            None => {
                let transceiver = self
                    .subscriber
                    .add_transceiver_from_track(
                        local.clone(),
                        Some(RTCRtpTransceiverInit {
                            direction: RTCRtpTransceiverDirection::Sendonly,
                            send_encodings: vec![],
                        }),
                    )
                    .await?;
                transceiver.sender().await
            }
        };
        let downtrack = DownTrack::start(
            uptrack.clone(),
            self.ctx.id.clone(),
            local,
            sender,
            self.egress.clone(),
            self.ctx.stats.clone(),
            NackPolicy {
                max_per_request: settings.nack_max_packets_per_request,
                resend_interval: settings.nack_resend_interval,
            },
        );
        self.activate_after_next_offer.push(uptrack.id.clone());
        self.downtracks.insert(uptrack.id.clone(), downtrack);
        self.needs_offer = true;
        Ok(())
    }

    async fn unsubscribe(&mut self, track: &TrackId) -> Result<()> {
        let Some(downtrack) = self.downtracks.remove(track) else {
            return Ok(());
        };
        self.activate_after_next_offer.retain(|t| t != track);
        self.activate_after_answer.retain(|t| t != track);
        let sender = downtrack.sender.clone();
        downtrack.stop(&self.ctx.id);
        self.subscriber.remove_track(&sender).await?;
        if let Some(transceiver) = self.transceiver_of(&sender).await {
            self.freed_after_next_offer.push(transceiver);
        }
        self.needs_offer = true;
        Ok(())
    }

    async fn transceiver_of(&self, sender: &Arc<RTCRtpSender>) -> Option<Arc<RTCRtpTransceiver>> {
        for transceiver in self.subscriber.get_transceivers().await {
            if Arc::ptr_eq(&transceiver.sender().await, sender) {
                return Some(transceiver);
            }
        }
        None
    }

    /// Offers the subscriber connection's new shape, one offer at a time: changes made
    /// while an offer is out go into the next one, after the answer.
    async fn negotiate_subscriber(&mut self) -> Result<()> {
        if self.awaiting_answer || !self.needs_offer {
            return Ok(());
        }
        self.needs_offer = false;
        let offer = self.subscriber.create_offer(None).await?;
        let sdp = set_local_and_gather(&self.subscriber, offer).await?;
        let sdp = advertise_max_message_size(sdp, self.ctx.data.limits().max_message_bytes);
        self.subscriber_sdp_sent.store(true, Ordering::Relaxed);
        self.awaiting_answer = true;
        // Only tracks in this offer get bound by its answer; later ones wait for theirs.
        self.activate_after_answer
            .append(&mut self.activate_after_next_offer);
        self.freed_after_answer
            .append(&mut self.freed_after_next_offer);
        self.send(ServerMessage::SubscribeOffer { sdp });
        Ok(())
    }

    async fn close(mut self) {
        self.ctx.data.remove(&self.ctx.id);
        for (_, downtrack) in self.downtracks.drain() {
            downtrack.stop(&self.ctx.id);
        }
        self.egress_task.abort();
        for pc in self.publisher.iter().chain([&self.subscriber]) {
            if let Err(e) = pc.close().await {
                tracing::debug!(error = %e, "closing peer connection");
            }
        }
        tracing::info!("participant closed");
    }
}

/// The audio and video sections of a description (not its data channel's).
fn media_sections(sdp: &str) -> usize {
    sdp.lines()
        .filter(|l| l.starts_with("m=audio") || l.starts_with("m=video"))
        .count()
}

/// The simulcast layers the publisher's offer declares for the track whose msid track id is
/// `track_id`: its `a=rid:<rid> send` lines, lowest first.
fn simulcast_layers(sdp: &str, track_id: &str) -> Vec<LayerInfo> {
    let mut layers = Vec::new();
    for section in sdp.split("\nm=").skip(1) {
        let lines = || section.lines().map(str::trim);
        let ours = lines().any(|l| {
            l.strip_prefix("a=msid:")
                .and_then(|m| m.split_whitespace().nth(1))
                .is_some_and(|t| t == track_id)
        });
        if !ours {
            continue;
        }
        for rid in lines().filter_map(|l| l.strip_prefix("a=rid:")) {
            let mut parts = rid.split_whitespace();
            let (Some(rid), Some("send")) = (parts.next(), parts.next()) else {
                continue;
            };
            if let Some(layer) = layer_for_rid(rid) {
                let quality = [Quality::Low, Quality::Medium, Quality::High][layer as usize];
                layers.push((
                    layer,
                    LayerInfo {
                        quality,
                        rid: rid.to_owned(),
                    },
                ));
            }
        }
    }
    layers.sort_by_key(|(layer, _)| *layer);
    layers.into_iter().map(|(_, info)| info).collect()
}

async fn set_local_and_gather(
    pc: &RTCPeerConnection,
    description: RTCSessionDescription,
) -> Result<String> {
    let mut gathered = pc.gathering_complete_promise().await;
    pc.set_local_description(description).await?;
    let _ = tokio::time::timeout(GATHER_TIMEOUT, gathered.recv()).await;
    let local = pc
        .local_description()
        .await
        .ok_or(RouterError::UnexpectedMessage(
            "sdp",
            "no local description after setting it",
        ))?;
    Ok(local.sdp)
}

/// Logs state changes and trickles candidates found after the SDP went out (the SDP itself
/// carries every candidate gathered before).
fn watch_connection(
    pc: &RTCPeerConnection,
    target: Target,
    id: &ParticipantId,
    signal: &SignalTx,
    sdp_sent: Arc<AtomicBool>,
    states: Arc<ConnectionStates>,
    connected: Option<mpsc::UnboundedSender<PeerEvent>>,
) {
    let ice_id = id.clone();
    pc.on_ice_connection_state_change(Box::new(move |state| {
        tracing::debug!(participant = %ice_id, ?target, %state, "ICE connection state");
        Box::pin(async {})
    }));
    let id = id.clone();
    pc.on_peer_connection_state_change(Box::new(move |state: RTCPeerConnectionState| {
        tracing::info!(participant = %id, ?target, %state, "peer connection state");
        states.set(target, state);
        if let (Some(events), RTCPeerConnectionState::Connected) = (&connected, state) {
            let _ = events.send(PeerEvent::PublisherConnected);
        }
        Box::pin(async {})
    }));
    let signal = signal.clone();
    pc.on_ice_candidate(Box::new(move |candidate: Option<RTCIceCandidate>| {
        if let (Some(candidate), true) = (candidate, sdp_sent.load(Ordering::Relaxed)) {
            if let Ok(init) = candidate.to_json() {
                let _ = signal.try_send(ServerMessage::Candidate {
                    target,
                    candidate: IceCandidate {
                        candidate: init.candidate,
                        sdp_mid: None,
                        sdp_mline_index: Some(0),
                        username_fragment: None,
                    },
                });
            }
        }
        Box::pin(async {})
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulcast_layers_from_an_offer() {
        let sdp = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\n\
                   m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=msid:s mic\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=msid:s cam\r\n\
                   a=rid:f send\r\na=rid:q send\r\na=rid:h send\r\na=simulcast:send q;h;f\r\n";
        let layers = simulcast_layers(sdp, "cam");
        let rids: Vec<_> = layers.iter().map(|l| (l.rid.as_str(), l.quality)).collect();
        assert_eq!(
            rids,
            vec![
                ("q", Quality::Low),
                ("h", Quality::Medium),
                ("f", Quality::High)
            ]
        );
        assert!(simulcast_layers(sdp, "mic").is_empty());
        assert!(simulcast_layers(sdp, "nope").is_empty());
    }
}
