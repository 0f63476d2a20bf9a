//! Webhooks: every router event (room, participant and track lifecycle) POSTed as JSON to
//! the configured URLs, signed with an API key so the receiver can tell the request came
//! from this server and that the body is the one signed (docs/webhooks.md).
//!
//! Owns one dispatcher task reading `Router::events()` and, per URL, a bounded queue and
//! the one task that drains it. That task sends one event at a time, retrying with backoff
//! until it is accepted or given up, so each receiver sees the events in the order they
//! happened, retries included.
//!
//! Must not make a room wait, ever: a room only does a broadcast `send`, and the dispatcher
//! only a `try_send` into each queue. A receiver that is slow or down costs events that
//! are dropped and counted (`MediaStats.webhooks`), never a delayed join or packet.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::Url;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use switchyard_router::{EventKind, RouterEvent};
use switchyard_signal::token::{mint, unix_now, Claims, Grant};
use switchyard_stats::{MediaStats, WebhookCounters};

use crate::Config;

/// Lifetime of the token on each request: long enough for a receiver whose clock is a
/// little behind, short enough that a captured request is soon useless. Each attempt
/// gets a fresh token, so retries never carry an expired one.
pub const TOKEN_TTL_SECS: u64 = 300;

/// Most of a 2xx answer's body read (and thrown away) so the connection can be reused;
/// a receiver that answers with more only costs us a new connection next time.
const MAX_DRAINED_BODY: usize = 64 * 1024;

/// What the webhook tasks need from the config, resolved and validated.
#[derive(Clone)]
pub struct WebhookSettings {
    pub urls: Vec<Url>,
    /// The API key named in each token's `iss`, and the secret that signs it.
    pub api_key: String,
    pub secret: String,
    pub timeout: Duration,
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub queue_size: usize,
}

impl std::fmt::Debug for WebhookSettings {
    // Never print the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("urls", &self.urls.iter().map(label).collect::<Vec<_>>())
            .field("api_key", &self.api_key)
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("queue_size", &self.queue_size)
            .finish_non_exhaustive()
    }
}

impl WebhookSettings {
    /// The settings of a validated config; `None` when no URL is configured.
    pub fn from_config(config: &Config) -> Option<WebhookSettings> {
        let w = &config.webhook;
        if w.urls.is_empty() {
            return None;
        }
        let (api_key, secret) = config
            .webhook_key()
            .expect("validation ensures a webhook signing key");
        Some(WebhookSettings {
            urls: w
                .urls
                .iter()
                .map(|u| Url::parse(u).expect("validation ensures webhook URLs parse"))
                .collect(),
            api_key,
            secret,
            timeout: Duration::from_millis(w.timeout_ms),
            max_attempts: w.max_attempts,
            initial_backoff: Duration::from_millis(w.initial_backoff_ms),
            max_backoff: Duration::from_millis(w.max_backoff_ms),
            queue_size: w.queue_size,
        })
    }

    /// How long to wait after failed attempt number `attempt` (1-based) before the next.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.initial_backoff
            .saturating_mul(1 << doublings)
            .min(self.max_backoff)
    }
}

/// A request body: the event with an id, the same on every attempt and for every URL, so
/// a receiver can recognise a retry of a request it did process (say, one whose answer
/// was lost to our timeout).
#[derive(Serialize)]
struct Body<'a> {
    id: String,
    #[serde(flatten)]
    event: &'a RouterEvent,
}

/// One event, serialized once for every URL and attempt.
#[derive(Debug)]
pub struct Delivery {
    pub id: String,
    pub kind: EventKind,
    pub body: Bytes,
    /// Hex SHA-256 of `body`, the token's `sha256` claim.
    pub sha256: String,
}

impl Delivery {
    pub fn new(event: &RouterEvent) -> Delivery {
        let id = uuid::Uuid::new_v4().to_string();
        let body = serde_json::to_vec(&Body {
            id: id.clone(),
            event,
        })
        .expect("router events serialize");
        let sha256 = hex::encode(Sha256::digest(&body));
        Delivery {
            id,
            kind: event.event,
            body: body.into(),
            sha256,
        }
    }

