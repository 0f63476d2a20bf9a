//! A deterministic simulcast scenario, faster than real time: one publisher sends three
//! layers at 20 fps through a lossy, reordering upstream; ten subscribers change what they
//! want at random moments. Every subscriber's output must be a valid stream:
//! - sequence numbers continuous (no hole, no duplicate) once late packets have landed;
//! - timestamps monotonic in sequence order;
//! - every layer switch begins on a keyframe of the new layer;
//! - no packet of a layer the subscriber was not on, and each switch goes to the layer its
//!   wish allowed among those arriving.
//!
//! The receive side here is the same sans-IO pieces the server uses (unwrappers, cache for
//! duplicate detection, layer monitor); only the network is simulated.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::{Duration, Instant};

use switchyard_router::media::cache::PacketCache;
use switchyard_router::media::forwarder::{Decision, Forwarder, PacketMeta};
use switchyard_router::media::layers::{pick, Arrival, Layer, LayerMonitor, LayerSet};
use switchyard_router::media::seq::{wire_seq, wire_ts, SeqUnwrapper, TsUnwrapper};

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct WirePacket {
    layer: Layer,
    seq: u16,
    ts: u32,
    keyframe_start: bool,
}

/// The publisher: per layer its own sequence and timestamp spaces (starting near their
/// wrap points), packets per frame growing with the layer, keyframes every 3 s and on
/// request.
struct Publisher {
    seq: [u16; 3],
    ts: [u32; 3],
    keyframe_due: [bool; 3],
    frames: u64,
}

const FRAME: Duration = Duration::from_millis(50);
const PACKETS_PER_FRAME: [u64; 3] = [1, 3, 6];

impl Publisher {
    fn frame(&mut self, sending: LayerSet) -> Vec<WirePacket> {
        let periodic = self.frames % 60 == 0;
        self.frames += 1;
        let mut out = Vec::new();
        for layer in sending.iter() {
            let l = layer as usize;
            let key = periodic || std::mem::take(&mut self.keyframe_due[l]);
            for i in 0..PACKETS_PER_FRAME[l] {
                out.push(WirePacket {
                    layer,
                    seq: self.seq[l],
                    ts: self.ts[l],
                    keyframe_start: key && i == 0,
                });
                self.seq[l] = self.seq[l].wrapping_add(1);
            }
            self.ts[l] = self.ts[l].wrapping_add(4500); // 50 ms at 90 kHz
        }
        out
    }
}

/// What one subscriber received, keyed by extended output sequence number.
#[derive(Debug, Clone, Copy)]
struct Out {
    ts: u64,
    layer: Layer,
    keyframe_start: bool,
}

struct Subscriber {
    forwarder: Forwarder,
    out: BTreeMap<u64, Out>,
    out_unwrap: SeqUnwrapper,
    out_ts_unwrap: TsUnwrapper,
    /// (layer switched to, what pick() allowed at that moment, what the subscriber wished).
    switches: Vec<(Layer, Option<Layer>, Option<Layer>)>,
    /// Every decision, for the failure message: (layer, in seq, keyframe, wish, outcome).
    log: Vec<String>,
}

