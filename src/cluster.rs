//! The cluster's I/O shell: the control log on Kafka, read and appended by every
//! processor. What the records mean and what follows from them is decided by the
//! pure fold in [`edgeflow_stream::cluster`]; this module only moves records:
//!
//! - [`ControlLog`]: the single-partition control topic (created when absent), JSON
//!   records appended with the delivery guarantee and read in offset order;
//! - [`fold_to_end`]: catches a fold up with everything appended so far;
//! - [`Member`]: joins with a new incarnation, heartbeats at a fixed interval with the
//!   partitions' loads, folds every record and publishes what it computes (a
//!   [`View`]); it stops heartbeating the moment the fold declares it dead.
//!
//! A record that is not valid JSON of a known type is skipped by every member alike
//! (the fold stays the same everywhere), logged and counted in
//! [`View::undecodable`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use edgeflow_stream::cluster::{
    ControlConfig, ControlState, Event, LoadReport, PartitionId, Record,
};
use edgeflow_wire::kafka::{client_config, consumer_config, producer_config};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::watch;

use crate::processor::config::ProcessorConfig;
use crate::processor::node::topic_partitions;

/// How long a Kafka request of the control log may take before it is an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The control topic: appended by every processor, read by every processor.
pub struct ControlLog {
    topic: String,
    brokers: String,
    producer: FutureProducer,
    consumer: StreamConsumer,
}

impl ControlLog {
    /// Opens `topic` on `brokers`, creating it with one partition when it does not
    /// exist, and reads it from offset `from`. A topic with more than one partition is
    /// refused: the fold needs one order of records.
    pub async fn open(
        brokers: &str,
        properties: &BTreeMap<String, String>,
        topic: &str,
        from: u64,
    ) -> Result<Self> {
        create_control_topic(brokers, properties, topic).await?;
        // Records are tiny and every member waits for them: no batching delay on
        // either side.
        let producer: FutureProducer = producer_config(brokers, properties, &[("linger.ms", "0")])
            .create()
            .context("creating the control log's producer")?;
        let consumer: StreamConsumer = consumer_config(
            brokers,
            properties,
            &[
                ("group.id", "edgeflow-control"),
                ("fetch.wait.max.ms", "10"),
                ("fetch.error.backoff.ms", "50"),
            ],
        )
        .create()
        .context("creating the control log's consumer")?;
        let partitions = partition_count(&consumer, topic, brokers)?;
        if partitions != 1 {
            bail!(
                "the control topic `{topic}` has {partitions} partitions; it needs exactly one \
                 (one order of records for every processor): give `cluster.control_topic` a \
                 topic of its own"
            );
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Offset(from as i64))?;
        consumer.assign(&tpl)?;
        Ok(ControlLog {
            topic: topic.to_string(),
            brokers: brokers.to_string(),
            producer,
            consumer,
        })
    }

    /// The control topic's name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Appends `record`; returns its offset once the broker acknowledged it.
    pub async fn append(&self, record: &Record) -> Result<u64> {
        let payload = serde_json::to_vec(record)?;
        let delivered = self
            .producer
            .send(
                FutureRecord::<(), _>::to(&self.topic).payload(&payload),
                REQUEST_TIMEOUT,
            )
            .await
            .map_err(|(e, _)| {
                anyhow!(
                    "appending to the control topic `{}` on {}: {e}",
                    self.topic,
                    self.brokers
                )
            })?;
        Ok(delivered.offset as u64)
    }

    /// The next record and its offset; `None` for a record that is not one (skipped
    /// by every member alike).
    pub async fn next(&self) -> Result<(u64, Option<Record>)> {
        let m = self.consumer.recv().await.with_context(|| {
            format!(
                "reading the control topic `{}` on {}",
                self.topic, self.brokers
            )
        })?;
        let offset = m.offset() as u64;
        let record = match m.payload().map(serde_json::from_slice::<Record>) {
            Some(Ok(r)) => Some(r),
            Some(Err(e)) => {
                tracing::warn!(offset, error = %e, topic = %self.topic, "a control record that is not one; skipped");
                None
            }
            None => {
                tracing::warn!(offset, topic = %self.topic, "an empty control record; skipped");
                None
            }
        };
        Ok((offset, record))
    }

