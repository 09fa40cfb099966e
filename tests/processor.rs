//! The processor against real brokers and a real PostgreSQL: aggregates in the edge
//! wire format go into Kafka; `edgeflow process` rolls them up with a continuous query;
//! the results land in PostgreSQL, in Parquet (read back with pyarrow) and in Kafka,
//! and the real `psql` runs pull queries on the processor. Expected values are computed
//! here from the raw readings the edge aggregated. A restart from scratch over the same
//! input leaves every sink as it was; bad SQL gets a clear error on every interface.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{psql, unique_topic, wait_until, EdgeAgent, EdgeAgentBuilder, Kafka, Postgres};
use edgeflow_edge::config::LatePolicy;
use edgeflow_edge::window::{Aggregate, Aggregator, Input, WindowSpec};
use edgeflow_edge::wire;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

const T0: i64 = 1_764_000_000_000; // 2025-11-24T16:00:00Z
const PARTITIONS: i32 = 3;

/// (sensor, field, minute start) → (count, sum, min, max) over raw readings.
type Oracle = BTreeMap<(String, String, i64), (u64, f64, f64, f64)>;

struct Data {
    /// Edge aggregates per partition, in production order.
    per_partition: Vec<Vec<Aggregate>>,
    oracle: Oracle,
}

fn partition_of(sensor: &str) -> i32 {
    (sensor.bytes().map(u32::from).sum::<u32>() % PARTITIONS as u32) as i32
}

/// Ten minutes of readings from 12 sensors (two fields), through the edge aggregator.
fn data() -> Data {
    let spec = WindowSpec {
        size_ms: 10_000,
        lateness_ms: 60_000,
        idle_timeout_ms: 3_600_000,
        late_policy: LatePolicy::Correction,
    };
    let mut agg = Aggregator::new(spec);
    let mut out = Vec::new();
    let mut oracle = Oracle::new();
    let mut seq = 0;
    for step in 0..300i64 {
        for s in 0..12 {
            for (fi, field) in ["temp", "hum"].into_iter().enumerate() {
                let ts = T0 + step * 2_000 + s * 37 + fi as i64;
                let value = 20.0 + ((step * 7 + s * 13 + fi as i64 * 5) % 23) as f64 * 0.5;
                let sensor = format!("s{s:02}");
                seq += 1;
                agg.ingest(
                    Input {
                        sensor: &sensor,
                        site: Some("site-0"),
                        field,
                        ts_ms: ts,
                        value,
                        arrival_ms: ts,
                        seq,
                    },
                    &mut out,
                );
                let minute = ts - ts.rem_euclid(60_000);
                let e = oracle
                    .entry((sensor, field.to_string(), minute))
                    .or_insert((0, 0.0, f64::MAX, f64::MIN));
                e.0 += 1;
                e.1 += value;
                e.2 = e.2.min(value);
                e.3 = e.3.max(value);
            }
        }
    }
    agg.flush_all(&mut out);
    let mut per_partition = vec![Vec::new(); PARTITIONS as usize];
    for a in out {
        per_partition[partition_of(&a.sensor) as usize].push(a);
    }
    Data {
        per_partition,
        oracle,
    }
}

/// A window far after the data: it moves the watermark past every window of the data.
fn sentinel(name: &str) -> Aggregate {
    Aggregate {
        sensor: Arc::from(name),
        site: None,
        field: Arc::from("temp"),
        window_start: T0 + 7_200_000,
        window_end: T0 + 7_210_000,
        revision: 0,
        count: 1,
        min: 0.0,
        max: 0.0,
        sum: 0.0,
        first_ts: T0 + 7_200_000,
        first: 0.0,
        last_ts: T0 + 7_200_000,
        last: 0.0,
    }
}

/// Produces edge aggregates (binary encoding, keyed by sensor) to one partition.
async fn send_aggregates(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    aggs: &[Aggregate],
) {
    let values: Vec<Vec<u8>> = aggs
        .iter()
        .map(|a| {
            let mut value = Vec::new();
            wire::aggregate_binary("gw-test", a, &mut value);
            value
        })
        .collect();
    let mut sends = Vec::new();
    for (a, value) in aggs.iter().zip(&values) {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: wire::HEADER_ENCODING,
                value: Some(wire::ENCODING_BINARY),
            })
            .insert(Header {
                key: wire::HEADER_KIND,
                value: Some("aggregate"),
            });
        let rec = FutureRecord::to(topic)
            .partition(partition)
            .key(&*a.sensor)
            .payload(value)
            .headers(headers);
        sends.push(producer.send(rec, Duration::from_secs(30)));
    }
    for s in sends {
        s.await.map_err(|(e, _)| e).expect("produce");
    }
}

async fn produce(kafka: &Kafka, topic: &str, data: &Data) {
    let producer: FutureProducer = kafka.client_config().create().expect("producer");
    for (p, aggs) in data.per_partition.iter().enumerate() {
        let mut aggs = aggs.clone();
        aggs.push(sentinel(&format!("~sentinel-{p}")));
        send_aggregates(&producer, topic, p as i32, &aggs).await;
    }
    // One record that is not an aggregate: it must end up dead-lettered, not dropped.
    let headers = OwnedHeaders::new().insert(Header {
        key: wire::HEADER_ENCODING,
        value: Some(wire::ENCODING_BINARY),
    });
    producer
        .send(
            FutureRecord::to(topic)
                .partition(0)
                .key("bad")
                .payload(&b"\x01\x01garbage"[..])
                .headers(headers),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("produce");
}

/// The test's topics.
struct Topics {
    input: String,
    dlq: String,
    results: String,
}

fn config(
    kafka: &Kafka,
    t: &Topics,
    pg: &Postgres,
    lake: &Path,
    pg_port: u16,
    http_port: u16,
) -> String {
    format!(
        r#"
node_id = "processor-test"
[kafka]
brokers = "{brokers}"
[ingest]
batch_size = 1000
linger = "20ms"
dead_letter_topic = "{dlq}"
[server]
pg_listen = "127.0.0.1:{pg_port}"
http_listen = "127.0.0.1:{http_port}"
# No checkpoints: the restart below reads the topic again from the beginning.
[checkpoint]
interval = "0s"
[[streams]]
name = "aggregates"
topic = "{topic}"
format = "edge-aggregates"
watermark_delay = "0s"
# Every partition ends with a sentinel that closes the windows; a short idle timeout
# would let a partition read late on a busy machine fall behind the watermark.
idle_timeout = "60s"
latest_key = ["sensor", "field"]
[[queries]]
name = "temp_1m"
sql = """
SELECT sensor, field, tumble(window_start, INTERVAL '1 minute') AS minute,
       sum("count") AS n, sum("sum") / sum("count") AS mean, min("min") AS low, max("max") AS high
FROM aggregates
GROUP BY sensor, field, tumble(window_start, INTERVAL '1 minute')
"""
sinks = ["pg", "lake", "out"]
[sinks.pg]
type = "postgres"
url = "{pg_url}"
[sinks.lake]
type = "parquet"
url = "{lake}"
roll_interval = "3m"
max_rows_per_file = 50
[sinks.out]
type = "kafka"
topic = "{results}"
"#,
        brokers = kafka.bootstrap(),
        topic = t.input,
        dlq = t.dlq,
        results = t.results,
        pg_url = pg.url,
        lake = lake.display(),
    )
}

/// An `edgeflow process` run by the test harness.
fn processor_builder(name: &str) -> EdgeAgentBuilder {
    EdgeAgent::builder()
        .program(env!("CARGO_BIN_EXE_edgeflow"), &["process"])
        .name(name)
}

/// Spawns the processor with `config` and waits until it runs.
async fn start_processor(builder: EdgeAgentBuilder, config: String) -> EdgeAgent {
    let mut processor = builder.config(config).spawn();
    processor
        .wait_for_log_line("processor running", Duration::from_secs(60))
        .await;
    processor
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Rows as comparable tuples: (sensor, field, minute ms, n, mean, low, high).
type Row = (String, String, i64, u64, f64, f64, f64);

fn expected(o: &Oracle) -> Vec<Row> {
    o.iter()
        .map(|((s, f, m), (n, sum, lo, hi))| {
            (s.clone(), f.clone(), *m, *n, sum / *n as f64, *lo, *hi)
        })
        .collect()
}

/// Whether `got` holds exactly `want` (means up to rounding).
fn rows_equal(got: &[Row], want: &[Row]) -> bool {
    got.len() == want.len() && got.iter().zip(want).all(|(g, w)| row_equal(g, w))
}

/// One row against another (the mean up to rounding).
fn row_equal(g: &Row, w: &Row) -> bool {
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(1.0);
    g.0 == w.0
        && g.1 == w.1
        && g.2 == w.2
        && g.3 == w.3
        && close(g.4, w.4)
        && g.5 == w.5
        && g.6 == w.6
}

fn assert_rows(what: &str, got: &[Row], want: &[Row]) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: {} rows, expected {}",
        got.len(),
        want.len()
    );
    for (g, w) in got.iter().zip(want) {
        assert!(row_equal(g, w), "{what}: got {g:?}, expected {w:?}");
    }
}

