//! What only the SQLite backend promises: durability across reopen, crash recovery, schema
//! versions, clean failures at open, and group commit.

use std::sync::Arc;

use protocol::Subscription;
use rusqlite::params;
use tokio::sync::oneshot;

use super::SqliteStore;
use super::schema::{MIGRATIONS, open_at_version};
use super::writer::{Ledger, Op, Request, commit_batch};
use crate::store::conformance::{attempt, binary_body, binary_headers, channel, new_event};
use crate::store::{EventStatus, Quota, Store, StoreError, Transition, encode_headers, now_ms};

fn open(dir: &std::path::Path) -> SqliteStore {
    SqliteStore::open(dir, true).expect("open store")
}

#[tokio::test]
async fn data_survives_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ch = channel("durable");
    let event = new_event(&ch, 1_000, EventStatus::Queued);
    let id = event.id;
    {
        let store = open(dir.path());
        store.insert(event).await.expect("insert");
        let retry = Transition::Retry {
            at: 2_000,
            failures: 1,
        };
        store
            .record(id, attempt(Some(503)), retry)
            .await
            .expect("record");
    }
    let store = open(dir.path());
    let got = store
        .get(&ch, id)
        .await
        .expect("get")
        .expect("survived reopen");
    assert_eq!((got.headers, got.body), (binary_headers(), binary_body()));
    assert_eq!(got.summary.next_attempt_at, Some(2_000));
    assert_eq!(got.attempts.len(), 1);
    assert_eq!(got.attempts[0].status, Some(503));
}

#[tokio::test]
async fn delivering_becomes_queued_on_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ch = channel("crash");
    let event = new_event(&ch, 1_000, EventStatus::Delivering);
    let id = event.id;
    open(dir.path()).insert(event).await.expect("insert");

    let before_reopen = now_ms();
    let store = open(dir.path());
    let got = store.get(&ch, id).await.expect("get").expect("stored");
    assert_eq!(got.summary.status, EventStatus::Queued);
    let next = got
        .summary
        .next_attempt_at
        .expect("requeued events are scheduled");
    assert!(
        next >= before_reopen,
        "due from the reopen on, not from arrival"
    );
    let due = store
        .due(&ch, &Subscription::All, now_ms(), 10)
        .await
        .expect("due");
    assert_eq!(due.len(), 1);
}

#[test]
fn garbage_file_is_an_open_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("events.db"), [0x5a_u8; 8192]).expect("write garbage");
    let err = SqliteStore::open(dir.path(), true).expect_err("not a database");
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    assert!(err.to_string().contains("not a database"), "{err}");
}

#[test]
fn uncreatable_dir_is_an_open_error() {
    // A path under a regular file can never be created, even by root.
    let file = tempfile::NamedTempFile::new().expect("temp file");
    let dir = file.path().join("sub");
    let err = SqliteStore::open(&dir, true).expect_err("cannot create dir");
    let StoreError::Open { path, reason } = &err else {
        panic!("expected an open error, got {err:?}");
    };
    assert_eq!(path, &dir.display().to_string());
    assert!(reason.starts_with("create directory"), "{reason}");
}

#[test]
fn newer_schema_is_too_new() {
    let dir = tempfile::tempdir().expect("temp dir");
    let conn = open_at_version(dir.path(), MIGRATIONS.len()).expect("open");
    conn.pragma_update(None, "user_version", 99)
        .expect("set version");
    drop(conn);
    let err = SqliteStore::open(dir.path(), true).expect_err("too new");
    let known = i64::try_from(MIGRATIONS.len()).expect("small");
    assert!(
        matches!(err, StoreError::TooNew { found: 99, known: k, .. } if k == known),
        "{err:?}"
    );
}

