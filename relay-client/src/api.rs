//! The server's HTTP API as the agent's commands use it, on the `protocol::api` types: a
//! channel's events (`relay-client events`), replaying one through the server or fetching one
//! and sending it from here (`relay-client replay`), and passing calls on for the local
//! inspector (`inspect.rs`).

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full, Limited};
use protocol::api::{
    self, ATTEMPT_HEADER, AttemptKind, DELIVERY_HEADER, ErrorBody, EventDetail, EventPage,
    Replayed, TokenChannel, path,
};
use protocol::{ChannelId, DeliveryId, EVENT_TYPE_HEADER, Headers, RequestHead};
use serde::de::DeserializeOwned;

use crate::config::{
    ApiConfig, ApiTarget, DEFAULT_API_TIMEOUT, DEFAULT_TARGET_TIMEOUT, EventsQuery,
};
use crate::edit::RequestEdit;
use crate::error::{Error, chain};
use crate::event::{Delivery, Outcome, Started, Via, shown_path};
use crate::forward::{self, HttpClient, RequestBody, Target, TargetError};
use crate::pool::Pool;

/// Largest API answer read. An event's detail carries its body (up to the server's
/// `--max-body`, a third more in base64) and each attempt's response body.
const MAX_ANSWER_BYTES: usize = 256 * 1024 * 1024;

/// What a call was about, to turn a 404 or 503 into an error that says what to do.
#[derive(Debug, Clone, Copy)]
enum Subject {
    Events,
    Event(DeliveryId),
    Replay(DeliveryId),
}

/// The history API of one channel on one server.
pub struct Api {
    config: ApiConfig,
    /// Talks to the server with `config.tls` (its CA, our client certificate).
    client: HttpClient,
}

impl Api {
    /// Fails when the TLS files in `config.tls` cannot be used.
    pub fn new(config: ApiConfig) -> Result<Self, Error> {
        let tls = crate::tls::client_config(&config.tls)?;
        Ok(Self {
            client: forward::http_client_with((*tls).clone()),
            config,
        })
    }

    /// The API `target` names: its channel's, or without a channel, the one the server maps
    /// the token to (`GET /api/token/channel`, authenticated by the token itself).
    pub async fn open(target: ApiTarget) -> Result<Self, Error> {
        let tls = crate::tls::client_config(&target.tls)?;
        let client = forward::http_client_with((*tls).clone());
        let channel = match (target.channel.clone(), &target.token) {
            (Some(channel), _) => channel,
            (None, Some(token)) => {
                let server = crate::config::http_url(&target.server)?;
                let url = format!("{server}{}", path::TOKEN_CHANNEL);
                let authorization = crate::config::bearer(token)?;
                let found: TokenChannel = fetch(
                    &client,
                    &url,
                    Some(&authorization),
                    DEFAULT_API_TIMEOUT,
                    |status, body| match status {
                        StatusCode::UNAUTHORIZED => Error::TokenNamesNoChannel,
                        StatusCode::NOT_FOUND => Error::NoTokenLookup,
                        _ => api_error(status, body),
                    },
                )
                .await?;
                ChannelId::parse(&found.channel).map_err(|e| Error::BadAnswer {
                    url,
                    reason: e.to_string(),
                })?
            }
            (None, None) => return Err(Error::MissingChannel(target.command)),
        };
        Ok(Self {
            config: target.api(channel)?,
            client,
        })
    }

    pub fn channel(&self) -> &ChannelId {
        &self.config.channel
    }

    /// The channel's most recent events, newest first, as the server orders them.
    pub async fn events(&self, query: &EventsQuery) -> Result<EventPage, Error> {
        let mut path = format!("{}?limit={}", path::EVENTS, query.limit);
        if let Some(status) = query.status {
            path.push_str("&status=");
            path.push_str(status.as_str());
        }
        if let Some(pattern) = &query.event_type {
            path.push_str("&type=");
            push_query_value(&mut path, &pattern.to_string());
        }
        self.call(Method::GET, &path, None, Subject::Events).await
    }

