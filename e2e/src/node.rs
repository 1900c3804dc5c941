//! Node.js and the providers' official libraries in `tests/senders` (pinned in its
//! `package-lock.json`): the real senders and verifying targets some end-to-end tests run
//! through the relay. Node must be installed: its absence fails those tests rather than
//! skipping them, so what they guarantee cannot silently go unchecked.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use tokio::sync::mpsc;

/// Lines of a script's stdout buffered before its reader thread waits.
const LINE_QUEUE: usize = 64;

/// `tests/senders`, with its scripts, its locked libraries installed ([`install_dependencies`])
/// and Node checked ([`require_node`]).
pub fn senders() -> PathBuf {
    let dir = senders_dir();
    require_node();
    install_dependencies(&dir);
    dir
}

pub fn senders_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/senders");
    assert!(
        dir.join("senders.mjs").is_file(),
        "{} has no senders.mjs",
        dir.display()
    );
    dir
}

pub fn require_node() {
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

/// Installs the locked libraries unless they already are, as `package-lock.json` is now;
/// `npm ci` installs exactly what it names.
pub fn install_dependencies(dir: &Path) {
    // npm writes node_modules/.package-lock.json as it installs: older than the lock file
    // means the lock file changed since (a library added), and the install must run again.
    let modified = |path: PathBuf| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let installed = modified(dir.join("node_modules/.package-lock.json"));
    let locked = modified(dir.join("package-lock.json"));
    if installed.is_some() && installed >= locked {
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

/// A running script of `tests/senders`. Dropping it kills Node, so a failed assertion leaves
/// no process behind.
pub struct Node {
    script: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Node {
    /// Runs `node SCRIPT` in `dir`, its standard streams piped.
    pub fn spawn(dir: &Path, script: &'static str) -> Self {
        let mut child = Command::new("node")
            .arg(script)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `node {script}`: {e}"));
        let stdin = child.stdin.take();
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Node {
            script,
            child,
            stdin,
            stderr: Some(stderr),
        }
    }

    /// Stdout, line by line; the channel closes when Node closes its stdout. tokio's
    /// `process` feature is not enabled, so a thread does the blocking reads.
    pub fn stdout_lines(&mut self) -> mpsc::Receiver<String> {
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

    /// Writes `line` to the script's stdin, which stays open for more.
    pub fn send_line(&mut self, line: &str) {
        let script = self.script;
        let stdin = self.stdin.as_mut().expect("stdin is still open");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("write to {script}: {e}"));
    }

    /// Closes the script's stdin: it has been told everything.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().expect("wait for the script")
    }

    /// Kills Node if it still runs and returns its output for an assertion message.
    pub fn finish(&mut self, stdout: &[String]) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let stderr = self
            .stderr
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        let script = self.script;
        format!(
            "--- {script} stdout ---\n{}\n--- {script} stderr ---\n{stderr}",
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
