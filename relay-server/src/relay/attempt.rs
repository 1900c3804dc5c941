//! One attempt: a webhook sent to the target through one agent, the same for every kind
//! (`live` while the sender waits, `queued` from the dispatcher, `replay` from the API). Build
//! the request the target sees ([`Outgoing`], which fixes the attempt's kind), send it, wait
//! for the answer ([`InFlight`]), and turn what happened into the attempt's record. What the
//! record then does to its event is [`super::record`]'s.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::header;
use bytes::{Bytes, BytesMut};
use protocol::api::{ATTEMPT_HEADER, DELIVERY_HEADER};
use protocol::{
    BodyChunk, DeliveryId, EVENT_TYPE_HEADER, Headers, MAX_CHUNK_LEN, RequestHead, ResponseHead,
    ToAgent,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant as Deadline, timeout_at};

use crate::AppState;
use crate::agents::registry::{AgentHandle, AttemptGuard, BodyEvent, HeadReply};
use crate::error::Error;
use crate::store::{self, Attempt, AttemptKind, Event, MAX_RECORDED_BODY, Millis, NewEvent};

/// Headers the relay sets itself; copies from the sender are replaced.
const RELAY_SET: [&str; 6] = [
    "host",
    "x-forwarded-proto",
    "x-forwarded-host",
    DELIVERY_HEADER,
    ATTEMPT_HEADER,
    EVENT_TYPE_HEADER,
];

/// The request an attempt sends to the agent, and so the attempt's kind: it is in the
/// headers the target sees ([`ATTEMPT_HEADER`]) and in the record, fixed here once.
#[derive(Debug, Clone)]
pub struct Outgoing {
    id: DeliveryId,
    kind: AttemptKind,
    method: String,
    path: String,
    query: Option<String>,
    /// What the target sees: the sender's end-to-end headers plus the relay's own.
    headers: Headers,
    body: Bytes,
}

impl Outgoing {
    /// The delivery it is an attempt at.
    pub fn id(&self) -> DeliveryId {
        self.id
    }

    /// The request for the live attempt at `event`, which has just come from `peer`.
    pub fn live(state: &AppState, event: &NewEvent, peer: Option<SocketAddr>) -> Self {
        Self::new(state, event, AttemptKind::Live, peer)
    }

    /// The request for an attempt of kind `kind` at `event`, about to be stored, which came
    /// from `peer`.
    pub fn new(
        state: &AppState,
        event: &NewEvent,
        kind: AttemptKind,
        peer: Option<SocketAddr>,
    ) -> Self {
        Self {
            id: event.id,
            kind,
            method: event.method.clone(),
            path: event.path.clone(),
            query: event.query.clone(),
            headers: forwarded_headers(
                state,
                event.id,
                kind,
                event.event_type.as_deref(),
                &event.headers,
                event.body.len(),
                peer,
            ),
            body: event.body.clone(),
        }
    }

    /// The request for an attempt of kind `kind` at a stored event.
    pub fn stored(state: &AppState, event: &Event, kind: AttemptKind) -> Self {
        let source = event
            .source
            .as_deref()
            .and_then(|s| s.parse::<SocketAddr>().ok());
        Self {
            id: event.summary.id,
            kind,
            method: event.summary.method.clone(),
            path: event.summary.path.clone(),
            query: event.summary.query.clone(),
            headers: forwarded_headers(
                state,
                event.summary.id,
                kind,
                event.summary.event_type.as_deref(),
                &event.headers,
                event.body.len(),
                source,
            ),
            body: event.body.clone(),
        }
    }
}

/// An attempt in flight: the request is with the agent, its answer not yet in. Its kind is
/// its request's, from [`InFlight::begin`] to the record.
#[derive(Debug)]
pub struct InFlight {
    agent: Arc<AgentHandle>,
    guard: AttemptGuard,
    head: oneshot::Receiver<HeadReply>,
    kind: AttemptKind,
    started_at: Millis,
    started: Instant,
}

