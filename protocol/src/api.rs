//! The HTTP API contract both sides share: the headers the relay adds to every delivery, and
//! the names the API gives an event's status and an attempt's kind. One definition each, so
//! the server that writes them and the agent that reads them cannot drift apart.

use std::fmt;

/// The delivery's id, on the request the target gets and on the answer the sender gets.
pub const DELIVERY_HEADER: &str = "x-hookrelay-delivery";

/// Which [`AttemptKind`] a delivery is, on the request the target gets.
pub const ATTEMPT_HEADER: &str = "x-hookrelay-attempt";

/// Where an event stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventStatus {
    /// Waiting for an agent, or for its next retry.
    Queued,
    /// An agent is delivering it now.
    Delivering,
    /// The target accepted it (anything but 408, 429 or 5xx).
    Delivered,
    /// Given up on: a live delivery that failed (the sender was told), or retries exhausted.
    Failed,
    /// Refused at the edge (its signature did not verify): kept for inspection, never
    /// forwarded or replayed.
    Rejected,
}

impl EventStatus {
    pub const ALL: [EventStatus; 5] = [
        EventStatus::Queued,
        EventStatus::Delivering,
        EventStatus::Delivered,
        EventStatus::Failed,
        EventStatus::Rejected,
    ];

    /// The name the API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Queued => "queued",
            EventStatus::Delivering => "delivering",
            EventStatus::Delivered => "delivered",
            EventStatus::Failed => "failed",
            EventStatus::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }
}

impl fmt::Display for EventStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for EventStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|status| status.as_str()).collect();
            format!(
                "{s:?} is not an event status: use one of {}",
                names.join(", ")
            )
        })
    }
}

/// Why an attempt was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptKind {
    /// While the sender waited for the answer.
    Live,
    /// From the queue: the event arrived while no agent was connected, or is being retried.
    Queued,
    /// Asked for through the replay API.
    Replay,
}

impl AttemptKind {
    pub const ALL: [AttemptKind; 3] = [AttemptKind::Live, AttemptKind::Queued, AttemptKind::Replay];

    /// The name the API and [`ATTEMPT_HEADER`] use.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptKind::Live => "live",
            AttemptKind::Queued => "queued",
            AttemptKind::Replay => "replay",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == s)
    }
}

impl fmt::Display for AttemptKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for status in EventStatus::ALL {
            assert_eq!(status.as_str().parse::<EventStatus>(), Ok(status));
        }
        for kind in AttemptKind::ALL {
            assert_eq!(AttemptKind::parse(kind.as_str()), Some(kind));
        }
        let err = "done".parse::<EventStatus>().expect_err("not a status");
        assert!(
            err.contains("queued, delivering, delivered, failed, rejected"),
            "{err}"
        );
    }
}
