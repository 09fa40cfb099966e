//! Restart after `kill -9`: from the process start to the first output row, with
//! 100,000 sensors of window state, against a real Kafka-protocol broker.
//!
//! Run: `cargo bench --bench restart` (needs the harness's broker image, as the tests
//! do: `scripts/test-env.sh`); `EDGEFLOW_BENCH_SENSORS` and `EDGEFLOW_BENCH_ROUNDS`
//! change the sizes (100,000 and 5). Without `--bench` among the arguments (e.g. `cargo test
//! --benches`) a small smoke version runs instead.
//!
//! Setup: an `edgeflow process` node (this package's binary, of the bench's profile)
//! reads the 8 partitions of a topic of edge aggregates and runs a 1-minute tumbling roll-up per sensor
//! into a Kafka sink, checkpointing every second to a local directory. Each round:
//! 1. one aggregate per sensor (100,000 sensors) for a new minute is produced, and the
//!    node reads it all: 100,000 windows are open, none can close yet;
//! 2. once a checkpoint taken after that is complete, the node is killed (`SIGKILL`);
//! 3. the node is started again; at once a record one minute later is produced to each
//!    partition, which closes every open window as soon as the node reads them.
//!
//! Measured per round: from the process start to the first row of the restored windows
//! on the sink's topic (read by a consumer that waits at the topic's end), which takes
//! in the start, the restore, reading the closing record and emitting; plus the restore
//! duration the node reports in its metrics and the records it re-read. Goal: first row
//! within 1 s of the process start.
#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{unique_topic, wait_until, EdgeAgent, Kafka};
use edgeflow_edge::window::Aggregate;
use edgeflow_edge::wire;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

/// Start of the data: 2025-11-24T16:00:00Z.
const T0: i64 = 1_764_000_000_000;
const MINUTE: i64 = 60_000;

fn aggregate(sensor: &str, start: i64) -> Aggregate {
    Aggregate {
        sensor: Arc::from(sensor),
        site: None,
        field: Arc::from("temp"),
        window_start: start,
        window_end: start + 10_000,
        revision: 0,
        count: 1,
        min: 20.0,
        max: 20.0,
        sum: 20.0,
        first_ts: start,
        first: 20.0,
        last_ts: start,
        last: 20.0,
    }
}

/// Partitions of the input topic. The broker of the test harness slows down with many
/// records in one partition; spread over several, 100,000 records are read in seconds.
const PARTITIONS: i32 = 8;

