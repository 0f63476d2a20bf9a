//! Synthetic media: what each simulated publisher sends, and the stamp every payload
//! carries so receivers can measure without any knowledge of the server's track ids.
//!
//! Video is VP8 as an SFU sees it (RFC 7741 payload descriptor with a 15-bit PictureID,
//! the VP8 payload header, a real keyframe header with start code and frame size) with
//! meaningless frame data: the server parses headers, never decodes. Audio is Opus-sized
//! (one TOC byte, 160 bytes every 20 ms).
//!
//! Right after the codec headers comes a [`Stamp`]: publisher, stream, a per-stream packet
//! counter, the send time, and the packet's place in its frame. Counters give loss without
//! trusting RTP sequence numbers (the SFU rewrites them); the send time gives one-way
//! latency (sender and receiver share this host's clock); the frame fields let a receiver
//! tell a complete frame from a partial one.

use std::time::{Duration, Instant};

/// The first bytes of every stamp, so a payload that is not ours is never misread.
pub const MAGIC: [u8; 4] = *b"SYLG";
/// Bytes a stamp takes.
pub const STAMP_LEN: usize = 34;
/// Largest RTP payload the generator sends: below any path MTU once SRTP, RTP, UDP and
/// IP headers are added.
pub const MAX_PAYLOAD: usize = 1200;

pub const VIDEO_FPS: u32 = 30;
pub const VIDEO_FRAME_INTERVAL: Duration = Duration::from_micros(1_000_000 / VIDEO_FPS as u64);
/// 90 kHz RTP clock ticks per frame.
pub const VIDEO_TICKS_PER_FRAME: u32 = 90_000 / VIDEO_FPS;
/// A keyframe every 2 s at 30 fps (and whenever the server asks with a PLI or FIR).
pub const KEYFRAME_EVERY_FRAMES: u64 = 60;

pub const AUDIO_INTERVAL: Duration = Duration::from_millis(20);
pub const AUDIO_PACKETS_PER_SECOND: u32 = 50;
/// 48 kHz RTP clock ticks per 20 ms packet.
pub const AUDIO_TICKS_PER_PACKET: u32 = 960;
/// About what Opus at 64 kbit/s puts in a 20 ms packet.
pub const AUDIO_PAYLOAD: usize = 160;
/// Opus TOC byte: config 31 (CELT fullband, 20 ms), mono, one frame.
const OPUS_TOC: u8 = 0xF8;

/// VP8 payload descriptor: X (extension present), S (start of partition), I (PictureID
/// present), M (15-bit PictureID).
const VP8_X: u8 = 0x80;
const VP8_S: u8 = 0x10;
const VP8_I: u8 = 0x80;
const VP8_M: u8 = 0x80;
/// Descriptor with a 15-bit PictureID: 4 bytes.
const VP8_DESCRIPTOR_LEN: usize = 4;
/// The VP8 frame tag (3 bytes) and a keyframe's start code and dimensions (7 bytes).
const VP8_KEYFRAME_HEADER_LEN: usize = 10;
const VP8_START_CODE: [u8; 3] = [0x9d, 0x01, 0x2a];

/// Which of a publisher's streams a packet belongs to: audio, or a video layer (0 is the
/// only layer without simulcast, or rid `q`; 1 is `h`; 2 is `f`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u8);

impl StreamId {
    pub const AUDIO: StreamId = StreamId(0);

    pub fn video(layer: u8) -> StreamId {
        StreamId(1 + layer)
    }

    pub fn is_video(self) -> bool {
        self.0 > 0
    }

    /// The simulcast layer of a video stream.
    pub fn layer(self) -> Option<u8> {
        self.0.checked_sub(1)
    }

    pub fn name(self) -> String {
        match self.layer() {
            None => "audio".to_owned(),
            Some(layer) => format!("video{layer}"),
        }
    }
}

