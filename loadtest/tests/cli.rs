//! The `switchyard-loadtest` binary against a server on loopback: its JSON report, and
//! its exit status when a threshold is missed, when participants fail, and when the Janus
//! it was pointed at does not answer.

mod common;

use std::process::{Command, Output};

fn loadtest(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard-loadtest"))
        .args(args)
        .output()
        .expect("runs")
}

/// Runs the binary off this test's runtime, which must stay free to run the server.
async fn loadtest_beside(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        loadtest(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_report_and_a_missed_latency_threshold() {
    let server = common::TestServer::start().await;
    let url = server.ws_url();
    let dir = std::env::temp_dir().join(format!("loadtest-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("report.json");
    let pid = std::process::id().to_string();
    let args: Vec<String> = [
        "--url",
        &url,
        "--publishers",
        "1",
        "--subscribers",
        "1",
        "--video-bitrate",
        "300k",
        "--duration",
        "3s",
        "--json",
        json.to_str().unwrap(),
        "--server-pid",
        &pid,
        "--max-loss",
        "1",
        // One microsecond: no real network meets it.
        "--max-p99-latency",
        "0.001",
    ]
    .map(str::to_owned)
    .into();
    let output = loadtest_beside(args).await;
    let all = text(&output);
    assert_eq!(output.status.code(), Some(3), "{all}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("MISSED --max-p99-latency 0.001: p99 latency was"),
        "{all}"
    );
    assert!(
        !stdout.contains("MISSED --max-loss"),
        "loopback loses nothing: {all}"
    );

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    // The subscriber; the lone publisher has nobody to receive.
    assert_eq!(report["participants"]["received_from_all"], 1, "{report:#}");
    assert_eq!(report["packets"]["lost"], 0);
    assert!(report["packets"]["received"].as_u64().unwrap() > 0);
    assert!(report["latency"]["p99_ms"].as_f64().unwrap() > 0.001);
    assert_eq!(
        report["server"]["pid"].as_u64(),
        Some(u64::from(std::process::id()))
    );
    assert!(report["server"]["cpu_us_per_packet"].as_f64().unwrap() > 0.0);
    for key in [
        "join_ms",
        "first_media_ms",
        "all_media_ms",
        "first_keyframe_ms",
        "jitter",
        "freezes",
        "receive_kbps",
        "generator",
        "receivers",
    ] {
        assert!(!report[key].is_null(), "{key} in {report:#}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participants_that_cannot_join_fail_the_run() {
    let server = common::TestServer::start().await;
    let url = server.ws_url();
    let output = loadtest_beside(
        [
            "--url",
            &url,
            "--publishers",
            "1",
            "--subscribers",
            "1",
            "--duration",
            "1s",
            "--api-key",
            "devkey",
            "--api-secret",
            "not-the-secret",
        ]
        .map(str::to_owned)
        .into(),
    )
    .await;
    let all = text(&output);
    assert_eq!(output.status.code(), Some(4), "{all}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("0 joined of 2"), "{all}");
    assert!(
        stdout.contains("FAILED pub-0-0: joining: join refused: unauthorized"),
        "{all}"
    );
    server.shutdown().await;
}

#[test]
fn the_janus_target_says_when_no_janus_answers() {
    // Port 9 (discard) on loopback: nothing listens there.
    let output = loadtest(&["--target", "janus", "--url", "ws://127.0.0.1:9/janus"]);
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("connecting to Janus at ws://127.0.0.1:9/janus"),
        "{all}"
    );
}
