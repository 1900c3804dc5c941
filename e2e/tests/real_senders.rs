//! Signed webhooks from real senders still verify at the target after the relay.
//!
//! The signing and the verifying are done by the providers' official Node libraries
//! (`@octokit/webhooks-methods` for GitHub, `stripe`, `standardwebhooks`), pinned in
//! `tests/senders/package-lock.json`; `tests/senders/senders.mjs` is both the senders and the
//! verifying target. A hand-written HMAC check here would only prove that we agree with
//! ourselves; the official libraries prove that a real receiver accepts what we forward.
//!
//! Node must be installed: its absence fails the test rather than skipping it, so the
//! guarantee cannot silently go unchecked.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hookrelay_e2e::{agent_config, start_agent, start_server};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout, timeout_at};

/// Bound on Node loading the libraries and its target listening.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on the whole run of the senders (the script bounds itself at 30 s).
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on the relay and the agent stopping once cancelled.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Lines of the script's stdout buffered before its reader thread waits.
const LINE_QUEUE: usize = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_webhooks_verify_at_the_target_with_official_libraries() {
    let dir = senders_dir();
    require_node();
    install_dependencies(&dir);

    let mut node = Node::spawn(&dir);
    let mut lines = node.stdout_lines();
    let mut transcript = Vec::new();
    let startup = Instant::now() + STARTUP_TIMEOUT;
    let target_port = loop {
        match timeout_at(startup, lines.recv()).await {
            Ok(Some(line)) => match line.strip_prefix("TARGET_PORT=") {
                Some(port) => break port.trim().parse::<u16>().expect("TARGET_PORT is a port"),
                None => transcript.push(line),
            },
            Ok(None) => panic!(
                "senders.mjs exited before its target listened\n{}",
                node.finish(&transcript)
            ),
            Err(_) => panic!(
                "senders.mjs printed no TARGET_PORT within {STARTUP_TIMEOUT:?}\n{}",
                node.finish(&transcript)
            ),
        }
    };

    let server = start_server(relay_server::Config::default()).await;
    let agent = start_agent(agent_config(
        &server,
        &format!("http://127.0.0.1:{target_port}"),
    ))
    .await;
    let url = agent.public_url.clone();

    node.send_line(&url);
    let run = Instant::now() + RUN_TIMEOUT;
    loop {
        match timeout_at(run, lines.recv()).await {
            Ok(Some(line)) => transcript.push(line),
            Ok(None) => break,
            Err(_) => panic!(
                "senders.mjs did not finish within {RUN_TIMEOUT:?}\n{}",
                node.finish(&transcript)
            ),
        }
    }
    // Its stdout is closed, so Node is exiting: the wait below is short.
    let status = node.wait();
    let report = node.finish(&transcript);
    assert!(
        status.success(),
        "senders through the relay at {url} failed ({status})\n{report}"
    );
    assert!(
        transcript
            .iter()
            .any(|l| l == "senders: 6 passed, 0 failed"),
        "unexpected senders summary\n{report}"
    );

    agent.shutdown.cancel();
    timeout(STOP_TIMEOUT, agent.task)
        .await
        .expect("agent stops within the deadline")
        .expect("agent task not panicked")
        .expect("agent ran without error");
    server.stop().await;
}

fn senders_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/senders");
    assert!(
        dir.join("senders.mjs").is_file(),
        "{} has no senders.mjs",
        dir.display()
    );
    dir
}

fn require_node() {
    match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "`node --version` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "Node.js is required to check signed webhooks with the providers' official \
             libraries, but `node` could not be run ({e}); install Node.js 20 or newer"
        ),
    }
}

/// Installs the locked libraries unless they already are; `npm ci` installs exactly what
/// `package-lock.json` names.
fn install_dependencies(dir: &Path) {
    if dir.join("node_modules").is_dir() {
        return;
    }
    let out = Command::new("npm")
        .arg("ci")
        .arg("--prefix")
        .arg(dir)
        .args(["--no-audit", "--no-fund"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run `npm ci` (is npm installed?): {e}"));
    assert!(
        out.status.success(),
        "`npm ci --prefix {}` failed ({})\nstdout:\n{}\nstderr:\n{}",
        dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The running `senders.mjs`. Dropping it kills Node, so a failed assertion leaves no process
/// behind.
struct Node {
    child: Child,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Node {
    fn spawn(dir: &Path) -> Self {
        let mut child = Command::new("node")
            .arg("senders.mjs")
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `node senders.mjs`: {e}"));
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Node {
            child,
            stderr: Some(stderr),
        }
    }

    /// Stdout, line by line; the channel closes when Node closes its stdout. tokio's
    /// `process` feature is not enabled, so a thread does the blocking reads.
    fn stdout_lines(&mut self) -> mpsc::Receiver<String> {
        let stdout = self.child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel(LINE_QUEUE);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.blocking_send(line).is_err() {
                    break;
                }
            }
        });
        rx
    }

    fn send_line(&mut self, line: &str) {
        let mut stdin = self.child.stdin.take().expect("stdin is piped");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .expect("write the relay URL to senders.mjs");
    }

    fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().expect("wait for senders.mjs")
    }

    /// Kills Node if it still runs and returns its output for an assertion message.
    fn finish(&mut self, stdout: &[String]) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let stderr = self
            .stderr
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        format!(
            "--- senders.mjs stdout ---\n{}\n--- senders.mjs stderr ---\n{stderr}",
            stdout.join("\n")
        )
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
