//! A processor node: Kafka partitions in, continuous queries, sinks out, SQL served.
//!
//! The loop is short: the [`KafkaSource`] hands batches over a channel, the engine
//! (under a lock, so control statements can reach it) folds them in, and the rows it
//! emits go to the query's sinks. A sink that fails is retried with backoff: the
//! pipeline waits rather than dropping rows. Every second the engine is ticked so idle
//! partitions release their watermark, and sinks hear the new watermarks; the source's
//! backlog reports decide which partitions may go idle (only caught-up ones). Rows a
//! query cannot place (NULL window time) are dead-lettered like undecodable records.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use async_trait::async_trait;
use datafusion::arrow::array::{
    BooleanArray, RecordBatch, StringArray, TimestampMillisecondArray, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::Session;
use datafusion::datasource::{MemTable, TableProvider, TableType};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use edgeflow_ingest::decode::DeadLetter;
use edgeflow_ingest::source::{
    Assignment, KafkaSource, PartitionBatch, SourceEvent, SourceOptions, StartOffset,
};
use edgeflow_sinks::{QueryShape, SinkRef};
use edgeflow_stream::engine::{Engine, QueryDecl, QueryInfo, QueryOutput, StreamDecl};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use tokio::sync::{mpsc, Mutex};

use super::config::{ProcessorConfig, SinkConfig};
use super::control::Control;
use super::metrics::Metrics;

/// Current wall-clock time in ms.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Where a query's rows go.
struct Route {
    shape: QueryShape,
    sinks: Vec<SinkRef>,
    late_shape: Option<QueryShape>,
    late_sinks: Vec<SinkRef>,
}

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
    pub(crate) engine: Arc<Mutex<Engine>>,
    pull: SessionContext,
    sinks: BTreeMap<String, SinkRef>,
    routes: StdMutex<BTreeMap<String, Route>>,
    pub(crate) metrics: Metrics,
    /// topic → stream name.
    topics: BTreeMap<String, String>,
    assignments: Vec<Assignment>,
    config: ProcessorConfig,
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
fn topic_partitions(config: &ProcessorConfig, topic: &str) -> Result<Vec<i32>> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.kafka.brokers);
    for (k, v) in &config.kafka.properties {
        c.set(k, v);
    }
    let consumer: BaseConsumer = c.create()?;
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

