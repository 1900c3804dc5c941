//! hyper's own refusals, answered in JSON like every other refusal of the relay.
//!
//! hyper refuses a request whose head it cannot take (over `max_header_size` or `max_headers`:
//! 431; a URI over its fixed 65,534 bytes: 414; bytes that are not HTTP: 400) before any
//! service sees it, and answers with an empty body; it has no hook to change that answer.
//! [`JsonRefusals`] sits between hyper and the connection and swaps such an answer for the same
//! status with a `{"error": "..."}` body.
//!
//! It tells hyper's answers from the router's without parsing HTTP: the router's service
//! counts each response it hands hyper and each response body hyper drops when it is done
//! with it ([`Exchange`]). hyper buffers what it writes and hands it to the connection when it
//! flushes, possibly after the body was dropped; but it flushes the connection itself only
//! once its buffer is empty. So a response counts as written out at the first flush after
//! its body was dropped, and a response head written after such a flush, with every response
//! the router produced written out, can only be hyper's own. When hyper's buffer still holds
//! the router's bytes in front of its refusal, the refusal goes out as hyper wrote it: the
//! check errs on the side of never touching the router's answers. Once a connection is
//! upgraded (an agent's WebSocket) nothing is looked at any more.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;
use bytes::{Buf, Bytes};
use http_body::{Frame, SizeHint};
use protocol::api::ErrorBody;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// hyper's fixed limit on a request URI (`MAX_URI_LEN` in its h1 parser).
pub const MAX_URI_BYTES: usize = u16::MAX as usize - 1;

/// A request hyper refused before the router saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 431: the head is over `--max-header-bytes`, or has more than `--max-headers` headers.
    HeadTooLarge,
    /// 414: the URI is over [`MAX_URI_BYTES`].
    UriTooLong,
    /// 400: not a well-formed HTTP/1 request.
    Malformed,
}

impl Refusal {
    fn from_status(status: u16) -> Option<Self> {
        match status {
            431 => Some(Self::HeadTooLarge),
            414 => Some(Self::UriTooLong),
            400 => Some(Self::Malformed),
            _ => None,
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Self::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::UriTooLong => StatusCode::URI_TOO_LONG,
            Self::Malformed => StatusCode::BAD_REQUEST,
        }
    }

    /// The `reason` label of `hookrelay_rejected_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Self::HeadTooLarge => "head_too_large",
            Self::UriTooLong => "uri_too_long",
            Self::Malformed => "malformed_request",
        }
    }
}

/// What the JSON answers say about the limits in force.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_head_bytes: usize,
    pub max_headers: usize,
}

impl Limits {
    fn message(self, refusal: Refusal) -> String {
        match refusal {
            Refusal::HeadTooLarge => format!(
                "request head too large: at most {} bytes of request line and headers \
                 (--max-header-bytes) and {} headers (--max-headers)",
                self.max_head_bytes, self.max_headers
            ),
            Refusal::UriTooLong => format!("request URI longer than {MAX_URI_BYTES} bytes"),
            Refusal::Malformed => "malformed HTTP request".to_owned(),
        }
    }

    /// The whole answer for `refusal`, as bytes on the wire; the connection closes after it,
    /// as it does after hyper's.
    fn answer(self, refusal: Refusal) -> Bytes {
        let body = serde_json::to_string(&ErrorBody::new(self.message(refusal)))
            .unwrap_or_else(|_| r#"{"error":"refused"}"#.to_owned());
        let status = refusal.status();
        let head = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or_default(),
            body.len()
        );
        Bytes::from(head + &body)
    }
}

/// One connection's responses, as the router's service sees them.
#[derive(Debug, Default)]
pub struct Exchange {
    produced: AtomicU64,
    /// Responses whose body hyper has dropped (its bytes may still be in hyper's buffer).
    dropped: AtomicU64,
    upgraded: AtomicBool,
}

