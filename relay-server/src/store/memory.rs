//! The in-memory [`Store`] backend (`--store memory`): the same semantics as the SQLite one,
//! nothing survives a restart.
//!
//! It is the "store off" baseline of the benchmarks, so it stays cheap: one `std` mutex around
//! plain maps, held for a few map operations and never across an await.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

use protocol::{ChannelId, DeliveryId, Subscription};

use crate::channel::ChannelRecord;

use super::{
    Attempt, Event, EventStatus, EventSummary, ListQuery, MAX_RECORDED_BODY, Millis, NewEvent,
    Quota, Recorded, Room, Store, StoreError, Transition, Usage, finished, stored_size,
};

/// The in-memory [`Store`].
#[derive(Debug)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    quota: Quota,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::with_quota(Quota::UNLIMITED)
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// Arrival order across all channels, as SQLite's `seq`.
    next_seq: u64,
    events: HashMap<DeliveryId, Entry>,
    channels: HashMap<ChannelId, Channel>,
    /// Registered channels, and how many times they changed.
    registered: BTreeMap<ChannelId, ChannelRecord>,
    channels_version: u64,
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    /// Its [`stored_size`].
    size: u64,
    event: Event,
}

#[derive(Debug, Default)]
struct Channel {
    /// Every event of the channel by `seq`.
    events: BTreeMap<u64, DeliveryId>,
    /// The `seq` of its queued events, so the dispatcher's polls do not walk the history.
    queued: BTreeSet<u64>,
    usage: Usage,
}

impl Channel {
    /// Deletes the events `seqs` of this channel.
    fn delete(&mut self, events: &mut HashMap<DeliveryId, Entry>, seqs: &[u64]) {
        for seq in seqs {
            if let Some(id) = self.events.remove(seq) {
                self.queued.remove(seq);
                if let Some(entry) = events.remove(&id) {
                    self.usage.remove(entry.event.summary.status, entry.size);
                }
            }
        }
    }

    /// Deletes what `room` says must go, oldest first.
    fn make_room(&mut self, events: &mut HashMap<DeliveryId, Entry>, room: Room) {
        let mut doomed = Vec::new();
        let (mut freed, mut rejected_left) = (0, room.drop_rejected);
        for (seq, id) in &self.events {
            if rejected_left == 0 {
                break;
            }
            let entry = &events[id];
            if entry.event.summary.status == EventStatus::Rejected {
                doomed.push(*seq);
                freed += entry.size;
                rejected_left -= 1;
            }
        }
        for (seq, id) in &self.events {
            if freed >= room.free_bytes {
                break;
            }
            let entry = &events[id];
            if finished(entry.event.summary.status) && !doomed.contains(seq) {
                doomed.push(*seq);
                freed += entry.size;
            }
        }
        self.delete(events, &doomed);
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store that holds each channel to `quota`.
    pub fn with_quota(quota: Quota) -> Self {
        Self {
            inner: Mutex::default(),
            quota,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Only a broken invariant of this module (an index naming a missing event) can panic
        // while the lock is held; going on with the data then beats failing every later call.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn insert(&self, new: NewEvent) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if inner.events.contains_key(&new.id) {
            return Err(StoreError::Backend(format!(
                "duplicate event id {}",
                new.id
            )));
        }
        let Inner {
            events,
            channels,
            next_seq,
            ..
        } = &mut *inner;
        let size = stored_size(&new.headers, &new.body);
        let channel = channels.entry(new.channel.clone()).or_default();
        let room = self
            .quota
            .room(&new.channel, &channel.usage, new.status, size)?;
        channel.make_room(events, room);
        *next_seq += 1;
        let seq = *next_seq;
        let queued = new.status == EventStatus::Queued;
        channel.events.insert(seq, new.id);
        channel.usage.add(new.status, size);
        if queued {
            channel.queued.insert(seq);
        }
        let summary = EventSummary {
            id: new.id,
            channel: new.channel,
            received_at: new.received_at,
            method: new.method,
            path: new.path,
            query: new.query,
            status: new.status,
            attempts: 0,
            failures: 0,
            response_status: None,
            body_len: new.body.len() as u64,
            next_attempt_at: queued.then_some(new.received_at),
            event_type: new.event_type,
            replay_of: new.replay_of,
        };
        let event = Event {
            summary,
            source: new.source,
            headers: new.headers,
            body: new.body,
            attempts: Vec::new(),
        };
        events.insert(new.id, Entry { seq, size, event });
        Ok(())
    }

    async fn begin(&self, id: DeliveryId) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let Inner {
            events, channels, ..
        } = &mut *inner;
        let Some(entry) = events.get_mut(&id) else {
            return Ok(false);
        };
        let summary = &mut entry.event.summary;
        if summary.status != EventStatus::Queued {
            return Ok(false);
        }
        summary.status = EventStatus::Delivering;
        if let Some(channel) = channels.get_mut(&summary.channel) {
            channel.queued.remove(&entry.seq);
        }
        Ok(true)
    }

