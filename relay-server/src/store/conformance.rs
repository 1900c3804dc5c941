//! The behaviour every [`Store`] backend promises, checked against each of them.
//!
//! Each check is an `async fn(&dyn Store)`; [`conformance!`] turns it into one test per
//! backend, so a new backend gets the whole suite by adding one arm. The PostgreSQL arm runs
//! each check on a fresh database of one throwaway cluster per test binary (see
//! `e2e/src/postgres.rs`), and fails, not skips, where PostgreSQL is not installed.

use bytes::Bytes;
use protocol::{ChannelId, DeliveryId, Headers, Subscription, TypePattern};

use crate::channel::{ChannelRecord, ChannelSettings, Mode, TokenHash};

use super::{
    Attempt, AttemptKind, EventStatus, Full, ListQuery, Millis, NewEvent, Quota, Store, StoreError,
    Transition, stored_size,
};

macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $check() {
                    super::$check(&crate::store::MemoryStore::new()).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test]
                async fn $check() {
                    let dir = tempfile::tempdir().expect("create temp dir");
                    let store = crate::store::SqliteStore::open(dir.path(), false)
                        .expect("open store in a fresh temp dir");
                    super::$check(&store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $check() {
                    let store = super::open_postgres(crate::store::Quota::UNLIMITED).await;
                    super::$check(&store).await;
                }
            )*
        }
    };
}

conformance!(
    insert_then_get_round_trips_bytes_exactly,
    get_is_scoped_to_the_channel,
    record_applies_each_transition,
    attempts_are_numbered_from_one_in_order,
    record_on_unknown_event_is_an_error,
    due_returns_due_queued_events_in_arrival_order,
    next_due_is_the_earliest_queued_attempt,
    list_pages_newest_first,
    list_with_unknown_cursor_is_an_error,
    count_by_status,
    prune_deletes_events_older_than_cutoff,
    prune_cap_keeps_newest_and_queued_events,
    duplicate_id_is_rejected,
    begin_marks_a_queued_event_delivering_until_its_outcome,
    channels_are_created_updated_and_deleted,
    every_channel_change_moves_the_version,
    queue_depths_count_queued_events_per_channel,
    event_types_filter_the_queue_and_the_history,
);

/// Bytes [`new_event`] counts against a quota, and how many of them are its headers.
const EVENT_SIZE: u64 = 1108;
const HEADERS_SIZE: usize = 108;

/// The quota of the quota checks: four undelivered events, six events' bytes, two rejected.
const TEST_QUOTA: Quota = Quota {
    max_undelivered: 4,
    max_bytes: 6 * EVENT_SIZE,
    max_rejected: 2,
};

/// [`conformance!`] for checks that need each backend opened with [`TEST_QUOTA`].
macro_rules! quota_conformance {
    ($($check:ident),* $(,)?) => {
        mod memory_quota {
            $(
                #[tokio::test]
                async fn $check() {
                    let store = crate::store::MemoryStore::with_quota(super::TEST_QUOTA);
                    super::$check(&store).await;
                }
            )*
        }
        mod sqlite_quota {
            $(
                #[tokio::test]
                async fn $check() {
                    let dir = tempfile::tempdir().expect("create temp dir");
                    let store =
                        crate::store::SqliteStore::open_with_quota(dir.path(), false, super::TEST_QUOTA)
                            .expect("open store in a fresh temp dir");
                    super::$check(&store).await;
                }
            )*
        }
        mod postgres_quota {
            $(
                #[tokio::test]
                async fn $check() {
                    let store = super::open_postgres(super::TEST_QUOTA).await;
                    super::$check(&store).await;
                }
            )*
        }
    };
}

quota_conformance!(
    undelivered_events_past_the_quota_are_refused_until_some_are_done,
    the_oldest_finished_events_make_room_and_undelivered_ones_never_go,
    rejected_events_past_their_cap_drop_the_oldest,
);

/// A PostgreSQL store on a fresh database of the test cluster (started on first use).
async fn open_postgres(quota: Quota) -> super::PostgresStore {
    let url = super::postgres::cluster::database()
        .parse()
        .expect("the test cluster's URL is valid");
    super::PostgresStore::open(&url, quota)
        .await
        .expect("open the store on a fresh database")
}

pub(super) fn channel(name: &str) -> ChannelId {
    ChannelId::parse(name).expect("valid channel name")
}

/// Every byte value, so an encoding that is not byte-exact shows.
pub(super) fn binary_body() -> Bytes {
    (0..=255u8).cycle().take(1000).collect()
}