/// What every payload carries after its codec headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The publisher's index in the run (0-based, over all rooms).
    pub publisher: u32,
    pub stream: StreamId,
    /// Packets of this stream sent before this one.
    pub counter: u64,
    /// Send time, microseconds since the Unix epoch (this host's clock).
    pub sent_us: u64,
    /// Frame number (video) or packet number (audio) in this stream.
    pub frame: u32,
    /// Packets in this packet's frame, and this packet's place among them (0-based).
    pub frame_packets: u16,
    pub index_in_frame: u16,
    /// The frame is a keyframe.
    pub keyframe: bool,
}

impl Stamp {
    /// Writes the stamp into the first [`STAMP_LEN`] bytes of `out`.
    pub fn write(&self, out: &mut [u8]) {
        out[..4].copy_from_slice(&MAGIC);
        out[4] = u8::from(self.keyframe);
        out[5] = self.stream.0;
        out[6..10].copy_from_slice(&self.publisher.to_be_bytes());
        out[10..18].copy_from_slice(&self.counter.to_be_bytes());
        out[18..26].copy_from_slice(&self.sent_us.to_be_bytes());
        out[26..30].copy_from_slice(&self.frame.to_be_bytes());
        out[30..32].copy_from_slice(&self.frame_packets.to_be_bytes());
        out[32..34].copy_from_slice(&self.index_in_frame.to_be_bytes());
    }

    /// Reads a stamp from the start of `bytes`.
    pub fn read(bytes: &[u8]) -> Option<Stamp> {
        let b = bytes.get(..STAMP_LEN)?;
        if b[..4] != MAGIC {
            return None;
        }
        let u16_at = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        let u32_at = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().unwrap());
        let u64_at = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().unwrap());
        Some(Stamp {
            keyframe: b[4] & 1 != 0,
            stream: StreamId(b[5]),
            publisher: u32_at(6),
            counter: u64_at(10),
            sent_us: u64_at(18),
            frame: u32_at(26),
            frame_packets: u16_at(30),
            index_in_frame: u16_at(32),
        })
    }
}

/// One video encoding a publisher sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoLayer {
    /// Simulcast rid (`q`, `h`, `f`); empty without simulcast.
    pub rid: &'static str,
    pub width: u16,
    pub height: u16,
    pub bitrate_bps: u64,
}

/// The video a publisher sends for `bitrate_bps`: one 1280x720 encoding, or with
/// simulcast three (320x180 at a quarter, 640x360 at half, 1280x720 at the full bitrate),
/// lowest first, as browsers send them.
pub fn video_layers(bitrate_bps: u64, simulcast: bool) -> Vec<VideoLayer> {
    if !simulcast {
        return vec![VideoLayer {
            rid: "",
            width: 1280,
            height: 720,
            bitrate_bps,
        }];
    }
    vec![
        VideoLayer {
            rid: "q",
            width: 320,
            height: 180,
            bitrate_bps: bitrate_bps / 4,
        },
        VideoLayer {
            rid: "h",
            width: 640,
            height: 360,
            bitrate_bps: bitrate_bps / 2,
        },
        VideoLayer {
            rid: "f",
            width: 1280,
            height: 720,
            bitrate_bps,
        },
    ]
}

/// The payload sizes of one frame at `bitrate_bps` (RTP payload bytes, codec headers and
/// stamp included): the frame's share of the bitrate, split evenly into as few packets
/// of at most [`MAX_PAYLOAD`] bytes as it takes. Every frame has the same size, keyframes
/// too: the server's work is per packet and per byte, not per frame type. A packet is
/// never smaller than its headers, so very low bitrates are exceeded.
pub fn frame_payload_sizes(bitrate_bps: u64) -> Vec<usize> {
    let frame_bytes = (bitrate_bps / 8 / u64::from(VIDEO_FPS)) as usize;
    let min = VP8_DESCRIPTOR_LEN + VP8_KEYFRAME_HEADER_LEN + STAMP_LEN;
    let packets = frame_bytes.div_ceil(MAX_PAYLOAD).max(1);
    let base = frame_bytes / packets;
    let extra = frame_bytes % packets;
    (0..packets)
        .map(|i| (base + usize::from(i < extra)).max(min))
        .collect()
}

/// libwebrtc's pacing factor (`kDefaultPaceMultiplier`): a browser sends its video at up
/// to 2.5 times the target bitrate, spreading each frame's packets out rather than writing
/// them back to back.
pub const BROWSER_PACING: f64 = 2.5;

