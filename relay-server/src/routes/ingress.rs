//! `ANY /h/{channel}/{*path}`: a webhook comes in, goes to one of the channel's agents, and the
//! target's answer goes back to the sender.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use http_body_util::BodyExt as _;
use protocol::{ChannelId, DeliveryId, Headers};
use serde_json::json;
use tokio::time::{Instant as Deadline, timeout_at};
use tracing::{Instrument, info, info_span, warn};

use crate::AppState;
use crate::channels::{ChannelRecord, Mode};
use crate::delivery::{InFlight, Outgoing, forwarded_headers};
use crate::error::Error;
use crate::registry::AgentHandle;
use crate::store::{self, AttemptKind, EventStatus, NewEvent, Transition};
use crate::tls::Peer;

pub use crate::delivery::DELIVERY_HEADER;

/// Deliveries one agent may have in flight; past this new webhooks are queued rather than the
/// server piling work on an agent that cannot keep up.
const MAX_IN_FLIGHT_PER_AGENT: usize = 1024;

/// How a webhook was answered, for the log line.
enum Answer {
    /// The target's own response.
    Target(Response),
    /// No agent could take it now: stored for later.
    Queued(Response),
    /// `--ack-after` passed: the sender got 202 and the delivery goes on.
    Pending(Response),
}

pub async fn ingress(State(state): State<AppState>, req: Request) -> Response {
    let id = DeliveryId::random();
    let started = Instant::now();
    let method = req.method().clone();
    let (channel, suffix) = match split_path(req.uri().path()) {
        Ok(split) => split,
        Err(e) => {
            state.metrics.refused(&e);
            info!(status = e.status().as_u16(), error = %e, "webhook refused");
            return e.into_response();
        }
    };
    let suffix = suffix.to_owned();
    // Looked up once: the metrics label and every check below use the same record.
    let registered = state.channels.get(&channel);
    let label = crate::metrics::label(&channel, registered.is_some());
    let span = info_span!("delivery", delivery_id = %id, %channel, %method);
    let mut response = async {
        let result = deliver(&state, id, channel, registered, suffix, req).await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match result {
            Ok(answer) => {
                let (response, outcome, live) = match answer {
                    Answer::Target(r) => (r, "delivered", Some(started.elapsed())),
                    Answer::Queued(r) => (r, "queued", None),
                    Answer::Pending(r) => (r, "acknowledged, delivery goes on", None),
                };
                let status = response.status().as_u16();
                state.metrics.answered(label, status, live);
                info!(status, elapsed_ms, "{outcome}");
                count_bytes_out(&state, response)
            }
            Err(e) => {
                let status = e.status().as_u16();
                state.metrics.refused(&e);
                state.metrics.answered(label, status, None);
                let cause = std::error::Error::source(&e).map(ToString::to_string);
                if e.status().is_server_error() {
                    warn!(status, elapsed_ms, error = %e, cause, "delivery failed");
                } else if matches!(e, Error::ChannelFull(_)) {
                    warn!(status, elapsed_ms, error = %e, "delivery refused: the channel is full");
                } else {
                    info!(status, elapsed_ms, error = %e, "delivery refused");
                }
                e.into_response()
            }
        }
    }
    .instrument(span)
    .await;
    if let Ok(value) = HeaderValue::from_str(&id.to_string()) {
        response.headers_mut().insert(DELIVERY_HEADER, value);
    }
    response
}

/// The response with its body's bytes counted as they go out to the sender.
fn count_bytes_out(state: &AppState, response: Response) -> Response {
    let state = Arc::clone(state);
    response.map(|body| {
        Body::new(body.map_frame(move |frame| {
            if let Some(data) = frame.data_ref() {
                state.metrics.bytes_out(data.len());
            }
            frame
        }))
    })
}

/// Splits `/h/{channel}{suffix}` into the channel and the raw (still percent-encoded) suffix,
/// which is empty or starts with `/`. A name no channel can have is
/// [`Error::InvalidChannel`], which says why.
pub fn split_path(path: &str) -> Result<(ChannelId, &str), Error> {
    let rest = path.strip_prefix("/h/").ok_or(Error::NotFound)?;
    let end = rest.find('/').unwrap_or(rest.len());
    let channel = Error::channel_in_path(&rest[..end])?;
    Ok((channel, &rest[end..]))
}