    /// The offset the next record appended will get.
    pub fn end(&self) -> Result<u64> {
        let (_, high) = self
            .consumer
            .fetch_watermarks(&self.topic, 0, REQUEST_TIMEOUT)
            .with_context(|| {
                format!(
                    "reading the end of the control topic `{}` on {}",
                    self.topic, self.brokers
                )
            })?;
        Ok(high.max(0) as u64)
    }
}

async fn create_control_topic(
    brokers: &str,
    properties: &BTreeMap<String, String>,
    topic: &str,
) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = client_config(brokers, properties, &[])
        .create()
        .context("creating the Kafka admin client")?;
    let new = NewTopic::new(topic, 1, TopicReplication::Fixed(1));
    let results = admin
        .create_topics(
            [&new],
            &AdminOptions::new().request_timeout(Some(REQUEST_TIMEOUT)),
        )
        .await
        .with_context(|| format!("creating the control topic `{topic}` on {brokers}"))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => bail!("creating the control topic `{t}` on {brokers}: {e}"),
        }
    }
    Ok(())
}

fn partition_count(consumer: &StreamConsumer, topic: &str, brokers: &str) -> Result<usize> {
    let md = consumer
        .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
        .with_context(|| format!("reading the metadata of `{topic}` from {brokers}"))?;
    Ok(md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map_or(0, |t| t.partitions().len()))
}

/// Folds every record of `log` up to its end now into `state`; returns how many
/// records were not records (skipped).
pub async fn fold_to_end(log: &ControlLog, state: &mut ControlState) -> Result<u64> {
    let end = log.end()?;
    let mut undecodable = 0;
    while state.next_offset() < end {
        let (offset, record) = log.next().await?;
        match record {
            Some(r) => {
                state.apply(offset, &r);
            }
            None => undecodable += 1,
        }
    }
    Ok(undecodable)
}

/// What a member has folded so far.
#[derive(Clone, Debug)]
pub struct View {
    pub state: ControlState,
    /// The fold declared this member's incarnation dead (or replaced): it stopped
    /// heartbeating and must stop writing.
    pub fenced: bool,
    /// Control records that were not records, skipped.
    pub undecodable: u64,
    /// When the member last folded a record of its own (its join or a heartbeat): it
    /// could append to the log and read it then. See [`Member::lease`].
    pub renewed: Option<Instant>,
}

/// The loads of the partitions a member owns, asked for at each heartbeat.
pub type LoadSource = Arc<dyn Fn() -> Vec<LoadReport> + Send + Sync>;

/// How a member takes part.
#[derive(Clone)]
pub struct MemberConfig {
    pub id: String,
    /// Its share of the load relative to the others (1.0: equal).
    pub capacity: f64,
    pub heartbeat_interval: Duration,
    pub control: ControlConfig,
    /// Every partition the cluster assigns (the same set on every member).
    pub partitions: BTreeSet<PartitionId>,
}

/// A running member of the cluster: it heartbeats and folds the log in a task.
pub struct Member {
    pub id: String,
    pub incarnation: u64,
    log: Arc<ControlLog>,
    /// The last complete checkpoint epoch (0: none yet), sent with the heartbeats.
    epoch: Arc<AtomicU64>,
    lease: Duration,
    view: watch::Receiver<View>,
    /// `true`: leave (append `leave` and stop).
    stop: watch::Sender<bool>,
    task: tokio::sync::Mutex<Option<tokio::task::JoinHandle<Result<()>>>>,
}

