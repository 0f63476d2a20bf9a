//! The webrtc-rs side of the data relay (`crate::data`): the channels a client opens on its
//! publisher connection, read by our own loops, and the two channels the server opens on
//! each subscriber connection, written by one writer each.
//!
//! Channels are detached (SettingEngine::detach_data_channels): webrtc-rs's own read loop
//! reads into a 65,535-byte buffer and closes the channel on a larger message. Ours reads
//! into a buffer of `data.max_message_bytes` and, with the fix in vendor/webrtc-data, a
//! larger message is dropped whole and refused while the channel stays open. Handlers
//! registered on webrtc-rs objects capture `Weak`s only (they outlive the connection).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Notify};
use webrtc::data::data_channel::DataChannel;
use webrtc::data_channel::data_channel_init::RTCDataChannelInit;
use webrtc::data_channel::RTCDataChannel;
use webrtc::peer_connection::RTCPeerConnection;

use switchyard_signal::data::{LOSSY_LABEL, RELIABLE_LABEL};
use switchyard_signal::{ErrorCode, ServerMessage};
use switchyard_stats::MediaStats;

use crate::data::{DataSender, Delivery, Next, Recipient, SenderPacer};
use crate::error::Result;
use crate::SignalTx;

/// Bytes a writer leaves in SCTP's send buffer before it waits for it to drain: a reliable
/// channel keeps a fast link busy; a lossy one keeps little, so a lossy flood never queues
/// ahead of the reliable channel's messages on the same association for long.
const RELIABLE_HIGH_WATER: usize = 1 << 20;
const LOSSY_HIGH_WATER: usize = 64 << 10;
/// Waits for a drained send buffer or an opened channel re-check this often (a missed
/// wake-up, or a receiver that left meanwhile, costs at most this).
const RECHECK: Duration = Duration::from_millis(100);
/// What the server reads on a subscriber connection's channels (the client's DCEP
/// acknowledgements; anything a client sends there is dropped).
const SUBSCRIBER_READ_BUFFER: usize = 2048;

fn label(delivery: Delivery) -> &'static str {
    match delivery {
        Delivery::Reliable => RELIABLE_LABEL,
        Delivery::Lossy => LOSSY_LABEL,
    }
}

/// `a=max-message-size` after each `a=sctp-port` of a description the server sends
/// (webrtc-rs 0.17 writes none, and a browser then assumes 65,536 bytes).
pub(crate) fn advertise_max_message_size(sdp: String, max: usize) -> String {
    if !sdp.contains("a=sctp-port:") || sdp.contains("a=max-message-size:") {
        return sdp;
    }
    let mut out = String::with_capacity(sdp.len() + 32);
    for line in sdp.split_inclusive('\n') {
        out.push_str(line);
        if line.starts_with("a=sctp-port:") {
            out.push_str(&format!("a=max-message-size:{max}\r\n"));
        }
    }
    out
}

/// Takes the client's `_reliable` and `_lossy` channels on its publisher connection (one
/// of each; any other is closed, and the client told why) and reads each in its own loop.
pub(crate) fn accept_publisher_channels(pc: &RTCPeerConnection, sender: Weak<DataSender>) {
    let taken = Arc::new([AtomicBool::new(false), AtomicBool::new(false)]);
    pc.on_data_channel(Box::new(move |dc: Arc<RTCDataChannel>| {
        let sender = sender.clone();
        let taken = taken.clone();
        Box::pin(async move {
            let Some(strong) = sender.upgrade() else {
                return;
            };
            let delivery = match dc.label() {
                RELIABLE_LABEL => Delivery::Reliable,
                LOSSY_LABEL => Delivery::Lossy,
                other => {
                    strong.refuse(
                        ErrorCode::BadRequest,
                        format!(
                            "data channel {other:?} closed: the server relays `{RELIABLE_LABEL}` \
                             and `{LOSSY_LABEL}` only"
                        ),
                    );
                    close_later(dc);
                    return;
                }
            };
            if taken[delivery as usize].swap(true, Ordering::Relaxed) {
                strong.refuse(
                    ErrorCode::BadRequest,
                    format!("a second `{}` data channel closed", label(delivery)),
                );
                close_later(dc);
                return;
            }
            drop(strong);
            when_open(&dc, move |raw| {
                tokio::spawn(read_publisher_channel(raw, sender, delivery));
            });
        })
    }));
}

