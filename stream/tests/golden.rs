//! Golden SQL tests: each file in `tests/golden/` holds a continuous query and an
//! *oracle*: a batch query that DataFusion runs over the same rows the continuous
//! query accepted. The continuous query's final results (its live table, where
//! re-emitted windows replace earlier versions) must equal the oracle's, row for row.
//!
//! File directives (SQL comments): `-- stream: <data set>`, `-- lateness: <duration>`,
//! `-- tolerance: col=rel,...` (relative tolerance for approximate columns), then
//! `-- continuous:` and `-- oracle:` each followed by one statement.
//!
//! Data sets (seeded, so runs are repeatable), all spread over three partitions by
//! sensor, with a 5 s watermark delay and up to 1.5 s of disorder:
//! - `readings`: 12 sensors on 3 sites, two fields, ~20 minutes;
//! - `bursts`: readings in bursts separated by quiet gaps (sessions);
//! - `late`: `readings` plus rows behind the watermark, within the allowed lateness
//!   (they count) and 10 minutes behind it (late: value -999, left out);
//! - `idle`: partition 2 falls silent after 2 minutes; windows still close once its
//!   idle timeout has passed;
//! - `edge`: the raw readings go through the edge agent's 10-second window aggregator
//!   and the binary wire format; the stream is the edge's aggregates, the oracle reads
//!   the raw readings.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, TimeUnit};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use edgeflow_edge::config::LatePolicy;
use edgeflow_edge::window::{Aggregate, Aggregator, Input, WindowSpec as EdgeWindow};
use edgeflow_edge::wire;
use edgeflow_ingest::decode::{BatchDecoder, RawRecord};
use edgeflow_ingest::format::{reading_schema, Format, FormatKind};
use edgeflow_stream::engine::{Engine, QueryDecl, StreamDecl};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const PARTITIONS: i32 = 3;
const DELAY_MS: i64 = 5_000;
const IDLE_MS: i64 = 10_000;
const T0: i64 = 1_764_000_000_000; // a whole minute
const SENTINEL: &str = "~sentinel";

struct Case {
    stream: String,
    lateness_ms: i64,
    tolerance: HashMap<String, f64>,
    continuous: String,
    oracle: String,
}

fn parse(text: &str) -> Case {
    let mut case = Case {
        stream: String::new(),
        lateness_ms: 0,
        tolerance: HashMap::new(),
        continuous: String::new(),
        oracle: String::new(),
    };
    let mut target: Option<&mut String> = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("-- stream:") {
            case.stream = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("-- lateness:") {
            case.lateness_ms = humantime::parse_duration(v.trim())
                .expect("lateness")
                .as_millis() as i64;
        } else if let Some(v) = line.strip_prefix("-- tolerance:") {
            for kv in v.split(',') {
                let (k, t) = kv.trim().split_once('=').expect("col=tol");
                case.tolerance
                    .insert(k.to_string(), t.parse().expect("tolerance"));
            }
        } else if line.starts_with("-- continuous:") {
            target = Some(&mut case.continuous);
        } else if line.starts_with("-- oracle:") {
            target = Some(&mut case.oracle);
        } else if line.starts_with("--") {
            continue;
        } else if let Some(t) = target.as_deref_mut() {
            t.push_str(line);
            t.push('\n');
        }
    }
    case.continuous = case.continuous.trim().trim_end_matches(';').to_string();
    case.oracle = case.oracle.trim().trim_end_matches(';').to_string();
    assert!(!case.stream.is_empty() && !case.continuous.is_empty() && !case.oracle.is_empty());
    case
}

#[derive(Clone, Debug)]
struct Row {
    sensor: String,
    site: String,
    field: &'static str,
    ts: i64,
    value: f64,
}

fn partition_of(sensor: &str) -> i32 {
    (sensor.bytes().map(u32::from).sum::<u32>() % PARTITIONS as u32) as i32
}

fn sensor_name(i: usize) -> String {
    format!("s{i:02}")
}

/// Readings in time order with bounded disorder, grouped into steps of ~2 s.
fn readings(rng: &mut StdRng, minutes: i64, bursty: bool) -> Vec<Vec<Row>> {
    let mut rows = Vec::new();
    for s in 0..12usize {
        let mut t = T0 + rng.random_range(0..2_000);
        let end = T0 + minutes * 60_000;
        while t < end {
            for field in ["temp", "hum"] {
                let base = if field == "temp" { 20.0 } else { 45.0 };
                rows.push(Row {
                    sensor: sensor_name(s),
                    site: format!("site-{}", s % 3),
                    field,
                    ts: t + rng.random_range(0..1_500),
                    value: base + rng.random_range(-8.0..8.0),
                });
            }
            t += if bursty {
                if rng.random_bool(0.2) {
                    rng.random_range(6_000..30_000)
                } else {
                    rng.random_range(300..2_000)
                }
            } else {
                rng.random_range(1_500..2_500)
            };
        }
    }
    // Arrival order: by time rounded to the step, shuffled within a step.
    rows.sort_by_key(|r| r.ts - r.ts % 500);
    let mut steps: Vec<Vec<Row>> = Vec::new();
    for chunk in rows.chunks(40) {
        let mut c = chunk.to_vec();
        for i in (1..c.len()).rev() {
            let j = rng.random_range(0..=i);
            c.swap(i, j);
        }
        steps.push(c);
    }
    steps
}

