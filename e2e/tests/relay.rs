//! End-to-end behaviour of the relay: real server, real agent, real target, real HTTP.

use std::time::{Duration, Instant};

use bytes::Bytes;
use hookrelay_e2e::*;
use http_body_util::BodyExt;
use relay_server::Config;
use sha2::{Digest, Sha256};

async fn relay() -> (TestServer, TestTarget, TestAgent, TestClient) {
    relay_with(Config::default()).await
}

async fn relay_with(config: Config) -> (TestServer, TestTarget, TestAgent, TestClient) {
    let server = start_server(config).await;
    let target = start_target().await;
    let agent = start_agent(agent_config(&server, &target.url)).await;
    (server, target, agent, client())
}

#[tokio::test]
async fn round_trip_passes_status_headers_and_body() {
    let (_server, mut target, agent, client) = relay().await;
    let url = format!("{}/github?x=1", agent.public_url);
    let answer = send(
        &client,
        "POST",
        &url,
        &[
            ("content-type", b"application/json"),
            ("x-github-event", b"push"),
            ("x-hookrelay-attempt", b"replay"),
        ],
        r#"{"zen": "Keep it logically awesome."}"#,
    )
    .await;

    assert_eq!(answer.status, 201);
    assert_eq!(answer.body, r#"{"zen": "Keep it logically awesome."}"#);
    assert_eq!(answer.headers["x-echo-uri"], "/github?x=1");
    let repeats: Vec<_> = answer.headers.get_all("x-repeat").iter().collect();
    assert_eq!(repeats, ["one", "two"]);
    let delivery = answer.headers["x-hookrelay-delivery"]
        .to_str()
        .expect("ascii");

    let seen = next_seen(&mut target).await;
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.uri, "/github?x=1");
    assert_eq!(seen.header("x-github-event"), [b"push"]);
    assert_eq!(seen.header("x-hookrelay-delivery"), [delivery.as_bytes()]);
    assert_eq!(
        seen.header("x-hookrelay-attempt"),
        [b"live"],
        "the relay's own, not the sender's copy"
    );
    assert_eq!(seen.header("x-forwarded-for"), [b"127.0.0.1"]);
    assert_eq!(seen.header("x-forwarded-proto"), [b"http"]);
    let host = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .expect("host");
    assert_eq!(seen.header("x-forwarded-host"), [host.as_bytes()]);
}

