//! The event store: every webhook the server accepts, and every attempt to deliver it.
//!
//! One narrow async interface, [`Store`], and three backends: [`SqliteStore`] (durable, the
//! default; an embedded database under `--data-dir`), [`PostgresStore`] (`--store
//! postgres://...`, durable in a database server; one relay node per database for now) and
//! [`MemoryStore`] (`--store memory`, no durability, for tests and benchmarks). Nothing
//! outside this module knows which backend is in use.
//!
//! Life of an event: [`Store::insert`] as `Queued` (no agent was connected; the dispatcher
//! delivers it later) or `Delivering` (an agent is delivering it right now, the sender waiting).
//! Each attempt is then [`Store::record`]ed with the [`Transition`] it causes. A backend that
//! outlives a crash turns events it finds `Delivering` at open back into `Queued`: whoever was
//! delivering them is gone, and delivery is at least once.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use protocol::{ChannelId, DeliveryId, Headers, Subscription, TypePattern};

use crate::channel::ChannelRecord;

#[cfg(test)]
mod conformance;
mod memory;
mod postgres;
mod sqlite;

pub use memory::MemoryStore;
pub use postgres::{PostgresStore, PostgresUrl, UrlError};
pub use protocol::api::{AttemptKind, EventStatus};
pub use sqlite::{SqliteStore, WriteStats};

/// How the store keeps time: milliseconds since the Unix epoch (defined in a leaf module the
/// channel model uses too).
pub use crate::clock::{Millis, from_ms, now_ms, to_ms};

/// The event store to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// SQLite under `dir`; `fsync` flushes each group commit to disk.
    Sqlite {
        dir: std::path::PathBuf,
        fsync: bool,
    },
    /// A PostgreSQL database (shown without its password).
    Postgres(PostgresUrl),
    Memory,
}

impl fmt::Display for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreConfig::Sqlite { dir, fsync } => {
                write!(
                    f,
                    "sqlite:{} (fsync {})",
                    dir.display(),
                    if *fsync { "on" } else { "off" }
                )
            }
            StoreConfig::Postgres(url) => write!(f, "{url}"),
            StoreConfig::Memory => f.write_str("memory (not durable)"),
        }
    }
}

/// Opens the store `config` names, holding each channel to `quota`. For SQLite this creates
/// the data dir if needed, checks it is writable and brings its schema up to date, so a bad
/// data dir fails at start-up; for PostgreSQL it connects and brings the schema up to date, so
/// an unreachable database fails at start-up.
pub async fn open(config: &StoreConfig, quota: Quota) -> Result<Arc<dyn Store>, StoreError> {
    match config {
        StoreConfig::Memory => Ok(Arc::new(MemoryStore::with_quota(quota))),
        StoreConfig::Postgres(url) => Ok(Arc::new(PostgresStore::open(url, quota).await?)),
        StoreConfig::Sqlite { dir, fsync } => {
            let (dir, fsync) = (dir.clone(), *fsync);
            open_blocking(move || SqliteStore::open_with_quota(&dir, fsync, quota)).await
        }
    }
}

/// Opens the durable store `config` names for managing channels beside a server that may be
/// running on it (see [`SqliteStore::open_beside_server`], [`PostgresStore::open_beside_server`]).
/// `None` for the memory store, which only the process that made it can see.
pub async fn open_beside_server(
    config: &StoreConfig,
) -> Option<Result<Arc<dyn Store>, StoreError>> {
    match config {
        StoreConfig::Sqlite { dir, .. } => {
            let dir = dir.clone();
            Some(open_blocking(move || SqliteStore::open_beside_server(&dir)).await)
        }
        StoreConfig::Postgres(url) => Some(
            PostgresStore::open_beside_server(url)
                .await
                .map(|store| Arc::new(store) as Arc<dyn Store>),
        ),
        StoreConfig::Memory => None,
    }
}