fn reading_batch(rows: &[&Row]) -> RecordBatch {
    RecordBatch::try_new(
        reading_schema(),
        vec![
            Arc::new(StringArray::from(vec!["gw"; rows.len()])),
            Arc::new(StringArray::from(
                rows.iter().map(|r| r.sensor.as_str()).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                rows.iter()
                    .map(|r| Some(r.site.as_str()))
                    .collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                rows.iter().map(|r| r.field).collect::<Vec<_>>(),
            )),
            Arc::new(
                TimestampMillisecondArray::from(rows.iter().map(|r| r.ts).collect::<Vec<_>>())
                    .with_timezone("UTC"),
            ),
            Arc::new(Float64Array::from(
                rows.iter().map(|r| r.value).collect::<Vec<_>>(),
            )),
        ],
    )
    .expect("reading batch")
}

fn sensors_csv(dir: &Path) -> String {
    let path = dir.join("sensors.csv");
    let mut text = String::from("sensor,region,active\n");
    for s in 0..12usize {
        // s11 is unknown to the table (dropped by the join); s10 is inactive.
        if s == 11 {
            continue;
        }
        text.push_str(&format!(
            "{},{},{}\n",
            sensor_name(s),
            if s < 6 { "north" } else { "south" },
            s != 10
        ));
    }
    std::fs::write(&path, text).expect("write csv");
    path.to_string_lossy().into_owned()
}

/// A cell for comparison.
#[derive(Clone, Debug, PartialEq, PartialOrd)]
enum Cell {
    Null,
    Num(f64),
    Str(String),
}

fn cells(batches: &[RecordBatch]) -> (Vec<String>, Vec<Vec<Cell>>) {
    let mut names = Vec::new();
    let mut rows: Vec<Vec<Cell>> = Vec::new();
    for b in batches {
        names = b
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let cols: Vec<ArrayRef> = b
            .columns()
            .iter()
            .map(|c| match c.data_type() {
                DataType::Timestamp(..) => {
                    let ms =
                        cast(c, &DataType::Timestamp(TimeUnit::Millisecond, None)).expect("ts");
                    cast(
                        &cast(&ms, &DataType::Int64).expect("int"),
                        &DataType::Float64,
                    )
                    .expect("f64")
                }
                DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => {
                    cast(c, &DataType::Utf8).expect("utf8")
                }
                _ => cast(c, &DataType::Float64).expect("numeric column"),
            })
            .collect();
        for i in 0..b.num_rows() {
            rows.push(
                cols.iter()
                    .map(|c| {
                        if c.is_null(i) {
                            Cell::Null
                        } else if let Some(s) = c.as_string_opt::<i32>() {
                            Cell::Str(s.value(i).to_string())
                        } else {
                            Cell::Num(c.as_primitive::<Float64Type>().value(i))
                        }
                    })
                    .collect(),
            );
        }
    }
    rows.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    (names, rows)
}

struct Fed {
    accepted: Vec<Row>,
    late_expected: usize,
    late_seen: usize,
    /// Rows behind the watermark but within the lateness.
    behind: usize,
    engine: Engine,
}

