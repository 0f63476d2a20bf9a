//! The TCP side of the server: accepting connections within limits a client cannot get
//! around by simply not finishing what it started.
//!
//! - A connection must send a complete request head within `server.http_header_timeout_ms`
//!   (a first request, or the next one on a kept-alive connection): one that never sends
//!   anything, or dribbles its headers (slowloris), is closed.
//! - Per client IP, at most `server.max_unauthenticated_per_ip` connections are open that
//!   have not authenticated; a WebSocket stops counting once its `join` succeeded (its
//!   token proved who it is, and signaling has its own join timeout before that).
//! - Running out of file descriptors (EMFILE) is survived: the accept loop pauses instead
//!   of spinning, and the process starts with its soft limit raised to the hard one.
//!
//! HTTP/1.1 only: browsers' WebSockets, the admin API's clients and reverse proxies all
//! speak it, and one protocol is one set of timeouts to get right.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// What bounds one client's connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Time to send a complete request head.
    pub header_timeout: Duration,
    /// Open connections per IP that have not authenticated (0: no limit).
    pub max_unauthenticated_per_ip: usize,
    /// After `shutdown`, how long open HTTP exchanges get to finish.
    pub drain_timeout: Duration,
}

/// Counts each IP's unauthenticated connections.
#[derive(Debug)]
pub struct ConnectionTracker {
    max_per_ip: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// One accepted connection's place in its IP's count, until it authenticates or closes.
#[derive(Debug)]
pub struct ConnectionSlot {
    tracker: Arc<ConnectionTracker>,
    ip: IpAddr,
    counted: AtomicBool,
}

impl ConnectionTracker {
    pub fn new(max_per_ip: usize) -> Arc<Self> {
        Arc::new(ConnectionTracker {
            max_per_ip,
            counts: Mutex::default(),
        })
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for a new connection from `ip`, or `None` if `ip` has its limit open.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ConnectionSlot> {
        let mut counts = self.counts();
        let count = counts.entry(ip).or_default();
        if self.max_per_ip > 0 && *count >= self.max_per_ip {
            return None;
        }
        *count += 1;
        Some(ConnectionSlot {
            tracker: self.clone(),
            ip,
            counted: AtomicBool::new(true),
        })
    }

    /// Unauthenticated connections open from `ip`.
    pub fn open_from(&self, ip: IpAddr) -> usize {
        self.counts().get(&ip).copied().unwrap_or(0)
    }

    fn release(&self, ip: IpAddr) {
        let mut counts = self.counts();
        if let Some(count) = counts.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&ip);
            }
        }
    }
}

impl ConnectionSlot {
    /// The address the connection comes from.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// The connection proved who it is: it no longer counts against its IP.
    pub fn authenticated(&self) {
        if self.counted.swap(false, Ordering::Relaxed) {
            self.tracker.release(self.ip);
        }
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.authenticated();
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting and waits
/// for open HTTP exchanges to finish (upgraded WebSockets have their own shutdown).
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let tracker = ConnectionTracker::new(limits.max_unauthenticated_per_ip);
    let connections = TaskTracker::new();
    let (stop, stopping) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors (or a connection that died before accept): pause
                    // rather than spin; closing connections frees descriptors meanwhile.
                    tracing::warn!(error = %e, "accepting a TCP connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Some(slot) = tracker.admit(peer.ip()) else {
            tracing::info!(
                ip = %peer.ip(),
                limit = limits.max_unauthenticated_per_ip,
                "refused a connection: too many unauthenticated connections from one address \
                 (server.max_unauthenticated_per_ip)"
            );
            continue;
        };
        let _ = stream.set_nodelay(true);
        let slot = Arc::new(slot);
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(slot.clone());
            app.clone().oneshot(request)
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let mut stopping = stopping.clone();
        connections.spawn(async move {
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = stopping.changed() => {
                    // Finish the exchange in progress, take no new request.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "HTTP connection ended");
            }
        });
    }
    drop(listener);
    let _ = stop.send(true);
    connections.close();
    if tokio::time::timeout(limits.drain_timeout, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections still open at the shutdown deadline");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_ip_has_its_own_limit_and_authenticated_slots_stop_counting() {
        let tracker = ConnectionTracker::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = tracker.admit(a).unwrap();
        let second = tracker.admit(a).unwrap();
        assert!(tracker.admit(a).is_none(), "a third from one address");
        let other = tracker.admit(b).expect("another address is not affected");
        first.authenticated();
        first.authenticated();
        assert_eq!(tracker.open_from(a), 1, "counted down once");
        let third = tracker
            .admit(a)
            .expect("room again after one authenticated");
        drop(second);
        drop(third);
        drop(first);
        assert_eq!(tracker.open_from(a), 0);
        drop(other);
        assert!(
            tracker.counts().is_empty(),
            "nothing kept for gone addresses"
        );
        let unlimited = ConnectionTracker::new(0);
        let many: Vec<_> = (0..100).map(|_| unlimited.admit(a).unwrap()).collect();
        assert_eq!(unlimited.open_from(a), 100);
        drop(many);
    }
}
