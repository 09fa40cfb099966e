//! The node's part in a cluster (`[cluster]`): it joins the control log, and acts on
//! what the fold says it must do ([`Duty`]):
//!
//! - `Own` a partition it does not read: find the partition's newest state among every
//!   member's checkpoints (the highest generation, then the newest epoch:
//!   [`latest_state_of`]), take the partition's share out of that epoch (restored into
//!   a scratch engine, then released from it), adopt it, and read the partition from
//!   the epoch's offset; with no state anywhere, start where the stream's `start` says;
//! - `Release` a partition: stop reading it, and once the source says its last batch
//!   is through, take a checkpoint (it holds the partition's state and offset), drop
//!   the partition, and append `released` with that epoch;
//! - when the fold declares this node dead, stop at once, writing nothing more (no last
//!   checkpoint, no sink flush).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use edgeflow_ingest::resume::fresh;
use edgeflow_ingest::source::{Assignment, SourceCommand, StartOffset};
use edgeflow_stream::checkpoint::{latest_state_of, CheckpointStore, Manifest};
use edgeflow_stream::cluster::{Duty, LoadReport, PartitionId};
use edgeflow_wire::clock::now_ms;
use edgeflow_wire::kafka::client_config;
use rdkafka::consumer::BaseConsumer;
use tokio::sync::{mpsc, watch};

use super::Runner;
use crate::cluster::{ControlLog, Member, MemberConfig, View};
use crate::processor::node::{checkpoint_store_of, partition_ends, resume_from_checkpoint, Node};

/// What the node does in its cluster.
pub(super) struct Role {
    member: Member,
    view: watch::Receiver<View>,
    source: mpsc::UnboundedSender<SourceCommand>,
    /// Partitions read, with the generation they are held with.
    owned: BTreeMap<PartitionId, u64>,
    /// Partitions being released: their generation, and whether the source has
    /// handed over their last batch.
    releasing: BTreeMap<PartitionId, (u64, bool)>,
    /// Rows per owned partition, recently.
    rows: Arc<StdMutex<BTreeMap<PartitionId, LoadWindow>>>,
    /// Declared dead: nothing more is written.
    pub(super) fenced: bool,
}

impl Role {
    /// Joins the cluster of `node`'s config.
    pub(super) async fn join(
        node: &Node,
        source: mpsc::UnboundedSender<SourceCommand>,
    ) -> Result<Role> {
        let cfg = &node.config;
        let cluster = cfg
            .cluster
            .as_ref()
            .ok_or_else(|| anyhow!("no [cluster] section"))?;
        let log = ControlLog::open(
            &cfg.kafka.brokers,
            &cfg.kafka.properties,
            &cluster.control_topic,
            0,
        )
        .await?;
        let rows: Arc<StdMutex<BTreeMap<PartitionId, LoadWindow>>> = Arc::default();
        let interval = cluster.heartbeat_interval.0;
        let loads = {
            let rows = rows.clone();
            Arc::new(move || {
                let now = Instant::now();
                let mut rows = rows.lock().unwrap_or_else(|e| e.into_inner());
                rows.iter_mut()
                    .map(|(p, w)| LoadReport {
                        partition: p.clone(),
                        load: w.rate(now),
                        state_bytes: 0,
                    })
                    .collect()
            })
        };
        let member = Member::join(
            log,
            MemberConfig {
                id: cfg.node_id.clone(),
                capacity: cluster.capacity,
                heartbeat_interval: interval,
                control: cluster.control(),
                partitions: crate::cluster::cluster_partitions(cfg)?,
            },
            loads,
        )
        .await?;
        tracing::info!(member = %member.id, incarnation = member.incarnation, topic = %cluster.control_topic, "joined the cluster");
        let _ = node.cluster_view.set(member.view());
        Ok(Role {
            view: member.view(),
            member,
            source,
            owned: BTreeMap::new(),
            releasing: BTreeMap::new(),
            rows,
            fenced: false,
        })
    }

