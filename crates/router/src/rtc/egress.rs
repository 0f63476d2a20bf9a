//! Where forwarded RTP leaves the server: sealed in reused buffers and written straight to
//! the media socket, several copies per `sendmmsg`.
//!
//! webrtc-rs's own write path cost more than everything else per forwarded copy: a task
//! wake, the interceptor chain, the SRTP session's async lock, a marshal into one buffer and
//! an encryption into a second, then the mux and ICE connection layers and one `sendto`.
//! Instead, each subscriber connection has an [`Egress`]: its own SRTP context, made from
//! the keys its DTLS handshake exported, and the remote address of its selected ICE pair.
//! The uptrack's reader seals every copy of a packet into a [`Batch`] and sends the batch
//! on the one media socket that ICE and DTLS also use.
//!
//! Because webrtc-rs no longer sees these packets, the egress also sends their Sender
//! Reports. Its SRTP context encrypts only our downtracks' SSRCs, and nothing else encrypts
//! those, so no (SSRC, index) pair, and so no AES nonce, is ever used twice.
//!
//! Must not: hold a lock across an await (the locks here cover sealing one copy).

use std::io;
use std::io::IoSlice;
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime};

use rustix::net::{sendmmsg, MMsgHdr, SendAncillaryBuffer, SendFlags, SocketAddrAny};
use tokio::io::Interest;
use webrtc::dtls_transport::RTCDtlsTransport;
use webrtc::ice_transport::ice_candidate_pair::RTCIceCandidatePair;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtcp::packet::Packet as RtcpPacket;
use webrtc::rtp::header::Header;
use webrtc::srtp::context::Context;

use switchyard_signal::limit::TokenBucket;
use switchyard_stats::rate::TrackTraffic;
use switchyard_stats::{DropReason, MediaKind, MediaStats};

use super::downtrack::DownSink;
use super::uptrack::UpPacket;
use crate::track::Delivery;

/// Copies per `sendmmsg` call: enough to amortize the system call, few enough that the
/// buffers (1.5 KB each) stay in cache.
pub(crate) const BATCH_MAX: usize = 64;

/// How often each stream's Sender Report goes out (webrtc-rs and browsers use about 1 s).
const SENDER_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Sender Reports per RTCP compound packet: 28 bytes each, so a packet stays well under
/// the MTU however many tracks a subscriber receives.
const REPORTS_PER_PACKET: usize = 20;

/// How long a send waits for room in the socket's send buffer before dropping the rest of
/// its batch: a full buffer means the server is behind, and late media is worth little.
const SEND_WAIT: Duration = Duration::from_millis(5);

/// What one packet is on the wire to one subscriber.
pub(crate) type CopyOf = Delivery<Arc<UpPacket>, Arc<DownSink>>;

/// The media socket, as the writer of forwarded packets sees it: a second descriptor of
/// the socket the UDP mux reads (so both share the port and the kernel buffers).
pub(crate) struct MediaSocket {
    socket: tokio::net::UdpSocket,
}

impl MediaSocket {
    pub fn new(socket: tokio::net::UdpSocket) -> Self {
        MediaSocket { socket }
    }

    /// Sends `datagrams[i]` to `destinations[i]` (at most [`BATCH_MAX`]) without waiting;
    /// returns how many the kernel took (`WouldBlock` when its buffer has no room).
    fn send(&self, datagrams: &[Vec<u8>], destinations: &[SocketAddrAny]) -> io::Result<usize> {
        self.socket.try_io(Interest::WRITABLE, || {
            send_many(&self.socket, datagrams, destinations)
        })
    }
}

