//! What the agent tells a human about, as data: [`Event`] and its parts ([`Delivery`],
//! [`Disconnect`], [`BodyPrefix`]), and the bookkeeping of a delivery under way ([`Started`],
//! [`Outcome`]).
//!
//! Every other module speaks this vocabulary and this module imports none of them (only the
//! error type), so the agent, its sessions, the API client and the output form a tree.

use std::time::{Duration, Instant, SystemTime};

use protocol::api::{ATTEMPT_HEADER, AttemptKind};
use protocol::{DeliveryId, EVENT_TYPE_HEADER, Headers, RequestHead};

use crate::error::Error;

/// What the agent reports for a human to read (see `report.rs` and `output.rs`).
#[derive(Debug, Clone)]
pub enum Event {
    /// Connected (or reconnected) and serving `public_url`.
    Connected { public_url: String, target: String },
    /// Not connected to the relay at `server` (as given with `--server`) because of `why`;
    /// the next attempt is in `retry_in`.
    Disconnected {
        server: String,
        why: Disconnect,
        retry_in: Duration,
    },
    /// Shutdown began: `in_flight` deliveries may take up to `grace` to finish.
    Draining { in_flight: usize, grace: Duration },
    /// The agent stopped; `unfinished` deliveries were cut off at the end of the grace period.
    Stopped { unfinished: usize },
    /// One delivery finished.
    Delivered(Delivery),
}

/// Why the agent is not connected, for the line that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disconnect {
    /// The relay closed the connection with `code` (1001: it is shutting down).
    Closed { code: u16, reason: String },
    /// The relay answered the WebSocket request with an HTTP error and this reason.
    Refused { status: u16, message: String },
    /// The relay could not be reached at all.
    Unreachable(String),
    /// The connection broke, or the handshake did not complete.
    Lost(String),
}

impl Disconnect {
    /// Why `e`, an error that reconnecting may get past, kept us from the relay.
    pub fn of(e: &Error) -> Self {
        match e {
            Error::Closed { code, reason, .. } => Disconnect::Closed {
                code: *code,
                reason: reason.clone(),
            },
            Error::HttpRefused {
                status, message, ..
            } => Disconnect::Refused {
                status: status.as_u16(),
                message: message.clone(),
            },
            Error::Connect { reason, .. } => Disconnect::Unreachable(reason.clone()),
            Error::Handshake { reason, .. } => {
                Disconnect::Lost(format!("handshake failed: {reason}"))
            }
            other => Disconnect::Lost(other.to_string()),
        }
    }
}

/// One finished delivery, as the output line shows it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub at: SystemTime,
    pub id: DeliveryId,
    pub method: String,
    /// Path below the channel, with `?query` when there was one (see [`shown_path`]).
    pub path: String,
    /// The webhook's event type, as the relay named it; `None` when it has none.
    pub event_type: Option<String>,
    /// Status sent back to the sender; `None` when no answer could be sent.
    pub status: Option<u16>,
    pub duration: Duration,
    pub error: Option<String>,
    pub via: Via,
    /// The start of the target's response body, with `--print-body` and an answer passed on
    /// whole; `None` otherwise. Boxed, so without it a delivery grows by one null word only.
    pub body: Option<Box<BodyPrefix>>,
}

/// Most bytes of a response body [`BodyPrefix`] keeps (`--print-body`, whose help says 4 KiB):
/// enough for a typical JSON answer or error message, and a bound on what a delivery in
/// flight holds however large its body is.
pub const SHOWN_BODY_BYTES: usize = 4 * 1024;

/// The first [`SHOWN_BODY_BYTES`] of a response body and the length of all of it, gathered
/// slice by slice while the body streams back to the server: only the prefix is copied, so
/// keeping it neither holds back nor buffers the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BodyPrefix {
    kept: Vec<u8>,
    total: u64,
}

impl BodyPrefix {
    /// Counts `data`, the body's next slice, and copies what of it still fits in the prefix.
    pub fn keep(&mut self, data: &[u8]) {
        let room = SHOWN_BODY_BYTES.saturating_sub(self.kept.len());
        let (fits, _) = data.split_at(room.min(data.len()));
        self.kept.extend_from_slice(fits);
        self.total = self.total.saturating_add(data.len() as u64);
    }

    /// The body's first bytes: all of it when [`BodyPrefix::is_cut`] is false.
    pub fn kept(&self) -> &[u8] {
        &self.kept
    }

    /// The length of the whole body, kept or not.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Whether the body is longer than what was kept.
    pub fn is_cut(&self) -> bool {
        self.total > self.kept.len() as u64
    }
}

