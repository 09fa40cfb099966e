//! The agent: wires the MQTT source, decoder, window aggregator, disk logs and forwarder.
//!
//! Durability protocol (aggregate mode):
//! 1. Each decoded reading is appended to the **input journal**; a group commit fsyncs
//!    the journal, and only then are the MQTT messages in that commit acknowledged.
//! 2. Readings (and wall-clock ticks, also journaled) drive the pure window
//!    [`Aggregator`]; closed windows are appended to the **forward log**.
//! 3. Every `store.snapshot_interval` the forward log is fsynced, the aggregator state is
//!    written atomically to `window.snapshot` together with the next journal sequence
//!    `P`, and the journal is truncated before `P`.
//! 4. On start, the snapshot is loaded and the journal replayed from `P`. The aggregator is
//!    deterministic, so windows re-emitted by the replay are exact duplicates (same
//!    identity, same values) of ones already in the forward log.
//!
//! In pass-through mode readings go straight to the forward log, which is fsynced before
//! acknowledging. Rejected payloads go to the forward log (dead-letter topic) and are
//! synced before their acknowledgement in both modes.
//!
//! Here: the wiring ([`run`]) and the pipeline's state. Its parts: `pipeline` (the
//! loop: MQTT messages in, decoding, journaling), `commit` (the group commit and the
//! windows it closes), `snapshot` (window snapshots and recovery).

mod commit;
mod pipeline;
mod snapshot;

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::config::{EdgeConfig, Encoding, Mode};
use crate::decode::{DecodeBuf, Decoder};
use crate::disklog::{DiskLog, DiskLogConfig};
use crate::metrics::Metrics;
use crate::mqtt::AckToken;
use crate::quarantine::Quarantine;
use crate::redelivery::Deliveries;
use crate::topic::TopicPattern;
use crate::window::{Aggregate, Aggregator};
use crate::{Error, Result};

/// Most payloads folded into one group commit.
const MAX_BATCH: usize = 4096;
/// How long the forwarder may keep delivering after shutdown before leaving the rest on disk.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// Runs the agent until `shutdown` becomes true.
pub async fn run(cfg: EdgeConfig, shutdown: watch::Receiver<bool>) -> Result<()> {
    let metrics = Metrics::new();
    let listen = cfg.metrics.listen.parse().map_err(|_| {
        Error::Config(format!(
            "metrics.listen: `{}` is not an address",
            cfg.metrics.listen
        ))
    })?;
    let mut srv_shutdown = shutdown.clone();
    let (addr, metrics_task) = crate::metrics::serve(listen, metrics.clone(), async move {
        let _ = srv_shutdown.wait_for(|s| *s).await;
    })
    .await
    .map_err(|e| {
        Error::io(
            "binding the metrics listener",
            PathBuf::from(&cfg.metrics.listen),
            e,
        )
    })?;
    tracing::info!(%addr, "metrics listening on {addr}");

    std::fs::create_dir_all(&cfg.data_dir)
        .map_err(|e| Error::io("creating data_dir", &cfg.data_dir, e))?;
    let (forward, rec) = DiskLog::open(DiskLogConfig {
        dir: cfg.data_dir.join("forward"),
        segment_bytes: cfg.store.segment_bytes.0,
        max_bytes: cfg.store.max_bytes.0,
        full_policy: cfg.store.full_policy,
    })?;
    tracing::info!(
        pending = rec.records,
        bytes = rec.bytes,
        torn_bytes = rec.torn_bytes_skipped,
        "forward log opened"
    );
    let forward = Arc::new(Mutex::new(forward));

    let mut pipe = Pipeline::new(&cfg, forward.clone(), metrics.clone(), shutdown.clone())?;
    pipe.recover().await?;

    crate::forward::check_config(&cfg.kafka)?;
    let data_ready = Arc::new(Notify::new());
    let (fwd_stop_tx, fwd_stop_rx) = watch::channel(false);
    let forwarder = tokio::spawn(crate::forward::run(
        forward.clone(),
        Quarantine::new(&cfg.data_dir),
        data_ready.clone(),
        cfg.kafka.clone(),
        metrics.clone(),
        fwd_stop_rx,
        DRAIN_GRACE,
    ));
    data_ready.notify_one();

    let (acker, rx, mqtt_task) = crate::mqtt::start(&cfg, metrics.clone(), shutdown.clone())?;
    metrics.pipeline_alive.store(true, Relaxed);
    let result = pipe.run(rx, &acker, &data_ready).await;
    metrics.pipeline_alive.store(false, Relaxed);
    if let Err(e) = &result {
        tracing::error!(error = %e, "pipeline stopped");
    }
    let _ = fwd_stop_tx.send(true);
    data_ready.notify_one();
    let _ = forwarder.await;
    acker.disconnect().await;
    mqtt_task.abort();
    metrics_task.abort();
    result
}

struct Pipeline {
    gateway: String,
    mode: Mode,
    encoding: Encoding,
    decoder: Decoder,
    subs: Vec<(String, crate::decode::PayloadFormat, Option<TopicPattern>)>,
    forward: Arc<Mutex<DiskLog>>,
    journal: Option<DiskLog>,
    journal_next: u64,
    agg: Aggregator,
    /// The last journaled MQTT deliveries, to recognise a broker's redelivery.
    deliveries: Deliveries,
    snapshot_path: PathBuf,
    quarantine: Quarantine,
    metrics: Arc<Metrics>,
    commit_interval: Duration,
    snapshot_interval: Duration,
    tick_interval: Duration,
    // scratch buffers
    buf: DecodeBuf,
    out: Vec<Aggregate>,
    enc: Vec<u8>,
    rec: Vec<u8>,
    // state of the current group commit
    pending_acks: Vec<AckToken>,
    journal_dirty: bool,
    forward_dirty: bool,
    forward_must_sync: bool,
    shutdown: watch::Receiver<bool>,
}