async fn pg_rows(pg: &Postgres) -> Option<Vec<Row>> {
    let c = pg.client().await;
    let rows = c
        .query("SELECT sensor, field, (extract(epoch FROM minute) * 1000)::bigint, n, mean, low, high FROM temp_1m ORDER BY 1, 2, 3", &[])
        .await
        .ok()?;
    Some(
        rows.iter()
            .map(|r| {
                (
                    r.get(0),
                    r.get(1),
                    r.get(2),
                    r.get::<_, i64>(3) as u64,
                    r.get(4),
                    r.get(5),
                    r.get(6),
                )
            })
            .collect(),
    )
}

/// Every Parquet file under `dir` read with pyarrow: (relative path, rows as JSON).
fn parquet_files(dir: &Path) -> BTreeMap<String, Vec<Row>> {
    let script = r#"
import json, os, sys
import pyarrow.parquet as pq
root = sys.argv[1]
out = {}
for d, _, files in os.walk(root):
    for f in files:
        if f.endswith('.parquet'):
            t = pq.read_table(os.path.join(d, f))
            cols = t.to_pydict()
            rows = []
            for i in range(t.num_rows):
                m = cols['minute'][i]
                rows.append([cols['sensor'][i], cols['field'][i], int(m.timestamp() * 1000), cols['n'][i], cols['mean'][i], cols['low'][i], cols['high'][i]])
            out[os.path.relpath(os.path.join(d, f), root)] = rows
print(json.dumps(out))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(dir)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "pyarrow failed (scripts/test-env.sh installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: BTreeMap<String, Vec<Row>> = serde_json::from_slice(&out.stdout).expect("json");
    v
}

/// Whether every Parquet file under `dir` was written after `t`.
fn written_since(dir: &Path, t: std::time::SystemTime) -> bool {
    fn walk(d: &Path, t: std::time::SystemTime, all: &mut bool) {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, t, all);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                *all &= e.metadata().and_then(|m| m.modified()).is_ok_and(|m| m > t);
            }
        }
    }
    let mut all = true;
    walk(dir, t, &mut all);
    all
}

/// Waits until PostgreSQL's table and the Parquet files under `lake` hold as many rows
/// as `want`, then checks both equal it row for row; returns the Parquet files.
async fn assert_pg_and_parquet_hold(
    pg: &Postgres,
    lake: &Path,
    want: &[Row],
    when: &str,
) -> BTreeMap<String, Vec<Row>> {
    let got = wait_until(
        "all roll-ups in PostgreSQL",
        Duration::from_secs(90),
        || async { pg_rows(pg).await.filter(|r| r.len() >= want.len()) },
    )
    .await;
    assert_rows(&format!("PostgreSQL{when}"), &got, want);
    let files = wait_until(
        "all roll-ups in Parquet",
        Duration::from_secs(60),
        || async {
            let f = parquet_files(lake);
            (all_parquet_rows(&f).len() >= want.len()).then_some(f)
        },
    )
    .await;
    assert_rows(&format!("Parquet{when}"), &all_parquet_rows(&files), want);
    files
}

fn all_parquet_rows(files: &BTreeMap<String, Vec<Row>>) -> Vec<Row> {
    let mut rows: Vec<Row> = files.values().flatten().cloned().collect();
    rows.sort_by(|a, b| (&a.0, &a.1, a.2).cmp(&(&b.0, &b.1, b.2)));
    rows
}

/// The results topic as key → distinct values.
async fn kafka_results(kafka: &Kafka, topic: &str, min: usize) -> BTreeMap<String, Vec<String>> {
    let recs = kafka
        .consume_all(topic, 1, min, Duration::from_secs(60))
        .await;
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in recs {
        let k = String::from_utf8(r.key.unwrap_or_default()).expect("utf8 key");
        let v = String::from_utf8(r.payload.unwrap_or_default()).expect("utf8 value");
        let e = m.entry(k).or_default();
        if !e.contains(&v) {
            e.push(v);
        }
    }
    m
}

fn edgeflow_sql(http_port: u16, sql: &str) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_edgeflow"))
        .args(["sql", "--server", &format!("127.0.0.1:{http_port}"), sql])
        .output()
        .expect("edgeflow sql runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The columns of the live table of `temp_1m` (the query in [`config`]) as PostgreSQL
/// names their types: the group keys are text (the edge format's sensor and field), the
/// tumbling window's start is a timestamp with time zone, `sum("count")` of the format's
/// unsigned 64-bit counts is numeric (PostgreSQL has no unsigned 64-bit integer), the
/// rest are doubles.
const TEMP_1M_COLUMNS: [(&str, &str); 7] = [
    ("sensor", "text"),
    ("field", "text"),
    ("minute", "timestamp with time zone"),
    ("n", "numeric"),
    ("mean", "double precision"),
    ("low", "double precision"),
    ("high", "double precision"),
];

/// The same types by their short names (`pg_type.typname`), as JDBC and psycopg name them.
fn typname(pg_type: &str) -> &str {
    match pg_type {
        "timestamp with time zone" => "timestamptz",
        "double precision" => "float8",
        "boolean" => "bool",
        other => other,
    }
}

/// psql's `\dt`: (name, type) of every relation in `public`.
fn psql_tables(pg_port: u16) -> Vec<(String, String)> {
    let p = psql("127.0.0.1", pg_port, r"\dt");
    assert!(p.ok, r"psql \dt: {}", p.stderr);
    p.stdout
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            assert_eq!(f[0], "public", r"\dt row {l}");
            (f[1].to_owned(), f[2].to_owned())
        })
        .collect()
}

/// psql's `\d table`: (column, type) in order.
fn psql_columns(pg_port: u16, table: &str) -> Vec<(String, String)> {
    let p = psql("127.0.0.1", pg_port, &format!(r"\d {table}"));
    assert!(p.ok, r"psql \d {table}: {}", p.stderr);
    p.stdout
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            (f[0].to_owned(), f[1].to_owned())
        })
        .collect()
}

