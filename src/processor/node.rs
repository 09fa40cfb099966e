//! A processor node: its streams, queries and sinks, and the statements that change
//! them. Where rows go is in [`super::delivery`], the loop that feeds the node in
//! [`super::run`], the `edgeflow_queries` table in [`super::queries_table`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use datafusion::arrow::array::RecordBatch;
use datafusion::prelude::SessionContext;
use edgeflow_ingest::resume::{fresh, resume, Resume};
use edgeflow_ingest::source::{Assignment, StartOffset};
use edgeflow_sinks::{QueryShape, SinkRef};
use edgeflow_stream::engine::{Engine, QueryDecl, QueryInfo, StreamDecl};
use edgeflow_wire::clock::now_ms;
use edgeflow_wire::kafka::client_config;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio::sync::Mutex;

use edgeflow_stream::checkpoint::CheckpointStore;

use super::cluster_table::ClusterTable;
use super::config::{ProcessorConfig, SinkConfig};
use super::control::Control;
use super::delivery::{take_dead, Route};
use super::metrics::Metrics;
use super::queries_table::QueriesTable;

/// Options of a query created at run time.
#[derive(Clone, Debug, Default)]
pub struct QueryOptions {
    pub allowed_lateness_ms: i64,
    pub live_rows: usize,
    pub sinks: Vec<String>,
    pub late_sinks: Vec<String>,
}

/// What a statement returned.
pub enum Executed {
    Rows(Vec<RecordBatch>),
    Done(&'static str),
}

/// A running processor.
pub struct Node {
    pub(super) engine: Arc<Mutex<Engine>>,
    pull: SessionContext,
    sinks: BTreeMap<String, SinkRef>,
    pub(super) routes: StdMutex<BTreeMap<String, Route>>,
    pub(super) metrics: Metrics,
    /// topic → stream name.
    pub(super) topics: BTreeMap<String, String>,
    pub(super) assignments: Vec<Assignment>,
    pub(super) config: ProcessorConfig,
    /// Where checkpoints go (`None`: checkpoints are off).
    pub(super) checkpoints: Option<Arc<CheckpointStore>>,
    /// With checkpoints on, each partition's offset where reading starts: its next
    /// offset in the checkpoint the node started from, or where the stream config
    /// starts a partition the checkpoint does not hold, resolved to an offset.
    pub(super) start_offsets: BTreeMap<(String, i32), i64>,
    /// In a cluster, the member's fold of the control log, once joined
    /// (`edgeflow_cluster`).
    pub(super) cluster_view:
        Arc<std::sync::OnceLock<tokio::sync::watch::Receiver<crate::cluster::View>>>,
}

/// The checkpoint file of a sink's state for a query.
pub(super) fn sink_file(sink: &str, query: &str) -> String {
    format!("sink={sink}/query={query}.arrow")
}

/// The checkpoint store of `config`, if checkpoints are on: this node's prefix under
/// `checkpoint.url`.
fn checkpoint_store(config: &ProcessorConfig) -> Result<Option<Arc<CheckpointStore>>> {
    if !config.checkpoint.enabled() {
        return Ok(None);
    }
    checkpoint_store_of(config, &config.node_id).map(|s| Some(Arc::new(s)))
}

/// The checkpoint store of node `node_id` under `checkpoint.url` (in a cluster, every
/// node reads the others' to take their partitions over).
pub(super) fn checkpoint_store_of(
    config: &ProcessorConfig,
    node_id: &str,
) -> Result<CheckpointStore> {
    let c = &config.checkpoint;
    let (store, root) = edgeflow_sinks::open_store(&c.url)
        .with_context(|| format!("checkpoint.url = {}", c.url))?;
    Ok(CheckpointStore::new(store, root.join(node_id), c.keep))
}

fn build_sink(name: &str, cfg: &SinkConfig, config: &ProcessorConfig) -> Result<SinkRef> {
    use edgeflow_sinks::{
        kafka::KafkaSink, parquet::ParquetSink, postgres::PostgresSink, stdout::StdoutSink,
    };
    Ok(match cfg {
        SinkConfig::Stdout {} => Arc::new(StdoutSink::new(name)),
        SinkConfig::Postgres { url, tables } => Arc::new(PostgresSink::new(
            name,
            url,
            tables.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        )),
        SinkConfig::Parquet {
            url,
            roll_interval,
            max_rows_per_file,
        } => Arc::new(
            ParquetSink::new(name, url, roll_interval.as_millis_i64(), *max_rows_per_file)
                .with_context(|| format!("sink `{name}`"))?,
        ),
        SinkConfig::Kafka { topic } => Arc::new(
            KafkaSink::new(name, &config.kafka.brokers, topic, &config.kafka.properties)
                .with_context(|| format!("sink `{name}`"))?,
        ),
    })
}

/// The partitions of `topic` (from the broker's metadata).
pub(crate) fn topic_partitions(
    consumer: &BaseConsumer,
    config: &ProcessorConfig,
    topic: &str,
) -> Result<Vec<i32>> {
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .with_context(|| format!("cannot read the metadata of topic `{topic}` from {}; is Kafka up? check kafka.brokers", config.kafka.brokers))?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| anyhow!("topic `{topic}` does not exist"))?;
    if t.partitions().is_empty() {
        bail!("topic `{topic}` does not exist or has no partitions");
    }
    Ok(t.partitions().iter().map(|p| p.id()).collect())
}

