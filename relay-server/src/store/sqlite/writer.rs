//! The writer thread and the writes it runs: group commit with one savepoint per write.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use protocol::{ChannelId, DeliveryId};
use rusqlite::blob::ZeroBlob;
use rusqlite::{Connection, OptionalExtension as _, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout_at};
use tracing::{debug, error};

use super::files::BodyFiles;
use super::rows::db_error;
use crate::channel::ChannelRecord;
use crate::store::{
    Attempt, EventStatus, MAX_RECORDED_BODY, Millis, NewEvent, Quota, Recorded, StoreError,
    Transition, Usage, encode_headers, stored_size,
};

/// Most writes committed in one transaction. Bounds how long one commit holds the callers at
/// its front waiting for those at its back.
const MAX_BATCH: usize = 512;

/// What the writer thread has done, read by [`super::SqliteStore::write_stats`].
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) commits: AtomicU64,
    pub(super) writes: AtomicU64,
}

/// One write and where its answer goes.
pub(super) struct Request {
    pub(super) op: Op,
    /// Nobody waits for it to be durable soon: it may wait for a later write to commit with
    /// (see [`LAZY_WAIT`]).
    pub(super) lazy: bool,
    pub(super) reply: oneshot::Sender<Result<Reply, StoreError>>,
}

/// What a write answers: a count (rows, or nothing to say), or what a record did.
#[derive(Debug)]
pub(super) enum Reply {
    Count(u64),
    Recorded(Recorded),
}

impl Reply {
    pub(super) fn count(self) -> u64 {
        match self {
            Reply::Count(n) => n,
            Reply::Recorded(r) => u64::from(r.n),
        }
    }
}

/// A write, as the [`crate::store::Store`] method that asked for it.
pub(super) enum Op {
    /// An event; `in_file`: its body is already in its file (see [`super::files`]).
    Insert {
        event: NewEvent,
        in_file: bool,
    },
    Begin(DeliveryId),
    Record {
        id: DeliveryId,
        attempt: Attempt,
        then: Transition,
    },
    /// At most `limit` events of a prune (see [`PRUNE_SLICE`]).
    Prune {
        cutoff: Millis,
        cap: u64,
        limit: u64,
    },
    CreateChannel(ChannelRecord),
    /// Nothing: proves a write transaction can be taken and committed.
    Ping,
    UpdateChannel(ChannelRecord),
    DeleteChannel(ChannelId),
}

/// What each channel holds, counted by the writer thread (the only writer of events) so that
/// the quota check on every insert costs a map lookup, not a query. Changed only after a
/// write's statements all succeeded, and read again from the database after a failed commit.
pub(super) struct Ledger {
    quota: Quota,
    channels: HashMap<String, Usage>,
    /// Events whose body file goes once the transaction that deleted them has committed.
    files_to_remove: Vec<DeliveryId>,
}

impl Ledger {
    /// Counts what the database holds (a scan of the events table, at open).
    pub(super) fn load(conn: &Connection, quota: Quota) -> rusqlite::Result<Ledger> {
        let mut channels: HashMap<String, Usage> = HashMap::new();
        let mut stmt = conn.prepare(
            "SELECT channel, status, count(*), sum(size)
             FROM events GROUP BY channel, status",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let channel: String = row.get(0)?;
            let status: String = row.get(1)?;
            let (count, bytes): (i64, i64) = (row.get(2)?, row.get(3)?);
            if let Some(status) = EventStatus::parse(&status) {
                channels.entry(channel).or_default().add_many(
                    status,
                    u64::try_from(count).unwrap_or(0),
                    u64::try_from(bytes).unwrap_or(0),
                );
            }
        }
        Ok(Ledger {
            quota,
            channels,
            files_to_remove: Vec::new(),
        })
    }

    fn usage(&mut self, channel: &str) -> &mut Usage {
        if !self.channels.contains_key(channel) {
            self.channels.insert(channel.to_owned(), Usage::default());
        }
        self.channels
            .get_mut(channel)
            .expect("inserted just above when missing")
    }