/// Reads the webhook, stores it, then either delivers it live (an agent is connected) or
/// leaves it queued for the dispatcher. Stored first: the target never sees a webhook the
/// store does not have.
async fn deliver(
    state: &AppState,
    id: DeliveryId,
    channel: ChannelId,
    registered: Option<Arc<ChannelRecord>>,
    suffix: String,
    req: Request,
) -> Result<Answer, Error> {
    let _slot = state.ingress_slots.try_acquire().map_err(|_| Error::Busy)?;
    if registered.is_none() && !state.open {
        return Err(Error::UnknownChannel(channel));
    }
    let settings = registered.as_ref().map(|r| &r.settings);
    let peer = Peer::of(req.extensions()).map(|p| p.addr);
    let client = state.client_ip(req.extensions(), req.headers());
    if let Some(allowed) = settings
        .map(|s| &s.allow_from)
        .filter(|nets| !nets.is_empty())
    {
        if !client.is_some_and(|ip| allowed.iter().any(|net| net.contains(&ip))) {
            let ip = client.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
            return Err(Error::SourceNotAllowed(ip));
        }
    }
    if let Some(free) = state.disk.low() {
        return Err(Error::DiskLow(free));
    }
    if registered.is_none() {
        // Open mode: the name is the only secret, so one address may not flood the server
        // with channels of its own (on a public relay; see `limits::SourceLimits`).
        limit_source(state, client, "open channel")?;
    }
    let mode = settings.map_or(Mode::Balance, |s| s.mode);
    let started = Deadline::now();
    let deadline = started + state.config.timeout;
    let max = state.config.max_body_bytes;
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max) {
        return Err(Error::BodyTooLarge(max));
    }
    let body = read_body(body, max, deadline).await?;
    state.metrics.bytes_in(body.len());
    let headers: Headers = parts
        .headers
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), Bytes::copy_from_slice(v.as_bytes())))
        .collect();
    let mut event = NewEvent {
        id,
        channel: channel.clone(),
        received_at: store::now_ms(),
        // The sender: the connection's peer, or the client behind a trusted proxy.
        source: match (peer, client) {
            (Some(peer), Some(client)) if client != peer.ip() => Some(client.to_string()),
            (peer, _) => peer.map(|p| p.to_string()),
        },
        method: parts.method.as_str().to_owned(),
        path: suffix,
        query: parts.uri.query().map(str::to_owned),
        headers,
        body,
        status: EventStatus::Queued,
    };
    if let Some(verify) = settings.and_then(|s| s.verify.as_ref()) {
        let now = event.received_at.div_euclid(1000);
        if let Err(e) = verify.check(&event.headers, &event.body, now) {
            limit_source(state, client, "signature failed")?;
            reject(state, event, &e).await?;
            return Err(Error::Signature(e));
        }
    }
    let pace = settings.and_then(|s| s.rate_limit);
    let mut agents: Vec<Arc<AgentHandle>> = Vec::new();
    if state.paces.admit(&channel, pace) {
        agents = match mode {
            Mode::Balance => state.registry.pick(&channel).into_iter().collect(),
            Mode::Fanout => state.registry.agents(&channel),
        };
        agents.retain(|agent| agent.in_flight() < MAX_IN_FLIGHT_PER_AGENT);
    }
    if agents.is_empty() {
        state.store.insert(event).await?;
        if state.paces.is_paced(pace) {
            state.paces.queued(&channel);
        }
        state.dispatcher.kick(state, &channel);
        return Ok(Answer::Queued(queued_answer(state, id, &channel)));
    }
    event.status = EventStatus::Delivering;
    let out = Outgoing {
        id,
        method: event.method.clone(),
        path: event.path.clone(),
        query: event.query.clone(),
        headers: forwarded_headers(
            state,
            id,
            AttemptKind::Live,
            &event.headers,
            event.body.len(),
            peer,
        ),
        body: event.body.clone(),
    };
    state.store.insert(event).await?;
    match <[_; 1]>::try_from(agents) {
        Ok([agent]) => live(state, &channel, agent, &out, started, deadline).await,
        Err(agents) => fanout(state, agents, &out, deadline).await,
    }
}

