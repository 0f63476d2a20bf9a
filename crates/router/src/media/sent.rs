//! What one subscriber was sent under each output sequence number of one track, so a
//! retransmission is exactly the first send (LiveKit's sequencer keeps the same).
//!
//! SRTP's nonce (AES-GCM) or key stream (AES-CM) is a function of the SSRC and the packet
//! index, that is the output sequence number. Two different packets under one sequence
//! number encrypt two plaintexts with one key stream: whoever captures both learns their
//! XOR, and with GCM can forge packets. So an output sequence number is sent once, and a
//! resend replays its record: the same cached packet, the same timestamp, the same VP8
//! PictureID / TL0PICIDX, whatever the forwarder's state has become since (a layer switch,
//! a pause, a mute). A number the history no longer holds is never sent again.
//!
//! A fixed ring indexed by the output sequence number: recording never allocates.

use std::time::{Duration, Instant};

use super::layers::Layer;
use super::vp8::Vp8Rewrite;

const OCCUPIED: u8 = 1 << 2;
const HAS_PICTURE_ID: u8 = 1 << 3;
const HAS_TL0PICIDX: u8 = 1 << 4;
const RESENT: u8 = 1 << 5;
const LAYER_MASK: u8 = 0b11;

/// One output packet: 24 bytes.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// The output sequence number's low 32 bits: which lap of the ring this slot holds.
    out_seq: u32,
    /// The wire timestamp it went out with.
    ts: u32,
    /// The extended input sequence number of the packet it carried, in its layer's cache.
    in_seq: u64,
    picture_id: u16,
    tl0picidx: u8,
    /// Layer (2 bits) and the flags above.
    flags: u8,
    /// When it was last resent, in milliseconds since the history's epoch, wrapping.
    resent_at_ms: u16,
}

/// What a packet was first sent as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentPacket {
    pub layer: Layer,
    /// Extended input sequence number (the per-layer cache's key).
    pub in_seq: u64,
    /// The wire timestamp it was sent with.
    pub ts: u32,
    pub vp8: Option<Vp8Rewrite>,
}

/// Why a NACKed sequence number is not resent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotResent {
    /// Resent less than the minimum interval ago: that retransmission is still on its way.
    Recent,
    /// Never sent, or too long ago for the history to say what it was.
    Unknown,
}

pub struct SentHistory {
    slots: Box<[Slot]>,
    mask: u64,
    /// The highest output sequence number recorded.
    highest: Option<u64>,
    epoch: Option<Instant>,
}

impl SentHistory {
    /// A history of the last `capacity` output sequence numbers (rounded up to a power of
    /// two).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, 1 << 15).next_power_of_two();
        SentHistory {
            slots: vec![Slot::default(); capacity].into_boxed_slice(),
            mask: capacity as u64 - 1,
            highest: None,
            epoch: None,
        }
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Whether `out_seq` may be sent now: it never was, and it is recent enough that the
    /// history would know if it had been.
    pub fn may_send(&self, out_seq: u64) -> bool {
        let Some(highest) = self.highest else {
            return true;
        };
        if out_seq + self.slots.len() as u64 <= highest {
            return false;
        }
        let slot = &self.slots[(out_seq & self.mask) as usize];
        !(slot.flags & OCCUPIED != 0 && slot.out_seq == out_seq as u32)
    }

    /// Records that `out_seq` went out as `packet`. Call only after [`Self::may_send`].
    pub fn record(&mut self, out_seq: u64, packet: SentPacket) {
        let vp8 = packet.vp8.unwrap_or_default();
        let mut flags = OCCUPIED | (packet.layer & LAYER_MASK);
        if vp8.picture_id.is_some() {
            flags |= HAS_PICTURE_ID;
        }
        if vp8.tl0picidx.is_some() {
            flags |= HAS_TL0PICIDX;
        }
        self.slots[(out_seq & self.mask) as usize] = Slot {
            out_seq: out_seq as u32,
            ts: packet.ts,
            in_seq: packet.in_seq,
            picture_id: vp8.picture_id.unwrap_or(0),
            tl0picidx: vp8.tl0picidx.unwrap_or(0),
            flags,
            resent_at_ms: 0,
        };
        if self.highest.is_none_or(|h| out_seq > h) {
            self.highest = Some(out_seq);
        }
    }

