//! The `udp-floor` binary end to end on loopback: a forwarder process, a load process with
//! 20 receivers, every datagram checked at every receiver.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_udp-floor");

/// A forwarder on a free port; SIGTERM and its own stats when stopped.
struct Forwarder {
    child: Child,
    addr: String,
}

impl Forwarder {
    fn start() -> Forwarder {
        let mut child = Command::new(BIN)
            // Bounded even if the test dies before stopping it.
            .args(["forward", "--listen", "127.0.0.1:0", "--duration", "60"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("udp-floor starts");
        let mut line = String::new();
        BufReader::new(child.stderr.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // "udp-floor forwarding on 127.0.0.1:PORT (pid N)"
        let addr = line
            .split_whitespace()
            .nth(3)
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_owned();
        Forwarder { child, addr }
    }

    fn stop(mut self) -> Value {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).unwrap();
        let output = std::mem::replace(&mut self.child, Command::new("true").spawn().unwrap())
            .wait_with_output()
            .unwrap();
        assert!(output.status.success(), "forwarder: {:?}", output.status);
        serde_json::from_slice(&output.stdout).expect("the forwarder prints its stats as JSON")
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn every_datagram_reaches_every_receiver() {
    let forwarder = Forwarder::start();
    let pid = forwarder.child.id().to_string();
    let json = std::env::temp_dir().join(format!("udp-floor-test-{}.json", std::process::id()));
    let load = Command::new(BIN)
        .args([
            "load",
            "--to",
            &forwarder.addr,
            "--fanout",
            "20",
            "--rate",
            "200",
        ])
        .args(["--size", "1200", "--duration", "2", "--drain", "0.5"])
        .args(["--server-pid", &pid, "--scenario", "test"])
        .arg("--json")
        .arg(&json)
        .output()
        .expect("udp-floor load runs");
    assert!(
        load.status.success(),
        "load failed: {}",
        String::from_utf8_lossy(&load.stderr)
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    let stats = forwarder.stop();

    // 2 s at 200/s: 400 datagrams, each to 20 receivers, none lost on loopback at this rate.
    assert_eq!(report["target"], "udp-floor");
    assert_eq!(report["expected"], 8000, "{report:#}");
    assert_eq!(report["received"], 8000, "{report:#}");
    assert_eq!(report["duplicates"], 0);
    assert_eq!(report["loss_pct"], 0.0);
    assert_eq!(report["forwarded_packets"], 8000);
    assert_eq!(report["participants"], 21);
    let p99 = report["latency_ms"]["p99"].as_f64().unwrap();
    assert!(p99 > 0.0 && p99 < 50.0, "p99 {p99} ms");
    assert!(
        report["server_cpu_seconds"].as_f64().is_some(),
        "{report:#}"
    );
    assert!(report["server_peak_rss_bytes"].as_u64().unwrap() > 0);
    // Bitrate per subscriber: 200 × 1200 bytes × 8 = 1.92 Mbit/s.
    let bps = report["bitrate_per_subscriber_bps"].as_f64().unwrap();
    assert!((bps - 1_920_000.0).abs() < 1.0, "{bps}");

    // The forwarder's own count agrees, and its CPU per copy is a real number.
    assert_eq!(stats["received"], 400, "{stats}");
    assert_eq!(stats["forwarded"], 8000, "{stats}");
    assert_eq!(stats["destinations"], 20);
    assert_eq!(stats["send_errors"], 0);
    let per = stats["cpu_us_per_forwarded"].as_f64().unwrap();
    assert!(per > 0.0 && per < 1000.0, "{per} µs per forwarded datagram");
}

#[test]
fn a_load_without_a_forwarder_fails_clearly() {
    // A port nobody forwards on: the receivers' joins go unanswered.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap().to_string();
    let started = std::time::Instant::now();
    let load = Command::new(BIN)
        .args([
            "load",
            "--to",
            &addr,
            "--fanout",
            "1",
            "--rate",
            "10",
            "--duration",
            "1",
        ])
        .output()
        .unwrap();
    assert!(!load.status.success());
    let stderr = String::from_utf8_lossy(&load.stderr);
    assert!(stderr.contains("no forwarder answered"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10));
}