pub(super) fn binary_headers() -> Headers {
    vec![
        (
            "content-type".to_owned(),
            Bytes::from_static(b"application/json"),
        ),
        ("x-dup".to_owned(), Bytes::from_static(b"first")),
        ("x-dup".to_owned(), Bytes::from_static(b"second")),
        ("x-bin".to_owned(), Bytes::from_static(b"\x00\xff\x80 raw")),
        ("x-empty".to_owned(), Bytes::new()),
    ]
}

pub(super) fn new_event(channel: &ChannelId, received_at: Millis, status: EventStatus) -> NewEvent {
    NewEvent {
        id: DeliveryId::random(),
        channel: channel.clone(),
        received_at,
        source: Some("203.0.113.9:4711".to_owned()),
        method: "POST".to_owned(),
        path: "/github/%7Bhook%7D".to_owned(),
        query: Some("a=1&a=2".to_owned()),
        headers: binary_headers(),
        body: binary_body(),
        status,
        event_type: Some("push".to_owned()),
        replay_of: None,
    }
}

pub(super) fn attempt(status: Option<u16>) -> Attempt {
    Attempt {
        n: 99,
        kind: AttemptKind::Queued,
        started_at: 5_000,
        duration_ms: 42,
        agent: Some("agent-1".to_owned()),
        status,
        headers: vec![("x-resp".to_owned(), Bytes::from_static(b"\x01\x02"))],
        body: Bytes::from_static(b"{\"ok\":true}"),
        error: status
            .is_none()
            .then(|| "target refused the connection".to_owned()),
    }
}

/// Inserts `event` and returns its id.
async fn put(store: &dyn Store, event: NewEvent) -> DeliveryId {
    let id = event.id;
    store.insert(event).await.expect("insert");
    id
}

async fn status_of(store: &dyn Store, ch: &ChannelId, id: DeliveryId) -> EventStatus {
    let event = store.get(ch, id).await.expect("get").expect("event exists");
    event.summary.status
}

async fn insert_then_get_round_trips_bytes_exactly(store: &dyn Store) {
    let ch = channel("round-trip");
    let sent = new_event(&ch, 1_000, EventStatus::Delivering);
    store.insert(sent.clone()).await.expect("insert");

    let got = store.get(&ch, sent.id).await.expect("get").expect("stored");
    assert_eq!(got.headers, sent.headers);
    assert_eq!(got.body, sent.body);
    assert_eq!(got.source, sent.source);
    assert!(got.attempts.is_empty());
    let s = got.summary;
    assert_eq!((s.id, &s.channel, s.received_at), (sent.id, &ch, 1_000));
    assert_eq!(
        (s.method.as_str(), s.path.as_str()),
        ("POST", "/github/%7Bhook%7D")
    );
    assert_eq!(s.query.as_deref(), Some("a=1&a=2"));
    assert_eq!(s.status, EventStatus::Delivering);
    assert_eq!((s.attempts, s.failures, s.response_status), (0, 0, None));
    assert_eq!(s.body_len, 1000);
    assert_eq!(
        s.next_attempt_at, None,
        "only queued events have a next attempt"
    );

    let empty = NewEvent {
        headers: Vec::new(),
        body: Bytes::new(),
        source: None,
        query: None,
        ..new_event(&ch, 1_001, EventStatus::Queued)
    };
    let id = put(store, empty).await;
    let got = store.get(&ch, id).await.expect("get").expect("stored");
    assert!(got.headers.is_empty() && got.body.is_empty());
    assert_eq!((got.source, got.summary.query), (None, None));
    assert_eq!(got.summary.next_attempt_at, Some(1_001));
}

async fn get_is_scoped_to_the_channel(store: &dyn Store) {
    let ch = channel("mine");
    let id = put(store, new_event(&ch, 1, EventStatus::Queued)).await;
    assert!(
        store
            .get(&channel("theirs"), id)
            .await
            .expect("get")
            .is_none()
    );
    let unknown = DeliveryId::random();
    assert!(store.get(&ch, unknown).await.expect("get").is_none());
}

