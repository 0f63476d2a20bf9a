//! The decision for every packet of one published track towards one subscriber.
//!
//! Deciding is separate from doing: [`Forwarder::decide`] returns either the rewrite to
//! apply (sequence number, timestamp, VP8 picture ids) or the reason the packet is dropped,
//! and the glue applies it and writes. Layer switches happen only on a keyframe of the
//! target layer; until one arrives the current layer keeps flowing.
//!
//! Work shared by all subscribers (unwrapping sequence numbers, keyframe detection,
//! parsing the VP8 descriptor, layer availability) is done once per packet by the receive
//! side and handed in as [`PacketMeta`]; nothing here allocates.
//!
//! Every output sequence number goes out once: the forwarder records what it sent
//! ([`SentHistory`]) and a resend replays that record, never a fresh rewrite (see
//! `sent.rs` for why: SRTP nonces).

use std::time::{Duration, Instant};

use super::layers::{pick, Layer, LayerSet};
use super::munger::RtpMunger;
use super::sent::{NotResent, SentHistory, SentPacket};
use super::vp8::{Vp8Descriptor, Vp8Munger, Vp8Rewrite};

/// What the receive side learned of one packet, once, for every subscriber.
#[derive(Debug, Clone, Copy)]
pub struct PacketMeta<'a> {
    pub layer: Layer,
    /// Extended sequence number within its layer.
    pub seq: u64,
    /// Extended timestamp within its layer.
    pub ts: u64,
    /// The first packet of a keyframe (always true for audio: any packet is a start).
    pub keyframe_start: bool,
    /// The newest packet seen on its layer so far (not reordered or retransmitted late).
    /// A switch starts only at such a keyframe start: at a late one, packets after it
    /// have already gone by and would be holes in the output.
    pub newest: bool,
    /// A packet with no media (bandwidth probing): never worth forwarding.
    pub padding_only: bool,
    pub vp8: Option<&'a Vp8Descriptor>,
    /// The layers arriving now.
    pub available: LayerSet,
    pub now: Instant,
}

/// Why a packet was not forwarded. Each is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The subscriber asked for nothing (`off`), or nothing is arriving.
    Paused,
    /// A layer the subscriber is not on.
    OtherLayer,
    /// The target layer's packets, before its first keyframe.
    WaitingForKeyframe,
    /// Padding only.
    Padding,
    /// Too late to place in the output: its slot is taken, already sent, or older than
    /// the history of what was sent.
    TooLate,
}

impl DropReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Paused => "paused",
            DropReason::OtherLayer => "other_layer",
            DropReason::WaitingForKeyframe => "waiting_for_keyframe",
            DropReason::Padding => "padding",
            DropReason::TooLate => "too_late",
        }
    }
}

/// How to rewrite a forwarded packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    /// Extended output sequence number (truncate for the wire).
    pub seq: u64,
    /// Extended output timestamp (truncate for the wire).
    pub ts: u64,
    /// New VP8 PictureID / TL0PICIDX, when the payload needs rewriting.
    pub vp8: Option<Vp8Rewrite>,
    /// This packet starts a new layer (the subscriber switched).
    pub switched: bool,
    /// A retransmission: exactly what went out under `seq` before.
    pub resend: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Forward(Forward),
    Drop(DropReason),
}

/// How often a keyframe is asked for again while a switch still waits for one.
const KEYFRAME_RETRY: Duration = Duration::from_millis(1000);

pub struct Forwarder {
    clock_rate: u32,
    /// The highest layer the subscriber wants; `None` is `off`.
    desired: Option<Layer>,
    available: LayerSet,
    target: Option<Layer>,
    current: Option<Layer>,
    munger: RtpMunger,
    vp8: Vp8Munger,
    last_forward_at: Option<Instant>,
    /// A keyframe the glue should request: (layer, when last asked).
    keyframe_wanted: Option<Layer>,
    keyframe_asked_at: Option<Instant>,
    sent: SentHistory,
}