#[tokio::test]
async fn ten_mib_binary_body_arrives_byte_exact_both_ways() {
    let (_server, mut target, agent, client) = relay().await;
    let body: Vec<u8> = (0..10 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let sent_hash = Sha256::digest(&body);

    let answer = send(
        &client,
        "POST",
        &format!("{}/big", agent.public_url),
        &[],
        body,
    )
    .await;

    assert_eq!(answer.status, 201);
    let seen = next_seen(&mut target).await;
    assert_eq!(
        Sha256::digest(&seen.body),
        sent_hash,
        "request body altered"
    );
    assert_eq!(
        Sha256::digest(&answer.body),
        sent_hash,
        "response body altered"
    );
}

#[tokio::test]
async fn methods_encoded_paths_queries_and_repeated_headers_pass_untouched() {
    let (_server, mut target, agent, client) = relay().await;
    let cases = [
        ("PUT", "/a%2Fb/c%20d", Some("q=%E2%9C%93&q=2&empty=")),
        ("PATCH", "/x;matrix=1/", None),
        ("DELETE", "", Some("")),
        (
            "GET",
            "/challenge",
            Some("hub.mode=subscribe&hub.challenge=abc"),
        ),
        ("OPTIONS", "/", None),
    ];
    for (method, path, query) in cases {
        let url = match query {
            Some(q) => format!("{}{path}?{q}", agent.public_url),
            None => format!("{}{path}", agent.public_url),
        };
        let headers: [(&str, &[u8]); 4] = [
            ("x-multi", b"first"),
            ("x-multi", b"second"),
            ("x-binary", b"caf\xe9 \xff"),
            ("connection", b"x-hop"),
        ];
        let answer = send(&client, method, &url, &headers, "payload").await;
        assert_eq!(answer.status, 201, "{method} {url}");

        let seen = next_seen(&mut target).await;
        assert_eq!(seen.method, method);
        let expected_path = if path.is_empty() { "/" } else { path };
        let expected_uri = match query {
            Some(q) => format!("{expected_path}?{q}"),
            None => expected_path.to_owned(),
        };
        assert_eq!(seen.uri, expected_uri, "{method} {url}");
        assert_eq!(seen.header("x-multi"), [&b"first"[..], b"second"]);
        assert_eq!(seen.header("x-binary"), [b"caf\xe9 \xff"]);
        assert_eq!(seen.body, "payload");
    }
}

#[tokio::test]
async fn hop_by_hop_headers_are_dropped() {
    let (_server, mut target, agent, client) = relay().await;
    let headers: [(&str, &[u8]); 3] = [
        ("connection", b"keep-alive, x-private"),
        ("x-private", b"hop"),
        ("keep-alive", b"timeout=5"),
    ];
    send(
        &client,
        "POST",
        &format!("{}/", agent.public_url),
        &headers,
        "x",
    )
    .await;
    let seen = next_seen(&mut target).await;
    assert!(seen.header("x-private").is_empty());
    assert!(seen.header("keep-alive").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_are_each_answered_with_their_own_response() {
    let (_server, _target, agent, client) = relay().await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200u32 {
        let client = client.clone();
        let url = format!("{}/n/{i}", agent.public_url);
        tasks.spawn(async move {
            let body = format!("request {i} ").repeat(1 + (i as usize % 7) * 300);
            let answer = send(&client, "POST", &url, &[], body.clone()).await;
            assert_eq!(answer.status, 201);
            assert_eq!(answer.headers["x-echo-uri"], format!("/n/{i}").as_str());
            assert_eq!(answer.body, body);
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.expect("request task succeeded");
    }
}

#[tokio::test]
async fn slow_request_does_not_hold_back_others() {
    let (_server, mut target, agent, client) = relay().await;
    let slow = spawn_post(&client, &format!("{}/hold", agent.public_url), "slow");
    assert_eq!(next_seen(&mut target).await.uri, "/hold");
    let fast = send(
        &client,
        "POST",
        &format!("{}/fast", agent.public_url),
        &[],
        "fast",
    )
    .await;
    assert_eq!(fast.status, 201);
    assert!(!slow.is_finished());
    target.release();
    assert_eq!(slow.await.expect("slow request task").body, "released");
}

#[tokio::test]
async fn channel_api_lists_agents() {
    let (server, _target, agent, client) = relay().await;
    let url = format!("{}/api/channels/{}", server.url(), agent.channel);
    let doc = send(&client, "GET", &url, &[], "").await.json();
    assert_eq!(doc["channel"], agent.channel.as_str());
    assert_eq!(doc["registered"], false);
    assert_eq!(doc["mode"], "balance");
    assert_eq!(doc["agent_count"], 1);
    let listed = &doc["agents"][0];
    assert!(
        listed["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{doc}"
    );
    assert!(
        listed["client"]
            .as_str()
            .is_some_and(|c| c.starts_with("relay-client")),
        "{doc}"
    );
    assert_eq!(listed["in_flight"], 0);
    assert!(
        agent.channel.len() >= 32,
        "assigned channels carry 128 random bits"
    );
}

#[tokio::test]
async fn target_down_gives_502_with_the_reason() {
    let server = start_server(Config::default()).await;
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let dead_url = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let agent = start_agent(agent_config(&server, &dead_url)).await;
    let answer = send(
        &client(),
        "POST",
        &format!("{}/x", agent.public_url),
        &[],
        "x",
    )
    .await;
    assert_eq!(answer.status, 502);
    let error = answer.json()["error"]
        .as_str()
        .expect("error text")
        .to_owned();
    assert!(error.starts_with("target unreachable"), "{error}");
}

#[tokio::test]
async fn target_status_passes_through() {
    let (_server, _target, agent, client) = relay().await;
    for code in [200, 204, 400, 404, 500, 503] {
        let answer = send(
            &client,
            "POST",
            &format!("{}/status/{code}", agent.public_url),
            &[],
            "",
        )
        .await;
        assert_eq!(answer.status, code);
    }
}

#[tokio::test]
async fn slow_target_gives_504_after_the_timeout() {
    let config = Config {
        timeout: Duration::from_millis(300),
        ..Config::default()
    };
    let (_server, _target, agent, client) = relay_with(config).await;
    let answer = send(
        &client,
        "POST",
        &format!("{}/hold", agent.public_url),
        &[],
        "x",
    )
    .await;
    assert_eq!(answer.status, 504);
    let after = send(
        &client,
        "POST",
        &format!("{}/after", agent.public_url),
        &[],
        "y",
    )
    .await;
    assert_eq!(after.status, 201, "the agent keeps serving after a timeout");
}

#[tokio::test]
async fn agent_killed_mid_request_gives_502_promptly() {
    let (_server, mut target, agent, client) = relay().await;
    let pending = spawn_post(&client, &format!("{}/hold", agent.public_url), "x");
    next_seen(&mut target).await;
    let killed_at = Instant::now();
    agent.task.abort();
    let answer = pending.await.expect("request task");
    assert_eq!(answer.status, 502);
    assert!(
        killed_at.elapsed() < Duration::from_secs(5),
        "took {:?}",
        killed_at.elapsed()
    );
}

#[tokio::test]
async fn oversize_body_gives_413_with_or_without_content_length() {
    let config = Config {
        max_body_bytes: 1000,
        ..Config::default()
    };
    let (_server, _target, agent, client) = relay_with(config).await;
    let url = format!("{}/big", agent.public_url);

    let declared = send(&client, "POST", &url, &[], vec![b'a'; 1001]).await;
    assert_eq!(declared.status, 413);

    let chunks = (0..10).map(|_| {
        Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from(vec![b'b'; 200])))
    });
    let body = http_body_util::StreamBody::new(futures_util::stream::iter(chunks)).boxed();
    let chunked = send_body(&client, "POST", &url, &[], body).await;
    assert_eq!(chunked.status, 413);

    let at_limit = send(&client, "POST", &url, &[], vec![b'c'; 1000]).await;
    assert_eq!(at_limit.status, 201);
}

#[tokio::test]
async fn agent_reconnects_after_server_restart_and_keeps_its_channel() {
    let first = start_server(Config::default()).await;
    let addr = first.addr;
    let target = start_target().await;
    let agent = start_agent(agent_config(&first, &target.url)).await;
    let client = client();
    first.stop().await;

    let listener = rebind(addr).await;
    let second = serve_on(listener, Config::default());
    wait_for_agents(&client, &second.url(), &agent.channel, 1).await;
    let answer = send(
        &client,
        "POST",
        &format!("{}/again", agent.public_url),
        &[],
        "x",
    )
    .await;
    assert_eq!(answer.status, 201);
}

/// Binds `addr` again once the previous server released it.
async fn rebind(addr: std::net::SocketAddr) -> tokio::net::TcpListener {
    let retry = async {
        loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(listener) => return listener,
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    };
    tokio::time::timeout(DEADLINE, retry)
        .await
        .expect("port released")
}

#[tokio::test]
async fn shutdown_lets_in_flight_webhooks_finish() {
    let (server, mut target, agent, client) = relay().await;
    let pending = spawn_post(&client, &format!("{}/hold", agent.public_url), "x");
    next_seen(&mut target).await;
    server.shutdown.cancel();
    target.release();
    let answer = pending.await.expect("request task");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "released");
    tokio::time::timeout(DEADLINE, server.task)
        .await
        .expect("server stops")
        .expect("no panic")
        .expect("no error");
}

#[tokio::test]
async fn agent_shutdown_finishes_in_flight_deliveries() {
    let (_server, mut target, agent, client) = relay().await;
    let pending = spawn_post(&client, &format!("{}/hold", agent.public_url), "x");
    next_seen(&mut target).await;
    agent.shutdown.cancel();
    target.release();
    let answer = pending.await.expect("request task");
    assert_eq!(answer.status, 200);
    tokio::time::timeout(DEADLINE, agent.task)
        .await
        .expect("agent stops")
        .expect("no panic")
        .expect("no error");
}

#[tokio::test]
async fn a_chunked_webhook_reaches_the_target_with_content_length() {
    let (_server, mut target, agent, client) = relay().await;
    // One frame's worth, and a body over several 64 KiB frames.
    for len in [1_000, 200 * 1024 + 7] {
        let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let chunks: Vec<_> = body
            .chunks(10_000)
            .map(|c| {
                Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::copy_from_slice(c)))
            })
            .collect();
        let chunked = http_body_util::StreamBody::new(futures_util::stream::iter(chunks)).boxed();
        let url = format!("{}/chunked", agent.public_url);
        let answer = send_body(&client, "POST", &url, &[], chunked).await;
        assert_eq!(answer.status, 201, "{len}: {:?}", answer.body);
        let seen = next_seen(&mut target).await;
        assert_eq!(seen.body, body, "{len}: body byte for byte");
        assert_eq!(
            seen.header("content-length"),
            [len.to_string().as_bytes()],
            "{len}"
        );
        assert!(seen.header("transfer-encoding").is_empty(), "{len}");
    }

    // A sender's own Content-Length stays where it was, once.
    let answer = send(
        &client,
        "POST",
        &format!("{}/sized", agent.public_url),
        &[("x-before", b"1")],
        vec![b'z'; 100 * 1024],
    )
    .await;
    assert_eq!(answer.status, 201);
    let seen = next_seen(&mut target).await;
    assert_eq!(seen.header("content-length"), [b"102400"]);
    assert!(seen.header("transfer-encoding").is_empty());
}
