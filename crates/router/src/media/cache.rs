//! A per-layer cache of recent packets, keyed by extended sequence number, from which the
//! router answers subscribers' NACKs: one cache per published layer, shared by every
//! subscriber, never a copy per subscriber.
//!
//! A fixed ring indexed by `seq % capacity`: inserting never allocates (beyond what the
//! caller's `T` is, typically an `Arc` of the packet), and a slot remembers which sequence
//! number it holds, so a lookup never returns a packet from an older lap of the ring.
//!
//! With a maximum age, packets older than it are also let go (the oldest first, as newer
//! ones arrive): a retransmission that late is useless to a receiver, and a low layer's
//! slow packet rate would otherwise keep many seconds of packets in memory.

use std::time::{Duration, Instant};

pub struct PacketCache<T> {
    slots: Box<[Option<(u64, Instant, T)>]>,
    mask: u64,
    max_age: Option<Duration>,
    /// The lowest sequence number that may still be held (everything below is expired).
    oldest: u64,
    /// The highest sequence number inserted.
    newest: Option<u64>,
}

impl<T: Clone> PacketCache<T> {
    /// A cache of `capacity` packets, rounded up to a power of two.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1).next_power_of_two();
        PacketCache {
            slots: (0..capacity).map(|_| None).collect(),
            mask: capacity as u64 - 1,
            max_age: None,
            oldest: 0,
            newest: None,
        }
    }

    /// Also lets packets go once they are older than `max_age`.
    pub fn set_max_age(&mut self, max_age: Duration) {
        self.max_age = Some(max_age);
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Stores `item` as packet `seq`, received at `now`, evicting whatever held its slot
    /// and, with a maximum age, the packets that outlived it. Returns false (and stores
    /// nothing) if `seq` is already there: a duplicate the caller should drop.
    pub fn insert(&mut self, seq: u64, item: T, now: Instant) -> bool {
        let slot = &mut self.slots[(seq & self.mask) as usize];
        if matches!(slot, Some((held, _, _)) if *held == seq) {
            return false;
        }
        if matches!(slot, Some((held, _, _)) if *held > seq) || seq < self.oldest {
            // A packet too old for the ring: newer ones already took its slot, or its
            // time has passed.
            return true;
        }
        *slot = Some((seq, now, item));
        if self.newest.is_none_or(|n| seq > n) {
            self.newest = Some(seq);
        }
        self.expire(now);
        true
    }

    pub fn get(&self, seq: u64) -> Option<&T> {
        match &self.slots[(seq & self.mask) as usize] {
            Some((held, _, item)) if *held == seq => Some(item),
            _ => None,
        }
    }

    /// Walks `oldest` up past expired packets and gaps. Each sequence number is passed
    /// once, so this is O(1) per insert on average.
    fn expire(&mut self, now: Instant) {
        let (Some(max_age), Some(newest)) = (self.max_age, self.newest) else {
            return;
        };
        // What a lap of the ring overwrote needs no walk.
        self.oldest = self
            .oldest
            .max((newest + 1).saturating_sub(self.slots.len() as u64));
        while self.oldest < newest {
            let slot = &mut self.slots[(self.oldest & self.mask) as usize];
            if let Some((held, at, _)) = slot {
                if *held == self.oldest {
                    if now.saturating_duration_since(*at) < max_age {
                        return;
                    }
                    *slot = None;
                }
            }
            self.oldest += 1;
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
        let now = Instant::now();
        for seq in 1000..1300u64 {
            assert!(c.insert(seq, seq * 10, now));
        }
        assert_eq!(c.get(1299), Some(&12990));
        assert_eq!(c.get(1172), Some(&11720));
        assert_eq!(c.get(1171), None, "evicted by a newer lap");
        assert_eq!(c.get(5000), None);
    }

    #[test]
    fn duplicates_are_reported_and_late_packets_do_not_evict_newer() {
        let now = Instant::now();
        let mut c = PacketCache::new(4);
        assert!(c.insert(10, "a", now));
        assert!(!c.insert(10, "again", now), "duplicate");
        assert_eq!(c.get(10), Some(&"a"));
        assert!(c.insert(14, "b", now)); // same slot, newer
        assert!(c.insert(10, "late", now)); // older than the slot's holder: not stored
        assert_eq!(c.get(14), Some(&"b"));
        assert_eq!(c.get(10), None);
    }

    #[test]
    fn packets_older_than_the_maximum_age_are_let_go() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut c = PacketCache::new(1024);
        c.set_max_age(Duration::from_millis(1000));
        // 50 packets a second for 3 s (a slow layer): the ring could hold 20 s of them.
        for i in 0..150u64 {
            assert!(c.insert(i, i, at(i * 20)));
        }
        // At 2980 ms, packets from 1980 ms and before (seq <= 99) are gone; later ones stay.
        assert_eq!(c.get(99), None);
        assert_eq!(c.get(100), Some(&100));
        assert_eq!(c.get(149), Some(&149));
        let held = c.slots.iter().filter(|s| s.is_some()).count();
        assert_eq!(held, 50);
        // A gap (lost packets) does not stop the expiry, and a packet too late to keep is
        // not stored.
        assert!(c.insert(400, 400, at(6000)));
        assert_eq!(c.get(149), None);
        assert!(c.insert(120, 120, at(6000)));
        assert_eq!(c.get(120), None);
        assert_eq!(c.slots.iter().filter(|s| s.is_some()).count(), 1);
    }
}
