//! An agent's WebSocket as the server uses it: the only place frames are encoded and decoded.
//!
//! The server sends [`ToAgent`] and receives [`FromAgent`] (see `protocol`), one frame per
//! binary message. [`split`] gives a session its [`Inbox`] to [`Inbox::recv`] from, its
//! [`Outbox`] to [`Outbox::send`] to (and [`Outbox::close`] with a code), and the [`Writer`]
//! task between the outbox and the socket, which batches whatever is queued into one flush.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use bytes::Bytes;
use futures_util::stream::SplitStream;
use futures_util::{SinkExt, StreamExt};
use protocol::{DecodeError, FromAgent, MAX_FRAME_LEN, ToAgent};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Messages queued for one agent before senders wait.
const OUTBOX_CAPACITY: usize = 256;
/// Bytes of frames queued for one agent before senders wait: a 25 MB webhook's body chunks
/// wait here for the socket, and without a bound in bytes a fast sender and a slow agent
/// would hold much of the body in the queue as well (256 chunks of 64 KiB: 16 MiB).
const OUTBOX_BYTES: usize = 1024 * 1024;
/// Bytes tungstenite reads from the socket at a time. It is allocated per connection up front
/// (its default, 128 KiB, dominates the memory of an idle agent), and tungstenite zero-fills
/// that much of it before every read, including the read that finds nothing and parks: twice
/// per frame an agent sends. The common answer, a response head with a small body, fits in
/// one read of 2 KiB. A larger body takes more reads (a 64 KiB chunk, 32), which costs the
/// server more CPU per megabyte streamed back; see the commit that chose it for the figures.
const READ_BUFFER: usize = 2 * 1024;
/// Bytes tungstenite gathers before writing to the socket; the writer flushes each batch, so
/// this lets a batch of frames leave in one write. The buffer only grows when used.
const WRITE_BUFFER: usize = 64 * 1024;
/// Longest close reason: RFC 6455 leaves 123 bytes of a close frame for it.
const MAX_CLOSE_REASON: usize = 123;
/// How long the writer has, once the session is over, to flush what is queued.
const FLUSH_GRACE: Duration = Duration::from_secs(5);

/// Sets up an agent's socket: messages and frames are capped at [`MAX_FRAME_LEN`], so an
/// oversize message is refused before it is buffered, with small buffers for idle agents.
pub fn configure(upgrade: WebSocketUpgrade) -> WebSocketUpgrade {
    upgrade
        .max_message_size(MAX_FRAME_LEN)
        .max_frame_size(MAX_FRAME_LEN)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
}

/// Splits an agent's socket into the inbox, the outbox, and the writer task that drains the
/// outbox into the socket.
pub fn split(socket: WebSocket) -> (Inbox, Outbox, Writer) {
    let (sink, stream) = socket.split();
    // A frame's share of OUTBOX_BYTES is given back as it goes into the socket's buffer.
    let sink =
        sink.with(|(message, _room): Queued| std::future::ready(Ok::<_, axum::Error>(message)));
    let (tx, rx) = mpsc::channel(OUTBOX_CAPACITY);
    let stop = CancellationToken::new();
    let task = tokio::spawn(runtime::write_batched(sink, rx, stop.clone(), |m| {
        matches!(m.0, Message::Close(_))
    }));
    let room = Arc::new(Semaphore::new(OUTBOX_BYTES));
    (Inbox { stream }, Outbox { tx, room }, Writer { task, stop })
}

/// A message in the outbox, with the share of [`OUTBOX_BYTES`] it holds while queued.
type Queued = (Message, Option<OwnedSemaphorePermit>);

/// What came from the agent.
#[derive(Debug)]
pub enum Received {
    Frame(FromAgent),
    /// A ping or a pong: nothing to do but note the agent is alive.
    Heartbeat,
}

/// Why nothing more can be read.
#[derive(Debug)]
pub enum RecvError {
    /// The agent closed the connection, or it is gone.
    Closed,
    Socket(axum::Error),
    /// A text message, which the protocol does not use.
    Text,
    /// A binary message that is no frame an agent sends.
    Decode(DecodeError),
}

