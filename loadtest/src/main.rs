//! `switchyard-loadtest`: the load-test harness for sizing a Switchyard deployment.
//!
//! Its command line is settled here so deployment scripts can be written against it; the
//! load generator itself (webrtc-rs participants, reports, the Janus comparison) is the
//! load-test issue's work, and until then running it says so and fails.

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "switchyard-loadtest",
    version,
    about = "Load-test a Switchyard server with simulated WebRTC participants (not implemented yet)"
)]
struct Cli {
    /// Signaling URL of the server under test.
    #[arg(long, default_value = "ws://127.0.0.1:7880/rtc")]
    url: String,
    /// Rooms to create.
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Publishers per room.
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Subscribers per room.
    #[arg(long, default_value_t = 1)]
    subscribers: usize,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    anyhow::bail!(
        "the load generator is not implemented yet (asked for {} room(s) of {} publisher(s) and {} subscriber(s) at {})",
        cli.rooms,
        cli.publishers,
        cli.subscribers,
        cli.url
    )
}
