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

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;

use crate::config::{EdgeConfig, Encoding, Mode};
use crate::decode::{DecodeBuf, Decoder, Rejection, Source};
use crate::disklog::{DiskLog, DiskLogConfig, FullPolicy};
use crate::metrics::Metrics;
use crate::mqtt::{AckToken, Acker, Message};
use crate::record::{decode_journal, encode_journal, encode_out, JournalEntry, TopicKind};
use crate::topic::{filter_matches, TopicPattern};
use crate::window::{Aggregate, Aggregator, Input, Snapshot, WindowSpec};
use crate::wire;
use crate::{Error, Result};

/// Most payloads folded into one group commit.
const MAX_BATCH: usize = 4096;
/// How long the forwarder may keep delivering after shutdown before leaving the rest on disk.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// Wall-clock milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The window snapshot file, as read back.
#[derive(Deserialize)]
struct SnapshotFile {
    /// Journal entries before this sequence are reflected in `state`.
    journal_next: u64,
    state: Snapshot,
}

/// The window snapshot file, as written: streamed from the live state, no copy.
#[derive(Serialize)]
struct SnapshotFileRef<'a> {
    journal_next: u64,
    state: crate::window::SnapshotView<'a>,
}

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
    snapshot_path: PathBuf,
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

impl Pipeline {
    fn new(
        cfg: &EdgeConfig,
        forward: Arc<Mutex<DiskLog>>,
        metrics: Arc<Metrics>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Self> {
        let spec = WindowSpec::from_config(&cfg.window);
        let (journal, journal_next) = if cfg.mode == Mode::Aggregate {
            let (j, r) = DiskLog::open(DiskLogConfig {
                dir: cfg.data_dir.join("journal"),
                segment_bytes: cfg.store.segment_bytes.0,
                // The journal is truncated at every snapshot; the bound only guards a
                // stuck snapshot, and blocking (not dropping) keeps acknowledged readings.
                max_bytes: cfg.store.max_bytes.0,
                full_policy: FullPolicy::Block,
            })?;
            tracing::info!(
                records = r.records,
                torn_bytes = r.torn_bytes_skipped,
                "input journal opened"
            );
            (Some(j), r.next_seq)
        } else {
            (None, 0)
        };
        let tick_ms = (spec.size_ms / 10).clamp(100, 1000) as u64;
        Ok(Pipeline {
            gateway: cfg.gateway_id.clone(),
            mode: cfg.mode,
            encoding: cfg.kafka.encoding,
            decoder: Decoder::new(&cfg.decode, cfg.mqtt.max_payload.0 as usize),
            subs: cfg
                .mqtt
                .subscriptions
                .iter()
                .map(|s| (s.filter.clone(), s.format, s.topic_pattern.clone()))
                .collect(),
            forward,
            journal,
            journal_next,
            agg: Aggregator::new(spec),
            snapshot_path: cfg.data_dir.join("window.snapshot"),
            metrics,
            commit_interval: cfg.store.commit_interval.0,
            snapshot_interval: cfg.store.snapshot_interval.0,
            tick_interval: Duration::from_millis(tick_ms),
            buf: DecodeBuf::default(),
            out: Vec::new(),
            enc: Vec::new(),
            rec: Vec::new(),
            pending_acks: Vec::new(),
            journal_dirty: false,
            forward_dirty: false,
            forward_must_sync: false,
            shutdown,
        })
    }

    /// Loads the window snapshot and replays the journal after it.
    async fn recover(&mut self) -> Result<()> {
        let Some(journal) = self.journal.as_mut() else {
            return Ok(());
        };
        let spec = self.agg.spec();
        let mut start = 0;
        match std::fs::read(&self.snapshot_path) {
            Ok(bytes) => {
                let snap: SnapshotFile =
                    serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
                        path: self.snapshot_path.clone(),
                        reason: format!("window snapshot unreadable: {e}"),
                    })?;
                start = snap.journal_next;
                self.agg = Aggregator::restore(spec, snap.state, &mut self.out);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::io(
                    "reading the window snapshot",
                    &self.snapshot_path,
                    e,
                ))
            }
        }
        let mut replayed = 0u64;
        let mut emitted = std::mem::take(&mut self.out);
        for item in journal.replay()? {
            let (seq, bytes) = item?;
            if seq < start {
                continue;
            }
            match decode_journal(&bytes) {
                Ok(JournalEntry::Reading {
                    sensor,
                    site,
                    field,
                    ts,
                    value,
                    arrival,
                }) => {
                    self.agg.ingest(
                        Input {
                            sensor,
                            site,
                            field,
                            ts_ms: ts,
                            value,
                            arrival_ms: arrival,
                            seq,
                        },
                        &mut emitted,
                    );
                }
                Ok(JournalEntry::Tick { now }) => self.agg.tick(now, &mut emitted),
                Err(e) => tracing::error!(seq, error = %e, "undecodable journal entry skipped"),
            }
            replayed += 1;
        }
        self.out = emitted;
        let n = self.out.len();
        self.emit_out().await?;
        tracing::info!(
            snapshot_journal_next = start,
            replayed,
            re_emitted = n,
            sensors = self.agg.sensors(),
            "window state recovered"
        );
        self.snapshot()?;
        Ok(())
    }

    async fn run(
        &mut self,
        mut rx: mpsc::UnboundedReceiver<Message>,
        acker: &Acker,
        data_ready: &Notify,
    ) -> Result<()> {
        let mut shutdown = self.shutdown.clone();
        let mut next_tick = Instant::now() + self.tick_interval;
        let mut next_snapshot = Instant::now() + self.snapshot_interval;
        let mut batch_started: Option<Instant> = None;
        loop {
            let deadline = next_tick.min(next_snapshot);
            let mut handled = 0usize;
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|s| *s) => break,
                m = rx.recv() => match m {
                    Some(m) => { self.handle(m).await?; handled += 1; }
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => {}
            }
            if handled > 0 && batch_started.is_none() {
                batch_started = Some(Instant::now());
            }
            // Take whatever else is already waiting: it joins this group commit.
            while handled < MAX_BATCH {
                match rx.try_recv() {
                    Ok(m) => {
                        self.handle(m).await?;
                        handled += 1;
                    }
                    Err(_) => break,
                }
                if batch_started.is_some_and(|t| t.elapsed() >= self.commit_interval) {
                    break;
                }
            }
            let now = Instant::now();
            if now >= next_tick {
                self.tick().await?;
                next_tick = now + self.tick_interval;
            }
            self.commit(acker, data_ready).await?;
            batch_started = None;
            if now >= next_snapshot {
                self.snapshot()?;
                next_snapshot = Instant::now() + self.snapshot_interval;
            }
        }
        // Graceful shutdown: emit open windows, make everything durable, acknowledge.
        let mut out = std::mem::take(&mut self.out);
        self.agg.flush_all(&mut out);
        self.out = out;
        self.emit_out().await?;
        self.forward_must_sync = true;
        self.commit(acker, data_ready).await?;
        self.snapshot()?;
        tracing::info!("pipeline stopped; open windows flushed to the forward log");
        Ok(())
    }

    async fn handle(&mut self, msg: Message) -> Result<()> {
        self.metrics.payloads_in.fetch_add(1, Relaxed);
        let arrival = now_ms();
        let topic = std::str::from_utf8(&msg.topic).unwrap_or("");
        let sub = self.subs.iter().find(|(f, _, _)| filter_matches(f, topic));
        let decoded = match sub {
            Some((_, format, pattern)) => self.decoder.decode(
                Source {
                    format: *format,
                    pattern: pattern.as_ref(),
                },
                topic,
                &msg.payload,
                arrival,
                &mut self.buf,
            ),
            None => Err(Rejection {
                reason: crate::decode::Reason::UnknownSensor,
                detail: format!(
                    "topic `{}` matches no subscription",
                    String::from_utf8_lossy(&msg.topic)
                ),
            }),
        };
        match decoded {
            Ok(()) => self.accept(arrival).await?,
            Err(rej) => self.dead_letter(&msg, &rej).await?,
        }
        if let Some(t) = msg.ack {
            self.pending_acks.push(t);
        }
        Ok(())
    }

    async fn accept(&mut self, arrival: i64) -> Result<()> {
        let n = self.buf.items.len();
        self.metrics.readings_in.fetch_add(n as u64, Relaxed);
        let site = self.buf.site().map(str::to_string);
        for i in 0..n {
            let item = &self.buf.items[i];
            let (sensor, field, ts, value) = (
                self.buf.sensor(item),
                self.buf.field(item),
                item.ts_ms,
                item.value,
            );
            match self.mode {
                Mode::Passthrough => {
                    let r = wire::ReadingRef {
                        sensor,
                        site: site.as_deref(),
                        field,
                        ts,
                        value,
                    };
                    self.enc.clear();
                    match self.encoding {
                        Encoding::Json => wire::reading_json(&self.gateway, &r, &mut self.enc),
                        Encoding::Binary => wire::reading_binary(&self.gateway, &r, &mut self.enc),
                    }
                    encode_out(
                        &mut self.rec,
                        TopicKind::Readings,
                        sensor.as_bytes(),
                        &[
                            (
                                wire::HEADER_ENCODING,
                                encoding_name(self.encoding).as_bytes(),
                            ),
                            (wire::HEADER_KIND, b"reading"),
                        ],
                        &self.enc,
                    );
                    append_forward(&self.forward, &self.rec, &self.shutdown).await?;
                    self.forward_dirty = true;
                    self.forward_must_sync = true;
                    self.metrics.readings_out.fetch_add(1, Relaxed);
                }
                Mode::Aggregate => {
                    let entry = JournalEntry::Reading {
                        sensor,
                        site: site.as_deref(),
                        field,
                        ts,
                        value,
                        arrival,
                    };
                    encode_journal(&mut self.rec, &entry);
                    let journal = self
                        .journal
                        .as_mut()
                        .ok_or_else(|| Error::Config("journal missing".into()))?;
                    let seq = journal.append(&self.rec)?;
                    self.journal_next = seq + 1;
                    self.journal_dirty = true;
                    let mut out = std::mem::take(&mut self.out);
                    self.agg.ingest(
                        Input {
                            sensor,
                            site: site.as_deref(),
                            field,
                            ts_ms: ts,
                            value,
                            arrival_ms: arrival,
                            seq,
                        },
                        &mut out,
                    );
                    self.out = out;
                }
            }
        }
        if !self.out.is_empty() {
            self.emit_out().await?;
        }
        Ok(())
    }

    async fn dead_letter(&mut self, msg: &Message, rej: &Rejection) -> Result<()> {
        self.metrics.dead_letter(rej.reason);
        tracing::debug!(reason = %rej.reason, detail = %rej.detail, "payload dead-lettered");
        encode_out(
            &mut self.rec,
            TopicKind::DeadLetter,
            &msg.topic,
            &[
                (wire::HEADER_KIND, b"dead-letter"),
                (wire::HEADER_REASON, rej.reason.as_str().as_bytes()),
                (wire::HEADER_DETAIL, rej.detail.as_bytes()),
                (wire::HEADER_MQTT_TOPIC, &msg.topic),
                (wire::HEADER_GATEWAY, self.gateway.as_bytes()),
            ],
            &msg.payload,
        );
        append_forward(&self.forward, &self.rec, &self.shutdown).await?;
        self.forward_dirty = true;
        self.forward_must_sync = true;
        Ok(())
    }

    /// Appends the aggregates in `self.out` to the forward log.
    async fn emit_out(&mut self) -> Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        for a in &out {
            encode_aggregate(
                &self.gateway,
                self.encoding,
                a,
                &mut self.enc,
                &mut self.rec,
            );
            append_forward(&self.forward, &self.rec, &self.shutdown).await?;
            count_aggregate(&self.metrics, a);
        }
        self.out = out;
        self.out.clear();
        // A window boundary closes every sensor's window at once; do not keep that burst's
        // capacity for the quiet seconds in between.
        self.out.shrink_to(1024);
        self.forward_dirty = true;
        let st = self.agg.stats();
        self.metrics.late_readings.store(st.late, Relaxed);
        self.metrics.late_dropped.store(st.late_dropped, Relaxed);
        Ok(())
    }

    async fn tick(&mut self) -> Result<()> {
        if self.mode != Mode::Aggregate {
            return Ok(());
        }
        let now = now_ms();
        encode_journal(&mut self.rec, &JournalEntry::Tick { now });
        let journal = self
            .journal
            .as_mut()
            .ok_or_else(|| Error::Config("journal missing".into()))?;
        let seq = journal.append(&self.rec)?;
        self.journal_next = seq + 1;
        self.journal_dirty = true;
        // A window boundary closes every sensor's window in one tick: write the aggregates
        // into the log as they are emitted instead of collecting them first.
        let (overflow, error, appended) = {
            let mut sink = DirectSink {
                gateway: &self.gateway,
                encoding: self.encoding,
                log: lock(&self.forward),
                enc: &mut self.enc,
                rec: &mut self.rec,
                metrics: &self.metrics,
                overflow: std::mem::take(&mut self.out),
                error: None,
                appended: false,
            };
            self.agg.tick(now, &mut sink);
            (sink.overflow, sink.error, sink.appended)
        };
        self.out = overflow;
        if let Some(e) = error {
            return Err(e);
        }
        self.forward_dirty |= appended;
        // Whatever did not fit (a full log under `block`) waits for room here.
        self.emit_out().await?;
        self.metrics
            .active_sensors
            .store(self.agg.sensors() as u64, Relaxed);
        // Late readings that were dropped emit nothing, so refresh their counters here.
        let st = self.agg.stats();
        self.metrics.late_readings.store(st.late, Relaxed);
        self.metrics.late_dropped.store(st.late_dropped, Relaxed);
        Ok(())
    }

    /// Group commit: fsync what the acknowledgements depend on, then acknowledge.
    async fn commit(&mut self, acker: &Acker, data_ready: &Notify) -> Result<()> {
        if self.journal_dirty {
            if let Some(j) = self.journal.as_mut() {
                tokio::task::block_in_place(|| j.sync())?;
                self.metrics
                    .journal_bytes
                    .store(j.stats().bytes_on_disk, Relaxed);
            }
            self.journal_dirty = false;
        }
        if self.forward_must_sync {
            let fwd = &self.forward;
            tokio::task::block_in_place(|| lock(fwd).sync())?;
            self.forward_must_sync = false;
        }
        if !self.pending_acks.is_empty() {
            acker.ack_all(std::mem::take(&mut self.pending_acks)).await;
            self.metrics.group_commits.fetch_add(1, Relaxed);
        }
        if self.forward_dirty {
            self.forward_dirty = false;
            data_ready.notify_one();
        }
        Ok(())
    }

    /// Snapshots the window state and truncates the journal (aggregate mode).
    fn snapshot(&mut self) -> Result<()> {
        let Some(journal) = self.journal.as_mut() else {
            return Ok(());
        };
        // The aggregates the snapshot no longer covers must be durable first.
        tokio::task::block_in_place(|| lock(&self.forward).sync())?;
        journal.sync()?;
        let file = SnapshotFileRef {
            journal_next: self.journal_next,
            state: self.agg.snapshot_view(),
        };
        write_atomically(&self.snapshot_path, |w| {
            serde_json::to_writer(w, &file).map_err(std::io::Error::other)
        })?;
        if self.journal_next > 0 {
            journal.ack_through(self.journal_next - 1);
        }
        journal.persist_acks()?;
        Ok(())
    }
}

