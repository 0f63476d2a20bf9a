//! The Switchyard server: configuration, the HTTP app (signaling WebSocket, web client,
//! Prometheus metrics), start-up and graceful shutdown. `main.rs` only parses the command
//! line.

pub mod admin;
pub mod auth;
pub mod config;
pub mod http;
pub mod logging;
mod metrics;
pub mod testing;
mod web;
pub mod webhook;
pub mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;

use switchyard_router::{Router, RtcEngine};
use switchyard_signal::token::ApiKeys;
use switchyard_stats::metrics::Metrics;
use switchyard_stats::MediaStats;

pub use config::Config;

/// What every request handler shares.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    /// The API keys tokens are checked against (with the dev key in dev mode).
    pub keys: Arc<ApiKeys>,
    pub router: Router,
    /// The Prometheus registry over the router's counters.
    pub metrics: Arc<Metrics>,
    /// Flips to `true` when the server starts shutting down.
    pub shutdown: watch::Receiver<bool>,
}

/// A server with its sockets bound, ready to [`Server::run`].
pub struct Server {
    config: Arc<Config>,
    listener: TcpListener,
    engine: Arc<RtcEngine>,
    router: Router,
    metrics: Arc<Metrics>,
}

impl Server {
    /// Binds the TCP listener and the media UDP port named in `config`.
    pub async fn bind(config: Config) -> anyhow::Result<Server> {
        let listener = TcpListener::bind(config.server.bind).await.map_err(|e| {
            anyhow::anyhow!("cannot listen on {} (server.bind): {e}", config.server.bind)
        })?;
        Server::with_listener(config, listener).await
    }

    /// Like [`Server::bind`], with a listener the caller bound (tests bind port 0).
    pub async fn with_listener(config: Config, listener: TcpListener) -> anyhow::Result<Server> {
        let engine = Arc::new(RtcEngine::bind(config.rtc_settings()).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot bind media UDP port {} (rtc.udp_port): {e}",
                config.udp_bind()
            )
        })?);
        let stats = Arc::new(MediaStats::default());
        let metrics = Arc::new(Metrics::new(stats.clone()));
        let router = Router::new(engine.clone(), config.room_settings(), stats);
        Ok(Server {
            config: Arc::new(config),
            listener,
            engine,
            router,
            metrics,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn udp_addr(&self) -> SocketAddr {
        self.engine.udp_addr()
    }

    pub fn router(&self) -> &Router {
        &self.router
    }

    /// Serves until `shutdown` completes, then closes every session (code 1001) and room,
    /// waiting at most `server.shutdown_timeout_ms`.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        // Listening before the first request is served, so no room's events are missed.
        let webhooks = webhook::WebhookSettings::from_config(&self.config)
            .map(|settings| {
                webhook::Webhooks::start(
                    settings,
                    self.router.events(),
                    self.router.stats().clone(),
                )
            })
            .transpose()?;
        let state = AppState {
            config: self.config.clone(),
            keys: Arc::new(self.config.api_keys()),
            router: self.router.clone(),
            metrics: self.metrics.clone(),
            shutdown: shutdown_rx.clone(),
        };
        let mut app = axum::Router::new()
            .route("/rtc", get(ws::upgrade))
            .route("/healthz", get(|| async { "ok\n" }));
        if self.config.auth.dev_mode {
            tracing::warn!(
                "DEVELOPMENT MODE: the well-known API key `devkey` is accepted and GET /dev/token \
                 hands out join tokens to anyone. Set auth.dev_mode = false and configure \
                 auth.keys before exposing this server."
            );
            app = app.route("/dev/token", get(auth::dev_token));
        }
        if self.config.metrics.enabled {
            app = app.route("/metrics", get(metrics::scrape));
        }
        let (admin_routes, openapi) = admin::routes();
        let openapi = Arc::new(openapi);
        let app = app
            .merge(admin_routes)
            .route(
                "/api/v1/openapi.json",
                get(move || {
                    let openapi = openapi.clone();
                    async move { axum::Json(openapi.as_ref().clone()) }
                }),
            )
            .route("/api/v1/{*rest}", axum::routing::any(admin::not_found))
            .route("/", get(web::index))
            .route("/{*path}", get(web::file))
            .with_state(state);

        let app = app.layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            Duration::from_millis(self.config.server.http_request_timeout_ms),
        ));
        let mut drained = shutdown_rx.clone();
        let limits = http::ConnectionLimits {
            header_timeout: Duration::from_millis(self.config.server.http_header_timeout_ms),
            max_unauthenticated_per_ip: self.config.server.max_unauthenticated_per_ip,
            drain_timeout: Duration::from_millis(self.config.server.shutdown_timeout_ms),
        };
        http::serve(self.listener, app, limits, async move {
            shutdown.await;
            tracing::info!("shutting down");
            let _ = shutdown_tx.send(true);
        })
        .await;

        // Sessions saw the flag and closed their sockets; close what is left of the rooms.
        let _ = drained.changed().await;
        self.router.close_all();
        let drain_started = tokio::time::Instant::now();
        let deadline = Duration::from_millis(self.config.server.shutdown_timeout_ms);
        let wait_rooms = async {
            while self.router.room_count() > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        if tokio::time::timeout(deadline, wait_rooms).await.is_err() {
            tracing::warn!(
                rooms = self.router.room_count(),
                "rooms still open at shutdown deadline"
            );
        }
        // The closing rooms' last events, and whatever the receivers have not taken yet,
        // within what is left of the same deadline.
        if let Some(webhooks) = webhooks {
            webhooks.finish(drain_started + deadline).await;
        }
        self.engine.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}
