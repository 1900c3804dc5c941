//! The delivery engine: what happens to a webhook from the moment it is let in to the moment
//! its target has taken it (or it has been given up on). No HTTP here beyond the body that
//! streams back to the sender; the routes translate requests into this module's terms and its
//! [`Answer`] into a response.
//!
//! The words, used for one thing each: a *webhook* is what a sender sent; an *event* is a
//! webhook as stored; its *delivery* is its way to the target, under one id
//! (`X-Hookrelay-Delivery`), made of *attempts*, each one try through one agent, of one kind
//! (`live`, `queued` or `replay`). To *deliver* is to make those attempts.
//!
//! - [`accept`]: the checks, the store, and the choice of agents: live now, or queued.
//! - [`live`]: one agent, or every agent of a fanout channel, while the sender waits.
//! - [`handover`]: a webhook whose agent is on another node sharing the store.
//! - [`dispatch`]: the queue of each channel, retries on their schedule, and replays.
//! - [`attempt`]: one attempt, the same for every kind, its kind fixed when it begins.
//! - [`record`]: what an attempt's outcome does to its event, for every kind alike.

pub mod accept;
pub mod attempt;
pub mod dispatch;
pub mod handover;
pub mod live;
pub mod record;

/// What the sender of a webhook gets, as the engine decides it.
#[derive(Debug)]
pub enum Answer {
    /// The target's own answer, its body streaming from the agent.
    Target(attempt::Reply),
    /// No agent could take it now: stored, to be delivered from the queue. `offline` when the
    /// sender should hear that no agent is connected (`--offline-status 503`).
    Queued { offline: bool },
    /// `--ack-after` passed before the target answered: the delivery goes on, and the event
    /// is ours to retry.
    Pending,
    /// Agents are connected, and none takes the webhook's event type: stored as `unrouted`.
    Unrouted,
}
