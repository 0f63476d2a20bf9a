//! Distributions of what an operator asks when a call looks bad: how long the router holds
//! a packet (forwarding latency), and what the subscribers report of the streams it sends
//! them (round-trip time, jitter, loss), as Prometheus histograms.
//!
//! The reception quality comes from the Receiver Reports each subscriber's connection
//! sends about the streams the router sends it (RFC 3550 6.4.2). That is the one leg whose
//! reports reach the router's code: the publishers' side is measured by webrtc-rs's own
//! report interceptor, which sends our Receiver Reports but keeps nothing we can read.
//! Since each participant's two connections share its network path, the subscriber leg
//! stands for both.
//!
//! Sans-IO: the caller passes the arrival time; nothing here reads a clock.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::{Histogram, HistogramOpts, HistogramVec};

use crate::{MediaKind, PerKind};

pub const FORWARDING_LATENCY: &str = "switchyard_forwarding_latency_seconds";
pub const RTT: &str = "switchyard_subscriber_rtt_seconds";
pub const JITTER: &str = "switchyard_subscriber_jitter_seconds";
pub const LOSS: &str = "switchyard_subscriber_loss_ratio";

/// From 50 µs (an idle router) to 250 ms (a server that far behind is dropping by then
/// anyway), finer around 1 ms: the p99 a server core at 70 % should keep under
/// (loadtest/), and where one packet's fan-out to a few hundred subscribers ends.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.000_75, 0.001, 0.001_5, 0.002, 0.002_5, 0.005, 0.01,
    0.025, 0.05, 0.1, 0.25,
];
/// From a LAN (1 ms) to a bad satellite link (2 s); 150 ms is where interactive speech
/// starts to suffer (ITU-T G.114 one-way 150 ms).
const RTT_BUCKETS: &[f64] = &[
    0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0,
];
/// Interarrival jitter: under 30 ms a jitter buffer hides it; over 100 ms it shows.
const JITTER_BUCKETS: &[f64] = &[
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2,
];
/// Fraction lost per report interval; `0` on its own so loss-free reports are countable.
/// Opus FEC hides about 5-10 %, video NACK/PLI recovery degrades visibly past 2-5 %.
const LOSS_BUCKETS: &[f64] = &[0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0];

/// One report block of a Receiver (or Sender) Report, as RFC 3550 6.4.1 defines it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceptionReport {
    /// Packets lost since the previous report, as a fraction of 256.
    pub fraction_lost: u8,
    /// Interarrival jitter in the stream's RTP timestamp units.
    pub jitter: u32,
    /// LSR: the middle 32 bits of the NTP timestamp of the last Sender Report received
    /// (0: none yet).
    pub last_sender_report: u32,
    /// DLSR: the receiver's delay between that Sender Report and this report, in 1/65536 s.
    pub delay: u32,
}

/// The histograms, each pre-resolved per kind, so observing never looks a label up (a
/// `HistogramVec` lookup takes a read lock and hashes).
pub struct Quality {
    latency_vec: HistogramVec,
    latency: PerKind<Histogram>,
    rtt: Histogram,
    jitter_vec: HistogramVec,
    jitter: PerKind<Histogram>,
    loss_vec: HistogramVec,
    loss: PerKind<Histogram>,
}

