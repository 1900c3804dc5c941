//! Channels as the API shows them: the status a channel's token may read, the channel a token
//! names, and the admin API's answers.
//!
//! Fields are declared in alphabetical order, as in `events.rs` and for the same reason: the
//! bytes of every answer stay what they were before these types existed.

use serde::{Deserialize, Serialize};

/// `GET /api/channels/{channel}`: whether the channel is registered, its mode and the agents
/// serving it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelStatus {
    pub agent_count: usize,
    pub agents: Vec<AgentStatus>,
    pub channel: String,
    /// `balance` or `fanout`, as `relay-server channels --mode` names them; `balance` for a
    /// channel that is not registered.
    pub mode: String,
    pub registered: bool,
    /// The channel's public webhook URL.
    pub url: String,
}

/// One agent serving a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// The agent's name and version from its hello.
    pub client: String,
    pub connected_at: String,
    /// The event types it takes (its `--events`), `null` for every type.
    pub events: Option<Vec<String>>,
    pub id: String,
    /// Deliveries it has not answered yet.
    pub in_flight: usize,
    /// The relay server it is connected to (its `--node-id`).
    pub node: String,
    /// Its address, as the relay sees it.
    pub peer: String,
}

/// `GET /api/token/channel`: the registered channel whose token the request carried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenChannel {
    pub channel: String,
    pub url: String,
}

/// A registered channel in the admin API: what `POST`, `PATCH` and `.../rotate` answer, and
/// each entry of [`AdminChannels`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminChannel {
    /// Agents serving it now; only in the listing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_count: Option<usize>,
    /// Source networks allowed to send it webhooks (`10.0.0.0/8`); empty allows any.
    pub allow_from: Vec<String>,
    pub created_at: String,
    /// Where its webhooks' event type is read from (`header:X-Kind`, `json:/meta/kind`), or
    /// `null` for the senders' usual places.
    pub event_type: Option<String>,
    pub mode: String,
    pub name: String,
    /// Its own delivery pace (`10/s`), `null` for the server's `--rate-limit`.
    pub rate_limit: Option<String>,
    /// The channel's token: only in the answers that issue one (create, rotate), shown that
    /// once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    pub url: String,
    /// The signature scheme its webhooks must carry (`github`, `stripe`, ...), or `null`.
    pub verify: Option<String>,
}

/// `GET /api/admin/channels`: every registered channel, without tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminChannels {
    pub channels: Vec<AdminChannel>,
}