#[tokio::test]
async fn migrates_a_version_1_database() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ch = channel("old-schema");
    let id = protocol::DeliveryId::random();
    let conn = open_at_version(dir.path(), 1).expect("open at version 1");
    conn.execute(
        "INSERT INTO events (id, channel, received_at, method, path, headers, body, status,
                             next_attempt_at)
         VALUES (?1, ?2, 1000, 'PUT', '/x', ?3, ?4, 'queued', 1000)",
        params![
            id.to_string(),
            ch.as_str(),
            encode_headers(&binary_headers()),
            &b"old"[..]
        ],
    )
    .expect("insert with version 1 schema");
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .expect("version");
    assert_eq!(version, 1);
    drop(conn);

    let store = open(dir.path());
    let got = store
        .get(&ch, id)
        .await
        .expect("get")
        .expect("old row readable");
    assert_eq!(got.summary.method, "PUT");
    assert_eq!(got.headers, binary_headers());
    assert_eq!(&got.body[..], b"old");
    assert_eq!(got.summary.body_len, 3, "the body's length moved with it");
    assert_eq!(
        store
            .due(&ch, &Subscription::All, 1_000, 10)
            .await
            .expect("due")
            .len(),
        1
    );
    drop(store);
    let conn = open_at_version(dir.path(), MIGRATIONS.len()).expect("reopen");
    let indexes: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'index' AND name LIKE 'events_%'",
            [],
            |row| row.get(0),
        )
        .expect("count indexes");
    assert_eq!(indexes, 3, "migrations 2 and 4 ran");
}

#[tokio::test]
async fn corrupt_headers_are_reported_not_panicked_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ch = channel("corrupt");
    let event = new_event(&ch, 1, EventStatus::Queued);
    let id = event.id;
    let store = open(dir.path());
    store.insert(event).await.expect("insert");
    let conn = open_at_version(dir.path(), MIGRATIONS.len()).expect("second connection");
    conn.execute("UPDATE bodies SET headers = x'ffffff'", [])
        .expect("damage headers");
    let err = store.get(&ch, id).await.expect_err("corrupt");
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_inserts_are_group_committed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(open(dir.path()));
    let ch = channel("burst");
    let tasks: Vec<_> = (0..200)
        .map(|t| {
            let (store, event) = (Arc::clone(&store), new_event(&ch, t, EventStatus::Queued));
            tokio::spawn(async move { store.insert(event).await })
        })
        .collect();
    for task in tasks {
        task.await.expect("task").expect("insert");
    }
    assert_eq!(store.count(&ch, None).await.expect("count"), 200);
    let stats = store.write_stats();
    assert_eq!(stats.writes, 200);
    assert!(stats.commits < 200, "no write shared a commit: {stats:?}");
}

#[test]
fn a_failing_write_does_not_fail_its_batch() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut conn = open_at_version(dir.path(), MIGRATIONS.len()).expect("open");
    let mut ledger = Ledger::load(&conn, Quota::UNLIMITED).expect("count");
    let ch = channel("batch");
    let first = new_event(&ch, 1, EventStatus::Queued);
    let unknown = protocol::DeliveryId::random();
    let ops = [
        Op::Insert {
            event: first.clone(),
            in_file: false,
        },
        Op::Insert {
            event: first.clone(),
            in_file: false,
        },
        Op::Record {
            id: unknown,
            attempt: attempt(None),
            then: Transition::Keep,
        },
        Op::Insert {
            event: new_event(&ch, 2, EventStatus::Queued),
            in_file: false,
        },
    ];
    let batch: Vec<Request> = ops
        .into_iter()
        .map(|op| Request {
            op,
            lazy: false,
            reply: oneshot::channel().0,
        })
        .collect();
    let results = commit_batch(&mut conn, &batch, &mut ledger).expect("the batch commits");
    assert!(results[0].is_ok());
    assert!(
        matches!(results[1], Err(StoreError::Backend(_))),
        "{:?}",
        results[1]
    );
    assert!(matches!(results[2], Err(StoreError::UnknownEvent(id)) if id == unknown));
    assert!(results[3].is_ok());
    let stored: i64 = conn
        .query_row("SELECT count(*) FROM events", [], |row| row.get(0))
        .expect("count");
    assert_eq!(stored, 2);
}

