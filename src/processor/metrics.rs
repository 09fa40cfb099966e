//! The processor's metrics, exposed in the OpenMetrics text format.
//!
//! Counters are `prometheus-client` metrics kept here and counted as the node works;
//! the per-query rows, groups, failure and watermark lag are read from the engine at
//! scrape time ([`QueryMetrics`]). Each scrape registers both in a registry under the
//! prefix `edgeflow_processor` with the node's name as the label `node`, and encodes it.
//! Counters are registered without `_total` and the encoder appends it, so the samples
//! are named `edgeflow_processor_<name>_total` as listed in the README (the `# HELP` and
//! `# TYPE` lines name the family, without the suffix).

use std::borrow::Cow;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type, TimeUnit};
use edgeflow_ingest::decode::DeadReason;
use edgeflow_sinks::QueryShape;
use edgeflow_stream::engine::QueryInfo;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// The media type of `GET /metrics`: OpenMetrics text, which `prometheus-client` writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds (ms) of the emit-latency histogram buckets (exposed in seconds).
const BUCKETS_MS: [u64; 12] = [
    10, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000,
];

/// One label, such as `stream="readings"`.
type Label<V> = [(&'static str, V); 1];

fn emit_latency_histogram() -> Histogram {
    Histogram::new(BUCKETS_MS.map(|ms| ms as f64 / 1000.0))
}

/// Counters of one processor.
#[derive(Debug)]
pub struct Metrics {
    /// Rows read from Kafka, per stream (counted per batch).
    rows_in: Family<Label<String>, Counter>,
    /// Dead letters: the family holds every reason's counter, made up front so each is
    /// exposed (0 until it happens); `dead` holds the same counters by reason index.
    dead_letters: Family<Label<&'static str>, Counter>,
    dead: [Counter; DeadReason::ALL.len()],
    pub(crate) sink_rows: Counter,
    /// Identities deleted at sinks (rows that stopped existing).
    pub(crate) sink_retractions: Counter,
    pub(crate) sink_errors: Counter,
    /// Continuous queries that failed and stopped.
    pub(crate) query_failures: Counter,
    /// Failed attempts to write a dead letter (each retried or fatal).
    pub(crate) dead_letter_errors: Counter,
    /// Per query: time from a window's end to its rows leaving the processor.
    emit_latency: Family<Label<String>, Histogram, fn() -> Histogram>,
    /// Checkpoints completed, and attempts that failed.
    pub(crate) checkpoints: Counter,
    pub(crate) checkpoint_failures: Counter,
    /// The last complete checkpoint: its duration, size and time.
    pub(crate) checkpoint_seconds: Gauge<f64, AtomicU64>,
    pub(crate) checkpoint_bytes: Gauge,
    pub(crate) checkpoint_timestamp: Gauge<f64, AtomicU64>,
    /// Time the restore from a checkpoint took at start, and damaged epochs skipped.
    pub(crate) restore_seconds: Gauge<f64, AtomicU64>,
    pub(crate) checkpoints_skipped: Counter,
    /// At restore: records between the checkpoint's offsets and the partitions' ends
    /// (read again, at most), and records retention deleted before they were read.
    pub(crate) restore_replay_records: Gauge,
    pub(crate) records_lost_to_retention: Counter,
    /// In a cluster: partitions this node reads, the generation it last folded,
    /// partitions taken over and released, and how long the last take-over took.
    pub(crate) cluster_partitions: Gauge,
    pub(crate) cluster_generation: Gauge,
    pub(crate) cluster_acquired: Counter,
    pub(crate) cluster_released: Counter,
    pub(crate) cluster_acquire_seconds: Gauge<f64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        let dead_letters = Family::<Label<&'static str>, Counter>::default();
        let dead =
            DeadReason::ALL.map(|r| dead_letters.get_or_create_owned(&[("reason", r.as_str())]));
        Metrics {
            rows_in: Family::default(),
            dead_letters,
            dead,
            sink_rows: Counter::default(),
            sink_retractions: Counter::default(),
            sink_errors: Counter::default(),
            query_failures: Counter::default(),
            dead_letter_errors: Counter::default(),
            emit_latency: Family::new_with_constructor(emit_latency_histogram),
            checkpoints: Counter::default(),
            checkpoint_failures: Counter::default(),
            checkpoint_seconds: Gauge::default(),
            checkpoint_bytes: Gauge::default(),
            checkpoint_timestamp: Gauge::default(),
            restore_seconds: Gauge::default(),
            checkpoints_skipped: Counter::default(),
            restore_replay_records: Gauge::default(),
            records_lost_to_retention: Counter::default(),
            cluster_partitions: Gauge::default(),
            cluster_generation: Gauge::default(),
            cluster_acquired: Counter::default(),
            cluster_released: Counter::default(),
            cluster_acquire_seconds: Gauge::default(),
        }
    }
}

impl Metrics {
    pub(crate) fn observe_batch(&self, stream: &str, rows: usize) {
        self.rows_in
            .get_or_create(&[("stream", stream.to_string())])
            .inc_by(rows as u64);
    }

    pub(crate) fn observe_dead_letter(&self, r: DeadReason) {
        self.dead[r.index()].inc();
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
        let h = self
            .emit_latency
            .get_or_create_owned(&[("query", shape.query.clone())]);
        for s in starts.values().iter() {
            let lat_ms = (now - (s + len)).max(0);
            h.observe(lat_ms as f64 / 1000.0);
        }
    }

    /// The OpenMetrics text exposition (ends with `# EOF`): these counters and the
    /// per-query values of `queries`, labelled with the node's name.
    pub fn render(&self, node: &str, queries: &[QueryInfo], now: i64) -> String {
        let mut r = Registry::with_prefix_and_labels(
            "edgeflow_processor",
            [(Cow::Borrowed("node"), Cow::Owned(node.to_owned()))].into_iter(),
        );
        r.register(
            "rows_in",
            "Rows read from Kafka, per stream",
            self.rows_in.clone(),
        );
        r.register(
            "dead_letters",
            "Dead letters, by reason: records that did not decode, event times too far ahead, rows no window can hold",
            self.dead_letters.clone(),
        );
        r.register("sink_rows", "Rows written to sinks", self.sink_rows.clone());
        r.register(
            "sink_retractions",
            "Retracted identities deleted at sinks (a window that stopped passing HAVING, \
             sessions merged)",
            self.sink_retractions.clone(),
        );
        r.register(
            "sink_errors",
            "Failed sink writes (transient ones are retried)",
            self.sink_errors.clone(),
        );
        r.register(
            "query_failures",
            "Continuous queries that failed and stopped",
            self.query_failures.clone(),
        );
        r.register(
            "dead_letter_write_errors",
            "Failed attempts to write a dead letter",
            self.dead_letter_errors.clone(),
        );
        r.register(
            "emit_latency_seconds",
            "Time from a window's end to its rows leaving the processor",
            self.emit_latency.clone(),
        );
        r.register(
            "checkpoints",
            "Checkpoints completed",
            self.checkpoints.clone(),
        );
        r.register(
            "checkpoint_failures",
            "Checkpoints that could not be written (retried at the next interval)",
            self.checkpoint_failures.clone(),
        );
        r.register(
            "checkpoint_duration_seconds",
            "How long the last complete checkpoint took",
            self.checkpoint_seconds.clone(),
        );
        r.register(
            "checkpoint_bytes",
            "The size of the last complete checkpoint's state files",
            self.checkpoint_bytes.clone(),
        );
        r.register(
            "checkpoint_timestamp_seconds",
            "When the last complete checkpoint was taken (Unix time; its age is time() minus this)",
            self.checkpoint_timestamp.clone(),
        );
        r.register(
            "restore_duration_seconds",
            "How long restoring from the last checkpoint took at start",
            self.restore_seconds.clone(),
        );
        r.register(
            "checkpoints_skipped",
            "Damaged checkpoints passed over at restore (the one before was used)",
            self.checkpoints_skipped.clone(),
        );
        r.register(
            "restore_replay_records",
            "At the restore: records from the checkpoint's offsets to the partitions' ends \
             (what the node reads again, at most, before it is current)",
            self.restore_replay_records.clone(),
        );
        r.register(
            "records_lost_to_retention",
            "Records the topic's retention deleted after the last checkpoint and before the \
             node read them (found at restore)",
            self.records_lost_to_retention.clone(),
        );
        r.register(
            "cluster_partitions",
            "In a cluster: partitions this node reads now",
            self.cluster_partitions.clone(),
        );
        r.register(
            "cluster_generation",
            "In a cluster: the assignment's generation as this node last folded it",
            self.cluster_generation.clone(),
        );
        r.register(
            "cluster_partitions_acquired",
            "In a cluster: partitions this node took over (from a checkpoint, or new)",
            self.cluster_acquired.clone(),
        );
        r.register(
            "cluster_partitions_released",
            "In a cluster: partitions this node handed over",
            self.cluster_released.clone(),
        );
        r.register(
            "cluster_acquire_duration_seconds",
            "In a cluster: how long the last take-over took (finding, reading and restoring \
             the partition's state)",
            self.cluster_acquire_seconds.clone(),
        );
        r.register_collector(Box::new(QueryMetrics::new(queries, now)));
        let mut s = String::with_capacity(4096);
        // Writing to a String cannot fail.
        let _ = encode(&mut s, &r);
        s
    }
}

/// One continuous query's values, read from the engine for one scrape.
#[derive(Debug)]
struct QueryRow {
    name: String,
    rows_in: u64,
    rows_out: u64,
    late_rows: u64,
    open_groups: u64,
    failed: bool,
    /// Processing time minus the watermark, in seconds; none before the first watermark.
    watermark_lag: Option<f64>,
}

/// The per-query metrics, computed at scrape time from the engine's [`QueryInfo`]s
/// (a query that was dropped is gone from the next scrape).
#[derive(Debug)]
struct QueryMetrics(Vec<QueryRow>);

impl QueryMetrics {
    fn new(queries: &[QueryInfo], now: i64) -> Self {
        QueryMetrics(
            queries
                .iter()
                .map(|q| QueryRow {
                    name: q.name.clone(),
                    rows_in: q.stats.rows_in,
                    rows_out: q.stats.rows_out,
                    late_rows: q.stats.late_rows,
                    open_groups: q.stats.open_groups,
                    failed: q.error.is_some(),
                    watermark_lag: q.watermark.map(|w| (now - w) as f64 / 1000.0),
                })
                .collect(),
        )
    }
}

impl Collector for QueryMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Help texts end with a period here: a collector's are written as given (the
        // registry adds the period to those of registered metrics).
        let e = &mut encoder;
        let qs = &self.0;
        per_query(
            e,
            "query_rows_in",
            "Rows a continuous query read.",
            qs.iter().map(|q| (&*q.name, ConstCounter::new(q.rows_in))),
        )?;
        per_query(
            e,
            "query_rows_out",
            "Rows a continuous query emitted.",
            qs.iter().map(|q| (&*q.name, ConstCounter::new(q.rows_out))),
        )?;
        per_query(
            e,
            "query_late_rows",
            "Rows later than the allowed lateness.",
            qs.iter()
                .map(|q| (&*q.name, ConstCounter::new(q.late_rows))),
        )?;
        per_query(
            e,
            "query_open_groups",
            "(key, window) groups held in memory.",
            qs.iter()
                .map(|q| (&*q.name, ConstGauge::new(q.open_groups))),
        )?;
        per_query(
            e,
            "query_failed",
            "1 when the query failed and stopped (its error is in /queries).",
            qs.iter()
                .map(|q| (&*q.name, ConstGauge::new(u64::from(q.failed)))),
        )?;
        per_query(
            e,
            "query_watermark_lag_seconds",
            "Processing time minus the query's watermark.",
            qs.iter()
                .filter_map(|q| Some((&*q.name, ConstGauge::new(q.watermark_lag?)))),
        )
    }
}

