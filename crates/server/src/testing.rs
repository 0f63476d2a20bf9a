//! A whole server on loopback ports in the caller's process, for tests: this crate's
//! integration tests and the load generator's use the same one.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::config::{Config, Overrides};
use crate::Server;

/// A server on 127.0.0.1 with free ports, on the embedded defaults (development mode)
/// plus the overrides given; stopped when dropped.
pub struct TestServer {
    pub http: SocketAddr,
    pub udp: SocketAddr,
    pub router: switchyard_router::Router,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(&[]).await
    }

    /// Starts with `SWITCHYARD_*`-style overrides, e.g. `("SWITCHYARD_SIGNAL_MAX_MESSAGE_BYTES", "2048")`.
    pub async fn start_with(env: &[(&str, &str)]) -> TestServer {
        // RUST_LOG=info (for example) shows the server's log in a failing test's output.
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
        let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        let config = Config::load(
            None,
            env,
            &Overrides {
                bind: Some("127.0.0.1:0".parse().expect("an address")),
                udp_port: Some(0),
                announce_ips: vec![],
            },
        )
        .expect("test config");
        let server = Server::bind(config).await.expect("server binds");
        let http = server.http_addr();
        let udp = server.udp_addr();
        let router = server.router().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        TestServer {
            http,
            udp,
            router,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/rtc", self.http)
    }

    /// Stops the server and waits for it to finish its graceful shutdown.
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
