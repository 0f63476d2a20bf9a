//! Simulcast layers: which ones are arriving, and which one a subscriber should get.
//!
//! Layer 0 is the lowest resolution (rid `q`), 2 the highest (rid `f`); a track without
//! simulcast has only layer 0. [`LayerMonitor`] is the receive side of one published track,
//! updated once per packet; [`pick`] and [`LayerMonitor::layer_for_size`] turn a
//! subscriber's wish into a layer.

use std::time::{Duration, Instant};

pub const MAX_LAYERS: usize = 3;

/// A simulcast layer index: 0 (low) ..= 2 (high).
pub type Layer = u8;

/// The layer a simulcast `rid` names. Browsers' common names are `q`/`h`/`f`; a track
/// without simulcast has the empty rid, layer 0.
pub fn layer_for_rid(rid: &str) -> Option<Layer> {
    match rid {
        "" | "q" | "l" | "low" | "0" => Some(0),
        "h" | "m" | "mid" | "medium" | "1" => Some(1),
        "f" | "high" | "full" | "2" => Some(2),
        _ => None,
    }
}

/// A set of layers, as a bit mask.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerSet(u8);

impl LayerSet {
    pub const EMPTY: LayerSet = LayerSet(0);

    pub fn of(layers: &[Layer]) -> LayerSet {
        layers.iter().fold(LayerSet::EMPTY, |s, &l| s.with(l))
    }

    pub fn with(self, layer: Layer) -> LayerSet {
        LayerSet(self.0 | (1 << layer))
    }

    pub fn contains(self, layer: Layer) -> bool {
        self.0 & (1 << layer) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Layer> {
        (0..MAX_LAYERS as Layer).filter(move |&l| self.contains(l))
    }
}

/// The layer to forward, given the highest the subscriber wants (`None`: off) and what is
/// arriving: the best arriving layer not above the wish, else the lowest arriving one
/// (a subscriber that asked for low still gets video when only high arrives).
pub fn pick(desired: Option<Layer>, available: LayerSet) -> Option<Layer> {
    let desired = desired?;
    available
        .iter()
        .filter(|&l| l <= desired)
        .max()
        .or_else(|| available.iter().min())
}

/// What one packet brought to its layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Media: part of a frame. `ts` is its extended RTP timestamp (a new, higher one starts
    /// a new frame), `bytes` its payload size.
    Media { ts: u64, bytes: usize },
    /// Padding only (bandwidth probing): keeps nothing alive.
    Padding,
}

/// Whether a layer carries media, by its frames (never by padding): `Live` (frames at a
/// steady rate, a layer to pick), `Sporadic` (some frames lately but not steadily: a
/// starved encoder, a muted camera's black frames, a still screen; picked only when no
/// layer is live), `Idle` (no frame lately: nothing, or padding only). The metrics'
/// type, so the router's and the gauge's states cannot drift apart.
pub use switchyard_stats::LayerState as Liveness;

/// A layer as the admin API and the metrics see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerStatus {
    pub liveness: Liveness,
    /// Frames per second, over the last half second with frames (0 once idle).
    pub frames_per_second: u32,
    /// Padding-only packets per second over the last half second with packets.
    pub padding_per_second: u32,
}

/// Frames that make a layer live again: this many within the layer timeout (a layer
/// that sends one frame now and then is not "arriving").
const RISE_FRAMES: usize = 3;
/// A layer with a frame within this many layer timeouts is at least sporadic.
const SPORADIC_TIMEOUTS: u32 = 3;

#[derive(Debug, Clone, Copy, Default)]
struct LayerRx {
    /// When the newest frame started arriving, and its extended timestamp.
    last_frame: Option<Instant>,
    last_frame_ts: Option<u64>,
    /// Arrival times of the last [`RISE_FRAMES`] frames, oldest overwritten first.
    recent_frames: [Option<Instant>; RISE_FRAMES],
    next_frame_slot: usize,
    /// Latched when frames came steadily; void once a frame is `timeout` late.
    steady: bool,
    window_start: Option<Instant>,
    window_bytes: u64,
    window_frames: u32,
    window_padding: u32,
    bitrate_bps: u64,
    frames_per_second: u32,
    padding_per_second: u32,
    /// Frame size, from the layer's keyframes.
    width: u32,
    height: u32,
}

/// The receive side of one published track: per layer, whether it carries media, its
/// bitrate and its frame size. Updated once per packet, whatever the number of
/// subscribers.
///
/// A layer counts as arriving by its frames, not its packets: a browser whose uplink
/// cannot carry a layer keeps sending padding on it (or a frame now and then), and a
/// subscriber left on such a layer decodes nothing. Live takes [`RISE_FRAMES`] frames
/// within the timeout and ends when a frame is a timeout late (a gap of 750 ms in the
/// server, where a healthy layer, even at 5 fps, has a frame every 200 ms). When no layer
/// is live, layers with a frame within
/// [`SPORADIC_TIMEOUTS`] timeouts are picked instead: a still screen or a muted camera
/// sends about one frame a second, and its subscribers should still see it.
#[derive(Debug, Clone)]
pub struct LayerMonitor {
    layers: [LayerRx; MAX_LAYERS],
    timeout: Duration,
}

