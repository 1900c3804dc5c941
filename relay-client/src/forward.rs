//! Replays one delivery against the local target and streams the target's answer back as
//! frames. A target that fails is a [`TargetError`], which also decides the status the sender
//! gets instead of an answer.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::uri::PathAndQuery;
use http::{HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyDataStream, BodyExt, Full, StreamBody};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use protocol::api::{ATTEMPT_HEADER, DELIVERY_HEADER, ErrorBody};
use protocol::{Abort, BodyChunk, Chunked, DeliveryId, FromAgent, RequestHead, ResponseHead};
use tokio::sync::mpsc;
use tracing::warn;

use crate::error::Error;
use crate::event::{BodyPrefix, Outcome};
use crate::pool::Pool;
pub(crate) use crate::pool::RequestBody;
use crate::wire::{Outbox, send};

/// Request body slices arriving from the server after the head: `(data, fin)`.
pub type BodyRx = mpsc::Receiver<(Bytes, bool)>;

/// A general HTTP client (the relay's API, tests): plain HTTP or HTTPS with the system's
/// roots, keep-alive pooled. Deliveries go to the target through a [`Pool`] instead.
pub type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, RequestBody>;

pub fn http_client() -> Result<HttpClient, Error> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(rustls::crypto::ring::default_provider())
        .map_err(|e| Error::Tls(e.to_string()))?;
    Ok(build_client(https))
}

/// An [`HttpClient`] that speaks HTTPS with `tls` (roots and client certificate of its own).
pub fn http_client_with(tls: rustls::ClientConfig) -> HttpClient {
    build_client(hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls))
}

fn build_client(
    https: hyper_rustls::HttpsConnectorBuilder<hyper_rustls::builderstates::WantsSchemes>,
) -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let https = https.https_or_http().enable_http1().wrap_connector(http);
    Client::builder(TokioExecutor::new()).build(https)
}

/// The local target: scheme, authority and an optional path prefix and query.
#[derive(Debug, Clone)]
pub struct Target {
    uri: Uri,
    /// The `Host` header of every request to the target, made once rather than formatted for
    /// each delivery.
    host: HeaderValue,
    /// The URL as the user wrote it, for output.
    text: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Self, Error> {
        let bad = || Error::ForwardUrl(url.to_owned());
        let uri: Uri = url.parse().map_err(|_| bad())?;
        let secure = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad()),
        };
        let host = host_header(&uri, secure).ok_or_else(bad)?;
        Ok(Self {
            uri,
            host,
            text: url.to_owned(),
        })
    }

    /// The URL a delivery with `path` (below the channel, raw) and `query` goes to: the
    /// target's path prefix followed by `path`, the target's query joined with `query`.
    pub fn uri_for(&self, path: &str, query: Option<&str>) -> Option<Uri> {
        let mut parts = self.uri.clone().into_parts();
        parts.path_and_query = Some(self.path_and_query(path, query)?);
        Uri::from_parts(parts).ok()
    }

    /// The path and query of [`Target::uri_for`]: what a request to the target says in its
    /// request line.
    fn path_and_query(&self, path: &str, query: Option<&str>) -> Option<PathAndQuery> {
        let prefix = self.uri.path().trim_end_matches('/');
        let target_query = self.uri.query();
        let query_len = target_query.map_or(0, |q| q.len() + 1) + query.map_or(0, |q| q.len() + 1);
        let mut pq = String::with_capacity(prefix.len() + path.len() + 1 + query_len);
        pq.push_str(prefix);
        pq.push_str(path);
        if pq.is_empty() {
            pq.push('/');
        }
        match (target_query, query) {
            (Some(a), Some(b)) => {
                pq.push('?');
                pq.push_str(a);
                pq.push('&');
                pq.push_str(b);
            }
            (Some(q), None) | (None, Some(q)) => {
                pq.push('?');
                pq.push_str(q);
            }
            (None, None) => {}
        }
        PathAndQuery::from_maybe_shared(Bytes::from(pq)).ok()
    }

    /// `scheme://authority/` of the target: where its [`Pool`] connects.
    pub fn origin(&self) -> Uri {
        let mut parts = self.uri.clone().into_parts();
        parts.path_and_query = Some(PathAndQuery::from_static("/"));
        Uri::from_parts(parts).expect("a target's scheme and authority make a URI")
    }
}