    /// Stops counting deleted events, and notes their body files for removal.
    fn deleted(&mut self, rows: &[Deleted]) {
        for row in rows {
            let usage = self.usage(&row.channel);
            usage.remove(row.status, row.size);
            if *usage == Usage::default() {
                self.channels.remove(&row.channel);
            }
            self.files_to_remove.extend(row.file);
        }
    }
}

/// How long a write that nobody waits on ([`Request::lazy`]) is held for another write to
/// commit with. Under load the next webhook's insert comes much sooner, so a lazy write costs no
/// commit (and no fsync) of its own; on an idle relay it is committed this long after.
pub(super) const LAZY_WAIT: Duration = Duration::from_millis(50);

/// The writer thread: takes the first write, then whatever else is already waiting (up to
/// [`MAX_BATCH`]), commits them as one transaction and answers each. Lazy writes alone do not
/// start a commit: they wait up to [`LAZY_WAIT`] for a write that someone waits on. Ends when
/// every [`super::SqliteStore`] sender is gone and the queue is empty.
pub(super) fn run_writer(
    runtime: &tokio::runtime::Runtime,
    mut conn: Connection,
    mut queue: mpsc::Receiver<Request>,
    stats: &Counters,
    mut ledger: Ledger,
    files: &BodyFiles,
) {
    let mut batch: Vec<Request> = Vec::with_capacity(MAX_BATCH);
    let mut due = Instant::now();
    runtime.block_on(async {
        loop {
            let next = if batch.is_empty() {
                queue.recv().await
            } else {
                match timeout_at(due, queue.recv()).await {
                    Ok(next) => next,
                    Err(_) => {
                        commit(&mut conn, &mut batch, stats, &mut ledger, files);
                        continue;
                    }
                }
            };
            let Some(first) = next else { break };
            if batch.is_empty() {
                due = Instant::now() + LAZY_WAIT;
            }
            let mut eager = !first.lazy;
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(request) => {
                        eager |= !request.lazy;
                        batch.push(request);
                    }
                    Err(_) => break,
                }
            }
            if eager || batch.len() >= MAX_BATCH {
                commit(&mut conn, &mut batch, stats, &mut ledger, files);
            }
        }
    });
    if !batch.is_empty() {
        commit(&mut conn, &mut batch, stats, &mut ledger, files);
    }
    debug!("event store writer stopped");
}

/// Commits `batch`, removes the body files of the events it deleted, and answers each of its
/// writes, leaving it empty.
fn commit(
    conn: &mut Connection,
    batch: &mut Vec<Request>,
    stats: &Counters,
    ledger: &mut Ledger,
    files: &BodyFiles,
) {
    let results = commit_batch(conn, batch, ledger);
    stats.commits.fetch_add(1, Ordering::Relaxed);
    stats
        .writes
        .fetch_add(batch.len() as u64, Ordering::Relaxed);
    match results {
        Ok(results) => {
            // Before the answers, so that a prune's files are gone when it returns.
            for id in ledger.files_to_remove.drain(..) {
                files.remove(id);
            }
            for (request, result) in batch.drain(..).zip(results) {
                // The caller may have stopped waiting; its write happened all the same.
                let _ = request.reply.send(result);
            }
        }
        Err(e) => {
            error!(error = %e, writes = batch.len(), "event store commit failed");
            // Counts may include writes that were rolled back.
            reload(conn, ledger);
            let message = e.to_string();
            for request in batch.drain(..) {
                let _ = request
                    .reply
                    .send(Err(StoreError::Backend(message.clone())));
            }
        }
    }
}

/// Counts the channels' events again, after writes the ledger counted were rolled back. The
/// body files those writes would have removed stay, even when counting fails: their events are
/// still there.
fn reload(conn: &Connection, ledger: &mut Ledger) {
    ledger.files_to_remove.clear();
    match Ledger::load(conn, ledger.quota) {
        Ok(counted) => *ledger = counted,
        Err(e) => error!(error = %e, "cannot count the channels' events again"),
    }
}

