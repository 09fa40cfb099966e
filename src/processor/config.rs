//! The processor's configuration (`configs/processor.toml`).
//!
//! Every table rejects unknown keys (the error names the key); [`ProcessorConfig::validate`]
//! reports every problem at once. Secrets come from the environment, never from the
//! file: `EDGEFLOW_KAFKA_PROPERTY_<NAME>` sets librdkafka property `<name>` (lower
//! case, `_` → `.`), and `EDGEFLOW_SINK_<SINK>_URL` replaces a sink's `url` (for a
//! PostgreSQL password, say).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;

use anyhow::{bail, Context, Result};
use edgeflow_ingest::format::{ColumnType, Format, FormatKind};
use edgeflow_wire::units::HumanDuration;
use serde::Deserialize;

/// The whole file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessorConfig {
    /// This processor's name (logs, metrics).
    #[serde(default = "default_node_id")]
    pub node_id: String,
    pub kafka: KafkaConfig,
    #[serde(default)]
    pub ingest: IngestConfig,
    #[serde(default)]
    pub server: ServerConfig,
    /// Streams read from Kafka; each is a table in continuous queries.
    #[serde(default)]
    pub streams: Vec<StreamConfig>,
    /// Static reference tables (CSV with a header row, or Parquet).
    #[serde(default)]
    pub tables: Vec<TableConfig>,
    /// Continuous queries started with the processor.
    #[serde(default)]
    pub queries: Vec<QueryConfig>,
    /// Named sinks that queries write to.
    #[serde(default)]
    pub sinks: BTreeMap<String, SinkConfig>,
    /// Where and how often the processor checkpoints.
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    /// Processors that share the streams' partitions (see `docs/cluster.md`).
    #[serde(default)]
    pub cluster: Option<ClusterConfig>,
}

/// The cluster: processors with the same streams coordinate on one control topic.
/// Every processor of a cluster must have the same values here except `capacity`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The single-partition topic the processors coordinate on (created if absent).
    #[serde(default = "default_control_topic")]
    pub control_topic: String,
    /// How often each processor appends a heartbeat.
    #[serde(default = "default_heartbeat_interval")]
    pub heartbeat_interval: HumanDuration,
    /// A processor is dead once another has appended this many heartbeats since its
    /// last one: detection takes about this many heartbeat intervals.
    #[serde(default = "default_dead_after")]
    pub dead_after_heartbeats: u32,
    /// The load balance is re-evaluated every this many heartbeats.
    #[serde(default = "default_rebalance_every")]
    pub rebalance_every: u32,
    /// Partitions move for balance only when `Δ` (the largest gap between a
    /// processor's share of the load and its share of the capacity) exceeds this.
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
    /// Weight of a new load sample in the moving average (above 0, at most 1).
    #[serde(default = "default_smoothing")]
    pub load_smoothing: f64,
    /// Loads below this many rows per second are noise: for balance a partition counts
    /// as at least this, and while every partition is below it nothing moves for load.
    #[serde(default = "default_min_load")]
    pub min_load: f64,
    /// This processor's capacity relative to the others (1.0: equal).
    #[serde(default = "default_capacity")]
    pub capacity: f64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            control_topic: default_control_topic(),
            heartbeat_interval: default_heartbeat_interval(),
            dead_after_heartbeats: default_dead_after(),
            rebalance_every: default_rebalance_every(),
            tolerance: default_tolerance(),
            load_smoothing: default_smoothing(),
            min_load: default_min_load(),
            capacity: default_capacity(),
        }
    }
}

impl ClusterConfig {
    /// The parameters of the fold (the same on every processor).
    pub fn control(&self) -> edgeflow_stream::cluster::ControlConfig {
        edgeflow_stream::cluster::ControlConfig {
            dead_after_heartbeats: self.dead_after_heartbeats,
            rebalance_every: self.rebalance_every,
            tolerance: self.tolerance,
            load_smoothing: self.load_smoothing,
            min_load: self.min_load,
        }
    }

    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.control_topic.trim().is_empty() {
            problems.push("cluster.control_topic: must not be empty".into());
        }
        if self.heartbeat_interval.0.is_zero() {
            problems.push("cluster.heartbeat_interval: must be above 0 (e.g. \"100ms\")".into());
        }
        if !(self.capacity.is_finite() && self.capacity > 0.0) {
            problems.push(format!(
                "cluster.capacity = {}: must be a number above 0 (e.g. 1.0)",
                self.capacity
            ));
        }
        if let Err(e) = self.control().validate() {
            // The fold's own check names its keys; put them under `cluster.`.
            let text = e.to_string();
            let text = text
                .trim_start_matches("invalid configuration: ")
                .trim_start_matches("cluster: ");
            problems.extend(text.split("; ").map(|p| format!("cluster.{p}")));
        }
        problems
    }
}