/// Runs `open` (file I/O and migrations) off the async workers.
async fn open_blocking(
    open: impl FnOnce() -> Result<SqliteStore, StoreError> + Send + 'static,
) -> Result<Arc<dyn Store>, StoreError> {
    let store = tokio::task::spawn_blocking(open)
        .await
        .map_err(|e| StoreError::Backend(e.to_string()))??;
    Ok(Arc::new(store))
}

/// Whether a target's status code means it took the webhook. 408, 429 and 5xx ask to be tried
/// again; anything else is the target's final word.
pub fn accepted(status: u16) -> bool {
    !(status == 408 || status == 429 || status >= 500)
}

/// A webhook as the sender sent it, ready to be stored.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: DeliveryId,
    pub channel: ChannelId,
    pub received_at: Millis,
    /// The sender's address (`ip:port`), when known.
    pub source: Option<String>,
    pub method: String,
    /// The path after `/h/{channel}`, still percent-encoded; empty or starting with `/`.
    pub path: String,
    /// The raw query string, without `?`.
    pub query: Option<String>,
    /// Every header the sender sent, in order.
    pub headers: Headers,
    pub body: Bytes,
    /// [`EventStatus::Queued`], [`EventStatus::Delivering`], or [`EventStatus::Rejected`] and
    /// [`EventStatus::Unrouted`] for an event only kept for inspection.
    pub status: EventStatus,
    /// Its type, derived once on arrival (see `crate::event_type`); `None` when it has none.
    pub event_type: Option<String>,
    /// The event this is an edited replay of.
    pub replay_of: Option<DeliveryId>,
}

/// One row of a channel's history: an event without its headers and body.
#[derive(Debug, Clone, PartialEq)]
pub struct EventSummary {
    pub id: DeliveryId,
    pub channel: ChannelId,
    pub received_at: Millis,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub status: EventStatus,
    /// Attempts made so far, of any kind.
    pub attempts: u32,
    /// Failed attempts counted toward the retry schedule.
    pub failures: u32,
    /// Status code of the most recent attempt that got one.
    pub response_status: Option<u16>,
    pub body_len: u64,
    /// When a queued event is next tried (it may be in the past: due now).
    pub next_attempt_at: Option<Millis>,
    pub event_type: Option<String>,
    pub replay_of: Option<DeliveryId>,
}

/// A whole event: the request as received and every attempt, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub summary: EventSummary,
    pub source: Option<String>,
    pub headers: Headers,
    pub body: Bytes,
    pub attempts: Vec<Attempt>,
}

/// One attempt to deliver an event, and what came back.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// 1 for the first attempt of an event, then 2, 3, ...; set by the store on
    /// [`Store::record`] (the value passed in is ignored).
    pub n: u32,
    pub kind: AttemptKind,
    pub started_at: Millis,
    pub duration_ms: u64,
    /// The agent that carried it.
    pub agent: Option<String>,
    /// The target's status code; `None` when no answer came.
    pub status: Option<u16>,
    pub headers: Headers,
    /// The response body, at most [`MAX_RECORDED_BODY`] bytes of it.
    pub body: Bytes,
    /// Why the attempt failed, when it did.
    pub error: Option<String>,
}

/// Response bodies longer than this are recorded truncated: an attempt's record is for a
/// human reading it, and a target answering with megabytes would otherwise fill the store.
pub const MAX_RECORDED_BODY: usize = 1024 * 1024;

/// What one channel may hold in the store. A flood fills its own channel's quota and nothing
/// else: the relay answers 429 only when the channel genuinely cannot hold more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Events not yet delivered or given up on (`queued` or `delivering`); past it a new one
    /// is refused with [`StoreError::Full`].
    pub max_undelivered: u64,
    /// Bytes of the channel's events (bodies and headers, every status). To make room, the
    /// oldest delivered, failed and rejected events are deleted first; only when the
    /// undelivered ones alone leave no room is a new event refused.
    pub max_bytes: u64,
    /// `rejected` events kept for inspection (at least 1); past it the oldest are deleted.
    pub max_rejected: u64,
}

