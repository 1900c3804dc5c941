//! Registered channels, as the store keeps them and as the running server serves them.
//!
//! Operators register channels with `relay-server channels create` ([`command`]) or the admin
//! API; both write to the store ([`create`], [`rotate`], [`update`]; [`declare`] for the
//! config file's). The running server serves from [`Directory`], an in-memory snapshot that it
//! reloads whenever the store's channel version moves, so a channel created, revoked or
//! rotated by the command line in another process takes effect within a second.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use protocol::ChannelId;
use tracing::{info, warn};

use crate::AppState;
use crate::channel::{
    ChannelRecord, ChannelSettings, DeclaredChannel, SettingsChange, TokenHash, new_token,
};
use crate::store::{self, Store, StoreError};

pub mod command;

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
        created_at: store::now_ms(),
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
    declared: &[DeclaredChannel],
) -> Result<(usize, usize), StoreError> {
    let (_, existing) = store.channels().await?;
    let (mut created, mut updated) = (0, 0);
    for channel in declared {
        let record = ChannelRecord {
            name: channel.name.clone(),
            token_hash: channel.token_hash,
            created_at: store::now_ms(),
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
        if changed && let Err(e) = reload(&state).await {
            warn!(error = %e, "cannot reload channels");
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
}