/// Spaces a publisher's video packets as a browser's pacer does: each packet of `bytes`
/// may leave once the ones before it have drained at `factor` times the publisher's
/// bitrate. Sans-IO: it says when, the caller waits.
#[derive(Debug, Clone)]
pub struct Pacer {
    bytes_per_second: f64,
    next: Option<Instant>,
}

impl Pacer {
    /// `None` for `factor` 0 (no pacing: every frame's packets back to back).
    pub fn new(factor: f64, bitrate_bps: u64) -> Option<Pacer> {
        (factor > 0.0 && bitrate_bps > 0).then(|| Pacer {
            bytes_per_second: factor * bitrate_bps as f64 / 8.0,
            next: None,
        })
    }

    /// When a packet of `bytes` that is ready at `now` may be sent.
    pub fn send_at(&mut self, bytes: usize, now: Instant) -> Instant {
        let at = self.next.map_or(now, |next| next.max(now));
        self.next = Some(at + Duration::from_secs_f64(bytes as f64 / self.bytes_per_second));
        at
    }
}

/// Video packets per second of one layer at `bitrate_bps`.
pub fn video_packets_per_second(bitrate_bps: u64) -> u32 {
    frame_payload_sizes(bitrate_bps).len() as u32 * VIDEO_FPS
}

/// Writes one VP8 RTP payload of `size` bytes into `out` (cleared first): descriptor,
/// on a frame's first packet the frame tag (and on a keyframe the start code and
/// `width`x`height`), the stamp, then filler.
pub fn vp8_payload(
    out: &mut Vec<u8>,
    picture_id: u16,
    width: u16,
    height: u16,
    stamp: &Stamp,
    frame_bytes: usize,
    size: usize,
) {
    out.clear();
    let first = stamp.index_in_frame == 0;
    let picture_id = picture_id & 0x7fff;
    out.extend_from_slice(&[
        VP8_X | if first { VP8_S } else { 0 },
        VP8_I,
        VP8_M | (picture_id >> 8) as u8,
        picture_id as u8,
    ]);
    if first {
        // RFC 6386 9.1 frame tag: inverse keyframe bit P, version 0, show_frame 1, and
        // the first partition's size (here the whole frame: there is only one).
        let first_partition = (frame_bytes as u32).min(0x7_ffff);
        let tag = u32::from(!stamp.keyframe) | 1 << 4 | first_partition << 5;
        out.extend_from_slice(&tag.to_le_bytes()[..3]);
        if stamp.keyframe {
            out.extend_from_slice(&VP8_START_CODE);
            // 14 bits of size, 2 bits of scaling (none).
            out.extend_from_slice(&(width & 0x3fff).to_le_bytes());
            out.extend_from_slice(&(height & 0x3fff).to_le_bytes());
        }
    }
    let at = out.len();
    out.resize(at + STAMP_LEN, 0);
    stamp.write(&mut out[at..]);
    if out.len() < size {
        out.resize(size, 0);
    }
}

/// Writes one Opus-sized audio payload into `out` (cleared first).
pub fn audio_payload(out: &mut Vec<u8>, stamp: &Stamp) {
    out.clear();
    out.push(OPUS_TOC);
    out.resize(1 + STAMP_LEN, 0);
    stamp.write(&mut out[1..]);
    out.resize(AUDIO_PAYLOAD, 0);
}

/// The stamp of a received audio payload.
pub fn read_audio_stamp(payload: &[u8]) -> Option<Stamp> {
    Stamp::read(payload.get(1..)?)
}

