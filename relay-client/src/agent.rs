//! The agent's life: connect and handshake, hand each connection to `session.rs`, reconnect
//! with jittered backoff when it is lost, stop on shutdown or a refusal.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::{SinkExt, StreamExt};
use protocol::{
    ChannelId, DeliveryId, ErrorCode, Frame, Hello, MAX_FRAME_LEN, PROTOCOL_VERSION, RequestHead,
    Welcome, close,
};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::AgentConfig;
use crate::error::Error;
use crate::forward::{self, HttpClient, Outcome};

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The code a close frame without one stands for (RFC 6455, section 7.1.5).
const NO_STATUS: u16 = 1005;

/// What the agent reports for a human to read (see `output.rs`).
#[derive(Debug, Clone)]
pub enum Event {
    /// Connected (or reconnected) and serving `public_url`.
    Connected { public_url: String, target: String },
    /// Not connected to the relay at `server` (as given with `--server`) because of `why`;
    /// the next attempt is in `retry_in`.
    Disconnected {
        server: String,
        why: Disconnect,
        retry_in: Duration,
    },
    /// Shutdown began: `in_flight` deliveries may take up to `grace` to finish.
    Draining { in_flight: usize, grace: Duration },
    /// The agent stopped; `unfinished` deliveries were cut off at the end of the grace period.
    Stopped { unfinished: usize },
    /// One delivery finished.
    Delivered(Delivery),
}

/// Why the agent is not connected, for the line that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disconnect {
    /// The relay closed the connection with `code` (1001: it is shutting down).
    Closed { code: u16, reason: String },
    /// The relay answered the WebSocket request with an HTTP error and this reason.
    Refused { status: u16, message: String },
    /// The relay could not be reached at all.
    Unreachable(String),
    /// The connection broke, or the handshake did not complete.
    Lost(String),
}

impl Disconnect {
    /// Why `e`, an error that reconnecting may get past, kept us from the relay.
    pub fn of(e: &Error) -> Self {
        match e {
            Error::Closed { code, reason, .. } => Disconnect::Closed {
                code: *code,
                reason: reason.clone(),
            },
            Error::HttpRefused {
                status, message, ..
            } => Disconnect::Refused {
                status: status.as_u16(),
                message: message.clone(),
            },
            Error::Connect { reason, .. } => Disconnect::Unreachable(reason.clone()),
            Error::Handshake { reason, .. } => {
                Disconnect::Lost(format!("handshake failed: {reason}"))
            }
            other => Disconnect::Lost(other.to_string()),
        }
    }
}

/// One finished delivery, as the output line shows it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub at: SystemTime,
    pub id: DeliveryId,
    pub method: String,
    /// Path below the channel, with `?query` when there was one.
    pub path: String,
    /// Status sent back to the sender; `None` when no answer could be sent.
    pub status: Option<u16>,
    pub duration: Duration,
    pub error: Option<String>,
    pub kind: AttemptKind,
}

/// Which kind of attempt a delivery was, as the server's `x-hookrelay-attempt` header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptKind {
    /// The sender is waiting for the answer (also what a server without the header sends).
    Live,
    /// From the server's queue: it came while no agent was connected, or is a retry.
    Queued,
    /// Asked for through the server's replay API.
    Replay,
    /// `relay-client replay ID --forward URL`: sent from here, not recorded on the server.
    LocalReplay,
}

pub use protocol::api::ATTEMPT_HEADER;

impl AttemptKind {
    /// The kind `headers` name; [`AttemptKind::Live`] when they name none we know.
    fn of(headers: &protocol::Headers) -> Self {
        let value = headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(ATTEMPT_HEADER))
            .map(|(_, value)| value.as_ref());
        let named = value
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(protocol::api::AttemptKind::parse);
        match named {
            Some(protocol::api::AttemptKind::Queued) => AttemptKind::Queued,
            Some(protocol::api::AttemptKind::Replay) => AttemptKind::Replay,
            Some(protocol::api::AttemptKind::Live) | None => AttemptKind::Live,
        }
    }
}

