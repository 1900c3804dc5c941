//! Records of attempts, a batch at a time ([`super::batch`]): one statement locks the
//! channels of the batch's events, then each record's statement is sent without waiting for
//! the one before (pipelined), and one commit covers them all.

use deadpool_postgres::Object;
use futures_util::future::join_all;
use protocol::DeliveryId;
use tokio_postgres::types::ToSql;

use super::batch::{Failed, Work};
use super::handover::note;
use super::rows::{bigint, channel_name, event_status};
use crate::store::{
    Attempt, EventStatus, MAX_RECORDED_BODY, Recorded, StoreError, Transition, encode_headers,
};

/// Locks the `channel_usage` rows of the channels of the events `$1` names, in name order
/// (bytewise, as inserts and prune take theirs).
const LOCK_CHANNELS_OF: &str = "SELECT channel FROM channel_usage
    WHERE channel IN (SELECT channel FROM events WHERE id = ANY($1::UUID[]))
    ORDER BY channel COLLATE \"C\" FOR UPDATE";
/// Counts an attempt on event `$1` and applies its outcome: `$3` the new status (`NULL`:
/// unchanged), `$4` whether `next_attempt_at` becomes `$5`, `$6` the new failure count
/// (`NULL`: unchanged); then adds the attempt numbered as the event's new count.
const RECORD: &str = "WITH e AS (
        UPDATE events SET attempts = attempts + 1,
            response_status = coalesce($2::BIGINT, response_status),
            status = coalesce($3::TEXT, status),
            next_attempt_at = CASE WHEN $4::BOOLEAN THEN $5::BIGINT ELSE next_attempt_at END,
            failures = coalesce($6::BIGINT, failures),
            -- Only a `delivering` event names who delivers it (or an offered one, which no
            -- attempt has been made at).
            instance = CASE WHEN coalesce($3::TEXT, status) = 'delivering'
                THEN instance END
        WHERE id = $1
        RETURNING seq, attempts, status, channel),
    a AS (
        INSERT INTO attempts (event_seq, n, kind, started_at, duration_ms, agent, status,
                              headers, body, error)
        SELECT seq, attempts, $7, $8, $9, $10, $2::BIGINT, $11, $12, $13 FROM e)
    SELECT attempts, status, channel FROM e";

/// One attempt to record on event `id`, and what it does to the event; `lazily` when nobody
/// waits on it being durable (see [`crate::store::Store::record_lazily`]).
pub(super) struct RecordOp {
    pub(super) id: DeliveryId,
    pub(super) attempt: Attempt,
    pub(super) then: Transition,
    pub(super) lazily: bool,
    /// The note sent in the same commit once it is recorded (see
    /// [`crate::store::Handover::record_answer`]).
    pub(super) note: Option<String>,
}

impl RecordOp {
    pub(super) fn new(id: DeliveryId, attempt: Attempt, then: Transition, lazily: bool) -> Self {
        RecordOp {
            id,
            attempt,
            then,
            lazily,
            note: None,
        }
    }
}

/// The parameters of [`RECORD`] that are not borrowed from the [`RecordOp`] as they are.
struct Params {
    status: Option<i64>,
    new_status: Option<&'static str>,
    set_next: bool,
    next: Option<i64>,
    failures: Option<i64>,
    kind: &'static str,
    duration_ms: i64,
    headers: Vec<u8>,
}

impl Params {
    fn of(op: &RecordOp) -> Params {
        let (new_status, set_next, next, failures) = match op.then {
            Transition::Delivered => (Some(EventStatus::Delivered), true, None, None),
            Transition::Failed => (Some(EventStatus::Failed), true, None, None),
            Transition::Retry { at, failures } => (
                Some(EventStatus::Queued),
                true,
                Some(at),
                Some(i64::from(failures)),
            ),
            Transition::Keep => (None, false, None, None),
        };
        Params {
            status: op.attempt.status.map(i64::from),
            new_status: new_status.map(EventStatus::as_str),
            set_next,
            next,
            failures,
            kind: op.attempt.kind.as_str(),
            duration_ms: bigint(op.attempt.duration_ms),
            headers: encode_headers(&op.attempt.headers),
        }
    }
}

/// Records of attempts.
pub(super) struct Records;

impl Work for Records {
    type Op = RecordOp;
    type Out = Recorded;

    async fn together(
        &self,
        client: &mut Object,
        ops: &[&RecordOp],
    ) -> Result<Vec<Result<Recorded, StoreError>>, Failed> {
        let tx = client.transaction().await?;
        let ids: Vec<uuid::Uuid> = ops.iter().map(|op| *op.id.as_uuid()).collect();
        let lock = tx.prepare_cached(LOCK_CHANNELS_OF).await?;
        let stmt = tx.prepare_cached(RECORD).await?;
        let params: Vec<Params> = ops.iter().map(|op| Params::of(op)).collect();
        let bodies: Vec<&[u8]> = ops
            .iter()
            .map(|op| &op.attempt.body[..op.attempt.body.len().min(MAX_RECORDED_BODY)])
            .collect();
        // Records nobody waits on do not wait for the WAL to reach the disk: visible at once,
        // durable with the next flush (within the WAL writer's delay), as SQLite's lazy
        // records ride the next group commit.
        let lazily = ops.iter().all(|op| op.lazily);
        let lazy = async {
            match lazily {
                true => tx.batch_execute("SET LOCAL synchronous_commit = off").await,
                false => Ok(()),
            }
        };
        let ids = [&ids as &(dyn ToSql + Sync)];
        let locked = tx.execute(&lock, &ids);
        // Polled in order, so sent in order, all in one round trip: the setting, the lock,
        // then the records (two records of one event apply in turn). The server runs them in
        // that order; should one fail, the ones after it fail too, and the first error is
        // the batch's.
        let records = join_all(ops.iter().zip(&params).zip(&bodies).map(|((op, p), body)| {
            let values: [&(dyn ToSql + Sync); 13] = [
                op.id.as_uuid(),
                &p.status,
                &p.new_status,
                &p.set_next,
                &p.next,
                &p.failures,
                &p.kind,
                &op.attempt.started_at,
                &p.duration_ms,
                &op.attempt.agent,
                &p.headers,
                body,
                &op.attempt.error,
            ];
            let tx = &tx;
            let stmt = &stmt;
            async move { tx.query_opt(stmt, &values).await }
        }));
        let (lazy, locked, rows) = futures_util::join!(lazy, locked, records);
        lazy?;
        locked?;
        let mut results = Vec::with_capacity(ops.len());
        let mut notes = Vec::new();
        for (op, row) in ops.iter().zip(rows) {
            results.push(match row? {
                None => Err(StoreError::UnknownEvent(op.id)),
                Some(row) => {
                    notes.extend(op.note.as_deref());
                    recorded(&row)
                }
            });
        }
        if !notes.is_empty() {
            // Sent when the transaction commits, and only then.
            let send = tx.prepare_cached(note::SEND_EACH).await?;
            tx.execute(&send, &[&notes]).await?;
        }
        tx.commit().await?;
        Ok(results)
    }
}

/// What a record's statement answered: the attempt's number, the status and the channel.
fn recorded(row: &tokio_postgres::Row) -> Result<Recorded, StoreError> {
    let n: i64 = row.get(0);
    Ok(Recorded {
        n: u32::try_from(n).unwrap_or(u32::MAX),
        status: event_status(row.get(1))?,
        channel: channel_name(row.get(2))?,
    })
}
