//! The channel model: a registered channel ([`ChannelRecord`]), its token (kept only as a
//! SHA-256 hash, [`TokenHash`]) and its settings (how its webhooks reach agents, at what pace,
//! from where, signed how).
//!
//! A leaf: plain data and its parsing, which the store keeps, the configuration reads and the
//! relay consults. Registering, rotating and serving channels is [`crate::channels`]'s.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use protocol::ChannelId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::clock::Millis;

/// What every channel token starts with, so secret scanners and people can tell one apart.
pub const TOKEN_PREFIX: &str = "hrt_";
/// Random bytes in a token: 256 bits, so a fast hash is as good as a slow one for storing it.
const TOKEN_BYTES: usize = 32;

/// A fresh channel token: [`TOKEN_PREFIX`] and 256 random bits, base64url.
pub fn new_token() -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).expect("the OS random source is available on supported platforms");
    format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// The SHA-256 of a token: all the store keeps of it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    pub fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    /// Whether `presented` is the token this is the hash of, in time independent of where
    /// the hashes differ.
    pub fn matches(&self, presented: &str) -> bool {
        bool::from(self.0.ct_eq(&Self::of(presented).0))
    }
}

impl std::fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenHash(..)")
    }
}

/// How a channel's webhooks are spread over its agents.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Each webhook goes to one agent, round robin.
    #[default]
    Balance,
    /// Each webhook goes to every agent; the sender gets the first answer.
    Fanout,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Balance => "balance",
            Mode::Fanout => "fanout",
        }
    }
}

/// A channel's settings, kept by the store as JSON. Fields added later default, so a store
/// written by an older version reads.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChannelSettings {
    pub mode: Mode,
    /// The pace its webhooks are delivered at; `None` is the server's `--rate-limit`.
    pub rate_limit: Option<RateLimit>,
    /// Source addresses allowed to send webhooks; empty allows any.
    pub allow_from: Vec<ipnet::IpNet>,
    /// How its webhooks are signed; a webhook that does not verify is refused with 401.
    pub verify: Option<crate::verify::Verify>,
    /// Where its webhooks' event type is; `None` for the senders' usual places.
    pub event_type: Option<crate::event_type::TypeSource>,
}

/// A rate: `count` webhooks per `period`, in bursts of up to `count` (a channel's delivery
/// pace, or a source's allowance). Written `100/s`,
/// `600/m` or `1000/h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RateLimit {
    pub count: std::num::NonZeroU32,
    pub period: Period,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Second,
    Minute,
    Hour,
}

impl std::str::FromStr for RateLimit {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a rate: use COUNT/s, COUNT/m or COUNT/h, e.g. 100/s");
        let (count, period) = s.split_once('/').ok_or_else(bad)?;
        let count = count.trim().parse().map_err(|_| bad())?;
        let period = match period.trim() {
            "s" => Period::Second,
            "m" => Period::Minute,
            "h" => Period::Hour,
            _ => return Err(bad()),
        };
        Ok(Self { count, period })
    }
}

impl std::fmt::Display for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let period = match self.period {
            Period::Second => "s",
            Period::Minute => "m",
            Period::Hour => "h",
        };
        write!(f, "{}/{period}", self.count)
    }
}

impl TryFrom<String> for RateLimit {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<RateLimit> for String {
    fn from(rate: RateLimit) -> String {
        rate.to_string()
    }
}

/// A registered channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRecord {
    pub name: ChannelId,
    pub token_hash: TokenHash,
    pub created_at: Millis,
    pub settings: ChannelSettings,
}

/// A change to a channel's settings: each `Some` replaces that setting, `None` keeps it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SettingsChange {
    pub mode: Option<Mode>,
    /// `Some(None)`: back to the server's `--rate-limit`.
    pub rate_limit: Option<Option<RateLimit>>,
    /// `Some(vec![])`: any source.
    pub allow_from: Option<Vec<ipnet::IpNet>>,
    /// `Some(None)`: no signature check.
    pub verify: Option<Option<crate::verify::Verify>>,
    /// `Some(None)`: back to the senders' usual places.
    pub event_type: Option<Option<crate::event_type::TypeSource>>,
}

impl SettingsChange {
    pub fn is_empty(&self) -> bool {
        *self == SettingsChange::default()
    }

    /// Applies the change to `settings`.
    pub fn apply(self, settings: &mut ChannelSettings) {
        if let Some(mode) = self.mode {
            settings.mode = mode;
        }
        if let Some(rate) = self.rate_limit {
            settings.rate_limit = rate;
        }
        if let Some(nets) = self.allow_from {
            settings.allow_from = nets;
        }
        if let Some(verify) = self.verify {
            settings.verify = verify;
        }
        if let Some(source) = self.event_type {
            settings.event_type = source;
        }
    }
}

/// A channel the configuration file declares; the server creates or updates it at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredChannel {
    pub name: ChannelId,
    pub token_hash: TokenHash,
    pub settings: ChannelSettings,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_long_and_distinct() {
        let a = new_token();
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 43);
        assert_ne!(a, new_token());
        let hash = TokenHash::of(&a);
        assert!(hash.matches(&a));
        assert!(!hash.matches(&a[..a.len() - 1]));
        assert!(!hash.matches(""));
    }

    #[test]
    fn rates_parse_and_print() {
        for text in ["100/s", "600/m", "1/h"] {
            let rate: RateLimit = text.parse().expect("valid");
            assert_eq!(rate.to_string(), text);
        }
        for bad in ["", "100", "0/s", "-1/s", "10/d", "x/s", "10/"] {
            assert!(bad.parse::<RateLimit>().is_err(), "{bad}");
        }
        let settings: ChannelSettings =
            serde_json::from_str(r#"{"rate_limit":"5/m","allow_from":["192.0.2.0/24"]}"#)
                .expect("valid");
        assert_eq!(
            settings.rate_limit.map(|r| r.to_string()).as_deref(),
            Some("5/m")
        );
        assert_eq!(settings.allow_from[0].to_string(), "192.0.2.0/24");
        assert!(serde_json::from_str::<ChannelSettings>(r#"{"rate_limit":"5"}"#).is_err());
    }

    #[test]
    fn settings_from_an_older_store_read_with_defaults() {
        let settings: ChannelSettings = serde_json::from_str("{}").expect("valid");
        assert_eq!(settings.mode, Mode::Balance);
        let settings: ChannelSettings =
            serde_json::from_str(r#"{"mode":"fanout","later":1}"#).expect("valid");
        assert_eq!(settings.mode, Mode::Fanout);
    }
}
