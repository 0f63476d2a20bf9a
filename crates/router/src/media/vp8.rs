//! The VP8 payload descriptor (RFC 7741 §4.2): keyframe detection, and rewriting of
//! PictureID / TL0PICIDX so a subscriber sees one continuous picture sequence although
//! the router switches it between simulcast layers.
//!
//! Each simulcast layer is an independent encoder with its own PictureID and TL0PICIDX
//! counters. A receiver uses PictureID to detect lost pictures and TL0PICIDX to know
//! whether the base temporal layer it depends on arrived; a jump reads as loss (the
//! receiver asks for a keyframe, or freezes) and a step backwards as old pictures. So on
//! a layer switch the router renumbers the new layer's pictures to continue where the
//! previous one stopped, and afterwards keeps the layer's own gaps (real loss must stay
//! visible as loss).
//!
//! ```text
//!       0 1 2 3 4 5 6 7
//!      +-+-+-+-+-+-+-+-+
//!      |X|R|N|S|R| PID | (REQUIRED)
//!      +-+-+-+-+-+-+-+-+
//! X:   |I|L|T|K| RSV   | (OPTIONAL)
//!      +-+-+-+-+-+-+-+-+
//! I:   |M| PictureID   | (OPTIONAL)
//!      +-+-+-+-+-+-+-+-+
//!      |   PictureID   | (present if M = 1: 15-bit PictureID)
//!      +-+-+-+-+-+-+-+-+
//! L:   |   TL0PICIDX   | (OPTIONAL)
//!      +-+-+-+-+-+-+-+-+
//! T/K: |TID|Y| KEYIDX  | (OPTIONAL)
//!      +-+-+-+-+-+-+-+-+
//! ```
//!
//! Everything here works on byte slices and never panics on hostile input: the payload
//! comes straight from the network.

// Byte 0.
const X_BIT: u8 = 0x80;
const N_BIT: u8 = 0x20;
const S_BIT: u8 = 0x10;
const PID_MASK: u8 = 0x07;
// Extension byte (present if X).
const I_BIT: u8 = 0x80;
const L_BIT: u8 = 0x40;
const T_BIT: u8 = 0x20;
const K_BIT: u8 = 0x10;
// First PictureID byte.
const M_BIT: u8 = 0x80;
// T/K byte.
const TID_SHIFT: u8 = 6;
const Y_BIT: u8 = 0x20;
const KEYIDX_MASK: u8 = 0x1f;
// First byte of the VP8 payload header (RFC 7741 §4.3): 0 means keyframe.
const INVERSE_KEYFRAME_BIT: u8 = 0x01;

/// Why a payload is not a usable VP8 RTP payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Vp8Error {
    /// The descriptor's own flags announce more bytes than the payload has.
    #[error("VP8 payload descriptor truncated: {needed} bytes needed, payload has {len}")]
    Truncated { needed: usize, len: usize },
    /// A complete descriptor with no VP8 data after it. RFC 7741 has no such packet, and
    /// without the payload header the keyframe bit cannot be read.
    #[error("VP8 payload descriptor ({header_len} bytes) with no VP8 payload after it")]
    NoPayload { header_len: usize },
}

/// The two sizes of the PictureID field (the M bit). The size is the sender's choice and
/// the router must keep it: rewriting may not move the bytes that follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PictureIdWidth {
    /// One byte, M = 0: values 0..=127.
    Bits7,
    /// Two bytes, M = 1: values 0..=32767.
    Bits15,
}

impl PictureIdWidth {
    /// Number of distinct values; PictureIDs wrap at this.
    pub const fn modulus(self) -> u16 {
        match self {
            PictureIdWidth::Bits7 => 1 << 7,
            PictureIdWidth::Bits15 => 1 << 15,
        }
    }

    /// Bytes the field occupies in the descriptor.
    pub const fn byte_len(self) -> usize {
        match self {
            PictureIdWidth::Bits7 => 1,
            PictureIdWidth::Bits15 => 2,
        }
    }
}

/// A PictureID as found in a packet, with where it is so it can be rewritten in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PictureId {
    /// The value, without the M bit.
    pub value: u16,
    pub width: PictureIdWidth,
    /// Byte offset of the field's first byte (the one holding M) in the payload.
    pub offset: usize,
}

/// A TL0PICIDX as found in a packet, with its byte offset in the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tl0PicIdx {
    pub value: u8,
    pub offset: usize,
}

