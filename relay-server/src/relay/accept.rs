//! Letting a webhook in: the checks that come before its body is read ([`admit`]), then, with
//! the body, its signature, the store, and the choice of agents ([`accept`]): live now, or
//! queued for the dispatcher. Stored first: the target never sees a webhook the store does not
//! have.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use protocol::{ChannelId, DeliveryId, Headers};
use tokio::sync::SemaphorePermit;
use tokio::time::Instant as Deadline;

use crate::AppState;
use crate::agents::registry::AgentHandle;
use crate::channel::{ChannelRecord, ChannelSettings, Mode};
use crate::error::Error;
use crate::relay::Answer;
use crate::relay::attempt::Outgoing;
use crate::relay::{handover, live, record};
use crate::store::{self, EventStatus, NewEvent};

/// Deliveries one agent may have in flight; past this new webhooks are queued rather than the
/// server piling work on an agent that cannot keep up.
pub(crate) const MAX_IN_FLIGHT_PER_AGENT: usize = 1024;

/// Where a webhook comes from.
#[derive(Debug, Clone, Copy)]
pub struct Source {
    /// The connection's peer.
    pub peer: Option<SocketAddr>,
    /// The sender: the peer, or the client behind a trusted proxy.
    pub client: Option<IpAddr>,
}

/// A webhook let in, its body still to come. It holds one of `--max-in-flight` slots until
/// [`accept`] has the sender's answer.
#[derive(Debug)]
pub struct Admitted<'a> {
    slot: SemaphorePermit<'a>,
    channel: &'a ChannelId,
    registered: Option<Arc<ChannelRecord>>,
    source: Source,
    started: Deadline,
    /// When the sender's body must have arrived, and the target's answer after it.
    pub deadline: Deadline,
}

/// The checks a webhook for `channel` (`registered`, or `None` in open mode) from `source`
/// passes before its body is read: a free slot, a channel it may use, an allowed source, room
/// on disk, and, when nobody vouches for it, its source's rate. The delivery's time starts now.
pub fn admit<'a>(
    state: &'a AppState,
    channel: &'a ChannelId,
    registered: Option<Arc<ChannelRecord>>,
    source: Source,
) -> Result<Admitted<'a>, Error> {
    let slot = state.ingress_slots.try_acquire().map_err(|_| Error::Busy)?;
    if registered.is_none() && !state.open {
        return Err(Error::UnknownChannel(channel.clone()));
    }
    if let Some(allowed) = (registered.as_ref())
        .map(|r| &r.settings.allow_from)
        .filter(|nets| !nets.is_empty())
    {
        let client = source.client;
        if !client.is_some_and(|ip| allowed.iter().any(|net| net.contains(&ip))) {
            let ip = client.unwrap_or(Ipv4Addr::UNSPECIFIED.into());
            return Err(Error::SourceNotAllowed(ip));
        }
    }
    if let Some(free) = state.disk.low() {
        return Err(Error::DiskLow(free));
    }
    if registered.is_none() {
        // Open mode: the name is the only secret, so one address may not flood the server
        // with channels of its own (on a public relay; see `limits::SourceLimits`).
        limit_source(state, source.client, "open channel")?;
    }
    let started = Deadline::now();
    Ok(Admitted {
        slot,
        channel,
        registered,
        source,
        started,
        deadline: started + state.config.timeout,
    })
}

/// A webhook as its sender sent it: the request's method, the path after `/h/{channel}`
/// (still percent-encoded), the query, every header in order, and the whole body.
#[derive(Debug)]
pub struct Webhook {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: Headers,
    pub body: Bytes,
}

