//! The keep-alive HTTP/1 connections the agent keeps to its target: one origin, so the idle
//! connections are one list, not a map keyed by scheme and authority that is hashed byte by
//! byte three times per request (as a general-purpose client's pool is). It keeps what such a
//! client promises: the most recently used idle connection first, none idle longer than
//! `IDLE_TIMEOUT`, and a request the target never saw (it closed an idle connection as we
//! picked it) sent again on a new connection.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::debug;

use crate::error::Error;

/// The body of a request to the target.
pub(crate) type RequestBody = http_body_util::combinators::BoxBody<bytes::Bytes, std::io::Error>;

/// How long a connection may sit idle and still be reused: the default of the HTTP client the
/// agent used before this pool, so targets see connections kept as long as before.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Connections to one origin (scheme and authority). Requests are sent as given, so their URI
/// is the origin form (`/path?query`) and they carry their own `Host` header.
pub struct Pool {
    /// `scheme://authority/`, what the connector connects to.
    origin: Uri,
    connector: HttpsConnector<HttpConnector>,
    /// Most recently returned last. A connection still streaming a response body waits here
    /// too, not ready, until it is free again.
    idle: Mutex<Vec<Idle>>,
    /// The connections' own tasks (one each), which end when the target closes the connection
    /// or its last sender is dropped.
    connections: TaskTracker,
}

struct Idle {
    sender: SendRequest<RequestBody>,
    since: Instant,
}

/// Why a request got no response. Its text is the one the agent's HTTP client has always
/// given (`client error (Connect): tcp connect error: ...`), since the sender reads it in the
/// 502 body and the delivery line shows it.
#[derive(Debug)]
pub struct RequestError {
    kind: Kind,
    source: Box<dyn std::error::Error + Send + Sync>,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    /// No connection to the target.
    Connect,
    /// The connection failed before or while the request was sent.
    SendRequest,
    /// The request was not sent on a new connection, which closed first.
    Canceled,
}

impl RequestError {
    fn new(kind: Kind, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            kind,
            source: source.into(),
        }
    }
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "client error ({:?})", self.kind)
    }
}

impl std::error::Error for RequestError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

