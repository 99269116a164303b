//! The gateway's metrics: one `prometheus-client` registry, typed families with labels,
//! served at `GET /metrics` (admins, or a scraper with an admin token) in the text format.
//! A service registers its families when it is built and keeps handles to them; values that
//! another component already counts (the plugin host's compilations) are read at scrape time
//! by a collector. **Invariant:** metric names never change (dashboards and alerts name
//! them); a new one gets the `atelier_` prefix.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The registry while services are built; frozen into [`Metrics`] when the gateway starts.
pub struct MetricsBuilder(Registry);

impl MetricsBuilder {
    pub fn new() -> Self {
        MetricsBuilder(Registry::with_prefix("atelier"))
    }

    /// The lifecycle's families.
    pub fn notebooks(&mut self) -> NotebookMetrics {
        let m = NotebookMetrics::default();
        self.0.register(
            "notebook_auto_stops",
            "Notebooks the gateway stopped by itself since it started, by reason",
            m.auto_stops.clone(),
        );
        m
    }

    /// The real-time services' families (the seed's service metrics, spec/inference.md
    /// §2.15, as raw counters: rates per minute come from PromQL).
    pub fn inference(&mut self) -> InferenceMetrics {
        let m = InferenceMetrics::default();
        let r = &mut self.0;
        r.register(
            "inference_total_called_times",
            "Calls of a real-time service (seed: total_called_times)",
            m.total.clone(),
        );
        r.register(
            "inference_successfully_called_times",
            "Calls answered with a 2xx status (seed: successfully_called_times)",
            m.success.clone(),
        );
        r.register(
            "inference_failed_called_times",
            "Calls answered with another status (seed: failed_called_times)",
            m.failed.clone(),
        );
        r.register(
            "inference_req_count_2xx",
            "2xx responses (seed: req_count_2xx)",
            m.status_2xx.clone(),
        );
        r.register(
            "inference_req_count_4xx",
            "4xx responses (seed: req_count_4xx)",
            m.status_4xx.clone(),
        );
        r.register(
            "inference_req_count_5xx",
            "5xx responses (seed: req_count_5xx)",
            m.status_5xx.clone(),
        );
        r.register(
            "inference_latency_seconds",
            "Time from a call's body read to its answer (seed: avg_latency, tp_99, tp_999)",
            m.latency.clone(),
        );
        m
    }

    /// The plugin host's counters, read at each scrape.
    pub fn plugins(&mut self, host: Arc<atelier_plugins::Host>) {
        self.0.register_collector(Box::new(PluginCollector(host)));
    }

    pub fn build(self) -> Metrics {
        Metrics(Arc::new(self.0))
    }
}

impl Default for MetricsBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// The frozen registry, shared by the API.
#[derive(Clone)]
pub struct Metrics(Arc<Registry>);

impl Metrics {
    /// Everything registered, in the OpenMetrics text format (which Prometheus reads).
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.0);
        text
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// What the notebook lifecycle counts.
#[derive(Clone, Default)]
pub struct NotebookMetrics {
    /// `atelier_notebook_auto_stops_total{reason}`.
    pub auto_stops: Family<ReasonLabel, Counter>,
}

/// The labels of the services' metrics (the seed's dimensions).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub service_id: String,
    pub model_id: String,
}

fn latency_histogram() -> Histogram {
    // 100 µs to about 52 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 20))
}

/// What the real-time services count, per service and model.
#[derive(Clone)]
pub struct InferenceMetrics {
    pub total: Family<ServiceLabels, Counter>,
    pub success: Family<ServiceLabels, Counter>,
    pub failed: Family<ServiceLabels, Counter>,
    pub status_2xx: Family<ServiceLabels, Counter>,
    pub status_4xx: Family<ServiceLabels, Counter>,
    pub status_5xx: Family<ServiceLabels, Counter>,
    pub latency: Family<ServiceLabels, Histogram, fn() -> Histogram>,
}

impl Default for InferenceMetrics {
    fn default() -> Self {
        InferenceMetrics {
            total: Family::default(),
            success: Family::default(),
            failed: Family::default(),
            status_2xx: Family::default(),
            status_4xx: Family::default(),
            status_5xx: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
        }
    }
}

impl InferenceMetrics {
    /// One call of `service_id` answered by `model_id` (empty when it failed before a
    /// version was chosen) with `status`, after `seconds`.
    pub fn record(&self, service_id: &str, model_id: &str, status: u16, seconds: f64) {
        let l = ServiceLabels {
            service_id: service_id.to_string(),
            model_id: model_id.to_string(),
        };
        self.total.get_or_create(&l).inc();
        if (200..300).contains(&status) {
            self.success.get_or_create(&l).inc();
            self.status_2xx.get_or_create(&l).inc();
        } else {
            self.failed.get_or_create(&l).inc();
            if (400..500).contains(&status) {
                self.status_4xx.get_or_create(&l).inc();
            } else if status >= 500 {
                self.status_5xx.get_or_create(&l).inc();
            }
        }
        self.latency.get_or_create(&l).observe(seconds);
    }
}

struct PluginCollector(Arc<atelier_plugins::Host>);

impl std::fmt::Debug for PluginCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PluginCollector")
    }
}

impl Collector for PluginCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let compiled = ConstCounter::new(self.0.compilations());
        let metric = encoder.encode_descriptor(
            "plugin_compilations",
            "Plugin components compiled since the gateway started (0 after a restart: compiled forms are cached on disk)",
            None,
            compiled.metric_type(),
        )?;
        compiled.encode(metric)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_with_their_names_and_labels() {
        let mut b = MetricsBuilder::new();
        let nb = b.notebooks();
        let metrics = b.build();
        nb.auto_stops
            .get_or_create(&ReasonLabel { reason: "idle" })
            .inc();
        nb.auto_stops
            .get_or_create(&ReasonLabel { reason: "idle" })
            .inc();
        let text = metrics.render();
        assert!(
            text.contains("# TYPE atelier_notebook_auto_stops counter"),
            "{text}"
        );
        assert!(
            text.contains("atelier_notebook_auto_stops_total{reason=\"idle\"} 2"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
