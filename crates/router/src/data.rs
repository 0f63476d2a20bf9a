//! The data relay: what participants send on their publisher connection's data channels,
//! passed to the others in the room (docs/protocol.md, "Data messages").
//!
//! One [`DataRelay`] per room knows who receives. A sender's message is checked (may it
//! publish data, does the envelope read, does it fit once stamped) and stamped once with
//! the sender's participant id and identity from its session; then each receiver's copy is
//! a reference to the same bytes, queued in that receiver's own bounded [`Outbox`], without
//! waiting. Lossy messages for a full queue are dropped. Reliable ones are paced to the
//! receivers: once a receiver's reliable queue is over half full, the sender's channel is
//! read no further until it drains (a file goes at the pace its receivers take it, instead
//! of overflowing them), but for at most `slow_receiver_grace`: a receiver still behind
//! then is too slow to wait for, and its channel is reset (as it is when its queue
//! overflows), so it never holds up the others for long.
//! The webrtc-rs channels that read and write these live in `rtc/datachannel.rs`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;

use switchyard_signal::data::{relayed, relayed_len, ClientData};
use switchyard_signal::{ErrorCode, ServerMessage};
use switchyard_stats::{DataDrop, MediaStats};

use crate::ids::ParticipantId;
use crate::SignalTx;

/// The data channels' limits (`[data]` in the server's config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataLimits {
    /// Largest message, envelope included (the channels' `a=max-message-size`).
    pub max_message_bytes: usize,
    /// Reliable bytes queued per receiver before its channel is reset.
    pub reliable_queue_bytes: usize,
    /// Lossy bytes queued per receiver; beyond, lossy messages for it are dropped.
    pub lossy_queue_bytes: usize,
    /// What one sender may relay, in bytes per second (after a burst of a second's worth):
    /// beyond, its channel is read more slowly, so a flooding sender slows itself down
    /// instead of filling everyone's queues.
    pub sender_bytes_per_second: usize,
    /// How long a sender waits for a receiver whose reliable queue is over half full
    /// before that receiver counts as too slow (and its channel is reset).
    pub slow_receiver_grace: Duration,
}

impl Default for DataLimits {
    fn default() -> Self {
        DataLimits {
            max_message_bytes: 65_535,
            reliable_queue_bytes: 4 << 20,
            lossy_queue_bytes: 256 << 10,
            sender_bytes_per_second: 10 << 20,
            slow_receiver_grace: Duration::from_secs(2),
        }
    }
}

/// A data channel's delivery: ordered and retransmitted, or neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Reliable,
    Lossy,
}

/// At most one error of a kind a second to a sender that keeps sending bad messages: the
/// first tells it what is wrong, a flood of them would only fill its signaling queue.
const ERROR_INTERVAL: Duration = Duration::from_secs(1);
/// A waiting sender re-checks a receiver's queue this often (a missed wake-up, or a
/// receiver that left, costs at most this).
const RECHECK: Duration = Duration::from_millis(100);

/// One room's receivers, and how each is reached.
pub(crate) struct DataRelay {
    recipients: RwLock<Vec<Arc<Recipient>>>,
    limits: DataLimits,
    stats: Arc<MediaStats>,
}

/// One receiver: its identity (destinations name identities) and its two queues.
pub(crate) struct Recipient {
    id: ParticipantId,
    identity: Arc<str>,
    pub reliable: Outbox,
    pub lossy: Outbox,
}

impl Recipient {
    pub fn outbox(&self, delivery: Delivery) -> &Outbox {
        match delivery {
            Delivery::Reliable => &self.reliable,
            Delivery::Lossy => &self.lossy,
        }
    }

    /// Its queues stop: the writers end, and nothing more is queued for it.
    pub fn close(&self) {
        self.reliable.close();
        self.lossy.close();
    }
}

impl DataRelay {
    pub fn new(limits: DataLimits, stats: Arc<MediaStats>) -> Arc<DataRelay> {
        Arc::new(DataRelay {
            recipients: RwLock::new(Vec::new()),
            limits,
            stats,
        })
    }

    pub fn limits(&self) -> DataLimits {
        self.limits
    }

