//! Inserts, a batch at a time ([`super::batch`]): one statement locks the batch's channels,
//! each event is checked against its channel's quota in order, and one `INSERT ... SELECT *
//! FROM UNNEST(...)` writes all that fit: two round trips per batch, not per webhook.

use std::collections::HashMap;

use deadpool_postgres::Object;

use super::batch::{Failed, Work, begin_with, commit_with};
use super::handover::note;
use super::rows::bigint;
use crate::store::{
    EventStatus, NewEvent, Quota, Room, StoreError, Usage, encode_headers, stored_size,
};

/// Locks the `channel_usage` rows of the channels `$1` names (in that order: callers sort
/// them, as prune does, so that lockers never wait for each other in a circle), creating the
/// missing ones. An existing row is locked and not updated (`WHERE false`): an update would
/// leave a dead version of the channel's hot row behind at every insert.
const LOCK_CHANNELS: &str = "INSERT INTO channel_usage (channel) SELECT unnest($1::TEXT[])
    ON CONFLICT (channel) DO UPDATE SET channel = excluded.channel WHERE false";
/// What each channel `$1` names holds, read under [`LOCK_CHANNELS`]'s locks.
const USAGE: &str = "SELECT channel, undelivered, open_bytes, bytes, rejected
    FROM channel_usage WHERE channel = ANY($1::TEXT[])";
const DELETE_OLDEST_REJECTED: &str = "DELETE FROM events WHERE seq IN (
        SELECT seq FROM events WHERE channel = $1 AND status = 'rejected'
        ORDER BY seq LIMIT $2::BIGINT)
    RETURNING size";
/// Deletes the oldest finished events of channel `$1` until at least `$2` bytes are freed
/// (each goes when what went before it is not yet enough).
const DELETE_OLDEST_FINISHED: &str = "DELETE FROM events WHERE seq IN (
        SELECT seq FROM (
            SELECT seq, (sum(size) OVER (ORDER BY seq) - size)::BIGINT AS before
            FROM events WHERE channel = $1
            AND status IN ('delivered', 'failed', 'rejected', 'unrouted')) finished
        WHERE before < $2::BIGINT)";
/// Inserts one row per element of the arrays, in their order (so in the order of arrival).
const INSERT_EVENTS: &str = "INSERT INTO events (id, channel, received_at, source, method, path,
        query, headers, body, size, body_len, status, next_attempt_at, event_type, replay_of,
        instance)
    SELECT * FROM UNNEST($1::UUID[], $2::TEXT[], $3::BIGINT[], $4::TEXT[], $5::TEXT[],
        $6::TEXT[], $7::TEXT[], $8::BYTEA[], $9::BYTEA[], $10::BIGINT[], $11::BIGINT[],
        $12::TEXT[], $13::BIGINT[], $14::TEXT[], $15::UUID[], $16::UUID[])";

/// One insert: an event, and whether it is offered to the other nodes (see
/// [`super::handover`]): then it names this store's instance while queued, and its note is
/// sent in the transaction that stores it, so no node hears of it before it can take it.
#[derive(Debug)]
pub(super) struct InsertOp {
    pub(super) event: NewEvent,
    pub(super) offered: bool,
}

/// Inserts, each event held to its channel's [`Quota`].
pub(super) struct Inserts {
    pub(super) quota: Quota,
    /// The store's instance, which a `delivering` event names as the one delivering it.
    pub(super) instance: uuid::Uuid,
}

impl Work for Inserts {
    type Op = InsertOp;
    type Out = ();

    async fn together(
        &self,
        client: &mut Object,
        ops: &[&InsertOp],
    ) -> Result<Vec<Result<(), StoreError>>, Failed> {
        insert_together(client, self.quota, self.instance, ops).await
    }
}

/// The events of one transaction: locks their channels, checks each event against its
/// channel's quota in order, and inserts those that fit, in one statement. An event that
/// needs room made first (deleting the oldest finished events) is inserted on its own after
/// the deletes, the ones before it first, so that the deletes see the channel as it is.
///
/// Two round trips when no room is made: `BEGIN` with the locks and the usage read, then the
/// insert, the offers' notes and `COMMIT`.
async fn insert_together(
    client: &mut Object,
    quota: Quota,
    instance: uuid::Uuid,
    ops: &[&InsertOp],
) -> Result<Vec<Result<(), StoreError>>, Failed> {
    let mut channels: Vec<&str> = ops.iter().map(|op| op.event.channel.as_str()).collect();
    channels.sort_unstable();
    channels.dedup();
    let statements = Statements {
        lock: client.prepare_cached(LOCK_CHANNELS).await?,
        read: client.prepare_cached(USAGE).await?,
        insert: client.prepare_cached(INSERT_EVENTS).await?,
        send: match ops.iter().any(|op| op.offered) {
            true => Some(client.prepare_cached(note::SEND_EACH).await?),
            false => None,
        },
    };
    let client: &tokio_postgres::Client = client;
    let rows = begin_with(client, locked_usage(client, &statements, &channels)).await?;
    let mut usage = HashMap::with_capacity(channels.len());
    for row in rows {
        usage.insert(row.get::<_, String>(0), usage_from(&row, 1));
    }
    let mut results = Vec::with_capacity(ops.len());
    let mut pending: Vec<&InsertOp> = Vec::with_capacity(ops.len());
    let mut offers = Vec::new();
    for op in ops {
        let event = &op.event;
        let size = stored_size(&event.headers, &event.body);
        let held = usage.entry(event.channel.as_str().to_owned()).or_default();
        let room = match quota.room(&event.channel, held, event.status, size) {
            Ok(room) => room,
            Err(refused) => {
                results.push(Err(refused));
                continue;
            }
        };
        if op.offered {
            offers.push(note::offered(event));
        }
        if room == Room::default() {
            held.add(event.status, size);
            pending.push(op);
        } else {
            insert_rows(client, &statements.insert, instance, &pending).await?;
            pending.clear();
            make_room(client, event.channel.as_str(), room).await?;
            insert_rows(client, &statements.insert, instance, &[*op]).await?;
            let channel = [event.channel.as_str()];
            let rows = locked_usage(client, &statements, &channel).await?;
            if let Some(row) = rows.first() {
                *held = usage_from(row, 1);
            }
        }
        results.push(Ok(()));
    }
    let inserted = insert_rows(client, &statements.insert, instance, &pending);
    match &statements.send {
        Some(send) if !offers.is_empty() => {
            // Sent when the transaction commits, and only then.
            let offers = [&offers as &(dyn tokio_postgres::types::ToSql + Sync)];
            let notified = client.execute(send, &offers);
            let both = async {
                let (inserted, notified) = futures_util::join!(inserted, notified);
                inserted.and(notified.map(drop))
            };
            commit_with(client, both).await?;
        }
        _ => commit_with(client, inserted).await?,
    }
    Ok(results)
}