/// A parsed VP8 payload descriptor. Parsed once per received packet and shared by every
/// subscriber's forwarder, so it is small and `Copy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp8Descriptor {
    /// X: the extension byte is present.
    pub extended: bool,
    /// N: no other frame references this one, so it can be dropped without harm.
    pub non_reference: bool,
    /// S: this packet starts a VP8 partition.
    pub start_of_partition: bool,
    /// PID: the partition this packet belongs to (0..=7).
    pub partition_id: u8,
    /// I: the PictureID, if present.
    pub picture_id: Option<PictureId>,
    /// L: the TL0PICIDX, if present.
    pub tl0picidx: Option<Tl0PicIdx>,
    /// T: the temporal layer index (0..=3), if present.
    pub tid: Option<u8>,
    /// Y: the frame depends only on the base temporal layer (meaningful only with T).
    pub layer_sync: bool,
    /// K: the temporal key frame index (0..=31), if present.
    pub key_idx: Option<u8>,
    /// Size of the descriptor in bytes; the VP8 payload starts here.
    pub header_len: usize,
    /// The first packet of a keyframe: start of partition 0, and the VP8 payload header's
    /// inverse keyframe bit P is 0. Only such a packet can start a layer switch.
    pub is_keyframe: bool,
}

/// Parses the VP8 payload descriptor at the start of an RTP payload.
///
/// Reserved bits are ignored, as RFC 7741 asks of receivers. Flag combinations the RFC
/// discourages (L without T, for instance) are accepted as long as the bytes they
/// announce are there: the router only needs to find the fields, not police the sender.
pub fn parse(payload: &[u8]) -> Result<Vp8Descriptor, Vp8Error> {
    let truncated = |needed: usize| Vp8Error::Truncated {
        needed,
        len: payload.len(),
    };
    let byte_at = |i: usize| payload.get(i).copied().ok_or(truncated(i + 1));

    let b0 = byte_at(0)?;
    let mut d = Vp8Descriptor {
        extended: b0 & X_BIT != 0,
        non_reference: b0 & N_BIT != 0,
        start_of_partition: b0 & S_BIT != 0,
        partition_id: b0 & PID_MASK,
        picture_id: None,
        tl0picidx: None,
        tid: None,
        layer_sync: false,
        key_idx: None,
        header_len: 1,
        is_keyframe: false,
    };
    let mut pos = 1;

    if d.extended {
        let ext = byte_at(pos)?;
        pos += 1;
        if ext & I_BIT != 0 {
            let first = byte_at(pos)?;
            let picture_id = if first & M_BIT != 0 {
                let second = byte_at(pos + 1)?;
                PictureId {
                    value: u16::from(first & !M_BIT) << 8 | u16::from(second),
                    width: PictureIdWidth::Bits15,
                    offset: pos,
                }
            } else {
                PictureId {
                    value: u16::from(first),
                    width: PictureIdWidth::Bits7,
                    offset: pos,
                }
            };
            pos += picture_id.width.byte_len();
            d.picture_id = Some(picture_id);
        }
        if ext & L_BIT != 0 {
            d.tl0picidx = Some(Tl0PicIdx {
                value: byte_at(pos)?,
                offset: pos,
            });
            pos += 1;
        }
        if ext & (T_BIT | K_BIT) != 0 {
            // One byte carries both; each half means something only if its flag is set.
            let tk = byte_at(pos)?;
            pos += 1;
            if ext & T_BIT != 0 {
                d.tid = Some(tk >> TID_SHIFT);
                d.layer_sync = tk & Y_BIT != 0;
            }
            if ext & K_BIT != 0 {
                d.key_idx = Some(tk & KEYIDX_MASK);
            }
        }
    }

    d.header_len = pos;
    let first_payload_byte = payload
        .get(pos)
        .copied()
        .ok_or(Vp8Error::NoPayload { header_len: pos })?;
    // The payload header (with the P bit) exists only at the start of partition 0.
    d.is_keyframe = d.start_of_partition
        && d.partition_id == 0
        && first_payload_byte & INVERSE_KEYFRAME_BIT == 0;
    Ok(d)
}

/// Writes a new PictureID and/or TL0PICIDX into `payload` in place.
///
/// `d` must be what [`parse`] returned for this `payload`. The descriptor keeps its length
/// (growing it would mean moving the whole payload), so each value is reduced to its
/// field's width: a 7-bit PictureID receives `picture_id % 128`, a 15-bit one
/// `picture_id % 32768` with its M bit kept. A value for a field the packet does not
/// have is ignored, as is `None`. A `d` that does not fit `payload` writes nothing out of
/// bounds (it cannot panic), but the result is then meaningless.
pub fn rewrite(
    payload: &mut [u8],
    d: &Vp8Descriptor,
    picture_id: Option<u16>,
    tl0picidx: Option<u8>,
) {
    if let (Some(new), Some(field)) = (picture_id, d.picture_id) {
        let new = new % field.width.modulus();
        match field.width {
            PictureIdWidth::Bits7 => {
                if let Some(b) = payload.get_mut(field.offset) {
                    // M = 0 for a 7-bit field; `new` < 128 leaves it clear.
                    *b = new as u8;
                }
            }
            PictureIdWidth::Bits15 => {
                if let Some([hi, lo]) = payload.get_mut(field.offset..field.offset + 2) {
                    *hi = M_BIT | (new >> 8) as u8;
                    *lo = new as u8;
                }
            }
        }
    }
    if let (Some(new), Some(field)) = (tl0picidx, d.tl0picidx) {
        if let Some(b) = payload.get_mut(field.offset) {
            *b = new;
        }
    }
}