    /// Makes `id` a receiver: what is relayed from now on is queued for it, even before its
    /// channels open (they drain the queues once they do).
    pub fn add(&self, id: ParticipantId, identity: Arc<str>) -> Arc<Recipient> {
        let recipient = Arc::new(Recipient {
            id,
            identity,
            reliable: Outbox::new(self.limits.reliable_queue_bytes),
            lossy: Outbox::new(self.limits.lossy_queue_bytes),
        });
        self.recipients_mut().push(recipient.clone());
        recipient
    }

    pub fn remove(&self, id: &ParticipantId) {
        self.recipients_mut().retain(|r| {
            let leaving = r.id == *id;
            if leaving {
                r.close();
            }
            !leaving
        });
    }

    fn recipients_mut(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Arc<Recipient>>> {
        // A panic elsewhere while holding the lock leaves a list that is still valid.
        self.recipients.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `message` (a stamped envelope) for every receiver but `from`, or only those
    /// whose identity `message` names; never waits. Returns the receivers whose reliable
    /// queue is now over half full (for reliable messages; see [`Self::wait_for`]).
    fn deliver(
        &self,
        from: &ParticipantId,
        to: &ClientData<'_>,
        delivery: Delivery,
        message: Bytes,
    ) -> Vec<Arc<Recipient>> {
        let mut congested = Vec::new();
        let recipients = self.recipients.read().unwrap_or_else(|e| e.into_inner());
        for r in recipients.iter() {
            if r.id == *from
                || (!to.destinations.is_empty() && !to.destinations.contains(&r.identity))
            {
                continue;
            }
            let outbox = r.outbox(delivery);
            match outbox.push(message.clone(), delivery == Delivery::Reliable) {
                Push::Queued => {
                    if delivery == Delivery::Reliable && outbox.is_congested() {
                        congested.push(r.clone());
                    }
                }
                Push::Closed => {}
                Push::Full { lost } => match delivery {
                    Delivery::Lossy => self.stats.data.drop(DataDrop::QueueFull),
                    Delivery::Reliable => self.stats.data.drop_n(DataDrop::Reset, lost + 1),
                },
                Push::Resetting => self.stats.data.drop(DataDrop::Reset),
            }
        }
        congested
    }

    /// Waits until each of `congested` has drained to half its reliable queue; one that
    /// has been over half full for `slow_receiver_grace` is too slow for the others to
    /// wait for, and its reliable channel is reset.
    pub async fn wait_for(&self, congested: Vec<Arc<Recipient>>) {
        for r in congested {
            loop {
                // Made before the check, so a drain in between still wakes it.
                let drained = r.reliable.drained.notified();
                let Some(since) = r.reliable.congested_since() else {
                    break;
                };
                let deadline = since + self.limits.slow_receiver_grace;
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    let lost = r.reliable.overflow();
                    self.stats.data.drop_n(DataDrop::Reset, lost);
                    break;
                }
                let _ = tokio::time::timeout_at(deadline.min(now + RECHECK), drained).await;
            }
        }
    }
}

/// What [`Outbox::push`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Push {
    Queued,
    /// Over the queue's bytes: dropped (and, for a reliable queue, the channel is to be
    /// reset: the writer sees [`Next::Overflowed`]; the `lost` messages queued before go
    /// with it).
    Full {
        lost: u64,
    },
    /// The channel is being reset: dropped.
    Resetting,
    /// The receiver left.
    Closed,
}

/// What an [`Outbox`]'s writer does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Next {
    Write(Bytes),
    /// A reliable queue overflowed: reset the channel, then [`Outbox::reset_done`].
    Overflowed,
    Closed,
}

/// One receiver's queue for one channel, bounded by bytes. Pushed from any sender's read
/// loop without waiting; drained by that receiver's writer.
pub(crate) struct Outbox {
    state: Mutex<OutboxState>,
    wake: Notify,
    /// Senders waiting for this queue to drain to half (reliable queues).
    drained: Notify,
    max_bytes: usize,
}

#[derive(Default)]
struct OutboxState {
    queue: VecDeque<Bytes>,
    bytes: usize,
    /// Overflowed and not yet reset: pushes are refused until the new channel is open.
    overflowed: bool,
    /// Since when it has been over half full (see [`DataRelay::wait_for`]).
    congested_since: Option<tokio::time::Instant>,
    closed: bool,
}

