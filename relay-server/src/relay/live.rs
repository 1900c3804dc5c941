//! Delivering while the sender waits: to one agent ([`single`]), or to every agent of a
//! fanout channel at once ([`fanout`]). The sender gets the target's answer, or with
//! `--ack-after` a 202 once the target is slow, and each attempt is recorded once it is over.

use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use protocol::{ChannelId, DeliveryId};
use tokio::time::{Instant as Deadline, timeout_at};

use crate::AppState;
use crate::agents::registry::AgentHandle;
use crate::error::Error;
use crate::relay::Answer;
use crate::relay::attempt::{Head, InFlight, Outgoing, Reply};
use crate::relay::record::{self, Role};
use crate::store;

/// Delivers through `agent` while the sender waits, and records the attempt once the response
/// is done. With `--ack-after`, a slow target gets the sender a 202 and the delivery goes on in
/// the background; from then on the event is ours to retry.
pub async fn single(
    state: &AppState,
    channel: &ChannelId,
    agent: Arc<AgentHandle>,
    out: Outgoing,
    started: Deadline,
    deadline: Deadline,
) -> Result<Answer, Error> {
    let id = out.id();
    let mut inflight = InFlight::begin(agent, &out);
    if let Err(e) = inflight.send(state, out, deadline).await {
        record::spawn(state, id, inflight.failed(&e), Role::Answered);
        return Err(e);
    }
    let head = match state.config.ack_after {
        None => inflight.head(state, deadline).await,
        Some(ack) => {
            let early = timeout_at(started + ack, inflight.head(state, deadline)).await;
            match early {
                Ok(head) => head,
                Err(_) => {
                    let (owner, channel) = (Arc::clone(state), channel.clone());
                    state.tracker.spawn(async move {
                        let (attempt, error) = inflight.complete(&owner, deadline).await;
                        let gone = matches!(error, Some(Error::AgentGone));
                        record::retryable(&owner, &channel, id, attempt, 0, gone).await;
                    });
                    return Ok(Answer::Pending);
                }
            }
        }
    };
    match head {
        Err(e) => {
            record::spawn(state, id, inflight.failed(&e), Role::Answered);
            Err(e)
        }
        Ok(head) => Ok(Answer::Target(answer(state, id, inflight, head))),
    }
}

/// Fanout: every agent gets a copy at once. The first answer that accepts the webhook (see
/// [`store::accepted`]) goes back to the sender, and its attempt decides the event's status;
/// when none does, the last answer or error does. One developer's target being down does not
/// fail the sender while another's took the webhook. Every other copy finishes in the
/// background and is recorded as an attempt of its own.
pub async fn fanout(
    state: &AppState,
    agents: Vec<Arc<AgentHandle>>,
    out: Outgoing,
    deadline: Deadline,
) -> Result<Answer, Error> {
    let id = out.id();
    let mut copies: FuturesUnordered<_> = agents
        .into_iter()
        .map(|agent| {
            let (state, out) = (Arc::clone(state), out.clone());
            async move {
                let mut inflight = InFlight::begin(agent, &out);
                let head = match inflight.send(&state, out, deadline).await {
                    Ok(()) => inflight.head(&state, deadline).await,
                    Err(e) => Err(e),
                };
                (inflight, head)
            }
        })
        .collect();
    drop(out);
    while let Some((inflight, head)) = copies.next().await {
        match head {
            Ok(head) if !store::accepted(head.0.status) && !copies.is_empty() => {
                let copy = Arc::clone(state);
                state.tracker.spawn(async move {
                    let attempt = inflight.read_body(head, deadline).await;
                    record::write(&copy, id, attempt, Role::Copy).await;
                });
            }
            Ok(head) => {
                let rest = Arc::clone(state);
                state.tracker.spawn(async move {
                    while let Some((inflight, head)) = copies.next().await {
                        let attempt = match head {
                            Ok(head) => inflight.read_body(head, deadline).await,
                            Err(e) => inflight.failed(&e),
                        };
                        // Not awaited: the copies left make progress only while polled.
                        record::spawn(&rest, id, attempt, Role::Copy);
                    }
                });
                return Ok(Answer::Target(answer(state, id, inflight, head)));
            }
            Err(e) if copies.is_empty() => {
                record::spawn(state, id, inflight.failed(&e), Role::Answered);
                return Err(e);
            }
            Err(e) => record::spawn(state, id, inflight.failed(&e), Role::Copy),
        }
    }
    Err(Error::AgentGone)
}

/// The sender's answer from `head`: the body streams on, and the attempt is recorded once it
/// has ended (or the sender has gone).
fn answer(state: &AppState, id: DeliveryId, inflight: InFlight, head: Head) -> Reply {
    let (reply, recorded) = inflight.stream(head);
    let recorder = Arc::clone(state);
    state.tracker.spawn(async move {
        if let Ok(attempt) = recorded.await {
            record::write(&recorder, id, attempt, Role::Answered).await;
        }
    });
    reply
}
