//! On-disk format of the disk log: segment files, records and the ack file.
//!
//! Everything here moves bytes; the decisions are in [`super::ledger`]. See the module docs
//! of [`super`] for the format itself.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::Seq;

/// Magic at the start of every segment file (format version 1).
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"EFDLSEG1";
/// Segment header: magic + base seq (u64 LE).
pub(crate) const SEGMENT_HEADER_LEN: u64 = 16;
/// Record header: payload length (u32 LE) + CRC-32 (u32 LE) + seq (u64 LE).
pub(crate) const RECORD_HEADER_LEN: u64 = 16;
/// Largest payload a record may carry.
pub const MAX_PAYLOAD_LEN: usize = 16 << 20;
/// Magic at the start of the ack file.
const ACK_MAGIC: [u8; 8] = *b"EFDLACK1";
const ACK_FILE: &str = "acks";
const ACK_TMP_FILE: &str = "acks.tmp";
const ACK_FILE_LEN: usize = 20;
const SEGMENT_SUFFIX: &str = ".seg";

/// Read buffer per open segment; large enough for sequential reads of a big backlog.
const READ_BUFFER: usize = 256 << 10;
/// Write buffer of the active segment (records are group-committed by `sync`).
pub(crate) const WRITE_BUFFER: usize = 256 << 10;

pub(crate) fn segment_file_name(base: Seq) -> String {
    format!("{base:020}{SEGMENT_SUFFIX}")
}

pub(crate) fn segment_path(dir: &Path, base: Seq) -> PathBuf {
    dir.join(segment_file_name(base))
}

pub(crate) fn ack_path(dir: &Path) -> PathBuf {
    dir.join(ACK_FILE)
}

