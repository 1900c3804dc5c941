//! A channel's history as the API shows it: events, their attempts, a page of events, the
//! replay answer and the live stream's events; and how bytes (bodies, header values) travel
//! in that JSON.
//!
//! Fields are declared in alphabetical order: the server wrote these answers through
//! `serde_json`'s sorted map before they had types, and keeping that order keeps every answer
//! byte for byte what it was.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::names::{AttemptKind, EventStatus, Open};
use crate::{DeliveryId, Headers};

/// One event in a listing (`GET .../events`) and in the live stream's `received` event:
/// everything but the request and the attempts. Times are RFC 3339 with milliseconds, UTC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventSummary {
    /// Attempts made so far, of any kind.
    pub attempts: u32,
    pub body_bytes: u64,
    /// The webhook's type (`push`, `payment_intent.succeeded`), `null` when it has none.
    pub event_type: Option<String>,
    pub id: DeliveryId,
    pub method: String,
    /// When a queued event is next tried; `null` for any other status.
    pub next_attempt_at: Option<String>,
    /// Path below the channel, as received.
    pub path: String,
    pub query: Option<String>,
    pub received_at: String,
    /// The event this one is an edited replay of; `null` for a webhook as a sender sent it.
    pub replay_of: Option<DeliveryId>,
    /// Status of the target's latest answer, if there was one.
    pub response_status: Option<u16>,
    pub status: Open<EventStatus>,
}

/// `GET .../events?limit=&before=&status=`: newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventPage {
    pub channel: String,
    pub events: Vec<EventSummary>,
    /// The cursor for the next, older page (`before=`); `null` on the last page.
    pub next_before: Option<String>,
}

/// `GET .../events/{id}`: the whole request as received and every attempt, oldest first.
/// The summary's fields, with `attempts` the list instead of its length.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventDetail {
    pub attempts: Vec<Attempt>,
    /// The request body, as [`body_encoding`](Self::body_encoding) says.
    pub body: String,
    pub body_bytes: u64,
    pub body_encoding: BodyEncoding,
    pub channel: String,
    pub event_type: Option<String>,
    pub headers: Vec<Header>,
    pub id: DeliveryId,
    pub method: String,
    pub next_attempt_at: Option<String>,
    pub path: String,
    pub query: Option<String>,
    pub received_at: String,
    pub replay_of: Option<DeliveryId>,
    pub response_status: Option<u16>,
    /// The sender's address, when the relay knew it.
    pub source: Option<String>,
    pub status: Open<EventStatus>,
}

/// One attempt without its response headers and body: in the live stream, and the part of
/// [`Attempt`] they share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptSummary {
    /// The agent that carried it.
    pub agent: Option<String>,
    pub duration_ms: u64,
    /// Why it failed, when it did.
    pub error: Option<String>,
    pub kind: Open<AttemptKind>,
    /// 1 for an event's first attempt, then 2, 3, ...
    pub n: u32,
    pub started_at: String,
    /// The target's status code; `null` when no answer came.
    pub status: Option<u16>,
}

/// One attempt and the target's answer to it, in an event's detail and the replay answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub agent: Option<String>,
    /// The response body as recorded (the store cuts long ones).
    pub body: String,
    pub body_bytes: u64,
    pub body_encoding: BodyEncoding,
    pub duration_ms: u64,
    pub error: Option<String>,
    pub headers: Vec<Header>,
    pub kind: Open<AttemptKind>,
    pub n: u32,
    pub started_at: String,
    pub status: Option<u16>,
}

impl Attempt {
    /// `summary` with the response's `headers` and `body`.
    pub fn new(summary: AttemptSummary, headers: &Headers, body: &[u8]) -> Self {
        let AttemptSummary {
            agent,
            duration_ms,
            error,
            kind,
            n,
            started_at,
            status,
        } = summary;
        let (text, body_encoding) = encode_body(body);
        Self {
            agent,
            body: text,
            body_bytes: body.len() as u64,
            body_encoding,
            duration_ms,
            error,
            headers: encode_headers(headers),
            kind,
            n,
            started_at,
            status,
        }
    }
}

/// `POST .../events/{id}/replay`: the event, its status after the replay, and the attempt the
/// replay made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replayed {
    pub attempt: Attempt,
    /// The type of the event the attempt was made on.
    pub event_type: Option<String>,
    /// The event the attempt was made on: the one asked for, or for an edited replay the new
    /// event that holds the edited request.
    pub id: DeliveryId,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// For an edited replay, the event it was made from; `null` otherwise.
    pub replay_of: Option<DeliveryId>,
    pub status: Open<EventStatus>,
}

