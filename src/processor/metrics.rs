//! The processor's Prometheus metrics.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type, TimeUnit};
use edgeflow_ingest::decode::DeadReason;
use edgeflow_sinks::QueryShape;
use edgeflow_stream::engine::QueryInfo;

/// Upper bounds (ms) of the emit-latency histogram buckets.
const BUCKETS_MS: [u64; 12] = [
    10, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS_MS.len() + 1],
    sum_ms: u64,
    n: u64,
}

/// Counters of one processor.
#[derive(Default)]
pub struct Metrics {
    rows_in: Mutex<BTreeMap<String, u64>>,
    dead: [AtomicU64; DeadReason::ALL.len()],
    pub(crate) sink_rows: AtomicU64,
    pub(crate) sink_errors: AtomicU64,
    /// Continuous queries that failed and stopped.
    pub(crate) query_failures: AtomicU64,
    /// Failed attempts to write a dead letter (each retried or fatal).
    pub(crate) dead_letter_errors: AtomicU64,
    /// Per query: time from a window's end to its rows leaving the processor.
    latency: Mutex<BTreeMap<String, Histogram>>,
}

impl Metrics {
    pub(crate) fn observe_batch(&self, stream: &str, rows: usize) {
        *self
            .rows_in
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(stream.to_string())
            .or_default() += rows as u64;
    }

    pub(crate) fn observe_dead_letter(&self, r: DeadReason) {
        self.dead[r.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Emit latency of windowed rows: now − (window start + window length).
    pub(crate) fn observe_emit(&self, shape: &QueryShape, b: &RecordBatch, now: i64) {
        let (Some(col), Some(len)) = (shape.window_column, shape.window_len_ms) else {
            return;
        };
        let Ok(ms) = cast(
            b.column(col),
            &DataType::Timestamp(TimeUnit::Millisecond, None),
        )
        .and_then(|a| cast(&a, &DataType::Int64)) else {
            return;
        };
        let starts = ms.as_primitive::<Int64Type>();
        let mut all = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        let h = all.entry(shape.query.clone()).or_default();
        for s in starts.values().iter() {
            let lat = (now - (s + len)).max(0) as u64;
            let i = BUCKETS_MS
                .iter()
                .position(|b| lat <= *b)
                .unwrap_or(BUCKETS_MS.len());
            h.counts[i] += 1;
            h.sum_ms += lat;
            h.n += 1;
        }
    }

    /// Prometheus text format.
    pub fn render(&self, node: &str, queries: &[QueryInfo], now: i64) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "# HELP edgeflow_processor_rows_in_total Rows read from Kafka, per stream."
        );
        let _ = writeln!(o, "# TYPE edgeflow_processor_rows_in_total counter");
        for (s, n) in self
            .rows_in
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                o,
                "edgeflow_processor_rows_in_total{{node=\"{node}\",stream=\"{s}\"}} {n}"
            );
        }
        let _ = writeln!(
            o,
            "# HELP edgeflow_processor_dead_letters_total Records that did not decode, by reason."
        );
        let _ = writeln!(o, "# TYPE edgeflow_processor_dead_letters_total counter");
        for r in DeadReason::ALL {
            let n = self.dead[r.index()].load(Ordering::Relaxed);
            let _ = writeln!(
                o,
                "edgeflow_processor_dead_letters_total{{node=\"{node}\",reason=\"{r}\"}} {n}"
            );
        }
        let _ = writeln!(o, "# TYPE edgeflow_processor_sink_rows_total counter");
        let _ = writeln!(
            o,
            "edgeflow_processor_sink_rows_total{{node=\"{node}\"}} {}",
            self.sink_rows.load(Ordering::Relaxed)
        );
        for (metric, help, v) in [
            (
                "sink_errors_total",
                "Failed sink writes (transient ones are retried).",
                &self.sink_errors,
            ),
            (
                "query_failures_total",
                "Continuous queries that failed and stopped.",
                &self.query_failures,
            ),
            (
                "dead_letter_write_errors_total",
                "Failed attempts to write a dead letter.",
                &self.dead_letter_errors,
            ),
        ] {
            let _ = writeln!(o, "# HELP edgeflow_processor_{metric} {help}");
            let _ = writeln!(o, "# TYPE edgeflow_processor_{metric} counter");
            let _ = writeln!(
                o,
                "edgeflow_processor_{metric}{{node=\"{node}\"}} {}",
                v.load(Ordering::Relaxed)
            );
        }
        for (metric, help) in [
            ("query_rows_in_total", "Rows a continuous query read."),
            ("query_rows_out_total", "Rows a continuous query emitted."),
            (
                "query_late_rows_total",
                "Rows later than the allowed lateness.",
            ),
            ("query_open_groups", "(key, window) groups held in memory."),
            (
                "query_failed",
                "1 when the query failed and stopped (its error is in /queries).",
            ),
            (
                "query_watermark_lag_seconds",
                "Processing time minus the query's watermark.",
            ),
        ] {
            let _ = writeln!(o, "# HELP edgeflow_processor_{metric} {help}");
            let kind = if metric.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            let _ = writeln!(o, "# TYPE edgeflow_processor_{metric} {kind}");
            for q in queries {
                let v = match metric {
                    "query_rows_in_total" => q.stats.rows_in as f64,
                    "query_rows_out_total" => q.stats.rows_out as f64,
                    "query_late_rows_total" => q.stats.late_rows as f64,
                    "query_open_groups" => q.stats.open_groups as f64,
                    "query_failed" => u8::from(q.error.is_some()).into(),
                    _ => match q.watermark {
                        Some(w) => (now - w) as f64 / 1000.0,
                        None => continue,
                    },
                };
                let _ = writeln!(
                    o,
                    "edgeflow_processor_{metric}{{node=\"{node}\",query=\"{}\"}} {v}",
                    q.name
                );
            }
        }
        let _ = writeln!(o, "# HELP edgeflow_processor_emit_latency_seconds Time from a window's end to its rows leaving the processor.");
        let _ = writeln!(
            o,
            "# TYPE edgeflow_processor_emit_latency_seconds histogram"
        );
        for (q, h) in self
            .latency
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let mut cum = 0;
            for (i, b) in BUCKETS_MS.iter().enumerate() {
                cum += h.counts[i];
                let _ = writeln!(o, "edgeflow_processor_emit_latency_seconds_bucket{{node=\"{node}\",query=\"{q}\",le=\"{}\"}} {cum}", *b as f64 / 1000.0);
            }
            let _ = writeln!(o, "edgeflow_processor_emit_latency_seconds_bucket{{node=\"{node}\",query=\"{q}\",le=\"+Inf\"}} {}", h.n);
            let _ = writeln!(
                o,
                "edgeflow_processor_emit_latency_seconds_sum{{node=\"{node}\",query=\"{q}\"}} {}",
                h.sum_ms as f64 / 1000.0
            );
            let _ = writeln!(
                o,
                "edgeflow_processor_emit_latency_seconds_count{{node=\"{node}\",query=\"{q}\"}} {}",
                h.n
            );
        }
        o
    }
}
