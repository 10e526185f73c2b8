//! Request metrics, served in Prometheus text format on `GET /metrics`.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    service: String,
    operation: String,
    /// `ok`, or the AWS error code returned.
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    service: String,
    operation: String,
}

/// The edge's metrics. Cheap to clone; all clones share the same counters.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<LatencyLabels, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kura");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<LatencyLabels, Histogram>::new_with_constructor(|| {
            // 50 µs to ~1.6 s in doublings: covers cached crypto calls and slow control-plane
            // writes alike.
            Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
        });
        registry.register(
            "api_requests",
            "API requests served, by service, operation and outcome",
            requests.clone(),
        );
        registry.register(
            "api_request_duration_seconds",
            "Time from receiving a request to sending its response",
            latency.clone(),
        );
        Self {
            registry: Arc::new(registry),
            requests,
            latency,
        }
    }

    pub fn observe(&self, service: &str, operation: &str, outcome: &str, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                service: service.to_owned(),
                operation: operation.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        self.latency
            .get_or_create(&LatencyLabels {
                service: service.to_owned(),
                operation: operation.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_labels() {
        let metrics = Metrics::new();
        metrics.observe("kms", "Encrypt", "ok", Duration::from_micros(200));
        let text = metrics.render();
        assert!(text.contains(
            "kura_api_requests_total{service=\"kms\",operation=\"Encrypt\",outcome=\"ok\"} 1"
        ));
        assert!(text.contains("kura_api_request_duration_seconds_count"));
    }
}
