//! Paces and limits. A channel's rate (`--rate-limit`, or its own) is the pace at which its
//! webhooks are *delivered*, never a reason to refuse one: a webhook over the pace is stored
//! and delivered in order when its turn comes. Floods are bounded where they come from: per
//! source address ([`SourceLimits`]) for traffic nobody vouches for, and by each channel's
//! store quota ([`crate::store::Quota`]).
//!
//! Rates are counted with `governor`'s GCRA limiters: one keyed limiter for every channel on
//! the server's `--rate-limit` (swept of idle channels), and one limiter per channel with a
//! rate of its own.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use protocol::ChannelId;

use crate::channel::{Period, RateLimit};
use crate::channels::Directory;

fn quota(rate: RateLimit) -> Quota {
    match rate.period {
        Period::Second => Quota::per_second(rate.count),
        Period::Minute => Quota::per_minute(rate.count),
        Period::Hour => Quota::per_hour(rate.count),
    }
}

/// The delivery pace of each channel.
#[derive(Debug)]
pub struct Paces {
    default: Option<DefaultKeyedRateLimiter<ChannelId>>,
    own: DashMap<ChannelId, (RateLimit, Arc<DefaultDirectRateLimiter>)>,
    /// Webhooks of each paced channel stored to wait for their turn, not yet taken by the
    /// channel's drain. While there are any, a new webhook queues behind them rather than
    /// overtaking them live, so the channel's order holds.
    waiting: DashMap<ChannelId, u64>,
    clock: DefaultClock,
}

impl Paces {
    /// `default` paces every channel without a rate of its own; `None` is no pace.
    pub fn new(default: Option<RateLimit>) -> Self {
        Self {
            default: default.map(|rate| RateLimiter::keyed(quota(rate))),
            own: DashMap::new(),
            waiting: DashMap::new(),
            clock: DefaultClock::default(),
        }
    }

    /// Whether `channel` (its own rate `own`) is paced at all.
    pub fn is_paced(&self, own: Option<RateLimit>) -> bool {
        own.is_some() || self.default.is_some()
    }

    /// Whether a webhook of `channel` may be delivered now, taking its turn if so. `false`:
    /// store it and call [`Paces::queued`]; the drain delivers it at the pace.
    pub fn admit(&self, channel: &ChannelId, own: Option<RateLimit>) -> bool {
        if !self.is_paced(own) {
            return true;
        }
        if self.waiting.get(channel).is_some_and(|n| *n > 0) {
            return false;
        }
        self.take(channel, own).is_ok()
    }

    /// A webhook of `channel` was stored to wait for its turn.
    pub fn queued(&self, channel: &ChannelId) {
        *self.waiting.entry(channel.clone()).or_insert(0) += 1;
    }

    /// Waits for `channel`'s next turn and takes it; at once when it is not paced. Cancel
    /// safe: a turn is taken only when the future completes.
    pub async fn turn(&self, channel: &ChannelId, own: Option<RateLimit>) {
        if !self.is_paced(own) {
            return;
        }
        while let Err(wait) = self.take(channel, own) {
            tokio::time::sleep(wait).await;
        }
    }

    /// The drain took one of `channel`'s queued webhooks.
    pub fn started(&self, channel: &ChannelId) {
        if let Some(mut n) = self.waiting.get_mut(channel) {
            *n = n.saturating_sub(1);
        }
        self.waiting.remove_if(channel, |_, n| *n == 0);
    }

    /// `channel` has nothing due: no webhook waits for its turn.
    pub fn caught_up(&self, channel: &ChannelId) {
        self.waiting.remove(channel);
    }

