//! Store-and-forward disk log.
//!
//! The agent uses it twice:
//!
//! - as the **forward log**: aggregates are [`append`](DiskLog::append)ed, the forwarder
//!   takes the records not yet sent with [`read_unsent`](DiskLog::read_unsent) (only
//!   *published* ones: see below), Kafka
//!   delivery reports [`ack`](DiskLog::ack) them (in any order), and acked records are
//!   removed; after a producer error [`rewind_unsent`](DiskLog::rewind_unsent) sends again
//!   everything not acked;
//! - as the **input journal**: decoded readings are appended and [`sync`](DiskLog::sync)ed
//!   (one fsync for many records: group commit) before the MQTT message is acknowledged;
//!   after a snapshot of the aggregation state, [`ack_through`](DiskLog::ack_through) and
//!   [`persist_acks`](DiskLog::persist_acks) retire the journal up to a seq; on restart
//!   [`replay`](DiskLog::replay) yields the records from the first unacked one.
//!
//! Every record gets a sequence number ([`Seq`]) that increases by one per append.
//!
//! # On-disk format (version 1)
//!
//! A log is one directory:
//!
//! ```text
//! <dir>/00000000000000000000.seg   segment whose first record has seq 0
//! <dir>/00000000000000004711.seg   segment whose first record has seq 4711
//! <dir>/acks                       the persisted ack floor
//! ```
//!
//! **Segment files** are named by the seq of their first record (the *base*), zero-padded
//! to 20 digits so that names sort like seqs. A segment starts with a 16-byte header,
//! followed by records with consecutive seqs `base, base + 1, ...`:
//!
//! ```text
//! segment header:  [8 bytes magic "EFDLSEG1"][u64 LE base seq]
//! record:          [u32 LE payload len][u32 LE crc][u64 LE seq][payload]
//! ```
//!
//! All integers are little-endian. `crc` is CRC-32 (IEEE, `crc32fast`) over the length
//! bytes, the seq bytes and the payload, so a torn or zero-filled record, a record from
//! another place and a flipped bit are all detected. A payload is at most
//! [`MAX_PAYLOAD_LEN`] (16 MiB) long; an empty payload is allowed.
//!
//! New records go to the last segment (the *active* one). A new segment is started when
//! a record would take the active segment past `segment_bytes`; a record larger than that
//! gets a segment of its own. Seqs of consecutive segments may have gaps (records lost to
//! damage, see below) but never overlap.
//!
//! **Ack file** `acks`: `[8 bytes magic "EFDLACK1"][u64 LE floor][u32 LE crc32 of the
//! first 16 bytes]`, 20 bytes. The *floor* is the smallest seq not yet acked: every record
//! below it is done. It is replaced atomically (write `acks.tmp`, fsync, rename, fsync the
//! directory). Acks above the floor (out-of-order acks) are kept in memory only, so after a
//! restart those records are delivered again: at-least-once, duplicates are removed
//! downstream by their identity. A missing ack file means floor 0; a damaged one is
//! ignored with a warning (everything on disk is sent again, nothing is lost).
//!
//! # Invariants and guarantees
//!
//! - [`DiskLog::read_unsent`] hands out only *published* records: those appended before
//!   the last [`DiskLog::sync`] or [`DiskLog::publish`]. So nothing reaches Kafka that a
//!   crash could take back, unless the caller vouched (by publishing) that its inputs
//!   are durable elsewhere. Every record found on disk at open is published.
//! - A record is durable once [`DiskLog::sync`] returned after its append. Records
//!   appended but not synced may be lost by a crash (never partially: see torn tails).
//! - After a restart the log holds every synced record at or above the persisted floor,
//!   byte for byte, in seq order. Acked records above the floor may come back.
//! - Seqs only grow: after a restart the next seq is past every record found on disk and
//!   past the persisted floor. A seq that was handed out but never synced may be handed
//!   out again after a crash, so store seqs elsewhere only after `sync`.
//! - Segments wholly below the floor are deleted by [`DiskLog::persist_acks`] (and by an
//!   append that needs their space). The last segment is never deleted, so the directory
//!   always remembers the next seq. Deletions are not fsynced: a segment that comes back
//!   after a crash is deleted again at open if it is below the persisted floor, otherwise
//!   its records are sent again (a dropped segment, for example).
//!
//! # Torn tails and damage
//!
//! [`DiskLog::open`] reads every segment and checks every record (length, seq, checksum).
//! At the first bad or short record of the **last** segment the file is truncated there:
//! that is the torn tail of a crash in the middle of a write. A bad record in an **older**
//! segment ends that segment (the rest of it is skipped and left on disk, a warning is
//! logged); later segments are used as usual. The skipped bytes are counted in
//! [`Recovery::torn_bytes_skipped`] and [`LogStats::torn_bytes_skipped`]. Damage found later
//! while reading (files changed under the running agent) is handled the same way and the
//! lost records are counted in [`LogStats::corrupt_records_skipped`]. Nothing here panics.
//!
//! # Size bound and full policy
//!
//! `max_bytes` bounds the bytes of all segment files. When an append would exceed it,
//! segments holding only acked records are deleted first. If that is not enough:
//!
//! - [`FullPolicy::Block`]: the append fails with [`Error::LogFull`]; the caller stops
//!   taking input (does not acknowledge MQTT messages) until Kafka acks records;
//! - [`FullPolicy::DropOldest`]: whole segments are deleted from the oldest end until the
//!   record fits; the unacked records lost that way are counted in
//!   [`LogStats::dropped_records`] and logged.
//!
//! The only time the log is larger than `max_bytes` is when it holds a single record
//! larger than that (it would never fit otherwise).
//!
//! # Errors
//!
//! After an I/O error from `append`, `sync` or the flush before reading, the state of the
//! files is unknown (as after a failed fsync), so the log refuses further writes and
//! reads; drop it and [`DiskLog::open`] the directory again, which recovers from what is
//! on disk.

