//! Webhooks that cross nodes, on a store several nodes share: a webhook reaches node A while
//! the agent that takes it is on node B. A stores it, offered ([`Handover::offer`]: queued,
//! but for a taker only) and tells every node; B takes it ([`Handover::take`]), delivers it
//! through its agent as a live attempt, records the attempt and tells A, and A answers the
//! sender with what the record holds: the target's own answer, as if the agent were on A.
//!
//! Nothing is lost on the way: the event is stored before anyone hears of it, and each side
//! gives up into the queue. When no node takes it within [`TAKE_WAIT`] (a note lost, the
//! lease of a node that just died), A withdraws the offer and answers 202, queued, and the
//! queue delivers it as any other; the row lock decides between a take and a withdraw, so the
//! event is either delivered live by one node, its answer the sender's, or queued. When the
//! node that took it dies, A, looking every [`LOOK_AGAIN`], queues it again itself once that
//! node's store lease has run out, and answers 202 then too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use protocol::{ChannelId, DeliveryId, Subscription};
use tokio::sync::{broadcast, oneshot};
use tokio::time::{Instant as Deadline, timeout_at};
use tracing::{Instrument, debug, info_span, warn};

use crate::AppState;
use crate::error::Error;
use crate::relay::Answer;
use crate::relay::accept::MAX_IN_FLIGHT_PER_AGENT;
use crate::relay::attempt::{self, Outgoing, Reply};
use crate::relay::record;
use crate::store::{self, AttemptKind, Handover, NewEvent, Note};

/// How long the node a webhook reached waits for another node to take it before it leaves
/// the webhook to the queue and answers 202.
const TAKE_WAIT: Duration = Duration::from_secs(1);

/// How often the node a webhook reached looks again whether the node that took it is still
/// delivering it (alive: its store's lease holds).
const LOOK_AGAIN: Duration = Duration::from_secs(1);

/// Pause before the node that delivered another node's webhook tries its record again.
const RECORD_RETRY: Duration = Duration::from_millis(250);

/// The senders on this node waiting for another node's answer, by delivery id.
#[derive(Debug, Default)]
pub struct Waiting {
    senders: Mutex<HashMap<DeliveryId, oneshot::Sender<u16>>>,
}

impl Waiting {
    /// Waits for `id`'s [`Note::Answered`], until the returned guard is dropped.
    fn wait(&self, id: DeliveryId) -> Waiter<'_> {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(id, tx);
        Waiter {
            waiting: self,
            id,
            answered: rx,
        }
    }

    /// Wakes whoever waits for `id`'s answer on this node, if anyone does.
    fn answered(&self, id: DeliveryId, failure: u16) {
        if let Some(tx) = self.lock().remove(&id) {
            let _ = tx.send(failure);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DeliveryId, oneshot::Sender<u16>>> {
        self.senders.lock().expect("handover lock poisoned")
    }
}

/// One sender's wait (see [`Waiting::wait`]).
struct Waiter<'a> {
    waiting: &'a Waiting,
    id: DeliveryId,
    answered: oneshot::Receiver<u16>,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.waiting.lock().remove(&self.id);
    }
}

/// The handover, when this node's store has one and another node holds an agent of
/// `channel` that takes `event_type`: as the last lease renewal read them, or else as their
/// leases say now.
pub async fn elsewhere<'a>(
    state: &'a AppState,
    channel: &ChannelId,
    event_type: Option<&str>,
) -> Option<&'a dyn Handover> {
    let handover = state.store.handover()?;
    if state.elsewhere.takes(channel, event_type) {
        return Some(handover);
    }
    let leases = match state.store.leased_agents(channel, store::now_ms()).await {
        Ok(leases) => leases,
        Err(e) => {
            debug!(error = %e, "cannot read the other nodes' agents");
            return None;
        }
    };
    let takes = |events: &Option<Vec<String>>| match events {
        None => true,
        Some(patterns) => Subscription::parse(patterns.iter().map(String::as_str))
            .is_ok_and(|subscription| subscription.takes(event_type)),
    };
    (leases.iter())
        .any(|lease| lease.node != state.node_id && takes(&lease.events))
        .then_some(handover)
}