/// The log start and end offsets of a partition now.
pub(super) fn partition_ends(
    consumer: &BaseConsumer,
    config: &ProcessorConfig,
    topic: &str,
    partition: i32,
) -> Result<(i64, i64)> {
    consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(10))
        .with_context(|| {
            format!(
                "cannot read the offsets of topic `{topic}` partition {partition} from {}; \
                 is Kafka up? check kafka.brokers",
                config.kafka.brokers
            )
        })
}

/// Where a partition with a checkpoint resumes: its checkpointed offset checked against
/// what the broker holds of the partition now ([`edgeflow_ingest::resume`]).
pub(super) fn resume_from_checkpoint(
    consumer: &BaseConsumer,
    config: &ProcessorConfig,
    topic: &str,
    partition: i32,
    checkpointed: i64,
) -> Result<Resume> {
    let (log_start, end) = partition_ends(consumer, config, topic, partition)?;
    let r = resume(topic, partition, checkpointed, log_start, end)?;
    if r.lost > 0 {
        tracing::error!(
            topic,
            partition,
            checkpointed,
            log_start,
            lost = r.lost,
            "records the checkpoint had not reached were deleted by the topic's retention \
             while the node was down; resuming at the log start"
        );
    }
    Ok(r)
}

impl Node {
    /// Builds the engine, tables, sinks and the configured queries.
    pub async fn build(config: ProcessorConfig) -> Result<Arc<Node>> {
        let now = now_ms();
        let restore_started = std::time::Instant::now();
        let checkpoints = checkpoint_store(&config)?;
        // In a cluster the node starts with no partition: it takes those the cluster
        // gives it, each from its last holder's checkpoint.
        let cluster = config.cluster.is_some();
        let restored = match &checkpoints {
            Some(_) if cluster => None,
            Some(c) => c.restore().await.with_context(|| {
                format!(
                    "reading the last checkpoint under checkpoint.url = {}",
                    config.checkpoint.url
                )
            })?,
            None => None,
        };
        let mut engine = Engine::new();
        let mut topics = BTreeMap::new();
        let mut assignments = Vec::new();
        let consumer: BaseConsumer =
            client_config(&config.kafka.brokers, &config.kafka.properties, &[]).create()?;
        // Records between the checkpoint and the partitions' ends, and records retention
        // deleted before they were read.
        let (mut replay, mut lost) = (0, 0);
        let mut start_offsets = BTreeMap::new();
        for s in &config.streams {
            let format = s.format().with_context(|| format!("stream `{}`", s.name))?;
            engine.add_stream(StreamDecl {
                name: s.name.clone(),
                format: format.clone(),
                watermark_delay_ms: s.watermark_delay.as_millis_i64(),
                idle_timeout_ms: s.idle_timeout.as_millis_i64(),
                latest_key: s.latest_key.clone(),
                latest_rows: s.latest_rows,
            })?;
            let parts = if cluster {
                Vec::new()
            } else if s.partitions.is_empty() {
                topic_partitions(&consumer, &config, &s.topic)?
            } else {
                s.partitions.clone()
            };
            for p in parts {
                engine.add_partition(&s.name, p, now)?;
                assignments.push(Assignment {
                    topic: s.topic.clone(),
                    partition: p,
                    start: match restored
                        .as_ref()
                        .and_then(|r| r.manifest.next_offset(&s.topic, p))
                    {
                        // Where the checkpointed state ends.
                        Some(o) => {
                            let r = resume_from_checkpoint(&consumer, &config, &s.topic, p, o)
                                .with_context(|| format!("stream `{}`", s.name))?;
                            replay += r.replay;
                            lost += r.lost;
                            start_offsets.insert((s.topic.clone(), p), r.offset);
                            StartOffset::At(r.offset)
                        }
                        // Checkpoints on: an offset the next checkpoint can record.
                        None if checkpoints.is_some() => {
                            let (log_start, end) = partition_ends(&consumer, &config, &s.topic, p)
                                .with_context(|| format!("stream `{}`", s.name))?;
                            let r = fresh(s.start == "end", log_start, end);
                            replay += r.replay;
                            start_offsets.insert((s.topic.clone(), p), r.offset);
                            StartOffset::At(r.offset)
                        }
                        None if s.start == "end" => StartOffset::End,
                        None => StartOffset::Beginning,
                    },
                    format: format.clone(),
                    max_future: Some(s.max_future.0),
                });
            }
            topics.insert(s.topic.clone(), s.name.clone());
        }
        for t in &config.tables {
            engine.add_reference_table(&t.name, &t.path).await?;
        }
        let mut sinks = BTreeMap::new();
        for (name, cfg) in &config.sinks {
            sinks.insert(name.clone(), build_sink(name, cfg, &config)?);
        }
        let pull = engine.pull_context();
        let engine = Arc::new(Mutex::new(engine));
        pull.register_table(
            "edgeflow_queries",
            Arc::new(QueriesTable {
                engine: engine.clone(),
            }),
        )?;
        let cluster_view = Arc::new(std::sync::OnceLock::new());
        pull.register_table(
            "edgeflow_cluster",
            Arc::new(ClusterTable {
                node: config.node_id.clone(),
                view: cluster_view.clone(),
            }),
        )?;
        let node = Arc::new(Node {
            engine,
            pull,
            sinks,
            routes: StdMutex::new(BTreeMap::new()),
            metrics: Metrics::default(),
            topics,
            assignments,
            config: config.clone(),
            start_offsets,
            checkpoints,
            cluster_view,
        });
        for q in &config.queries {
            node.create_query(
                &q.name,
                &q.sql,
                QueryOptions {
                    allowed_lateness_ms: q.allowed_lateness.as_millis_i64(),
                    live_rows: q.live_rows,
                    sinks: q.sinks.clone(),
                    late_sinks: q.late_sinks.clone(),
                },
            )
            .await
            .with_context(|| format!("query `{}`", q.name))?;
        }
        if cluster {
            let engine = node.engine.lock().await;
            for s in &config.streams {
                engine
                    .check_movable(&s.name, &s.message_key)
                    .with_context(|| format!("stream `{}` in a cluster", s.name))?;
            }
        }
        if let Some(r) = restored {
            node.restore(&r.files, now)
                .await
                .with_context(|| format!("restoring checkpoint epoch {}", r.manifest.epoch))?;
            let took = restore_started.elapsed().as_secs_f64();
            node.metrics.restore_seconds.set(took);
            node.metrics.restore_replay_records.set(replay);
            node.metrics
                .records_lost_to_retention
                .inc_by(lost.unsigned_abs());
            tracing::info!(
                epoch = r.manifest.epoch,
                files = r.files.len(),
                partitions = r.manifest.sources.len(),
                seconds = took,
                replay,
                "restored from the last checkpoint"
            );
        }
        if let Some(c) = &node.checkpoints {
            node.metrics
                .checkpoints_skipped
                .inc_by(c.corrupt_epochs_skipped());
        }
        Ok(node)
    }