#[tokio::test]
async fn quota_counts_are_read_back_at_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let quota = Quota {
        max_undelivered: 2,
        max_bytes: u64::MAX,
        max_rejected: 1,
    };
    let ch = channel("counted");
    let store = SqliteStore::open_with_quota(dir.path(), false, quota).expect("open");
    for t in 1..=2 {
        store
            .insert(new_event(&ch, t, EventStatus::Queued))
            .await
            .expect("insert");
    }
    let first_rejected = new_event(&ch, 3, EventStatus::Rejected);
    store.insert(first_rejected.clone()).await.expect("insert");
    drop(store);
    let store = SqliteStore::open_with_quota(dir.path(), false, quota).expect("reopen");
    let full = store.insert(new_event(&ch, 4, EventStatus::Queued)).await;
    assert!(matches!(full, Err(StoreError::Full { .. })), "{full:?}");
    store
        .insert(new_event(&ch, 5, EventStatus::Rejected))
        .await
        .expect("insert");
    assert!(
        store
            .get(&ch, first_rejected.id)
            .await
            .expect("get")
            .is_none(),
        "the cap of one rejected event was counted across the reopen"
    );
}

#[tokio::test]
async fn the_wal_is_checkpointed_into_the_database_while_the_store_is_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path(), false).expect("open store");
    let ch = channel("checkpointed");
    // 8 MiB of bodies: twice the WAL length that asks for a checkpoint.
    for t in 0..128 {
        let mut event = new_event(&ch, t, EventStatus::Queued);
        event.body = bytes::Bytes::from(vec![b'x'; 64 * 1024]);
        store.insert(event).await.expect("insert");
    }
    let db = dir.path().join("events.db");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let size = std::fs::metadata(&db).expect("database file").len();
        if size >= 4 * 1024 * 1024 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the bodies stayed in the WAL: events.db is {size} bytes"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(store.count(&ch, None).await.expect("count"), 128);
}

#[tokio::test]
async fn a_large_body_written_in_place_reads_back_byte_for_byte() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ch = channel("large");
    let mut event = new_event(&ch, 1, EventStatus::Queued);
    // Past the size written through the blob handle, and not a multiple of a page.
    let body: Vec<u8> = (0..300_001u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    event.body = bytes::Bytes::from(body.clone());
    let id = event.id;
    let store = open(dir.path());
    store.insert(event).await.expect("insert");
    drop(store);
    let store = open(dir.path());
    let got = store.get(&ch, id).await.expect("get").expect("stored");
    assert_eq!(got.summary.body_len, 300_001);
    assert!(
        got.body[..] == body[..],
        "the body changed on its way through the store"
    );
    let due = store
        .due(&ch, &Subscription::All, 1, 10)
        .await
        .expect("due");
    assert!(due.len() == 1 && due[0].body[..] == body[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prune_larger_than_a_slice_deletes_everything_it_should() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(SqliteStore::open(dir.path(), false).expect("open store"));
    let (ch, old) = (channel("many"), channel("old"));
    let n = super::writer::PRUNE_SLICE * 2 + 5;
    // Age is read along arrival: the three old ones come first.
    for t in 0..3 {
        store
            .insert(new_event(&old, t, EventStatus::Queued))
            .await
            .expect("insert");
    }
    let tasks: Vec<_> = (0..n)
        .map(|t| {
            let store = Arc::clone(&store);
            let event = new_event(&ch, 10_000 + t as i64, EventStatus::Delivered);
            tokio::spawn(async move { store.insert(event).await })
        })
        .collect();
    for task in tasks {
        task.await.expect("task").expect("insert");
    }
    // Received before 5,000: the three of `old`; beyond the newest 10 of `many`: the rest.
    let deleted = store.prune(5_000, 10).await.expect("prune");
    assert_eq!(deleted, n - 10 + 3);
    assert_eq!(store.count(&ch, None).await.expect("count"), 10);
    assert_eq!(store.count(&old, None).await.expect("count"), 0);
}

#[test]
fn a_second_server_on_the_same_data_dir_is_refused_until_the_first_is_gone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = SqliteStore::open(dir.path(), false).expect("first open");
    let Err(err) = SqliteStore::open(dir.path(), false) else {
        panic!("a second serving store opened on the same data dir");
    };
    let pid = std::process::id();
    assert!(
        matches!(err, StoreError::InUse { pid: Some(p), .. } if p == pid),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "data dir {} is in use by another relay-server (process {pid}); stop it first, or give this one its own --data-dir",
            dir.path().display()
        )
    );
    // `relay-server channels` works beside a running server.
    drop(SqliteStore::open_beside_server(dir.path()).expect("beside the server"));
    drop(first);
    drop(SqliteStore::open(dir.path(), false).expect("the lock went with the first store"));
}

