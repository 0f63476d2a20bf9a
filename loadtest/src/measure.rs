//! What a receiver measures of each stream it gets: loss from the stamps' counters,
//! one-way latency, interarrival jitter, and for video complete frames, freezes and the
//! first keyframe.
//!
//! Owned by one reader task per received track and never shared while packets flow: the
//! results are handed over once, when the run ends.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::media::{self, Stamp, StreamId, VIDEO_FRAME_INTERVAL};

/// A video track that shows no new complete frame for longer than this is frozen: three
/// frame intervals at 30 fps.
pub const FREEZE_GAP: Duration = Duration::from_millis(100);
const _: () = assert!(3 * VIDEO_FRAME_INTERVAL.as_micros() <= FREEZE_GAP.as_micros());

/// Recent counters remembered per stream, to tell a retransmission or duplicate from a
/// new packet.
const DEDUP_WINDOW: usize = 1024;

/// Latencies are recorded in microseconds, up to a minute, to 2 significant digits (1%:
/// plenty for percentiles, and small enough to keep one histogram per stream).
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 2).expect("valid histogram bounds")
}

/// A packet as the reader got it.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    pub at: Instant,
    /// Receive time on the stamps' clock (µs since the Unix epoch).
    pub at_us: u64,
    /// RTP packet size (header and payload).
    pub bytes: usize,
}

/// One stream (a publisher's audio, or one of its video layers) as one receiver saw it,
/// from its first packet to its last. A receiver that is switched to another layer and
/// back starts a new stream each time, so a layer's counters never span a gap in which
/// the receiver was on another layer.
#[derive(Debug, Clone)]
pub struct StreamResult {
    pub publisher: u32,
    pub stream: StreamId,
    /// Highest counter seen − lowest counter seen + 1.
    pub expected: u64,
    /// Distinct counters seen.
    pub received: u64,
    /// Packets whose counter had already been seen (retransmissions that were not needed).
    pub duplicates: u64,
    /// Packets older than the duplicate window: counted as received.
    pub late: u64,
    pub bytes: u64,
    /// RFC 3550 interarrival jitter over the stamps, in microseconds, at the end.
    pub jitter_us: f64,
    pub first_at: Instant,
    pub last_at: Instant,
    /// One-way latency (receive time − send stamp), µs.
    pub latency: Histogram<u64>,
}

impl StreamResult {
    pub fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.received)
    }
}

struct StreamMeter {
    result: StreamResult,
    lowest: u64,
    highest: u64,
    /// `seen[c % DEDUP_WINDOW] == c` once counter `c` arrived.
    seen: Box<[u64]>,
    last_transit_us: Option<i64>,
}

impl StreamMeter {
    fn new(stamp: &Stamp, arrival: &Arrival) -> StreamMeter {
        StreamMeter {
            result: StreamResult {
                publisher: stamp.publisher,
                stream: stamp.stream,
                expected: 0,
                received: 0,
                duplicates: 0,
                late: 0,
                bytes: 0,
                jitter_us: 0.0,
                first_at: arrival.at,
                last_at: arrival.at,
                latency: latency_histogram(),
            },
            lowest: stamp.counter,
            highest: stamp.counter,
            seen: vec![u64::MAX; DEDUP_WINDOW].into_boxed_slice(),
            last_transit_us: None,
        }
    }

    /// Records a packet; returns whether it was new, and by how much `expected` grew.
    fn on_packet(&mut self, stamp: &Stamp, arrival: &Arrival) -> (bool, u64) {
        let r = &mut self.result;
        r.last_at = arrival.at;
        r.bytes += arrival.bytes as u64;
        let c = stamp.counter;
        let slot = (c % DEDUP_WINDOW as u64) as usize;
        let new = if c + (DEDUP_WINDOW as u64) <= self.highest {
            r.late += 1;
            true
        } else if self.seen[slot] == c {
            r.duplicates += 1;
            false
        } else {
            self.seen[slot] = c;
            true
        };
        let before = r.expected;
        self.lowest = self.lowest.min(c);
        self.highest = self.highest.max(c);
        r.expected = self.highest - self.lowest + 1;
        if !new {
            return (false, r.expected - before);
        }
        r.received += 1;
        let transit = arrival.at_us as i64 - stamp.sent_us as i64;
        r.latency.saturating_record(transit.max(1) as u64);
        // RFC 3550 A.8, with the stamps as send times: J += (|D| - J) / 16.
        if let Some(last) = self.last_transit_us {
            let d = (transit - last).unsigned_abs() as f64;
            r.jitter_us += (d - r.jitter_us) / 16.0;
        }
        self.last_transit_us = Some(transit);
        (true, r.expected - before)
    }
}

