//! The server under test, as a simulated participant's signaling sees it.
//!
//! The load generator owns the WebRTC side (webrtc-rs peer connections, synthetic media,
//! measurement); a [`Target`] only carries SDP between them and the server, so the same
//! generator measures Switchyard and Janus. Candidates travel inside the SDP (the generator
//! waits for ICE gathering before handing an SDP over), so no target needs trickle ICE.
//!
//! Media is told apart by its payload (see `media.rs`: every packet carries its publisher,
//! stream, counter and send time), so no target has to map tracks to publishers.

pub mod janus;

use async_trait::async_trait;

pub mod switchyard;

/// A server the generator can load.
#[async_trait]
pub trait Target: Send + Sync {
    /// Gets `room` ready for `publishers` publishers (Janus: create the VideoRoom; a
    /// server that opens rooms on join does nothing). Called once per room before joins.
    async fn prepare_room(&self, room: &str, publishers: usize) -> anyhow::Result<()>;

    /// Connects one participant to `room`: signaling is up and the participant is in the
    /// room when this returns.
    async fn connect(&self, room: &str, identity: &str) -> anyhow::Result<Box<dyn Session>>;
}

/// One participant's signaling session.
#[async_trait]
pub trait Session: Send {
    /// Sends the publisher connection's offer (candidates included) and returns the
    /// server's answer.
    async fn publish(&mut self, offer_sdp: String) -> anyhow::Result<String>;

    /// Waits for the next offer for this participant's subscriber connection: Switchyard
    /// sends one whenever the set of tracks it forwards changes; a Janus target makes one
    /// when new publishers appear. `None` once the session has ended.
    async fn next_subscriber_offer(&mut self) -> anyhow::Result<Option<String>>;

    /// Answers the offer `next_subscriber_offer` returned last (candidates included).
    async fn answer_subscriber(&mut self, answer_sdp: String) -> anyhow::Result<()>;

    /// Leaves the room and closes the signaling connection.
    async fn leave(&mut self) -> anyhow::Result<()>;
}