/// `\dt`'s answer for `names`: each an ordinary table.
fn as_tables(names: &[&str]) -> Vec<(String, String)> {
    names
        .iter()
        .map(|t| (t.to_string(), "table".to_owned()))
        .collect()
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// Runs a client program of `tests/clients` against the processor's PostgreSQL wire and
/// returns its standard output.
fn run_client(what: &str, program: &str, args: &[&str], pg_port: u16) -> String {
    let out = Command::new(program)
        .args(args)
        .args(["127.0.0.1", &pg_port.to_string()])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what} ({program}): {e}"));
    assert!(
        out.status.success(),
        "{what} failed (scripts/test-env.sh installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The catalog as clients read it: psql (`\dt`, `\d`), the JDBC driver's metadata calls,
/// psycopg's catalog queries with parameters. `tables` is what the config declares.
fn assert_catalog_seen_by_clients(pg_port: u16, tables: &[&str]) {
    assert_eq!(psql_tables(pg_port), as_tables(tables), r"\dt");
    assert_eq!(
        psql_columns(pg_port, "temp_1m"),
        owned(&TEMP_1M_COLUMNS),
        r"\d temp_1m"
    );
    let p = psql("127.0.0.1", pg_port, "SELECT current_database()");
    assert_eq!(p.stdout.trim(), "datafusion", "{}", p.stderr);
    let p = psql(
        "127.0.0.1",
        pg_port,
        "SELECT n.nspname FROM pg_catalog.pg_namespace n ORDER BY n.nspname",
    );
    assert!(p.ok, "{}", p.stderr);
    let namespaces: Vec<&str> = p.stdout.lines().collect();
    assert!(
        namespaces.contains(&"public") && namespaces.contains(&"pg_catalog"),
        "{namespaces:?}"
    );

    // JDBC: getTables, getColumns, getSchemas, as schema browsers call them.
    let out = run_client(
        "the JDBC metadata calls",
        "java",
        &["-cp", JDBC_JAR, "JdbcMetadata.java"],
        pg_port,
    );
    let rows: Vec<Vec<&str>> = out.lines().map(|l| l.split('\t').collect()).collect();
    let of = |kind: &str| -> Vec<Vec<&str>> {
        rows.iter()
            .filter(|r| r[0] == kind)
            .map(|r| r[1..].to_vec())
            .collect()
    };
    assert!(of("product")[0][0] == "PostgreSQL", "{out}");
    assert!(of("schema").contains(&vec!["public"]), "{out}");
    let jdbc_tables: Vec<Vec<&str>> = tables.iter().map(|t| vec!["public", t, "TABLE"]).collect();
    assert_eq!(of("table"), jdbc_tables, "JDBC getTables");
    let jdbc_columns = of("column");
    let temp_1m: Vec<Vec<&str>> = jdbc_columns
        .iter()
        .filter(|c| c[0] == "temp_1m")
        .map(|c| vec![c[1], c[2]])
        .collect();
    let want: Vec<Vec<&str>> = TEMP_1M_COLUMNS
        .iter()
        .map(|(c, t)| vec![*c, typname(t)])
        .collect();
    assert_eq!(temp_1m, want, "JDBC getColumns");
    assert_eq!(of("query"), vec![vec!["datafusion"]], "{out}");

    // psycopg: the same catalog through queries with parameters (extended protocol), and
    // the types rows are sent with agree with the catalog's for every table.
    let out = run_client(
        "the psycopg catalog queries",
        "python3",
        &["psycopg_catalog.py"],
        pg_port,
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("psycopg_catalog.py prints JSON");
    assert_eq!(v["current_database"], "datafusion", "{out}");
    assert_eq!(v["current_schema"], "public", "{out}");
    assert_eq!(v["tables"], serde_json::json!(tables), "{out}");
    let want: Vec<[&str; 2]> = TEMP_1M_COLUMNS.iter().map(|(c, t)| [*c, *t]).collect();
    assert_eq!(v["columns"]["temp_1m"], serde_json::json!(want), "{out}");
    for table in tables {
        let catalog: Vec<[&str; 2]> = jdbc_columns
            .iter()
            .filter(|c| c[0] == *table)
            .map(|c| [c[1], c[2]])
            .collect();
        assert_eq!(
            v["description"][table],
            serde_json::json!(catalog),
            "`{table}`: the types its rows are sent with, as the catalog says"
        );
    }
}

/// Debian's PostgreSQL JDBC driver (libpostgresql-jdbc-java).
const JDBC_JAR: &str = "/usr/share/java/postgresql.jar";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollups_reach_postgres_parquet_kafka_and_psql_and_survive_a_replay() {
    let (kafka, pg) = tokio::join!(Kafka::start_in_memory(), Postgres::start());
    let topic = unique_topic("aggregates");
    let dlq = unique_topic("processor-dlq");
    let results = unique_topic("results");
    kafka.create_topic(&topic, PARTITIONS).await;
    kafka.create_topic(&dlq, 1).await;
    kafka.create_topic(&results, 1).await;
    let data = data();
    produce(&kafka, &topic, &data).await;
    let want = expected(&data.oracle);

    let (pg_port, http_port) = (free_port(), free_port());
    let builder = processor_builder("processor");
    let lake = builder.workdir().join("lake");
    let topics = Topics {
        input: topic.clone(),
        dlq: dlq.clone(),
        results: results.clone(),
    };
    let mut processor = start_processor(
        builder,
        config(&kafka, &topics, &pg, &lake, pg_port, http_port),
    )
    .await;

    // PostgreSQL and Parquet (read back with pyarrow): every window, each once, with
    // the values computed from the raw readings.
    let files = assert_pg_and_parquet_hold(&pg, &lake, &want, "").await;
    assert!(
        files
            .keys()
            .all(|k| k.starts_with("temp_1m/date=2025-11-24/")),
        "{:?}",
        files.keys()
    );
    assert!(
        files.len() > 4,
        "rolled by time and size: {:?}",
        files.keys()
    );

    // Kafka: one record per row, keyed by the row's identity.
    let before = kafka_results(&kafka, &results, want.len()).await;
    assert_eq!(
        before.len(),
        want.len(),
        "distinct identities on the results topic"
    );
    assert!(
        before.values().all(|v| v.len() == 1),
        "one version per identity"
    );

    // psql, the real client, runs a pull query over the PostgreSQL wire protocol.
    let p = psql(
        "127.0.0.1",
        pg_port,
        "SELECT n, low, high FROM temp_1m WHERE sensor = 's03' AND field = 'temp' ORDER BY minute",
    );
    assert!(p.ok, "psql failed: {}", p.stderr);
    let psql_rows: Vec<(u64, f64, f64)> = p
        .stdout
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            (
                f[0].parse().expect("n"),
                f[1].parse().expect("low"),
                f[2].parse().expect("high"),
            )
        })
        .collect();
    let want_psql: Vec<(u64, f64, f64)> = want
        .iter()
        .filter(|r| r.0 == "s03" && r.1 == "temp")
        .map(|r| (r.3, r.5, r.6))
        .collect();
    assert_eq!(psql_rows, want_psql);
    let p = psql(
        "127.0.0.1",
        pg_port,
        "SELECT count(*) FROM aggregates_latest WHERE sensor LIKE 's%'",
    );
    assert_eq!(
        p.stdout.trim(),
        "24",
        "latest value per (sensor, field): {}",
        p.stderr
    );

    // What clients learn from the catalog: the tables the config declares (the query's
    // live table, the stream's `_latest` table), edgeflow_queries and edgeflow_cluster.
    assert_catalog_seen_by_clients(
        pg_port,
        &[
            "aggregates_latest",
            "edgeflow_cluster",
            "edgeflow_queries",
            "temp_1m",
        ],
    );

    // The malformed record is dead-lettered with its reason.
    let dead = kafka.consume_all(&dlq, 1, 1, Duration::from_secs(30)).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].header(wire::HEADER_REASON), Some(&b"malformed"[..]));

    // Clear errors on every interface.
    for (sql, needle) in [
        ("SELEC 1", "SELEC"),
        ("SELECT nope FROM temp_1m", "nope"),
        ("SELECT sensor + 1 FROM temp_1m", "Utf8 + Int64"),
    ] {
        let p = psql("127.0.0.1", pg_port, sql);
        assert!(
            !p.ok && p.stderr.contains(needle),
            "psql `{sql}`: {}",
            p.stderr
        );
        let (ok, _, err) = edgeflow_sql(http_port, sql);
        assert!(!ok && err.contains(needle), "edgeflow sql `{sql}`: {err}");
    }
    let (ok, _, err) = edgeflow_sql(http_port, "SELEC 1");
    assert!(
        !ok && err.contains("Line: 1, Column: 1"),
        "position in the message: {err}"
    );
    let p = psql(
        "127.0.0.1",
        pg_port,
        "CREATE MATERIALIZED VIEW bad AS SELECT sensor, avg(mean) FROM aggregates GROUP BY sensor",
    );
    assert!(!p.ok && p.stderr.contains("window"), "{}", p.stderr);
    let (ok, out, err) = edgeflow_sql(http_port, "SELECT count(*) AS n FROM temp_1m");
    assert!(ok, "{err}");
    assert!(out.contains(&want.len().to_string()), "{out}");

    // A materialized view created at run time, then dropped.
    let p = psql("127.0.0.1", pg_port, "CREATE MATERIALIZED VIEW hourly AS SELECT field, tumble(window_start, INTERVAL '1 hour') AS hour, sum(\"count\") AS n FROM aggregates GROUP BY field, tumble(window_start, INTERVAL '1 hour')");
    assert!(p.ok, "{}", p.stderr);
    let p = psql(
        "127.0.0.1",
        pg_port,
        "SELECT name FROM edgeflow_queries ORDER BY name",
    );
    assert_eq!(
        p.stdout.lines().collect::<Vec<_>>(),
        vec!["hourly", "temp_1m"],
        "{}",
        p.stderr
    );
    // Its live table is in the catalog at once, and leaves it with the view.
    assert_eq!(
        psql_tables(pg_port),
        as_tables(&[
            "aggregates_latest",
            "edgeflow_cluster",
            "edgeflow_queries",
            "hourly",
            "temp_1m"
        ])
    );
    assert_eq!(
        psql_columns(pg_port, "hourly"),
        owned(&[
            ("field", "text"),
            ("hour", "timestamp with time zone"),
            ("n", "numeric")
        ])
    );
    let p = psql("127.0.0.1", pg_port, "DROP MATERIALIZED VIEW hourly");
    assert!(p.ok, "{}", p.stderr);
    assert_eq!(
        psql_tables(pg_port),
        as_tables(&[
            "aggregates_latest",
            "edgeflow_cluster",
            "edgeflow_queries",
            "temp_1m"
        ])
    );
    let p = psql("127.0.0.1", pg_port, r"\d hourly");
    assert!(!p.ok && p.stderr.contains("\"hourly\""), "{}", p.stderr);

    // Restart from scratch over the same input: every sink is as it was.
    processor.kill9();
    let restarted = std::time::SystemTime::now();
    processor.restart();
    processor
        .wait_for_log_line("processor running", Duration::from_secs(60))
        .await;
    let replayed = wait_until(
        "the replay rewrote every row",
        Duration::from_secs(90),
        || async {
            let r = kafka_results(&kafka, &results, 2 * want.len()).await;
            (r.values().map(Vec::len).sum::<usize>() >= want.len()
                && kafka
                    .consume_all(&results, 1, 2 * want.len(), Duration::from_secs(5))
                    .await
                    .len()
                    >= 2 * want.len())
            .then_some(r)
        },
    )
    .await;
    assert_eq!(
        replayed, before,
        "Kafka: the same identities with the same values"
    );
    let after_pg = pg_rows(&pg).await.expect("rows");
    assert_rows("PostgreSQL after the replay", &after_pg, &want);
    wait_until(
        "every Parquet file rewritten by the replay",
        Duration::from_secs(60),
        || async { written_since(&lake, restarted).then_some(()) },
    )
    .await;
    let after_files = parquet_files(&lake);
    assert_eq!(
        after_files.keys().collect::<Vec<_>>(),
        files.keys().collect::<Vec<_>>(),
        "the same files"
    );
    assert!(
        after_files == files,
        "Parquet: the same rows in the same files"
    );
}