/// A delivery under way: what its [`Delivery`] line will say besides the outcome.
pub(crate) struct Started {
    at: SystemTime,
    clock: Instant,
    id: DeliveryId,
    method: String,
    path: String,
    kind: AttemptKind,
}

impl Started {
    /// Starts the clock for `head`, before it goes to the target.
    pub(crate) fn now(head: &RequestHead) -> Self {
        Self {
            at: SystemTime::now(),
            clock: Instant::now(),
            id: head.id,
            method: head.method.clone(),
            path: crate::output::shown_path(&head.path, head.query.as_deref()),
            kind: AttemptKind::of(&head.headers),
        }
    }

    pub(crate) fn finish(self, outcome: Outcome) -> Delivery {
        Delivery {
            at: self.at,
            id: self.id,
            method: self.method,
            path: self.path,
            status: outcome.status,
            duration: self.clock.elapsed(),
            error: outcome.error,
            kind: self.kind,
        }
    }
}

/// A connected agent. [`Agent::connect`] returns once the server has welcomed it;
/// [`Agent::run`] serves deliveries until shutdown, reconnecting as needed.
pub struct Agent {
    ctx: Arc<Ctx>,
    ws: Ws,
    welcome: Welcome,
}

pub(crate) struct Ctx {
    pub(crate) config: AgentConfig,
    pub(crate) client: HttpClient,
    /// TLS towards the server, read from `config.tls` once for every (re)connection.
    tls: Arc<rustls::ClientConfig>,
    events: Option<mpsc::Sender<Event>>,
}

impl Ctx {
    pub(crate) fn emit(&self, event: Event) {
        if let Some(events) = &self.events {
            // Output is best effort: a full queue drops a line rather than stall deliveries.
            let _ = events.try_send(event);
        }
    }
}

/// How one connection ended.
pub(crate) enum SessionEnd {
    /// Shutdown; `unfinished` deliveries were still running at the end of the grace period.
    Shutdown {
        unfinished: usize,
    },
    Lost(Disconnect),
    Fatal(Error),
}

impl Agent {
    /// Connects once and completes the hello/welcome exchange. `events`, if given, receives
    /// what a human would want to see. Fails with an error that is fatal (see
    /// [`Error::is_fatal`]) when the TLS files cannot be read or a certificate is refused.
    pub async fn connect(
        config: AgentConfig,
        events: Option<mpsc::Sender<Event>>,
    ) -> Result<Agent, Error> {
        let client = forward::http_client()?;
        let tls = crate::tls::client_config(&config.tls)?;
        let ctx = Arc::new(Ctx {
            config,
            client,
            tls,
            events,
        });
        let channel = ctx.config.channel.clone();
        let (ws, welcome) = handshake(&ctx, channel.as_ref()).await?;
        ctx.emit(Event::Connected {
            public_url: welcome.public_url.clone(),
            target: ctx.config.target.to_string(),
        });
        Ok(Agent { ctx, ws, welcome })
    }

    /// Public webhook URL of the channel this agent serves.
    pub fn public_url(&self) -> &str {
        &self.welcome.public_url
    }

    /// The channel this agent serves (assigned by the server when none was asked for).
    pub fn channel(&self) -> &str {
        &self.welcome.channel
    }

    /// Serves deliveries until `shutdown` is cancelled, reconnecting after a lost connection
    /// with exponential backoff and jitter, to the same channel. On shutdown, deliveries in
    /// flight finish (bounded by the configured grace) before the connection closes.
    /// Returns an error only when the server refuses the agent for good.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let Agent {
            ctx,
            mut ws,
            welcome,
        } = self;
        let channel = ChannelId::parse(&welcome.channel)?;
        loop {
            let why = match crate::session::serve(&ctx, ws, &shutdown).await {
                SessionEnd::Shutdown { unfinished } => {
                    ctx.emit(Event::Stopped { unfinished });
                    return Ok(());
                }
                SessionEnd::Fatal(e) => return Err(e),
                SessionEnd::Lost(why) => why,
            };
            info!(?why, "connection to the server lost");
            ws = match reconnect(&ctx, &channel, why, &shutdown).await? {
                Some(ws) => ws,
                None => {
                    ctx.emit(Event::Stopped { unfinished: 0 });
                    return Ok(());
                }
            };
        }
    }
}

