//! Store-and-forward disk log throughput on a real file system (tempdirs under `/tmp`).
//!
//! - `disklog_append/*`: records appended with a group commit (`sync`, i.e. fdatasync)
//!   every 1,000 records, as the agent does per commit interval. One iteration is 1,000
//!   appends plus the sync. The log is replaced by a fresh one (untimed) once it holds
//!   256 MB, so it never fills up. `*_no_sync` leaves the sync out: the CPU cost of an
//!   append (the kernel writes back the page cache on its own).
//! - `disklog_drain/*`: a log pre-filled (untimed) with a backlog of 200-byte records, as
//!   after a Kafka outage, read back with `read_unsent(1024, 4 MiB)` + `ack` per record +
//!   `persist_acks` every 64 batches until empty, like the forwarder. The backlog is
//!   `EDGEFLOW_BENCH_BACKLOG_MB` MB of payload (default 150). The files were just written,
//!   so reads come from the page cache: this is the log's CPU cost, not the disk's.
//!
//! Throughput is payload bytes (criterion prints MiB/s or GiB/s). Segment size and bound
//! are the agent's defaults (`store.segment_bytes` 64 MiB, `store.max_bytes` 1 GiB).
//!
//! Run: `cargo bench --bench disklog -- --measurement-time 3 --warm-up-time 1`
//! (smaller backlog: `EDGEFLOW_BENCH_BACKLOG_MB=50 cargo bench --bench disklog`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, SamplingMode, Throughput};
use edgeflow_edge::disklog::{DiskLog, DiskLogConfig, FullPolicy};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tempfile::TempDir;

const SEED: u64 = 0xd15c_1096;
const RECORD_BYTES: usize = 200;
/// Size of an input-journal reading entry (`record::encode_journal`) for a short sensor
/// id, a site and the field `value`.
const JOURNAL_BYTES: usize = 50;
const GROUP_COMMIT: usize = 1_000;
const SEGMENT_BYTES: u64 = 64 << 20;
const MAX_BYTES: u64 = 1 << 30;
/// The append benchmark starts a fresh log when the current one holds this much.
const RESET_BYTES: u64 = 256 << 20;
const DEFAULT_BACKLOG_MB: u64 = 150;
/// Forwarder batch: `read_unsent(1024, 4 MiB)`.
const READ_RECORDS: usize = 1024;
const READ_BYTES: usize = 4 << 20;
const PERSIST_EVERY_BATCHES: usize = 64;

fn payloads(len: usize, n: usize) -> Vec<Vec<u8>> {
    let mut rng = StdRng::seed_from_u64(SEED ^ len as u64);
    (0..n)
        .map(|_| (0..len).map(|_| rng.random()).collect())
        .collect()
}

fn open_log() -> (TempDir, DiskLog) {
    let dir = tempfile::Builder::new()
        .prefix("edgeflow-bench-disklog-")
        .tempdir()
        .expect("creating a tempdir under /tmp");
    let (log, _) = DiskLog::open(DiskLogConfig {
        dir: dir.path().join("log"),
        segment_bytes: SEGMENT_BYTES,
        max_bytes: MAX_BYTES,
        full_policy: FullPolicy::Block,
    })
    .expect("opening the disk log");
    (dir, log)
}

fn backlog_bytes() -> u64 {
    let mb = match std::env::var("EDGEFLOW_BENCH_BACKLOG_MB") {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| {
            panic!("EDGEFLOW_BENCH_BACKLOG_MB must be a whole number of MB, not `{v}`")
        }),
        Err(_) => DEFAULT_BACKLOG_MB,
    };
    mb * 1_000_000
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("disklog_append");
    for (name, len, sync) in [
        ("200B_sync_every_1000", RECORD_BYTES, true),
        ("journal_50B_sync_every_1000", JOURNAL_BYTES, true),
        ("journal_50B_no_sync", JOURNAL_BYTES, false),
    ] {
        let records = payloads(len, GROUP_COMMIT);
        group.throughput(Throughput::Bytes((len * GROUP_COMMIT) as u64));
        let mut state = open_log();
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    if state.1.stats().bytes_on_disk >= RESET_BYTES {
                        // Untimed: drop the full log (and its files) and start over.
                        state = open_log();
                    }
                    let log = &mut state.1;
                    let start = Instant::now();
                    for r in &records {
                        black_box(log.append(r).expect("append"));
                    }
                    if sync {
                        log.sync().expect("sync");
                    }
                    timed += start.elapsed();
                }
                timed
            })
        });
    }
    group.finish();
}

/// A fresh log holding `bytes` of 200-byte records, synced.
fn filled_log(records: &[Vec<u8>], bytes: u64) -> (TempDir, DiskLog) {
    let (dir, mut log) = open_log();
    let n = bytes / RECORD_BYTES as u64;
    for i in 0..n {
        log.append(&records[i as usize % records.len()])
            .expect("filling the log");
    }
    log.sync().expect("sync");
    (dir, log)
}

fn drain(c: &mut Criterion) {
    let bytes = backlog_bytes();
    let records = payloads(RECORD_BYTES, GROUP_COMMIT);
    let n = bytes / RECORD_BYTES as u64;
    let payload_bytes = n * RECORD_BYTES as u64;
    {
        let (_dir, log) = filled_log(&records, bytes);
        let st = log.stats();
        println!(
            "disklog_drain: backlog of {n} records of {RECORD_BYTES} B = {:.1} MB of payload, \
             {:.1} MB on disk in {} segments",
            payload_bytes as f64 / 1e6,
            st.bytes_on_disk as f64 / 1e6,
            st.segments
        );
    }
    let mut group = c.benchmark_group("disklog_drain");
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Bytes(payload_bytes));
    group.bench_function(format!("{}MB_200B", bytes / 1_000_000), |b| {
        b.iter_batched(
            || filled_log(&records, bytes),
            |(dir, mut log)| {
                let mut drained = 0u64;
                let mut batches = 0;
                loop {
                    let batch = log
                        .read_unsent(READ_RECORDS, READ_BYTES)
                        .expect("read_unsent");
                    if batch.is_empty() {
                        break;
                    }
                    for (seq, payload) in batch {
                        drained += payload.len() as u64;
                        log.ack(seq);
                    }
                    batches += 1;
                    if batches % PERSIST_EVERY_BATCHES == 0 {
                        log.persist_acks().expect("persist_acks");
                    }
                }
                log.persist_acks().expect("persist_acks");
                assert_eq!(drained, payload_bytes, "drained the whole backlog");
                assert_eq!(log.stats().pending_records, 0);
                // Returned so that deleting the files is not timed.
                (dir, log)
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = append, drain
}
criterion_main!(benches);
