//! Limits against floods: webhooks per channel per period, and webhooks in progress.
//!
//! Rates are counted with `governor`'s GCRA limiters: one keyed limiter for every channel on
//! the server's `--rate-limit` (swept of idle channels), and one limiter per channel with a
//! rate of its own.

use std::time::Duration;

use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use protocol::ChannelId;

use crate::channels::{Directory, Period, RateLimit};

/// Webhook rates per channel.
#[derive(Debug)]
pub struct RateLimits {
    default: Option<DefaultKeyedRateLimiter<ChannelId>>,
    own: DashMap<ChannelId, (RateLimit, DefaultDirectRateLimiter)>,
    clock: DefaultClock,
}

fn quota(rate: RateLimit) -> Quota {
    match rate.period {
        Period::Second => Quota::per_second(rate.count),
        Period::Minute => Quota::per_minute(rate.count),
        Period::Hour => Quota::per_hour(rate.count),
    }
}

impl RateLimits {
    /// `default` applies to every channel without a rate of its own; `None` is no limit.
    pub fn new(default: Option<RateLimit>) -> Self {
        Self {
            default: default.map(|rate| RateLimiter::keyed(quota(rate))),
            own: DashMap::new(),
            clock: DefaultClock::default(),
        }
    }

    /// Counts one webhook for `channel`, whose own rate is `own`; `Err` with the wait before
    /// the next one is accepted when it is over its rate.
    pub fn check(&self, channel: &ChannelId, own: Option<RateLimit>) -> Result<(), Duration> {
        let result = match own {
            None => match &self.default {
                None => return Ok(()),
                Some(limiter) => limiter.check_key(channel),
            },
            Some(rate) => {
                let current = self.own.get(channel).filter(|entry| entry.0 == rate);
                let entry = match current {
                    Some(entry) => entry,
                    None => {
                        self.own
                            .insert(channel.clone(), (rate, RateLimiter::direct(quota(rate))));
                        return self.check(channel, own);
                    }
                };
                entry.1.check()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(name: &str) -> ChannelId {
        ChannelId::parse(name).expect("valid")
    }

    #[test]
    fn a_channel_over_its_rate_waits_and_others_do_not() {
        let limits = RateLimits::new(Some("3/m".parse().expect("valid")));
        let (a, b) = (channel("a"), channel("b"));
        for _ in 0..3 {
            assert!(limits.check(&a, None).is_ok());
        }
        let wait = limits.check(&a, None).expect_err("over the rate");
        assert!(
            wait > Duration::from_secs(15) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert!(limits.check(&b, None).is_ok(), "channels are counted apart");
    }

    #[test]
    fn a_rate_of_its_own_replaces_the_default_and_can_change() {
        let limits = RateLimits::new(None);
        let a = channel("a");
        assert!(
            (0..100).all(|_| limits.check(&a, None).is_ok()),
            "no default: no limit"
        );
        let one: RateLimit = "1/h".parse().expect("valid");
        assert!(limits.check(&a, Some(one)).is_ok());
        assert!(limits.check(&a, Some(one)).is_err());
        let two: RateLimit = "2/h".parse().expect("valid");
        assert!(
            limits.check(&a, Some(two)).is_ok(),
            "a new rate starts afresh"
        );
        limits.sweep(&Directory::default());
        assert!(limits.own.is_empty(), "unregistered channels are forgotten");
    }
}
