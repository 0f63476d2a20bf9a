//! Every webrtc-rs type lives behind this module: the engine (API and shared UDP port), the
//! participant task that owns peer connections, and the up/down tracks that move RTP.
//! The rest of the router is plain Rust, so a later move to a sans-IO WebRTC stack touches
//! only this module.

pub(crate) mod datachannel;
pub(crate) mod downtrack;
pub(crate) mod egress;
pub mod engine;
pub(crate) mod participant;
pub mod uptrack;
