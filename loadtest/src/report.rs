//! The run's report: participants' measurements merged once the run is over, as a plain
//! text table and as JSON (`--json`), and the pass/fail rules.
//!
//! Every time is measured on this host; latency is one-way (receive time − send stamp,
//! one clock). All participants that receive are measured, publishers included: in a
//! meeting every publisher also watches the others.

use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::client::{Live, Outcome};
use crate::measure::{latency_histogram, StreamResult};
use crate::run::RunConfig;
use crate::server_proc::ProcSample;

/// The server's /proc readings around the run.
#[derive(Debug, Clone, Copy)]
pub struct ServerSamples {
    pub pid: u32,
    /// Just before the first participant joined, and at the end of the measurement.
    pub before: ProcSample,
    pub after: ProcSample,
    /// Highest VmRSS sampled (once a second) during the run.
    pub peak_rss_kib: u64,
}

/// What the publishers sent, from their live counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sent {
    pub packets: u64,
    pub bytes: u64,
    pub frames: u64,
    pub late_frames: u64,
    pub keyframe_requests: u64,
}

impl Sent {
    pub fn sum(lives: &[Arc<Live>]) -> Sent {
        let mut s = Sent::default();
        for l in lives {
            s.packets += l.tx_packets.load(Ordering::Relaxed);
            s.bytes += l.tx_bytes.load(Ordering::Relaxed);
            s.frames += l.frames.load(Ordering::Relaxed);
            s.late_frames += l.late_frames.load(Ordering::Relaxed);
            s.keyframe_requests += l.keyframe_requests.load(Ordering::Relaxed);
        }
        s
    }
}

/// p50, p99 and max of a set of values (None when there are none).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

