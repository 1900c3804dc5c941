//! The command line: `relay-server`'s flags, each also read from a `HOOKRELAY_*` environment
//! variable, its subcommands, and their validation into a [`Config`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::channel::{ChannelSettings, Mode, RateLimit, SettingsChange};
use crate::config::{
    Config, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_QUEUED, DEFAULT_MAX_REJECTED,
    DEFAULT_MAX_STORED_BYTES, DEFAULT_MIN_FREE_SPACE, RetryPolicy,
};
use crate::event_type::TypeSource;
use crate::net::acme::{AcmeConfig, LETS_ENCRYPT, LETS_ENCRYPT_STAGING};
use crate::net::http::{HttpLimits, MIN_HEAD_BYTES};
use crate::net::tls::TlsConfig;
use runtime::config_file::without_url_password;

use crate::store::{PostgresUrl, Quota, StoreConfig, UrlError};
use crate::verify::{VerifyArgs, VerifySpecError};

/// Raw command-line and environment options of `relay-server`.
#[derive(Debug, Parser)]
#[command(
    name = "relay-server",
    version,
    about = "Self-hosted webhook relay: public ingress, forwarded to agents over WebSocket"
)]
pub struct Args {
    /// Configuration file (TOML); default: /etc/hookrelay/server.toml when it exists. Flags
    /// and HOOKRELAY_* variables take precedence over it.
    #[arg(long, env = "HOOKRELAY_CONFIG", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,

    /// Address to listen on for webhooks and agents.
    #[arg(
        long,
        env = "HOOKRELAY_LISTEN",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub listen: SocketAddr,

    /// Public base URL printed to agents (e.g. https://relay.example.com); default: derived from
    /// the listen address.
    #[arg(long, env = "HOOKRELAY_PUBLIC_URL", global = true)]
    pub public_url: Option<String>,

    /// Let any agent take a channel nobody registered (a fresh random one, or a name it
    /// picks), as smee does. Default: on when listening on loopback only, off otherwise;
    /// registered channels always need their token.
    #[arg(long, env = "HOOKRELAY_OPEN", action = clap::ArgAction::Set)]
    pub open: Option<bool>,

    /// Token for the admin API (/api/admin/...), which manages channels and may read every
    /// channel's history. Without it the admin API is off.
    #[arg(long, env = "HOOKRELAY_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Seconds to wait for the agent's response before answering 504.
    #[arg(long, env = "HOOKRELAY_TIMEOUT", default_value_t = 30)]
    pub timeout: u64,

    /// Largest webhook body accepted, in bytes; larger ones get 413.
    #[arg(long, env = "HOOKRELAY_MAX_BODY", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body: u64,

    /// When set, agents must present this token to take an unregistered channel in open
    /// mode, and the history API of such channels asks for it as `Authorization: Bearer TOKEN`.
    /// Registered channels use their own tokens.
    #[arg(long, env = "HOOKRELAY_AGENT_TOKEN", hide_env_values = true)]
    pub agent_token: Option<String>,

