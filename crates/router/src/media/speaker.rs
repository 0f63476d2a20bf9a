//! Active-speaker detection from the RFC 6464 audio-level header extension.
//!
//! Browsers put `urn:ietf:params:rtp-hdrext:ssrc-audio-level` on every audio RTP packet:
//! one byte, the top bit a voice-activity flag and the low 7 bits the level in -dBov
//! (0 loudest, 127 silence). The router never decodes Opus, so this byte is all it knows
//! about who is talking. [`ActiveSpeakerDetector`] turns the per-packet levels into the
//! short, ordered list a meeting UI highlights.
//!
//! # Policy
//!
//! Time is cut into 20 ms buckets (Opus' usual packet duration); each participant keeps a
//! fixed ring of the buckets of the last [`SpeakerConfig::window`] (400 ms: 20 buckets). A
//! bucket is *active* when a packet covering it was at or louder than
//! [`SpeakerConfig::active_level`] (35 dBov). A participant becomes a speaker when at least
//! [`SpeakerConfig::active_fraction`] (40 %) of the window's buckets are active, and stays
//! one until fewer than half that many are (hysteresis): one loud packet (a cough, a
//! click) is 5 % of the window and never enough, and a pause between sentences of up to
//! ~300 ms does not drop a speaker who had the whole window. Buckets with no packet at all
//! are silent, which is what Opus DTX looks like: a participant who stops sending simply
//! ages out of the window.
//!
//! This is the same idea as LiveKit's (a fraction of an observation window above a
//! threshold, with smoothing) rather than mediasoup's dominant-speaker observer, which
//! picks a single speaker: a meeting UI wants everyone who is talking, ordered.
//!
//! The list is sent only when the *ordered set of keys* changes (levels move on every
//! packet and would otherwise make every poll a change), and at most once per
//! [`SpeakerConfig::min_interval`]; a change held back is sent by a later poll, with
//! whatever the list is by then.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// The URI browsers use for the audio-level header extension (RFC 6464).
pub const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

/// The quietest level the extension can carry, in -dBov: digital silence.
pub const SILENT_LEVEL: u8 = 127;

/// The resolution of the window. 20 ms is Opus' default packet duration (what browsers
/// send), so at the usual rate each packet lands in its own bucket.
const BUCKET: Duration = Duration::from_millis(20);

/// How far back (in buckets) a packet is taken to cover when the previous packet from the
/// same participant is that recent. Without it, jitter (two packets arriving in one bucket
/// and none in the next) and longer packetization (40 or 60 ms per packet) would leave
/// holes that look like silence. A longer gap is not filled: that is DTX or loss, and it
/// counts as silence.
const MAX_PACKET_SPAN_BUCKETS: u64 = 3; // 60 ms, the longest common Opus frame.

/// One packet's audio level, as the extension carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioLevel {
    /// The level in -dBov, `0..=127`: 0 is the loudest, 127 silence.
    pub level: u8,
    /// The sender's voice-activity flag. Not used by the detector: it is only meaningful
    /// when negotiated with `vad=on`, and senders differ in how (and whether) they set it,
    /// while the level is always there.
    pub voice: bool,
}

impl AudioLevel {
    /// Digital silence, without voice activity.
    pub const SILENCE: AudioLevel = AudioLevel {
        level: SILENT_LEVEL,
        voice: false,
    };

    /// The level as a `0.0..=1.0` loudness, 1.0 the loudest. Linear in decibels (not in
    /// amplitude) because that is closer to how loud it sounds, and it spreads speech
    /// levels over a range a UI can show.
    pub fn loudness(self) -> f32 {
        loudness(self.level)
    }
}

/// Parses the payload of the audio-level header extension (RFC 6464 §3): the first byte
/// is `V|level`. Only the first byte is read, since the two-byte header form may pad the
/// element. `None` for an empty payload.
pub fn parse_audio_level(ext_payload: &[u8]) -> Option<AudioLevel> {
    let &byte = ext_payload.first()?;
    Some(AudioLevel {
        level: byte & 0x7f,
        voice: byte & 0x80 != 0,
    })
}