/// The PictureID / TL0PICIDX to write into one forwarded packet (see [`rewrite`]); `None`
/// where the packet has no such field. A PictureID is already reduced to the packet's
/// field width (below 128 for a 7-bit field, below 32768 for a 15-bit one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Vp8Rewrite {
    pub picture_id: Option<u16>,
    pub tl0picidx: Option<u8>,
}

/// One renumbered counter (PictureID or TL0PICIDX) of one subscriber's stream.
///
/// Within a run (the packets of one layer between two switches) the output is the input
/// plus a constant offset, wrapping in the field's width. It is stored as an anchor, the
/// newest input of the run and the output it got, so that the output can be kept in a
/// wider space than the input: a 7-bit PictureID is renumbered in 15-bit space and only
/// written mod 128, and a later switch to a 15-bit layer continues from the full value.
#[derive(Debug, Clone, Copy, Default)]
struct Counter {
    anchor: Option<Anchor>,
    /// The next value seen starts a new run: continue from the newest output + 1.
    resync: bool,
}

#[derive(Debug, Clone, Copy)]
struct Anchor {
    /// The width of the input counter in this run (it wraps at this).
    in_modulus: u32,
    /// The newest input of the run.
    highest_in: u32,
    /// Its output, in the output space (`< out_modulus`): the newest output so far.
    highest_out: u32,
}

impl Counter {
    /// The output for `value`, an input counter wrapping at `in_modulus`, with outputs kept
    /// in `out_modulus` (a multiple of `in_modulus`). Returned reduced to `in_modulus`,
    /// ready for the packet's own field.
    fn map(&mut self, value: u32, in_modulus: u32, out_modulus: u32) -> u32 {
        let value = value % in_modulus;
        let anchor = match self.anchor {
            Some(a) if !self.resync && a.in_modulus == in_modulus => a,
            // A new run: the first run passes its values through unchanged, later ones
            // continue from the newest output. A counter changing width inside a run
            // (never seen in practice) is treated as a new run too: its old anchor is
            // meaningless in the new width.
            previous => {
                let out = previous.map_or(value, |a| (a.highest_out + 1) % out_modulus);
                self.resync = false;
                self.anchor = Some(Anchor {
                    in_modulus,
                    highest_in: value,
                    highest_out: out,
                });
                return out % in_modulus;
            }
        };

        let forward = (value + in_modulus - anchor.highest_in) % in_modulus;
        let out = if forward < in_modulus / 2 {
            // Same picture (0) or newer: keep the gap, so loss stays visible.
            let out = (anchor.highest_out + forward) % out_modulus;
            self.anchor = Some(Anchor {
                highest_in: value,
                highest_out: out,
                ..anchor
            });
            out
        } else {
            // Older (reordered or retransmitted late): the same offset, the anchor stays.
            let back = in_modulus - forward;
            (anchor.highest_out + out_modulus - back) % out_modulus
        };
        out % in_modulus
    }
}

/// Renumbers PictureID and TL0PICIDX for one subscriber of one VP8 track, so that its
/// decoder sees one continuous sequence across simulcast layer switches.
///
/// Sans-IO: feed it every forwarded packet's descriptor in forwarding order, and write
/// what it returns with [`rewrite`]. It does not know layers, only switch points: the
/// caller says which packet is the first of the new layer (its keyframe's first packet).
#[derive(Debug, Clone, Default)]
pub struct Vp8Munger {
    picture_id: Counter,
    tl0picidx: Counter,
}

/// PictureIDs are renumbered in the 15-bit space whatever each layer's field width.
const PICTURE_ID_SPACE: u32 = 1 << 15;
const TL0PICIDX_SPACE: u32 = 1 << 8;

impl Vp8Munger {
    pub fn new() -> Self {
        Vp8Munger::default()
    }