    /// Asks the server to deliver event `id` again through an agent serving the channel; the
    /// server records the attempt. The result's status is `None`, with the error, when the
    /// agent could not deliver it.
    ///
    /// With edits, the stored request is fetched first, so the edited header list sent is the
    /// stored one with `edit` made to it (the server replaces the list whole); the server
    /// stores the edited request as a new event and delivers that. The answer's second part
    /// is then the event it replays (`id`), and the delivery's id is the new event's.
    pub async fn replay(
        &self,
        id: DeliveryId,
        edit: &RequestEdit,
    ) -> Result<(Delivery, Option<DeliveryId>), Error> {
        let body = match edit.is_empty() {
            true => None,
            false => {
                let event = self.event(id).await?;
                let stored = stored_headers(&event)?;
                let json = serde_json::to_vec(&edit.replay_edit(&stored))
                    .expect("a replay edit (strings and a list of them) always serialises");
                Some(Bytes::from(json))
            }
        };
        let path = path::replay(id);
        let answer: Replayed = self
            .call(Method::POST, &path, body, Subject::Replay(id))
            .await?;
        if !edit.is_empty() && answer.replay_of.is_none() {
            return Err(Error::EditsIgnored { id });
        }
        let at = humantime::parse_rfc3339(&answer.attempt.started_at)
            .unwrap_or_else(|_| SystemTime::now());
        let replay_of = answer.replay_of;
        let delivery = Delivery {
            at,
            id: answer.id,
            method: answer.method,
            path: shown_path(&answer.path, answer.query.as_deref()),
            event_type: answer.event_type,
            status: answer.attempt.status,
            duration: Duration::from_millis(answer.attempt.duration_ms),
            error: answer.attempt.error,
            via: Via::Relay(AttemptKind::Replay),
            body: None,
        };
        Ok((delivery, replay_of))
    }

    /// Event `id` as stored, its request and every attempt.
    async fn event(&self, id: DeliveryId) -> Result<EventDetail, Error> {
        let path = path::event(id);
        self.call(Method::GET, &path, None, Subject::Event(id))
            .await
    }

    /// Fetches event `id` and sends the stored request, with `edit` made to it, from here to
    /// `target`: same method, path and query, the body bytes, the end-to-end headers, and
    /// `x-hookrelay-delivery`. The server does not learn of it. A target that fails shows in
    /// the result, not as `Err`.
    pub async fn replay_to(
        &self,
        id: DeliveryId,
        target: &Target,
        edit: &RequestEdit,
    ) -> Result<Delivery, Error> {
        let event = self.event(id).await?;
        let head = request_head(event, edit)?;
        // The target is local and no concern of the server's TLS settings: the agent's client.
        let pool = Pool::new(target.origin())?;
        let mut delivery = send_to(&pool, target, head, DEFAULT_TARGET_TIMEOUT).await;
        delivery.via = Via::Local;
        Ok(delivery)
    }

    /// One API call: `method` on the channel's `path` with `json` as its body, the answer read
    /// whole (up to [`MAX_ANSWER_BYTES`]) within the configured timeout, a 2xx answer parsed
    /// as `T`.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        json: Option<Bytes>,
        subject: Subject,
    ) -> Result<T, Error> {
        let url = format!("{}{path}", self.config.base_url);
        let content_type = json.is_some().then_some("application/json");
        let body = match json {
            Some(json) => Full::new(json).map_err(|never| match never {}).boxed(),
            None => Empty::<Bytes>::new()
                .map_err(|never| match never {})
                .boxed(),
        };
        let exchange = async {
            let response = self
                .send(method, path, Some("application/json"), content_type, body)
                .await?;
            read_answer(&url, response).await
        };
        let (status, body) = tokio::time::timeout(self.config.timeout, exchange)
            .await
            .map_err(|_| Error::ApiTimeout {
                url: url.clone(),
                secs: self.config.timeout.as_secs(),
            })??;
        if !status.is_success() {
            return Err(self.error_for(status, &body, subject));
        }
        parse_answer(&url, &body)
    }

    /// Sends `method` on the channel's `path` (query included) with the token, and hands back
    /// the server's answer unread, for a caller that streams it (the inspector).
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        accept: Option<&str>,
        content_type: Option<&str>,
        body: RequestBody,
    ) -> Result<http::Response<hyper::body::Incoming>, Error> {
        let url = format!("{}{path}", self.config.base_url);
        let authorization = self.config.authorization.as_ref();
        request(
            &self.client,
            method,
            &url,
            authorization,
            accept,
            content_type,
            body,
        )
        .await
    }

    /// The error for a non-2xx answer, with the server's `{"error": ...}` message.
    fn error_for(&self, status: StatusCode, body: &[u8], subject: Subject) -> Error {
        let channel = self.config.channel.clone();
        let message = serde_json::from_slice::<ErrorBody>(body)
            .map(|e| e.error)
            .ok();
        match (status, subject) {
            (StatusCode::UNAUTHORIZED, _) => Error::Unauthorized,
            (StatusCode::NOT_FOUND, Subject::Event(id) | Subject::Replay(id)) => {
                Error::UnknownEvent { id, channel }
            }
            (StatusCode::SERVICE_UNAVAILABLE, Subject::Replay(id)) => Error::NoAgent {
                id,
                message: message
                    .unwrap_or_else(|| format!("no agent connected to channel {channel}")),
                channel,
            },
            (_, Subject::Events | Subject::Event(_) | Subject::Replay(_)) => Error::Api {
                status,
                message: message.unwrap_or_else(|| plain_message(status, body)),
            },
        }
    }
}

