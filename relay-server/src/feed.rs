//! What happens to events, as it happens: every webhook stored and every attempt recorded,
//! broadcast to whoever listens (the live inspector, metrics).
//!
//! [`Observed`] wraps the store and publishes after each successful write, so nothing that
//! delivers webhooks needs to know the feed exists. With nobody subscribed, publishing costs
//! one atomic load.

use std::sync::Arc;

use protocol::{ChannelId, DeliveryId, Subscription};
use tokio::sync::broadcast;

use crate::channel::ChannelRecord;
use crate::store::{
    AgentLease, Attempt, AttemptKind, Event, EventStatus, EventSummary, Handover, ListQuery,
    Millis, NewEvent, Note, Recorded, Store, StoreError, Transition,
};

/// Changes a slow subscriber may fall behind by before it misses some (it is told how many).
const FEED_CAPACITY: usize = 1024;

/// One change to an event.
#[derive(Debug, Clone)]
pub enum Change {
    /// A webhook was stored (queued, delivering or rejected).
    Received(EventSummary),
    /// An attempt finished and was recorded; `status` is the event's status after it.
    Attempted {
        channel: ChannelId,
        id: DeliveryId,
        status: EventStatus,
        attempt: AttemptSummary,
    },
}

impl Change {
    pub fn channel(&self) -> &ChannelId {
        match self {
            Change::Received(summary) => &summary.channel,
            Change::Attempted { channel, .. } => channel,
        }
    }
}

/// An attempt without its response headers and body (fetch the event for those).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptSummary {
    pub n: u32,
    pub kind: AttemptKind,
    pub started_at: Millis,
    pub duration_ms: u64,
    pub agent: Option<String>,
    pub status: Option<u16>,
    pub error: Option<String>,
}

impl From<&Attempt> for AttemptSummary {
    fn from(a: &Attempt) -> Self {
        Self {
            n: a.n,
            kind: a.kind,
            started_at: a.started_at,
            duration_ms: a.duration_ms,
            agent: a.agent.clone(),
            status: a.status,
            error: a.error.clone(),
        }
    }
}

/// The broadcast of [`Change`]s.
#[derive(Debug)]
pub struct Feed {
    tx: broadcast::Sender<Change>,
}

impl Default for Feed {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(FEED_CAPACITY).0,
        }
    }
}

impl Feed {
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.tx.subscribe()
    }

    /// Publishes the change `make` builds, only if anyone listens.
    fn publish(&self, make: impl FnOnce() -> Change) {
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send(make());
        }
    }
}

/// Which of the inner store's records [`Observed::publish_attempt`] makes.
#[derive(Debug, Clone, Copy)]
enum How {
    Awaited,
    Lazily,
    /// [`Handover::record_answer`], with the failure to tell.
    Answering(u16),
}

/// A [`Store`] that publishes what it stores to a [`Feed`].
#[derive(Debug)]
pub struct Observed {
    inner: Arc<dyn Store>,
    feed: Arc<Feed>,
}

impl Observed {
    pub fn new(inner: Arc<dyn Store>, feed: Arc<Feed>) -> Self {
        Self { inner, feed }
    }

    /// Records through the inner store (`how`) and tells the feed's watchers.
    async fn publish_attempt(
        &self,
        id: DeliveryId,
        attempt: Attempt,
        then: Transition,
        how: How,
    ) -> Result<Recorded, StoreError> {
        let summary = (self.feed.tx.receiver_count() > 0).then(|| AttemptSummary::from(&attempt));
        let recorded = match how {
            How::Awaited => self.inner.record(id, attempt, then).await?,
            How::Lazily => self.inner.record_lazily(id, attempt, then).await?,
            How::Answering(failure) => {
                (self.handing()?)
                    .record_answer(id, attempt, then, failure)
                    .await?
            }
        };
        if let Some(mut attempt) = summary {
            attempt.n = recorded.n;
            self.feed.publish(|| Change::Attempted {
                channel: recorded.channel.clone(),
                id,
                status: recorded.status,
                attempt,
            });
        }
        Ok(recorded)
    }
}