    /// What the member has folded, to wait on.
    pub(super) fn view(&self) -> watch::Receiver<View> {
        self.view.clone()
    }

    /// Counts a batch's rows toward its partition's load.
    pub(super) fn observe(&self, topic: &str, partition: i32, rows: usize) {
        let mut r = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = r.get_mut(&PartitionId::new(topic, partition)) {
            w.add(Instant::now(), rows as u64);
        }
    }

    /// Whether batches of this partition are still to be processed (not released).
    pub(super) fn reads(&self, topic: &str, partition: i32) -> bool {
        let p = PartitionId::new(topic, partition);
        self.owned.contains_key(&p) && !self.releasing.get(&p).is_some_and(|r| r.1)
    }

    /// The generation each owned partition is held with.
    pub(super) fn generation(&self, topic: &str, partition: i32) -> u64 {
        self.owned
            .get(&PartitionId::new(topic, partition))
            .copied()
            .unwrap_or(0)
    }

    /// Whether the member's lease holds ([`Member::lease`]).
    pub(super) fn lease_holds(&self) -> bool {
        self.member.lease_holds()
    }

    /// Leaves the cluster (after the last checkpoint): the partitions go to the
    /// others at once.
    pub(super) async fn leave(self) -> Result<()> {
        self.member.leave().await
    }
}

impl Runner {
    /// Acts on what the fold says this node must do now.
    pub(super) async fn on_view(&mut self) -> Result<()> {
        let Some(role) = self.cluster.as_mut() else {
            return Ok(());
        };
        let view = role.view.borrow_and_update().clone();
        if view.fenced {
            role.fenced = true;
            bail!(
                "the cluster declared this node dead (its heartbeats stopped reaching the \
                 control log in time); it stops writing at once and must be restarted to join \
                 again"
            );
        }
        self.node
            .metrics
            .cluster_generation
            .set(i64::try_from(view.state.generation()).unwrap_or(i64::MAX));
        let me = self.node.config.node_id.clone();
        // The lease holds again: the input held meanwhile goes on.
        if self.held.is_some() && self.may_write() {
            tracing::info!("the cluster lease holds again; going on");
            if let Some(ev) = self.held.take() {
                Box::pin(self.on_source_event(ev)).await?;
            }
        }
        let mut to_take = Vec::new();
        for duty in view.state.duties(&me) {
            let role = self.cluster.as_mut().expect("a cluster role");
            match duty {
                Duty::Own {
                    partition,
                    generation,
                    ..
                } if !role.owned.contains_key(&partition) => {
                    to_take.push((partition, generation));
                }
                Duty::Release {
                    partition,
                    generation,
                } if role.owned.contains_key(&partition)
                    && !role.releasing.contains_key(&partition) =>
                {
                    role.releasing
                        .insert(partition.clone(), (generation, false));
                    let _ = role.source.send(SourceCommand::Remove {
                        topic: partition.topic.clone(),
                        partition: partition.partition,
                    });
                    tracing::info!(%partition, generation, "releasing a partition");
                }
                _ => {}
            }
        }
        if !to_take.is_empty() {
            // Every member's checkpoints are listed once for all the partitions taken.
            let found = Checkpoints::list(&self.node, &view).await?;
            for (partition, generation) in to_take {
                self.acquire(&partition, generation, &found).await?;
            }
        }
        Ok(())
    }

    /// The source handed over the last batch of a partition it stopped reading.
    pub(super) async fn removed(&mut self, topic: String, partition: i32) -> Result<()> {
        let Some(role) = self.cluster.as_mut() else {
            return Ok(());
        };
        if let Some(r) = role.releasing.get_mut(&PartitionId::new(topic, partition)) {
            r.1 = true;
            // The checkpoint that holds it; a failed one is retried at the interval.
            self.on_checkpoint().await;
        }
        Ok(())
    }