/// Offers `event` to the other nodes and answers its sender, who waits until `deadline`: with
/// the target's answer as the node that took it recorded it, or 202 when none took it.
pub async fn offer(
    state: &AppState,
    handover: &dyn Handover,
    channel: &ChannelId,
    event: NewEvent,
    deadline: Deadline,
) -> Result<Answer, Error> {
    let id = event.id;
    // Waiting before the offer is heard, so that no answer can come before anyone listens.
    let mut waiter = state.handovers.wait(id);
    handover.offer(event).await?;
    // Until an answer comes, the offer is withdrawn at each look: it succeeds when nobody took
    // the webhook, or when the node that took it died (its store's lease ran out).
    let last = deadline + TAKE_WAIT;
    let mut look = Deadline::now() + TAKE_WAIT;
    let (attempt, failure) = loop {
        match timeout_at(look.min(last), &mut waiter.answered).await {
            Ok(answered) => {
                let failure = answered.map_err(|_| Error::AgentGone)?;
                let attempt = handover.answer(channel, id).await?;
                break (attempt.ok_or(Error::AgentGone)?, failure);
            }
            // Taken: its node delivers it under its own deadline, which began up to
            // `TAKE_WAIT` after this one.
            Err(_) if Deadline::now() >= last => {
                return Err(Error::Timeout(state.config.timeout.as_secs()));
            }
            Err(_) => {
                if handover.withdraw(id).await? {
                    debug!("no other node delivers the webhook; queued");
                    return Ok(Answer::Queued { offline: false });
                }
                // Taken, and perhaps answered with the note lost (this node's listening
                // connection was down): then the record says what the note would have.
                if let Some(attempt) = handover.answer(channel, id).await? {
                    break (attempt, Error::AgentGone.status().as_u16());
                }
                look = Deadline::now() + LOOK_AGAIN;
            }
        }
    };
    match attempt.status {
        Some(status) => Ok(Answer::Target(Reply {
            status,
            headers: attempt.headers,
            body: Body::from(attempt.body),
        })),
        None => Err(Error::Elsewhere {
            status: failure,
            reason: attempt.error.unwrap_or_default(),
        }),
    }
}

/// Hears the other nodes until shutdown: takes what they offer when an agent here takes it,
/// and wakes the senders here whose answers came. Does nothing on a store of one process.
pub async fn serve(state: AppState) {
    let Some(handover) = state.store.handover() else {
        return;
    };
    let mut notes = handover.notes();
    loop {
        let note = tokio::select! {
            note = notes.recv() => note,
            () = state.agents_shutdown.cancelled() => return,
        };
        match note {
            Ok(Note::Answered { id, failure }) => state.handovers.answered(id, failure),
            Ok(Note::Offered {
                id,
                channel,
                event_type,
            }) => {
                let span = info_span!("handover", delivery_id = %id, %channel);
                let take = take(Arc::clone(&state), channel, id, event_type);
                state.tracker.spawn(take.instrument(span));
            }
            // Those senders wait out their deadlines; what was offered meanwhile is queued.
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                warn!(missed, "fell behind the other nodes' notes");
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Takes offered webhook `id` when an agent here takes its type and has room, delivers it
/// while its sender waits on the node that offered it, records the attempt and tells that
/// node.
async fn take(state: AppState, channel: ChannelId, id: DeliveryId, event_type: Option<String>) {
    let Some(agent) = state.registry.pick(&channel, event_type.as_deref()) else {
        return;
    };
    if agent.in_flight() >= MAX_IN_FLIGHT_PER_AGENT {
        return;
    }
    let Some(handover) = state.store.handover() else {
        return;
    };
    let event = match handover.take(&channel, id).await {
        Ok(Some(event)) => event,
        Ok(None) => return,
        Err(e) => {
            warn!(error = %e, "cannot take a webhook another node offered");
            return;
        }
    };
    let deadline = Deadline::now() + state.config.timeout;
    let out = Outgoing::stored(&state, &event, AttemptKind::Live);
    let (attempt, error) = attempt::deliver(&state, agent, out, deadline).await;
    let failure = error.map_or(0, |e| e.status().as_u16());
    // Its sender waits for this record: tried again while the database is away (it is the
    // only way the answer gets there), until the sender's node stops waiting.
    let last = deadline + TAKE_WAIT;
    loop {
        let recorded = record::handed_over(&state, handover, id, attempt.clone(), failure).await;
        match recorded {
            Ok(()) => return,
            Err(e) if Deadline::now() + RECORD_RETRY < last => {
                debug!(error = %e, "attempt at a webhook another node offered not recorded yet");
                tokio::time::sleep(RECORD_RETRY).await;
            }
            Err(e) => {
                // Its sender gets a timeout; the event is left delivering, as a live
                // attempt's unrecorded event is, until this node's store next opens.
                warn!(error = %e, "attempt at a webhook another node offered not recorded");
                return;
            }
        }
    }
}
