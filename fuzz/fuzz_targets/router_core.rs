//! The router core (one published track and its subscribers, sans-IO) driven by any
//! sequence of packets (any layer, sequence jumps and reordering, keyframes, padding,
//! garbage VP8 descriptors), NACKs, subscribers' wishes, mutes, subscribes and time.
//!
//! Invariants, per subscriber:
//! - every packet that goes out under a sequence number is the same bytes (sequence
//!   number, timestamp, payload with its VP8 rewrite) as the first one under it: an SRTP
//!   nonce is never used for two plaintexts; a resend is only of something sent;
//! - nothing goes to a subscriber that is not subscribed; to one that is paused (`off`) or
//!   while the track is muted, only a late packet older than what had arrived on its layer
//!   before (it fills a gap the publisher's loss left); padding never goes out;
//! - a NACK accounts for every sequence number it looked at (resent, recent,
//!   unavailable or over the limit), looks at no more than its limit and resends no more
//!   than its budget.
#![no_main]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use switchyard_router::media::seq::SeqUnwrapper;
use switchyard_router::media::vp8;
use switchyard_router::track::{Incoming, NackLimits, Outgoing, TrackCore};
use switchyard_router::ParticipantId;

const SUBSCRIBERS: u8 = 3;

#[derive(Arbitrary, Debug)]
enum Op {
    Packet {
        layer: u8,
        seq_step: i8,
        ts_step: u16,
        keyframe: bool,
        padding: bool,
        /// Payload: a VP8 descriptor when it parses, anything otherwise.
        payload: Vec<u8>,
    },
    Nack {
        subscriber: u8,
        /// Offsets back from the subscriber's newest sequence number.
        back: Vec<u16>,
        max_examined: u8,
        max_resends: u8,
    },
    Desired {
        subscriber: u8,
        layer: Option<u8>,
    },
    Mute(bool),
    Subscribe(u8),
    Unsubscribe(u8),
    Wait(u16),
}

/// A received packet as the core holds it, with what the harness knows of it.
struct Pkt {
    layer: u8,
    /// Its extended sequence number in its layer (unwrapped as the core does).
    ext_seq: u64,
    payload: Vec<u8>,
}

/// The bytes a subscriber would receive for `out`.
fn on_the_wire(out: &Outgoing<Arc<Pkt>>) -> Vec<u8> {
    let mut payload = out.packet.payload.clone();
    if let (Some(rewrite), Some(descriptor)) = (out.forward.vp8, &out.vp8) {
        vp8::rewrite(&mut payload, descriptor, rewrite.picture_id, rewrite.tl0picidx);
    }
    let mut wire = (out.forward.seq as u16).to_be_bytes().to_vec();
    wire.extend((out.forward.ts as u32).to_be_bytes());
    wire.extend(payload);
    wire
}

struct Subscriber {
    subscribed: bool,
    wants: Option<u8>,
    /// While paused or muted: per layer, the newest sequence number that had arrived when
    /// that began. Only older packets (late ones, filling gaps) may still go out.
    frozen_at: Option<[Option<u64>; 3]>,
    /// What went out under each (extended) output sequence number.
    sent: HashMap<u64, Vec<u8>>,
    newest: u64,
}

