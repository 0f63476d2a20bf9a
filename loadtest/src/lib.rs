//! The load-test harness as a library: the binary (`src/main.rs`) drives it; tests use
//! the same pieces.
//!
//! - [`target`]: the server under test, as a participant's signaling sees it.
//! - [`measure`]: what receivers measure per stream.
//! - [`media`]: the synthetic audio and VP8 video, and the stamp in every payload.
//! - [`units`]: the command line's bitrates and durations.

pub mod measure;
pub mod media;
pub mod target;
pub mod units;
