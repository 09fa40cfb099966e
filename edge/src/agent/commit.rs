//! The group commit: the journal made durable first, then the aggregates built from it
//! appended to the forward log and published, then the MQTT acknowledgements sent.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::config::{Encoding, Mode};
use crate::disklog::DiskLog;
use crate::metrics::Metrics;
use crate::mqtt::Acker;
use crate::record::{encode_journal, encode_out, JournalEntry, TopicKind};
use crate::window::Aggregate;
use crate::wire;
use crate::{Error, Result};
use edgeflow_wire::clock::now_ms;

use super::Pipeline;

impl Pipeline {
    /// Appends `self.rec` to the journal. A full journal is emptied by a snapshot (which
    /// truncates it) and the append tried again: the pipeline keeps running, and the
    /// readings waiting for the next group commit stay unacknowledged meanwhile.
    pub(super) async fn append_journal(&mut self) -> Result<u64> {
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

    /// Appends the aggregates in `self.out` to the forward log.
    pub(super) async fn emit_out(&mut self) -> Result<()> {
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
    pub(super) async fn journal_tick(&mut self) -> Result<Option<i64>> {
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
    pub(super) async fn close_windows(&mut self, now: i64) -> Result<()> {
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
    pub(super) async fn commit(
        &mut self,
        acker: &Acker,
        data_ready: &Notify,
        tick: bool,
    ) -> Result<()> {
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

pub(super) fn encoding_name(e: Encoding) -> &'static str {
    match e {
        Encoding::Json => wire::ENCODING_JSON,
        Encoding::Binary => wire::ENCODING_BINARY,
    }
}

pub(super) fn lock(log: &Mutex<DiskLog>) -> std::sync::MutexGuard<'_, DiskLog> {
    log.lock().unwrap_or_else(|p| p.into_inner())
}

/// Appends to the forward log; under the `block` policy waits for room (the MQTT
/// messages stay unacknowledged meanwhile, so the broker holds them).
pub(super) async fn append_forward(
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
