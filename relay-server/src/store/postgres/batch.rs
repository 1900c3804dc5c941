//! Group commit for PostgreSQL: one task per kind of write (inserts, records) takes every
//! such write callers queued while it was busy, up to [`MAX_BATCH`], and runs them in one
//! transaction, the same idea as the SQLite writer thread. Under a burst that turns a
//! transaction (and, with `synchronous_commit`, a flush of the WAL) per webhook into one per
//! batch; and since each write locks its channel's `channel_usage` row until commit, writes to
//! one channel would otherwise go one commit at a time.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use deadpool_postgres::{Object, Pool};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::debug;

use super::pool_reason;
use super::rows::db_error;
use crate::store::{StoreError, WriteStats};

/// Writes waiting for a task; a full queue makes callers wait (backpressure).
const QUEUE: usize = 1024;
/// Most writes run in one transaction.
const MAX_BATCH: usize = 256;

/// One kind of write, as a batch of them runs.
pub(super) trait Work: Send + Sync + 'static {
    type Op: Send + Sync + 'static;
    type Out: Send + 'static;

    /// Runs `ops` in one transaction on `client`: one result per op, in order, or why the
    /// transaction failed as a whole.
    fn together<'a>(
        &'a self,
        client: &'a mut Object,
        ops: &'a [&'a Self::Op],
    ) -> impl Future<Output = Result<Vec<Result<Self::Out, StoreError>>, Failed>> + Send + 'a;
}

/// Why a batch's transaction failed as a whole.
pub(super) enum Failed {
    /// The database refused a statement (a duplicate id): each write is worth trying alone.
    Statement(StoreError),
    /// No connection, or it broke: every write fails with this.
    Connection(StoreError),
}

impl From<tokio_postgres::Error> for Failed {
    fn from(e: tokio_postgres::Error) -> Self {
        if e.as_db_error().is_some() {
            Failed::Statement(db_error(e))
        } else {
            Failed::Connection(db_error(e))
        }
    }
}

/// One caller's write and where its answer goes.
struct Request<W: Work> {
    op: W::Op,
    reply: oneshot::Sender<Result<W::Out, StoreError>>,
}

/// A task running writes of one kind, and its queue. Dropping it closes the queue: the task
/// runs what is already queued, answers, and ends.
pub(super) struct Batcher<W: Work> {
    queue: mpsc::Sender<Request<W>>,
    stats: Arc<Counters>,
    _task: JoinHandle<()>,
}

/// Batches a task has run (or tried to), and the writes they carried.
#[derive(Debug, Default)]
struct Counters {
    batches: AtomicU64,
    writes: AtomicU64,
}

impl<W: Work> Batcher<W> {
    /// Starts the task on the current runtime.
    pub(super) fn start(pool: Pool, work: W) -> Batcher<W> {
        let (queue, requests) = mpsc::channel(QUEUE);
        let stats = Arc::new(Counters::default());
        Batcher {
            queue,
            _task: tokio::spawn(run(pool, work, requests, Arc::clone(&stats))),
            stats,
        }
    }

    /// Runs `op` with whatever else is queued. Once queued, it happens or not as a whole
    /// whether or not the caller still waits.
    pub(super) async fn submit(&self, op: W::Op) -> Result<W::Out, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Request { op, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// How many batches have carried how many writes since open.
    pub(super) fn stats(&self) -> WriteStats {
        WriteStats {
            commits: self.stats.batches.load(Ordering::Relaxed),
            writes: self.stats.writes.load(Ordering::Relaxed),
        }
    }
}

/// Takes the first write, then whatever else is waiting after one turn of the runtime (up to
/// [`MAX_BATCH`]), runs them and answers each.
async fn run<W: Work>(
    pool: Pool,
    work: W,
    mut requests: mpsc::Receiver<Request<W>>,
    stats: Arc<Counters>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = requests.recv().await {
        batch.push(first);
        // One turn for the tasks woken with this one, whose writes then join its batch: on
        // a busy node, fewer and larger transactions (each costs the database the same
        // round trips whatever it carries).
        tokio::task::yield_now().await;
        while batch.len() < MAX_BATCH {
            match requests.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let ops: Vec<&W::Op> = batch.iter().map(|request| &request.op).collect();
        let results = run_batch(&pool, &work, &ops).await;
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats
            .writes
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        for (request, result) in batch.drain(..).zip(results) {
            // The caller may have stopped waiting; its write happened all the same.
            let _ = request.reply.send(result);
        }
    }
    debug!("event store batch task stopped");
}

/// Runs `ops` in one transaction; when the database refuses it, each in a transaction of its
/// own, so that only the one at fault fails. A broken connection fails them all at once.
async fn run_batch<W: Work>(
    pool: &Pool,
    work: &W,
    ops: &[&W::Op],
) -> Vec<Result<W::Out, StoreError>> {
    match attempt(pool, work, ops).await {
        Ok(results) => results,
        Err(Failed::Connection(e)) => ops.iter().map(|_| Err(copy(&e))).collect(),
        Err(Failed::Statement(e)) if ops.len() == 1 => vec![Err(e)],
        Err(Failed::Statement(_)) => {
            let mut results = Vec::with_capacity(ops.len());
            for op in ops {
                let result = match attempt(pool, work, &[*op]).await {
                    Ok(mut one) => one.pop().unwrap_or(Err(StoreError::Closed)),
                    Err(Failed::Statement(e) | Failed::Connection(e)) => Err(e),
                };
                results.push(result);
            }
            results
        }
    }
}

async fn attempt<W: Work>(
    pool: &Pool,
    work: &W,
    ops: &[&W::Op],
) -> Result<Vec<Result<W::Out, StoreError>>, Failed> {
    let mut client = pool.get().await.map_err(|e| {
        Failed::Connection(StoreError::Backend(format!(
            "cannot reach the database: {}",
            pool_reason(&e)
        )))
    })?;
    let result = work.together(&mut client, ops).await;
    if result.is_err() && client.batch_execute("ROLLBACK").await.is_err() {
        // Whatever the error left open ends here (a warning only when nothing is). A
        // connection that cannot even roll back is not given back to the pool.
        drop(Object::take(client));
    }
    result
}

/// Runs `first`, whose statements are sent ahead of any answer, after a `BEGIN` that is not
/// waited for either: a transaction's first round trip carries its start. `first` must send
/// its statements when first polled (prepared statements, nothing awaited before them).
pub(super) async fn begin_with<T>(
    client: &tokio_postgres::Client,
    first: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, tokio_postgres::Error> {
    let (begun, out) = futures_util::join!(client.batch_execute("BEGIN"), first);
    begun?;
    out
}

/// Runs `last`, then `COMMIT`, in one round trip (as [`begin_with`]). When a statement fails
/// the server rolls the transaction back at that `COMMIT`, and `last`'s error is the answer.
pub(super) async fn commit_with<T>(
    client: &tokio_postgres::Client,
    last: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, tokio_postgres::Error> {
    let (out, committed) = futures_util::join!(last, client.batch_execute("COMMIT"));
    let out = out?;
    committed?;
    Ok(out)
}

/// A copy of `e` for each caller of a failed batch (only [`StoreError::Backend`] comes here).
fn copy(e: &StoreError) -> StoreError {
    StoreError::Backend(
        e.to_string()
            .trim_start_matches("store failed: ")
            .to_owned(),
    )
}