async fn record_applies_each_transition(store: &dyn Store) {
    let ch = &channel("transitions");
    let [delivered, failed, retried, kept] = [0, 1, 2, 3].map(|_| DeliveryId::random());
    for (i, id) in [delivered, failed, retried, kept].into_iter().enumerate() {
        let at = 100 + i64::try_from(i).expect("small");
        store
            .insert(NewEvent {
                id,
                ..new_event(ch, at, EventStatus::Queued)
            })
            .await
            .expect("insert");
    }

    let record = |id, status, then| store.record(id, attempt(status), then);
    record(delivered, Some(204), Transition::Delivered)
        .await
        .expect("record");
    record(failed, Some(410), Transition::Failed)
        .await
        .expect("record");
    let retry = Transition::Retry {
        at: 9_000,
        failures: 2,
    };
    record(retried, Some(503), retry).await.expect("record");
    record(kept, None, Transition::Keep).await.expect("record");

    let summary = |id| async move {
        store
            .get(ch, id)
            .await
            .expect("get")
            .expect("stored")
            .summary
    };
    let s = summary(delivered).await;
    assert_eq!(
        (s.status, s.next_attempt_at),
        (EventStatus::Delivered, None)
    );
    assert_eq!((s.attempts, s.response_status), (1, Some(204)));
    let s = summary(failed).await;
    assert_eq!((s.status, s.next_attempt_at), (EventStatus::Failed, None));
    assert_eq!(s.response_status, Some(410));
    let s = summary(retried).await;
    assert_eq!(
        (s.status, s.next_attempt_at),
        (EventStatus::Queued, Some(9_000))
    );
    assert_eq!((s.failures, s.response_status), (2, Some(503)));
    let s = summary(kept).await;
    assert_eq!(s.status, EventStatus::Queued);
    assert_eq!(
        s.next_attempt_at,
        Some(103),
        "keep leaves the schedule alone"
    );
    assert_eq!((s.attempts, s.failures, s.response_status), (1, 0, None));

    // An attempt without a status keeps the last status that came back.
    record(delivered, None, Transition::Keep)
        .await
        .expect("record");
    let s = summary(delivered).await;
    assert_eq!(
        (s.status, s.attempts, s.response_status),
        (EventStatus::Delivered, 2, Some(204))
    );

    // A retry turns a live delivery into a queued one.
    let live = put(store, new_event(ch, 200, EventStatus::Delivering)).await;
    let retry = Transition::Retry {
        at: 300,
        failures: 1,
    };
    record(live, None, retry).await.expect("record");
    assert_eq!(status_of(store, ch, live).await, EventStatus::Queued);
    assert_eq!(
        store
            .next_due(ch, &Subscription::All)
            .await
            .expect("next_due"),
        Some(103)
    );
}

async fn attempts_are_numbered_from_one_in_order(store: &dyn Store) {
    let ch = channel("numbering");
    let id = put(store, new_event(&ch, 1, EventStatus::Queued)).await;
    let retry = Transition::Retry {
        at: 10,
        failures: 1,
    };
    let first = store
        .record(id, attempt(None), retry)
        .await
        .expect("record 1");
    let second = store
        .record(id, attempt(Some(500)), retry)
        .await
        .expect("record 2");
    let live = Attempt {
        kind: AttemptKind::Replay,
        ..attempt(Some(200))
    };
    let third = store
        .record(id, live, Transition::Delivered)
        .await
        .expect("record 3");
    assert_eq!(
        [first.n, second.n, third.n],
        [1, 2, 3],
        "record returns the number"
    );
    assert_eq!(first.channel, ch, "and the channel");
    assert_eq!(
        [first.status, third.status],
        [EventStatus::Queued, EventStatus::Delivered],
        "and the status it left"
    );

    let event = store.get(&ch, id).await.expect("get").expect("stored");
    let numbers: Vec<u32> = event.attempts.iter().map(|a| a.n).collect();
    assert_eq!(numbers, [1, 2, 3]);
    let statuses: Vec<_> = event.attempts.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [None, Some(500), Some(200)]);
    assert_eq!(event.attempts[2].kind, AttemptKind::Replay);
    let expected = Attempt {
        n: 1,
        ..attempt(None)
    };
    assert_eq!(event.attempts[0], expected, "every field round-trips");
    assert_eq!(event.summary.attempts, 3);
}

async fn record_on_unknown_event_is_an_error(store: &dyn Store) {
    let id = DeliveryId::random();
    let err = store
        .record(id, attempt(Some(200)), Transition::Delivered)
        .await
        .expect_err("no such event");
    assert!(
        matches!(err, StoreError::UnknownEvent(e) if e == id),
        "{err:?}"
    );
}