    /// What `out_seq` was sent as, for a resend at `now`, unless it was resent within
    /// `min_interval` (at most a minute; the clock wraps after 65 s). Marks it resent.
    pub fn resend(
        &mut self,
        out_seq: u64,
        now: Instant,
        min_interval: Duration,
    ) -> Result<SentPacket, NotResent> {
        let highest = self.highest.ok_or(NotResent::Unknown)?;
        if out_seq > highest || out_seq + self.slots.len() as u64 <= highest {
            return Err(NotResent::Unknown);
        }
        let epoch = *self.epoch.get_or_insert(now);
        let now_ms = now.saturating_duration_since(epoch).as_millis() as u16;
        let slot = &mut self.slots[(out_seq & self.mask) as usize];
        if slot.flags & OCCUPIED == 0 || slot.out_seq != out_seq as u32 {
            return Err(NotResent::Unknown);
        }
        if slot.flags & RESENT != 0
            && u128::from(now_ms.wrapping_sub(slot.resent_at_ms)) < min_interval.as_millis()
        {
            return Err(NotResent::Recent);
        }
        slot.flags |= RESENT;
        slot.resent_at_ms = now_ms;
        let vp8 = (slot.flags & (HAS_PICTURE_ID | HAS_TL0PICIDX) != 0).then(|| Vp8Rewrite {
            picture_id: (slot.flags & HAS_PICTURE_ID != 0).then_some(slot.picture_id),
            tl0picidx: (slot.flags & HAS_TL0PICIDX != 0).then_some(slot.tl0picidx),
        });
        Ok(SentPacket {
            layer: slot.flags & LAYER_MASK,
            in_seq: slot.in_seq,
            ts: slot.ts,
            vp8,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(layer: Layer, in_seq: u64, picture_id: Option<u16>) -> SentPacket {
        SentPacket {
            layer,
            in_seq,
            ts: in_seq as u32 * 3000,
            vp8: picture_id.map(|p| Vp8Rewrite {
                picture_id: Some(p),
                tl0picidx: None,
            }),
        }
    }

    #[test]
    fn slot_size_is_24_bytes() {
        assert_eq!(std::mem::size_of::<Slot>(), 24);
    }

    #[test]
    fn a_sequence_number_is_sent_once_and_replayed_as_recorded() {
        let t0 = Instant::now();
        let mut h = SentHistory::new(8);
        assert!(h.may_send(100));
        h.record(100, packet(2, 7000, Some(31)));
        assert!(!h.may_send(100), "never twice");
        assert!(h.may_send(101));
        assert_eq!(
            h.resend(100, t0, Duration::from_millis(100)),
            Ok(packet(2, 7000, Some(31)))
        );
        assert_eq!(h.resend(101, t0, Duration::ZERO), Err(NotResent::Unknown));
        assert_eq!(h.resend(99, t0, Duration::ZERO), Err(NotResent::Unknown));
    }

    #[test]
    fn a_resend_within_the_interval_is_not_repeated() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let interval = Duration::from_millis(100);
        let mut h = SentHistory::new(8);
        h.record(5, packet(0, 5, None));
        assert!(h.resend(5, ms(0), interval).is_ok());
        assert_eq!(h.resend(5, ms(60), interval), Err(NotResent::Recent));
        assert!(h.resend(5, ms(100), interval).is_ok());
        assert_eq!(h.resend(5, ms(150), interval), Err(NotResent::Recent));
    }

    #[test]
    fn what_the_ring_forgot_is_neither_sent_nor_resent() {
        let t0 = Instant::now();
        let mut h = SentHistory::new(8);
        for seq in 0..20 {
            h.record(seq, packet(0, seq + 1000, None));
        }
        // 12..=19 are held; 11 and below were overwritten by a later lap.
        assert_eq!(h.resend(11, t0, Duration::ZERO), Err(NotResent::Unknown));
        assert_eq!(h.resend(12, t0, Duration::ZERO).unwrap().in_seq, 1012);
        assert!(!h.may_send(11), "too old to know whether it went out");
        assert!(!h.may_send(3));
        // A gap the output left (upstream loss) can still be filled once.
        let mut h = SentHistory::new(8);
        h.record(10, packet(0, 10, None));
        h.record(12, packet(0, 12, None));
        assert!(h.may_send(11));
        h.record(11, packet(0, 11, None));
        assert!(!h.may_send(11));
    }
}