/// Retries the handshake with backoff until it succeeds (`Some`), shutdown (`None`), or the
/// server refuses us for good.
async fn reconnect(
    ctx: &Ctx,
    channel: &ChannelId,
    mut why: Disconnect,
    shutdown: &CancellationToken,
) -> Result<Option<Ws>, Error> {
    let mut attempt = 0;
    loop {
        let retry_in = backoff(&ctx.config, attempt);
        ctx.emit(Event::Disconnected {
            server: ctx.config.server.clone(),
            why,
            retry_in,
        });
        tokio::select! {
            () = tokio::time::sleep(retry_in) => {}
            () = shutdown.cancelled() => return Ok(None),
        }
        match handshake(ctx, Some(channel)).await {
            Ok((ws, welcome)) => {
                ctx.emit(Event::Connected {
                    public_url: welcome.public_url,
                    target: ctx.config.target.to_string(),
                });
                return Ok(Some(ws));
            }
            Err(e) if e.is_fatal() => return Err(e),
            Err(e) => why = Disconnect::of(&e),
        }
        attempt += 1;
    }
}

/// Delay before reconnect attempt `attempt` (0-based): doubling from `backoff_min`, capped at
/// `backoff_max`, then "equal jitter" (half fixed, half random) so a fleet of agents cut off
/// by one server restart does not reconnect in lockstep.
pub fn backoff(config: &AgentConfig, attempt: u32) -> Duration {
    let exp = config
        .backoff_min
        .saturating_mul(1u32 << attempt.min(16))
        .min(config.backoff_max);
    let half = exp / 2;
    let mut seed = [0u8; 8];
    let random = match getrandom::fill(&mut seed) {
        Ok(()) => u64::from_le_bytes(seed),
        Err(_) => 0,
    };
    let jitter_nanos = half.as_nanos() as u64;
    half + Duration::from_nanos(if jitter_nanos == 0 {
        0
    } else {
        random % jitter_nanos
    })
}

/// Opens the WebSocket and exchanges hello/welcome.
async fn handshake(ctx: &Ctx, channel: Option<&ChannelId>) -> Result<(Ws, Welcome), Error> {
    let config = &ctx.config;
    let url = &config.ws_url;
    let attempt = async {
        let mut ws_config = WebSocketConfig::default();
        ws_config.max_message_size = Some(MAX_FRAME_LEN);
        ws_config.max_frame_size = Some(MAX_FRAME_LEN);
        let (mut ws, _) = tokio_tungstenite::connect_async_tls_with_config(
            url.as_str(),
            Some(ws_config),
            true,
            Some(Connector::Rustls(Arc::clone(&ctx.tls))),
        )
        .await
        .map_err(|e| connect_error(url, &e))?;
        let hello = Frame::Hello(Hello {
            version: PROTOCOL_VERSION,
            channel: channel.map(|c| c.to_string()),
            token: config.token.clone(),
            client: concat!("relay-client/", env!("CARGO_PKG_VERSION")).to_owned(),
        });
        let hs = |reason: String| Error::Handshake {
            url: url.clone(),
            reason,
        };
        let bytes = protocol::encode(&hello).map_err(|e| hs(e.to_string()))?;
        ws.send(Message::Binary(bytes.into()))
            .await
            .map_err(|e| hs(e.to_string()))?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(bytes))) => {
                    return match protocol::decode(&bytes).map_err(|e| hs(e.to_string()))? {
                        Frame::Welcome(welcome) => Ok((ws, welcome)),
                        Frame::Error(e) => Err(refusal(url, e.code, e.message)),
                        _ => Err(hs("unexpected frame before welcome".to_owned())),
                    };
                }
                Some(Ok(Message::Close(frame))) => return Err(closed(url, frame)),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(hs(e.to_string())),
                None => return Err(hs("connection closed".to_owned())),
            }
        }
    };
    tokio::time::timeout(config.connect_timeout, attempt)
        .await
        .map_err(|_| Error::Handshake {
            url: url.clone(),
            reason: format!("no welcome within {:?}", config.connect_timeout),
        })?
}

