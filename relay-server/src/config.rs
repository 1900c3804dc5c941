//! Server configuration: command-line flags, each also read from a `HOOKRELAY_*` environment
//! variable, validated once into [`Config`].

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

/// Default cap on a webhook body: GitHub's own limit for a delivery.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 25 * 1024 * 1024;

/// Raw command-line and environment options of `relay-server`.
#[derive(Debug, Parser)]
#[command(
    name = "relay-server",
    version,
    about = "Self-hosted webhook relay: public ingress, forwarded to agents over WebSocket"
)]
pub struct Args {
    /// Address to listen on for webhooks and agents.
    #[arg(long, env = "HOOKRELAY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Public base URL printed to agents (e.g. https://relay.example.com); default: derived from
    /// the listen address.
    #[arg(long, env = "HOOKRELAY_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Seconds to wait for the agent's response before answering 504.
    #[arg(long, env = "HOOKRELAY_TIMEOUT", default_value_t = 30)]
    pub timeout: u64,

    /// Largest webhook body accepted, in bytes; larger ones get 413.
    #[arg(long, env = "HOOKRELAY_MAX_BODY", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body: u64,

    /// When set, agents must present this token to connect.
    #[arg(long, env = "HOOKRELAY_AGENT_TOKEN", hide_env_values = true)]
    pub agent_token: Option<String>,
}

/// Why the options cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--public-url must start with http:// or https:// (got {0:?})")]
    PublicUrl(String),
    #[error("--timeout must be at least 1 second")]
    Timeout,
    #[error("--agent-token must not be empty")]
    EmptyToken,
}

/// Validated server configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Base URL for webhook URLs, without a trailing slash; `None` derives it from the bound
    /// address at start-up.
    pub public_url: Option<String>,
    /// How long an ingress request waits for the agent's response head (and for the sender's
    /// body).
    pub timeout: Duration,
    pub max_body_bytes: u64,
    pub agent_token: Option<String>,
    /// Interval between WebSocket pings to each agent.
    pub ping_interval: Duration,
    /// An agent that sends nothing (not even a pong) for this long is disconnected.
    pub peer_timeout: Duration,
    /// Time an agent has to send its `Hello` after the WebSocket opens.
    pub handshake_timeout: Duration,
    /// Upper bound on waiting for in-flight deliveries at shutdown.
    pub shutdown_grace: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            timeout: Duration::from_secs(30),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            agent_token: None,
            ping_interval: Duration::from_secs(20),
            peer_timeout: Duration::from_secs(50),
            handshake_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

impl Args {
    pub fn validate(self) -> Result<Config, ConfigError> {
        let public_url = match self.public_url {
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                Some(url.trim_end_matches('/').to_owned())
            }
            Some(url) => return Err(ConfigError::PublicUrl(url)),
            None => None,
        };
        if self.timeout == 0 {
            return Err(ConfigError::Timeout);
        }
        if self.agent_token.as_deref() == Some("") {
            return Err(ConfigError::EmptyToken);
        }
        Ok(Config {
            listen: self.listen,
            public_url,
            timeout: Duration::from_secs(self.timeout),
            max_body_bytes: self.max_body,
            agent_token: self.agent_token,
            ..Config::default()
        })
    }
}

/// The public base URL for a server bound to `addr`: an unspecified address (0.0.0.0, ::) is
/// shown as loopback, since no better name is known without `--public-url`.
pub fn derive_public_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => std::net::Ipv4Addr::LOCALHOST.into(),
        ip if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_interface() {
        let config = Args::parse_from(["relay-server"])
            .validate()
            .expect("defaults are valid");
        assert_eq!(config.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert_eq!(config.timeout, Duration::from_secs(30));
        assert_eq!(config.max_body_bytes, 25 * 1024 * 1024);
        assert!(config.agent_token.is_none());
    }

    #[test]
    fn public_url_without_scheme_is_refused() {
        let args = Args::parse_from(["relay-server", "--public-url", "relay.example.com"]);
        assert!(matches!(args.validate(), Err(ConfigError::PublicUrl(_))));
    }

    #[test]
    fn derived_url_shows_loopback_for_unspecified_address() {
        assert_eq!(
            derive_public_url("0.0.0.0:9000".parse().expect("literal")),
            "http://127.0.0.1:9000"
        );
        assert_eq!(
            derive_public_url("[::]:9000".parse().expect("literal")),
            "http://[::1]:9000"
        );
    }
}
