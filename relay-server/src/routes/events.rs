//! History and replay: `/api/channels/{channel}/events[/{id}[/replay]]`.
//!
//! A channel's history holds its webhooks' bodies: every request here must carry the channel's
//! token (or the admin token) as `Authorization: Bearer TOKEN`, as [`ChannelAccess`] checks.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use protocol::{ChannelId, DeliveryId, Headers};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tracing::info;

use crate::AppState;
use crate::error::Error;
use crate::feed::AttemptSummary;
use crate::routes::ChannelAccess;
use crate::store::{self, Attempt, Event, EventStatus, EventSummary, ListQuery, Millis};

/// Page size when the request names none, and the largest one allowed.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 500;

#[derive(Debug, Deserialize)]
pub struct ListParams {
    limit: Option<usize>,
    before: Option<String>,
    status: Option<String>,
}

/// `GET /api/channels/{channel}/events?limit=&before=&status=`: newest first, without bodies.
/// `next_before` is the cursor for the next page, `null` on the last one.
pub async fn list(
    State(state): State<AppState>,
    ChannelAccess(channel): ChannelAccess,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Value>, Error> {
    let Query(params) = params.map_err(|e| Error::BadRequest(e.body_text()))?;
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(Error::BadRequest(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    let status = params
        .status
        .map(|s| {
            EventStatus::parse(&s).ok_or_else(|| {
                Error::BadRequest(format!(
                    "status must be one of queued, delivering, delivered, failed, rejected (got {s:?})"
                ))
            })
        })
        .transpose()?;
    let before = params.before.as_deref().map(parse_id).transpose()?;
    let query = ListQuery {
        // One more than asked tells whether another page follows.
        limit: limit + 1,
        before,
        status,
    };
    let mut events = state.store.list(&channel, &query).await?;
    let next_before = (events.len() > limit).then(|| {
        events.truncate(limit);
        events.last().map(|e| e.id.to_string())
    });
    Ok(Json(json!({
        "channel": channel.as_str(),
        "events": events.iter().map(summary_json).collect::<Vec<_>>(),
        "next_before": next_before.flatten(),
    })))
}

/// `GET /api/channels/{channel}/events/{id}`: the whole request and every attempt.
pub async fn get(
    State(state): State<AppState>,
    ChannelAccess(channel): ChannelAccess,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<Value>, Error> {
    let event = load(&state, &channel, &id).await?;
    Ok(Json(event_json(&event)))
}

/// `POST /api/channels/{channel}/events/{id}/replay`: delivers the event again now, through
/// one of the channel's agents, with its original delivery id. Answers with the new attempt.
pub async fn replay(
    State(state): State<AppState>,
    ChannelAccess(channel): ChannelAccess,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<Value>, Error> {
    let event = load(&state, &channel, &id).await?;
    if event.summary.status == EventStatus::Rejected {
        return Err(Error::Conflict(format!(
            "event {id} was rejected at the edge (its signature did not verify); it is kept \
             for inspection and cannot be replayed"
        )));
    }
    let (attempt, status) = crate::dispatch::replay(&state, &event).await?;
    info!(delivery_id = %event.summary.id, channel = %event.summary.channel, status = attempt.status, "replayed");
    Ok(Json(json!({
        "id": event.summary.id.to_string(),
        "method": event.summary.method,
        "path": event.summary.path,
        "query": event.summary.query,
        "status": status.as_str(),
        "attempt": attempt_json(&attempt),
    })))
}

fn parse_id(id: &str) -> Result<DeliveryId, Error> {
    uuid::Uuid::parse_str(id)
        .map(DeliveryId::from_uuid)
        .map_err(|_| Error::BadRequest(format!("{id:?} is not an event id")))
}

async fn load(state: &AppState, channel: &ChannelId, id: &str) -> Result<Event, Error> {
    let id = parse_id(id)?;
    state
        .store
        .get(channel, id)
        .await?
        .ok_or(Error::UnknownEvent(id))
}

pub fn time_json(ms: Millis) -> String {
    humantime::format_rfc3339_millis(store::from_ms(ms)).to_string()
}

pub(crate) fn summary_json(e: &EventSummary) -> Value {
    json!({
        "id": e.id.to_string(),
        "received_at": time_json(e.received_at),
        "method": e.method,
        "path": e.path,
        "query": e.query,
        "status": e.status.as_str(),
        "attempts": e.attempts,
        "response_status": e.response_status,
        "body_bytes": e.body_len,
        "next_attempt_at": e.next_attempt_at.filter(|_| e.status == EventStatus::Queued).map(time_json),
    })
}

fn event_json(event: &Event) -> Value {
    let mut out = summary_json(&event.summary);
    if let Value::Object(map) = &mut out {
        map.insert("channel".into(), json!(event.summary.channel.as_str()));
        map.insert("source".into(), json!(event.source));
        map.insert("headers".into(), headers_json(&event.headers));
        insert_body(map, &event.body);
        map.insert(
            "attempts".into(),
            Value::Array(event.attempts.iter().map(attempt_json).collect()),
        );
    }
    out
}

fn attempt_json(a: &Attempt) -> Value {
    let mut out = attempt_summary_json(&AttemptSummary::from(a));
    if let Value::Object(map) = &mut out {
        map.insert("headers".into(), headers_json(&a.headers));
        insert_body(map, &a.body);
    }
    out
}

/// An attempt as [`attempt_json`] shows it, without the response headers and body.
pub(crate) fn attempt_summary_json(a: &AttemptSummary) -> Value {
    json!({
        "n": a.n,
        "kind": a.kind.as_str(),
        "started_at": time_json(a.started_at),
        "duration_ms": a.duration_ms,
        "agent": a.agent,
        "status": a.status,
        "error": a.error,
    })
}

/// Headers as `[{"name", "value"}]`, or `value_base64` for a value that is not UTF-8, so
/// every byte survives the trip through JSON.
fn headers_json(headers: &Headers) -> Value {
    Value::Array(
        headers
            .iter()
            .map(|(name, value)| match std::str::from_utf8(value) {
                Ok(text) => json!({ "name": name, "value": text }),
                Err(_) => json!({ "name": name, "value_base64": BASE64.encode(value) }),
            })
            .collect(),
    )
}

/// `body` as text when it is UTF-8, base64 otherwise, named by `body_encoding`.
fn insert_body(map: &mut Map<String, Value>, body: &[u8]) {
    let (text, encoding) = match std::str::from_utf8(body) {
        Ok(text) => (text.to_owned(), "utf8"),
        Err(_) => (BASE64.encode(body), "base64"),
    };
    map.insert("body".into(), json!(text));
    map.insert("body_encoding".into(), json!(encoding));
    map.insert("body_bytes".into(), json!(body.len()));
}