mod ledger;
mod segment;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

use std::io;
use std::path::PathBuf;

use bytes::Bytes;

use crate::error::{Error, Result};
use ledger::{Ledger, Limits, SegmentMeta};
pub use segment::MAX_PAYLOAD_LEN;
use segment::{Fetched, SealedSegment, SegmentCursor, SegmentWriter, RECORD_HEADER_LEN};

/// Sequence number of a record.
pub type Seq = u64;

/// Default size of one segment file: 16 MiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 16 << 20;
/// Default bound of the whole log: 1 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;
/// Smallest allowed `segment_bytes`.
pub const MIN_SEGMENT_BYTES: u64 = 64;

/// Where the log lives and how large it may grow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskLogConfig {
    /// Directory of the log; created if missing. One log per directory.
    pub dir: PathBuf,
    /// A new segment file is started when the active one would grow past this.
    pub segment_bytes: u64,
    /// Bound of all segment files together.
    pub max_bytes: u64,
    /// What to do when the log is full.
    pub full_policy: FullPolicy,
}

impl DiskLogConfig {
    /// A config with the default sizes and the `block` policy.
    pub fn new(dir: impl Into<PathBuf>) -> DiskLogConfig {
        DiskLogConfig {
            dir: dir.into(),
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            max_bytes: DEFAULT_MAX_BYTES,
            full_policy: FullPolicy::Block,
        }
    }

    /// Checks the sizes, reporting every problem at once.
    pub fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        if self.segment_bytes < MIN_SEGMENT_BYTES {
            problems.push(format!(
                "segment_bytes is {} but must be at least {MIN_SEGMENT_BYTES}",
                self.segment_bytes
            ));
        }
        if self.max_bytes < self.segment_bytes {
            problems.push(format!(
                "max_bytes ({}) must be at least segment_bytes ({}); a few segments' worth is sensible",
                self.max_bytes, self.segment_bytes
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Config(format!(
                "disk log in {}: {}",
                self.dir.display(),
                problems.join("; ")
            )))
        }
    }
}

/// What an append does when the log has reached `max_bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FullPolicy {
    /// Refuse the append with [`Error::LogFull`] (back-pressure to the source).
    Block,
    /// Delete the oldest segments, counting the records lost.
    DropOldest,
}

