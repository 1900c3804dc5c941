//! The durable [`Store`] backend: one SQLite database, `events.db`, under the data dir.
//!
//! Writes go through one writer thread ([`writer`]) that owns the only write connection and
//! commits whatever has queued up while it was busy as one transaction ("group commit"): with
//! `synchronous=FULL` a commit costs an fsync, and sharing it among every concurrent webhook is
//! what lets durable ingress keep up with a burst. Reads use a second connection; in WAL mode it
//! sees every committed write without waiting for the writer.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use protocol::{ChannelId, DeliveryId, Subscription, TypePattern};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension as _, Row, params, params_from_iter};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info};

use crate::channel::ChannelRecord;

use super::{
    Attempt, Event, EventStatus, EventSummary, ListQuery, Millis, NewEvent, Quota, Recorded, Store,
    StoreError, Transition,
};
use files::{BodyFiles, IN_FILE};
use rows::{attempt_from_row, channel_from_row, db_error, event_from_row, summary_from_row};
use schema::{MIGRATIONS, connect, migrate, open_error, recover};
use writer::{Counters, Ledger, Op, PRUNE_SLICE, Reply, Request, run_writer};

mod checkpoint;
mod files;
mod rows;
mod schema;
#[cfg(test)]
mod tests;
mod writer;

/// Writes waiting for the writer thread; a full queue makes callers wait (backpressure).
const WRITE_QUEUE: usize = 1024;

/// Columns read into an [`EventSummary`] by [`summary_from_row`].
macro_rules! summary_columns {
    () => {
        "id, received_at, method, path, query, status, attempts, failures, response_status, \
         body_len, next_attempt_at, event_type, replay_of"
    };
}
/// [`summary_columns`] plus what [`event_from_row`] adds.
macro_rules! event_columns {
    () => {
        concat!(
            summary_columns!(),
            ", source, headers, body, seq, body_file"
        )
    };
}

/// The SQLite [`Store`]. Dropping it lets the writer thread finish the writes already queued,
/// then waits for it to close the database.
pub struct SqliteStore {
    dir: PathBuf,
    writer: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
    /// Ends once the writer thread has (see [`checkpoint`]).
    checkpointer: Option<JoinHandle<()>>,
    /// Behind a `std` mutex, only ever locked inside `spawn_blocking`, never across an await.
    reader: Arc<Mutex<Connection>>,
    files: BodyFiles,
    stats: Arc<Counters>,
    /// The data dir's lock ([`lock`]), for a serving store; dropped last, after the writer
    /// thread has closed the database.
    _lock: Option<std::fs::File>,
}