/// Sends `method` to `url` with `authorization` and hands back the server's answer unread.
async fn request(
    client: &HttpClient,
    method: Method,
    url: &str,
    authorization: Option<&http::HeaderValue>,
    accept: Option<&str>,
    content_type: Option<&str>,
    body: RequestBody,
) -> Result<http::Response<hyper::body::Incoming>, Error> {
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in [
        (header::ACCEPT, accept),
        (header::CONTENT_TYPE, content_type),
    ] {
        if let Some(value) = value {
            request = request.header(name, value);
        }
    }
    if let Some(authorization) = authorization {
        request = request.header(header::AUTHORIZATION, authorization.clone());
    }
    let request = request
        .body(body)
        .map_err(|_| Error::ServerUrl(url.to_owned()))?;
    client.request(request).await.map_err(|e| {
        crate::tls::certificate_failure(url, &e).unwrap_or_else(|| Error::Unreachable {
            url: url.to_owned(),
            reason: chain(&e),
        })
    })
}

/// GETs `url` and parses its 2xx answer as `T`, all within `timeout`; `error` names the
/// failure for any other status.
async fn fetch<T: DeserializeOwned>(
    client: &HttpClient,
    url: &str,
    authorization: Option<&http::HeaderValue>,
    timeout: Duration,
    error: impl FnOnce(StatusCode, &[u8]) -> Error,
) -> Result<T, Error> {
    let empty = Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed();
    let accept = Some("application/json");
    let exchange = async {
        let response =
            request(client, Method::GET, url, authorization, accept, None, empty).await?;
        read_answer(url, response).await
    };
    let (status, body) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| Error::ApiTimeout {
            url: url.to_owned(),
            secs: timeout.as_secs(),
        })??;
    if !status.is_success() {
        return Err(error(status, &body));
    }
    parse_answer(url, &body)
}

/// The answer's status and its body, read whole up to [`MAX_ANSWER_BYTES`].
async fn read_answer(
    url: &str,
    response: http::Response<hyper::body::Incoming>,
) -> Result<(StatusCode, Bytes), Error> {
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|e| Error::BadAnswer {
            url: url.to_owned(),
            reason: format!("reading the answer failed: {e}"),
        })?
        .to_bytes();
    Ok((status, body))
}

/// A 2xx answer's body as `T`.
fn parse_answer<T: DeserializeOwned>(url: &str, body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|e| Error::BadAnswer {
        url: url.to_owned(),
        reason: format!("not the expected JSON ({e})"),
    })
}

/// The error for a non-2xx answer with nothing more specific to say: the server's `error`.
fn api_error(status: StatusCode, body: &[u8]) -> Error {
    let message = serde_json::from_slice::<ErrorBody>(body)
        .map(|e| e.error)
        .unwrap_or_else(|_| plain_message(status, body));
    Error::Api { status, message }
}

/// A message for an error answer that is not the API's JSON (say, a proxy's page): its first
/// line of text, or the status's reason.
fn plain_message(status: StatusCode, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let line: String = text
        .trim()
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(200)
        .collect();
    if line.is_empty() {
        status.canonical_reason().unwrap_or("no message").to_owned()
    } else {
        line
    }
}

/// Appends `value` to a query string as one percent-encoded value: every byte but ASCII
/// letters, digits, `-._~` and `*` (so a prefix pattern stays readable) as `%XX`. The server
/// reads `+` as a space, so a `+` in a type must be encoded too, as must `&`, `#` and `=`.
fn push_query_value(query: &mut String, value: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'*' => {
                query.push(char::from(byte));
            }
            _ => {
                query.push('%');
                query.push(char::from(HEX[usize::from(byte >> 4)]));
                query.push(char::from(HEX[usize::from(byte & 0x0f)]));
            }
        }
    }
}

