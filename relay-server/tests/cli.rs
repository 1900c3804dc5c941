//! The `relay-server` binary as an operator runs it: flags and env, health, SIGTERM.

mod common;

use std::process::Command;

use common::*;

#[tokio::test]
async fn binary_serves_health_and_exits_cleanly_on_sigterm() {
    let ServerProcess {
        mut child,
        addr,
        data: _data,
        ..
    } = spawn_server(&["--listen", "127.0.0.1:0"], &[]);
    let health = send(&client(), "GET", &format!("http://{addr}/healthz"), &[], "").await;
    assert_eq!(health.status, 200);
    assert!(terminate(&mut child).success());
}

#[tokio::test]
async fn listen_address_comes_from_the_environment() {
    let ServerProcess {
        mut child,
        addr,
        data: _data,
        ..
    } = spawn_server(
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