impl Default for Quality {
    fn default() -> Self {
        let by_kind = |name: &str, help: &str, buckets: &[f64]| {
            let vec = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                &["kind"],
            )
            .expect("constant histogram options are valid");
            let children = PerKind::from_fn(|kind| vec.with_label_values(&[kind.as_str()]));
            (vec, children)
        };
        let (latency_vec, latency) = by_kind(
            FORWARDING_LATENCY,
            "Time from a packet's receipt from its publisher to its write to a subscriber \
             completing (queueing, rewriting, SRTP, the socket send), per packet written.",
            LATENCY_BUCKETS,
        );
        let rtt = Histogram::with_opts(
            HistogramOpts::new(
                RTT,
                "Round-trip time between the server and subscribers, from their Receiver \
                 Reports (RFC 3550 LSR/DLSR), per report block.",
            )
            .buckets(RTT_BUCKETS.to_vec()),
        )
        .expect("constant histogram options are valid");
        let (jitter_vec, jitter) = by_kind(
            JITTER,
            "Interarrival jitter subscribers report of the streams the server sends them, \
             per report block.",
            JITTER_BUCKETS,
        );
        let (loss_vec, loss) = by_kind(
            LOSS,
            "Fraction of packets lost that subscribers report of the streams the server \
             sends them, per report block (each covers the interval since the previous).",
            LOSS_BUCKETS,
        );
        Quality {
            latency_vec,
            latency,
            rtt,
            jitter_vec,
            jitter,
            loss_vec,
            loss,
        }
    }
}

impl fmt::Debug for Quality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Quality")
            .field("forwarded_packets_timed", &self.latency_count())
            .field("rtt_samples", &self.rtt.get_sample_count())
            .finish_non_exhaustive()
    }
}

impl Quality {
    /// One packet written to a subscriber, `latency` after it was received.
    #[inline]
    pub fn observe_forwarding_latency(&self, kind: MediaKind, latency: Duration) {
        self.latency[kind].observe(latency.as_secs_f64());
    }

    /// A subscriber's report block about one stream of `kind` sent with `clock_rate`,
    /// arriving at `arrival` by the clock the server's Sender Reports are stamped with
    /// (webrtc-rs stamps them with the system clock).
    pub fn observe_report(
        &self,
        kind: MediaKind,
        clock_rate: u32,
        arrival: SystemTime,
        report: &ReceptionReport,
    ) {
        if let Some(rtt) = round_trip_time(
            ntp_middle(ntp_time(arrival)),
            report.last_sender_report,
            report.delay,
        ) {
            self.rtt.observe(rtt.as_secs_f64());
        }
        if clock_rate > 0 {
            self.jitter[kind].observe(report.jitter as f64 / clock_rate as f64);
        }
        self.loss[kind].observe(report.fraction_lost as f64 / 256.0);
    }

    fn latency_count(&self) -> u64 {
        MediaKind::ALL
            .iter()
            .map(|k| self.latency[*k].get_sample_count())
            .sum()
    }

    /// The histograms as collectors, for a registry (clones share the same counts).
    pub(crate) fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.latency_vec.clone()),
            Box::new(self.rtt.clone()),
            Box::new(self.jitter_vec.clone()),
            Box::new(self.loss_vec.clone()),
        ]
    }
}

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// `t` as a 64-bit NTP timestamp (32.32 fixed point seconds since 1900), as Sender Reports
/// carry it.
pub fn ntp_time(t: SystemTime) -> u64 {
    let since_unix = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_unix.as_secs() + NTP_UNIX_OFFSET;
    let fraction = ((since_unix.subsec_nanos() as u64) << 32) / 1_000_000_000;
    (seconds << 32) | fraction
}