impl Observed {
    /// `event`'s summary, when someone is watching, for [`Change::Received`] once it is
    /// stored.
    fn received(&self, event: &NewEvent) -> Option<EventSummary> {
        (self.feed.tx.receiver_count() > 0).then(|| EventSummary {
            id: event.id,
            channel: event.channel.clone(),
            received_at: event.received_at,
            method: event.method.clone(),
            path: event.path.clone(),
            query: event.query.clone(),
            status: event.status,
            attempts: 0,
            failures: 0,
            response_status: None,
            body_len: event.body.len() as u64,
            next_attempt_at: None,
            event_type: event.event_type.clone(),
            replay_of: event.replay_of,
        })
    }

    /// Publishes `summary` (see [`Observed::received`]) now that its event is stored.
    fn stored(&self, summary: Option<EventSummary>) {
        if let Some(summary) = summary {
            self.feed.publish(|| Change::Received(summary));
        }
    }

    /// The inner store's handover; only asked for when [`Store::handover`] said it has one.
    fn handing(&self) -> Result<&dyn Handover, StoreError> {
        (self.inner.handover()).ok_or_else(|| StoreError::Backend("no handover here".to_owned()))
    }
}

#[async_trait::async_trait]
impl Handover for Observed {
    async fn offer(&self, event: NewEvent) -> Result<(), StoreError> {
        let summary = self.received(&event);
        self.handing()?.offer(event).await?;
        self.stored(summary);
        Ok(())
    }

    async fn take(&self, channel: &ChannelId, id: DeliveryId) -> Result<Option<Event>, StoreError> {
        self.handing()?.take(channel, id).await
    }

    async fn withdraw(&self, id: DeliveryId) -> Result<bool, StoreError> {
        self.handing()?.withdraw(id).await
    }

    async fn record_answer(
        &self,
        id: DeliveryId,
        attempt: Attempt,
        then: Transition,
        failure: u16,
    ) -> Result<Recorded, StoreError> {
        (self.publish_attempt(id, attempt, then, How::Answering(failure))).await
    }

    async fn answer(
        &self,
        channel: &ChannelId,
        id: DeliveryId,
    ) -> Result<Option<Attempt>, StoreError> {
        self.handing()?.answer(channel, id).await
    }

    fn notes(&self) -> broadcast::Receiver<Note> {
        match self.inner.handover() {
            Some(handover) => handover.notes(),
            // Never asked for (see `handing`): a receiver that hears nothing.
            None => broadcast::channel(1).1,
        }
    }
}

#[async_trait::async_trait]
impl Store for Observed {
    async fn insert(&self, event: NewEvent) -> Result<(), StoreError> {
        let summary = self.received(&event);
        self.inner.insert(event).await?;
        self.stored(summary);
        Ok(())
    }

    async fn record(
        &self,
        id: DeliveryId,
        attempt: Attempt,
        then: Transition,
    ) -> Result<Recorded, StoreError> {
        self.publish_attempt(id, attempt, then, How::Awaited).await
    }

    async fn record_lazily(
        &self,
        id: DeliveryId,
        attempt: Attempt,
        then: Transition,
    ) -> Result<Recorded, StoreError> {
        self.publish_attempt(id, attempt, then, How::Lazily).await
    }

    async fn begin(&self, id: DeliveryId) -> Result<bool, StoreError> {
        self.inner.begin(id).await
    }

    async fn due(
        &self,
        channel: &ChannelId,
        takes: &Subscription,
        now: Millis,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        self.inner.due(channel, takes, now, limit).await
    }

    async fn next_due(
        &self,
        channel: &ChannelId,
        takes: &Subscription,
    ) -> Result<Option<Millis>, StoreError> {
        self.inner.next_due(channel, takes).await
    }

    async fn list(
        &self,
        channel: &ChannelId,
        query: &ListQuery,
    ) -> Result<Vec<EventSummary>, StoreError> {
        self.inner.list(channel, query).await
    }

    async fn get(&self, channel: &ChannelId, id: DeliveryId) -> Result<Option<Event>, StoreError> {
        self.inner.get(channel, id).await
    }

    async fn count(
        &self,
        channel: &ChannelId,
        status: Option<EventStatus>,
    ) -> Result<u64, StoreError> {
        self.inner.count(channel, status).await
    }

    async fn prune(&self, cutoff: Millis, cap: u64) -> Result<u64, StoreError> {
        self.inner.prune(cutoff, cap).await
    }