/// Encodes an aggregate as a forward-log record (Kafka key, headers, value) into `rec`.
fn encode_aggregate(
    gateway: &str,
    encoding: Encoding,
    a: &Aggregate,
    enc: &mut Vec<u8>,
    rec: &mut Vec<u8>,
) {
    enc.clear();
    match encoding {
        Encoding::Json => wire::aggregate_json(gateway, a, enc),
        Encoding::Binary => wire::aggregate_binary(gateway, a, enc),
    }
    encode_out(
        rec,
        TopicKind::Aggregates,
        a.sensor.as_bytes(),
        &[
            (wire::HEADER_ENCODING, encoding_name(encoding).as_bytes()),
            (wire::HEADER_KIND, b"aggregate"),
        ],
        enc,
    );
}

fn count_aggregate(metrics: &Metrics, a: &Aggregate) {
    if a.revision == 0 {
        metrics.aggregates_out.fetch_add(1, Relaxed);
    } else {
        metrics.corrections_out.fetch_add(1, Relaxed);
    }
}

/// Appends aggregates to the forward log as the aggregator emits them. Once an append
/// fails (a full log under `block`, or an I/O error) the rest is kept in `overflow`, in
/// order, for the caller.
struct DirectSink<'a> {
    gateway: &'a str,
    encoding: Encoding,
    log: std::sync::MutexGuard<'a, DiskLog>,
    enc: &'a mut Vec<u8>,
    rec: &'a mut Vec<u8>,
    metrics: &'a Metrics,
    overflow: Vec<Aggregate>,
    error: Option<Error>,
    appended: bool,
}

