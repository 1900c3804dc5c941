//! Who serves which channel, and which attempts each agent owes an answer for.
//!
//! The only module that holds shared maps. No guard is ever held across an `.await`: callers get
//! clones (`Arc<AgentHandle>`, `mpsc::Sender`) and await on those.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use dashmap::DashMap;
use protocol::{Abort, ChannelId, DeliveryId, ResponseHead, Subscription, ToAgent};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::agents::wire::{Outbox, SendError};

/// Capacity of one streamed response body's queue, in frames (each at most `MAX_CHUNK_LEN`):
/// how far the agent may run ahead of a slow sender before backpressure applies.
pub const BODY_QUEUE: usize = 16;

/// Identifies one agent connection in logs and in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AgentId(pub Uuid);

impl std::fmt::Display for AgentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The agent's answer to a delivery: its response head and, when the body did not fit in the
/// head frame, the queue the rest arrives on; or the reason the agent aborted.
pub type HeadReply = Result<(ResponseHead, Option<mpsc::Receiver<BodyEvent>>), String>;

/// The rest of a streamed response body.
#[derive(Debug)]
pub enum BodyEvent {
    Chunk { data: Bytes, fin: bool },
    Abort(String),
}

/// The server's side of one attempt in flight on an agent: first a one-shot for the head
/// (no queue is allocated for the common single-frame answer), then, for a streamed body, a
/// bounded queue for its chunks.
#[derive(Debug)]
enum Pending {
    AwaitingHead(oneshot::Sender<HeadReply>),
    Streaming(mpsc::Sender<BodyEvent>),
}

/// What an agent told about itself, for `GET /api/channels/{channel}`.
#[derive(Debug, Clone)]
pub struct AgentInfo {
    pub peer: SocketAddr,
    /// The agent's name and version from its hello.
    pub client: String,
    pub connected_at: crate::store::Millis,
    /// The event types it takes (`--events`; every type when it sent a plain hello).
    pub subscription: Subscription,
}

/// One connected agent, shared between its session task and the attempts sent through it.
#[derive(Debug)]
pub struct AgentHandle {
    id: AgentId,
    channel: ChannelId,
    info: AgentInfo,
    outbox: Outbox,
    pending: DashMap<DeliveryId, Pending>,
    closed: CancellationToken,
    /// Cancelled when the agent must leave (its channel revoked or its token rotated), with
    /// the reason it is told.
    evicted: CancellationToken,
    eviction: std::sync::OnceLock<String>,
}

impl AgentHandle {
    pub fn new(channel: ChannelId, info: AgentInfo, outbox: Outbox) -> Self {
        Self {
            id: AgentId(Uuid::new_v4()),
            channel,
            info,
            outbox,
            pending: DashMap::new(),
            closed: CancellationToken::new(),
            evicted: CancellationToken::new(),
            eviction: std::sync::OnceLock::new(),
        }
    }

    /// Tells the agent's session to end, refusing the agent with `reason`.
    pub fn evict(&self, reason: String) {
        let _ = self.eviction.set(reason);
        self.evicted.cancel();
    }

    /// Resolves once the agent is evicted, with the reason.
    pub async fn evicted(&self) -> &str {
        self.evicted.cancelled().await;
        self.eviction.get().map_or("evicted", String::as_str)
    }

    pub fn id(&self) -> AgentId {
        self.id
    }

    pub fn channel(&self) -> &ChannelId {
        &self.channel
    }

    pub fn info(&self) -> &AgentInfo {
        &self.info
    }

    /// Whether it takes webhooks of type `event_type`.
    pub fn takes(&self, event_type: Option<&str>) -> bool {
        self.info.subscription.takes(event_type)
    }

    /// Cancelled when the agent's session ends; every delivery waiting on it fails with 502.
    pub fn closed(&self) -> &CancellationToken {
        &self.closed
    }

    /// Queues a frame for the agent's writer task. Waits while the queue is full
    /// (backpressure); fails once the session has ended.
    pub async fn send(&self, message: &ToAgent) -> Result<(), SendError> {
        self.outbox.send(message).await
    }

    /// Starts tracking an attempt at delivery `id`: the agent's answer arrives on the returned
    /// receiver. The entry lives until the answer completes or the [`AttemptGuard`] is dropped.
    pub fn begin(self: &Arc<Self>, id: DeliveryId) -> (AttemptGuard, oneshot::Receiver<HeadReply>) {
        let (tx, rx) = oneshot::channel();
        self.pending.insert(id, Pending::AwaitingHead(tx));
        let guard = AttemptGuard {
            agent: Arc::clone(self),
            id,
        };
        (guard, rx)
    }

    /// Hands a response head to its attempt, without waiting. A head for an unknown delivery
    /// (finished, timed out) is dropped; a second head is out of order, which ends the session.
    pub fn route_head(&self, head: ResponseHead) -> Route<()> {
        let id = head.id;
        let head_tx = match self.pending.remove(&id) {
            None => return Route::Unknown,
            Some((_, Pending::Streaming(_))) => return Route::OutOfOrder,
            Some((_, Pending::AwaitingHead(tx))) => tx,
        };
        let body_rx = (!head.fin).then(|| {
            let (tx, rx) = mpsc::channel(BODY_QUEUE);
            self.pending.insert(id, Pending::Streaming(tx));
            rx
        });
        let _ = head_tx.send(Ok((head, body_rx)));
        Route::Found(())
    }

    /// The queue a body chunk for `id` goes to (the caller awaits on it, so no map guard is
    /// held across the wait). A chunk before its head is out of order.
    pub fn route_body(&self, id: &DeliveryId, fin: bool) -> Route<mpsc::Sender<BodyEvent>> {
        let tx = match self.pending.get(id).as_deref() {
            None => return Route::Unknown,
            Some(Pending::AwaitingHead(_)) => return Route::OutOfOrder,
            Some(Pending::Streaming(tx)) => tx.clone(),
        };
        if fin {
            self.pending.remove(id);
        }
        Route::Found(tx)
    }