async fn due_returns_due_queued_events_in_arrival_order(store: &dyn Store) {
    let ch = channel("due");
    let first = put(store, new_event(&ch, 100, EventStatus::Queued)).await;
    put(store, new_event(&ch, 300, EventStatus::Queued)).await;
    let third = put(store, new_event(&ch, 200, EventStatus::Queued)).await;
    put(store, new_event(&ch, 50, EventStatus::Delivering)).await;
    put(store, new_event(&channel("other"), 10, EventStatus::Queued)).await;

    let due = store
        .due(&ch, &Subscription::All, 250, 10)
        .await
        .expect("due");
    let ids: Vec<_> = due.iter().map(|e| e.summary.id).collect();
    assert_eq!(ids, [first, third]);
    assert_eq!(due[0].headers, binary_headers());
    assert_eq!(due[0].body, binary_body());
    assert!(due[0].attempts.is_empty());

    let limited = store
        .due(&ch, &Subscription::All, 250, 1)
        .await
        .expect("due");
    assert_eq!(limited.len(), 1);
    assert_eq!(limited[0].summary.id, first);

    let later = Transition::Retry {
        at: 1_000,
        failures: 1,
    };
    store
        .record(first, attempt(Some(502)), later)
        .await
        .expect("record");
    let ids: Vec<_> = store
        .due(&ch, &Subscription::All, 250, 10)
        .await
        .expect("due")
        .iter()
        .map(|e| e.summary.id)
        .collect();
    assert_eq!(ids, [third]);
    assert_eq!(
        store
            .due(&ch, &Subscription::All, 1_000, 10)
            .await
            .expect("due")
            .len(),
        3
    );
    assert!(
        store
            .due(&channel("nobody"), &Subscription::All, 1_000, 10)
            .await
            .expect("due")
            .is_empty()
    );
}

async fn begin_marks_a_queued_event_delivering_until_its_outcome(store: &dyn Store) {
    let ch = channel("begin");
    let id = put(store, new_event(&ch, 100, EventStatus::Queued)).await;
    assert!(store.begin(id).await.expect("begin"), "the first claims it");
    assert!(!store.begin(id).await.expect("begin"), "a second does not");
    assert_eq!(status_of(store, &ch, id).await, EventStatus::Delivering);
    assert!(
        store
            .due(&ch, &Subscription::All, 1_000, 10)
            .await
            .expect("due")
            .is_empty()
    );
    let retry = Transition::Retry {
        at: 500,
        failures: 1,
    };
    store
        .record(id, attempt(Some(503)), retry)
        .await
        .expect("record");
    assert_eq!(status_of(store, &ch, id).await, EventStatus::Queued);
    assert_eq!(
        store
            .due(&ch, &Subscription::All, 1_000, 10)
            .await
            .expect("due")
            .len(),
        1
    );

    // An event in any other status is left alone, and an unknown one is no error.
    let live = put(store, new_event(&ch, 200, EventStatus::Delivering)).await;
    store
        .record(live, attempt(Some(200)), Transition::Delivered)
        .await
        .expect("record");
    assert!(
        !store.begin(live).await.expect("begin"),
        "not queued: no claim"
    );
    assert_eq!(status_of(store, &ch, live).await, EventStatus::Delivered);
    let unknown = store.begin(DeliveryId::random()).await;
    assert!(!unknown.expect("begin unknown"), "nothing to claim");
}

async fn next_due_is_the_earliest_queued_attempt(store: &dyn Store) {
    let ch = channel("next");
    assert_eq!(
        store
            .next_due(&ch, &Subscription::All)
            .await
            .expect("next_due"),
        None
    );
    put(store, new_event(&ch, 10, EventStatus::Delivering)).await;
    assert_eq!(
        store
            .next_due(&ch, &Subscription::All)
            .await
            .expect("next_due"),
        None
    );
    let a = put(store, new_event(&ch, 500, EventStatus::Queued)).await;
    let b = put(store, new_event(&ch, 400, EventStatus::Queued)).await;
    assert_eq!(
        store
            .next_due(&ch, &Subscription::All)
            .await
            .expect("next_due"),
        Some(400)
    );
    store
        .record(b, attempt(Some(200)), Transition::Delivered)
        .await
        .expect("record");
    assert_eq!(
        store
            .next_due(&ch, &Subscription::All)
            .await
            .expect("next_due"),
        Some(500)
    );
    store
        .record(a, attempt(Some(200)), Transition::Delivered)
        .await
        .expect("record");
    assert_eq!(
        store
            .next_due(&ch, &Subscription::All)
            .await
            .expect("next_due"),
        None
    );
}