/// A 10-second edge window of `sensor` starting at `start` (ms after T0).
fn edge_window(sensor: &str, site: Option<&str>, start: i64, count: u64, max: f64) -> Aggregate {
    let ws = T0 + start;
    Aggregate {
        sensor: Arc::from(sensor),
        site: site.map(Arc::from),
        field: Arc::from("temp"),
        window_start: ws,
        window_end: ws + 10_000,
        revision: 0,
        count,
        min: max - 1.0,
        max,
        sum: (max - 0.5) * count as f64,
        first_ts: ws,
        first: max - 1.0,
        last_ts: ws + 9_000,
        last: max,
    }
}

/// (site, sensor, minute ms, n, high)
type LateDemoRow = (Option<String>, String, i64, i64, f64);

async fn late_demo_rows(pg: &Postgres) -> Option<Vec<LateDemoRow>> {
    let rows = pg
        .client()
        .await
        .query("SELECT site, sensor, (extract(epoch FROM minute) * 1000)::bigint, n, high FROM late_demo ORDER BY 2, 3", &[])
        .await
        .ok()?;
    Some(
        rows.iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_rows_reach_the_late_sinks_and_null_keys_are_upserted() {
    let (kafka, pg) = tokio::join!(Kafka::start_in_memory(), Postgres::start());
    let topic = unique_topic("late-aggregates");
    kafka.create_topic(&topic, 1).await;

    // Three minutes of 10-second windows from a sensor with a site and one without.
    let mut on_time = Vec::new();
    for step in 0..18i64 {
        on_time.push(edge_window(
            "a1",
            Some("north"),
            step * 10_000,
            10,
            20.0 + (step % 7) as f64,
        ));
        on_time.push(edge_window(
            "b2",
            None,
            step * 10_000,
            5,
            30.0 - (step % 5) as f64,
        ));
    }
    // Independent of the processor: (site, sensor, minute) → (sum of counts, max of max).
    let mut oracle: BTreeMap<(Option<String>, String, i64), (i64, f64)> = BTreeMap::new();
    for a in &on_time {
        let minute = a.window_start - a.window_start.rem_euclid(60_000);
        let e = oracle
            .entry((
                a.site.as_deref().map(str::to_string),
                a.sensor.to_string(),
                minute,
            ))
            .or_insert((0, f64::MIN));
        e.0 += a.count as i64;
        e.1 = e.1.max(a.max);
    }
    let mut want: Vec<LateDemoRow> = oracle
        .into_iter()
        .map(|((site, sensor, m), (n, hi))| (site, sensor, m, n, hi))
        .collect();
    want.sort_by(|a, b| (&a.1, a.2).cmp(&(&b.1, b.2)));

    let producer: FutureProducer = kafka.client_config().create().expect("producer");
    let mut first = on_time.clone();
    first.push(sentinel("~sentinel"));
    send_aggregates(&producer, &topic, 0, &first).await;

    let (pg_port, http_port) = (free_port(), free_port());
    let builder = processor_builder("processor-late");
    let config = format!(
        r#"
node_id = "processor-late-test"
[kafka]
brokers = "{brokers}"
[ingest]
batch_size = 1000
linger = "20ms"
[server]
pg_listen = "127.0.0.1:{pg_port}"
http_listen = "127.0.0.1:{http_port}"
[checkpoint]
url = "{checkpoints}"
interval = "1s"
[[streams]]
name = "aggregates"
topic = "{topic}"
format = "edge-aggregates"
watermark_delay = "0s"
# Every partition ends with a sentinel that closes the windows; a short idle timeout
# would let a partition read late on a busy machine fall behind the watermark.
idle_timeout = "60s"
[[queries]]
name = "late_demo"
sql = """
SELECT site, sensor, tumble(window_start, INTERVAL '1 minute') AS minute,
       sum("count") AS n, max("max") AS high
FROM aggregates
WHERE sensor NOT LIKE '~%'
GROUP BY site, sensor, tumble(window_start, INTERVAL '1 minute')
"""
sinks = ["pg"]
late_sinks = ["pg"]
[sinks.pg]
type = "postgres"
url = "{pg_url}"
"#,
        brokers = kafka.bootstrap(),
        pg_url = pg.url,
        checkpoints = builder.workdir().join("checkpoints").display(),
    );
    let _processor = start_processor(builder, config).await;

    // Every window, a NULL site included, with the values computed above.
    let got = wait_until(
        "every window in PostgreSQL",
        Duration::from_secs(90),
        || async { late_demo_rows(&pg).await.filter(|r| r.len() >= want.len()) },
    )
    .await;
    assert_eq!(got, want);

    // The watermark has passed every window: these rows are late (no allowed
    // lateness). They go to the late side output, not into the windows.
    let late = vec![
        edge_window("a1", Some("north"), 5_000, 3, 99.0),
        edge_window("b2", None, 65_000, 4, 98.0),
        edge_window("a1", Some("north"), 125_000, 2, 97.0),
    ];
    send_aggregates(&producer, &topic, 0, &late).await;
    type LateRow = (Option<String>, String, i64, f64, f64);
    let late_rows: Vec<LateRow> = wait_until(
        "the late rows in PostgreSQL",
        Duration::from_secs(60),
        || async {
            let rows = pg
                .client()
                .await
                .query(
                    "SELECT site, sensor, (extract(epoch FROM window_start) * 1000)::bigint, \"count\", \"max\" FROM late_demo_late ORDER BY 3",
                    &[],
                )
                .await
                .ok()?;
            let rows: Vec<LateRow> = rows
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
                .collect();
            (rows.len() >= late.len()).then_some(rows)
        },
    )
    .await;
    let want_late: Vec<LateRow> = late
        .iter()
        .map(|a| {
            (
                a.site.as_deref().map(str::to_string),
                a.sensor.to_string(),
                a.window_start,
                a.count as f64,
                a.max,
            )
        })
        .collect();
    assert_eq!(
        late_rows, want_late,
        "late rows, columns named after their sources"
    );

    // Counted, and the windows did not change.
    let p = psql(
        "127.0.0.1",
        pg_port,
        "SELECT late_rows FROM edgeflow_queries WHERE name = 'late_demo'",
    );
    assert_eq!(p.stdout.trim(), "3", "{}", p.stderr);
    assert_eq!(late_demo_rows(&pg).await.expect("rows"), want);
}

/// One JSON reading `{"sensor", "ts", "value"}` per `(sensor, value)`, as a batch of the
/// `readings` stream below, and its largest event time.
fn json_readings(
    format: &edgeflow_ingest::format::Format,
    rows: &[(&str, f64)],
) -> (datafusion::arrow::array::RecordBatch, Option<i64>) {
    let mut d = edgeflow_ingest::decode::BatchDecoder::new(format.clone());
    for (i, (sensor, value)) in rows.iter().enumerate() {
        let json = format!(
            r#"{{"sensor":"{sensor}","ts":{},"value":{value}}}"#,
            T0 + i as i64
        );
        d.push(&edgeflow_ingest::decode::RawRecord {
            payload: Some(json.as_bytes()),
            ..Default::default()
        })
        .expect("decodes");
    }
    let max = d.max_event_time();
    (d.finish().expect("closes").expect("rows"), max)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_and_rows_a_sink_cannot_take_stop_the_query_with_the_reason() {
    use edgeflow::processor::node::Executed;
    use edgeflow::processor::{Node, ProcessorConfig};

    let pg = Postgres::start().await;
    // Tables made beforehand that do not fit: no unique constraint on the identity,
    // a column of another type, and one that refuses some values.
    pg.client()
        .await
        .batch_execute(
            "CREATE TABLE no_unique (sensor text, value double precision);
             CREATE TABLE wrong_type (sensor text, value boolean, UNIQUE NULLS NOT DISTINCT (sensor, value));
             CREATE TABLE refusing (sensor text, value double precision CHECK (value < 1000),
                                    UNIQUE NULLS NOT DISTINCT (sensor, value));",
        )
        .await
        .expect("tables");
    let config = ProcessorConfig::parse(&format!(
        r#"
[kafka]
brokers = "127.0.0.1:9"
[server]
pg_listen = ""
http_listen = ""
[checkpoint]
interval = "0s"
[[streams]]
name = "readings"
topic = "unused"
format = "json"
columns = {{ sensor = "string", ts = "timestamp", value = "double" }}
event_time = "ts"
partitions = [0]
[sinks.pg]
type = "postgres"
url = "{url}"
"#,
        url = pg.url
    ))
    .expect("config");
    let format = config.streams[0].format().expect("format");
    let node = Node::build(config).await.expect("node");
    let create = |name: &str| {
        format!("CREATE MATERIALIZED VIEW {name} WITH (sinks = 'pg') AS SELECT sensor, value FROM readings")
    };
    let refused = |r: anyhow::Result<Executed>| match r {
        Ok(_) => panic!("a table that does not fit was accepted"),
        Err(e) => format!("{e:#}"),
    };
    let e = refused(node.execute(&create("no_unique")).await);
    assert!(
        e.contains("no unique constraint") && e.contains("ALTER TABLE \"no_unique\" ADD UNIQUE"),
        "{e}"
    );
    let e = refused(node.execute(&create("wrong_type")).await);
    assert!(e.contains("\"value\"") && e.contains("is bool"), "{e}");
    for name in ["refusing", "fine"] {
        node.execute(&create(name)).await.expect(name);
    }

    // 5000 breaks `refusing`'s CHECK: not a reason to retry, so that query stops with
    // the server's words while `fine` (a table the sink made) goes on.
    for rows in [&[("a", 1.0), ("b", 5000.0)][..], &[("c", 2.0)]] {
        let (batch, max) = json_readings(&format, rows);
        tokio::time::timeout(
            Duration::from_secs(60),
            node.process_batch("readings", 0, batch, max),
        )
        .await
        .expect("a write that cannot succeed is not retried for ever")
        .expect("processed");
    }
    let queries = node.queries().await;
    let state = |name: &str| {
        queries
            .iter()
            .find(|q| q.name == name)
            .map(|q| q.error.clone())
            .expect("listed")
    };
    let error = state("refusing").expect("refusing failed");
    assert!(
        error.contains("sink `pg`") && error.contains("check constraint"),
        "{error}"
    );
    assert_eq!(state("fine"), None);
    let rows = |table: &'static str| {
        let pg = &pg;
        async move {
            let mut rows: Vec<(String, f64)> = pg
                .client()
                .await
                .query(&format!("SELECT sensor, value FROM {table}"), &[])
                .await
                .expect("select")
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            rows.sort_by(|a, b| a.0.cmp(&b.0));
            rows
        }
    };
    let all = vec![
        ("a".to_string(), 1.0),
        ("b".to_string(), 5000.0),
        ("c".to_string(), 2.0),
    ];
    assert_eq!(rows("fine").await, all);
    assert_eq!(
        rows("refusing").await,
        vec![],
        "the refused statement wrote nothing"
    );

    // Seen where users look: the queries table, and the metrics.
    let Executed::Rows(b) = node
        .execute("SELECT name, state, error FROM edgeflow_queries ORDER BY name")
        .await
        .expect("edgeflow_queries")
    else {
        panic!("rows expected")
    };
    let listed = datafusion::arrow::util::pretty::pretty_format_batches(&b)
        .expect("prints")
        .to_string();
    assert!(
        listed.contains("| fine     | running |")
            && listed.contains("| refusing | failed  | sink `pg`"),
        "{listed}"
    );
    let metrics = node.metrics_text().await;
    assert!(
        metrics
            .contains("edgeflow_processor_query_failed{node=\"processor-1\",query=\"refusing\"} 1")
            && metrics
                .contains("edgeflow_processor_query_failed{node=\"processor-1\",query=\"fine\"} 0")
            && metrics.contains("edgeflow_processor_query_failures_total{node=\"processor-1\"} 1"),
        "{metrics}"
    );
}

/// The sum of a metric's samples in an OpenMetrics text (over all label sets).
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One edge aggregate of `count` readings of `sensor` in the window starting at `start`.
fn reading(sensor: &str, start: i64, count: u64) -> Aggregate {
    Aggregate {
        sensor: Arc::from(sensor),
        window_start: start,
        window_end: start + 10_000,
        count,
        first_ts: start,
        last_ts: start,
        ..sentinel(sensor)
    }
}

/// Rows that stop existing are deleted at the sinks: a window that no longer passes
/// its `HAVING` after a late row, and a session that a late row merged into an earlier
/// one, leave no row in PostgreSQL (nor in a pull query) and end with a tombstone on
/// the Kafka sink's topic. Expected rows are worked out here from the readings sent.
#[tokio::test]
async fn rows_that_stop_existing_are_retracted_in_postgres_and_kafka() {
    let (kafka, pg) = tokio::join!(Kafka::start_in_memory(), Postgres::start());
    let (input, results) = (unique_topic("retract-in"), unique_topic("retract-out"));
    kafka.create_topic(&input, 1).await;
    kafka.create_topic(&results, 1).await;
    let (pg_port, http_port) = (free_port(), free_port());
    let cfg = format!(
        r#"
node_id = "processor-retract"
[kafka]
brokers = "{brokers}"
[server]
pg_listen = "127.0.0.1:{pg_port}"
http_listen = "127.0.0.1:{http_port}"
[checkpoint]
interval = "0s"
[[streams]]
name = "aggregates"
topic = "{input}"
format = "edge-aggregates"
watermark_delay = "0s"
idle_timeout = "1h"
[[queries]]
name = "quiet_minutes"
sql = """
SELECT sensor, tumble(window_start, INTERVAL '1 minute') AS minute, sum("count") AS n
FROM aggregates
GROUP BY sensor, tumble(window_start, INTERVAL '1 minute')
HAVING sum("count") < 5
"""
allowed_lateness = "10m"
sinks = ["pg", "out"]
[[queries]]
name = "visits"
sql = """
SELECT sensor, session(window_start, INTERVAL '1 minute') AS visit, sum("count") AS n
FROM aggregates
GROUP BY sensor, session(window_start, INTERVAL '1 minute')
"""
allowed_lateness = "10m"
sinks = ["pg", "out"]
[sinks.pg]
type = "postgres"
url = "{pg_url}"
[sinks.out]
type = "kafka"
topic = "{results}"
"#,
        brokers = kafka.bootstrap(),
        pg_url = pg.url,
    );
    let mut processor = start_processor(processor_builder("processor-retract"), cfg).await;
    let producer: FutureProducer = kafka.client_config().create().expect("producer");
    let client = pg.client().await;
    // (sensor, start in s after T0, n) rows of a table, for sensors a and b.
    let table = |name: &'static str, column: &'static str| {
        let client = &client;
        async move {
            let sql = format!(
                "SELECT sensor, (extract(epoch FROM {column}) * 1000)::bigint, n FROM {name} \
                 WHERE sensor IN ('a', 'b') ORDER BY 1, 2"
            );
            match client.query(&sql, &[]).await {
                Ok(rows) => rows
                    .iter()
                    .map(|r| {
                        let ms: i64 = r.get(1);
                        (r.get::<_, String>(0), (ms - T0) / 1000, r.get::<_, i64>(2))
                    })
                    .collect::<Vec<_>>(),
                Err(_) => Vec::new(),
            }
        }
    };
    let row = |s: &str, t: i64, n: i64| (s.to_string(), t, n);

    // Sensor a: 3 readings at 0 s. Sensor b: one at 0 s and one at 90 s, two visits
    // (sessions with a 1-minute gap) in two minutes. Every minute passes `n < 5`. A
    // reading of c at 5 min moves the watermark past them all.
    let first = [
        reading("a", T0, 3),
        reading("b", T0, 1),
        reading("b", T0 + 90_000, 1),
        reading("c", T0 + 300_000, 1),
    ];
    send_aggregates(&producer, &input, 0, &first).await;
    let want_quiet = vec![row("a", 0, 3), row("b", 0, 1), row("b", 60, 1)];
    let want_visits = vec![row("a", 0, 3), row("b", 0, 1), row("b", 90, 1)];
    wait_until(
        "the first rows in PostgreSQL",
        Duration::from_secs(60),
        || async {
            (table("quiet_minutes", "minute").await == want_quiet
                && table("visits", "visit").await == want_visits)
                .then_some(())
        },
    )
    .await;

    // Late, within the 10 minutes of lateness: 4 more readings of a at 10 s (its
    // minute has 7 now: no longer under 5; its visit goes on), and one of b at 45 s,
    // which joins b's two visits into one.
    let late = [reading("a", T0 + 10_000, 4), reading("b", T0 + 45_000, 1)];
    send_aggregates(&producer, &input, 0, &late).await;
    let want_quiet = vec![row("b", 0, 2), row("b", 60, 1)];
    let want_visits = vec![row("a", 0, 7), row("b", 0, 3)];
    wait_until(
        "the retractions in PostgreSQL",
        Duration::from_secs(60),
        || async {
            (table("quiet_minutes", "minute").await == want_quiet
                && table("visits", "visit").await == want_visits)
                .then_some(())
        },
    )
    .await;

    // The live tables agree (over the processor's PostgreSQL wire, with psql).
    for (name, want) in [("quiet_minutes", "b|2\nb|1\n"), ("visits", "a|7\nb|3\n")] {
        let p = psql(
            "127.0.0.1",
            pg_port,
            &format!(
                "SELECT sensor, n FROM {name} WHERE sensor IN ('a', 'b') ORDER BY sensor, n DESC"
            ),
        );
        assert!(
            p.ok && p.stdout == want,
            "live table {name}: {}{}",
            p.stdout,
            p.stderr
        );
    }

    // Kafka: the last record of every identity; a tombstone is no value.
    let records = kafka
        .consume_all(&results, 1, 6, Duration::from_secs(60))
        .await;
    let mut last: BTreeMap<(String, String), Option<String>> = BTreeMap::new();
    for r in records {
        let query = r
            .header(edgeflow_sinks::kafka::HEADER_QUERY)
            .map(|q| String::from_utf8_lossy(q).into_owned())
            .expect("the query header");
        last.insert((query, r.key_str().expect("a key")), r.payload_str());
    }
    let ends = |query: &str, sensor: &str| -> Vec<Option<String>> {
        last.iter()
            .filter(|((q, k), _)| q == query && k.starts_with(&format!("[\"{sensor}\"")))
            .map(|(_, v)| v.clone())
            .collect()
    };
    assert_eq!(
        ends("quiet_minutes", "a"),
        vec![None],
        "a's minute ends with a tombstone: {last:#?}"
    );
    let mut visits = ends("visits", "b");
    visits.sort();
    assert!(
        visits.len() == 2
            && visits[0].is_none()
            && visits[1].as_ref().is_some_and(|v| v.contains("\"n\":3")),
        "b's later visit ends with a tombstone, the merged one holds n = 3: {last:#?}"
    );
    processor.terminate();
}

/// A checkpoint that resumes a partition past its end (the topic was deleted and
/// created again since it was taken) stops the processor at start with an error that
/// names the partition, instead of counting the new log's records against the old
/// state (the consumer alone would jump back to the log start without a word).
#[tokio::test]
async fn a_checkpoint_past_the_partitions_end_stops_the_processor_at_start() {
    use edgeflow_stream::checkpoint::{CheckpointStore, SourceOffset};
    let kafka = Kafka::start_in_memory().await;
    let topic = unique_topic("ckpt-recreated");
    kafka.create_topic(&topic, 1).await;
    let producer: FutureProducer = kafka.client_config().create().expect("producer");
    let data = data();
    send_aggregates(&producer, &topic, 0, &data.per_partition[0][..3]).await;

    let builder = processor_builder("processor-recreated");
    let checkpoints = builder.workdir().join("checkpoints");
    // The checkpoint of a node that had read 500 records of the topic's earlier life.
    let (store, root) =
        edgeflow_sinks::open_store(&checkpoints.display().to_string()).expect("checkpoint store");
    CheckpointStore::new(store, root.join("processor-recreated"), 3)
        .commit(
            "processor-recreated",
            0,
            0,
            vec![SourceOffset {
                topic: topic.clone(),
                partition: 0,
                next_offset: 500,
                generation: 0,
            }],
            Vec::new(),
        )
        .await
        .expect("commit a checkpoint");
    let cfg = format!(
        r#"
node_id = "processor-recreated"
[kafka]
brokers = "{brokers}"
[server]
pg_listen = "127.0.0.1:{pg_port}"
http_listen = "127.0.0.1:{http_port}"
[checkpoint]
url = "{checkpoints}"
[[streams]]
name = "aggregates"
topic = "{topic}"
format = "edge-aggregates"
"#,
        brokers = kafka.bootstrap(),
        pg_port = free_port(),
        http_port = free_port(),
        checkpoints = checkpoints.display(),
    );
    let mut processor = builder.config(cfg).spawn();
    let status = processor.wait_exit(Duration::from_secs(60)).await;
    let log = processor.log_text();
    assert!(!status.success(), "{log}");
    assert!(
        log.contains(&format!(
            "topic `{topic}` partition 0 ends at offset 3, but the checkpoint resumes it at offset 500"
        )),
        "{log}"
    );
    assert!(!log.contains("processor running"), "{log}");
}

/// The brokers of a test and its topics (`prefix`-named): the input with
/// [`PARTITIONS`] partitions, the dead letters and the results with one each.
async fn brokers_and_topics(prefix: &str) -> (Kafka, Postgres, Topics) {
    let (kafka, pg) = tokio::join!(Kafka::start_in_memory(), Postgres::start());
    let topics = Topics {
        input: unique_topic(&format!("{prefix}-aggregates")),
        dlq: unique_topic(&format!("{prefix}-dlq")),
        results: unique_topic(&format!("{prefix}-results")),
    };
    kafka.create_topic(&topics.input, PARTITIONS).await;
    kafka.create_topic(&topics.dlq, 1).await;
    kafka.create_topic(&topics.results, 1).await;
    (kafka, pg, topics)
}

/// The input in `n` parts (part → partition → aggregates), each partition's records in
/// production order; the last part ends every partition with its sentinel.
fn in_parts(data: &Data, n: usize) -> Vec<Vec<Vec<Aggregate>>> {
    let mut parts: Vec<Vec<Vec<Aggregate>>> = vec![vec![Vec::new(); PARTITIONS as usize]; n];
    for (p, aggs) in data.per_partition.iter().enumerate() {
        let per = aggs.len().div_ceil(n);
        for (k, chunk) in aggs.chunks(per).enumerate() {
            parts[k][p] = chunk.to_vec();
        }
        parts[n - 1][p].push(sentinel(&format!("~sentinel-{p}")));
    }
    parts
}

/// `kill -9` at three random moments while the input arrives in parts, each time
/// restarted: the processor resumes from its last checkpoint (it re-reads at most the
/// part that arrived since the last checkpoint, never the whole topic), and at the end
/// PostgreSQL, the Parquet files (read back by pyarrow) and the Kafka sink hold exactly
/// the roll-ups computed from the raw readings, each identity with one value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_killed_three_times_resumes_from_its_checkpoints_and_the_sinks_are_exact() {
    use rand::Rng;
    let (kafka, pg, topics) = brokers_and_topics("ckpt").await;
    let data = data();
    let want = expected(&data.oracle);
    const PARTS: usize = 4;
    let parts = in_parts(&data, PARTS);

    let (pg_port, http_port) = (free_port(), free_port());
    let builder = processor_builder("processor-ckpt");
    let lake = builder.workdir().join("lake");
    let checkpoints = builder.workdir().join("checkpoints");
    let cfg = config(&kafka, &topics, &pg, &lake, pg_port, http_port).replace(
        "[checkpoint]\ninterval = \"0s\"",
        &format!(
            "[checkpoint]\nurl = \"{}\"\ninterval = \"1s\"",
            checkpoints.display()
        ),
    );
    // The edge emits a partition's windows nearly, not exactly, in time order: its
    // aggregator keeps windows open for a minute of lateness and emits the last ones
    // together when the data ends, some 70 s of windows out of order. Here the input
    // arrives in parts with pauses between them, so the watermark trails by 90 s.
    let cfg = cfg.replace("watermark_delay = \"0s\"", "watermark_delay = \"90s\"");
    assert!(
        cfg.contains("interval = \"1s\"") && cfg.contains("watermark_delay = \"90s\""),
        "{cfg}"
    );
    let mut processor = start_processor(builder, cfg).await;
    let addr = format!("127.0.0.1:{http_port}");
    let scrape = |name: &'static str| {
        let addr = addr.clone();
        async move { metric_sum(&common::http_get(&addr, "/metrics").await, name) }
    };
    let producer: FutureProducer = kafka.client_config().create().expect("producer");
    let mut rng = rand::rng();
    for (k, part) in parts.iter().enumerate() {
        for (p, aggs) in part.iter().enumerate() {
            send_aggregates(&producer, &topics.input, p as i32, aggs).await;
        }
        if k == PARTS - 1 {
            break;
        }
        // A random moment: before, while or after this part is read and checkpointed.
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..2_500))).await;
        processor.kill9();
        processor.restart();
        processor
            .wait_for_log_line("processor running", Duration::from_secs(60))
            .await;
        // Two checkpoints of the new run: it has caught up and its state is saved.
        wait_until(
            "two checkpoints after the restart",
            Duration::from_secs(60),
            || async {
                (scrape("edgeflow_processor_checkpoints_total").await >= 2.0).then_some(())
            },
        )
        .await;
        let reread = scrape("edgeflow_processor_rows_in_total").await as usize;
        let this_part: usize = part.iter().map(Vec::len).sum();
        assert!(
            reread <= this_part,
            "restart {}: {reread} records re-read; at most this part's {this_part} should be \
             (everything before it was checkpointed)",
            k + 1
        );
        // Nothing was produced since the kill: what the node found between its
        // checkpoint and the partitions' ends is exactly what it read.
        let replay = scrape("edgeflow_processor_restore_replay_records").await as usize;
        assert_eq!(
            replay,
            reread,
            "restart {}: the replay the node reported against the records it read",
            k + 1
        );
        assert!(
            processor
                .log_text()
                .contains("restored from the last checkpoint"),
            "{}",
            processor.log_text()
        );
    }

    assert_pg_and_parquet_hold(&pg, &lake, &want, " after three kills").await;
    let results = kafka_results(&kafka, &topics.results, want.len()).await;
    assert_eq!(results.len(), want.len(), "identities on the results topic");
    assert!(
        results.values().all(|v| v.len() == 1),
        "one value per identity, however often it was written: {:?}",
        results.values().find(|v| v.len() > 1)
    );
}

