//! The load-test harness as a library: the binary (`src/main.rs`) drives it; tests and the
//! benchmark (`bench.sh`) use the same pieces.
//!
//! - [`target`]: the server under test, as a participant's signaling sees it.
//! - [`client`]: one simulated participant (webrtc-rs peer connections).
//! - [`media`]: the synthetic audio and VP8 video, and the stamp in every payload.
//! - [`measure`]: what receivers measure per stream.
//! - [`run`]: ramping participants in, progress, stopping everyone at once.
//! - [`report`]: the merged results, their table and JSON, pass/fail rules.
//! - [`server_proc`]: the server's CPU and memory from /proc.
//! - [`floor`]: the UDP fan-out floor (`udp-floor`), the kernel's least cost per copy.

pub mod client;
pub mod floor;
pub mod measure;
pub mod media;
pub mod report;
pub mod run;
pub mod server_proc;
pub mod target;
pub mod units;
