//! One published track's forwarding state: its layers as received (sequence unwrapping,
//! packet cache, availability) and every subscriber's [`Forwarder`].
//!
//! Plain Rust with no I/O and no webrtc-rs types (the packet handle `P` and the
//! subscriber's sink `S` are generic), so the whole per-packet path is tested here without
//! a network. The glue holds it behind a mutex that is never held across an await: per
//! packet it unwraps, caches and checks availability once, then asks each subscriber's
//! forwarder and lists what to send where. Sending happens after the lock is released.

use std::time::{Duration, Instant};

use crate::ids::ParticipantId;
use crate::media::cache::PacketCache;
use crate::media::forwarder::{Decision, DropReason, Forward, Forwarder, PacketMeta};
use crate::media::layers::{Arrival, Layer, LayerMonitor, LayerSet, LayerStatus, MAX_LAYERS};
use crate::media::sent::NotResent;
use crate::media::seq::{extend_back, SeqUnwrapper, TsUnwrapper};
use crate::media::vp8::Vp8Descriptor;

/// One received packet, as the glue parsed it.
#[derive(Debug, Clone)]
pub struct Incoming<P> {
    pub layer: Layer,
    pub seq: u16,
    pub ts: u32,
    pub keyframe_start: bool,
    pub padding_only: bool,
    pub vp8: Option<Vp8Descriptor>,
    /// Payload size, for bitrates.
    pub bytes: usize,
    pub packet: P,
    pub now: Instant,
}

/// A packet for one subscriber, and how to rewrite it.
#[derive(Debug, Clone)]
pub struct Outgoing<P> {
    pub packet: P,
    pub forward: Forward,
    /// The descriptor to rewrite when `forward.vp8` is set.
    pub vp8: Option<Vp8Descriptor>,
}

#[derive(Clone)]
struct Cached<P> {
    packet: P,
    vp8: Option<Vp8Descriptor>,
}

struct LayerRx<P> {
    seq: SeqUnwrapper,
    ts: TsUnwrapper,
    cache: PacketCache<Cached<P>>,
}

struct Subscription<S> {
    subscriber: ParticipantId,
    forwarder: Forwarder,
    /// What the subscriber wants; the forwarder gets it unless the track is muted.
    wanted: Option<Layer>,
    /// Where its packets go; handed back with each delivery.
    sink: S,
}

/// One packet for one subscriber's sink.
pub type Delivery<P, S> = (S, Outgoing<P>);

/// What one packet led to, for counters and keyframe requests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PacketOutcome {
    /// Already received (an upstream retransmission of a packet we have).
    pub duplicate: bool,
    pub forwarded: u32,
    /// Drops by the forwarders' reasons, indexed like [`DROP_REASONS`].
    pub dropped: [u32; DROP_REASONS.len()],
    /// Layers whose keyframe some subscriber needs.
    pub keyframe_requests: LayerSet,
}

/// Output packets remembered per subscriber unless [`TrackCore::with_send_history`] says
/// otherwise: about 2 s of a 2.5 Mbit/s video layer.
pub const DEFAULT_SEND_HISTORY: usize = 512;

/// Every forwarder drop reason, in the order of [`PacketOutcome::dropped`].
pub const DROP_REASONS: [DropReason; 5] = [
    DropReason::Paused,
    DropReason::OtherLayer,
    DropReason::WaitingForKeyframe,
    DropReason::Padding,
    DropReason::TooLate,
];

/// Bounds on what one NACK from a subscriber may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NackLimits {
    /// Sequence numbers looked at; the rest of the NACK is ignored.
    pub max_examined: u32,
    /// Packets resent (what the subscriber's per-second budget has left, at most).
    pub max_resends: u32,
    /// A packet resent less than this ago is not resent again: that copy is on its way.
    pub min_interval: Duration,
}

/// What one NACK led to, for counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NackOutcome {
    pub resent: u32,
    /// Resent less than `min_interval` ago.
    pub recent: u32,
    /// Never sent, sent too long ago to be known, or no longer cached.
    pub unavailable: u32,
    /// Beyond the limits: not looked at, or over the resend budget.
    pub over_limit: u32,
}

fn reason_index(reason: DropReason) -> usize {
    DROP_REASONS
        .iter()
        .position(|r| *r == reason)
        .expect("every reason is listed")
}