impl Extend<Aggregate> for DirectSink<'_> {
    fn extend<I: IntoIterator<Item = Aggregate>>(&mut self, iter: I) {
        for a in iter {
            if !self.overflow.is_empty() || self.error.is_some() {
                self.overflow.push(a);
                continue;
            }
            encode_aggregate(self.gateway, self.encoding, &a, self.enc, self.rec);
            match self.log.append(self.rec) {
                Ok(_) => {
                    count_aggregate(self.metrics, &a);
                    self.appended = true;
                }
                Err(Error::LogFull { .. }) => self.overflow.push(a),
                Err(e) => {
                    self.error = Some(e);
                    self.overflow.push(a);
                }
            }
        }
    }
}

fn encoding_name(e: Encoding) -> &'static str {
    match e {
        Encoding::Json => wire::ENCODING_JSON,
        Encoding::Binary => wire::ENCODING_BINARY,
    }
}

fn lock(log: &Mutex<DiskLog>) -> std::sync::MutexGuard<'_, DiskLog> {
    log.lock().unwrap_or_else(|p| p.into_inner())
}

/// Appends to the forward log; under the `block` policy waits for room (the MQTT
/// messages stay unacknowledged meanwhile, so the broker holds them).
async fn append_forward(
    log: &Mutex<DiskLog>,
    rec: &[u8],
    shutdown: &watch::Receiver<bool>,
) -> Result<u64> {
    let mut warned = false;
    loop {
        let r = lock(log).append(rec);
        match r {
            Err(Error::LogFull { bytes, max_bytes }) => {
                if !warned {
                    tracing::warn!(
                        bytes,
                        max_bytes,
                        "forward log full; holding MQTT acknowledgements until Kafka drains it"
                    );
                    warned = true;
                }
                if *shutdown.borrow() {
                    return Err(Error::LogFull { bytes, max_bytes });
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

/// Writes a file through `write` into a temporary file, fsyncs and renames it over `path`,
/// then fsyncs the directory: readers see the old or the new file, never a torn one.
fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let f = std::fs::File::create(&tmp).map_err(|e| Error::io("creating a snapshot", &tmp, e))?;
    let mut w = std::io::BufWriter::with_capacity(64 << 10, f);
    write(&mut w).map_err(|e| Error::io("writing a snapshot", &tmp, e))?;
    w.flush()
        .map_err(|e| Error::io("writing a snapshot", &tmp, e))?;
    let f = w
        .into_inner()
        .map_err(|e| Error::io("writing a snapshot", &tmp, e.into_error()))?;
    f.sync_data()
        .map_err(|e| Error::io("syncing a snapshot", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io("renaming a snapshot", path, e))?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}