impl Outbox {
    fn new(max_bytes: usize) -> Outbox {
        Outbox {
            state: Mutex::new(OutboxState::default()),
            wake: Notify::new(),
            drained: Notify::new(),
            max_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OutboxState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `message` unless that would pass the queue's bytes; `overflow_resets`: a
    /// full queue then calls for a reset of the channel (reliable delivery, where dropping
    /// one message and carrying on would break the promise of order and completeness).
    pub fn push(&self, message: Bytes, overflow_resets: bool) -> Push {
        let mut state = self.lock();
        if state.closed {
            return Push::Closed;
        }
        if state.overflowed {
            return Push::Resetting;
        }
        if state.bytes + message.len() > self.max_bytes {
            let lost = match overflow_resets {
                true => self.overflow_locked(state),
                false => 0,
            };
            return Push::Full { lost };
        }
        state.bytes += message.len();
        state.queue.push_back(message);
        if state.bytes > self.max_bytes / 2 && state.congested_since.is_none() {
            state.congested_since = Some(tokio::time::Instant::now());
        }
        drop(state);
        self.wake.notify_one();
        Push::Queued
    }

    /// Over half full: a sender of reliable messages waits for it (see
    /// [`DataRelay::wait_for`]).
    pub fn is_congested(&self) -> bool {
        self.congested_since().is_some()
    }

    /// Since when it has been over half full, if it is.
    fn congested_since(&self) -> Option<tokio::time::Instant> {
        self.lock().congested_since
    }

    /// Calls for a reset of the channel: what is queued is dropped (returns how many
    /// messages), nothing is queued until [`Self::reset_done`], and the writer is woken.
    pub fn overflow(&self) -> u64 {
        self.overflow_locked(self.lock())
    }

    fn overflow_locked(&self, mut state: std::sync::MutexGuard<'_, OutboxState>) -> u64 {
        if state.overflowed || state.closed {
            return 0;
        }
        state.overflowed = true;
        let lost = state.queue.len() as u64;
        state.queue.clear();
        state.bytes = 0;
        state.congested_since = None;
        drop(state);
        self.wake.notify_one();
        self.drained.notify_waiters();
        lost
    }

    /// The next thing for the writer to do; waits while there is nothing.
    pub async fn next(&self) -> Next {
        loop {
            {
                let mut state = self.lock();
                if state.closed {
                    return Next::Closed;
                }
                if state.overflowed {
                    return Next::Overflowed;
                }
                if let Some(message) = state.queue.pop_front() {
                    state.bytes -= message.len();
                    let drained = state.bytes <= self.max_bytes / 2;
                    if drained {
                        state.congested_since = None;
                    }
                    drop(state);
                    if drained {
                        self.drained.notify_waiters();
                    }
                    return Next::Write(message);
                }
            }
            self.wake.notified().await;
        }
    }

    /// The channel was reset and a new one is open: queue again.
    pub fn reset_done(&self) {
        self.lock().overflowed = false;
    }

    pub fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.queue.clear();
        state.bytes = 0;
        state.congested_since = None;
        drop(state);
        self.wake.notify_waiters();
        // A writer between its check and its wait gets the stored permit.
        self.wake.notify_one();
        self.drained.notify_waiters();
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Returns once the queue is closed or overflowed (at once if it is).
    pub async fn until_not_open(&self) {
        loop {
            // Made before the check: overflow and close wake every waiter.
            let changed = self.drained.notified();
            if !self.is_open() {
                return;
            }
            changed.await;
        }
    }

    /// Neither closed nor overflowed: what is in hand may still be written.
    pub fn is_open(&self) -> bool {
        let state = self.lock();
        !state.closed && !state.overflowed
    }

    #[cfg(test)]
    fn queued(&self) -> (usize, usize) {
        let state = self.lock();
        (state.queue.len(), state.bytes)
    }
}

/// Paces one sender's channel: each message spends its bytes from a bucket that refills at
/// `sender_bytes_per_second` up to a second's worth; in debt, the reader waits before it
/// reads on (sans-IO: it says how long).
#[derive(Debug)]
pub(crate) struct SenderPacer {
    per_second: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl SenderPacer {
    pub fn new(bytes_per_second: usize) -> SenderPacer {
        let per_second = bytes_per_second.max(1) as f64;
        SenderPacer {
            per_second,
            tokens: per_second,
            last: None,
        }
    }

    /// Spends `bytes` at `now`; how long to wait before reading the next message.
    pub fn on_message(&mut self, bytes: usize, now: Instant) -> Duration {
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.per_second).min(self.per_second);
        }
        if self.last.is_none_or(|last| now > last) {
            self.last = Some(now);
        }
        self.tokens -= bytes as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.per_second)
        }
    }
}

