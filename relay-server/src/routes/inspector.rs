//! The live inspector: the page at `/c/{channel}`, its assets, and the stream it reads,
//! `/api/channels/{channel}/live`.
//!
//! The page is static (the channel comes from its URL, the token from a login form kept in
//! `sessionStorage`), so serving it needs no token; every byte of webhook data reaches it
//! through the token-checked API. The one thing it is told is whether that API needs a token
//! ([`crate::auth::api_is_open`]): what a call without one would find out, with no 401 in the
//! browser's console. It shows what strangers
//! sent, so it is locked down by headers: a Content-Security-Policy allowing only its own
//! script and stylesheet (no inline script for injected markup to use), no sniffing, no
//! referrer, nothing cached.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use protocol::ChannelId;
use protocol::api::{LiveAttempt, LiveReload};
use serde_json::{Value, json};
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::AppState;
use crate::error::Error;
use crate::feed::Change;
use crate::routes::access::ChannelAccess;
use crate::routes::events::{attempt_summary, summary};

/// Interval of the keep-alive comments on an idle live stream: below the idle timeouts of
/// common proxies (nginx's `proxy_read_timeout` is 60 s).
const KEEP_ALIVE: Duration = Duration::from_secs(15);

use runtime::inspector::{FAVICON, HEADERS, SCRIPT, STYLE};

/// `GET /c/{channel}`: the inspector page, for any valid channel name, saying whether its
/// API needs a token.
pub async fn page(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, Error> {
    let channel = Error::channel_in_path(&name)?;
    let token_required = !crate::auth::api_is_open(&state, &channel);
    Ok(asset(
        runtime::inspector::page(token_required),
        "text/html; charset=utf-8",
    ))
}

/// `GET /c/assets/favicon.svg`.
pub async fn favicon() -> Response {
    asset(FAVICON, "image/svg+xml")
}

/// `GET /c/assets/inspector.js`.
pub async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

/// `GET /c/assets/inspector.css`.
pub async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    for (name, value) in HEADERS {
        response.headers_mut().insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    response
}

/// `GET /api/channels/{channel}/live`: server-sent events, authorised as the history is.
///
/// - `received`: a webhook was stored; the data is the event as the history lists it.
/// - `attempt`: an attempt was recorded; `{"id", "status", "attempt"}` with the event's new
///   status and the attempt without its response headers and body.
/// - `reload`: this stream fell behind the feed and missed `{"missed"}` changes; the list
///   must be fetched again.
///
/// The subscription starts before the response headers are sent, so a client that has them
/// sees every later change. The stream ends when the server shuts down.
pub async fn live(
    State(state): State<AppState>,
    ChannelAccess(channel): ChannelAccess,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let feed = LiveFeed {
        rx: state.feed.subscribe(),
        channel,
        stop: state.shutdown.clone(),
    };
    let stream = futures_util::stream::unfold(feed, |mut feed| async move {
        let (name, data) = feed.next().await?;
        Some((
            Ok(SseEvent::default().event(name).data(data.to_string())),
            feed,
        ))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

/// One subscriber's view of the feed: the changes of one channel, as SSE events.
struct LiveFeed {
    rx: Receiver<Change>,
    channel: ChannelId,
    stop: CancellationToken,
}

impl LiveFeed {
    /// The next event for this channel, its name and data; `None` once the server shuts
    /// down.
    async fn next(&mut self) -> Option<(&'static str, Value)> {
        loop {
            // Shutdown first, so a busy feed cannot hold it off. Both futures are cancel-safe:
            // a change not yet received stays in the broadcast for the next call.
            let change = tokio::select! {
                biased;
                () = self.stop.cancelled() => return None,
                change = self.rx.recv() => change,
            };
            let (name, data) = match change {
                Ok(change) if change.channel() != &self.channel => continue,
                Ok(Change::Received(event)) => ("received", json!(summary(&event))),
                Ok(Change::Attempted {
                    id,
                    status,
                    attempt,
                    ..
                }) => {
                    let attempt = attempt_summary(&attempt);
                    let status = status.into();
                    (
                        "attempt",
                        json!(LiveAttempt {
                            attempt,
                            id,
                            status
                        }),
                    )
                }
                Err(RecvError::Lagged(missed)) => ("reload", json!(LiveReload { missed })),
                Err(RecvError::Closed) => return None,
            };
            return Some((name, data));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{EventStatus, EventSummary};
    use protocol::DeliveryId;
    use tokio::sync::broadcast;

    fn received(channel: &str) -> Change {
        Change::Received(EventSummary {
            id: DeliveryId::random(),
            channel: ChannelId::parse(channel).expect("valid"),
            received_at: 0,
            method: "POST".to_owned(),
            path: "/x".to_owned(),
            query: None,
            status: EventStatus::Queued,
            attempts: 0,
            failures: 0,
            response_status: None,
            body_len: 0,
            next_attempt_at: None,
            event_type: None,
            replay_of: None,
        })
    }

    #[tokio::test]
    async fn other_channels_are_skipped_and_a_lagging_reader_is_told_to_reload() {
        let (tx, rx) = broadcast::channel(2);
        let mut feed = LiveFeed {
            rx,
            channel: ChannelId::parse("mine").expect("valid"),
            stop: CancellationToken::new(),
        };
        tx.send(received("theirs")).expect("subscribed");
        tx.send(received("mine")).expect("subscribed");
        let (name, data) = feed.next().await.expect("an event");
        assert_eq!((name, &data["path"]), ("received", &json!("/x")));

        for _ in 0..5 {
            tx.send(received("mine")).expect("subscribed");
        }
        let (name, data) = feed.next().await.expect("an event");
        assert_eq!((name, data), ("reload", json!({ "missed": 3 })));
        assert_eq!(feed.next().await.map(|(name, _)| name), Some("received"));

        feed.stop.cancel();
        tx.send(received("mine")).expect("subscribed");
        assert!(feed.next().await.is_none(), "shutdown ends the feed");
    }
}