/// One `sendmmsg` (Linux). rustix's, not nix's: nix's cannot report a partial send
/// safely (its result iterator reads address storage the kernel never wrote).
fn send_many(
    socket: &impl AsFd,
    datagrams: &[Vec<u8>],
    destinations: &[SocketAddrAny],
) -> io::Result<usize> {
    let count = datagrams.len().min(destinations.len()).min(BATCH_MAX);
    if count == 0 {
        return Ok(0);
    }
    let slices: [IoSlice<'_>; BATCH_MAX] =
        std::array::from_fn(|i| IoSlice::new(datagrams.get(i).map_or(&[][..], |d| &d[..])));
    let mut no_control: [SendAncillaryBuffer<'_, '_, '_>; BATCH_MAX] =
        std::array::from_fn(|_| SendAncillaryBuffer::default());
    let mut controls = no_control.iter_mut();
    let mut messages: [MMsgHdr<'_>; BATCH_MAX] = std::array::from_fn(|i| {
        let control = controls.next().expect("one per message");
        MMsgHdr::new_with_addr(
            &destinations[i.min(count - 1)],
            std::slice::from_ref(&slices[i]),
            control,
        )
    });
    Ok(sendmmsg(
        socket,
        &mut messages[..count],
        SendFlags::empty(),
    )?)
}

/// Where one subscriber connection's packets go and how they are sealed; `None` until its
/// DTLS handshake is done.
#[derive(Default)]
struct Path {
    srtp: Option<Context>,
    remote: Option<SocketAddrAny>,
}

/// One subscriber connection's way out: its SRTP context, its selected pair's address,
/// its downtracks (for their Sender Reports), and how many NACK resends it may still get.
pub(crate) struct Egress {
    socket: Arc<MediaSocket>,
    path: Mutex<Path>,
    sinks: Mutex<Vec<Weak<DownSink>>>,
    /// Resends per second over all the connection's tracks: a subscriber that NACKs
    /// everything gets a bounded amount of extra traffic, whatever it asks for.
    resends: Mutex<TokenBucket>,
}

impl Egress {
    pub fn new(socket: Arc<MediaSocket>, resends_per_second: u32) -> Arc<Egress> {
        Arc::new(Egress {
            socket,
            path: Mutex::default(),
            sinks: Mutex::default(),
            resends: Mutex::new(TokenBucket::new(
                f64::from(resends_per_second),
                resends_per_second,
            )),
        })
    }

    /// Takes up to `wanted` resends from the connection's per-second budget.
    pub(crate) fn take_resends(&self, now: Instant, wanted: u32) -> u32 {
        self.resends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take_up_to(now, wanted)
    }

    /// Returns resends taken with [`Self::take_resends`] and not used.
    pub(crate) fn refund_resends(&self, unused: u32) {
        if unused > 0 {
            self.resends
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .refund(unused);
        }
    }

    pub fn socket(&self) -> &Arc<MediaSocket> {
        &self.socket
    }

    fn path(&self) -> MutexGuard<'_, Path> {
        self.path.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Encrypts the marshalled packet in `packet` (header `header`) in place; returns where
    /// to send it, or `None` while the connection has no SRTP keys or selected pair yet.
    pub(crate) fn seal(&self, packet: &mut Vec<u8>, header: &Header) -> Option<SocketAddrAny> {
        let mut path = self.path();
        let remote = path.remote.clone()?;
        match path.srtp.as_mut()?.encrypt_rtp_in_place(packet, header) {
            Ok(()) => Some(remote),
            Err(e) => {
                tracing::debug!(error = %e, ssrc = header.ssrc, "SRTP encryption failed");
                None
            }
        }
    }

    /// Includes `sink`'s stream in this connection's Sender Reports while it lives.
    pub(crate) fn register(&self, sink: &Arc<DownSink>) {
        let mut sinks = self.sinks.lock().unwrap_or_else(|e| e.into_inner());
        sinks.retain(|s| s.strong_count() > 0);
        sinks.push(Arc::downgrade(sink));
    }

    fn set_remote(&self, pair: &RTCIceCandidatePair) {
        let remote = pair
            .remote
            .address
            .parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| SocketAddrAny::from(std::net::SocketAddr::new(ip, pair.remote.port)));
        if remote.is_none() {
            tracing::warn!(address = %pair.remote.address, "selected ICE pair has no IP address");
        }
        self.path().remote = remote;
    }

    /// Runs for the life of the subscriber connection `pc` (abort it when closing): once
    /// DTLS is up it sets the SRTP context and the selected pair's address, follows pair
    /// changes, and sends every stream's Sender Report each second.
    pub(crate) async fn run(
        self: Arc<Self>,
        pc: Weak<RTCPeerConnection>,
        dtls: Arc<RTCDtlsTransport>,
    ) {
        let this = Arc::downgrade(&self);
        dtls.ice_transport()
            .on_selected_candidate_pair_change(Box::new(move |pair| {
                if let Some(egress) = this.upgrade() {
                    egress.set_remote(&pair);
                }
                Box::pin(async {})
            }));
        let Some(keys) = dtls.local_srtp_keys().await else {
            return;
        };
        match keys.rtp_context() {
            Ok(context) => self.path().srtp = Some(context),
            Err(e) => {
                tracing::warn!(error = %e, "no SRTP context for the subscriber connection");
                return;
            }
        }
        if let Some(pair) = dtls.ice_transport().get_selected_candidate_pair().await {
            self.set_remote(&pair);
        }
        drop(dtls);

        let mut ticks = tokio::time::interval(SENDER_REPORT_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let reports = self.sender_reports(SystemTime::now());
            if reports.is_empty() {
                continue;
            }
            let Some(pc) = pc.upgrade() else { return };
            for chunk in reports.chunks(REPORTS_PER_PACKET) {
                let packets: Vec<Box<dyn RtcpPacket + Send + Sync>> = chunk
                    .iter()
                    .map(|r| Box::new(r.clone()) as Box<dyn RtcpPacket + Send + Sync>)
                    .collect();
                if let Err(e) = pc.write_rtcp(&packets).await {
                    tracing::debug!(error = %e, "sending Sender Reports");
                }
            }
        }
    }

    fn sender_reports(&self, now: SystemTime) -> Vec<webrtc::rtcp::sender_report::SenderReport> {
        let sinks: Vec<Arc<DownSink>> = {
            let mut sinks = self.sinks.lock().unwrap_or_else(|e| e.into_inner());
            sinks.retain(|s| s.strong_count() > 0);
            sinks.iter().filter_map(Weak::upgrade).collect()
        };
        sinks.iter().filter_map(|s| s.sender_report(now)).collect()
    }
}