/// One participant as a sender of data: checks and stamps what it sends, then hands it to
/// its room's relay.
pub(crate) struct DataSender {
    id: ParticipantId,
    identity: Arc<str>,
    relay: Arc<DataRelay>,
    /// Flipped by the room when an operator changes the participant's permissions.
    can_publish_data: Arc<AtomicBool>,
    signal: SignalTx,
    /// `forbidden` was said since publishing data was last allowed (it is said once).
    told_forbidden: AtomicBool,
    /// When each other kind of error was last said (see [`ERROR_INTERVAL`]).
    last_errors: Mutex<[Option<Instant>; 2]>,
}

impl DataSender {
    pub fn new(
        id: ParticipantId,
        identity: Arc<str>,
        relay: Arc<DataRelay>,
        can_publish_data: Arc<AtomicBool>,
        signal: SignalTx,
    ) -> DataSender {
        DataSender {
            id,
            identity,
            relay,
            can_publish_data,
            signal,
            told_forbidden: AtomicBool::new(false),
            last_errors: Mutex::new([None; 2]),
        }
    }

    pub fn relay(&self) -> &Arc<DataRelay> {
        &self.relay
    }

    /// One message read from this participant's `delivery` channel. Returns the receivers
    /// the sender should wait for before it sends more (see [`DataRelay::wait_for`]).
    #[must_use]
    pub fn on_message(
        &self,
        message: &[u8],
        delivery: Delivery,
        now: Instant,
    ) -> Vec<Arc<Recipient>> {
        let stats = &self.relay.stats.data;
        stats.received.add(message.len());
        if !self.can_publish_data.load(Ordering::Relaxed) {
            stats.drop(DataDrop::Forbidden);
            if !self.told_forbidden.swap(true, Ordering::Relaxed) {
                self.say(
                    ErrorCode::Forbidden,
                    "publishing data is not allowed: data messages are dropped".into(),
                );
            }
            return Vec::new();
        }
        self.told_forbidden.store(false, Ordering::Relaxed);
        let parsed = match ClientData::parse(message) {
            Ok(parsed) => parsed,
            Err(e) => {
                stats.drop(DataDrop::Invalid);
                self.say_at_most_once_a_second(
                    0,
                    now,
                    ErrorCode::InvalidData,
                    format!("data message dropped: {e}"),
                );
                return Vec::new();
            }
        };
        let max = self.relay.limits.max_message_bytes;
        let stamped = relayed_len(
            self.id.as_str(),
            &self.identity,
            parsed.topic,
            parsed.payload.len(),
        );
        if stamped > max {
            stats.drop(DataDrop::TooLarge);
            self.say_at_most_once_a_second(
                1,
                now,
                ErrorCode::MessageTooLarge,
                format!(
                    "data message dropped: {stamped} bytes once relayed with your id and \
                     identity; at most {max}"
                ),
            );
            return Vec::new();
        }
        let out = Bytes::from(relayed(
            self.id.as_str(),
            &self.identity,
            parsed.topic,
            parsed.text,
            parsed.payload,
        ));
        self.relay.deliver(&self.id, &parsed, delivery, out)
    }

    /// A message larger than the channel's max-message-size (its reader refused it).
    pub fn on_oversized(&self, now: Instant) {
        self.relay.stats.data.drop(DataDrop::TooLarge);
        let max = self.relay.limits.max_message_bytes;
        self.say_at_most_once_a_second(
            1,
            now,
            ErrorCode::MessageTooLarge,
            format!(
                "data message dropped: larger than the channel's max-message-size of {max} bytes"
            ),
        );
    }

    /// Something the client did that the server does not take (an unknown channel label).
    pub fn refuse(&self, code: ErrorCode, message: String) {
        self.say(code, message);
    }

