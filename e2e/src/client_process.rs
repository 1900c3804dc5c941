//! The `relay-client` binary as a developer runs it: to its end ([`run_client`]) or as a
//! lasting agent whose lines a test reads ([`spawn_client`]).
//!
//! Uses no crate of ours (only the binary), so relay-client's own tests compile this file too
//! (see the crate docs).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::process::{binary, signal, wait_exit};
use super::requests::DEADLINE;

/// The `relay-client` binary.
pub fn client_binary() -> PathBuf {
    binary("relay-client", option_env!("CARGO_BIN_EXE_relay-client"))
}

/// The `relay-client` binary with `args`, none of the developer's `HOOKRELAY_*` variables and
/// no configuration file of theirs.
pub fn client_command(args: &[&str]) -> Command {
    let mut command = Command::new(client_binary());
    command
        .args(args)
        .env("XDG_CONFIG_HOME", "/nonexistent/hookrelay-test-config");
    for name in [
        "HOOKRELAY_SERVER",
        "HOOKRELAY_FORWARD",
        "HOOKRELAY_CHANNEL",
        "HOOKRELAY_TOKEN",
        "HOOKRELAY_CA",
        "HOOKRELAY_CERT",
        "HOOKRELAY_KEY",
        "HOOKRELAY_CLIENT_CONFIG",
        "HOOKRELAY_PRINT_BODY",
    ] {
        command.env_remove(name);
    }
    command
}

/// Starts `relay-client` and streams its stdout and stderr lines, for a run that lasts.
pub fn spawn_client(args: &[&str]) -> (Child, std_mpsc::Receiver<String>) {
    let mut child = client_command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("relay-client starts");
    let (tx, rx) = std_mpsc::channel();
    for pipe in [
        Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().expect("stderr")),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    (child, rx)
}

/// An agent for channel `channel` on the relay at `addr`, forwarding to `target`, with `extra`
/// arguments.
pub fn spawn_agent(
    addr: SocketAddr,
    target: SocketAddr,
    channel: &str,
    extra: &[&str],
) -> (Child, std_mpsc::Receiver<String>) {
    let server = format!("http://{addr}");
    let forward = format!("http://{target}");
    let mut args = vec![
        "--server",
        &server,
        "--forward",
        &forward,
        "--channel",
        channel,
    ];
    args.extend_from_slice(extra);
    spawn_client(&args)
}

/// The next line that `pred` accepts; panics after [`DEADLINE`].
pub fn line_matching(rx: &std_mpsc::Receiver<String>, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("expected line printed in time");
        if pred(&line) {
            return line;
        }
    }
}

/// SIGINT, then a clean exit.
pub fn interrupt(child: &mut Child) {
    signal(child, "INT");
    assert!(wait_exit(child).success());
}

/// A one-shot target on a std thread: answers every request with 202 and `ok`.
pub fn start_std_target() -> SocketAddr {
    start_std_target_answering("202 Accepted", b"ok".to_vec())
}

/// A one-shot target on a std thread: answers every request with `status` (`200 OK`) and
/// `body`, one connection per request.
pub fn start_std_target_answering(status: &'static str, body: Vec<u8>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    addr
}

/// How one run of `relay-client` to its end went.
#[derive(Debug)]
pub struct Run {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `relay-client` to its end (within [`DEADLINE`]) without blocking the runtime.
pub async fn run_client(args: &[&str]) -> Run {
    let child = client_command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("relay-client starts");
    let (tx, rx) = oneshot::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let output = tokio::time::timeout(DEADLINE, rx)
        .await
        .unwrap_or_else(|_| panic!("relay-client {args:?} did not exit in time"))
        .expect("waiting thread answers")
        .expect("relay-client output");
    Run {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs `relay-client` until `done` accepts the run, polling until [`DEADLINE`]: for what the
/// server records just after it answers the sender.
pub async fn run_client_until(args: &[&str], done: impl Fn(&Run) -> bool) -> Run {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let run = run_client(args).await;
        if done(&run) {
            return run;
        }
        assert!(
            Instant::now() < deadline,
            "never got the expected run: {run:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
