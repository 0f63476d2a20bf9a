//! The Prometheus exposition of [`MediaStats`]: a registry whose collector reads the
//! router's atomics when scraped, so the media path keeps its plain `Relaxed` counters and
//! never learns that Prometheus exists. Every name starts with `switchyard_`.
//!
//! Rendering is pure computation except for the process collector, which reads
//! `/proc/self` (Linux only); call [`Metrics::render`] off the async workers if that matters.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{Registry, TextEncoder};

use crate::{
    DataDrop, DropReason, KeyframeRequest, LayerState, Live, MediaKind, MediaStats, ResendSkip,
    LAYER_QUALITIES,
};

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Prefix of every metric name.
pub const NAMESPACE: &str = "switchyard";

/// A registry of everything Switchyard exports; build once, render per scrape.
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    pub fn new(stats: Arc<MediaStats>) -> Metrics {
        let registry = Registry::new();
        let register = |c: Box<dyn Collector>| {
            registry
                .register(c)
                .expect("Switchyard's metric names are unique and valid")
        };
        for histogram in stats.quality.collectors() {
            register(histogram);
        }
        register(Box::new(MediaCollector::new(stats)));
        // CPU seconds, resident and virtual memory, open fds, threads, start time.
        #[cfg(target_os = "linux")]
        register(Box::new(
            prometheus::process_collector::ProcessCollector::new(
                std::process::id() as i32,
                NAMESPACE,
            ),
        ));
        Metrics { registry }
    }

    /// The current values in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        TextEncoder::new()
            .encode_utf8(&self.registry.gather(), &mut out)
            .expect("families built here encode");
        out
    }
}

/// Reads [`MediaStats`] into metric families at scrape time.
struct MediaCollector {
    stats: Arc<MediaStats>,
    descs: Vec<Desc>,
}

impl MediaCollector {
    fn new(stats: Arc<MediaStats>) -> MediaCollector {
        // The descriptors come from one collection, so they cannot drift from what
        // `collect` produces.
        let descs = families(&stats)
            .iter()
            .map(|family| {
                let labels = family
                    .get_metric()
                    .first()
                    .map(|m| m.get_label().iter().map(|l| l.name().to_owned()).collect())
                    .unwrap_or_default();
                Desc::new(
                    family.name().to_owned(),
                    family.help().to_owned(),
                    labels,
                    HashMap::new(),
                )
                .expect("valid metric descriptor")
            })
            .collect();
        MediaCollector { stats, descs }
    }
}

impl Collector for MediaCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        families(&self.stats)
    }
}

/// One series: its label pairs and value.
type Sample = (Vec<(&'static str, &'static str)>, f64);

fn family(
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = Sample>,
) -> MetricFamily {
    let metrics = samples
        .into_iter()
        .map(|(labels, value)| {
            let mut metric = proto::Metric::from_label(
                labels
                    .into_iter()
                    .map(|(name, value)| {
                        let mut pair = proto::LabelPair::default();
                        pair.set_name(name.to_owned());
                        pair.set_value(value.to_owned());
                        pair
                    })
                    .collect(),
            );
            match kind {
                MetricType::COUNTER => {
                    let mut counter = proto::Counter::default();
                    counter.set_value(value);
                    metric.set_counter(counter);
                }
                _ => {
                    let mut gauge = proto::Gauge::default();
                    gauge.set_value(value);
                    metric.set_gauge(gauge);
                }
            }
            metric
        })
        .collect();
    let mut family = MetricFamily::default();
    family.set_name(format!("{NAMESPACE}_{name}"));
    family.set_help(help.to_owned());
    family.set_field_type(kind);
    family.set_metric(metrics);
    family
}

fn one(value: f64) -> Vec<Sample> {
    vec![(Vec::new(), value)]
}

fn by_kind(value: impl Fn(MediaKind) -> u64) -> Vec<Sample> {
    MediaKind::ALL
        .iter()
        .map(|k| (vec![("kind", k.as_str())], value(*k) as f64))
        .collect()
}