    /// The `Authorization` token for one attempt: issued by `api_key`, vouching for this
    /// body. It grants nothing, so a captured one cannot be replayed to join a room or
    /// call the admin API.
    pub fn token(&self, api_key: &str, secret: &str, now: u64) -> String {
        let mut claims = Claims::new(api_key, "", now, TOKEN_TTL_SECS).with_grant(Grant {
            can_publish: false,
            can_subscribe: false,
            can_publish_data: false,
            ..Grant::default()
        });
        claims.sha256 = Some(self.sha256.clone());
        mint(&claims, secret)
    }
}

/// Where the webhook tasks are in the server's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// Shutting down: deliver what the rooms still emit while closing, and what is queued.
    Draining,
    /// The shutdown deadline passed: stop now, counting what was not delivered as dropped.
    GiveUp,
}

/// The running webhook tasks. Dropping this aborts them; [`Webhooks::finish`] flushes
/// first.
pub struct Webhooks {
    phase: watch::Sender<Phase>,
    tasks: JoinSet<()>,
}

impl Webhooks {
    /// Starts delivering what `events` carries. Subscribe `events` before any room can
    /// open, or the first events are never seen.
    pub fn start(
        settings: WebhookSettings,
        events: broadcast::Receiver<RouterEvent>,
        stats: Arc<MediaStats>,
    ) -> anyhow::Result<Webhooks> {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            // A redirected POST comes back as a GET without the body (301-303), which could
            // answer 200 without the event reaching anyone: a redirect is a failed attempt.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| anyhow::anyhow!("cannot create the webhook HTTP client: {e}"))?;
        let (phase, phase_rx) = watch::channel(Phase::Running);
        let settings = Arc::new(settings);
        let mut tasks = JoinSet::new();
        let mut queues = Vec::with_capacity(settings.urls.len());
        for url in &settings.urls {
            let (tx, rx) = mpsc::channel(settings.queue_size);
            queues.push(Queue {
                tx,
                label: label(url),
                overflowing: false,
            });
            let sender = UrlSender {
                client: client.clone(),
                url: url.clone(),
                label: label(url),
                settings: settings.clone(),
                stats: stats.clone(),
            };
            tasks.spawn(sender.run(rx, phase_rx.clone()));
        }
        tasks.spawn(dispatch(events, queues, stats, phase_rx));
        tracing::info!(
            urls = ?settings.urls.iter().map(label).collect::<Vec<_>>(),
            api_key = %settings.api_key,
            "webhooks on"
        );
        Ok(Webhooks { phase, tasks })
    }

    /// Delivers what the closing rooms still emit and what is queued, until `deadline`;
    /// then gives up on the rest, counting it as dropped.
    pub async fn finish(mut self, deadline: Instant) {
        let _ = self.phase.send(Phase::Draining);
        let tasks = &mut self.tasks;
        let flushed = tokio::time::timeout_at(deadline, async {
            while let Some(done) = tasks.join_next().await {
                log_join(done);
            }
        })
        .await;
        if flushed.is_err() {
            tracing::warn!(
                "webhook deliveries still pending at the shutdown deadline: given up \
                 (counted as dropped)"
            );
            let _ = self.phase.send(Phase::GiveUp);
            // They stop at their next step; a second is generous. Then JoinSet's drop
            // aborts whatever is left.
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                while let Some(done) = self.tasks.join_next().await {
                    log_join(done);
                }
            })
            .await;
        }
    }
}

fn log_join(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        tracing::error!(error = %e, "webhook task failed");
    }
}

/// A URL for logs: scheme, host, port and path. The query and user info are left out
/// because they often hold the receiver's credentials.
fn label(url: &Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.set_fragment(None);
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.to_string()
}