impl Quota {
    pub const UNLIMITED: Quota = Quota {
        max_undelivered: u64::MAX,
        max_bytes: u64::MAX,
        max_rejected: u64::MAX,
    };

    /// Whether an event of `size` bytes arriving as `status` fits beside what the channel
    /// holds (`usage`), and what must be deleted to make room for it.
    pub(crate) fn room(
        &self,
        channel: &ChannelId,
        usage: &Usage,
        status: EventStatus,
        size: u64,
    ) -> Result<Room, StoreError> {
        let full = |what: Full, limit: u64| StoreError::Full {
            channel: channel.clone(),
            what,
            limit,
        };
        if undelivered(status) && usage.undelivered >= self.max_undelivered {
            return Err(full(Full::Undelivered, self.max_undelivered));
        }
        // Only finished events can be deleted to make room.
        if usage.open_bytes.saturating_add(size) > self.max_bytes {
            return Err(full(Full::Bytes, self.max_bytes));
        }
        let drop_rejected = if status == EventStatus::Rejected {
            (usage.rejected + 1).saturating_sub(self.max_rejected.max(1))
        } else {
            0
        };
        Ok(Room {
            drop_rejected,
            free_bytes: usage
                .bytes
                .saturating_add(size)
                .saturating_sub(self.max_bytes),
        })
    }
}

/// Which part of a channel's [`Quota`] is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    Undelivered,
    Bytes,
}

/// What a channel holds in the store, as a backend keeps count of it for [`Quota`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Events `queued` or `delivering`.
    pub undelivered: u64,
    /// Bytes ([`stored_size`]) of those.
    pub open_bytes: u64,
    /// Bytes of all its events.
    pub bytes: u64,
    /// Events `rejected`.
    pub rejected: u64,
}

impl Usage {
    /// Counts an event of `size` bytes in `status`.
    pub fn add(&mut self, status: EventStatus, size: u64) {
        self.add_many(status, 1, size);
    }

    /// Counts `count` events in `status` of `bytes` bytes together.
    pub fn add_many(&mut self, status: EventStatus, count: u64, bytes: u64) {
        self.bytes += bytes;
        if status == EventStatus::Rejected {
            self.rejected += count;
        }
        if undelivered(status) {
            self.undelivered += count;
            self.open_bytes += bytes;
        }
    }

    /// Stops counting an event of `size` bytes in `status` (it was deleted).
    pub fn remove(&mut self, status: EventStatus, size: u64) {
        self.bytes = self.bytes.saturating_sub(size);
        if status == EventStatus::Rejected {
            self.rejected = self.rejected.saturating_sub(1);
        }
        if undelivered(status) {
            self.undelivered = self.undelivered.saturating_sub(1);
            self.open_bytes = self.open_bytes.saturating_sub(size);
        }
    }

    /// An event of `size` bytes went from status `from` to `to`.
    pub fn moved(&mut self, from: EventStatus, to: EventStatus, size: u64) {
        if from != to {
            self.remove(from, size);
            self.add(to, size);
        }
    }
}

/// What must go before a new event fits in its channel's [`Quota`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Room {
    /// The oldest `rejected` events to delete.
    pub drop_rejected: u64,
    /// Bytes of the oldest finished events (delivered, failed, rejected) to delete, counting
    /// the rejected ones above.
    pub free_bytes: u64,
}

/// Whether an event in `status` is still to be delivered (it counts against
/// [`Quota::max_undelivered`]).
pub fn undelivered(status: EventStatus) -> bool {
    matches!(status, EventStatus::Queued | EventStatus::Delivering)
}

/// Whether an event in `status` may be deleted to make room (it is done with).
pub fn finished(status: EventStatus) -> bool {
    matches!(
        status,
        EventStatus::Delivered
            | EventStatus::Failed
            | EventStatus::Rejected
            | EventStatus::Unrouted
    )
}

