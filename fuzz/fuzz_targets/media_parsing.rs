//! Everything the router parses of a publisher's or subscriber's packets: RTP and RTCP
//! (webrtc-rs's parsers, which every packet goes through), the VP8 payload descriptor and
//! its in-place rewrite, keyframe detection for each codec, and the audio level.
//!
//! Invariants: nothing panics; a parsed VP8 descriptor lies within the payload; rewriting
//! it keeps the payload's length and every byte outside the rewritten fields, and parsing
//! the result gives the same layout with the values written (reduced to their widths).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_router::media::codec::{is_keyframe_start, Codec};
use switchyard_router::media::speaker::parse_audio_level;
use switchyard_router::media::vp8;
use webrtc_util::Unmarshal;

fuzz_target!(|input: (u16, u8, Vec<u8>)| {
    let (picture_id, tl0picidx, bytes) = input;
    let _ = rtp::packet::Packet::unmarshal(&mut &bytes[..]);
    let _ = rtcp::packet::unmarshal(&mut &bytes[..]);
    for codec in [Codec::Vp8, Codec::Vp9, Codec::H264, Codec::Opus, Codec::Other] {
        let _ = is_keyframe_start(codec, &bytes);
    }
    if let Some(level) = parse_audio_level(&bytes) {
        assert!((0.0..=1.0).contains(&level.loudness()));
    }

    let Ok(descriptor) = vp8::parse(&bytes) else {
        return;
    };
    assert!(descriptor.header_len < bytes.len(), "the payload follows the descriptor");
    let mut rewritten = bytes.clone();
    vp8::rewrite(&mut rewritten, &descriptor, Some(picture_id), Some(tl0picidx));
    assert_eq!(rewritten.len(), bytes.len());
    let mut touched = Vec::new();
    if let Some(p) = descriptor.picture_id {
        touched.extend(p.offset..p.offset + p.width.byte_len());
    }
    if let Some(t) = descriptor.tl0picidx {
        touched.push(t.offset);
    }
    for (i, (a, b)) in bytes.iter().zip(&rewritten).enumerate() {
        if !touched.contains(&i) {
            assert_eq!(a, b, "byte {i} outside the rewritten fields changed");
        }
    }
    let again = vp8::parse(&rewritten).expect("a rewritten descriptor still parses");
    assert_eq!(again.header_len, descriptor.header_len);
    assert_eq!(again.is_keyframe, descriptor.is_keyframe);
    if let (Some(before), Some(after)) = (descriptor.picture_id, again.picture_id) {
        assert_eq!(before.width, after.width, "the PictureID keeps its width");
        assert_eq!(after.value, picture_id % before.width.modulus());
    }
    assert_eq!(descriptor.picture_id.is_some(), again.picture_id.is_some());
    if let Some(after) = again.tl0picidx {
        assert_eq!(after.value, tl0picidx);
    }
});