/// What [`DiskLog::open`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// Unacked records in the log.
    pub records: u64,
    /// Bytes of all segment files.
    pub bytes: u64,
    /// Bytes of torn tails and damaged records skipped (see the module docs).
    pub torn_bytes_skipped: u64,
    /// Seq of the first unacked record (`next_seq` when there is none).
    pub first_unacked: Seq,
    /// Seq the next append gets.
    pub next_seq: Seq,
}

/// Counters and gauges of a running log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Records appended and not acked yet.
    pub pending_records: u64,
    /// Bytes of all segment files.
    pub bytes_on_disk: u64,
    /// Number of segment files.
    pub segments: u64,
    /// Seq of the first unacked record (`next_seq` when there is none).
    pub first_unacked: Seq,
    /// Seq the next append gets.
    pub next_seq: Seq,
    /// Unacked records deleted by the drop-oldest policy, since open.
    pub dropped_records: u64,
    /// Bytes of the segments deleted by the drop-oldest policy that held unacked records.
    pub dropped_bytes: u64,
    /// Bytes of torn tails and damage skipped, since open (recovery included).
    pub torn_bytes_skipped: u64,
    /// Unacked records lost to damage found while reading, since open.
    pub corrupt_records_skipped: u64,
}

/// The store-and-forward log; see the module docs.
pub struct DiskLog {
    dir: PathBuf,
    ledger: Ledger,
    /// Active segment; opened on the first append after `open`.
    writer: Option<SegmentWriter>,
    /// Rolled segments not fsynced yet.
    sealed: Vec<SealedSegment>,
    /// A segment file was created since the last directory fsync.
    dir_dirty: bool,
    cursor: SegmentCursor,
    /// Set after a write error: the files' state is unknown, reopen the log.
    failed: Option<String>,
}

impl DiskLog {
    /// Opens (creating if needed) the log in `cfg.dir`, checks every record and truncates a
    /// torn tail. Returns the log and what was found.
    pub fn open(cfg: DiskLogConfig) -> Result<(DiskLog, Recovery)> {
        cfg.validate()?;
        let dir = cfg.dir;
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io("creating the disk log directory", &dir, e))?;
        let bases = segment::list_segments(&dir)
            .map_err(|e| Error::io("listing the disk log directory", &dir, e))?;
        let persisted = match segment::read_ack_file(&dir)
            .map_err(|e| Error::io("reading the disk log ack file", segment::ack_path(&dir), e))?
        {
            None => None,
            Some(Ok(floor)) => Some(floor),
            Some(Err(reason)) => {
                tracing::warn!(
                    dir = %dir.display(),
                    %reason,
                    "disk log ack file is damaged; every record on disk will be sent again"
                );
                None
            }
        };

        let mut metas: Vec<SegmentMeta> = Vec::with_capacity(bases.len());
        let mut torn = 0;
        for (i, &base) in bases.iter().enumerate() {
            let path = segment::segment_path(&dir, base);
            if let Some(prev) = metas.last() {
                if base < prev.end() {
                    return Err(Error::Corrupt {
                        path: dir.clone(),
                        reason: format!(
                            "segment {} starts at seq {base}, inside segment {} (seqs {}..{}); \
                             move one of them away",
                            path.display(),
                            prev.base,
                            prev.base,
                            prev.end()
                        ),
                    });
                }
            }
            let scan = segment::scan_segment(&dir, base)
                .map_err(|e| Error::io("reading a disk log segment", &path, e))?;
            let mut bytes = scan.file_len;
            if let Some(reason) = scan.damage {
                let skipped = scan.file_len - scan.valid_len;
                torn += skipped;
                if i + 1 == bases.len() {
                    tracing::warn!(
                        segment = %path.display(),
                        offset = scan.valid_len,
                        skipped,
                        %reason,
                        "truncating the torn tail of the disk log"
                    );
                    bytes = segment::truncate_segment(&dir, base, scan.valid_len)
                        .map_err(|e| Error::io("truncating a torn disk log segment", &path, e))?;
                } else {
                    tracing::warn!(
                        segment = %path.display(),
                        offset = scan.valid_len,
                        skipped,
                        %reason,
                        "damaged record in a disk log segment; skipping the rest of that segment"
                    );
                }
            }
            metas.push(SegmentMeta {
                base,
                records: scan.records,
                bytes,
            });
        }