/// The stamp of a received VP8 payload: skips the payload descriptor as RFC 7741 lays it
/// out (the SFU may rewrite its fields, not its shape) and, at the start of a frame, the
/// VP8 payload header.
pub fn read_vp8_stamp(payload: &[u8]) -> Option<Stamp> {
    let b0 = *payload.first()?;
    let mut pos = 1;
    if b0 & VP8_X != 0 {
        let ext = *payload.get(pos)?;
        pos += 1;
        if ext & VP8_I != 0 {
            pos += if *payload.get(pos)? & VP8_M != 0 {
                2
            } else {
                1
            };
        }
        // L: TL0PICIDX.
        if ext & 0x40 != 0 {
            pos += 1;
        }
        // T or K: one byte holds both.
        if ext & 0x30 != 0 {
            pos += 1;
        }
    }
    let start_of_frame = b0 & VP8_S != 0 && b0 & 0x07 == 0;
    if start_of_frame {
        let keyframe = *payload.get(pos)? & 1 == 0;
        pos += if keyframe { VP8_KEYFRAME_HEADER_LEN } else { 3 };
    }
    Stamp::read(payload.get(pos..)?)
}

/// Microseconds since the Unix epoch, now: the clock stamps are written and read with.
pub fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacer_spreads_a_frame_at_the_pacing_rate() {
        // 1.5 Mbit/s paced at 2.5: 468 750 bytes/s, so 1200 bytes every 2.56 ms.
        let mut pacer = Pacer::new(BROWSER_PACING, 1_500_000).unwrap();
        let t0 = Instant::now();
        let sizes = frame_payload_sizes(1_500_000);
        let times: Vec<Duration> = sizes
            .iter()
            .map(|&bytes| pacer.send_at(bytes, t0) - t0)
            .collect();
        assert_eq!(times[0], Duration::ZERO, "the first goes at once");
        let per_packet = Duration::from_secs_f64(sizes[0] as f64 / 468_750.0);
        for (i, t) in times.iter().enumerate() {
            let expected = per_packet * i as u32;
            assert!(
                t.abs_diff(expected) < Duration::from_micros(5),
                "{i}: {t:?}"
            );
        }
        // The whole frame drains well within its 33 ms interval; an idle pacer sends at once.
        assert!(times.last().unwrap() < &Duration::from_millis(15));
        let later = t0 + Duration::from_millis(33);
        assert_eq!(pacer.send_at(1200, later), later);
        assert!(Pacer::new(0.0, 1_500_000).is_none(), "factor 0: no pacing");
    }

    fn stamp(index_in_frame: u16, keyframe: bool) -> Stamp {
        Stamp {
            publisher: 7,
            stream: StreamId::video(2),
            counter: 123_456_789_012,
            sent_us: 1_790_000_000_000_000,
            frame: 99,
            frame_packets: 5,
            index_in_frame,
            keyframe,
        }
    }

    #[test]
    fn stamp_round_trips() {
        let s = stamp(3, true);
        let mut buf = [0u8; STAMP_LEN];
        s.write(&mut buf);
        assert_eq!(Stamp::read(&buf), Some(s));
        assert_eq!(Stamp::read(&buf[..STAMP_LEN - 1]), None);
        buf[0] = b'X';
        assert_eq!(Stamp::read(&buf), None);
    }

    #[test]
    fn vp8_keyframe_start_as_the_rfcs_lay_it_out() {
        let s = stamp(0, true);
        let mut out = Vec::new();
        vp8_payload(&mut out, 0x1234, 640, 360, &s, 6000, 1000);
        assert_eq!(out.len(), 1000);
        // X=1, S=1, PID=0; I=1; M=1 and the 15-bit PictureID.
        assert_eq!(&out[..4], &[0x90, 0x80, 0x80 | 0x12, 0x34]);
        // Frame tag: P=0 (keyframe), show_frame=1, first partition size 6000.
        let tag = u32::from_le_bytes([out[4], out[5], out[6], 0]);
        assert_eq!(tag & 1, 0);
        assert_eq!(tag >> 4 & 1, 1);
        assert_eq!(tag >> 5, 6000);
        assert_eq!(&out[7..10], &VP8_START_CODE);
        assert_eq!(u16::from_le_bytes([out[10], out[11]]), 640);
        assert_eq!(u16::from_le_bytes([out[12], out[13]]), 360);
        assert_eq!(read_vp8_stamp(&out), Some(s));
    }

    #[test]
    fn the_servers_vp8_parser_sees_our_keyframes_and_picture_ids() {
        use switchyard_router::media::vp8;
        let mut out = Vec::new();
        vp8_payload(&mut out, 0x4321, 320, 180, &stamp(0, true), 3000, 500);
        let d = vp8::parse(&out).expect("parses");
        assert!(d.is_keyframe);
        assert_eq!(d.picture_id.map(|p| p.value), Some(0x4321));
        // Where the server reads a keyframe's size: start code at 3..6 after the
        // descriptor, then width and height.
        let frame = &out[d.header_len..];
        assert_eq!(&frame[3..6], &VP8_START_CODE);
        assert_eq!(u16::from_le_bytes([frame[6], frame[7]]), 320);

        vp8_payload(&mut out, 0x4322, 320, 180, &stamp(0, false), 3000, 500);
        assert!(!vp8::parse(&out).unwrap().is_keyframe);
        vp8_payload(&mut out, 0x4322, 320, 180, &stamp(1, true), 3000, 500);
        assert!(
            !vp8::parse(&out).unwrap().is_keyframe,
            "only a frame's first packet"
        );
    }

    #[test]
    fn vp8_delta_and_continuation_packets() {
        let mut out = Vec::new();
        let delta = stamp(0, false);
        vp8_payload(&mut out, 5, 1280, 720, &delta, 4000, 800);
        assert_eq!(out[0], 0x90);
        assert_eq!(out[4] & 1, 1, "P=1 on a delta frame");
        assert_eq!(read_vp8_stamp(&out), Some(delta));

        let middle = stamp(2, true);
        vp8_payload(&mut out, 5, 1280, 720, &middle, 4000, 800);
        assert_eq!(out[0], 0x80, "S=0 after a frame's first packet");
        assert_eq!(read_vp8_stamp(&out), Some(middle));
    }

    #[test]
    fn vp8_stamp_found_behind_a_rewritten_or_7_bit_descriptor() {
        // An SFU may send a 7-bit PictureID, or add TL0PICIDX and TID; the stamp is
        // still found after them.
        let s = stamp(1, false);
        let mut body = [0u8; STAMP_LEN];
        s.write(&mut body);
        let mut p = vec![0x80, 0x80 | 0x40 | 0x20, 0x11, 0x07, 0x40];
        p.extend_from_slice(&body);
        assert_eq!(read_vp8_stamp(&p), Some(s));
        assert_eq!(read_vp8_stamp(&p[..6]), None);
    }

    #[test]
    fn audio_payload_is_opus_sized_and_stamped() {
        let s = Stamp {
            stream: StreamId::AUDIO,
            ..stamp(0, false)
        };
        let mut out = Vec::new();
        audio_payload(&mut out, &s);
        assert_eq!(out.len(), AUDIO_PAYLOAD);
        assert_eq!(read_audio_stamp(&out), Some(s));
    }

    #[test]
    fn frames_hit_the_bitrate_in_packets_of_at_most_1200_bytes() {
        for bps in [
            100_000u64, 375_000, 750_000, 1_500_000, 2_500_000, 8_000_000,
        ] {
            let sizes = frame_payload_sizes(bps);
            assert!(sizes.iter().all(|&s| s <= MAX_PAYLOAD), "{bps}: {sizes:?}");
            let sent_bps = sizes.iter().sum::<usize>() as u64 * 8 * u64::from(VIDEO_FPS);
            assert!(
                sent_bps.abs_diff(bps) <= 8 * 30 * 2,
                "{bps}: sends {sent_bps}"
            );
            // As few packets as it takes: one fewer would exceed the limit.
            assert!((sizes.len() - 1) * MAX_PAYLOAD < sizes.iter().sum::<usize>());
        }
        assert_eq!(video_packets_per_second(1_500_000), 6 * 30);
    }

    #[test]
    fn simulcast_layers() {
        let layers = video_layers(2_000_000, true);
        let summary: Vec<_> = layers
            .iter()
            .map(|l| (l.rid, l.width, l.height, l.bitrate_bps))
            .collect();
        assert_eq!(
            summary,
            [
                ("q", 320, 180, 500_000),
                ("h", 640, 360, 1_000_000),
                ("f", 1280, 720, 2_000_000)
            ]
        );
        assert_eq!(video_layers(2_000_000, false).len(), 1);
    }
}