    async fn record(
        &self,
        id: DeliveryId,
        mut attempt: Attempt,
        then: Transition,
    ) -> Result<Recorded, StoreError> {
        attempt.body.truncate(MAX_RECORDED_BODY);
        let mut inner = self.lock();
        let Inner {
            events, channels, ..
        } = &mut *inner;
        let entry = events.get_mut(&id).ok_or(StoreError::UnknownEvent(id))?;
        let summary = &mut entry.event.summary;
        let was = summary.status;
        summary.attempts = summary.attempts.saturating_add(1);
        attempt.n = summary.attempts;
        if attempt.status.is_some() {
            summary.response_status = attempt.status;
        }
        match then {
            Transition::Delivered => finish(summary, EventStatus::Delivered),
            Transition::Failed => finish(summary, EventStatus::Failed),
            Transition::Retry { at, failures } => {
                summary.status = EventStatus::Queued;
                summary.next_attempt_at = Some(at);
                summary.failures = failures;
            }
            Transition::Keep => {}
        }
        let queued = summary.status == EventStatus::Queued;
        let channel = channels
            .get_mut(&summary.channel)
            .expect("every stored event is indexed under its channel");
        channel.usage.moved(was, summary.status, entry.size);
        if queued {
            channel.queued.insert(entry.seq);
        } else {
            channel.queued.remove(&entry.seq);
        }
        let recorded = Recorded {
            n: attempt.n,
            channel: summary.channel.clone(),
            status: summary.status,
        };
        entry.event.attempts.push(attempt);
        Ok(recorded)
    }

    async fn due(
        &self,
        channel: &ChannelId,
        takes: &Subscription,
        now: Millis,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let inner = self.lock();
        let Some(events) = inner.channels.get(channel) else {
            return Ok(Vec::new());
        };
        Ok(events
            .queued
            .iter()
            .map(|seq| inner.event(events, *seq))
            .filter(|event| event.summary.next_attempt_at.is_some_and(|at| at <= now))
            .filter(|event| takes.takes(event.summary.event_type.as_deref()))
            .take(limit)
            .map(|event| Event {
                attempts: Vec::new(),
                ..event.clone()
            })
            .collect())
    }

    async fn next_due(
        &self,
        channel: &ChannelId,
        takes: &Subscription,
    ) -> Result<Option<Millis>, StoreError> {
        let inner = self.lock();
        let Some(events) = inner.channels.get(channel) else {
            return Ok(None);
        };
        Ok(events
            .queued
            .iter()
            .map(|seq| &inner.event(events, *seq).summary)
            .filter(|summary| takes.takes(summary.event_type.as_deref()))
            .filter_map(|summary| summary.next_attempt_at)
            .min())
    }

    async fn list(
        &self,
        channel: &ChannelId,
        query: &ListQuery,
    ) -> Result<Vec<EventSummary>, StoreError> {
        let inner = self.lock();
        let before = match query.before {
            None => u64::MAX,
            Some(id) => match inner.events.get(&id) {
                Some(entry) if entry.event.summary.channel == *channel => entry.seq,
                _ => return Err(StoreError::UnknownEvent(id)),
            },
        };
        let Some(events) = inner.channels.get(channel) else {
            return Ok(Vec::new());
        };
        Ok(events
            .events
            .range(..before)
            .rev()
            .map(|(seq, _)| &inner.event(events, *seq).summary)
            .filter(|summary| query.status.is_none_or(|status| summary.status == status))
            .filter(|summary| {
                (query.event_type.as_ref()).is_none_or(|pattern| {
                    summary
                        .event_type
                        .as_deref()
                        .is_some_and(|t| pattern.matches(t))
                })
            })
            .take(query.limit)
            .cloned()
            .collect())
    }

