//! Agent sessions on `GET /ws`: handshake, the reader loop, the writer task and heartbeats.
//!
//! Each session is one task that owns the socket's read half; a writer task owns the write half
//! and drains the agent's outbox, batching whatever is queued into one flush. When either ends,
//! the other is cancelled and every delivery still waiting on the agent fails with 502.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use futures_util::stream::SplitStream;
use protocol::{
    DecodeError, ErrorCode, ErrorFrame, Frame, Hello, MAX_FRAME_LEN, PROTOCOL_VERSION, Welcome,
    close,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::AppState;
use crate::auth::AgentGrant;
use crate::error::Error;
use crate::registry::{AgentHandle, AgentInfo, BodyEvent, Route};
use crate::tls::Peer;
use std::net::{IpAddr, SocketAddr};

/// Frames queued for one agent before senders wait.
const OUTBOX_CAPACITY: usize = 256;
/// Bytes tungstenite reads from the socket at a time. Its default (128 KiB) is allocated per
/// connection up front and dominates the memory of an idle agent.
const READ_BUFFER: usize = 8 * 1024;
/// Bytes tungstenite gathers before writing to the socket; the writer flushes each batch, so
/// this lets a batch of frames leave in one write. The buffer only grows when used.
const WRITE_BUFFER: usize = 64 * 1024;
/// How long the reader waits for a slow sender to take a reply frame before abandoning that
/// delivery, so one stalled sender cannot hold up the agent's other deliveries.
const REPLY_STALL: Duration = Duration::from_secs(10);

/// `GET /ws`: upgrades to an agent session. Message and frame sizes are capped at
/// [`MAX_FRAME_LEN`] so an oversize message is refused before it is buffered.
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
    ws.max_message_size(MAX_FRAME_LEN)
        .max_frame_size(MAX_FRAME_LEN)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .on_upgrade(move |socket| {
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

/// The close code and reason for each way a session ends; `None` when the socket is already
/// gone.
fn close_for(end: &SessionEnd) -> Option<(u16, String)> {
    match end {
        // tungstenite refuses a message over `max_message_size` with a capacity error and
        // leaves the close to us; other socket errors mean the connection is gone.
        SessionEnd::Socket(e) if e.to_string().contains("Message too long") => {
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
    let (sink, mut stream) = socket.split();
    let (outbox, rx) = mpsc::channel(OUTBOX_CAPACITY);
    let stop_writer = CancellationToken::new();
    let writer = tokio::spawn(runtime::write_batched(sink, rx, stop_writer.clone(), |m| {
        matches!(m, Message::Close(_))
    }));

    let end = match handshake(&state, &mut stream, client).await {
        Ok((hello, grant)) => {
            let info = AgentInfo {
                peer,
                client: hello.client.clone(),
                connected_at: crate::store::now_ms(),
            };
            let agent = Arc::new(AgentHandle::new(
                grant.channel().clone(),
                info,
                outbox.clone(),
            ));
            let span = info_span!("session", agent_id = %agent.id(), channel = %agent.channel());
            serve_agent(&state, &agent, hello, &grant, &outbox, &mut stream)
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
        let frame = Frame::Error(ErrorFrame {
            code: *code,
            message: message.clone(),
        });
        if let Ok(bytes) = protocol::encode(&frame) {
            let _ = outbox.try_send(Message::Binary(bytes.into()));
        }
    }
    if let Some((code, reason)) = close_for(&end) {
        let _ = outbox.try_send(Message::Close(Some(CloseFrame {
            code,
            reason: truncate_reason(reason).into(),
        })));
    }
    drop(outbox);
    // The writer ends once it has flushed the close frame or the outbox closes; bound the wait
    // so a peer that stopped reading cannot keep the task alive.
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    stop_writer.cancel();
}

/// Close reasons are limited to 123 bytes by RFC 6455.
fn truncate_reason(mut reason: String) -> String {
    if reason.len() > 123 {
        let mut cut = 123;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
    }
    reason
}

/// Waits for the agent's `Hello` and checks its version, then whether it may hold the channel
/// it asks for ([`crate::auth::agent_access`]).
async fn handshake(
    state: &AppState,
    stream: &mut SplitStream<WebSocket>,
    client: IpAddr,
) -> Result<(Hello, AgentGrant), SessionEnd> {
    let timeout = state.config.handshake_timeout;
    let frame = loop {
        let msg = tokio::select! {
            msg = tokio::time::timeout(timeout, stream.next()) => {
                msg.map_err(|_| SessionEnd::HandshakeTimeout(timeout))?
            }
            () = state.agents_shutdown.cancelled() => return Err(SessionEnd::Shutdown),
        };
        match msg {
            None | Some(Ok(Message::Close(_))) => return Err(SessionEnd::PeerClosed),
            Some(Err(e)) => return Err(SessionEnd::Socket(e)),
            Some(Ok(Message::Binary(bytes))) => break protocol::decode(&bytes)?,
            Some(Ok(Message::Text(_))) => return Err(SessionEnd::Protocol("text message")),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
        }
    };
    let Frame::Hello(hello) = frame else {
        return Err(SessionEnd::Protocol("first frame must be hello"));
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
    Ok((hello, grant))
}

async fn serve_agent(
    state: &AppState,
    agent: &Arc<AgentHandle>,
    hello: Hello,
    grant: &AgentGrant,
    outbox: &mpsc::Sender<Message>,
    stream: &mut SplitStream<WebSocket>,
) -> SessionEnd {
    // Checked before the welcome, so a refused agent is not told it is connected; `add`
    // checks again, atomically, for agents racing in.
    let max_agents = state.config.max_agents_per_channel;
    let n = state.registry.agent_count(agent.channel());
    if n >= max_agents {
        return too_many_agents(agent, n);
    }
    let welcome = Frame::Welcome(Welcome {
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
    info!(client = %hello.client, registered = matches!(grant, AgentGrant::Registered(_)), "agent connected");
    state.dispatcher.kick(state, agent.channel());
    let end = read_loop(state, agent, outbox, stream).await;
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
    outbox: &mpsc::Sender<Message>,
    stream: &mut SplitStream<WebSocket>,
) -> SessionEnd {
    let peer_timeout = state.config.peer_timeout;
    let mut ping = tokio::time::interval(state.config.ping_interval);
    ping.tick().await;
    let mut last_seen = tokio::time::Instant::now();
    loop {
        let msg = tokio::select! {
            msg = stream.next() => msg,
            _ = ping.tick() => {
                if last_seen.elapsed() >= peer_timeout {
                    return SessionEnd::PeerTimeout(peer_timeout);
                }
                let _ = outbox.try_send(Message::Ping(bytes::Bytes::new()));
                continue;
            }
            () = state.agents_shutdown.cancelled() => return SessionEnd::Shutdown,
            reason = agent.evicted() => {
                return SessionEnd::Refused(ErrorCode::Unauthorized, reason.to_owned());
            }
        };
        last_seen = tokio::time::Instant::now();
        let bytes = match msg {
            None | Some(Ok(Message::Close(_))) => return SessionEnd::PeerClosed,
            Some(Err(e)) => return SessionEnd::Socket(e),
            Some(Ok(Message::Binary(bytes))) => bytes,
            Some(Ok(Message::Text(_))) => return SessionEnd::Protocol("text message"),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
        };
        let frame = match protocol::decode(&bytes) {
            Ok(frame) => frame,
            Err(e) => return SessionEnd::Decode(e),
        };
        match frame {
            Frame::Response(head) => match agent.deliver_head(head) {
                Route::Deliver(()) => {}
                Route::Unknown => debug!("response for a finished delivery ignored"),
                Route::OutOfOrder => return SessionEnd::Protocol("second response head"),
            },
            Frame::Body(chunk) => match agent.body_sender(&chunk.id, chunk.fin) {
                Route::Deliver(tx) => {
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
            Frame::Abort(abort) => {
                debug!(delivery_id = %abort.id, reason = %abort.reason, "agent aborted delivery");
                agent.abort(&abort.id, abort.reason);
            }
            Frame::Error(e) => {
                warn!(code = ?e.code, message = %e.message, "agent reported an error")
            }
            Frame::Hello(_) | Frame::Welcome(_) | Frame::Request(_) => {
                return SessionEnd::Protocol("unexpected frame type from agent");
            }
        }
    }
}