/// Encodes one metric family with a sample per query (labelled `query`); nothing when
/// there are no samples, as the registry does for an empty family.
fn per_query<'q, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl Iterator<Item = (&'q str, M)>,
) -> Result<(), std::fmt::Error> {
    let samples: Vec<_> = samples.collect();
    let Some((_, first)) = samples.first() else {
        return Ok(());
    };
    let mut family = encoder.encode_descriptor(name, help, None, first.metric_type())?;
    for (query, metric) in &samples {
        metric.encode(family.encode_family(&[("query", *query)])?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::TimestampMillisecondArray;
    use datafusion::arrow::datatypes::{Field, Schema};
    use edgeflow_stream::query::QueryStats;

    use super::*;

    fn query(name: &str, watermark: Option<i64>, error: Option<&str>) -> QueryInfo {
        QueryInfo {
            name: name.into(),
            stream: "readings".into(),
            sql: String::new(),
            schema: Arc::new(Schema::empty()),
            identity: Vec::new(),
            windowed: true,
            window_column: Some(0),
            window_len_ms: Some(60_000),
            allowed_lateness_ms: 0,
            late_schema: None,
            watermark,
            stats: QueryStats {
                rows_in: 40,
                rows_out: 4,
                late_rows: 1,
                open_groups: 3,
            },
            error: error.map(Into::into),
        }
    }

    #[test]
    fn every_metric_is_exposed_under_its_name_as_openmetrics_text() {
        let m = Metrics::default();
        m.observe_batch("readings", 10);
        m.observe_batch("readings", 5);
        m.observe_batch("events", 2);
        m.observe_dead_letter(DeadReason::Malformed);
        m.observe_dead_letter(DeadReason::Malformed);
        m.observe_dead_letter(DeadReason::NullEventTime);
        m.sink_rows.inc_by(12);
        m.sink_errors.inc();
        m.query_failures.inc();
        m.dead_letter_errors.inc_by(2);
        // Windows [0, 60 s) and [60 s, 120 s), emitted at 120.25 s: 60.25 s and 0.25 s late.
        let schema = Arc::new(Schema::new(vec![Field::new(
            "window_start",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        )]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(TimestampMillisecondArray::from(vec![0, 60_000]))],
        )
        .expect("a batch");
        let shape = QueryShape {
            query: "per_minute".into(),
            schema,
            identity: vec![0],
            window_column: Some(0),
            allowed_lateness_ms: 0,
            window_len_ms: Some(60_000),
        };
        m.observe_emit(&shape, &batch, 120_250);
        let now = 1_000_000;
        let queries = [
            query("per_minute", Some(now - 1_500), None),
            query("refusing", None, Some("sink `pg` refused")),
        ];
        let text = m.render("processor-1", &queries, now);
        let lines: Vec<&str> = text.lines().collect();
        for want in [
            "# HELP edgeflow_processor_rows_in Rows read from Kafka, per stream.",
            "# TYPE edgeflow_processor_rows_in counter",
            r#"edgeflow_processor_rows_in_total{node="processor-1",stream="readings"} 15"#,
            r#"edgeflow_processor_rows_in_total{node="processor-1",stream="events"} 2"#,
            "# TYPE edgeflow_processor_dead_letters counter",
            r#"edgeflow_processor_dead_letters_total{node="processor-1",reason="malformed"} 2"#,
            r#"edgeflow_processor_dead_letters_total{node="processor-1",reason="null_event_time"} 1"#,
            r#"edgeflow_processor_dead_letters_total{node="processor-1",reason="empty"} 0"#,
            "# TYPE edgeflow_processor_sink_rows counter",
            r#"edgeflow_processor_sink_rows_total{node="processor-1"} 12"#,
            "# TYPE edgeflow_processor_sink_errors counter",
            r#"edgeflow_processor_sink_errors_total{node="processor-1"} 1"#,
            "# TYPE edgeflow_processor_query_failures counter",
            r#"edgeflow_processor_query_failures_total{node="processor-1"} 1"#,
            "# TYPE edgeflow_processor_dead_letter_write_errors counter",
            r#"edgeflow_processor_dead_letter_write_errors_total{node="processor-1"} 2"#,
            "# HELP edgeflow_processor_query_rows_in Rows a continuous query read.",
            "# TYPE edgeflow_processor_query_rows_in counter",
            r#"edgeflow_processor_query_rows_in_total{node="processor-1",query="per_minute"} 40"#,
            r#"edgeflow_processor_query_rows_out_total{node="processor-1",query="per_minute"} 4"#,
            r#"edgeflow_processor_query_late_rows_total{node="processor-1",query="refusing"} 1"#,
            "# TYPE edgeflow_processor_query_open_groups gauge",
            r#"edgeflow_processor_query_open_groups{node="processor-1",query="per_minute"} 3"#,
            "# TYPE edgeflow_processor_query_failed gauge",
            r#"edgeflow_processor_query_failed{node="processor-1",query="per_minute"} 0"#,
            r#"edgeflow_processor_query_failed{node="processor-1",query="refusing"} 1"#,
            "# TYPE edgeflow_processor_query_watermark_lag_seconds gauge",
            r#"edgeflow_processor_query_watermark_lag_seconds{node="processor-1",query="per_minute"} 1.5"#,
            "# TYPE edgeflow_processor_emit_latency_seconds histogram",
            r#"edgeflow_processor_emit_latency_seconds_bucket{node="processor-1",le="0.1",query="per_minute"} 0"#,
            r#"edgeflow_processor_emit_latency_seconds_bucket{node="processor-1",le="0.25",query="per_minute"} 1"#,
            r#"edgeflow_processor_emit_latency_seconds_bucket{node="processor-1",le="60.0",query="per_minute"} 1"#,
            r#"edgeflow_processor_emit_latency_seconds_bucket{node="processor-1",le="300.0",query="per_minute"} 2"#,
            r#"edgeflow_processor_emit_latency_seconds_bucket{node="processor-1",le="+Inf",query="per_minute"} 2"#,
            r#"edgeflow_processor_emit_latency_seconds_sum{node="processor-1",query="per_minute"} 60.5"#,
            r#"edgeflow_processor_emit_latency_seconds_count{node="processor-1",query="per_minute"} 2"#,
        ] {
            assert!(lines.contains(&want), "missing `{want}` in\n{text}");
        }
        assert!(
            !text.contains(r#"watermark_lag_seconds{node="processor-1",query="refusing"}"#),
            "no lag before a watermark\n{text}"
        );
        assert_eq!(lines.last(), Some(&"# EOF"), "{text}");
        // Every sample ends in a number; nothing else but the `# ` lines.
        for l in lines.iter().filter(|l| !l.starts_with("# ")) {
            let v = l.rsplit(' ').next().unwrap_or_default();
            assert!(v.parse::<f64>().is_ok(), "`{l}` does not end in a number");
        }
    }

    #[test]
    fn a_dropped_query_leaves_the_next_scrape() {
        let m = Metrics::default();
        let text = m.render("n", &[query("gone", None, None)], 0);
        assert!(text.contains(r#"edgeflow_processor_query_failed{node="n",query="gone"} 0"#));
        let text = m.render("n", &[], 0);
        assert!(!text.contains("query=\"gone\""), "{text}");
        assert!(
            text.contains(r#"edgeflow_processor_dead_letters_total{node="n",reason="empty"} 0"#),
            "{text}"
        );
    }
}
