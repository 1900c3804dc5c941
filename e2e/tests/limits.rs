//! Limits against floods and strangers: agents per channel, webhooks in progress, source
//! networks (the pace and quotas of a channel are in `never_refuse.rs`). Each refusal is checked for its answer, and that the server
//! goes on serving within the limits.

use hookrelay_e2e::*;
use relay_server::Config;
use serde_json::json;

async fn post(url: &str) -> Answer {
    send(&client(), "POST", url, &[], "payload").await
}

#[tokio::test]
async fn a_channel_takes_at_most_max_agents() {
    let server = start_server(Config {
        max_agents_per_channel: 2,
        ..Config::default()
    })
    .await;
    let target = start_target().await;
    let mut config = agent_config(&server, &target.url);
    config.channel = protocol::ChannelId::parse("crowded").ok();
    let _one = start_agent(config.clone()).await;
    let _two = start_agent(config.clone()).await;
    let err = relay_client::Agent::connect(config, None)
        .await
        .err()
        .expect("third agent refused");
    assert!(err.is_fatal(), "{err}");
    assert!(err.to_string().contains("already has 2 agents"), "{err}");
    let answer = post(&format!("{}/h/crowded", server.url())).await;
    assert_eq!(answer.status, 201, "the two agents still serve");
}

#[tokio::test]
async fn past_max_in_flight_senders_get_503_and_the_server_recovers() {
    let server = start_server(Config {
        max_in_flight: 1,
        ..Config::default()
    })
    .await;
    let mut target = start_target().await;
    let agent = start_agent(agent_config(&server, &target.url)).await;
    let held = spawn_post(&client(), &format!("{}/hold", agent.public_url), "slow");
    next_seen(&mut target).await;
    let busy = post(&format!("{}/other", agent.public_url)).await;
    assert_eq!(busy.status, 503);
    assert_eq!(retry_after(&busy), 1);
    target.release();
    assert_eq!(held.await.expect("held request").status, 200);
    assert_eq!(
        post(&format!("{}/other", agent.public_url)).await.status,
        201
    );
}

#[tokio::test]
async fn only_allowed_source_networks_may_send_to_a_channel() {
    let server = start_server(closed()).await;
    let target = start_target().await;
    let token = create_channel(
        &server,
        "fenced",
        json!({"allow_from": ["192.30.252.0/22"]}),
    )
    .await;
    let open = create_channel(
        &server,
        "local",
        json!({"allow_from": ["127.0.0.0/8", "::1/128"]}),
    )
    .await;
    for (name, token) in [("fenced", &token), ("local", &open)] {
        let mut config = agent_config(&server, &target.url);
        config.channel = protocol::ChannelId::parse(name).ok();
        config.token = Some(token.clone());
        start_agent(config).await;
    }
    let refused = post(&format!("{}/h/fenced", server.url())).await;
    assert_eq!(refused.status, 403);
    assert_eq!(
        refused.json()["error"],
        "source address 127.0.0.1 may not send webhooks to this channel"
    );
    assert_eq!(post(&format!("{}/h/local", server.url())).await.status, 201);
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let server = start_server(http_limits(Config::default())).await;
    let target = start_target().await;
    let agent = start_agent(agent_config(&server, &target.url)).await;
    let started = std::time::Instant::now();
    // Slowloris: a request head that never ends. The server must not wait forever.
    let slow = raw_exchange(&server, b"POST /h/x HTTP/1.1\r\nHost: relay\r\nX-Slow: 1");
    let ok = format!("{}/ok", agent.public_url);
    let (answer, normal) = tokio::join!(slow, post(&ok));
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer:?}"
    );
    assert_eq!(normal.status, 201, "others are served meanwhile");
}

