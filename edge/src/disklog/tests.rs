//! Tests of the disk log on real files (the ledger's model test is in `ledger.rs`).

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

use super::segment::{RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use super::*;

fn config(dir: &Path, segment_bytes: u64, max_bytes: u64, policy: FullPolicy) -> DiskLogConfig {
    DiskLogConfig {
        dir: dir.to_path_buf(),
        segment_bytes,
        max_bytes,
        full_policy: policy,
    }
}

fn big(dir: &Path) -> DiskLogConfig {
    config(dir, 1 << 20, 1 << 30, FullPolicy::Block)
}

fn open(cfg: &DiskLogConfig) -> (DiskLog, Recovery) {
    DiskLog::open(cfg.clone()).unwrap()
}

fn replay_all(log: &mut DiskLog) -> Vec<(Seq, Vec<u8>)> {
    log.replay()
        .unwrap()
        .map(|r| r.map(|(seq, p)| (seq, p.to_vec())).unwrap())
        .collect()
}

/// Deterministic payload of a record: its seq, then filler.
fn payload(seq: Seq, len: usize) -> Vec<u8> {
    let mut p: Vec<u8> = seq
        .to_le_bytes()
        .iter()
        .copied()
        .cycle()
        .take(len.min(8))
        .collect();
    p.extend((8..len).map(|i| (seq as usize + i) as u8));
    p
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

fn seqs(records: &[(Seq, Vec<u8>)]) -> Vec<Seq> {
    records.iter().map(|(s, _)| *s).collect()
}

#[test]
fn synced_records_come_back_in_order_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 256, 1 << 20, FullPolicy::Block);
    let (mut log, rec) = open(&cfg);
    assert_eq!((rec.records, rec.next_seq, rec.first_unacked), (0, 0, 0));
    for seq in 0..50 {
        assert_eq!(log.append(&payload(seq, 40)).unwrap(), seq);
    }
    log.sync().unwrap();
    drop(log);

    let (mut log, rec) = open(&cfg);
    assert_eq!(rec.records, 50);
    assert_eq!(rec.next_seq, 50);
    assert_eq!(rec.torn_bytes_skipped, 0);
    let records = replay_all(&mut log);
    assert_eq!(seqs(&records), (0..50).collect::<Vec<_>>());
    for (seq, p) in &records {
        assert_eq!(p, &payload(*seq, 40));
    }
    assert!(
        segment_files(dir.path()).len() > 5,
        "256-byte segments roll"
    );
    assert_eq!(log.append(b"next").unwrap(), 50);
}

#[test]
fn acked_and_persisted_records_do_not_come_back_but_acks_above_the_floor_may() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 256, 1 << 20, FullPolicy::Block);
    let (mut log, _) = open(&cfg);
    for seq in 0..30 {
        log.append(&payload(seq, 30)).unwrap();
    }
    log.sync().unwrap();
    for seq in (0..10).rev() {
        log.ack(seq);
    }
    log.ack(12);
    log.ack(13);
    assert_eq!(log.stats().first_unacked, 10);
    assert_eq!(log.stats().pending_records, 18);
    log.persist_acks().unwrap();
    drop(log);

    let (mut log, rec) = open(&cfg);
    assert_eq!(rec.first_unacked, 10);
    assert_eq!(rec.records, 20, "acks above the floor are not persisted");
    assert_eq!(seqs(&replay_all(&mut log)), (10..30).collect::<Vec<_>>());
}

