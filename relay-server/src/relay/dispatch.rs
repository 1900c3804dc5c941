//! Delivers queued events: the ones that arrived while no agent was connected, and the ones
//! waiting for a retry; and replays, for the API.
//!
//! One drain task per channel, alive while an agent serves the channel and its queue is not
//! empty. It delivers the due events one at a time in arrival order, each in its turn when
//! the channel has a pace (`--rate-limit`), records each attempt
//! before taking the next, and then sleeps until the next retry falls due or it is kicked (an
//! agent connected, an event was queued). Delivery is at least once: an event is marked delivered only after its
//! attempt is recorded, so a crash in between delivers it again, with the same
//! `X-Hookrelay-Delivery` id for the target to deduplicate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use protocol::ChannelId;
use tokio::sync::Notify;
use tokio::time::Instant as Deadline;
use tracing::{Instrument, debug, info_span, warn};

use crate::AppState;
use crate::agents::registry::AgentHandle;
use crate::error::Error;
use crate::relay::attempt::{Outgoing, deliver};
use crate::relay::record;
use crate::store::{self, Attempt, AttemptKind, Event, EventStatus, EventSummary, NewEvent};

/// Events fetched from the store per query.
const BATCH: usize = 32;

/// Longest wait for a failed agent's session to end before the drain picks an agent again.
const AGENT_GONE_WAIT: Duration = Duration::from_secs(1);

/// Pause after the store failed, before trying again.
const STORE_RETRY: Duration = Duration::from_secs(1);

/// How long a drain's turn at its channel outlasts the longest delivery (`--timeout`), on a
/// store several nodes share (see [`crate::store::Store::drain_turn`]).
const TURN_MARGIN: Duration = Duration::from_secs(10);

/// The channels with a drain task running, and how to wake each.
#[derive(Debug, Default)]
pub struct Dispatcher {
    drains: Mutex<HashMap<ChannelId, Arc<Notify>>>,
}

impl Dispatcher {
    /// Makes sure `channel`'s queue is being drained if an agent serves it: wakes its drain
    /// task, or starts one. Cheap when no agent is connected.
    pub fn kick(&self, state: &AppState, channel: &ChannelId) {
        if state.registry.agent_count(channel) == 0 {
            return;
        }
        let notify = {
            let mut drains = self.drains.lock().expect("dispatcher lock poisoned");
            if let Some(notify) = drains.get(channel) {
                notify.notify_one();
                return;
            }
            let notify = Arc::new(Notify::new());
            drains.insert(channel.clone(), Arc::clone(&notify));
            notify
        };
        let span = info_span!("drain", %channel);
        state
            .tracker
            .spawn(drain(Arc::clone(state), channel.clone(), notify).instrument(span));
    }

    /// Called by a drain task with nothing to do (no agent, or an empty queue): it stops,
    /// unless it was kicked since it last looked. Kicks notify under the same lock, so one that
    /// came earlier left a permit here, and one that comes later finds no task and starts one.
    fn leave(&self, channel: &ChannelId, notify: &Notify) -> bool {
        let mut drains = self.drains.lock().expect("dispatcher lock poisoned");
        if notify.notified().now_or_never().is_some() {
            return false;
        }
        drains.remove(channel);
        true
    }

    fn leave_on_shutdown(&self, channel: &ChannelId) {
        self.drains
            .lock()
            .expect("dispatcher lock poisoned")
            .remove(channel);
    }
}

/// Whether this node may drain `channel` now, holding the turn for one more delivery:
/// always on a store of one process; on a shared one, while no other node drains it.
async fn my_turn(state: &AppState, channel: &ChannelId) -> Result<bool, store::StoreError> {
    let until = store::to_ms(std::time::SystemTime::now() + state.config.timeout + TURN_MARGIN);
    state.store.drain_turn(channel, until).await
}

