//! The relay server: in-process on 127.0.0.1:0 ([`start_server`]), or the `relay-server`
//! binary as an operator runs it ([`spawn_server`]); channels through its admin API.
//!
//! Uses relay-server and no other crate of ours, so relay-server's own tests compile this file
//! too (see the crate docs).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use relay_server::Config;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::process::binary;
use super::requests::{Answer, DEADLINE, TestClient, client, send};

pub struct TestServer {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), relay_server::ServeError>>,
}

impl TestServer {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The URL of a server started with `Config::tls`.
    pub fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Stops the server gracefully and waits until it has stopped.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("server stops within the deadline")
            .expect("server task not panicked")
            .expect("server ran without error");
    }
}

pub async fn start_server(config: Config) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    serve_on(listener, config)
}

pub fn serve_on(listener: TcpListener, config: Config) -> TestServer {
    let addr = listener
        .local_addr()
        .expect("bound listener has an address");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(relay_server::serve(listener, config, shutdown.clone()));
    TestServer {
        addr,
        shutdown,
        task,
    }
}

/// A server config with a durable store in `dir` (fsync off: the tests kill processes, not
/// machines).
pub fn durable_config(dir: &Path) -> Config {
    Config {
        store: relay_server::StoreConfig::Sqlite {
            dir: dir.to_owned(),
            fsync: false,
        },
        ..Config::default()
    }
}

/// `config` with tight HTTP limits: a 300 ms header timeout, 20 headers, a 16 KiB head.
pub fn http_limits(config: Config) -> Config {
    Config {
        http: relay_server::HttpLimits {
            header_timeout: Duration::from_millis(300),
            max_headers: 20,
            max_head_bytes: 16 * 1024,
        },
        ..config
    }
}

/// Writes `head` raw on a fresh connection and reads until the server closes it; returns
/// what came back.
pub async fn raw_exchange(server: &TestServer, head: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    tcp.write_all(head).await.expect("write head");
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, tcp.read_to_end(&mut answer))
        .await
        .expect("server closes the connection in time")
        .ok();
    String::from_utf8_lossy(&answer).into_owned()
}