#[test]
fn persist_acks_deletes_segments_below_the_floor_but_keeps_the_last_one() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 200, 1 << 20, FullPolicy::Block);
    let (mut log, _) = open(&cfg);
    for seq in 0..40 {
        log.append(&payload(seq, 20)).unwrap();
    }
    log.sync().unwrap();
    let before = segment_files(dir.path()).len();
    log.ack_through(19);
    log.persist_acks().unwrap();
    let middle = segment_files(dir.path()).len();
    assert!(middle < before);
    assert_eq!(log.stats().segments, middle as u64);
    log.ack_through(39);
    log.persist_acks().unwrap();
    assert_eq!(segment_files(dir.path()).len(), 1);
    assert_eq!(log.stats().pending_records, 0);
    // nothing changed: no I/O needed, still fine
    log.persist_acks().unwrap();
    drop(log);

    let (mut log, rec) = open(&cfg);
    assert_eq!((rec.records, rec.next_seq), (0, 40));
    assert!(replay_all(&mut log).is_empty());
    assert_eq!(log.append(b"x").unwrap(), 40);
}

#[test]
fn read_unsent_hands_out_each_record_once_and_rewind_sends_unacked_ones_again() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(&config(dir.path(), 300, 1 << 20, FullPolicy::Block));
    for seq in 0..20 {
        log.append(&payload(seq, 25)).unwrap();
    }
    assert!(
        log.read_unsent(100, usize::MAX).unwrap().is_empty(),
        "nothing is handed out before it is published"
    );
    log.sync().unwrap();
    let first = log.read_unsent(8, usize::MAX).unwrap();
    assert_eq!(
        first.iter().map(|r| r.0).collect::<Vec<_>>(),
        (0..8).collect::<Vec<_>>()
    );
    let rest = log.read_unsent(100, usize::MAX).unwrap();
    assert_eq!(
        rest.iter().map(|r| r.0).collect::<Vec<_>>(),
        (8..20).collect::<Vec<_>>()
    );
    assert!(log.read_unsent(100, usize::MAX).unwrap().is_empty());
    // published without a sync (the caller keeps its inputs durable elsewhere), an
    // unflushed append is handed out
    log.append(&payload(20, 25)).unwrap();
    assert!(log.read_unsent(100, usize::MAX).unwrap().is_empty());
    log.publish();
    assert_eq!(log.read_unsent(100, usize::MAX).unwrap()[0].0, 20);

    // delivery reports come back out of order; the producer fails; resend
    for seq in [1, 0, 5, 7, 6, 19] {
        log.ack(seq);
    }
    log.rewind_unsent();
    let again: Vec<Seq> = log
        .read_unsent(100, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(
        again,
        [2, 3, 4, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 20]
    );
    assert!(log.read_unsent(1, usize::MAX).unwrap().is_empty());
}

#[test]
fn read_unsent_respects_max_bytes_but_hands_out_a_larger_record_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(&big(dir.path()));
    for len in [10, 10, 10, 100, 10] {
        log.append(&vec![7; len]).unwrap();
    }
    log.publish();
    let lens = |batch: Vec<(Seq, Bytes)>| batch.iter().map(|r| r.1.len()).collect::<Vec<_>>();
    assert_eq!(lens(log.read_unsent(10, 25).unwrap()), [10, 10]);
    assert_eq!(lens(log.read_unsent(10, 25).unwrap()), [10]);
    assert_eq!(lens(log.read_unsent(10, 25).unwrap()), [100]);
    assert_eq!(lens(log.read_unsent(10, 25).unwrap()), [10]);
    assert!(log.read_unsent(10, 25).unwrap().is_empty());
}

#[test]
fn block_policy_refuses_appends_when_full_until_acks_free_a_segment() {
    let dir = tempfile::tempdir().unwrap();
    // 100-byte records (16 + 84): 2 per 256-byte segment, 3 segments fit in 700 bytes
    let (mut log, _) = open(&config(dir.path(), 256, 700, FullPolicy::Block));
    let mut appended = 0;
    let err = loop {
        match log.append(&payload(appended, 84)) {
            Ok(seq) => {
                assert_eq!(seq, appended);
                appended += 1;
            }
            Err(e) => break e,
        }
    };
    assert_eq!(appended, 6);
    assert!(
        matches!(err, Error::LogFull { bytes, max_bytes: 700 } if bytes <= 700),
        "{err}"
    );
    assert!(log.stats().bytes_on_disk <= 700);
    // still refusing; no record was lost
    assert!(log.append(&payload(6, 84)).is_err());
    assert_eq!(log.stats().pending_records, 6);
    assert_eq!(log.stats().dropped_records, 0);

    log.ack(0);
    assert!(
        log.append(&payload(6, 84)).is_err(),
        "half a segment acked is not enough"
    );
    log.ack(1);
    assert_eq!(log.append(&payload(6, 84)).unwrap(), 6);
    assert_eq!(log.stats().dropped_records, 0);
    log.sync().unwrap();
    assert_eq!(seqs(&replay_all(&mut log)), (2..7).collect::<Vec<_>>());
}

