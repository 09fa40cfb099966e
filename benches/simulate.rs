//! The sensor simulator's own cost: how many messages per second one core can generate
//! and encode (topic and payload), so that the simulator is never what limits a demo or
//! a load test.
//!
//! One iteration generates and encodes 10,000 messages of a plant of 100,000 sensors on
//! 20 sites (the default mix of imperfections: 70 % JSON, 20 % SenML, 10 % bare numbers;
//! malformed, late and out-of-order readings, dropouts, spikes):
//! - `simulate/generate_encode/default`: that plant;
//! - `simulate/generate_encode/clean`: every sensor well behaved (JSON only, no
//!   imperfection).
//!
//! Goal: well above the 200,000 messages/s the simulator must publish on one core, so
//! that publishing, not generating, is what its rate measures.
//!
//! Run: `cargo bench --bench simulate -- --measurement-time 3 --warm-up-time 1`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use edgeflow::simulate::{Generator, Scenario};

const PER_ITER: u64 = 10_000;

fn bench(c: &mut Criterion) {
    let plant = Scenario {
        sensors: 100_000,
        sites: 20,
        rate: 200_000.0,
        start_ms: 1_764_000_000_000,
        ..Scenario::default()
    };
    let mut g = c.benchmark_group("simulate");
    g.throughput(Throughput::Elements(PER_ITER));
    for (name, scenario) in [
        ("default", plant.clone()),
        (
            "clean",
            Scenario {
                sensors: plant.sensors,
                sites: plant.sites,
                rate: plant.rate,
                start_ms: plant.start_ms,
                ..Scenario::clean()
            },
        ),
    ] {
        let mut generator = Generator::new(&scenario).expect("valid scenario");
        let (mut topic, mut payload) = (String::new(), Vec::new());
        g.bench_function(BenchmarkId::new("generate_encode", name), |b| {
            b.iter(|| {
                for _ in 0..PER_ITER {
                    let r = generator.next_reading();
                    generator.encode(&r, &mut topic, &mut payload);
                    black_box((&topic, &payload));
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
