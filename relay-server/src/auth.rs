//! Who may do what: agents holding a channel, readers of its history, the admin; and the
//! limit on wrong tokens.
//!
//! A registered channel (see [`crate::channels`]) belongs to whoever holds its token. A channel
//! nobody registered can be used only in open mode, where its unguessable name is the secret
//! (and `--agent-token`, when set, is needed too). The admin token opens everything. Every
//! token is compared in constant time (hashes for channel tokens).
//!
//! A correct token always passes. Wrong ones are counted per source address and [`Scope`]
//! (which secret was guessed at): past [`crate::Config::auth_failures`] in a window, further
//! wrong tokens for that scope from that address get 429 instead of 401. Tokens carry 128 bits
//! or more, so guessing is not what the count stops; it keeps one client's retry loop from
//! filling the log, and tells it to back off. Counting per scope keeps one person's typo
//! behind a shared NAT address from changing the answers their team gets for other channels.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use protocol::{ChannelId, ErrorCode};
use subtle::ConstantTimeEq;
use tokio::time::Instant;
use tracing::warn;

use crate::AppState;
use crate::channel::ChannelRecord;
use crate::error::Error;

/// Bytes of randomness in a server-assigned channel name.
const CHANNEL_ENTROPY_BYTES: usize = 16;
/// Addresses tracked before expired windows are swept out.
const SWEEP_AT: usize = 10_000;

/// Compares a presented token with the expected one in time independent of where they differ.
pub fn token_matches(expected: &str, presented: Option<&str>) -> bool {
    let presented = presented.unwrap_or_default();
    bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
}

/// A fresh channel name with 128 random bits from the OS, as 32 lowercase hex digits: URL-safe
/// and unguessable.
pub fn random_channel() -> ChannelId {
    let mut bytes = [0u8; CHANNEL_ENTROPY_BYTES];
    getrandom::fill(&mut bytes).expect("the OS random source is available on supported platforms");
    let name: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    ChannelId::parse(&name).expect("32 hex digits are a valid channel name")
}

/// What an agent's hello entitles it to.
#[derive(Debug)]
pub enum AgentGrant {
    /// A registered channel, its token presented.
    Registered(Arc<ChannelRecord>),
    /// An unregistered channel, in open mode.
    Open(ChannelId),
}

impl AgentGrant {
    pub fn channel(&self) -> &ChannelId {
        match self {
            AgentGrant::Registered(record) => &record.name,
            AgentGrant::Open(name) => name,
        }
    }
}

/// The secret a wrong token was presented for. Wrong tokens count per address and scope. The
/// scopes an address can reach are bounded (registered channels, plus three), so the
/// unregistered names a client makes up cannot grow the count's table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// A registered channel's token.
    Channel(ChannelId),
    /// The admin token.
    Admin,
    /// `--agent-token`, for channels nobody registered.
    AgentToken,
    /// An agent's hello for no channel, or for one this server does not have.
    Unnamed,
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Channel(name) => write!(f, "channel {name}"),
            Scope::Admin => f.write_str("the admin token"),
            Scope::AgentToken => f.write_str("the agent token"),
            Scope::Unnamed => f.write_str("unnamed channels"),
        }
    }
}

/// Why an agent may not hold the channel it asked for: the error frame's code and message.
#[derive(Debug)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