async fn list_pages_newest_first(store: &dyn Store) {
    let ch = &channel("history");
    let mut ids = Vec::new();
    for t in 1..=5 {
        ids.push(put(store, new_event(ch, t, EventStatus::Queued)).await);
    }
    put(store, new_event(&channel("other"), 9, EventStatus::Queued)).await;
    store
        .record(ids[1], attempt(Some(200)), Transition::Delivered)
        .await
        .expect("record");
    store
        .record(ids[3], attempt(Some(200)), Transition::Delivered)
        .await
        .expect("record");

    let page = |limit, before, status| {
        let query = ListQuery {
            limit,
            before,
            status,
            event_type: None,
        };
        async move {
            let rows = store.list(ch, &query).await.expect("list");
            rows.iter().map(|s| s.id).collect::<Vec<_>>()
        }
    };
    assert_eq!(page(2, None, None).await, [ids[4], ids[3]]);
    assert_eq!(page(2, Some(ids[3]), None).await, [ids[2], ids[1]]);
    assert_eq!(page(2, Some(ids[1]), None).await, [ids[0]]);
    assert!(page(2, Some(ids[0]), None).await.is_empty());
    assert_eq!(page(100, None, None).await.len(), 5);
    let delivered = Some(EventStatus::Delivered);
    assert_eq!(page(10, None, delivered).await, [ids[3], ids[1]]);
    assert_eq!(page(10, Some(ids[3]), delivered).await, [ids[1]]);
    let queued = Some(EventStatus::Queued);
    assert_eq!(page(10, Some(ids[3]), queued).await, [ids[2], ids[0]]);

    let rows = store
        .list(
            ch,
            &ListQuery {
                limit: 1,
                ..ListQuery::default()
            },
        )
        .await
        .expect("list");
    let s = &rows[0];
    assert_eq!((s.received_at, s.body_len, s.attempts), (5, 1000, 0));
    assert_eq!(&s.channel, ch);
}

async fn list_with_unknown_cursor_is_an_error(store: &dyn Store) {
    let ch = channel("cursor");
    put(store, new_event(&ch, 1, EventStatus::Queued)).await;
    let elsewhere = put(
        store,
        new_event(&channel("elsewhere"), 1, EventStatus::Queued),
    )
    .await;
    for before in [DeliveryId::random(), elsewhere] {
        let query = ListQuery {
            limit: 10,
            before: Some(before),
            status: None,
            event_type: None,
        };
        let err = store.list(&ch, &query).await.expect_err("unknown cursor");
        assert!(
            matches!(err, StoreError::UnknownEvent(id) if id == before),
            "{err:?}"
        );
    }
}

async fn count_by_status(store: &dyn Store) {
    let ch = channel("count");
    assert_eq!(store.count(&ch, None).await.expect("count"), 0);
    let a = put(store, new_event(&ch, 1, EventStatus::Queued)).await;
    put(store, new_event(&ch, 2, EventStatus::Queued)).await;
    put(store, new_event(&ch, 3, EventStatus::Delivering)).await;
    put(store, new_event(&channel("other"), 3, EventStatus::Queued)).await;
    store
        .record(a, attempt(Some(404)), Transition::Failed)
        .await
        .expect("record");

    let count = |status| store.count(&ch, status);
    assert_eq!(count(None).await.expect("count"), 3);
    assert_eq!(count(Some(EventStatus::Queued)).await.expect("count"), 1);
    assert_eq!(
        count(Some(EventStatus::Delivering)).await.expect("count"),
        1
    );
    assert_eq!(count(Some(EventStatus::Failed)).await.expect("count"), 1);
    assert_eq!(count(Some(EventStatus::Delivered)).await.expect("count"), 0);
}

async fn prune_deletes_events_older_than_cutoff(store: &dyn Store) {
    let ch = channel("old");
    let old_queued = put(store, new_event(&ch, 100, EventStatus::Queued)).await;
    let old_done = put(store, new_event(&ch, 200, EventStatus::Queued)).await;
    store
        .record(old_done, attempt(Some(200)), Transition::Delivered)
        .await
        .expect("record");
    // Inserted in arrival order, as the server does: a backend may find old events by it.
    let other = put(
        store,
        new_event(&channel("other"), 150, EventStatus::Queued),
    )
    .await;
    let young = put(store, new_event(&ch, 300, EventStatus::Queued)).await;

    assert_eq!(store.prune(250, 1_000).await.expect("prune"), 3);
    for id in [old_queued, old_done] {
        assert!(store.get(&ch, id).await.expect("get").is_none());
    }
    assert!(
        store
            .get(&channel("other"), other)
            .await
            .expect("get")
            .is_none()
    );
    assert!(store.get(&ch, young).await.expect("get").is_some());
    let err = store
        .record(old_done, attempt(None), Transition::Keep)
        .await;
    assert!(matches!(err, Err(StoreError::UnknownEvent(_))), "{err:?}");
    assert_eq!(
        store
            .next_due(&ch, &Subscription::All)
            .await
            .expect("next_due"),
        Some(300)
    );
    assert_eq!(store.prune(250, 1_000).await.expect("prune"), 0);
}

