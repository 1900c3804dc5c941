//! A raw WebSocket on the agent endpoint `/ws`, for tests that play a misbehaving agent.
//!
//! Uses relay-server (through [`TestServer`]) and the protocol crate, no other crate of ours, so
//! relay-server's own tests compile this file too (see the crate docs).

use futures_util::StreamExt;
use protocol::{Frame, Hello};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::requests::DEADLINE;
use super::server::TestServer;

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens `/ws` on `server` with no message size limit of our own, so the server's limits are
/// the ones tested.
pub async fn raw_ws(server: &TestServer) -> Ws {
    let mut config = WebSocketConfig::default();
    config.max_message_size = None;
    config.max_frame_size = None;
    let url = format!("ws://{}/ws", server.addr);
    let (ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
        .await
        .expect("websocket opens");
    ws
}

/// A `Hello` frame as an agent sends it first.
pub fn hello(version: u16, channel: Option<&str>, token: Option<&str>) -> Message {
    let frame = Frame::Hello(Hello {
        version,
        channel: channel.map(str::to_owned),
        token: token.map(str::to_owned),
        client: "test".to_owned(),
    });
    Message::Binary(protocol::encode(&frame).expect("encodes").into())
}

/// Reads until the server closes; returns the close code and the last decoded frame.
pub async fn close_code(ws: &mut Ws) -> (Option<u16>, Option<Frame>) {
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
