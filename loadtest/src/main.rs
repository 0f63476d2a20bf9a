//! `switchyard-loadtest`: simulated WebRTC participants (webrtc-rs, real signaling, real
//! DTLS/SRTP) against a Switchyard server, measuring what the receivers get.
//!
//! Exit status: 0 when everyone joined, received from every publisher and the thresholds
//! were met; 3 when a `--max-*` threshold was missed; 4 when a participant failed (did not
//! join, was cut off, or never received some publisher's media); 1 when the run could not
//! be done at all; 2 for a bad command line.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};

use switchyard_loadtest::client::MediaPlan;
use switchyard_loadtest::run::{self, Progress, RunConfig};
use switchyard_loadtest::target::janus::{JanusTarget, Substream};
use switchyard_loadtest::target::switchyard::SwitchyardTarget;
use switchyard_loadtest::target::Target;
use switchyard_loadtest::units::{parse_bitrate, parse_duration};
use switchyard_signal::token::{DEV_API_KEY, DEV_API_SECRET};
use switchyard_signal::Quality;

const EXIT_THRESHOLD_MISSED: u8 = 3;
const EXIT_PARTICIPANT_FAILED: u8 = 4;

#[derive(Parser, Debug)]
#[command(
    name = "switchyard-loadtest",
    version,
    about = "Load-test a Switchyard server with simulated WebRTC participants",
    after_help = "Exit status: 0 all good; 3 a --max-* threshold missed; 4 a participant \
                  failed (did not join, or never received media from every publisher in its \
                  room); 1 the run could not be done; 2 bad arguments."
)]
struct Cli {
    /// Signaling URL of the server under test.
    #[arg(long, default_value = "ws://127.0.0.1:7880/rtc")]
    url: String,
    /// Rooms to create.
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Publishers per room (they send audio and video, and receive the others).
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Subscribers per room (they only receive).
    #[arg(long, default_value_t = 1)]
    subscribers: usize,
    /// Video bitrate per publisher (of the full layer with --simulcast): 1500k, 1.5M or bits/s.
    #[arg(long, default_value = "1.5M", value_parser = parse_bitrate)]
    video_bitrate: u64,
    /// Send three simulcast layers (rid q/h/f at 1/4, 1/2 and the full bitrate).
    #[arg(long, conflicts_with = "audio_only")]
    simulcast: bool,
    /// Publish audio only.
    #[arg(long)]
    audio_only: bool,
    /// Send video at up to this many times its bitrate, spreading each frame's packets as
    /// a browser's pacer does (libwebrtc: 2.5); 0 writes each frame back to back.
    #[arg(long, default_value_t = switchyard_loadtest::media::BROWSER_PACING)]
    pacing: f64,
    /// How long to measure once everyone has joined, e.g. 30s, 2m.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// Joins per second.
    #[arg(long, default_value_t = 10.0)]
    ramp: f64,
    /// API key that signs the join tokens (default: development mode's).
    #[arg(long, env = "SWITCHYARD_LOADTEST_API_KEY", requires = "api_secret")]
    api_key: Option<String>,
    /// Its secret.
    #[arg(
        long,
        env = "SWITCHYARD_LOADTEST_API_SECRET",
        hide_env_values = true,
        requires = "api_key"
    )]
    api_secret: Option<String>,
    /// Write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Process id of the server, to report its CPU time and memory (same host, Linux).
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    /// Fail (exit 3) when packet loss over all received streams is above this percentage.
    #[arg(long, value_name = "PCT")]
    max_loss: Option<f64>,
    /// Fail (exit 3) when the p99 one-way latency is above this many milliseconds.
    #[arg(long, value_name = "MS")]
    max_p99_latency: Option<f64>,
    /// The server under test.
    #[arg(long, value_enum, default_value_t = TargetKind::Switchyard)]
    target: TargetKind,
    /// The simulcast layer every receiver asks for (Switchyard: `update_subscription`;
    /// Janus: `substream`). Without it each server sends its default, the highest.
    #[arg(long, value_enum)]
    layer: Option<LayerChoice>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LayerChoice {
    Low,
    Medium,
    High,
}

impl LayerChoice {
    fn quality(self) -> Quality {
        match self {
            LayerChoice::Low => Quality::Low,
            LayerChoice::Medium => Quality::Medium,
            LayerChoice::High => Quality::High,
        }
    }

    fn substream(self) -> Substream {
        match self {
            LayerChoice::Low => Substream::Low,
            LayerChoice::Medium => Substream::Medium,
            LayerChoice::High => Substream::High,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TargetKind {
    Switchyard,
    /// Janus VideoRoom (a baseline to compare with).
    Janus,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("switchyard-loadtest: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(cli.rooms > 0, "--rooms must be at least 1");
    anyhow::ensure!(
        cli.publishers + cli.subscribers > 0,
        "a room needs at least one publisher or subscriber"
    );
    anyhow::ensure!(
        cli.ramp.is_finite() && cli.ramp > 0.0,
        "--ramp must be more than 0 joins per second"
    );
    let (api_key, api_secret) = match (cli.api_key, cli.api_secret) {
        (Some(key), Some(secret)) => (key, secret),
        _ => (DEV_API_KEY.to_owned(), DEV_API_SECRET.to_owned()),
    };
    let target: Arc<dyn Target> = match cli.target {
        TargetKind::Switchyard => {
            let target = SwitchyardTarget::new(&cli.url, api_key, api_secret);
            Arc::new(match cli.layer {
                Some(layer) => target.with_quality(layer.quality()),
                None => target,
            })
        }
        TargetKind::Janus => {
            let target = JanusTarget::new(&cli.url);
            Arc::new(match cli.layer {
                Some(layer) => target.with_substream(layer.substream()),
                None => target,
            })
        }
    };
    let config = RunConfig {
        target: format!("{:?}", cli.target).to_lowercase(),
        url: cli.url,
        rooms: cli.rooms,
        publishers: cli.publishers,
        subscribers: cli.subscribers,
        media: MediaPlan {
            video_bps: cli.video_bitrate,
            simulcast: cli.simulcast,
            audio_only: cli.audio_only,
            pacing: cli.pacing,
        },
        duration: cli.duration,
        ramp: cli.ramp,
        server_pid: cli.server_pid,
        progress: Progress::for_stderr(),
        room_prefix: run::fresh_room_prefix(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(run::run(&config, target))?;
    // Peer connections still closing in the background must not hold the exit up.
    runtime.shutdown_timeout(Duration::from_secs(2));

    let mut out = std::io::stdout().lock();
    report.write_table(&mut out)?;
    if let Some(path) = &cli.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
        writeln!(out, "  report written to {}", path.display())?;
    }
    let missed = report.missed(cli.max_loss, cli.max_p99_latency);
    for m in &missed {
        writeln!(out, "  MISSED {m}")?;
    }
    out.flush()?;
    Ok(if !report.all_participants_ok() {
        ExitCode::from(EXIT_PARTICIPANT_FAILED)
    } else if !missed.is_empty() {
        ExitCode::from(EXIT_THRESHOLD_MISSED)
    } else {
        ExitCode::SUCCESS
    })
}
