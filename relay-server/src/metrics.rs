//! Prometheus metrics, served at `GET /metrics` (OpenMetrics text, which Prometheus reads).
//!
//! Counters are bumped where things happen (ingress, auth); gauges (agents, queues) are read
//! from the registry and the store when scraped. The `channel` label names registered channels
//! only: unregistered (open mode) channels share the label `-`, so random channel names cannot
//! grow the label set without bound.

use std::borrow::Cow;
use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use protocol::ChannelId;

use crate::AppState;
use crate::error::Error;

/// The label of channels nobody registered.
pub const UNREGISTERED: &str = "-";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    channel: Cow<'static, str>,
    class: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DomainLabels {
    domain: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabels {
    channel: String,
}

/// Every metric the server exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Histogram,
    agents: Gauge,
    queued: Family<ChannelLabels, Gauge>,
    bytes: Family<DirectionLabels, Counter>,
    /// The `in` and `out` series of `bytes`, looked up once: they are counted on every
    /// webhook, and the family is never cleared, so the handle stays the family's own.
    bytes_in: OnceLock<Counter>,
    bytes_out: OnceLock<Counter>,
    rejected: Family<ReasonLabels, Counter>,
    unrouted: Family<UnroutedLabels, Counter>,
    node: Family<NodeLabels, Gauge>,
    certificate_expiry: Family<DomainLabels, Gauge>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UnroutedLabels {
    channel: Cow<'static, str>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("hookrelay");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "webhooks",
            "Webhooks answered, by channel and status class of the answer",
            requests.clone(),
        );
        // 1 ms to about 33 s.
        let latency = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "delivery_duration_seconds",
            "Time from a webhook's arrival to the target's answer, for live deliveries",
            latency.clone(),
        );
        let agents = Gauge::default();
        registry.register("agents_connected", "Agents connected", agents.clone());
        let queued = Family::<ChannelLabels, Gauge>::default();
        registry.register(
            "queue_depth",
            "Webhooks waiting for an agent or a retry, by channel",
            queued.clone(),
        );
        let bytes = Family::<DirectionLabels, Counter>::default();
        registry.register(
            "body_bytes",
            "Body bytes received from senders (in) and returned to them (out)",
            bytes.clone(),
        );
        let rejected = Family::<ReasonLabels, Counter>::default();
        registry.register("rejected", "Requests refused, by reason", rejected.clone());
        // By channel only: an event type is whatever a sender writes, unbounded as a label.
        let unrouted = Family::<UnroutedLabels, Counter>::default();
        registry.register(
            "unrouted",
            "Webhooks stored unrouted: agents were connected and none takes their event type",
            unrouted.clone(),
        );
        let node = Family::<NodeLabels, Gauge>::default();
        registry.register(
            "node_info",
            "This server's --node-id, as the label of a series that is always 1",
            node.clone(),
        );
        let certificate_expiry = Family::<DomainLabels, Gauge>::default();
        registry.register(
            "tls_certificate_expiry_seconds",
            "When the ACME certificate being served expires (Unix time), by name on it",
            certificate_expiry.clone(),
        );
        Self {
            certificate_expiry,
            registry,
            requests,
            latency,
            agents,
            queued,
            bytes,
            bytes_in: OnceLock::new(),
            bytes_out: OnceLock::new(),
            rejected,
            unrouted,
            node,
        }
    }
}

/// The `channel` label for `channel`: its name when registered.
pub fn channel_label(state: &AppState, channel: &ChannelId) -> String {
    label(channel, state.channels.get(channel).is_some()).into_owned()
}

/// The `channel` label of `channel`, already known to be `registered` or not; the shared
/// label of unregistered channels costs no allocation.
pub fn label(channel: &ChannelId, registered: bool) -> Cow<'static, str> {
    if registered {
        Cow::Owned(channel.as_str().to_owned())
    } else {
        Cow::Borrowed(UNREGISTERED)
    }
}

impl Metrics {
    /// A webhook answered with `status`; `live` when the answer is the target's own.
    pub fn answered(
        &self,
        channel: impl Into<Cow<'static, str>>,
        status: u16,
        live: Option<Duration>,
    ) {
        let class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        let channel = channel.into();
        self.requests
            .get_or_create(&RequestLabels { channel, class })
            .inc();
        if let Some(elapsed) = live {
            self.latency.observe(elapsed.as_secs_f64());
        }
    }

