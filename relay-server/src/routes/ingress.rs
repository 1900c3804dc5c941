//! `ANY /h/{channel}/{*path}`: a webhook comes in, goes to one of the channel's agents, and the
//! target's answer goes back to the sender.

use std::net::SocketAddr;
use std::time::Instant;

use axum::body::{Body, BodyDataStream};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use protocol::{
    BodyChunk, ChannelId, ChunkError, Chunked, DeliveryId, Frame, Headers, RequestHead,
};
use tokio::sync::mpsc;
use tokio::time::{Instant as Deadline, timeout_at};
use tracing::{Instrument, info, info_span, warn};

use crate::AppState;
use crate::error::Error;
use crate::registry::{BodyEvent, DeliveryGuard};

/// Response header naming the delivery, so a sender can find it in our logs.
pub const DELIVERY_HEADER: &str = "x-hookrelay-delivery";

/// Deliveries one agent may have in flight; past this the sender gets 503 rather than the
/// server queueing without bound for an agent that cannot keep up.
const MAX_IN_FLIGHT_PER_AGENT: usize = 1024;

/// Headers the relay sets itself; copies from the sender are replaced.
const RELAY_SET: [&str; 4] = [
    "host",
    "x-forwarded-proto",
    "x-forwarded-host",
    DELIVERY_HEADER,
];