    fn say_at_most_once_a_second(
        &self,
        kind: usize,
        now: Instant,
        code: ErrorCode,
        message: String,
    ) {
        let mut last = self.last_errors.lock().unwrap_or_else(|e| e.into_inner());
        if last[kind].is_some_and(|t| now.saturating_duration_since(t) < ERROR_INTERVAL) {
            return;
        }
        last[kind] = Some(now);
        drop(last);
        self.say(code, message);
    }

    fn say(&self, code: ErrorCode, message: String) {
        // A full signaling queue is the session's concern (it ends a client that far behind).
        let _ = self.signal.try_send(ServerMessage::error(code, message));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_signal::data::{client_envelope, RelayedData};
    use tokio::sync::mpsc;

    fn pid(s: &str) -> ParticipantId {
        ParticipantId::new(s)
    }

    struct Room {
        relay: Arc<DataRelay>,
        stats: Arc<MediaStats>,
    }

    fn room(limits: DataLimits) -> Room {
        let stats = Arc::new(MediaStats::default());
        Room {
            relay: DataRelay::new(limits, stats.clone()),
            stats,
        }
    }

    fn sender(
        room: &Room,
        id: &str,
        identity: &str,
        allowed: bool,
    ) -> (DataSender, mpsc::Receiver<ServerMessage>, Arc<AtomicBool>) {
        let (tx, rx) = mpsc::channel(16);
        let allowed = Arc::new(AtomicBool::new(allowed));
        let sender = DataSender::new(
            pid(id),
            identity.into(),
            room.relay.clone(),
            allowed.clone(),
            tx,
        );
        (sender, rx, allowed)
    }

    fn drain(outbox: &Outbox) -> Vec<Bytes> {
        let mut out = Vec::new();
        let mut state = outbox.lock();
        while let Some(m) = state.queue.pop_front() {
            out.push(m);
        }
        state.bytes = 0;
        out
    }

    fn error_codes(rx: &mut mpsc::Receiver<ServerMessage>) -> Vec<ErrorCode> {
        let mut codes = Vec::new();
        while let Ok(m) = rx.try_recv() {
            if let ServerMessage::Error { code, .. } = m {
                codes.push(code);
            }
        }
        codes
    }

    #[test]
    fn a_message_reaches_everyone_else_stamped_with_the_senders_session_names() {
        let room = room(DataLimits::default());
        let ada = room.relay.add(pid("PA_a"), "ada".into());
        let bob = room.relay.add(pid("PA_b"), "bob".into());
        let cy = room.relay.add(pid("PA_c"), "cy".into());
        let (from_ada, _, _) = sender(&room, "PA_a", "ada", true);
        let now = Instant::now();
        let _ = from_ada.on_message(
            &client_envelope(true, Some("chat"), &[], b"hi all"),
            Delivery::Reliable,
            now,
        );
        assert!(drain(&ada.reliable).is_empty(), "never back to the sender");
        for r in [&bob, &cy] {
            let got = drain(&r.reliable);
            assert_eq!(got.len(), 1);
            let m = RelayedData::parse(&got[0]).unwrap();
            assert_eq!(
                (m.participant_id, m.identity, m.topic, m.text),
                ("PA_a", "ada", Some("chat"), true)
            );
            assert_eq!(m.payload, b"hi all");
            assert!(drain(&r.lossy).is_empty(), "on the channel it came in on");
        }
        // Destinations: only the identities named.
        let _ = from_ada.on_message(
            &client_envelope(false, None, &["cy", "nobody"], &[1, 2]),
            Delivery::Lossy,
            now,
        );
        assert!(drain(&bob.lossy).is_empty());
        let got = drain(&cy.lossy);
        assert_eq!(RelayedData::parse(&got[0]).unwrap().payload, [1, 2]);
        assert_eq!(room.stats.data.received.packets(), 2);
    }

    #[test]
    fn a_sender_without_the_permission_is_told_once_and_nothing_is_relayed() {
        let room = room(DataLimits::default());
        let bob = room.relay.add(pid("PA_b"), "bob".into());
        let (from_ada, mut errors, allowed) = sender(&room, "PA_a", "ada", false);
        let now = Instant::now();
        for _ in 0..5 {
            let _ = from_ada.on_message(
                &client_envelope(true, None, &[], b"x"),
                Delivery::Reliable,
                now,
            );
        }
        assert!(drain(&bob.reliable).is_empty());
        assert_eq!(error_codes(&mut errors), [ErrorCode::Forbidden]);
        assert_eq!(room.stats.data.dropped(DataDrop::Forbidden), 5);
        // Allowed again, and revoked again: told again.
        allowed.store(true, Ordering::Relaxed);
        let _ = from_ada.on_message(
            &client_envelope(true, None, &[], b"x"),
            Delivery::Reliable,
            now,
        );
        assert_eq!(drain(&bob.reliable).len(), 1);
        allowed.store(false, Ordering::Relaxed);
        let _ = from_ada.on_message(
            &client_envelope(true, None, &[], b"x"),
            Delivery::Reliable,
            now,
        );
        assert_eq!(error_codes(&mut errors), [ErrorCode::Forbidden]);
    }

    #[test]
    fn bad_and_oversized_messages_are_dropped_with_an_error_at_most_once_a_second() {
        let limits = DataLimits {
            max_message_bytes: 1024,
            ..DataLimits::default()
        };
        let room = room(limits);
        let bob = room.relay.add(pid("PA_b"), "bob".into());
        let (from_ada, mut errors, _) = sender(&room, "PA_a", "ada", true);
        let t0 = Instant::now();
        for _ in 0..3 {
            let _ = from_ada.on_message(b"plain text, no envelope", Delivery::Reliable, t0);
        }
        // Fits as sent, not once stamped with "PA_a" and "ada".
        let payload = vec![0u8; 1024 - 6 - 4];
        let _ = from_ada.on_message(
            &client_envelope(false, None, &[], &payload),
            Delivery::Reliable,
            t0,
        );
        from_ada.on_oversized(t0);
        assert!(drain(&bob.reliable).is_empty());
        assert_eq!(
            error_codes(&mut errors),
            [ErrorCode::InvalidData, ErrorCode::MessageTooLarge]
        );
        assert_eq!(room.stats.data.dropped(DataDrop::Invalid), 3);
        assert_eq!(room.stats.data.dropped(DataDrop::TooLarge), 2);
        let _ = from_ada.on_message(
            b"junk",
            Delivery::Reliable,
            t0 + Duration::from_millis(1100),
        );
        assert_eq!(error_codes(&mut errors), [ErrorCode::InvalidData]);
        // The largest that fits goes through.
        let payload = vec![0u8; 1024 - (2 + 2 + 4 + 2 + 3 + 2)];
        let _ = from_ada.on_message(
            &client_envelope(false, None, &[], &payload),
            Delivery::Reliable,
            t0,
        );
        assert_eq!(drain(&bob.reliable)[0].len(), 1024);
    }

    #[test]
    fn a_slow_receiver_loses_lossy_messages_and_has_its_reliable_channel_reset_alone() {
        let limits = DataLimits {
            max_message_bytes: 1024,
            reliable_queue_bytes: 4096,
            lossy_queue_bytes: 2048,
            ..DataLimits::default()
        };
        let room = room(limits);
        let slow = room.relay.add(pid("PA_s"), "slow".into());
        let fast = room.relay.add(pid("PA_f"), "fast".into());
        let (from_ada, _, _) = sender(&room, "PA_a", "ada", true);
        let now = Instant::now();
        let message = client_envelope(false, None, &[], &[7u8; 500]);
        for _ in 0..10 {
            let _ = from_ada.on_message(&message, Delivery::Lossy, now);
            // The fast receiver's writer keeps up.
            assert_eq!(drain(&fast.lossy).len(), 1);
        }
        // 500 + 13 bytes each: 3 fit in 2048.
        assert_eq!(slow.lossy.queued().0, 3);
        assert_eq!(room.stats.data.dropped(DataDrop::QueueFull), 7);

        // Reliable: the 4th message takes the slow queue over half (4 x 513 > 2048): the
        // sender is to wait for that receiver, and only for it.
        for i in 0..4 {
            let congested = from_ada.on_message(&message, Delivery::Reliable, now);
            assert_eq!(drain(&fast.reliable).len(), 1);
            let names: Vec<&str> = congested.iter().map(|r| r.id.as_str()).collect();
            assert_eq!(
                names,
                if i < 3 { vec![] } else { vec!["PA_s"] },
                "message {i}"
            );
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        // A receiver that drains within the grace is waited for, and keeps its channel.
        let congested = vec![slow.clone()];
        rt.block_on(async {
            let reader = slow.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(500)).await;
                for _ in 0..2 {
                    assert!(matches!(reader.reliable.next().await, Next::Write(_)));
                }
            });
            let started = tokio::time::Instant::now();
            room.relay.wait_for(congested).await;
            assert_eq!(started.elapsed(), Duration::from_millis(500));
        });
        assert_eq!(slow.reliable.queued().0, 2);
        // One that stays over half full for the grace (2 s) is reset: its queue is dropped,
        // and so is what comes for it until its new channel is open. The grace counts from
        // when it filled, not from when a sender began to wait.
        rt.block_on(async {
            let filled = tokio::time::Instant::now();
            let _ = from_ada.on_message(&message, Delivery::Reliable, now);
            let _ = from_ada.on_message(&message, Delivery::Reliable, now);
            drain(&fast.reliable);
            tokio::time::sleep(Duration::from_millis(700)).await;
            room.relay.wait_for(vec![slow.clone()]).await;
            assert_eq!(filled.elapsed(), Duration::from_secs(2));
        });
        assert_eq!(slow.reliable.queued(), (0, 0));
        assert_eq!(room.stats.data.dropped(DataDrop::Reset), 4);
        let congested = from_ada.on_message(&message, Delivery::Reliable, now);
        assert!(congested.is_empty());
        assert_eq!(room.stats.data.dropped(DataDrop::Reset), 5);
        assert_eq!(
            drain(&fast.reliable).len(),
            1,
            "the others are not affected"
        );
        assert_eq!(rt.block_on(slow.reliable.next()), Next::Overflowed);
        slow.reliable.reset_done();
        let _ = from_ada.on_message(&message, Delivery::Reliable, now);
        assert!(matches!(rt.block_on(slow.reliable.next()), Next::Write(_)));

