//! Window snapshots (the aggregator's state and the next journal sequence, written
//! atomically, then the journal truncated) and recovery from them.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::record::{decode_journal, JournalEntry};
use crate::redelivery::{Deliveries, Delivery};
use crate::window::{Aggregator, Input, Snapshot};
use crate::{Error, Result};

use super::commit::lock;
use super::Pipeline;

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

impl Pipeline {
    /// Loads the window snapshot and replays the journal after it.
    pub(super) async fn recover(&mut self) -> Result<()> {
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

    /// Brings the logs to the point a snapshot needs outside a group commit: the journal
    /// durable, and every aggregate already emitted in the forward log.
    pub(super) async fn make_snapshot_consistent(&mut self) -> Result<()> {
        if let Some(j) = self.journal.as_mut() {
            tokio::task::block_in_place(|| j.sync())?;
        }
        self.journal_dirty = false;
        self.emit_out().await
    }

    /// Snapshots the window state and truncates the journal (aggregate mode).
    pub(super) async fn snapshot(&mut self) -> Result<()> {
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
