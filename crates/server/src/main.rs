//! `switchyard`: the SFU server binary.

use std::io::{IsTerminal, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use switchyard_server::config::{Config, Overrides};
use switchyard_server::Server;

const ABOUT: &str =
    "Switchyard: a WebRTC Selective Forwarding Unit (SFU) for group video meetings.";

const LONG_ABOUT: &str = "\
Switchyard: a WebRTC Selective Forwarding Unit (SFU) for group video meetings.

Run it with no arguments and open the URL it prints: the web client joins a meeting.
Every participant uploads its camera and microphone once; Switchyard forwards them to
everyone else in the room.

PORTS
  TCP server.bind (default 0.0.0.0:7880): the web client (/), signaling (WebSocket /rtc),
      /healthz.
  UDP rtc.udp_port (default 7882): ALL media of all participants, on this one port.
  Open both in your firewall to join from other machines.

CONFIGURATION (later wins)
  1. the embedded defaults (see --print-config, or config/switchyard.toml);
  2. --config FILE: a TOML file with only the keys you change; unknown keys are errors;
  3. environment variables SWITCHYARD_<SECTION>_<KEY>, e.g. SWITCHYARD_RTC_UDP_PORT=9000,
     SWITCHYARD_RTC_ANNOUNCE_IPS=203.0.113.7 (lists comma-separated), SWITCHYARD_LOG_LEVEL=debug;
  4. the flags below.

BEHIND NAT
  Set rtc.announce_ips (or --announce-ip) to the public address that maps 1:1 to this host,
  so clients are told to send media there.

BROWSERS ON OTHER MACHINES
  Browsers only open camera and microphone on https:// pages or on localhost: serve
  Switchyard through a TLS reverse proxy (see README.md).";

#[derive(Parser, Debug)]
#[command(name = "switchyard", version, about = ABOUT, long_about = LONG_ABOUT)]
struct Cli {
    /// TOML file overriding the embedded defaults (only the keys you change).
    #[arg(short, long, env = "SWITCHYARD_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// TCP address for HTTP and signaling (server.bind), e.g. 127.0.0.1:7880.
    #[arg(long, value_name = "ADDR")]
    bind: Option<SocketAddr>,

    /// The one UDP port for all media (rtc.udp_port); 0 picks a free port.
    #[arg(long, value_name = "PORT")]
    udp_port: Option<u16>,

    /// Address announced in ICE candidates, for 1:1 NAT (rtc.announce_ips); repeatable.
    #[arg(long = "announce-ip", value_name = "IP")]
    announce_ips: Vec<IpAddr>,

    /// Print the effective configuration (after file, environment and flags) and exit.
    #[arg(long)]
    print_config: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let overrides = Overrides {
        bind: cli.bind,
        udp_port: cli.udp_port,
        announce_ips: cli.announce_ips,
    };
    let config = match Config::load(cli.config.as_deref(), std::env::vars(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("switchyard: invalid configuration: {e}");
            std::process::exit(2);
        }
    };
    if cli.print_config {
        #[allow(clippy::print_stdout)]
        {
            println!("{config:#?}");
        }
        return Ok(());
    }
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(&config.log.level))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let server = Server::bind(config).await?;
        let http = server.http_addr();
        let host = if http.ip().is_unspecified() {
            "localhost".to_owned()
        } else {
            http.ip().to_string()
        };
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "Switchyard is running: open http://{host}:{}/ in a browser (media on UDP {})",
            http.port(),
            server.udp_addr()
        )?;
        out.flush()?;
        drop(out);
        server.run(shutdown_signal()).await
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
