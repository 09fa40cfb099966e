//! In-process cost of the edge agent's hot path: payload decoding, tumbling-window
//! aggregation, the wire encodings of aggregates and the input-journal encoding.
//!
//! Target of the issue: at least 1,000,000 readings/s on one core for ~80-byte JSON
//! payloads, decoding plus aggregation (`decode_aggregate/json_80B`).
//!
//! Data set (seeded, built before any timing): 10,000 sensors on 8 sites publishing at
//! 1 Hz with a random phase, 100,000 payloads in arrival order, i.e. 10 s of event time,
//! one 10 s window. Each benchmark starts from a clone of an aggregator that already
//! holds the previous 10 s (every key known, one window open per key), so the timed run
//! is the steady state: no key is new and every key closes one window (one aggregate per
//! 10 readings), as with the default `[window]` config (10 s, 5 s lateness).
//! `EDGEFLOW_BENCH_SENSORS` changes the number of sensors (same 100,000 payloads), to see
//! how the aggregator's state outgrowing the CPU caches costs.
//!
//! Run: `cargo bench --bench edge_pipeline -- --measurement-time 3 --warm-up-time 1`

use std::hint::black_box;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, SamplingMode, Throughput};
use edgeflow_edge::config::{DecodeConfig, WindowConfig};
use edgeflow_edge::decode::{DecodeBuf, Decoder, PayloadFormat, Source};
use edgeflow_edge::record::{encode_journal, JournalEntry};
use edgeflow_edge::topic::TopicPattern;
use edgeflow_edge::window::{Aggregate, Aggregator, Input, WindowSpec};
use edgeflow_edge::wire::{
    aggregate_binary, aggregate_json, decode_aggregate, ENCODING_BINARY, ENCODING_JSON,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SEED: u64 = 0x5eed_ed6e_f10e;
/// Default number of sensors; `EDGEFLOW_BENCH_SENSORS` overrides it (cache-size effects).
const DEFAULT_SENSORS: usize = 10_000;
const SITES: usize = 8;
const PAYLOADS: usize = 100_000;
/// Start of the data set: a window boundary (2025-11-24T16:00:00Z).
const T0: i64 = 1_764_000_000_000;
const WINDOW_MS: i64 = 10_000;
const PATTERN: &str = "sensors/{site}/{sensor_id}/telemetry";
const GATEWAY: &str = "gw-site-a-01";
const MAX_PAYLOAD: usize = 64 * 1024;

/// Payload shapes of the data sets.
#[derive(Clone, Copy)]
enum Shape {
    /// `{"ts":..,"value":..,"sensor_id":..,"unit":"C","status":"ok"}`, about 80 bytes.
    Json,
    /// A 3-record SenML pack (temperature, humidity, pressure).
    Senml,
    /// A bare number; the timestamp is the arrival time.
    Number,
}

/// Payloads with their topics and arrival times, in arrival order.
struct DataSet {
    topics: Vec<String>,
    payloads: Vec<Vec<u8>>,
    arrivals: Vec<i64>,
    /// Readings in the whole data set.
    readings: u64,
}

impl DataSet {
    fn mean_payload_len(&self) -> f64 {
        let total: usize = self.payloads.iter().map(Vec::len).sum();
        total as f64 / self.payloads.len() as f64
    }
}

/// Number of sensors in the data sets.
fn sensor_count() -> usize {
    static SENSORS: OnceLock<usize> = OnceLock::new();
    *SENSORS.get_or_init(|| match std::env::var("EDGEFLOW_BENCH_SENSORS") {
        Ok(v) => match v.trim().parse() {
            Ok(n) if (1..=PAYLOADS).contains(&n) => n,
            _ => panic!("EDGEFLOW_BENCH_SENSORS must be a number in 1..={PAYLOADS}, not `{v}`"),
        },
        Err(_) => DEFAULT_SENSORS,
    })
}

/// Event time covered by one pass over the data set (each sensor publishes at 1 Hz),
/// rounded up to whole windows: the shift that makes the previous pass.
fn span_ms() -> i64 {
    let span = PAYLOADS.div_ceil(sensor_count()) as i64 * 1_000;
    (span + WINDOW_MS - 1) / WINDOW_MS * WINDOW_MS
}

fn sensor_name(i: usize) -> String {
    format!("s-{i:06}")
}

fn site_name(i: usize) -> String {
    format!("site-{}", (b'a' + (i % SITES) as u8) as char)
}

fn generate(shape: Shape) -> DataSet {
    let mut rng = StdRng::seed_from_u64(SEED);
    let phase: Vec<i64> = (0..sensor_count())
        .map(|_| rng.random_range(0..1_000))
        .collect();
    let base: Vec<f64> = (0..sensor_count())
        .map(|_| rng.random_range(15.0..30.0))
        .collect();
    // (arrival, sensor, event time)
    let mut events: Vec<(i64, usize, i64)> = (0..PAYLOADS)
        .map(|i| {
            let sensor = i % sensor_count();
            let step = (i / sensor_count()) as i64;
            let ts = T0 + step * 1_000 + phase[sensor];
            let latency = rng.random_range(2..40);
            (ts + latency, sensor, ts)
        })
        .collect();
    events.sort_unstable();
    let mut set = DataSet {
        topics: Vec::with_capacity(PAYLOADS),
        payloads: Vec::with_capacity(PAYLOADS),
        arrivals: Vec::with_capacity(PAYLOADS),
        readings: 0,
    };
    for (arrival, sensor, ts) in events {
        let temp = base[sensor] + rng.random_range(-0.5..0.5);
        let payload = match shape {
            Shape::Json => format!(
                r#"{{"ts":{ts},"value":{temp:.2},"sensor_id":"{}","unit":"C","status":"ok"}}"#,
                sensor_name(sensor)
            ),
            Shape::Senml => format!(
                r#"[{{"bt":{}.{:03},"n":"temperature","u":"Cel","v":{temp:.2}}},{{"n":"humidity","u":"%RH","v":{:.1}}},{{"n":"pressure","u":"hPa","v":{:.1}}}]"#,
                ts / 1_000,
                ts % 1_000,
                rng.random_range(30.0..60.0),
                rng.random_range(990.0..1_030.0),
            ),
            Shape::Number => format!("{temp:.2}"),
        };
        set.readings += match shape {
            Shape::Senml => 3,
            Shape::Json | Shape::Number => 1,
        };
        set.topics.push(format!(
            "sensors/{}/{}/telemetry",
            site_name(sensor),
            sensor_name(sensor)
        ));
        set.payloads.push(payload.into_bytes());
        set.arrivals.push(arrival);
    }
    set
}

struct Pipeline {
    decoder: Decoder,
    pattern: TopicPattern,
    spec: WindowSpec,
}

impl Pipeline {
    fn new() -> Self {
        Pipeline {
            decoder: Decoder::new(&DecodeConfig::default(), MAX_PAYLOAD),
            pattern: PATTERN.parse().expect("valid topic pattern"),
            spec: WindowSpec::from_config(&WindowConfig::default()),
        }
    }

    fn source(&self) -> Source<'_> {
        Source {
            format: PayloadFormat::Auto,
            pattern: Some(&self.pattern),
        }
    }

    /// Decodes every payload and feeds its readings to `agg` as the agent does, with event
    /// and arrival times moved by `shift_ms`. Returns the number of aggregates emitted.
    fn run(
        &self,
        set: &DataSet,
        agg: &mut Aggregator,
        buf: &mut DecodeBuf,
        out: &mut Vec<Aggregate>,
        shift_ms: i64,
    ) -> usize {
        let src = self.source();
        let mut emitted = 0;
        let mut seq = 0u64;
        for ((topic, payload), &arrival) in set.topics.iter().zip(&set.payloads).zip(&set.arrivals)
        {
            if let Err(rej) = self.decoder.decode(src, topic, payload, arrival, buf) {
                panic!("bench payload rejected: {rej:?}");
            }
            let site = buf.site();
            for item in &buf.items {
                agg.ingest(
                    Input {
                        sensor: buf.sensor(item),
                        site,
                        field: buf.field(item),
                        ts_ms: item.ts_ms + shift_ms,
                        value: item.value,
                        arrival_ms: arrival + shift_ms,
                        seq,
                    },
                    out,
                );
                seq += 1;
            }
            emitted += out.len();
            out.clear();
        }
        emitted
    }

    /// An aggregator that has already seen the data set's previous pass ([`span_ms`]).
    fn warm_aggregator(&self, set: &DataSet) -> Aggregator {
        let mut agg = Aggregator::new(self.spec);
        let mut buf = DecodeBuf::default();
        let mut out = Vec::new();
        self.run(set, &mut agg, &mut buf, &mut out, -span_ms());
        agg
    }
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
}

