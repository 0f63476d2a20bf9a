//! `udp-floor`: the kernel's floor under an SFU's fan-out (see `switchyard_loadtest::floor`).
//!
//! `udp-floor forward --listen 127.0.0.1:PORT` forwards every datagram to every joined
//! receiver and prints its own counts and CPU as one JSON line when it stops (after
//! `--duration`, or on SIGTERM/SIGINT). `udp-floor load --to 127.0.0.1:PORT --fanout N
//! --rate PPS --size BYTES --duration S --json FILE [--server-pid PID]` joins N receivers,
//! sends, and writes a report in the format of `loadtest/REPORT-FORMAT.md`.

use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use nix::sys::signal::{SigSet, Signal};

use switchyard_loadtest::floor;

#[derive(Parser, Debug)]
#[command(
    name = "udp-floor",
    version,
    about = "The kernel's floor under an SFU's fan-out: UDP with recvmmsg/sendmmsg, nothing else"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Forward every datagram to every receiver that joined.
    Forward {
        #[arg(long, default_value = "127.0.0.1:7990")]
        listen: SocketAddr,
        /// Stop after this many seconds (default: until SIGTERM/SIGINT).
        #[arg(long)]
        duration: Option<f64>,
        /// At most this many receivers.
        #[arg(long, default_value_t = 100_000)]
        max_destinations: usize,
    },
    /// Join receivers to a forwarder, send stamped datagrams, and count what arrives.
    Load {
        /// The forwarder.
        #[arg(long, default_value = "127.0.0.1:7990")]
        to: SocketAddr,
        #[arg(long)]
        fanout: usize,
        /// Datagrams per second (1.5 Mbit/s of 1200-byte packets: 156).
        #[arg(long)]
        rate: f64,
        /// Bytes per datagram.
        #[arg(long, default_value_t = 1200)]
        size: usize,
        /// Seconds of sending.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Seconds the receivers keep reading after the last send.
        #[arg(long, default_value_t = 1.0)]
        drain: f64,
        /// The forwarder's pid: its CPU and memory are read from /proc.
        #[arg(long)]
        server_pid: Option<u32>,
        /// Scenario name written into the report.
        #[arg(long, default_value = "floor")]
        scenario: String,
        /// Rooms this load stands for: only labels the report.
        #[arg(long, default_value_t = 1)]
        rooms: usize,
        /// Write the report here (it is always printed on stdout too).
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Forward {
            listen,
            duration,
            max_destinations,
        } => {
            // SIGTERM/SIGINT are blocked in every thread and taken by one that waits for
            // them, so stopping needs no signal handler (and no unsafe code).
            let signals = {
                let mut set = SigSet::empty();
                set.add(Signal::SIGTERM);
                set.add(Signal::SIGINT);
                set
            };
            signals.thread_block().context("blocking SIGTERM/SIGINT")?;
            let stop = Arc::new(AtomicBool::new(false));
            {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    if signals.wait().is_ok() {
                        stop.store(true, Ordering::Relaxed);
                    }
                });
            }
            let socket = UdpSocket::bind(listen).with_context(|| format!("binding {listen}"))?;
            floor::set_buffers(&socket, floor::SOCKET_BUFFER);
            floor::set_dont_fragment(&socket);
            eprintln!(
                "udp-floor forwarding on {} (pid {})",
                socket.local_addr()?,
                std::process::id()
            );
            let until = duration.map(|s| Instant::now() + Duration::from_secs_f64(s));
            let stats = floor::forward(&socket, max_destinations, &stop, until)?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", stats.to_json())?;
            Ok(())
        }
        Command::Load {
            to,
            fanout,
            rate,
            size,
            duration,
            drain,
            server_pid,
            scenario,
            rooms,
            json,
        } => {
            let options = floor::LoadOptions {
                forwarder: to,
                fanout,
                rate,
                size,
                duration: Duration::from_secs_f64(duration),
                drain: Duration::from_secs_f64(drain),
                server_pid,
                rooms,
            };
            let result = floor::run_load(&options)?;
            let report = floor::report_json(&options, &result, &scenario);
            let text = serde_json::to_string_pretty(&report)?;
            if let Some(path) = json {
                std::fs::write(&path, &text)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            eprintln!(
                "udp-floor: fan-out {fanout}: sent {}, received {}/{} ({:.3}% loss), latency p50 {:.3} ms p99 {:.3} ms, server CPU {} µs/packet",
                result.sent,
                result.received,
                result.expected,
                result.loss_pct(),
                result.latency_us.quantile(0.5).unwrap_or(f64::NAN) / 1000.0,
                result.latency_us.quantile(0.99).unwrap_or(f64::NAN) / 1000.0,
                report["server_cpu_us_per_packet"]
            );
            let mut out = std::io::stdout().lock();
            writeln!(out, "{text}")?;
            Ok(())
        }
    }
}