/// Gives up the drain's turn at `channel`, then stops unless kicked since (see
/// [`Dispatcher::leave`]): given up first, so that a drain started by a later kick takes it
/// again rather than lose it to this one.
async fn stop(state: &AppState, channel: &ChannelId, notify: &Notify) -> bool {
    if let Err(e) = state.store.drain_done(channel).await {
        debug!(error = %e, "cannot give up the turn at draining; it runs out by itself");
    }
    state.dispatcher.leave(channel, notify)
}

async fn drain(state: AppState, channel: ChannelId, notify: Arc<Notify>) {
    debug!("drain started");
    loop {
        if state.agents_shutdown.is_cancelled() {
            let _ = state.store.drain_done(&channel).await;
            state.dispatcher.leave_on_shutdown(&channel);
            return;
        }
        if state.registry.agent_count(&channel) == 0 {
            if stop(&state, &channel, &notify).await {
                debug!("no agent left; drain stopped");
                return;
            }
            continue;
        }
        match my_turn(&state, &channel).await {
            Ok(true) => {}
            // Another node drains it: it is kicked here again (by a lease renewal) if work is
            // left once that one stops.
            Ok(false) => {
                if stop(&state, &channel, &notify).await {
                    debug!("another node drains this channel; drain stopped");
                    return;
                }
                continue;
            }
            Err(e) => {
                warn!(error = %e, "cannot take the turn at draining the queue");
                tokio::time::sleep(STORE_RETRY).await;
                continue;
            }
        }
        // Only what a connected agent takes: an event whose type none of them takes waits for
        // one that does, and does not hold up the others.
        let takes = state.registry.subscription(&channel);
        let due = match state
            .store
            .due(&channel, &takes, store::now_ms(), BATCH)
            .await
        {
            Ok(due) => due,
            Err(e) => {
                warn!(error = %e, "cannot read the queue");
                tokio::time::sleep(STORE_RETRY).await;
                continue;
            }
        };
        if due.is_empty() {
            state.paces.caught_up(&channel);
            let next = match state.store.next_due(&channel, &takes).await {
                Ok(next) => next,
                Err(e) => {
                    warn!(error = %e, "cannot read the queue");
                    tokio::time::sleep(STORE_RETRY).await;
                    continue;
                }
            };
            let Some(at) = next else {
                // Nothing queued: stop until an event is queued or an agent connects.
                if stop(&state, &channel, &notify).await {
                    debug!("queue empty; drain stopped");
                    return;
                }
                continue;
            };
            let wait = Duration::from_millis(u64::try_from(at - store::now_ms()).unwrap_or(0));
            tokio::select! {
                () = notify.notified() => {}
                () = tokio::time::sleep(wait) => {}
                () = state.agents_shutdown.cancelled() => {}
            }
            continue;
        }
        for event in due {
            if state.agents_shutdown.is_cancelled() {
                break;
            }
            // A channel with a pace gets each delivery in its turn (see `limits::Paces`).
            let pace = state
                .channels
                .get(&channel)
                .and_then(|record| record.settings.rate_limit);
            tokio::select! {
                () = state.paces.turn(&channel, pace) => {}
                () = state.agents_shutdown.cancelled() => break,
            }
            let event_type = event.summary.event_type.as_deref();
            let Some(agent) = state.registry.pick(&channel, event_type) else {
                // The agents changed since the query: look again with theirs.
                break;
            };
            // The turn outlasts this delivery, or another node has it now: look again.
            if !matches!(my_turn(&state, &channel).await, Ok(true)) {
                break;
            }
            let id = event.summary.id;
            let failures = event.summary.failures;
            match state.store.begin(id).await {
                Ok(true) => {}
                // Another dispatcher (another node on a shared store) claimed it since the
                // query, or it was recorded meanwhile: not ours to deliver.
                Ok(false) => {
                    debug!(delivery_id = %id, "queued event claimed elsewhere; skipped");
                    continue;
                }
                Err(e) => warn!(delivery_id = %id, error = %e, "cannot mark the event delivering"),
            }
            state.paces.started(&channel);
            let (attempt, agent_gone) =
                attempt(&state, Arc::clone(&agent), &event, AttemptKind::Queued).await;
            record::retryable(&state, &channel, id, attempt, failures, agent_gone).await;
            if agent_gone {
                // Its session is ending; wait until it has left the registry rather than pick
                // it again and record one failed attempt after another.
                let _ = tokio::time::timeout(AGENT_GONE_WAIT, agent.closed().cancelled()).await;
                break;
            }
        }
    }
}