/// The receiving half of an agent's socket.
#[derive(Debug)]
pub struct Inbox {
    stream: SplitStream<WebSocket>,
}

impl Inbox {
    /// The next frame or heartbeat from the agent. Cancel-safe: nothing is read until the
    /// message is whole.
    pub async fn recv(&mut self) -> Result<Received, RecvError> {
        match self.stream.next().await {
            None | Some(Ok(Message::Close(_))) => Err(RecvError::Closed),
            Some(Err(e)) => Err(RecvError::Socket(e)),
            Some(Ok(Message::Binary(bytes))) => FromAgent::decode(&bytes)
                .map(Received::Frame)
                .map_err(RecvError::Decode),
            Some(Ok(Message::Text(_))) => Err(RecvError::Text),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(Received::Heartbeat),
        }
    }
}

/// Whether a socket error is tungstenite refusing a message over `max_message_size` (or a
/// frame over `max_frame_size`). It leaves the close to us, while other socket errors mean
/// the connection is gone.
pub fn message_too_long(error: &axum::Error) -> bool {
    use tungstenite::Error as WsError;
    use tungstenite::error::CapacityError;
    std::error::Error::source(error)
        .and_then(|inner| inner.downcast_ref::<WsError>())
        .is_some_and(|e| matches!(e, WsError::Capacity(CapacityError::MessageTooLong { .. })))
}

/// The sending half of an agent's socket: messages queued for its [`Writer`]. Clones share the
/// queue.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Queued>,
    /// What is left of [`OUTBOX_BYTES`].
    room: Arc<Semaphore>,
}

/// Why a frame was not queued.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("agent disconnected")]
    Closed,
    #[error("frame could not be encoded")]
    Encode,
}

impl Outbox {
    /// Queues `message`, waiting while the queue is full, in messages or in bytes
    /// (backpressure); fails once the session has ended.
    pub async fn send(&self, message: &ToAgent) -> Result<(), SendError> {
        let bytes = message.encode().map_err(|_| SendError::Encode)?;
        let share = u32::try_from(bytes.len().min(OUTBOX_BYTES)).unwrap_or(u32::MAX);
        let room = Arc::clone(&self.room)
            .acquire_many_owned(share)
            .await
            .map_err(|_| SendError::Closed)?;
        self.tx
            .send((Message::Binary(Bytes::from(bytes)), Some(room)))
            .await
            .map_err(|_| SendError::Closed)
    }

    /// Queues `message` unless the queue is full or the session has ended, without waiting
    /// (and without counting it against [`OUTBOX_BYTES`]: these are the small frames that
    /// end a delivery).
    pub fn try_send(&self, message: &ToAgent) {
        if let Ok(bytes) = message.encode() {
            let _ = self
                .tx
                .try_send((Message::Binary(Bytes::from(bytes)), None));
        }
    }

    /// Queues a ping, unless the queue is full.
    pub fn ping(&self) {
        let _ = self.tx.try_send((Message::Ping(Bytes::new()), None));
    }

    /// Queues the close frame: `code`, and `reason` cut to what a close frame holds. The
    /// writer stops once it has sent it.
    pub fn close(&self, code: u16, reason: String) {
        let frame = CloseFrame {
            code,
            reason: truncate_reason(reason).into(),
        };
        let _ = self.tx.try_send((Message::Close(Some(frame)), None));
    }
}

/// The task that writes an agent's outbox to its socket.
#[derive(Debug)]
pub struct Writer {
    task: JoinHandle<()>,
    stop: CancellationToken,
}

impl Writer {
    /// Lets the writer flush what is queued: it ends once it has sent a close frame or every
    /// [`Outbox`] is gone. The wait is bounded, so a peer that stopped reading cannot keep the
    /// task alive.
    pub async fn finish(self) {
        let _ = tokio::time::timeout(FLUSH_GRACE, self.task).await;
        self.stop.cancel();
    }
}

/// Cuts `reason` to [`MAX_CLOSE_REASON`] bytes, at a character boundary.
fn truncate_reason(mut reason: String) -> String {
    if reason.len() > MAX_CLOSE_REASON {
        let mut cut = MAX_CLOSE_REASON;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
    }
    reason
}
