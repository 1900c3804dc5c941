//! Which node holds which agent, for a store that several relay nodes share: every few seconds
//! this node tells the store the agents it holds, under a lease that outlives a few missed
//! renewals only ([`LEASE_TTL`]), so a node that dies loses its agents within seconds. The
//! channel status of any node then lists every node's agents. The same renewal keeps this
//! node's store alive in the others' eyes (what a dead one was delivering is queued again),
//! and wakes this node's dispatcher for its agents' channels that have queued work, whichever
//! node queued it.

use std::time::Duration;

use tracing::warn;

use crate::AppState;
use crate::agents::registry::AgentHandle;
use crate::store::{self, AgentLease};

/// How often the leases are renewed.
const LEASE_RENEW: Duration = Duration::from_secs(2);

/// How long a lease holds without renewal: three renewals.
const LEASE_TTL: Duration = Duration::from_secs(6);

/// Renews this node's leases until shutdown, then gives them up. Does nothing on a store of
/// one process.
pub async fn renew(state: AppState) {
    if !state.store.shares_agents() {
        return;
    }
    let mut every = tokio::time::interval(LEASE_RENEW);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ttl = i64::try_from(LEASE_TTL.as_millis()).unwrap_or(i64::MAX);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = state.agents_shutdown.cancelled() => break,
        }
        let held = held(&state);
        let until = store::now_ms().saturating_add(ttl);
        match state.store.renew_leases(&state.node_id, held, until).await {
            // Queued by any node (or requeued from a node that died): delivered from here.
            Ok(due) => {
                for channel in &due {
                    state.dispatcher.kick(&state, channel);
                }
            }
            Err(e) => warn!(error = %e, "cannot renew this node's agent leases"),
        }
    }
    // Leaving: the other nodes stop listing this node's agents at once.
    if let Err(e) = state
        .store
        .renew_leases(&state.node_id, Vec::new(), 0)
        .await
    {
        warn!(error = %e, "cannot give up this node's agent leases");
    }
}

/// The agents this node holds, as a lease names them.
fn held(state: &AppState) -> Vec<AgentLease> {
    (state.registry.every_agent().iter())
        .map(|agent| lease_of(state, agent))
        .collect()
}

/// `agent`, one of this node's, as a lease names it.
pub fn lease_of(state: &AppState, agent: &AgentHandle) -> AgentLease {
    let info = agent.info();
    AgentLease {
        node: state.node_id.clone(),
        agent_id: agent.id().0,
        channel: agent.channel().clone(),
        client: info.client.clone(),
        peer: info.peer.to_string(),
        connected_at: info.connected_at,
        events: info.subscription.patterns(),
        in_flight: agent.in_flight() as u64,
    }
}
