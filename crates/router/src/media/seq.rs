//! Extending RTP's wrapping counters (16-bit sequence numbers, 32-bit timestamps) to 64 bits.
//!
//! Everything inside the router compares and subtracts extended values, so wraparound is
//! handled once, here, and nowhere else. Only the wire sees truncated values.

/// Unwraps a counter `BITS` wide into a monotonic 64-bit space, tolerating reordering of
/// up to half the counter's range.
///
/// The first value lands one full cycle up (`value + 2^BITS`), so a packet that arrives
/// late and belongs *before* the first one still has a valid, smaller extended value.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unwrapper<const BITS: u32> {
    highest: Option<u64>,
}

/// Sequence numbers (16 bits).
pub type SeqUnwrapper = Unwrapper<16>;
/// RTP timestamps (32 bits).
pub type TsUnwrapper = Unwrapper<32>;

impl<const BITS: u32> Unwrapper<BITS> {
    const CYCLE: u64 = 1 << BITS;
    const MASK: u64 = Self::CYCLE - 1;
    const HALF: u64 = Self::CYCLE / 2;

    pub const fn new() -> Self {
        Unwrapper { highest: None }
    }

    /// The extended value of `value`, relative to the highest seen so far; advances the
    /// highest when `value` is newer.
    pub fn unwrap(&mut self, value: u64) -> u64 {
        let ext = self.peek(value);
        if self.highest.is_none_or(|h| ext > h) {
            self.highest = Some(ext);
        }
        ext
    }

    /// The extended value of `value` without recording it.
    pub fn peek(&self, value: u64) -> u64 {
        let value = value & Self::MASK;
        let Some(highest) = self.highest else {
            return value + Self::CYCLE;
        };
        let forward = value.wrapping_sub(highest) & Self::MASK;
        if forward < Self::HALF {
            highest + forward
        } else {
            // Older than the highest: step back, never below zero.
            let back = Self::CYCLE - forward;
            highest.saturating_sub(back)
        }
    }

    pub fn highest(&self) -> Option<u64> {
        self.highest
    }
}

/// Truncates an extended sequence number for the wire.
#[inline]
pub fn wire_seq(ext: u64) -> u16 {
    ext as u16
}

/// Truncates an extended timestamp for the wire.
#[inline]
pub fn wire_ts(ext: u64) -> u32 {
    ext as u32
}

/// Extends a 16-bit sequence number known to be at or before `highest` (a NACKed one:
/// receivers only NACK what they expected already).
pub fn extend_back(highest: u64, wire: u16) -> u64 {
    let back = (highest as u16).wrapping_sub(wire) as u64;
    highest.saturating_sub(back)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_table() {
        // (input, expected extended) in arrival order; one unwrapper for the whole table.
        let cases: &[(u64, u64)] = &[
            (65530, 65536 + 65530),
            (65531, 65536 + 65531),
            (65535, 65536 + 65535),
            (0, 131072),            // wrapped forward
            (65534, 65536 + 65534), // late packet from before the wrap
            (3, 131075),
            (1, 131073), // reordered within the new cycle
            (30000, 131072 + 30000),
            (60000, 131072 + 60000),
            (65535, 131072 + 65535),
            (40000, 131072 + 40000), // more than half a cycle back is still "older"
            (10, 196618),
        ];
        let mut u = SeqUnwrapper::new();
        for &(input, expected) in cases {
            assert_eq!(u.unwrap(input), expected, "input {input}");
        }
        assert_eq!(u.highest(), Some(196618));
    }

    #[test]
    fn late_packet_before_the_first_one() {
        let mut u = SeqUnwrapper::new();
        assert_eq!(u.unwrap(5), 65541);
        assert_eq!(
            u.unwrap(65533),
            65533,
            "reordered from before the first packet"
        );
        assert_eq!(u.highest(), Some(65541));
    }

    #[test]
    fn timestamp_wraparound() {
        let mut u = TsUnwrapper::new();
        let start = u32::MAX as u64 - 3000;
        let first = u.unwrap(start);
        let after = u.unwrap(2999); // 6000 ticks later, across the wrap
        assert_eq!(after - first, 6000);
        assert_eq!(wire_ts(after), 2999);
        let late = u.unwrap(start + 10);
        assert!(
            late > first && late < after,
            "a late timestamp lands between"
        );
    }

    #[test]
    fn nacked_numbers_extend_backwards() {
        assert_eq!(extend_back(65536 * 2 + 5, 3), 65536 * 2 + 3);
        assert_eq!(
            extend_back(65536 * 2 + 5, 65530),
            65536 + 65530,
            "across the wrap"
        );
        assert_eq!(extend_back(100, 100), 100);
    }

    #[test]
    fn truncation() {
        assert_eq!(wire_seq(65536 * 3 + 7), 7);
        assert_eq!(wire_ts((1u64 << 32) * 2 + 9), 9);
    }
}
