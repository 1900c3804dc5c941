//! Turning result rows back into the store's types, and SQLite errors into [`StoreError`].

use bytes::Bytes;
use protocol::{ChannelId, DeliveryId};
use rusqlite::Row;
use rusqlite::types::Type;

use super::files::BodyFiles;
use crate::channel::{ChannelRecord, TokenHash};
use crate::store::{
    Attempt, AttemptKind, Event, EventStatus, EventSummary, StoreError, decode_headers,
};

/// A registered channel from `name, token_hash, created_at, settings`.
pub(super) fn channel_from_row(row: &Row<'_>) -> rusqlite::Result<ChannelRecord> {
    let name: String = row.get(0)?;
    let name = ChannelId::parse(&name)
        .map_err(|_| corrupt(0, Type::Text, format!("channel name {name:?} is not valid")))?;
    let hash: Vec<u8> = row.get(1)?;
    let hash = <[u8; 32]>::try_from(hash.as_slice()).map_err(|_| {
        corrupt(
            1,
            Type::Blob,
            format!("token hash of {name} is not 32 bytes"),
        )
    })?;
    let settings: String = row.get(3)?;
    let settings = serde_json::from_str(&settings)
        .map_err(|e| corrupt(3, Type::Text, format!("settings of {name}: {e}")))?;
    Ok(ChannelRecord {
        name,
        token_hash: TokenHash(hash),
        created_at: row.get(2)?,
        settings,
    })
}

/// An event's summary from the columns `summary_columns!` lists, in that order.
pub(super) fn summary_from_row(
    row: &Row<'_>,
    channel: &ChannelId,
) -> rusqlite::Result<EventSummary> {
    let id: String = row.get(0)?;
    let id = uuid::Uuid::parse_str(&id)
        .map(DeliveryId::from_uuid)
        .map_err(|_| corrupt(0, Type::Text, format!("event id {id:?} is not a UUID")))?;
    let status: String = row.get(5)?;
    let status = EventStatus::parse(&status)
        .ok_or_else(|| corrupt(5, Type::Text, format!("unknown event status {status:?}")))?;
    Ok(EventSummary {
        id,
        channel: channel.clone(),
        received_at: row.get(1)?,
        method: row.get(2)?,
        path: row.get(3)?,
        query: row.get(4)?,
        status,
        attempts: row.get(6)?,
        failures: row.get(7)?,
        response_status: row.get(8)?,
        body_len: non_negative(row, 9)?,
        next_attempt_at: row.get(10)?,
        event_type: row.get(11)?,
        replay_of: row
            .get::<_, Option<String>>(12)?
            .map(|text| {
                uuid::Uuid::parse_str(&text)
                    .map(DeliveryId::from_uuid)
                    .map_err(|_| {
                        corrupt(12, Type::Text, format!("replay_of {text:?} is not a UUID"))
                    })
            })
            .transpose()?,
    })
}

/// An event (attempts left empty) and its `seq`, from the columns `event_columns!` lists; a
/// body in a file is read from `files`.
pub(super) fn event_from_row(
    row: &Row<'_>,
    channel: &ChannelId,
    files: &BodyFiles,
) -> rusqlite::Result<(Event, i64)> {
    let summary = summary_from_row(row, channel)?;
    let headers = decode_headers(&row.get::<_, Vec<u8>>(14)?)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(14, Type::Blob, Box::new(e)))?;
    let body = if row.get::<_, bool>(17)? {
        files.read(summary.id).map_err(|e| {
            let what = format!("the body file of event {}: {e}", summary.id);
            corrupt(15, Type::Blob, what)
        })?
    } else {
        Bytes::from(row.get::<_, Vec<u8>>(15)?)
    };
    let event = Event {
        summary,
        source: row.get(13)?,
        headers,
        body,
        attempts: Vec::new(),
    };
    Ok((event, row.get(16)?))
}

/// An attempt from `n, kind, started_at, duration_ms, agent, status, headers, body, error`.
pub(super) fn attempt_from_row(row: &Row<'_>) -> rusqlite::Result<Attempt> {
    let kind: String = row.get(1)?;
    let kind = AttemptKind::parse(&kind)
        .ok_or_else(|| corrupt(1, Type::Text, format!("unknown attempt kind {kind:?}")))?;
    let headers = decode_headers(&row.get::<_, Vec<u8>>(6)?)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(6, Type::Blob, Box::new(e)))?;
    Ok(Attempt {
        n: row.get(0)?,
        kind,
        started_at: row.get(2)?,
        duration_ms: non_negative(row, 3)?,
        agent: row.get(4)?,
        status: row.get(5)?,
        headers,
        body: Bytes::from(row.get::<_, Vec<u8>>(7)?),
        error: row.get(8)?,
    })
}

fn non_negative(row: &Row<'_>, idx: usize) -> rusqlite::Result<u64> {
    let n: i64 = row.get(idx)?;
    u64::try_from(n).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(idx, n))
}

fn corrupt(idx: usize, ty: Type, what: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, ty, Box::new(StoreError::Corrupt(what)))
}

/// Maps a database error: a value that does not decode is [`StoreError::Corrupt`], anything
/// else [`StoreError::Backend`].
pub(super) fn db_error(e: rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::FromSqlConversionFailure(_, _, source) => {
            match source.downcast::<StoreError>() {
                Ok(e) => *e,
                Err(other) => StoreError::Corrupt(other.to_string()),
            }
        }
        rusqlite::Error::IntegralValueOutOfRange(..) | rusqlite::Error::InvalidColumnType(..) => {
            StoreError::Corrupt(e.to_string())
        }
        e => StoreError::Backend(e.to_string()),
    }
}
