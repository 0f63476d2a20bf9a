//! What the router needs to know of each codec's payload: where keyframes start.
//!
//! Done once per received packet, on the receive side, whatever the number of subscribers.

use super::vp8;

/// The codecs the router treats differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Opus,
    Vp8,
    Vp9,
    H264,
    /// Anything else: every packet counts as a start (never wait for a keyframe).
    Other,
}

impl Codec {
    /// From an SDP MIME type such as `video/VP8` (case-insensitive).
    pub fn from_mime(mime: &str) -> Codec {
        let sub = mime.rsplit('/').next().unwrap_or("").to_ascii_lowercase();
        match sub.as_str() {
            "opus" => Codec::Opus,
            "vp8" => Codec::Vp8,
            "vp9" => Codec::Vp9,
            "h264" => Codec::H264,
            _ => Codec::Other,
        }
    }

    pub fn is_video(self) -> bool {
        matches!(self, Codec::Vp8 | Codec::Vp9 | Codec::H264)
    }
}

/// Whether `payload` is the first packet of a keyframe (for audio and unknown codecs,
/// always: any packet is a fine place to start).
pub fn is_keyframe_start(codec: Codec, payload: &[u8]) -> bool {
    match codec {
        Codec::Vp8 => vp8::parse(payload).is_ok_and(|d| d.is_keyframe),
        Codec::Vp9 => vp9_keyframe_start(payload),
        Codec::H264 => h264_keyframe_start(payload),
        Codec::Opus | Codec::Other => true,
    }
}

/// VP9 payload descriptor (draft-ietf-payload-vp9): not inter-predicted (P=0), start of a
/// frame (B=1), and the base spatial layer when layer indices are present.
fn vp9_keyframe_start(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    let picture_id = first & 0x80 != 0;
    let inter = first & 0x40 != 0;
    let layers = first & 0x20 != 0;
    let begin = first & 0x08 != 0;
    if inter || !begin {
        return false;
    }
    if !layers {
        return true;
    }
    let mut offset = 1;
    if picture_id {
        let Some(&pid) = payload.get(1) else {
            return false;
        };
        offset += if pid & 0x80 != 0 { 2 } else { 1 };
    }
    payload
        .get(offset)
        .is_some_and(|&layer| (layer >> 1) & 0x07 == 0)
}

/// H.264 (RFC 6184): an IDR slice or SPS alone, in a STAP-A, or at the start of an FU-A.
fn h264_keyframe_start(payload: &[u8]) -> bool {
    const IDR: u8 = 5;
    const SPS: u8 = 7;
    const STAP_A: u8 = 24;
    const FU_A: u8 = 28;
    let Some(&first) = payload.first() else {
        return false;
    };
    match first & 0x1F {
        IDR | SPS => true,
        STAP_A => {
            let mut rest = &payload[1..];
            while rest.len() > 2 {
                let size = u16::from_be_bytes([rest[0], rest[1]]) as usize;
                if matches!(rest[2] & 0x1F, IDR | SPS) {
                    return true;
                }
                rest = rest.get(2 + size..).unwrap_or(&[]);
            }
            false
        }
        FU_A => payload
            .get(1)
            .is_some_and(|&fu| fu & 0x80 != 0 && fu & 0x1F == IDR),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mime_types() {
        assert_eq!(Codec::from_mime("video/VP8"), Codec::Vp8);
        assert_eq!(Codec::from_mime("video/h264"), Codec::H264);
        assert_eq!(Codec::from_mime("audio/opus"), Codec::Opus);
        assert_eq!(Codec::from_mime("video/AV1"), Codec::Other);
    }

    #[test]
    fn keyframe_table() {
        let cases: &[(Codec, &[u8], bool)] = &[
            // VP8: S=1 PID=0, then payload header P bit 0 = key, 1 = delta.
            (Codec::Vp8, &[0x10, 0x00, 0x9d], true),
            (Codec::Vp8, &[0x10, 0x01, 0x9d], false),
            (Codec::Vp8, &[0x00, 0x00, 0x9d], false), // not a partition start
            (Codec::Vp8, &[], false),
            // VP9: P=0 B=1; P=1; B=0; L with SID 0 and SID 1.
            (Codec::Vp9, &[0x08, 0xaa], true),
            (Codec::Vp9, &[0x48, 0xaa], false),
            (Codec::Vp9, &[0x00, 0xaa], false),
            (Codec::Vp9, &[0xa8, 0x01, 0x00, 0x00], true),
            (Codec::Vp9, &[0xa8, 0x01, 0x02, 0x00], false),
            (Codec::Vp9, &[0xa8, 0x81, 0x01, 0x00, 0x00], true), // 15-bit picture id
            // H.264: IDR, SPS, non-IDR slice, STAP-A with SPS, FU-A start/middle of an IDR.
            (Codec::H264, &[0x65, 0x88], true),
            (Codec::H264, &[0x67, 0x42], true),
            (Codec::H264, &[0x41, 0x9a], false),
            (
                Codec::H264,
                &[0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xce],
                true,
            ),
            (Codec::H264, &[0x78, 0x00, 0x02, 0x41, 0x9a], false),
            (Codec::H264, &[0x7c, 0x85, 0x88], true),
            (Codec::H264, &[0x7c, 0x05, 0x88], false),
            (Codec::H264, &[0x78, 0xff, 0xff], false), // STAP-A with a size past the end
            (Codec::Opus, &[0x01], true),
        ];
        for (codec, payload, expected) in cases {
            assert_eq!(
                is_keyframe_start(*codec, payload),
                *expected,
                "{codec:?} {payload:02x?}"
            );
        }
    }
}
