//! What an attempt's outcome does to its event, for live, queued and replayed attempts alike.
//!
//! Every attempt ends here. Who was waiting on it ([`Role`]) and what the target answered
//! decide the event's [`Transition`], all in [`Role::transition`]; the functions below write
//! the attempt and its transition to the store, each at the time its caller can afford: in the
//! background when a sender has (or is getting) its answer, awaited when the next step depends
//! on it (the queue takes the next event only once this one is recorded).

use std::sync::Arc;

use protocol::{ChannelId, DeliveryId};
use tracing::{info, warn};

use crate::AppState;
use crate::config::RetryPolicy;
use crate::error::Error;
use crate::store::{
    self, Attempt, AttemptKind, EventStatus, Handover, Millis, NewEvent, Store, Transition,
};
use crate::verify::VerifyError;

/// Who is waiting on an attempt's outcome, which decides what it does to the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Its answer is the sender's: a live attempt, or the fanout copy whose answer the sender
    /// got. The sender has been told, so this is the event's last word: delivered when the
    /// target accepted it, failed otherwise.
    Answered,
    /// A fanout copy whose answer the sender did not get: recorded beside the one it did,
    /// leaving the event as that one leaves it.
    Copy,
    /// The event is ours to retry: a queued attempt, or a live one whose sender got 202 at
    /// `--ack-after`. `failures` counted so far; `agent_gone` when the attempt was cut short by
    /// its agent leaving (not the target's fault, so not counted); `now`, when it ended, which
    /// the retry schedule counts from.
    Retryable {
        failures: u32,
        agent_gone: bool,
        now: Millis,
    },
    /// Asked for through the replay API: delivered when the target accepted it; otherwise
    /// the event stays as it was.
    Replayed,
}

impl Role {
    /// The whole policy: what an attempt that got `status` (`None`: no answer) does to its
    /// event in this role. A retry is scheduled on `retry`, with jitter.
    pub fn transition(self, status: Option<u16>, retry: &RetryPolicy) -> Transition {
        let accepted = status.is_some_and(store::accepted);
        match self {
            Role::Copy => Transition::Keep,
            _ if accepted => Transition::Delivered,
            Role::Answered => Transition::Failed,
            Role::Replayed => Transition::Keep,
            Role::Retryable {
                failures,
                agent_gone: true,
                now,
            } => Transition::Retry { at: now, failures },
            Role::Retryable { failures, now, .. } => {
                let failures = failures.saturating_add(1);
                match retry.delay(failures, jitter()) {
                    Some(delay) => Transition::Retry {
                        at: now
                            .saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)),
                        failures,
                    },
                    None => Transition::Failed,
                }
            }
        }
    }
}

/// Records an attempt whose sender has (or is getting) its answer, in the background: nobody
/// waits for the write. `role` is [`Role::Answered`] or [`Role::Copy`].
pub fn spawn(state: &AppState, id: DeliveryId, attempt: Attempt, role: Role) {
    let then = role.transition(attempt.status, &state.config.retry);
    let store = Arc::clone(&state.store);
    state
        .tracker
        .spawn(async move { save(store.as_ref(), id, attempt, then, true).await });
}

/// Records an attempt whose sender has (or is getting) its answer, from a task of its own.
/// `role` is [`Role::Answered`] or [`Role::Copy`].
pub async fn write(state: &AppState, id: DeliveryId, attempt: Attempt, role: Role) {
    let then = role.transition(attempt.status, &state.config.retry);
    save(state.store.as_ref(), id, attempt, then, true).await;
}

/// Writes `attempt` and its transition; a failure is logged, since nobody waits to be told.
/// `lazily` when the sender has its answer, so the store may let the record share a later
/// write's commit ([`Store::record_lazily`]).
async fn save(store: &dyn Store, id: DeliveryId, attempt: Attempt, then: Transition, lazily: bool) {
    let result = if lazily {
        store.record_lazily(id, attempt, then).await
    } else {
        store.record(id, attempt, then).await
    };
    if let Err(e) = result {
        warn!(delivery_id = %id, error = %e, "attempt not recorded");
    }
}

/// Records an attempt at an event of `channel` that is ours to retry, and what comes next: the
/// target accepted it (delivered), or it is retried on the schedule, or given up on. An attempt
/// cut short by the agent going away is retried as soon as an agent is back, without counting
/// against the schedule. Wakes the channel's queue when a retry is due.
pub async fn retryable(
    state: &AppState,
    channel: &ChannelId,
    id: DeliveryId,
    attempt: Attempt,
    failures: u32,
    agent_gone: bool,
) {
    let now = store::now_ms();
    let role = Role::Retryable {
        failures,
        agent_gone,
        now,
    };
    let then = role.transition(attempt.status, &state.config.retry);
    match then {
        Transition::Failed => {
            warn!(delivery_id = %id, failures, "delivery failed; no more retries");
        }
        Transition::Retry { at, failures } => info!(
            delivery_id = %id,
            failures,
            retry_in_ms = at - now,
            status = attempt.status,
            error = attempt.error.as_deref(),
            "delivery will be retried"
        ),
        Transition::Delivered | Transition::Keep => {}
    }
    save(state.store.as_ref(), id, attempt, then, false).await;
    if matches!(then, Transition::Retry { .. }) {
        state.dispatcher.kick(state, channel);
    }
}