    /// Takes a turn of `channel` if one is free now; `Err` with the wait until the next.
    fn take(&self, channel: &ChannelId, own: Option<RateLimit>) -> Result<(), Duration> {
        let result = match own {
            None => match &self.default {
                None => return Ok(()),
                Some(limiter) => limiter.check_key(channel),
            },
            Some(rate) => {
                let current = self
                    .own
                    .get(channel)
                    .filter(|entry| entry.0 == rate)
                    .map(|entry| Arc::clone(&entry.1));
                let limiter = current.unwrap_or_else(|| {
                    let limiter = Arc::new(RateLimiter::direct(quota(rate)));
                    self.own
                        .insert(channel.clone(), (rate, Arc::clone(&limiter)));
                    limiter
                });
                limiter.check()
            }
        };
        result.map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forgets channels idle for a whole period and limiters of channels no longer
    /// registered, so names that come and go do not grow the maps.
    pub fn sweep(&self, registered: &Directory) {
        if let Some(limiter) = &self.default {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        self.own.retain(|channel, (rate, _)| {
            registered
                .get(channel)
                .is_some_and(|record| record.settings.rate_limit == Some(*rate))
        });
    }
}

/// Webhooks per source address (IPv6 by /64) that nobody vouches for: those to channels
/// nobody registered (open mode) and those whose signature failed. Only on a public relay:
/// one abuser is held back without touching the senders of registered channels.
#[derive(Debug)]
pub struct SourceLimits {
    limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
    clock: DefaultClock,
}

impl SourceLimits {
    /// `rate` per source; `None` (a relay on loopback, or `--source-rate-limit off`) is no
    /// limit.
    pub fn new(rate: Option<RateLimit>) -> Self {
        Self {
            limiter: rate.map(|rate| RateLimiter::keyed(quota(rate))),
            clock: DefaultClock::default(),
        }
    }

    /// Counts one webhook from `source`: `Err` with the wait until the next one is taken
    /// when it is over its rate. A webhook of unknown source is not counted.
    pub fn check(&self, source: Option<IpAddr>) -> Result<(), Duration> {
        let (Some(limiter), Some(ip)) = (&self.limiter, source) else {
            return Ok(());
        };
        limiter
            .check_key(&crate::auth::key(ip))
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forgets sources idle for a whole period.
    pub fn sweep(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(name: &str) -> ChannelId {
        ChannelId::parse(name).expect("valid")
    }

    #[test]
    fn a_channel_over_its_pace_queues_and_others_do_not() {
        let paces = Paces::new(Some("3/m".parse().expect("valid")));
        let (a, b) = (channel("a"), channel("b"));
        for _ in 0..3 {
            assert!(paces.admit(&a, None));
        }
        assert!(!paces.admit(&a, None), "over the pace");
        let wait = paces.take(&a, None).expect_err("over the pace");
        assert!(
            wait > Duration::from_secs(15) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert!(paces.admit(&b, None), "channels are paced apart");
    }

    #[test]
    fn webhooks_waiting_for_their_turn_are_not_overtaken() {
        let paces = Paces::new(None);
        let a = channel("a");
        let slow: RateLimit = "1000/s".parse().expect("valid");
        paces.queued(&a);
        assert!(
            !paces.admit(&a, Some(slow)),
            "one is waiting: queue behind it"
        );
        paces.started(&a);
        assert!(paces.admit(&a, Some(slow)), "none waiting, a turn is free");
        paces.queued(&a);
        paces.queued(&a);
        paces.caught_up(&a);
        assert!(paces.admit(&a, Some(slow)));
        assert!(paces.admit(&a, None), "unpaced channels never wait");
    }

    #[tokio::test]
    async fn a_turn_comes_at_the_pace() {
        let paces = Paces::new(None);
        let a = channel("a");
        let rate: RateLimit = "20/s".parse().expect("valid");
        let started = std::time::Instant::now();
        while paces.admit(&a, Some(rate)) {}
        paces.turn(&a, Some(rate)).await;
        assert!(
            started.elapsed() >= Duration::from_millis(40),
            "one turn per 50 ms"
        );
    }

    #[test]
    fn a_rate_of_its_own_replaces_the_default_and_can_change() {
        let paces = Paces::new(None);
        let a = channel("a");
        assert!(
            (0..100).all(|_| paces.admit(&a, None)),
            "no default: no pace"
        );
        let one: RateLimit = "1/h".parse().expect("valid");
        assert!(paces.admit(&a, Some(one)));
        assert!(!paces.admit(&a, Some(one)));
        let two: RateLimit = "2/h".parse().expect("valid");
        assert!(paces.admit(&a, Some(two)), "a new rate starts afresh");
        paces.sweep(&Directory::default());
        assert!(paces.own.is_empty(), "unregistered channels are forgotten");
    }

    #[test]
    fn sources_are_limited_apart_and_ipv6_by_its_64() {
        let limits = SourceLimits::new(Some("2/m".parse().expect("valid")));
        let ip = |s: &str| Some(s.parse::<IpAddr>().expect("literal"));
        assert!(limits.check(ip("192.0.2.1")).is_ok());
        assert!(limits.check(ip("192.0.2.1")).is_ok());
        assert!(limits.check(ip("192.0.2.1")).is_err());
        assert!(limits.check(ip("192.0.2.2")).is_ok(), "another address");
        assert!(limits.check(ip("2001:db8::1")).is_ok());
        assert!(limits.check(ip("2001:db8::2")).is_ok());
        assert!(limits.check(ip("2001:db8::3")).is_err(), "the same /64");
        assert!(
            limits.check(None).is_ok(),
            "unknown sources are not counted"
        );
        let off = SourceLimits::new(None);
        assert!((0..100).all(|_| off.check(ip("192.0.2.1")).is_ok()));
    }
}
