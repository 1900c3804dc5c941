//! The inspector's live feed (`/api/channels/{channel}/live`) read raw, as a browser's `fetch`
//! reads it.
//!
//! Uses relay-server (through [`TestServer`]) and no other crate of ours, so relay-server's own
//! tests compile this file too (see the crate docs).

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::requests::{DEADLINE, client};
use super::server::{TestServer, closed, create_channel, start_server};

/// The channel the tests register, served by an agent holding its token.
pub const CHANNEL: &str = "inspected";

/// A live stream being read: the response body and what has arrived of the next event.
pub struct LiveStream {
    body: Incoming,
    buf: String,
}

/// Opens `/api/channels/{channel}/live` with `token`; answers the status and, on 200, the
/// stream. Once this returns, the server is subscribed: every later change is on the stream.
pub async fn open_live(
    server: &TestServer,
    channel: &str,
    token: Option<&str>,
) -> (u16, Option<LiveStream>) {
    open_live_at(&server.url(), channel, token).await
}

/// [`open_live`] on the server (or inspector) at `base`.
pub async fn open_live_at(
    base: &str,
    channel: &str,
    token: Option<&str>,
) -> (u16, Option<LiveStream>) {
    let mut req = http::Request::get(format!("{base}/api/channels/{channel}/live"));
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let req = req
        .body(Empty::<Bytes>::new().map_err(|e| match e {}).boxed())
        .expect("valid request");
    let resp = tokio::time::timeout(DEADLINE, client().request(req))
        .await
        .expect("answer within the deadline")
        .expect("request sent");
    let status = resp.status().as_u16();
    if status != 200 {
        return (status, None);
    }
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let stream = LiveStream {
        body: resp.into_body(),
        buf: String::new(),
    };
    (status, Some(stream))
}

impl LiveStream {
    /// The next event's name and JSON data (keep-alive comments skipped); `None` when the
    /// stream ends. Panics after [`DEADLINE`].
    pub async fn next(&mut self) -> Option<(String, Value)> {
        let read = async {
            loop {
                if let Some(end) = self.buf.find("\n\n") {
                    let block: String = self.buf.drain(..end + 2).collect();
                    let (mut name, mut data) = (String::from("message"), String::new());
                    for line in block.lines() {
                        if let Some(v) = line.strip_prefix("event:") {
                            name = v.trim_start().to_owned();
                        } else if let Some(v) = line.strip_prefix("data:") {
                            data.push_str(v.trim_start());
                        }
                    }
                    if data.is_empty() {
                        continue;
                    }
                    let data = serde_json::from_str(&data).expect("event data is JSON");
                    return Some((name, data));
                }
                let frame = self.body.frame().await?.expect("stream readable");
                if let Ok(bytes) = frame.into_data() {
                    self.buf
                        .push_str(std::str::from_utf8(&bytes).expect("stream is UTF-8"));
                }
            }
        };
        tokio::time::timeout(DEADLINE, read)
            .await
            .expect("an event or the end within the deadline")
    }
}

/// A closed server with [`CHANNEL`] registered; answers its token.
pub async fn server_with_channel() -> (TestServer, String) {
    let server = start_server(closed()).await;
    let token = create_channel(&server, CHANNEL, json!({})).await;
    (server, token)
}