/// Who sent a [`Delivery`] to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The relay, as an attempt of this kind (its `x-hookrelay-attempt` header).
    Relay(AttemptKind),
    /// `relay-client replay ID --forward URL`: sent from here, not recorded on the relay.
    Local,
}

impl Via {
    /// The relay's attempt that `headers` name; a live one when they name none we know
    /// (a server from before the header sends none, and its deliveries were all live).
    pub(crate) fn of(headers: &Headers) -> Self {
        Self::named(find(headers, ATTEMPT_HEADER))
    }

    fn named(value: Option<&[u8]>) -> Self {
        let named = value
            .and_then(|value| std::str::from_utf8(value).ok())
            .and_then(AttemptKind::parse);
        Via::Relay(named.unwrap_or(AttemptKind::Live))
    }
}

/// The value of header `name` (lowercase), in any case.
fn find<'a>(headers: &'a Headers, name: &str) -> Option<&'a [u8]> {
    (headers.iter())
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_ref())
}

/// The event type the relay named on a delivery's head ([`EVENT_TYPE_HEADER`]), when it is
/// one.
pub(crate) fn event_type(headers: &Headers) -> Option<String> {
    let value = std::str::from_utf8(find(headers, EVENT_TYPE_HEADER)?).ok()?;
    protocol::is_event_type(value).then(|| value.to_owned())
}

/// What became of one delivery, for the output line.
#[derive(Debug)]
pub struct Outcome {
    /// Status sent back to the server, if a response head was sent.
    pub status: Option<u16>,
    /// Why the target's answer is not what the sender gets, when it is not.
    pub error: Option<String>,
    /// The start of the target's response body (see [`Delivery::body`]).
    pub body: Option<Box<BodyPrefix>>,
}

/// A delivery under way: what its [`Delivery`] line will say besides the outcome.
pub(crate) struct Started {
    at: SystemTime,
    clock: Instant,
    id: DeliveryId,
    method: String,
    path: String,
    event_type: Option<String>,
    via: Via,
}

impl Started {
    /// Starts the clock for `head`, before it goes to the target.
    pub(crate) fn now(head: &RequestHead) -> Self {
        Self {
            at: SystemTime::now(),
            clock: Instant::now(),
            id: head.id,
            method: head.method.clone(),
            path: shown_path(&head.path, head.query.as_deref()),
            event_type: event_type(&head.headers),
            via: Via::of(&head.headers),
        }
    }

    /// The delivery's event type, which picks its `--route`.
    pub(crate) fn event_type(&self) -> Option<&str> {
        self.event_type.as_deref()
    }

    pub(crate) fn finish(self, outcome: Outcome) -> Delivery {
        Delivery {
            at: self.at,
            id: self.id,
            method: self.method,
            path: self.path,
            event_type: self.event_type,
            status: outcome.status,
            duration: self.clock.elapsed(),
            error: outcome.error,
            via: self.via,
            body: outcome.body,
        }
    }
}

/// A delivery's path below the channel as lines and tables show it: with `?query` when there
/// was one, always starting with `/`.
pub fn shown_path(path: &str, query: Option<&str>) -> String {
    let slash = if path.starts_with('/') { "" } else { "/" };
    match query {
        Some(q) => format!("{slash}{path}?{q}"),
        None => format!("{slash}{path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn the_attempt_header_names_the_relays_attempt_and_defaults_to_live() {
        let via = |value: &'static [u8]| {
            Via::of(&vec![(
                "X-Hookrelay-Attempt".to_owned(),
                Bytes::from_static(value),
            )])
        };
        assert_eq!(via(b"queued"), Via::Relay(AttemptKind::Queued));
        assert_eq!(via(b"replay"), Via::Relay(AttemptKind::Replay));
        assert_eq!(via(b"someday"), Via::Relay(AttemptKind::Live));
        assert_eq!(Via::of(&Vec::new()), Via::Relay(AttemptKind::Live));
    }

    #[test]
    fn a_body_prefix_copies_its_first_bytes_and_counts_them_all() {
        let mut body = BodyPrefix::default();
        body.keep(b"");
        assert_eq!(
            (body.kept(), body.total(), body.is_cut()),
            (&b""[..], 0, false)
        );
        body.keep(&[b'a'; SHOWN_BODY_BYTES - 1]);
        body.keep(b"bc");
        body.keep(&[b'd'; 100_000]);
        assert_eq!(body.kept().len(), SHOWN_BODY_BYTES);
        assert_eq!(
            body.kept().last(),
            Some(&b'b'),
            "the prefix ends inside the second slice"
        );
        assert_eq!(body.total(), (SHOWN_BODY_BYTES + 1 + 100_000) as u64);
        assert!(body.is_cut());
        assert_eq!(SHOWN_BODY_BYTES, 4096, "--print-body's help says 4 KiB");
    }
}
