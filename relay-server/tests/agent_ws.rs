//! The agent endpoint `/ws` against misbehaving or unauthorised clients: each gets a precise
//! close code, and the server keeps serving everyone else.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use protocol::{Frame, Hello, PROTOCOL_VERSION, close};
use relay_server::Config;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn raw_ws(server: &TestServer) -> Ws {
    let mut config = WebSocketConfig::default();
    config.max_message_size = None;
    config.max_frame_size = None;
    let url = format!("ws://{}/ws", server.addr);
    let (ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
        .await
        .expect("websocket opens");
    ws
}

fn hello(version: u16, channel: Option<&str>, token: Option<&str>) -> Message {
    let frame = Frame::Hello(Hello {
        version,
        channel: channel.map(str::to_owned),
        token: token.map(str::to_owned),
        client: "test".to_owned(),
    });
    Message::Binary(protocol::encode(&frame).expect("encodes").into())
}

/// Reads until the server closes; returns the close code and the last decoded frame.
async fn close_code(ws: &mut Ws) -> (Option<u16>, Option<Frame>) {
    let mut last = None;
    let read = async {
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                Ok(Message::Binary(bytes)) => last = protocol::decode(&bytes).ok(),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    };
    let code = tokio::time::timeout(DEADLINE, read)
        .await
        .expect("server closes in time");
    (code, last)
}

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
async fn text_message_and_wrong_first_frame_are_protocol_errors() {
    let server = start_server(Config::default()).await;
    let mut text = raw_ws(&server).await;
    text.send(Message::Text("hello?".into()))
        .await
        .expect("send text");
    assert_eq!(close_code(&mut text).await.0, Some(close::PROTOCOL_ERROR));

    let mut wrong = raw_ws(&server).await;
    let abort = Frame::Abort(protocol::Abort {
        id: protocol::DeliveryId::random(),
        reason: "x".to_owned(),
    });
    wrong
        .send(Message::Binary(
            protocol::encode(&abort).expect("encodes").into(),
        ))
        .await
        .expect("send");
    assert_eq!(close_code(&mut wrong).await.0, Some(close::PROTOCOL_ERROR));
}

#[tokio::test]
async fn response_body_before_its_head_is_out_of_order() {
    let (server, target) = (start_server(Config::default()).await, start_target().await);
    drop(target);
    let mut rogue = raw_ws(&server).await;
    rogue
        .send(hello(PROTOCOL_VERSION, Some("order"), None))
        .await
        .expect("hello");
    let welcome = rogue
        .next()
        .await
        .expect("welcome")
        .expect("welcome message");
    assert!(matches!(
        protocol::decode(&welcome.into_data()),
        Ok(Frame::Welcome(_))
    ));

    let client = client();
    let url = format!("{}/h/order/x", server.url());
    let sender = tokio::spawn(async move { send(&client, "POST", &url, &[], "x").await });
    let request = loop {
        match rogue.next().await.expect("request").expect("message") {
            Message::Binary(bytes) => break protocol::decode(&bytes).expect("frame"),
            _ => continue,
        }
    };
    let Frame::Request(head) = request else {
        panic!("expected a request, got {request:?}")
    };
    let body = Frame::Body(protocol::BodyChunk {
        id: head.id,
        data: bytes::Bytes::from_static(b"too early"),
        fin: true,
    });
    rogue
        .send(Message::Binary(
            protocol::encode(&body).expect("encodes").into(),
        ))
        .await
        .expect("send");
    assert_eq!(close_code(&mut rogue).await.0, Some(close::PROTOCOL_ERROR));
    assert_eq!(sender.await.expect("sender task").status, 502);
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
async fn version_mismatch_is_refused_with_a_clear_message() {
    let server = start_server(Config::default()).await;
    let mut old = raw_ws(&server).await;
    old.send(hello(PROTOCOL_VERSION + 1, None, None))
        .await
        .expect("hello");
    let (code, last) = close_code(&mut old).await;
    assert_eq!(code, Some(close::VERSION_MISMATCH));
    let Some(Frame::Error(error)) = last else {
        panic!("expected an error frame, got {last:?}")
    };
    assert!(
        error.message.contains("upgrade relay-server"),
        "{}",
        error.message
    );
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
async fn invalid_channel_name_is_refused() {
    let server = start_server(Config::default()).await;
    let mut ws = raw_ws(&server).await;
    ws.send(hello(PROTOCOL_VERSION, Some("no spaces/allowed"), None))
        .await
        .expect("hello");
    assert_eq!(close_code(&mut ws).await.0, Some(close::INVALID_CHANNEL));
}

#[tokio::test]
async fn silent_agent_is_dropped_after_the_peer_timeout() {
    let config = Config {
        ping_interval: Duration::from_millis(50),
        peer_timeout: Duration::from_millis(200),
        ..Config::default()
    };
    let server = start_server(config).await;
    let mut silent = raw_ws(&server).await;
    silent
        .send(hello(PROTOCOL_VERSION, Some("silent"), None))
        .await
        .expect("hello");
    let client = client();
    wait_for_agents(&client, &server.url(), "silent", 1).await;
    // Not reading the socket means no pongs: the server must give up on us.
    wait_for_agents(&client, &server.url(), "silent", 0).await;
    drop(silent);
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

#[tokio::test]
async fn agent_notices_a_silent_server_and_reconnects() {
    // A "server" that accepts the WebSocket, welcomes the agent, then never reads again: no
    // pongs, no frames. The agent must give up on it and connect again.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            let mut ws = tokio_tungstenite::accept_async(tcp).await.expect("accept");
            let _hello = ws.next().await;
            let welcome = Frame::Welcome(protocol::Welcome {
                version: PROTOCOL_VERSION,
                channel: "silent".to_owned(),
                public_url: "http://127.0.0.1/h/silent".to_owned(),
                agent_id: uuid::Uuid::nil(),
            });
            ws.send(Message::Binary(
                protocol::encode(&welcome).expect("encodes").into(),
            ))
            .await
            .expect("welcome");
            held.push(ws);
            let _ = accepted_tx.send(()).await;
        }
    });
    let mut config =
        relay_client::AgentConfig::new(&format!("http://{addr}"), "http://127.0.0.1:9")
            .expect("config");
    config.ping_interval = Duration::from_millis(20);
    config.peer_timeout = Duration::from_millis(100);
    config.backoff_min = Duration::from_millis(10);
    let agent = relay_client::Agent::connect(config, None)
        .await
        .expect("connects");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let _run = tokio::spawn(agent.run(shutdown.clone()));
    for _ in 0..2 {
        tokio::time::timeout(DEADLINE, accepted.recv())
            .await
            .expect("agent reconnects")
            .expect("open");
    }
    shutdown.cancel();
}
