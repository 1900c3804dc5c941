//! Agent configuration: flags (each also a `HOOKRELAY_*` environment variable), validated once
//! into [`AgentConfig`].

use std::time::Duration;

use clap::Parser;
use protocol::ChannelId;

use crate::error::Error;
use crate::forward::Target;

/// Raw command-line and environment options of `relay-client`.
#[derive(Debug, Parser)]
#[command(
    name = "relay-client",
    version,
    about = "hookrelay agent: receives webhooks from a relay server and replays them against a local target"
)]
pub struct Args {
    /// Relay server URL; https:// connects with wss://.
    #[arg(
        long,
        env = "HOOKRELAY_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: String,

    /// Local target; the delivered path and query are appended (e.g. http://localhost:3000).
    #[arg(long, env = "HOOKRELAY_FORWARD")]
    pub forward: String,

    /// Channel to serve; without it the server assigns a fresh, unguessable one.
    #[arg(long, env = "HOOKRELAY_CHANNEL")]
    pub channel: Option<String>,

    /// Token the server requires from agents.
    #[arg(long, env = "HOOKRELAY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl Args {
    pub fn validate(self) -> Result<AgentConfig, Error> {
        let mut config = AgentConfig::new(&self.server, &self.forward)?;
        config.channel = self.channel.as_deref().map(ChannelId::parse).transpose()?;
        config.token = self.token.filter(|t| !t.is_empty());
        Ok(config)
    }
}

/// Validated agent configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// WebSocket URL of the server's agent endpoint (`ws://host:port/ws`).
    pub ws_url: String,
    pub target: Target,
    pub channel: Option<ChannelId>,
    pub token: Option<String>,
    /// First reconnect delay; doubles per failed attempt up to `backoff_max`, with jitter.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Interval between WebSocket pings to the server.
    pub ping_interval: Duration,
    /// A server that sends nothing (not even a pong) for this long is considered gone.
    pub peer_timeout: Duration,
    /// Bound on connecting and completing the hello/welcome exchange.
    pub connect_timeout: Duration,
    /// Bound on one request to the target, up to its response head.
    pub target_timeout: Duration,
    /// Bound on finishing in-flight deliveries at shutdown.
    pub shutdown_grace: Duration,
}

impl AgentConfig {
    /// A configuration with default timings for `server` (http/https URL) and `forward`.
    pub fn new(server: &str, forward: &str) -> Result<Self, Error> {
        Ok(Self {
            ws_url: ws_url(server)?,
            target: Target::parse(forward)?,
            channel: None,
            token: None,
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            ping_interval: Duration::from_secs(20),
            peer_timeout: Duration::from_secs(50),
            connect_timeout: Duration::from_secs(15),
            target_timeout: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(30),
        })
    }
}

/// `http://host[:port][/prefix]` to `ws://host[:port][/prefix]/ws`; https to wss.
fn ws_url(server: &str) -> Result<String, Error> {
    let bad = || Error::ServerUrl(server.to_owned());
    let uri: http::Uri = server.parse().map_err(|_| bad())?;
    let scheme = match uri.scheme_str() {
        Some("http") | Some("ws") => "ws",
        Some("https") | Some("wss") => "wss",
        _ => return Err(bad()),
    };
    let authority = uri.authority().ok_or_else(bad)?;
    if uri.query().is_some() {
        return Err(bad());
    }
    let prefix = uri.path().trim_end_matches('/');
    Ok(format!("{scheme}://{authority}{prefix}/ws"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_map_to_websocket_urls() {
        assert_eq!(
            ws_url("http://127.0.0.1:8080").expect("valid"),
            "ws://127.0.0.1:8080/ws"
        );
        assert_eq!(
            ws_url("https://relay.example.com/").expect("valid"),
            "wss://relay.example.com/ws"
        );
        assert_eq!(
            ws_url("https://example.com/relay").expect("valid"),
            "wss://example.com/relay/ws"
        );
        assert!(ws_url("relay.example.com").is_err());
        assert!(ws_url("ftp://x").is_err());
    }
}