/// Takes in the admitted webhook `id`: checks its signature, stores it, and delivers it live
/// when an agent can take it now, or leaves it queued for the dispatcher.
pub async fn accept(
    state: &AppState,
    admitted: Admitted<'_>,
    id: DeliveryId,
    webhook: Webhook,
) -> Result<Answer, Error> {
    let Admitted {
        slot: _slot,
        channel,
        registered,
        source,
        started,
        deadline,
    } = admitted;
    let settings = registered.as_ref().map(|r| &r.settings);
    let event_type = crate::event_type::derive(
        settings.and_then(|s| s.event_type.as_ref()),
        &webhook.headers,
        &webhook.body,
    );
    let mut event = NewEvent {
        id,
        channel: channel.clone(),
        received_at: store::now_ms(),
        // The sender: the connection's peer, or the client behind a trusted proxy.
        source: match (source.peer, source.client) {
            (Some(peer), Some(client)) if client != peer.ip() => Some(client.to_string()),
            (peer, _) => peer.map(|p| p.to_string()),
        },
        method: webhook.method,
        path: webhook.path,
        query: webhook.query,
        headers: webhook.headers,
        body: webhook.body,
        status: EventStatus::Queued,
        event_type,
        replay_of: None,
    };
    if let Some(verify) = settings.and_then(|s| s.verify.as_ref()) {
        let now = event.received_at.div_euclid(1000);
        if let Err(e) = verify.check(&event.headers, &event.body, now) {
            limit_source(state, source.client, "signature failed")?;
            record::rejected(state, event, &e).await?;
            return Err(Error::Signature(e));
        }
    }
    let chosen = choose(state, channel, settings, event.event_type.as_deref());
    if matches!(chosen, Chosen::Nobody | Chosen::Later { nobody_here: true })
        && let Some(handover) =
            handover::elsewhere(state, channel, event.event_type.as_deref()).await
    {
        // Another node holds an agent that takes it: through the store, to that node.
        return handover::offer(state, handover, channel, event, deadline).await;
    }
    let agents = match chosen {
        Chosen::Agents(agents) => agents,
        Chosen::Nobody => {
            // Agents are connected, and none of them takes this type: kept for the history,
            // to be replayed by hand, rather than queued for an agent that may never come.
            event.status = EventStatus::Unrouted;
            state.store.insert(event).await?;
            state.metrics.unrouted(channel, registered.is_some());
            return Ok(Answer::Unrouted);
        }
        Chosen::Later { .. } => Vec::new(),
    };
    if agents.is_empty() {
        state.store.insert(event).await?;
        if state.paces.is_paced(settings.and_then(|s| s.rate_limit)) {
            state.paces.queued(channel);
        }
        state.dispatcher.kick(state, channel);
        let offline =
            state.config.offline_status == 503 && state.registry.agent_count(channel) == 0;
        return Ok(Answer::Queued { offline });
    }
    event.status = EventStatus::Delivering;
    let out = Outgoing::live(state, &event, source.peer);
    // Stored before it is forwarded, so that every delivery the target sees can be looked up
    // and replayed, even after a crash mid-delivery. Overlapping the write with forwarding was
    // measured (issue 14): one connection's p50 stayed at 0.5 ms and its p90 went from 0.74 to
    // 3 ms, the commit and the delivery competing for the same two cores.
    state.store.insert(event).await?;
    match <[_; 1]>::try_from(agents) {
        Ok([agent]) => live::single(state, channel, agent, out, started, deadline).await,
        Err(agents) => live::fanout(state, agents, out, deadline).await,
    }
}

/// Who a webhook goes to now.
enum Chosen {
    /// These agents, live (never empty).
    Agents(Vec<Arc<AgentHandle>>),
    /// The queue: no agent is connected (`nobody_here`), the channel's pace says it must wait
    /// its turn, or every agent that takes it is at [`MAX_IN_FLIGHT_PER_AGENT`].
    Later { nobody_here: bool },
    /// Nobody: agents are connected, and none takes the webhook's type.
    Nobody,
}

/// The agents to deliver a webhook of type `event_type` to now: by the channel's mode, one
/// (round robin among those that take the type) or all that take it, leaving out those with
/// [`MAX_IN_FLIGHT_PER_AGENT`] deliveries.
fn choose(
    state: &AppState,
    channel: &ChannelId,
    settings: Option<&ChannelSettings>,
    event_type: Option<&str>,
) -> Chosen {
    let mut agents: Vec<Arc<AgentHandle>> = match settings.map_or(Mode::Balance, |s| s.mode) {
        Mode::Balance => state
            .registry
            .pick(channel, event_type)
            .into_iter()
            .collect(),
        Mode::Fanout => state.registry.takers(channel, event_type),
    };
    if agents.is_empty() {
        return match state.registry.agent_count(channel) {
            0 => Chosen::Later { nobody_here: true },
            _ => Chosen::Nobody,
        };
    }
    if !state
        .paces
        .admit(channel, settings.and_then(|s| s.rate_limit))
    {
        return Chosen::Later { nobody_here: false };
    }
    agents.retain(|agent| agent.in_flight() < MAX_IN_FLIGHT_PER_AGENT);
    match agents.is_empty() {
        true => Chosen::Later { nobody_here: false },
        false => Chosen::Agents(agents),
    }
}

/// Counts an untrusted webhook (`what`) against its source's limit, which only a public relay
/// has.
fn limit_source(state: &AppState, client: Option<IpAddr>, what: &'static str) -> Result<(), Error> {
    state.source_limits.check(client).map_err(|wait| {
        let ip = client.unwrap_or(Ipv4Addr::UNSPECIFIED.into());
        Error::SourceRateLimited { ip, what, wait }
    })
}
