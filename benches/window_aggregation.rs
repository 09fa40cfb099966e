//! Windowed aggregation on the processor next to the same aggregation as a DataFusion
//! batch query, over the same rows in memory, in one run (one benchmark group, so
//! criterion reports both rates together):
//! - `window_aggregation/continuous`: an `edgeflow_stream::engine::Engine` with one
//!   partition of a `readings` stream (`edge-readings`, the default 5 s watermark delay,
//!   no allowed lateness, a 100,000-row live table) running
//!   `SELECT sensor, tumble(ts, INTERVAL '1 minute') AS w, avg(value) AS mean,
//!   max(value) AS hi, count(*) AS n FROM readings GROUP BY sensor, tumble(..)`.
//!   One iteration feeds every batch through `Engine::process` (the per-batch DataFusion
//!   projection, the window operator, emitting windows as the watermark closes them,
//!   the live table); a fresh engine is built for each iteration, untimed. The windows
//!   of the last minute are still open when an iteration ends, as in a running stream.
//! - `window_aggregation/datafusion_batch`: a `SessionContext` with one target
//!   partition over a `MemTable` of the same batches, running the equivalent
//!   `GROUP BY sensor, date_bin(INTERVAL '1 minute', ts)`, planned and collected per
//!   iteration.
//!
//! Both run on one core: a current-thread tokio runtime and one partition each.
//!
//! Data set (seeded, built before any timing): 1,000,000 readings of 1,000 sensors
//! (random sensor per row) in batches of 8,192 rows of `format::reading_schema()`, with
//! timestamps increasing over 10 minutes plus up to 250 ms of jitter, so no row is late.
//! Before timing, one run of each is checked to give the same number of result rows (and
//! the same total count), the continuous one flushed by a far-future row that closes
//! every window.
//!
//! Goal: the continuous query at least 0.5x the batch query's rate, and at least
//! 5,000,000 rows/s on one core.
//!
//! Run: `cargo bench --bench window_aggregation -- --measurement-time 5 --warm-up-time 1`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, SamplingMode, Throughput};
use datafusion::arrow::array::{
    AsArray, Float64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use edgeflow_ingest::format::{reading_schema, Format, FormatKind};
use edgeflow_stream::engine::{Engine, QueryDecl, StreamDecl};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::runtime::Runtime;

const SEED: u64 = 0x3a9d_0b11;
const ROWS: usize = 1_000_000;
const BATCH_ROWS: usize = 8192;
const SENSORS: usize = 1_000;
const SITES: usize = 8;
/// Start of the data set: a whole minute (2025-11-24T16:00:00Z).
const T0: i64 = 1_764_000_000_000;
const SPAN_MS: i64 = 10 * 60_000;
const JITTER_MS: i64 = 250;
/// The stream defaults of the processor's config.
const DELAY_MS: i64 = 5_000;
const IDLE_MS: i64 = 30_000;
const LIVE_ROWS: usize = 100_000;
const STREAM: &str = "readings";

const CONTINUOUS_SQL: &str = "SELECT sensor, tumble(ts, INTERVAL '1 minute') AS w, \
     avg(value) AS mean, max(value) AS hi, count(*) AS n \
     FROM readings GROUP BY sensor, tumble(ts, INTERVAL '1 minute')";
const BATCH_SQL: &str = "SELECT sensor, date_bin(INTERVAL '1 minute', ts) AS w, \
     avg(value), max(value), count(*) \
     FROM readings GROUP BY sensor, date_bin(INTERVAL '1 minute', ts)";
/// Column of the row count in both queries' results.
const COUNT_COLUMN: usize = 4;

/// One batch of the stream and its largest event time.
struct Input {
    batch: RecordBatch,
    max_ts: i64,
}

fn reading_batch(rows: &[(usize, i64, f64)], names: &Names) -> RecordBatch {
    RecordBatch::try_new(
        reading_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| &names.gateways[r.0]),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| &names.sensors[r.0]),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| &names.sites[r.0]),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|_| "temperature"),
            )),
            Arc::new(
                TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.1))
                    .with_timezone("UTC"),
            ),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.2))),
        ],
    )
    .expect("reading batch")
}

/// Per-sensor gateway, sensor and site names.
struct Names {
    gateways: Vec<String>,
    sensors: Vec<String>,
    sites: Vec<String>,
}

fn generate() -> Vec<Input> {
    let mut rng = StdRng::seed_from_u64(SEED);
    let names = Names {
        gateways: (0..SENSORS).map(|i| format!("gw-{:02}", i / 100)).collect(),
        sensors: (0..SENSORS).map(|i| format!("s-{i:04}")).collect(),
        sites: (0..SENSORS)
            .map(|i| format!("site-{}", (b'a' + (i % SITES) as u8) as char))
            .collect(),
    };
    let base: Vec<f64> = (0..SENSORS).map(|_| rng.random_range(15.0..30.0)).collect();
    let mut inputs = Vec::with_capacity(ROWS.div_ceil(BATCH_ROWS));
    let mut rows = Vec::with_capacity(BATCH_ROWS);
    for start in (0..ROWS).step_by(BATCH_ROWS) {
        rows.clear();
        for i in start..(start + BATCH_ROWS).min(ROWS) {
            let sensor = rng.random_range(0..SENSORS);
            let ts = T0 + i as i64 * SPAN_MS / ROWS as i64 + rng.random_range(0..JITTER_MS);
            let value = ((base[sensor] + rng.random_range(-0.5..0.5)) * 100.0).round() / 100.0;
            rows.push((sensor, ts, value));
        }
        inputs.push(Input {
            batch: reading_batch(&rows, &names),
            max_ts: rows.iter().map(|r| r.1).max().expect("a non-empty batch"),
        });
    }
    inputs
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime")
}