async fn feed(case: &Case, dir: &Path) -> Fed {
    let mut rng = StdRng::seed_from_u64(7);
    let mut engine = Engine::new();
    let edge = case.stream == "edge";
    let (stream, format) = if edge {
        (
            "aggregates",
            Format::new(FormatKind::EdgeAggregates, vec![], None).expect("format"),
        )
    } else {
        (
            "readings",
            Format::new(FormatKind::EdgeReadings, vec![], None).expect("format"),
        )
    };
    engine
        .add_stream(StreamDecl {
            name: stream.into(),
            format: format.clone(),
            watermark_delay_ms: DELAY_MS,
            idle_timeout_ms: IDLE_MS,
            latest_key: vec![],
            latest_rows: 0,
        })
        .expect("stream");
    engine
        .add_reference_table("sensors", &sensors_csv(dir))
        .await
        .expect("table");
    let mut now = 0i64;
    for p in 0..PARTITIONS {
        engine.add_partition(stream, p, now).expect("partition");
    }
    engine
        .create_query(
            QueryDecl {
                name: "q".into(),
                sql: case.continuous.clone(),
                allowed_lateness_ms: case.lateness_ms,
                live_rows: 1_000_000,
            },
            now,
        )
        .await
        .unwrap_or_else(|e| panic!("continuous query does not plan: {e}"));

    let mut steps = readings(&mut rng, 20, case.stream == "bursts");
    let mut fed = Fed {
        accepted: Vec::new(),
        late_expected: 0,
        late_seen: 0,
        behind: 0,
        engine,
    };
    let max_ts = steps.iter().flatten().map(|r| r.ts).max().expect("rows");
    // The sentinel pushes every partition's watermark past all real windows.
    let silent_after = T0 + 2 * 60_000;
    let mut sentinels = Vec::new();
    for p in 0..PARTITIONS {
        if case.stream == "idle" && p == 2 {
            continue;
        }
        let name = (0..)
            .map(|i| format!("{SENTINEL}{i}"))
            .find(|n| partition_of(n) == p)
            .expect("name");
        sentinels.push(Row {
            sensor: name,
            site: "none".into(),
            field: "temp",
            ts: max_ts + 3_600_000,
            value: 0.0,
        });
    }
    steps.push(sentinels);

    if edge {
        feed_edge(&mut fed, steps, &format, &mut now).await;
        return fed;
    }
    for mut step in steps {
        if case.stream == "idle" {
            step.retain(|r| partition_of(&r.sensor) != 2 || r.ts < silent_after);
        }
        if case.stream == "late" {
            if let Some(wm) = fed.engine.queries()[0].watermark {
                let minute = wm - wm.rem_euclid(60_000);
                if (1_000..25_000).contains(&(wm - minute)) && rng.random_bool(0.3) {
                    step.push(Row {
                        sensor: sensor_name(rng.random_range(0..12)),
                        site: "site-0".into(),
                        field: "temp",
                        ts: minute - 1_000,
                        value: 1.0,
                    });
                    fed.behind += 1;
                }
                if rng.random_bool(0.1) {
                    step.push(Row {
                        sensor: sensor_name(rng.random_range(0..12)),
                        site: "site-0".into(),
                        field: "temp",
                        ts: wm - 600_000,
                        value: -999.0,
                    });
                    fed.late_expected += 1;
                }
            }
        }
        now += 1_000;
        for p in 0..PARTITIONS {
            let rows: Vec<&Row> = step
                .iter()
                .filter(|r| partition_of(&r.sensor) == p)
                .collect();
            if rows.is_empty() {
                continue;
            }
            let max = rows.iter().map(|r| r.ts).max();
            let out = fed
                .engine
                .process(stream, p, reading_batch(&rows), max, now)
                .await
                .expect("process");
            for b in out.iter().flat_map(|o| &o.late) {
                fed.late_seen += b.num_rows();
                // Late rows keep readable names (keys, event time, arguments) and
                // are exactly the injected ones.
                let schema = b.schema();
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                assert_eq!(names, ["sensor", "ts", "value"], "late row columns");
                let values = b.column(2).as_primitive::<Float64Type>();
                assert!(
                    values.iter().all(|v| v == Some(-999.0)),
                    "only injected rows are late: {values:?}"
                );
            }
            fed.accepted
                .extend(rows.into_iter().filter(|r| r.value != -999.0).cloned());
        }
        fed.engine.tick(now).expect("tick");
    }
    // Let idle partitions go idle, then close what the watermark allows.
    now += IDLE_MS + 1;
    fed.engine.tick(now).expect("tick");
    fed
}

/// Raw readings through the edge's aggregator and wire format, then into the stream.
async fn feed_edge(fed: &mut Fed, steps: Vec<Vec<Row>>, format: &Format, now: &mut i64) {
    let spec = EdgeWindow {
        size_ms: 10_000,
        lateness_ms: 60_000,
        idle_timeout_ms: 3_600_000,
        late_policy: LatePolicy::Correction,
    };
    let mut agg = Aggregator::new(spec);
    let mut seq = 0;
    let rows: Vec<Row> = steps.into_iter().flatten().collect();
    let mut out: Vec<Aggregate> = Vec::new();
    let mut batches: Vec<Vec<Aggregate>> = Vec::new();
    for chunk in rows.chunks(40) {
        for r in chunk {
            seq += 1;
            agg.ingest(
                Input {
                    sensor: &r.sensor,
                    site: Some(&r.site),
                    field: r.field,
                    ts_ms: r.ts,
                    value: r.value,
                    arrival_ms: r.ts,
                    seq,
                },
                &mut out,
            );
        }
        batches.push(std::mem::take(&mut out));
    }
    agg.flush_all(&mut out);
    batches.push(out);
    fed.accepted = rows
        .into_iter()
        .filter(|r| !r.sensor.starts_with(SENTINEL))
        .collect();
    for aggs in batches {
        *now += 1_000;
        for p in 0..PARTITIONS {
            let mut dec = BatchDecoder::new(format.clone());
            let mut buf = Vec::new();
            for a in aggs.iter().filter(|a| partition_of(&a.sensor) == p) {
                buf.clear();
                wire::aggregate_binary("gw", a, &mut buf);
                dec.push(&RawRecord {
                    payload: Some(&buf),
                    encoding: Some(wire::ENCODING_BINARY),
                    ..Default::default()
                })
                .expect("decodes");
            }
            let max = dec.max_event_time();
            if let Some(b) = dec.finish().expect("batch") {
                fed.engine
                    .process("aggregates", p, b, max, *now)
                    .await
                    .expect("process");
            }
        }
        fed.engine.tick(*now).expect("tick");
    }
    *now += IDLE_MS + 1;
    fed.engine.tick(*now).expect("tick");
}

