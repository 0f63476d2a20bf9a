//! A per-layer cache of recent packets, keyed by extended sequence number, from which the
//! router answers subscribers' NACKs: one cache per published layer, shared by every
//! subscriber, never a copy per subscriber.
//!
//! A fixed ring indexed by `seq % capacity`: inserting never allocates (beyond what the
//! caller's `T` is, typically an `Arc` of the packet), and a slot remembers which sequence
//! number it holds, so a lookup never returns a packet from an older lap of the ring.

pub struct PacketCache<T> {
    slots: Box<[Option<(u64, T)>]>,
    mask: u64,
}

impl<T: Clone> PacketCache<T> {
    /// A cache of `capacity` packets, rounded up to a power of two.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1).next_power_of_two();
        PacketCache {
            slots: (0..capacity).map(|_| None).collect(),
            mask: capacity as u64 - 1,
        }
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Stores `item` as packet `seq`, evicting whatever held its slot. Returns false (and
    /// stores nothing) if `seq` is already there: a duplicate the caller should drop.
    pub fn insert(&mut self, seq: u64, item: T) -> bool {
        let slot = &mut self.slots[(seq & self.mask) as usize];
        if matches!(slot, Some((held, _)) if *held == seq) {
            return false;
        }
        if matches!(slot, Some((held, _)) if *held > seq) {
            // A packet too old for the ring: newer ones already took its slot.
            return true;
        }
        *slot = Some((seq, item));
        true
    }

    pub fn get(&self, seq: u64) -> Option<&T> {
        match &self.slots[(seq & self.mask) as usize] {
            Some((held, item)) if *held == seq => Some(item),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_recent_packets_only() {
        let mut c = PacketCache::new(100); // rounds up to 128
        assert_eq!(c.capacity(), 128);
        for seq in 1000..1300u64 {
            assert!(c.insert(seq, seq * 10));
        }
        assert_eq!(c.get(1299), Some(&12990));
        assert_eq!(c.get(1172), Some(&11720));
        assert_eq!(c.get(1171), None, "evicted by a newer lap");
        assert_eq!(c.get(5000), None);
    }

    #[test]
    fn duplicates_are_reported_and_late_packets_do_not_evict_newer() {
        let mut c = PacketCache::new(4);
        assert!(c.insert(10, "a"));
        assert!(!c.insert(10, "again"), "duplicate");
        assert_eq!(c.get(10), Some(&"a"));
        assert!(c.insert(14, "b")); // same slot, newer
        assert!(c.insert(10, "late")); // older than the slot's holder: not stored
        assert_eq!(c.get(14), Some(&"b"));
        assert_eq!(c.get(10), None);
    }
}
