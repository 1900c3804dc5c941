//! Turning result rows back into the store's types, and database errors into [`StoreError`].

use bytes::Bytes;
use protocol::{ChannelId, DeliveryId};
use tokio_postgres::Row;
use tokio_postgres::types::FromSql;

use crate::channel::{ChannelRecord, TokenHash};
use crate::store::{
    Attempt, AttemptKind, Event, EventStatus, EventSummary, StoreError, decode_headers,
};

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
        concat!(summary_columns!(), ", source, headers, body, seq")
    };
}
pub(super) use {event_columns, summary_columns};

/// Column `idx` of `row` as a `T`; a value of another type is [`StoreError::Corrupt`].
fn get<'a, T: FromSql<'a>>(row: &'a Row, idx: usize) -> Result<T, StoreError> {
    row.try_get(idx)
        .map_err(|e| StoreError::Corrupt(format!("column {idx}: {e}")))
}

/// Column `idx` as a count or size, which is never negative.
fn non_negative(row: &Row, idx: usize) -> Result<u64, StoreError> {
    let n: i64 = get(row, idx)?;
    u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("column {idx} is negative: {n}")))
}

/// Column `idx` as a 32-bit count.
fn small(row: &Row, idx: usize) -> Result<u32, StoreError> {
    let n: i64 = get(row, idx)?;
    u32::try_from(n).map_err(|_| StoreError::Corrupt(format!("column {idx} out of range: {n}")))
}

/// Column `idx` as a status code, when it has one.
fn status_code(row: &Row, idx: usize) -> Result<Option<u16>, StoreError> {
    let code: Option<i64> = get(row, idx)?;
    code.map(|code| {
        u16::try_from(code)
            .map_err(|_| StoreError::Corrupt(format!("status code {code} out of range")))
    })
    .transpose()
}

pub(super) fn channel_name(name: &str) -> Result<ChannelId, StoreError> {
    ChannelId::parse(name)
        .map_err(|_| StoreError::Corrupt(format!("channel name {name:?} is not valid")))
}

pub(super) fn event_status(status: &str) -> Result<EventStatus, StoreError> {
    EventStatus::parse(status)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown event status {status:?}")))
}

/// A registered channel from `name, token_hash, created_at, settings` from column `at` on.
pub(super) fn channel_from_row(row: &Row, at: usize) -> Result<ChannelRecord, StoreError> {
    let name = channel_name(get(row, at)?)?;
    let hash: &[u8] = get(row, at + 1)?;
    let hash = <[u8; 32]>::try_from(hash)
        .map_err(|_| StoreError::Corrupt(format!("token hash of {name} is not 32 bytes")))?;
    let settings: &str = get(row, at + 3)?;
    let settings = serde_json::from_str(settings)
        .map_err(|e| StoreError::Corrupt(format!("settings of {name}: {e}")))?;
    Ok(ChannelRecord {
        name,
        token_hash: TokenHash(hash),
        created_at: get(row, at + 2)?,
        settings,
    })
}

/// An event's summary from the columns `summary_columns!` lists, in that order.
pub(super) fn summary_from_row(row: &Row, channel: &ChannelId) -> Result<EventSummary, StoreError> {
    Ok(EventSummary {
        id: DeliveryId::from_uuid(get(row, 0)?),
        channel: channel.clone(),
        received_at: get(row, 1)?,
        method: get(row, 2)?,
        path: get(row, 3)?,
        query: get(row, 4)?,
        status: event_status(get(row, 5)?)?,
        attempts: small(row, 6)?,
        failures: small(row, 7)?,
        response_status: status_code(row, 8)?,
        body_len: non_negative(row, 9)?,
        next_attempt_at: get(row, 10)?,
        event_type: get(row, 11)?,
        replay_of: get::<Option<uuid::Uuid>>(row, 12)?.map(DeliveryId::from_uuid),
    })
}

/// An event (attempts left empty) and its `seq`, from the columns `event_columns!` lists.
pub(super) fn event_from_row(row: &Row, channel: &ChannelId) -> Result<(Event, i64), StoreError> {
    let event = Event {
        summary: summary_from_row(row, channel)?,
        source: get(row, 13)?,
        headers: decode_headers(get(row, 14)?)?,
        body: Bytes::copy_from_slice(get(row, 15)?),
        attempts: Vec::new(),
    };
    Ok((event, get(row, 16)?))
}

/// An attempt from `n, kind, started_at, duration_ms, agent, status, headers, body, error`.
pub(super) fn attempt_from_row(row: &Row) -> Result<Attempt, StoreError> {
    let kind: &str = get(row, 1)?;
    let kind = AttemptKind::parse(kind)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown attempt kind {kind:?}")))?;
    Ok(Attempt {
        n: small(row, 0)?,
        kind,
        started_at: get(row, 2)?,
        duration_ms: non_negative(row, 3)?,
        agent: get(row, 4)?,
        status: status_code(row, 5)?,
        headers: decode_headers(get(row, 6)?)?,
        body: Bytes::copy_from_slice(get(row, 7)?),
        error: get(row, 8)?,
    })
}

/// Maps a database error to [`StoreError::Backend`], with the server's own message when it
/// sent one (tokio-postgres's `Display` alone says only "db error").
pub(super) fn db_error(e: tokio_postgres::Error) -> StoreError {
    StoreError::Backend(describe(&e))
}

/// `e` and its cause, in one line.
pub(super) fn describe(e: &tokio_postgres::Error) -> String {
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// A store value as a `BIGINT` parameter (sizes and counts fit; a larger one saturates).
pub(super) fn bigint(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}
