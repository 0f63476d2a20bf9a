//! Per-subscriber rewriting of sequence numbers and timestamps.
//!
//! A subscriber receives one continuous RTP stream although what feeds it changes: the
//! router switches simulcast layers (each its own SSRC, sequence and timestamp space) and
//! drops packets it does not forward (padding, for instance). A receiver reads any gap in
//! sequence numbers as loss and NACKs it, and a timestamp going backwards as garbage.
//!
//! The munger keeps a short history of *segments*: from input sequence `in_start` on
//! layer `layer`, output sequence numbers continue from `out_start`. A segment's output
//! range ends where the next one begins, so a late packet (reordered, or retransmitted
//! upstream) still maps into its own segment, and can never collide with a later output.
//! Real upstream loss stays visible as a gap (so the subscriber NACKs and the router
//! answers from its cache); only packets the router chose not to forward are squeezed out.
//!
//! All values are extended (64-bit, see [`super::seq`]).

use std::collections::VecDeque;

/// How many segments are remembered for late packets and NACK lookups. A segment begins
/// at each layer switch and after each dropped packet; 64 covers well over a second.
const MAX_SEGMENTS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    layer: u8,
    in_start: u64,
    out_start: u64,
    /// `out_ts = in_ts + ts_delta` (wrapping): aligns this layer's clock to the output's.
    ts_delta: u64,
}

/// The rewritten sequence number and timestamp of one packet (extended).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Munged {
    pub seq: u64,
    pub ts: u64,
}

#[derive(Debug, Default)]
pub struct RtpMunger {
    segments: VecDeque<Segment>,
    /// Highest input sequence number seen in the newest segment.
    highest_in: Option<u64>,
    highest_out_seq: Option<u64>,
    highest_out_ts: Option<u64>,
    /// Where the newest segment's output ends once forwarding stopped (`off`): nothing new
    /// of its layer may follow, only late packets inside it.
    closed_at: Option<u64>,
}

impl RtpMunger {
    pub fn new() -> Self {
        RtpMunger::default()
    }

    /// Whether any packet has been forwarded yet.
    pub fn started(&self) -> bool {
        !self.segments.is_empty()
    }

    pub fn highest_out_seq(&self) -> Option<u64> {
        self.highest_out_seq
    }

    /// The timestamp of the packet with the highest output sequence number.
    pub fn highest_out_ts(&self) -> Option<u64> {
        self.highest_out_ts
    }

    /// Begins forwarding `layer` at the packet (`in_seq`, `in_ts`): its output continues
    /// right after the last one, its timestamp `ts_advance` ticks after the last one (the
    /// caller derives that from wall-clock time, so playout timing is kept across layers).
    pub fn switch_to(&mut self, layer: u8, in_seq: u64, in_ts: u64, ts_advance: u64) {
        let out_start = self.highest_out_seq.map_or(in_seq, |h| h + 1);
        let out_ts = self
            .highest_out_ts
            .map_or(in_ts, |h| h.wrapping_add(ts_advance.max(1)));
        self.push(Segment {
            layer,
            in_start: in_seq,
            out_start,
            ts_delta: out_ts.wrapping_sub(in_ts),
        });
        self.highest_in = None;
        self.closed_at = None;
    }

    /// Forwarding stopped (the subscriber paused): the newest segment ends after the last
    /// packet sent, so only late packets inside it can still be placed.
    pub fn close(&mut self) {
        if !self.segments.is_empty() && self.closed_at.is_none() {
            self.closed_at = Some(self.highest_out_seq.map_or(0, |h| h + 1));
        }
    }

    /// Rewrites a packet of `layer`. `None`: it belongs to no segment the subscriber was
    /// on (before the switch to this layer, or too old to place without a collision).
    pub fn munge(&mut self, layer: u8, in_seq: u64, in_ts: u64) -> Option<Munged> {
        let (index, segment) = self.segment_of(layer, in_seq)?;
        let out = Munged {
            seq: segment.out_start + (in_seq - segment.in_start),
            ts: in_ts.wrapping_add(segment.ts_delta),
        };
        if index + 1 == self.segments.len() && self.highest_in.is_none_or(|h| in_seq > h) {
            self.highest_in = Some(in_seq);
        }
        if self.highest_out_seq.is_none_or(|h| out.seq > h) {
            self.highest_out_seq = Some(out.seq);
            self.highest_out_ts = Some(out.ts);
        }
        Some(out)
    }

