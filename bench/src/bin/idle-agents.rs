//! A crowd of idle agents for `bench/run.sh`, to measure what one connected agent costs the
//! relay server in memory.
//!
//! Usage: `idle-agents WS_URL COUNT [HOLD_SECS]`, e.g.
//! `idle-agents ws://127.0.0.1:8080/ws 2000 120`.
//!
//! Opens `COUNT` WebSocket connections (at most [`CONNECT_CONCURRENCY`] handshakes at a time),
//! sends each the protocol `Hello` with no channel (the server assigns one, as for a fresh
//! `relay-client`) and waits for its `Welcome`. Once every agent is welcomed it prints
//! `CONNECTED <count>` on stdout, then keeps polling every socket (so the server's pings get
//! their pongs) until `HOLD_SECS` (default 120, at most an hour) elapse or SIGINT/SIGTERM
//! arrives. It then closes every connection and exits. If any agent fails to connect it exits
//! non-zero after saying which and why.

use std::io::Write as _;
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures_util::stream::SelectAll;
use futures_util::{SinkExt as _, StreamExt as _};
use protocol::{Frame, Hello, PROTOCOL_VERSION};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Handshakes in flight at once: enough to connect 2,000 agents in about a second without a
/// burst that overflows the server's accept backlog.
const CONNECT_CONCURRENCY: usize = 64;
/// One agent's connect + hello + welcome must finish within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Default and upper bound of the holding time, so a forgotten crowd cannot outlive the run.
const DEFAULT_HOLD: Duration = Duration::from_secs(120);
const MAX_HOLD: Duration = Duration::from_secs(3600);
/// Bound on closing every connection at the end.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, count, rest @ ..] = args.as_slice() else {
        bail!("usage: idle-agents WS_URL COUNT [HOLD_SECS]");
    };
    let count: usize = count
        .parse()
        .with_context(|| format!("bad count {count:?}"))?;
    let hold = match rest.first() {
        Some(secs) => Duration::from_secs(
            secs.parse()
                .with_context(|| format!("bad hold time {secs:?}"))?,
        )
        .min(MAX_HOLD),
        None => DEFAULT_HOLD,
    };

    let results: Vec<anyhow::Result<Ws>> = futures_util::stream::iter(0..count)
        .map(|i| connect(url, i))
        .buffer_unordered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    let mut agents = SelectAll::new();
    let mut failures = Vec::new();
    for result in results {
        match result {
            Ok(ws) => agents.push(ws),
            Err(e) => failures.push(e),
        }
    }
    if let Some(first) = failures.first() {
        let failed = failures.len();
        close_all(agents).await;
        bail!("{failed} of {count} agents failed to connect; first error: {first:#}");
    }
    say(&format!("CONNECTED {}", agents.len()))?;

    let deadline = tokio::time::sleep(hold);
    let signal = runtime::shutdown_signal();
    tokio::pin!(deadline, signal);
    let mut lost = 0usize;
    loop {
        tokio::select! {
            // Polling the sockets is what answers the server's pings (tungstenite queues the
            // pong and sends it on the next poll); any data is ignored, as an idle agent would.
            msg = agents.next(), if !agents.is_empty() => {
                if let Some(Ok(Message::Close(_)) | Err(_)) = msg {
                    lost += 1;
                }
            }
            () = &mut deadline => break,
            () = &mut signal => break,
        }
    }
    if lost > 0 {
        eprintln_lost(lost);
    }
    close_all(agents).await;
    Ok(())
}

/// One agent: WebSocket handshake, `Hello`, wait for `Welcome`.
async fn connect(url: &str, index: usize) -> anyhow::Result<Ws> {
    // tungstenite's defaults (128 KiB read buffer, 128 KiB write buffer) would make this crowd
    // cost a quarter of a gigabyte on the client side; idle agents read almost nothing.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let attempt = async {
        let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
            .await
            .context("websocket handshake")?;
        let hello = protocol::encode(&Frame::Hello(Hello {
            version: PROTOCOL_VERSION,
            channel: None,
            token: None,
            client: "idle-agents".into(),
        }))
        .context("encode hello")?;
        ws.send(Message::Binary(hello.into()))
            .await
            .context("send hello")?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(bytes))) => {
                    match protocol::decode(&bytes).context("decode server frame")? {
                        Frame::Welcome(_) => return Ok(ws),
                        Frame::Error(e) => bail!("refused: {:?}: {}", e.code, e.message),
                        other => bail!("unexpected frame before welcome: {other:?}"),
                    }
                }
                Some(Ok(Message::Close(frame))) => bail!("closed by server: {frame:?}"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e).context("read welcome"),
                None => bail!("connection closed before welcome"),
            }
        }
    };
    tokio::time::timeout(CONNECT_TIMEOUT, attempt)
        .await
        .with_context(|| format!("agent {index}: no welcome within {CONNECT_TIMEOUT:?}"))?
        .with_context(|| format!("agent {index}"))
}

/// Sends a close frame on every connection, a bounded number at a time and within
/// [`CLOSE_TIMEOUT`] overall, so the server sees clean disconnects rather than resets.
async fn close_all(agents: SelectAll<Ws>) {
    let closing =
        futures_util::stream::iter(agents).for_each_concurrent(256, |mut ws| async move {
            let _ = ws.close(None).await;
        });
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, closing).await;
}

fn say(line: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").context("write stdout")?;
    out.flush().context("flush stdout")
}

fn eprintln_lost(lost: usize) {
    let _ = writeln!(
        std::io::stderr(),
        "idle-agents: {lost} connections were closed by the server while held"
    );
}