/// Whose counters a batch's sends go to.
pub(crate) struct Accounting<'a> {
    pub kind: MediaKind,
    pub stats: &'a MediaStats,
    pub traffic: &'a TrackTraffic,
}

/// Copies sealed and waiting for one `sendmmsg`, in buffers reused from batch to batch:
/// in steady state sending allocates nothing.
pub(crate) struct Batch {
    socket: Arc<MediaSocket>,
    buffers: Vec<Vec<u8>>,
    destinations: Vec<SocketAddrAny>,
    /// Per copy: when its packet arrived (for the forwarding latency) and its payload size.
    copies: Vec<(Instant, usize)>,
}

impl Batch {
    pub fn new(socket: Arc<MediaSocket>) -> Batch {
        Batch {
            socket,
            buffers: Vec::new(),
            destinations: Vec::with_capacity(BATCH_MAX),
            copies: Vec::with_capacity(BATCH_MAX),
        }
    }

    /// Seals and sends every copy in `deliveries` (leaving it empty). A copy whose
    /// subscriber is not ready (not bound, no DTLS yet) is counted as a failed write.
    pub async fn send(&mut self, deliveries: &mut Vec<CopyOf>, to: &Accounting<'_>) {
        if deliveries.is_empty() {
            return;
        }
        let now = SystemTime::now();
        for (sink, out) in deliveries.drain(..) {
            if self.copies.len() == BATCH_MAX {
                self.flush(to).await;
            }
            let index = self.copies.len();
            if self.buffers.len() == index {
                self.buffers.push(Vec::with_capacity(1500));
            }
            match sink.seal(&out, &mut self.buffers[index], now) {
                Some((destination, payload_bytes)) => {
                    self.destinations.push(destination);
                    self.copies.push((out.packet.received_at, payload_bytes));
                }
                None => to.stats.dropped.add(DropReason::WriteFailed),
            }
        }
        self.flush(to).await;
    }

    async fn flush(&mut self, to: &Accounting<'_>) {
        let count = self.copies.len();
        let mut start = 0;
        let mut waited = false;
        while start < count {
            match self.socket.send(
                &self.buffers[start..count],
                &self.destinations[start..count],
            ) {
                Ok(sent) => {
                    self.account(start..start + sent, to);
                    start += sent;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if waited {
                        // Still no room: the server is behind; these are dropped.
                        to.stats
                            .dropped
                            .add_n(DropReason::QueueFull, (count - start) as u64);
                        break;
                    }
                    waited = true;
                    let _ = tokio::time::timeout(SEND_WAIT, self.socket.socket.writable()).await;
                }
                Err(e) => {
                    // The first datagram failed on its own (e.g. its destination is
                    // unreachable): skip it, send the rest.
                    tracing::debug!(error = %e, "sending a forwarded packet");
                    to.stats.dropped.add(DropReason::WriteFailed);
                    start += 1;
                }
            }
        }
        self.destinations.clear();
        self.copies.clear();
    }

    fn account(&self, sent: std::ops::Range<usize>, to: &Accounting<'_>) {
        let now = Instant::now();
        let mut bytes = 0;
        for &(received_at, payload_bytes) in &self.copies[sent.clone()] {
            bytes += payload_bytes;
            to.stats
                .quality
                .observe_forwarding_latency(to.kind, now.saturating_duration_since(received_at));
        }
        to.stats.forwarded[to.kind].add_many(sent.len() as u64, bytes as u64);
        to.traffic.add_sent(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Several datagrams to several destinations in one call, each arriving intact where
    /// it was addressed.
    #[tokio::test]
    async fn one_call_sends_each_datagram_to_its_own_destination() {
        let sender = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let socket = MediaSocket::new(sender);
        let receivers: Vec<std::net::UdpSocket> = (0..3)
            .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let destinations: Vec<SocketAddrAny> = receivers
            .iter()
            .map(|r| SocketAddrAny::from(r.local_addr().unwrap()))
            .collect();
        let datagrams: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 100 + i as usize]).collect();
        // tokio learns the socket is writable from the reactor, as in the server.
        socket.socket.writable().await.unwrap();
        assert_eq!(socket.send(&datagrams, &destinations).unwrap(), 3);
        for (i, receiver) in receivers.iter().enumerate() {
            receiver
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            let mut buf = [0u8; 1500];
            let n = receiver.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], &datagrams[i][..]);
        }
        assert_eq!(socket.send(&[], &[]).unwrap(), 0);
    }
}
