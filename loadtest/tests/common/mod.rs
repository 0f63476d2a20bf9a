//! A Switchyard server on loopback ports, in the test's process, for the generator to load.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::task::JoinHandle;

use switchyard_loadtest::client::MediaPlan;
use switchyard_loadtest::run::{fresh_room_prefix, Progress, RunConfig};
use switchyard_server::config::{Config, Overrides};
use switchyard_server::Server;

/// A server on 127.0.0.1 with free ports, on the embedded defaults (development mode, so
/// the `devkey`/`secret` tokens the generator mints are accepted).
pub struct TestServer {
    pub http: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
        let config = Config::load(
            None,
            std::iter::empty(),
            &Overrides {
                bind: Some("127.0.0.1:0".parse().unwrap()),
                udp_port: Some(0),
                announce_ips: vec![],
            },
        )
        .expect("test config");
        let server = Server::bind(config).await.expect("server binds");
        let http = server.http_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        TestServer {
            http,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/rtc", self.http)
    }

    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("server stops in time")
                .expect("server task")
                .expect("server ran cleanly");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A small run against `url`: 1 room, quiet, `duration` after a fast ramp.
pub fn config(
    url: String,
    publishers: usize,
    subscribers: usize,
    media: MediaPlan,
    duration: Duration,
) -> RunConfig {
    RunConfig {
        target: "switchyard".to_owned(),
        url,
        rooms: 1,
        publishers,
        subscribers,
        media,
        duration,
        ramp: 20.0,
        server_pid: None,
        progress: Progress::Off,
        room_prefix: fresh_room_prefix(),
    }
}