impl Node {
    /// Builds the engine, tables, sinks and the configured queries.
    pub async fn build(config: ProcessorConfig) -> Result<Arc<Node>> {
        let now = now_ms();
        let mut engine = Engine::new();
        let mut topics = BTreeMap::new();
        let mut assignments = Vec::new();
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
            let parts = if s.partitions.is_empty() {
                topic_partitions(&config, &s.topic)?
            } else {
                s.partitions.clone()
            };
            for p in parts {
                engine.add_partition(&s.name, p, now)?;
                assignments.push(Assignment {
                    topic: s.topic.clone(),
                    partition: p,
                    start: if s.start == "end" {
                        StartOffset::End
                    } else {
                        StartOffset::Beginning
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
        let node = Arc::new(Node {
            engine,
            pull,
            sinks,
            routes: StdMutex::new(BTreeMap::new()),
            metrics: Metrics::default(),
            topics,
            assignments,
            config: config.clone(),
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
        Ok(node)
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

    /// Stops a query that cannot go on, saying why (in `/queries`, `edgeflow_queries`,
    /// the log and the metrics).
    async fn fail_query(&self, name: &str, error: &str) {
        self.metrics.query_failures.inc();
        tracing::error!(query = name, error, "continuous query failed and stopped");
        // Gone already if it was dropped meanwhile: nothing left to stop.
        let _ = self.engine.lock().await.fail_query(name, error);
    }

    /// Hands outputs to sinks. A write that fails for a transient reason is retried
    /// with backoff (the pipeline waits rather than dropping rows); one that cannot
    /// succeed stops the query with the sink's error.
    async fn deliver(&self, outputs: Vec<QueryOutput>, now: i64) {
        for out in outputs {
            if out.failed.is_some() {
                // The engine stopped it and logged why.
                self.metrics.query_failures.inc();
                continue;
            }
            let (shape, sinks, late_shape, late_sinks) = {
                let routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
                let Some(r) = routes.get(&out.query) else {
                    continue;
                };
                (
                    r.shape.clone(),
                    r.sinks.clone(),
                    r.late_shape.clone(),
                    r.late_sinks.clone(),
                )
            };
            let mut writes = Vec::new();
            for b in &out.rows {
                self.metrics.observe_emit(&shape, b, now);
                writes.extend(sinks.iter().map(|s| (s, &shape, b)));
            }
            if let Some(ls) = &late_shape {
                for b in &out.late {
                    writes.extend(late_sinks.iter().map(|s| (s, ls, b)));
                }
            }
            for (sink, shape, batch) in writes {
                if let Err(e) = write_with_retry(sink, shape, batch, &self.metrics).await {
                    let error = format!("sink `{}` cannot take its rows: {e}", sink.name());
                    self.fail_query(&out.query, &error).await;
                    break;
                }
            }
        }
    }

    /// Tells sinks the queries' watermarks.
    async fn watermarks(&self) {
        let infos = self.engine.lock().await.queries();
        for info in infos.into_iter().filter(|q| q.error.is_none()) {
            let Some(wm) = info.watermark else { continue };
            let route = {
                let routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
                routes
                    .get(&info.name)
                    .map(|r| (r.shape.clone(), r.sinks.clone()))
            };
            if let Some((shape, sinks)) = route {
                for s in sinks {
                    match s.watermark(&shape, wm).await {
                        Ok(()) => {}
                        Err(e) if e.is_retryable() => {
                            self.metrics.sink_errors.inc();
                            tracing::warn!(sink = s.name(), query = %info.name, error = %e, "sink failed at a watermark; retrying at the next one");
                        }
                        Err(e) => {
                            self.metrics.sink_errors.inc();
                            let error = format!("sink `{}` failed at a watermark: {e}", s.name());
                            self.fail_query(&info.name, &error).await;
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Makes what every sink holds durable (at shutdown); fails naming every sink
    /// that could not.
    async fn flush_sinks(&self) -> Result<()> {
        let routes: Vec<(QueryShape, Vec<SinkRef>)> = {
            let routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
            routes
                .values()
                .map(|r| (r.shape.clone(), r.sinks.clone()))
                .collect()
        };
        let mut failed = Vec::new();
        for (shape, sinks) in routes {
            for s in sinks {
                if let Err(e) = s.flush(&shape).await {
                    tracing::error!(sink = s.name(), query = %shape.query, error = %e, "flush failed");
                    failed.push(format!("sink `{}`, query `{}`: {e}", s.name(), shape.query));
                }
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            bail!("sinks could not flush: {}", failed.join("; "))
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

/// Writes, retrying with backoff for as long as the failure is transient; a failure
/// that is not (see [`edgeflow_sinks::Error::is_retryable`]) is returned at once.
async fn write_with_retry(
    sink: &SinkRef,
    shape: &QueryShape,
    batch: &RecordBatch,
    metrics: &Metrics,
) -> Result<(), edgeflow_sinks::Error> {
    let mut backoff = Duration::from_millis(100);
    loop {
        match sink.write(shape, batch).await {
            Ok(()) => {
                metrics.sink_rows.inc_by(batch.num_rows() as u64);
                return Ok(());
            }
            Err(e) if !e.is_retryable() => {
                metrics.sink_errors.inc();
                return Err(e);
            }
            Err(e) => {
                metrics.sink_errors.inc();
                tracing::warn!(sink = sink.name(), query = %shape.query, error = %e, retry_in = ?backoff, "sink write failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Runs the node until `shutdown` resolves, or until something fails that would
/// otherwise lose input (the source, the dead-letter topic): then it stops with that
/// error. Sinks are flushed either way.
pub async fn run(
    node: Arc<Node>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<()> {
    let cfg = &node.config;
    let opts = SourceOptions {
        brokers: cfg.kafka.brokers.clone(),
        properties: cfg.kafka.properties.clone(),
        batch_size: cfg.ingest.batch_size,
        linger: cfg.ingest.linger.0,
    };
    let source = KafkaSource::new(&opts, node.assignments.clone())?;
    let (tx, mut rx) = mpsc::channel(64);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let source_task = tokio::spawn(source.run(tx, async {
        let _ = stop_rx.await;
    }));
    let mut dlq_producer_cfg = ClientConfig::new();
    for (k, v) in &cfg.kafka.properties {
        dlq_producer_cfg.set(k, v);
    }
    // After the user's properties: the delivery guarantee is not theirs to change.
    dlq_producer_cfg
        .set("bootstrap.servers", &cfg.kafka.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all");
    let mut runner = Runner {
        node: node.clone(),
        dead_letters: DeadLetters {
            producer: dlq_producer_cfg.create()?,
            topic: cfg.ingest.dead_letter_topic.clone(),
        },
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    tracing::info!(node = %cfg.node_id, partitions = node.assignments.len(), "processor running");
    let outcome = loop {
        let step = tokio::select! {
            _ = &mut shutdown => break Ok(()),
            _ = tick.tick() => runner.on_tick().await,
            ev = rx.recv() => match ev {
                Some(ev) => runner.on_source_event(ev).await,
                // The source ended: it says why below.
                None => break Ok(()),
            },
        };
        if let Err(e) = step {
            break Err(e);
        }
    };
    let _ = stop_tx.send(());
    let source = match source_task.await {
        Ok(r) => r.context("the Kafka source stopped"),
        Err(e) => Err(anyhow!("the Kafka source task ended abnormally: {e}")),
    };
    let flushed = node.flush_sinks().await;
    tracing::info!("processor stopped");
    outcome.and(source).and(flushed)
}

/// The node's loop: one method per kind of event.
struct Runner {
    node: Arc<Node>,
    dead_letters: DeadLetters,
}

impl Runner {
    /// Processing time passed: idle partitions may close windows; sinks hear the
    /// queries' watermarks.
    async fn on_tick(&mut self) -> Result<()> {
        let now = now_ms();
        let out = self.node.engine.lock().await.tick(now)?;
        self.node.deliver(out, now).await;
        self.node.watermarks().await;
        Ok(())
    }

    async fn on_source_event(&mut self, ev: SourceEvent) -> Result<()> {
        match ev {
            SourceEvent::Batch(b) => self.on_batch(b).await,
            SourceEvent::Backlog {
                topic,
                partition,
                backlog,
            } => {
                let Some(stream) = self.node.topics.get(&topic) else {
                    return Ok(());
                };
                self.node
                    .engine
                    .lock()
                    .await
                    .set_backlog(stream, partition, backlog, now_ms())
                    .with_context(|| format!("stream `{stream}`: a partition's backlog"))
            }
            SourceEvent::DeadLetter { topic, letter } => {
                self.node.metrics.observe_dead_letter(letter.reason);
                self.dead_letters
                    .send(&topic, &letter, &self.node.metrics)
                    .await
            }
        }
    }

    /// A batch goes through every query on its stream. A query that fails stops on
    /// its own; an error of the stream itself stops the node (nothing is skipped).
    async fn on_batch(&mut self, b: PartitionBatch) -> Result<()> {
        let Some(stream) = self.node.topics.get(&b.topic).cloned() else {
            return Ok(());
        };
        self.node.metrics.observe_batch(&stream, b.batch.num_rows());
        let now = now_ms();
        let mut out = self
            .node
            .engine
            .lock()
            .await
            .process(&stream, b.partition, b.batch, b.max_event_time, now)
            .await
            .with_context(|| {
                format!(
                    "stream `{stream}`, partition {}: a batch ending before offset {}",
                    b.partition, b.next_offset
                )
            })?;
        for letter in take_dead(&mut out) {
            self.node.metrics.observe_dead_letter(letter.reason);
            self.dead_letters
                .send(&b.topic, &letter, &self.node.metrics)
                .await?;
        }
        self.node.deliver(out, now).await;
        Ok(())
    }
}

/// The dead-letter topic's producer.
struct DeadLetters {
    producer: FutureProducer,
    topic: String,
}

/// What is kept of a dead letter's payload when the whole is too large for the
/// dead-letter topic.
const TRUNCATED_PAYLOAD: usize = 1024;

impl DeadLetters {
    /// Writes a dead letter, retrying transient failures with backoff (the pipeline
    /// waits). A payload too large for the topic is cut to its first bytes, with a
    /// header giving its length. Any other lasting failure (no permission, no such
    /// topic) is returned: the node stops rather than drop the record.
    async fn send(&self, source_topic: &str, l: &DeadLetter, metrics: &Metrics) -> Result<()> {
        let partition = l.partition.to_string();
        let offset = l.offset.to_string();
        let full_len = l.payload.len().to_string();
        let mut truncated = false;
        let mut backoff = Duration::from_millis(100);
        loop {
            let mut headers = OwnedHeaders::new()
                .insert(Header {
                    key: edgeflow_edge::wire::HEADER_KIND,
                    value: Some("dead-letter"),
                })
                .insert(Header {
                    key: edgeflow_edge::wire::HEADER_REASON,
                    value: Some(l.reason.as_str()),
                })
                .insert(Header {
                    key: edgeflow_edge::wire::HEADER_DETAIL,
                    value: Some(l.detail.as_str()),
                })
                .insert(Header {
                    key: "edgeflow-source-topic",
                    value: Some(source_topic),
                })
                .insert(Header {
                    key: "edgeflow-source-partition",
                    value: Some(partition.as_str()),
                })
                .insert(Header {
                    key: "edgeflow-source-offset",
                    value: Some(offset.as_str()),
                });
            let mut payload = l.payload.as_slice();
            if truncated {
                payload = &payload[..payload.len().min(TRUNCATED_PAYLOAD)];
                headers = headers.insert(Header {
                    key: HEADER_PAYLOAD_LENGTH,
                    value: Some(full_len.as_str()),
                });
            }
            let mut rec = FutureRecord::to(&self.topic)
                .payload(payload)
                .headers(headers);
            if let Some(k) = &l.key {
                rec = rec.key(k);
            }
            let Err((e, _)) = self.producer.send(rec, Duration::from_secs(30)).await else {
                return Ok(());
            };
            metrics.dead_letter_errors.inc();
            let too_large = e.rdkafka_error_code()
                == Some(rdkafka::types::RDKafkaErrorCode::MessageSizeTooLarge);
            if too_large && !truncated {
                tracing::warn!(topic = %self.topic, bytes = l.payload.len(), "a dead letter is too large for its topic; writing its first {TRUNCATED_PAYLOAD} bytes");
                truncated = true;
            } else if edgeflow_sinks::kafka_retryable(&e) {
                tracing::warn!(topic = %self.topic, error = %e, retry_in = ?backoff, "cannot write a dead letter; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            } else {
                bail!(
                    "cannot write a dead letter ({}, {source_topic} partition {partition} offset {offset}) to `{}`: {e}; \
                     check `ingest.dead_letter_topic` and the client's permissions",
                    l.reason,
                    self.topic
                );
            }
        }
    }
}

/// Header of a dead letter whose payload was cut: the payload's whole length.
pub const HEADER_PAYLOAD_LENGTH: &str = "edgeflow-payload-length";

/// `edgeflow_queries`: the running continuous queries as a table.
struct QueriesTable {
    engine: Arc<Mutex<Engine>>,
}

impl std::fmt::Debug for QueriesTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QueriesTable")
    }
}

fn queries_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("stream", DataType::Utf8, false),
        Field::new("windowed", DataType::Boolean, false),
        Field::new(
            "watermark",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            true,
        ),
        Field::new("rows_in", DataType::UInt64, false),
        Field::new("rows_out", DataType::UInt64, false),
        Field::new("late_rows", DataType::UInt64, false),
        Field::new("open_groups", DataType::UInt64, false),
        Field::new("state", DataType::Utf8, false),
        Field::new("error", DataType::Utf8, true),
        Field::new("sql", DataType::Utf8, false),
    ]))
}

#[async_trait]
impl TableProvider for QueriesTable {
    fn schema(&self) -> SchemaRef {
        queries_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let qs = self.engine.lock().await.queries();
        let batch = RecordBatch::try_new(
            queries_schema(),
            vec![
                Arc::new(StringArray::from_iter_values(
                    qs.iter().map(|q| q.name.as_str()),
                )),
                Arc::new(StringArray::from_iter_values(
                    qs.iter().map(|q| q.stream.as_str()),
                )),
                Arc::new(BooleanArray::from(
                    qs.iter().map(|q| q.windowed).collect::<Vec<_>>(),
                )),
                Arc::new(
                    TimestampMillisecondArray::from(
                        qs.iter().map(|q| q.watermark).collect::<Vec<_>>(),
                    )
                    .with_timezone("UTC"),
                ),
                Arc::new(UInt64Array::from_iter_values(
                    qs.iter().map(|q| q.stats.rows_in),
                )),
                Arc::new(UInt64Array::from_iter_values(
                    qs.iter().map(|q| q.stats.rows_out),
                )),
                Arc::new(UInt64Array::from_iter_values(
                    qs.iter().map(|q| q.stats.late_rows),
                )),
                Arc::new(UInt64Array::from_iter_values(
                    qs.iter().map(|q| q.stats.open_groups),
                )),
                Arc::new(StringArray::from_iter_values(qs.iter().map(|q| {
                    if q.error.is_some() {
                        "failed"
                    } else {
                        "running"
                    }
                }))),
                Arc::new(StringArray::from(
                    qs.iter().map(|q| q.error.clone()).collect::<Vec<_>>(),
                )),
                Arc::new(StringArray::from_iter_values(
                    qs.iter().map(|q| q.sql.as_str()),
                )),
            ],
        )?;
        MemTable::try_new(queries_schema(), vec![vec![batch]])?
            .scan(state, projection, filters, limit)
            .await
    }
}

/// Takes the dead letters out of query outputs (rows a query could not place).
fn take_dead(outputs: &mut [QueryOutput]) -> Vec<DeadLetter> {
    outputs
        .iter_mut()
        .flat_map(|o| std::mem::take(&mut o.dead))
        .collect()
}