    /// Ends an attempt the agent aborted, telling whoever waits on it why.
    pub fn abort(&self, id: &DeliveryId, reason: String) {
        match self.pending.remove(id) {
            Some((_, Pending::AwaitingHead(tx))) => {
                let _ = tx.send(Err(reason));
            }
            Some((_, Pending::Streaming(tx))) => {
                let _ = tx.try_send(BodyEvent::Abort(reason));
            }
            None => {}
        }
    }

    /// Gives up on an attempt from the server's side. If it was still in flight, the agent is
    /// told to abort it, without waiting: a full queue means the agent is busy, and its late
    /// frames for `id` are discarded anyway.
    pub fn cancel(&self, id: &DeliveryId, reason: &str) {
        if self.pending.remove(id).is_none() {
            return;
        }
        self.outbox.try_send(&ToAgent::Abort(Abort {
            id: *id,
            reason: reason.to_owned(),
        }));
    }

    /// Number of attempts waiting on this agent.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Ends every attempt in flight: their receivers see the queue close and answer 502.
    pub fn close(&self) {
        self.closed.cancel();
        self.pending.clear();
    }
}

/// Where a reply frame goes.
#[derive(Debug)]
pub enum Route<T> {
    /// To the attempt waiting for it.
    Found(T),
    /// No such delivery: it finished, timed out or was never sent. Late frames are expected
    /// after an abort and are dropped.
    Unknown,
    /// A body before its head, or a second head.
    OutOfOrder,
}

/// Removes an attempt from its agent when dropped; if it was still in flight (the sender hung
/// up, the attempt timed out), the agent is told to abort it ([`AgentHandle::cancel`]).
#[derive(Debug)]
pub struct AttemptGuard {
    agent: Arc<AgentHandle>,
    id: DeliveryId,
}

impl Drop for AttemptGuard {
    fn drop(&mut self) {
        self.agent.cancel(&self.id, "sender went away");
    }
}

/// Channel name to connected agents.
#[derive(Debug, Default)]
pub struct Registry {
    channels: DashMap<ChannelId, ChannelAgents>,
}

#[derive(Debug, Default)]
struct ChannelAgents {
    agents: Vec<Arc<AgentHandle>>,
    next: AtomicUsize,
}

impl Registry {
    /// Adds `agent` to its channel unless the channel already has `max` agents; `Err` with
    /// how many it has.
    pub fn add(&self, agent: Arc<AgentHandle>, max: usize) -> Result<(), usize> {
        let mut entry = self.channels.entry(agent.channel().clone()).or_default();
        if entry.agents.len() >= max {
            return Err(entry.agents.len());
        }
        entry.agents.push(agent);
        Ok(())
    }

    pub fn remove(&self, agent: &AgentHandle) {
        self.channels.remove_if_mut(agent.channel(), |_, entry| {
            entry.agents.retain(|a| a.id() != agent.id());
            entry.agents.is_empty()
        });
    }

    /// The agent to send the next attempt for `channel` at a webhook of type `event_type` to,
    /// round robin among its agents that take that type.
    pub fn pick(&self, channel: &ChannelId, event_type: Option<&str>) -> Option<Arc<AgentHandle>> {
        let entry = self.channels.get(channel)?;
        let n = entry.agents.len();
        if n == 0 {
            return None;
        }
        let start = entry.next.fetch_add(1, Ordering::Relaxed);
        // Most channels' agents take every type: then the first candidate is the one.
        (0..n)
            .map(|k| &entry.agents[start.wrapping_add(k) % n])
            .find(|agent| agent.takes(event_type))
            .map(Arc::clone)
    }

    /// Every agent of `channel` that takes webhooks of type `event_type`, in the order they
    /// connected.
    pub fn takers(&self, channel: &ChannelId, event_type: Option<&str>) -> Vec<Arc<AgentHandle>> {
        self.channels
            .get(channel)
            .map(|entry| {
                (entry.agents.iter())
                    .filter(|agent| agent.takes(event_type))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// What `channel`'s agents take together: the types its queue can be delivered for now.
    pub fn subscription(&self, channel: &ChannelId) -> Subscription {
        self.channels
            .get(channel)
            .map_or(Subscription::Only(Vec::new()), |entry| {
                Subscription::union(entry.agents.iter().map(|a| &a.info.subscription))
            })
    }

    /// Evicts every agent of `channel` (see [`AgentHandle::evict`]); returns how many.
    pub fn evict(&self, channel: &ChannelId, reason: String) -> usize {
        let agents = self.agents(channel);
        for agent in &agents {
            agent.evict(reason.clone());
        }
        agents.len()
    }

    /// Every agent of `channel`, in the order they connected.
    pub fn agents(&self, channel: &ChannelId) -> Vec<Arc<AgentHandle>> {
        self.channels
            .get(channel)
            .map(|entry| entry.agents.clone())
            .unwrap_or_default()
    }

    /// Every agent connected, over all channels.
    pub fn every_agent(&self) -> Vec<Arc<AgentHandle>> {
        (self.channels.iter())
            .flat_map(|entry| entry.agents.clone())
            .collect()
    }

    /// Agents connected, over all channels.
    pub fn total_agents(&self) -> usize {
        self.channels.iter().map(|entry| entry.agents.len()).sum()
    }

    pub fn agent_count(&self, channel: &ChannelId) -> usize {
        self.channels.get(channel).map_or(0, |e| e.agents.len())
    }
}