#[test]
fn drop_oldest_deletes_the_oldest_segment_files_and_counts_the_loss() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 256, 700, FullPolicy::DropOldest);
    let (mut log, _) = open(&cfg);
    for seq in 0..6 {
        log.append(&payload(seq, 84)).unwrap();
    }
    log.ack(1);
    let seq = log.append(&payload(6, 84)).unwrap();
    assert_eq!(seq, 6);
    let stats = log.stats();
    assert_eq!(
        stats.dropped_records, 1,
        "record 1 was acked, only 0 is lost"
    );
    assert_eq!(stats.dropped_bytes, 216);
    assert_eq!(stats.first_unacked, 2);
    assert!(stats.bytes_on_disk <= 700);
    assert!(!dir.path().join(segment::segment_file_name(0)).exists());
    for seq in 7..20 {
        log.append(&payload(seq, 84)).unwrap();
        assert!(log.stats().bytes_on_disk <= 700);
    }
    // every second append starts a segment and drops the oldest one (2 records)
    assert_eq!(log.stats().dropped_records, 1 + 6 * 2);
    log.sync().unwrap();
    drop(log);

    let (mut log, rec) = open(&cfg);
    assert_eq!(rec.records, 6);
    let records = replay_all(&mut log);
    assert_eq!(seqs(&records), (14..20).collect::<Vec<_>>());
    for (seq, p) in records {
        assert_eq!(p, payload(seq, 84));
    }
}

#[test]
fn an_oversized_record_gets_a_segment_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 128, 10_000, FullPolicy::Block);
    let (mut log, _) = open(&cfg);
    log.append(b"small").unwrap();
    log.append(&[1; 1000]).unwrap();
    log.append(b"small again").unwrap();
    log.sync().unwrap();
    assert_eq!(segment_files(dir.path()).len(), 3);
    drop(log);
    let (mut log, _) = open(&cfg);
    let records = replay_all(&mut log);
    assert_eq!(records[1], (1, vec![1; 1000]));
    assert_eq!(records[2], (2, b"small again".to_vec()));

    // a record larger than the whole log is accepted when it is alone
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(&config(dir.path(), 128, 256, FullPolicy::Block));
    log.append(&[2; 500]).unwrap();
    assert!(matches!(log.append(b"x"), Err(Error::LogFull { .. })));
    log.ack(0);
    log.append(b"x").unwrap();
    assert!(log.stats().bytes_on_disk <= 256);
}

#[test]
fn a_payload_over_the_maximum_is_refused_and_the_log_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(&config(dir.path(), 1 << 20, 1 << 30, FullPolicy::Block));
    let err = log.append(&vec![0; MAX_PAYLOAD_LEN + 1]).unwrap_err();
    assert!(err.to_string().contains("larger than the maximum"), "{err}");
    assert_eq!(log.append(b"ok").unwrap(), 0);
}

#[test]
fn invalid_config_names_every_problem() {
    let err = DiskLog::open(config(Path::new("/nonexistent"), 10, 5, FullPolicy::Block))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("segment_bytes is 10"), "{err}");
    assert!(err.contains("max_bytes (5)"), "{err}");
}