fn by_request(value: impl Fn(KeyframeRequest) -> u64) -> Vec<Sample> {
    KeyframeRequest::ALL
        .iter()
        .map(|r| (vec![("type", r.as_str())], value(*r) as f64))
        .collect()
}

fn families(s: &MediaStats) -> Vec<MetricFamily> {
    use MetricType::{COUNTER, GAUGE};
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64;
    let live = |kind| one(s.live(kind) as f64);
    vec![
        family("rooms", "Rooms open.", GAUGE, live(Live::Rooms)),
        family(
            "participants",
            "Participants connected (each has a publisher and a subscriber connection).",
            GAUGE,
            live(Live::Participants),
        ),
        family(
            "published_tracks",
            "Tracks being published (a simulcast track counts once).",
            GAUGE,
            live(Live::UpTracks),
        ),
        family(
            "subscriptions",
            "Tracks being forwarded to a subscriber (one per subscriber and track).",
            GAUGE,
            live(Live::DownTracks),
        ),
        family(
            "simulcast_layers",
            "Simulcast layers of published tracks, by layer and state: `live` (frames at \
             a steady rate), `sporadic` (a frame now and then; picked only when no layer of \
             the track is live), `idle` (no frames: nothing, or padding only).",
            GAUGE,
            LAYER_QUALITIES
                .iter()
                .enumerate()
                .flat_map(|(layer, quality)| {
                    LayerState::ALL.iter().map(move |state| {
                        (
                            vec![("quality", *quality), ("state", state.as_str())],
                            s.layers(layer, *state) as f64,
                        )
                    })
                }),
        ),
        family(
            "received_packets_total",
            "RTP packets received from publishers.",
            COUNTER,
            by_kind(|k| s.received[k].packets()),
        ),
        family(
            "received_bytes_total",
            "RTP payload bytes received from publishers (headers and SRTP excluded).",
            COUNTER,
            by_kind(|k| s.received[k].bytes()),
        ),
        family(
            "received_padding_packets_total",
            "Padding-only RTP packets received from publishers (bandwidth probing; never \
             forwarded, and no sign that a layer is alive).",
            COUNTER,
            one(load(&s.received_padding)),
        ),
        family(
            "forwarded_packets_total",
            "RTP packets sent to subscribers, retransmissions included.",
            COUNTER,
            by_kind(|k| s.forwarded[k].packets()),
        ),
        family(
            "forwarded_bytes_total",
            "RTP payload bytes sent to subscribers (headers and SRTP excluded).",
            COUNTER,
            by_kind(|k| s.forwarded[k].bytes()),
        ),
        family(
            "dropped_packets_total",
            "Packets not forwarded, by reason (per subscriber, except `duplicate`, which \
             counts a publisher's packet once).",
            COUNTER,
            DropReason::ALL
                .iter()
                .map(|r| (vec![("reason", r.as_str())], s.dropped.get(*r) as f64)),
        ),
        family(
            "nacks_received_total",
            "NACK messages received from subscribers.",
            COUNTER,
            one(load(&s.nacks_received)),
        ),
        family(
            "nacked_packets_total",
            "Packets subscribers' NACKs asked to be resent.",
            COUNTER,
            one(load(&s.nacked_packets)),
        ),
        family(
            "retransmitted_packets_total",
            "Packets resent to subscribers from the server's cache after a NACK.",
            COUNTER,
            one(load(&s.retransmissions_sent)),
        ),
        family(
            "nack_resends_skipped_total",
            "NACKed packets not resent, by reason: `recent` (resent moments ago), \
             `unavailable` (never sent, or no longer cached), `over_limit` (beyond \
             rtc.nack_max_packets_per_request or rtc.nack_max_resends_per_second).",
            COUNTER,
            ResendSkip::ALL.iter().map(|r| {
                (
                    vec![("reason", r.as_str())],
                    s.resends_skipped.get(*r) as f64,
                )
            }),
        ),
        family(
            "keyframe_requests_received_total",
            "Keyframe requests received from subscribers, by type (pli, fir).",
            COUNTER,
            by_request(|r| s.keyframe_requests_received.get(r)),
        ),
        family(
            "keyframe_requests_sent_total",
            "Keyframe requests sent to publishers, by type (the server asks with PLI).",
            COUNTER,
            by_request(|r| s.keyframe_requests_sent.get(r)),
        ),
        family(
            "data_messages_total",
            "Data-channel messages: `in` from senders, `out` the copies written to receivers.",
            COUNTER,
            [("in", &s.data.received), ("out", &s.data.sent)]
                .into_iter()
                .map(|(d, c)| (vec![("direction", d)], c.packets() as f64)),
        ),
        family(
            "data_bytes_total",
            "Data-channel bytes: `in` the messages from senders, `out` the copies written \
             to receivers (with the server's envelope).",
            COUNTER,
            [("in", &s.data.received), ("out", &s.data.sent)]
                .into_iter()
                .map(|(d, c)| (vec![("direction", d)], c.bytes() as f64)),
        ),
        family(
            "data_dropped_total",
            "Data-channel messages not relayed, by reason: `forbidden` (no can_publish_data), \
             `too_large`, `invalid` (a bad envelope), and per receiver `queue_full` (a lossy \
             message for a full queue) and `reset` (a reliable one lost to a channel reset).",
            COUNTER,
            DataDrop::ALL
                .iter()
                .map(|r| (vec![("reason", r.as_str())], s.data.dropped(*r) as f64)),
        ),
        family(
            "data_channel_resets_total",
            "Receivers' reliable data channels reset because they fell further behind than \
             data.reliable_queue_bytes.",
            COUNTER,
            one(load(&s.data.resets)),
        ),
        // Separate counters rather than one with a `result` label: deliveries and drops
        // count events, failures count attempts, so their sum would mean nothing.
        family(
            "webhook_delivered_total",
            "Webhook events the receiver accepted (2xx).",
            COUNTER,
            one(load(&s.webhooks.delivered)),
        ),
        family(
            "webhook_failed_attempts_total",
            "Webhook requests that failed (connection error, timeout, non-2xx); each retry \
             counts.",
            COUNTER,
            one(load(&s.webhooks.failed_attempts)),
        ),
        family(
            "webhook_dropped_total",
            "Webhook events given up after the last retry or dropped on a full queue.",
            COUNTER,
            one(load(&s.webhooks.dropped)),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::Live;

    /// The value of the sample `name{labels}` in `text`, labels written as Prometheus does.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn render_reads_the_counters_at_scrape_time() {
        let stats = Arc::new(MediaStats::default());
        let metrics = Metrics::new(stats.clone());
        let before = metrics.render();
        assert_eq!(
            sample(
                &before,
                "switchyard_forwarded_packets_total{kind=\"video\"}"
            ),
            Some(0.0)
        );

        let _room = stats.live_guard(Live::Rooms);
        let _p = stats.live_guard(Live::Participants);
        stats.received[MediaKind::Audio].add(160);
        stats.forwarded[MediaKind::Video].add(1000);
        stats.forwarded[MediaKind::Video].add(1000);
        stats.dropped.add_n(DropReason::QueueFull, 3);
        stats.keyframe_requests_received.add(KeyframeRequest::Fir);
        stats.keyframe_requests_sent.add(KeyframeRequest::Pli);
        stats.nacks_received.fetch_add(1, Ordering::Relaxed);
        stats.nacked_packets.fetch_add(4, Ordering::Relaxed);
        stats.retransmissions_sent.fetch_add(3, Ordering::Relaxed);
        stats
            .webhooks
            .failed_attempts
            .fetch_add(2, Ordering::Relaxed);
        stats
            .quality
            .observe_forwarding_latency(MediaKind::Video, Duration::from_micros(700));
        let low = stats.layer_guard(0, LayerState::Live);
        let mut high = stats.layer_guard(2, LayerState::Live);
        high = {
            drop(high);
            stats.layer_guard(2, LayerState::Idle)
        };
        stats.received_padding.fetch_add(5, Ordering::Relaxed);

        let text = metrics.render();
        for (series, value) in [
            ("switchyard_rooms", 1.0),
            ("switchyard_participants", 1.0),
            ("switchyard_subscriptions", 0.0),
            ("switchyard_received_packets_total{kind=\"audio\"}", 1.0),
            ("switchyard_received_bytes_total{kind=\"audio\"}", 160.0),
            ("switchyard_received_packets_total{kind=\"video\"}", 0.0),
            ("switchyard_forwarded_packets_total{kind=\"video\"}", 2.0),
            ("switchyard_forwarded_bytes_total{kind=\"video\"}", 2000.0),
            (
                "switchyard_dropped_packets_total{reason=\"queue_full\"}",
                3.0,
            ),
            (
                "switchyard_dropped_packets_total{reason=\"duplicate\"}",
                0.0,
            ),
            (
                "switchyard_keyframe_requests_received_total{type=\"fir\"}",
                1.0,
            ),
            (
                "switchyard_keyframe_requests_received_total{type=\"pli\"}",
                0.0,
            ),
            ("switchyard_keyframe_requests_sent_total{type=\"pli\"}", 1.0),
            ("switchyard_nacks_received_total", 1.0),
            ("switchyard_nacked_packets_total", 4.0),
            ("switchyard_retransmitted_packets_total", 3.0),
            ("switchyard_webhook_failed_attempts_total", 2.0),
            ("switchyard_webhook_delivered_total", 0.0),
            (
                "switchyard_forwarding_latency_seconds_bucket{kind=\"video\",le=\"0.001\"}",
                1.0,
            ),
            (
                "switchyard_forwarding_latency_seconds_bucket{kind=\"video\",le=\"0.0005\"}",
                0.0,
            ),
            (
                "switchyard_forwarding_latency_seconds_count{kind=\"audio\"}",
                0.0,
            ),
            ("switchyard_subscriber_rtt_seconds_count", 0.0),
            (
                "switchyard_simulcast_layers{quality=\"low\",state=\"live\"}",
                1.0,
            ),
            (
                "switchyard_simulcast_layers{quality=\"high\",state=\"live\"}",
                0.0,
            ),
            (
                "switchyard_simulcast_layers{quality=\"high\",state=\"idle\"}",
                1.0,
            ),
            ("switchyard_received_padding_packets_total", 5.0),
        ] {
            assert_eq!(sample(&text, series), Some(value), "{series} in:\n{text}");
        }
        assert!(text.contains("# TYPE switchyard_forwarded_packets_total counter"));
        assert!(text.contains("# TYPE switchyard_rooms gauge"));
        assert!(text.contains("# TYPE switchyard_subscriber_loss_ratio histogram"));
        drop((low, high));
        let text = metrics.render();
        for state in ["live", "sporadic", "idle"] {
            let series =
                format!("switchyard_simulcast_layers{{quality=\"high\",state=\"{state}\"}}");
            assert_eq!(
                sample(&text, &series),
                Some(0.0),
                "{series}: a track that ended"
            );
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn process_metrics_are_prefixed_and_plausible() {
        let text = Metrics::new(Arc::default()).render();
        let rss = sample(&text, "switchyard_process_resident_memory_bytes").expect(&text);
        assert!(
            rss > 1_000_000.0,
            "a Rust test binary uses more than 1 MB: {rss}"
        );
        assert!(sample(&text, "switchyard_process_cpu_seconds_total").is_some());
    }

    #[test]
    fn every_name_is_prefixed() {
        let text = Metrics::new(Arc::default()).render();
        let names: Vec<_> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .collect();
        assert!(names.len() > 20, "{names:?}");
        for name in names {
            assert!(name.starts_with("switchyard_"), "{name}");
        }
    }
}
