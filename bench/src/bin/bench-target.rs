//! A minimal, fast HTTP/1.1 target for `bench/run.sh`: reads every request body to the end and
//! answers `200 {"ok":true,"len":N}`.
//!
//! It must cost as little CPU as possible so that, on a 2-core machine, the direct and relayed
//! figures compare the paths rather than the target. Keep-alive stays on (wrk reuses its 64
//! connections, and so does the agent's pooled client) and every socket gets `TCP_NODELAY`.
//!
//! Usage: `bench-target [PORT]` (default 0 = any free port). Binds 127.0.0.1 only and prints
//! `LISTENING <port>` on stdout once it accepts connections. Runs until SIGINT or SIGTERM.

use std::convert::Infallible;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port: u16 = match std::env::args().nth(1) {
        Some(arg) => arg.parse().with_context(|| format!("bad port {arg:?}"))?,
        None => 0,
    };
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .await
        .context("bind")?;
    let port = listener.local_addr().context("local address")?.port();
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "LISTENING {port}").context("write stdout")?;
    stdout.flush().context("flush stdout")?;
    drop(stdout);

    let mut connections = JoinSet::new();
    let stop = runtime::shutdown_signal();
    tokio::pin!(stop);
    loop {
        // Reap finished connections so the set does not grow with every wrk reconnect.
        while connections.try_join_next().is_some() {}
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of descriptors or a reset before accept: keep serving the others.
                Err(_) => continue,
            },
            () = &mut stop => break,
        };
        let _ = tcp.set_nodelay(true);
        connections.spawn(async move {
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(tcp), service_fn(handle))
                .await;
        });
    }
    connections.shutdown().await;
    Ok(())
}

/// Reads the body to the end (a target that ignored it would flatter the relay, which must
/// carry every byte) and reports its length.
async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut body = req.into_body();
    let mut len: u64 = 0;
    let mut failed = false;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    len += data.len() as u64;
                }
            }
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    let (status, text) = if failed {
        (400, format!("{{\"ok\":false,\"len\":{len}}}"))
    } else {
        (200, format!("{{\"ok\":true,\"len\":{len}}}"))
    };
    let response = Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(text)))
        .expect("a static status and header always build a response");
    Ok(response)
}
