//! `GET /metrics` after a real session: three webrtc-rs participants exchange audio and
//! video through the server for a few seconds, and what Prometheus would scrape must
//! describe that session: the gauges count what is there, the forwarded counters agree
//! with what the clients received, every forwarded packet is timed, the subscribers'
//! reports fill the quality histograms. The Grafana dashboard may only query what is
//! exposed. With a bearer token configured, a scrape without it is refused.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use common::{http_get, wait_until, ClientOptions, RtcClient, TestServer};

/// One scraped sample.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A scrape in the Prometheus text format, parsed.
struct Scrape {
    samples: Vec<Sample>,
    /// `# TYPE` of each family.
    types: HashMap<String, String>,
    text: String,
}

impl Scrape {
    fn parse(text: String) -> Scrape {
        let mut samples = Vec::new();
        let mut types = HashMap::new();
        for line in text.lines() {
            if let Some(typ) = line.strip_prefix("# TYPE ") {
                let (name, typ) = typ.split_once(' ').expect("# TYPE name type");
                types.insert(name.to_owned(), typ.to_owned());
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("series value");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let inner = rest.strip_suffix('}').expect("labels end with }");
                    let labels = inner
                        .split("\",")
                        .filter(|p| !p.is_empty())
                        .map(|pair| {
                            let (k, v) = pair.split_once("=\"").expect("label=\"value\"");
                            (k.to_owned(), v.trim_end_matches('"').to_owned())
                        })
                        .collect();
                    (name, labels)
                }
                None => (series, BTreeMap::new()),
            };
            samples.push(Sample {
                name: name.to_owned(),
                labels,
                value: value.parse().expect("numeric sample value"),
            });
        }
        Scrape {
            samples,
            types,
            text,
        }
    }

    /// The sample with exactly these labels; panics (with the scrape) if absent.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == wanted)
            .map(|s| s.value)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?} in:\n{}", self.text))
    }

    /// The sum over every series of `name` (e.g. a counter across its labels).
    fn sum(&self, name: &str) -> f64 {
        let matching: Vec<f64> = self
            .samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.value)
            .collect();
        assert!(!matching.is_empty(), "no series {name} in:\n{}", self.text);
        matching.iter().sum()
    }

    fn names(&self) -> HashSet<&str> {
        self.samples.iter().map(|s| s.name.as_str()).collect()
    }

    /// Every value label `label` takes in family `name`.
    fn label_values(&self, name: &str, label: &str) -> HashSet<&str> {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter_map(|s| s.labels.get(label).map(String::as_str))
            .collect()
    }
}