/// Runs `batch` in one transaction. `Err` when the transaction as a whole failed.
///
/// Each write runs bare first: a write that fails only after its checks, before it changes
/// anything (see [`clean`]), leaves nothing to undo. A write that fails part way (a statement
/// error) rolls the transaction back, and the batch runs again with a savepoint around each
/// write, so that the failing one is undone alone and the others still commit. Savepoints cost
/// every write a statement journal, which the bare run saves.
pub(super) fn commit_batch(
    conn: &mut Connection,
    batch: &[Request],
    ledger: &mut Ledger,
) -> Result<Vec<Result<Reply, StoreError>>, StoreError> {
    let exec = |conn: &Connection, sql: &str| conn.prepare_cached(sql)?.execute([]).map(drop);
    exec(conn, "BEGIN IMMEDIATE").map_err(db_error)?;
    let mut results = Vec::with_capacity(batch.len());
    for request in batch {
        match apply(conn, &request.op, ledger) {
            Err(e) if !clean(&e) => {
                if !conn.is_autocommit() {
                    exec(conn, "ROLLBACK").map_err(db_error)?;
                }
                reload(conn, ledger);
                return commit_each_in_savepoint(conn, batch, ledger);
            }
            result => results.push(result),
        }
    }
    if let Err(e) = exec(conn, "COMMIT") {
        if !conn.is_autocommit() {
            let _ = exec(conn, "ROLLBACK");
        }
        return Err(db_error(e));
    }
    Ok(results)
}

/// Whether a write that failed with `error` failed before changing anything: its checks
/// (the quota, the event or channel it names) come before its first change.
fn clean(error: &StoreError) -> bool {
    matches!(
        error,
        StoreError::Full { .. }
            | StoreError::UnknownEvent(_)
            | StoreError::ChannelExists(_)
            | StoreError::UnknownChannel(_)
    )
}

/// [`commit_batch`]'s second run: each write inside a savepoint.
fn commit_each_in_savepoint(
    conn: &mut Connection,
    batch: &[Request],
    ledger: &mut Ledger,
) -> Result<Vec<Result<Reply, StoreError>>, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_error)?;
    let exec = |sql: &str| tx.prepare_cached(sql)?.execute([]).map(drop);
    let mut results = Vec::with_capacity(batch.len());
    for request in batch {
        exec("SAVEPOINT write").map_err(db_error)?;
        let result = apply(&tx, &request.op, ledger);
        if let Err(e) = &result {
            // Some errors (disk full, I/O) make SQLite roll back the whole transaction.
            if tx.is_autocommit() {
                return Err(StoreError::Backend(format!("transaction rolled back: {e}")));
            }
            exec("ROLLBACK TO write").map_err(db_error)?;
        }
        exec("RELEASE write").map_err(db_error)?;
        results.push(result);
    }
    tx.commit().map_err(db_error)?;
    Ok(results)
}

fn apply(conn: &Connection, op: &Op, ledger: &mut Ledger) -> Result<Reply, StoreError> {
    let count = match op {
        Op::Insert { event, in_file } => insert(conn, event, *in_file, ledger).map(|()| 0),
        Op::Begin(id) => conn
            .prepare_cached(
                "UPDATE events SET status = 'delivering' WHERE id = ?1 AND status = 'queued'",
            )
            .and_then(|mut stmt| stmt.execute([id.to_string()]))
            .map_err(db_error)
            .map(|changed| changed as u64),
        Op::Record { id, attempt, then } => {
            return record(conn, *id, attempt, *then, ledger).map(Reply::Recorded);
        }
        Op::Prune { cutoff, cap, limit } => {
            prune(conn, *cutoff, *cap, *limit, ledger).map_err(db_error)
        }
        Op::CreateChannel(record) => create_channel(conn, record),
        Op::Ping => Ok(0),
        Op::UpdateChannel(record) => {
            let sql = "UPDATE channels SET token_hash = ?2, settings = ?3 WHERE name = ?1";
            let changed = conn
                .prepare_cached(sql)
                .and_then(|mut stmt| {
                    stmt.execute(params![
                        record.name.as_str(),
                        record.token_hash.0.as_slice(),
                        settings_json(record)?,
                    ])
                })
                .map_err(db_error)?;
            if changed == 0 {
                return Err(StoreError::UnknownChannel(record.name.clone()));
            }
            Ok(0)
        }
        Op::DeleteChannel(name) => conn
            .prepare_cached("DELETE FROM channels WHERE name = ?1")
            .and_then(|mut stmt| stmt.execute([name.as_str()]))
            .map_err(db_error)
            .map(|n| n as u64),
    };
    count.map(Reply::Count)
}

