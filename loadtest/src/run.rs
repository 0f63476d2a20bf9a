//! A load-test run: participants join at the ramp rate, media flows for the duration,
//! then everyone stops measuring at the same instant, leaves, and hands over what it
//! measured for the report. A progress task samples the participants' live counters
//! (and the server's /proc) while the run goes on.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::watch;

use crate::client::{self, Live, MediaPlan, Outcome, ParticipantSpec};
use crate::report::{self, Report, ServerSamples};
use crate::server_proc::{self, ProcSample};
use crate::target::Target;

/// How the run shows its progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A live line on stderr (a terminal).
    Bar,
    /// A plain line on stderr every few seconds (logs, CI).
    Lines,
    Off,
}

impl Progress {
    /// A live bar on a terminal, plain lines otherwise.
    pub fn for_stderr() -> Progress {
        if std::io::stderr().is_terminal() {
            Progress::Bar
        } else {
            Progress::Lines
        }
    }
}

#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The target's name, for the report.
    pub target: String,
    pub url: String,
    pub rooms: usize,
    pub publishers: usize,
    pub subscribers: usize,
    pub media: MediaPlan,
    /// How long everyone stays once the last participant has joined.
    pub duration: Duration,
    /// Joins per second.
    pub ramp: f64,
    pub server_pid: Option<u32>,
    pub progress: Progress,
    /// Room names are `<prefix>-<n>`: a fresh prefix per run keeps runs apart on a
    /// server that still holds an earlier run's rooms.
    pub room_prefix: String,
}

impl RunConfig {
    pub fn participants(&self) -> usize {
        self.rooms * (self.publishers + self.subscribers)
    }
}

/// A room-name prefix unique to this run.
pub fn fresh_room_prefix() -> String {
    format!("loadtest-{:06x}", rand::random::<u32>() & 0xff_ffff)
}

/// Everyone, in join order: room by room, each room's publishers first.
pub fn plan_participants(config: &RunConfig) -> Vec<ParticipantSpec> {
    let mut specs = Vec::with_capacity(config.participants());
    for r in 0..config.rooms {
        let room = format!("{}-{r}", config.room_prefix);
        let first = (r * config.publishers) as u32;
        let publishers: Vec<u32> = (first..first + config.publishers as u32).collect();
        for (p, &index) in publishers.iter().enumerate() {
            specs.push(ParticipantSpec {
                room: room.clone(),
                room_index: r,
                identity: format!("pub-{r}-{p}"),
                publisher: Some(index),
                expected_publishers: publishers.iter().copied().filter(|&i| i != index).collect(),
            });
        }
        for s in 0..config.subscribers {
            specs.push(ParticipantSpec {
                room: room.clone(),
                room_index: r,
                identity: format!("sub-{r}-{s}"),
                publisher: None,
                expected_publishers: publishers.clone(),
            });
        }
    }
    specs
}

/// Runs the load test and returns its report.
pub async fn run(config: &RunConfig, target: Arc<dyn Target>) -> anyhow::Result<Report> {
    anyhow::ensure!(config.participants() > 0, "nobody to simulate");
    anyhow::ensure!(config.ramp > 0.0, "--ramp must be more than 0");
    let local_ip = client::local_ip_towards(&config.url)?;
    let specs = plan_participants(config);
    for r in 0..config.rooms {
        let room = format!("{}-{r}", config.room_prefix);
        target
            .prepare_room(&room, config.publishers)
            .await
            .with_context(|| format!("preparing room {room}"))?;
    }
    let ticks = server_proc::ticks_per_second();
    let server_before = match config.server_pid {
        Some(pid) => Some(
            server_proc::sample(pid, ticks)
                .with_context(|| format!("reading /proc/{pid} (--server-pid)"))?,
        ),
        None => None,
    };

    let (stop_tx, stop) = watch::channel(None);
    let lives: Vec<Arc<Live>> = specs.iter().map(|_| Arc::default()).collect();
    let wanted_tracks: Vec<u32> = specs
        .iter()
        .map(|s| s.expected_publishers.len() as u32 * config.media.tracks_per_publisher())
        .collect();
    let spawned = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let sampler = tokio::spawn(progress(
        config.clone(),
        lives.clone(),
        wanted_tracks,
        spawned.clone(),
        ticks,
        started,
        stop.clone(),
    ));

    let gap = Duration::from_secs_f64(1.0 / config.ramp);
    let mut participants = Vec::with_capacity(specs.len());
    for (i, spec) in specs.into_iter().enumerate() {
        tokio::time::sleep_until((started + gap * i as u32).into()).await;
        participants.push(tokio::spawn(client::run_participant(
            spec,
            config.media,
            target.clone(),
            local_ip,
            lives[i].clone(),
            stop.clone(),
        )));
        spawned.fetch_add(1, Ordering::Relaxed);
    }
    let ramped = Instant::now();
    tokio::time::sleep(config.duration).await;

    let end = Instant::now();
    // A server that died during the run has no /proc left: the report still says what
    // the participants saw, without the server's figures.
    let server_after = config.server_pid.and_then(|pid| {
        server_proc::sample(pid, ticks)
            .inspect_err(|e| {
                eprintln!("switchyard-loadtest: no server figures: reading /proc/{pid} at the end: {e} (did the server exit?)");
            })
            .ok()
    });
    let _ = stop_tx.send(Some(end));
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(participants.len());
    for participant in participants {
        outcomes.push(participant.await.context("a participant task panicked")?);
    }
    let peak_rss_kib = sampler.await.unwrap_or(0);
    let server = match (config.server_pid, server_before, server_after) {
        (Some(pid), Some(before), Some(after)) => Some(ServerSamples {
            pid,
            before,
            after,
            peak_rss_kib: peak_rss_kib.max(after.rss_kib),
        }),
        _ => None,
    };
    let sent = report::Sent::sum(&lives);
    Ok(report::build(
        config, outcomes, sent, started, ramped, end, server,
    ))
}

