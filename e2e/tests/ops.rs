//! What an operator watches while agents work: Prometheus metrics, and channels declared in
//! the config file.

use hookrelay_e2e::*;
use serde_json::json;

#[tokio::test]
async fn metrics_count_webhooks_refusals_agents_queues_and_bytes() {
    let mut config = closed();
    config.quota.max_undelivered = 1;
    let server = start_server(config).await;
    let target = start_target().await;
    let token = create_channel(&server, "watched", json!({})).await;
    create_channel(&server, "offline", json!({})).await;
    let mut config = agent_config(&server, &target.url);
    config.channel = protocol::ChannelId::parse("watched").ok();
    config.token = Some(token);
    start_agent(config).await;

    let hook = format!("{}/h/watched/x", server.url());
    for _ in 0..3 {
        let answer = send(&client(), "POST", &hook, &[], "12345").await;
        assert_eq!(answer.status, 201);
    }
    let offline = format!("{}/h/offline", server.url());
    assert_eq!(
        send(&client(), "POST", &offline, &[], "q").await.status,
        202
    );
    assert_eq!(
        send(&client(), "POST", &offline, &[], "q").await.status,
        429,
        "its one undelivered webhook fills the channel"
    );
    assert_eq!(
        send(
            &client(),
            "POST",
            &format!("{}/h/nobody", server.url()),
            &[],
            ""
        )
        .await
        .status,
        404
    );

    let url = format!("{}/metrics", server.url());
    assert_eq!(
        get_with(&url, None).await.status,
        401,
        "the admin token is needed"
    );
    let answer = get_with(&url, Some(ADMIN)).await;
    assert_eq!(answer.status, 200);
    assert!(
        answer.headers["content-type"]
            .to_str()
            .is_ok_and(|t| t.starts_with("application/openmetrics-text")),
        "{:?}",
        answer.headers
    );
    let body = answer.text();
    for line in [
        r#"hookrelay_webhooks_total{channel="watched",class="2xx"} 3"#,
        r#"hookrelay_webhooks_total{channel="offline",class="2xx"} 1"#,
        r#"hookrelay_webhooks_total{channel="offline",class="4xx"} 1"#,
        r#"hookrelay_rejected_total{reason="channel_full"} 1"#,
        r#"hookrelay_rejected_total{reason="unknown_channel"} 1"#,
        "hookrelay_agents_connected 1",
        r#"hookrelay_queue_depth{channel="offline"} 1"#,
        r#"hookrelay_body_bytes_total{direction="in"} 17"#,
        "hookrelay_delivery_duration_seconds_count 3",
    ] {
        assert!(body.contains(line), "{line} missing from:\n{body}");
    }
    // The target echoes the body: 3 x 5 bytes went back to the sender (plus JSON answers).
    assert!(
        body.contains(r#"hookrelay_body_bytes_total{direction="out"}"#),
        "{body}"
    );
}

#[tokio::test]
async fn channels_declared_in_the_config_file_are_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("server.toml");
    std::fs::write(
        &file,
        r#"
listen = "127.0.0.1:0"
open = false

[[channel]]
name = "from-file"
token = "hrt_declared"
mode = "fanout"
"#,
    )
    .expect("write config");
    let config_arg = file.display().to_string();
    let mut process = spawn_server(&["--config", &config_arg], &[]);
    let target = start_target().await;
    let server_url = format!("http://{}", process.addr);
    let mut agent = relay_client::AgentConfig::new(&server_url, &target.url).expect("valid");
    agent.channel = protocol::ChannelId::parse("from-file").ok();
    agent.token = Some("hrt_declared".to_owned());
    let connected = relay_client::Agent::connect(agent.clone(), None)
        .await
        .expect("the declared token holds the channel");
    assert_eq!(connected.channel(), "from-file");
    agent.token = Some("hrt_wrong".to_owned());
    let refused = relay_client::Agent::connect(agent, None).await;
    assert!(refused.is_err_and(|e| e.to_string().contains("wrong token")));
    let status = send(
        &client(),
        "GET",
        &format!("{server_url}/api/channels/from-file"),
        &[("authorization", b"Bearer hrt_declared")],
        "",
    )
    .await
    .json();
    assert_eq!(status["mode"], "fanout", "{status}");
    assert!(terminate(&mut process.child).success());
}