fn parse_segment_file_name(name: &str) -> Option<Seq> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Base seqs of the segment files in `dir`, sorted. Removes a stale `acks.tmp`.
pub(crate) fn list_segments(dir: &Path) -> io::Result<Vec<Seq>> {
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        if let Some(base) = parse_segment_file_name(name) {
            bases.push(base);
        } else if name == ACK_TMP_FILE {
            fs::remove_file(entry.path())?;
        } else if name != ACK_FILE {
            tracing::debug!(file = %entry.path().display(), "ignoring a file in the disk log directory");
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

pub(crate) fn record_crc(len: u32, seq: Seq, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len.to_le_bytes());
    hasher.update(&seq.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// The 16-byte header of a record; `payload` must be at most [`MAX_PAYLOAD_LEN`] long.
pub(crate) fn record_header(seq: Seq, payload: &[u8]) -> [u8; 16] {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut header = [0u8; 16];
    header[0..4].copy_from_slice(&len.to_le_bytes());
    header[4..8].copy_from_slice(&record_crc(len, seq, payload).to_le_bytes());
    header[8..16].copy_from_slice(&seq.to_le_bytes());
    header
}

fn segment_header(base: Seq) -> [u8; 16] {
    let mut header = [0u8; 16];
    header[0..8].copy_from_slice(&SEGMENT_MAGIC);
    header[8..16].copy_from_slice(&base.to_le_bytes());
    header
}

/// Reads until `buf` is full or the file ends; returns the number of bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// One step of reading a segment.
#[derive(Debug)]
pub(crate) enum Step {
    /// A valid record (its payload is in the caller's buffer when read).
    Record,
    /// Clean end of the file at a record boundary.
    End,
    /// Damage: a short or invalid record starts at the current position.
    Bad(String),
}

/// Sequential reader of one segment file.
pub(crate) struct SegmentReader {
    base: Seq,
    file: BufReader<File>,
    /// Byte offset of the next record in the file.
    pos: u64,
    /// Seq of the record at `pos`.
    file_seq: Seq,
    /// A record read but given back (see [`SegmentCursor::unread`]); it precedes `pos`.
    stash: Option<(Seq, Bytes)>,
}

impl SegmentReader {
    /// Opens a segment and checks its header; `Ok(Err(reason))` when the header is bad.
    pub fn open(dir: &Path, base: Seq) -> io::Result<Result<SegmentReader, String>> {
        let file = File::open(segment_path(dir, base))?;
        let mut file = BufReader::with_capacity(READ_BUFFER, file);
        let mut header = [0u8; 16];
        let n = read_full(&mut file, &mut header)?;
        if n < header.len() {
            return Ok(Err(format!("short segment header ({n} of 16 bytes)")));
        }
        if header[0..8] != SEGMENT_MAGIC {
            return Ok(Err("not a disk log segment (bad magic)".to_owned()));
        }
        let named = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
        if named != base {
            return Ok(Err(format!(
                "segment header names base seq {named}, the file name {base}"
            )));
        }
        Ok(Ok(SegmentReader {
            base,
            file,
            pos: SEGMENT_HEADER_LEN,
            file_seq: base,
            stash: None,
        }))
    }

    pub fn pos(&self) -> u64 {
        self.pos
    }

    fn next_seq(&self) -> Seq {
        self.stash.as_ref().map_or(self.file_seq, |(seq, _)| *seq)
    }

    fn read_header(&mut self) -> io::Result<Result<(u32, u32, Seq), Step>> {
        let mut header = [0u8; 16];
        let n = read_full(&mut self.file, &mut header)?;
        if n == 0 {
            return Ok(Err(Step::End));
        }
        if n < header.len() {
            return Ok(Err(Step::Bad(format!(
                "short record header ({n} of 16 bytes)"
            ))));
        }
        let word = |range: std::ops::Range<usize>| header[range].try_into().unwrap_or_default();
        let len = u32::from_le_bytes(word(0..4));
        let crc = u32::from_le_bytes(word(4..8));
        let seq = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
        if len as usize > MAX_PAYLOAD_LEN {
            return Ok(Err(Step::Bad(format!(
                "record length {len} exceeds the maximum {MAX_PAYLOAD_LEN}"
            ))));
        }
        if seq != self.file_seq {
            return Ok(Err(Step::Bad(format!(
                "record seq {seq} where {} was expected",
                self.file_seq
            ))));
        }
        Ok(Ok((len, crc, seq)))
    }

    /// Reads and verifies the next record into `buf`.
    pub fn read_into(&mut self, buf: &mut Vec<u8>) -> io::Result<Step> {
        let (len, crc, seq) = match self.read_header()? {
            Ok(header) => header,
            Err(step) => return Ok(step),
        };
        buf.clear();
        buf.resize(len as usize, 0);
        let n = read_full(&mut self.file, buf)?;
        if n < buf.len() {
            return Ok(Step::Bad(format!("short payload ({n} of {len} bytes)")));
        }
        if record_crc(len, seq, buf) != crc {
            return Ok(Step::Bad("checksum mismatch".to_owned()));
        }
        self.pos += RECORD_HEADER_LEN + u64::from(len);
        self.file_seq += 1;
        Ok(Step::Record)
    }

    /// Skips the next record, reading only its header (it was verified when the log was
    /// opened or written by this process).
    fn skip(&mut self) -> io::Result<Step> {
        if self.stash.take().is_some() {
            return Ok(Step::Record);
        }
        let (len, _, _) = match self.read_header()? {
            Ok(header) => header,
            Err(step) => return Ok(step),
        };
        self.file.seek_relative(i64::from(len))?;
        self.pos += RECORD_HEADER_LEN + u64::from(len);
        self.file_seq += 1;
        Ok(Step::Record)
    }
}

/// Result of scanning a segment when the log is opened.
#[derive(Debug)]
pub(crate) struct Scan {
    /// Valid records from the start.
    pub records: u64,
    /// Length of the valid prefix (header and valid records).
    pub valid_len: u64,
    pub file_len: u64,
    /// What is wrong after the valid prefix, if anything.
    pub damage: Option<String>,
}

/// Reads a whole segment, verifying every record.
pub(crate) fn scan_segment(dir: &Path, base: Seq) -> io::Result<Scan> {
    let file_len = fs::metadata(segment_path(dir, base))?.len();
    let mut reader = match SegmentReader::open(dir, base)? {
        Ok(reader) => reader,
        Err(reason) => {
            return Ok(Scan {
                records: 0,
                valid_len: 0,
                file_len,
                damage: Some(reason),
            })
        }
    };
    let mut buf = Vec::new();
    let mut records = 0;
    let damage = loop {
        match reader.read_into(&mut buf)? {
            Step::Record => records += 1,
            Step::End => break None,
            Step::Bad(reason) => break Some(reason),
        }
    };
    Ok(Scan {
        records,
        valid_len: reader.pos(),
        file_len,
        damage,
    })
}

/// Cuts a damaged last segment back to its valid prefix (rewriting the header if even
/// that was damaged) and makes the cut durable. Returns the new length.
pub(crate) fn truncate_segment(dir: &Path, base: Seq, valid_len: u64) -> io::Result<u64> {
    let mut file = OpenOptions::new()
        .write(true)
        .open(segment_path(dir, base))?;
    let len = if valid_len < SEGMENT_HEADER_LEN {
        file.set_len(0)?;
        file.write_all(&segment_header(base))?;
        SEGMENT_HEADER_LEN
    } else {
        file.set_len(valid_len)?;
        valid_len
    };
    file.sync_all()?;
    Ok(len)
}

/// The segment being appended to.
pub(crate) struct SegmentWriter {
    pub base: Seq,
    file: BufWriter<File>,
    /// Bytes written to the file or its buffer.
    len: u64,
    /// Bytes known durable.
    synced_len: u64,
}

impl SegmentWriter {
    /// Creates a new segment file (replacing a leftover of a failed earlier attempt).
    pub fn create(dir: &Path, base: Seq) -> io::Result<SegmentWriter> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(segment_path(dir, base))?;
        let mut file = BufWriter::with_capacity(WRITE_BUFFER, file);
        file.write_all(&segment_header(base))?;
        Ok(SegmentWriter {
            base,
            file,
            len: SEGMENT_HEADER_LEN,
            synced_len: 0,
        })
    }

    /// Opens an existing segment to append to it.
    pub fn append_to(dir: &Path, base: Seq) -> io::Result<SegmentWriter> {
        let file = OpenOptions::new()
            .append(true)
            .open(segment_path(dir, base))?;
        let len = file.metadata()?.len();
        Ok(SegmentWriter {
            base,
            file: BufWriter::with_capacity(WRITE_BUFFER, file),
            len,
            synced_len: len,
        })
    }

    pub fn write_record(&mut self, seq: Seq, payload: &[u8]) -> io::Result<()> {
        self.file.write_all(&record_header(seq, payload))?;
        self.file.write_all(payload)?;
        self.len += RECORD_HEADER_LEN + payload.len() as u64;
        Ok(())
    }

    pub fn has_buffered(&self) -> bool {
        !self.file.buffer().is_empty()
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }

    pub fn is_synced(&self) -> bool {
        self.synced_len == self.len
    }

    /// Flush + fdatasync.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.is_synced() {
            return Ok(());
        }
        self.file.flush()?;
        self.file.get_ref().sync_data()?;
        self.synced_len = self.len;
        Ok(())
    }

    /// Flushes and gives up the file, to be synced later (after a roll).
    pub fn seal(mut self) -> io::Result<SealedSegment> {
        self.file.flush()?;
        let synced = self.is_synced();
        let (file, _) = self.file.into_parts();
        Ok(SealedSegment {
            base: self.base,
            file,
            synced,
        })
    }
}

