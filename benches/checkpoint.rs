//! Checkpoints with 100,000 sensors of state: what taking them costs in throughput, how
//! large and slow to write they are, and how long a restore takes.
//!
//! Workload: the continuous query of `window_aggregation` (1-minute tumbling windows,
//! `avg`, `max` and `count(*)` per sensor, a 100,000-row live table) on one partition of
//! edge readings from 100,000 sensors, 3,000,000 readings per 3 minutes of event time
//! (each sensor about 10 per minute, so some 100,000 windows are open at any time).
//! Two engines get the same laps of data, alternating lap by lap in one run: one without
//! checkpoints, one that takes a checkpoint (the engine's state files, committed to a
//! checkpoint store in a local directory, then old epochs removed) whenever
//! `interval` of its processing time has passed. Each lap shifts the data 3 minutes on.
//! Only processing and checkpointing are timed.
//!
//! Reported: rows/s of both and their ratio (goal for a 5 s interval: at least 0.9),
//! measured with the interval at 5 s and at 0.5 s (ten times as often as the default,
//! to see the cost); the last checkpoint's size and write time; the time to restore
//! an engine from it (reading and verifying the epoch, decoding, rebuilding the state;
//! goal: under 1 s).
//!
//! Run: `cargo bench --bench checkpoint`. Without `--bench` among the arguments (e.g.
//! `cargo test --benches`) a small smoke version runs instead.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use datafusion::arrow::array::{Float64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use edgeflow_ingest::format::{reading_schema, Format, FormatKind};
use edgeflow_stream::checkpoint::CheckpointStore;
use edgeflow_stream::engine::{Engine, QueryDecl, StreamDecl};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SEED: u64 = 0x5eed_c4e7;
const BATCH_ROWS: usize = 8192;
/// Start of the data: a whole minute (2025-11-24T16:00:00Z).
const T0: i64 = 1_764_000_000_000;
const LAP_MS: i64 = 3 * 60_000;
const STREAM: &str = "readings";
const SQL: &str = "SELECT sensor, tumble(ts, INTERVAL '1 minute') AS w, \
     avg(value) AS mean, max(value) AS hi, count(*) AS n \
     FROM readings GROUP BY sensor, tumble(ts, INTERVAL '1 minute')";

struct Sizes {
    sensors: usize,
    rows_per_lap: usize,
    laps: usize,
}

/// One lap of data: batches (sensor index, offset in the lap ms, value) and their
/// largest offset; turned into record batches per lap.
struct Lap {
    batches: Vec<Vec<(usize, i64, f64)>>,
}

fn generate(s: &Sizes) -> Lap {
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut batches = Vec::new();
    let mut rows = Vec::with_capacity(BATCH_ROWS);
    for i in 0..s.rows_per_lap {
        let sensor = rng.random_range(0..s.sensors);
        let at = i as i64 * LAP_MS / s.rows_per_lap as i64 + rng.random_range(0..250);
        rows.push((sensor, at, rng.random_range(15.0..30.0)));
        if rows.len() == BATCH_ROWS {
            batches.push(std::mem::take(&mut rows));
        }
    }
    if !rows.is_empty() {
        batches.push(rows);
    }
    Lap { batches }
}

/// Lap `k` as record batches with their largest event time.
fn lap_batches(lap: &Lap, k: usize, names: &[String]) -> Vec<(RecordBatch, i64)> {
    let shift = T0 + k as i64 * LAP_MS;
    lap.batches
        .iter()
        .map(|rows| {
            let batch = RecordBatch::try_new(
                reading_schema(),
                vec![
                    Arc::new(StringArray::from_iter_values(rows.iter().map(|_| "gw-1"))),
                    Arc::new(StringArray::from_iter_values(
                        rows.iter().map(|r| &names[r.0]),
                    )),
                    Arc::new(StringArray::from_iter_values(rows.iter().map(|_| "site-a"))),
                    Arc::new(StringArray::from_iter_values(
                        rows.iter().map(|_| "temperature"),
                    )),
                    Arc::new(
                        TimestampMillisecondArray::from_iter_values(
                            rows.iter().map(|r| shift + r.1),
                        )
                        .with_timezone("UTC"),
                    ),
                    Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.2))),
                ],
            )
            .expect("batch");
            let max = rows.iter().map(|r| shift + r.1).max().unwrap_or(shift);
            (batch, max)
        })
        .collect()
}

async fn engine() -> Engine {
    let mut e = Engine::new();
    e.add_stream(StreamDecl {
        name: STREAM.into(),
        format: Format::new(FormatKind::EdgeReadings, vec![], None).expect("format"),
        watermark_delay_ms: 5_000,
        idle_timeout_ms: 30_000,
        latest_key: vec![],
        latest_rows: 0,
    })
    .expect("stream");
    e.add_partition(STREAM, 0, T0).expect("partition");
    e.create_query(
        QueryDecl {
            name: "q".into(),
            sql: SQL.into(),
            allowed_lateness_ms: 0,
            live_rows: 100_000,
        },
        T0,
    )
    .await
    .expect("query");
    e
}