fn create_channel(conn: &Connection, record: &ChannelRecord) -> Result<u64, StoreError> {
    let sql = "INSERT INTO channels (name, token_hash, created_at, settings)
               VALUES (?1, ?2, ?3, ?4) ON CONFLICT (name) DO NOTHING";
    let inserted = conn
        .prepare_cached(sql)
        .and_then(|mut stmt| {
            stmt.execute(params![
                record.name.as_str(),
                record.token_hash.0.as_slice(),
                record.created_at,
                settings_json(record)?,
            ])
        })
        .map_err(db_error)?;
    if inserted == 0 {
        return Err(StoreError::ChannelExists(record.name.clone()));
    }
    Ok(0)
}

fn settings_json(record: &ChannelRecord) -> rusqlite::Result<String> {
    serde_json::to_string(&record.settings)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

/// Inserts `event` within its channel's quota, deleting first what must go to make room.
fn insert(
    conn: &Connection,
    event: &NewEvent,
    in_file: bool,
    ledger: &mut Ledger,
) -> Result<(), StoreError> {
    let channel = event.channel.as_str();
    let size = stored_size(&event.headers, &event.body);
    let quota = ledger.quota;
    let room = quota.room(&event.channel, ledger.usage(channel), event.status, size)?;
    let mut deleted = Vec::new();
    for _ in 0..room.drop_rejected {
        match delete_oldest(conn, channel, DELETE_OLDEST_REJECTED).map_err(db_error)? {
            Some(row) => deleted.push(row),
            None => break,
        }
    }
    let mut freed: u64 = deleted.iter().map(|row| row.size).sum();
    while freed < room.free_bytes {
        match delete_oldest(conn, channel, DELETE_OLDEST_FINISHED).map_err(db_error)? {
            Some(row) => {
                freed += row.size;
                deleted.push(row);
            }
            None => break,
        }
    }
    insert_row(conn, event, size, in_file).map_err(db_error)?;
    ledger.deleted(&deleted);
    ledger.usage(channel).add(event.status, size);
    Ok(())
}

const DELETE_OLDEST_REJECTED: &str = "DELETE FROM events WHERE seq = (
        SELECT seq FROM events WHERE channel = ?1 AND status = 'rejected' ORDER BY seq LIMIT 1)
    RETURNING channel, status, size, id, body_file";
const DELETE_OLDEST_FINISHED: &str = "DELETE FROM events WHERE seq = (
        SELECT seq FROM events WHERE channel = ?1 AND status IN ('delivered', 'failed', 'rejected', 'unrouted')
        ORDER BY seq LIMIT 1)
    RETURNING channel, status, size, id, body_file";

/// Runs one of the `DELETE_OLDEST_*` statements: what it deleted, if anything.
fn delete_oldest(conn: &Connection, channel: &str, sql: &str) -> rusqlite::Result<Option<Deleted>> {
    conn.prepare_cached(sql)?
        .query_row([channel], deleted_row)
        .optional()
}

/// A deleted event, as the ledger needs it.
pub(super) struct Deleted {
    channel: String,
    status: EventStatus,
    size: u64,
    /// Its id when its body is in a file.
    file: Option<DeliveryId>,
}

/// A row of `RETURNING channel, status, size, id, body_file`.
fn deleted_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Deleted> {
    let status: String = row.get(1)?;
    let status = EventStatus::parse(&status).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            1,
            rusqlite::types::Type::Text,
            format!("unknown event status {status:?}").into(),
        )
    })?;
    let size: i64 = row.get(2)?;
    let file = if row.get::<_, bool>(4)? {
        let id: String = row.get(3)?;
        let id = uuid::Uuid::parse_str(&id).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, Box::new(e))
        })?;
        Some(DeliveryId::from_uuid(id))
    } else {
        None
    };
    Ok(Deleted {
        channel: row.get(0)?,
        status,
        size: u64::try_from(size).unwrap_or(0),
        file,
    })
}