/// Tuning of [`ActiveSpeakerDetector`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpeakerConfig {
    /// How much recent audio decides whether someone is speaking. Longer is steadier but
    /// slower to notice a new speaker. Rounded up to a multiple of 20 ms.
    pub window: Duration,
    /// The level (-dBov) at or above which (i.e. numerically `<=`) audio counts as speech
    /// rather than background noise.
    pub active_level: u8,
    /// The fraction (`0.0..=1.0`) of the window that must be speech to become a speaker;
    /// a speaker stops being one below half of it.
    pub active_fraction: f32,
    /// The least time between two lists returned by [`ActiveSpeakerDetector::poll`], so
    /// that clients' highlights do not flicker and signaling stays cheap.
    pub min_interval: Duration,
}

impl Default for SpeakerConfig {
    fn default() -> Self {
        SpeakerConfig {
            window: Duration::from_millis(400),
            active_level: 35,
            active_fraction: 0.4,
            min_interval: Duration::from_millis(300),
        }
    }
}

/// One entry of the active-speaker list.
#[derive(Debug, Clone, PartialEq)]
pub struct Speaker<K> {
    pub key: K,
    /// How loud and how much this participant spoke over the window, `0.0..=1.0` (1.0:
    /// at 0 dBov the whole window): the mean [`AudioLevel::loudness`] of the window's
    /// speech, with the rest of the window counting as 0.
    pub level: f32,
}

/// Decides, from the audio levels of every participant's packets, who is speaking.
///
/// Sans-IO: the caller feeds [`observe`](Self::observe) per audio packet and calls
/// [`poll`](Self::poll) on a timer (e.g. every 100 ms), passing the time in.
#[derive(Debug)]
pub struct ActiveSpeakerDetector<K> {
    config: SpeakerConfig,
    /// Buckets in the window.
    buckets: usize,
    /// Active buckets needed to become a speaker.
    enter_buckets: usize,
    /// Active buckets needed to stay one.
    stay_buckets: usize,
    /// Bucket 0 starts here; set by the first call that passes a time.
    origin: Option<Instant>,
    participants: HashMap<K, Voice>,
    /// The last list `poll` returned, and when.
    last: Vec<Speaker<K>>,
    last_at: Option<Instant>,
}

impl<K: Clone + Eq + Hash + Ord> ActiveSpeakerDetector<K> {
    pub fn new(config: SpeakerConfig) -> Self {
        let buckets = usize::try_from(config.window.as_nanos().div_ceil(BUCKET.as_nanos()))
            .unwrap_or(usize::MAX)
            .clamp(1, 1024);
        let fraction = f64::from(config.active_fraction.clamp(0.0, 1.0));
        // The epsilon keeps 0.4 * 20 (which is 8.000000119 in f32) from rounding up to 9.
        let enter = ((fraction * buckets as f64) - 1e-6).ceil().max(1.0) as usize;
        ActiveSpeakerDetector {
            config,
            buckets,
            enter_buckets: enter,
            stay_buckets: (enter / 2).max(1),
            origin: None,
            participants: HashMap::new(),
            last: Vec::new(),
            last_at: None,
        }
    }

    /// Records one audio packet's level. Called per packet, so it is O(1) and, once the
    /// participant is known, allocates nothing.
    pub fn observe(&mut self, key: &K, level: AudioLevel, now: Instant) {
        let bucket = self.bucket_at(now);
        let active = level.level <= self.config.active_level;
        // `get_mut` first: the entry API would clone the key on every packet.
        if let Some(voice) = self.participants.get_mut(key) {
            voice.observe(bucket, level.level, active);
            return;
        }
        let mut voice = Voice::new(self.buckets);
        voice.observe(bucket, level.level, active);
        self.participants.insert(key.clone(), voice);
    }

    /// Forgets a participant (left, or muted): it is no longer a speaker at the next poll
    /// that may return a list. Packets observed for it afterwards start it afresh, so the
    /// caller should stop feeding a muted track's packets.
    pub fn remove(&mut self, key: &K) {
        self.participants.remove(key);
    }