/// The optional body of `POST .../events/{id}/replay`: replay with these instead of the stored
/// request's. The edited request is stored as a new event naming the original
/// ([`EventSummary::replay_of`]); the original stays as it was. A field left out keeps the
/// stored one; method, path and query always stay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayEdit {
    /// The new body, as [`body_encoding`](Self::body_encoding) says (default `utf8`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_encoding: Option<BodyEncoding>,
    /// Every header of the new request, in order (the stored list is replaced whole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Vec<Header>>,
}

impl ReplayEdit {
    /// Whether it changes nothing: a plain replay.
    pub fn is_empty(&self) -> bool {
        self.body.is_none() && self.headers.is_none()
    }
}

/// The live stream's `attempt` event: an attempt was recorded, and the event's new status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveAttempt {
    pub attempt: AttemptSummary,
    pub id: DeliveryId,
    pub status: Open<EventStatus>,
}

/// The live stream's `reload` event: the stream fell behind and `missed` changes, so the list
/// must be fetched again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveReload {
    pub missed: u64,
}

/// How a body travels in JSON, which has no bytes: as text when it is UTF-8, else base64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyEncoding {
    Utf8,
    Base64,
}

/// `body` as JSON carries it.
pub fn encode_body(body: &[u8]) -> (String, BodyEncoding) {
    match std::str::from_utf8(body) {
        Ok(text) => (text.to_owned(), BodyEncoding::Utf8),
        Err(_) => (BASE64.encode(body), BodyEncoding::Base64),
    }
}

/// The bytes of a body [`encode_body`] made, which must be `len` bytes long: an answer cut
/// short on the way is refused rather than taken for the whole body.
pub fn decode_body(text: String, encoding: BodyEncoding, len: u64) -> Result<Bytes, ContentError> {
    let body = decode_body_text(text, encoding)?;
    if body.len() as u64 != len {
        return Err(ContentError::ShortBody {
            got: body.len(),
            expected: len,
        });
    }
    Ok(body)
}

/// The bytes of a body in JSON ([`encode_body`]'s form), of whatever length it has: for a
/// body a client sends (an edited replay's), which no length vouches for.
pub fn decode_body_text(text: String, encoding: BodyEncoding) -> Result<Bytes, ContentError> {
    match encoding {
        // No copy: the text's buffer becomes the body.
        BodyEncoding::Utf8 => Ok(Bytes::from(text)),
        BodyEncoding::Base64 => BASE64
            .decode(&text)
            .map(Bytes::from)
            .map_err(|e| ContentError::BodyBase64(e.to_string())),
    }
}

/// A header as JSON carries it: `{"name", "value"}`, or `{"name", "value_base64"}` for a
/// value that is not UTF-8, so every byte survives. Exactly one of the two is present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_base64: Option<String>,
}

/// `headers` as JSON carries them, in order, duplicates kept.
pub fn encode_headers(headers: &Headers) -> Vec<Header> {
    headers
        .iter()
        .map(|(name, value)| Header::encode(name, value))
        .collect()
}

impl Header {
    pub fn encode(name: &str, value: &[u8]) -> Self {
        let (value, value_base64) = match std::str::from_utf8(value) {
            Ok(text) => (Some(text.to_owned()), None),
            Err(_) => (None, Some(BASE64.encode(value))),
        };
        Self {
            name: name.to_owned(),
            value,
            value_base64,
        }
    }

    /// The header's name and value bytes.
    pub fn decode(self) -> Result<(String, Bytes), ContentError> {
        let value = match (self.value, self.value_base64) {
            (Some(value), _) => Bytes::from(value),
            (None, Some(encoded)) => match BASE64.decode(&encoded) {
                Ok(value) => Bytes::from(value),
                Err(e) => {
                    return Err(ContentError::HeaderBase64 {
                        name: self.name,
                        reason: e.to_string(),
                    });
                }
            },
            (None, None) => return Err(ContentError::NoHeaderValue(self.name)),
        };
        Ok((self.name, value))
    }
}

/// Encoded content ([`decode_body`], [`Header::decode`]) that is not what it claims to be.
/// The messages read after "event ID cannot be replayed from here: ".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    #[error("its body is not valid base64 ({0})")]
    BodyBase64(String),
    #[error("the server sent {got} of its {expected} body bytes")]
    ShortBody { got: usize, expected: u64 },
    #[error("header {name} is not valid base64 ({reason})")]
    HeaderBase64 { name: String, reason: String },
    #[error("header {0} has no value")]
    NoHeaderValue(String),
}
