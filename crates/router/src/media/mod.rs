//! The sans-IO media core: everything the router decides about packets, with no tokio, no
//! webrtc-rs types and no clock of its own (`now` is passed in). The glue in `rtc/` feeds
//! it parsed packets and applies what it returns.
//!
//! - [`seq`]: 16-bit sequence numbers and 32-bit timestamps extended to 64 bits.
//! - [`munger`]: per-subscriber rewriting of sequence numbers and timestamps so the
//!   outgoing stream stays continuous across layer switches and drops.
//! - [`codec`]: where each codec's keyframes start.
//! - [`vp8`]: the VP8 payload descriptor: keyframes, PictureID / TL0PICIDX rewriting.
//! - [`cache`]: per-layer packet cache that answers subscribers' NACKs.
//! - [`sent`]: per subscriber, what went out under each output sequence number.
//! - [`layers`]: which simulcast layer a subscriber should receive.
//! - [`forwarder`]: per subscriber and track, the decision for every packet.
//! - [`speaker`]: active-speaker detection from the audio-level header extension.
//! - [`sender_report`]: the counts and timestamp mapping of our Sender Reports.

pub mod cache;
pub mod codec;
pub mod forwarder;
pub mod layers;
pub mod munger;
pub mod sender_report;
pub mod sent;
pub mod seq;
pub mod speaker;
pub mod vp8;