#[test]
fn a_damaged_ack_file_means_everything_is_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = big(dir.path());
    let (mut log, _) = open(&cfg);
    for seq in 0..10 {
        log.append(&payload(seq, 10)).unwrap();
    }
    log.sync().unwrap();
    log.ack_through(4);
    log.persist_acks().unwrap();
    drop(log);
    fs::write(dir.path().join("acks"), b"garbage").unwrap();
    let (mut log, rec) = open(&cfg);
    assert_eq!(rec.first_unacked, 0);
    assert_eq!(replay_all(&mut log).len(), 10);
}

#[test]
fn a_persisted_floor_past_a_lost_tail_keeps_seqs_increasing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = big(dir.path());
    let (mut log, _) = open(&cfg);
    for seq in 0..10 {
        log.append(&payload(seq, 10)).unwrap();
    }
    log.sync().unwrap();
    for seq in 10..20 {
        log.append(&payload(seq, 10)).unwrap();
    }
    // acked before being synced (the forwarder reads unsynced records), then a crash
    // loses the tail
    log.ack_through(14);
    log.persist_acks().unwrap();
    drop(log);
    let seg = &segment_files(dir.path())[0];
    let synced_len = SEGMENT_HEADER_LEN + 10 * (RECORD_HEADER_LEN + 10);
    OpenOptions::new()
        .write(true)
        .open(seg)
        .unwrap()
        .set_len(synced_len)
        .unwrap();

    let (mut log, rec) = open(&cfg);
    assert_eq!((rec.first_unacked, rec.next_seq, rec.records), (15, 15, 0));
    assert_eq!(log.append(b"after").unwrap(), 15);
    log.sync().unwrap();
    drop(log);
    let (mut log, _) = open(&cfg);
    assert_eq!(replay_all(&mut log), vec![(15, b"after".to_vec())]);
}

#[test]
fn damage_in_an_older_segment_skips_its_rest_and_keeps_later_segments() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 180, 1 << 20, FullPolicy::Block);
    let (mut log, _) = open(&cfg);
    // 16 + 4 * 36 = 160 bytes per segment: records 0..4 in the first one
    for seq in 0..12 {
        log.append(&payload(seq, 20)).unwrap();
    }
    log.sync().unwrap();
    drop(log);
    let first = &segment_files(dir.path())[0];
    let mut bytes = fs::read(first).unwrap();
    let second_record = (SEGMENT_HEADER_LEN + RECORD_HEADER_LEN + 20) as usize;
    bytes[second_record + 20] ^= 0x40; // a payload byte of record 1
    fs::write(first, &bytes).unwrap();

    let (mut log, rec) = open(&cfg);
    assert_eq!(rec.torn_bytes_skipped, 3 * 36);
    let got = seqs(&replay_all(&mut log));
    assert_eq!(got, [0, 4, 5, 6, 7, 8, 9, 10, 11]);
    assert_eq!(
        fs::read(first).unwrap().len(),
        bytes.len(),
        "older segment left as is"
    );
    assert_eq!(log.append(b"new").unwrap(), 12);
}

#[test]
fn damage_found_while_reading_skips_the_rest_of_that_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(&config(dir.path(), 180, 1 << 20, FullPolicy::Block));
    for seq in 0..12 {
        log.append(&payload(seq, 20)).unwrap();
    }
    log.sync().unwrap();
    // the files change under the running log
    let first = &segment_files(dir.path())[0];
    let mut bytes = fs::read(first).unwrap();
    bytes[(SEGMENT_HEADER_LEN + 2 * (RECORD_HEADER_LEN + 20) + 20) as usize] ^= 1;
    fs::write(first, &bytes).unwrap();
    let got: Vec<Seq> = log
        .read_unsent(100, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(got, [0, 1, 4, 5, 6, 7, 8, 9, 10, 11]);
    assert_eq!(log.stats().corrupt_records_skipped, 2);
    assert_eq!(log.stats().pending_records, 10);
}