#[test]
fn migrations_skip_a_step_another_process_made_meanwhile() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Both read version 0; the first migrates everything, the second must not run a step
    // again ("table events already exists").
    let mut late = open_at_version(dir.path(), 0).expect("at version 0");
    drop(SqliteStore::open(dir.path(), false).expect("migrates"));
    super::schema::migrate(&mut late, dir.path(), MIGRATIONS.len()).expect("nothing left to do");
}

/// A body of `len` bytes that is not a run of one byte.
fn patterned(len: usize) -> bytes::Bytes {
    (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect::<Vec<u8>>()
        .into()
}

fn body_file(dir: &std::path::Path, id: protocol::DeliveryId) -> std::path::PathBuf {
    dir.join("bodies").join(id.to_string())
}

#[tokio::test]
async fn a_body_of_a_mebibyte_or_more_is_a_file_of_its_own_and_reads_back_byte_for_byte() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ch = channel("file");
    let body = patterned(super::files::IN_FILE + 12_345);
    let mut event = new_event(&ch, 1, EventStatus::Queued);
    event.body = body.clone();
    let id = event.id;
    // One byte short of the size stays in the database.
    let mut small = new_event(&ch, 2, EventStatus::Queued);
    small.body = patterned(super::files::IN_FILE - 1);
    let small_id = small.id;
    let store = open(dir.path());
    store.insert(event).await.expect("insert");
    store.insert(small.clone()).await.expect("insert");
    assert_eq!(
        std::fs::read(body_file(dir.path(), id)).expect("the body's file"),
        body[..]
    );
    assert!(!body_file(dir.path(), small_id).exists());
    drop(store);
    let store = open(dir.path());
    let got = store.get(&ch, id).await.expect("get").expect("stored");
    assert_eq!(got.summary.body_len, body.len() as u64);
    assert!(got.body == body, "the body changed in its file");
    let due = store
        .due(&ch, &Subscription::All, 10, 10)
        .await
        .expect("due");
    assert_eq!(due.len(), 2);
    assert!(due[0].body == body && due[1].body == small.body);
}

#[tokio::test]
async fn a_body_file_goes_with_its_event_and_a_refused_event_leaves_none() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ch = channel("gone");
    let quota = Quota {
        max_undelivered: 1,
        ..Quota::UNLIMITED
    };
    let store = SqliteStore::open_with_quota(dir.path(), false, quota).expect("open");
    let mut kept = new_event(&ch, 1, EventStatus::Queued);
    kept.body = patterned(super::files::IN_FILE);
    store.insert(kept.clone()).await.expect("insert");
    let mut refused = new_event(&ch, 2, EventStatus::Queued);
    refused.body = patterned(super::files::IN_FILE);
    let full = store.insert(refused.clone()).await;
    assert!(matches!(full, Err(StoreError::Full { .. })), "{full:?}");
    assert!(!body_file(dir.path(), refused.id).exists());
    assert!(body_file(dir.path(), kept.id).exists());
    // Received before the cutoff: pruned, and its file with it.
    assert_eq!(store.prune(1_000, u64::MAX).await.expect("prune"), 1);
    assert!(!body_file(dir.path(), kept.id).exists());
    assert!(store.get(&ch, kept.id).await.expect("get").is_none());
}

#[tokio::test]
async fn at_open_a_body_file_no_event_names_is_removed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ch = channel("orphans");
    let mut event = new_event(&ch, 1, EventStatus::Queued);
    event.body = patterned(super::files::IN_FILE);
    let id = event.id;
    drop({
        let store = open(dir.path());
        store.insert(event).await.expect("insert");
        store
    });
    // What a crash leaves: a file written for a row that never committed.
    let orphan = body_file(dir.path(), protocol::DeliveryId::random());
    std::fs::write(&orphan, b"half a body").expect("write");
    let other = dir.path().join("bodies").join("notes.txt");
    std::fs::write(&other, b"not ours").expect("write");
    let store = open(dir.path());
    assert!(!orphan.exists(), "the orphan is still there");
    assert!(other.exists(), "a file that is no body file was removed");
    let got = store.get(&ch, id).await.expect("get").expect("stored");
    assert_eq!(got.body.len(), super::files::IN_FILE);
}