/// Records when `s` stops (or starts again) getting new packets: what had arrived then.
fn freeze(s: &mut Subscriber, muted: bool, arrived: &[SeqUnwrapper; 3]) {
    let forwarding = !muted && s.wants.is_some();
    match (forwarding, s.frozen_at) {
        (false, None) => s.frozen_at = Some(arrived.map(|u| u.highest())),
        (true, Some(_)) => s.frozen_at = None,
        _ => {}
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let mut now = Instant::now();
    let mut core: TrackCore<Arc<Pkt>, u8> =
        TrackCore::new(90_000, 64, Duration::from_millis(500)).with_send_history(32);
    let mut subscribers: Vec<Subscriber> = (0..SUBSCRIBERS)
        .map(|_| Subscriber {
            subscribed: false,
            wants: None,
            frozen_at: None,
            sent: HashMap::new(),
            newest: 0,
        })
        .collect();
    let mut layers = [(1000u16, 0u32); 3];
    let mut unwrappers = [SeqUnwrapper::new(); 3];
    let mut muted = false;
    let mut deliveries = Vec::new();

    let check = |deliveries: &mut Vec<(u8, Outgoing<Arc<Pkt>>)>,
                 subscribers: &mut Vec<Subscriber>| {
        for (sink, out) in deliveries.drain(..) {
            let s = &mut subscribers[sink as usize];
            assert!(s.subscribed, "a delivery to subscriber {sink}, not subscribed");
            assert!(!out.packet.payload.is_empty(), "padding went out");
            let bytes = on_the_wire(&out);
            match s.sent.get(&out.forward.seq) {
                Some(first) => assert_eq!(
                    first, &bytes,
                    "sequence number {} went out twice with other bytes",
                    out.forward.seq
                ),
                None => {
                    assert!(!out.forward.resend, "a resend of what never went out");
                    if let Some(frozen) = s.frozen_at {
                        let newest = frozen[out.packet.layer as usize];
                        assert!(
                            newest.is_some_and(|n| out.packet.ext_seq < n),
                            "packet {} of layer {} went out while paused or muted (newest {newest:?})",
                            out.packet.ext_seq,
                            out.packet.layer
                        );
                    }
                    s.sent.insert(out.forward.seq, bytes);
                    s.newest = s.newest.max(out.forward.seq);
                }
            }
        }
    };

    for op in ops {
        match op {
            Op::Packet {
                layer,
                seq_step,
                ts_step,
                keyframe,
                padding,
                mut payload,
            } => {
                let layer = layer % 3;
                let (seq, ts) = &mut layers[layer as usize];
                *seq = seq.wrapping_add_signed(i16::from(seq_step));
                *ts = ts.wrapping_add(u32::from(ts_step));
                if padding {
                    payload.clear();
                }
                payload.truncate(64);
                let descriptor = vp8::parse(&payload).ok();
                let keyframe_start = match &descriptor {
                    Some(d) => d.is_keyframe,
                    None => keyframe && !payload.is_empty(),
                };
                let incoming = Incoming {
                    layer,
                    seq: *seq,
                    ts: *ts,
                    keyframe_start,
                    padding_only: payload.is_empty(),
                    vp8: descriptor,
                    bytes: payload.len(),
                    packet: Arc::new(Pkt {
                        layer,
                        ext_seq: unwrappers[layer as usize].unwrap(u64::from(*seq)),
                        payload,
                    }),
                    now,
                };
                core.on_packet(incoming, &mut deliveries);
                check(&mut deliveries, &mut subscribers);
            }
            Op::Nack {
                subscriber,
                back,
                max_examined,
                max_resends,
            } => {
                let index = subscriber % SUBSCRIBERS;
                let newest = subscribers[index as usize].newest;
                let lost: Vec<u16> = back
                    .iter()
                    .map(|b| (newest as u16).wrapping_sub(*b % 64))
                    .collect();
                let limits = NackLimits {
                    max_examined: u32::from(max_examined),
                    max_resends: u32::from(max_resends),
                    min_interval: Duration::from_millis(100),
                };
                let outcome = core.on_nack(
                    &ParticipantId::new(index.to_string()),
                    lost.iter().copied(),
                    limits,
                    now,
                    &mut deliveries,
                );
                let examined = lost.len().min(usize::from(max_examined)) as u32;
                assert_eq!(
                    outcome.resent + outcome.recent + outcome.unavailable + outcome.over_limit,
                    examined,
                    "{outcome:?}"
                );
                assert!(outcome.resent <= u32::from(max_resends));
                assert_eq!(deliveries.len() as u32, outcome.resent);
                check(&mut deliveries, &mut subscribers);
            }
            Op::Desired { subscriber, layer } => {
                let index = subscriber % SUBSCRIBERS;
                let wants = layer.map(|l| l % 3);
                let known = core.set_desired(&ParticipantId::new(index.to_string()), wants);
                let s = &mut subscribers[index as usize];
                assert_eq!(known, s.subscribed);
                if known {
                    s.wants = wants;
                    freeze(s, muted, &unwrappers);
                }
            }
            Op::Mute(on) => {
                core.set_muted(on);
                muted = on;
                for s in &mut subscribers {
                    freeze(s, muted, &unwrappers);
                }
            }
            Op::Subscribe(subscriber) => {
                let index = subscriber % SUBSCRIBERS;
                core.subscribe(ParticipantId::new(index.to_string()), index, Some(2));
                // A new subscription is a new stream (a new SSRC at the subscriber).
                subscribers[index as usize] = Subscriber {
                    subscribed: true,
                    wants: Some(2),
                    frozen_at: None,
                    sent: HashMap::new(),
                    newest: 0,
                };
                freeze(&mut subscribers[index as usize], muted, &unwrappers);
            }
            Op::Unsubscribe(subscriber) => {
                let index = subscriber % SUBSCRIBERS;
                core.unsubscribe(&ParticipantId::new(index.to_string()));
                subscribers[index as usize].subscribed = false;
            }
            Op::Wait(ms) => now += Duration::from_millis(u64::from(ms)),
        }
        assert_eq!(
            core.subscriber_count(),
            subscribers.iter().filter(|s| s.subscribed).count()
        );
    }
});