/// The `Host` header for `uri`, as the HTTP client would write it: the host, and the port
/// unless it is the scheme's default. `None` without an authority.
fn host_header(uri: &Uri, secure: bool) -> Option<HeaderValue> {
    let host = uri.authority()?.host();
    let value = match uri.port() {
        Some(port) if port.as_u16() != if secure { 443 } else { 80 } => {
            HeaderValue::from_str(&format!("{host}:{port}"))
        }
        _ => HeaderValue::from_str(host),
    };
    value.ok()
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Why the target gave no answer to pass on. The message is what the sender reads in the
/// `{"error"}` body and what the delivery line shows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// The delivery's method is not one HTTP accepts.
    #[error("invalid method {0:?}")]
    InvalidMethod(String),
    /// The delivery's path does not make a URL with the target's.
    #[error("invalid path {0:?}")]
    InvalidPath(String),
    /// No connection, or the request failed before an answer came (the error's chain).
    #[error("target unreachable: {0}")]
    Unreachable(String),
    /// No response head within the target timeout.
    #[error("target did not answer within {} s", .0.as_secs())]
    Timeout(Duration),
    /// The response body broke off.
    #[error("target response body failed: {0}")]
    ResponseBody(String),
}

impl TargetError {
    /// The status the sender gets instead of the target's: 504 when the target was too slow,
    /// 502 for every other failure.
    pub fn status(&self) -> u16 {
        match self {
            TargetError::Timeout(_) => 504,
            TargetError::InvalidMethod(_)
            | TargetError::InvalidPath(_)
            | TargetError::Unreachable(_)
            | TargetError::ResponseBody(_) => 502,
        }
    }
}

/// Replays `head` (and the body slices on `body`) against `target`, and sends the response
/// back through `outbox`. A target that cannot be reached or does not answer in time gets the
/// sender a 502 or 504 with the reason in a JSON body.
///
/// With `print_body` (`--print-body`), the outcome of an answer passed on whole also holds the
/// start of its body ([`BodyPrefix`]): each slice is copied into it, up to its limit, just
/// before the slice goes to the server, so the stream is neither held back nor buffered.
/// Without it nothing is kept, allocated or copied.
pub async fn deliver(
    pool: &Pool,
    target: &Target,
    head: RequestHead,
    body: Option<BodyRx>,
    outbox: &Outbox,
    timeout: Duration,
    print_body: bool,
) -> Outcome {
    let id = head.id;
    let response = match request(pool, target, head, body, timeout).await {
        Ok(response) => response,
        Err(e) => return fail(outbox, id, e.status(), e.to_string()).await,
    };
    let (parts, body) = response.into_parts();
    let status = parts.status.as_u16();
    let headers = protocol::end_to_end(
        parts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes())),
    );
    let mut body = Chunked::new(BodyDataStream::new(body), u64::MAX);
    let (first, mut fin) = match body.next_chunk().await {
        Ok(chunk) => chunk,
        Err(e) => {
            let e = TargetError::ResponseBody(e.to_string());
            return fail(outbox, id, e.status(), e.to_string()).await;
        }
    };
    let mut shown = print_body.then(Box::<BodyPrefix>::default);
    if let Some(shown) = &mut shown {
        shown.keep(&first);
    }
    let head = FromAgent::Response(ResponseHead {
        id,
        status,
        headers,
        body: first,
        fin,
    });
    if !send(outbox, &head).await {
        return Outcome {
            status: None,
            error: Some("connection to the server lost".to_owned()),
            body: None,
        };
    }
    while !fin {
        let (data, last) = match body.next_chunk().await {
            Ok(chunk) => chunk,
            Err(e) => {
                let reason = TargetError::ResponseBody(e.to_string()).to_string();
                send(
                    outbox,
                    &FromAgent::Abort(Abort {
                        id,
                        reason: reason.clone(),
                    }),
                )
                .await;
                return Outcome {
                    status: Some(status),
                    error: Some(reason),
                    body: None,
                };
            }
        };
        fin = last;
        if let Some(shown) = &mut shown {
            shown.keep(&data);
        }
        if !send(outbox, &FromAgent::Body(BodyChunk { id, data, fin })).await {
            // The rest of the body is not read: what was kept would be counted short.
            shown = None;
            break;
        }
    }
    Outcome {
        status: Some(status),
        error: None,
        body: shown,
    }
}