const BITRATE_WINDOW: Duration = Duration::from_millis(500);

impl LayerRx {
    fn on_frame(&mut self, ts: u64, now: Instant, timeout: Duration) {
        if self
            .last_frame
            .is_some_and(|t| now.saturating_duration_since(t) >= timeout)
        {
            // A frame came a timeout late: steady again only after RISE_FRAMES more.
            self.steady = false;
            self.recent_frames = [None; RISE_FRAMES];
        }
        self.recent_frames[self.next_frame_slot] = Some(now);
        self.next_frame_slot = (self.next_frame_slot + 1) % RISE_FRAMES;
        // The slot written next holds the oldest of the last RISE_FRAMES frames.
        if let Some(oldest) = self.recent_frames[self.next_frame_slot] {
            if now.saturating_duration_since(oldest) < timeout {
                self.steady = true;
            }
        }
        self.last_frame = Some(now);
        self.last_frame_ts = Some(ts);
        self.window_frames += 1;
    }
}

impl LayerMonitor {
    pub fn new(timeout: Duration) -> Self {
        LayerMonitor {
            layers: [LayerRx::default(); MAX_LAYERS],
            timeout,
        }
    }

    pub fn on_packet(&mut self, layer: Layer, arrival: Arrival, now: Instant) {
        let timeout = self.timeout;
        let Some(state) = self.layers.get_mut(layer as usize) else {
            return;
        };
        match arrival {
            Arrival::Padding => state.window_padding += 1,
            Arrival::Media { ts, bytes } => {
                state.window_bytes += bytes as u64;
                if state.last_frame_ts.is_none_or(|last| ts > last) {
                    state.on_frame(ts, now, timeout);
                }
            }
        }
        let start = *state.window_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= BITRATE_WINDOW {
            let ms = elapsed.as_millis().max(1) as u64;
            state.bitrate_bps = state.window_bytes * 8 * 1000 / ms;
            state.frames_per_second = (u64::from(state.window_frames) * 1000 / ms) as u32;
            state.padding_per_second = (u64::from(state.window_padding) * 1000 / ms) as u32;
            state.window_bytes = 0;
            state.window_frames = 0;
            state.window_padding = 0;
            state.window_start = Some(now);
        }
    }

    fn liveness(&self, layer: &LayerRx, now: Instant) -> Liveness {
        let Some(last) = layer.last_frame else {
            return Liveness::Idle;
        };
        let age = now.saturating_duration_since(last);
        if layer.steady && age < self.timeout {
            Liveness::Live
        } else if age < self.timeout * SPORADIC_TIMEOUTS {
            Liveness::Sporadic
        } else {
            Liveness::Idle
        }
    }

    /// The layers to pick from: the live ones; when none is, the sporadic ones.
    pub fn available(&self, now: Instant) -> LayerSet {
        let mut live = LayerSet::EMPTY;
        let mut sporadic = LayerSet::EMPTY;
        for (layer, state) in self.layers.iter().enumerate() {
            match self.liveness(state, now) {
                Liveness::Live => live = live.with(layer as Layer),
                Liveness::Sporadic => sporadic = sporadic.with(layer as Layer),
                Liveness::Idle => {}
            }
        }
        if live.is_empty() {
            sporadic
        } else {
            live
        }
    }

    pub fn status(&self, layer: Layer, now: Instant) -> LayerStatus {
        let Some(state) = self.layers.get(layer as usize) else {
            return LayerStatus {
                liveness: Liveness::Idle,
                frames_per_second: 0,
                padding_per_second: 0,
            };
        };
        let liveness = self.liveness(state, now);
        // The windows close only when packets come: a layer gone quiet keeps its last.
        let quiet = |since: Option<Instant>| {
            since.is_none_or(|t| now.saturating_duration_since(t) >= self.timeout)
        };
        LayerStatus {
            liveness,
            frames_per_second: if quiet(state.last_frame) {
                0
            } else {
                state.frames_per_second
            },
            padding_per_second: if quiet(state.window_start) {
                0
            } else {
                state.padding_per_second
            },
        }
    }

    pub fn set_dimensions(&mut self, layer: Layer, width: u32, height: u32) {
        if let Some(state) = self.layers.get_mut(layer as usize) {
            state.width = width;
            state.height = height;
        }
    }

