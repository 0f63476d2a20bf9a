//! What a Sender Report says about one stream we send (RFC 3550 6.4.1): how many packets
//! and payload octets went out, and which RTP timestamp goes with the report's wall-clock
//! time. Receivers use that mapping to play a participant's audio and video in sync, and
//! echo the report's time back so we can measure the round trip.

use std::time::{Duration, SystemTime};

/// Counts for one outgoing stream, fed with every packet sent.
#[derive(Debug, Default, Clone)]
pub struct SenderReportState {
    packets: u32,
    octets: u32,
    /// The newest RTP timestamp sent, and when it went out.
    newest: Option<(u32, SystemTime)>,
}

/// The fields of one report (the glue adds the SSRC and writes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderReportFields {
    pub ntp_time: SystemTime,
    pub rtp_time: u32,
    pub packet_count: u32,
    pub octet_count: u32,
}

impl SenderReportState {
    /// A packet with RTP timestamp `ts` and `payload_bytes` went out at `now`.
    /// Retransmissions count (the counts are of packets sent), but only a timestamp newer
    /// than any before moves the mapping: a resent packet's old timestamp is not "now".
    pub fn on_sent(&mut self, ts: u32, payload_bytes: usize, now: SystemTime) {
        self.packets = self.packets.wrapping_add(1);
        self.octets = self.octets.wrapping_add(payload_bytes as u32);
        let newer = match self.newest {
            None => true,
            // Serial-number arithmetic: newer when ahead by less than half the space.
            Some((newest, _)) => ts != newest && ts.wrapping_sub(newest) < 1 << 31,
        };
        if newer {
            self.newest = Some((ts, now));
        }
    }

    /// The report to send at `now`, or `None` before the first packet (there is no
    /// timestamp to map yet). The RTP time is extrapolated from the newest packet at the
    /// stream's `clock_rate`, as a sender's own clock would have advanced.
    pub fn report(&self, clock_rate: u32, now: SystemTime) -> Option<SenderReportFields> {
        let (ts, sent_at) = self.newest?;
        let elapsed = now.duration_since(sent_at).unwrap_or(Duration::ZERO);
        let ticks = (elapsed.as_micros() as u64 * clock_rate as u64 / 1_000_000) as u32;
        Some(SenderReportFields {
            ntp_time: now,
            rtp_time: ts.wrapping_add(ticks),
            packet_count: self.packets,
            octet_count: self.octets,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_to_report_before_the_first_packet() {
        assert_eq!(
            SenderReportState::default().report(90_000, SystemTime::now()),
            None
        );
    }

    #[test]
    fn counts_and_extrapolates_from_the_newest_timestamp() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let ms = |n| t0 + Duration::from_millis(n);
        let mut s = SenderReportState::default();
        s.on_sent(u32::MAX - 2999, 1000, ms(0));
        s.on_sent(u32::MAX - 2999, 900, ms(1)); // same frame
        s.on_sent(1, 1200, ms(33)); // across the wrap: newer
        s.on_sent(u32::MAX - 2999, 1000, ms(40)); // a retransmission: counted, not "now"
        let report = s.report(90_000, ms(133)).unwrap();
        assert_eq!(report.packet_count, 4);
        assert_eq!(report.octet_count, 4100);
        assert_eq!(report.ntp_time, ms(133));
        assert_eq!(
            report.rtp_time,
            1 + 9000,
            "100 ms after the newest at 90 kHz"
        );
    }

    #[test]
    fn a_clock_step_back_does_not_move_the_mapping_backwards() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut s = SenderReportState::default();
        s.on_sent(48_000, 100, t0);
        let report = s.report(48_000, t0 - Duration::from_secs(1)).unwrap();
        assert_eq!(report.rtp_time, 48_000);
    }
}