/// Sends `head` (and the body slices on `body`) to `target` through `pool` (the target's, see
/// [`Target::origin`]) and waits up to `timeout` for the response head.
pub(crate) async fn request(
    pool: &Pool,
    target: &Target,
    head: RequestHead,
    body: Option<BodyRx>,
    timeout: Duration,
) -> Result<http::Response<hyper::body::Incoming>, TargetError> {
    let request = build_request(target, head, body)?;
    match tokio::time::timeout(timeout, pool.send(request)).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(e)) => Err(TargetError::Unreachable(crate::error::chain(&e))),
        Err(_) => Err(TargetError::Timeout(timeout)),
    }
}

/// The request for `head` to `target`, unless the delivery makes no valid request.
pub(crate) fn build_request(
    target: &Target,
    head: RequestHead,
    body_rx: Option<BodyRx>,
) -> Result<Request<RequestBody>, TargetError> {
    let method = Method::from_bytes(head.method.as_bytes())
        .map_err(|_| TargetError::InvalidMethod(head.method.clone()))?;
    let path = target
        .path_and_query(&head.path, head.query.as_deref())
        .ok_or_else(|| TargetError::InvalidPath(head.path.clone()))?;
    // The request line's form: a CONNECT names the authority alone, anything else the path.
    let uri = if method == Method::CONNECT {
        let mut parts = http::uri::Parts::default();
        parts.authority = target.uri.authority().cloned();
        Uri::from_parts(parts).map_err(|_| TargetError::InvalidPath(head.path.clone()))?
    } else {
        Uri::from(path)
    };
    let body: RequestBody = match body_rx {
        None => Full::new(head.body)
            .map_err(|e: Infallible| match e {})
            .boxed(),
        Some(rx) => streamed_body(head.body, rx),
    };
    let mut request = Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    for (name, value) in head.headers {
        match (header_name(&name), HeaderValue::from_maybe_shared(value)) {
            (Ok(name), Ok(value)) => {
                headers.append(name, value);
            }
            _ => warn!(header = %name, "invalid request header from server dropped"),
        }
    }
    // Where the client would add it (after the delivery's headers, unless one came), so the
    // target sees the same headers in the same order.
    headers.entry(HOST).or_insert_with(|| target.host.clone());
    Ok(request)
}

/// Names the relay puts on every delivery, made once: the HTTP library copies each name it
/// does not know into a buffer of its own, five allocations per delivery for these alone (six
/// with the event type's).
static RELAY_HEADER_NAMES: [HeaderName; 6] = [
    HeaderName::from_static("x-forwarded-for"),
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static(DELIVERY_HEADER),
    HeaderName::from_static(ATTEMPT_HEADER),
    HeaderName::from_static(protocol::EVENT_TYPE_HEADER),
];

/// `name` as a header name, if it is one.
fn header_name(name: &str) -> Result<HeaderName, http::header::InvalidHeaderName> {
    let known = name.starts_with("x-").then(|| {
        RELAY_HEADER_NAMES
            .iter()
            .find(|known| known.as_str() == name)
    });
    match known.flatten() {
        Some(known) => Ok(known.clone()),
        None => HeaderName::from_bytes(name.as_bytes()),
    }
}

/// A request body made of `first` and the slices that follow. If the server stops sending
/// before the last slice (the sender hung up), the body ends with an error so the target sees
/// an aborted request, not a complete-looking truncated one.
fn streamed_body(first: Bytes, rx: BodyRx) -> RequestBody {
    let stream = futures_util::stream::unfold(
        (Some(first), rx, false),
        |(first, mut rx, done)| async move {
            if let Some(first) = first {
                return Some((Ok(http_body::Frame::data(first)), (None, rx, done)));
            }
            if done {
                return None;
            }
            match rx.recv().await {
                Some((data, fin)) => Some((Ok(http_body::Frame::data(data)), (None, rx, fin))),
                None => Some((
                    Err(std::io::Error::other("request body aborted by the server")),
                    (None, rx, true),
                )),
            }
        },
    );
    BodyExt::boxed(StreamBody::new(stream))
}

