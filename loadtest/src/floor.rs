//! The floor under any SFU's fan-out: plain UDP, no WebRTC, no crypto.
//!
//! A [`forward`]er receives datagrams on one socket with `recvmmsg` and sends each to every
//! joined destination with `sendmmsg`, from the same socket (as an SFU's single media port
//! does). Its CPU per forwarded datagram is the least the kernel charges for the copies an
//! SFU makes; the benchmark divides Switchyard's and Janus's figures by it.
//!
//! [`run_load`] is the matching load: N receiver sockets join the forwarder (a datagram
//! [`JOIN`], answered [`JOINED`], the way an SFU learns a subscriber's address), then one
//! sender paces stamped datagrams (u64 counter, u64 send time in µs of CLOCK_MONOTONIC,
//! big-endian) at a given rate and size, and the receivers count loss, duplicates, latency
//! and jitter.
//!
//! On loopback the sender's `sendmmsg` also runs the receive path into the destination
//! socket, so the forwarder's CPU includes delivering each copy: true for every server
//! measured the same way, which is what makes the ratio fair.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags};
use nix::sys::epoll::{
    epoll_create1, epoll_ctl, epoll_wait, EpollCreateFlags, EpollEvent, EpollFlags, EpollOp,
};
use nix::sys::socket::{
    recvmmsg, sendmmsg, setsockopt, sockopt, ControlMessage, MsgFlags, MultiHeaders, SockaddrIn,
};
use nix::time::{clock_gettime, ClockId};
use serde_json::{json, Value};

use crate::server_proc;

/// A receiver asks the forwarder for the stream with this datagram...
pub const JOIN: &[u8] = b"switchyard-udp-floor:join";
/// ...and the forwarder confirms with this one.
pub const JOINED: &[u8] = b"switchyard-udp-floor:joined";
/// Bytes of the stamp at the start of every data datagram.
pub const STAMP_LEN: usize = 16;
/// Largest datagram handled (an RTP packet is at most ~1200 bytes on the wire).
pub const MAX_DATAGRAM: usize = 2048;
/// Datagrams per `recvmmsg`.
const RECV_BATCH: usize = 64;
/// `sendmmsg` takes at most UIO_MAXIOV (1024) messages per call.
const SEND_BATCH: usize = 1024;
/// Socket buffers as large as Switchyard's media socket (`rtc.udp_buffer_bytes`).
pub const SOCKET_BUFFER: usize = 4 << 20;

/// Microseconds of CLOCK_MONOTONIC: the same clock in every process on the machine.
pub fn now_us() -> u64 {
    let t = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC");
    t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000
}

pub fn write_stamp(buf: &mut [u8], counter: u64, sent_us: u64) {
    buf[..8].copy_from_slice(&counter.to_be_bytes());
    buf[8..16].copy_from_slice(&sent_us.to_be_bytes());
}

pub fn read_stamp(buf: &[u8]) -> Option<(u64, u64)> {
    if buf.len() < STAMP_LEN {
        return None;
    }
    let counter = u64::from_be_bytes(buf[..8].try_into().ok()?);
    let sent_us = u64::from_be_bytes(buf[8..16].try_into().ok()?);
    Some((counter, sent_us))
}

/// Enlarges a socket's kernel buffers: as root past `net.core.[rw]mem_max` (the *Force
/// options), else as far as the limit allows.
pub fn set_buffers(socket: &UdpSocket, bytes: usize) {
    let fd = socket.as_raw_fd();
    if setsockopt(fd, sockopt::RcvBufForce, &bytes).is_err() {
        let _ = setsockopt(fd, sockopt::RcvBuf, &bytes);
    }
    if setsockopt(fd, sockopt::SndBufForce, &bytes).is_err() {
        let _ = setsockopt(fd, sockopt::SndBuf, &bytes);
    }
}

/// Sets Don't Fragment on the forwarder's datagrams, as the server does on its media
/// socket (see `set_dont_fragment` in the router's engine.rs): without it the kernel draws
/// an IP ID per datagram from a shared hashed generator, a cost the floor must not carry
/// when the server does not.
pub fn set_dont_fragment(socket: &UdpSocket) {
    use rustix::net::sockopt::{set_ip_mtu_discover, Ipv4PathMtuDiscovery};
    let _ = set_ip_mtu_discover(socket, Ipv4PathMtuDiscovery::PROBE);
}

