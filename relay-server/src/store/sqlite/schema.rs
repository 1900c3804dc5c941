//! The database file, its schema and how it is brought up to date, and the checks at open.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};
use tracing::{info, warn};

use crate::store::{StoreError, now_ms};

/// The database file inside the data dir.
const DB_FILE: &str = "events.db";

/// Schema migrations, in order: entry `i` takes the database from `user_version` `i` to `i + 1`.
/// Append only: a released migration is never edited, since databases already past it would
/// not run it again.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: events and their attempts.
    "CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        channel TEXT NOT NULL,
        received_at INTEGER NOT NULL,
        source TEXT,
        method TEXT NOT NULL,
        path TEXT NOT NULL,
        query TEXT,
        headers BLOB NOT NULL,
        body BLOB NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        failures INTEGER NOT NULL DEFAULT 0,
        response_status INTEGER,
        next_attempt_at INTEGER
    );
    CREATE TABLE attempts (
        event_seq INTEGER NOT NULL REFERENCES events(seq) ON DELETE CASCADE,
        n INTEGER NOT NULL,
        kind TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL,
        agent TEXT,
        status INTEGER,
        headers BLOB NOT NULL,
        body BLOB NOT NULL,
        error TEXT,
        PRIMARY KEY (event_seq, n)
    );",
    // 2: what the queries need: history pages per channel (a status filter walks the same
    // index), and the queue of due events (partial, so it stays as small as the queue). Each
    // index costs every insert a B-tree update, so there are no more than these two: dropping
    // a (channel, status, seq) and a received_at index took the group-committed insert rate
    // from about 26k/s to 35k/s in bench/src/bin/store-bench.rs.
    "CREATE INDEX events_channel_seq ON events (channel, seq);
    CREATE INDEX events_queued_due ON events (channel, next_attempt_at) WHERE status = 'queued';",
    // 3: registered channels. `channels_version` counts every change to `channels`, made by
    // triggers so that a change from any process (the `channels` command, the sqlite3 shell)
    // moves it, and the running server reloads.
    "CREATE TABLE channels (
        name TEXT PRIMARY KEY,
        token_hash BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        settings TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE channels_version (version INTEGER NOT NULL);
    INSERT INTO channels_version VALUES (0);
    CREATE TRIGGER channels_inserted AFTER INSERT ON channels
        BEGIN UPDATE channels_version SET version = version + 1; END;
    CREATE TRIGGER channels_updated AFTER UPDATE ON channels
        BEGIN UPDATE channels_version SET version = version + 1; END;
    CREATE TRIGGER channels_deleted AFTER DELETE ON channels
        BEGIN UPDATE channels_version SET version = version + 1; END;",
    // 4: a channel's rejected events, oldest first, for the cap on them: partial, so only
    // rejected inserts pay for it.
    "CREATE INDEX events_rejected ON events (channel, seq) WHERE status = 'rejected';",
    // 5: an event's headers and body move to a table of their own, written once: recording
    // an attempt changes the event's row, and SQLite rewrites a row whole, so with the body in
    // it every record copied the body again (a 25 MB webhook was written twice). `size` is
    // what the quota counts (headers and body), `body_len` what the history shows.
    "CREATE TABLE bodies (
        seq INTEGER PRIMARY KEY REFERENCES events(seq) ON DELETE CASCADE,
        headers BLOB NOT NULL,
        body BLOB NOT NULL
    );
    INSERT INTO bodies (seq, headers, body) SELECT seq, headers, body FROM events;
    ALTER TABLE events ADD COLUMN size INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE events ADD COLUMN body_len INTEGER NOT NULL DEFAULT 0;
    UPDATE events SET size = length(body) + length(headers), body_len = length(body);
    ALTER TABLE events DROP COLUMN headers;
    ALTER TABLE events DROP COLUMN body;",
    // 6: an event's type (`push`, derived on arrival) and, for an edited replay, the event it
    // was made from. No index on the type: every insert would pay for it, and a history
    // filtered by type walks the channel's index as a status filter does.
    "ALTER TABLE events ADD COLUMN event_type TEXT;
    ALTER TABLE events ADD COLUMN replay_of TEXT;",
    // 7: a body of 1 MiB or more is a file of its own under `bodies/` (see `files.rs`), and
    // its row in `bodies` holds an empty body. Nothing is rewritten: bodies stored before stay
    // in the database.
    "ALTER TABLE events ADD COLUMN body_file INTEGER NOT NULL DEFAULT 0;",
];

