//! The `relay-server` binary as an operator runs it: flags and env, health, SIGTERM.

use std::process::Command;

use crate::common::*;

#[tokio::test]
async fn binary_serves_health_and_exits_cleanly_on_sigterm() {
    let mut server = spawn_server(&["--listen", "127.0.0.1:0"], &[]);
    let (addr, child) = (server.addr.clone(), &mut server.child);
    let health = send(&client(), "GET", &format!("http://{addr}/healthz"), &[], "").await;
    assert_eq!(health.status, 200);
    assert!(terminate(child).success());
}

#[tokio::test]
async fn listen_address_comes_from_the_environment() {
    let mut server = spawn_server(
        &[],
        &[
            ("HOOKRELAY_LISTEN", "127.0.0.1:0"),
            ("HOOKRELAY_OFFLINE_STATUS", "503"),
        ],
    );
    let addr = server.addr.clone();
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
    assert!(terminate(&mut server.child).success());
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
