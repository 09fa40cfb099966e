//! The Kafka source: the I/O shell around [`BatchDecoder`].
//!
//! It consumes an explicit assignment (`assign`, offsets from the caller's checkpoint),
//! never joins a consumer group and never commits: where a processor resumes is decided
//! by its checkpoints, not by the broker. Each partition has its own decoder, and a
//! partition's batch is closed when it reaches `batch_size` rows or when its first row
//! has waited `linger`, whichever comes first.
//!
//! Records are decoded against the wall clock (a stream's `max_future` bounds event
//! times by it); the clock is read here, in the shell, and passed to the decoder.
//!
//! ## Backlogs
//!
//! Every [`PROGRESS_INTERVAL`] the source says, per partition, whether records exist
//! past what it has handed over ([`SourceEvent::Backlog`]), so that a partition is
//! idle only when it is caught up, never merely because no batch came lately (the
//! watermark's invariants are in `edgeflow_stream::watermark`). It compares:
//! - the read position: the consumer's position (the offset after the last record it
//!   returned; librdkafka moves it past transaction markers too), or before any
//!   record, the start offset (`At`), the log start offset (`Beginning`), or the end
//!   first seen (`End`);
//! - the partition's end: the last stable offset (the high watermark under
//!   `isolation.level = read_uncommitted`), which librdkafka learns with every fetch
//!   response and reports in its statistics (`statistics.interval.ms`, set by the
//!   source to [`PROGRESS_INTERVAL`]).
//!
//! A partition has a backlog while its read position is behind its end, while rows it
//! read wait in an open batch, and while its end is not known (a partition whose leader
//! never answers holds the watermark rather than letting its data become late; an end
//! older than the read position is not known either). It is caught up when its read
//! position is its end; since that is reported only once the open batch was sent, a
//! partition's batches always reach the processor before its "caught up". A change is
//! reported when the source sees it, so an end learned late (up to one interval of
//! statistics and one fetch) delays idleness or a backlog by that much.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use edgeflow_wire as wire;
use edgeflow_wire::clock::now_ms;
use edgeflow_wire::kafka::consumer_config;
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::Deserialize;
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
    /// Records whose event time is further than this ahead of the wall clock are dead
    /// letters (`None`: no bound).
    pub max_future: Option<Duration>,
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
    /// Whether records exist past what the source has handed over for this partition
    /// (`true`: a backlog) or it is caught up (`false`). Sent when it changes; a
    /// partition's batches are sent before the "caught up" that follows them.
    Backlog {
        topic: String,
        partition: i32,
        backlog: bool,
    },
    /// A partition removed by [`SourceCommand::Remove`]: no batch of it follows.
    Removed { topic: String, partition: i32 },
}

/// A change to the partitions a running source reads ([`KafkaSource::commands`]).
#[derive(Debug)]
pub enum SourceCommand {
    /// Start reading a partition (one already read is an error, logged).
    Add(Assignment),
    /// Stop reading a partition. Rows read but not yet handed over in a batch are
    /// dropped: whoever reads the partition next starts after the last batch handed
    /// over. [`SourceEvent::Removed`] follows the partition's last batch.
    Remove { topic: String, partition: i32 },
}

/// How often the source reports partitions' backlogs (and asks librdkafka for the
/// statistics that carry the partitions' ends).
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(500);

struct PartitionState {
    topic: String,
    partition: i32,
    decoder: BatchDecoder,
    /// When the open batch got its first row.
    opened: Option<Instant>,
    next_offset: i64,
    /// Where reading started (`End` is replaced by the end first seen).
    start: StartOffset,
    /// The offset after the last record read, once one was.
    read_to: Option<i64>,
    /// The backlog last reported.
    reported: Option<bool>,
}

impl PartitionState {
    fn new(a: Assignment) -> Self {
        let max_future = a
            .max_future
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        PartitionState {
            decoder: BatchDecoder::new(a.format).with_max_future(max_future),
            opened: None,
            next_offset: match a.start {
                StartOffset::At(o) => o,
                _ => -1,
            },
            start: a.start,
            read_to: None,
            reported: None,
            topic: a.topic,
            partition: a.partition,
        }
    }
}

fn kafka_offset(start: StartOffset) -> Offset {
    match start {
        StartOffset::Beginning => Offset::Beginning,
        StartOffset::End => Offset::End,
        StartOffset::At(o) => Offset::Offset(o),
    }
}

/// A topic's name and a partition number.
pub type TopicPartition = (String, i32);

/// The offsets that bound what a consumer can read from a partition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartitionEnds {
    /// The log start offset (the oldest retained record).
    pub start: Option<i64>,
    /// The offset after the last readable record: the last stable offset, or the high
    /// watermark when reading uncommitted records.
    pub end: Option<i64>,
}