async fn scrape(server: &TestServer) -> Scrape {
    let (status, headers, body) = http_get(server.http, "/metrics", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        headers.get("content-type").map(String::as_str),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    Scrape::parse(body)
}

/// Packets the clients counted, summed over everyone, of tracks whose id ends in `suffix`.
fn client_packets(clients: &[&RtcClient], suffix: &str) -> u64 {
    clients
        .iter()
        .flat_map(|c| c.snapshot())
        .filter(|((_, track), _)| track.ends_with(suffix))
        .map(|(_, n)| n)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_describe_a_real_session() {
    let server = TestServer::start().await;
    let room = "it-metrics";
    // Clients that answer the server's Sender Reports, as browsers do, so their Receiver
    // Reports carry what the RTT needs. Their renegotiations all happen before measuring.
    let options = || ClientOptions {
        read_sender_reports: true,
        ..ClientOptions::default()
    };
    let mut alice = RtcClient::join_opts(&server, room, "alice", options()).await;
    let mut bob = RtcClient::join_opts(&server, room, "bob", options()).await;
    let mut carol = RtcClient::join_opts(&server, room, "carol", options()).await;
    {
        let everyone = [&alice, &bob, &carol];
        wait_until(
            "every client receives 4 remote tracks",
            Duration::from_secs(30),
            || {
                everyone.iter().all(|me| {
                    everyone.iter().filter(|p| p.id != me.id).all(|p| {
                        me.count(&p.id, &format!("{}-mic", p.name)) >= 25
                            && me.count(&p.id, &format!("{}-cam", p.name)) >= 25
                    })
                })
            },
        )
        .await;
    }
    // Feedback an operator's counters must show: one NACK, one PLI, one FIR, each about
    // one stream only (the server must not read them as about the others).
    let seen = alice
        .seen(&bob.id, "bob-cam")
        .expect("alice receives bob-cam");
    alice
        .send_nack(seen.ssrc, seen.last_seq.wrapping_sub(3))
        .await;
    alice.send_keyframe_request(seen.ssrc, false).await;
    bob.send_keyframe_request(carol_cam_ssrc(&bob, &carol), true)
        .await;
    // About 5 s of media in all, so every subscriber has sent several receiver reports
    // (webrtc-rs: one a second) answering several sender reports.
    tokio::time::sleep(Duration::from_secs(4)).await;

    // While media flows: what is there, and every family present.
    let live = scrape(&server).await;
    for (name, value) in [
        ("switchyard_rooms", 1.0),
        ("switchyard_participants", 3.0),
        ("switchyard_published_tracks", 6.0),
        ("switchyard_subscriptions", 12.0),
    ] {
        assert_eq!(live.get(name, &[]), value, "{name}");
        assert_eq!(live.types[name], "gauge", "{name}");
    }
    let kinds = HashSet::from(["audio", "video"]);
    for name in [
        "switchyard_received_packets_total",
        "switchyard_received_bytes_total",
        "switchyard_forwarded_packets_total",
        "switchyard_forwarded_bytes_total",
        "switchyard_forwarding_latency_seconds_count",
        "switchyard_subscriber_jitter_seconds_count",
        "switchyard_subscriber_loss_ratio_count",
    ] {
        assert_eq!(live.label_values(name, "kind"), kinds, "{name}");
    }
    let reasons: HashSet<&str> = switchyard_stats::DropReason::ALL
        .iter()
        .map(|r| r.as_str())
        .collect();
    assert_eq!(
        live.label_values("switchyard_dropped_packets_total", "reason"),
        reasons
    );
    let request_types = HashSet::from(["pli", "fir"]);
    for name in [
        "switchyard_keyframe_requests_received_total",
        "switchyard_keyframe_requests_sent_total",
    ] {
        assert_eq!(live.label_values(name, "type"), request_types, "{name}");
    }
    for (name, typ) in [
        ("switchyard_nacks_received_total", "counter"),
        ("switchyard_nacked_packets_total", "counter"),
        ("switchyard_retransmitted_packets_total", "counter"),
        ("switchyard_webhook_delivered_total", "counter"),
        ("switchyard_webhook_failed_attempts_total", "counter"),
        ("switchyard_webhook_dropped_total", "counter"),
        ("switchyard_forwarding_latency_seconds", "histogram"),
        ("switchyard_subscriber_rtt_seconds", "histogram"),
        ("switchyard_subscriber_jitter_seconds", "histogram"),
        ("switchyard_subscriber_loss_ratio", "histogram"),
        ("switchyard_process_cpu_seconds_total", "counter"),
        ("switchyard_process_resident_memory_bytes", "gauge"),
    ] {
        assert_eq!(
            live.types.get(name).map(String::as_str),
            Some(typ),
            "{name}"
        );
    }
    assert!(live.get("switchyard_process_cpu_seconds_total", &[]) > 0.0);
    assert!(
        live.get("switchyard_process_resident_memory_bytes", &[]) > 10e6,
        "a server with six peer connections holds more than 10 MB"
    );
    assert!(live.sum("switchyard_forwarding_latency_seconds_count") > 0.0);
    dashboard_queries_only_what_is_exposed(&live);

    // The feedback sent above, each counted once and about its own stream only. The
    // clients' NACK generators may add NACKs of their own if loopback loses a packet,
    // so those are bounds; nobody else sends PLI or FIR.
    let nacks = live.get("switchyard_nacks_received_total", &[]);
    let nacked = live.get("switchyard_nacked_packets_total", &[]);
    let resent = live.get("switchyard_retransmitted_packets_total", &[]);
    assert!(
        nacks >= 1.0 && nacked >= nacks,
        "{nacks} NACKs for {nacked}"
    );
    assert!(
        resent >= 1.0 && resent <= nacked,
        "{resent} resent for {nacked} asked"
    );
    assert_eq!(
        live.get(
            "switchyard_keyframe_requests_received_total",
            &[("type", "pli")]
        ),
        1.0
    );
    assert_eq!(
        live.get(
            "switchyard_keyframe_requests_received_total",
            &[("type", "fir")]
        ),
        1.0
    );
    // One PLI per new subscriber at least (each must start at a keyframe), none as FIR.
    assert!(
        live.get(
            "switchyard_keyframe_requests_sent_total",
            &[("type", "pli")]
        ) >= 1.0
    );
    assert_eq!(
        live.get(
            "switchyard_keyframe_requests_sent_total",
            &[("type", "fir")]
        ),
        0.0
    );

    // Every subscriber reports on every stream it receives about once a second.
    let rtt_samples = live.get("switchyard_subscriber_rtt_seconds_count", &[]);
    assert!(rtt_samples >= 12.0, "RTT samples: {rtt_samples}");
    // The median, not the mean: a stream's first Sender Report can reach the test client
    // before its receiver starts reading RTCP, and is then answered as if received late
    // (measured: a few samples of 0.5-1 s, all in the first second, none after).
    let rtt_within_25ms = live.get(
        "switchyard_subscriber_rtt_seconds_bucket",
        &[("le", "0.025")],
    );
    assert!(
        rtt_within_25ms >= rtt_samples / 2.0,
        "loopback RTT is mostly under 25 ms even on busy cores: {rtt_within_25ms} of \
         {rtt_samples}"
    );
    let mean_rtt = live.get("switchyard_subscriber_rtt_seconds_sum", &[]) / rtt_samples;
    for kind in ["audio", "video"] {
        let reports = live.get("switchyard_subscriber_loss_ratio_count", &[("kind", kind)]);
        assert!(reports >= 6.0, "{kind} loss reports: {reports}");
        let mean_loss =
            live.get("switchyard_subscriber_loss_ratio_sum", &[("kind", kind)]) / reports;
        assert!(mean_loss < 0.05, "{kind} loss on loopback: {mean_loss}");
        let jitter = live.get(
            "switchyard_subscriber_jitter_seconds_count",
            &[("kind", kind)],
        );
        assert_eq!(jitter, reports, "one jitter per report block");
    }

    // Stop the media and let it drain, so the server's counters and the clients' counts
    // describe the same finished stream.
    for client in [&mut alice, &mut bob, &mut carol] {
        client.stop_media();
    }
    let everyone = [&alice, &bob, &carol];
    let mut last = (u64::MAX, u64::MAX);
    wait_until(
        "the clients' counts settle",
        Duration::from_secs(10),
        || {
            let now = (
                client_packets(&everyone, "-cam"),
                client_packets(&everyone, "-mic"),
            );
            std::mem::replace(&mut last, now) == now
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Counts first: whatever a client counted, the server had counted before it.
    let client_video = client_packets(&everyone, "-cam") as f64;
    let client_audio = client_packets(&everyone, "-mic") as f64;
    let settled = scrape(&server).await;
    let forwarded = |kind| settled.get("switchyard_forwarded_packets_total", &[("kind", kind)]);
    let received = |kind| settled.get("switchyard_received_packets_total", &[("kind", kind)]);
    let (forwarded_video, forwarded_audio) = (forwarded("video"), forwarded("audio"));
    eprintln!(
        "video: received {} forwarded {forwarded_video} clients {client_video}; \
         audio: received {} forwarded {forwarded_audio} clients {client_audio}",
        received("video"),
        received("audio"),
    );
    // Every packet a client got was sent by the server and counted; the server counts
    // only what its connections sent (not the writes webrtc-rs accepted before SRTP was
    // up). Measured here: equal. The slack allows loopback loss, which the clients' own
    // reports put under 5% above, plus a few packets per stream (12) reaching a client
    // before its receiver for them started.
    for (kind, sent, got) in [
        ("video", forwarded_video, client_video),
        ("audio", forwarded_audio, client_audio),
    ] {
        assert!(sent >= got, "{kind}: server sent {sent}, clients got {got}");
        assert!(
            sent <= got * 1.05 + 12.0 * 5.0,
            "{kind}: server counts {sent} sent, clients got only {got}"
        );
        // Each packet goes to at most the two other participants, plus resends.
        let resent = settled.get("switchyard_retransmitted_packets_total", &[]);
        assert!(sent <= 2.0 * received(kind) + resent, "{kind}");
    }
    // Payload sizes are fixed (160 bytes of audio, 1000 of video), so bytes follow packets.
    assert_eq!(
        settled.get("switchyard_forwarded_bytes_total", &[("kind", "audio")]),
        160.0 * forwarded_audio
    );
    assert_eq!(
        settled.get("switchyard_received_bytes_total", &[("kind", "video")]),
        1000.0 * received("video")
    );
    // Every packet sent was timed, once.
    for kind in ["audio", "video"] {
        assert_eq!(
            settled.get(
                "switchyard_forwarding_latency_seconds_count",
                &[("kind", kind)]
            ),
            forwarded(kind),
            "{kind}"
        );
    }
    let timed = settled.sum("switchyard_forwarding_latency_seconds_count");
    let mean_latency = settled.sum("switchyard_forwarding_latency_seconds_sum") / timed;
    assert!(
        mean_latency < 0.05,
        "a loopback server holds a packet well under 50 ms on average: {mean_latency}"
    );
    let within_10ms = settled.sum_where(
        "switchyard_forwarding_latency_seconds_bucket",
        ("le", "0.01"),
    );
    eprintln!(
        "forwarding latency: mean {:.3} ms, {:.1}% within 10 ms; RTT mean {:.3} ms, \
         {rtt_within_25ms} of {rtt_samples} reports within 25 ms",
        mean_latency * 1000.0,
        100.0 * within_10ms / timed,
        mean_rtt * 1000.0,
    );
    eprintln!("{}", sample_of(&settled.text));

    alice.close().await;
    bob.close().await;
    carol.close().await;
    server.shutdown().await;
}

impl Scrape {
    fn sum_where(&self, name: &str, (label, value): (&str, &str)) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name && s.labels.get(label).map(String::as_str) == Some(value))
            .map(|s| s.value)
            .sum()
    }
}

/// The SSRC `bob` receives carol's camera with.
fn carol_cam_ssrc(bob: &RtcClient, carol: &RtcClient) -> u32 {
    bob.seen(&carol.id, "carol-cam")
        .expect("bob receives carol-cam")
        .ssrc
}

/// The scrape without HELP lines and histogram buckets, for the test log.
fn sample_of(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with("# HELP") && !l.contains("_bucket{"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `switchyard_*` series the dashboard queries, with its exact-match label values,
/// must be in a real scrape: a renamed metric or a mistyped label shows as an empty panel,
/// which no one notices until they need it.
fn dashboard_queries_only_what_is_exposed(scrape: &Scrape) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../config/grafana/dashboards/switchyard.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard file"))
            .expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 10, "the dashboard has queries: {exprs:?}");
    let exposed = scrape.names();
    let mut queried = HashSet::new();
    for expr in &exprs {
        for (name, matchers) in selectors(expr) {
            assert!(
                exposed.contains(name.as_str()),
                "dashboard query `{expr}` uses {name}, which /metrics does not expose"
            );
            for (label, value) in matchers {
                assert!(
                    scrape.label_values(&name, &label).contains(value.as_str()),
                    "dashboard query `{expr}`: no {name} series has {label}=\"{value}\""
                );
            }
            queried.insert(name);
        }
    }
    // And the dashboard covers what the issue asked to see.
    for family in [
        "switchyard_rooms",
        "switchyard_participants",
        "switchyard_published_tracks",
        "switchyard_subscriptions",
        "switchyard_received_packets_total",
        "switchyard_forwarded_packets_total",
        "switchyard_forwarded_bytes_total",
        "switchyard_dropped_packets_total",
        "switchyard_nacks_received_total",
        "switchyard_retransmitted_packets_total",
        "switchyard_keyframe_requests_received_total",
        "switchyard_keyframe_requests_sent_total",
        "switchyard_subscriber_rtt_seconds_bucket",
        "switchyard_subscriber_jitter_seconds_bucket",
        "switchyard_subscriber_loss_ratio_bucket",
        "switchyard_forwarding_latency_seconds_bucket",
        "switchyard_webhook_failed_attempts_total",
        "switchyard_process_cpu_seconds_total",
        "switchyard_process_resident_memory_bytes",
    ] {
        assert!(
            queried.contains(family),
            "no dashboard panel shows {family}"
        );
    }
}

fn collect_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr", serde_json::Value::String(expr)) => out.push(expr.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// `switchyard_*` metric names in a PromQL expression, each with its `label="value"`
/// matchers (regex and negative matchers are not checked).
fn selectors(expr: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut found = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("switchyard_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = tail[..end].to_owned();
        let mut matchers = Vec::new();
        if let Some(inner) = tail[end..]
            .strip_prefix('{')
            .and_then(|t| t.split_once('}'))
            .map(|(inner, _)| inner)
        {
            for matcher in inner.split(',') {
                if let Some((label, value)) = matcher.split_once("=\"") {
                    let label = label.trim();
                    if !label.ends_with(['!', '=', '~']) {
                        matchers.push((label.to_owned(), value.trim_end_matches('"').to_owned()));
                    }
                }
            }
        }
        found.push((name, matchers));
        rest = &tail[end..];
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_bearer_token_is_required() {
    let server = TestServer::start_with(&[("SWITCHYARD_METRICS_BEARER_TOKEN", "t0k")]).await;
    let (status, headers, _) = http_get(server.http, "/metrics", &[]).await;
    assert_eq!(status, 401, "no token");
    assert_eq!(
        headers.get("www-authenticate").map(String::as_str),
        Some("Bearer realm=\"switchyard metrics\"")
    );
    let (status, _, _) = http_get(
        server.http,
        "/metrics",
        &[("Authorization", "Bearer t0k-not")],
    )
    .await;
    assert_eq!(status, 401, "wrong token");
    let (status, _, body) =
        http_get(server.http, "/metrics", &[("Authorization", "Bearer t0k")]).await;
    assert_eq!(status, 200);
    assert!(body.contains("\nswitchyard_participants 0\n"), "{body}");
    // The rest of the server is not behind the token.
    let (status, _, _) = http_get(server.http, "/healthz", &[]).await;
    assert_eq!(status, 200);
    server.shutdown().await;

    let open = TestServer::start().await;
    let (status, _, _) = http_get(open.http, "/metrics", &[]).await;
    assert_eq!(status, 200, "no token configured: open");
    open.shutdown().await;

    let disabled = TestServer::start_with(&[("SWITCHYARD_METRICS_ENABLED", "false")]).await;
    let (status, _, _) = http_get(disabled.http, "/metrics", &[]).await;
    assert_eq!(status, 404, "metrics.enabled = false");
    disabled.shutdown().await;
}