#[test]
fn ten_subscribers_random_switches_lossy_upstream() {
    for seed in 1..=8u64 {
        run(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    }
}

fn run(seed: u64) {
    let mut rng = Rng(seed);
    let t0 = Instant::now();
    let mut publisher = Publisher {
        seq: [65_500, 200, 65_000],
        ts: [u32::MAX - 20_000, 7, 3_000_000_000],
        keyframe_due: [false; 3],
        frames: 0,
    };
    let mut unwrap_seq = [SeqUnwrapper::new(); 3];
    let mut unwrap_ts = [TsUnwrapper::new(); 3];
    let mut caches: Vec<PacketCache<()>> = (0..3).map(|_| PacketCache::new(1024)).collect();
    let mut monitor = LayerMonitor::new(Duration::from_millis(500));
    let mut subscribers: Vec<Subscriber> = (0..10)
        .map(|i| Subscriber {
            forwarder: Forwarder::new(90_000, Some((i % 3) as Layer), 512),
            out: BTreeMap::new(),
            out_unwrap: SeqUnwrapper::new(),
            out_ts_unwrap: TsUnwrapper::new(),
            switches: Vec::new(),
            log: Vec::new(),
        })
        .collect();

    // Arrivals at the router, ordered by time (then by packet for determinism).
    let mut network: BinaryHeap<Reverse<(Duration, WirePacket)>> = BinaryHeap::new();
    let mut lost = 0;
    let mut forwarded = 0u64;
    let total_frames = 20 * 30; // 30 s of video
    for frame in 0..=total_frames + 10 {
        let now_offset = FRAME * frame;
        // Layer 2 stops from 10 s to 15 s (the publisher's uplink got worse).
        let sending = if (200..300).contains(&frame) {
            LayerSet::of(&[0, 1])
        } else {
            LayerSet::of(&[0, 1, 2])
        };
        if frame < total_frames {
            for packet in publisher.frame(sending) {
                let mut at = now_offset + Duration::from_millis(rng.range(1, 5));
                if rng.chance(5) {
                    // Lost, then retransmitted after a NACK round trip.
                    lost += 1;
                    at += Duration::from_millis(rng.range(40, 120));
                } else if rng.chance(5) {
                    at += Duration::from_millis(rng.range(5, 30)); // reordered
                }
                network.push(Reverse((at, packet)));
            }
        }
        // Subscribers change their minds now and then (off included).
        for s in subscribers.iter_mut() {
            if rng.chance(3) {
                let wish = match rng.next() % 5 {
                    0 => None,
                    n => Some(((n - 1) % 3) as Layer),
                };
                s.forwarder.set_desired(wish);
            }
        }
        // Deliver everything that has arrived by the end of this frame interval.
        let until = now_offset + FRAME;
        while let Some(Reverse((at, _))) = network.peek() {
            if *at > until {
                break;
            }
            let Reverse((at, packet)) = network.pop().unwrap();
            let now = t0 + at;
            let l = packet.layer as usize;
            let newest = unwrap_seq[l]
                .highest()
                .is_none_or(|h| unwrap_seq[l].peek(packet.seq as u64) > h);
            let seq = unwrap_seq[l].unwrap(packet.seq as u64);
            let ts = unwrap_ts[l].unwrap(packet.ts as u64);
            if !caches[l].insert(seq, (), now) {
                continue; // duplicate
            }
            monitor.on_packet(packet.layer, Arrival::Media { ts, bytes: 1200 }, now);
            let available = monitor.available(now);
            let meta = PacketMeta {
                layer: packet.layer,
                seq,
                ts,
                keyframe_start: packet.keyframe_start,
                newest,
                padding_only: false,
                vp8: None,
                available,
                now,
            };
            for s in subscribers.iter_mut() {
                let before = s.forwarder.current();
                let decision = s.forwarder.decide(&meta);
                s.log.push(format!(
                    "layer {} seq {} key {} wish {:?} avail {:?} -> {:?}",
                    packet.layer,
                    seq,
                    packet.keyframe_start,
                    s.forwarder.desired(),
                    available,
                    decision
                ));
                if let Some(layer) = s.forwarder.take_keyframe_request() {
                    publisher.keyframe_due[layer as usize] = true;
                }
                let Decision::Forward(f) = decision else {
                    continue;
                };
                forwarded += 1;
                assert!(
                    s.forwarder.desired().is_some() || !newest,
                    "seed {seed:#x}: a new packet forwarded to a subscriber that asked for nothing"
                );
                if f.switched {
                    assert_ne!(before, Some(packet.layer));
                    s.switches.push((
                        packet.layer,
                        pick(s.forwarder.desired(), available),
                        s.forwarder.desired(),
                    ));
                }
                // What the subscriber sees: 16-bit and 32-bit values on the wire.
                let seq_out = s.out_unwrap.unwrap(wire_seq(f.seq) as u64);
                let ts_out = s.out_ts_unwrap.unwrap(wire_ts(f.ts) as u64);
                let previous = s.out.insert(
                    seq_out,
                    Out {
                        ts: ts_out,
                        layer: packet.layer,
                        keyframe_start: packet.keyframe_start,
                    },
                );
                assert!(
                    previous.is_none(),
                    "duplicate output sequence number {seq_out}"
                );
            }
        }
    }
    assert!(lost > 100, "the scenario must exercise loss ({lost})");
    assert!(forwarded > 8_000, "forwarded {forwarded}");

    for (i, s) in subscribers.iter().enumerate() {
        let seqs: Vec<u64> = s.out.keys().copied().collect();
        assert!(!seqs.is_empty(), "subscriber {i} received nothing");
        // Continuous: no hole anywhere.
        let holes: Vec<u64> = seqs
            .windows(2)
            .filter(|w| w[1] != w[0] + 1)
            .map(|w| w[0] + 1)
            .collect();
        if let Some(&hole) = holes.first() {
            let near: Vec<&String> = s
                .log
                .iter()
                .filter(|l| {
                    (hole - 3..=hole + 3).any(|n| {
                        l.contains(&format!("seq {n} ")) || l.contains(&format!("seq: {n},"))
                    })
                })
                .collect();
            panic!("seed {seed:#x} subscriber {i}: holes at {holes:?}; decisions next to the first: {near:#?}");
        }
        // Monotonic timestamps in sequence order; a switch starts on a keyframe.
        let mut previous: Option<&Out> = None;
        let mut runs = 0;
        for (seq, out) in &s.out {
            if let Some(p) = previous {
                assert!(
                    out.ts >= p.ts,
                    "subscriber {i}: timestamp goes back at {seq}"
                );
                if out.layer != p.layer {
                    assert!(
                        out.keyframe_start,
                        "subscriber {i}: switch to layer {} at {seq} not on a keyframe",
                        out.layer
                    );
                    runs += 1;
                }
            } else {
                assert!(
                    out.keyframe_start,
                    "subscriber {i}: stream does not start on a keyframe"
                );
            }
            previous = Some(out);
        }
        // Every switch went to the layer the wish allowed among those arriving.
        for (layer, allowed, _) in &s.switches {
            assert_eq!(
                Some(*layer),
                *allowed,
                "subscriber {i} switched to a layer it was not on"
            );
        }
        assert!(
            runs >= 3,
            "subscriber {i} switched only {runs} times: the scenario is too tame"
        );
    }
    // Subscribers wanting high moved down while layer 2 was gone, and up again after.
    let all_switches = || subscribers.iter().flat_map(|s| s.switches.iter());
    assert!(all_switches().any(|(l, _, wish)| *wish == Some(2) && *l < 2));
    assert!(all_switches().any(|(l, _, _)| *l == 2));
}