async fn send(
    state: &AppState,
    agent: &AgentHandle,
    message: &ToAgent,
    deadline: Deadline,
) -> Result<(), Error> {
    match timeout_at(deadline, agent.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Error::AgentGone),
        Err(_) => Err(Error::Timeout(state.config.timeout.as_secs())),
    }
}

/// Sends `out` through `agent` and waits for the whole answer until `deadline`: the attempt's
/// record, and the error that left it without an answer, when one did (see
/// [`InFlight::complete`]).
pub async fn deliver(
    state: &AppState,
    agent: Arc<AgentHandle>,
    out: Outgoing,
    deadline: Deadline,
) -> (Attempt, Option<Error>) {
    let mut inflight = InFlight::begin(agent, &out);
    match inflight.send(state, out, deadline).await {
        Ok(()) => inflight.complete(state, deadline).await,
        Err(e) => (inflight.failed(&e), Some(e)),
    }
}

/// The agent's response head and, for a long body, the queue the rest arrives on.
pub type Head = (ResponseHead, Option<mpsc::Receiver<BodyEvent>>);

/// The target's answer as the waiting sender gets it: the status and headers the agent sent
/// (still to be checked as HTTP) and the body, streaming from the agent.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Headers,
    pub body: Body,
}

impl InFlight {
    /// Starts tracking the attempt that sends `out` to `agent`; nothing is sent yet.
    pub fn begin(agent: Arc<AgentHandle>, out: &Outgoing) -> Self {
        let (guard, head) = agent.begin(out.id);
        Self {
            agent,
            guard,
            head,
            kind: out.kind,
            started_at: store::now_ms(),
            started: Instant::now(),
        }
    }

    /// Sends `out`: the head frame with the first slice of the body, then the rest in chunks.
    /// Waits while the agent's queue is full, up to `deadline`. Not cancel-safe: a request
    /// cut short mid-body is a broken delivery, so callers await it to the end.
    pub async fn send(
        &mut self,
        state: &AppState,
        out: Outgoing,
        deadline: Deadline,
    ) -> Result<(), Error> {
        let mut rest = out.body;
        let first = rest.split_to(rest.len().min(MAX_CHUNK_LEN));
        let head = ToAgent::Request(RequestHead {
            id: out.id,
            method: out.method,
            path: out.path,
            query: out.query,
            headers: out.headers,
            body: first,
            fin: rest.is_empty(),
        });
        send(state, &self.agent, &head, deadline).await?;
        while !rest.is_empty() {
            let data = rest.split_to(rest.len().min(MAX_CHUNK_LEN));
            let chunk = ToAgent::Body(BodyChunk {
                id: out.id,
                data,
                fin: rest.is_empty(),
            });
            send(state, &self.agent, &chunk, deadline).await?;
        }
        Ok(())
    }

    /// Waits for the response head until `deadline`.
    ///
    /// Cancel-safe: dropping the future leaves the attempt in flight, so a caller may stop
    /// waiting (to answer the sender early) and wait again later.
    pub async fn head(&mut self, state: &AppState, deadline: Deadline) -> Result<Head, Error> {
        // Biased: an answer already given wins over the agent having closed since, so an agent
        // that answers and then disconnects (a graceful agent shutdown) still gets it through.
        let (head, rest) = tokio::select! {
            biased;
            reply = timeout_at(deadline, &mut self.head) => match reply {
                Err(_) => return Err(Error::Timeout(state.config.timeout.as_secs())),
                Ok(Err(_)) => return Err(Error::AgentGone),
                Ok(Ok(Ok(answer))) => answer,
                Ok(Ok(Err(reason))) => return Err(Error::AgentAborted(reason)),
            },
            () = self.agent.closed().cancelled() => return Err(Error::AgentGone),
        };
        if axum::http::StatusCode::from_u16(head.status).is_err() {
            return Err(Error::AgentAborted(format!(
                "agent sent invalid status {}",
                head.status
            )));
        }
        Ok((head, rest))
    }

