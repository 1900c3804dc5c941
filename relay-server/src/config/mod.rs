//! Server configuration: [`Config`], validated once from the command line ([`args`]: flags,
//! each also read from a `HOOKRELAY_*` environment variable) under the configuration file
//! ([`file`](mod@file)), or built directly by whoever embeds the server (tests).

use std::net::SocketAddr;
use std::time::Duration;

use crate::channel::{DeclaredChannel, Period, RateLimit};
use crate::net::acme::AcmeConfig;
use crate::net::http::HttpLimits;
use crate::net::tls::TlsConfig;
use crate::store::{Quota, StoreConfig};

pub mod args;
pub mod file;

/// Default cap on a webhook body: GitHub's own limit for a delivery.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 25 * 1024 * 1024;
/// Default [`crate::store::Quota::max_undelivered`]: as many as `--max-events` keeps.
pub const DEFAULT_MAX_QUEUED: u64 = 10_000;
/// Default [`crate::store::Quota::max_bytes`]: 1 GiB, forty webhooks of GitHub's largest size.
pub const DEFAULT_MAX_STORED_BYTES: u64 = 1024 * 1024 * 1024;
/// Default [`crate::store::Quota::max_rejected`].
pub const DEFAULT_MAX_REJECTED: u64 = 100;
/// Default `--min-free-space`: 64 MiB, room for SQLite to finish a checkpoint and for the
/// webhooks in flight.
pub const DEFAULT_MIN_FREE_SPACE: u64 = 64 * 1024 * 1024;

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
    /// Open mode (any agent may take an unregistered channel); `None` decides by the listen
    /// address at start-up: open on loopback only.
    pub open: Option<bool>,
    pub admin_token: Option<String>,
    /// How often the server checks the store for channel changes made by another process.
    pub channel_reload: Duration,
    /// Failed token checks from one address within [`Config::auth_window`] before that
    /// address is refused with 429 until the window ends.
    pub auth_failures: u32,
    pub auth_window: Duration,
    /// Default delivery pace per channel; `None` delivers at once.
    pub rate_limit: Option<RateLimit>,
    /// What each channel may hold in the store.
    pub quota: Quota,
    /// Open-mode and forged webhooks per source address, on a public relay; `None` is no
    /// limit.
    pub source_rate_limit: Option<RateLimit>,
    /// Below this much free space in the data dir, new webhooks get 503.
    pub min_free_space: u64,
    /// How often the free space is looked at.
    pub disk_check_interval: Duration,
    pub max_agents_per_channel: usize,
    /// Webhooks handled at once.
    pub max_in_flight: usize,
    /// Limits on request heads and slow clients.
    pub http: HttpLimits,
    /// A second listener for `/metrics` only.
    pub metrics_listen: Option<SocketAddr>,
    /// This server's name; `None`: the host name and a random suffix ([`node_id`]).
    pub node_id: Option<String>,
    /// Proxies whose X-Forwarded-For is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Channels the configuration file declares, created or updated at start-up.
    pub declared_channels: Vec<DeclaredChannel>,
    /// Interval between WebSocket pings to each agent.
    pub ping_interval: Duration,
    /// An agent that sends nothing (not even a pong) for this long is disconnected.
    pub peer_timeout: Duration,
    /// Time an agent has to send its `Hello` after the WebSocket opens.
    pub handshake_timeout: Duration,
    /// Upper bound on waiting for in-flight deliveries at shutdown.
    pub shutdown_grace: Duration,
    pub store: StoreConfig,
    /// Status for a webhook queued because no agent is connected: 202 or 503.
    pub offline_status: u16,
    /// Answer 202 when the target takes longer than this; the delivery goes on.
    pub ack_after: Option<Duration>,
    pub retention: Duration,
    /// Events kept per channel (delivered and failed ones are pruned past this).
    pub max_events_per_channel: u64,
    pub retry: RetryPolicy,
    /// How often retention is applied.
    pub prune_interval: Duration,
    /// HTTPS instead of plain HTTP; `None` serves plain HTTP.
    pub tls: Option<TlsConfig>,
    /// HTTPS with a certificate from an ACME CA. The command line refuses it together with
    /// [`Config::tls`]; set both in code and the files are served, ACME left off.
    pub acme: Option<AcmeConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            timeout: Duration::from_secs(30),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            agent_token: None,
            open: None,
            admin_token: None,
            channel_reload: Duration::from_secs(1),
            auth_failures: 10,
            auth_window: Duration::from_secs(60),
            rate_limit: None,
            quota: Quota {
                max_undelivered: DEFAULT_MAX_QUEUED,
                max_bytes: DEFAULT_MAX_STORED_BYTES,
                max_rejected: DEFAULT_MAX_REJECTED,
            },
            source_rate_limit: Some(RateLimit {
                count: std::num::NonZeroU32::new(100).expect("100 is not zero"),
                period: Period::Second,
            }),
            min_free_space: DEFAULT_MIN_FREE_SPACE,
            disk_check_interval: Duration::from_secs(1),
            max_agents_per_channel: 64,
            max_in_flight: 10_000,
            http: HttpLimits::default(),
            metrics_listen: None,
            node_id: None,
            trusted_proxies: Vec::new(),
            declared_channels: Vec::new(),
            ping_interval: Duration::from_secs(20),
            peer_timeout: Duration::from_secs(50),
            handshake_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
            // In-process use (tests, embedding) keeps nothing on disk unless asked; the
            // command line defaults to SQLite under ./hookrelay-data.
            store: StoreConfig::Memory,
            offline_status: 202,
            ack_after: None,
            retention: Duration::from_secs(7 * 24 * 3600),
            max_events_per_channel: 10_000,
            retry: RetryPolicy::default(),
            prune_interval: Duration::from_secs(60),
            tls: None,
            acme: None,
        }
    }
}