/// What a forwarder did.
#[derive(Debug, Clone, Default)]
pub struct ForwardStats {
    /// Data datagrams received (joins not counted).
    pub received: u64,
    /// Copies handed to successful `sendmmsg` calls.
    pub forwarded: u64,
    /// `sendmmsg` calls that failed (their copies are not in `forwarded`).
    pub send_errors: u64,
    pub destinations: usize,
    /// User and system CPU of the whole process, from getrusage.
    pub cpu_user_us: u64,
    pub cpu_system_us: u64,
}

impl ForwardStats {
    pub fn cpu_us(&self) -> u64 {
        self.cpu_user_us + self.cpu_system_us
    }

    pub fn to_json(&self) -> Value {
        let per = |n: u64| {
            if n == 0 {
                Value::Null
            } else {
                json!(self.cpu_us() as f64 / n as f64)
            }
        };
        json!({
            "received": self.received,
            "forwarded": self.forwarded,
            "send_errors": self.send_errors,
            "destinations": self.destinations,
            "cpu_user_us": self.cpu_user_us,
            "cpu_system_us": self.cpu_system_us,
            "cpu_us_per_forwarded": per(self.forwarded),
            "cpu_us_per_received": per(self.received),
        })
    }
}

fn v4(addr: SocketAddr) -> io::Result<SockaddrIn> {
    match addr {
        SocketAddr::V4(v4) => Ok(SockaddrIn::from(v4)),
        SocketAddr::V6(_) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the UDP floor is IPv4 only",
        )),
    }
}