    /// Where events are stored: `sqlite` (durable, under --data-dir), a PostgreSQL URL
    /// (`postgres://user:password@host:5432/dbname?sslmode=require`; one relay node per
    /// database for now) or `memory` (lost on exit; for tests and benchmarks).
    #[arg(
        long,
        env = "HOOKRELAY_STORE",
        default_value_t = StoreKind::Sqlite,
        hide_env_values = true,
        global = true
    )]
    pub store: StoreKind,

    /// Directory of the event store; created if missing.
    #[arg(
        long,
        env = "HOOKRELAY_DATA_DIR",
        default_value = "./hookrelay-data",
        global = true
    )]
    pub data_dir: PathBuf,

    /// Flush every commit to disk (fsync), so accepted webhooks survive a power loss, not only
    /// a crash of the server. Commits are grouped, so this costs little.
    #[arg(long, env = "HOOKRELAY_FSYNC", default_value_t = true, action = clap::ArgAction::Set)]
    pub fsync: bool,

    /// Status answered when no agent is connected and the webhook is queued: 202, or 503 for
    /// senders that should retry on their own (the webhook is kept either way).
    #[arg(long, env = "HOOKRELAY_OFFLINE_STATUS", default_value_t = 202)]
    pub offline_status: u16,

    /// When the target has not answered within SECS, answer the sender 202 and let the delivery
    /// go on up to --timeout, recording its response. Off by default.
    #[arg(long, env = "HOOKRELAY_ACK_AFTER", value_name = "SECS")]
    pub ack_after: Option<u64>,

    /// Events older than this are deleted (e.g. 7d, 36h).
    #[arg(long, env = "HOOKRELAY_RETENTION", default_value = "7d", value_parser = humantime::parse_duration)]
    pub retention: Duration,

    /// Events kept per channel; past this the oldest delivered or failed ones are deleted.
    #[arg(long, env = "HOOKRELAY_MAX_EVENTS", default_value_t = 10_000)]
    pub max_events: u64,

    /// First delay before retrying a queued delivery that failed; doubles per failure.
    #[arg(long, env = "HOOKRELAY_RETRY_MIN", default_value = "1m", value_parser = humantime::parse_duration)]
    pub retry_min: Duration,

    /// Longest delay between two retries.
    #[arg(long, env = "HOOKRELAY_RETRY_MAX", default_value = "5h", value_parser = humantime::parse_duration)]
    pub retry_max: Duration,

    /// Give up (mark the event failed) once the retry schedule would run past this.
    #[arg(long, env = "HOOKRELAY_RETRY_FOR", default_value = "3d", value_parser = humantime::parse_duration)]
    pub retry_for: Duration,

    /// Serve HTTPS with this certificate chain (PEM, e.g. Let's Encrypt's fullchain.pem); needs
    /// --tls-key. Reloaded with the key on SIGHUP. Without it the server speaks plain HTTP
    /// (behind a TLS-terminating proxy).
    #[arg(long, env = "HOOKRELAY_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// Private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "HOOKRELAY_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// Agents must present a client certificate signed by this CA (PEM) to open /ws; webhook
    /// senders need none. Needs --tls-cert or --acme-domain.
    #[arg(long, env = "HOOKRELAY_CLIENT_CA", value_name = "FILE")]
    pub client_ca: Option<PathBuf>,
    /// The pace at which a channel's webhooks are delivered to its agents (e.g. 10/s, 600/m,
    /// in bursts of up to that many), to spare a slow target. Webhooks over it are stored,
    /// answered 202 and delivered in order at the pace: never refused. `off` (the default)
    /// delivers each at once. A channel can have its own (`channels create --rate-limit`).
    #[arg(
        long,
        env = "HOOKRELAY_RATE_LIMIT",
        default_value = "off",
        value_name = "RATE"
    )]
    pub rate_limit: String,

    /// Undelivered (queued or delivering) webhooks one channel may hold; past it senders get
    /// 429 with Retry-After until its agent takes some.
    #[arg(long, env = "HOOKRELAY_MAX_QUEUED", default_value_t = DEFAULT_MAX_QUEUED, value_name = "N")]
    pub max_queued: u64,

    /// Bytes (bodies and headers) one channel's events may take in the store. The oldest
    /// delivered, failed and rejected ones are deleted to make room; only when undelivered
    /// webhooks fill it do senders get 429 with Retry-After.
    #[arg(
        long,
        env = "HOOKRELAY_MAX_STORED_BYTES",
        default_value_t = DEFAULT_MAX_STORED_BYTES,
        value_name = "BYTES"
    )]
    pub max_stored_bytes: u64,

    /// Webhooks that failed --verify kept per channel for inspection; past it the oldest go.
    #[arg(long, env = "HOOKRELAY_MAX_REJECTED", default_value_t = DEFAULT_MAX_REJECTED, value_name = "N")]
    pub max_rejected: u64,

    /// On a public relay, webhooks one source address (one /64 for IPv6) may send per period
    /// to channels nobody registered (open mode) and with signatures that fail --verify;
    /// past it 429 with Retry-After. Webhooks to registered channels that pass their checks
    /// never count. A relay on loopback applies none. `off` for no limit.
    #[arg(
        long,
        env = "HOOKRELAY_SOURCE_RATE_LIMIT",
        default_value = "100/s",
        value_name = "RATE"
    )]
    pub source_rate_limit: String,

    /// When the data dir's file system has less free space than this (bytes), new webhooks
    /// get 503 with Retry-After and /readyz says why, before the store would fail mid-write.
    #[arg(
        long,
        env = "HOOKRELAY_MIN_FREE_SPACE",
        default_value_t = DEFAULT_MIN_FREE_SPACE,
        value_name = "BYTES"
    )]
    pub min_free_space: u64,

    /// Agents that may serve one channel at once.
    #[arg(long, env = "HOOKRELAY_MAX_AGENTS_PER_CHANNEL", default_value_t = 64)]
    pub max_agents_per_channel: usize,

    /// Webhooks handled at once across the server; past it senders get 503 with Retry-After.
    #[arg(long, env = "HOOKRELAY_MAX_IN_FLIGHT", default_value_t = 10_000)]
    pub max_in_flight: usize,

    /// A reverse proxy in front (CIDR, repeatable or comma-separated): for requests from it,
    /// the client is taken from X-Forwarded-For, for --allow-from, the wrong-token lockout
    /// and the stored source address.
    #[arg(
        long = "trusted-proxy",
        env = "HOOKRELAY_TRUSTED_PROXY",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Serve HTTPS with a certificate for NAME from an ACME CA (Let's Encrypt by default),
    /// obtained, cached under --data-dir/acme and renewed by the server itself; repeatable or
    /// comma-separated for more names on one certificate. The CA validates with TLS-ALPN-01 on
    /// --listen, which must be reachable as NAME on port 443. Instead of --tls-cert/--tls-key.
    #[arg(
        long = "acme-domain",
        env = "HOOKRELAY_ACME_DOMAIN",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub acme_domains: Vec<String>,

    /// Contact address given to the ACME CA, which mails it about expiring certificates and
    /// policy changes. Optional.
    #[arg(long, env = "HOOKRELAY_ACME_EMAIL", value_name = "ADDR")]
    pub acme_email: Option<String>,

    /// The ACME CA's directory URL, or `letsencrypt` (the default: Let's Encrypt's production
    /// directory) or `letsencrypt-staging` (its staging one: untrusted certificates, generous
    /// rate limits, for trying a set-up out).
    #[arg(long, env = "HOOKRELAY_ACME_DIRECTORY", value_name = "URL")]
    pub acme_directory: Option<String>,

    /// Also trust this CA (PEM) when talking to the ACME server: for a private ACME CA such as
    /// step-ca or Pebble. The CA that signed the server's HTTPS certificate: a self-signed
    /// server certificate given here is refused as a CA used as an end entity.
    #[arg(long, env = "HOOKRELAY_ACME_CA", value_name = "FILE")]
    pub acme_ca: Option<PathBuf>,

    /// Answer the ACME CA's HTTP-01 challenges on this plain-HTTP address (e.g. 0.0.0.0:80,
    /// reachable as every --acme-domain on port 80) instead of TLS-ALPN-01 on --listen; every
    /// other request there is redirected to the same path over HTTPS.
    #[arg(long, env = "HOOKRELAY_ACME_HTTP_LISTEN", value_name = "ADDR")]
    pub acme_http_listen: Option<SocketAddr>,

    /// Serve `/metrics` without a token on this (private) address too; without it,
    /// `/metrics` on the main listener needs the admin token.
    #[arg(long, env = "HOOKRELAY_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// This server's name in logs, metrics (`hookrelay_node_info`) and each agent's entry of
    /// the channel status (`"node"`); default: the host name and a random suffix.
    #[arg(long, env = "HOOKRELAY_NODE_ID", value_name = "NAME")]
    pub node_id: Option<String>,

    /// Time a client has to send its request line and headers (slow clients are cut off);
    /// also how long a kept-alive connection may idle. The body has --timeout.
    #[arg(long, env = "HOOKRELAY_HEADER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,

    /// Headers allowed in one request; more get 431.
    #[arg(long, env = "HOOKRELAY_MAX_HEADERS", default_value_t = 100)]
    pub max_headers: usize,

    /// Bytes allowed in a request's line and headers together (at least 8192); more get 431.
    #[arg(long, env = "HOOKRELAY_MAX_HEADER_BYTES", default_value_t = 65_536)]
    pub max_header_bytes: usize,

    /// Log lines as `human` text or `json` objects (one per line, for log shippers).
    #[arg(
        long,
        env = "HOOKRELAY_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Human,
        global = true
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

impl From<LogFormat> for runtime::LogFormat {
    fn from(format: LogFormat) -> Self {
        match format {
            LogFormat::Human => runtime::LogFormat::Human,
            LogFormat::Json => runtime::LogFormat::Json,
        }
    }
}

/// `--rate-limit` or `--source-rate-limit` (`flag`): a rate, or `off`.
fn parse_rate(flag: &'static str, s: &str) -> Result<Option<RateLimit>, ConfigError> {
    if s == "off" {
        Ok(None)
    } else {
        s.parse()
            .map(Some)
            .map_err(|why| ConfigError::RateLimit { flag, why })
    }
}

/// What to do instead of serving.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Register and manage channels (in the data dir; a running server picks changes up
    /// within a second).
    #[command(subcommand)]
    Channels(ChannelsCommand),
    /// Check a configuration file (default: --config, or /etc/hookrelay/server.toml) and
    /// print each setting in force with where it comes from; exit 1 with every problem
    /// (file, key, line, why) otherwise.
    CheckConfig {
        /// The file to check.
        file: Option<PathBuf>,
    },
}

