//! The HTTP API contract both sides share: the headers the relay adds to every delivery, the
//! API's paths, and the JSON of every answer, as serde types. The server serialises these
//! types and the agent deserialises the same ones, so the two cannot drift apart.
//!
//! The JSON is part of the contract (scripts, the inspector page and older agents read it):
//! field names, whether a field is `null` or absent, and the order of fields stay as they
//! are. Unlike frames, these types are never bincode-encoded, so `skip_serializing_if` is
//! fine here.

use serde::{Deserialize, Serialize};

mod channels;
mod events;
mod names;
pub mod path;

pub use channels::{AdminChannel, AdminChannels, AgentStatus, ChannelStatus, TokenChannel};
pub use events::{
    Attempt, AttemptSummary, BodyEncoding, ContentError, EventDetail, EventPage, EventSummary,
    Header, LiveAttempt, LiveReload, ReplayEdit, Replayed, decode_body, decode_body_text,
    encode_body, encode_headers,
};
pub use names::{AttemptKind, EventStatus, Open};

use crate::DeliveryId;

/// The delivery's id, on the request the target gets and on the answer the sender gets.
pub const DELIVERY_HEADER: &str = "x-hookrelay-delivery";

/// Which [`AttemptKind`] a delivery is, on the request the target gets.
pub const ATTEMPT_HEADER: &str = "x-hookrelay-attempt";

/// The body of every error the server answers (and of the 502/504 an agent answers for a
/// target that failed): `{"error": "..."}`, the message for a human.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

impl ErrorBody {
    pub fn new(error: impl Into<String>) -> Self {
        Self {
            error: error.into(),
        }
    }
}

/// The answer to a webhook the relay took but has not delivered yet: `202 {"id", "status"}`,
/// or with `--offline-status 503` the same with an `error` saying no agent is connected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub id: DeliveryId,
    pub status: AcceptedStatus,
}

/// What became of an [`Accepted`] webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AcceptedStatus {
    /// Stored, to be delivered when an agent can take it.
    Queued,
    /// An agent has it, but did not answer within `--ack-after`; the answer is recorded.
    Pending,
    /// Stored, but no connected agent takes its event type; replay it to deliver it.
    Unrouted,
}

impl Accepted {
    pub fn queued(id: DeliveryId) -> Self {
        Self {
            error: None,
            id,
            status: AcceptedStatus::Queued,
        }
    }

    pub fn pending(id: DeliveryId) -> Self {
        Self {
            error: None,
            id,
            status: AcceptedStatus::Pending,
        }
    }

    pub fn unrouted(id: DeliveryId) -> Self {
        Self {
            error: None,
            id,
            status: AcceptedStatus::Unrouted,
        }
    }
}

/// `GET /healthz` and `GET /readyz`: `{"status"}`, and the `reason` when not ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub status: HealthStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HealthStatus {
    /// `/healthz`: the server is serving.
    #[serde(rename = "ok")]
    Ok,
    /// `/readyz`: the store takes writes and the server is not shutting down.
    #[serde(rename = "ready")]
    Ready,
    #[serde(rename = "not ready")]
    NotReady,
}

impl Health {
    pub fn ok() -> Self {
        Self {
            reason: None,
            status: HealthStatus::Ok,
        }
    }

    pub fn ready() -> Self {
        Self {
            reason: None,
            status: HealthStatus::Ready,
        }
    }

    pub fn not_ready(reason: impl Into<String>) -> Self {
        Self {
            reason: Some(reason.into()),
            status: HealthStatus::NotReady,
        }
    }
}
