//! An HTTP client for the tests: one request, the whole answer, within [`DEADLINE`].
//!
//! Uses none of our crates, so relay-server's and relay-client's own tests compile this file
//! too (see the crate docs).

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinHandle;

/// Upper bound for anything a test waits on.
pub const DEADLINE: Duration = Duration::from_secs(20);

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

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The delivery id the relay put on its answer, if any.
    pub fn delivery(&self) -> Option<String> {
        self.headers
            .get("x-hookrelay-delivery")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
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
    try_send_body(client, method, url, headers, body, DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

/// Like [`send_body`], for a server that may be gone: `Err` says why no whole answer came
/// within `timeout`.
pub async fn try_send_body<C: Connect + Clone + Send + Sync + 'static>(
    client: &Client<C, BoxBody<Bytes, Infallible>>,
    method: &str,
    url: &str,
    headers: &[(&str, &[u8])],
    body: BoxBody<Bytes, Infallible>,
    timeout: Duration,
) -> Result<Answer, String> {
    let mut req = http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(body).expect("valid request");
    let exchange = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| format!("request not sent: {e:?}"))?;
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("answer body: {e:?}"))?;
        Ok(Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: body.to_bytes(),
        })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| "no answer in time".to_owned())?
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

/// GETs `url`, with `token` as a bearer token when given.
pub async fn get_with(url: &str, token: Option<&str>) -> Answer {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &[u8])> = bearer
        .iter()
        .map(|b| ("authorization", b.as_bytes()))
        .collect();
    send(&client(), "GET", url, &headers, "").await
}

/// A request head of exactly `len` bytes on the wire (request line, headers, the empty line)
/// for `path`, padded with one `X-Pad` header, and `extra` header lines before it.
pub fn head_of_len(path: &str, extra: &str, len: usize) -> String {
    let fixed = format!(
        "POST {path} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\nContent-Length: 0\r\n{extra}X-Pad: \r\n\r\n"
    );
    let pad = len
        .checked_sub(fixed.len())
        .expect("len leaves room for the fixed part");
    let head = fixed.replace("X-Pad: ", &format!("X-Pad: {}", "a".repeat(pad)));
    assert_eq!(head.len(), len);
    head
}

/// The status and JSON `error` of a raw answer; panics unless it is JSON.
pub fn json_refusal(answer: &str) -> (u16, String) {
    let (head, body) = answer.split_once("\r\n\r\n").expect("a whole answer");
    let status = head[9..12].parse().expect("status");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let doc: serde_json::Value = serde_json::from_str(body).expect("JSON body");
    (status, doc["error"].as_str().expect("error").to_owned())
}