async fn prune_cap_keeps_newest_and_queued_events(store: &dyn Store) {
    let ch = channel("capped");
    let then = [
        Some(Transition::Delivered),
        None,
        Some(Transition::Failed),
        Some(Transition::Delivered),
        Some(Transition::Delivered),
        Some(Transition::Failed),
    ];
    let mut ids = Vec::new();
    for (t, then) in (1..).zip(then) {
        let id = put(store, new_event(&ch, t, EventStatus::Queued)).await;
        if let Some(then) = then {
            store
                .record(id, attempt(Some(200)), then)
                .await
                .expect("record");
        }
        ids.push(id);
    }
    let small = channel("small");
    let lone = put(store, new_event(&small, 1, EventStatus::Queued)).await;
    store
        .record(lone, attempt(Some(200)), Transition::Delivered)
        .await
        .expect("record");

    // The newest 3 are ids 3..=5; of the older ones, the queued id 1 stays.
    assert_eq!(store.prune(0, 3).await.expect("prune"), 2);
    let left: Vec<_> = store
        .list(
            &ch,
            &ListQuery {
                limit: 10,
                ..ListQuery::default()
            },
        )
        .await
        .expect("list")
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(left, [ids[5], ids[4], ids[3], ids[1]]);
    assert!(store.get(&small, lone).await.expect("get").is_some());

    // A cap of 0 keeps only what is still waiting.
    assert_eq!(store.prune(0, 0).await.expect("prune"), 4);
    assert_eq!(store.count(&ch, None).await.expect("count"), 1);
    assert_eq!(status_of(store, &ch, ids[1]).await, EventStatus::Queued);
    assert_eq!(store.count(&small, None).await.expect("count"), 0);
}

async fn duplicate_id_is_rejected(store: &dyn Store) {
    let ch = channel("dup");
    let event = new_event(&ch, 1, EventStatus::Queued);
    store.insert(event.clone()).await.expect("first insert");
    let err = store.insert(event).await.expect_err("same id twice");
    assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
    assert_eq!(store.count(&ch, None).await.expect("count"), 1);
}

fn channel_record(name: &str, token: &str) -> ChannelRecord {
    ChannelRecord {
        name: channel(name),
        token_hash: TokenHash::of(token),
        created_at: 7,
        settings: ChannelSettings::default(),
    }
}

async fn channels_are_created_updated_and_deleted(store: &dyn Store) {
    let a = channel_record("team-a", "t1");
    store.create_channel(a.clone()).await.expect("create");
    let again = store
        .create_channel(channel_record("team-a", "other"))
        .await;
    assert!(
        matches!(again, Err(StoreError::ChannelExists(ref n)) if n.as_str() == "team-a"),
        "{again:?}"
    );
    store
        .create_channel(channel_record("b", "t2"))
        .await
        .expect("create b");

    let rotated = ChannelRecord {
        token_hash: TokenHash::of("t3"),
        created_at: 99,
        settings: ChannelSettings {
            mode: Mode::Fanout,
            rate_limit: "5/m".parse().ok(),
            allow_from: vec!["192.0.2.0/24".parse().expect("valid")],
            verify: Some(crate::verify::Verify::Github {
                secret: "s3cret".to_owned(),
            }),
            event_type: "json:/meta/kind".parse().ok(),
        },
        ..a.clone()
    };
    store.update_channel(rotated).await.expect("update");
    let (_, records) = store.channels().await.expect("channels");
    let names: Vec<&str> = records.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["b", "team-a"], "sorted by name");
    let team = &records[1];
    assert!(team.token_hash.matches("t3") && !team.token_hash.matches("t1"));
    assert_eq!(team.created_at, 7, "creation time stays");
    assert_eq!(team.settings.mode, Mode::Fanout);
    assert_eq!(team.settings.allow_from.len(), 1, "settings round-trip");
    assert_eq!(
        team.settings
            .verify
            .as_ref()
            .map(crate::verify::Verify::kind),
        Some("github")
    );

    let missing = store.update_channel(channel_record("nope", "t")).await;
    assert!(
        matches!(missing, Err(StoreError::UnknownChannel(_))),
        "{missing:?}"
    );
    assert!(store.delete_channel(&channel("b")).await.expect("delete"));
    assert!(!store.delete_channel(&channel("b")).await.expect("delete"));
    let (_, records) = store.channels().await.expect("channels");
    assert_eq!(records.len(), 1);
}

async fn every_channel_change_moves_the_version(store: &dyn Store) {
    let v0 = store.channels_version().await.expect("version");
    store
        .create_channel(channel_record("v", "t"))
        .await
        .expect("create");
    let v1 = store.channels_version().await.expect("version");
    store
        .update_channel(channel_record("v", "t2"))
        .await
        .expect("update");
    let v2 = store.channels_version().await.expect("version");
    store.delete_channel(&channel("v")).await.expect("delete");
    let v3 = store.channels_version().await.expect("version");
    assert!(v0 < v1 && v1 < v2 && v2 < v3, "{v0} {v1} {v2} {v3}");
    let (version, _) = store.channels().await.expect("channels");
    assert_eq!(version, v3);
    // A failed change is no change.
    let _ = store.update_channel(channel_record("v", "t3")).await;
    assert_eq!(store.channels_version().await.expect("version"), v3);
}

