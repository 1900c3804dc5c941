//! The frames and their payloads.
//!
//! Bincode writes the variant *index* of an enum and the fields of a struct in order, with no
//! names: variants and fields are append-only, and nothing here may use `flatten`, `untagged` or
//! `skip_serializing_if`.

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{InvalidChannel, MAX_CHANNEL_LEN};

/// Header name and value pairs in the order received, duplicates kept. Names are lowercase
/// ASCII; values are raw bytes because HTTP allows non-UTF-8 (obs-text) values.
pub type Headers = Vec<(String, Bytes)>;

/// One WebSocket binary message.
///
/// A delivery is `Request` (server to agent) with `fin` set when the whole body fit, followed by
/// `Body` frames until one has `fin`; the answer is `Response` (agent to server), followed the
/// same way by `Body` frames. Frames of different deliveries interleave freely. `Abort` ends a
/// delivery early from either side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// Agent to server, first frame of a connection.
    Hello(Hello),
    /// Server to agent, answer to an accepted `Hello`.
    Welcome(Welcome),
    /// Server to agent: a webhook to replay against the target.
    Request(RequestHead),
    /// Agent to server: the target's answer to a `Request`.
    Response(ResponseHead),
    /// Either way: the next slice of a request or response body.
    Body(BodyChunk),
    /// Either way: stop working on a delivery (sender gone, timeout, target failed mid-body).
    Abort(Abort),
    /// Either way: a connection-level refusal, sent just before closing.
    Error(ErrorFrame),
    /// Agent to server, first frame instead of `Hello` from an agent that takes only some
    /// event types. Appended after version 1's first release, so every earlier frame keeps its
    /// encoding; an agent that takes every type still opens with `Hello`.
    Subscribe(Subscribe),
}

/// The agent introduces itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The agent's [`crate::PROTOCOL_VERSION`].
    pub version: u16,
    /// The channel to serve; `None` asks the server to assign a fresh one.
    pub channel: Option<String>,
    /// The server's agent token, when it requires one.
    pub token: Option<String>,
    /// Free-form client name and version, for logs (`relay-client/0.1.0`).
    pub client: String,
}

/// An agent's `Hello` with the event types it takes: the server sends it only webhooks whose
/// type matches one of `events` (see [`crate::Subscription`]), and none without a type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscribe {
    pub hello: Hello,
    /// Patterns as typed: an exact type, or a prefix ending in `*`. At least one.
    pub events: Vec<String>,
}

/// The server accepted the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The server's [`crate::PROTOCOL_VERSION`].
    pub version: u16,
    /// The channel this agent now serves.
    pub channel: String,
    /// Public webhook URL of the channel, e.g. `https://relay.example.com/h/<channel>`.
    pub public_url: String,
    /// The id the server logs this connection under.
    pub agent_id: Uuid,
}

/// The head of a webhook as the sender made it, plus its first body slice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestHead {
    pub id: DeliveryId,
    /// Method as sent (`POST`, `GET`, extension methods too).
    pub method: String,
    /// Path below the channel, still percent-encoded as received: `""` or starting with `/`.
    pub path: String,
    /// Raw query string without `?`, `None` when the URL had no `?`.
    pub query: Option<String>,
    /// End-to-end headers; hop-by-hop headers are already removed.
    pub headers: Headers,
    /// First slice of the body, at most [`crate::MAX_CHUNK_LEN`] bytes.
    pub body: Bytes,
    /// The body is complete: no `Body` frames follow.
    pub fin: bool,
}

/// The head of the target's answer, plus its first body slice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseHead {
    pub id: DeliveryId,
    pub status: u16,
    /// End-to-end headers; hop-by-hop headers are already removed.
    pub headers: Headers,
    /// First slice of the body, at most [`crate::MAX_CHUNK_LEN`] bytes.
    pub body: Bytes,
    /// The body is complete: no `Body` frames follow.
    pub fin: bool,
}

/// A further slice of a request or response body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BodyChunk {
    pub id: DeliveryId,
    /// At most [`crate::MAX_CHUNK_LEN`] bytes.
    pub data: Bytes,
    /// Last slice of this body.
    pub fin: bool,
}

/// Ends a delivery early. The receiver drops what it holds for `id`; frames for `id` that were
/// already in flight are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Abort {
    pub id: DeliveryId,
    /// Human-readable cause, for logs and for the `{"error": ...}` body the sender gets.
    pub reason: String,
}

/// A connection-level refusal, sent just before the close that carries the matching code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorFrame {
    pub code: ErrorCode,
    pub message: String,
}

/// What went wrong with a connection, so the agent can tell retrying from giving up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The peers speak different protocol versions; the message says which side to upgrade.
    VersionMismatch,
    /// Missing or wrong token.
    Unauthorized,
    /// The requested channel name is not valid.
    InvalidChannel,
    /// A frame did not decode, was too large or came out of order.
    ProtocolError,
    /// The server is shutting down; reconnect later.
    ShuttingDown,
    /// A limit of the server is reached (e.g. agents per channel). Added after version 1's
    /// first release: appended, so every earlier code keeps its encoding.
    LimitReached,
}

/// Identifies one delivery end to end: in frames, logs, the `X-Hookrelay-Delivery` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DeliveryId(Uuid);

impl DeliveryId {
    /// A fresh id: a UUID v7, the time in milliseconds followed by 74 random bits. Ids made
    /// later sort later, so a store indexing them appends to one end of its index instead of
    /// touching a random page per webhook.
    pub fn random() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn from_uuid(id: Uuid) -> Self {
        Self(id)
    }

    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// A validated channel name: 1 to [`MAX_CHANNEL_LEN`] characters from `A-Z a-z 0-9 - _`, so it
/// is one URL path segment that needs no escaping.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId(String);

impl ChannelId {
    pub fn parse(name: &str) -> Result<Self, InvalidChannel> {
        let valid = !name.is_empty()
            && name.len() <= MAX_CHANNEL_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if valid {
            Ok(Self(name.to_owned()))
        } else {
            Err(InvalidChannel)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// WebSocket close codes. Agents reconnect after the 1xxx codes and stop with an error on the
/// 4xxx codes, which retrying cannot fix.
pub mod close {
    /// Normal close, e.g. the agent is shutting down.
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down or restarting; reconnect with backoff.
    pub const GOING_AWAY: u16 = 1001;
    /// A frame did not decode or came out of order.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// The peer broke a rule of the session: no hello in time, no pong in time.
    pub const POLICY: u16 = 1008;
    /// A message exceeded [`crate::MAX_FRAME_LEN`].
    pub const TOO_BIG: u16 = 1009;
    /// The peers speak different protocol versions.
    pub const VERSION_MISMATCH: u16 = 4000;
    /// Missing or wrong token.
    pub const UNAUTHORIZED: u16 = 4001;
    /// The requested channel name is not valid.
    pub const INVALID_CHANNEL: u16 = 4002;
    /// A limit of the server is reached, e.g. agents per channel.
    pub const LIMIT_REACHED: u16 = 4003;
}