fn default_control_topic() -> String {
    "edgeflow-control".into()
}
fn default_heartbeat_interval() -> HumanDuration {
    HumanDuration::from_millis(100)
}
fn default_dead_after() -> u32 {
    edgeflow_stream::cluster::ControlConfig::default().dead_after_heartbeats
}
fn default_rebalance_every() -> u32 {
    edgeflow_stream::cluster::ControlConfig::default().rebalance_every
}
fn default_tolerance() -> f64 {
    edgeflow_stream::cluster::ControlConfig::default().tolerance
}
fn default_smoothing() -> f64 {
    edgeflow_stream::cluster::ControlConfig::default().load_smoothing
}
fn default_min_load() -> f64 {
    edgeflow_stream::cluster::ControlConfig::default().min_load
}
fn default_capacity() -> f64 {
    1.0
}

/// Checkpoints: the queries' state, the sinks' unwritten rows and every partition's next
/// offset, so that a restarted processor resumes where it stopped.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// A directory (relative to the working directory), `file:///dir` or
    /// `s3://bucket/prefix` (credentials from `AWS_*`); this node's checkpoints are
    /// under `<url>/<node_id>/`.
    #[serde(default = "default_checkpoint_url")]
    pub url: String,
    /// How often a checkpoint is taken (and once more at a clean shutdown); `0s` turns
    /// checkpoints off: a restart reads the topics again from each stream's `start`.
    #[serde(default = "default_checkpoint_interval")]
    pub interval: HumanDuration,
    /// Complete checkpoints kept; older ones are removed.
    #[serde(default = "default_checkpoint_keep")]
    pub keep: usize,
}

fn default_checkpoint_url() -> String {
    "checkpoints".into()
}
fn default_checkpoint_interval() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(5))
}
fn default_checkpoint_keep() -> usize {
    3
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            url: default_checkpoint_url(),
            interval: default_checkpoint_interval(),
            keep: default_checkpoint_keep(),
        }
    }
}

impl CheckpointConfig {
    /// Whether checkpoints are taken.
    pub fn enabled(&self) -> bool {
        !self.interval.0.is_zero()
    }
}

fn default_node_id() -> String {
    "processor-1".into()
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `host:port,...`
    pub brokers: String,
    /// librdkafka properties for every client (security settings and the like).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// A partition's batch closes at this many rows...
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// ...or when its first row has waited this long.
    #[serde(default = "default_linger")]
    pub linger: HumanDuration,
    /// Records that do not decode go here, with the reason in headers.
    #[serde(default = "default_dead_letter_topic")]
    pub dead_letter_topic: String,
}

