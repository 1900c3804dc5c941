//! The agent endpoint `/ws` against misbehaving or unauthorised clients, next to a real agent:
//! each rogue gets a precise close code, and the server keeps serving the agent.

use futures_util::SinkExt;
use std::time::Duration;

use hookrelay_e2e::ws::*;
use hookrelay_e2e::*;
use protocol::{PROTOCOL_VERSION, close};
use relay_server::Config;
use tokio_tungstenite::tungstenite::Message;

/// A normal agent on the same server still gets webhooks through.
async fn assert_still_serving(server: &TestServer) {
    let target = start_target().await;
    assert_agent_serves(agent_config(server, &target.url)).await;
}

/// An agent with `config` connects and a webhook reaches its target.
async fn assert_agent_serves(config: relay_client::AgentConfig) {
    let agent = start_agent(config).await;
    let answer = send(
        &client(),
        "POST",
        &format!("{}/ok", agent.public_url),
        &[],
        "x",
    )
    .await;
    assert_eq!(answer.status, 201);
}

#[tokio::test]
async fn garbage_frame_closes_with_protocol_error_and_server_keeps_serving() {
    let server = start_server(Config::default()).await;
    let mut rogue = raw_ws(&server).await;
    rogue
        .send(Message::Binary(vec![0xff, 0x13, 0x37, 0x00, 0x42].into()))
        .await
        .expect("send garbage");
    assert_eq!(close_code(&mut rogue).await.0, Some(close::PROTOCOL_ERROR));
    assert_still_serving(&server).await;
}

#[tokio::test]
async fn garbage_after_welcome_closes_with_protocol_error() {
    let server = start_server(Config::default()).await;
    let mut rogue = raw_ws(&server).await;
    rogue
        .send(hello(PROTOCOL_VERSION, Some("rogue"), None))
        .await
        .expect("send hello");
    rogue
        .send(Message::Binary(vec![6, 200, 1].into()))
        .await
        .expect("send garbage");
    let (code, _) = close_code(&mut rogue).await;
    assert_eq!(code, Some(close::PROTOCOL_ERROR));
    assert_still_serving(&server).await;
}

#[tokio::test]
async fn oversize_message_closes_with_too_big() {
    let server = start_server(Config::default()).await;
    let mut rogue = raw_ws(&server).await;
    let huge = vec![0u8; protocol::MAX_FRAME_LEN + 1];
    let _ = rogue.send(Message::Binary(huge.into())).await;
    assert_eq!(close_code(&mut rogue).await.0, Some(close::TOO_BIG));
    assert_still_serving(&server).await;
}

#[tokio::test]
async fn wrong_or_missing_agent_token_is_refused() {
    let config = Config {
        agent_token: Some("s3cret".to_owned()),
        ..Config::default()
    };
    let server = start_server(config).await;
    for token in [None, Some("wrong")] {
        let mut ws = raw_ws(&server).await;
        ws.send(hello(PROTOCOL_VERSION, None, token))
            .await
            .expect("hello");
        assert_eq!(
            close_code(&mut ws).await.0,
            Some(close::UNAUTHORIZED),
            "{token:?}"
        );
    }

    let target = start_target().await;
    let mut refused = agent_config(&server, &target.url);
    refused.token = Some("wrong".to_owned());
    let err = relay_client::Agent::connect(refused, None)
        .await
        .err()
        .expect("refused");
    assert!(err.is_fatal(), "a wrong token is not retried: {err}");

    let mut allowed = agent_config(&server, &target.url);
    allowed.token = Some("s3cret".to_owned());
    assert_agent_serves(allowed).await;
}

#[tokio::test]
async fn live_agent_survives_many_ping_intervals() {
    let config = Config {
        ping_interval: Duration::from_millis(20),
        peer_timeout: Duration::from_millis(100),
        ..Config::default()
    };
    let server = start_server(config).await;
    let target = start_target().await;
    let agent = start_agent(agent_config(&server, &target.url)).await;
    let client = client();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let answer = send(
            &client,
            "POST",
            &format!("{}/alive", agent.public_url),
            &[],
            "x",
        )
        .await;
        assert_eq!(answer.status, 201);
    }
}