#[test]
fn overlapping_segments_are_reported_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = big(dir.path());
    let (mut log, _) = open(&cfg);
    for seq in 0..5 {
        log.append(&payload(seq, 10)).unwrap();
    }
    log.sync().unwrap();
    drop(log);
    // a segment claiming base 3 while segment 0 holds seqs 0..5
    let mut header = SEGMENT_MAGIC_FOR_TESTS.to_vec();
    header.extend_from_slice(&3u64.to_le_bytes());
    fs::write(dir.path().join(segment::segment_file_name(3)), header).unwrap();
    let err = DiskLog::open(cfg).err().unwrap();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
}

const SEGMENT_MAGIC_FOR_TESTS: [u8; 8] = segment::SEGMENT_MAGIC;

#[test]
fn a_large_backlog_is_read_back_in_order_in_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 1 << 20, 64 << 20, FullPolicy::Block);
    let (mut log, _) = open(&cfg);
    let n: u64 = 20_000; // 20 MB of 1000-byte records
    for seq in 0..n {
        log.append(&payload(seq, 1000)).unwrap();
    }
    log.sync().unwrap();
    drop(log);
    let (mut log, rec) = open(&cfg);
    assert_eq!(rec.records, n);

    let mut expected = 0;
    loop {
        let batch = log.read_unsent(500, 256 << 10).unwrap();
        if batch.is_empty() {
            break;
        }
        assert!(batch.len() <= 500);
        for (seq, p) in &batch {
            assert_eq!(*seq, expected);
            assert_eq!(p[..], payload(*seq, 1000)[..]);
            expected += 1;
        }
        // acks come back in reverse within a batch
        for (seq, _) in batch.iter().rev() {
            log.ack(*seq);
        }
    }
    assert_eq!(expected, n);
    log.persist_acks().unwrap();
    assert_eq!(log.stats().pending_records, 0);
    assert_eq!(segment_files(dir.path()).len(), 1);
}

// ---------------------------------------------------------------------------------------
// Torn tails

#[derive(Clone, Debug)]
enum Damage {
    /// Cut the last segment at this fraction (of 65536) of its length.
    Truncate(u32),
    /// Append garbage to the last segment.
    Garbage(Vec<u8>),
    /// XOR a byte at this fraction of the last segment's length.
    Flip(u32, u8),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (0..=65536u32).prop_map(Damage::Truncate),
        proptest::collection::vec(any::<u8>(), 1..64).prop_map(Damage::Garbage),
        (0..65536u32, 1..=255u8).prop_map(|(at, x)| Damage::Flip(at, x)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 96,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn a_torn_tail_recovers_a_prefix_and_the_log_keeps_working(
        lens in proptest::collection::vec(0..120usize, 1..30),
        segment_bytes in prop_oneof![Just(1u64 << 20), 100..600u64],
        damage in damage(),
        more in 1..8u64,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), segment_bytes, 1 << 30, FullPolicy::Block);
        let (mut log, _) = open(&cfg);
        for (seq, len) in lens.iter().enumerate() {
            log.append(&payload(seq as u64, *len)).unwrap();
        }
        log.sync().unwrap();
        drop(log);

        let files = segment_files(dir.path());
        let last = files.last().unwrap().clone();
        let base: Seq = last.file_stem().unwrap().to_str().unwrap().parse().unwrap();
        // end offset of each record of the last segment
        let mut ends = Vec::new();
        let mut at = SEGMENT_HEADER_LEN;
        for len in &lens[base as usize..] {
            at += RECORD_HEADER_LEN + *len as u64;
            ends.push(at);
        }
        let file_len = fs::metadata(&last).unwrap().len();
        prop_assert_eq!(file_len, at);