/// Stores a webhook that failed its signature check as `rejected`, with the relay's 401 as
/// its only attempt, so the history shows what came and why it went no further.
async fn reject(
    state: &AppState,
    mut event: NewEvent,
    why: &crate::verify::VerifyError,
) -> Result<(), Error> {
    let id = event.id;
    event.status = EventStatus::Rejected;
    let received_at = event.received_at;
    state.store.insert(event).await?;
    let attempt = store::Attempt {
        n: 0,
        kind: AttemptKind::Live,
        started_at: received_at,
        duration_ms: 0,
        agent: None,
        status: Some(StatusCode::UNAUTHORIZED.as_u16()),
        headers: Vec::new(),
        body: Bytes::new(),
        error: Some(format!("not forwarded: signature check failed: {why}")),
    };
    state.store.record(id, attempt, Transition::Keep).await?;
    Ok(())
}

/// Fanout: every agent gets a copy at once. The first answer that accepts the webhook (see
/// [`store::accepted`]) goes back to the sender, and its attempt decides the event's status;
/// when none does, the last answer or error does. One developer's target being down does not
/// fail the sender while another's took the webhook. Every other copy finishes in the
/// background and is recorded as an attempt of its own.
async fn fanout(
    state: &AppState,
    agents: Vec<Arc<AgentHandle>>,
    out: &Outgoing,
    deadline: Deadline,
) -> Result<Answer, Error> {
    let id = out.id;
    let mut copies: FuturesUnordered<_> = agents
        .into_iter()
        .map(|agent| {
            let (state, out) = (Arc::clone(state), out.clone());
            async move {
                let mut inflight = InFlight::begin(agent, out.id);
                let head = match inflight.send(&state, &out, deadline).await {
                    Ok(()) => inflight.head(&state, deadline).await,
                    Err(e) => Err(e),
                };
                (inflight, head)
            }
        })
        .collect();
    while let Some((inflight, head)) = copies.next().await {
        match head {
            Ok(head) if !store::accepted(head.0.status) && !copies.is_empty() => {
                let rest = Arc::clone(state);
                state.tracker.spawn(async move {
                    let attempt = inflight.read_body(head, deadline).await;
                    record(&rest, id, attempt, Transition::Keep);
                });
            }
            Ok(head) => {
                let rest = Arc::clone(state);
                state.tracker.spawn(async move {
                    while let Some((inflight, head)) = copies.next().await {
                        let attempt = match head {
                            Ok(head) => inflight.read_body(head, deadline).await,
                            Err(e) => inflight.failed(&e),
                        };
                        record(&rest, id, attempt, Transition::Keep);
                    }
                });
                let (response, recorded) = inflight.stream(head);
                let recorder = Arc::clone(state);
                state.tracker.spawn(async move {
                    if let Ok(attempt) = recorded.await {
                        record_live(&recorder, id, attempt);
                    }
                });
                return Ok(Answer::Target(response));
            }
            Err(e) if copies.is_empty() => {
                record_live(state, id, inflight.failed(&e));
                return Err(e);
            }
            Err(e) => record(state, id, inflight.failed(&e), Transition::Keep),
        }
    }
    Err(Error::AgentGone)
}

/// Delivers while the sender waits, and records the attempt once the response is done. With
/// `--ack-after`, a slow target gets the sender a 202 and the delivery goes on in the
/// background; from then on the event is ours to retry.
async fn live(
    state: &AppState,
    channel: &ChannelId,
    agent: Arc<AgentHandle>,
    out: &Outgoing,
    started: Deadline,
    deadline: Deadline,
) -> Result<Answer, Error> {
    let id = out.id;
    let mut inflight = InFlight::begin(agent, id);
    if let Err(e) = inflight.send(state, out, deadline).await {
        record_live(state, id, inflight.failed(&e));
        return Err(e);
    }
    let head = match state.config.ack_after {
        None => inflight.head(state, deadline).await,
        Some(ack) => {
            let early = timeout_at(started + ack, inflight.head(state, deadline)).await;
            match early {
                Ok(head) => head,
                Err(_) => {
                    let (owner, channel) = (Arc::clone(state), channel.clone());
                    state.tracker.spawn(async move {
                        let (mut attempt, gone) = inflight.complete(&owner, deadline).await;
                        attempt.kind = AttemptKind::Live;
                        crate::dispatch::record_queued(&owner, &channel, id, attempt, 0, gone)
                            .await;
                    });
                    let body = json!({ "id": id.to_string(), "status": "pending" });
                    return Ok(Answer::Pending(
                        (StatusCode::ACCEPTED, Json(body)).into_response(),
                    ));
                }
            }
        }
    };
    match head {
        Err(e) => {
            record_live(state, id, inflight.failed(&e));
            Err(e)
        }
        Ok(head) => {
            let (response, recorded) = inflight.stream(head);
            let recorder = Arc::clone(state);
            state.tracker.spawn(async move {
                if let Ok(attempt) = recorded.await {
                    record_live(&recorder, id, attempt);
                }
            });
            Ok(Answer::Target(response))
        }
    }
}

