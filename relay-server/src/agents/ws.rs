//! Agent sessions on `GET /ws`: handshake, the reader loop and heartbeats.
//!
//! Each session is one task that reads the agent's inbox; a writer task drains its outbox (see
//! [`super::wire`], which owns the socket and the frames on it). When either ends, the other
//! is cancelled and every attempt still waiting on the agent fails with 502.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use protocol::{
    DecodeError, ErrorCode, ErrorFrame, FromAgent, Hello, PROTOCOL_VERSION, Subscribe,
    Subscription, ToAgent, Welcome, close,
};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::AppState;
use crate::agents::registry::{AgentHandle, AgentInfo, BodyEvent, Route};
use crate::agents::wire::{self, Inbox, Outbox, Received, RecvError};
use crate::auth::AgentGrant;
use crate::error::Error;
use crate::net::http::Peer;

/// How long the reader waits for a slow sender to take a reply frame before abandoning that
/// delivery, so one stalled sender cannot hold up the agent's other deliveries.
const REPLY_STALL: Duration = Duration::from_secs(10);

/// `GET /ws`: upgrades to an agent session, on a socket set up by [`wire::configure`].
///
/// With `--client-ca`, a connection without a verified client certificate is refused with 403
/// before anything else: the TLS layer lets such connections through for webhook senders.
pub async fn upgrade(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: axum::http::HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let client =
        crate::auth::forwarded_client(peer.addr.ip(), &headers, &state.config.trusted_proxies);
    let needs_cert = state
        .config
        .tls
        .as_ref()
        .is_some_and(|tls| tls.client_ca.is_some());
    if needs_cert && !peer.client_cert {
        warn!(%peer, "agent refused: no client certificate");
        return Error::ClientCertRequired.into_response();
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    wire::configure(ws).on_upgrade(move |socket| {
        let tracker = state.tracker.clone();
        async move {
            tracker
                .track_future(
                    session(state, socket, peer.addr, client)
                        .instrument(info_span!("agent", %peer)),
                )
                .await
        }
    })
}

/// Why a session ended, mapped to the close frame the agent receives in [`close_for`].
#[derive(Debug, thiserror::Error)]
enum SessionEnd {
    #[error("agent closed the connection")]
    PeerClosed,
    #[error("no message from the agent for {0:?}")]
    PeerTimeout(Duration),
    #[error("no hello within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("server shutting down")]
    Shutdown,
    #[error("{0}")]
    Decode(#[from] DecodeError),
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    #[error("refused: {1}")]
    Refused(ErrorCode, String),
    #[error("socket error: {0}")]
    Socket(axum::Error),
}

impl From<RecvError> for SessionEnd {
    fn from(e: RecvError) -> Self {
        match e {
            RecvError::Closed => SessionEnd::PeerClosed,
            RecvError::Socket(e) => SessionEnd::Socket(e),
            RecvError::Text => SessionEnd::Protocol("text message"),
            RecvError::Decode(e) => SessionEnd::Decode(e),
        }
    }
}

/// The close code and reason for each way a session ends; `None` when the socket is already
/// gone.
fn close_for(end: &SessionEnd) -> Option<(u16, String)> {
    match end {
        // A message over the size limit leaves the close to us; other socket errors mean the
        // connection is gone.
        SessionEnd::Socket(e) if wire::message_too_long(e) => {
            Some((close::TOO_BIG, end.to_string()))
        }
        SessionEnd::PeerClosed | SessionEnd::Socket(_) => None,
        SessionEnd::PeerTimeout(_) | SessionEnd::HandshakeTimeout(_) => {
            Some((close::POLICY, end.to_string()))
        }
        SessionEnd::Shutdown => Some((close::GOING_AWAY, end.to_string())),
        SessionEnd::Decode(DecodeError::TooLarge { .. }) => Some((close::TOO_BIG, end.to_string())),
        SessionEnd::Decode(_) | SessionEnd::Protocol(_) => {
            Some((close::PROTOCOL_ERROR, end.to_string()))
        }
        SessionEnd::Refused(code, _) => Some((
            match code {
                ErrorCode::VersionMismatch => close::VERSION_MISMATCH,
                ErrorCode::Unauthorized => close::UNAUTHORIZED,
                ErrorCode::InvalidChannel => close::INVALID_CHANNEL,
                ErrorCode::ProtocolError => close::PROTOCOL_ERROR,
                ErrorCode::ShuttingDown => close::GOING_AWAY,
                ErrorCode::LimitReached => close::LIMIT_REACHED,
            },
            end.to_string(),
        )),
    }
}

/// One agent's session; `client` is its address (behind a trusted proxy, the one it
/// forwarded for), which wrong tokens count against.
async fn session(state: AppState, socket: WebSocket, peer: SocketAddr, client: IpAddr) {
    let (mut inbox, outbox, writer) = wire::split(socket);

    let end = match handshake(&state, &mut inbox, client).await {
        Ok((hello, subscription, grant)) => {
            let info = AgentInfo {
                peer,
                client: hello.client.clone(),
                connected_at: crate::store::now_ms(),
                subscription,
            };
            let agent = Arc::new(AgentHandle::new(
                grant.channel().clone(),
                info,
                outbox.clone(),
            ));
            let span = info_span!("session", agent_id = %agent.id(), channel = %agent.channel());
            serve_agent(&state, &agent, hello, &grant, &outbox, &mut inbox)
                .instrument(span)
                .await
        }
        Err(end) => end,
    };

    match &end {
        SessionEnd::PeerClosed | SessionEnd::Shutdown => info!(reason = %end, "agent disconnected"),
        _ => warn!(reason = %end, "agent disconnected"),
    }
    if let SessionEnd::Refused(code, message) = &end {
        outbox.try_send(&ToAgent::Error(ErrorFrame {
            code: *code,
            message: message.clone(),
        }));
    }
    if let Some((code, reason)) = close_for(&end) {
        outbox.close(code, reason);
    }
    drop(outbox);
    writer.finish().await;
}

/// Waits for the agent's `Hello` and checks its version, then whether it may hold the channel
/// it asks for ([`crate::auth::agent_access`]).
async fn handshake(
    state: &AppState,
    inbox: &mut Inbox,
    client: IpAddr,
) -> Result<(Hello, Subscription, AgentGrant), SessionEnd> {
    const NOT_HELLO: SessionEnd = SessionEnd::Protocol("first frame must be hello");
    let timeout = state.config.handshake_timeout;
    let frame = loop {
        let received = tokio::select! {
            received = tokio::time::timeout(timeout, inbox.recv()) => {
                received.map_err(|_| SessionEnd::HandshakeTimeout(timeout))?
            }
            () = state.agents_shutdown.cancelled() => return Err(SessionEnd::Shutdown),
        };
        match received {
            Ok(Received::Frame(frame)) => break frame,
            Ok(Received::Heartbeat) => continue,
            Err(RecvError::Decode(DecodeError::WrongDirection { .. })) => return Err(NOT_HELLO),
            Err(e) => return Err(e.into()),
        }
    };
    let (hello, subscription) = match frame {
        FromAgent::Hello(hello) => (hello, Subscription::All),
        FromAgent::Subscribe(Subscribe { hello, events }) => {
            let subscription =
                Subscription::parse(events.iter().map(String::as_str)).map_err(|e| {
                    let message = format!("the agent's event types are not valid: {e}");
                    SessionEnd::Refused(ErrorCode::ProtocolError, message)
                })?;
            (hello, subscription)
        }
        _ => return Err(NOT_HELLO),
    };
    if hello.version != PROTOCOL_VERSION {
        let side = if hello.version < PROTOCOL_VERSION {
            "relay-client"
        } else {
            "relay-server"
        };
        return Err(SessionEnd::Refused(
            ErrorCode::VersionMismatch,
            format!(
                "protocol version {} is not supported (server speaks {PROTOCOL_VERSION}): upgrade {side}",
                hello.version
            ),
        ));
    }
    let grant = crate::auth::agent_access(
        state,
        Some(client),
        hello.channel.as_deref(),
        hello.token.as_deref(),
    )
    .map_err(|refusal| SessionEnd::Refused(refusal.code, refusal.message))?;
    Ok((hello, subscription, grant))
}

async fn serve_agent(
    state: &AppState,
    agent: &Arc<AgentHandle>,
    hello: Hello,
    grant: &AgentGrant,
    outbox: &Outbox,
    inbox: &mut Inbox,
) -> SessionEnd {
    // Checked before the welcome, so a refused agent is not told it is connected; `add`
    // checks again, atomically, for agents racing in.
    let max_agents = state.config.max_agents_per_channel;
    let n = state.registry.agent_count(agent.channel());
    if n >= max_agents {
        return too_many_agents(agent, n);
    }
    let welcome = ToAgent::Welcome(Welcome {
        version: PROTOCOL_VERSION,
        channel: agent.channel().to_string(),
        public_url: format!("{}/h/{}", state.public_url, agent.channel()),
        agent_id: agent.id().0,
    });
    if agent.send(&welcome).await.is_err() {
        return SessionEnd::PeerClosed;
    }
    if let Err(n) = state.registry.add(Arc::clone(agent), max_agents) {
        return too_many_agents(agent, n);
    }
    // A reload between the check of the hello and `add` (the channel created, revoked or its
    // token rotated) evicted the agents it found, which did not include this one yet.
    let current = state.channels.get(agent.channel());
    let still_granted = match grant {
        AgentGrant::Registered(held) => current.is_some_and(|c| c.token_hash == held.token_hash),
        AgentGrant::Open(_) => current.is_none(),
    };
    if !still_granted {
        agent.evict(format!(
            "channel {} changed while the agent connected",
            agent.channel()
        ));
    }
    info!(
        client = %hello.client,
        registered = matches!(grant, AgentGrant::Registered(_)),
        events = %agent.info().subscription,
        "agent connected"
    );
    state.dispatcher.kick(state, agent.channel());
    let end = read_loop(state, agent, outbox, inbox).await;
    state.registry.remove(agent);
    let abandoned = agent.in_flight();
    agent.close();
    if abandoned > 0 {
        warn!(abandoned, "deliveries in flight failed with 502");
    }
    end
}

fn too_many_agents(agent: &AgentHandle, n: usize) -> SessionEnd {
    SessionEnd::Refused(
        ErrorCode::LimitReached,
        format!(
            "channel {} already has {n} agents, the server's limit (--max-agents-per-channel)",
            agent.channel()
        ),
    )
}

async fn read_loop(
    state: &AppState,
    agent: &AgentHandle,
    outbox: &Outbox,
    inbox: &mut Inbox,
) -> SessionEnd {
    const UNEXPECTED: SessionEnd = SessionEnd::Protocol("unexpected frame type from agent");
    let peer_timeout = state.config.peer_timeout;
    let mut ping = tokio::time::interval(state.config.ping_interval);
    ping.tick().await;
    let mut last_seen = tokio::time::Instant::now();
    loop {
        let received = tokio::select! {
            received = inbox.recv() => received,
            _ = ping.tick() => {
                if last_seen.elapsed() >= peer_timeout {
                    return SessionEnd::PeerTimeout(peer_timeout);
                }
                outbox.ping();
                continue;
            }
            () = state.agents_shutdown.cancelled() => return SessionEnd::Shutdown,
            reason = agent.evicted() => {
                return SessionEnd::Refused(ErrorCode::Unauthorized, reason.to_owned());
            }
        };
        last_seen = tokio::time::Instant::now();
        let frame = match received {
            Ok(Received::Frame(frame)) => frame,
            Ok(Received::Heartbeat) => continue,
            Err(RecvError::Decode(DecodeError::WrongDirection { .. })) => return UNEXPECTED,
            Err(e) => return e.into(),
        };
        match frame {
            FromAgent::Response(head) => match agent.route_head(head) {
                Route::Found(()) => {}
                Route::Unknown => debug!("response for a finished delivery ignored"),
                Route::OutOfOrder => return SessionEnd::Protocol("second response head"),
            },
            FromAgent::Body(chunk) => match agent.route_body(&chunk.id, chunk.fin) {
                Route::Found(tx) => {
                    let id = chunk.id;
                    let event = BodyEvent::Chunk {
                        data: chunk.data,
                        fin: chunk.fin,
                    };
                    // Wait for the sender to take the chunk, but not forever: past REPLY_STALL
                    // that one delivery is dropped so the agent's other deliveries keep moving.
                    if tokio::time::timeout(REPLY_STALL, tx.send(event))
                        .await
                        .is_err()
                    {
                        warn!(delivery_id = %id, "sender not reading the response; delivery dropped");
                        agent.cancel(&id, "sender not reading the response");
                    }
                }
                Route::Unknown => {
                    debug!(delivery_id = %chunk.id, "body for a finished delivery ignored")
                }
                Route::OutOfOrder => return SessionEnd::Protocol("response body before its head"),
            },
            FromAgent::Abort(abort) => {
                debug!(delivery_id = %abort.id, reason = %abort.reason, "agent aborted delivery");
                agent.abort(&abort.id, abort.reason);
            }
            FromAgent::Error(e) => {
                warn!(code = ?e.code, message = %e.message, "agent reported an error")
            }
            FromAgent::Hello(_) | FromAgent::Subscribe(_) => return UNEXPECTED,
        }
    }
}
