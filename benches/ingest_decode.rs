//! Kafka records into Arrow: throughput of the processor's decoding core,
//! `edgeflow_ingest::decode::BatchDecoder`.
//!
//! One iteration pushes one batch of 8,192 pre-encoded records (the source's default
//! `batch_size`) into a decoder and closes the batch with `finish()`, as the Kafka source
//! does for each partition (the decoder is reused across batches; dropping the finished
//! batch is part of the cost). The records were encoded by the edge agent's own wire
//! functions before any timing:
//! - `ingest_decode/aggregates_binary`: window aggregates in `binary-v1`, format
//!   `edge-aggregates`;
//! - `ingest_decode/aggregates_json`: the same aggregates in JSON;
//! - `ingest_decode/readings_binary`: pass-through readings in `binary-v1`, format
//!   `edge-readings`.
//!
//! Data set (seeded): 1,000 sensors on 8 sites, each with one field (temperature,
//! humidity or pressure), reporting at 1 Hz; aggregates are closed 10 s windows of up to
//! 10 readings, in the order the agent emits them (every sensor closes a window, then the
//! next window); readings are in arrival order.
//!
//! Goal: at least 2,000,000 records/s on one core for the binary encoding
//! (`aggregates_binary`).
//!
//! Run: `cargo bench --bench ingest_decode -- --measurement-time 3 --warm-up-time 1`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use edgeflow_edge::window::Aggregate;
use edgeflow_edge::wire::{
    aggregate_binary, aggregate_json, reading_binary, ReadingRef, ENCODING_BINARY, ENCODING_JSON,
};
use edgeflow_ingest::decode::{BatchDecoder, RawRecord};
use edgeflow_ingest::format::{Format, FormatKind};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SEED: u64 = 0x1a6e_57de;
/// Records per batch: the Kafka source's default `batch_size`.
const N: usize = 8192;
const SENSORS: usize = 1_000;
const SITES: usize = 8;
const GATEWAY: &str = "gw-01";
/// Start of the data set: a window boundary (2025-11-24T16:00:00Z).
const T0: i64 = 1_764_000_000_000;
const WINDOW_MS: i64 = 10_000;
/// Readings per full window (1 Hz).
const PER_WINDOW: u64 = 10;

/// A sensor's fixed attributes.
struct Sensor {
    name: Arc<str>,
    site: Arc<str>,
    field: Arc<str>,
    /// Typical value and spread of its field.
    base: f64,
    spread: f64,
    /// Offset of its readings within each second (ms).
    phase: i64,
}

fn sensors(rng: &mut StdRng) -> Vec<Sensor> {
    (0..SENSORS)
        .map(|i| {
            let (field, base, spread) = match i % 3 {
                0 => ("temperature", rng.random_range(15.0..30.0), 0.5),
                1 => ("humidity", rng.random_range(30.0..70.0), 2.0),
                _ => ("pressure", rng.random_range(990.0..1_030.0), 0.3),
            };
            Sensor {
                name: Arc::from(format!("s-{i:04}")),
                site: Arc::from(format!("site-{}", (b'a' + (i % SITES) as u8) as char)),
                field: Arc::from(field),
                base,
                spread,
                phase: rng.random_range(0..1_000),
            }
        })
        .collect()
}

/// A reading value as sensors report it (two decimals).
fn value(rng: &mut StdRng, s: &Sensor) -> f64 {
    ((s.base + rng.random_range(-s.spread..s.spread)) * 100.0).round() / 100.0
}

/// `N` closed windows: sensor `i % SENSORS`, window `i / SENSORS`.
fn aggregates(rng: &mut StdRng, sensors: &[Sensor]) -> Vec<Aggregate> {
    (0..N)
        .map(|i| {
            let s = &sensors[i % SENSORS];
            let start = T0 + (i / SENSORS) as i64 * WINDOW_MS;
            // Now and then a reading is missing from a window.
            let count = if rng.random_bool(0.05) {
                rng.random_range(1..PER_WINDOW)
            } else {
                PER_WINDOW
            };
            let values: Vec<f64> = (0..count).map(|_| value(rng, s)).collect();
            let first_ts = start + s.phase;
            Aggregate {
                sensor: s.name.clone(),
                site: Some(s.site.clone()),
                field: s.field.clone(),
                window_start: start,
                window_end: start + WINDOW_MS,
                revision: 0,
                count,
                min: values.iter().copied().fold(f64::INFINITY, f64::min),
                max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                sum: values.iter().sum(),
                first_ts,
                first: values[0],
                last_ts: first_ts + (count as i64 - 1) * 1_000,
                last: values[values.len() - 1],
            }
        })
        .collect()
}