/// Decides whether an agent's hello (`requested` channel, `token`) lets it hold a channel.
/// A refusal for a wrong token counts against `peer` in its [`Scope`]; past the limit the
/// refusal says to wait instead.
pub fn agent_access(
    state: &AppState,
    peer: Option<IpAddr>,
    requested: Option<&str>,
    token: Option<&str>,
) -> Result<AgentGrant, Refusal> {
    let refuse_in = |scope: Scope| {
        move |message: String| {
            let message = match state.token_refused(peer, &scope, &message) {
                Ok(()) => message,
                Err(e) => format!("{e} ({scope})"),
            };
            Refusal {
                code: ErrorCode::Unauthorized,
                message,
            }
        }
    };
    let token = token.filter(|t| !t.is_empty());
    let Some(name) = requested else {
        if let Some(record) = token.and_then(|t| state.channels.find_by_token(t)) {
            return Ok(AgentGrant::Registered(record));
        }
        if !state.open {
            return Err(refuse_in(Scope::Unnamed)(
                "this server has no open channels: pass --channel NAME --token TOKEN of a channel \
                 made with `relay-server channels create`"
                    .to_owned(),
            ));
        }
        check_agent_token(state, token).map_err(refuse_in(Scope::AgentToken))?;
        return Ok(AgentGrant::Open(random_channel()));
    };
    let channel = ChannelId::parse(name).map_err(|e| Refusal {
        code: ErrorCode::InvalidChannel,
        message: e.to_string(),
    })?;
    if let Some(record) = state.channels.get(&channel) {
        let refuse = refuse_in(Scope::Channel(channel.clone()));
        return match token {
            Some(token) if record.token_hash.matches(token) => Ok(AgentGrant::Registered(record)),
            Some(_) => Err(refuse(format!("wrong token for channel {channel}"))),
            None => Err(refuse(format!(
                "channel {channel} is registered: pass its token with --token"
            ))),
        };
    }
    if !state.open {
        return Err(refuse_in(Scope::Unnamed)(format!(
            "no channel {channel} on this server (open mode is off): an operator creates it \
             with `relay-server channels create {channel}`"
        )));
    }
    check_agent_token(state, token).map_err(refuse_in(Scope::AgentToken))?;
    Ok(AgentGrant::Open(channel))
}

fn check_agent_token(state: &AppState, token: Option<&str>) -> Result<(), String> {
    match &state.config.agent_token {
        Some(expected) if !token_matches(expected, token) => {
            Err("missing or wrong agent token".to_owned())
        }
        _ => Ok(()),
    }
}

/// Decides whether a request to a channel's API (`bearer` from `Authorization: Bearer`) may
/// read and replay its events: the admin token, the channel's token for a registered
/// channel, the agent token (when the server has one) for an unregistered channel in open
/// mode. An unregistered channel when open mode is off is 404 to anyone but the admin. A
/// right token passes however many wrong ones came before it; a wrong one is 401, or 429 once
/// `peer` is past the limit for this channel.
pub fn api_access(
    state: &AppState,
    peer: Option<IpAddr>,
    channel: &ChannelId,
    bearer: Option<&str>,
) -> Result<(), Error> {
    if is_admin(state, bearer) || api_is_open(state, channel) {
        return Ok(());
    }
    let (allowed, scope) = match state.channels.get(channel) {
        Some(record) => (
            bearer.is_some_and(|token| record.token_hash.matches(token)),
            Scope::Channel(channel.clone()),
        ),
        None if !state.open => return Err(Error::UnknownChannel(channel.clone())),
        None => (
            (state.config.agent_token.as_deref())
                .is_some_and(|expected| token_matches(expected, bearer)),
            Scope::AgentToken,
        ),
    };
    if allowed {
        return Ok(());
    }
    let why = format!("wrong or missing token for the API of channel {channel}");
    state.token_refused(peer, &scope, &why)?;
    Err(Error::Unauthorized)
}

/// Whether anyone may read `channel`'s API without a token: an unregistered channel in open
/// mode on a server without `--agent-token`. [`api_access`] lets such requests in whatever
/// they carry; the inspector page says so (and asks for no token) without a call that a 401
/// would answer. It tells a reader nothing a call without a token would not: where every
/// channel needs a token (open mode off, or an agent token set) it is false for every name.
pub fn api_is_open(state: &AppState, channel: &ChannelId) -> bool {
    state.open && state.config.agent_token.is_none() && state.channels.get(channel).is_none()
}

/// Whether `bearer` is the admin token (false when the server has none).
pub fn is_admin(state: &AppState, bearer: Option<&str>) -> bool {
    state
        .config
        .admin_token
        .as_deref()
        .is_some_and(|expected| token_matches(expected, bearer))
}

/// The token of an `Authorization: Bearer TOKEN` header.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

