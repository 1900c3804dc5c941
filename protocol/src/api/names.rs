//! The names the API gives an event's status and an attempt's kind, and [`Open`], which reads
//! a name this side does not know yet without failing the whole answer.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Where an event stands. Serialised as [`EventStatus::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
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
    /// Agents were connected but none takes its event type (their `--events`): kept for
    /// inspection, not retried, replayable to any agent.
    Unrouted,
}

impl EventStatus {
    pub const ALL: [EventStatus; 6] = [
        EventStatus::Queued,
        EventStatus::Delivering,
        EventStatus::Delivered,
        EventStatus::Failed,
        EventStatus::Rejected,
        EventStatus::Unrouted,
    ];

    /// The name the API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Queued => "queued",
            EventStatus::Delivering => "delivering",
            EventStatus::Delivered => "delivered",
            EventStatus::Failed => "failed",
            EventStatus::Rejected => "rejected",
            EventStatus::Unrouted => "unrouted",
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

impl FromStr for EventStatus {
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

/// Why an attempt was made. Serialised as [`AttemptKind::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
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

    /// The name the API and [`ATTEMPT_HEADER`](super::ATTEMPT_HEADER) use.
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

impl FromStr for AttemptKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s).ok_or_else(|| format!("{s:?} is not an attempt kind"))
    }
}

/// A name from a set a newer server may extend ([`EventStatus`], [`AttemptKind`]): one this
/// side knows, or the text as it came. An agent older than its server then still lists an
/// event in a state added since (as `rejected` once was) instead of failing to read the page.
///
/// It is written exactly as the name it holds, so the JSON is the same as `T`'s.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Open<T> {
    Known(T),
    /// A name `T` does not have, kept as sent.
    Unknown(String),
}

impl<T: Copy> Open<T> {
    /// The name, if this side knows it.
    pub fn known(&self) -> Option<T> {
        match self {
            Open::Known(t) => Some(*t),
            Open::Unknown(_) => None,
        }
    }
}

impl<T> From<T> for Open<T> {
    fn from(t: T) -> Self {
        Open::Known(t)
    }
}

impl<T: fmt::Display> fmt::Display for Open<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Open::Known(t) => t.fmt(f),
            Open::Unknown(name) => f.write_str(name),
        }
    }
}

impl<T: Serialize> Serialize for Open<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Open::Known(t) => t.serialize(serializer),
            Open::Unknown(name) => serializer.serialize_str(name),
        }
    }
}

impl<'de, T: FromStr> Deserialize<'de> for Open<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Ok(match name.parse() {
            Ok(t) => Open::Known(t),
            Err(_) => Open::Unknown(name),
        })
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
