//! A room's bookkeeping: who is in it, what each publishes, and who must receive what.
//!
//! Sans-IO: every method takes the change and returns the [`Effect`]s it implies
//! (messages to send, subscriptions to open or close). The room task applies them. This is
//! where the rule "every track goes to every other participant, never back to its
//! publisher" lives, and it is tested here without any network.

use std::collections::HashMap;

use switchyard_signal::{
    LayerInfo, ParticipantInfo, RemoteParticipant, ServerMessage, TrackInfo, TrackKind, TrackSource,
};

use crate::error::{Result, RouterError};
use crate::ids::{ParticipantId, RoomId, TrackId};

/// A track as the room knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedTrack {
    pub id: TrackId,
    pub kind: TrackKind,
    pub source: TrackSource,
    pub muted: bool,
    /// Simulcast layers, lowest first (empty without simulcast).
    pub layers: Vec<LayerInfo>,
}

impl PublishedTrack {
    pub fn info(&self) -> TrackInfo {
        TrackInfo {
            id: self.id.to_string(),
            kind: self.kind,
            source: self.source,
            muted: self.muted,
            layers: self.layers.clone(),
        }
    }
}

/// What a participant may do: from its token's grant, changed live by operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permissions {
    pub can_publish: bool,
    pub can_subscribe: bool,
    pub can_publish_data: bool,
}

impl Default for Permissions {
    fn default() -> Self {
        Permissions {
            can_publish: true,
            can_subscribe: true,
            can_publish_data: true,
        }
    }
}

/// Who asks to join, as its verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joiner {
    /// Unique in the room: a second join with the same identity replaces the first.
    pub identity: String,
    pub name: String,
    pub permissions: Permissions,
    /// The client connects from this host (its signaling comes over loopback): only then
    /// are its loopback ICE candidates admitted (with `rtc.include_loopback`).
    pub local: bool,
}

#[derive(Debug)]
struct Member {
    identity: String,
    name: String,
    permissions: Permissions,
    /// Unix seconds.
    joined_at: u64,
    /// In publication order, so `joined` lists tracks the way they appeared.
    tracks: Vec<PublishedTrack>,
}

/// A participant as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    pub id: ParticipantId,
    pub identity: String,
    pub name: String,
    pub permissions: Permissions,
    pub joined_at: u64,
    pub tracks: Vec<PublishedTrack>,
}

/// Something the room task must do as the result of a change.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Send {
        to: ParticipantId,
        message: ServerMessage,
    },
    /// Start forwarding `track` (published by `publisher`) to `subscriber`.
    Subscribe {
        subscriber: ParticipantId,
        publisher: ParticipantId,
        track: TrackId,
    },
    /// Stop forwarding `track` to `subscriber`.
    Unsubscribe {
        subscriber: ParticipantId,
        track: TrackId,
    },
}

#[derive(Debug)]
pub struct RoomState {
    id: RoomId,
    max_participants: usize,
    metadata: String,
    /// In join order.
    order: Vec<ParticipantId>,
    members: HashMap<ParticipantId, Member>,
}

impl RoomState {
    pub fn new(id: RoomId, max_participants: usize) -> Self {
        RoomState {
            id,
            max_participants,
            metadata: String::new(),
            order: Vec::new(),
            members: HashMap::new(),
        }
    }

    pub fn id(&self) -> &RoomId {
        &self.id
    }

    pub fn max_participants(&self) -> usize {
        self.max_participants
    }

    /// Applies to later joins; nobody already in is removed.
    pub fn set_max_participants(&mut self, max: usize) {
        self.max_participants = max;
    }

    pub fn metadata(&self) -> &str {
        &self.metadata
    }

    /// Everyone hears `room_updated` when the metadata changes.
    pub fn set_metadata(&mut self, metadata: String) -> Vec<Effect> {
        if metadata == self.metadata {
            return Vec::new();
        }
        self.metadata = metadata;
        self.order
            .iter()
            .map(|p| Effect::Send {
                to: p.clone(),
                message: ServerMessage::RoomUpdated {
                    metadata: self.metadata.clone(),
                },
            })
            .collect()
    }