/// Forwards every data datagram arriving on `socket` to every destination that joined (at
/// most `max_destinations`), until `stop` is set or `until` passes.
pub fn forward(
    socket: &UdpSocket,
    max_destinations: usize,
    stop: &AtomicBool,
    until: Option<Instant>,
) -> io::Result<ForwardStats> {
    let fd = socket.as_raw_fd();
    // Blocking sends: with a full send buffer `sendmmsg` waits instead of stopping short.
    // That matters because the count of a partial send cannot be read safely (nix's result
    // iterator for sendmmsg reads address storage the kernel never wrote), so a call that
    // returns Ok is counted as sending all it was given. Receives use MSG_DONTWAIT + poll.
    socket.set_nonblocking(false)?;
    let mut stats = ForwardStats::default();
    let mut destinations: Vec<SockaddrIn> = Vec::new();
    let mut bufs = vec![[0u8; MAX_DATAGRAM]; RECV_BATCH];
    let mut lens = [0usize; RECV_BATCH];
    let mut from: [Option<SockaddrIn>; RECV_BATCH] = [None; RECV_BATCH];
    let mut rx = MultiHeaders::<SockaddrIn>::preallocate(RECV_BATCH, None);
    let mut tx = MultiHeaders::<SockaddrIn>::preallocate(SEND_BATCH, None);
    let no_cmsgs: [ControlMessage<'_>; 0] = [];
    // (datagram index, destination) for one batch; reused.
    let mut copies: Vec<(usize, SockaddrIn)> = Vec::new();

    loop {
        if stop.load(Ordering::Relaxed) || until.is_some_and(|t| Instant::now() >= t) {
            break;
        }
        let received = {
            let iovs: Vec<[IoSliceMut<'_>; 1]> = bufs
                .iter_mut()
                .map(|b| [IoSliceMut::new(&mut b[..])])
                .collect();
            match recvmmsg(fd, &mut rx, iovs.iter(), MsgFlags::MSG_DONTWAIT, None) {
                Ok(results) => {
                    let mut n = 0;
                    for message in results {
                        lens[n] = message.bytes;
                        from[n] = message.address;
                        n += 1;
                    }
                    n
                }
                Err(Errno::EAGAIN) => {
                    // Idle: wait for data, waking now and then to notice `stop`.
                    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
                    match poll(&mut fds, 100) {
                        Ok(_) | Err(Errno::EINTR) => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        };

        copies.clear();
        for i in 0..received {
            let datagram = &bufs[i][..lens[i]];
            if datagram == JOIN {
                if let Some(addr) = from[i] {
                    if !destinations.contains(&addr) && destinations.len() < max_destinations {
                        destinations.push(addr);
                    }
                    // Answered even when already joined: the first answer may have been lost.
                    let to: SocketAddrV4 = addr.into();
                    let _ = socket.send_to(JOINED, to);
                }
                continue;
            }
            stats.received += 1;
            copies.extend(destinations.iter().map(|d| (i, *d)));
        }

        for chunk in copies.chunks(SEND_BATCH) {
            let slices: Vec<[IoSlice<'_>; 1]> = chunk
                .iter()
                .map(|(i, _)| [IoSlice::new(&bufs[*i][..lens[*i]])])
                .collect();
            let addrs: Vec<Option<SockaddrIn>> = chunk.iter().map(|(_, a)| Some(*a)).collect();
            loop {
                match sendmmsg(
                    fd,
                    &mut tx,
                    slices.iter(),
                    &addrs,
                    no_cmsgs,
                    MsgFlags::empty(),
                ) {
                    Ok(_) => {
                        stats.forwarded += chunk.len() as u64;
                        break;
                    }
                    Err(Errno::EINTR) => continue,
                    Err(_) => {
                        stats.send_errors += 1;
                        break;
                    }
                }
            }
        }
    }
    stats.destinations = destinations.len();
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)?;
    let us = |t: nix::sys::time::TimeVal| t.tv_sec() as u64 * 1_000_000 + t.tv_usec() as u64;
    stats.cpu_user_us = us(usage.user_time());
    stats.cpu_system_us = us(usage.system_time());
    Ok(stats)
}

/// Latencies in µs, in buckets of about 1.6% (64 per power of two; exact below 128 µs).
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; 59 * 64],
            total: 0,
        }
    }
}

impl Histogram {
    fn index(value: u64) -> usize {
        if value < 128 {
            return value as usize;
        }
        let bits = 63 - value.leading_zeros();
        let shift = bits - 6;
        let top = (value >> shift) as usize;
        (shift as usize + 1) * 64 + (top - 64)
    }

    /// The smallest value of bucket `index` and the bucket's width.
    fn bucket(index: usize) -> (u64, u64) {
        if index < 128 {
            return (index as u64, 1);
        }
        let shift = (index / 64 - 1) as u32;
        let top = (index % 64 + 64) as u64;
        (top << shift, 1 << shift)
    }

    pub fn record(&mut self, value: u64) {
        self.counts[Self::index(value)] += 1;
        self.total += 1;
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// The value at quantile `q` (0..=1): the middle of its bucket; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let (low, width) = Self::bucket(index);
                return Some(low as f64 + (width - 1) as f64 / 2.0);
            }
        }
        None
    }
}

/// One load run against a forwarder.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub forwarder: SocketAddr,
    pub fanout: usize,
    /// Datagrams per second from the one sender.
    pub rate: f64,
    /// Bytes per datagram (at least the 16-byte stamp).
    pub size: usize,
    pub duration: Duration,
    /// How long receivers keep reading after the last datagram is sent.
    pub drain: Duration,
    /// The forwarder's pid, to read its CPU and memory from /proc.
    pub server_pid: Option<u32>,
    /// How many rooms this load stands for: only labels the report (the benchmark's
    /// meetings put the traffic of that many rooms through one sender).
    pub rooms: usize,
}

/// What the receivers saw.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    pub fanout: usize,
    pub sent: u64,
    pub expected: u64,
    /// Distinct (receiver, counter) pairs.
    pub received: u64,
    pub duplicates: u64,
    pub latency_us: Histogram,
    /// RFC 3550 interarrival jitter, averaged over receivers, in µs.
    pub jitter_us: f64,
    /// Wall time from the first send to the end of the drain.
    pub wall: Duration,
    /// From the first send to the last.
    pub window: Duration,
    /// When sending started, seconds since the Unix epoch.
    pub started_unix_s: f64,
    pub generator_cpu_seconds: f64,
    pub server_cpu_seconds: Option<f64>,
    pub server_peak_rss_bytes: Option<u64>,
    /// Server RSS before the receivers joined.
    pub server_rss_before_bytes: Option<u64>,
    /// From a receiver's first JOIN to the forwarder's answer.
    pub join_us: Histogram,
    /// The generator's CPU share of one core while sending (the drain excluded: it idles).
    pub generator_cpu_pct: f64,
}