    /// Puts the queries' and sinks' state of a checkpoint back (file name → bytes).
    async fn restore(&self, files: &BTreeMap<String, bytes::Bytes>, now: i64) -> Result<()> {
        self.engine.lock().await.restore_files(files, now)?;
        let routes = self.all_routes();
        for (shape, sinks) in routes {
            for s in sinks {
                if let Some(state) = files.get(&sink_file(s.name(), &shape.query)) {
                    s.restore(&shape, state)
                        .await
                        .with_context(|| format!("sink `{}`, query `{}`", s.name(), shape.query))?;
                }
            }
        }
        Ok(())
    }

    /// Every query's shapes (its rows', and its late rows' if they have sinks) with
    /// their sinks.
    fn all_routes(&self) -> Vec<(QueryShape, Vec<SinkRef>)> {
        let routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        routes
            .values()
            .flat_map(|r| {
                let late = r.late_shape.clone().map(|l| (l, r.late_sinks.clone()));
                std::iter::once((r.shape.clone(), r.sinks.clone())).chain(late)
            })
            .collect()
    }

    /// Every sink's state for every query, as checkpoint files.
    pub(super) async fn sink_states(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let routes = self.all_routes();
        let mut files = Vec::new();
        for (shape, sinks) in routes {
            for s in sinks {
                if let Some(state) = s.snapshot(&shape).await? {
                    files.push((sink_file(s.name(), &shape.query), state));
                }
            }
        }
        Ok(files)
    }