/// One attempt of kind `kind` at a stored event through `agent`: the attempt record (of that
/// kind), and whether it failed because the agent went away (not the target's fault).
async fn attempt(
    state: &AppState,
    agent: Arc<AgentHandle>,
    event: &Event,
    kind: AttemptKind,
) -> (Attempt, bool) {
    send(state, agent, Outgoing::stored(state, event, kind)).await
}

/// Sends `out` through `agent` and waits for the answer: the attempt record, and whether it
/// failed because the agent went away.
async fn send(state: &AppState, agent: Arc<AgentHandle>, out: Outgoing) -> (Attempt, bool) {
    let deadline = Deadline::now() + state.config.timeout;
    let (attempt, error) = deliver(state, agent, out, deadline).await;
    (attempt, matches!(error, Some(Error::AgentGone)))
}

/// The agent a replay goes to: one of `channel`'s that takes `event_type`, or, for an event
/// that was `unrouted` (none took it), any of them, since the user asked for it.
/// [`Error::NoAgent`] or [`Error::NoTaker`] when there is none.
fn replay_agent(
    state: &AppState,
    channel: &ChannelId,
    event_type: Option<&str>,
    unrouted: bool,
) -> Result<Arc<AgentHandle>, Error> {
    let agent = match unrouted {
        // Preferably one that takes every type: the others do not take an untyped webhook.
        true => (state.registry.pick(channel, None))
            .or_else(|| state.registry.agents(channel).into_iter().next()),
        false => state.registry.pick(channel, event_type),
    };
    agent.ok_or_else(|| match state.registry.agent_count(channel) {
        0 => Error::NoAgent(channel.clone()),
        _ => Error::NoTaker {
            channel: channel.clone(),
            event_type: event_type.map(str::to_owned),
        },
    })
}

/// Delivers a stored event now, for the replay API, and records the attempt (see
/// [`record::replayed`]). Returns the attempt and the status it leaves the event in.
pub async fn replay(state: &AppState, event: &Event) -> Result<(Attempt, EventStatus), Error> {
    let summary = &event.summary;
    let unrouted = summary.status == EventStatus::Unrouted;
    let agent = replay_agent(
        state,
        &summary.channel,
        summary.event_type.as_deref(),
        unrouted,
    )?;
    let (attempt, _) = attempt(state, agent, event, AttemptKind::Replay).await;
    record::replayed(state, summary.id, summary.status, attempt).await
}

/// Delivers `edited`, an edited copy of `original` (see [`crate::routes::events::replay`]),
/// as a replay: stored first as a new event, then sent, and its attempt recorded (see
/// [`record::replayed_copy`]). Returns the attempt and the copy's status.
pub async fn replay_edited(
    state: &AppState,
    original: &EventSummary,
    mut edited: NewEvent,
) -> Result<(Attempt, EventStatus), Error> {
    let unrouted = original.status == EventStatus::Unrouted;
    let agent = replay_agent(
        state,
        &edited.channel,
        edited.event_type.as_deref(),
        unrouted,
    )?;
    edited.status = EventStatus::Delivering;
    let source = (edited.source.as_deref()).and_then(|s| s.parse().ok());
    let out = Outgoing::new(state, &edited, AttemptKind::Replay, source);
    let id = edited.id;
    state.store.insert(edited).await?;
    let (attempt, _) = send(state, agent, out).await;
    record::replayed_copy(state, id, attempt).await
}