        // (records of the last segment that survive, expected torn bytes)
        let (survive, torn) = match &damage {
            Damage::Truncate(frac) => {
                let cut = file_len * u64::from(*frac) / 65536;
                OpenOptions::new().write(true).open(&last).unwrap().set_len(cut).unwrap();
                if cut < SEGMENT_HEADER_LEN {
                    (0, cut)
                } else {
                    let n = ends.iter().filter(|e| **e <= cut).count();
                    let valid = if n == 0 { SEGMENT_HEADER_LEN } else { ends[n - 1] };
                    (n, cut - valid)
                }
            }
            Damage::Garbage(bytes) => {
                OpenOptions::new().append(true).open(&last).unwrap().write_all(bytes).unwrap();
                (ends.len(), bytes.len() as u64)
            }
            Damage::Flip(frac, x) => {
                let at = (file_len * u64::from(*frac) / 65536).min(file_len - 1);
                let mut bytes = fs::read(&last).unwrap();
                bytes[at as usize] ^= x;
                fs::write(&last, &bytes).unwrap();
                if at < SEGMENT_HEADER_LEN {
                    (0, file_len)
                } else {
                    let n = ends.iter().filter(|e| **e <= at).count();
                    let valid = if n == 0 { SEGMENT_HEADER_LEN } else { ends[n - 1] };
                    (n, file_len - valid)
                }
            }
        };
        let kept = base as usize + survive;

        let (mut log, rec) = open(&cfg);
        prop_assert_eq!(rec.torn_bytes_skipped, torn);
        prop_assert_eq!(rec.next_seq, kept as u64);
        let records = replay_all(&mut log);
        prop_assert_eq!(seqs(&records), (0..kept as u64).collect::<Vec<_>>());
        for (seq, p) in &records {
            prop_assert_eq!(p, &payload(*seq, lens[*seq as usize]));
        }

