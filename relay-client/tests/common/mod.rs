//! Test harness for the `relay-client` binary: the real server in-process on 127.0.0.1:0, a
//! real local target, and the binary run as a developer runs it. Nothing here mocks our crates.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Upper bound for anything a test waits on.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub async fn start_server(config: relay_server::Config) -> (SocketAddr, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    tokio::spawn(relay_server::serve(listener, config, shutdown.clone()));
    (addr, shutdown)
}

/// The `relay-client` binary with `args`, none of the developer's `HOOKRELAY_*` variables and
/// no configuration file of theirs.
pub fn client_command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_relay-client"));
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

/// What the target saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query as received.
    pub uri: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Bytes,
}

impl Seen {
    pub fn header(&self, name: &str) -> Vec<&[u8]> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
            .collect()
    }
}

pub struct Target {
    pub url: String,
    pub seen: mpsc::Receiver<Seen>,
}

impl Target {
    /// The next request the target saw.
    pub async fn next(&mut self) -> Seen {
        tokio::time::timeout(DEADLINE, self.seen.recv())
            .await
            .expect("target saw a request within the deadline")
            .expect("target still running")
    }
}

/// A local target on 127.0.0.1:0: reports every request on `seen` and answers 201 `stored`.
pub async fn start_target() -> Target {
    let (tx, seen) = mpsc::channel(64);
    let app = Router::new().fallback(record).with_state(tx);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    Target {
        url: format!("http://{addr}"),
        seen,
    }
}

async fn record(State(seen): State<mpsc::Sender<Seen>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.expect("target reads body").to_bytes();
    let _ = seen
        .send(Seen {
            method: parts.method.to_string(),
            uri: parts
                .uri
                .path_and_query()
                .map(|pq| pq.as_str().to_owned())
                .unwrap_or_default(),
            headers: parts
                .headers
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
                .collect(),
            body,
        })
        .await;
    Response::builder()
        .status(201)
        .body(axum::body::Body::from("stored"))
        .expect("valid response")
}

/// Connects a real agent serving `channel` on the server at `addr`, forwarding to `target`;
/// returns once the server has welcomed it. Cancel the token to stop it.
pub async fn start_agent(
    addr: SocketAddr,
    channel: &str,
    target: &str,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<Result<(), relay_client::Error>>,
) {
    let mut config = relay_client::AgentConfig::new(&format!("http://{addr}"), target)
        .expect("valid agent config");
    config.channel = Some(protocol::ChannelId::parse(channel).expect("valid channel"));
    let agent = relay_client::Agent::connect(config, None)
        .await
        .expect("agent connects");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(agent.run(shutdown.clone()));
    (shutdown, task)
}

/// Sends one request and returns its status, its `x-hookrelay-delivery` header (if any) and
/// its body.
pub async fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &[u8])],
    body: &'static [u8],
) -> (u16, Option<String>, Bytes) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut request = http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from_static(body)))
        .expect("valid request");
    let exchange = async {
        let response = client.request(request).await.expect("request sent");
        let status = response.status().as_u16();
        let delivery = response
            .headers()
            .get("x-hookrelay-delivery")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response
            .into_body()
            .collect()
            .await
            .expect("answer body")
            .to_bytes();
        (status, delivery, body)
    };
    tokio::time::timeout(DEADLINE, exchange)
        .await
        .expect("answer within the deadline")
}