/// The bytes an event counts against its channel's [`Quota::max_bytes`]: its body and its
/// headers as [`encode_headers`] stores them.
pub fn stored_size(headers: &Headers, body: &[u8]) -> u64 {
    let headers: usize = headers.iter().map(|(n, v)| 8 + n.len() + v.len()).sum();
    (headers + body.len()) as u64
}

/// What [`Store::record`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub n: u32,
    pub channel: ChannelId,
    pub status: EventStatus,
}

/// What an attempt does to its event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Delivered,
    Failed,
    /// Stays (or becomes) queued, next tried at `at`; `failures` is its new failure count.
    Retry {
        at: Millis,
        failures: u32,
    },
    /// Status unchanged (a replay that failed leaves the event as it was).
    Keep,
}

/// A page request for a channel's history, newest first.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub limit: usize,
    /// Only events older than this one.
    pub before: Option<DeliveryId>,
    pub status: Option<EventStatus>,
    /// Only events whose type matches (`?type=`); untyped events never do.
    pub event_type: Option<TypePattern>,
}

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot use data dir {path}: {reason}")]
    Open { path: String, reason: String },
    #[error(
        "data dir {path} was written by a newer hookrelay (schema version {found}, this build knows up to {known}); upgrade relay-server"
    )]
    TooNew {
        path: String,
        found: i64,
        known: i64,
    },
    #[error("cannot use database {target}: {reason}")]
    Database { target: String, reason: String },
    #[error("{}", in_use(path, *pid))]
    InUse { path: String, pid: Option<u32> },
    #[error("store failed: {0}")]
    Backend(String),
    #[error("store is closed")]
    Closed,
    #[error("corrupt record in store: {0}")]
    Corrupt(String),
    #[error("no event {0} in this channel")]
    UnknownEvent(DeliveryId),
    #[error("channel {0} already exists")]
    ChannelExists(ChannelId),
    #[error("no channel {0}")]
    UnknownChannel(ChannelId),
    #[error("{}", full_message(channel, *what, *limit))]
    Full {
        channel: ChannelId,
        what: Full,
        limit: u64,
    },
}

fn in_use(path: &str, pid: Option<u32>) -> String {
    let who = pid.map_or_else(
        || "another process".to_owned(),
        |pid| format!("process {pid}"),
    );
    format!(
        "data dir {path} is in use by another relay-server ({who}); stop it first, or give this one its own --data-dir"
    )
}

fn full_message(channel: &ChannelId, what: Full, limit: u64) -> String {
    match what {
        Full::Undelivered => format!(
            "channel {channel} holds its quota of {limit} undelivered webhooks; try again once its agent has taken some"
        ),
        Full::Bytes => format!(
            "channel {channel} holds its quota of {limit} bytes of undelivered webhooks; try again once its agent has taken some"
        ),
    }
}