fn default_batch_size() -> usize {
    8192
}
fn default_linger() -> HumanDuration {
    "50ms"
        .parse()
        .unwrap_or(HumanDuration(std::time::Duration::from_millis(50)))
}
fn default_dead_letter_topic() -> String {
    "edgeflow.processor.dead-letters".into()
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            batch_size: default_batch_size(),
            linger: default_linger(),
            dead_letter_topic: default_dead_letter_topic(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// PostgreSQL wire protocol (psql, Grafana). Empty: off.
    #[serde(default = "default_pg_listen")]
    pub pg_listen: String,
    /// HTTP: `POST /sql`, `GET /metrics`, `GET /health`, `GET /queries`. Empty: off.
    #[serde(default = "default_http_listen")]
    pub http_listen: String,
}

fn default_pg_listen() -> String {
    "127.0.0.1:5433".into()
}
fn default_http_listen() -> String {
    "127.0.0.1:8081".into()
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            pg_listen: default_pg_listen(),
            http_listen: default_http_listen(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// Table name in SQL.
    pub name: String,
    pub topic: String,
    /// `edge-aggregates`, `edge-readings` or `json`.
    pub format: String,
    /// For `json`: column name → `string`, `double`, `bigint`, `boolean` or `timestamp`.
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    /// The event-time column (default `window_start`, `ts`).
    #[serde(default)]
    pub event_time: Option<String>,
    /// Partitions this processor owns (empty: every partition of the topic).
    #[serde(default)]
    pub partitions: Vec<i32>,
    /// Where to start without a checkpoint: `beginning` or `end`.
    #[serde(default = "default_start")]
    pub start: String,
    /// The column the Kafka message key holds (the edge keys records by sensor). In a
    /// cluster, a query's group keys must include it, so that each window takes the
    /// rows of one partition and can move with it.
    #[serde(default = "default_message_key")]
    pub message_key: String,
    /// How far the watermark trails the largest event time.
    #[serde(default = "default_delay")]
    pub watermark_delay: HumanDuration,
    /// A partition caught up (nothing in Kafka past what was read) and without data
    /// this long stops holding the watermark back; one with a backlog never does.
    #[serde(default = "default_idle")]
    pub idle_timeout: HumanDuration,
    /// Records whose event time is further than this ahead of the processor's clock
    /// are dead-lettered (`future_event_time`) instead of moving the watermark.
    #[serde(default = "default_max_future")]
    pub max_future: HumanDuration,
    /// Key columns of the `<name>_latest` table (empty: no such table).
    #[serde(default)]
    pub latest_key: Vec<String>,
    /// Rows kept in the latest table.
    #[serde(default = "default_latest_rows")]
    pub latest_rows: usize,
}

fn default_start() -> String {
    "beginning".into()
}
fn default_message_key() -> String {
    "sensor".into()
}
fn default_delay() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(5))
}
fn default_idle() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(30))
}
fn default_max_future() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(3600))
}
fn default_latest_rows() -> usize {
    1_000_000
}

impl StreamConfig {
    /// The stream's format (validated).
    pub fn format(&self) -> Result<Format> {
        let kind: FormatKind = self.format.parse()?;
        let mut cols = Vec::new();
        for (name, t) in &self.columns {
            let t: ColumnType = t.parse().with_context(|| format!("column `{name}`"))?;
            cols.push((name.clone(), t));
        }
        Ok(Format::new(kind, cols, self.event_time.as_deref())?)
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    pub name: String,
    /// A `.csv` (header row) or `.parquet` file.
    pub path: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryConfig {
    /// The query's name: its live table in pull queries, its table in sinks.
    pub name: String,
    /// A `SELECT` over one stream (see the SQL reference in the README).
    pub sql: String,
    /// How long a closed window still accepts late rows (and is emitted again).
    #[serde(default = "default_lateness")]
    pub allowed_lateness: HumanDuration,
    /// Rows kept in the live table.
    #[serde(default = "default_live_rows")]
    pub live_rows: usize,
    /// Sinks (names from `[sinks]`) that receive the rows.
    #[serde(default)]
    pub sinks: Vec<String>,
    /// Sinks that receive late rows (the side output).
    #[serde(default)]
    pub late_sinks: Vec<String>,
}

fn default_lateness() -> HumanDuration {
    HumanDuration(std::time::Duration::ZERO)
}
fn default_live_rows() -> usize {
    100_000
}

/// A sink.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum SinkConfig {
    /// JSON lines on standard output.
    Stdout {},
    /// Upserts into PostgreSQL.
    Postgres {
        /// `postgres://user@host:port/db` (password from `EDGEFLOW_SINK_<NAME>_URL`).
        url: String,
        /// Query name → table name (default: the query's name).
        #[serde(default)]
        tables: BTreeMap<String, String>,
    },
    /// Parquet files on object storage.
    Parquet {
        /// A directory, `file:///dir` or `s3://bucket/prefix`.
        url: String,
        #[serde(default = "default_roll")]
        roll_interval: HumanDuration,
        #[serde(default = "default_max_rows_per_file")]
        max_rows_per_file: usize,
    },
    /// Records on a Kafka topic.
    Kafka { topic: String },
}

fn default_roll() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(3600))
}
fn default_max_rows_per_file() -> usize {
    1_000_000
}