    /// A packet of the current layer that will not be forwarded (padding, a muted
    /// track's packet): later packets move up to close its slot. A late packet skipped
    /// after newer ones went out cannot be squeezed out; its slot stays empty.
    pub fn skip(&mut self, layer: u8, in_seq: u64) {
        let Some(&current) = self.segments.back() else {
            return;
        };
        if self.closed_at.is_some() {
            return;
        }
        if current.layer != layer
            || in_seq < current.in_start
            || self.highest_in.is_some_and(|h| in_seq <= h)
        {
            return;
        }
        let slot = current.out_start + (in_seq - current.in_start);
        self.push(Segment {
            layer,
            in_start: in_seq + 1,
            out_start: slot,
            ts_delta: current.ts_delta,
        });
        // The packets between the highest and the skipped one, if they arrive late, still
        // map into `current` below `slot`.
        self.highest_in = Some(in_seq);
    }

    fn segment_of(&self, layer: u8, in_seq: u64) -> Option<(usize, Segment)> {
        // Newest first: nearly every packet belongs to the newest segment. A segment's
        // output ends below the start of *every* later one, not just the next: a skip keeps
        // the slots of a layer's lost packets, so a later switch to another layer can start
        // below them (found by fuzz/router_core: a late packet of the old layer landed in
        // the new layer's numbers).
        let mut later_out_start = self.closed_at;
        for (index, segment) in self.segments.iter().enumerate().rev() {
            if segment.layer == layer && in_seq >= segment.in_start {
                let out = segment.out_start + (in_seq - segment.in_start);
                return later_out_start
                    .is_none_or(|n| out < n)
                    .then_some((index, *segment));
            }
            later_out_start =
                Some(later_out_start.map_or(segment.out_start, |n| n.min(segment.out_start)));
        }
        None
    }