pub struct TrackCore<P, S> {
    clock_rate: u32,
    /// Output packets each subscriber's forwarder remembers for resends.
    send_history: usize,
    layers: [LayerRx<P>; MAX_LAYERS],
    monitor: LayerMonitor,
    subscriptions: Vec<Subscription<S>>,
    /// A muted track forwards nothing; unmuting resumes each subscriber at a keyframe.
    muted: bool,
}

impl<P: Clone, S: Clone> TrackCore<P, S> {
    /// `cache_packets` per layer answer NACKs; a layer with no frame for `layer_timeout`
    /// is not live (see `LayerMonitor`).
    pub fn new(clock_rate: u32, cache_packets: usize, layer_timeout: Duration) -> Self {
        TrackCore {
            clock_rate,
            send_history: DEFAULT_SEND_HISTORY,
            layers: std::array::from_fn(|_| LayerRx {
                seq: SeqUnwrapper::new(),
                ts: TsUnwrapper::new(),
                cache: PacketCache::new(cache_packets),
            }),
            monitor: LayerMonitor::new(layer_timeout),
            subscriptions: Vec::new(),
            muted: false,
        }
    }

    /// Cached packets older than `max_age` are let go: no receiver asks that late, and a
    /// low layer's slow packet rate would keep many seconds of them.
    pub fn with_cache_max_age(mut self, max_age: Duration) -> Self {
        for layer in &mut self.layers {
            layer.cache.set_max_age(max_age);
        }
        self
    }

    /// Each subscriber remembers what it was sent of its last `packets` output sequence
    /// numbers: NACKs for older ones go unanswered.
    pub fn with_send_history(mut self, packets: usize) -> Self {
        self.send_history = packets;
        self
    }

    pub fn subscriber_count(&self) -> usize {
        self.subscriptions.len()
    }

    /// Starts forwarding to `subscriber` (replacing an earlier subscription of it),
    /// wanting at most `desired` (`None`: nothing yet).
    pub fn subscribe(&mut self, subscriber: ParticipantId, sink: S, desired: Option<Layer>) {
        self.unsubscribe(&subscriber);
        let forwarded = if self.muted { None } else { desired };
        self.subscriptions.push(Subscription {
            subscriber,
            forwarder: Forwarder::new(self.clock_rate, forwarded, self.send_history),
            wanted: desired,
            sink,
        });
    }

    pub fn unsubscribe(&mut self, subscriber: &ParticipantId) {
        self.subscriptions.retain(|s| &s.subscriber != subscriber);
    }

    /// Changes what `subscriber` wants; false if it is not subscribed.
    pub fn set_desired(&mut self, subscriber: &ParticipantId, desired: Option<Layer>) -> bool {
        let muted = self.muted;
        match self.subscription(subscriber) {
            Some(s) => {
                s.wanted = desired;
                if !muted {
                    s.forwarder.set_desired(desired);
                }
                true
            }
            None => false,
        }
    }

    /// Mutes or unmutes the whole track: muted, every subscriber is paused as with `off`
    /// (so unmuting resumes each at a keyframe, with no gap in its sequence numbers), and
    /// what subscribers ask for meanwhile is kept for the unmute.
    pub fn set_muted(&mut self, muted: bool) {
        if self.muted == muted {
            return;
        }
        self.muted = muted;
        for s in &mut self.subscriptions {
            s.forwarder.set_desired(if muted { None } else { s.wanted });
        }
    }

    /// The smallest layer covering a `width`×`height` tile.
    pub fn layer_for_size(&self, width: u32, height: u32) -> Layer {
        self.monitor.layer_for_size(width, height)
    }

    pub fn set_dimensions(&mut self, layer: Layer, width: u32, height: u32) {
        self.monitor.set_dimensions(layer, width, height);
    }

    /// The layer `subscriber` receives now (for its keyframe requests).
    pub fn current_layer(&self, subscriber: &ParticipantId) -> Option<Layer> {
        self.subscriptions
            .iter()
            .find(|s| &s.subscriber == subscriber)
            .and_then(|s| s.forwarder.current().or(s.forwarder.target()))
    }

    pub fn bitrate_bps(&self, layer: Layer) -> u64 {
        self.monitor.bitrate_bps(layer)
    }

