//! The WebSocket as frames: the only place the agent encodes or decodes them, as
//! [`FromAgent`] out and [`ToAgent`] in. [`recv`] turns the next message into a frame or the
//! end of the connection; [`message`], [`send`] and [`try_send`] turn frames into messages for
//! the socket or the session's outbox; [`close`] and `closed` are close frames both ways,
//! [`refusal`] what the server's error frames mean.

use futures_util::{Stream, StreamExt};
use protocol::{DecodeError, ErrorCode, FromAgent, ToAgent, close};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tracing::warn;

use crate::error::Error;

/// The WebSocket to the server.
pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Messages queued for the session's writer task.
pub(crate) type Outbox = mpsc::Sender<Message>;

/// The code a close frame without one stands for (RFC 6455, section 7.1.5).
const NO_STATUS: u16 = 1005;

/// The next thing the server sent.
pub(crate) enum Received {
    Frame(ToAgent),
    /// A frame only an agent sends (`hello`, `response`): whatever answered is confused, or
    /// no relay.
    Unexpected,
    /// A ping, pong or text message: a sign of life, with nothing in it to act on.
    Other,
    /// A binary message that is not a frame.
    Undecodable(DecodeError),
    /// The server closed the connection; the error says what its close frame means.
    Closed(Error),
    /// The connection failed.
    Broken(tungstenite::Error),
    /// The connection ended without a close frame.
    Ended,
}

/// Reads the next message from the server at `url`. Cancel-safe: it awaits one message, and a
/// message is either returned or not yet taken from the stream.
pub(crate) async fn recv<S>(stream: &mut S, url: &str) -> Received
where
    S: Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    match stream.next().await {
        None => Received::Ended,
        Some(Err(e)) => Received::Broken(e),
        Some(Ok(Message::Binary(bytes))) => match ToAgent::decode(&bytes) {
            Ok(frame) => Received::Frame(frame),
            Err(DecodeError::WrongDirection { .. }) => Received::Unexpected,
            Err(e) => Received::Undecodable(e),
        },
        Some(Ok(Message::Close(frame))) => Received::Closed(closed(url, frame)),
        Some(Ok(_)) => Received::Other,
    }
}

/// `frame` as one WebSocket message.
pub(crate) fn message(frame: &FromAgent) -> Result<Message, protocol::EncodeError> {
    frame.encode().map(|bytes| Message::Binary(bytes.into()))
}

/// Queues `frame` for the server, waiting while the outbox is full; false once the
/// connection is gone (or the frame cannot be encoded, which is logged).
pub(crate) async fn send(outbox: &Outbox, frame: &FromAgent) -> bool {
    match message(frame) {
        Ok(message) => outbox.send(message).await.is_ok(),
        Err(e) => {
            warn!(error = %e, "frame could not be encoded");
            false
        }
    }
}

/// Queues `frame` if there is room now, for a caller that must not wait on the outbox (the
/// session's reader); dropped otherwise.
pub(crate) fn try_send(outbox: &Outbox, frame: &FromAgent) {
    if let Ok(message) = message(frame) {
        let _ = outbox.try_send(message);
    }
}

/// A keep-alive ping, which the server's pong answers.
pub(crate) fn ping() -> Message {
    Message::Ping(bytes::Bytes::new())
}

/// A close frame with `code` (one of [`protocol::close`]) and `reason`.
pub(crate) fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    }))
}

/// Whether `message` closes the connection, after which the writer sends nothing more.
pub(crate) fn is_close(message: &Message) -> bool {
    matches!(message, Message::Close(_))
}

/// The error for an `Error` frame from the server at `url`: shutting down and protocol
/// errors may pass on reconnecting, the rest are refusals.
pub(crate) fn refusal(url: &str, code: ErrorCode, message: String) -> Error {
    match code {
        ErrorCode::ShuttingDown => Error::Closed {
            url: url.to_owned(),
            code: close::GOING_AWAY,
            reason: message,
        },
        ErrorCode::ProtocolError => Error::Handshake {
            url: url.to_owned(),
            reason: message,
        },
        _ => Error::Refused(message),
    }
}

/// The error for a close frame from the server at `url`: 4xxx codes are refusals retrying
/// cannot fix.
fn closed(url: &str, frame: Option<CloseFrame>) -> Error {
    match frame {
        Some(f) if u16::from(f.code) >= 4000 => Error::Refused(f.reason.to_string()),
        Some(f) => Error::Closed {
            url: url.to_owned(),
            code: u16::from(f.code),
            reason: f.reason.to_string(),
        },
        None => Error::Closed {
            url: url.to_owned(),
            code: NO_STATUS,
            reason: "no reason given".to_owned(),
        },
    }
}