/// A rolled segment whose data may not be durable yet.
pub(crate) struct SealedSegment {
    pub base: Seq,
    file: File,
    synced: bool,
}

impl SealedSegment {
    pub fn sync(&mut self) -> io::Result<()> {
        if !self.synced {
            self.file.sync_data()?;
            self.synced = true;
        }
        Ok(())
    }
}

/// What [`SegmentCursor::fetch`] found.
pub(crate) enum Fetched {
    Record(Bytes),
    /// The record cannot be read; everything from `offset` to the file's end is unusable.
    Damaged {
        path: PathBuf,
        offset: u64,
        skipped_bytes: u64,
        reason: String,
    },
}

/// Reads records by (segment, seq), keeping one segment open so that reading in order is
/// sequential and buffered.
pub(crate) struct SegmentCursor {
    dir: PathBuf,
    reader: Option<SegmentReader>,
}

impl SegmentCursor {
    pub fn new(dir: PathBuf) -> SegmentCursor {
        SegmentCursor { dir, reader: None }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn reset(&mut self) {
        self.reader = None;
    }

    fn damaged(&self, base: Seq, offset: u64, reason: String) -> Fetched {
        let path = segment_path(&self.dir, base);
        let len = fs::metadata(&path).map_or(offset, |m| m.len());
        Fetched::Damaged {
            path,
            offset,
            skipped_bytes: len.saturating_sub(offset),
            reason,
        }
    }

    /// Reads record `seq` of segment `base`. Records the ledger knows were verified or
    /// written by us, so damage here means the files changed under us.
    pub fn fetch(&mut self, base: Seq, seq: Seq) -> io::Result<Fetched> {
        let reusable = self
            .reader
            .as_ref()
            .is_some_and(|r| r.base == base && r.next_seq() <= seq);
        if !reusable {
            self.reader = None;
            match SegmentReader::open(&self.dir, base) {
                Ok(Ok(reader)) => self.reader = Some(reader),
                Ok(Err(reason)) => return Ok(self.damaged(base, 0, reason)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Ok(self.damaged(base, 0, "segment file is missing".to_owned()))
                }
                Err(e) => return Err(e),
            }
        }
        let Some(reader) = self.reader.as_mut() else {
            return Err(io::Error::other("segment reader not open"));
        };
        while reader.next_seq() < seq {
            match reader.skip()? {
                Step::Record => {}
                Step::End => {
                    let offset = reader.pos();
                    return Ok(self.damaged(base, offset, "segment ends early".to_owned()));
                }
                Step::Bad(reason) => {
                    let offset = reader.pos();
                    return Ok(self.damaged(base, offset, reason));
                }
            }
        }
        if let Some((_, payload)) = reader.stash.take() {
            return Ok(Fetched::Record(payload));
        }
        let mut buf = Vec::new();
        match reader.read_into(&mut buf)? {
            Step::Record => Ok(Fetched::Record(Bytes::from(buf))),
            Step::End => {
                let offset = reader.pos();
                Ok(self.damaged(base, offset, "segment ends early".to_owned()))
            }
            Step::Bad(reason) => {
                let offset = reader.pos();
                Ok(self.damaged(base, offset, reason))
            }
        }
    }

    /// Gives back the record just fetched; the next `fetch` of `seq` returns it again.
    pub fn unread(&mut self, seq: Seq, payload: Bytes) {
        if let Some(reader) = self.reader.as_mut() {
            reader.stash = Some((seq, payload));
        }
    }
}

/// Reads the ack file: `Ok(None)` when there is none, `Ok(Some(Err(reason)))` when it is
/// damaged.
pub(crate) fn read_ack_file(dir: &Path) -> io::Result<Option<Result<Seq, String>>> {
    let bytes = match fs::read(ack_path(dir)) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if bytes.len() != ACK_FILE_LEN {
        return Ok(Some(Err(format!(
            "ack file has {} bytes, expected {ACK_FILE_LEN}",
            bytes.len()
        ))));
    }
    if bytes[0..8] != ACK_MAGIC {
        return Ok(Some(Err("ack file has a bad magic".to_owned())));
    }
    let crc = u32::from_le_bytes(bytes[16..20].try_into().unwrap_or_default());
    if crc32fast::hash(&bytes[0..16]) != crc {
        return Ok(Some(Err("ack file checksum mismatch".to_owned())));
    }
    Ok(Some(Ok(u64::from_le_bytes(
        bytes[8..16].try_into().unwrap_or_default(),
    ))))
}

/// Atomically replaces the ack file: write temp, fsync, rename, fsync the directory.
pub(crate) fn write_ack_file(dir: &Path, floor: Seq) -> io::Result<()> {
    let mut bytes = [0u8; ACK_FILE_LEN];
    bytes[0..8].copy_from_slice(&ACK_MAGIC);
    bytes[8..16].copy_from_slice(&floor.to_le_bytes());
    let crc = crc32fast::hash(&bytes[0..16]);
    bytes[16..20].copy_from_slice(&crc.to_le_bytes());
    let tmp = dir.join(ACK_TMP_FILE);
    {
        let mut file = File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
    }
    fs::rename(&tmp, ack_path(dir))?;
    sync_dir(dir)
}

/// Makes creations, renames and deletions in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Makes a segment file's contents durable (a previous run may have left them in the page
/// cache only).
pub(crate) fn sync_segment(dir: &Path, base: Seq) -> io::Result<()> {
    File::open(segment_path(dir, base))?.sync_data()
}

/// Deletes a segment file; a file that is already gone is fine.
pub(crate) fn remove_segment(dir: &Path, base: Seq) -> io::Result<()> {
    match fs::remove_file(segment_path(dir, base)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn segment_file_names_round_trip_and_sort_by_seq() {
        assert_eq!(segment_file_name(42), "00000000000000000042.seg");
        assert_eq!(
            parse_segment_file_name("00000000000000000042.seg"),
            Some(42)
        );
        assert_eq!(
            parse_segment_file_name(&segment_file_name(u64::MAX)),
            Some(u64::MAX)
        );
        assert_eq!(parse_segment_file_name("42.seg"), None);
        assert_eq!(parse_segment_file_name("0000000000000000004x.seg"), None);
        assert!(segment_file_name(9) < segment_file_name(10));
    }

    #[test]
    fn record_checksum_covers_length_seq_and_payload() {
        let header = record_header(7, b"hello");
        assert_eq!(&header[0..4], &5u32.to_le_bytes());
        assert_eq!(&header[8..16], &7u64.to_le_bytes());
        let crc = u32::from_le_bytes(header[4..8].try_into().unwrap());
        assert_eq!(crc, record_crc(5, 7, b"hello"));
        assert_ne!(crc, record_crc(5, 8, b"hello"));
        assert_ne!(crc, record_crc(4, 7, b"hello"));
        assert_ne!(crc, record_crc(5, 7, b"hellp"));
    }

    #[test]
    fn ack_file_round_trips_and_detects_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_ack_file(dir.path()).unwrap().is_none());
        write_ack_file(dir.path(), 12345).unwrap();
        assert_eq!(read_ack_file(dir.path()).unwrap(), Some(Ok(12345)));
        let mut bytes = fs::read(ack_path(dir.path())).unwrap();
        bytes[9] ^= 1;
        fs::write(ack_path(dir.path()), &bytes).unwrap();
        assert!(matches!(read_ack_file(dir.path()).unwrap(), Some(Err(_))));
    }
}
