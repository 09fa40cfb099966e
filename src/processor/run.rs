//! The node's loop: the Kafka source's batches, backlog reports and dead letters, and a
//! tick every second (idle partitions may close windows; sinks hear the watermarks).
//! One `select!` whose arms call a method each.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use edgeflow_ingest::decode::DeadLetter;
use edgeflow_ingest::source::{KafkaSource, PartitionBatch, SourceEvent, SourceOptions};
use edgeflow_stream::checkpoint::{CheckpointStore, SourceOffset};
use edgeflow_wire::clock::now_ms;
use edgeflow_wire::kafka::producer_config;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::mpsc;

use super::delivery::take_dead;
use super::metrics::Metrics;
use super::node::Node;

mod cluster;

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
    let commands = source.commands();
    let (tx, mut rx) = mpsc::channel(64);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let source_task = tokio::spawn(source.run(tx, async {
        let _ = stop_rx.await;
    }));
    let role = match &cfg.cluster {
        Some(_) => Some(cluster::Role::join(&node, commands).await?),
        None => None,
    };
    let mut cluster_view = role.as_ref().map(cluster::Role::view);
    let mut runner = Runner {
        offsets: node.start_offsets.clone(),
        node: node.clone(),
        dead_letters: DeadLetters {
            producer: producer_config(&cfg.kafka.brokers, &cfg.kafka.properties, &[]).create()?,
            topic: cfg.ingest.dead_letter_topic.clone(),
        },
        cluster: role,
        held: None,
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let checkpointing = node.checkpoints.is_some();
    let period = cfg.checkpoint.interval.0.max(Duration::from_millis(10));
    let mut checkpoint = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    checkpoint.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    tracing::info!(node = %cfg.node_id, partitions = node.assignments.len(), "processor running");
    let outcome = loop {
        let step = tokio::select! {
            _ = &mut shutdown => break Ok(()),
            _ = tick.tick() => {
                if runner.may_write() {
                    runner.on_tick().await
                } else {
                    Ok(())
                }
            }
            _ = checkpoint.tick(), if checkpointing => {
                if runner.may_write() {
                    runner.on_checkpoint().await;
                }
                Ok(())
            }
            // While an event waits for the lease, no other is taken.
            ev = rx.recv(), if runner.held.is_none() => match ev {
                Some(ev) => runner.on_source_event(ev).await,
                // The source ended: it says why below.
                None => break Ok(()),
            },
            changed = view_changed(&mut cluster_view) => match changed {
                Ok(()) => runner.on_view().await,
                // The member's task ended: declared dead (the view says so), or the
                // control log failed.
                Err(_) => runner.on_view().await.and(Err(anyhow!(
                    "this node lost the cluster's control log (it can neither read nor \
                     append it); it stops rather than process partitions others may take"
                ))),
            },
        };
        if let Err(e) = step {
            break Err(e);
        }
    };
    let fenced = runner.cluster.as_ref().is_some_and(|r| r.fenced);
    if outcome.is_ok() && checkpointing {
        // The last cut, before the sinks flush what they hold as it is.
        runner.on_checkpoint().await;
    }
    if let Some(role) = runner.cluster.take() {
        if outcome.is_ok() {
            // After the last checkpoint: the others take the partitions from it.
            if let Err(e) = role.leave().await {
                tracing::warn!(error = %format!("{e:#}"), "leaving the cluster failed; the others will find this node dead");
            }
        }
    }
    let _ = stop_tx.send(());
    let source = match source_task.await {
        Ok(r) => r.context("the Kafka source stopped"),
        Err(e) => Err(anyhow!("the Kafka source task ended abnormally: {e}")),
    };
    // A node declared dead writes nothing more: its partitions are someone else's.
    let flushed = if fenced {
        Ok(())
    } else {
        node.flush_sinks().await
    };
    tracing::info!("processor stopped");
    outcome.and(source).and(flushed)
}

/// Waits for the cluster member's fold to change (forever without a cluster).
async fn view_changed(
    view: &mut Option<tokio::sync::watch::Receiver<crate::cluster::View>>,
) -> Result<(), tokio::sync::watch::error::RecvError> {
    match view {
        Some(v) => v.changed().await,
        None => std::future::pending().await,
    }
}

