//! The agent endpoint `/ws` against misbehaving or unauthorised clients, played on a raw
//! WebSocket: each gets a precise close code. (That a real agent is still served meanwhile is
//! checked in e2e's `agent_ws`.)

use std::time::Duration;

use crate::common::ws::*;
use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use protocol::{Frame, PROTOCOL_VERSION, close};
use relay_server::Config;
use tokio_tungstenite::tungstenite::Message;

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
    let server = start_server(Config::default()).await;
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

/// A `Subscribe` frame for `channel` taking `events`.
fn subscribe(channel: &str, events: &[&str]) -> Message {
    let frame = Frame::Subscribe(protocol::Subscribe {
        hello: protocol::Hello {
            version: PROTOCOL_VERSION,
            channel: Some(channel.to_owned()),
            token: None,
            client: "raw".to_owned(),
        },
        events: events.iter().map(|e| (*e).to_owned()).collect(),
    });
    Message::Binary(protocol::encode(&frame).expect("encodes").into())
}

#[tokio::test]
async fn a_subscriber_gets_only_its_types_and_bad_patterns_are_refused() {
    let server = start_server(Config {
        node_id: Some("node-a".to_owned()),
        admin_token: Some(ADMIN.to_owned()),
        ..Config::default()
    })
    .await;
    let mut bad = raw_ws(&server).await;
    bad.send(subscribe("subs", &["a*b"])).await.expect("send");
    let (code, frame) = close_code(&mut bad).await;
    assert_eq!(code, Some(close::PROTOCOL_ERROR));
    assert!(
        matches!(&frame, Some(Frame::Error(e)) if e.message.contains("`*` may only end")),
        "{frame:?}"
    );

    let mut agent = raw_ws(&server).await;
    agent
        .send(subscribe("subs", &["push", "issue*"]))
        .await
        .expect("send");
    let welcome = agent.next().await.expect("welcome").expect("message");
    assert!(matches!(
        protocol::decode(&welcome.into_data()),
        Ok(Frame::Welcome(_))
    ));
    let client = client();
    wait_for_agents(&client, &server.url(), "subs", 1).await;
    let status = get_with(&format!("{}/api/channels/subs", server.url()), None).await;
    let listed = &status.json()["agents"][0];
    assert_eq!(listed["events"], serde_json::json!(["push", "issue*"]));
    assert_eq!(listed["node"], "node-a");
    let metrics = get_with(&format!("{}/metrics", server.url()), Some(ADMIN)).await;
    assert!(
        metrics
            .text()
            .contains("hookrelay_node_info{node=\"node-a\"} 1"),
        "{}",
        metrics.text()
    );
    let url = format!("{}/h/subs/x", server.url());
    // Connected, but the agent does not take untyped webhooks, nor this type.
    for headers in [&[][..], &[("x-github-event", &b"pull_request"[..])]] {
        let answer = send(&client, "POST", &url, headers, "x").await;
        assert_eq!(answer.status, 202, "{}", answer.text());
        assert_eq!(answer.json()["status"], "unrouted");
    }
    let typed: [(&str, &[u8]); 1] = [("x-github-event", b"issues")];
    let sender = tokio::spawn(async move { send(&client, "POST", &url, &typed, "x").await });
    let request = loop {
        match agent.next().await.expect("request").expect("message") {
            Message::Binary(bytes) => break protocol::decode(&bytes).expect("frame"),
            _ => continue,
        }
    };
    let Frame::Request(head) = request else {
        panic!("a request, not {request:?}");
    };
    let named: Vec<&[u8]> = (head.headers.iter())
        .filter(|(n, _)| n == protocol::EVENT_TYPE_HEADER)
        .map(|(_, v)| v.as_ref())
        .collect();
    assert_eq!(named, [b"issues"]);
    drop(agent);
    assert_eq!(sender.await.expect("sender").status, 502, "the agent left");
}