    pub fn bitrate_bps(&self, layer: Layer) -> u64 {
        self.layers.get(layer as usize).map_or(0, |s| s.bitrate_bps)
    }

    pub fn dimensions(&self, layer: Layer) -> Option<(u32, u32)> {
        self.layers
            .get(layer as usize)
            .filter(|s| s.width > 0)
            .map(|s| (s.width, s.height))
    }

    /// The smallest layer whose frames cover a `width`×`height` tile. Sizes not yet seen
    /// are estimated from a known layer (each layer doubles the one below, as browsers
    /// send by default); with nothing known, the highest layer.
    pub fn layer_for_size(&self, width: u32, height: u32) -> Layer {
        let known = (0..MAX_LAYERS as Layer).find_map(|l| self.dimensions(l).map(|d| (l, d)));
        let Some((known_layer, (kw, kh))) = known else {
            return (MAX_LAYERS - 1) as Layer;
        };
        for layer in 0..MAX_LAYERS as Layer {
            let (w, h) = self.dimensions(layer).unwrap_or_else(|| {
                let shift = layer as i32 - known_layer as i32;
                if shift >= 0 {
                    (kw << shift, kh << shift)
                } else {
                    (kw >> -shift, kh >> -shift)
                }
            });
            if w >= width && h >= height {
                return layer;
            }
        }
        (MAX_LAYERS - 1) as Layer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pick_table() {
        let all = LayerSet::of(&[0, 1, 2]);
        let cases: &[(Option<Layer>, LayerSet, Option<Layer>)] = &[
            (Some(2), all, Some(2)),
            (Some(1), all, Some(1)),
            (Some(0), all, Some(0)),
            (None, all, None),                         // off
            (Some(2), LayerSet::of(&[0, 1]), Some(1)), // high stopped: best still arriving
            (Some(2), LayerSet::of(&[0]), Some(0)),
            (Some(0), LayerSet::of(&[1, 2]), Some(1)), // low stopped: lowest above
            (Some(1), LayerSet::EMPTY, None),
        ];
        for &(desired, available, expected) in cases {
            assert_eq!(
                pick(desired, available),
                expected,
                "{desired:?} of {available:?}"
            );
        }
    }

    #[test]
    fn rids() {
        assert_eq!(layer_for_rid("q"), Some(0));
        assert_eq!(layer_for_rid("h"), Some(1));
        assert_eq!(layer_for_rid("f"), Some(2));
        assert_eq!(layer_for_rid(""), Some(0));
        assert_eq!(layer_for_rid("x"), None);
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn media(ts: u64) -> Arrival {
        Arrival::Media { ts, bytes: 900 }
    }

    /// `frames` frames of a layer, `every` apart from `start`, two packets each; their
    /// timestamps follow the arrival time since `t0` (90 kHz), so later calls continue.
    fn frames(
        m: &mut LayerMonitor,
        layer: Layer,
        t0: Instant,
        start: Instant,
        every: Duration,
        frames: u32,
    ) {
        for i in 0..frames {
            let at = start + every * i;
            let ts = at.duration_since(t0).as_micros() as u64 * 9 / 100 + 1;
            for _ in 0..2 {
                m.on_packet(layer, Arrival::Media { ts, bytes: 1000 }, at);
            }
        }
    }

    #[test]
    fn layers_are_live_by_their_frames() {
        let t0 = Instant::now();
        let mut m = LayerMonitor::new(ms(1000));
        assert!(m.available(t0).is_empty());
        frames(&mut m, 0, t0, t0, ms(33), 30);
        frames(&mut m, 2, t0, t0, ms(33), 30);
        let t1 = t0 + ms(33 * 29);
        assert_eq!(m.available(t1), LayerSet::of(&[0, 2]));
        assert_eq!(m.status(0, t1).liveness, Liveness::Live);
        frames(&mut m, 0, t0, t1, ms(33), 20);
        let t2 = t1 + ms(1100);
        assert_eq!(m.available(t2), LayerSet::of(&[0]), "layer 2 stopped");
        assert_eq!(m.status(2, t2).liveness, Liveness::Sporadic);
        assert_eq!(m.status(2, t1 + ms(3100)).liveness, Liveness::Idle);
    }

    #[test]
    fn padding_keeps_no_layer_alive() {
        let t0 = Instant::now();
        let mut m = LayerMonitor::new(ms(1000));
        // Both layers had frames; then layer 1 carries padding only, at 100 packets/s.
        frames(&mut m, 0, t0, t0, ms(33), 90);
        frames(&mut m, 1, t0, t0, ms(33), 15);
        for i in 15..90u32 {
            for _ in 0..3 {
                m.on_packet(1, Arrival::Padding, t0 + ms(33) * i);
            }
        }
        let t1 = t0 + ms(33 * 89);
        assert_eq!(m.available(t1), LayerSet::of(&[0]));
        let status = m.status(1, t1);
        assert_eq!(status.liveness, Liveness::Sporadic, "{status:?}");
        assert_eq!(status.frames_per_second, 0);
        assert!(status.padding_per_second >= 80, "{status:?}");
        // A layer that only ever carried padding is idle.
        let mut fresh = LayerMonitor::new(ms(1000));
        fresh.on_packet(2, Arrival::Padding, t0);
        assert!(fresh.available(t0).is_empty());
        assert_eq!(fresh.status(2, t0).liveness, Liveness::Idle);
    }

    #[test]
    fn a_frame_now_and_then_is_not_live() {
        let t0 = Instant::now();
        let mut m = LayerMonitor::new(ms(1000));
        frames(&mut m, 0, t0, t0, ms(33), 200);
        // Layer 2: a frame every 1.2 s (a starved encoder).
        frames(&mut m, 2, t0, t0, ms(1200), 6);
        for at in [ms(1250), ms(3000), ms(6000)] {
            assert_eq!(m.available(t0 + at), LayerSet::of(&[0]), "at {at:?}");
        }
        // Even a burst right after a gap needs RISE_FRAMES frames within the timeout.
        let t1 = t0 + ms(7100);
        m.on_packet(2, media(10_000_000), t1);
        m.on_packet(2, media(10_003_000), t1 + ms(30));
        assert_eq!(m.available(t1 + ms(40)), LayerSet::of(&[0]));
        m.on_packet(2, media(10_006_000), t1 + ms(60));
        assert_eq!(
            m.available(t1 + ms(70)),
            LayerSet::of(&[0, 2]),
            "frames again"
        );
    }

    #[test]
    fn with_nothing_live_the_sporadic_layers_are_picked() {
        let t0 = Instant::now();
        let mut m = LayerMonitor::new(ms(1000));
        // A still screen: one frame every 1.1 s on both layers.
        frames(&mut m, 0, t0, t0, ms(1100), 5);
        frames(&mut m, 1, t0, t0, ms(1100), 5);
        let t1 = t0 + ms(1100 * 4 + 500);
        assert_eq!(m.available(t1), LayerSet::of(&[0, 1]));
        assert_eq!(m.status(0, t1).liveness, Liveness::Sporadic);
        // The very first frame of a track is picked at once (a fast first frame).
        let mut first = LayerMonitor::new(ms(1000));
        first.on_packet(0, media(1), t0);
        assert_eq!(first.available(t0), LayerSet::of(&[0]));
    }

    #[test]
    fn reordered_packets_start_no_frame() {
        let t0 = Instant::now();
        let mut m = LayerMonitor::new(ms(1000));
        m.on_packet(0, media(9000), t0);
        // Late packets of older frames, then padding: still one frame.
        for i in 1..=3 {
            m.on_packet(0, media(9000 - i * 3000), t0 + ms(i * 10));
            m.on_packet(0, Arrival::Padding, t0 + ms(i * 10));
        }
        assert_eq!(m.status(0, t0 + ms(100)).liveness, Liveness::Sporadic);
    }

    #[test]
    fn bitrate_and_frame_rate_over_a_window() {
        let t0 = Instant::now();
        let mut m = LayerMonitor::new(Duration::from_secs(1));
        // 1000 bytes every 10 ms = 800 kbit/s; a new frame every third packet = 33 fps.
        for i in 0..=100u64 {
            let media = Arrival::Media {
                ts: i / 3 * 3000,
                bytes: 1000,
            };
            m.on_packet(1, media, t0 + Duration::from_millis(i * 10));
        }
        let bps = m.bitrate_bps(1);
        assert!((780_000..=820_000).contains(&bps), "{bps}");
        let fps = m.status(1, t0 + ms(1000)).frames_per_second;
        assert!((31..=35).contains(&fps), "{fps}");
        assert_eq!(
            m.status(1, t0 + ms(2500)).frames_per_second,
            0,
            "quiet since"
        );
    }

    #[test]
    fn size_to_layer() {
        let mut m = LayerMonitor::new(Duration::from_secs(1));
        assert_eq!(m.layer_for_size(100, 100), 2, "nothing known: highest");
        m.set_dimensions(2, 1280, 720);
        assert_eq!(
            m.layer_for_size(320, 180),
            0,
            "estimated 320x180 for layer 0"
        );
        assert_eq!(m.layer_for_size(321, 180), 1);
        assert_eq!(m.layer_for_size(640, 360), 1);
        assert_eq!(m.layer_for_size(1000, 500), 2);
        assert_eq!(m.layer_for_size(4000, 2000), 2, "bigger than any: highest");
        m.set_dimensions(0, 480, 270);
        assert_eq!(
            m.layer_for_size(400, 200),
            0,
            "measured size wins over estimate"
        );
    }
}