fn decode_and_aggregate(c: &mut Criterion) {
    let p = Pipeline::new();
    let mut group = c.benchmark_group("decode_aggregate");
    group.sampling_mode(SamplingMode::Flat);
    for (name, shape) in [
        ("json_80B", Shape::Json),
        ("senml_3", Shape::Senml),
        ("number", Shape::Number),
    ] {
        let set = generate(shape);
        let warm = p.warm_aggregator(&set);
        {
            // Sanity check (untimed): every key closes exactly one window per pass.
            let mut agg = warm.clone();
            let emitted = p.run(
                &set,
                &mut agg,
                &mut DecodeBuf::default(),
                &mut Vec::new(),
                0,
            );
            println!(
                "decode_aggregate/{name}: {} payloads, {} readings, mean payload {:.1} B, \
                 {emitted} aggregates per pass, {} keys",
                set.payloads.len(),
                set.readings,
                set.mean_payload_len(),
                agg.size().0
            );
        }
        group.throughput(Throughput::Elements(set.readings));
        let mut buf = DecodeBuf::default();
        let mut out = Vec::new();
        group.bench_function(name, |b| {
            b.iter_batched(
                || warm.clone(),
                |mut agg| {
                    black_box(p.run(&set, &mut agg, &mut buf, &mut out, 0));
                    agg
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

fn decode_only(c: &mut Criterion) {
    let p = Pipeline::new();
    let set = generate(Shape::Json);
    let mut group = c.benchmark_group("decode_only");
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(set.readings));
    let mut buf = DecodeBuf::default();
    group.bench_function("json_80B", |b| {
        b.iter(|| {
            let src = p.source();
            let mut sum = 0.0;
            for ((topic, payload), &arrival) in
                set.topics.iter().zip(&set.payloads).zip(&set.arrivals)
            {
                if p.decoder
                    .decode(src, topic, payload, arrival, &mut buf)
                    .is_ok()
                {
                    sum += buf.items.iter().map(|i| i.value).sum::<f64>();
                }
            }
            black_box(sum)
        })
    });
    group.finish();
}

/// One decoded reading, sensor and site as indexes into name tables.
struct Reading {
    sensor: u32,
    ts_ms: i64,
    value: f64,
    arrival_ms: i64,
}

fn aggregate_only(c: &mut Criterion) {
    let p = Pipeline::new();
    let set = generate(Shape::Json);
    let warm = p.warm_aggregator(&set);
    let sensors: Vec<String> = (0..sensor_count()).map(sensor_name).collect();
    let sites: Vec<String> = (0..sensor_count()).map(site_name).collect();
    // Decode once, untimed.
    let mut buf = DecodeBuf::default();
    let readings: Vec<Reading> = set
        .topics
        .iter()
        .zip(&set.payloads)
        .zip(&set.arrivals)
        .map(|((topic, payload), &arrival)| {
            p.decoder
                .decode(p.source(), topic, payload, arrival, &mut buf)
                .expect("bench payload decodes");
            let item = &buf.items[0];
            let sensor = buf.sensor(item);
            let index = sensor
                .strip_prefix("s-")
                .and_then(|n| n.parse::<u32>().ok())
                .expect("sensor id s-NNNNNN");
            Reading {
                sensor: index,
                ts_ms: item.ts_ms,
                value: item.value,
                arrival_ms: arrival,
            }
        })
        .collect();
    let mut group = c.benchmark_group("aggregate_only");
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(readings.len() as u64));
    let mut out = Vec::new();
    group.bench_function("json_80B", |b| {
        b.iter_batched(
            || warm.clone(),
            |mut agg| {
                let mut emitted = 0;
                for (seq, r) in readings.iter().enumerate() {
                    let i = r.sensor as usize;
                    agg.ingest(
                        Input {
                            sensor: &sensors[i],
                            site: Some(sites[i].as_str()),
                            field: "value",
                            ts_ms: r.ts_ms,
                            value: r.value,
                            arrival_ms: r.arrival_ms,
                            seq: seq as u64,
                        },
                        &mut out,
                    );
                    emitted += out.len();
                    out.clear();
                }
                black_box(emitted);
                agg
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

/// Closed-window aggregates as the aggregator emits them (10 readings of a 10 s window).
fn aggregates(n: usize) -> Vec<Aggregate> {
    let mut rng = StdRng::seed_from_u64(SEED ^ 1);
    (0..n)
        .map(|i| {
            let sensor = rng.random_range(0..sensor_count());
            let values: Vec<f64> = (0..10)
                .map(|_| (rng.random_range(15.0..30.0f64) * 100.0).round() / 100.0)
                .collect();
            let start = T0 + (i as i64 % 6) * WINDOW_MS;
            Aggregate {
                sensor: Arc::from(sensor_name(sensor)),
                site: Some(Arc::from(site_name(sensor))),
                field: Arc::from("value"),
                window_start: start,
                window_end: start + WINDOW_MS,
                revision: 0,
                count: values.len() as u64,
                min: values.iter().copied().fold(f64::INFINITY, f64::min),
                max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                sum: values.iter().sum(),
                first_ts: start + rng.random_range(0..1_000),
                first: values[0],
                last_ts: start + 9_000 + rng.random_range(0..1_000),
                last: values[values.len() - 1],
            }
        })
        .collect()
}

fn wire(c: &mut Criterion) {
    const N: usize = 1_000;
    let aggs = aggregates(N);
    let encode_all = |f: fn(&str, &Aggregate, &mut Vec<u8>)| -> Vec<Vec<u8>> {
        aggs.iter()
            .map(|a| {
                let mut buf = Vec::new();
                f(GATEWAY, a, &mut buf);
                buf
            })
            .collect()
    };
    let json = encode_all(aggregate_json);
    let binary = encode_all(aggregate_binary);
    let mean = |v: &[Vec<u8>]| v.iter().map(Vec::len).sum::<usize>() as f64 / v.len() as f64;
    println!(
        "wire: aggregate record size (gateway `{GATEWAY}`, sensor, site, field `value`): \
         json {:.1} B, binary-v1 {:.1} B",
        mean(&json),
        mean(&binary)
    );

    let mut group = c.benchmark_group("wire_encode");
    group.throughput(Throughput::Elements(N as u64));
    for (name, f) in [
        ("json", aggregate_json as fn(&str, &Aggregate, &mut Vec<u8>)),
        ("binary", aggregate_binary),
    ] {
        let mut buf = Vec::with_capacity(1024);
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut bytes = 0;
                for a in &aggs {
                    buf.clear();
                    f(GATEWAY, a, &mut buf);
                    bytes += buf.len();
                }
                black_box(bytes)
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("wire_decode");
    group.throughput(Throughput::Elements(N as u64));
    for (name, encoding, records) in [
        ("json", ENCODING_JSON, &json),
        ("binary", ENCODING_BINARY, &binary),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut count = 0;
                for r in records {
                    let rec = decode_aggregate(encoding, r).expect("round trip");
                    count += rec.count;
                }
                black_box(count)
            })
        });
    }
    group.finish();
}

fn journal_encode(c: &mut Criterion) {
    let p = Pipeline::new();
    let set = generate(Shape::Json);
    let mut buf = DecodeBuf::default();
    // (topic index, ts, value, arrival) of every reading; names are re-read from topics.
    let sensors: Vec<String> = (0..sensor_count()).map(sensor_name).collect();
    let sites: Vec<String> = (0..sensor_count()).map(site_name).collect();
    let readings: Vec<(usize, i64, f64, i64)> = set
        .topics
        .iter()
        .zip(&set.payloads)
        .zip(&set.arrivals)
        .map(|((topic, payload), &arrival)| {
            p.decoder
                .decode(p.source(), topic, payload, arrival, &mut buf)
                .expect("bench payload decodes");
            let item = &buf.items[0];
            let index = buf.sensor(item)[2..].parse().expect("sensor id s-NNNNNN");
            (index, item.ts_ms, item.value, arrival)
        })
        .collect();
    let mut rec = Vec::with_capacity(256);
    encode_journal(
        &mut rec,
        &JournalEntry::Reading {
            sensor: &sensors[0],
            site: Some(sites[0].as_str()),
            field: "value",
            ts: T0,
            value: 21.5,
            arrival: T0,
        },
    );
    println!("journal_encode: reading entry {} B", rec.len());
    let mut group = c.benchmark_group("journal_encode");
    group.throughput(Throughput::Elements(readings.len() as u64));
    group.bench_function("reading", |b| {
        b.iter(|| {
            let mut bytes = 0;
            for &(i, ts, value, arrival) in &readings {
                encode_journal(
                    &mut rec,
                    &JournalEntry::Reading {
                        sensor: &sensors[i],
                        site: Some(sites[i].as_str()),
                        field: "value",
                        ts,
                        value,
                        arrival,
                    },
                );
                bytes += rec.len();
            }
            black_box(bytes)
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = decode_and_aggregate, decode_only, aggregate_only, wire, journal_encode
}
criterion_main!(benches);