/// Three cluster members on a real broker's control topic, in this process: they fold
/// the same log to the same assignment (two of six partitions each); one that goes
/// silent loses its partitions to the others once they have heartbeated
/// `dead_after_heartbeats` times; one that leaves hands its partitions over at once.
/// `edgeflow cluster status` prints the same fold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_members_agree_and_a_silent_one_loses_its_partitions() {
    use edgeflow::cluster::{ControlLog, Member, MemberConfig, View};
    use edgeflow_stream::cluster::{ControlConfig, Duty, PartitionId};

    let kafka = Kafka::start_in_memory().await;
    let data = unique_topic("cluster-data");
    let control = unique_topic("cluster-control");
    kafka.create_topic(&data, 6).await;
    let partitions: std::collections::BTreeSet<PartitionId> =
        (0..6).map(|p| PartitionId::new(&data, p)).collect();
    let mut members = BTreeMap::new();
    for id in ["a", "b", "c"] {
        let log = ControlLog::open(&kafka.bootstrap(), &BTreeMap::new(), &control, 0)
            .await
            .expect("control log");
        let config = MemberConfig {
            id: id.into(),
            capacity: 1.0,
            heartbeat_interval: Duration::from_millis(100),
            control: ControlConfig::default(),
            partitions: partitions.clone(),
        };
        let m = Member::join(log, config, Arc::new(Vec::new))
            .await
            .expect("joins");
        members.insert(id, m);
    }
    let views: BTreeMap<&str, tokio::sync::watch::Receiver<View>> =
        members.iter().map(|(id, m)| (*id, m.view())).collect();
    let members: BTreeMap<&str, Arc<Member>> = members
        .into_iter()
        .map(|(id, m)| (id, Arc::new(m)))
        .collect();
    // Each member does what a processor does when asked to release a partition (here
    // with no state to checkpoint): it says `released`.
    for m in members.values() {
        let (m, mut view) = (m.clone(), m.view());
        tokio::spawn(async move {
            let mut said = std::collections::BTreeSet::new();
            while view.changed().await.is_ok() {
                let duties = view.borrow_and_update().state.duties(&m.id);
                for d in duties {
                    if let Duty::Release {
                        partition,
                        generation,
                    } = d
                    {
                        if said.insert((partition.clone(), generation)) {
                            let _ = m.released(partition, generation, 0).await;
                        }
                    }
                }
            }
        });
    }
    let mut members = members;
    // Who holds each partition, as one member sees it.
    let holders = |v: &View| -> BTreeMap<i32, String> {
        v.state
            .holdings()
            .iter()
            .map(|(p, h)| (p.partition, h.member.clone()))
            .collect()
    };
    let agreed = |ids: &[&str]| {
        let views = &views;
        let ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        move || {
            let ids = ids.clone();
            async move {
                let seen: Vec<View> = ids
                    .iter()
                    .map(|id| views[id.as_str()].borrow().clone())
                    .collect();
                let first = holders(&seen[0]);
                let same = seen.iter().all(|v| {
                    holders(v) == first && v.state.generation() == seen[0].state.generation()
                });
                let held_by_live = first.len() == 6 && first.values().all(|m| ids.contains(m));
                let even = ids
                    .iter()
                    .all(|id| first.values().filter(|m| *m == id).count() == 6 / ids.len());
                (same && held_by_live && even).then_some(first)
            }
        }
    };
    let three = wait_until(
        "three members agree on two partitions each",
        Duration::from_secs(30),
        agreed(&["a", "b", "c"]),
    )
    .await;
    let of_c: Vec<i32> = three
        .iter()
        .filter(|(_, m)| *m == "c")
        .map(|(p, _)| *p)
        .collect();

    // `c` stops heartbeating, as a crashed process does.
    let silent = std::time::Instant::now();
    members.remove("c").expect("c").vanish().await;
    let two = wait_until(
        "a and b take over c's partitions",
        Duration::from_secs(30),
        agreed(&["a", "b"]),
    )
    .await;
    eprintln!(
        "cluster: c's partitions {of_c:?} held by others {} ms after its last heartbeat",
        silent.elapsed().as_millis()
    );
    for (p, m) in &three {
        if m != "c" {
            assert_eq!(&two[p], m, "partition {p} stayed with its live holder");
        }
    }
    let a = views["a"].borrow().clone();
    assert!(!a.state.members()["c"].live, "c is dead");
    assert!(!a.fenced);

    // The operator's view, from the control log alone.
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg_path = dir.path().join("processor.toml");
    std::fs::write(
        &cfg_path,
        format!(
            "[kafka]\nbrokers = \"{}\"\n[[streams]]\nname = \"aggs\"\ntopic = \"{data}\"\nformat = \"edge-aggregates\"\n[cluster]\ncontrol_topic = \"{control}\"\n",
            kafka.bootstrap()
        ),
    )
    .expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_edgeflow"))
        .args(["cluster", "status", "--config"])
        .arg(&cfg_path)
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = |id: &str| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .unwrap_or_else(|| panic!("no row for {id}: {text}"))
            .to_string()
    };
    assert!(
        row("a").contains("live") && row("b").contains("live"),
        "{text}"
    );
    assert!(row("c").contains("gone"), "{text}");
    for p in 0..6 {
        let line = row(&format!("{data}/{p}"));
        let holder = line.split_whitespace().nth(1).expect("holder");
        assert!(holder == "a" || holder == "b", "{line}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_edgeflow"))
        .args(["cluster", "status", "--json", "--config"])
        .arg(&cfg_path)
        .output()
        .expect("runs");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        json["members"]["c"]["live"],
        serde_json::json!(false),
        "{json}"
    );

    // `a` leaves on purpose: `b` holds everything without waiting for a detection.
    members
        .remove("a")
        .expect("a")
        .leave()
        .await
        .expect("leaves");
    wait_until(
        "b holds every partition",
        Duration::from_secs(30),
        agreed(&["b"]),
    )
    .await;
    assert!(!views["b"].borrow().state.members()["a"].live);
    members
        .remove("b")
        .expect("b")
        .leave()
        .await
        .expect("leaves");
}