async fn queue_depths_count_queued_events_per_channel(store: &dyn Store) {
    store.ready().await.expect("a fresh store is ready");
    assert!(store.queue_depths().await.expect("depths").is_empty());
    let (a, b) = (channel("depth-a"), channel("depth-b"));
    for _ in 0..3 {
        put(store, new_event(&a, 1, EventStatus::Queued)).await;
    }
    put(store, new_event(&b, 1, EventStatus::Queued)).await;
    let delivered = put(store, new_event(&b, 1, EventStatus::Queued)).await;
    store
        .record(delivered, attempt(Some(200)), Transition::Delivered)
        .await
        .expect("record");
    put(store, new_event(&b, 1, EventStatus::Delivering)).await;
    assert_eq!(
        store.queue_depths().await.expect("depths"),
        [(a, 3), (b, 1)]
    );
}

fn is_full(result: Result<(), StoreError>, what: Full) -> bool {
    matches!(result, Err(StoreError::Full { what: w, limit, .. }) if w == what && limit > 0)
}

async fn undelivered_events_past_the_quota_are_refused_until_some_are_done(store: &dyn Store) {
    assert_eq!(
        stored_size(&binary_headers(), &binary_body()),
        EVENT_SIZE,
        "the quota below counts in events of this size"
    );
    let ch = channel("busy");
    let mut ids = Vec::new();
    for (t, status) in (1..).zip([
        EventStatus::Queued,
        EventStatus::Delivering,
        EventStatus::Queued,
        EventStatus::Queued,
    ]) {
        ids.push(put(store, new_event(&ch, t, status)).await);
    }
    let full = store.insert(new_event(&ch, 5, EventStatus::Queued)).await;
    assert!(is_full(full, Full::Undelivered), "four undelivered fill it");
    let err = store
        .insert(new_event(&ch, 5, EventStatus::Delivering))
        .await
        .expect_err("full");
    assert!(
        err.to_string()
            .contains("channel busy holds its quota of 4"),
        "{err}"
    );
    put(store, new_event(&channel("other"), 5, EventStatus::Queued)).await;
    put(store, new_event(&ch, 5, EventStatus::Rejected)).await;

    // A retry keeps an event undelivered; delivering or failing one frees its place.
    let retry = Transition::Retry { at: 9, failures: 1 };
    store
        .record(ids[0], attempt(None), retry)
        .await
        .expect("record");
    assert!(is_full(
        store.insert(new_event(&ch, 6, EventStatus::Queued)).await,
        Full::Undelivered
    ));
    store
        .record(ids[1], attempt(Some(200)), Transition::Delivered)
        .await
        .expect("record");
    put(store, new_event(&ch, 7, EventStatus::Queued)).await;
    store
        .record(ids[2], attempt(Some(500)), Transition::Failed)
        .await
        .expect("record");
    put(store, new_event(&ch, 8, EventStatus::Queued)).await;
    assert!(is_full(
        store.insert(new_event(&ch, 9, EventStatus::Queued)).await,
        Full::Undelivered
    ));
    // Pruning by age takes undelivered events too, and frees their places.
    // (The delivered ids[1] already went to make room for the seventh event's bytes.)
    assert!(store.get(&ch, ids[1]).await.expect("get").is_none());
    assert_eq!(store.prune(5, u64::MAX).await.expect("prune"), 3);
    put(store, new_event(&ch, 10, EventStatus::Queued)).await;
    put(store, new_event(&ch, 11, EventStatus::Queued)).await;
    assert!(is_full(
        store.insert(new_event(&ch, 12, EventStatus::Queued)).await,
        Full::Undelivered
    ));
}