/// How long a connection waits for a lock held by another process (a backup tool, the
/// `sqlite3` shell) before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Statements kept prepared per connection; each connection uses about a dozen.
const STATEMENT_CACHE: usize = 32;

/// Opens `dir/events.db` with the settings every connection needs.
pub(super) fn connect(dir: &Path, fsync: bool) -> Result<Connection, StoreError> {
    std::fs::create_dir_all(dir).map_err(open_error(dir, "create directory"))?;
    let conn = Connection::open(dir.join(DB_FILE)).map_err(open_error(dir, "open database"))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(open_error(dir, "set busy timeout"))?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(open_error(dir, "enable WAL"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(open_error(dir, "enable WAL")(format!(
            "journal mode is {mode:?}, the file system may not support it"
        )));
    }
    let synchronous = if fsync { "FULL" } else { "NORMAL" };
    conn.pragma_update(None, "synchronous", synchronous)
        .and_then(|()| conn.pragma_update(None, "foreign_keys", true))
        .map_err(open_error(dir, "configure connection"))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// Applies the migrations from the database's `user_version` up to `target`, each in its own
/// transaction, so an interrupted upgrade resumes where it stopped.
pub(super) fn migrate(conn: &mut Connection, dir: &Path, target: usize) -> Result<(), StoreError> {
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(open_error(dir, "read schema version"))?;
    let known = schema_version();
    if found > known {
        let path = dir.display().to_string();
        return Err(StoreError::TooNew { path, found, known });
    }
    let start = usize::try_from(found)
        .map_err(|_| open_error(dir, "read schema version")(format!("negative: {found}")))?;
    for (index, sql) in MIGRATIONS.iter().enumerate().take(target).skip(start) {
        let version = i64::try_from(index + 1).expect("a handful of migrations fits in i64");
        let what = format!("migrate schema to version {version}");
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(open_error(dir, &what))?;
        // Read again under the write lock: another process (`relay-server channels` beside a
        // server starting) may have migrated since, and running a step twice fails.
        let now: i64 = tx
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(open_error(dir, &what))?;
        if now >= version {
            continue;
        }
        tx.execute_batch(sql)
            .and_then(|()| tx.pragma_update(None, "user_version", version))
            .and_then(|()| tx.commit())
            .map_err(open_error(dir, &what))?;
        info!(version, "event store schema migrated");
    }
    Ok(())
}

/// Turns events left `delivering` by a previous run back into due `queued` ones, in a write
/// transaction that also proves the database is writable (it rewrites the schema version even
/// when there is nothing to recover).
pub(super) fn recover(conn: &mut Connection, dir: &Path) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(open_error(dir, "write to database"))?;
    let recovered = tx
        .execute(
            "UPDATE events SET status = 'queued', next_attempt_at = ?1
             WHERE status = 'delivering'",
            [now_ms()],
        )
        .and_then(|n| {
            tx.pragma_update(None, "user_version", schema_version())?;
            tx.commit()?;
            Ok(n)
        })
        .map_err(open_error(dir, "write to database"))?;
    if recovered > 0 {
        warn!(
            recovered,
            "requeued events that were being delivered when the server stopped"
        );
    }
    Ok(())
}

/// The schema version this build writes: the number of migrations.
fn schema_version() -> i64 {
    i64::try_from(MIGRATIONS.len()).expect("a handful of migrations fits in i64")
}

/// Builds the [`StoreError::Open`] for a failure of step `what`.
pub(super) fn open_error<E: fmt::Display>(dir: &Path, what: &str) -> impl FnOnce(E) -> StoreError {
    let (path, what) = (dir.display().to_string(), what.to_owned());
    move |e| StoreError::Open {
        path,
        reason: format!("{what}: {e}"),
    }
}

/// Opens the database in `dir` with only the first `version` migrations applied, and hands
/// back the raw connection, to test upgrades from an older schema.
#[cfg(test)]
pub(super) fn open_at_version(dir: &Path, version: usize) -> Result<Connection, StoreError> {
    let mut conn = connect(dir, false)?;
    migrate(&mut conn, dir, version)?;
    Ok(conn)
}
