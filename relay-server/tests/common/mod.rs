//! Test harness: the real server and a real agent in-process on 127.0.0.1:0, a real local
//! target, and an HTTP client. Nothing here mocks our own crates.

#![allow(dead_code)]

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::rt::TokioExecutor;
use relay_server::Config;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Upper bound for anything a test waits on.
pub const DEADLINE: Duration = Duration::from_secs(20);

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

pub struct TestAgent {
    pub public_url: String,
    pub channel: String,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), relay_client::Error>>,
}

pub fn agent_config(server: &TestServer, target: &str) -> relay_client::AgentConfig {
    let mut config =
        relay_client::AgentConfig::new(&server.url(), target).expect("valid agent config");
    config.backoff_min = Duration::from_millis(20);
    config.backoff_max = Duration::from_millis(200);
    config
}

/// Connects a real agent; returns once the server has welcomed it.
pub async fn start_agent(config: relay_client::AgentConfig) -> TestAgent {
    let agent = relay_client::Agent::connect(config, None)
        .await
        .expect("agent connects");
    let public_url = agent.public_url().to_owned();
    let channel = agent.channel().to_owned();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(agent.run(shutdown.clone()));
    TestAgent {
        public_url,
        channel,
        shutdown,
        task,
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

pub struct TestTarget {
    pub addr: SocketAddr,
    pub url: String,
    pub seen: mpsc::Receiver<Seen>,
    release: Arc<watch::Sender<bool>>,
}

impl TestTarget {
    /// Lets every request waiting in `/hold` (now or later) answer.
    pub fn release(&self) {
        self.release.send_replace(true);
    }
}

#[derive(Clone)]
struct TargetState {
    seen: mpsc::Sender<Seen>,
    release: Arc<watch::Sender<bool>>,
}

/// A local target on 127.0.0.1:0. Every request is reported on `seen`, then:
/// `/hold...` waits for [`TestTarget::release`] and answers 200 `released`; `/flaky...` answers 503
/// until then and 200 `finally` after; `/status/{code}` answers that
/// status; anything else answers 201 echoing the body, with `x-echo-method`, `x-echo-uri` and
/// two `x-repeat` headers.
pub async fn start_target() -> TestTarget {
    let (tx, seen) = mpsc::channel(4096);
    let release = Arc::new(watch::channel(false).0);
    let state = TargetState {
        seen: tx,
        release: Arc::clone(&release),
    };
    let app = Router::new()
        .fallback(target_handler)
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state);
    let addr = serve_local(app).await;
    TestTarget {
        addr,
        url: format!("http://{addr}"),
        seen,
        release,
    }
}

/// Serves `app` on 127.0.0.1:0 in the background; answers the bound address.
pub async fn serve_local(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener
        .local_addr()
        .expect("bound listener has an address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

async fn target_handler(State(state): State<TargetState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.expect("target reads body").to_bytes();
    let uri = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_default();
    let seen = Seen {
        method: parts.method.to_string(),
        uri: uri.clone(),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect(),
        body: body.clone(),
    };
    let _ = state.seen.send(seen).await;
    if uri.starts_with("/hold") {
        let _ = state
            .release
            .subscribe()
            .wait_for(|released| *released)
            .await;
        return Response::new(Body::from("released"));
    }
    if uri.starts_with("/flaky") {
        if *state.release.borrow() {
            return Response::new(Body::from("finally"));
        }
        let mut resp = Response::new(Body::from("not yet"));
        *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        return resp;
    }
    if let Some(code) = uri.strip_prefix("/status/") {
        let code: u16 = code.parse().expect("status code in path");
        let mut resp = Response::new(Body::from(format!("status {code}")));
        *resp.status_mut() = StatusCode::from_u16(code).expect("valid status");
        return resp;
    }
    Response::builder()
        .status(201)
        .header("x-echo-method", parts.method.as_str())
        .header("x-echo-uri", uri)
        .header("x-repeat", "one")
        .header("x-repeat", "two")
        .header("content-type", "application/octet-stream")
        .body(Body::from(body))
        .expect("valid response")
}

pub type TestClient = Client<HttpConnector, BoxBody<Bytes, Infallible>>;

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

/// The seconds of an answer's `Retry-After`.
pub fn retry_after(answer: &Answer) -> u64 {
    answer.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds")
}

/// Sends one request and reads the whole answer, over any connector (plain or HTTPS).
pub async fn send<C: Connect + Clone + Send + Sync + 'static>(
    client: &Client<C, BoxBody<Bytes, Infallible>>,
    method: &str,
    url: &str,
    headers: &[(&str, &[u8])],
    body: impl Into<Bytes>,
) -> Answer {
    let body = Full::new(body.into()).boxed();
    send_body(client, method, url, headers, body).await
}

/// Starts a POST of `body` to `url` in the background, for requests that stay in flight while
/// the test does something else.
pub fn spawn_post(client: &TestClient, url: &str, body: &'static str) -> JoinHandle<Answer> {
    let client = client.clone();
    let url = url.to_owned();
    tokio::spawn(async move { send(&client, "POST", &url, &[], body).await })
}

pub async fn send_body<C: Connect + Clone + Send + Sync + 'static>(
    client: &Client<C, BoxBody<Bytes, Infallible>>,
    method: &str,
    url: &str,
    headers: &[(&str, &[u8])],
    body: BoxBody<Bytes, Infallible>,
) -> Answer {
    let mut req = axum::http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(body).expect("valid request");
    let fut = async {
        let resp = client.request(req).await.expect("request sent");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("answer body").to_bytes();
        Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        }
    };
    tokio::time::timeout(DEADLINE, fut)
        .await
        .expect("answer within the deadline")
}