pub async fn ingress(State(state): State<AppState>, req: Request) -> Response {
    let id = DeliveryId::random();
    let started = Instant::now();
    let method = req.method().clone();
    let Some((channel, suffix)) = split_path(req.uri().path()) else {
        return Error::NotFound.into_response();
    };
    let suffix = suffix.to_owned();
    let span = info_span!("delivery", delivery_id = %id, %channel, %method);
    let mut response = async {
        let result = deliver(&state, id, channel, suffix, req).await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match result {
            Ok(response) => {
                info!(status = response.status().as_u16(), elapsed_ms, "delivered");
                response
            }
            Err(e) => {
                let status = e.status().as_u16();
                if e.status().is_server_error() {
                    warn!(status, elapsed_ms, error = %e, "delivery failed");
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

/// Splits `/h/{channel}{suffix}` into the channel and the raw (still percent-encoded) suffix,
/// which is empty or starts with `/`.
pub fn split_path(path: &str) -> Option<(ChannelId, &str)> {
    let rest = path.strip_prefix("/h/")?;
    let end = rest.find('/').unwrap_or(rest.len());
    let channel = ChannelId::parse(&rest[..end]).ok()?;
    Some((channel, &rest[end..]))
}

async fn deliver(
    state: &AppState,
    id: DeliveryId,
    channel: ChannelId,
    suffix: String,
    req: Request,
) -> Result<Response, Error> {
    let deadline = Deadline::now() + state.config.timeout;
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
    let agent = state
        .registry
        .pick(&channel)
        .ok_or_else(|| Error::NoAgent(channel.clone()))?;
    if agent.in_flight() >= MAX_IN_FLIGHT_PER_AGENT {
        return Err(Error::Overloaded);
    }
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let headers = forwarded_headers(state, id, &parts.headers, peer);
    let mut body = Chunked::new(body.into_data_stream(), max);
    let (first, mut fin) = next_chunk(&mut body, deadline).await?;
    let head = Frame::Request(RequestHead {
        id,
        method: parts.method.as_str().to_owned(),
        path: suffix,
        query: parts.uri.query().map(str::to_owned),
        headers,
        body: first,
        fin,
    });
    // Tracked from here on: a sender whose body failed before this point needs no abort.
    let (guard, head_rx) = agent.begin(id);
    send(&agent, &head, deadline, state).await?;
    while !fin {
        let (data, last) = next_chunk(&mut body, deadline).await?;
        fin = last;
        send(
            &agent,
            &Frame::Body(BodyChunk { id, data, fin }),
            deadline,
            state,
        )
        .await?;
    }
    drop(body);

    // Biased: an answer already given wins over the agent having closed since, so an agent
    // that answers and then disconnects (a graceful agent shutdown) still gets it through.
    let (head, body_rx) = tokio::select! {
        biased;
        reply = timeout_at(deadline, head_rx) => match reply {
            Err(_) => return Err(Error::Timeout(state.config.timeout.as_secs())),
            Ok(Err(_)) => return Err(Error::AgentGone),
            Ok(Ok(Ok(answer))) => answer,
            Ok(Ok(Err(reason))) => return Err(Error::AgentAborted(reason)),
        },
        () = agent.closed().cancelled() => return Err(Error::AgentGone),
    };
    let status = StatusCode::from_u16(head.status)
        .map_err(|_| Error::AgentAborted(format!("agent sent invalid status {}", head.status)))?;
    let body = match body_rx {
        None => Body::from(head.body),
        Some(rest) => response_stream(head.body, rest, guard),
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    copy_headers(&head.headers, response.headers_mut());
    Ok(response)
}

/// The sender's next body slice; the sender must deliver its body before the deadline.
async fn next_chunk(
    body: &mut Chunked<BodyDataStream>,
    deadline: Deadline,
) -> Result<(Bytes, bool), Error> {
    match timeout_at(deadline, body.next_chunk()).await {
        Err(_) => Err(Error::BodyTimeout),
        Ok(Ok(chunk)) => Ok(chunk),
        Ok(Err(ChunkError::TooLarge(max))) => Err(Error::BodyTooLarge(max)),
        Ok(Err(ChunkError::Source(_))) => Err(Error::BodyRead),
    }
}

async fn send(
    agent: &crate::registry::AgentHandle,
    frame: &Frame,
    deadline: Deadline,
    state: &AppState,
) -> Result<(), Error> {
    match timeout_at(deadline, agent.send(frame)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Error::AgentGone),
        Err(_) => Err(Error::Timeout(state.config.timeout.as_secs())),
    }
}

/// The end-to-end headers of the sender's request, plus the ones the relay adds for the target.
fn forwarded_headers(
    state: &AppState,
    id: DeliveryId,
    headers: &axum::http::HeaderMap,
    peer: Option<SocketAddr>,
) -> Headers {
    let mut out = protocol::end_to_end(headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())));
    let mut forwarded_for: Vec<u8> = Vec::new();
    out.retain(|(name, value)| {
        if name == "x-forwarded-for" {
            if !forwarded_for.is_empty() {
                forwarded_for.extend_from_slice(b", ");
            }
            forwarded_for.extend_from_slice(value);
            return false;
        }
        !RELAY_SET.contains(&name.as_str())
    });
    if let Some(peer) = peer {
        if !forwarded_for.is_empty() {
            forwarded_for.extend_from_slice(b", ");
        }
        forwarded_for.extend_from_slice(peer.ip().to_string().as_bytes());
    }
    if !forwarded_for.is_empty() {
        out.push(("x-forwarded-for".to_owned(), Bytes::from(forwarded_for)));
    }
    let proto = if state.public_url.starts_with("https://") {
        "https"
    } else {
        "http"
    };
    out.push((
        "x-forwarded-proto".to_owned(),
        Bytes::from_static(proto.as_bytes()),
    ));
    if let Some(host) = headers.get(header::HOST) {
        out.push((
            "x-forwarded-host".to_owned(),
            Bytes::copy_from_slice(host.as_bytes()),
        ));
    }
    out.push((DELIVERY_HEADER.to_owned(), Bytes::from(id.to_string())));
    out
}

/// Copies the agent's response headers, skipping any that are not valid HTTP (the agent is a
/// peer, not trusted to be well-formed) and hop-by-hop ones it should not have sent.
fn copy_headers(headers: &Headers, into: &mut axum::http::HeaderMap) {
    for (name, value) in headers {
        if protocol::is_hop_by_hop(name) {
            continue;
        }
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            (Ok(name), Ok(value)) => {
                into.append(name, value);
            }
            _ => warn!(header = %name, "invalid response header from agent dropped"),
        }
    }
}

/// A streamed response body: `first`, then the agent's chunks until `fin`. An abort or a lost
/// agent ends the stream with an error, so the sender sees a truncated response rather than a
/// complete-looking one. Holds the delivery guard until the body is done.
fn response_stream(first: Bytes, rest: mpsc::Receiver<BodyEvent>, guard: DeliveryGuard) -> Body {
    struct State {
        first: Option<Bytes>,
        rest: mpsc::Receiver<BodyEvent>,
        done: bool,
        _guard: DeliveryGuard,
    }
    let state = State {
        first: Some(first),
        rest,
        done: false,
        _guard: guard,
    };
    let stream = futures_util::stream::unfold(state, |mut s| async move {
        if let Some(first) = s.first.take() {
            return Some((Ok(first), s));
        }
        if s.done {
            return None;
        }
        s.done = true;
        match s.rest.recv().await {
            Some(BodyEvent::Chunk { data, fin }) => {
                s.done = fin;
                Some((Ok(data), s))
            }
            Some(BodyEvent::Abort(reason)) => Some((Err(std::io::Error::other(reason)), s)),
            None => Some((
                Err(std::io::Error::other("agent disconnected mid-response")),
                s,
            )),
        }
    });
    Body::from_stream(stream)
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
        assert!(split_path("/h/").is_none());
        assert!(split_path("/h/a%20b/x").is_none());
    }
}