/// The cluster's view through `edgeflow cluster status --json` with `config`:
/// partition → (holder, releasing).
fn cluster_holders(config: &Path) -> BTreeMap<i64, (String, bool)> {
    let out = Command::new(env!("CARGO_BIN_EXE_edgeflow"))
        .args(["cluster", "status", "--json", "--config"])
        .arg(config)
        .output()
        .expect("runs");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    json["holdings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|pair| {
            let p = pair[0]["partition"].as_i64()?;
            let h = &pair[1];
            Some((
                p,
                (
                    h["member"].as_str()?.to_string(),
                    h["releasing"].as_bool().unwrap_or(false),
                ),
            ))
        })
        .collect()
}

/// Waits until the processor at `addr` has completed two more checkpoints.
async fn two_more_checkpoints(addr: &str) {
    let count = || async {
        metric_sum(
            &common::http_get(addr, "/metrics").await,
            "edgeflow_processor_checkpoints_total",
        )
    };
    let before = count().await;
    wait_until("two more checkpoints", Duration::from_secs(30), || async {
        (count().await >= before + 2.0).then_some(())
    })
    .await;
}

/// Three `edgeflow process` nodes in a cluster share three partitions: the first
/// takes them all, hands two over as the others join (planned moves through
/// checkpoints); one is killed with `kill -9` while the input arrives in parts, and
/// the survivors take its partition over from its last checkpoint; then one survivor
/// is paused (SIGSTOP) past the detection time while the last part arrives: the other
/// takes everything over, and the paused one, resumed, stops without writing and
/// rejoins when started again. PostgreSQL and the
/// Kafka sink (each identity's last value) end holding exactly the roll-ups computed
/// from the raw readings, and the survivors' metrics count every partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_of_three_processors_survives_a_kill_and_the_sinks_are_exact() {
    let (kafka, pg, topics) = brokers_and_topics("cluster").await;
    let control = unique_topic("cluster-control");
    let data = data();
    let want = expected(&data.oracle);
    const PARTS: usize = 4;
    let parts = in_parts(&data, PARTS);
    let shared = tempfile::tempdir().expect("tempdir");
    let checkpoints = shared.path().join("checkpoints");
    let node_config = |id: &str| {
        let lake = shared.path().join("unused-lake");
        let cfg = config(&kafka, &topics, &pg, &lake, free_port(), free_port());
        let cfg = cfg
            .replace("node_id = \"processor-test\"", &format!("node_id = \"{id}\""))
            .replace(
                "[checkpoint]\ninterval = \"0s\"",
                &format!(
                    "[checkpoint]\nurl = \"{}\"\ninterval = \"1s\"\n[cluster]\ncontrol_topic = \"{control}\"",
                    checkpoints.display()
                ),
            )
            .replace("watermark_delay = \"0s\"", "watermark_delay = \"90s\"")
            // A node's watermark does not go back for a partition it takes over, so the
            // partition's rows behind it are late there (docs/cluster.md). Here the
            // sentinels two hours ahead put a node that has read its own sentinel two
            // hours ahead of a partition it takes over: the lateness covers that.
            .replace("sinks = [\"pg\", \"lake\", \"out\"]", "sinks = [\"pg\", \"out\"]\nallowed_lateness = \"3h\"");
        // No Parquet sink in a cluster yet.
        let cfg = cfg[..cfg.find("[sinks.lake]").expect("lake")].to_string()
            + &cfg[cfg.find("[sinks.out]").expect("out")..];
        assert!(
            cfg.contains("[cluster]") && cfg.contains("allowed_lateness = \"3h\""),
            "{cfg}"
        );
        cfg
    };
    let status_config = shared.path().join("status.toml");
    std::fs::write(&status_config, node_config("status")).expect("config");
    let ids = ["cluster-a", "cluster-b", "cluster-c"];
    let mut nodes = Vec::new();
    let mut http = Vec::new();
    for id in ids {
        let cfg = node_config(id);
        http.push(
            cfg.lines()
                .find_map(|l| l.strip_prefix("http_listen = \""))
                .map(|a| a.trim_end_matches('"').to_string())
                .expect("http_listen"),
        );
        nodes.push(start_processor(processor_builder(id), cfg).await);
    }
    let one_each = |expect: &'static [&'static str]| {
        let status_config = status_config.clone();
        move || {
            let status_config = status_config.clone();
            async move {
                let h = cluster_holders(&status_config);
                let settled = h.len() == PARTITIONS as usize
                    && h.values()
                        .all(|(m, releasing)| !releasing && expect.contains(&m.as_str()))
                    && expect.iter().all(|id| h.values().any(|(m, _)| m == id));
                settled.then_some(h)
            }
        }
    };
    let before = wait_until(
        "each node holds one partition",
        Duration::from_secs(60),
        one_each(&["cluster-a", "cluster-b", "cluster-c"]),
    )
    .await;
    let producer: FutureProducer = kafka.client_config().create().expect("producer");
    for (k, part) in parts.iter().enumerate() {
        for (p, aggs) in part.iter().enumerate() {
            send_aggregates(&producer, &topics.input, p as i32, aggs).await;
        }
        if k == 1 {
            // Two checkpoints after the part went out, then `c` dies.
            two_more_checkpoints(&http[2]).await;
            nodes[2].kill9();
            let after = wait_until(
                "a and b hold every partition",
                Duration::from_secs(60),
                one_each(&["cluster-a", "cluster-b"]),
            )
            .await;
            let moved: Vec<i64> = before
                .iter()
                .filter(|(_, (m, _))| m == "cluster-c")
                .map(|(p, _)| *p)
                .collect();
            assert_eq!(moved.len(), 1, "{before:?}");
            assert_ne!(after[&moved[0]].0, "cluster-c");
        }
        if k == 2 {
            // `b` is paused (SIGSTOP) past the detection time while the last part
            // arrives: `a` takes everything over. Resumed, `b` finds itself dead and
            // stops without writing; started again, it rejoins.
            two_more_checkpoints(&http[1]).await;
            let pid = nodes[1].pid().expect("b runs").to_string();
            let signal = |sig: &str| {
                let ok = Command::new("kill")
                    .args([sig, &pid])
                    .status()
                    .expect("kill runs")
                    .success();
                assert!(ok, "kill {sig} {pid}");
            };
            signal("-STOP");
            wait_until(
                "a holds every partition while b is paused",
                Duration::from_secs(60),
                one_each(&["cluster-a"]),
            )
            .await;
            for (p, aggs) in parts[PARTS - 1].iter().enumerate() {
                send_aggregates(&producer, &topics.input, p as i32, aggs).await;
            }
            signal("-CONT");
            let status = nodes[1].wait_exit(Duration::from_secs(30)).await;
            assert!(
                !status.success(),
                "b stops with an error once it reads its death"
            );
            assert!(
                nodes[1].log_text().contains("declared this node dead"),
                "{}",
                nodes[1].log_text()
            );
            nodes[1].restart();
            nodes[1]
                .wait_for_log_line("processor running", Duration::from_secs(60))
                .await;
            wait_until(
                "b rejoined: a and b share the partitions again",
                Duration::from_secs(60),
                one_each(&["cluster-a", "cluster-b"]),
            )
            .await;
            break;
        }
    }
    let survivors = nodes[0].log_text() + &nodes[1].log_text();
    assert!(
        survivors.contains("acquired a partition") && survivors.contains("from=cluster-c epoch"),
        "a survivor takes c's partition from c's checkpoint: {survivors}"
    );
    assert!(
        nodes[0].log_text().contains("released a partition"),
        "the first node handed partitions over as the others joined: {}",
        nodes[0].log_text()
    );
    // As on the Kafka sink, a row can be written early and then again complete: wait
    // for the last values, then compare.
    let got = wait_until(
        "the roll-ups in PostgreSQL",
        Duration::from_secs(90),
        || async {
            pg_rows(&pg)
                .await
                .filter(|r| r.len() >= want.len())
                .filter(|r| rows_equal(r, &want))
        },
    )
    .await;
    assert_rows("PostgreSQL, three nodes, one killed", &got, &want);
    // The Kafka sink: the last value of each identity (what compaction keeps). A window
    // of a partition taken over by a node whose watermark is ahead can be emitted before
    // all its rows are read, then again complete (docs/cluster.md).
    let (last, rewritten) = wait_until(
        "the Kafka sink's last value per identity is the roll-up",
        Duration::from_secs(60),
        || async {
            let recs = kafka
                .consume_all(&topics.results, 1, want.len(), Duration::from_secs(10))
                .await;
            let mut last: BTreeMap<String, Row> = BTreeMap::new();
            let mut writes: BTreeMap<String, usize> = BTreeMap::new();
            for r in recs {
                let k = String::from_utf8(r.key.unwrap_or_default()).expect("utf8 key");
                let v: serde_json::Value =
                    serde_json::from_slice(&r.payload.unwrap_or_default()).expect("JSON row");
                let minute = v["minute"].as_str().expect("minute");
                // "2025-11-24T16:MM:00Z": the data spans ten minutes from T0.
                let (h, m): (i64, i64) = (
                    minute[11..13].parse().expect("hour"),
                    minute[14..16].parse().expect("minute"),
                );
                let row = (
                    v["sensor"].as_str().expect("sensor").to_string(),
                    v["field"].as_str().expect("field").to_string(),
                    T0 + ((h - 16) * 60 + m) * 60_000,
                    v["n"].as_u64().expect("n"),
                    v["mean"].as_f64().expect("mean"),
                    v["low"].as_f64().expect("low"),
                    v["high"].as_f64().expect("high"),
                );
                *writes.entry(k.clone()).or_default() += 1;
                last.insert(k, row);
            }
            let mut rows: Vec<Row> = last.into_values().collect();
            rows.sort_by(|a, b| (&a.0, &a.1, a.2).cmp(&(&b.0, &b.1, b.2)));
            let rewritten = writes.values().filter(|n| **n > 1).count();
            (rows.len() == want.len()).then_some((rows, rewritten))
        },
    )
    .await;
    assert_rows("the Kafka sink's last values", &last, &want);
    eprintln!("cluster: {rewritten} identities written more than once on the Kafka sink");
    // The survivors' metrics: between them every partition, and what they took over.
    let mut held = 0.0;
    let mut acquired = 0.0;
    for addr in &http[..2] {
        let text = common::http_get(addr, "/metrics").await;
        held += metric_sum(&text, "edgeflow_processor_cluster_partitions");
        acquired += metric_sum(
            &text,
            "edgeflow_processor_cluster_partitions_acquired_total",
        );
    }
    assert_eq!(
        held,
        f64::from(PARTITIONS),
        "partitions held by the survivors"
    );
    // The cluster as a table, on any node: every partition, held by a or b.
    let port: u16 = http[0]
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let (ok, out, err) = edgeflow_sql(
        port,
        "SELECT partition, holder, state, here FROM edgeflow_cluster ORDER BY partition",
    );
    assert!(ok, "{err}");
    let rows: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("cluster-a") || l.contains("cluster-b"))
        .collect();
    assert_eq!(rows.len(), PARTITIONS as usize, "{out}");
    assert!(rows.iter().all(|r| r.contains("owned")), "{out}");
    // The heartbeats carry the nodes' checkpoint epochs.
    let out = Command::new(env!("CARGO_BIN_EXE_edgeflow"))
        .args(["cluster", "status", "--json", "--config"])
        .arg(&status_config)
        .output()
        .expect("runs");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    for id in ["cluster-a", "cluster-b"] {
        assert!(
            json["members"][id]["checkpoint_epoch"]
                .as_u64()
                .is_some_and(|e| e > 0),
            "{id}: {json}"
        );
    }
    assert!(
        acquired >= 3.0,
        "the survivors took partitions over: {acquired}"
    );
}
