//! What an operator deploys: the binary as a systemd `Type=notify` service with a watchdog.

mod common;

use std::fs::File;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{DEADLINE, terminate};

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