/// The middle 32 bits of an NTP timestamp (16.16 fixed point), the form LSR takes.
pub fn ntp_middle(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

/// RFC 3550 6.4.1: RTT = A - LSR - DLSR, all in 1/65536 s, `A` the report's arrival. None
/// before the receiver got any Sender Report (LSR 0), and for a negative result (the clock
/// stepped back between our report and its answer), which wraps to the upper half.
pub fn round_trip_time(arrival_middle: u32, lsr: u32, dlsr: u32) -> Option<Duration> {
    if lsr == 0 {
        return None;
    }
    let rtt = arrival_middle.wrapping_sub(lsr).wrapping_sub(dlsr);
    if rtt >= 1 << 31 {
        return None;
    }
    Some(Duration::from_nanos((rtt as u64 * 1_000_000_000) >> 16))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ntp_time_of_known_instants() {
        assert_eq!(ntp_time(UNIX_EPOCH), NTP_UNIX_OFFSET << 32);
        let t = UNIX_EPOCH + Duration::from_millis(1_500);
        assert_eq!(ntp_time(t), ((NTP_UNIX_OFFSET + 1) << 32) | (1 << 31));
        assert_eq!(
            ntp_middle(ntp_time(t)),
            (((NTP_UNIX_OFFSET + 1) as u32) << 16) | 0x8000
        );
    }

    #[test]
    fn rtt_from_lsr_and_dlsr() {
        // RFC 3550's example: A = 0xb710:8000 (46864.5 s), LSR = 0xb705:2000 (46853.125 s),
        // DLSR = 0x0005:4000 (5.25 s): RTT = 6.125 s.
        let rtt = round_trip_time(0xb710_8000, 0xb705_2000, 0x0005_4000).unwrap();
        assert_eq!(rtt, Duration::from_millis(6_125));
        // Resolution is 1/65536 s (about 15 µs): a 2 ms loopback RTT survives.
        let sr_sent = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let lsr = ntp_middle(ntp_time(sr_sent));
        let dlsr = (0.5 * 65536.0) as u32;
        let arrival = sr_sent + Duration::from_millis(502);
        let rtt = round_trip_time(ntp_middle(ntp_time(arrival)), lsr, dlsr).unwrap();
        assert!(
            rtt.abs_diff(Duration::from_millis(2)) < Duration::from_micros(50),
            "{rtt:?}"
        );
        // Across the 16.16 wrap (every 18.2 hours) it still works: 0x200 units since the
        // SR, 0x100 of them held by the receiver, 256/65536 s on the way.
        assert_eq!(
            round_trip_time(0x0000_0100, 0xffff_ff00, 0x0000_0100),
            Some(Duration::from_micros(3_906) + Duration::from_nanos(250))
        );
    }

    #[test]
    fn rtt_needs_a_sender_report_and_a_sane_clock() {
        assert_eq!(
            round_trip_time(0xb710_8000, 0, 0),
            None,
            "no SR received yet"
        );
        assert_eq!(
            round_trip_time(0xb705_0000, 0xb705_2000, 0),
            None,
            "arrival before the SR: the clock stepped back"
        );
    }

    #[test]
    fn reports_fill_the_histograms_in_seconds_and_ratios() {
        let q = Quality::default();
        let sr_sent = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let report = ReceptionReport {
            fraction_lost: 64,
            jitter: 900,
            last_sender_report: ntp_middle(ntp_time(sr_sent)),
            delay: 65536 / 10,
        };
        q.observe_report(
            MediaKind::Video,
            90_000,
            sr_sent + Duration::from_millis(120),
            &report,
        );
        assert_eq!(q.rtt.get_sample_count(), 1);
        assert!((q.rtt.get_sample_sum() - 0.020).abs() < 0.000_1);
        assert!((q.jitter[MediaKind::Video].get_sample_sum() - 0.010).abs() < 1e-9);
        assert_eq!(q.jitter[MediaKind::Audio].get_sample_count(), 0);
        assert_eq!(q.loss[MediaKind::Video].get_sample_sum(), 0.25);

        // Before any SR there is no RTT, but jitter and loss still count.
        let no_sr = ReceptionReport {
            last_sender_report: 0,
            delay: 0,
            ..report
        };
        q.observe_report(MediaKind::Audio, 48_000, sr_sent, &no_sr);
        assert_eq!(q.rtt.get_sample_count(), 1);
        assert!((q.jitter[MediaKind::Audio].get_sample_sum() - 0.018_75).abs() < 1e-9);
    }

    #[test]
    fn forwarding_latency_per_kind() {
        let q = Quality::default();
        q.observe_forwarding_latency(MediaKind::Audio, Duration::from_micros(300));
        q.observe_forwarding_latency(MediaKind::Video, Duration::from_millis(2));
        q.observe_forwarding_latency(MediaKind::Video, Duration::from_millis(3));
        assert_eq!(q.latency[MediaKind::Audio].get_sample_count(), 1);
        assert_eq!(q.latency[MediaKind::Video].get_sample_count(), 2);
        assert_eq!(q.latency_count(), 3);
    }
}
