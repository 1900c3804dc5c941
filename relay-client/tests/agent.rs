//! The agent against a server that misbehaves: here one that goes silent after its welcome.
//! The "server" is a bare WebSocket listener, so these tests need no relay-server.

use std::time::Duration;

use crate::common::DEADLINE;
use futures_util::{SinkExt, StreamExt};
use protocol::{Frame, PROTOCOL_VERSION};
use tokio_tungstenite::tungstenite::Message;

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