/// Produces aggregates in the edge's binary encoding, keyed by sensor, sensor `i` to
/// partition `i % PARTITIONS`.
async fn produce(producer: &FutureProducer, topic: &str, aggs: &[(i32, Aggregate)]) {
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: wire::HEADER_ENCODING,
            value: Some(wire::ENCODING_BINARY),
        })
        .insert(Header {
            key: wire::HEADER_KIND,
            value: Some("aggregate"),
        });
    for chunk in aggs.chunks(10_000) {
        let values: Vec<Vec<u8>> = chunk
            .iter()
            .map(|(_, a)| {
                let mut v = Vec::new();
                wire::aggregate_binary("gw-bench", a, &mut v);
                v
            })
            .collect();
        let mut sends = Vec::with_capacity(chunk.len());
        for ((p, a), v) in chunk.iter().zip(&values) {
            let rec = FutureRecord::to(topic)
                .partition(*p)
                .key(&*a.sensor)
                .payload(v)
                .headers(headers.clone());
            sends.push(producer.send(rec, Duration::from_secs(30)));
        }
        for s in sends {
            s.await.map_err(|(e, _)| e).expect("produced");
        }
    }
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let knob = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (sensors, rounds) = if full {
        (
            knob("EDGEFLOW_BENCH_SENSORS", 100_000),
            knob("EDGEFLOW_BENCH_ROUNDS", 5),
        )
    } else {
        (200, 1)
    };
    let kafka = Kafka::start_in_memory().await;
    let (input, results) = (unique_topic("restart-in"), unique_topic("restart-out"));
    kafka.create_topic(&input, PARTITIONS).await;
    kafka.create_topic(&results, 1).await;
    let workdir = tempfile::tempdir().expect("workdir");
    let http = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let config = format!(
        r#"
node_id = "bench-restart"
[kafka]
brokers = "{brokers}"
[ingest]
dead_letter_topic = "{input}-dead"
[server]
pg_listen = ""
http_listen = "127.0.0.1:{http}"
[checkpoint]
url = "{dir}"
interval = "1s"
[[streams]]
name = "aggregates"
topic = "{input}"
format = "edge-aggregates"
watermark_delay = "0s"
idle_timeout = "1h"
[[queries]]
name = "per_minute"
sql = """
SELECT sensor, tumble(window_start, INTERVAL '1 minute') AS minute, sum("count") AS n
FROM aggregates GROUP BY sensor, tumble(window_start, INTERVAL '1 minute')
"""
live_rows = 1000
sinks = ["out"]
[sinks.out]
type = "kafka"
topic = "{results}"
"#,
        brokers = kafka.bootstrap(),
        dir = workdir.path().join("checkpoints").display(),
    );
    let mut node = EdgeAgent::builder()
        .program(env!("CARGO_BIN_EXE_edgeflow"), &["process"])
        .name("bench-restart")
        .config(config)
        .spawn();
    node.wait_for_log_line("processor running", Duration::from_secs(60))
        .await;
    let addr = format!("127.0.0.1:{http}");
    let scrape = |name: &'static str| {
        let addr = addr.clone();
        async move { metric(&common::http_get(&addr, "/metrics").await, name) }
    };
    let producer: FutureProducer = kafka.client_config().create().expect("producer");
    let names: Vec<String> = (0..sensors).map(|i| format!("s-{i:06}")).collect();

    let (mut first_row, mut restore, mut replay) = (Vec::new(), Vec::new(), Vec::new());
    let mut read = 0.0;
    for round in 0..rounds as i64 {
        // 1. A minute of state: one aggregate per sensor, all read by the node.
        let minute = T0 + 2 * round * MINUTE;
        let aggs: Vec<(i32, Aggregate)> = names
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let p = (i % PARTITIONS as usize) as i32;
                (p, aggregate(s, minute + (i as i64 * 7) % 50_000))
            })
            .collect();
        produce(&producer, &input, &aggs).await;
        let want = read + sensors as f64;
        wait_until(
            "the node has read the round",
            Duration::from_secs(300),
            || async { (scrape("edgeflow_processor_rows_in_total").await >= want).then_some(()) },
        )
        .await;
        // 2. A checkpoint that holds it, then SIGKILL.
        let after = scrape("edgeflow_processor_checkpoints_total").await;
        wait_until(
            "a checkpoint after the round",
            Duration::from_secs(60),
            || async {
                (scrape("edgeflow_processor_checkpoints_total").await >= after + 1.0).then_some(())
            },
        )
        .await;
        node.kill9();
        // The sink topic's end now: the restored windows' rows come after it.
        let consumer: BaseConsumer = kafka
            .client_config()
            .set("group.id", unique_topic("restart-bench"))
            .set("enable.auto.commit", "false")
            // The measuring reader must not wait up to its default 500 ms per fetch: that
            // put every figure on 0.5 s steps.
            .set("fetch.wait.max.ms", "10")
            .create()
            .expect("consumer");
        let (_, end) = consumer
            .fetch_watermarks(&results, 0, Duration::from_secs(10))
            .expect("offsets");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&results, 0, Offset::Offset(end))
            .expect("partition");
        consumer.assign(&tpl).expect("assign");

        // 3. Start again; the record that closes the minute goes out at once.
        let started = Instant::now();
        node.restart();
        // Every partition's watermark must pass the minute.
        let ticks: Vec<(i32, Aggregate)> = (0..PARTITIONS)
            .map(|p| (p, aggregate(&format!("tick-{p}"), minute + MINUTE + 1)))
            .collect();
        produce(&producer, &input, &ticks).await;
        let first = tokio::task::spawn_blocking(move || loop {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(_)) => break started.elapsed(),
                Some(Err(e)) => panic!("reading the sink's topic: {e}"),
                None if started.elapsed() > Duration::from_secs(120) => {
                    panic!("no row within 120 s of the restart")
                }
                None => {}
            }
        })
        .await
        .expect("consumer task");
        first_row.push(first.as_secs_f64());
        restore.push(scrape("edgeflow_processor_restore_duration_seconds").await);
        replay.push(scrape("edgeflow_processor_restore_replay_records").await);
        read = scrape("edgeflow_processor_rows_in_total").await;
        println!(
            "restart: round {round}: first row {:.3} s after the process start, restore {:.3} s, \
             {} records re-read",
            first.as_secs_f64(),
            restore.last().unwrap(),
            replay.last().unwrap()
        );
    }
    first_row.sort_by(f64::total_cmp);
    restore.sort_by(f64::total_cmp);
    println!(
        "restart: {sensors} sensors, {rounds} rounds: first row after the process start \
         p50 {:.3} s, max {:.3} s; restore p50 {:.3} s, max {:.3} s",
        percentile(&first_row, 0.5),
        first_row[first_row.len() - 1],
        percentile(&restore, 0.5),
        restore[restore.len() - 1],
    );
    node.terminate();
}
