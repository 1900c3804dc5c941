//! The HTTP/1.1 server loop: accepts connections from a listener (plain TCP, or TLS from
//! [`super::tls`]) and serves the router on each, with the limits a public server needs against
//! slow or oversized requests; every request carries its connection's [`Peer`].
//!
//! `axum::serve` gives no access to hyper's connection settings, and its defaults have no
//! header-read timeout (hyper's needs a timer, which `axum::serve` does not set): a client that
//! trickles its request headers (slowloris) would hold a connection forever. This loop is
//! `axum::serve`'s, with hyper's `http1::Builder` configured: a header-read timeout, a cap on
//! header count and on the bytes of the request head. Over either cap hyper answers 431, which
//! [`refusal`] turns into a JSON answer like the router's.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::serve::Listener;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;
use tracing::{debug, info};

pub mod refusal;

pub use refusal::Refusal;

/// Told of each request hyper refused on its own (see [`refusal`]), after its answer.
pub type OnRefusal = Arc<dyn Fn(Refusal) + Send + Sync>;

/// What a request head may cost the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Time a client has to send its whole request head, from its first byte (and, on a
    /// kept-alive connection, how long the connection may idle between requests).
    pub header_timeout: Duration,
    /// Headers in one request.
    pub max_headers: usize,
    /// Bytes of the request head as it arrives: the request line and the header lines with
    /// their line ends, up to and including the empty line that ends the head. One more
    /// byte gets 431.
    pub max_head_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            max_headers: 100,
            max_head_bytes: 64 * 1024,
        }
    }
}

/// The headers hyper takes in one request when no limit is set (its `max_headers` default).
const HYPER_MAX_HEADERS: usize = 100;

/// Hyper's smallest read buffer, and the smallest head limit we accept.
pub const MIN_HEAD_BYTES: usize = 8192;

/// Who is at the other end of a connection, as handlers see it through
/// `ConnectInfo<Peer>` (set by [`serve`]), over plain HTTP and over TLS alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The peer presented a client certificate, and it chains to `--client-ca` (rustls fails
    /// the handshake otherwise). Always false over plain HTTP and without `--client-ca`.
    pub client_cert: bool,
}

impl Peer {
    /// The peer of a request, from the `ConnectInfo` the server attaches to every request.
    /// The one place that names the type, so no handler can look for the wrong one.
    pub fn of(extensions: &axum::http::Extensions) -> Option<Peer> {
        extensions
            .get::<axum::extract::ConnectInfo<Peer>>()
            .map(|info| info.0)
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.addr.fmt(f)
    }
}

/// The plain-HTTP listener: TCP with `TCP_NODELAY` on every connection, since deliveries are
/// small messages on long-lived connections and Nagle's algorithm would hold each one back
/// waiting for an ACK.
pub struct PlainListener(pub TcpListener);

impl Listener for PlainListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (tcp, addr) = Listener::accept(&mut self.0).await;
        set_nodelay(&tcp);
        (tcp, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

pub(crate) fn set_nodelay(tcp: &TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        debug!(error = %e, "cannot set TCP_NODELAY");
    }
}

/// A connection that knows whether its peer presented a verified client certificate.
pub trait PeerIo {
    fn client_cert(&self) -> bool;
}

impl PeerIo for TcpStream {
    fn client_cert(&self) -> bool {
        false
    }
}

/// Serves `router` on every connection `listener` accepts until `stop` fires, then stops
/// accepting, lets each connection finish the request it is on, and returns once all have
/// closed. Upgraded connections (agents' WebSockets) are not waited for: their sessions end
/// through the server's own shutdown. A request hyper refuses itself is answered in JSON and
/// reported to `on_refusal`.
pub async fn serve<L>(
    mut listener: L,
    router: Router,
    limits: HttpLimits,
    on_refusal: OnRefusal,
    stop: CancellationToken,
) where
    L: Listener<Addr = SocketAddr>,
    L::Io: PeerIo,
{
    let max_head_bytes = limits.max_head_bytes.max(MIN_HEAD_BYTES);
    let mut builder = http1::Builder::new();
    // hyper measures the head on the wire, exactly: a complete head over `max_header_size`,
    // or an incomplete one that has reached it, is refused. Its read buffer (which also
    // holds body bytes) must be larger, or it would refuse first, at a size that is not the
    // head's.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(max_head_bytes)
        .max_buf_size(max_head_bytes + MIN_HEAD_BYTES);
    // hyper's own limit is the same number on the stack; a limit set, even the same one, is a
    // buffer it allocates and fills on every parse of a request head.
    if limits.max_headers != HYPER_MAX_HEADERS {
        builder.max_headers(limits.max_headers);
    }
    let wording = refusal::Limits {
        max_head_bytes,
        max_headers: limits.max_headers,
    };
    let connections = TaskTracker::new();
    loop {
        let (io, addr) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => break,
        };
        let peer = Peer {
            addr,
            client_cert: io.client_cert(),
        };
        let exchange = Arc::new(refusal::Exchange::default());
        let tracked = Arc::clone(&exchange);
        let service = router
            .clone()
            .map_request(move |mut req: axum::http::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            })
            .map_response(move |response| tracked.track(response));
        let on_refusal = Arc::clone(&on_refusal);
        let notify = Box::new(move |refused: Refusal| {
            let status = refused.status().as_u16();
            info!(%peer, status, reason = refused.reason(), "request refused before routing");
            on_refusal(refused);
        });
        let io = refusal::JsonRefusals::new(io, exchange, wording, notify);
        let connection = builder
            .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
            .with_upgrades();
        let stop = stop.clone();
        connections.spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = stop.cancelled() => {
                    // Finish the request in progress, then close instead of keeping alive.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// The status line of the answer to a GET with `headers + 1` headers in all.
    async fn status_with_headers(limits: HttpLimits, headers: usize) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let router = Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(
            PlainListener(listener),
            router,
            limits,
            Arc::new(|_| {}),
            stop.clone(),
        ));
        let mut request = "GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n".to_owned();
        for i in 1..headers {
            request.push_str(&format!("x-{i}: {i}\r\n"));
        }
        request.push_str("\r\n");
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(request.as_bytes()).await.expect("write");
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).await.expect("read");
        stop.cancel();
        server.await.expect("server ends");
        let answer = String::from_utf8_lossy(&answer).into_owned();
        answer.lines().next().unwrap_or_default().to_owned()
    }

    #[tokio::test]
    async fn the_default_header_limit_is_hypers_own() {
        let limits = HttpLimits::default();
        assert_eq!(limits.max_headers, HYPER_MAX_HEADERS);
        // 100 headers in all pass, 101 do not.
        let at = status_with_headers(limits, HYPER_MAX_HEADERS - 1).await;
        assert_eq!(at, "HTTP/1.1 200 OK");
        let over = status_with_headers(limits, HYPER_MAX_HEADERS).await;
        assert!(over.starts_with("HTTP/1.1 431"), "{over}");
        let lower = HttpLimits {
            max_headers: 10,
            ..limits
        };
        assert_eq!(status_with_headers(lower, 9).await, "HTTP/1.1 200 OK");
        assert!(
            status_with_headers(lower, 10)
                .await
                .starts_with("HTTP/1.1 431")
        );
    }
}