impl Exchange {
    /// Counts `response` as produced and returns it with a body that counts itself finished
    /// when hyper drops it. A `101 Switching Protocols` ends the watch for the connection.
    pub fn track(self: &Arc<Self>, response: Response) -> Response {
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            self.upgraded.store(true, Ordering::Release);
        }
        self.produced.fetch_add(1, Ordering::AcqRel);
        let exchange = Arc::clone(self);
        response.map(|body| Body::new(Finishing { body, exchange }))
    }
}

/// A response body that counts itself finished once hyper has dropped it (after its last
/// frame, or when the connection ends).
struct Finishing {
    body: Body,
    exchange: Arc<Exchange>,
}

impl Drop for Finishing {
    fn drop(&mut self) {
        self.exchange.dropped.fetch_add(1, Ordering::AcqRel);
    }
}

impl http_body::Body for Finishing {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The connection as hyper sees it: reads pass through; a response head hyper writes on its
/// own (see the module docs) is swallowed and the JSON answer goes out in its place, then
/// nothing more.
pub struct JsonRefusals<T> {
    io: T,
    exchange: Arc<Exchange>,
    limits: Limits,
    /// Responses dropped as of hyper's last flush of the connection: written out.
    written_out: u64,
    /// The next byte hyper writes starts a response head.
    at_head: bool,
    /// Our answer, once hyper refused: what of it is still to be written.
    answer: Option<Bytes>,
    /// Told once, when the answer is queued (before the sender can read it).
    notify: Option<Box<dyn FnOnce(Refusal) + Send>>,
}

impl<T> JsonRefusals<T> {
    pub fn new(
        io: T,
        exchange: Arc<Exchange>,
        limits: Limits,
        notify: Box<dyn FnOnce(Refusal) + Send>,
    ) -> Self {
        Self {
            io,
            exchange,
            limits,
            written_out: 0,
            at_head: true,
            answer: None,
            notify: Some(notify),
        }
    }

    /// Every response the router produced has been written out.
    fn idle(&self) -> bool {
        self.written_out == self.exchange.produced.load(Ordering::Acquire)
    }

    /// Whether `buf`, written at a head with the router idle, is hyper's own refusal.
    fn hypers_refusal(&self, buf: &[u8]) -> Option<Refusal> {
        if !self.at_head || self.exchange.upgraded.load(Ordering::Acquire) || !self.idle() {
            return None;
        }
        let status = buf.strip_prefix(b"HTTP/1.1 ")?.get(..3)?;
        let status = std::str::from_utf8(status).ok()?.parse().ok()?;
        Refusal::from_status(status)
    }
}

impl<T: AsyncWrite + Unpin> JsonRefusals<T> {
    /// Writes what is left of our answer.
    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(answer) = self.answer.as_mut().filter(|a| !a.is_empty()) {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, answer))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            answer.advance(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for JsonRefusals<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonRefusals<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.answer.is_some() {
            // hyper closes after its refusal; whatever it still writes belongs to it.
            return Poll::Ready(Ok(buf.len()));
        }
        if let Some(refusal) = self.hypers_refusal(buf) {
            self.answer = Some(self.limits.answer(refusal));
            if let Some(notify) = self.notify.take() {
                notify(refusal);
            }
            return Poll::Ready(Ok(buf.len()));
        }
        self.at_head = false;
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.answer.is_some() {
            return Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()));
        }
        if self.at_head {
            // A head is looked at whole, as one buffer (hyper queues it as the first slice).
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &**b);
            if self.hypers_refusal(first).is_some() {
                return self.poll_write(cx, first);
            }
            // The router's answer: head and body still go out in one vectored write.
            self.at_head = first.is_empty();
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // hyper flushes the connection only once its own write buffer is empty: every
        // response dropped by now is written out, and when that is all the router produced,
        // the next write starts a new response.
        self.written_out = self.exchange.dropped.load(Ordering::Acquire);
        if self.answer.is_none() && self.idle() {
            self.at_head = true;
        }
        ready!(self.poll_answer(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_answer(cx))?;
        ready!(Pin::new(&mut self.io).poll_flush(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
