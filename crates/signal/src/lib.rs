//! Switchyard's signaling protocol: the JSON messages exchanged over the `/rtc` WebSocket
//! ([`protocol`]) and the per-connection rules that decide what a client may send when
//! ([`session`]). Sans-IO: no sockets, no tasks; the server feeds text in and sends what
//! comes out. [`token`] holds the access tokens that `join` and the admin API check;
//! [`limit`] the rate limits on what one participant may make the server do; [`data`] the
//! envelope of the data-channel messages the server relays.

pub mod data;
pub mod limit;
pub mod protocol;
pub mod session;
pub mod token;

pub use protocol::*;
pub use session::{
    validate_display_name, validate_identity, validate_room_name, Inbound, Session, SessionLimits,
    SignalError,
};