/// Shows progress every second until the run stops; returns the peak server RSS it saw.
async fn progress(
    config: RunConfig,
    lives: Vec<Arc<Live>>,
    wanted_tracks: Vec<u32>,
    spawned: Arc<AtomicUsize>,
    ticks: u64,
    started: Instant,
    mut stop: client::Stop,
) -> u64 {
    let bar = match config.progress {
        Progress::Bar => {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                    .expect("valid template"),
            );
            bar.enable_steady_tick(Duration::from_millis(250));
            Some(bar)
        }
        _ => None,
    };
    let total = lives.len();
    let mut peak_rss = 0;
    let mut last = (Instant::now(), Totals::default(), None::<ProcSample>);
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    for second in 1u64.. {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(Option::is_some) => break,
        }
        let now = Instant::now();
        let t = Totals::sum(&lives, &wanted_tracks);
        let server = config
            .server_pid
            .and_then(|pid| server_proc::sample(pid, ticks).ok());
        if let Some(s) = server {
            peak_rss = peak_rss.max(s.rss_kib);
        }
        let dt = now.duration_since(last.0).as_secs_f64().max(1e-3);
        let rate = |now: u64, before: u64| now.saturating_sub(before) as f64 / dt;
        let mbps = |now: u64, before: u64| rate(now, before) * 8.0 / 1e6;
        let loss = if t.expected > 0 {
            100.0 * t.expected.saturating_sub(t.rx_packets) as f64 / t.expected as f64
        } else {
            0.0
        };
        let phase = if spawned.load(Ordering::Relaxed) < total {
            "ramping".to_owned()
        } else {
            "running".to_owned()
        };
        let mut msg = format!(
            "{phase}: joined {}/{total}, receiving all {}/{}, failed {} | in {:.0} pkt/s {:.1} Mbit/s | out {:.0} pkt/s {:.1} Mbit/s | loss {loss:.2}%",
            t.joined,
            t.receiving_all,
            t.wanting,
            t.failed,
            rate(t.rx_packets, last.1.rx_packets),
            mbps(t.rx_bytes, last.1.rx_bytes),
            rate(t.tx_packets, last.1.tx_packets),
            mbps(t.tx_bytes, last.1.tx_bytes),
        );
        if let (Some(now_s), Some(before)) = (server, last.2) {
            let cpu = now_s.cpu.saturating_sub(before.cpu).as_secs_f64() / dt;
            msg.push_str(&format!(
                " | server CPU {:.0}% RSS {:.0} MiB",
                cpu * 100.0,
                now_s.rss_kib as f64 / 1024.0
            ));
        }
        match (&bar, config.progress) {
            (Some(bar), _) => bar.set_message(msg),
            (None, Progress::Lines) if second % 5 == 0 => {
                eprintln!("[{:>4}s] {msg}", started.elapsed().as_secs());
            }
            _ => {}
        }
        last = (now, t, server.or(last.2));
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    peak_rss
}

#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    joined: usize,
    failed: usize,
    receiving_all: usize,
    wanting: usize,
    rx_packets: u64,
    rx_bytes: u64,
    expected: u64,
    tx_packets: u64,
    tx_bytes: u64,
}

impl Totals {
    fn sum(lives: &[Arc<Live>], wanted_tracks: &[u32]) -> Totals {
        let mut t = Totals::default();
        for (live, &wanted) in lives.iter().zip(wanted_tracks) {
            t.joined += usize::from(live.joined.load(Ordering::Relaxed));
            t.failed += usize::from(live.failed.load(Ordering::Relaxed));
            if wanted > 0 {
                t.wanting += 1;
                t.receiving_all +=
                    usize::from(live.tracks_receiving.load(Ordering::Relaxed) >= wanted);
            }
            t.rx_packets += live.rx_packets.load(Ordering::Relaxed);
            t.rx_bytes += live.rx_bytes.load(Ordering::Relaxed);
            t.expected += live.expected.load(Ordering::Relaxed);
            t.tx_packets += live.tx_packets.load(Ordering::Relaxed);
            t.tx_bytes += live.tx_bytes.load(Ordering::Relaxed);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn participants_per_room_and_whom_they_expect() {
        let config = RunConfig {
            target: "switchyard".into(),
            url: "ws://127.0.0.1:7880/rtc".into(),
            rooms: 2,
            publishers: 2,
            subscribers: 1,
            media: MediaPlan {
                video_bps: 1_000_000,
                simulcast: false,
                audio_only: false,
                pacing: crate::media::BROWSER_PACING,
            },
            duration: Duration::from_secs(1),
            ramp: 10.0,
            server_pid: None,
            progress: Progress::Off,
            room_prefix: "lt".into(),
        };
        let specs = plan_participants(&config);
        let summary: Vec<_> = specs
            .iter()
            .map(|s| {
                (
                    s.room.as_str(),
                    s.identity.as_str(),
                    s.publisher,
                    s.expected_publishers.clone(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("lt-0", "pub-0-0", Some(0), vec![1]),
                ("lt-0", "pub-0-1", Some(1), vec![0]),
                ("lt-0", "sub-0-0", None, vec![0, 1]),
                ("lt-1", "pub-1-0", Some(2), vec![3]),
                ("lt-1", "pub-1-1", Some(3), vec![2]),
                ("lt-1", "sub-1-0", None, vec![2, 3]),
            ]
        );
    }
}