/// The node's loop: one method per kind of event.
struct Runner {
    node: Arc<Node>,
    dead_letters: DeadLetters,
    /// Each partition's next offset after the batches processed so far (what a
    /// checkpoint taken now resumes from).
    offsets: BTreeMap<(String, i32), i64>,
    /// The node's part in its cluster, if it has one.
    cluster: Option<cluster::Role>,
    /// A source event that arrived while the cluster lease had lapsed: handled once it
    /// holds again (or never, if the node turns out to be dead).
    held: Option<SourceEvent>,
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

    /// Whether the node may write to its sinks now: alone always; in a cluster while
    /// its lease holds (it folded a heartbeat of its own recently enough that nobody
    /// can have taken its partitions over yet).
    fn may_write(&self) -> bool {
        self.cluster.as_ref().is_none_or(cluster::Role::lease_holds)
    }

    async fn on_source_event(&mut self, ev: SourceEvent) -> Result<()> {
        if !self.may_write() {
            tracing::warn!("the cluster lease lapsed (no heartbeat of this node folded in time); holding the input until it is renewed");
            self.held = Some(ev);
            return Ok(());
        }
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
                if self
                    .cluster
                    .as_ref()
                    .is_some_and(|c| !c.reads(&topic, partition))
                {
                    return Ok(());
                }
                self.node
                    .engine
                    .lock()
                    .await
                    .set_backlog(stream, partition, backlog, now_ms())
                    .with_context(|| format!("stream `{stream}`: a partition's backlog"))
            }
            SourceEvent::Removed { topic, partition } => self.removed(topic, partition).await,
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
        if let Some(c) = &self.cluster {
            // A partition being released: its state is what the checkpoint holds.
            if !c.reads(&b.topic, b.partition) {
                return Ok(());
            }
            c.observe(&b.topic, b.partition, b.batch.num_rows());
        }
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
        self.offsets.insert((b.topic, b.partition), b.next_offset);
        Ok(())
    }

    /// Takes a checkpoint: a cut between two events of the loop, so the queries' state,
    /// the sinks' (which have taken every row emitted so far) and the offsets agree.
    /// A failure is logged and counted; the next interval tries again.
    async fn on_checkpoint(&mut self) {
        let Some(store) = self.node.checkpoints.clone() else {
            return;
        };
        let started = std::time::Instant::now();
        match self.checkpoint(&store).await {
            Ok((epoch, bytes)) => {
                let m = &self.node.metrics;
                m.checkpoints.inc();
                m.checkpoint_seconds.set(started.elapsed().as_secs_f64());
                m.checkpoint_bytes
                    .set(i64::try_from(bytes).unwrap_or(i64::MAX));
                m.checkpoint_timestamp.set(now_ms() as f64 / 1000.0);
                tracing::debug!(epoch, bytes, "checkpoint taken");
                if let Err(e) = self.finish_releases(epoch).await {
                    tracing::warn!(error = %format!("{e:#}"), "finishing partition releases failed; trying again after the next checkpoint");
                }
            }
            Err(e) => {
                self.node.metrics.checkpoint_failures.inc();
                tracing::warn!(error = %format!("{e:#}"), "checkpoint failed; trying again at the next interval");
            }
        }
    }

    async fn checkpoint(&self, store: &CheckpointStore) -> Result<(u64, u64)> {
        let mut files = self.node.engine.lock().await.checkpoint_files()?;
        files.extend(self.node.sink_states().await?);
        let bytes = files.iter().map(|(_, b)| b.len() as u64).sum();
        let sources = self
            .offsets
            .iter()
            .map(|((topic, partition), next)| SourceOffset {
                topic: topic.clone(),
                partition: *partition,
                next_offset: *next,
                generation: self
                    .cluster
                    .as_ref()
                    .map_or(0, |c| c.generation(topic, *partition)),
            })
            .collect();
        let files = files
            .into_iter()
            .map(|(n, b)| (n, bytes::Bytes::from(b)))
            .collect();
        let m = store
            .commit(&self.node.config.node_id, 0, now_ms(), sources, files)
            .await?;
        // The epoch is complete; removing old ones can wait for the next.
        if let Err(e) = store.gc().await {
            tracing::warn!(error = %e, "removing old checkpoints failed; trying again after the next");
        }
        Ok((m.epoch, bytes))
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
                    key: edgeflow_wire::HEADER_KIND,
                    value: Some("dead-letter"),
                })
                .insert(Header {
                    key: edgeflow_wire::HEADER_REASON,
                    value: Some(l.reason.as_str()),
                })
                .insert(Header {
                    key: edgeflow_wire::HEADER_DETAIL,
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