/// Writes `event`, of [`stored_size`] `size`: its row, then its headers and body (an empty one
/// when it is `in_file`).
fn insert_row(
    conn: &Connection,
    event: &NewEvent,
    size: u64,
    in_file: bool,
) -> rusqlite::Result<()> {
    let next_attempt_at = (event.status == EventStatus::Queued).then_some(event.received_at);
    let sql = "INSERT INTO events (id, channel, received_at, source, method, path, query,
                                   status, next_attempt_at, size, body_len, event_type, replay_of,
                                   body_file)
               VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)";
    conn.prepare_cached(sql)?.execute(params![
        event.id.to_string(),
        event.channel.as_str(),
        event.received_at,
        event.source,
        event.method,
        event.path,
        event.query,
        event.status.as_str(),
        next_attempt_at,
        i64::try_from(size).unwrap_or(i64::MAX),
        i64::try_from(event.body.len()).unwrap_or(i64::MAX),
        event.event_type,
        event.replay_of.map(|id| id.to_string()),
        in_file,
    ])?;
    let seq = conn.last_insert_rowid();
    let stored: &[u8] = if in_file { &[] } else { &event.body };
    let in_place = stored.len() >= WRITTEN_IN_PLACE;
    let room = ZeroBlob(u64::try_from(stored.len()).unwrap_or(u64::MAX));
    let body: &dyn rusqlite::ToSql = if in_place { &room } else { &stored };
    let sql = "INSERT INTO bodies (seq, headers, body) VALUES (?1, ?2, ?3)";
    conn.prepare_cached(sql)?
        .execute(params![seq, encode_headers(&event.headers), body])?;
    if in_place {
        conn.blob_open("main", "bodies", "body", seq, false)?
            .write_at(stored, 0)?;
    }
    Ok(())
}

/// Bodies from this size on are written into their row after it is inserted, straight from
/// the webhook's buffer (SQLite's incremental blob I/O), rather than bound to the insert: a
/// bound blob is copied once by the binding and once more into the row, two more copies of
/// a 25 MB body in memory. Below it, the blob handle costs more than the copies.
const WRITTEN_IN_PLACE: usize = 64 * 1024;

/// Records an attempt: reads what the event is now (its row number, status, count and size),
/// then changes it by row number and adds the attempt. Everything that can refuse comes
/// before the first change (see [`clean`]).
fn record(
    conn: &Connection,
    id: DeliveryId,
    attempt: &Attempt,
    then: Transition,
    ledger: &mut Ledger,
) -> Result<Recorded, StoreError> {
    let sql = "SELECT seq, status, attempts, channel, size FROM events WHERE id = ?1";
    let (seq, was, attempts, channel, size): (i64, String, i64, String, i64) = conn
        .prepare_cached(sql)
        .and_then(|mut stmt| {
            stmt.query_row([id.to_string()], |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                ))
            })
            .optional()
        })
        .map_err(db_error)?
        .ok_or(StoreError::UnknownEvent(id))?;
    let corrupt = |what: String| StoreError::Corrupt(what);
    let was =
        EventStatus::parse(&was).ok_or_else(|| corrupt(format!("unknown event status {was:?}")))?;
    let channel = ChannelId::parse(&channel)
        .map_err(|_| corrupt(format!("channel name {channel:?} is not valid")))?;
    // (new status, whether next_attempt_at changes, its new value, new failure count)
    let (status, set_next, next, failures) = match then {
        Transition::Delivered => (EventStatus::Delivered, true, None, None),
        Transition::Failed => (EventStatus::Failed, true, None, None),
        Transition::Retry { at, failures } => (EventStatus::Queued, true, Some(at), Some(failures)),
        Transition::Keep => (was, false, None, None),
    };
    let n = attempts.saturating_add(1);
    let sql = "UPDATE events SET attempts = ?2,
                   response_status = coalesce(?3, response_status),
                   status = ?4,
                   next_attempt_at = CASE WHEN ?5 THEN ?6 ELSE next_attempt_at END,
                   failures = coalesce(?7, failures)
               WHERE seq = ?1";
    conn.prepare_cached(sql)
        .and_then(|mut stmt| {
            stmt.execute(params![
                seq,
                n,
                attempt.status,
                status.as_str(),
                set_next,
                next,
                failures,
            ])
        })
        .map_err(db_error)?;
    let body = &attempt.body[..attempt.body.len().min(MAX_RECORDED_BODY)];
    let sql = "INSERT INTO attempts (event_seq, n, kind, started_at, duration_ms, agent, status,
                                     headers, body, error)
               VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";
    conn.prepare_cached(sql)
        .and_then(|mut stmt| {
            stmt.execute(params![
                seq,
                n,
                attempt.kind.as_str(),
                attempt.started_at,
                i64::try_from(attempt.duration_ms).unwrap_or(i64::MAX),
                attempt.agent,
                attempt.status,
                encode_headers(&attempt.headers),
                body,
                attempt.error,
            ])
        })
        .map_err(db_error)?;
    ledger
        .usage(channel.as_str())
        .moved(was, status, u64::try_from(size).unwrap_or(0));
    Ok(Recorded {
        n: u32::try_from(n).unwrap_or(u32::MAX),
        channel,
        status,
    })
}

