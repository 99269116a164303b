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