impl Member {
    /// Catches up with the log, joins with an incarnation above every one this id
    /// used (the log's end offset), and starts heartbeating.
    pub async fn join(log: ControlLog, config: MemberConfig, loads: LoadSource) -> Result<Member> {
        let mut state = ControlState::new(config.control.clone(), config.partitions.clone())?;
        let undecodable = fold_to_end(&log, &mut state).await?;
        let before = state
            .members()
            .get(&config.id)
            .map_or(0, |m| m.incarnation + 1);
        let incarnation = log.end()?.max(before);
        log.append(&Record::Join {
            member: config.id.clone(),
            incarnation,
            capacity: config.capacity,
        })
        .await?;
        let (tx, view) = watch::channel(View {
            state: state.clone(),
            fenced: false,
            undecodable,
            renewed: None,
        });
        let (stop, stopped) = watch::channel(false);
        let log = Arc::new(log);
        let epoch = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(run_member(
            log.clone(),
            epoch.clone(),
            config.clone(),
            incarnation,
            state,
            undecodable,
            loads,
            tx,
            stopped,
        ));
        Ok(Member {
            id: config.id,
            incarnation,
            log,
            epoch,
            lease: config.heartbeat_interval
                * config.control.dead_after_heartbeats.saturating_sub(1),
            view,
            stop,
            task: tokio::sync::Mutex::new(Some(task)),
        })
    }

    /// What the member has folded so far, updated with every record.
    pub fn view(&self) -> watch::Receiver<View> {
        self.view.clone()
    }

    /// Says that the member, asked to release `partition` ([`Duty::Release`]), has
    /// written its state as checkpoint `checkpoint_epoch` and stopped processing it:
    /// the partition goes to its new owner.
    ///
    /// [`Duty::Release`]: edgeflow_stream::cluster::Duty::Release
    pub async fn released(
        &self,
        partition: PartitionId,
        generation: u64,
        checkpoint_epoch: u64,
    ) -> Result<()> {
        self.log
            .append(&Record::Released {
                member: self.id.clone(),
                incarnation: self.incarnation,
                partition,
                generation,
                checkpoint_epoch,
            })
            .await
            .map(|_| ())
    }

    /// How long after [`View::renewed`] the member may still write: one heartbeat
    /// interval less than the others take to declare it dead (`dead_after_heartbeats`
    /// intervals after its last heartbeat), with clocks that run at the same rate. A
    /// node past its lease (paused, cut off from the log) must not write until it
    /// renews it.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Whether the lease holds now.
    pub fn lease_holds(&self) -> bool {
        self.view
            .borrow()
            .renewed
            .is_some_and(|t| t.elapsed() < self.lease)
    }

    /// The member completed checkpoint `epoch`: the next heartbeats say so.
    pub fn checkpointed(&self, epoch: u64) {
        self.epoch.fetch_max(epoch, Ordering::Relaxed);
    }

    /// Leaves the cluster on purpose (`leave` record: its partitions are free at
    /// once) and stops.
    pub async fn leave(&self) -> Result<()> {
        self.stop.send_replace(true);
        match self.task.lock().await.take() {
            Some(t) => t.await.context("the member task panicked")?,
            None => Ok(()),
        }
    }