/// Polls `GET /api/channels/{channel}` until it reports `agents` agents (the server must let
/// anyone read the channel: open mode without an agent token).
pub async fn wait_for_agents(client: &TestClient, server: &str, channel: &str, agents: u64) {
    let url = format!("{server}/api/channels/{channel}");
    let poll = async {
        loop {
            let answer = send(client, "GET", &url, &[], Bytes::new()).await;
            if answer.json()["agent_count"] == agents {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(DEADLINE, poll)
        .await
        .unwrap_or_else(|_| panic!("channel {channel} never had {agents} agents"));
}

/// The admin token of [`closed`] servers.
pub const ADMIN: &str = "admin-token-0123456789";

/// A server with open mode off and the admin API on.
pub fn closed() -> Config {
    Config {
        open: Some(false),
        admin_token: Some(ADMIN.to_owned()),
        ..Config::default()
    }
}

/// Registers `name` through the admin API; returns its token.
pub async fn create_channel(server: &TestServer, name: &str, extra: Value) -> String {
    let mut body = json!({ "name": name });
    if let (Value::Object(body), Value::Object(extra)) = (&mut body, extra) {
        body.extend(extra);
    }
    let answer = admin(server, "POST", "/api/admin/channels", body.to_string()).await;
    assert_eq!(answer.status, 201, "{:?}", answer.body);
    let doc = answer.json();
    assert_eq!(doc["name"], name);
    assert_eq!(doc["url"], format!("{}/h/{name}", server.url()));
    doc["token"].as_str().expect("token shown once").to_owned()
}

pub async fn admin(server: &TestServer, method: &str, path: &str, body: String) -> Answer {
    let bearer = format!("Bearer {ADMIN}");
    let headers: &[(&str, &[u8])] = &[
        ("authorization", bearer.as_bytes()),
        ("content-type", b"application/json"),
    ];
    send(
        &client(),
        method,
        &format!("{}{path}", server.url()),
        headers,
        body,
    )
    .await
}

/// A body unique to `i`, with bytes that are not UTF-8, so byte-exactness is checked.
pub fn body_for(i: usize) -> Bytes {
    let mut body = format!("event {i} ").into_bytes();
    body.extend_from_slice(&[0xff, 0x00, (i % 251) as u8, 0xc3]);
    Bytes::from(body)
}

/// POSTs a webhook (with an `x-sig` header) that the server must queue: no agent is
/// connected. Answers its id.
pub async fn post_queued(client: &TestClient, url: &str, body: Bytes) -> String {
    let answer = send(client, "POST", url, &[("x-sig", b"abc")], body).await;
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    let json = answer.json();
    assert_eq!(json["status"], "queued");
    json["id"].as_str().expect("id").to_owned()
}

/// The `relay-server` binary.
pub fn server_binary() -> PathBuf {
    binary("relay-server", option_env!("CARGO_BIN_EXE_relay-server"))
}

/// Lines of a server's log kept to show when a test fails.
const LOG_TAIL: usize = 400;

/// The `relay-server` binary, started by [`spawn_server`]. Dropping it kills the process, so
/// a test that ends early (or forgets) leaves no server behind; if the test is failing, the
/// last lines of the server's log are printed with it.
pub struct ServerProcess {
    pub child: Child,
    /// The address it logged as bound.
    pub addr: String,
    /// Its log lines after the one naming the address, as they come.
    pub logs: std_mpsc::Receiver<String>,
    /// The data dir of `HOOKRELAY_DATA_DIR`, unless the test gave `--data-dir`.
    pub data: tempfile::TempDir,
    tail: Arc<Mutex<VecDeque<String>>>,
}

impl ServerProcess {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The last lines the server logged.
    pub fn log_tail(&self) -> String {
        let tail = self.tail.lock().expect("log lock");
        tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// Waits for a log line containing `needle`.
    pub fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .logs
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no log line with {needle:?}"));
            if line.contains(needle) {
                return;
            }
        }
    }

    /// SIGKILL: no shutdown, no flush, nothing the server can do about it.
    pub fn sigkill(mut self) {
        self.child.kill().expect("SIGKILL sent");
        let status = self.child.wait().expect("killed server reaped");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "the server was killed by SIGKILL, not gone on its own: {status}"
        );
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- last lines of relay-server {} ---\n{}",
                self.addr,
                self.log_tail()
            );
        }
    }
}

/// Starts the binary, with its data dir in a fresh temporary directory, and returns once it
/// has logged the address it bound.
pub fn spawn_server(args: &[&str], env: &[(&str, &str)]) -> ServerProcess {
    let data = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(server_binary())
        .args(args)
        .env("HOOKRELAY_DATA_DIR", data.path())
        .envs(env.iter().copied())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("relay-server starts");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, logs) = std_mpsc::channel();
    let tail = Arc::new(Mutex::new(VecDeque::with_capacity(LOG_TAIL)));
    let kept = Arc::clone(&tail);
    // Reads until the process is gone, so the server never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line.clone());
            let mut tail = kept.lock().expect("log lock");
            if tail.len() == LOG_TAIL {
                tail.pop_front();
            }
            tail.push_back(line);
        }
    });
    let mut server = ServerProcess {
        child,
        addr: String::new(),
        logs,
        data,
        tail,
    };
    let deadline = Instant::now() + DEADLINE;
    server.addr = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = server.logs.recv_timeout(left) else {
            panic!(
                "relay-server did not log its address; its log:\n{}",
                server.log_tail()
            );
        };
        if !line.contains("relay server listening") {
            continue;
        }
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest.split_whitespace().next().expect("address").to_owned();
        }
    };
    server
}