        // Other senders do not wait: a queue can still overflow, which resets it at once.
        for _ in 0..6 {
            assert_eq!(
                slow.reliable.push(Bytes::from(vec![0u8; 600]), true),
                Push::Queued
            );
        }
        assert_eq!(
            slow.reliable.push(Bytes::from(vec![0u8; 600]), true),
            Push::Full { lost: 6 }
        );
    }

    #[test]
    fn a_sender_over_its_rate_is_made_to_wait_for_its_debt() {
        let t0 = Instant::now();
        let mut pacer = SenderPacer::new(1000);
        // A second's worth goes at once.
        assert_eq!(pacer.on_message(600, t0), Duration::ZERO);
        assert_eq!(pacer.on_message(400, t0), Duration::ZERO);
        assert_eq!(pacer.on_message(500, t0), Duration::from_millis(500));
        // Having waited it out, the next is paced at the rate.
        assert_eq!(
            pacer.on_message(100, t0 + Duration::from_millis(500)),
            Duration::from_millis(100)
        );
        // A pause refills to a second's worth, never beyond.
        assert_eq!(
            pacer.on_message(1000, t0 + Duration::from_secs(60)),
            Duration::ZERO
        );
        assert_eq!(
            pacer.on_message(1, t0 + Duration::from_secs(60)),
            Duration::from_millis(1)
        );
    }

    #[test]
    fn a_receiver_that_leaves_gets_nothing_more_and_its_writers_end() {
        let room = room(DataLimits::default());
        let bob = room.relay.add(pid("PA_b"), "bob".into());
        let (from_ada, _, _) = sender(&room, "PA_a", "ada", true);
        let _ = from_ada.on_message(
            &client_envelope(false, None, &[], b"1"),
            Delivery::Reliable,
            Instant::now(),
        );
        room.relay.remove(&pid("PA_b"));
        let _ = from_ada.on_message(
            &client_envelope(false, None, &[], b"2"),
            Delivery::Reliable,
            Instant::now(),
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(rt.block_on(bob.reliable.next()), Next::Closed);
        assert_eq!(rt.block_on(bob.lossy.next()), Next::Closed);
    }
}