    /// Reads the rest of the response until `deadline` and records what came back.
    pub async fn read_body(self, (head, rest): Head, deadline: Deadline) -> Attempt {
        let mut body = Recorder::new(head.body);
        let mut error = None;
        if let Some(mut rest) = rest {
            loop {
                match timeout_at(deadline, rest.recv()).await {
                    Ok(Some(BodyEvent::Chunk { data, fin })) => {
                        body.push(&data);
                        if fin {
                            break;
                        }
                    }
                    Ok(Some(BodyEvent::Abort(reason))) => {
                        error = Some(format!("response aborted: {reason}"));
                        break;
                    }
                    Ok(None) => {
                        error = Some("agent disconnected mid-response".to_owned());
                        break;
                    }
                    Err(_) => {
                        error = Some("response body not finished in time".to_owned());
                        break;
                    }
                }
            }
        }
        let outcome = Outcome {
            status: Some(head.status),
            headers: head.headers,
            body: body.finish(),
            error,
        };
        self.finish(outcome)
    }

    /// The answer for the waiting sender: its body streams from the agent, and the recorded
    /// attempt arrives on the returned receiver once the body has ended (or the sender has
    /// gone).
    pub fn stream(self, (head, rest): Head) -> (Reply, oneshot::Receiver<Attempt>) {
        let (tx, rx) = oneshot::channel();
        let body = match rest {
            None => {
                let answered = Outcome {
                    status: Some(head.status),
                    headers: head.headers.clone(),
                    body: Recorder::new(head.body.clone()).finish(),
                    error: None,
                };
                let _ = tx.send(self.finish(answered));
                Body::from(head.body)
            }
            Some(rest) => {
                let tee = Tee {
                    recorder: Some(Recorder::new(head.body.clone())),
                    status: head.status,
                    headers: head.headers.clone(),
                    inflight: Some(self),
                    done: Some(tx),
                };
                response_stream(head.body, rest, tee)
            }
        };
        let reply = Reply {
            status: head.status,
            headers: head.headers,
            body,
        };
        (reply, rx)
    }

    /// The attempt's record for an error before any answer.
    pub fn failed(self, error: &Error) -> Attempt {
        self.finish(Outcome::error(error))
    }

    /// Waits for the answer until `deadline` and reads it whole: the attempt's record, and
    /// the error that left it without an answer, when one did ([`Error::AgentGone`]: the
    /// agent went away, not the target's fault).
    pub async fn complete(
        mut self,
        state: &AppState,
        deadline: Deadline,
    ) -> (Attempt, Option<Error>) {
        match self.head(state, deadline).await {
            Ok(head) => (self.read_body(head, deadline).await, None),
            Err(e) => (self.failed(&e), Some(e)),
        }
    }

    /// The attempt's record: its kind, when it started and how long it took, the agent, and
    /// `outcome`. Ends the attempt on the agent.
    fn finish(self, outcome: Outcome) -> Attempt {
        let agent = self.agent.id().to_string();
        drop(self.guard);
        Attempt {
            n: 0,
            kind: self.kind,
            started_at: self.started_at,
            duration_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            agent: Some(agent),
            status: outcome.status,
            headers: outcome.headers,
            body: outcome.body,
            error: outcome.error,
        }
    }
}

/// What came back from an attempt, before it becomes the attempt's record.
#[derive(Debug)]
struct Outcome {
    status: Option<u16>,
    headers: Headers,
    body: Bytes,
    error: Option<String>,
}

impl Outcome {
    fn error(error: &Error) -> Self {
        Self {
            status: None,
            headers: Vec::new(),
            body: Bytes::new(),
            error: Some(error.to_string()),
        }
    }
}

/// Keeps the first [`MAX_RECORDED_BODY`] bytes of a response body.
#[derive(Debug)]
struct Recorder {
    first: Bytes,
    more: Option<BytesMut>,
}

impl Recorder {
    fn new(first: Bytes) -> Self {
        let first = first.slice(..first.len().min(MAX_RECORDED_BODY));
        Self { first, more: None }
    }

    fn push(&mut self, data: &[u8]) {
        let more = self
            .more
            .get_or_insert_with(|| BytesMut::from(self.first.as_ref()));
        let room = MAX_RECORDED_BODY.saturating_sub(more.len());
        more.extend_from_slice(&data[..data.len().min(room)]);
    }

