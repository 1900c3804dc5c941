//! Records of attempts, a batch at a time ([`super::batch`]): one statement locks the
//! channels of the batch's events, then each record's statement, and one commit covers them
//! all, the whole transaction sent in one round trip (pipelined).

use std::collections::HashMap;

use deadpool_postgres::Object;
use futures_util::future::join_all;
use protocol::DeliveryId;
use tokio_postgres::types::ToSql;

use super::batch::{Failed, Work, begin_with, commit_with};
use super::rows::{bigint, channel_name, event_status};
use crate::store::{
    Attempt, EventStatus, MAX_RECORDED_BODY, Recorded, StoreError, Transition, encode_headers,
};

/// Locks the `channel_usage` rows of the channels of the events `$1` names, in name order
/// (bytewise, as inserts and prune take theirs).
const LOCK_CHANNELS_OF: &str = "SELECT channel FROM channel_usage
    WHERE channel IN (SELECT channel FROM events WHERE id = ANY($1::UUID[]))
    ORDER BY channel COLLATE \"C\" FOR UPDATE";
/// Counts an attempt on each event the arrays name (`$1`, no id twice) and applies its
/// outcome: `$3` the new status (`NULL`: unchanged), `$4` whether `next_attempt_at` becomes
/// `$5`, `$6` the new failure count (`NULL`: unchanged); then adds each attempt, numbered as
/// its event's new count. `$14`, when given, is a note sent when the transaction commits, if
/// the event exists. One statement for a batch: the counting trigger runs once for it.
const RECORD: &str = "WITH i AS (
        SELECT * FROM unnest($1::UUID[], $2::BIGINT[], $3::TEXT[], $4::BOOLEAN[], $5::BIGINT[],
            $6::BIGINT[], $7::TEXT[], $8::BIGINT[], $9::BIGINT[], $10::TEXT[], $11::BYTEA[],
            $12::BYTEA[], $13::TEXT[], $14::TEXT[])
        AS i(r_id, r_status, r_new_status, r_set_next, r_next, r_failures, r_kind, r_started_at,
             r_duration_ms, r_agent, r_headers, r_body, r_error, r_note)),
    e AS (
        UPDATE events SET attempts = attempts + 1,
            response_status = coalesce(r_status, response_status),
            status = coalesce(r_new_status, status),
            next_attempt_at = CASE WHEN r_set_next THEN r_next ELSE next_attempt_at END,
            failures = coalesce(r_failures, failures),
            -- Only a `delivering` event names who delivers it (or an offered one, which no
            -- attempt has been made at).
            instance = CASE WHEN coalesce(r_new_status, status) = 'delivering'
                THEN instance END
        FROM i WHERE id = r_id
        RETURNING id, seq, attempts, status, channel),
    a AS (
        INSERT INTO attempts (event_seq, n, kind, started_at, duration_ms, agent, status,
                              headers, body, error)
        SELECT seq, attempts, r_kind, r_started_at, r_duration_ms, r_agent, r_status,
               r_headers, r_body, r_error
        FROM e JOIN i ON r_id = id)
    SELECT id, attempts, status, channel,
        CASE WHEN r_note IS NOT NULL THEN pg_notify('hookrelay', r_note)::TEXT END
    FROM e JOIN i ON r_id = id";

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
        let ids: Vec<uuid::Uuid> = ops.iter().map(|op| *op.id.as_uuid()).collect();
        let lock = client.prepare_cached(LOCK_CHANNELS_OF).await?;
        let stmt = client.prepare_cached(RECORD).await?;
        let client: &tokio_postgres::Client = client;
        let rounds = rounds(ops);
        let columns: Vec<Columns> = rounds.iter().map(|round| Columns::of(round)).collect();
        // Records nobody waits on do not wait for the WAL to reach the disk: visible at once,
        // durable with the next flush (within the WAL writer's delay), as SQLite's lazy
        // records ride the next group commit.
        let lazily = ops.iter().all(|op| op.lazily);
        let lazy = async {
            match lazily {
                true => {
                    client
                        .batch_execute("SET LOCAL synchronous_commit = off")
                        .await
                }
                false => Ok(()),
            }
        };
        let ids = [&ids as &(dyn ToSql + Sync)];
        let locked = client.execute(&lock, &ids);
        // Polled in order, so sent in order: the setting, the lock, then the rounds (two
        // records of one event apply in turn). The server runs them in that order; should
        // one fail, the ones after it fail too, and the first error is the batch's.
        let records = join_all(columns.iter().map(|c| {
            let stmt = &stmt;
            async move { client.query(stmt, &c.params()).await }
        }));
        let all = async {
            let (lazy, locked, rounds) = futures_util::join!(lazy, locked, records);
            lazy?;
            locked?;
            rounds.into_iter().collect::<Result<Vec<_>, _>>()
        };
        let answered = commit_with(client, begin_with(client, all)).await?;
        let mut results: Vec<Result<Recorded, StoreError>> = ops
            .iter()
            .map(|op| Err(StoreError::UnknownEvent(op.id)))
            .collect();
        for (round, rows) in rounds.iter().zip(answered) {
            let at: HashMap<uuid::Uuid, usize> = round
                .iter()
                .map(|(at, op)| (*op.id.as_uuid(), *at))
                .collect();
            for row in rows {
                if let Some(&at) = at.get(&row.get::<_, uuid::Uuid>(0)) {
                    results[at] = recorded(&row);
                }
            }
        }
        Ok(results)
    }
}