    async fn get(&self, channel: &ChannelId, id: DeliveryId) -> Result<Option<Event>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .events
            .get(&id)
            .filter(|entry| entry.event.summary.channel == *channel)
            .map(|entry| entry.event.clone()))
    }

    async fn count(
        &self,
        channel: &ChannelId,
        status: Option<EventStatus>,
    ) -> Result<u64, StoreError> {
        let inner = self.lock();
        let Some(events) = inner.channels.get(channel) else {
            return Ok(0);
        };
        let n = match status {
            None => events.events.len(),
            Some(EventStatus::Queued) => events.queued.len(),
            Some(status) => events
                .events
                .keys()
                .filter(|seq| inner.event(events, **seq).summary.status == status)
                .count(),
        };
        Ok(n as u64)
    }

    async fn prune(&self, cutoff: Millis, cap: u64) -> Result<u64, StoreError> {
        let mut inner = self.lock();
        let Inner {
            events, channels, ..
        } = &mut *inner;
        let before = events.len();
        let cap = usize::try_from(cap).unwrap_or(usize::MAX);
        channels.retain(|_, channel| {
            // Age first, then the cap over what is left, as the SQLite backend does.
            let mut doomed: Vec<u64> = channel
                .events
                .iter()
                .filter(|(_, id)| events[id].event.summary.received_at < cutoff)
                .map(|(seq, _)| *seq)
                .collect();
            let kept_by_age = channel.events.len() - doomed.len();
            if kept_by_age > cap {
                let beyond_cap: Vec<u64> = channel
                    .events
                    .iter()
                    .filter(|(seq, _)| doomed.binary_search(seq).is_err())
                    .take(kept_by_age - cap)
                    .filter(|(_, id)| finished(events[id].event.summary.status))
                    .map(|(seq, _)| *seq)
                    .collect();
                doomed.extend(beyond_cap);
            }
            channel.delete(events, &doomed);
            !channel.events.is_empty()
        });
        Ok((before - events.len()) as u64)
    }

    async fn create_channel(&self, record: ChannelRecord) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if inner.registered.contains_key(&record.name) {
            return Err(StoreError::ChannelExists(record.name));
        }
        inner.registered.insert(record.name.clone(), record);
        inner.channels_version += 1;
        Ok(())
    }

    async fn update_channel(&self, record: ChannelRecord) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let Some(stored) = inner.registered.get_mut(&record.name) else {
            return Err(StoreError::UnknownChannel(record.name));
        };
        *stored = ChannelRecord {
            created_at: stored.created_at,
            ..record
        };
        inner.channels_version += 1;
        Ok(())
    }

    async fn delete_channel(&self, name: &ChannelId) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let existed = inner.registered.remove(name).is_some();
        if existed {
            inner.channels_version += 1;
        }
        Ok(existed)
    }

    async fn channels(&self) -> Result<(u64, Vec<ChannelRecord>), StoreError> {
        let inner = self.lock();
        let records = inner.registered.values().cloned().collect();
        Ok((inner.channels_version, records))
    }

    async fn channels_version(&self) -> Result<u64, StoreError> {
        Ok(self.lock().channels_version)
    }

    async fn ready(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn queue_depths(&self) -> Result<Vec<(ChannelId, u64)>, StoreError> {
        let inner = self.lock();
        let mut depths: Vec<(ChannelId, u64)> = inner
            .channels
            .iter()
            .filter(|(_, channel)| !channel.queued.is_empty())
            .map(|(name, channel)| (name.clone(), channel.queued.len() as u64))
            .collect();
        depths.sort();
        Ok(depths)
    }
}

impl Inner {
    fn event(&self, channel: &Channel, seq: u64) -> &Event {
        let id = &channel.events[&seq];
        &self.events[id].event
    }
}

fn finish(summary: &mut EventSummary, status: EventStatus) {
    summary.status = status;
    summary.next_attempt_at = None;
}
