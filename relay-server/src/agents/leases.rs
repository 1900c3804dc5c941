//! Which node holds which agent, for a store that several relay nodes share: every few seconds
//! this node tells the store the agents it holds, under a lease that outlives a few missed
//! renewals only ([`LEASE_TTL`]), so a node that dies loses its agents within seconds. The
//! channel status of any node then lists every node's agents. The same renewal keeps this
//! node's store alive in the others' eyes (what a dead one was delivering is queued again),
//! and wakes this node's dispatcher for its agents' channels that have queued work, whichever
//! node queued it. Each renewal also reads the other nodes' agents ([`Elsewhere`]), so that a
//! webhook for one of them crosses without a lookup of its own.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use protocol::{ChannelId, Subscription};
use tracing::{debug, warn};

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
        match state
            .store
            .agents_elsewhere(&state.node_id, store::now_ms())
            .await
        {
            Ok(leases) => state.elsewhere.replace(&leases),
            Err(e) => debug!(error = %e, "cannot read the other nodes' agents"),
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

/// What each channel's agents on the other nodes take, as the last renewal read it: when one
/// takes a webhook, it can be offered at once. Only a "yes" is trusted (a lease read is at most
/// one renewal old, as good as a lookup against leases that outlive three renewals); for a
/// "no", which may be an agent that connected since, the leases are asked.
#[derive(Debug, Default)]
pub struct Elsewhere {
    read: RwLock<Option<Snapshot>>,
}

#[derive(Debug)]
struct Snapshot {
    at: Instant,
    takes: HashMap<ChannelId, Vec<Subscription>>,
}

impl Elsewhere {
    /// Keeps `leases` (other nodes' agents, good now) as what is known from now on.
    pub fn replace(&self, leases: &[AgentLease]) {
        let mut takes: HashMap<ChannelId, Vec<Subscription>> = HashMap::new();
        for lease in leases {
            let subscription = match &lease.events {
                None => Subscription::All,
                Some(patterns) => match Subscription::parse(patterns.iter().map(String::as_str)) {
                    Ok(subscription) => subscription,
                    Err(_) => continue,
                },
            };
            takes
                .entry(lease.channel.clone())
                .or_default()
                .push(subscription);
        }
        let snapshot = Snapshot {
            at: Instant::now(),
            takes,
        };
        *self.read.write().unwrap_or_else(|e| e.into_inner()) = Some(snapshot);
    }

    /// Whether an agent of `channel` on another node took webhooks of `event_type` at the
    /// last renewal, if that is recent (a node that cannot renew stops trusting what it read).
    pub fn takes(&self, channel: &ChannelId, event_type: Option<&str>) -> bool {
        let read = self.read.read().unwrap_or_else(|e| e.into_inner());
        read.as_ref().is_some_and(|snapshot| {
            snapshot.at.elapsed() < LEASE_RENEW * 2
                && (snapshot.takes.get(channel))
                    .is_some_and(|all| all.iter().any(|s| s.takes(event_type)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(channel: &str, events: Option<&[&str]>) -> AgentLease {
        AgentLease {
            node: "b".to_owned(),
            agent_id: uuid::Uuid::new_v4(),
            channel: ChannelId::parse(channel).expect("valid name"),
            client: "test".to_owned(),
            peer: "127.0.0.1:1".to_owned(),
            connected_at: 0,
            events: events.map(|e| e.iter().map(|p| (*p).to_owned()).collect()),
            in_flight: 0,
        }
    }

    #[test]
    fn elsewhere_knows_what_the_other_nodes_agents_take_until_it_is_stale() {
        let gh = ChannelId::parse("gh").expect("valid name");
        let stripe = ChannelId::parse("stripe").expect("valid name");
        let elsewhere = Elsewhere::default();
        assert!(
            !elsewhere.takes(&gh, None),
            "nothing is known before a read"
        );
        elsewhere.replace(&[lease("gh", Some(&["push"])), lease("stripe", None)]);
        assert!(elsewhere.takes(&gh, Some("push")));
        assert!(!elsewhere.takes(&gh, Some("issues")), "not its type");
        assert!(
            !elsewhere.takes(&gh, None),
            "an untyped webhook needs an agent of all"
        );
        assert!(elsewhere.takes(&stripe, None));
        let other = ChannelId::parse("other").expect("valid name");
        assert!(!elsewhere.takes(&other, None));

        let read = Instant::now().checked_sub(LEASE_RENEW * 2);
        let mut snapshot = elsewhere.read.write().expect("not poisoned");
        if let (Some(snapshot), Some(at)) = (snapshot.as_mut(), read) {
            snapshot.at = at;
        }
        drop(snapshot);
        assert!(
            !elsewhere.takes(&stripe, None),
            "a read two renewals old is not trusted"
        );
    }
}
