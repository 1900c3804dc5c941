//! Registered channels: who may hold a channel (the holder of its token, which the server keeps
//! only as a SHA-256 hash) and how its webhooks reach agents.
//!
//! Operators register channels with `relay-server channels create` or the admin API; both
//! write to the store. The running server serves from [`Directory`], an in-memory snapshot
//! that it reloads whenever the store's channel version moves, so a channel created, revoked
//! or rotated by the command line in another process takes effect within a second.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use protocol::ChannelId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use tracing::{info, warn};

use crate::AppState;
use crate::store::{Millis, Store, StoreError};

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

/// The registered channels the server serves from: a snapshot of the store's, swapped whole
/// on reload. Lookups clone an `Arc` under a read lock that is never held across an await.
#[derive(Debug, Default)]
pub struct Directory {
    current: RwLock<Arc<Snapshot>>,
}

#[derive(Debug, Default)]
struct Snapshot {
    /// The store's channel version this snapshot was read at.
    version: u64,
    by_name: HashMap<ChannelId, Arc<ChannelRecord>>,
    by_hash: HashMap<TokenHash, ChannelId>,
}

/// What a reload changed for channels that had agents' trust: those whose token no longer
/// holds (revoked or rotated).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Newly registered: agents that took the name in open mode must leave.
    pub created: Vec<ChannelId>,
    pub revoked: Vec<ChannelId>,
    pub rotated: Vec<ChannelId>,
}

impl Directory {
    fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    pub fn version(&self) -> u64 {
        self.snapshot().version
    }

    pub fn get(&self, name: &ChannelId) -> Option<Arc<ChannelRecord>> {
        self.snapshot().by_name.get(name).cloned()
    }

    /// The channel whose token `token` is, if any.
    pub fn find_by_token(&self, token: &str) -> Option<Arc<ChannelRecord>> {
        let snapshot = self.snapshot();
        let name = snapshot.by_hash.get(&TokenHash::of(token))?;
        snapshot.by_name.get(name).cloned()
    }

    pub fn len(&self) -> usize {
        self.snapshot().by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Replaces the snapshot with `records` read at `version`, unless a newer one is already
    /// in place, and says which channels lost their token.
    pub fn replace(&self, version: u64, records: Vec<ChannelRecord>) -> Changes {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if version < current.version {
            return Changes::default();
        }
        let mut next = Snapshot {
            version,
            ..Snapshot::default()
        };
        for record in records {
            next.by_hash.insert(record.token_hash, record.name.clone());
            next.by_name.insert(record.name.clone(), Arc::new(record));
        }
        let mut changes = Changes {
            created: (next.by_name.keys())
                .filter(|name| !current.by_name.contains_key(*name))
                .cloned()
                .collect(),
            ..Changes::default()
        };
        for (name, old) in &current.by_name {
            match next.by_name.get(name) {
                None => changes.revoked.push(name.clone()),
                Some(new) if new.token_hash != old.token_hash => changes.rotated.push(name.clone()),
                Some(_) => {}
            }
        }
        *current = Arc::new(next);
        changes
    }
}

/// A channel and its token as issued, shown once.
#[derive(Debug)]
pub struct Issued {
    pub record: ChannelRecord,
    pub token: String,
}

/// Registers channel `name` with a fresh token.
pub async fn create(
    store: &dyn Store,
    name: ChannelId,
    settings: ChannelSettings,
) -> Result<Issued, StoreError> {
    let token = new_token();
    let record = ChannelRecord {
        name,
        token_hash: TokenHash::of(&token),
        created_at: crate::store::now_ms(),
        settings,
    };
    store.create_channel(record.clone()).await?;
    Ok(Issued { record, token })
}

/// Gives channel `name` a fresh token; the old one stops working.
pub async fn rotate(store: &dyn Store, name: &ChannelId) -> Result<Issued, StoreError> {
    let (_, records) = store.channels().await?;
    let current = records
        .into_iter()
        .find(|r| &r.name == name)
        .ok_or_else(|| StoreError::UnknownChannel(name.clone()))?;
    let token = new_token();
    let record = ChannelRecord {
        token_hash: TokenHash::of(&token),
        ..current
    };
    store.update_channel(record.clone()).await?;
    Ok(Issued { record, token })
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
}

impl SettingsChange {
    pub fn is_empty(&self) -> bool {
        *self == SettingsChange::default()
    }

