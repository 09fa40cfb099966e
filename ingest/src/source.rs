//! The Kafka source: the I/O shell around [`BatchDecoder`].
//!
//! It consumes an explicit assignment (`assign`, offsets from the caller's checkpoint),
//! never joins a consumer group and never commits: where a processor resumes is decided
//! by its checkpoints, not by the broker. Each partition has its own decoder, and a
//! partition's batch is closed when it reaches `batch_size` rows or when its first row
//! has waited `linger`, whichever comes first.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use edgeflow_edge::wire;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::decode::{BatchDecoder, DeadLetter, RawRecord};
use crate::format::Format;
use crate::{Error, Result};

/// Where to start reading a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartOffset {
    /// The oldest retained record.
    Beginning,
    /// Only records produced from now on.
    End,
    /// This offset (the next record to read, e.g. from a checkpoint).
    At(i64),
}

/// One assigned partition and the format of its topic.
#[derive(Clone, Debug)]
pub struct Assignment {
    pub topic: String,
    pub partition: i32,
    pub start: StartOffset,
    pub format: Format,
}

/// Consumer settings.
#[derive(Clone, Debug)]
pub struct SourceOptions {
    /// `host:port,...` of the Kafka brokers.
    pub brokers: String,
    /// Extra librdkafka properties (security settings and the like).
    pub properties: BTreeMap<String, String>,
    /// A batch is closed at this many rows.
    pub batch_size: usize,
    /// ...or when its first row has waited this long.
    pub linger: Duration,
}

impl Default for SourceOptions {
    fn default() -> Self {
        Self {
            brokers: "localhost:9092".into(),
            properties: BTreeMap::new(),
            batch_size: 8192,
            linger: Duration::from_millis(50),
        }
    }
}

/// One partition's closed batch.
#[derive(Clone, Debug)]
pub struct PartitionBatch {
    pub topic: String,
    pub partition: i32,
    pub batch: RecordBatch,
    /// The offset after the last record this batch accounts for (rows and dead
    /// letters): where a checkpoint taken after this batch resumes.
    pub next_offset: i64,
    /// The largest event time in the batch (ms).
    pub max_event_time: Option<i64>,
}

/// What the source hands to the processor.
#[derive(Debug)]
pub enum SourceEvent {
    /// A closed batch.
    Batch(PartitionBatch),
    /// A record that did not decode.
    DeadLetter { topic: String, letter: DeadLetter },
}

struct PartitionState {
    topic: String,
    partition: i32,
    decoder: BatchDecoder,
    /// When the open batch got its first row.
    opened: Option<Instant>,
    next_offset: i64,
}

/// A Kafka consumer over a fixed set of assigned partitions.
pub struct KafkaSource {
    consumer: StreamConsumer,
    parts: Vec<PartitionState>,
    index: HashMap<(String, i32), usize>,
    batch_size: usize,
    linger: Duration,
}