async fn the_oldest_finished_events_make_room_and_undelivered_ones_never_go(store: &dyn Store) {
    let ch = channel("roomy");
    let mut ids = Vec::new();
    for t in 1..=6 {
        let id = put(store, new_event(&ch, t, EventStatus::Delivering)).await;
        let then = if t % 2 == 0 {
            Transition::Failed
        } else {
            Transition::Delivered
        };
        store
            .record(id, attempt(Some(200)), then)
            .await
            .expect("record");
        ids.push(id);
    }
    let queued = put(store, new_event(&ch, 7, EventStatus::Queued)).await;
    // Six events' bytes were full: the oldest finished one made room.
    assert!(store.get(&ch, ids[0]).await.expect("get").is_none());
    assert_eq!(store.count(&ch, None).await.expect("count"), 6);
    let mut big = new_event(&ch, 8, EventStatus::Queued);
    big.body = vec![7u8; 2 * EVENT_SIZE as usize - HEADERS_SIZE].into();
    put(store, big).await;
    // Two more events' bytes: the next oldest finished ones went, the queued one stayed.
    assert!(store.get(&ch, ids[1]).await.expect("get").is_none());
    assert!(store.get(&ch, ids[2]).await.expect("get").is_none());
    assert!(store.get(&ch, ids[3]).await.expect("get").is_some());
    assert_eq!(status_of(store, &ch, queued).await, EventStatus::Queued);
    // Undelivered bytes that would pass the quota are refused, whatever could be deleted.
    let mut huge = new_event(&ch, 9, EventStatus::Queued);
    huge.body = vec![7u8; 4 * EVENT_SIZE as usize].into();
    assert!(is_full(store.insert(huge).await, Full::Bytes));
    assert!(
        store.get(&ch, ids[3]).await.expect("get").is_some(),
        "nothing deleted in vain"
    );
}

async fn rejected_events_past_their_cap_drop_the_oldest(store: &dyn Store) {
    let ch = channel("forged");
    let kept = put(store, new_event(&ch, 1, EventStatus::Delivering)).await;
    let mut rejected = Vec::new();
    for t in 2..=5 {
        rejected.push(put(store, new_event(&ch, t, EventStatus::Rejected)).await);
    }
    assert_eq!(
        store
            .count(&ch, Some(EventStatus::Rejected))
            .await
            .expect("count"),
        2
    );
    for (id, left) in rejected.iter().zip([false, false, true, true]) {
        assert_eq!(store.get(&ch, *id).await.expect("get").is_some(), left);
    }
    assert!(store.get(&ch, kept).await.expect("get").is_some());
}

/// An event of type `event_type` (`None`: untyped) received at `at`.
fn typed(ch: &ChannelId, at: Millis, event_type: Option<&str>) -> NewEvent {
    NewEvent {
        event_type: event_type.map(str::to_owned),
        ..new_event(ch, at, EventStatus::Queued)
    }
}

async fn event_types_filter_the_queue_and_the_history(store: &dyn Store) {
    let ch = &channel("typed");
    let push = put(store, typed(ch, 10, Some("push"))).await;
    let review = put(store, typed(ch, 20, Some("pull_request_review"))).await;
    let untyped = put(store, typed(ch, 30, None)).await;
    let pr = put(store, typed(ch, 40, Some("pull_request"))).await;
    let edited = NewEvent {
        replay_of: Some(push),
        ..typed(ch, 50, Some("issues"))
    };
    let copy = put(store, edited).await;

    let got = store.get(ch, copy).await.expect("get").expect("stored");
    assert_eq!(got.summary.event_type.as_deref(), Some("issues"));
    assert_eq!(got.summary.replay_of, Some(push));
    let got = store.get(ch, untyped).await.expect("get").expect("stored");
    assert_eq!(
        (got.summary.event_type, got.summary.replay_of),
        (None, None)
    );

    let only = |items: &[&str]| Subscription::parse(items.iter().copied()).expect("valid");
    let due = |takes: Subscription| async move {
        let due = store.due(ch, &takes, 1_000, 10).await.expect("due");
        due.iter().map(|e| e.summary.id).collect::<Vec<_>>()
    };
    assert_eq!(
        due(Subscription::All).await,
        [push, review, untyped, pr, copy]
    );
    assert_eq!(due(only(&["pull_request*"])).await, [review, pr]);
    assert_eq!(due(only(&["pull_request", "push"])).await, [push, pr]);
    assert_eq!(
        due(only(&["*"])).await,
        [push, review, pr, copy],
        "typed ones only"
    );
    assert!(due(Subscription::Only(Vec::new())).await.is_empty());
    let limited = store.due(ch, &only(&["pull_request*"]), 1_000, 1).await;
    assert_eq!(limited.expect("due").len(), 1);
    let next = |takes: Subscription| async move { store.next_due(ch, &takes).await.expect("next") };
    assert_eq!(next(only(&["pull_request"])).await, Some(40));
    assert_eq!(next(only(&["nothing"])).await, None);

    let list = |pattern: &str| {
        let query = ListQuery {
            limit: 10,
            event_type: Some(TypePattern::parse(pattern).expect("valid")),
            ..ListQuery::default()
        };
        async move {
            let rows = store.list(ch, &query).await.expect("list");
            rows.iter().map(|s| s.id).collect::<Vec<_>>()
        }
    };
    assert_eq!(list("pull_request").await, [pr]);
    assert_eq!(list("pull_request*").await, [pr, review]);
    assert_eq!(list("*").await, [copy, pr, review, push]);
    assert!(list("pull").await.is_empty());
}
