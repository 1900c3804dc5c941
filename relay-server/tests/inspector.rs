//! The live inspector: its event stream, read raw as a browser's `fetch` would, and its page's
//! headers.

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use serde_json::{Value, json};

/// The channel the tests register, served by an agent holding its token.
const CHANNEL: &str = "inspected";

/// A live stream being read: the response body and what has arrived of the next event.
struct LiveStream {
    body: Incoming,
    buf: String,
}

/// Opens `/api/channels/{channel}/live` with `token`; answers the status and, on 200, the
/// stream. Once this returns, the server is subscribed: every later change is on the stream.
async fn open_live(
    server: &TestServer,
    channel: &str,
    token: Option<&str>,
) -> (u16, Option<LiveStream>) {
    let mut req = axum::http::Request::get(format!("{}/api/channels/{channel}/live", server.url()));
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
    async fn next(&mut self) -> Option<(String, Value)> {
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
async fn server_with_channel() -> (TestServer, String) {
    let server = start_server(closed()).await;
    let token = create_channel(&server, CHANNEL, json!({})).await;
    (server, token)
}

#[tokio::test]
async fn the_live_feed_needs_the_channel_token() {
    let (server, token) = server_with_channel().await;
    let other = create_channel(&server, "other", json!({})).await;
    for (who, presented, status) in [
        ("no token", None, 401),
        ("a wrong token", Some("hrt_guess"), 401),
        ("another channel's token", Some(other.as_str()), 401),
        ("the channel's token", Some(token.as_str()), 200),
        ("the admin token", Some(ADMIN), 200),
    ] {
        let (got, _) = open_live(&server, CHANNEL, presented).await;
        assert_eq!(got, status, "{who}");
    }
    let (got, _) = open_live(&server, "unregistered", Some(&token)).await;
    assert_eq!(got, 404, "an unregistered channel on a closed server");
}

#[tokio::test]
async fn a_webhook_arrives_as_received_then_its_attempt() {
    let (server, token) = server_with_channel().await;
    create_channel(&server, "other", json!({})).await;
    let target = start_target().await;
    let mut config = agent_config(&server, &target.url);
    config.channel = Some(protocol::ChannelId::parse(CHANNEL).expect("valid"));
    config.token = Some(token.clone());
    let _agent = start_agent(config).await;
    let (_, live) = open_live(&server, CHANNEL, Some(&token)).await;
    let mut live = live.expect("stream open");

    // Another channel's webhook (stored and queued: it has no agent) is not on this stream.
    let queued = send(
        &client(),
        "POST",
        &format!("{}/h/other/elsewhere", server.url()),
        &[],
        "not yours",
    )
    .await;
    assert_eq!(queued.status, 202);
    let answer = send(
        &client(),
        "POST",
        &format!("{}/h/{CHANNEL}/github?x=1", server.url()),
        &[("content-type", b"application/json")],
        r#"{"zen":"hi"}"#,
    )
    .await;
    assert_eq!(answer.status, 201);
    let id = answer.headers["x-hookrelay-delivery"]
        .to_str()
        .expect("ASCII id");

    let (name, received) = live.next().await.expect("an event");
    assert_eq!(name, "received", "{received}");
    assert_eq!(received["id"], id);
    assert_eq!(received["method"], "POST");
    assert_eq!(received["path"], "/github");
    assert_eq!(received["query"], "x=1");
    assert_eq!(received["body_bytes"], 12);
    // Received as it was stored: before any attempt.
    assert_eq!(received["status"], "delivering");
    assert_eq!(received["attempts"], 0);

    let (name, attempt) = live.next().await.expect("an event");
    assert_eq!(name, "attempt", "{attempt}");
    assert_eq!(attempt["id"], id);
    assert_eq!(attempt["status"], "delivered");
    assert_eq!(attempt["attempt"]["n"], 1);
    assert_eq!(attempt["attempt"]["kind"], "live");
    assert_eq!(attempt["attempt"]["status"], 201);
    assert!(attempt["attempt"]["headers"].is_null(), "no response data");
}

#[tokio::test]
async fn the_live_feed_ends_when_the_server_shuts_down() {
    let (server, token) = server_with_channel().await;
    let (_, live) = open_live(&server, CHANNEL, Some(&token)).await;
    let mut live = live.expect("stream open");
    // The shutdown grace is 30 s, over the stop deadline: an open stream would hold it.
    let stopped = tokio::spawn(server.stop());
    assert!(live.next().await.is_none(), "the stream ends");
    stopped.await.expect("server stopped within the deadline");
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_locked_down() {
    let (server, _) = server_with_channel().await;
    for (path, content_type) in [
        (format!("/c/{CHANNEL}"), "text/html; charset=utf-8"),
        (
            "/c/assets/inspector.js".to_owned(),
            "text/javascript; charset=utf-8",
        ),
        (
            "/c/assets/inspector.css".to_owned(),
            "text/css; charset=utf-8",
        ),
    ] {
        let answer = send(
            &client(),
            "GET",
            &format!("{}{path}", server.url()),
            &[],
            "",
        )
        .await;
        assert_eq!(answer.status, 200, "{path}");
        let header = |name: &str| answer.headers[name].to_str().expect("ASCII");
        assert_eq!(header("content-type"), content_type, "{path}");
        assert_eq!(header("cache-control"), "no-store");
        assert_eq!(header("x-content-type-options"), "nosniff");
        assert_eq!(header("referrer-policy"), "no-referrer");
        let csp = header("content-security-policy");
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "connect-src 'self'",
        ] {
            assert!(csp.contains(directive), "{csp}");
        }
        assert!(!csp.contains("unsafe"), "{csp}");
    }
    let page = send(
        &client(),
        "GET",
        &format!("{}/c/{CHANNEL}", server.url()),
        &[],
        "",
    )
    .await;
    let page = std::str::from_utf8(&page.body).expect("UTF-8 page");
    assert!(page.contains(r#"<script src="/c/assets/inspector.js" defer></script>"#));
    assert_eq!(page.matches("<script").count(), 1, "no inline script");
    assert!(!page.contains("style="), "no inline style");
    // The page needs no token (it holds no data), but only a valid channel name has one.
    let bad = send(
        &client(),
        "GET",
        &format!("{}/c/bad%20name", server.url()),
        &[],
        "",
    )
    .await;
    assert_eq!(bad.status, 404);
}