/// Records a replay of the event `id`, now in `status`: the attempt as recorded (with its
/// number) and the status it leaves the event in.
pub async fn replayed(
    state: &AppState,
    id: DeliveryId,
    status: EventStatus,
    attempt: Attempt,
) -> Result<(Attempt, EventStatus), Error> {
    awaited(state, id, status, attempt, Role::Replayed).await
}

/// Records the attempt at `id`, the new event an edited replay stored (`delivering`). Nobody
/// retries it and the user who asked has its answer, so the attempt is its last word, as a
/// live attempt's is ([`Role::Answered`]): delivered, or failed (and replayable in turn).
pub async fn replayed_copy(
    state: &AppState,
    id: DeliveryId,
    attempt: Attempt,
) -> Result<(Attempt, EventStatus), Error> {
    awaited(state, id, EventStatus::Delivering, attempt, Role::Answered).await
}

/// Records the attempt at `id`, a webhook another node offered (see [`super::handover`])
/// whose sender waits there, and tells that node (`failure`: see [`Note::Answered`]), which
/// reads the record once told. Its answer is the sender's, as a live attempt's is
/// ([`Role::Answered`]), and lazily written as a live attempt's: like theirs, it guards
/// nothing if lost in a crash (the event is delivered again).
///
/// [`Note::Answered`]: crate::store::Note::Answered
pub async fn handed_over(
    state: &AppState,
    handover: &dyn Handover,
    id: DeliveryId,
    attempt: Attempt,
    failure: u16,
) -> Result<(), Error> {
    let then = Role::Answered.transition(attempt.status, &state.config.retry);
    handover.record_answer(id, attempt, then, failure).await?;
    Ok(())
}

/// Records an attempt at `id`, now in `status`, in `role`, and waits for the write: the
/// attempt with its number, and the status it leaves the event in.
async fn awaited(
    state: &AppState,
    id: DeliveryId,
    status: EventStatus,
    mut attempt: Attempt,
    role: Role,
) -> Result<(Attempt, EventStatus), Error> {
    let then = role.transition(attempt.status, &state.config.retry);
    let status = match then {
        Transition::Delivered => EventStatus::Delivered,
        Transition::Failed => EventStatus::Failed,
        Transition::Retry { .. } => EventStatus::Queued,
        Transition::Keep => status,
    };
    attempt.n = state.store.record(id, attempt.clone(), then).await?.n;
    Ok((attempt, status))
}

/// Stores a webhook that failed its signature check as `rejected`, with the relay's 401 as
/// its only attempt, so the history shows what came and why it went no further.
pub async fn rejected(
    state: &AppState,
    mut event: NewEvent,
    why: &VerifyError,
) -> Result<(), Error> {
    let id = event.id;
    event.status = EventStatus::Rejected;
    let received_at = event.received_at;
    state.store.insert(event).await?;
    let attempt = Attempt {
        n: 0,
        kind: AttemptKind::Live,
        started_at: received_at,
        duration_ms: 0,
        agent: None,
        status: Some(axum::http::StatusCode::UNAUTHORIZED.as_u16()),
        headers: Vec::new(),
        body: bytes::Bytes::new(),
        error: Some(format!("not forwarded: signature check failed: {why}")),
    };
    state.store.record(id, attempt, Transition::Keep).await?;
    Ok(())
}

/// A random number in `[0, 1)` for retry jitter.
fn jitter() -> f64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_does_what_it_says_to_the_event() {
        let retry = RetryPolicy::default();
        let (ok, busy) = (Some(200), Some(503));
        assert_eq!(Role::Answered.transition(ok, &retry), Transition::Delivered);
        assert_eq!(Role::Answered.transition(busy, &retry), Transition::Failed);
        assert_eq!(Role::Answered.transition(None, &retry), Transition::Failed);
        assert_eq!(Role::Copy.transition(ok, &retry), Transition::Keep);
        assert_eq!(Role::Copy.transition(None, &retry), Transition::Keep);
        assert_eq!(Role::Replayed.transition(ok, &retry), Transition::Delivered);
        assert_eq!(Role::Replayed.transition(busy, &retry), Transition::Keep);
        let queued = |failures, agent_gone| Role::Retryable {
            failures,
            agent_gone,
            now: 1_000,
        };
        assert_eq!(
            queued(3, false).transition(ok, &retry),
            Transition::Delivered
        );
        assert_eq!(
            queued(3, true).transition(None, &retry),
            Transition::Retry {
                at: 1_000,
                failures: 3
            },
            "an agent leaving is retried at once, and not counted"
        );
        match queued(0, false).transition(busy, &retry) {
            Transition::Retry { at, failures: 1 } => {
                assert!((1_000 + 30_000..=1_000 + 60_000).contains(&at), "{at}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            queued(u32::MAX, false).transition(busy, &retry),
            Transition::Failed,
            "past the schedule"
        );
    }
}