/// A server config with a durable store in `dir` (fsync off: the tests kill processes, not
/// machines).
pub fn durable_config(dir: &std::path::Path) -> Config {
    Config {
        store: relay_server::StoreConfig::Sqlite {
            dir: dir.to_owned(),
            fsync: false,
        },
        ..Config::default()
    }
}

/// GETs a JSON document from the server's API.
pub async fn get_json(client: &TestClient, url: &str) -> serde_json::Value {
    let answer = send(client, "GET", url, &[], Bytes::new()).await;
    assert_eq!(answer.status, 200, "GET {url}: {:?}", answer.body);
    answer.json()
}

/// Polls `url` (a JSON API) until `done` accepts the document; panics at the deadline with
/// the last document seen.
pub async fn poll_json(
    client: &TestClient,
    url: &str,
    mut done: impl FnMut(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let doc = get_json(client, url).await;
        if done(&doc) {
            return doc;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("condition not reached on {url}; last: {doc}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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

/// Receives the next request the target saw.
pub async fn next_seen(target: &mut TestTarget) -> Seen {
    tokio::time::timeout(DEADLINE, target.seen.recv())
        .await
        .expect("target saw a request within the deadline")
        .expect("target still running")
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

/// The `relay-server` binary, started by [`spawn_server`].
pub struct ServerProcess {
    pub child: Child,
    /// The address it logged as bound.
    pub addr: String,
    /// Its log lines after the one naming the address, as they come.
    pub logs: std::sync::mpsc::Receiver<String>,
    pub data: tempfile::TempDir,
}

/// A test that ends early (or forgets) leaves no server behind.
impl Drop for ServerProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts the binary, with its data dir in a fresh temporary directory, and returns once it
/// has logged the address it bound.
pub fn spawn_server(args: &[&str], env: &[(&str, &str)]) -> ServerProcess {
    let data = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_relay-server"))
        .args(args)
        .env("HOOKRELAY_DATA_DIR", data.path())
        .envs(env.iter().copied())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("relay-server starts");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, logs) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let addr = loop {
        let line = logs
            .recv_timeout(DEADLINE)
            .expect("server logs its address");
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest.split_whitespace().next().expect("address").to_owned();
        }
    };
    ServerProcess {
        child,
        addr,
        logs,
        data,
    }
}

/// Sends `signal` (`TERM`, `HUP`, ...) to `child` with kill(1).
pub fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([format!("-{signal}"), child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// Sends SIGTERM and waits for the exit.
pub fn terminate(child: &mut Child) -> std::process::ExitStatus {
    signal(child, "TERM");
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "server did not exit on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// GETs `url`, with `token` as a bearer token when given.
pub async fn get_with(url: &str, token: Option<&str>) -> Answer {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &[u8])> = bearer
        .iter()
        .map(|b| ("authorization", b.as_bytes()))
        .collect();
    send(&client(), "GET", url, &headers, "").await
}
