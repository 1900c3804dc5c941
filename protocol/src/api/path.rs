//! The API's paths. A channel's history lives below its root, [`channel`]; the agent keeps
//! that root and appends the `EVENTS`, [`event`], [`replay`] and [`LIVE`] paths to it.
//!
//! Each function given the router's placeholders (`"{channel}"`, `"{id}"`) spells the
//! router's pattern, so the server can route with the same text the agent calls.

use std::fmt::Display;

/// The channel a bearer token names.
pub const TOKEN_CHANNEL: &str = "/api/token/channel";

/// The admin API's channels.
pub const ADMIN_CHANNELS: &str = "/api/admin/channels";

/// One channel in the admin API (`PATCH`, `DELETE`).
pub fn admin_channel(name: impl Display) -> String {
    format!("{ADMIN_CHANNELS}/{name}")
}

/// A new token for the channel.
pub fn admin_rotate(name: impl Display) -> String {
    format!("{ADMIN_CHANNELS}/{name}/rotate")
}

/// A channel's API root, which answers its status.
pub fn channel(channel: impl Display) -> String {
    format!("/api/channels/{channel}")
}

/// Below [`channel`]: the events, a page at a time.
pub const EVENTS: &str = "/events";

/// Below [`channel`]: one event.
pub fn event(id: impl Display) -> String {
    format!("{EVENTS}/{id}")
}

/// Below [`channel`]: replay one event.
pub fn replay(id: impl Display) -> String {
    format!("{EVENTS}/{id}/replay")
}

/// Below [`channel`]: the live stream of changes (server-sent events).
pub const LIVE: &str = "/live";

/// Where a channel's webhooks are sent, below the server's public URL.
pub fn webhooks(channel: impl Display) -> String {
    format!("/h/{channel}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_spell_the_routes() {
        let root = channel("{channel}");
        assert_eq!(root, "/api/channels/{channel}");
        assert_eq!(root.clone() + EVENTS, "/api/channels/{channel}/events");
        assert_eq!(
            root.clone() + &replay("{id}"),
            "/api/channels/{channel}/events/{id}/replay"
        );
        assert_eq!(root + LIVE, "/api/channels/{channel}/live");
        assert_eq!(admin_rotate("{name}"), "/api/admin/channels/{name}/rotate");
        assert_eq!(webhooks("c"), "/h/c");
    }
}
