//! The cost of the forwarding decision: nanoseconds per packet per subscriber.
//!
//! `cargo bench -p switchyard-router --bench forwarder`
//!
//! Steady state (a subscriber settled on its layer) is what the hot path does for almost
//! every packet; "mixed" adds the packets of the other layers that are dropped, as a
//! simulcast subscriber sees them.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use switchyard_router::media::forwarder::{Decision, Forwarder, PacketMeta};
use switchyard_router::media::layers::LayerSet;

const BATCH: u64 = 1000;

fn bench(c: &mut Criterion) {
    let t0 = Instant::now();
    let all = LayerSet::of(&[0, 1, 2]);
    let meta = |layer, seq: u64, key| PacketMeta {
        layer,
        seq,
        ts: seq * 3000,
        keyframe_start: key,
        newest: true,
        padding_only: false,
        vp8: None,
        available: all,
        now: t0 + Duration::from_micros(seq * 100),
    };

    let mut group = c.benchmark_group("forwarder");
    group.throughput(Throughput::Elements(BATCH));

    group.bench_function("steady_state_per_packet", |b| {
        let mut f = Forwarder::new(90_000, Some(1), 512);
        let mut seq = 1_000u64;
        f.decide(&meta(1, seq, true));
        b.iter(|| {
            for _ in 0..BATCH {
                seq += 1;
                let d = f.decide(black_box(&meta(1, seq, false)));
                debug_assert!(matches!(d, Decision::Forward(_)));
                black_box(d);
            }
        });
    });

    group.bench_function("simulcast_mixed_per_packet", |b| {
        let mut f = Forwarder::new(90_000, Some(1), 512);
        let mut seqs = [10u64, 1_000, 50_000];
        f.decide(&meta(1, seqs[1], true));
        b.iter(|| {
            for i in 0..BATCH {
                // 1 low, 3 medium, 6 high packets per frame, as browsers roughly send.
                let layer = match i % 10 {
                    0 => 0,
                    1..=3 => 1,
                    _ => 2,
                };
                seqs[layer as usize] += 1;
                black_box(f.decide(black_box(&meta(layer, seqs[layer as usize], false))));
            }
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