/// The consumer's context: keeps the partitions' ends from librdkafka's statistics.
struct ProgressContext {
    read_committed: bool,
    ends: Mutex<HashMap<TopicPartition, PartitionEnds>>,
}

impl ClientContext for ProgressContext {
    fn stats_raw(&self, statistics: &[u8]) {
        match partition_ends(statistics, self.read_committed) {
            Ok(found) => self
                .ends
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(found),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read librdkafka's statistics; partitions' backlogs stay unknown")
            }
        }
    }
}

impl ConsumerContext for ProgressContext {}

/// The parts of librdkafka's statistics JSON that say where partitions end.
#[derive(Deserialize)]
struct Stats {
    #[serde(default)]
    topics: HashMap<String, TopicStats>,
}

#[derive(Deserialize)]
struct TopicStats {
    #[serde(default)]
    partitions: HashMap<String, PartitionStats>,
}

#[derive(Deserialize)]
struct PartitionStats {
    partition: i32,
    #[serde(default = "invalid_offset")]
    lo_offset: i64,
    #[serde(default = "invalid_offset")]
    hi_offset: i64,
    #[serde(default = "invalid_offset")]
    ls_offset: i64,
}

fn invalid_offset() -> i64 {
    -1
}

/// The ends of every partition in one librdkafka statistics report (the internal
/// partition -1 left out; offsets librdkafka does not know yet are `None`).
pub fn partition_ends(
    statistics: &[u8],
    read_committed: bool,
) -> Result<Vec<(TopicPartition, PartitionEnds)>, serde_json::Error> {
    let stats: Stats = serde_json::from_slice(statistics)?;
    let known = |o: i64| (o >= 0).then_some(o);
    let mut out = Vec::new();
    for (topic, t) in stats.topics {
        for p in t.partitions.into_values().filter(|p| p.partition >= 0) {
            let end = if read_committed {
                p.ls_offset
            } else {
                p.hi_offset
            };
            out.push((
                (topic.clone(), p.partition),
                PartitionEnds {
                    start: known(p.lo_offset),
                    end: known(end),
                },
            ));
        }
    }
    Ok(out)
}

/// Where a partition has been read up to: the offset after the last record read
/// (`consumed`), else where reading starts (an offset outside the log starts at the
/// log start, as `auto.offset.reset = earliest` does).
pub fn read_position(
    consumed: Option<i64>,
    start: StartOffset,
    ends: PartitionEnds,
) -> Option<i64> {
    match (consumed, start) {
        (Some(c), _) => Some(c),
        (None, StartOffset::At(o)) => match (ends.start, ends.end) {
            (Some(lo), Some(end)) if o < lo || o > end => Some(lo),
            (Some(lo), _) => Some(o.max(lo)),
            (None, _) => Some(o),
        },
        (None, StartOffset::Beginning) => ends.start,
        (None, StartOffset::End) => None,
    }
}

/// Whether records exist past what the source has handed over: rows in the open
/// batch, a read position behind the end, or not knowing (no position, no end, or an
/// end older than what was read: the statistics have not caught up with the reads).
pub fn has_backlog(read: Option<i64>, end: Option<i64>, open_rows: usize) -> bool {
    open_rows > 0
        || match (read, end) {
            (Some(r), Some(e)) => r != e,
            _ => true,
        }
}

/// A Kafka consumer over a fixed set of assigned partitions.
pub struct KafkaSource {
    consumer: StreamConsumer<ProgressContext>,
    parts: Vec<PartitionState>,
    index: HashMap<(String, i32), usize>,
    batch_size: usize,
    linger: Duration,
    commands: mpsc::UnboundedReceiver<SourceCommand>,
    command_tx: mpsc::UnboundedSender<SourceCommand>,
}

impl KafkaSource {
    /// Creates the consumer and assigns it `assignments`.
    pub fn new(opts: &SourceOptions, assignments: Vec<Assignment>) -> Result<Self> {
        if opts.batch_size == 0 {
            return Err(Error::Config("batch_size must be at least 1".into()));
        }
        let mut config = consumer_config(
            &opts.brokers,
            &opts.properties,
            &[
                ("group.id", "edgeflow-processor"),
                ("auto.offset.reset", "earliest"),
            ],
        );
        // The partitions' ends come with the statistics: the source needs them, on its
        // own interval (the processor's config refuses the property).
        let interval = PROGRESS_INTERVAL.as_millis().to_string();
        config.set("statistics.interval.ms", &interval);
        let context = ProgressContext {
            read_committed: opts
                .properties
                .get("isolation.level")
                .is_none_or(|v| v != "read_uncommitted"),
            ends: Mutex::new(HashMap::new()),
        };
        let consumer: StreamConsumer<ProgressContext> = config.create_with_context(context)?;
        let mut tpl = TopicPartitionList::new();
        let mut parts = Vec::new();
        let mut index = HashMap::new();
        for a in assignments {
            tpl.add_partition_offset(&a.topic, a.partition, kafka_offset(a.start))?;
            if index
                .insert((a.topic.clone(), a.partition), parts.len())
                .is_some()
            {
                return Err(Error::Config(format!(
                    "partition {}/{} is assigned twice",
                    a.topic, a.partition
                )));
            }
            parts.push(PartitionState::new(a));
        }
        consumer.assign(&tpl)?;
        let (command_tx, commands) = mpsc::unbounded_channel();
        Ok(Self {
            consumer,
            parts,
            index,
            batch_size: opts.batch_size,
            linger: opts.linger,
            commands,
            command_tx,
        })
    }

