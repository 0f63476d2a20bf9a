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

#[derive(Debug, Clone, Copy, Default)]
struct LayerState {
    last_packet: Option<Instant>,
    window_start: Option<Instant>,
    window_bytes: u64,
    bitrate_bps: u64,
    /// Frame size, from the layer's keyframes.
    width: u32,
    height: u32,
}

/// The receive side of one published track: per layer, whether it is arriving, its
/// bitrate and its frame size. Updated once per packet, whatever the number of subscribers.
#[derive(Debug, Clone)]
pub struct LayerMonitor {
    layers: [LayerState; MAX_LAYERS],
    /// A layer with no packet for this long counts as stopped (the publisher dropped it).
    timeout: Duration,
}

const BITRATE_WINDOW: Duration = Duration::from_millis(500);

impl LayerMonitor {
    pub fn new(timeout: Duration) -> Self {
        LayerMonitor {
            layers: [LayerState::default(); MAX_LAYERS],
            timeout,
        }
    }

    pub fn on_packet(&mut self, layer: Layer, bytes: usize, now: Instant) {
        let Some(state) = self.layers.get_mut(layer as usize) else {
            return;
        };
        state.last_packet = Some(now);
        let start = *state.window_start.get_or_insert(now);
        state.window_bytes += bytes as u64;
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= BITRATE_WINDOW {
            state.bitrate_bps = state.window_bytes * 8 * 1000 / elapsed.as_millis().max(1) as u64;
            state.window_bytes = 0;
            state.window_start = Some(now);
        }
    }

    pub fn set_dimensions(&mut self, layer: Layer, width: u32, height: u32) {
        if let Some(state) = self.layers.get_mut(layer as usize) {
            state.width = width;
            state.height = height;
        }
    }

    /// The layers that have sent a packet within the timeout.
    pub fn available(&self, now: Instant) -> LayerSet {
        let mut set = LayerSet::EMPTY;
        for (layer, state) in self.layers.iter().enumerate() {
            if state
                .last_packet
                .is_some_and(|t| now.saturating_duration_since(t) < self.timeout)
            {
                set = set.with(layer as Layer);
            }
        }
        set
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

    #[test]
    fn availability_follows_arrivals() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut m = LayerMonitor::new(ms(1000));
        assert!(m.available(t0).is_empty());
        m.on_packet(0, 100, t0);
        m.on_packet(2, 100, t0);
        assert_eq!(m.available(t0 + ms(500)), LayerSet::of(&[0, 2]));
        m.on_packet(0, 100, t0 + ms(900));
        assert_eq!(
            m.available(t0 + ms(1500)),
            LayerSet::of(&[0]),
            "layer 2 stopped"
        );
    }

    #[test]
    fn bitrate_over_a_window() {
        let t0 = Instant::now();
        let mut m = LayerMonitor::new(Duration::from_secs(1));
        // 1000 bytes every 10 ms = 800 kbit/s.
        for i in 0..=100u64 {
            m.on_packet(1, 1000, t0 + Duration::from_millis(i * 10));
        }
        let bps = m.bitrate_bps(1);
        assert!((780_000..=820_000).contains(&bps), "{bps}");
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