    /// After checkpoint `epoch`: the heartbeats report it, and the partitions whose
    /// last batch it holds are dropped and said released.
    pub(super) async fn finish_releases(&mut self, epoch: u64) -> Result<()> {
        let Some(role) = self.cluster.as_ref() else {
            return Ok(());
        };
        role.member.checkpointed(epoch);
        let done: Vec<(PartitionId, u64)> = role
            .releasing
            .iter()
            .filter(|(_, r)| r.1)
            .map(|(p, r)| (p.clone(), r.0))
            .collect();
        for (p, generation) in done {
            // Said first: if it cannot be, the partition stays here, and the next
            // checkpoint tries again.
            let role = self.cluster.as_ref().expect("a cluster role");
            role.member.released(p.clone(), generation, epoch).await?;
            let stream = self.node.topics.get(&p.topic).cloned().unwrap_or_default();
            let key = message_key(&self.node, &stream);
            // The checkpoint holds the state; this node's copy goes.
            self.node
                .engine
                .lock()
                .await
                .release_partition(&stream, p.partition, &key, now_ms())
                .with_context(|| format!("releasing {p}"))?;
            self.offsets.remove(&(p.topic.clone(), p.partition));
            let role = self.cluster.as_mut().expect("a cluster role");
            role.releasing.remove(&p);
            role.owned.remove(&p);
            role.rows
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&p);
            let m = &self.node.metrics;
            m.cluster_released.inc();
            m.cluster_partitions.set(role.owned.len() as i64);
            tracing::info!(partition = %p, generation, epoch, "released a partition");
        }
        Ok(())
    }

    /// Takes a partition over: its newest state, then reading from its offset.
    async fn acquire(
        &mut self,
        p: &PartitionId,
        generation: u64,
        checkpoints: &Checkpoints,
    ) -> Result<()> {
        let node = self.node.clone();
        let cfg = &node.config;
        let stream = node
            .topics
            .get(&p.topic)
            .cloned()
            .ok_or_else(|| anyhow!("the cluster assigned {p}, a topic no stream reads"))?;
        let s = cfg
            .streams
            .iter()
            .find(|s| s.name == stream)
            .ok_or_else(|| anyhow!("no stream `{stream}`"))?;
        let started = std::time::Instant::now();
        let Checkpoints {
            stores,
            manifests,
            consumer,
        } = checkpoints;
        let found = latest_state_of(
            &p.topic,
            p.partition,
            manifests.iter().map(|(n, m)| (n.as_str(), m)),
        )
        .map(|(n, e, o)| (n.to_string(), e, o));
        let now = now_ms();
        let (offset, from) = match found {
            Some((holder, epoch, next)) => {
                let restored = stores[&holder].read(epoch).await?;
                // The epoch holds the holder's whole state: restore it into a scratch
                // engine and take this partition's share out of it.
                let mut scratch = super::super::plan(cfg).await?;
                for src in &restored.manifest.sources {
                    if let Some(st) = node.topics.get(&src.topic) {
                        scratch.add_partition(st, src.partition, now)?;
                    }
                }
                scratch.restore_files(&restored.files, now)?;
                let files: BTreeMap<String, Vec<u8>> = scratch
                    .release_partition(&stream, p.partition, &s.message_key, now)?
                    .into_iter()
                    .collect();
                node.engine
                    .lock()
                    .await
                    .adopt_partition(&stream, p.partition, &files, now)?;
                let r = resume_from_checkpoint(consumer, cfg, &p.topic, p.partition, next)?;
                (r.offset, format!("{holder} epoch {epoch}"))
            }
            None => {
                let (lo, hi) = partition_ends(consumer, cfg, &p.topic, p.partition)?;
                node.engine
                    .lock()
                    .await
                    .add_partition(&stream, p.partition, now)?;
                (
                    fresh(s.start == "end", lo, hi).offset,
                    "no checkpoint".into(),
                )
            }
        };
        self.offsets.insert((p.topic.clone(), p.partition), offset);
        let role = self.cluster.as_mut().expect("a cluster role");
        role.owned.insert(p.clone(), generation);
        role.rows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(p.clone(), LoadWindow::new(Instant::now()));
        let format = s.format()?;
        let _ = role.source.send(SourceCommand::Add(Assignment {
            topic: p.topic.clone(),
            partition: p.partition,
            start: StartOffset::At(offset),
            format,
            max_future: Some(s.max_future.0),
        }));
        let m = &self.node.metrics;
        m.cluster_acquired.inc();
        m.cluster_partitions.set(role.owned.len() as i64);
        m.cluster_acquire_seconds
            .set(started.elapsed().as_secs_f64());
        tracing::info!(
            partition = %p,
            generation,
            offset,
            from = %from,
            seconds = started.elapsed().as_secs_f64(),
            "acquired a partition"
        );
        Ok(())
    }
}