/// Complete frames of one received video track, whatever layer they come from.
#[derive(Debug, Clone, Default)]
pub struct VideoResult {
    /// When the first complete keyframe arrived.
    pub first_keyframe_at: Option<Instant>,
    pub frames: u64,
    /// Gaps of more than [`FREEZE_GAP`] between complete frames (a stall still going on
    /// at the end counts too), and their total length.
    pub freezes: u64,
    pub frozen: Duration,
    /// From the first complete keyframe to the end: the time freezes are counted over.
    pub watched: Duration,
}

#[derive(Default)]
struct FrameTracker {
    result: VideoResult,
    current: Option<(StreamId, u32)>,
    packets: u16,
    last_complete: Option<Instant>,
}

impl FrameTracker {
    fn on_new_packet(&mut self, stamp: &Stamp, at: Instant) {
        let frame = (stamp.stream, stamp.frame);
        if self.current != Some(frame) {
            self.current = Some(frame);
            self.packets = 0;
        }
        self.packets += 1;
        if self.packets != stamp.frame_packets {
            return;
        }
        // Complete. A decoder shows nothing before the first keyframe.
        if self.result.first_keyframe_at.is_none() {
            if !stamp.keyframe {
                return;
            }
            self.result.first_keyframe_at = Some(at);
        }
        self.result.frames += 1;
        if let Some(last) = self.last_complete {
            self.gap(at.saturating_duration_since(last));
        }
        self.last_complete = Some(at);
    }

    fn gap(&mut self, gap: Duration) {
        if gap > FREEZE_GAP {
            self.result.freezes += 1;
            self.result.frozen += gap;
        }
    }

    fn finish(mut self, end: Instant) -> VideoResult {
        if let Some(last) = self.last_complete {
            self.gap(end.saturating_duration_since(last));
        }
        if let Some(first) = self.result.first_keyframe_at {
            self.result.watched = end.saturating_duration_since(first);
        }
        self.result
    }
}

/// Everything one received track gave.
#[derive(Debug, Clone)]
pub struct TrackResult {
    pub video: bool,
    /// In the order they started (more than one after a simulcast layer switch).
    pub streams: Vec<StreamResult>,
    /// Only for video tracks.
    pub frames: Option<VideoResult>,
    /// Packets without a stamp (not from a load-test publisher).
    pub unstamped: u64,
}

/// What one packet changed, for the live counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacketEffect {
    pub new: bool,
    pub expected_added: u64,
}

/// The measurements of one received track.
pub struct TrackMeter {
    video: bool,
    current: Option<StreamMeter>,
    done: Vec<StreamResult>,
    frames: FrameTracker,
    unstamped: u64,
}

impl TrackMeter {
    pub fn new(video: bool) -> TrackMeter {
        TrackMeter {
            video,
            current: None,
            done: Vec::new(),
            frames: FrameTracker::default(),
            unstamped: 0,
        }
    }

    /// Measures one received RTP payload.
    pub fn on_payload(&mut self, payload: &[u8], arrival: Arrival) -> PacketEffect {
        let stamp = if self.video {
            media::read_vp8_stamp(payload)
        } else {
            media::read_audio_stamp(payload)
        };
        let Some(stamp) = stamp else {
            self.unstamped += 1;
            return PacketEffect::default();
        };
        let same_stream = self.current.as_ref().is_some_and(|m| {
            m.result.publisher == stamp.publisher && m.result.stream == stamp.stream
        });
        if !same_stream {
            if let Some(previous) = self.current.take() {
                self.done.push(previous.result);
            }
            self.current = Some(StreamMeter::new(&stamp, &arrival));
        }
        let meter = self.current.as_mut().expect("set above");
        let (new, expected_added) = meter.on_packet(&stamp, &arrival);
        if new && self.video {
            self.frames.on_new_packet(&stamp, arrival.at);
        }
        PacketEffect {
            new,
            expected_added,
        }
    }

