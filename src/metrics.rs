//! Prometheus metrics, exposed at `GET /metrics` in the text exposition format.
//!
//! The `prometheus` crate (the Rust client most exporters use) does the bookkeeping and
//! the encoding; label values come from fixed sets so that no client input can grow the
//! number of series.

use std::time::Duration;

use prometheus::core::{Collector, Desc, Describer};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    in_flight: IntGauge,
    mongo_errors: IntCounterVec,
    insert_batches: Histogram,
}

/// `log_lines_dropped_total`, read from the logger's own count at each scrape: nothing
/// to keep in step, however many scrapes run at once.
struct LogLinesDropped {
    opts: Opts,
    desc: Desc,
}

impl LogLinesDropped {
    fn new() -> Self {
        let opts = Opts::new(
            "log_lines_dropped_total",
            "Log lines dropped because stdout did not take them in time",
        );
        let desc = opts.describe().expect("valid metric");
        LogLinesDropped { opts, desc }
    }
}

impl Collector for LogLinesDropped {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let counter = IntCounter::with_opts(self.opts.clone()).expect("valid metric");
        counter.inc_by(crate::logging::dropped_lines());
        counter.collect()
    }
}

/// Decrements the in-flight gauge when the request is done, however it ends.
pub struct InFlight(IntGauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Every `kind` label of `mongodb_errors_total` (see `StoreError::kind`).
pub const MONGO_ERROR_KINDS: &[&str] = &["unavailable", "duplicate_key", "rejected", "internal"];

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Metrics {
    pub fn new() -> Self {
        let requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests answered, by route, method and status",
            ),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time from a request having arrived in full to its response handed to its \
                 connection (the wait for a worker included; the writing is the event loop's)",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )
        .expect("valid metric");
        let in_flight = IntGauge::new("http_requests_in_flight", "Requests being handled now")
            .expect("valid metric");
        let mongo_errors = IntCounterVec::new(
            Opts::new("mongodb_errors_total", "Failed MongoDB operations, by kind"),
            &["kind"],
        )
        .expect("valid metric");

        let insert_batches = Histogram::with_opts(
            HistogramOpts::new(
                "mongodb_insert_batch_documents",
                "Documents written per insert round trip (concurrent POSTs are grouped)",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]),
        )
        .expect("valid metric");
        // Known label sets start at 0, so that rates and alerts work before the first error.
        for kind in MONGO_ERROR_KINDS {
            mongo_errors.with_label_values(&[*kind]);
        }
        let registry = Registry::new();
        for collector in [
            Box::new(requests.clone()) as Box<dyn Collector>,
            Box::new(latency.clone()),
            Box::new(in_flight.clone()),
            Box::new(mongo_errors.clone()),
            Box::new(insert_batches.clone()),
            Box::new(LogLinesDropped::new()),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        Metrics {
            registry,
            requests,
            latency,
            in_flight,
            mongo_errors,
            insert_batches,
        }
    }

    pub fn in_flight(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    pub fn observe(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let mut status_text = itoa::Buffer::new();
        self.requests
            .with_label_values(&[route, method, status_text.format(status)])
            .inc();
        self.latency
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a failed MongoDB operation; `kind` is one of a few fixed words.
    pub fn mongo_error(&self, kind: &'static str) {
        self.mongo_errors.with_label_values(&[kind]).inc();
    }

    /// Records how many documents one insert round trip wrote.
    pub fn insert_batch(&self, documents: usize) {
        self.insert_batches.observe(documents as f64);
    }

    /// The exposition text and its content type.
    pub fn render(&self) -> (Vec<u8>, &'static str) {
        let mut out = Vec::with_capacity(8 * 1024);
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encoding into memory cannot fail");
        (out, prometheus::TEXT_FORMAT)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mongodb_error_kind_is_exported_from_the_start() {
        let (text, _) = Metrics::new().render();
        let text = String::from_utf8(text).unwrap();
        for kind in MONGO_ERROR_KINDS {
            assert!(
                text.contains(&format!("mongodb_errors_total{{kind=\"{kind}\"}} 0")),
                "{kind}: {text}"
            );
        }
    }

    #[test]
    fn renders_counters_histogram_and_gauge() {
        let m = Metrics::new();
        {
            let _guard = m.in_flight();
            m.observe("/data", "POST", 201, Duration::from_millis(3));
        }
        m.mongo_error("unavailable");
        let (text, content_type) = m.render();
        let text = String::from_utf8(text).unwrap();
        assert!(content_type.starts_with("text/plain"));
        assert!(
            text.contains(r#"http_requests_total{method="POST",route="/data",status="201"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"http_request_duration_seconds_bucket{route="/data",le="0.005"} 1"#),
            "{text}"
        );
        assert!(text.contains("http_requests_in_flight 0"), "{text}");
        assert!(
            text.contains("# TYPE log_lines_dropped_total counter\nlog_lines_dropped_total "),
            "{text}"
        );
        assert!(
            text.contains(r#"mongodb_errors_total{kind="unavailable"} 1"#),
            "{text}"
        );
    }
}
