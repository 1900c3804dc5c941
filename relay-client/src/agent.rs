//! The agent's life: connect and handshake, hand each connection to `session.rs`, reconnect
//! with jittered backoff when it is lost, stop on shutdown or a refusal.

use std::sync::Arc;
use std::time::Duration;

use futures_util::SinkExt;
use protocol::api::ErrorBody;
use protocol::{
    ChannelId, FromAgent, Hello, MAX_FRAME_LEN, PROTOCOL_VERSION, Subscribe, Subscription, ToAgent,
    Welcome, close,
};
use tokio::sync::mpsc;
use tokio_tungstenite::Connector;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::AgentConfig;
use crate::error::Error;
use crate::event::{Disconnect, Event};
use crate::pool::Pool;
use crate::session::{Ctx, SessionEnd};
use crate::wire::{self, Received, Ws};

/// A connected agent. [`Agent::connect`] returns once the server has welcomed it;
/// [`Agent::run`] serves deliveries until shutdown, reconnecting as needed.
pub struct Agent {
    ctx: Arc<Ctx>,
    ws: Ws,
    welcome: Welcome,
}

impl Agent {
    /// Connects once and completes the hello/welcome exchange. `events`, if given, receives
    /// what a human would want to see. Fails with an error that is fatal (see
    /// [`Error::is_fatal`]) when the TLS files cannot be read or a certificate is refused.
    pub async fn connect(
        config: AgentConfig,
        events: Option<mpsc::Sender<Event>>,
    ) -> Result<Agent, Error> {
        let pools = (config.routes.targets())
            .map(|target| Pool::new(target.origin()))
            .collect::<Result<_, _>>()?;
        let tls = crate::tls::client_config(&config.tls)?;
        let ctx = Arc::new(Ctx {
            config,
            pools,
            tls,
            events,
            current: std::sync::atomic::AtomicUsize::new(0),
        });
        let channel = ctx.config.channel.clone();
        let (ws, welcome) = handshake(&ctx, channel.as_ref()).await?;
        ctx.emit(Event::Connected {
            public_url: welcome.public_url.clone(),
            target: ctx.config.routes.to_string(),
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
            server: ctx.server().0.to_owned(),
            why,
            retry_in,
        });
        // With several relay nodes, the next attempt goes to the next one.
        ctx.next_server();
        tokio::select! {
            () = tokio::time::sleep(retry_in) => {}
            () = shutdown.cancelled() => return Ok(None),
        }
        match handshake(ctx, Some(channel)).await {
            Ok((ws, welcome)) => {
                ctx.emit(Event::Connected {
                    public_url: welcome.public_url,
                    target: ctx.config.routes.to_string(),
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

/// Bytes tungstenite reads from the socket at a time. It zero-fills that much of its buffer
/// before every read, so its default (128 KiB) cost the agent more instructions per webhook
/// than everything else it does together (bench/instructions.sh). A 64 KiB body chunk now
/// takes a few reads, each a cheap one. (The server reads 8 KiB at a time, chosen to keep an
/// idle agent's memory small.)
const READ_BUFFER: usize = 16 * 1024;

/// Opens the WebSocket and exchanges hello/welcome.
async fn handshake(ctx: &Ctx, channel: Option<&ChannelId>) -> Result<(Ws, Welcome), Error> {
    let config = &ctx.config;
    let (_, url) = ctx.server();
    let attempt = async {
        let mut ws_config = WebSocketConfig::default();
        ws_config.max_message_size = Some(MAX_FRAME_LEN);
        ws_config.max_frame_size = Some(MAX_FRAME_LEN);
        ws_config.read_buffer_size = READ_BUFFER;
        let (mut ws, _) = tokio_tungstenite::connect_async_tls_with_config(
            url,
            Some(ws_config),
            true,
            Some(Connector::Rustls(Arc::clone(&ctx.tls))),
        )
        .await
        .map_err(|e| connect_error(url, &e))?;
        let hello = Hello {
            version: PROTOCOL_VERSION,
            channel: channel.map(|c| c.to_string()),
            token: config.token.clone(),
            client: concat!("relay-client/", env!("CARGO_PKG_VERSION")).to_owned(),
        };
        // An agent that takes every type says hello as agents always have, so it still
        // works with a relay from before subscriptions.
        let subscription = config.routes.subscription();
        let subscribes = subscription != Subscription::All;
        let hello = match subscription.patterns() {
            None => FromAgent::Hello(hello),
            Some(events) => FromAgent::Subscribe(Subscribe { hello, events }),
        };
        let hs = |reason: String| Error::Handshake {
            url: url.to_owned(),
            reason,
        };
        let hello = wire::message(&hello).map_err(|e| hs(e.to_string()))?;
        ws.send(hello).await.map_err(|e| hs(e.to_string()))?;
        loop {
            return match wire::recv(&mut ws, url).await {
                Received::Frame(ToAgent::Welcome(welcome)) => Ok((ws, welcome)),
                Received::Frame(ToAgent::Error(e)) => Err(wire::refusal(url, e.code, e.message)),
                Received::Frame(_) | Received::Unexpected => {
                    Err(hs("unexpected frame before welcome".to_owned()))
                }
                Received::Other => continue,
                Received::Undecodable(e) => Err(hs(e.to_string())),
                // A relay from before subscriptions cannot decode the frame that carries one.
                Received::Closed(Error::Closed {
                    code: close::PROTOCOL_ERROR,
                    ..
                }) if subscribes => Err(Error::NoSubscriptions(url.to_owned())),
                Received::Closed(e) => Err(e),
                Received::Broken(e) => Err(hs(e.to_string())),
                Received::Ended => Err(hs("connection closed".to_owned())),
            };
        }
    };
    tokio::time::timeout(config.connect_timeout, attempt)
        .await
        .map_err(|_| Error::Handshake {
            url: url.to_owned(),
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
            .and_then(|body| serde_json::from_slice::<ErrorBody>(body).ok())
            .map(|body| body.error);
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