/// `relay-server channels ...`
#[derive(Debug, Subcommand)]
pub enum ChannelsCommand {
    /// Register a channel: prints its webhook URL and its token, once (only a hash is kept).
    Create {
        name: String,
        #[command(flatten)]
        options: ChannelOptions,
    },
    /// List registered channels.
    List,
    /// Delete a channel: its token stops working and its agents are disconnected. Its
    /// events stay until retention removes them.
    Revoke { name: String },
    /// Give a channel a new token: the old one stops working and agents holding it are
    /// disconnected. Prints the new token, once.
    Rotate { name: String },
    /// Change a channel's settings; its token stays, and so do its agents. Only the options
    /// given change.
    Update {
        name: String,
        #[command(flatten)]
        options: UpdateOptions,
    },
}

/// What `channels update` changes: each option given replaces that setting.
#[derive(Debug, Clone, clap::Args)]
pub struct UpdateOptions {
    /// balance (round robin) or fanout (every agent gets a copy).
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// Its delivery pace (e.g. 10/s), or `default` for the server's --rate-limit.
    #[arg(long, value_name = "RATE|default")]
    pub rate_limit: Option<String>,
    /// Only these source networks may send webhooks (CIDR, repeatable); replaces the list.
    #[arg(long = "allow-from", value_name = "CIDR", conflicts_with = "allow_any")]
    pub allow_from: Vec<ipnet::IpNet>,
    /// Any source may send webhooks (clears --allow-from).
    #[arg(long)]
    pub allow_any: bool,
    /// Stop checking signatures.
    #[arg(long, conflicts_with = "verify")]
    pub no_verify: bool,
    #[command(flatten)]
    pub verify: VerifyArgs,
    /// Where its webhooks' event type is (header:NAME or json:/json/pointer), or `default` for
    /// the senders' usual places.
    #[arg(long, value_name = "SOURCE|default")]
    pub event_type: Option<String>,
}