    /// Each layer's liveness (by its frames) and rates, lowest first.
    pub fn layer_status(&self, now: Instant) -> [LayerStatus; MAX_LAYERS] {
        std::array::from_fn(|layer| self.monitor.status(layer as Layer, now))
    }

    /// How many subscribers receive each layer now (the forwarders' choice).
    pub fn subscribers_per_layer(&self) -> [usize; MAX_LAYERS] {
        let mut counts = [0; MAX_LAYERS];
        for s in &self.subscriptions {
            if let Some(layer) = s.forwarder.current() {
                counts[layer as usize] += 1;
            }
        }
        counts
    }

    fn subscription(&mut self, subscriber: &ParticipantId) -> Option<&mut Subscription<S>> {
        self.subscriptions
            .iter_mut()
            .find(|s| &s.subscriber == subscriber)
    }

    /// Routes one received packet: appends to `deliveries` what each subscriber gets.
    pub fn on_packet(
        &mut self,
        incoming: Incoming<P>,
        deliveries: &mut Vec<Delivery<P, S>>,
    ) -> PacketOutcome {
        let mut outcome = PacketOutcome::default();
        let Some(rx) = self.layers.get_mut(incoming.layer as usize) else {
            return outcome;
        };
        let newest = rx
            .seq
            .highest()
            .is_none_or(|h| rx.seq.peek(incoming.seq as u64) > h);
        let seq = rx.seq.unwrap(incoming.seq as u64);
        let ts = rx.ts.unwrap(incoming.ts as u64);
        let cached = Cached {
            packet: incoming.packet,
            vp8: incoming.vp8,
        };
        if !rx.cache.insert(seq, cached.clone(), incoming.now) {
            outcome.duplicate = true;
            return outcome;
        }
        let arrival = match incoming.padding_only {
            true => Arrival::Padding,
            false => Arrival::Media {
                ts,
                bytes: incoming.bytes,
            },
        };
        self.monitor
            .on_packet(incoming.layer, arrival, incoming.now);
        let meta = PacketMeta {
            layer: incoming.layer,
            seq,
            ts,
            keyframe_start: incoming.keyframe_start,
            newest,
            padding_only: incoming.padding_only,
            vp8: cached.vp8.as_ref(),
            available: self.monitor.available(incoming.now),
            now: incoming.now,
        };
        for s in &mut self.subscriptions {
            let decision = s.forwarder.decide(&meta);
            if let Some(layer) = s.forwarder.take_keyframe_request() {
                outcome.keyframe_requests = outcome.keyframe_requests.with(layer);
            }
            match decision {
                Decision::Forward(forward) => {
                    let out = Outgoing {
                        packet: cached.packet.clone(),
                        forward,
                        vp8: cached.vp8,
                    };
                    deliveries.push((s.sink.clone(), out));
                    outcome.forwarded += 1;
                }
                Decision::Drop(reason) => outcome.dropped[reason_index(reason)] += 1,
            }
        }
        outcome
    }