    /// Where to send [`SourceCommand`]s to the running source.
    pub fn commands(&self) -> mpsc::UnboundedSender<SourceCommand> {
        self.command_tx.clone()
    }

    /// Carries out a command; false when the receiver is gone.
    async fn command(&mut self, c: SourceCommand, tx: &mpsc::Sender<SourceEvent>) -> Result<bool> {
        match c {
            SourceCommand::Add(a) => {
                let key = (a.topic.clone(), a.partition);
                if self.index.contains_key(&key) {
                    tracing::error!(topic = %a.topic, partition = a.partition, "asked to read a partition already read; ignored");
                    return Ok(true);
                }
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition_offset(&a.topic, a.partition, kafka_offset(a.start))?;
                self.consumer.incremental_assign(&tpl)?;
                self.index.insert(key, self.parts.len());
                self.parts.push(PartitionState::new(a));
                Ok(true)
            }
            SourceCommand::Remove { topic, partition } => {
                if let Some(i) = self.index.remove(&(topic.clone(), partition)) {
                    let mut tpl = TopicPartitionList::new();
                    tpl.add_partition(&topic, partition);
                    self.consumer.incremental_unassign(&tpl)?;
                    self.parts.remove(i);
                    self.index = self
                        .parts
                        .iter()
                        .enumerate()
                        .map(|(i, p)| ((p.topic.clone(), p.partition), i))
                        .collect();
                }
                Ok(tx
                    .send(SourceEvent::Removed { topic, partition })
                    .await
                    .is_ok())
            }
        }
    }

    /// Consumes until `shutdown` resolves or the receiver is dropped, sending batches
    /// and dead letters to `tx`. Open batches are flushed on shutdown.
    pub async fn run(
        mut self,
        tx: mpsc::Sender<SourceEvent>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<()> {
        tokio::pin!(shutdown);
        let mut progress = tokio::time::interval(PROGRESS_INTERVAL);
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                Some(c) = self.commands.recv() => {
                    if !self.command(c, &tx).await? {
                        return Ok(());
                    }
                }
                _ = progress.tick() => {
                    if !self.report_backlogs(&tx).await {
                        return Ok(());
                    }
                }
                _ = linger => {
                    let now = Instant::now();
                    for i in 0..self.parts.len() {
                        if self.parts[i].opened.is_some_and(|t| t + self.linger <= now)
                            && !self.flush(i, &tx).await?
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
                    p.read_to = Some(msg.offset() + 1);
                    match p.decoder.push_at(&raw, now_ms()) {
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
                    if self.parts[i].decoder.len() >= self.batch_size && !self.flush(i, &tx).await? {
                        return Ok(());
                    }
                }
            }
        }
        for i in 0..self.parts.len() {
            if !self.flush(i, &tx).await? {
                break;
            }
        }
        Ok(())
    }

    /// Reports every partition whose backlog changed; false when the receiver is gone.
    async fn report_backlogs(&mut self, tx: &mpsc::Sender<SourceEvent>) -> bool {
        let ends = self
            .consumer
            .context()
            .ends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let positions = match self.consumer.position() {
            Ok(tpl) => tpl,
            Err(e) => {
                tracing::debug!(error = %e, "no consumer positions; using the offsets read");
                TopicPartitionList::new()
            }
        };
        for p in &mut self.parts {
            let e = ends
                .get(&(p.topic.clone(), p.partition))
                .copied()
                .unwrap_or_default();
            if let (StartOffset::End, Some(end), None) = (p.start, e.end, p.read_to) {
                // Reading started at the end: the end first seen is where it started.
                p.start = StartOffset::At(end);
            }
            let position = positions
                .find_partition(&p.topic, p.partition)
                .and_then(|t| match t.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                });
            let consumed = match (position, p.read_to) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            let backlog = has_backlog(read_position(consumed, p.start, e), e.end, p.decoder.len());
            if p.reported != Some(backlog) {
                p.reported = Some(backlog);
                let ev = SourceEvent::Backlog {
                    topic: p.topic.clone(),
                    partition: p.partition,
                    backlog,
                };
                if tx.send(ev).await.is_err() {
                    return false;
                }
            }
        }
        true
    }

