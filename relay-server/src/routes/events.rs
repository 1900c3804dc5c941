//! History and replay: `/api/channels/{channel}/events[/{id}[/replay]]`.
//!
//! A channel's history holds its webhooks' bodies: every request here must carry the channel's
//! token (or the admin token) as `Authorization: Bearer TOKEN`, as [`ChannelAccess`] checks.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use bytes::Bytes;
use protocol::api;
use protocol::{ChannelId, DeliveryId, Headers, TypePattern};
use serde::Deserialize;
use tracing::info;

use crate::AppState;
use crate::error::Error;
use crate::feed::AttemptSummary;
use crate::routes::access::ChannelAccess;
use crate::store::{self, Attempt, Event, EventStatus, EventSummary, ListQuery, Millis, NewEvent};

/// Page size when the request names none, and the largest one allowed.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 500;

#[derive(Debug, Deserialize)]
pub struct ListParams {
    limit: Option<usize>,
    before: Option<String>,
    status: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
}

/// `GET /api/channels/{channel}/events?limit=&before=&status=&type=`: newest first, without
/// bodies. `type` is an event type, or a prefix of one ending in `*`. `next_before` is the
/// cursor for the next page, `null` on the last one.
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
                let names: Vec<&str> = EventStatus::ALL.iter().map(|s| s.as_str()).collect();
                Error::BadRequest(format!(
                    "status must be one of {} (got {s:?})",
                    names.join(", ")
                ))
            })
        })
        .transpose()?;
    let before = params.before.as_deref().map(parse_id).transpose()?;
    let event_type = (params.event_type.as_deref())
        .map(|t| TypePattern::parse(t).map_err(|e| Error::BadRequest(format!("type: {e}"))))
        .transpose()?;
    let query = ListQuery {
        // One more than asked tells whether another page follows.
        limit: limit + 1,
        before,
        status,
        event_type,
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
/// one of the channel's agents that takes its type (any agent for an `unrouted` one), with its
/// original delivery id. Answers with the new attempt.
///
/// With a body ([`api::ReplayEdit`]: a new body, new headers, or both), the edited request is
/// stored as a new event naming the original (`replay_of`) and delivered under its own id; the
/// original stays as it was.
pub async fn replay(
    State(state): State<AppState>,
    ChannelAccess(channel): ChannelAccess,
    Path((_, id)): Path<(String, String)>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<api::Replayed>, Error> {
    // Past `replay_body_limit` the body is not read on (see `routes::app`).
    let body = body.map_err(|_| Error::BodyTooLarge(replay_body_limit(&state) as u64))?;
    let edit: api::ReplayEdit = match body.is_empty() {
        true => api::ReplayEdit::default(),
        false => serde_json::from_slice(&body)
            .map_err(|e| Error::BadRequest(format!("replay body: {e}")))?,
    };
    let event = load(&state, &channel, &id).await?;
    if event.summary.status == EventStatus::Rejected {
        return Err(Error::Conflict(format!(
            "event {id} was rejected at the edge (its signature did not verify); it is kept \
             for inspection and cannot be replayed"
        )));
    }
    if !edit.is_empty() {
        return replay_edited(&state, event, edit).await;
    }
    let (attempt, status) = crate::relay::dispatch::replay(&state, &event).await?;
    info!(delivery_id = %event.summary.id, channel = %event.summary.channel, status = attempt.status, "replayed");
    let answer = api::Replayed {
        attempt: self::attempt(&attempt),
        event_type: event.summary.event_type,
        id: event.summary.id,
        method: event.summary.method,
        path: event.summary.path,
        query: event.summary.query,
        replay_of: None,
        status: status.into(),
    };
    Ok(Json(answer))
}

/// The edited replay of `original`: a new event with `edit`'s body and headers, its type
/// derived again from them.
async fn replay_edited(
    state: &AppState,
    original: Event,
    edit: api::ReplayEdit,
) -> Result<Json<api::Replayed>, Error> {
    let bad = |e: api::ContentError| Error::BadRequest(format!("replay body: {e}"));
    let body = match edit.body {
        None => original.body.clone(),
        Some(text) => {
            let encoding = edit.body_encoding.unwrap_or(api::BodyEncoding::Utf8);
            api::decode_body_text(text, encoding).map_err(bad)?
        }
    };
    if body.len() as u64 > state.config.max_body_bytes {
        return Err(Error::BodyTooLarge(state.config.max_body_bytes));
    }
    let headers = match edit.headers {
        None => original.headers.clone(),
        Some(headers) => headers
            .into_iter()
            .map(|h| {
                let (name, value) = h.decode().map_err(bad)?;
                let name = name.to_ascii_lowercase();
                let valid = axum::http::HeaderName::from_bytes(name.as_bytes()).is_ok()
                    && axum::http::HeaderValue::from_bytes(&value).is_ok();
                match valid {
                    true => Ok((name, value)),
                    false => Err(Error::BadRequest(format!(
                        "replay body: header {name:?} is not a valid HTTP header"
                    ))),
                }
            })
            .collect::<Result<Headers, Error>>()?,
    };
    let summary = &original.summary;
    let source = state.channels.get(&summary.channel);
    let event_type = crate::event_type::derive(
        source.as_ref().and_then(|r| r.settings.event_type.as_ref()),
        &headers,
        &body,
    );
    let edited = NewEvent {
        id: DeliveryId::random(),
        channel: summary.channel.clone(),
        received_at: store::now_ms(),
        source: original.source.clone(),
        method: summary.method.clone(),
        path: summary.path.clone(),
        query: summary.query.clone(),
        headers,
        body,
        status: EventStatus::Delivering,
        event_type,
        replay_of: Some(summary.id),
    };
    let (id, event_type) = (edited.id, edited.event_type.clone());
    let (attempt, status) = crate::relay::dispatch::replay_edited(state, summary, edited).await?;
    info!(delivery_id = %id, replay_of = %summary.id, channel = %summary.channel, status = attempt.status, "replayed with edits");
    Ok(Json(api::Replayed {
        attempt: self::attempt(&attempt),
        event_type,
        id,
        method: summary.method.clone(),
        path: summary.path.clone(),
        query: summary.query.clone(),
        replay_of: Some(summary.id),
        status: status.into(),
    }))
}

/// Largest body `POST .../replay` reads: an edit's body of `--max-body` bytes in base64 (4/3
/// of it) and room for its headers and the JSON around them.
pub fn replay_body_limit(state: &AppState) -> usize {
    let max = usize::try_from(state.config.max_body_bytes).unwrap_or(usize::MAX);
    (max / 3).saturating_mul(4).saturating_add(2 * 1024 * 1024)
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
        event_type: e.event_type.clone(),
        id: e.id,
        method: e.method.clone(),
        next_attempt_at: e
            .next_attempt_at
            .filter(|_| e.status == EventStatus::Queued)
            .map(time_json),
        path: e.path.clone(),
        query: e.query.clone(),
        received_at: time_json(e.received_at),
        replay_of: e.replay_of,
        response_status: e.response_status,
        status: e.status.into(),
    }
}

fn detail(event: &Event) -> api::EventDetail {
    let api::EventSummary {
        event_type,
        id,
        method,
        next_attempt_at,
        path,
        query,
        received_at,
        replay_of,
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
        event_type,
        headers: api::encode_headers(&event.headers),
        id,
        method,
        next_attempt_at,
        path,
        query,
        received_at,
        replay_of,
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