/// Every member's complete checkpoints, listed for taking partitions over, and a
/// client for the partitions' offsets.
struct Checkpoints {
    stores: BTreeMap<String, CheckpointStore>,
    /// (member, manifest), every complete epoch of every member.
    manifests: Vec<(String, Manifest)>,
    consumer: BaseConsumer,
}

impl Checkpoints {
    async fn list(node: &Node, view: &View) -> Result<Checkpoints> {
        let cfg = &node.config;
        let mut stores = BTreeMap::new();
        let mut manifests = Vec::new();
        for m in view.state.members().keys() {
            let store = checkpoint_store_of(cfg, m)?;
            for manifest in store.manifests().await.with_context(|| {
                format!("listing the checkpoints of `{m}` to take partitions over")
            })? {
                manifests.push((m.clone(), manifest));
            }
            stores.insert(m.clone(), store);
        }
        let consumer = client_config(&cfg.kafka.brokers, &cfg.kafka.properties, &[]).create()?;
        Ok(Checkpoints {
            stores,
            manifests,
            consumer,
        })
    }
}

/// How long a partition's load is averaged over: batches arrive in bursts, and a
/// heartbeat's interval alone would report them as noise that moves partitions.
const LOAD_WINDOW: Duration = Duration::from_secs(5);

/// A partition's rows over the last [`LOAD_WINDOW`].
struct LoadWindow {
    since: Instant,
    samples: VecDeque<(Instant, u64)>,
}

impl LoadWindow {
    fn new(now: Instant) -> Self {
        LoadWindow {
            since: now,
            samples: VecDeque::new(),
        }
    }

    fn add(&mut self, now: Instant, rows: u64) {
        self.samples.push_back((now, rows));
    }

    /// Rows per second over the window (or since the partition came, if later).
    fn rate(&mut self, now: Instant) -> f64 {
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > LOAD_WINDOW)
        {
            self.samples.pop_front();
        }
        let span = now.duration_since(self.since).min(LOAD_WINDOW);
        let rows: u64 = self.samples.iter().map(|(_, n)| n).sum();
        if span.is_zero() {
            0.0
        } else {
            rows as f64 / span.as_secs_f64()
        }
    }
}

/// The message key column of stream `stream`.
fn message_key(node: &Node, stream: &str) -> String {
    node.config
        .streams
        .iter()
        .find(|s| s.name == stream)
        .map_or_else(|| "sensor".to_string(), |s| s.message_key.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partitions_load_is_its_rows_over_the_last_window() {
        let t0 = Instant::now();
        let mut w = LoadWindow::new(t0);
        let at = |s: f64| t0 + Duration::from_secs_f64(s);
        // Bursts: 1,000 rows every second.
        for s in 0..8 {
            w.add(at(s as f64 + 0.5), 1_000);
        }
        // Two seconds in: two bursts over two seconds.
        assert_eq!(
            LoadWindow {
                since: t0,
                samples: w.samples.iter().copied().take(2).collect()
            }
            .rate(at(2.0)),
            1_000.0
        );
        // Eight seconds in: the five bursts of the last five seconds.
        assert_eq!(w.rate(at(8.0)), 1_000.0);
        assert_eq!(w.samples.len(), 5);
        // Silent since: the rate falls as the bursts leave the window.
        assert_eq!(w.rate(at(11.0)), 400.0);
        assert_eq!(w.rate(at(20.0)), 0.0);
    }
}
