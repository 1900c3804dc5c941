//! The client's error type.

use protocol::{ChannelId, DeliveryId};

/// Why the agent could not connect or had to stop, or why a call to the server's API failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid --server URL {0:?}: use http://host[:port] or https://host[:port]")]
    ServerUrl(String),
    #[error("invalid --forward URL {0:?}: use http://host[:port][/path] or https://...")]
    ForwardUrl(String),
    #[error(transparent)]
    Channel(#[from] protocol::InvalidChannel),
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("handshake with {url} failed: {reason}")]
    Handshake { url: String, reason: String },
    /// The server closed the WebSocket with a code retrying may get past (1001: it is
    /// shutting down).
    #[error("{url} closed the connection ({code}): {reason}")]
    Closed {
        url: String,
        code: u16,
        reason: String,
    },
    /// The server answered the WebSocket request with an HTTP error other than 401/403
    /// (`message` is its `error`, or the status's reason).
    #[error("{url} answered {status}: {message}")]
    HttpRefused {
        url: String,
        status: http::StatusCode,
        message: String,
    },
    /// The server refused us for a reason retrying cannot fix (token, version, channel name).
    #[error("server refused the agent: {0}")]
    Refused(String),
    #[error("cannot set up TLS: {0}")]
    Tls(String),
    /// A certificate was refused, theirs or ours: retrying cannot fix it.
    #[error("TLS handshake with {host} failed: {reason}")]
    TlsHandshake { host: String, reason: String },
    #[error("--{given} needs --{missing}: a client certificate is the pair of both")]
    ClientCertPair {
        given: &'static str,
        missing: &'static str,
    },
    #[error(
        "--forward is required to run the agent (or set HOOKRELAY_FORWARD), e.g. --forward http://localhost:3000; or give every target with --route TYPE=URL"
    )]
    MissingForward,
    #[error(transparent)]
    Route(#[from] crate::route::RouteError),
    /// The server could not read the agent's subscription: it is older than `--events`.
    #[error(
        "the relay at {0} does not take event subscriptions (--events, or --route without --forward): upgrade relay-server, or run without them"
    )]
    NoSubscriptions(String),
    #[error(
        "`relay-client {0}` needs --channel NAME or the channel's --token TOKEN, which names it (or set HOOKRELAY_CHANNEL or HOOKRELAY_TOKEN)"
    )]
    MissingChannel(&'static str),
    /// `GET /api/token/channel` answered 401: the token is no registered channel's.
    #[error(
        "no channel on the server has this token: check --token, or pass --channel NAME too (the admin token and open mode's agent token name no channel)"
    )]
    TokenNamesNoChannel,
    /// `GET /api/token/channel` answered 404: a server from before that route.
    #[error(
        "this server cannot find a channel from its token (it is older than this relay-client): pass --channel NAME"
    )]
    NoTokenLookup,
    #[error("invalid --token: it must be a valid HTTP header value")]
    Token,
    #[error("cannot reach the server at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the server at {url} did not answer within {secs} s")]
    ApiTimeout { url: String, secs: u64 },
    #[error("unexpected answer from {url}: {reason}")]
    BadAnswer { url: String, reason: String },
    /// 401 from the API.
    #[error(
        "the server refused the request: the token is missing or wrong (pass the channel's token, or the server's agent token, with --token or HOOKRELAY_TOKEN)"
    )]
    Unauthorized,
    /// 404 for one event.
    #[error("no event {id} in channel {channel}")]
    UnknownEvent { id: DeliveryId, channel: ChannelId },
    /// 503 for a replay: no agent serves the channel (`message` is the server's).
    #[error(
        "{message}; to deliver it from here instead, run: relay-client replay {id} --channel {channel} --forward URL"
    )]
    NoAgent {
        id: DeliveryId,
        channel: ChannelId,
        message: String,
    },
    /// Any other non-2xx answer; `message` is the server's `error`.
    #[error("the server answered {status}: {message}")]
    Api {
        status: http::StatusCode,
        message: String,
    },
    /// The stored request cannot be sent again as it was received.
    #[error("event {id} cannot be replayed from here: {reason}")]
    StoredEvent { id: DeliveryId, reason: String },
    /// `replay --header` asks both to remove a header (`Name:`) and to set it.
    #[error(
        "--header {name}: given both empty (to remove it) and with a value; give one or the other"
    )]
    HeaderConflict { name: String },
    /// `replay --body-file` names a file that cannot be read.
    #[error("cannot read --body-file {path}: {reason}")]
    BodyFile { path: String, reason: String },
    /// An edited replay came back as a plain one: the server does not know edits, so the
    /// target got the stored request.
    #[error(
        "the server replayed event {id} as it was stored, without the edits: it is older than this relay-client and cannot edit a replay; use --forward URL to send the edited request from here"
    )]
    EditsIgnored { id: DeliveryId },
}

impl Error {
    /// True when reconnecting cannot help and the agent should stop: everything but failing
    /// to connect or to complete the handshake.
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self,
            Error::Connect { .. }
                | Error::Handshake { .. }
                | Error::Closed { .. }
                | Error::HttpRefused { .. }
        )
    }
}

/// `err` and its chain of sources, joined by ": ", for a one-line reason.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}