impl UpdateOptions {
    pub fn change(&self) -> Result<SettingsChange, String> {
        let rate_limit = match self.rate_limit.as_deref() {
            None => None,
            Some("default") => Some(None),
            Some(rate) => {
                Some(Some(rate.parse::<RateLimit>().map_err(|e| {
                    format!("--rate-limit: {e}, or default for the server's")
                })?))
            }
        };
        let allow_from = if self.allow_any {
            Some(Vec::new())
        } else {
            (!self.allow_from.is_empty()).then(|| self.allow_from.clone())
        };
        let verify = match self.verify.build().map_err(|e| e.to_string())? {
            Some(verify) => Some(Some(verify)),
            None if self.no_verify => Some(None),
            None => None,
        };
        let event_type = match self.event_type.as_deref() {
            None => None,
            Some("default") => Some(None),
            Some(source) => Some(Some(source.parse::<TypeSource>().map_err(|e| {
                format!("--event-type: {e}, or default for the senders' usual places")
            })?)),
        };
        Ok(SettingsChange {
            mode: self.mode,
            rate_limit,
            allow_from,
            verify,
            event_type,
        })
    }
}

/// A channel's settings on the command line.
#[derive(Debug, Clone, clap::Args)]
pub struct ChannelOptions {
    /// How webhooks reach the channel's agents: balance (round robin) or fanout (every agent
    /// gets a copy; the sender gets the first answer that accepts it).
    #[arg(long, value_enum, default_value_t = Mode::Balance)]
    pub mode: Mode,
    /// Pace at which its webhooks are delivered (e.g. 10/s, 600/m); over it they queue, never
    /// refused. Default: the server's --rate-limit.
    #[arg(long, value_name = "RATE")]
    pub rate_limit: Option<RateLimit>,
    /// Only these source networks may send webhooks (CIDR, repeatable, e.g. 192.30.252.0/22);
    /// default: any.
    #[arg(long = "allow-from", value_name = "CIDR")]
    pub allow_from: Vec<ipnet::IpNet>,
    #[command(flatten)]
    pub verify: VerifyArgs,
    /// Where its webhooks' event type is, when not where senders usually put it (GitHub's,
    /// GitLab's, Shopify's and Bitbucket's headers, a JSON body's `type`): header:NAME or
    /// json:/json/pointer (e.g. json:/meta/kind).
    #[arg(long, value_name = "SOURCE")]
    pub event_type: Option<TypeSource>,
}