    /// The participant with this identity, if one is in the room.
    pub fn by_identity(&self, identity: &str) -> Option<&ParticipantId> {
        self.order
            .iter()
            .find(|p| self.members[*p].identity == identity)
    }

    pub fn participant(&self, id: &ParticipantId) -> Option<MemberView> {
        self.members.get(id).map(|m| MemberView {
            id: id.clone(),
            identity: m.identity.clone(),
            name: m.name.clone(),
            permissions: m.permissions,
            joined_at: m.joined_at,
            tracks: m.tracks.clone(),
        })
    }

    /// Everyone, in join order.
    pub fn participants(&self) -> Vec<MemberView> {
        self.order
            .iter()
            .filter_map(|p| self.participant(p))
            .collect()
    }

    pub fn track_count(&self) -> usize {
        self.members.values().map(|m| m.tracks.len()).sum()
    }

    fn can_subscribe(&self, id: &ParticipantId) -> bool {
        self.members
            .get(id)
            .is_some_and(|m| m.permissions.can_subscribe)
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    pub fn participant_count(&self) -> usize {
        self.order.len()
    }

    pub fn contains(&self, id: &ParticipantId) -> bool {
        self.members.contains_key(id)
    }

    pub fn tracks_of(&self, id: &ParticipantId) -> impl Iterator<Item = &PublishedTrack> {
        self.members
            .get(id)
            .into_iter()
            .flat_map(|m| m.tracks.iter())
    }

    /// The participant who publishes `track`, if anyone does.
    pub fn publisher_of(&self, track: &TrackId) -> Option<&ParticipantId> {
        self.order
            .iter()
            .find(|p| self.members[*p].tracks.iter().any(|t| &t.id == track))
    }

    /// Admits a participant (the caller has already replaced any session with the same
    /// identity). Returns who is already there (for `joined`) and the effects: everyone
    /// else hears `participant_joined`, and the newcomer, if it may subscribe, is
    /// subscribed to every published track. `joined_at` is Unix seconds.
    pub fn join(
        &mut self,
        id: ParticipantId,
        joiner: Joiner,
        joined_at: u64,
    ) -> Result<(Vec<RemoteParticipant>, Vec<Effect>)> {
        if self.order.len() >= self.max_participants {
            return Err(RouterError::RoomFull(self.max_participants));
        }
        let mut effects = Vec::new();
        let mut present = Vec::with_capacity(self.order.len());
        let info = ParticipantInfo {
            id: id.to_string(),
            identity: joiner.identity.clone(),
            name: joiner.name.clone(),
        };
        for other_id in &self.order {
            let other = &self.members[other_id];
            present.push(RemoteParticipant {
                id: other_id.to_string(),
                identity: other.identity.clone(),
                name: other.name.clone(),
                tracks: other.tracks.iter().map(PublishedTrack::info).collect(),
            });
            effects.push(Effect::Send {
                to: other_id.clone(),
                message: ServerMessage::ParticipantJoined {
                    participant: info.clone(),
                },
            });
            if joiner.permissions.can_subscribe {
                for track in &other.tracks {
                    effects.push(Effect::Subscribe {
                        subscriber: id.clone(),
                        publisher: other_id.clone(),
                        track: track.id.clone(),
                    });
                }
            }
        }
        self.order.push(id.clone());
        self.members.insert(
            id,
            Member {
                identity: joiner.identity,
                name: joiner.name,
                permissions: joiner.permissions,
                joined_at,
                tracks: Vec::new(),
            },
        );
        Ok((present, effects))
    }

    /// An operator changed what `id` may do; it takes effect at once. Losing
    /// `can_subscribe` stops everything forwarded to it, gaining it starts it; losing
    /// `can_publish` unpublishes its tracks (the caller stops reading them: see
    /// [`RoomState::tracks_of`] before calling).
    pub fn set_permissions(
        &mut self,
        id: &ParticipantId,
        permissions: Permissions,
    ) -> Result<Vec<Effect>> {
        let member = self
            .members
            .get_mut(id)
            .ok_or(RouterError::ParticipantGone)?;
        let before = std::mem::replace(&mut member.permissions, permissions);
        let mut effects = Vec::new();
        if before.can_subscribe != permissions.can_subscribe {
            for other in self.order.iter().filter(|p| *p != id) {
                for track in &self.members[other].tracks {
                    effects.push(if permissions.can_subscribe {
                        Effect::Subscribe {
                            subscriber: id.clone(),
                            publisher: other.clone(),
                            track: track.id.clone(),
                        }
                    } else {
                        Effect::Unsubscribe {
                            subscriber: id.clone(),
                            track: track.id.clone(),
                        }
                    });
                }
            }
        }
        if before.can_publish && !permissions.can_publish {
            let tracks: Vec<TrackId> = self.tracks_of(id).map(|t| t.id.clone()).collect();
            for track in tracks {
                effects.extend(self.unpublish(id, &track));
            }
        }
        Ok(effects)
    }

    /// A participant's track started arriving: tell everyone (the publisher too, so it learns
    /// the id the room uses) and subscribe every other participant.
    pub fn publish(
        &mut self,
        publisher: &ParticipantId,
        track: PublishedTrack,
    ) -> Result<Vec<Effect>> {
        let Some(member) = self.members.get(publisher) else {
            return Err(RouterError::ParticipantGone);
        };
        if !member.permissions.can_publish {
            return Err(RouterError::Forbidden("publishing"));
        }
        if self.publisher_of(&track.id).is_some() {
            return Err(RouterError::DuplicateTrack(track.id.to_string()));
        }
        let mut effects = Vec::new();
        for other in &self.order {
            // Subscribe before telling: whatever the client sends about the track after
            // `track_published` (an `update_subscription`) then finds its downtrack.
            if other != publisher && self.can_subscribe(other) {
                effects.push(Effect::Subscribe {
                    subscriber: other.clone(),
                    publisher: publisher.clone(),
                    track: track.id.clone(),
                });
            }
            effects.push(Effect::Send {
                to: other.clone(),
                message: ServerMessage::TrackPublished {
                    participant_id: publisher.to_string(),
                    track: track.info(),
                },
            });
        }
        if let Some(member) = self.members.get_mut(publisher) {
            member.tracks.push(track);
        }
        Ok(effects)
    }

    /// A track stopped (its publisher removed it, or its connection closed).
    pub fn unpublish(&mut self, publisher: &ParticipantId, track: &TrackId) -> Vec<Effect> {
        let Some(member) = self.members.get_mut(publisher) else {
            return Vec::new();
        };
        let Some(pos) = member.tracks.iter().position(|t| &t.id == track) else {
            return Vec::new();
        };
        member.tracks.remove(pos);
        let mut effects = Vec::new();
        for other in &self.order {
            effects.push(Effect::Send {
                to: other.clone(),
                message: ServerMessage::TrackUnpublished {
                    participant_id: publisher.to_string(),
                    track_id: track.to_string(),
                },
            });
            if other != publisher {
                effects.push(Effect::Unsubscribe {
                    subscriber: other.clone(),
                    track: track.clone(),
                });
            }
        }
        effects
    }

    /// The publisher muted or unmuted one of its tracks; everyone is told when it changes.
    pub fn set_muted(
        &mut self,
        publisher: &ParticipantId,
        track: &TrackId,
        muted: bool,
    ) -> Result<Vec<Effect>> {
        let entry = self
            .members
            .get_mut(publisher)
            .and_then(|m| m.tracks.iter_mut().find(|t| &t.id == track))
            .ok_or_else(|| RouterError::UnknownTrack(track.to_string()))?;
        if entry.muted == muted {
            return Ok(Vec::new());
        }
        entry.muted = muted;
        Ok(self
            .order
            .iter()
            .map(|other| Effect::Send {
                to: other.clone(),
                message: ServerMessage::TrackMuted {
                    participant_id: publisher.to_string(),
                    track_id: track.to_string(),
                    muted,
                },
            })
            .collect())
    }

    /// A participant left or its connection dropped: its tracks are unpublished for everyone
    /// who remains, then they hear `participant_left`.
    pub fn leave(&mut self, id: &ParticipantId) -> Vec<Effect> {
        let Some(member) = self.members.remove(id) else {
            return Vec::new();
        };
        self.order.retain(|p| p != id);
        let mut effects = Vec::new();
        for other in &self.order {
            for track in &member.tracks {
                effects.push(Effect::Unsubscribe {
                    subscriber: other.clone(),
                    track: track.id.clone(),
                });
                effects.push(Effect::Send {
                    to: other.clone(),
                    message: ServerMessage::TrackUnpublished {
                        participant_id: id.to_string(),
                        track_id: track.id.to_string(),
                    },
                });
            }
            effects.push(Effect::Send {
                to: other.clone(),
                message: ServerMessage::ParticipantLeft {
                    participant_id: id.to_string(),
                },
            });
        }
        effects
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(s: &str) -> ParticipantId {
        ParticipantId::new(s)
    }

    fn joiner(name: &str) -> Joiner {
        Joiner {
            identity: name.to_lowercase(),
            name: name.to_owned(),
            permissions: Permissions::default(),
            local: false,
        }
    }

    fn video(id: &str) -> PublishedTrack {
        PublishedTrack {
            id: TrackId::new(id),
            kind: TrackKind::Video,
            source: TrackSource::Camera,
            muted: false,
            layers: Vec::new(),
        }
    }

    fn subscriptions(effects: &[Effect]) -> Vec<(String, String)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Subscribe {
                    subscriber, track, ..
                } => Some((subscriber.to_string(), track.to_string())),
                _ => None,
            })
            .collect()
    }

    fn sent_to(effects: &[Effect], who: &str) -> Vec<ServerMessage> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Send { to, message } if to.as_str() == who => Some(message.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn join_announces_and_subscribes_newcomer_to_existing_tracks() {
        let mut room = RoomState::new(RoomId::new("r"), 10);
        let (present, effects) = room.join(pid("a"), joiner("Ann"), 0).unwrap();
        assert!(present.is_empty() && effects.is_empty());
        room.publish(&pid("a"), video("a-cam")).unwrap();

        let (present, effects) = room.join(pid("b"), joiner("Bo"), 0).unwrap();
        assert_eq!(present.len(), 1);
        assert_eq!(present[0].id, "a");
        assert_eq!(present[0].tracks[0].id, "a-cam");
        assert_eq!(subscriptions(&effects), vec![("b".into(), "a-cam".into())]);
        assert!(matches!(
            sent_to(&effects, "a")[..],
            [ServerMessage::ParticipantJoined { .. }]
        ));
        assert!(sent_to(&effects, "b").is_empty());
    }

    #[test]
    fn publish_goes_to_everyone_else_never_back() {
        let mut room = RoomState::new(RoomId::new("r"), 10);
        for p in ["a", "b", "c"] {
            room.join(pid(p), joiner(p), 0).unwrap();
        }
        let effects = room.publish(&pid("b"), video("b-cam")).unwrap();
        assert_eq!(
            subscriptions(&effects),
            vec![("a".into(), "b-cam".into()), ("c".into(), "b-cam".into())]
        );
        // The publisher hears about its own track too (it learns the room's view of it).
        for p in ["a", "b", "c"] {
            assert!(matches!(
                sent_to(&effects, p)[..],
                [ServerMessage::TrackPublished { .. }]
            ));
        }
        // Each subscriber's downtrack is requested before it is told: a client that answers
        // `track_published` with `update_subscription` must find the subscription there.
        for p in ["a", "c"] {
            let position = |want_subscribe: bool| {
                effects.iter().position(|e| match e {
                    Effect::Subscribe { subscriber, .. } => {
                        want_subscribe && subscriber.as_str() == p
                    }
                    Effect::Send { to, .. } => !want_subscribe && to.as_str() == p,
                    _ => false,
                })
            };
            assert!(position(true).unwrap() < position(false).unwrap(), "{p}");
        }
        assert!(matches!(
            room.publish(&pid("a"), video("b-cam")),
            Err(RouterError::DuplicateTrack(_))
        ));
    }

    #[test]
    fn leave_unpublishes_and_announces() {
        let mut room = RoomState::new(RoomId::new("r"), 10);
        for p in ["a", "b", "c"] {
            room.join(pid(p), joiner(p), 0).unwrap();
        }
        room.publish(&pid("a"), video("a-cam")).unwrap();
        let effects = room.leave(&pid("a"));
        let unsubscribed: Vec<_> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::Unsubscribe { subscriber, track } => {
                    Some((subscriber.to_string(), track.to_string()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            unsubscribed,
            vec![("b".into(), "a-cam".into()), ("c".into(), "a-cam".into())]
        );
        for p in ["b", "c"] {
            let msgs = sent_to(&effects, p);
            assert!(matches!(msgs[0], ServerMessage::TrackUnpublished { .. }));
            assert_eq!(
                msgs[1],
                ServerMessage::ParticipantLeft {
                    participant_id: "a".into()
                }
            );
        }
        assert!(sent_to(&effects, "a").is_empty());
        assert_eq!(room.participant_count(), 2);
        assert!(
            room.leave(&pid("a")).is_empty(),
            "leaving twice is harmless"
        );
    }

    #[test]
    fn room_empties_when_last_leaves() {
        let mut room = RoomState::new(RoomId::new("r"), 10);
        room.join(pid("a"), joiner("a"), 0).unwrap();
        room.join(pid("b"), joiner("b"), 0).unwrap();
        room.leave(&pid("a"));
        assert!(!room.is_empty());
        room.leave(&pid("b"));
        assert!(room.is_empty());
    }

    #[test]
    fn full_room_refuses() {
        let mut room = RoomState::new(RoomId::new("r"), 2);
        room.join(pid("a"), joiner("a"), 0).unwrap();
        room.join(pid("b"), joiner("b"), 0).unwrap();
        assert!(matches!(
            room.join(pid("c"), joiner("c"), 0),
            Err(RouterError::RoomFull(2))
        ));
    }

    #[test]
    fn mute_is_announced_once_per_change() {
        let mut room = RoomState::new(RoomId::new("r"), 10);
        room.join(pid("a"), joiner("a"), 0).unwrap();
        room.join(pid("b"), joiner("b"), 0).unwrap();
        room.publish(&pid("a"), video("a-cam")).unwrap();
        let effects = room
            .set_muted(&pid("a"), &TrackId::new("a-cam"), true)
            .unwrap();
        assert_eq!(effects.len(), 2);
        assert!(room
            .set_muted(&pid("a"), &TrackId::new("a-cam"), true)
            .unwrap()
            .is_empty());
        assert!(matches!(
            room.set_muted(&pid("b"), &TrackId::new("a-cam"), true),
            Err(RouterError::UnknownTrack(_))
        ));
        // A newcomer sees the muted state in `joined`.
        let (present, _) = room.join(pid("c"), joiner("c"), 0).unwrap();
        assert!(present[0].tracks[0].muted);
    }

    #[test]
    fn unpublish_unsubscribes_others() {
        let mut room = RoomState::new(RoomId::new("r"), 10);
        room.join(pid("a"), joiner("a"), 0).unwrap();
        room.join(pid("b"), joiner("b"), 0).unwrap();
        room.publish(&pid("a"), video("a-cam")).unwrap();
        let effects = room.unpublish(&pid("a"), &TrackId::new("a-cam"));
        assert!(effects.contains(&Effect::Unsubscribe {
            subscriber: pid("b"),
            track: TrackId::new("a-cam")
        }));
        assert_eq!(room.tracks_of(&pid("a")).count(), 0);
        assert!(room.unpublish(&pid("a"), &TrackId::new("a-cam")).is_empty());
    }

    #[test]
    fn a_participant_without_subscribe_receives_nothing_until_granted() {
        let mut room = RoomState::new(RoomId::new("r"), 10);
        room.join(pid("a"), joiner("a"), 0).unwrap();
        let watcher = Joiner {
            local: false,
            permissions: Permissions {
                can_subscribe: false,
                ..Permissions::default()
            },
            ..joiner("w")
        };
        room.publish(&pid("a"), video("a-cam")).unwrap();
        let (_, effects) = room.join(pid("w"), watcher, 0).unwrap();
        assert!(subscriptions(&effects).is_empty());
        let effects = room.publish(&pid("a"), video("a-screen")).unwrap();
        assert!(
            subscriptions(&effects).is_empty(),
            "not subscribed to new tracks either"
        );
        // Still told what exists.
        assert!(matches!(
            sent_to(&effects, "w")[..],
            [ServerMessage::TrackPublished { .. }]
        ));

        let effects = room
            .set_permissions(&pid("w"), Permissions::default())
            .unwrap();
        assert_eq!(
            subscriptions(&effects),
            vec![
                ("w".into(), "a-cam".into()),
                ("w".into(), "a-screen".into())
            ]
        );
        let effects = room
            .set_permissions(
                &pid("w"),
                Permissions {
                    can_subscribe: false,
                    ..Permissions::default()
                },
            )
            .unwrap();
        assert_eq!(
            effects
                .iter()
                .filter(|e| matches!(e, Effect::Unsubscribe { .. }))
                .count(),
            2
        );
    }

    #[test]
    fn revoking_publish_unpublishes_and_refuses_more() {
        let mut room = RoomState::new(RoomId::new("r"), 10);
        room.join(pid("a"), joiner("a"), 0).unwrap();
        room.join(pid("b"), joiner("b"), 0).unwrap();
        room.publish(&pid("a"), video("a-cam")).unwrap();
        let no_publish = Permissions {
            can_publish: false,
            ..Permissions::default()
        };
        let effects = room.set_permissions(&pid("a"), no_publish).unwrap();
        assert!(effects.contains(&Effect::Unsubscribe {
            subscriber: pid("b"),
            track: TrackId::new("a-cam"),
        }));
        assert!(matches!(
            sent_to(&effects, "b")[..],
            [ServerMessage::TrackUnpublished { .. }]
        ));
        assert_eq!(room.tracks_of(&pid("a")).count(), 0);
        assert!(matches!(
            room.publish(&pid("a"), video("a-cam2")),
            Err(RouterError::Forbidden(_))
        ));
    }

    #[test]
    fn identities_metadata_and_views() {
        let mut room = RoomState::new(RoomId::new("r"), 10);
        room.join(pid("p1"), joiner("Ann"), 100).unwrap();
        assert_eq!(room.by_identity("ann"), Some(&pid("p1")));
        assert_eq!(room.by_identity("bo"), None);
        let (present, _) = room.join(pid("p2"), joiner("Bo"), 200).unwrap();
        assert_eq!(present[0].identity, "ann");
        let view = room.participant(&pid("p2")).unwrap();
        assert_eq!((view.identity.as_str(), view.joined_at), ("bo", 200));

        let effects = room.set_metadata("topic".into());
        assert_eq!(effects.len(), 2);
        assert!(
            matches!(&sent_to(&effects, "p1")[..], [ServerMessage::RoomUpdated { metadata }] if metadata == "topic")
        );
        assert!(
            room.set_metadata("topic".into()).is_empty(),
            "unchanged: no message"
        );
        assert_eq!(room.metadata(), "topic");
    }
}