        // appends after recovery work and survive another reopen
        for i in 0..more {
            let seq = kept as u64 + i;
            prop_assert_eq!(log.append(&payload(seq, 33)).unwrap(), seq);
        }
        log.sync().unwrap();
        drop(log);
        let (mut log, rec) = open(&cfg);
        prop_assert_eq!(rec.torn_bytes_skipped, 0);
        let records = replay_all(&mut log);
        prop_assert_eq!(seqs(&records), (0..kept as u64 + more).collect::<Vec<_>>());
        for (seq, p) in &records[kept..] {
            prop_assert_eq!(p, &payload(*seq, 33));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Whole log against a model, with crashes

#[derive(Clone, Copy, Debug)]
enum Crash {
    /// Drop the log: buffered records reach the OS, nothing is fsynced.
    Drop,
    /// Leak the log: buffered records are lost.
    Forget,
    /// Leak it and cut every file at a random point after what was synced.
    PowerLoss,
}

#[derive(Clone, Debug)]
enum Op {
    Append(Vec<u8>),
    Ack(usize),
    AckThrough(usize),
    Sync,
    Persist,
    Read(usize, usize),
    Rewind,
    Crash(Crash, u64),
}

fn op() -> impl Strategy<Value = Op> {
    let small = proptest::collection::vec(any::<u8>(), 0..120);
    let large = proptest::collection::vec(any::<u8>(), 300..900);
    prop_oneof![
        10 => prop_oneof![8 => small, 1 => large].prop_map(Op::Append),
        4 => any::<usize>().prop_map(Op::Ack),
        1 => any::<usize>().prop_map(Op::AckThrough),
        3 => Just(Op::Sync),
        2 => Just(Op::Persist),
        3 => (1..12usize, prop_oneof![Just(usize::MAX), 50..400usize])
            .prop_map(|(n, b)| Op::Read(n, b)),
        1 => Just(Op::Rewind),
        2 => (prop_oneof![Just(Crash::Drop), Just(Crash::Forget), Just(Crash::PowerLoss)],
              any::<u64>())
            .prop_map(|(c, pick)| Op::Crash(c, pick)),
    ]
}

#[derive(Debug)]
struct MRec {
    payload: Vec<u8>,
    acked: bool,
    synced: bool,
}

#[derive(Debug, Default)]
struct Model {
    recs: BTreeMap<Seq, MRec>,
    next: Seq,
    cursor: Seq,
    persisted_floor: Seq,
    /// Every synced seq is below this.
    synced_end: Seq,
    /// Unacked records dropped by the full policy since the last open.
    dropped: u64,
}

impl Model {
    fn floor(&self) -> Seq {
        self.recs
            .iter()
            .find(|(_, r)| !r.acked)
            .map_or(self.next, |(s, _)| *s)
    }

    fn pick(&self, i: usize) -> Seq {
        if self.recs.is_empty() || i % 10 == 9 {
            return self.next + (i % 2) as u64;
        }
        *self.recs.keys().nth(i % self.recs.len()).unwrap_or(&0)
    }

    fn unacked(&self) -> Vec<(Seq, Vec<u8>)> {
        self.recs
            .iter()
            .filter(|(_, r)| !r.acked)
            .map(|(s, r)| (*s, r.payload.clone()))
            .collect()
    }
}

/// Length of every segment file now.
fn file_lengths(dir: &Path) -> BTreeMap<PathBuf, u64> {
    segment_files(dir)
        .into_iter()
        .map(|p| {
            let len = fs::metadata(&p).unwrap().len();
            (p, len)
        })
        .collect()
}

/// Simulates a crash. For a power loss, every segment file keeps what it had at the
/// last successful `sync` (as measured by the test, not by the log) plus a random part of
/// what was written since; files created since may lose everything.
fn crash(log: DiskLog, kind: Crash, pick: u64, durable: &BTreeMap<PathBuf, u64>, dir: &Path) {
    match kind {
        Crash::Drop => drop(log),
        Crash::Forget => std::mem::forget(log),
        Crash::PowerLoss => {
            std::mem::forget(log);
            for (i, (path, len)) in file_lengths(dir).into_iter().enumerate() {
                let synced = durable.get(&path).copied().unwrap_or(0).min(len);
                let pick = pick.rotate_left(i as u32 * 17);
                let keep = synced + pick % (len - synced + 1);
                if keep < len {
                    OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .unwrap()
                        .set_len(keep)
                        .unwrap();
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_log_survives_crashes_without_losing_synced_records(
        segment_bytes in 64..700u64,
        max_factor in prop_oneof![Just(None), (2..6u64).prop_map(Some)],
        drop_oldest in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let max_bytes = max_factor.map_or(1 << 30, |f| f * segment_bytes);
        let policy = if drop_oldest { FullPolicy::DropOldest } else { FullPolicy::Block };
        let cfg = config(dir.path(), segment_bytes, max_bytes, policy);
        let (mut log, _) = open(&cfg);
        let mut m = Model::default();
        let mut durable = BTreeMap::new();
        for op in ops {
            match op {
                Op::Append(p) => {
                    let seq = match log.append(&p) {
                        Ok(seq) => seq,
                        Err(Error::LogFull { .. }) => {
                            prop_assert_eq!(policy, FullPolicy::Block);
                            continue;
                        }
                        Err(e) => return Err(TestCaseError::fail(e.to_string())),
                    };
                    prop_assert_eq!(seq, m.next);
                    m.next += 1;
                    m.recs.insert(seq, MRec { payload: p, acked: false, synced: false });
                    // drop-oldest: the records the log dropped are the oldest, counted exactly
                    let gone: Vec<Seq> = m.recs.keys().copied()
                        .filter(|s| !log.ledger.is_present(*s)).collect();
                    for s in gone {
                        let r = m.recs.remove(&s).unwrap();
                        prop_assert!(m.recs.keys().all(|k| *k > s), "dropped {} out of order", s);
                        if !r.acked {
                            prop_assert_eq!(policy, FullPolicy::DropOldest);
                            m.dropped += 1;
                        }
                    }
                    let stats = log.stats();
                    prop_assert_eq!(stats.dropped_records, m.dropped);
                    let single = stats.segments == 1 && stats.pending_records <= 1;
                    prop_assert!(stats.bytes_on_disk <= max_bytes || single,
                        "{} bytes on disk > {}", stats.bytes_on_disk, max_bytes);
                }
                Op::Ack(i) => {
                    let seq = m.pick(i);
                    log.ack(seq);
                    if let Some(r) = m.recs.get_mut(&seq) { r.acked = true; }
                }
                Op::AckThrough(i) => {
                    let seq = m.pick(i);
                    log.ack_through(seq);
                    for (_, r) in m.recs.range_mut(..=seq) { r.acked = true; }
                }
                Op::Sync => {
                    log.sync().unwrap();
                    durable = file_lengths(dir.path());
                    for r in m.recs.values_mut() { r.synced = true; }
                    m.synced_end = m.next;
                }
                Op::Persist => {
                    log.persist_acks().unwrap();
                    m.persisted_floor = m.floor();
                }
                Op::Read(n, max_bytes) => {
                    let got: Vec<(Seq, Vec<u8>)> = log.read_unsent(n, max_bytes).unwrap()
                        .into_iter().map(|(s, p)| (s, p.to_vec())).collect();
                    let mut expected = Vec::new();
                    let mut bytes = 0;
                    for (s, r) in m.recs.range(m.cursor.max(m.floor())..) {
                        // only what a sync published is handed out
                        if *s >= m.synced_end || expected.len() == n { break; }
                        if r.acked { continue; }
                        if !expected.is_empty() && bytes + r.payload.len() > max_bytes { break; }
                        bytes += r.payload.len();
                        expected.push((*s, r.payload.clone()));
                    }
                    prop_assert_eq!(&got, &expected);
                    for (s, _) in &got {
                        prop_assert!(m.recs[s].synced, "record {} handed out before it was durable", s);
                    }
                    if let Some((s, _)) = got.last() { m.cursor = s + 1; }
                }
                Op::Rewind => {
                    log.rewind_unsent();
                    m.cursor = 0;
                }
                Op::Crash(kind, pick) => {
                    crash(log, kind, pick, &durable, dir.path());
                    let (mut reopened, rec) = open(&cfg);
                    durable = file_lengths(dir.path());
                    let records = replay_all(&mut reopened);
                    for pair in records.windows(2) {
                        prop_assert!(pair[0].0 < pair[1].0, "replay out of order");
                    }
                    for (seq, p) in &records {
                        prop_assert!(*seq >= m.persisted_floor, "acked and persisted {} came back", seq);
                        let Some(r) = m.recs.get(seq) else {
                            return Err(TestCaseError::fail(format!("unknown record {seq}")));
                        };
                        prop_assert_eq!(&r.payload, p, "payload of {}", seq);
                    }
                    let found: std::collections::BTreeSet<Seq> = seqs(&records).into_iter().collect();
                    for (seq, r) in &m.recs {
                        if r.synced && !r.acked && *seq >= m.persisted_floor {
                            prop_assert!(found.contains(seq), "synced record {} lost", seq);
                        }
                    }
                    let max_found = records.last().map_or(0, |(s, _)| s + 1);
                    prop_assert!(rec.next_seq >= max_found.max(m.synced_end).max(m.persisted_floor));
                    prop_assert_eq!(rec.first_unacked, records.first().map_or(rec.next_seq, |r| r.0));
                    prop_assert_eq!(rec.records, records.len() as u64);
                    m.recs.retain(|s, _| found.contains(s));
                    for r in m.recs.values_mut() {
                        r.acked = false;
                        r.synced = true;
                    }
                    m.next = rec.next_seq;
                    m.synced_end = rec.next_seq;
                    m.dropped = 0;
                    m.cursor = 0;
                    log = reopened;
                }
            }
            let stats = log.stats();
            prop_assert_eq!(stats.first_unacked, m.floor());
            prop_assert_eq!(stats.pending_records, m.unacked().len() as u64);
            prop_assert_eq!(stats.next_seq, m.next);
        }
        log.sync().unwrap();
        log.rewind_unsent();
        let all: Vec<(Seq, Vec<u8>)> = log.read_unsent(usize::MAX, usize::MAX).unwrap()
            .into_iter().map(|(s, p)| (s, p.to_vec())).collect();
        prop_assert_eq!(&all, &m.unacked());
        prop_assert_eq!(replay_all(&mut log), m.unacked());
    }
}
