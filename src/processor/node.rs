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
use std::sync::atomic::Ordering;
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
use edgeflow_ingest::decode::{DeadLetter, DeadReason};
use edgeflow_ingest::source::{Assignment, KafkaSource, SourceEvent, SourceOptions, StartOffset};
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

    /// Hands outputs to sinks (retrying failed writes with backoff).
    async fn deliver(&self, outputs: Vec<QueryOutput>, now: i64) {
        for out in outputs {
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
            for b in &out.rows {
                self.metrics.observe_emit(&shape, b, now);
                for s in &sinks {
                    write_with_retry(s, &shape, b, &self.metrics).await;
                }
            }
            if let Some(ls) = late_shape {
                for b in &out.late {
                    for s in &late_sinks {
                        write_with_retry(s, &ls, b, &self.metrics).await;
                    }
                }
            }
        }
    }

    /// Tells sinks the queries' watermarks.
    async fn watermarks(&self) {
        let infos = self.engine.lock().await.queries();
        for info in infos {
            let Some(wm) = info.watermark else { continue };
            let route = {
                let routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
                routes
                    .get(&info.name)
                    .map(|r| (r.shape.clone(), r.sinks.clone()))
            };
            if let Some((shape, sinks)) = route {
                for s in sinks {
                    if let Err(e) = s.watermark(&shape, wm).await {
                        self.metrics.sink_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(sink = s.name(), query = %info.name, error = %e, "sink failed at a watermark; retrying at the next one");
                    }
                }
            }
        }
    }

    async fn flush_sinks(&self) {
        let routes: Vec<(QueryShape, Vec<SinkRef>)> = {
            let routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
            routes
                .values()
                .map(|r| (r.shape.clone(), r.sinks.clone()))
                .collect()
        };
        for (shape, sinks) in routes {
            for s in sinks {
                if let Err(e) = s.flush(&shape).await {
                    tracing::warn!(sink = s.name(), error = %e, "flush failed");
                }
            }
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

    /// Prometheus text.
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

async fn write_with_retry(
    sink: &SinkRef,
    shape: &QueryShape,
    batch: &RecordBatch,
    metrics: &Metrics,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match sink.write(shape, batch).await {
            Ok(()) => {
                metrics
                    .sink_rows
                    .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                return;
            }
            Err(e) => {
                metrics.sink_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(sink = sink.name(), query = %shape.query, error = %e, retry_in = ?backoff, "sink write failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Runs the node until `shutdown` resolves. `ready` gets the bound addresses.
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
    dlq_producer_cfg
        .set("bootstrap.servers", &cfg.kafka.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all");
    for (k, v) in &cfg.kafka.properties {
        dlq_producer_cfg.set(k, v);
    }
    let dlq: FutureProducer = dlq_producer_cfg.create()?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    tracing::info!(node = %cfg.node_id, partitions = node.assignments.len(), "processor running");
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tick.tick() => {
                let now = now_ms();
                let out = node.engine.lock().await.tick(now);
                match out {
                    Ok(out) => node.deliver(out, now).await,
                    Err(e) => tracing::error!(error = %e, "tick failed"),
                }
                node.watermarks().await;
            }
            ev = rx.recv() => {
                let Some(ev) = ev else { break };
                match ev {
                    SourceEvent::Batch(b) => {
                        let Some(stream) = node.topics.get(&b.topic).cloned() else { continue };
                        node.metrics.observe_batch(&stream, b.batch.num_rows());
                        let now = now_ms();
                        let out = node
                            .engine
                            .lock()
                            .await
                            .process(&stream, b.partition, b.batch, b.max_event_time, now)
                            .await;
                        match out {
                            Ok(mut out) => {
                                for letter in take_dead(&mut out) {
                                    node.metrics.observe_dead_letter(letter.reason);
                                    dead_letter(&dlq, &cfg.ingest.dead_letter_topic, &b.topic, &letter).await;
                                }
                                node.deliver(out, now).await
                            }
                            Err(e) => tracing::error!(stream = %stream, error = %e, "processing a batch failed"),
                        }
                    }
                    SourceEvent::Backlog { topic, partition, backlog } => {
                        let Some(stream) = node.topics.get(&topic) else { continue };
                        let r = node.engine.lock().await.set_backlog(stream, partition, backlog, now_ms());
                        if let Err(e) = r {
                            tracing::error!(stream = %stream, error = %e, "cannot record a partition's backlog");
                        }
                    }
                    SourceEvent::DeadLetter { topic, letter } => {
                        node.metrics.observe_dead_letter(letter.reason);
                        dead_letter(&dlq, &cfg.ingest.dead_letter_topic, &topic, &letter).await;
                    }
                }
            }
        }
    }
    let _ = stop_tx.send(());
    let _ = source_task.await;
    node.flush_sinks().await;
    tracing::info!("processor stopped");
    Ok(())
}

async fn dead_letter(p: &FutureProducer, dlq_topic: &str, source_topic: &str, l: &DeadLetter) {
    let partition = l.partition.to_string();
    let offset = l.offset.to_string();
    let headers = OwnedHeaders::new()
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
    let mut rec = FutureRecord::to(dlq_topic)
        .payload(&l.payload)
        .headers(headers);
    if let Some(k) = &l.key {
        rec = rec.key(k);
    }
    if let Err((e, _)) = p.send(rec, Duration::from_secs(30)).await {
        tracing::warn!(error = %e, reason = %l.reason, "cannot write a dead letter");
    }
}

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

/// Counts of dead letters by reason.
pub(crate) fn reason_index(r: DeadReason) -> usize {
    DeadReason::ALL.iter().position(|x| *x == r).unwrap_or(0)
}
