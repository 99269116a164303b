//! The gateway's metrics: one `prometheus-client` registry, typed families with labels,
//! served at `GET /metrics` (admins, or a scraper with an admin token) in the text format.
//! A service registers its families when it is built and keeps handles to them; values that
//! another component already counts (the plugin host's compilations) are read at scrape time
//! by a collector. **Invariant:** metric names never change (dashboards and alerts name
//! them); a new one gets the `atelier_` prefix.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
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
        r.register_collector(Box::new(LatencyCollector(m.windows.clone())));
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
    /// The last minute's durations, for `avg_latency`, `tp_99` and `tp_999`.
    pub windows: LatencyWindows,
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
            windows: LatencyWindows::default(),
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
        self.windows.record(l, Instant::now(), seconds * 1000.0);
    }
}

/// The span the seed's latency figures cover.
pub const LATENCY_WINDOW: Duration = Duration::from_secs(60);
/// Durations kept per service and model (8 bytes and an instant each, about 240 KB at
/// most): past it the oldest go first, so above 10,000 calls a minute the figures cover
/// the most recent 10,000 calls rather than the whole minute.
pub const LATENCY_WINDOW_CAP: usize = 10_000;

/// The last minute's call durations per service and model.
#[derive(Clone, Default)]
pub struct LatencyWindows(Arc<RwLock<HashMap<ServiceLabels, Arc<Mutex<Window>>>>>);

#[derive(Default)]
struct Window(VecDeque<(Instant, f64)>);

impl Window {
    fn prune(&mut self, now: Instant) {
        while let Some((at, _)) = self.0.front() {
            if now.saturating_duration_since(*at) < LATENCY_WINDOW {
                break;
            }
            self.0.pop_front();
        }
    }
}

/// The seed's latency figures over a window, in ms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencySummary {
    pub avg: f64,
    pub tp_99: f64,
    pub tp_999: f64,
}

/// The seed's definitions: sorted, the top 1 % (0.1 %) dropped (rounded down: below 100
/// calls nothing is dropped), the largest of the rest.
pub fn summarize(mut ms: Vec<f64>) -> Option<LatencySummary> {
    if ms.is_empty() {
        return None;
    }
    ms.sort_by(f64::total_cmp);
    let n = ms.len();
    let top = |per: usize| ms[n - 1 - n / per];
    Some(LatencySummary {
        avg: ms.iter().sum::<f64>() / n as f64,
        tp_99: top(100),
        tp_999: top(1000),
    })
}

impl LatencyWindows {
    pub fn record(&self, labels: ServiceLabels, now: Instant, ms: f64) {
        let found = self
            .0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&labels)
            .cloned();
        let window = match found {
            Some(w) => w,
            None => self
                .0
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .entry(labels)
                .or_default()
                .clone(),
        };
        let mut w = window.lock().unwrap_or_else(|e| e.into_inner());
        w.prune(now);
        if w.0.len() >= LATENCY_WINDOW_CAP {
            w.0.pop_front();
        }
        w.0.push_back((now, ms));
    }

    /// Each service and model's figures over the window ending `now`; windows left empty
    /// (a service that stopped being called) are dropped.
    pub fn summaries(&self, now: Instant) -> Vec<(ServiceLabels, LatencySummary)> {
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        map.retain(|labels, w| {
            let mut w = w.lock().unwrap_or_else(|e| e.into_inner());
            w.prune(now);
            if let Some(s) = summarize(w.0.iter().map(|(_, ms)| *ms).collect()) {
                out.push((labels.clone(), s));
            }
            !w.0.is_empty()
        });
        out.sort_by(|a, b| (&a.0.service_id, &a.0.model_id).cmp(&(&b.0.service_id, &b.0.model_id)));
        out
    }
}

/// A figure's name, help and how it is read from a summary.
type Figure = (&'static str, &'static str, fn(&LatencySummary) -> f64);

/// `inference_avg_latency`, `inference_tp_99`, `inference_tp_999` (ms, gauges), computed at
/// each scrape from the windows.
struct LatencyCollector(LatencyWindows);

impl std::fmt::Debug for LatencyCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LatencyCollector")
    }
}

impl Collector for LatencyCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let all = self.0.summaries(Instant::now());
        let figures: [Figure; 3] = [
            (
                "inference_avg_latency",
                "Mean duration of the last minute's calls, in ms (seed: avg_latency)",
                |s| s.avg,
            ),
            (
                "inference_tp_99",
                "The last minute's call durations without their slowest 1 %, the largest, in ms (seed: tp_99)",
                |s| s.tp_99,
            ),
            (
                "inference_tp_999",
                "The last minute's call durations without their slowest 0.1 %, the largest, in ms (seed: tp_999)",
                |s| s.tp_999,
            ),
        ];
        for (name, help, figure) in figures {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (labels, s) in &all {
                let family = metric.encode_family(labels)?;
                ConstGauge::new(figure(s)).encode(family)?;
            }
        }
        Ok(())
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

    #[test]
    fn tp_99_of_1_to_100_ms_is_99() {
        let s = summarize((1..=100).map(f64::from).collect()).unwrap();
        assert_eq!(s.tp_99, 99.0);
        assert_eq!(s.tp_999, 100.0);
        assert_eq!(s.avg, 50.5);
        let s = summarize((1..=1000).rev().map(f64::from).collect()).unwrap();
        assert_eq!((s.tp_99, s.tp_999), (990.0, 999.0));
        let s = summarize(vec![7.0]).unwrap();
        assert_eq!((s.avg, s.tp_99, s.tp_999), (7.0, 7.0, 7.0));
        assert_eq!(summarize(Vec::new()), None);
    }

    #[test]
    fn the_window_keeps_the_last_minute_within_its_cap() {
        let w = LatencyWindows::default();
        let l = ServiceLabels {
            service_id: "s".into(),
            model_id: "m".into(),
        };
        let t0 = Instant::now();
        for ms in 1..=100 {
            w.record(l.clone(), t0, f64::from(ms));
        }
        let at = |secs| t0 + Duration::from_secs(secs);
        assert_eq!(w.summaries(at(59))[0].1.tp_99, 99.0);
        // A minute on, they are gone, and so is the service's window.
        w.record(l.clone(), at(30), 500.0);
        assert_eq!(w.summaries(at(61))[0].1.avg, 500.0);
        assert!(w.summaries(at(91)).is_empty());
        // Past the cap the oldest go.
        for i in 0..LATENCY_WINDOW_CAP + 5 {
            w.record(l.clone(), at(100), if i < 5 { 1e6 } else { 1.0 });
        }
        let s = w.summaries(at(100))[0].1;
        assert_eq!((s.avg, s.tp_999), (1.0, 1.0));
    }

    #[test]
    fn latency_figures_render_with_service_labels() {
        let mut b = MetricsBuilder::new();
        let m = b.inference();
        let metrics = b.build();
        m.record("svc-1", "model-1", 200, 0.002);
        let text = metrics.render();
        for name in ["avg_latency", "tp_99", "tp_999"] {
            assert!(
                text.contains(&format!(
                    "atelier_inference_{name}{{service_id=\"svc-1\",model_id=\"model-1\"}} 2.0"
                )),
                "{name}: {text}"
            );
        }
    }
}
