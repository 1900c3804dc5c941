//! The `relay-server` binary as an operator runs it: flags and env, health, SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;

/// Starts the binary, with its data dir in a fresh temporary directory, and returns it with
/// the address it logged as bound.
fn spawn_server(args: &[&str], env: &[(&str, &str)]) -> (Child, String, tempfile::TempDir) {
    let data = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_relay-server"))
        .args(args)
        .env("HOOKRELAY_DATA_DIR", data.path())
        .envs(env.iter().copied())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("relay-server starts");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let addr = loop {
        let line = rx.recv_timeout(DEADLINE).expect("server logs its address");
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest.split_whitespace().next().expect("address").to_owned();
        }
    };
    (child, addr, data)
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "server did not exit on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test]
async fn binary_serves_health_and_exits_cleanly_on_sigterm() {
    let (mut child, addr, _data) = spawn_server(&["--listen", "127.0.0.1:0"], &[]);
    let health = send(&client(), "GET", &format!("http://{addr}/healthz"), &[], "").await;
    assert_eq!(health.status, 200);
    assert!(terminate(&mut child).success());
}

#[tokio::test]
async fn listen_address_comes_from_the_environment() {
    let (mut child, addr, _data) = spawn_server(
        &[],
        &[
            ("HOOKRELAY_LISTEN", "127.0.0.1:0"),
            ("HOOKRELAY_OFFLINE_STATUS", "503"),
        ],
    );
    assert!(
        addr.starts_with("127.0.0.1:") && !addr.ends_with(":8080"),
        "{addr}"
    );
    let answer = send(
        &client(),
        "POST",
        &format!("http://{addr}/h/none/x"),
        &[],
        "",
    )
    .await;
    assert_eq!(answer.status, 503);
    assert!(terminate(&mut child).success());
}

#[test]
fn invalid_flags_fail_with_a_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_relay-server"))
        .args(["--public-url", "relay.example.com"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--public-url must start with http://"),
        "{stderr}"
    );
}