async fn oracle(case: &Case, rows: &[Row], dir: &Path) -> Vec<RecordBatch> {
    let ctx = SessionContext::new();
    let refs: Vec<&Row> = rows.iter().collect();
    let t = MemTable::try_new(reading_schema(), vec![vec![reading_batch(&refs)]]).expect("table");
    ctx.register_table("readings", Arc::new(t))
        .expect("register");
    ctx.register_csv("sensors", &sensors_csv(dir), Default::default())
        .await
        .expect("csv");
    ctx.sql(&case.oracle)
        .await
        .unwrap_or_else(|e| panic!("oracle: {e}"))
        .collect()
        .await
        .expect("oracle runs")
}

async fn check(file: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(file);
    let case = parse(&std::fs::read_to_string(&path).expect("golden file"));
    let dir = tempfile::tempdir().expect("tempdir");
    let fed = feed(&case, dir.path()).await;
    assert_eq!(fed.late_seen, fed.late_expected, "{file}: late rows");
    if case.stream == "late" {
        assert!(
            fed.late_expected > 3 && fed.behind > 3,
            "{file}: too few late rows injected"
        );
    }
    let got = fed
        .engine
        .pull("SELECT * FROM q")
        .await
        .expect("live table");
    let want = oracle(&case, &fed.accepted, dir.path()).await;
    let (names, got) = cells(&got);
    let (_, want) = cells(&want);
    // Only windows before the sentinel's: the sentinel's own windows never close.
    let cutoff = (fed
        .accepted
        .iter()
        .filter(|r| !r.sensor.starts_with(SENTINEL))
        .map(|r| r.ts)
        .max()
        .expect("rows")
        + 60_000) as f64;
    let wpos = names
        .iter()
        .position(|n| n == "w")
        .expect("a column named w");
    let keep = |r: &Vec<Cell>| {
        matches!(r[wpos], Cell::Num(w) if w < cutoff)
            && !r
                .iter()
                .any(|c| matches!(c, Cell::Str(s) if s.starts_with(SENTINEL)))
    };
    let got: Vec<_> = got.into_iter().filter(keep).collect();
    let want: Vec<_> = want.into_iter().filter(keep).collect();
    assert!(
        want.len() >= 10,
        "{file}: the oracle has only {} rows",
        want.len()
    );
    assert_eq!(
        got.len(),
        want.len(),
        "{file}: row count (got {got:?}\nwant {want:?})"
    );
    for (g, w) in got.iter().zip(&want) {
        for (i, (a, b)) in g.iter().zip(w).enumerate() {
            let tol = case.tolerance.get(&names[i]).copied().unwrap_or(1e-9);
            let same = match (a, b) {
                (Cell::Num(x), Cell::Num(y)) => {
                    (x - y).abs() <= tol * x.abs().max(y.abs()).max(1.0)
                }
                _ => a == b,
            };
            assert!(
                same,
                "{file}: column {} differs: got {g:?}, want {w:?}",
                names[i]
            );
        }
    }
}

#[tokio::test]
async fn tumbling_windows_equal_a_batch_group_by() {
    check("tumble.sql").await;
}

#[tokio::test]
async fn where_having_and_expressions_equal_a_batch_query() {
    check("tumble_filter_having.sql").await;
}

#[tokio::test]
async fn hopping_windows_equal_a_batch_query_over_shifted_bins() {
    check("hop.sql").await;
}

#[tokio::test]
async fn session_windows_equal_a_batch_gap_query() {
    check("session.sql").await;
}

#[tokio::test]
async fn late_rows_within_lateness_count_and_later_ones_are_left_out() {
    check("late.sql").await;
}

#[tokio::test]
async fn an_idle_partition_does_not_stall_the_windows() {
    check("idle.sql").await;
}

#[tokio::test]
async fn a_stream_table_join_equals_a_batch_join() {
    check("join.sql").await;
}

#[tokio::test]
async fn edge_partial_aggregates_roll_up_exactly() {
    check("edge_rollup.sql").await;
}