/// The error for a failed WebSocket connect: refused certificates and a 401/403 on `/ws` stop
/// the agent; anything else (refused connection, proxy errors) is retried.
fn connect_error(url: &str, e: &tokio_tungstenite::tungstenite::Error) -> Error {
    use tokio_tungstenite::tungstenite::Error as WsError;
    if let Some(fatal) = crate::tls::certificate_failure(url, e) {
        return fatal;
    }
    if let WsError::Http(response) = e {
        let status = response.status();
        let message = response
            .body()
            .as_deref()
            .and_then(|body| serde_json::from_slice::<serde_json::Value>(body).ok())
            .and_then(|json| json["error"].as_str().map(str::to_owned));
        if status == http::StatusCode::UNAUTHORIZED || status == http::StatusCode::FORBIDDEN {
            let message = message.unwrap_or_else(|| format!("HTTP {status} on {url}"));
            let hint = if message.contains("client certificate") {
                "; pass --cert FILE --key FILE"
            } else {
                ""
            };
            return Error::Refused(format!("{message}{hint}"));
        }
        return Error::HttpRefused {
            url: url.to_owned(),
            status,
            message: message
                .unwrap_or_else(|| status.canonical_reason().unwrap_or("no reason").to_owned()),
        };
    }
    Error::Connect {
        url: url.to_owned(),
        reason: crate::error::chain(e),
    }
}

/// The error for an `Error` frame from the server at `url`: shutting down and protocol
/// errors may pass on reconnecting, the rest are refusals.
pub(crate) fn refusal(url: &str, code: ErrorCode, message: String) -> Error {
    match code {
        ErrorCode::ShuttingDown => Error::Closed {
            url: url.to_owned(),
            code: close::GOING_AWAY,
            reason: message,
        },
        ErrorCode::ProtocolError => Error::Handshake {
            url: url.to_owned(),
            reason: message,
        },
        _ => Error::Refused(message),
    }
}

/// The error for a close frame from the server at `url`: 4xxx codes are refusals retrying
/// cannot fix.
pub(crate) fn closed(url: &str, frame: Option<CloseFrame>) -> Error {
    match frame {
        Some(f) if u16::from(f.code) >= 4000 => Error::Refused(f.reason.to_string()),
        Some(f) => Error::Closed {
            url: url.to_owned(),
            code: u16::from(f.code),
            reason: f.reason.to_string(),
        },
        None => Error::Closed {
            url: url.to_owned(),
            code: NO_STATUS,
            reason: "no reason given".to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let mut config =
            AgentConfig::new("http://127.0.0.1:1", "http://127.0.0.1:2").expect("valid URLs");
        config.backoff_min = Duration::from_millis(100);
        config.backoff_max = Duration::from_secs(2);
        for attempt in 0..40 {
            let exp =
                (Duration::from_millis(100) * 2u32.pow(attempt.min(10))).min(config.backoff_max);
            let delay = backoff(&config, attempt);
            assert!(
                delay >= exp / 2 && delay <= exp,
                "attempt {attempt}: {delay:?} not in [{:?}, {exp:?}]",
                exp / 2
            );
        }
        let delays: std::collections::HashSet<_> = (0..20).map(|_| backoff(&config, 5)).collect();
        assert!(delays.len() > 1, "jitter spreads reconnects");
    }
}