/// When to retry a queued delivery that failed: exponential backoff with jitter, from `min`
/// doubling up to `max`, until the schedule would run past `give_up_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub min: Duration,
    pub max: Duration,
    pub give_up_after: Duration,
}

impl Default for RetryPolicy {
    /// In the spirit of Stripe's: minutes at first, then hours, for three days.
    fn default() -> Self {
        Self {
            min: Duration::from_secs(60),
            max: Duration::from_secs(5 * 3600),
            give_up_after: Duration::from_secs(3 * 24 * 3600),
        }
    }
}

impl RetryPolicy {
    /// The delay before the attempt that follows failure number `failures` (1 for the first
    /// failure), or `None` when it is time to give up. `jitter` in `[0, 1)` picks the delay
    /// within the upper half of the nominal one, so retries from many events spread out.
    pub fn delay(&self, failures: u32, jitter: f64) -> Option<Duration> {
        let nominal = |n: u32| {
            let factor = 2u32.saturating_pow(n.saturating_sub(1));
            self.min.saturating_mul(factor).min(self.max)
        };
        let mut scheduled = Duration::ZERO;
        for n in 1..=failures {
            scheduled = scheduled.saturating_add(nominal(n));
            if scheduled > self.give_up_after {
                return None;
            }
        }
        let delay = nominal(failures);
        Some(delay.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0)))
    }
}

/// The public base URL for a server bound to `addr`, `https://` when it serves TLS: an
/// unspecified address (0.0.0.0, ::) is shown as loopback, since no better name is known
/// without `--public-url`.
pub fn derive_public_url(addr: SocketAddr, tls: bool) -> String {
    let ip = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => std::net::Ipv4Addr::LOCALHOST.into(),
        ip if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{}", SocketAddr::new(ip, addr.port()))
}

/// The name a server without `--node-id` goes by: the host name and four random hex digits,
/// so two servers on one host (or two starts of one) are told apart.
pub fn node_id(given: Option<&str>) -> String {
    if let Some(id) = given {
        return id.to_owned();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "relay".to_owned());
    let mut suffix = [0u8; 2];
    let suffix = match getrandom::fill(&mut suffix) {
        Ok(()) => u16::from_le_bytes(suffix),
        Err(_) => u16::try_from(std::process::id() & 0xffff).unwrap_or(0),
    };
    format!("{host}-{suffix:04x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_up_to_the_cap_then_give_up() {
        let policy = RetryPolicy {
            min: Duration::from_secs(60),
            max: Duration::from_secs(3600),
            give_up_after: Duration::from_secs(3 * 3600),
        };
        let full = |n| policy.delay(n, 0.999_999).map(|d| d.as_secs());
        assert_eq!(full(1), Some(59));
        assert_eq!(full(2), Some(119));
        assert_eq!(full(7), Some(3599));
        // 1+2+4+8+16+32 minutes and two hours would run past three hours.
        assert_eq!(full(8), None);
        // Jitter stays in the upper half.
        assert_eq!(policy.delay(1, 0.0), Some(Duration::from_secs(30)));
        assert_eq!(policy.delay(u32::MAX, 0.5), None);
    }

    #[test]
    fn derived_url_shows_loopback_for_unspecified_address() {
        assert_eq!(
            derive_public_url("0.0.0.0:9000".parse().expect("literal"), false),
            "http://127.0.0.1:9000"
        );
        assert_eq!(
            derive_public_url("[::]:9000".parse().expect("literal"), true),
            "https://[::1]:9000"
        );
    }
}