/// The store's interface. Every method is cancel-safe in the sense that matters here: a write
/// whose future is dropped still happens or not as a whole.
#[async_trait::async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// Stores a new event, within its channel's [`Quota`] (see [`Quota::room`]):
    /// [`StoreError::Full`] when it does not fit, after deleting the oldest finished events
    /// where that makes room. Once this returns, the event survives a crash of the process
    /// (for a durable backend). Writes from concurrent callers are committed together.
    async fn insert(&self, event: NewEvent) -> Result<(), StoreError>;

    /// Records an attempt on event `id` and applies `then` to its status. A queued event whose
    /// attempt is recorded with [`Transition::Keep`] keeps its `next_attempt_at`.
    /// Returns what it did: the number the store gave the attempt (attempts are numbered
    /// from 1 in the order they are recorded), the event's channel and its status after.
    /// [`StoreError::UnknownEvent`] when the event is gone (pruned).
    async fn record(
        &self,
        id: DeliveryId,
        attempt: Attempt,
        then: Transition,
    ) -> Result<Recorded, StoreError>;

    /// [`Store::record`] for an attempt whose record nobody waits on: a live attempt whose
    /// sender has its answer. Such a record guards nothing (lost in a crash, it leaves the
    /// event `delivering`, which the next start delivers again: at least once), so a durable
    /// backend may hold it back to share a later write's commit rather than pay one of its own.
    /// It is applied in order with every other write all the same.
    async fn record_lazily(
        &self,
        id: DeliveryId,
        attempt: Attempt,
        then: Transition,
    ) -> Result<Recorded, StoreError> {
        self.record(id, attempt, then).await
    }

    /// Marks a queued event `delivering` while the dispatcher attempts it, so the history
    /// shows it (a crash leaves it to the recovery at open). Its `next_attempt_at` stays until
    /// [`Store::record`] sets the outcome. Does nothing to an event in another status.
    ///
    /// Answers whether this call made the change: the caller's claim on the attempt. Of two
    /// dispatchers that read the same queued event (two nodes on one shared store), only the
    /// one whose `begin` answers `true` delivers it.
    async fn begin(&self, id: DeliveryId) -> Result<bool, StoreError>;

    /// Queued events of `channel` whose `next_attempt_at` is at or before `now` and whose type
    /// `takes` takes (what the channel's connected agents subscribe to), in arrival order, at
    /// most `limit`, with headers and body (their `attempts` list is left empty).
    async fn due(
        &self,
        channel: &ChannelId,
        takes: &Subscription,
        now: Millis,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError>;

    /// The earliest `next_attempt_at` among `channel`'s queued events that `takes` takes.
    async fn next_due(
        &self,
        channel: &ChannelId,
        takes: &Subscription,
    ) -> Result<Option<Millis>, StoreError>;

    /// One page of `channel`'s history, newest first. [`StoreError::UnknownEvent`] when
    /// `query.before` names no event of the channel.
    async fn list(
        &self,
        channel: &ChannelId,
        query: &ListQuery,
    ) -> Result<Vec<EventSummary>, StoreError>;

    /// A whole event of `channel`, with its attempts.
    async fn get(&self, channel: &ChannelId, id: DeliveryId) -> Result<Option<Event>, StoreError>;

    /// How many events `channel` has, all or in one status.
    async fn count(
        &self,
        channel: &ChannelId,
        status: Option<EventStatus>,
    ) -> Result<u64, StoreError>;

    /// Deletes events received before `cutoff`, and in each channel the oldest delivered or
    /// failed events beyond the newest `cap` events. Returns how many events were deleted.
    /// Events are inserted in arrival order, so a backend may find the old ones by that order.
    async fn prune(&self, cutoff: Millis, cap: u64) -> Result<u64, StoreError>;

    /// Registers a channel. [`StoreError::ChannelExists`] when the name is taken.
    async fn create_channel(&self, record: ChannelRecord) -> Result<(), StoreError>;

    /// Replaces a registered channel's token and settings (its creation time stays).
    /// [`StoreError::UnknownChannel`] when there is no such channel.
    async fn update_channel(&self, record: ChannelRecord) -> Result<(), StoreError>;

    /// Removes a registered channel; its events stay until retention removes them. Returns
    /// whether there was one.
    async fn delete_channel(&self, name: &ChannelId) -> Result<bool, StoreError>;

    /// Every registered channel, by name, and the channel version they were read at.
    async fn channels(&self) -> Result<(u64, Vec<ChannelRecord>), StoreError>;

    /// A number that changes whenever a channel is created, updated or deleted, by this
    /// process or another one using the same store: cheap enough to poll every second.
    async fn channels_version(&self) -> Result<u64, StoreError>;

    /// Proves the store can take a write now (for `/readyz`): a durable backend takes and
    /// commits a write transaction that changes nothing.
    async fn ready(&self) -> Result<(), StoreError>;

    /// Queued events per channel (channels with none are left out), for metrics.
    async fn queue_depths(&self) -> Result<Vec<(ChannelId, u64)>, StoreError>;

    /// Webhooks crossing nodes, for a store several nodes share; `None` for a store of one
    /// process.
    fn handover(&self) -> Option<&dyn Handover> {
        None
    }

    /// Whether this store may drain `channel`'s queue now, and holds that turn until `until`
    /// (renewed by asking again): on a store several nodes share, one node at a time drains
    /// a channel, so its queue is delivered in order as on one node. A store of one process
    /// has one dispatcher, whose turn it always is.
    async fn drain_turn(&self, _channel: &ChannelId, _until: Millis) -> Result<bool, StoreError> {
        Ok(true)
    }

    /// Gives up this store's turn at draining `channel` (see [`Store::drain_turn`]).
    async fn drain_done(&self, _channel: &ChannelId) -> Result<(), StoreError> {
        Ok(())
    }

    /// Whether other relay nodes may use this store at the same time, so that each must tell
    /// the others which agents it holds ([`Store::renew_leases`]). A store of one process
    /// (SQLite under a locked data dir, memory) does not.
    fn shares_agents(&self) -> bool {
        false
    }

    /// Node `node` holds exactly `agents` until `until` (the others see them until then,
    /// unless it renews): what it published before and no longer holds goes. An empty list
    /// gives up everything it held. The store's own lease is renewed with it, and what a store
    /// whose lease ran out was delivering is queued again. Answers the channels of `agents`
    /// that have queued events due, which this node's dispatcher should deliver.
    async fn renew_leases(
        &self,
        node: &str,
        agents: Vec<AgentLease>,
        until: Millis,
    ) -> Result<Vec<ChannelId>, StoreError> {
        let _ = (node, agents, until);
        Ok(Vec::new())
    }

    /// The agents of every channel held by nodes other than `node` under a lease that is
    /// still good at `now`: what a node keeps between renewals to know, without asking at
    /// every webhook, that another node can take it (see `agents::leases::Elsewhere`).
    async fn agents_elsewhere(
        &self,
        node: &str,
        now: Millis,
    ) -> Result<Vec<AgentLease>, StoreError> {
        let _ = (node, now);
        Ok(Vec::new())
    }

    /// The agents of `channel` held by any node under a lease that is still good at `now`,
    /// in the order they connected.
    async fn leased_agents(
        &self,
        channel: &ChannelId,
        now: Millis,
    ) -> Result<Vec<AgentLease>, StoreError> {
        let _ = (channel, now);
        Ok(Vec::new())
    }
}