/// A NACKed packet to send again, exactly as first sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resend {
    pub layer: Layer,
    /// Extended input sequence number: where the packet is in its layer's cache.
    pub in_seq: u64,
    pub forward: Forward,
}

impl Forwarder {
    /// `history` output packets are remembered for resends (and to never send a sequence
    /// number twice).
    pub fn new(clock_rate: u32, desired: Option<Layer>, history: usize) -> Self {
        Forwarder {
            clock_rate,
            desired,
            available: LayerSet::EMPTY,
            target: None,
            current: None,
            munger: RtpMunger::new(),
            vp8: Vp8Munger::new(),
            last_forward_at: None,
            keyframe_wanted: None,
            keyframe_asked_at: None,
            sent: SentHistory::new(history),
        }
    }

    /// The subscriber changed what it wants (a quality, a tile size, or `off`).
    pub fn set_desired(&mut self, desired: Option<Layer>) {
        self.desired = desired;
        self.retarget();
    }

    pub fn desired(&self) -> Option<Layer> {
        self.desired
    }

    /// The layer being forwarded now.
    pub fn current(&self) -> Option<Layer> {
        self.current
    }

    /// The layer the forwarder is moving to (equal to `current` when settled).
    pub fn target(&self) -> Option<Layer> {
        self.target
    }

    /// A layer whose keyframe is needed now; the caller sends a (throttled) PLI for it.
    pub fn take_keyframe_request(&mut self) -> Option<Layer> {
        self.keyframe_wanted.take()
    }

    /// The highest output sequence number so far (to extend a 16-bit NACK).
    pub fn highest_out_seq(&self) -> Option<u64> {
        self.munger.highest_out_seq()
    }

    /// A subscriber NACKed `out_seq`: what to send again, exactly as it went out the first
    /// time, unless it was resent within `min_interval` or is not known (any more).
    pub fn resend(
        &mut self,
        out_seq: u64,
        now: Instant,
        min_interval: Duration,
    ) -> Result<Resend, NotResent> {
        let sent = self.sent.resend(out_seq, now, min_interval)?;
        let ts = self
            .munger
            .highest_out_ts()
            .map_or(u64::from(sent.ts), |h| extend_ts_near(h, sent.ts));
        Ok(Resend {
            layer: sent.layer,
            in_seq: sent.in_seq,
            forward: Forward {
                seq: out_seq,
                ts,
                vp8: sent.vp8,
                switched: false,
                resend: true,
            },
        })
    }

    fn retarget(&mut self) {
        let target = pick(self.desired, self.available);
        if target != self.target {
            self.target = target;
            // Ask at once for a keyframe of a new target: the switch waits for one.
            self.keyframe_asked_at = None;
        }
        if target.is_none() && self.current.take().is_some() {
            // Paused: resuming must start on a keyframe, and nothing new of the old layer
            // may slip out meanwhile.
            self.munger.close();
        }
    }

    pub fn decide(&mut self, p: &PacketMeta<'_>) -> Decision {
        if p.available != self.available {
            self.available = p.available;
            self.retarget();
        }

        if Some(p.layer) == self.current {
            if p.padding_only {
                self.munger.skip(p.layer, p.seq);
                return Decision::Drop(DropReason::Padding);
            }
            return self.forward(p, false);
        }

        if self.target == Some(p.layer) && p.keyframe_start && p.newest && !p.padding_only {
            let ts_advance = self.ts_advance(p.now);
            self.munger.switch_to(p.layer, p.seq, p.ts, ts_advance);
            self.current = Some(p.layer);
            self.keyframe_wanted = None;
            return self.forward(p, true);
        }

        // Not the layer being forwarded. A late packet (reordered, or retransmitted
        // upstream) of a layer the subscriber *was* on still fills its own slot, if that
        // slot never went out; padding never does (found by fuzz/router_core).
        if p.padding_only {
            return Decision::Drop(DropReason::Padding);
        }
        if let Some(out) = self.munger.munge(p.layer, p.seq, p.ts) {
            if !self.sent.may_send(out.seq) {
                return Decision::Drop(DropReason::TooLate);
            }
            // The VP8 munger follows the current layer only; an old layer's late picture
            // keeps its ids (the receiver places it before the keyframe it already has,
            // and discards it).
            return Decision::Forward(self.record(p, out.seq, out.ts, None, false));
        }
        match self.target {
            None => Decision::Drop(DropReason::Paused),
            Some(target) if target == p.layer => {
                self.want_keyframe(target, p.now);
                Decision::Drop(DropReason::WaitingForKeyframe)
            }
            Some(target) => {
                if self.current.is_none() {
                    self.want_keyframe(target, p.now);
                }
                Decision::Drop(DropReason::OtherLayer)
            }
        }
    }