    /// The speakers, loudest first (ties by key), when the ordered list differs from the
    /// last one returned and at least `min_interval` has passed since then; `None`
    /// otherwise. A change held back by `min_interval` is returned by a later poll (as the
    /// list is then). An empty list is returned when the last speaker stops.
    pub fn poll(&mut self, now: Instant) -> Option<Vec<Speaker<K>>> {
        let current = self.bucket_at(now);
        let (enter, stay) = (self.enter_buckets, self.stay_buckets);
        let buckets = self.buckets as f32;
        let mut speakers = Vec::new();
        for (key, voice) in &mut self.participants {
            let (count, loudness) = voice.window(current);
            voice.speaking = count >= if voice.speaking { stay } else { enter };
            if voice.speaking {
                speakers.push(Speaker {
                    key: key.clone(),
                    level: (loudness / buckets).clamp(0.0, 1.0),
                });
            }
        }
        speakers.sort_by(|a, b| b.level.total_cmp(&a.level).then_with(|| a.key.cmp(&b.key)));

        let unchanged = speakers.len() == self.last.len()
            && speakers.iter().zip(&self.last).all(|(a, b)| a.key == b.key);
        if unchanged {
            return None;
        }
        if let Some(at) = self.last_at {
            if now.saturating_duration_since(at) < self.config.min_interval {
                return None;
            }
        }
        self.last_at = Some(now);
        self.last.clone_from(&speakers);
        Some(speakers)
    }

    /// The last list [`poll`](Self::poll) returned (empty before the first): what a
    /// participant who joins now should be told.
    pub fn current(&self) -> &[Speaker<K>] {
        &self.last
    }

    /// The index of the bucket `now` falls in. Times before the origin (a caller's clocks
    /// need not be strictly ordered) fall in bucket 0.
    fn bucket_at(&mut self, now: Instant) -> u64 {
        let origin = *self.origin.get_or_insert(now);
        let elapsed = now.saturating_duration_since(origin).as_nanos();
        u64::try_from(elapsed / BUCKET.as_nanos()).unwrap_or(u64::MAX)
    }
}

/// One participant's recent audio.
#[derive(Debug)]
struct Voice {
    /// The active buckets of the window, at `bucket % len`. Only active buckets are
    /// stored: silent and missing ones are the same thing. A slot holding a bucket that
    /// has left the window is stale and ignored, so nothing has to be cleared as time
    /// passes.
    ring: Box<[Option<ActiveBucket>]>,
    /// The bucket of the newest packet, to fill the time it covered (see
    /// [`MAX_PACKET_SPAN_BUCKETS`]).
    last_packet: Option<u64>,
    /// Whether it was a speaker at the last poll (for the hysteresis).
    speaking: bool,
}

#[derive(Debug, Clone, Copy)]
struct ActiveBucket {
    bucket: u64,
    /// The loudest level (lowest -dBov) seen in the bucket.
    level: u8,
}

impl Voice {
    fn new(buckets: usize) -> Self {
        Voice {
            ring: vec![None; buckets].into_boxed_slice(),
            last_packet: None,
            speaking: false,
        }
    }

    fn observe(&mut self, bucket: u64, level: u8, active: bool) {
        let first = match self.last_packet {
            Some(prev) if prev < bucket && bucket - prev <= MAX_PACKET_SPAN_BUCKETS => prev + 1,
            _ => bucket,
        };
        if active {
            for b in first..=bucket {
                self.mark(b, level);
            }
        }
        self.last_packet = Some(self.last_packet.map_or(bucket, |prev| prev.max(bucket)));
    }

    fn mark(&mut self, bucket: u64, level: u8) {
        let len = self.ring.len() as u64;
        let slot = &mut self.ring[(bucket % len) as usize];
        match slot {
            Some(held) if held.bucket == bucket => held.level = held.level.min(level),
            // A late packet for a bucket whose slot already holds a newer one is too old.
            Some(held) if held.bucket > bucket => {}
            _ => *slot = Some(ActiveBucket { bucket, level }),
        }
    }