/// Once `dc` opens, hands its detached channel to `then` (the handler holds a `Weak`).
fn when_open(
    dc: &Arc<RTCDataChannel>,
    then: impl FnOnce(Arc<DataChannel>) + Send + Sync + 'static,
) {
    let channel = Arc::downgrade(dc);
    dc.on_open(Box::new(move || {
        Box::pin(async move {
            let Some(dc) = channel.upgrade() else {
                return;
            };
            match dc.detach().await {
                Ok(raw) => then(raw),
                Err(e) => tracing::warn!(error = %e, "could not detach a data channel"),
            }
        })
    }));
}

fn close_later(dc: Arc<RTCDataChannel>) {
    tokio::spawn(async move {
        let _ = dc.close().await;
    });
}

/// Reads one of a sender's channels until it ends, handing each message to the relay, and
/// pacing the sender at `data.sender_bytes_per_second`.
async fn read_publisher_channel(
    raw: Arc<DataChannel>,
    sender: Weak<DataSender>,
    delivery: Delivery,
) {
    let Some(limits) = sender.upgrade().map(|s| s.relay().limits()) else {
        return;
    };
    let mut pacer = SenderPacer::new(limits.sender_bytes_per_second);
    let mut buf = vec![0u8; limits.max_message_bytes];
    loop {
        let read = raw.read_data_channel(&mut buf).await;
        let Some(strong) = sender.upgrade() else {
            break;
        };
        let now = Instant::now();
        let (bytes, congested) = match read {
            // The stream was reset or shut down. (An empty binary message reads the same;
            // no envelope is empty.)
            Ok((0, false)) => break,
            Ok((n, _)) => (n, strong.on_message(&buf[..n], delivery, now)),
            Err(webrtc::data::Error::Sctp(webrtc::sctp::Error::ErrShortBuffer { .. })) => {
                strong.on_oversized(now);
                (limits.max_message_bytes, Vec::new())
            }
            Err(e) => {
                tracing::debug!(error = %e, ?delivery, "data channel read ended");
                break;
            }
        };
        let relay = strong.relay().clone();
        drop(strong);
        // Read no further until the receivers it filled drain (or one is given up on),
        // and no faster than the sender's rate.
        if !congested.is_empty() {
            relay.wait_for(congested).await;
        }
        let wait = pacer.on_message(bytes, now);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Opens the server's `_reliable` and `_lossy` channels on a subscriber connection (before
/// its first offer, so that offer carries the `m=application` section) and starts their
/// writers, which drain `recipient`'s queues once the channels open.
pub(crate) async fn open_subscriber_channels(
    pc: &Arc<RTCPeerConnection>,
    recipient: Arc<Recipient>,
    signal: SignalTx,
    stats: Arc<MediaStats>,
) -> Result<()> {
    for delivery in [Delivery::Reliable, Delivery::Lossy] {
        let opening = create_channel(pc, delivery).await?;
        tokio::spawn(write_subscriber_channel(
            Arc::downgrade(pc),
            recipient.clone(),
            delivery,
            opening,
            signal.clone(),
            stats.clone(),
        ));
    }
    Ok(())
}

/// A channel being opened: the webrtc-rs object (kept alive until it opens) and where its
/// detached form arrives.
struct Opening {
    _channel: Arc<RTCDataChannel>,
    opened: oneshot::Receiver<Arc<DataChannel>>,
}

async fn create_channel(pc: &RTCPeerConnection, delivery: Delivery) -> Result<Opening> {
    let init = match delivery {
        Delivery::Reliable => RTCDataChannelInit {
            ordered: Some(true),
            ..Default::default()
        },
        Delivery::Lossy => RTCDataChannelInit {
            ordered: Some(false),
            max_retransmits: Some(0),
            ..Default::default()
        },
    };
    let dc = pc.create_data_channel(label(delivery), Some(init)).await?;
    let (tx, opened) = oneshot::channel();
    when_open(&dc, move |raw| {
        let _ = tx.send(raw);
    });
    Ok(Opening {
        _channel: dc,
        opened,
    })
}

/// Waits for `opening`, or gives up when the receiver left (or the channel never opens
/// because its connection closed).
async fn opened(
    mut opening: Opening,
    recipient: &Recipient,
    delivery: Delivery,
) -> Option<Arc<DataChannel>> {
    loop {
        match tokio::time::timeout(RECHECK, &mut opening.opened).await {
            Ok(Ok(raw)) => return Some(raw),
            Ok(Err(_)) => return None,
            Err(_) if recipient.outbox(delivery).is_closed() => return None,
            Err(_) => {}
        }
    }
}

/// Writes `recipient`'s queue for `delivery` to its channel, waiting whenever SCTP holds
/// more than the high-water mark; on an overflow of the reliable queue, resets the channel
/// (closes it, tells the receiver, opens a new one).
async fn write_subscriber_channel(
    pc: Weak<RTCPeerConnection>,
    recipient: Arc<Recipient>,
    delivery: Delivery,
    opening: Opening,
    signal: SignalTx,
    stats: Arc<MediaStats>,
) {
    let Some(mut channel) = opened(opening, &recipient, delivery).await else {
        return;
    };
    let mut drained = watch_drained(&channel, delivery);
    tokio::spawn(discard_reads(channel.clone()));
    let outbox = recipient.outbox(delivery);
    let high_water = match delivery {
        Delivery::Reliable => RELIABLE_HIGH_WATER,
        Delivery::Lossy => LOSSY_HIGH_WATER,
    };
    loop {
        match outbox.next().await {
            Next::Closed => break,
            Next::Write(message) => {
                // A receiver that stopped reading keeps SCTP's buffer full; its queue
                // overflowing meanwhile is noticed here, not only once it drains.
                while channel.buffered_amount() > high_water && outbox.is_open() {
                    let _ = tokio::time::timeout(RECHECK, drained.notified()).await;
                }
                if !outbox.is_open() {
                    continue;
                }
                // SCTP's write waits while its association's pending queue (128 KiB in
                // webrtc-sctp) is full, as it stays for a receiver that stopped reading;
                // an overflow (or the receiver leaving) must not wait for it. Dropping the
                // write is safe: a message under 85 KiB is queued whole or not at all.
                tokio::select! {
                    written = channel.write_data_channel(&message, false) => match written {
                        Ok(n) => stats.data.sent.add(n),
                        Err(e) => tracing::debug!(error = %e, ?delivery, "data channel write failed"),
                    },
                    () = outbox.until_not_open() => {}
                }
            }
            Next::Overflowed => {
                stats.data.resets.fetch_add(1, Ordering::Relaxed);
                tracing::info!(?delivery, "receiver too slow: resetting its data channel");
                let _ = signal.try_send(ServerMessage::error(
                    ErrorCode::DataOverflow,
                    "your reliable data channel fell too far behind and was reset; messages \
                     in between were lost",
                ));
                let _ = channel.close().await;
                let Some(pc) = pc.upgrade() else {
                    break;
                };
                let opening = match create_channel(&pc, delivery).await {
                    Ok(opening) => opening,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not reopen a data channel");
                        break;
                    }
                };
                drop(pc);
                let Some(reopened) = opened(opening, &recipient, delivery).await else {
                    break;
                };
                channel = reopened;
                drained = watch_drained(&channel, delivery);
                tokio::spawn(discard_reads(channel.clone()));
                outbox.reset_done();
            }
        }
    }
    let _ = channel.close().await;
}

/// Notified when `channel`'s send buffer drains below a quarter of its high-water mark.
fn watch_drained(channel: &DataChannel, delivery: Delivery) -> Arc<Notify> {
    let drained = Arc::new(Notify::new());
    let low = match delivery {
        Delivery::Reliable => RELIABLE_HIGH_WATER / 4,
        Delivery::Lossy => LOSSY_HIGH_WATER / 4,
    };
    channel.set_buffered_amount_low_threshold(low);
    let notify = Arc::downgrade(&drained);
    channel.on_buffered_amount_low(Box::new(move || {
        if let Some(notify) = notify.upgrade() {
            notify.notify_one();
        }
        Box::pin(async {})
    }));
    drained
}

/// Reads a subscriber connection's channel so the client's acknowledgements are handled;
/// what else a client sends there is dropped.
async fn discard_reads(channel: Arc<DataChannel>) {
    let mut buf = vec![0u8; SUBSCRIBER_READ_BUFFER];
    loop {
        match channel.read_data_channel(&mut buf).await {
            Ok((0, false)) => break,
            Ok(_) | Err(webrtc::data::Error::Sctp(webrtc::sctp::Error::ErrShortBuffer { .. })) => {}
            Err(_) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_max_message_size_follows_the_sctp_port() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
                   m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:1\r\na=sctp-port:5000\r\n"
            .to_owned();
        let out = advertise_max_message_size(sdp, 65535);
        assert!(
            out.ends_with("a=sctp-port:5000\r\na=max-message-size:65535\r\n"),
            "{out}"
        );
        // Once only; and nothing where there is no data channel.
        assert_eq!(advertise_max_message_size(out.clone(), 1024), out);
        let plain = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n".to_owned();
        assert_eq!(advertise_max_message_size(plain.clone(), 1024), plain);
    }
}