/// `N` readings in arrival order: every sensor once per second.
fn readings(rng: &mut StdRng, sensors: &[Sensor]) -> Vec<Vec<u8>> {
    (0..N)
        .map(|i| {
            let s = &sensors[i % SENSORS];
            let r = ReadingRef {
                sensor: &s.name,
                site: Some(&s.site),
                field: &s.field,
                ts: T0 + (i / SENSORS) as i64 * 1_000 + s.phase,
                value: value(rng, s),
            };
            let mut buf = Vec::new();
            reading_binary(GATEWAY, &r, &mut buf);
            buf
        })
        .collect()
}

fn encode_all(aggs: &[Aggregate], f: fn(&str, &Aggregate, &mut Vec<u8>)) -> Vec<Vec<u8>> {
    aggs.iter()
        .map(|a| {
            let mut buf = Vec::new();
            f(GATEWAY, a, &mut buf);
            buf
        })
        .collect()
}

fn records<'a>(payloads: &'a [Vec<u8>], encoding: &'a str, kind: &'a str) -> Vec<RawRecord<'a>> {
    payloads
        .iter()
        .enumerate()
        .map(|(i, p)| RawRecord {
            offset: i as i64,
            payload: Some(p),
            encoding: Some(encoding),
            kind: Some(kind),
            ..Default::default()
        })
        .collect()
}

/// One batch: every record pushed, then `finish()`. Returns the batch's row count.
fn decode(decoder: &mut BatchDecoder, records: &[RawRecord<'_>]) -> usize {
    for r in records {
        if let Err(dead) = decoder.push(r) {
            panic!("bench record rejected: {dead:?}");
        }
    }
    decoder
        .finish()
        .expect("batch")
        .map_or(0, |b| black_box(b).num_rows())
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
}

fn ingest_decode(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(SEED);
    let sensors = sensors(&mut rng);
    let aggs = aggregates(&mut rng, &sensors);
    let agg_binary = encode_all(&aggs, aggregate_binary);
    let agg_json = encode_all(&aggs, aggregate_json);
    let read_binary = readings(&mut rng, &sensors);
    let aggregates_format =
        Format::new(FormatKind::EdgeAggregates, vec![], None).expect("edge-aggregates format");
    let readings_format =
        Format::new(FormatKind::EdgeReadings, vec![], None).expect("edge-readings format");

    let cases = [
        (
            "aggregates_binary",
            &aggregates_format,
            records(&agg_binary, ENCODING_BINARY, "aggregate"),
            &agg_binary,
        ),
        (
            "aggregates_json",
            &aggregates_format,
            records(&agg_json, ENCODING_JSON, "aggregate"),
            &agg_json,
        ),
        (
            "readings_binary",
            &readings_format,
            records(&read_binary, ENCODING_BINARY, "reading"),
            &read_binary,
        ),
    ];

    let mut group = c.benchmark_group("ingest_decode");
    group.throughput(Throughput::Elements(N as u64));
    for (name, format, records, payloads) in &cases {
        let mut decoder = BatchDecoder::new((*format).clone());
        // Sanity check (untimed): every record decodes into the batch.
        assert_eq!(
            decode(&mut decoder, records),
            N,
            "{name}: rows in the batch"
        );
        let bytes: usize = payloads.iter().map(Vec::len).sum();
        println!(
            "ingest_decode/{name}: {N} records per batch, mean record {:.1} B",
            bytes as f64 / N as f64
        );
        group.bench_function(*name, |b| b.iter(|| decode(&mut decoder, records)));
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = ingest_decode
}
criterion_main!(benches);
