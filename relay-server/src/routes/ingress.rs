//! `ANY /h/{channel}/{*path}`: the webhook's request translated for the delivery engine
//! ([`crate::relay`]), and the engine's [`Answer`] translated into the sender's response, with
//! the log line and the metrics of each.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http_body_util::BodyExt as _;
use protocol::api::{Accepted, DELIVERY_HEADER};
use protocol::{ChannelId, DeliveryId, Headers};
use tokio::time::{Instant as Deadline, timeout_at};
use tracing::{Instrument, info, info_span, warn};

use crate::AppState;
use crate::channel::ChannelRecord;
use crate::error::Error;
use crate::net::http::Peer;
use crate::relay::Answer;
use crate::relay::accept::{self, Source, Webhook};
use crate::relay::attempt::Reply;

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
        let result = handle(&state, id, &channel, registered, suffix, req).await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match result {
            Ok(answer) => {
                let (response, outcome, live) = match answer {
                    Answer::Target(reply) => {
                        (target_response(reply), "delivered", Some(started.elapsed()))
                    }
                    Answer::Queued { offline } => {
                        (queued_response(id, &channel, offline), "queued", None)
                    }
                    Answer::Pending => {
                        (pending_response(id), "acknowledged, delivery goes on", None)
                    }
                    Answer::Unrouted => (
                        (StatusCode::ACCEPTED, Json(Accepted::unrouted(id))).into_response(),
                        "unrouted: no connected agent takes its event type",
                        None,
                    ),
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
    let mut text = [0; uuid::fmt::Hyphenated::LENGTH];
    let text = id.as_uuid().hyphenated().encode_lower(&mut text);
    if let Ok(value) = HeaderValue::from_str(text) {
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

/// The request as the engine takes it: who sent it and the checks that need no body
/// ([`accept::admit`]), then its body, read whole within the delivery's deadline, then the
/// rest ([`accept::accept`]).
async fn handle(
    state: &AppState,
    id: DeliveryId,
    channel: &ChannelId,
    registered: Option<Arc<ChannelRecord>>,
    suffix: String,
    req: Request,
) -> Result<Answer, Error> {
    let source = Source {
        peer: Peer::of(req.extensions()).map(|p| p.addr),
        client: state.client_ip(req.extensions(), req.headers()),
    };
    let admitted = accept::admit(state, channel, registered, source)?;
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
    let body = read_body(body, max, declared, admitted.deadline).await?;
    state.metrics.bytes_in(body.len());
    let headers = to_headers(&parts.headers);
    let webhook = Webhook {
        method: parts.method.as_str().to_owned(),
        path: suffix,
        query: parts.uri.query().map(str::to_owned),
        headers,
        body,
    };
    accept::accept(state, admitted, id, webhook).await
}

/// The request's headers as the engine takes them, in the map's order. Every value is copied
/// once, into one buffer that each value is a slice of: one allocation for all of them instead
/// of one each, and the copies the attempt makes for the target share it (a reference count)
/// instead of allocating again. The buffer is the values' exact size, so a stored event holds
/// no more than its headers.
fn to_headers(map: &HeaderMap) -> Headers {
    let mut values = BytesMut::with_capacity(map.iter().map(|(_, v)| v.len()).sum());
    map.iter()
        .map(|(name, value)| {
            values.extend_from_slice(value.as_bytes());
            (name.as_str().to_owned(), values.split().freeze())
        })
        .collect()
}

/// The target's answer as the sender gets it: its status, its headers (see [`copy_headers`])
/// and its body as it streams.
fn target_response(reply: Reply) -> Response {
    let mut response = Response::new(reply.body);
    if let Ok(status) = StatusCode::from_u16(reply.status) {
        *response.status_mut() = status;
    }
    copy_headers(&reply.headers, response.headers_mut());
    response
}

/// Copies the agent's response headers, skipping any that are not valid HTTP (the agent is a
/// peer, not trusted to be well-formed) and hop-by-hop ones it should not have sent.
fn copy_headers(headers: &Headers, into: &mut HeaderMap) {
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

/// The answer for a webhook stored to be delivered later: `202 {"id", "status": "queued"}`,
/// or, `offline` (`--offline-status 503` and no agent connected), 503 saying so.
fn queued_response(id: DeliveryId, channel: &ChannelId, offline: bool) -> Response {
    if offline {
        let answer = Accepted {
            error: Some(format!(
                "no agent connected to channel {channel}; the webhook is queued"
            )),
            ..Accepted::queued(id)
        };
        return (StatusCode::SERVICE_UNAVAILABLE, Json(answer)).into_response();
    }
    (StatusCode::ACCEPTED, Json(Accepted::queued(id))).into_response()
}

/// The answer once `--ack-after` has passed: `202 {"id", "status": "pending"}`.
fn pending_response(id: DeliveryId) -> Response {
    (StatusCode::ACCEPTED, Json(Accepted::pending(id))).into_response()
}

/// The sender's whole body, which must arrive before `deadline` and fit in `max` bytes.
/// `declared` is its `Content-Length`, when it has one: a body of several chunks is gathered
/// in one buffer of that size as it arrives, so it is in memory once, not twice.
async fn read_body(
    body: Body,
    max: u64,
    declared: Option<u64>,
    deadline: Deadline,
) -> Result<Bytes, Error> {
    let mut stream = body.into_data_stream();
    let mut first: Option<Bytes> = None;
    let mut whole: Option<BytesMut> = None;
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
                match (&mut whole, first.take()) {
                    (Some(whole), _) => whole.extend_from_slice(&data),
                    (None, None) => first = Some(data),
                    (None, Some(head)) => {
                        let size = declared.unwrap_or(0).clamp(len, max);
                        let mut buffer =
                            BytesMut::with_capacity(usize::try_from(size).unwrap_or(0));
                        buffer.extend_from_slice(&head);
                        buffer.extend_from_slice(&data);
                        whole = Some(buffer);
                    }
                }
            }
        }
    }
    Ok(match whole {
        Some(whole) => whole.freeze(),
        None => first.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_headers_keeps_every_value_in_the_map_order() {
        let mut map = HeaderMap::new();
        map.append("x-b", HeaderValue::from_static("1"));
        map.append("content-type", HeaderValue::from_static("text/plain"));
        map.append("x-b", HeaderValue::from_static(""));
        map.append(
            "x-raw",
            HeaderValue::from_bytes(b"\xff\xfe").expect("obs-text is a valid value"),
        );
        map.append("x-b", HeaderValue::from_static("3"));
        let expected: Headers = map
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), Bytes::copy_from_slice(v.as_bytes())))
            .collect();
        assert_eq!(to_headers(&map), expected);
        assert_eq!(to_headers(&HeaderMap::new()), Headers::new());
    }

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