    fn apply(self, settings: &mut ChannelSettings) {
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
    }
}

/// Changes channel `name`'s settings, keeping its token (and so its agents).
pub async fn update(
    store: &dyn Store,
    name: &ChannelId,
    change: SettingsChange,
) -> Result<ChannelRecord, StoreError> {
    let (_, records) = store.channels().await?;
    let mut record = records
        .into_iter()
        .find(|r| &r.name == name)
        .ok_or_else(|| StoreError::UnknownChannel(name.clone()))?;
    change.apply(&mut record.settings);
    store.update_channel(record.clone()).await?;
    Ok(record)
}

/// Makes the store hold the channels the config file declares: each is created, or updated
/// when its token or settings differ. Channels the file does not name are left alone.
/// Returns how many were created and updated.
pub async fn declare(
    store: &dyn Store,
    declared: &[crate::config_file::DeclaredChannel],
) -> Result<(usize, usize), StoreError> {
    let (_, existing) = store.channels().await?;
    let (mut created, mut updated) = (0, 0);
    for channel in declared {
        let record = ChannelRecord {
            name: channel.name.clone(),
            token_hash: channel.token_hash,
            created_at: crate::store::now_ms(),
            settings: channel.settings.clone(),
        };
        match existing.iter().find(|r| r.name == record.name) {
            None => {
                store.create_channel(record).await?;
                created += 1;
            }
            Some(current)
                if current.token_hash != record.token_hash
                    || current.settings != record.settings =>
            {
                store.update_channel(record).await?;
                updated += 1;
            }
            Some(_) => {}
        }
    }
    Ok((created, updated))
}

/// Reads the registered channels from the store into the server's [`Directory`], and
/// disconnects the agents of channels that were revoked or whose token was rotated.
pub async fn reload(state: &AppState) -> Result<(), StoreError> {
    let (version, records) = state.store.channels().await?;
    let changes = state.channels.replace(version, records);
    for name in &changes.created {
        let n = state.registry.evict(
            name,
            format!("channel {name} is now registered: reconnect with its token"),
        );
        if n > 0 {
            info!(channel = %name, agents = n, "channel registered; agents without its token disconnected");
        }
    }
    for name in &changes.revoked {
        let n = state
            .registry
            .evict(name, format!("channel {name} was revoked"));
        info!(channel = %name, agents = n, "channel revoked; its agents disconnected");
    }
    for name in &changes.rotated {
        let n = state
            .registry
            .evict(name, format!("the token of channel {name} was rotated"));
        info!(channel = %name, agents = n, "channel token rotated; its agents disconnected");
    }
    Ok(())
}

/// Polls the store's channel version every `channel_reload` and reloads when it moved, so
/// changes by another process (the `channels` command) take effect. Ends at shutdown.
pub async fn watch(state: AppState) {
    let mut every = tokio::time::interval(state.config.channel_reload);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = state.agents_shutdown.cancelled() => return,
        }
        let changed = match state.store.channels_version().await {
            Ok(version) => version != state.channels.version(),
            Err(e) => {
                warn!(error = %e, "cannot check for channel changes");
                continue;
            }
        };
        if changed {
            if let Err(e) = reload(&state).await {
                warn!(error = %e, "cannot reload channels");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, token: &str) -> ChannelRecord {
        ChannelRecord {
            name: ChannelId::parse(name).expect("valid"),
            token_hash: TokenHash::of(token),
            created_at: 1,
            settings: ChannelSettings::default(),
        }
    }

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
    fn replace_reports_revoked_and_rotated_channels() {
        let dir = Directory::default();
        dir.replace(
            1,
            vec![record("a", "t1"), record("b", "t2"), record("c", "t3")],
        );
        assert_eq!(dir.len(), 3);
        let b = ChannelId::parse("b").expect("valid");
        assert_eq!(dir.find_by_token("t2").map(|r| r.name.clone()), Some(b));
        let changes = dir.replace(
            2,
            vec![record("a", "t1"), record("b", "new"), record("d", "t4")],
        );
        assert_eq!(changes.created, [ChannelId::parse("d").expect("valid")]);
        assert_eq!(changes.revoked, [ChannelId::parse("c").expect("valid")]);
        assert_eq!(changes.rotated, [ChannelId::parse("b").expect("valid")]);
        assert!(dir.find_by_token("t2").is_none());
        // An older read never replaces a newer one.
        assert_eq!(dir.replace(1, vec![]), Changes::default());
        assert_eq!(dir.len(), 3);
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