    /// Names this server (`--node-id`) in the metrics.
    pub fn node(&self, id: &str) {
        let labels = NodeLabels {
            node: id.to_owned(),
        };
        self.node.get_or_create(&labels).set(1);
    }

    /// A webhook of `channel` (registered or not) stored unrouted.
    pub fn unrouted(&self, channel: &ChannelId, registered: bool) {
        let channel = label(channel, registered);
        self.unrouted
            .get_or_create(&UnroutedLabels { channel })
            .inc();
    }

    /// A request refused for `reason`.
    pub fn rejected(&self, reason: &'static str) {
        self.rejected.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// A webhook refused with `error`, if the error is a refusal (not a failure to deliver).
    pub fn refused(&self, error: &Error) {
        let reason = match error {
            Error::NotFound | Error::UnknownChannel(_) => "unknown_channel",
            Error::InvalidChannel(_) => "invalid_channel",
            Error::BodyTooLarge(_) => "body_too_large",
            Error::BodyTimeout => "body_timeout",
            Error::BodyRead => "body_read",
            Error::SourceRateLimited { .. } => "source_rate_limit",
            Error::ChannelFull(_) => "channel_full",
            Error::DiskLow(_) => "disk_low",
            Error::Busy => "busy",
            Error::SourceNotAllowed(_) => "source_not_allowed",
            Error::Signature(_) => "signature",
            _ => return,
        };
        self.rejected(reason);
    }

    pub fn bytes_in(&self, n: usize) {
        self.bytes(n, "in", &self.bytes_in);
    }

    pub fn bytes_out(&self, n: usize) {
        self.bytes(n, "out", &self.bytes_out);
    }

    /// Counts `n` bytes in the `direction` series, created on its first use as before.
    fn bytes(&self, n: usize, direction: &'static str, series: &OnceLock<Counter>) {
        series
            .get_or_init(|| {
                self.bytes
                    .get_or_create(&DirectionLabels { direction })
                    .clone()
            })
            .inc_by(n as u64);
    }

    /// The metrics as OpenMetrics text, after reading the gauges.
    pub async fn render(&self, state: &AppState) -> Result<String, Error> {
        self.agents
            .set(i64::try_from(state.registry.total_agents()).unwrap_or(i64::MAX));
        let depths = state.store.queue_depths().await?;
        self.queued.clear();
        for (channel, depth) in depths {
            let channel = channel_label(state, &channel);
            self.queued
                .get_or_create(&ChannelLabels { channel })
                .inc_by(i64::try_from(depth).unwrap_or(i64::MAX));
        }
        if let Some(acme) = state.acme.get() {
            self.certificate_expiry.clear();
            if let Some(not_after) = acme.not_after() {
                for domain in acme.domains() {
                    let labels = DomainLabels {
                        domain: domain.clone(),
                    };
                    self.certificate_expiry
                        .get_or_create(&labels)
                        .set(not_after);
                }
            }
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .map_err(|e| Error::BadRequest(format!("metrics could not be encoded: {e}")))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_counted_by_class_and_refusals_by_reason() {
        let metrics = Metrics::default();
        metrics.answered("a".to_owned(), 201, Some(Duration::from_millis(3)));
        metrics.answered("a".to_owned(), 204, None);
        metrics.answered("-".to_owned(), 502, None);
        metrics.refused(&Error::Busy);
        metrics.refused(&Error::AgentGone);
        metrics.bytes_in(10);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &metrics.registry).expect("encodes");
        assert!(
            out.contains(r#"hookrelay_webhooks_total{channel="a",class="2xx"} 2"#),
            "{out}"
        );
        assert!(out.contains(r#"hookrelay_webhooks_total{channel="-",class="5xx"} 1"#));
        assert!(out.contains(r#"hookrelay_rejected_total{reason="busy"} 1"#));
        assert!(
            !out.contains("agent_gone"),
            "a failed delivery is no refusal"
        );
        assert!(out.contains("hookrelay_delivery_duration_seconds_count 1"));
        assert!(out.contains(r#"hookrelay_body_bytes_total{direction="in"} 10"#));
    }
}