/// Word between the nodes that share a store, about webhooks that cross from one node to
/// another (see `crate::relay::handover`). Every node hears every note, its own included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// A node holds the sender of webhook `id` (of `channel`, typed `event_type`) waiting: it
    /// is stored queued, for a node whose agent takes it to [`Handover::take`].
    Offered {
        id: DeliveryId,
        channel: ChannelId,
        event_type: Option<String>,
    },
    /// The attempt that answers offered webhook `id` is recorded. `failure` is the HTTP status
    /// its error maps to when it got no answer from the target (0 when it got one).
    Answered { id: DeliveryId, failure: u16 },
}

/// What a store several nodes share offers for webhooks that cross nodes (see
/// [`Store::handover`]): a webhook stored by the node its sender reached, delivered by the
/// node that holds the agent, the answer back through the store.
#[async_trait::async_trait]
pub trait Handover: Send + Sync {
    /// Stores `event` (`Queued`) as offered by this node, and tells every node (a
    /// [`Note::Offered`], heard only once the event is stored). An offered event is for
    /// [`Handover::take`] only, not the queue, until it is withdrawn or its node is gone.
    async fn offer(&self, event: NewEvent) -> Result<(), StoreError>;

    /// Takes offered event `id` of `channel` to deliver it from this node: it becomes
    /// `Delivering`, by this store. `None` when another node took it first, or it was
    /// withdrawn.
    async fn take(&self, channel: &ChannelId, id: DeliveryId) -> Result<Option<Event>, StoreError>;

