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
use crate::quarantine::Quarantine;
use crate::record::{decode_journal, encode_journal, encode_out, JournalEntry, TopicKind};
use crate::redelivery::{digest, Deliveries, Delivery};
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
    /// The last journaled MQTT deliveries (see [`crate::redelivery`]); absent in
    /// snapshots of versions that did not keep them.
    #[serde(default)]
    deliveries: Vec<Delivery>,
}

/// The window snapshot file, as written: streamed from the live state, no copy.
#[derive(Serialize)]
struct SnapshotFileRef<'a> {
    journal_next: u64,
    state: crate::window::SnapshotView<'a>,
    deliveries: Vec<Delivery>,
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
            deliveries: Deliveries::new(delivery_window(cfg)),
            snapshot_path: cfg.data_dir.join("window.snapshot"),
            quarantine: Quarantine::new(&cfg.data_dir),
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
                self.deliveries = Deliveries::restore(self.deliveries.window(), &snap.deliveries);
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
                Ok(JournalEntry::Delivery(d)) => self.deliveries.record(d),
                Err(e) => {
                    let kept = self
                        .quarantine
                        .keep("journal", seq, &bytes, &e.to_string())?;
                    self.metrics.quarantined_records.inc();
                    tracing::error!(seq, error = %e, kept = %kept.display(), "undecodable journal entry quarantined");
                }
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
        self.snapshot().await?;
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
            let tick = now >= next_tick;
            if tick {
                next_tick = now + self.tick_interval;
            }
            self.commit(acker, data_ready, tick).await?;
            batch_started = None;
            if now >= next_snapshot {
                self.snapshot().await?;
                next_snapshot = Instant::now() + self.snapshot_interval;
            }
        }
        // Graceful shutdown: emit open windows, make everything durable, acknowledge.
        let mut out = std::mem::take(&mut self.out);
        self.agg.flush_all(&mut out);
        self.out = out;
        self.forward_must_sync = true;
        self.commit(acker, data_ready, false).await?;
        self.snapshot().await?;
        tracing::info!("pipeline stopped; open windows flushed to the forward log");
        Ok(())
    }

    async fn handle(&mut self, msg: Message) -> Result<()> {
        self.metrics.payloads_in.inc();
        if self.mode == Mode::Aggregate {
            if let Some(token) = &msg.ack {
                // The journal keeps which deliveries it holds, so that the broker sending one
                // again (its acknowledgement was lost with a connection or a crash) is
                // acknowledged without being counted twice.
                let d = Delivery {
                    pkid: token.pkid(),
                    digest: digest(&msg.topic, &msg.payload),
                };
                if self.deliveries.is_redelivery(d.pkid, msg.dup, d.digest) {
                    self.metrics.redeliveries_skipped.inc();
                    tracing::debug!(
                        pkid = d.pkid,
                        "MQTT redelivery of a journaled message acknowledged again"
                    );
                    self.pending_acks.extend(msg.ack);
                    return Ok(());
                }
                encode_journal(&mut self.rec, &JournalEntry::Delivery(d));
                let seq = self.append_journal().await?;
                self.journal_next = seq + 1;
                self.journal_dirty = true;
                self.deliveries.record(d);
            }
        }
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
        // Lent out for the loop, which needs `self` mutably (a full journal snapshots).
        let buf = std::mem::take(&mut self.buf);
        let result = self.accept_from(&buf, arrival).await;
        self.buf = buf;
        result
    }

    async fn accept_from(&mut self, buf: &DecodeBuf, arrival: i64) -> Result<()> {
        let n = buf.items.len();
        self.metrics.readings_in.inc_by(n as u64);
        let site = buf.site();
        for item in &buf.items {
            let (sensor, field, ts, value) =
                (buf.sensor(item), buf.field(item), item.ts_ms, item.value);
            match self.mode {
                Mode::Passthrough => {
                    let r = wire::ReadingRef {
                        sensor,
                        site,
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
                    self.metrics.readings_out.inc();
                }
                Mode::Aggregate => {
                    let entry = JournalEntry::Reading {
                        sensor,
                        site,
                        field,
                        ts,
                        value,
                        arrival,
                    };
                    encode_journal(&mut self.rec, &entry);
                    let seq = self.append_journal().await?;
                    self.journal_next = seq + 1;
                    self.journal_dirty = true;
                    crate::crash::point("journal.appended");
                    let mut out = std::mem::take(&mut self.out);
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
                        &mut out,
                    );
                    // What the reading emitted (a correction) waits in `out` for the
                    // group commit: it reaches the forward log once the journal holds the
                    // reading durably.
                    self.out = out;
                }
            }
        }
        Ok(())
    }

    /// Appends `self.rec` to the journal. A full journal is emptied by a snapshot (which
    /// truncates it) and the append tried again: the pipeline keeps running, and the
    /// readings waiting for the next group commit stay unacknowledged meanwhile.
    async fn append_journal(&mut self) -> Result<u64> {
        let journal = self
            .journal
            .as_mut()
            .ok_or_else(|| Error::Config("journal missing".into()))?;
        match journal.append(&self.rec) {
            Err(Error::LogFull { bytes, max_bytes }) => {
                tracing::info!(
                    bytes,
                    max_bytes,
                    "input journal full; snapshotting the windows to truncate it"
                );
                self.snapshot().await?;
                let journal = self
                    .journal
                    .as_mut()
                    .ok_or_else(|| Error::Config("journal missing".into()))?;
                journal.append(&self.rec)
            }
            other => other,
        }
    }

    /// Brings the logs to the point a snapshot needs outside a group commit: the journal
    /// durable, and every aggregate already emitted in the forward log.
    async fn make_snapshot_consistent(&mut self) -> Result<()> {
        if let Some(j) = self.journal.as_mut() {
            tokio::task::block_in_place(|| j.sync())?;
        }
        self.journal_dirty = false;
        self.emit_out().await
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
        crate::metrics::set_total(&self.metrics.late_readings, st.late);
        crate::metrics::set_total(&self.metrics.late_dropped, st.late_dropped);
        Ok(())
    }

    /// Journals a wall-clock tick: the windows it closes are decided by this entry, so
    /// the entry must be durable before they are written.
    async fn journal_tick(&mut self) -> Result<Option<i64>> {
        if self.mode != Mode::Aggregate {
            return Ok(None);
        }
        let now = now_ms();
        encode_journal(&mut self.rec, &JournalEntry::Tick { now });
        let seq = self.append_journal().await?;
        self.journal_next = seq + 1;
        self.journal_dirty = true;
        Ok(Some(now))
    }

    /// Closes the windows a journaled tick at `now` ends, into the forward log.
    async fn close_windows(&mut self, now: i64) -> Result<()> {
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
        self.metrics.active_sensors.set(self.agg.sensors() as u64);
        // Late readings that were dropped emit nothing, so refresh their counters here.
        let st = self.agg.stats();
        crate::metrics::set_total(&self.metrics.late_readings, st.late);
        crate::metrics::set_total(&self.metrics.late_dropped, st.late_dropped);
        Ok(())
    }

    /// Group commit, in the order durability needs:
    /// 1. the journal (readings and, if `tick`, a tick entry) is fsynced;
    /// 2. only then are the aggregates built from it appended to the forward log (held in
    ///    `out` until now) and the tick's windows closed, so the forward log never holds
    ///    an aggregate whose inputs a crash could take back;
    /// 3. records that are their own input (pass-through readings, dead letters) are
    ///    fsynced; aggregates are published to the forwarder without an fsync (a crash
    ///    that loses them re-creates them exactly from the journal);
    /// 4. the MQTT messages are acknowledged.
    async fn commit(&mut self, acker: &Acker, data_ready: &Notify, tick: bool) -> Result<()> {
        let tick_at = if tick {
            self.journal_tick().await?
        } else {
            None
        };
        if self.journal_dirty {
            if let Some(j) = self.journal.as_mut() {
                tokio::task::block_in_place(|| j.sync())?;
                self.metrics.journal_bytes.set(j.stats().bytes_on_disk);
            }
            self.journal_dirty = false;
        }
        crate::crash::point("commit.journal_synced");
        self.emit_out().await?;
        if let Some(now) = tick_at {
            self.close_windows(now).await?;
        }
        crate::crash::point("commit.forward_written");
        if self.forward_must_sync {
            let fwd = &self.forward;
            tokio::task::block_in_place(|| lock(fwd).sync())?;
            self.forward_must_sync = false;
        } else if self.forward_dirty {
            lock(&self.forward).publish();
        }
        if !self.pending_acks.is_empty() {
            acker.ack_all(std::mem::take(&mut self.pending_acks)).await;
            self.metrics.group_commits.inc();
            crate::crash::point("commit.acked");
        }
        if self.forward_dirty {
            self.forward_dirty = false;
            data_ready.notify_one();
        }
        Ok(())
    }

    /// Snapshots the window state and truncates the journal (aggregate mode).
    async fn snapshot(&mut self) -> Result<()> {
        if self.journal.is_none() {
            return Ok(());
        }
        // The journal durable and every aggregate emitted so far in the forward log...
        self.make_snapshot_consistent().await?;
        // ... and durable there: the snapshot no longer covers the inputs they came from.
        tokio::task::block_in_place(|| lock(&self.forward).sync())?;
        let Some(journal) = self.journal.as_mut() else {
            return Ok(());
        };
        let file = SnapshotFileRef {
            journal_next: self.journal_next,
            state: self.agg.snapshot_view(),
            deliveries: self.deliveries.to_vec(),
        };
        write_atomically(&self.snapshot_path, |w| {
            serde_json::to_writer(w, &file).map_err(std::io::Error::other)
        })?;
        crate::crash::point("snapshot.written");
        if self.journal_next > 0 {
            journal.ack_through(self.journal_next - 1);
        }
        journal.persist_acks()?;
        crate::crash::point("snapshot.truncated");
        Ok(())
    }
}

/// How many journaled deliveries to remember: twice the in-flight window (see
/// [`crate::redelivery`]).
fn delivery_window(cfg: &EdgeConfig) -> usize {
    2 * usize::from(cfg.mqtt.receive_maximum.max(1))
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
        metrics.aggregates_out.inc();
    } else {
        metrics.corrections_out.inc();
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
    // The rename is durable only once the directory is: the caller truncates the journal
    // after this returns, so an error here must stop it.
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("syncing the snapshot's directory", dir, e))?;
    Ok(())
}