    /// Stops heartbeating without a word, as a crashed process would (the others
    /// declare it dead after their `dead_after_heartbeats` heartbeats).
    pub async fn vanish(&self) {
        if let Some(t) = self.task.lock().await.take() {
            t.abort();
            let _ = t.await;
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_member(
    log: Arc<ControlLog>,
    epoch: Arc<AtomicU64>,
    config: MemberConfig,
    incarnation: u64,
    mut state: ControlState,
    mut undecodable: u64,
    loads: LoadSource,
    view: watch::Sender<View>,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let mut beat = tokio::time::interval(config.heartbeat_interval);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0;
    let mut renewed = None;
    loop {
        tokio::select! {
            changed = stop.changed() => {
                // The member was dropped: stop, as a crashed process does.
                if changed.is_err() {
                    return Ok(());
                }
                if *stop.borrow() {
                    log.append(&Record::Leave { member: config.id.clone(), incarnation }).await?;
                    return Ok(());
                }
            }
            _ = beat.tick() => {
                seq += 1;
                log.append(&Record::Heartbeat {
                    member: config.id.clone(),
                    incarnation,
                    seq,
                    loads: loads(),
                    checkpoint_epoch: Some(epoch.load(Ordering::Relaxed)).filter(|e| *e > 0),
                })
                .await?;
            }
            next = log.next() => {
                let (offset, record) = next?;
                let mut fenced = false;
                match record {
                    Some(r) => {
                        let own = r.member() == config.id
                            && r.incarnation() == incarnation
                            && matches!(r, Record::Join { .. } | Record::Heartbeat { .. });
                        if own {
                            renewed = Some(Instant::now());
                        }
                        // Dead, or replaced by a newer incarnation of this id.
                        for e in state.apply(offset, &r) {
                            if let Event::Fenced { member, incarnation: i } = &e {
                                fenced |= *member == config.id && *i == incarnation;
                            }
                        }
                    }
                    None => undecodable += 1,
                }
                view.send_replace(View { state: state.clone(), fenced, undecodable, renewed });
                if fenced {
                    tracing::error!(member = %config.id, incarnation, "declared dead by the cluster; stopped heartbeating");
                    return Ok(());
                }
            }
        }
    }
}

/// The fold as an operator reads it: members, the generation, each partition's holder,
/// target owner and load, and `Δ`.
pub fn status_text(state: &ControlState, topic: &str, undecodable: u64) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let cfg = state.config();
    let _ = writeln!(
        out,
        "control topic `{topic}`: {} records folded ({undecodable} not records), generation {}, \
         delta {:.4} (tolerance {})",
        state.next_offset(),
        state.generation(),
        state.delta(),
        cfg.tolerance
    );
    let _ = writeln!(out, "members:");
    let _ = writeln!(
        out,
        "  {:<20} {:>12} {:<5} {:>10} {:>8} {:>16}",
        "member", "incarnation", "state", "heartbeats", "capacity", "checkpoint_epoch"
    );
    for (id, m) in state.members() {
        let _ = writeln!(
            out,
            "  {:<20} {:>12} {:<5} {:>10} {:>8} {:>16}",
            id,
            m.incarnation,
            if m.live { "live" } else { "gone" },
            m.last_seq,
            m.capacity,
            m.checkpoint_epoch
                .map_or("-".to_string(), |e| e.to_string())
        );
    }
    let loads = state.loads();
    let _ = writeln!(out, "partitions:");
    let _ = writeln!(
        out,
        "  {:<30} {:<20} {:>10} {:<9} {:<20} {:>12}",
        "partition", "holder", "generation", "state", "target", "load"
    );
    for p in state.partitions() {
        let h = state.holdings().get(p);
        let _ = writeln!(
            out,
            "  {:<30} {:<20} {:>10} {:<9} {:<20} {:>12.3}",
            p.to_string(),
            h.map_or("-", |h| h.member.as_str()),
            h.map_or("-".to_string(), |h| h.generation.to_string()),
            match h {
                None => "free",
                Some(h) if h.releasing => "releasing",
                Some(_) => "owned",
            },
            state.target().get(p).map_or("-", String::as_str),
            loads.get(p).map_or(0.0, |l| l.load)
        );
    }
    out
}

/// Every partition the processors of `config` share: each stream's configured
/// partitions, or all of its topic's.
pub fn cluster_partitions(config: &ProcessorConfig) -> Result<BTreeSet<PartitionId>> {
    let consumer: rdkafka::consumer::BaseConsumer =
        client_config(&config.kafka.brokers, &config.kafka.properties, &[]).create()?;
    let mut out = BTreeSet::new();
    for s in &config.streams {
        let parts = if s.partitions.is_empty() {
            topic_partitions(&consumer, config, &s.topic)?
        } else {
            s.partitions.clone()
        };
        out.extend(parts.into_iter().map(|p| PartitionId::new(&s.topic, p)));
    }
    Ok(out)
}

/// The cluster of `config` as its control log says now: the fold of every record
/// appended so far, and how many were not records.
pub async fn status(config: &ProcessorConfig) -> Result<(ControlState, u64)> {
    let cluster = config
        .cluster
        .as_ref()
        .ok_or_else(|| anyhow!("the config has no [cluster] section"))?;
    let log = ControlLog::open(
        &config.kafka.brokers,
        &config.kafka.properties,
        &cluster.control_topic,
        0,
    )
    .await?;
    let mut state = ControlState::new(cluster.control(), cluster_partitions(config)?)?;
    let undecodable = fold_to_end(&log, &mut state).await?;
    Ok((state, undecodable))
}