    fn finish(self) -> Bytes {
        match self.more {
            Some(more) => more.freeze(),
            None => self.first,
        }
    }
}

/// The recording side of a streamed response: whatever happens to the stream (it ends, fails,
/// or the sender hangs up and drops it), the attempt is handed over exactly once.
struct Tee {
    recorder: Option<Recorder>,
    status: u16,
    headers: Headers,
    inflight: Option<InFlight>,
    done: Option<oneshot::Sender<Attempt>>,
}

impl Tee {
    fn push(&mut self, data: &[u8]) {
        if let Some(recorder) = &mut self.recorder {
            recorder.push(data);
        }
    }

    fn end(&mut self, error: Option<String>) {
        let (Some(inflight), Some(done), Some(recorder)) =
            (self.inflight.take(), self.done.take(), self.recorder.take())
        else {
            return;
        };
        let outcome = Outcome {
            status: Some(self.status),
            headers: std::mem::take(&mut self.headers),
            body: recorder.finish(),
            error,
        };
        let _ = done.send(inflight.finish(outcome));
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        self.end(Some("sender went away mid-response".to_owned()));
    }
}

/// A streamed response body: `first`, then the agent's chunks until `fin`. An abort or a lost
/// agent ends the stream with an error, so the sender sees a truncated response rather than a
/// complete-looking one. The tee records the body and holds the delivery until it ends.
fn response_stream(first: Bytes, rest: mpsc::Receiver<BodyEvent>, tee: Tee) -> Body {
    struct State {
        first: Option<Bytes>,
        rest: mpsc::Receiver<BodyEvent>,
        done: bool,
        tee: Tee,
    }
    let state = State {
        first: Some(first),
        rest,
        done: false,
        tee,
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
                s.tee.push(&data);
                if fin {
                    s.tee.end(None);
                }
                s.done = fin;
                Some((Ok(data), s))
            }
            Some(BodyEvent::Abort(reason)) => {
                s.tee.end(Some(format!("response aborted: {reason}")));
                Some((Err(std::io::Error::other(reason)), s))
            }
            None => {
                s.tee
                    .end(Some("agent disconnected mid-response".to_owned()));
                Some((
                    Err(std::io::Error::other("agent disconnected mid-response")),
                    s,
                ))
            }
        }
    });
    Body::from_stream(stream)
}

/// The end-to-end headers of the sender's request, plus the ones the relay adds for the target
/// (`x-forwarded-*`, the delivery id and the kind of attempt), with a `content-length` of
/// `body_len` (see [`set_content_length`]).
pub fn forwarded_headers(
    state: &AppState,
    id: DeliveryId,
    kind: AttemptKind,
    event_type: Option<&str>,
    headers: &Headers,
    body_len: usize,
    peer: Option<SocketAddr>,
) -> Headers {
    // Room for the relay's own headers too (content-length, x-forwarded-for and the five
    // pushed below), so that none of the pushes reallocates.
    let mut out = Headers::with_capacity(headers.len() + 7);
    protocol::push_end_to_end(&mut out, headers);
    set_content_length(&mut out, body_len);
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
        push_ip(&mut forwarded_for, peer.ip());
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
    if let Some((_, host)) = headers.iter().find(|(n, _)| n == header::HOST.as_str()) {
        out.push(("x-forwarded-host".to_owned(), host.clone()));
    }
    let mut text = [0; uuid::fmt::Hyphenated::LENGTH];
    let text = id.as_uuid().hyphenated().encode_lower(&mut text);
    out.push((
        DELIVERY_HEADER.to_owned(),
        Bytes::copy_from_slice(text.as_bytes()),
    ));
    out.push((
        ATTEMPT_HEADER.to_owned(),
        Bytes::from_static(kind.as_str().as_bytes()),
    ));
    if let Some(event_type) = event_type {
        out.push((
            EVENT_TYPE_HEADER.to_owned(),
            Bytes::copy_from_slice(event_type.as_bytes()),
        ));
    }
    out
}