    async fn create_channel(&self, record: ChannelRecord) -> Result<(), StoreError> {
        self.inner.create_channel(record).await
    }

    async fn update_channel(&self, record: ChannelRecord) -> Result<(), StoreError> {
        self.inner.update_channel(record).await
    }

    async fn delete_channel(&self, name: &ChannelId) -> Result<bool, StoreError> {
        self.inner.delete_channel(name).await
    }

    async fn channels(&self) -> Result<(u64, Vec<ChannelRecord>), StoreError> {
        self.inner.channels().await
    }

    async fn channels_version(&self) -> Result<u64, StoreError> {
        self.inner.channels_version().await
    }

    async fn ready(&self) -> Result<(), StoreError> {
        self.inner.ready().await
    }

    async fn queue_depths(&self) -> Result<Vec<(ChannelId, u64)>, StoreError> {
        self.inner.queue_depths().await
    }

    fn handover(&self) -> Option<&dyn Handover> {
        self.inner.handover().map(|_| self as &dyn Handover)
    }

    async fn drain_turn(&self, channel: &ChannelId, until: Millis) -> Result<bool, StoreError> {
        self.inner.drain_turn(channel, until).await
    }

    async fn drain_done(&self, channel: &ChannelId) -> Result<(), StoreError> {
        self.inner.drain_done(channel).await
    }

    fn shares_agents(&self) -> bool {
        self.inner.shares_agents()
    }

    async fn renew_leases(
        &self,
        node: &str,
        agents: Vec<AgentLease>,
        until: Millis,
    ) -> Result<Vec<ChannelId>, StoreError> {
        self.inner.renew_leases(node, agents, until).await
    }

    async fn leased_agents(
        &self,
        channel: &ChannelId,
        now: Millis,
    ) -> Result<Vec<AgentLease>, StoreError> {
        self.inner.leased_agents(channel, now).await
    }

    async fn agents_elsewhere(
        &self,
        node: &str,
        now: Millis,
    ) -> Result<Vec<AgentLease>, StoreError> {
        self.inner.agents_elsewhere(node, now).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use bytes::Bytes;

    #[tokio::test]
    async fn stored_events_and_recorded_attempts_are_published() {
        let feed = Arc::new(Feed::default());
        let store = Observed::new(Arc::new(MemoryStore::new()), Arc::clone(&feed));
        let channel = ChannelId::parse("watched").expect("valid");
        // Nobody listens yet: nothing is built or sent.
        let unseen = new_event(&channel);
        store.insert(unseen).await.expect("insert");

        let mut rx = feed.subscribe();
        let event = new_event(&channel);
        let id = event.id;
        store.insert(event).await.expect("insert");
        let Ok(Change::Received(summary)) = rx.try_recv() else {
            panic!("a received change first");
        };
        assert_eq!((summary.id, summary.body_len), (id, 3));
        let attempt = Attempt {
            n: 0,
            kind: AttemptKind::Queued,
            started_at: 5,
            duration_ms: 7,
            agent: Some("a1".to_owned()),
            status: Some(200),
            headers: Vec::new(),
            body: Bytes::new(),
            error: None,
        };
        store
            .record(id, attempt, Transition::Delivered)
            .await
            .expect("record");
        let Ok(Change::Attempted {
            channel: seen,
            status,
            attempt,
            ..
        }) = rx.try_recv()
        else {
            panic!("then the attempt");
        };
        assert_eq!(seen, channel);
        assert_eq!(status, EventStatus::Delivered);
        assert_eq!(
            (attempt.n, attempt.status, attempt.duration_ms),
            (1, Some(200), 7)
        );
        assert!(rx.try_recv().is_err(), "nothing else");
    }

    fn new_event(channel: &ChannelId) -> NewEvent {
        NewEvent {
            id: DeliveryId::random(),
            channel: channel.clone(),
            received_at: 1,
            source: None,
            method: "POST".to_owned(),
            path: "/x".to_owned(),
            query: None,
            headers: Vec::new(),
            body: Bytes::from_static(b"abc"),
            status: EventStatus::Queued,
            event_type: Some("push".to_owned()),
            replay_of: None,
        }
    }
}
