//! What the conformance suite cannot check through the trait alone: reopening, migrations
//! racing, a newer schema, a database that is unreachable or restarts, and the quota under
//! concurrent writers.

use std::time::{Duration, Instant};

use protocol::{DeliveryId, Subscription};

use super::cluster::{Cluster, database};
use super::{PostgresStore, PostgresUrl};
use crate::store::conformance::{attempt, channel, new_event};
use crate::store::{EventStatus, Full, Quota, Store, StoreError, Transition, stored_size};

fn url(text: &str) -> PostgresUrl {
    text.parse().expect("the test cluster's URL is valid")
}

/// A plain connection to `url`, for what the store does not offer (the schema version).
async fn raw(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test cluster");
    tokio::spawn(connection);
    client
}

#[tokio::test]
async fn data_survives_reopen_and_delivering_events_are_requeued() {
    let db = url(&database());
    let ch = channel("reopen");
    let store = PostgresStore::open(&db, Quota::UNLIMITED)
        .await
        .expect("open");
    let live = new_event(&ch, 1, EventStatus::Delivering);
    let id = live.id;
    store.insert(live).await.expect("insert");
    drop(store);

    let beside = PostgresStore::open_beside_server(&db).await.expect("open");
    let event = beside.get(&ch, id).await.expect("get").expect("kept");
    assert_eq!(
        event.summary.status,
        EventStatus::Delivering,
        "the channels command leaves a running server's deliveries alone"
    );
    let store = PostgresStore::open(&db, Quota::UNLIMITED)
        .await
        .expect("reopen");
    let event = store.get(&ch, id).await.expect("get").expect("kept");
    assert_eq!(event.summary.status, EventStatus::Queued);
    let due = store.due(&ch, &Subscription::All, i64::MAX, 10).await;
    assert_eq!(due.expect("due").len(), 1, "and due now");
}

#[tokio::test]
async fn nodes_starting_together_on_an_empty_database_migrate_it_once() {
    let text = database();
    let db = url(&text);
    let opens = (0..4).map(|_| PostgresStore::open(&db, Quota::UNLIMITED));
    for opened in futures_util::future::join_all(opens).await {
        opened.expect("every node opens");
    }
    let client = raw(&text).await;
    let version: i64 = client
        .query_one("SELECT version FROM schema_version", &[])
        .await
        .expect("read version")
        .get(0);
    assert_eq!(
        version,
        i64::try_from(super::MIGRATIONS.len()).expect("small")
    );
}

#[tokio::test]
async fn a_newer_schema_is_refused_at_open() {
    let text = database();
    let db = url(&text);
    drop(
        PostgresStore::open(&db, Quota::UNLIMITED)
            .await
            .expect("open"),
    );
    raw(&text)
        .await
        .execute("UPDATE schema_version SET version = 99", &[])
        .await
        .expect("set version");
    let err = PostgresStore::open(&db, Quota::UNLIMITED)
        .await
        .expect_err("too new");
    assert!(matches!(err, StoreError::Database { .. }), "{err:?}");
    assert!(err.to_string().contains("upgrade relay-server"), "{err}");
}

#[tokio::test]
async fn an_unreachable_database_fails_open_naming_it_without_the_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind")
        .port();
    let db = url(&format!(
        "postgres://relay:s3cret@127.0.0.1:{port}/hookrelay?sslmode=disable"
    ));
    let err = PostgresStore::open(&db, Quota::UNLIMITED)
        .await
        .expect_err("nothing listens there");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!(
            "cannot use database postgres://relay@127.0.0.1:{port}/hookrelay"
        )),
        "{message}"
    );
    assert!(message.contains("connect"), "{message}");
    assert!(!message.contains("s3cret"), "{message}");
}