/// Makes `headers` say the body is `len` bytes. The body is stored whole, so its length is
/// known before it is sent, but a sender's chunked body comes without one, and a target that
/// does not read chunked bodies (Python's `http.server`) would take it as empty; with the
/// length the agent sends it with `Content-Length`. Transfer-Encoding is hop-by-hop, so no
/// byte of the body changes. A sender's own single, right `content-length` stays where it
/// was; a wrong or repeated one is replaced. An empty body gets none it did not have, so a
/// GET stays as it came.
fn set_content_length(headers: &mut Headers, len: usize) {
    let mut digits = [0; MAX_DIGITS];
    let len = decimal(len, &mut digits);
    let mut given = headers
        .iter()
        .filter(|(name, _)| name == header::CONTENT_LENGTH.as_str())
        .map(|(_, value)| value);
    let (first, second) = (given.next(), given.next());
    if first.is_some_and(|only| second.is_none() && only.as_ref() == len) {
        return;
    }
    let had = first.is_some();
    headers.retain(|(name, _)| name != header::CONTENT_LENGTH.as_str());
    if had || len != b"0" {
        headers.push((
            header::CONTENT_LENGTH.as_str().to_owned(),
            Bytes::copy_from_slice(len),
        ));
    }
}

/// Digits of the largest `usize` (`u64::MAX` has 20).
const MAX_DIGITS: usize = 20;

/// `n` in decimal, as its `Display` writes it, in the end of `buf`: headers are rendered per
/// webhook, and this is a fraction of the cost of the formatting machinery and a `String`.
fn decimal(mut n: usize, buf: &mut [u8; MAX_DIGITS]) -> &[u8] {
    let mut start = buf.len();
    for slot in buf.iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        start -= 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[start..]
}

/// Appends `ip` as its `Display` writes it; an IPv4 address (the usual peer) without the
/// formatting machinery, which costs more than the rest of the header together.
fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                let mut digits = [0; MAX_DIGITS];
                out.extend_from_slice(decimal(usize::from(octet), &mut digits));
            }
        }
        IpAddr::V6(v6) => {
            // Writing to a Vec cannot fail.
            let _ = write!(out, "{v6}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), Bytes::copy_from_slice(v.as_bytes())))
            .collect()
    }

    #[test]
    fn decimal_and_ip_render_as_display_does() {
        for n in [0, 1, 9, 10, 99, 100, 1024, 70_000, usize::MAX] {
            let mut digits = [0; MAX_DIGITS];
            assert_eq!(decimal(n, &mut digits), n.to_string().as_bytes());
        }
        let mut ips: Vec<IpAddr> = (0..=255u8)
            .map(|b| std::net::Ipv4Addr::new(b, 255 - b, b / 3, 10).into())
            .collect();
        ips.push(std::net::Ipv6Addr::LOCALHOST.into());
        ips.push("2001:db8::ff00:42:8329".parse().expect("valid address"));
        ips.push("::ffff:192.0.2.1".parse().expect("valid address"));
        for ip in ips {
            let mut out = b"x".to_vec();
            push_ip(&mut out, ip);
            assert_eq!(out, format!("x{ip}").as_bytes());
        }
    }

    #[test]
    fn content_length_is_kept_when_right_and_replaced_or_added_otherwise() {
        let mut right = headers(&[("content-length", "3"), ("x-a", "1")]);
        set_content_length(&mut right, 3);
        assert_eq!(right, headers(&[("content-length", "3"), ("x-a", "1")]));

        let mut chunked = headers(&[("x-a", "1")]);
        set_content_length(&mut chunked, 70_000);
        assert_eq!(
            chunked,
            headers(&[("x-a", "1"), ("content-length", "70000")])
        );

        let mut twice = headers(&[("content-length", "3"), ("content-length", "3")]);
        set_content_length(&mut twice, 3);
        assert_eq!(twice, headers(&[("content-length", "3")]));

        let mut get = headers(&[("x-a", "1")]);
        set_content_length(&mut get, 0);
        assert_eq!(get, headers(&[("x-a", "1")]), "an empty body gets none");
    }
}