    /// The values to write into the packet `d` describes.
    ///
    /// `switching_layer` marks the first packet of a new layer (the first packet of its
    /// keyframe): its picture continues as the newest output PictureID + 1, and its
    /// TL0PICIDX as the newest output TL0PICIDX + 1 (a keyframe is a new base-layer
    /// picture). Every other packet maps through its run's offset, so packets of one
    /// picture share an output and a late packet lands on its own picture's number.
    ///
    /// A field the packet lacks is `None`. If the switch packet lacks a field that later
    /// packets of the layer have, the field's new run starts at the first packet having
    /// it. A late packet from *before* the current run's first picture still maps through
    /// the current offset; the caller should not forward those (the receiver could not
    /// decode them anyway, it lacks their references).
    pub fn process(&mut self, d: &Vp8Descriptor, switching_layer: bool) -> Vp8Rewrite {
        if switching_layer {
            self.picture_id.resync = true;
            self.tl0picidx.resync = true;
        }
        let picture_id = d.picture_id.map(|p| {
            let out = self.picture_id.map(
                u32::from(p.value),
                u32::from(p.width.modulus()),
                PICTURE_ID_SPACE,
            );
            out as u16
        });
        let tl0picidx = d.tl0picidx.map(|t| {
            let out = self
                .tl0picidx
                .map(u32::from(t.value), TL0PICIDX_SPACE, TL0PICIDX_SPACE);
            out as u8
        });
        Vp8Rewrite {
            picture_id,
            tl0picidx,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PictureID to put in a test descriptor.
    #[derive(Debug, Clone, Copy)]
    enum Pic {
        None,
        Short(u16),
        Long(u16),
    }

    /// The bytes of a descriptor with S = 1, PID = 0, followed by a VP8 payload header
    /// byte (a keyframe's when `key`).
    fn packet(pic: Pic, tl0: Option<u8>, key: bool) -> Vec<u8> {
        let mut ext = 0;
        let mut fields = Vec::new();
        match pic {
            Pic::None => {}
            Pic::Short(v) => {
                ext |= I_BIT;
                fields.push(v as u8 & 0x7f);
            }
            Pic::Long(v) => {
                ext |= I_BIT;
                fields.extend([M_BIT | (v >> 8) as u8 & 0x7f, v as u8]);
            }
        }
        if let Some(t) = tl0 {
            ext |= L_BIT;
            fields.push(t);
        }
        let mut bytes = if ext == 0 {
            vec![S_BIT]
        } else {
            vec![X_BIT | S_BIT, ext]
        };
        bytes.extend(fields);
        bytes.extend([if key { 0x10 } else { 0x11 }, 0x02, 0x00, 0x9d, 0x01, 0x2a]);
        bytes
    }

    fn desc(pic: Pic, tl0: Option<u8>) -> Vp8Descriptor {
        parse(&packet(pic, tl0, false)).expect("valid test descriptor")
    }

    /// A descriptor with everything absent, to build expectations from.
    const BARE: Vp8Descriptor = Vp8Descriptor {
        extended: false,
        non_reference: false,
        start_of_partition: false,
        partition_id: 0,
        picture_id: None,
        tl0picidx: None,
        tid: None,
        layer_sync: false,
        key_idx: None,
        header_len: 1,
        is_keyframe: false,
    };

    fn pic7(value: u16, offset: usize) -> Option<PictureId> {
        Some(PictureId {
            value,
            width: PictureIdWidth::Bits7,
            offset,
        })
    }

    fn pic15(value: u16, offset: usize) -> Option<PictureId> {
        Some(PictureId {
            value,
            width: PictureIdWidth::Bits15,
            offset,
        })
    }

    fn parse_cases() -> Vec<(&'static str, Vec<u8>, Vp8Descriptor)> {
        vec![
            (
                "no X, keyframe start",
                vec![0x10, 0x50, 0x2f],
                Vp8Descriptor {
                    start_of_partition: true,
                    is_keyframe: true,
                    ..BARE
                },
            ),
            (
                "no X, interframe start",
                vec![0x10, 0x51],
                Vp8Descriptor {
                    start_of_partition: true,
                    ..BARE
                },
            ),
            (
                "no X, continuation of partition 0 (P bit not read)",
                vec![0x00, 0x00],
                BARE,
            ),
            (
                "no X, start of partition 2, non-reference",
                vec![0x32, 0x00],
                Vp8Descriptor {
                    non_reference: true,
                    start_of_partition: true,
                    partition_id: 2,
                    ..BARE
                },
            ),
            (
                "X with nothing in it",
                vec![0x90, 0x00, 0x00],
                Vp8Descriptor {
                    extended: true,
                    start_of_partition: true,
                    header_len: 2,
                    is_keyframe: true,
                    ..BARE
                },
            ),
            (
                "I, M=0 (7-bit PictureID)",
                vec![0x90, 0x80, 0x7f, 0x01],
                Vp8Descriptor {
                    extended: true,
                    start_of_partition: true,
                    picture_id: pic7(127, 2),
                    header_len: 3,
                    ..BARE
                },
            ),
            (
                "I, M=1 (15-bit PictureID), keyframe",
                vec![0x90, 0x80, 0xab, 0xcd, 0x00],
                Vp8Descriptor {
                    extended: true,
                    start_of_partition: true,
                    picture_id: pic15(0x2bcd, 2),
                    header_len: 4,
                    is_keyframe: true,
                    ..BARE
                },
            ),
            (
                "I (15-bit) and L, as Chrome sends",
                vec![0x90, 0xc0, 0xff, 0xff, 0x07, 0x9d],
                Vp8Descriptor {
                    extended: true,
                    start_of_partition: true,
                    picture_id: pic15(32767, 2),
                    tl0picidx: Some(Tl0PicIdx {
                        value: 7,
                        offset: 4,
                    }),
                    header_len: 5,
                    ..BARE
                },
            ),
            (
                "I (7-bit), L, T with Y, K",
                vec![0x90, 0xf0, 0x05, 0xfe, 0b1011_0011, 0x00],
                Vp8Descriptor {
                    extended: true,
                    start_of_partition: true,
                    picture_id: pic7(5, 2),
                    tl0picidx: Some(Tl0PicIdx {
                        value: 254,
                        offset: 3,
                    }),
                    tid: Some(2),
                    layer_sync: true,
                    key_idx: Some(0b1_0011),
                    header_len: 5,
                    is_keyframe: true,
                    ..BARE
                },
            ),
            (
                "I (15-bit), L, T only: KEYIDX bits not read",
                vec![0x80, 0xe0, 0x80, 0x01, 0x00, 0b0101_1111, 0x42],
                Vp8Descriptor {
                    extended: true,
                    picture_id: pic15(1, 2),
                    tl0picidx: Some(Tl0PicIdx {
                        value: 0,
                        offset: 4,
                    }),
                    tid: Some(1),
                    layer_sync: false,
                    header_len: 6,
                    ..BARE
                },
            ),
            (
                "K only: TID / Y not read",
                vec![0x90, 0x10, 0b1110_0101, 0x00],
                Vp8Descriptor {
                    extended: true,
                    start_of_partition: true,
                    key_idx: Some(5),
                    header_len: 3,
                    is_keyframe: true,
                    ..BARE
                },
            ),
            (
                "L without I, reserved bits set (ignored)",
                vec![0xd8, 0x4f, 0x09, 0x00],
                Vp8Descriptor {
                    extended: true,
                    start_of_partition: true,
                    tl0picidx: Some(Tl0PicIdx {
                        value: 9,
                        offset: 2,
                    }),
                    header_len: 3,
                    is_keyframe: true,
                    ..BARE
                },
            ),
            (
                "S=1 but partition 1: never a keyframe start",
                vec![0x91, 0x80, 0x10, 0x00],
                Vp8Descriptor {
                    extended: true,
                    start_of_partition: true,
                    partition_id: 1,
                    picture_id: pic7(16, 2),
                    header_len: 3,
                    ..BARE
                },
            ),
        ]
    }

    #[test]
    fn parses_descriptors() {
        for (name, bytes, expected) in parse_cases() {
            assert_eq!(parse(&bytes), Ok(expected), "{name}");
        }
    }

    #[test]
    fn rejects_truncated_and_empty() {
        let cases: &[(&[u8], Vp8Error)] = &[
            (&[], Vp8Error::Truncated { needed: 1, len: 0 }),
            (&[0x90], Vp8Error::Truncated { needed: 2, len: 1 }),
            (&[0x90, 0x80], Vp8Error::Truncated { needed: 3, len: 2 }),
            (
                &[0x90, 0x80, 0x80],
                Vp8Error::Truncated { needed: 4, len: 3 },
            ),
            (
                &[0x90, 0xc0, 0x80, 0x01],
                Vp8Error::Truncated { needed: 5, len: 4 },
            ),
            (&[0x90, 0x20], Vp8Error::Truncated { needed: 3, len: 2 }),
            (&[0x10], Vp8Error::NoPayload { header_len: 1 }),
            (
                &[0x90, 0xe0, 0x01, 0x02, 0x03],
                Vp8Error::NoPayload { header_len: 5 },
            ),
        ];
        for (bytes, expected) in cases {
            assert_eq!(parse(bytes), Err(*expected), "{bytes:02x?}");
        }
    }

    #[test]
    fn keyframe_detection() {
        // (byte 0, first payload byte, keyframe)
        let cases = [
            (0x10, 0x00, true),  // S, PID 0, P = 0
            (0x10, 0xfe, true),  // other header bits do not matter
            (0x10, 0x01, false), // P = 1: interframe
            (0x00, 0x00, false), // not a partition start
            (0x13, 0x00, false), // start of partition 3
            (0x30, 0x00, true),  // N does not matter
        ];
        for (b0, b1, key) in cases {
            let d = parse(&[b0, b1]).unwrap();
            assert_eq!(d.is_keyframe, key, "{b0:#04x} {b1:#04x}");
        }
        assert!(
            parse(&packet(Pic::Long(9), Some(3), true))
                .unwrap()
                .is_keyframe
        );
        assert!(
            !parse(&packet(Pic::Long(9), Some(3), false))
                .unwrap()
                .is_keyframe
        );
    }

    #[test]
    fn rewrite_round_trip() {
        // (packet, new PictureID, new TL0PICIDX, PictureID read back, TL0PICIDX read back)
        let cases = [
            (
                packet(Pic::Long(100), Some(7), true),
                Some(20_000),
                Some(200),
                Some(20_000),
                Some(200),
            ),
            (
                packet(Pic::Long(100), Some(7), false),
                Some(40_000),
                None,
                Some(40_000 - 32_768),
                Some(7),
            ),
            (
                packet(Pic::Long(32_767), None, false),
                Some(0),
                Some(5),
                Some(0),
                None,
            ),
            (
                packet(Pic::Short(3), Some(1), false),
                Some(127),
                Some(0),
                Some(127),
                Some(0),
            ),
            (
                packet(Pic::Short(3), Some(1), false),
                Some(200),
                Some(255),
                Some(72),
                Some(255),
            ),
            (
                packet(Pic::None, Some(1), true),
                Some(9),
                Some(2),
                None,
                Some(2),
            ),
            (packet(Pic::None, None, true), Some(9), Some(2), None, None),
        ];
        for (mut bytes, pic, tl0, want_pic, want_tl0) in cases {
            let before = parse(&bytes).unwrap();
            let len = bytes.len();
            rewrite(&mut bytes, &before, pic, tl0);
            assert_eq!(bytes.len(), len);
            let after = parse(&bytes).unwrap();
            assert_eq!(after.picture_id.map(|p| p.value), want_pic, "{before:?}");
            assert_eq!(after.tl0picidx.map(|t| t.value), want_tl0, "{before:?}");
            // Nothing else moved or changed: width (M bit), offsets, flags, keyframe.
            assert_eq!(
                after,
                Vp8Descriptor {
                    picture_id: before.picture_id.map(|p| PictureId {
                        value: after.picture_id.unwrap().value,
                        ..p
                    }),
                    tl0picidx: before.tl0picidx.map(|t| Tl0PicIdx {
                        value: after.tl0picidx.unwrap().value,
                        ..t
                    }),
                    ..before
                }
            );
            assert_eq!(
                bytes[before.header_len..],
                packet(Pic::None, None, before.is_keyframe)[1..]
            );
        }
    }

    #[test]
    fn rewrite_leaves_other_fields_alone() {
        let mut bytes = vec![0xb0, 0xf0, 0x85, 0x01, 0x44, 0b0110_0011, 0x00];
        let d = parse(&bytes).unwrap();
        rewrite(&mut bytes, &d, Some(0x7abc), Some(0x99));
        assert_eq!(bytes, [0xb0, 0xf0, 0xfa, 0xbc, 0x99, 0b0110_0011, 0x00]);
        let mut bytes = vec![0x90, 0xc0, 0x05, 0x44, 0x00];
        let d = parse(&bytes).unwrap();
        rewrite(&mut bytes, &d, Some(0x7fff), None);
        assert_eq!(bytes, [0x90, 0xc0, 0x7f, 0x44, 0x00], "M stays 0");
    }

    /// One forwarded packet: (PictureID, TL0PICIDX, switching_layer) in, expected out.
    type Step = (Pic, Option<u8>, bool, Option<u16>, Option<u8>);

    fn run_munger(name: &str, steps: &[Step]) {
        let mut m = Vp8Munger::new();
        for (i, &(pic, tl0, switching, want_pic, want_tl0)) in steps.iter().enumerate() {
            let got = m.process(&desc(pic, tl0), switching);
            assert_eq!(
                got,
                Vp8Rewrite {
                    picture_id: want_pic,
                    tl0picidx: want_tl0,
                },
                "{name}: step {i} ({pic:?}, {tl0:?}, switching {switching})"
            );
        }
    }

    #[test]
    fn munger_table() {
        use Pic::{Long, Short};
        let cases: &[(&str, &[Step])] = &[
            (
                "steady forwarding passes the first layer through, gaps kept",
                &[
                    (Long(100), Some(10), true, Some(100), Some(10)),
                    (Long(101), Some(11), false, Some(101), Some(11)),
                    (Long(104), Some(13), false, Some(104), Some(13)),
                    (Long(105), Some(13), false, Some(105), Some(13)),
                ],
            ),
            (
                "switch up continues both counters",
                &[
                    (Long(100), Some(10), true, Some(100), Some(10)),
                    (Long(101), Some(11), false, Some(101), Some(11)),
                    (Long(20_000), Some(200), true, Some(102), Some(12)),
                    (Long(20_001), Some(201), false, Some(103), Some(13)),
                    (Long(20_003), Some(201), false, Some(105), Some(13)),
                ],
            ),
            (
                "switch down continues both counters",
                &[
                    (Long(20_000), Some(200), true, Some(20_000), Some(200)),
                    (Long(20_001), Some(201), false, Some(20_001), Some(201)),
                    (Long(7), Some(3), true, Some(20_002), Some(202)),
                    (Long(8), Some(4), false, Some(20_003), Some(203)),
                    (Long(5000), Some(17), true, Some(20_004), Some(204)),
                    (Long(5001), Some(17), false, Some(20_005), Some(204)),
                ],
            ),
            (
                "several packets per picture, across a switch",
                &[
                    (Long(50), Some(1), true, Some(50), Some(1)),
                    (Long(50), Some(1), false, Some(50), Some(1)),
                    (Long(51), Some(2), false, Some(51), Some(2)),
                    (Long(51), Some(2), false, Some(51), Some(2)),
                    (Long(900), Some(90), true, Some(52), Some(3)),
                    (Long(900), Some(90), false, Some(52), Some(3)),
                    (Long(900), Some(90), false, Some(52), Some(3)),
                    (Long(901), Some(91), false, Some(53), Some(4)),
                ],
            ),
            (
                "15-bit PictureID input wraps 32767 -> 0",
                &[
                    (Long(32_766), Some(0), true, Some(32_766), Some(0)),
                    (Long(32_767), Some(1), false, Some(32_767), Some(1)),
                    (Long(0), Some(2), false, Some(0), Some(2)),
                    (Long(1), Some(3), false, Some(1), Some(3)),
                ],
            ),
            (
                "15-bit PictureID output wraps 32767 -> 0 at a switch",
                &[
                    (Long(32_766), None, true, Some(32_766), None),
                    (Long(32_767), None, false, Some(32_767), None),
                    (Long(400), None, true, Some(0), None),
                    (Long(401), None, false, Some(1), None),
                ],
            ),
            (
                "7-bit PictureID wraps 127 -> 0",
                &[
                    (Short(126), Some(5), true, Some(126), Some(5)),
                    (Short(127), Some(6), false, Some(127), Some(6)),
                    (Short(0), Some(7), false, Some(0), Some(7)),
                    (Short(1), Some(8), false, Some(1), Some(8)),
                ],
            ),
            (
                "7-bit output wraps 127 -> 0 at a switch",
                &[
                    (Short(120), None, true, Some(120), None),
                    (Short(127), None, false, Some(127), None),
                    (Short(40), None, true, Some(0), None),
                    (Short(41), None, false, Some(1), None),
                ],
            ),
            (
                "7-bit to 15-bit layers: renumbered in 15-bit space",
                &[
                    (Long(1000), None, true, Some(1000), None),
                    (Short(5), None, true, Some(1001 % 128), None),
                    (Short(6), None, false, Some(1002 % 128), None),
                    (Long(77), None, true, Some(1003), None),
                    (Long(78), None, false, Some(1004), None),
                ],
            ),
            (
                "TL0PICIDX wraps at 255, in and out",
                &[
                    (Long(1), Some(254), true, Some(1), Some(254)),
                    (Long(2), Some(255), false, Some(2), Some(255)),
                    (Long(3), Some(0), false, Some(3), Some(0)),
                    (Long(4), Some(1), false, Some(4), Some(1)),
                    (Long(9), Some(255), true, Some(5), Some(2)),
                    (Long(10), Some(0), false, Some(6), Some(3)),
                    (Long(11), Some(100), true, Some(7), Some(4)),
                    (Long(12), Some(100), false, Some(8), Some(4)),
                ],
            ),
            (
                "reordered and late packets map through the same offset",
                &[
                    (Long(10), Some(1), true, Some(10), Some(1)),
                    (Long(12), Some(3), false, Some(12), Some(3)),
                    (Long(11), Some(2), false, Some(11), Some(2)),
                    (Long(13), Some(4), false, Some(13), Some(4)),
                    (Long(700), Some(50), true, Some(14), Some(5)),
                    (Long(703), Some(53), false, Some(17), Some(8)),
                    (Long(701), Some(51), false, Some(15), Some(6)),
                    (Long(702), Some(52), false, Some(16), Some(7)),
                    (Long(704), Some(54), false, Some(18), Some(9)),
                ],
            ),
            (
                "late packets across the input wrap",
                &[
                    (Long(32_767), Some(255), true, Some(32_767), Some(255)),
                    (Long(1), Some(1), false, Some(1), Some(1)),
                    (Long(0), Some(0), false, Some(0), Some(0)),
                    (Long(32_767), Some(255), false, Some(32_767), Some(255)),
                    (Long(2), Some(2), false, Some(2), Some(2)),
                ],
            ),
            (
                "7-bit late packets across the wrap",
                &[
                    (Short(126), None, true, Some(126), None),
                    (Short(1), None, false, Some(1), None),
                    (Short(127), None, false, Some(127), None),
                    (Short(2), None, false, Some(2), None),
                ],
            ),
            (
                "missing fields give None; a field's run starts where it first appears",
                &[
                    (Pic::None, None, true, None, None),
                    (Long(300), None, false, Some(300), None),
                    (Long(301), Some(40), false, Some(301), Some(40)),
                    (Pic::None, None, true, None, None),
                    (Long(9), None, false, Some(302), None),
                    (Long(10), Some(70), false, Some(303), Some(41)),
                ],
            ),
            (
                "first packet without a switch flag still starts a run",
                &[
                    (Long(500), Some(5), false, Some(500), Some(5)),
                    (Long(501), Some(6), false, Some(501), Some(6)),
                ],
            ),
        ];
        for (name, steps) in cases {
            run_munger(name, steps);
        }
    }

    #[test]
    fn munger_output_round_trips_through_rewrite() {
        let mut m = Vp8Munger::new();
        // (input, switching): every packet a new picture, so the written values count up
        // from the first packet's, each reduced to its own field's width.
        let steps = [
            (Pic::Long(4000), 10, true),
            (Pic::Long(4001), 11, false),
            (Pic::Short(90), 3, true),
            (Pic::Short(91), 4, false),
            (Pic::Long(12), 250, true),
            (Pic::Long(13), 251, false),
        ];
        for (i, (pic, tl0, switching)) in steps.into_iter().enumerate() {
            let mut bytes = packet(pic, Some(tl0), switching);
            let d = parse(&bytes).unwrap();
            let out = m.process(&d, switching);
            rewrite(&mut bytes, &d, out.picture_id, out.tl0picidx);
            let written = parse(&bytes).unwrap();
            let modulus = d.picture_id.unwrap().width.modulus();
            assert_eq!(
                written.picture_id.unwrap().value,
                (4000 + i as u16) % modulus,
                "step {i}"
            );
            assert_eq!(written.tl0picidx.unwrap().value, 10 + i as u8, "step {i}");
            assert_eq!(written.header_len, d.header_len);
        }
    }

    /// Deterministic pseudo-random bytes (xorshift64), so failures reproduce.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    /// What must hold of any successful parse, and rewriting must stay in place.
    fn check_consistent(bytes: &[u8], d: &Vp8Descriptor, rng: &mut XorShift) {
        assert!(d.header_len < bytes.len(), "{bytes:02x?}");
        if let Some(p) = d.picture_id {
            assert!(p.offset + p.width.byte_len() <= d.header_len);
            assert!(p.value < p.width.modulus());
        }
        if let Some(t) = d.tl0picidx {
            assert!(t.offset < d.header_len);
        }
        let mut copy = bytes.to_vec();
        let r = rng.next();
        rewrite(&mut copy, d, Some(r as u16), Some((r >> 16) as u8));
        let again = parse(&copy).expect("rewriting keeps a valid descriptor valid");
        assert_eq!(again.header_len, d.header_len);
        assert_eq!(again.is_keyframe, d.is_keyframe);
        assert_eq!(copy[d.header_len..], bytes[d.header_len..]);
    }

    #[test]
    fn never_panics_on_prefixes_or_noise() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut munger = Vp8Munger::new();

        for (name, bytes, full) in parse_cases() {
            for len in 0..=bytes.len() {
                let prefix = &bytes[..len];
                match parse(prefix) {
                    Ok(d) => {
                        assert!(len > full.header_len, "{name}: parsed without a payload");
                        assert_eq!(d, full, "{name}: a prefix parses as the whole");
                        check_consistent(prefix, &d, &mut rng);
                    }
                    Err(Vp8Error::Truncated { needed, len: l }) => {
                        assert_eq!(l, len);
                        assert!(needed > len, "{name}");
                    }
                    Err(Vp8Error::NoPayload { header_len }) => assert_eq!(header_len, len),
                }
            }
        }

        for _ in 0..5000 {
            let len = (rng.next() % 12) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            // Bias towards descriptors that use the extension, so the optional fields and
            // their truncations are exercised, not just byte 0.
            if rng.next() & 1 == 0 {
                if let Some(b) = bytes.first_mut() {
                    *b |= X_BIT;
                }
            }
            if let Ok(d) = parse(&bytes) {
                check_consistent(&bytes, &d, &mut rng);
                munger.process(&d, rng.next() & 7 == 0);
            }
        }
    }

    #[test]
    fn rewrite_with_a_mismatched_descriptor_does_not_panic() {
        let d = parse(&packet(Pic::Long(300), Some(9), true)).unwrap();
        for len in 0..6 {
            let mut short = vec![0u8; len];
            rewrite(&mut short, &d, Some(1), Some(2));
        }
    }
}