/// The headers `event` records, as bytes.
fn stored_headers(event: &EventDetail) -> Result<Headers, Error> {
    (event.headers.iter().cloned())
        .map(api::Header::decode)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::StoredEvent {
            id: event.id,
            reason: e.to_string(),
        })
}

/// The request `event` records, with `edit` made to it, to send again: byte for byte as it
/// was received when `edit` is empty.
fn request_head(event: EventDetail, edit: &RequestEdit) -> Result<RequestHead, Error> {
    let id = event.id;
    let stored = stored_headers(&event)?;
    let body =
        match edit.body() {
            Some(body) => body.clone(),
            None => api::decode_body(event.body, event.body_encoding, event.body_bytes).map_err(
                |e| Error::StoredEvent {
                    id,
                    reason: e.to_string(),
                },
            )?,
        };
    let mut headers = replay_headers(id, &edit.apply_headers(&stored));
    // As on a delivery through the relay, so the line shows the type. An edit may change
    // what the server would derive; only the server knows the channel's type source, so
    // the stored type stays.
    if let Some(event_type) = event.event_type {
        headers.push((EVENT_TYPE_HEADER.to_owned(), Bytes::from(event_type)));
    }
    Ok(RequestHead {
        id,
        method: event.method,
        path: event.path,
        query: event.query,
        headers,
        body,
        fin: true,
    })
}

/// The headers a local replay sends: the stored ones without hop-by-hop headers, `host` and
/// `content-length` (the HTTP client sets both for the new connection and body) and any
/// earlier relay header, then `x-hookrelay-delivery: id` and `x-hookrelay-attempt: replay`.
/// Order and duplicates are kept.
fn replay_headers(id: DeliveryId, stored: &[(String, Bytes)]) -> Headers {
    let mut headers = protocol::end_to_end(stored.iter().map(|(n, v)| (n.as_str(), v.as_ref())));
    headers.retain(|(name, _)| {
        !matches!(
            name.as_str(),
            "host" | "content-length" | DELIVERY_HEADER | ATTEMPT_HEADER | EVENT_TYPE_HEADER
        )
    });
    headers.push((DELIVERY_HEADER.to_owned(), Bytes::from(id.to_string())));
    headers.push((ATTEMPT_HEADER.to_owned(), Bytes::from_static(b"replay")));
    headers
}

/// Sends `head` to `target` and reads the answer to its end, all within `timeout`.
async fn send_to(pool: &Pool, target: &Target, head: RequestHead, timeout: Duration) -> Delivery {
    let started = Started::now(&head);
    let exchange = async {
        let response = match forward::request(pool, target, head, None, timeout).await {
            Ok(response) => response,
            Err(e) => {
                return Outcome {
                    status: None,
                    error: Some(e.to_string()),
                    body: None,
                };
            }
        };
        read_to_end(response).await
    };
    let outcome = tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| Outcome {
            status: None,
            error: Some(TargetError::Timeout(timeout).to_string()),
            body: None,
        });
    started.finish(outcome)
}