impl Pool {
    /// A pool for `origin` (`scheme://authority`), plain HTTP or HTTPS with the system's roots.
    pub fn new(origin: Uri) -> Result<Self, Error> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| Error::Tls(e.to_string()))?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        Ok(Self {
            origin,
            connector: https.https_or_http().enable_http1().wrap_connector(http),
            idle: Mutex::new(Vec::new()),
            connections: TaskTracker::new(),
        })
    }

    /// Sends `request` on an idle connection, or a new one when none is free, and returns the
    /// response head; the connection goes back to the pool at once and is reused when its
    /// response body has been read. Dropping the future closes the connection the request was
    /// on, as HTTP/1 has no other way to abandon a request.
    pub async fn send(
        &self,
        mut request: Request<RequestBody>,
    ) -> Result<Response<Incoming>, RequestError> {
        loop {
            let (mut sender, reused) = match self.checkout() {
                Some(sender) => (sender, true),
                None => (self.connect().await?, false),
            };
            match sender.try_send_request(request).await {
                Ok(response) => {
                    self.checkin(sender);
                    return Ok(response);
                }
                Err(mut e) => match e.take_message() {
                    // The target closed the idle connection before it read the request: it
                    // never saw it, so it goes out again, on a new connection if need be.
                    Some(unsent) if reused => request = unsent,
                    Some(_) => return Err(RequestError::new(Kind::Canceled, e.into_error())),
                    None => return Err(RequestError::new(Kind::SendRequest, e.into_error())),
                },
            }
        }
    }

    /// The most recently used connection that is free now, dropping those the target closed
    /// and those idle past `IDLE_TIMEOUT`.
    fn checkout(&self) -> Option<SendRequest<RequestBody>> {
        let mut idle = self.idle.lock().ok()?;
        if idle.is_empty() {
            return None;
        }
        let now = Instant::now();
        idle.retain_mut(|entry| {
            if entry.sender.is_closed() {
                return false;
            }
            if !entry.sender.is_ready() {
                // Still busy with a response: it has not been idle yet.
                entry.since = now;
            }
            now.saturating_duration_since(entry.since) <= IDLE_TIMEOUT
        });
        let free = idle.iter().rposition(|entry| entry.sender.is_ready())?;
        Some(idle.remove(free).sender)
    }

    fn checkin(&self, sender: SendRequest<RequestBody>) {
        if sender.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// A new connection, ready for a request.
    async fn connect(&self) -> Result<SendRequest<RequestBody>, RequestError> {
        let io = self
            .connector
            .clone()
            .oneshot(self.origin.clone())
            .await
            .map_err(|e| RequestError::new(Kind::Connect, e))?;
        let (mut sender, connection) = http1::handshake(io)
            .await
            .map_err(|e| RequestError::new(Kind::SendRequest, e))?;
        let (failed, failure) = tokio::sync::oneshot::channel();
        self.connections.spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                debug!(error = %e, "target connection failed");
                let _ = failed.send(e);
            }
        });
        match sender.ready().await {
            Ok(()) => Ok(sender),
            // The connection ended before it took a request: its own error says why.
            Err(e) if e.is_closed() => {
                let e = failure.await.unwrap_or(e);
                Err(RequestError::new(Kind::SendRequest, e))
            }
            Err(e) => Err(RequestError::new(Kind::SendRequest, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Empty};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    /// A target on loopback that answers every request `ok` and counts the connections it
    /// accepts. With `hang_up`, it closes each connection after its first answer when told,
    /// without saying so, as a target closing an idle keep-alive connection does, and says
    /// when it has.
    async fn target(
        hang_up: Option<(mpsc::Receiver<()>, mpsc::Sender<()>)>,
    ) -> (Uri, mpsc::UnboundedReceiver<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (accepted, count) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut hang_up = hang_up;
            while let Ok((mut tcp, _)) = listener.accept().await {
                let _ = accepted.send(());
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while tcp.read(&mut byte).await.unwrap_or(0) == 1 {
                    head.push(byte[0]);
                    if head.ends_with(b"\r\n\r\n") {
                        head.clear();
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if tcp.write_all(answer).await.is_err() {
                            break;
                        }
                        if let Some((when, done)) = &mut hang_up {
                            let _ = when.recv().await;
                            drop(tcp);
                            let _ = done.send(()).await;
                            break;
                        }
                    }
                }
            }
        });
        let origin = format!("http://{addr}/").parse().expect("origin");
        (origin, count)
    }

    fn get(origin: &Uri) -> Request<RequestBody> {
        let host = origin.authority().expect("authority").as_str();
        Request::get("/")
            .header(http::header::HOST, host)
            .body(Empty::new().map_err(|never| match never {}).boxed())
            .expect("request")
    }

    async fn ok(pool: &Pool, origin: &Uri) {
        let response = pool.send(get(origin)).await.expect("answer");
        let body = response.into_body().collect().await.expect("body");
        assert_eq!(body.to_bytes(), "ok");
    }

    fn accepted(count: &mut mpsc::UnboundedReceiver<()>) -> usize {
        std::iter::from_fn(|| count.try_recv().ok()).count()
    }

    #[tokio::test]
    async fn an_idle_connection_is_reused() {
        let (origin, mut count) = target(None).await;
        let pool = Pool::new(origin.clone()).expect("pool");
        for _ in 0..3 {
            ok(&pool, &origin).await;
        }
        assert_eq!(accepted(&mut count), 1);
    }

    #[tokio::test]
    async fn a_connection_the_target_closed_while_idle_costs_no_request() {
        let (hang_up, when) = mpsc::channel(1);
        let (done, mut closed) = mpsc::channel(1);
        let (origin, mut count) = target(Some((when, done))).await;
        let pool = Pool::new(origin.clone()).expect("pool");
        for _ in 0..3 {
            ok(&pool, &origin).await;
            hang_up.send(()).await.expect("target runs");
            closed.recv().await.expect("target closed the connection");
        }
        assert_eq!(accepted(&mut count), 3);
    }

    #[tokio::test]
    async fn no_connection_says_so_as_the_http_client_did() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let origin: Uri = format!("http://{}/", listener.local_addr().expect("addr"))
            .parse()
            .expect("origin");
        drop(listener);
        let pool = Pool::new(origin.clone()).expect("pool");
        let e = pool.send(get(&origin)).await.expect_err("nothing listens");
        let text = crate::error::chain(&e);
        assert!(
            text.starts_with("client error (Connect): tcp connect error"),
            "{text}"
        );
    }
}