    /// The context pull queries run on.
    pub fn pull_context(&self) -> SessionContext {
        self.pull.clone()
    }

    fn sinks_named(&self, names: &[String]) -> Result<Vec<SinkRef>> {
        names
            .iter()
            .map(|n| {
                self.sinks.get(n).cloned().ok_or_else(|| {
                    anyhow!(
                        "sink `{n}` is not defined; defined sinks: {}",
                        self.sinks.keys().cloned().collect::<Vec<_>>().join(", ")
                    )
                })
            })
            .collect()
    }

    /// Plans and starts a continuous query, and opens its sinks.
    pub async fn create_query(&self, name: &str, sql: &str, opts: QueryOptions) -> Result<()> {
        let sinks = self.sinks_named(&opts.sinks)?;
        let late_sinks = self.sinks_named(&opts.late_sinks)?;
        let info = {
            let mut engine = self.engine.lock().await;
            engine
                .create_query(
                    QueryDecl {
                        name: name.to_string(),
                        sql: sql.to_string(),
                        allowed_lateness_ms: opts.allowed_lateness_ms,
                        live_rows: opts.live_rows.max(1),
                    },
                    now_ms(),
                )
                .await?
        };
        let shape = shape_of(&info);
        let late_shape = match (&info.late_schema, late_sinks.is_empty()) {
            (_, true) => None,
            (Some(schema), false) => Some(QueryShape {
                query: format!("{name}_late"),
                schema: schema.clone(),
                identity: (0..schema.fields().len()).collect(),
                window_column: None,
                allowed_lateness_ms: 0,
                window_len_ms: None,
            }),
            (None, false) => {
                let _ = self.engine.lock().await.drop_query(name);
                bail!("late_sinks: query `{name}` has no window, so no row is ever late");
            }
        };
        let opens = sinks.iter().map(|s| (s, &shape)).chain(
            late_sinks
                .iter()
                .filter_map(|s| late_shape.as_ref().map(|l| (s, l))),
        );
        for (s, sh) in opens {
            if let Err(e) = s.open(sh).await {
                let _ = self.engine.lock().await.drop_query(name);
                return Err(anyhow!(e).context(format!("sink `{}`", s.name())));
            }
        }
        self.routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                name.to_string(),
                Route {
                    shape,
                    sinks,
                    late_shape,
                    late_sinks,
                },
            );
        tracing::info!(query = name, "continuous query started");
        Ok(())
    }

    /// Stops a continuous query.
    pub async fn drop_query(&self, name: &str, if_exists: bool) -> Result<()> {
        let r = self.engine.lock().await.drop_query(name);
        match r {
            Ok(()) => {
                self.routes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(name);
                tracing::info!(query = name, "continuous query dropped");
                Ok(())
            }
            Err(_) if if_exists => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Runs a statement: a control statement or a pull query.
    pub async fn execute(&self, sql: &str) -> Result<Executed> {
        match super::control::parse(sql).map_err(|e| anyhow!(e))? {
            Some(Control::Create { name, options, sql }) => {
                let mut opts = QueryOptions {
                    live_rows: 100_000,
                    ..Default::default()
                };
                for (k, v) in options {
                    match k.as_str() {
                        "sinks" => opts.sinks = split_list(&v),
                        "late_sinks" => opts.late_sinks = split_list(&v),
                        "allowed_lateness" => {
                            opts.allowed_lateness_ms = humantime::parse_duration(&v)
                                .map_err(|e| anyhow!("allowed_lateness = '{v}': {e}"))?
                                .as_millis() as i64
                        }
                        "live_rows" => {
                            opts.live_rows = v.parse().map_err(|_| anyhow!("live_rows = '{v}': expected a number"))?
                        }
                        other => bail!("unknown option `{other}`; allowed: sinks, late_sinks, allowed_lateness, live_rows"),
                    }
                }
                self.create_query(&name, &sql, opts).await?;
                Ok(Executed::Done("CREATE MATERIALIZED VIEW"))
            }
            Some(Control::Drop { name, if_exists }) => {
                self.drop_query(&name, if_exists).await?;
                Ok(Executed::Done("DROP MATERIALIZED VIEW"))
            }
            None => Ok(Executed::Rows(
                edgeflow_stream::engine::pull(&self.pull, sql).await?,
            )),
        }
    }

    /// Feeds one batch of a stream's partition through the engine and on to the sinks
    /// (what the Kafka loop does for each batch; also for embedding and benchmarks).
    pub async fn process_batch(
        &self,
        stream: &str,
        partition: i32,
        batch: RecordBatch,
        max_event_time: Option<i64>,
    ) -> Result<()> {
        let now = now_ms();
        let mut out = self
            .engine
            .lock()
            .await
            .process(stream, partition, batch, max_event_time, now)
            .await?;
        for letter in take_dead(&mut out) {
            // No dead-letter topic without the Kafka loop: counted and logged.
            self.metrics.observe_dead_letter(letter.reason);
            tracing::warn!(reason = %letter.reason, detail = %letter.detail, "dead letter");
        }
        self.deliver(out, now).await;
        Ok(())
    }

    /// The metrics in the OpenMetrics text format.
    pub async fn metrics_text(&self) -> String {
        let infos = self.engine.lock().await.queries();
        self.metrics.render(&self.config.node_id, &infos, now_ms())
    }

    /// The running queries.
    pub async fn queries(&self) -> Vec<QueryInfo> {
        self.engine.lock().await.queries()
    }
}

fn split_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn shape_of(info: &QueryInfo) -> QueryShape {
    QueryShape {
        query: info.name.clone(),
        schema: info.schema.clone(),
        identity: info.identity.clone(),
        window_column: info.window_column,
        allowed_lateness_ms: info.allowed_lateness_ms,
        window_len_ms: info.window_len_ms,
    }
}
