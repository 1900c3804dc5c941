//! Event store throughput: how many webhooks per second each backend can take in and mark
//! delivered, with many writers at once as under a burst of ingress.
//!
//! Usage: `store-bench [EVENTS] [CONCURRENCY]` (defaults 20000 and 64), e.g.
//! `cargo run --release -p hookrelay-bench --bin store-bench -- 20000 64`.
//!
//! For each backend (SQLite with fsync, SQLite without, memory, and PostgreSQL when
//! `STORE_BENCH_POSTGRES` names an empty database by URL) it inserts `EVENTS` queued
//! events (1 KiB body, 10 headers) from `CONCURRENCY` tasks, then records one delivered attempt
//! per event the same way, and prints one line per phase: writes per second and, for SQLite
//! and PostgreSQL inserts, the average number of writes that shared one commit (group commit
//! at work). SQLite runs in a fresh temp dir, removed at the end.

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use protocol::{ChannelId, DeliveryId};
use relay_server::store::{
    Attempt, AttemptKind, EventStatus, MemoryStore, NewEvent, PostgresStore, Quota, SqliteStore,
    Store, Transition, WriteStats, now_ms,
};

const DEFAULT_EVENTS: usize = 20_000;
const DEFAULT_CONCURRENCY: usize = 64;
const BODY_BYTES: usize = 1024;

/// A backend under test, and how to read its group-commit counters.
struct Backend {
    name: &'static str,
    store: Arc<dyn Store>,
    /// Its group-commit counters, for the backends that keep them.
    stats: Option<Box<dyn Fn() -> WriteStats>>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |i: usize, default: usize, what: &str| -> anyhow::Result<usize> {
        args.get(i).map_or(Ok(default), |arg| {
            arg.parse().with_context(|| format!("bad {what} {arg:?}"))
        })
    };
    let events = number(0, DEFAULT_EVENTS, "event count")?;
    let concurrency = number(1, DEFAULT_CONCURRENCY, "concurrency")?;
    if events == 0 || concurrency == 0 || args.len() > 2 {
        bail!("usage: store-bench [EVENTS] [CONCURRENCY], both above 0");
    }
    print(&format!(
        "store-bench: {events} events, {concurrency} concurrent writers, {BODY_BYTES} B bodies"
    ))?;

    let dir = tempfile::tempdir().context("create temp dir")?;
    for (name, fsync) in [("sqlite fsync=on", true), ("sqlite fsync=off", false)] {
        let sqlite = Arc::new(
            SqliteStore::open(&dir.path().join(name.replace([' ', '='], "-")), fsync)
                .context("open sqlite store")?,
        );
        let store: Arc<dyn Store> = sqlite.clone();
        let stats: Box<dyn Fn() -> WriteStats> = Box::new(move || sqlite.write_stats());
        run(
            Backend {
                name,
                store,
                stats: Some(stats),
            },
            events,
            concurrency,
        )
        .await?;
    }
    let memory = Backend {
        name: "memory",
        store: Arc::new(MemoryStore::new()),
        stats: None,
    };
    run(memory, events, concurrency).await?;
    if let Ok(url) = std::env::var("STORE_BENCH_POSTGRES") {
        let url = url
            .parse()
            .context("STORE_BENCH_POSTGRES is not a PostgreSQL URL")?;
        let postgres = Arc::new(
            PostgresStore::open(&url, Quota::UNLIMITED)
                .await
                .context("open postgres store")?,
        );
        let store: Arc<dyn Store> = postgres.clone();
        let stats: Box<dyn Fn() -> WriteStats> = Box::new(move || postgres.write_stats());
        let backend = Backend {
            name: "postgres",
            store,
            stats: Some(stats),
        };
        run(backend, events, concurrency).await?;
    }
    Ok(())
}

async fn run(backend: Backend, events: usize, concurrency: usize) -> anyhow::Result<()> {
    let channel = ChannelId::parse("bench").context("channel name")?;
    let batch: Vec<NewEvent> = (0..events).map(|_| new_event(&channel)).collect();
    let ids: Vec<DeliveryId> = batch.iter().map(|e| e.id).collect();

    let stats = || backend.stats.as_ref().map(|stats| stats());
    let before = stats();
    let elapsed = in_parallel(
        &backend.store,
        batch,
        concurrency,
        |store, event| async move { store.insert(event).await },
    )
    .await?;
    report(backend.name, "insert", events, elapsed, before, stats())?;

    let before = stats();
    let elapsed = in_parallel(&backend.store, ids, concurrency, |store, id| async move {
        store
            .record(id, attempt(), Transition::Delivered)
            .await
            .map(drop)
    })
    .await?;
    report(backend.name, "record", events, elapsed, before, stats())
}