/// `ops` in rounds in which no event comes twice, each op with its place in `ops`: one
/// statement per round, in order, so that two records of one event apply in turn.
fn rounds<'a>(ops: &[&'a RecordOp]) -> Vec<Vec<(usize, &'a RecordOp)>> {
    let mut rounds: Vec<Vec<(usize, &RecordOp)>> = Vec::new();
    let mut seen: HashMap<DeliveryId, usize> = HashMap::with_capacity(ops.len());
    for (at, op) in ops.iter().enumerate() {
        let round = seen.entry(op.id).and_modify(|n| *n += 1).or_insert(0);
        if rounds.len() <= *round {
            rounds.push(Vec::new());
        }
        rounds[*round].push((at, *op));
    }
    rounds
}

/// The arrays of [`RECORD`] for one round.
struct Columns<'a> {
    ids: Vec<uuid::Uuid>,
    statuses: Vec<Option<i64>>,
    new_statuses: Vec<Option<&'static str>>,
    set_next: Vec<bool>,
    next: Vec<Option<i64>>,
    failures: Vec<Option<i64>>,
    kinds: Vec<&'static str>,
    started_at: Vec<i64>,
    durations: Vec<i64>,
    agents: Vec<Option<&'a str>>,
    headers: Vec<Vec<u8>>,
    bodies: Vec<&'a [u8]>,
    errors: Vec<Option<&'a str>>,
    notes: Vec<Option<&'a str>>,
}

impl<'a> Columns<'a> {
    fn of(round: &[(usize, &'a RecordOp)]) -> Columns<'a> {
        let n = round.len();
        let mut c = Columns {
            ids: Vec::with_capacity(n),
            statuses: Vec::with_capacity(n),
            new_statuses: Vec::with_capacity(n),
            set_next: Vec::with_capacity(n),
            next: Vec::with_capacity(n),
            failures: Vec::with_capacity(n),
            kinds: Vec::with_capacity(n),
            started_at: Vec::with_capacity(n),
            durations: Vec::with_capacity(n),
            agents: Vec::with_capacity(n),
            headers: Vec::with_capacity(n),
            bodies: Vec::with_capacity(n),
            errors: Vec::with_capacity(n),
            notes: Vec::with_capacity(n),
        };
        for (_, op) in round {
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
            let attempt = &op.attempt;
            c.ids.push(*op.id.as_uuid());
            c.statuses.push(attempt.status.map(i64::from));
            c.new_statuses.push(new_status.map(EventStatus::as_str));
            c.set_next.push(set_next);
            c.next.push(next);
            c.failures.push(failures);
            c.kinds.push(attempt.kind.as_str());
            c.started_at.push(attempt.started_at);
            c.durations.push(bigint(attempt.duration_ms));
            c.agents.push(attempt.agent.as_deref());
            c.headers.push(encode_headers(&attempt.headers));
            c.bodies
                .push(&attempt.body[..attempt.body.len().min(MAX_RECORDED_BODY)]);
            c.errors.push(attempt.error.as_deref());
            c.notes.push(op.note.as_deref());
        }
        c
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 14] {
        [
            &self.ids,
            &self.statuses,
            &self.new_statuses,
            &self.set_next,
            &self.next,
            &self.failures,
            &self.kinds,
            &self.started_at,
            &self.durations,
            &self.agents,
            &self.headers,
            &self.bodies,
            &self.errors,
            &self.notes,
        ]
    }
}

/// What a record's statement answered for one event: the attempt's number, the status and
/// the channel (after its id).
fn recorded(row: &tokio_postgres::Row) -> Result<Recorded, StoreError> {
    let n: i64 = row.get(1);
    Ok(Recorded {
        n: u32::try_from(n).unwrap_or(u32::MAX),
        status: event_status(row.get(2))?,
        channel: channel_name(row.get(3))?,
    })
}