impl Summary {
    fn of(mut values: Vec<f64>) -> Summary {
        values.sort_by(f64::total_cmp);
        // Nearest rank.
        let at = |q: f64| {
            let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
            values[rank - 1]
        };
        let some = !values.is_empty();
        Summary {
            count: values.len(),
            p50: some.then(|| at(0.5)),
            p99: some.then(|| at(0.99)),
            max: values.last().copied(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Participants {
    pub total: usize,
    /// The server said `joined`.
    pub joined: usize,
    /// Participants with someone to receive from...
    pub receivers: usize,
    /// ...that received audio and video (audio only with --audio-only) from every
    /// publisher in their room.
    pub received_from_all: usize,
    pub failed: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub identity: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Packets {
    /// Sum over all received streams of (highest counter − lowest counter + 1).
    pub expected: u64,
    /// Distinct packets received: the server's forwarded packets that arrived.
    pub received: u64,
    pub lost: u64,
    pub loss_pct: f64,
    /// Packets received twice (unneeded retransmissions).
    pub duplicates: u64,
    /// Packets without a load-test stamp.
    pub unstamped: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub samples: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub mean_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Jitter {
    /// RFC 3550 interarrival jitter at the end of each stream: mean and max over streams.
    pub mean_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Freezes {
    /// Gaps of more than 100 ms (3 frame intervals) without a complete video frame.
    pub count: u64,
    pub per_minute: Option<f64>,
    pub frozen_s: f64,
    /// Video watched, summed over received video tracks (from each one's first keyframe).
    pub video_minutes: f64,
    pub frames: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Generator {
    pub sent_packets: u64,
    /// Over the whole run (ramp included).
    pub sent_mbit_s: f64,
    pub frames: u64,
    /// Frames produced more than a frame interval late: above a few %, the generator
    /// (not the server) is the bottleneck.
    pub late_frames: u64,
    pub late_frames_pct: f64,
    /// PLIs and FIRs the server sent publishers.
    pub keyframe_requests: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Server {
    pub pid: u32,
    /// User + system CPU time over the run (first join to the end of the measurement).
    pub cpu_s: f64,
    /// `cpu_s` over the run's wall time: 100 = one core busy.
    pub cpu_pct: f64,
    /// `cpu_s` divided by the packets all receivers got (each forwarded packet counted
    /// once per receiver).
    pub cpu_us_per_packet: Option<f64>,
    pub rss_before_mib: f64,
    /// Highest VmRSS sampled during the run, and VmHWM (the process's peak since it
    /// started, which may predate the run).
    pub peak_rss_mib: f64,
    pub vm_hwm_mib: f64,
    /// (peak RSS − RSS before the first join) / participants.
    pub rss_per_participant_kib: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct StreamDetail {
    pub publisher: String,
    /// `audio`, or `video<layer>` (layer 0 without simulcast; 0/1/2 = q/h/f with it).
    pub stream: String,
    pub expected: u64,
    pub received: u64,
    pub duplicates: u64,
    /// From its first packet to its last.
    pub seconds: f64,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub jitter_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Receiver {
    pub identity: String,
    pub room: usize,
    pub expected: u64,
    pub received: u64,
    pub loss_pct: f64,
    pub latency_p99_ms: Option<f64>,
    /// RTP bytes received from its first packet to the end.
    pub kbps: f64,
    pub freezes: u64,
    /// Publishers' streams it never got (`pub-0-1 video`).
    pub missing: Vec<String>,
    pub streams: Vec<StreamDetail>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub target: String,
    pub url: String,
    pub rooms: usize,
    pub publishers_per_room: usize,
    pub subscribers_per_room: usize,
    pub video_bitrate_bps: u64,
    pub simulcast: bool,
    pub audio_only: bool,
    /// Video pacing factor (0: each frame's packets back to back).
    pub pacing: f64,
    /// First join to last join started, and last join to the end.
    pub ramp_s: f64,
    pub duration_s: f64,
    pub participants: Participants,
    pub failures: Vec<Failure>,
    /// From the start of the WebSocket connect (each participant's zero) to `joined`.
    pub join_ms: Summary,
    /// From the same zero to its first media packet.
    pub first_media_ms: Summary,
    /// From the same zero until it had media from every publisher in the room (it
    /// includes waiting for publishers that joined later).
    pub all_media_ms: Summary,
    /// Per received video track, from the receiver's zero to the first complete keyframe.
    pub first_keyframe_ms: Summary,
    pub packets: Packets,
    pub latency: Latency,
    pub jitter: Jitter,
    pub freezes: Freezes,
    /// Per participant that receives.
    pub receive_kbps: Summary,
    pub generator: Generator,
    pub server: Option<Server>,
    pub receivers: Vec<Receiver>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn quantile_ms(h: &Histogram<u64>, q: f64) -> Option<f64> {
    (!h.is_empty()).then(|| h.value_at_quantile(q) as f64 / 1e3)
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

/// Merges what every participant measured.
pub fn build(
    config: &RunConfig,
    outcomes: Vec<Outcome>,
    sent: Sent,
    started: Instant,
    ramped: Instant,
    end: Instant,
    server: Option<ServerSamples>,
) -> Report {
    let names: HashMap<u32, String> = outcomes
        .iter()
        .filter_map(|o| Some((o.spec.publisher?, o.spec.identity.clone())))
        .collect();
    let name = |p: u32| {
        names
            .get(&p)
            .cloned()
            .unwrap_or_else(|| format!("publisher {p}"))
    };
    let mut failures = Vec::new();
    let mut all_latency = latency_histogram();
    let (mut joins, mut first_media, mut all_media, mut first_keyframes, mut kbps) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut expected, mut received, mut duplicates, mut unstamped) = (0, 0, 0, 0);
    let mut jitters = Vec::new();
    let (mut freezes, mut frozen, mut watched, mut frames) = (0, Duration::ZERO, Duration::ZERO, 0);
    let mut receivers = Vec::new();
    let mut received_from_all = 0;
    let joined = outcomes.iter().filter(|o| o.joined_after.is_some()).count();

    for o in &outcomes {
        if let Some(j) = o.joined_after {
            joins.push(ms(j));
        }
        if let Some(e) = &o.error {
            failures.push(Failure {
                identity: o.spec.identity.clone(),
                reason: e.clone(),
            });
        }
        let streams: Vec<&StreamResult> = o.tracks.iter().flat_map(|t| &t.streams).collect();
        let mut mine = latency_histogram();
        let (mut r_expected, mut r_received, mut r_bytes, mut r_freezes) = (0, 0, 0, 0);
        for s in &streams {
            r_expected += s.expected;
            r_received += s.received;
            r_bytes += s.bytes;
            duplicates += s.duplicates;
            jitters.push(s.jitter_us / 1e3);
            let _ = mine.add(&s.latency);
        }
        for t in &o.tracks {
            unstamped += t.unstamped;
            if let Some(v) = &t.frames {
                r_freezes += v.freezes;
                frozen += v.frozen;
                watched += v.watched;
                frames += v.frames;
                if let Some(k) = v.first_keyframe_at {
                    first_keyframes.push(ms(k.saturating_duration_since(o.started)));
                }
            }
        }
        freezes += r_freezes;
        expected += r_expected;
        received += r_received;
        let _ = all_latency.add(&mine);

        let first_at = |publisher: u32, video: bool| {
            streams
                .iter()
                .filter(|s| {
                    s.publisher == publisher && s.stream.is_video() == video && s.received > 0
                })
                .map(|s| s.first_at)
                .min()
        };
        let mut missing = Vec::new();
        let mut last_first = None::<Instant>;
        for &p in &o.spec.expected_publishers {
            let kinds: &[bool] = if config.media.audio_only {
                &[false]
            } else {
                &[false, true]
            };
            for &video in kinds {
                match first_at(p, video) {
                    Some(at) => last_first = Some(last_first.map_or(at, |l| l.max(at))),
                    None => missing.push(format!(
                        "{} {}",
                        name(p),
                        if video { "video" } else { "audio" }
                    )),
                }
            }
        }
        if o.spec.expected_publishers.is_empty() {
            continue;
        }
        if missing.is_empty() {
            received_from_all += 1;
            if let Some(at) = last_first {
                all_media.push(ms(at.saturating_duration_since(o.started)));
            }
        } else if o.error.is_none() {
            failures.push(Failure {
                identity: o.spec.identity.clone(),
                reason: format!("never received {}", missing.join(", ")),
            });
        }
        let first = streams.iter().map(|s| s.first_at).min();
        let mut my_kbps = 0.0;
        if let Some(first) = first {
            first_media.push(ms(first.saturating_duration_since(o.started)));
            let secs = end.saturating_duration_since(first).as_secs_f64().max(1e-3);
            my_kbps = r_bytes as f64 * 8.0 / 1e3 / secs;
            kbps.push(my_kbps);
        }
        receivers.push(Receiver {
            identity: o.spec.identity.clone(),
            room: o.spec.room_index,
            expected: r_expected,
            received: r_received,
            loss_pct: pct(r_expected.saturating_sub(r_received), r_expected),
            latency_p99_ms: quantile_ms(&mine, 0.99),
            kbps: my_kbps,
            freezes: r_freezes,
            missing,
            streams: streams
                .iter()
                .map(|s| StreamDetail {
                    publisher: name(s.publisher),
                    stream: s.stream.name(),
                    expected: s.expected,
                    received: s.received,
                    duplicates: s.duplicates,
                    seconds: s
                        .last_at
                        .saturating_duration_since(s.first_at)
                        .as_secs_f64(),
                    latency_p50_ms: quantile_ms(&s.latency, 0.5),
                    latency_p99_ms: quantile_ms(&s.latency, 0.99),
                    jitter_ms: s.jitter_us / 1e3,
                })
                .collect(),
        });
    }

    let run_s = end.saturating_duration_since(started).as_secs_f64();
    let participants = outcomes.len();
    let server = server.map(|s| {
        let cpu_s = s.after.cpu.saturating_sub(s.before.cpu).as_secs_f64();
        Server {
            pid: s.pid,
            cpu_s,
            cpu_pct: if run_s > 0.0 {
                100.0 * cpu_s / run_s
            } else {
                0.0
            },
            cpu_us_per_packet: (received > 0).then(|| cpu_s * 1e6 / received as f64),
            rss_before_mib: s.before.rss_kib as f64 / 1024.0,
            peak_rss_mib: s.peak_rss_kib as f64 / 1024.0,
            vm_hwm_mib: s.after.hwm_kib as f64 / 1024.0,
            rss_per_participant_kib: s.peak_rss_kib.saturating_sub(s.before.rss_kib) as f64
                / participants.max(1) as f64,
        }
    });
    let lost = expected.saturating_sub(received);
    Report {
        target: config.target.clone(),
        url: config.url.clone(),
        rooms: config.rooms,
        publishers_per_room: config.publishers,
        subscribers_per_room: config.subscribers,
        video_bitrate_bps: config.media.video_bps,
        simulcast: config.media.simulcast,
        audio_only: config.media.audio_only,
        pacing: config.media.pacing,
        ramp_s: ramped.saturating_duration_since(started).as_secs_f64(),
        duration_s: end.saturating_duration_since(ramped).as_secs_f64(),
        participants: Participants {
            total: participants,
            joined,
            receivers: receivers.len(),
            received_from_all,
            failed: {
                let mut who: Vec<&str> = failures.iter().map(|f| f.identity.as_str()).collect();
                who.sort_unstable();
                who.dedup();
                who.len()
            },
        },
        failures,
        join_ms: Summary::of(joins),
        first_media_ms: Summary::of(first_media),
        all_media_ms: Summary::of(all_media),
        first_keyframe_ms: Summary::of(first_keyframes),
        packets: Packets {
            expected,
            received,
            lost,
            loss_pct: pct(lost, expected),
            duplicates,
            unstamped,
        },
        latency: Latency {
            samples: all_latency.len(),
            p50_ms: quantile_ms(&all_latency, 0.5),
            p99_ms: quantile_ms(&all_latency, 0.99),
            p999_ms: quantile_ms(&all_latency, 0.999),
            max_ms: (!all_latency.is_empty()).then(|| all_latency.max() as f64 / 1e3),
            mean_ms: (!all_latency.is_empty()).then(|| all_latency.mean() / 1e3),
        },
        jitter: Jitter {
            mean_ms: (!jitters.is_empty())
                .then(|| jitters.iter().sum::<f64>() / jitters.len() as f64),
            max_ms: jitters.iter().copied().reduce(f64::max),
        },
        freezes: Freezes {
            count: freezes,
            per_minute: (watched > Duration::ZERO)
                .then(|| freezes as f64 / (watched.as_secs_f64() / 60.0)),
            frozen_s: frozen.as_secs_f64(),
            video_minutes: watched.as_secs_f64() / 60.0,
            frames,
        },
        receive_kbps: Summary::of(kbps),
        generator: Generator {
            sent_packets: sent.packets,
            sent_mbit_s: if run_s > 0.0 {
                sent.bytes as f64 * 8.0 / 1e6 / run_s
            } else {
                0.0
            },
            frames: sent.frames,
            late_frames: sent.late_frames,
            late_frames_pct: pct(sent.late_frames, sent.frames),
            keyframe_requests: sent.keyframe_requests,
        },
        server,
        receivers,
    }
}

impl Report {
    /// Whether every participant joined and received from every publisher in its room.
    pub fn all_participants_ok(&self) -> bool {
        self.failures.is_empty()
    }

    /// The thresholds this run missed, each said in words.
    pub fn missed(
        &self,
        max_loss_pct: Option<f64>,
        max_p99_latency_ms: Option<f64>,
    ) -> Vec<String> {
        let mut missed = Vec::new();
        if let Some(max) = max_loss_pct {
            if self.packets.loss_pct > max {
                missed.push(format!(
                    "--max-loss {max}: loss was {:.3}% ({} of {} packets)",
                    self.packets.loss_pct, self.packets.lost, self.packets.expected
                ));
            }
        }
        if let Some(max) = max_p99_latency_ms {
            match self.latency.p99_ms {
                Some(p99) if p99 <= max => {}
                Some(p99) => missed.push(format!(
                    "--max-p99-latency {max}: p99 latency was {p99:.2} ms"
                )),
                None => missed.push(format!(
                    "--max-p99-latency {max}: no latency was measured (no media received)"
                )),
            }
        }
        missed
    }

    /// The report as a plain-text table.
    pub fn write_table(&self, out: &mut dyn Write) -> io::Result<()> {
        let opt = |v: Option<f64>, digits: usize| match v {
            Some(v) => format!("{v:.digits$}"),
            None => "-".to_owned(),
        };
        let summary = |s: &Summary, digits: usize| {
            format!(
                "p50 {}  p99 {}  max {}  (n={})",
                opt(s.p50, digits),
                opt(s.p99, digits),
                opt(s.max, digits),
                s.count
            )
        };
        let video = if self.audio_only {
            "audio only".to_owned()
        } else {
            format!(
                "video {} kbit/s{}",
                self.video_bitrate_bps / 1000,
                if self.simulcast {
                    " simulcast (q/h/f)"
                } else {
                    ""
                }
            )
        };
        let p = &self.participants;
        writeln!(out, "Load test of {} at {}", self.target, self.url)?;
        writeln!(
            out,
            "  {} room(s) x ({} publishers + {} subscribers), {video}; ramp {:.1} s, then {:.1} s",
            self.rooms,
            self.publishers_per_room,
            self.subscribers_per_room,
            self.ramp_s,
            self.duration_s
        )?;
        let row =
            |out: &mut dyn Write, name: &str, value: String| writeln!(out, "  {name:<24} {value}");
        writeln!(out)?;
        row(
            out,
            "participants",
            format!(
                "{} joined of {}; {} of {} received from every publisher; {} failed",
                p.joined, p.total, p.received_from_all, p.receivers, p.failed
            ),
        )?;
        row(out, "join (ms)", summary(&self.join_ms, 1))?;
        row(out, "first media (ms)", summary(&self.first_media_ms, 1))?;
        row(out, "media from all (ms)", summary(&self.all_media_ms, 1))?;
        row(
            out,
            "first keyframe (ms)",
            summary(&self.first_keyframe_ms, 1),
        )?;
        let k = &self.packets;
        row(
            out,
            "packets",
            format!(
                "expected {}  received {}  lost {} ({:.3}%)  duplicates {}",
                k.expected, k.received, k.lost, k.loss_pct, k.duplicates
            ),
        )?;
        let l = &self.latency;
        row(
            out,
            "latency (ms)",
            format!(
                "p50 {}  p99 {}  p99.9 {}  max {}",
                opt(l.p50_ms, 2),
                opt(l.p99_ms, 2),
                opt(l.p999_ms, 2),
                opt(l.max_ms, 2)
            ),
        )?;
        row(
            out,
            "jitter (ms)",
            format!(
                "mean {}  max {}",
                opt(self.jitter.mean_ms, 2),
                opt(self.jitter.max_ms, 2)
            ),
        )?;
        let f = &self.freezes;
        row(
            out,
            "freezes",
            format!(
                "{} ({} per minute), {:.1} s frozen over {:.1} min of video",
                f.count,
                opt(f.per_minute, 2),
                f.frozen_s,
                f.video_minutes
            ),
        )?;
        row(out, "receive kbit/s", summary(&self.receive_kbps, 0))?;
        let g = &self.generator;
        row(
            out,
            "generator",
            format!(
                "sent {} packets ({:.1} Mbit/s); {} of {} frames late ({:.1}%); {} keyframe requests",
                g.sent_packets, g.sent_mbit_s, g.late_frames, g.frames, g.late_frames_pct, g.keyframe_requests
            ),
        )?;
        if let Some(s) = &self.server {
            row(
                out,
                "server CPU",
                format!(
                    "{:.2} s ({:.0}% of a core); {} us per forwarded packet",
                    s.cpu_s,
                    s.cpu_pct,
                    opt(s.cpu_us_per_packet, 1)
                ),
            )?;
            row(
                out,
                "server memory",
                format!(
                    "RSS {:.1} MiB before, peak {:.1} MiB (VmHWM {:.1} MiB); {:.0} KiB per participant",
                    s.rss_before_mib, s.peak_rss_mib, s.vm_hwm_mib, s.rss_per_participant_kib
                ),
            )?;
        }
        for failure in &self.failures {
            writeln!(out, "  FAILED {}: {}", failure.identity, failure.reason)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{MediaPlan, ParticipantSpec};
    use crate::measure::{TrackResult, VideoResult};
    use crate::media::StreamId;
    use crate::run::{plan_participants, Progress};

    fn config() -> RunConfig {
        RunConfig {
            target: "switchyard".into(),
            url: "ws://127.0.0.1:1/rtc".into(),
            rooms: 1,
            publishers: 2,
            subscribers: 1,
            media: MediaPlan {
                video_bps: 500_000,
                simulcast: false,
                audio_only: false,
                pacing: crate::media::BROWSER_PACING,
            },
            duration: Duration::from_secs(10),
            ramp: 10.0,
            server_pid: None,
            progress: Progress::Off,
            room_prefix: "lt".into(),
        }
    }

    /// A stream of `publisher` that arrived from `at` for 10 s, `lost` of 100 missing,
    /// every packet 2 ms late.
    fn stream(publisher: u32, stream: StreamId, at: Instant, lost: u64) -> StreamResult {
        let mut latency = latency_histogram();
        latency.record_n(2000, 100 - lost).unwrap();
        StreamResult {
            publisher,
            stream,
            expected: 100,
            received: 100 - lost,
            duplicates: 0,
            late: 0,
            bytes: 100_000,
            jitter_us: 500.0,
            first_at: at,
            last_at: at + Duration::from_secs(10),
            latency,
        }
    }

    fn track(s: StreamResult) -> TrackResult {
        TrackResult {
            video: s.stream.is_video(),
            frames: s.stream.is_video().then(VideoResult::default),
            streams: vec![s],
            unstamped: 0,
        }
    }

    fn outcome(spec: ParticipantSpec, started: Instant, tracks: Vec<TrackResult>) -> Outcome {
        Outcome {
            spec,
            started,
            joined_after: Some(Duration::from_millis(5)),
            error: None,
            tracks,
        }
    }

    #[test]
    fn whoever_misses_a_publishers_media_fails_and_loss_is_totalled() {
        let config = config();
        let specs = plan_participants(&config);
        let t0 = Instant::now();
        let at = t0 + Duration::from_millis(300);
        let outcomes = vec![
            // pub-0-0 gets everything from pub-0-1, with 4 packets lost.
            outcome(
                specs[0].clone(),
                t0,
                vec![
                    track(stream(1, StreamId::AUDIO, at, 4)),
                    track(stream(1, StreamId::video(0), at, 0)),
                ],
            ),
            // pub-0-1 never gets pub-0-0's video.
            outcome(
                specs[1].clone(),
                t0,
                vec![track(stream(0, StreamId::AUDIO, at, 0))],
            ),
            // sub-0-0 could not join.
            Outcome {
                joined_after: None,
                error: Some("joining: join refused: unauthorized: no".into()),
                ..outcome(specs[2].clone(), t0, vec![])
            },
        ];
        let end = t0 + Duration::from_secs(11);
        let r = build(&config, outcomes, Sent::default(), t0, t0, end, None);

        let failures: Vec<_> = r
            .failures
            .iter()
            .map(|f| (f.identity.as_str(), f.reason.as_str()))
            .collect();
        assert_eq!(
            failures,
            [
                ("pub-0-1", "never received pub-0-0 video"),
                ("sub-0-0", "joining: join refused: unauthorized: no"),
            ]
        );
        assert!(!r.all_participants_ok());
        let p = &r.participants;
        assert_eq!(
            (
                p.total,
                p.joined,
                p.receivers,
                p.received_from_all,
                p.failed
            ),
            (3, 2, 3, 1, 2)
        );
        assert_eq!((r.packets.expected, r.packets.lost), (300, 4));
        assert!((r.packets.loss_pct - 4.0 / 3.0).abs() < 1e-9);
        assert_eq!(r.latency.samples, 296);
        assert_eq!(r.first_media_ms.p50, Some(300.0));
        assert_eq!(r.all_media_ms.count, 1);

        assert!(r.missed(Some(2.0), Some(2.5)).is_empty());
        let missed = r.missed(Some(1.0), Some(1.0));
        assert_eq!(missed.len(), 2, "{missed:?}");
        assert!(missed[0].starts_with("--max-loss 1: loss was 1.333% (4 of 300 packets)"));
        // 2 ms, to the histogram's 1% precision.
        assert!(
            missed[1].starts_with("--max-p99-latency 1: p99 latency was 2.0"),
            "{missed:?}"
        );
    }

    #[test]
    fn summary_by_nearest_rank() {
        let s = Summary::of((1..=100).rev().map(f64::from).collect());
        assert_eq!(
            (s.count, s.p50, s.p99, s.max),
            (100, Some(50.0), Some(99.0), Some(100.0))
        );
        let one = Summary::of(vec![7.0]);
        assert_eq!(
            (one.p50, one.p99, one.max),
            (Some(7.0), Some(7.0), Some(7.0))
        );
        assert_eq!(Summary::of(vec![]).p50, None);
    }
}