impl crate::ServerState {
    /// The address a request comes from: the connection's peer, or, when the peer is one of
    /// `--trusted-proxy`, the client it forwarded for (from `X-Forwarded-For`).
    pub fn client_ip(
        &self,
        extensions: &axum::http::Extensions,
        headers: &axum::http::HeaderMap,
    ) -> Option<IpAddr> {
        let peer = crate::net::http::Peer::of(extensions)?.addr.ip();
        Some(forwarded_client(
            peer,
            headers,
            &self.config.trusted_proxies,
        ))
    }

    /// Counts and logs a wrong or missing token from `peer` for `scope`. `Ok` while `peer` is
    /// within the limit for `scope` (the caller refuses it as it would anyway);
    /// `Err(TooManyFailures)` once it is past it, until its window ends.
    pub fn token_refused(
        &self,
        peer: Option<IpAddr>,
        scope: &Scope,
        why: &str,
    ) -> Result<(), Error> {
        self.auth_failures
            .failed(peer, scope, why)
            .inspect_err(|_| {
                self.metrics.rejected("lockout");
            })?;
        self.metrics.rejected("token");
        Ok(())
    }
}

/// The client behind `peer`: `peer` itself unless it is a trusted proxy; then the rightmost
/// `X-Forwarded-For` address that is not a trusted proxy (each proxy appends the address it
/// got the request from, so what is left of the last untrusted hop may be forged). An entry
/// that is not an address stops the walk at the proxy that sent it.
pub fn forwarded_client(
    peer: IpAddr,
    headers: &axum::http::HeaderMap,
    trusted: &[ipnet::IpNet],
) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) if is_trusted(&ip) => client = ip,
            Ok(ip) => return ip,
            Err(_) => return client,
        }
    }
    client
}

/// Counts wrong tokens per source address (IPv6 by /64, what one host usually holds) and
/// [`Scope`] in a fixed window; past the limit, further wrong tokens from that address for
/// that scope are refused until its window ends. Right tokens are never asked about.
#[derive(Debug)]
pub struct FailureLimiter {
    limit: u32,
    window: Duration,
    windows: DashMap<(IpAddr, Scope), Window>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

impl FailureLimiter {
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window,
            windows: DashMap::new(),
        }
    }

    /// Counts a wrong token from `peer` for `scope` and logs it; the failure that reaches the
    /// limit is logged as a lockout, later ones are not logged again. `Err(TooManyFailures)`,
    /// with how long until the window ends, when this failure is past the limit.
    pub fn failed(&self, peer: Option<IpAddr>, scope: &Scope, why: &str) -> Result<(), Error> {
        let Some(ip) = peer else {
            warn!(why, "token refused");
            return Ok(());
        };
        if self.windows.len() >= SWEEP_AT {
            let window = self.window;
            self.windows.retain(|_, w| w.started.elapsed() < window);
        }
        let now = Instant::now();
        let (failures, started) = {
            let mut entry = self
                .windows
                .entry((key(ip), scope.clone()))
                .or_insert(Window {
                    started: now,
                    failures: 0,
                });
            if now.duration_since(entry.started) >= self.window {
                *entry = Window {
                    started: now,
                    failures: 0,
                };
            }
            entry.failures = entry.failures.saturating_add(1);
            (entry.failures, entry.started)
        };
        match failures.cmp(&self.limit) {
            std::cmp::Ordering::Less => {
                warn!(%ip, %scope, why, failures, limit = self.limit, "token refused")
            }
            std::cmp::Ordering::Equal => warn!(
                %ip,
                %scope,
                why,
                lockout = ?self.window,
                "token refused; too many wrong tokens from this address, refusing its wrong tokens for the rest of the window"
            ),
            std::cmp::Ordering::Greater => {
                let left = self.window.saturating_sub(now.duration_since(started));
                return Err(Error::TooManyFailures(left));
            }
        }
        Ok(())
    }
}

