//! What an operator deploys: the binary as a systemd `Type=notify` service with a watchdog.

use std::fs::File;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::{DEADLINE, terminate};

/// The next datagram on `socket` (whose read timeout is the deadline); on timeout, fails with
/// the server's log.
fn next_notification(socket: &UnixDatagram, log: &Path) -> String {
    let mut buf = [0; 4096];
    match socket.recv(&mut buf) {
        Ok(len) => String::from_utf8_lossy(&buf[..len]).into_owned(),
        Err(e) => panic!(
            "no notification within {DEADLINE:?} ({e}); server log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        ),
    }
}

#[test]
fn binary_tells_systemd_ready_then_pings_the_watchdog_then_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notification socket");
    socket
        .set_read_timeout(Some(DEADLINE))
        .expect("set a read timeout");
    let log = dir.path().join("server.log");
    // systemd sets WATCHDOG_PID to the service's pid, and sd_watchdog_enabled(3) ignores a
    // watchdog meant for another process. `exec` keeps the shell's pid, so the shell knows it.
    let mut child = Command::new("sh")
        .args(["-c", r#"export WATCHDOG_PID=$$; exec "$0" "$@""#])
        .arg(env!("CARGO_BIN_EXE_relay-server"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "200000")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(File::create(&log).expect("create the log file"))
        .spawn()
        .expect("relay-server starts");

    let ready = next_notification(&socket, &log);
    assert!(
        ready.starts_with("READY=1\nSTATUS=serving on 127.0.0.1:")
            && ready.contains(", public URL http://127.0.0.1:"),
        "{ready:?}"
    );
    for _ in 0..2 {
        assert_eq!(next_notification(&socket, &log), "WATCHDOG=1\n");
    }

    let status = terminate(&mut child);
    assert!(status.success(), "{status}");
    // Datagrams sent before the exit wait in the socket's queue.
    loop {
        match next_notification(&socket, &log).as_str() {
            "STOPPING=1\n" => break,
            "WATCHDOG=1\n" => {}
            other => panic!("unexpected notification {other:?}"),
        }
    }
}

/// `deploy/hookrelay.service`, checked by systemd itself: `systemd-analyze verify` parses every
/// directive, warns about unknown keys and bad values, and checks that the `ExecStart=` and
/// `ExecReload=` programs exist, so `ExecStart=` is pointed at the binary built for this test.
#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let unit = include_str!("../../deploy/hookrelay.service");
    let installed = "ExecStart=/usr/local/bin/relay-server ";
    assert!(unit.contains(installed), "the unit runs {installed:?}");
    assert!(unit.contains("\nType=notify\n") && unit.contains("\nWatchdogSec="));
    let built = format!("ExecStart={} ", env!("CARGO_BIN_EXE_relay-server"));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("hookrelay.service");
    std::fs::write(&path, unit.replace(installed, &built)).expect("write the unit");

    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run systemd-analyze ({e}): install the systemd package \
                 (`.ci/run` does: apt-get install systemd)"
            )
        });
    let stderr = String::from_utf8_lossy(&out.stderr);
    let about_unit: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("hookrelay"))
        .collect();
    assert!(
        out.status.success() && about_unit.is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        out.status
    );
}

#[test]
fn the_example_config_passes_check_config() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/server.toml");
    let output = Command::new(env!("CARGO_BIN_EXE_relay-server"))
        .args(["check-config", example])
        .env_remove("HOOKRELAY_CONFIG")
        .output()
        .expect("runs");
    let out = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{out}");
    // It is an example: every placeholder in it is named, so none is served unnoticed.
    assert!(out.contains(": ok, with 3 warnings"), "{out}");
    for placeholder in [
        "key `admin-token`: looks like a placeholder",
        "token-sha256 is the hash of the example token",
        "verify: looks like a placeholder",
    ] {
        assert!(
            out.contains(placeholder),
            "{placeholder} missing from:\n{out}"
        );
    }
    assert!(
        out.contains("channel my-app (mode balance, verify github)"),
        "{out}"
    );
    assert!(
        out.contains("trusted-proxy = 127.0.0.1/32, ::1/128  (file)"),
        "{out}"
    );
}

#[tokio::test]
async fn sighup_reloads_and_does_not_stop_a_plain_http_server() {
    let mut process = crate::common::spawn_server(&["--listen", "127.0.0.1:0"], &[]);
    crate::common::signal(&process.child, "HUP");
    loop {
        let line = process
            .logs
            .recv_timeout(DEADLINE)
            .expect("the server logs the reload");
        if line.contains("SIGHUP: reloading") {
            break;
        }
    }
    let health = crate::common::send(
        &crate::common::client(),
        "GET",
        &format!("http://{}/healthz", process.addr),
        &[],
        "",
    )
    .await;
    assert_eq!(health.status, 200, "still serving after SIGHUP");
    assert!(terminate(&mut process.child).success());
}