/// Answers a delivery that arrived while the agent drains: 503, so the relay can deliver it
/// through another agent or later.
pub(crate) async fn shutting_down(outbox: &Outbox, id: DeliveryId) {
    fail(outbox, id, 503, "agent is shutting down".to_owned()).await;
}

/// Answers a delivery of type `event_type` that no `--route` takes, on an agent without
/// `--forward`, with 502: the relay sends such an agent only its routes' types, so this is an
/// explicit replay of an `unrouted` event, or an `--events` wider than the routes.
pub(crate) async fn unrouted(outbox: &Outbox, id: DeliveryId, event_type: Option<&str>) -> Outcome {
    let reason = match event_type {
        Some(t) => {
            format!("no --route of this agent takes event type {t}, and it has no --forward")
        }
        None => {
            "this webhook has no event type, no --route takes it, and the agent has no --forward"
                .to_owned()
        }
    };
    warn!(delivery_id = %id, "{reason}");
    fail(outbox, id, 502, reason).await
}

/// Answers the delivery with `status` and `{"error": reason}`.
async fn fail(outbox: &Outbox, id: DeliveryId, status: u16, reason: String) -> Outcome {
    let answer = ErrorBody { error: reason };
    let body = serde_json::to_vec(&answer).expect("a struct of one string always serialises");
    let head = FromAgent::Response(ResponseHead {
        id,
        status,
        headers: vec![(
            "content-type".to_owned(),
            Bytes::from_static(b"application/json"),
        )],
        body: Bytes::from(body),
        fin: true,
    });
    let sent = send(outbox, &head).await;
    Outcome {
        status: sent.then_some(status),
        error: Some(answer.error),
        body: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(base: &str, path: &str, query: Option<&str>) -> String {
        Target::parse(base)
            .expect("valid")
            .uri_for(path, query)
            .expect("valid")
            .to_string()
    }

    #[test]
    fn target_errors_give_the_sender_502_or_504_and_say_why() {
        let cases = [
            (
                TargetError::InvalidMethod("G T".to_owned()),
                502,
                "invalid method \"G T\"",
            ),
            (
                TargetError::InvalidPath("x y".to_owned()),
                502,
                "invalid path \"x y\"",
            ),
            (
                TargetError::Unreachable("connection refused".to_owned()),
                502,
                "target unreachable: connection refused",
            ),
            (
                TargetError::Timeout(Duration::from_secs(30)),
                504,
                "target did not answer within 30 s",
            ),
            (
                TargetError::ResponseBody("reset".to_owned()),
                502,
                "target response body failed: reset",
            ),
        ];
        for (error, status, message) in cases {
            assert_eq!(
                (error.status(), error.to_string().as_str()),
                (status, message)
            );
        }
    }

    #[test]
    fn header_names_are_what_the_http_library_makes_of_them() {
        let names = [
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            DELIVERY_HEADER,
            ATTEMPT_HEADER,
            "X-Hookrelay-Delivery",
            "x-github-event",
            "content-type",
            "x bad",
        ];
        for name in names {
            let made = header_name(name).ok();
            assert_eq!(made, HeaderName::from_bytes(name.as_bytes()).ok(), "{name}");
        }
    }

    #[test]
    fn target_host_header_names_the_port_unless_it_is_the_default() {
        let host = |url: &str| Target::parse(url).expect("valid").host;
        assert_eq!(host("http://localhost:3000/api"), "localhost:3000");
        assert_eq!(host("http://localhost:80"), "localhost");
        assert_eq!(host("https://example.com:443"), "example.com");
        assert_eq!(host("https://example.com:80"), "example.com:80");
        assert_eq!(host("http://[::1]:8080"), "[::1]:8080");
    }

    #[test]
    fn target_joins_prefix_path_and_query() {
        assert_eq!(
            join("http://localhost:3000", "", None),
            "http://localhost:3000/"
        );
        assert_eq!(
            join("http://localhost:3000", "/github", Some("x=1")),
            "http://localhost:3000/github?x=1"
        );
        assert_eq!(
            join("http://localhost:3000/api/", "/a%2Fb", None),
            "http://localhost:3000/api/a%2Fb"
        );
        assert_eq!(
            join("http://localhost:3000/api?k=v", "/x", Some("y=2")),
            "http://localhost:3000/api/x?k=v&y=2"
        );
    }
}