    fn push(&mut self, segment: Segment) {
        if self.segments.len() == MAX_SEGMENTS {
            self.segments.pop_front();
        }
        self.segments.push_back(segment);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    enum Op {
        /// (layer, in_seq, in_ts) → expected (out_seq, out_ts), or None for a drop.
        Munge(u8, u64, u64, Option<(u64, u64)>),
        Switch(u8, u64, u64, u64),
        Skip(u8, u64),
    }
    use Op::*;

    fn run(ops: &[Op]) {
        let mut m = RtpMunger::new();
        for (i, op) in ops.iter().enumerate() {
            match *op {
                Munge(layer, seq, ts, expected) => {
                    let got = m.munge(layer, seq, ts).map(|o| (o.seq, o.ts));
                    assert_eq!(got, expected, "step {i}: munge({layer}, {seq}, {ts})");
                }
                Switch(layer, seq, ts, advance) => m.switch_to(layer, seq, ts, advance),
                Skip(layer, seq) => m.skip(layer, seq),
            }
        }
    }

    #[test]
    fn steady_forwarding_passes_through_with_gaps_for_real_loss() {
        run(&[
            Munge(0, 100, 9000, None), // nothing before the first switch
            Switch(0, 100, 9000, 0),
            Munge(0, 100, 9000, Some((100, 9000))),
            Munge(0, 101, 9000, Some((101, 9000))),
            Munge(0, 103, 12000, Some((103, 12000))), // 102 lost upstream: the gap stays
            Munge(0, 102, 9000, Some((102, 9000))),   // ... and the retransmission fills it
            Munge(0, 99, 6000, None),                 // from before the switch
        ]);
    }

    #[test]
    fn switch_up_and_down_continues_the_output() {
        run(&[
            Switch(0, 100, 9000, 0),
            Munge(0, 100, 9000, Some((100, 9000))),
            Munge(0, 101, 12000, Some((101, 12000))),
            // Up to layer 2 (another SSRC, far-away numbers), 50 ms later at 90 kHz.
            Switch(2, 70_000, 5_000_000, 4500),
            Munge(2, 70_000, 5_000_000, Some((102, 16500))),
            Munge(2, 70_001, 5_003_000, Some((103, 19500))),
            Munge(0, 102, 15000, None), // the old layer is no longer forwarded
            Switch(1, 500, 77, 3000),
            Munge(1, 500, 77, Some((104, 22500))),
        ]);
    }

    #[test]
    fn late_packet_of_the_previous_layer_fills_its_own_slot() {
        run(&[
            Switch(0, 10, 0, 0),
            Munge(0, 10, 0, Some((10, 0))),
            Munge(0, 12, 6000, Some((12, 6000))), // 11 lost upstream
            Switch(1, 900, 100, 3000),
            Munge(1, 900, 100, Some((13, 9000))),
            Munge(0, 11, 3000, Some((11, 3000))), // retransmitted late: its own slot
            Munge(0, 13, 9000, None),             // would collide with layer 1's output
        ]);
    }

    #[test]
    fn skipped_packets_leave_no_gap() {
        run(&[
            Switch(0, 10, 0, 0),
            Munge(0, 10, 0, Some((10, 0))),
            Skip(0, 11), // padding
            Munge(0, 12, 3000, Some((11, 3000))),
            Skip(0, 14), // 13 lost upstream, 14 padding
            Munge(0, 15, 6000, Some((13, 6000))),
            Munge(0, 13, 3000, Some((12, 3000))), // 13's retransmission keeps its slot
            Skip(0, 12),                          // late skip: nothing to squeeze
            Munge(0, 16, 6000, Some((14, 6000))),
        ]);
    }

    #[test]
    fn a_late_packet_never_lands_in_a_later_layers_numbers() {
        run(&[
            Switch(0, 999, 0, 0),
            Munge(0, 999, 0, Some((999, 0))),
            // 1000..=1056 lost upstream, 1057 padding: its slot (1057) is kept for later.
            Skip(0, 1057),
            // Switch to layer 1 right after the last packet sent (999).
            Switch(1, 1058, 0, 1),
            Munge(1, 1058, 0, Some((1000, 1))),
            // Layer 0's 1030 arrives late: its slot 1030 is now layer 1's.
            Munge(0, 1030, 0, None),
            Munge(1, 1088, 0, Some((1030, 1))),
        ]);
    }

    #[test]
    fn closed_segment_takes_late_packets_only() {
        let mut m = RtpMunger::new();
        m.switch_to(0, 10, 0, 0);
        m.munge(0, 10, 0).unwrap();
        m.munge(0, 12, 0).unwrap(); // 11 lost
        m.close();
        assert_eq!(m.munge(0, 13, 0), None, "nothing new after close");
        assert_eq!(
            m.munge(0, 11, 0).map(|o| o.seq),
            Some(11),
            "the late one fills its slot"
        );
        m.switch_to(0, 40, 0, 1);
        assert_eq!(
            m.munge(0, 40, 0).map(|o| o.seq),
            Some(13),
            "resuming continues the output"
        );
    }

    #[test]
    fn sixteen_bit_wraparound_is_only_on_the_wire() {
        use crate::media::seq::{wire_seq, SeqUnwrapper};
        let mut unwrap = SeqUnwrapper::new();
        let mut m = RtpMunger::new();
        let first = unwrap.unwrap(65534);
        m.switch_to(0, first, 0, 0);
        let outs: Vec<u16> = [65534u64, 65535, 0, 1]
            .iter()
            .map(|&s| wire_seq(m.munge(0, unwrap.unwrap(s), 0).unwrap().seq))
            .collect();
        assert_eq!(outs, vec![65534, 65535, 0, 1]);
    }

    #[test]
    fn thirty_two_bit_timestamp_wraparound() {
        use crate::media::seq::wire_ts;
        let mut m = RtpMunger::new();
        let near_top = u32::MAX as u64 - 100;
        m.switch_to(0, 1, near_top, 0);
        m.munge(0, 1, near_top).unwrap();
        // Switch to a layer whose clock is elsewhere; output crosses 2^32 smoothly.
        m.switch_to(1, 50, 7, 3000);
        let out = m.munge(1, 50, 7).unwrap();
        assert_eq!(out.ts, near_top + 3000);
        assert_eq!(wire_ts(out.ts), 2899);
    }

    #[test]
    fn history_is_bounded() {
        let mut m = RtpMunger::new();
        m.switch_to(0, 0, 0, 0);
        for seq in 0..1000u64 {
            if seq % 2 == 0 {
                m.munge(0, seq, seq).unwrap();
            } else {
                m.skip(0, seq);
            }
        }
        assert!(m.segments.len() <= MAX_SEGMENTS);
        assert_eq!(m.highest_out_seq(), Some(499));
        assert_eq!(m.munge(0, 998, 998).map(|o| o.seq), Some(499));
    }
}
