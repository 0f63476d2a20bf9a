//! `switchyard`: the SFU server binary.

use std::io::{IsTerminal, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use std::time::Duration;

use clap::Parser;
use tracing_subscriber::prelude::*;
use tracing_subscriber::EnvFilter;

use switchyard_server::config::{Config, Overrides};
use switchyard_server::logging::LogRateLimit;
use switchyard_server::Server;
use switchyard_signal::token::{mint, unix_now, Claims, Grant};

const ABOUT: &str =
    "Switchyard: a WebRTC Selective Forwarding Unit (SFU) for group video meetings.";

const LONG_ABOUT: &str = "\
Switchyard: a WebRTC Selective Forwarding Unit (SFU) for group video meetings.

Run it with no arguments and open the URL it prints: the web client joins a meeting.
Every participant uploads its camera and microphone once; Switchyard forwards them to
everyone else in the room.

PORTS
  TCP server.bind (default 0.0.0.0:7880): the web client (/), signaling (WebSocket /rtc),
      the room admin API (/api/v1, OpenAPI at /api/v1/openapi.json), Prometheus metrics
      (/metrics), /healthz, and in development mode /dev/token.
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

ACCESS TOKENS
  Joining a room and the admin API (/api/v1) need access tokens signed with an API key
  (auth.keys). `switchyard token create --room R --identity I --ttl 1h` prints one.
  The embedded defaults run in development mode: the well-known key `devkey` is accepted
  and GET /dev/token hands out join tokens; turn auth.dev_mode off in production.

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

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Access tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(clap::Subcommand, Debug)]
enum TokenCommand {
    /// Print an access token signed with a configured API key (the development key in
    /// dev mode when no key is configured).
    Create(TokenArgs),
}

#[derive(clap::Args, Debug)]
struct TokenArgs {
    /// The room the token joins (and administers, with --admin).
    #[arg(long)]
    room: Option<String>,
    /// The participant's identity (the token's `sub`); needed to join.
    #[arg(long)]
    identity: Option<String>,
    /// Display name.
    #[arg(long)]
    name: Option<String>,
    /// Join without the right to publish.
    #[arg(long)]
    no_publish: bool,
    /// Join without receiving anything.
    #[arg(long)]
    no_subscribe: bool,
    /// Also administer the room (every room without --room), create, delete and list rooms.
    #[arg(long)]
    admin: bool,
    /// Lifetime, e.g. 90s, 30m, 1h, 7d.
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    ttl: u64,
    /// The API key to sign with (default: the first configured key).
    #[arg(long)]
    api_key: Option<String>,
}

/// "90s", "30m", "1h", "7d" (or plain seconds) to seconds.
fn parse_ttl(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, ""), |i| text.split_at(i));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}`: expected a number and a unit, e.g. 1h"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => return Err(format!("`{text}`: unknown unit `{other}` (s, m, h or d)")),
    };
    match n.checked_mul(scale) {
        Some(0) | None => Err(format!(
            "`{text}`: must be more than 0 and not absurdly long"
        )),
        Some(secs) => Ok(secs),
    }
}

fn create_token(config: &Config, args: TokenArgs) -> Result<String, String> {
    let keys = config.api_keys();
    let configured = config.auth.keys.first().map(|k| k.key.clone());
    let key = args
        .api_key
        .or(configured)
        .unwrap_or_else(|| switchyard_signal::token::DEV_API_KEY.to_owned());
    let secret = keys
        .secret(&key)
        .ok_or_else(|| format!("API key `{key}` is not configured (auth.keys)"))?;
    if args.room.is_none() && !args.admin {
        return Err(
            "--room is required (or --admin for a token that administers every room)".into(),
        );
    }
    if args.room.is_some() && args.identity.is_none() {
        return Err("--identity is required to join a room".into());
    }
    let grant = Grant {
        room: args.room.clone(),
        room_join: args.room.is_some(),
        can_publish: !args.no_publish,
        can_subscribe: !args.no_subscribe,
        can_publish_data: !args.no_publish,
        room_admin: args.admin,
        room_create: args.admin,
        room_list: args.admin,
    };
    let mut claims = Claims::new(
        &key,
        args.identity.as_deref().unwrap_or(""),
        unix_now(),
        args.ttl,
    )
    .with_grant(grant);
    claims.name = args.name;
    Ok(mint(&claims, secret))
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
    if let Some(Command::Token(TokenCommand::Create(args))) = cli.command {
        match create_token(&config, args) {
            Ok(token) => {
                #[allow(clippy::print_stdout)]
                {
                    println!("{token}");
                }
                return Ok(());
            }
            Err(e) => {
                eprintln!("switchyard token create: {e}");
                std::process::exit(2);
            }
        }
    }
    if cli.print_config {
        #[allow(clippy::print_stdout)]
        {
            println!("{config:#?}");
        }
        return Ok(());
    }
    let log_limit = LogRateLimit::new(config.log.lines_per_second, config.log.line_burst);
    tracing_subscriber::registry()
        .with(EnvFilter::new(&config.log.level))
        .with(log_limit.clone())
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .init();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    raise_open_files_limit();
    runtime.block_on(async move {
        tokio::spawn(log_limit.report(Duration::from_secs(10)));
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

/// Every participant costs descriptors (its WebSocket, and timers and sockets of its
/// connections), and a low soft limit (often 1024, or 256) would let a few hundred idle
/// sockets stop the server from accepting anyone: the soft limit goes up to the hard one.
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard {
                if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                    tracing::warn!(soft, hard, error = %e, "could not raise the open files limit");
                    return;
                }
            }
            tracing::info!(open_files = hard.max(soft), "open files limit");
        }
        Err(e) => tracing::warn!(error = %e, "could not read the open files limit"),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_units() {
        assert_eq!(parse_ttl("90s"), Ok(90));
        assert_eq!(parse_ttl("30m"), Ok(1800));
        assert_eq!(parse_ttl("1h"), Ok(3600));
        assert_eq!(parse_ttl("7d"), Ok(604_800));
        assert_eq!(parse_ttl("45"), Ok(45));
        assert!(parse_ttl("0h").is_err());
        assert!(parse_ttl("1w").is_err());
        assert!(parse_ttl("h").is_err());
    }

    #[test]
    fn created_tokens_verify_and_carry_the_flags() {
        let config = Config::embedded_default();
        let args = TokenArgs {
            room: Some("standup".into()),
            identity: Some("ada".into()),
            name: Some("Ada".into()),
            no_publish: true,
            no_subscribe: false,
            admin: false,
            ttl: 3600,
            api_key: None,
        };
        let token = create_token(&config, args).unwrap();
        let claims = config.api_keys().verify(&token, unix_now()).unwrap();
        assert_eq!(claims.sub, "ada");
        assert!(claims.grant.allows_join("standup"));
        assert!(!claims.grant.can_publish && claims.grant.can_subscribe);
        assert!(!claims.grant.room_admin);
        assert!(claims.exp - claims.nbf == 3600);
    }
}
