//! Who serves which channel, and which deliveries each agent owes an answer for.
//!
//! The only module that holds shared maps. No guard is ever held across an `.await`: callers get
//! clones (`Arc<AgentHandle>`, `mpsc::Sender`) and await on those.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::ws::Message;
use bytes::Bytes;
use dashmap::DashMap;
use protocol::{Abort, ChannelId, DeliveryId, Frame, ResponseHead};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Capacity of one delivery's reply queue, in frames (each at most `MAX_CHUNK_LEN` of body):
/// how far the agent may run ahead of a slow sender before backpressure applies.
pub const REPLY_QUEUE: usize = 16;

/// Identifies one agent connection in logs and in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AgentId(pub Uuid);

impl std::fmt::Display for AgentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// What the agent sends back for one delivery, in order: one `Head`, then `Chunk`s until one has
/// `fin`, or an `Abort` at any point.
#[derive(Debug)]
pub enum Reply {
    Head(ResponseHead),
    Chunk { data: Bytes, fin: bool },
    Abort(String),
}

/// The server's side of one delivery in flight on an agent.
#[derive(Debug)]
pub struct Pending {
    tx: mpsc::Sender<Reply>,
    head_seen: bool,
}

/// One connected agent, shared between its session task and the ingress handlers that send it
/// deliveries.
#[derive(Debug)]
pub struct AgentHandle {
    id: AgentId,
    channel: ChannelId,
    outbox: mpsc::Sender<Message>,
    pending: DashMap<DeliveryId, Pending>,
    closed: CancellationToken,
}

impl AgentHandle {
    pub fn new(channel: ChannelId, outbox: mpsc::Sender<Message>) -> Self {
        Self {
            id: AgentId(Uuid::new_v4()),
            channel,
            outbox,
            pending: DashMap::new(),
            closed: CancellationToken::new(),
        }
    }

    pub fn id(&self) -> AgentId {
        self.id
    }

    pub fn channel(&self) -> &ChannelId {
        &self.channel
    }

    /// Cancelled when the agent's session ends; every delivery waiting on it fails with 502.
    pub fn closed(&self) -> &CancellationToken {
        &self.closed
    }

    /// Queues an encoded frame for the agent's writer task. Waits while the queue is full
    /// (backpressure); fails once the session has ended.
    pub async fn send(&self, frame: &Frame) -> Result<(), SendError> {
        let bytes = protocol::encode(frame).map_err(|_| SendError::Encode)?;
        self.outbox
            .send(Message::Binary(Bytes::from(bytes)))
            .await
            .map_err(|_| SendError::Closed)
    }

    /// Starts tracking a delivery: replies the agent sends for `id` arrive on the returned
    /// receiver. The entry lives until the reply completes or the [`DeliveryGuard`] is dropped.
    pub fn begin(self: &Arc<Self>, id: DeliveryId) -> (DeliveryGuard, mpsc::Receiver<Reply>) {
        let (tx, rx) = mpsc::channel(REPLY_QUEUE);
        self.pending.insert(
            id,
            Pending {
                tx,
                head_seen: false,
            },
        );
        let guard = DeliveryGuard {
            agent: Arc::clone(self),
            id,
        };
        (guard, rx)
    }

    /// Routes a reply frame to its delivery. Returns the sender to await on (never awaited here,
    /// so no map guard is held across a wait) or why the frame is out of place.
    pub fn route(&self, id: DeliveryId, is_head: bool, fin: bool) -> Route {
        let Some(mut entry) = self.pending.get_mut(&id) else {
            return Route::Unknown;
        };
        if is_head == entry.head_seen {
            return Route::OutOfOrder;
        }
        entry.head_seen = true;
        let tx = entry.tx.clone();
        drop(entry);
        if fin {
            self.pending.remove(&id);
        }
        Route::Deliver(tx)
    }

    /// Forgets a delivery (the agent aborted it, or its sender stopped reading).
    pub fn forget(&self, id: &DeliveryId) -> Option<mpsc::Sender<Reply>> {
        self.pending.remove(id).map(|(_, p)| p.tx)
    }

    /// Number of deliveries waiting on this agent.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Ends every delivery in flight: their receivers see the queue close and answer 502.
    pub fn close(&self) {
        self.closed.cancel();
        self.pending.clear();
    }
}

/// Where a reply frame goes.
#[derive(Debug)]
pub enum Route {
    Deliver(mpsc::Sender<Reply>),
    /// No such delivery: it finished, timed out or was never sent. Late frames are expected
    /// after an abort and are dropped.
    Unknown,
    /// A body before its head, or a second head.
    OutOfOrder,
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("agent disconnected")]
    Closed,
    #[error("frame could not be encoded")]
    Encode,
}

/// Removes a delivery from its agent when dropped. If the delivery was still in flight (the
/// sender hung up, the ingress timed out), the agent is told to abort it, without waiting: a
/// full queue means the agent is busy and its late answer will be discarded anyway.
#[derive(Debug)]
pub struct DeliveryGuard {
    agent: Arc<AgentHandle>,
    id: DeliveryId,
}

impl DeliveryGuard {
    /// Aborts the delivery now with `reason` (see the type's docs).
    pub fn abort(self, reason: &str) {
        self.abort_with(reason);
    }

    fn abort_with(&self, reason: &str) {
        if self.agent.forget(&self.id).is_none() {
            return;
        }
        let frame = Frame::Abort(Abort {
            id: self.id,
            reason: reason.to_owned(),
        });
        if let Ok(bytes) = protocol::encode(&frame) {
            let _ = self
                .agent
                .outbox
                .try_send(Message::Binary(Bytes::from(bytes)));
        }
    }
}

impl Drop for DeliveryGuard {
    fn drop(&mut self) {
        self.abort_with("sender went away");
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
    pub fn add(&self, agent: Arc<AgentHandle>) {
        self.channels
            .entry(agent.channel().clone())
            .or_default()
            .agents
            .push(agent);
    }

    pub fn remove(&self, agent: &AgentHandle) {
        self.channels.remove_if_mut(agent.channel(), |_, entry| {
            entry.agents.retain(|a| a.id() != agent.id());
            entry.agents.is_empty()
        });
    }

    /// The agent to send the next delivery of `channel` to, round robin among its agents.
    pub fn pick(&self, channel: &ChannelId) -> Option<Arc<AgentHandle>> {
        let entry = self.channels.get(channel)?;
        let n = entry.agents.len();
        if n == 0 {
            return None;
        }
        let i = entry.next.fetch_add(1, Ordering::Relaxed) % n;
        Some(Arc::clone(&entry.agents[i]))
    }

    pub fn agent_count(&self, channel: &ChannelId) -> usize {
        self.channels.get(channel).map_or(0, |e| e.agents.len())
    }

    /// Total agents connected, over all channels.
    pub fn total_agents(&self) -> usize {
        self.channels.iter().map(|e| e.agents.len()).sum()
    }
}
