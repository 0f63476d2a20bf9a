//! A Switchyard server on loopback ports, in the test's process, for the generator to load,
//! and a small run's configuration.
#![allow(dead_code)]

use std::time::Duration;

use switchyard_loadtest::client::MediaPlan;
use switchyard_loadtest::run::{fresh_room_prefix, Progress, RunConfig};

/// The server's own test server, on its embedded defaults (development mode, so the
/// `devkey`/`secret` tokens the generator mints are accepted).
pub use switchyard_server::testing::TestServer;

/// A small run against `url`: 1 room, quiet, `duration` after a fast ramp.
pub fn config(
    url: String,
    publishers: usize,
    subscribers: usize,
    media: MediaPlan,
    duration: Duration,
) -> RunConfig {
    RunConfig {
        target: "switchyard".to_owned(),
        url,
        rooms: 1,
        publishers,
        subscribers,
        media,
        duration,
        ramp: 20.0,
        server_pid: None,
        progress: Progress::Off,
        room_prefix: fresh_room_prefix(),
    }
}