/// Records a live attempt without making anyone wait for it: the sender has its answer
/// (or is getting it), and the retry logic does not apply. The target's status decides
/// whether the event counts as delivered.
fn record_live(state: &AppState, id: DeliveryId, attempt: store::Attempt) {
    let then = if attempt.status.is_some_and(store::accepted) {
        Transition::Delivered
    } else {
        Transition::Failed
    };
    record(state, id, attempt, then);
}

/// Records a live attempt in the background, with the transition `then`.
fn record(state: &AppState, id: DeliveryId, mut attempt: store::Attempt, then: Transition) {
    attempt.kind = AttemptKind::Live;
    let store = Arc::clone(&state.store);
    state.tracker.spawn(async move {
        if let Err(e) = store.record(id, attempt, then).await {
            warn!(delivery_id = %id, error = %e, "attempt not recorded");
        }
    });
}

/// Counts an untrusted webhook (`what`) against its source's limit, which only a public relay
/// has.
fn limit_source(
    state: &AppState,
    client: Option<std::net::IpAddr>,
    what: &'static str,
) -> Result<(), Error> {
    state.source_limits.check(client).map_err(|wait| {
        let ip = client.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
        Error::SourceRateLimited { ip, what, wait }
    })
}

/// The answer for a webhook stored to be delivered later: `202 {"id", "status": "queued"}`,
/// or with `--offline-status 503` that when no agent is connected.
fn queued_answer(state: &AppState, id: DeliveryId, channel: &ChannelId) -> Response {
    let id = id.to_string();
    if state.config.offline_status == StatusCode::SERVICE_UNAVAILABLE.as_u16()
        && state.registry.agent_count(channel) == 0
    {
        let body = json!({
            "error": format!("no agent connected to channel {channel}; the webhook is queued"),
            "id": id,
            "status": "queued",
        });
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    let body = json!({ "id": id, "status": "queued" });
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

/// The sender's whole body, which must arrive before `deadline` and fit in `max` bytes.
async fn read_body(body: Body, max: u64, deadline: Deadline) -> Result<Bytes, Error> {
    let mut stream = body.into_data_stream();
    let mut parts: Vec<Bytes> = Vec::new();
    let mut len: u64 = 0;
    loop {
        match timeout_at(deadline, stream.next()).await {
            Err(_) => return Err(Error::BodyTimeout),
            Ok(None) => break,
            Ok(Some(Err(_))) => return Err(Error::BodyRead),
            Ok(Some(Ok(data))) => {
                len += data.len() as u64;
                if len > max {
                    return Err(Error::BodyTooLarge(max));
                }
                parts.push(data);
            }
        }
    }
    if parts.len() <= 1 {
        return Ok(parts.pop().unwrap_or_default());
    }
    let mut whole = BytesMut::with_capacity(usize::try_from(len).unwrap_or(0));
    for part in parts {
        whole.extend_from_slice(&part);
    }
    Ok(whole.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_path_keeps_the_raw_suffix() {
        let (ch, rest) = split_path("/h/abc/github/a%2Fb").expect("valid");
        assert_eq!(ch.as_str(), "abc");
        assert_eq!(rest, "/github/a%2Fb");
        let (_, rest) = split_path("/h/abc").expect("valid");
        assert_eq!(rest, "");
        let (_, rest) = split_path("/h/abc/").expect("valid");
        assert_eq!(rest, "/");
        assert!(matches!(split_path("/h/"), Err(Error::InvalidChannel(n)) if n.is_empty()));
        assert!(matches!(split_path("/h/a%20b/x"), Err(Error::InvalidChannel(n)) if n == "a%20b"));
        assert!(matches!(split_path("/x"), Err(Error::NotFound)));
    }
}