impl KafkaSource {
    /// Creates the consumer and assigns it `assignments`.
    pub fn new(opts: &SourceOptions, assignments: Vec<Assignment>) -> Result<Self> {
        if opts.batch_size == 0 {
            return Err(Error::Config("batch_size must be at least 1".into()));
        }
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &opts.brokers)
            // librdkafka wants a group id even for `assign`; nothing joins or commits.
            .set("group.id", "edgeflow-processor")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest");
        for (k, v) in &opts.properties {
            config.set(k, v);
        }
        let consumer: StreamConsumer = config.create()?;
        let mut tpl = TopicPartitionList::new();
        let mut parts = Vec::new();
        let mut index = HashMap::new();
        for a in assignments {
            let offset = match a.start {
                StartOffset::Beginning => Offset::Beginning,
                StartOffset::End => Offset::End,
                StartOffset::At(o) => Offset::Offset(o),
            };
            tpl.add_partition_offset(&a.topic, a.partition, offset)?;
            if index
                .insert((a.topic.clone(), a.partition), parts.len())
                .is_some()
            {
                return Err(Error::Config(format!(
                    "partition {}/{} is assigned twice",
                    a.topic, a.partition
                )));
            }
            parts.push(PartitionState {
                topic: a.topic,
                partition: a.partition,
                decoder: BatchDecoder::new(a.format),
                opened: None,
                next_offset: match a.start {
                    StartOffset::At(o) => o,
                    _ => -1,
                },
            });
        }
        consumer.assign(&tpl)?;
        Ok(Self {
            consumer,
            parts,
            index,
            batch_size: opts.batch_size,
            linger: opts.linger,
        })
    }

    /// Consumes until `shutdown` resolves or the receiver is dropped, sending batches
    /// and dead letters to `tx`. Open batches are flushed on shutdown.
    pub async fn run(
        mut self,
        tx: mpsc::Sender<SourceEvent>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<()> {
        tokio::pin!(shutdown);
        loop {
            let deadline = self
                .parts
                .iter()
                .filter_map(|p| p.opened)
                .min()
                .map(|t| t + self.linger);
            let linger = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut shutdown => break,
                _ = linger => {
                    let now = Instant::now();
                    for i in 0..self.parts.len() {
                        if self.parts[i].opened.is_some_and(|t| t + self.linger <= now)
                            && !self.flush(i, &tx).await
                        {
                            return Ok(());
                        }
                    }
                }
                msg = self.consumer.recv() => {
                    let msg = match msg {
                        Ok(m) => m,
                        Err(e) => {
                            tracing::warn!(error = %e, "Kafka consumer error; retrying");
                            continue;
                        }
                    };
                    let Some(&i) = self.index.get(&(msg.topic().to_string(), msg.partition())) else {
                        continue;
                    };
                    let (mut encoding, mut kind) = (None, None);
                    if let Some(h) = msg.headers() {
                        for h in h.iter() {
                            let v = h.value.and_then(|v| std::str::from_utf8(v).ok());
                            match h.key {
                                wire::HEADER_ENCODING => encoding = v,
                                wire::HEADER_KIND => kind = v,
                                _ => {}
                            }
                        }
                    }
                    let raw = RawRecord {
                        partition: msg.partition(),
                        offset: msg.offset(),
                        key: msg.key(),
                        payload: msg.payload(),
                        encoding,
                        kind,
                    };
                    let p = &mut self.parts[i];
                    p.next_offset = msg.offset() + 1;
                    match p.decoder.push(&raw) {
                        Ok(()) => {
                            p.opened.get_or_insert_with(Instant::now);
                        }
                        Err(letter) => {
                            let ev = SourceEvent::DeadLetter { topic: p.topic.clone(), letter };
                            if tx.send(ev).await.is_err() {
                                return Ok(());
                            }
                        }
                    }
                    if self.parts[i].decoder.len() >= self.batch_size && !self.flush(i, &tx).await {
                        return Ok(());
                    }
                }
            }
        }
        for i in 0..self.parts.len() {
            if !self.flush(i, &tx).await {
                break;
            }
        }
        Ok(())
    }

    /// Sends partition `i`'s open batch; false when the receiver is gone.
    async fn flush(&mut self, i: usize, tx: &mpsc::Sender<SourceEvent>) -> bool {
        let p = &mut self.parts[i];
        p.opened = None;
        let max_event_time = p.decoder.max_event_time();
        let batch = match p.decoder.finish() {
            Ok(Some(b)) => b,
            Ok(None) => return true,
            Err(e) => {
                // The decoder builds columns of its own schema; a failure is a bug.
                tracing::error!(error = %e, topic = %p.topic, partition = p.partition, "cannot close a batch");
                return true;
            }
        };
        let ev = SourceEvent::Batch(PartitionBatch {
            topic: p.topic.clone(),
            partition: p.partition,
            batch,
            next_offset: p.next_offset,
            max_event_time,
        });
        tx.send(ev).await.is_ok()
    }
}
