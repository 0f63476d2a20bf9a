//! The per-packet fan-out from one published track to its subscribers' queues.
//!
//! Plain Rust (no webrtc-rs), so the rule that matters most is tested directly: a full
//! queue drops for that subscriber alone, and pushing never waits, so one stalled
//! subscriber cannot delay the others.

use std::sync::RwLock;

use tokio::sync::mpsc;

use crate::ids::ParticipantId;

struct Sink<T> {
    subscriber: ParticipantId,
    queue: mpsc::Sender<T>,
}

pub struct Fanout<T> {
    sinks: RwLock<Vec<Sink<T>>>,
}

impl<T> Default for Fanout<T> {
    fn default() -> Self {
        Fanout {
            sinks: RwLock::new(Vec::new()),
        }
    }
}

impl<T: Clone> Fanout<T> {
    /// Adds (or replaces) `subscriber`'s queue.
    pub fn add(&self, subscriber: ParticipantId, queue: mpsc::Sender<T>) {
        let mut sinks = self.sinks.write().unwrap_or_else(|e| e.into_inner());
        sinks.retain(|s| s.subscriber != subscriber);
        sinks.push(Sink { subscriber, queue });
    }

    pub fn remove(&self, subscriber: &ParticipantId) {
        let mut sinks = self.sinks.write().unwrap_or_else(|e| e.into_inner());
        sinks.retain(|s| &s.subscriber != subscriber);
    }

    pub fn len(&self) -> usize {
        self.sinks.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Offers `item` to every queue without waiting; returns how many were full (dropped).
    /// The read lock is held only for the loop of non-blocking pushes, never across an await.
    pub fn push(&self, item: T) -> usize {
        let sinks = self.sinks.read().unwrap_or_else(|e| e.into_inner());
        let mut dropped = 0;
        for sink in sinks.iter() {
            if let Err(mpsc::error::TrySendError::Full(_)) = sink.queue.try_send(item.clone()) {
                dropped += 1;
            }
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stalled_subscriber_loses_only_its_own_packets() {
        let fanout = Fanout::default();
        let (stalled_tx, mut stalled_rx) = mpsc::channel::<u32>(8);
        let (healthy_tx, mut healthy_rx) = mpsc::channel::<u32>(2000);
        fanout.add(ParticipantId::new("stalled"), stalled_tx);
        fanout.add(ParticipantId::new("healthy"), healthy_tx);

        let mut dropped = 0;
        for seq in 0..1000 {
            dropped += fanout.push(seq);
        }
        assert_eq!(dropped, 1000 - 8, "only the stalled queue overflowed");
        let healthy: Vec<u32> = std::iter::from_fn(|| healthy_rx.try_recv().ok()).collect();
        assert_eq!(
            healthy,
            (0..1000).collect::<Vec<_>>(),
            "the healthy one got everything, in order"
        );
        let stalled: Vec<u32> = std::iter::from_fn(|| stalled_rx.try_recv().ok()).collect();
        assert_eq!(stalled, (0..8).collect::<Vec<_>>());
    }

    #[test]
    fn removed_and_closed_subscribers_get_nothing() {
        let fanout = Fanout::default();
        let (a_tx, mut a_rx) = mpsc::channel::<u32>(8);
        let (b_tx, b_rx) = mpsc::channel::<u32>(8);
        fanout.add(ParticipantId::new("a"), a_tx);
        fanout.add(ParticipantId::new("b"), b_tx);
        drop(b_rx);
        assert_eq!(fanout.push(1), 0, "a closed queue is not a drop");
        fanout.remove(&ParticipantId::new("a"));
        assert_eq!(fanout.len(), 1);
        fanout.push(2);
        assert_eq!(a_rx.try_recv().ok(), Some(1));
        assert!(a_rx.try_recv().is_err());
    }
}
