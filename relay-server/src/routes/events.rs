//! History and replay: `/api/channels/{channel}/events[/{id}[/replay]]`.
//!
//! A channel's history holds its webhooks' bodies: every request here must carry the channel's
//! token (or the admin token) as `Authorization: Bearer TOKEN`, as [`ChannelAccess`] checks.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use protocol::api;
use protocol::{ChannelId, DeliveryId};
use serde::Deserialize;
use tracing::info;

use crate::AppState;
use crate::error::Error;
use crate::feed::AttemptSummary;
use crate::routes::access::ChannelAccess;
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
) -> Result<Json<api::EventPage>, Error> {
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
    Ok(Json(api::EventPage {
        channel: channel.to_string(),
        events: events.iter().map(summary).collect(),
        next_before: next_before.flatten(),
    }))
}

/// `GET /api/channels/{channel}/events/{id}`: the whole request and every attempt.
pub async fn get(
    State(state): State<AppState>,
    ChannelAccess(channel): ChannelAccess,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<api::EventDetail>, Error> {
    let event = load(&state, &channel, &id).await?;
    Ok(Json(detail(&event)))
}

/// `POST /api/channels/{channel}/events/{id}/replay`: delivers the event again now, through
/// one of the channel's agents, with its original delivery id. Answers with the new attempt.
pub async fn replay(
    State(state): State<AppState>,
    ChannelAccess(channel): ChannelAccess,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<api::Replayed>, Error> {
    let event = load(&state, &channel, &id).await?;
    if event.summary.status == EventStatus::Rejected {
        return Err(Error::Conflict(format!(
            "event {id} was rejected at the edge (its signature did not verify); it is kept \
             for inspection and cannot be replayed"
        )));
    }
    let (attempt, status) = crate::relay::dispatch::replay(&state, &event).await?;
    info!(delivery_id = %event.summary.id, channel = %event.summary.channel, status = attempt.status, "replayed");
    let answer = api::Replayed {
        attempt: self::attempt(&attempt),
        id: event.summary.id,
        method: event.summary.method,
        path: event.summary.path,
        query: event.summary.query,
        status: status.into(),
    };
    Ok(Json(answer))
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

/// An event as the history lists it.
pub(crate) fn summary(e: &EventSummary) -> api::EventSummary {
    api::EventSummary {
        attempts: e.attempts,
        body_bytes: e.body_len,
        id: e.id,
        method: e.method.clone(),
        next_attempt_at: e
            .next_attempt_at
            .filter(|_| e.status == EventStatus::Queued)
            .map(time_json),
        path: e.path.clone(),
        query: e.query.clone(),
        received_at: time_json(e.received_at),
        response_status: e.response_status,
        status: e.status.into(),
    }
}

fn detail(event: &Event) -> api::EventDetail {
    let api::EventSummary {
        id,
        method,
        next_attempt_at,
        path,
        query,
        received_at,
        response_status,
        status,
        ..
    } = summary(&event.summary);
    let (body, body_encoding) = api::encode_body(&event.body);
    api::EventDetail {
        attempts: event.attempts.iter().map(attempt).collect(),
        body,
        body_bytes: event.body.len() as u64,
        body_encoding,
        channel: event.summary.channel.to_string(),
        headers: api::encode_headers(&event.headers),
        id,
        method,
        next_attempt_at,
        path,
        query,
        received_at,
        response_status,
        source: event.source.clone(),
        status,
    }
}

fn attempt(a: &Attempt) -> api::Attempt {
    api::Attempt::new(
        attempt_summary(&AttemptSummary::from(a)),
        &a.headers,
        &a.body,
    )
}

/// An attempt as [`attempt`] shows it, without the response headers and body.
pub(crate) fn attempt_summary(a: &AttemptSummary) -> api::AttemptSummary {
    api::AttemptSummary {
        agent: a.agent.clone(),
        duration_ms: a.duration_ms,
        error: a.error.clone(),
        kind: a.kind.into(),
        n: a.n,
        started_at: time_json(a.started_at),
        status: a.status,
    }
}