/// An engine with the stream, its one partition and the continuous query.
async fn engine() -> Engine {
    let mut engine = Engine::new();
    engine
        .add_stream(StreamDecl {
            name: STREAM.into(),
            format: Format::new(FormatKind::EdgeReadings, vec![], None).expect("format"),
            watermark_delay_ms: DELAY_MS,
            idle_timeout_ms: IDLE_MS,
            latest_key: vec![],
            latest_rows: 0,
        })
        .expect("stream");
    engine.add_partition(STREAM, 0, T0).expect("partition");
    engine
        .create_query(
            QueryDecl {
                name: "q".into(),
                sql: CONTINUOUS_SQL.into(),
                allowed_lateness_ms: 0,
                live_rows: LIVE_ROWS,
            },
            T0,
        )
        .await
        .expect("the continuous query plans");
    engine
}

/// Feeds every batch (processing time follows event time); returns the emitted rows.
async fn feed(engine: &mut Engine, inputs: &[Input]) -> Vec<RecordBatch> {
    let mut emitted = Vec::new();
    for input in inputs {
        let out = engine
            .process(
                STREAM,
                0,
                input.batch.clone(),
                Some(input.max_ts),
                input.max_ts,
            )
            .await
            .expect("process");
        emitted.extend(out.into_iter().flat_map(|o| o.rows));
    }
    emitted
}

/// A far-future row and a tick: the watermark passes every window of the data set.
async fn flush(engine: &mut Engine, inputs: &[Input]) -> Vec<RecordBatch> {
    let last = inputs.iter().map(|i| i.max_ts).max().expect("inputs");
    let far = last + 3_600_000;
    let names = Names {
        gateways: vec!["gw-flush".into()],
        sensors: vec!["flush".into()],
        sites: vec!["flush".into()],
    };
    let batch = reading_batch(&[(0, far, 0.0)], &names);
    let out = engine
        .process(STREAM, 0, batch, Some(far), far)
        .await
        .expect("process the flush row");
    let mut emitted: Vec<RecordBatch> = out.into_iter().flat_map(|o| o.rows).collect();
    let ticked = engine.tick(far + IDLE_MS + 1).expect("tick");
    emitted.extend(ticked.into_iter().flat_map(|o| o.rows));
    emitted
}

fn batch_context(inputs: &[Input]) -> SessionContext {
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
    let batches = inputs.iter().map(|i| i.batch.clone()).collect();
    let table = MemTable::try_new(reading_schema(), vec![batches]).expect("memtable");
    ctx.register_table(STREAM, Arc::new(table))
        .expect("register the table");
    ctx
}

async fn batch_query(ctx: &SessionContext) -> Vec<RecordBatch> {
    ctx.sql(BATCH_SQL)
        .await
        .expect("the batch query plans")
        .collect()
        .await
        .expect("the batch query runs")
}

/// (result rows, sum of the count column)
fn summary(batches: &[RecordBatch]) -> (usize, i64) {
    let rows = batches.iter().map(RecordBatch::num_rows).sum();
    let total = batches
        .iter()
        .map(|b| {
            let n = cast(b.column(COUNT_COLUMN), &DataType::Int64).expect("count as BIGINT");
            n.as_primitive::<Int64Type>().values().iter().sum::<i64>()
        })
        .sum();
    (rows, total)
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1))
}

fn window_aggregation(c: &mut Criterion) {
    let inputs = generate();
    let rt = runtime();
    let ctx = batch_context(&inputs);

    // Sanity check (untimed): both produce the same windows.
    let (continuous, timed_rows) = rt.block_on(async {
        let mut engine = engine().await;
        let mut rows = feed(&mut engine, &inputs).await;
        let timed_rows = summary(&rows).0;
        rows.extend(flush(&mut engine, &inputs).await);
        (summary(&rows), timed_rows)
    });
    let batch = summary(&rt.block_on(batch_query(&ctx)));
    assert_eq!(
        continuous.0, batch.0,
        "result rows: continuous (flushed) vs batch"
    );
    assert_eq!(continuous.1, batch.1, "total count: continuous vs batch");
    assert_eq!(batch.1, ROWS as i64, "every row counted");
    println!(
        "window_aggregation: {ROWS} rows in {} batches, {} result rows ({timed_rows} emitted \
         before the flush)",
        inputs.len(),
        batch.0
    );

    let mut group = c.benchmark_group("window_aggregation");
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(ROWS as u64));
    group.bench_function("continuous", |b| {
        b.iter_batched(
            || rt.block_on(engine()),
            |mut engine| {
                black_box(rt.block_on(feed(&mut engine, &inputs)));
                engine
            },
            BatchSize::PerIteration,
        )
    });
    group.bench_function("datafusion_batch", |b| {
        b.iter(|| black_box(rt.block_on(batch_query(&ctx))))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = window_aggregation
}
criterion_main!(benches);