impl ChannelOptions {
    pub fn settings(&self) -> Result<ChannelSettings, VerifySpecError> {
        Ok(ChannelSettings {
            mode: self.mode,
            rate_limit: self.rate_limit,
            allow_from: self.allow_from.clone(),
            verify: self.verify.build()?,
            event_type: self.event_type.clone(),
        })
    }
}

/// Which event store backend to use, as `--store` names it. A PostgreSQL URL is kept as
/// given here and checked by [`Args::validate`], whose error never repeats it (clap's would,
/// password and all).
#[derive(Clone, PartialEq, Eq)]
pub enum StoreKind {
    Sqlite,
    Memory,
    Postgres(String),
}

impl std::str::FromStr for StoreKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "sqlite" => Ok(StoreKind::Sqlite),
            "memory" => Ok(StoreKind::Memory),
            url if PostgresUrl::is_postgres(url) => Ok(StoreKind::Postgres(url.to_owned())),
            // Any other URL (`postgress://`, `mysql://`) too, so that the refusal comes from
            // `validate`, which does not repeat it, rather than from clap, which would show
            // its password.
            url if url.contains("://") => Ok(StoreKind::Postgres(url.to_owned())),
            _ => Err("use sqlite, memory or a postgres:// URL".to_owned()),
        }
    }
}

impl std::fmt::Display for StoreKind {
    /// The name `--store` takes; a URL without its password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreKind::Sqlite => f.write_str("sqlite"),
            StoreKind::Memory => f.write_str("memory"),
            StoreKind::Postgres(url) => f.write_str(&without_url_password(url)),
        }
    }
}

impl std::fmt::Debug for StoreKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoreKind({self})")
    }
}

/// Why the options cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--store: {0}")]
    Store(UrlError),
    #[error("--public-url must start with http:// or https:// (got {0:?})")]
    PublicUrl(String),
    #[error("--timeout must be at least 1 second")]
    Timeout,
    #[error("--agent-token must not be empty")]
    EmptyToken,
    #[error("--admin-token must be at least 16 characters")]
    AdminToken,
    #[error("--{flag}: {why}, or off")]
    RateLimit { flag: &'static str, why: String },
    #[error("--max-rejected must be at least 1")]
    MaxRejected,
    #[error("--max-header-bytes must be at least 8192")]
    HeaderBytes,
    #[error("--header-timeout must be more than zero")]
    HeaderTimeout,
    #[error("--offline-status must be 202 or 503 (got {0})")]
    OfflineStatus(u16),
    #[error("--ack-after must be at least 1 second and less than --timeout")]
    AckAfter,
    #[error("--retry-min must be at least 1 ms and at most --retry-max")]
    Retry,
    #[error("--{given} needs --{missing}: pass both to serve HTTPS, or neither for plain HTTP")]
    TlsPair {
        given: &'static str,
        missing: &'static str,
    },
    #[error(
        "--client-ca needs --tls-cert and --tls-key, or --acme-domain: client certificates are checked by the server's own TLS"
    )]
    ClientCaWithoutTls,
    #[error(
        "--acme-domain cannot be used with --tls-cert/--tls-key: ACME gets the certificate itself; give one or the other"
    )]
    AcmeWithTlsFiles,
    #[error("--{0} needs --acme-domain")]
    AcmeWithoutDomain(&'static str),
    #[error(
        "--acme-domain {0:?} is not a host name (no scheme, port, IP address or wildcard: a TLS-ALPN-01 challenge cannot prove those)"
    )]
    AcmeDomain(String),
    #[error(
        "--acme-directory must be an https:// URL, letsencrypt or letsencrypt-staging (got {0:?})"
    )]
    AcmeDirectory(String),
}

impl ConfigError {
    /// Whether the error is about options together (one needs or excludes another) rather
    /// than about one value: the configuration file checks each key alone first, and must
    /// not refuse half of a pair that the file gives whole.
    pub fn is_combination(&self) -> bool {
        matches!(
            self,
            Self::TlsPair { .. }
                | Self::ClientCaWithoutTls
                | Self::AcmeWithTlsFiles
                | Self::AcmeWithoutDomain(_)
        )
    }
}