    /// The number of active buckets in the window ending with bucket `current`, and the
    /// sum of their loudness.
    fn window(&self, current: u64) -> (usize, f32) {
        let len = self.ring.len() as u64;
        self.ring
            .iter()
            .flatten()
            .filter(|b| b.bucket <= current && current - b.bucket < len)
            .fold((0, 0.0), |(count, sum), b| {
                (count + 1, sum + loudness(b.level))
            })
    }
}

fn loudness(level: u8) -> f32 {
    1.0 - f32::from(level.min(SILENT_LEVEL)) / f32::from(SILENT_LEVEL)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(20);
    const POLL_EVERY: u32 = 5; // ticks: 100 ms
    const WINDOW: Duration = Duration::from_millis(400);

    fn lvl(level: u8) -> AudioLevel {
        AudioLevel {
            level,
            voice: level <= 35,
        }
    }

    /// A room simulated 20 ms at a time: every tick each participant sends at most one
    /// packet, and every 100 ms the detector is polled.
    struct Sim {
        det: ActiveSpeakerDetector<&'static str>,
        start: Instant,
        tick: u32,
        /// Every list returned, with when.
        lists: Vec<(Duration, Vec<&'static str>)>,
    }

    impl Sim {
        fn new() -> Self {
            Sim {
                det: ActiveSpeakerDetector::new(SpeakerConfig::default()),
                start: Instant::now(),
                tick: 0,
                lists: Vec::new(),
            }
        }

        fn elapsed(&self) -> Duration {
            TICK * self.tick
        }

        /// Runs `ticks` ticks in which each `(key, Some(level))` sends a packet (`None`:
        /// sends nothing, as in DTX).
        fn run(&mut self, ticks: u32, senders: &[(&'static str, Option<u8>)]) {
            for _ in 0..ticks {
                let now = self.start + self.elapsed();
                for &(key, level) in senders {
                    if let Some(level) = level {
                        self.det.observe(&key, lvl(level), now);
                    }
                }
                if self.tick % POLL_EVERY == 0 {
                    self.poll();
                }
                self.tick += 1;
            }
        }

        fn poll(&mut self) {
            let at = self.elapsed();
            if let Some(list) = self.det.poll(self.start + at) {
                self.lists.push((at, list.iter().map(|s| s.key).collect()));
            }
        }

        fn latest(&self) -> Option<&[&'static str]> {
            self.lists.last().map(|(_, l)| l.as_slice())
        }

        /// When `list` was first returned at or after `since`.
        fn first_time(&self, list: &[&str], since: Duration) -> Option<Duration> {
            self.lists
                .iter()
                .find(|(at, l)| *at >= since && l == list)
                .map(|(at, _)| *at)
        }
    }

    #[test]
    fn parses_the_extension_byte() {
        assert_eq!(parse_audio_level(&[]), None);
        assert_eq!(
            parse_audio_level(&[0x80 | 30]),
            Some(AudioLevel {
                level: 30,
                voice: true
            })
        );
        assert_eq!(parse_audio_level(&[127]), Some(AudioLevel::SILENCE));
        assert_eq!(
            parse_audio_level(&[0x00, 0xff]),
            Some(AudioLevel {
                level: 0,
                voice: false
            })
        );
        assert_eq!(lvl(0).loudness(), 1.0);
        assert_eq!(AudioLevel::SILENCE.loudness(), 0.0);
    }

    #[test]
    fn loud_participant_among_silent_ones_becomes_the_only_speaker() {
        let mut sim = Sim::new();
        // b is quiet room noise above the speech threshold, c digital silence.
        sim.run(50, &[("a", Some(20)), ("b", Some(60)), ("c", Some(127))]);
        assert_eq!(sim.lists.len(), 1, "{:?}", sim.lists);
        let at = sim.first_time(&["a"], Duration::ZERO).expect("a speaks");
        assert!(at <= WINDOW, "noticed after {at:?}");
        assert_eq!(sim.det.current().len(), 1);
    }

    #[test]
    fn speaker_changes_when_a_stops_and_b_starts() {
        let mut sim = Sim::new();
        sim.run(50, &[("a", Some(20)), ("b", Some(127))]);
        assert_eq!(sim.latest(), Some(&["a"][..]));
        let switch = sim.elapsed();
        sim.run(50, &[("a", Some(127)), ("b", Some(20))]);
        let at = sim.first_time(&["b"], switch).expect("b alone");
        assert!(
            at - switch <= 2 * WINDOW,
            "switched after {:?}",
            at - switch
        );
        assert_eq!(sim.latest(), Some(&["b"][..]));
    }

    #[test]
    fn brief_loud_packets_do_not_make_a_speaker() {
        let mut sim = Sim::new();
        // One loud packet in five (a click, a keyboard), for two seconds.
        for _ in 0..20 {
            sim.run(1, &[("a", Some(10))]);
            sim.run(4, &[("a", Some(127))]);
        }
        // A burst of three loud packets.
        sim.run(3, &[("a", Some(0))]);
        sim.run(30, &[("a", Some(127))]);
        assert!(sim.lists.is_empty(), "{:?}", sim.lists);
    }

    #[test]
    fn short_pause_keeps_the_speaker() {
        let mut sim = Sim::new();
        sim.run(50, &[("a", Some(25))]);
        sim.run(14, &[("a", Some(127))]); // 280 ms between sentences
        sim.run(50, &[("a", Some(25))]);
        assert_eq!(sim.lists.len(), 1, "{:?}", sim.lists);
    }

    #[test]
    fn dtx_silence_ends_the_speaker() {
        let mut sim = Sim::new();
        sim.run(50, &[("a", Some(20))]);
        assert_eq!(sim.latest(), Some(&["a"][..]));
        let stop = sim.elapsed();
        sim.run(50, &[("a", None)]); // no packets at all
        let at = sim.first_time(&[], stop).expect("a stopped");
        let poll = TICK * POLL_EVERY;
        assert!(at - stop <= WINDOW + poll, "ended after {:?}", at - stop);
        assert_eq!(sim.lists.len(), 2);
    }

    #[test]
    fn coarse_packetization_and_jitter_still_count() {
        // 60 ms packets: one every third tick.
        let mut sim = Sim::new();
        for _ in 0..20 {
            sim.run(1, &[("a", Some(20))]);
            sim.run(2, &[("a", None)]);
        }
        assert_eq!(sim.latest(), Some(&["a"][..]));

        // 20 ms packets arriving in bursts of three every 60 ms.
        let mut det = ActiveSpeakerDetector::new(SpeakerConfig::default());
        let start = Instant::now();
        for i in 0..20u32 {
            let now = start + TICK * (3 * i);
            for _ in 0..3 {
                det.observe(&"a", lvl(20), now);
            }
        }
        let list = det.poll(start + TICK * 60).expect("a speaks");
        assert_eq!(list[0].key, "a");
    }

    #[test]
    fn ordered_loudest_first_ties_by_key() {
        let mut det = ActiveSpeakerDetector::new(SpeakerConfig::default());
        let start = Instant::now();
        let levels = [("a", 30), ("b", 10), ("c", 25), ("y", 15), ("x", 15)];
        for i in 0..30u32 {
            for (key, level) in levels {
                det.observe(&key, lvl(level), start + TICK * i);
            }
        }
        let list = det.poll(start + TICK * 30).expect("speakers");
        let keys: Vec<_> = list.iter().map(|s| s.key).collect();
        assert_eq!(keys, ["b", "x", "y", "c", "a"]);
        assert!(list.windows(2).all(|w| w[0].level >= w[1].level));
        assert!(list.iter().all(|s| (0.0..=1.0).contains(&s.level)));
        assert!(list[0].level > list[4].level);
    }

    #[test]
    fn min_interval_holds_changes_back_and_the_latest_wins() {
        let config = SpeakerConfig::default();
        let mut det = ActiveSpeakerDetector::new(config);
        let start = Instant::now();
        let feed = |det: &mut ActiveSpeakerDetector<&str>, keys: &[&'static str], i: u32| {
            for (n, key) in keys.iter().enumerate() {
                det.observe(key, lvl(10 + n as u8), start + TICK * i);
            }
        };
        for i in 0..20 {
            feed(&mut det, &["a", "b", "c"], i);
        }
        let first = start + TICK * 20;
        let keys = |l: Vec<Speaker<&'static str>>| l.into_iter().map(|s| s.key).collect::<Vec<_>>();
        assert_eq!(det.poll(first).map(keys), Some(vec!["a", "b", "c"]));

        // Two changes inside the interval: neither is returned yet.
        det.remove(&"a");
        feed(&mut det, &["b", "c"], 21);
        assert_eq!(det.poll(start + TICK * 21), None);
        det.remove(&"b");
        for i in 22..35 {
            feed(&mut det, &["c"], i);
            assert_eq!(det.poll(start + TICK * i), None, "tick {i}");
        }
        // 300 ms after the last list: the latest state, not the intermediate [b, c].
        let due = first + config.min_interval;
        assert_eq!(det.poll(due).map(keys), Some(vec!["c"]));
        assert_eq!(det.poll(due + TICK), None);
    }

    #[test]
    fn churn_yields_at_most_one_list_per_interval() {
        let config = SpeakerConfig::default();
        let mut det = ActiveSpeakerDetector::new(config);
        let start = Instant::now();
        let keys = ["a", "b", "c", "d"];
        let mut returned = Vec::new();
        for i in 0..300u32 {
            // The loud one rotates every 200 ms: speakers come and go all the time.
            let loud = (i / 10) as usize % keys.len();
            for (n, key) in keys.iter().enumerate() {
                let level = if n == loud { 15 } else { 127 };
                det.observe(key, lvl(level), start + TICK * i);
            }
            if let Some(list) = det.poll(start + TICK * i) {
                returned.push((TICK * i, list));
            }
        }
        assert!(returned.len() > 5, "{returned:?}");
        for pair in returned.windows(2) {
            assert!(pair[1].0 - pair[0].0 >= config.min_interval, "{pair:?}");
        }
        // Then only "b" talks: the last list returned is exactly that.
        for i in 300..340u32 {
            det.observe(&"b", lvl(15), start + TICK * i);
            for key in ["a", "c", "d"] {
                det.observe(&key, lvl(127), start + TICK * i);
            }
            if let Some(list) = det.poll(start + TICK * i) {
                returned.push((TICK * i, list));
            }
        }
        let last = &returned.last().unwrap().1;
        assert_eq!(last.iter().map(|s| s.key).collect::<Vec<_>>(), ["b"]);
    }

    #[test]
    fn remove_drops_a_speaker() {
        let mut sim = Sim::new();
        sim.run(30, &[("a", Some(20)), ("b", Some(127))]);
        assert_eq!(sim.latest(), Some(&["a"][..]));
        sim.det.remove(&"a");
        let removed = sim.elapsed();
        sim.run(1, &[("b", Some(127))]);
        sim.run(20, &[("b", Some(127))]);
        let at = sim.first_time(&[], removed).expect("a dropped");
        // At the first poll allowed by min_interval.
        assert!(at - removed <= SpeakerConfig::default().min_interval);
        assert!(sim.det.current().is_empty());
        sim.det.remove(&"nobody"); // unknown keys are fine
    }

    #[test]
    fn no_change_no_list() {
        let mut det = ActiveSpeakerDetector::<u32>::new(SpeakerConfig::default());
        let start = Instant::now();
        assert_eq!(det.poll(start), None, "nobody, nothing to say");
        let mut sim = Sim::new();
        sim.run(200, &[("a", Some(20)), ("b", Some(127))]);
        assert_eq!(sim.lists.len(), 1);
        sim.run(200, &[("a", Some(127)), ("b", Some(127))]);
        assert_eq!(sim.lists.len(), 2);
        assert_eq!(sim.latest(), Some(&[][..]));
    }
}