/// Events one prune write deletes at most. A prune runs as slices of this many, each its own
/// write, so the webhooks arriving meanwhile commit between them: deleting 115,000 events in
/// one write held the writer, and every sender, for about a second.
pub(super) const PRUNE_SLICE: u64 = 2_000;

/// Deletes, up to `limit` events, by age first, then, per channel, the finished events older
/// than the newest `cap`. Attempts and bodies go with their events (`ON DELETE CASCADE`).
///
/// Age is found along `seq`, which follows arrival: everything before the first event received
/// at or after `cutoff` goes. That walk costs as many rows as it deletes, where an index on
/// `received_at` would cost every insert one more B-tree update.
fn prune(
    conn: &Connection,
    cutoff: Millis,
    cap: u64,
    limit: u64,
    ledger: &mut Ledger,
) -> rusqlite::Result<u64> {
    let limit_sql = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let mut deleted: Vec<Deleted> = conn
        .prepare_cached(
            "DELETE FROM events WHERE seq IN (
                SELECT seq FROM events WHERE seq < coalesce(
                    (SELECT seq FROM events WHERE received_at >= ?1 ORDER BY seq LIMIT 1),
                    (SELECT max(seq) + 1 FROM events))
                ORDER BY seq LIMIT ?2)
             RETURNING channel, status, size, id, body_file",
        )?
        .query_map(params![cutoff, limit_sql(limit)], deleted_row)?
        .collect::<Result<_, _>>()?;
    let channels: Vec<String> = conn
        .prepare_cached("SELECT DISTINCT channel FROM events")?
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    let newest_sql =
        "SELECT seq FROM events WHERE channel = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2";
    let delete_sql = "DELETE FROM events WHERE seq IN (
                          SELECT seq FROM events WHERE channel = ?1 AND seq < ?2
                          AND status IN ('delivered', 'failed', 'rejected', 'unrouted')
                          ORDER BY seq LIMIT ?3)
                      RETURNING channel, status, size, id, body_file";
    for channel in channels {
        let left = limit.saturating_sub(deleted.len() as u64);
        if left == 0 {
            break;
        }
        // The oldest event the cap keeps; everything finished before it goes.
        let oldest_kept: Option<i64> = match cap.checked_sub(1) {
            None => Some(i64::MAX),
            Some(offset) => {
                let offset = i64::try_from(offset).unwrap_or(i64::MAX);
                conn.prepare_cached(newest_sql)?
                    .query_row(params![channel, offset], |row| row.get(0))
                    .optional()?
            }
        };
        if let Some(oldest_kept) = oldest_kept {
            let mut stmt = conn.prepare_cached(delete_sql)?;
            let rows =
                stmt.query_map(params![channel, oldest_kept, limit_sql(left)], deleted_row)?;
            for row in rows {
                deleted.push(row?);
            }
        }
    }
    ledger.deleted(&deleted);
    Ok(deleted.len() as u64)
}
