//! The `relay-server` binary as an operator runs it: flags and env, health, SIGTERM, every
//! line of its log written by the time it exits, errors at start-up.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

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

/// Webhooks sent before the signal: their log lines (about 180 bytes each) are more than the
/// 64 KiB a pipe holds plus the log writer's 64 KiB buffer, so some are still queued in the
/// server when it stops.
const LOGGED_WEBHOOKS: usize = 1000;

/// Starts the binary with its stderr on a pipe that the test reads only up to the line naming
/// the address, then not before `go` says so: meanwhile the pipe fills up and holds the log
/// writer, as a slow terminal or a stalled journald would. Answers the child, its address,
/// the sender of `go` and, once `go` is sent, the rest of the log to the end.
fn spawn_with_held_stderr() -> (
    std::process::Child,
    String,
    std_mpsc::Sender<()>,
    std_mpsc::Receiver<Vec<String>>,
) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_relay-server"))
        .args(["--listen", "127.0.0.1:0", "--store", "memory"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("relay-server starts");
    let stderr = child.stderr.take().expect("piped stderr");
    let (addr_tx, addr) = std_mpsc::channel();
    let (go, go_rx) = std_mpsc::channel();
    let (rest_tx, rest) = std_mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stderr).lines().map_while(Result::ok);
        for line in lines.by_ref() {
            if line.contains("relay server listening") {
                let _ = addr_tx.send(line);
                break;
            }
        }
        // An error means the test is gone; read to the end all the same.
        let _ = go_rx.recv();
        let _ = rest_tx.send(lines.collect());
    });
    let listening = addr
        .recv_timeout(DEADLINE)
        .expect("relay-server logs the address it listens on");
    let addr = listening
        .split("addr=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the address")
        .to_owned();
    (child, addr, go, rest)
}

/// Whether every thread of process `pid` but its main thread and the log writer has ended:
/// the async runtime is gone, so the process has nothing left to do but write out its logs
/// and exit. True once the process is gone (and where there is no `/proc`).
fn only_the_log_writer_is_left(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return true;
    };
    let others = tasks
        .flatten()
        .filter(|task| {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            comm.trim_end() != "log-writer"
        })
        .count();
    others <= 1
}

/// Logs go through a writer thread: a clean stop on SIG`name` must still write every line
/// logged, down to the last ones, logged just before the process exits, even when stderr is
/// slow to take them. The test holds stderr until the process has nothing left to run but
/// its log writer, so lines are still queued then: a guard dropped too early or never (a
/// `process::exit`, say) loses them.
async fn stop_on_signal_writes_every_line(name: &str) {
    let (mut child, addr, go, rest) = spawn_with_held_stderr();
    let client = client();
    let mut ids = Vec::with_capacity(LOGGED_WEBHOOKS);
    for _ in 0..LOGGED_WEBHOOKS {
        let answer = send(
            &client,
            "POST",
            &format!("http://{addr}/h/flushed/x"),
            &[],
            "b",
        )
        .await;
        assert_eq!(answer.status, 202, "{:?}", answer.body);
        ids.push(answer.delivery().expect("a delivery id"));
    }
    signal(&child, name);
    // Only once the process would exit (were its logs not written out), may stderr move on.
    let deadline = std::time::Instant::now() + DEADLINE;
    while !only_the_log_writer_is_left(child.id()) {
        assert!(
            std::time::Instant::now() < deadline,
            "relay-server did not stop in time"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    go.send(()).expect("the reader waits");
    assert!(wait_exit(&mut child).success());
    let log = rest
        .recv_timeout(DEADLINE)
        .expect("stderr closes at the exit");
    let tail = || log[log.len().saturating_sub(5)..].join("\n");
    for id in [
        &ids[0],
        &ids[LOGGED_WEBHOOKS / 2],
        &ids[LOGGED_WEBHOOKS - 1],
    ] {
        assert!(
            log.iter()
                .any(|line| line.contains(id.as_str()) && line.contains("queued")),
            "no line for webhook {id}; the log ends with:\n{}",
            tail()
        );
    }
    let queued = log.iter().filter(|line| line.contains("queued")).count();
    assert_eq!(queued, LOGGED_WEBHOOKS, "{}", tail());
    let stopping = log
        .iter()
        .position(|line| line.contains("shutdown signal received"))
        .unwrap_or_else(|| panic!("no line for the signal; the log ends with:\n{}", tail()));
    assert!(
        stopping + 1 < log.len() && log[log.len() - 1].contains("relay server stopped"),
        "the log ends with:\n{}",
        tail()
    );
}

#[tokio::test]
async fn sigterm_writes_every_line_logged_before_the_exit() {
    stop_on_signal_writes_every_line("TERM").await;
}

#[tokio::test]
async fn sigint_writes_every_line_logged_before_the_exit() {
    stop_on_signal_writes_every_line("INT").await;
}

#[test]
fn a_start_up_error_comes_after_every_line_logged_before_it() {
    // Taken, so that --metrics-listen fails once the server has logged that it listens.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let metrics = taken.local_addr().expect("bound address").to_string();
    let data = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_relay-server"))
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", &metrics])
        .arg("--data-dir")
        .arg(data.path())
        .env("RUST_LOG", "info")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines.iter().any(|l| l.contains("relay server listening")),
        "{stderr}"
    );
    let last = lines.last().expect("an error line");
    assert!(
        last.starts_with(&format!(
            "relay-server: cannot listen on {metrics} for --metrics-listen: "
        )),
        "the error comes last: {stderr}"
    );
}

#[test]
fn an_unusable_data_dir_fails_with_a_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_relay-server"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&file)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("relay-server: "), "{stderr}");
    assert!(last.contains(&file.display().to_string()), "{stderr}");
}