impl Args {
    pub fn validate(self) -> Result<Config, ConfigError> {
        let acme = self.acme()?;
        if acme.is_some() && (self.tls_cert.is_some() || self.tls_key.is_some()) {
            return Err(ConfigError::AcmeWithTlsFiles);
        }
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
        if self.admin_token.as_ref().is_some_and(|t| t.len() < 16) {
            return Err(ConfigError::AdminToken);
        }
        if self.max_header_bytes < MIN_HEAD_BYTES {
            return Err(ConfigError::HeaderBytes);
        }
        if self.header_timeout.is_zero() {
            return Err(ConfigError::HeaderTimeout);
        }
        if ![202, 503].contains(&self.offline_status) {
            return Err(ConfigError::OfflineStatus(self.offline_status));
        }
        if self
            .ack_after
            .is_some_and(|secs| secs == 0 || secs >= self.timeout)
        {
            return Err(ConfigError::AckAfter);
        }
        if self.retry_min.is_zero() || self.retry_min > self.retry_max {
            return Err(ConfigError::Retry);
        }
        if self.max_rejected == 0 {
            return Err(ConfigError::MaxRejected);
        }
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsConfig {
                cert,
                key,
                client_ca: self.client_ca,
            }),
            (None, None) if self.client_ca.is_some() && acme.is_none() => {
                return Err(ConfigError::ClientCaWithoutTls);
            }
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::TlsPair {
                    given: "tls-cert",
                    missing: "tls-key",
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError::TlsPair {
                    given: "tls-key",
                    missing: "tls-cert",
                });
            }
        };
        let store = match self.store {
            StoreKind::Sqlite => StoreConfig::Sqlite {
                dir: self.data_dir,
                fsync: self.fsync,
            },
            StoreKind::Postgres(url) => {
                StoreConfig::Postgres(url.parse().map_err(ConfigError::Store)?)
            }
            StoreKind::Memory => StoreConfig::Memory,
        };
        Ok(Config {
            listen: self.listen,
            public_url,
            timeout: Duration::from_secs(self.timeout),
            max_body_bytes: self.max_body,
            agent_token: self.agent_token,
            open: self.open,
            admin_token: self.admin_token,
            rate_limit: parse_rate("rate-limit", &self.rate_limit)?,
            quota: Quota {
                max_undelivered: self.max_queued,
                max_bytes: self.max_stored_bytes,
                max_rejected: self.max_rejected,
            },
            source_rate_limit: parse_rate("source-rate-limit", &self.source_rate_limit)?,
            min_free_space: self.min_free_space,
            max_agents_per_channel: self.max_agents_per_channel.max(1),
            max_in_flight: self.max_in_flight.max(1),
            metrics_listen: self.metrics_listen,
            node_id: self.node_id.filter(|id| !id.trim().is_empty()),
            trusted_proxies: self.trusted_proxies,
            http: HttpLimits {
                header_timeout: self.header_timeout,
                max_headers: self.max_headers,
                max_head_bytes: self.max_header_bytes,
            },
            store,
            offline_status: self.offline_status,
            ack_after: self.ack_after.map(Duration::from_secs),
            retention: self.retention,
            max_events_per_channel: self.max_events,
            retry: RetryPolicy {
                min: self.retry_min,
                max: self.retry_max,
                give_up_after: self.retry_for,
            },
            tls,
            acme,
            ..Config::default()
        })
    }

    /// The ACME settings, if `--acme-domain` is given; an ACME option without it is refused.
    fn acme(&self) -> Result<Option<AcmeConfig>, ConfigError> {
        if self.acme_domains.is_empty() {
            let stray = [
                ("acme-email", self.acme_email.is_some()),
                ("acme-directory", self.acme_directory.is_some()),
                ("acme-ca", self.acme_ca.is_some()),
                ("acme-http-listen", self.acme_http_listen.is_some()),
            ];
            return match stray.iter().find(|(_, given)| *given) {
                Some((flag, _)) => Err(ConfigError::AcmeWithoutDomain(flag)),
                None => Ok(None),
            };
        }
        let mut domains = Vec::with_capacity(self.acme_domains.len());
        for domain in &self.acme_domains {
            let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
            let name_ok = !domain.contains('*')
                && domain.parse::<std::net::IpAddr>().is_err()
                && rustls::pki_types::DnsName::try_from(domain.as_str()).is_ok();
            if !name_ok {
                return Err(ConfigError::AcmeDomain(domain));
            }
            if !domains.contains(&domain) {
                domains.push(domain);
            }
        }
        let directory = match self.acme_directory.as_deref() {
            None | Some("letsencrypt") => LETS_ENCRYPT.to_owned(),
            Some("letsencrypt-staging") => LETS_ENCRYPT_STAGING.to_owned(),
            Some(url) if url.starts_with("https://") => url.to_owned(),
            Some(other) => return Err(ConfigError::AcmeDirectory(other.to_owned())),
        };
        Ok(Some(AcmeConfig {
            domains,
            email: self.acme_email.clone(),
            directory,
            ca: self.acme_ca.clone(),
            cache_dir: self.data_dir.join("acme"),
            client_ca: self.client_ca.clone(),
            http_listen: self.acme_http_listen,
        }))
    }
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
        assert_eq!(config.tls, None, "plain HTTP by default");
        assert_eq!(
            config.store,
            StoreConfig::Sqlite {
                dir: PathBuf::from("./hookrelay-data"),
                fsync: true
            }
        );
        assert_eq!(config.offline_status, 202);
        assert_eq!(config.ack_after, None);
        assert_eq!(config.retention, Duration::from_secs(7 * 24 * 3600));
        assert_eq!(config.retry, RetryPolicy::default());
        assert_eq!(config.rate_limit, None, "no delivery pace by default");
        let quota = Config::default().quota;
        assert_eq!(config.quota, quota);
        assert_eq!(quota.max_undelivered, 10_000);
        assert_eq!(quota.max_bytes, 1 << 30);
        assert_eq!(quota.max_rejected, 100);
        assert_eq!(
            config.source_rate_limit.map(|r| r.to_string()).as_deref(),
            Some("100/s")
        );
        assert_eq!(
            config.source_rate_limit,
            Config::default().source_rate_limit
        );
        assert_eq!(config.min_free_space, 64 << 20);
        assert_eq!(config.open, None, "decided by the listen address");
    }

    #[test]
    fn rates_parse_or_are_off() {
        let config = Args::parse_from([
            "relay-server",
            "--rate-limit",
            "10/s",
            "--source-rate-limit",
            "off",
        ])
        .validate()
        .expect("valid");
        assert_eq!(
            config.rate_limit.map(|r| r.to_string()).as_deref(),
            Some("10/s")
        );
        assert_eq!(config.source_rate_limit, None);
        for flag in ["--rate-limit", "--source-rate-limit"] {
            let fast = Args::parse_from(["relay-server", flag, "fast"]).validate();
            let err = fast.expect_err("not a rate");
            assert!(err.to_string().starts_with(flag), "{err}");
        }
        let none = Args::parse_from(["relay-server", "--max-rejected", "0"]).validate();
        assert!(matches!(none, Err(ConfigError::MaxRejected)), "{none:?}");
    }

    #[test]
    fn store_options_parse() {
        let config = Args::parse_from([
            "relay-server",
            "--store",
            "memory",
            "--offline-status",
            "503",
            "--ack-after",
            "5",
            "--retention",
            "36h",
            "--retry-min",
            "2s",
        ])
        .validate()
        .expect("valid");
        assert_eq!(config.store, StoreConfig::Memory);
        assert_eq!(config.offline_status, 503);
        let url = "postgresql://relay:s3cret@db:5432/hookrelay?sslmode=require";
        let pg = Args::parse_from(["relay-server", "--store", url])
            .validate()
            .expect("valid");
        let StoreConfig::Postgres(parsed) = &pg.store else {
            panic!("{:?}", pg.store);
        };
        assert_eq!(
            pg.store.to_string(),
            "postgres://relay@db:5432/hookrelay?sslmode=require",
            "shown without the password"
        );
        assert_eq!(*parsed, url.parse().expect("valid"));
        let err =
            Args::try_parse_from(["relay-server", "--store", "postgres"]).expect_err("a name");
        assert!(err.to_string().contains("--store"), "{err}");
        // A mistyped scheme is refused without repeating the URL and its password.
        let typo = "postgress://u:s3cret@h/db";
        let err = Args::parse_from(["relay-server", "--store", typo])
            .validate()
            .expect_err("not a PostgreSQL URL");
        assert_eq!(
            err.to_string(),
            "--store: a PostgreSQL store URL starts with postgres:// or postgresql://"
        );
        let bad = "postgres://u:s3cret@h/db?sslmode=allow";
        let err = Args::parse_from(["relay-server", "--store", bad])
            .validate()
            .expect_err("no such sslmode");
        assert_eq!(
            err.to_string(),
            "--store: sslmode \"allow\" is not supported: use disable, prefer, require or verify-full"
        );
        assert_eq!(config.ack_after, Some(Duration::from_secs(5)));
        assert_eq!(config.retention, Duration::from_secs(36 * 3600));
        assert_eq!(config.retry.min, Duration::from_secs(2));
        for bad in [
            &["relay-server", "--offline-status", "200"][..],
            &["relay-server", "--ack-after", "30"],
            &["relay-server", "--ack-after", "0"],
            &["relay-server", "--retry-min", "6h"],
        ] {
            assert!(Args::parse_from(bad).validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn public_url_without_scheme_is_refused() {
        let args = Args::parse_from(["relay-server", "--public-url", "relay.example.com"]);
        assert!(matches!(args.validate(), Err(ConfigError::PublicUrl(_))));
    }

    #[test]
    fn tls_files_come_in_pairs() {
        let config = Args::parse_from([
            "relay-server",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--client-ca",
            "ca.pem",
        ])
        .validate()
        .expect("valid");
        assert_eq!(
            config.tls,
            Some(TlsConfig {
                cert: "c.pem".into(),
                key: "k.pem".into(),
                client_ca: Some("ca.pem".into()),
            })
        );
        let error = |args: &[&str]| {
            Args::parse_from(args)
                .validate()
                .expect_err("refused")
                .to_string()
        };
        assert_eq!(
            error(&["relay-server", "--tls-cert", "c.pem"]),
            "--tls-cert needs --tls-key: pass both to serve HTTPS, or neither for plain HTTP"
        );
        assert_eq!(
            error(&["relay-server", "--tls-key", "k.pem"]),
            "--tls-key needs --tls-cert: pass both to serve HTTPS, or neither for plain HTTP"
        );
        assert!(error(&["relay-server", "--client-ca", "ca.pem"]).starts_with("--client-ca needs"));
    }

    #[test]
    fn acme_options_parse_and_exclude_tls_files() {
        let config = Args::parse_from([
            "relay-server",
            "--acme-domain",
            "Relay.Example.com,hooks.example.com",
            "--acme-domain",
            "relay.example.com",
            "--acme-email",
            "ops@example.com",
            "--acme-directory",
            "letsencrypt-staging",
            "--data-dir",
            "/var/lib/hookrelay",
        ])
        .validate()
        .expect("valid");
        let acme = config.acme.expect("ACME on");
        assert_eq!(acme.domains, ["relay.example.com", "hooks.example.com"]);
        assert_eq!(acme.email.as_deref(), Some("ops@example.com"));
        assert_eq!(acme.directory, LETS_ENCRYPT_STAGING);
        assert_eq!(acme.cache_dir, PathBuf::from("/var/lib/hookrelay/acme"));
        assert_eq!(config.tls, None);
        let default = Args::parse_from(["relay-server", "--acme-domain", "relay.example.com"])
            .validate()
            .expect("valid");
        let default = default.acme.expect("ACME on");
        assert_eq!(default.directory, LETS_ENCRYPT);
        assert_eq!(default.http_listen, None, "TLS-ALPN-01 by default");

        let error = |args: &[&str]| {
            Args::parse_from(args)
                .validate()
                .expect_err("refused")
                .to_string()
        };
        assert_eq!(
            error(&[
                "relay-server",
                "--acme-domain",
                "relay.example.com",
                "--tls-cert",
                "c.pem",
                "--tls-key",
                "k.pem"
            ]),
            "--acme-domain cannot be used with --tls-cert/--tls-key: ACME gets the certificate \
             itself; give one or the other"
        );
        assert_eq!(
            error(&["relay-server", "--acme-email", "ops@example.com"]),
            "--acme-email needs --acme-domain"
        );
        for bad in [
            "https://relay.example.com",
            "*.example.com",
            "192.0.2.1",
            "a b",
        ] {
            let message = error(&["relay-server", "--acme-domain", bad]);
            assert!(message.starts_with("--acme-domain"), "{bad}: {message}");
        }
        let message = error(&[
            "relay-server",
            "--acme-domain",
            "relay.example.com",
            "--acme-directory",
            "http://ca.example/dir",
        ]);
        assert!(message.starts_with("--acme-directory"), "{message}");
    }
}