/// Reads the target's answer to its end and drops it, so the target sees its response taken
/// in full.
async fn read_to_end(response: http::Response<hyper::body::Incoming>) -> Outcome {
    let status = Some(response.status().as_u16());
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        if let Err(e) = frame {
            return Outcome {
                status,
                error: Some(TargetError::ResponseBody(e.to_string()).to_string()),
                body: None,
            };
        }
    }
    Outcome {
        status,
        error: None,
        body: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> DeliveryId {
        DeliveryId::from_uuid(uuid::Uuid::nil())
    }

    #[test]
    fn query_values_are_percent_encoded_but_for_unreserved_bytes_and_the_star() {
        let encoded = |value: &str| {
            let mut query = String::new();
            push_query_value(&mut query, value);
            query
        };
        assert_eq!(encoded("payment_intent.*"), "payment_intent.*");
        assert_eq!(encoded("Push Hook"), "Push%20Hook");
        assert_eq!(encoded("a+b&c=d#e/f%"), "a%2Bb%26c%3Dd%23e%2Ff%25");
        assert_eq!(encoded("caf\u{e9}"), "caf%C3%A9");
    }

    #[test]
    fn local_replay_sends_stored_end_to_end_headers_and_its_delivery_id() {
        let stored: Vec<(String, Bytes)> = [
            ("Host", &b"relay.example.com"[..]),
            ("Content-Type", b"application/json"),
            ("Content-Length", b"12"),
            ("Connection", b"keep-alive, x-private"),
            ("x-private", b"secret"),
            ("Transfer-Encoding", b"chunked"),
            ("x-sig", b"\xff\x01"),
            ("x-hookrelay-delivery", b"old"),
            ("x-hookrelay-attempt", b"live"),
            ("x-dup", b"1"),
            ("x-dup", b"2"),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_owned(), Bytes::from_static(v)))
        .collect();
        let headers = replay_headers(id(), &stored);
        let expected: Vec<(String, Bytes)> = [
            ("content-type", &b"application/json"[..]),
            ("x-sig", b"\xff\x01"),
            ("x-dup", b"1"),
            ("x-dup", b"2"),
            (
                "x-hookrelay-delivery",
                b"00000000-0000-0000-0000-000000000000",
            ),
            ("x-hookrelay-attempt", b"replay"),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_owned(), Bytes::from_static(v)))
        .collect();
        assert_eq!(headers, expected);
    }

    #[test]
    fn stored_event_decodes_base64_body_and_header_values() {
        let json = serde_json::json!({
            "id": "00000000-0000-0000-0000-000000000000",
            "channel": "c",
            "received_at": "2026-11-23T10:00:00.123Z",
            "method": "POST",
            "path": "/x",
            "query": "a=1",
            "status": "delivered",
            "headers": [
                {"name": "content-type", "value": "application/octet-stream"},
                {"name": "x-bin", "value_base64": "/wA="}
            ],
            "body": "/wD+",
            "body_encoding": "base64",
            "body_bytes": 3,
            "attempts": []
        });
        let event: EventDetail = serde_json::from_value(json).expect("valid event");
        let head = request_head(event, &RequestEdit::default()).expect("replayable");
        assert_eq!(head.body, Bytes::from_static(b"\xff\x00\xfe"));
        assert_eq!(head.query.as_deref(), Some("a=1"));
        assert_eq!(
            head.headers[1],
            ("x-bin".to_owned(), Bytes::from_static(b"\xff\x00"))
        );
    }

    #[test]
    fn an_edited_local_replay_sends_the_new_body_and_headers_and_no_stale_length() {
        let json = serde_json::json!({
            "id": "00000000-0000-0000-0000-000000000000",
            "channel": "c",
            "received_at": "2026-11-23T10:00:00.123Z",
            "method": "POST",
            "path": "/x",
            "query": null,
            "status": "delivered",
            "headers": [
                {"name": "content-length", "value": "3"},
                {"name": "x-sig", "value": "old"},
                {"name": "x-keep", "value": "1"}
            ],
            "body": "abc",
            "body_encoding": "utf8",
            "body_bytes": 3,
            "attempts": []
        });
        let event: EventDetail = serde_json::from_value(json).expect("valid event");
        let header = |text| crate::edit::parse_header(text).expect("valid");
        let edit = RequestEdit::new(
            Some(Bytes::from_static(b"\xffnew body")),
            vec![header("X-Sig: new"), header("x-added: yes")],
        )
        .expect("valid edits");
        let head = request_head(event, &edit).expect("replayable");
        assert_eq!(head.body, Bytes::from_static(b"\xffnew body"));
        let names: Vec<(&str, &[u8])> = (head.headers.iter())
            .map(|(n, v)| (n.as_str(), v.as_ref()))
            .collect();
        // No content-length: the HTTP client writes the new body's own.
        assert_eq!(
            names[..3],
            [
                ("x-sig", &b"new"[..]),
                ("x-keep", b"1"),
                ("x-added", b"yes")
            ]
        );
        assert_eq!(names.len(), 5, "then the relay's two: {names:?}");
    }

    #[test]
    fn stored_event_with_a_short_body_is_not_replayed() {
        let json = serde_json::json!({
            "id": "00000000-0000-0000-0000-000000000000",
            "channel": "c",
            "received_at": "2026-11-23T10:00:00.123Z",
            "method": "POST",
            "path": "/x",
            "query": null,
            "status": "delivered",
            "headers": [],
            "body": "abc",
            "body_encoding": "utf8",
            "body_bytes": 10,
            "attempts": []
        });
        let event: EventDetail = serde_json::from_value(json).expect("valid event");
        let err = request_head(event, &RequestEdit::default()).expect_err("short body");
        assert!(err.to_string().contains("3 of its 10 body bytes"), "{err}");
    }
}