    /// Sends partition `i`'s open batch; false when the receiver is gone. A batch
    /// that cannot be closed stops the source with an error (its records are not
    /// skipped: they are read again when the processor restarts).
    async fn flush(&mut self, i: usize, tx: &mpsc::Sender<SourceEvent>) -> Result<bool> {
        let p = &mut self.parts[i];
        p.opened = None;
        let max_event_time = p.decoder.max_event_time();
        let batch = match p.decoder.finish() {
            Ok(Some(b)) => b,
            Ok(None) => return Ok(true),
            Err(e) => {
                return Err(Error::Batch {
                    topic: p.topic.clone(),
                    partition: p.partition,
                    next_offset: p.next_offset,
                    message: e.to_string(),
                })
            }
        };
        let ev = SourceEvent::Batch(PartitionBatch {
            topic: p.topic.clone(),
            partition: p.partition,
            batch,
            next_offset: p.next_offset,
            max_event_time,
        });
        Ok(tx.send(ev).await.is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A statistics report shaped as librdkafka writes it (fields trimmed): topic
    /// `t` with partition 0 fetched (an open transaction: last stable offset 110,
    /// high watermark 120), partition 1 not fetched yet, and the internal partition -1.
    const STATS: &str = r#"{
        "name": "rdkafka#consumer-1", "type": "consumer", "ts": 1, "brokers": {},
        "topics": {"t": {"topic": "t", "partitions": {
            "0": {"partition": 0, "fetch_state": "active", "lo_offset": 5,
                  "hi_offset": 120, "ls_offset": 110, "app_offset": 100,
                  "next_offset": 120, "consumer_lag": -1},
            "1": {"partition": 1, "fetch_state": "none", "lo_offset": -1001,
                  "hi_offset": -1001, "ls_offset": -1001},
            "-1": {"partition": -1, "lo_offset": -1001, "hi_offset": -1001,
                   "ls_offset": -1001}
        }}}
    }"#;

    fn ends(read_committed: bool) -> BTreeMap<(String, i32), PartitionEnds> {
        partition_ends(STATS.as_bytes(), read_committed)
            .expect("parses")
            .into_iter()
            .collect()
    }

    #[test]
    fn statistics_give_each_partitions_end() {
        let committed = ends(true);
        assert_eq!(committed.len(), 2, "the internal partition is left out");
        let p0 = committed[&("t".to_string(), 0)];
        assert_eq!(
            p0,
            PartitionEnds {
                start: Some(5),
                end: Some(110)
            },
            "read_committed ends at the last stable offset"
        );
        assert_eq!(
            committed[&("t".to_string(), 1)],
            PartitionEnds::default(),
            "not fetched yet: unknown"
        );
        assert_eq!(ends(false)[&("t".to_string(), 0)].end, Some(120));
        assert!(partition_ends(b"not json", true).is_err());
    }

    #[test]
    fn a_partition_is_caught_up_only_when_known_to_be() {
        let e = PartitionEnds {
            start: Some(5),
            end: Some(110),
        };
        // Read up to the end, nothing in the open batch.
        assert!(!has_backlog(
            read_position(Some(110), StartOffset::Beginning, e),
            e.end,
            0
        ));
        // Behind the end, or rows still in the open batch.
        assert!(has_backlog(
            read_position(Some(100), StartOffset::Beginning, e),
            e.end,
            0
        ));
        assert!(has_backlog(
            read_position(Some(110), StartOffset::Beginning, e),
            e.end,
            3
        ));
        // Nothing read yet: from the beginning there is data; from a checkpoint at the
        // end there is none; an offset before the log start reads from the log start.
        assert!(has_backlog(
            read_position(None, StartOffset::Beginning, e),
            e.end,
            0
        ));
        assert!(!has_backlog(
            read_position(None, StartOffset::At(110), e),
            e.end,
            0
        ));
        assert_eq!(read_position(None, StartOffset::At(2), e), Some(5));
        assert_eq!(read_position(None, StartOffset::At(500), e), Some(5));
        // Read past the end the statistics last gave: that end is stale, so unknown.
        assert!(has_backlog(Some(115), e.end, 0));
        let empty = PartitionEnds {
            start: Some(7),
            end: Some(7),
        };
        assert!(!has_backlog(
            read_position(None, StartOffset::Beginning, empty),
            empty.end,
            0
        ));
        // Unknown end or unknown position: not known to be caught up.
        assert!(has_backlog(Some(110), None, 0));
        assert!(has_backlog(
            read_position(None, StartOffset::End, e),
            e.end,
            0
        ));
        assert!(has_backlog(
            read_position(None, StartOffset::Beginning, PartitionEnds::default()),
            None,
            0
        ));
    }
}