#[tokio::test]
async fn the_head_limit_holds_at_its_value_and_refusals_are_json() {
    let server = start_server(http_limits(Config {
        admin_token: Some(ADMIN.to_owned()),
        ..Config::default()
    }))
    .await;
    let target = start_target().await;
    let agent = start_agent(agent_config(&server, &target.url)).await;
    let path = format!("/h/{}/x", agent.channel);
    let max = 16 * 1024;
    for len in [max - 1, max] {
        let answer = raw_exchange(&server, head_of_len(&path, "", len).as_bytes()).await;
        assert!(
            answer.starts_with("HTTP/1.1 201"),
            "{len} bytes: {answer:?}"
        );
    }
    let answer = raw_exchange(&server, head_of_len(&path, "", max + 1).as_bytes()).await;
    let (status, error) = json_refusal(&answer);
    assert_eq!(status, 431, "{answer:?}");
    assert!(error.contains("16384 bytes"), "{error}");
    // A head far over the limit is refused as soon as the limit is crossed, the same way.
    let huge = head_of_len(&path, "", 40 * 1024);
    assert_eq!(
        json_refusal(&raw_exchange(&server, huge.as_bytes()).await).0,
        431
    );

    // Header count: 20 in all passes, 21 do not.
    let lines = |n: usize| -> String { (0..n).map(|i| format!("X-H{i}: v\r\n")).collect() };
    let at_limit = head_of_len(&path, &lines(16), 1024);
    let answer = raw_exchange(&server, at_limit.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer:?}");
    let over = head_of_len(&path, &lines(17), 1024);
    let (status, error) = json_refusal(&raw_exchange(&server, over.as_bytes()).await);
    assert_eq!(status, 431);
    assert!(error.contains("20 headers"), "{error}");

    let answer = get_with(&format!("{}/metrics", server.url()), Some(ADMIN)).await;
    let text = String::from_utf8_lossy(&answer.body);
    assert!(
        text.contains(r#"hookrelay_rejected_total{reason="head_too_large"} 3"#),
        "{text}"
    );
    assert_eq!(post(&format!("{}/ok", agent.public_url)).await.status, 201);
}

#[tokio::test]
async fn a_keep_alive_connection_gets_json_for_a_bad_head_after_good_requests() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = start_server(http_limits(Config::default())).await;
    let target = start_target().await;
    let agent = start_agent(agent_config(&server, &target.url)).await;
    let mut tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let good = format!(
        "POST /h/{}/a HTTP/1.1\r\nHost: relay\r\nContent-Length: 5\r\n\r\nhello",
        agent.channel
    );
    let bad = format!(
        "GET /h/{}/b HTTP/1.1\r\nHost: relay\r\nX-Big: {}\r\n\r\n",
        agent.channel,
        "b".repeat(20 * 1024)
    );
    // Two good requests, then an oversize one, pipelined: the two answers come whole, then
    // the JSON refusal, then the connection closes.
    let all = format!("{good}{good}{bad}");
    tcp.write_all(all.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, tcp.read_to_end(&mut answer))
        .await
        .expect("server closes the connection in time")
        .ok();
    let answer = String::from_utf8_lossy(&answer);
    let parts: Vec<&str> = answer.split("HTTP/1.1 ").skip(1).collect();
    assert_eq!(parts.len(), 3, "{answer:?}");
    assert!(
        parts[0].starts_with("201") && parts[1].starts_with("201"),
        "{answer:?}"
    );
    let (status, _) = json_refusal(&format!("HTTP/1.1 {}", parts[2]));
    assert_eq!(status, 431);
}

#[tokio::test]
async fn a_target_answer_that_looks_like_a_refusal_goes_through_untouched() {
    let server = start_server(Config::default()).await;
    let target = start_target().await;
    let agent = start_agent(agent_config(&server, &target.url)).await;
    let client = client();
    let echo = "HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
    // On one kept-alive connection, so the echo is written where a next response would start.
    for _ in 0..3 {
        let answer = send(&client, "POST", &agent.public_url, &[], echo).await;
        assert_eq!(answer.status, 201);
        assert_eq!(answer.body, echo.as_bytes());
    }
}

#[tokio::test]
async fn a_sender_that_trickles_its_body_gets_408() {
    let server = start_server(Config {
        timeout: std::time::Duration::from_millis(300),
        ..Config::default()
    })
    .await;
    let target = start_target().await;
    let agent = start_agent(agent_config(&server, &target.url)).await;
    let path = agent.public_url.split("/h/").nth(1).expect("channel url");
    let head =
        format!("POST /h/{path} HTTP/1.1\r\nHost: relay\r\nContent-Length: 100\r\n\r\nonly ten b");
    let answer = raw_exchange(&server, head.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert_eq!(post(&format!("{}/ok", agent.public_url)).await.status, 201);
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_is_checked() {
    let server = start_server(Config {
        trusted_proxies: vec!["127.0.0.0/8".parse().expect("literal")],
        ..closed()
    })
    .await;
    let target = start_target().await;
    let token = create_channel(
        &server,
        "proxied",
        json!({"allow_from": ["203.0.113.0/24"]}),
    )
    .await;
    let mut config = agent_config(&server, &target.url);
    config.channel = protocol::ChannelId::parse("proxied").ok();
    config.token = Some(token);
    start_agent(config).await;
    let url = format!("{}/h/proxied", server.url());
    let allowed = forwarded_post(&url, "6.6.6.6, 203.0.113.5").await;
    assert_eq!(allowed.status, 201);
    let refused = forwarded_post(&url, "198.51.100.1").await;
    assert_eq!(refused.status, 403);
    assert_eq!(
        refused.json()["error"],
        "source address 198.51.100.1 may not send webhooks to this channel"
    );
    let id = allowed.headers["x-hookrelay-delivery"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let event = admin(
        &server,
        "GET",
        &format!("/api/channels/proxied/events/{id}"),
        String::new(),
    )
    .await
    .json();
    assert_eq!(event["source"], "203.0.113.5", "the client, not the proxy");
}

async fn forwarded_post(url: &str, xff: &str) -> Answer {
    let headers: &[(&str, &[u8])] = &[("x-forwarded-for", xff.as_bytes())];
    send(&client(), "POST", url, headers, "b").await
}