#[tokio::test]
async fn writes_fail_while_the_database_is_down_and_recover_when_it_is_back() {
    let cluster = tokio::task::spawn_blocking(Cluster::start)
        .await
        .expect("start cluster");
    let db = url(&cluster.database());
    let store = PostgresStore::open(&db, Quota::UNLIMITED)
        .await
        .expect("open");
    let ch = channel("outage");
    store
        .insert(new_event(&ch, 1, EventStatus::Queued))
        .await
        .expect("insert");

    cluster.stop();
    let err = store
        .insert(new_event(&ch, 2, EventStatus::Queued))
        .await
        .expect_err("the database is down");
    assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
    assert!(store.ready().await.is_err(), "not ready while it is down");

    cluster.start_again();
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(e) = store.ready().await {
        assert!(Instant::now() < deadline, "never ready again: {e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    store
        .insert(new_event(&ch, 3, EventStatus::Queued))
        .await
        .expect("insert after the restart");
    assert_eq!(store.count(&ch, None).await.expect("count"), 2);
}

/// Whether the store's connections are encrypted, as the server sees them.
async fn encrypted(store: &PostgresStore) -> bool {
    let client = store.client().await.expect("a connection");
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("read pg_stat_ssl")
        .get(0)
}

#[tokio::test]
async fn sslmode_require_encrypts_and_verify_full_refuses_an_untrusted_certificate() {
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    let cert = params.self_signed(&key).expect("certificate");
    let (cert, key) = (cert.pem(), key.serialize_pem());
    let cluster = tokio::task::spawn_blocking(move || Cluster::start_with_tls(&cert, &key))
        .await
        .expect("start cluster");
    let plain = cluster.database();
    let with = |mode: &str| url(&plain.replace("sslmode=disable", &format!("sslmode={mode}")));

    for mode in ["require", "prefer"] {
        let store = PostgresStore::open(&with(mode), Quota::UNLIMITED)
            .await
            .expect("open over TLS");
        assert!(encrypted(&store).await, "sslmode={mode} encrypts");
        store.ready().await.expect("ready over TLS");
    }
    let store = PostgresStore::open(&with("disable"), Quota::UNLIMITED)
        .await
        .expect("open");
    assert!(!encrypted(&store).await, "sslmode=disable does not");

    let err = PostgresStore::open(&with("verify-full"), Quota::UNLIMITED)
        .await
        .expect_err("a self-signed certificate is not trusted");
    assert!(matches!(err, StoreError::Database { .. }), "{err:?}");
    assert!(err.to_string().contains("certificate"), "{err}");
}

#[tokio::test]
async fn concurrent_inserts_into_one_channel_never_pass_its_quota() {
    let quota = Quota {
        max_undelivered: 4,
        ..Quota::UNLIMITED
    };
    let store = PostgresStore::open(&url(&database()), quota)
        .await
        .expect("open");
    let ch = channel("crowded");
    let inserts = (0..24).map(|t| store.insert(new_event(&ch, t, EventStatus::Queued)));
    let results = futures_util::future::join_all(inserts).await;
    let stored = results.iter().filter(|r| r.is_ok()).count();
    let full = results
        .iter()
        .filter(|r| {
            matches!(
                r,
                Err(StoreError::Full {
                    what: Full::Undelivered,
                    ..
                })
            )
        })
        .count();
    assert_eq!((stored, full), (4, 20), "{results:?}");
    assert_eq!(store.count(&ch, None).await.expect("count"), 4);
    let unknown = store.begin(DeliveryId::random()).await;
    assert!(unknown.is_ok(), "{unknown:?}");
}

#[tokio::test]
async fn concurrent_inserts_share_a_transaction_and_a_duplicate_fails_alone() {
    let store = PostgresStore::open(&url(&database()), Quota::UNLIMITED)
        .await
        .expect("open");
    let ch = channel("burst");
    let events: Vec<_> = (0..64)
        .map(|t| new_event(&ch, t, EventStatus::Queued))
        .collect();
    let inserts = events.iter().cloned().map(|event| store.insert(event));
    for result in futures_util::future::join_all(inserts).await {
        result.expect("insert");
    }
    let stats = store.write_stats();
    assert_eq!(stats.writes, 64);
    assert!(stats.commits < 64, "inserts were batched: {stats:?}");
    let due = store.due(&ch, &Subscription::All, i64::MAX, 100).await;
    let ids: Vec<_> = due.expect("due").iter().map(|e| e.summary.id).collect();
    let sent: Vec<_> = events.iter().map(|e| e.id).collect();
    assert_eq!(ids, sent, "in the order they were handed in");

    let again = [
        new_event(&ch, 100, EventStatus::Queued),
        events[0].clone(),
        new_event(&ch, 101, EventStatus::Queued),
    ];
    let results = futures_util::future::join_all(again.map(|e| store.insert(e))).await;
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    assert!(
        matches!(results[1], Err(StoreError::Backend(_))),
        "{results:?}"
    );
    assert_eq!(store.count(&ch, None).await.expect("count"), 66);
}

#[tokio::test]
async fn concurrent_records_share_a_statement_and_keep_the_counts_true() {
    let text = database();
    let store = PostgresStore::open(&url(&text), Quota::UNLIMITED)
        .await
        .expect("open");
    let ch = channel("records");
    let events: Vec<_> = (0..32)
        .map(|t| new_event(&ch, t, EventStatus::Delivering))
        .collect();
    let inserts = events.iter().cloned().map(|event| store.insert(event));
    for result in futures_util::future::join_all(inserts).await {
        result.expect("insert");
    }
    let before = store.write_stats();
    // Every event delivered, the first one retried first (two records of one event in one
    // batch apply in turn), and one record of an event nobody stored.
    let unknown = DeliveryId::random();
    let mut records = vec![(events[0].id, Transition::Retry { at: 1, failures: 1 })];
    records.extend(events.iter().map(|e| (e.id, Transition::Delivered)));
    records.push((unknown, Transition::Delivered));
    let done = records
        .iter()
        .map(|(id, then)| store.record(*id, attempt(Some(200)), *then));
    let results = futures_util::future::join_all(done).await;
    let after = store.write_stats();
    assert!(
        after.commits - before.commits < 34,
        "records were batched: {before:?} {after:?}"
    );
    assert!(
        matches!(results.last(), Some(Err(StoreError::UnknownEvent(id))) if *id == unknown),
        "{results:?}"
    );
    for (result, (id, _)) in results.iter().zip(&records).take(33) {
        let recorded = result.as_ref().expect("recorded");
        let n = if *id == events[0].id && recorded.status == EventStatus::Queued {
            1
        } else if *id == events[0].id {
            2
        } else {
            1
        };
        assert_eq!(recorded.n, n, "{result:?}");
        assert_eq!(recorded.channel, ch);
    }
    let first = store
        .get(&ch, events[0].id)
        .await
        .expect("get")
        .expect("kept");
    assert_eq!(first.summary.status, EventStatus::Delivered);
    assert_eq!(first.attempts.len(), 2);

    // What the counting trigger kept is what the rows say.
    let raw = raw(&text).await;
    let counted = raw
        .query_one(
            "SELECT undelivered, open_bytes, bytes FROM channel_usage WHERE channel = $1",
            &[&ch.as_str()],
        )
        .await
        .expect("usage");
    let truth = raw
        .query_one(
            "SELECT count(*) FILTER (WHERE status IN ('queued', 'delivering')),
                coalesce(sum(size) FILTER (WHERE status IN ('queued', 'delivering')), 0)::BIGINT,
                coalesce(sum(size), 0)::BIGINT
             FROM events WHERE channel = $1",
            &[&ch.as_str()],
        )
        .await
        .expect("truth");
    let three = |r: &tokio_postgres::Row| -> (i64, i64, i64) { (r.get(0), r.get(1), r.get(2)) };
    assert_eq!(three(&counted), three(&truth));
    assert_eq!(three(&counted).0, 0, "all delivered");
    assert!(three(&counted).2 > 0);
}

#[tokio::test]
async fn concurrent_inserts_into_a_full_channel_each_make_room() {
    let sample = new_event(&channel("x"), 0, EventStatus::Queued);
    let size = stored_size(&sample.headers, &sample.body);
    let quota = Quota {
        max_bytes: 6 * size,
        ..Quota::UNLIMITED
    };
    let store = PostgresStore::open(&url(&database()), quota)
        .await
        .expect("open");
    let ch = channel("full");
    let mut done = Vec::new();
    for t in 0..6 {
        let event = new_event(&ch, t, EventStatus::Delivering);
        done.push(event.id);
        store.insert(event).await.expect("insert");
        store
            .record(
                done[done.len() - 1],
                attempt(Some(200)),
                Transition::Delivered,
            )
            .await
            .expect("record");
    }
    let inserts = (10..13).map(|t| store.insert(new_event(&ch, t, EventStatus::Queued)));
    for result in futures_util::future::join_all(inserts).await {
        result.expect("room was made");
    }
    assert_eq!(store.count(&ch, None).await.expect("count"), 6);
    for (i, id) in done.iter().enumerate() {
        let kept = store.get(&ch, *id).await.expect("get").is_some();
        assert_eq!(kept, i >= 3, "the three oldest went, event {i}");
    }
}

#[tokio::test]
async fn leases_show_each_nodes_agents_until_they_expire_or_are_given_up() {
    use crate::store::{AgentLease, now_ms};
    // Times from now: a renewal forgets leases that ran out a minute before it.
    let t = now_ms();
    let text = database();
    let db = url(&text);
    let store = PostgresStore::open(&db, Quota::UNLIMITED)
        .await
        .expect("open");
    assert!(store.shares_agents());
    let ch = channel("leased");
    let lease = |node: &str, n: u128, at: i64| AgentLease {
        node: node.to_owned(),
        agent_id: uuid::Uuid::from_u128(n),
        channel: ch.clone(),
        client: "relay-client/test".to_owned(),
        peer: "127.0.0.1:4000".to_owned(),
        connected_at: at,
        events: (n == 2).then(|| vec!["push".to_owned()]),
        in_flight: 0,
    };
    let ids = |leases: Vec<AgentLease>| {
        leases
            .iter()
            .map(|l| l.agent_id.as_u128())
            .collect::<Vec<_>>()
    };
    store
        .renew_leases("a", vec![lease("a", 1, 10), lease("a", 2, 20)], t + 1_000)
        .await
        .expect("renew a");
    store
        .renew_leases("b", vec![lease("b", 3, 15)], t + 2_000)
        .await
        .expect("renew b");
    let seen = store.leased_agents(&ch, t + 500).await.expect("leased");
    assert_eq!(ids(seen.clone()), [1, 3, 2], "in the order they connected");
    assert_eq!(seen[2].events, Some(vec!["push".to_owned()]));
    assert_eq!(seen[1].node, "b");
    // Node a no longer holds agent 1; then its lease runs out.
    store
        .renew_leases("a", vec![lease("a", 2, 20)], t + 1_000)
        .await
        .expect("renew a");
    assert_eq!(
        ids(store.leased_agents(&ch, t + 500).await.expect("leased")),
        [3, 2]
    );
    assert_eq!(
        ids(store.leased_agents(&ch, t + 1_500).await.expect("leased")),
        [3]
    );
    // Node b gives up everything.
    store
        .renew_leases("b", Vec::new(), 0)
        .await
        .expect("give up");
    assert!(
        store
            .leased_agents(&ch, t + 500)
            .await
            .expect("leased")
            .len()
            == 1
    );
    assert!(
        store
            .leased_agents(&channel("other"), t)
            .await
            .expect("leased")
            .is_empty()
    );
    // A lease that ran out over a minute ago is gone from the table, not only from the list.
    store
        .renew_leases("c", vec![lease("c", 4, 30)], t - 61_000)
        .await
        .expect("renew c");
    store
        .renew_leases("a", Vec::new(), t + 1_000)
        .await
        .expect("renew a");
    let left = raw(&text).await;
    let rows = left
        .query_one("SELECT count(*) FROM agent_leases WHERE node = 'c'", &[])
        .await
        .expect("count");
    assert_eq!(rows.get::<_, i64>(0), 0);
}

/// The status of event `id` of `ch` in `store`.
async fn status(store: &PostgresStore, ch: &protocol::ChannelId, id: DeliveryId) -> EventStatus {
    let event = store.get(ch, id).await.expect("get").expect("kept");
    event.summary.status
}

#[tokio::test]
async fn a_dead_stores_deliveries_are_requeued_and_a_live_ones_are_left_alone() {
    use crate::store::{AgentLease, now_ms};
    let db = url(&database());
    let ch = channel("swept");
    let a = PostgresStore::open(&db, Quota::UNLIMITED)
        .await
        .expect("open a");
    let live = new_event(&ch, 1, EventStatus::Delivering);
    let id = live.id;
    a.insert(live).await.expect("insert");
    a.renew_leases("a", Vec::new(), now_ms() + 60_000)
        .await
        .expect("a is alive");

    // Another node opens (and sweeps): a is alive, so its delivery stays its own.
    let b = PostgresStore::open(&db, Quota::UNLIMITED)
        .await
        .expect("open b");
    assert_eq!(status(&b, &ch, id).await, EventStatus::Delivering);
    let agent = AgentLease {
        node: "b".to_owned(),
        agent_id: uuid::Uuid::from_u128(7),
        channel: ch.clone(),
        client: "relay-client/test".to_owned(),
        peer: "127.0.0.1:4000".to_owned(),
        connected_at: 1,
        events: None,
        in_flight: 0,
    };
    let until = now_ms() + 6_000;
    let due = b
        .renew_leases("b", vec![agent.clone()], until)
        .await
        .expect("renew b");
    assert!(due.is_empty(), "nothing queued yet: {due:?}");
    assert_eq!(status(&b, &ch, id).await, EventStatus::Delivering);

    // a stops renewing: once its lease has run out, b's next renewal requeues the delivery
    // and says that b's agent's channel has work.
    a.renew_leases("a", Vec::new(), 1)
        .await
        .expect("a's lease runs out");
    let due = b
        .renew_leases("b", vec![agent], until)
        .await
        .expect("renew b");
    assert_eq!(due, std::slice::from_ref(&ch));
    assert_eq!(status(&b, &ch, id).await, EventStatus::Queued);
    // And a claim names b now: a second claim fails.
    assert!(b.begin(id).await.expect("begin"));
    assert!(!a.begin(id).await.expect("begin"));
}

#[tokio::test]
async fn an_offered_event_is_taken_by_one_node_or_withdrawn_into_the_queue() {
    use crate::store::{Handover, Note, now_ms};
    let db = url(&database());
    let ch = channel("offered");
    let a = PostgresStore::open(&db, Quota::UNLIMITED)
        .await
        .expect("open a");
    let b = PostgresStore::open(&db, Quota::UNLIMITED)
        .await
        .expect("open b");
    for store in [&a, &b] {
        store
            .renew_leases("n", Vec::new(), now_ms() + 60_000)
            .await
            .expect("alive");
    }
    let mut heard = b.notes();
    let everything = Subscription::All;

    // Taken: b hears of it once it is stored, takes it whole, and nobody else can. b's
    // listening connection may still be opening: offer until b hears one.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (id, body) = loop {
        assert!(Instant::now() < deadline, "b never heard an offer");
        let event = new_event(&ch, 1, EventStatus::Queued);
        let (id, body, event_type) = (event.id, event.body.clone(), event.event_type.clone());
        a.offer(event).await.expect("offer");
        let Ok(note) = tokio::time::timeout(Duration::from_millis(200), heard.recv()).await else {
            continue;
        };
        let offered = Note::Offered {
            id,
            channel: ch.clone(),
            event_type,
        };
        assert_eq!(note.expect("a note"), offered);
        break (id, body);
    };
    assert!(
        (a.due(&ch, &everything, i64::MAX, 10).await.expect("due")).is_empty(),
        "an offered event is not the queue's"
    );
    assert!(
        !a.begin(id).await.expect("begin"),
        "nor can a drain claim it"
    );
    let taken = b.take(&ch, id).await.expect("take").expect("offered");
    assert_eq!(taken.body, body);
    assert_eq!(taken.summary.status, EventStatus::Delivering);
    assert!(a.take(&ch, id).await.expect("take").is_none(), "taken once");
    assert!(
        !a.withdraw(id).await.expect("withdraw"),
        "too late to withdraw"
    );
    (b.record_answer(id, attempt(Some(201)), Transition::Delivered, 0))
        .await
        .expect("record the answer");
    let told = tokio::time::timeout(Duration::from_secs(10), heard.recv()).await;
    let told = told.expect("told in time").expect("a note");
    assert_eq!(
        told,
        Note::Answered { id, failure: 0 },
        "in the record's commit"
    );
    let answer = a.answer(&ch, id).await.expect("answer").expect("recorded");
    assert_eq!(answer.status, Some(201));

    // Withdrawn: nobody takes it later, and it is the queue's from then on.
    let second = new_event(&ch, 2, EventStatus::Queued);
    let id = second.id;
    a.offer(second).await.expect("offer");
    assert!(a.withdraw(id).await.expect("withdraw"));
    assert!(b.take(&ch, id).await.expect("take").is_none());
    let due = a.due(&ch, &everything, i64::MAX, 10).await.expect("due");
    assert_eq!(due.iter().map(|e| e.summary.id).collect::<Vec<_>>(), [id]);

    // Offered by a node that died: the sweep gives it to the queue.
    let third = new_event(&ch, 3, EventStatus::Queued);
    let id = third.id;
    a.offer(third).await.expect("offer");
    a.renew_leases("n", Vec::new(), 1)
        .await
        .expect("a's lease runs out");
    b.renew_leases("n", Vec::new(), now_ms() + 60_000)
        .await
        .expect("b sweeps");
    let due = b.due(&ch, &everything, i64::MAX, 10).await.expect("due");
    assert!(due.iter().any(|e| e.summary.id == id), "{due:?}");
}

#[tokio::test]
async fn statements_run_under_a_timeout_unless_the_url_sets_its_own_options() {
    let text = database();
    let store = PostgresStore::open(&url(&text), Quota::UNLIMITED)
        .await
        .expect("open");
    let client = store.client().await.expect("a connection");
    let row = client
        .query_one("SHOW statement_timeout", &[])
        .await
        .expect("show");
    assert_eq!(row.get::<_, String>(0), "10s");
}

#[tokio::test]
async fn a_prune_larger_than_a_slice_deletes_everything_it_should() {
    let store = PostgresStore::open(&url(&database()), Quota::UNLIMITED)
        .await
        .expect("open");
    let (ch, old) = (channel("many"), channel("old"));
    let n = u64::try_from(super::prune::PRUNE_SLICE * 2 + 5).expect("small");
    // Age is read along arrival: the three old ones come first.
    for t in 0..3 {
        store
            .insert(new_event(&old, t, EventStatus::Queued))
            .await
            .expect("insert");
    }
    let events = (0..n).map(|t| new_event(&ch, 10_000 + t as i64, EventStatus::Delivered));
    let inserts = events.map(|event| store.insert(event));
    for result in futures_util::future::join_all(inserts).await {
        result.expect("insert");
    }
    // Received before 5,000: the three of `old`; beyond the newest 10 of `many`: the rest.
    let deleted = store.prune(5_000, 10).await.expect("prune");
    assert_eq!(deleted, n - 10 + 3);
    assert_eq!(store.count(&ch, None).await.expect("count"), 10);
    assert_eq!(store.count(&old, None).await.expect("count"), 0);
    assert_eq!(store.prune(5_000, 10).await.expect("prune again"), 0);
}