    fn forward(&mut self, p: &PacketMeta<'_>, switched: bool) -> Decision {
        let Some(out) = self.munger.munge(p.layer, p.seq, p.ts) else {
            return Decision::Drop(DropReason::TooLate);
        };
        // An upstream retransmission of a packet whose first copy went out (and has left
        // the cache since, or it would have been caught as a duplicate): not again.
        if !self.sent.may_send(out.seq) {
            return Decision::Drop(DropReason::TooLate);
        }
        let vp8 = p.vp8.map(|d| self.vp8.process(d, switched));
        if self.last_forward_at.is_none_or(|t| p.now > t) {
            self.last_forward_at = Some(p.now);
        }
        Decision::Forward(self.record(p, out.seq, out.ts, vp8, switched))
    }

    fn record(
        &mut self,
        p: &PacketMeta<'_>,
        seq: u64,
        ts: u64,
        vp8: Option<Vp8Rewrite>,
        switched: bool,
    ) -> Forward {
        self.sent.record(
            seq,
            SentPacket {
                layer: p.layer,
                in_seq: p.seq,
                ts: ts as u32,
                vp8,
            },
        );
        Forward {
            seq,
            ts,
            vp8,
            switched,
            resend: false,
        }
    }

    /// Timestamp ticks between the last forwarded packet and a switch now, so playout
    /// timing carries over from one layer's clock to the next.
    fn ts_advance(&self, now: Instant) -> u64 {
        self.last_forward_at.map_or(0, |t| {
            let elapsed = now.saturating_duration_since(t);
            (elapsed.as_micros() as u64 * self.clock_rate as u64 / 1_000_000).max(1)
        })
    }

    fn want_keyframe(&mut self, layer: Layer, now: Instant) {
        if self
            .keyframe_asked_at
            .is_none_or(|t| now.saturating_duration_since(t) >= KEYFRAME_RETRY)
        {
            self.keyframe_asked_at = Some(now);
            self.keyframe_wanted = Some(layer);
        }
    }
}