/// How well group commit is doing, for benchmarks and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Transactions the writer thread has committed (or tried to).
    pub commits: u64,
    /// Writes (insert, record, prune) carried by those transactions.
    pub writes: u64,
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `dir`, migrates its schema and requeues events
    /// a previous run left `delivering`. With `fsync`, every commit reaches the disk before a
    /// write returns (survives power loss); without, it survives a crash of the process only.
    ///
    /// Everything that could stop the store from working later (a dir that cannot be created
    /// or written, a file that is not a database) fails here, as [`StoreError::Open`], so the
    /// server refuses to start rather than losing the first webhook.
    pub fn open(dir: &Path, fsync: bool) -> Result<SqliteStore, StoreError> {
        Self::open_with(dir, fsync, true, Quota::UNLIMITED)
    }

    /// [`SqliteStore::open`], holding each channel to `quota`.
    pub fn open_with_quota(
        dir: &Path,
        fsync: bool,
        quota: Quota,
    ) -> Result<SqliteStore, StoreError> {
        Self::open_with(dir, fsync, true, quota)
    }

    /// Opens the store alongside a server that may be running on it (for `relay-server
    /// channels`): the same as [`SqliteStore::open`] but without requeueing `delivering`
    /// events, which that server is delivering.
    pub fn open_beside_server(dir: &Path) -> Result<SqliteStore, StoreError> {
        Self::open_with(dir, true, false, Quota::UNLIMITED)
    }

    fn open_with(
        dir: &Path,
        fsync: bool,
        requeue: bool,
        quota: Quota,
    ) -> Result<SqliteStore, StoreError> {
        // A serving store is one process's: a second server on the same data dir would
        // deliver the same queue twice. Held until the writer thread has closed the database.
        let lock = if requeue { Some(lock(dir)?) } else { None };
        let mut conn = connect(dir, fsync)?;
        migrate(&mut conn, dir, MIGRATIONS.len())?;
        let files = BodyFiles::new(dir, fsync);
        if requeue {
            files
                .create_dir()
                .map_err(open_error(dir, "create bodies/"))?;
            recover(&mut conn, dir)?;
            // Only a serving store: beside a running server, a file whose row is not yet
            // committed is that server's write in flight, no orphan.
            files
                .sweep(&conn)
                .map_err(open_error(dir, "check the body files"))?;
        }
        let ledger = Ledger::load(&conn, quota).map_err(open_error(dir, "count events"))?;
        let reader = connect(dir, fsync)?;
        reader
            .pragma_update(None, "query_only", true)
            .map_err(open_error(dir, "configure reader"))?;
        let checkpointer = checkpoint::hand_over(dir, fsync, &mut conn)?;
        let (writer, queue) = mpsc::channel(WRITE_QUEUE);
        let stats = Arc::new(Counters::default());
        // The writer's own clock, for how long it holds lazy writes.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(open_error(dir, "start writer thread"))?;
        let thread = std::thread::Builder::new()
            .name("hookrelay-store".to_owned())
            .spawn({
                let stats = Arc::clone(&stats);
                let files = files.clone();
                move || run_writer(&runtime, conn, queue, &stats, ledger, &files)
            })
            .map_err(open_error(dir, "start writer thread"))?;
        info!(dir = %dir.display(), fsync, "event store open");
        Ok(SqliteStore {
            dir: dir.to_owned(),
            writer: Some(writer),
            thread: Some(thread),
            checkpointer: Some(checkpointer),
            reader: Arc::new(Mutex::new(reader)),
            files,
            stats,
            _lock: lock,
        })
    }

    /// Counters of the writer thread since open.
    pub fn write_stats(&self) -> WriteStats {
        WriteStats {
            commits: self.stats.commits.load(Ordering::Relaxed),
            writes: self.stats.writes.load(Ordering::Relaxed),
        }
    }

    async fn write(&self, op: Op) -> Result<Reply, StoreError> {
        self.send(op, false).await
    }

    /// Queues `op` for the writer thread and waits for its answer; `lazy`: see
    /// [`Request::lazy`].
    async fn send(&self, op: Op, lazy: bool) -> Result<Reply, StoreError> {
        let writer = self.writer.as_ref().ok_or(StoreError::Closed)?;
        let (reply, answer) = oneshot::channel();
        writer
            .send(Request { op, lazy, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let reader = Arc::clone(&self.reader);
        tokio::task::spawn_blocking(move || {
            // A panic in another read cannot leave the connection half-used: every read is
            // one statement or one read transaction that rusqlite ends on unwind.
            let conn = reader.lock().unwrap_or_else(PoisonError::into_inner);
            f(&conn)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("read task failed: {e}")))?
    }
}

/// What a record's write answered.
fn recorded(reply: Reply) -> Result<Recorded, StoreError> {
    match reply {
        Reply::Recorded(recorded) => Ok(recorded),
        Reply::Count(_) => Err(StoreError::Backend("record answered a count".to_owned())),
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the queue ends the writer's loop once it has drained it.
        self.writer = None;
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            error!("event store writer thread panicked");
        }
        if let Some(thread) = self.checkpointer.take()
            && thread.join().is_err()
        {
            error!("event store checkpoint thread panicked");
        }
    }
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("dir", &self.dir)
            .field("stats", &self.write_stats())
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn insert(&self, event: NewEvent) -> Result<(), StoreError> {
        if event.body.len() < IN_FILE {
            let op = Op::Insert {
                event,
                in_file: false,
            };
            return self.write(op).await.map(drop);
        }
        // Written before the insert is queued, so that the writer thread, and every webhook
        // committing with it, never waits for a large body.
        let (files, id, body) = (self.files.clone(), event.id, event.body.clone());
        tokio::task::spawn_blocking(move || files.write(id, &body))
            .await
            .map_err(|e| StoreError::Backend(format!("body file task failed: {e}")))?
            .map_err(|e| StoreError::Backend(format!("cannot write the body file of {id}: {e}")))?;
        let op = Op::Insert {
            event,
            in_file: true,
        };
        let inserted = self.write(op).await.map(drop);
        if inserted.is_err() {
            // Refused (the channel is full) or rolled back: no row names the file.
            self.files.remove(id);
        }
        inserted
    }

    async fn begin(&self, id: DeliveryId) -> Result<bool, StoreError> {
        Ok(self.write(Op::Begin(id)).await?.count() > 0)
    }

    async fn record(
        &self,
        id: DeliveryId,
        attempt: Attempt,
        then: Transition,
    ) -> Result<Recorded, StoreError> {
        recorded(self.write(Op::Record { id, attempt, then }).await?)
    }

    async fn record_lazily(
        &self,
        id: DeliveryId,
        attempt: Attempt,
        then: Transition,
    ) -> Result<Recorded, StoreError> {
        recorded(self.send(Op::Record { id, attempt, then }, true).await?)
    }

    async fn due(
        &self,
        channel: &ChannelId,
        takes: &Subscription,
        now: Millis,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let mut sql = concat!(
            "SELECT ",
            event_columns!(),
            " FROM events JOIN bodies USING (seq)
             WHERE channel = ? AND status = 'queued' AND next_attempt_at <= ?"
        )
        .to_owned();
        let mut values = vec![Value::from(channel.as_str().to_owned()), Value::from(now)];
        takes_condition(takes, &mut sql, &mut values);
        sql.push_str(" ORDER BY seq LIMIT ?");
        values.push(Value::from(sql_limit(limit)));
        let (channel, files) = (channel.clone(), self.files.clone());
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&sql).map_err(db_error)?;
            let rows = stmt
                .query_map(params_from_iter(values), |row| {
                    event_from_row(row, &channel, &files).map(|(event, _)| event)
                })
                .map_err(db_error)?;
            rows.collect::<Result<_, _>>().map_err(db_error)
        })
        .await
    }

    async fn next_due(
        &self,
        channel: &ChannelId,
        takes: &Subscription,
    ) -> Result<Option<Millis>, StoreError> {
        let mut sql = "SELECT min(next_attempt_at) FROM events
                       WHERE channel = ? AND status = 'queued'"
            .to_owned();
        let mut values = vec![Value::from(channel.as_str().to_owned())];
        takes_condition(takes, &mut sql, &mut values);
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&sql).map_err(db_error)?;
            stmt.query_row(params_from_iter(values), |row| row.get(0))
                .map_err(db_error)
        })
        .await
    }

    async fn list(
        &self,
        channel: &ChannelId,
        query: &ListQuery,
    ) -> Result<Vec<EventSummary>, StoreError> {
        let (channel, query) = (channel.clone(), query.clone());
        self.read(move |conn| {
            let before = match query.before {
                None => i64::MAX,
                Some(id) => event_seq(conn, &channel, id)?.ok_or(StoreError::UnknownEvent(id))?,
            };
            let mut sql = concat!(
                "SELECT ",
                summary_columns!(),
                " FROM events WHERE channel = ? AND seq < ?"
            )
            .to_owned();
            let mut values = vec![
                Value::from(channel.as_str().to_owned()),
                Value::from(before),
            ];
            if let Some(status) = query.status {
                sql.push_str(" AND status = ?");
                values.push(Value::from(status.as_str().to_owned()));
            }
            if let Some(pattern) = &query.event_type {
                type_condition(std::slice::from_ref(pattern), &mut sql, &mut values);
            }
            sql.push_str(" ORDER BY seq DESC LIMIT ?");
            values.push(Value::from(sql_limit(query.limit)));
            let map = |row: &Row<'_>| summary_from_row(row, &channel);
            conn.prepare_cached(&sql)
                .and_then(|mut stmt| stmt.query_map(params_from_iter(values), map)?.collect())
                .map_err(db_error)
        })
        .await
    }

    async fn get(&self, channel: &ChannelId, id: DeliveryId) -> Result<Option<Event>, StoreError> {
        let (channel, files) = (channel.clone(), self.files.clone());
        self.read(move |conn| {
            // One read transaction, so the attempts belong to the same snapshot as the event.
            let tx = conn.unchecked_transaction().map_err(db_error)?;
            let sql = concat!(
                "SELECT ",
                event_columns!(),
                " FROM events JOIN bodies USING (seq) WHERE channel = ?1 AND id = ?2"
            );
            let found = tx
                .prepare_cached(sql)
                .and_then(|mut stmt| {
                    let params = params![channel.as_str(), id.to_string()];
                    stmt.query_row(params, |row| event_from_row(row, &channel, &files))
                        .optional()
                })
                .map_err(db_error)?;
            let Some((mut event, seq)) = found else {
                return Ok(None);
            };
            let sql = "SELECT n, kind, started_at, duration_ms, agent, status, headers, body, error
                       FROM attempts WHERE event_seq = ?1 ORDER BY n";
            let mut stmt = tx.prepare_cached(sql).map_err(db_error)?;
            event.attempts = stmt
                .query_map([seq], attempt_from_row)
                .and_then(Iterator::collect)
                .map_err(db_error)?;
            Ok(Some(event))
        })
        .await
    }

    async fn count(
        &self,
        channel: &ChannelId,
        status: Option<EventStatus>,
    ) -> Result<u64, StoreError> {
        let channel = channel.clone();
        self.read(move |conn| {
            let n: i64 = match status {
                None => conn
                    .prepare_cached("SELECT count(*) FROM events WHERE channel = ?1")
                    .and_then(|mut stmt| stmt.query_row([channel.as_str()], |row| row.get(0))),
                Some(status) => conn
                    .prepare_cached(
                        "SELECT count(*) FROM events WHERE channel = ?1 AND status = ?2",
                    )
                    .and_then(|mut stmt| {
                        stmt.query_row([channel.as_str(), status.as_str()], |row| row.get(0))
                    }),
            }
            .map_err(db_error)?;
            u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("negative count {n}")))
        })
        .await
    }

    async fn prune(&self, cutoff: Millis, cap: u64) -> Result<u64, StoreError> {
        // In slices, each its own write, so that webhooks commit between them.
        let mut deleted = 0;
        loop {
            let limit = PRUNE_SLICE;
            let slice = self
                .write(Op::Prune { cutoff, cap, limit })
                .await
                .map(Reply::count)?;
            deleted += slice;
            if slice < limit {
                return Ok(deleted);
            }
        }
    }

    async fn create_channel(&self, record: ChannelRecord) -> Result<(), StoreError> {
        self.write(Op::CreateChannel(record)).await.map(drop)
    }

    async fn update_channel(&self, record: ChannelRecord) -> Result<(), StoreError> {
        self.write(Op::UpdateChannel(record)).await.map(drop)
    }

    async fn delete_channel(&self, name: &ChannelId) -> Result<bool, StoreError> {
        let deleted = self.write(Op::DeleteChannel(name.clone())).await?;
        Ok(deleted.count() > 0)
    }

    async fn channels(&self) -> Result<(u64, Vec<ChannelRecord>), StoreError> {
        self.read(|conn| {
            // One read transaction, so the version belongs to the same snapshot as the rows.
            let tx = conn.unchecked_transaction().map_err(db_error)?;
            let version = channels_version(&tx)?;
            let records = tx
                .prepare_cached(
                    "SELECT name, token_hash, created_at, settings FROM channels ORDER BY name",
                )
                .and_then(|mut stmt| {
                    stmt.query_map([], channel_from_row)?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .map_err(db_error)?;
            tx.finish().map_err(db_error)?;
            Ok((version, records))
        })
        .await
    }

    async fn channels_version(&self) -> Result<u64, StoreError> {
        self.read(channels_version).await
    }

    async fn ready(&self) -> Result<(), StoreError> {
        self.write(Op::Ping).await.map(drop)
    }

    async fn queue_depths(&self) -> Result<Vec<(ChannelId, u64)>, StoreError> {
        self.read(|conn| {
            // Walks the partial index of queued events, as small as the queues.
            conn.prepare_cached(
                "SELECT channel, count(*) FROM events WHERE status = 'queued'
                 GROUP BY channel ORDER BY channel",
            )
            .and_then(|mut stmt| {
                stmt.query_map([], |row| {
                    let name: String = row.get(0)?;
                    let n: i64 = row.get(1)?;
                    Ok((name, n))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(db_error)?
            .into_iter()
            .map(|(name, n)| {
                let channel = ChannelId::parse(&name).map_err(|_| {
                    StoreError::Corrupt(format!("channel name {name:?} is not valid"))
                })?;
                Ok((channel, u64::try_from(n).unwrap_or(0)))
            })
            .collect()
        })
        .await
    }
}

fn channels_version(conn: &Connection) -> Result<u64, StoreError> {
    let version: i64 = conn
        .prepare_cached("SELECT version FROM channels_version")
        .and_then(|mut stmt| stmt.query_row([], |row| row.get(0)))
        .map_err(db_error)?;
    Ok(u64::try_from(version).unwrap_or(0))
}

fn event_seq(
    conn: &Connection,
    channel: &ChannelId,
    id: DeliveryId,
) -> Result<Option<i64>, StoreError> {
    conn.prepare_cached("SELECT seq FROM events WHERE id = ?1 AND channel = ?2")
        .and_then(|mut stmt| {
            stmt.query_row([id.to_string().as_str(), channel.as_str()], |row| {
                row.get(0)
            })
            .optional()
        })
        .map_err(db_error)
}

/// The lock file in the data dir that a serving store holds.
const LOCK_FILE: &str = "server.lock";

/// Takes the data dir's lock (an exclusive advisory lock on `server.lock`, which the system
/// releases when the process ends, however it ends), writing this process's id into the file
/// for the message a second server gets. [`StoreError::InUse`] when another process holds it.
fn lock(dir: &Path) -> Result<std::fs::File, StoreError> {
    use std::io::{Read as _, Seek as _, Write as _};
    std::fs::create_dir_all(dir).map_err(open_error(dir, "create directory"))?;
    let path = dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(open_error(dir, "open its lock file"))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            return Err(StoreError::InUse {
                path: dir.display().to_string(),
                pid: pid.trim().parse().ok(),
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(open_error(dir, "lock it")(e)),
    }
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .map_err(open_error(dir, "write its lock file"))?;
    Ok(file)
}

/// A SQL `LIMIT` for `limit` (SQLite takes a signed 64-bit value).
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Appends to `sql` the condition that an event's type is one `takes` takes, and its values to
/// `values` (the statement's parameters are positional, `?`). Nothing for a subscription to
/// every type.
fn takes_condition(takes: &Subscription, sql: &mut String, values: &mut Vec<Value>) {
    if let Subscription::Only(patterns) = takes {
        type_condition(patterns, sql, values);
    }
}

/// Appends to `sql` the condition that an event's type matches one of `patterns` (none: no
/// event does). An untyped event's `NULL` matches nothing. A prefix compares the type's first
/// characters, as many as the prefix has (`substr` and `length` count characters alike).
fn type_condition(patterns: &[TypePattern], sql: &mut String, values: &mut Vec<Value>) {
    if patterns.is_empty() {
        sql.push_str(" AND 0");
        return;
    }
    sql.push_str(" AND (");
    for (i, pattern) in patterns.iter().enumerate() {
        if i > 0 {
            sql.push_str(" OR ");
        }
        match pattern {
            TypePattern::Exact(name) => {
                sql.push_str("event_type = ?");
                values.push(Value::from(name.clone()));
            }
            TypePattern::Prefix(prefix) => {
                sql.push_str("substr(event_type, 1, length(?)) = ?");
                values.push(Value::from(prefix.clone()));
                values.push(Value::from(prefix.clone()));
            }
        }
    }
    sql.push(')');
}