/// An engine and, if it checkpoints, its store and the processing time since its last
/// checkpoint.
struct Runner {
    engine: Engine,
    store: Option<(CheckpointStore, Duration)>,
    interval: Duration,
    busy: Duration,
    rows: usize,
    checkpoints: usize,
    last_bytes: u64,
    last_write: Duration,
}

impl Runner {
    async fn new(store: Option<CheckpointStore>, interval: Duration) -> Self {
        Runner {
            engine: engine().await,
            store: store.map(|s| (s, Duration::ZERO)),
            interval,
            busy: Duration::ZERO,
            rows: 0,
            checkpoints: 0,
            last_bytes: 0,
            last_write: Duration::ZERO,
        }
    }

    async fn lap(&mut self, batches: &[(RecordBatch, i64)]) {
        for (i, (b, max)) in batches.iter().enumerate() {
            let started = Instant::now();
            self.engine
                .process(STREAM, 0, b.clone(), Some(*max), *max)
                .await
                .expect("process");
            let took = started.elapsed();
            self.busy += took;
            self.rows += b.num_rows();
            if let Some((store, since)) = &mut self.store {
                *since += took;
                if *since >= self.interval {
                    let started = Instant::now();
                    let files: Vec<(String, Bytes)> = self
                        .engine
                        .checkpoint_files()
                        .expect("state")
                        .into_iter()
                        .map(|(n, b)| (n, Bytes::from(b)))
                        .collect();
                    let bytes = files.iter().map(|f| f.1.len() as u64).sum();
                    store
                        .commit("bench", 0, i as i64, vec![], files)
                        .await
                        .expect("commit");
                    store.gc().await.expect("gc");
                    let took = started.elapsed();
                    self.busy += took;
                    *since = Duration::ZERO;
                    self.checkpoints += 1;
                    self.last_bytes = bytes;
                    self.last_write = took;
                }
            }
        }
    }

    fn rate(&self) -> f64 {
        self.rows as f64 / self.busy.as_secs_f64()
    }
}

async fn run(s: &Sizes, interval: Duration, dir: &std::path::Path) -> (Runner, Runner) {
    let names: Vec<String> = (0..s.sensors).map(|i| format!("s-{i:06}")).collect();
    let lap = generate(s);
    let fs = LocalFileSystem::new_with_prefix(dir).expect("checkpoint dir");
    let store = CheckpointStore::new(Arc::new(fs), Path::from("bench"), 3);
    let mut off = Runner::new(None, interval).await;
    let mut on = Runner::new(Some(store), interval).await;
    for k in 0..s.laps {
        let batches = lap_batches(&lap, k, &names);
        // Alternate which goes first, so neither always runs on a warm or cold cache.
        if k % 2 == 0 {
            off.lap(&batches).await;
            on.lap(&batches).await;
        } else {
            on.lap(&batches).await;
            off.lap(&batches).await;
        }
    }
    (off, on)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let sizes = if full {
        Sizes {
            sensors: 100_000,
            rows_per_lap: 3_000_000,
            laps: 8,
        }
    } else {
        Sizes {
            sensors: 1_000,
            rows_per_lap: 40_000,
            laps: 2,
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let intervals: Vec<Duration> = if full {
        vec![Duration::from_secs(5), Duration::from_millis(500)]
    } else {
        vec![Duration::from_millis(20)]
    };
    for interval in intervals {
        let dir = tempfile::tempdir().expect("tempdir");
        let (off, on) = rt.block_on(run(&sizes, interval, dir.path()));
        assert!(on.checkpoints > 0, "no checkpoint was taken: run longer");
        println!(
            "checkpoint every {interval:?}: off {:.2} M rows/s, on {:.2} M rows/s, ratio {:.3} ({} checkpoints, the last {:.1} MB written in {:.0} ms)",
            off.rate() / 1e6,
            on.rate() / 1e6,
            on.rate() / off.rate(),
            on.checkpoints,
            on.last_bytes as f64 / 1e6,
            on.last_write.as_secs_f64() * 1e3,
        );
        // Restore the last checkpoint into a fresh engine.
        let fs = LocalFileSystem::new_with_prefix(dir.path()).expect("checkpoint dir");
        let store = CheckpointStore::new(Arc::new(fs), Path::from("bench"), 3);
        let (took, groups) = rt.block_on(async {
            let mut fresh = engine().await;
            let started = Instant::now();
            let r = store.restore().await.expect("restore").expect("an epoch");
            let files: BTreeMap<String, Bytes> = r.files;
            fresh.restore_files(&files, T0).expect("restores");
            let took = started.elapsed();
            (took, fresh.queries()[0].stats.open_groups)
        });
        assert!(groups > 0, "the restored engine holds windows");
        println!(
            "restore: {:.0} ms for {groups} open windows of {} sensors",
            took.as_secs_f64() * 1e3,
            sizes.sensors
        );
    }
}
