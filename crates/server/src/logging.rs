//! Log lines cannot be turned into a flood by the network: every log statement (each
//! call site, including webrtc-rs's `log` records) gets a token bucket, and what exceeds
//! it is dropped and counted. A periodic summary says how many lines were dropped where,
//! so an operator sees that something was noisy without a line per hostile datagram.
//!
//! Must not: allocate or lock for an event that is within budget beyond one map lookup.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchyard_signal::limit::TokenBucket;
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::layer::{Context, Layer};

/// The target of the summaries themselves, which are never limited.
const SUMMARY_TARGET: &str = "switchyard::log_rate_limit";

/// A layer that vetoes events beyond each call site's budget.
#[derive(Clone)]
pub struct LogRateLimit {
    shared: Arc<Shared>,
}

struct Shared {
    per_second: f64,
    burst: u32,
    sites: Mutex<HashMap<u64, Site>>,
    suppressed_total: AtomicU64,
}

struct Site {
    bucket: TokenBucket,
    /// Dropped since the last summary.
    suppressed: u64,
    /// `target file:line`, for the summary.
    name: String,
}

impl LogRateLimit {
    /// At most `burst` lines at once and `per_second` on average from each call site.
    pub fn new(per_second: u32, burst: u32) -> Self {
        LogRateLimit {
            shared: Arc::new(Shared {
                per_second: f64::from(per_second),
                burst,
                sites: Mutex::default(),
                suppressed_total: AtomicU64::new(0),
            }),
        }
    }

    /// Lines dropped since start.
    pub fn suppressed_total(&self) -> u64 {
        self.shared.suppressed_total.load(Ordering::Relaxed)
    }

    fn allow(&self, target: &str, file: Option<&str>, line: Option<u32>, now: Instant) -> bool {
        if target == SUMMARY_TARGET {
            return true;
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (target, file, line).hash(&mut hasher);
        let key = hasher.finish();
        let mut sites = self.shared.sites.lock().unwrap_or_else(|e| e.into_inner());
        let site = sites.entry(key).or_insert_with(|| Site {
            bucket: TokenBucket::new(self.shared.per_second, self.shared.burst),
            suppressed: 0,
            name: format!("{target} {}:{}", file.unwrap_or("?"), line.unwrap_or(0)),
        });
        if site.bucket.try_take(now) {
            return true;
        }
        site.suppressed += 1;
        self.shared.suppressed_total.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// The call sites that dropped lines since the last call, noisiest first, and resets
    /// their counts.
    pub fn take_suppressed(&self) -> Vec<(String, u64)> {
        let mut sites = self.shared.sites.lock().unwrap_or_else(|e| e.into_inner());
        let mut noisy: Vec<(String, u64)> = sites
            .values_mut()
            .filter(|s| s.suppressed > 0)
            .map(|s| (s.name.clone(), std::mem::take(&mut s.suppressed)))
            .collect();
        noisy.sort_by_key(|(_, dropped)| std::cmp::Reverse(*dropped));
        noisy
    }

    /// Logs, every `every`, how many lines were dropped and where (until the process ends).
    pub async fn report(self, every: Duration) {
        let mut ticks = tokio::time::interval(every);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let noisy = self.take_suppressed();
            if noisy.is_empty() {
                continue;
            }
            let total: u64 = noisy.iter().map(|(_, n)| n).sum();
            let worst: Vec<String> = noisy
                .iter()
                .take(3)
                .map(|(site, n)| format!("{n} from {site}"))
                .collect();
            tracing::warn!(
                target: SUMMARY_TARGET,
                dropped = total,
                "log lines over the rate limit were dropped (log.lines_per_second): {}",
                worst.join("; ")
            );
        }
    }
}

impl<S: Subscriber> Layer<S> for LogRateLimit {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        // A `log` record (webrtc-rs) carries its real origin in its fields.
        let normalized = event.normalized_metadata();
        let metadata = normalized.as_ref().unwrap_or_else(|| event.metadata());
        self.allow(
            metadata.target(),
            metadata.file(),
            metadata.line(),
            Instant::now(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use tracing_subscriber::prelude::*;

    /// Counts the events that get through.
    struct Count(Arc<AtomicUsize>);

    impl<S: Subscriber> Layer<S> for Count {
        fn on_event(&self, _event: &Event<'_>, _ctx: Context<'_, S>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_noisy_call_site_is_cut_to_its_budget_and_others_are_not() {
        let limit = LogRateLimit::new(10, 50);
        let seen = Arc::new(AtomicUsize::new(0));
        let subscriber = tracing_subscriber::registry()
            .with(limit.clone())
            .with(Count(seen.clone()));
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..20_000 {
                tracing::warn!(datagram = i, "malformed STUN");
            }
            tracing::info!("a different line");
        });
        let through = seen.load(Ordering::Relaxed);
        // The burst, what refilled during the loop (it takes well under a second), and the
        // other line.
        assert!((51..=70).contains(&through), "{through} lines logged");
        assert_eq!(limit.suppressed_total(), 20_001 - through as u64);
        let noisy = limit.take_suppressed();
        assert_eq!(noisy.len(), 1);
        assert!(noisy[0].0.contains("logging.rs"), "{noisy:?}");
        assert!(limit.take_suppressed().is_empty(), "counts reset");
    }

    #[test]
    fn log_records_are_limited_by_their_own_origin() {
        let limit = LogRateLimit::new(1, 5);
        let now = Instant::now();
        for _ in 0..5 {
            assert!(limit.allow("webrtc_ice::udp_mux", Some("mod.rs"), Some(125), now));
        }
        assert!(!limit.allow("webrtc_ice::udp_mux", Some("mod.rs"), Some(125), now));
        assert!(limit.allow("webrtc_srtp::session", Some("mod.rs"), Some(101), now));
        assert!(
            limit.allow(SUMMARY_TARGET, None, None, now),
            "summaries always pass"
        );
    }
}