/// Runs `op` on every item, from `concurrency` tasks that each take an equal share in turn,
/// and returns the wall time of the whole.
async fn in_parallel<T, F, Fut>(
    store: &Arc<dyn Store>,
    items: Vec<T>,
    concurrency: usize,
    op: F,
) -> anyhow::Result<Duration>
where
    T: Send + 'static,
    F: Fn(Arc<dyn Store>, T) -> Fut + Copy + Send + 'static,
    Fut: Future<Output = Result<(), relay_server::store::StoreError>> + Send,
{
    let mut shares: Vec<Vec<T>> = (0..concurrency).map(|_| Vec::new()).collect();
    for (i, item) in items.into_iter().enumerate() {
        shares[i % concurrency].push(item);
    }
    let start = Instant::now();
    let tasks: Vec<_> = shares
        .into_iter()
        .map(|share| {
            let store = Arc::clone(store);
            tokio::spawn(async move {
                for item in share {
                    op(Arc::clone(&store), item).await?;
                }
                Ok::<_, relay_server::store::StoreError>(())
            })
        })
        .collect();
    for task in tasks {
        task.await.context("writer task")?.context("store write")?;
    }
    Ok(start.elapsed())
}

fn report(
    backend: &str,
    phase: &str,
    events: usize,
    elapsed: Duration,
    before: Option<relay_server::store::WriteStats>,
    after: Option<relay_server::store::WriteStats>,
) -> anyhow::Result<()> {
    let per_sec = events as f64 / elapsed.as_secs_f64();
    let batching = match (before, after) {
        (Some(b), Some(a)) if a.commits > b.commits => {
            let (writes, commits) = (a.writes - b.writes, a.commits - b.commits);
            format!(
                "  {commits} commits, {:.1} writes/commit",
                writes as f64 / commits as f64
            )
        }
        _ => String::new(),
    };
    print(&format!(
        "{backend:<17} {phase:<6} {per_sec:>10.0} /s  ({:.2} s){batching}",
        elapsed.as_secs_f64()
    ))
}

fn print(line: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").context("write stdout")
}

/// A webhook like a GitHub delivery: 10 headers, a 1 KiB JSON-ish body.
fn new_event(channel: &ChannelId) -> NewEvent {
    let header = |name: &str, value: &str| (name.to_owned(), Bytes::from(value.to_owned()));
    let headers = vec![
        header("host", "relay.example.com"),
        header("user-agent", "GitHub-Hookshot/abc1234"),
        header("content-type", "application/json"),
        header("content-length", "1024"),
        header("accept", "*/*"),
        header("x-github-event", "push"),
        header("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        header("x-github-hook-id", "123456789"),
        header(
            "x-hub-signature-256",
            "sha256=6dcb09b5b57875f334f61aebed695e2e4193db5e6dcb09b5b57875f334f61aeb",
        ),
        header("x-forwarded-for", "192.0.2.10"),
    ];
    let body: Bytes = b"{\"ref\":\"refs/heads/main\",\"commits\":[]}"
        .iter()
        .copied()
        .cycle()
        .take(BODY_BYTES)
        .collect();
    NewEvent {
        id: DeliveryId::random(),
        channel: channel.clone(),
        received_at: now_ms(),
        source: Some("192.0.2.10:51234".to_owned()),
        method: "POST".to_owned(),
        path: "/github".to_owned(),
        query: None,
        headers,
        body,
        status: EventStatus::Queued,
        event_type: Some("push".to_owned()),
        replay_of: None,
    }
}

fn attempt() -> Attempt {
    Attempt {
        n: 0,
        kind: AttemptKind::Queued,
        started_at: now_ms(),
        duration_ms: 3,
        agent: Some("bench-agent".to_owned()),
        status: Some(200),
        headers: vec![(
            "content-type".to_owned(),
            Bytes::from_static(b"application/json"),
        )],
        body: Bytes::from_static(b"{\"ok\":true}"),
        error: None,
    }
}
