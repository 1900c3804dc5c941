//! The live inspector without an agent: its event stream, read raw as a browser's `fetch`
//! would, and its page's headers. (Webhooks on the stream, and the page in a real Chromium,
//! are in e2e's `inspector`.)

use crate::common::live::*;
use crate::common::*;
use relay_server::Config;
use serde_json::json;

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
        ("/c/assets/favicon.svg".to_owned(), "image/svg+xml"),
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

/// What the page's `<meta name="hookrelay-token">` says on `server` for `channel`.
async fn token_meta(server: &TestServer, channel: &str) -> String {
    let page = send(
        &client(),
        "GET",
        &format!("{}/c/{channel}", server.url()),
        &[],
        "",
    )
    .await;
    assert_eq!(page.status, 200);
    let page = std::str::from_utf8(&page.body).expect("UTF-8 page");
    let start = r#"<meta name="hookrelay-token" content=""#;
    let (_, rest) = page.split_once(start).expect("the token meta");
    let (value, _) = rest.split_once('"').expect("a closing quote");
    value.to_owned()
}

#[tokio::test]
async fn the_page_says_a_token_is_needed_exactly_when_a_call_without_one_is_refused() {
    let (server, _) = server_with_channel().await;
    // Open mode off: a registered channel and a name nobody registered read the same.
    assert_eq!(token_meta(&server, CHANNEL).await, "required");
    assert_eq!(token_meta(&server, "nobody").await, "required");

    let open = start_server(Config {
        admin_token: Some(ADMIN.to_owned()),
        ..Config::default()
    })
    .await;
    let (status, _) = open_live(&open, "anyone", None).await;
    assert_eq!(status, 200, "an open channel's API needs no token");
    assert_eq!(token_meta(&open, "anyone").await, "none");
    create_channel(&open, "mine", json!({})).await;
    let (status, _) = open_live(&open, "mine", None).await;
    assert_eq!(status, 401);
    assert_eq!(token_meta(&open, "mine").await, "required");

    let guarded = start_server(Config {
        agent_token: Some("agent-secret".to_owned()),
        ..Config::default()
    })
    .await;
    let (status, _) = open_live(&guarded, "anyone", None).await;
    assert_eq!(status, 401);
    assert_eq!(token_meta(&guarded, "anyone").await, "required");
}