/// The dispatcher's end of one URL's queue.
struct Queue {
    tx: mpsc::Sender<Arc<Delivery>>,
    label: String,
    /// Whether the last offer was dropped: so a receiver that is down logs once per
    /// outage rather than once per event.
    overflowing: bool,
}

impl Queue {
    fn offer(&mut self, delivery: Arc<Delivery>, counters: &WebhookCounters) {
        match self.tx.try_send(delivery) {
            Ok(()) => {
                if self.overflowing {
                    self.overflowing = false;
                    tracing::info!(url = %self.label, "webhook queue accepts events again");
                }
            }
            Err(mpsc::error::TrySendError::Full(delivery)) => {
                counters.dropped.fetch_add(1, Ordering::Relaxed);
                if !self.overflowing {
                    self.overflowing = true;
                    tracing::warn!(
                        url = %self.label,
                        event = delivery.kind.as_str(),
                        "webhook queue full (receiver slow or down): dropping events"
                    );
                }
            }
            // Its sender gave up at the shutdown deadline.
            Err(mpsc::error::TrySendError::Closed(_)) => {
                counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Reads the router's events and queues each for every URL.
async fn dispatch(
    mut events: broadcast::Receiver<RouterEvent>,
    mut queues: Vec<Queue>,
    stats: Arc<MediaStats>,
    mut phase: watch::Receiver<Phase>,
) {
    let counters = &stats.webhooks;
    let per_url = queues.len() as u64;
    // Rooms started and not yet finished. At shutdown the server sees a room gone before
    // the room has emitted its last events (participant_left, room_finished); this says
    // how long to keep listening.
    let mut open_rooms: HashMap<String, usize> = HashMap::new();
    loop {
        let current = *phase.borrow();
        let received = match current {
            Phase::GiveUp => break,
            Phase::Draining if open_rooms.is_empty() => match events.try_recv() {
                Ok(event) => Ok(event),
                Err(broadcast::error::TryRecvError::Lagged(n)) => Err(n),
                Err(_) => break,
            },
            Phase::Running | Phase::Draining => tokio::select! {
                biased;
                changed = phase.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    continue;
                }
                received = events.recv() => match received {
                    Ok(event) => Ok(event),
                    Err(broadcast::error::RecvError::Lagged(n)) => Err(n),
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            },
        };
        match received {
            Ok(event) => {
                match event.event {
                    EventKind::RoomStarted => {
                        *open_rooms.entry(event.room.clone()).or_default() += 1
                    }
                    EventKind::RoomFinished => {
                        if let Some(n) = open_rooms.get_mut(&event.room) {
                            *n -= 1;
                            if *n == 0 {
                                open_rooms.remove(&event.room);
                            }
                        }
                    }
                    _ => {}
                }
                let delivery = Arc::new(Delivery::new(&event));
                for queue in &mut queues {
                    queue.offer(delivery.clone(), counters);
                }
            }
            Err(missed) => {
                // Only if this task starves: the channel holds thousands of events.
                tracing::warn!(missed, "webhook dispatcher fell behind the router's events");
                counters
                    .dropped
                    .fetch_add(missed * per_url, Ordering::Relaxed);
            }
        }
    }
    if *phase.borrow() == Phase::GiveUp {
        counters
            .dropped
            .fetch_add(events.len() as u64 * per_url, Ordering::Relaxed);
    }
    // Dropping the queues' senders lets each URL's task finish once its queue is empty.
}

/// Delivers one URL's events, one at a time.
struct UrlSender {
    client: reqwest::Client,
    url: Url,
    label: String,
    settings: Arc<WebhookSettings>,
    stats: Arc<MediaStats>,
}

impl UrlSender {
    async fn run(
        self,
        mut queue: mpsc::Receiver<Arc<Delivery>>,
        mut phase: watch::Receiver<Phase>,
    ) {
        loop {
            let delivery = tokio::select! {
                biased;
                () = given_up(&mut phase) => break,
                next = queue.recv() => match next {
                    Some(delivery) => delivery,
                    // The dispatcher is done and everything queued was delivered.
                    None => return,
                },
            };
            self.deliver(&delivery, &mut phase).await;
        }
        queue.close();
        let mut left = 0;
        while queue.try_recv().is_ok() {
            left += 1;
        }
        self.counters().dropped.fetch_add(left, Ordering::Relaxed);
    }

    fn counters(&self) -> &WebhookCounters {
        &self.stats.webhooks
    }

    /// Tries until the receiver accepts, the attempts run out, or shutdown gives up.
    async fn deliver(&self, delivery: &Delivery, phase: &mut watch::Receiver<Phase>) {
        let max_attempts = self.settings.max_attempts;
        for attempt in 1..=max_attempts {
            let outcome = tokio::select! {
                biased;
                () = given_up(phase) => break,
                outcome = self.attempt(delivery) => outcome,
            };
            let why = match outcome {
                Ok(()) => {
                    self.counters().delivered.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(why) => why,
            };
            self.counters()
                .failed_attempts
                .fetch_add(1, Ordering::Relaxed);
            if attempt == max_attempts {
                tracing::warn!(
                    url = %self.label, event = delivery.kind.as_str(), id = %delivery.id,
                    attempts = attempt, error = %why, "webhook given up"
                );
                break;
            }
            let wait = self.settings.backoff(attempt);
            tracing::warn!(
                url = %self.label, event = delivery.kind.as_str(), id = %delivery.id,
                attempt, error = %why, retry_in_ms = wait.as_millis() as u64,
                "webhook attempt failed"
            );
            tokio::select! {
                biased;
                () = given_up(phase) => break,
                () = tokio::time::sleep(wait) => {}
            }
        }
        self.counters().dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// One POST; `Err` says why it failed. The client's timeout bounds all of it.
    async fn attempt(&self, delivery: &Delivery) -> Result<(), String> {
        let token = delivery.token(&self.settings.api_key, &self.settings.secret, unix_now());
        let mut response = self
            .client
            .post(self.url.clone())
            .header(AUTHORIZATION, token)
            .header(CONTENT_TYPE, "application/json")
            .body(delivery.body.clone())
            .send()
            .await
            .map_err(|e| describe(&e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("answered {status}"));
        }
        let mut drained = 0;
        while drained <= MAX_DRAINED_BODY {
            match response.chunk().await {
                Ok(Some(chunk)) => drained += chunk.len(),
                // Accepted all the same: the answer's status is what counts.
                Ok(None) | Err(_) => break,
            }
        }
        Ok(())
    }
}

/// A reqwest error with its causes (its own message alone says little: "error sending
/// request").
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".to_owned();
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Completes once shutdown gives up on deliveries; never if it does not.
async fn given_up(phase: &mut watch::Receiver<Phase>) {
    // The handle is dropped only after its tasks are aborted, so an error cannot matter.
    let _ = phase.wait_for(|p| *p == Phase::GiveUp).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Mutex;

    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use switchyard_router::events::EventParticipant;
    use switchyard_signal::token::ApiKeys;

    fn read(counter: &std::sync::atomic::AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    const KEY: &str = "hooks";
    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn settings(urls: Vec<Url>) -> WebhookSettings {
        WebhookSettings {
            urls,
            api_key: KEY.into(),
            secret: SECRET.into(),
            timeout: Duration::from_millis(500),
            max_attempts: 3,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(40),
            queue_size: 16,
        }
    }

    fn event(kind: EventKind, room: &str) -> RouterEvent {
        RouterEvent {
            event: kind,
            room: room.into(),
            participant: (kind == EventKind::ParticipantJoined).then(|| EventParticipant {
                id: "PA_1".into(),
                identity: "ada".into(),
                name: "Ada".into(),
            }),
            track: None,
            created_at_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let s = WebhookSettings {
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_millis(5000),
            ..settings(vec![])
        };
        let waits: Vec<u64> = (1..=6).map(|a| s.backoff(a).as_millis() as u64).collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 5000, 5000]);
        assert_eq!(
            s.backoff(u32::MAX),
            Duration::from_millis(5000),
            "no overflow"
        );
    }

    #[test]
    fn body_is_the_event_with_an_id_and_the_token_vouches_for_it() {
        let delivery = Delivery::new(&event(EventKind::ParticipantJoined, "r1"));
        let body: serde_json::Value = serde_json::from_slice(&delivery.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "id": delivery.id,
                "event": "participant_joined",
                "room": "r1",
                "participant": {"id": "PA_1", "identity": "ada", "name": "Ada"},
                "created_at_ms": 1_700_000_000_000u64,
            })
        );
        assert_eq!(
            uuid::Uuid::parse_str(&delivery.id)
                .unwrap()
                .get_version_num(),
            4
        );
        let now = unix_now();
        let keys = ApiKeys::new([(KEY.to_owned(), SECRET.to_owned())]);
        let claims = keys.verify(&delivery.token(KEY, SECRET, now), now).unwrap();
        assert_eq!(claims.iss, KEY);
        assert_eq!(
            claims.sha256.as_deref(),
            Some(hex::encode(Sha256::digest(&delivery.body)).as_str())
        );
        assert_eq!(claims.exp - claims.nbf, TOKEN_TTL_SECS);
        let g = claims.grant;
        assert!(
            !(g.room_join || g.can_publish || g.can_subscribe || g.can_publish_data)
                && !(g.room_admin || g.room_create || g.room_list),
            "a webhook token grants nothing: {g:?}"
        );
    }

    /// Every JSON example in docs/webhooks.md is exactly what the server sends for the
    /// event it describes.
    #[test]
    fn the_documented_examples_are_the_real_format() {
        let doc = include_str!("../../../docs/webhooks.md");
        let examples: Vec<&str> = doc
            .split("```json\n")
            .skip(1)
            .map(|rest| rest.split("```").next().unwrap())
            .collect();
        assert!(examples.len() >= 4, "docs/webhooks.md has its examples");
        let kinds = [
            EventKind::RoomStarted,
            EventKind::RoomFinished,
            EventKind::ParticipantJoined,
            EventKind::ParticipantLeft,
            EventKind::TrackPublished,
            EventKind::TrackUnpublished,
        ];
        for example in examples {
            let doc: serde_json::Value =
                serde_json::from_str(example).unwrap_or_else(|e| panic!("{e}: {example}"));
            let text = |v: &serde_json::Value| v.as_str().unwrap().to_owned();
            let event = RouterEvent {
                event: *kinds
                    .iter()
                    .find(|k| doc["event"] == k.as_str())
                    .unwrap_or_else(|| panic!("unknown event in {example}")),
                room: text(&doc["room"]),
                participant: doc.get("participant").map(|p| EventParticipant {
                    id: text(&p["id"]),
                    identity: text(&p["identity"]),
                    name: text(&p["name"]),
                }),
                track: doc
                    .get("track")
                    .map(|t| serde_json::from_value(t.clone()).unwrap()),
                created_at_ms: doc["created_at_ms"].as_u64().unwrap(),
            };
            let sent = serde_json::to_value(Body {
                id: text(&doc["id"]),
                event: &event,
            })
            .unwrap();
            assert_eq!(sent, doc, "{example}");
        }
    }

    #[test]
    fn logs_never_show_credentials_in_urls() {
        let url = Url::parse("https://user:pw@hooks.example.org:8443/in?token=t0p#x").unwrap();
        assert_eq!(label(&url), "https://hooks.example.org:8443/in");
    }

    /// A receiver on loopback that answers each request with the next status of `script`
    /// (200 once it runs out), and records the event of each.
    #[derive(Clone, Default)]
    struct Receiver {
        script: Arc<Mutex<Vec<StatusCode>>>,
        seen: Arc<Mutex<Vec<(String, String)>>>,
    }

    async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(headers.contains_key(AUTHORIZATION));
        r.seen.lock().unwrap().push((
            v["event"].as_str().unwrap().to_owned(),
            v["room"].as_str().unwrap().to_owned(),
        ));
        let mut script = r.script.lock().unwrap();
        if script.is_empty() {
            StatusCode::OK
        } else {
            script.remove(0)
        }
    }

    async fn serve(receiver: Receiver) -> Url {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(receiver);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Url::parse(&format!("http://{addr}/hook")).unwrap()
    }

    async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn an_event_is_given_up_after_its_attempts_and_the_next_still_goes() {
        let receiver = Receiver::default();
        // Three failures for the first event (all its attempts), then success.
        *receiver.script.lock().unwrap() = vec![StatusCode::INTERNAL_SERVER_ERROR; 3];
        let url = serve(receiver.clone()).await;
        let (tx, rx) = broadcast::channel(16);
        let stats = Arc::new(MediaStats::default());
        let hooks = Webhooks::start(settings(vec![url]), rx, stats.clone()).unwrap();
        tx.send(event(EventKind::RoomStarted, "a")).unwrap();
        tx.send(event(EventKind::RoomStarted, "b")).unwrap();
        let w = &stats.webhooks;
        wait_for("the second event delivered", || read(&w.delivered) == 1).await;
        assert_eq!(read(&w.failed_attempts), 3);
        assert_eq!(read(&w.dropped), 1, "the first event was given up");
        let seen = receiver.seen.lock().unwrap().clone();
        let rooms: Vec<&str> = seen.iter().map(|(_, room)| room.as_str()).collect();
        assert_eq!(rooms, ["a", "a", "a", "b"]);
        hooks.finish(Instant::now() + Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn shutdown_flushes_the_queue_and_waits_for_rooms_to_finish() {
        let receiver = Receiver::default();
        let url = serve(receiver.clone()).await;
        let (tx, rx) = broadcast::channel(16);
        let stats = Arc::new(MediaStats::default());
        let hooks = Webhooks::start(settings(vec![url]), rx, stats.clone()).unwrap();
        tx.send(event(EventKind::RoomStarted, "a")).unwrap();
        tx.send(event(EventKind::ParticipantJoined, "a")).unwrap();
        // The room emits its last event after shutdown began, as a closing room does.
        let late = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            tx.send(event(EventKind::RoomFinished, "a")).unwrap();
        });
        hooks.finish(Instant::now() + Duration::from_secs(5)).await;
        let events: Vec<String> = receiver
            .seen
            .lock()
            .unwrap()
            .iter()
            .map(|(e, _)| e.clone())
            .collect();
        assert_eq!(
            events,
            ["room_started", "participant_joined", "room_finished"]
        );
        assert_eq!(read(&stats.webhooks.delivered), 3);
        late.await.unwrap();
    }

    #[tokio::test]
    async fn shutdown_gives_up_at_its_deadline_and_counts_what_was_left() {
        // Accepts connections and never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/hook", silent.local_addr().unwrap())).unwrap();
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = silent.accept().await {
                open.push(socket);
            }
        });
        let (tx, rx) = broadcast::channel(16);
        let stats = Arc::new(MediaStats::default());
        let hooks = Webhooks::start(
            WebhookSettings {
                timeout: Duration::from_secs(30),
                ..settings(vec![url])
            },
            rx,
            stats.clone(),
        )
        .unwrap();
        for room in ["a", "b", "c"] {
            tx.send(event(EventKind::RoomStarted, room)).unwrap();
        }
        let started = Instant::now();
        hooks
            .finish(Instant::now() + Duration::from_millis(300))
            .await;
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(2),
            "finish kept to its deadline: {took:?}"
        );
        let w = &stats.webhooks;
        assert_eq!(read(&w.delivered), 0);
        assert_eq!(read(&w.dropped), 3, "in flight and queued, all counted");
        held.abort();
    }
}