    /// Answers `subscriber`'s NACK for output sequence numbers `lost` from the per-layer
    /// caches, each exactly as first sent, within `limits`: appends the resends to
    /// `deliveries`.
    pub fn on_nack(
        &mut self,
        subscriber: &ParticipantId,
        lost: impl IntoIterator<Item = u16>,
        limits: NackLimits,
        now: Instant,
        deliveries: &mut Vec<Delivery<P, S>>,
    ) -> NackOutcome {
        let mut outcome = NackOutcome::default();
        let mut lost = lost.into_iter();
        let layers = &self.layers;
        let Some(s) = self
            .subscriptions
            .iter_mut()
            .find(|s| &s.subscriber == subscriber)
        else {
            outcome.unavailable = lost.take(limits.max_examined as usize).count() as u32;
            return outcome;
        };
        let highest = s.forwarder.highest_out_seq();
        for wire in lost.by_ref().take(limits.max_examined as usize) {
            if outcome.resent >= limits.max_resends {
                outcome.over_limit += 1;
                continue;
            }
            let Some(highest) = highest else {
                outcome.unavailable += 1;
                continue;
            };
            let resend =
                match s
                    .forwarder
                    .resend(extend_back(highest, wire), now, limits.min_interval)
                {
                    Ok(resend) => resend,
                    Err(NotResent::Recent) => {
                        outcome.recent += 1;
                        continue;
                    }
                    Err(NotResent::Unknown) => {
                        outcome.unavailable += 1;
                        continue;
                    }
                };
            let Some(cached) = layers[resend.layer as usize].cache.get(resend.in_seq) else {
                outcome.unavailable += 1;
                continue;
            };
            deliveries.push((
                s.sink.clone(),
                Outgoing {
                    packet: cached.packet.clone(),
                    forward: resend.forward,
                    vp8: cached.vp8,
                },
            ));
            outcome.resent += 1;
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn incoming(layer: Layer, seq: u16, key: bool, now: Instant) -> Incoming<u32> {
        Incoming {
            layer,
            seq,
            ts: seq as u32 * 3000,
            keyframe_start: key,
            padding_only: false,
            vp8: None,
            bytes: 1000,
            packet: seq as u32,
            now,
        }
    }

    const LIMITS: NackLimits = NackLimits {
        max_examined: 64,
        max_resends: 64,
        min_interval: Duration::from_millis(100),
    };

    /// A core whose sinks are names, and what it delivered so far.
    struct Harness {
        core: TrackCore<u32, &'static str>,
        delivered: Vec<Delivery<u32, &'static str>>,
    }

    impl Harness {
        fn new() -> Self {
            Harness {
                core: TrackCore::new(90_000, 512, Duration::from_secs(1)),
                delivered: Vec::new(),
            }
        }

        fn subscribe(&mut self, who: &'static str, desired: Option<Layer>) {
            self.core.subscribe(ParticipantId::new(who), who, desired);
        }

        fn packet(&mut self, incoming: Incoming<u32>) -> PacketOutcome {
            self.core.on_packet(incoming, &mut self.delivered)
        }

        fn nack(&mut self, who: &str, lost: &[u16]) -> usize {
            self.core
                .on_nack(
                    &ParticipantId::new(who),
                    lost.iter().copied(),
                    LIMITS,
                    Instant::now(),
                    &mut self.delivered,
                )
                .resent as usize
        }

        /// Takes what was delivered to `who`, in order.
        fn take(&mut self, who: &str) -> Vec<Outgoing<u32>> {
            let (mine, rest) = std::mem::take(&mut self.delivered)
                .into_iter()
                .partition::<Vec<_>, _>(|(sink, _)| *sink == who);
            self.delivered = rest;
            mine.into_iter().map(|(_, out)| out).collect()
        }
    }

    #[test]
    fn every_subscriber_gets_each_packet_once_with_its_own_rewrite() {
        let now = Instant::now();
        let mut h = Harness::new();
        h.subscribe("early", Some(0));
        h.packet(incoming(0, 0, true, now));
        h.packet(incoming(0, 1, false, now));
        // A late joiner waits for the next keyframe, and its numbering is its own.
        h.subscribe("late", Some(0));
        for seq in 2..5u16 {
            let outcome = h.packet(incoming(0, seq, seq == 3, now));
            assert_eq!(outcome.forwarded, if seq == 2 { 1 } else { 2 });
        }
        let early: Vec<u32> = h.take("early").iter().map(|o| o.packet).collect();
        assert_eq!(early, vec![0, 1, 2, 3, 4], "in order, none twice");
        let late = h.take("late");
        assert_eq!(
            late.iter().map(|o| o.packet).collect::<Vec<_>>(),
            vec![3, 4],
            "from the keyframe on"
        );
        assert_eq!(late[1].forward.seq, late[0].forward.seq + 1);
        assert!(h.delivered.is_empty());
    }

    #[test]
    fn duplicates_are_forwarded_once() {
        let now = Instant::now();
        let mut h = Harness::new();
        h.subscribe("a", Some(0));
        h.packet(incoming(0, 1, true, now));
        assert!(h.packet(incoming(0, 1, true, now)).duplicate);
        assert_eq!(h.take("a").len(), 1);
    }

    #[test]
    fn nack_is_answered_from_the_cache_with_the_same_rewrite() {
        let now = Instant::now();
        let mut h = Harness::new();
        h.subscribe("a", Some(2));
        // Layer 2 starts at a keyframe; layer 0 runs alongside and is not forwarded.
        for seq in 65530..=65535u16 {
            h.packet(incoming(2, seq, seq == 65530, now));
            h.packet(incoming(0, seq - 60000, true, now));
        }
        h.packet(incoming(2, 0, false, now)); // wraps
        let sent = h.take("a");
        assert_eq!(sent.len(), 7);
        let wire = |o: &Outgoing<u32>| o.forward.seq as u16;
        let third = &sent[2];
        assert_eq!(h.nack("a", &[wire(third), wire(&sent[6])]), 2);
        let resent = h.take("a");
        assert_eq!(resent[0].packet, third.packet);
        assert_eq!(
            resent[0].forward,
            Forward {
                resend: true,
                ..third.forward
            }
        );
        assert_eq!(resent[1].packet, 0, "across the wrap");
        assert_eq!(
            h.nack("a", &[wire(&sent[0]).wrapping_sub(1)]),
            0,
            "before the first: nothing"
        );
        assert_eq!(h.nack("nobody", &[1]), 0);
        assert!(h.delivered.is_empty());
    }

    /// A simulcast VP8 publisher: every layer its own encoder, with its own PictureID and
    /// TL0PICIDX counters; one packet per picture, a keyframe every 10 pictures.
    fn vp8_packet(layer: Layer, step: u16, now: Instant) -> Incoming<Arc<Vec<u8>>> {
        let picture_id = [1000u16, 9000, 20_000][layer as usize] + step;
        let tl0 = [10u8, 90, 200][layer as usize].wrapping_add(step as u8);
        let key = step % 10 == layer as u16 * 3;
        let seq = [100u16, 30_000, 65_000][layer as usize].wrapping_add(step);
        let mut payload = vec![
            0x90, // X, S, partition 0
            0xc0, // I, L
            0x80 | (picture_id >> 8) as u8,
            picture_id as u8,
            tl0,
            if key { 0x00 } else { 0x01 }, // the VP8 payload header's P bit
        ];
        payload.extend(layer.to_be_bytes());
        payload.extend(step.to_be_bytes());
        let vp8 = crate::media::vp8::parse(&payload).expect("valid descriptor");
        Incoming {
            layer,
            seq,
            ts: u32::from(step) * 3000 + u32::from(layer) * 7,
            keyframe_start: vp8.is_keyframe,
            padding_only: false,
            vp8: Some(vp8),
            bytes: payload.len(),
            packet: Arc::new(payload),
            now,
        }
    }

    /// The bytes a subscriber would receive: sequence number, timestamp and the payload
    /// with its VP8 descriptor rewritten, as the downtrack writes them.
    fn on_the_wire(out: &Outgoing<Arc<Vec<u8>>>) -> Vec<u8> {
        let mut payload = out.packet.as_ref().clone();
        if let (Some(rewrite), Some(descriptor)) = (out.forward.vp8, &out.vp8) {
            crate::media::vp8::rewrite(
                &mut payload,
                descriptor,
                rewrite.picture_id,
                rewrite.tl0picidx,
            );
        }
        let mut wire = (out.forward.seq as u16).to_be_bytes().to_vec();
        wire.extend((out.forward.ts as u32).to_be_bytes());
        wire.extend(payload);
        wire
    }

    /// SRTP's nonce is the SSRC and the sequence number: every packet that goes out under
    /// a sequence number must be the same bytes, first send and every resend, across layer
    /// switches, a pause, a mute, and an upstream retransmission of a packet long gone
    /// from the cache.
    #[test]
    fn every_resend_is_the_first_send_byte_for_byte() {
        let t0 = Instant::now();
        let at = |step: u16| t0 + Duration::from_millis(u64::from(step) * 10);
        // A small cache, so the late packet below has left it.
        let mut core: TrackCore<Arc<Vec<u8>>, &'static str> =
            TrackCore::new(90_000, 16, Duration::from_secs(1)).with_send_history(64);
        let who = ParticipantId::new("s");
        core.subscribe(who.clone(), "s", Some(0));
        let mut first_sends: std::collections::HashMap<u64, Vec<u8>> = Default::default();
        let mut sent_order: Vec<u64> = Vec::new();
        let mut resends_per_phase: Vec<(&str, u32)> = Vec::new();
        let mut deliveries = Vec::new();
        let mut check = |deliveries: &mut Vec<Delivery<Arc<Vec<u8>>, &'static str>>,
                         sent_order: &mut Vec<u64>| {
            for (_, out) in deliveries.drain(..) {
                let bytes = on_the_wire(&out);
                match first_sends.get(&out.forward.seq) {
                    Some(first) => assert_eq!(
                        first, &bytes,
                        "sequence number {} went out with other bytes (resend: {})",
                        out.forward.seq, out.forward.resend
                    ),
                    None => {
                        assert!(!out.forward.resend, "a resend of something never sent");
                        first_sends.insert(out.forward.seq, bytes);
                        sent_order.push(out.forward.seq);
                    }
                }
            }
        };
        let limits = NackLimits {
            max_examined: 256,
            max_resends: 256,
            min_interval: Duration::from_millis(100),
        };
        // What happens at each step, then which phase a NACK of everything sent before
        // it falls in.
        let mut late_copy = None;
        for step in 0..180u16 {
            let phase = match step {
                30 => {
                    core.set_desired(&who, Some(2));
                    Some("after switching up")
                }
                60 => {
                    core.set_desired(&who, Some(0));
                    Some("after switching down")
                }
                90 => {
                    core.set_desired(&who, None);
                    Some("while paused")
                }
                100 => {
                    core.set_desired(&who, Some(0));
                    Some("after resuming")
                }
                130 => {
                    core.set_muted(true);
                    Some("while muted")
                }
                140 => {
                    core.set_muted(false);
                    Some("after unmuting")
                }
                _ => None,
            };
            for layer in [0, 2] {
                let packet = vp8_packet(layer, step, at(step));
                if layer == 2 && step == 45 {
                    late_copy = Some(packet.clone());
                }
                core.on_packet(packet, &mut deliveries);
            }
            if step == 85 {
                // Layer 2's packet 45, forwarded while the subscriber was on layer 2,
                // comes again (an upstream retransmission) after it left the cache.
                let mut late = late_copy.clone().expect("kept at step 45");
                late.now = at(step);
                core.on_packet(late, &mut deliveries);
            }
            check(&mut deliveries, &mut sent_order);
            if let Some(phase) = phase.map(|p| (p, step)) {
                resends_per_phase.push((phase.0, 0));
            }
            // Five steps into each phase, NACK the last 40 sequence numbers sent before
            // it began (and every fifth step, the newest few).
            let nack: Vec<u16> = if resends_per_phase.last().is_some() && step % 30 == 5
                || [95, 105, 135, 145].contains(&step)
            {
                sent_order
                    .iter()
                    .rev()
                    .take(40)
                    .map(|&s| s as u16)
                    .collect()
            } else if step % 5 == 0 {
                sent_order.iter().rev().take(3).map(|&s| s as u16).collect()
            } else {
                continue;
            };
            let outcome = core.on_nack(&who, nack, limits, at(step), &mut deliveries);
            if let Some((_, resent)) = resends_per_phase.last_mut() {
                *resent += outcome.resent;
            }
            check(&mut deliveries, &mut sent_order);
        }
        for (phase, resent) in &resends_per_phase {
            assert!(*resent > 0, "no resend was tested {phase}");
        }
        assert!(
            sent_order.len() > 100,
            "{} packets went out",
            sent_order.len()
        );
    }

    #[test]
    fn a_nack_repeated_within_the_interval_is_not_resent_again() {
        let t0 = Instant::now();
        let mut core: TrackCore<Arc<Vec<u8>>, &'static str> =
            TrackCore::new(90_000, 64, Duration::from_secs(1));
        let who = ParticipantId::new("s");
        core.subscribe(who.clone(), "s", Some(0));
        let mut out = Vec::new();
        for step in 0..10 {
            core.on_packet(vp8_packet(0, step, t0), &mut out);
        }
        let seqs: Vec<u16> = out.iter().map(|(_, o)| o.forward.seq as u16).collect();
        out.clear();
        let limits = NackLimits {
            max_examined: 256,
            max_resends: 256,
            min_interval: Duration::from_millis(100),
        };
        let ms = |n| t0 + Duration::from_millis(n);
        let first = core.on_nack(&who, [seqs[3], seqs[4]], limits, ms(0), &mut out);
        assert_eq!(first.resent, 2);
        let again = core.on_nack(&who, [seqs[3], seqs[4], seqs[5]], limits, ms(50), &mut out);
        assert_eq!((again.resent, again.recent), (1, 2));
        let later = core.on_nack(&who, [seqs[3]], limits, ms(160), &mut out);
        assert_eq!(later.resent, 1, "after the interval it may be lost again");
        // Limits: a long NACK costs at most `max_examined` lookups and `max_resends`.
        let tight = NackLimits {
            max_examined: 4,
            max_resends: 2,
            ..limits
        };
        let long = std::iter::repeat(seqs.iter().copied()).flatten().take(5000);
        let capped = core.on_nack(&who, long, tight, ms(1000), &mut out);
        assert_eq!(
            capped.resent + capped.recent + capped.unavailable + capped.over_limit,
            4
        );
        assert_eq!(capped.resent, 2);
        assert_eq!(capped.over_limit, 2);
    }

    #[test]
    fn subscriptions_follow_their_wishes() {
        let now = Instant::now();
        let mut h = Harness::new();
        h.subscribe("low", Some(0));
        h.subscribe("high", Some(2));
        h.subscribe("off", None);
        // All three layers seen once (no keyframe yet), as when subscribing mid-stream:
        // each waiting subscriber asks for a keyframe of its layer.
        let mut requests = Vec::new();
        for layer in 0..3 {
            requests.extend(
                h.packet(incoming(layer, 0, false, now))
                    .keyframe_requests
                    .iter(),
            );
        }
        // (Layers appear one by one here, so "high" also asks for the lower ones in passing.)
        assert!(
            requests.contains(&0) && requests.contains(&2),
            "{requests:?}"
        );
        for seq in 1..20u16 {
            for layer in 0..3 {
                h.packet(incoming(layer, seq, seq == 1 || seq == 10, now));
            }
        }
        assert_eq!(h.take("low").len(), 19);
        assert_eq!(h.take("high").len(), 19);
        assert!(h.take("off").is_empty());
        let core = &mut h.core;
        assert!(core.set_desired(&ParticipantId::new("low"), Some(2)));
        assert!(!core.set_desired(&ParticipantId::new("nobody"), Some(2)));
        assert_eq!(core.current_layer(&ParticipantId::new("high")), Some(2));
        assert_eq!(core.subscriber_count(), 3);
        core.unsubscribe(&ParticipantId::new("off"));
        assert_eq!(core.subscriber_count(), 2);
    }

    #[test]
    fn muting_pauses_everyone_and_unmuting_resumes_at_a_keyframe_without_a_gap() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut h = Harness::new();
        h.subscribe("s", Some(0));
        h.packet(incoming(0, 1, true, ms(0)));
        h.packet(incoming(0, 2, false, ms(10)));
        let before: Vec<u64> = h.take("s").iter().map(|o| o.forward.seq).collect();
        assert_eq!(before.len(), 2);

        h.core.set_muted(true);
        let outcome = h.packet(incoming(0, 3, false, ms(20)));
        assert_eq!(outcome.forwarded, 0);
        // Asking for a layer while muted does not unmute.
        assert!(h.core.set_desired(&ParticipantId::new("s"), Some(0)));
        h.packet(incoming(0, 4, true, ms(30)));
        assert!(h.take("s").is_empty());

        h.core.set_muted(false);
        h.packet(incoming(0, 5, false, ms(40)));
        assert!(h.take("s").is_empty(), "waits for a keyframe");
        h.packet(incoming(0, 6, true, ms(50)));
        h.packet(incoming(0, 7, false, ms(60)));
        let after: Vec<u64> = h.take("s").iter().map(|o| o.forward.seq).collect();
        // Continues right after the last packet sent before the mute: no gap a receiver
        // would count as loss.
        assert_eq!(after, vec![before[1] + 1, before[1] + 2]);
    }

    /// A simulcast publisher at 30 fps whose layer 1 turns padding-only for a while (its
    /// uplink cannot carry it), as Firefox and Chromium do under a bandwidth cap.
    struct CappedPublisher {
        seq: [u16; 2],
        ts: [u32; 2],
        keyframe_due: [bool; 2],
    }

    /// A packet's handle: which layer, and whether it is padding.
    fn handle(layer: Layer, seq: u16, padding: bool) -> u32 {
        (u32::from(layer) << 17) | (u32::from(padding) << 16) | u32::from(seq)
    }

    impl CappedPublisher {
        /// One frame interval: a frame (two packets) on each layer, or padding (three
        /// packets, the last frame's timestamp) on layer 1 while it is starved.
        fn interval(&mut self, starved: bool, now: Instant) -> Vec<Incoming<u32>> {
            let mut packets = Vec::new();
            for layer in 0..2u8 {
                let l = layer as usize;
                let padding = layer == 1 && starved;
                if !padding {
                    self.ts[l] = self.ts[l].wrapping_add(3000);
                }
                let key = !padding && std::mem::take(&mut self.keyframe_due[l]);
                for i in 0..if padding { 3 } else { 2 } {
                    self.seq[l] = self.seq[l].wrapping_add(1);
                    packets.push(Incoming {
                        layer,
                        seq: self.seq[l],
                        ts: self.ts[l],
                        keyframe_start: key && i == 0,
                        padding_only: padding,
                        vp8: None,
                        bytes: if padding { 0 } else { 1000 },
                        packet: handle(layer, self.seq[l], padding),
                        now,
                    });
                }
            }
            packets
        }
    }

    #[test]
    fn a_layer_that_carries_only_padding_loses_its_subscribers_until_frames_return() {
        let t0 = Instant::now();
        let frame = Duration::from_millis(33);
        let mut h = Harness::new();
        h.subscribe("viewer", Some(1));
        let mut publisher = CappedPublisher {
            seq: [100, 60_000],
            ts: [5, u32::MAX - 10_000],
            keyframe_due: [true, true],
        };
        // 2 s of both layers, 4 s of layer 1 starved, 3 s of both again.
        let starved = 60..180u32;
        let mut layer_at = Vec::new();
        let mut out: Vec<(Instant, Outgoing<u32>)> = Vec::new();
        for i in 0..270u32 {
            let now = t0 + frame * i;
            for packet in publisher.interval(starved.contains(&i), now) {
                let outcome = h.packet(packet);
                for layer in outcome.keyframe_requests.iter() {
                    publisher.keyframe_due[layer as usize] = true;
                }
            }
            out.extend(h.take("viewer").into_iter().map(|o| (now, o)));
            layer_at.push(h.core.current_layer(&ParticipantId::new("viewer")));
        }
        let layer_of = |o: &Outgoing<u32>| (o.packet >> 17) as Layer;
        assert!(
            out.iter().all(|(_, o)| o.packet & (1 << 16) == 0),
            "padding reached the subscriber"
        );
        // On layer 1 before the starving; on layer 0 within the layer timeout (and a
        // keyframe) of its last frame; back on layer 1 once its frames return.
        assert_eq!(layer_at[59], Some(1));
        let moved_down = (60..180)
            .find(|&i| layer_at[i as usize] == Some(0))
            .unwrap();
        let late = frame * (moved_down - 60);
        assert!(
            late <= Duration::from_millis(1100),
            "moved down after {late:?}"
        );
        assert!(layer_at[moved_down as usize..180]
            .iter()
            .all(|l| *l == Some(0)));
        assert_eq!(layer_at[179], Some(0));
        let moved_up = (180..270)
            .find(|&i| layer_at[i as usize] == Some(1))
            .unwrap();
        assert!(
            moved_up - 180 <= 5,
            "back up {} frames after its return",
            moved_up - 180
        );
        assert_eq!(layer_at[269], Some(1));
        // What the subscriber got: no gap in sequence numbers, timestamps that never go
        // back, and never more than the timeout (plus a keyframe) without a frame.
        for pair in out.windows(2) {
            let ((_, a), (_, b)) = (&pair[0], &pair[1]);
            assert_eq!(b.forward.seq, a.forward.seq + 1, "a gap in {a:?} -> {b:?}");
            assert!(b.forward.ts >= a.forward.ts, "{a:?} -> {b:?}");
        }
        let longest_wait = out
            .windows(2)
            .map(|pair| pair[1].0 - pair[0].0)
            .max()
            .unwrap();
        assert!(
            longest_wait <= Duration::from_millis(1100),
            "{longest_wait:?}"
        );
        let switches: Vec<Layer> = out
            .iter()
            .filter(|(_, o)| o.forward.switched)
            .map(|(_, o)| layer_of(o))
            .collect();
        // It starts on the first layer to arrive, moves up, down once and up once.
        assert_eq!(switches, vec![0, 1, 0, 1]);
    }
}