impl ProcessorConfig {
    /// Reads, applies the environment, validates.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let mut c = Self::parse(&text).with_context(|| format!("{}", path.display()))?;
        c.apply_env(std::env::vars());
        c.validate()
            .with_context(|| format!("{}", path.display()))?;
        Ok(c)
    }

    /// Parses TOML text (no environment, no validation).
    pub fn parse(text: &str) -> Result<Self> {
        Ok(toml::from_str(text)?)
    }

    /// Applies secrets from environment variables.
    pub fn apply_env(&mut self, vars: impl IntoIterator<Item = (String, String)>) {
        for (k, v) in vars {
            if let Some(p) = k.strip_prefix("EDGEFLOW_KAFKA_PROPERTY_") {
                if !p.is_empty() {
                    self.kafka
                        .properties
                        .insert(p.to_ascii_lowercase().replace('_', "."), v);
                }
            } else if let Some(rest) = k.strip_prefix("EDGEFLOW_SINK_") {
                if let Some(name) = rest.strip_suffix("_URL") {
                    for (sink, cfg) in self.sinks.iter_mut() {
                        if sink.to_ascii_uppercase().replace('-', "_") == name {
                            match cfg {
                                SinkConfig::Postgres { url, .. }
                                | SinkConfig::Parquet { url, .. } => *url = v.clone(),
                                _ => {}
                            }
                        }
                    }
                }
            }
        }
    }

    /// Checks everything; reports every problem at once.
    pub fn validate(&self) -> Result<()> {
        let mut problems: Vec<String> = Vec::new();
        if self.kafka.brokers.trim().is_empty() {
            problems.push("kafka.brokers: must not be empty".into());
        }
        problems.extend(edgeflow_wire::kafka::reserved_property_problems(
            "kafka.properties",
            self.kafka.properties.keys(),
            &[
                &edgeflow_wire::kafka::GUARANTEE_PROPERTIES[..],
                &edgeflow_wire::kafka::NO_COMMIT_PROPERTIES[..],
                // The source learns partitions' backlogs from the statistics, on its
                // own interval.
                &["bootstrap.servers", "statistics.interval.ms"],
            ]
            .concat(),
        ));
        if self.ingest.batch_size == 0 {
            problems.push("ingest.batch_size: must be at least 1".into());
        }
        if self.checkpoint.enabled() {
            if self.checkpoint.url.trim().is_empty() {
                problems.push("checkpoint.url: must not be empty (or set checkpoint.interval = \"0s\" to turn checkpoints off)".into());
            }
            if self.checkpoint.keep == 0 {
                problems.push("checkpoint.keep: must be at least 1".into());
            }
        }
        for (key, addr) in [
            ("server.pg_listen", &self.server.pg_listen),
            ("server.http_listen", &self.server.http_listen),
        ] {
            if !addr.is_empty() && addr.parse::<SocketAddr>().is_err() {
                problems.push(format!("{key}: `{addr}` is not host:port (e.g. 127.0.0.1:5433), or empty to turn it off"));
            }
        }
        let mut names = BTreeSet::new();
        let mut taken = |what: &str, name: &str, problems: &mut Vec<String>| {
            if !names.insert(name.to_string()) {
                problems.push(format!(
                    "{what} `{name}`: the name is already used by a stream, table or query"
                ));
            }
        };
        for (i, s) in self.streams.iter().enumerate() {
            taken("streams", &s.name, &mut problems);
            if let Err(e) = s.format() {
                problems.push(format!("streams[{i}] ({}): {e:#}", s.name));
            }
            if !matches!(s.start.as_str(), "beginning" | "end") {
                problems.push(format!(
                    "streams[{i}].start: `{}`; allowed: beginning, end",
                    s.start
                ));
            }
            if s.max_future.as_millis_i64() <= 0 {
                problems.push(format!(
                    "streams[{i}].max_future: must be positive (e.g. \"1h\"): a gateway clock a moment ahead would dead-letter its records"
                ));
            }
            if s.partitions.iter().any(|p| *p < 0) {
                problems.push(format!(
                    "streams[{i}].partitions: partitions are numbered from 0"
                ));
            }
        }
        for (i, t) in self.tables.iter().enumerate() {
            taken("tables", &t.name, &mut problems);
            if !(t.path.ends_with(".csv") || t.path.ends_with(".parquet")) {
                problems.push(format!(
                    "tables[{i}].path: `{}` must end in .csv or .parquet",
                    t.path
                ));
            }
        }
        for (i, q) in self.queries.iter().enumerate() {
            taken("queries", &q.name, &mut problems);
            for s in q.sinks.iter().chain(&q.late_sinks) {
                if !self.sinks.contains_key(s) {
                    problems.push(format!(
                        "queries[{i}] ({}): sink `{s}` is not defined; defined sinks: {}",
                        q.name,
                        self.sinks.keys().cloned().collect::<Vec<_>>().join(", ")
                    ));
                }
            }
        }
        for (name, s) in &self.sinks {
            match s {
                SinkConfig::Parquet {
                    roll_interval,
                    max_rows_per_file,
                    ..
                } => {
                    if roll_interval.as_millis_i64() <= 0 {
                        problems.push(format!("sinks.{name}.roll_interval: must be positive"));
                    }
                    if *max_rows_per_file == 0 {
                        problems.push(format!(
                            "sinks.{name}.max_rows_per_file: must be at least 1"
                        ));
                    }
                }
                SinkConfig::Postgres { url, .. } if !url.starts_with("postgres") => {
                    problems.push(format!(
                        "sinks.{name}.url: expected postgres://user@host:port/database"
                    ));
                }
                _ => {}
            }
        }
        if let Some(c) = &self.cluster {
            problems.extend(c.problems());
            if !self.checkpoint.enabled() {
                problems.push(
                    "checkpoint.interval: a cluster needs checkpoints (a partition moves with \
                     its last checkpoint); set an interval above 0s"
                        .into(),
                );
            }
            for (name, sink) in &self.sinks {
                if matches!(sink, SinkConfig::Parquet { .. }) {
                    problems.push(format!(
                        "sinks.{name}: Parquet sinks cannot run in a cluster yet (a moved \
                         partition's rows would be written by two nodes, and their commits \
                         are not fenced); use PostgreSQL or Kafka, or run without [cluster]"
                    ));
                }
            }
            for s in &self.streams {
                if !s.partitions.is_empty() {
                    problems.push(format!(
                        "streams.{}.partitions: in a cluster the nodes share every partition \
                         of the topic; remove the list",
                        s.name
                    ));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            bail!(
                "invalid processor configuration:\n  - {}",
                problems.join("\n  - ")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [kafka]
        brokers = "localhost:9092"
        [[streams]]
        name = "aggs"
        topic = "edgeflow.aggregates"
        format = "edge-aggregates"
    "#;

    #[test]
    fn a_minimal_config_loads_with_defaults() {
        let c = ProcessorConfig::parse(MINIMAL).unwrap();
        c.validate().unwrap();
        assert_eq!(c.ingest.batch_size, 8192);
        assert_eq!(c.streams[0].watermark_delay.as_millis_i64(), 5_000);
        assert_eq!(c.streams[0].max_future.as_millis_i64(), 3_600_000);
    }

    #[test]
    fn max_future_takes_a_duration_and_must_be_positive() {
        let c = ProcessorConfig::parse(&format!("{MINIMAL}max_future = \"10m\"\n")).unwrap();
        assert_eq!(c.streams[0].max_future.as_millis_i64(), 600_000);
        let c = ProcessorConfig::parse(&format!("{MINIMAL}max_future = \"0s\"\n")).unwrap();
        let e = format!("{:#}", c.validate().unwrap_err());
        assert!(e.contains("streams[0].max_future"), "{e}");
        let e = ProcessorConfig::parse(&format!("{MINIMAL}max_future = \"soon\"\n")).unwrap_err();
        assert!(format!("{e:#}").contains("max_future"), "{e:#}");
    }

    #[test]
    fn an_unknown_key_is_an_error_naming_it() {
        let e = ProcessorConfig::parse(&format!("{MINIMAL}\nbatch_sise = 3\n")).unwrap_err();
        assert!(format!("{e:#}").contains("batch_sise"), "{e:#}");
    }

    #[test]
    fn a_cluster_section_has_defaults_and_bad_values_are_named() {
        let c = ProcessorConfig::parse(&format!("{MINIMAL}\n[cluster]\n")).unwrap();
        c.validate().expect("the defaults are valid");
        let cl = c.cluster.expect("a cluster");
        assert_eq!(cl.control_topic, "edgeflow-control");
        assert_eq!(
            cl.heartbeat_interval.0,
            std::time::Duration::from_millis(100)
        );
        assert_eq!(
            cl.control(),
            edgeflow_stream::cluster::ControlConfig::default()
        );
        let c = ProcessorConfig::parse(&format!(
            "{MINIMAL}\n[cluster]\ndead_after_heartbeats = 1\ntolerance = 2.0\ncapacity = 0\nheartbeat_interval = \"0s\"\n"
        ))
        .unwrap();
        let e = format!("{:#}", c.validate().unwrap_err());
        for key in [
            "cluster.dead_after_heartbeats = 1",
            "cluster.tolerance = 2",
            "cluster.capacity = 0",
            "cluster.heartbeat_interval",
        ] {
            assert!(e.contains(key), "{key}: {e}");
        }
        let e =
            ProcessorConfig::parse(&format!("{MINIMAL}\n[cluster]\nheartbeat = 3\n")).unwrap_err();
        assert!(format!("{e:#}").contains("heartbeat"), "{e:#}");
    }

    #[test]
    fn a_cluster_refuses_what_it_cannot_move_yet() {
        let text = format!(
            "{MINIMAL}partitions = [0, 1]\n[checkpoint]\ninterval = \"0s\"\n[sinks.lake]\ntype = \"parquet\"\nurl = \"lake\"\n[cluster]\n"
        );
        let c = ProcessorConfig::parse(&text).unwrap();
        let e = format!("{:#}", c.validate().unwrap_err());
        for key in [
            "checkpoint.interval",
            "sinks.lake",
            "streams.aggs.partitions",
        ] {
            assert!(e.contains(key), "{key}: {e}");
        }
        let without = text.replace("[cluster]\n", "");
        ProcessorConfig::parse(&without)
            .unwrap()
            .validate()
            .expect("all of it is fine without a cluster");
    }

    #[tokio::test]
    async fn a_cluster_refuses_a_query_whose_windows_span_partitions() {
        let query = |group: &str| {
            format!(
                "{MINIMAL}[[queries]]\nname = \"q\"\nsql = \"SELECT {group}, tumble(window_start, INTERVAL '1 minute') AS m, count(*) AS n FROM aggs GROUP BY {group}, tumble(window_start, INTERVAL '1 minute')\"\n[cluster]\n"
            )
        };
        let by_site = ProcessorConfig::parse(&query("site")).unwrap();
        let e = format!("{:#}", crate::processor::check(&by_site).await.unwrap_err());
        assert!(
            e.contains("query `q`") && e.contains("message key `sensor`"),
            "{e}"
        );
        let by_sensor = ProcessorConfig::parse(&query("sensor")).unwrap();
        crate::processor::check(&by_sensor)
            .await
            .expect("keyed by the message key: it can move");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = format!(
            "{MINIMAL}\nstart = \"middle\"\n[[queries]]\nname = \"aggs\"\nsql = \"SELECT 1\"\nsinks = [\"nowhere\"]\n"
        );
        let c = ProcessorConfig::parse(&text).unwrap();
        let e = format!("{:#}", c.validate().unwrap_err());
        assert!(e.contains("start"), "{e}");
        assert!(e.contains("nowhere"), "{e}");
        assert!(e.contains("already used"), "{e}");
    }

    #[test]
    fn properties_that_would_change_delivery_or_offsets_are_refused_by_name() {
        let text = MINIMAL.replace(
            "brokers = \"localhost:9092\"",
            "brokers = \"localhost:9092\"\nproperties = { acks = \"1\", \"enable.auto.commit\" = \"true\", \"client.id\" = \"p\", \"statistics.interval.ms\" = \"100\" }",
        );
        let c = ProcessorConfig::parse(&text).unwrap();
        let e = format!("{:#}", c.validate().unwrap_err());
        assert!(e.contains("kafka.properties.acks:"), "{e}");
        assert!(e.contains("kafka.properties.enable.auto.commit:"), "{e}");
        assert!(
            e.contains("kafka.properties.statistics.interval.ms:"),
            "{e}"
        );
        assert!(!e.contains("client.id"), "{e}");
    }

    #[test]
    fn secrets_come_from_the_environment() {
        let text =
            format!("{MINIMAL}\n[sinks.pg]\ntype = \"postgres\"\nurl = \"postgres://u@h/db\"\n");
        let mut c = ProcessorConfig::parse(&text).unwrap();
        c.apply_env([
            (
                "EDGEFLOW_SINK_PG_URL".to_string(),
                "postgres://u:secret@h/db".to_string(),
            ),
            (
                "EDGEFLOW_KAFKA_PROPERTY_SASL_PASSWORD".to_string(),
                "pw".to_string(),
            ),
        ]);
        match &c.sinks["pg"] {
            SinkConfig::Postgres { url, .. } => assert!(url.contains("secret")),
            _ => unreachable!(),
        }
        assert_eq!(c.kafka.properties["sasl.password"], "pw");
    }
}