/// The statements of an insert, prepared before its transaction begins.
struct Statements {
    lock: tokio_postgres::Statement,
    read: tokio_postgres::Statement,
    insert: tokio_postgres::Statement,
    /// [`note::SEND_EACH`], when an event is offered.
    send: Option<tokio_postgres::Statement>,
}

/// Locks `channels` (sorted) and reads their usage, pipelined: one round trip.
async fn locked_usage(
    client: &tokio_postgres::Client,
    statements: &Statements,
    channels: &[&str],
) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&channels];
    let (locked, rows) = futures_util::join!(
        client.execute(&statements.lock, &params),
        client.query(&statements.read, &params)
    );
    locked?;
    rows
}

/// The [`Usage`] in the four columns from `at` of a `channel_usage` row.
fn usage_from(row: &tokio_postgres::Row, at: usize) -> Usage {
    let count = |idx: usize| u64::try_from(row.get::<_, i64>(at + idx)).unwrap_or(0);
    Usage {
        undelivered: count(0),
        open_bytes: count(1),
        bytes: count(2),
        rejected: count(3),
    }
}

/// Deletes what `room` says must go from `channel`, oldest first.
async fn make_room(
    tx: &tokio_postgres::Client,
    channel: &str,
    room: Room,
) -> Result<(), tokio_postgres::Error> {
    let mut freed = 0u64;
    if room.drop_rejected > 0 {
        let rows = tx
            .query(
                DELETE_OLDEST_REJECTED,
                &[&channel, &bigint(room.drop_rejected)],
            )
            .await?;
        freed = rows
            .iter()
            .map(|row| u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
            .sum();
    }
    if freed < room.free_bytes {
        tx.execute(
            DELETE_OLDEST_FINISHED,
            &[&channel, &bigint(room.free_bytes - freed)],
        )
        .await?;
    }
    Ok(())
}

/// Inserts `ops`' events in one statement (`insert`, [`INSERT_EVENTS`]), in their order; a
/// `delivering` or offered one names `instance`. The statement is sent when first polled.
async fn insert_rows(
    tx: &tokio_postgres::Client,
    insert: &tokio_postgres::Statement,
    instance: uuid::Uuid,
    ops: &[&InsertOp],
) -> Result<(), tokio_postgres::Error> {
    if ops.is_empty() {
        return Ok(());
    }
    let events: Vec<&NewEvent> = ops.iter().map(|op| &op.event).collect();
    let column = |f: &dyn Fn(&NewEvent) -> i64| events.iter().map(|e| f(e)).collect::<Vec<_>>();
    let ids: Vec<uuid::Uuid> = events.iter().map(|e| *e.id.as_uuid()).collect();
    let channels: Vec<&str> = events.iter().map(|e| e.channel.as_str()).collect();
    let received = column(&|e| e.received_at);
    let sources: Vec<Option<&str>> = events.iter().map(|e| e.source.as_deref()).collect();
    let methods: Vec<&str> = events.iter().map(|e| e.method.as_str()).collect();
    let paths: Vec<&str> = events.iter().map(|e| e.path.as_str()).collect();
    let queries: Vec<Option<&str>> = events.iter().map(|e| e.query.as_deref()).collect();
    let headers: Vec<Vec<u8>> = events.iter().map(|e| encode_headers(&e.headers)).collect();
    let bodies: Vec<&[u8]> = events.iter().map(|e| e.body.as_ref()).collect();
    let sizes = column(&|e| bigint(stored_size(&e.headers, &e.body)));
    let body_lens = column(&|e| bigint(e.body.len()));
    let statuses: Vec<&str> = events.iter().map(|e| e.status.as_str()).collect();
    let next: Vec<Option<i64>> = events
        .iter()
        .map(|e| (e.status == EventStatus::Queued).then_some(e.received_at))
        .collect();
    let types: Vec<Option<&str>> = events.iter().map(|e| e.event_type.as_deref()).collect();
    let replays: Vec<Option<uuid::Uuid>> = events
        .iter()
        .map(|e| e.replay_of.map(|id| *id.as_uuid()))
        .collect();
    let instances: Vec<Option<uuid::Uuid>> = ops
        .iter()
        .map(|op| (op.offered || op.event.status == EventStatus::Delivering).then_some(instance))
        .collect();
    tx.execute(
        insert,
        &[
            &ids, &channels, &received, &sources, &methods, &paths, &queries, &headers, &bodies,
            &sizes, &body_lens, &statuses, &next, &types, &replays, &instances,
        ],
    )
    .await?;
    Ok(())
}
