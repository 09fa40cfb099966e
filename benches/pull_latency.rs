//! Pull-query latency over the PostgreSQL wire protocol: one sensor's latest value with
//! 100,000 sensors live, measured with hdrhistogram.
//!
//! Run: `cargo bench --bench pull_latency`. Without `--bench` among the arguments (e.g.
//! `cargo test --benches`) a small smoke version runs instead.
//!
//! Setup (outside the measurement): a processor node in this process with one stream
//! (`edge-readings`) whose `readings_latest` table holds the latest reading per
//! (sensor, field); 100,000 sensors are fed through the engine, then the processor's
//! PostgreSQL endpoint is served on loopback. Measured: a client (tokio-postgres,
//! extended protocol with a bound parameter, as Grafana's and most drivers' queries are)
//! asks `SELECT sensor, field, ts, value FROM readings_latest WHERE sensor = $1` for a
//! random sensor, one query at a time; every answer is checked to be that sensor's row.
//! One client in a closed loop: each query starts when the previous one ended, so there
//! is no schedule to fall behind (no coordinated omission to correct).
//!
//! Goal: p99 ≤ 5 ms.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Float64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use edgeflow::processor::{Node, ProcessorConfig};
use edgeflow_ingest::format::reading_schema;
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const CONFIG: &str = r#"
[kafka]
brokers = "127.0.0.1:9"
[checkpoint]
interval = "0s"
[[streams]]
name = "readings"
topic = "edgeflow.readings"
format = "edge-readings"
partitions = [0]
latest_key = ["sensor", "field"]
latest_rows = 1000000
"#;

fn sensor(i: usize) -> String {
    format!("s-{i:06}")
}

fn batch(from: usize, to: usize, ts: i64, rng: &mut StdRng) -> RecordBatch {
    let n = to - from;
    RecordBatch::try_new(
        reading_schema(),
        vec![
            Arc::new(StringArray::from(vec!["gw-01"; n])),
            Arc::new(StringArray::from(
                (from..to).map(sensor).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                (from..to)
                    .map(|i| Some(format!("site-{}", i % 50)))
                    .collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(vec!["temp"; n])),
            Arc::new(TimestampMillisecondArray::from(vec![ts; n]).with_timezone("UTC")),
            Arc::new(Float64Array::from(
                (0..n)
                    .map(|_| rng.random_range(10.0..30.0))
                    .collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (sensors, queries) = if full {
        (100_000, 5_000)
    } else {
        (10_000, 200)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let cfg = ProcessorConfig::parse(CONFIG).unwrap();
        cfg.validate().unwrap();
        let node = Node::build(cfg).await.unwrap();
        let mut rng = StdRng::seed_from_u64(7);
        let t0 = 1_764_000_000_000i64;
        // Two rounds: every sensor's latest row replaces an earlier one.
        for round in 0..2 {
            let mut from = 0;
            while from < sensors {
                let to = (from + 8192).min(sensors);
                let ts = t0 + round * 10_000;
                node.process_batch("readings", 0, batch(from, to, ts, &mut rng), Some(ts)).await.unwrap();
                from = to;
            }
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let server = tokio::spawn(edgeflow::processor::pg::serve(node.clone(), "127.0.0.1".into(), port));
        let url = format!("host=127.0.0.1 port={port} user=edgeflow dbname=edgeflow");
        // The server task binds the port asynchronously: retry until it answers.
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                Ok((c, conn)) => {
                    tokio::spawn(conn);
                    break c;
                }
                Err(e) if Instant::now() > deadline => {
                    panic!("the PostgreSQL endpoint on port {port} never answered: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        let sql = "SELECT sensor, field, ts, value FROM readings_latest WHERE sensor = $1";
        let stmt = client.prepare(sql).await.unwrap();
        let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for i in 0..(queries / 10 + queries) {
            let name = sensor(rng.random_range(0..sensors));
            let start = Instant::now();
            let rows = client.query(&stmt, &[&name]).await.unwrap();
            let us = start.elapsed().as_micros() as u64;
            assert_eq!(rows.len(), 1, "one latest row for {name}");
            assert_eq!(rows[0].get::<_, String>(0), name);
            if i >= queries / 10 {
                hist.record(us.max(1)).unwrap();
            }
        }
        let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "pull_latency: {sensors} sensors live, {} queries over the PostgreSQL wire: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms (goal: p99 <= 5 ms)",
            hist.len(),
            ms(0.5),
            ms(0.9),
            ms(0.99),
            ms(0.999),
            hist.max() as f64 / 1000.0
        );
        server.abort();
    });
}
