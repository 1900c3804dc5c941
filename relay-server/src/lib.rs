//! hookrelay's relay server: webhooks arrive on `/h/{channel}/...`, travel over a WebSocket to
//! an agent (`relay-client`) that replays them against a local target, and the target's answer
//! returns to the sender.
//!
//! [`serve`] runs the server on a bound listener until a shutdown token fires, then drains.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

mod auth;
pub mod config;
pub mod error;
pub mod registry;
pub mod routes;
mod ws;

pub use config::{Args, Config};
pub use routes::app;

/// Everything a handler needs, shared by all of them.
#[derive(Debug)]
pub struct ServerState {
    pub config: Config,
    /// Base of the webhook URLs handed to agents, without a trailing slash.
    pub public_url: String,
    pub registry: registry::Registry,
    /// Cancelled after the HTTP side has drained: agent sessions then close with 1001.
    pub agents_shutdown: CancellationToken,
    /// Agent session tasks, awaited (with a bound) at shutdown.
    pub tracker: TaskTracker,
}

pub type AppState = Arc<ServerState>;

impl ServerState {
    pub fn new(config: Config, public_url: String) -> AppState {
        Arc::new(Self {
            config,
            public_url,
            registry: registry::Registry::default(),
            agents_shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
        })
    }
}

/// Serves on `listener` until `shutdown` is cancelled, then shuts down gracefully: stops
/// accepting, lets in-flight webhooks finish (at most `config.shutdown_grace`), then closes
/// agent sessions with "going away" so agents reconnect to the next instance.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let public_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| config::derive_public_url(addr));
    let grace = config.shutdown_grace;
    let state = ServerState::new(config, public_url);
    info!(%addr, public_url = %state.public_url, "relay server listening");

    // Deliveries are small messages on long-lived connections: Nagle's algorithm would hold
    // each one back waiting for an ACK.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let server = axum::serve(
        listener,
        app(Arc::clone(&state)).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let drain_deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        result = server => result?,
        () = drain_deadline => warn!(?grace, "in-flight webhooks did not finish in time"),
    }

    state.agents_shutdown.cancel();
    state.tracker.close();
    if tokio::time::timeout(std::time::Duration::from_secs(5), state.tracker.wait())
        .await
        .is_err()
    {
        warn!("agent sessions did not close in time");
    }
    info!("relay server stopped");
    Ok(())
}