    /// Withdraws this node's offer of `id`: `true` when it was still queued (nobody took it),
    /// or the node that took it is gone (its store's lease ran out), and from now on it is an
    /// ordinary queued event; `false` when a live node took it.
    async fn withdraw(&self, id: DeliveryId) -> Result<bool, StoreError>;

    /// Records the attempt that answers offered webhook `id`, lazily (see
    /// [`Store::record_lazily`]; committed, so visible to every node, when it returns), and
    /// tells every node in the same commit (a [`Note::Answered`] with `failure`).
    async fn record_answer(
        &self,
        id: DeliveryId,
        attempt: Attempt,
        then: Transition,
        failure: u16,
    ) -> Result<Recorded, StoreError>;

    /// The latest attempt of event `id` of `channel`: the answer an offering node gives.
    async fn answer(
        &self,
        channel: &ChannelId,
        id: DeliveryId,
    ) -> Result<Option<Attempt>, StoreError>;

    /// The notes every node (this one too) sends from now on. A note may be lost (while the
    /// connection that hears them is down); whoever waits on one waits with a deadline.
    fn notes(&self) -> tokio::sync::broadcast::Receiver<Note>;
}

/// An agent as one node tells the others of it ([`Store::renew_leases`]): what the channel
/// status shows of an agent, and the node that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentLease {
    pub node: String,
    pub agent_id: uuid::Uuid,
    pub channel: ChannelId,
    /// Its name and version from its hello.
    pub client: String,
    /// Its address, as its node sees it.
    pub peer: String,
    pub connected_at: Millis,
    /// What it subscribed to; `None` for every type.
    pub events: Option<Vec<String>>,
    /// Deliveries it owed an answer for at the last renewal.
    pub in_flight: u64,
}

/// Headers in the store's own binary form: per header, name length (u32 LE), name, value
/// length (u32 LE), value. Written by hand rather than with a serialisation crate so the
/// format on disk cannot change with a dependency's configuration.
pub fn encode_headers(headers: &Headers) -> Vec<u8> {
    let size = stored_size(headers, &[]);
    let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    for (name, value) in headers {
        for part in [name.as_bytes(), value.as_ref()] {
            let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(part);
        }
    }
    out
}

/// The inverse of [`encode_headers`].
pub fn decode_headers(mut bytes: &[u8]) -> Result<Headers, StoreError> {
    fn take<'a>(bytes: &mut &'a [u8]) -> Result<&'a [u8], StoreError> {
        let corrupt = || StoreError::Corrupt("truncated header list".to_owned());
        let (len, rest) = bytes.split_first_chunk::<4>().ok_or_else(corrupt)?;
        let len = usize::try_from(u32::from_le_bytes(*len)).map_err(|_| corrupt())?;
        if rest.len() < len {
            return Err(corrupt());
        }
        let (part, rest) = rest.split_at(len);
        *bytes = rest;
        Ok(part)
    }
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let name = take(&mut bytes)?;
        let name = std::str::from_utf8(name)
            .map_err(|_| StoreError::Corrupt("header name is not UTF-8".to_owned()))?
            .to_owned();
        let value = Bytes::copy_from_slice(take(&mut bytes)?);
        out.push((name, value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_with_binary_values() {
        let headers: Headers = vec![
            ("x-a".to_owned(), Bytes::from_static(b"1")),
            ("x-a".to_owned(), Bytes::from_static(b"\xff\x00bin")),
            ("empty".to_owned(), Bytes::new()),
        ];
        let bytes = encode_headers(&headers);
        assert_eq!(decode_headers(&bytes).expect("valid"), headers);
        assert!(decode_headers(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode_headers(&[]).expect("empty is valid").is_empty());
    }

    #[test]
    fn only_408_429_and_5xx_ask_for_a_retry() {
        for ok in [200, 201, 204, 301, 400, 404, 410, 422] {
            assert!(accepted(ok), "{ok}");
        }
        for retry in [408, 429, 500, 502, 503, 504] {
            assert!(!accepted(retry), "{retry}");
        }
    }
}