impl LoadResult {
    pub fn loss_pct(&self) -> f64 {
        if self.expected == 0 {
            return 0.0;
        }
        100.0 * (self.expected.saturating_sub(self.received)) as f64 / self.expected as f64
    }
}

/// Per-receiver bookkeeping.
struct Receiver {
    socket: UdpSocket,
    seen: Vec<u64>,
    received: u64,
    duplicates: u64,
    /// (send µs, receive µs) of the previous datagram, for jitter.
    last: Option<(u64, u64)>,
    jitter_us: f64,
}

impl Receiver {
    fn take(&mut self, counter: u64, sent_us: u64, now: u64, latency: &mut Histogram) {
        let (word, bit) = ((counter / 64) as usize, counter % 64);
        let Some(slot) = self.seen.get_mut(word) else {
            return; // not a counter this run sent
        };
        if *slot & (1 << bit) != 0 {
            self.duplicates += 1;
            return;
        }
        *slot |= 1 << bit;
        self.received += 1;
        latency.record(now.saturating_sub(sent_us));
        if let Some((last_sent, last_now)) = self.last {
            let d = (now as f64 - last_now as f64) - (sent_us as f64 - last_sent as f64);
            self.jitter_us += (d.abs() - self.jitter_us) / 16.0;
        }
        self.last = Some((sent_us, now));
    }
}