/// The extended value of the 32-bit timestamp `wire` nearest `reference` (timestamps
/// need not grow with sequence numbers: B-frames, or a publisher's clock jump).
fn extend_ts_near(reference: u64, wire: u32) -> u64 {
    let delta = wire.wrapping_sub(reference as u32) as i32;
    reference.saturating_add_signed(i64::from(delta))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scripted stream: (layer, seq, ts, keyframe_start) packets arriving 10 ms apart.
    struct Script {
        t0: Instant,
        step: u64,
    }

    impl Script {
        fn new() -> Self {
            Script {
                t0: Instant::now(),
                step: 0,
            }
        }

        fn packet(
            &mut self,
            layer: Layer,
            seq: u64,
            ts: u64,
            key: bool,
            available: &[Layer],
        ) -> PacketMeta<'static> {
            self.step += 1;
            PacketMeta {
                layer,
                seq,
                ts,
                keyframe_start: key,
                newest: true,
                padding_only: false,
                vp8: None,
                available: LayerSet::of(available),
                now: self.t0 + Duration::from_millis(10 * self.step),
            }
        }
    }

    fn out_seq(d: Decision) -> u64 {
        match d {
            Decision::Forward(f) => f.seq,
            Decision::Drop(r) => panic!("dropped: {r:?}"),
        }
    }

    #[test]
    fn starts_on_a_keyframe_and_asks_for_one() {
        let mut s = Script::new();
        let mut f = Forwarder::new(90_000, Some(2), 64);
        let all = [0, 1, 2];
        assert_eq!(
            f.decide(&s.packet(2, 100, 0, false, &all)),
            Decision::Drop(DropReason::WaitingForKeyframe)
        );
        assert_eq!(f.take_keyframe_request(), Some(2));
        assert_eq!(
            f.take_keyframe_request(),
            None,
            "asked once, not per packet"
        );
        assert_eq!(
            f.decide(&s.packet(0, 5, 0, true, &all)),
            Decision::Drop(DropReason::OtherLayer)
        );
        let d = f.decide(&s.packet(2, 101, 3000, true, &all));
        assert!(matches!(
            d,
            Decision::Forward(Forward { switched: true, .. })
        ));
        assert_eq!(f.current(), Some(2));
        assert_eq!(
            out_seq(f.decide(&s.packet(2, 102, 3000, false, &all))),
            out_seq(d) + 1
        );
    }

    #[test]
    fn switch_down_keeps_the_current_layer_until_the_keyframe() {
        let mut s = Script::new();
        let all = [0, 1, 2];
        let mut f = Forwarder::new(90_000, Some(2), 64);
        let first = out_seq(f.decide(&s.packet(2, 1000, 0, true, &all)));
        f.set_desired(Some(0));
        assert_eq!(f.target(), Some(0));
        // Layer 2 keeps flowing while layer 0 has no keyframe yet.
        assert_eq!(
            out_seq(f.decide(&s.packet(2, 1001, 0, false, &all))),
            first + 1
        );
        assert_eq!(
            f.decide(&s.packet(0, 50, 10, false, &all)),
            Decision::Drop(DropReason::WaitingForKeyframe)
        );
        assert_eq!(f.take_keyframe_request(), Some(0));
        let d = f.decide(&s.packet(0, 51, 20, true, &all));
        assert_eq!(out_seq(d), first + 2, "continuous across the switch");
        assert_eq!(
            f.decide(&s.packet(2, 1002, 3000, false, &all)),
            Decision::Drop(DropReason::OtherLayer),
            "nothing of the old layer after the switch"
        );
    }

    #[test]
    fn timestamps_stay_monotonic_across_layers() {
        let mut s = Script::new();
        let all = [0, 1, 2];
        let mut f = Forwarder::new(90_000, Some(0), 64);
        let ts = |d: Decision| match d {
            Decision::Forward(f) => f.ts,
            other => panic!("{other:?}"),
        };
        let a = ts(f.decide(&s.packet(0, 1, 1_000_000, true, &all)));
        f.set_desired(Some(2));
        // Layer 2's clock is unrelated (smaller): the output still moves forward.
        let b = ts(f.decide(&s.packet(2, 1, 5, true, &all)));
        assert!(b > a, "{b} > {a}");
        assert_eq!(b - a, 900, "10 ms at 90 kHz");
    }

    #[test]
    fn stopped_layer_moves_subscribers_down_and_back_up() {
        let mut s = Script::new();
        let mut f = Forwarder::new(90_000, Some(2), 64);
        out_seq(f.decide(&s.packet(2, 10, 0, true, &[0, 1, 2])));
        // The publisher stops sending layer 2 (its bandwidth dropped).
        assert_eq!(
            f.decide(&s.packet(1, 20, 0, false, &[0, 1])),
            Decision::Drop(DropReason::WaitingForKeyframe)
        );
        assert_eq!(f.target(), Some(1));
        assert_eq!(f.take_keyframe_request(), Some(1));
        out_seq(f.decide(&s.packet(1, 21, 0, true, &[0, 1])));
        assert_eq!(f.current(), Some(1));
        // Layer 2 is back: up again, at its keyframe.
        f.decide(&s.packet(2, 30, 0, false, &[0, 1, 2]));
        assert_eq!(f.target(), Some(2));
        out_seq(f.decide(&s.packet(2, 31, 0, true, &[0, 1, 2])));
        assert_eq!(f.current(), Some(2));
    }

    #[test]
    fn off_forwards_nothing_and_resumes_on_a_keyframe() {
        let mut s = Script::new();
        let all = [0];
        let mut f = Forwarder::new(90_000, Some(0), 64);
        let first = out_seq(f.decide(&s.packet(0, 1, 0, true, &all)));
        f.set_desired(None);
        for seq in 2..10 {
            assert_eq!(
                f.decide(&s.packet(0, seq, 0, seq == 5, &all)),
                Decision::Drop(DropReason::Paused)
            );
        }
        f.set_desired(Some(0));
        assert_eq!(
            f.decide(&s.packet(0, 10, 0, false, &all)),
            Decision::Drop(DropReason::WaitingForKeyframe)
        );
        assert_eq!(
            out_seq(f.decide(&s.packet(0, 11, 0, true, &all))),
            first + 1,
            "no gap for the pause"
        );
    }

    #[test]
    fn a_late_keyframe_start_does_not_switch() {
        let mut s = Script::new();
        let mut f = Forwarder::new(90_000, Some(0), 64);
        // The keyframe's first packet (10) was lost; 11 and 12 of the same frame arrive.
        for seq in [11, 12] {
            assert_eq!(
                f.decide(&s.packet(0, seq, 0, false, &[0])),
                Decision::Drop(DropReason::WaitingForKeyframe)
            );
        }
        // Its retransmission: switching here would leave 11 and 12 as holes.
        let mut late = s.packet(0, 10, 0, true, &[0]);
        late.newest = false;
        assert_eq!(
            f.decide(&late),
            Decision::Drop(DropReason::WaitingForKeyframe)
        );
        assert_eq!(f.current(), None);
        assert!(matches!(
            f.decide(&s.packet(0, 20, 0, true, &[0])),
            Decision::Forward(Forward { switched: true, .. })
        ));
    }

    #[test]
    fn a_late_padding_packet_is_not_forwarded_into_its_slot() {
        let mut s = Script::new();
        let mut f = Forwarder::new(90_000, Some(2), 64);
        out_seq(f.decide(&s.packet(2, 10, 0, true, &[2])));
        let mut pad = s.packet(2, 120, 0, true, &[2]);
        pad.padding_only = true;
        assert_eq!(f.decide(&pad), Decision::Drop(DropReason::Padding));
        f.set_desired(None);
        let mut late_pad = s.packet(2, 107, 0, false, &[2]);
        late_pad.padding_only = true;
        late_pad.newest = false;
        assert_eq!(f.decide(&late_pad), Decision::Drop(DropReason::Padding));
    }

    #[test]
    fn padding_is_dropped_without_a_gap() {
        let mut s = Script::new();
        let mut f = Forwarder::new(90_000, Some(0), 64);
        let first = out_seq(f.decide(&s.packet(0, 1, 0, true, &[0])));
        let mut pad = s.packet(0, 2, 0, false, &[0]);
        pad.padding_only = true;
        assert_eq!(f.decide(&pad), Decision::Drop(DropReason::Padding));
        assert_eq!(
            out_seq(f.decide(&s.packet(0, 3, 0, false, &[0]))),
            first + 1
        );
        let resend = f
            .resend(first + 1, s.t0, Duration::from_millis(100))
            .unwrap();
        assert_eq!((resend.layer, resend.in_seq), (0, 3));
    }
}