        let limits = Limits {
            segment_bytes: cfg.segment_bytes,
            max_bytes: cfg.max_bytes,
            policy: cfg.full_policy,
        };
        let ledger = Ledger::recover(limits, metas, persisted, torn);
        let mut log = DiskLog {
            cursor: SegmentCursor::new(dir.clone()),
            dir,
            ledger,
            writer: None,
            sealed: Vec::new(),
            dir_dirty: false,
            failed: None,
        };
        // Segments below the persisted floor are left over when a crash came between
        // writing the ack file and deleting them.
        log.reclaim()?;
        // What a crashed run wrote without syncing may still be in the page cache only.
        // Everything found is published (the forwarder sends it, the journal replays it and
        // aggregates built from it are sent), so make it durable first.
        for base in log.ledger.segments().map(|s| s.base).collect::<Vec<_>>() {
            segment::sync_segment(&log.dir, base).map_err(|e| {
                Error::io(
                    "syncing a disk log segment",
                    segment::segment_path(&log.dir, base),
                    e,
                )
            })?;
        }
        segment::sync_dir(&log.dir)
            .map_err(|e| Error::io("syncing the disk log directory", &log.dir, e))?;
        let stats = log.ledger.stats();
        let recovery = Recovery {
            records: stats.pending_records,
            bytes: stats.bytes_on_disk,
            torn_bytes_skipped: stats.torn_bytes_skipped,
            first_unacked: stats.first_unacked,
            next_seq: stats.next_seq,
        };
        tracing::info!(dir = %log.dir.display(), ?recovery, "disk log opened");
        Ok((log, recovery))
    }

    fn check_usable(&self) -> Result<()> {
        match &self.failed {
            None => Ok(()),
            Some(reason) => Err(Error::io(
                "disk log stopped after an earlier write error; reopen it to recover",
                &self.dir,
                io::Error::other(reason.clone()),
            )),
        }
    }

    /// Remembers a write error: the log refuses further use until reopened.
    fn fail(&mut self, error: Error) -> Error {
        self.failed = Some(error.to_string());
        error
    }

    /// Appends a record (buffered; durable after the next [`DiskLog::sync`]) and returns its
    /// seq.
    ///
    /// Fails with [`Error::LogFull`] when the log is full under [`FullPolicy::Block`]; the
    /// record was not written then. Payloads over [`MAX_PAYLOAD_LEN`] are refused.
    pub fn append(&mut self, payload: &[u8]) -> Result<Seq> {
        self.check_usable()?;
        if payload.len() > MAX_PAYLOAD_LEN {
            return Err(Error::io(
                "appending to the disk log",
                &self.dir,
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "record of {} bytes is larger than the maximum of {MAX_PAYLOAD_LEN} bytes",
                        payload.len()
                    ),
                ),
            ));
        }
        let record_bytes = RECORD_HEADER_LEN + payload.len() as u64;
        let plan = self
            .ledger
            .plan_append(record_bytes)
            .map_err(|full| Error::LogFull {
                bytes: full.bytes,
                max_bytes: full.max_bytes,
            })?;
        if let Err(e) = self.execute_append(&plan, payload) {
            return Err(self.fail(e));
        }
        self.ledger.commit_append(&plan, record_bytes);
        if plan.dropped_records > 0 {
            tracing::warn!(
                dir = %self.dir.display(),
                records = plan.dropped_records,
                bytes = plan.dropped_bytes,
                total_dropped = self.ledger.stats().dropped_records,
                "disk log full: dropped the oldest unsent records"
            );
        }
        Ok(plan.seq)
    }

    fn execute_append(&mut self, plan: &ledger::AppendPlan, payload: &[u8]) -> Result<()> {
        if plan.roll {
            if let Some(old) = self.writer.take() {
                let path = segment::segment_path(&self.dir, old.base);
                let sealed = old
                    .seal()
                    .map_err(|e| Error::io("writing a disk log segment", path, e))?;
                self.sealed.push(sealed);
            }
            let path = segment::segment_path(&self.dir, plan.seq);
            self.writer = Some(
                SegmentWriter::create(&self.dir, plan.seq)
                    .map_err(|e| Error::io("creating a disk log segment", path, e))?,
            );
            self.dir_dirty = true;
        }
        for &base in &plan.delete {
            segment::remove_segment(&self.dir, base).map_err(|e| {
                Error::io(
                    "deleting a disk log segment",
                    segment::segment_path(&self.dir, base),
                    e,
                )
            })?;
            self.sealed.retain(|s| s.base != base);
        }
        if self.writer.is_none() {
            // First append after open: continue the last segment.
            let base = self.ledger.segments().last().map_or(plan.seq, |s| s.base);
            let writer = SegmentWriter::append_to(&self.dir, base).map_err(|e| {
                Error::io(
                    "opening a disk log segment",
                    segment::segment_path(&self.dir, base),
                    e,
                )
            })?;
            self.writer = Some(writer);
        }
        let Some(writer) = self.writer.as_mut() else {
            return Err(Error::io(
                "writing a disk log segment",
                &self.dir,
                io::Error::other("no active segment"),
            ));
        };
        writer.write_record(plan.seq, payload).map_err(|e| {
            Error::io(
                "writing a disk log segment",
                segment::segment_path(&self.dir, writer.base),
                e,
            )
        })
    }

    /// Makes every appended record durable: flush + fdatasync (plus the directory when a
    /// segment was created). Call once per batch of appends (group commit).
    pub fn sync(&mut self) -> Result<()> {
        self.check_usable()?;
        if let Err(e) = self.sync_files() {
            return Err(self.fail(e));
        }
        self.ledger.publish();
        Ok(())
    }

    /// Lets [`DiskLog::read_unsent`] hand out every record appended so far without making
    /// it durable. Only for records whose inputs are durable elsewhere, so that a crash
    /// that loses them re-creates them exactly (the agent's aggregates, rebuilt from its
    /// input journal); [`DiskLog::sync`] publishes too.
    pub fn publish(&mut self) {
        self.ledger.publish();
    }

    fn sync_files(&mut self) -> Result<()> {
        for sealed in &mut self.sealed {
            sealed.sync().map_err(|e| {
                Error::io(
                    "syncing a disk log segment",
                    segment::segment_path(&self.dir, sealed.base),
                    e,
                )
            })?;
        }
        self.sealed.clear();
        if let Some(writer) = &mut self.writer {
            writer.sync().map_err(|e| {
                Error::io(
                    "syncing a disk log segment",
                    segment::segment_path(&self.dir, writer.base),
                    e,
                )
            })?;
        }
        if self.dir_dirty {
            segment::sync_dir(&self.dir)
                .map_err(|e| Error::io("syncing the disk log directory", &self.dir, e))?;
            self.dir_dirty = false;
        }
        Ok(())
    }

    /// Record `seq` was delivered. Acks may come in any order; duplicates and unknown seqs
    /// are ignored. Durable only through [`DiskLog::persist_acks`].
    pub fn ack(&mut self, seq: Seq) {
        self.ledger.ack(seq);
    }

    /// Every record up to and including `seq` is done.
    pub fn ack_through(&mut self, seq: Seq) {
        self.ledger.ack_through(seq);
    }

    /// Durably records the ack floor and deletes the segments wholly below it. Cheap when
    /// nothing changed; call it periodically.
    pub fn persist_acks(&mut self) -> Result<()> {
        self.check_usable()?;
        if let Some(floor) = self.ledger.floor_to_persist() {
            segment::write_ack_file(&self.dir, floor).map_err(|e| {
                Error::io(
                    "writing the disk log ack file",
                    segment::ack_path(&self.dir),
                    e,
                )
            })?;
            self.ledger.mark_persisted(floor);
        }
        self.reclaim()
    }

    fn reclaim(&mut self) -> Result<()> {
        for base in self.ledger.reclaimable() {
            segment::remove_segment(&self.dir, base).map_err(|e| {
                Error::io(
                    "deleting a disk log segment",
                    segment::segment_path(&self.dir, base),
                    e,
                )
            })?;
            self.sealed.retain(|s| s.base != base);
            self.ledger.remove_reclaimed(base);
        }
        Ok(())
    }

    /// Flushes the write buffer so that readers see every appended record.
    fn flush_writer(&mut self) -> Result<()> {
        let Some(writer) = &mut self.writer else {
            return Ok(());
        };
        if !writer.has_buffered() {
            return Ok(());
        }
        if let Err(e) = writer.flush() {
            let path = segment::segment_path(&self.dir, writer.base);
            return Err(self.fail(Error::io("writing a disk log segment", path, e)));
        }
        Ok(())
    }

    /// The next unacked, published records after the send cursor, in seq order, advancing
    /// the cursor:
    /// at most `max_records`, and at most `max_bytes` of payload unless the first record
    /// alone is larger (it is returned alone then). Reads the segment files sequentially.
    pub fn read_unsent(
        &mut self,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<(Seq, Bytes)>> {
        self.check_usable()?;
        self.flush_writer()?;
        let mut out = Vec::new();
        let mut bytes = 0;
        while out.len() < max_records {
            let Some((base, seq)) = self.ledger.next_unsent() else {
                break;
            };
            let fetched = self.cursor.fetch(base, seq).map_err(|e| {
                Error::io(
                    "reading a disk log segment",
                    segment::segment_path(&self.dir, base),
                    e,
                )
            })?;
            match fetched {
                Fetched::Record(payload) => {
                    if !out.is_empty() && bytes + payload.len() > max_bytes {
                        self.cursor.unread(seq, payload);
                        break;
                    }
                    bytes += payload.len();
                    self.ledger.mark_sent(seq);
                    out.push((seq, payload));
                }
                Fetched::Damaged {
                    path,
                    offset,
                    skipped_bytes,
                    reason,
                } => {
                    self.cursor.reset();
                    let lost = self.ledger.lose_tail(base, seq - base, skipped_bytes);
                    tracing::warn!(
                        segment = %path.display(),
                        offset,
                        lost_records = lost,
                        %reason,
                        "damaged record in a disk log segment; skipping the rest of that segment"
                    );
                }
            }
        }
        Ok(out)
    }

    /// Moves the send cursor back to the first unacked record: `read_unsent` hands out
    /// every unacked record again (after a producer error).
    pub fn rewind_unsent(&mut self) {
        self.ledger.rewind();
    }

    /// Every unacked record from the first unacked one, in seq order (journal recovery).
    ///
    /// The iterator reads a snapshot of the log taken now; records appended later are not
    /// included. Do not call [`DiskLog::persist_acks`] or append under
    /// [`FullPolicy::DropOldest`] while iterating, as they may delete segments it still
    /// has to read. It does not move the send cursor.
    pub fn replay(&mut self) -> Result<Replay> {
        self.check_usable()?;
        self.flush_writer()?;
        Ok(Replay {
            ledger: self.ledger.replay_view(),
            cursor: SegmentCursor::new(self.dir.clone()),
            done: false,
        })
    }

    /// Current counters and gauges.
    pub fn stats(&self) -> LogStats {
        self.ledger.stats()
    }
}

/// Iterator over the unacked records of a log; see [`DiskLog::replay`].
pub struct Replay {
    ledger: Ledger,
    cursor: SegmentCursor,
    done: bool,
}

impl Iterator for Replay {
    type Item = Result<(Seq, Bytes)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let Some((base, seq)) = self.ledger.next_unsent() else {
            self.done = true;
            return None;
        };
        match self.cursor.fetch(base, seq) {
            Ok(Fetched::Record(payload)) => {
                self.ledger.mark_sent(seq);
                Some(Ok((seq, payload)))
            }
            Ok(Fetched::Damaged {
                path,
                offset,
                reason,
                ..
            }) => {
                self.done = true;
                Some(Err(Error::Corrupt {
                    path,
                    reason: format!("record {seq} at byte {offset}: {reason}"),
                }))
            }
            Err(e) => {
                self.done = true;
                Some(Err(Error::io(
                    "reading a disk log segment",
                    segment::segment_path(self.cursor.dir(), base),
                    e,
                )))
            }
        }
    }
}
