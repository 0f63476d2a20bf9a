//! The load-test harness as a library: the binary (`src/main.rs`) drives it; tests and the
//! benchmark script use the same pieces.

pub mod floor;
pub mod procstat;
pub mod target;