    /// The results, with freezes counted up to `end` (the end of the measurement).
    pub fn finish(mut self, end: Instant) -> TrackResult {
        if let Some(current) = self.current.take() {
            self.done.push(current.result);
        }
        TrackResult {
            video: self.video,
            streams: self.done,
            frames: self.video.then(|| self.frames.finish(end)),
            unstamped: self.unstamped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{audio_payload, vp8_payload};

    const T0_US: u64 = 1_790_000_000_000_000;

    struct Feed {
        t0: Instant,
        meter: TrackMeter,
        buf: Vec<u8>,
    }

    impl Feed {
        fn new(video: bool) -> Feed {
            Feed {
                t0: Instant::now(),
                meter: TrackMeter::new(video),
                buf: Vec::new(),
            }
        }

        /// Delivers `stamp`, sent at `sent_ms` and received at `recv_ms` (run time).
        fn deliver(&mut self, stamp: Stamp, sent_ms: u64, recv_ms: u64) -> PacketEffect {
            let stamp = Stamp {
                sent_us: T0_US + sent_ms * 1000,
                ..stamp
            };
            if stamp.stream.is_video() {
                vp8_payload(&mut self.buf, 1, 1280, 720, &stamp, 1000, 300);
            } else {
                audio_payload(&mut self.buf, &stamp);
            }
            let arrival = Arrival {
                at: self.t0 + Duration::from_millis(recv_ms),
                at_us: T0_US + recv_ms * 1000,
                bytes: self.buf.len() + 12,
            };
            self.meter.on_payload(&self.buf, arrival)
        }

        fn finish(self, end_ms: u64) -> TrackResult {
            self.meter.finish(self.t0 + Duration::from_millis(end_ms))
        }
    }

    fn audio(counter: u64) -> Stamp {
        Stamp {
            publisher: 3,
            stream: StreamId::AUDIO,
            counter,
            sent_us: 0,
            frame: counter as u32,
            frame_packets: 1,
            index_in_frame: 0,
            keyframe: false,
        }
    }

    fn video(layer: u8, frame: u32, index: u16, packets: u16, keyframe: bool) -> Stamp {
        Stamp {
            publisher: 1,
            stream: StreamId::video(layer),
            counter: u64::from(frame) * u64::from(packets) + u64::from(index),
            sent_us: 0,
            frame,
            frame_packets: packets,
            index_in_frame: index,
            keyframe,
        }
    }

    #[test]
    fn loss_from_counters_with_duplicates_and_reordering() {
        let mut f = Feed::new(false);
        // Counters 10..=19 with 13 and 17 missing, 15 twice, 12 after 14.
        for c in [10, 11, 14, 12, 15, 15, 16, 18, 19] {
            f.deliver(audio(c), c * 20, c * 20 + 5);
        }
        let r = f.finish(1000);
        let s = &r.streams[0];
        assert_eq!(
            (s.expected, s.received, s.lost(), s.duplicates),
            (10, 8, 2, 1)
        );
        assert_eq!(r.frames.as_ref().map(|v| v.frames), None);
    }

    #[test]
    fn live_effects_add_up_to_the_totals() {
        let mut f = Feed::new(false);
        let mut expected = 0;
        let mut new = 0;
        for c in [5, 7, 6, 7, 9] {
            let e = f.deliver(audio(c), 0, 1);
            expected += e.expected_added;
            new += u64::from(e.new);
        }
        let s = &f.finish(10).streams[0];
        assert_eq!((expected, new), (s.expected, s.received));
    }

    #[test]
    fn latency_and_jitter_from_the_stamps() {
        let mut f = Feed::new(false);
        // Constant 3 ms transit: no jitter.
        for c in 0..50 {
            f.deliver(audio(c), c * 20, c * 20 + 3);
        }
        // Then transit alternates 3 ms / 13 ms: |D| = 10 ms each time.
        for c in 50..250 {
            let extra = if c % 2 == 0 { 10 } else { 0 };
            f.deliver(audio(c), c * 20, c * 20 + 3 + extra);
        }
        let s = &f.finish(6000).streams[0];
        assert_eq!(s.latency.len(), 250);
        let p50_ms = s.latency.value_at_quantile(0.5) as f64 / 1000.0;
        assert!((2.9..3.1).contains(&p50_ms), "{p50_ms}");
        let max_ms = s.latency.max() as f64 / 1000.0;
        assert!((12.8..13.2).contains(&max_ms), "{max_ms}");
        // J converges to |D| = 10 ms.
        assert!(
            (9_900.0..10_000.1).contains(&s.jitter_us),
            "{}",
            s.jitter_us
        );
    }

    #[test]
    fn complete_frames_freezes_and_the_first_keyframe() {
        let mut f = Feed::new(true);
        // Frame 0 is a delta frame: nothing to show before a keyframe.
        for i in 0..3 {
            f.deliver(video(0, 0, i, 3, false), 0, 10);
        }
        // Keyframe 1 at 50 ms, then frames every 33 ms up to frame 10.
        for frame in 1..=10u32 {
            let t = 50 + u64::from(frame - 1) * 33;
            for i in 0..3 {
                f.deliver(video(0, frame, i, 3, frame == 1), t, t);
            }
        }
        // Frame 11 loses a packet; frame 12 arrives 200 ms after frame 10.
        f.deliver(video(0, 11, 0, 3, false), 380, 380);
        for i in 0..3 {
            f.deliver(video(0, 12, i, 3, false), 547, 547);
        }
        let t0 = f.t0;
        let v = f.finish(600).frames.unwrap();
        assert_eq!(v.first_keyframe_at, Some(t0 + Duration::from_millis(50)));
        assert_eq!(v.frames, 11);
        assert_eq!(v.freezes, 1);
        assert_eq!(v.frozen, Duration::from_millis(547 - 347));
        assert_eq!(v.watched, Duration::from_millis(550));
    }

    #[test]
    fn a_stall_at_the_end_is_a_freeze() {
        let mut f = Feed::new(true);
        f.deliver(video(0, 0, 0, 1, true), 0, 0);
        f.deliver(video(0, 1, 0, 1, false), 33, 33);
        let v = f.finish(1033).frames.unwrap();
        assert_eq!((v.frames, v.freezes), (2, 1));
        assert_eq!(v.frozen, Duration::from_secs(1));
    }

    #[test]
    fn a_layer_switch_starts_a_new_stream_and_frames_continue() {
        let mut f = Feed::new(true);
        for frame in 0..10u32 {
            let t = u64::from(frame) * 33;
            f.deliver(video(0, frame, 0, 1, frame == 0), t, t + 1);
        }
        // Switched to layer 2 at a keyframe (its counters are far ahead), and back.
        for frame in 10..20u32 {
            let t = u64::from(frame) * 33;
            f.deliver(video(2, frame + 1000, 0, 1, frame == 10), t, t + 1);
        }
        for frame in 20..30u32 {
            let t = u64::from(frame) * 33;
            f.deliver(video(0, frame, 0, 1, frame == 20), t, t + 1);
        }
        let r = f.finish(30 * 33);
        let layers: Vec<_> = r
            .streams
            .iter()
            .map(|s| (s.stream.layer(), s.expected, s.received))
            .collect();
        assert_eq!(
            layers,
            [(Some(0), 10, 10), (Some(2), 10, 10), (Some(0), 10, 10)],
            "no loss counted for the time spent on another layer"
        );
        let v = r.frames.unwrap();
        assert_eq!((v.frames, v.freezes), (30, 0));
    }

    #[test]
    fn payloads_without_a_stamp_are_counted_apart() {
        let mut meter = TrackMeter::new(true);
        let arrival = Arrival {
            at: Instant::now(),
            at_us: T0_US,
            bytes: 100,
        };
        assert_eq!(
            meter.on_payload(&[0x90, 0, 0, 0], arrival),
            PacketEffect::default()
        );
        let r = meter.finish(Instant::now());
        assert_eq!((r.unstamped, r.streams.len()), (1, 0));
    }
}