/// Joins `fanout` receivers to the forwarder, sends for `duration` at `rate`, and counts.
pub fn run_load(options: &LoadOptions) -> io::Result<LoadResult> {
    if options.size < STAMP_LEN || options.size > MAX_DATAGRAM {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("size must be {STAMP_LEN}..={MAX_DATAGRAM} bytes"),
        ));
    }
    if options.rate <= 0.0 || options.fanout == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "rate and fanout must be positive",
        ));
    }
    v4(options.forwarder)?;
    let ticks = server_proc::ticks_per_second();
    let cpu_seconds = |pid: u32| server_proc::sample(pid, ticks).map(|s| s.cpu.as_secs_f64());
    let me = std::process::id();
    let total = (options.rate * options.duration.as_secs_f64()).ceil() as u64;
    let mut result = LoadResult {
        fanout: options.fanout,
        ..LoadResult::default()
    };
    result.server_rss_before_bytes = options
        .server_pid
        .and_then(|pid| server_proc::sample(pid, ticks).ok())
        .map(|s| s.rss_kib * 1024);

    let mut receivers = Vec::with_capacity(options.fanout);
    for _ in 0..options.fanout {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        set_buffers(&socket, SOCKET_BUFFER);
        let started = Instant::now();
        join(&socket, options.forwarder)?;
        result.join_us.record(started.elapsed().as_micros() as u64);
        receivers.push(Receiver {
            socket,
            seen: vec![0; total.div_ceil(64) as usize],
            received: 0,
            duplicates: 0,
            last: None,
            jitter_us: 0.0,
        });
    }

    let epoll = Epoll::new()?;
    for (index, receiver) in receivers.iter().enumerate() {
        receiver.socket.set_nonblocking(true)?;
        epoll.add(receiver.socket.as_raw_fd(), index as u64)?;
    }

    let sender = UdpSocket::bind("127.0.0.1:0")?;
    set_buffers(&sender, SOCKET_BUFFER);
    sender.connect(options.forwarder)?;
    let done = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let server_cpu_before = options.server_pid.and_then(|pid| cpu_seconds(pid).ok());
    let generator_cpu_before = cpu_seconds(me)?;
    result.started_unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let started = Instant::now();
    let sending = {
        let (done, sent) = (Arc::clone(&done), Arc::clone(&sent));
        let (rate, size) = (options.rate, options.size);
        std::thread::spawn(move || -> io::Result<()> {
            let result = pace(&sender, rate, size, total, &sent);
            done.store(true, Ordering::Release);
            result
        })
    };

    let mut events = vec![EpollEvent::empty(); 256];
    let mut bufs = vec![[0u8; MAX_DATAGRAM]; RECV_BATCH];
    let mut rx = MultiHeaders::<SockaddrIn>::preallocate(RECV_BATCH, None);
    let mut stamps: Vec<(u64, u64)> = Vec::with_capacity(RECV_BATCH);
    let mut drain_until: Option<Instant> = None;
    loop {
        if drain_until.is_none() && done.load(Ordering::Acquire) {
            drain_until = Some(Instant::now() + options.drain);
            result.window = started.elapsed();
            let busy = cpu_seconds(me)? - generator_cpu_before;
            result.generator_cpu_pct = 100.0 * busy / result.window.as_secs_f64().max(1e-9);
        }
        if drain_until.is_some_and(|t| Instant::now() >= t) {
            break;
        }
        let ready = match epoll_wait(epoll.fd, &mut events, 50) {
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        for event in &events[..ready] {
            let receiver = &mut receivers[event.data() as usize];
            // Level-triggered: one batch per ready socket per round; what is left makes it
            // ready again next round, so no socket starves the others.
            stamps.clear();
            {
                let iovs: Vec<[IoSliceMut<'_>; 1]> = bufs
                    .iter_mut()
                    .map(|b| [IoSliceMut::new(&mut b[..])])
                    .collect();
                match recvmmsg(
                    receiver.socket.as_raw_fd(),
                    &mut rx,
                    iovs.iter(),
                    MsgFlags::MSG_DONTWAIT,
                    None,
                ) {
                    Ok(results) => {
                        for message in results {
                            let datagram = message.iovs().next().unwrap_or(&[]);
                            if let Some(stamp) = read_stamp(datagram) {
                                stamps.push(stamp);
                            }
                        }
                    }
                    Err(Errno::EAGAIN) | Err(Errno::EINTR) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            let now = now_us();
            for (counter, sent_us) in &stamps {
                receiver.take(*counter, *sent_us, now, &mut result.latency_us);
            }
        }
    }
    result.wall = started.elapsed();
    sending
        .join()
        .map_err(|_| io::Error::other("the sender thread panicked"))??;

    result.generator_cpu_seconds = cpu_seconds(me)? - generator_cpu_before;
    if let (Some(pid), Some(before)) = (options.server_pid, server_cpu_before) {
        if let Ok(after) = server_proc::sample(pid, ticks) {
            result.server_cpu_seconds = Some(after.cpu.as_secs_f64() - before);
            result.server_peak_rss_bytes = Some(after.hwm_kib * 1024);
        }
    }
    result.sent = sent.load(Ordering::Acquire);
    result.expected = result.sent * options.fanout as u64;
    result.received = receivers.iter().map(|r| r.received).sum();
    result.duplicates = receivers.iter().map(|r| r.duplicates).sum();
    result.jitter_us = receivers.iter().map(|r| r.jitter_us).sum::<f64>() / receivers.len() as f64;
    Ok(result)
}

/// Asks the forwarder for the stream until it confirms (10 tries, 200 ms apart).
fn join(socket: &UdpSocket, forwarder: SocketAddr) -> io::Result<()> {
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut buf = [0u8; 64];
    for _ in 0..10 {
        socket.send_to(JOIN, forwarder)?;
        match socket.recv_from(&mut buf) {
            Ok((n, from)) if from == forwarder && &buf[..n] == JOINED => return Ok(()),
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        format!("no forwarder answered at {forwarder}"),
    ))
}

/// Sends `total` stamped datagrams at `rate` per second. A late sender catches up in a
/// burst rather than dropping datagrams, so `expected` is always what was sent.
fn pace(
    socket: &UdpSocket,
    rate: f64,
    size: usize,
    total: u64,
    sent: &AtomicU64,
) -> io::Result<()> {
    let mut buf = vec![0u8; size];
    let started = Instant::now();
    for counter in 0..total {
        let due = started + Duration::from_secs_f64(counter as f64 / rate);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        write_stamp(&mut buf, counter, now_us());
        socket.send(&buf)?;
        sent.store(counter + 1, Ordering::Release);
    }
    Ok(())
}

/// An epoll instance, closed when dropped.
struct Epoll {
    fd: i32,
}

impl Epoll {
    fn new() -> io::Result<Epoll> {
        Ok(Epoll {
            fd: epoll_create1(EpollCreateFlags::EPOLL_CLOEXEC)?,
        })
    }

    fn add(&self, fd: i32, data: u64) -> io::Result<()> {
        let mut event = EpollEvent::new(EpollFlags::EPOLLIN, data);
        epoll_ctl(self.fd, EpollOp::EpollCtlAdd, fd, &mut event)?;
        Ok(())
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        let _ = nix::unistd::close(self.fd);
    }
}

/// The load's figures as a report in the format of `loadtest/REPORT-FORMAT.md`.
pub fn report_json(options: &LoadOptions, result: &LoadResult, scenario: &str) -> Value {
    let ms = |us: Option<f64>| us.map(|v| v / 1000.0);
    let forwarded = result.received;
    let server_cpu_us_per_packet = match (result.server_cpu_seconds, forwarded) {
        (Some(cpu), n) if n > 0 => Some(cpu * 1e6 / n as f64),
        _ => None,
    };
    let participants = options.fanout + 1;
    let rss_per_participant = match (result.server_peak_rss_bytes, result.server_rss_before_bytes) {
        (Some(peak), Some(before)) => Some(peak.saturating_sub(before) / participants as u64),
        _ => None,
    };
    let generator_cpu_pct = result.generator_cpu_pct;
    let seconds = options.duration.as_secs_f64().max(1e-9);
    json!({
        "format": "switchyard-loadtest-report/1",
        "target": "udp-floor",
        "scenario": {
            "name": scenario,
            "rooms": options.rooms,
            "publishers": 1,
            "subscribers": options.fanout,
            "video_bitrate_bps": Value::Null,
            "simulcast": false,
            "audio_only": false,
            "duration_s": options.duration.as_secs_f64(),
            "ramp_s": 0,
            "packet_rate": options.rate,
            "packet_bytes": options.size,
        },
        "started_unix_s": result.started_unix_s,
        "window_seconds": result.window.as_secs_f64(),
        "participants": participants,
        "join_time_ms": {
            "p50": ms(result.join_us.quantile(0.5)),
            "p99": ms(result.join_us.quantile(0.99)),
        },
        "expected": result.expected,
        "received": result.received,
        "duplicates": result.duplicates,
        "loss_pct": result.loss_pct(),
        "latency_ms": {
            "p50": ms(result.latency_us.quantile(0.5)),
            "p99": ms(result.latency_us.quantile(0.99)),
            "p999": ms(result.latency_us.quantile(0.999)),
        },
        "jitter_ms": result.jitter_us / 1000.0,
        "freezes_per_min": Value::Null,
        "bitrate_per_subscriber_bps": (result.received as f64 / options.fanout as f64)
            * options.size as f64 * 8.0 / seconds,
        "forwarded_packets": forwarded,
        "server_cpu_seconds": result.server_cpu_seconds,
        "server_cpu_us_per_packet": server_cpu_us_per_packet,
        "server_peak_rss_bytes": result.server_peak_rss_bytes,
        "server_rss_per_participant_bytes": rss_per_participant,
        "generator_cpu_seconds": result.generator_cpu_seconds,
        "generator_cpu_pct": generator_cpu_pct,
        "generator_bound": generator_cpu_pct >= GENERATOR_BOUND_PCT,
        // No thresholds: the benchmark judges loss itself.
        "pass": Value::Null,
        "fail_reasons": [],
        // A receiver that cannot join fails the whole run instead.
        "errors": {"join_failures": 0, "other_failures": 0},
        "by_kind": {"audio": Value::Null, "video": Value::Null},
    })
}

/// A generator using this much of its one core is the bottleneck: its figures then say
/// more about the generator than about the server.
pub const GENERATOR_BOUND_PCT: f64 = 90.0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip() {
        let mut buf = [0u8; 20];
        write_stamp(&mut buf, 0x0102_0304_0506_0708, 42);
        assert_eq!(read_stamp(&buf), Some((0x0102_0304_0506_0708, 42)));
        assert_eq!(read_stamp(&buf[..15]), None);
    }

    #[test]
    fn histogram_buckets_are_contiguous_and_tight() {
        let mut previous = 0;
        for index in 1..59 * 64 {
            let (low, width) = Histogram::bucket(index);
            let (prev_low, prev_width) = Histogram::bucket(previous);
            assert_eq!(prev_low + prev_width, low, "gap before bucket {index}");
            assert_eq!(Histogram::index(low), index);
            assert_eq!(Histogram::index(low + (width - 1)), index);
            // Never wider than 1/64 of its values.
            assert!(
                width == 1 || width * 64 <= low,
                "bucket {index}: {low}+{width}"
            );
            previous = index;
        }
        assert!(Histogram::index(u64::MAX) < 59 * 64);
    }

    #[test]
    fn quantiles_come_from_the_right_bucket() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile(0.5), None);
        for v in 1..=1000u64 {
            h.record(v);
        }
        let p50 = h.quantile(0.5).unwrap();
        let p99 = h.quantile(0.99).unwrap();
        assert!((p50 - 500.0).abs() <= 500.0 / 64.0, "{p50}");
        assert!((p99 - 990.0).abs() <= 990.0 / 64.0, "{p99}");
        assert_eq!(h.quantile(0.0).unwrap(), 1.0);
        let mut other = Histogram::default();
        other.record(5000);
        h.merge(&other);
        assert_eq!(h.count(), 1001);
        assert!(h.quantile(1.0).unwrap() >= 4900.0);
    }

    #[test]
    fn receivers_count_duplicates_and_ignore_foreign_counters() {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut r = Receiver {
            socket,
            seen: vec![0; 2],
            received: 0,
            duplicates: 0,
            last: None,
            jitter_us: 0.0,
        };
        let mut h = Histogram::default();
        r.take(3, 100, 150, &mut h);
        r.take(3, 100, 160, &mut h);
        r.take(127, 200, 260, &mut h);
        r.take(128, 300, 350, &mut h); // beyond what was sent
        assert_eq!((r.received, r.duplicates, h.count()), (2, 1, 2));
        // Transit 50 then 60: |D| = 10, jitter = 10/16.
        assert!((r.jitter_us - 10.0 / 16.0).abs() < 1e-9, "{}", r.jitter_us);
    }

    #[test]
    fn every_datagram_reaches_every_receiver_in_process() {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        set_buffers(&socket, SOCKET_BUFFER);
        let addr = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let forwarder = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || forward(&socket, 64, &stop, None))
        };
        let options = LoadOptions {
            forwarder: addr,
            fanout: 5,
            rate: 500.0,
            size: 200,
            duration: Duration::from_millis(400),
            drain: Duration::from_millis(200),
            server_pid: Some(std::process::id()),
            rooms: 1,
        };
        let result = run_load(&options).unwrap();
        stop.store(true, Ordering::Relaxed);
        let stats = forwarder.join().unwrap().unwrap();
        assert_eq!(result.sent, 200);
        assert_eq!(result.expected, 1000);
        assert_eq!(result.received, 1000, "{result:?}");
        assert_eq!(result.duplicates, 0);
        assert_eq!(stats.received, 200);
        assert_eq!(stats.forwarded, 1000);
        assert_eq!(stats.destinations, 5);
        assert!(result.latency_us.quantile(0.5).unwrap() < 50_000.0);
        let report = report_json(&options, &result, "test");
        // Every key of REPORT-FORMAT.md, present even when null.
        for key in [
            "format",
            "target",
            "scenario",
            "started_unix_s",
            "window_seconds",
            "participants",
            "join_time_ms",
            "expected",
            "received",
            "loss_pct",
            "latency_ms",
            "jitter_ms",
            "freezes_per_min",
            "bitrate_per_subscriber_bps",
            "forwarded_packets",
            "server_cpu_seconds",
            "server_cpu_us_per_packet",
            "server_peak_rss_bytes",
            "server_rss_per_participant_bytes",
            "generator_cpu_seconds",
            "generator_cpu_pct",
            "generator_bound",
            "pass",
            "fail_reasons",
            "errors",
            "by_kind",
        ] {
            assert!(report.get(key).is_some(), "{key} missing from {report:#}");
        }
        let window = report["window_seconds"].as_f64().unwrap();
        assert!((0.35..0.6).contains(&window), "window {window} s");
        assert_eq!(report["loss_pct"], 0.0);
        assert_eq!(report["forwarded_packets"], 1000);
        assert_eq!(report["participants"], 6);
    }
}