/// The address a failure (or a source's webhook, see [`crate::limits::SourceLimits`]) counts
/// against: an IPv6 address by its /64.
pub(crate) fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let net = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(net.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_must_match_exactly() {
        assert!(token_matches("s3cret", Some("s3cret")));
        assert!(!token_matches("s3cret", Some("s3creT")));
        assert!(!token_matches("s3cret", Some("s3cret2")));
        assert!(!token_matches("s3cret", None));
    }

    #[test]
    fn random_channels_are_long_and_distinct() {
        let a = random_channel();
        assert_eq!(a.as_str().len(), 32);
        assert_ne!(a, random_channel());
    }

    #[tokio::test(start_paused = true)]
    async fn wrong_tokens_past_the_limit_are_refused_until_the_window_ends() {
        let limiter = FailureLimiter::new(3, Duration::from_secs(60));
        let ip: IpAddr = "203.0.113.7".parse().expect("literal");
        let other: IpAddr = "203.0.113.8".parse().expect("literal");
        let scope = Scope::Channel(ChannelId::parse("a").expect("valid"));
        let elsewhere = Scope::Channel(ChannelId::parse("b").expect("valid"));
        for _ in 0..3 {
            assert!(limiter.failed(Some(ip), &scope, "wrong").is_ok());
        }
        assert!(matches!(
            limiter.failed(Some(ip), &scope, "wrong"),
            Err(Error::TooManyFailures(d)) if d == Duration::from_secs(60)
        ));
        assert!(
            limiter.failed(Some(other), &scope, "wrong").is_ok(),
            "other addresses unaffected"
        );
        assert!(
            limiter.failed(Some(ip), &elsewhere, "wrong").is_ok(),
            "other scopes unaffected"
        );
        assert!(limiter.failed(Some(ip), &Scope::Admin, "wrong").is_ok());
        tokio::time::advance(Duration::from_secs(45)).await;
        assert!(matches!(
            limiter.failed(Some(ip), &scope, "wrong"),
            Err(Error::TooManyFailures(d)) if d == Duration::from_secs(15)
        ));
        tokio::time::advance(Duration::from_secs(15)).await;
        assert!(
            limiter.failed(Some(ip), &scope, "wrong").is_ok(),
            "a new window starts at zero"
        );
    }

    #[test]
    fn the_client_behind_a_trusted_proxy_is_the_last_untrusted_hop() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().expect("literal")];
        let ip = |s: &str| s.parse::<IpAddr>().expect("literal");
        let headers = |xff: &[&str]| {
            let mut map = axum::http::HeaderMap::new();
            for value in xff {
                map.append("x-forwarded-for", value.parse().expect("valid header"));
            }
            map
        };
        let proxy = ip("10.0.0.2");
        // Not from a trusted proxy: the header is ignored.
        let direct = forwarded_client(ip("198.51.100.9"), &headers(&["1.2.3.4"]), &trusted);
        assert_eq!(direct, ip("198.51.100.9"));
        // A forged left part does not matter: the proxy appended the real client.
        let forged = headers(&["6.6.6.6, 203.0.113.5"]);
        assert_eq!(
            forwarded_client(proxy, &forged, &trusted),
            ip("203.0.113.5")
        );
        // Two proxies, the header split over two lines.
        let chained = headers(&["203.0.113.5", "10.0.0.7"]);
        assert_eq!(
            forwarded_client(proxy, &chained, &trusted),
            ip("203.0.113.5")
        );
        // Garbage stops at the proxy; no header is the proxy itself.
        let garbage = headers(&["203.0.113.5, not-an-ip"]);
        assert_eq!(forwarded_client(proxy, &garbage, &trusted), proxy);
        assert_eq!(forwarded_client(proxy, &headers(&[]), &trusted), proxy);
        assert_eq!(
            forwarded_client(proxy, &forged, &[]),
            proxy,
            "nothing trusted"
        );
    }

    #[test]
    fn ipv6_failures_count_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("literal");
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().expect("literal");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("literal");
        assert_eq!(key(a), key(b));
        assert_ne!(key(a), key(c));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().expect("literal");
        assert_eq!(key(mapped), "192.0.2.1".parse::<IpAddr>().expect("literal"));
    }
}
